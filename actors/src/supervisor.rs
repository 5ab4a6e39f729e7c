//! OTP-style supervision on actix: children started in order and stopped in
//! reverse order, restart types, panics captured as typed exit reasons, and
//! restart intensity with escalation.
//!
//! actix's own `Supervisor` restarts an actor only when it stops itself and
//! keeps its old state; a panic in a handler kills the actor for good. Here
//! every child runs inside a wrapper task that owns the actor's context
//! future and polls it under `catch_unwind`, so a panic anywhere the actor's
//! context drives (a handler, `started`, a timer callback, a future spawned
//! into the context) ends that child with [`ExitReason::Panic`] instead of
//! vanishing, and the supervisor creates a fresh instance from the child's
//! factory.

use std::fmt;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use actix::dev::channel::{channel, AddressReceiver};
use actix::prelude::*;
use actix_rt::ArbiterHandle;
use futures_util::future::{BoxFuture, FutureExt, Shared};
use slog::{crit, error, info, o, warn, Logger};
use tokio::sync::oneshot;

use crate::clock::{Clock, SystemClock};
use crate::stats::StatsCell;

/// When a child is restarted after it exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartType {
    /// Always restarted, whatever the reason (the Poller, the registry, the
    /// LogShipper).
    Permanent,
    /// Restarted only after an abnormal exit (panic, killed, lost).
    Transient,
    /// Never restarted (a StepWorker: a node step may not be idempotent, so
    /// it is never silently re-run). Its exit is handed to the child's
    /// `on_exit` callback instead, and it does not count toward the restart
    /// intensity.
    Temporary,
}

/// More than `max_restarts` restarts within `within` makes the supervisor
/// give up: it stops its children (in reverse order) and itself, and
/// reports the child and reason that broke the limit to its parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartIntensity {
    pub max_restarts: u32,
    pub within: Duration,
}

/// 5 restarts within 60 s: the default the daemon documents
/// (`supervision.maxRestarts`, `supervision.restartWithinMs`) and takes
/// from here.
impl Default for RestartIntensity {
    fn default() -> Self {
        RestartIntensity {
            max_restarts: 5,
            within: Duration::from_secs(60),
        }
    }
}

/// Why a child ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// It stopped by itself.
    Normal,
    /// It stopped because its supervisor asked it to.
    Shutdown,
    /// It panicked; the panic message.
    Panic { message: String },
    /// It did not stop within its shutdown timeout and was dropped.
    Killed,
    /// Its thread went away without a word (its Arbiter stopped).
    Lost,
}

impl ExitReason {
    /// Panic, killed or lost: what a transient child is restarted for.
    pub fn is_abnormal(&self) -> bool {
        matches!(
            self,
            ExitReason::Panic { .. } | ExitReason::Killed | ExitReason::Lost
        )
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::Normal => f.write_str("stopped normally"),
            ExitReason::Shutdown => f.write_str("stopped on shutdown"),
            ExitReason::Panic { message } => write!(f, "panicked: {message}"),
            ExitReason::Killed => {
                f.write_str("did not stop within its shutdown timeout and was dropped")
            }
            ExitReason::Lost => f.write_str("its thread went away"),
        }
    }
}

/// A child's exit, as reported to a parent on escalation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{child} {reason}")]
pub struct ChildExit {
    /// The child's name in its supervisor.
    pub child: String,
    pub reason: ExitReason,
}

/// Asks a supervised actor to stop (it may flush first); after the child's
/// shutdown timeout it is dropped anyway.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct StopChild;

type SharedExit = Shared<BoxFuture<'static, ExitReason>>;

/// One running instance of a child, as its factory hands it over.
pub struct RunningChild {
    stop: Box<dyn FnOnce() + Send>,
    /// Drops the instance; also keeps an address alive until then, since an
    /// actix actor whose addresses are all gone stops by itself.
    kill: Box<dyn FnOnce() + Send>,
    exit: SharedExit,
}

/// Starts a fresh actor built by `make`, on `arbiter` (its thread) or on the
/// current one, under the panic-capturing wrapper. The actor is built on its
/// own thread, so `make` may panic too: that is an exit like any other.
pub fn spawn_actor<A, F>(arbiter: Option<&ArbiterHandle>, make: F) -> RunningChild
where
    A: Actor<Context = Context<A>> + Handler<StopChild>,
    F: FnOnce() -> A + Send + 'static,
{
    spawn_actor_with_addr(arbiter, make).0
}

/// [`spawn_actor`], also returning the new instance's address.
pub fn spawn_actor_with_addr<A, F>(
    arbiter: Option<&ArbiterHandle>,
    make: F,
) -> (RunningChild, Addr<A>)
where
    A: Actor<Context = Context<A>> + Handler<StopChild>,
    F: FnOnce() -> A + Send + 'static,
{
    let (tx, rx) = channel::<A>(16);
    let addr = Addr::new(tx);
    let (exit_tx, exit_rx) = oneshot::channel();
    let (kill_tx, kill_rx) = oneshot::channel();
    let run = move || {
        actix_rt::spawn(run_child(make, rx, kill_rx, exit_tx));
    };
    let spawned = match arbiter {
        Some(a) => a.spawn_fn(run),
        None => {
            run();
            true
        }
    };
    let exit: BoxFuture<'static, ExitReason> = if spawned {
        async move { exit_rx.await.unwrap_or(ExitReason::Lost) }.boxed()
    } else {
        async { ExitReason::Lost }.boxed()
    };
    let stop_addr = addr.clone();
    let addr_keep = addr.clone();
    let child = RunningChild {
        stop: Box::new(move || stop_addr.do_send(StopChild)),
        kill: Box::new(move || {
            let _ = kill_tx.send(());
            drop(addr_keep);
        }),
        exit: exit.shared(),
    };
    (child, addr)
}

/// The wrapper task of one child instance.
async fn run_child<A, F>(
    make: F,
    rx: AddressReceiver<A>,
    kill_rx: oneshot::Receiver<()>,
    exit_tx: oneshot::Sender<ExitReason>,
) where
    A: Actor<Context = Context<A>>,
    F: FnOnce() -> A,
{
    let reason = match catch_unwind(AssertUnwindSafe(make)) {
        Err(p) => ExitReason::Panic {
            message: panic_message(&*p),
        },
        Ok(actor) => {
            let ctx = Context::with_receiver(rx);
            let mut fut = Some(Box::pin(ctx.into_future(actor)));
            let mut kill = Some(kill_rx);
            let reason = std::future::poll_fn(|cx| {
                if let Some(k) = kill.as_mut() {
                    match Pin::new(k).poll(cx) {
                        Poll::Ready(Ok(())) => return Poll::Ready(ExitReason::Killed),
                        // The supervisor went away without killing: keep running.
                        Poll::Ready(Err(_)) => kill = None,
                        Poll::Pending => {}
                    }
                }
                let Some(f) = fut.as_mut() else {
                    return Poll::Ready(ExitReason::Lost);
                };
                match catch_unwind(AssertUnwindSafe(|| f.as_mut().poll(cx))) {
                    Ok(Poll::Ready(())) => Poll::Ready(ExitReason::Normal),
                    Ok(Poll::Pending) => Poll::Pending,
                    Err(p) => Poll::Ready(ExitReason::Panic {
                        message: panic_message(&*p),
                    }),
                }
            })
            .await;
            // Dropping a context that is still alive runs the actor's
            // stopping hooks; a panic there must not escape either.
            match catch_unwind(AssertUnwindSafe(move || drop(fut))) {
                Err(p) if reason == ExitReason::Normal => ExitReason::Panic {
                    message: panic_message(&*p),
                },
                _ => reason,
            }
        }
    };
    let _ = exit_tx.send(reason);
}

/// The text of a panic payload.
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-text payload".to_owned()
    }
}

type ExitCallback = Box<dyn FnOnce(&ExitReason) + Send>;

/// How to start and supervise one child.
pub struct ChildSpec {
    pub name: String,
    pub restart: RestartType,
    /// How long the child gets to stop when asked before it is dropped.
    pub shutdown: Duration,
    start: Box<dyn FnMut() -> RunningChild + Send>,
    on_exit: Option<ExitCallback>,
}

impl ChildSpec {
    /// `start` builds a fresh instance each time it is called (a restart
    /// never reuses the old state); typically `move || spawn_actor(..)`.
    pub fn new(
        name: impl Into<String>,
        restart: RestartType,
        shutdown: Duration,
        start: impl FnMut() -> RunningChild + Send + 'static,
    ) -> Self {
        ChildSpec {
            name: name.into(),
            restart,
            shutdown,
            start: Box::new(start),
            on_exit: None,
        }
    }

    /// Called once with the final exit reason when the child will not be
    /// restarted (a temporary child's exit, a transient child's normal exit,
    /// a child stopped on shutdown, or one refused because the supervisor is
    /// stopping).
    pub fn on_exit(mut self, f: impl FnOnce(&ExitReason) + Send + 'static) -> Self {
        self.on_exit = Some(Box::new(f));
        self
    }
}

/// The restart-intensity window: the plain logic of the supervisor.
#[derive(Debug, Clone)]
pub struct RestartLog {
    intensity: RestartIntensity,
    restarts: std::collections::VecDeque<Instant>,
}

impl RestartLog {
    pub fn new(intensity: RestartIntensity) -> Self {
        RestartLog {
            intensity,
            restarts: Default::default(),
        }
    }

    /// Records a restart at `now`; `false` when it makes more than
    /// `max_restarts` within the window (the supervisor must escalate).
    pub fn allow(&mut self, now: Instant) -> bool {
        while self
            .restarts
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > self.intensity.within)
        {
            self.restarts.pop_front();
        }
        self.restarts.push_back(now);
        self.restarts.len() <= self.intensity.max_restarts as usize
    }
}

struct Live {
    stop: Option<Box<dyn FnOnce() + Send>>,
    kill: Option<Box<dyn FnOnce() + Send>>,
    exit: SharedExit,
    stop_requested: bool,
}

struct Slot {
    spec: ChildSpec,
    instance: u64,
    live: Option<Live>,
}

/// A supervisor actor with OTP semantics.
///
/// - Children start in the order they are added ([`StartChild`]) and stop in
///   reverse order ([`StopSupervisor`]), each given its own shutdown timeout
///   and dropped ([`ExitReason::Killed`]) after it.
/// - A child's exit, with its reason, is logged and counted; panics carry the
///   panic message and the child's name.
/// - `permanent` children are always restarted, `transient` ones after an
///   abnormal exit, `temporary` ones never; a restart calls the child's
///   factory again, so the new instance starts from fresh state (state meant
///   to survive lives in shared structures the factory hands in).
/// - More than `max_restarts` restarts within `within` escalates: the
///   supervisor stops all children in reverse order, stops itself and calls
///   its `on_escalate` callback with the child and reason that broke the
///   limit.
pub struct Supervisor {
    name: String,
    log: Logger,
    clock: Arc<dyn Clock>,
    restarts: RestartLog,
    slots: Vec<Slot>,
    next_instance: u64,
    stopping: bool,
    stats: Option<StatsCell>,
    on_escalate: Option<Box<dyn FnOnce(ChildExit)>>,
}

impl Supervisor {
    pub fn new(name: impl Into<String>, intensity: RestartIntensity, log: Logger) -> Self {
        let name = name.into();
        Supervisor {
            log: log.new(o!("supervisor" => name.clone())),
            name,
            clock: Arc::new(SystemClock),
            restarts: RestartLog::new(intensity),
            slots: Vec::new(),
            next_instance: 0,
            stopping: false,
            stats: None,
            on_escalate: None,
        }
    }

    /// The clock the restart-intensity window is measured with.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Called when this supervisor gives up (the parent's side of escalation).
    pub fn on_escalate(mut self, f: impl FnOnce(ChildExit) + 'static) -> Self {
        self.on_escalate = Some(Box::new(f));
        self
    }

    pub(crate) fn stats(mut self, stats: StatsCell) -> Self {
        self.stats = Some(stats);
        self
    }

    fn count(&self, f: impl FnOnce(&mut crate::stats::RuntimeStats)) {
        if let Some(s) = &self.stats {
            s.update(f);
        }
    }

    fn start_slot(&mut self, idx: usize, restarted: bool, ctx: &mut Context<Self>) {
        self.next_instance += 1;
        let instance = self.next_instance;
        let slot = &mut self.slots[idx];
        let running = (slot.spec.start)();
        slot.instance = instance;
        let exit = running.exit.clone();
        slot.live = Some(Live {
            stop: Some(running.stop),
            kill: Some(running.kill),
            exit: running.exit,
            stop_requested: false,
        });
        let name = slot.spec.name.clone();
        if restarted {
            info!(self.log, "child restarted"; "child" => &name, "instance" => instance);
        } else {
            info!(self.log, "child started"; "child" => &name, "instance" => instance);
        }
        // Dynamic children (`step_worker[op-1]`) are counted under their kind
        // so that the counters stay bounded.
        let kind = name.split('[').next().unwrap_or(&name).to_owned();
        self.count(|s| {
            *s.starts.entry(kind.clone()).or_default() += 1;
            *s.children_running.entry(kind.clone()).or_default() += 1;
            if restarted {
                *s.restarts.entry(kind).or_default() += 1;
            }
        });
        ctx.spawn(
            exit.into_actor(self)
                .map(move |reason, act, ctx| act.child_exited(instance, reason, ctx)),
        );
    }

    fn child_exited(&mut self, instance: u64, reason: ExitReason, ctx: &mut Context<Self>) {
        let Some(idx) = self.slots.iter().position(|s| s.instance == instance) else {
            return;
        };
        let slot = &mut self.slots[idx];
        let asked = slot.live.take().is_some_and(|l| l.stop_requested);
        let reason = match reason {
            ExitReason::Normal if asked || self.stopping => ExitReason::Shutdown,
            r => r,
        };
        let name = slot.spec.name.clone();
        let restart_type = slot.spec.restart;
        if reason.is_abnormal() {
            error!(self.log, "child exited"; "child" => &name, "reason" => %reason);
        } else {
            info!(self.log, "child exited"; "child" => &name, "reason" => %reason);
        }
        let kind = name.split('[').next().unwrap_or(&name).to_owned();
        self.count(|s| {
            s.exits += 1;
            if let Some(n) = s.children_running.get_mut(&kind) {
                *n = n.saturating_sub(1);
            }
        });
        let restart = !self.stopping
            && match restart_type {
                RestartType::Permanent => true,
                RestartType::Transient => reason.is_abnormal(),
                RestartType::Temporary => false,
            };
        if !restart {
            let mut slot = self.slots.remove(idx);
            if let Some(f) = slot.spec.on_exit.take() {
                f(&reason);
            }
            return;
        }
        if self.restarts.allow(self.clock.now()) {
            self.start_slot(idx, true, ctx);
        } else {
            self.escalate(
                ChildExit {
                    child: name,
                    reason,
                },
                ctx,
            );
        }
    }

    fn escalate(&mut self, exit: ChildExit, ctx: &mut Context<Self>) {
        crit!(self.log, "restart intensity exceeded, stopping every child and this supervisor";
            "child" => &exit.child, "reason" => %exit.reason);
        self.count(|s| {
            s.escalations += 1;
            s.last_error = Some(format!("supervisor {} gave up: {exit}", self.name));
        });
        let sequence = self.shutdown_sequence();
        ctx.spawn(sequence.into_actor(self).map(move |(), act, ctx| {
            if let Some(f) = act.on_escalate.take() {
                f(exit);
            }
            ctx.stop();
        }));
    }

    /// Stops every live child, last started first, each within its own
    /// shutdown timeout.
    fn shutdown_sequence(&mut self) -> impl Future<Output = ()> + 'static {
        self.stopping = true;
        let log = self.log.clone();
        let plan: Vec<_> = self
            .slots
            .iter_mut()
            .rev()
            .filter_map(|slot| {
                let live = slot.live.as_mut()?;
                live.stop_requested = true;
                Some((
                    slot.spec.name.clone(),
                    slot.spec.shutdown,
                    live.stop.take(),
                    live.kill.take(),
                    live.exit.clone(),
                ))
            })
            .collect();
        async move {
            for (name, timeout, stop, kill, exit) in plan {
                if let Some(stop) = stop {
                    stop();
                }
                if tokio::time::timeout(timeout, exit.clone()).await.is_err() {
                    warn!(log, "child did not stop in time, dropping it";
                        "child" => &name, "timeout_ms" => timeout.as_millis() as u64);
                    if let Some(kill) = kill {
                        kill();
                    }
                    let _ = tokio::time::timeout(Duration::from_secs(1), exit).await;
                }
            }
        }
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;
}

/// Adds a child and starts it (children start in the order added). Refused
/// while the supervisor is stopping: the child's `on_exit` then runs with
/// [`ExitReason::Shutdown`].
#[derive(Message)]
#[rtype(result = "()")]
pub struct StartChild(pub ChildSpec);

impl Handler<StartChild> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: StartChild, ctx: &mut Self::Context) {
        let mut spec = msg.0;
        if self.stopping {
            if let Some(f) = spec.on_exit.take() {
                f(&ExitReason::Shutdown);
            }
            return;
        }
        self.slots.push(Slot {
            spec,
            instance: 0,
            live: None,
        });
        self.start_slot(self.slots.len() - 1, false, ctx);
    }
}

/// Stops every child in reverse start order, then the supervisor; answers
/// once all of them are gone.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct StopSupervisor;

impl Handler<StopSupervisor> for Supervisor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: StopSupervisor, _: &mut Self::Context) -> Self::Result {
        info!(self.log, "stopping children in reverse order");
        Box::pin(
            self.shutdown_sequence()
                .into_actor(self)
                .map(|(), _, ctx| ctx.stop()),
        )
    }
}

impl Handler<StopChild> for Supervisor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: StopChild, ctx: &mut Self::Context) -> Self::Result {
        self.handle(StopSupervisor, ctx)
    }
}

#[cfg(test)]
mod tests;
