//! The runner's credentials (PROTOCOL §1): the `.rdrunner-creds` properties
//! file, overridden by `RUNNER_RUNDECK_*` environment variables.
//!
//! The token is held in [`Token`], whose `Debug` and `Display` print
//! `[redacted]`, so it cannot reach a log line, an error or `{:?}` output by
//! accident; only the transport reads it, through [`Token::expose`].

use std::fmt;
use std::path::{Path, PathBuf};

/// Variable that overrides `RUNDECK_RUNNER_ID`.
pub const ENV_RUNNER_ID: &str = "RUNNER_RUNDECK_CLIENT_ID";
/// Variable that overrides `RUNDECK_RUNNER_TOKEN`.
pub const ENV_TOKEN: &str = "RUNNER_RUNDECK_SERVER_TOKEN";
/// Variable that overrides `RUNDECK_SERVER_URL`.
pub const ENV_SERVER_URL: &str = "RUNNER_RUNDECK_SERVER_URL";

/// The runner's secret token. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    pub fn new(secret: impl Into<String>) -> Self {
        Token(secret.into())
    }

    /// The secret itself, for the `Authorization` header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token([redacted])")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Who the runner is and where its control plane is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub runner_id: String,
    pub token: Token,
    /// Without a trailing slash, e.g. `https://cp.example:4443`.
    pub server_url: String,
}

/// Credentials that cannot be used. None of the messages holds the token.
#[derive(Debug, thiserror::Error)]
pub enum CredsError {
    #[error("cannot read credentials file {path}: {message}")]
    Read { path: String, message: String },
    #[error(
        "credentials file {path} is readable by group or others (mode {mode:o}); it holds the \
         runner's token. Fix it with `chmod 600 {path}` (or set runner.allowInsecureCredsFile = true)"
    )]
    InsecureMode { path: String, mode: u32 },
    #[error("credentials file {path}, line {line}: expected KEY=value")]
    Syntax { path: String, line: usize },
    #[error(
        "no {what}: set {file_key} in {path} or the {env_key} environment variable \
         (the control plane gives the file when the runner is created)"
    )]
    Missing {
        what: &'static str,
        file_key: &'static str,
        env_key: &'static str,
        path: String,
    },
    #[error("server URL `{url}` must start with https:// or http://")]
    BadUrl { url: String },
}

impl Credentials {
    /// Reads `path` (if it exists) and applies the overrides found in `env`.
    /// A missing file is fine when the environment supplies everything.
    pub fn load(
        path: &Path,
        env: &[(String, String)],
        allow_insecure_file: bool,
    ) -> Result<Credentials, CredsError> {
        let shown = path.display().to_string();
        let (mut id, mut token, mut url) = (None, None, None);
        match std::fs::metadata(path) {
            Ok(meta) => {
                use std::os::unix::fs::PermissionsExt;
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 && !allow_insecure_file {
                    return Err(CredsError::InsecureMode { path: shown, mode });
                }
                let text = std::fs::read_to_string(path).map_err(|e| CredsError::Read {
                    path: shown.clone(),
                    message: e.to_string(),
                })?;
                for (n, line) in text.lines().enumerate() {
                    let line = line.trim();
                    if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
                        continue;
                    }
                    let Some((k, v)) = line.split_once('=').or_else(|| line.split_once(':')) else {
                        return Err(CredsError::Syntax {
                            path: shown,
                            line: n + 1,
                        });
                    };
                    let v = v.trim().to_owned();
                    match k.trim() {
                        "RUNDECK_RUNNER_ID" => id = Some(v),
                        "RUNDECK_RUNNER_TOKEN" => token = Some(v),
                        "RUNDECK_SERVER_URL" => url = Some(v),
                        // Later protocol versions may add keys.
                        _ => {}
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(CredsError::Read {
                    path: shown,
                    message: e.to_string(),
                })
            }
        }
        let var = |name: &str| {
            env.iter()
                .find(|(k, v)| k == name && !v.is_empty())
                .map(|(_, v)| v.clone())
        };
        id = var(ENV_RUNNER_ID).or(id).filter(|s| !s.is_empty());
        token = var(ENV_TOKEN).or(token).filter(|s| !s.is_empty());
        url = var(ENV_SERVER_URL).or(url).filter(|s| !s.is_empty());
        let missing = |what, file_key, env_key| CredsError::Missing {
            what,
            file_key,
            env_key,
            path: shown.clone(),
        };
        let runner_id =
            id.ok_or_else(|| missing("runner id", "RUNDECK_RUNNER_ID", ENV_RUNNER_ID))?;
        let token = token.ok_or_else(|| missing("token", "RUNDECK_RUNNER_TOKEN", ENV_TOKEN))?;
        let server_url = url
            .ok_or_else(|| missing("server URL", "RUNDECK_SERVER_URL", ENV_SERVER_URL))?
            .trim_end_matches('/')
            .to_owned();
        if !(server_url.starts_with("https://") || server_url.starts_with("http://")) {
            return Err(CredsError::BadUrl { url: server_url });
        }
        Ok(Credentials {
            runner_id,
            token: Token(token),
            server_url,
        })
    }
}

/// `./.rdrunner-creds`, the default credentials path.
pub fn default_path() -> PathBuf {
    PathBuf::from(".rdrunner-creds")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn file(text: &str, mode: u32) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".rdrunner-creds");
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        (dir, path)
    }

    const TEXT: &str = "# made by the control plane\nRUNDECK_RUNNER_ID=r-1\nRUNDECK_RUNNER_TOKEN=tok-secret-123\nRUNDECK_SERVER_URL=https://cp.example:4443/\n";

    #[test]
    fn reads_the_properties_file() {
        let (_d, path) = file(TEXT, 0o600);
        let c = Credentials::load(&path, &[], false).unwrap();
        assert_eq!(c.runner_id, "r-1");
        assert_eq!(c.token.expose(), "tok-secret-123");
        assert_eq!(c.server_url, "https://cp.example:4443");
    }

    #[test]
    fn environment_overrides_the_file() {
        let (_d, path) = file(TEXT, 0o600);
        let env = vec![
            (ENV_RUNNER_ID.to_owned(), "r-2".to_owned()),
            (ENV_TOKEN.to_owned(), "other".to_owned()),
            (ENV_SERVER_URL.to_owned(), "http://127.0.0.1:1".to_owned()),
        ];
        let c = Credentials::load(&path, &env, false).unwrap();
        assert_eq!(
            (
                c.runner_id.as_str(),
                c.token.expose(),
                c.server_url.as_str()
            ),
            ("r-2", "other", "http://127.0.0.1:1")
        );
        // Environment alone is enough.
        let c = Credentials::load(Path::new("/nonexistent/creds"), &env, false).unwrap();
        assert_eq!(c.runner_id, "r-2");
    }

    #[test]
    fn group_or_other_readable_file_is_refused_with_the_fix() {
        let (_d, path) = file(TEXT, 0o644);
        let err = Credentials::load(&path, &[], false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("chmod 600 {}", path.display())),
            "{err}"
        );
        assert!(!err.contains("tok-secret-123"));
        assert!(Credentials::load(&path, &[], true).is_ok());
        let (_d, path) = file(TEXT, 0o640);
        assert!(Credentials::load(&path, &[], false).is_err());
    }

    #[test]
    fn token_never_shows_in_debug_display_or_errors() {
        let (_d, path) = file(TEXT, 0o600);
        let c = Credentials::load(&path, &[], false).unwrap();
        let shown = format!("{c:?} {} {:?}", c.token, c.token);
        assert!(!shown.contains("tok-secret-123"), "{shown}");
        assert!(shown.contains("[redacted]"));
        let (_d, path) = file("RUNDECK_RUNNER_TOKEN=tok-secret-123\n", 0o600);
        let err = Credentials::load(&path, &[], false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("RUNDECK_RUNNER_ID") && !err.contains("tok-secret-123"),
            "{err}"
        );
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let (_d, path) = file("# c\nRUNDECK_RUNNER_ID=r\njunk line\n", 0o600);
        let err = Credentials::load(&path, &[], false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 3"), "{err}");
    }
}
