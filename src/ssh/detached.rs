//! A node step that survives a dropped connection: the wrapper starts it
//! detached from the SSH session, writing to files in a private directory
//! on the node, and the executor follows those files over SFTP, dialling
//! the node again and resuming at the offsets it reached when the
//! connection drops. A node that cannot host the detached wrapper runs its
//! steps attached to the connection ([`Runner::run`]), as before.
//!
//! Offsets: every byte read from a file goes into the stream's line
//! splitter, which is kept across reconnects, so resuming at the offset of
//! the last byte read is resuming at the last byte handed towards the
//! output sink: no line is lost or repeated. The status file is read once,
//! after it appeared and both files were read to their end, and the
//! directory is removed once the step's end is recorded (`OutputSink::ended`).

use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdrunner_actors::context::shell_quote;
use rdrunner_actors::model::Stream;
use rdrunner_actors::output::LineSplitter;
use rdrunner_actors::{
    AbortReason, AbortSignal, ExecutorError, ExecutorErrorKind, OutputSink, StepOutcome,
};
use slog::{debug, info, warn, Logger};

use super::channel::{reason_text, Runner};
use super::remote::{self, MarkerFilter, Records};
use super::session::{millis, Connection};
use super::settings::SshSettings;

/// Dials the node again: a new session with the same host key check and
/// authentication as the first one.
pub(crate) type Dial = Arc<dyn Fn() -> Result<Connection, ExecutorError> + Send + Sync>;

/// How often the files are looked at when nothing new arrived lately:
/// bounds the report latency of a step that prints (half of it on average).
const TICK: Duration = Duration::from_millis(15);
/// The longest pause between two looks at the files of a step that has
/// been quiet a while (see [`idle_pause`]).
const IDLE_TICK_MAX: Duration = Duration::from_secs(1);
/// Most bytes read from one file before the loop looks at the abort
/// signal and the other file again.
const MAX_PER_TURN: usize = 256 * 1024;
/// Pause between two failed dials.
const REDIAL_PAUSE: Duration = Duration::from_millis(250);
/// How long a step may print nothing before the executor looks whether
/// its process group still exists (its status file may never come); the
/// look is a command of its own on the node (see [`liveness_every`]).
const LIVENESS_EVERY: Duration = Duration::from_secs(2);
/// The longest time between two such looks at a step quiet for long.
const LIVENESS_MAX: Duration = Duration::from_secs(15);
/// libssh2's "would block" code, which keepalive_send may return.
const LIBSSH2_ERROR_EAGAIN: i32 = -37;
/// libssh2's SFTP status for a file that does not exist.
const SFTP_NO_SUCH_FILE: i32 = 2;

/// Nodes that could not host the detached wrapper, so that runner.log says
/// why once per node and later steps go attached at once.
#[derive(Default)]
pub(crate) struct Undetachable(Mutex<HashSet<String>>);

impl Undetachable {
    fn contains(&self, node: &str) -> bool {
        self.0.lock().map(|s| s.contains(node)).unwrap_or(false)
    }

    /// Records `node`; true the first time.
    fn insert(&self, node: &str) -> bool {
        self.0
            .lock()
            .map(|mut s| s.insert(node.to_owned()))
            .unwrap_or(false)
    }
}

/// What reattaching needs beyond the runner: how to dial, the nodes known
/// not to host the detached wrapper, and the step's name.
pub(crate) struct Reattach<'a> {
    pub dial: Dial,
    pub undetachable: &'a Undetachable,
    /// The step's name under the step key (`SshSettings::step_key`): its
    /// directory is `rdrunner-step-NAME` in the remote temp dir, the same
    /// for a restarted runner.
    pub name: String,
    /// The step was started by a previous process of the runner: find it
    /// and follow it from `from` instead of starting it.
    pub again: bool,
    /// With `again`: the byte offsets of stdout and stderr to read on from.
    pub from: [u64; 2],
}

impl Reattach<'_> {
    /// The step's private directory on the node.
    fn dir(&self, settings: &SshSettings) -> String {
        format!("{}/rdrunner-step-{}", remote_base(settings), self.name)
    }
}

/// `ssh.remoteTmpDir` without its trailing slashes (`/` for the root).
fn remote_base(settings: &SshSettings) -> String {
    let base = settings.remote_tmp_dir.trim_end_matches('/');
    if base.is_empty() {
        "/".to_owned()
    } else {
        base.to_owned()
    }
}

/// A step started detached on the node.
struct DetachedStep {
    /// The step's private directory: `out`, `err`, `pgid`, `status`.
    dir: String,
    pgid: u32,
}

impl DetachedStep {
    fn file(&self, name: &str) -> String {
        format!("{}/{name}", self.dir)
    }
}

/// One of the step's two output files, as far as it was read.
struct Followed {
    stream: Stream,
    name: &'static str,
    /// Bytes of the file read and handed to `lines`.
    offset: u64,
    lines: LineSplitter,
}

impl Followed {
    fn new(stream: Stream, name: &'static str) -> Self {
        Followed {
            stream,
            name,
            offset: 0,
            lines: LineSplitter::default(),
        }
    }
}

/// How following the files on one connection ended.
enum Turn {
    /// The status file said the step ended with this exit code; `None`
    /// when its shell was killed before it could say.
    Ended(Option<i32>),
    /// The step's process group is gone and wrote no status (its wrapper
    /// was killed).
    Vanished,
    Aborted(AbortReason),
}

/// Runs `command` detached when the settings and the node allow it, else
/// attached to the connection as [`Runner::run`] does.
pub(crate) fn run_step(
    run: &Runner,
    reattach: Option<&Reattach>,
    env: &[(String, String)],
    command: &str,
    output: &mut dyn OutputSink,
    abort: &AbortSignal,
    kill_grace: Duration,
) -> Result<StepOutcome, ExecutorError> {
    if let Some(r) = reattach.filter(|r| r.again) {
        let step = find(run, r)?;
        info!(run.log, "re-attached to the step a previous process of the runner started";
            "dir" => &step.dir, "pgid" => step.pgid);
        return follow(run, r, &step, output, abort, kill_grace);
    }
    if let Some(r) = reattach.filter(|r| !r.undetachable.contains(run.node)) {
        match start(run, r, env, command, abort)? {
            Ok(step) => return follow(run, r, &step, output, abort, kill_grace),
            Err(why) => {
                if r.undetachable.insert(run.node) {
                    warn!(run.log, "steps on this node run attached to the connection, so a dropped connection fails them: {}", why);
                }
            }
        }
    }
    run.run(env, command, output, abort, kill_grace)
}

/// Starts the step detached; `Ok(Err(why))` when the node cannot host it
/// (then nothing of the step ran).
fn start(
    run: &Runner,
    r: &Reattach,
    env: &[(String, String)],
    command: &str,
    abort: &AbortSignal,
) -> Result<Result<DetachedStep, String>, ExecutorError> {
    let base = remote_base(run.settings);
    let base = base.as_str();
    let dir = r.dir(run.settings);
    let marker = remote::new_marker();
    let script = remote::detached_script(&marker, base, &dir, env, command)?;
    let conn = run.conn.borrow();
    let session = &conn.session;
    session.set_blocking(true);
    let said = (|| -> Result<Vec<u8>, String> {
        let text = |e: ssh2::Error| e.to_string();
        let mut ch = session.channel_session().map_err(text)?;
        ch.exec(remote::LAUNCHER).map_err(text)?;
        std::io::Write::write_all(&mut ch, script.as_bytes()).map_err(|e| e.to_string())?;
        ch.send_eof().map_err(text)?;
        // The login shell may take its time (a slow profile on a loaded
        // node), as it may for an attached step: wait without a bound but
        // the connection's, keepalives going, and once the step is aborted
        // no longer than the call timeout.
        session.set_blocking(false);
        let mut said = Vec::new();
        let mut buf = [0u8; 4096];
        let mut aborted_at: Option<Instant> = None;
        let mut next_keepalive = Instant::now() + run.settings.keepalive_interval;
        loop {
            match ch.read(&mut buf) {
                Ok(0) if ch.eof() => break,
                Ok(0) => {}
                Ok(n) => {
                    said.extend_from_slice(&buf[..n]);
                    continue;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e.to_string()),
            }
            if ch.eof() {
                break;
            }
            let now = Instant::now();
            if now >= next_keepalive {
                match session.keepalive_send() {
                    Ok(secs) => next_keepalive = now + Duration::from_secs(u64::from(secs.max(1))),
                    Err(e) if e.code() == ssh2::ErrorCode::Session(LIBSSH2_ERROR_EAGAIN) => {}
                    Err(e) => return Err(format!("keepalive failed: {e}")),
                }
            }
            if abort.reason().is_some() {
                let since = *aborted_at.get_or_insert(now);
                if since.elapsed() >= run.settings.call_timeout {
                    return Err("aborted, and the node did not answer".into());
                }
            }
            run.wait_socket(TICK);
        }
        session.set_blocking(true);
        let _ = ch.wait_close();
        Ok(said)
    })();
    session.set_blocking(true);
    let said = said.map_err(|e| run.protocol("cannot start the detached step", e))?;
    let mut filter = MarkerFilter::new(&marker);
    let mut records = Records::default();
    let mut text = Vec::new();
    filter.push(&said, &mut |b| text.extend_from_slice(b), &mut |r| {
        records.take(r)
    });
    filter.finish(&mut |b| text.extend_from_slice(b));
    let text = String::from_utf8_lossy(&text);
    if let Some(pgid) = records.pgid {
        debug!(run.log, "started the step detached"; "dir" => &dir, "pgid" => pgid);
        return Ok(Ok(DetachedStep { dir, pgid }));
    }
    // The login shell's own noise (a bashrc) may come first: the reason is
    // the wrapper's last line.
    if let Some(why) = text
        .lines()
        .filter_map(|l| l.strip_prefix(remote::CANNOT_DETACH))
        .next_back()
    {
        return Ok(Err(why.trim().to_owned()));
    }
    Err(ExecutorError::new(
        ExecutorErrorKind::Protocol,
        format!(
            "the detached step on node '{}' ({}) did not report its process group; it may run there, in {dir}: {}",
            run.node,
            conn.target,
            text.trim()
        ),
    ))
}

/// Finds the step a previous process of the runner started: its private
/// directory and process group. A step that cannot be found is not run
/// again; the error says why it may be gone.
fn find(run: &Runner, r: &Reattach) -> Result<DetachedStep, ExecutorError> {
    let dir = r.dir(run.settings);
    let d = shell_quote(&dir);
    let probe = format!(
        "if [ -d {d} ] && [ ! -h {d} ] && [ -O {d} ] && [ -s {d}/pgid ]; then printf 'pgid=%s\\n' \"$(cat {d}/pgid)\"; else echo missing; fi"
    );
    let (_, said) = run
        .side_command(&probe)
        .map_err(|e| run.protocol("cannot look for the step to re-attach to", e))?;
    // The login shell's own noise (a bashrc) may come first.
    let pgid = said
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pgid="))
        .next_back()
        .and_then(|p| p.trim().parse::<u32>().ok())
        .filter(|p| *p > 1);
    match pgid {
        Some(pgid) => Ok(DetachedStep { dir, pgid }),
        None => Err(ExecutorError::new(
            ExecutorErrorKind::NoExitStatus,
            format!(
                "cannot re-attach to the step on node '{}' ({}): its directory {dir} is not there. The step ended while the runner was down and its exit status went with the directory, or it ran attached to its connection (the node could not host the detached wrapper) and ended with it; it is not run again",
                run.node,
                run.conn.borrow().target
            ),
        )),
    }
}

/// Follows the step's files to its end, reattaching when the connection
/// drops; ends the step's group on an abort.
fn follow(
    run: &Runner,
    reattach: &Reattach,
    step: &DetachedStep,
    output: &mut dyn OutputSink,
    abort: &AbortSignal,
    kill_grace: Duration,
) -> Result<StepOutcome, ExecutorError> {
    let mut files = [
        Followed::new(Stream::Stdout, "out"),
        Followed::new(Stream::Stderr, "err"),
    ];
    if reattach.again {
        files[0].offset = reattach.from[0];
        files[1].offset = reattach.from[1];
    }
    let window = run.settings.reattach_window;
    loop {
        let why = match follow_connected(run, step, &mut files, output, abort) {
            Ok(Turn::Ended(Some(code))) => {
                flush(&mut files, output);
                return settle(run, step, output, Ok(StepOutcome::exited(code)));
            }
            Ok(end @ (Turn::Ended(None) | Turn::Vanished)) => {
                flush(&mut files, output);
                let how = if matches!(end, Turn::Vanished) {
                    "its process group is gone without writing a status"
                } else {
                    "the command's shell was killed before it could say"
                };
                let e = ExecutorError::new(
                    ExecutorErrorKind::NoExitStatus,
                    format!(
                        "no exit status from node '{}' ({}): {how}",
                        run.node,
                        run.conn.borrow().target
                    ),
                );
                return settle(run, step, output, Err(e));
            }
            Ok(Turn::Aborted(reason)) => {
                let how = run.terminate(step.pgid, kill_grace);
                if how.starts_with("could not be signalled") {
                    // The connection is gone too: every further call would
                    // wait out the call timeout. End the group from the
                    // background once the node can be reached again.
                    flush(&mut files, output);
                    let mut outcome = aborted(reason, step.pgid, &how);
                    if let Some(m) = &mut outcome.message {
                        m.push_str("; it is ended as soon as the node can be reached again");
                    }
                    output.ended(Ok(&outcome));
                    reap_later(run, reattach, step, kill_grace, Instant::now() + window);
                    return Ok(outcome);
                }
                // What the step wrote before it went, then its directory.
                let _ = read_once(run, step, &mut files, output);
                flush(&mut files, output);
                return settle(run, step, output, Ok(aborted(reason, step.pgid, &how)));
            }
            Err(why) => why,
        };
        // The connection is gone: dial again until the window closes.
        let lost = Instant::now();
        warn!(run.log, "lost the connection to the node while the step ran; reattaching";
            "error" => &why, "window_ms" => window.as_millis() as u64);
        let mut last = why;
        loop {
            let left = window.saturating_sub(lost.elapsed());
            if left.is_zero() {
                flush(&mut files, output);
                return Err(ExecutorError::new(
                    ExecutorErrorKind::Protocol,
                    format!(
                        "lost the connection to node '{}' ({}) while the step ran and could not reach it again within ssh.reattachWindowMs ({} ms): {last}; the step's process group {} may still run there",
                        run.node,
                        run.conn.borrow().target,
                        window.as_millis(),
                        step.pgid
                    ),
                ));
            }
            match dial_abortable(&reattach.dial, abort, left) {
                Dialled::Connected(conn) => {
                    let old = std::mem::replace(&mut *run.conn.borrow_mut(), conn);
                    drop(old);
                    info!(run.log, "reattached to the step";
                        "after_ms" => lost.elapsed().as_millis() as u64,
                        "stdout_offset" => files[0].offset, "stderr_offset" => files[1].offset);
                    break;
                }
                Dialled::Failed(e) | Dialled::Refused(e) => {
                    debug!(run.log, "reattaching failed"; "error" => &e);
                    last = e;
                    pause(abort, REDIAL_PAUSE.min(left));
                }
                Dialled::TimedOut => {}
                Dialled::Aborted(reason) => {
                    // The node is out of reach: end the group from the
                    // background once it can be reached, within the window.
                    flush(&mut files, output);
                    let outcome = StepOutcome {
                        exit_code: None,
                        signal: None,
                        message: Some(format!(
                            "{}: the connection to the node was lost ({last}); its process group {} is ended as soon as the node can be reached again",
                            reason_text(reason),
                            step.pgid
                        )),
                    };
                    output.ended(Ok(&outcome));
                    reap_later(run, reattach, step, kill_grace, lost + window);
                    return Ok(outcome);
                }
            }
        }
    }
}

/// Follows the files on the current connection until the status file
/// says the step ended, an abort, or an error (the connection's, as text).
fn follow_connected(
    run: &Runner,
    step: &DetachedStep,
    files: &mut [Followed; 2],
    output: &mut dyn OutputSink,
    abort: &AbortSignal,
) -> Result<Turn, String> {
    let conn = run.conn.borrow();
    let session = &conn.session;
    quiet_keepalives(session);
    // One SFTP call may wait out the session's timeout several times over
    // on a black-holed connection; a quarter of the call timeout keeps the
    // whole call near that timeout. The guard puts the timeout back.
    let _bound = PollTimeout::set(session, run.settings.call_timeout);
    let sftp = session
        .sftp()
        .map_err(|e| format!("cannot start SFTP: {e}"))?;
    let mut handles = Vec::with_capacity(2);
    for f in files.iter() {
        let path = step.file(f.name);
        handles.push(
            sftp.open(Path::new(&path))
                .map_err(|e| format!("cannot open {path}: {e}"))?,
        );
    }
    let status_path = step.file("status");
    let mut buf = vec![0u8; 32 * 1024];
    let mut quiet_since = Instant::now();
    let mut last_output = Instant::now();
    let mut next_keepalive = Instant::now() + run.settings.keepalive_interval;
    loop {
        if let Some(reason) = abort.reason() {
            return Ok(Turn::Aborted(reason));
        }
        let mut read = 0;
        let mut at_end = true;
        for (f, h) in files.iter_mut().zip(handles.iter_mut()) {
            let (n, end) = read_new(h, f, output, &mut buf)?;
            read += n;
            at_end &= end;
        }
        if at_end {
            // Nothing new: has the step ended? Its status is written once
            // its output is complete, so what is read after seeing it is
            // the rest of the output.
            match sftp.open(Path::new(&status_path)) {
                Ok(mut s) => {
                    let mut text = String::new();
                    s.read_to_string(&mut text)
                        .map_err(|e| format!("cannot read {status_path}: {e}"))?;
                    loop {
                        let mut rest_read = true;
                        for (f, h) in files.iter_mut().zip(handles.iter_mut()) {
                            rest_read &= read_new(h, f, output, &mut buf)?.1;
                        }
                        if rest_read {
                            break;
                        }
                    }
                    // Written by rename, so never partial; `none` or
                    // anything else is no exit code.
                    return Ok(Turn::Ended(text.trim().parse().ok()));
                }
                Err(e) if e.code() == ssh2::ErrorCode::SFTP(SFTP_NO_SUCH_FILE) => {}
                Err(e) => return Err(format!("cannot look for {status_path}: {e}")),
            }
        }
        let now = Instant::now();
        if now >= next_keepalive {
            // Polling is traffic enough to notice a dead connection, but a
            // NAT or firewall on the way may want the SSH keepalives.
            let secs = run.settings.keepalive_interval.as_secs().max(1) as u32;
            session.set_keepalive(false, secs);
            let sent = session.keepalive_send();
            session.set_keepalive(false, 0);
            match sent {
                Ok(_) => {}
                Err(e) if e.code() == ssh2::ErrorCode::Session(LIBSSH2_ERROR_EAGAIN) => {}
                Err(e) => return Err(format!("keepalive failed: {e}")),
            }
            next_keepalive = now + run.settings.keepalive_interval.max(Duration::from_secs(1));
        }
        if read > 0 {
            quiet_since = now;
            last_output = now;
        } else if now.duration_since(quiet_since) >= liveness_every(now.duration_since(last_output))
        {
            // Quiet and no status: is anything of the step left at all?
            quiet_since = now;
            session.set_timeout(millis(run.settings.call_timeout));
            let alive = run.side_command(&format!("kill -0 -{} 2>/dev/null", step.pgid));
            session.set_timeout(millis(poll_timeout(run.settings.call_timeout)));
            let alive =
                alive.map_err(|e| format!("cannot look at the step's process group: {e}"))?;
            if alive.0 != 0 && sftp.stat(Path::new(&status_path)).is_err() {
                return Ok(Turn::Vanished);
            }
        } else {
            // An abort ends the pause at once, and a keepalive due goes
            // out on time.
            let pause = idle_pause(now.duration_since(last_output))
                .min(next_keepalive.saturating_duration_since(now))
                .max(TICK);
            abort.wait_timeout(pause);
        }
    }
}

/// How long to wait before looking at the files again after `quiet` with
/// no output: a [`TICK`] at first, so that a step that prints has its lines
/// read within one; then a tenth of the silence, up to [`IDLE_TICK_MAX`].
/// Every look is three SFTP round trips (both files and the status), so a
/// step idle for long costs about 12 of them a second instead of 200, and
/// the first line after a silence waits at most a tenth of it longer.
fn idle_pause(quiet: Duration) -> Duration {
    (quiet / 10).clamp(TICK, IDLE_TICK_MAX)
}

/// How long a step quiet for `quiet` goes between two looks at whether its
/// process group still exists: [`LIVENESS_EVERY`], then a fifth of the
/// silence, up to [`LIVENESS_MAX`]. Each look runs `kill -0` on the node (a
/// channel and a process there), the dearest part of holding an idle step.
fn liveness_every(quiet: Duration) -> Duration {
    (quiet / 5).clamp(LIVENESS_EVERY, LIVENESS_MAX)
}

/// The bound of one blocking libssh2 call while polling the files.
fn poll_timeout(call_timeout: Duration) -> Duration {
    (call_timeout / 4).max(Duration::from_secs(1))
}

/// Sets the session's timeout to the polling bound; puts the call timeout
/// back when dropped.
struct PollTimeout<'a> {
    session: &'a ssh2::Session,
    call_timeout: Duration,
}

impl<'a> PollTimeout<'a> {
    fn set(session: &'a ssh2::Session, call_timeout: Duration) -> Self {
        session.set_timeout(millis(poll_timeout(call_timeout)));
        PollTimeout {
            session,
            call_timeout,
        }
    }
}

impl Drop for PollTimeout<'_> {
    fn drop(&mut self) {
        self.session.set_timeout(millis(self.call_timeout));
    }
}

/// Blocking mode with libssh2's keepalives off: with them on, a blocking
/// call that waits longer than the keepalive interval fails as timed out.
/// The follow loop sends its keepalives itself; what notices a dead
/// connection is the polling of the files, each call bounded by the call
/// timeout.
fn quiet_keepalives(session: &ssh2::Session) {
    session.set_blocking(true);
    session.set_keepalive(false, 0);
}

/// Reads what `f`'s file holds past its offset (up to [`MAX_PER_TURN`]);
/// returns the bytes read and whether the end was reached.
fn read_new(
    h: &mut ssh2::File,
    f: &mut Followed,
    output: &mut dyn OutputSink,
    buf: &mut [u8],
) -> Result<(usize, bool), String> {
    let fail = |e: std::io::Error| format!("cannot read the step's {}: {e}", f.name);
    h.seek(SeekFrom::Start(f.offset)).map_err(fail)?;
    let mut total = 0;
    while total < MAX_PER_TURN {
        let n = h.read(buf).map_err(fail)?;
        if n == 0 {
            return Ok((total, true));
        }
        f.offset += n as u64;
        total += n;
        let stream = f.stream;
        f.lines.push(&buf[..n], &mut |l| output.line(stream, l));
        output.mark(stream, f.offset - f.lines.pending() as u64);
    }
    Ok((total, false))
}

/// One pass over both files on the current connection, after an abort.
fn read_once(
    run: &Runner,
    step: &DetachedStep,
    files: &mut [Followed; 2],
    output: &mut dyn OutputSink,
) -> Result<(), String> {
    let conn = run.conn.borrow();
    conn.session.set_blocking(true);
    let sftp = conn.session.sftp().map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 32 * 1024];
    for f in files.iter_mut() {
        let mut h = sftp
            .open(Path::new(&step.file(f.name)))
            .map_err(|e| e.to_string())?;
        read_new(&mut h, f, output, &mut buf)?;
    }
    Ok(())
}

/// Hands on the last line of each stream, cut short by the step's end.
fn flush(files: &mut [Followed; 2], output: &mut dyn OutputSink) {
    for f in files.iter_mut() {
        let stream = f.stream;
        f.lines.finish(&mut |l| output.line(stream, l));
    }
}

/// The step ended with `result`: the sink records it, and then (not
/// before: a runner dying in between would find neither) the step's
/// directory, which holds its status, is removed.
fn settle(
    run: &Runner,
    step: &DetachedStep,
    output: &mut dyn OutputSink,
    result: Result<StepOutcome, ExecutorError>,
) -> Result<StepOutcome, ExecutorError> {
    output.ended(result.as_ref());
    remove_dir(run, step);
    result
}

fn remove_dir(run: &Runner, step: &DetachedStep) {
    match run.side_command(&format!("rm -rf -- {}", shell_quote(&step.dir))) {
        Ok((0, _)) => debug!(run.log, "removed the step's directory"; "dir" => &step.dir),
        Ok((code, out)) => {
            warn!(run.log, "could not remove the step's directory"; "dir" => &step.dir, "status" => code, "output" => out.trim())
        }
        Err(e) => {
            warn!(run.log, "could not remove the step's directory"; "dir" => &step.dir, "error" => e)
        }
    }
}

fn aborted(reason: AbortReason, pgid: u32, how: &str) -> StepOutcome {
    // The step's own shell goes with the TERM (what the attached step's
    // exit signal says); a KILL after the grace is for what ignored it.
    let signal = how.starts_with("got TERM").then(|| "TERM".to_owned());
    StepOutcome {
        exit_code: None,
        signal,
        message: Some(format!(
            "{}: process group {pgid} on the node {how}",
            reason_text(reason)
        )),
    }
}

enum Dialled {
    Connected(Connection),
    Failed(String),
    /// Refused for a reason another try cannot mend (host key, credentials,
    /// configuration).
    Refused(String),
    /// `left` passed while the dial was still under way.
    TimedOut,
    Aborted(AbortReason),
}

/// Dials on a thread of its own, so that an abort or the end of the window
/// is noticed within a tick while a handshake hangs.
fn dial_abortable(dial: &Dial, abort: &AbortSignal, left: Duration) -> Dialled {
    let (tx, rx) = mpsc::channel();
    let dial = dial.clone();
    let spawned = std::thread::Builder::new()
        .name("ssh-reattach".into())
        .spawn(move || {
            let _ = tx.send(dial());
        });
    if let Err(e) = spawned {
        return Dialled::Failed(format!("cannot start a thread to dial: {e}"));
    }
    let until = Instant::now() + left;
    loop {
        if let Some(reason) = abort.reason() {
            return Dialled::Aborted(reason);
        }
        match rx.recv_timeout(TICK * 4) {
            Ok(Ok(conn)) => return Dialled::Connected(conn),
            Ok(Err(e)) => {
                return match e.kind {
                    ExecutorErrorKind::HostKey
                    | ExecutorErrorKind::Authentication
                    | ExecutorErrorKind::Config => Dialled::Refused(e.message),
                    _ => Dialled::Failed(e.message),
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() >= until => {
                return Dialled::TimedOut
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Dialled::Failed("the dial ended without an answer".into())
            }
        }
    }
}

/// Dials the node of a step a previous process started, again and again
/// until `ssh.reattachWindowMs` passes: the step may run on there, and a
/// node briefly out of reach is no reason to give up on it. Errors that
/// another try cannot mend (a host key or credentials refused) end it at
/// once.
pub(crate) fn redial(
    dial: &Dial,
    settings: &SshSettings,
    node: &str,
    abort: &AbortSignal,
    log: &Logger,
) -> Result<Connection, ExecutorError> {
    let started = Instant::now();
    let window = settings.reattach_window;
    // An abort does not stop the dialling: the step runs on until the
    // connection ends it. It only bounds it, by the call timeout.
    let never = AbortSignal::new();
    let mut aborted_at: Option<Instant> = None;
    let mut logged = false;
    loop {
        if abort.reason().is_some() && aborted_at.is_none() {
            aborted_at = Some(Instant::now());
        }
        let mut left = window.saturating_sub(started.elapsed());
        if let Some(t) = aborted_at {
            left = left.min(settings.call_timeout.saturating_sub(t.elapsed()));
        }
        let mut lasting = false;
        let last = match dial_abortable(dial, &never, left.max(Duration::from_millis(1))) {
            Dialled::Connected(conn) => return Ok(conn),
            Dialled::Failed(e) => e,
            Dialled::Refused(e) => {
                lasting = true;
                e
            }
            Dialled::TimedOut => "the dial did not end in time".to_owned(),
            Dialled::Aborted(_) => "aborted".to_owned(),
        };
        let out_of_time = started.elapsed() >= window
            || aborted_at.is_some_and(|t| t.elapsed() >= settings.call_timeout);
        if lasting || out_of_time {
            let why = match (lasting, aborted_at, abort.reason()) {
                (true, _, _) => String::new(),
                (false, Some(_), Some(reason)) => format!(
                    " ({}, and the node did not answer within ssh.callTimeoutMs, {} ms: the step could not be ended)",
                    reason_text(reason),
                    settings.call_timeout.as_millis()
                ),
                _ => format!(
                    " (tried for ssh.reattachWindowMs, {} ms)",
                    window.as_millis()
                ),
            };
            return Err(ExecutorError::new(
                ExecutorErrorKind::Protocol,
                format!(
                    "cannot re-attach to the step the previous process of the runner started on node '{node}': {last}{why}; the step may still run there, and it is not run again"
                ),
            ));
        }
        if !logged {
            logged = true;
            warn!(log, "the node of a step to re-attach to cannot be reached; dialling again";
                "error" => &last, "window_ms" => window.as_millis() as u64);
        }
        pause(&never, REDIAL_PAUSE.min(left));
    }
}

/// Sleeps `d`, waking early on an abort.
fn pause(abort: &AbortSignal, d: Duration) {
    let until = Instant::now() + d;
    while abort.reason().is_none() && Instant::now() < until {
        std::thread::sleep(TICK);
    }
}

/// Ends the step's group and removes its directory from a thread of its
/// own, dialling until it can or `until` passes: an aborted step whose node
/// is out of reach must not run on once the node is back.
fn reap_later(
    run: &Runner,
    reattach: &Reattach,
    step: &DetachedStep,
    kill_grace: Duration,
    until: Instant,
) {
    let dial = reattach.dial.clone();
    let settings: SshSettings = run.settings.clone();
    let log: Logger = run.log.clone();
    let node = run.node.to_owned();
    let (pgid, dir) = (step.pgid, step.dir.clone());
    let spawned = std::thread::Builder::new()
        .name("ssh-reap".into())
        .spawn(move || {
            while Instant::now() < until {
                match dial() {
                    Ok(conn) => {
                        quiet_keepalives(&conn.session);
                        let r = Runner {
                            conn: std::cell::RefCell::new(conn),
                            settings: &settings,
                            log: &log,
                            node: &node,
                        };
                        // The directory first: the runner may be stopping,
                        // and the group's open files outlive their names.
                        remove_dir(&r, &DetachedStep { dir, pgid });
                        let how = r.terminate(pgid, kill_grace);
                        info!(log, "ended the aborted step's process group once the node was back"; "pgid" => pgid, "how" => how);
                        r.conn.into_inner().disconnect();
                        return;
                    }
                    Err(e) => {
                        debug!(log, "the node is still out of reach"; "error" => %e);
                        std::thread::sleep(REDIAL_PAUSE * 4);
                    }
                }
            }
            warn!(log, "could not reach the node to end an aborted step's process group"; "pgid" => pgid, "dir" => dir);
        });
    if let Err(e) = spawned {
        warn!(run.log, "cannot start a thread to end the step's process group later"; "error" => %e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_step_is_looked_at_less_often_the_longer_it_is_quiet() {
        let ms = Duration::from_millis;
        // A step that prints keeps the short tick.
        assert_eq!(idle_pause(ms(0)), TICK);
        assert_eq!(idle_pause(ms(100)), TICK);
        // Then a tenth of the silence.
        assert_eq!(idle_pause(ms(1000)), ms(100));
        // Never longer than the cap, however long the silence.
        assert_eq!(idle_pause(ms(10_000)), IDLE_TICK_MAX);
        assert_eq!(idle_pause(Duration::from_secs(3600)), IDLE_TICK_MAX);
        let mut last = Duration::ZERO;
        for q in (0..20_000).step_by(7) {
            let p = idle_pause(ms(q));
            assert!(
                p >= last && p >= TICK && p <= IDLE_TICK_MAX,
                "{q} ms: {p:?}"
            );
            last = p;
        }
    }

    #[test]
    fn a_quiet_step_is_checked_for_life_less_often_the_longer_it_is_quiet() {
        let s = Duration::from_secs;
        assert_eq!(liveness_every(s(0)), LIVENESS_EVERY);
        assert_eq!(liveness_every(s(5)), LIVENESS_EVERY);
        assert_eq!(liveness_every(s(20)), s(4));
        assert_eq!(liveness_every(s(75)), LIVENESS_MAX);
        assert_eq!(liveness_every(s(86_400)), LIVENESS_MAX);
    }
}
