//! The ExecutionRegistry: drains its inbox (claimed operations, cancels,
//! finished operations), admits operations to the operation table
//! (`maxRunning` with a FIFO queue), starts one StepWorker per running
//! operation under the supervisor, and routes cancels to the operation's
//! abort.
//!
//! The table and the inbox are named stores the runtime owns, not the
//! actor's, so producers (the Poller, the LogShipper, StepWorkers) hand work
//! over without waiting for the registry, and a restarted registry finds
//! every entry and every unhandled command where the dead one left them.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use slog::{debug, info, Logger};

use crate::clock::Clock;
use crate::executor::{AbortReason, OperationAbort};
use crate::failpoints::{fail_point, FailPoints};
use crate::inbox::{RegistryCommand, RegistryInbox};
use crate::model::{Operation, State};
use crate::operations::{Admission, CancelAction, OperationStore};
use crate::outcome::Outcomes;
use crate::step_worker::{StepWorker, WorkerParts};
use crate::supervisor::{
    spawn_actor, ChildSpec, ExitReason, RestartType, StartChild, StopChild, Supervisor,
};

/// What the registry touches, each by name.
pub(crate) struct RegistryParts {
    /// The operation table: admissions, cancels, the queue.
    pub operations: Arc<OperationStore>,
    /// Its commands.
    pub inbox: Arc<RegistryInbox>,
    /// Ends queued and cancelled operations, and those whose worker died.
    pub outcomes: Arc<Outcomes>,
    /// What each StepWorker it starts is given.
    pub workers: Arc<WorkerParts>,
    /// The supervisor StepWorkers run under (temporary children).
    pub supervisor: Addr<Supervisor>,
    /// TERM→KILL grace of the steps, for a worker's shutdown bound.
    pub kill_grace: Duration,
    pub clock: Arc<dyn Clock>,
    pub log: Logger,
    pub ops_log: Logger,
    pub fail_points: FailPoints,
}

/// The registry actor: a thin shell that drains its inbox.
pub struct ExecutionRegistry {
    parts: Arc<RegistryParts>,
}

impl ExecutionRegistry {
    pub(crate) fn new(parts: Arc<RegistryParts>) -> Self {
        ExecutionRegistry { parts }
    }

    fn arm(&self, ctx: &mut Context<Self>) {
        let inbox = self.parts.inbox.clone();
        ctx.spawn(
            async move { inbox.wait().await }
                .into_actor(self)
                .map(|(), act, ctx| {
                    act.process(ctx);
                    act.arm(ctx);
                }),
        );
    }

    fn process(&mut self, ctx: &mut Context<Self>) {
        while let Some(cmd) = self.parts.inbox.front() {
            fail_point!(self.parts.fail_points, "registry::command");
            self.handle_command(cmd, ctx);
            self.parts.inbox.pop();
        }
        self.parts.operations.refresh_counts();
    }

    fn handle_command(&mut self, cmd: RegistryCommand, _ctx: &mut Context<Self>) {
        let p = &self.parts;
        match cmd {
            RegistryCommand::Claimed(op) => {
                let id = op.id.clone();
                let admission = p.operations.lock().claimed(op);
                match admission {
                    Admission::Start(op) => self.start_worker(op),
                    Admission::Queued => {
                        info!(p.log, "all slots taken, operation queued"; "op" => &id)
                    }
                    Admission::Duplicate => {
                        debug!(p.log, "operation already known, not run twice"; "op" => &id)
                    }
                    Admission::CancelledBeforeStart => p.outcomes.finish(
                        &id,
                        State::Aborted,
                        Some("cancelled before it started".into()),
                    ),
                }
            }
            RegistryCommand::Cancel(id) => {
                let action = p.operations.lock().cancel(&id);
                match action {
                    // The control plane repeats a cancel until the operation
                    // ends; the first one is the news.
                    CancelAction::Abort(abort) if abort.reason().is_none() => {
                        info!(p.log, "cancel routed to the running operation"; "op" => &id);
                        abort.abort(AbortReason::Cancelled);
                    }
                    CancelAction::Abort(_) => {}
                    CancelAction::DropQueued => p.outcomes.finish(
                        &id,
                        State::Aborted,
                        Some("cancelled before it started".into()),
                    ),
                    CancelAction::Noted | CancelAction::Ignore => {}
                }
            }
            RegistryCommand::Finished(id) => {
                debug!(p.log, "operation finished, slot free"; "op" => &id);
                self.start_queued()
            }
            RegistryCommand::AbortAll(reason) => {
                let (queued, running) = p.operations.lock().abort_all();
                for abort in running {
                    abort.abort(reason);
                }
                for id in queued {
                    p.outcomes.finish(
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
            let next = self.parts.operations.lock().next_to_start();
            match next {
                Some(op) => self.start_worker(op),
                None => break,
            }
        }
    }

    fn start_worker(&mut self, op: Box<Operation>) {
        let p = self.parts.clone();
        let id = op.id.clone();
        let abort = OperationAbort::new();
        p.operations
            .lock()
            .started(&id, abort.clone(), p.clock.now());
        info!(p.ops_log, "operation started";
            "op" => &id, "execution" => op.execution.id, "project" => &op.execution.project,
            "job" => &op.execution.job, "nodes" => op.nodes.len(), "outcome" => "running",
            "duration_ms" => 0u64);
        let op: Arc<Operation> = Arc::from(op);
        let (w, a) = (p.workers.clone(), abort.clone());
        let factory = move || {
            let (w, op, a) = (w.clone(), op.clone(), a.clone());
            spawn_actor(None, move || StepWorker::new(w, op, a))
        };
        let (outcomes, a, op_id) = (p.outcomes.clone(), abort, id.clone());
        let shutdown = p.kill_grace + Duration::from_secs(2);
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
            outcomes.finish(&op_id, state, Some(message));
        });
        p.supervisor.do_send(StartChild(spec));
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
