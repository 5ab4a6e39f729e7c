//! The runner's configuration: `runner.toml` (every key documented in
//! `runner.example.toml`) overlaid with `RDRUNNER__SECTION__KEY` environment
//! variables, read into raw serde structs (`raw`, from the sources in
//! `source`) and validated into each subsystem's own settings type. The
//! settings types and their defaults live beside their subsystems
//! (`runner`, `transport`, `ssh`, `spool`, `logging`, `metrics`); this layer only
//! reads, validates, names bad keys and refuses unknown ones.

mod error;
mod raw;
mod source;

use std::path::Path;

pub use error::ConfigError;
pub use raw::{
    RawConfig, RawHttp, RawKeyBinding, RawLog, RawMetrics, RawRunner, RawSpool, RawSsh,
    RawSupervision, RawTls,
};
pub use source::ENV_PREFIX;

use crate::logging::LogSettings;
use crate::metrics::MetricsSettings;
use crate::runner::{RunnerSettings, SupervisionSettings};
use crate::spool::SpoolSettings;
use crate::ssh::SshSettings;
use crate::transport::{HttpSettings, TlsSettings};

/// The validated configuration: one settings value per subsystem.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub runner: RunnerSettings,
    pub http: HttpSettings,
    pub tls: TlsSettings,
    pub ssh: SshSettings,
    pub spool: SpoolSettings,
    pub log: LogSettings,
    pub supervision: SupervisionSettings,
    pub metrics: MetricsSettings,
    /// What it was built from, for `rdrunner config`.
    pub raw: RawConfig,
}

/// Every subsystem's own defaults.
impl Default for Config {
    fn default() -> Self {
        Config {
            runner: RunnerSettings::default(),
            http: HttpSettings::default(),
            tls: TlsSettings::default(),
            ssh: SshSettings::default(),
            spool: SpoolSettings::default(),
            log: LogSettings::default(),
            supervision: SupervisionSettings::default(),
            metrics: MetricsSettings::default(),
            raw: RawConfig::default(),
        }
    }
}

impl Config {
    /// Loads `file` (when given) and the `RDRUNNER__*` variables of `env`.
    /// `env` is the process environment in production, a fixed list in tests;
    /// `HTTPS_PROXY` and `NO_PROXY` are taken from it too.
    pub fn load(file: Option<&Path>, env: &[(String, String)]) -> Result<Config, ConfigError> {
        let raw = source::load_raw(file, env)?;
        Config::from_raw(raw, env)
    }

    /// Validates raw values into typed ones, section by section; every
    /// refusal names its key.
    pub fn from_raw(raw: RawConfig, env: &[(String, String)]) -> Result<Config, ConfigError> {
        let runner = raw.runner.settings()?;
        // allowedNodes binds every key-store file, so the SSH executor has it too.
        let ssh = raw.ssh.settings(runner.allowed_nodes_filter())?;
        Ok(Config {
            runner,
            http: raw.http.settings(env)?,
            tls: raw.tls.settings(),
            ssh,
            spool: raw.spool.settings()?,
            log: raw.log.settings()?,
            supervision: raw.supervision.settings()?,
            metrics: raw.metrics.settings()?,
            raw,
        })
    }

    /// The effective configuration as TOML, secrets (a proxy password)
    /// redacted; what `rdrunner config` prints.
    pub fn to_redacted_toml(&self) -> String {
        let mut raw = self.raw.clone();
        raw.http.proxy = raw::redact_url_password(&raw.http.proxy);
        toml::to_string(&raw).unwrap_or_else(|e| format!("# cannot print: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::raw::redact_url_password;
    use super::source::known_keys;
    use super::*;
    use crate::spool::FsyncPolicy;
    use crate::ssh::KnownHostsPolicy;

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
        assert!(
            !cfg.runner.local_executor,
            "local execution is off unless granted"
        );
        let ssh = cfg.ssh.clone();
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
        assert!(ssh.key_bindings.is_empty() && ssh.allowed_nodes.is_none());
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
    fn the_raw_defaults_spell_the_subsystems_defaults() {
        // Config::default() is each subsystem's own default; the raw
        // defaults (what `rdrunner config` prints, what an empty file means)
        // must validate into exactly those.
        let from_raw = Config::from_raw(RawConfig::default(), &[]).unwrap();
        assert_eq!(from_raw, Config::default());
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
            (
                "[metrics]\nlisten = \"localhost:nine\"\n",
                "metrics.listen",
                "`localhost:nine` is not an IP address and port",
            ),
            (
                "[metrics]\nlisten = \"127.0.0.1\"\n",
                "metrics.listen",
                "127.0.0.1:9464",
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
    fn metrics_are_off_unless_an_address_is_given() {
        assert_eq!(Config::default().metrics.listen, None);
        let f = write("[metrics]\nlisten = \"127.0.0.1:9464\"\n");
        let cfg = Config::load(Some(f.path()), &[]).unwrap();
        assert_eq!(cfg.metrics.listen, Some("127.0.0.1:9464".parse().unwrap()));
        let e = env(&[("RDRUNNER__METRICS__LISTEN", "[::1]:9100")]);
        let cfg = Config::load(None, &e).unwrap();
        assert_eq!(cfg.metrics.listen, Some("[::1]:9100".parse().unwrap()));
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
    fn key_bindings_are_read_with_allowed_nodes_as_their_default() {
        let f = write(
            "[runner]\nallowedNodes = \"tags: lab\"\n\
             [ssh]\nkeyBindings = [\n\
               { path = \"prod/id_ed25519\", nodes = \"hostname: db[0-9]+\\\\.prod\" },\n\
               { path = \"lab//pw\", nodes = \"name: lab1\" },\n\
             ]\n",
        );
        let cfg = Config::load(Some(f.path()), &[]).unwrap();
        let ssh = &cfg.ssh;
        assert_eq!(
            ssh.allowed_nodes.as_ref().map(|a| a.as_str()),
            Some("tags: lab")
        );
        let paths: Vec<&str> = ssh.key_bindings.iter().map(|b| b.path.as_str()).collect();
        assert_eq!(paths, ["prod/id_ed25519", "lab/pw"]);
        let binding = ssh.key_binding("prod/id_ed25519").unwrap();
        let mut db = rdrunner_actors::model::Node::new("x", "db7.prod");
        assert!(binding.nodes.matches(&db));
        db.hostname = "db7.lab".into();
        assert!(!binding.nodes.matches(&db));
        // `rdrunner config` prints them, and what it prints reads back.
        let printed = write(&cfg.to_redacted_toml());
        let again = Config::load(Some(printed.path()), &[]).unwrap();
        assert_eq!(again.ssh, cfg.ssh);
        // The array-of-tables form reads the same.
        let f = write("[[ssh.keyBindings]]\npath = \"lab/pw\"\nnodes = \"name: lab1\"\n");
        let cfg = Config::load(Some(f.path()), &[]).unwrap();
        assert_eq!(cfg.ssh.key_bindings.len(), 1);
        assert!(cfg.ssh.allowed_nodes.is_none());
    }

    #[test]
    fn bad_key_bindings_name_the_key_and_the_file() {
        let cases = [
            (
                "[ssh]\nkeyBindings = [{ path = \"prod/id\", nodes = \"tags: (\" }]\n",
                "`prod/id` is not a node filter",
            ),
            (
                "[ssh]\nkeyBindings = [{ path = \"prod/id\", nodes = \"\" }]\n",
                "`prod/id` is not a node filter",
            ),
            (
                "[ssh]\nkeyBindings = [{ path = \"../id\", nodes = \".*\" }]\n",
                "not a relative path",
            ),
            (
                "[ssh]\nkeyBindings = [{ path = \"a/id\", nodes = \".*\" }, { path = \"a//id\", nodes = \"x\" }]\n",
                "bound twice",
            ),
            (
                "[ssh]\nkeyBindings = [{ path = \"id\", nodes = 3 }]\n",
                "not a table of strings",
            ),
            ("[ssh]\nkeyBindings = \"id\"\n", "not a list of tables"),
        ];
        for (text, want) in cases {
            let f = write(text);
            let err = Config::load(Some(f.path()), &[]).unwrap_err().to_string();
            assert!(
                err.contains("ssh.keyBindings") && err.contains(want),
                "{text}: {err}"
            );
        }
        let f = write("[ssh]\nkeyBindings = [{ path = \"id\", node = \".*\" }]\n");
        let err = Config::load(Some(f.path()), &[]).unwrap_err().to_string();
        assert!(err.contains("node"), "{err}");
        let err = Config::load(None, &env(&[("RDRUNNER__SSH__KEYBINDINGS", "id")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ssh.keyBindings") && err.contains("file only"),
            "{err}"
        );
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
