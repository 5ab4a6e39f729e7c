//! The runner child: this benchmark program re-executed as the runner
//! (`bench --runner-child DIR`), built from the daemon's own parts (its
//! configuration, credentials, HTTP transport, SSH and local executors, disk
//! spool) on the supervision runtime, for when the release binary is not
//! there or does not run. It reads `DIR/runner.toml` and
//! `DIR/.rdrunner-creds`, and drains on SIGTERM as the daemon does.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use rdrunner::config::Config;
use rdrunner::creds::Credentials;
use rdrunner::local::LocalExecutor;
use rdrunner::spool::DiskSpool;
use rdrunner::ssh::SshExecutor;
use rdrunner::transport::{HttpControlPlane, TransportSettings};
use rdrunner_actors::model::ExecutorKind;
use rdrunner_actors::{Runtime, RuntimeConfig};

pub fn run(dir: &Path) -> anyhow::Result<()> {
    let env: Vec<(String, String)> = Vec::new();
    let cfg = Config::load(Some(&dir.join("runner.toml")), &env)
        .with_context(|| format!("loading {}", dir.join("runner.toml").display()))?;
    let creds = Credentials::load(&dir.join(".rdrunner-creds"), &env, false)
        .context("loading the credentials")?;
    let log = slog::Logger::root(slog::Discard, slog::o!());
    let version = env!("CARGO_PKG_VERSION");
    let cp = HttpControlPlane::new(TransportSettings::new(&creds, &cfg, version), &log)
        .context("building the HTTP transport")?;
    let spool = DiskSpool::open(&cfg.spool.dir, cfg.spool.fsync, cfg.spool.segment_bytes)
        .with_context(|| format!("opening the spool {}", cfg.spool.dir.display()))?;
    let config = RuntimeConfig {
        hostname: cfg
            .runner
            .hostname
            .clone()
            .unwrap_or_else(|| "bench".into()),
        version: version.into(),
        pid: std::process::id(),
        tags: cfg.runner.tags.clone(),
        max_running: cfg.runner.max_running,
        long_polling: cfg.runner.long_polling,
        poll_interval: cfg.runner.poll_interval,
        min_checkin_gap: cfg.runner.min_checkin_gap,
        report_interval: cfg.runner.report_interval,
        report_batch_max: cfg.runner.report_batch_max,
        kill_grace: cfg.runner.kill_grace,
        request_timeout: cfg.http.request_timeout,
        ..RuntimeConfig::default()
    };
    let drain = cfg.runner.drain_timeout;
    let system = actix_rt::System::new();
    system.block_on(async move {
        let handle = Runtime::builder()
            .config(config)
            .control_plane(Arc::new(cp))
            .executor(
                ExecutorKind::Ssh,
                Arc::new(SshExecutor::new(cfg.ssh.settings(), log.clone())),
            )
            .executor(ExecutorKind::Local, Arc::new(LocalExecutor::new()))
            .spool(Box::new(spool))
            .logger(log.clone())
            .start()
            .context("starting the runtime")?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        tokio::select! {
            _ = term.recv() => handle.drain(drain).await,
            r = handle.wait() => r.context("the runtime ended")?,
        }
        anyhow::Ok(())
    })
}
