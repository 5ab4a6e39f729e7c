//! The control plane as a plain state machine: runners and their replicas,
//! project nodes, executions split into operations, offers and leases, and
//! the per-operation report stores. No HTTP here; every call takes `now` so
//! the rules (leases, down thresholds, seq handling) are unit-tested directly.
//!
//! Names and other one-line text from the admin API are refused when they
//! hold a control character (they end up in the credentials text and in
//! what people read). Secure option values are kept in memory only: the
//! state file holds their names and a marker.

use rdrunner_actors::model::ErrorCode;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdrunner_actors::Histogram;

use rdrunner_actors::filter::NodeFilter;
use rdrunner_actors::model::{
    first_control, rfc3339, CheckinRequest, CheckinResponse, ExecutionInfo, Node, Operation,
    Report, ReportBody, ReportsRequest, ReportsResponse, ResumeRequest, ResumeResponse,
    ResumeState, ShutdownRequest, StartupRequest, StartupResponse, State,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::admin_api::*;
use crate::error::ApiError;

mod ping;
mod status;

pub use ping::{DEFAULT_PING_TIMEOUT, PINGS_KEPT};
pub use status::{Census, PrunedReplica, DEFAULT_PRUNE_DOWN_REPLICAS_AFTER};

/// The most check-in instants kept per replica for observation.
const CHECKINS_KEPT: usize = 10_000;

/// Upper bounds of the report latency buckets (from a report's `ts` to its
/// storage): a report waits up to the runner's report interval (200 ms by
/// default) in its spool, longer while the control plane is out of reach.
pub const REPORT_LATENCY_BUCKETS: &[Duration] = &[
    Duration::from_millis(5),
    Duration::from_millis(10),
    Duration::from_millis(25),
    Duration::from_millis(50),
    Duration::from_millis(100),
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_millis(2500),
    Duration::from_secs(5),
    Duration::from_secs(10),
    Duration::from_secs(30),
    Duration::from_secs(60),
    Duration::from_secs(300),
];

/// Replicas kept per runner unless configured otherwise
/// ([`ControlState::set_max_replicas`]).
pub const DEFAULT_MAX_REPLICAS: usize = 16;

/// What the state file holds in place of a secure option's value.
pub const SECURE_VALUE_NOT_KEPT: &str = "[SECURE: kept in memory only]";

/// Why an operation with secure options fails when, after a restart of the
/// harness, it would have to be handed to a runner again.
pub const SECURE_VALUES_LOST: &str = "the control plane restarted before a runner received the operation; its secure option values are kept in memory only, never in the state file, so they are gone: submit the execution again";

/// The cadence `POST /startup` hands out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cadence {
    pub poll_interval_ms: u64,
    pub long_poll_ms: u64,
    pub report_interval_ms: u64,
    pub report_batch_max: u32,
    pub lease_ms: u64,
}

impl Default for Cadence {
    fn default() -> Self {
        Cadence {
            poll_interval_ms: 5000,
            long_poll_ms: 4500,
            report_interval_ms: 200,
            report_batch_max: 1000,
            lease_ms: 60_000,
        }
    }
}

/// When a silent replica counts as `unknown`, then `down`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    pub unknown_after: Duration,
    pub down_after: Duration,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            unknown_after: Duration::from_secs(30),
            down_after: Duration::from_secs(120),
        }
    }
}

/// SHA-256 of a runner token; the only form in which tokens are kept.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Compares without an early exit, so timing does not tell how much matched.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

fn ts_of_unix_ms(ms: u64) -> String {
    rfc3339(UNIX_EPOCH + Duration::from_millis(ms))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RunnerRecord {
    id: String,
    name: String,
    description: String,
    tags: Vec<String>,
    projects: BTreeMap<String, String>,
    token_hash: [u8; 32],
    replicas: BTreeMap<String, ReplicaRecord>,
    /// The last check-in of any replica, kept when replicas are pruned: a
    /// runner without replicas that once checked in is down, not new.
    #[serde(default)]
    last_checkin_unix_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ReplicaRecord {
    id: String,
    hostname: String,
    version: String,
    pid: u32,
    max_running: u32,
    started_unix_ms: u64,
    last_checkin_unix_ms: Option<u64>,
    running: u32,
    queued: u32,
    shut_down: bool,
    /// The TCP peer of its last startup or check-in.
    #[serde(default)]
    ip: Option<String>,
    /// When its process started: its first check-in's arrival less the
    /// uptime it gave. `None` before that (its registration stands in).
    #[serde(default)]
    process_started_unix_ms: Option<u64>,
    /// Monotonic twin of the start (process, else registration), for the uptime.
    #[serde(skip)]
    started_at: Option<Instant>,
    /// Monotonic twin of `last_checkin_unix_ms` (or of startup), for the thresholds.
    #[serde(skip)]
    last_seen: Option<Instant>,
    #[serde(skip)]
    checkins: Vec<Instant>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct NodeProgress {
    state: State,
    step: u32,
    exit_code: Option<i32>,
    message: Option<String>,
    /// Report time of the node's first state report, and of the one that
    /// ended it: the node's duration, as the runner measured it.
    #[serde(default)]
    started_at: Option<String>,
    #[serde(default)]
    ended_at: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct OperationRecord {
    /// Written to the state file without the values of its secure options.
    #[serde(serialize_with = "operation_without_secure_values")]
    operation: Operation,
    /// Restored from the state file, so the secure option values are
    /// markers: the operation must never be handed out again.
    #[serde(skip)]
    secure_values_lost: bool,
    runner: String,
    execution: u64,
    claimed_by: Option<String>,
    /// Offered to this replica until the instant; not persisted (an offer
    /// does not survive a restart, the operation is simply offered again).
    #[serde(skip)]
    offer: Option<(String, Instant)>,
    cancelled_unclaimed: bool,
    cancel_requested: bool,
    /// Replicas a cancel was already given to in a check-in answer, so a
    /// pending cancel ends a long poll only once.
    #[serde(skip)]
    cancel_delivered: BTreeSet<String>,
    lost: Option<String>,
    terminal: Option<(State, Option<String>)>,
    reports: Vec<Report>,
    nodes: BTreeMap<String, NodeProgress>,
    duplicates: u64,
    gaps: u64,
    offers: u64,
}

/// The operation with every secure option's value replaced by
/// [`SECURE_VALUE_NOT_KEPT`]; the state file never holds a secure value.
fn operation_without_secure_values<S: serde::Serializer>(
    op: &Operation,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    if op.secure_options.is_empty() {
        return op.serialize(serializer);
    }
    let mut op = op.clone();
    for name in &op.secure_options {
        if let Some(value) = op.options.get_mut(name) {
            *value = SECURE_VALUE_NOT_KEPT.to_owned();
        }
    }
    op.serialize(serializer)
}

/// Refuses `text` if it holds a control character, naming `field`: such a
/// character could add a line to the credentials text or turn around what
/// people read. The value itself is not repeated.
fn one_line(field: &str, text: &str) -> Result<(), ApiError> {
    match first_control(text) {
        None => Ok(()),
        Some(c) => Err(ApiError::new(
            422,
            ErrorCode::ControlCharacter,
            format!(
                "`{field}` holds the control character {c}; names, tags, descriptions, projects, jobs and users are one line of text without control or bidirectional characters"
            ),
        )),
    }
}

impl OperationRecord {
    fn state(&self) -> RunState {
        if let Some((s, _)) = &self.terminal {
            (*s).into()
        } else if self.cancelled_unclaimed {
            RunState::Aborted
        } else if self.lost.is_some() {
            RunState::Lost
        } else if self.claimed_by.is_some() {
            RunState::Running
        } else {
            RunState::Queued
        }
    }

    fn message(&self) -> Option<String> {
        if let Some((_, m)) = &self.terminal {
            return m.clone();
        }
        if self.cancelled_unclaimed {
            return Some("aborted before any runner claimed it".to_owned());
        }
        self.lost.clone()
    }

    fn is_terminal(&self) -> bool {
        self.state().is_terminal()
    }

    fn node_status(&self, node: &str) -> NodeStatus {
        let op_state = self.state();
        let steps = self.operation.steps.len() as u32;
        let progress = self.nodes.get(node);
        let (state, exit_code, message) = match progress {
            Some(p)
                if p.state.is_terminal() && (p.state != State::Succeeded || p.step >= steps) =>
            {
                (p.state.into(), p.exit_code, p.message.clone())
            }
            _ if op_state.is_terminal() => {
                let state = if op_state == RunState::Succeeded {
                    RunState::Failed
                } else {
                    op_state
                };
                let why = self.message().map(|m| format!(": {m}")).unwrap_or_default();
                let message = format!(
                    "the node did not finish; its operation {} ended {}{}",
                    self.operation.id,
                    serde_json::to_value(op_state)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    why
                );
                (state, progress.and_then(|p| p.exit_code), Some(message))
            }
            Some(_) => (RunState::Running, None, None),
            None if op_state == RunState::Running => (RunState::Queued, None, None),
            None => (op_state, None, None),
        };
        NodeStatus {
            state,
            exit_code,
            message,
            runner: Some(self.runner.clone()),
            started_at: progress.and_then(|p| p.started_at.clone()),
            ended_at: progress
                .filter(|_| state.is_terminal())
                .and_then(|p| p.ended_at.clone()),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ExecutionRecord {
    id: u64,
    project: String,
    operations: Vec<String>,
    /// Nodes no runner covers, with the reason shown for them.
    uncovered: BTreeMap<String, String>,
    output: Vec<OutputEntry>,
    abort_requested: bool,
}

/// The persisted part of [`ControlState`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Snapshot {
    version: u32,
    runners: BTreeMap<String, RunnerRecord>,
    deleted: BTreeMap<String, [u8; 32]>,
    projects: BTreeMap<String, Vec<Node>>,
    executions: BTreeMap<u64, ExecutionRecord>,
    operations: BTreeMap<String, OperationRecord>,
    next_execution: u64,
}

/// A check-in either has its answer now or must wait for a wakeup.
#[derive(Debug)]
pub enum CheckinPoll {
    Ready(CheckinResponse),
    /// Nothing for this replica yet; wait for the runner's wakeup channel,
    /// or until `recheck_at` (an offer's lease ends) if that is sooner.
    Wait {
        recheck_at: Option<Instant>,
    },
}

/// The whole control plane.
#[derive(Debug)]
pub struct ControlState {
    data: Snapshot,
    cadence: Cadence,
    thresholds: Thresholds,
    server_url: String,
    started: Instant,
    /// One channel per runner; bumped when an offer or cancel is ready for it.
    wakers: BTreeMap<String, watch::Sender<u64>>,
    dirty: bool,
    /// Replicas kept per runner; a startup beyond it prunes the oldest down
    /// replica, or is refused when all are alive.
    max_replicas: usize,
    /// How long a replica stays listed once down ([`ControlState::prune`]).
    prune_after: Duration,
    /// Replicas removed by [`ControlState::prune`] since the start.
    replicas_pruned: u64,
    /// How long a ping waits for its answer.
    ping_timeout: Duration,
    /// The latest pings per runner (at most [`PINGS_KEPT`]), oldest first;
    /// not persisted.
    pings: BTreeMap<String, VecDeque<ping::PingRecord>>,
    /// From each stored report's `ts` to its storage.
    report_latency: Histogram,
}

impl ControlState {
    pub fn new(cadence: Cadence, thresholds: Thresholds, server_url: String) -> Self {
        ControlState {
            data: Snapshot {
                version: 1,
                next_execution: 1,
                ..Snapshot::default()
            },
            cadence,
            thresholds,
            server_url,
            started: Instant::now(),
            wakers: BTreeMap::new(),
            dirty: false,
            max_replicas: DEFAULT_MAX_REPLICAS,
            prune_after: DEFAULT_PRUNE_DOWN_REPLICAS_AFTER,
            replicas_pruned: 0,
            ping_timeout: DEFAULT_PING_TIMEOUT,
            pings: BTreeMap::new(),
            report_latency: Histogram::new(REPORT_LATENCY_BUCKETS),
        }
    }

    /// Keeps at most `n` replicas per runner (at least 1).
    pub fn set_max_replicas(&mut self, n: usize) {
        self.max_replicas = n.max(1);
    }

    /// Restores persisted state; replicas count as last seen when they last
    /// checked in (so a long-dead replica is still down after a restart).
    pub fn restore(&mut self, snapshot: Snapshot, now: Instant) {
        self.data = snapshot;
        self.data.next_execution = self.data.next_execution.max(1);
        let sys_now = unix_ms(SystemTime::now());
        for runner in self.data.runners.values_mut() {
            for r in runner.replicas.values_mut() {
                let seen = r.last_checkin_unix_ms.unwrap_or(r.started_unix_ms);
                let ago = Duration::from_millis(sys_now.saturating_sub(seen));
                r.last_seen = Some(now.checked_sub(ago).unwrap_or(now));
                let started = r.process_started_unix_ms.unwrap_or(r.started_unix_ms);
                let ago = Duration::from_millis(sys_now.saturating_sub(started));
                r.started_at = Some(now.checked_sub(ago).unwrap_or(now));
            }
        }
        // Secure option values were never written: an operation that still
        // needs them cannot run. One nobody claimed fails now; a claimed
        // one runs on (its runner has the values) and fails if it is ever
        // to be handed out again.
        for op in self.data.operations.values_mut() {
            if op.operation.secure_options.is_empty() || op.is_terminal() {
                continue;
            }
            op.secure_values_lost = true;
            if op.claimed_by.is_none() {
                op.terminal = Some((State::Failed, Some(SECURE_VALUES_LOST.to_owned())));
                self.dirty = true;
            }
        }
    }

    pub fn snapshot(&self) -> &Snapshot {
        &self.data
    }

    /// Whether persisted state changed since the last call.
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    pub fn set_server_url(&mut self, url: String) {
        self.server_url = url;
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    pub fn cadence(&self) -> &Cadence {
        &self.cadence
    }

    /// A receiver that changes whenever work or a cancel is ready for `runner`.
    pub fn subscribe(&mut self, runner: &str) -> watch::Receiver<u64> {
        self.wakers
            .entry(runner.to_owned())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    fn wake(&mut self, runner: &str) {
        if let Some(tx) = self.wakers.get(runner) {
            tx.send_modify(|g| *g = g.wrapping_add(1));
        }
    }

    // ---- admin: runners -------------------------------------------------

    fn credentials_text(&self, runner: &RunnerRecord, token: Option<&str>) -> String {
        let token_line = match token {
            Some(t) => format!("RUNDECK_RUNNER_TOKEN={t}\n"),
            None => "# The token is shown only when it is made (runner creation or\n\
                     # POST /api/v1/runners/{id}/regenerate-credentials); the server\n\
                     # keeps only its hash. Regenerate to get a new one.\n\
                     #RUNDECK_RUNNER_TOKEN=\n"
                .replace("{id}", &runner.id),
        };
        format!(
            "# rdrunner credentials for runner {name} ({id}); keep this file private (chmod 600)\n\
             RUNDECK_RUNNER_ID={id}\n{token_line}RUNDECK_SERVER_URL={url}\n",
            name = runner.name,
            id = runner.id,
            url = self.server_url
        )
    }

    pub fn create_runner(
        &mut self,
        req: CreateRunner,
        id: String,
        token: String,
    ) -> Result<RunnerCredentials, ApiError> {
        if req.name.trim().is_empty() {
            return Err(ApiError::bad_request("a runner needs a non-empty `name`"));
        }
        one_line("name", &req.name)?;
        one_line("description", &req.description)?;
        for (i, tag) in req.tags.iter().enumerate() {
            one_line(&format!("tags[{i}]"), tag)?;
        }
        for project in req.projects.keys() {
            one_line("projects (a project name)", project)?;
        }
        for (project, filter) in &req.projects {
            parse_filter(filter, &format!("projects.{project}"))?;
        }
        let record = RunnerRecord {
            id: id.clone(),
            name: req.name,
            description: req.description,
            tags: req.tags,
            projects: req.projects,
            token_hash: token_hash(&token),
            replicas: BTreeMap::new(),
            last_checkin_unix_ms: None,
        };
        let credentials = self.credentials_text(&record, Some(&token));
        self.data.runners.insert(id.clone(), record);
        self.dirty = true;
        Ok(RunnerCredentials {
            runner_id: id,
            token,
            credentials,
        })
    }

    fn runner(&self, id: &str) -> Result<&RunnerRecord, ApiError> {
        self.data.runners.get(id).ok_or_else(|| {
            ApiError::not_found(ErrorCode::UnknownRunner, format!("no runner `{id}`"))
        })
    }

    fn runner_mut(&mut self, id: &str) -> Result<&mut RunnerRecord, ApiError> {
        self.data.runners.get_mut(id).ok_or_else(|| {
            ApiError::not_found(ErrorCode::UnknownRunner, format!("no runner `{id}`"))
        })
    }

    /// Removes a runner; its token is refused (403) from now on. Operations
    /// it had not claimed yet can no longer run and are failed.
    pub fn delete_runner(&mut self, id: &str) -> Result<(), ApiError> {
        let record = self.data.runners.remove(id).ok_or_else(|| {
            ApiError::not_found(ErrorCode::UnknownRunner, format!("no runner `{id}`"))
        })?;
        self.data.deleted.insert(id.to_owned(), record.token_hash);
        self.drop_pings(id);
        for op in self.data.operations.values_mut() {
            if op.runner == id && op.claimed_by.is_none() && !op.is_terminal() {
                op.terminal = Some((
                    State::Failed,
                    Some(format!(
                        "runner `{id}` was deleted before it claimed the operation"
                    )),
                ));
            }
        }
        self.dirty = true;
        Ok(())
    }

    pub fn credentials(&self, id: &str) -> Result<String, ApiError> {
        Ok(self.credentials_text(self.runner(id)?, None))
    }

    pub fn regenerate_credentials(
        &mut self,
        id: &str,
        token: String,
    ) -> Result<RunnerCredentials, ApiError> {
        let runner = self.runner_mut(id)?;
        runner.token_hash = token_hash(&token);
        let runner = runner.clone();
        self.dirty = true;
        Ok(RunnerCredentials {
            runner_id: id.to_owned(),
            credentials: self.credentials_text(&runner, Some(&token)),
            token,
        })
    }

    pub fn assign_project(
        &mut self,
        id: &str,
        project: &str,
        filter: &str,
    ) -> Result<RunnerInfo, ApiError> {
        one_line("project", project)?;
        parse_filter(filter, "nodeFilter")?;
        self.runner_mut(id)?
            .projects
            .insert(project.to_owned(), filter.to_owned());
        self.dirty = true;
        self.get_runner(id, Instant::now())
    }

    /// Removes the runner's assignment to `project`; operations already
    /// given to it go on.
    pub fn unassign_project(&mut self, id: &str, project: &str) -> Result<RunnerInfo, ApiError> {
        if self.runner_mut(id)?.projects.remove(project).is_none() {
            return Err(ApiError::not_found(
                ErrorCode::UnknownProject,
                format!("runner `{id}` is not assigned to project `{project}`"),
            ));
        }
        self.dirty = true;
        self.get_runner(id, Instant::now())
    }

    // ---- admin: projects and executions ----------------------------------

    pub fn set_nodes(&mut self, project: &str, nodes: Vec<Node>) -> Result<(), ApiError> {
        one_line("project", project)?;
        let mut seen = BTreeSet::new();
        for (i, n) in nodes.iter().enumerate() {
            if n.name.is_empty() {
                return Err(ApiError::bad_request("every node needs a non-empty `name`"));
            }
            one_line(&format!("[{i}].name"), &n.name)?;
            one_line(&format!("[{i}].hostname"), &n.hostname)?;
            if let Some(user) = &n.username {
                one_line(&format!("[{i}].username"), user)?;
            }
            for (t, tag) in n.tags.iter().enumerate() {
                one_line(&format!("[{i}].tags[{t}]"), tag)?;
            }
            if !seen.insert(n.name.as_str()) {
                return Err(ApiError::bad_request(format!(
                    "node `{}` appears twice in the inventory of project `{project}`",
                    n.name
                )));
            }
        }
        self.data.projects.insert(project.to_owned(), nodes);
        self.dirty = true;
        Ok(())
    }

    pub fn nodes(&self, project: &str) -> Result<Vec<Node>, ApiError> {
        self.data.projects.get(project).cloned().ok_or_else(|| {
            ApiError::not_found(
                ErrorCode::UnknownProject,
                format!("project `{project}` has no node inventory; PUT /api/v1/projects/{project}/nodes first"),
            )
        })
    }

    /// The project's nodes that `filter` selects (all of them without one).
    pub fn nodes_matching(
        &self,
        project: &str,
        filter: Option<&str>,
    ) -> Result<Vec<Node>, ApiError> {
        let nodes = self.nodes(project)?;
        let Some(text) = filter else {
            return Ok(nodes);
        };
        let filter = parse_filter(text, "filter")?;
        Ok(nodes.into_iter().filter(|n| filter.matches(n)).collect())
    }

    /// The `limit` most recent executions, newest first.
    pub fn list_executions(&self, limit: usize) -> Vec<ExecutionStatus> {
        self.data
            .executions
            .keys()
            .rev()
            .take(limit)
            .filter_map(|id| self.execution(*id).ok())
            .collect()
    }

    /// Splits the matching nodes by the runner assigned to them (the first
    /// runner, by id, whose filter for the project matches), one operation
    /// per runner; nodes no runner covers are failed at once.
    pub fn submit_execution(
        &mut self,
        project: &str,
        req: SubmitExecution,
    ) -> Result<ExecutionCreated, ApiError> {
        if req.steps.is_empty() {
            return Err(ApiError::bad_request(
                "an execution needs at least one step",
            ));
        }
        one_line("project", project)?;
        one_line("job", &req.job)?;
        one_line("user", &req.user)?;
        let filter = parse_filter(&req.node_filter, "nodeFilter")?;
        let nodes: Vec<Node> = self
            .nodes(project)?
            .into_iter()
            .filter(|n| filter.matches(n))
            .collect();
        if nodes.is_empty() {
            return Err(ApiError::new(
                422,
                ErrorCode::NoNodes,
                format!(
                    "node filter `{}` matches no node of project `{project}`",
                    req.node_filter
                ),
            ));
        }
        let mut assignments: Vec<(String, NodeFilter)> = Vec::new();
        for runner in self.data.runners.values() {
            if let Some(text) = runner.projects.get(project) {
                if let Ok(f) = NodeFilter::parse(text) {
                    assignments.push((runner.id.clone(), f));
                }
            }
        }
        let id = self.data.next_execution;
        self.data.next_execution += 1;
        let mut by_runner: BTreeMap<String, Vec<Node>> = BTreeMap::new();
        let mut uncovered = BTreeMap::new();
        for node in nodes {
            match assignments.iter().find(|(_, f)| f.matches(&node)) {
                Some((runner, _)) => by_runner.entry(runner.clone()).or_default().push(node),
                None => {
                    uncovered.insert(
                        node.name.clone(),
                        format!(
                            "no runner is assigned to node `{}` in project `{project}`; assign one with PUT /api/v1/runners/{{id}}/projects/{project}",
                            node.name
                        ),
                    );
                }
            }
        }
        let mut op_ids = Vec::new();
        for (i, (runner, nodes)) in by_runner.into_iter().enumerate() {
            let op_id = format!("op-{id}-{}", i + 1);
            let operation = Operation {
                id: op_id.clone(),
                execution: ExecutionInfo {
                    id,
                    project: project.to_owned(),
                    job: req.job.clone(),
                    user: req.user.clone(),
                },
                steps: req.steps.clone(),
                nodes,
                dispatch: req.dispatch.clone(),
                options: req.options.clone(),
                secure_options: req.secure_options.clone(),
                timeout_ms: req.timeout_ms,
                step_timeout_ms: req.step_timeout_ms,
            };
            self.data.operations.insert(
                op_id.clone(),
                OperationRecord {
                    operation,
                    secure_values_lost: false,
                    runner: runner.clone(),
                    execution: id,
                    claimed_by: None,
                    offer: None,
                    cancelled_unclaimed: false,
                    cancel_requested: false,
                    cancel_delivered: BTreeSet::new(),
                    lost: None,
                    terminal: None,
                    reports: Vec::new(),
                    nodes: BTreeMap::new(),
                    duplicates: 0,
                    gaps: 0,
                    offers: 0,
                },
            );
            op_ids.push(op_id);
            self.wake(&runner);
        }
        self.data.executions.insert(
            id,
            ExecutionRecord {
                id,
                project: project.to_owned(),
                operations: op_ids,
                uncovered,
                output: Vec::new(),
                abort_requested: false,
            },
        );
        self.dirty = true;
        Ok(ExecutionCreated { execution_id: id })
    }

    fn execution_record(&self, id: u64) -> Result<&ExecutionRecord, ApiError> {
        self.data.executions.get(&id).ok_or_else(|| {
            ApiError::not_found(ErrorCode::UnknownExecution, format!("no execution {id}"))
        })
    }

    pub fn execution(&self, id: u64) -> Result<ExecutionStatus, ApiError> {
        let exec = self.execution_record(id)?;
        let ops: Vec<&OperationRecord> = exec
            .operations
            .iter()
            .filter_map(|o| self.data.operations.get(o))
            .collect();
        let mut nodes = BTreeMap::new();
        for (name, why) in &exec.uncovered {
            nodes.insert(
                name.clone(),
                NodeStatus {
                    state: RunState::Failed,
                    exit_code: None,
                    message: Some(why.clone()),
                    runner: None,
                    started_at: None,
                    ended_at: None,
                },
            );
        }
        let mut operations = Vec::new();
        for op in &ops {
            for n in &op.operation.nodes {
                nodes.insert(n.name.clone(), op.node_status(&n.name));
            }
            operations.push(OperationStatus {
                id: op.operation.id.clone(),
                runner: op.runner.clone(),
                state: op.state(),
                replica: op.claimed_by.clone(),
                nodes: op.operation.nodes.iter().map(|n| n.name.clone()).collect(),
                message: op.message(),
            });
        }
        let states: Vec<RunState> = operations.iter().map(|o| o.state).collect();
        let state = execution_state(exec, &states);
        Ok(ExecutionStatus {
            id,
            project: exec.project.clone(),
            state,
            operations,
            nodes,
        })
    }

    /// Output entries after `after`, at most `limit` of them.
    pub fn output(&self, id: u64, after: u64, limit: usize) -> Result<OutputPage, ApiError> {
        let terminal = self.execution(id)?.state.is_terminal();
        let exec = self.execution_record(id)?;
        let start = (after as usize).min(exec.output.len());
        let entries: Vec<OutputEntry> = exec.output[start..].iter().take(limit).cloned().collect();
        let next = entries.last().map(|e| e.n).unwrap_or(start as u64);
        Ok(OutputPage {
            complete: terminal && next as usize == exec.output.len(),
            entries,
            next,
        })
    }

    /// Aborts an execution: operations not claimed yet are aborted at once;
    /// claimed ones get a cancel on the runner's next check-in or report answer.
    pub fn abort(&mut self, id: u64) -> Result<ExecutionStatus, ApiError> {
        let exec = self.data.executions.get_mut(&id).ok_or_else(|| {
            ApiError::not_found(ErrorCode::UnknownExecution, format!("no execution {id}"))
        })?;
        exec.abort_requested = true;
        let op_ids = exec.operations.clone();
        let mut wake = BTreeSet::new();
        for op_id in op_ids {
            if let Some(op) = self.data.operations.get_mut(&op_id) {
                if op.is_terminal() {
                    continue;
                }
                if op.claimed_by.is_none() {
                    op.cancelled_unclaimed = true;
                    op.offer = None;
                } else {
                    op.cancel_requested = true;
                    wake.insert(op.runner.clone());
                }
            }
        }
        for runner in wake {
            self.wake(&runner);
        }
        self.dirty = true;
        self.execution(id)
    }

    // ---- runner API ---------------------------------------------------------

    /// Checks a runner's id and token: 401 for bad credentials, 403 for a
    /// deleted runner.
    pub fn authenticate(&self, runner_id: &str, token: &str) -> Result<(), ApiError> {
        let hash = token_hash(token);
        if let Some(r) = self.data.runners.get(runner_id) {
            if constant_time_eq(&r.token_hash, &hash) {
                return Ok(());
            }
        } else if let Some(old) = self.data.deleted.get(runner_id) {
            if constant_time_eq(old, &hash) {
                return Err(ApiError::new(
                    403,
                    ErrorCode::RunnerDeleted,
                    format!("runner `{runner_id}` was deleted on the control plane; create a new runner and use its credentials"),
                ));
            }
        }
        Err(ApiError::unauthorized(format!(
            "runner id `{runner_id}` and token do not match; check the runner's credentials file or regenerate them"
        )))
    }

    /// Registers a replica that `peer` (the request's TCP peer, when known)
    /// started at `now`.
    pub fn startup(
        &mut self,
        runner_id: &str,
        req: StartupRequest,
        replica_id: String,
        peer: Option<IpAddr>,
        now: Instant,
    ) -> Result<StartupResponse, ApiError> {
        self.make_room_for_a_replica(runner_id, now)?;
        let runner = self.runner_mut(runner_id)?;
        runner.replicas.insert(
            replica_id.clone(),
            ReplicaRecord {
                id: replica_id.clone(),
                hostname: req.hostname,
                version: req.version,
                pid: req.pid,
                max_running: req.max_running,
                started_unix_ms: unix_ms(SystemTime::now()),
                last_checkin_unix_ms: None,
                running: 0,
                queued: 0,
                shut_down: false,
                ip: peer.map(|ip| ip.to_string()),
                process_started_unix_ms: None,
                started_at: Some(now),
                last_seen: Some(now),
                checkins: Vec::new(),
            },
        );
        self.dirty = true;
        let c = &self.cadence;
        Ok(StartupResponse {
            replica_id,
            poll_interval_ms: c.poll_interval_ms,
            long_poll_ms: c.long_poll_ms,
            report_interval_ms: c.report_interval_ms,
            report_batch_max: c.report_batch_max,
            lease_ms: c.lease_ms,
        })
    }

    /// Keeps a runner within `max_replicas` before one more registers: the
    /// down replicas that were silent longest go first (their running
    /// operations are made `lost` before, by a sweep); if every replica is
    /// alive, the startup is refused (409 `too_many_replicas`).
    fn make_room_for_a_replica(&mut self, runner_id: &str, now: Instant) -> Result<(), ApiError> {
        let count = self.runner(runner_id)?.replicas.len();
        if count < self.max_replicas {
            return Ok(());
        }
        self.sweep(now);
        let runner = self.runner(runner_id)?;
        let mut down: Vec<(Option<Instant>, String)> = runner
            .replicas
            .values()
            .filter(|r| self.is_down(r, now))
            .map(|r| (r.last_seen, r.id.clone()))
            .collect();
        let excess = count + 1 - self.max_replicas;
        if down.len() < excess {
            return Err(ApiError::conflict(
                ErrorCode::TooManyReplicas,
                format!(
                    "runner `{runner_id}` already has {count} replicas and at most {max} are kept, none of which is down (shut down, or silent for {down_s} s); stop a replica of this runner or wait until one is down, then start again",
                    max = self.max_replicas,
                    down_s = self.thresholds.down_after.as_secs()
                ),
            ));
        }
        down.sort();
        let runner = self.runner_mut(runner_id)?;
        for (_, id) in down.into_iter().take(excess) {
            runner.replicas.remove(&id);
        }
        self.dirty = true;
        Ok(())
    }

    fn replica_mut(
        &mut self,
        runner_id: &str,
        replica_id: &str,
    ) -> Result<&mut ReplicaRecord, ApiError> {
        self.runner_mut(runner_id)?
            .replicas
            .get_mut(replica_id)
            .ok_or_else(|| {
                ApiError::not_found(
                    ErrorCode::UnknownReplica,
                    format!("replica `{replica_id}` is not registered for runner `{runner_id}`; call POST /startup again"),
                )
            })
    }

    /// Records a check-in from `peer` (its TCP peer, when known) that
    /// arrived at `now`, and the pongs it carries.
    pub fn record_checkin(
        &mut self,
        runner_id: &str,
        req: &CheckinRequest,
        peer: Option<IpAddr>,
        now: Instant,
    ) -> Result<(), ApiError> {
        let sys_now = unix_ms(SystemTime::now());
        let r = self.replica_mut(runner_id, &req.replica_id)?;
        if r.last_checkin_unix_ms.is_none() {
            // A replica is one run of a process: its start, from the
            // uptime of its first check-in, does not move after.
            let uptime = Duration::from_secs(req.uptime_s);
            r.process_started_unix_ms =
                Some(sys_now.saturating_sub(u64::try_from(uptime.as_millis()).unwrap_or(u64::MAX)));
            r.started_at = Some(now.checked_sub(uptime).unwrap_or(now));
        }
        r.last_seen = Some(now);
        r.last_checkin_unix_ms = Some(sys_now);
        r.running = req.running.len() as u32;
        r.queued = req.queued;
        r.max_running = req.max_running;
        r.shut_down = false;
        if let Some(ip) = peer {
            r.ip = Some(ip.to_string());
        }
        if !req.version.is_empty() {
            r.version = req.version.clone();
        }
        if r.checkins.len() >= CHECKINS_KEPT {
            r.checkins.remove(0);
        }
        r.checkins.push(now);
        self.runner_mut(runner_id)?.last_checkin_unix_ms = Some(sys_now);
        self.answer_pings(runner_id, &req.replica_id, &req.pongs, now);
        Ok(())
    }

    /// The check-in's answer if there is work or a new cancel for the
    /// replica (`force` answers even with nothing, when the wait is over).
    pub fn poll_checkin(
        &mut self,
        runner_id: &str,
        replica_id: &str,
        now: Instant,
        force: bool,
    ) -> Result<CheckinPoll, ApiError> {
        let (max_running, busy) = {
            let r = self.replica_mut(runner_id, replica_id)?;
            // Both counts come from the replica; their sum must not overflow.
            (r.max_running, r.running.saturating_add(r.queued))
        };
        let mut free = if max_running == 0 {
            usize::MAX
        } else {
            max_running.saturating_sub(busy) as usize
        };
        let lease = Duration::from_millis(self.cadence.lease_ms);
        // An offer to a replica that has shut down (or was pruned) will
        // never be claimed by it: hand it out again without waiting for the
        // lease.
        let live: BTreeSet<String> = self
            .runner(runner_id)?
            .replicas
            .values()
            .filter(|r| !r.shut_down)
            .map(|r| r.id.clone())
            .collect();
        let mut operations = Vec::new();
        let mut cancel = Vec::new();
        let mut new_cancel = false;
        // Pings this replica was not given yet: each ends a held check-in once.
        let pings = self.pings_for(runner_id, replica_id, now);
        let new_ping = !pings.is_empty();
        let mut recheck_at: Option<Instant> = None;
        for op in self.data.operations.values_mut() {
            if op.runner != runner_id || op.is_terminal() {
                continue;
            }
            if op.claimed_by.is_none() {
                let offerable = match &op.offer {
                    Some((to, until)) if *until > now && live.contains(to) => {
                        recheck_at = Some(recheck_at.map_or(*until, |r| r.min(*until)));
                        false
                    }
                    _ => true,
                };
                if offerable && free > 0 {
                    free -= 1;
                    op.offer = Some((replica_id.to_owned(), now + lease));
                    op.offers += 1;
                    operations.push(op.operation.clone());
                }
            } else if op.cancel_requested && op.claimed_by.as_deref() == Some(replica_id) {
                cancel.push(op.operation.id.clone());
                if op.cancel_delivered.insert(replica_id.to_owned()) {
                    new_cancel = true;
                }
            }
        }
        if operations.is_empty() && !new_cancel && !new_ping && !force {
            return Ok(CheckinPoll::Wait { recheck_at });
        }
        self.delivered_pings(runner_id, replica_id, &pings);
        Ok(CheckinPoll::Ready(CheckinResponse {
            operations,
            cancel,
            poll_interval_ms: Some(self.cadence.poll_interval_ms),
            pings,
        }))
    }

    fn own_operation(
        &mut self,
        runner_id: &str,
        op_id: &str,
    ) -> Result<&mut OperationRecord, ApiError> {
        match self.data.operations.get_mut(op_id) {
            Some(op) if op.runner == runner_id => Ok(op),
            _ => Err(ApiError::not_found(
                ErrorCode::UnknownOperation,
                format!("operation `{op_id}` is not known for runner `{runner_id}`"),
            )),
        }
    }

    pub fn claim(
        &mut self,
        runner_id: &str,
        op_id: &str,
        replica_id: &str,
    ) -> Result<Operation, ApiError> {
        self.replica_mut(runner_id, replica_id)?;
        let op = self.own_operation(runner_id, op_id)?;
        if op.secure_values_lost
            && !op.is_terminal()
            && op.claimed_by.as_deref() == Some(replica_id)
        {
            // A claim repeated after the restart: the answer would carry
            // markers in place of secrets, so the operation cannot run.
            op.terminal = Some((State::Failed, Some(SECURE_VALUES_LOST.to_owned())));
            self.dirty = true;
            return Err(ApiError::conflict(
                ErrorCode::Taken,
                format!("operation `{op_id}` has already ended: {SECURE_VALUES_LOST}"),
            ));
        }
        match &op.claimed_by {
            Some(owner) if owner == replica_id => return Ok(op.operation.clone()),
            Some(owner) => {
                return Err(ApiError::conflict(
                    ErrorCode::Taken,
                    format!("operation `{op_id}` is already claimed by replica `{owner}`"),
                ))
            }
            None => {}
        }
        if op.cancelled_unclaimed {
            return Err(ApiError::conflict(
                ErrorCode::Cancelled,
                format!("operation `{op_id}` was aborted before it was claimed"),
            ));
        }
        if op.is_terminal() {
            return Err(ApiError::conflict(
                ErrorCode::Taken,
                format!("operation `{op_id}` has already ended"),
            ));
        }
        op.claimed_by = Some(replica_id.to_owned());
        op.offer = None;
        let operation = op.operation.clone();
        self.dirty = true;
        Ok(operation)
    }

    /// Stores a batch of reports. The whole batch is checked first (known
    /// operations of this runner, claimed, seq >= 1): a refused batch stores
    /// nothing. Reports are applied in (operation, seq) order, so a batch
    /// that arrives shuffled is stored whole.
    pub fn reports(
        &mut self,
        runner_id: &str,
        req: ReportsRequest,
    ) -> Result<ReportsResponse, ApiError> {
        self.replica_mut(runner_id, &req.replica_id)?;
        let max = self.cadence.report_batch_max as usize;
        if req.reports.len() > max {
            return Err(ApiError::new(
                413,
                ErrorCode::TooManyReports,
                format!(
                    "{} reports in one batch; at most reportBatchMax = {max}",
                    req.reports.len()
                ),
            ));
        }
        for rep in &req.reports {
            if rep.seq == 0 {
                return Err(ApiError::bad_request(format!(
                    "report of operation `{}` has seq 0; seq starts at 1",
                    rep.op_id
                )));
            }
            // Every time the harness gives back out (output entries, stored
            // reports) must be an RFC 3339 time, so only those go in.
            if !rdrunner_actors::model::is_rfc3339(&rep.ts) {
                return Err(ApiError::bad_request(format!(
                    "report {} of operation `{}` has ts `{}`, which is not an RFC 3339 time; send e.g. 2026-11-28T12:00:00.000Z",
                    rep.seq, rep.op_id, rep.ts
                )));
            }
            let step = match &rep.body {
                ReportBody::Log(l) => Some(l.step),
                ReportBody::Node(n) => Some(n.step),
                ReportBody::Op(_) => None,
            };
            if step == Some(0) {
                return Err(ApiError::bad_request(format!(
                    "report {} of operation `{}` has step 0; steps are numbered from 1",
                    rep.seq, rep.op_id
                )));
            }
            let op = self.own_operation(runner_id, &rep.op_id)?;
            if op.claimed_by.is_none() {
                return Err(ApiError::conflict(
                    ErrorCode::NotClaimed,
                    format!(
                        "operation `{}` has not been claimed; claim it before reporting",
                        rep.op_id
                    ),
                ));
            }
        }
        let mut reports = req.reports;
        reports.sort_by(|a, b| a.op_id.cmp(&b.op_id).then(a.seq.cmp(&b.seq)));
        let mut acks = BTreeMap::new();
        for rep in reports {
            let op = self
                .data
                .operations
                .get_mut(&rep.op_id)
                .expect("checked above");
            let stored = op.reports.len() as u64;
            let after_terminal =
                op.terminal.is_some() && op.reports.last().is_some_and(Report::is_terminal);
            if rep.seq <= stored {
                op.duplicates += 1;
            } else if rep.seq > stored + 1 || after_terminal {
                op.gaps += 1;
            } else {
                apply_report(op, &rep, self.data.executions.get_mut(&op.execution));
                op.reports.push(rep.clone());
                self.dirty = true;
                // The runner's clock against ours: a report "from the
                // future" (clock skew) counts as stored at once.
                if let Some(ts) = rdrunner_actors::model::parse_rfc3339(&rep.ts) {
                    let stored = SystemTime::now();
                    self.report_latency
                        .observe(stored.duration_since(ts).unwrap_or_default());
                }
            }
            acks.insert(rep.op_id.clone(), op.reports.len() as u64);
        }
        Ok(ReportsResponse {
            acks,
            cancel: self.cancels_for(runner_id, &req.replica_id),
        })
    }

    fn cancels_for(&self, runner_id: &str, replica_id: &str) -> Vec<String> {
        self.data
            .operations
            .values()
            .filter(|op| {
                op.runner == runner_id
                    && op.cancel_requested
                    && op.claimed_by.as_deref() == Some(replica_id)
                    && !op.is_terminal()
            })
            .map(|op| op.operation.id.clone())
            .collect()
    }

    pub fn shutdown(
        &mut self,
        runner_id: &str,
        req: &ShutdownRequest,
        now: Instant,
    ) -> Result<(), ApiError> {
        let r = self.replica_mut(runner_id, &req.replica_id)?;
        r.shut_down = true;
        r.last_seen = Some(now);
        self.dirty = true;
        self.sweep(now);
        Ok(())
    }

    /// `POST /resume`: replica `req.replicaId` takes over the operations of
    /// `req.previousReplicaId` it names, exactly once. An operation is
    /// `owned` when the previous replica holds it unfinished (it moves to the
    /// new replica) or when the new replica already holds it (a resume
    /// repeated after a lost answer); `released` when it is this runner's
    /// but held by another replica, never claimed, or ended; `unknown`
    /// otherwise. The previous replica is shut down at once, and what it
    /// still holds unnamed is made `lost` by the sweep, so nothing waits
    /// for its down-timeout.
    pub fn resume(
        &mut self,
        runner_id: &str,
        req: &ResumeRequest,
        now: Instant,
    ) -> Result<ResumeResponse, ApiError> {
        if req.replica_id == req.previous_replica_id {
            return Err(ApiError::bad_request(format!(
                "previousReplicaId `{}` is the replica itself; name the replica of the process that died",
                req.previous_replica_id
            )));
        }
        if req.operations.len() > rdrunner_actors::model::RESUME_MAX_OPERATIONS {
            return Err(ApiError::bad_request(format!(
                "{} operations in one resume; at most {} (send several)",
                req.operations.len(),
                rdrunner_actors::model::RESUME_MAX_OPERATIONS
            )));
        }
        self.replica_mut(runner_id, &req.replica_id)?;
        if let Ok(previous) = self.replica_mut(runner_id, &req.previous_replica_id) {
            previous.shut_down = true;
        }
        let mut operations = BTreeMap::new();
        let mut resumed = BTreeMap::new();
        for op_id in &req.operations {
            let state = match self.data.operations.get_mut(op_id) {
                Some(op) if op.runner == runner_id => {
                    let open = !op.is_terminal() && op.lost.is_none() && !op.cancelled_unclaimed;
                    match op.claimed_by.as_deref() {
                        Some(owner) if open && owner == req.previous_replica_id => {
                            op.claimed_by = Some(req.replica_id.clone());
                            op.offer = None;
                            self.dirty = true;
                            ResumeState::Owned
                        }
                        Some(owner) if open && owner == req.replica_id => ResumeState::Owned,
                        _ => ResumeState::Released,
                    }
                }
                _ => ResumeState::Unknown,
            };
            if state == ResumeState::Owned && req.with_operations {
                // Markers in place of lost secrets would run: such an
                // operation is not given back, and the runner ends it.
                if let Some(op) = self
                    .data
                    .operations
                    .get(op_id)
                    .filter(|op| !op.secure_values_lost)
                {
                    resumed.insert(op_id.clone(), op.operation.clone());
                }
            }
            operations.insert(op_id.clone(), state);
        }
        self.dirty = true;
        self.sweep(now);
        Ok(ResumeResponse {
            operations,
            resumed,
        })
    }

    /// Marks `lost` every running operation whose replica is down.
    pub fn sweep(&mut self, now: Instant) {
        let mut down: BTreeMap<(String, String), String> = BTreeMap::new();
        for runner in self.data.runners.values() {
            for r in runner.replicas.values() {
                if self.is_down(r, now) {
                    let why = if r.shut_down {
                        format!("replica `{}` of runner `{}` on {} shut down before the operation ended; its outcome is unknown", r.id, runner.id, r.hostname)
                    } else {
                        format!(
                            "replica `{}` of runner `{}` on {} stopped checking in (nothing for {} s, down after {} s); the operation's outcome is unknown",
                            r.id,
                            runner.id,
                            r.hostname,
                            r.last_seen.map(|t| now.saturating_duration_since(t).as_secs()).unwrap_or(0),
                            self.thresholds.down_after.as_secs()
                        )
                    };
                    down.insert((runner.id.clone(), r.id.clone()), why);
                }
            }
        }
        for op in self.data.operations.values_mut() {
            if op.terminal.is_some() || op.lost.is_some() || op.cancelled_unclaimed {
                continue;
            }
            if let Some(owner) = &op.claimed_by {
                if let Some(why) = down.get(&(op.runner.clone(), owner.clone())) {
                    op.lost = Some(why.clone());
                    self.dirty = true;
                }
            }
        }
    }

    // ---- observation --------------------------------------------------------

    pub fn checkins(&self, runner_id: &str) -> BTreeMap<String, Vec<Instant>> {
        self.data
            .runners
            .get(runner_id)
            .map(|r| {
                r.replicas
                    .values()
                    .map(|rep| (rep.id.clone(), rep.checkins.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn stored_reports(&self, op_id: &str) -> Option<Vec<Report>> {
        self.data.operations.get(op_id).map(|o| o.reports.clone())
    }

    pub fn observe_runner(&self, runner_id: &str) -> Result<RunnerObservation, ApiError> {
        let runner = self.runner(runner_id)?;
        let replicas = runner
            .replicas
            .values()
            .map(|r| ReplicaObservation {
                replica_id: r.id.clone(),
                checkins_ms: r
                    .checkins
                    .iter()
                    .map(|t| t.saturating_duration_since(self.started).as_millis() as u64)
                    .collect(),
                shut_down: r.shut_down,
            })
            .collect();
        let operations: Vec<OperationObservation> = self
            .data
            .operations
            .values()
            .filter(|o| o.runner == runner_id)
            .map(|o| OperationObservation {
                op_id: o.operation.id.clone(),
                execution_id: o.execution,
                state: o.state(),
                reports_stored: o.reports.len() as u64,
                duplicates_dropped: o.duplicates,
                gaps_refused: o.gaps,
                offers: o.offers,
            })
            .collect();
        Ok(RunnerObservation {
            runner_id: runner_id.to_owned(),
            reports_stored: operations.iter().map(|o| o.reports_stored).sum(),
            duplicates_dropped: operations.iter().map(|o| o.duplicates_dropped).sum(),
            gaps_refused: operations.iter().map(|o| o.gaps_refused).sum(),
            replicas,
            operations,
        })
    }

    pub fn operation_counters(&self, op_id: &str) -> Option<(u64, u64)> {
        self.data
            .operations
            .get(op_id)
            .map(|o| (o.duplicates, o.gaps))
    }
}

/// An execution's state from its operations' (protocol.md §7).
fn execution_state(exec: &ExecutionRecord, states: &[RunState]) -> RunState {
    let any = |s: RunState| states.contains(&s);
    if states.iter().any(|s| !s.is_terminal()) {
        if any(RunState::Running) || states.iter().any(|s| s.is_terminal()) {
            RunState::Running
        } else {
            RunState::Queued
        }
    } else if exec.abort_requested && any(RunState::Aborted) {
        RunState::Aborted
    } else if any(RunState::Timedout) {
        RunState::Timedout
    } else if any(RunState::Failed) || !exec.uncovered.is_empty() {
        RunState::Failed
    } else if any(RunState::Lost) {
        RunState::Lost
    } else if any(RunState::Aborted) {
        RunState::Aborted
    } else {
        RunState::Succeeded
    }
}

fn parse_filter(text: &str, field: &str) -> Result<NodeFilter, ApiError> {
    NodeFilter::parse(text)
        .map_err(|e| ApiError::new(400, ErrorCode::BadFilter, format!("`{field}`: {e}")))
}

/// Folds one stored report into the operation's node and terminal state and
/// the execution's output.
fn apply_report(op: &mut OperationRecord, rep: &Report, exec: Option<&mut ExecutionRecord>) {
    match &rep.body {
        ReportBody::Log(log) => {
            if let Some(exec) = exec {
                let n = exec.output.len() as u64 + 1;
                exec.output.push(OutputEntry {
                    n,
                    ts: rep.ts.clone(),
                    node: log.node.clone(),
                    step: log.step,
                    stream: log.stream,
                    text: log.text.clone(),
                });
            }
        }
        ReportBody::Node(node) => {
            // A node's first report may already be its failure (a node step
            // that failed before it started): keep its exit code and message.
            let entry = op.nodes.entry(node.node.clone()).or_insert(NodeProgress {
                state: node.state,
                step: node.step,
                exit_code: node.exit_code,
                message: node.message.clone(),
                started_at: Some(rep.ts.clone()),
                ended_at: None,
            });
            // A failed step stays failed: later reports of the node do not undo it.
            if !(entry.state.is_terminal() && entry.state != State::Succeeded) {
                entry.state = node.state;
                entry.step = node.step;
                entry.exit_code = node.exit_code;
                entry.message = node.message.clone();
                if node.state.is_terminal() {
                    entry.ended_at = Some(rep.ts.clone());
                }
            }
        }
        ReportBody::Op(o) => {
            if o.state.is_terminal() {
                op.terminal = Some((o.state, o.message.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests;
