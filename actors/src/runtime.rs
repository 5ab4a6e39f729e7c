//! The embedding API: configure and start the actor tree (`Runtime::builder`),
//! then drain it, abort it, read its counters or wait for its end through a
//! [`RuntimeHandle`].
//!
//! Tree: RootSupervisor → LogShipper, ExecutionRegistry, Poller (started in
//! that order, stopped in reverse), plus one temporary StepWorker per running
//! operation. The state that must outlive an actor instance (the operation
//! table, the registry's inbox, the report intake and spool, the counters)
//! lives in `Shared`, handed to every factory, so a restarted actor picks
//! up where the dead one stopped and no hand-over is lost in a dead mailbox.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_rt::ArbiterHandle;
use slog::{error, info, o, warn, Logger};
use tokio::sync::{watch, Notify};

use crate::clock::{Clock, SystemClock};
use crate::control_plane::ControlPlane;
use crate::executor::{AbortReason, NodeExecutor};
use crate::failpoints::FailPoints;
use crate::log_shipper::{LogShipper, ReportIntake};
use crate::model::{ExecutorKind, Node, ShutdownRequest, StartupResponse};
use crate::poller::Poller;
use crate::registry::{ExecutionRegistry, Mailbox, OperationTable, RegistryCommand};
use crate::spool::{MemorySpool, Spool};
use crate::stats::{RuntimeStats, StatsCell};
use crate::supervisor::{
    spawn_actor, ChildSpec, ExitReason, RestartIntensity, RestartType, StartChild, StopSupervisor,
    Supervisor,
};

/// Decides whether the runner may run steps on a node (`allowedNodes`).
pub type NodePredicate = Arc<dyn Fn(&Node) -> bool + Send + Sync>;

/// The runtime's settings. The control plane's cadence (startup answer) is
/// obeyed within these limits:
/// - check-in: with long polling, the server's `longPollMs` hold, capped at
///   `poll_interval`, and the next check-in as soon as one returns but never
///   sooner than `min_checkin_gap` after the previous one started; without
///   long polling (`long_polling = false` or `longPollMs = 0`), one check-in
///   per `pollIntervalMs`, capped at `poll_interval`;
/// - reports: a report produced while nothing waits is sent at once; while
///   output flows, batches go at most every tenth of
///   `min(reportIntervalMs, report_interval)` (20 ms for 200 ms), and at
///   once when `min(reportBatchMax, report_batch_max)` reports wait.
#[derive(Clone)]
pub struct RuntimeConfig {
    pub hostname: String,
    pub version: String,
    pub pid: u32,
    pub tags: Vec<String>,
    /// Operations running at once; the rest wait in a FIFO queue.
    pub max_running: u32,
    pub long_polling: bool,
    /// Check-in period without long polling, and the cap on the server's value.
    pub poll_interval: Duration,
    /// The floor between the starts of two check-ins.
    pub min_checkin_gap: Duration,
    /// The cap on the server's `reportIntervalMs`.
    pub report_interval: Duration,
    /// The cap on the server's `reportBatchMax`.
    pub report_batch_max: u32,
    /// TERM→KILL grace passed to executors in every `StepRequest`.
    pub kill_grace: Duration,
    /// `allowedNodes`: `None` = every node is allowed.
    pub allowed_nodes: Option<NodePredicate>,
    pub restart_intensity: RestartIntensity,
    /// The cap on retry delays; 401/403 are retried at this slow pace.
    pub backoff_max: Duration,
    /// The first retry delay ceiling (doubles per failure up to `backoff_max`;
    /// the delay is drawn uniformly below the ceiling: full jitter).
    pub backoff_initial: Duration,
    /// The deadline of every control plane request (a check-in gets its
    /// long-poll hold on top).
    pub request_timeout: Duration,
    /// How long a drain waits for the remaining reports to be acked.
    pub flush_timeout: Duration,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            hostname: "localhost".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            pid: std::process::id(),
            tags: Vec::new(),
            max_running: 50,
            long_polling: true,
            poll_interval: Duration::from_secs(5),
            min_checkin_gap: Duration::from_millis(100),
            report_interval: Duration::from_millis(200),
            report_batch_max: 1000,
            kill_grace: Duration::from_secs(5),
            allowed_nodes: None,
            restart_intensity: RestartIntensity::default(),
            backoff_max: Duration::from_secs(30),
            backoff_initial: Duration::from_millis(100),
            request_timeout: Duration::from_secs(30),
            flush_timeout: Duration::from_secs(10),
        }
    }
}

impl fmt::Debug for RuntimeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuntimeConfig")
            .field("hostname", &self.hostname)
            .field("version", &self.version)
            .field("max_running", &self.max_running)
            .field("long_polling", &self.long_polling)
            .field("poll_interval", &self.poll_interval)
            .field("allowed_nodes", &self.allowed_nodes.as_ref().map(|_| ".."))
            .finish_non_exhaustive()
    }
}

/// Why the runtime could not start, or how it ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    #[error("no control plane was given to the runtime; call RuntimeBuilder::control_plane")]
    MissingControlPlane,
    #[error("Runtime::start must be called inside a running actix System")]
    NoSystem,
    #[error("the spool could not be read at startup: {0}; check the spool directory")]
    Spool(String),
    /// The root supervisor gave up: `child` broke the restart intensity.
    /// The daemon exits non-zero so that its service manager restarts it;
    /// the spool makes that lossless.
    #[error("supervision gave up: {child} {reason}, more often than the restart intensity allows")]
    Escalated { child: String, reason: ExitReason },
    #[error("the runtime ended without a drain (its actix System stopped)")]
    Stopped,
}

/// The cadence the control plane chose, as obeyed.
#[derive(Debug, Clone, Default)]
pub(crate) struct Session {
    pub replica_id: Option<String>,
    pub startup: Option<StartupResponse>,
}

/// State that outlives every actor instance.
pub(crate) struct Shared {
    pub config: RuntimeConfig,
    pub control_plane: Arc<dyn ControlPlane>,
    pub executors: HashMap<ExecutorKind, Arc<dyn NodeExecutor>>,
    pub clock: Arc<dyn Clock>,
    pub log: Logger,
    pub ops_log: Logger,
    pub stats: StatsCell,
    pub intake: ReportIntake,
    pub table: Mutex<OperationTable>,
    pub inbox: Mailbox<RegistryCommand>,
    pub session: Mutex<Session>,
    /// Set by a drain: the Poller claims nothing more.
    pub draining: AtomicBool,
    pub fail_points: FailPoints,
    pub started: Instant,
    pub supervisor: OnceLock<Addr<Supervisor>>,
    /// Operations claimed and not yet terminal (for the drain to wait on).
    pub active: watch::Sender<usize>,
}

impl Shared {
    pub fn table(&self) -> MutexGuard<'_, OperationTable> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn session(&self) -> Session {
        self.session
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn replica_id(&self) -> Option<String> {
        self.session
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replica_id
            .clone()
    }

    /// Publishes the table's counts to the stats and the drain.
    pub fn refresh_counts(&self) {
        let (running, queued, active) = {
            let t = self.table();
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

    /// The report cadence: the server's, capped by the config.
    pub fn report_cadence(&self) -> (Duration, usize) {
        let s = self.session();
        let (mut interval, mut batch) = (
            self.config.report_interval,
            self.config.report_batch_max.max(1),
        );
        if let Some(st) = s.startup {
            interval = interval.min(Duration::from_millis(st.report_interval_ms));
            batch = batch.min(st.report_batch_max.max(1));
        }
        (interval.max(Duration::from_millis(5)), batch as usize)
    }
}

/// Entry point of the embedding API.
pub struct Runtime;

impl Runtime {
    pub fn builder() -> RuntimeBuilder {
        RuntimeBuilder::default()
    }
}

/// Collects the seams and settings, then starts the actor tree.
#[derive(Default)]
pub struct RuntimeBuilder {
    config: RuntimeConfig,
    control_plane: Option<Arc<dyn ControlPlane>>,
    executors: HashMap<ExecutorKind, Arc<dyn NodeExecutor>>,
    spool: Option<Box<dyn Spool>>,
    clock: Option<Arc<dyn Clock>>,
    log: Option<Logger>,
    ops_log: Option<Logger>,
    fail_points: Option<FailPoints>,
}

impl RuntimeBuilder {
    pub fn config(mut self, config: RuntimeConfig) -> Self {
        self.config = config;
        self
    }

    pub fn control_plane(mut self, cp: Arc<dyn ControlPlane>) -> Self {
        self.control_plane = Some(cp);
        self
    }

    /// The executor for nodes whose `executor` is `kind`; a node whose kind
    /// has none fails with a message saying so.
    pub fn executor(mut self, kind: ExecutorKind, executor: Arc<dyn NodeExecutor>) -> Self {
        self.executors.insert(kind, executor);
        self
    }

    /// Default: a `MemorySpool` (reports survive actor restarts, not a
    /// process restart).
    pub fn spool(mut self, spool: Box<dyn Spool>) -> Self {
        self.spool = Some(spool);
        self
    }

    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// runner.log: starts, exits and restarts of actors, control plane
    /// trouble. Default: discarded.
    pub fn logger(mut self, log: Logger) -> Self {
        self.log = Some(log);
        self
    }

    /// operations.log: one record when each operation starts and one when it
    /// ends, keys `op`, `execution`, `project`, `job`, `nodes`, `outcome`,
    /// `duration_ms`. Default: discarded.
    pub fn operations_logger(mut self, log: Logger) -> Self {
        self.ops_log = Some(log);
        self
    }

    /// The fail point registry the actors consult (effective only with the
    /// `failpoints` feature).
    pub fn fail_points(mut self, fp: FailPoints) -> Self {
        self.fail_points = Some(fp);
        self
    }

    /// Starts the tree. Call inside a running actix System. An operation the
    /// spool holds without a terminal report (the process died while it ran)
    /// is reported `failed` with "runner restarted while the operation was
    /// running".
    pub fn start(self) -> Result<RuntimeHandle, RuntimeError> {
        let control_plane = self
            .control_plane
            .ok_or(RuntimeError::MissingControlPlane)?;
        if actix_rt::System::try_current().is_none() {
            return Err(RuntimeError::NoSystem);
        }
        let log = self
            .log
            .unwrap_or_else(|| Logger::root(slog::Discard, o!()));
        let ops_log = self
            .ops_log
            .unwrap_or_else(|| Logger::root(slog::Discard, o!()));
        let clock = self.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let stats = StatsCell::default();
        let spool = self.spool.unwrap_or_else(|| Box::new(MemorySpool::new()));
        let intake = ReportIntake::recover(spool, clock.clone(), stats.clone(), log.clone())
            .map_err(|e| RuntimeError::Spool(e.to_string()))?;
        let config = self.config;
        let shared = Arc::new(Shared {
            table: Mutex::new(OperationTable::new(config.max_running as usize)),
            config,
            control_plane,
            executors: self.executors,
            clock: clock.clone(),
            log: log.clone(),
            ops_log,
            stats: stats.clone(),
            intake,
            inbox: Mailbox::default(),
            session: Mutex::new(Session::default()),
            draining: AtomicBool::new(false),
            fail_points: self.fail_points.unwrap_or_default(),
            started: clock.now(),
            supervisor: OnceLock::new(),
            active: watch::channel(0).0,
        });

        let (outcome_tx, outcome_rx) = watch::channel(None::<Result<(), RuntimeError>>);
        let outcome_tx = Arc::new(outcome_tx);
        let poller_arbiter = Arbiter::new();
        let poller_handle = poller_arbiter.handle();

        let esc_outcome = outcome_tx.clone();
        let esc_arbiter = poller_handle.clone();
        let esc_log = log.clone();
        let supervisor = Supervisor::new("root", shared.config.restart_intensity, log.clone())
            .clock(clock)
            .stats(stats)
            .on_escalate(move |exit| {
                error!(esc_log, "the runtime gives up; the runner must be restarted";
                    "child" => &exit.child, "reason" => %exit.reason);
                esc_arbiter.stop();
                esc_outcome.send_if_modified(|o| {
                    if o.is_none() {
                        *o = Some(Err(RuntimeError::Escalated {
                            child: exit.child,
                            reason: exit.reason,
                        }));
                        true
                    } else {
                        false
                    }
                });
            })
            .start();
        let _ = shared.supervisor.set(supervisor.clone());

        let s = shared.clone();
        supervisor.do_send(StartChild(ChildSpec::new(
            "log_shipper",
            RestartType::Permanent,
            Duration::from_secs(2),
            move || {
                let s = s.clone();
                spawn_actor(None, move || LogShipper::new(s))
            },
        )));
        let s = shared.clone();
        supervisor.do_send(StartChild(ChildSpec::new(
            "registry",
            RestartType::Permanent,
            Duration::from_secs(2),
            move || {
                let s = s.clone();
                spawn_actor(None, move || ExecutionRegistry::new(s))
            },
        )));
        let s = shared.clone();
        let arbiter = poller_handle.clone();
        supervisor.do_send(StartChild(ChildSpec::new(
            "poller",
            RestartType::Permanent,
            Duration::from_secs(2),
            move || {
                let s = s.clone();
                spawn_actor(Some(&arbiter), move || Poller::new(s))
            },
        )));
        info!(log, "runtime started"; "max_running" => shared.config.max_running);

        Ok(RuntimeHandle {
            inner: Arc::new(HandleInner {
                shared,
                supervisor,
                system_arbiter: Arbiter::current(),
                poller_arbiter: poller_handle,
                outcome_tx,
                outcome_rx,
                drain_started: AtomicBool::new(false),
                abort_now: Notify::new(),
            }),
        })
    }
}

struct HandleInner {
    shared: Arc<Shared>,
    supervisor: Addr<Supervisor>,
    system_arbiter: ArbiterHandle,
    poller_arbiter: ArbiterHandle,
    outcome_tx: Arc<watch::Sender<Option<Result<(), RuntimeError>>>>,
    outcome_rx: watch::Receiver<Option<Result<(), RuntimeError>>>,
    drain_started: AtomicBool,
    abort_now: Notify,
}

/// Controls a started runtime; cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct RuntimeHandle {
    inner: Arc<HandleInner>,
}

impl RuntimeHandle {
    /// Stops claiming; running operations finish, or are aborted
    /// ([`AbortReason::Shutdown`]) when `deadline` passes; queued ones are
    /// reported aborted then; every report is flushed (bounded by
    /// `flush_timeout`); `POST /shutdown`; then the actors stop in reverse
    /// order and the runtime ends `Ok`. The drain runs even if the returned
    /// future is dropped; the future ends when the runtime has.
    pub fn drain(&self, deadline: Duration) -> impl Future<Output = ()> {
        self.begin_drain(deadline);
        let this = self.clone();
        async move {
            let _ = this.wait().await;
        }
    }

    /// The second signal: aborts every operation now (Shutdown), then
    /// flushes and shuts down as a drain does.
    pub fn abort_all(&self) {
        self.begin_drain(Duration::ZERO);
        self.inner.abort_now.notify_one();
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> RuntimeStats {
        let mut s = self.inner.shared.stats.snapshot();
        s.replica_id = self.inner.shared.replica_id();
        s
    }

    /// The fail point registry of this runtime.
    pub fn fail_points(&self) -> FailPoints {
        self.inner.shared.fail_points.clone()
    }

    /// Ends `Ok` after a drain, or with [`RuntimeError::Escalated`] when the
    /// root supervisor gave up.
    pub fn wait(&self) -> impl Future<Output = Result<(), RuntimeError>> {
        let mut rx = self.inner.outcome_rx.clone();
        async move {
            match rx.wait_for(|o| o.is_some()).await {
                Ok(o) => o.clone().unwrap_or(Err(RuntimeError::Stopped)),
                Err(_) => Err(RuntimeError::Stopped),
            }
        }
    }

    fn begin_drain(&self, deadline: Duration) {
        if self.inner.drain_started.swap(true, Ordering::SeqCst) {
            return;
        }
        self.inner.shared.draining.store(true, Ordering::SeqCst);
        let inner = self.inner.clone();
        self.inner.system_arbiter.spawn_fn(move || {
            actix_rt::spawn(run_drain(inner, deadline));
        });
    }
}

async fn run_drain(inner: Arc<HandleInner>, deadline: Duration) {
    let shared = inner.shared.clone();
    let log = shared.log.new(o!("phase" => "drain"));
    info!(log, "draining: no more claims"; "deadline_ms" => deadline.as_millis() as u64);
    let mut active = shared.active.subscribe();
    let finished = tokio::select! {
        r = tokio::time::timeout(deadline, active.wait_for(|n| *n == 0)) => r.is_ok(),
        _ = inner.abort_now.notified() => false,
    };
    if !finished {
        warn!(log, "aborting the operations still running");
        shared
            .inbox
            .push(RegistryCommand::AbortAll(AbortReason::Shutdown));
        // Directly too: the registry may be restarting right now.
        for abort in shared.table().running_aborts() {
            abort.abort(AbortReason::Shutdown);
        }
        let bound = shared.config.kill_grace + Duration::from_secs(5);
        if tokio::time::timeout(bound, active.wait_for(|n| *n == 0))
            .await
            .is_err()
        {
            warn!(log, "operations did not end after the abort"; "waited_ms" => bound.as_millis() as u64);
        }
    }
    let mut acked = shared.intake.acked_events();
    let flush = shared.config.flush_timeout;
    if tokio::time::timeout(flush, async {
        while !shared.intake.is_flushed() {
            shared.intake.wake();
            if acked.changed().await.is_err() {
                break;
            }
        }
    })
    .await
    .is_err()
    {
        warn!(log, "reports not all acked before the flush timeout; they stay in the spool";
            "flush_timeout_ms" => flush.as_millis() as u64);
    }
    if let Some(replica_id) = shared.replica_id() {
        let req = ShutdownRequest {
            replica_id,
            reason: "drain".into(),
        };
        match tokio::time::timeout(
            shared.config.request_timeout,
            shared.control_plane.shutdown(req),
        )
        .await
        {
            Ok(Ok(())) => info!(log, "replica shut down on the control plane"),
            Ok(Err(e)) => warn!(log, "POST /shutdown failed"; "error" => %e),
            Err(_) => warn!(log, "POST /shutdown timed out"),
        }
    }
    let _ = inner.supervisor.send(StopSupervisor).await;
    inner.poller_arbiter.stop();
    info!(log, "runtime stopped");
    inner.outcome_tx.send_if_modified(|o| {
        if o.is_none() {
            *o = Some(Ok(()));
            true
        } else {
            false
        }
    });
}

#[cfg(test)]
mod tests;
