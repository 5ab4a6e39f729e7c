//! The invariants, checked on a finished scenario's world, and the table
//! row they make: operations submitted / ended as expected, report lines
//! expected / delivered / duplicated / lost, the largest check-in gap
//! outside the fault windows, restarts, escalations, peak RSS, verdict.

use std::time::Duration;

use rdrunner_actors::model::{ReportBody, Stream};
use rdrunner_harness::invariants::{
    check_report_stream, judge_node_lines, max_checkin_gap, node_lines_with_stream, number_ranges,
    LineCount, LineDiff,
};
use rdrunner_harness::RunState;

use super::world::{Expect, World};

/// One row of the table.
#[derive(Debug, Clone, Default)]
pub struct Row {
    pub scenario: String,
    pub submitted: usize,
    pub as_expected: usize,
    pub lines: LineCount,
    pub max_gap: Duration,
    pub gap_bound: Duration,
    pub restarts: u64,
    pub escalations: u64,
    pub peak_rss_mb: f64,
    pub rss_bound_mb: Option<f64>,
    /// Why the verdict is FAIL; empty = PASS.
    pub failures: Vec<String>,
    /// Facts worth printing under the table (fault counts, panics fired).
    pub notes: Vec<String>,
    pub elapsed: Duration,
}

impl Row {
    pub fn pass(&self) -> bool {
        self.failures.is_empty()
    }
}

/// What a scenario promises beyond the common invariants.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Largest allowed gap between check-ins outside the windows.
    pub gap: Duration,
    /// Peak RSS bound of the runner process, if the scenario has one.
    pub rss_mb: Option<f64>,
}

/// No process of an ended step may be left on its node: checked once every
/// operation is terminal and while the runner still runs (its end would
/// take the processes whose output it reads with it), with a bounded wait
/// for the kill grace.
pub async fn check_processes(world: &World, row: &mut Row) {
    let start = std::time::Instant::now();
    let mut left = world.marked_processes();
    while !left.is_empty() && start.elapsed() < Duration::from_secs(3) {
        actix_rt::time::sleep(Duration::from_millis(100)).await;
        left = world.marked_processes();
    }
    if !left.is_empty() {
        row.failures.push(format!(
            "{} step processes left running after their operations ended (pids {:?})",
            left.len(),
            left
        ));
    }
}

/// Checks the other invariants on `world`, once its runner has stopped.
pub async fn judge(world: &mut World, scenario: &str, bounds: Bounds, row: &mut Row) {
    row.scenario = scenario.to_owned();
    row.submitted = world.submitted.len();
    row.gap_bound = bounds.gap;
    row.rss_bound_mb = bounds.rss_mb;

    // 1. Every operation terminal, in the expected state; no report lost or
    //    duplicated, line by line against what the steps print.
    for s in &world.submitted {
        let Some(exec) = world.harness.execution(s.execution_id) else {
            row.failures.push(format!(
                "execution {} unknown to the harness",
                s.execution_id
            ));
            continue;
        };
        let Some(op) = exec.operations.first() else {
            row.failures
                .push(format!("execution {} has no operation", s.execution_id));
            continue;
        };
        let mut ok = true;
        let mut why = Vec::new();
        if !op.state.is_terminal() {
            ok = false;
            why.push(format!("still {:?}", op.state));
        }
        let reports = world.harness.reports(&op.id);
        if op.replica.is_some() {
            if let Err(e) = check_report_stream(&reports) {
                ok = false;
                why.push(format!("report stream: {e}"));
            }
        }
        let op_msg = op.message.clone().unwrap_or_default();
        let expected = s.lines.expand();
        for node in &s.nodes {
            let with_stream = node_lines_with_stream(&reports, node);
            let got: Vec<String> = with_stream.iter().map(|(_, l)| l.clone()).collect();
            let status = exec.nodes.get(node);
            let node_state = status.map(|n| n.state);
            let node_msg = status.and_then(|n| n.message.clone()).unwrap_or_default();
            // Whether the node's step had to run to its end.
            let complete = match s.expect {
                Expect::Succeed => true,
                Expect::Abort | Expect::SucceedOrRestarted => {
                    node_state == Some(RunState::Succeeded)
                }
                Expect::TimeOut => false,
                Expect::SucceedOrNodePanic => node_state == Some(RunState::Succeeded),
            };
            let v = judge_node_lines(&expected, &with_stream, complete);
            if let Some((stream, first)) = v.other_streams.first() {
                row.notes.push(format!(
                    "operation {} node {node}: {} line(s) on another stream than stdout, delivered and not counted as the step's (the first, on {}: {first:?})",
                    op.id,
                    v.other_streams.len(),
                    stream_name(*stream)
                ));
            }
            let c = v.diff.count;
            if v.failed() {
                ok = false;
                let stdout: Vec<(Stream, String)> = with_stream
                    .iter()
                    .filter(|(s, _)| *s == Stream::Stdout)
                    .cloned()
                    .collect();
                why.push(format!("node {node}: {}", describe_diff(&v.diff, &stdout)));
            }
            row.lines += c;
            let node_ok = match s.expect {
                Expect::Succeed => node_state == Some(RunState::Succeeded),
                Expect::Abort => {
                    matches!(node_state, Some(RunState::Aborted | RunState::Succeeded))
                        || (node_state.is_none() && op.replica.is_none())
                }
                Expect::TimeOut => node_state == Some(RunState::Timedout),
                Expect::SucceedOrNodePanic => {
                    node_state == Some(RunState::Succeeded)
                        || (node_state == Some(RunState::Failed)
                            && node_msg.contains("fail point")
                            && got.is_empty())
                }
                Expect::SucceedOrRestarted => {
                    node_state == Some(RunState::Succeeded)
                        || ended_by_restart(op.state, &op_msg)
                        || node_state.is_some_and(|st| ended_by_restart(st, &node_msg))
                }
            };
            if !node_ok {
                ok = false;
                let said: Vec<String> = reports
                    .iter()
                    .filter_map(|r| match &r.body {
                        ReportBody::Node(n) if &n.node == node => Some(format!(
                            "{} {}",
                            n.state.as_str(),
                            n.message.clone().unwrap_or_default()
                        )),
                        _ => None,
                    })
                    .collect();
                why.push(format!(
                    "node {node}: {node_state:?} {node_msg} (node reports: {})",
                    said.join(" / ")
                ));
            }
        }
        let op_ok = match s.expect {
            Expect::Succeed => op.state == RunState::Succeeded,
            Expect::Abort => matches!(op.state, RunState::Aborted | RunState::Succeeded),
            Expect::TimeOut => matches!(op.state, RunState::Timedout | RunState::Failed),
            Expect::SucceedOrNodePanic => {
                // Failed exactly when one of its node steps panicked.
                let panicked = s.nodes.iter().any(|n| {
                    exec.nodes
                        .get(n)
                        .and_then(|st| st.message.as_deref())
                        .is_some_and(|m| m.contains("fail point"))
                });
                op.state
                    == if panicked {
                        RunState::Failed
                    } else {
                        RunState::Succeeded
                    }
            }
            Expect::SucceedOrRestarted => {
                // Or carried on with after the restart, where the steps the
                // restart ended (local ones, not re-attached to) failed it.
                let failed_by_restart = op.state == RunState::Failed
                    && s.nodes.iter().all(|n| {
                        exec.nodes.get(n).is_some_and(|st| {
                            st.state == RunState::Succeeded
                                || ended_by_restart(
                                    st.state,
                                    st.message.as_deref().unwrap_or_default(),
                                )
                        })
                    });
                op.state == RunState::Succeeded
                    || ended_by_restart(op.state, &op_msg)
                    || failed_by_restart
            }
        };
        if !op_ok {
            ok = false;
            why.push(format!("operation {:?} {op_msg}", op.state));
        }
        if ok {
            row.as_expected += 1;
        } else {
            row.failures.push(format!(
                "operation {} (execution {}): {}",
                op.id,
                s.execution_id,
                why.join("; ")
            ));
        }
    }

    // 2. The check-in cadence outside the windows.
    let checkins = world.harness.checkins(&world.runner_id);
    if let Some((gap, end)) = max_checkin_gap(&checkins, &world.windows) {
        row.max_gap = gap;
        if gap > bounds.gap {
            let since_window = world
                .windows
                .iter()
                .filter(|w| w.to <= end)
                .map(|w| end.duration_since(w.to))
                .min()
                .map(|d| format!(", ending {:.2} s after a fault window", d.as_secs_f64()))
                .unwrap_or_default();
            row.failures.push(format!(
                "a gap of {:.2} s between check-ins outside the fault windows (bound {:.2} s{since_window})",
                gap.as_secs_f64(),
                bounds.gap.as_secs_f64()
            ));
        }
    } else {
        row.failures.push("no two check-ins observed".into());
    }

    // 4. Restarts, escalations, memory.
    row.restarts = world.restarts;
    row.escalations = world.escalations;
    row.peak_rss_mb = world.peak_rss_kb as f64 / 1024.0;
    if let Some(bound) = bounds.rss_mb {
        if row.peak_rss_mb >= bound {
            row.failures.push(format!(
                "peak RSS of the runner {:.1} MB, bound {bound} MB",
                row.peak_rss_mb
            ));
        }
    }
}

/// Says which lines went missing (by their number in what the step prints),
/// and which arrivals were not the step's lines, repeated or late, each with
/// the stream it came on.
fn describe_diff(d: &LineDiff, got: &[(Stream, String)]) -> String {
    let shown = |positions: &[usize]| -> String {
        let mut v: Vec<String> = positions
            .iter()
            .take(5)
            .map(|&i| {
                let (stream, text) = &got[i];
                let text: String = text.chars().take(80).collect();
                format!("#{} {}: {text:?}", i + 1, stream_name(*stream))
            })
            .collect();
        if positions.len() > 5 {
            v.push(format!("and {} more", positions.len() - 5));
        }
        v.join(", ")
    };
    let mut parts = vec![format!(
        "{} lines lost, {} duplicated ({} arrived",
        d.count.lost,
        d.count.duplicated,
        got.len()
    )];
    if !d.missing.is_empty() {
        parts.push(format!("missing: line {}", number_ranges(&d.missing)));
    }
    if !d.strangers.is_empty() {
        parts.push(format!("not the step's lines: {}", shown(&d.strangers)));
    }
    if !d.out_of_order.is_empty() {
        parts.push(format!("out of order: {}", shown(&d.out_of_order)));
    }
    if !d.duplicates.is_empty() {
        parts.push(format!("repeated: {}", shown(&d.duplicates)));
    }
    let tail: Vec<String> = got
        .iter()
        .rev()
        .take(3)
        .rev()
        .map(|(st, l)| format!("{} {l:?}", stream_name(*st)))
        .collect();
    parts.push(format!("the last: [{}])", tail.join(", ")));
    parts.join("; ")
}

fn stream_name(s: Stream) -> &'static str {
    match s {
        Stream::Stdout => "stdout",
        Stream::Stderr => "stderr",
        Stream::System => "system",
    }
}

/// An operation the runner's restart ended: failed by the restarted runner
/// ("runner restarted while the operation was running"), or aborted by the
/// runner that was going down (supervision escalated and stopped its steps).
fn ended_by_restart(state: RunState, message: &str) -> bool {
    (state == RunState::Failed && message.contains("restart"))
        || (state == RunState::Aborted && message.contains("shutting down"))
}

/// Prints the table header.
pub fn header() -> String {
    format!(
        "{:<20} {:>9} {:>9} {:>9} {:>9} {:>5} {:>5} {:>8} {:>8} {:>4} {:>4} {:>8} {:>7}",
        "scenario",
        "ops",
        "ops ok",
        "lines exp",
        "delivered",
        "dup",
        "lost",
        "max gap",
        "bound",
        "rst",
        "esc",
        "peak RSS",
        "verdict"
    )
}

pub fn line(r: &Row) -> String {
    format!(
        "{:<20} {:>9} {:>9} {:>9} {:>9} {:>5} {:>5} {:>7.2}s {:>7.2}s {:>4} {:>4} {:>6.1}MB {:>7}",
        r.scenario,
        r.submitted,
        r.as_expected,
        r.lines.expected,
        r.lines.delivered,
        r.lines.duplicated,
        r.lines.lost,
        r.max_gap.as_secs_f64(),
        r.gap_bound.as_secs_f64(),
        r.restarts,
        r.escalations,
        r.peak_rss_mb,
        if r.pass() { "PASS" } else { "FAIL" }
    )
}
