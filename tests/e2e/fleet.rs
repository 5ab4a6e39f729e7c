//! End to end: the `rdrunner` binary as the control plane sees it. Its
//! replica shows healthy with the details it sent (version, pid, the
//! address it came from, uptime), a ping is echoed by its next check-in
//! within the long-poll cycle, its shutdown shows it down saying so, and
//! the control plane's `/metrics` follows.

use std::time::{Duration, Instant};

use crate::support::{Runner, World};
use rdrunner_harness::{PingState, RunnerInfo, RunnerStatus};

/// Polls the runner until `pred` holds, for at most `timeout`.
async fn wait_runner(
    world: &World,
    timeout: Duration,
    what: &str,
    pred: impl Fn(&RunnerInfo) -> bool,
) -> RunnerInfo {
    let start = Instant::now();
    loop {
        let info = world.admin().get_runner(&world.runner_id).await.unwrap();
        if pred(&info) {
            return info;
        }
        assert!(
            start.elapsed() < timeout,
            "{what} not seen within {timeout:?}: {info:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[actix_rt::test]
async fn the_real_runner_shows_healthy_answers_a_ping_and_shows_down_once_stopped() {
    let world = World::new(&["f1"]).await;
    let runner = Runner::start(world.work());
    let info = wait_runner(&world, Duration::from_secs(15), "a healthy runner", |i| {
        i.status == RunnerStatus::Healthy
    })
    .await;
    assert_eq!(info.status_reason, None);
    assert!(info.warnings.is_empty(), "{:?}", info.warnings);
    let replica = &info.replicas[0];
    assert_eq!(replica.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(replica.hostname, "e2e-host");
    assert_eq!(replica.ip.as_deref(), Some("127.0.0.1"));
    assert!(replica.pid > 0);
    assert_eq!((replica.running, replica.queued), (0, 0));
    assert!(replica.started_at.is_some() && replica.uptime_secs.is_some());

    // The runner echoes a ping on the check-in that follows the answer
    // carrying it: well within one long-poll cycle (500 ms here).
    let status = world
        .admin()
        .ping_and_wait(&world.runner_id, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(status.state, PingState::Answered, "{status:?}");
    assert_eq!(status.replica_id.as_deref(), Some(replica.id.as_str()));
    assert!(
        status.round_trip_ms.unwrap() < 2000,
        "round trip {:?} ms",
        status.round_trip_ms
    );

    let metrics = world.admin().metrics().await.unwrap();
    assert!(
        metrics.contains("rdrunner_harness_runners{status=\"healthy\"} 1"),
        "{metrics}"
    );

    // SIGTERM: the replica shuts down and shows down, saying so.
    assert!(runner.stop().success());
    let info = world.admin().get_runner(&world.runner_id).await.unwrap();
    assert_eq!(info.status, RunnerStatus::Down);
    assert!(
        info.status_reason.as_deref().unwrap().contains("shut down"),
        "{info:?}"
    );
}
