//! Shared setup of the SSH executor tests: a private sshd, a key store with
//! its client key, a known_hosts file that knows it, and helpers to run one
//! node step and collect what it printed.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdrunner::ssh::{KnownHostsPolicy, SshExecutor, SshSettings};
use rdrunner_actors::model::{CommandStep, ExecutionInfo, Node, Step, Stream};
use rdrunner_actors::{AbortSignal, ExecutorError, NodeExecutor, StepOutcome, StepRequest};
use rdrunner_harness::sshd::{SshdOptions, TestSshd};

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub sshd: TestSshd,
    pub settings: SshSettings,
}

/// One line the step printed, with when it arrived.
#[derive(Debug, Clone)]
pub struct Line {
    pub stream: Stream,
    pub text: String,
    pub at: Instant,
}

pub struct Run {
    pub result: Result<StepOutcome, ExecutorError>,
    pub lines: Vec<Line>,
}

impl Run {
    pub fn stdout(&self) -> Vec<String> {
        self.texts(Stream::Stdout)
    }
    pub fn stderr(&self) -> Vec<String> {
        self.texts(Stream::Stderr)
    }
    fn texts(&self, s: Stream) -> Vec<String> {
        self.lines
            .iter()
            .filter(|l| l.stream == s)
            .map(|l| l.text.clone())
            .collect()
    }
    pub fn outcome(&self) -> &StepOutcome {
        match &self.result {
            Ok(o) => o,
            Err(e) => panic!("step failed: {e:?}; lines: {:?}", self.lines),
        }
    }
    pub fn error(&self) -> &ExecutorError {
        match &self.result {
            Ok(o) => panic!(
                "step succeeded unexpectedly: {o:?}; lines: {:?}",
                self.lines
            ),
            Err(e) => e,
        }
    }
}

impl Fixture {
    pub fn new() -> Fixture {
        Self::with_options(SshdOptions::default())
    }

    pub fn with_options(options: SshdOptions) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let sshd = TestSshd::start_with(&dir.path().join("sshd"), options).expect("start sshd");
        let keys = dir.path().join("keys");
        fs::create_dir_all(&keys).unwrap();
        fs::copy(sshd.client_key(), keys.join("id")).unwrap();
        let known_hosts = dir.path().join("known_hosts");
        fs::write(
            &known_hosts,
            format!("{}\n", sshd.known_hosts_line().unwrap()),
        )
        .unwrap();
        let remote_tmp = dir.path().join("remote-tmp");
        fs::create_dir_all(&remote_tmp).unwrap();
        let settings = SshSettings {
            key_store: keys,
            allowed_nodes: None,
            key_bindings: Vec::new(),
            known_hosts_policy: KnownHostsPolicy::Strict,
            known_hosts_file: known_hosts,
            accepted_hosts_file: dir.path().join("accepted_hosts"),
            default_user: sshd.user().to_owned(),
            default_port: 22,
            connect_timeout: Duration::from_secs(5),
            call_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(1),
            use_agent: false,
            remote_tmp_dir: remote_tmp.display().to_string(),
            reattach: true,
            reattach_window: Duration::from_secs(60),
        };
        Fixture {
            dir,
            sshd,
            settings,
        }
    }

    pub fn remote_tmp(&self) -> PathBuf {
        PathBuf::from(&self.settings.remote_tmp_dir)
    }

    /// The sshd as a node, logging in with the key store's `id`.
    pub fn node(&self) -> Node {
        let mut n = Node::new("node-1", self.sshd.host());
        n.port = Some(self.sshd.port());
        n.username = Some(self.sshd.user().to_owned());
        n.attributes = BTreeMap::from([("ssh-key-storage-path".to_owned(), "id".to_owned())]);
        n
    }

    pub fn executor(&self) -> SshExecutor {
        SshExecutor::new(self.settings.clone(), logger())
    }

    pub fn run_command(&self, command: &str) -> Run {
        self.run(
            request(self.node(), command_step(command)),
            &AbortSignal::new(),
        )
    }

    pub fn run(&self, req: StepRequest, abort: &AbortSignal) -> Run {
        run_with(&self.executor(), &req, abort)
    }
}

pub fn run_with(exec: &SshExecutor, req: &StepRequest, abort: &AbortSignal) -> Run {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink_lines = lines.clone();
    let mut sink = move |stream: Stream, text: String| {
        sink_lines.lock().unwrap().push(Line {
            stream,
            text,
            at: Instant::now(),
        })
    };
    let result = exec.execute(req, &mut sink, abort);
    let lines = lines.lock().unwrap().clone();
    Run { result, lines }
}

pub fn command_step(command: &str) -> Step {
    Step::Command(CommandStep {
        command: command.to_owned(),
    })
}

pub fn request(node: Node, step: Step) -> StepRequest {
    StepRequest {
        op_id: "op-test".to_owned(),
        execution: ExecutionInfo::default(),
        node,
        step_index: 1,
        step,
        env: Vec::new(),
        kill_grace: Duration::from_secs(1),
    }
}

pub fn logger() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

/// A logger that keeps `LEVEL message` of every record, for assertions.
pub fn capturing_logger() -> (slog::Logger, Arc<Mutex<Vec<String>>>) {
    struct Capture(Arc<Mutex<Vec<String>>>);
    impl slog::Drain for Capture {
        type Ok = ();
        type Err = slog::Never;
        fn log(&self, r: &slog::Record, _: &slog::OwnedKVList) -> Result<(), slog::Never> {
            self.0
                .lock()
                .unwrap()
                .push(format!("{} {}", r.level().as_short_str(), r.msg()));
            Ok(())
        }
    }
    let records = Arc::new(Mutex::new(Vec::new()));
    let log = slog::Logger::root(slog::Drain::fuse(Capture(records.clone())), slog::o!());
    (log, records)
}

/// A marker no other test uses, for finding this test's processes.
pub fn unique_marker(tag: &str) -> String {
    format!("rdm{tag}{:x}", rand::random::<u64>())
}

/// Pids of processes whose command line contains `marker`.
pub fn processes_with(marker: &str) -> Vec<String> {
    let out = std::process::Command::new("pgrep")
        .arg("-f")
        .arg(marker)
        .output()
        .expect("pgrep");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Waits (bounded) until no process has `marker` in its command line; the
/// kernel may take a moment to reap killed processes.
pub fn wait_no_processes(marker: &str, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    loop {
        let left = processes_with(marker);
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Writes `content` to `rel` in the fixture's key store with mode 0600.
pub fn write_secret(f: &Fixture, rel: &str, content: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = f.settings.key_store.join(rel);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(&path, content).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// A loopback port that accepts TCP connections and never speaks: a node
/// there shows whether the executor connected at all.
pub struct Listener(std::net::TcpListener);

impl Listener {
    pub fn new() -> Listener {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        Listener(l)
    }

    /// `node` pointed at this port.
    pub fn node(&self, mut node: Node) -> Node {
        node.hostname = "127.0.0.1".to_owned();
        node.port = Some(self.0.local_addr().unwrap().port());
        node
    }

    /// Whether anything connected so far.
    pub fn was_dialled(&self) -> bool {
        self.0.accept().is_ok()
    }
}
