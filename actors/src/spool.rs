//! The `Spool` seam: the durable queue of numbered reports that are not yet
//! acked by the control plane, so that nothing is lost across a LogShipper
//! restart, a control plane outage or a process restart.
//!
//! It also holds the claim journal (each claim recorded before it is sent,
//! until its terminal report is acked) and the replica id of the process, so
//! that a restarted process can name every operation the dead one may own.
//!
//! The daemon plugs in a file spool; `MemorySpool` serves tests and embedders
//! that accept losing reports when the process dies.

use std::collections::{BTreeMap, VecDeque};

use crate::model::{EncodedReport, Report, ReportBody, State, Stream};

/// What the spool knows of one operation after a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpooledOperation {
    pub op_id: String,
    /// Highest seq appended.
    pub last_seq: u64,
    /// Highest seq known to be acked.
    pub acked: u64,
    /// Whether the operation's terminal `op` report was appended.
    pub terminal: bool,
}

/// A claim the journal holds: recorded before the claim request was sent,
/// dropped when the claim was refused or the operation's terminal report was
/// acked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    pub op_id: String,
    /// The replica the claim was made for.
    pub replica_id: String,
    /// Whether the control plane's answer (the operation) was received; when
    /// not, only the control plane knows whether the claim took effect.
    pub answered: bool,
}

/// Where one node step of an operation stands, as far as the spool holds
/// its reports: what a restarted runner needs to resume the step without
/// repeating a line (it skips the lines already spooled) or a finished step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepProgress {
    /// 1-based step index.
    pub step: u32,
    pub node: String,
    /// `stdout` lines of the step on the node appended, acked or not.
    pub stdout_lines: u64,
    /// `stderr` lines likewise.
    pub stderr_lines: u64,
    /// The last node report of the step on the node.
    pub state: Option<NodeState>,
    /// Where reading the step's stdout may resume: a byte offset and the
    /// stdout lines reported before it (see `OutputSink::mark`).
    pub stdout_mark: Option<Mark>,
    /// Likewise for stderr.
    pub stderr_mark: Option<Mark>,
    /// When the step started on the node: the time of its `running` node
    /// report, as the report gave it. A step re-attached to keeps its
    /// timeout counted from there.
    pub started: Option<String>,
}

/// A point of a step's output stream: `lines` lines were reported from the
/// bytes before `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Mark {
    pub offset: u64,
    pub lines: u64,
}

/// The state a node report gave.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeState {
    pub state: State,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Per-step progress of one operation, keyed by step and node, updated
/// from every report appended: the part shared by every spool.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProgressMap(BTreeMap<(u32, String), StepProgress>);

impl ProgressMap {
    /// Counts `report` in; returns the key it changed, if any.
    pub fn record(&mut self, report: &Report) -> Option<(u32, String)> {
        let (step, node) = match &report.body {
            ReportBody::Log(l) if l.stream != Stream::System => (l.step, &l.node),
            ReportBody::Node(n) => (n.step, &n.node),
            _ => return None,
        };
        let key = (step, node.clone());
        let p = self.0.entry(key.clone()).or_insert_with(|| StepProgress {
            step,
            node: node.clone(),
            stdout_lines: 0,
            stderr_lines: 0,
            state: None,
            stdout_mark: None,
            stderr_mark: None,
            started: None,
        });
        match &report.body {
            ReportBody::Log(l) if l.stream == Stream::Stdout => p.stdout_lines += 1,
            ReportBody::Log(_) => p.stderr_lines += 1,
            ReportBody::Node(n) => {
                if n.state == State::Running {
                    p.started = Some(report.ts.clone());
                }
                p.state = Some(NodeState {
                    state: n.state,
                    exit_code: n.exit_code,
                    message: n.message.clone(),
                })
            }
            ReportBody::Op(_) => {}
        }
        Some(key)
    }

    /// Records a mark of `stream` of step `step` on `node`; returns the key
    /// when it changed anything.
    pub fn mark(
        &mut self,
        step: u32,
        node: &str,
        stream: Stream,
        mark: Mark,
    ) -> Option<(u32, String)> {
        let key = (step, node.to_owned());
        let p = self.0.get_mut(&key)?;
        let slot = match stream {
            Stream::Stdout => &mut p.stdout_mark,
            Stream::Stderr => &mut p.stderr_mark,
            Stream::System => return None,
        };
        if slot.is_some_and(|m| m.offset >= mark.offset) {
            return None;
        }
        *slot = Some(mark);
        Some(key)
    }

    /// Sets the progress of one step (replayed from storage).
    pub fn set(&mut self, p: StepProgress) {
        self.0.insert((p.step, p.node.clone()), p);
    }

    pub fn get(&self, step: u32, node: &str) -> Option<&StepProgress> {
        self.0.get(&(step, node.to_owned()))
    }

    pub fn values(&self) -> impl Iterator<Item = &StepProgress> {
        self.0.values()
    }

    pub fn to_vec(&self) -> Vec<StepProgress> {
        self.0.values().cloned().collect()
    }
}

/// Failure of the spool's storage.
#[derive(Debug, thiserror::Error)]
#[error("spool {path}: {message}")]
pub struct SpoolError {
    /// File or directory concerned.
    pub path: String,
    /// What failed (with the underlying error's text, when there is one).
    pub message: String,
    /// The I/O error behind it, for callers that act on its kind.
    #[source]
    pub source: Option<std::io::Error>,
}

impl SpoolError {
    /// A failure with no underlying I/O error (a bad record, a gap).
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        SpoolError {
            path: path.into(),
            message: message.into(),
            source: None,
        }
    }

    /// `what` failed on `path` with `source`.
    pub fn io(path: impl Into<String>, what: &str, source: std::io::Error) -> Self {
        SpoolError {
            path: path.into(),
            message: if what.is_empty() {
                source.to_string()
            } else {
                format!("{what}: {source}")
            },
            source: Some(source),
        }
    }
}

/// A durable report queue. Reports of one operation are appended in seq
/// order, without gaps.
pub trait Spool: Send + 'static {
    /// Appends reports (seq already assigned).
    fn append(&mut self, reports: &[Report]) -> Result<(), SpoolError>;
    /// Makes everything appended so far durable (fsync, by the spool's policy).
    fn flush(&mut self) -> Result<(), SpoolError>;
    /// Up to `max` reports of `op_id` with seq > `after`, in seq order.
    fn read(&mut self, op_id: &str, after: u64, max: usize) -> Result<Vec<Report>, SpoolError>;
    /// Everything of `op_id` up to `seq` is acked and may be dropped.
    fn ack(&mut self, op_id: &str, seq: u64) -> Result<(), SpoolError>;
    /// Operations with anything spooled (acked or not), as found at startup
    /// or left by a previous LogShipper instance.
    fn operations(&mut self) -> Result<Vec<SpooledOperation>, SpoolError>;
    /// Forgets an operation whose terminal report is acked.
    fn forget(&mut self, op_id: &str) -> Result<(), SpoolError>;

    /// Appends one report given with its JSON (`EncodedReport::of`), so a
    /// spool that stores JSON need not encode it again. The default appends
    /// the report.
    fn append_encoded(&mut self, report: &Report, json: &str) -> Result<(), SpoolError> {
        let _ = json;
        self.append(std::slice::from_ref(report))
    }

    /// As [`Spool::read`], each report with its JSON. The default encodes
    /// what `read` gives; a spool that stores JSON hands it over as stored.
    fn read_encoded(
        &mut self,
        op_id: &str,
        after: u64,
        max: usize,
    ) -> Result<Vec<EncodedReport>, SpoolError> {
        Ok(self
            .read(op_id, after, max)?
            .iter()
            .map(EncodedReport::of)
            .collect())
    }

    /// Where each node step of `op_id` stands, from every report of it
    /// appended (acked or not) since it was last forgotten, in step and
    /// node order. The default knows nothing: a runner with such a spool
    /// cannot resume a step after a restart and reports it failed.
    fn progress(&mut self, op_id: &str) -> Result<Vec<StepProgress>, SpoolError> {
        let _ = op_id;
        Ok(Vec::new())
    }

    /// Records that `lines` lines of `stream` of step `step` on `node` were
    /// reported from the bytes before `offset` of its output. Durable with
    /// the next ack record at the latest; the default keeps none (a
    /// re-attached step is then read from its start).
    fn mark(
        &mut self,
        op_id: &str,
        step: u32,
        node: &str,
        stream: Stream,
        mark: Mark,
    ) -> Result<(), SpoolError> {
        let _ = (op_id, step, node, stream, mark);
        Ok(())
    }

    /// Journals the intent to claim `op_id` for `replica_id`; durable when
    /// it returns (the claim request is sent only after). The default keeps
    /// no journal, for spools written before it existed: such a runner
    /// leaves a claim cut short by a crash to the server's down-timeout.
    fn journal_claim(&mut self, op_id: &str, replica_id: &str) -> Result<(), SpoolError> {
        let _ = (op_id, replica_id);
        Ok(())
    }
    /// Journals that the claim of `op_id` was answered with the operation.
    fn journal_claimed(&mut self, op_id: &str, replica_id: &str) -> Result<(), SpoolError> {
        let _ = (op_id, replica_id);
        Ok(())
    }
    /// Drops `op_id` from the journal: the claim was refused, the control
    /// plane says the operation is not this runner's, or its terminal report
    /// was acked.
    fn journal_release(&mut self, op_id: &str) -> Result<(), SpoolError> {
        let _ = op_id;
        Ok(())
    }
    /// The journal's entries, in operation id order.
    fn journal(&mut self) -> Result<Vec<JournalEntry>, SpoolError> {
        Ok(Vec::new())
    }
    /// Records the replica id this process registered as, durably, so that
    /// the next process can name it.
    fn record_replica(&mut self, replica_id: &str) -> Result<(), SpoolError> {
        let _ = replica_id;
        Ok(())
    }
    /// The replica id recorded last (by this process or a previous one).
    fn recorded_replica(&mut self) -> Result<Option<String>, SpoolError> {
        Ok(None)
    }
}

/// A spool in memory: survives a LogShipper restart, not a process restart.
#[derive(Debug, Default)]
pub struct MemorySpool {
    ops: BTreeMap<String, MemOp>,
    journal: BTreeMap<String, JournalEntry>,
    replica: Option<String>,
}

#[derive(Debug, Default)]
struct MemOp {
    reports: VecDeque<Report>,
    progress: ProgressMap,
    last_seq: u64,
    acked: u64,
    terminal: bool,
}

impl MemorySpool {
    pub fn new() -> Self {
        Self::default()
    }

    /// Reports held (not yet acked), across operations.
    pub fn len(&self) -> usize {
        self.ops.values().map(|o| o.reports.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Spool for MemorySpool {
    fn append(&mut self, reports: &[Report]) -> Result<(), SpoolError> {
        for r in reports {
            let op = self.ops.entry(r.op_id.clone()).or_default();
            if r.seq != op.last_seq + 1 {
                return Err(SpoolError::new(
                    "memory",
                    format!(
                        "operation {}: append of seq {} after {}",
                        r.op_id, r.seq, op.last_seq
                    ),
                ));
            }
            op.last_seq = r.seq;
            op.terminal |= r.is_terminal();
            op.progress.record(r);
            op.reports.push_back(r.clone());
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SpoolError> {
        Ok(())
    }

    fn read(&mut self, op_id: &str, after: u64, max: usize) -> Result<Vec<Report>, SpoolError> {
        Ok(self
            .ops
            .get(op_id)
            .map(|op| {
                op.reports
                    .iter()
                    .filter(|r| r.seq > after)
                    .take(max)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default())
    }

    fn ack(&mut self, op_id: &str, seq: u64) -> Result<(), SpoolError> {
        if let Some(op) = self.ops.get_mut(op_id) {
            op.acked = op.acked.max(seq.min(op.last_seq));
            while op.reports.front().is_some_and(|r| r.seq <= op.acked) {
                op.reports.pop_front();
            }
        }
        Ok(())
    }

    fn operations(&mut self) -> Result<Vec<SpooledOperation>, SpoolError> {
        Ok(self
            .ops
            .iter()
            .map(|(id, op)| SpooledOperation {
                op_id: id.clone(),
                last_seq: op.last_seq,
                acked: op.acked,
                terminal: op.terminal,
            })
            .collect())
    }

    fn forget(&mut self, op_id: &str) -> Result<(), SpoolError> {
        self.ops.remove(op_id);
        Ok(())
    }

    fn progress(&mut self, op_id: &str) -> Result<Vec<StepProgress>, SpoolError> {
        Ok(self
            .ops
            .get(op_id)
            .map(|o| o.progress.to_vec())
            .unwrap_or_default())
    }

    fn mark(
        &mut self,
        op_id: &str,
        step: u32,
        node: &str,
        stream: Stream,
        mark: Mark,
    ) -> Result<(), SpoolError> {
        if let Some(op) = self.ops.get_mut(op_id) {
            op.progress.mark(step, node, stream, mark);
        }
        Ok(())
    }

    fn journal_claim(&mut self, op_id: &str, replica_id: &str) -> Result<(), SpoolError> {
        self.journal.insert(
            op_id.to_owned(),
            JournalEntry {
                op_id: op_id.to_owned(),
                replica_id: replica_id.to_owned(),
                answered: false,
            },
        );
        Ok(())
    }

    fn journal_claimed(&mut self, op_id: &str, replica_id: &str) -> Result<(), SpoolError> {
        self.journal.insert(
            op_id.to_owned(),
            JournalEntry {
                op_id: op_id.to_owned(),
                replica_id: replica_id.to_owned(),
                answered: true,
            },
        );
        Ok(())
    }

    fn journal_release(&mut self, op_id: &str) -> Result<(), SpoolError> {
        self.journal.remove(op_id);
        Ok(())
    }

    fn journal(&mut self) -> Result<Vec<JournalEntry>, SpoolError> {
        Ok(self.journal.values().cloned().collect())
    }

    fn record_replica(&mut self, replica_id: &str) -> Result<(), SpoolError> {
        self.replica = Some(replica_id.to_owned());
        Ok(())
    }

    fn recorded_replica(&mut self) -> Result<Option<String>, SpoolError> {
        Ok(self.replica.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{LogReport, OpReport, ReportBody, State, Stream};

    fn log(op: &str, seq: u64) -> Report {
        Report {
            op_id: op.into(),
            seq,
            ts: "1970-01-01T00:00:00.000Z".into(),
            body: ReportBody::Log(LogReport {
                node: "n".into(),
                step: 1,
                stream: Stream::Stdout,
                text: format!("line {seq}"),
            }),
        }
    }

    #[test]
    fn memory_spool_reads_acks_and_refuses_gaps() {
        let mut s = MemorySpool::new();
        s.append(&[log("a", 1), log("a", 2), log("b", 1)]).unwrap();
        assert!(s.append(&[log("a", 4)]).is_err());
        assert_eq!(s.read("a", 0, 10).unwrap().len(), 2);
        s.ack("a", 1).unwrap();
        let rest = s.read("a", 0, 10).unwrap();
        assert_eq!(rest.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![2]);
        let term = Report {
            body: ReportBody::Op(OpReport {
                state: State::Succeeded,
                message: None,
            }),
            ..log("a", 3)
        };
        s.append(&[term]).unwrap();
        let ops = s.operations().unwrap();
        assert_eq!(ops[0].op_id, "a");
        assert_eq!(
            (ops[0].last_seq, ops[0].acked, ops[0].terminal),
            (3, 1, true)
        );
        s.forget("a").unwrap();
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn memory_spool_journals_claims_until_released() {
        let mut s = MemorySpool::new();
        s.journal_claim("a", "r1").unwrap();
        s.journal_claim("b", "r1").unwrap();
        s.journal_claimed("a", "r1").unwrap();
        s.journal_release("b").unwrap();
        assert_eq!(
            s.journal().unwrap(),
            vec![JournalEntry {
                op_id: "a".into(),
                replica_id: "r1".into(),
                answered: true
            }]
        );
        assert_eq!(s.recorded_replica().unwrap(), None);
        s.record_replica("r2").unwrap();
        assert_eq!(s.recorded_replica().unwrap().as_deref(), Some("r2"));
    }
}
