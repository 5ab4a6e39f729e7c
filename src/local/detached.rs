//! Local steps that outlive the runner's process: the step runs under a
//! small `sh` wrapper in a session of its own (`setsid`), stdin from
//! `/dev/null`, stdout and stderr appended to files in its private
//! directory (`rdrunner-step-NAME` under the executor's root, NAME derived
//! from the operation, step and node under the step key), and the wrapper
//! writes the step's exit status to a `status` file when it ends. The
//! executor follows the files; a restarted runner finds the directory by
//! its name and follows them again from their start (the caller skips the
//! lines it already reported). The step itself runs in a private working
//! directory of its own outside the runner's (a temp dir, as attached
//! steps do), whose path is kept in the `workdir` file.
//!
//! The wrapper's pid and start time (field 22 of `/proc/PID/stat`) are kept
//! in a `pid` file: after a restart the process is taken for the step's
//! only when both match, so a recycled pid is never signalled or waited
//! for. The directory is removed once the status has been read.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rdrunner_actors::model::Stream;
use rdrunner_actors::output::LineSplitter;
use rdrunner_actors::{
    AbortSignal, ExecutorError, ExecutorErrorKind, OutputSink, StepOutcome, StepRequest,
};

use super::{aborted_before_start, io_error, signal_group, signal_name, step_command};
use crate::ssh::StepKey;

/// How often the files are looked at when nothing new arrived.
const TICK: Duration = Duration::from_millis(15);
/// Most bytes read from one file before the other one and the abort
/// signal are looked at again.
const MAX_PER_TURN: usize = 256 * 1024;

/// The wrapper: runs `"$@"` with its output appended to the directory's
/// files, then writes its exit status by rename (never partial).
const WRAPPER: &str = "d=$1; shift
\"$@\" </dev/null >>\"$d/out\" 2>>\"$d/err\"
rc=$?
echo \"$rc\" >\"$d/status.new\" && mv -f \"$d/status.new\" \"$d/status\"
";

/// Where detached local steps keep their files.
#[derive(Debug, Clone)]
pub(crate) struct Detached {
    pub root: PathBuf,
    pub key: StepKey,
}

/// The step's wrapper process: this process's child, or one recorded by a
/// previous process (known by pid and start time).
enum Leader {
    Child(Child),
    Recorded {
        pid: u32,
        start: u64,
    },
    /// No pid was recorded, or the recorded process is gone.
    Gone,
}

impl Leader {
    fn pgid(&self) -> Option<u32> {
        match self {
            Leader::Child(c) => Some(c.id()),
            Leader::Recorded { pid, .. } => Some(*pid),
            Leader::Gone => None,
        }
    }

    /// Whether the wrapper still runs; for a child, its exit status once it
    /// ended (reaped here, so its pid stays ours until then).
    fn poll(&mut self) -> (bool, Option<ExitStatus>) {
        match self {
            Leader::Child(c) => match c.try_wait() {
                Ok(None) => (true, None),
                Ok(Some(status)) => (false, Some(status)),
                Err(_) => (false, None),
            },
            Leader::Recorded { pid, start } => (start_time(*pid) == Some(*start), None),
            Leader::Gone => (false, None),
        }
    }

    /// Whether signalling the group reaches the step's processes and
    /// nobody else's: a child not yet reaped, or the recorded process
    /// while its start time still matches.
    fn may_signal(&mut self) -> bool {
        match self {
            Leader::Child(_) => true,
            Leader::Recorded { pid, start } => start_time(*pid) == Some(*start),
            Leader::Gone => false,
        }
    }
}

/// Field 22 of `/proc/PID/stat` (the start time, in clock ticks since
/// boot): with the pid, names one process for the life of the system.
pub(crate) fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold anything.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// One of the step's output files, as far as it was read.
struct Followed {
    stream: Stream,
    file: File,
    /// Bytes of the file read and handed to `lines`.
    offset: u64,
    lines: LineSplitter,
}

impl Followed {
    /// Reads what is new (at most [`MAX_PER_TURN`]); the bytes read.
    fn read_new(&mut self, output: &mut dyn OutputSink, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut total = 0;
        while total < MAX_PER_TURN {
            let n = self.file.read(buf)?;
            if n == 0 {
                break;
            }
            total += n;
            self.offset += n as u64;
            let stream = self.stream;
            self.lines.push(&buf[..n], &mut |l| output.line(stream, l));
            output.mark(stream, self.offset - self.lines.pending() as u64);
        }
        Ok(total)
    }

    fn read_all(&mut self, output: &mut dyn OutputSink, buf: &mut [u8]) -> std::io::Result<()> {
        while self.read_new(output, buf)? > 0 {}
        let stream = self.stream;
        self.lines.finish(&mut |l| output.line(stream, l));
        Ok(())
    }
}

impl Detached {
    fn dir(&self, req: &StepRequest) -> PathBuf {
        let name = self.key.name(&req.op_id, req.step_index, &req.node.name);
        self.root.join(format!("rdrunner-step-{name}"))
    }

    pub(crate) fn execute(
        &self,
        req: &StepRequest,
        output: &mut dyn OutputSink,
        abort: &AbortSignal,
    ) -> Result<StepOutcome, ExecutorError> {
        let node = req.node.name.as_str();
        let dir = self.dir(req);
        let leader = if req.reattach {
            find(&dir, node)?
        } else {
            if abort.is_aborted() {
                return Ok(aborted_before_start());
            }
            start(&self.root, &dir, req)?
        };
        let outcome = follow(&dir, leader, req, output, abort);
        // Its status is read, or it is gone for good: nothing of it is
        // needed again once its end is recorded (not before: a runner dying
        // in between would find neither).
        output.ended(outcome.as_ref());
        if let Ok(work) = std::fs::read_to_string(dir.join("workdir")) {
            let work = Path::new(work.trim_end_matches('\n'));
            if work.is_absolute() && work.starts_with(std::env::temp_dir()) {
                let _ = std::fs::remove_dir_all(work);
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        outcome
    }
}

/// Makes the step's directory and starts the wrapper in a session of its
/// own; records its pid and start time.
fn start(root: &Path, dir: &Path, req: &StepRequest) -> Result<Leader, ExecutorError> {
    let node = req.node.name.as_str();
    let mkdir = |p: &Path| {
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(p)
            .map_err(|e| io_error(format!("cannot create {}", p.display()), node, e))
    };
    crate::private_dir::ensure_dir(root).map_err(|e| {
        io_error(
            format!("cannot create {} or make it private", root.display()),
            node,
            e,
        )
    })?;
    // Fails when it exists: a step is started once.
    mkdir(dir)?;
    // The step's working directory and HOME: private, and outside the
    // runner's directory, as for an attached step.
    let work = tempfile::Builder::new()
        .prefix("rdrunner-step-")
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir()
        .map_err(|e| io_error("cannot create the step's working directory", node, e))?
        .keep();
    let record = dir.join("workdir");
    std::fs::write(&record, format!("{}\n", work.display())).map_err(|e| {
        let _ = std::fs::remove_dir_all(&work);
        io_error(format!("cannot write {}", record.display()), node, e)
    })?;
    for name in ["out", "err"] {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dir.join(name))
            .map_err(|e| {
                io_error(
                    format!("cannot create {name} in {}", dir.display()),
                    node,
                    e,
                )
            })?;
    }
    let inner = step_command(req, &work)?;
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(WRAPPER)
        .arg("rdrunner-step")
        .arg(dir)
        .arg(inner.get_program())
        .args(inner.get_args())
        .env_clear()
        .envs(inner.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .current_dir(&work)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: setsid(2) is async-signal-safe and touches no memory; it runs
    // in the child between fork and exec, making it the leader of a new
    // session and process group (its pid is the group id), detached from
    // the runner's session and terminal.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| io_error("cannot start the step's wrapper (/bin/sh)", node, e))?;
    let pid = child.id();
    // Without it the step is still followed to its end; only a restarted
    // runner could not tell whether it runs.
    if let Some(t) = start_time(pid) {
        let tmp = dir.join("pid.new");
        let _ = std::fs::write(&tmp, format!("{pid} {t}\n"))
            .and_then(|()| std::fs::rename(&tmp, dir.join("pid")));
    }
    Ok(Leader::Child(child))
}

/// The step a previous process of the runner started, by its directory and
/// recorded pid.
fn find(dir: &Path, node: &str) -> Result<Leader, ExecutorError> {
    if !dir.is_dir() {
        return Err(ExecutorError::new(
            ExecutorErrorKind::NoExitStatus,
            format!(
                "node {node} (local): cannot re-attach to the step the previous process of the runner started: its directory {} is not there (it ended while the runner was down and its status went with it, or it never started); it is not run again",
                dir.display()
            ),
        ));
    }
    let recorded = std::fs::read_to_string(dir.join("pid")).ok().and_then(|t| {
        let mut it = t.split_whitespace();
        let pid: u32 = it.next()?.parse().ok()?;
        let start: u64 = it.next()?.parse().ok()?;
        Some((pid, start))
    });
    Ok(match recorded {
        Some((pid, start)) if pid > 1 && start_time(pid) == Some(start) => {
            Leader::Recorded { pid, start }
        }
        _ => Leader::Gone,
    })
}

/// Follows the step's files to its end; ends its group on an abort.
fn follow(
    dir: &Path,
    mut leader: Leader,
    req: &StepRequest,
    output: &mut dyn OutputSink,
    abort: &AbortSignal,
) -> Result<StepOutcome, ExecutorError> {
    let node = req.node.name.as_str();
    let open = |name: &str| {
        File::open(dir.join(name))
            .map_err(|e| io_error(format!("cannot open {name} in {}", dir.display()), node, e))
    };
    let mut files = [
        Followed {
            stream: Stream::Stdout,
            file: open("out")?,
            offset: 0,
            lines: LineSplitter::default(),
        },
        Followed {
            stream: Stream::Stderr,
            file: open("err")?,
            offset: 0,
            lines: LineSplitter::default(),
        },
    ];
    // A step re-attached to is read on from the previous process's marks.
    if req.reattach {
        files[0].offset = req.resume_at[0];
        files[1].offset = req.resume_at[1];
    }
    for f in files.iter_mut() {
        f.file
            .seek(SeekFrom::Start(f.offset))
            .map_err(|e| io_error("cannot read the step's output", node, e))?;
    }
    let read_err = |e: std::io::Error| io_error("cannot read the step's output", node, e);
    let mut buf = vec![0u8; 64 * 1024];
    let mut term_at: Option<Instant> = None;
    let mut killed = false;
    let status_path = dir.join("status");
    loop {
        let mut read = 0;
        for f in files.iter_mut() {
            read += f.read_new(output, &mut buf).map_err(read_err)?;
        }
        let (alive, exit) = leader.poll();
        if abort.is_aborted() {
            let pgid = leader.pgid();
            if term_at.is_none() {
                if let Some(pgid) = pgid.filter(|_| leader.may_signal()) {
                    signal_group(pgid, libc::SIGTERM);
                }
                term_at = Some(Instant::now());
            }
            let group_gone = match pgid {
                Some(pgid) if leader.may_signal() => !signal_group(pgid, 0),
                _ => true,
            };
            let grace_over = term_at.is_some_and(|t| t.elapsed() >= req.kill_grace);
            if !killed && grace_over && !group_gone {
                if let Some(pgid) = pgid.filter(|_| leader.may_signal()) {
                    signal_group(pgid, libc::SIGKILL);
                }
                killed = true;
            }
            if !alive && (group_gone || killed) {
                for f in files.iter_mut() {
                    f.read_all(output, &mut buf).map_err(read_err)?;
                }
                let reason = abort.reason().expect("aborted");
                return Ok(StepOutcome {
                    exit_code: None,
                    signal: exit.and_then(|s| s.signal()).map(signal_name),
                    message: Some(if killed {
                        format!(
                            "aborted ({reason:?}): sent TERM, then KILL after {} ms grace",
                            req.kill_grace.as_millis()
                        )
                    } else {
                        format!("aborted ({reason:?}): sent TERM")
                    }),
                });
            }
        } else if status_path.exists() || !alive {
            // The status is written after the output is complete: what is
            // read now is the rest of it.
            for f in files.iter_mut() {
                f.read_all(output, &mut buf).map_err(read_err)?;
            }
            let mut text = String::new();
            if let Ok(mut s) = File::open(&status_path) {
                let _ = s.read_to_string(&mut text);
            }
            if let Ok(code) = text.trim().parse::<i32>() {
                if let Leader::Child(c) = &mut leader {
                    let _ = c.wait();
                }
                return Ok(StepOutcome::exited(code));
            }
            if alive {
                // Appeared between the two looks: read it next turn.
                continue;
            }
            return match exit {
                Some(status) => Ok(StepOutcome {
                    exit_code: status.code(),
                    signal: status.signal().map(signal_name),
                    message: Some("the step's wrapper ended without writing its status".into()),
                }),
                None => Err(ExecutorError::new(
                    ExecutorErrorKind::NoExitStatus,
                    format!(
                        "node {node} (local): no exit status: the step's process is gone without writing its status (killed while the runner was down?)"
                    ),
                )),
            };
        }
        if read == 0 {
            std::thread::sleep(TICK);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_time_names_a_live_process_and_not_a_missing_one() {
        let me = std::process::id();
        let t = start_time(me).expect("own start time");
        assert_eq!(start_time(me), Some(t));
        assert!(start_time(u32::MAX - 1).is_none());
    }

    #[test]
    fn the_wrapper_writes_the_status_after_the_output() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        let status = Command::new("/bin/sh")
            .arg("-c")
            .arg(WRAPPER)
            .arg("rdrunner-step")
            .arg(dir)
            .args(["sh", "-c", "echo out; echo err >&2; exit 3"])
            .status()
            .unwrap();
        assert!(status.success());
        let read = |n: &str| std::fs::read_to_string(dir.join(n)).unwrap();
        assert_eq!(read("out"), "out\n");
        assert_eq!(read("err"), "err\n");
        assert_eq!(read("status"), "3\n");
        assert!(!dir.join("status.new").exists());
    }
}
