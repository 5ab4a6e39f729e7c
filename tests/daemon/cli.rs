//! The `rdrunner` binary: help, configuration checks, credentials refusal,
//! and `check` against a small control plane on 127.0.0.1:0.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};

const TOKEN: &str = "tok-cli-secret-42";

fn rdrunner(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rdrunner"));
    cmd.current_dir(dir).args(args);
    // The tests' own environment must not leak into the runner's configuration.
    for (k, _) in std::env::vars() {
        if k.starts_with("RDRUNNER__")
            || k.starts_with("RUNNER_RUNDECK_")
            || k.ends_with("_PROXY")
            || k.ends_with("_proxy")
        {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    cmd.output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn write_creds(dir: &Path, url: &str, token: &str, mode: u32) {
    let path = dir.join(".rdrunner-creds");
    std::fs::write(
        &path,
        format!("# runner credentials\nRUNDECK_RUNNER_ID=runner-1\nRUNDECK_RUNNER_TOKEN={token}\nRUNDECK_SERVER_URL={url}\n"),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn help_lists_commands_and_exit_codes() {
    let d = tempfile::tempdir().unwrap();
    let o = rdrunner(d.path(), &["--help"], &[]);
    assert_eq!(o.status.code(), Some(0));
    let t = text(&o);
    for want in [
        "run",
        "check",
        "config",
        "--config",
        "--creds",
        "Exit codes",
        "credentials refused",
        "unreachable",
        "escalated",
    ] {
        assert!(t.contains(want), "{want} missing from:\n{t}");
    }
    let o = rdrunner(d.path(), &["--version"], &[]);
    assert_eq!(o.status.code(), Some(0));
    assert!(text(&o).contains(env!("CARGO_PKG_VERSION")));
    let o = rdrunner(d.path(), &["frobnicate"], &[]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn config_check_accepts_the_example_and_refuses_unknown_keys() {
    let d = tempfile::tempdir().unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("runner.example.toml");
    let o = rdrunner(
        d.path(),
        &["config", "--check", example.to_str().unwrap()],
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    std::fs::write(
        d.path().join("bad.toml"),
        "[ssh]\nknownHostPolicy = \"strict\"\n",
    )
    .unwrap();
    let o = rdrunner(d.path(), &["config", "--check", "bad.toml"], &[]);
    assert_eq!(o.status.code(), Some(2));
    let t = text(&o);
    assert!(
        t.contains("ssh.knownHostPolicy") && t.contains("knownHostsPolicy"),
        "{t}"
    );

    // The default ./runner.toml is read by every command; `run` refuses it too.
    std::fs::write(d.path().join("runner.toml"), "[runner]\nmaxRunnin = 1\n").unwrap();
    let o = rdrunner(d.path(), &[], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("runner.maxRunnin"), "{}", text(&o));
}

#[test]
fn config_prints_the_effective_configuration() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("runner.toml"), "[runner]\nmaxRunning = 7\n").unwrap();
    let o = rdrunner(
        d.path(),
        &["config"],
        &[
            ("RDRUNNER__LOG__FORMAT", "json"),
            ("RDRUNNER__HTTP__PROXY", "http://proxy.example:3128"),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let t = String::from_utf8_lossy(&o.stdout);
    assert!(t.contains("maxRunning = 7"), "{t}");
    assert!(t.contains("format = \"json\""), "{t}");
    assert!(t.contains("proxy = \"http://proxy.example:3128\""), "{t}");
    assert!(t.contains("# credentials: no runner id"), "{t}");
    write_creds(d.path(), "https://cp.example", TOKEN, 0o600);
    let o = rdrunner(d.path(), &["config"], &[]);
    let t = String::from_utf8_lossy(&o.stdout);
    assert!(
        t.contains("runner id runner-1, server https://cp.example, token [redacted]"),
        "{t}"
    );
    assert!(!t.contains(TOKEN));
    let o = rdrunner(d.path(), &["config"], &[("RDRUNNER__RUNNER__BOGUS", "1")]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("RDRUNNER__RUNNER__BOGUS"));
}

#[test]
fn readable_creds_file_is_refused_with_the_fix_unless_allowed() {
    let d = tempfile::tempdir().unwrap();
    write_creds(d.path(), "http://127.0.0.1:9", TOKEN, 0o644);
    let o = rdrunner(d.path(), &["check"], &[]);
    assert_eq!(o.status.code(), Some(2));
    let t = text(&o);
    assert!(t.contains("chmod 600 .rdrunner-creds"), "{t}");
    assert!(!t.contains(TOKEN));
    // Allowed by config: it goes on, and finds nothing listening (exit 4).
    let o = rdrunner(
        d.path(),
        &["check"],
        &[("RDRUNNER__RUNNER__ALLOWINSECURECREDSFILE", "true")],
    );
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(!text(&o).contains(TOKEN));
}

/// A control plane that answers startup, check-in and shutdown, and records
/// the paths it was asked.
fn control_plane() -> (u16, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_rt::System::new().block_on(async move {
            let server = HttpServer::new(move || {
                let s = s.clone();
                App::new().default_service(web::to(move |req: HttpRequest| {
                    let s = s.clone();
                    async move {
                        s.lock().unwrap().push(req.path().to_owned());
                        let auth = req.headers().get("authorization").and_then(|v| v.to_str().ok());
                        if auth != Some(&format!("Bearer {TOKEN}")) {
                            return HttpResponse::Unauthorized()
                                .json(serde_json::json!({"error": "unauthorized", "message": "unknown token"}));
                        }
                        match req.path() {
                            "/api/runner/v1/startup" => HttpResponse::Ok().json(serde_json::json!({"replicaId": "rep-9"})),
                            "/api/runner/v1/checkin" => HttpResponse::Ok().json(serde_json::json!({})),
                            "/api/runner/v1/shutdown" => HttpResponse::NoContent().finish(),
                            _ => HttpResponse::NotFound().finish(),
                        }
                    }
                }))
            })
            .workers(1)
            .disable_signals()
            .bind(("127.0.0.1", 0))
            .unwrap();
            tx.send(server.addrs()[0].port()).unwrap();
            server.run().await.unwrap();
        });
    });
    (rx.recv().unwrap(), seen)
}

#[test]
fn check_prints_the_round_trip_and_shuts_the_replica_down() {
    let (port, seen) = control_plane();
    let d = tempfile::tempdir().unwrap();
    write_creds(d.path(), &format!("http://127.0.0.1:{port}"), TOKEN, 0o600);
    let o = rdrunner(d.path(), &["check"], &[]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(
        t.contains(&format!("server:     http://127.0.0.1:{port}")),
        "{t}"
    );
    assert!(
        t.contains("runner id:  runner-1") && t.contains("replica id: rep-9"),
        "{t}"
    );
    assert!(t.contains("round trip: "), "{t}");
    assert!(!t.contains(TOKEN));
    assert_eq!(
        *seen.lock().unwrap(),
        vec![
            "/api/runner/v1/startup",
            "/api/runner/v1/checkin",
            "/api/runner/v1/shutdown"
        ]
    );
}

#[test]
fn check_with_a_wrong_token_exits_3_and_never_prints_it() {
    let (port, _) = control_plane();
    let d = tempfile::tempdir().unwrap();
    write_creds(
        d.path(),
        &format!("http://127.0.0.1:{port}"),
        "wrong-token-777",
        0o600,
    );
    let o = rdrunner(d.path(), &["check"], &[]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(3), "{t}");
    assert!(t.contains("401") && !t.contains("wrong-token-777"), "{t}");
    // The environment overrides the file's token.
    let o = rdrunner(
        d.path(),
        &["check"],
        &[("RUNNER_RUNDECK_SERVER_TOKEN", TOKEN)],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}
