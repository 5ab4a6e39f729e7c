//! The checks the chaos suite runs on what the harness observed: output
//! lines against what the node steps are known to print, the shape of each
//! operation's report stream, and the largest gap between check-ins outside
//! the windows where a fault was meant to stop them.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use rdrunner_actors::model::{Report, ReportBody, Stream};

/// What became of the lines one node step was known to print.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LineCount {
    /// Lines that had to arrive: all of them when the step ran to its end,
    /// else those up to the last one that arrived (the step was cut short).
    pub expected: u64,
    /// Distinct expected lines that arrived in their place.
    pub delivered: u64,
    /// Arrivals of a line beyond its first.
    pub duplicated: u64,
    /// Lines that had to arrive and did not (or arrived out of order, or
    /// are not lines the step prints).
    pub lost: u64,
}

impl std::ops::AddAssign for LineCount {
    fn add_assign(&mut self, o: Self) {
        self.expected += o.expected;
        self.delivered += o.delivered;
        self.duplicated += o.duplicated;
        self.lost += o.lost;
    }
}

/// Compares the lines that arrived (`got`, in arrival order) with the lines
/// the step prints (`expected`, all distinct). With `complete` every line
/// must arrive; without it (a step aborted, timed out or cut by a restart)
/// what arrived must be a prefix of `expected`.
pub fn compare_lines(expected: &[String], got: &[String], complete: bool) -> LineCount {
    diff_lines(expected, got, complete).count
}

/// What `compare_lines` counts, with the lines behind each count, so that a
/// failed check can say exactly which lines went missing and what came
/// instead.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LineDiff {
    pub count: LineCount,
    /// Positions (0-based, in `expected`) of lines that had to arrive and
    /// did not arrive in their place.
    pub missing: Vec<usize>,
    /// Positions (0-based, in `got`) of arrivals that are not lines the
    /// step prints.
    pub strangers: Vec<usize>,
    /// Positions (0-based, in `got`) of lines that arrived after a later one.
    pub out_of_order: Vec<usize>,
    /// Positions (0-based, in `got`) of repeated arrivals.
    pub duplicates: Vec<usize>,
}

/// The line-by-line form of `compare_lines`.
pub fn diff_lines(expected: &[String], got: &[String], complete: bool) -> LineDiff {
    let position: BTreeMap<&str, usize> = expected
        .iter()
        .enumerate()
        .map(|(i, l)| (l.as_str(), i))
        .collect();
    let mut seen = HashSet::new();
    let mut d = LineDiff::default();
    // A line is in place when it comes after every line before it in
    // arrival order; one that arrives after a later line is out of order.
    let mut placed = HashSet::new();
    let mut furthest: Option<usize> = None;
    for (at, line) in got.iter().enumerate() {
        if !seen.insert(line.as_str()) {
            d.duplicates.push(at);
            continue;
        }
        match position.get(line.as_str()) {
            Some(&i) => {
                if matches!(furthest, Some(f) if i <= f) {
                    d.out_of_order.push(at);
                } else {
                    placed.insert(i);
                    furthest = Some(i);
                }
            }
            None => d.strangers.push(at),
        }
    }
    let must = if complete {
        expected.len()
    } else {
        furthest.map_or(0, |f| f + 1)
    };
    d.missing = (0..must).filter(|i| !placed.contains(i)).collect();
    d.count = LineCount {
        expected: must as u64,
        delivered: placed.len() as u64,
        duplicated: d.duplicates.len() as u64,
        lost: d.missing.len() as u64 + d.strangers.len() as u64,
    };
    d
}

/// Writes runs of positions compactly: `[3, 4, 5, 9]` as `4-6, 10`
/// (1-based, as line numbers are counted).
pub fn number_ranges(positions: &[usize]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < positions.len() {
        let start = positions[i];
        let mut end = start;
        while i + 1 < positions.len() && positions[i + 1] == end + 1 {
            i += 1;
            end = positions[i];
        }
        parts.push(if start == end {
            format!("{}", start + 1)
        } else {
            format!("{}-{}", start + 1, end + 1)
        });
        i += 1;
    }
    parts.join(", ")
}

/// The verdict on one node step's output lines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeLines {
    /// The step's own lines (what it prints on stdout) against what arrived
    /// on stdout.
    pub diff: LineDiff,
    /// Lines that arrived on another stream (stderr, the runner's own
    /// messages), with their stream: output of the node's environment
    /// (login scripts, shell warnings), delivered as printed, not lines the
    /// step was expected to print. They are reported, not counted as lost.
    pub other_streams: Vec<(Stream, String)>,
}

impl NodeLines {
    /// Whether a line of the step is missing, repeated, late, or replaced.
    pub fn failed(&self) -> bool {
        self.diff.count.lost > 0 || self.diff.count.duplicated > 0
    }
}

/// Judges a node step that prints `expected` (all distinct) on stdout from
/// what arrived (`got`, in seq order, with streams): its stdout lines must
/// be `expected` (all of it with `complete`, else a prefix), each once and
/// in order; anything on stdout that is not one of its lines is a failure.
pub fn judge_node_lines(
    expected: &[String],
    got: &[(Stream, String)],
    complete: bool,
) -> NodeLines {
    let stdout: Vec<String> = got
        .iter()
        .filter(|(s, _)| *s == Stream::Stdout)
        .map(|(_, l)| l.clone())
        .collect();
    NodeLines {
        diff: diff_lines(expected, &stdout, complete),
        other_streams: got
            .iter()
            .filter(|(s, _)| *s != Stream::Stdout)
            .cloned()
            .collect(),
    }
}

/// The log lines of `node` in an operation's stored reports, in seq order,
/// with the stream each came on.
pub fn node_lines_with_stream(reports: &[Report], node: &str) -> Vec<(Stream, String)> {
    reports
        .iter()
        .filter_map(|r| match &r.body {
            ReportBody::Log(l) if l.node == node => Some((l.stream, l.text.clone())),
            _ => None,
        })
        .collect()
}

/// The log lines of `node` in an operation's stored reports, in seq order.
pub fn node_lines(reports: &[Report], node: &str) -> Vec<String> {
    reports
        .iter()
        .filter_map(|r| match &r.body {
            ReportBody::Log(l) if l.node == node => Some(l.text.clone()),
            _ => None,
        })
        .collect()
}

/// Checks an operation's stored report stream: seqs 1, 2, 3, ... and one
/// terminal `op` report, the last.
pub fn check_report_stream(reports: &[Report]) -> Result<(), String> {
    for (i, r) in reports.iter().enumerate() {
        if r.seq != i as u64 + 1 {
            return Err(format!("report {} has seq {}", i + 1, r.seq));
        }
    }
    let terminals: Vec<usize> = reports
        .iter()
        .enumerate()
        .filter(|(_, r)| r.is_terminal())
        .map(|(i, _)| i)
        .collect();
    match terminals.as_slice() {
        [] => Err("no terminal op report".into()),
        [i] if *i + 1 == reports.len() => Ok(()),
        [i] => Err(format!(
            "the terminal op report is report {} of {}, not the last",
            i + 1,
            reports.len()
        )),
        more => Err(format!("{} terminal op reports", more.len())),
    }
}

/// A time span in which gaps between check-ins are expected (an outage, a
/// runner restart).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from: Instant,
    pub to: Instant,
}

/// The largest gap between two consecutive check-ins of the same replica
/// that does not overlap any of `excluded`, and where it ended.
pub fn max_checkin_gap(
    checkins: &BTreeMap<String, Vec<Instant>>,
    excluded: &[Window],
) -> Option<(Duration, Instant)> {
    let mut worst: Option<(Duration, Instant)> = None;
    for times in checkins.values() {
        for pair in times.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            if excluded.iter().any(|w| a < w.to && b > w.from) {
                continue;
            }
            let gap = b.saturating_duration_since(a);
            if !matches!(worst, Some((g, _)) if gap <= g) {
                worst = Some((gap, b));
            }
        }
    }
    worst
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdrunner_actors::model::{LogReport, OpReport, State};

    fn lines(range: std::ops::RangeInclusive<u32>) -> Vec<String> {
        range.map(|i| format!("line {i}")).collect()
    }

    #[test]
    fn every_line_once_in_order_is_clean() {
        let c = compare_lines(&lines(1..=5), &lines(1..=5), true);
        assert_eq!(
            c,
            LineCount {
                expected: 5,
                delivered: 5,
                duplicated: 0,
                lost: 0
            }
        );
    }

    #[test]
    fn a_missing_line_is_lost_even_in_a_prefix() {
        let mut got = lines(1..=5);
        got.remove(2);
        assert_eq!(compare_lines(&lines(1..=5), &got, true).lost, 1);
        // Cut short after line 5 of 10: lines 1..5 had to arrive.
        let c = compare_lines(&lines(1..=10), &got, false);
        assert_eq!((c.expected, c.lost), (5, 1));
        // A clean prefix is fine when the step was cut short, not when it ran to its end.
        assert_eq!(compare_lines(&lines(1..=10), &lines(1..=4), false).lost, 0);
        assert_eq!(compare_lines(&lines(1..=10), &lines(1..=4), true).lost, 6);
    }

    #[test]
    fn repeats_are_duplicates_and_strangers_or_reordering_are_lost() {
        let mut got = lines(1..=3);
        got.push("line 2".into());
        let c = compare_lines(&lines(1..=3), &got, true);
        assert_eq!((c.duplicated, c.lost), (1, 0));
        let c = compare_lines(
            &lines(1..=3),
            &["line 1".into(), "line 3".into(), "line 2".into()],
            true,
        );
        assert_eq!(c.lost, 1);
        let c = compare_lines(
            &lines(1..=2),
            &["line 1".into(), "junk".into(), "line 2".into()],
            true,
        );
        assert_eq!(c.lost, 1);
    }

    #[test]
    fn the_diff_names_each_missing_stranger_and_late_line() {
        let got: Vec<String> = ["line 1", "junk", "line 4", "line 3", "line 4", "line 6"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let d = diff_lines(&lines(1..=6), &got, true);
        assert_eq!(d.missing, vec![1, 2, 4]);
        assert_eq!(d.strangers, vec![1]);
        assert_eq!(d.out_of_order, vec![3]);
        assert_eq!(d.duplicates, vec![4]);
        assert_eq!(d.count, compare_lines(&lines(1..=6), &got, true));
        assert_eq!(number_ranges(&d.missing), "2-3, 5");
        assert_eq!(number_ranges(&[]), "");
    }

    #[test]
    fn lines_from_the_nodes_environment_on_stderr_are_not_lost_lines() {
        // The shape of the reported ssh-blackhole failure: a step cut by its
        // timeout after line 30, every line of it there in order, and two
        // more lines that are not the step's, on stderr.
        let mut got: Vec<(Stream, String)> = lines(1..=30)
            .into_iter()
            .map(|l| (Stream::Stdout, l))
            .collect();
        got.insert(0, (Stream::Stderr, "warning from a login script".into()));
        got.insert(12, (Stream::Stderr, "second line of it".into()));
        let v = judge_node_lines(&lines(1..=3000), &got, false);
        assert!(!v.failed(), "{v:?}");
        assert_eq!(v.diff.count.expected, 30);
        assert_eq!(v.diff.count.delivered, 30);
        assert_eq!(v.other_streams.len(), 2);
        // Counted the old way, over every stream, they made "2 lines lost".
        let all: Vec<String> = got.iter().map(|(_, l)| l.clone()).collect();
        assert_eq!(compare_lines(&lines(1..=3000), &all, false).lost, 2);
        // The same two lines on stdout are not the step's output: a failure.
        let mut on_stdout = got.clone();
        for g in on_stdout.iter_mut() {
            g.0 = Stream::Stdout;
        }
        let v = judge_node_lines(&lines(1..=3000), &on_stdout, false);
        assert!(v.failed());
        assert_eq!(v.diff.strangers, vec![0, 12]);
        // A line missing from the middle fails whatever else arrived.
        got.remove(5);
        let v = judge_node_lines(&lines(1..=3000), &got, false);
        assert!(v.failed());
        assert_eq!(v.diff.missing, vec![4]);
    }

    fn report(seq: u64, body: ReportBody) -> Report {
        Report {
            op_id: "op".into(),
            seq,
            ts: "2026-11-28T12:00:00.000Z".into(),
            body,
        }
    }

    fn log(text: &str) -> ReportBody {
        ReportBody::Log(LogReport {
            node: "n".into(),
            step: 1,
            stream: Stream::Stdout,
            text: text.into(),
        })
    }

    fn op(state: State) -> ReportBody {
        ReportBody::Op(OpReport {
            state,
            message: None,
        })
    }

    #[test]
    fn report_streams_need_contiguous_seqs_and_one_terminal_report_last() {
        let good = vec![
            report(1, op(State::Running)),
            report(2, log("a")),
            report(3, op(State::Succeeded)),
        ];
        assert!(check_report_stream(&good).is_ok());
        assert_eq!(node_lines(&good, "n"), vec!["a".to_owned()]);
        let mut gap = good.clone();
        gap[1].seq = 5;
        assert!(check_report_stream(&gap).unwrap_err().contains("seq 5"));
        assert!(check_report_stream(&good[..2])
            .unwrap_err()
            .contains("no terminal"));
        let mut late = good.clone();
        late.push(report(4, log("b")));
        assert!(check_report_stream(&late)
            .unwrap_err()
            .contains("not the last"));
    }

    #[test]
    fn gaps_inside_excluded_windows_do_not_count() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut c = BTreeMap::new();
        c.insert("r1".to_owned(), vec![at(0), at(1000), at(9000), at(10_000)]);
        c.insert("r2".to_owned(), vec![at(20_000), at(21_500)]);
        let (gap, _) = max_checkin_gap(&c, &[]).unwrap();
        assert_eq!(gap, Duration::from_millis(8000));
        let w = Window {
            from: at(2000),
            to: at(8000),
        };
        let (gap, end) = max_checkin_gap(&c, &[w]).unwrap();
        assert_eq!((gap, end), (Duration::from_millis(1500), at(21_500)));
        assert!(max_checkin_gap(&BTreeMap::new(), &[]).is_none());
    }
}
