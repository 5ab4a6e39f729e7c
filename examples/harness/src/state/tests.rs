//! Unit tests of the control plane rules, without HTTP.

use super::*;
use rdrunner_actors::model::{CommandStep, LogReport, NodeReport, OpReport, Step, Stream};

fn state() -> ControlState {
    let cadence = Cadence {
        lease_ms: 1000,
        report_batch_max: 10,
        ..Cadence::default()
    };
    let thresholds = Thresholds {
        unknown_after: Duration::from_secs(3),
        down_after: Duration::from_secs(10),
    };
    ControlState::new(cadence, thresholds, "http://127.0.0.1:1".into())
}

fn node(name: &str, tags: &[&str]) -> Node {
    let mut n = Node::new(name, format!("{name}.example"));
    n.tags = tags.iter().map(|t| t.to_string()).collect();
    n
}

fn runner(s: &mut ControlState, id: &str, filter: &str) {
    let req = CreateRunner {
        name: id.into(),
        projects: [("ops".to_string(), filter.to_string())].into(),
        ..CreateRunner::default()
    };
    s.create_runner(req, id.into(), format!("tok-{id}"))
        .unwrap();
}

fn replica(s: &mut ControlState, runner: &str, replica: &str, now: Instant) {
    let req = StartupRequest {
        hostname: "h".into(),
        version: "1".into(),
        pid: 1,
        max_running: 4,
        tags: vec![],
    };
    s.startup(runner, req, replica.into(), None, now).unwrap();
}

fn checkin(s: &mut ControlState, runner: &str, replica: &str, now: Instant) -> CheckinPoll {
    let req = CheckinRequest {
        replica_id: replica.into(),
        running: vec![],
        queued: 0,
        max_running: 4,
        uptime_s: 0,
        version: "1".into(),
        pongs: vec![],
    };
    s.record_checkin(runner, &req, None, now).unwrap();
    s.poll_checkin(runner, replica, now, false).unwrap()
}

fn submit(s: &mut ControlState, filter: &str) -> u64 {
    let step = Step::Command(CommandStep {
        command: "true".into(),
    });
    s.submit_execution("ops", SubmitExecution::new(vec![step], filter))
        .unwrap()
        .execution_id
}

fn report(op: &str, seq: u64, body: ReportBody) -> Report {
    Report {
        op_id: op.into(),
        seq,
        ts: "2026-01-01T00:00:00.000Z".into(),
        body,
    }
}

fn log(op: &str, seq: u64) -> Report {
    report(
        op,
        seq,
        ReportBody::Log(LogReport {
            node: "web1".into(),
            step: 1,
            stream: Stream::Stdout,
            text: format!("line {seq}"),
        }),
    )
}

fn batch(replica: &str, reports: Vec<Report>) -> ReportsRequest {
    ReportsRequest {
        replica_id: replica.into(),
        reports,
    }
}

/// One runner `r1` covering web nodes, one replica `a`, one execution.
fn setup() -> (ControlState, Instant, String) {
    let mut s = state();
    let now = Instant::now();
    runner(&mut s, "r1", "tags: web");
    s.set_nodes("ops", vec![node("web1", &["web"]), node("db1", &["db"])])
        .unwrap();
    replica(&mut s, "r1", "a", now);
    let exec = submit(&mut s, ".*");
    let op = s.execution(exec).unwrap().operations[0].id.clone();
    (s, now, op)
}

#[test]
fn constant_time_eq_compares_whole_values() {
    assert!(constant_time_eq(b"abc", b"abc"));
    assert!(!constant_time_eq(b"abc", b"abd"));
    assert!(!constant_time_eq(b"abc", b"ab"));
}

#[test]
fn nodes_are_split_by_runner_and_uncovered_nodes_fail() {
    let (s, _, _) = setup();
    let st = s.execution(1).unwrap();
    assert_eq!(st.operations.len(), 1);
    assert_eq!(st.operations[0].nodes, vec!["web1".to_string()]);
    let db = &st.nodes["db1"];
    assert_eq!(db.state, RunState::Failed);
    assert!(db
        .message
        .as_deref()
        .unwrap()
        .contains("no runner is assigned"));
    assert_eq!(st.nodes["web1"].runner.as_deref(), Some("r1"));
}

#[test]
fn two_runners_get_one_operation_each() {
    let mut s = state();
    runner(&mut s, "r1", "tags: web");
    runner(&mut s, "r2", "tags: db");
    s.set_nodes("ops", vec![node("web1", &["web"]), node("db1", &["db"])])
        .unwrap();
    let exec = submit(&mut s, ".*");
    let st = s.execution(exec).unwrap();
    let runners: Vec<_> = st.operations.iter().map(|o| o.runner.as_str()).collect();
    assert_eq!(runners, ["r1", "r2"]);
}

#[test]
fn an_offer_is_leased_then_offered_again() {
    let (mut s, now, op) = setup();
    let CheckinPoll::Ready(answer) = checkin(&mut s, "r1", "a", now) else {
        panic!("expected an offer")
    };
    assert_eq!(answer.operations[0].id, op);
    match checkin(&mut s, "r1", "a", now + Duration::from_millis(500)) {
        CheckinPoll::Wait { recheck_at } => {
            assert_eq!(recheck_at, Some(now + Duration::from_millis(1000)))
        }
        other => panic!("offered twice within the lease: {other:?}"),
    }
    let again = checkin(&mut s, "r1", "a", now + Duration::from_millis(1001));
    assert!(matches!(again, CheckinPoll::Ready(ref a) if a.operations.len() == 1));
}

#[test]
fn an_offer_to_a_replica_that_shut_down_is_offered_again_at_once() {
    let (mut s, now, op) = setup();
    replica(&mut s, "r1", "b", now);
    assert!(matches!(
        checkin(&mut s, "r1", "a", now),
        CheckinPoll::Ready(_)
    ));
    assert!(matches!(
        checkin(&mut s, "r1", "b", now),
        CheckinPoll::Wait { .. }
    ));
    let bye = ShutdownRequest {
        replica_id: "a".into(),
        reason: "restart".into(),
    };
    s.shutdown("r1", &bye, now).unwrap();
    let CheckinPoll::Ready(answer) = checkin(&mut s, "r1", "b", now) else {
        panic!("the offer to the stopped replica is handed out again")
    };
    assert_eq!(answer.operations[0].id, op);
}

#[test]
fn claim_rules() {
    let (mut s, now, op) = setup();
    replica(&mut s, "r1", "b", now);
    assert_eq!(s.claim("r1", &op, "a").unwrap().id, op);
    assert_eq!(
        s.claim("r1", &op, "a").unwrap().id,
        op,
        "a repeated claim by the owner is fine"
    );
    assert_eq!(s.claim("r1", &op, "b").unwrap_err().code, "taken");
    runner(&mut s, "r2", "tags: db");
    replica(&mut s, "r2", "c", now);
    assert_eq!(s.claim("r2", &op, "c").unwrap_err().status, 404);
    assert_eq!(
        s.claim("r1", "op-nope", "a").unwrap_err().code,
        "unknown_operation"
    );
}

#[test]
fn seq_rules_drop_duplicates_and_refuse_gaps() {
    let (mut s, _, op) = setup();
    s.claim("r1", &op, "a").unwrap();
    let ack = s
        .reports("r1", batch("a", vec![log(&op, 1), log(&op, 3)]))
        .unwrap();
    assert_eq!(ack.acks[&op], 1, "3 is a gap");
    let ack = s
        .reports("r1", batch("a", vec![log(&op, 1), log(&op, 2)]))
        .unwrap();
    assert_eq!(ack.acks[&op], 2);
    let ack = s
        .reports("r1", batch("a", vec![log(&op, 4), log(&op, 3)]))
        .unwrap();
    assert_eq!(ack.acks[&op], 4, "a shuffled batch is stored whole");
    let seqs: Vec<u64> = s
        .stored_reports(&op)
        .unwrap()
        .iter()
        .map(|r| r.seq)
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4]);
    assert_eq!(s.operation_counters(&op), Some((1, 1)));
    let page = s.output(1, 0, 100).unwrap();
    let texts: Vec<_> = page.entries.iter().map(|e| e.text.as_str()).collect();
    assert_eq!(texts, ["line 1", "line 2", "line 3", "line 4"]);
    assert_eq!(s.output(1, 2, 100).unwrap().entries[0].n, 3);
    assert!(!page.complete);
}

#[test]
fn a_rejected_batch_stores_nothing() {
    let (mut s, _, op) = setup();
    s.claim("r1", &op, "a").unwrap();
    let err = s
        .reports("r1", batch("a", vec![log(&op, 1), log("op-unknown", 1)]))
        .unwrap_err();
    assert_eq!(err.status, 404);
    assert!(s.stored_reports(&op).unwrap().is_empty());
    let err = s.reports("r1", batch("a", vec![log(&op, 0)])).unwrap_err();
    assert_eq!(err.status, 400);
    let many = (1..=11).map(|i| log(&op, i)).collect();
    assert_eq!(s.reports("r1", batch("a", many)).unwrap_err().status, 413);
    assert!(s.stored_reports(&op).unwrap().is_empty());
}

#[test]
fn terminal_reports_end_the_execution_with_node_states() {
    let (mut s, _, op) = setup();
    s.claim("r1", &op, "a").unwrap();
    let node = |seq, state, exit| {
        report(
            &op,
            seq,
            ReportBody::Node(NodeReport {
                node: "web1".into(),
                step: 1,
                state,
                exit_code: exit,
                message: None,
            }),
        )
    };
    let done = report(
        &op,
        3,
        ReportBody::Op(OpReport {
            state: State::Succeeded,
            message: None,
        }),
    );
    s.reports("r1", batch("a", vec![node(1, State::Running, None)]))
        .unwrap();
    assert_eq!(
        s.execution(1).unwrap().nodes["web1"].state,
        RunState::Running
    );
    s.reports(
        "r1",
        batch("a", vec![node(2, State::Succeeded, Some(0)), done]),
    )
    .unwrap();
    let st = s.execution(1).unwrap();
    assert_eq!(st.nodes["web1"].state, RunState::Succeeded);
    assert_eq!(st.nodes["web1"].exit_code, Some(0));
    assert_eq!(st.operations[0].state, RunState::Succeeded);
    assert_eq!(
        st.state,
        RunState::Failed,
        "db1 was not covered by any runner"
    );
    assert!(s.output(1, 0, 10).unwrap().complete);
    let after = s.reports("r1", batch("a", vec![log(&op, 4)])).unwrap();
    assert_eq!(
        after.acks[&op], 3,
        "nothing is stored after the terminal report"
    );
}

#[test]
fn a_node_whose_first_report_is_its_failure_keeps_the_message() {
    let (mut s, _, op) = setup();
    s.claim("r1", &op, "a").unwrap();
    let failed = report(
        &op,
        1,
        ReportBody::Node(NodeReport {
            node: "web1".into(),
            step: 1,
            state: State::Failed,
            exit_code: Some(3),
            message: Some("the runner failed on this node".into()),
        }),
    );
    s.reports("r1", batch("a", vec![failed])).unwrap();
    let st = s.execution(1).unwrap();
    assert_eq!(st.nodes["web1"].state, RunState::Failed);
    assert_eq!(st.nodes["web1"].exit_code, Some(3));
    assert_eq!(
        st.nodes["web1"].message.as_deref(),
        Some("the runner failed on this node")
    );
}

#[test]
fn abort_is_immediate_before_a_claim_and_a_cancel_after() {
    let (mut s, now, op) = setup();
    s.abort(1).unwrap();
    assert_eq!(
        s.execution(1).unwrap().operations[0].state,
        RunState::Aborted
    );
    assert_eq!(s.claim("r1", &op, "a").unwrap_err().code, "cancelled");

    let exec = submit(&mut s, "web1");
    let op2 = s.execution(exec).unwrap().operations[0].id.clone();
    s.claim("r1", &op2, "a").unwrap();
    let rx = s.subscribe("r1");
    s.abort(exec).unwrap();
    assert!(rx.has_changed().unwrap(), "the runner's check-in is woken");
    let CheckinPoll::Ready(answer) = checkin(&mut s, "r1", "a", now) else {
        panic!("a new cancel answers at once")
    };
    assert_eq!(answer.cancel, vec![op2.clone()]);
    assert!(
        matches!(checkin(&mut s, "r1", "a", now), CheckinPoll::Wait { .. }),
        "a delivered cancel does not end every later long poll"
    );
    let ack = s.reports("r1", batch("a", vec![log(&op2, 1)])).unwrap();
    assert_eq!(ack.cancel, vec![op2]);
}

#[test]
fn silent_replicas_go_unknown_then_down_and_lose_their_operations() {
    let (mut s, now, op) = setup();
    checkin(&mut s, "r1", "a", now);
    s.claim("r1", &op, "a").unwrap();
    assert_eq!(
        s.get_runner("r1", now).unwrap().status,
        RunnerStatus::Healthy
    );
    let later = now + Duration::from_secs(4);
    assert_eq!(
        s.get_runner("r1", later).unwrap().status,
        RunnerStatus::Unknown
    );
    let much_later = now + Duration::from_secs(11);
    assert_eq!(
        s.get_runner("r1", much_later).unwrap().status,
        RunnerStatus::Down
    );
    s.sweep(much_later);
    let st = s.execution(1).unwrap();
    assert_eq!(st.operations[0].state, RunState::Lost);
    assert!(st.operations[0]
        .message
        .as_deref()
        .unwrap()
        .contains("stopped checking in"));
    assert_eq!(st.nodes["web1"].state, RunState::Lost);
    // A terminal report arriving later still wins.
    let done = report(
        &op,
        1,
        ReportBody::Op(OpReport {
            state: State::Failed,
            message: Some("exit 1".into()),
        }),
    );
    s.reports("r1", batch("a", vec![done])).unwrap();
    assert_eq!(
        s.execution(1).unwrap().operations[0].state,
        RunState::Failed
    );
}

#[test]
fn shutdown_shows_down_at_once() {
    let (mut s, now, _) = setup();
    checkin(&mut s, "r1", "a", now);
    let req = ShutdownRequest {
        replica_id: "a".into(),
        reason: "stop".into(),
    };
    s.shutdown("r1", &req, now).unwrap();
    assert_eq!(s.get_runner("r1", now).unwrap().status, RunnerStatus::Down);
}

#[test]
fn credentials_and_tokens() {
    let (mut s, _, _) = setup();
    assert!(s.authenticate("r1", "tok-r1").is_ok());
    assert_eq!(s.authenticate("r1", "nope").unwrap_err().status, 401);
    let creds = s.credentials("r1").unwrap();
    assert!(!creds.contains("tok-r1"), "only the hash is kept");
    assert!(creds.contains("RUNDECK_RUNNER_ID=r1"));
    s.regenerate_credentials("r1", "new".into()).unwrap();
    assert_eq!(s.authenticate("r1", "tok-r1").unwrap_err().status, 401);
    assert!(s.authenticate("r1", "new").is_ok());
    s.delete_runner("r1").unwrap();
    assert_eq!(s.authenticate("r1", "new").unwrap_err().status, 403);
    assert_eq!(s.authenticate("r1", "other").unwrap_err().status, 401);
}

#[test]
fn bad_filters_and_empty_matches_are_refused() {
    let (mut s, _, _) = setup();
    assert_eq!(
        s.assign_project("r1", "ops", "name: [").unwrap_err().code,
        "bad_filter"
    );
    let step = Step::Command(CommandStep {
        command: "true".into(),
    });
    let err = s
        .submit_execution("ops", SubmitExecution::new(vec![step], "nosuchnode"))
        .unwrap_err();
    assert_eq!(err.code, "no_nodes");
}

#[test]
fn control_characters_in_names_and_text_are_refused_naming_the_field() {
    let mut s = state();
    let evil = [
        "web\nRUNDECK_SERVER_URL=http://evil",
        "a\rb",
        "nul\0",
        "\u{202e}gnp.exe",
        "c1\u{85}",
        "esc\x1b[31m",
    ];
    for bad in evil {
        let refuse = |r: Result<_, ApiError>, field: &str| {
            let e = r
                .err()
                .unwrap_or_else(|| panic!("{bad:?} in {field} accepted"));
            assert_eq!(
                (e.status, e.code),
                (422, ErrorCode::ControlCharacter),
                "{e}"
            );
            assert!(e.message.contains(&format!("`{field}`")), "{e}");
            assert!(!e.message.contains(bad), "the value is not echoed: {e}");
        };
        let create = |f: &dyn Fn(&mut CreateRunner)| {
            let mut req = CreateRunner {
                name: "ok".into(),
                ..CreateRunner::default()
            };
            f(&mut req);
            req
        };
        for (field, req) in [
            ("name", create(&|r| r.name = bad.into())),
            ("description", create(&|r| r.description = bad.into())),
            (
                "tags[1]",
                create(&|r| r.tags = vec!["ok".into(), bad.into()]),
            ),
            (
                "projects (a project name)",
                create(&|r| r.projects = [(bad.to_string(), ".*".to_string())].into()),
            ),
        ] {
            refuse(
                s.create_runner(req, "r".into(), "t".into()).map(|_| ()),
                field,
            );
        }
        runner(&mut s, "r1", ".*");
        refuse(s.assign_project("r1", bad, ".*").map(|_| ()), "project");
        refuse(s.set_nodes(bad, vec![node("web1", &[])]), "project");
        refuse(
            s.set_nodes("ops", vec![node("web1", &[]), node(bad, &[])]),
            "[1].name",
        );
        let mut n = node("web1", &[]);
        n.hostname = bad.into();
        refuse(s.set_nodes("ops", vec![n]), "[0].hostname");
        let mut n = node("web1", &[]);
        n.username = Some(bad.into());
        refuse(s.set_nodes("ops", vec![n]), "[0].username");
        refuse(
            s.set_nodes("ops", vec![node("web1", &["ok", bad])]),
            "[0].tags[1]",
        );
        s.set_nodes("ops", vec![node("web1", &[])]).unwrap();
        let step = Step::Command(CommandStep {
            command: "true".into(),
        });
        let mut req = SubmitExecution::new(vec![step], ".*");
        refuse(s.submit_execution(bad, req.clone()).map(|_| ()), "project");
        req.job = bad.into();
        refuse(s.submit_execution("ops", req.clone()).map(|_| ()), "job");
        req.job = String::new();
        req.user = bad.into();
        refuse(s.submit_execution("ops", req).map(|_| ()), "user");
    }
    // Nothing refused was stored: one runner, the one inventory.
    assert_eq!(s.list_runners(Instant::now()).len(), 1);
    assert_eq!(s.nodes("ops").unwrap().len(), 1);
    // A plain name, with spaces and letters from anywhere, is fine.
    s.create_runner(
        CreateRunner {
            name: "web runner — Zürich 東京".into(),
            ..CreateRunner::default()
        },
        "r2".into(),
        "t".into(),
    )
    .unwrap();
}

#[test]
fn replicas_are_capped_pruning_the_oldest_down_ones() {
    let mut s = state();
    s.set_max_replicas(3);
    let t0 = Instant::now();
    runner(&mut s, "r1", "tags: web");
    s.set_nodes("ops", vec![node("web1", &["web"])]).unwrap();
    replica(&mut s, "r1", "a", t0);
    replica(&mut s, "r1", "b", t0 + Duration::from_secs(1));
    replica(&mut s, "r1", "c", t0 + Duration::from_secs(2));
    // `a` runs an operation, then everyone falls silent but `c`.
    let exec = submit(&mut s, ".*");
    let op = s.execution(exec).unwrap().operations[0].id.clone();
    s.claim("r1", &op, "a").unwrap();
    let t = t0 + Duration::from_secs(5);
    checkin(&mut s, "r1", "c", t);

    // All three alive: the fourth is refused, and nothing changes.
    let req = StartupRequest {
        hostname: "h".into(),
        version: "1".into(),
        pid: 1,
        max_running: 4,
        tags: vec![],
    };
    let e = s
        .startup("r1", req.clone(), "d".into(), None, t)
        .expect_err("a fourth live replica");
    assert_eq!((e.status, e.code), (409, ErrorCode::TooManyReplicas), "{e}");
    assert!(e.message.contains("at most 3"), "{e}");
    assert_eq!(s.get_runner("r1", t).unwrap().replicas.len(), 3);

    // 10 s of silence makes `a` and `b` down: `a`, silent longest, goes,
    // and its operation is lost rather than left running for ever.
    let t = t0 + Duration::from_secs(11);
    checkin(&mut s, "r1", "c", t);
    s.startup("r1", req.clone(), "d".into(), None, t).unwrap();
    let ids: Vec<String> = s
        .get_runner("r1", t)
        .unwrap()
        .replicas
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, ["b", "c", "d"]);
    assert_eq!(s.execution(exec).unwrap().state, RunState::Lost);
    // A shut-down replica is down at once and makes room too.
    s.shutdown(
        "r1",
        &ShutdownRequest {
            replica_id: "c".into(),
            reason: "SIGTERM".into(),
        },
        t,
    )
    .unwrap();
    let ids = |s: &ControlState| -> Vec<String> {
        s.get_runner("r1", t)
            .unwrap()
            .replicas
            .into_iter()
            .map(|r| r.id)
            .collect()
    };
    // `b` (silent longest) goes for `e`, then `c` (shut down) for `f`.
    s.startup("r1", req.clone(), "e".into(), None, t).unwrap();
    assert_eq!(ids(&s), ["c", "d", "e"]);
    s.startup("r1", req.clone(), "f".into(), None, t).unwrap();
    assert_eq!(ids(&s), ["d", "e", "f"]);
    s.startup("r1", req, "g".into(), None, t)
        .expect_err("d, e and f are alive");
}

#[test]
fn secure_option_values_stay_in_memory_and_a_restart_fails_what_would_need_them() {
    let mut s = state();
    let now = Instant::now();
    runner(&mut s, "r1", ".*");
    s.set_nodes("ops", vec![node("web1", &[])]).unwrap();
    replica(&mut s, "r1", "a", now);
    let step = Step::Command(CommandStep {
        command: "deploy".into(),
    });
    let mut req = SubmitExecution::new(vec![step], ".*");
    req.options = [
        ("dbpass".to_string(), "s3cret-value".to_string()),
        ("service".to_string(), "nginx".to_string()),
    ]
    .into();
    req.secure_options = vec!["dbpass".into()];
    let claimed = s.submit_execution("ops", req.clone()).unwrap().execution_id;
    let waiting = s.submit_execution("ops", req.clone()).unwrap().execution_id;
    let plain = {
        let mut r = req;
        r.options.remove("dbpass");
        r.secure_options.clear();
        s.submit_execution("ops", r).unwrap().execution_id
    };
    let op_of = |s: &ControlState, e: u64| s.execution(e).unwrap().operations[0].id.clone();
    let claimed_op = op_of(&s, claimed);
    // In memory, the runner gets the value.
    let op = s.claim("r1", &claimed_op, "a").unwrap();
    assert_eq!(op.options["dbpass"], "s3cret-value");

    // The state file holds the option's name and a marker, never the value.
    let file = serde_json::to_string(s.snapshot()).unwrap();
    assert!(!file.contains("s3cret-value"), "{file}");
    assert!(file.contains("dbpass"), "{file}");
    assert!(file.contains(SECURE_VALUE_NOT_KEPT), "{file}");
    assert!(file.contains("nginx"), "plain options are kept");

    // After a restart: the operation nobody claimed fails and says why; the
    // one claimed runs on (its runner has the values); the one without
    // secure options is offered as before.
    let mut restarted = state();
    restarted.restore(serde_json::from_str(&file).unwrap(), Instant::now());
    let st = restarted.execution(waiting).unwrap();
    assert_eq!(st.state, RunState::Failed);
    assert_eq!(
        st.operations[0].message.as_deref(),
        Some(SECURE_VALUES_LOST)
    );
    assert_eq!(
        restarted.execution(claimed).unwrap().state,
        RunState::Running
    );
    assert_eq!(restarted.execution(plain).unwrap().state, RunState::Queued);
    match checkin(&mut restarted, "r1", "a", Instant::now()) {
        CheckinPoll::Ready(r) => {
            let offered: Vec<&str> = r.operations.iter().map(|o| o.id.as_str()).collect();
            assert_eq!(offered, [op_of(&restarted, plain)]);
        }
        CheckinPoll::Wait { .. } => panic!("the plain operation is offered"),
    }
    // A claim repeated by the owner after the restart would hand out the
    // markers: the operation fails instead.
    let e = restarted.claim("r1", &claimed_op, "a").unwrap_err();
    assert_eq!((e.status, e.code), (409, ErrorCode::Taken), "{e}");
    let st = restarted.execution(claimed).unwrap();
    assert_eq!(st.state, RunState::Failed);
    assert_eq!(
        st.operations[0].message.as_deref(),
        Some(SECURE_VALUES_LOST)
    );
}

fn resume_req(replica: &str, previous: &str, ops: &[&str]) -> ResumeRequest {
    ResumeRequest {
        replica_id: replica.into(),
        previous_replica_id: previous.into(),
        operations: ops.iter().map(|o| o.to_string()).collect(),
        with_operations: false,
    }
}

#[test]
fn resume_gives_owned_operations_back_in_full_when_asked() {
    let (mut s, now, op) = setup();
    let claimed = s.claim("r1", &op, "a").unwrap();
    replica(&mut s, "r1", "b", now);
    // Not asked: states only, as for runners that end such operations.
    let plain = s.resume("r1", &resume_req("b", "a", &[&op]), now).unwrap();
    assert!(plain.resumed.is_empty());
    let asked = ResumeRequest {
        with_operations: true,
        ..resume_req("b", "a", &[&op, "op-nope"])
    };
    let ans = s.resume("r1", &asked, now).unwrap();
    assert_eq!(ans.operations[&op], ResumeState::Owned);
    assert_eq!(ans.resumed.get(&op), Some(&claimed));
    assert_eq!(ans.resumed.len(), 1, "only owned operations come back");
    // On the wire the flag is left out when false, and read when absent.
    let wire = serde_json::to_value(resume_req("b", "a", &[&op])).unwrap();
    assert!(wire.get("withOperations").is_none(), "{wire}");
    let wire = serde_json::to_value(&asked).unwrap();
    assert_eq!(wire["withOperations"], true);
}

#[test]
fn resume_moves_the_operations_of_a_dead_replica_exactly_once() {
    let (mut s, now, op) = setup();
    let second = submit(&mut s, ".*");
    let other = s.execution(second).unwrap().operations[0].id.clone();
    let third = submit(&mut s, ".*");
    let unnamed = s.execution(third).unwrap().operations[0].id.clone();
    s.claim("r1", &op, "a").unwrap();
    s.claim("r1", &unnamed, "a").unwrap();
    replica(&mut s, "r1", "b", now);
    replica(&mut s, "r1", "c", now);
    let ans = s
        .resume("r1", &resume_req("b", "a", &[&op, &other, "op-nope"]), now)
        .unwrap();
    assert_eq!(ans.operations[&op], ResumeState::Owned);
    // Never claimed: not the runner's to resume.
    assert_eq!(ans.operations[&other], ResumeState::Released);
    assert_eq!(ans.operations["op-nope"], ResumeState::Unknown);
    // The previous replica is down at once; what it held unnamed is lost,
    // not left to the down-timeout.
    let obs = s.observe_runner("r1").unwrap();
    assert!(obs
        .replicas
        .iter()
        .any(|r| r.replica_id == "a" && r.shut_down));
    let st = s.execution(third).unwrap();
    assert_eq!(st.operations[0].state, RunState::Lost);
    // The op is the new replica's: its reports are taken, its cancels go there.
    let done = report(
        &op,
        1,
        ReportBody::Op(OpReport {
            state: State::Failed,
            message: Some("runner restarted".into()),
        }),
    );
    // A repeat by the same new replica (its answer was lost) answers the same.
    let again = s.resume("r1", &resume_req("b", "a", &[&op]), now).unwrap();
    assert_eq!(again.operations[&op], ResumeState::Owned);
    // Another replica naming the same previous one gets nothing.
    let late = s.resume("r1", &resume_req("c", "a", &[&op]), now).unwrap();
    assert_eq!(late.operations[&op], ResumeState::Released);
    s.reports("r1", batch("b", vec![done])).unwrap();
    assert_eq!(
        s.execution(1).unwrap().operations[0].state,
        RunState::Failed
    );
    // Ended: released from now on.
    let ended = s.resume("r1", &resume_req("b", "a", &[&op]), now).unwrap();
    assert_eq!(ended.operations[&op], ResumeState::Released);
}

#[test]
fn resume_refuses_bad_requests() {
    let (mut s, now, op) = setup();
    assert_eq!(
        s.resume("r1", &resume_req("a", "a", &[&op]), now)
            .unwrap_err()
            .status,
        400
    );
    assert_eq!(
        s.resume("r1", &resume_req("nope", "a", &[&op]), now)
            .unwrap_err()
            .code,
        "unknown_replica"
    );
    let many: Vec<String> = (0..=rdrunner_actors::model::RESUME_MAX_OPERATIONS)
        .map(|i| format!("op{i}"))
        .collect();
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    assert_eq!(
        s.resume("r1", &resume_req("a", "z", &refs), now)
            .unwrap_err()
            .status,
        400
    );
    // Another runner's operation is unknown to this one.
    runner(&mut s, "r2", "tags: db");
    replica(&mut s, "r2", "x", now);
    replica(&mut s, "r2", "y", now);
    s.claim("r1", &op, "a").unwrap();
    let ans = s.resume("r2", &resume_req("y", "a", &[&op]), now).unwrap();
    assert_eq!(ans.operations[&op], ResumeState::Unknown);
}

// ---- status model, pruning, pings, census ------------------------------------

/// A check-in of replica `replica` of `r1` at `now` saying it runs `running`
/// operations of at most `max`, with `queued` waiting, up `uptime_s`.
fn checkin_with(
    s: &mut ControlState,
    replica: &str,
    running: usize,
    max: u32,
    queued: u32,
    uptime_s: u64,
    now: Instant,
) {
    let req = CheckinRequest {
        replica_id: replica.into(),
        running: (0..running).map(|i| format!("x{i}")).collect(),
        queued,
        max_running: max,
        uptime_s,
        version: String::new(),
        pongs: vec![],
    };
    s.record_checkin("r1", &req, None, now).unwrap();
}

fn status_of(s: &ControlState, now: Instant) -> (RunnerStatus, Option<String>) {
    let info = s.get_runner("r1", now).unwrap();
    (info.status, info.status_reason)
}

#[test]
fn a_replica_goes_new_healthy_unhealthy_healthy_unknown_down_with_reasons() {
    let (mut s, now, op) = setup();
    // Registered, not checked in yet.
    let (status, why) = status_of(&s, now);
    assert_eq!(status, RunnerStatus::New);
    assert!(why.unwrap().contains("no check-in yet"));
    let info = s.get_runner("r1", now).unwrap();
    assert_eq!(info.replicas[0].status, RunnerStatus::New);
    assert_eq!(info.last_checkin, None);

    // Checked in with free slots.
    checkin_with(&mut s, "a", 0, 2, 0, 5, now);
    assert_eq!(status_of(&s, now), (RunnerStatus::Healthy, None));
    let r = &s.get_runner("r1", now).unwrap().replicas[0];
    assert_eq!(
        (r.status, r.status_reason.as_deref()),
        (RunnerStatus::Healthy, None)
    );
    assert_eq!(r.uptime_secs, Some(5), "the uptime of its first check-in");

    // At maxRunning with the setup's operation waiting for it: unhealthy.
    let t1 = now + Duration::from_secs(1);
    checkin_with(&mut s, "a", 2, 2, 0, 6, t1);
    let (status, why) = status_of(&s, t1);
    assert_eq!(status, RunnerStatus::Unhealthy);
    assert_eq!(
        why.as_deref(),
        Some("at maxRunning (2 of 2 running), 1 queued")
    );
    let r = &s.get_runner("r1", t1).unwrap().replicas[0];
    assert_eq!(r.status, RunnerStatus::Unhealthy);
    assert_eq!(r.uptime_secs, Some(6));

    // Claimed: at maxRunning with nothing waiting is healthy...
    s.claim("r1", &op, "a").unwrap();
    assert_eq!(status_of(&s, t1), (RunnerStatus::Healthy, None));
    // ...and a queue of its own makes it unhealthy again.
    checkin_with(&mut s, "a", 2, 2, 3, 6, t1);
    assert_eq!(
        status_of(&s, t1),
        (
            RunnerStatus::Unhealthy,
            Some("at maxRunning (2 of 2 running), 3 queued".into())
        )
    );
    // maxRunning 0 is no limit: never full.
    checkin_with(&mut s, "a", 9, 0, 3, 6, t1);
    assert_eq!(status_of(&s, t1), (RunnerStatus::Healthy, None));
    checkin_with(&mut s, "a", 1, 2, 0, 6, t1);
    assert_eq!(status_of(&s, t1), (RunnerStatus::Healthy, None));

    // Silent past the unknown threshold (3 s), then the down one (10 s).
    let (status, why) = status_of(&s, t1 + Duration::from_secs(4));
    assert_eq!(status, RunnerStatus::Unknown);
    assert_eq!(
        why.as_deref(),
        Some("no check-in for 4 s (unknown after 3 s, down after 10 s)")
    );
    let t2 = t1 + Duration::from_secs(12);
    let (status, why) = status_of(&s, t2);
    assert_eq!(status, RunnerStatus::Down);
    assert_eq!(
        why.as_deref(),
        Some("no check-in for 12 s (down after 10 s)")
    );
    let info = s.get_runner("r1", t2).unwrap();
    assert_eq!(
        info.replicas[0].uptime_secs,
        Some(6),
        "a down replica's uptime ends at its last check-in"
    );
    assert!(info.last_checkin.is_some());

    // It checks in again: healthy.
    checkin_with(&mut s, "a", 0, 2, 0, 18, t2);
    assert_eq!(status_of(&s, t2), (RunnerStatus::Healthy, None));
}

#[test]
fn a_replica_that_shuts_down_is_down_at_once_saying_so() {
    let (mut s, now, _) = setup();
    checkin(&mut s, "r1", "a", now);
    let req = ShutdownRequest {
        replica_id: "a".into(),
        reason: "SIGTERM".into(),
    };
    s.shutdown("r1", &req, now).unwrap();
    let (status, why) = status_of(&s, now);
    assert_eq!(status, RunnerStatus::Down);
    assert_eq!(why.as_deref(), Some("shut down (last seen 0 s ago)"));
}

#[test]
fn a_runner_shows_its_best_replica_and_names_the_replica_behind_its_reason() {
    let (mut s, now, _) = setup();
    checkin_with(&mut s, "a", 0, 2, 0, 0, now);
    replica(&mut s, "r1", "b", now);
    // a healthy, b new: healthy.
    assert_eq!(status_of(&s, now), (RunnerStatus::Healthy, None));
    // a silent (unknown), b new: new is better news than silence.
    let t = now + Duration::from_secs(4);
    replica(&mut s, "r1", "c", t);
    let (status, why) = status_of(&s, t);
    assert_eq!(status, RunnerStatus::New);
    assert!(
        why.unwrap().starts_with("replica c: registered"),
        "the latest one"
    );
    // Both full with work waiting: the reason sums them up.
    checkin_with(&mut s, "b", 2, 2, 1, 0, t);
    checkin_with(&mut s, "c", 3, 3, 0, 0, t);
    let (status, why) = status_of(&s, t);
    assert_eq!(status, RunnerStatus::Unhealthy);
    assert_eq!(
        why.as_deref(),
        Some("at maxRunning (5 of 5 running on 2 replicas), 2 queued")
    );
}

#[test]
fn a_runner_without_replicas_is_new_until_one_checked_in() {
    let mut s = state();
    runner(&mut s, "r1", ".*");
    let (status, why) = status_of(&s, Instant::now());
    assert_eq!(status, RunnerStatus::New);
    assert_eq!(why.as_deref(), Some("no replica has registered yet"));
    let info = s.get_runner("r1", Instant::now()).unwrap();
    assert!(info.warnings.is_empty() && info.replicas.is_empty());
}

#[test]
fn each_replica_shows_the_address_it_came_from_its_start_and_its_queue() {
    let (mut s, now, _) = setup();
    let first: IpAddr = "192.0.2.7".parse().unwrap();
    let req = StartupRequest {
        hostname: "h2".into(),
        version: "2".into(),
        pid: 77,
        max_running: 3,
        tags: vec![],
    };
    s.startup("r1", req, "b".into(), Some(first), now).unwrap();
    let b = |s: &ControlState, at| {
        s.get_runner("r1", at)
            .unwrap()
            .replicas
            .into_iter()
            .find(|r| r.id == "b")
            .unwrap()
    };
    let info = b(&s, now);
    assert_eq!(info.ip.as_deref(), Some("192.0.2.7"));
    assert_eq!((info.hostname.as_str(), info.pid), ("h2", 77));
    assert!(rdrunner_actors::model::is_rfc3339(
        info.started_at.as_deref().unwrap()
    ));
    assert_eq!(info.uptime_secs, Some(0));

    let moved: IpAddr = "2001:db8::1".parse().unwrap();
    let req = CheckinRequest {
        replica_id: "b".into(),
        running: vec!["x".into()],
        queued: 2,
        max_running: 3,
        uptime_s: 100,
        version: "2.1".into(),
        pongs: vec![],
    };
    s.record_checkin("r1", &req, Some(moved), now).unwrap();
    let info = b(&s, now);
    assert_eq!(info.ip.as_deref(), Some("2001:db8::1"));
    assert_eq!((info.running, info.queued), (1, 2));
    assert_eq!(info.version, "2.1");
    assert_eq!(info.uptime_secs, Some(100));
    let started = rdrunner_actors::model::parse_rfc3339(info.started_at.as_deref().unwrap());
    let ago = SystemTime::now().duration_since(started.unwrap()).unwrap();
    assert!(ago.as_secs().abs_diff(100) <= 2, "started {ago:?} ago");
    // The start does not move with later check-ins (the uptime grows with it).
    let later = now + Duration::from_secs(5);
    let req = CheckinRequest {
        uptime_s: 105,
        ..req
    };
    s.record_checkin("r1", &req, None, later).unwrap();
    let again = b(&s, later);
    assert_eq!(again.started_at, info.started_at);
    assert_eq!(again.uptime_secs, Some(105));
    assert_eq!(
        again.ip.as_deref(),
        Some("2001:db8::1"),
        "kept when unknown"
    );
}

#[test]
fn live_replicas_on_different_versions_are_warned_about_naming_the_versions() {
    let (mut s, now, _) = setup();
    let start = |s: &mut ControlState, id: &str, version: &str| {
        let req = StartupRequest {
            hostname: "h".into(),
            version: version.into(),
            pid: 1,
            max_running: 4,
            tags: vec![],
        };
        s.startup("r1", req, id.into(), None, now).unwrap();
    };
    start(&mut s, "b", "1");
    start(&mut s, "c", "0.9.0");
    let info = s.get_runner("r1", now).unwrap();
    assert_eq!(
        info.warnings,
        vec!["live replicas run different versions: 0.9.0 (c); 1 (a, b)".to_owned()]
    );
    // A replica that is down does not count.
    let req = ShutdownRequest {
        replica_id: "c".into(),
        reason: "upgrade".into(),
    };
    s.shutdown("r1", &req, now).unwrap();
    assert!(s.get_runner("r1", now).unwrap().warnings.is_empty());
}

#[test]
fn replicas_down_longer_than_the_prune_delay_are_removed_and_reported() {
    let (mut s, now, op) = setup();
    s.set_prune_after(Duration::from_secs(60));
    checkin(&mut s, "r1", "a", now);
    s.claim("r1", &op, "a").unwrap();
    replica(&mut s, "r1", "b", now);
    checkin(&mut s, "r1", "b", now);
    let req = ShutdownRequest {
        replica_id: "b".into(),
        reason: "stop".into(),
    };
    s.shutdown("r1", &req, now).unwrap();

    // b is down since its shutdown; a since 10 s after its last check-in.
    assert!(s.prune(now + Duration::from_secs(60)).is_empty());
    let pruned = s.prune(now + Duration::from_secs(61));
    assert_eq!(pruned.len(), 1);
    assert_eq!(
        (pruned[0].runner.as_str(), pruned[0].replica.as_str()),
        ("r1", "b")
    );
    assert_eq!(pruned[0].down_for, Duration::from_secs(61));
    assert_eq!(
        pruned[0].to_string(),
        "pruned replica b of runner r1 (host h): down for 61 s"
    );
    assert!(s.prune(now + Duration::from_secs(70)).is_empty());
    let pruned = s.prune(now + Duration::from_secs(71));
    assert_eq!(pruned.len(), 1);
    assert_eq!(pruned[0].down_for, Duration::from_secs(61));
    // Its running operation was lost first, and the runner, without
    // replicas now, is down (not new: it did check in).
    assert_eq!(s.execution(1).unwrap().operations[0].state, RunState::Lost);
    let info = s.get_runner("r1", now + Duration::from_secs(71)).unwrap();
    assert!(info.replicas.is_empty());
    assert_eq!(info.status, RunnerStatus::Down);
    assert!(info.status_reason.unwrap().contains("pruned"));
    assert!(info.last_checkin.is_some());
    assert_eq!(s.census(now).replicas_pruned, 2);
    // A replica that is alive is never pruned.
    replica(&mut s, "r1", "c", now + Duration::from_secs(71));
    checkin(&mut s, "r1", "c", now + Duration::from_secs(71));
    assert!(s.prune(now + Duration::from_secs(75)).is_empty());
}

#[test]
fn a_ping_goes_out_once_per_replica_and_the_first_echo_answers_it() {
    let (mut s, now, _) = setup();
    // Nothing to say: the check-in waits.
    checkin(&mut s, "r1", "a", now);
    let wakeup = s.subscribe("r1");
    let ping = s.ping("r1", "ping-1".into(), now).unwrap();
    assert_eq!(ping.ping_id, "ping-1");
    assert!(wakeup.has_changed().unwrap(), "a held check-in is woken");
    let status = s.ping_status("r1", "ping-1", now).unwrap();
    assert_eq!(status.state, PingState::Pending);
    assert_eq!((status.round_trip_ms, status.replica_id), (None, None));

    // The held check-in answers at once, carrying the ping...
    let t = now + Duration::from_millis(40);
    let CheckinPoll::Ready(answer) = s.poll_checkin("r1", "a", t, false).unwrap() else {
        panic!("a new ping ends a held check-in");
    };
    assert_eq!(answer.pings, vec!["ping-1".to_owned()]);
    // ...once: the next one waits again.
    assert!(matches!(
        s.poll_checkin("r1", "a", t, false).unwrap(),
        CheckinPoll::Wait { .. }
    ));
    let CheckinPoll::Ready(forced) = s.poll_checkin("r1", "a", t, true).unwrap() else {
        panic!("a forced poll answers");
    };
    assert!(forced.pings.is_empty());

    // The next check-in echoes it: answered, with the round trip.
    let echo = CheckinRequest {
        replica_id: "a".into(),
        running: vec![],
        queued: 0,
        max_running: 4,
        uptime_s: 1,
        version: "1".into(),
        pongs: vec!["ping-1".into(), "ping-unknown".into()],
    };
    s.record_checkin("r1", &echo, None, now + Duration::from_millis(150))
        .unwrap();
    let status = s
        .ping_status("r1", "ping-1", now + Duration::from_secs(60))
        .unwrap();
    assert_eq!(status.state, PingState::Answered);
    assert_eq!(status.round_trip_ms, Some(150));
    assert_eq!(status.replica_id.as_deref(), Some("a"));
    // A second echo (another replica) does not change the answer.
    replica(&mut s, "r1", "b", now);
    let echo_b = CheckinRequest {
        replica_id: "b".into(),
        ..echo
    };
    s.record_checkin("r1", &echo_b, None, now + Duration::from_millis(300))
        .unwrap();
    let again = s.ping_status("r1", "ping-1", now).unwrap();
    assert_eq!(again.replica_id.as_deref(), Some("a"));
    assert_eq!(again.round_trip_ms, Some(150));
    // An answered ping is not handed out any more.
    let CheckinPoll::Ready(answer) = s.poll_checkin("r1", "b", now, true).unwrap() else {
        panic!("a forced poll answers");
    };
    assert!(answer.pings.is_empty());
}

#[test]
fn a_ping_nobody_echoes_times_out_and_stays_timed_out() {
    let (mut s, now, _) = setup();
    s.set_ping_timeout(Duration::from_secs(5));
    s.ping("r1", "ping-1".into(), now).unwrap();
    let at = |secs| now + Duration::from_secs(secs);
    assert_eq!(
        s.ping_status("r1", "ping-1", at(4)).unwrap().state,
        PingState::Pending
    );
    assert_eq!(
        s.ping_status("r1", "ping-1", at(5)).unwrap().state,
        PingState::TimedOut
    );
    // A timed-out ping is no longer handed out, and a late echo is ignored.
    checkin(&mut s, "r1", "a", at(6));
    let CheckinPoll::Ready(answer) = s.poll_checkin("r1", "a", at(6), true).unwrap() else {
        panic!("a forced poll answers");
    };
    assert!(answer.pings.is_empty());
    let late = CheckinRequest {
        replica_id: "a".into(),
        running: vec![],
        queued: 0,
        max_running: 4,
        uptime_s: 1,
        version: "1".into(),
        pongs: vec!["ping-1".into()],
    };
    s.record_checkin("r1", &late, None, at(6)).unwrap();
    let status = s.ping_status("r1", "ping-1", at(6)).unwrap();
    assert_eq!(
        (status.state, status.round_trip_ms),
        (PingState::TimedOut, None)
    );
}

#[test]
fn pings_are_bounded_per_runner_and_unknown_ones_are_404() {
    let (mut s, now, _) = setup();
    for i in 0..=PINGS_KEPT {
        s.ping("r1", format!("ping-{i}"), now).unwrap();
    }
    let gone = s.ping_status("r1", "ping-0", now).unwrap_err();
    assert_eq!((gone.status, gone.code), (404, ErrorCode::UnknownPing));
    assert!(s.ping_status("r1", "ping-1", now).is_ok());
    let e = s.ping("nobody", "ping-x".into(), now).unwrap_err();
    assert_eq!(e.code, ErrorCode::UnknownRunner);
    let e = s.ping_status("nobody", "ping-1", now).unwrap_err();
    assert_eq!(e.code, ErrorCode::UnknownRunner);
    // At most PINGS_MAX go out in one answer.
    checkin(&mut s, "r1", "a", now);
    let CheckinPoll::Ready(answer) = s.poll_checkin("r1", "a", now, false).unwrap() else {
        panic!("pending pings end a held check-in");
    };
    assert_eq!(answer.pings.len(), rdrunner_actors::model::PINGS_MAX);
    s.delete_runner("r1").unwrap();
    assert!(s.pings.is_empty(), "a deleted runner's pings go with it");
}

#[test]
fn the_census_counts_runners_replicas_executions_operations_and_report_latency() {
    let (mut s, now, op) = setup();
    runner(&mut s, "r2", "tags: none");
    let idx = |st: RunnerStatus| RunnerStatus::ALL.iter().position(|x| *x == st).unwrap();
    let run = |st: RunState| RunState::ALL.iter().position(|x| *x == st).unwrap();
    let c = s.census(now);
    assert_eq!(c.runners[idx(RunnerStatus::New)], 2);
    assert_eq!(c.replicas[idx(RunnerStatus::New)], 1);
    assert_eq!(c.executions[run(RunState::Failed)], 0);
    assert_eq!(c.executions[run(RunState::Queued)], 1);
    assert_eq!(c.operations[run(RunState::Queued)], 1);
    assert_eq!(c.report_latency.count(), 0);

    checkin(&mut s, "r1", "a", now);
    s.claim("r1", &op, "a").unwrap();
    let c = s.census(now);
    assert_eq!(c.runners[idx(RunnerStatus::Healthy)], 1);
    assert_eq!(c.replicas[idx(RunnerStatus::Healthy)], 1);
    assert_eq!(c.operations[run(RunState::Running)], 1);
    assert_eq!(c.executions[run(RunState::Running)], 1);

    // Reports stored count into the latency; duplicates do not.
    let ts = rfc3339(SystemTime::now() - Duration::from_millis(1500));
    let mut first = log(&op, 1);
    first.ts = ts.clone();
    let done = Report {
        op_id: op.clone(),
        seq: 2,
        ts,
        body: ReportBody::Op(OpReport {
            state: State::Succeeded,
            message: None,
        }),
    };
    s.reports("r1", batch("a", vec![first.clone(), done]))
        .unwrap();
    s.reports("r1", batch("a", vec![first])).unwrap();
    let c = s.census(now);
    assert_eq!(c.report_latency.count(), 2);
    assert!(c.report_latency.sum() >= Duration::from_secs(3));
    assert_eq!(c.operations[run(RunState::Succeeded)], 1);
    // web1 succeeded, db1 has no runner: the execution failed.
    assert_eq!(c.executions[run(RunState::Failed)], 1);
    assert_eq!(c.operations.iter().sum::<u64>(), 1);
}

#[test]
fn busy_from_an_earlier_control_plane_reads_as_unhealthy() {
    let old: RunnerStatus = serde_json::from_str("\"busy\"").unwrap();
    assert_eq!(old, RunnerStatus::Unhealthy);
    assert_eq!(
        serde_json::to_string(&RunnerStatus::Unhealthy).unwrap(),
        "\"unhealthy\""
    );
    for s in RunnerStatus::ALL {
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            format!("\"{}\"", s.as_str())
        );
    }
    for s in RunState::ALL {
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            format!("\"{}\"", s.as_str())
        );
    }
}
