//! End to end: the `rdrunner` binary killed with `kill -9` while an SSH step
//! runs, then started again in the same working directory. The new process
//! takes the operation over (`POST /resume`), re-attaches to the step still
//! running on the node, and the control plane ends up with every line of
//! its output exactly once and in order; an abort sent while no runner ran
//! is delivered after the restart and ends every process of the step.

use std::time::{Duration, Instant};

use crate::support::{pgrep, Runner, World, PROJECT};
use rdrunner_actors::model::{CommandStep, Step, Stream};
use rdrunner_harness::{OutputEntry, RunState, SubmitExecution};

fn job(command: String) -> SubmitExecution {
    SubmitExecution::new(vec![Step::Command(CommandStep { command })], ".*")
}

/// The texts of one stream of `out`, in order.
fn texts(out: &[OutputEntry], stream: Stream) -> Vec<String> {
    out.iter()
        .filter(|e| e.stream == stream)
        .map(|e| e.text.clone())
        .collect()
}

/// The step's directories left in the nodes' temp dir.
fn step_dirs(world: &World) -> Vec<String> {
    std::fs::read_dir(world.work().join("remote-tmp"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("rdrunner-"))
                .collect()
        })
        .unwrap_or_default()
}

#[actix_rt::test]
async fn a_step_running_at_a_kill_9_is_re_attached_and_every_line_arrives_once() {
    let world = World::new(&["r1"]).await;
    let runner = Runner::start(world.work());
    // 200 lines of 1 KB, one every 50 ms (10 s); every tenth also on
    // stderr. Long enough for the runner to mark where it got to (every
    // 64 KiB) before the kill.
    let command =
        "pad=$(printf '%01000d' 0); i=0; while [ $i -lt 200 ]; do echo \"line $i $pad\"; \
                   if [ $((i % 10)) -eq 0 ]; then echo \"err $i\" >&2; fi; \
                   i=$((i+1)); sleep 0.05; done"
            .to_owned();
    let pad = "0".repeat(1000);
    let admin = world.admin();
    let id = admin
        .submit_execution(PROJECT, &job(command))
        .await
        .expect("submit");
    world
        .wait_output(id, Duration::from_secs(20), |out| {
            texts(out, Stream::Stdout).len() >= 80
        })
        .await;
    runner.kill9();
    // Down for a moment, while the step goes on printing on the node.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let runner = Runner::start(world.work());
    let status = world.wait_terminal(id).await;
    let stderr = runner.stderr();
    assert_eq!(status.state, RunState::Succeeded, "{status:#?}\n{stderr}");
    assert_eq!(status.nodes["r1"].state, RunState::Succeeded, "{status:#?}");
    let out = world
        .wait_output(id, Duration::from_secs(5), |_| true)
        .await;
    let want: Vec<String> = (0..200).map(|i| format!("line {i} {pad}")).collect();
    let got = texts(&out, Stream::Stdout);
    assert!(
        got == want,
        "{} lines, not the 200 printed, each once\nrunner:\n{stderr}",
        got.len()
    );
    let want: Vec<String> = (0..200).step_by(10).map(|i| format!("err {i}")).collect();
    assert_eq!(texts(&out, Stream::Stderr), want);
    // It read on from where the previous process had got to, not from the
    // start of the step's output.
    let from: u64 = stderr
        .lines()
        .find(|l| l.contains("re-attaching to a step"))
        .and_then(|l| l.split("stdout_from_byte: ").nth(1))
        .and_then(|v| v.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no re-attach line in:\n{stderr}"));
    assert!(from >= 64 * 1024, "read on from byte {from}");
    // The step's directory went once its status was read.
    assert!(step_dirs(&world).is_empty(), "{:?}", step_dirs(&world));
    runner.stop();
}

#[actix_rt::test]
async fn an_abort_sent_while_the_runner_is_down_ends_the_step_after_the_restart() {
    let world = World::new(&["r1"]).await;
    let runner = Runner::start(world.work());
    let marker = format!(
        "sleep 300.{}",
        rand::random::<u32>() % 1_000_000 + 1_000_000
    );
    let command = format!("echo started; {marker} & {marker}; echo not reached");
    let admin = world.admin();
    let id = admin
        .submit_execution(PROJECT, &job(command))
        .await
        .expect("submit");
    world
        .wait_output(id, Duration::from_secs(20), |out| {
            out.iter().any(|e| e.text == "started")
        })
        .await;
    assert!(pgrep(&marker).len() >= 2, "{:?}", pgrep(&marker));
    runner.kill9();
    // The step goes on without its runner, and the abort waits for one.
    admin.abort(id).await.expect("abort");
    assert!(pgrep(&marker).len() >= 2, "the step outlives its runner");
    let aborted_at = Instant::now();
    let runner = Runner::start(world.work());
    let status = world.wait_terminal(id).await;
    assert_eq!(
        status.state,
        RunState::Aborted,
        "{status:#?}\n{}",
        runner.stderr()
    );
    let left = loop {
        let left = pgrep(&marker);
        if left.is_empty() || aborted_at.elapsed() > Duration::from_secs(15) {
            break left;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    if !left.is_empty() {
        for pid in left.iter().filter_map(|l| l.split_whitespace().next()) {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", pid])
                .status();
        }
    }
    assert!(
        left.is_empty(),
        "processes of the step left: {left:?}\nrunner:\n{}",
        runner.stderr()
    );
    let out = world
        .wait_output(id, Duration::from_secs(5), |_| true)
        .await;
    assert!(!out.iter().any(|e| e.text == "not reached"));
    assert_eq!(
        out.iter().filter(|e| e.text == "started").count(),
        1,
        "{out:#?}"
    );
    runner.stop();
}

#[actix_rt::test]
async fn a_node_out_of_reach_at_the_restart_is_dialled_again_until_it_answers() {
    let mut world = World::new(&["r1"]).await;
    let runner = Runner::start(world.work());
    let command =
        "i=0; while [ $i -lt 100 ]; do echo \"line $i\"; i=$((i+1)); sleep 0.05; done".to_owned();
    let admin = world.admin();
    let id = admin
        .submit_execution(PROJECT, &job(command))
        .await
        .expect("submit");
    world
        .wait_output(id, Duration::from_secs(20), |out| {
            texts(out, Stream::Stdout).len() >= 10
        })
        .await;
    runner.kill9();
    // The node's sshd is down when the runner comes back (the step runs
    // on, detached from it), and back a moment later.
    world.sshd.stop();
    let runner = Runner::start(world.work());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    world.sshd.restart().expect("sshd starts again");
    let status = world.wait_terminal(id).await;
    let stderr = runner.stderr();
    assert_eq!(status.state, RunState::Succeeded, "{status:#?}\n{stderr}");
    let out = world
        .wait_output(id, Duration::from_secs(5), |_| true)
        .await;
    let want: Vec<String> = (0..100).map(|i| format!("line {i}")).collect();
    assert_eq!(texts(&out, Stream::Stdout), want, "{stderr}");
    let log = std::fs::read_to_string(world.logs_dir().join("runner.log")).unwrap_or_default();
    assert!(
        log.contains("cannot be reached; dialling again"),
        "the runner said it waited for the node:\n{log}"
    );
    runner.stop();
}

#[actix_rt::test]
async fn a_step_timeout_counts_from_the_steps_start_across_a_restart() {
    let world = World::new(&["r1"]).await;
    let runner = Runner::start(world.work());
    let marker = format!(
        "sleep 300.{}",
        rand::random::<u32>() % 1_000_000 + 1_000_000
    );
    let mut submit = job(format!("echo started; {marker}; echo not reached"));
    submit.step_timeout_ms = Some(8_000);
    let admin = world.admin();
    let id = admin
        .submit_execution(PROJECT, &submit)
        .await
        .expect("submit");
    world
        .wait_output(id, Duration::from_secs(20), |out| {
            out.iter().any(|e| e.text == "started")
        })
        .await;
    runner.kill9();
    // Down for half the step's timeout.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let restarted = Instant::now();
    let runner = Runner::start(world.work());
    let status = world.wait_terminal(id).await;
    let after_restart = restarted.elapsed();
    let stderr = runner.stderr();
    let node = &status.nodes["r1"];
    assert_eq!(node.state, RunState::Timedout, "{status:#?}\n{stderr}");
    assert_eq!(node.message.as_deref(), Some("timed out after 8000 ms"));
    // What was left of the 8 s when the runner came back (under 4 s), not
    // 8 s from the restart.
    assert!(
        after_restart < Duration::from_millis(6_500),
        "timed out {after_restart:?} after the restart\n{stderr}"
    );
    // The timeout ended the step's processes, re-attached as it was.
    let left = loop {
        let left = pgrep(&marker);
        if left.is_empty() || restarted.elapsed() > Duration::from_secs(20) {
            break left;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for pid in left.iter().filter_map(|l| l.split_whitespace().next()) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", pid])
            .status();
    }
    assert!(
        left.is_empty(),
        "processes of the step left: {left:?}\n{stderr}"
    );
    runner.stop();
}
