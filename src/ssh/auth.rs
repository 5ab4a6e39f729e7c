//! Logging in to a node with credentials from the runner's key store: a
//! private key file (with an optional `<key>.passphrase` beside it), a
//! password file, and every identity of the SSH agent.

use std::fs;
use std::path::{Component, Path, PathBuf};

use rdrunner_actors::model::Node;
use rdrunner_actors::{ExecutorError, ExecutorErrorKind};

use super::session::Connection;
use super::settings::{expand_home, SshSettings};

/// Node attribute naming a private key file in the key store.
pub const KEY_ATTRIBUTE: &str = "ssh-key-storage-path";
/// Node attribute naming a password file in the key store.
pub const PASSWORD_ATTRIBUTE: &str = "ssh-password-storage-path";

/// Resolves `rel` inside the key store; it must stay inside it.
pub(crate) fn key_store_file(
    store: &Path,
    rel: &str,
    attribute: &str,
    node: &str,
) -> Result<PathBuf, ExecutorError> {
    let p = Path::new(rel);
    let inside = !rel.is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)));
    if !inside {
        return Err(ExecutorError::new(
            ExecutorErrorKind::Config,
            format!("node '{node}' has {attribute} '{rel}', which is not a relative path inside the key store (no '..', not absolute)"),
        ));
    }
    let path = expand_home(store).join(p);
    if !path.is_file() {
        return Err(ExecutorError::new(
            ExecutorErrorKind::Config,
            format!(
                "node '{node}' has {attribute} '{rel}', but {} is not a file: put it in the key store",
                path.display()
            ),
        ));
    }
    Ok(path)
}

/// A secret file's content without its trailing line break.
fn read_secret(path: &Path, node: &str) -> Result<String, ExecutorError> {
    let text = fs::read_to_string(path).map_err(|e| {
        ExecutorError::new(
            ExecutorErrorKind::Io,
            format!("cannot read {} for node '{node}': {e}", path.display()),
        )
    })?;
    let text = text.strip_suffix('\n').unwrap_or(&text);
    Ok(text.strip_suffix('\r').unwrap_or(text).to_owned())
}

/// Authenticates as `user`, trying the key file, the password and the agent
/// (each when configured and accepted by the server).
pub(crate) fn authenticate(
    conn: &Connection,
    settings: &SshSettings,
    node: &Node,
    user: &str,
) -> Result<(), ExecutorError> {
    let session = &conn.session;
    let offered = match session.auth_methods(user) {
        Ok(m) => m.to_owned(),
        // The "none" method succeeded: the server wants no credentials.
        Err(_) if session.authenticated() => return Ok(()),
        Err(e) => {
            return Err(ExecutorError::new(
                ExecutorErrorKind::Protocol,
                format!(
                    "{} (node '{}') did not answer which login methods it accepts: {e}",
                    conn.target, node.name
                ),
            ))
        }
    };
    let accepts = |m: &str| offered.split(',').any(|o| o == m);
    let mut tried: Vec<String> = Vec::new();

    if let Some(rel) = node.attributes.get(KEY_ATTRIBUTE) {
        let key = key_store_file(&settings.key_store, rel, KEY_ATTRIBUTE, &node.name)?;
        let mut pass_path = key.clone().into_os_string();
        pass_path.push(".passphrase");
        let pass_path = PathBuf::from(pass_path);
        let passphrase = if pass_path.is_file() {
            Some(read_secret(&pass_path, &node.name)?)
        } else {
            None
        };
        if !accepts("publickey") {
            tried.push(format!(
                "publickey with key '{rel}' (not offered by the server)"
            ));
        } else {
            match session.userauth_pubkey_file(user, None, &key, passphrase.as_deref()) {
                Ok(()) if session.authenticated() => return Ok(()),
                Ok(()) => tried.push(format!("publickey with key '{rel}'")),
                Err(e) => tried.push(format!("publickey with key '{rel}' ({})", e.message())),
            }
        }
    }

    if let Some(rel) = node.attributes.get(PASSWORD_ATTRIBUTE) {
        let path = key_store_file(&settings.key_store, rel, PASSWORD_ATTRIBUTE, &node.name)?;
        let password = read_secret(&path, &node.name)?;
        if accepts("password") {
            match session.userauth_password(user, &password) {
                Ok(()) if session.authenticated() => return Ok(()),
                Ok(()) => tried.push(format!("password from '{rel}'")),
                Err(e) => tried.push(format!("password from '{rel}' ({})", e.message())),
            }
        }
        // Servers that check passwords through PAM often ask for them as
        // keyboard-interactive prompts instead.
        if accepts("keyboard-interactive") {
            let mut answer = PasswordAnswer(&password);
            match session.userauth_keyboard_interactive(user, &mut answer) {
                Ok(()) if session.authenticated() => return Ok(()),
                Ok(()) => tried.push(format!(
                    "keyboard-interactive with the password from '{rel}'"
                )),
                Err(e) => tried.push(format!(
                    "keyboard-interactive with the password from '{rel}' ({})",
                    e.message()
                )),
            }
        }
        if !accepts("password") && !accepts("keyboard-interactive") {
            tried.push(format!("password from '{rel}' (not offered by the server)"));
        }
    }

    if settings.use_agent {
        if !accepts("publickey") {
            tried.push("agent (publickey not offered by the server)".to_owned());
        } else {
            match try_agent(conn, user) {
                Ok(()) => return Ok(()),
                Err(note) => tried.push(format!("agent ({note})")),
            }
        }
    }

    let what = if tried.is_empty() {
        format!(
            "no credentials are configured: give the node a {KEY_ATTRIBUTE} or {PASSWORD_ATTRIBUTE} attribute, or run the runner with an SSH agent"
        )
    } else {
        format!("tried {}", tried.join("; "))
    };
    Err(ExecutorError::new(
        ExecutorErrorKind::Authentication,
        format!(
            "authentication as '{user}' on node '{}' ({}) failed: {what}; the server offers: {offered}",
            node.name, conn.target
        ),
    ))
}

/// Answers every keyboard-interactive prompt with the node's password.
struct PasswordAnswer<'a>(&'a str);

impl ssh2::KeyboardInteractivePrompt for PasswordAnswer<'_> {
    fn prompt<'b>(
        &mut self,
        _username: &str,
        _instructions: &str,
        prompts: &[ssh2::Prompt<'b>],
    ) -> Vec<String> {
        prompts.iter().map(|_| self.0.to_owned()).collect()
    }
}

/// Tries every identity of the agent (libssh2's `userauth_agent` stops at
/// the first). `Err` carries a note on why the agent could not be used or
/// how many identities were refused.
fn try_agent(conn: &Connection, user: &str) -> Result<(), String> {
    let mut agent = conn.session.agent().map_err(|e| e.message().to_owned())?;
    agent
        .connect()
        .map_err(|e| format!("cannot connect: {}", e.message()))?;
    agent
        .list_identities()
        .map_err(|e| format!("cannot list identities: {}", e.message()))?;
    let ids = agent
        .identities()
        .map_err(|e| format!("cannot list identities: {}", e.message()))?;
    for id in &ids {
        if agent.userauth(user, id).is_ok() && conn.session.authenticated() {
            let _ = agent.disconnect();
            return Ok(());
        }
    }
    let _ = agent.disconnect();
    Err(format!("{} identities refused", ids.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_store_paths_stay_inside() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("k"), "x").unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        fs::write(dir.path().join("sub/k"), "x").unwrap();
        assert!(key_store_file(dir.path(), "k", KEY_ATTRIBUTE, "n").is_ok());
        assert!(key_store_file(dir.path(), "sub/k", KEY_ATTRIBUTE, "n").is_ok());
        for bad in ["../k", "sub/../k", "/etc/passwd", "", "./k"] {
            let e = key_store_file(dir.path(), bad, KEY_ATTRIBUTE, "n").unwrap_err();
            assert_eq!(e.kind, ExecutorErrorKind::Config, "{bad}");
            assert!(e.message.contains("node 'n'"), "{}", e.message);
        }
        let e = key_store_file(dir.path(), "missing", KEY_ATTRIBUTE, "n").unwrap_err();
        assert!(e.message.contains("not a file"), "{}", e.message);
    }

    #[test]
    fn secrets_lose_one_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        fs::write(&p, "s3cret \r\n").unwrap();
        assert_eq!(read_secret(&p, "n").unwrap(), "s3cret ");
    }
}
