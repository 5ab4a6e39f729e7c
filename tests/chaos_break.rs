//! Each chaos check catches a real break: one quick scenario runs with a
//! deliberate break in the runner (`--break NAME` of the chaos example) and
//! its verdict must be FAIL for the reason that check gives; the same
//! scenario without the break passes.
//!
//! The test builds the chaos engine from `examples/chaos/engine` and runs
//! its own executable as the runner process (`--runner-child`), hence
//! `harness = false`.

#[path = "../examples/chaos/engine/mod.rs"]
#[allow(dead_code)]
mod engine;

use std::process::ExitCode;

/// How a check shows it caught the break.
enum Caught {
    /// Report lines counted lost.
    Lost,
    /// Report lines counted duplicated.
    Duplicated,
    /// A failure saying this.
    Says(&'static str),
}

/// (break, scenario, how the check must catch it)
const CASES: &[(&str, &str, Caught)] = &[
    ("drop-report", "log-flood", Caught::Lost),
    ("duplicate-report", "log-flood", Caught::Duplicated),
    ("stall-poller", "outage", Caught::Says("between check-ins")),
    ("leak-process", "cancel-storm", Caught::Says("left running")),
    (
        "drop-terminal",
        "log-flood",
        Caught::Says("no terminal op report"),
    ),
    ("hog-memory", "log-flood", Caught::Says("peak RSS")),
    (
        "no-reattach",
        "ssh-drop",
        Caught::Says("lost the connection"),
    ),
];

fn run(scenario: &str, breaks: &[&str]) -> engine::Row {
    let opts = engine::Options {
        seed: 7,
        quick: true,
        breaks: breaks.iter().map(|b| b.to_string()).collect(),
        keep: false,
        // A broken runner may never end its operations.
        wait_cap: Some(std::time::Duration::from_secs(15)),
    };
    actix_rt::System::new().block_on(engine::scenarios::run(scenario, &opts))
}

fn main() -> ExitCode {
    if let Some(code) = engine::child_mode() {
        return ExitCode::from(code as u8);
    }
    // `cargo test NAME` passes a filter: run only when it matches.
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let mut failed = 0;
    let control = run("log-flood", &[]);
    println!(
        "control log-flood without a break: pass = {}",
        control.pass()
    );
    if !control.pass() {
        println!("  {:?}", control.failures);
        failed += 1;
    }
    for (brk, scenario, how) in CASES {
        if !filter.is_empty() && !filter.iter().any(|f| brk.contains(f.as_str())) {
            continue;
        }
        let row = run(scenario, &[brk]);
        let caught = !row.pass()
            && match how {
                Caught::Lost => row.lines.lost > 0,
                Caught::Duplicated => row.lines.duplicated > 0,
                Caught::Says(says) => row.failures.iter().any(|f| f.contains(says)),
            };
        println!(
            "--break {brk} on {scenario}: verdict {} ({})",
            if row.pass() { "PASS" } else { "FAIL" },
            if caught { "caught" } else { "NOT caught" }
        );
        for f in &row.failures {
            println!("  {f}");
        }
        if !caught {
            failed += 1;
        }
    }
    if failed == 0 {
        println!("test result: ok");
        ExitCode::SUCCESS
    } else {
        println!("test result: FAILED ({failed})");
        ExitCode::FAILURE
    }
}
