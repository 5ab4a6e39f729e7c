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
    /// The ping ids of the previous check-in answer, echoed back: the
    /// control plane's ping (`POST /api/v1/runners/{id}/ping`) is answered.
    /// At most [`PINGS_MAX`]; left out when empty, so a control plane that
    /// never pings sees the v1 body it always saw.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pongs: Vec<String>,
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
    /// Pings to answer: the replica echoes these ids in its next check-in's
    /// `pongs`, at once. Left out when empty; a runner that does not know
    /// the field ignores it, and its pings time out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pings: Vec<String>,
}

/// The most ping ids a check-in answer carries and a check-in echoes; a
/// runner drops those past it, and ids longer than [`PING_ID_MAX_LEN`].
pub const PINGS_MAX: usize = 16;

/// The longest ping id a runner echoes (the reference control plane's are
/// 21 bytes).
pub const PING_ID_MAX_LEN: usize = 64;

/// The pongs a runner sends for a check-in answer's `pings`: at most
/// [`PINGS_MAX`] of them, none longer than [`PING_ID_MAX_LEN`], each once.
/// What a control plane sends is echoed only within these bounds.
pub fn pongs_for(pings: &[String]) -> Vec<String> {
    let mut pongs: Vec<String> = Vec::new();
    for id in pings {
        if pongs.len() == PINGS_MAX {
            break;
        }
        if !id.is_empty() && id.len() <= PING_ID_MAX_LEN && !pongs.contains(id) {
            pongs.push(id.clone());
        }
    }
    pongs
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pongs_echo_pings_within_bounds_each_once() {
        let long = "p".repeat(PING_ID_MAX_LEN + 1);
        let pings: Vec<String> = ["a", "b", "a", "", long.as_str()]
            .iter()
            .map(|s| s.to_string())
            .chain((0..40).map(|i| format!("ping-{i}")))
            .collect();
        let pongs = pongs_for(&pings);
        assert_eq!(pongs.len(), PINGS_MAX);
        assert_eq!(&pongs[..3], ["a", "b", "ping-0"]);
        assert!(pongs_for(&[]).is_empty());
    }

    #[test]
    fn pings_and_pongs_are_left_out_when_empty() {
        let answer = CheckinResponse::default();
        let json = serde_json::to_value(&answer).unwrap();
        assert!(json.get("pings").is_none(), "{json}");
        let old: CheckinRequest =
            serde_json::from_str(r#"{"replicaId":"r","maxRunning":1}"#).unwrap();
        assert!(old.pongs.is_empty());
        assert!(serde_json::to_value(&old).unwrap().get("pongs").is_none());
    }
}
