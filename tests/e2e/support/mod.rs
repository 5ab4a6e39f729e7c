//! Shared setup of the end-to-end tests: the reference control plane on a
//! free port, a private sshd on loopback serving every node, a runner
//! created on the control plane, and the runner itself started in a working
//! directory of its own with `.rdrunner-creds` (0600) and a `runner.toml`
//! that points its key store, known_hosts, spool and logs at that directory.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rdrunner_actors::model::Node;
use rdrunner_harness::sshd::TestSshd;
use rdrunner_harness::{
    AdminClient, Cadence, CreateRunner, ExecutionStatus, Harness, HarnessConfig, OutputEntry,
};

pub const PROJECT: &str = "e2e";

/// One control plane, one sshd, one runner registered for `PROJECT`.
pub struct World {
    /// The runner's working directory (and the nodes' scratch space).
    pub dir: tempfile::TempDir,
    /// `None` only while [`World::control_plane_outage`] has it stopped.
    harness: Option<Harness>,
    /// What the harness was started with, to start it again.
    harness_config: HarnessConfig,
    pub sshd: TestSshd,
    pub runner_id: String,
    pub nodes: Vec<Node>,
}

impl World {
    /// Sets everything up; every name in `node_names` is an SSH node served
    /// by the same sshd.
    pub async fn new(node_names: &[&str]) -> World {
        World::with_harness(node_names, |_, _| {}).await
    }

    /// As [`World::new`], with `adjust` changing the harness's
    /// configuration first (it gets the working directory too).
    pub async fn with_harness(
        node_names: &[&str],
        adjust: impl FnOnce(&mut HarnessConfig, &Path),
    ) -> World {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut harness_config = HarnessConfig {
            // A brisk cadence keeps the tests fast.
            cadence: Cadence {
                poll_interval_ms: 500,
                long_poll_ms: 500,
                report_interval_ms: 50,
                ..Cadence::default()
            },
            ..HarnessConfig::default()
        };
        adjust(&mut harness_config, dir.path());
        let harness = Harness::start(harness_config.clone()).expect("harness starts");
        // Started again on the same address with the same admin token.
        harness_config.listen = harness.addr();
        harness_config.admin_token = Some(harness.admin_token().to_owned());
        let sshd = TestSshd::start(&dir.path().join("sshd")).expect("private sshd starts");
        let admin = harness.admin();
        let created = admin
            .create_runner(&CreateRunner {
                name: "e2e".into(),
                ..CreateRunner::default()
            })
            .await
            .expect("create runner");
        admin
            .assign_project(&created.runner_id, PROJECT, ".*")
            .await
            .expect("assign project");
        let nodes: Vec<Node> = node_names
            .iter()
            .map(|name| {
                let mut n = Node::new(*name, sshd.host());
                n.port = Some(sshd.port());
                n.username = Some(sshd.user().to_owned());
                n.attributes =
                    BTreeMap::from([("ssh-key-storage-path".to_owned(), "node-key".to_owned())]);
                n
            })
            .collect();
        admin.set_nodes(PROJECT, &nodes).await.expect("set nodes");

        let work = dir.path();
        write_private(&work.join(".rdrunner-creds"), &created.credentials);
        fs::create_dir_all(work.join("keys")).unwrap();
        fs::copy(sshd.client_key(), work.join("keys/node-key")).unwrap();
        fs::write(
            work.join("known_hosts"),
            format!("{}\n", sshd.known_hosts_line().unwrap()),
        )
        .unwrap();
        fs::create_dir_all(work.join("remote-tmp")).unwrap();
        fs::write(work.join("runner.toml"), runner_toml(work)).unwrap();
        World {
            dir,
            harness: Some(harness),
            harness_config,
            sshd,
            runner_id: created.runner_id,
            nodes,
        }
    }

    pub fn harness(&self) -> &Harness {
        self.harness.as_ref().expect("the control plane is running")
    }

    pub fn admin(&self) -> AdminClient {
        self.harness().admin()
    }

    /// Stops the control plane, awaits `while_down`, then starts it again
    /// on the same address (from its state file, when the world was given
    /// one: otherwise it forgets the runner).
    pub async fn control_plane_outage<T>(
        &mut self,
        while_down: impl std::future::Future<Output = T>,
    ) -> T {
        if let Some(h) = self.harness.take() {
            h.stop();
        }
        let out = while_down.await;
        self.harness =
            Some(Harness::start(self.harness_config.clone()).expect("harness starts again"));
        out
    }

    pub fn work(&self) -> &Path {
        self.dir.path()
    }

    /// Appends `text` to the runner's `runner.toml` (before it starts).
    pub fn append_runner_toml(&self, text: &str) {
        let path = self.work().join("runner.toml");
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open runner.toml");
        f.write_all(text.as_bytes()).expect("append to runner.toml");
    }

    /// A directory the node steps may write markers to (the nodes are this
    /// machine, reached over SSH).
    pub fn scratch(&self) -> PathBuf {
        let d = self.work().join("scratch");
        fs::create_dir_all(&d).unwrap();
        d
    }

    pub fn spool_dir(&self) -> PathBuf {
        self.work().join("runner/spool")
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.work().join("runner/logs")
    }

    /// Waits until `pred` holds for the execution's output, polling the
    /// output cursor, for at most `timeout`.
    pub async fn wait_output(
        &self,
        exec_id: u64,
        timeout: Duration,
        pred: impl Fn(&[OutputEntry]) -> bool,
    ) -> Vec<OutputEntry> {
        let admin = self.admin();
        let start = Instant::now();
        let mut seen = Vec::new();
        let mut after = 0;
        loop {
            let page = admin.output(exec_id, after).await.expect("output");
            after = page.next;
            seen.extend(page.entries);
            if pred(&seen) {
                return seen;
            }
            assert!(
                start.elapsed() < timeout,
                "output condition not met within {timeout:?}; output so far: {seen:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn wait_terminal(&self, exec_id: u64) -> ExecutionStatus {
        self.admin()
            .wait_terminal(exec_id, Duration::from_secs(30))
            .await
            .expect("execution ends within 30 s")
    }
}

/// The runner's configuration: everything under the working directory,
/// debug logging (the most a log could leak), quick cadence and aborts.
pub fn runner_toml(work: &Path) -> String {
    let w = work.display();
    format!(
        r#"[runner]
hostname = "e2e-host"
pollIntervalMs = 500
reportIntervalMs = 50
killGraceMs = 1000
drainTimeoutMs = 2000
# Some tests run a node on the runner's own host as well.
localExecutor = true

[ssh]
keyStore = "{w}/keys"
knownHostsPolicy = "strict"
knownHostsFile = "{w}/known_hosts"
acceptedHostsFile = "{w}/accepted_hosts"
connectTimeoutMs = 5000
callTimeoutMs = 10000
keepaliveIntervalMs = 1000
remoteTmpDir = "{w}/remote-tmp"

[spool]
dir = "{w}/runner/spool"
fsync = "never"

[log]
dir = "{w}/runner/logs"
level = "debug"
stderr = true
"#
    )
}

/// Writes `text` to a new file at `path`, mode 0600.
pub fn write_private(path: &Path, text: &str) {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .expect("write the credentials file");
}

/// Every file under `dir`, recursively, with its bytes.
pub fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else if let Ok(bytes) = fs::read(&p) {
            out.push((p, bytes));
        }
    }
    out
}

/// Whether `needle` occurs in `hay`.
pub fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Processes whose command line contains `pattern` (`pgrep -f`).
pub fn pgrep(pattern: &str) -> Vec<String> {
    let out = std::process::Command::new("pgrep")
        .arg("-af")
        .arg(pattern)
        .output()
        .expect("run pgrep");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

pub mod hostile;
pub mod runner;
pub mod webdriver;

pub use runner::Runner;
