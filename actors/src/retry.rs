//! The retry policy every control plane call follows after a failure:
//! exponential ceilings with full jitter, the server's `Retry-After` as a
//! floor (itself capped at `backoffMax`), refused credentials at the
//! slowest pace.

use std::time::Duration;

use backoff::backoff::Backoff;
use backoff::ExponentialBackoff;
use rand::Rng;

use crate::control_plane::ControlPlaneError;

/// Retry delays: the `backoff` crate's exponential policy gives the ceiling
/// (doubling from `initial`, capped at `max`); the delay is drawn uniformly
/// in `[0, ceiling]` (full jitter); a server's `Retry-After` is a floor, but
/// never more than `max`: the control plane's answers are hostile input,
/// and `Retry-After: 999999999` must not stop the runner for 31 years;
/// refused credentials wait the full `max`.
#[derive(Debug)]
pub struct RetryPolicy {
    ceiling: ExponentialBackoff,
    max: Duration,
}

impl RetryPolicy {
    pub fn new(initial: Duration, max: Duration) -> Self {
        let ceiling = ExponentialBackoff {
            current_interval: initial,
            initial_interval: initial,
            randomization_factor: 0.0,
            multiplier: 2.0,
            max_interval: max,
            max_elapsed_time: None,
            ..ExponentialBackoff::default()
        };
        RetryPolicy { ceiling, max }
    }

    /// The delay before the next attempt after `err`.
    pub fn next_delay(&mut self, err: Option<&ControlPlaneError>) -> Duration {
        if err.is_some_and(ControlPlaneError::is_auth) {
            return self.max;
        }
        let ceiling = self
            .ceiling
            .next_backoff()
            .unwrap_or(self.max)
            .min(self.max);
        let jittered =
            Duration::from_millis(rand::thread_rng().gen_range(0..=ceiling.as_millis() as u64));
        match err.and_then(ControlPlaneError::retry_after) {
            Some(ra) => jittered.max(ra.min(self.max)),
            None => jittered,
        }
    }

    /// A call succeeded: the next failure starts from `initial` again.
    pub fn reset(&mut self) {
        self.ceiling.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_are_jittered_below_a_doubling_capped_ceiling() {
        let mut r = RetryPolicy::new(Duration::from_millis(100), Duration::from_millis(800));
        let transport = ControlPlaneError::Transport("refused".into());
        let ceilings = [100, 200, 400, 800, 800, 800];
        for c in ceilings {
            let d = r.next_delay(Some(&transport));
            assert!(d <= Duration::from_millis(c), "{d:?} above {c} ms");
        }
        // Full jitter: across many draws, delays spread over the range.
        let draws: Vec<_> = (0..200).map(|_| r.next_delay(None)).collect();
        assert!(draws.iter().any(|d| *d < Duration::from_millis(200)));
        assert!(draws.iter().any(|d| *d > Duration::from_millis(600)));
        let throttled = ControlPlaneError::Throttled {
            status: 429,
            retry_after: Some(Duration::from_secs(3)),
        };
        assert_eq!(r.next_delay(Some(&throttled)), Duration::from_millis(800));
        let auth = ControlPlaneError::Unauthorized {
            message: "bad token".into(),
        };
        assert_eq!(r.next_delay(Some(&auth)), Duration::from_millis(800));
        r.reset();
        assert!(r.next_delay(Some(&transport)) <= Duration::from_millis(100));
    }

    #[test]
    fn retry_after_is_a_floor_capped_at_the_maximum() {
        let mut r = RetryPolicy::new(Duration::from_millis(100), Duration::from_secs(30));
        let after = |s: u64| ControlPlaneError::Throttled {
            status: 429,
            retry_after: Some(Duration::from_secs(s)),
        };
        assert!(r.next_delay(Some(&after(3))) >= Duration::from_secs(3));
        assert_eq!(
            r.next_delay(Some(&after(999_999_999))),
            Duration::from_secs(30)
        );
        assert_eq!(
            r.next_delay(Some(&after(u64::MAX))),
            Duration::from_secs(30)
        );
    }
}
