//! One scenario's world: a harness (the control plane), a TCP fault proxy
//! in front of it, a runner registered on it, and the runner process (a
//! child, see `child`), plus what the scenario submitted and the windows in
//! which it meant to stop check-ins. Everything lives in a temporary
//! directory and ends with the world.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdrunner_actors::model::{CommandStep, Dispatch, ExecutorKind, Node, Step};
use rdrunner_harness::invariants::Window;
use rdrunner_harness::proxy::FaultProxy;
use rdrunner_harness::sshd::{SshdOptions, TestSshd};
use rdrunner_harness::{
    AdminClient, Cadence, CreateRunner, Harness, HarnessConfig, SubmitExecution,
};

use super::child::{ChildConfig, ChildFailPoint, ChildSsh, ChildStats, EXIT_ESCALATED};

/// The check-in cadence every scenario runs with: a long poll of 1 s.
pub const LONG_POLL_MS: u64 = 1000;
/// The runner's retry delay cap in chaos runs.
pub const BACKOFF_MAX_MS: u64 = 2000;

/// One submitted execution (one operation: a single runner covers every node).
#[derive(Debug, Clone)]
pub struct Submitted {
    pub execution_id: u64,
    pub nodes: Vec<String>,
    /// The lines each node's step prints, in order.
    pub lines: Lines,
    pub expect: Expect,
}

/// The lines a step prints, made when they are compared (a flood's would
/// not fit in memory twice).
#[derive(Debug, Clone, Copy)]
pub enum Lines {
    /// `line 1` .. `line N`.
    Numbered(u64),
    /// N lines of `width` bytes ending in `line i`.
    Flood(u64, usize),
}

impl Lines {
    pub fn expand(self) -> Vec<String> {
        match self {
            Lines::Numbered(n) => (1..=n).map(|i| format!("line {i}")).collect(),
            Lines::Flood(n, width) => {
                let pad = "x".repeat(width.saturating_sub(12));
                (1..=n).map(|i| format!("{pad} line {i}")).collect()
            }
        }
    }
}

/// The terminal state an operation must reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Succeeded, every node's lines complete.
    Succeed,
    /// Aborted (or succeeded if it ended before the abort, with complete lines).
    Abort,
    /// Timed out: every node timed out.
    TimeOut,
    /// Succeeded; or failed where each failed node failed by a fail point
    /// panic before its step started (no lines) and the others succeeded.
    SucceedOrNodePanic,
    /// Succeeded; or ended by a runner restart: failed by the restarted
    /// runner, or aborted by the one going down (lines a prefix).
    SucceedOrRestarted,
}

/// A running runner process.
pub struct RunnerProcess {
    child: Child,
    stats: Arc<Mutex<ChildStats>>,
    peak_rss_kb: Arc<Mutex<u64>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl RunnerProcess {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

pub struct World {
    pub harness: Harness,
    pub admin: AdminClient,
    pub proxy: FaultProxy,
    pub runner_id: String,
    token: String,
    pub dir: tempfile::TempDir,
    pub marker: String,
    pub submitted: Vec<Submitted>,
    pub windows: Vec<Window>,
    pub runner: Option<RunnerProcess>,
    pub restarts: u64,
    pub escalations: u64,
    pub peak_rss_kb: u64,
    pub breaks: Vec<String>,
    pub ssh: Option<ChildSsh>,
    /// Child processes started (for the row), and how each ended.
    pub exits: Vec<Option<i32>>,
    /// The private sshd of SSH scenarios and the fault proxy in front of it.
    pub sshd: Option<(TestSshd, FaultProxy)>,
    /// Keep the directory when the world ends (`--keep`).
    pub keep: bool,
}

impl World {
    /// A harness with the chaos cadence, a proxy in front of it, a runner
    /// with `nodes` local nodes (`n1`..) in project `chaos`.
    pub async fn new(
        scenario: &str,
        seed: u64,
        nodes: usize,
        breaks: &[String],
    ) -> anyhow::Result<World> {
        let harness = Harness::start(HarnessConfig {
            cadence: Cadence {
                poll_interval_ms: LONG_POLL_MS,
                long_poll_ms: LONG_POLL_MS,
                report_interval_ms: 100,
                report_batch_max: 1000,
                lease_ms: 3000,
            },
            ..HarnessConfig::default()
        })?;
        let admin = harness.admin();
        let proxy = FaultProxy::start(harness.addr())?;
        let creds = admin
            .create_runner(&CreateRunner {
                name: format!("chaos-{scenario}"),
                description: String::new(),
                tags: vec![],
                projects: Default::default(),
            })
            .await?;
        admin
            .assign_project(&creds.runner_id, "chaos", ".*")
            .await?;
        let inventory: Vec<Node> = (1..=nodes)
            .map(|i| {
                let mut n = Node::new(format!("n{i}"), "127.0.0.1");
                n.executor = ExecutorKind::Local;
                n
            })
            .collect();
        admin.set_nodes("chaos", &inventory).await?;
        let dir = tempfile::Builder::new()
            .prefix("rdrunner-chaos-")
            .tempdir()?;
        Ok(World {
            harness,
            admin,
            proxy,
            runner_id: creds.runner_id,
            token: creds.token,
            marker: format!("chaosmark{seed:x}{}", scenario.replace('-', "")),
            dir,
            submitted: Vec::new(),
            windows: Vec::new(),
            runner: None,
            restarts: 0,
            escalations: 0,
            peak_rss_kb: 0,
            breaks: breaks.to_vec(),
            ssh: None,
            exits: Vec::new(),
            sshd: None,
            keep: false,
        })
    }

    pub fn spool_dir(&self) -> PathBuf {
        self.dir.path().join("spool")
    }

    /// Starts a private sshd behind a fault proxy of its own and adds
    /// `count` SSH nodes (`s1`..) reaching it through the proxy, with the
    /// runner's key store and known_hosts set up for them.
    pub async fn add_ssh_nodes(
        &mut self,
        count: usize,
        call_timeout_s: u64,
    ) -> anyhow::Result<Vec<String>> {
        let sshd_dir = self.dir.path().join("sshd");
        std::fs::create_dir_all(&sshd_dir)?;
        let sshd = TestSshd::start_with(
            &sshd_dir,
            SshdOptions {
                password_auth: false,
                // Every node step is a connection of its own, all at once.
                extra_config: vec!["MaxStartups 200".into(), "MaxSessions 200".into()],
                ..Default::default()
            },
        )?;
        let proxy = FaultProxy::start(format!("127.0.0.1:{}", sshd.port()).parse()?)?;
        let keys = self.dir.path().join("keys");
        std::fs::create_dir_all(&keys)?;
        std::fs::copy(sshd.client_key(), keys.join("node_key"))?;
        let public = sshd.host_public_key()?;
        let mut parts = public.split_whitespace();
        let (kind, blob) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let known_hosts = keys.join("known_hosts");
        std::fs::write(
            &known_hosts,
            format!("[127.0.0.1]:{} {kind} {blob}\n", proxy.addr().port()),
        )?;
        self.ssh = Some(ChildSsh {
            call_timeout_s,
            key_store: keys,
            known_hosts_file: known_hosts,
            user: sshd.user().to_owned(),
        });
        let mut inventory = self.admin.nodes("chaos").await?;
        let mut names = Vec::new();
        for i in 1..=count {
            let mut n = Node::new(format!("s{i}"), "127.0.0.1");
            n.port = Some(proxy.addr().port());
            n.username = Some(sshd.user().to_owned());
            n.executor = ExecutorKind::Ssh;
            n.attributes
                .insert(rdrunner::ssh::KEY_ATTRIBUTE.to_owned(), "node_key".into());
            names.push(n.name.clone());
            inventory.push(n);
        }
        self.admin.set_nodes("chaos", &inventory).await?;
        self.sshd = Some((sshd, proxy));
        Ok(names)
    }

    /// Starts the runner process (through the proxy) with `fail_points`.
    pub fn start_runner(&mut self, fail_points: Vec<ChildFailPoint>) -> anyhow::Result<()> {
        let config = ChildConfig {
            server_url: format!("http://{}", self.proxy.addr()),
            runner_id: self.runner_id.clone(),
            token: self.token.clone(),
            spool_dir: self.spool_dir(),
            log_dir: self.dir.path().to_path_buf(),
            max_running: 50,
            request_timeout_ms: 5000,
            backoff_max_ms: BACKOFF_MAX_MS,
            kill_grace_ms: 1000,
            fail_points,
            breaks: self.breaks.clone(),
            ssh: self.ssh.clone(),
        };
        // Panics fired on purpose would drown the table: the runner's
        // stderr goes to a file beside its log.
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("runner.stderr"))?;
        let mut child = Command::new(std::env::current_exe()?)
            .arg("--runner-child")
            .arg(serde_json::to_string(&config)?)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()?;
        let pid = child.id();
        let stdout = child.stdout.take().expect("piped");
        let stats = Arc::new(Mutex::new(ChildStats::default()));
        let peak = Arc::new(Mutex::new(0u64));
        let (s2, p2) = (stats.clone(), peak.clone());
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(json) = line.strip_prefix("STATS ") {
                    if let Ok(st) = serde_json::from_str::<ChildStats>(json) {
                        *s2.lock().unwrap_or_else(|e| e.into_inner()) = st;
                    }
                }
                // VmHWM is the process's own peak; sampling it with every
                // stats line (100 ms) keeps the last value before the end.
                if let Some(kb) = vm_hwm_kb(pid) {
                    let mut p = p2.lock().unwrap_or_else(|e| e.into_inner());
                    *p = (*p).max(kb);
                }
            }
        });
        self.runner = Some(RunnerProcess {
            child,
            stats,
            peak_rss_kb: peak,
            reader: Some(reader),
        });
        Ok(())
    }

    /// Folds a finished runner process into the totals.
    fn account(&mut self, mut p: RunnerProcess, code: Option<i32>) {
        if let Some(r) = p.reader.take() {
            let _ = r.join();
        }
        let stats = p.stats.lock().unwrap_or_else(|e| e.into_inner()).clone();
        self.restarts += stats.restarts;
        self.escalations += u64::from(code == Some(EXIT_ESCALATED)).max(stats.escalations);
        self.peak_rss_kb = self
            .peak_rss_kb
            .max(*p.peak_rss_kb.lock().unwrap_or_else(|e| e.into_inner()));
        self.exits.push(code);
    }

    /// Waits (bounded) for the runner process to end by itself; answers its
    /// exit code, or `None` if it is still running after `within`.
    pub async fn wait_runner_exit(&mut self, within: Duration) -> Option<i32> {
        let start = Instant::now();
        loop {
            let done = match self.runner.as_mut() {
                Some(p) => p.child.try_wait().ok().flatten(),
                None => return None,
            };
            if let Some(status) = done {
                let p = self.runner.take().expect("present");
                self.account(p, status.code());
                return status.code();
            }
            if start.elapsed() >= within {
                return None;
            }
            actix_rt::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `kill -9` of the runner process.
    pub fn kill_runner(&mut self) {
        if let Some(mut p) = self.runner.take() {
            let _ = p.child.kill();
            let status = p.child.wait().ok();
            self.account(p, status.and_then(|s| s.code()));
        }
    }

    /// Asks the runner to drain (closes its stdin) and waits for it (bounded).
    pub async fn stop_runner(&mut self) {
        if let Some(p) = self.runner.as_mut() {
            drop(p.child.stdin.take());
        }
        if self
            .wait_runner_exit(Duration::from_secs(30))
            .await
            .is_none()
        {
            self.kill_runner();
        }
    }

    /// The step every node runs: prints `line 1` .. `line N` on stdout,
    /// sleeping `pause_s` after every `every` lines; the marker makes its
    /// processes findable with `pgrep -f`.
    pub fn paced_command(&self, n: u64, every: u64, pause_s: f64) -> String {
        format!(
            ": {m}; i=1; while [ $i -le {n} ]; do echo \"line $i\"; if [ $((i % {every})) -eq 0 ]; then sleep {pause_s}; fi; i=$((i+1)); done",
            m = self.marker
        )
    }

    /// A step printing `n` lines of about `width` bytes as fast as it can.
    pub fn flood_command(&self, n: u64, width: usize) -> String {
        format!(
            ": {m}; awk 'BEGIN {{ p = sprintf(\"%{w}s\", \"\"); gsub(/ /, \"x\", p); for (i = 1; i <= {n}; i++) printf \"%s line %d\\n\", p, i }}'",
            m = self.marker,
            w = width.saturating_sub(12)
        )
    }

    /// Submits one execution of `command` on `nodes`.
    pub async fn submit(
        &mut self,
        nodes: &[String],
        command: String,
        lines: Lines,
        expect: Expect,
        step_timeout_ms: Option<u64>,
    ) -> anyhow::Result<u64> {
        let filter = format!("name: {}", nodes.join("|"));
        let mut req = SubmitExecution::new(vec![Step::Command(CommandStep { command })], filter);
        req.dispatch = Dispatch {
            thread_count: nodes.len() as u32,
            keep_going: true,
            ..Dispatch::default()
        };
        req.step_timeout_ms = step_timeout_ms;
        let id = self.admin.submit_execution("chaos", &req).await?;
        self.submitted.push(Submitted {
            execution_id: id,
            nodes: nodes.to_vec(),
            lines,
            expect,
        });
        Ok(id)
    }

    /// Waits (bounded) until every submitted execution is claimed by the runner.
    pub async fn wait_all_running(&self, within: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < within {
            let all = self.submitted.iter().all(|s| {
                self.harness
                    .execution(s.execution_id)
                    .is_some_and(|e| e.operations.iter().all(|o| o.replica.is_some()))
            });
            if all {
                return true;
            }
            actix_rt::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// Waits (bounded) until every submitted execution is terminal.
    pub async fn wait_all_terminal(&self, within: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < within {
            if self.all_terminal() {
                return true;
            }
            actix_rt::time::sleep(Duration::from_millis(100)).await;
        }
        self.all_terminal()
    }

    fn all_terminal(&self) -> bool {
        self.submitted.iter().all(|s| {
            self.harness
                .execution(s.execution_id)
                .is_some_and(|e| e.state.is_terminal())
        })
    }

    /// Whether every node of every submitted execution has printed a line.
    pub fn every_node_printed(&self) -> bool {
        self.submitted.iter().all(|s| {
            let Some(exec) = self.harness.execution(s.execution_id) else {
                return false;
            };
            exec.operations.iter().all(|op| {
                let reports = self.harness.reports(&op.id);
                s.nodes
                    .iter()
                    .all(|n| !rdrunner_harness::invariants::node_lines(&reports, n).is_empty())
            })
        })
    }

    /// Pids of processes whose command line holds this world's marker.
    pub fn marked_processes(&self) -> Vec<u32> {
        let out = Command::new("pgrep").arg("-f").arg(&self.marker).output();
        match out {
            Ok(o) => String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .filter(|pid| *pid != std::process::id())
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(mut p) = self.runner.take() {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
        // Steps of this world that outlived it (a failed check): end them,
        // by pid, so the next scenario starts clean.
        for pid in self.marked_processes() {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
        }
        if self.keep {
            let dir = std::mem::replace(
                &mut self.dir,
                tempfile::tempdir().expect("a temporary directory"),
            );
            let _ = dir.keep();
        }
    }
}

/// Peak resident set size of `pid` in KiB (`VmHWM` in /proc).
pub fn vm_hwm_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
