//! Reaching and logging in to a node with the SSH executor: credentials
//! from the key store, host key policies, and each connection failure class.

use std::fs;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use crate::fixture::*;
use rdrunner::ssh::KnownHostsPolicy;
use rdrunner_actors::{ExecutorErrorKind, StepOutcome};
use rdrunner_harness::sshd::SshdOptions;

/// `ssh-keygen -lf` of a public key: its SHA256 fingerprint.
fn openssh_fingerprint(public_key: &str, dir: &std::path::Path) -> String {
    let p = dir.join("fp.pub");
    fs::write(&p, public_key).unwrap();
    let out = std::process::Command::new("ssh-keygen")
        .arg("-lf")
        .arg(&p)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_owned()
}

#[test]
fn wrong_key_is_an_authentication_error_naming_node_user_and_methods() {
    let f = Fixture::new();
    let other = f.sshd.new_client_key("stranger", None, false).unwrap();
    fs::copy(other, f.settings.key_store.join("stranger")).unwrap();
    let mut node = f.node();
    node.attributes
        .insert("ssh-key-storage-path".into(), "stranger".into());
    let run = f.run(
        request(node, command_step("true")),
        &rdrunner_actors::AbortSignal::new(),
    );
    let e = run.error();
    assert_eq!(e.kind, ExecutorErrorKind::Authentication, "{e}");
    let user = f.sshd.user();
    assert!(e.message.contains(&format!("as '{user}'")), "{e}");
    assert!(e.message.contains("node 'node-1'"), "{e}");
    assert!(e.message.contains("publickey with key 'stranger'"), "{e}");
}

#[test]
fn no_credentials_at_all_says_what_to_configure() {
    let f = Fixture::new();
    let mut node = f.node();
    node.attributes.clear();
    let run = f.run(
        request(node, command_step("true")),
        &rdrunner_actors::AbortSignal::new(),
    );
    let e = run.error();
    assert_eq!(e.kind, ExecutorErrorKind::Authentication);
    assert!(e.message.contains("ssh-key-storage-path"), "{e}");
}

#[test]
fn encrypted_key_with_passphrase_file() {
    let f = Fixture::new();
    let key = f
        .sshd
        .new_client_key("locked", Some("open sesame"), true)
        .unwrap();
    fs::copy(key, f.settings.key_store.join("locked")).unwrap();
    let mut node = f.node();
    node.attributes
        .insert("ssh-key-storage-path".into(), "locked".into());
    // Without the passphrase the key cannot be used.
    let run = f.run(
        request(node.clone(), command_step("echo in")),
        &rdrunner_actors::AbortSignal::new(),
    );
    assert_eq!(run.error().kind, ExecutorErrorKind::Authentication);
    write_secret(&f, "locked.passphrase", "open sesame\n");
    let run = f.run(
        request(node, command_step("echo in")),
        &rdrunner_actors::AbortSignal::new(),
    );
    assert_eq!(run.outcome(), &StepOutcome::exited(0));
    assert_eq!(run.stdout(), vec!["in"]);
}

#[test]
fn key_paths_outside_the_key_store_are_refused() {
    let f = Fixture::new();
    for bad in ["../sshd/client_ed25519", "/etc/passwd"] {
        let mut node = f.node();
        node.attributes
            .insert("ssh-key-storage-path".into(), bad.into());
        let run = f.run(
            request(node, command_step("true")),
            &rdrunner_actors::AbortSignal::new(),
        );
        assert_eq!(run.error().kind, ExecutorErrorKind::Config, "{bad}");
    }
}

#[test]
fn password_auth_from_the_key_store() {
    let f = Fixture::with_options(SshdOptions {
        password_auth: true,
        ..Default::default()
    });
    f.sshd
        .ensure_password_user("rdrunner-pw", "pw-Test-4711")
        .expect("password user (needs root)");
    write_secret(&f, "pw", "pw-Test-4711\n");
    let mut node = f.node();
    node.username = Some("rdrunner-pw".into());
    node.attributes.clear();
    node.attributes
        .insert("ssh-password-storage-path".into(), "pw".into());
    let run = f.run(
        request(node.clone(), command_step("id -un")),
        &rdrunner_actors::AbortSignal::new(),
    );
    assert_eq!(run.outcome(), &StepOutcome::exited(0));
    assert_eq!(run.stdout(), vec!["rdrunner-pw"]);

    write_secret(&f, "pw", "wrong\n");
    let run = f.run(
        request(node, command_step("id -un")),
        &rdrunner_actors::AbortSignal::new(),
    );
    let e = run.error();
    assert_eq!(e.kind, ExecutorErrorKind::Authentication);
    assert!(e.message.contains("password from 'pw'"), "{e}");
}

#[test]
fn password_through_keyboard_interactive() {
    // PAM asks for the password as a keyboard-interactive prompt.
    let f = Fixture::with_options(SshdOptions {
        extra_config: vec![
            "UsePAM yes".to_owned(),
            "PasswordAuthentication no".to_owned(),
            "KbdInteractiveAuthentication yes".to_owned(),
        ],
        ..Default::default()
    });
    f.sshd
        .ensure_password_user("rdrunner-pw", "pw-Test-4711")
        .expect("password user (needs root)");
    write_secret(&f, "pw", "pw-Test-4711\n");
    let mut node = f.node();
    node.username = Some("rdrunner-pw".into());
    node.attributes.clear();
    node.attributes
        .insert("ssh-password-storage-path".into(), "pw".into());
    let run = f.run(
        request(node, command_step("id -un")),
        &rdrunner_actors::AbortSignal::new(),
    );
    assert_eq!(run.outcome(), &StepOutcome::exited(0), "{}", f.sshd.log());
    assert_eq!(run.stdout(), vec!["rdrunner-pw"]);
}

#[test]
fn strict_refuses_an_unknown_host_key() {
    let mut f = Fixture::new();
    fs::write(&f.settings.known_hosts_file, "").unwrap();
    f.settings.known_hosts_policy = KnownHostsPolicy::Strict;
    let canary = f.dir.path().join("ran");
    let run = f.run_command(&format!("touch {}", canary.display()));
    let e = run.error();
    assert_eq!(e.kind, ExecutorErrorKind::HostKey);
    let fp = openssh_fingerprint(&f.sshd.host_public_key().unwrap(), f.dir.path());
    assert!(e.message.contains(&fp), "{e} lacks {fp}");
    assert!(e.message.contains("is not known"), "{e}");
    assert!(!canary.exists());
}

#[test]
fn accept_new_records_then_refuses_a_changed_key() {
    let mut f = Fixture::new();
    fs::write(&f.settings.known_hosts_file, "").unwrap();
    f.settings.known_hosts_policy = KnownHostsPolicy::AcceptNew;
    let run = f.run_command("echo first");
    assert_eq!(run.outcome(), &StepOutcome::exited(0));
    let recorded = fs::read_to_string(&f.settings.accepted_hosts_file).unwrap();
    assert_eq!(recorded.trim(), f.sshd.known_hosts_line().unwrap());
    // Known now: a second run adds nothing.
    assert_eq!(f.run_command("true").outcome(), &StepOutcome::exited(0));
    assert_eq!(
        fs::read_to_string(&f.settings.accepted_hosts_file).unwrap(),
        recorded
    );

    let old_fp = openssh_fingerprint(&f.sshd.host_public_key().unwrap(), f.dir.path());
    f.sshd.regenerate_host_key().unwrap();
    let new_fp = openssh_fingerprint(&f.sshd.host_public_key().unwrap(), f.dir.path());
    assert_ne!(old_fp, new_fp);
    let canary = f.dir.path().join("ran");
    let run = f.run_command(&format!("touch {}", canary.display()));
    let e = run.error();
    assert_eq!(e.kind, ExecutorErrorKind::HostKey);
    assert!(e.message.contains("MISMATCH"), "{e}");
    assert!(
        e.message
            .contains(&format!("127.0.0.1 port {}", f.sshd.port())),
        "{e}"
    );
    assert!(
        e.message.contains(&old_fp) && e.message.contains(&new_fp),
        "{e}"
    );
    assert!(!canary.exists());
    // The changed key was not recorded.
    assert_eq!(
        fs::read_to_string(&f.settings.accepted_hosts_file).unwrap(),
        recorded
    );
}

#[test]
fn a_node_known_by_its_ecdsa_key_is_asked_for_that_key() {
    // libssh2 would pick the server's ed25519 key first; only the ECDSA key
    // is known, so the executor must ask for that one.
    let mut f = Fixture::new();
    let line = f
        .sshd
        .known_hosts_line_for(&f.sshd.ecdsa_host_public_key().unwrap())
        .unwrap();
    fs::write(&f.settings.known_hosts_file, format!("# comment\n{line}\n")).unwrap();
    f.settings.known_hosts_policy = KnownHostsPolicy::Strict;
    assert_eq!(f.run_command("true").outcome(), &StepOutcome::exited(0));
}

#[test]
fn hashed_known_hosts_entries_match() {
    let f = Fixture::new();
    let status = std::process::Command::new("ssh-keygen")
        .arg("-H")
        .arg("-f")
        .arg(&f.settings.known_hosts_file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let hashed = fs::read_to_string(&f.settings.known_hosts_file).unwrap();
    assert!(hashed.starts_with("|1|"), "{hashed}");
    assert_eq!(f.run_command("true").outcome(), &StepOutcome::exited(0));
}

#[test]
fn parallel_first_connections_record_the_key_once() {
    let mut f = Fixture::new();
    fs::write(&f.settings.known_hosts_file, "").unwrap();
    f.settings.known_hosts_policy = KnownHostsPolicy::AcceptNew;
    let exec = std::sync::Arc::new(f.executor());
    let threads: Vec<_> = (0..6)
        .map(|i| {
            let exec = exec.clone();
            let req = request(f.node(), command_step(&format!("echo {i}")));
            std::thread::spawn(move || {
                run_with(&exec, &req, &rdrunner_actors::AbortSignal::new())
                    .result
                    .map(|o| o.exit_code)
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), Ok(Some(0)));
    }
    let recorded = fs::read_to_string(&f.settings.accepted_hosts_file).unwrap();
    assert_eq!(recorded.lines().count(), 1, "{recorded}");
}

#[test]
fn strict_refuses_a_changed_key_from_known_hosts() {
    let mut f = Fixture::new();
    f.sshd.regenerate_host_key().unwrap();
    let run = f.run_command("true");
    assert_eq!(run.error().kind, ExecutorErrorKind::HostKey);
    assert!(run.error().message.contains("MISMATCH"));
}

#[test]
fn off_connects_to_any_key_with_a_warning_every_time() {
    let mut f = Fixture::new();
    fs::write(&f.settings.known_hosts_file, "").unwrap();
    f.settings.known_hosts_policy = KnownHostsPolicy::Off;
    let (log, records) = capturing_logger();
    let exec = rdrunner::ssh::SshExecutor::new(f.settings.clone(), log);
    for _ in 0..2 {
        let run = run_with(
            &exec,
            &request(f.node(), command_step("true")),
            &rdrunner_actors::AbortSignal::new(),
        );
        assert_eq!(run.outcome(), &StepOutcome::exited(0));
    }
    let warnings = records
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.starts_with("WARN") && r.contains("host key checking is off"))
        .count();
    assert_eq!(warnings, 2);
    assert!(!f.settings.accepted_hosts_file.exists());
}

#[test]
fn agent_identities_are_all_tried() {
    let mut f = Fixture::new();
    let sock = f.dir.path().join("agent.sock");
    let mut agent = std::process::Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&sock)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("ssh-agent");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !sock.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    // A key the server refuses first, the authorized one second.
    let stranger = f.sshd.new_client_key("stranger", None, false).unwrap();
    for key in [stranger, f.sshd.client_key()] {
        let st = std::process::Command::new("ssh-add")
            .arg(&key)
            .env("SSH_AUTH_SOCK", &sock)
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(st.success());
    }
    // The only test that sets it; the others run with use_agent off.
    std::env::set_var("SSH_AUTH_SOCK", &sock);
    f.settings.use_agent = true;
    let mut node = f.node();
    node.attributes.clear();
    let run = f.run(
        request(node, command_step("echo via agent")),
        &rdrunner_actors::AbortSignal::new(),
    );
    let _ = agent.kill();
    let _ = agent.wait();
    assert_eq!(run.outcome(), &StepOutcome::exited(0));
    assert_eq!(run.stdout(), vec!["via agent"]);
}

#[test]
fn connection_refused() {
    let f = Fixture::new();
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut node = f.node();
    node.port = Some(port);
    let run = f.run(
        request(node, command_step("true")),
        &rdrunner_actors::AbortSignal::new(),
    );
    let e = run.error();
    assert_eq!(e.kind, ExecutorErrorKind::ConnectionRefused, "{e}");
    assert!(e.message.contains(&format!("127.0.0.1:{port}")), "{e}");
}

#[test]
fn a_silent_port_is_a_connect_timeout() {
    let mut f = Fixture::new();
    // Accepts TCP but never speaks SSH.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    f.settings.connect_timeout = Duration::from_millis(500);
    let mut node = f.node();
    node.port = Some(port);
    let started = Instant::now();
    let run = f.run(
        request(node, command_step("true")),
        &rdrunner_actors::AbortSignal::new(),
    );
    let e = run.error();
    assert_eq!(e.kind, ExecutorErrorKind::ConnectTimeout, "{e}");
    assert!(e.message.contains("handshake"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(listener);
}

#[test]
fn a_full_listen_queue_is_a_connect_timeout() {
    let mut f = Fixture::new();
    // A listener never accepting: once its queue is full the kernel drops
    // new SYNs, so the TCP connect itself times out.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut held = Vec::new();
    for _ in 0..300 {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(s) => held.push(s),
            Err(_) => break,
        }
    }
    f.settings.connect_timeout = Duration::from_millis(300);
    let mut node = f.node();
    node.port = Some(addr.port());
    let run = f.run(
        request(node, command_step("true")),
        &rdrunner_actors::AbortSignal::new(),
    );
    let e = run.error();
    assert_eq!(e.kind, ExecutorErrorKind::ConnectTimeout, "{e}");
    assert!(e.message.contains("no answer from"), "{e}");
}

#[test]
fn keepalives_are_sent_while_a_step_is_quiet() {
    // The fixture asks for one every second, which libssh2 rounds up to 2 s;
    // the server logs each at DEBUG.
    let f = Fixture::with_options(SshdOptions {
        extra_config: vec!["LogLevel DEBUG".to_owned()],
        ..Default::default()
    });
    let run = f.run_command("sleep 4.3; echo alive");
    assert_eq!(run.outcome(), &StepOutcome::exited(0));
    assert_eq!(run.stdout(), vec!["alive"]);
    let log = f.sshd.log();
    let keepalives = log.matches("rtype keepalive@libssh2.org").count();
    assert!(keepalives >= 2, "{keepalives} keepalives in the server log");
}

#[test]
fn only_a_canonical_address_is_dialled() {
    let f = Fixture::new();
    let port = f.sshd.port();
    // Each of these reached the node before: an allowedNodes filter on the
    // hostname saw one string and the connector dialled another.
    for hostname in [
        " 127.0.0.1",
        "127.0.0.1 ",
        "[127.0.0.1]",
        "2130706433",
        "127.1",
        "0x7f.1",
        "0177.0.0.1",
    ] {
        let mut node = f.node();
        node.hostname = hostname.into();
        let run = f.run(
            request(node, command_step("true")),
            &rdrunner_actors::AbortSignal::new(),
        );
        let e = run.error();
        assert_eq!(e.kind, ExecutorErrorKind::Config, "{hostname:?}: {e}");
        assert!(e.message.contains("node 'node-1'"), "{e}");
    }
    // A port given in the hostname and in the port field is ambiguous.
    let mut node = f.node();
    node.hostname = format!("127.0.0.1:{port}");
    let run = f.run(
        request(node.clone(), command_step("true")),
        &rdrunner_actors::AbortSignal::new(),
    );
    assert_eq!(run.error().kind, ExecutorErrorKind::Config);
    // Rundeck's host:port, alone, is parsed into host and port and dialled.
    node.port = None;
    let run = f.run(
        request(node, command_step("echo via host:port")),
        &rdrunner_actors::AbortSignal::new(),
    );
    assert_eq!(run.outcome(), &StepOutcome::exited(0));
    assert_eq!(run.stdout(), vec!["via host:port"]);
}
