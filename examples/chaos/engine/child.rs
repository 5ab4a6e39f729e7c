//! The runner under test, as a process of its own: the chaos executable
//! started again with `--runner-child CONFIG_JSON` runs rdrunner's actors
//! with the real awc transport, the disk spool and the local and SSH
//! executors, so that a scenario can `kill -9` it, restart it on the same
//! spool, and measure its peak RSS alone.
//!
//! It prints `STATS {json}` lines on stdout (every 100 ms and at the end)
//! and ends with the daemon's exit codes: 0 after a drain (asked by closing
//! its stdin), 5 when supervision escalated.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdrunner::config::{FsyncPolicy, TlsConfig};
use rdrunner::creds::Token;
use rdrunner::local::LocalExecutor;
use rdrunner::spool::DiskSpool;
use rdrunner::ssh::{KnownHostsPolicy, SshExecutor, SshSettings};
use rdrunner::transport::{HttpControlPlane, TransportSettings};
use rdrunner_actors::model::{
    CheckinRequest, CheckinResponse, ExecutorKind, ReportBody, ReportsRequest, ReportsResponse,
    ShutdownRequest, StartupRequest, StartupResponse,
};
use rdrunner_actors::{
    AbortSignal, CallResult, ClaimOutcome, ControlPlane, ExecutorError, FailAction, FailPoints,
    NodeExecutor, OutputSink, RestartIntensity, Runtime, RuntimeConfig, RuntimeError, StepOutcome,
    StepRequest,
};
use serde::{Deserialize, Serialize};

/// Exit code when supervision escalated (as the daemon's).
pub const EXIT_ESCALATED: i32 = 5;

/// A fail point to arm in the child.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChildFailPoint {
    pub name: String,
    /// `panic`, `error` or `delay`.
    pub action: String,
    #[serde(default)]
    pub delay_ms: u64,
    /// Fires with this probability (seeded with `seed`); `None` = every time.
    pub probability: Option<f64>,
    pub seed: u64,
}

/// SSH settings for nodes with the `ssh` executor.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChildSsh {
    pub key_store: PathBuf,
    pub known_hosts_file: PathBuf,
    pub user: String,
}

/// Everything the child needs, passed as one JSON argument.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChildConfig {
    pub server_url: String,
    pub runner_id: String,
    pub token: String,
    pub spool_dir: PathBuf,
    pub log_file: PathBuf,
    pub max_running: u32,
    pub request_timeout_ms: u64,
    pub backoff_max_ms: u64,
    pub kill_grace_ms: u64,
    pub fail_points: Vec<ChildFailPoint>,
    /// Deliberate breaks (`--break`), to show the checks catch them.
    pub breaks: Vec<String>,
    pub ssh: Option<ChildSsh>,
}

/// What the child reports on stdout.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChildStats {
    pub checkins: u64,
    pub max_checkin_gap_ms: u64,
    pub restarts: u64,
    pub escalations: u64,
    pub reports_spooled: u64,
    pub reports_acked: u64,
}

/// Runs the child; answers its exit code.
pub fn child_main(config_json: &str) -> i32 {
    let config: ChildConfig = match serde_json::from_str(config_json) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("chaos runner child: bad config: {e}");
            return 2;
        }
    };
    let system = actix_rt::System::new();
    system.block_on(run(config))
}

fn logger(path: &PathBuf) -> slog::Logger {
    use slog::Drain;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("the chaos runner log file opens");
    let decorator = slog_term::PlainDecorator::new(file);
    let drain = slog_term::FullFormat::new(decorator).build().fuse();
    let drain = slog_async::Async::new(drain).build().fuse();
    slog::Logger::root(drain, slog::o!())
}

async fn run(config: ChildConfig) -> i32 {
    let log = logger(&config.log_file);
    let settings = TransportSettings {
        server_url: config.server_url.clone(),
        runner_id: config.runner_id.clone(),
        token: Token::new(config.token.clone()),
        version: "chaos".into(),
        request_timeout: Duration::from_millis(config.request_timeout_ms),
        connect_timeout: Duration::from_secs(2),
        tls: TlsConfig {
            ca_file: None,
            insecure_skip_verify: false,
        },
        proxy: None,
    };
    let transport = match HttpControlPlane::new(settings, &log) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("chaos runner child: transport: {e}");
            return 2;
        }
    };
    let control_plane: Arc<dyn ControlPlane> = if config.breaks.iter().any(|b| b == "drop-report") {
        Arc::new(DropOneReport::new(transport))
    } else if config.breaks.iter().any(|b| b == "duplicate-report") {
        Arc::new(DuplicateOneReport::new(transport))
    } else {
        Arc::new(transport)
    };
    let spool = match DiskSpool::open(&config.spool_dir, FsyncPolicy::Batch, 4 << 20) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("chaos runner child: spool: {e}");
            return 2;
        }
    };
    let fail_points = FailPoints::new();
    for fp in &config.fail_points {
        let action = match fp.action.as_str() {
            "panic" => FailAction::Panic,
            "error" => FailAction::Error,
            _ => FailAction::Delay(Duration::from_millis(fp.delay_ms)),
        };
        match fp.probability {
            Some(p) => fail_points.set_with_probability(&fp.name, action, p, fp.seed),
            None => fail_points.set(&fp.name, action),
        }
    }
    let local: Arc<dyn NodeExecutor> = if config.breaks.iter().any(|b| b == "leak-process") {
        Arc::new(LeakOnAbort(Arc::new(LocalExecutor::new())))
    } else {
        Arc::new(LocalExecutor::new())
    };
    let mut builder = Runtime::builder()
        .config(RuntimeConfig {
            hostname: "chaos".into(),
            version: "chaos".into(),
            max_running: config.max_running,
            poll_interval: Duration::from_secs(5),
            report_interval: Duration::from_millis(100),
            kill_grace: Duration::from_millis(config.kill_grace_ms),
            restart_intensity: RestartIntensity {
                max_restarts: 5,
                within: Duration::from_secs(10),
            },
            backoff_max: Duration::from_millis(config.backoff_max_ms),
            backoff_initial: Duration::from_millis(100),
            request_timeout: Duration::from_millis(config.request_timeout_ms),
            flush_timeout: Duration::from_secs(10),
            ..RuntimeConfig::default()
        })
        .control_plane(control_plane)
        .spool(Box::new(spool))
        .executor(ExecutorKind::Local, local)
        .logger(log.clone())
        .fail_points(fail_points);
    if let Some(ssh) = &config.ssh {
        let settings = SshSettings {
            key_store: ssh.key_store.clone(),
            known_hosts_policy: KnownHostsPolicy::Strict,
            known_hosts_file: ssh.known_hosts_file.clone(),
            accepted_hosts_file: ssh.key_store.join("accepted_hosts"),
            default_user: ssh.user.clone(),
            connect_timeout: Duration::from_secs(5),
            call_timeout: Duration::from_secs(5),
            keepalive_interval: Duration::from_secs(2),
            use_agent: false,
            ..SshSettings::default()
        };
        builder = builder.executor(
            ExecutorKind::Ssh,
            Arc::new(SshExecutor::new(settings, log.clone())),
        );
    }
    let handle = match builder.start() {
        Ok(h) => h,
        Err(e) => {
            eprintln!("chaos runner child: the runtime did not start: {e}");
            return 2;
        }
    };

    // Stats, every 100 ms.
    let stats_handle = handle.clone();
    let print_stats = move || {
        let s = stats_handle.stats();
        let out = ChildStats {
            checkins: s.checkins,
            max_checkin_gap_ms: s.max_checkin_gap.as_millis() as u64,
            restarts: s.restarts.values().sum(),
            escalations: s.escalations,
            reports_spooled: s.reports_spooled,
            reports_acked: s.reports_acked,
        };
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(
            stdout,
            "STATS {}",
            serde_json::to_string(&out).unwrap_or_default()
        );
        let _ = stdout.flush();
    };
    let ticker_print = print_stats.clone();
    let ticker = actix_rt::spawn(async move {
        loop {
            ticker_print();
            actix_rt::time::sleep(Duration::from_millis(100)).await;
        }
    });

    // The parent closes stdin to ask for a drain.
    let (eof_tx, eof_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        let _ = eof_tx.send(());
    });

    let outcome = tokio::select! {
        r = handle.wait() => r,
        _ = eof_rx => {
            handle.drain(Duration::from_secs(5)).await;
            handle.wait().await
        }
    };
    ticker.abort();
    print_stats();
    match outcome {
        Ok(()) => 0,
        Err(RuntimeError::Escalated { .. }) => EXIT_ESCALATED,
        Err(e) => {
            eprintln!("chaos runner child: the runtime ended: {e}");
            1
        }
    }
}

// ---- deliberate breaks ------------------------------------------------------

/// `--break drop-report`: leaves one log report out of one batch and
/// numbers the rest as if it had never been made, as a runner that loses a
/// report on its way to the spool would.
struct DropOneReport {
    inner: HttpControlPlane,
    /// The operation whose seqs are shifted, and from which seq.
    shifted: Mutex<Option<(String, u64)>>,
}

impl DropOneReport {
    fn new(inner: HttpControlPlane) -> Self {
        DropOneReport {
            inner,
            shifted: Mutex::new(None),
        }
    }
}

/// `--break duplicate-report`: sends one log report twice under two seqs,
/// as a runner that re-numbers a resent report would.
struct DuplicateOneReport {
    inner: HttpControlPlane,
    shifted: Mutex<Option<(String, u64)>>,
}

impl DuplicateOneReport {
    fn new(inner: HttpControlPlane) -> Self {
        DuplicateOneReport {
            inner,
            shifted: Mutex::new(None),
        }
    }
}

/// Shifts the seqs of `op` at or past `from` by `delta` (-1 or +1).
fn shift(req: &mut ReportsRequest, shifted: &Option<(String, u64)>, delta: i64) {
    if let Some((op, from)) = shifted {
        for r in req.reports.iter_mut() {
            if &r.op_id == op && r.seq >= *from {
                r.seq = (r.seq as i64 + delta) as u64;
            }
        }
    }
}

/// Maps the server's acks back to the runner's numbering.
fn unshift(
    mut resp: ReportsResponse,
    shifted: &Option<(String, u64)>,
    delta: i64,
) -> ReportsResponse {
    if let Some((op, from)) = shifted {
        if let Some(ack) = resp.acks.get_mut(op) {
            let runner_seq = *ack as i64 - delta;
            if runner_seq >= *from as i64 - 1 {
                *ack = runner_seq.max(0) as u64;
            }
        }
    }
    resp
}

macro_rules! pass_through {
    () => {
        fn startup(&self, req: StartupRequest) -> CallResult<StartupResponse> {
            self.inner.startup(req)
        }
        fn checkin(&self, req: CheckinRequest, wait: Duration) -> CallResult<CheckinResponse> {
            self.inner.checkin(req, wait)
        }
        fn claim(&self, op_id: &str, replica_id: &str) -> CallResult<ClaimOutcome> {
            self.inner.claim(op_id, replica_id)
        }
        fn shutdown(&self, req: ShutdownRequest) -> CallResult<()> {
            self.inner.shutdown(req)
        }
    };
}

impl ControlPlane for DropOneReport {
    pass_through!();
    fn reports(&self, mut req: ReportsRequest) -> CallResult<ReportsResponse> {
        let mut shifted = self.shifted.lock().unwrap_or_else(|e| e.into_inner());
        if shifted.is_none() {
            // The tenth log line of the first operation seen goes missing.
            if let Some(i) = req
                .reports
                .iter()
                .position(|r| matches!(&r.body, ReportBody::Log(l) if l.text.ends_with("line 10")))
            {
                let r = req.reports.remove(i);
                *shifted = Some((r.op_id, r.seq + 1));
            }
        }
        let s = shifted.clone();
        drop(shifted);
        shift(&mut req, &s, -1);
        let fut = self.inner.reports(req);
        Box::pin(async move { fut.await.map(|resp| unshift(resp, &s, -1)) })
    }
}

impl ControlPlane for DuplicateOneReport {
    pass_through!();
    fn reports(&self, mut req: ReportsRequest) -> CallResult<ReportsResponse> {
        let mut shifted = self.shifted.lock().unwrap_or_else(|e| e.into_inner());
        let mut extra = None;
        if shifted.is_none() {
            if let Some(i) = req
                .reports
                .iter()
                .position(|r| matches!(&r.body, ReportBody::Log(l) if l.text.ends_with("line 10")))
            {
                let r = req.reports[i].clone();
                *shifted = Some((r.op_id.clone(), r.seq + 1));
                extra = Some(i);
            }
        }
        let s = shifted.clone();
        drop(shifted);
        shift(&mut req, &s, 1);
        if let Some(i) = extra {
            let mut copy = req.reports[i].clone();
            copy.seq += 1;
            req.reports.insert(i + 1, copy);
            // Keep the batch within the server's limit: the last report
            // waits for the next batch (it is not acked, so it is resent).
            if req.reports.len() > 1 {
                req.reports.pop();
            }
        }
        let fut = self.inner.reports(req);
        Box::pin(async move { fut.await.map(|resp| unshift(resp, &s, 1)) })
    }
}

/// `--break leak-process`: on an abort, reports the step aborted at once
/// and leaves its processes running, as an executor that forgot to kill
/// the process group would.
struct LeakOnAbort(Arc<dyn NodeExecutor>);

impl NodeExecutor for LeakOnAbort {
    fn execute(
        &self,
        req: &StepRequest,
        output: &mut dyn OutputSink,
        abort: &AbortSignal,
    ) -> Result<StepOutcome, ExecutorError> {
        // The real step runs with a signal that never fires, on a thread
        // of its own; its output is dropped once this call has returned.
        let (tx, rx) = std::sync::mpsc::channel::<Result<StepOutcome, ExecutorError>>();
        let (line_tx, line_rx) = std::sync::mpsc::channel();
        let inner = self.0.clone();
        let req2 = req.clone();
        std::thread::spawn(move || {
            let never = AbortSignal::new();
            let mut sink = ChannelSink(line_tx);
            let _ = tx.send(inner.execute(&req2, &mut sink, &never));
        });
        loop {
            while let Ok((stream, line)) = line_rx.try_recv() {
                output.line(stream, line);
            }
            if let Ok(r) = rx.try_recv() {
                while let Ok((stream, line)) = line_rx.try_recv() {
                    output.line(stream, line);
                }
                return r;
            }
            if abort.reason().is_some() {
                return Ok(StepOutcome {
                    exit_code: None,
                    signal: Some("TERM".into()),
                    message: Some("aborted (the step's processes were left running)".into()),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

struct ChannelSink(std::sync::mpsc::Sender<(rdrunner_actors::model::Stream, String)>);

impl OutputSink for ChannelSink {
    fn line(&mut self, stream: rdrunner_actors::model::Stream, line: String) {
        let _ = self.0.send((stream, line));
    }
}
