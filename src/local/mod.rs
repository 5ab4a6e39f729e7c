//! The local executor (`executor: local`, "runner as node"): node steps as
//! child processes on the runner's own host, only when the runner's
//! configuration grants it (`runner.localExecutor`); `LocalExecutionOff`
//! stands in for it otherwise and refuses every local node.
//!
//! A step runs with a cleared environment (`PATH` = [`LOCAL_PATH`], `HOME`
//! = its working directory, `LANG` = `C.UTF-8`, and the step's `RD_*`
//! variables; nothing of the runner's own, its credentials variables
//! included) in a private working directory (0700, made for the step and
//! removed after it), never the runner's own.
//!
//! Each step runs in a process group of its own, so that an abort reaches
//! everything it started: TERM to the group, `kill_grace`, then KILL.
//! Attached ([`LocalExecutor::new`]): stdout and stderr are read from pipes
//! by two threads and handed to the caller's sink line by line, in order
//! within each stream. Detached ([`LocalExecutor::detached`], what the
//! daemon uses with `runner.reattach`): see `detached.rs`; the step
//! survives a restart of the runner.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine;
use rdrunner_actors::model::{printable, CopyStep, Node, ScriptStep, Step, Stream};
use rdrunner_actors::output::LineSplitter;
use rdrunner_actors::{
    AbortSignal, ExecutorError, ExecutorErrorKind, NodeExecutor, OutputSink, StepOutcome,
    StepRequest,
};

use crate::ssh::StepKey;

mod detached;

/// Lines read from a step's pipes and not yet handed to the output sink.
const OUTPUT_QUEUE: usize = 1024;

/// How often the waiting loop looks at the abort signal and the child.
const TICK: Duration = Duration::from_millis(50);

/// `PATH` of a local step: fixed, not the runner's, so that what a step
/// runs does not depend on how the runner was started.
pub const LOCAL_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// `LANG` of a local step.
pub const LOCAL_LANG: &str = "C.UTF-8";

/// Runs node steps on the runner's host.
#[derive(Debug, Clone, Default)]
pub struct LocalExecutor {
    /// Where detached steps keep their files, and the key their
    /// directories are named under; `None`: steps are attached (piped).
    detached: Option<detached::Detached>,
}

impl LocalExecutor {
    /// Steps run as children of the runner with their output piped to it:
    /// a restart of the runner fails the steps that were running.
    pub fn new() -> Self {
        LocalExecutor { detached: None }
    }

    /// Steps run detached (a session of their own, output to files in a
    /// private directory under `root`, named under `key`), so that a
    /// restarted runner with the same `root` and `key` re-attaches to them.
    pub fn detached(root: PathBuf, key: StepKey) -> Self {
        // The wrapper runs in the step's own directory: the paths it is
        // given must not depend on where the runner was started.
        let root = std::path::absolute(&root).unwrap_or(root);
        LocalExecutor {
            detached: Some(detached::Detached { root, key }),
        }
    }
}

/// What the runner has for `executor: local` when its configuration does
/// not grant local execution: it refuses every node, and runs nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalExecutionOff;

impl LocalExecutionOff {
    fn refusal(node: &Node) -> ExecutorError {
        ExecutorError::new(
            ExecutorErrorKind::NotAllowed,
            format!(
                "node {} uses executor local, which would run its steps on the runner's own host; this runner does not allow local execution (set runner.localExecutor = true in the runner's configuration to allow it, or give the node executor ssh)",
                printable(&node.name)
            ),
        )
    }
}

impl NodeExecutor for LocalExecutionOff {
    fn admit(&self, node: &Node) -> Result<(), ExecutorError> {
        Err(Self::refusal(node))
    }

    fn execute(
        &self,
        req: &StepRequest,
        _output: &mut dyn OutputSink,
        _abort: &AbortSignal,
    ) -> Result<StepOutcome, ExecutorError> {
        Err(Self::refusal(&req.node))
    }
}

pub(crate) fn io_error(
    what: impl std::fmt::Display,
    node: &str,
    e: impl std::fmt::Display,
) -> ExecutorError {
    ExecutorError::new(
        ExecutorErrorKind::Io,
        format!("node {node} (local): {what}: {e}"),
    )
}

impl NodeExecutor for LocalExecutor {
    fn execute(
        &self,
        req: &StepRequest,
        output: &mut dyn OutputSink,
        abort: &AbortSignal,
    ) -> Result<StepOutcome, ExecutorError> {
        let node = req.node.name.as_str();
        if let Step::Copy(c) = &req.step {
            // Idempotent: done again after a restart of the runner.
            return copy(c, node, output);
        }
        if let Some(d) = &self.detached {
            return d.execute(req, output, abort);
        }
        if req.reattach {
            // A local step runs as a child of the runner, with pipes to it.
            return Err(ExecutorError::new(
                ExecutorErrorKind::NoExitStatus,
                format!(
                    "node {node} (local): runner restarted while the step ran. The previous process started it as its child, with its output piped to it; local steps are not re-attached to after a restart (the step may still be running, outside the runner's control), and it is not run again"
                ),
            ));
        }
        // The step's private working directory (0700), removed when `dir`
        // drops, whatever happens.
        let dir = tempfile::Builder::new()
            .prefix("rdrunner-step-")
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir()
            .map_err(|e| io_error("cannot create the step's working directory", node, e))?;
        let result =
            step_command(req, dir.path()).and_then(|cmd| run(cmd, dir.path(), req, output, abort));
        drop(dir);
        result
    }
}

/// The process of a command or script step, with the step's environment,
/// run in `dir` (a script is written there first).
pub(crate) fn step_command(req: &StepRequest, dir: &Path) -> Result<Command, ExecutorError> {
    let mut cmd = match &req.step {
        Step::Command(c) => {
            let mut cmd = Command::new("sh");
            cmd.arg("-c").arg(&c.command);
            cmd
        }
        Step::Script(s) => script_command(s, dir, req)?,
        Step::Copy(_) => {
            return Err(ExecutorError::new(
                ExecutorErrorKind::Config,
                "a copy step runs no process",
            ))
        }
    };
    cmd.env_clear()
        .env("PATH", LOCAL_PATH)
        .env("HOME", dir)
        .env("LANG", LOCAL_LANG)
        .envs(
            req.env
                .iter()
                .filter(|(k, _)| k.starts_with("RD_"))
                .map(|(k, v)| (k, v)),
        )
        .current_dir(dir);
    Ok(cmd)
}

fn script_command(s: &ScriptStep, dir: &Path, req: &StepRequest) -> Result<Command, ExecutorError> {
    let node = req.node.name.as_str();
    let ext = s.file_extension.as_deref().unwrap_or("");
    let ext = if ext.is_empty() || ext.starts_with('.') {
        ext.to_owned()
    } else {
        format!(".{ext}")
    };
    if ext.contains('/') {
        return Err(ExecutorError::new(
            ExecutorErrorKind::Config,
            format!("node {node} (local): file extension `{ext}` may not contain `/`"),
        ));
    }
    let path = dir.join(format!("script{ext}"));
    std::fs::write(&path, s.script.as_bytes())
        .and_then(|_| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)))
        .map_err(|e| io_error(format!("cannot write {}", path.display()), node, e))?;
    let mut cmd = match s
        .interpreter
        .as_deref()
        .map(str::trim)
        .filter(|i| !i.is_empty())
    {
        Some(interp) => {
            let mut words = interp.split_whitespace();
            let mut cmd = Command::new(words.next().expect("not empty"));
            cmd.args(words).arg(&path);
            cmd
        }
        None => Command::new(&path),
    };
    cmd.args(&s.args);
    Ok(cmd)
}

fn copy(
    c: &CopyStep,
    node: &str,
    output: &mut dyn OutputSink,
) -> Result<StepOutcome, ExecutorError> {
    let config = |m: String| {
        ExecutorError::new(
            ExecutorErrorKind::Config,
            format!("node {node} (local): {m}"),
        )
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(c.content_base64.trim())
        .map_err(|e| config(format!("copy content is not base64: {e}")))?;
    let mode = c.mode_bits().ok_or_else(|| {
        config(format!(
            "copy mode `{}` is not an octal mode such as 0644",
            c.mode.as_deref().unwrap_or("")
        ))
    })?;
    let dest = Path::new(&c.destination);
    if !dest.is_absolute() {
        return Err(config(format!(
            "copy destination `{}` must be an absolute path",
            c.destination
        )));
    }
    let parent = dest.parent().unwrap_or(Path::new("/"));
    // Written beside the destination and renamed, so that the file is never
    // seen half-written.
    let write = || -> std::io::Result<()> {
        let mut tmp = tempfile::Builder::new()
            .prefix(".rdrunner-copy-")
            .tempfile_in(parent)?;
        tmp.write_all(&bytes)?;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))?;
        tmp.as_file().sync_all()?;
        tmp.persist(dest).map_err(|e| e.error)?;
        Ok(())
    };
    write().map_err(|e| io_error(format!("cannot write {}", dest.display()), node, e))?;
    output.line(
        Stream::System,
        format!(
            "copied {} bytes to {} (mode {mode:04o})",
            bytes.len(),
            dest.display()
        ),
    );
    Ok(StepOutcome::exited(0))
}

/// Sends `sig` to every process of the group `pgid`; false when none is left.
pub(crate) fn signal_group(pgid: u32, sig: libc::c_int) -> bool {
    // SAFETY: kill(2) takes two integers and touches no memory of this
    // process. The negative pid addresses the process group the step was
    // started in (process_group(0) made its leader's pid the group id), so
    // nothing outside the step is signalled.
    unsafe { libc::kill(-(pgid as libc::pid_t), sig) == 0 }
}

pub(crate) fn signal_name(sig: i32) -> String {
    match sig {
        libc::SIGTERM => "TERM".into(),
        libc::SIGKILL => "KILL".into(),
        libc::SIGINT => "INT".into(),
        libc::SIGHUP => "HUP".into(),
        libc::SIGSEGV => "SEGV".into(),
        libc::SIGABRT => "ABRT".into(),
        libc::SIGPIPE => "PIPE".into(),
        n => format!("SIG{n}"),
    }
}

/// Spawns a thread turning `pipe` into lines on `tx`.
fn reader(
    mut pipe: impl Read + Send + 'static,
    stream: Stream,
    tx: mpsc::SyncSender<(Stream, String)>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("local-{stream:?}").to_lowercase())
        .spawn(move || {
            let mut splitter = LineSplitter::default();
            let mut buf = [0u8; 8192];
            loop {
                match pipe.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => splitter.push(&buf[..n], &mut |l| {
                        let _ = tx.send((stream, l));
                    }),
                }
            }
            splitter.finish(&mut |l| {
                let _ = tx.send((stream, l));
            });
        })
}

/// Runs `cmd` (from [`step_command`]) with its output piped to the runner.
fn run(
    mut cmd: Command,
    _dir: &Path,
    req: &StepRequest,
    output: &mut dyn OutputSink,
    abort: &AbortSignal,
) -> Result<StepOutcome, ExecutorError> {
    let node = req.node.name.as_str();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if abort.is_aborted() {
        return Ok(aborted_before_start());
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| io_error(format!("cannot start {:?}", cmd.get_program()), node, e))?;
    let pgid = child.id();
    // Bounded: a step that prints faster than its lines are spooled waits
    // on its pipe instead of piling its output up in the runner's memory.
    let (tx, rx) = mpsc::sync_channel(OUTPUT_QUEUE);
    let readers = [
        reader(
            child.stdout.take().expect("piped"),
            Stream::Stdout,
            tx.clone(),
        ),
        reader(child.stderr.take().expect("piped"), Stream::Stderr, tx),
    ];
    let readers = match readers {
        [Ok(a), Ok(b)] => vec![a, b],
        [a, b] => {
            signal_group(pgid, libc::SIGKILL);
            let _ = child.wait();
            let e = a.err().or(b.err()).expect("one failed");
            return Err(io_error("cannot start an output reader", node, e));
        }
    };

    let mut status: Option<ExitStatus> = None;
    let mut pipes_open = true;
    let mut term_at: Option<Instant> = None;
    let mut killed = false;
    loop {
        if pipes_open {
            match rx.recv_timeout(TICK) {
                Ok((stream, line)) => {
                    output.line(stream, line);
                    // Drain what is ready before looking at the child again.
                    while let Ok((stream, line)) = rx.try_recv() {
                        output.line(stream, line);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => pipes_open = false,
            }
        } else if abort.is_aborted() {
            // Polling the child's exit and the group's end, bounded by the grace.
            std::thread::sleep(TICK);
        } else {
            abort.wait_timeout(TICK);
        }
        if status.is_none() {
            status = wait_nonblocking(&mut child, node)?;
        }
        if term_at.is_none() && abort.is_aborted() {
            signal_group(pgid, libc::SIGTERM);
            term_at = Some(Instant::now());
        }
        match term_at {
            None => {
                if status.is_some() && !pipes_open {
                    break;
                }
            }
            Some(t) => {
                let group_gone = !signal_group(pgid, 0);
                if status.is_some() && !pipes_open && group_gone {
                    break;
                }
                if !killed && t.elapsed() >= req.kill_grace {
                    signal_group(pgid, libc::SIGKILL);
                    killed = true;
                }
                if killed && status.is_some() && !pipes_open {
                    break;
                }
            }
        }
    }
    for r in readers {
        let _ = r.join();
    }
    // Lines that arrived after the last look.
    while let Ok((stream, line)) = rx.try_recv() {
        output.line(stream, line);
    }
    let status = match status {
        Some(s) => s,
        None => child
            .wait()
            .map_err(|e| io_error("cannot wait for the step's process", node, e))?,
    };
    let mut outcome = StepOutcome {
        exit_code: status.code(),
        signal: status.signal().map(signal_name),
        message: None,
    };
    if let Some(reason) = abort.reason().filter(|_| term_at.is_some()) {
        outcome.message = Some(if killed {
            format!(
                "aborted ({reason:?}): sent TERM, then KILL after {} ms grace",
                req.kill_grace.as_millis()
            )
        } else {
            format!("aborted ({reason:?}): sent TERM")
        });
    }
    Ok(outcome)
}

pub(crate) fn aborted_before_start() -> StepOutcome {
    StepOutcome {
        exit_code: None,
        signal: None,
        message: Some("aborted before the step started".into()),
    }
}

fn wait_nonblocking(child: &mut Child, node: &str) -> Result<Option<ExitStatus>, ExecutorError> {
    child
        .try_wait()
        .map_err(|e| io_error("cannot wait for the step's process", node, e))
}
