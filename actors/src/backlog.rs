//! The report backlog as plain values: how many reports are spooled and not
//! acknowledged, and how old the oldest of them is. The intake keeps one;
//! its figures reach `RuntimeStats` (`reports_pending`,
//! `report_oldest_unacked_age`).
//!
//! Each report's spool time is not kept (an outage may leave millions):
//! per operation, one mark at most per [`MARK_EVERY`] records the seq that
//! started it and when, so the age of the oldest unacked report is known
//! to within that much, in memory bounded by the outage's length.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// The resolution of the oldest report's age.
pub const MARK_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
pub struct Backlog {
    ops: HashMap<String, OpBacklog>,
    pending: u64,
}

#[derive(Debug)]
struct OpBacklog {
    /// Highest acked seq.
    acked: u64,
    /// Highest spooled seq.
    last: u64,
    /// (first seq spooled at or after the instant, the instant), ascending;
    /// the front mark's seq is at most `acked + 1`.
    marks: VecDeque<(u64, Instant)>,
}

impl Backlog {
    /// Reports `acked + 1 ..= last` of `op_id` are in the spool unacked
    /// since `at` or earlier (what a restarted process finds).
    pub fn recovered(&mut self, op_id: &str, acked: u64, last: u64, at: Instant) {
        if last <= acked {
            return;
        }
        self.pending += last - acked;
        self.ops.insert(
            op_id.to_owned(),
            OpBacklog {
                acked,
                last,
                marks: VecDeque::from([(acked + 1, at)]),
            },
        );
    }

    /// Report `seq` of `op_id` was spooled at `at`.
    pub fn spooled(&mut self, op_id: &str, seq: u64, at: Instant) {
        let op = self
            .ops
            .entry(op_id.to_owned())
            .or_insert_with(|| OpBacklog {
                acked: seq.saturating_sub(1),
                last: seq.saturating_sub(1),
                marks: VecDeque::new(),
            });
        if seq <= op.last {
            return;
        }
        self.pending += seq - op.last;
        op.last = seq;
        let mark = op
            .marks
            .back()
            .is_none_or(|(_, t)| at.saturating_duration_since(*t) >= MARK_EVERY);
        if mark {
            op.marks.push_back((seq, at));
        }
    }

    /// The control plane acknowledged `op_id` up to `seq`.
    pub fn acked(&mut self, op_id: &str, seq: u64) {
        let Some(op) = self.ops.get_mut(op_id) else {
            return;
        };
        let seq = seq.min(op.last);
        if seq <= op.acked {
            return;
        }
        self.pending -= seq - op.acked;
        op.acked = seq;
        if op.acked == op.last {
            self.ops.remove(op_id);
            return;
        }
        // Keep the last mark at or before the oldest unacked report.
        while op.marks.get(1).is_some_and(|(s, _)| *s <= seq + 1) {
            op.marks.pop_front();
        }
    }

    /// Everything of `op_id` is gone from the spool.
    pub fn forget(&mut self, op_id: &str) {
        if let Some(op) = self.ops.remove(op_id) {
            self.pending -= op.last - op.acked;
        }
    }

    /// Reports spooled and not acknowledged.
    pub fn pending(&self) -> u64 {
        self.pending
    }

    /// When the oldest unacknowledged report was spooled (at most
    /// [`MARK_EVERY`] earlier than it was).
    pub fn oldest(&self) -> Option<Instant> {
        self.ops
            .values()
            .filter_map(|op| op.marks.front().map(|(_, t)| *t))
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_follows_spools_acks_and_forgets() {
        let t0 = Instant::now();
        let mut b = Backlog::default();
        for seq in 1..=5 {
            b.spooled("op-1", seq, t0);
        }
        b.spooled("op-2", 1, t0);
        assert_eq!(b.pending(), 6);
        b.acked("op-1", 3);
        assert_eq!(b.pending(), 3);
        b.acked("op-1", 2);
        assert_eq!(b.pending(), 3, "an older ack changes nothing");
        b.acked("op-1", 99);
        assert_eq!(b.pending(), 1, "an ack past the last report stops there");
        b.forget("op-2");
        assert_eq!(b.pending(), 0);
        assert_eq!(b.oldest(), None);
    }

    #[test]
    fn the_oldest_age_moves_with_the_acks_within_a_mark() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut b = Backlog::default();
        b.spooled("op-1", 1, t0);
        b.spooled("op-1", 2, t0 + Duration::from_millis(500));
        b.spooled("op-1", 3, t0 + s(2));
        b.spooled("op-1", 4, t0 + s(5));
        assert_eq!(b.oldest(), Some(t0));
        b.acked("op-1", 1);
        assert_eq!(
            b.oldest(),
            Some(t0),
            "report 2 was spooled within 1 s of t0"
        );
        b.acked("op-1", 2);
        assert_eq!(b.oldest(), Some(t0 + s(2)));
        b.acked("op-1", 3);
        assert_eq!(b.oldest(), Some(t0 + s(5)));
        b.spooled("op-2", 1, t0 + s(1));
        assert_eq!(b.oldest(), Some(t0 + s(1)), "the oldest across operations");
    }

    #[test]
    fn recovered_reports_count_from_the_recovery() {
        let t0 = Instant::now();
        let mut b = Backlog::default();
        b.recovered("op-1", 2, 7, t0);
        b.recovered("op-2", 4, 4, t0);
        assert_eq!(b.pending(), 5);
        b.spooled("op-1", 8, t0 + Duration::from_secs(3));
        assert_eq!(b.pending(), 6);
        b.acked("op-1", 7);
        assert_eq!(b.oldest(), Some(t0 + Duration::from_secs(3)));
    }
}
