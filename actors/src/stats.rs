//! The runtime's counters: a snapshot of what the runner has done, for the
//! daemon's status output, its metrics endpoint, an embedding host's own
//! publication and tests.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use crate::figures::{ExecutorFigures, Histogram, CHECKIN_BUCKETS};

/// A snapshot of the runtime's counters (`RuntimeHandle::stats`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeStats {
    /// The replica id the control plane gave at startup.
    pub replica_id: Option<String>,
    /// Check-ins started (successful or not).
    pub checkins: u64,
    /// Longest time between the starts of two consecutive check-ins.
    pub max_checkin_gap: Duration,
    /// Operations whose node steps are running.
    pub running: u32,
    /// Operations claimed and waiting for a free slot.
    pub queued: u32,
    /// Reports numbered and appended to the spool.
    pub reports_spooled: u64,
    /// Reports put in a `POST /reports` request (resends included).
    pub reports_sent: u64,
    /// Reports the control plane acknowledged.
    pub reports_acked: u64,
    /// Starts per supervised child name (first start included); dynamic
    /// children such as `step_worker[op-1]` count under their kind
    /// (`step_worker`).
    pub starts: BTreeMap<String, u64>,
    /// Restarts per supervised child name.
    pub restarts: BTreeMap<String, u64>,
    /// Child exits seen by a supervisor, any reason.
    pub exits: u64,
    /// Times a supervisor gave up because of the restart intensity.
    pub escalations: u64,
    /// The last error met (control plane, spool...), as a user reads it.
    pub last_error: Option<String>,
    /// Whether the control plane refuses the runner's credentials (401/403)
    /// right now.
    pub credentials_refused: bool,
    /// Time since the runtime started.
    pub uptime: Duration,
    /// Operations this replica claimed (the control plane answered the
    /// claim with the operation).
    pub operations_claimed: u64,
    /// Operations ended on this replica, by outcome (`succeeded`, `failed`,
    /// `aborted`, `timedout`...).
    pub operations_finished: BTreeMap<String, u64>,
    /// Node steps being executed right now, across operations.
    pub node_steps_running: u32,
    /// Durations of the check-ins that got an answer (a held check-in
    /// counts its hold).
    pub checkin_duration: Histogram,
    /// Wall time of the last successful check-in.
    pub last_checkin_success: Option<SystemTime>,
    /// Time since the last successful check-in ended.
    pub last_checkin_success_age: Option<Duration>,
    /// The time one check-in cycle takes when all is well (the long-poll
    /// hold, or the poll interval), within the config's floor.
    pub checkin_interval: Duration,
    /// Why the last startup or check-in failed, when none succeeded since.
    pub checkin_error: Option<String>,
    /// Failed control plane calls, by call (`startup`, `checkin`, `claim`,
    /// `reports`, `resume`) and kind (`ControlPlaneError::kind`).
    pub control_plane_errors: BTreeMap<(String, String), u64>,
    /// Reports spooled and not acknowledged yet.
    pub reports_pending: u64,
    /// Age of the oldest report not acknowledged yet (for reports a
    /// previous process left, since this process started); within 1 s.
    pub report_oldest_unacked_age: Option<Duration>,
    /// Bytes of reports spooled (their JSON encoding).
    pub report_bytes: u64,
    /// Supervised children running right now, per name (dynamic children
    /// under their kind, as `starts`).
    pub children_running: BTreeMap<String, u64>,
    /// What each executor measured of its own work, by executor kind
    /// (`ssh`, `local`), for those that keep figures.
    pub executors: BTreeMap<String, ExecutorFigures>,
}

impl Default for RuntimeStats {
    fn default() -> Self {
        RuntimeStats {
            replica_id: None,
            checkins: 0,
            max_checkin_gap: Duration::ZERO,
            running: 0,
            queued: 0,
            reports_spooled: 0,
            reports_sent: 0,
            reports_acked: 0,
            starts: BTreeMap::new(),
            restarts: BTreeMap::new(),
            exits: 0,
            escalations: 0,
            last_error: None,
            credentials_refused: false,
            uptime: Duration::ZERO,
            operations_claimed: 0,
            operations_finished: BTreeMap::new(),
            node_steps_running: 0,
            checkin_duration: Histogram::new(CHECKIN_BUCKETS),
            last_checkin_success: None,
            last_checkin_success_age: None,
            checkin_interval: Duration::ZERO,
            checkin_error: None,
            control_plane_errors: BTreeMap::new(),
            reports_pending: 0,
            report_oldest_unacked_age: None,
            report_bytes: 0,
            children_running: BTreeMap::new(),
            executors: BTreeMap::new(),
        }
    }
}

/// The live counters, shared by every actor.
#[derive(Debug, Clone, Default)]
pub(crate) struct StatsCell {
    inner: Arc<Mutex<StatsInner>>,
}

#[derive(Debug, Default)]
pub(crate) struct StatsInner {
    pub stats: RuntimeStats,
    /// Start of the last check-in: kept here, not in the Poller, so that the
    /// gap across a Poller restart is measured too.
    pub last_checkin_start: Option<Instant>,
    /// End of the last successful check-in.
    pub last_checkin_success: Option<Instant>,
}

impl StatsCell {
    pub fn lock(&self) -> MutexGuard<'_, StatsInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn update(&self, f: impl FnOnce(&mut RuntimeStats)) {
        f(&mut self.lock().stats)
    }

    #[cfg(test)]
    pub fn snapshot(&self) -> RuntimeStats {
        self.lock().stats.clone()
    }

    /// Counts a check-in starting at `now` and tracks the longest gap.
    pub fn checkin_started(&self, now: Instant) {
        let mut g = self.lock();
        if let Some(prev) = g.last_checkin_start {
            let gap = now.saturating_duration_since(prev);
            if gap > g.stats.max_checkin_gap {
                g.stats.max_checkin_gap = gap;
            }
        }
        g.last_checkin_start = Some(now);
        g.stats.checkins += 1;
    }

    pub fn error(&self, message: String) {
        self.update(|s| s.last_error = Some(message));
    }

    /// A check-in got an answer at `now` (`wall` on the wall clock) after
    /// `took`.
    pub fn checkin_succeeded(&self, now: Instant, wall: SystemTime, took: Duration) {
        let mut g = self.lock();
        g.last_checkin_success = Some(now);
        g.stats.last_checkin_success = Some(wall);
        g.stats.checkin_error = None;
        g.stats.checkin_duration.observe(took);
    }

    /// A call to the control plane failed; `call` names the route.
    pub fn control_plane_error(&self, call: &str, kind: &str) {
        self.update(|s| {
            *s.control_plane_errors
                .entry((call.to_owned(), kind.to_owned()))
                .or_default() += 1;
        });
    }

    /// The stats as of `now`: the ages are computed from it.
    pub fn snapshot_at(&self, now: Instant, started: Instant) -> RuntimeStats {
        let g = self.lock();
        let mut s = g.stats.clone();
        s.uptime = now.saturating_duration_since(started);
        s.last_checkin_success_age = g
            .last_checkin_success
            .map(|t| now.saturating_duration_since(t));
        s
    }
}

/// Counts one node step as running for as long as it lives (a panic in the
/// executor included).
pub(crate) struct NodeStepGuard {
    stats: StatsCell,
}

impl NodeStepGuard {
    pub fn new(stats: &StatsCell) -> Self {
        stats.update(|s| s.node_steps_running += 1);
        NodeStepGuard {
            stats: stats.clone(),
        }
    }
}

impl Drop for NodeStepGuard {
    fn drop(&mut self) {
        self.stats
            .update(|s| s.node_steps_running = s.node_steps_running.saturating_sub(1));
    }
}
