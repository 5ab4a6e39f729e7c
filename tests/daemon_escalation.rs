//! With the `failpoints` feature: a part of the runner that keeps failing
//! makes `rdrunner run` exit 5 (supervision escalated), for the service
//! manager to restart it. Run with `cargo test --features failpoints`.
#![cfg(feature = "failpoints")]

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdrunner_harness::{CreateRunner, Harness, HarnessConfig};

#[actix_rt::test]
async fn a_poller_that_keeps_panicking_escalates_to_exit_5() {
    let h = Harness::start(HarnessConfig::default()).unwrap();
    let created = h
        .admin()
        .create_runner(&CreateRunner {
            name: "r".into(),
            description: String::new(),
            tags: vec![],
            projects: Default::default(),
        })
        .await
        .unwrap();
    let d = tempfile::tempdir().unwrap();
    let creds = d.path().join(".rdrunner-creds");
    std::fs::write(&creds, &created.credentials).unwrap();
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(
        d.path().join("runner.toml"),
        "[supervision]\nmaxRestarts = 2\nrestartWithinMs = 60000\n[log]\nstderr = false\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_rdrunner"))
        .current_dir(d.path())
        .arg("run")
        .env("RDRUNNER_FAILPOINTS", "poller::checkin=panic")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("rdrunner did not exit");
        }
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(5), "{stderr}");
    assert!(stderr.contains("supervision gave up"), "{stderr}");
}
