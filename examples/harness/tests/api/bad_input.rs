//! Every kind of bad input gets a 4xx with `{"error","message"}`, nothing is
//! stored from a refused request, and the harness keeps serving.

use crate::common::*;
use rdrunner_harness::HarnessConfig;
use serde_json::{json, Value};

fn assert_error(status: u16, body: &Value, want_status: u16, want_code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"], want_code, "{body}");
    assert!(
        !body["message"].as_str().unwrap_or_default().is_empty(),
        "a message: {body}"
    );
}

#[actix_rt::test]
async fn bad_runner_requests_are_refused_and_store_nothing() {
    let harness = rdrunner_harness::Harness::start(HarnessConfig {
        body_limit: 4096,
        ..config()
    })
    .unwrap();
    let admin = harness.admin();
    let (runner_id, token) = web_runner(&admin).await;
    let runner = RawRunner::new(&harness.base_url(), &runner_id, &token);
    let replica = runner.startup().await;
    let exec = admin.submit_execution("ops", &echo("x")).await.unwrap();
    let op = admin.execution(exec).await.unwrap().operations[0]
        .id
        .clone();
    runner.claim(&replica, &op).await;

    // Malformed JSON.
    let (s, b) = runner
        .post_raw("/reports", b"{\"replicaId\": ".to_vec())
        .await;
    assert_error(s, &b, 400, "bad_json");
    // Wrong types.
    let (s, b) = runner
        .post(
            "/reports",
            json!({"replicaId": replica, "reports": [{"opId": op, "seq": "one"}]}),
        )
        .await;
    assert_error(s, &b, 400, "bad_json");
    let (s, b) = runner.post("/checkin", json!({"replicaId": 5})).await;
    assert_error(s, &b, 400, "bad_json");
    // Unknown operation, in a batch with a good report: nothing is stored.
    let (s, b) = runner
        .reports(
            &replica,
            vec![log_report(&op, 1, "x"), log_report("op-nope", 1, "y")],
        )
        .await;
    assert_error(s, &b, 404, "unknown_operation");
    let (s, b) = runner.claim(&replica, "op-nope").await;
    assert_error(s, &b, 404, "unknown_operation");
    // Another runner's operation.
    let other = admin
        .create_runner(&rdrunner_harness::CreateRunner {
            name: "other".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let intruder = RawRunner::new(&harness.base_url(), &other.runner_id, &other.token);
    let intruder_replica = intruder.startup().await;
    let (s, b) = intruder.claim(&intruder_replica, &op).await;
    assert_error(s, &b, 404, "unknown_operation");
    let (s, b) = intruder
        .reports(&intruder_replica, vec![log_report(&op, 1, "evil")])
        .await;
    assert_error(s, &b, 404, "unknown_operation");
    // Unknown replica.
    let (s, b) = runner.checkin("rep-nope", 0).await;
    assert_error(s, &b, 404, "unknown_replica");
    // Over the body limit.
    let big = "x".repeat(8000);
    let (s, b) = runner
        .reports(&replica, vec![log_report(&op, 1, &big)])
        .await;
    assert_error(s, &b, 413, "body_too_large");
    // Bad query string.
    let (s, b) = runner
        .post(
            "/checkin?waitMs=soon",
            json!({"replicaId": replica, "maxRunning": 1}),
        )
        .await;
    assert_error(s, &b, 400, "bad_request");
    // Seq 0.
    let (s, b) = runner
        .reports(&replica, vec![log_report(&op, 0, "x")])
        .await;
    assert_error(s, &b, 400, "bad_request");
    // Missing or wrong credentials.
    let anon = RawRunner::new(&harness.base_url(), &runner_id, "wrong");
    let (s, b) = anon.startup_raw().await;
    assert_error(s, &b, 401, "unauthorized");
    let nobody = RawRunner::new(&harness.base_url(), "runner-nope", &token);
    let (s, b) = nobody.startup_raw().await;
    assert_error(s, &b, 401, "unauthorized");

    assert!(
        harness.reports(&op).is_empty(),
        "nothing stored from refused requests"
    );
    // Still serving, and the good report goes in.
    let (s, b) = runner
        .reports(&replica, vec![log_report(&op, 1, "x")])
        .await;
    assert_eq!((s, b["acks"][&op].as_u64()), (200, Some(1)));
}

#[actix_rt::test]
async fn bad_admin_requests_are_refused() {
    let harness = start();
    let admin = harness.admin();
    let client = awc::Client::default();
    let base = format!("{}/api/v1", harness.base_url());
    let call = |method: &str, path: &str, token: Option<&str>, body: Option<Value>| {
        let mut req = client.request(
            awc::http::Method::from_bytes(method.as_bytes()).unwrap(),
            format!("{base}{path}"),
        );
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move {
            let mut resp = match body {
                Some(b) => req.send_json(&b).await.unwrap(),
                None => req.send().await.unwrap(),
            };
            let bytes = resp.body().await.unwrap();
            (
                resp.status().as_u16(),
                serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null),
            )
        }
    };
    let token = Some(harness.admin_token());
    let (s, b) = call("GET", "/runners", None, None).await;
    assert_error(s, &b, 401, "unauthorized");
    let (s, b) = call("GET", "/runners", Some("wrong"), None).await;
    assert_error(s, &b, 401, "unauthorized");
    let (s, b) = call("POST", "/runners", token, Some(json!({"name": 7}))).await;
    assert_error(s, &b, 400, "bad_json");
    let (s, b) = call("POST", "/runners", token, Some(json!({"name": ""}))).await;
    assert_error(s, &b, 400, "bad_request");
    let (s, b) = call("GET", "/runners/nope", token, None).await;
    assert_error(s, &b, 404, "unknown_runner");
    let (s, b) = call("GET", "/executions/nope", token, None).await;
    assert_error(s, &b, 404, "unknown_execution");
    let (s, b) = call("GET", "/executions/99", token, None).await;
    assert_error(s, &b, 404, "unknown_execution");
    let (s, b) = call("GET", "/nowhere", token, None).await;
    assert_error(s, &b, 404, "not_found");
    let (s, b) = call("PATCH", "/runners", token, None).await;
    assert_error(s, &b, 405, "method_not_allowed");
    let (runner_id, _) = web_runner(&admin).await;
    let (s, b) = call(
        "PUT",
        &format!("/runners/{runner_id}/projects/ops"),
        token,
        Some(json!({"nodeFilter": "name: web["})),
    )
    .await;
    assert_error(s, &b, 400, "bad_filter");
    assert!(b["message"].as_str().unwrap().contains("column"), "{b}");
    let (s, b) = call(
        "POST",
        "/projects/ops/executions",
        token,
        Some(json!({"steps": [{"type": "command", "command": "x"}], "nodeFilter": "nosuch"})),
    )
    .await;
    assert_error(s, &b, 422, "no_nodes");
    let (s, b) = call(
        "POST",
        "/projects/nowhere/executions",
        token,
        Some(json!({"steps": [{"type": "command", "command": "x"}]})),
    )
    .await;
    assert_error(s, &b, 404, "unknown_project");
    let (s, b) = call(
        "POST",
        "/projects/ops/executions",
        token,
        Some(json!({"steps": [{"type": "teleport"}]})),
    )
    .await;
    assert_error(s, &b, 400, "bad_json");
    let (s, b) = call(
        "PUT",
        "/projects/ops/nodes",
        token,
        Some(json!([{"name": "a"}, {"name": "a"}])),
    )
    .await;
    assert_error(s, &b, 400, "bad_request");
    assert_eq!(
        admin.nodes("ops").await.unwrap().len(),
        2,
        "inventory unchanged"
    );
    assert_eq!(
        admin.list_runners().await.unwrap().len(),
        1,
        "nothing created"
    );
}
