//! rdrunner's benchmarks against its peers, all on loopback:
//! `cargo run --release --example bench -- [--quick | --smoke] [--only NAME]`.
//!
//! Starts what it needs (the reference control plane, a private sshd serving
//! the nodes under distinct names, the runner), measures dispatch latency,
//! report latency, log throughput, footprint and check-in jitter, and the
//! cost curves (fan-out by node count against OpenSSH and Ansible, runner
//! resources by concurrent SSH steps, queue hand-off by backlog, control
//! plane load by replicas, report latency by output rate), prints Markdown
//! tables and writes them to BENCHMARKS.md with the machine and the exact
//! command, and draws each curve as an SVG plot under docs/bench/. A figure
//! it did not measure is never printed: the row says why instead.

#[path = "bench/child.rs"]
mod child;
#[path = "bench/curves.rs"]
mod curves;
#[path = "bench/fixture.rs"]
mod fixture;
#[path = "bench/measure.rs"]
mod measure;
#[path = "bench/peers.rs"]
mod peers;
#[path = "bench/plot.rs"]
mod plot;
#[path = "bench/report.rs"]
mod report;
#[path = "bench/suites.rs"]
mod suites;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;

use fixture::{release_binary, RunnerKind, CHILD_FLAG};
use report::{Row, Table};

/// The benchmarks, in the order they run.
pub const NAMES: &[&str] = &[
    "dispatch",
    "report",
    "fanout",
    "throughput",
    "footprint",
    "jitter",
    "steps",
    "backlog",
    "replicas",
    "report-rate",
];

/// How much each benchmark does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    /// The figures of BENCHMARKS.md.
    Full,
    /// Smaller samples, same shape (`--quick`).
    Quick,
    /// Every suite at a tiny size, to show that the benchmark still runs
    /// end to end (`--smoke`, part of `scripts/test.sh`): its figures mean
    /// nothing, it writes no BENCHMARKS.md, and it fails when a suite does.
    Smoke,
}

impl Size {
    /// The value for this size.
    pub fn pick<T>(self, full: T, quick: T, smoke: T) -> T {
        match self {
            Size::Full => full,
            Size::Quick => quick,
            Size::Smoke => smoke,
        }
    }
}

/// Parsed command line.
#[derive(Debug, Clone)]
pub struct Args {
    pub size: Size,
    pub only: Option<String>,
    /// Run the in-process runtime even when the release binary is there.
    pub in_process: bool,
    /// Where the Markdown goes (BENCHMARKS.md at the workspace root).
    pub out: PathBuf,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        size: Size::Full,
        only: None,
        in_process: false,
        out: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("BENCHMARKS.md"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" | "--smoke" => {
                if args.size != Size::Full {
                    anyhow::bail!("--quick and --smoke are one or the other");
                }
                args.size = if a == "--quick" {
                    Size::Quick
                } else {
                    Size::Smoke
                };
            }
            "--in-process" => args.in_process = true,
            "--only" => {
                let name = it.next().context("--only needs a benchmark name")?;
                if !NAMES.contains(&name.as_str()) {
                    anyhow::bail!("unknown benchmark {name:?}; one of: {}", NAMES.join(", "));
                }
                args.only = Some(name);
            }
            "--out" => args.out = PathBuf::from(it.next().context("--out needs a path")?),
            "-h" | "--help" => {
                println!(
                    "usage: cargo run --release --example bench -- [--quick | --smoke] [--only NAME] [--in-process] [--out FILE]\n\
                     --smoke: every benchmark at a tiny size, to check that it runs (writes no file)\n\
                     benchmarks: {}",
                    NAMES.join(", ")
                );
                std::process::exit(0);
            }
            other => anyhow::bail!("unknown argument {other:?}; try --help"),
        }
    }
    Ok(args)
}

fn main() -> anyhow::Result<()> {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some(curves::LOAD_FLAG) {
        return curves::load_child(&argv[2..]);
    }
    if argv.get(1).map(String::as_str) == Some(curves::CONTROL_PLANE_FLAG) {
        return curves::control_plane_child(&argv[2..]);
    }
    if argv.get(1).map(String::as_str) == Some(CHILD_FLAG) {
        let dir = argv
            .get(2)
            .context("the runner child needs its directory")?;
        // One line on stderr, which the benchmark shows in its table.
        if let Err(e) = child::run(PathBuf::from(dir).as_path()) {
            eprintln!("runner child: {e:#}");
            std::process::exit(1);
        }
        return Ok(());
    }
    let args = parse_args()?;
    let system = actix_rt::System::new();
    system.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let work = tempfile::Builder::new()
        .prefix("rdrunner-bench")
        .tempdir()
        .context("making a work directory")?;
    let machine = measure::Machine::describe();
    let load_start = measure::load_avg();
    println!("machine: {machine}; load average {load_start}");
    let nodes = fixture::Nodes::start(work.path()).context("starting the nodes' sshd")?;
    println!(
        "nodes: private sshd on 127.0.0.1 to 127.0.0.{}, port {} ({})",
        fixture::LISTEN_ADDRESSES,
        nodes.sshd.port(),
        fixture::SSHD_SETTINGS.join(", ")
    );
    println!("nodes: {}", nodes.user_note);
    let kind = if args.in_process {
        RunnerKind::InProcess
    } else {
        choose_runner(&nodes, work.path()).await
    };
    println!("runner: {}", kind.describe());

    let env = suites::Env {
        args: args.clone(),
        nodes,
        kind: kind.clone(),
        work: work.path().to_path_buf(),
        curves: Default::default(),
    };
    let mut table = Table::default();
    for name in NAMES {
        if args.only.as_deref().is_some_and(|o| o != *name) {
            continue;
        }
        println!("== {name}");
        let t = Instant::now();
        let rows = match suites::run(name, &env).await {
            Ok(rows) => rows,
            Err(e) => vec![Row::failed(name, &format!("{e:#}"))],
        };
        for r in &rows {
            println!("   {}", r.one_line());
        }
        println!("   ({:.1} s)", t.elapsed().as_secs_f64());
        table.rows.extend(rows);
    }
    let curves = env.curves.take();
    if args.size == Size::Smoke {
        // The plots are drawn and checked, in the work directory only.
        let mut plot_failures = Vec::new();
        for c in &curves {
            match c.write_svg(&work.path().join(plot::PLOT_DIR)) {
                Ok(path) => println!("smoke: {} is a valid SVG", path.display()),
                Err(e) => plot_failures.push(format!("plot {}: {e:#}", c.file)),
            }
        }
        return smoke_verdict(&table, &plot_failures, started.elapsed());
    }
    let command = command_line(&args);
    let markdown = report::markdown(
        &table,
        &machine,
        &command,
        &kind,
        started.elapsed(),
        &load_start,
        &format!(
            "one private sshd on 127.0.0.1 to 127.0.0.{} ({}), {}",
            fixture::LISTEN_ADDRESSES,
            fixture::SSHD_SETTINGS.join(", "),
            env.nodes.user_note
        ),
    );
    let mut markdown = markdown;
    let plots = args
        .out
        .parent()
        .unwrap_or(std::path::Path::new("."))
        .join(plot::PLOT_DIR);
    if !curves.is_empty() {
        markdown.push_str("\n### Cost curves\n\n");
    }
    for c in &curves {
        markdown.push_str(&c.markdown());
        match c.write_svg(&plots) {
            Ok(path) => println!("plot written to {}", path.display()),
            Err(e) => {
                println!("plot {}: {e:#}", c.file);
                markdown.push_str(&format!("*The plot could not be drawn: {e:#}*\n\n"));
            }
        }
    }
    println!("\n{markdown}");
    report::write_benchmarks_md(&args.out, &markdown)
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!("written to {}", args.out.display());
    Ok(())
}

/// The end of a smoke run: its figures are not worth a table, but a
/// benchmark that failed (rather than one whose peer is not installed) fails
/// the run, so that a change that breaks the benchmark is seen.
fn smoke_verdict(
    table: &Table,
    plot_failures: &[String],
    took: std::time::Duration,
) -> anyhow::Result<()> {
    let mut failed: Vec<String> = table
        .rows
        .iter()
        .filter(|r| r.is_failure())
        .map(Row::one_line)
        .collect();
    failed.extend(plot_failures.iter().cloned());
    println!(
        "smoke: {} rows, {} failed, {:.1} s",
        table.rows.len(),
        failed.len(),
        took.as_secs_f64()
    );
    if failed.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("the benchmark smoke run failed:\n{}", failed.join("\n"))
    }
}

/// The release binary when it starts and checks in; else the in-process
/// runtime, saying why.
async fn choose_runner(nodes: &fixture::Nodes, work: &std::path::Path) -> RunnerKind {
    let Some(bin) = release_binary() else {
        println!("runner: no target/release/rdrunner (build it with `cargo build --release`)");
        return RunnerKind::InProcess;
    };
    let kind = RunnerKind::Binary(bin);
    let probe = async {
        let plane = fixture::Plane::start(Default::default(), &[]).await?;
        let mut runner = fixture::RunnerProcess::start(
            &kind,
            &work.join("probe"),
            &plane,
            nodes,
            &Default::default(),
        )
        .await?;
        runner.stop();
        anyhow::Ok(())
    };
    match probe.await {
        Ok(()) => kind,
        Err(e) => {
            println!("runner: the release binary cannot be used ({e:#}); falling back");
            RunnerKind::InProcess
        }
    }
}

fn command_line(args: &Args) -> String {
    let mut c = String::from("cargo run --release --example bench --");
    match args.size {
        Size::Full => {}
        Size::Quick => c.push_str(" --quick"),
        Size::Smoke => c.push_str(" --smoke"),
    }
    if let Some(o) = &args.only {
        c.push_str(&format!(" --only {o}"));
    }
    if args.in_process {
        c.push_str(" --in-process");
    }
    c
}
