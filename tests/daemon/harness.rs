//! The `rdrunner` binary against the reference control plane
//! (`rdrunner-harness`) on 127.0.0.1:0.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use rdrunner_harness::{CreateRunner, Harness, HarnessConfig, RunnerStatus};

fn rdrunner(dir: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rdrunner"));
    cmd.current_dir(dir).args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("RDRUNNER__")
            || k.starts_with("RUNNER_RUNDECK_")
            || k.to_ascii_uppercase().ends_with("_PROXY")
        {
            cmd.env_remove(k);
        }
    }
    cmd.output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[actix_rt::test]
async fn check_registers_a_replica_and_shuts_it_down_then_a_deleted_runner_exits_3() {
    let harness = Harness::start(HarnessConfig::default()).unwrap();
    let admin = harness.admin();
    let created = admin
        .create_runner(&CreateRunner {
            name: "segment-a".into(),
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

    let dir = d.path().to_owned();
    let o = actix_rt::task::spawn_blocking(move || rdrunner(&dir, &["check"]))
        .await
        .unwrap();
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(
        t.contains(&format!("runner id:  {}", created.runner_id)),
        "{t}"
    );
    assert!(t.contains(&harness.base_url()), "{t}");
    assert!(!t.contains(&created.token), "the token was printed:\n{t}");
    let replica_id = t
        .lines()
        .find_map(|l| l.strip_prefix("replica id: "))
        .unwrap()
        .to_owned();

    let info = admin.get_runner(&created.runner_id).await.unwrap();
    let replica = info.replicas.iter().find(|r| r.id == replica_id).unwrap();
    assert_eq!(replica.status, RunnerStatus::Down, "{info:?}");
    assert!(info.last_checkin.is_some());

    admin.delete_runner(&created.runner_id).await.unwrap();
    let dir = d.path().to_owned();
    let o = actix_rt::task::spawn_blocking(move || rdrunner(&dir, &["check"]))
        .await
        .unwrap();
    let t = text(&o);
    assert_eq!(o.status.code(), Some(3), "{t}");
    assert!(!t.contains(&created.token), "{t}");

    harness.stop();
    let dir = d.path().to_owned();
    let o = actix_rt::task::spawn_blocking(move || rdrunner(&dir, &["check"]))
        .await
        .unwrap();
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
}

#[actix_rt::test]
async fn check_over_https_trusts_a_private_ca_only_through_ca_file() {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let d = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "private CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    let cert = d.path().join("cert.pem");
    let key = d.path().join("key.pem");
    std::fs::write(&cert, format!("{}{}", leaf.pem(), ca.pem())).unwrap();
    std::fs::write(&key, leaf_key.serialize_pem()).unwrap();
    std::fs::write(d.path().join("ca.pem"), ca.pem()).unwrap();

    let harness = Harness::start(HarnessConfig {
        tls: Some(rdrunner_harness::TlsFiles { cert, key }),
        ..HarnessConfig::default()
    })
    .unwrap();
    assert!(harness.base_url().starts_with("https://"));
    let created = harness
        .admin()
        .create_runner(&CreateRunner {
            name: "tls".into(),
            description: String::new(),
            tags: vec![],
            projects: Default::default(),
        })
        .await
        .unwrap();
    let creds = d.path().join(".rdrunner-creds");
    std::fs::write(&creds, &created.credentials).unwrap();
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o600)).unwrap();

    // Not trusted without the CA file: unreachable (4), naming the certificate.
    let dir = d.path().to_owned();
    let o = actix_rt::task::spawn_blocking(move || rdrunner(&dir, &["check"]))
        .await
        .unwrap();
    let t = text(&o);
    assert_eq!(o.status.code(), Some(4), "{t}");
    assert!(t.to_lowercase().contains("certificate"), "{t}");
    // ... and saying what to do about it.
    assert!(
        t.contains("set `tls.caFile` to the CA that signed the control plane's certificate"),
        "{t}"
    );

    std::fs::write(d.path().join("runner.toml"), "[tls]\ncaFile = \"ca.pem\"\n").unwrap();
    let dir = d.path().to_owned();
    let o = actix_rt::task::spawn_blocking(move || rdrunner(&dir, &["check"]))
        .await
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    // The certificate names 127.0.0.1 only: dialled as localhost, it is
    // refused with the name mismatch's own hint.
    let by_name = created
        .credentials
        .replace("https://127.0.0.1:", "https://localhost:");
    std::fs::write(&creds, by_name).unwrap();
    let dir = d.path().to_owned();
    let o = actix_rt::task::spawn_blocking(move || rdrunner(&dir, &["check"]))
        .await
        .unwrap();
    let t = text(&o);
    assert_eq!(o.status.code(), Some(4), "{t}");
    assert!(t.contains("subjectAltName"), "{t}");
    assert!(!t.contains("tls.caFile"), "{t}");
}
