//! Request and response bodies of the runner API (`/api/runner/v1`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Operation, Report};

/// `POST /startup`: registers one running process (a replica) of the runner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartupRequest {
    pub hostname: String,
    pub version: String,
    pub pid: u32,
    pub max_running: u32,
    #[serde(default)]
    pub tags: Vec<String>,
}

/// The server-chosen cadence; the runner obeys it within its own limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartupResponse {
    pub replica_id: String,
    #[serde(default = "defaults::poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// How long the server holds a check-in open; 0 disables long polling.
    #[serde(default = "defaults::long_poll_ms")]
    pub long_poll_ms: u64,
    #[serde(default = "defaults::report_interval_ms")]
    pub report_interval_ms: u64,
    #[serde(default = "defaults::report_batch_max")]
    pub report_batch_max: u32,
    #[serde(default = "defaults::lease_ms")]
    pub lease_ms: u64,
}

/// Defaults of protocol v1 for fields an older server leaves out.
pub mod defaults {
    pub fn poll_interval_ms() -> u64 {
        5000
    }
    pub fn long_poll_ms() -> u64 {
        4500
    }
    pub fn report_interval_ms() -> u64 {
        200
    }
    pub fn report_batch_max() -> u32 {
        1000
    }
    pub fn lease_ms() -> u64 {
        60_000
    }
}

/// `POST /checkin?waitMs=N`: the heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckinRequest {
    pub replica_id: String,
    /// Ids of the operations this replica is running.
    #[serde(default)]
    pub running: Vec<String>,
    /// Operations claimed and waiting for a free slot.
    #[serde(default)]
    pub queued: u32,
    pub max_running: u32,
    #[serde(default)]
    pub uptime_s: u64,
    #[serde(default)]
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckinResponse {
    /// Offers, leased to this replica for `leaseMs`.
    #[serde(default)]
    pub operations: Vec<Operation>,
    /// Operations to abort.
    #[serde(default)]
    pub cancel: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_interval_ms: Option<u64>,
}

/// `POST /operations/{opId}/claim`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimRequest {
    pub replica_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimResponse {
    pub operation: Operation,
}

/// `POST /reports`: at most `reportBatchMax` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportsRequest {
    pub replica_id: String,
    pub reports: Vec<Report>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportsResponse {
    /// Per operation: the highest contiguous seq stored.
    #[serde(default)]
    pub acks: BTreeMap<String, u64>,
    #[serde(default)]
    pub cancel: Vec<String>,
}

/// `POST /resume`: a new replica of the runner takes over the operations a
/// replica that died may still own (docs/protocol.md, "Resume").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResumeRequest {
    /// The new replica, as registered by `POST /startup`.
    pub replica_id: String,
    /// The replica that died.
    pub previous_replica_id: String,
    /// Operations the previous replica claimed or was about to claim.
    pub operations: Vec<String>,
    /// Asks for every operation answered `owned` in full, as its claim gave
    /// it, so that the new replica can carry on with its steps. Absent
    /// (false) in requests of runners that report such operations failed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub with_operations: bool,
}

/// The answer to `POST /resume`: one state per operation named.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResumeResponse {
    #[serde(default)]
    pub operations: BTreeMap<String, ResumeState>,
    /// With `withOperations`: the operations answered `owned`, in full. One
    /// that is missing here (the control plane no longer holds its secure
    /// values, or does not support it) cannot be carried on with.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resumed: BTreeMap<String, Operation>,
}

/// What became of one operation named in `POST /resume`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResumeState {
    /// The operation is now the new replica's: report it (terminal) or
    /// carry on with it.
    Owned,
    /// Not this runner's to resume: claimed by another replica, never
    /// claimed, already ended, or already resumed by another replica.
    Released,
    /// No such operation for this runner (or a state this side does not
    /// know, from a newer control plane).
    #[serde(other)]
    Unknown,
}

/// Most operations one `POST /resume` may name.
pub const RESUME_MAX_OPERATIONS: usize = 1000;

/// `POST /shutdown`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShutdownRequest {
    pub replica_id: String,
    pub reason: String,
}

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Machine code, e.g. `taken`, `unauthorized`, `bad_request`.
    pub error: String,
    /// Human text.
    pub message: String,
}
