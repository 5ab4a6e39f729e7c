//! The runner child: this benchmark program re-executed as the runner
//! (`bench --runner-child DIR`), for when the release binary is not there or
//! does not run. It is the daemon's own assembly (`rdrunner::daemon`), with
//! nothing changed on top: it reads `DIR/runner.toml` and
//! `DIR/.rdrunner-creds` as `rdrunner run` would, logs to the configured
//! runner.log and operations.log, and drains on SIGTERM as the daemon does.

use std::path::Path;

use anyhow::Context as _;
use rdrunner::config::Config;
use rdrunner::creds::Credentials;
use rdrunner::daemon;
use rdrunner::logging::Logs;

pub fn run(dir: &Path) -> anyhow::Result<()> {
    let env: Vec<(String, String)> = Vec::new();
    let cfg = Config::load(Some(&dir.join("runner.toml")), &env)
        .with_context(|| format!("loading {}", dir.join("runner.toml").display()))?;
    let creds = Credentials::load(
        &dir.join(".rdrunner-creds"),
        &env,
        cfg.runner.allow_insecure_creds_file,
    )
    .context("loading the credentials")?;
    let logs = Logs::open(&cfg.log, cfg.log.stderr).context("opening the logs")?;
    let result = serve(&cfg, &creds, &logs);
    // Every line logged reaches the files before the process ends.
    logs.shutdown();
    result
}

fn serve(cfg: &Config, creds: &Credentials, logs: &Logs) -> anyhow::Result<()> {
    let assembly = daemon::assemble(cfg, creds, logs).context("assembling the runner")?;
    let drain = assembly.drain_timeout;
    let system = actix_rt::System::new();
    system.block_on(async move {
        let handle = assembly.start().context("starting the runtime")?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        tokio::select! {
            _ = term.recv() => handle.drain(drain).await,
            r = handle.wait() => r.context("the runtime ended")?,
        }
        anyhow::Ok(())
    })
}
