//! Aborting SSH node steps: cancel and step timeout end the step's whole
//! process group on the node (TERM, grace, KILL) and leave nothing behind.

use std::time::{Duration, Instant};

use crate::fixture::*;
use rdrunner_actors::model::{ScriptStep, Step};
use rdrunner_actors::{AbortReason, AbortSignal};

/// Fires `reason` on a fresh signal once `marker` runs on the node.
fn abort_when_running(marker: &str, reason: AbortReason) -> AbortSignal {
    let abort = AbortSignal::new();
    let a = abort.clone();
    let marker = marker.to_owned();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        while processes_with(&marker).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        a.abort(reason);
    });
    abort
}

#[test]
fn cancel_terminates_the_whole_process_group() {
    let f = Fixture::new();
    let marker = unique_marker("cancel");
    // A pipeline and a background child: all in the step's group.
    let cmd =
        format!("sh -c 'sleep 60; echo {marker}' & sleep 60 | cat; echo {marker}-never; wait");
    let abort = abort_when_running(&marker, AbortReason::Cancelled);
    let started = Instant::now();
    let run = f.run(request(f.node(), command_step(&cmd)), &abort);
    let o = run.outcome().clone();
    assert!(started.elapsed() < Duration::from_secs(8), "abort was slow");
    assert!(!o.succeeded());
    assert_eq!(o.signal.as_deref(), Some("TERM"), "{o:?}");
    let msg = o.message.unwrap_or_default();
    assert!(msg.starts_with("cancelled: process group"), "{msg}");
    assert!(msg.contains("got TERM"), "{msg}");
    assert!(!run.stdout().iter().any(|l| l.contains("never")));
    let left = wait_no_processes(&marker, Duration::from_secs(5));
    assert!(left.is_empty(), "processes left on the node: {left:?}");
}

#[test]
fn abort_is_noticed_while_output_floods_in() {
    let f = Fixture::new();
    let marker = unique_marker("flood");
    let cmd = format!("yes {marker} flooding the runner");
    let abort = abort_when_running(&marker, AbortReason::Cancelled);
    let exec = f.executor();
    let req = request(f.node(), command_step(&cmd));
    let started = Instant::now();
    // On a thread, so that an abort that is never noticed fails the test
    // instead of hanging it.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = 0u64;
        let mut sink = |_: rdrunner_actors::model::Stream, _: String| lines += 1;
        let result = rdrunner_actors::NodeExecutor::execute(&exec, &req, &mut sink, &abort);
        let _ = tx.send((result, lines));
    });
    let Ok((result, lines)) = rx.recv_timeout(Duration::from_secs(20)) else {
        for pid in processes_with(&marker) {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid])
                .status();
        }
        panic!("the step did not stop within 20 s of the abort");
    };
    let o = result.unwrap();
    assert!(started.elapsed() < Duration::from_secs(8), "abort was slow");
    assert!(!o.succeeded());
    assert!(o.message.unwrap_or_default().starts_with("cancelled"));
    assert!(lines > 0);
    let left = wait_no_processes(&marker, Duration::from_secs(5));
    assert!(left.is_empty(), "processes left on the node: {left:?}");
}

#[test]
fn step_timeout_kills_what_ignores_term_after_the_grace() {
    let f = Fixture::new();
    let marker = unique_marker("timeout");
    let cmd = format!("trap '' TERM; sh -c 'trap \"\" TERM; sleep 60; echo {marker}' ; echo after");
    let abort = abort_when_running(&marker, AbortReason::TimedOut);
    let mut req = request(f.node(), command_step(&cmd));
    req.kill_grace = Duration::from_millis(500);
    let started = Instant::now();
    let run = f.run(req, &abort);
    let elapsed = started.elapsed();
    let o = run.outcome().clone();
    // The step's own shell died of TERM; its child ignoring TERM got KILL.
    assert_eq!(o.signal.as_deref(), Some("TERM"), "{o:?}");
    let msg = o.message.unwrap_or_default();
    assert!(msg.starts_with("step timed out:"), "{msg}");
    assert!(msg.contains("then KILL after 500ms grace"), "{msg}");
    // The grace was waited for, and not much more.
    assert!(elapsed >= Duration::from_millis(500), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(8), "{elapsed:?}");
    let left = wait_no_processes(&marker, Duration::from_secs(5));
    assert!(left.is_empty(), "processes left on the node: {left:?}");
}

#[test]
fn aborted_script_is_stopped_and_its_directory_removed() {
    let f = Fixture::new();
    let marker = unique_marker("script");
    let step = Step::Script(ScriptStep {
        script: format!("#!/bin/sh\nsleep 60\necho {marker}\n"),
        args: vec![marker.clone()],
        interpreter: Some("sh".to_owned()),
        file_extension: Some(".sh".to_owned()),
    });
    let abort = abort_when_running(&marker, AbortReason::Cancelled);
    let run = f.run(request(f.node(), step), &abort);
    assert!(!run.outcome().succeeded());
    let left = wait_no_processes(&marker, Duration::from_secs(5));
    assert!(left.is_empty(), "processes left on the node: {left:?}");
    let dirs: Vec<_> = std::fs::read_dir(f.remote_tmp()).unwrap().collect();
    assert!(dirs.is_empty(), "script directory left: {dirs:?}");
}

#[test]
fn abort_before_start_runs_nothing() {
    let f = Fixture::new();
    let canary = f.dir.path().join("ran");
    let abort = AbortSignal::new();
    abort.abort(AbortReason::Shutdown);
    let run = f.run(
        request(
            f.node(),
            command_step(&format!("touch {}", canary.display())),
        ),
        &abort,
    );
    let o = run.outcome();
    assert_eq!(o.exit_code, None);
    assert!(o
        .message
        .as_deref()
        .unwrap_or("")
        .contains("runner shutting down"));
    assert!(!canary.exists());
}
