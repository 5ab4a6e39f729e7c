//! The benchmark's results: rows that hold either a measured figure or the
//! reason there is none, the Markdown table, and BENCHMARKS.md, whose
//! generated part sits between markers so that the prose around it stays.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::time::Duration;

use crate::fixture::RunnerKind;
use crate::measure::Machine;

pub const BEGIN: &str = "<!-- bench:begin (written by `cargo run --release --example bench`) -->";
pub const END: &str = "<!-- bench:end -->";

/// A figure, or why there is none. There is no way to build a `Measured`
/// figure but from a measurement.
#[derive(Debug, Clone, PartialEq)]
pub enum Figure {
    Measured(String),
    /// Not measured; the text says why (not installed, failed, ...).
    Missing(String),
}

/// One line of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub bench: String,
    pub contender: String,
    pub metric: String,
    pub figure: Figure,
    pub target: String,
    /// Whether the target is met; `None` when the row has no target.
    pub met: Option<bool>,
}

impl Row {
    pub fn measured(
        bench: &str,
        contender: &str,
        metric: &str,
        figure: String,
        target: &str,
        met: Option<bool>,
    ) -> Row {
        Row {
            bench: bench.into(),
            contender: contender.into(),
            metric: metric.into(),
            figure: Figure::Measured(figure),
            target: target.into(),
            met,
        }
    }

    pub fn missing(bench: &str, contender: &str, metric: &str, why: &str) -> Row {
        Row {
            bench: bench.into(),
            contender: contender.into(),
            metric: metric.into(),
            figure: Figure::Missing(why.into()),
            target: String::new(),
            met: None,
        }
    }

    /// The whole benchmark failed before producing any figure.
    pub fn failed(bench: &str, why: &str) -> Row {
        Row::missing(bench, "-", "-", &format!("failed: {why}"))
    }

    /// Whether the row says its measurement failed (as opposed to a peer
    /// that is not installed or a figure that does not apply).
    pub fn is_failure(&self) -> bool {
        matches!(&self.figure, Figure::Missing(why) if why.starts_with("failed"))
    }

    pub fn one_line(&self) -> String {
        let fig = match &self.figure {
            Figure::Measured(s) => s.clone(),
            Figure::Missing(w) => format!("not measured: {w}"),
        };
        let verdict = match self.met {
            Some(true) => " [target met]",
            Some(false) => " [target MISSED]",
            None => "",
        };
        format!(
            "{} | {} | {}: {}{}",
            self.bench, self.contender, self.metric, fig, verdict
        )
    }
}

#[derive(Debug, Clone, Default)]
pub struct Table {
    pub rows: Vec<Row>,
}

/// One table cell: no pipes or newlines inside.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

pub fn markdown(
    table: &Table,
    machine: &Machine,
    command: &str,
    kind: &RunnerKind,
    took: Duration,
    load_start: &str,
    nodes: &str,
) -> String {
    let mut m = String::new();
    let _ = writeln!(m, "Command: `{command}`  ");
    let _ = writeln!(m, "Machine: {machine}  ");
    let _ = writeln!(m, "Runner: {}  ", kind.describe());
    let _ = writeln!(m, "Nodes: {nodes}  ");
    let _ = writeln!(
        m,
        "Load average (1/5/15 min) at start: {load_start}, at end: {}  ",
        crate::measure::load_avg()
    );
    let _ = writeln!(
        m,
        "Run: {} UTC, {:.0} s  ",
        crate::measure::utc_now(),
        took.as_secs_f64()
    );
    let _ = writeln!(m);
    let _ = writeln!(
        m,
        "| Benchmark | Contender | Metric | Figure | Target | Met |"
    );
    let _ = writeln!(m, "|---|---|---|---|---|---|");
    for r in &table.rows {
        let fig = match &r.figure {
            Figure::Measured(s) => s.clone(),
            Figure::Missing(w) => format!("*{w}*"),
        };
        let met = match r.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "",
        };
        let _ = writeln!(
            m,
            "| {} | {} | {} | {} | {} | {} |",
            cell(&r.bench),
            cell(&r.contender),
            cell(&r.metric),
            cell(&fig),
            cell(&r.target),
            met
        );
    }
    m
}

/// Replaces the generated part of `path` (between [`BEGIN`] and [`END`])
/// with `generated`, keeping what is around it; a new file gets a title.
pub fn write_benchmarks_md(path: &Path, generated: &str) -> std::io::Result<()> {
    let block = format!("{BEGIN}\n{generated}{END}\n");
    let text = match fs::read_to_string(path) {
        Ok(old) => match (old.find(BEGIN), old.find(END)) {
            (Some(b), Some(e)) if b < e => {
                format!(
                    "{}{block}{}",
                    &old[..b],
                    old[e + END.len()..].trim_start_matches('\n')
                )
            }
            _ => format!("{}\n{block}", old.trim_end()),
        },
        Err(_) => format!("# Benchmarks\n\n{block}"),
    };
    fs::write(path, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_part_is_replaced_and_prose_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("B.md");
        write_benchmarks_md(&path, "first\n").unwrap();
        let t = fs::read_to_string(&path).unwrap();
        assert!(t.starts_with("# Benchmarks\n") && t.contains("first\n"));
        fs::write(
            &path,
            format!("intro\n{}\nafter\n", t.trim_start_matches("# Benchmarks\n")),
        )
        .unwrap();
        write_benchmarks_md(&path, "second\n").unwrap();
        let t = fs::read_to_string(&path).unwrap();
        assert!(t.contains("second\n") && !t.contains("first"), "{t}");
        assert!(t.starts_with("intro\n") && t.ends_with("after\n"), "{t}");
    }

    #[test]
    fn a_missing_figure_shows_why() {
        let mut t = Table::default();
        t.rows.push(Row::missing(
            "fanout",
            "Ansible",
            "wall",
            "not installed (install with apt-get install -y ansible-core)",
        ));
        let md = markdown(
            &t,
            &Machine::describe(),
            "cmd",
            &RunnerKind::InProcess,
            Duration::from_secs(1),
            "0.00 0.00 0.00",
            "one sshd",
        );
        assert!(md.contains("| fanout | Ansible | wall | *not installed (install with apt-get install -y ansible-core)* |  |  |"), "{md}");
    }
}
