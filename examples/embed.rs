//! Embedding rdrunner's actors in a host of your own: the supervision runtime
//! of `rdrunner-actors`, the real HTTP transport of `rdrunner`, and a
//! `NodeExecutor` of this file that runs a Rust function per node instead of
//! a process (think simulated devices, or an API called per node).
//!
//! `cargo run --example embed`: one job on three in-process "nodes" through
//! the reference control plane on loopback; exits 0 when it succeeded.
//! `tests/e2e/embed.rs` runs the same code.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context as _};
use rdrunner::creds::Token;
use rdrunner::transport::{HttpControlPlane, TlsSettings, TransportSettings};
use rdrunner_actors::model::{CommandStep, ExecutorKind, Node, Step, Stream};
use rdrunner_actors::{
    AbortSignal, ExecutorError, ExecutorErrorKind, NodeExecutor, OutputSink, Runtime,
    RuntimeConfig, StepOutcome, StepRequest,
};
use rdrunner_harness::{CreateRunner, Harness, HarnessConfig, RunState, SubmitExecution};

/// A node step as a plain function: the expanded command in, lines out,
/// an exit code back.
type NodeFn = fn(&str, &mut dyn FnMut(String)) -> i32;

/// Runs each node's function on the thread the runtime gives the step.
struct FunctionExecutor {
    nodes: BTreeMap<String, NodeFn>,
}

impl NodeExecutor for FunctionExecutor {
    fn execute(
        &self,
        req: &StepRequest,
        output: &mut dyn OutputSink,
        abort: &AbortSignal,
    ) -> Result<StepOutcome, ExecutorError> {
        let (Some(f), Step::Command(c)) = (self.nodes.get(&req.node.name), &req.step) else {
            let msg = format!(
                "node {}: no function for it, or not a command",
                req.node.name
            );
            return Err(ExecutorError::new(ExecutorErrorKind::Config, msg));
        };
        // A real executor watches `abort` while it blocks; these functions
        // return at once, so looking before the start is enough.
        if abort.is_aborted() {
            return Ok(StepOutcome::exited(130));
        }
        let code = f(&c.command, &mut |line| output.line(Stream::Stdout, line));
        Ok(StepOutcome::exited(code))
    }
}

fn thermometer(cmd: &str, out: &mut dyn FnMut(String)) -> i32 {
    out(format!("thermometer: `{cmd}` -> 21.5 C"));
    0
}
fn valve(cmd: &str, out: &mut dyn FnMut(String)) -> i32 {
    out(format!("valve: `{cmd}` -> closed"));
    0
}

/// Runs one job through the embedded runtime; answers the output lines.
pub async fn run() -> anyhow::Result<Vec<String>> {
    // The control plane: the reference one, in process, on a free port.
    let harness = Harness::start(HarnessConfig::default())?;
    let admin = harness.admin();
    let name = "embedded".to_owned();
    let runner = admin
        .create_runner(&CreateRunner {
            name,
            ..Default::default()
        })
        .await?;
    admin
        .assign_project(&runner.runner_id, "plant", ".*")
        .await?;
    let names = ["thermo-1", "thermo-2", "valve-1"];
    let nodes: Vec<Node> = names.iter().map(|n| Node::new(*n, "in-process")).collect();
    admin.set_nodes("plant", &nodes).await?;

    // The transport, built from the credentials without any file.
    let transport = HttpControlPlane::new(
        TransportSettings {
            server_url: harness.base_url(),
            runner_id: runner.runner_id.clone(),
            token: Token::new(runner.token),
            version: "embed-example".into(),
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            tls: TlsSettings {
                ca_file: None,
                insecure_skip_verify: false,
            },
            proxy: None,
            // The harness serves plain http:// on loopback, which needs
            // no exception.
            allow_plaintext: false,
        },
        &slog::Logger::root(slog::Discard, slog::o!()),
    )?;
    // Nodes default to `executor: ssh`; this host answers that kind with
    // its own executor (`ExecutorKind::Local` could get another one).
    let functions: [NodeFn; 3] = [thermometer, thermometer, valve];
    let executor = FunctionExecutor {
        nodes: names.iter().map(|n| n.to_string()).zip(functions).collect(),
    };
    let runtime = Runtime::builder()
        .config(RuntimeConfig {
            hostname: "embedding-host".into(),
            report_interval: Duration::from_millis(50),
            ..RuntimeConfig::default()
        })
        .control_plane(Arc::new(transport))
        .executor(ExecutorKind::Ssh, Arc::new(executor))
        .start()?;

    // One job on every node; the runtime expands `${node.name}`, quoted as
    // one shell word (`read 'thermo-1'`).
    let command = "read ${node.name}".to_owned();
    let job = SubmitExecution::new(vec![Step::Command(CommandStep { command })], ".*");
    let id = admin.submit_execution("plant", &job).await?;
    let status = admin.wait_terminal(id, Duration::from_secs(20)).await;
    // Drain: no more claims, every report flushed, replica shut down.
    runtime.drain(Duration::from_secs(5)).await;
    runtime.wait().await.context("the runtime ended badly")?;
    let status = status?;
    ensure!(status.state == RunState::Succeeded, "job ended {status:?}");
    let lines = admin.all_output(id).await?;
    Ok(lines
        .into_iter()
        .map(|e| format!("{}: {}", e.node, e.text))
        .collect())
}

#[allow(dead_code)] // tests/e2e/embed.rs includes this file and calls `run`.
fn main() -> std::process::ExitCode {
    match actix_rt::System::new().block_on(run()) {
        Ok(lines) => {
            lines.iter().for_each(|line| println!("{line}"));
            println!("job succeeded on {} nodes", lines.len());
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("embed: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
