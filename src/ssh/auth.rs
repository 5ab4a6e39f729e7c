//! Logging in to a node with credentials from the runner's key store: a
//! private key file (with an optional `<key>.passphrase` beside it), a
//! password file, and every identity of the SSH agent.
//!
//! The key store is the runner's; the control plane only names files in it,
//! for nodes it also names. So every file is checked, and read, before any
//! connection is made ([`Credentials::load`]):
//! - bound: the node must match `runner.allowedNodes` and the file's own
//!   `ssh.keyBindings` entry, if it has one, under the name the node uses
//!   and under the name of the file a symlink leads to;
//! - inside: a relative path without `..`, and no symlink that leads out of
//!   the store;
//! - private: the file 0600 or stricter, owned by the runner's user or
//!   root, and no directory from the store down to it writable by group or
//!   others. A store others can read is accepted: names are no secret, and
//!   each file keeps its content to itself by its own mode;
//! - what it claims to be: a password file that holds a private key or more
//!   than one line is refused, and a `.passphrase` file is read only beside
//!   its key, never sent as a password.

use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rdrunner_actors::model::Node;
use rdrunner_actors::{ExecutorError, ExecutorErrorKind};

use super::session::Connection;
use super::settings::{expand_home, store_path, SshSettings};

/// Node attribute naming a private key file in the key store.
pub const KEY_ATTRIBUTE: &str = "ssh-key-storage-path";
/// Node attribute naming a password file in the key store.
pub const PASSWORD_ATTRIBUTE: &str = "ssh-password-storage-path";

/// Suffix of the file that holds a key's passphrase, beside the key.
const PASSPHRASE_SUFFIX: &str = ".passphrase";
/// Largest key-store file read; keys and passwords are far smaller.
const MAX_SECRET_BYTES: u64 = 64 * 1024;

fn config_error(message: String) -> ExecutorError {
    ExecutorError::new(ExecutorErrorKind::Config, message)
}

/// Resolves `rel` inside the key store; it must stay inside it.
pub(crate) fn key_store_file(
    store: &Path,
    rel: &str,
    attribute: &str,
    node: &str,
) -> Result<PathBuf, ExecutorError> {
    let Some(clean) = store_path(rel) else {
        return Err(config_error(format!(
            "node '{node}' has {attribute} '{rel}', which is not a relative path inside the key store (no '..', not absolute)"
        )));
    };
    let path = expand_home(store).join(clean);
    if !path.is_file() {
        return Err(config_error(format!(
            "node '{node}' has {attribute} '{rel}', but {} is not a file: put it in the key store",
            path.display()
        )));
    }
    Ok(path)
}

/// A file of the key store, found and confined but not yet read.
struct StoreFile {
    /// The name the node used, as `store_path` writes it.
    name: String,
    /// The name of the file itself (after symlinks) in the store.
    real_name: String,
    /// The path as named, for messages (`chmod 600 <path>`).
    path: PathBuf,
    /// The path with every symlink resolved, which is what is opened.
    real: PathBuf,
    /// The store's own path with symlinks resolved.
    store: PathBuf,
}

impl StoreFile {
    /// Finds `rel` in the store and refuses it when it resolves outside.
    fn find(
        settings: &SshSettings,
        rel: &str,
        attribute: &str,
        node: &str,
    ) -> Result<StoreFile, ExecutorError> {
        let path = key_store_file(&settings.key_store, rel, attribute, node)?;
        let name = store_path(rel).unwrap_or_default();
        let store_named = expand_home(&settings.key_store);
        let io = |what: &Path, e: std::io::Error| {
            ExecutorError::new(
                ExecutorErrorKind::Io,
                format!("cannot resolve {} for node '{node}': {e}", what.display()),
            )
        };
        let store = fs::canonicalize(&store_named).map_err(|e| io(&store_named, e))?;
        let real = fs::canonicalize(&path).map_err(|e| io(&path, e))?;
        let Ok(inside) = real.strip_prefix(&store) else {
            return Err(config_error(format!(
                "node '{node}' has {attribute} '{rel}', which leads to {}, outside the key store {}: put the file itself in the key store instead of a symlink to it",
                real.display(),
                store.display()
            )));
        };
        let real_name = inside
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        Ok(StoreFile {
            name,
            real_name,
            path,
            real,
            store,
        })
    }

    /// Refuses a node the file is not bound to.
    fn check_bound(
        &self,
        settings: &SshSettings,
        node: &Node,
        attribute: &str,
    ) -> Result<(), ExecutorError> {
        if let Some(allowed) = &settings.allowed_nodes {
            if !allowed.matches(node) {
                return Err(config_error(format!(
                    "node '{}' may not use key-store file '{}' ({attribute}): every key-store file is bound to runner.allowedNodes `{}`, which the node does not match",
                    node.name,
                    self.name,
                    allowed.as_str()
                )));
            }
        }
        for name in [&self.name, &self.real_name] {
            if let Some(binding) = settings.key_binding(name) {
                if !binding.nodes.matches(node) {
                    let via = if *name == self.name {
                        String::new()
                    } else {
                        format!(" (which '{}' leads to)", self.name)
                    };
                    return Err(config_error(format!(
                        "node '{}' may not use key-store file '{name}'{via} ({attribute}): ssh.keyBindings binds it to nodes `{}`, which the node does not match; widen the binding in the runner's configuration or give the node a key of its own",
                        node.name,
                        binding.nodes.as_str()
                    )));
                }
            }
        }
        Ok(())
    }

    /// Reads the file after checking that it, and every directory from the
    /// store down to it, is private.
    fn read(&self, node: &str) -> Result<String, ExecutorError> {
        let mut dir = self.real.parent();
        while let Some(d) = dir {
            let meta = fs::metadata(d).map_err(|e| {
                ExecutorError::new(
                    ExecutorErrorKind::Io,
                    format!("cannot look at {} for node '{node}': {e}", d.display()),
                )
            })?;
            if meta.mode() & 0o022 != 0 {
                return Err(config_error(format!(
                    "key-store directory {} is writable by group or others (mode {:04o}), so another user could swap the files in it: chmod go-w {}",
                    d.display(),
                    meta.mode() & 0o7777,
                    d.display()
                )));
            }
            if d == self.store {
                break;
            }
            dir = d.parent();
        }
        let shown = self.path.display();
        let io = |e: std::io::Error| {
            ExecutorError::new(
                ExecutorErrorKind::Io,
                format!("cannot read {shown} for node '{node}': {e}"),
            )
        };
        let file = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&self.real)
            .map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        if !meta.is_file() {
            return Err(config_error(format!(
                "{shown} (for node '{node}') is not a regular file"
            )));
        }
        if meta.mode() & 0o077 != 0 {
            return Err(config_error(format!(
                "key-store file {shown} is open to group or others (mode {:04o}); the runner uses no secret others can read or change: chmod 600 {shown}",
                meta.mode() & 0o7777
            )));
        }
        let me = runner_uid();
        if meta.uid() != me && meta.uid() != 0 {
            return Err(config_error(format!(
                "key-store file {shown} is owned by uid {}, not by the runner's user (uid {me}) or root: chown it to the runner's user",
                meta.uid()
            )));
        }
        if meta.len() > MAX_SECRET_BYTES {
            return Err(config_error(format!(
                "key-store file {shown} has {} bytes, more than any key or password ({MAX_SECRET_BYTES} at most)",
                meta.len()
            )));
        }
        let mut text = String::new();
        file.take(MAX_SECRET_BYTES)
            .read_to_string(&mut text)
            .map_err(io)?;
        Ok(text)
    }
}

/// Makes the key store directory private (0700) when it is the runner's
/// own and others may enter or read it; returns the mode it had then.
/// A store another user owns (root, say, for a store shared read-only) is
/// left as it is: each file's own mode (0600, checked at every use) guards
/// its content. A store that does not exist yet is left to the operator.
pub fn tighten_key_store(store: &Path) -> std::io::Result<Option<u32>> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let store = expand_home(store);
    let meta = match fs::metadata(&store) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mode = meta.permissions().mode() & 0o7777;
    if !meta.is_dir() || meta.uid() != runner_uid() || mode & 0o077 == 0 {
        return Ok(None);
    }
    fs::set_permissions(&store, fs::Permissions::from_mode(mode & 0o7700))?;
    Ok(Some(mode))
}

/// The user id the runner runs as (its effective uid).
fn runner_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// A secret file's content without its trailing line break.
fn strip_line_end(text: &str) -> &str {
    let text = text.strip_suffix('\n').unwrap_or(text);
    text.strip_suffix('\r').unwrap_or(text)
}

/// Why `text` cannot be a password, if it cannot: a private key (sending
/// it as a password would hand it to the node's sshd) or several lines.
fn not_a_password(text: &str) -> Option<&'static str> {
    const KEY_SIGNS: [&str; 4] = [
        // PEM and OpenSSH ("-----BEGIN OPENSSH PRIVATE KEY-----"), SSH.COM
        "PRIVATE KEY",
        "PuTTY-User-Key-File-",
        "openssh-key-v1",
        // "openssh-key-v1" in base64, as in the body of an OpenSSH key.
        "b3BlbnNzaC1rZXktdjE",
    ];
    if KEY_SIGNS.iter().any(|s| text.contains(s)) {
        Some("holds a private key, not a password: name a key with ssh-key-storage-path")
    } else if text.contains('\n') || text.contains('\0') {
        Some("holds more than one line; a password file holds the password alone, on one line")
    } else {
        None
    }
}

/// A private key read from the store.
struct KeyCredential {
    /// The store path the node named, for messages.
    name: String,
    pem: String,
    passphrase: Option<String>,
}

/// A password read from the store.
struct PasswordCredential {
    name: String,
    password: String,
}

/// The credentials a node names, read from the key store and checked.
pub(crate) struct Credentials {
    key: Option<KeyCredential>,
    password: Option<PasswordCredential>,
}

impl Credentials {
    /// Reads the files `node` names, refusing any it may not use.
    pub(crate) fn load(settings: &SshSettings, node: &Node) -> Result<Credentials, ExecutorError> {
        let key = match node.attributes.get(KEY_ATTRIBUTE) {
            None => None,
            Some(rel) => Some(load_key(settings, node, rel)?),
        };
        let password = match node.attributes.get(PASSWORD_ATTRIBUTE) {
            None => None,
            Some(rel) => Some(load_password(settings, node, rel)?),
        };
        Ok(Credentials { key, password })
    }
}

/// Refuses a `.passphrase` file named as a credential of its own.
fn refuse_passphrase_file(
    file: &StoreFile,
    attribute: &str,
    node: &str,
) -> Result<(), ExecutorError> {
    for name in [&file.name, &file.real_name] {
        if name.ends_with(PASSPHRASE_SUFFIX) {
            return Err(config_error(format!(
                "node '{node}' has {attribute} naming '{name}', a key's passphrase file: it is read only beside its key, never used on its own"
            )));
        }
    }
    Ok(())
}

fn load_key(
    settings: &SshSettings,
    node: &Node,
    rel: &str,
) -> Result<KeyCredential, ExecutorError> {
    let file = StoreFile::find(settings, rel, KEY_ATTRIBUTE, &node.name)?;
    refuse_passphrase_file(&file, KEY_ATTRIBUTE, &node.name)?;
    file.check_bound(settings, node, KEY_ATTRIBUTE)?;
    let pem = file.read(&node.name)?;
    let beside = format!("{}{PASSPHRASE_SUFFIX}", file.name);
    let passphrase = if expand_home(&settings.key_store).join(&beside).is_file() {
        let pf = StoreFile::find(settings, &beside, KEY_ATTRIBUTE, &node.name)?;
        Some(strip_line_end(&pf.read(&node.name)?).to_owned())
    } else {
        None
    };
    Ok(KeyCredential {
        name: file.name,
        pem,
        passphrase,
    })
}

fn load_password(
    settings: &SshSettings,
    node: &Node,
    rel: &str,
) -> Result<PasswordCredential, ExecutorError> {
    let file = StoreFile::find(settings, rel, PASSWORD_ATTRIBUTE, &node.name)?;
    refuse_passphrase_file(&file, PASSWORD_ATTRIBUTE, &node.name)?;
    file.check_bound(settings, node, PASSWORD_ATTRIBUTE)?;
    let text = file.read(&node.name)?;
    let password = strip_line_end(&text);
    if let Some(why) = not_a_password(password) {
        return Err(config_error(format!(
            "node '{}' has {PASSWORD_ATTRIBUTE} '{rel}', but {} {why}; it was not sent",
            node.name,
            file.path.display()
        )));
    }
    Ok(PasswordCredential {
        name: file.name.clone(),
        password: password.to_owned(),
    })
}

/// Authenticates as `user`, trying the key file, the password and the agent
/// (each when configured and accepted by the server).
pub(crate) fn authenticate(
    conn: &Connection,
    settings: &SshSettings,
    credentials: &Credentials,
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

    if let Some(key) = &credentials.key {
        let rel = &key.name;
        if !accepts("publickey") {
            tried.push(format!(
                "publickey with key '{rel}' (not offered by the server)"
            ));
        } else {
            match session.userauth_pubkey_memory(user, None, &key.pem, key.passphrase.as_deref()) {
                Ok(()) if session.authenticated() => return Ok(()),
                Ok(()) => tried.push(format!("publickey with key '{rel}'")),
                Err(e) => tried.push(format!("publickey with key '{rel}' ({})", e.message())),
            }
        }
    }

    if let Some(pw) = &credentials.password {
        let rel = &pw.name;
        let password = &pw.password;
        if accepts("password") {
            match session.userauth_password(user, password) {
                Ok(()) if session.authenticated() => return Ok(()),
                Ok(()) => tried.push(format!("password from '{rel}'")),
                Err(e) => tried.push(format!("password from '{rel}' ({})", e.message())),
            }
        }
        // Servers that check passwords through PAM often ask for them as
        // keyboard-interactive prompts instead.
        if accepts("keyboard-interactive") {
            let mut answer = PasswordAnswer(password);
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
    fn the_runners_own_key_store_is_made_private() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let store = d.path().join("keys");
        assert_eq!(
            tighten_key_store(&store).unwrap(),
            None,
            "missing: left alone"
        );
        fs::create_dir(&store).unwrap();
        fs::set_permissions(&store, fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(tighten_key_store(&store).unwrap(), Some(0o755));
        let mode = fs::metadata(&store).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o700);
        assert_eq!(tighten_key_store(&store).unwrap(), None, "already private");
    }

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
        assert_eq!(strip_line_end("s3cret \r\n"), "s3cret ");
        assert_eq!(strip_line_end("a\n\n"), "a\n");
    }

    #[test]
    fn private_keys_and_several_lines_are_not_passwords() {
        for key in [
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAA\n-----END OPENSSH PRIVATE KEY-----",
            "-----BEGIN RSA PRIVATE KEY-----",
            "PuTTY-User-Key-File-3: ssh-ed25519",
            "---- BEGIN SSH2 ENCRYPTED PRIVATE KEY ----",
            "b3BlbnNzaC1rZXktdjEAAAAABG5vbmU",
        ] {
            assert!(not_a_password(key).unwrap().contains("private key"), "{key}");
        }
        assert!(not_a_password("one\ntwo").unwrap().contains("one line"));
        assert_eq!(not_a_password("pw-Test-4711 with spaces"), None);
    }
}
