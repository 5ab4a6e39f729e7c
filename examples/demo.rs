//! The whole flow on one machine, in well under a minute: the reference
//! control plane on loopback, a runner created on it, the runner started in
//! this process from the daemon's own assembly (`rdrunner::daemon`: HTTP
//! transport, disk spool, local and SSH executors, log files) with a brisk
//! cadence, nodes registered (this host, plus two SSH nodes on a private
//! sshd when OpenSSH's server is installed), a three-step job run with its
//! output shown live, then a summary table.
//!
//! `cargo run --release --example demo [-- --keep]`. Everything lives in a
//! temporary directory that is removed at the end (kept with `--keep`). The
//! exit status is 0 only when the job succeeded. With `--keep` the control
//! plane and the runner stay up after the job, serving the Runner
//! Management page (its URL and the admin token are printed), until Ctrl-C.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use base64::Engine as _;
use rdrunner::config::Config;
use rdrunner::creds::Credentials;
use rdrunner::daemon;
use rdrunner::logging::Logs;
use rdrunner::ssh::{KnownHostsPolicy, SshSettings, KEY_ATTRIBUTE};
use rdrunner_actors::model::{
    CommandStep, CopyStep, Dispatch, Node, ReportBody, ScriptStep, State, Step, Stream,
};
use rdrunner_actors::RuntimeHandle;
use rdrunner_harness::sshd::{TestSshd, SSHD_PATH};
use rdrunner_harness::{
    AdminClient, Cadence, CreateRunner, ExecutionStatus, Harness, HarnessConfig, RunState,
    SubmitExecution,
};

const PROJECT: &str = "demo";
/// The job must end within this, or the demo aborts it and fails.
const JOB_DEADLINE: Duration = Duration::from_secs(25);

#[allow(dead_code)] // tests/e2e/demo.rs includes this file and calls `demo`.
fn main() -> ExitCode {
    let keep = std::env::args().any(|a| a == "--keep");
    let work = match tempfile::Builder::new().prefix("rdrunner-demo-").tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("demo: cannot create a temporary directory: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = actix_rt::System::new().block_on(run(work.path(), keep));
    if keep {
        let kept = work.keep();
        println!("\nkept {} (remove it when done)", kept.display());
    }
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("demo failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the demo in `work`; `Ok(true)` when the job succeeded.
/// (`tests/e2e/demo.rs` runs it too.)
pub async fn demo(work: &Path) -> anyhow::Result<bool> {
    run(work, false).await
}

/// The demo; with `serve_page`, the control plane and a runner stay up
/// after the job until Ctrl-C, for the Runner Management page.
async fn run(work: &Path, serve_page: bool) -> anyhow::Result<bool> {
    let t0 = Instant::now();

    // 1. The control plane, with a brisk cadence so the demo is quick.
    let harness = Harness::start(HarnessConfig {
        cadence: Cadence {
            poll_interval_ms: 1000,
            long_poll_ms: 1000,
            report_interval_ms: 50,
            ..Cadence::default()
        },
        ..HarnessConfig::default()
    })
    .context("starting the reference control plane")?;
    let admin = harness.admin();
    section(&format!(
        "control plane listening on {}",
        harness.base_url()
    ));
    println!(
        "Runner Management page: {}/ (admin token {}{})",
        harness.base_url(),
        harness.admin_token(),
        if serve_page {
            "; served until Ctrl-C after the job"
        } else {
            "; served while the demo runs, and after it with --keep"
        }
    );

    // 2. A runner on it, and its credentials saved as the operator would.
    let created = admin
        .create_runner(&CreateRunner {
            name: "demo-runner".into(),
            description: "the runner of the demo".into(),
            ..CreateRunner::default()
        })
        .await?;
    admin
        .assign_project(&created.runner_id, PROJECT, ".*")
        .await?;
    let creds_path = work.join(".rdrunner-creds");
    write_private(&creds_path, created.credentials.as_bytes())?;
    println!(
        "runner {} created; credentials in {}",
        created.runner_id,
        creds_path.display()
    );

    // 3. Nodes: this host, and two SSH nodes when an sshd can be started.
    let runner_dir = work.join("runner");
    let keys = runner_dir.join("keys");
    std::fs::create_dir_all(&keys)?;
    let mut nodes = vec![Node::local("runner-host")];
    let sshd = start_sshd(work);
    let mut ssh_settings = SshSettings {
        key_store: keys.clone(),
        known_hosts_policy: KnownHostsPolicy::Strict,
        known_hosts_file: runner_dir.join("known_hosts.trusted"),
        accepted_hosts_file: runner_dir.join("known_hosts"),
        connect_timeout: Duration::from_secs(5),
        call_timeout: Duration::from_secs(10),
        keepalive_interval: Duration::from_secs(5),
        use_agent: false,
        remote_tmp_dir: work.display().to_string(),
        ..SshSettings::default()
    };
    if let Some(sshd) = &sshd {
        // The client key goes into the runner's key store; the node names
        // it by relative path, so the secret never crosses the wire.
        std::fs::copy(sshd.client_key(), keys.join("demo-key"))?;
        std::fs::write(
            &ssh_settings.known_hosts_file,
            format!("{}\n", sshd.known_hosts_line()?),
        )?;
        ssh_settings.default_user = sshd.user().to_owned();
        for name in ["ssh-1", "ssh-2"] {
            let mut node = Node::new(name, sshd.host());
            node.port = Some(sshd.port());
            node.username = Some(sshd.user().to_owned());
            node.attributes = BTreeMap::from([(KEY_ATTRIBUTE.into(), "demo-key".into())]);
            nodes.push(node);
        }
    }
    admin.set_nodes(PROJECT, &nodes).await?;
    println!(
        "project {PROJECT}: nodes {}",
        nodes
            .iter()
            .map(|n| format!("{} ({})", n.name, n.executor.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    );

    // 4. The runner, in this process, from the daemon's own assembly.
    let (runtime, logs) = start_runner(&creds_path, &runner_dir, ssh_settings)?;
    section("runner started (HTTP transport, disk spool, local + SSH executors)");

    // 5. The job: a command with an option, a script with arguments, a copy.
    let job = SubmitExecution {
        job: "deploy/app".into(),
        user: "demo".into(),
        options: BTreeMap::from([("version".into(), "2.4.1".into())]),
        dispatch: Dispatch {
            thread_count: 2,
            ..Dispatch::default()
        },
        ..SubmitExecution::new(
            vec![
                Step::Command(CommandStep {
                    command:
                        "echo deploying version ${option.version} to ${node.name} as $(id -un)"
                            .into(),
                }),
                Step::Script(ScriptStep {
                    script: "#!/bin/sh\n\
                             echo \"checking @node.name@ with: $*\"\n\
                             for part in config service health; do\n\
                             \x20 echo \"  $part ok\"; sleep 0.3\n\
                             done\n"
                        .into(),
                    args: vec!["--release".into(), "${option.version}".into()],
                    interpreter: Some("sh".into()),
                    file_extension: Some(".sh".into()),
                }),
                Step::Copy(CopyStep {
                    content_base64: base64::engine::general_purpose::STANDARD
                        .encode("release = \"2.4.1\"\n"),
                    destination: format!("{}/app-${{node.name}}.conf", work.display()),
                    mode: Some("0640".into()),
                }),
            ],
            ".*",
        )
    };
    let exec_id = admin.submit_execution(PROJECT, &job).await?;
    section(&format!(
        "execution {exec_id}: 3 steps on {} nodes, 2 at a time",
        nodes.len()
    ));
    let status = follow(&admin, exec_id, nodes.len()).await;

    // 6. Stop the runner cleanly (reports flushed, replica shut down); with
    //    the page served, it runs on until Ctrl-C.
    let mut running = Some((runtime, logs));
    if !serve_page {
        stop_runner(running.take()).await?;
    }
    let status = status?;

    summary(&harness, &status, &nodes);
    let copied = nodes
        .iter()
        .filter(|n| work.join(format!("app-{}.conf", n.name)).is_file())
        .count();
    println!("copied files present: {copied}/{}", nodes.len());
    println!(
        "runner logs: {} (runner.log, operations.log; removed on exit unless --keep)",
        runner_dir.join("logs").display()
    );
    if let Ok(ops) = std::fs::read_to_string(runner_dir.join("logs/operations.log")) {
        for line in ops.lines() {
            println!("  operations.log | {line}");
        }
    }
    let ok = status.state == RunState::Succeeded && copied == nodes.len();
    section(&format!(
        "job {} in {:.1} s",
        state_name(status.state),
        t0.elapsed().as_secs_f64()
    ));
    if serve_page {
        section(&format!(
            "serving the Runner Management page at {}/ until Ctrl-C",
            harness.base_url()
        ));
        println!(
            "sign in with the admin token {}; project `{PROJECT}` has the nodes above",
            harness.admin_token()
        );
        tokio::signal::ctrl_c()
            .await
            .context("waiting for Ctrl-C")?;
        stop_runner(running.take()).await?;
    }
    drop(sshd);
    harness.stop();
    Ok(ok)
}

/// Drains the runner (reports flushed, replica shut down) and closes its logs.
async fn stop_runner(runner: Option<(RuntimeHandle, Logs)>) -> anyhow::Result<()> {
    let Some((runtime, logs)) = runner else {
        return Ok(());
    };
    tokio::time::timeout(
        Duration::from_secs(15),
        runtime.drain(Duration::from_secs(5)),
    )
    .await
    .context("the runner did not stop within 15 s")?;
    logs.shutdown();
    Ok(())
}

/// A private sshd on loopback, or `None` (with the reason) when OpenSSH's
/// server is not installed or cannot start here.
fn start_sshd(work: &Path) -> Option<TestSshd> {
    if !Path::new(SSHD_PATH).is_file() {
        println!(
            "{SSHD_PATH} not found: running on this host only \
             (apt-get install openssh-server adds two SSH nodes)"
        );
        return None;
    }
    match TestSshd::start(&work.join("sshd")) {
        Ok(s) => {
            println!("private sshd on 127.0.0.1:{} (user {})", s.port(), s.user());
            Some(s)
        }
        Err(e) => {
            println!("could not start a private sshd ({e}); running on this host only");
            None
        }
    }
}

/// Starts the runner as `rdrunner run` does (`daemon::assemble`: the HTTP
/// transport, a disk spool, the executors, log files), with its directories
/// under `runner_dir`, the SSH settings of the demo's nodes and a quick
/// cadence, so that the demo takes seconds.
fn start_runner(
    creds_path: &Path,
    runner_dir: &Path,
    ssh: SshSettings,
) -> anyhow::Result<(RuntimeHandle, Logs)> {
    let mut cfg = Config::default();
    cfg.runner.hostname = Some("demo-host".into());
    // The demo's first node is this host: local execution is granted here.
    cfg.runner.local_executor = true;
    cfg.runner.poll_interval = Duration::from_secs(1);
    cfg.runner.report_interval = Duration::from_millis(50);
    cfg.runner.kill_grace = Duration::from_secs(1);
    cfg.http.request_timeout = Duration::from_secs(5);
    cfg.spool.dir = runner_dir.join("spool");
    cfg.log.dir = runner_dir.join("logs");
    // The demo prints the output itself; the log stays in its file.
    cfg.log.stderr = false;
    cfg.ssh = ssh;
    let creds = Credentials::load(creds_path, &[], false)?;
    let logs = Logs::open(&cfg.log, cfg.log.stderr)?;
    let runtime = daemon::assemble(&cfg, &creds, &logs)?.start()?;
    Ok((runtime, logs))
}

/// Prints the output as it arrives (following the output cursor) and each
/// node as it finishes; ends when the execution is terminal.
async fn follow(
    admin: &AdminClient,
    exec_id: u64,
    node_count: usize,
) -> anyhow::Result<ExecutionStatus> {
    let start = Instant::now();
    let mut after = 0;
    let mut done: BTreeMap<String, RunState> = BTreeMap::new();
    loop {
        let page = admin.output(exec_id, after).await?;
        after = page.next;
        for e in &page.entries {
            let stream = match e.stream {
                Stream::Stdout => "",
                Stream::Stderr => " (stderr)",
                Stream::System => " (runner)",
            };
            println!("{:>11} step {}{stream} | {}", e.node, e.step, e.text);
        }
        let status = admin.execution(exec_id).await?;
        for (name, node) in &status.nodes {
            if node.state.is_terminal() && done.insert(name.clone(), node.state).is_none() {
                let exit = node
                    .exit_code
                    .map(|c| format!(", exit {c}"))
                    .unwrap_or_default();
                println!(
                    "{:>11} ── {}{exit}   [{}/{node_count} nodes done, {:.1} s]",
                    name,
                    state_name(node.state),
                    done.len(),
                    start.elapsed().as_secs_f64()
                );
            }
        }
        if page.complete && status.state.is_terminal() {
            return Ok(status);
        }
        if start.elapsed() > JOB_DEADLINE {
            admin.abort(exec_id).await?;
            bail!("the job did not end within {JOB_DEADLINE:?}; aborted it");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The table: node, executor, state, exit code, duration (from the node
/// reports' timestamps, first `running` to last terminal state).
fn summary(harness: &Harness, status: &ExecutionStatus, nodes: &[Node]) {
    let mut spans: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for op in &status.operations {
        for r in harness.reports(&op.id) {
            if let (ReportBody::Node(n), Some(t)) = (&r.body, seconds_of_day(&r.ts)) {
                let span = spans.entry(n.node.clone()).or_insert((t, t));
                if n.state == State::Running {
                    span.0 = span.0.min(t);
                } else {
                    span.1 = span.1.max(t);
                }
            }
        }
    }
    section("summary");
    println!(
        "{:<12} {:<9} {:<10} {:>4} {:>9}",
        "node", "executor", "state", "exit", "duration"
    );
    for node in nodes {
        let Some(st) = status.nodes.get(&node.name) else {
            continue;
        };
        let exit = st.exit_code.map(|c| c.to_string()).unwrap_or("-".into());
        let took = spans
            .get(&node.name)
            .map(|(a, b)| format!("{:.2} s", (b - a).rem_euclid(86_400.0)))
            .unwrap_or("-".into());
        println!(
            "{:<12} {:<9} {:<10} {:>4} {:>9}",
            node.name,
            node.executor.as_str(),
            state_name(st.state),
            exit,
            took
        );
    }
}

/// `succeeded`, `failed`... as the admin API spells it.
fn state_name(s: RunState) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Seconds since midnight of an RFC 3339 UTC time `YYYY-MM-DDTHH:MM:SS.fffZ`.
fn seconds_of_day(ts: &str) -> Option<f64> {
    let time = ts.split_once('T')?.1.trim_end_matches('Z');
    let mut parts = time.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

/// Writes a file only its owner can read (`.rdrunner-creds` must be 0600).
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?
        .write_all(bytes)
}

fn section(title: &str) {
    println!("\n== {title}");
}
