//! The replica's session with the control plane: the replica id and the
//! cadence the startup answer gave. A named store the runtime owns: the
//! Poller writes it on every (re-)registration; the LogShipper reads the
//! replica id its reports go under and the report cadence; a restarted
//! Poller keeps the replica it registered.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::model::StartupResponse;
use crate::settings::RuntimeConfig;

/// The startup answer in force, if the replica is registered.
#[derive(Debug, Default)]
pub struct SessionStore {
    startup: Mutex<Option<StartupResponse>>,
}

impl SessionStore {
    fn lock(&self) -> MutexGuard<'_, Option<StartupResponse>> {
        self.startup.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The replica is registered (again) with this answer.
    pub fn registered(&self, resp: StartupResponse) {
        *self.lock() = Some(resp);
    }

    pub fn startup(&self) -> Option<StartupResponse> {
        self.lock().clone()
    }

    pub fn replica_id(&self) -> Option<String> {
        self.lock().as_ref().map(|s| s.replica_id.clone())
    }

    /// The report cadence: the server's, capped by the config.
    pub fn report_cadence(&self, config: &RuntimeConfig) -> (Duration, usize) {
        report_cadence(config, self.lock().as_ref())
    }
}

/// The report interval and batch maximum: the server's values, capped by
/// the config's; the config's alone before the replica is registered.
pub fn report_cadence(
    config: &RuntimeConfig,
    startup: Option<&StartupResponse>,
) -> (Duration, usize) {
    let (mut interval, mut batch) = (config.report_interval, config.report_batch_max.max(1));
    if let Some(st) = startup {
        interval = interval.min(Duration::from_millis(st.report_interval_ms));
        batch = batch.min(st.report_batch_max.max(1));
    }
    (interval.max(Duration::from_millis(5)), batch as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cadence_is_the_servers_within_the_configs_caps() {
        let cfg = RuntimeConfig::default();
        assert_eq!(
            report_cadence(&cfg, None),
            (Duration::from_millis(200), 1000)
        );
        let st = StartupResponse {
            replica_id: "r".into(),
            poll_interval_ms: 5000,
            long_poll_ms: 4500,
            report_interval_ms: 50,
            report_batch_max: 5000,
            lease_ms: 60_000,
        };
        assert_eq!(
            report_cadence(&cfg, Some(&st)),
            (Duration::from_millis(50), 1000)
        );
        let tiny = StartupResponse {
            report_interval_ms: 0,
            report_batch_max: 0,
            ..st
        };
        assert_eq!(
            report_cadence(&cfg, Some(&tiny)),
            (Duration::from_millis(5), 1)
        );
        let s = SessionStore::default();
        assert_eq!(s.replica_id(), None);
        s.registered(StartupResponse {
            replica_id: "r2".into(),
            ..tiny
        });
        assert_eq!(s.replica_id().as_deref(), Some("r2"));
    }
}
