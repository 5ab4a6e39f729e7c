//! End to end: an execution aborted on the control plane while its steps run
//! on two SSH nodes ends `aborted`, and nothing the steps started is left
//! running on the node (found by a marker in their command lines).

use std::time::{Duration, Instant};

use crate::support::{pgrep, Runner, World, PROJECT};
use rdrunner_actors::model::{CommandStep, Dispatch, Step};
use rdrunner_harness::{RunState, SubmitExecution};

#[actix_rt::test]
async fn an_abort_stops_every_process_of_the_running_steps() {
    let world = World::new(&["a1", "a2"]).await;
    let runner = Runner::start(world.work());
    // A marker no other process has: a sleep of 300.<random> seconds, run
    // both in the background and in the foreground of the step's shell.
    let marker = format!(
        "sleep 300.{}",
        rand::random::<u32>() % 1_000_000 + 1_000_000
    );
    let command = format!("{marker} & echo started ${{node.name}}; {marker}; echo not reached");
    let job = SubmitExecution {
        dispatch: Dispatch {
            thread_count: 2,
            ..Dispatch::default()
        },
        ..SubmitExecution::new(vec![Step::Command(CommandStep { command })], ".*")
    };
    let admin = world.admin();
    let id = admin.submit_execution(PROJECT, &job).await.expect("submit");
    world
        .wait_output(id, Duration::from_secs(20), |out| {
            out.iter().filter(|e| e.text.starts_with("started")).count() == 2
        })
        .await;
    let running = pgrep(&marker);
    // Two nodes, each with a background and a foreground sleep, at least.
    assert!(
        running.len() >= 4,
        "the marker finds the steps: {running:?}"
    );

    let aborted_at = Instant::now();
    admin.abort(id).await.expect("abort");
    let status = world.wait_terminal(id).await;
    assert_eq!(status.state, RunState::Aborted, "{status:#?}");
    for node in ["a1", "a2"] {
        assert_eq!(status.nodes[node].state, RunState::Aborted, "{status:#?}");
    }
    // killGraceMs is 1000: TERM, then KILL a second later at most.
    let left = loop {
        let left = pgrep(&marker);
        if left.is_empty() || aborted_at.elapsed() > Duration::from_secs(10) {
            break left;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    if !left.is_empty() {
        // Do not leave them behind when the test fails.
        for pid in left.iter().filter_map(|l| l.split_whitespace().next()) {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", pid])
                .status();
        }
        panic!("processes left on the node: {left:?}");
    }
    let output = admin.all_output(id).await.expect("output");
    assert!(
        !output.iter().any(|e| e.text == "not reached"),
        "{output:#?}"
    );
    let exit = runner.stop();
    assert!(exit.success(), "rdrunner exited {exit} after SIGTERM");
}
