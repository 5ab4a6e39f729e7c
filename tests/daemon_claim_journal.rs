//! With the `failpoints` feature: `rdrunner run` (the real binary) killed
//! between the control plane's answer to a claim and anything recorded of
//! that answer (`poller::claimed=abort`, the process aborts as `kill -9`
//! would) settles the claim within seconds of its restart, through the claim
//! journal and `POST /resume`, instead of leaving it to the control plane's
//! down-timeout: carried on with (the step runs, once), or, with
//! `runner.reattach = false`, reported failed without running it. Run with
//! `cargo test --features failpoints`.
#![cfg(feature = "failpoints")]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdrunner_actors::model::{CommandStep, Node, ReportBody, State, Step};
use rdrunner_harness::{
    Cadence, CreateRunner, Harness, HarnessConfig, RunState, SubmitExecution, Thresholds,
};

const CONFIG: &str = "\
[runner]
localExecutor = true
pollIntervalMs = 1000
reportIntervalMs = 50
[log]
stderr = false
[spool]
fsync = \"always\"
";

/// `rdrunner run` in `dir`, with `failpoints` armed when not empty.
fn start(dir: &Path, failpoints: &str) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rdrunner"));
    cmd.current_dir(dir)
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, _) in std::env::vars() {
        if k.starts_with("RDRUNNER") || k.starts_with("RUNNER_RUNDECK_") {
            cmd.env_remove(k);
        }
    }
    if !failpoints.is_empty() {
        cmd.env("RDRUNNER_FAILPOINTS", failpoints);
    }
    cmd.spawn().unwrap()
}

#[actix_rt::test]
async fn a_claim_killed_between_the_answer_and_the_spool_write_is_resolved_within_10_s() {
    claim_killed_before_the_spool_write(true).await;
}

#[actix_rt::test]
async fn without_reattach_such_a_claim_is_reported_failed_within_10_s() {
    claim_killed_before_the_spool_write(false).await;
}

async fn claim_killed_before_the_spool_write(reattach: bool) {
    // A down-timeout far beyond the test: only the resume can end the
    // operation in time.
    let h = Harness::start(HarnessConfig {
        cadence: Cadence {
            poll_interval_ms: 1000,
            long_poll_ms: 500,
            report_interval_ms: 50,
            report_batch_max: 1000,
            lease_ms: 5000,
        },
        thresholds: Thresholds {
            unknown_after: Duration::from_secs(300),
            down_after: Duration::from_secs(600),
        },
        ..HarnessConfig::default()
    })
    .unwrap();
    let admin = h.admin();
    let created = admin
        .create_runner(&CreateRunner {
            name: "journal".into(),
            ..CreateRunner::default()
        })
        .await
        .unwrap();
    admin
        .assign_project(&created.runner_id, "p", ".*")
        .await
        .unwrap();
    admin.set_nodes("p", &[Node::local("self")]).await.unwrap();
    let d = tempfile::tempdir().unwrap();
    let creds = d.path().join(".rdrunner-creds");
    std::fs::write(&creds, &created.credentials).unwrap();
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(
        d.path().join("runner.toml"),
        CONFIG.replace("[runner]\n", &format!("[runner]\nreattach = {reattach}\n")),
    )
    .unwrap();

    let mut child = start(d.path(), "poller::claimed=abort");
    let exec = admin
        .submit_execution(
            "p",
            &SubmitExecution::new(
                vec![Step::Command(CommandStep {
                    command: "echo once".into(),
                })],
                ".*",
            ),
        )
        .await
        .unwrap();
    // The process aborts right after the control plane answered the claim.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "rdrunner did not abort");
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!status.success(), "{status:?}");
    let before = admin.execution(exec).await.unwrap();
    assert_eq!(before.operations[0].state, RunState::Running);
    let dead_replica = before.operations[0].replica.clone().unwrap();
    let op_id = before.operations[0].id.clone();
    assert!(
        h.reports(&op_id).is_empty(),
        "nothing was reported before the abort"
    );

    let restarted = Instant::now();
    let mut child = start(d.path(), "");
    let end = admin
        .wait_terminal(exec, Duration::from_secs(10))
        .await
        .expect("the operation ends within 10 s of the restart");
    assert!(restarted.elapsed() < Duration::from_secs(10));
    let op = &end.operations[0];
    assert_ne!(op.replica.as_deref(), Some(dead_replica.as_str()));
    let reports = h.reports(&op_id);
    if reattach {
        // Given back and carried on with: the step had not started, so it
        // runs now, once.
        assert_eq!(op.state, RunState::Succeeded, "{op:?}");
        let out: Vec<String> = admin
            .all_output(exec)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.text)
            .collect();
        assert_eq!(out, vec!["once".to_owned()]);
        let _ = child.kill();
        let _ = child.wait();
        return;
    }
    assert_eq!(op.state, RunState::Failed, "{op:?}");
    assert_eq!(reports.len(), 1, "{reports:?}");
    match &reports[0].body {
        ReportBody::Op(r) => {
            assert_eq!(r.state, State::Failed);
            assert!(
                r.message.as_deref().unwrap_or("").contains("restarted"),
                "{r:?}"
            );
        }
        other => panic!("not a terminal report: {other:?}"),
    }
    // The step never ran.
    assert!(admin.all_output(exec).await.unwrap().is_empty());
    let _ = child.kill();
    let _ = child.wait();
}
