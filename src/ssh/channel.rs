//! Running one wrapped command on a node: the non-blocking loop that streams
//! stdout and stderr line by line as they arrive, sends keepalives, notices
//! an abort within one poll tick and ends the step's process group, then
//! reads how the command ended.
//!
//! The session is non-blocking only inside the loop; short side calls (the
//! kill command, closing the channel) switch it back to blocking, bounded
//! by the call timeout. A blocking call never waits on the step's own
//! channel, which is what would stall every other call on the session.

use std::cell::RefCell;
use std::io::{ErrorKind, Read, Write};
use std::time::{Duration, Instant};

use rdrunner_actors::model::Stream;
use rdrunner_actors::output::LineSplitter;
use rdrunner_actors::{
    AbortReason, AbortSignal, ExecutorError, ExecutorErrorKind, OutputSink, StepOutcome,
};
use slog::{debug, warn, Logger};
use ssh2::BlockDirections;

use super::remote::{self, MarkerFilter, Records};
use super::session::{millis, Connection};
use super::settings::SshSettings;

/// How long one wait on the socket lasts at most: the abort latency.
const POLL_TICK: Duration = Duration::from_millis(50);
/// libssh2's "would block" code, which keepalive_send may return.
const LIBSSH2_ERROR_EAGAIN: i32 = -37;
/// Read buffer per call; memory per step stays near this plus a line.
const CHUNK: usize = 32 * 1024;

/// How an abort reason reads in a step's message.
pub(crate) fn reason_text(reason: AbortReason) -> &'static str {
    match reason {
        AbortReason::Cancelled => "cancelled",
        AbortReason::TimedOut => "step timed out",
        AbortReason::Shutdown => "runner shutting down",
    }
}

/// What a step run needs from its executor and connection.
pub(crate) struct Runner<'a> {
    /// The session the step runs on; replaced when a detached step's
    /// connection drops and the node is dialled again.
    pub conn: RefCell<Connection>,
    pub settings: &'a SshSettings,
    pub log: &'a Logger,
    pub node: &'a str,
}

/// The state of the step's process group while aborting.
struct Abort {
    reason: AbortReason,
    since: Instant,
    /// Set once the terminate command ran.
    terminated: Option<String>,
}

impl Runner<'_> {
    pub(crate) fn protocol(&self, what: &str, e: impl std::fmt::Display) -> ExecutorError {
        ExecutorError::new(
            ExecutorErrorKind::Protocol,
            format!(
                "{what} on node '{}' ({}): {e}",
                self.node,
                self.conn.borrow().target
            ),
        )
    }

    /// Runs `command` with `env` exported, streaming its output to `output`
    /// until it ends or `abort` fires.
    pub(crate) fn run(
        &self,
        env: &[(String, String)],
        command: &str,
        output: &mut dyn OutputSink,
        abort: &AbortSignal,
        kill_grace: Duration,
    ) -> Result<StepOutcome, ExecutorError> {
        let conn = self.conn.borrow();
        let session = &conn.session;
        let marker = remote::new_marker();
        let script = remote::step_script(&marker, env, command)?;
        session.set_blocking(true);
        let mut ch = session
            .channel_session()
            .map_err(|e| self.protocol("cannot open a session channel", e))?;
        ch.exec(remote::LAUNCHER)
            .map_err(|e| self.protocol("cannot start the command", e))?;
        // The script (environment, marker, command) goes over the channel,
        // never on a command line; its end is the end of the input.
        ch.write_all(script.as_bytes())
            .map_err(|e| self.protocol("cannot send the step's script", e))?;
        ch.send_eof()
            .map_err(|e| self.protocol("cannot close the command's input", e))?;

        let mut filter = MarkerFilter::new(&marker);
        let mut out_lines = LineSplitter::default();
        let mut err_lines = LineSplitter::default();
        let mut records = Records::default();
        let mut aborting: Option<Abort> = None;
        let mut buf = vec![0u8; CHUNK];
        let mut next_keepalive = Instant::now() + self.settings.keepalive_interval;

        session.set_blocking(false);
        let ended_by_eof = loop {
            let mut progressed = false;
            // stdout
            match ch.read(&mut buf) {
                Ok(0) => {}
                Ok(n) => {
                    progressed = true;
                    let mut emit = |b: &[u8]| {
                        out_lines.push(b, &mut |l| output.line(Stream::Stdout, l));
                    };
                    filter.push(&buf[..n], &mut emit, &mut |r| records.take(r));
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => {
                    return Err(self.fail_read(session, "stdout", e, records.pgid, kill_grace))
                }
            }
            // stderr
            match ch.stderr().read(&mut buf) {
                Ok(0) => {}
                Ok(n) => {
                    progressed = true;
                    err_lines.push(&buf[..n], &mut |l| output.line(Stream::Stderr, l));
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => {
                    return Err(self.fail_read(session, "stderr", e, records.pgid, kill_grace))
                }
            }
            // Keepalives and the abort signal are looked at on every turn,
            // also while output floods in.
            let now = Instant::now();
            if now >= next_keepalive {
                match session.keepalive_send() {
                    Ok(secs) => next_keepalive = now + Duration::from_secs(u64::from(secs.max(1))),
                    Err(e) if e.code() == ssh2::ErrorCode::Session(LIBSSH2_ERROR_EAGAIN) => {}
                    Err(e) => return Err(self.protocol("keepalive failed", e)),
                }
            }
            if aborting.is_none() {
                if let Some(reason) = abort.reason() {
                    debug!(self.log, "aborting the step"; "reason" => reason_text(reason));
                    aborting = Some(Abort {
                        reason,
                        since: now,
                        terminated: None,
                    });
                }
            }
            if let Some(a) = &mut aborting {
                if a.terminated.is_none() {
                    if let Some(g) = records.pgid {
                        a.terminated = Some(self.terminate(g, kill_grace));
                        // The group is gone (or KILLed); what is left is the
                        // tail of the output and the channel's close.
                        a.since = Instant::now();
                        continue;
                    }
                }
                // Bounded: no group id, or a channel that stays open after
                // the group died (a process that left the group holds it).
                if a.since.elapsed() >= self.settings.call_timeout {
                    break false;
                }
            }
            if progressed {
                continue;
            }
            if ch.eof() {
                break true;
            }
            self.wait_socket(POLL_TICK);
        };

        filter.finish(&mut |b| out_lines.push(b, &mut |l| output.line(Stream::Stdout, l)));
        out_lines.finish(&mut |l| output.line(Stream::Stdout, l));
        err_lines.finish(&mut |l| output.line(Stream::Stderr, l));

        // exit_status() is only meaningful after the channel is closed on
        // both sides: the exit-status request may follow the EOF.
        session.set_blocking(true);
        let closed = ch.close().and_then(|_| {
            if ended_by_eof {
                ch.wait_close()
            } else {
                Ok(())
            }
        });
        if let Err(e) = &closed {
            debug!(self.log, "closing the channel failed"; "error" => %e);
        }
        let status = ch.exit_status().unwrap_or(0);
        let signal = ch.exit_signal().ok().and_then(|s| s.exit_signal);

        if let Some(a) = aborting {
            let mut message = format!("{}: ", reason_text(a.reason));
            match (records.pgid, &a.terminated) {
                (Some(g), Some(how)) => {
                    message.push_str(&format!("process group {g} on the node {how}"))
                }
                _ => message
                    .push_str("the command did not report its process group; closed the channel"),
            }
            if !ended_by_eof {
                message.push_str("; the channel stayed open and was closed");
            }
            return Ok(StepOutcome {
                exit_code: exit_code(status, signal.as_deref(), records.exit, ended_by_eof),
                signal,
                message: Some(message),
            });
        }
        if let Some(sig) = signal {
            return Ok(StepOutcome {
                exit_code: None,
                message: Some(format!("the command was killed by signal {sig}")),
                signal: Some(sig),
            });
        }
        match exit_code(status, None, records.exit, closed.is_ok()) {
            Some(code) => Ok(StepOutcome::exited(code)),
            None => {
                // The server closed the channel without saying how the
                // command ended (e.g. its ChannelTimeout): the command may
                // still run, so end its group before reporting.
                let note = match records.pgid {
                    Some(g) => format!("; its process group {g} {}", self.terminate(g, kill_grace)),
                    None => String::new(),
                };
                Err(ExecutorError::new(
                    ExecutorErrorKind::NoExitStatus,
                    format!(
                        "no exit status from node '{}' ({}): the server closed the channel without reporting how the command ended{note}",
                        self.node, self.conn.borrow().target
                    ),
                ))
            }
        }
    }

    /// A read error: the session is likely gone; try to end the group anyway.
    fn fail_read(
        &self,
        session: &ssh2::Session,
        stream: &str,
        e: std::io::Error,
        pgid: Option<u32>,
        kill_grace: Duration,
    ) -> ExecutorError {
        session.set_blocking(true);
        let group = match pgid {
            Some(g) => format!("its process group {g} {}", self.terminate(g, kill_grace)),
            None => "its processes may still run there".to_owned(),
        };
        ExecutorError::new(
            ExecutorErrorKind::Protocol,
            format!(
                "lost the connection to node '{}' ({}) while the step ran: reading the command's {stream} failed ({e}); {group}",
                self.node, self.conn.borrow().target
            ),
        )
    }

    /// Ends process group `pgid` on the node (TERM, `grace`, KILL) over a
    /// channel of its own; returns what happened, for the step's message.
    pub(crate) fn terminate(&self, pgid: u32, grace: Duration) -> String {
        let conn = self.conn.borrow();
        let session = &conn.session;
        let was_blocking = session.is_blocking();
        session.set_blocking(true);
        let tenths = grace.as_millis().div_ceil(100) as u64;
        // The remote loop lasts up to `grace`; the call bound covers it.
        session.set_timeout(millis(grace + self.settings.call_timeout));
        let result = (|| -> Result<String, ssh2::Error> {
            let mut k = session.channel_session()?;
            k.exec(&remote::terminate_group(pgid, tenths))?;
            let mut said = String::new();
            let _ = k.read_to_string(&mut said);
            k.wait_eof()?;
            k.close()?;
            k.wait_close()?;
            Ok(said)
        })();
        session.set_timeout(millis(self.settings.call_timeout));
        session.set_blocking(was_blocking);
        match result {
            Ok(said) if said.contains("killed") => {
                format!("got TERM, then KILL after {grace:?} grace")
            }
            Ok(_) => "got TERM".to_owned(),
            Err(e) => {
                warn!(self.log, "could not end the step's process group"; "pgid" => pgid, "error" => %e);
                format!("could not be signalled ({e})")
            }
        }
    }

    /// Runs a short command of the executor's own (not the step's) in
    /// blocking mode; returns its exit status and output.
    pub(crate) fn side_command(&self, command: &str) -> Result<(i32, String), String> {
        let conn = self.conn.borrow();
        let session = &conn.session;
        session.set_blocking(true);
        let run = || -> Result<(i32, String), ssh2::Error> {
            let mut ch = session.channel_session()?;
            ch.exec(command)?;
            let mut out = String::new();
            let _ = ch.read_to_string(&mut out);
            let _ = ch.stderr().read_to_string(&mut out);
            ch.wait_eof()?;
            ch.close()?;
            ch.wait_close()?;
            Ok((ch.exit_status()?, out))
        };
        run().map_err(|e| e.to_string())
    }

    /// Waits until the socket can move data in the direction libssh2 is
    /// blocked on, or `timeout` passes.
    pub(crate) fn wait_socket(&self, timeout: Duration) {
        let conn = self.conn.borrow();
        let dirs = conn.session.block_directions();
        let mut events = libc::POLLIN;
        if matches!(dirs, BlockDirections::Outbound | BlockDirections::Both) {
            events |= libc::POLLOUT;
        }
        let mut pfd = libc::pollfd {
            fd: conn.fd,
            events,
            revents: 0,
        };
        // SAFETY: one valid pollfd, owned by this frame, for the duration of
        // the call; the fd belongs to the live session.
        unsafe {
            libc::poll(&mut pfd, 1, timeout.as_millis() as libc::c_int);
        }
    }
}

/// The step's exit code: the server's exit-status when it is not 0 (libssh2
/// says 0 when none arrived), else the wrapper's record, else none.
fn exit_code(status: i32, signal: Option<&str>, record: Option<i32>, closed: bool) -> Option<i32> {
    if signal.is_some() {
        None
    } else if status != 0 && closed {
        Some(status)
    } else {
        record
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        // A real non-zero status wins.
        assert_eq!(exit_code(3, None, Some(3), true), Some(3));
        // 0 from libssh2 is only believed with the wrapper's record.
        assert_eq!(exit_code(0, None, Some(0), true), Some(0));
        assert_eq!(exit_code(0, None, None, true), None);
        // A signal means no code.
        assert_eq!(exit_code(0, Some("TERM"), None, true), None);
    }
}
