//! The SSH node executor: runs command, script and copy steps on a node over
//! one libssh2 session per node step, with host key checking, credentials
//! from the runner's key store, live output and abort by process group.
//!
//! Codemap: `connect` (TCP and handshake), `host_key` (known_hosts
//! policies), `auth` (key store, password, agent), `remote` (the wrapper the
//! step runs in on the node), `channel` (the output loop and abort),
//! `files` (SFTP upload for scripts and copy steps).
//!
//! All libssh2 work is blocking work on the thread that calls `execute`; the
//! runtime gives every node step a thread of its own.

mod auth;
mod channel;
mod connect;
mod files;
mod host_key;
mod remote;

pub use auth::{KEY_ATTRIBUTE, PASSWORD_ATTRIBUTE};

use std::path::{Path, PathBuf};
use std::time::Duration;

use rdrunner_actors::model::Step;
use rdrunner_actors::{
    AbortReason, AbortSignal, ExecutorError, NodeExecutor, OutputSink, StepOutcome, StepRequest,
};
use slog::{debug, o, Logger};

/// What to do with a node's host key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KnownHostsPolicy {
    /// The key must already be in `known_hosts_file` (or in
    /// `accepted_hosts_file`, where an earlier accept-new run put it).
    #[default]
    Strict,
    /// Unknown keys are recorded in `accepted_hosts_file` and accepted; a
    /// key that differs from a known one is still refused.
    AcceptNew,
    /// No check at all; a warning is logged on every connection.
    Off,
}

/// Settings of the SSH executor, built from the daemon's configuration.
#[derive(Debug, Clone)]
pub struct SshSettings {
    /// Directory of private keys and password files; the node attributes
    /// `ssh-key-storage-path` and `ssh-password-storage-path` name files in
    /// it by relative path.
    pub key_store: PathBuf,
    pub known_hosts_policy: KnownHostsPolicy,
    /// The operator's known_hosts (OpenSSH format), read by every policy
    /// but `Off`; never written.
    pub known_hosts_file: PathBuf,
    /// The runner's own known_hosts: read like `known_hosts_file`, and
    /// where `AcceptNew` records keys it has not seen before.
    pub accepted_hosts_file: PathBuf,
    /// Login user for nodes without a `username`. Defaults to the user the
    /// runner runs as (`$USER`, `$LOGNAME`, else the name of its uid), as
    /// OpenSSH's client does.
    pub default_user: String,
    pub default_port: u16,
    /// Bound on establishing the TCP connection and on the SSH handshake.
    pub connect_timeout: Duration,
    /// Bound on every blocking libssh2 call after the handshake.
    pub call_timeout: Duration,
    /// How often a keepalive is sent while a step runs (libssh2 sends at
    /// most one every 2 s).
    pub keepalive_interval: Duration,
    /// Whether the SSH agent (`SSH_AUTH_SOCK`) is tried; every identity is.
    pub use_agent: bool,
    /// Where per-step directories for scripts are made on the node.
    pub remote_tmp_dir: String,
}

impl Default for SshSettings {
    fn default() -> Self {
        SshSettings {
            key_store: PathBuf::from("./runner/keys"),
            known_hosts_policy: KnownHostsPolicy::Strict,
            known_hosts_file: expand_home(Path::new("~/.ssh/known_hosts")),
            accepted_hosts_file: PathBuf::from("./runner/known_hosts"),
            default_user: current_user(),
            default_port: 22,
            connect_timeout: Duration::from_secs(10),
            call_timeout: Duration::from_secs(30),
            keepalive_interval: Duration::from_secs(15),
            use_agent: std::env::var_os("SSH_AUTH_SOCK").is_some_and(|s| !s.is_empty()),
            remote_tmp_dir: "/tmp".to_owned(),
        }
    }
}

/// The SSH `NodeExecutor`.
pub struct SshExecutor {
    settings: SshSettings,
    log: Logger,
}

impl SshExecutor {
    pub fn new(settings: SshSettings, log: Logger) -> Self {
        SshExecutor { settings, log }
    }
}

impl NodeExecutor for SshExecutor {
    fn execute(
        &self,
        req: &StepRequest,
        output: &mut dyn OutputSink,
        abort: &AbortSignal,
    ) -> Result<StepOutcome, ExecutorError> {
        let log = self.log.new(o!(
            "op" => req.op_id.clone(),
            "node" => req.node.name.clone(),
            "step" => req.step_index,
        ));
        if let Some(reason) = abort.reason() {
            return Ok(aborted_before_start(reason));
        }
        let conn = connect::connect(&req.node, &self.settings)?;
        host_key::verify(&conn, &self.settings, &log)?;
        let user = req
            .node
            .username
            .clone()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| self.settings.default_user.clone());
        auth::authenticate(&conn, &self.settings, &req.node, &user)?;
        debug!(log, "connected"; "target" => &conn.target, "user" => &user);
        // Connecting is bounded but not abortable: look again before starting.
        if let Some(reason) = abort.reason() {
            conn.disconnect();
            return Ok(aborted_before_start(reason));
        }
        let run = channel::Runner {
            conn: &conn,
            settings: &self.settings,
            log: &log,
            node: &req.node.name,
        };
        let outcome = match &req.step {
            Step::Command(c) => run.run(&req.env, &c.command, output, abort, req.kill_grace),
            Step::Script(s) => files::run_script(&run, req, s, output, abort),
            Step::Copy(c) => files::copy(&run, c, abort),
        };
        conn.disconnect();
        outcome
    }
}

fn aborted_before_start(reason: AbortReason) -> StepOutcome {
    StepOutcome {
        exit_code: None,
        signal: None,
        message: Some(format!("{} before the step started", reason_text(reason))),
    }
}

/// How an abort reason reads in a step's message.
fn reason_text(reason: AbortReason) -> &'static str {
    match reason {
        AbortReason::Cancelled => "cancelled",
        AbortReason::TimedOut => "step timed out",
        AbortReason::Shutdown => "runner shutting down",
    }
}

/// `~/x` with `$HOME` put in; other paths as they are.
fn expand_home(path: &Path) -> PathBuf {
    match (path.strip_prefix("~"), std::env::var_os("HOME")) {
        (Ok(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => path.to_path_buf(),
    }
}

/// The name of the user the runner runs as.
fn current_user() -> String {
    for var in ["USER", "LOGNAME"] {
        if let Some(v) = std::env::var(var).ok().filter(|v| !v.is_empty()) {
            return v;
        }
    }
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self").map(|m| m.uid()).ok();
    if let (Some(uid), Ok(passwd)) = (uid, std::fs::read_to_string("/etc/passwd")) {
        for line in passwd.lines() {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() > 2 && f[2].parse() == Ok(uid) {
                return f[0].to_owned();
            }
        }
    }
    "root".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let s = SshSettings::default();
        assert_eq!(s.known_hosts_policy, KnownHostsPolicy::Strict);
        assert_eq!(s.default_port, 22);
        assert_eq!(s.connect_timeout, Duration::from_secs(10));
        assert!(!s.known_hosts_file.starts_with("~") || std::env::var_os("HOME").is_none());
        assert!(!s.default_user.is_empty());
    }

    #[test]
    fn home_is_expanded() {
        if let Some(home) = std::env::var_os("HOME") {
            assert_eq!(
                expand_home(Path::new("~/.ssh/known_hosts")),
                PathBuf::from(home).join(".ssh/known_hosts")
            );
        }
        assert_eq!(expand_home(Path::new("/etc/x")), PathBuf::from("/etc/x"));
    }
}
