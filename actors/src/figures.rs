//! Plain measurement values shared by the runtime's counters and the
//! executors: a duration histogram with fixed buckets, and what an executor
//! reports of itself (connect times, errors by kind). No runtime needed, so
//! an executor built without the actor runtime can keep them too.

use std::collections::BTreeMap;
use std::time::Duration;

/// Upper bounds of the check-in duration buckets: a check-in is held by the
/// control plane up to the long-poll hold (5 s by default), so the buckets
/// reach past it.
pub const CHECKIN_BUCKETS: &[Duration] = &[
    Duration::from_millis(5),
    Duration::from_millis(10),
    Duration::from_millis(25),
    Duration::from_millis(50),
    Duration::from_millis(100),
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_millis(2500),
    Duration::from_secs(5),
    Duration::from_secs(10),
    Duration::from_secs(30),
    Duration::from_secs(60),
];

/// Upper bounds of the connect duration buckets (an SSH connect is bounded
/// by `ssh.connectTimeoutMs`, 10 s by default).
pub const CONNECT_BUCKETS: &[Duration] = &[
    Duration::from_millis(5),
    Duration::from_millis(10),
    Duration::from_millis(25),
    Duration::from_millis(50),
    Duration::from_millis(100),
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_millis(2500),
    Duration::from_secs(5),
    Duration::from_secs(10),
    Duration::from_secs(30),
];

/// Durations counted into fixed buckets, with their count and sum: what a
/// Prometheus histogram exposes, kept as plain values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Histogram {
    /// Upper bounds, ascending.
    bounds: Vec<Duration>,
    /// Observations per bucket (not cumulative); one more than `bounds`, the
    /// last for those above every bound.
    counts: Vec<u64>,
    count: u64,
    sum: Duration,
}

impl Histogram {
    /// An empty histogram over `bounds` (sorted and deduplicated here).
    pub fn new(bounds: &[Duration]) -> Self {
        let mut bounds = bounds.to_vec();
        bounds.sort();
        bounds.dedup();
        let counts = vec![0; bounds.len() + 1];
        Histogram {
            bounds,
            counts,
            count: 0,
            sum: Duration::ZERO,
        }
    }

    pub fn observe(&mut self, d: Duration) {
        let i = self.bounds.partition_point(|b| *b < d);
        self.counts[i] += 1;
        self.count += 1;
        self.sum = self.sum.saturating_add(d);
    }

    /// Observations in all.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Sum of every observation.
    pub fn sum(&self) -> Duration {
        self.sum
    }

    /// Each bound with the observations at or below it, cumulative, as
    /// Prometheus's `le` buckets count (the `+Inf` bucket is `count()`).
    pub fn cumulative(&self) -> Vec<(Duration, u64)> {
        let mut total = 0;
        self.bounds
            .iter()
            .zip(&self.counts)
            .map(|(b, n)| {
                total += n;
                (*b, total)
            })
            .collect()
    }

    /// Each bound with the observations in its bucket alone, the last pair
    /// (`None`) for those above every bound.
    pub fn per_bucket(&self) -> Vec<(Option<Duration>, u64)> {
        self.bounds
            .iter()
            .map(|b| Some(*b))
            .chain(std::iter::once(None))
            .zip(self.counts.iter().copied())
            .collect()
    }
}

/// What an executor measures of its own work, for the runtime's counters
/// (`NodeExecutor::figures`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutorFigures {
    /// Time to reach a node and be ready to run a step (for SSH: TCP
    /// connect, handshake, host key check and authentication).
    pub connect_duration: Histogram,
    /// Failures by kind (`ExecutorErrorKind::name`).
    pub errors: BTreeMap<String, u64>,
}

impl Default for ExecutorFigures {
    fn default() -> Self {
        ExecutorFigures {
            connect_duration: Histogram::new(CONNECT_BUCKETS),
            errors: BTreeMap::new(),
        }
    }
}

impl ExecutorFigures {
    /// Counts a failure of kind `kind` (`ExecutorErrorKind::name`).
    pub fn error(&mut self, kind: &str) {
        *self.errors.entry(kind.to_owned()).or_default() += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_whose_bound_holds_them() {
        let ms = Duration::from_millis;
        let mut h = Histogram::new(&[ms(100), ms(10)]);
        for d in [ms(1), ms(10), ms(11), ms(100), ms(5000)] {
            h.observe(d);
        }
        assert_eq!(h.count(), 5);
        assert_eq!(h.sum(), ms(5122));
        assert_eq!(h.cumulative(), vec![(ms(10), 2), (ms(100), 4)]);
        assert_eq!(
            h.per_bucket(),
            vec![(Some(ms(10)), 2), (Some(ms(100)), 2), (None, 1)]
        );
    }

    #[test]
    fn executor_errors_count_by_kind_name() {
        let mut f = ExecutorFigures::default();
        f.error("connect_timeout");
        f.error("connect_timeout");
        f.error("authentication");
        assert_eq!(f.errors["connect_timeout"], 2);
        assert_eq!(f.errors["authentication"], 1);
    }
}
