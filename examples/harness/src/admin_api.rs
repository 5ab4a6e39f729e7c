//! Bodies of the admin API (`/api/v1`, protocol v1 §4) and of the
//! observation endpoints, shared by the server and [`crate::AdminClient`].

use std::collections::BTreeMap;

use rdrunner_actors::model::{Dispatch, Node, Report, Step};
use serde::{Deserialize, Serialize};

/// `POST /runners`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateRunner {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Project name → node filter.
    #[serde(default)]
    pub projects: BTreeMap<String, String>,
}

/// The answer to `POST /runners` and `POST /runners/{id}/regenerate-credentials`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunnerCredentials {
    pub runner_id: String,
    /// The secret; shown only in this answer (the server keeps a hash).
    pub token: String,
    /// The text of `.rdrunner-creds`.
    pub credentials: String,
}

/// Health of a runner or of one replica (protocol.md §5, "Runner status").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunnerStatus {
    /// Never checked in.
    New,
    /// Checked in recently, and takes work.
    Healthy,
    /// At `maxRunning` with work waiting for it. Earlier versions said
    /// `busy` for "at `maxRunning`"; it is read as this.
    #[serde(alias = "busy")]
    Unhealthy,
    /// No check-in for the unknown threshold (30 s by default).
    Unknown,
    /// No check-in for the down threshold (120 s by default), or shut down.
    Down,
}

impl RunnerStatus {
    /// Every status, in the order of the protocol's table.
    pub const ALL: [RunnerStatus; 5] = [
        RunnerStatus::New,
        RunnerStatus::Healthy,
        RunnerStatus::Unhealthy,
        RunnerStatus::Unknown,
        RunnerStatus::Down,
    ];

    /// The status as JSON names it.
    pub fn as_str(self) -> &'static str {
        match self {
            RunnerStatus::New => "new",
            RunnerStatus::Healthy => "healthy",
            RunnerStatus::Unhealthy => "unhealthy",
            RunnerStatus::Unknown => "unknown",
            RunnerStatus::Down => "down",
        }
    }
}

/// One runner as `GET /runners` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunnerInfo {
    pub id: String,
    pub name: String,
    pub description: String,
    pub tags: Vec<String>,
    pub projects: BTreeMap<String, String>,
    /// Derived from the replicas': the best of them (healthy, unhealthy,
    /// new, unknown, down); `new` when none ever checked in.
    pub status: RunnerStatus,
    /// Why the status is not `healthy`, for people; absent when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    /// What an operator should look at, for people (e.g. the live replicas
    /// run different versions); empty when all is well.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// RFC 3339 time of the last check-in of any replica (kept when the
    /// replicas are pruned).
    pub last_checkin: Option<String>,
    pub replicas: Vec<ReplicaInfo>,
}

/// One running process of a runner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaInfo {
    pub id: String,
    pub hostname: String,
    /// The address the control plane saw the replica's last startup or
    /// check-in come from: the TCP peer, so behind a proxy or a TLS front
    /// the proxy's. `None` when not known.
    #[serde(default)]
    pub ip: Option<String>,
    pub version: String,
    pub pid: u32,
    pub max_running: u32,
    pub status: RunnerStatus,
    /// Why the status is not `healthy`, for people; absent when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    pub last_checkin: Option<String>,
    /// RFC 3339 time the replica's process started (from the uptime its
    /// first check-in gave; its registration until then).
    #[serde(default)]
    pub started_at: Option<String>,
    /// Seconds from `startedAt` to now, or to its last sign of life once
    /// it is down.
    #[serde(default)]
    pub uptime_secs: Option<u64>,
    /// How many operations the replica said it was running at its last check-in.
    pub running: u32,
    /// How many operations it had claimed and not started for want of a
    /// slot, at its last check-in.
    #[serde(default)]
    pub queued: u32,
}

/// The answer to `POST /runners/{id}/ping`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PingCreated {
    /// Ask `GET /runners/{id}/ping/{pingId}` for the answer.
    pub ping_id: String,
}

/// Where a ping stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PingState {
    /// Not answered yet, and not timed out.
    Pending,
    /// A replica echoed it.
    Answered,
    /// No replica echoed it within the ping timeout (30 s by default); an
    /// answer after that does not change it.
    TimedOut,
}

/// `GET /runners/{id}/ping/{pingId}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PingStatus {
    pub ping_id: String,
    pub state: PingState,
    /// From the ping's creation to the arrival of the check-in that echoed
    /// it, in milliseconds (answered only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round_trip_ms: Option<u64>,
    /// The replica that answered (answered only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_id: Option<String>,
}

/// `PUT /runners/{id}/projects/{project}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectAssignment {
    pub node_filter: String,
}

/// `POST /projects/{project}/executions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubmitExecution {
    pub steps: Vec<Step>,
    #[serde(default = "every_node")]
    pub node_filter: String,
    #[serde(default)]
    pub dispatch: Dispatch,
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    #[serde(default)]
    pub secure_options: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_timeout_ms: Option<u64>,
    /// Job name shown to the steps as `${job.name}`; empty for ad hoc.
    #[serde(default)]
    pub job: String,
    /// User shown to the steps as `${job.username}`.
    #[serde(default)]
    pub user: String,
}

fn every_node() -> String {
    ".*".to_owned()
}

impl SubmitExecution {
    /// An execution of `steps` on every node matching `node_filter`, with
    /// the default dispatch and no options.
    pub fn new(steps: Vec<Step>, node_filter: impl Into<String>) -> Self {
        SubmitExecution {
            steps,
            node_filter: node_filter.into(),
            dispatch: Dispatch::default(),
            options: BTreeMap::new(),
            secure_options: Vec::new(),
            timeout_ms: None,
            step_timeout_ms: None,
            job: String::new(),
            user: String::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionCreated {
    pub execution_id: u64,
}

/// State of an execution, an operation or a node within an execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    /// Not claimed by a runner yet.
    Queued,
    Running,
    Succeeded,
    Failed,
    Aborted,
    Timedout,
    /// The replica running it went down; the outcome is unknown.
    Lost,
}

impl RunState {
    /// Every state, in the order of the protocol's table.
    pub const ALL: [RunState; 7] = [
        RunState::Queued,
        RunState::Running,
        RunState::Succeeded,
        RunState::Failed,
        RunState::Aborted,
        RunState::Timedout,
        RunState::Lost,
    ];

    /// The state as JSON names it.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Queued => "queued",
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::Aborted => "aborted",
            RunState::Timedout => "timedout",
            RunState::Lost => "lost",
        }
    }

    pub fn is_terminal(self) -> bool {
        !matches!(self, RunState::Queued | RunState::Running)
    }
}

impl From<rdrunner_actors::model::State> for RunState {
    fn from(s: rdrunner_actors::model::State) -> Self {
        use rdrunner_actors::model::State;
        match s {
            State::Running => RunState::Running,
            State::Succeeded => RunState::Succeeded,
            State::Failed => RunState::Failed,
            State::Aborted => RunState::Aborted,
            State::Timedout => RunState::Timedout,
        }
    }
}

/// `GET /executions/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionStatus {
    pub id: u64,
    pub project: String,
    pub state: RunState,
    pub operations: Vec<OperationStatus>,
    pub nodes: BTreeMap<String, NodeStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationStatus {
    pub id: String,
    pub runner: String,
    pub state: RunState,
    /// The replica that claimed it, once claimed.
    pub replica: Option<String>,
    pub nodes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    pub state: RunState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The runner the node was given to; `None` when no runner covers it.
    pub runner: Option<String>,
    /// When the runner reported the node's first state (RFC 3339, the
    /// runner's clock); absent before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// When the runner reported the node's end; absent until it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
}

/// `GET /executions/{id}/output?after=n`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutputPage {
    pub entries: Vec<OutputEntry>,
    /// The `after` to ask with next time.
    pub next: u64,
    /// The execution is terminal and every entry has been given.
    pub complete: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutputEntry {
    /// 1-based position in the execution's output.
    pub n: u64,
    pub ts: String,
    pub node: String,
    pub step: u32,
    pub stream: rdrunner_actors::model::Stream,
    pub text: String,
}

/// `GET /observe/runners/{id}`: what the harness saw of one runner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunnerObservation {
    pub runner_id: String,
    pub replicas: Vec<ReplicaObservation>,
    pub operations: Vec<OperationObservation>,
    /// Sums over `operations`.
    pub reports_stored: u64,
    pub duplicates_dropped: u64,
    pub gaps_refused: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaObservation {
    pub replica_id: String,
    /// Arrival of each check-in, in milliseconds since the harness started
    /// (the last 10 000 are kept).
    pub checkins_ms: Vec<u64>,
    pub shut_down: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationObservation {
    pub op_id: String,
    pub execution_id: u64,
    pub state: RunState,
    pub reports_stored: u64,
    pub duplicates_dropped: u64,
    pub gaps_refused: u64,
    /// How many times the operation was offered in a check-in answer.
    pub offers: u64,
}

/// `GET /observe/operations/{opId}/reports`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredReports {
    pub op_id: String,
    pub reports: Vec<Report>,
}

/// `PUT /projects/{project}/nodes` takes, and `GET` gives, this list.
pub type NodeInventory = Vec<Node>;
