//! `rdrunner run` (the real binary) against the reference control plane on
//! 127.0.0.1:0: a local job end to end, SIGTERM drain, `kill -9` and
//! restart without losing or duplicating a report, refused credentials,
//! local execution only when the configuration turns it on, and a local
//! step that sees nothing of the runner's environment or directory.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdrunner_actors::model::{CommandStep, Node, ReportBody, Step};
use rdrunner_harness::{
    AdminClient, Cadence, CreateRunner, Harness, HarnessConfig, RunState, RunnerStatus,
    SubmitExecution,
};

/// Small cadences so that the tests take seconds; local execution on, as
/// the tests' only node is the runner's own host.
const CONFIG: &str = "\
[runner]
localExecutor = true
pollIntervalMs = 1000
reportIntervalMs = 50
drainTimeoutMs = 5000
killGraceMs = 300
[log]
stderr = false
[spool]
fsync = \"always\"
";

fn harness() -> Harness {
    Harness::start(HarnessConfig {
        cadence: Cadence {
            poll_interval_ms: 1000,
            long_poll_ms: 500,
            report_interval_ms: 50,
            report_batch_max: 1000,
            lease_ms: 5000,
        },
        ..HarnessConfig::default()
    })
    .unwrap()
}

/// A runner covering every node of project `p`, whose only node is local.
async fn setup(admin: &AdminClient, dir: &Path) -> String {
    let created = admin
        .create_runner(&CreateRunner {
            name: "segment".into(),
            description: String::new(),
            tags: vec![],
            projects: Default::default(),
        })
        .await
        .unwrap();
    admin
        .assign_project(&created.runner_id, "p", ".*")
        .await
        .unwrap();
    admin.set_nodes("p", &[Node::local("self")]).await.unwrap();
    let creds = dir.join(".rdrunner-creds");
    std::fs::write(&creds, &created.credentials).unwrap();
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(dir.join("runner.toml"), CONFIG).unwrap();
    created.runner_id
}

fn start(dir: &Path) -> Child {
    start_with_env(dir, &[])
}

/// `rdrunner run` in `dir` with `env` added to a copy of this process's
/// environment cleared of the runner's own variables.
fn start_with_env(dir: &Path, env: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rdrunner"));
    cmd.current_dir(dir)
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, _) in std::env::vars() {
        if k.starts_with("RDRUNNER__")
            || k.starts_with("RUNNER_RUNDECK_")
            || k.to_ascii_uppercase().ends_with("_PROXY")
        {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    cmd.spawn().unwrap()
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

/// Waits for the child's exit, at most `timeout`.
async fn exit_code(child: &mut Child, timeout: Duration) -> Option<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("rdrunner did not exit within {timeout:?}");
        }
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
}

fn command(c: &str) -> Step {
    Step::Command(CommandStep { command: c.into() })
}

fn log_file(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(PathBuf::from(dir).join("runner/logs").join(name)).unwrap_or_default()
}

#[actix_rt::test]
async fn local_job_runs_then_sigterm_drains_and_exits_0() {
    let h = harness();
    let admin = h.admin();
    let d = tempfile::tempdir().unwrap();
    let runner_id = setup(&admin, d.path()).await;
    let mut child = start(d.path());

    let exec = admin
        .submit_execution(
            "p",
            &SubmitExecution::new(
                vec![command("echo hello from $RD_NODE_NAME; echo err >&2")],
                ".*",
            ),
        )
        .await
        .unwrap();
    let status = admin
        .wait_terminal(exec, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(
        status.state,
        RunState::Succeeded,
        "{status:?}\n{}",
        log_file(d.path(), "runner.log")
    );
    let out = admin.all_output(exec).await.unwrap();
    let texts: Vec<&str> = out.iter().map(|e| e.text.as_str()).collect();
    assert!(texts.contains(&"hello from self"), "{texts:?}");
    assert!(texts.contains(&"err"), "{texts:?}");

    signal(&child, "TERM");
    assert_eq!(
        exit_code(&mut child, Duration::from_secs(20)).await,
        Some(0)
    );
    let info = admin.get_runner(&runner_id).await.unwrap();
    assert!(
        info.replicas.iter().all(|r| r.status == RunnerStatus::Down),
        "{info:?}"
    );

    let ops = log_file(d.path(), "operations.log");
    let op_id = &status.operations[0].id;
    assert!(
        ops.lines().filter(|l| l.contains(op_id.as_str())).count() >= 2,
        "{ops}"
    );
    let runner_log = log_file(d.path(), "runner.log");
    assert!(
        runner_log.contains("rdrunner starting") && runner_log.contains("rdrunner stopped"),
        "{runner_log}"
    );
    // The token appears in no log.
    let creds = std::fs::read_to_string(d.path().join(".rdrunner-creds")).unwrap();
    let token = creds
        .lines()
        .find_map(|l| l.strip_prefix("RUNDECK_RUNNER_TOKEN="))
        .unwrap();
    assert!(!runner_log.contains(token) && !ops.contains(token));
}

#[actix_rt::test]
async fn kill_9_then_restart_loses_and_duplicates_no_report() {
    let h = harness();
    let admin = h.admin();
    let d = tempfile::tempdir().unwrap();
    setup(&admin, d.path()).await;
    let mut child = start(d.path());

    let exec = admin
        .submit_execution(
            "p",
            &SubmitExecution::new(
                vec![command(
                    "i=0; while [ $i -lt 200 ]; do echo line $i; i=$((i+1)); sleep 0.02; done",
                )],
                ".*",
            ),
        )
        .await
        .unwrap();
    // Kill -9 while output flows.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = admin.all_output(exec).await.unwrap();
        if out.len() >= 20 {
            break;
        }
        assert!(Instant::now() < deadline, "no output arrived");
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();

    let restarted = Instant::now();
    let mut child = start(d.path());
    // Carried on with by the restarted runner, which re-attached to the
    // step (it ran on, detached): it ends within seconds, not at the
    // control plane's down-timeout (120 s here), and succeeds.
    let status = admin
        .wait_terminal(exec, Duration::from_secs(15))
        .await
        .unwrap();
    assert!(restarted.elapsed() < Duration::from_secs(15));
    assert_eq!(
        status.operations[0].state,
        RunState::Succeeded,
        "{status:?}\n{}",
        log_file(d.path(), "runner.log")
    );
    // Every line arrived once, in order: those spooled before the kill and
    // those printed after it.
    let lines: Vec<String> = admin
        .all_output(exec)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.text)
        .collect();
    let want: Vec<String> = (0..200).map(|i| format!("line {i}")).collect();
    assert_eq!(lines, want);
    let op_id = status.operations[0].id.clone();
    let reports = h.reports(&op_id);
    let seqs: Vec<u64> = reports.iter().map(|r| r.seq).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "a gap or a duplicate"
    );
    let last = reports.last().unwrap();
    match &last.body {
        ReportBody::Op(op) => {
            assert_eq!(op.state, rdrunner_actors::model::State::Succeeded, "{op:?}")
        }
        other => panic!("last report is not the terminal one: {other:?}"),
    }
    // Nothing of the step is left in the spool directory.
    let left: Vec<_> = std::fs::read_dir(d.path().join("runner/spool/local-steps"))
        .map(|r| r.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    assert!(status.state.is_terminal());
    signal(&child, "TERM");
    assert_eq!(
        exit_code(&mut child, Duration::from_secs(20)).await,
        Some(0)
    );
}

#[actix_rt::test]
async fn refused_credentials_at_startup_exit_3() {
    let h = harness();
    let admin = h.admin();
    let d = tempfile::tempdir().unwrap();
    let runner_id = setup(&admin, d.path()).await;
    admin.regenerate_credentials(&runner_id).await.unwrap();
    let mut child = start(d.path());
    assert_eq!(
        exit_code(&mut child, Duration::from_secs(30)).await,
        Some(3)
    );
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(
        stderr.contains("refused the runner's credentials"),
        "{stderr}"
    );
}

#[actix_rt::test]
async fn sigterm_lets_a_running_operation_finish_and_hup_reopens_logs() {
    let h = harness();
    let admin = h.admin();
    let d = tempfile::tempdir().unwrap();
    setup(&admin, d.path()).await;
    let mut child = start(d.path());

    // HUP: the log file moved away is replaced by a new one.
    let logs = d.path().join("runner/logs");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !log_file(d.path(), "runner.log").contains("rdrunner starting") {
        assert!(Instant::now() < deadline, "runner.log was not written");
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    std::fs::rename(logs.join("runner.log"), logs.join("runner.log.moved")).unwrap();
    signal(&child, "HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !log_file(d.path(), "runner.log").contains("log files reopened") {
        assert!(Instant::now() < deadline, "no new runner.log after HUP");
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }

    let exec = admin
        .submit_execution(
            "p",
            &SubmitExecution::new(vec![command("echo begun; sleep 1; echo finished")], ".*"),
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !admin
        .all_output(exec)
        .await
        .unwrap()
        .iter()
        .any(|e| e.text == "begun")
    {
        assert!(Instant::now() < deadline, "the step did not start");
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    signal(&child, "TERM");
    assert_eq!(
        exit_code(&mut child, Duration::from_secs(20)).await,
        Some(0)
    );
    let status = admin.execution(exec).await.unwrap();
    assert_eq!(status.state, RunState::Succeeded, "{status:?}");
    let out = admin.all_output(exec).await.unwrap();
    assert!(out.iter().any(|e| e.text == "finished"));
}

#[actix_rt::test]
async fn three_replicas_share_300_operations_each_runs_once() {
    let h = harness();
    let admin = h.admin();
    let d1 = tempfile::tempdir().unwrap();
    let runner_id = setup(&admin, d1.path()).await;
    // The other replicas: same credentials, each its own spool and logs.
    let others: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    for d in &others {
        for f in [".rdrunner-creds", "runner.toml"] {
            std::fs::copy(d1.path().join(f), d.path().join(f)).unwrap();
        }
    }
    let mut replicas = vec![start(d1.path())];
    replicas.extend(others.iter().map(|d| start(d.path())));
    let deadline = Instant::now() + Duration::from_secs(10);
    while admin.get_runner(&runner_id).await.unwrap().replicas.len() < 3 {
        assert!(Instant::now() < deadline, "three replicas did not register");
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    let mut execs = Vec::new();
    for i in 0..300 {
        let step = command(&format!("echo run {i}"));
        execs.push(
            admin
                .submit_execution("p", &SubmitExecution::new(vec![step], ".*"))
                .await
                .unwrap(),
        );
    }
    let mut per_replica: BTreeMap<String, usize> = BTreeMap::new();
    for (i, exec) in execs.iter().enumerate() {
        let status = admin
            .wait_terminal(*exec, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(status.state, RunState::Succeeded, "{status:?}");
        let out = admin.all_output(*exec).await.unwrap();
        let runs = out.iter().filter(|e| e.text == format!("run {i}")).count();
        assert_eq!(runs, 1, "execution {exec} ran {runs} times");
        let op = &status.operations[0];
        assert_eq!(h.duplicates_dropped(&op.id), 0);
        let replica = op
            .replica
            .clone()
            .expect("a claimed operation names its replica");
        *per_replica.entry(replica).or_default() += 1;
    }
    assert_eq!(
        per_replica.len(),
        3,
        "the work should be spread over all three replicas: {per_replica:?}"
    );
    for r in &replicas {
        signal(r, "TERM");
    }
    for r in &mut replicas {
        assert_eq!(exit_code(r, Duration::from_secs(20)).await, Some(0));
    }
}

fn token_of(dir: &Path) -> String {
    let creds = std::fs::read_to_string(dir.join(".rdrunner-creds")).unwrap();
    creds
        .lines()
        .find_map(|l| l.strip_prefix("RUNDECK_RUNNER_TOKEN="))
        .unwrap()
        .to_owned()
}

#[actix_rt::test]
async fn a_local_node_is_refused_unless_the_configuration_turns_local_execution_on() {
    let h = harness();
    let admin = h.admin();
    let d = tempfile::tempdir().unwrap();
    setup(&admin, d.path()).await;
    // The node a control plane would send to slip past `tags: web`.
    let mut node = Node::local("web1");
    node.tags = vec!["web".into()];
    admin.set_nodes("p", &[node]).await.unwrap();
    std::fs::write(
        d.path().join("runner.toml"),
        CONFIG.replace("localExecutor = true\n", "allowedNodes = \"tags: web\"\n"),
    )
    .unwrap();
    let mut child = start(d.path());
    let marker = d.path().join("marker");
    let exec = admin
        .submit_execution(
            "p",
            &SubmitExecution::new(vec![command(&format!("touch {}", marker.display()))], ".*"),
        )
        .await
        .unwrap();
    let status = admin
        .wait_terminal(exec, Duration::from_secs(20))
        .await
        .unwrap();
    signal(&child, "TERM");
    let _ = exit_code(&mut child, Duration::from_secs(20)).await;
    assert_eq!(status.state, RunState::Failed, "{status:?}");
    assert!(
        !marker.exists(),
        "the refused step ran on the runner's host"
    );
    let nodes: Vec<String> = status
        .nodes
        .values()
        .filter_map(|n| n.message.clone())
        .collect();
    let why = nodes.join("\n");
    assert!(
        why.contains("web1") && why.contains("local") && why.contains("runner.localExecutor"),
        "{why}"
    );
}

#[actix_rt::test]
async fn a_local_step_sees_none_of_the_runners_environment_or_directory() {
    let h = harness();
    let admin = h.admin();
    let d = tempfile::tempdir().unwrap();
    setup(&admin, d.path()).await;
    let token = token_of(d.path());
    // The token given the way a service manager would: in the environment.
    let mut child = start_with_env(
        d.path(),
        &[
            ("RUNNER_RUNDECK_SERVER_TOKEN", &token),
            ("RDRUNNER_CANARY", "canary-value"),
            ("LD_PRELOAD", ""),
        ],
    );
    let exec = admin
        .submit_execution(
            "p",
            &SubmitExecution::new(
                vec![command(
                    "env; echo \"cwd=$(pwd)\"; echo \"mode=$(stat -c %a .)\"; ls -a",
                )],
                ".*",
            ),
        )
        .await
        .unwrap();
    let status = admin
        .wait_terminal(exec, Duration::from_secs(20))
        .await
        .unwrap();
    signal(&child, "TERM");
    let _ = exit_code(&mut child, Duration::from_secs(20)).await;
    assert_eq!(
        status.state,
        RunState::Succeeded,
        "{status:?}\n{}",
        log_file(d.path(), "runner.log")
    );
    let out = admin.all_output(exec).await.unwrap();
    let texts: Vec<&str> = out.iter().map(|e| e.text.as_str()).collect();
    let all = texts.join("\n");
    assert!(!all.contains(&token), "the token reached the step:\n{all}");
    assert!(!all.contains("canary-value"), "{all}");
    assert!(!all.contains(".rdrunner-creds"), "{all}");
    let names: Vec<&str> = texts
        .iter()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .filter(|k| {
            k.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .collect();
    for name in &names {
        assert!(
            ["PATH", "HOME", "LANG", "PWD", "SHLVL", "OLDPWD"].contains(name)
                || name.starts_with("RD_"),
            "{name} leaked into the step's environment:\n{all}"
        );
    }
    assert!(texts.contains(&"RD_NODE_NAME=self"), "{all}");
    assert!(
        texts.contains(&"PATH=/usr/local/bin:/usr/bin:/bin"),
        "{all}"
    );
    let cwd = texts
        .iter()
        .find_map(|l| l.strip_prefix("cwd="))
        .expect("the step printed its directory");
    let runner_dir = d.path().canonicalize().unwrap();
    assert!(
        !Path::new(cwd).starts_with(&runner_dir),
        "the step ran in the runner's directory {cwd}"
    );
    assert!(texts.contains(&format!("HOME={cwd}").as_str()), "{all}");
    assert!(texts.contains(&"mode=700"), "{all}");
    assert!(
        !Path::new(cwd).exists(),
        "{cwd} was not removed after the step"
    );
}
