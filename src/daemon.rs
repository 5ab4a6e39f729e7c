//! The one assembly: turns a configuration and credentials into a runner
//! ready to start (the HTTPS transport, the SSH executor, the local
//! executor when `runner.localExecutor` grants it, the disk spool,
//! runner.log and operations.log, the allowedNodes predicate, the restart
//! intensity, the backoff and every other runtime setting), and the
//! metrics endpoint when `metrics.listen` asks for one.
//!
//! `rdrunner run` and `rdrunner check`, the demo, the benchmark's runner and
//! the chaos runner all build their runner here, so each runs the daemon's
//! own wiring. A caller that must differ (an executor wrapped with fail
//! points, a control plane that drops a report on purpose) says so on top of
//! the returned builder: `RuntimeBuilder::executor` and `control_plane`
//! replace what is there.

use std::sync::Arc;
use std::time::Duration;

use rdrunner_actors::model::{ExecutorKind, Node};
use rdrunner_actors::{
    NodeExecutor, NodePredicate, Runtime, RuntimeBuilder, RuntimeConfig, RuntimeError,
    RuntimeHandle, SpoolError,
};

use crate::config::Config;
use crate::creds::Credentials;
use crate::local::{LocalExecutionOff, LocalExecutor};
use crate::logging::Logs;
use crate::metrics::{MetricsEndpoint, MetricsError};
use crate::runner::{AllowedNodes, RunnerSettings, ALL_NODES};
use crate::spool::DiskSpool;
use crate::ssh::{SshExecutor, SshSettings, StepKey};
use crate::transport::{HttpControlPlane, TransportError, TransportSettings};

/// The version the runner reports at startup and in its `User-Agent`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// A runner that cannot be assembled; the message names the setting to fix.
#[derive(Debug, thiserror::Error)]
pub enum AssemblyError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("{0}; check spool.dir")]
    Spool(SpoolError),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error("the runtime did not start: {0}")]
    Start(#[source] RuntimeError),
}

/// Where detached local steps keep their files, in the spool directory.
pub const LOCAL_STEPS_DIR: &str = "local-steps";

/// A runner assembled from its configuration, not started yet.
pub struct Assembly {
    /// Every seam and setting in place; `start()` it inside an actix System.
    pub builder: RuntimeBuilder,
    /// The HTTPS transport the builder holds (a clone shares its state), for
    /// a caller that puts something between it and the runtime.
    pub transport: HttpControlPlane,
    /// How long a drain lets running operations finish
    /// (`runner.drainTimeoutMs`).
    pub drain_timeout: Duration,
    /// The metrics endpoint, bound and not serving yet (`metrics.listen`).
    pub metrics: Option<MetricsEndpoint>,
    /// runner.log.
    pub log: slog::Logger,
}

impl Assembly {
    /// Starts the runtime, then serves the metrics endpoint (when one is
    /// configured) on the same actix System. Call inside a running System.
    pub fn start(self) -> Result<RuntimeHandle, AssemblyError> {
        let handle = self.builder.start().map_err(AssemblyError::Start)?;
        if let Some(endpoint) = self.metrics {
            endpoint.serve(handle.clone(), VERSION, self.log)?;
        }
        Ok(handle)
    }
}

/// Assembles the runner of `cfg` for the runner `creds` names, logging to
/// `logs` (opened from `cfg.log`). Logs "rdrunner starting" with a summary
/// of the configuration first.
pub fn assemble(cfg: &Config, creds: &Credentials, logs: &Logs) -> Result<Assembly, AssemblyError> {
    let log = logs.runner.clone();
    slog::info!(log, "rdrunner starting";
        "version" => VERSION,
        "pid" => std::process::id(),
        "server" => &creds.server_url,
        "runner_id" => &creds.runner_id,
        "max_running" => cfg.runner.max_running,
        "long_polling" => cfg.runner.long_polling,
        "allowed_nodes" => cfg.runner.allowed_nodes.as_ref().map_or(ALL_NODES, AllowedNodes::as_str),
        "local_executor" => cfg.runner.local_executor,
        "reattach" => cfg.runner.reattach,
        "spool" => %cfg.spool.dir.display(),
        "metrics" => cfg.metrics.listen_text(),
        "logs" => %cfg.log.dir.display());
    let transport = transport(cfg, creds, &log)?;
    // Bound now: a busy or forbidden address stops the start with its name.
    let metrics = MetricsEndpoint::bind(&cfg.metrics)?;
    let spool = DiskSpool::open(&cfg.spool.dir, cfg.spool.fsync, cfg.spool.segment_bytes)
        .map_err(AssemblyError::Spool)?;
    if spool.cut_on_open() > 0 {
        slog::warn!(log, "the spool ended in a record torn by a crash; it was cut";
            "bytes" => spool.cut_on_open());
    }
    match crate::ssh::tighten_key_store(&cfg.ssh.key_store) {
        Ok(Some(mode)) => {
            slog::warn!(log, "the key store was open to group or others; made it private (0700)";
            "dir" => %cfg.ssh.key_store.display(), "mode_was" => format!("{mode:o}"))
        }
        Ok(None) => {}
        Err(e) => slog::warn!(log, "cannot make the key store private";
            "dir" => %cfg.ssh.key_store.display(), "error" => %e),
    }
    let step_key = spool.step_key().map_err(AssemblyError::Spool)?;
    let ssh_settings = SshSettings {
        reattach: cfg.runner.reattach,
        step_key: StepKey(step_key),
        ..cfg.ssh.clone()
    };
    let ssh = SshExecutor::new(ssh_settings, log.new(slog::o!("executor" => "ssh")));
    let local: Arc<dyn NodeExecutor> = if cfg.runner.local_executor && cfg.runner.reattach {
        // Detached, so that a restarted runner re-attaches to its steps.
        Arc::new(LocalExecutor::detached(
            cfg.spool.dir.join(LOCAL_STEPS_DIR),
            StepKey(step_key),
        ))
    } else if cfg.runner.local_executor {
        Arc::new(LocalExecutor::new())
    } else {
        Arc::new(LocalExecutionOff)
    };
    let builder = Runtime::builder()
        .config(runtime_config(cfg))
        .control_plane(Arc::new(transport.clone()))
        .executor(ExecutorKind::Local, local)
        .executor(ExecutorKind::Ssh, Arc::new(ssh))
        .spool(Box::new(spool))
        .logger(log.clone())
        .operations_logger(logs.operations.clone());
    Ok(Assembly {
        builder,
        transport,
        drain_timeout: cfg.runner.drain_timeout,
        metrics,
        log,
    })
}

/// The HTTPS transport of `cfg` for `creds` (what `rdrunner check` uses
/// alone). With `tls.insecureSkipVerify` it logs a warning to `log`.
pub fn transport(
    cfg: &Config,
    creds: &Credentials,
    log: &slog::Logger,
) -> Result<HttpControlPlane, TransportError> {
    HttpControlPlane::new(
        TransportSettings::new(creds, &cfg.http, &cfg.tls, VERSION),
        log,
    )
}

/// The runtime's settings from `cfg`: every field decided here, so that a
/// new one is a decision of the assembly and not a silent default.
pub fn runtime_config(cfg: &Config) -> RuntimeConfig {
    let runtime_own = RuntimeConfig::default();
    let runner = &cfg.runner;
    RuntimeConfig {
        hostname: hostname(runner),
        version: VERSION.to_owned(),
        pid: std::process::id(),
        tags: runner.tags.clone(),
        max_running: runner.max_running,
        long_polling: runner.long_polling,
        poll_interval: runner.poll_interval,
        min_checkin_gap: runner.min_checkin_gap,
        report_interval: runner.report_interval,
        report_batch_max: runner.report_batch_max,
        kill_grace: runner.kill_grace,
        allowed_nodes: runner.allowed_nodes_filter().map(|filter| {
            // The runtime hands over the node in canonical form; the port
            // the filter sees is the one dialled, the default included.
            let default_port = cfg.ssh.default_port;
            let predicate: NodePredicate = Arc::new(move |node: &Node| {
                if node.executor == ExecutorKind::Ssh && node.port.is_none() {
                    let mut dialled = node.clone();
                    dialled.port = Some(default_port);
                    filter.matches(&dialled)
                } else {
                    filter.matches(node)
                }
            });
            predicate
        }),
        restart_intensity: cfg.supervision.restart_intensity,
        backoff_max: cfg.supervision.backoff_max,
        // Not configurable: the runtime's own.
        backoff_initial: runtime_own.backoff_initial,
        request_timeout: cfg.http.request_timeout,
        flush_timeout: runtime_own.flush_timeout,
        carry_on_after_restart: runner.reattach,
    }
}

/// `runner.hostname`, else this machine's hostname, else `localhost`.
pub fn hostname(runner: &RunnerSettings) -> String {
    runner.hostname.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runtime_gets_every_configured_setting() {
        let mut cfg = Config::default();
        cfg.runner.hostname = Some("h1".into());
        cfg.runner.max_running = 7;
        cfg.runner.poll_interval = Duration::from_millis(1234);
        cfg.supervision.restart_intensity.max_restarts = 2;
        cfg.supervision.restart_intensity.within = Duration::from_secs(9);
        cfg.supervision.backoff_max = Duration::from_secs(3);
        cfg.http.request_timeout = Duration::from_secs(4);
        let raw = crate::config::RawRunner {
            allowed_nodes: "tags: web".into(),
            ..Default::default()
        };
        cfg.runner.allowed_nodes = raw.settings().unwrap().allowed_nodes;
        let rc = runtime_config(&cfg);
        assert_eq!(rc.hostname, "h1");
        assert_eq!(rc.version, VERSION);
        assert_eq!(rc.max_running, 7);
        assert_eq!(rc.poll_interval, Duration::from_millis(1234));
        assert_eq!(rc.restart_intensity.max_restarts, 2);
        assert_eq!(rc.restart_intensity.within, Duration::from_secs(9));
        assert_eq!(rc.backoff_max, Duration::from_secs(3));
        assert_eq!(rc.request_timeout, Duration::from_secs(4));
        let allowed = rc.allowed_nodes.expect("a predicate for allowedNodes");
        let mut web = Node::new("web1", "10.0.0.1");
        web.tags = vec!["web".into()];
        assert!(allowed(&web));
        assert!(!allowed(&Node::new("db1", "10.0.0.2")));
    }

    #[test]
    fn allowed_nodes_filters_on_the_port_dialled_and_the_executor() {
        let mut cfg = Config::default();
        cfg.ssh.default_port = 22;
        let raw = crate::config::RawRunner {
            allowed_nodes: "executor: ssh port: 22".into(),
            ..Default::default()
        };
        cfg.runner.allowed_nodes = raw.settings().unwrap().allowed_nodes;
        let allowed = runtime_config(&cfg).allowed_nodes.unwrap();
        let on = |port: Option<u16>| {
            let mut n = Node::new("web1", "10.0.0.1");
            n.port = port;
            allowed(&n)
        };
        assert!(
            on(None),
            "a node without a port is dialled on ssh.defaultPort"
        );
        assert!(on(Some(22)));
        assert!(!on(Some(2222)));
        assert!(
            !allowed(&Node::local("web1")),
            "executor: ssh refuses local nodes"
        );
    }

    #[test]
    fn the_defaults_reach_the_runtime_as_documented() {
        let rc = runtime_config(&Config::default());
        assert!(rc.allowed_nodes.is_none());
        assert_eq!(rc.restart_intensity.max_restarts, 5);
        assert_eq!(rc.restart_intensity.within, Duration::from_secs(60));
        assert_eq!(rc.backoff_max, Duration::from_secs(30));
        assert!(!rc.hostname.is_empty());
    }
}
