//! The runner's configuration: `runner.toml` (every key documented in
//! `runner.example.toml`) overlaid with `RDRUNNER__SECTION__KEY` environment
//! variables, read with the `config` crate into raw serde structs and then
//! validated into one typed struct per subsystem.
//!
//! Keys are camelCase in TOML. The `config` crate lowercases environment
//! variable names, so the overlay is done here: each variable is matched
//! case-insensitively (underscores ignored) against the known keys and set
//! under the key's real spelling.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rdrunner_actors::filter::NodeFilter;

pub use crate::ssh::KnownHostsPolicy;
use crate::ssh::SshSettings;
use serde::{Deserialize, Serialize};

/// Prefix of the environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "RDRUNNER__";

/// A configuration that cannot be used; the message names the key (or file)
/// and what is allowed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}: {message}")]
    File { path: String, message: String },
    #[error("unknown configuration key `{key}`{origin}; known keys in [{section}]: {known}")]
    UnknownKey {
        key: String,
        section: String,
        origin: String,
        known: String,
    },
    #[error("unknown configuration section `{section}`{origin}; known sections: {known}")]
    UnknownSection {
        section: String,
        origin: String,
        known: String,
    },
    #[error("bad configuration value for `{key}`: {message}")]
    Invalid { key: String, message: String },
    #[error("bad configuration: {0}")]
    Parse(String),
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        message: message.into(),
    }
}

// ---------------------------------------------------------------------------
// Raw structs: exactly the TOML layout, with the defaults.
// ---------------------------------------------------------------------------

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
}

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
    /// How long a SIGTERM waits for running operations (milliseconds).
    pub drain_timeout_ms: u64,
    /// Wait between TERM and KILL when a step is aborted (milliseconds).
    pub kill_grace_ms: u64,
    /// Accept a credentials file readable by group or others.
    pub allow_insecure_creds_file: bool,
}

impl Default for RawRunner {
    fn default() -> Self {
        RawRunner {
            hostname: String::new(),
            tags: Vec::new(),
            max_running: 50,
            long_polling: true,
            poll_interval_ms: 5000,
            min_checkin_gap_ms: 100,
            report_interval_ms: 200,
            report_batch_max: 1000,
            allowed_nodes: ".*".to_owned(),
            drain_timeout_ms: 30_000,
            kill_grace_ms: 5000,
            allow_insecure_creds_file: false,
        }
    }
}

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
}

impl Default for RawHttp {
    fn default() -> Self {
        RawHttp {
            request_timeout_ms: 30_000,
            connect_timeout_ms: 10_000,
            proxy: String::new(),
            no_proxy: String::new(),
        }
    }
}

/// `[tls]`: how the control plane's certificate is checked.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "camelCase")]
pub struct RawTls {
    /// PEM bundle of extra trusted CAs (a private CA); empty = none.
    pub ca_file: String,
    /// Turns certificate verification off. Never in production.
    pub insecure_skip_verify: bool,
}

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
}

impl Default for RawSsh {
    fn default() -> Self {
        RawSsh {
            key_store: "./runner/keys".to_owned(),
            known_hosts_policy: "strict".to_owned(),
            known_hosts_file: "~/.ssh/known_hosts".to_owned(),
            accepted_hosts_file: "./runner/known_hosts".to_owned(),
            default_user: String::new(),
            default_port: 22,
            connect_timeout_ms: 10_000,
            call_timeout_ms: 30_000,
            keepalive_interval_ms: 15_000,
            use_agent: false,
            remote_tmp_dir: "/tmp".to_owned(),
        }
    }
}

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
        RawSpool {
            dir: "./runner/spool".to_owned(),
            fsync: "batch".to_owned(),
            segment_bytes: 8 * 1024 * 1024,
        }
    }
}

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
        RawLog {
            dir: "./runner/logs".to_owned(),
            format: "text".to_owned(),
            level: "info".to_owned(),
            rotate_bytes: 10 * 1024 * 1024,
            keep: 5,
            stderr: true,
        }
    }
}

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
        RawSupervision {
            max_restarts: 5,
            restart_within_ms: 60_000,
            backoff_max_ms: 30_000,
        }
    }
}

// ---------------------------------------------------------------------------
// Validated structs, one per subsystem.
// ---------------------------------------------------------------------------

/// The validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub runner: RunnerConfig,
    pub http: HttpConfig,
    pub tls: TlsConfig,
    pub ssh: SshConfig,
    pub spool: SpoolConfig,
    pub log: LogConfig,
    pub supervision: SupervisionConfig,
    /// What it was built from, for `rdrunner config`.
    pub raw: RawConfig,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RunnerConfig {
    pub hostname: Option<String>,
    pub tags: Vec<String>,
    pub max_running: u32,
    pub long_polling: bool,
    pub poll_interval: Duration,
    pub min_checkin_gap: Duration,
    pub report_interval: Duration,
    pub report_batch_max: u32,
    /// The `allowedNodes` filter text; `None` when it allows every node.
    pub allowed_nodes: Option<String>,
    pub drain_timeout: Duration,
    pub kill_grace: Duration,
    pub allow_insecure_creds_file: bool,
}

impl RunnerConfig {
    /// The parsed `allowedNodes` filter; `None` when every node is allowed.
    pub fn allowed_nodes_filter(&self) -> Option<NodeFilter> {
        // Parsed once already in `Config::from_raw`, so it parses again.
        self.allowed_nodes
            .as_deref()
            .and_then(|text| NodeFilter::parse(text).ok())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct HttpConfig {
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// `http.proxy`, else `HTTPS_PROXY`/`https_proxy` at load time.
    pub proxy: Option<ProxyConfig>,
}

/// An HTTP proxy reached with CONNECT.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyConfig {
    pub host: String,
    pub port: u16,
    /// Host suffixes not proxied (`NO_PROXY` form); `*` = none proxied.
    pub no_proxy: Vec<String>,
}

impl ProxyConfig {
    /// Whether a connection to `host` goes through the proxy.
    pub fn applies_to(&self, host: &str) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        !self.no_proxy.iter().any(|n| {
            n == "*" || host == n || host.ends_with(&format!(".{}", n.trim_start_matches('.')))
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TlsConfig {
    pub ca_file: Option<PathBuf>,
    pub insecure_skip_verify: bool,
}

impl SshConfig {
    /// The SSH executor's settings.
    pub fn settings(&self) -> SshSettings {
        let defaults = SshSettings::default();
        SshSettings {
            key_store: self.key_store.clone(),
            known_hosts_policy: self.known_hosts_policy,
            known_hosts_file: self.known_hosts_file.clone(),
            accepted_hosts_file: self.accepted_hosts_file.clone(),
            default_user: self.default_user.clone().unwrap_or(defaults.default_user),
            default_port: self.default_port,
            connect_timeout: self.connect_timeout,
            call_timeout: self.call_timeout,
            keepalive_interval: self.keepalive_interval,
            use_agent: self.use_agent,
            remote_tmp_dir: self.remote_tmp_dir.clone(),
        }
    }
}

/// `~/x` → `$HOME/x`, as a shell would.
fn expand_home(path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(path),
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SshConfig {
    pub key_store: PathBuf,
    pub known_hosts_policy: KnownHostsPolicy,
    pub known_hosts_file: PathBuf,
    pub accepted_hosts_file: PathBuf,
    pub default_user: Option<String>,
    pub default_port: u16,
    pub connect_timeout: Duration,
    pub call_timeout: Duration,
    pub keepalive_interval: Duration,
    pub use_agent: bool,
    pub remote_tmp_dir: String,
}

/// When the disk spool calls fsync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// After every append.
    Always,
    /// In `flush`, before each batch is sent.
    Batch,
    /// Never (the OS decides).
    Never,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SpoolConfig {
    pub dir: PathBuf,
    pub fsync: FsyncPolicy,
    pub segment_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    pub dir: PathBuf,
    pub format: LogFormat,
    pub level: slog::Level,
    pub rotate_bytes: u64,
    pub keep: u32,
    pub stderr: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SupervisionConfig {
    pub max_restarts: u32,
    pub restart_within: Duration,
    pub backoff_max: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config::from_raw(RawConfig::default(), &[]).expect("the defaults are valid")
    }
}

impl Config {
    /// Loads `file` (when given) and the `RDRUNNER__*` variables of `env`.
    /// `env` is the process environment in production, a fixed list in tests;
    /// `HTTPS_PROXY` and `NO_PROXY` are taken from it too.
    pub fn load(file: Option<&Path>, env: &[(String, String)]) -> Result<Config, ConfigError> {
        let raw = load_raw(file, env)?;
        Config::from_raw(raw, env)
    }

    /// Validates raw values into typed ones; every refusal names its key.
    pub fn from_raw(raw: RawConfig, env: &[(String, String)]) -> Result<Config, ConfigError> {
        let r = &raw.runner;
        let ms = Duration::from_millis;
        let positive = |key: &str, v: u64| -> Result<Duration, ConfigError> {
            if v == 0 {
                Err(invalid(key, "must be greater than 0"))
            } else {
                Ok(ms(v))
            }
        };
        if r.max_running == 0 || r.max_running > 10_000 {
            return Err(invalid("runner.maxRunning", "must be between 1 and 10000"));
        }
        if r.report_batch_max == 0 || r.report_batch_max > 100_000 {
            return Err(invalid(
                "runner.reportBatchMax",
                "must be between 1 and 100000",
            ));
        }
        let allowed = r.allowed_nodes.trim();
        if allowed.is_empty() {
            return Err(invalid(
                "runner.allowedNodes",
                "must be a node filter; use \".*\" to allow every node",
            ));
        }
        NodeFilter::parse(allowed).map_err(|e| invalid("runner.allowedNodes", e.to_string()))?;
        let runner = RunnerConfig {
            hostname: non_empty(&r.hostname),
            tags: r.tags.clone(),
            max_running: r.max_running,
            long_polling: r.long_polling,
            poll_interval: positive("runner.pollIntervalMs", r.poll_interval_ms)?,
            min_checkin_gap: ms(r.min_checkin_gap_ms),
            report_interval: positive("runner.reportIntervalMs", r.report_interval_ms)?,
            report_batch_max: r.report_batch_max,
            allowed_nodes: (allowed != ".*").then(|| allowed.to_owned()),
            drain_timeout: ms(r.drain_timeout_ms),
            kill_grace: ms(r.kill_grace_ms),
            allow_insecure_creds_file: r.allow_insecure_creds_file,
        };

        let h = &raw.http;
        let lookup = |name: &str| {
            env.iter()
                .find(|(k, v)| k.eq_ignore_ascii_case(name) && !v.is_empty())
                .map(|(_, v)| v.clone())
        };
        let (proxy_text, proxy_key) = match non_empty(&h.proxy) {
            Some(p) => (Some(p), "http.proxy"),
            None => (lookup("HTTPS_PROXY"), "HTTPS_PROXY"),
        };
        let no_proxy = non_empty(&h.no_proxy)
            .or_else(|| lookup("NO_PROXY"))
            .unwrap_or_default();
        let proxy = match proxy_text {
            None => None,
            Some(text) => {
                let (host, port) = parse_proxy(&text).map_err(|m| invalid(proxy_key, m))?;
                Some(ProxyConfig {
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
        let http = HttpConfig {
            request_timeout: positive("http.requestTimeoutMs", h.request_timeout_ms)?,
            connect_timeout: positive("http.connectTimeoutMs", h.connect_timeout_ms)?,
            proxy,
        };

        let tls = TlsConfig {
            ca_file: non_empty(&raw.tls.ca_file).map(PathBuf::from),
            insecure_skip_verify: raw.tls.insecure_skip_verify,
        };

        let s = &raw.ssh;
        let known_hosts_policy = match s.known_hosts_policy.as_str() {
            "strict" => KnownHostsPolicy::Strict,
            "accept-new" => KnownHostsPolicy::AcceptNew,
            "off" => KnownHostsPolicy::Off,
            other => {
                return Err(invalid(
                    "ssh.knownHostsPolicy",
                    format!("`{other}` is not one of strict, accept-new, off"),
                ))
            }
        };
        if s.default_port == 0 {
            return Err(invalid("ssh.defaultPort", "must be between 1 and 65535"));
        }
        if s.key_store.is_empty() {
            return Err(invalid("ssh.keyStore", "must be a directory path"));
        }
        let ssh = SshConfig {
            key_store: PathBuf::from(&s.key_store),
            known_hosts_policy,
            known_hosts_file: non_empty(&s.known_hosts_file)
                .map(|p| expand_home(&p))
                .unwrap_or_else(|| SshSettings::default().known_hosts_file),
            accepted_hosts_file: PathBuf::from(&s.accepted_hosts_file),
            default_user: non_empty(&s.default_user),
            default_port: s.default_port,
            connect_timeout: positive("ssh.connectTimeoutMs", s.connect_timeout_ms)?,
            call_timeout: positive("ssh.callTimeoutMs", s.call_timeout_ms)?,
            keepalive_interval: ms(s.keepalive_interval_ms),
            use_agent: s.use_agent,
            remote_tmp_dir: s.remote_tmp_dir.clone(),
        };

        let sp = &raw.spool;
        let fsync = match sp.fsync.as_str() {
            "always" => FsyncPolicy::Always,
            "batch" => FsyncPolicy::Batch,
            "never" => FsyncPolicy::Never,
            other => {
                return Err(invalid(
                    "spool.fsync",
                    format!("`{other}` is not one of always, batch, never"),
                ))
            }
        };
        if sp.segment_bytes < 4096 {
            return Err(invalid("spool.segmentBytes", "must be at least 4096"));
        }
        if sp.dir.is_empty() {
            return Err(invalid("spool.dir", "must be a directory path"));
        }
        let spool = SpoolConfig {
            dir: PathBuf::from(&sp.dir),
            fsync,
            segment_bytes: sp.segment_bytes,
        };

        let l = &raw.log;
        let format = match l.format.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(invalid(
                    "log.format",
                    format!("`{other}` is not one of text, json"),
                ))
            }
        };
        let level = match l.level.as_str() {
            "trace" => slog::Level::Trace,
            "debug" => slog::Level::Debug,
            "info" => slog::Level::Info,
            "warning" | "warn" => slog::Level::Warning,
            "error" => slog::Level::Error,
            "critical" => slog::Level::Critical,
            other => {
                return Err(invalid(
                    "log.level",
                    format!("`{other}` is not one of trace, debug, info, warning, error, critical"),
                ))
            }
        };
        if l.rotate_bytes < 4096 {
            return Err(invalid("log.rotateBytes", "must be at least 4096"));
        }
        if l.dir.is_empty() {
            return Err(invalid("log.dir", "must be a directory path"));
        }
        let log = LogConfig {
            dir: PathBuf::from(&l.dir),
            format,
            level,
            rotate_bytes: l.rotate_bytes,
            keep: l.keep,
            stderr: l.stderr,
        };

        let sv = &raw.supervision;
        let supervision = SupervisionConfig {
            max_restarts: sv.max_restarts,
            restart_within: positive("supervision.restartWithinMs", sv.restart_within_ms)?,
            backoff_max: positive("supervision.backoffMaxMs", sv.backoff_max_ms)?,
        };

        Ok(Config {
            runner,
            http,
            tls,
            ssh,
            spool,
            log,
            supervision,
            raw,
        })
    }

    /// The effective configuration as TOML, secrets (a proxy password)
    /// redacted; what `rdrunner config` prints.
    pub fn to_redacted_toml(&self) -> String {
        let mut raw = self.raw.clone();
        raw.http.proxy = redact_url_password(&raw.http.proxy);
        toml::to_string(&raw).unwrap_or_else(|e| format!("# cannot print: {e}\n"))
    }
}

fn non_empty(s: &str) -> Option<String> {
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_owned())
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

fn redact_url_password(url: &str) -> String {
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

/// The known keys with their default values, by section, in the file's spelling.
fn known_keys() -> BTreeMap<String, serde_json::Map<String, serde_json::Value>> {
    let v = serde_json::to_value(RawConfig::default()).expect("defaults serialize");
    v.as_object()
        .expect("a table")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_object().cloned().unwrap_or_default()))
        .collect()
}

fn squash(s: &str) -> String {
    s.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

fn load_raw(file: Option<&Path>, env: &[(String, String)]) -> Result<RawConfig, ConfigError> {
    let known = known_keys();
    let known_sections = || known.keys().cloned().collect::<Vec<_>>().join(", ");
    let mut builder = config::Config::builder();
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        // Check the keys first, so that the error names the file and the key.
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::File {
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
        let origin = format!(" in {}", path.display());
        for (section, value) in &table {
            let Some(keys) = known.get(section) else {
                return Err(ConfigError::UnknownSection {
                    section: section.clone(),
                    origin,
                    known: known_sections(),
                });
            };
            let Some(inner) = value.as_table() else {
                return Err(invalid(section, "must be a [section] table"));
            };
            for key in inner.keys() {
                if !keys.contains_key(key) {
                    return Err(ConfigError::UnknownKey {
                        key: format!("{section}.{key}"),
                        section: section.clone(),
                        origin,
                        known: keys.keys().cloned().collect::<Vec<_>>().join(", "),
                    });
                }
            }
        }
        builder = builder.add_source(config::File::from_str(&text, config::FileFormat::Toml));
    }
    for (name, value) in env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let origin = format!(" (environment variable {name})");
        let Some((section, key)) = rest.split_once("__") else {
            return Err(invalid(
                name,
                "must be named RDRUNNER__SECTION__KEY, e.g. RDRUNNER__RUNNER__MAXRUNNING",
            ));
        };
        let Some((section, keys)) = known.iter().find(|(s, _)| squash(s) == squash(section)) else {
            return Err(ConfigError::UnknownSection {
                section: section.to_owned(),
                origin,
                known: known_sections(),
            });
        };
        let Some((key, default)) = keys.iter().find(|(k, _)| squash(k) == squash(key)) else {
            return Err(ConfigError::UnknownKey {
                key: format!("{section}.{key}"),
                section: section.clone(),
                origin,
                known: keys.keys().cloned().collect::<Vec<_>>().join(", "),
            });
        };
        let full = format!("{section}.{key}");
        let v: config::Value = match default {
            serde_json::Value::Array(_) => value
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .into(),
            serde_json::Value::Bool(_) => match value.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => true.into(),
                "false" | "0" | "no" | "off" => false.into(),
                _ => {
                    return Err(invalid(
                        &full,
                        format!("{name}=`{value}` is not true or false"),
                    ))
                }
            },
            serde_json::Value::Number(_) => value
                .trim()
                .parse::<u64>()
                .map_err(|_| invalid(&full, format!("{name}=`{value}` is not a whole number")))?
                .into(),
            _ => value.clone().into(),
        };
        builder = builder
            .set_override(full.as_str(), v)
            .map_err(|e| invalid(&full, e.to_string()))?;
    }
    let built = builder
        .build()
        .map_err(|e| ConfigError::Parse(e.to_string()))?;
    // The `config` crate lowercases keys; give them back their spelling and
    // check each value's type against its default, so that a wrong type is
    // reported with the key's name.
    let tree: BTreeMap<String, BTreeMap<String, serde_json::Value>> = built
        .try_deserialize()
        .map_err(|e| ConfigError::Parse(e.to_string()))?;
    let mut out = serde_json::Map::new();
    for (section_lc, values) in tree {
        let Some((section, keys)) = known.iter().find(|(s, _)| squash(s) == squash(&section_lc))
        else {
            return Err(ConfigError::UnknownSection {
                section: section_lc,
                origin: String::new(),
                known: known_sections(),
            });
        };
        let mut table = serde_json::Map::new();
        for (key_lc, value) in values {
            let Some((key, default)) = keys.iter().find(|(k, _)| squash(k) == squash(&key_lc))
            else {
                return Err(ConfigError::UnknownKey {
                    key: format!("{section}.{key_lc}"),
                    section: section.clone(),
                    origin: String::new(),
                    known: keys.keys().cloned().collect::<Vec<_>>().join(", "),
                });
            };
            let full = format!("{section}.{key}");
            let expected = match default {
                serde_json::Value::Array(_) => "a list of strings",
                serde_json::Value::Bool(_) => "true or false",
                serde_json::Value::Number(_) => "a whole number (0 or more)",
                _ => "a string",
            };
            let fits = match (default, &value) {
                (serde_json::Value::Array(_), serde_json::Value::Array(items)) => {
                    items.iter().all(|i| i.is_string())
                }
                (serde_json::Value::Bool(_), v) => v.is_boolean(),
                (serde_json::Value::Number(_), v) => v.is_u64(),
                (serde_json::Value::String(_), v) => v.is_string(),
                _ => false,
            };
            if !fits {
                return Err(invalid(&full, format!("{value} is not {expected}")));
            }
            table.insert(key.clone(), value);
        }
        out.insert(section.clone(), table.into());
    }
    serde_json::from_value::<RawConfig>(out.into()).map_err(|e| ConfigError::Parse(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
        f
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn example_file_parses_and_equals_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("runner.example.toml");
        let cfg = Config::load(Some(&path), &[]).unwrap();
        assert_eq!(cfg, Config::default());
        assert_eq!(cfg.runner.max_running, 50);
        assert_eq!(cfg.runner.poll_interval, Duration::from_secs(5));
        assert!(cfg.runner.long_polling);
        assert_eq!(cfg.spool.fsync, FsyncPolicy::Batch);
        assert_eq!(cfg.ssh.default_port, 22);
        assert_eq!(cfg.ssh.key_store, PathBuf::from("./runner/keys"));
        let ssh = cfg.ssh.settings();
        let want = SshSettings::default();
        assert_eq!(ssh.known_hosts_policy, KnownHostsPolicy::Strict);
        assert_eq!(ssh.known_hosts_file, want.known_hosts_file);
        assert_eq!(ssh.accepted_hosts_file, want.accepted_hosts_file);
        assert_eq!(ssh.default_user, want.default_user);
        assert_eq!(
            (
                ssh.default_port,
                ssh.connect_timeout,
                ssh.call_timeout,
                ssh.keepalive_interval
            ),
            (
                22,
                Duration::from_secs(10),
                Duration::from_secs(30),
                Duration::from_secs(15)
            )
        );
        assert_eq!(
            (ssh.use_agent, ssh.remote_tmp_dir.as_str()),
            (false, "/tmp")
        );
        // Every key is listed in the example, set or commented out.
        let text = std::fs::read_to_string(&path).unwrap();
        for (section, keys) in known_keys() {
            assert!(
                text.contains(&format!("[{section}]")),
                "[{section}] missing"
            );
            for key in keys.keys() {
                assert!(
                    text.contains(&format!("{key} = ")),
                    "{section}.{key} missing from runner.example.toml"
                );
            }
        }
    }

    #[test]
    fn unknown_key_is_refused_with_its_name_and_the_known_keys() {
        let f = write("[runner]\nmaxRuning = 3\n");
        let err = Config::load(Some(f.path()), &[]).unwrap_err().to_string();
        assert!(err.contains("runner.maxRuning"), "{err}");
        assert!(err.contains("maxRunning"), "{err}");
        let f = write("[runnr]\n");
        let err = Config::load(Some(f.path()), &[]).unwrap_err().to_string();
        assert!(
            err.contains("runnr") && err.contains("supervision"),
            "{err}"
        );
    }

    #[test]
    fn bad_values_name_the_key_and_what_is_allowed() {
        let cases = [
            (
                "[ssh]\nknownHostsPolicy = \"maybe\"\n",
                "ssh.knownHostsPolicy",
                "accept-new",
            ),
            ("[spool]\nfsync = \"sometimes\"\n", "spool.fsync", "always"),
            ("[log]\nformat = \"xml\"\n", "log.format", "json"),
            ("[runner]\nmaxRunning = 0\n", "runner.maxRunning", "between"),
            (
                "[http]\nproxy = \"socks5://x:1\"\n",
                "http.proxy",
                "http://",
            ),
        ];
        for (text, key, allowed) in cases {
            let f = write(text);
            let err = Config::load(Some(f.path()), &[]).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains(allowed), "{text}: {err}");
        }
        let f = write("[runner]\nmaxRunning = \"lots\"\n");
        let err = Config::load(Some(f.path()), &[]).unwrap_err().to_string();
        assert!(err.contains("maxRunning"), "{err}");
    }

    #[test]
    fn environment_overrides_camel_case_keys_of_every_type() {
        let f = write("[runner]\nmaxRunning = 7\npollIntervalMs = 1000\n");
        let e = env(&[
            ("RDRUNNER__RUNNER__MAXRUNNING", "9"),
            ("RDRUNNER__RUNNER__LONG_POLLING", "false"),
            ("RDRUNNER__RUNNER__TAGS", "a, b"),
            ("RDRUNNER__SSH__KNOWNHOSTSPOLICY", "accept-new"),
            ("RDRUNNER__TLS__CAFILE", "/etc/ca.pem"),
            ("UNRELATED", "x"),
        ]);
        let cfg = Config::load(Some(f.path()), &e).unwrap();
        assert_eq!(cfg.runner.max_running, 9);
        assert_eq!(cfg.runner.poll_interval, Duration::from_secs(1));
        assert!(!cfg.runner.long_polling);
        assert_eq!(cfg.runner.tags, vec!["a", "b"]);
        assert_eq!(cfg.ssh.known_hosts_policy, KnownHostsPolicy::AcceptNew);
        assert_eq!(cfg.tls.ca_file, Some(PathBuf::from("/etc/ca.pem")));
    }

    #[test]
    fn environment_unknown_key_or_bad_value_is_refused() {
        let err = Config::load(None, &env(&[("RDRUNNER__RUNNER__MAXRUNING", "3")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("RDRUNNER__RUNNER__MAXRUNING") && err.contains("maxRunning"),
            "{err}"
        );
        let err = Config::load(None, &env(&[("RDRUNNER__RUNNER__MAXRUNNING", "many")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("runner.maxRunning"), "{err}");
    }

    #[test]
    fn allowed_nodes_filter_is_parsed_and_matched() {
        let f = write("[runner]\nallowedNodes = \"tags: web\"\n");
        let cfg = Config::load(Some(f.path()), &[]).unwrap();
        let filter = cfg.runner.allowed_nodes_filter().unwrap();
        let mut web = rdrunner_actors::model::Node::new("web1", "10.0.0.1");
        web.tags = vec!["web".into()];
        assert!(filter.matches(&web));
        assert!(!filter.matches(&rdrunner_actors::model::Node::new("db1", "10.0.0.2")));
        assert!(Config::default().runner.allowed_nodes_filter().is_none());
    }

    #[test]
    fn proxy_from_config_or_environment_with_no_proxy() {
        let cfg = Config::load(
            None,
            &env(&[
                ("HTTPS_PROXY", "http://proxy:3128"),
                ("NO_PROXY", "internal,.corp"),
            ]),
        )
        .unwrap();
        let p = cfg.http.proxy.unwrap();
        assert_eq!((p.host.as_str(), p.port), ("proxy", 3128));
        assert!(p.applies_to("example.com"));
        assert!(!p.applies_to("internal"));
        assert!(!p.applies_to("a.corp"));
        let cfg = Config::load(None, &[]).unwrap();
        assert_eq!(cfg.http.proxy, None);
    }

    #[test]
    fn redacted_toml_hides_the_proxy_password() {
        assert_eq!(
            redact_url_password("http://u:secret@p:1"),
            "http://u:[redacted]@p:1"
        );
        let mut cfg = Config::default();
        cfg.raw.http.proxy = "http://u:secret@p:1".into();
        let text = cfg.to_redacted_toml();
        assert!(
            !text.contains("secret") && text.contains("maxRunning = 50"),
            "{text}"
        );
    }
}
