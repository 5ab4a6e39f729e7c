//! The runner API and admin API over real HTTP on port 0: the whole life of
//! an execution, concurrent claims, report seq rules, long polling, leases,
//! aborts, credentials and the resume of a dead replica's operations.

use std::time::{Duration, Instant};

use crate::common::*;
use futures_util::future::join_all;
use rdrunner_harness::{RunState, RunnerStatus};
use serde_json::json;

#[actix_rt::test]
async fn an_execution_runs_from_submit_to_terminal_state() {
    let harness = start();
    let admin = harness.admin();
    let (runner_id, token) = web_runner(&admin).await;
    assert_eq!(
        admin.get_runner(&runner_id).await.unwrap().status,
        RunnerStatus::New
    );

    let mut req = echo("hello");
    req.node_filter = ".*".into(); // web1 and db1; only web1 has a runner
    let exec = admin.submit_execution("ops", &req).await.unwrap();
    let runner = RawRunner::new(&harness.base_url(), &runner_id, &token);
    let replica = runner.startup().await;
    let (status, answer) = runner.checkin(&replica, 1000).await;
    assert_eq!(status, 200, "{answer}");
    let op = answer["operations"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(answer["operations"][0]["nodes"][0]["name"], "web1");
    assert_eq!(answer["operations"][0]["execution"]["id"], exec);

    let (status, claimed) = runner.claim(&replica, &op).await;
    assert_eq!(status, 200, "{claimed}");
    assert_eq!(claimed["operation"]["id"], op.as_str());
    let info = admin.get_runner(&runner_id).await.unwrap();
    assert_eq!(info.status, RunnerStatus::Healthy);
    assert_eq!(info.replicas[0].hostname, "test-host");
    assert_eq!(
        admin.execution(exec).await.unwrap().state,
        RunState::Running
    );

    let (status, acks) = runner
        .reports(
            &replica,
            vec![
                node_report(&op, 1, "running", None),
                log_report(&op, 2, "hello"),
                log_report(&op, 3, "world"),
            ],
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(acks["acks"][&op], 3);
    let page = admin.output(exec, 0).await.unwrap();
    assert_eq!(page.entries.len(), 2);
    assert!(!page.complete);
    let page = admin.output(exec, 1).await.unwrap();
    assert_eq!(page.entries[0].text, "world");
    assert_eq!(page.next, 2);

    runner
        .reports(
            &replica,
            vec![
                node_report(&op, 4, "succeeded", Some(0)),
                op_report(&op, 5, "succeeded"),
            ],
        )
        .await;
    let done = admin
        .wait_terminal(exec, Duration::from_secs(5))
        .await
        .unwrap();
    // db1 is not covered by any runner: it fails, so the execution does.
    assert_eq!(done.state, RunState::Failed);
    assert_eq!(done.nodes["web1"].state, RunState::Succeeded);
    assert_eq!(done.nodes["web1"].exit_code, Some(0));
    assert!(done.nodes["db1"]
        .message
        .as_deref()
        .unwrap()
        .contains("no runner"));
    let output = admin.all_output(exec).await.unwrap();
    let texts: Vec<_> = output.iter().map(|e| e.text.as_str()).collect();
    assert_eq!(texts, ["hello", "world"]);
    assert!(admin.output(exec, 2).await.unwrap().complete);
    assert_eq!(harness.reports(&op).len(), 5);

    let (status, _) = runner
        .post(
            "/shutdown",
            json!({"replicaId": replica, "reason": "test over"}),
        )
        .await;
    assert_eq!(status, 204);
    assert_eq!(
        admin.get_runner(&runner_id).await.unwrap().status,
        RunnerStatus::Down
    );
}

#[actix_rt::test]
async fn exactly_one_of_twenty_concurrent_claimers_wins() {
    let harness = rdrunner_harness::Harness::start(rdrunner_harness::HarnessConfig {
        max_replicas: 20,
        ..config()
    })
    .expect("harness starts");
    let admin = harness.admin();
    let (runner_id, token) = web_runner(&admin).await;
    let runner = RawRunner::new(&harness.base_url(), &runner_id, &token);
    let mut replicas = Vec::new();
    for _ in 0..20 {
        replicas.push(runner.startup().await);
    }
    let exec = admin.submit_execution("ops", &echo("x")).await.unwrap();
    let op = admin.execution(exec).await.unwrap().operations[0]
        .id
        .clone();
    let claims = join_all(replicas.iter().map(|r| runner.claim(r, &op))).await;
    let winners: Vec<_> = claims.iter().filter(|(s, _)| *s == 200).collect();
    assert_eq!(winners.len(), 1, "{claims:?}");
    for (status, body) in claims.iter().filter(|(s, _)| *s != 200) {
        assert_eq!(*status, 409);
        assert_eq!(body["error"], "taken");
    }
    let owner = admin.execution(exec).await.unwrap().operations[0]
        .replica
        .clone()
        .unwrap();
    let (status, _) = runner.claim(&owner, &op).await;
    assert_eq!(
        status, 200,
        "a repeated claim by the owner answers 200 again"
    );
}

#[actix_rt::test]
async fn duplicated_reordered_and_gapped_reports_end_in_order() {
    let harness = start();
    let admin = harness.admin();
    let (runner_id, token) = web_runner(&admin).await;
    let runner = RawRunner::new(&harness.base_url(), &runner_id, &token);
    let replica = runner.startup().await;
    let exec = admin.submit_execution("ops", &echo("x")).await.unwrap();
    let op = admin.execution(exec).await.unwrap().operations[0]
        .id
        .clone();
    assert_eq!(runner.claim(&replica, &op).await.0, 200);
    let l = |seq| log_report(&op, seq, &format!("line {seq}"));

    let (_, a) = runner.reports(&replica, vec![l(2), l(1), l(1)]).await;
    assert_eq!(a["acks"][&op], 2);
    let (_, a) = runner.reports(&replica, vec![l(5), l(6)]).await;
    assert_eq!(a["acks"][&op], 2, "a gap leaves the ack where it was");
    let (_, a) = runner.reports(&replica, vec![l(2), l(4), l(3)]).await;
    assert_eq!(a["acks"][&op], 4);
    let (_, a) = runner
        .reports(&replica, vec![l(5), l(6), op_report(&op, 7, "succeeded")])
        .await;
    assert_eq!(a["acks"][&op], 7);

    let seqs: Vec<u64> = harness.reports(&op).iter().map(|r| r.seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(harness.duplicates_dropped(&op), 2);
    assert_eq!(harness.gaps_refused(&op), 2);
    let seen = admin.observe_runner(&runner_id).await.unwrap();
    assert_eq!(
        (
            seen.reports_stored,
            seen.duplicates_dropped,
            seen.gaps_refused
        ),
        (7, 2, 2)
    );
    assert_eq!(admin.stored_reports(&op).await.unwrap().reports.len(), 7);
    let texts: Vec<_> = admin
        .all_output(exec)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.text)
        .collect();
    assert_eq!(
        texts,
        (1..=6).map(|i| format!("line {i}")).collect::<Vec<_>>()
    );
}

#[actix_rt::test]
async fn a_long_poll_answers_as_soon_as_work_is_submitted() {
    let harness = start();
    let admin = harness.admin();
    let (runner_id, token) = web_runner(&admin).await;
    let runner = RawRunner::new(&harness.base_url(), &runner_id, &token);
    let replica = runner.startup().await;
    let started = Instant::now();
    let poll = runner.checkin(&replica, 10_000);
    let submit = async {
        // Submit once the check-in is being held, seen through observation.
        let held = eventually(Duration::from_secs(5), || {
            harness.checkins(&runner_id).values().any(|c| !c.is_empty())
        })
        .await;
        assert!(held, "the check-in arrived");
        let at = Instant::now();
        admin.submit_execution("ops", &echo("x")).await.unwrap();
        at
    };
    let ((status, answer), submitted_at) = tokio::join!(poll, submit);
    assert_eq!(status, 200);
    assert_eq!(answer["operations"].as_array().unwrap().len(), 1);
    assert!(
        submitted_at.elapsed() < Duration::from_secs(1),
        "answered {:?} after submit",
        submitted_at.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    let arrivals = &harness.checkins(&runner_id)[&replica];
    assert_eq!(arrivals.len(), 1);
    assert!(
        *arrivals.first().unwrap() < submitted_at,
        "recorded on arrival"
    );

    // With nothing to hand out, the poll is held for about waitMs.
    let t = Instant::now();
    let (status, answer) = runner.checkin(&replica, 300).await;
    assert_eq!(status, 200);
    assert!(answer["operations"].as_array().unwrap().is_empty());
    assert!(
        t.elapsed() >= Duration::from_millis(290),
        "{:?}",
        t.elapsed()
    );
}

#[actix_rt::test]
async fn an_unclaimed_offer_is_offered_again_after_the_lease() {
    let harness = start(); // lease 500 ms
    let admin = harness.admin();
    let (runner_id, token) = web_runner(&admin).await;
    let runner = RawRunner::new(&harness.base_url(), &runner_id, &token);
    let replica = runner.startup().await;
    admin.submit_execution("ops", &echo("x")).await.unwrap();
    let (_, first) = runner.checkin(&replica, 0).await;
    assert_eq!(first["operations"].as_array().unwrap().len(), 1);
    let (_, held) = runner.checkin(&replica, 0).await;
    assert!(held["operations"].as_array().unwrap().is_empty(), "leased");
    let t = Instant::now();
    let (_, again) = runner.checkin(&replica, 3000).await;
    assert_eq!(again["operations"].as_array().unwrap().len(), 1);
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "woken at lease end"
    );
}

#[actix_rt::test]
async fn abort_reaches_the_runner_and_unclaimed_operations_end_at_once() {
    let harness = start();
    let admin = harness.admin();
    let (runner_id, token) = web_runner(&admin).await;
    let runner = RawRunner::new(&harness.base_url(), &runner_id, &token);
    let replica = runner.startup().await;

    let queued = admin.submit_execution("ops", &echo("x")).await.unwrap();
    let st = admin.abort(queued).await.unwrap();
    assert_eq!(st.state, RunState::Aborted);
    let (status, body) = runner.claim(&replica, &st.operations[0].id).await;
    assert_eq!((status, body["error"].as_str()), (409, Some("cancelled")));

    let exec = admin.submit_execution("ops", &echo("y")).await.unwrap();
    let op = admin.execution(exec).await.unwrap().operations[0]
        .id
        .clone();
    runner.claim(&replica, &op).await;
    let poll = runner.checkin(&replica, 10_000);
    let abort = async {
        eventually(Duration::from_secs(5), || {
            harness.checkins(&runner_id).values().any(|c| c.len() == 1)
        })
        .await;
        admin.abort(exec).await.unwrap();
        Instant::now()
    };
    let ((_, answer), aborted_at) = tokio::join!(poll, abort);
    assert_eq!(answer["cancel"], json!([op]));
    assert!(aborted_at.elapsed() < Duration::from_secs(1));
    let (_, acks) = runner
        .reports(&replica, vec![log_report(&op, 1, "x")])
        .await;
    assert_eq!(acks["cancel"], json!([op]), "also in report answers");
    runner
        .reports(&replica, vec![op_report(&op, 2, "aborted")])
        .await;
    let done = admin
        .wait_terminal(exec, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(done.state, RunState::Aborted);
}

#[actix_rt::test]
async fn regenerated_credentials_refuse_the_old_token() {
    let harness = start();
    let admin = harness.admin();
    let (runner_id, token) = web_runner(&admin).await;
    let old = RawRunner::new(&harness.base_url(), &runner_id, &token);
    old.startup().await;
    let creds = admin.regenerate_credentials(&runner_id).await.unwrap();
    assert!(creds
        .credentials
        .contains(&format!("RUNDECK_RUNNER_TOKEN={}", creds.token)));
    assert!(creds
        .credentials
        .contains(&format!("RUNDECK_SERVER_URL={}", harness.base_url())));
    let (status, body) = old
        .post(
            "/startup",
            json!({"hostname": "h", "version": "1", "pid": 1, "maxRunning": 1}),
        )
        .await;
    assert_eq!(status, 401);
    assert_eq!(body["error"], "unauthorized");
    let new = RawRunner::new(&harness.base_url(), &runner_id, &creds.token);
    new.startup().await;
    let text = admin.credentials(&runner_id).await.unwrap();
    assert!(text.contains(&format!("RUNDECK_RUNNER_ID={runner_id}")));
    assert!(
        !text.contains(&creds.token),
        "only a hash of the token is kept"
    );

    admin.delete_runner(&runner_id).await.unwrap();
    let (status, body) = new
        .post(
            "/startup",
            json!({"hostname": "h", "version": "1", "pid": 1, "maxRunning": 1}),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("runner_deleted"))
    );
}

#[actix_rt::test]
async fn a_silent_replica_loses_its_operation_and_a_late_terminal_report_wins() {
    let mut config = config();
    config.thresholds.unknown_after = Duration::from_millis(100);
    config.thresholds.down_after = Duration::from_millis(300);
    let harness = rdrunner_harness::Harness::start(config).unwrap();
    let admin = harness.admin();
    let (runner_id, token) = web_runner(&admin).await;
    let runner = RawRunner::new(&harness.base_url(), &runner_id, &token);
    let replica = runner.startup().await;
    let exec = admin.submit_execution("ops", &echo("x")).await.unwrap();
    let op = admin.execution(exec).await.unwrap().operations[0]
        .id
        .clone();
    runner.checkin(&replica, 0).await;
    runner.claim(&replica, &op).await;
    let lost = admin
        .wait_terminal(exec, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(lost.operations[0].state, RunState::Lost);
    assert!(lost.operations[0]
        .message
        .as_deref()
        .unwrap()
        .contains("stopped checking in"));
    assert_eq!(
        admin.get_runner(&runner_id).await.unwrap().status,
        RunnerStatus::Down
    );
    runner
        .reports(&replica, vec![op_report(&op, 1, "succeeded")])
        .await;
    let st = admin.execution(exec).await.unwrap();
    assert_eq!(st.operations[0].state, RunState::Succeeded);
}

#[actix_rt::test]
async fn resume_hands_a_dead_replicas_operation_to_the_new_one_exactly_once() {
    let harness = start();
    let admin = harness.admin();
    let (runner_id, token) = web_runner(&admin).await;
    let exec = admin.submit_execution("ops", &echo("x")).await.unwrap();
    let runner = RawRunner::new(&harness.base_url(), &runner_id, &token);
    let dead = runner.startup().await;
    let (_, answer) = runner.checkin(&dead, 1000).await;
    let op = answer["operations"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(runner.claim(&dead, &op).await.0, 200);

    let new = runner.startup().await;
    let other = runner.startup().await;
    let body = |replica: &str| json!({"replicaId": replica, "previousReplicaId": dead, "operations": [op, "op-nope"]});
    let (status, first) = runner.post("/resume", body(&new)).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["operations"][&op], "owned");
    assert_eq!(first["operations"]["op-nope"], "unknown");
    let st = admin.execution(exec).await.unwrap();
    assert_eq!(st.operations[0].replica.as_deref(), Some(new.as_str()));
    // The dead replica is down at once.
    let info = admin.get_runner(&runner_id).await.unwrap();
    let dead_info = info.replicas.iter().find(|r| r.id == dead).unwrap();
    assert_eq!(dead_info.status, RunnerStatus::Down);
    // A second resume naming the same dead replica gets nothing.
    let (status, second) = runner.post("/resume", body(&other)).await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["operations"][&op], "released");
    // The same new replica asking again (a lost answer) still owns it.
    let (_, again) = runner.post("/resume", body(&new)).await;
    assert_eq!(again["operations"][&op], "owned");
    // Naming itself is refused.
    let (status, _) = runner
        .post(
            "/resume",
            json!({"replicaId": new, "previousReplicaId": new, "operations": []}),
        )
        .await;
    assert_eq!(status, 400);
}
