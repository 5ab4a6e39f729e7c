//! The Poller's plain logic: when the next check-in may start and how long
//! the server may hold it, and what a failed check-in calls for (register
//! again, or wait and retry).

use std::time::{Duration, Instant};

use crate::control_plane::ControlPlaneError;
use crate::model::{ErrorCode, StartupResponse};
use crate::retry::RetryPolicy;
use crate::settings::RuntimeConfig;

/// When the next check-in may start and how long it may be held: the
/// Poller's plain logic.
#[derive(Debug, Clone)]
pub struct CheckinPacer {
    long_poll: bool,
    /// The server's long-poll hold, capped at the config's poll interval.
    hold: Duration,
    /// The period without long polling.
    interval: Duration,
    floor: Duration,
    cap: Duration,
    last_start: Option<Instant>,
    /// The next check-in carries an answer the control plane waits for (a
    /// pong): it starts after the floor alone, even without long polling.
    answer_soon: bool,
}

impl CheckinPacer {
    pub fn new(config: &RuntimeConfig, startup: &StartupResponse) -> Self {
        let cap = config.poll_interval;
        CheckinPacer {
            long_poll: config.long_polling && startup.long_poll_ms > 0,
            hold: Duration::from_millis(startup.long_poll_ms).min(cap),
            interval: Duration::from_millis(startup.poll_interval_ms).min(cap),
            floor: config.min_checkin_gap,
            cap,
            last_start: None,
            answer_soon: false,
        }
    }

    /// The long-poll hold to ask the server for (zero without long polling).
    pub fn hold(&self) -> Duration {
        if self.long_poll {
            self.hold
        } else {
            Duration::ZERO
        }
    }

    /// The earliest start of the next check-in: as soon as possible with
    /// long polling (but never within `min_checkin_gap` of the last start),
    /// otherwise one poll interval after the last start.
    pub fn next_start(&self, now: Instant) -> Instant {
        match self.last_start {
            None => now,
            Some(t) => {
                let gap = if self.long_poll || self.answer_soon {
                    self.floor
                } else {
                    self.interval.max(self.floor)
                };
                now.max(t + gap)
            }
        }
    }

    /// The time one check-in cycle takes when all is well: the hold with
    /// long polling, the poll interval without, never under the floor.
    pub fn cycle(&self) -> Duration {
        if self.long_poll {
            self.hold.max(self.floor)
        } else {
            self.interval.max(self.floor)
        }
    }

    pub fn started(&mut self, at: Instant) {
        self.last_start = Some(at);
        self.answer_soon = false;
    }

    /// The next check-in has something to answer (pongs): let it start
    /// after the floor alone, not a whole poll interval later.
    pub fn answer_soon(&mut self) {
        self.answer_soon = true;
    }

    /// A check-in answer's `pollIntervalMs`, within the config's cap.
    pub fn server_interval(&mut self, ms: Option<u64>) {
        if let Some(ms) = ms {
            self.interval = Duration::from_millis(ms).min(self.cap);
        }
    }
}

/// What the Poller does after a failed check-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckinRecovery {
    /// The control plane no longer knows this replica (it restarted, or
    /// declared the replica down): register again at once. Spooled reports
    /// go out under the new replica id.
    Register,
    /// Anything else: wait this long, then check in again.
    Retry(Duration),
}

/// Decides how to recover from a failed check-in.
pub fn checkin_recovery(e: &ControlPlaneError, retry: &mut RetryPolicy) -> CheckinRecovery {
    match e {
        ControlPlaneError::Rejected {
            status: 404, code, ..
        } if code == ErrorCode::UnknownReplica.as_str() => CheckinRecovery::Register,
        e => CheckinRecovery::Retry(retry.next_delay(Some(e))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn startup(poll: u64, long: u64) -> StartupResponse {
        StartupResponse {
            replica_id: "r".into(),
            poll_interval_ms: poll,
            long_poll_ms: long,
            report_interval_ms: 200,
            report_batch_max: 1000,
            lease_ms: 60_000,
        }
    }

    #[test]
    fn with_long_polling_the_next_check_in_follows_at_once_but_not_below_the_floor() {
        let cfg = RuntimeConfig::default();
        let mut p = CheckinPacer::new(&cfg, &startup(5000, 4500));
        assert_eq!(p.hold(), Duration::from_millis(4500));
        let t = Instant::now();
        assert_eq!(p.next_start(t), t);
        p.started(t);
        // A check-in that came back after 20 ms: wait for the 100 ms floor.
        assert_eq!(
            p.next_start(t + Duration::from_millis(20)),
            t + Duration::from_millis(100)
        );
        // One that was held 4.5 s: go at once.
        let later = t + Duration::from_millis(4500);
        assert_eq!(p.next_start(later), later);
    }

    #[test]
    fn without_long_polling_one_check_in_per_interval_capped_by_the_config() {
        let cfg = RuntimeConfig {
            long_polling: false,
            poll_interval: Duration::from_secs(2),
            ..RuntimeConfig::default()
        };
        let mut p = CheckinPacer::new(&cfg, &startup(5000, 4500));
        assert_eq!(p.hold(), Duration::ZERO);
        let t = Instant::now();
        p.started(t);
        assert_eq!(
            p.next_start(t + Duration::from_millis(10)),
            t + Duration::from_secs(2)
        );
        p.server_interval(Some(700));
        assert_eq!(p.next_start(t), t + Duration::from_millis(700));
        // A check-in with pongs to carry follows after the floor alone.
        let mut q = p.clone();
        q.answer_soon();
        assert_eq!(q.next_start(t), t + cfg.min_checkin_gap);
        q.started(t);
        assert_eq!(q.next_start(t), t + Duration::from_millis(700));
        // A server's longPollMs of 0 turns long polling off too.
        let p = CheckinPacer::new(&RuntimeConfig::default(), &startup(300, 0));
        assert_eq!(p.hold(), Duration::ZERO);
    }

    #[test]
    fn an_unknown_replica_registers_again_and_other_errors_wait() {
        let mut r = RetryPolicy::new(Duration::from_millis(100), Duration::from_millis(800));
        let unknown = ControlPlaneError::Rejected {
            status: 404,
            code: "unknown_replica".into(),
            message: "no such replica".into(),
        };
        assert_eq!(
            checkin_recovery(&unknown, &mut r),
            CheckinRecovery::Register
        );
        // Another 404 (a wrong URL) is not a lost registration.
        let other = ControlPlaneError::Rejected {
            status: 404,
            code: "not_found".into(),
            message: "no such route".into(),
        };
        assert!(matches!(
            checkin_recovery(&other, &mut r),
            CheckinRecovery::Retry(d) if d <= Duration::from_millis(100)
        ));
        let down = ControlPlaneError::Transport("refused".into());
        assert!(matches!(
            checkin_recovery(&down, &mut r),
            CheckinRecovery::Retry(d) if d <= Duration::from_millis(200)
        ));
    }
}
