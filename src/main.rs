//! The `rdrunner` command line: `run` (the daemon, default), `check` (one
//! startup and check-in against the control plane) and `config` (print or
//! validate the configuration). Exit codes are part of the interface; the
//! systemd unit in `contrib/` relies on them.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use rdrunner::config::Config;
use rdrunner::creds::Credentials;
use rdrunner::daemon::{self, VERSION};
use rdrunner::logging::Logs;
use rdrunner_actors::model::{CheckinRequest, ShutdownRequest, StartupRequest};
use rdrunner_actors::{ControlPlane, ControlPlaneError, RuntimeHandle};
use tokio::signal::unix::SignalKind;

const AFTER_HELP: &str = "\
Exit codes:
  0  ok
  2  bad usage or configuration (including an unusable credentials file)
  3  credentials refused by the control plane (401/403); `run` exits so only
     when they are refused at startup, later refusals are retried
  4  control plane unreachable (`check`; `run` keeps retrying)
  5  supervision escalated: a part of the runner kept failing (the service
     manager should restart it; nothing spooled is lost)

Files:
  ./runner.toml          configuration (see runner.example.toml for every key)
  ./.rdrunner-creds      credentials from the control plane (must be chmod 600)
  ./runner/logs/         runner.log and operations.log
  ./runner/spool/        reports not yet acknowledged by the control plane

Environment:
  RDRUNNER__SECTION__KEY       overrides a configuration key,
                               e.g. RDRUNNER__RUNNER__MAXRUNNING=10
  RUNNER_RUNDECK_CLIENT_ID     overrides RUNDECK_RUNNER_ID of the credentials
  RUNNER_RUNDECK_SERVER_TOKEN  overrides RUNDECK_RUNNER_TOKEN
  RUNNER_RUNDECK_SERVER_URL    overrides RUNDECK_SERVER_URL
  HTTPS_PROXY, NO_PROXY        proxy for the control plane (unless http.proxy is set)

Signals (run): TERM drains running operations then exits; HUP reopens the log files.";

/// rdrunner: checks in with a control plane over HTTPS and runs the node
/// steps of its operations over SSH or on this host.
#[derive(Debug, Parser)]
#[command(name = "rdrunner", version, about, long_about = None, after_help = AFTER_HELP)]
struct Cli {
    /// Configuration file [default: ./runner.toml when it exists]
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Credentials file
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        default_value = ".rdrunner-creds"
    )]
    creds: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the runner (the default)
    Run,
    /// Start up and check in once, print the round trip, then shut the replica down
    Check,
    /// Print the effective configuration (secrets redacted), or validate a file
    Config {
        /// Validate FILE instead of printing the configuration
        #[arg(long, value_name = "FILE")]
        check: Option<PathBuf>,
    },
}

/// An error with the exit code it ends the process with.
struct Failure {
    code: u8,
    error: anyhow::Error,
}

const EXIT_USAGE: u8 = 2;
const EXIT_CREDENTIALS: u8 = 3;
const EXIT_UNREACHABLE: u8 = 4;
const EXIT_ESCALATED: u8 = 5;

fn fail(code: u8) -> impl FnOnce(anyhow::Error) -> Failure {
    move |error| Failure { code, error }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        None | Some(Command::Run) => run(&cli),
        Some(Command::Check) => check(&cli),
        Some(Command::Config { check: None }) => print_config(&cli),
        Some(Command::Config { check: Some(file) }) => check_config(file),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("rdrunner: {:#}", f.error);
            ExitCode::from(f.code)
        }
    }
}

fn environment() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

/// The configuration: `--config FILE`, else `./runner.toml` if present.
fn load_config(cli: &Cli, env: &[(String, String)]) -> Result<Config, Failure> {
    let default = Path::new("runner.toml");
    let file = match &cli.config {
        Some(f) => Some(f.as_path()),
        None => default.exists().then_some(default),
    };
    Config::load(file, env)
        .map_err(anyhow::Error::from)
        .map_err(fail(EXIT_USAGE))
}

fn load_credentials(
    cli: &Cli,
    cfg: &Config,
    env: &[(String, String)],
) -> Result<Credentials, Failure> {
    Credentials::load(&cli.creds, env, cfg.runner.allow_insecure_creds_file)
        .map_err(anyhow::Error::from)
        .map_err(fail(EXIT_USAGE))
}

/// The exit code for a failed control plane call.
fn call_failure(what: &str, url: &str, e: ControlPlaneError) -> Failure {
    let code = if e.is_auth() {
        EXIT_CREDENTIALS
    } else {
        EXIT_UNREACHABLE
    };
    let hint = if e.is_auth() {
        "; check RUNDECK_RUNNER_ID and RUNDECK_RUNNER_TOKEN in the credentials file, or fetch new ones from the control plane"
    } else if rdrunner::transport::TlsProblem::of_error(&e).is_some() {
        // The transport's message already ends with this class's fix.
        ""
    } else {
        "; check the server URL, the network path, the proxy and TLS settings"
    };
    Failure {
        code,
        error: anyhow::anyhow!("{what} at {url} failed: {e}{hint}"),
    }
}

fn check(cli: &Cli) -> Result<(), Failure> {
    let env = environment();
    let cfg = load_config(cli, &env)?;
    let creds = load_credentials(cli, &cfg, &env)?;
    let (log, _guard) = rdrunner::logging::stderr_logger(slog::Level::Warning);
    let cp = daemon::transport(&cfg, &creds, &log)
        .map_err(anyhow::Error::from)
        .map_err(fail(EXIT_USAGE))?;
    let url = cp.base_url().to_owned();
    let system = actix_rt::System::new();
    system.block_on(async {
        let up = cp
            .startup(StartupRequest {
                hostname: daemon::hostname(&cfg.runner),
                version: VERSION.to_owned(),
                pid: std::process::id(),
                max_running: cfg.runner.max_running,
                tags: cfg.runner.tags.clone(),
            })
            .await
            .map_err(|e| call_failure("startup", &url, e))?;
        let started = Instant::now();
        let checked = cp
            .checkin(
                CheckinRequest {
                    replica_id: up.replica_id.clone(),
                    running: Vec::new(),
                    queued: 0,
                    max_running: cfg.runner.max_running,
                    uptime_s: 0,
                    version: VERSION.to_owned(),
                    pongs: Vec::new(),
                },
                Duration::ZERO,
            )
            .await;
        let rtt = started.elapsed();
        // The replica is shut down whatever the check-in said.
        let down = cp
            .shutdown(ShutdownRequest {
                replica_id: up.replica_id.clone(),
                reason: "rdrunner check".to_owned(),
            })
            .await;
        checked.map_err(|e| call_failure("check-in", &url, e))?;
        println!("server:     {}", creds.server_url);
        println!("runner id:  {}", creds.runner_id);
        println!("replica id: {}", up.replica_id);
        println!("round trip: {} ms (check-in, waitMs=0)", rtt.as_millis());
        down.map_err(|e| call_failure("shutdown", &url, e))?;
        Ok(())
    })
}

fn print_config(cli: &Cli) -> Result<(), Failure> {
    let env = environment();
    let cfg = load_config(cli, &env)?;
    print!("{}", cfg.to_redacted_toml());
    // The credentials in use, the token redacted (its Display does that).
    println!();
    match load_credentials(cli, &cfg, &env) {
        Ok(c) => println!(
            "# credentials ({}): runner id {}, server {}, token {}",
            cli.creds.display(),
            c.runner_id,
            c.server_url,
            c.token
        ),
        Err(f) => println!("# credentials: {:#}", f.error),
    }
    Ok(())
}

fn check_config(file: &Path) -> Result<(), Failure> {
    let env = environment();
    Config::load(Some(file), &env)
        .with_context(|| format!("{} is not a valid configuration", file.display()))
        .map_err(fail(EXIT_USAGE))?;
    println!("{}: ok", file.display());
    Ok(())
}

fn run(cli: &Cli) -> Result<(), Failure> {
    let env = environment();
    let cfg = load_config(cli, &env)?;
    let creds = load_credentials(cli, &cfg, &env)?;
    let logs = Logs::open(&cfg.log, cfg.log.stderr)
        .map_err(anyhow::Error::from)
        .map_err(fail(EXIT_USAGE))?;
    let result = serve(&cfg, &creds, &logs);
    match &result {
        Ok(()) => slog::info!(logs.runner, "rdrunner stopped"),
        Err(f) => slog::error!(logs.runner, "rdrunner stopped";
            "error" => format!("{:#}", f.error), "exit_code" => f.code),
    }
    // Every line logged so far reaches the files before the process ends.
    logs.shutdown();
    result
}

/// The daemon: the assembled runner (see `rdrunner::daemon`), until a
/// drain or an escalation ends it.
fn serve(cfg: &Config, creds: &Credentials, logs: &Logs) -> Result<(), Failure> {
    let log = logs.runner.clone();
    let reopener = logs.reopener();

    actix_rt::System::new().block_on(async move {
        // The handlers go in before anything is logged: a HUP (log rotation)
        // or TERM that arrives once "rdrunner starting" is in runner.log must
        // be handled, not kill the process by its default action.
        let signal = |kind: SignalKind| {
            tokio::signal::unix::signal(kind)
                .context("cannot install a signal handler")
                .map_err(fail(EXIT_USAGE))
        };
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        #[allow(unused_mut)]
        let mut assembly = daemon::assemble(cfg, creds, logs)
            .map_err(anyhow::Error::from)
            .map_err(fail(EXIT_USAGE))?;
        let drain_timeout = assembly.drain_timeout;
        // Only in builds for the chaos suite: fail points armed from the
        // environment, on top of the daemon's own assembly.
        #[cfg(feature = "failpoints")]
        {
            assembly.builder = assembly.builder.fail_points(fail_points_from_env(&log)?);
        }
        let handle = assembly
            .start()
            .map_err(anyhow::Error::from)
            .map_err(fail(EXIT_USAGE))?;
        let wait = handle.wait();
        tokio::pin!(wait);
        let mut draining = false;
        let mut started = false;
        let mut refused: Option<String> = None;
        let mut startup_watch = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                outcome = &mut wait => {
                    return match (outcome, refused) {
                        (_, Some(why)) => Err(Failure {
                            code: EXIT_CREDENTIALS,
                            error: anyhow::anyhow!(
                                "the control plane refused the runner's credentials at startup: {why}; \
                                 check RUNDECK_RUNNER_ID and RUNDECK_RUNNER_TOKEN, or fetch new credentials"
                            ),
                        }),
                        (Ok(()), None) => Ok(()),
                        // Escalated, or the System stopped under the runtime.
                        (Err(e), None) => Err(Failure {
                            code: EXIT_ESCALATED,
                            error: anyhow::Error::from(e),
                        }),
                    };
                }
                _ = term.recv() => shutdown_signal(&handle, &log, &mut draining, drain_timeout, "TERM"),
                _ = int.recv() => shutdown_signal(&handle, &log, &mut draining, drain_timeout, "INT"),
                _ = hup.recv() => match reopener.reopen() {
                    Ok(()) => slog::info!(log, "HUP: log files reopened"),
                    Err(e) => slog::error!(log, "HUP: cannot reopen the log files"; "error" => %e),
                },
                _ = startup_watch.tick(), if !started && refused.is_none() => {
                    // Refused credentials at startup will not fix themselves:
                    // exit 3 for an operator to look. Later refusals (a
                    // regenerated token) are retried slowly by the runtime.
                    let stats = handle.stats();
                    if stats.replica_id.is_some() {
                        started = true;
                    } else if stats.credentials_refused {
                        refused = Some(stats.last_error.unwrap_or_else(|| "401/403".into()));
                        handle.abort_all();
                    }
                }
            }
        }
    })
}

/// `RDRUNNER_FAILPOINTS=name=panic,name=error,name=abort,name=delay:MS` arms fail points
/// (builds with the `failpoints` feature only, for the chaos suite).
#[cfg(feature = "failpoints")]
fn fail_points_from_env(log: &slog::Logger) -> Result<rdrunner_actors::FailPoints, Failure> {
    use rdrunner_actors::{FailAction, FailPoints};
    let fp = FailPoints::new();
    let Ok(spec) = std::env::var("RDRUNNER_FAILPOINTS") else {
        return Ok(fp);
    };
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let bad = || {
            Failure {
            code: EXIT_USAGE,
            error: anyhow::anyhow!(
                "RDRUNNER_FAILPOINTS: `{item}` is not NAME=panic, NAME=error, NAME=abort or NAME=delay:MS"
            ),
        }
        };
        let (name, action) = item.split_once('=').ok_or_else(bad)?;
        let action = match action {
            "panic" => FailAction::Panic,
            "error" => FailAction::Error,
            "abort" => FailAction::Abort,
            other => {
                let ms = other
                    .strip_prefix("delay:")
                    .and_then(|m| m.parse().ok())
                    .ok_or_else(bad)?;
                FailAction::Delay(Duration::from_millis(ms))
            }
        };
        slog::warn!(log, "fail point armed"; "name" => name, "action" => ?action);
        fp.set(name, action);
    }
    Ok(fp)
}

/// TERM or INT: the first drains, the second aborts what still runs.
fn shutdown_signal(
    handle: &RuntimeHandle,
    log: &slog::Logger,
    draining: &mut bool,
    drain_timeout: Duration,
    name: &str,
) {
    if *draining {
        slog::warn!(log, "second signal: aborting the running operations"; "signal" => name);
        handle.abort_all();
    } else {
        *draining = true;
        slog::info!(log, "signal: draining (running operations may finish)";
            "signal" => name, "drain_timeout_ms" => drain_timeout.as_millis() as u64);
        // The drain goes on without its future; `wait` sees its end.
        std::mem::drop(handle.drain(drain_timeout));
    }
}
