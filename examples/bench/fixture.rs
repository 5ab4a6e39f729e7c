//! What every benchmark stands on: the private sshd serving the nodes, the
//! reference control plane with one runner assigned to the `bench` project,
//! and the runner itself as a process of its own: the release binary when it
//! runs, else this benchmark program re-executed as an in-process runtime.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use rdrunner_actors::model::{ExecutorKind, Node};
use rdrunner_harness::sshd::{SshdOptions, TestSshd};
use rdrunner_harness::{AdminClient, Cadence, CreateRunner, Harness, HarnessConfig};

/// The project every benchmark submits to.
pub const PROJECT: &str = "bench";

/// The name of the key in the runner's key store.
const KEY_NAME: &str = "node-key";

/// Hidden flag: run as the runner child (see [`RunnerKind::InProcess`]).
pub const CHILD_FLAG: &str = "--runner-child";

/// The private sshd and what a client needs to log in to it. Every node is
/// this server under a name of its own (`node-001`, ...) at one of its
/// addresses ([`node_host`]), and every
/// contender (rdrunner, OpenSSH's client, Ansible) uses the same server,
/// key, known_hosts entry and server settings.
pub struct Nodes {
    pub sshd: TestSshd,
    pub known_hosts: PathBuf,
    pub key_store: PathBuf,
    /// Where scripts land on the nodes.
    pub remote_tmp: PathBuf,
    /// The account every contender logs in as.
    pub user: String,
    /// Why that account (shown in the output).
    pub user_note: String,
}

/// The account the nodes are logged in to when the benchmark runs as root:
/// its login shell is `/bin/sh`, so no shell startup file (a `.bashrc`
/// that runs, say, a version manager) is timed with every connection.
pub const BENCH_USER: &str = "rdrunner-bench";

/// How long every contender waits for a node's SSH handshake, in seconds:
/// one sshd on two cores serving hundreds of logins at once needs more
/// than the usual 10 s (at ~36 ms of sshd CPU per login, 1000 logins are
/// ~18 s of both cores, and the client's half of each login runs on the
/// same cores: the last of 1000 steps started at once got its banner
/// after more than 60 s), and the same bound holds for all of them (the
/// runner's `ssh.connectTimeoutMs`, OpenSSH's `ConnectTimeout`, Ansible's
/// `timeout`).
pub const CONNECT_TIMEOUT_S: u64 = 120;

/// How many loopback addresses (`127.0.0.1` up) the nodes' sshd listens
/// on. OpenSSH listens with a fixed backlog of 128 per address, so 500
/// clients dialing one address at once overflow its accept queue (the
/// kernel drops the handshakes it cannot queue, and a client waiting for
/// the banner gives up); spread over 16 addresses, 1000 fit.
pub const LISTEN_ADDRESSES: u8 = 16;

/// The address node `i` (1-based) is reached at: the nodes are spread
/// round-robin over the sshd's [`LISTEN_ADDRESSES`], the same for every
/// contender.
pub fn node_host(i: usize) -> String {
    format!("127.0.0.{}", 1 + (i - 1) % LISTEN_ADDRESSES as usize)
}

/// Server settings raised for hundreds of parallel connections; the same
/// for every contender.
pub const SSHD_SETTINGS: &[&str] = &[
    "MaxStartups 4000:30:4000",
    "MaxSessions 1000",
    "LogLevel ERROR",
];

impl Nodes {
    pub fn start(dir: &Path) -> anyhow::Result<Nodes> {
        let sshd = TestSshd::start_with(
            &dir.join("sshd"),
            SshdOptions {
                password_auth: false,
                extra_config: SSHD_SETTINGS.iter().map(|s| s.to_string()).collect(),
                also_listen_on: (2..=LISTEN_ADDRESSES)
                    .map(|i| Ipv4Addr::new(127, 0, 0, i))
                    .collect(),
            },
        )
        .context("starting the private sshd")?;
        let key_store = dir.join("keys");
        fs::create_dir_all(&key_store)?;
        fs::copy(sshd.client_key(), key_store.join(KEY_NAME))?;
        fs::set_permissions(key_store.join(KEY_NAME), fs::Permissions::from_mode(0o600))?;
        let known_hosts = dir.join("known_hosts");
        // Both host keys (libssh2 and OpenSSH prefer different ones), at
        // every address the server listens on.
        let keys = [sshd.host_public_key()?, sshd.ecdsa_host_public_key()?];
        let mut lines = String::new();
        for addr in sshd.addresses() {
            let host = addr.ip().to_string();
            for key in &keys {
                lines.push_str(&sshd.known_hosts_line_at(&host, key)?);
                lines.push('\n');
            }
        }
        fs::write(&known_hosts, lines)?;
        let remote_tmp = dir.join("remote-tmp");
        fs::create_dir_all(&remote_tmp)?;
        let (user, user_note) = match login_user() {
            Ok(u) => {
                // sshd reads authorized_keys as the user logging in.
                for d in [dir, sshd.dir()] {
                    fs::set_permissions(d, fs::Permissions::from_mode(0o755))?;
                }
                fs::set_permissions(
                    sshd.dir().join("authorized_keys"),
                    fs::Permissions::from_mode(0o644),
                )?;
                fs::set_permissions(&remote_tmp, fs::Permissions::from_mode(0o1777))?;
                (
                    u.clone(),
                    format!("login user {u} (login shell /bin/sh: no shell startup file runs)"),
                )
            }
            Err(why) => (
                sshd.user().to_owned(),
                format!(
                    "login user {} with its own login shell and startup files ({why})",
                    sshd.user()
                ),
            ),
        };
        Ok(Nodes {
            sshd,
            known_hosts,
            key_store,
            remote_tmp,
            user,
            user_note,
        })
    }

    /// `count` SSH nodes named `node-001`...
    pub fn ssh_nodes(&self, count: usize) -> Vec<Node> {
        (1..=count)
            .map(|i| {
                let mut n = Node::new(format!("node-{i:03}"), node_host(i));
                n.port = Some(self.sshd.port());
                n.username = Some(self.user.clone());
                n.tags = vec!["ssh".into()];
                n.attributes =
                    BTreeMap::from([("ssh-key-storage-path".to_owned(), KEY_NAME.to_owned())]);
                n
            })
            .collect()
    }

    /// `count` local nodes (the runner's own host) named `local-001`...,
    /// tagged `tag`.
    pub fn local_nodes(prefix: &str, count: usize, tag: &str) -> Vec<Node> {
        (1..=count)
            .map(|i| {
                let mut n = Node::local(format!("{prefix}-{i:03}"));
                n.executor = ExecutorKind::Local;
                n.tags = vec![tag.into()];
                n
            })
            .collect()
    }

    /// OpenSSH client arguments that log in to the nodes exactly as the
    /// runner does: this key only, this known_hosts only, strict checking,
    /// no user or system config, no connection sharing.
    pub fn ssh_args(&self) -> Vec<String> {
        let mut v = self.login_args();
        v.push(node_host(1));
        v
    }

    /// [`Nodes::ssh_args`] without the destination.
    pub fn login_args(&self) -> Vec<String> {
        let mut v: Vec<String> = vec!["-F".into(), "/dev/null".into()];
        for o in self.ssh_options() {
            v.push("-o".into());
            v.push(o);
        }
        v.extend([
            "-i".into(),
            self.key_store.join(KEY_NAME).display().to_string(),
            "-p".into(),
            self.sshd.port().to_string(),
            "-l".into(),
            self.user.clone(),
        ]);
        v
    }

    /// The `-o` options of [`Nodes::ssh_args`].
    pub fn ssh_options(&self) -> Vec<String> {
        vec![
            "BatchMode=yes".into(),
            "IdentitiesOnly=yes".into(),
            "StrictHostKeyChecking=yes".into(),
            format!("UserKnownHostsFile={}", self.known_hosts.display()),
            "GlobalKnownHostsFile=/dev/null".into(),
            "ControlMaster=no".into(),
            "ControlPath=none".into(),
            format!("ConnectTimeout={CONNECT_TIMEOUT_S}"),
        ]
    }

    /// The pid of the listening sshd (a child of this process whose command
    /// line names the private server's directory).
    pub fn sshd_pid(&self) -> Option<u32> {
        let dir = self.sshd.dir().display().to_string();
        let me = std::process::id();
        fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = fs::read(e.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            let stat = fs::read_to_string(e.path().join("stat")).ok()?;
            let ppid: u32 = stat[stat.rfind(')')? + 2..]
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            (ppid == me && cmdline.contains("sshd") && cmdline.contains(&dir)).then_some(pid)
        })
    }

    pub fn key_path(&self) -> PathBuf {
        self.key_store.join(KEY_NAME)
    }

    /// What an OpenSSH-based contender needs, as plain data it can take to
    /// a thread of its own.
    pub fn target(&self) -> SshTarget {
        SshTarget {
            args: self.ssh_args(),
            login_args: self.login_args(),
            options: self.ssh_options(),
            port: self.sshd.port(),
            user: self.user.clone(),
            key: self.key_path(),
        }
    }
}

/// The nodes' server as OpenSSH's client and Ansible are pointed at it.
#[derive(Debug, Clone)]
pub struct SshTarget {
    /// Full `ssh` arguments up to the destination ([`Nodes::ssh_args`]),
    /// which is node 1's address.
    pub args: Vec<String>,
    /// The same without the destination ([`Nodes::login_args`]).
    pub login_args: Vec<String>,
    /// The `-o` options alone ([`Nodes::ssh_options`]).
    pub options: Vec<String>,
    /// The port at every address ([`node_host`]).
    pub port: u16,
    pub user: String,
    pub key: PathBuf,
}

/// The reference control plane with one runner assigned to [`PROJECT`].
pub struct Plane {
    pub harness: Harness,
    pub admin: AdminClient,
    pub runner_id: String,
    pub credentials: String,
}

impl Plane {
    /// A harness without a state file, serving `cadence`, with `nodes` as
    /// the project's inventory, all of them assigned to one runner.
    pub async fn start(cadence: Cadence, nodes: &[Node]) -> anyhow::Result<Plane> {
        let harness = Harness::start(HarnessConfig {
            cadence,
            ..HarnessConfig::default()
        })
        .context("starting the reference control plane")?;
        let admin = harness.admin();
        let creds = admin
            .create_runner(&CreateRunner {
                name: "bench".into(),
                description: "benchmark runner".into(),
                tags: vec![],
                projects: BTreeMap::from([(PROJECT.to_owned(), ".*".to_owned())]),
            })
            .await
            .context("creating the runner on the control plane")?;
        admin
            .set_nodes(PROJECT, nodes)
            .await
            .context("setting the node inventory")?;
        Ok(Plane {
            harness,
            admin,
            runner_id: creds.runner_id,
            credentials: creds.credentials,
        })
    }

    /// Check-in arrival instants of every replica of the runner, in order.
    pub fn checkins(&self) -> Vec<Instant> {
        let mut all: Vec<Instant> = self
            .harness
            .checkins(&self.runner_id)
            .into_values()
            .flatten()
            .collect();
        all.sort();
        all
    }
}

/// How the runner is run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunnerKind {
    /// The release binary (`rdrunner run`).
    Binary(PathBuf),
    /// This benchmark program re-executed with [`CHILD_FLAG`]: the daemon's
    /// own assembly (`rdrunner::daemon`) from the same runner.toml, as the
    /// binary builds it, in a process of its own so that its memory and CPU
    /// are measured alone.
    InProcess,
}

impl RunnerKind {
    pub fn describe(&self) -> String {
        match self {
            RunnerKind::Binary(p) => format!("release binary {}", p.display()),
            RunnerKind::InProcess => {
                "in-process runtime (this benchmark re-executed as the runner, built by the daemon's own assembly from the same runner.toml)".into()
            }
        }
    }
}

/// The runner's settings that differ between benchmarks.
#[derive(Debug, Clone)]
pub struct RunnerOptions {
    pub long_polling: bool,
    pub poll_interval_ms: u64,
    pub max_running: u32,
    /// `runner.reattach`: SSH steps run detached and followed, so that
    /// they survive a dropped connection (the default), or attached.
    pub reattach: bool,
    /// `[metrics] listen`: the endpoint on this address, or off.
    pub metrics: Option<std::net::SocketAddr>,
}

impl Default for RunnerOptions {
    fn default() -> Self {
        RunnerOptions {
            long_polling: true,
            poll_interval_ms: 5000,
            max_running: 50,
            reattach: true,
            metrics: None,
        }
    }
}

/// A free loopback address for a runner's metrics endpoint.
pub fn free_loopback_addr() -> anyhow::Result<std::net::SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?)
}

/// The runner's configuration file, in the daemon's format.
pub fn runner_toml(dir: &Path, nodes: &Nodes, opts: &RunnerOptions) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "[runner]");
    let _ = writeln!(t, "hostname = \"bench\"");
    // The local suites' nodes are this host.
    let _ = writeln!(t, "localExecutor = true");
    let _ = writeln!(t, "maxRunning = {}", opts.max_running);
    let _ = writeln!(t, "reattach = {}", opts.reattach);
    let _ = writeln!(t, "longPolling = {}", opts.long_polling);
    let _ = writeln!(t, "pollIntervalMs = {}", opts.poll_interval_ms);
    let _ = writeln!(t, "drainTimeoutMs = 2000");
    let _ = writeln!(t, "killGraceMs = 500");
    let _ = writeln!(t, "[ssh]");
    let _ = writeln!(t, "keyStore = {:?}", nodes.key_store.display().to_string());
    let _ = writeln!(t, "knownHostsPolicy = \"strict\"");
    let _ = writeln!(
        t,
        "knownHostsFile = {:?}",
        nodes.known_hosts.display().to_string()
    );
    let _ = writeln!(
        t,
        "acceptedHostsFile = {:?}",
        dir.join("accepted_hosts").display().to_string()
    );
    let _ = writeln!(t, "defaultUser = {:?}", nodes.user);
    let _ = writeln!(t, "connectTimeoutMs = {}", CONNECT_TIMEOUT_S * 1000);
    let _ = writeln!(t, "callTimeoutMs = 30000");
    let _ = writeln!(
        t,
        "remoteTmpDir = {:?}",
        nodes.remote_tmp.display().to_string()
    );
    let _ = writeln!(t, "[spool]");
    let _ = writeln!(t, "dir = {:?}", dir.join("spool").display().to_string());
    let _ = writeln!(t, "[log]");
    let _ = writeln!(t, "dir = {:?}", dir.join("logs").display().to_string());
    let _ = writeln!(t, "level = \"warning\"");
    let _ = writeln!(t, "stderr = false");
    if let Some(addr) = opts.metrics {
        let _ = writeln!(t, "[metrics]");
        let _ = writeln!(t, "listen = \"{addr}\"");
    }
    t
}

/// A running runner process.
pub struct RunnerProcess {
    pub child: Child,
    pub dir: PathBuf,
}

impl RunnerProcess {
    /// Writes the configuration and credentials into `dir` and starts the
    /// runner there; returns once it has checked in, or fails with what it
    /// printed.
    pub async fn start(
        kind: &RunnerKind,
        dir: &Path,
        plane: &Plane,
        nodes: &Nodes,
        opts: &RunnerOptions,
    ) -> anyhow::Result<RunnerProcess> {
        fs::create_dir_all(dir)?;
        let config = dir.join("runner.toml");
        fs::write(&config, runner_toml(dir, nodes, opts))?;
        let creds = dir.join(".rdrunner-creds");
        fs::write(&creds, &plane.credentials)?;
        fs::set_permissions(&creds, fs::Permissions::from_mode(0o600))?;
        let mut cmd = match kind {
            RunnerKind::Binary(bin) => {
                let mut c = Command::new(bin);
                c.arg("--config")
                    .arg(&config)
                    .arg("--creds")
                    .arg(&creds)
                    .arg("run");
                c
            }
            RunnerKind::InProcess => {
                let mut c = Command::new(std::env::current_exe()?);
                c.arg(CHILD_FLAG).arg(dir);
                c
            }
        };
        let stderr = fs::File::create(dir.join("stderr.log"))?;
        // SAFETY: prctl in the forked child before exec, async-signal-safe.
        // The runner dies with the benchmark, even when the benchmark is
        // killed, rather than checking in forever.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting the runner ({})", kind.describe()))?;
        let mut runner = RunnerProcess {
            child,
            dir: dir.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if !plane.checkins().is_empty() {
                return Ok(runner);
            }
            if let Some(status) = runner.child.try_wait()? {
                bail!(
                    "the runner ({}) exited ({status}) before checking in: {}",
                    kind.describe(),
                    runner.stderr().trim()
                );
            }
            if Instant::now() > deadline {
                runner.stop();
                bail!(
                    "the runner ({}) did not check in within 20 s: {}",
                    kind.describe(),
                    runner.stderr().trim()
                );
            }
            actix_rt::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr(&self) -> String {
        fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }

    /// TERM, a bounded wait for the drain, then KILL.
    pub fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        // SAFETY: kill(2) on the pid of a child this process started and
        // has not reaped yet.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RunnerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The release binary next to this program's directory
/// (`target/release/examples/bench` → `target/release/rdrunner`).
pub fn release_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let release = exe.parent()?.parent()?;
    let bin = release.join("rdrunner");
    (release.file_name()? == "release" && bin.is_file()).then_some(bin)
}

/// [`BENCH_USER`], created when missing (as root only: `useradd`).
fn login_user() -> Result<String, String> {
    let exists = Command::new("id")
        .arg(BENCH_USER)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run id: {e}"))?
        .success();
    if !exists {
        let out = Command::new("useradd")
            .args(["-m", "-s", "/bin/sh", BENCH_USER])
            .output()
            .map_err(|e| format!("cannot run useradd: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "useradd {BENCH_USER} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    // useradd leaves the account locked ('!'), and sshd refuses a locked
    // account whatever the method; '*' = no password, not locked.
    let out = Command::new("usermod")
        .args(["-p", "*", BENCH_USER])
        .output()
        .map_err(|e| format!("cannot run usermod: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "usermod -p '*' {BENCH_USER} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let shell = fs::read_to_string("/etc/passwd")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(&format!("{BENCH_USER}:")))
        .and_then(|l| l.rsplit(':').next().map(str::to_owned))
        .unwrap_or_default();
    if shell != "/bin/sh" {
        return Err(format!(
            "{BENCH_USER}'s login shell is {shell:?}, not /bin/sh"
        ));
    }
    Ok(BENCH_USER.to_owned())
}

/// Scrapes a runner's `/metrics` every second, as Prometheus would (5 s
/// timeout), on the benchmark's System; keeps what each scrape gave.
pub struct Scraper {
    tally: std::sync::Arc<std::sync::Mutex<ScrapeTally>>,
    task: actix_rt::task::JoinHandle<()>,
}

/// What the scrapes gave.
#[derive(Debug, Clone, Default)]
pub struct ScrapeTally {
    /// Time to each whole exposition.
    pub answered: Vec<Duration>,
    /// Scrapes with no answer within 5 s.
    pub timed_out: u64,
    /// Scrapes that failed otherwise (refused, reset, not a whole
    /// exposition).
    pub failed: u64,
}

impl ScrapeTally {
    pub fn total(&self) -> u64 {
        self.answered.len() as u64 + self.timed_out + self.failed
    }

    /// Fails unless most scrapes gave a whole exposition.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.answered.is_empty() || self.failed > 0 {
            bail!(
                "the metrics endpoint answered {} of {} scrapes whole ({} timed out, {} failed)",
                self.answered.len(),
                self.total(),
                self.timed_out,
                self.failed
            );
        }
        Ok(())
    }

    /// "N of M answered, max X ms" for a table row.
    pub fn describe(&self) -> String {
        let max = self.answered.iter().max().copied().unwrap_or_default();
        format!(
            "{} of {} answered (max {:.1} ms){}",
            self.answered.len(),
            self.total(),
            max.as_secs_f64() * 1000.0,
            if self.timed_out > 0 {
                format!(", {} timed out after 5 s", self.timed_out)
            } else {
                String::new()
            }
        )
    }
}

impl Scraper {
    pub fn start(addr: std::net::SocketAddr, every: Duration) -> Scraper {
        let tally = std::sync::Arc::new(std::sync::Mutex::new(ScrapeTally::default()));
        let tally2 = tally.clone();
        let task = actix_rt::spawn(async move {
            let mut tick = actix_rt::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let t0 = Instant::now();
                let got = actix_rt::time::timeout(Duration::from_secs(5), scrape_once(addr)).await;
                let took = t0.elapsed();
                let mut t = tally2.lock().unwrap_or_else(|e| e.into_inner());
                match got {
                    Ok(Ok(true)) => t.answered.push(took),
                    Ok(_) => t.failed += 1,
                    Err(_) => t.timed_out += 1,
                }
            }
        });
        Scraper { tally, task }
    }

    /// Stops scraping; what the scrapes gave.
    pub fn stop(self) -> ScrapeTally {
        self.task.abort();
        self.tally.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// One `GET /metrics`; whether it answered 200 with a whole exposition.
async fn scrape_once(addr: std::net::SocketAddr) -> std::io::Result<bool> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(
        b"GET /metrics HTTP/1.1\r\nHost: bench\r\nAccept: application/openmetrics-text\r\n\r\n",
    )
    .await?;
    let mut body = Vec::with_capacity(8192);
    s.read_to_end(&mut body).await?;
    let text = String::from_utf8_lossy(&body);
    Ok(text.starts_with("HTTP/1.1 200 ")
        && text.contains("rdrunner_checkin_duration_seconds_count")
        && text.ends_with("# EOF\n"))
}
