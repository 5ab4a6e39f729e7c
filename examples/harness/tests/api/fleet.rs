//! Watching a fleet over HTTP: a runner's status and replica details as
//! `GET /runners/{id}` shows them, a ping answered through the check-in
//! (and one a runner without pongs lets time out), and `/metrics` read
//! with a real Prometheus text parser while its values move.

use std::time::{Duration, Instant, SystemTime};

use rdrunner_actors::model::rfc3339;
use rdrunner_harness::{HarnessConfig, PingState, RunnerStatus};
use serde_json::json;

use crate::common::*;

/// `/metrics`, parsed.
async fn scrape(admin: &rdrunner_harness::AdminClient) -> (String, prometheus_parse::Scrape) {
    let text = admin.metrics().await.expect("metrics");
    let parsed = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .expect("the exposition parses");
    (text, parsed)
}

/// The value of the sample `name` whose labels include `labels`.
fn value(s: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    s.samples
        .iter()
        .filter(|x| x.metric == name)
        .find(|x| labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .and_then(|x| match &x.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => Some(*v),
            _ => None,
        })
}

#[actix_rt::test]
async fn a_runner_shows_its_replicas_with_the_address_they_came_from() {
    let harness = start();
    let admin = harness.admin();
    let (runner_id, token) = web_runner(&admin).await;
    assert_eq!(
        admin.get_runner(&runner_id).await.unwrap().status,
        RunnerStatus::New
    );
    let runner = RawRunner::new(&harness.base_url(), &runner_id, &token);
    let replica = runner.startup().await;
    let (status, _) = runner.checkin(&replica, 0).await;
    assert_eq!(status, 200);
    let info = admin.get_runner(&runner_id).await.unwrap();
    assert_eq!(info.status, RunnerStatus::Healthy);
    assert_eq!(info.status_reason, None);
    assert!(info.warnings.is_empty());
    let r = &info.replicas[0];
    assert_eq!(r.ip.as_deref(), Some("127.0.0.1"), "the TCP peer");
    assert_eq!((r.running, r.queued), (0, 0));
    assert!(r.started_at.is_some() && r.uptime_secs.is_some());

    // The JSON carries the names the admin API documents.
    let raw: serde_json::Value = awc::Client::default()
        .get(format!("{}/api/v1/runners/{runner_id}", harness.base_url()))
        .bearer_auth(harness.admin_token())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for field in ["status", "warnings", "lastCheckin", "replicas"] {
        assert!(raw.get(field).is_some(), "{field} in {raw}");
    }
    for field in [
        "ip",
        "startedAt",
        "uptimeSecs",
        "queued",
        "running",
        "lastCheckin",
    ] {
        assert!(raw["replicas"][0].get(field).is_some(), "{field} in {raw}");
    }
}

#[actix_rt::test]
async fn a_ping_is_answered_through_the_check_in_with_its_round_trip() {
    let harness = start();
    let admin = harness.admin();
    let (runner_id, token) = web_runner(&admin).await;
    let runner = RawRunner::new(&harness.base_url(), &runner_id, &token);
    let replica = runner.startup().await;

    // A held check-in is answered at once with the ping.
    let held = runner.checkin(&replica, 2000);
    let ping = async {
        let seen = eventually(Duration::from_secs(5), || {
            harness.checkins(&runner_id).values().any(|c| !c.is_empty())
        })
        .await;
        assert!(seen, "the check-in arrived");
        let at = Instant::now();
        (admin.ping(&runner_id).await.expect("ping"), at)
    };
    let ((status, answer), (ping, pinged_at)) = tokio::join!(held, ping);
    assert_eq!(status, 200, "{answer}");
    assert!(
        pinged_at.elapsed() < Duration::from_secs(1),
        "answered at once"
    );
    assert_eq!(answer["pings"], json!([ping.ping_id]));
    let pending = admin.ping_status(&runner_id, &ping.ping_id).await.unwrap();
    assert_eq!(pending.state, PingState::Pending);

    // The next check-in echoes it.
    let (status, _) = runner
        .post(
            "/checkin?waitMs=0",
            json!({"replicaId": replica, "maxRunning": 4, "pongs": [ping.ping_id]}),
        )
        .await;
    assert_eq!(status, 200);
    let answered = admin.ping_status(&runner_id, &ping.ping_id).await.unwrap();
    assert_eq!(answered.state, PingState::Answered);
    assert_eq!(answered.replica_id.as_deref(), Some(replica.as_str()));
    assert!(answered.round_trip_ms.unwrap() < 5000, "{answered:?}");

    // Unknown pings and runners are 404 with their codes.
    let e = admin.ping_status(&runner_id, "ping-0").await.unwrap_err();
    assert_eq!((e.status(), e.code()), (Some(404), Some("unknown_ping")));
    let e = admin.ping("runner-nobody").await.unwrap_err();
    assert_eq!((e.status(), e.code()), (Some(404), Some("unknown_runner")));
}

#[actix_rt::test]
async fn a_runner_that_never_echoes_lets_its_ping_time_out() {
    let harness = rdrunner_harness::Harness::start(HarnessConfig {
        ping_timeout: Duration::from_millis(300),
        ..config()
    })
    .unwrap();
    let admin = harness.admin();
    let (runner_id, token) = web_runner(&admin).await;
    let runner = RawRunner::new(&harness.base_url(), &runner_id, &token);
    let replica = runner.startup().await;
    let ping = admin.ping(&runner_id).await.unwrap();
    // A runner of before the field: it checks in, never with pongs.
    let (status, answer) = runner.checkin(&replica, 0).await;
    assert_eq!((status, &answer["pings"]), (200, &json!([ping.ping_id])));
    let status = admin
        .ping_and_wait(&runner_id, Duration::from_secs(5))
        .await
        .unwrap();
    // That was a second ping; both end the same way.
    assert_eq!(status.state, PingState::TimedOut);
    let first = admin.ping_status(&runner_id, &ping.ping_id).await.unwrap();
    assert_eq!(
        (first.state, first.round_trip_ms),
        (PingState::TimedOut, None)
    );
}

#[actix_rt::test]
async fn metrics_count_runners_executions_reports_and_held_check_ins_without_names() {
    let harness = start();
    let admin = harness.admin();
    let (runner_id, token) = web_runner(&admin).await;

    let (text, s) = scrape(&admin).await;
    assert!(!text.contains(&runner_id), "no runner id in {text}");
    assert!(!text.contains("web-runner"), "no runner name in {text}");
    assert_eq!(
        value(&s, "rdrunner_harness_runners", &[("status", "new")]),
        Some(1.0)
    );
    assert_eq!(
        value(&s, "rdrunner_harness_runners", &[("status", "healthy")]),
        Some(0.0)
    );
    assert_eq!(
        value(&s, "rdrunner_harness_executions", &[("state", "queued")]),
        Some(0.0)
    );
    assert_eq!(value(&s, "rdrunner_harness_checkins_held", &[]), Some(0.0));
    assert_eq!(
        value(&s, "rdrunner_harness_report_latency_seconds_count", &[]),
        Some(0.0)
    );
    assert_eq!(
        value(&s, "rdrunner_harness_replicas_pruned_total", &[]),
        Some(0.0)
    );

    // A replica holds a check-in: healthy, and one check-in held.
    let runner = RawRunner::new(&harness.base_url(), &runner_id, &token);
    let replica = runner.startup().await;
    let held = runner.checkin(&replica, 2000);
    let watch = async {
        let start = Instant::now();
        loop {
            let (_, s) = scrape(&admin).await;
            if value(&s, "rdrunner_harness_checkins_held", &[]) == Some(1.0) {
                break s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "no held check-in seen"
            );
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let ((status, _), s) = tokio::join!(held, watch);
    assert_eq!(status, 200);
    assert_eq!(
        value(&s, "rdrunner_harness_runners", &[("status", "healthy")]),
        Some(1.0)
    );
    assert_eq!(
        value(&s, "rdrunner_harness_replicas", &[("status", "healthy")]),
        Some(1.0)
    );
    let (_, s) = scrape(&admin).await;
    assert_eq!(
        value(&s, "rdrunner_harness_checkins_held", &[]),
        Some(0.0),
        "answered"
    );

    // An execution runs; its reports are stored a second after their ts.
    let id = admin.submit_execution("ops", &echo("hi")).await.unwrap();
    let (_, s) = scrape(&admin).await;
    assert_eq!(
        value(&s, "rdrunner_harness_executions", &[("state", "queued")]),
        Some(1.0)
    );
    assert_eq!(
        value(&s, "rdrunner_harness_operations", &[("state", "queued")]),
        Some(1.0)
    );
    let op = format!("op-{id}-1");
    let (status, _) = runner.claim(&replica, &op).await;
    assert_eq!(status, 200);
    let (_, s) = scrape(&admin).await;
    assert_eq!(
        value(&s, "rdrunner_harness_operations", &[("state", "running")]),
        Some(1.0)
    );
    let ts = rfc3339(SystemTime::now() - Duration::from_secs(1));
    let reports = vec![
        json!({"opId": op, "seq": 1, "ts": ts, "kind": "log", "node": "web1", "step": 1, "stream": "stdout", "text": "hi"}),
        json!({"opId": op, "seq": 2, "ts": ts, "kind": "op", "state": "succeeded"}),
    ];
    let (status, body) = runner.reports(&replica, reports).await;
    assert_eq!(status, 200, "{body}");
    let (_, s) = scrape(&admin).await;
    assert_eq!(
        value(&s, "rdrunner_harness_report_latency_seconds_count", &[]),
        Some(2.0)
    );
    assert!(value(&s, "rdrunner_harness_report_latency_seconds_sum", &[]).unwrap() >= 2.0);
    let buckets = s
        .samples
        .iter()
        .find(|x| x.metric == "rdrunner_harness_report_latency_seconds")
        .expect("the histogram's buckets");
    let prometheus_parse::Value::Histogram(buckets) = &buckets.value else {
        panic!("not a histogram: {buckets:?}");
    };
    let under_half_a_second = buckets
        .iter()
        .find(|b| (b.less_than - 0.5).abs() < 1e-9)
        .map(|b| b.count);
    assert_eq!(under_half_a_second, Some(0.0), "both took about a second");
    assert_eq!(
        value(&s, "rdrunner_harness_executions", &[("state", "succeeded")]),
        Some(1.0)
    );
    assert_eq!(
        value(&s, "rdrunner_harness_operations", &[("state", "succeeded")]),
        Some(1.0)
    );
    assert_eq!(
        value(&s, "rdrunner_harness_executions", &[("state", "queued")]),
        Some(0.0)
    );
}

/// The next line `rx` gives for which `pred` holds, within 10 s.
fn next_line(
    rx: &std::sync::mpsc::Receiver<String>,
    what: &str,
    pred: &dyn Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if pred(&line) => return line,
            Ok(_) => {}
            Err(e) => panic!("no {what} printed within 10 s: {e}"),
        }
    }
}

/// `rdrunner-harness serve` removes a replica down longer than the prune
/// delay (from its environment variable here) and prints the removal.
#[actix_rt::test]
async fn the_harness_program_prunes_a_down_replica_and_prints_it() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let token = "prune-test-admin-token";
    /// Ends the program however the test ends.
    struct Program(std::process::Child);
    impl Drop for Program {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_rdrunner-harness"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("RDRUNNER_HARNESS_ADMIN_TOKEN", token)
        .env("RDRUNNER_HARNESS_PRUNE_DOWN_REPLICAS_AFTER", "0s")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start rdrunner-harness");
    let stdout = child.stdout.take().unwrap();
    let _program = Program(child);
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let listening = next_line(&rx, "listening line", &|l| l.contains("listening on"));
    let base = listening.rsplit(' ').next().unwrap().to_owned();

    let admin = rdrunner_harness::AdminClient::new(&base, token);
    let (runner_id, runner_token) = web_runner(&admin).await;
    let runner = RawRunner::new(&base, &runner_id, &runner_token);
    let replica = runner.startup().await;
    let (status, _) = runner
        .post("/shutdown", json!({"replicaId": replica, "reason": "test"}))
        .await;
    assert_eq!(status, 204);
    let line = actix_rt::task::spawn_blocking(move || {
        next_line(&rx, "pruned replica line", &|l| {
            l.contains("pruned replica")
        })
    })
    .await
    .unwrap();
    assert!(
        line.contains(&format!(
            "pruned replica {replica} of runner {runner_id} (host test-host): down for"
        )),
        "{line}"
    );
    assert!(admin
        .get_runner(&runner_id)
        .await
        .unwrap()
        .replicas
        .is_empty());
}
