//! The Poller: registers the replica (`POST /startup`), then checks in
//! continuously (long polling, at the server's cadence within the config's
//! limits), claims each new offer and hands claimed operations and cancels
//! to the registry's inbox without waiting for it.
//!
//! It runs on an Arbiter (thread) of its own and learns what is running from
//! the shared operation table, never by asking a worker, so no step work can
//! stall the check-in cycle.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use backoff::backoff::Backoff;
use backoff::ExponentialBackoff;
use futures_util::FutureExt;
use rand::Rng;
use slog::{debug, error, info, warn, Logger};

use crate::control_plane::{ClaimOutcome, ControlPlaneError};
use crate::failpoints::failed;
use crate::model::{CheckinRequest, StartupRequest, StartupResponse};
use crate::registry::RegistryCommand;
use crate::runtime::{RuntimeConfig, Shared};
use crate::supervisor::StopChild;

/// Retry delays: the `backoff` crate's exponential policy gives the ceiling
/// (doubling from `initial`, capped at `max`); the delay is drawn uniformly
/// in `[0, ceiling]` (full jitter); a server's `Retry-After` is a floor;
/// refused credentials wait the full `max`.
#[derive(Debug)]
pub struct RetryPolicy {
    ceiling: ExponentialBackoff,
    max: Duration,
}

impl RetryPolicy {
    pub fn new(initial: Duration, max: Duration) -> Self {
        let ceiling = ExponentialBackoff {
            current_interval: initial,
            initial_interval: initial,
            randomization_factor: 0.0,
            multiplier: 2.0,
            max_interval: max,
            max_elapsed_time: None,
            ..ExponentialBackoff::default()
        };
        RetryPolicy { ceiling, max }
    }

    /// The delay before the next attempt after `err`.
    pub fn next_delay(&mut self, err: Option<&ControlPlaneError>) -> Duration {
        if err.is_some_and(ControlPlaneError::is_auth) {
            return self.max;
        }
        let ceiling = self
            .ceiling
            .next_backoff()
            .unwrap_or(self.max)
            .min(self.max);
        let jittered =
            Duration::from_millis(rand::thread_rng().gen_range(0..=ceiling.as_millis() as u64));
        match err.and_then(ControlPlaneError::retry_after) {
            Some(ra) => jittered.max(ra),
            None => jittered,
        }
    }

    /// A call succeeded: the next failure starts from `initial` again.
    pub fn reset(&mut self) {
        self.ceiling.reset();
    }
}

/// When the next check-in may start and how long it may be held: the
/// Poller's plain logic.
#[derive(Debug, Clone)]
pub struct CheckinPacer {
    long_poll: bool,
    /// The server's long-poll hold, capped at the config's poll interval.
    hold: Duration,
    /// The period without long polling.
    interval: Duration,
    floor: Duration,
    cap: Duration,
    last_start: Option<Instant>,
}

impl CheckinPacer {
    pub fn new(config: &RuntimeConfig, startup: &StartupResponse) -> Self {
        let cap = config.poll_interval;
        CheckinPacer {
            long_poll: config.long_polling && startup.long_poll_ms > 0,
            hold: Duration::from_millis(startup.long_poll_ms).min(cap),
            interval: Duration::from_millis(startup.poll_interval_ms).min(cap),
            floor: config.min_checkin_gap,
            cap,
            last_start: None,
        }
    }

    /// The long-poll hold to ask the server for (zero without long polling).
    pub fn hold(&self) -> Duration {
        if self.long_poll {
            self.hold
        } else {
            Duration::ZERO
        }
    }

    /// The earliest start of the next check-in: as soon as possible with
    /// long polling (but never within `min_checkin_gap` of the last start),
    /// otherwise one poll interval after the last start.
    pub fn next_start(&self, now: Instant) -> Instant {
        match self.last_start {
            None => now,
            Some(t) => {
                let gap = if self.long_poll {
                    self.floor
                } else {
                    self.interval.max(self.floor)
                };
                now.max(t + gap)
            }
        }
    }

    pub fn started(&mut self, at: Instant) {
        self.last_start = Some(at);
    }

    /// A check-in answer's `pollIntervalMs`, within the config's cap.
    pub fn server_interval(&mut self, ms: Option<u64>) {
        if let Some(ms) = ms {
            self.interval = Duration::from_millis(ms).min(self.cap);
        }
    }
}

/// The Poller actor: a thin shell running the check-in loop.
pub struct Poller {
    shared: Arc<Shared>,
}

impl Poller {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Poller { shared }
    }
}

impl Actor for Poller {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.spawn(run(self.shared.clone()).into_actor(self));
    }
}

impl Handler<StopChild> for Poller {
    type Result = ();

    fn handle(&mut self, _: StopChild, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

fn note_failure(
    shared: &Shared,
    log: &Logger,
    what: &str,
    e: &ControlPlaneError,
    retry_in: Duration,
) {
    if e.is_auth() {
        error!(log, "the control plane refuses this runner's credentials; check the runner id and token in .rdrunner-creds (or RUNNER_RUNDECK_* variables), or whether the runner was disabled or deleted; retrying slowly";
            "call" => what, "error" => %e, "retry_in_ms" => retry_in.as_millis() as u64);
    } else {
        warn!(log, "control plane call failed"; "call" => what, "error" => %e,
            "retry_in_ms" => retry_in.as_millis() as u64);
    }
    shared.stats.update(|s| {
        s.last_error = Some(format!("{what}: {e}"));
        s.credentials_refused = e.is_auth();
    });
}

async fn bounded<T>(
    deadline: Duration,
    call: crate::control_plane::CallResult<T>,
) -> Result<T, ControlPlaneError> {
    match tokio::time::timeout(deadline, call).await {
        Ok(r) => r,
        Err(_) => Err(ControlPlaneError::Timeout(deadline)),
    }
}

async fn startup(shared: &Shared, log: &Logger, retry: &mut RetryPolicy) -> StartupResponse {
    let cfg = &shared.config;
    loop {
        let req = StartupRequest {
            hostname: cfg.hostname.clone(),
            version: cfg.version.clone(),
            pid: cfg.pid,
            max_running: cfg.max_running,
            tags: cfg.tags.clone(),
        };
        let res = if failed(&shared.fail_points, "poller::startup") {
            Err(ControlPlaneError::Transport(
                "fail point poller::startup".into(),
            ))
        } else {
            bounded(cfg.request_timeout, shared.control_plane.startup(req)).await
        };
        match res {
            Ok(resp) => {
                info!(log, "replica registered"; "replica" => &resp.replica_id,
                    "poll_interval_ms" => resp.poll_interval_ms, "long_poll_ms" => resp.long_poll_ms);
                retry.reset();
                shared.stats.update(|s| s.credentials_refused = false);
                let mut session = shared.session.lock().unwrap_or_else(|e| e.into_inner());
                session.replica_id = Some(resp.replica_id.clone());
                session.startup = Some(resp.clone());
                return resp;
            }
            Err(e) => {
                let delay = retry.next_delay(Some(&e)).max(cfg.min_checkin_gap);
                note_failure(shared, log, "startup", &e, delay);
                tokio::time::sleep(delay).await;
            }
        }
    }
}

async fn run(shared: Arc<Shared>) {
    let cfg = &shared.config;
    let log = shared.log.new(slog::o!("actor" => "poller"));
    let mut retry = RetryPolicy::new(cfg.backoff_initial, cfg.backoff_max);
    // A restarted Poller keeps the replica it registered.
    let session = shared.session();
    let startup_resp = match session.startup {
        Some(s) => s,
        None => startup(&shared, &log, &mut retry).await,
    };
    let mut replica_id = startup_resp.replica_id.clone();
    let mut pacer = CheckinPacer::new(cfg, &startup_resp);
    loop {
        let at = pacer.next_start(shared.clock.now());
        tokio::time::sleep_until(at.into()).await;
        let now = shared.clock.now();
        pacer.started(now);
        shared.stats.checkin_started(now);
        let (running, queued) = {
            let t = shared.table();
            (t.running_ids(), t.queued_count() as u32)
        };
        let req = CheckinRequest {
            replica_id: replica_id.clone(),
            running,
            queued,
            max_running: cfg.max_running,
            uptime_s: now.saturating_duration_since(shared.started).as_secs(),
            version: cfg.version.clone(),
        };
        let hold = pacer.hold();
        let res = if failed(&shared.fail_points, "poller::checkin") {
            Err(ControlPlaneError::Transport(
                "fail point poller::checkin".into(),
            ))
        } else {
            bounded(
                hold + cfg.request_timeout,
                shared.control_plane.checkin(req, hold),
            )
            .await
        };
        match res {
            Ok(resp) => {
                retry.reset();
                shared.stats.update(|s| s.credentials_refused = false);
                pacer.server_interval(resp.poll_interval_ms);
                for op_id in resp.cancel {
                    shared.inbox.push(RegistryCommand::Cancel(op_id));
                }
                let draining = shared.draining.load(Ordering::SeqCst);
                for op in resp.operations {
                    if draining {
                        debug!(log, "draining: offer left for another replica"; "op" => &op.id);
                        continue;
                    }
                    if !shared.table().offer(&op.id) {
                        debug!(log, "offer already known"; "op" => &op.id);
                        continue;
                    }
                    shared.refresh_counts();
                    // Claims run beside the check-in loop, each bounded by
                    // the request deadline.
                    actix_rt::spawn(claim(
                        shared.clone(),
                        log.clone(),
                        op.id,
                        replica_id.clone(),
                    ));
                }
            }
            Err(ControlPlaneError::Rejected {
                status: 404, code, ..
            }) if code == "unknown_replica" => {
                // The control plane forgot this replica (it restarted, or
                // declared the replica down): register again. Spooled
                // reports go out under the new replica id.
                warn!(log, "the control plane no longer knows this replica; registering again";
                    "replica" => &replica_id);
                let resp = startup(&shared, &log, &mut retry).await;
                replica_id = resp.replica_id.clone();
                pacer = CheckinPacer::new(cfg, &resp);
            }
            Err(e) => {
                let delay = retry.next_delay(Some(&e));
                note_failure(&shared, &log, "checkin", &e, delay);
                tokio::time::sleep(delay).await;
            }
        }
    }
}

async fn claim(shared: Arc<Shared>, log: Logger, op_id: String, replica_id: String) {
    claim_once(&shared, &log, &op_id, &replica_id).await;
    shared.refresh_counts();
}

/// Attempts of one claim. A claim whose answer was lost may have taken
/// effect on the server, which then never offers the operation again; a
/// repeated claim by the owner answers 200 (protocol v1), so retrying is
/// what recovers it.
const CLAIM_ATTEMPTS: u32 = 5;

/// Whether a failed claim may have failed on the way back, or not at all
/// on the server, so that asking again can help.
fn claim_retryable(e: &ControlPlaneError) -> bool {
    matches!(
        e,
        ControlPlaneError::Transport(_)
            | ControlPlaneError::Timeout(_)
            | ControlPlaneError::Server { .. }
            | ControlPlaneError::Throttled { .. }
            | ControlPlaneError::Protocol(_)
    )
}

async fn claim_once(shared: &Arc<Shared>, log: &Logger, op_id: &str, replica_id: &str) {
    let deadline = shared.config.request_timeout;
    let mut retry = RetryPolicy::new(shared.config.backoff_initial, shared.config.backoff_max);
    let mut attempt = 1;
    let res = loop {
        let call = async {
            if failed(&shared.fail_points, "poller::claim") {
                return Err(ControlPlaneError::Transport(
                    "fail point poller::claim".into(),
                ));
            }
            bounded(deadline, shared.control_plane.claim(op_id, replica_id)).await
        };
        let res = AssertUnwindSafe(call).catch_unwind().await;
        match &res {
            Ok(Err(e)) if attempt < CLAIM_ATTEMPTS && claim_retryable(e) => {
                let delay = retry.next_delay(Some(e));
                debug!(log, "claim failed; asking again"; "op" => op_id, "error" => %e,
                    "attempt" => attempt, "retry_in_ms" => delay.as_millis() as u64);
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            _ => break res,
        }
    };
    match res {
        Ok(Ok(ClaimOutcome::Claimed(op))) => {
            info!(log, "operation claimed"; "op" => op_id);
            shared.inbox.push(RegistryCommand::Claimed(op));
        }
        Ok(Ok(ClaimOutcome::Taken)) => {
            debug!(log, "another replica claimed the operation"; "op" => op_id);
            shared.table().claim_failed(op_id);
        }
        Ok(Ok(ClaimOutcome::Cancelled)) => {
            debug!(log, "the operation was cancelled before the claim"; "op" => op_id);
            shared.table().claim_failed(op_id);
        }
        Ok(Err(e)) => {
            warn!(log, "claim failed; the offer will come again"; "op" => op_id, "error" => %e);
            shared.stats.error(format!("claim {op_id}: {e}"));
            shared.table().claim_failed(op_id);
        }
        Err(p) => {
            let msg = crate::supervisor::panic_message(&*p);
            error!(log, "claim panicked; the offer will come again"; "op" => op_id, "panic" => &msg);
            shared.table().claim_failed(op_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn startup(poll: u64, long: u64) -> StartupResponse {
        StartupResponse {
            replica_id: "r".into(),
            poll_interval_ms: poll,
            long_poll_ms: long,
            report_interval_ms: 200,
            report_batch_max: 1000,
            lease_ms: 60_000,
        }
    }

    #[test]
    fn with_long_polling_the_next_check_in_follows_at_once_but_not_below_the_floor() {
        let cfg = RuntimeConfig::default();
        let mut p = CheckinPacer::new(&cfg, &startup(5000, 4500));
        assert_eq!(p.hold(), Duration::from_millis(4500));
        let t = Instant::now();
        assert_eq!(p.next_start(t), t);
        p.started(t);
        // A check-in that came back after 20 ms: wait for the 100 ms floor.
        assert_eq!(
            p.next_start(t + Duration::from_millis(20)),
            t + Duration::from_millis(100)
        );
        // One that was held 4.5 s: go at once.
        let later = t + Duration::from_millis(4500);
        assert_eq!(p.next_start(later), later);
    }

    #[test]
    fn without_long_polling_one_check_in_per_interval_capped_by_the_config() {
        let cfg = RuntimeConfig {
            long_polling: false,
            poll_interval: Duration::from_secs(2),
            ..RuntimeConfig::default()
        };
        let mut p = CheckinPacer::new(&cfg, &startup(5000, 4500));
        assert_eq!(p.hold(), Duration::ZERO);
        let t = Instant::now();
        p.started(t);
        assert_eq!(
            p.next_start(t + Duration::from_millis(10)),
            t + Duration::from_secs(2)
        );
        p.server_interval(Some(700));
        assert_eq!(p.next_start(t), t + Duration::from_millis(700));
        // A server's longPollMs of 0 turns long polling off too.
        let p = CheckinPacer::new(&RuntimeConfig::default(), &startup(300, 0));
        assert_eq!(p.hold(), Duration::ZERO);
    }

    #[test]
    fn retry_delays_are_jittered_below_a_doubling_capped_ceiling() {
        let mut r = RetryPolicy::new(Duration::from_millis(100), Duration::from_millis(800));
        let transport = ControlPlaneError::Transport("refused".into());
        let ceilings = [100, 200, 400, 800, 800, 800];
        for c in ceilings {
            let d = r.next_delay(Some(&transport));
            assert!(d <= Duration::from_millis(c), "{d:?} above {c} ms");
        }
        // Full jitter: across many draws, delays spread over the range.
        let draws: Vec<_> = (0..200).map(|_| r.next_delay(None)).collect();
        assert!(draws.iter().any(|d| *d < Duration::from_millis(200)));
        assert!(draws.iter().any(|d| *d > Duration::from_millis(600)));
        let throttled = ControlPlaneError::Throttled {
            status: 429,
            retry_after: Some(Duration::from_secs(3)),
        };
        assert!(r.next_delay(Some(&throttled)) >= Duration::from_secs(3));
        let auth = ControlPlaneError::Unauthorized {
            message: "bad token".into(),
        };
        assert_eq!(r.next_delay(Some(&auth)), Duration::from_millis(800));
        r.reset();
        assert!(r.next_delay(Some(&transport)) <= Duration::from_millis(100));
    }
}
