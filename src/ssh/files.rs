//! Steps that move files over SFTP: a script uploaded into a private
//! directory of its own under the remote temp dir, run, and removed
//! whatever happened; and a copy step that writes content with a mode.
//!
//! Nothing is written through a name another user may have prepared: a file
//! is always created new (`O_EXCL`, mode 0600, so nothing at its name is
//! followed), its mode is set on the open handle, and a copy reaches its
//! destination by a rename, which replaces a symlink there instead of
//! writing to where it points.

use std::io::Write;
use std::path::Path;

use base64::Engine;
use rdrunner_actors::context::shell_quote;
use rdrunner_actors::model::{CopyStep, ScriptStep};
use rdrunner_actors::{
    AbortSignal, ExecutorError, ExecutorErrorKind, OutputSink, StepOutcome, StepRequest,
};
use slog::{debug, warn};
use ssh2::{FileStat, OpenFlags, OpenType, Sftp};

use super::channel::{reason_text, Runner};
use super::detached::{self, Reattach};

/// Upload chunk: the abort signal is looked at between chunks.
const UPLOAD_CHUNK: usize = 64 * 1024;

/// Uploads, runs and removes a script step.
pub(crate) fn run_script(
    run: &Runner,
    reattach: Option<&Reattach>,
    req: &StepRequest,
    step: &ScriptStep,
    output: &mut dyn OutputSink,
    abort: &AbortSignal,
) -> Result<StepOutcome, ExecutorError> {
    let dir = format!(
        "{}/rdrunner-{}-{}-{:08x}",
        run.settings.remote_tmp_dir.trim_end_matches('/'),
        sanitize(&req.op_id),
        req.step_index,
        rand::random::<u32>()
    );
    let file = format!("{dir}/script{}", extension(step.file_extension.as_deref()));
    let sftp = open_sftp(run)?;
    check_shared_dir(run, &sftp, &run.settings.remote_tmp_dir)?;
    sftp.mkdir(Path::new(&dir), 0o700)
        .map_err(|e| sftp_error(run, &format!("cannot create the script directory {dir}"), e))?;
    let result = (|| {
        check_private_dir(run, &sftp, &dir)?;
        if !write_new(run, &sftp, &file, step.script.as_bytes(), 0o700, abort)? {
            return Ok(aborted_during_upload(abort));
        }
        drop(sftp);
        let mut command = match step.interpreter.as_deref().map(str::trim) {
            Some(i) if !i.is_empty() => format!("{i} {}", shell_quote(&file)),
            _ => shell_quote(&file),
        };
        for arg in &step.args {
            command.push(' ');
            command.push_str(&shell_quote(arg));
        }
        detached::run_step(
            run,
            reattach,
            &req.env,
            &command,
            output,
            abort,
            req.kill_grace,
        )
    })();
    // Removed whatever happened, also after a failure or an abort.
    match run.side_command(&format!("rm -rf -- {}", shell_quote(&dir))) {
        Ok((0, _)) => debug!(run.log, "removed the script directory"; "dir" => &dir),
        Ok((code, out)) => {
            warn!(run.log, "could not remove the script directory"; "dir" => &dir, "status" => code, "output" => out.trim())
        }
        Err(e) => {
            warn!(run.log, "could not remove the script directory"; "dir" => &dir, "error" => e)
        }
    }
    result
}

/// Writes a copy step's content to its destination with its mode.
pub(crate) fn copy(
    run: &Runner,
    step: &CopyStep,
    abort: &AbortSignal,
) -> Result<StepOutcome, ExecutorError> {
    let config = |m: String| ExecutorError::new(ExecutorErrorKind::Config, m);
    let mode = step.mode_bits().ok_or_else(|| {
        config(format!(
            "copy step to {} has mode {:?}, which is not an octal file mode such as 0644",
            step.destination,
            step.mode.as_deref().unwrap_or("")
        ))
    })?;
    if !step.destination.starts_with('/') {
        return Err(config(format!(
            "copy step destination '{}' is not an absolute path on the node",
            step.destination
        )));
    }
    let content = base64::engine::general_purpose::STANDARD
        .decode(step.content_base64.trim())
        .map_err(|e| {
            config(format!(
                "copy step to {} has content that is not base64: {e}",
                step.destination
            ))
        })?;
    if mode > 0o777 {
        return Err(config(format!(
            "copy step to {} has mode {mode:04o}: setuid, setgid and sticky bits are not written; use a mode of at most 0777",
            step.destination
        )));
    }
    let sftp = open_sftp(run)?;
    if !write_replacing(run, &sftp, &step.destination, &content, mode, abort)? {
        return Ok(aborted_during_upload(abort));
    }
    Ok(StepOutcome {
        exit_code: Some(0),
        signal: None,
        message: Some(format!(
            "wrote {} bytes to {} (mode {mode:04o})",
            content.len(),
            step.destination
        )),
    })
}

fn open_sftp(run: &Runner) -> Result<Sftp, ExecutorError> {
    let conn = run.conn.borrow();
    conn.session.set_blocking(true);
    conn.session
        .sftp()
        .map_err(|e| sftp_error(run, "cannot start SFTP", e))
}

/// Refuses a directory that others may write to without the sticky bit:
/// there another user could rename the step's private directory away and
/// put one of theirs in its place.
fn check_shared_dir(run: &Runner, sftp: &Sftp, dir: &str) -> Result<(), ExecutorError> {
    let stat = sftp
        .stat(Path::new(dir))
        .map_err(|e| sftp_error(run, &format!("cannot look at the remote temp dir {dir}"), e))?;
    let perm = stat.perm.unwrap_or(0);
    if perm & 0o022 != 0 && perm & 0o1000 == 0 {
        return Err(ExecutorError::new(
            ExecutorErrorKind::Config,
            format!(
                "the remote temp dir {dir} on node '{}' is writable by group or others without the sticky bit (mode {:04o}), so another user could swap the step's directory: set ssh.remoteTmpDir to a directory with the sticky bit (like /tmp) or one only the login user can write",
                run.node,
                perm & 0o7777
            ),
        ));
    }
    Ok(())
}

/// Checks that `dir`, just made, is a directory (not a link) that only its
/// owner can enter.
fn check_private_dir(run: &Runner, sftp: &Sftp, dir: &str) -> Result<(), ExecutorError> {
    let stat = sftp.lstat(Path::new(dir)).map_err(|e| {
        sftp_error(
            run,
            &format!("cannot look at the script directory {dir}"),
            e,
        )
    })?;
    let perm = stat.perm.unwrap_or(0o777);
    if !stat.is_dir() || perm & 0o077 != 0 {
        return Err(ExecutorError::new(
            ExecutorErrorKind::Protocol,
            format!(
                "the script directory {dir} on node '{}' is not a private directory after it was made (mode {perm:o}); another process changed it, so the script was not uploaded",
                run.node
            ),
        ));
    }
    Ok(())
}

/// Creates `path`, which must not exist (not even as a symlink), with
/// `data` and `mode` (set on the open handle, so that neither the server's
/// umask nor anything at `path` decides it). Returns false when `abort`
/// fired before it finished; the partial file is then removed.
fn write_new(
    run: &Runner,
    sftp: &Sftp,
    path: &str,
    data: &[u8],
    mode: u32,
    abort: &AbortSignal,
) -> Result<bool, ExecutorError> {
    let p = Path::new(path);
    let mut f = sftp
        .open_mode(
            p,
            OpenFlags::WRITE | OpenFlags::EXCLUSIVE,
            0o600,
            OpenType::File,
        )
        .map_err(|e| sftp_error(run, &format!("cannot create {path}"), e))?;
    let written = (|| {
        for chunk in data.chunks(UPLOAD_CHUNK) {
            if abort.is_aborted() {
                return Ok(false);
            }
            f.write_all(chunk).map_err(|e| {
                ExecutorError::new(
                    ExecutorErrorKind::Protocol,
                    format!("writing {path} on node '{}' failed: {e}", run.node),
                )
            })?;
        }
        let stat = FileStat {
            size: None,
            uid: None,
            gid: None,
            perm: Some(mode),
            atime: None,
            mtime: None,
        };
        f.setstat(stat)
            .map_err(|e| sftp_error(run, &format!("cannot set mode {mode:04o} on {path}"), e))?;
        f.close()
            .map_err(|e| sftp_error(run, &format!("cannot close {path}"), e))?;
        Ok(true)
    })();
    drop(f);
    if !matches!(written, Ok(true)) {
        let _ = sftp.unlink(p);
    }
    written
}

/// How often a copy tries to put its file in place while something keeps
/// putting another at the destination.
const REPLACE_ATTEMPTS: usize = 3;

/// Writes `data` with `mode` to `path` through a new file beside it, then
/// renamed over `path`. Whatever is at `path` (a file, a symlink) is
/// replaced, never written through. SFTP as OpenSSH speaks it cannot rename
/// over an existing name, so that name is removed first: for a moment there
/// is no file at `path`. Returns false when `abort` fired first.
fn write_replacing(
    run: &Runner,
    sftp: &Sftp,
    path: &str,
    data: &[u8],
    mode: u32,
    abort: &AbortSignal,
) -> Result<bool, ExecutorError> {
    let dest = Path::new(path);
    let config = |m: String| ExecutorError::new(ExecutorErrorKind::Config, m);
    let (Some(parent), Some(name)) = (dest.parent(), dest.file_name()) else {
        return Err(config(format!(
            "copy step destination '{path}' does not name a file"
        )));
    };
    if matches!(sftp.lstat(dest), Ok(st) if st.is_dir()) {
        return Err(config(format!(
            "copy step destination {path} on node '{}' is a directory: name the file to write",
            run.node
        )));
    }
    let mut base = name.to_string_lossy().into_owned();
    // Room for the prefix and suffix within a 255-byte file name.
    while base.len() > 200 {
        base.pop();
    }
    let temp = parent.join(format!(
        ".{base}.rdrunner-{:016x}.tmp",
        rand::random::<u64>()
    ));
    let temp_text = temp.display().to_string();
    let written = write_new(run, sftp, &temp_text, data, mode, abort)
        .map_err(|e| ExecutorError::new(e.kind, format!("copy to {path} failed: {}", e.message)))?;
    if !written {
        return Ok(false);
    }
    let mut last = None;
    for _ in 0..REPLACE_ATTEMPTS {
        match sftp.rename(&temp, dest, None) {
            Ok(()) => return Ok(true),
            Err(e) => last = Some(e),
        }
        match sftp.lstat(dest) {
            Ok(st) if st.is_dir() => break,
            // unlink removes a symlink itself, not what it points to.
            Ok(_) => {
                let _ = sftp.unlink(dest);
            }
            Err(_) => {}
        }
    }
    let _ = sftp.unlink(&temp);
    let what = format!("cannot put the copied file in place at {path}");
    Err(match last {
        Some(e) => sftp_error(run, &what, e),
        None => ExecutorError::new(ExecutorErrorKind::Protocol, what),
    })
}

fn aborted_during_upload(abort: &AbortSignal) -> StepOutcome {
    let why = abort.reason().map(reason_text).unwrap_or("aborted");
    StepOutcome {
        exit_code: None,
        signal: None,
        message: Some(format!("{why} while uploading")),
    }
}

fn sftp_error(run: &Runner, what: &str, e: ssh2::Error) -> ExecutorError {
    ExecutorError::new(
        ExecutorErrorKind::Protocol,
        format!(
            "{what} on node '{}' ({}): {e}; check the path and the login user's permissions",
            run.node,
            run.conn.borrow().target
        ),
    )
}

/// An operation id made safe for a file name.
fn sanitize(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    out.truncate(40);
    out
}

/// A file extension with its dot, made of safe characters only.
fn extension(ext: Option<&str>) -> String {
    match ext.map(|e| e.trim_start_matches('.')) {
        Some(e)
            if !e.is_empty()
                && e.len() <= 16
                && e.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
        {
            format!(".{e}")
        }
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_safe() {
        assert_eq!(sanitize("op/1;rm -rf"), "op_1_rm_-rf");
        assert_eq!(extension(Some(".sh")), ".sh");
        assert_eq!(extension(Some("py")), ".py");
        assert_eq!(extension(Some("x y")), "");
        assert_eq!(extension(None), "");
    }
}
