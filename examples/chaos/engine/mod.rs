//! The chaos suite's engine, shared by `examples/chaos` and the test that
//! shows each check catching a deliberate break: seeded fault scenarios
//! against the real runner (a child process running rdrunner's actors with
//! the awc transport, the disk spool and the local executor) and the
//! reference control plane, judged by the invariants in
//! `rdrunner_harness::invariants`.
//!
//! Codemap: `scenarios` (the scenarios and their timelines), `world` (the
//! harness, the fault proxy and the runner process of one scenario),
//! `child` (the runner process itself), `verdict` (the checks and the
//! table row).

pub mod child;
pub mod scenarios;
pub mod verdict;
pub mod world;

use std::time::Instant;

#[allow(unused_imports)]
pub use scenarios::{Options, BREAKS, SCENARIOS};
pub use verdict::Row;

/// Dispatches `--runner-child CONFIG`; answers `Some(exit code)` when this
/// process is a runner child.
pub fn child_mode() -> Option<i32> {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() == Some("--runner-child") {
        let config = args.next().unwrap_or_default();
        return Some(child::child_main(&config));
    }
    None
}

/// Runs `names` one after another, printing the seed first and a table row
/// per scenario as it ends; answers the rows.
pub fn run_all(names: &[String], opts: &Options) -> Vec<Row> {
    println!("chaos seed: {}", opts.seed);
    println!(
        "replay: cargo run --release --example chaos -- --seed {}{}{}{}",
        opts.seed,
        if names.len() == SCENARIOS.len() {
            " --scenario all".to_owned()
        } else {
            names
                .iter()
                .map(|n| format!(" --scenario {n}"))
                .collect::<String>()
        },
        if opts.quick { " --quick" } else { "" },
        opts.breaks
            .iter()
            .map(|b| format!(" --break {b}"))
            .collect::<String>()
    );
    println!("{}", verdict::header());
    let started = Instant::now();
    let system = actix_rt::System::new();
    let rows = system.block_on(async {
        let mut rows = Vec::new();
        for name in names {
            let row = scenarios::run(name, opts).await;
            println!("{}", verdict::line(&row));
            rows.push(row);
        }
        rows
    });
    println!();
    for row in &rows {
        for note in &row.notes {
            println!("  {}: {note}", row.scenario);
        }
        for f in &row.failures {
            println!("  {} FAIL: {f}", row.scenario);
        }
        println!("  {}: {:.1} s", row.scenario, row.elapsed.as_secs_f64());
    }
    let failed = rows.iter().filter(|r| !r.pass()).count();
    println!(
        "{} scenarios, {} passed, {} failed, {:.1} s (seed {})",
        rows.len(),
        rows.len() - failed,
        failed,
        started.elapsed().as_secs_f64(),
        opts.seed
    );
    rows
}
