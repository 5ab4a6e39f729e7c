//! The HTTP contract points that docs/openapi.yaml states and a schema-driven
//! client or fuzzer relies on: a 405 names the allowed methods, a fault plan
//! must say what it means (`rules` given, `seed` a number, `kind` a name),
//! `limit` on output is in range, and report fields hold what the protocol
//! says (names as tags, RFC 3339 times, steps from 1). Each refusal is a 400
//! with the common error body and changes nothing.

use crate::common::*;
use rdrunner_harness::{Fault, FaultPlan, FaultRule, RouteName};
use serde_json::{json, Value};

/// Sends `method path` with the admin token and an optional JSON body;
/// answers (status, `Allow` header, body as JSON or Null).
async fn admin_call(
    harness: &rdrunner_harness::Harness,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Option<String>, Value) {
    let client = awc::Client::default();
    let req = client
        .request(
            awc::http::Method::from_bytes(method.as_bytes()).unwrap(),
            format!("{}{path}", harness.base_url()),
        )
        .bearer_auth(harness.admin_token());
    let mut resp = match body {
        Some(b) => req.send_json(&b).await.unwrap(),
        None => req.send().await.unwrap(),
    };
    let allow = resp
        .headers()
        .get("allow")
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = resp.body().await.unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (resp.status().as_u16(), allow, body)
}

fn assert_refused(status: u16, body: &Value, want_status: u16, want_code: &str, mentions: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"], want_code, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(mentions),
        "the message names `{mentions}`: {body}"
    );
}

#[actix_rt::test]
async fn a_405_lists_the_methods_of_the_route_in_allow() {
    let harness = start();
    for (method, path, allow) in [
        ("PATCH", "/api/v1/faults", "GET, PUT, DELETE"),
        ("POST", "/api/v1/runners/r1", "GET, DELETE"),
        ("DELETE", "/api/v1/runners", "POST, GET"),
        ("GET", "/api/runner/v1/checkin", "POST"),
        ("DELETE", "/api/v1/projects/ops/nodes", "PUT, GET"),
    ] {
        let (status, got, body) = admin_call(&harness, method, path, None).await;
        assert_refused(status, &body, 405, "method_not_allowed", allow);
        assert_eq!(got.as_deref(), Some(allow), "{method} {path}");
    }
    // A route that exists answers without `Allow`.
    let (status, allow, _) = admin_call(&harness, "GET", "/api/v1/faults", None).await;
    assert_eq!((status, allow), (200, None));
}

#[actix_rt::test]
async fn a_fault_plan_must_name_its_rules_seed_and_kinds() {
    let harness = start();
    let admin = harness.admin();
    let rule = FaultRule::new(RouteName::Checkin, Fault::Delay { ms: 5 }, 0.5);
    admin
        .set_faults(&FaultPlan {
            seed: Some(7),
            rules: vec![rule.clone()],
        })
        .await
        .unwrap();

    for (body, mentions) in [
        // Without `rules` the plan would clear every rule.
        (json!({}), "rules"),
        (json!({"seed": 8}), "rules"),
        (json!({"seed": null, "rules": []}), "seed"),
        (json!({"seed": -1, "rules": []}), "-1"),
        // A kind given as a number is not the first kind (`drop`).
        (
            json!({"rules": [{"route": "checkin", "kind": 0, "probability": 1}]}),
            "kind",
        ),
        (
            json!({"rules": [{"route": "checkin", "kind": 1, "ms": 5, "probability": 1}]}),
            "kind",
        ),
        (
            json!({"rules": [{"route": "checkin", "kind": "delay", "probability": 1}]}),
            "ms",
        ),
    ] {
        let (status, _, answer) = admin_call(&harness, "PUT", "/api/v1/faults", Some(body)).await;
        assert_refused(status, &answer, 400, "bad_json", mentions);
    }
    let status = admin.faults().await.unwrap();
    assert_eq!(status.rules, vec![rule], "the plan in force stays");
    assert_eq!(status.seed, 7);

    // An empty list is how rules are removed on purpose; a seed alone is fine.
    let (status, _, answer) = admin_call(
        &harness,
        "PUT",
        "/api/v1/faults",
        Some(json!({"seed": 9, "rules": []})),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["rules"], json!([]));
    assert_eq!(answer["seed"], 9);
}

#[actix_rt::test]
async fn output_limit_out_of_range_is_a_bad_request() {
    let harness = start();
    let admin = harness.admin();
    web_runner(&admin).await;
    let exec = admin.submit_execution("ops", &echo("x")).await.unwrap();
    let path = |q: &str| format!("/api/v1/executions/{exec}/output?{q}");
    for query in [
        "limit=0",
        "limit=-1",
        "limit=18446744073709551616",
        "limit=ten",
        "after=-1",
    ] {
        let (status, _, body) = admin_call(&harness, "GET", &path(query), None).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"], "bad_request", "{query}: {body}");
        assert!(!body["message"].as_str().unwrap_or_default().is_empty());
    }
    let (status, _, body) = admin_call(&harness, "GET", &path("limit=0"), None).await;
    assert_refused(status, &body, 400, "bad_request", "`limit` 0");
    for query in ["limit=1", "limit=18446744073709551615", "after=0", ""] {
        let (status, _, body) = admin_call(&harness, "GET", &path(query), None).await;
        assert_eq!(status, 200, "{query}: {body}");
    }
}

#[actix_rt::test]
async fn steps_and_reports_need_named_kinds_real_times_and_steps_from_one() {
    let harness = start();
    let admin = harness.admin();
    let (runner_id, token) = web_runner(&admin).await;

    // A step type given as a number is refused, not read as `command`.
    let (status, _, body) = admin_call(
        &harness,
        "POST",
        "/api/v1/projects/ops/executions",
        Some(json!({"steps": [{"type": 0, "command": "x"}]})),
    )
    .await;
    assert_refused(status, &body, 400, "bad_json", "type");

    let runner = RawRunner::new(&harness.base_url(), &runner_id, &token);
    let replica = runner.startup().await;
    let exec = admin.submit_execution("ops", &echo("x")).await.unwrap();
    let op = admin.execution(exec).await.unwrap().operations[0]
        .id
        .clone();
    assert_eq!(runner.claim(&replica, &op).await.0, 200);

    let mut numbered_kind = log_report(&op, 1, "x");
    numbered_kind["kind"] = json!(0);
    let mut bad_time = log_report(&op, 1, "x");
    bad_time["ts"] = json!("yesterday");
    let mut step_zero = node_report(&op, 1, "running", None);
    step_zero["step"] = json!(0);
    for (report, want_code, mentions) in [
        (numbered_kind, "bad_json", "kind"),
        (bad_time, "bad_request", "yesterday"),
        (step_zero, "bad_request", "step 0"),
    ] {
        let (status, body) = runner.reports(&replica, vec![report]).await;
        assert_refused(status, &body, 400, want_code, mentions);
    }
    assert!(harness.reports(&op).is_empty(), "nothing stored");
    let (status, body) = runner
        .reports(&replica, vec![log_report(&op, 1, "x")])
        .await;
    assert_eq!((status, body["acks"][&op].as_u64()), (200, Some(1)));
}

#[actix_rt::test]
async fn an_integer_may_be_written_with_a_zero_fraction() {
    let harness = start();
    let admin = harness.admin();
    let (runner_id, token) = web_runner(&admin).await;
    let runner = RawRunner::new(&harness.base_url(), &runner_id, &token);
    // JSON Schema counts 4.0 as an integer, so the server does too.
    let (status, body) = runner
        .post(
            "/startup",
            json!({"hostname": "h", "version": "1", "pid": 4271.0, "maxRunning": 4e0}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let replica = body["replicaId"].as_str().unwrap().to_owned();
    assert_eq!(
        harness
            .admin()
            .get_runner(&runner_id)
            .await
            .unwrap()
            .replicas[0]
            .pid,
        4271
    );
    // A real fraction, a negative number or one past the type is still refused.
    for pid in [json!(4271.5), json!(-1.0), json!(4294967296.0)] {
        let (status, body) = runner
            .post(
                "/startup",
                json!({"hostname": "h", "version": "1", "pid": pid, "maxRunning": 4}),
            )
            .await;
        assert_refused(status, &body, 400, "bad_json", "startup");
    }
    let (status, body) = runner
        .post(
            "/checkin",
            json!({"replicaId": replica, "maxRunning": 2.0, "uptimeS": 1e3}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

#[actix_rt::test]
async fn the_largest_counts_a_checkin_may_carry_are_served() {
    let harness = start();
    let admin = harness.admin();
    let (runner_id, token) = web_runner(&admin).await;
    let runner = RawRunner::new(&harness.base_url(), &runner_id, &token);
    let replica = runner.startup().await;
    admin.submit_execution("ops", &echo("x")).await.unwrap();
    // running + queued past u32::MAX: no room for an offer, and no overflow.
    let (status, body) = runner
        .post(
            "/checkin?waitMs=0",
            json!({"replicaId": replica, "running": ["a", "b"], "queued": u32::MAX,
                   "maxRunning": u32::MAX, "uptimeS": u64::MAX}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["operations"], json!([]), "no free slot: {body}");
}

/// A client keeps an idle connection in its pool for a while (awc: 15 s) and
/// sends its next request on it; a server that closes idle connections
/// sooner can close one just as a request goes out on it, and that request
/// fails ("Connector has been disconnected"). The harness keeps an idle
/// connection open longer than that.
#[test]
fn an_idle_connection_outlives_a_clients_pool_idle_time() {
    use std::io::{Read, Write};
    let harness = start();
    let mut conn = std::net::TcpStream::connect(harness.addr()).unwrap();
    let request = format!(
        "GET /api/v1/runners HTTP/1.1\r\nHost: {}\r\nConnection: keep-alive\r\n\r\n",
        harness.addr()
    );
    conn.write_all(request.as_bytes()).unwrap();
    conn.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = conn.read(&mut buf).unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 401"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    // Idle past actix-web's default keep-alive (5 s): still open.
    std::thread::sleep(std::time::Duration::from_secs(6));
    conn.write_all(request.as_bytes()).unwrap();
    let n = conn.read(&mut buf).unwrap_or(0);
    assert!(n > 0, "the harness closed an idle connection after 6 s");
}
