//! The operation table: where each operation is in its life on this replica
//! (offered → claimed → queued/running → terminal), `maxRunning` with a FIFO
//! queue, and the aborts of running operations. A named store the runtime
//! owns ([`OperationStore`]), so that a restarted registry finds every entry
//! where the dead one left it, and the Poller reads what runs without asking
//! any actor.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::watch;

use crate::executor::OperationAbort;
use crate::model::{Operation, State};
use crate::stats::StatsCell;

/// Where an operation is in its life on this replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpPhase {
    /// Offered in a check-in answer; the claim is in flight.
    Offered,
    /// Waiting for a free slot.
    Queued,
    /// A StepWorker runs it.
    Running,
    /// Its terminal report is spooled.
    Done(State),
}

/// What the registry keeps of a running operation for operations.log.
#[derive(Debug, Clone)]
pub struct OpSummary {
    pub execution: u64,
    pub project: String,
    pub job: String,
    pub nodes: usize,
    pub started: Option<Instant>,
}

#[derive(Debug)]
struct Entry {
    phase: OpPhase,
    cancel_requested: bool,
    op: Option<Box<Operation>>,
    abort: Option<OperationAbort>,
    summary: Option<OpSummary>,
}

/// The outcome of a claim, as the registry must act on it.
#[derive(Debug)]
pub enum Admission {
    /// Start a StepWorker now.
    Start(Box<Operation>),
    /// All slots are taken: it waits in the queue.
    Queued,
    /// Already known: the same operation is not run twice.
    Duplicate,
    /// Cancelled while the claim was in flight: report it aborted.
    CancelledBeforeStart,
}

/// The outcome of a cancel.
#[derive(Debug)]
pub enum CancelAction {
    /// Running: fire its abort.
    Abort(OperationAbort),
    /// Queued: it never starts; report it aborted.
    DropQueued,
    /// Offered, claim in flight: noted, acted on when the claim answers.
    Noted,
    /// Unknown or already terminal.
    Ignore,
}

/// The per-operation state machine: the registry's plain logic.
#[derive(Debug)]
pub struct OperationTable {
    entries: HashMap<String, Entry>,
    queue: VecDeque<String>,
    done: VecDeque<String>,
    max_running: usize,
    running: usize,
}

/// Terminal entries kept to refuse a late re-offer of a finished operation.
const DONE_MEMORY: usize = 10_000;

impl OperationTable {
    pub fn new(max_running: usize) -> Self {
        OperationTable {
            entries: HashMap::new(),
            queue: VecDeque::new(),
            done: VecDeque::new(),
            max_running: max_running.max(1),
            running: 0,
        }
    }

    /// An offer arrived; `true` when it is new and should be claimed.
    pub fn offer(&mut self, op_id: &str) -> bool {
        if self.entries.contains_key(op_id) {
            return false;
        }
        self.entries.insert(
            op_id.to_owned(),
            Entry {
                phase: OpPhase::Offered,
                cancel_requested: false,
                op: None,
                abort: None,
                summary: None,
            },
        );
        true
    }

    /// The claim was lost or failed: forget the offer (it may come again).
    pub fn claim_failed(&mut self, op_id: &str) {
        if self
            .entries
            .get(op_id)
            .is_some_and(|e| e.phase == OpPhase::Offered)
        {
            self.entries.remove(op_id);
        }
    }

    /// The claim succeeded.
    pub fn claimed(&mut self, op: Box<Operation>) -> Admission {
        let entry = self.entries.entry(op.id.clone()).or_insert(Entry {
            phase: OpPhase::Offered,
            cancel_requested: false,
            op: None,
            abort: None,
            summary: None,
        });
        if entry.phase != OpPhase::Offered {
            return Admission::Duplicate;
        }
        entry.summary = Some(OpSummary {
            execution: op.execution.id,
            project: op.execution.project.clone(),
            job: op.execution.job.clone(),
            nodes: op.nodes.len(),
            started: None,
        });
        if entry.cancel_requested {
            entry.phase = OpPhase::Queued;
            return Admission::CancelledBeforeStart;
        }
        if self.running < self.max_running {
            entry.phase = OpPhase::Running;
            self.running += 1;
            Admission::Start(op)
        } else {
            entry.phase = OpPhase::Queued;
            self.queue.push_back(op.id.clone());
            entry.op = Some(op);
            Admission::Queued
        }
    }

    /// The next queued operation when a slot is free (it becomes running).
    pub fn next_to_start(&mut self) -> Option<Box<Operation>> {
        while self.running < self.max_running {
            let id = self.queue.pop_front()?;
            let Some(entry) = self.entries.get_mut(&id) else {
                continue;
            };
            if entry.phase != OpPhase::Queued {
                continue;
            }
            let Some(op) = entry.op.take() else { continue };
            entry.phase = OpPhase::Running;
            self.running += 1;
            return Some(op);
        }
        None
    }

    /// Records the abort handle and start time of a running operation.
    pub fn started(&mut self, op_id: &str, abort: OperationAbort, now: Instant) {
        if let Some(e) = self.entries.get_mut(op_id) {
            e.abort = Some(abort);
            if let Some(s) = e.summary.as_mut() {
                s.started = Some(now);
            }
        }
    }

    pub fn cancel(&mut self, op_id: &str) -> CancelAction {
        let Some(entry) = self.entries.get_mut(op_id) else {
            return CancelAction::Ignore;
        };
        match entry.phase {
            OpPhase::Offered => {
                entry.cancel_requested = true;
                CancelAction::Noted
            }
            OpPhase::Queued => {
                entry.op = None;
                CancelAction::DropQueued
            }
            OpPhase::Running => match &entry.abort {
                Some(a) => CancelAction::Abort(a.clone()),
                None => CancelAction::Ignore,
            },
            OpPhase::Done(_) => CancelAction::Ignore,
        }
    }

    /// The operation's terminal report is spooled; returns what
    /// operations.log needs.
    pub fn finished(&mut self, op_id: &str, state: State) -> Option<OpSummary> {
        let entry = self.entries.get_mut(op_id)?;
        if matches!(entry.phase, OpPhase::Done(_)) {
            return None;
        }
        if entry.phase == OpPhase::Running {
            self.running -= 1;
        }
        entry.phase = OpPhase::Done(state);
        entry.op = None;
        entry.abort = None;
        let summary = entry.summary.take();
        self.done.push_back(op_id.to_owned());
        if self.done.len() > DONE_MEMORY {
            if let Some(old) = self.done.pop_front() {
                self.entries.remove(&old);
            }
        }
        summary
    }

    /// Queued operations to report aborted and the aborts of running ones.
    pub fn abort_all(&mut self) -> (Vec<String>, Vec<OperationAbort>) {
        let queued = self
            .queue
            .drain(..)
            .filter(|id| {
                self.entries
                    .get(id)
                    .is_some_and(|e| e.phase == OpPhase::Queued)
            })
            .collect();
        (queued, self.running_aborts())
    }

    pub fn running_aborts(&self) -> Vec<OperationAbort> {
        self.entries
            .values()
            .filter_map(|e| e.abort.clone())
            .collect()
    }

    pub fn phase(&self, op_id: &str) -> Option<OpPhase> {
        self.entries.get(op_id).map(|e| e.phase)
    }

    /// Ids of running operations (for the check-in's `running`).
    pub fn running_ids(&self) -> Vec<String> {
        let mut ids: Vec<_> = self
            .entries
            .iter()
            .filter(|(_, e)| e.phase == OpPhase::Running)
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        ids
    }

    pub fn running_count(&self) -> usize {
        self.running
    }

    pub fn queued_count(&self) -> usize {
        self.entries
            .values()
            .filter(|e| e.phase == OpPhase::Queued)
            .count()
    }

    /// Offered (claim in flight), claimed or running: not terminal.
    pub fn active(&self) -> usize {
        self.entries
            .values()
            .filter(|e| !matches!(e.phase, OpPhase::Done(_)))
            .count()
    }
}

/// The operation table as a store: the table behind a lock, and what it
/// publishes (the counters, and the number of active operations a drain
/// waits on).
pub struct OperationStore {
    table: Mutex<OperationTable>,
    active: watch::Sender<usize>,
    stats: StatsCell,
}

impl OperationStore {
    pub(crate) fn new(max_running: usize, stats: StatsCell) -> Self {
        OperationStore {
            table: Mutex::new(OperationTable::new(max_running)),
            active: watch::channel(0).0,
            stats,
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, OperationTable> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes the table's counts to the stats and the drain.
    pub fn refresh_counts(&self) {
        let (running, queued, active) = {
            let t = self.lock();
            (
                t.running_count() as u32,
                t.queued_count() as u32,
                t.active(),
            )
        };
        self.stats.update(|s| {
            s.running = running;
            s.queued = queued;
        });
        self.active.send_replace(active);
    }

    /// Counts an operation ended with `outcome`.
    pub(crate) fn count_finished(&self, outcome: crate::model::State) {
        self.stats.update(|s| {
            *s.operations_finished
                .entry(outcome.as_str().to_owned())
                .or_default() += 1;
        });
    }

    /// Watches the number of operations offered, claimed or running.
    pub fn active(&self) -> watch::Receiver<usize> {
        self.active.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Dispatch, ExecutionInfo, Node};

    pub(crate) fn op(id: &str) -> Box<Operation> {
        Box::new(Operation {
            id: id.into(),
            execution: ExecutionInfo::default(),
            steps: vec![],
            nodes: vec![Node::local("n")],
            dispatch: Dispatch::default(),
            options: Default::default(),
            secure_options: vec![],
            timeout_ms: None,
            step_timeout_ms: None,
        })
    }

    #[test]
    fn an_operation_offered_twice_is_claimed_and_run_once() {
        let mut t = OperationTable::new(2);
        assert!(t.offer("a"));
        assert!(!t.offer("a"));
        assert!(matches!(t.claimed(op("a")), Admission::Start(_)));
        assert!(matches!(t.claimed(op("a")), Admission::Duplicate));
        assert!(!t.offer("a"));
        t.finished("a", State::Succeeded);
        // Still remembered after it ended.
        assert!(!t.offer("a"));
        assert_eq!(t.phase("a"), Some(OpPhase::Done(State::Succeeded)));
    }

    #[test]
    fn max_running_queues_in_fifo_order_and_frees_slots() {
        let mut t = OperationTable::new(1);
        for id in ["a", "b", "c"] {
            assert!(t.offer(id));
        }
        assert!(matches!(t.claimed(op("a")), Admission::Start(_)));
        assert!(matches!(t.claimed(op("b")), Admission::Queued));
        assert!(matches!(t.claimed(op("c")), Admission::Queued));
        assert_eq!((t.running_count(), t.queued_count(), t.active()), (1, 2, 3));
        t.offer("d");
        assert_eq!(t.active(), 4);
        assert!(t.next_to_start().is_none());
        t.finished("a", State::Succeeded);
        assert_eq!(t.next_to_start().unwrap().id, "b");
        assert!(t.next_to_start().is_none());
        assert_eq!(t.running_ids(), vec!["b".to_owned()]);
    }

    #[test]
    fn cancels_depend_on_the_phase() {
        let mut t = OperationTable::new(1);
        t.offer("run");
        t.offer("wait");
        t.offer("inflight");
        t.claimed(op("run"));
        t.started("run", OperationAbort::new(), Instant::now());
        t.claimed(op("wait"));
        assert!(matches!(t.cancel("run"), CancelAction::Abort(_)));
        assert!(matches!(t.cancel("wait"), CancelAction::DropQueued));
        assert!(matches!(t.cancel("inflight"), CancelAction::Noted));
        assert!(matches!(t.cancel("nobody"), CancelAction::Ignore));
        assert!(matches!(
            t.claimed(op("inflight")),
            Admission::CancelledBeforeStart
        ));
        // The dropped queued operation never starts.
        t.finished("wait", State::Aborted);
        t.finished("run", State::Aborted);
        assert!(t.next_to_start().is_none());
    }

    #[test]
    fn a_failed_claim_forgets_the_offer() {
        let mut t = OperationTable::new(1);
        assert!(t.offer("a"));
        t.claim_failed("a");
        assert!(t.offer("a"));
    }
}
