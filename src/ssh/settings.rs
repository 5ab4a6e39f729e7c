//! The SSH executor's settings and their defaults, written once here: the
//! daemon's `[ssh]` section is read into this type, and the defaults that
//! `runner.example.toml` documents are these.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use rdrunner_actors::filter::NodeFilter;
use rdrunner_actors::model::Node;

/// The operator's known_hosts file as the configuration spells it by
/// default; `~` is expanded when the file is read.
pub const DEFAULT_KNOWN_HOSTS_FILE: &str = "~/.ssh/known_hosts";

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

impl KnownHostsPolicy {
    /// The policy named as in the configuration (`strict`, `accept-new`,
    /// `off`); `None` for any other name.
    pub fn from_name(name: &str) -> Option<KnownHostsPolicy> {
        match name {
            "strict" => Some(KnownHostsPolicy::Strict),
            "accept-new" => Some(KnownHostsPolicy::AcceptNew),
            "off" => Some(KnownHostsPolicy::Off),
            _ => None,
        }
    }

    /// The name the configuration uses for the policy.
    pub fn name(self) -> &'static str {
        match self {
            KnownHostsPolicy::Strict => "strict",
            KnownHostsPolicy::AcceptNew => "accept-new",
            KnownHostsPolicy::Off => "off",
        }
    }
}

/// A parsed node filter, equal to another when their texts are equal.
#[derive(Debug, Clone)]
pub struct NodeSet(pub NodeFilter);

impl NodeSet {
    /// The filter's text, as configured.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    pub fn matches(&self, node: &Node) -> bool {
        self.0.matches(node)
    }
}

impl PartialEq for NodeSet {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

/// A key-store file bound to the nodes it may be used for: one entry of
/// `ssh.keyBindings`.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyBinding {
    /// The file's path in the key store, as [`store_path`] writes it.
    pub path: String,
    /// The only nodes (within `allowed_nodes`) the file may be sent to or
    /// used for.
    pub nodes: NodeSet,
}

/// `text` as a path inside the key store (`a/b`: relative, no `.` or `..`,
/// no empty parts); `None` when it is not one.
pub fn store_path(text: &str) -> Option<String> {
    let p = Path::new(text);
    let parts: Option<Vec<&str>> = p
        .components()
        .map(|c| match c {
            Component::Normal(s) => s.to_str(),
            _ => None,
        })
        .collect();
    let parts = parts?;
    // `Path::components` drops a `.` in the middle; refuse it all the same.
    let dots = text.split('/').any(|s| s == "." || s == "..");
    (!parts.is_empty() && !dots).then(|| parts.join("/"))
}

/// Settings of the SSH executor.
#[derive(Debug, Clone, PartialEq)]
pub struct SshSettings {
    /// Directory of private keys and password files; the node attributes
    /// `ssh-key-storage-path` and `ssh-password-storage-path` name files in
    /// it by relative path. Each file must be 0600 (or stricter), owned by
    /// the runner's user or root; no directory of the store may be
    /// writable by group or others.
    pub key_store: PathBuf,
    /// The runner's `allowedNodes`: every key-store file may be used only
    /// for nodes it matches. `None`: every node.
    pub allowed_nodes: Option<NodeSet>,
    /// Narrower bindings of single files (`ssh.keyBindings`): a file named
    /// here may be used only for the nodes its binding matches as well.
    pub key_bindings: Vec<KeyBinding>,
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
    /// Off unless asked for: an agent the runner happens to inherit is not
    /// a credential the operator chose.
    pub use_agent: bool,
    /// Where per-step directories for scripts are made on the node. One
    /// that group or others can write to must have the sticky bit (as
    /// `/tmp` has), or script steps are refused.
    pub remote_tmp_dir: String,
    /// Whether steps run detached from their connection, so that one that
    /// drops is dialled again and the step followed on (`runner.reattach`,
    /// set by the daemon). Off: steps run attached, and fail with it.
    pub reattach: bool,
    /// How long a node whose connection dropped may stay out of reach
    /// before its step fails (the step's timeout still ends it first).
    pub reattach_window: Duration,
}

impl Default for SshSettings {
    fn default() -> Self {
        SshSettings {
            key_store: PathBuf::from("./runner/keys"),
            allowed_nodes: None,
            key_bindings: Vec::new(),
            known_hosts_policy: KnownHostsPolicy::Strict,
            known_hosts_file: expand_home(Path::new(DEFAULT_KNOWN_HOSTS_FILE)),
            accepted_hosts_file: PathBuf::from("./runner/known_hosts"),
            default_user: current_user(),
            default_port: 22,
            connect_timeout: Duration::from_secs(10),
            call_timeout: Duration::from_secs(30),
            keepalive_interval: Duration::from_secs(15),
            use_agent: false,
            remote_tmp_dir: "/tmp".to_owned(),
            reattach: true,
            reattach_window: Duration::from_secs(600),
        }
    }
}

impl SshSettings {
    /// The binding of key-store file `path` (as [`store_path`] writes it).
    pub fn key_binding(&self, path: &str) -> Option<&KeyBinding> {
        self.key_bindings.iter().find(|b| b.path == path)
    }
}

/// `~/x` with `$HOME` put in; other paths as they are.
pub fn expand_home(path: &Path) -> PathBuf {
    match (path.strip_prefix("~"), std::env::var_os("HOME")) {
        (Ok(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => path.to_path_buf(),
    }
}

/// The name of the user the runner runs as.
pub fn current_user() -> String {
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

    #[test]
    fn store_paths_are_relative_and_plain() {
        assert_eq!(store_path("a/b").as_deref(), Some("a/b"));
        assert_eq!(store_path("a//b/").as_deref(), Some("a/b"));
        assert_eq!(store_path("id").as_deref(), Some("id"));
        for bad in ["", "/etc/x", "../x", "a/../x", "./x", "a/./x", "."] {
            assert_eq!(store_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn policies_read_back_by_name() {
        for p in [
            KnownHostsPolicy::Strict,
            KnownHostsPolicy::AcceptNew,
            KnownHostsPolicy::Off,
        ] {
            assert_eq!(KnownHostsPolicy::from_name(p.name()), Some(p));
        }
        assert_eq!(KnownHostsPolicy::from_name("maybe"), None);
    }
}
