//! Fakes for tests of the runtime and of crates that embed it: an in-memory
//! control plane that follows protocol v1's server rules and records every
//! call, and an executor whose behaviour each node chooses (print, fail,
//! hang, panic). Compiled for this crate's tests and with the `testing`
//! feature.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify};

use crate::control_plane::{CallResult, ClaimOutcome, ControlPlane, ControlPlaneError};
use crate::executor::{
    AbortReason, AbortSignal, ExecutorError, NodeExecutor, OutputSink, StepOutcome, StepRequest,
};
use crate::model::{
    CheckinRequest, CheckinResponse, CommandStep, Dispatch, ExecutionInfo, Node, Operation, Report,
    ReportsRequest, ReportsResponse, ResumeRequest, ResumeResponse, ResumeState, ShutdownRequest,
    StartupRequest, StartupResponse, Step, Stream,
};

/// What the fake control plane has seen and will answer.
#[derive(Debug)]
pub struct FakeState {
    pub startup: StartupResponse,
    pub startups: u32,
    /// Start time and body of every check-in.
    pub checkins: Vec<(Instant, CheckinRequest)>,
    /// Offers for the next check-in answer.
    pub offers: VecDeque<Operation>,
    /// Cancels for the next check-in answer.
    pub cancels: Vec<String>,
    /// Every claim, in order.
    pub claims: Vec<String>,
    /// Operations the fake knows (for claim answers).
    pub known: BTreeMap<String, Operation>,
    pub claimed: HashSet<String>,
    /// Reports stored per operation, by the server's rules: contiguous,
    /// duplicates dropped, gaps refused.
    pub stored: BTreeMap<String, Vec<Report>>,
    pub report_calls: u32,
    /// The largest `POST /reports` batch seen.
    pub max_batch: usize,
    /// Cancels for the `POST /reports` answer to the first request that
    /// carries reports of that operation.
    pub report_cancels: Vec<String>,
    /// Reports that arrived again (seq at or below what was stored).
    pub duplicates: u64,
    /// Reports refused because of a gap.
    pub gaps: u64,
    /// The next `n` `POST /reports` fail with a 503.
    pub fail_reports: u32,
    /// Operations the control plane does not know: a `POST /reports` that
    /// carries any of their reports is refused whole (404).
    pub unknown_ops: HashSet<String>,
    /// The next `n` claims take effect but their answer is lost (a
    /// transport error): the offer is not made again.
    pub lose_claim_answers: u32,
    /// The next `n` check-ins never answer (the runner's deadline must end
    /// them).
    pub hang_checkins: u32,
    /// The next `n` check-ins fail with this error.
    pub fail_checkins: Option<(u32, ControlPlaneError)>,
    pub shutdowns: Vec<ShutdownRequest>,
    /// Every `POST /resume`, in order.
    pub resumes: Vec<ResumeRequest>,
    /// Answer `POST /resume` as an older control plane does (404).
    pub resume_unsupported: bool,
}

impl FakeState {
    /// Whether the operation's terminal report is stored.
    fn complete_locked(&self, op_id: &str) -> bool {
        self.stored
            .get(op_id)
            .and_then(|r| r.last())
            .is_some_and(Report::is_terminal)
    }
}

/// An in-memory control plane.
pub struct FakeControlPlane {
    state: Arc<Mutex<FakeState>>,
    work: Arc<Notify>,
    changed: watch::Sender<u64>,
}

impl FakeControlPlane {
    /// A control plane whose cadence is `poll_ms` / `long_poll_ms`, with
    /// reports every 20 ms.
    pub fn new(poll_ms: u64, long_poll_ms: u64) -> Arc<Self> {
        Arc::new(FakeControlPlane {
            state: Arc::new(Mutex::new(FakeState {
                startup: StartupResponse {
                    replica_id: "replica-1".into(),
                    poll_interval_ms: poll_ms,
                    long_poll_ms,
                    report_interval_ms: 20,
                    report_batch_max: 1000,
                    lease_ms: 60_000,
                },
                startups: 0,
                checkins: Vec::new(),
                offers: VecDeque::new(),
                cancels: Vec::new(),
                claims: Vec::new(),
                lose_claim_answers: 0,
                known: BTreeMap::new(),
                claimed: HashSet::new(),
                stored: BTreeMap::new(),
                report_calls: 0,
                max_batch: 0,
                report_cancels: Vec::new(),
                duplicates: 0,
                gaps: 0,
                fail_reports: 0,
                fail_checkins: None,
                unknown_ops: HashSet::new(),
                hang_checkins: 0,
                shutdowns: Vec::new(),
                resumes: Vec::new(),
                resume_unsupported: false,
            })),
            work: Arc::new(Notify::new()),
            changed: watch::channel(0).0,
        })
    }

    pub fn state(&self) -> MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    /// Offers `op` in the next check-in answer.
    pub fn offer(&self, op: Operation) {
        {
            let mut s = self.state();
            s.known.insert(op.id.clone(), op.clone());
            s.offers.push_back(op);
        }
        self.work.notify_one();
    }

    /// Cancels `op_id` in the next check-in answer.
    pub fn cancel(&self, op_id: &str) {
        self.state().cancels.push(op_id.to_owned());
        self.work.notify_one();
    }

    /// The reports stored for `op_id`.
    pub fn stored(&self, op_id: &str) -> Vec<Report> {
        self.state().stored.get(op_id).cloned().unwrap_or_default()
    }

    /// Whether the terminal report of `op_id` is stored.
    pub fn complete(&self, op_id: &str) -> bool {
        self.state()
            .stored
            .get(op_id)
            .and_then(|r| r.last())
            .is_some_and(Report::is_terminal)
    }

    /// Waits (at most `timeout`) until `cond` holds on the state; `false`
    /// when it did not.
    pub async fn wait_until(&self, timeout: Duration, cond: impl Fn(&FakeState) -> bool) -> bool {
        let mut rx = self.changed.subscribe();
        tokio::time::timeout(timeout, async {
            loop {
                if cond(&self.state()) {
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        })
        .await
        .is_ok()
    }

    /// The longest gap between the starts of consecutive check-ins.
    pub fn max_checkin_gap(&self) -> Duration {
        let s = self.state();
        s.checkins
            .windows(2)
            .map(|w| w[1].0.saturating_duration_since(w[0].0))
            .max()
            .unwrap_or_default()
    }
}

impl ControlPlane for FakeControlPlane {
    fn startup(&self, _req: StartupRequest) -> CallResult<StartupResponse> {
        let resp = {
            let mut s = self.state();
            s.startups += 1;
            let mut resp = s.startup.clone();
            resp.replica_id = format!("replica-{}", s.startups);
            resp
        };
        self.bump();
        Box::pin(async move { Ok(resp) })
    }

    fn checkin(&self, req: CheckinRequest, wait: Duration) -> CallResult<CheckinResponse> {
        let (failure, hang) = {
            let mut s = self.state();
            s.checkins.push((Instant::now(), req));
            let hang = s.hang_checkins > 0;
            s.hang_checkins = s.hang_checkins.saturating_sub(1);
            let failure = match s.fail_checkins.as_mut() {
                Some((n, e)) if *n > 0 => {
                    *n -= 1;
                    Some(e.clone())
                }
                _ => None,
            };
            (failure, hang)
        };
        self.bump();
        let (state, work) = (self.state.clone(), self.work.clone());
        Box::pin(async move {
            if let Some(e) = failure {
                return Err(e);
            }
            if hang {
                std::future::pending::<()>().await;
            }
            let has_work = |s: &FakeState| !s.offers.is_empty() || !s.cancels.is_empty();
            let idle = !has_work(&state.lock().unwrap_or_else(|e| e.into_inner()));
            if idle {
                let _ = tokio::time::timeout(wait, work.notified()).await;
            }
            let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
            Ok(CheckinResponse {
                operations: s.offers.drain(..).collect(),
                cancel: std::mem::take(&mut s.cancels),
                poll_interval_ms: None,
                pings: Vec::new(),
            })
        })
    }

    fn claim(&self, op_id: &str, _replica_id: &str) -> CallResult<ClaimOutcome> {
        let (outcome, lost) = {
            let mut s = self.state();
            s.claims.push(op_id.to_owned());
            let outcome = match s.known.get(op_id).cloned() {
                Some(op) => {
                    s.claimed.insert(op_id.to_owned());
                    ClaimOutcome::Claimed(Box::new(op))
                }
                None => ClaimOutcome::Taken,
            };
            let lost = s.lose_claim_answers > 0;
            s.lose_claim_answers = s.lose_claim_answers.saturating_sub(1);
            (outcome, lost)
        };
        self.bump();
        Box::pin(async move {
            if lost {
                return Err(ControlPlaneError::Transport(
                    "connection reset before the claim's answer (fake)".into(),
                ));
            }
            Ok(outcome)
        })
    }

    /// Owned: a known operation claimed earlier, once; released: any other.
    fn resume(&self, req: ResumeRequest) -> CallResult<ResumeResponse> {
        let answer = {
            let mut s = self.state();
            s.resumes.push(req.clone());
            if s.resume_unsupported {
                Err(ControlPlaneError::Rejected {
                    status: 404,
                    code: "not_found".into(),
                    message: "no route POST /api/runner/v1/resume (fake)".into(),
                })
            } else {
                let operations = req
                    .operations
                    .iter()
                    .map(|op| {
                        let state = if !s.known.contains_key(op) {
                            ResumeState::Unknown
                        } else if s.claimed.contains(op) && !s.complete_locked(op) {
                            ResumeState::Owned
                        } else {
                            ResumeState::Released
                        };
                        (op.clone(), state)
                    })
                    .collect();
                Ok(ResumeResponse {
                    operations,
                    ..ResumeResponse::default()
                })
            }
        };
        self.bump();
        Box::pin(async move { answer })
    }

    fn reports(&self, req: ReportsRequest) -> CallResult<ReportsResponse> {
        let answer = {
            let mut s = self.state();
            s.report_calls += 1;
            s.max_batch = s.max_batch.max(req.reports.len());
            let unknown = req
                .reports
                .iter()
                .find(|r| s.unknown_ops.contains(&r.op_id))
                .map(|r| r.op_id.clone());
            if s.fail_reports > 0 {
                s.fail_reports -= 1;
                Err(ControlPlaneError::Throttled {
                    status: 503,
                    retry_after: None,
                })
            } else if let Some(op_id) = unknown {
                Err(ControlPlaneError::Rejected {
                    status: 404,
                    code: "unknown_operation".into(),
                    message: format!("no operation {op_id}"),
                })
            } else {
                let mut acks = BTreeMap::new();
                let (cancel, keep): (Vec<String>, Vec<String>) =
                    std::mem::take(&mut s.report_cancels)
                        .into_iter()
                        .partition(|id| req.reports.iter().any(|r| &r.op_id == id));
                s.report_cancels = keep;
                for r in req.reports {
                    let stored = s.stored.entry(r.op_id.clone()).or_default();
                    let have = stored.len() as u64;
                    let op_id = r.op_id.clone();
                    if r.seq <= have {
                        s.duplicates += 1;
                    } else if r.seq == have + 1 {
                        stored.push(r);
                    } else {
                        s.gaps += 1;
                    }
                    let len = s.stored.get(&op_id).map_or(0, |v| v.len()) as u64;
                    acks.insert(op_id, len);
                }
                Ok(ReportsResponse { acks, cancel })
            }
        };
        self.bump();
        Box::pin(async move { answer })
    }

    fn shutdown(&self, req: ShutdownRequest) -> CallResult<()> {
        self.state().shutdowns.push(req);
        self.bump();
        Box::pin(async { Ok(()) })
    }
}

/// An operation with one command step on the given nodes.
pub fn operation(id: &str, nodes: Vec<Node>) -> Operation {
    Operation {
        id: id.into(),
        execution: ExecutionInfo {
            id: 1,
            project: "ops".into(),
            job: "test/job".into(),
            user: "tester".into(),
        },
        steps: vec![Step::Command(CommandStep {
            command: "echo hi".into(),
        })],
        nodes,
        dispatch: Dispatch::default(),
        options: Default::default(),
        secure_options: Vec::new(),
        timeout_ms: None,
        step_timeout_ms: None,
    }
}

/// A `local` node whose attribute `fake` tells [`FakeExecutor`] what to do:
/// `ok`, `print:N`, `fail:CODE`, `sleep:MS`, `hang`, `panic`, `echo`.
pub fn fake_node(name: &str, behaviour: &str) -> Node {
    let mut n = Node::local(name);
    n.attributes.insert("fake".into(), behaviour.into());
    n
}

/// One abort an executor observed.
#[derive(Debug, Clone)]
pub struct ObservedAbort {
    pub op_id: String,
    pub node: String,
    pub reason: AbortReason,
    pub at: Instant,
}

/// An executor that does what each node's `fake` attribute says, and
/// records what it was asked.
#[derive(Default)]
pub struct FakeExecutor {
    state: Mutex<ExecState>,
    changed: Notify,
}

#[derive(Debug, Default)]
pub struct ExecState {
    /// (op, node, step index) of every call, in order.
    pub started: Vec<(String, String, u32)>,
    pub aborts: Vec<ObservedAbort>,
    pub running: usize,
    pub max_running: usize,
}

impl FakeExecutor {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn state(&self) -> MutexGuard<'_, ExecState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits (at most `timeout`) until `cond` holds; `false` when it did not.
    pub async fn wait_until(&self, timeout: Duration, cond: impl Fn(&ExecState) -> bool) -> bool {
        tokio::time::timeout(timeout, async {
            loop {
                let notified = self.changed.notified();
                if cond(&self.state()) {
                    return;
                }
                // Executors run on plain threads: check again at least every
                // 20 ms in case a wake-up raced the check.
                let _ = tokio::time::timeout(Duration::from_millis(20), notified).await;
            }
        })
        .await
        .is_ok()
    }

    fn enter(&self, req: &StepRequest) {
        let mut s = self.state();
        s.started
            .push((req.op_id.clone(), req.node.name.clone(), req.step_index));
        s.running += 1;
        s.max_running = s.max_running.max(s.running);
        drop(s);
        self.changed.notify_waiters();
    }

    fn leave(&self, req: &StepRequest, abort: &AbortSignal) {
        let mut s = self.state();
        s.running -= 1;
        if let Some(reason) = abort.reason() {
            s.aborts.push(ObservedAbort {
                op_id: req.op_id.clone(),
                node: req.node.name.clone(),
                reason,
                at: Instant::now(),
            });
        }
        drop(s);
        self.changed.notify_waiters();
    }
}

struct Leave<'a>(&'a FakeExecutor, &'a StepRequest, &'a AbortSignal);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.leave(self.1, self.2);
    }
}

impl NodeExecutor for FakeExecutor {
    fn execute(
        &self,
        req: &StepRequest,
        output: &mut dyn OutputSink,
        abort: &AbortSignal,
    ) -> Result<StepOutcome, ExecutorError> {
        self.enter(req);
        let _leave = Leave(self, req, abort);
        let behaviour = req.node.attribute("fake").unwrap_or_else(|| "ok".into());
        let (verb, arg) = behaviour
            .split_once(':')
            .unwrap_or((behaviour.as_str(), ""));
        let n: u64 = arg.parse().unwrap_or(0);
        let killed = |reason: AbortReason| StepOutcome {
            exit_code: None,
            signal: Some("TERM".into()),
            message: Some(format!("stopped: {reason:?}")),
        };
        match verb {
            "print" => {
                for i in 1..=n {
                    output.line(Stream::Stdout, format!("line {i}"));
                }
                Ok(StepOutcome::exited(0))
            }
            // A line every 5 ms: output that flows rather than bursts.
            "trickle" => {
                for i in 1..=n {
                    if let Some(r) = abort.wait_timeout(Duration::from_millis(5)) {
                        return Ok(killed(r));
                    }
                    output.line(Stream::Stdout, format!("line {i}"));
                }
                Ok(StepOutcome::exited(0))
            }
            "fail" => Ok(StepOutcome::exited(n as i32)),
            "sleep" => match abort.wait_timeout(Duration::from_millis(n)) {
                Some(r) => Ok(killed(r)),
                None => Ok(StepOutcome::exited(0)),
            },
            "hang" => match abort.wait_timeout(Duration::from_secs(60)) {
                Some(r) => Ok(killed(r)),
                None => Ok(StepOutcome::exited(0)),
            },
            "panic" => panic!("fake executor panicked on {}", req.node.name),
            // Says the step ended (as an executor that can re-attach does
            // before it removes the step's files), then panics.
            "end-then-panic" => {
                output.line(Stream::Stdout, "the last line".into());
                output.ended(Ok(&StepOutcome::exited(0)));
                panic!(
                    "fake executor panicked after its step ended on {}",
                    req.node.name
                )
            }
            // Prints the command, with the `"${RD_...}"` references secure
            // tokens become expanded from the step's environment, as the
            // shell would.
            "echo" => {
                if let Step::Command(c) = &req.step {
                    let mut text = c.command.clone();
                    for (name, value) in &req.env {
                        text = text.replace(&format!("\"${{{name}}}\""), value);
                    }
                    output.line(Stream::Stdout, text);
                }
                Ok(StepOutcome::exited(0))
            }
            _ => {
                output.line(
                    Stream::Stdout,
                    format!("hello from {} step {}", req.node.name, req.step_index),
                );
                Ok(StepOutcome::exited(0))
            }
        }
    }
}
