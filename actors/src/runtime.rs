//! The wiring and the embedding API: configure and start the actor tree
//! (`Runtime::builder`), then drain it, abort it, read its counters or wait
//! for its end through a [`RuntimeHandle`].
//!
//! Tree: RootSupervisor → LogShipper, ExecutionRegistry, Poller (started in
//! that order, stopped in reverse), plus one temporary StepWorker per running
//! operation. The state that must outlive an actor instance lives in named
//! stores this file creates and owns (the operation table, the registry's
//! inbox, the report intake and its spool, the session, the counters); each
//! actor is handed exactly the stores it touches when it is built, so a
//! restarted actor picks up where the dead one stopped and no hand-over is
//! lost in a dead mailbox. No actor imports this file.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_rt::ArbiterHandle;
use slog::{error, info, o, warn, Logger};
use tokio::sync::{watch, Notify};

use crate::clock::{Clock, SystemClock};
use crate::control_plane::ControlPlane;
use crate::executor::{AbortReason, NodeExecutor};
use crate::failpoints::FailPoints;
use crate::health::{liveness, readiness, Liveness, Readiness};
use crate::inbox::{RegistryCommand, RegistryInbox};
use crate::intake::ReportIntake;
use crate::log_shipper::{LogShipper, ShipperParts};
use crate::model::{ExecutorKind, ShutdownRequest};
use crate::operations::OperationStore;
use crate::outcome::Outcomes;
use crate::poller::{Poller, PollerParts};
use crate::registry::{ExecutionRegistry, RegistryParts};
use crate::resume::ResumePlans;
use crate::session::SessionStore;
use crate::spool::{MemorySpool, Spool, SpoolError};
use crate::stats::{RuntimeStats, StatsCell};
use crate::step_worker::WorkerParts;
use crate::supervisor::{
    spawn_actor, ChildSpec, ExitReason, RestartType, StartChild, StopSupervisor, Supervisor,
};

pub use crate::settings::{NodePredicate, RuntimeConfig};

/// Why the runtime could not start, or how it ended.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RuntimeError {
    #[error("no control plane was given to the runtime; call RuntimeBuilder::control_plane")]
    MissingControlPlane,
    #[error("Runtime::start must be called inside a running actix System")]
    NoSystem,
    #[error("the spool could not be read at startup: {0}; check the spool directory")]
    Spool(#[source] Arc<SpoolError>),
    /// The root supervisor gave up: `child` broke the restart intensity.
    /// The daemon exits non-zero so that its service manager restarts it;
    /// the spool makes that lossless.
    #[error("supervision gave up: {child} {reason}, more often than the restart intensity allows")]
    Escalated { child: String, reason: ExitReason },
    #[error("the runtime ended without a drain (its actix System stopped)")]
    Stopped,
}

/// Compares how the runtime ended; two spool errors are equal when they
/// say the same.
impl PartialEq for RuntimeError {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (RuntimeError::Spool(a), RuntimeError::Spool(b)) => a.to_string() == b.to_string(),
            (
                RuntimeError::Escalated { child, reason },
                RuntimeError::Escalated {
                    child: c2,
                    reason: r2,
                },
            ) => child == c2 && reason == r2,
            (a, b) => std::mem::discriminant(a) == std::mem::discriminant(b),
        }
    }
}

impl Eq for RuntimeError {}

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
    /// running; its steps may have run"; so is every journaled claim the
    /// control plane says this runner owns (`POST /resume`).
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
        let started = clock.now();
        let executors = Arc::new(self.executors);
        let spool = self.spool.unwrap_or_else(|| Box::new(MemorySpool::new()));
        let intake = ReportIntake::recover(
            spool,
            clock.clone(),
            stats.clone(),
            log.clone(),
            self.config.carry_on_after_restart,
        )
        .map_err(|e| RuntimeError::Spool(Arc::new(e)))?;
        let config = Arc::new(self.config);
        let fail_points = self.fail_points.unwrap_or_default();
        let intake = Arc::new(intake);
        let operations = Arc::new(OperationStore::new(
            config.max_running as usize,
            stats.clone(),
        ));
        let inbox = Arc::new(RegistryInbox::default());
        let session = Arc::new(SessionStore::default());
        let draining = Arc::new(AtomicBool::new(false));
        let plans = Arc::new(ResumePlans::default());
        let outcomes = Arc::new(Outcomes {
            intake: intake.clone(),
            operations: operations.clone(),
            inbox: inbox.clone(),
            clock: clock.clone(),
            ops_log: ops_log.clone(),
        });

        let (outcome_tx, outcome_rx) = watch::channel(None::<Result<(), RuntimeError>>);
        let outcome_tx = Arc::new(outcome_tx);
        let poller_arbiter = Arbiter::new();
        let poller_handle = poller_arbiter.handle();

        let esc_outcome = outcome_tx.clone();
        let esc_arbiter = poller_handle.clone();
        let esc_log = log.clone();
        let supervisor = Supervisor::new("root", config.restart_intensity, log.clone())
            .clock(clock.clone())
            .stats(stats.clone())
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

        let shipper = Arc::new(ShipperParts {
            config: config.clone(),
            control_plane: control_plane.clone(),
            intake: intake.clone(),
            inbox: inbox.clone(),
            session: session.clone(),
            stats: stats.clone(),
            log: log.clone(),
            fail_points: fail_points.clone(),
        });
        let registry = Arc::new(RegistryParts {
            operations: operations.clone(),
            inbox: inbox.clone(),
            outcomes: outcomes.clone(),
            workers: Arc::new(WorkerParts {
                config: config.clone(),
                executors: executors.clone(),
                intake: intake.clone(),
                outcomes,
                plans: plans.clone(),
                stats: stats.clone(),
                log: log.clone(),
                fail_points: fail_points.clone(),
            }),
            supervisor: supervisor.clone(),
            kill_grace: config.kill_grace,
            clock: clock.clone(),
            log: log.clone(),
            ops_log,
            fail_points: fail_points.clone(),
        });
        let poller = Arc::new(PollerParts {
            config: config.clone(),
            control_plane: control_plane.clone(),
            operations: operations.clone(),
            inbox: inbox.clone(),
            session: session.clone(),
            intake: intake.clone(),
            draining: draining.clone(),
            plans,
            stats: stats.clone(),
            clock: clock.clone(),
            log: log.clone(),
            fail_points: fail_points.clone(),
            started,
        });

        supervisor.do_send(StartChild(ChildSpec::new(
            "log_shipper",
            RestartType::Permanent,
            Duration::from_secs(2),
            move || {
                let p = shipper.clone();
                spawn_actor(None, move || LogShipper::new(p))
            },
        )));
        supervisor.do_send(StartChild(ChildSpec::new(
            "registry",
            RestartType::Permanent,
            Duration::from_secs(2),
            move || {
                let p = registry.clone();
                spawn_actor(None, move || ExecutionRegistry::new(p))
            },
        )));
        let arbiter = poller_handle.clone();
        supervisor.do_send(StartChild(ChildSpec::new(
            "poller",
            RestartType::Permanent,
            Duration::from_secs(2),
            move || {
                let p = poller.clone();
                spawn_actor(Some(&arbiter), move || Poller::new(p))
            },
        )));
        info!(log, "runtime started"; "max_running" => config.max_running);

        Ok(RuntimeHandle {
            inner: Arc::new(HandleInner {
                config,
                control_plane,
                stats,
                clock,
                started,
                executors,
                session,
                draining,
                fail_points,
                intake,
                operations,
                inbox,
                log,
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

/// What the handle touches: the stores a drain and the counters need.
struct HandleInner {
    config: Arc<RuntimeConfig>,
    control_plane: Arc<dyn ControlPlane>,
    stats: StatsCell,
    clock: Arc<dyn Clock>,
    /// When the runtime started, for the uptime and the ages in the stats.
    started: Instant,
    /// Read for their figures.
    executors: Arc<HashMap<ExecutorKind, Arc<dyn NodeExecutor>>>,
    session: Arc<SessionStore>,
    draining: Arc<AtomicBool>,
    fail_points: FailPoints,
    intake: Arc<ReportIntake>,
    operations: Arc<OperationStore>,
    inbox: Arc<RegistryInbox>,
    log: Logger,
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

    /// A snapshot of the counters, the ages in it as of now. Cheap enough
    /// to call on every scrape: a few locks, no I/O.
    pub fn stats(&self) -> RuntimeStats {
        let now = self.inner.clock.now();
        let mut s = self.inner.stats.snapshot_at(now, self.inner.started);
        s.replica_id = self.inner.session.replica_id();
        let (pending, oldest) = self.inner.intake.backlog();
        s.reports_pending = pending;
        s.report_oldest_unacked_age = oldest.map(|t| now.saturating_duration_since(t));
        for (kind, executor) in self.inner.executors.iter() {
            if let Some(f) = executor.figures() {
                s.executors.insert(kind.as_str().to_owned(), f);
            }
        }
        s
    }

    /// Alive while the supervision has not escalated and the Poller runs
    /// (`health::liveness` of [`Self::stats`]).
    pub fn liveness(&self) -> Liveness {
        liveness(&self.stats())
    }

    /// Ready while the last check-in succeeded within three check-in
    /// intervals (`health::readiness` of [`Self::stats`]).
    pub fn readiness(&self) -> Readiness {
        readiness(&self.stats())
    }

    /// The fail point registry of this runtime.
    pub fn fail_points(&self) -> FailPoints {
        self.inner.fail_points.clone()
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
        self.inner.draining.store(true, Ordering::SeqCst);
        let inner = self.inner.clone();
        self.inner.system_arbiter.spawn_fn(move || {
            actix_rt::spawn(run_drain(inner, deadline));
        });
    }
}

async fn run_drain(inner: Arc<HandleInner>, deadline: Duration) {
    let log = inner.log.new(o!("phase" => "drain"));
    info!(log, "draining: no more claims"; "deadline_ms" => deadline.as_millis() as u64);
    let mut active = inner.operations.active();
    let finished = tokio::select! {
        r = tokio::time::timeout(deadline, active.wait_for(|n| *n == 0)) => r.is_ok(),
        _ = inner.abort_now.notified() => false,
    };
    if !finished {
        warn!(log, "aborting the operations still running");
        inner
            .inbox
            .push(RegistryCommand::AbortAll(AbortReason::Shutdown));
        // Directly too: the registry may be restarting right now.
        for abort in inner.operations.lock().running_aborts() {
            abort.abort(AbortReason::Shutdown);
        }
        let bound = inner.config.kill_grace + Duration::from_secs(5);
        if tokio::time::timeout(bound, active.wait_for(|n| *n == 0))
            .await
            .is_err()
        {
            warn!(log, "operations did not end after the abort"; "waited_ms" => bound.as_millis() as u64);
        }
    }
    let mut acked = inner.intake.acked_events();
    let flush = inner.config.flush_timeout;
    if tokio::time::timeout(flush, async {
        while !inner.intake.is_flushed() {
            inner.intake.wake();
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
    if let Some(replica_id) = inner.session.replica_id() {
        let req = ShutdownRequest {
            replica_id,
            reason: "drain".into(),
        };
        match tokio::time::timeout(
            inner.config.request_timeout,
            inner.control_plane.shutdown(req),
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
