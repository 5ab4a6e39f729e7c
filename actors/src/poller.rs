//! The Poller: registers the replica (`POST /startup`), then checks in
//! continuously (long polling, at the server's cadence within the config's
//! limits), claims each new offer and hands claimed operations and cancels
//! to the registry's inbox without waiting for it.
//!
//! It runs on an Arbiter (thread) of its own and learns what is running from
//! the operation store, never by asking a worker, so no step work can stall
//! the check-in cycle. Its decisions (pacing, retry delays, registering
//! again) are the plain values of `pacing` and `retry`.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_util::FutureExt;
use slog::{debug, error, info, warn, Logger};

use crate::clock::Clock;
use crate::control_plane::{ClaimOutcome, ControlPlane, ControlPlaneError};
use crate::failpoints::{failed, FailPoints};
use crate::inbox::{RegistryCommand, RegistryInbox};
use crate::intake::{ReportIntake, RESTARTED_MESSAGE};
use crate::model::{
    pongs_for, CheckinRequest, OpReport, ReportBody, ResumeRequest, StartupRequest,
    StartupResponse, State,
};
use crate::operations::OperationStore;
use crate::pacing::{checkin_recovery, CheckinPacer, CheckinRecovery};
use crate::resume::{
    leftovers, resume_action, resume_calls, ResumeAction, ResumeAnswer, ResumePlans,
    NOT_GIVEN_BACK_MESSAGE,
};
use crate::retry::RetryPolicy;
use crate::session::SessionStore;
use crate::settings::RuntimeConfig;
use crate::stats::StatsCell;
use crate::supervisor::{panic_message, StopChild};

/// What the Poller touches, each by name: the stores it reads and writes
/// (operations, the registry's inbox, the session) and the seams it calls.
pub(crate) struct PollerParts {
    pub config: Arc<RuntimeConfig>,
    pub control_plane: Arc<dyn ControlPlane>,
    /// Offers are recorded here; `running` and `queued` are read from here.
    pub operations: Arc<OperationStore>,
    /// Claimed operations and cancels go here, for the registry.
    pub inbox: Arc<RegistryInbox>,
    /// The replica id and cadence, written at each registration.
    pub session: Arc<SessionStore>,
    /// The spool's claim journal and replica id, through the intake; a
    /// restarted operation's terminal report goes here too.
    pub intake: Arc<ReportIntake>,
    /// Set by a drain: claim nothing more.
    pub draining: Arc<AtomicBool>,
    /// Where the steps of the operations carried on with after a restart
    /// stood, for their StepWorkers.
    pub plans: Arc<ResumePlans>,
    pub stats: StatsCell,
    pub clock: Arc<dyn Clock>,
    pub log: Logger,
    pub fail_points: FailPoints,
    /// When the runtime started (for the check-in's uptime).
    pub started: Instant,
}

/// The Poller actor: a thin shell running the check-in loop.
pub struct Poller {
    parts: Arc<PollerParts>,
}

impl Poller {
    pub(crate) fn new(parts: Arc<PollerParts>) -> Self {
        Poller { parts }
    }
}

impl Actor for Poller {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.spawn(run(self.parts.clone()).into_actor(self));
    }
}

impl Handler<StopChild> for Poller {
    type Result = ();

    fn handle(&mut self, _: StopChild, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

fn note_failure(
    p: &PollerParts,
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
    p.stats.control_plane_error(what, e.kind());
    p.stats.update(|s| {
        s.last_error = Some(format!("{what}: {e}"));
        s.credentials_refused = e.is_auth();
        if what == "startup" || what == "checkin" {
            s.checkin_error = Some(format!("{what}: {e}"));
        }
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

async fn startup(p: &PollerParts, log: &Logger, retry: &mut RetryPolicy) -> StartupResponse {
    let cfg = &p.config;
    loop {
        let req = StartupRequest {
            hostname: cfg.hostname.clone(),
            version: cfg.version.clone(),
            pid: cfg.pid,
            max_running: cfg.max_running,
            tags: cfg.tags.clone(),
        };
        let res = if failed(&p.fail_points, "poller::startup") {
            Err(ControlPlaneError::Transport(
                "fail point poller::startup".into(),
            ))
        } else {
            bounded(cfg.request_timeout, p.control_plane.startup(req)).await
        };
        match res {
            Ok(resp) => {
                info!(log, "replica registered"; "replica" => &resp.replica_id,
                    "poll_interval_ms" => resp.poll_interval_ms, "long_poll_ms" => resp.long_poll_ms);
                retry.reset();
                p.stats.update(|s| s.credentials_refused = false);
                p.session.registered(resp.clone());
                if let Err(e) = p.intake.record_replica(&resp.replica_id) {
                    error!(log, "could not record the replica id in the spool; a restart will not be able to name this replica"; "error" => %e);
                    p.stats.error(e.to_string());
                }
                return resp;
            }
            Err(e) => {
                let delay = retry.next_delay(Some(&e)).max(cfg.min_checkin_gap);
                note_failure(p, log, "startup", &e, delay);
                tokio::time::sleep(delay).await;
            }
        }
    }
}

async fn run(p: Arc<PollerParts>) {
    let cfg = &p.config;
    let log = p.log.new(slog::o!("actor" => "poller"));
    let mut retry = RetryPolicy::new(cfg.backoff_initial, cfg.backoff_max);
    // A restarted Poller keeps the replica it registered.
    let startup_resp = match p.session.startup() {
        Some(s) => s,
        None => {
            let recorded = p.intake.recorded_replica().unwrap_or_else(|e| {
                warn!(log, "could not read the previous replica id from the spool"; "error" => %e);
                None
            });
            let resp = startup(&p, &log, &mut retry).await;
            // Before the first check-in, so that no offer of this replica
            // mixes with what the previous process left.
            resume(&p, &log, recorded.as_deref(), &resp.replica_id).await;
            resp
        }
    };
    let mut replica_id = startup_resp.replica_id.clone();
    let mut pacer = CheckinPacer::new(cfg, &startup_resp);
    // Pings of the last answer, echoed by the next check-in; kept until a
    // check-in carrying them gets through.
    let mut pongs: Vec<String> = Vec::new();
    loop {
        p.stats.update(|s| s.checkin_interval = pacer.cycle());
        let at = pacer.next_start(p.clock.now());
        tokio::time::sleep_until(at.into()).await;
        let now = p.clock.now();
        pacer.started(now);
        p.stats.checkin_started(now);
        let (running, queued) = {
            let t = p.operations.lock();
            (t.running_ids(), t.queued_count() as u32)
        };
        let req = CheckinRequest {
            replica_id: replica_id.clone(),
            running,
            queued,
            max_running: cfg.max_running,
            uptime_s: now.saturating_duration_since(p.started).as_secs(),
            version: cfg.version.clone(),
            pongs: pongs.clone(),
        };
        let hold = pacer.hold();
        let res = if failed(&p.fail_points, "poller::checkin") {
            Err(ControlPlaneError::Transport(
                "fail point poller::checkin".into(),
            ))
        } else {
            bounded(
                hold + cfg.request_timeout,
                p.control_plane.checkin(req, hold),
            )
            .await
        };
        match res {
            Ok(resp) => {
                let end = p.clock.now();
                p.stats
                    .checkin_succeeded(end, p.clock.wall(), end.saturating_duration_since(now));
                retry.reset();
                p.stats.update(|s| s.credentials_refused = false);
                pacer.server_interval(resp.poll_interval_ms);
                pongs = pongs_for(&resp.pings);
                if !pongs.is_empty() {
                    debug!(log, "pinged by the control plane; answering in the next check-in";
                        "pings" => pongs.len());
                    pacer.answer_soon();
                }
                for op_id in resp.cancel {
                    p.inbox.push(RegistryCommand::Cancel(op_id));
                }
                let draining = p.draining.load(Ordering::SeqCst);
                for op in resp.operations {
                    if draining {
                        debug!(log, "draining: offer left for another replica"; "op" => &op.id);
                        continue;
                    }
                    if !p.operations.lock().offer(&op.id) {
                        debug!(log, "offer already known"; "op" => &op.id);
                        continue;
                    }
                    p.operations.refresh_counts();
                    // Claims run beside the check-in loop, each bounded by
                    // the request deadline.
                    actix_rt::spawn(claim(p.clone(), log.clone(), op.id, replica_id.clone()));
                }
            }
            Err(e) => match checkin_recovery(&e, &mut retry) {
                CheckinRecovery::Register => {
                    p.stats.control_plane_error("checkin", e.kind());
                    warn!(log, "the control plane no longer knows this replica; registering again";
                        "replica" => &replica_id);
                    let resp = startup(&p, &log, &mut retry).await;
                    replica_id = resp.replica_id.clone();
                    pacer = CheckinPacer::new(cfg, &resp);
                }
                CheckinRecovery::Retry(delay) => {
                    note_failure(&p, &log, "checkin", &e, delay);
                    tokio::time::sleep(delay).await;
                }
            },
        }
    }
}

/// Attempts of one `POST /resume` before its operations are left journaled
/// for the next start.
const RESUME_ATTEMPTS: u32 = 8;

/// Settles every claim the journal holds from a previous process: asks the
/// control plane which of them this replica now owns, carries on with
/// those it gives back (when the runtime does) or reports them terminal,
/// drops the rest from the journal. Whatever the previous process left
/// unfinished in the spool and nothing carried on with is then reported
/// failed.
async fn resume(p: &PollerParts, log: &Logger, recorded: Option<&str>, replica_id: &str) {
    settle(p, log, recorded, replica_id).await;
    for op in p.intake.end_held(RESTARTED_MESSAGE) {
        warn!(log, "operation left running by a previous process reported failed"; "op" => &op);
    }
}

async fn settle(p: &PollerParts, log: &Logger, recorded: Option<&str>, replica_id: &str) {
    let (journal, spooled) = match p.intake.journal() {
        Ok(j) => j,
        Err(e) => {
            error!(log, "could not read the claim journal; operations of the previous process are left to the control plane's down-timeout"; "error" => %e);
            p.stats.error(e.to_string());
            return;
        }
    };
    let left = leftovers(&journal, &spooled, recorded, replica_id);
    let calls = resume_calls(&left, recorded, replica_id);
    if calls.is_empty() {
        return;
    }
    let carry_on = p.config.carry_on_after_restart;
    info!(log, "settling the operations a previous process left"; "operations" => left.len());
    let mut unsupported_logged = false;
    for call in calls {
        let answer = resume_call(p, log, replica_id, &call).await;
        let Some(answer) = answer else {
            continue;
        };
        if answer == ResumeAnswer::Unsupported && !unsupported_logged {
            unsupported_logged = true;
            warn!(log, "the control plane does not support POST /resume; operations of the previous process with a known claim are reported failed, the others are left to its down-timeout");
        }
        for l in left
            .iter()
            .filter(|l| l.replica_id == call.previous_replica_id)
            .filter(|l| call.operations.contains(&l.op_id))
        {
            match resume_action(l, &answer, carry_on) {
                ResumeAction::CarryOn => {
                    let ResumeAnswer::States(_, resumed) = &answer else {
                        continue;
                    };
                    let Some(op) = resumed.get(&l.op_id) else {
                        continue;
                    };
                    carry_on_with(p, log, l, op.clone(), replica_id);
                }
                ResumeAction::ReportRestarted => {
                    let message = match &answer {
                        ResumeAnswer::States(..) if carry_on => NOT_GIVEN_BACK_MESSAGE,
                        _ => RESTARTED_MESSAGE,
                    };
                    p.intake.carry_on(&l.op_id);
                    // Refused (and harmless) when the spool already holds
                    // its terminal report: the recovery at open wrote it.
                    let pushed = p.intake.push(
                        &l.op_id,
                        ReportBody::Op(OpReport {
                            state: State::Failed,
                            message: Some(message.into()),
                        }),
                    );
                    warn!(log, "operation of the previous process reported failed"; "op" => &l.op_id,
                        "previous_replica" => &l.replica_id, "newly_reported" => pushed);
                }
                ResumeAction::Release => {
                    info!(log, "operation of the previous process is not this runner's; dropped"; "op" => &l.op_id,
                        "previous_replica" => &l.replica_id);
                    if let Err(e) = p.intake.journal_release(&l.op_id) {
                        p.stats.error(e.to_string());
                    }
                }
                ResumeAction::Keep => {
                    warn!(log, "the control plane did not answer for an operation of the previous process; kept for the next start"; "op" => &l.op_id);
                }
            }
        }
    }
}

/// Hands an operation the control plane gave back to the registry, with
/// where its node steps stood, so that finished steps are not run again
/// and running ones are re-attached to.
fn carry_on_with(
    p: &PollerParts,
    log: &Logger,
    l: &crate::resume::Leftover,
    op: crate::model::Operation,
    replica_id: &str,
) {
    let progress = match p.intake.progress(&l.op_id) {
        Ok(progress) => progress,
        Err(e) => {
            error!(log, "could not read where the operation's steps stood; reported failed"; "op" => &l.op_id, "error" => %e);
            p.stats.error(e.to_string());
            p.intake.carry_on(&l.op_id);
            p.intake.push(
                &l.op_id,
                ReportBody::Op(OpReport {
                    state: State::Failed,
                    message: Some(format!(
                        "{RESTARTED_MESSAGE} (the spool could not say where its steps stood: {e})"
                    )),
                }),
            );
            return;
        }
    };
    // The claim is this replica's now: a crash from here on names it.
    if let Err(e) = p.intake.journal_claimed(&l.op_id, replica_id) {
        warn!(log, "could not journal the resumed claim"; "op" => &l.op_id, "error" => %e);
    }
    info!(log, "carrying on with an operation of the previous process"; "op" => &l.op_id,
        "previous_replica" => &l.replica_id, "node_steps_seen" => progress.values().count());
    p.plans.insert(&l.op_id, progress);
    p.intake.carry_on(&l.op_id);
    p.inbox.push(RegistryCommand::Claimed(Box::new(op)));
}

/// One `POST /resume`, asked again on failures that may pass; `None` when
/// it never got a usable answer.
async fn resume_call(
    p: &PollerParts,
    log: &Logger,
    replica_id: &str,
    call: &crate::resume::ResumeCall,
) -> Option<ResumeAnswer> {
    let mut retry = RetryPolicy::new(p.config.backoff_initial, p.config.backoff_max);
    for attempt in 1..=RESUME_ATTEMPTS {
        let req = ResumeRequest {
            replica_id: replica_id.to_owned(),
            previous_replica_id: call.previous_replica_id.clone(),
            operations: call.operations.clone(),
            with_operations: p.config.carry_on_after_restart,
        };
        match bounded(p.config.request_timeout, p.control_plane.resume(req)).await {
            Ok(resp) => return Some(ResumeAnswer::States(resp.operations, resp.resumed)),
            Err(e) if e.is_unsupported_route() => return Some(ResumeAnswer::Unsupported),
            Err(e @ ControlPlaneError::Rejected { .. }) => {
                p.stats.control_plane_error("resume", e.kind());
                error!(log, "the control plane refused POST /resume; the operations of the previous replica are left to its down-timeout";
                    "previous_replica" => &call.previous_replica_id, "error" => %e);
                p.stats.error(format!("resume: {e}"));
                return None;
            }
            Err(e) => {
                let delay = retry.next_delay(Some(&e));
                note_failure(p, log, "resume", &e, delay);
                if attempt < RESUME_ATTEMPTS {
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
    None
}

async fn claim(p: Arc<PollerParts>, log: Logger, op_id: String, replica_id: String) {
    claim_once(&p, &log, &op_id, &replica_id).await;
    p.operations.refresh_counts();
}

/// Drops a claim that did not take effect from the journal.
fn release(p: &PollerParts, log: &Logger, op_id: &str) {
    if let Err(e) = p.intake.journal_release(op_id) {
        warn!(log, "could not release the claim in the journal; the next start will ask the control plane about it"; "op" => op_id, "error" => %e);
    }
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

async fn claim_once(p: &PollerParts, log: &Logger, op_id: &str, replica_id: &str) {
    // The intent is durable before the request leaves: a process that dies
    // after the server's answer still names the operation at its restart.
    if let Err(e) = p.intake.journal_claim(op_id, replica_id) {
        error!(log, "could not journal the claim; the offer is not claimed"; "op" => op_id, "error" => %e);
        p.stats.error(format!("claim {op_id}: {e}"));
        p.operations.lock().claim_failed(op_id);
        return;
    }
    let deadline = p.config.request_timeout;
    let mut retry = RetryPolicy::new(p.config.backoff_initial, p.config.backoff_max);
    let mut attempt = 1;
    let res = loop {
        let call = async {
            if failed(&p.fail_points, "poller::claim") {
                return Err(ControlPlaneError::Transport(
                    "fail point poller::claim".into(),
                ));
            }
            bounded(deadline, p.control_plane.claim(op_id, replica_id)).await
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
            p.stats.update(|s| s.operations_claimed += 1);
            if failed(&p.fail_points, "poller::claimed") {
                // Stands for a process killed between the server's answer
                // and anything recorded of it (the chaos and daemon tests
                // arm `abort` here).
                warn!(log, "fail point poller::claimed: the claim's answer is dropped"; "op" => op_id);
                return;
            }
            if let Err(e) = p.intake.journal_claimed(op_id, replica_id) {
                // The intent is journaled: a restart still settles it.
                warn!(log, "could not journal the claim's answer"; "op" => op_id, "error" => %e);
            }
            p.inbox.push(RegistryCommand::Claimed(op));
        }
        Ok(Ok(ClaimOutcome::Taken)) => {
            debug!(log, "another replica claimed the operation"; "op" => op_id);
            release(p, log, op_id);
            p.operations.lock().claim_failed(op_id);
        }
        Ok(Ok(ClaimOutcome::Cancelled)) => {
            debug!(log, "the operation was cancelled before the claim"; "op" => op_id);
            release(p, log, op_id);
            p.operations.lock().claim_failed(op_id);
        }
        Ok(Err(e @ ControlPlaneError::Rejected { .. })) => {
            // 404 / 409 / another 4xx: the claim did not take effect.
            warn!(log, "claim refused; the offer will come again if it is still this runner's"; "op" => op_id, "error" => %e);
            p.stats.control_plane_error("claim", e.kind());
            p.stats.error(format!("claim {op_id}: {e}"));
            release(p, log, op_id);
            p.operations.lock().claim_failed(op_id);
        }
        Ok(Err(e)) => {
            warn!(log, "claim failed; the offer will come again"; "op" => op_id, "error" => %e);
            p.stats.control_plane_error("claim", e.kind());
            p.stats.error(format!("claim {op_id}: {e}"));
            p.operations.lock().claim_failed(op_id);
        }
        Err(panic) => {
            let msg = panic_message(&*panic);
            error!(log, "claim panicked; the offer will come again"; "op" => op_id, "panic" => &msg);
            p.operations.lock().claim_failed(op_id);
        }
    }
}
