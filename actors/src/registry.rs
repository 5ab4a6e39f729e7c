//! The ExecutionRegistry: one entry per operation (offered → claimed →
//! queued/running → terminal), `maxRunning` with a FIFO queue, one StepWorker
//! per running operation, cancels routed to the operation's abort.
//!
//! The table and the inbox live in the runtime's shared state, not in the
//! actor, so producers (the Poller, the LogShipper, StepWorkers) hand work
//! over without waiting for the registry, and a restarted registry finds
//! every entry and every unhandled command where the dead one left them.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use slog::{debug, info, warn};
use tokio::sync::Notify;

use crate::executor::AbortReason;
use crate::failpoints::fail_point;
use crate::model::{OpReport, Operation, ReportBody, State};
use crate::runtime::Shared;
use crate::step_worker::{OperationAbort, StepWorker};
use crate::supervisor::{spawn_actor, ChildSpec, ExitReason, RestartType, StartChild, StopChild};

/// A queue that outlives the actor reading it: producers push without
/// waiting; the current reader drains it when notified.
pub(crate) struct Mailbox<T> {
    queue: Mutex<VecDeque<T>>,
    notify: Notify,
}

impl<T> Default for Mailbox<T> {
    fn default() -> Self {
        Mailbox {
            queue: Mutex::new(VecDeque::new()),
            notify: Notify::new(),
        }
    }
}

impl<T> Mailbox<T> {
    pub fn push(&self, item: T) {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(item);
        self.notify.notify_one();
    }

    /// The oldest item, left in place until [`Mailbox::pop`]: a reader
    /// that dies while handling it leaves it for the next reader.
    pub fn front(&self) -> Option<T>
    where
        T: Clone,
    {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .front()
            .cloned()
    }

    pub fn pop(&self) -> Option<T> {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
    }

    /// Waits until something was pushed since the last wait.
    pub async fn wait(&self) {
        self.notify.notified().await
    }
}

/// What the registry is asked to do. Handling a command twice changes
/// nothing the second time (the table refuses a second start), so a
/// registry that died mid-command can safely be handed it again.
#[derive(Debug, Clone)]
pub(crate) enum RegistryCommand {
    /// The Poller claimed this operation.
    Claimed(Box<Operation>),
    /// The control plane cancelled this operation.
    Cancel(String),
    /// An operation ended: a slot may be free.
    Finished(String),
    /// Abort everything (drain deadline or second signal).
    AbortAll(AbortReason),
}

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

/// Spools an operation's terminal report (once: later calls do nothing),
/// writes its operations.log end record, frees its slot and wakes the
/// registry to start the next queued one. Safe to call from any thread.
pub(crate) fn finish_operation(
    shared: &Shared,
    op_id: &str,
    state: State,
    message: Option<String>,
) {
    let body = ReportBody::Op(OpReport {
        state,
        message: message.clone(),
    });
    if !shared.intake.push(op_id, body) {
        return;
    }
    let summary = shared.table().finished(op_id, state);
    if let Some(s) = summary {
        let duration_ms = s
            .started
            .map(|t| shared.clock.now().saturating_duration_since(t).as_millis() as u64)
            .unwrap_or(0);
        info!(shared.ops_log, "operation ended";
            "op" => op_id, "execution" => s.execution, "project" => &s.project,
            "job" => &s.job, "nodes" => s.nodes, "outcome" => state.as_str(),
            "duration_ms" => duration_ms, "message" => message.unwrap_or_default());
    }
    shared.refresh_counts();
    shared
        .inbox
        .push(RegistryCommand::Finished(op_id.to_owned()));
}

/// The registry actor: a thin shell that drains the shared inbox.
pub struct ExecutionRegistry {
    shared: Arc<Shared>,
}

impl ExecutionRegistry {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        ExecutionRegistry { shared }
    }

    fn arm(&self, ctx: &mut Context<Self>) {
        let shared = self.shared.clone();
        ctx.spawn(
            async move { shared.inbox.wait().await }
                .into_actor(self)
                .map(|(), act, ctx| {
                    act.process(ctx);
                    act.arm(ctx);
                }),
        );
    }

    fn process(&mut self, ctx: &mut Context<Self>) {
        while let Some(cmd) = self.shared.inbox.front() {
            fail_point!(self.shared.fail_points, "registry::command");
            self.handle_command(cmd, ctx);
            self.shared.inbox.pop();
        }
        self.shared.refresh_counts();
    }

    fn handle_command(&mut self, cmd: RegistryCommand, _ctx: &mut Context<Self>) {
        let shared = &self.shared;
        match cmd {
            RegistryCommand::Claimed(op) => {
                let id = op.id.clone();
                let admission = shared.table().claimed(op);
                match admission {
                    Admission::Start(op) => self.start_worker(op),
                    Admission::Queued => {
                        info!(shared.log, "all slots taken, operation queued"; "op" => &id)
                    }
                    Admission::Duplicate => {
                        debug!(shared.log, "operation already known, not run twice"; "op" => &id)
                    }
                    Admission::CancelledBeforeStart => finish_operation(
                        shared,
                        &id,
                        State::Aborted,
                        Some("cancelled before it started".into()),
                    ),
                }
            }
            RegistryCommand::Cancel(id) => {
                let action = shared.table().cancel(&id);
                match action {
                    // The control plane repeats a cancel until the operation
                    // ends; the first one is the news.
                    CancelAction::Abort(abort) if abort.reason().is_none() => {
                        info!(shared.log, "cancel routed to the running operation"; "op" => &id);
                        abort.abort(AbortReason::Cancelled);
                    }
                    CancelAction::Abort(_) => {}
                    CancelAction::DropQueued => finish_operation(
                        shared,
                        &id,
                        State::Aborted,
                        Some("cancelled before it started".into()),
                    ),
                    CancelAction::Noted | CancelAction::Ignore => {}
                }
            }
            RegistryCommand::Finished(id) => {
                debug!(shared.log, "operation finished, slot free"; "op" => &id);
                self.start_queued()
            }
            RegistryCommand::AbortAll(reason) => {
                let (queued, running) = shared.table().abort_all();
                for abort in running {
                    abort.abort(reason);
                }
                for id in queued {
                    finish_operation(
                        shared,
                        &id,
                        State::Aborted,
                        Some("the runner shut down before the operation started".into()),
                    );
                }
            }
        }
    }

    fn start_queued(&mut self) {
        loop {
            let next = self.shared.table().next_to_start();
            match next {
                Some(op) => self.start_worker(op),
                None => break,
            }
        }
    }

    fn start_worker(&mut self, op: Box<Operation>) {
        let shared = self.shared.clone();
        let id = op.id.clone();
        let abort = OperationAbort::new();
        shared
            .table()
            .started(&id, abort.clone(), shared.clock.now());
        info!(shared.ops_log, "operation started";
            "op" => &id, "execution" => op.execution.id, "project" => &op.execution.project,
            "job" => &op.execution.job, "nodes" => op.nodes.len(), "outcome" => "running",
            "duration_ms" => 0u64);
        let Some(supervisor) = shared.supervisor.get().cloned() else {
            warn!(shared.log, "no supervisor to start a worker under"; "op" => &id);
            finish_operation(
                &shared,
                &id,
                State::Failed,
                Some("the runner is not running".into()),
            );
            return;
        };
        let op: Arc<Operation> = Arc::from(op);
        let (s, a) = (shared.clone(), abort.clone());
        let factory = move || {
            let (s, op, a) = (s.clone(), op.clone(), a.clone());
            spawn_actor(None, move || StepWorker::new(s, op, a))
        };
        let (s, a, op_id) = (shared.clone(), abort, id.clone());
        let shutdown = shared.config.kill_grace + Duration::from_secs(2);
        let spec = ChildSpec::new(
            format!("step_worker[{id}]"),
            RestartType::Temporary,
            shutdown,
            factory,
        )
        .on_exit(move |reason| {
            // A worker that ended normally has spooled its terminal
            // report already, and this changes nothing.
            let (state, message) = match reason {
                ExitReason::Normal => return,
                ExitReason::Shutdown => (State::Aborted, "the runner shut down".to_owned()),
                other => (
                    State::Failed,
                    format!("the operation's step worker {other}; its node steps were not re-run"),
                ),
            };
            a.abort(AbortReason::Shutdown);
            finish_operation(&s, &op_id, state, Some(message));
        });
        supervisor.do_send(StartChild(spec));
    }
}

impl Actor for ExecutionRegistry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Commands pushed while no registry was alive are handled now.
        self.process(ctx);
        self.start_queued();
        self.arm(ctx);
    }
}

impl Handler<StopChild> for ExecutionRegistry {
    type Result = ();

    fn handle(&mut self, _: StopChild, ctx: &mut Context<Self>) {
        ctx.stop();
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
