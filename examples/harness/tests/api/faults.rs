//! Fault injection over real HTTP: each fault kind as a runner sees it, the
//! admin API that sets, reports and clears faults, and faults given at start.

use std::time::{Duration, Instant};

use crate::common::*;
use rdrunner_harness::{Fault, FaultPlan, FaultRule, Harness, HarnessConfig, RouteName};
use serde_json::{json, Value};

/// A runner with a replica, on a harness whose reports route has `fault`
/// with probability 1.
async fn with_fault(fault: Fault) -> (Harness, RawRunner, String) {
    let harness = start();
    let admin = harness.admin();
    let (id, token) = web_runner(&admin).await;
    let runner = RawRunner::new(&harness.base_url(), &id, &token);
    let replica = runner.startup().await;
    admin
        .set_faults(&FaultPlan {
            seed: Some(1),
            rules: vec![FaultRule::new(RouteName::Checkin, fault, 1.0)],
        })
        .await
        .unwrap();
    (harness, runner, replica)
}

fn checkin_body(replica: &str) -> Value {
    json!({"replicaId": replica, "running": [], "queued": 0, "maxRunning": 4, "uptimeS": 1, "version": "0.1.0"})
}

/// Sends one check-in (no hold) with a client timeout; answers the status,
/// headers and body bytes, or the error text.
async fn raw_checkin(
    runner: &RawRunner,
    replica: &str,
    timeout: Duration,
) -> Result<(u16, awc::http::header::HeaderMap, Vec<u8>), String> {
    let client = awc::Client::builder().timeout(timeout).finish();
    let mut resp = client
        .post(format!("{}/checkin?waitMs=0", runner.base))
        .bearer_auth(&runner.token)
        .insert_header(("X-Runner-Id", runner.id.as_str()))
        .send_json(&checkin_body(replica))
        .await
        .map_err(|e| format!("send: {e}"))?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .body()
        .limit(1 << 20)
        .await
        .map_err(|e| format!("body: {e}"))?;
    Ok((status, headers, body.to_vec()))
}

fn checkins_seen(harness: &Harness, runner: &RawRunner) -> usize {
    harness.checkins(&runner.id).values().map(Vec::len).sum()
}

#[actix_rt::test]
async fn drop_closes_the_connection_after_the_request_took_effect() {
    let (harness, runner, replica) = with_fault(Fault::Drop).await;
    let err = raw_checkin(&runner, &replica, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(!err.contains("timeout"), "{err}");
    // The check-in itself was recorded: only its answer was lost.
    assert_eq!(checkins_seen(&harness, &runner), 1);
}

#[actix_rt::test]
async fn delay_holds_the_answer_then_serves_it() {
    let (_harness, runner, replica) = with_fault(Fault::Delay { ms: 400 }).await;
    let t = Instant::now();
    let (status, _, body) = raw_checkin(&runner, &replica, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(status, 200);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert!(v["operations"].is_array(), "{v}");
}

#[actix_rt::test]
async fn status_refuses_without_running_the_request() {
    for code in [500, 503] {
        let (harness, runner, replica) = with_fault(Fault::Status { status: code }).await;
        let (status, _, body) = raw_checkin(&runner, &replica, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(status, code);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"], "fault_injected");
        assert_eq!(checkins_seen(&harness, &runner), 0);
    }
}

#[actix_rt::test]
async fn retry_after_answers_429_with_the_header() {
    let (harness, runner, replica) = with_fault(Fault::RetryAfter { seconds: 7 }).await;
    let (status, headers, _) = raw_checkin(&runner, &replica, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(status, 429);
    assert_eq!(headers.get("retry-after").unwrap(), "7");
    assert_eq!(checkins_seen(&harness, &runner), 0);
}

#[actix_rt::test]
async fn truncate_sends_half_the_body_then_closes() {
    let (harness, runner, replica) = with_fault(Fault::Truncate).await;
    // awc may hand over the short body as it is or fail reading it; either
    // way the head arrived and what came after it is not the answer.
    match raw_checkin(&runner, &replica, Duration::from_secs(5)).await {
        Err(err) => assert!(err.starts_with("body"), "the head arrives: {err}"),
        Ok((status, headers, body)) => {
            assert_eq!(status, 200);
            let promised: usize = headers
                .get("content-length")
                .unwrap()
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!(body.len() < promised, "{} of {promised}", body.len());
            assert!(serde_json::from_slice::<Value>(&body).is_err());
        }
    }
    assert_eq!(checkins_seen(&harness, &runner), 1);
    // Byte level: the head promises more than arrives.
    let raw = raw_http_checkin(&harness, &runner, &replica);
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").expect("a head");
    let promised: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(str::to_owned)
        })
        .expect("content-length")
        .trim()
        .parse()
        .unwrap();
    assert!(
        body.len() < promised && !body.is_empty(),
        "{} of {promised}",
        body.len()
    );
}

/// One check-in over a plain socket; everything read until the server closes.
fn raw_http_checkin(harness: &Harness, runner: &RawRunner, replica: &str) -> Vec<u8> {
    use std::io::{Read, Write};
    let body = checkin_body(replica).to_string();
    let mut s = std::net::TcpStream::connect(harness.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "POST /api/runner/v1/checkin?waitMs=0 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nX-Runner-Id: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        runner.token,
        runner.id,
        body.len()
    )
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    got
}

#[actix_rt::test]
async fn garbage_answers_200_with_a_body_that_is_not_json() {
    let (harness, runner, replica) = with_fault(Fault::Garbage).await;
    let (status, _, body) = raw_checkin(&runner, &replica, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(serde_json::from_slice::<Value>(&body).is_err());
    assert_eq!(checkins_seen(&harness, &runner), 1);
}

#[actix_rt::test]
async fn hang_holds_until_the_client_gives_up() {
    let (harness, runner, replica) = with_fault(Fault::Hang).await;
    let t = Instant::now();
    let err = raw_checkin(&runner, &replica, Duration::from_millis(500))
        .await
        .unwrap_err();
    assert!(t.elapsed() >= Duration::from_millis(500));
    assert!(
        err.to_lowercase().contains("timeout") || err.contains("timed out"),
        "{err}"
    );
    assert_eq!(checkins_seen(&harness, &runner), 0);
    // Clearing the faults lets the next request through.
    harness.admin().clear_faults().await.unwrap();
    let (status, _, _) = raw_checkin(&runner, &replica, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(status, 200);
}

#[actix_rt::test]
async fn the_admin_api_sets_reports_and_clears_faults() {
    let harness = start();
    let admin = harness.admin();
    let before = admin.faults().await.unwrap();
    assert_eq!(before.seed, harness.fault_seed());
    assert!(before.rules.is_empty());

    let plan = FaultPlan {
        seed: Some(99),
        rules: vec![
            FaultRule::new(RouteName::Reports, Fault::Status { status: 503 }, 0.5),
            FaultRule::new(RouteName::Reports, Fault::Garbage, 0.5),
        ],
    };
    let set = admin.set_faults(&plan).await.unwrap();
    assert_eq!(set.seed, 99);
    assert_eq!(set.rules, plan.rules);

    let (id, token) = web_runner(&admin).await;
    let runner = RawRunner::new(&harness.base_url(), &id, &token);
    let replica = runner.startup().await;
    let mut statuses = Vec::new();
    for _ in 0..20 {
        statuses.push(runner.reports(&replica, vec![]).await.0);
    }
    // Probability 1 in total: every request got one of the two faults.
    assert!(
        statuses.iter().all(|s| *s == 503 || *s == 200),
        "{statuses:?}"
    );
    let status = admin.faults().await.unwrap();
    let injected: u64 = status.injected.iter().map(|c| c.count).sum();
    assert_eq!(injected, 20);
    assert_eq!(status.requests[&RouteName::Reports], 20);

    // A bad plan is refused and the one in force stays.
    let err = admin
        .set_faults(&FaultPlan {
            seed: None,
            rules: vec![FaultRule::new(RouteName::ListRunners, Fault::Drop, 1.0)],
        })
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(422));
    assert_eq!(err.code(), Some("bad_fault_plan"));
    assert_eq!(admin.faults().await.unwrap().rules.len(), 2);

    let cleared = admin.clear_faults().await.unwrap();
    assert!(cleared.rules.is_empty());
    assert_eq!(runner.reports(&replica, vec![]).await.0, 200);
}

#[actix_rt::test]
async fn faults_given_at_start_are_in_force_with_their_seed() {
    let harness = Harness::start(HarnessConfig {
        faults: FaultPlan {
            seed: Some(1234),
            rules: vec![FaultRule::new(
                RouteName::Startup,
                Fault::RetryAfter { seconds: 1 },
                1.0,
            )],
        },
        ..config()
    })
    .unwrap();
    assert_eq!(harness.fault_seed(), 1234);
    let admin = harness.admin();
    let (id, token) = web_runner(&admin).await;
    let runner = RawRunner::new(&harness.base_url(), &id, &token);
    assert_eq!(runner.startup_raw().await.0, 429);
    let bad = Harness::start(HarnessConfig {
        faults: FaultPlan {
            seed: None,
            rules: vec![FaultRule::new(RouteName::Checkin, Fault::Drop, 2.0)],
        },
        ..config()
    })
    .unwrap_err();
    assert!(bad.to_string().contains("outside [0, 1]"), "{bad}");
}

#[actix_rt::test]
async fn the_same_seed_replays_the_same_faults_over_http() {
    async fn outcomes(seed: u64) -> Vec<u16> {
        let harness = Harness::start(HarnessConfig {
            faults: FaultPlan {
                seed: Some(seed),
                rules: vec![FaultRule::new(
                    RouteName::Reports,
                    Fault::Status { status: 500 },
                    0.3,
                )],
            },
            ..config()
        })
        .unwrap();
        let (id, token) = web_runner(&harness.admin()).await;
        let runner = RawRunner::new(&harness.base_url(), &id, &token);
        let replica = runner.startup().await;
        let mut out = Vec::new();
        for _ in 0..40 {
            out.push(runner.reports(&replica, vec![]).await.0);
        }
        out
    }
    let a = outcomes(5).await;
    assert_eq!(a, outcomes(5).await);
    assert!(a.contains(&500) && a.contains(&200), "{a:?}");
}
