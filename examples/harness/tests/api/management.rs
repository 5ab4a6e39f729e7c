//! What the Runner Management page needs of the control plane, over real
//! HTTP: the page's files with their Content-Security-Policy, the public
//! URL in credentials, the nodes a filter selects, removing an assignment,
//! the recent executions and each node's start and end.

use crate::common::*;
use rdrunner_harness::{CreateRunner, Harness, HarnessConfig};
use serde_json::{json, Value};

async fn admin_call(harness: &Harness, method: &str, path: &str) -> (u16, Value) {
    let url = format!("{}/api/v1{path}", harness.base_url());
    let client = awc::Client::default();
    let req = match method {
        "DELETE" => client.delete(&url),
        _ => client.get(&url),
    }
    .insert_header(("Authorization", format!("Bearer {}", harness.admin_token())));
    let mut resp = req.send().await.expect("request");
    let body = resp.body().await.expect("body");
    (
        resp.status().as_u16(),
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    )
}

#[actix_rt::test]
async fn the_page_is_served_with_a_policy_that_forbids_inline_scripts_and_other_origins() {
    let harness = start();
    let client = awc::Client::default();
    for (path, kind) in [
        ("/", "text/html"),
        ("/app.js", "text/javascript"),
        ("/app.css", "text/css"),
    ] {
        let resp = client
            .get(format!("{}{path}", harness.base_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{path}");
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert!(header("content-type").starts_with(kind), "{path}");
        let csp = header("content-security-policy");
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{csp}"
        );
        assert_eq!(header("x-content-type-options"), "nosniff");
    }
    // Anything else is still the API's JSON 404.
    let mut resp = client
        .get(format!("{}/index.php", harness.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "not_found");
}

#[actix_rt::test]
async fn credentials_carry_the_public_url() {
    let harness = Harness::start(HarnessConfig {
        public_url: Some("https://cp.example.com/".into()),
        ..config()
    })
    .unwrap();
    let admin = harness.admin();
    let created = admin
        .create_runner(&CreateRunner {
            name: "edge".into(),
            ..CreateRunner::default()
        })
        .await
        .unwrap();
    assert!(
        created
            .credentials
            .contains("RUNDECK_SERVER_URL=https://cp.example.com\n"),
        "{}",
        created.credentials
    );
    let again = admin
        .regenerate_credentials(&created.runner_id)
        .await
        .unwrap();
    assert!(again.credentials.contains("https://cp.example.com\n"));
    let text = admin.credentials(&created.runner_id).await.unwrap();
    assert!(
        text.contains("RUNDECK_SERVER_URL=https://cp.example.com\n"),
        "{text}"
    );
}

#[actix_rt::test]
async fn a_filter_selects_nodes_an_assignment_is_removed_and_executions_are_listed() {
    let harness = start();
    let admin = harness.admin();
    let (runner_id, token) = web_runner(&admin).await;

    let (status, nodes) =
        admin_call(&harness, "GET", "/projects/ops/nodes?filter=tags%3A%20web").await;
    assert_eq!(status, 200, "{nodes}");
    assert_eq!(nodes.as_array().unwrap().len(), 1);
    assert_eq!(nodes[0]["name"], "web1");
    let (status, all) = admin_call(&harness, "GET", "/projects/ops/nodes").await;
    assert_eq!((status, all.as_array().unwrap().len()), (200, 2));
    let (status, bad) = admin_call(&harness, "GET", "/projects/ops/nodes?filter=name%3A%20(").await;
    assert_eq!(status, 400, "{bad}");
    assert_eq!(bad["error"], "bad_filter");
    let (status, _) = admin_call(&harness, "GET", "/projects/nope/nodes?filter=.*").await;
    assert_eq!(status, 404);

    // Two executions; the list is newest first and honours `limit`.
    let first = admin.submit_execution("ops", &echo("a")).await.unwrap();
    let second = admin.submit_execution("ops", &echo("b")).await.unwrap();
    let (status, list) = admin_call(&harness, "GET", "/executions").await;
    assert_eq!(status, 200, "{list}");
    let ids: Vec<u64> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![second, first]);
    let (_, one) = admin_call(&harness, "GET", "/executions?limit=1").await;
    assert_eq!(one.as_array().unwrap().len(), 1);

    // A node's start and end come from the runner's reports.
    let runner = RawRunner::new(&harness.base_url(), &runner_id, &token);
    let replica = runner.startup().await;
    let (_, answer) = runner.checkin(&replica, 1000).await;
    let op = answer["operations"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(runner.claim(&replica, &op).await.0, 200);
    let mut running = node_report(&op, 1, "running", None);
    running["ts"] = json!("2026-11-28T12:00:00.000Z");
    let mut done = node_report(&op, 2, "succeeded", Some(0));
    done["ts"] = json!("2026-11-28T12:00:02.500Z");
    runner.reports(&replica, vec![running]).await;
    let exec = if answer["operations"][0]["execution"]["id"] == first {
        first
    } else {
        second
    };
    let node = &admin.execution(exec).await.unwrap().nodes["web1"];
    assert_eq!(node.started_at.as_deref(), Some("2026-11-28T12:00:00.000Z"));
    assert_eq!(node.ended_at, None);
    runner.reports(&replica, vec![done]).await;
    let node = &admin.execution(exec).await.unwrap().nodes["web1"];
    assert_eq!(node.ended_at.as_deref(), Some("2026-11-28T12:00:02.500Z"));

    // Removing the assignment; removing it again says it is not there.
    let (status, info) = admin_call(
        &harness,
        "DELETE",
        &format!("/runners/{runner_id}/projects/ops"),
    )
    .await;
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["projects"], json!({}));
    let (status, again) = admin_call(
        &harness,
        "DELETE",
        &format!("/runners/{runner_id}/projects/ops"),
    )
    .await;
    assert_eq!(status, 404, "{again}");
    assert_eq!(again["error"], "unknown_project");
}
