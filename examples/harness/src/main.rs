//! `rdrunner-harness`: runs the reference control plane from the command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use rdrunner_harness::{
    Cadence, FaultPlan, FaultRule, Harness, HarnessConfig, Thresholds, TlsFiles,
};

/// rdrunner's reference control plane: the runner API (/api/runner/v1) and
/// the admin API (/api/v1) of protocol v1, as described in docs/protocol.md.
#[derive(Parser)]
#[command(name = "rdrunner-harness", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve until interrupted (Ctrl-C or SIGTERM).
    Serve(Serve),
}

#[derive(Parser)]
struct Serve {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:4440")]
    listen: SocketAddr,
    /// Token admin calls must carry (`Authorization: Bearer TOKEN`). Without
    /// it a random one is made and printed once.
    #[arg(long, env = "RDRUNNER_HARNESS_ADMIN_TOKEN")]
    admin_token: Option<String>,
    /// Keep runners, assignments, nodes and executions in this JSON file
    /// across restarts.
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,
    /// PEM certificate chain; serves HTTPS (needs --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Long-poll hold handed to runners at startup, in milliseconds.
    #[arg(long, default_value_t = 4500)]
    long_poll_ms: u64,
    /// Longest a check-in is held, in milliseconds, whatever its `waitMs`
    /// asks (a check-in still answers early when work or a cancel comes).
    #[arg(long, default_value_t = 60_000)]
    max_wait_ms: u64,
    /// Lease of an offer, in milliseconds; an unclaimed offer is offered again after it.
    #[arg(long, default_value_t = 60_000)]
    lease_ms: u64,
    /// Seconds without a check-in after which a replica is down and its
    /// operations are lost.
    #[arg(long, default_value_t = 120)]
    down_after_s: u64,
    /// Inject a fault into a runner API route, as ROUTE:KIND[=VALUE]@PROBABILITY
    /// (repeatable). Routes: startup, checkin, claim, reports, shutdown.
    /// Kinds: drop, delay=MS, status=5XX, retryAfter=SECONDS, truncate,
    /// garbage, hang. Example: --fault reports:status=503@0.2. Change them
    /// at run time with PUT /api/v1/faults.
    #[arg(long = "fault", value_name = "RULE", value_parser = parse_fault)]
    faults: Vec<FaultRule>,
    /// Seed of the fault draw (random if not given; printed at start).
    #[arg(long, value_name = "N")]
    fault_seed: Option<u64>,
}

fn parse_fault(text: &str) -> Result<FaultRule, String> {
    rdrunner_harness::faults::parse_rule(text).map_err(|e| e.to_string())
}

fn main() -> anyhow::Result<()> {
    let Command::Serve(args) = Cli::parse().command;
    let generated = args.admin_token.is_none();
    let config = HarnessConfig {
        listen: args.listen,
        admin_token: args.admin_token,
        state_file: args.state,
        tls: match (args.tls_cert, args.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            _ => None,
        },
        cadence: Cadence {
            long_poll_ms: args.long_poll_ms,
            lease_ms: args.lease_ms,
            ..Cadence::default()
        },
        thresholds: Thresholds {
            down_after: Duration::from_secs(args.down_after_s),
            unknown_after: Duration::from_secs(30.min(args.down_after_s)),
        },
        max_wait: Duration::from_millis(args.max_wait_ms),
        faults: FaultPlan {
            seed: args.fault_seed,
            rules: args.faults,
        },
        ..HarnessConfig::default()
    };
    let harness = Harness::start(config).context("starting the harness")?;
    println!("rdrunner-harness listening on {}", harness.base_url());
    println!("runner API: {}/api/runner/v1", harness.base_url());
    println!("admin API:  {}/api/v1", harness.base_url());
    println!("fault seed: {}", harness.fault_seed());
    for rule in &harness.faults().status().rules {
        println!(
            "fault: {} {} with probability {}",
            serde_json::to_string(&rule.route).unwrap_or_default(),
            serde_json::to_string(&rule.fault).unwrap_or_default(),
            rule.probability
        );
    }
    if generated {
        println!("admin token (shown once): {}", harness.admin_token());
    }
    actix_rt::System::new().block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("listening for SIGTERM")?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.context("listening for Ctrl-C")?,
            _ = term.recv() => {}
        }
        anyhow::Ok(())
    })?;
    println!("rdrunner-harness stopping");
    harness.stop();
    Ok(())
}
