//! Steps that move files over SFTP: a script uploaded into a private
//! directory of its own under the remote temp dir, run, and removed
//! whatever happened; and a copy step that writes content with a mode.

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

/// Upload chunk: the abort signal is looked at between chunks.
const UPLOAD_CHUNK: usize = 64 * 1024;

/// Uploads, runs and removes a script step.
pub(crate) fn run_script(
    run: &Runner,
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
    sftp.mkdir(Path::new(&dir), 0o700)
        .map_err(|e| sftp_error(run, &format!("cannot create the script directory {dir}"), e))?;
    let result = (|| {
        if !upload(run, &sftp, &file, step.script.as_bytes(), 0o700, abort)? {
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
        run.run(&req.env, &command, output, abort, req.kill_grace)
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
    let sftp = open_sftp(run)?;
    if !upload(run, &sftp, &step.destination, &content, mode, abort)? {
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
    run.conn.session.set_blocking(true);
    run.conn
        .session
        .sftp()
        .map_err(|e| sftp_error(run, "cannot start SFTP", e))
}

/// Writes `data` to `path` with `mode` (set explicitly afterwards, so that
/// neither the server's umask nor an existing file's mode wins). Returns
/// false when `abort` fired before it finished.
fn upload(
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
            OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE,
            mode as i32,
            OpenType::File,
        )
        .map_err(|e| sftp_error(run, &format!("cannot open {path} for writing"), e))?;
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
    drop(f);
    let stat = FileStat {
        size: None,
        uid: None,
        gid: None,
        perm: Some(mode),
        atime: None,
        mtime: None,
    };
    sftp.setstat(p, stat)
        .map_err(|e| sftp_error(run, &format!("cannot set mode {mode:04o} on {path}"), e))?;
    Ok(true)
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
            run.node, run.conn.target
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
