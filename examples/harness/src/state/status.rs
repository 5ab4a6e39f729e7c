//! The status model (protocol.md §5, "Runner status"), as Rundeck's: each
//! replica is `new`, `healthy`, `unhealthy`, `unknown` or `down`, with the
//! reason when it is not healthy; a runner takes the best of its replicas'
//! statuses and warns when its live replicas run different versions;
//! replicas down for longer than the prune delay are removed. Also the
//! counts `/metrics` publishes ([`Census`]).

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use rdrunner_actors::model::escape_controls;
use rdrunner_actors::Histogram;

use super::{ts_of_unix_ms, ControlState, ReplicaRecord, RunnerRecord, Thresholds};
use crate::admin_api::{ReplicaInfo, RunState, RunnerInfo, RunnerStatus};
use crate::error::ApiError;

/// How long a replica stays listed once down, unless configured otherwise
/// ([`ControlState::set_prune_after`]).
pub const DEFAULT_PRUNE_DOWN_REPLICAS_AFTER: Duration = Duration::from_secs(600);

/// A replica [`ControlState::prune`] removed; its `Display` is the line
/// the removal is logged with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrunedReplica {
    pub runner: String,
    pub replica: String,
    pub hostname: String,
    /// How long it had been down.
    pub down_for: Duration,
}

impl fmt::Display for PrunedReplica {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pruned replica {} of runner {} (host {}): down for {} s",
            self.replica,
            self.runner,
            escape_controls(&self.hostname),
            self.down_for.as_secs()
        )
    }
}

/// What `/metrics` publishes of the state: counts only, no names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Census {
    /// Runners per status, in the order of [`RunnerStatus::ALL`].
    pub runners: [u64; 5],
    /// Replicas per status, in the order of [`RunnerStatus::ALL`].
    pub replicas: [u64; 5],
    /// Executions per state, in the order of [`RunState::ALL`].
    pub executions: [u64; 7],
    /// Operations per state, in the order of [`RunState::ALL`].
    pub operations: [u64; 7],
    /// From each stored report's `ts` to its storage.
    pub report_latency: Histogram,
    /// Replicas removed for having been down too long, since the start.
    pub replicas_pruned: u64,
}

/// How good a status is, best first: a runner shows its best replica's.
fn rank(s: RunnerStatus) -> u8 {
    match s {
        RunnerStatus::Healthy => 0,
        RunnerStatus::Unhealthy => 1,
        RunnerStatus::New => 2,
        RunnerStatus::Unknown => 3,
        RunnerStatus::Down => 4,
    }
}

fn index_of(s: RunnerStatus) -> usize {
    RunnerStatus::ALL.iter().position(|x| *x == s).unwrap_or(0)
}

/// Since when `r` counts as down (shut down, or silent for the down
/// threshold); `None` while it is not.
fn down_since(r: &ReplicaRecord, t: &Thresholds, now: Instant) -> Option<Instant> {
    let seen = r.last_seen?;
    if r.shut_down {
        return Some(seen);
    }
    let since = seen + t.down_after;
    (now >= since).then_some(since)
}

impl ControlState {
    /// How long a replica stays listed once down ([`ControlState::prune`]).
    pub fn set_prune_after(&mut self, after: Duration) {
        self.prune_after = after;
    }

    /// Whether `r` is down at `now`: shut down, or silent for the down threshold.
    pub(super) fn is_down(&self, r: &ReplicaRecord, now: Instant) -> bool {
        r.shut_down || down_since(r, &self.thresholds, now).is_some()
    }

    /// A replica's status at `now` and, when it is not healthy, why.
    /// `waiting` is the runner's operations no replica has claimed yet.
    fn replica_status(
        &self,
        r: &ReplicaRecord,
        waiting: u64,
        now: Instant,
    ) -> (RunnerStatus, Option<String>) {
        let t = &self.thresholds;
        let silent = r
            .last_seen
            .map(|seen| now.saturating_duration_since(seen))
            .unwrap_or_default()
            .as_secs();
        let checked_in = r.last_checkin_unix_ms.is_some();
        if r.shut_down {
            let why = format!("shut down (last seen {silent} s ago)");
            (RunnerStatus::Down, Some(why))
        } else if self.is_down(r, now) {
            let why = if checked_in {
                format!(
                    "no check-in for {silent} s (down after {} s)",
                    t.down_after.as_secs()
                )
            } else {
                format!(
                    "registered {silent} s ago and never checked in (down after {} s)",
                    t.down_after.as_secs()
                )
            };
            (RunnerStatus::Down, Some(why))
        } else if !checked_in {
            let why = format!("registered {silent} s ago, no check-in yet");
            (RunnerStatus::New, Some(why))
        } else if silent >= t.unknown_after.as_secs() {
            let why = format!(
                "no check-in for {silent} s (unknown after {} s, down after {} s)",
                t.unknown_after.as_secs(),
                t.down_after.as_secs()
            );
            (RunnerStatus::Unknown, Some(why))
        } else if r.max_running > 0
            && r.running >= r.max_running
            && u64::from(r.queued) + waiting > 0
        {
            let why = format!(
                "at maxRunning ({} of {} running), {} queued",
                r.running,
                r.max_running,
                u64::from(r.queued) + waiting
            );
            (RunnerStatus::Unhealthy, Some(why))
        } else {
            (RunnerStatus::Healthy, None)
        }
    }

    /// Operations not claimed yet (and not ended), per runner.
    fn waiting_by_runner(&self) -> BTreeMap<&str, u64> {
        let mut waiting = BTreeMap::new();
        for op in self.data.operations.values() {
            if op.state() == RunState::Queued {
                *waiting.entry(op.runner.as_str()).or_insert(0) += 1;
            }
        }
        waiting
    }

    fn runner_info(&self, runner: &RunnerRecord, waiting: u64, now: Instant) -> RunnerInfo {
        let mut reasons = Vec::new();
        let replicas: Vec<ReplicaInfo> = runner
            .replicas
            .values()
            .map(|r| {
                let (status, status_reason) = self.replica_status(r, waiting, now);
                reasons.push((r, status, status_reason.clone()));
                let until = match status {
                    RunnerStatus::Down => r.last_seen.unwrap_or(now),
                    _ => now,
                };
                ReplicaInfo {
                    id: r.id.clone(),
                    hostname: r.hostname.clone(),
                    ip: r.ip.clone(),
                    version: r.version.clone(),
                    pid: r.pid,
                    max_running: r.max_running,
                    status,
                    status_reason,
                    last_checkin: r.last_checkin_unix_ms.map(ts_of_unix_ms),
                    started_at: Some(ts_of_unix_ms(
                        r.process_started_unix_ms.unwrap_or(r.started_unix_ms),
                    )),
                    uptime_secs: r
                        .started_at
                        .map(|s| until.saturating_duration_since(s).as_secs()),
                    running: r.running,
                    queued: r.queued,
                }
            })
            .collect();
        let last = runner
            .replicas
            .values()
            .filter_map(|r| r.last_checkin_unix_ms)
            .chain(runner.last_checkin_unix_ms)
            .max();
        let (status, status_reason) =
            match reasons.iter().map(|(_, s, _)| *s).min_by_key(|s| rank(*s)) {
                None if last.is_some() => (
                    RunnerStatus::Down,
                    Some(format!(
                        "no replica left: each was down for over {} s and was pruned",
                        self.prune_after.as_secs()
                    )),
                ),
                None => (
                    RunnerStatus::New,
                    Some("no replica has registered yet".to_owned()),
                ),
                Some(RunnerStatus::Healthy) => (RunnerStatus::Healthy, None),
                Some(RunnerStatus::Unhealthy) => {
                    // Every live replica is full, with work waiting.
                    let full: Vec<&ReplicaRecord> = reasons
                        .iter()
                        .filter(|(_, s, _)| *s == RunnerStatus::Unhealthy)
                        .map(|(r, _, _)| *r)
                        .collect();
                    let running: u64 = full.iter().map(|r| u64::from(r.running)).sum();
                    let max: u64 = full.iter().map(|r| u64::from(r.max_running)).sum();
                    let queued = full.iter().map(|r| u64::from(r.queued)).sum::<u64>() + waiting;
                    let on = if full.len() > 1 {
                        format!(" on {} replicas", full.len())
                    } else {
                        String::new()
                    };
                    (
                        RunnerStatus::Unhealthy,
                        Some(format!(
                            "at maxRunning ({running} of {max} running{on}), {queued} queued"
                        )),
                    )
                }
                Some(best) => {
                    // The replica seen last among those with the best status.
                    let why = reasons
                        .iter()
                        .filter(|(_, s, _)| *s == best)
                        .max_by_key(|(r, _, _)| r.last_seen)
                        .and_then(|(r, _, why)| {
                            let why = why.as_deref()?;
                            Some(if runner.replicas.len() > 1 {
                                format!("replica {}: {why}", r.id)
                            } else {
                                why.to_owned()
                            })
                        });
                    (best, why)
                }
            };
        RunnerInfo {
            id: runner.id.clone(),
            name: runner.name.clone(),
            description: runner.description.clone(),
            tags: runner.tags.clone(),
            projects: runner.projects.clone(),
            status,
            status_reason,
            warnings: version_warnings(&replicas),
            last_checkin: last.map(ts_of_unix_ms),
            replicas,
        }
    }

    pub fn list_runners(&self, now: Instant) -> Vec<RunnerInfo> {
        let waiting = self.waiting_by_runner();
        self.data
            .runners
            .values()
            .map(|r| self.runner_info(r, waiting.get(r.id.as_str()).copied().unwrap_or(0), now))
            .collect()
    }

    pub fn get_runner(&self, id: &str, now: Instant) -> Result<RunnerInfo, ApiError> {
        let runner = self.runner(id)?;
        let waiting = self.waiting_by_runner().get(id).copied().unwrap_or(0);
        Ok(self.runner_info(runner, waiting, now))
    }

    /// Removes the replicas down for longer than the prune delay, after a
    /// sweep (so their running operations are `lost` first); answers what
    /// it removed, for the log.
    pub fn prune(&mut self, now: Instant) -> Vec<PrunedReplica> {
        self.sweep(now);
        let thresholds = self.thresholds;
        let after = self.prune_after;
        let mut pruned = Vec::new();
        for runner in self.data.runners.values_mut() {
            runner.replicas.retain(|_, r| {
                let Some(since) = down_since(r, &thresholds, now) else {
                    return true;
                };
                let down_for = now.saturating_duration_since(since);
                if down_for <= after {
                    return true;
                }
                pruned.push(PrunedReplica {
                    runner: runner.id.clone(),
                    replica: r.id.clone(),
                    hostname: r.hostname.clone(),
                    down_for,
                });
                false
            });
        }
        if !pruned.is_empty() {
            self.replicas_pruned += pruned.len() as u64;
            self.dirty = true;
        }
        pruned
    }

    /// The counts `/metrics` publishes, at `now`.
    pub fn census(&self, now: Instant) -> Census {
        let waiting = self.waiting_by_runner();
        let mut runners = [0u64; 5];
        let mut replicas = [0u64; 5];
        for runner in self.data.runners.values() {
            let info = self.runner_info(
                runner,
                waiting.get(runner.id.as_str()).copied().unwrap_or(0),
                now,
            );
            runners[index_of(info.status)] += 1;
            for r in &info.replicas {
                replicas[index_of(r.status)] += 1;
            }
        }
        let state_index = |s: RunState| RunState::ALL.iter().position(|x| *x == s).unwrap_or(0);
        let mut operations = [0u64; 7];
        let mut op_states = BTreeMap::new();
        for op in self.data.operations.values() {
            let s = op.state();
            operations[state_index(s)] += 1;
            op_states.insert(op.operation.id.as_str(), s);
        }
        let mut executions = [0u64; 7];
        for exec in self.data.executions.values() {
            let states: Vec<RunState> = exec
                .operations
                .iter()
                .filter_map(|id| op_states.get(id.as_str()).copied())
                .collect();
            executions[state_index(super::execution_state(exec, &states))] += 1;
        }
        Census {
            runners,
            replicas,
            executions,
            operations,
            report_latency: self.report_latency.clone(),
            replicas_pruned: self.replicas_pruned,
        }
    }
}

/// A warning when the live (not down) replicas run different versions,
/// naming each version and its replicas.
fn version_warnings(replicas: &[ReplicaInfo]) -> Vec<String> {
    let mut by_version: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for r in replicas.iter().filter(|r| r.status != RunnerStatus::Down) {
        by_version.entry(&r.version).or_default().push(&r.id);
    }
    if by_version.len() < 2 {
        return Vec::new();
    }
    let versions: Vec<String> = by_version
        .iter()
        .map(|(v, ids)| format!("{} ({})", escape_controls(v), ids.join(", ")))
        .collect();
    vec![format!(
        "live replicas run different versions: {}",
        versions.join("; ")
    )]
}
