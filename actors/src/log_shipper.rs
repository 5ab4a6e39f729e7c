//! The LogShipper: ships spooled reports in batches to `POST /reports`,
//! resending from the last ack after any failure or gap, so that every
//! report arrives exactly once and in order.
//!
//! Producers hand reports to the report intake (a store the runtime owns),
//! which numbers and spools them at once; this actor only takes batches
//! from it and applies the answers. What an answer calls for (shrink the
//! batches, find the refused operation, retry) is decided by the plain
//! `BatchSizer` and `RetryPolicy`.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use slog::{error, warn, Logger};

use crate::batch::{BatchSizer, ShipDecision};
use crate::control_plane::{ControlPlane, ControlPlaneError};
use crate::failpoints::{fail_point, failed, FailPoints};
use crate::inbox::{RegistryCommand, RegistryInbox};
use crate::intake::ReportIntake;
use crate::retry::RetryPolicy;
use crate::session::SessionStore;
use crate::settings::RuntimeConfig;
use crate::stats::StatsCell;
use crate::supervisor::StopChild;

/// What the LogShipper touches, each by name.
pub(crate) struct ShipperParts {
    pub config: Arc<RuntimeConfig>,
    pub control_plane: Arc<dyn ControlPlane>,
    /// Batches come from here; acks go back here.
    pub intake: Arc<ReportIntake>,
    /// Cancels that come with an answer go here, for the registry.
    pub inbox: Arc<RegistryInbox>,
    /// The replica id reports go under, and the report cadence.
    pub session: Arc<SessionStore>,
    pub stats: StatsCell,
    pub log: Logger,
    pub fail_points: FailPoints,
}

/// The LogShipper actor: a thin shell running the ship loop over the intake.
pub struct LogShipper {
    parts: Arc<ShipperParts>,
}

impl LogShipper {
    pub(crate) fn new(parts: Arc<ShipperParts>) -> Self {
        LogShipper { parts }
    }
}

impl Actor for LogShipper {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.spawn(ship(self.parts.clone()).into_actor(self));
    }
}

impl Handler<StopChild> for LogShipper {
    type Result = ();

    fn handle(&mut self, _: StopChild, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

async fn ship(p: Arc<ShipperParts>) {
    let cfg = &p.config;
    let log = p.log.new(slog::o!("actor" => "log_shipper"));
    let mut retry = RetryPolicy::new(cfg.backoff_initial, cfg.backoff_max);
    let mut cursor = 0usize;
    let mut sizer = BatchSizer::default();
    loop {
        let (interval, cadence_max) = p.session.report_cadence(cfg);
        let batch_max = sizer.batch_max(cadence_max);
        let Some(replica_id) = p.session.replica_id() else {
            idle(&p.intake, interval).await;
            continue;
        };
        cursor = cursor.wrapping_add(1);
        let batch = match p.intake.next_batch(batch_max, cursor, sizer.single_op()) {
            Ok(b) => b,
            Err(e) => {
                error!(log, "could not read the spool"; "error" => %e);
                p.stats.error(e.to_string());
                tokio::time::sleep(retry.next_delay(None)).await;
                continue;
            }
        };
        if batch.is_empty() {
            idle(&p.intake, interval).await;
            continue;
        }
        let n = batch.len();
        let mut ops_in_batch: Vec<String> = batch.iter().map(|r| r.op_id.clone()).collect();
        ops_in_batch.dedup();
        p.stats.update(|s| s.reports_sent += n as u64);
        let answer = if failed(&p.fail_points, "log_shipper::send") {
            Err(ControlPlaneError::Transport(
                "fail point log_shipper::send".into(),
            ))
        } else {
            let call = p.control_plane.reports_encoded(replica_id, batch);
            match tokio::time::timeout(cfg.request_timeout, call).await {
                Ok(r) => r,
                Err(_) => Err(ControlPlaneError::Timeout(cfg.request_timeout)),
            }
        };
        let resp = match answer {
            Ok(resp) => resp,
            Err(e) => {
                p.stats.control_plane_error("reports", e.kind());
                match sizer.on_answer(Err(&e), n, &ops_in_batch) {
                    ShipDecision::Shrink { from, to } => {
                        warn!(log, "the control plane found a batch of reports too large; sending smaller ones";
                            "batch" => from, "now" => to);
                    }
                    ShipDecision::DropOperation(op_id) => {
                        let dropped = p.intake.drop_operation(&op_id).unwrap_or(0);
                        let why = match &e {
                            ControlPlaneError::Rejected {
                                status,
                                code,
                                message,
                            } => format!("{status} {code}: {message}"),
                            other => other.to_string(),
                        };
                        let text = format!(
                            "the control plane refuses the reports of operation {op_id} ({why}); {dropped} unsent report(s) of it were dropped"
                        );
                        error!(log, "{}", text);
                        p.stats.error(text);
                    }
                    ShipDecision::OneOperationAtATime => {
                        warn!(log, "the control plane refused a batch of reports; sending one operation at a time to find out which";
                            "error" => %e);
                    }
                    ShipDecision::Sent | ShipDecision::Retry => {
                        let delay = retry.next_delay(Some(&e));
                        warn!(log, "POST /reports failed; resending from the last ack";
                            "error" => %e, "retry_in_ms" => delay.as_millis() as u64);
                        p.stats.update(|s| {
                            s.last_error = Some(e.to_string());
                            if e.is_auth() {
                                s.credentials_refused = true;
                            }
                        });
                        tokio::time::sleep(delay).await;
                    }
                }
                continue;
            }
        };
        sizer.on_answer(Ok(()), n, &ops_in_batch);
        retry.reset();
        fail_point!(p.fail_points, "log_shipper::acked");
        if let Err(e) = p.intake.apply_acks(&resp.acks) {
            error!(log, "could not record acks in the spool"; "error" => %e);
            p.stats.error(e.to_string());
        }
        for op_id in resp.cancel {
            p.inbox.push(RegistryCommand::Cancel(op_id));
        }
        if n < batch_max {
            linger(&p.intake, interval).await;
        }
    }
}

/// Waits for the next batch when nothing is waiting: until a report
/// arrives, a batch fills up, or the report interval passes. A line printed
/// on an idle runner is thus sent at once rather than up to an interval
/// later.
async fn idle(intake: &ReportIntake, interval: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(interval) => {}
        _ = intake.woken() => {}
        _ = intake.arrival() => {}
    }
}

/// The pause after a batch that was not full, so that output flowing line
/// by line is sent in batches (at most one per `linger_time`) rather than
/// one request per line; a full batch ends it at once.
async fn linger(intake: &ReportIntake, interval: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(linger_time(interval)) => {}
        _ = intake.woken() => {}
    }
}

/// A tenth of the report interval (20 ms for the usual 200 ms), at least
/// 2 ms: how long reports wait to be batched while output flows. Every
/// report is sent within this time plus one round trip, well within the
/// interval.
pub fn linger_time(interval: Duration) -> Duration {
    (interval / 10).max(Duration::from_millis(2))
}
