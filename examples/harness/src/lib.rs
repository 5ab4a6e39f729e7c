//! rdrunner's reference control plane ("harness"): the runner API and the
//! admin API of protocol v1 (`docs/protocol.md`) on actix-web, for tests, the
//! demo, the chaos suite and the benchmarks.
//!
//! Codemap: `state` is the control plane as a plain state machine (runners,
//! replicas, offers and leases, executions, report stores); `server` is the
//! thin HTTP layer over it, built from the named route table in `routes`;
//! `client` is the typed admin client; `persist` writes the state file;
//! `faults` injects seeded faults per runner API route; `proxy` is a TCP
//! fault proxy; `metrics` writes `/metrics`; `page` serves the Runner
//! Management page (static files over the public admin API).
//! [`Harness::start`] runs the server on its own thread and actix System.

#![forbid(unsafe_code)]

pub mod admin_api;
pub mod client;
pub mod error;
pub mod faults;
pub mod invariants;
mod metrics;
mod page;
mod persist;
pub mod proxy;
pub mod routes;
mod server;
pub mod sshd;
pub mod state;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::{Rng, RngCore};
use rdrunner_actors::model::Report;

pub use admin_api::*;
pub use client::{AdminClient, AdminError};
pub use error::{ApiError, HarnessError};
pub use faults::{Fault, FaultPlan, FaultRule, FaultStatus};
pub use routes::{FaultTable, RouteName, ROUTES};
pub use state::{Cadence, Thresholds};

use server::Shared;
use state::ControlState;

/// How long the server keeps an idle connection open.
const SERVER_KEEP_ALIVE: Duration = Duration::from_secs(75);

/// TLS for the harness's listener: PEM files of the certificate chain and
/// its private key.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// How to run a harness.
#[derive(Debug, Clone)]
pub struct HarnessConfig {
    /// Where to listen; `127.0.0.1:0` (a free port) by default.
    pub listen: SocketAddr,
    /// The admin token; `None` makes a random one ([`Harness::admin_token`]).
    pub admin_token: Option<String>,
    /// Keep runners, assignments, nodes and executions in this JSON file
    /// across restarts.
    pub state_file: Option<PathBuf>,
    /// Serve HTTPS with these files instead of plain HTTP.
    pub tls: Option<TlsFiles>,
    /// The URL runners reach the control plane at (behind a TLS front or a
    /// proxy), written into credentials as `RUNDECK_SERVER_URL`; the
    /// listen address when `None`.
    pub public_url: Option<String>,
    /// The cadence `POST /startup` hands out (tests use small values).
    pub cadence: Cadence,
    /// When silent replicas count as unknown, then down (and lose their operations).
    pub thresholds: Thresholds,
    /// Largest request body accepted, in bytes (8 MiB by default).
    pub body_limit: usize,
    /// Longest long poll granted, whatever `waitMs` asks (60 s by default).
    pub max_wait: Duration,
    /// Faults injected into the runner API from the start (none by
    /// default); the seed, given or drawn, is reported by
    /// [`Harness::fault_seed`] and `GET /api/v1/faults`.
    pub faults: FaultPlan,
    /// Replicas kept per runner (16 by default): a startup beyond it prunes
    /// the replica down longest, or is refused (409 `too_many_replicas`)
    /// when none is down, so a runner restarting in a loop cannot grow the
    /// state without bound.
    pub max_replicas: usize,
    /// How long a replica stays listed once down (10 minutes by default);
    /// then it is removed, and the removal is logged when `log_events` is on.
    pub prune_down_replicas_after: Duration,
    /// How long a ping waits for a runner's answer before it is `timedOut`
    /// (30 s by default).
    pub ping_timeout: Duration,
    /// Print control plane events (a pruned replica) on standard output,
    /// one line each with its time, as `rdrunner-harness serve` does; off
    /// by default.
    pub log_events: bool,
}

impl Default for HarnessConfig {
    fn default() -> Self {
        HarnessConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_token: None,
            state_file: None,
            tls: None,
            public_url: None,
            cadence: Cadence::default(),
            thresholds: Thresholds::default(),
            body_limit: 8 * 1024 * 1024,
            max_wait: Duration::from_secs(60),
            faults: FaultPlan::default(),
            max_replicas: state::DEFAULT_MAX_REPLICAS,
            prune_down_replicas_after: state::DEFAULT_PRUNE_DOWN_REPLICAS_AFTER,
            ping_timeout: state::DEFAULT_PING_TIMEOUT,
            log_events: false,
        }
    }
}

/// A running harness. Dropping it (or [`Harness::stop`]) stops the server.
pub struct Harness {
    base_url: String,
    admin_token: String,
    shared: Arc<Shared>,
    tls_roots: Option<rustls::RootCertStore>,
    server: Option<actix_web::dev::ServerHandle>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl Harness {
    /// Binds, loads the state file if any, and serves on a thread of its
    /// own with its own actix System, so it works from sync code, async
    /// tests and from inside another System alike.
    pub fn start(config: HarnessConfig) -> Result<Harness, HarnessError> {
        let admin_token = config.admin_token.clone().unwrap_or_else(random_token);
        let faults = FaultTable::with_plan(&config.faults).map_err(HarnessError::Faults)?;
        let listener =
            std::net::TcpListener::bind(config.listen).map_err(|source| HarnessError::Bind {
                addr: config.listen.to_string(),
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| HarnessError::Bind {
            addr: config.listen.to_string(),
            source,
        })?;
        let scheme = if config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let base_url = format!("{scheme}://{addr}");

        let server_url = config
            .public_url
            .as_deref()
            .map(|u| u.trim_end_matches('/').to_owned())
            .unwrap_or_else(|| base_url.clone());
        let mut control = ControlState::new(config.cadence.clone(), config.thresholds, server_url);
        control.set_max_replicas(config.max_replicas);
        control.set_prune_after(config.prune_down_replicas_after);
        control.set_ping_timeout(config.ping_timeout);
        if let Some(path) = &config.state_file {
            let snapshot = persist::load(path).map_err(|message| HarnessError::StateLoad {
                path: path.clone(),
                message,
            })?;
            if let Some(s) = snapshot {
                control.restore(s, Instant::now());
            }
        }
        let (tls, tls_roots) = match &config.tls {
            Some(files) => {
                let (server_config, roots) = load_tls(files)?;
                (Some(server_config), Some(roots))
            }
            None => (None, None),
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(control),
            admin_token_hash: state::token_hash(&admin_token),
            body_limit: config.body_limit,
            max_wait: config.max_wait,
            state_file: config.state_file.clone(),
            save_lock: Mutex::new(()),
            faults,
            checkins_held: std::sync::atomic::AtomicU64::new(0),
        });
        let sweep_every = (config.thresholds.down_after / 4)
            .clamp(Duration::from_millis(10), Duration::from_secs(1));
        let log_events = config.log_events;

        let (tx, rx) = std::sync::mpsc::channel();
        let for_thread = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("rdrunner-harness {addr}"))
            .spawn(move || {
                let system = actix_rt::System::new();
                system.block_on(async move {
                    let app_shared = for_thread.clone();
                    let server =
                        actix_web::HttpServer::new(move || server::app(app_shared.clone()))
                            .workers(1)
                            .on_connect(|io, ext| {
                                if let Some(socket) = faults::ConnSocket::of(io) {
                                    ext.insert(socket);
                                }
                            })
                            .disable_signals()
                            // Idle connections stay open longer than any
                            // client keeps one in its pool (awc: 15 s), so a
                            // client never sends a request on a connection
                            // the server is closing at that moment (with
                            // actix-web's 5 s default, a request sent as the
                            // server's timer fires gets EOF: "Connector has
                            // been disconnected").
                            .keep_alive(SERVER_KEEP_ALIVE)
                            .shutdown_timeout(1);
                    let server = match tls {
                        Some(cfg) => server.listen_rustls_0_23(listener, cfg),
                        None => server.listen(listener),
                    };
                    let server = match server {
                        Ok(s) => s.run(),
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = tx.send(Ok(server.handle()));
                    let sweeper = actix_rt::spawn(async move {
                        loop {
                            actix_rt::time::sleep(sweep_every).await;
                            let pruned = for_thread.lock().prune(Instant::now());
                            if log_events {
                                let at =
                                    rdrunner_actors::model::rfc3339(std::time::SystemTime::now());
                                for p in pruned {
                                    println!("{at} {p}");
                                }
                            }
                            let _ = for_thread.persist();
                        }
                    });
                    let _ = server.await;
                    sweeper.abort();
                });
            })
            .map_err(|e| HarnessError::Thread(e.to_string()))?;
        let handle = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(h)) => h,
            Ok(Err(source)) => {
                let _ = thread.join();
                return Err(HarnessError::Bind {
                    addr: addr.to_string(),
                    source,
                });
            }
            Err(e) => return Err(HarnessError::Thread(e.to_string())),
        };
        Ok(Harness {
            base_url,
            admin_token,
            shared,
            tls_roots,
            server: Some(handle),
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT` (or `https://`), without a trailing slash.
    pub fn base_url(&self) -> String {
        self.base_url.clone()
    }

    /// The address the harness listens on.
    pub fn addr(&self) -> SocketAddr {
        self.base_url
            .rsplit("//")
            .next()
            .and_then(|a| a.parse().ok())
            .expect("base_url holds the bound address")
    }

    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// A client of this harness's admin API (trusting its own certificate
    /// chain when TLS is on). Use it inside an actix/tokio runtime.
    pub fn admin(&self) -> AdminClient {
        match &self.tls_roots {
            Some(roots) => {
                AdminClient::with_roots(&self.base_url, &self.admin_token, roots.clone())
            }
            None => AdminClient::new(&self.base_url, &self.admin_token),
        }
    }

    /// Arrival instant of every check-in, per replica id, of one runner.
    pub fn checkins(&self, runner_id: &str) -> BTreeMap<String, Vec<Instant>> {
        self.shared.lock().checkins(runner_id)
    }

    /// The reports stored for one operation, in seq order (empty if unknown).
    pub fn reports(&self, op_id: &str) -> Vec<Report> {
        self.shared.lock().stored_reports(op_id).unwrap_or_default()
    }

    /// Reports of the operation dropped as duplicates (seq already stored).
    pub fn duplicates_dropped(&self, op_id: &str) -> u64 {
        self.shared
            .lock()
            .operation_counters(op_id)
            .map_or(0, |c| c.0)
    }

    /// Reports of the operation refused as gaps (seq past stored + 1).
    pub fn gaps_refused(&self, op_id: &str) -> u64 {
        self.shared
            .lock()
            .operation_counters(op_id)
            .map_or(0, |c| c.1)
    }

    /// Everything observed about one runner (as `GET /observe/runners/{id}`).
    pub fn observe_runner(&self, runner_id: &str) -> Option<RunnerObservation> {
        self.shared.lock().observe_runner(runner_id).ok()
    }

    /// One execution's status, without going through HTTP.
    pub fn execution(&self, id: u64) -> Option<ExecutionStatus> {
        self.shared.lock().execution(id).ok()
    }

    /// The per-route fault table (and request counts per route).
    pub fn faults(&self) -> &FaultTable {
        &self.shared.faults
    }

    /// The seed of the fault draw (the configured one, or the one drawn at
    /// start); a run with the same seed and requests replays its faults.
    pub fn fault_seed(&self) -> u64 {
        self.shared.faults.seed()
    }

    /// Stops the server and waits for its thread.
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        if let Some(handle) = self.server.take() {
            // The stop command is sent when `stop` is called; the returned
            // future only waits for completion, which joining the thread does.
            drop(handle.stop(false));
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = self.shared.persist();
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// Why a public URL is refused, or `Ok(Some(warning))` when it is plain
/// `http://` to a host other than loopback (runner tokens would cross the
/// network unencrypted).
pub fn check_public_url(url: &str) -> Result<Option<String>, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("public URL `{url}` has no scheme; write https://HOST[:PORT]"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() {
        return Err(format!("public URL `{url}` has no host"));
    }
    match scheme {
        "https" => Ok(None),
        "http" => {
            let host = match authority.strip_prefix('[') {
                Some(v6) => v6.split(']').next().unwrap_or_default(),
                None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
            };
            let loopback = host.eq_ignore_ascii_case("localhost")
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            Ok((!loopback).then(|| {
                format!(
                    "warning: the public URL {url} is plain http:// to a host that is not loopback: runner tokens would cross the network unencrypted (and runners refuse it unless http.allowPlaintext is on); serve https:// or put a TLS front before the control plane"
                )
            }))
        }
        other => Err(format!(
            "public URL `{url}` has the scheme `{other}`; use https:// (or http:// on loopback)"
        )),
    }
}

/// A random lowercase hex id of `bytes` bytes.
pub(crate) fn random_id(bytes: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..bytes)
        .map(|_| format!("{:02x}", rng.gen::<u8>()))
        .collect()
}

/// A random secret: 32 bytes, URL-safe base64.
pub(crate) fn random_token() -> String {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn load_tls(
    files: &TlsFiles,
) -> Result<(rustls::ServerConfig, rustls::RootCertStore), HarnessError> {
    let tls_err = |what: &'static str, path: &PathBuf, message: String| HarnessError::Tls {
        what,
        path: path.clone(),
        message,
    };
    let cert_pem = std::fs::read(&files.cert)
        .map_err(|e| tls_err("certificate", &files.cert, e.to_string()))?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<_, _>>()
        .map_err(|e| tls_err("certificate", &files.cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(tls_err(
            "certificate",
            &files.cert,
            "no PEM certificate in it".into(),
        ));
    }
    let key_pem =
        std::fs::read(&files.key).map_err(|e| tls_err("key", &files.key, e.to_string()))?;
    let key = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| tls_err("key", &files.key, e.to_string()))?
        .ok_or_else(|| tls_err("key", &files.key, "no PEM private key in it".into()))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in &certs {
        // The chain's own certificates are what the admin client trusts.
        let _ = roots.add(c.clone());
    }
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| tls_err("certificate", &files.cert, e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| {
        tls_err(
            "key",
            &files.key,
            format!("does not fit the certificate: {e}"),
        )
    })?;
    Ok((config, roots))
}

#[cfg(test)]
mod tests {
    use super::check_public_url;

    #[test]
    fn a_plain_http_public_url_off_loopback_is_warned_about() {
        assert_eq!(check_public_url("https://cp.example.com"), Ok(None));
        assert_eq!(check_public_url("http://127.0.0.1:4440"), Ok(None));
        assert_eq!(check_public_url("http://localhost:4440/"), Ok(None));
        assert_eq!(check_public_url("http://[::1]:4440"), Ok(None));
        let w = check_public_url("http://cp.example.com:4440")
            .unwrap()
            .unwrap();
        assert!(w.contains("unencrypted"), "{w}");
        assert!(check_public_url("http://10.1.2.3").unwrap().is_some());
        assert!(check_public_url("cp.example.com").is_err());
        assert!(check_public_url("ftp://cp.example.com").is_err());
        assert!(check_public_url("https://").is_err());
    }
}
