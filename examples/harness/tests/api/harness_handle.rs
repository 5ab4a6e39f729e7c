//! The `Harness` handle itself: starting from sync code and from inside a
//! System, the state file across restarts, and HTTPS with a private CA.

use std::time::Duration;

use crate::common::*;
use rdrunner_harness::{Harness, HarnessConfig, RunState, TlsFiles};

#[test]
fn starts_and_stops_from_sync_code_and_frees_the_port() {
    let harness = start();
    let addr = harness.addr();
    assert!(harness.base_url().starts_with("http://127.0.0.1:"));
    assert!(!harness.base_url().ends_with('/'));
    assert!(std::net::TcpStream::connect(addr).is_ok());
    harness.stop();
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "the listener is closed once stop returns"
    );
}

#[test]
fn serves_from_inside_another_system() {
    actix_rt::System::new().block_on(async {
        let harness = start();
        let admin = harness.admin();
        assert!(admin.list_runners().await.unwrap().is_empty());
        drop(harness);
    });
}

#[actix_rt::test]
async fn the_state_file_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("harness-state.json");
    let config = HarnessConfig {
        state_file: Some(path.clone()),
        ..config()
    };
    let (runner_id, token, exec, op) = {
        let harness = Harness::start(config.clone()).unwrap();
        let admin = harness.admin();
        let (runner_id, token) = web_runner(&admin).await;
        let runner = RawRunner::new(&harness.base_url(), &runner_id, &token);
        let replica = runner.startup().await;
        let exec = admin.submit_execution("ops", &echo("x")).await.unwrap();
        let op = admin.execution(exec).await.unwrap().operations[0]
            .id
            .clone();
        runner.claim(&replica, &op).await;
        runner
            .reports(&replica, vec![log_report(&op, 1, "before restart")])
            .await;
        harness.stop();
        (runner_id, token, exec, op)
    };
    assert!(path.exists());

    let harness = Harness::start(HarnessConfig {
        admin_token: Some("fixed".into()),
        ..config
    })
    .unwrap();
    let admin = harness.admin();
    let info = admin.get_runner(&runner_id).await.unwrap();
    assert_eq!(info.projects["ops"], "tags: web");
    assert_eq!(admin.nodes("ops").await.unwrap().len(), 2);
    let st = admin.execution(exec).await.unwrap();
    assert_eq!(st.operations[0].state, RunState::Running);
    assert_eq!(
        admin.all_output(exec).await.unwrap()[0].text,
        "before restart"
    );
    // The runner's token still works (its hash was kept) and reports go on from the ack.
    let runner = RawRunner::new(&harness.base_url(), &runner_id, &token);
    let replica = st.operations[0].replica.clone().unwrap();
    let (s, acks) = runner
        .reports(
            &replica,
            vec![log_report(&op, 1, "dup"), op_report(&op, 2, "succeeded")],
        )
        .await;
    assert_eq!(s, 200, "{acks}");
    assert_eq!(acks["acks"][&op], 2);
    let done = admin
        .wait_terminal(exec, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(done.state, RunState::Succeeded);
    // New executions get new ids.
    assert!(admin.submit_execution("ops", &echo("y")).await.unwrap() > exec);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains(&token), "the state file holds no token");
}

#[actix_rt::test]
async fn serves_https_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "rdrunner test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let mut leaf_params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap();
    leaf_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "harness");
    let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key).unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, format!("{}{}", leaf.pem(), ca.pem())).unwrap();
    std::fs::write(&key, leaf_key.serialize_pem()).unwrap();

    let harness = Harness::start(HarnessConfig {
        tls: Some(TlsFiles { cert, key }),
        ..config()
    })
    .unwrap();
    assert!(harness.base_url().starts_with("https://127.0.0.1:"));
    let admin = harness.admin();
    let (runner_id, _) = web_runner(&admin).await;
    assert_eq!(admin.get_runner(&runner_id).await.unwrap().id, runner_id);
    // A client that does not trust the private CA is refused.
    let plain = rdrunner_harness::AdminClient::new(harness.base_url(), harness.admin_token());
    assert!(plain.list_runners().await.is_err());
}

#[test]
fn the_handle_can_move_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Harness>();
    assert_send_sync::<HarnessConfig>();
}
