//! The runner under test, as a process of its own: the chaos executable
//! started again with `--runner-child CONFIG_JSON` runs the daemon's own
//! assembly (`rdrunner::daemon`: the real awc transport, the disk spool, the
//! local and SSH executors, runner.log and operations.log), so that a
//! scenario can `kill -9` it, restart it on the same spool, and measure its
//! peak RSS alone. What differs from the daemon is said on top of the
//! assembled builder: the fail points, and the deliberate breaks
//! (`--break`) that wrap the transport or the local executor.
//!
//! It prints `STATS {json}` lines on stdout (every 100 ms and at the end)
//! and ends with the daemon's exit codes: 0 after a drain (asked by closing
//! its stdin), 5 when supervision escalated.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdrunner::config::Config;
use rdrunner::creds::{Credentials, Token};
use rdrunner::daemon;
use rdrunner::local::LocalExecutor;
use rdrunner::logging::Logs;
use rdrunner::ssh::KnownHostsPolicy;
use rdrunner::transport::HttpControlPlane;
use rdrunner_actors::model::{
    CheckinRequest, CheckinResponse, ExecutorKind, ReportBody, ReportsRequest, ReportsResponse,
    ResumeRequest, ResumeResponse, ShutdownRequest, StartupRequest, StartupResponse,
};
use rdrunner_actors::{
    AbortSignal, CallResult, ClaimOutcome, ControlPlane, ExecutorError, FailAction, FailPoints,
    NodeExecutor, OutputSink, RestartIntensity, RuntimeError, StepOutcome, StepRequest,
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
    /// The SSH executor's bound on each blocking call.
    pub call_timeout_s: u64,
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
    /// Where runner.log and operations.log go.
    pub log_dir: PathBuf,
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

/// The daemon's configuration for a chaos runner: the defaults, with the
/// quicker cadence, deadlines and restart window the scenarios are timed
/// for.
fn runner_config(config: &ChildConfig) -> Config {
    let mut cfg = Config::default();
    cfg.runner.hostname = Some("chaos".into());
    // The scenarios' nodes are this host.
    cfg.runner.local_executor = true;
    cfg.runner.max_running = config.max_running;
    cfg.runner.report_interval = Duration::from_millis(100);
    cfg.runner.kill_grace = Duration::from_millis(config.kill_grace_ms);
    // A fault that keeps firing escalates within a scenario's fault window.
    cfg.supervision.restart_intensity = RestartIntensity {
        max_restarts: 5,
        within: Duration::from_secs(10),
    };
    cfg.supervision.backoff_max = Duration::from_millis(config.backoff_max_ms);
    cfg.http.request_timeout = Duration::from_millis(config.request_timeout_ms);
    cfg.http.connect_timeout = Duration::from_secs(2);
    cfg.spool.dir = config.spool_dir.clone();
    cfg.spool.segment_bytes = 4 << 20;
    cfg.log.dir = config.log_dir.clone();
    cfg.log.level = slog::Level::Debug;
    // stdout carries the STATS lines; stderr is kept for panics.
    cfg.log.stderr = false;
    if let Some(ssh) = &config.ssh {
        cfg.ssh.key_store = ssh.key_store.clone();
        cfg.ssh.known_hosts_policy = KnownHostsPolicy::Strict;
        cfg.ssh.known_hosts_file = ssh.known_hosts_file.clone();
        cfg.ssh.accepted_hosts_file = ssh.key_store.join("accepted_hosts");
        cfg.ssh.default_user = ssh.user.clone();
        // Generous: dozens of handshakes at once on a loaded machine.
        cfg.ssh.connect_timeout = Duration::from_secs(20);
        cfg.ssh.call_timeout = Duration::from_secs(ssh.call_timeout_s);
        cfg.ssh.keepalive_interval = Duration::from_secs(2);
        cfg.ssh.use_agent = false;
    }
    // `--break no-reattach`: SSH steps run attached, as before reattaching
    // existed, and fail with their connection.
    if config.breaks.iter().any(|b| b == "no-reattach") {
        cfg.runner.reattach = false;
    }
    cfg
}

async fn run(config: ChildConfig) -> i32 {
    let cfg = runner_config(&config);
    let creds = Credentials {
        runner_id: config.runner_id.clone(),
        token: Token::new(config.token.clone()),
        server_url: config.server_url.clone(),
    };
    let logs = match Logs::open(&cfg.log, cfg.log.stderr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("chaos runner child: {e}");
            return 2;
        }
    };
    let code = serve(&config, &cfg, &creds, &logs).await;
    logs.shutdown();
    code
}

async fn serve(config: &ChildConfig, cfg: &Config, creds: &Credentials, logs: &Logs) -> i32 {
    let assembly = match daemon::assemble(cfg, creds, logs) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("chaos runner child: {e}");
            return 2;
        }
    };
    let breaks = &config.breaks;
    // `--break hog-memory`: 200 MB the runner holds and touches, as a leak would.
    let _hog: Vec<u8> = if breaks.iter().any(|b| b == "hog-memory") {
        vec![1u8; 200 << 20]
    } else {
        Vec::new()
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
    // On top of the daemon's assembly: the scenario's fail points, and the
    // deliberate breaks, each replacing one part with a broken wrapper.
    let mut builder = assembly.builder.fail_points(fail_points);
    let transport = assembly.transport;
    if breaks.iter().any(|b| b == "drop-report") {
        builder = builder.control_plane(Arc::new(DropOneReport::new(transport)));
    } else if breaks.iter().any(|b| b == "duplicate-report") {
        builder = builder.control_plane(Arc::new(DuplicateOneReport::new(transport)));
    } else if breaks.iter().any(|b| b == "drop-terminal") {
        builder = builder.control_plane(Arc::new(DropTerminal {
            inner: transport,
            dropped: Mutex::new(std::collections::HashMap::new()),
        }));
    }
    if breaks.iter().any(|b| b == "leak-process") {
        builder = builder.executor(
            ExecutorKind::Local,
            Arc::new(LeakOnAbort(Arc::new(LocalExecutor::new()))),
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
        fn resume(&self, req: ResumeRequest) -> CallResult<ResumeResponse> {
            self.inner.resume(req)
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

/// `--break drop-terminal`: never delivers an operation's terminal report
/// but answers as if the control plane had stored it, as a runner that
/// loses the end of an operation would.
struct DropTerminal {
    inner: HttpControlPlane,
    /// Per operation, the seq of its dropped terminal report.
    dropped: Mutex<std::collections::HashMap<String, u64>>,
}

impl ControlPlane for DropTerminal {
    pass_through!();
    fn reports(&self, mut req: ReportsRequest) -> CallResult<ReportsResponse> {
        let mut dropped = self.dropped.lock().unwrap_or_else(|e| e.into_inner());
        req.reports.retain(|r| {
            if r.is_terminal() {
                dropped.insert(r.op_id.clone(), r.seq);
                false
            } else {
                true
            }
        });
        let dropped = dropped.clone();
        let fut = self.inner.reports(req);
        Box::pin(async move {
            fut.await.map(|mut resp| {
                for (op, seq) in &dropped {
                    if let Some(ack) = resp.acks.get_mut(op) {
                        if *ack + 1 == *seq {
                            *ack = *seq;
                        }
                    }
                }
                resp
            })
        })
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
