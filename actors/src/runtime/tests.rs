//! Whole-runtime tests against the fake control plane and fake executors.
//! Each one fails when the mechanism it names is taken away.

use super::*;
use crate::failpoints::FailAction;
use crate::intake::RESTARTED_MESSAGE;
use crate::model::Node;
use crate::model::{
    CommandStep, LogReport, NodeReport, OpReport, Report, ReportBody, State, Step, Stream,
};
use crate::spool::{MemorySpool, Spool};
use crate::supervisor::RestartIntensity;
use crate::testing::{fake_node, operation, FakeControlPlane, FakeExecutor};
use std::fmt;
use std::sync::Mutex;
use std::time::Instant;

const WAIT: Duration = Duration::from_secs(10);

fn test_config() -> RuntimeConfig {
    RuntimeConfig {
        hostname: "test-host".into(),
        poll_interval: Duration::from_millis(300),
        min_checkin_gap: Duration::from_millis(20),
        report_interval: Duration::from_millis(20),
        kill_grace: Duration::from_millis(100),
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        request_timeout: Duration::from_secs(2),
        flush_timeout: Duration::from_secs(3),
        ..RuntimeConfig::default()
    }
}

fn test_log() -> Logger {
    if std::env::var_os("RDRUNNER_TEST_LOG").is_some() {
        use slog::Drain;
        let decorator = slog_term::PlainSyncDecorator::new(std::io::stderr());
        let drain = slog_term::FullFormat::new(decorator).build().fuse();
        Logger::root(drain, o!())
    } else {
        Logger::root(slog::Discard, o!())
    }
}

struct Rig {
    cp: Arc<FakeControlPlane>,
    exec: Arc<FakeExecutor>,
    handle: RuntimeHandle,
}

fn start_with(config: RuntimeConfig, cp: Arc<FakeControlPlane>, spool: Option<MemorySpool>) -> Rig {
    start_full(config, cp, spool, None)
}

fn start_full(
    config: RuntimeConfig,
    cp: Arc<FakeControlPlane>,
    spool: Option<MemorySpool>,
    ops_log: Option<Logger>,
) -> Rig {
    let exec = FakeExecutor::new();
    let mut b = Runtime::builder()
        .config(config)
        .control_plane(cp.clone())
        .executor(ExecutorKind::Local, exec.clone())
        .logger(test_log());
    if let Some(s) = spool {
        b = b.spool(Box::new(s));
    }
    if let Some(l) = ops_log {
        b = b.operations_logger(l);
    }
    let handle = b.start().expect("runtime starts");
    Rig { cp, exec, handle }
}

fn start(config: RuntimeConfig) -> Rig {
    start_with(config, FakeControlPlane::new(300, 250), None)
}

fn op_state(r: &Report) -> Option<State> {
    match &r.body {
        ReportBody::Op(o) => Some(o.state),
        _ => None,
    }
}

fn terminal(cp: &FakeControlPlane, op: &str) -> OpReport {
    match cp.stored(op).last().map(|r| r.body.clone()) {
        Some(ReportBody::Op(o)) => o,
        other => panic!("no terminal report for {op}: {other:?}"),
    }
}

fn node_reports(cp: &FakeControlPlane, op: &str) -> Vec<NodeReport> {
    cp.stored(op)
        .into_iter()
        .filter_map(|r| match r.body {
            ReportBody::Node(n) => Some(n),
            _ => None,
        })
        .collect()
}

/// Every stored report of `op` is numbered 1..=n without a hole, `running`
/// comes first and exactly one terminal report comes last.
fn assert_well_formed(cp: &FakeControlPlane, op: &str) {
    let stored = cp.stored(op);
    let seqs: Vec<u64> = stored.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=stored.len() as u64).collect::<Vec<_>>(), "{op}");
    let terminals = stored.iter().filter(|r| r.is_terminal()).count();
    assert_eq!(terminals, 1, "{op}: one terminal report");
    assert!(stored.last().unwrap().is_terminal(), "{op}: terminal last");
}

async fn wait_complete(cp: &FakeControlPlane, ops: &[&str]) {
    let ops: Vec<String> = ops.iter().map(|s| s.to_string()).collect();
    assert!(
        cp.wait_until(WAIT, |s| ops.iter().all(|op| s
            .stored
            .get(op)
            .and_then(|r| r.last())
            .is_some_and(Report::is_terminal)))
            .await,
        "operations {ops:?} not complete in time"
    );
}

async fn finish(rig: &Rig) {
    tokio::time::timeout(WAIT, rig.handle.drain(Duration::from_millis(500)))
        .await
        .expect("drain ends");
    assert_eq!(rig.handle.wait().await, Ok(()));
}

#[actix_rt::test]
async fn check_in_cadence_holds_while_steps_hang_and_panic() {
    let rig = start(test_config());
    let mut hang = operation(
        "hang",
        (0..50)
            .map(|i| fake_node(&format!("h{i:02}"), "hang"))
            .collect(),
    );
    hang.dispatch.thread_count = 50;
    rig.cp.offer(hang);
    for i in 0..10 {
        rig.cp.offer(operation(
            &format!("panic{i}"),
            vec![fake_node("p", "panic")],
        ));
    }
    assert!(
        rig.exec.wait_until(WAIT, |s| s.started.len() >= 60).await,
        "all 60 node steps started"
    );
    let panics: Vec<String> = (0..10).map(|i| format!("panic{i}")).collect();
    let refs: Vec<&str> = panics.iter().map(String::as_str).collect();
    wait_complete(&rig.cp, &refs).await;
    // Keep watching the cadence for a while with every hanging step running.
    let seen = rig.cp.state().checkins.len();
    assert!(
        rig.cp
            .wait_until(WAIT, |s| s.checkins.len() >= seen + 5)
            .await
    );
    let interval = test_config().poll_interval;
    let gap = rig.cp.max_checkin_gap();
    assert!(gap <= interval + Duration::from_secs(1), "max gap {gap:?}");
    assert!(rig.handle.stats().max_checkin_gap <= interval + Duration::from_secs(1));
    // The hanging operation is still reported running at each check-in.
    assert!(rig
        .cp
        .state()
        .checkins
        .last()
        .unwrap()
        .1
        .running
        .contains(&"hang".to_owned()));
    for op in &refs {
        let t = terminal(&rig.cp, op);
        assert_eq!(t.state, State::Failed);
        let n = node_reports(&rig.cp, op);
        assert!(n.iter().any(|n| n.state == State::Failed
            && n.message.as_deref()
                == Some("the node step panicked: fake executor panicked on p")));
    }
    rig.handle.abort_all();
    assert_eq!(
        tokio::time::timeout(WAIT, rig.handle.wait()).await.unwrap(),
        Ok(())
    );
    assert_eq!(terminal(&rig.cp, "hang").state, State::Aborted);
    assert_well_formed(&rig.cp, "hang");
}

#[actix_rt::test]
async fn a_panicking_poller_is_restarted_and_check_ins_resume_within_a_second() {
    let rig = start(test_config());
    assert!(rig.cp.wait_until(WAIT, |s| s.checkins.len() >= 3).await);
    rig.handle
        .fail_points()
        .set_times("poller::checkin", FailAction::Panic, 1);
    let t0 = Instant::now();
    while rig
        .handle
        .stats()
        .restarts
        .get("poller")
        .copied()
        .unwrap_or(0)
        == 0
    {
        assert!(t0.elapsed() < WAIT, "poller not restarted");
        // The check-in after the panic is what we wait for next; this loop
        // only waits for the restart to be counted.
        let n = rig.cp.state().checkins.len();
        rig.cp
            .wait_until(Duration::from_millis(50), |s| s.checkins.len() > n)
            .await;
    }
    let restarted_at = Instant::now();
    let before = rig.cp.state().checkins.len();
    assert!(
        rig.cp
            .wait_until(Duration::from_secs(1), |s| s.checkins.len() > before)
            .await,
        "no check-in within a second of the restart"
    );
    assert!(restarted_at.elapsed() < Duration::from_secs(1));
    let s = rig.handle.stats();
    assert_eq!(s.restarts.get("poller"), Some(&1));
    // The fresh Poller kept the replica: no second startup.
    assert_eq!(rig.cp.state().startups, 1);
    // Work still flows after the restart.
    rig.cp.offer(operation("after", vec![fake_node("n", "ok")]));
    wait_complete(&rig.cp, &["after"]).await;
    finish(&rig).await;
}

#[actix_rt::test]
async fn a_log_shipper_panic_mid_stream_loses_and_duplicates_nothing() {
    let cp = FakeControlPlane::new(300, 250);
    cp.state().startup.report_batch_max = 100;
    let rig = start_with(test_config(), cp, None);
    // Three panics, each after the server stored a batch and before the
    // shipper recorded the ack.
    rig.handle
        .fail_points()
        .set_times("log_shipper::acked", FailAction::Panic, 3);
    rig.cp
        .offer(operation("flood", vec![fake_node("n", "print:2000")]));
    wait_complete(&rig.cp, &["flood"]).await;
    assert_well_formed(&rig.cp, "flood");
    let stored = rig.cp.stored("flood");
    // running, node running, 2000 lines, node succeeded, succeeded.
    assert_eq!(stored.len(), 2004);
    let lines: Vec<String> = stored
        .iter()
        .filter_map(|r| match &r.body {
            ReportBody::Log(l) => Some(l.text.clone()),
            _ => None,
        })
        .collect();
    let expected: Vec<String> = (1..=2000).map(|i| format!("line {i}")).collect();
    assert_eq!(lines, expected);
    assert_eq!(op_state(stored.last().unwrap()), Some(State::Succeeded));
    let s = rig.handle.stats();
    assert_eq!(s.restarts.get("log_shipper"), Some(&3));
    // Never more than the server's reportBatchMax in one request.
    assert_eq!(rig.cp.state().max_batch, 100);
    // The restarted shipper resent what it had not seen acked; the server
    // dropped those as duplicates.
    assert!(rig.cp.state().duplicates > 0);
    finish(&rig).await;
}

#[actix_rt::test]
async fn exceeding_the_restart_intensity_ends_the_runtime_with_a_typed_error() {
    let config = RuntimeConfig {
        restart_intensity: RestartIntensity {
            max_restarts: 2,
            within: Duration::from_secs(10),
        },
        ..test_config()
    };
    let fp = FailPoints::new();
    fp.set("poller::checkin", FailAction::Panic);
    let cp = FakeControlPlane::new(300, 250);
    let exec = FakeExecutor::new();
    let handle = Runtime::builder()
        .config(config)
        .control_plane(cp.clone())
        .executor(ExecutorKind::Local, exec)
        .fail_points(fp)
        .logger(test_log())
        .start()
        .unwrap();
    let outcome = tokio::time::timeout(WAIT, handle.wait()).await.unwrap();
    assert_eq!(
        outcome,
        Err(RuntimeError::Escalated {
            child: "poller".into(),
            reason: ExitReason::Panic {
                message: "fail point poller::checkin fired".into()
            }
        })
    );
    let s = handle.stats();
    assert_eq!(s.escalations, 1);
    assert_eq!(s.restarts.get("poller"), Some(&2));
    assert!(s.last_error.unwrap().contains("poller"));
}

#[actix_rt::test]
async fn a_cancel_reaches_a_running_step_within_one_check_in() {
    let rig = start(test_config());
    rig.cp.offer(operation("op", vec![fake_node("n", "hang")]));
    assert!(rig.exec.wait_until(WAIT, |s| s.running == 1).await);
    let t0 = Instant::now();
    rig.cp.cancel("op");
    assert!(rig.exec.wait_until(WAIT, |s| !s.aborts.is_empty()).await);
    let abort = rig.exec.state().aborts[0].clone();
    assert_eq!(abort.reason, AbortReason::Cancelled);
    let took = abort.at.saturating_duration_since(t0);
    assert!(took <= test_config().poll_interval, "cancel took {took:?}");
    wait_complete(&rig.cp, &["op"]).await;
    assert_eq!(terminal(&rig.cp, "op").state, State::Aborted);
    let nodes = node_reports(&rig.cp, "op");
    assert_eq!(nodes.last().unwrap().state, State::Aborted);
    assert_well_formed(&rig.cp, "op");
    // A cancel in a /reports answer is routed to the registry as well.
    rig.cp.state().report_cancels.push("second".into());
    rig.cp
        .offer(operation("second", vec![fake_node("n", "hang")]));
    wait_complete(&rig.cp, &["second"]).await;
    assert_eq!(
        terminal(&rig.cp, "second"),
        OpReport {
            state: State::Aborted,
            message: Some("cancelled".into())
        }
    );
    finish(&rig).await;
}

#[actix_rt::test]
async fn a_double_offer_runs_once_and_max_running_queues_the_rest() {
    let config = RuntimeConfig {
        max_running: 2,
        ..test_config()
    };
    let rig = start(config);
    let a = operation("a", vec![fake_node("n", "sleep:300")]);
    rig.cp.offer(a.clone());
    rig.cp.offer(a.clone());
    for id in ["b", "c", "d"] {
        rig.cp
            .offer(operation(id, vec![fake_node("n", "sleep:300")]));
    }
    // Two run, two wait, as the check-ins tell the control plane.
    assert!(
        rig.cp
            .wait_until(WAIT, |s| s
                .checkins
                .iter()
                .any(|(_, c)| c.running.len() == 2 && c.queued == 2))
            .await
    );
    // Offered again while it runs: still once.
    rig.cp.offer(a);
    wait_complete(&rig.cp, &["a", "b", "c", "d"]).await;
    {
        let ex = rig.exec.state();
        assert_eq!(ex.max_running, 2);
        assert_eq!(ex.started.iter().filter(|s| s.0 == "a").count(), 1);
        assert_eq!(ex.started.len(), 4);
    }
    assert_eq!(
        rig.cp.state().claims.iter().filter(|c| *c == "a").count(),
        1
    );
    for op in ["a", "b", "c", "d"] {
        assert_eq!(terminal(&rig.cp, op).state, State::Succeeded);
        assert_well_formed(&rig.cp, op);
    }
    finish(&rig).await;
}

#[actix_rt::test]
async fn a_queued_operation_that_is_cancelled_never_starts() {
    let config = RuntimeConfig {
        max_running: 1,
        ..test_config()
    };
    let rig = start(config);
    rig.cp
        .offer(operation("first", vec![fake_node("n", "hang")]));
    assert!(rig.exec.wait_until(WAIT, |s| s.running == 1).await);
    rig.cp
        .offer(operation("second", vec![fake_node("n", "ok")]));
    assert!(
        rig.cp
            .wait_until(WAIT, |s| s.checkins.iter().any(|(_, c)| c.queued == 1))
            .await
    );
    rig.cp.cancel("second");
    wait_complete(&rig.cp, &["second"]).await;
    assert_eq!(
        terminal(&rig.cp, "second"),
        OpReport {
            state: State::Aborted,
            message: Some("cancelled before it started".into())
        }
    );
    assert_eq!(rig.cp.stored("second").len(), 1);
    rig.cp.cancel("first");
    wait_complete(&rig.cp, &["first"]).await;
    assert!(rig.exec.state().started.iter().all(|s| s.0 == "first"));
    finish(&rig).await;
}

#[actix_rt::test]
async fn drain_stops_claiming_lets_work_finish_aborts_at_the_deadline_and_flushes() {
    let rig = start(test_config());
    rig.cp
        .offer(operation("quick", vec![fake_node("n", "sleep:150")]));
    rig.cp
        .offer(operation("stuck", vec![fake_node("n", "hang")]));
    assert!(rig.exec.wait_until(WAIT, |s| s.running == 2).await);
    let t0 = Instant::now();
    let drained = rig.handle.drain(Duration::from_millis(600));
    // Offered after the drain began: never claimed.
    rig.cp.offer(operation("late", vec![fake_node("n", "ok")]));
    tokio::time::timeout(WAIT, drained)
        .await
        .expect("drain ends");
    assert!(t0.elapsed() >= Duration::from_millis(600));
    assert_eq!(rig.handle.wait().await, Ok(()));
    // Every report was acked before the drain ended.
    assert_eq!(terminal(&rig.cp, "quick").state, State::Succeeded);
    assert_eq!(terminal(&rig.cp, "stuck").state, State::Aborted);
    assert_well_formed(&rig.cp, "quick");
    assert_well_formed(&rig.cp, "stuck");
    let st = rig.cp.state();
    assert!(!st.claims.contains(&"late".to_owned()));
    assert_eq!(st.shutdowns.len(), 1);
    assert_eq!(st.shutdowns[0].replica_id, "replica-1");
    drop(st);
    let aborts = rig.exec.state().aborts.clone();
    assert_eq!(aborts.len(), 1);
    assert_eq!(aborts[0].reason, AbortReason::Shutdown);
    assert!(aborts[0].at.saturating_duration_since(t0) >= Duration::from_millis(600));
    let s = rig.handle.stats();
    assert_eq!(s.reports_acked, s.reports_spooled);
}

fn spooled(op: &str, seq: u64, body: ReportBody) -> Report {
    Report {
        op_id: op.into(),
        seq,
        ts: "2026-01-01T00:00:00.000Z".into(),
        body,
    }
}

#[actix_rt::test]
async fn a_process_restart_reports_unfinished_operations_failed_from_the_spool() {
    let mut spool = MemorySpool::new();
    let running = ReportBody::Op(OpReport {
        state: State::Running,
        message: None,
    });
    let line = ReportBody::Log(LogReport {
        node: "web1".into(),
        step: 1,
        stream: Stream::Stdout,
        text: "half way".into(),
    });
    spool
        .append(&[
            spooled("old", 1, running.clone()),
            spooled("old", 2, line),
            spooled("done", 1, running),
            spooled(
                "done",
                2,
                ReportBody::Op(OpReport {
                    state: State::Succeeded,
                    message: None,
                }),
            ),
        ])
        .unwrap();
    let rig = start_with(test_config(), FakeControlPlane::new(300, 250), Some(spool));
    wait_complete(&rig.cp, &["old", "done"]).await;
    assert_well_formed(&rig.cp, "old");
    assert_eq!(rig.cp.stored("old").len(), 3);
    assert_eq!(
        terminal(&rig.cp, "old"),
        OpReport {
            state: State::Failed,
            message: Some(RESTARTED_MESSAGE.into())
        }
    );
    assert_eq!(rig.cp.stored("done").len(), 2);
    assert_eq!(terminal(&rig.cp, "done").state, State::Succeeded);
    finish(&rig).await;
}

/// A process that died after the control plane answered claims (of which
/// one only as an intent in the journal): the restarted one resumes them
/// before its first check-in, reports the owned ones failed, drops the rest.
#[actix_rt::test]
async fn claims_journaled_by_a_dead_process_are_resumed_and_reported_failed() {
    let mut spool = MemorySpool::new();
    spool.journal_claim("ghost", "replica-old").unwrap();
    spool.journal_claim("known", "replica-old").unwrap();
    spool.journal_claimed("known", "replica-old").unwrap();
    spool.journal_claim("stranger", "replica-old").unwrap();
    let cp = FakeControlPlane::new(300, 250);
    {
        let mut s = cp.state();
        for id in ["ghost", "known", "stranger"] {
            s.known
                .insert(id.into(), operation(id, vec![fake_node("n", "ok")]));
        }
        s.claimed.insert("ghost".into());
        s.claimed.insert("known".into());
    }
    let started = Instant::now();
    let rig = start_with(test_config(), cp, Some(spool));
    wait_complete(&rig.cp, &["ghost", "known"]).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    for op in ["ghost", "known"] {
        assert_eq!(
            terminal(&rig.cp, op),
            OpReport {
                state: State::Failed,
                message: Some(RESTARTED_MESSAGE.into())
            }
        );
        assert_eq!(rig.cp.stored(op).len(), 1);
    }
    assert!(rig.cp.stored("stranger").is_empty());
    {
        let s = rig.cp.state();
        assert_eq!(s.resumes.len(), 1);
        assert_eq!(s.resumes[0].previous_replica_id, "replica-old");
        assert_eq!(s.resumes[0].replica_id, "replica-1");
        assert_eq!(s.resumes[0].operations, vec!["ghost", "known", "stranger"]);
    }
    finish(&rig).await;
}

/// An older control plane (404 to `POST /resume`): a claim whose answer was
/// journaled is reported failed; an intent alone is dropped.
#[actix_rt::test]
async fn without_resume_only_answered_claims_are_reported_failed() {
    let mut spool = MemorySpool::new();
    spool.journal_claim("ghost", "replica-old").unwrap();
    spool.journal_claimed("known", "replica-old").unwrap();
    let cp = FakeControlPlane::new(300, 250);
    {
        let mut s = cp.state();
        s.resume_unsupported = true;
        for id in ["ghost", "known"] {
            s.known
                .insert(id.into(), operation(id, vec![fake_node("n", "ok")]));
            s.claimed.insert(id.into());
        }
    }
    let rig = start_with(test_config(), cp, Some(spool));
    wait_complete(&rig.cp, &["known"]).await;
    assert_eq!(
        terminal(&rig.cp, "known").message.as_deref(),
        Some(RESTARTED_MESSAGE)
    );
    assert!(rig.cp.stored("ghost").is_empty());
    assert_eq!(rig.cp.state().resumes.len(), 1);
    finish(&rig).await;
}

#[actix_rt::test]
async fn a_dying_step_worker_fails_its_operation_and_others_go_on() {
    let rig = start(test_config());
    rig.handle
        .fail_points()
        .set_times("step_worker::started", FailAction::Panic, 1);
    rig.cp
        .offer(operation("doomed", vec![fake_node("n", "ok")]));
    wait_complete(&rig.cp, &["doomed"]).await;
    let t = terminal(&rig.cp, "doomed");
    assert_eq!(t.state, State::Failed);
    let msg = t.message.unwrap();
    assert!(
        msg.contains("panicked: fail point step_worker::started fired"),
        "{msg}"
    );
    assert_well_formed(&rig.cp, "doomed");
    // Its node step never ran, and was not run later either.
    rig.cp.offer(operation("fine", vec![fake_node("n", "ok")]));
    wait_complete(&rig.cp, &["fine"]).await;
    assert_eq!(terminal(&rig.cp, "fine").state, State::Succeeded);
    assert!(rig.exec.state().started.iter().all(|s| s.0 == "fine"));
    // A node step that panics fails its node once; keepGoing runs the rest.
    let mut op = operation(
        "mixed",
        vec![fake_node("a-bad", "panic"), fake_node("b-good", "ok")],
    );
    op.dispatch.keep_going = true;
    rig.cp.offer(op);
    wait_complete(&rig.cp, &["mixed"]).await;
    let t = terminal(&rig.cp, "mixed");
    assert_eq!(t.state, State::Failed);
    assert_eq!(t.message.as_deref(), Some("1 node(s) failed: a-bad"));
    let started = rig.exec.state().started.clone();
    assert_eq!(started.iter().filter(|s| s.1 == "a-bad").count(), 1);
    assert_eq!(started.iter().filter(|s| s.1 == "b-good").count(), 1);
    finish(&rig).await;
}

/// An executor that says the step ended (`OutputSink::ended`) has its end
/// recorded then, once: what it does afterwards, a panic included, does not
/// make a second node report.
#[actix_rt::test]
async fn a_step_end_said_by_the_executor_is_recorded_at_once_and_once() {
    let rig = start(test_config());
    rig.cp
        .offer(operation("said", vec![fake_node("n", "end-then-panic")]));
    wait_complete(&rig.cp, &["said"]).await;
    assert_well_formed(&rig.cp, "said");
    let states: Vec<State> = node_reports(&rig.cp, "said")
        .iter()
        .map(|n| n.state)
        .collect();
    assert_eq!(states, [State::Running, State::Succeeded]);
    assert_eq!(terminal(&rig.cp, "said").state, State::Succeeded);
    // The line came before the end.
    let stored = rig.cp.stored("said");
    let line = stored
        .iter()
        .position(|r| matches!(&r.body, ReportBody::Log(l) if l.text == "the last line"));
    let end = stored
        .iter()
        .position(|r| matches!(&r.body, ReportBody::Node(n) if n.state == State::Succeeded));
    assert!(line.unwrap() < end.unwrap(), "{stored:?}");
    finish(&rig).await;
}

#[actix_rt::test]
async fn nodes_outside_allowed_nodes_or_without_an_executor_fail_before_any_call() {
    let config = RuntimeConfig {
        allowed_nodes: Some(Arc::new(|n: &Node| n.name != "evil")),
        ..test_config()
    };
    let rig = start(config);
    let mut op = operation(
        "op",
        vec![
            fake_node("good", "echo"),
            fake_node("evil", "ok"),
            Node::new("remote", "10.0.0.9"),
        ],
    );
    op.dispatch.keep_going = true;
    op.steps = vec![Step::Command(CommandStep {
        command: "login ${option.pass}".into(),
    })];
    op.options.insert("pass".into(), "s3cret".into());
    op.secure_options.push("pass".into());
    rig.cp.offer(op);
    wait_complete(&rig.cp, &["op"]).await;
    let started = rig.exec.state().started.clone();
    assert_eq!(started.len(), 1);
    assert_eq!(started[0].1, "good");
    let nodes = node_reports(&rig.cp, "op");
    let evil = nodes.iter().find(|n| n.node == "evil").unwrap();
    assert_eq!(evil.state, State::Failed);
    assert!(evil
        .message
        .as_deref()
        .unwrap()
        .contains("outside this runner's allowedNodes"));
    let remote = nodes.iter().find(|n| n.node == "remote").unwrap();
    assert!(remote
        .message
        .as_deref()
        .unwrap()
        .contains("uses the ssh executor, which this runner does not have"));
    let stored = rig.cp.stored("op");
    let text = serde_json::to_string(&stored).unwrap();
    assert!(!text.contains("s3cret"));
    assert!(stored.iter().any(|r| matches!(&r.body,
        ReportBody::Log(l) if l.text.contains("[SECURE]"))));
    finish(&rig).await;
}

#[actix_rt::test]
async fn step_and_operation_timeouts_abort_with_timed_out() {
    let rig = start(test_config());
    let mut step = operation("step", vec![fake_node("n", "hang")]);
    step.step_timeout_ms = Some(100);
    let mut whole = operation("whole", vec![fake_node("n", "hang")]);
    whole.timeout_ms = Some(150);
    rig.cp.offer(step);
    rig.cp.offer(whole);
    wait_complete(&rig.cp, &["step", "whole"]).await;
    let n = node_reports(&rig.cp, "step");
    assert_eq!(n.last().unwrap().state, State::Timedout);
    assert_eq!(
        n.last().unwrap().message.as_deref(),
        Some("timed out after 100 ms")
    );
    assert_eq!(terminal(&rig.cp, "step").state, State::Failed);
    assert_eq!(terminal(&rig.cp, "whole").state, State::Timedout);
    assert!(rig
        .exec
        .state()
        .aborts
        .iter()
        .all(|a| a.reason == AbortReason::TimedOut));
    finish(&rig).await;
}

#[actix_rt::test]
async fn failed_report_deliveries_are_resent_from_the_last_ack() {
    let cp = FakeControlPlane::new(300, 250);
    cp.state().fail_reports = 3;
    let rig = start_with(test_config(), cp, None);
    rig.cp
        .offer(operation("op", vec![fake_node("n", "print:50")]));
    wait_complete(&rig.cp, &["op"]).await;
    assert_well_formed(&rig.cp, "op");
    assert_eq!(rig.cp.stored("op").len(), 54);
    assert_eq!(rig.cp.state().gaps, 0);
    assert!(rig.handle.stats().last_error.is_some());
    finish(&rig).await;
}

/// Collects operations.log records as key=value maps.
#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<BTreeMap<String, String>>>>);

struct KvCollector(BTreeMap<String, String>);

impl slog::Serializer for KvCollector {
    fn emit_arguments(&mut self, key: slog::Key, val: &fmt::Arguments) -> slog::Result {
        self.0.insert(key.to_string(), val.to_string());
        Ok(())
    }
}

impl slog::Drain for Collect {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &slog::Record, values: &slog::OwnedKVList) -> Result<(), slog::Never> {
        use slog::KV;
        let mut kv = KvCollector(BTreeMap::new());
        let _ = record.kv().serialize(record, &mut kv);
        let _ = values.serialize(record, &mut kv);
        kv.0.insert("msg".into(), record.msg().to_string());
        self.0.lock().unwrap().push(kv.0);
        Ok(())
    }
}

use std::collections::BTreeMap;

#[actix_rt::test]
async fn operations_log_has_one_start_and_one_end_record_per_operation() {
    let collect = Collect::default();
    let rig = start_full(
        test_config(),
        FakeControlPlane::new(300, 250),
        None,
        Some(Logger::root(collect.clone(), o!())),
    );
    rig.cp
        .offer(operation("op", vec![fake_node("n", "fail:2")]));
    wait_complete(&rig.cp, &["op"]).await;
    finish(&rig).await;
    let records = collect.0.lock().unwrap().clone();
    assert_eq!(records.len(), 2, "{records:?}");
    for key in [
        "op",
        "execution",
        "project",
        "job",
        "nodes",
        "outcome",
        "duration_ms",
    ] {
        assert!(records.iter().all(|r| r.contains_key(key)), "{key}");
    }
    assert_eq!(records[0]["outcome"], "running");
    assert_eq!(records[1]["outcome"], "failed");
    assert_eq!(records[1]["project"], "ops");
    assert_eq!(records[1]["job"], "test/job");
}

#[actix_rt::test]
async fn credentials_refused_are_flagged_and_retried_slowly() {
    let cp = FakeControlPlane::new(300, 250);
    cp.state().fail_checkins = Some((
        2,
        crate::control_plane::ControlPlaneError::Unauthorized {
            message: "bad token".into(),
        },
    ));
    let rig = start_with(test_config(), cp, None);
    assert!(rig.cp.wait_until(WAIT, |s| s.checkins.len() >= 2).await);
    assert!(rig.handle.stats().credentials_refused);
    assert!(rig.cp.wait_until(WAIT, |s| s.checkins.len() >= 4).await);
    let gap = {
        let st = rig.cp.state();
        st.checkins[1].0.saturating_duration_since(st.checkins[0].0)
    };
    // The retry after a refusal waits the full backoff_max (200 ms here).
    assert!(gap >= Duration::from_millis(200), "{gap:?}");
    assert!(!rig.handle.stats().credentials_refused);
    finish(&rig).await;
}

#[actix_rt::test]
async fn a_huge_retry_after_waits_no_longer_than_backoff_max() {
    let cp = FakeControlPlane::new(300, 250);
    // 31 years: obeyed as it stands, no check-in would follow.
    cp.state().fail_checkins = Some((
        1,
        crate::control_plane::ControlPlaneError::Throttled {
            status: 429,
            retry_after: Some(Duration::from_secs(999_999_999)),
        },
    ));
    let rig = start_with(test_config(), cp, None);
    assert!(
        rig.cp.wait_until(WAIT, |s| s.checkins.len() >= 3).await,
        "no check-in after the Retry-After"
    );
    let gap = {
        let st = rig.cp.state();
        st.checkins[1].0.saturating_duration_since(st.checkins[0].0)
    };
    // backoff_max is 200 ms here; the capped Retry-After waits exactly that.
    assert!(gap >= Duration::from_millis(200), "{gap:?}");
    assert!(gap < Duration::from_secs(5), "{gap:?}");
    finish(&rig).await;
}

#[actix_rt::test]
async fn start_refuses_a_builder_without_a_control_plane() {
    assert_eq!(
        Runtime::builder().start().err(),
        Some(RuntimeError::MissingControlPlane)
    );
}

#[actix_rt::test]
async fn a_registry_panic_loses_no_command_and_runs_nothing_twice() {
    let rig = start(test_config());
    rig.handle
        .fail_points()
        .set_times("registry::command", FailAction::Panic, 1);
    rig.cp.offer(operation("op", vec![fake_node("n", "ok")]));
    wait_complete(&rig.cp, &["op"]).await;
    assert_eq!(terminal(&rig.cp, "op").state, State::Succeeded);
    assert_well_formed(&rig.cp, "op");
    assert_eq!(rig.exec.state().started.len(), 1);
    let s = rig.handle.stats();
    assert_eq!(s.restarts.get("registry"), Some(&1));
    assert_eq!(s.starts.get("step_worker"), Some(&1));
    finish(&rig).await;
}

#[test]
fn the_handle_can_be_shared_across_threads() {
    fn check<T: Send + Sync + Clone + 'static>() {}
    check::<RuntimeHandle>();
}

#[actix_rt::test]
async fn a_forgotten_replica_registers_again_and_work_goes_on() {
    let cp = FakeControlPlane::new(300, 250);
    cp.state().fail_checkins = Some((
        1,
        crate::control_plane::ControlPlaneError::Rejected {
            status: 404,
            code: "unknown_replica".into(),
            message: "no such replica".into(),
        },
    ));
    let rig = start_with(test_config(), cp, None);
    assert!(rig.cp.wait_until(WAIT, |s| s.startups == 2).await);
    rig.cp.offer(operation("op", vec![fake_node("n", "ok")]));
    wait_complete(&rig.cp, &["op"]).await;
    let last = rig.cp.state().checkins.last().unwrap().1.replica_id.clone();
    assert_eq!(last, "replica-2");
    assert_eq!(rig.handle.stats().replica_id.as_deref(), Some("replica-2"));
    finish(&rig).await;
}

#[actix_rt::test]
async fn reports_the_control_plane_refuses_do_not_block_other_operations() {
    let mut spool = MemorySpool::new();
    spool
        .append(&[spooled(
            "alien",
            1,
            ReportBody::Op(OpReport {
                state: State::Running,
                message: None,
            }),
        )])
        .unwrap();
    let cp = FakeControlPlane::new(300, 250);
    cp.state().unknown_ops.insert("alien".into());
    let rig = start_with(test_config(), cp, Some(spool));
    rig.cp
        .offer(operation("mine", vec![fake_node("n", "print:20")]));
    wait_complete(&rig.cp, &["mine"]).await;
    assert_well_formed(&rig.cp, "mine");
    assert!(rig.cp.stored("alien").is_empty());
    let err = rig.handle.stats().last_error.unwrap_or_default();
    assert!(
        err.contains("refuses the reports of operation alien (404 unknown_operation"),
        "{err}"
    );
    finish(&rig).await;
}

#[actix_rt::test]
async fn a_second_signal_aborts_a_long_drain_at_once() {
    let rig = start(test_config());
    rig.cp
        .offer(operation("stuck", vec![fake_node("n", "hang")]));
    assert!(rig.exec.wait_until(WAIT, |s| s.running == 1).await);
    let drained = rig.handle.drain(Duration::from_secs(60));
    let t0 = Instant::now();
    rig.handle.abort_all();
    tokio::time::timeout(WAIT, drained)
        .await
        .expect("drain ends");
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert_eq!(rig.handle.wait().await, Ok(()));
    assert_eq!(terminal(&rig.cp, "stuck").state, State::Aborted);
    assert_eq!(rig.exec.state().aborts[0].reason, AbortReason::Shutdown);
}

#[actix_rt::test]
async fn startup_is_retried_and_a_silent_check_in_ends_at_its_deadline() {
    let config = RuntimeConfig {
        request_timeout: Duration::from_millis(200),
        ..test_config()
    };
    let fp = FailPoints::new();
    fp.set_times("poller::startup", FailAction::Error, 2);
    let cp = FakeControlPlane::new(300, 100);
    cp.state().hang_checkins = 2;
    let handle = Runtime::builder()
        .config(config)
        .control_plane(cp.clone())
        .fail_points(fp)
        .logger(test_log())
        .start()
        .unwrap();
    // Two hanging check-ins, each cut at hold + deadline, then normal ones.
    assert!(cp.wait_until(WAIT, |s| s.checkins.len() >= 4).await);
    let gap = cp.max_checkin_gap();
    assert!(gap >= Duration::from_millis(300), "{gap:?}");
    assert!(gap < Duration::from_secs(2), "{gap:?}");
    assert_eq!(cp.state().startups, 1);
    let err = handle.stats().last_error.unwrap_or_default();
    assert!(err.contains("did not answer within 300 ms"), "{err}");
    tokio::time::timeout(WAIT, handle.drain(Duration::ZERO))
        .await
        .unwrap();
}

#[actix_rt::test]
async fn thread_count_and_keep_going_shape_node_dispatch() {
    let rig = start(test_config());
    let mut wide = operation(
        "wide",
        (0..4)
            .map(|i| fake_node(&format!("w{i}"), "sleep:100"))
            .collect(),
    );
    wide.dispatch.thread_count = 2;
    rig.cp.offer(wide);
    wait_complete(&rig.cp, &["wide"]).await;
    assert_eq!(rig.exec.state().max_running, 2);
    assert_eq!(terminal(&rig.cp, "wide").state, State::Succeeded);
    // keepGoing off: the first failed node stops dispatch to the next ones.
    let stop = operation(
        "stop",
        vec![
            fake_node("a", "fail:3"),
            fake_node("b", "ok"),
            fake_node("c", "ok"),
        ],
    );
    rig.cp.offer(stop);
    wait_complete(&rig.cp, &["stop"]).await;
    let t = terminal(&rig.cp, "stop");
    assert_eq!(t.state, State::Failed);
    assert_eq!(t.message.as_deref(), Some("1 node(s) failed: a"));
    let nodes = node_reports(&rig.cp, "stop");
    assert!(nodes.iter().all(|n| n.node == "a"));
    assert_eq!(nodes.last().unwrap().exit_code, Some(3));
    assert!(!rig
        .exec
        .state()
        .started
        .iter()
        .any(|s| s.0 == "stop" && s.1 != "a"));
    finish(&rig).await;
}

/// A runtime whose report interval (server and config) is `interval`.
fn start_with_report_interval(interval: Duration) -> Rig {
    let cp = FakeControlPlane::new(300, 250);
    cp.state().startup.report_interval_ms = interval.as_millis() as u64;
    start_with(
        RuntimeConfig {
            report_interval: interval,
            ..test_config()
        },
        cp,
        None,
    )
}

#[actix_rt::test]
async fn a_report_of_an_idle_runner_is_sent_at_once_not_an_interval_later() {
    // A 10 s interval: were reports only sent once per interval, the first
    // one would wait until 10 s after startup.
    let rig = start_with_report_interval(Duration::from_secs(10));
    assert!(rig.cp.wait_until(WAIT, |s| !s.checkins.is_empty()).await);
    let offered = Instant::now();
    rig.cp
        .offer(operation("soon", vec![fake_node("n", "sleep:3000")]));
    assert!(
        rig.cp
            .wait_until(Duration::from_secs(3), |s| s
                .stored
                .get("soon")
                .is_some_and(|r| !r.is_empty()))
            .await,
        "the operation's first report was not stored within 3 s"
    );
    // One check-in (300 ms) plus the claim and one report round trip.
    assert!(
        offered.elapsed() < Duration::from_secs(2),
        "{:?}",
        offered.elapsed()
    );
    wait_complete(&rig.cp, &["soon"]).await;
    finish(&rig).await;
}

#[actix_rt::test]
async fn output_flowing_line_by_line_is_batched_not_sent_per_line() {
    // Interval 1 s, so batches go at most every 100 ms while lines flow.
    let rig = start_with_report_interval(Duration::from_secs(1));
    rig.cp
        .offer(operation("flow", vec![fake_node("n", "trickle:200")]));
    wait_complete(&rig.cp, &["flow"]).await;
    assert_well_formed(&rig.cp, "flow");
    let lines = rig
        .cp
        .stored("flow")
        .iter()
        .filter(|r| matches!(r.body, ReportBody::Log(_)))
        .count();
    assert_eq!(lines, 200);
    // 200 lines over at least 1 s: about one request per 100 ms, not one
    // per line.
    let calls = rig.cp.state().report_calls;
    assert!(calls <= 40, "{calls} report requests for 200 lines");
    finish(&rig).await;
}

#[actix_rt::test]
async fn a_claim_whose_answer_is_lost_is_asked_again_and_runs() {
    let cp = FakeControlPlane::new(300, 250);
    // The claim takes effect on the server; its answer never arrives, and
    // the server does not offer an operation it sees as claimed again.
    cp.state().lose_claim_answers = 2;
    let rig = start_with(test_config(), cp, None);
    rig.cp
        .offer(operation("lost-answer", vec![fake_node("n", "ok")]));
    wait_complete(&rig.cp, &["lost-answer"]).await;
    assert_well_formed(&rig.cp, "lost-answer");
    assert_eq!(rig.cp.state().claims.len(), 3);
    finish(&rig).await;
}

#[actix_rt::test]
async fn a_control_character_in_a_node_name_fails_that_node_only() {
    let rig = start(test_config());
    let mut op = operation(
        "nul",
        vec![
            fake_node("a-good", "ok"),
            fake_node("b-bad\0name", "ok"),
            fake_node("c-tab\tname", "ok"),
            fake_node("d-good", "ok"),
        ],
    );
    op.dispatch.keep_going = true;
    rig.cp.offer(op);
    wait_complete(&rig.cp, &["nul"]).await;
    assert_well_formed(&rig.cp, "nul");
    let t = terminal(&rig.cp, "nul");
    assert_eq!(t.state, State::Failed);
    assert_eq!(
        t.message.as_deref(),
        Some("2 node(s) failed: b-bad\\0name, c-tab\\tname"),
        "only the two nodes with control characters fail"
    );
    let started: Vec<String> = rig
        .exec
        .state()
        .started
        .iter()
        .map(|s| s.1.clone())
        .collect();
    assert_eq!(started, ["a-good", "d-good"]);
    let nodes = node_reports(&rig.cp, "nul");
    let bad = nodes.iter().find(|n| n.node == "b-bad\0name").unwrap();
    let msg = bad.message.as_deref().unwrap();
    assert!(
        msg.contains("name") && msg.contains("control character") && msg.contains("\\0"),
        "{msg}"
    );
    finish(&rig).await;
}

#[actix_rt::test]
async fn allowed_nodes_sees_the_target_the_executor_is_given() {
    // What a deny-list on the hostname must stop: every spelling of the
    // loopback address, and ports hidden in the hostname.
    let deny = crate::filter::NodeFilter::parse(r"!hostname: 127\.0\.0\.1").unwrap();
    let config = RuntimeConfig {
        allowed_nodes: Some(Arc::new(move |n: &Node| deny.matches(n))),
        ..test_config()
    };
    let cp = FakeControlPlane::new(300, 250);
    let exec = FakeExecutor::new();
    let handle = Runtime::builder()
        .config(config)
        .control_plane(cp.clone())
        .executor(ExecutorKind::Ssh, exec.clone())
        .logger(test_log())
        .start()
        .expect("runtime starts");
    let rig = Rig { cp, exec, handle };
    let spellings = [
        " 127.0.0.1",
        "127.0.0.1 ",
        "[127.0.0.1]",
        "127.0.0.1:2222",
        "2130706433",
        "127.1",
        "0x7f.1",
        "0177.0.0.1",
        "::ffff:127.0.0.1",
        "[::ffff:7f00:1]:22",
        "127.0.0.1.",
        "127.0.0.1\n",
    ];
    let mut nodes: Vec<Node> = spellings
        .iter()
        .enumerate()
        .map(|(i, h)| Node::new(format!("n{i:02}"), *h))
        .collect();
    nodes.push(Node::new("ok", "10.0.0.7"));
    let mut op = operation("spellings", nodes);
    op.dispatch.keep_going = true;
    rig.cp.offer(op);
    wait_complete(&rig.cp, &["spellings"]).await;
    let started: Vec<String> = rig
        .exec
        .state()
        .started
        .iter()
        .map(|s| s.1.clone())
        .collect();
    assert_eq!(started, ["ok"], "only the plain address may be dialled");
    let nodes = node_reports(&rig.cp, "spellings");
    for (i, h) in spellings.iter().enumerate() {
        let name = format!("n{i:02}");
        let r = nodes.iter().find(|n| n.node == name).unwrap();
        assert_eq!(r.state, State::Failed, "{h:?}");
        assert!(r.message.is_some(), "{h:?}: a refusal says why");
    }
    finish(&rig).await;
}

/// The embedding API's figures move with what the runtime does: a claim, a
/// node step running, its end, the check-ins, and a control plane that
/// stops answering (readiness then says why).
#[actix_rt::test]
async fn the_stats_follow_operations_check_ins_and_control_plane_errors() {
    let rig = start(test_config());
    assert!(rig.cp.wait_until(WAIT, |s| s.checkins.len() >= 2).await);
    let s = rig.handle.stats();
    assert!(s.checkin_duration.count() >= 1, "{s:?}");
    assert!(s.last_checkin_success.is_some());
    assert!(rig.handle.readiness().ready, "{:?}", rig.handle.readiness());
    assert!(rig.handle.liveness().alive, "{:?}", rig.handle.liveness());
    assert_eq!(s.checkin_interval, Duration::from_millis(250), "the hold");

    rig.cp
        .offer(operation("op-1", vec![fake_node("n", "sleep:400")]));
    assert!(rig.exec.wait_until(WAIT, |e| e.running == 1).await);
    let s = rig.handle.stats();
    assert_eq!(
        (s.operations_claimed, s.running, s.node_steps_running),
        (1, 1, 1)
    );
    wait_complete(&rig.cp, &["op-1"]).await;
    let t0 = Instant::now();
    loop {
        let s = rig.handle.stats();
        if s.reports_pending == 0 && s.operations_finished.get("succeeded") == Some(&1) {
            assert_eq!((s.running, s.node_steps_running), (0, 0));
            assert!(s.report_bytes > 0 && s.report_oldest_unacked_age.is_none());
            break;
        }
        assert!(t0.elapsed() < WAIT, "{s:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    rig.cp.state().fail_checkins = Some((
        1_000,
        crate::control_plane::ControlPlaneError::Transport("connection refused".into()),
    ));
    let t0 = Instant::now();
    let r = loop {
        let r = rig.handle.readiness();
        if !r.ready {
            break r;
        }
        assert!(t0.elapsed() < WAIT, "still ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Three intervals of 250 ms, plus the check-in that was held.
    assert!(
        t0.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t0.elapsed()
    );
    assert!(r.reason.contains("connection refused"), "{}", r.reason);
    let s = rig.handle.stats();
    assert!(s.control_plane_errors[&("checkin".to_owned(), "transport".to_owned())] >= 1);
    assert!(rig.handle.liveness().alive, "alive while not ready");
    rig.cp.state().fail_checkins = None;
    let t0 = Instant::now();
    while !rig.handle.readiness().ready {
        assert!(t0.elapsed() < WAIT, "not ready again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    finish(&rig).await;
}
