//! The runtime's settings, with their defaults written once: what the
//! embedding API's `RuntimeBuilder::config` takes and the daemon's
//! configuration maps onto.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::model::Node;
use crate::supervisor::RestartIntensity;

/// Decides whether the runner may run steps on a node (`allowedNodes`).
pub type NodePredicate = Arc<dyn Fn(&Node) -> bool + Send + Sync>;

/// The runtime's settings. The control plane's cadence (startup answer) is
/// obeyed within these limits:
/// - check-in: with long polling, the server's `longPollMs` hold, capped at
///   `poll_interval`, and the next check-in as soon as one returns but never
///   sooner than `min_checkin_gap` after the previous one started; without
///   long polling (`long_polling = false` or `longPollMs = 0`), one check-in
///   per `pollIntervalMs`, capped at `poll_interval`;
/// - reports: a report produced while nothing waits is sent at once; while
///   output flows, batches go at most every tenth of
///   `min(reportIntervalMs, report_interval)` (20 ms for 200 ms), and at
///   once when `min(reportBatchMax, report_batch_max)` reports wait.
#[derive(Clone)]
pub struct RuntimeConfig {
    pub hostname: String,
    pub version: String,
    pub pid: u32,
    pub tags: Vec<String>,
    /// Operations running at once; the rest wait in a FIFO queue.
    pub max_running: u32,
    pub long_polling: bool,
    /// Check-in period without long polling, and the cap on the server's value.
    pub poll_interval: Duration,
    /// The floor between the starts of two check-ins.
    pub min_checkin_gap: Duration,
    /// The cap on the server's `reportIntervalMs`.
    pub report_interval: Duration,
    /// The cap on the server's `reportBatchMax`.
    pub report_batch_max: u32,
    /// TERM→KILL grace passed to executors in every `StepRequest`.
    pub kill_grace: Duration,
    /// `allowedNodes`: `None` = every node is allowed.
    pub allowed_nodes: Option<NodePredicate>,
    pub restart_intensity: RestartIntensity,
    /// The cap on retry delays; 401/403 are retried at this slow pace.
    pub backoff_max: Duration,
    /// The first retry delay ceiling (doubles per failure up to `backoff_max`;
    /// the delay is drawn uniformly below the ceiling: full jitter).
    pub backoff_initial: Duration,
    /// The deadline of every control plane request (a check-in gets its
    /// long-poll hold on top).
    pub request_timeout: Duration,
    /// How long a drain waits for the remaining reports to be acked.
    pub flush_timeout: Duration,
    /// Carry on with the operations a previous process left running: the
    /// control plane gives them back (`POST /resume` with
    /// `withOperations`), finished node steps are not run again, and the
    /// executors are asked to re-attach to the steps that were running
    /// (`StepRequest::reattach`). Off: such operations are reported failed.
    pub carry_on_after_restart: bool,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            hostname: "localhost".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            pid: std::process::id(),
            tags: Vec::new(),
            max_running: 50,
            long_polling: true,
            poll_interval: Duration::from_secs(5),
            min_checkin_gap: Duration::from_millis(100),
            report_interval: Duration::from_millis(200),
            report_batch_max: 1000,
            kill_grace: Duration::from_secs(5),
            allowed_nodes: None,
            restart_intensity: RestartIntensity::default(),
            backoff_max: Duration::from_secs(30),
            backoff_initial: Duration::from_millis(100),
            request_timeout: Duration::from_secs(30),
            flush_timeout: Duration::from_secs(10),
            carry_on_after_restart: false,
        }
    }
}

impl fmt::Debug for RuntimeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuntimeConfig")
            .field("hostname", &self.hostname)
            .field("version", &self.version)
            .field("max_running", &self.max_running)
            .field("long_polling", &self.long_polling)
            .field("poll_interval", &self.poll_interval)
            .field("allowed_nodes", &self.allowed_nodes.as_ref().map(|_| ".."))
            .finish_non_exhaustive()
    }
}
