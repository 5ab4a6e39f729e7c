//! `cargo run --release --example chaos -- --seed N [--scenario NAME|all]
//! [--quick] [--break NAME]`: seeded fault scenarios against the real runner
//! and the reference control plane, one table row per scenario; exits
//! non-zero if any invariant breaks. See the README's "Chaos runs".

mod engine;

use std::process::ExitCode;

use clap::Parser;

/// Seeded chaos scenarios against rdrunner and its reference control plane.
#[derive(Parser)]
#[command(name = "chaos")]
struct Cli {
    /// Seed of every random choice (printed first, so a run can be replayed);
    /// random when not given.
    #[arg(long)]
    seed: Option<u64>,
    /// A scenario name, or `all`. `--list` shows them.
    #[arg(long, default_value = "all")]
    scenario: Vec<String>,
    /// Shrink durations and volumes so that every scenario runs in CI.
    #[arg(long)]
    quick: bool,
    /// Break the runner on purpose (to see a check fail); `--list` shows them.
    #[arg(long = "break", value_name = "NAME")]
    breaks: Vec<String>,
    /// Keep each scenario's directory (runner.log, runner.stderr, spool) and
    /// print where it is.
    #[arg(long)]
    keep: bool,
    /// List the scenarios and the breaks.
    #[arg(long)]
    list: bool,
}

fn main() -> ExitCode {
    if let Some(code) = engine::child_mode() {
        return ExitCode::from(code as u8);
    }
    let cli = Cli::parse();
    if cli.list {
        println!("scenarios:");
        for (name, what) in engine::SCENARIOS {
            println!("  {name:<20} {what}");
        }
        println!("breaks (--break NAME):");
        for (name, what) in engine::BREAKS {
            println!("  {name:<20} {what}");
        }
        return ExitCode::SUCCESS;
    }
    let mut names = Vec::new();
    for s in &cli.scenario {
        if s == "all" {
            names.extend(engine::SCENARIOS.iter().map(|(n, _)| n.to_string()));
        } else if engine::SCENARIOS.iter().any(|(n, _)| n == s) {
            names.push(s.clone());
        } else {
            eprintln!("chaos: no scenario `{s}`; --list shows them");
            return ExitCode::from(2);
        }
    }
    for b in &cli.breaks {
        if !engine::BREAKS.iter().any(|(n, _)| n == b) {
            eprintln!("chaos: no break `{b}`; --list shows them");
            return ExitCode::from(2);
        }
    }
    let opts = engine::Options {
        seed: cli.seed.unwrap_or_else(rand::random),
        quick: cli.quick,
        breaks: cli.breaks,
        keep: cli.keep,
    };
    let rows = engine::run_all(&names, &opts);
    if rows.iter().all(|r| r.pass()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
