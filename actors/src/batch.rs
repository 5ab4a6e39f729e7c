//! Batch planning for `POST /reports`: which spooled reports go next, what
//! an answer's acks change, and how the batch size and scope adapt when the
//! control plane refuses a batch (413 halving, one operation at a time to
//! find the operation it refuses). Plain values, so the LogShipper's loop
//! only calls them.

use std::collections::BTreeMap;

use crate::control_plane::ControlPlaneError;
use crate::model::{EncodedReport, Report};
use crate::spool::SpooledOperation;

/// Picks the reports to send: per operation, from its ack + 1, at most
/// `batch_max` in all. An operation's terminal report goes only when every
/// report before it is acked, so that it is the last one the control plane
/// stores.
pub fn plan_batch<R: Planned>(
    ops: &[SpooledOperation],
    batch_max: usize,
    read: &mut dyn FnMut(&str, u64, usize) -> Vec<R>,
) -> Vec<R> {
    let mut out = Vec::new();
    for op in ops {
        if out.len() >= batch_max {
            break;
        }
        if op.last_seq <= op.acked {
            continue;
        }
        let mut reports = read(&op.op_id, op.acked, batch_max - out.len());
        if reports
            .last()
            .is_some_and(|r| r.terminal() && r.seq() != op.acked + 1)
        {
            reports.pop();
        }
        out.extend(reports);
    }
    out
}

/// What batch planning needs of a report.
pub trait Planned {
    fn seq(&self) -> u64;
    fn terminal(&self) -> bool;
}

impl Planned for Report {
    fn seq(&self) -> u64 {
        self.seq
    }
    fn terminal(&self) -> bool {
        self.is_terminal()
    }
}

impl Planned for EncodedReport {
    fn seq(&self) -> u64 {
        self.seq
    }
    fn terminal(&self) -> bool {
        self.terminal
    }
}

/// What one operation's ack changes in the spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckStep {
    pub op_id: String,
    pub seq: u64,
    /// Reports newly acked.
    pub newly: u64,
    /// The terminal report is acked: the operation may be forgotten.
    pub complete: bool,
}

/// Turns the acks of an answer into spool updates; acks that do not move
/// forward (duplicates, a gap the server refused) change nothing.
pub fn ack_steps(ops: &[SpooledOperation], acks: &BTreeMap<String, u64>) -> Vec<AckStep> {
    ops.iter()
        .filter_map(|op| {
            let seq = (*acks.get(&op.op_id)?).min(op.last_seq);
            (seq > op.acked).then(|| AckStep {
                op_id: op.op_id.clone(),
                seq,
                newly: seq - op.acked,
                complete: op.terminal && seq == op.last_seq,
            })
        })
        .collect()
}

/// What the LogShipper does after an answer to a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShipDecision {
    /// The batch was taken: apply its acks.
    Sent,
    /// The control plane found the batch too large (413): batches are at
    /// most `to` reports from now on.
    Shrink { from: usize, to: usize },
    /// The control plane refuses the reports of this one operation:
    /// retrying as is cannot help, and holding them would block every
    /// other operation's, so they are dropped (loudly).
    DropOperation(String),
    /// A batch of several operations was refused: send one operation at a
    /// time to find the one the control plane refuses.
    OneOperationAtATime,
    /// A failure that may pass (transport, 5xx, 429): resend the same
    /// reports from the last ack after a delay.
    Retry,
}

/// The batch size and scope, as the control plane's answers shape them.
#[derive(Debug, Clone)]
pub struct BatchSizer {
    /// Lowered when the control plane says a batch was too large (413).
    limit: usize,
    /// After a refused batch of several operations: one at a time.
    single_op: bool,
}

impl Default for BatchSizer {
    fn default() -> Self {
        BatchSizer {
            limit: usize::MAX,
            single_op: false,
        }
    }
}

impl BatchSizer {
    /// The most reports the next batch may hold, given the cadence's
    /// `reportBatchMax`.
    pub fn batch_max(&self, cadence_max: usize) -> usize {
        cadence_max.min(self.limit)
    }

    /// Whether the next batch holds one operation's reports only.
    pub fn single_op(&self) -> bool {
        self.single_op
    }

    /// Takes the answer to a batch of `sent` reports of the operations
    /// `ops` (each once), and says what to do.
    pub fn on_answer(
        &mut self,
        answer: Result<(), &ControlPlaneError>,
        sent: usize,
        ops: &[String],
    ) -> ShipDecision {
        match answer {
            Ok(()) => {
                self.single_op = false;
                ShipDecision::Sent
            }
            Err(ControlPlaneError::Rejected { status: 413, .. }) if sent > 1 => {
                self.limit = (sent / 2).max(1);
                ShipDecision::Shrink {
                    from: sent,
                    to: self.limit,
                }
            }
            Err(ControlPlaneError::Rejected { .. }) if ops.len() == 1 => {
                self.single_op = false;
                ShipDecision::DropOperation(ops[0].clone())
            }
            Err(ControlPlaneError::Rejected { .. }) => {
                self.single_op = true;
                ShipDecision::OneOperationAtATime
            }
            Err(_) => ShipDecision::Retry,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::{LogReport, OpReport, ReportBody, State, Stream};

    /// A report of `op`: a log line, or its terminal report.
    pub(crate) fn report(op: &str, seq: u64, terminal: bool) -> Report {
        Report {
            op_id: op.into(),
            seq,
            ts: String::new(),
            body: if terminal {
                ReportBody::Op(OpReport {
                    state: State::Succeeded,
                    message: None,
                })
            } else {
                ReportBody::Log(LogReport {
                    node: "n".into(),
                    step: 1,
                    stream: Stream::Stdout,
                    text: format!("{seq}"),
                })
            },
        }
    }

    fn spooled(op: &str, last: u64, acked: u64, terminal: bool) -> SpooledOperation {
        SpooledOperation {
            op_id: op.into(),
            last_seq: last,
            acked,
            terminal,
        }
    }

    fn reader<'a>(
        ops: &'a [(&'static str, u64, bool)],
    ) -> impl FnMut(&str, u64, usize) -> Vec<Report> + 'a {
        move |op, after, max| {
            let (_, last, terminal) = ops.iter().find(|o| o.0 == op).unwrap();
            (after + 1..=*last)
                .take(max)
                .map(|s| report(op, s, *terminal && s == *last))
                .collect()
        }
    }

    #[test]
    fn batches_start_after_the_ack_and_respect_the_maximum() {
        let ops = [spooled("a", 5, 2, false), spooled("b", 3, 0, false)];
        let mut read = reader(&[("a", 5, false), ("b", 3, false)]);
        let batch = plan_batch(&ops, 4, &mut read);
        let seqs: Vec<_> = batch.iter().map(|r| (r.op_id.as_str(), r.seq)).collect();
        assert_eq!(seqs, vec![("a", 3), ("a", 4), ("a", 5), ("b", 1)]);
    }

    #[test]
    fn the_terminal_report_waits_until_everything_before_it_is_acked() {
        let ops = [spooled("a", 3, 0, true)];
        let mut read = reader(&[("a", 3, true)]);
        let batch = plan_batch(&ops, 10, &mut read);
        assert_eq!(batch.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2]);
        let ops = [spooled("a", 3, 2, true)];
        let batch = plan_batch(&ops, 10, &mut read);
        assert_eq!(batch.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![3]);
        assert!(batch[0].is_terminal());
    }

    #[test]
    fn acks_move_forward_only_and_complete_terminal_operations() {
        let ops = [
            spooled("a", 5, 2, false),
            spooled("b", 3, 1, true),
            spooled("c", 4, 4, false),
        ];
        let acks: BTreeMap<String, u64> =
            [("a".into(), 1), ("b".into(), 3), ("c".into(), 9)].into();
        assert_eq!(
            ack_steps(&ops, &acks),
            vec![AckStep {
                op_id: "b".into(),
                seq: 3,
                newly: 2,
                complete: true
            }]
        );
    }

    fn rejected(status: u16) -> ControlPlaneError {
        ControlPlaneError::Rejected {
            status,
            code: "x".into(),
            message: "refused".into(),
        }
    }

    #[test]
    fn a_413_halves_the_batch_until_one_report_then_drops_that_operation() {
        let mut s = BatchSizer::default();
        let ops = vec!["a".to_owned(), "b".to_owned()];
        assert_eq!(s.batch_max(1000), 1000);
        assert_eq!(
            s.on_answer(Err(&rejected(413)), 1000, &ops),
            ShipDecision::Shrink {
                from: 1000,
                to: 500
            }
        );
        assert_eq!(s.batch_max(1000), 500);
        // A smaller cadence maximum still wins.
        assert_eq!(s.batch_max(200), 200);
        assert_eq!(
            s.on_answer(Err(&rejected(413)), 3, &ops),
            ShipDecision::Shrink { from: 3, to: 1 }
        );
        assert_eq!(s.batch_max(1000), 1);
        // One report too large for the server: its operation is dropped.
        assert_eq!(
            s.on_answer(Err(&rejected(413)), 1, &ops[..1]),
            ShipDecision::DropOperation("a".into())
        );
        // The lowered limit stays after a success.
        assert_eq!(s.on_answer(Ok(()), 1, &ops[..1]), ShipDecision::Sent);
        assert_eq!(s.batch_max(1000), 1);
    }

    #[test]
    fn a_refused_batch_of_several_operations_is_bisected_to_the_refused_one() {
        let mut s = BatchSizer::default();
        let two = vec!["a".to_owned(), "b".to_owned()];
        assert_eq!(
            s.on_answer(Err(&rejected(400)), 10, &two),
            ShipDecision::OneOperationAtATime
        );
        assert!(s.single_op());
        // One operation at a time: the good one goes through...
        assert_eq!(s.on_answer(Ok(()), 5, &two[..1]), ShipDecision::Sent);
        assert!(!s.single_op());
        assert_eq!(
            s.on_answer(Err(&rejected(409)), 10, &two),
            ShipDecision::OneOperationAtATime
        );
        // ...and the refused one is dropped, then batches mix again.
        assert_eq!(
            s.on_answer(Err(&rejected(409)), 5, &two[1..]),
            ShipDecision::DropOperation("b".into())
        );
        assert!(!s.single_op());
        assert_eq!(s.batch_max(1000), 1000);
    }

    #[test]
    fn failures_that_may_pass_are_retried_unchanged() {
        let mut s = BatchSizer::default();
        let ops = vec!["a".to_owned()];
        for e in [
            ControlPlaneError::Transport("refused".into()),
            ControlPlaneError::Timeout(std::time::Duration::from_secs(1)),
            ControlPlaneError::Throttled {
                status: 429,
                retry_after: None,
            },
        ] {
            assert_eq!(s.on_answer(Err(&e), 7, &ops), ShipDecision::Retry);
        }
        assert_eq!(s.batch_max(1000), 1000);
        assert!(!s.single_op());
    }
}
