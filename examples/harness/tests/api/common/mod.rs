//! Shared pieces of the HTTP tests: a harness with small timings, a raw
//! runner-side client speaking the runner API, and fixtures.

#![allow(dead_code)]

use std::time::Duration;

use rdrunner_actors::model::{CommandStep, Node, Step};
use rdrunner_harness::{
    AdminClient, Cadence, CreateRunner, Harness, HarnessConfig, SubmitExecution, Thresholds,
};
use serde_json::{json, Value};

pub fn config() -> HarnessConfig {
    HarnessConfig {
        cadence: Cadence {
            poll_interval_ms: 100,
            long_poll_ms: 2000,
            report_interval_ms: 20,
            report_batch_max: 100,
            lease_ms: 500,
        },
        thresholds: Thresholds {
            unknown_after: Duration::from_secs(5),
            down_after: Duration::from_secs(10),
        },
        ..HarnessConfig::default()
    }
}

pub fn start() -> Harness {
    Harness::start(config()).expect("harness starts")
}

/// A runner as the runner API sees it: id, token and plain awc.
pub struct RawRunner {
    pub base: String,
    pub id: String,
    pub token: String,
    pub client: awc::Client,
}

impl RawRunner {
    pub fn new(base: &str, id: &str, token: &str) -> Self {
        RawRunner {
            base: format!("{base}/api/runner/v1"),
            id: id.to_owned(),
            token: token.to_owned(),
            client: awc::Client::builder()
                .timeout(Duration::from_secs(20))
                .finish(),
        }
    }

    /// POSTs raw bytes; answers (status, body as JSON or Null).
    pub async fn post_raw(&self, path: &str, body: Vec<u8>) -> (u16, Value) {
        let mut resp = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .insert_header(("X-Runner-Id", self.id.as_str()))
            .insert_header(("Content-Type", "application/json"))
            .send_body(body)
            .await
            .expect("request sent");
        let bytes = resp.body().limit(64 << 20).await.expect("body read");
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (resp.status().as_u16(), value)
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.post_raw(path, serde_json::to_vec(&body).unwrap())
            .await
    }

    /// Startup; answers the replica id.
    pub async fn startup(&self) -> String {
        let (status, body) = self
            .post(
                "/startup",
                json!({"hostname": "test-host", "version": "0.1.0", "pid": 1, "maxRunning": 4, "tags": []}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["replicaId"].as_str().unwrap().to_owned()
    }

    /// Startup answering the raw (status, body).
    pub async fn startup_raw(&self) -> (u16, Value) {
        self.post(
            "/startup",
            json!({"hostname": "test-host", "version": "0.1.0", "pid": 1, "maxRunning": 4}),
        )
        .await
    }

    pub async fn checkin(&self, replica: &str, wait_ms: u64) -> (u16, Value) {
        self.post(
            &format!("/checkin?waitMs={wait_ms}"),
            json!({"replicaId": replica, "running": [], "queued": 0, "maxRunning": 4, "uptimeS": 1, "version": "0.1.0"}),
        )
        .await
    }

    pub async fn claim(&self, replica: &str, op: &str) -> (u16, Value) {
        self.post(
            &format!("/operations/{op}/claim"),
            json!({"replicaId": replica}),
        )
        .await
    }

    pub async fn reports(&self, replica: &str, reports: Vec<Value>) -> (u16, Value) {
        self.post(
            "/reports",
            json!({"replicaId": replica, "reports": reports}),
        )
        .await
    }
}

pub fn log_report(op: &str, seq: u64, text: &str) -> Value {
    json!({"opId": op, "seq": seq, "ts": "2026-11-28T12:00:00.000Z", "kind": "log",
           "node": "web1", "step": 1, "stream": "stdout", "text": text})
}

pub fn node_report(op: &str, seq: u64, state: &str, exit: Option<i32>) -> Value {
    let mut v = json!({"opId": op, "seq": seq, "ts": "2026-11-28T12:00:00.000Z", "kind": "node",
                       "node": "web1", "step": 1, "state": state});
    if let Some(e) = exit {
        v["exitCode"] = json!(e);
    }
    v
}

pub fn op_report(op: &str, seq: u64, state: &str) -> Value {
    json!({"opId": op, "seq": seq, "ts": "2026-11-28T12:00:00.000Z", "kind": "op", "state": state})
}

pub fn web_nodes() -> Vec<Node> {
    let mut web1 = Node::new("web1", "10.1.0.5");
    web1.tags = vec!["web".into(), "prod".into()];
    let mut db1 = Node::new("db1", "10.1.0.9");
    db1.tags = vec!["db".into()];
    vec![web1, db1]
}

pub fn echo(text: &str) -> SubmitExecution {
    SubmitExecution::new(
        vec![Step::Command(CommandStep {
            command: format!("echo {text}"),
        })],
        "tags: web",
    )
}

/// A runner assigned to project `ops` for web nodes, with the inventory set.
pub async fn web_runner(admin: &AdminClient) -> (String, String) {
    let creds = admin
        .create_runner(&CreateRunner {
            name: "web-runner".into(),
            description: "runs web nodes".into(),
            tags: vec!["test".into()],
            projects: Default::default(),
        })
        .await
        .expect("runner created");
    admin
        .assign_project(&creds.runner_id, "ops", "tags: web")
        .await
        .expect("project assigned");
    admin
        .set_nodes("ops", &web_nodes())
        .await
        .expect("nodes set");
    (creds.runner_id, creds.token)
}

/// Bounded wait: polls `check` every 10 ms until it holds or `within` passes.
pub async fn eventually<F: FnMut() -> bool>(within: Duration, mut check: F) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < within {
        if check() {
            return true;
        }
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    check()
}
