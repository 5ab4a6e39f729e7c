//! The settings of the runtime as the daemon runs it: `[runner]` (identity,
//! capacity, cadence, what the control plane may run where: allowedNodes
//! and localExecutor, drain) and `[supervision]` (restart
//! intensity, backoff). Where the runtime has the setting, the default is
//! the runtime's own (`RuntimeConfig::default()` in `rdrunner-actors`), so
//! that it is written once; what only the daemon has is defaulted here.

use std::time::Duration;

use rdrunner_actors::filter::NodeFilter;
use rdrunner_actors::{RestartIntensity, RuntimeConfig};

/// How the configuration spells "every node" in `allowedNodes`.
pub const ALL_NODES: &str = ".*";

/// `[runner]`.
#[derive(Debug, Clone, PartialEq)]
pub struct RunnerSettings {
    /// Hostname reported at startup; `None` = the machine's hostname.
    pub hostname: Option<String>,
    pub tags: Vec<String>,
    /// Operations running at once; the rest wait in a queue.
    pub max_running: u32,
    pub long_polling: bool,
    pub poll_interval: Duration,
    pub min_checkin_gap: Duration,
    pub report_interval: Duration,
    pub report_batch_max: u32,
    /// The `allowedNodes` filter; `None` when it allows every node.
    pub allowed_nodes: Option<AllowedNodes>,
    /// Whether nodes with `executor: local` may run steps on the runner's
    /// own host, as the runner's user. Off by default: it hands the control
    /// plane that user's rights on this host.
    pub local_executor: bool,
    /// Whether SSH steps run detached from their connection and survive
    /// its drop (the SSH executor dials the node again and follows on).
    /// Off: they run attached, and a dropped connection fails them.
    pub reattach: bool,
    /// How long a drain lets running operations finish.
    pub drain_timeout: Duration,
    pub kill_grace: Duration,
    /// Accept a credentials file readable by group or others.
    pub allow_insecure_creds_file: bool,
}

impl Default for RunnerSettings {
    fn default() -> Self {
        let runtime = RuntimeConfig::default();
        RunnerSettings {
            hostname: None,
            tags: runtime.tags,
            max_running: runtime.max_running,
            long_polling: runtime.long_polling,
            poll_interval: runtime.poll_interval,
            min_checkin_gap: runtime.min_checkin_gap,
            report_interval: runtime.report_interval,
            report_batch_max: runtime.report_batch_max,
            allowed_nodes: None,
            local_executor: false,
            reattach: true,
            drain_timeout: Duration::from_secs(30),
            kill_grace: runtime.kill_grace,
            allow_insecure_creds_file: false,
        }
    }
}

impl RunnerSettings {
    /// The parsed `allowedNodes` filter; `None` when every node is allowed.
    pub fn allowed_nodes_filter(&self) -> Option<NodeFilter> {
        self.allowed_nodes.as_ref().map(|a| a.0.clone())
    }
}

/// A parsed `allowedNodes` filter. Two are equal when their text is: the
/// text is what the filter was parsed from.
#[derive(Debug, Clone)]
pub struct AllowedNodes(pub NodeFilter);

impl AllowedNodes {
    /// The filter's text, as configured.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl PartialEq for AllowedNodes {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

/// `[supervision]`.
#[derive(Debug, Clone, PartialEq)]
pub struct SupervisionSettings {
    /// More restarts than this within its window end the runner (exit 5).
    pub restart_intensity: RestartIntensity,
    /// Longest wait between retries of a failing control plane call.
    pub backoff_max: Duration,
}

impl Default for SupervisionSettings {
    fn default() -> Self {
        let runtime = RuntimeConfig::default();
        SupervisionSettings {
            restart_intensity: runtime.restart_intensity,
            backoff_max: runtime.backoff_max,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_restart_intensity_default_is_the_documented_one() {
        // runner.example.toml, the README and ARCHITECTURE say 5 within 60 s.
        let s = SupervisionSettings::default();
        assert_eq!(s.restart_intensity.max_restarts, 5);
        assert_eq!(s.restart_intensity.within, Duration::from_secs(60));
    }
}
