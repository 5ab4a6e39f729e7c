//! End to end: node dispatch across five SSH nodes (one sshd, five node
//! names) with threadCount 2 when one node fails, with keepGoing off and on.
//! What ran is checked on the nodes themselves (a timeline file the steps
//! append to) and in what the control plane stored.

use std::collections::BTreeMap;

use crate::support::{Runner, World, PROJECT};
use rdrunner_actors::model::{CommandStep, Dispatch, ReportBody, Step};
use rdrunner_harness::{ExecutionStatus, RunState, SubmitExecution};

const NODES: [&str; 5] = ["n1", "n2", "n3", "n4", "n5"];

/// n2 fails at once (exit 3); n1 waits until n2 has failed and then 2 s
/// longer, so that the runner learns of n2's failure while n1 still holds
/// the other slot; the others take 0.3 s. Every step logs its start and end.
fn job(world: &World, keep_going: bool) -> SubmitExecution {
    let d = world.scratch().display().to_string();
    let command = format!(
        "echo start ${{node.name}} $(date +%s%N) >> {d}/timeline; \
         case ${{node.name}} in \
           n2) touch {d}/n2-failed; echo n2 fails >&2; rc=3;; \
           n1) i=0; while [ ! -e {d}/n2-failed ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done; sleep 2;; \
           *) sleep 0.3;; \
         esac; \
         echo end ${{node.name}} $(date +%s%N) >> {d}/timeline; exit ${{rc:-0}}"
    );
    SubmitExecution {
        dispatch: Dispatch {
            thread_count: 2,
            keep_going,
            ..Dispatch::default()
        },
        ..SubmitExecution::new(vec![Step::Command(CommandStep { command })], ".*")
    }
}

/// (node, is_start, ns) from the timeline the steps wrote.
fn timeline(world: &World) -> Vec<(String, bool, u128)> {
    let text = std::fs::read_to_string(world.scratch().join("timeline")).unwrap_or_default();
    let mut events: Vec<_> = text
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[1].to_owned(), f[0] == "start", f[2].parse().unwrap())
        })
        .collect();
    events.sort_by_key(|e| e.2);
    events
}

fn max_concurrency(events: &[(String, bool, u128)]) -> usize {
    let (mut now, mut max) = (0usize, 0usize);
    for (_, start, _) in events {
        if *start {
            now += 1;
            max = max.max(now);
        } else {
            now -= 1;
        }
    }
    max
}

/// Nodes that have at least one node report stored on the control plane.
fn reported_nodes(world: &World, status: &ExecutionStatus) -> Vec<String> {
    let mut nodes: Vec<String> = status
        .operations
        .iter()
        .flat_map(|op| world.harness().reports(&op.id))
        .filter_map(|r| match r.body {
            ReportBody::Node(n) => Some(n.node),
            _ => None,
        })
        .collect();
    nodes.sort();
    nodes.dedup();
    nodes
}

async fn run(keep_going: bool) -> (World, ExecutionStatus) {
    let world = World::new(&NODES).await;
    let runner = Runner::start(world.work());
    let id = world
        .admin()
        .submit_execution(PROJECT, &job(&world, keep_going))
        .await
        .expect("submit");
    let status = world.wait_terminal(id).await;
    let exit = runner.stop();
    assert!(exit.success(), "rdrunner exited {exit} after SIGTERM");
    (world, status)
}

fn states(status: &ExecutionStatus) -> BTreeMap<&str, (RunState, Option<i32>)> {
    status
        .nodes
        .iter()
        .map(|(n, s)| (n.as_str(), (s.state, s.exit_code)))
        .collect()
}

#[actix_rt::test]
async fn without_keep_going_a_failure_stops_dispatch_to_further_nodes() {
    let (world, status) = run(false).await;
    assert_eq!(status.state, RunState::Failed, "{status:#?}");
    let states = states(&status);
    assert_eq!(states["n1"], (RunState::Succeeded, Some(0)), "{status:#?}");
    assert_eq!(states["n2"], (RunState::Failed, Some(3)), "{status:#?}");
    for n in ["n3", "n4", "n5"] {
        assert_eq!(states[n], (RunState::Failed, None), "{status:#?}");
        let msg = status.nodes[n].message.as_deref().unwrap_or("");
        assert!(msg.contains("did not finish"), "{n}: {msg}");
    }
    // Only n1 and n2 ran, on the node side and in what the runner reported.
    let events = timeline(&world);
    let started: Vec<&str> = events
        .iter()
        .filter(|e| e.1)
        .map(|e| e.0.as_str())
        .collect();
    let mut started_sorted = started.clone();
    started_sorted.sort();
    assert_eq!(started_sorted, ["n1", "n2"], "{events:?}");
    assert_eq!(reported_nodes(&world, &status), ["n1", "n2"]);
}

#[actix_rt::test]
async fn with_keep_going_every_node_runs_two_at_a_time() {
    let (world, status) = run(true).await;
    assert_eq!(status.state, RunState::Failed, "{status:#?}");
    let states = states(&status);
    assert_eq!(states["n2"], (RunState::Failed, Some(3)), "{status:#?}");
    for n in ["n1", "n3", "n4", "n5"] {
        assert_eq!(
            states[n],
            (RunState::Succeeded, Some(0)),
            "{n}: {status:#?}"
        );
    }
    let events = timeline(&world);
    let mut started: Vec<&str> = events
        .iter()
        .filter(|e| e.1)
        .map(|e| e.0.as_str())
        .collect();
    started.sort();
    assert_eq!(started, NODES, "{events:?}");
    assert_eq!(events.iter().filter(|e| !e.1).count(), 5, "{events:?}");
    assert_eq!(max_concurrency(&events), 2, "threadCount 2: {events:?}");
    assert_eq!(reported_nodes(&world, &status), NODES);
}
