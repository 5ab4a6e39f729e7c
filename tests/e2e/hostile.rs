//! End to end, as an attacker who owns the control plane: the real
//! `rdrunner` binary and a real sshd against a control plane that offers
//! hostile operations (option values built to break out of quotes, nodes
//! that name the runner's own host, key-store paths that point at private
//! keys, non-canonical addresses, control characters in names, copies that
//! climb out of their directory, an absurd `Retry-After`).
//!
//! Every attack must be refused or neutralised: a canary file the attack
//! would create never appears, no key material or secret leaves the
//! segment (nothing in what the control plane received, the runner's logs,
//! its spool or `ps`), and a refusal says why.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine;
use rdrunner_actors::model::State;
use rdrunner_harness::sshd::TestSshd;
use serde_json::{json, Value};

use crate::support::hostile::{outcomes, HostileControlPlane, NodeOutcome};
use crate::support::{contains, files_under, write_private, Runner};

/// How long one hostile operation may take.
const OP_TIMEOUT: Duration = Duration::from_secs(30);

/// A runner, its sshd and the hostile control plane it reports to.
struct Segment {
    dir: tempfile::TempDir,
    sshd: TestSshd,
    cp: HostileControlPlane,
    runner: Option<Runner>,
    next_op: u32,
}

impl Segment {
    /// Starts a runner whose `runner.toml` has `extra` appended to its
    /// `[runner]` table (e.g. `allowedNodes = "..."`) and `ssh_extra` to its
    /// `[ssh]` table.
    fn start(runner_extra: &str, ssh_extra: &str) -> Segment {
        let dir = tempfile::tempdir().expect("tempdir");
        let work = dir.path();
        let sshd = TestSshd::start(&work.join("sshd")).expect("private sshd starts");
        let cp = HostileControlPlane::start();
        write_private(
            &work.join(".rdrunner-creds"),
            &format!(
                "RUNDECK_RUNNER_ID=rn-hostile\nRUNDECK_RUNNER_TOKEN=tok-{:032x}\nRUNDECK_SERVER_URL={}\n",
                rand::random::<u128>(),
                cp.url()
            ),
        );
        let keys = work.join("keys");
        fs::create_dir_all(&keys).unwrap();
        fs::set_permissions(&keys, fs::Permissions::from_mode(0o700)).unwrap();
        write_private(
            &keys.join("node-key"),
            &fs::read_to_string(sshd.client_key()).unwrap(),
        );
        fs::write(
            work.join("known_hosts"),
            format!("{}\n", sshd.known_hosts_line().unwrap()),
        )
        .unwrap();
        fs::create_dir_all(work.join("remote-tmp")).unwrap();
        fs::create_dir_all(work.join("scratch")).unwrap();
        let w = work.display();
        fs::write(
            work.join("runner.toml"),
            format!(
                r#"[runner]
hostname = "hostile-host"
pollIntervalMs = 200
reportIntervalMs = 50
killGraceMs = 1000
drainTimeoutMs = 2000
{runner_extra}

[supervision]
backoffMaxMs = 1000

[ssh]
keyStore = "{w}/keys"
knownHostsPolicy = "strict"
knownHostsFile = "{w}/known_hosts"
acceptedHostsFile = "{w}/accepted_hosts"
connectTimeoutMs = 5000
callTimeoutMs = 10000
remoteTmpDir = "{w}/remote-tmp"
{ssh_extra}

[spool]
dir = "{w}/runner/spool"
fsync = "never"

[log]
dir = "{w}/runner/logs"
level = "debug"
stderr = true
"#
            ),
        )
        .unwrap();
        let runner = Runner::start(work);
        Segment {
            dir,
            sshd,
            cp,
            runner: Some(runner),
            next_op: 0,
        }
    }

    fn work(&self) -> &Path {
        self.dir.path()
    }

    fn scratch(&self) -> PathBuf {
        self.work().join("scratch")
    }

    /// The file an attack would create.
    fn canary(&self) -> PathBuf {
        self.scratch().join("CANARY")
    }

    /// An SSH node served by the sshd, logging in with the key store's
    /// `node-key`.
    fn node(&self, name: &str) -> Value {
        json!({
            "name": name,
            "hostname": self.sshd.host(),
            "port": self.sshd.port(),
            "username": self.sshd.user(),
            "tags": ["web"],
            "attributes": {"ssh-key-storage-path": "node-key"}
        })
    }

    /// Offers an operation with `steps` on `nodes`, with `options` (those
    /// named in `secure` are secure), and waits for its end.
    fn run(
        &mut self,
        steps: Value,
        nodes: Vec<Value>,
        options: Value,
        secure: &[&str],
    ) -> BTreeMap<String, NodeOutcome> {
        self.next_op += 1;
        let id = format!("op-hostile-{}", self.next_op);
        self.cp.offer(json!({
            "id": id,
            "execution": {"id": self.next_op, "project": "p", "job": "attack", "user": "mallory"},
            "steps": steps,
            "nodes": nodes,
            "dispatch": {"threadCount": 1, "keepGoing": true},
            "options": options,
            "secureOptions": secure,
        }));
        let reports = self.cp.wait_terminal(&id, OP_TIMEOUT);
        outcomes(&reports)
    }

    /// Every byte that left the segment: what the control plane received.
    fn left_the_segment(&self) -> Vec<u8> {
        self.cp.received()
    }

    /// Stops the runner (SIGTERM, drain) and returns what it printed.
    fn stop(&mut self) -> String {
        let runner = self.runner.take().expect("running");
        let stderr = runner.stderr();
        let status = runner.stop();
        assert!(
            status.success(),
            "rdrunner exited {status}; stderr:\n{stderr}"
        );
        stderr
    }

    /// Every file the runner wrote (logs and spool) and what it printed.
    fn runner_files(&self) -> Vec<(PathBuf, Vec<u8>)> {
        let mut files = files_under(&self.work().join("runner"));
        for name in ["runner.stdout", "runner.stderr"] {
            let p = self.work().join(name);
            if let Ok(b) = fs::read(&p) {
                files.push((p, b));
            }
        }
        files
    }

    fn assert_no_canary(&self) {
        let found: Vec<_> = fs::read_dir(self.scratch())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("CANARY"))
            .collect();
        assert!(found.is_empty(), "an attack ran: {found:?} exists");
    }
}

/// Whether `text` holds a wrapper marker: `rdrunner-` and 32 hex digits.
fn has_marker(text: &str) -> bool {
    text.match_indices("rdrunner-").any(|(i, m)| {
        let rest = &text[i + m.len()..];
        rest.len() >= 32 && rest.as_bytes()[..32].iter().all(u8::is_ascii_hexdigit)
    })
}

fn command(text: &str) -> Value {
    json!({"type": "command", "command": text})
}

/// The outcome of `node`; fails the test, showing every outcome, when the
/// node has none (its operation ended without running it at all).
fn of<'a>(outcomes: &'a BTreeMap<String, NodeOutcome>, node: &str) -> &'a NodeOutcome {
    outcomes
        .get(node)
        .unwrap_or_else(|| panic!("no report for node {node:?}: {outcomes:#?}"))
}

fn failed(o: &NodeOutcome) -> bool {
    o.state == Some(State::Failed)
}

/// Option values built to leave the quotes they are put in, each with what
/// it would do if it got out: create the canary.
fn hostile_values(canary: &Path) -> Vec<String> {
    let c = canary.display();
    vec![
        format!("$(touch {c})"),
        format!("`touch {c}`"),
        format!("\"; touch {c}; echo \""),
        format!("'; touch {c}; echo '"),
        format!("x && touch {c}"),
        format!("x | touch {c}"),
        format!("x\ntouch {c}"),
        format!("x; touch {c}"),
        format!("\\\"$(touch {c})\\"),
        format!("'\"'\"$(touch {c})"),
        "*".to_owned(),
        "$HOME".to_owned(),
        "it's".to_owned(),
        "tab\tand  spaces ".to_owned(),
        "héllo ✓ \u{202e}".to_owned(),
        String::new(),
    ]
}

#[test]
fn option_values_cannot_leave_their_quotes() {
    let mut seg = Segment::start("", "");
    let values = hostile_values(&seg.canary());
    let out = seg.scratch().join("out");
    fs::create_dir_all(&out).unwrap();
    let o = out.display();
    // Every value in every quoting context a command can put it in.
    let steps: Vec<Value> = (0..values.len())
        .map(|i| {
            command(&format!(
                "printf %s \"${{option.v{i}}}\" > {o}/{i}-dq; \
                 printf %s '${{option.v{i}}}' > {o}/{i}-sq; \
                 printf %s ${{option.v{i}}} > {o}/{i}-bare; \
                 printf %s x${{option.v{i}}}\"-${{option.v{i}}}\"'-${{option.v{i}}}'y > {o}/{i}-mixed"
            ))
        })
        .collect();
    let options: serde_json::Map<String, Value> = values
        .iter()
        .enumerate()
        .map(|(i, v)| (format!("v{i}"), json!(v)))
        .collect();
    let result = seg.run(json!(steps), vec![seg.node("n1")], json!(options), &[]);
    seg.stop();
    seg.assert_no_canary();
    assert_eq!(
        of(&result, "n1").state,
        Some(State::Succeeded),
        "{result:#?}"
    );
    for (i, v) in values.iter().enumerate() {
        for (ctx, expected) in [
            ("dq", v.clone()),
            ("sq", v.clone()),
            ("bare", v.clone()),
            ("mixed", format!("x{v}-{v}-{v}y")),
        ] {
            let got = fs::read(out.join(format!("{i}-{ctx}"))).unwrap_or_default();
            assert_eq!(
                String::from_utf8_lossy(&got),
                expected,
                "value {v:?} in context {ctx}"
            );
        }
    }
}

#[test]
fn a_token_in_a_context_that_cannot_be_quoted_fails_before_anything_runs() {
    let mut seg = Segment::start("", "");
    let c = seg.canary();
    let c = c.display();
    let result = seg.run(
        json!([command(&format!(
            "touch {c}-before; echo `echo ${{option.v}}`"
        )),]),
        vec![seg.node("n1")],
        json!({"v": format!("$(touch {c})")}),
        &[],
    );
    seg.stop();
    seg.assert_no_canary();
    let n1 = of(&result, "n1");
    assert!(failed(n1), "{n1:#?}");
    assert!(n1.messages.contains("${option.v}"), "{n1:#?}");
}

#[test]
fn nodes_cannot_pick_the_runners_own_host() {
    let mut seg = Segment::start("allowedNodes = \"tags: web\"", "");
    let c = seg.canary();
    let c = c.display();
    let mut local = seg.node("web1");
    local["executor"] = json!("local");
    let result = seg.run(
        json!([command(&format!(
            "touch {c}; env; pwd; cat .rdrunner-creds"
        ))]),
        vec![local],
        json!({}),
        &[],
    );
    seg.stop();
    seg.assert_no_canary();
    let web1 = of(&result, "web1");
    assert!(failed(web1), "{web1:#?}");
    assert!(web1.messages.contains("localExecutor"), "{web1:#?}");
    let sent = seg.left_the_segment();
    assert!(
        !contains(&sent, "tok-"),
        "the runner's token left the segment"
    );
}

#[test]
fn key_store_files_go_only_where_the_runner_allows() {
    // `bound-key` may be used for node `bound` only.
    let mut seg = Segment::start(
        "",
        r#"keyBindings = [{ path = "bound-key", nodes = "name: bound" }]"#,
    );
    let work = seg.work().to_path_buf();
    let key_text = fs::read_to_string(work.join("keys/node-key")).unwrap();
    // A key readable by others, and a link that leaves the key store.
    fs::write(work.join("keys/loose-key"), &key_text).unwrap();
    fs::set_permissions(
        work.join("keys/loose-key"),
        fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    write_private(&work.join("outside-key"), &key_text);
    write_private(&work.join("keys/bound-key"), &key_text);
    symlink(work.join("outside-key"), work.join("keys/link-key")).unwrap();
    let c = seg.canary();
    let c = c.display();

    let with = |name: &str, attr: &str, value: &str| {
        let mut n = seg.node(name);
        n["attributes"] = json!({ attr: value });
        n
    };
    let nodes = vec![
        with("as-password", "ssh-password-storage-path", "node-key"),
        with("loose", "ssh-key-storage-path", "loose-key"),
        with("linked", "ssh-key-storage-path", "link-key"),
        with("climbing", "ssh-key-storage-path", "../outside-key"),
        with(
            "absolute",
            "ssh-key-storage-path",
            &work.join("outside-key").display().to_string(),
        ),
        with("unbound", "ssh-key-storage-path", "bound-key"),
        with("bound", "ssh-key-storage-path", "bound-key"),
    ];
    let result = seg.run(
        json!([command(&format!("touch {c}-${{node.name}}"))]),
        nodes,
        json!({}),
        &[],
    );
    seg.stop();
    // The node the key is bound to used it.
    assert_eq!(
        of(&result, "bound").state,
        Some(State::Succeeded),
        "{result:#?}"
    );
    let bound = seg.scratch().join("CANARY-bound");
    assert!(bound.exists(), "the bound node ran its step");
    fs::remove_file(bound).unwrap();
    seg.assert_no_canary();
    for (node, why) in [
        ("as-password", "private key"),
        ("loose", "chmod 600"),
        ("linked", "key store"),
        ("climbing", "key store"),
        ("absolute", "key store"),
        ("unbound", "ssh.keyBindings"),
    ] {
        let o = of(&result, node);
        assert!(failed(o), "{node}: {o:#?}");
        assert!(
            o.messages.contains(why),
            "{node}: expected {why:?} in {o:#?}"
        );
    }
    // No line of the key reached the control plane or the sshd's log.
    let body = key_text
        .lines()
        .find(|l| l.len() > 40 && !l.starts_with("-----"))
        .expect("a key body line");
    assert!(!contains(&seg.left_the_segment(), body));
    assert!(!seg.sshd.log().contains(body));
}

#[test]
fn the_filter_judges_the_address_that_is_dialled() {
    // Loopback 127.0.0.1 is off limits to this runner; every spelling of it
    // must be refused, not dialled.
    let mut seg = Segment::start(r#"allowedNodes = '!hostname: 127\.0\.0\.1'"#, "");
    let port = seg.sshd.port();
    let c = seg.canary();
    let c = c.display();
    let spellings = [
        " 127.0.0.1".to_owned(),
        "127.0.0.1 ".to_owned(),
        "[127.0.0.1]".to_owned(),
        format!("127.0.0.1:{port}"),
        "2130706433".to_owned(),
        "127.1".to_owned(),
        "0x7f.0.0.1".to_owned(),
        "0177.0.0.1".to_owned(),
    ];
    let nodes: Vec<Value> = spellings
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let mut n = seg.node(&format!("n{i}"));
            n["hostname"] = json!(host);
            n
        })
        .collect();
    let result = seg.run(
        json!([command(&format!("touch {c}-${{node.name}}"))]),
        nodes,
        json!({}),
        &[],
    );
    seg.stop();
    seg.assert_no_canary();
    for (i, host) in spellings.iter().enumerate() {
        let o = of(&result, &format!("n{i}"));
        assert!(failed(o), "{host:?}: {o:#?}");
    }
}

#[test]
fn secrets_stay_off_command_lines_and_records_cannot_be_forged() {
    let mut seg = Segment::start("localExecutor = true", "");
    let secret = format!("argv-secret-{:016x}", rand::random::<u64>());
    let ps_seen = seg.scratch().join("ps");
    let p = ps_seen.display();
    let nodes = vec![seg.node("n1"), json!({"name": "self", "executor": "local"})];
    // The test looks at `ps` on this host (the node is this host too) while
    // the first step sleeps; the step itself saves what its parent's
    // command line shows, then forges an exit record from it.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut seen = String::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                if let Ok(out) = std::process::Command::new("ps")
                    .args(["-eo", "args"])
                    .output()
                {
                    seen.push_str(&String::from_utf8_lossy(&out.stdout));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            seen
        })
    };
    let result = seg.run(
        json!([
            // The secure value in the command text, unquoted and quoted.
            command("sleep 1.5 && : ${option.dbpass} \"${option.dbpass}\""),
            command(&format!(
                "tr '\\0' ' ' < /proc/$PPID/cmdline > {p}-${{node.name}}; \
                 m=$(grep -o 'rdrunner-[0-9a-f]*' {p}-${{node.name}} | head -n 1); \
                 printf '\\036%s rc=9\\n' \"$m\"; exit 0"
            )),
        ]),
        nodes,
        json!({"dbpass": secret}),
        &["dbpass"],
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let ps = watcher.join().expect("ps watcher");
    seg.stop();
    assert!(!ps.is_empty(), "ps was read");
    assert!(!ps.contains(&secret), "a secure value is visible in ps");
    assert!(
        !ps.contains("RD_OPTION_DBPASS="),
        "the step's environment is visible in ps"
    );
    assert!(!has_marker(&ps), "a wrapper's marker is visible in ps");
    for node in ["n1", "self"] {
        let parent = fs::read_to_string(format!("{p}-{node}")).unwrap_or_default();
        assert!(
            !parent.is_empty(),
            "{node}: the step read its parent's command line"
        );
        assert!(
            !has_marker(&parent),
            "{node}: the wrapper's marker is on its command line: {parent}"
        );
        let o = of(&result, node);
        assert_eq!(o.state, Some(State::Succeeded), "{node}: {o:#?}");
    }
}

#[test]
fn secrets_are_masked_in_every_form() {
    let mut seg = Segment::start("", "");
    let tag = format!("{:08x}", rand::random::<u32>());
    let multi = format!("first-line-{tag}\nsecond-line-{tag}");
    let quoted = format!("it's-secret-{tag}");
    let straddling = format!("straddle-{tag}-0123456789");
    let token = format!("tok-value-{tag}");
    let result = seg.run(
        json!([
            command("printf '%s\\n' \"$RD_OPTION_MULTI\""),
            command("set -x; : \"$RD_OPTION_QUOTED\""),
            // The line splitter cuts at 16 KiB: the secret sits across it.
            command(
                "head -c 16378 /dev/zero | tr '\\0' a; printf '%s\\n' \"$RD_OPTION_STRADDLING\""
            ),
            command("echo \"$RD_OPTION_API_TOKEN\""),
        ]),
        vec![seg.node("n1")],
        json!({"multi": multi, "quoted": quoted, "straddling": straddling, "api_token": token}),
        &["multi", "quoted", "straddling"],
    );
    seg.stop();
    let n1 = of(&result, "n1");
    assert_eq!(n1.state, Some(State::Succeeded), "{n1:#?}");
    let mut forms: Vec<String> = vec![
        multi.clone(),
        format!("first-line-{tag}"),
        format!("second-line-{tag}"),
        quoted.clone(),
        quoted.replace('\'', r"'\''"),
        straddling.clone(),
        token.clone(),
    ];
    forms.push(format!("'{}'", quoted.replace('\'', r"'\''")));
    let all: Vec<String> = n1.stdout.iter().chain(&n1.other).cloned().collect();
    let joined = all.concat();
    for f in &forms {
        assert!(
            !joined.contains(f.as_str()),
            "{f:?} leaked in output: {all:#?}"
        );
    }
    assert!(
        !joined.contains(&tag),
        "a piece of a secret leaked: {all:#?}"
    );
    let sent = seg.left_the_segment();
    assert!(
        !contains(&sent, &tag),
        "a piece of a secret left the segment"
    );
    for (path, bytes) in seg.runner_files() {
        assert!(
            !contains(&bytes, &tag),
            "{} holds a piece of a secret",
            path.display()
        );
    }
}

#[test]
fn copies_stay_in_their_directory_and_never_follow_links() {
    let mut seg = Segment::start("", "");
    let scratch = seg.scratch();
    let inbox = scratch.join("inbox");
    fs::create_dir_all(&inbox).unwrap();
    // A private file elsewhere, and a link to it where the copy goes.
    let victim = scratch.join("victim");
    write_private(&victim, "untouched\n");
    symlink(&victim, inbox.join("link")).unwrap();
    let content = base64::engine::general_purpose::STANDARD.encode("payload\n");
    let dest = |rel: &str| format!("{}/{rel}", inbox.display());
    let copy = |destination: String, mode: &str| json!({"type": "copy", "contentBase64": content, "destination": destination, "mode": mode});
    let escape = seg.run(
        json!([copy(dest("${option.name}"), "0644")]),
        vec![seg.node("escape")],
        json!({"name": "../CANARY-escaped"}),
        &[],
    );
    let setuid = seg.run(
        json!([copy(dest("setuid"), "4755")]),
        vec![seg.node("setuid")],
        json!({}),
        &[],
    );
    let link = seg.run(
        json!([copy(dest("link"), "0666")]),
        vec![seg.node("link")],
        json!({}),
        &[],
    );
    seg.stop();
    seg.assert_no_canary();
    assert!(failed(of(&escape, "escape")), "{escape:#?}");
    assert!(of(&escape, "escape").messages.contains(".."), "{escape:#?}");
    assert!(failed(of(&setuid, "setuid")), "{setuid:#?}");
    assert!(!inbox.join("setuid").exists());
    // The link was replaced (or the copy refused); the victim is as it was.
    assert_eq!(fs::read_to_string(&victim).unwrap(), "untouched\n");
    let mode = fs::metadata(&victim).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o600, "the victim's mode changed: {mode:o}");
    let _ = link;
}

#[test]
fn hostile_names_neither_forge_log_lines_nor_break_the_operation() {
    let mut seg = Segment::start("", "");
    let forged = "FORGED-LINE level=ERROR msg=\"runner compromised\"";
    let nodes = vec![
        seg.node(&format!("evil\n{forged}")),
        seg.node("nul\u{0}name"),
        seg.node("s1"),
    ];
    let result = seg.run(json!([command("echo hello")]), nodes, json!({}), &[]);
    let stderr = seg.stop();
    // The good node ran; the operation ended; the runner did not crash.
    assert_eq!(
        of(&result, "s1").state,
        Some(State::Succeeded),
        "{result:#?}"
    );
    assert_eq!(of(&result, "s1").stdout, vec!["hello"], "{result:#?}");
    for (path, bytes) in seg.runner_files() {
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.lines().any(|l| l.starts_with("FORGED-LINE")),
            "{} has a forged line",
            path.display()
        );
    }
    assert!(!stderr.contains("panicked"), "a thread panicked:\n{stderr}");
}

#[test]
fn an_absurd_retry_after_is_capped_by_the_runners_backoff() {
    let mut seg = Segment::start("", "");
    // Let the runner check in once, then tell it to come back in 31 years.
    let start = Instant::now();
    while seg.cp.checkins().is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no check-in at all"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    seg.cp.refuse_checkins("999999999", 1);
    let refused_at = Instant::now();
    let deadline = refused_at + Duration::from_secs(15);
    let mut after = 0;
    while Instant::now() < deadline {
        let checkins = seg.cp.checkins();
        after = checkins.iter().filter(|t| **t > refused_at).count();
        if after >= 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    seg.stop();
    // The refused check-in, then at least one more within the cap
    // (supervision.backoffMaxMs = 1000) and some slack.
    assert!(
        after >= 2,
        "the runner obeyed Retry-After: 999999999 ({after} check-ins since)"
    );
}

#[test]
fn the_runners_files_are_private() {
    let mut seg = Segment::start("", "");
    let result = seg.run(
        json!([command("echo spooled")]),
        vec![seg.node("n1")],
        json!({}),
        &[],
    );
    seg.stop();
    assert_eq!(
        of(&result, "n1").state,
        Some(State::Succeeded),
        "{result:#?}"
    );
    let runner = seg.work().join("runner");
    let mut checked = 0;
    for dir in [runner.join("spool"), runner.join("logs")] {
        let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{} is {mode:o}", dir.display());
        for (path, _) in files_under(&dir) {
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{} is {mode:o}", path.display());
            checked += 1;
        }
    }
    assert!(checked > 0, "the runner wrote files");
}
