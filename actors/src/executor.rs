//! The `NodeExecutor` seam: run one node step on one node, streaming output,
//! abortable.
//!
//! Executors are blocking: the StepWorker calls `execute` on a thread of its
//! own, never on an actor's thread, so an executor may block on I/O as long
//! as it watches its `AbortSignal` at least every few hundred milliseconds.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::figures::ExecutorFigures;
use crate::model::{ExecutionInfo, Node, Step, Stream};

/// Everything an executor needs for one node step. Data-context expansion
/// has already been applied to `step`, and `node` is in canonical form
/// (`Node::canonical`): the node the allowedNodes filter passed.
#[derive(Debug, Clone)]
pub struct StepRequest {
    pub op_id: String,
    pub execution: ExecutionInfo,
    pub node: Node,
    /// 1-based index of the step in the operation.
    pub step_index: u32,
    /// The step, with `${...}` and `@...@` tokens already expanded.
    pub step: Step,
    /// `RD_*` variables to export to the step's process (names are already
    /// valid shell identifiers; values are raw and must be quoted by the executor).
    pub env: Vec<(String, String)>,
    /// How long to wait after TERM before KILL when aborting.
    pub kill_grace: Duration,
    /// The step was started by a previous process of the runner, which
    /// died while it ran: re-attach to it (read its output from the start,
    /// then follow it to its end) instead of starting it. An executor that
    /// cannot re-attach fails the step with an error saying why, and never
    /// runs it a second time.
    pub reattach: bool,
    /// With `reattach`: the byte offsets of stdout and stderr to read the
    /// step's output on from (marks of the previous process, see
    /// [`OutputSink::mark`]); 0 reads from the start.
    pub resume_at: [u64; 2],
}

/// Where an executor sends output, one line at a time (newline stripped).
pub trait OutputSink: Send {
    fn line(&mut self, stream: Stream, text: String);

    /// Every byte of `stream` before `offset` (of the step's output, as
    /// its executor keeps it) has been handed over as lines: a restarted
    /// runner may read on from there ([`StepRequest::resume_at`]). Called
    /// by executors that can re-attach; the default ignores it.
    fn mark(&mut self, stream: Stream, offset: u64) {
        let _ = (stream, offset);
    }

    /// The step ended, and `execute` is about to return `result`: the sink
    /// records the step's end durably now, before the executor removes what
    /// a restarted runner would re-attach to (the step's files), so that a
    /// runner dying in between finds the end recorded, not a step it cannot
    /// find. Called by executors that can re-attach, at most once; the
    /// default ignores it (the runtime records the result `execute` returns).
    fn ended(&mut self, result: Result<&StepOutcome, &ExecutorError>) {
        let _ = result;
    }
}

impl<F: FnMut(Stream, String) + Send> OutputSink for F {
    fn line(&mut self, stream: Stream, text: String) {
        self(stream, text)
    }
}

/// How a step ended when the executor got to run it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StepOutcome {
    /// Exit status of the step's process; `None` when none was received.
    pub exit_code: Option<i32>,
    /// Signal that ended the process (e.g. `KILL`), when there was one.
    pub signal: Option<String>,
    /// A note for the node report (e.g. "killed after 5 s grace").
    pub message: Option<String>,
}

impl StepOutcome {
    pub fn exited(code: i32) -> Self {
        StepOutcome {
            exit_code: Some(code),
            ..Default::default()
        }
    }

    pub fn succeeded(&self) -> bool {
        self.exit_code == Some(0) && self.signal.is_none()
    }
}

/// Runs node steps. Implementations: SSH (daemon), local processes (daemon),
/// and whatever an embedder plugs in.
pub trait NodeExecutor: Send + Sync + 'static {
    /// Whether this executor takes `node` (already in canonical form) at
    /// all. The runtime asks once per node, before its first step; a
    /// refusal fails the node with the error's message and runs nothing.
    /// The default takes every node.
    fn admit(&self, node: &Node) -> Result<(), ExecutorError> {
        let _ = node;
        Ok(())
    }

    /// Runs `req`, blocking the calling thread until it ends or is aborted.
    ///
    /// When `abort` fires, the executor stops the step (TERM, `kill_grace`,
    /// KILL for processes), leaves nothing of it running, and returns.
    fn execute(
        &self,
        req: &StepRequest,
        output: &mut dyn OutputSink,
        abort: &AbortSignal,
    ) -> Result<StepOutcome, ExecutorError>;

    /// What this executor measured of its own work so far (connect times,
    /// errors by kind), for `RuntimeHandle::stats`; `None` when it keeps
    /// no figures (the default).
    fn figures(&self) -> Option<ExecutorFigures> {
        None
    }
}

/// Why a step was asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortReason {
    /// The control plane cancelled the operation.
    Cancelled,
    /// The step or operation ran past its timeout.
    TimedOut,
    /// The runner is shutting down and the drain deadline passed.
    Shutdown,
}

/// A one-shot, cloneable abort flag that blocking code can wait on.
#[derive(Debug, Clone, Default)]
pub struct AbortSignal {
    inner: Arc<(Mutex<Option<AbortReason>>, Condvar)>,
}

impl AbortSignal {
    pub fn new() -> Self {
        Self::default()
    }

    /// Fires the signal; the first reason given wins.
    pub fn abort(&self, reason: AbortReason) {
        let (lock, cvar) = &*self.inner;
        let mut slot = lock.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(reason);
            cvar.notify_all();
        }
    }

    /// The reason, once fired.
    pub fn reason(&self) -> Option<AbortReason> {
        *self.inner.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_aborted(&self) -> bool {
        self.reason().is_some()
    }

    /// Waits up to `timeout` for the signal; returns the reason if it fired.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<AbortReason> {
        let (lock, cvar) = &*self.inner;
        let deadline = Instant::now() + timeout;
        let mut slot = lock.lock().unwrap_or_else(|e| e.into_inner());
        while slot.is_none() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            slot = cvar
                .wait_timeout(slot, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        *slot
    }
}

/// What kind of failure kept a step from running or finishing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutorErrorKind {
    /// The runner's configuration does not allow the node: outside
    /// `allowedNodes`, or an executor the runner does not grant.
    NotAllowed,
    /// The node's settings are unusable (no hostname, bad mode, missing key).
    Config,
    NameResolution,
    ConnectionRefused,
    ConnectTimeout,
    Authentication,
    HostKey,
    /// SSH channel, SFTP or protocol error after connecting.
    Protocol,
    /// The node sent no exit status.
    NoExitStatus,
    /// Local I/O (spawning a process, reading a key file...).
    Io,
    /// The step panicked inside the executor.
    Panic,
}

impl ExecutorErrorKind {
    /// The kind as metrics and logs name it (`connect_timeout`).
    pub fn name(self) -> &'static str {
        match self {
            ExecutorErrorKind::NotAllowed => "not_allowed",
            ExecutorErrorKind::Config => "config",
            ExecutorErrorKind::NameResolution => "name_resolution",
            ExecutorErrorKind::ConnectionRefused => "connection_refused",
            ExecutorErrorKind::ConnectTimeout => "connect_timeout",
            ExecutorErrorKind::Authentication => "authentication",
            ExecutorErrorKind::HostKey => "host_key",
            ExecutorErrorKind::Protocol => "protocol",
            ExecutorErrorKind::NoExitStatus => "no_exit_status",
            ExecutorErrorKind::Io => "io",
            ExecutorErrorKind::Panic => "panic",
        }
    }
}

/// A failure with a message that names the node and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ExecutorError {
    pub kind: ExecutorErrorKind,
    pub message: String,
}

impl ExecutorError {
    pub fn new(kind: ExecutorErrorKind, message: impl Into<String>) -> Self {
        ExecutorError {
            kind,
            message: message.into(),
        }
    }
}

/// The abort of a whole operation: fires every node step's signal, those
/// running and those yet to start. The first reason wins.
#[derive(Debug, Clone, Default)]
pub struct OperationAbort {
    inner: Arc<Mutex<AbortState>>,
}

#[derive(Debug, Default)]
struct AbortState {
    reason: Option<AbortReason>,
    children: Vec<AbortSignal>,
}

impl OperationAbort {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn abort(&self, reason: AbortReason) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if g.reason.is_none() {
            g.reason = Some(reason);
        }
        let reason = g.reason.unwrap_or(reason);
        for c in g.children.drain(..) {
            c.abort(reason);
        }
    }

    pub fn reason(&self) -> Option<AbortReason> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).reason
    }

    /// A signal for one node step, already fired if the operation is aborted.
    pub fn child(&self) -> AbortSignal {
        let signal = AbortSignal::new();
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match g.reason {
            Some(r) => signal.abort(r),
            None => {
                g.children.retain(|c| !c.is_aborted());
                g.children.push(signal.clone());
            }
        }
        signal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abort_signal_wakes_waiters_and_keeps_first_reason() {
        let s = AbortSignal::new();
        assert_eq!(s.wait_timeout(Duration::from_millis(10)), None);
        let s2 = s.clone();
        let t = std::thread::spawn(move || s2.wait_timeout(Duration::from_secs(10)));
        std::thread::sleep(Duration::from_millis(20));
        s.abort(AbortReason::TimedOut);
        s.abort(AbortReason::Cancelled);
        assert_eq!(t.join().unwrap(), Some(AbortReason::TimedOut));
        assert_eq!(s.reason(), Some(AbortReason::TimedOut));
    }

    #[test]
    fn an_operation_abort_reaches_steps_started_before_and_after() {
        let a = OperationAbort::new();
        let early = a.child();
        a.abort(AbortReason::Cancelled);
        a.abort(AbortReason::Shutdown);
        assert_eq!(early.reason(), Some(AbortReason::Cancelled));
        assert_eq!(a.child().reason(), Some(AbortReason::Cancelled));
    }
}
