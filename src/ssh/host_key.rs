//! Host key checking against OpenSSH known_hosts files under the three
//! policies (strict, accept-new, off), with OpenSSH-style SHA256
//! fingerprints in every message.
//!
//! Matching is libssh2's (`check_port` looks for `[host]:port` first, then
//! the plain host, and understands hashed names). Files are read line by
//! line so that one line libssh2 cannot parse (a `@cert-authority` line, a
//! key type it lacks) does not hide the others.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Mutex;

use base64::Engine;
use rdrunner_actors::{ExecutorError, ExecutorErrorKind};
use sha2::{Digest, Sha256};
use slog::{info, warn, Logger};
use ssh2::{CheckResult, KnownHostFileKind, MethodType, Session};

use super::session::Connection;
use super::settings::{expand_home, KnownHostsPolicy, SshSettings};

/// Serialises appends to the runner's known_hosts across node steps.
static ACCEPT_LOCK: Mutex<()> = Mutex::new(());

/// `SHA256:<base64 without padding>` of a key blob, as `ssh-keygen -l` prints.
pub(crate) fn fingerprint(blob: &[u8]) -> String {
    format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(Sha256::digest(blob))
    )
}

/// The key type named at the start of an SSH key blob (`ssh-ed25519`, ...).
fn key_type(blob: &[u8]) -> Option<&str> {
    let len = u32::from_be_bytes(blob.get(..4)?.try_into().ok()?) as usize;
    std::str::from_utf8(blob.get(4..4 + len)?).ok()
}

/// Checks the node's host key under the configured policy.
pub(crate) fn verify(
    conn: &Connection,
    settings: &SshSettings,
    log: &Logger,
) -> Result<(), ExecutorError> {
    let (blob, _) = conn.session.host_key().ok_or_else(|| {
        ExecutorError::new(
            ExecutorErrorKind::Protocol,
            format!("{} (node '{}') sent no host key", conn.target, conn.node),
        )
    })?;
    let blob = blob.to_vec();
    let fp = fingerprint(&blob);
    if settings.known_hosts_policy == KnownHostsPolicy::Off {
        warn!(log, "host key checking is off: connecting without verifying the node's identity";
            "target" => &conn.target, "fingerprint" => &fp);
        return Ok(());
    }
    let known = expand_home(&settings.known_hosts_file);
    let accepted = expand_home(&settings.accepted_hosts_file);
    let lines = read_lines(&[&known, &accepted]);
    match check(conn, &lines, &blob)? {
        CheckResult::Match => Ok(()),
        CheckResult::Mismatch => Err(mismatch(conn, &lines, &blob, &fp)),
        CheckResult::NotFound | CheckResult::Failure => match settings.known_hosts_policy {
            KnownHostsPolicy::AcceptNew => accept_new(conn, &accepted, &blob, &fp, log),
            _ => Err(ExecutorError::new(
                ExecutorErrorKind::HostKey,
                format!(
                    "host key of {} (node '{}') is not known: its fingerprint is {fp}; if that is the node's key, add it to {} (e.g. ssh-keyscan -p {} {} >> {}) or use the accept-new policy",
                    conn.target,
                    conn.node,
                    known.display(),
                    conn.port,
                    conn.host,
                    known.display()
                ),
            )),
        },
    }
}

/// The known_hosts lines of `files` (missing files are empty).
fn read_lines(files: &[&Path]) -> Vec<String> {
    files
        .iter()
        .filter_map(|f| fs::read_to_string(f).ok())
        .flat_map(|text| {
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn check(conn: &Connection, lines: &[String], blob: &[u8]) -> Result<CheckResult, ExecutorError> {
    check_key(&conn.session, &conn.host, conn.port, lines, blob).map_err(|e| {
        ExecutorError::new(
            ExecutorErrorKind::HostKey,
            format!("cannot check the host key of {}: {e}", conn.target),
        )
    })
}

fn check_key(
    session: &Session,
    host: &str,
    port: u16,
    lines: &[String],
    blob: &[u8],
) -> Result<CheckResult, ssh2::Error> {
    let mut kh = session.known_hosts()?;
    for line in lines {
        // A line libssh2 cannot parse is skipped, as OpenSSH skips it.
        let _ = kh.read_str(line, KnownHostFileKind::OpenSSH);
    }
    Ok(kh.check_port(host, port, blob))
}

/// The key blob of a known_hosts line (the field that decodes to a key).
fn line_key(line: &str) -> Option<Vec<u8>> {
    line.split_whitespace().find_map(|w| {
        base64::engine::general_purpose::STANDARD
            .decode(w)
            .ok()
            .filter(|b| key_type(b).is_some())
    })
}

/// Before the handshake: asks the server for a host key type that is
/// already known for this host, so that a node recorded with its ECDSA or
/// RSA key is not refused because libssh2 would pick ed25519 first (what
/// OpenSSH's client does too). Other types stay allowed, after those.
pub(crate) fn prefer_known_types(session: &Session, settings: &SshSettings, host: &str, port: u16) {
    if settings.known_hosts_policy == KnownHostsPolicy::Off {
        return;
    }
    let known = expand_home(&settings.known_hosts_file);
    let accepted = expand_home(&settings.accepted_hosts_file);
    let mut wanted: Vec<String> = Vec::new();
    for line in read_lines(&[&known, &accepted]) {
        let Some(blob) = line_key(&line) else {
            continue;
        };
        let matched = check_key(session, host, port, std::slice::from_ref(&line), &blob);
        if let (Ok(CheckResult::Match), Some(kind)) = (matched, key_type(&blob)) {
            let algs: Vec<String> = if kind == "ssh-rsa" {
                vec![
                    "rsa-sha2-512".into(),
                    "rsa-sha2-256".into(),
                    "ssh-rsa".into(),
                ]
            } else {
                vec![kind.to_owned()]
            };
            for a in algs {
                if !wanted.contains(&a) {
                    wanted.push(a);
                }
            }
        }
    }
    if wanted.is_empty() {
        return;
    }
    let supported = session
        .supported_algs(MethodType::HostKey)
        .unwrap_or_default();
    let mut prefs: Vec<&str> = wanted
        .iter()
        .map(String::as_str)
        .filter(|a| supported.contains(a))
        .collect();
    for a in supported {
        if !prefs.contains(&a) {
            prefs.push(a);
        }
    }
    let _ = session.method_pref(MethodType::HostKey, &prefs.join(","));
}

fn mismatch(conn: &Connection, lines: &[String], blob: &[u8], fp: &str) -> ExecutorError {
    // Find the recorded key(s) the presented one contradicts, one line at a time.
    let mut known_fps = Vec::new();
    for line in lines {
        if let Ok(CheckResult::Mismatch) = check(conn, std::slice::from_ref(line), blob) {
            if let Some(stored) = line_key(line) {
                known_fps.push(fingerprint(&stored));
            }
        }
    }
    known_fps.dedup();
    let known = if known_fps.is_empty() {
        "a different key".to_owned()
    } else {
        known_fps.join(", ")
    };
    ExecutorError::new(
        ExecutorErrorKind::HostKey,
        format!(
            "HOST KEY MISMATCH for {} port {} (node '{}'): the known key is {known}, but the node presented {fp}. Someone may be impersonating the node, or its key was changed; if the change is expected, remove the old entry from the known_hosts files",
            conn.host, conn.port, conn.node
        ),
    )
}

fn accept_new(
    conn: &Connection,
    file: &Path,
    blob: &[u8],
    fp: &str,
    log: &Logger,
) -> Result<(), ExecutorError> {
    let kind = key_type(blob).ok_or_else(|| {
        ExecutorError::new(
            ExecutorErrorKind::HostKey,
            format!("host key of {} has an unreadable type", conn.target),
        )
    })?;
    let name = if conn.port == 22 {
        conn.host.clone()
    } else {
        format!("[{}]:{}", conn.host, conn.port)
    };
    let line = format!(
        "{name} {kind} {}\n",
        base64::engine::general_purpose::STANDARD.encode(blob)
    );
    let _guard = ACCEPT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    // Another node step may have recorded a key for this host meanwhile.
    let current = read_lines(&[file]);
    match check(conn, &current, blob)? {
        CheckResult::Match => return Ok(()),
        CheckResult::Mismatch => return Err(mismatch(conn, &current, blob, fp)),
        _ => {}
    }
    let write_err = |e: std::io::Error| {
        ExecutorError::new(
            ExecutorErrorKind::Io,
            format!(
                "cannot record the host key of {} in {}: {e}; check that the runner can write there",
                conn.target,
                file.display()
            ),
        )
    };
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(write_err)?;
    }
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(file)
        .map_err(write_err)?;
    f.write_all(line.as_bytes()).map_err(write_err)?;
    info!(log, "recorded a new host key (accept-new)";
        "target" => &conn.target, "fingerprint" => fp, "file" => file.display().to_string());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_matches_openssh() {
        // `ssh-keygen -lf` prints SHA256:PpOoRVD2... for this ed25519 key.
        let key = "AAAAC3NzaC1lZDI1NTE5AAAAIKfrComJUlH5jekca5OUOPQ0wAv2qEqSSAoqFyX8vM/t";
        let blob = base64::engine::general_purpose::STANDARD
            .decode(key)
            .unwrap();
        assert_eq!(key_type(&blob), Some("ssh-ed25519"));
        assert_eq!(
            fingerprint(&blob),
            "SHA256:PpOoRVD2wKKPc/a8+EL+tzEEqg6xTc/8zOVzFQP3tRs"
        );
    }
}
