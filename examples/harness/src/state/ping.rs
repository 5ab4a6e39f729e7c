//! Pings: `POST /api/v1/runners/{id}/ping` asks the runner to answer on its
//! next check-in. The ping id goes out in check-in answers (`pings`), once
//! to each replica, and the first check-in that echoes it (`pongs`) answers
//! it. Kept in memory only, the latest [`PINGS_KEPT`] per runner.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rdrunner_actors::model::{ErrorCode, PINGS_MAX};

use super::ControlState;
use crate::admin_api::{PingCreated, PingState, PingStatus};
use crate::error::ApiError;

/// How long a ping waits for its answer unless configured otherwise
/// ([`ControlState::set_ping_timeout`]): the unknown threshold, so a runner
/// that checks in at all answers well within it (a ping ends a held
/// check-in; without long polling the runner's poll interval, 5 s by
/// default, is the wait).
pub const DEFAULT_PING_TIMEOUT: Duration = Duration::from_secs(30);

/// Pings kept per runner; a newer one drops the oldest.
pub const PINGS_KEPT: usize = 64;

/// One ping of a runner.
#[derive(Debug, Clone)]
pub(super) struct PingRecord {
    id: String,
    created: Instant,
    /// Replicas whose check-in answer carried it.
    delivered_to: BTreeSet<String>,
    /// The replica that echoed it first, and the round trip.
    answer: Option<(String, Duration)>,
}

impl PingRecord {
    fn state(&self, timeout: Duration, now: Instant) -> PingState {
        if self.answer.is_some() {
            PingState::Answered
        } else if now.saturating_duration_since(self.created) >= timeout {
            PingState::TimedOut
        } else {
            PingState::Pending
        }
    }
}

impl ControlState {
    /// How long a ping waits for its answer before it is `timedOut`.
    pub fn set_ping_timeout(&mut self, timeout: Duration) {
        self.ping_timeout = timeout;
    }

    /// `POST /runners/{id}/ping`: a ping with id `ping_id`, created `now`.
    /// The runner's held check-ins are woken to carry it.
    pub fn ping(
        &mut self,
        runner_id: &str,
        ping_id: String,
        now: Instant,
    ) -> Result<PingCreated, ApiError> {
        self.runner(runner_id)?;
        let pings = self.pings.entry(runner_id.to_owned()).or_default();
        while pings.len() >= PINGS_KEPT {
            pings.pop_front();
        }
        pings.push_back(PingRecord {
            id: ping_id.clone(),
            created: now,
            delivered_to: BTreeSet::new(),
            answer: None,
        });
        self.wake(runner_id);
        Ok(PingCreated { ping_id })
    }

    /// `GET /runners/{id}/ping/{pingId}` at `now`.
    pub fn ping_status(
        &self,
        runner_id: &str,
        ping_id: &str,
        now: Instant,
    ) -> Result<PingStatus, ApiError> {
        self.runner(runner_id)?;
        let ping = self
            .pings
            .get(runner_id)
            .and_then(|p| p.iter().find(|p| p.id == ping_id))
            .ok_or_else(|| {
                ApiError::not_found(
                    ErrorCode::UnknownPing,
                    format!(
                        "no ping `{ping_id}` of runner `{runner_id}` (the latest {PINGS_KEPT} are kept); POST /api/v1/runners/{runner_id}/ping for a new one"
                    ),
                )
            })?;
        Ok(PingStatus {
            ping_id: ping.id.clone(),
            state: ping.state(self.ping_timeout, now),
            round_trip_ms: ping
                .answer
                .as_ref()
                .map(|(_, rtt)| u64::try_from(rtt.as_millis()).unwrap_or(u64::MAX)),
            replica_id: ping.answer.as_ref().map(|(r, _)| r.clone()),
        })
    }

    /// The pending pings of `runner_id` that `replica_id` was not given
    /// yet, at most [`PINGS_MAX`].
    pub(super) fn pings_for(&self, runner_id: &str, replica_id: &str, now: Instant) -> Vec<String> {
        self.pings
            .get(runner_id)
            .into_iter()
            .flatten()
            .filter(|p| p.state(self.ping_timeout, now) == PingState::Pending)
            .filter(|p| !p.delivered_to.contains(replica_id))
            .take(PINGS_MAX)
            .map(|p| p.id.clone())
            .collect()
    }

    /// Notes that `replica_id`'s check-in answer carries `ids`.
    pub(super) fn delivered_pings(&mut self, runner_id: &str, replica_id: &str, ids: &[String]) {
        if ids.is_empty() {
            return;
        }
        for p in self.pings.get_mut(runner_id).into_iter().flatten() {
            if ids.contains(&p.id) {
                p.delivered_to.insert(replica_id.to_owned());
            }
        }
    }

    /// A check-in of `replica_id` that arrived at `now` echoed `pongs`: the
    /// pending pings among them are answered. Unknown ids, and pings
    /// answered or timed out already, are ignored.
    pub(super) fn answer_pings(
        &mut self,
        runner_id: &str,
        replica_id: &str,
        pongs: &[String],
        now: Instant,
    ) {
        if pongs.is_empty() {
            return;
        }
        let timeout = self.ping_timeout;
        for p in self.pings.get_mut(runner_id).into_iter().flatten() {
            if p.state(timeout, now) == PingState::Pending && pongs.contains(&p.id) {
                p.answer = Some((
                    replica_id.to_owned(),
                    now.saturating_duration_since(p.created),
                ));
            }
        }
    }

    /// Forgets the pings of a deleted runner.
    pub(super) fn drop_pings(&mut self, runner_id: &str) {
        self.pings.remove(runner_id);
    }
}
