//! The runtime's counters: a snapshot of what the runner has done, for the
//! daemon's status output and for tests.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A snapshot of the runtime's counters (`RuntimeHandle::stats`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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
}

impl StatsCell {
    pub fn lock(&self) -> MutexGuard<'_, StatsInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn update(&self, f: impl FnOnce(&mut RuntimeStats)) {
        f(&mut self.lock().stats)
    }

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
}
