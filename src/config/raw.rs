//! The configuration exactly as written: one raw serde struct per TOML
//! section, and for each the step that validates it into its subsystem's
//! own settings type. The raw defaults are not written here: each is the
//! subsystem's default spelled as the file spells it, so a default is
//! written once, beside the subsystem it configures.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rdrunner_actors::filter::NodeFilter;
use rdrunner_actors::RestartIntensity;
use serde::{Deserialize, Serialize};

use super::error::{invalid, ConfigError};
use crate::logging::{level_from_name, level_name, LogFormat, LogSettings};
use crate::metrics::MetricsSettings;
use crate::runner::{AllowedNodes, RunnerSettings, SupervisionSettings, ALL_NODES};
use crate::spool::{FsyncPolicy, SpoolSettings};
use crate::ssh::{
    expand_home, store_path, KeyBinding, KnownHostsPolicy, NodeSet, SshSettings,
    DEFAULT_KNOWN_HOSTS_FILE,
};
use crate::transport::{HttpSettings, ProxySettings, TlsSettings};

/// The whole file as written. Every field has a default, so an empty file
/// (or none at all) is a valid configuration.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub runner: RawRunner,
    pub http: RawHttp,
    pub tls: RawTls,
    pub ssh: RawSsh,
    pub spool: RawSpool,
    pub log: RawLog,
    pub supervision: RawSupervision,
    pub metrics: RawMetrics,
}

/// A duration as the file writes it: whole milliseconds.
fn millis(d: Duration) -> u64 {
    d.as_millis().try_into().unwrap_or(u64::MAX)
}

/// A path as the file writes it.
fn path_text(p: &Path) -> String {
    p.display().to_string()
}

/// `v` milliseconds; 0 is refused, naming `key`.
fn positive(key: &str, v: u64) -> Result<Duration, ConfigError> {
    if v == 0 {
        Err(invalid(key, "must be greater than 0"))
    } else {
        Ok(Duration::from_millis(v))
    }
}

fn non_empty(s: &str) -> Option<String> {
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_owned())
}

// ---------------------------------------------------------------------------
// [runner]
// ---------------------------------------------------------------------------

/// `[runner]`: identity, capacity and cadence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "camelCase")]
pub struct RawRunner {
    /// Hostname reported at startup; empty = the machine's hostname.
    pub hostname: String,
    /// Tags reported at startup.
    pub tags: Vec<String>,
    /// Operations run at the same time; more are queued.
    pub max_running: u32,
    /// Whether check-ins are held open by the server (long polling).
    pub long_polling: bool,
    /// Check-in interval when not long polling (milliseconds).
    pub poll_interval_ms: u64,
    /// Floor between two check-ins (milliseconds).
    pub min_checkin_gap_ms: u64,
    /// How often buffered reports are sent (milliseconds).
    pub report_interval_ms: u64,
    /// Most reports in one `POST /reports`.
    pub report_batch_max: u32,
    /// Node filter every target node must match; `.*` allows all.
    pub allowed_nodes: String,
    /// Allow `executor: local` nodes (steps on the runner's own host).
    pub local_executor: bool,
    /// Run SSH steps detached from their connection, so that a dropped
    /// connection is dialled again instead of failing the step.
    pub reattach: bool,
    /// How long a SIGTERM waits for running operations (milliseconds).
    pub drain_timeout_ms: u64,
    /// Wait between TERM and KILL when a step is aborted (milliseconds).
    pub kill_grace_ms: u64,
    /// Accept a credentials file readable by group or others.
    pub allow_insecure_creds_file: bool,
}

impl Default for RawRunner {
    fn default() -> Self {
        let d = RunnerSettings::default();
        RawRunner {
            hostname: d.hostname.unwrap_or_default(),
            tags: d.tags,
            max_running: d.max_running,
            long_polling: d.long_polling,
            poll_interval_ms: millis(d.poll_interval),
            min_checkin_gap_ms: millis(d.min_checkin_gap),
            report_interval_ms: millis(d.report_interval),
            report_batch_max: d.report_batch_max,
            allowed_nodes: d
                .allowed_nodes
                .map_or_else(|| ALL_NODES.to_owned(), |a| a.as_str().to_owned()),
            local_executor: d.local_executor,
            reattach: d.reattach,
            drain_timeout_ms: millis(d.drain_timeout),
            kill_grace_ms: millis(d.kill_grace),
            allow_insecure_creds_file: d.allow_insecure_creds_file,
        }
    }
}

impl RawRunner {
    pub fn settings(&self) -> Result<RunnerSettings, ConfigError> {
        if self.max_running == 0 || self.max_running > 10_000 {
            return Err(invalid("runner.maxRunning", "must be between 1 and 10000"));
        }
        if self.report_batch_max == 0 || self.report_batch_max > 100_000 {
            return Err(invalid(
                "runner.reportBatchMax",
                "must be between 1 and 100000",
            ));
        }
        Ok(RunnerSettings {
            hostname: non_empty(&self.hostname),
            tags: self.tags.clone(),
            max_running: self.max_running,
            long_polling: self.long_polling,
            poll_interval: positive("runner.pollIntervalMs", self.poll_interval_ms)?,
            min_checkin_gap: Duration::from_millis(self.min_checkin_gap_ms),
            report_interval: positive("runner.reportIntervalMs", self.report_interval_ms)?,
            report_batch_max: self.report_batch_max,
            allowed_nodes: allowed_nodes(&self.allowed_nodes)?,
            local_executor: self.local_executor,
            reattach: self.reattach,
            drain_timeout: Duration::from_millis(self.drain_timeout_ms),
            kill_grace: Duration::from_millis(self.kill_grace_ms),
            allow_insecure_creds_file: self.allow_insecure_creds_file,
        })
    }
}

/// `runner.allowedNodes`, parsed once; `None` for `.*` (every node).
fn allowed_nodes(text: &str) -> Result<Option<AllowedNodes>, ConfigError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(invalid(
            "runner.allowedNodes",
            format!("must be a node filter; use \"{ALL_NODES}\" to allow every node"),
        ));
    }
    let filter =
        NodeFilter::parse(text).map_err(|e| invalid("runner.allowedNodes", e.to_string()))?;
    Ok((text != ALL_NODES).then_some(AllowedNodes(filter)))
}

// ---------------------------------------------------------------------------
// [http] and [tls]
// ---------------------------------------------------------------------------

/// `[http]`: the connection to the control plane.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "camelCase")]
pub struct RawHttp {
    /// Deadline of one request, added to the long-poll hold (milliseconds).
    pub request_timeout_ms: u64,
    /// TCP connect + TLS handshake deadline (milliseconds).
    pub connect_timeout_ms: u64,
    /// `http://host:port` proxy reached with CONNECT; empty = `HTTPS_PROXY`.
    pub proxy: String,
    /// Hosts never proxied (comma-separated); empty = `NO_PROXY`.
    pub no_proxy: String,
    /// Accept a plain `http://` server URL to a host other than loopback.
    pub allow_plaintext: bool,
}

impl Default for RawHttp {
    fn default() -> Self {
        let d = HttpSettings::default();
        RawHttp {
            request_timeout_ms: millis(d.request_timeout),
            connect_timeout_ms: millis(d.connect_timeout),
            // No proxy by default: empty means "from the environment".
            proxy: String::new(),
            no_proxy: String::new(),
            allow_plaintext: d.allow_plaintext,
        }
    }
}

impl RawHttp {
    /// `env` gives `HTTPS_PROXY` and `NO_PROXY` when the file sets no proxy.
    pub fn settings(&self, env: &[(String, String)]) -> Result<HttpSettings, ConfigError> {
        let lookup = |name: &str| {
            env.iter()
                .find(|(k, v)| k.eq_ignore_ascii_case(name) && !v.is_empty())
                .map(|(_, v)| v.clone())
        };
        let (proxy_text, proxy_key) = match non_empty(&self.proxy) {
            Some(p) => (Some(p), "http.proxy"),
            None => (lookup("HTTPS_PROXY"), "HTTPS_PROXY"),
        };
        let no_proxy = non_empty(&self.no_proxy)
            .or_else(|| lookup("NO_PROXY"))
            .unwrap_or_default();
        let proxy = match proxy_text {
            None => None,
            Some(text) => {
                let (host, port) = parse_proxy(&text).map_err(|m| invalid(proxy_key, m))?;
                Some(ProxySettings {
                    host,
                    port,
                    no_proxy: no_proxy
                        .split(',')
                        .map(|s| s.trim().to_owned())
                        .filter(|s| !s.is_empty())
                        .collect(),
                })
            }
        };
        Ok(HttpSettings {
            request_timeout: positive("http.requestTimeoutMs", self.request_timeout_ms)?,
            connect_timeout: positive("http.connectTimeoutMs", self.connect_timeout_ms)?,
            proxy,
            allow_plaintext: self.allow_plaintext,
        })
    }
}

/// `http://[user:pass@]host[:port][/]` → (host, port).
fn parse_proxy(text: &str) -> Result<(String, u16), String> {
    let rest = text.strip_prefix("http://").ok_or_else(|| {
        format!(
            "`{}` must be an http://host:port URL",
            redact_url_password(text)
        )
    })?;
    let rest = rest.trim_end_matches('/');
    if rest.contains('@') {
        return Err(
            "proxy authentication is not supported; use a proxy that allows the runner's address"
                .into(),
        );
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
            h,
            p.parse::<u16>()
                .map_err(|_| format!("`{p}` is not a port number"))?,
        ),
        _ => (rest, 80),
    };
    if host.is_empty() || host.contains('/') {
        return Err(format!("`{text}` must be an http://host:port URL"));
    }
    Ok((
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port,
    ))
}

/// `scheme://user:secret@host` → `scheme://user:[redacted]@host`.
pub(crate) fn redact_url_password(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:[redacted]{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// `[tls]`: how the control plane's certificate is checked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "camelCase")]
pub struct RawTls {
    /// PEM bundle of extra trusted CAs (a private CA); empty = none.
    pub ca_file: String,
    /// Turns certificate verification off. Never in production.
    pub insecure_skip_verify: bool,
}

impl Default for RawTls {
    fn default() -> Self {
        let d = TlsSettings::default();
        RawTls {
            ca_file: d.ca_file.as_deref().map(path_text).unwrap_or_default(),
            insecure_skip_verify: d.insecure_skip_verify,
        }
    }
}

impl RawTls {
    pub fn settings(&self) -> TlsSettings {
        TlsSettings {
            ca_file: non_empty(&self.ca_file).map(PathBuf::from),
            insecure_skip_verify: self.insecure_skip_verify,
        }
    }
}

// ---------------------------------------------------------------------------
// [ssh]
// ---------------------------------------------------------------------------

/// `[ssh]`: defaults of the SSH executor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "camelCase")]
pub struct RawSsh {
    pub key_store: String,
    /// `strict`, `accept-new` or `off`.
    pub known_hosts_policy: String,
    /// The operator's known_hosts (OpenSSH format), read, never written.
    pub known_hosts_file: String,
    /// Where `accept-new` records the keys it accepted.
    pub accepted_hosts_file: String,
    /// User for nodes without one; empty = the runner's user.
    pub default_user: String,
    pub default_port: u16,
    pub connect_timeout_ms: u64,
    pub call_timeout_ms: u64,
    pub keepalive_interval_ms: u64,
    pub use_agent: bool,
    pub remote_tmp_dir: String,
    /// How long a node whose connection dropped while a step ran may stay
    /// out of reach before the step fails (milliseconds).
    pub reattach_window_ms: u64,
    /// Key-store files bound to fewer nodes than `runner.allowedNodes`.
    pub key_bindings: Vec<RawKeyBinding>,
}

/// One `ssh.keyBindings` entry: a key-store file and the node filter of the
/// nodes it may be used for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKeyBinding {
    /// Path of the file in the key store, as node attributes name it.
    pub path: String,
    /// Node filter (the `allowedNodes` syntax).
    pub nodes: String,
}

impl Default for RawSsh {
    fn default() -> Self {
        let d = SshSettings::default();
        RawSsh {
            key_store: path_text(&d.key_store),
            known_hosts_policy: d.known_hosts_policy.name().to_owned(),
            // The file spells these two as the operator would, before `~`
            // is expanded and the runner's user is looked up.
            known_hosts_file: DEFAULT_KNOWN_HOSTS_FILE.to_owned(),
            default_user: String::new(),
            accepted_hosts_file: path_text(&d.accepted_hosts_file),
            default_port: d.default_port,
            connect_timeout_ms: millis(d.connect_timeout),
            call_timeout_ms: millis(d.call_timeout),
            keepalive_interval_ms: millis(d.keepalive_interval),
            use_agent: d.use_agent,
            remote_tmp_dir: d.remote_tmp_dir,
            reattach_window_ms: millis(d.reattach_window),
            key_bindings: d
                .key_bindings
                .iter()
                .map(|b| RawKeyBinding {
                    path: b.path.clone(),
                    nodes: b.nodes.as_str().to_owned(),
                })
                .collect(),
        }
    }
}

impl RawSsh {
    /// `allowed_nodes` is `runner.allowedNodes`, which binds every key-store
    /// file (the `[ssh]` section narrows it per file).
    pub fn settings(&self, allowed_nodes: Option<NodeFilter>) -> Result<SshSettings, ConfigError> {
        let known_hosts_policy =
            KnownHostsPolicy::from_name(&self.known_hosts_policy).ok_or_else(|| {
                invalid(
                    "ssh.knownHostsPolicy",
                    format!(
                        "`{}` is not one of strict, accept-new, off",
                        self.known_hosts_policy
                    ),
                )
            })?;
        if self.default_port == 0 {
            return Err(invalid("ssh.defaultPort", "must be between 1 and 65535"));
        }
        if self.key_store.is_empty() {
            return Err(invalid("ssh.keyStore", "must be a directory path"));
        }
        let defaults = SshSettings::default();
        Ok(SshSettings {
            key_store: PathBuf::from(&self.key_store),
            known_hosts_policy,
            known_hosts_file: non_empty(&self.known_hosts_file)
                .map(|p| expand_home(Path::new(&p)))
                .unwrap_or(defaults.known_hosts_file),
            accepted_hosts_file: PathBuf::from(&self.accepted_hosts_file),
            default_user: non_empty(&self.default_user).unwrap_or(defaults.default_user),
            default_port: self.default_port,
            connect_timeout: positive("ssh.connectTimeoutMs", self.connect_timeout_ms)?,
            call_timeout: positive("ssh.callTimeoutMs", self.call_timeout_ms)?,
            keepalive_interval: Duration::from_millis(self.keepalive_interval_ms),
            use_agent: self.use_agent,
            remote_tmp_dir: self.remote_tmp_dir.clone(),
            // `runner.reattach` decides; the daemon sets it.
            reattach: defaults.reattach,
            reattach_window: positive("ssh.reattachWindowMs", self.reattach_window_ms)?,
            // The daemon sets it from the spool directory.
            step_key: defaults.step_key,
            allowed_nodes: allowed_nodes.map(NodeSet),
            key_bindings: key_bindings(&self.key_bindings)?,
        })
    }
}

/// `ssh.keyBindings`, each path checked and each filter parsed; a bad entry
/// is named by its path.
fn key_bindings(raw: &[RawKeyBinding]) -> Result<Vec<KeyBinding>, ConfigError> {
    const KEY: &str = "ssh.keyBindings";
    let mut out: Vec<KeyBinding> = Vec::new();
    for (i, b) in raw.iter().enumerate() {
        let path = store_path(b.path.trim()).ok_or_else(|| {
            invalid(
                KEY,
                format!(
                    "entry {} has path `{}`, which is not a relative path inside ssh.keyStore (no `..`, not absolute)",
                    i + 1,
                    b.path
                ),
            )
        })?;
        if out.iter().any(|o| o.path == path) {
            return Err(invalid(
                KEY,
                format!("`{path}` is bound twice; give each key-store file one entry"),
            ));
        }
        let nodes = NodeFilter::parse(b.nodes.trim()).map_err(|e| {
            invalid(
                KEY,
                format!("the binding of `{path}` is not a node filter: {e}"),
            )
        })?;
        out.push(KeyBinding {
            path,
            nodes: NodeSet(nodes),
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// [spool]
// ---------------------------------------------------------------------------

/// `[spool]`: the durable queue of unacknowledged reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "camelCase")]
pub struct RawSpool {
    pub dir: String,
    /// `always`, `batch` or `never`.
    pub fsync: String,
    /// Size at which a new segment file is started (bytes).
    pub segment_bytes: u64,
}

impl Default for RawSpool {
    fn default() -> Self {
        let d = SpoolSettings::default();
        RawSpool {
            dir: path_text(&d.dir),
            fsync: d.fsync.name().to_owned(),
            segment_bytes: d.segment_bytes,
        }
    }
}

impl RawSpool {
    pub fn settings(&self) -> Result<SpoolSettings, ConfigError> {
        let fsync = FsyncPolicy::from_name(&self.fsync).ok_or_else(|| {
            invalid(
                "spool.fsync",
                format!("`{}` is not one of always, batch, never", self.fsync),
            )
        })?;
        if self.segment_bytes < 4096 {
            return Err(invalid("spool.segmentBytes", "must be at least 4096"));
        }
        if self.dir.is_empty() {
            return Err(invalid("spool.dir", "must be a directory path"));
        }
        Ok(SpoolSettings {
            dir: PathBuf::from(&self.dir),
            fsync,
            segment_bytes: self.segment_bytes,
        })
    }
}

// ---------------------------------------------------------------------------
// [log]
// ---------------------------------------------------------------------------

/// `[log]`: runner.log and operations.log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "camelCase")]
pub struct RawLog {
    pub dir: String,
    /// `text` or `json`.
    pub format: String,
    /// `trace`, `debug`, `info`, `warning`, `error` or `critical`.
    pub level: String,
    /// A log file is rotated when it reaches this size (bytes).
    pub rotate_bytes: u64,
    /// Rotated files kept (`runner.log.1` .. `runner.log.N`).
    pub keep: u32,
    /// Also write runner.log's lines to stderr.
    pub stderr: bool,
}

impl Default for RawLog {
    fn default() -> Self {
        let d = LogSettings::default();
        RawLog {
            dir: path_text(&d.dir),
            format: d.format.name().to_owned(),
            level: level_name(d.level).to_owned(),
            rotate_bytes: d.rotate_bytes,
            keep: d.keep,
            stderr: d.stderr,
        }
    }
}

impl RawLog {
    pub fn settings(&self) -> Result<LogSettings, ConfigError> {
        let format = LogFormat::from_name(&self.format).ok_or_else(|| {
            invalid(
                "log.format",
                format!("`{}` is not one of text, json", self.format),
            )
        })?;
        let level = level_from_name(&self.level).ok_or_else(|| {
            invalid(
                "log.level",
                format!(
                    "`{}` is not one of trace, debug, info, warning, error, critical",
                    self.level
                ),
            )
        })?;
        if self.rotate_bytes < 4096 {
            return Err(invalid("log.rotateBytes", "must be at least 4096"));
        }
        if self.dir.is_empty() {
            return Err(invalid("log.dir", "must be a directory path"));
        }
        Ok(LogSettings {
            dir: PathBuf::from(&self.dir),
            format,
            level,
            rotate_bytes: self.rotate_bytes,
            keep: self.keep,
            stderr: self.stderr,
        })
    }
}

// ---------------------------------------------------------------------------
// [supervision]
// ---------------------------------------------------------------------------

/// `[supervision]`: restart intensity and backoff of the actor tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "camelCase")]
pub struct RawSupervision {
    /// More restarts than this within `restartWithinMs` stop the runner (exit 5).
    pub max_restarts: u32,
    pub restart_within_ms: u64,
    /// Longest wait between retries of a failing call (milliseconds).
    pub backoff_max_ms: u64,
}

impl Default for RawSupervision {
    fn default() -> Self {
        let d = SupervisionSettings::default();
        RawSupervision {
            max_restarts: d.restart_intensity.max_restarts,
            restart_within_ms: millis(d.restart_intensity.within),
            backoff_max_ms: millis(d.backoff_max),
        }
    }
}

impl RawSupervision {
    pub fn settings(&self) -> Result<SupervisionSettings, ConfigError> {
        Ok(SupervisionSettings {
            restart_intensity: RestartIntensity {
                max_restarts: self.max_restarts,
                within: positive("supervision.restartWithinMs", self.restart_within_ms)?,
            },
            backoff_max: positive("supervision.backoffMaxMs", self.backoff_max_ms)?,
        })
    }
}

// ---------------------------------------------------------------------------
// [metrics]
// ---------------------------------------------------------------------------

/// `[metrics]`: the metrics and health endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "camelCase")]
pub struct RawMetrics {
    /// `address:port` to serve `/metrics`, `/health` and `/ready` on; empty
    /// = off.
    pub listen: String,
}

impl Default for RawMetrics {
    fn default() -> Self {
        RawMetrics {
            listen: MetricsSettings::default().listen_text(),
        }
    }
}

impl RawMetrics {
    pub fn settings(&self) -> Result<MetricsSettings, ConfigError> {
        let Some(listen) = non_empty(&self.listen) else {
            return Ok(MetricsSettings { listen: None });
        };
        let addr = listen.parse::<std::net::SocketAddr>().map_err(|_| {
            invalid(
                "metrics.listen",
                format!(
                    "`{listen}` is not an IP address and port such as 127.0.0.1:9464 or [::1]:9464 (leave it empty to serve no metrics)"
                ),
            )
        })?;
        Ok(MetricsSettings { listen: Some(addr) })
    }
}
