//! The StepWorker: runs one operation. Nodes are dispatched in rank order,
//! `threadCount` at a time, each node's steps in order on a thread of its
//! own (never on an actor thread); every step of a node is expanded and
//! checked before the first one runs; output is masked and streamed line by
//! line to the report intake; step and operation timeouts and cancels fire
//! the executor's `AbortSignal`.
//!
//! A StepWorker is a `temporary` child: if it dies, its operation is reported
//! failed with the cause (see the registry) and its node steps are never
//! re-run, since a step may not be idempotent.

use std::cmp::Ordering;
use std::collections::{HashMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use actix::prelude::*;
use slog::{error, info, warn};

use slog::Logger;

use crate::context::{DataContext, MaskedLines, Masker};
use crate::executor::{
    AbortReason, AbortSignal, ExecutorError, NodeExecutor, OperationAbort, OutputSink, StepOutcome,
    StepRequest,
};
use crate::failpoints::{fail_point, FailPoints};
use crate::intake::ReportIntake;
use crate::model::{
    parse_rfc3339, printable, Dispatch, ExecutorKind, LogReport, Node, NodeReport, OpReport,
    Operation, RankOrder, ReportBody, State, Stream,
};
use crate::outcome::Outcomes;
use crate::resume::ResumePlans;
use crate::settings::RuntimeConfig;
use crate::spool::ProgressMap;
use crate::stats::{NodeStepGuard, StatsCell};
use crate::supervisor::{panic_message, StopChild};

/// What a StepWorker and its node-step threads touch, each by name.
pub(crate) struct WorkerParts {
    pub config: Arc<RuntimeConfig>,
    /// The executor for each kind of node the runner was given.
    pub executors: Arc<HashMap<ExecutorKind, Arc<dyn NodeExecutor>>>,
    /// Output lines and node reports go here.
    pub intake: Arc<ReportIntake>,
    /// The operation's end goes through here.
    pub outcomes: Arc<Outcomes>,
    /// Where the steps of operations carried on with after a restart stood.
    pub plans: Arc<ResumePlans>,
    /// Counts the node steps running.
    pub stats: StatsCell,
    pub log: Logger,
    pub fail_points: FailPoints,
}

/// Nodes in dispatch order: by `rank_attribute` (numerically when both
/// values are numbers), nodes without it last, ties by name; reversed for
/// `descending`.
pub fn dispatch_order(nodes: &[Node], dispatch: &Dispatch) -> Vec<Node> {
    let key = |n: &Node| n.attribute(&dispatch.rank_attribute);
    let mut sorted = nodes.to_vec();
    sorted.sort_by(|a, b| {
        let ord = match (key(a), key(b)) {
            (Some(x), Some(y)) => match (x.parse::<f64>(), y.parse::<f64>()) {
                (Ok(p), Ok(q)) => p.partial_cmp(&q).unwrap_or(Ordering::Equal),
                _ => x.cmp(&y),
            },
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        };
        let ord = ord.then_with(|| a.name.cmp(&b.name));
        match dispatch.rank_order {
            RankOrder::Ascending => ord,
            RankOrder::Descending => ord.reverse(),
        }
    });
    sorted
}

/// How one node step ended, as reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStepResult {
    pub state: State,
    pub exit_code: Option<i32>,
    pub message: Option<String>,
}

/// What is left at `now` of a timeout `full` counted from `started` (all
/// of it when the start is unknown; nothing once it passed).
pub fn time_left(full: Duration, started: Option<SystemTime>, now: SystemTime) -> Duration {
    match started {
        Some(t) => full.saturating_sub(now.duration_since(t).unwrap_or_default()),
        None => full,
    }
}

/// Turns what `execute` returned (or its panic) and the step's abort
/// reason into the node report.
pub fn classify(
    result: Result<Result<StepOutcome, crate::executor::ExecutorError>, String>,
    aborted: Option<AbortReason>,
    step_timeout: Option<Duration>,
) -> NodeStepResult {
    let exit_code = match &result {
        Ok(Ok(o)) => o.exit_code,
        _ => None,
    };
    match (aborted, result) {
        (Some(AbortReason::TimedOut), _) => NodeStepResult {
            state: State::Timedout,
            exit_code,
            message: Some(match step_timeout {
                Some(t) => format!("timed out after {} ms", t.as_millis()),
                None => "the operation timed out".into(),
            }),
        },
        (Some(AbortReason::Cancelled), _) => NodeStepResult {
            state: State::Aborted,
            exit_code,
            message: Some("cancelled".into()),
        },
        (Some(AbortReason::Shutdown), _) => NodeStepResult {
            state: State::Aborted,
            exit_code,
            message: Some("aborted: the runner is shutting down".into()),
        },
        (None, Ok(Ok(o))) if o.succeeded() => NodeStepResult {
            state: State::Succeeded,
            exit_code,
            message: o.message,
        },
        (None, Ok(Ok(o))) => NodeStepResult {
            state: State::Failed,
            exit_code,
            message: Some(
                o.message
                    .unwrap_or_else(|| match (&o.exit_code, &o.signal) {
                        (_, Some(sig)) => format!("killed by signal {sig}"),
                        (Some(c), None) => format!("exited with status {c}"),
                        (None, None) => "ended without an exit status".into(),
                    }),
            ),
        },
        (None, Ok(Err(e))) => NodeStepResult {
            state: State::Failed,
            exit_code: None,
            message: Some(e.message),
        },
        (None, Err(panic)) => NodeStepResult {
            state: State::Failed,
            exit_code: None,
            message: Some(format!("the node step panicked: {panic}")),
        },
    }
}

/// From a node thread to its worker.
#[derive(Message)]
#[rtype(result = "()")]
enum NodeEvent {
    /// A node step started: arm its timeout.
    StepStarted {
        token: u64,
        signal: AbortSignal,
        timeout: Duration,
    },
    /// The node step ended: disarm it.
    StepEnded { token: u64 },
    /// All of a node's steps ended (or one failed).
    NodeDone { node: String, ok: bool },
}

/// The StepWorker actor: a thin shell over the dispatch state below.
pub struct StepWorker {
    parts: Arc<WorkerParts>,
    op: Arc<Operation>,
    /// Where the steps stood, for an operation carried on with after a
    /// restart of the runner.
    plan: Option<Arc<ProgressMap>>,
    abort: OperationAbort,
    masker: Arc<Masker>,
    pending: VecDeque<Node>,
    running: usize,
    failed_nodes: Vec<String>,
    timers: HashMap<u64, SpawnHandle>,
    next_token: Arc<std::sync::atomic::AtomicU64>,
    finished: bool,
}

impl StepWorker {
    pub(crate) fn new(parts: Arc<WorkerParts>, op: Arc<Operation>, abort: OperationAbort) -> Self {
        let masker = Arc::new(Masker::for_operation(&op));
        let pending = dispatch_order(&op.nodes, &op.dispatch).into();
        let plan = parts.plans.take(&op.id);
        StepWorker {
            parts,
            op,
            plan,
            abort,
            masker,
            pending,
            running: 0,
            failed_nodes: Vec::new(),
            timers: HashMap::new(),
            next_token: Default::default(),
            finished: false,
        }
    }

    fn may_dispatch(&self) -> bool {
        self.abort.reason().is_none()
            && (self.op.dispatch.keep_going || self.failed_nodes.is_empty())
    }

    /// Whether `node` had a step running when the previous process died:
    /// it is re-attached to even after an abort or a failure, so that the
    /// abort reaches it and its end is reported.
    fn was_running(&self, node: &Node) -> bool {
        self.plan.as_ref().is_some_and(|p| {
            p.values().any(|s| {
                s.node == node.name && s.state.as_ref().is_some_and(|s| s.state == State::Running)
            })
        })
    }

    /// The next node to run: in order while dispatch goes on, else one left
    /// running by the previous process.
    fn next_node(&mut self) -> Option<Node> {
        if self.may_dispatch() {
            return self.pending.pop_front();
        }
        let i = self.pending.iter().position(|n| self.was_running(n))?;
        self.pending.remove(i)
    }

    fn dispatch(&mut self, ctx: &mut Context<Self>) {
        let threads = self.op.dispatch.thread_count.max(1) as usize;
        while self.running < threads {
            let Some(node) = self.next_node() else {
                break;
            };
            self.running += 1;
            let job = NodeJob {
                parts: self.parts.clone(),
                op: self.op.clone(),
                node,
                plan: self.plan.clone(),
                abort: self.abort.clone(),
                masker: self.masker.clone(),
                worker: ctx.address().recipient(),
                tokens: self.next_token.clone(),
            };
            // A thread name may not hold a NUL byte (spawn would panic), and
            // the name is the control plane's text.
            let name = format!("node-{}", printable(&job.node.name));
            let spawned = std::thread::Builder::new()
                .name(name)
                .spawn(move || job.run());
            if let Err(e) = spawned {
                error!(self.parts.log, "could not start a node step thread"; "error" => %e);
                self.running -= 1;
                self.failed_nodes.push(format!("(thread: {e})"));
            }
        }
        let left_running = self.pending.iter().any(|n| self.was_running(n));
        if self.running == 0 && (self.pending.is_empty() || !(self.may_dispatch() || left_running))
        {
            self.finish(ctx);
        }
    }

    fn finish(&mut self, ctx: &mut Context<Self>) {
        if self.finished {
            return;
        }
        self.finished = true;
        let (state, message) = match self.abort.reason() {
            Some(AbortReason::Cancelled) => (State::Aborted, Some("cancelled".to_owned())),
            Some(AbortReason::Shutdown) => (
                State::Aborted,
                Some("aborted: the runner is shutting down".to_owned()),
            ),
            Some(AbortReason::TimedOut) => (
                State::Timedout,
                Some(format!(
                    "timed out after {} ms",
                    self.op.timeout_ms.unwrap_or_default()
                )),
            ),
            None if self.failed_nodes.is_empty() => (State::Succeeded, None),
            None => (
                State::Failed,
                Some(format!(
                    "{} node(s) failed: {}",
                    self.failed_nodes.len(),
                    self.failed_nodes.join(", ")
                )),
            ),
        };
        info!(self.parts.log, "operation ended"; "op" => &self.op.id, "state" => state.as_str());
        self.parts.outcomes.finish(&self.op.id, state, message);
        ctx.stop();
    }
}

impl Actor for StepWorker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.plan.is_none() {
            self.parts.intake.push(
                &self.op.id,
                ReportBody::Op(OpReport {
                    state: State::Running,
                    message: None,
                }),
            );
        } else {
            info!(self.parts.log, "carrying on with the operation after a restart"; "op" => &self.op.id);
        }
        fail_point!(self.parts.fail_points, "step_worker::started");
        if let Some(ms) = self.op.timeout_ms {
            // Carried on with: counted from the operation's first node step
            // (within milliseconds of its start), not from the restart.
            let started = self.plan.as_ref().and_then(|p| {
                p.values()
                    .filter_map(|s| s.started.as_deref().and_then(parse_rfc3339))
                    .min()
            });
            let left = time_left(Duration::from_millis(ms), started, self.parts.intake.wall());
            let abort = self.abort.clone();
            ctx.run_later(left, move |_, _| abort.abort(AbortReason::TimedOut));
        }
        self.dispatch(ctx);
    }
}

impl Handler<NodeEvent> for StepWorker {
    type Result = ();

    fn handle(&mut self, ev: NodeEvent, ctx: &mut Context<Self>) {
        match ev {
            NodeEvent::StepStarted {
                token,
                signal,
                timeout,
            } => {
                let handle =
                    ctx.run_later(timeout, move |_, _| signal.abort(AbortReason::TimedOut));
                self.timers.insert(token, handle);
            }
            NodeEvent::StepEnded { token } => {
                if let Some(h) = self.timers.remove(&token) {
                    ctx.cancel_future(h);
                }
            }
            NodeEvent::NodeDone { node, ok } => {
                self.running -= 1;
                if !ok {
                    self.failed_nodes.push(printable(&node));
                }
                self.dispatch(ctx);
            }
        }
    }
}

/// Asked to stop (shutdown): abort the node steps and end once they have.
impl Handler<StopChild> for StepWorker {
    type Result = ();

    fn handle(&mut self, _: StopChild, ctx: &mut Context<Self>) {
        self.abort.abort(AbortReason::Shutdown);
        self.dispatch(ctx);
    }
}

/// One node's steps, run on a thread of their own.
struct NodeJob {
    parts: Arc<WorkerParts>,
    op: Arc<Operation>,
    node: Node,
    plan: Option<Arc<ProgressMap>>,
    abort: OperationAbort,
    masker: Arc<Masker>,
    worker: Recipient<NodeEvent>,
    tokens: Arc<std::sync::atomic::AtomicU64>,
}

impl NodeJob {
    fn run(self) {
        let ok = match catch_unwind(AssertUnwindSafe(|| self.steps())) {
            Ok(ok) => ok,
            Err(p) => {
                let msg = panic_message(&*p);
                error!(self.parts.log, "node step thread panicked"; "op" => &self.op.id,
                    "node" => &self.node.name, "panic" => &msg);
                self.report(
                    1,
                    NodeStepResult {
                        state: State::Failed,
                        exit_code: None,
                        message: Some(format!("the runner failed on this node: {msg}")),
                    },
                );
                false
            }
        };
        self.worker.do_send(NodeEvent::NodeDone {
            node: self.node.name.clone(),
            ok,
        });
    }

    fn report(&self, step: u32, r: NodeStepResult) {
        // An executor's error text may quote the command, secrets included.
        let message = r.message.map(|m| self.masker.mask(m));
        self.parts.intake.push(
            &self.op.id,
            ReportBody::Node(NodeReport {
                node: self.node.name.clone(),
                step,
                state: r.state,
                exit_code: r.exit_code,
                message,
            }),
        );
    }

    fn refuse(&self, message: String) -> bool {
        warn!(self.parts.log, "node refused"; "op" => &self.op.id,
            "node" => printable(&self.node.name), "reason" => &message);
        self.report(
            1,
            NodeStepResult {
                state: State::Failed,
                exit_code: None,
                message: Some(message),
            },
        );
        false
    }

    /// Runs every step on the node; `false` when one did not succeed.
    ///
    /// The node is checked and put in canonical form first: the allowedNodes
    /// filter, the executor and the data context all see that one form, so
    /// the filter passes exactly the address that is dialled.
    fn steps(&self) -> bool {
        // Carried on with after a restart: a node that failed before has
        // its report spooled already; one that succeeded everywhere is done.
        if let Some(plan) = &self.plan {
            let mut seen = plan.values().filter(|p| p.node == self.node.name);
            let failed = |p: &&crate::spool::StepProgress| {
                p.state
                    .as_ref()
                    .is_some_and(|s| s.state.is_terminal() && s.state != State::Succeeded)
            };
            if seen.any(|p| failed(&p)) {
                return false;
            }
        }
        let node = match self.node.canonical() {
            Ok(node) => node,
            Err(e) => return self.refuse(e.to_string()),
        };
        let node = &node;
        if let Some(allowed) = &self.parts.config.allowed_nodes {
            if !allowed(node) {
                return self.refuse(format!(
                    "node {} ({}, executor {}) is outside this runner's allowedNodes filter; the runner refuses to run steps on it (widen runner.allowedNodes in the runner's configuration if it should)",
                    node.name, node.hostname, node.executor.as_str()
                ));
            }
        }
        let Some(executor) = self.parts.executors.get(&node.executor).cloned() else {
            return self.refuse(format!(
                "node {} uses the {} executor, which this runner does not have; configure one or change the node's executor",
                node.name,
                node.executor.as_str()
            ));
        };
        if let Err(e) = executor.admit(node) {
            return self.refuse(e.message);
        }
        let data = DataContext::new(&self.op, node);
        let env = data.env();
        // A step that cannot be expanded safely fails the node before any
        // of its steps has run.
        let mut steps = Vec::with_capacity(self.op.steps.len());
        for (i, step) in self.op.steps.iter().enumerate() {
            match data.expand_step(step) {
                Ok(s) => steps.push(s),
                Err(e) => {
                    let message = e.to_string();
                    warn!(self.parts.log, "node step refused"; "op" => &self.op.id,
                        "node" => &node.name, "step" => i + 1, "reason" => &message);
                    self.report(
                        i as u32 + 1,
                        NodeStepResult {
                            state: State::Failed,
                            exit_code: None,
                            message: Some(message),
                        },
                    );
                    return false;
                }
            }
        }
        let step_timeout = self.op.step_timeout_ms.map(Duration::from_millis);
        for (i, step) in steps.into_iter().enumerate() {
            let index = i as u32 + 1;
            let seen = self
                .plan
                .as_ref()
                .and_then(|p| p.get(index, &self.node.name));
            let before = seen.and_then(|p| p.state.as_ref()).map(|s| s.state);
            if before == Some(State::Succeeded) {
                continue;
            }
            // Running when the previous process died: the executor re-attaches
            // to it, and the lines already spooled are not reported again.
            // Also after an abort, which must reach it.
            let reattach = before == Some(State::Running);
            if self.abort.reason().is_some() && !reattach {
                return false;
            }
            fail_point!(self.parts.fail_points, "step_worker::node");
            if !reattach {
                self.report(
                    index,
                    NodeStepResult {
                        state: State::Running,
                        exit_code: None,
                        message: None,
                    },
                );
            }
            let signal = self.abort.child();
            let token = self
                .tokens
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if let Some(timeout) = step_timeout {
                // Re-attached to: counted from the step's start.
                let started = seen
                    .filter(|_| reattach)
                    .and_then(|p| p.started.as_deref())
                    .and_then(parse_rfc3339);
                self.worker.do_send(NodeEvent::StepStarted {
                    token,
                    signal: signal.clone(),
                    timeout: time_left(timeout, started, self.parts.intake.wall()),
                });
            }
            let mut sink = StepOutput::new(
                self.parts.intake.clone(),
                &self.masker,
                self.op.id.clone(),
                node.name.clone(),
                index,
            );
            sink.ending = Some((signal.clone(), step_timeout));
            let mut resume_at = [0, 0];
            if let (true, Some(p)) = (reattach, seen) {
                // Read on from the last mark of each stream whose lines the
                // spool holds (a mark may be newer than the lines after a
                // power loss: then from the start).
                for (i, (mark, spooled)) in [
                    (p.stdout_mark, p.stdout_lines),
                    (p.stderr_mark, p.stderr_lines),
                ]
                .into_iter()
                .enumerate()
                {
                    let mark = mark.filter(|m| m.lines <= spooled);
                    let from = mark.map_or(0, |m| m.lines);
                    resume_at[i] = mark.map_or(0, |m| m.offset);
                    sink.emitted[i] = from;
                    sink.marked[i] = resume_at[i];
                    sink.skip[i] = spooled - from;
                }
                info!(self.parts.log, "re-attaching to a step left running by the previous process";
                    "op" => &self.op.id, "node" => &self.node.name, "step" => index,
                    "stdout_lines_spooled" => p.stdout_lines, "stderr_lines_spooled" => p.stderr_lines,
                    "stdout_from_byte" => resume_at[0], "stderr_from_byte" => resume_at[1]);
            }
            let req = StepRequest {
                op_id: self.op.id.clone(),
                execution: self.op.execution.clone(),
                node: node.clone(),
                step_index: index,
                step,
                env: env.clone(),
                kill_grace: self.parts.config.kill_grace,
                reattach,
                resume_at,
            };
            let running = NodeStepGuard::new(&self.parts.stats);
            let result = catch_unwind(AssertUnwindSafe(|| {
                executor.execute(&req, &mut sink, &signal)
            }))
            .map_err(|p| self.masker.mask(panic_message(&*p)));
            drop(running);
            sink.finish();
            if step_timeout.is_some() {
                self.worker.do_send(NodeEvent::StepEnded { token });
            }
            // Recorded already when the executor said the step ended
            // before removing its files (`OutputSink::ended`).
            let state = match sink.settled {
                Some(state) => state,
                None => {
                    let r = classify(result, signal.reason(), step_timeout);
                    let state = r.state;
                    self.report(index, r);
                    state
                }
            };
            if state != State::Succeeded {
                return false;
            }
        }
        true
    }
}

/// Where one node step's output goes: masked per stream (holding back a
/// line that may continue in the next, see `MaskedLines`), then to the
/// intake.
struct StepOutput {
    intake: Arc<ReportIntake>,
    op_id: String,
    node: String,
    step: u32,
    stdout: MaskedLines,
    stderr: MaskedLines,
    system: MaskedLines,
    /// Lines of stdout and stderr not to report again: a re-attached step's
    /// output is read from its last mark (or its start), and these were
    /// spooled before.
    skip: [u64; 2],
    /// Lines of stdout and stderr out of the masking so far (skipped ones
    /// included), counted from the step's start.
    emitted: [u64; 2],
    /// The offset of the last mark recorded per stream.
    marked: [u64; 2],
    /// The step's abort signal and timeout, to classify its end when the
    /// executor says it ended (`OutputSink::ended`).
    ending: Option<(AbortSignal, Option<Duration>)>,
    /// The node state reported through `OutputSink::ended`.
    settled: Option<State>,
    masker: Arc<Masker>,
}

/// Bytes of a stream between two marks recorded in the spool.
const MARK_EVERY: u64 = 64 * 1024;

impl StepOutput {
    fn new(
        intake: Arc<ReportIntake>,
        masker: &Arc<Masker>,
        op_id: String,
        node: String,
        step: u32,
    ) -> Self {
        let lines = || MaskedLines::new(masker.clone(), crate::output::MAX_LINE_BYTES);
        StepOutput {
            intake,
            op_id,
            node,
            step,
            stdout: lines(),
            stderr: lines(),
            system: lines(),
            skip: [0, 0],
            emitted: [0, 0],
            marked: [0, 0],
            ending: None,
            settled: None,
            masker: masker.clone(),
        }
    }

    /// Reports the lines still held back (the step ended).
    fn finish(&mut self) {
        for stream in [Stream::Stdout, Stream::Stderr, Stream::System] {
            let (lines, mut push) = self.split(stream);
            lines.finish(&mut push);
        }
    }

    /// The stream's masking and a function reporting a line of it.
    fn split(&mut self, stream: Stream) -> (&mut MaskedLines, impl FnMut(String) + '_) {
        let StepOutput {
            intake,
            op_id,
            node,
            step,
            stdout,
            stderr,
            system,
            skip,
            emitted,
            ..
        } = self;
        let (lines, mut counts) = match stream {
            Stream::Stdout => (stdout, Some((&mut skip[0], &mut emitted[0]))),
            Stream::Stderr => (stderr, Some((&mut skip[1], &mut emitted[1]))),
            Stream::System => (system, None),
        };
        let push = move |text: String| {
            if let Some((left, emitted)) = counts.as_mut() {
                **emitted += 1;
                // The same bytes read again give the same lines after
                // masking: the first ones are those already spooled.
                if **left > 0 {
                    **left -= 1;
                    return;
                }
            }
            intake.push(
                op_id,
                ReportBody::Log(LogReport {
                    node: node.clone(),
                    step: *step,
                    stream,
                    text,
                }),
            );
        };
        (lines, push)
    }
}

impl OutputSink for StepOutput {
    fn line(&mut self, stream: Stream, text: String) {
        let (lines, mut push) = self.split(stream);
        lines.line(text, &mut push);
    }

    fn ended(&mut self, result: Result<&StepOutcome, &ExecutorError>) {
        let Some((signal, step_timeout)) = self.ending.clone() else {
            return;
        };
        if self.settled.is_some() {
            return;
        }
        // The lines held back first: the node report comes after them.
        self.finish();
        let result = result.cloned().map_err(Clone::clone);
        let r = classify(Ok(result), signal.reason(), step_timeout);
        // An executor's error text may quote the command, secrets included.
        let message = r.message.map(|m| self.masker.mask(m));
        self.intake.push(
            &self.op_id,
            ReportBody::Node(NodeReport {
                node: self.node.clone(),
                step: self.step,
                state: r.state,
                exit_code: r.exit_code,
                message,
            }),
        );
        self.settled = Some(r.state);
    }

    fn mark(&mut self, stream: Stream, offset: u64) {
        let (i, lines) = match stream {
            Stream::Stdout => (0, &self.stdout),
            Stream::Stderr => (1, &self.stderr),
            Stream::System => return,
        };
        // Only where the masking holds nothing back and owes nothing: the
        // lines from there are masked the same when read again. Not before
        // the lines already spooled are passed again.
        if !lines.is_idle() || self.skip[i] > 0 || offset < self.marked[i] + MARK_EVERY {
            return;
        }
        self.marked[i] = offset;
        self.intake.mark(
            &self.op_id,
            self.step,
            &self.node,
            stream,
            crate::spool::Mark {
                offset,
                lines: self.emitted[i],
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::ExecutorErrorKind;

    fn node(name: &str, rank: Option<&str>) -> Node {
        let mut n = Node::local(name);
        if let Some(r) = rank {
            n.attributes.insert("rank".into(), r.into());
        }
        n
    }

    fn names(nodes: &[Node]) -> Vec<&str> {
        nodes.iter().map(|n| n.name.as_str()).collect()
    }

    #[test]
    fn nodes_are_dispatched_in_rank_order() {
        let nodes = vec![
            node("c", Some("10")),
            node("a", Some("9")),
            node("b", None),
            node("d", Some("10")),
        ];
        let mut d = Dispatch {
            rank_attribute: "rank".into(),
            ..Dispatch::default()
        };
        assert_eq!(names(&dispatch_order(&nodes, &d)), ["a", "c", "d", "b"]);
        d.rank_order = RankOrder::Descending;
        assert_eq!(names(&dispatch_order(&nodes, &d)), ["b", "d", "c", "a"]);
        let by_name = dispatch_order(&nodes, &Dispatch::default());
        assert_eq!(names(&by_name), ["a", "b", "c", "d"]);
    }

    #[test]
    fn a_timeout_carried_on_with_counts_from_its_start() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let min = Duration::from_secs(60);
        assert_eq!(time_left(min, None, now), min);
        let ago = |s| Some(now - Duration::from_secs(s));
        assert_eq!(time_left(min, ago(20), now), Duration::from_secs(40));
        assert_eq!(time_left(min, ago(90), now), Duration::ZERO);
        // A start in the future (a clock set back): all of it.
        assert_eq!(time_left(min, Some(now + min), now), min);
    }

    #[test]
    fn node_step_results_follow_the_abort_reason_first() {
        let ok = Ok(Ok(StepOutcome::exited(0)));
        assert_eq!(classify(ok.clone(), None, None).state, State::Succeeded);
        let r = classify(Ok(Ok(StepOutcome::exited(3))), None, None);
        assert_eq!((r.state, r.exit_code), (State::Failed, Some(3)));
        assert_eq!(
            classify(
                ok.clone(),
                Some(AbortReason::TimedOut),
                Some(Duration::from_millis(50))
            ),
            NodeStepResult {
                state: State::Timedout,
                exit_code: Some(0),
                message: Some("timed out after 50 ms".into())
            }
        );
        assert_eq!(
            classify(ok, Some(AbortReason::Cancelled), None).state,
            State::Aborted
        );
        let e = ExecutorError::new(ExecutorErrorKind::ConnectionRefused, "web1: refused");
        assert_eq!(
            classify(Ok(Err(e)), None, None).message.as_deref(),
            Some("web1: refused")
        );
        assert_eq!(
            classify(Err("oops".into()), None, None).message.as_deref(),
            Some("the node step panicked: oops")
        );
    }
}
