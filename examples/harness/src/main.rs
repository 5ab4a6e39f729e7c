//! `rdrunner-harness`: runs the reference control plane from the command line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
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
    /// File holding the token admin calls must carry (`Authorization:
    /// Bearer TOKEN`), readable by its owner only. Or set the environment
    /// variable RDRUNNER_HARNESS_ADMIN_TOKEN. With neither, a random token
    /// is made and printed once.
    #[arg(long, value_name = "FILE")]
    admin_token_file: Option<PathBuf>,
    /// Refused: a token on the command line is visible to every user in
    /// `ps`. Kept only to say so.
    #[arg(long, hide = true, value_name = "TOKEN")]
    admin_token: Option<String>,
    /// Keep runners, assignments, nodes and executions in this JSON file
    /// across restarts.
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,
    /// The URL runners reach this control plane at, when it is not the
    /// listen address (behind a TLS front or a proxy): written into every
    /// credentials file as RUNDECK_SERVER_URL, and so shown by the Runner
    /// Management page. A plain http:// URL that is not loopback is
    /// allowed with a warning.
    #[arg(long, value_name = "URL", env = "RDRUNNER_HARNESS_PUBLIC_URL")]
    public_url: Option<String>,
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
    /// Replicas kept per runner: a startup beyond it prunes the replica
    /// down longest, or is refused (409 too_many_replicas) when all are alive.
    #[arg(long, default_value_t = rdrunner_harness::state::DEFAULT_MAX_REPLICAS as u64,
          value_parser = clap::value_parser!(u64).range(1..))]
    max_replicas: u64,
    /// How long a replica stays listed once down (shut down, or silent for
    /// --down-after-s): then it is removed, and the removal is printed.
    /// A number of seconds, or with units: 600s, 10m, 1h30m.
    #[arg(long, env = "RDRUNNER_HARNESS_PRUNE_DOWN_REPLICAS_AFTER", default_value = "10m",
          value_name = "DURATION", value_parser = parse_duration)]
    prune_down_replicas_after: Duration,
    /// How long a ping (POST /api/v1/runners/{id}/ping) waits for the
    /// runner's answer before it is timed out. Seconds, or with units.
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = parse_duration)]
    ping_timeout: Duration,
}

/// The environment variable that may hold the admin token.
const ADMIN_TOKEN_ENV: &str = "RDRUNNER_HARNESS_ADMIN_TOKEN";

/// The admin token from `--admin-token-file` or the environment (`None`:
/// make one). A token on the command line is refused, as is a token file
/// other users may read, an empty token, and both sources at once.
fn admin_token(args: &Serve, env: Option<String>) -> anyhow::Result<Option<String>> {
    if args.admin_token.is_some() {
        anyhow::bail!(
            "--admin-token is no longer accepted: a command line is visible to every user in `ps`; put the token in a file readable only by you and pass --admin-token-file FILE, or set {ADMIN_TOKEN_ENV}"
        );
    }
    let env = env.filter(|t| !t.is_empty());
    match (&args.admin_token_file, env) {
        (Some(_), Some(_)) => anyhow::bail!(
            "both --admin-token-file and {ADMIN_TOKEN_ENV} are set; give the admin token one way"
        ),
        (Some(path), None) => read_token_file(path).map(Some),
        (None, env) => Ok(env),
    }
}

fn read_token_file(path: &Path) -> anyhow::Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let meta =
        std::fs::metadata(path).with_context(|| format!("admin token file {}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        anyhow::bail!(
            "admin token file {} has mode {mode:o}, so other users may read it; chmod 600 it",
            path.display()
        );
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("admin token file {}", path.display()))?;
    let token = text.trim_end_matches(['\n', '\r']);
    if token.is_empty() || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        anyhow::bail!(
            "admin token file {} must hold the token alone, on one line without spaces",
            path.display()
        );
    }
    Ok(token.to_owned())
}

/// A duration as people write it: `600` (seconds), or numbers with units
/// `ms`, `s`, `m`, `h`, one after another (`600s`, `10m`, `1h30m`).
fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad =
        || format!("`{text}` is not a duration; write e.g. 600 (seconds), 600s, 10m or 1h30m");
    let text = text.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut rest = text;
    let mut total = Duration::ZERO;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let per_unit_ms: u64 = match &rest[..unit] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            _ => return Err(bad()),
        };
        rest = &rest[unit..];
        let part = n.checked_mul(per_unit_ms).ok_or_else(bad)?;
        total = total
            .checked_add(Duration::from_millis(part))
            .ok_or_else(bad)?;
    }
    Ok(total)
}

fn parse_fault(text: &str) -> Result<FaultRule, String> {
    rdrunner_harness::faults::parse_rule(text).map_err(|e| e.to_string())
}

fn main() -> anyhow::Result<()> {
    let Command::Serve(args) = Cli::parse().command;
    let token = admin_token(&args, std::env::var(ADMIN_TOKEN_ENV).ok())?;
    let generated = token.is_none();
    if let Some(url) = &args.public_url {
        if let Some(warning) =
            rdrunner_harness::check_public_url(url).map_err(anyhow::Error::msg)?
        {
            eprintln!("rdrunner-harness: {warning}");
        }
    }
    let config = HarnessConfig {
        listen: args.listen,
        admin_token: token,
        state_file: args.state,
        public_url: args.public_url,
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
        max_replicas: usize::try_from(args.max_replicas).unwrap_or(usize::MAX),
        prune_down_replicas_after: args.prune_down_replicas_after,
        ping_timeout: args.ping_timeout,
        log_events: true,
        ..HarnessConfig::default()
    };
    let harness = Harness::start(config).context("starting the harness")?;
    println!("rdrunner-harness listening on {}", harness.base_url());
    println!("runner API: {}/api/runner/v1", harness.base_url());
    println!("admin API:  {}/api/v1", harness.base_url());
    println!("Runner Management page: {}/", harness.base_url());
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn serve(args: &[&str]) -> Serve {
        let mut argv = vec!["rdrunner-harness", "serve"];
        argv.extend_from_slice(args);
        let Command::Serve(s) = Cli::try_parse_from(argv).unwrap().command;
        s
    }

    #[test]
    fn the_admin_token_comes_from_a_private_file_or_the_environment_never_the_command_line() {
        let e = admin_token(&serve(&["--admin-token", "s3cret"]), None).unwrap_err();
        assert!(e.to_string().contains("--admin-token-file"), "{e}");

        assert_eq!(admin_token(&serve(&[]), None).unwrap(), None);
        assert_eq!(
            admin_token(&serve(&[]), Some("from-env".into())).unwrap(),
            Some("from-env".into())
        );

        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("token");
        std::fs::write(&path, "from-file\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let file = path.to_str().unwrap();
        assert_eq!(
            admin_token(&serve(&["--admin-token-file", file]), None).unwrap(),
            Some("from-file".into())
        );
        let e = admin_token(&serve(&["--admin-token-file", file]), Some("x".into())).unwrap_err();
        assert!(e.to_string().contains("one way"), "{e}");

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = admin_token(&serve(&["--admin-token-file", file]), None).unwrap_err();
        assert!(e.to_string().contains("chmod 600"), "{e}");

        std::fs::write(&path, "two\nlines\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(admin_token(&serve(&["--admin-token-file", file]), None).is_err());
    }

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(parse_duration("600"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("600s"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        for bad in [
            "",
            "m",
            "10x",
            "ten minutes",
            "-5s",
            "1.5h",
            "99999999999999999999h",
        ] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains("10m"), "{bad}: {e}");
        }
        assert_eq!(
            serve(&[]).prune_down_replicas_after,
            Duration::from_secs(600)
        );
        assert_eq!(
            serve(&["--prune-down-replicas-after", "90s"]).prune_down_replicas_after,
            Duration::from_secs(90)
        );
        assert_eq!(serve(&[]).ping_timeout, Duration::from_secs(30));
    }

    #[test]
    fn the_public_url_comes_from_the_flag_or_the_environment() {
        let s = serve(&["--public-url", "https://cp.example.com"]);
        assert_eq!(s.public_url.as_deref(), Some("https://cp.example.com"));
    }

    #[test]
    fn max_replicas_is_at_least_one() {
        assert_eq!(serve(&[]).max_replicas, 16);
        assert_eq!(serve(&["--max-replicas", "3"]).max_replicas, 3);
        let argv = ["rdrunner-harness", "serve", "--max-replicas", "0"];
        assert!(Cli::try_parse_from(argv).is_err());
    }
}
