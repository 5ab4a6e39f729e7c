//! End to end: the `rdrunner` binary with `[metrics] listen` on, scraped
//! over loopback and read with a real Prometheus text parser
//! (`prometheus-parse`). An operation moves `operations_running`, then
//! `operations_finished_total{outcome="succeeded"}`; stopping the control
//! plane turns `/ready` to 503 within three check-in intervals, and its
//! return turns it back to 200. The endpoint refuses what it does not serve.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::support::{Runner, World, PROJECT};
use rdrunner_actors::model::{CommandStep, Step};
use rdrunner_harness::{RunState, SubmitExecution};

/// The check-in interval of the world's cadence (poll 500 ms, hold 500 ms).
const INTERVAL: Duration = Duration::from_millis(500);

/// Status and body of one request sent as `raw` (the whole head).
fn request(addr: SocketAddr, raw: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(raw).expect("send the request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read the answer");
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    request(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: runner\r\n\r\n").as_bytes(),
    )
}

/// `/metrics`, parsed.
fn scrape(addr: SocketAddr) -> prometheus_parse::Scrape {
    let (status, body) = get(addr, "/metrics");
    assert_eq!(status, 200, "{body}");
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned())))
        .expect("the exposition parses")
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

/// Scrapes until `pred` holds, for at most `timeout`; the last scrape.
async fn scrape_until(
    addr: SocketAddr,
    timeout: Duration,
    what: &str,
    pred: impl Fn(&prometheus_parse::Scrape) -> bool,
) -> prometheus_parse::Scrape {
    let start = Instant::now();
    loop {
        let s = scrape(addr);
        if pred(&s) {
            return s;
        }
        assert!(
            start.elapsed() < timeout,
            "{what} not seen within {timeout:?}; last scrape: {:#?}",
            s.samples
                .iter()
                .map(|x| (&x.metric, &x.value))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `path` until it answers `status`, for at most `timeout`; the body
/// and how long it took.
async fn wait_status(
    addr: SocketAddr,
    path: &str,
    status: u16,
    timeout: Duration,
) -> (String, Duration) {
    let start = Instant::now();
    loop {
        let (got, body) = get(addr, path);
        if got == status {
            return (body, start.elapsed());
        }
        assert!(
            start.elapsed() < timeout,
            "{path} still {got} after {timeout:?}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

#[actix_rt::test]
async fn metrics_move_with_an_operation_and_ready_follows_the_control_plane() {
    let mut world = World::with_harness(&["m1"], |cfg, dir| {
        // The runner's registration survives the control plane's restart.
        cfg.state_file = Some(dir.join("harness-state.json"));
    })
    .await;
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    world.append_runner_toml(&format!("\n[metrics]\nlisten = \"{addr}\"\n"));
    let runner = Runner::start(world.work());

    // Up: alive, then ready once a check-in succeeded.
    let start = Instant::now();
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the endpoint did not listen; stderr:\n{}",
            runner.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_status(addr, "/health", 200, Duration::from_secs(5)).await;
    let (body, _) = wait_status(addr, "/ready", 200, Duration::from_secs(10)).await;
    let ready: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(ready["ready"], true, "{body}");
    let s = scrape(addr);
    assert_eq!(
        value(
            &s,
            "rdrunner_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
    assert_eq!(value(&s, "rdrunner_operations_running", &[]), Some(0.0));
    assert!(value(&s, "rdrunner_checkin_last_success_timestamp_seconds", &[]).unwrap() > 1e9);

    // An operation that holds its node step until told to end.
    let scratch = world.scratch();
    let go = scratch.join("go");
    let command = format!(
        "i=0; while [ ! -e {go} ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done; echo done",
        go = go.display()
    );
    let id = world
        .admin()
        .submit_execution(
            PROJECT,
            &SubmitExecution::new(vec![Step::Command(CommandStep { command })], ".*"),
        )
        .await
        .expect("submit");
    let s = scrape_until(addr, Duration::from_secs(15), "a running operation", |s| {
        value(s, "rdrunner_operations_running", &[]) == Some(1.0)
            && value(s, "rdrunner_node_steps_running", &[]) == Some(1.0)
    })
    .await;
    assert_eq!(
        value(&s, "rdrunner_operations_claimed_total", &[]),
        Some(1.0)
    );
    assert_eq!(
        value(
            &s,
            "rdrunner_operations_finished_total",
            &[("outcome", "succeeded")]
        ),
        None,
        "nothing finished yet"
    );
    std::fs::write(&go, b"").unwrap();
    let status = world.wait_terminal(id).await;
    assert_eq!(status.state, RunState::Succeeded, "{status:#?}");
    let s = scrape_until(addr, Duration::from_secs(10), "the operation's end", |s| {
        value(
            s,
            "rdrunner_operations_finished_total",
            &[("outcome", "succeeded")],
        ) == Some(1.0)
            && value(s, "rdrunner_operations_running", &[]) == Some(0.0)
            && value(s, "rdrunner_reports_pending", &[]) == Some(0.0)
    })
    .await;
    assert_eq!(value(&s, "rdrunner_node_steps_running", &[]), Some(0.0));
    assert!(value(&s, "rdrunner_report_bytes_total", &[]).unwrap() > 0.0);
    let connects = s
        .samples
        .iter()
        .find(|x| x.metric == "rdrunner_ssh_connect_duration_seconds")
        .map(|x| match &x.value {
            prometheus_parse::Value::Histogram(buckets) => {
                buckets.iter().map(|b| b.count).fold(0.0, f64::max)
            }
            _ => 0.0,
        });
    assert_eq!(connects, Some(1.0), "one SSH connect timed");

    // The control plane goes away: not ready within three intervals (plus
    // the time a held check-in takes to fail, and the polling), still alive.
    let (down_body, took) = world
        .control_plane_outage(async {
            let out = wait_status(addr, "/ready", 503, Duration::from_secs(10)).await;
            assert_eq!(get(addr, "/health").0, 200, "alive while not ready");
            out
        })
        .await;
    assert!(
        took <= INTERVAL * 3 + Duration::from_secs(2),
        "/ready turned 503 only after {took:?}"
    );
    let down: serde_json::Value = serde_json::from_str(&down_body).expect("JSON");
    assert_eq!(down["ready"], false, "{down_body}");
    let reason = down["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("last successful check-in") && reason.contains("checkin:"),
        "{reason}"
    );
    // Back: ready again once a check-in succeeds (after the retry backoff).
    wait_status(addr, "/ready", 200, Duration::from_secs(30)).await;
    let s = scrape(addr);
    let errors: f64 = s
        .samples
        .iter()
        .filter(|x| x.metric == "rdrunner_control_plane_errors_total")
        .filter(|x| x.labels.get("call") == Some("checkin"))
        .filter_map(|x| match x.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => Some(v),
            _ => None,
        })
        .sum();
    assert!(errors >= 1.0, "the outage's check-in errors are counted");

    // What the endpoint does not serve.
    assert_eq!(get(addr, "/").0, 404);
    assert_eq!(
        request(addr, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").0,
        405
    );
    assert_eq!(request(addr, b"BREW /ready HTCPCP/1.0\r\n\r\n").0, 400);
    let huge = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9000));
    assert_eq!(request(addr, huge.as_bytes()).0, 431);

    let exit = runner.stop();
    assert!(exit.success(), "rdrunner exited {exit} after SIGTERM");
}
