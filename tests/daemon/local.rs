//! The local executor: real child processes on this host.

use std::os::unix::fs::PermissionsExt;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rdrunner::local::LocalExecutor;
use rdrunner::ssh::StepKey;
use rdrunner_actors::model::{
    CommandStep, CopyStep, ExecutionInfo, Node, ScriptStep, Step, Stream,
};
use rdrunner_actors::{AbortReason, AbortSignal, NodeExecutor, StepOutcome, StepRequest};

fn request(step: Step) -> StepRequest {
    StepRequest {
        op_id: "op-1".into(),
        execution: ExecutionInfo::default(),
        node: Node::local("localhost"),
        step_index: 1,
        step,
        env: vec![("RD_OPTION_SERVICE".into(), "it's \"quoted\" $x".into())],
        kill_grace: Duration::from_millis(500),
        reattach: false,
        resume_at: [0, 0],
    }
}

fn command(c: &str) -> Step {
    Step::Command(CommandStep { command: c.into() })
}

fn run(step: Step) -> (StepOutcome, Vec<(Stream, String)>) {
    let mut lines = Vec::new();
    let outcome = LocalExecutor::new()
        .execute(
            &request(step),
            &mut |s: Stream, l: String| lines.push((s, l)),
            &AbortSignal::new(),
        )
        .unwrap();
    (outcome, lines)
}

fn texts(lines: &[(Stream, String)], stream: Stream) -> Vec<String> {
    lines
        .iter()
        .filter(|(s, _)| *s == stream)
        .map(|(_, l)| l.clone())
        .collect()
}

#[test]
fn output_in_order_stderr_and_exit_code() {
    let (out, lines) = run(command(
        "i=1; while [ $i -le 500 ]; do echo line $i; i=$((i+1)); done; echo oops >&2; exit 3",
    ));
    assert_eq!(out.exit_code, Some(3));
    assert!(!out.succeeded());
    let stdout = texts(&lines, Stream::Stdout);
    assert_eq!(
        stdout,
        (1..=500).map(|i| format!("line {i}")).collect::<Vec<_>>()
    );
    assert_eq!(texts(&lines, Stream::Stderr), vec!["oops"]);
    let (out, _) = run(command("true"));
    assert!(out.succeeded());
}

#[test]
fn environment_non_utf8_and_last_line_without_newline() {
    let (out, lines) = run(command(
        "printf 'a\\377b\\n'; printf '%s\\n' \"$RD_OPTION_SERVICE\"; printf 'tail'",
    ));
    assert!(out.succeeded());
    assert_eq!(
        texts(&lines, Stream::Stdout),
        vec!["a\u{fffd}b", "it's \"quoted\" $x", "tail"]
    );
}

#[test]
fn a_signal_is_reported() {
    let (out, _) = run(command("kill -KILL $$"));
    assert_eq!(out.signal.as_deref(), Some("KILL"));
    assert_eq!(out.exit_code, None);
}

#[test]
fn script_with_interpreter_args_private_dir_removed_afterwards() {
    let (out, lines) = run(Step::Script(ScriptStep {
        script: "echo \"1=[$1] 2=[$2] n=$#\"\necho \"$0\"\nstat -c %a \"$(dirname \"$0\")\"\n"
            .into(),
        args: vec!["a b".into(), "c".into()],
        interpreter: Some("sh -e".into()),
        file_extension: Some("sh".into()),
    }));
    assert!(out.succeeded(), "{out:?} {lines:?}");
    let stdout = texts(&lines, Stream::Stdout);
    assert_eq!(stdout[0], "1=[a b] 2=[c] n=2");
    assert!(stdout[1].ends_with("/script.sh"), "{}", stdout[1]);
    assert_eq!(stdout[2], "700");
    let dir = std::path::Path::new(&stdout[1])
        .parent()
        .unwrap()
        .to_owned();
    assert!(!dir.exists(), "{} left behind", dir.display());

    // Without an interpreter the #! line decides.
    let (out, lines) = run(Step::Script(ScriptStep {
        script: "#!/bin/sh\necho direct \"$@\"\nexit 4\n".into(),
        args: vec!["x".into()],
        interpreter: None,
        file_extension: None,
    }));
    assert_eq!(out.exit_code, Some(4));
    assert_eq!(texts(&lines, Stream::Stdout), vec!["direct x"]);
}

#[test]
fn copy_writes_content_and_mode() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("app.conf");
    let (out, lines) = run(Step::Copy(CopyStep {
        content_base64: "aGVsbG8K".into(), // "hello\n"
        destination: dest.display().to_string(),
        mode: Some("0640".into()),
    }));
    assert!(out.succeeded());
    assert_eq!(std::fs::read(&dest).unwrap(), b"hello\n");
    let mode = std::fs::metadata(&dest).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o640);
    assert!(lines[0].1.contains("copied 6 bytes"), "{lines:?}");
    // Only the file itself is left in the directory.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

    let err = LocalExecutor::new()
        .execute(
            &request(Step::Copy(CopyStep {
                content_base64: "aGVsbG8K".into(),
                destination: "relative/path".into(),
                mode: None,
            })),
            &mut |_: Stream, _: String| {},
            &AbortSignal::new(),
        )
        .unwrap_err();
    assert!(err.message.contains("absolute"), "{err}");
}

fn pgrep(marker: &str) -> Vec<String> {
    let out = std::process::Command::new("pgrep")
        .args(["-f", marker])
        .output()
        .expect("pgrep is installed (procps)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn abort_terms_then_kills_the_whole_group_and_leaves_nothing() {
    let marker = format!("rdrunner-local-marker-{}", std::process::id());
    // A child that ignores TERM in the background, one in the foreground.
    let cmd = format!(
        "sh -c 'trap \"\" TERM; while :; do sleep 0.1; done' {marker}-bg >/dev/null 2>&1 & \
         echo started; sh -c 'while :; do sleep 0.1; done' {marker}-fg"
    );
    let abort = AbortSignal::new();
    let (started_tx, started_rx) = mpsc::channel();
    let a = abort.clone();
    let worker = std::thread::spawn(move || {
        LocalExecutor::new().execute(
            &request(command(&cmd)),
            &mut move |_: Stream, l: String| {
                if l == "started" {
                    let _ = started_tx.send(());
                }
            },
            &a,
        )
    });
    started_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    // Both marked processes run.
    let deadline = Instant::now() + Duration::from_secs(5);
    while pgrep(&marker).len() < 2 {
        assert!(Instant::now() < deadline, "processes did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let t = Instant::now();
    abort.abort(AbortReason::Cancelled);
    let out = worker.join().unwrap().unwrap();
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(450),
        "the grace was not given: {took:?}"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(out.message.unwrap().contains("KILL"));
    assert!(
        pgrep(&marker).is_empty(),
        "left running: {:?}",
        pgrep(&marker)
    );
}

#[test]
fn abort_of_a_step_that_obeys_term_ends_without_waiting_for_the_grace() {
    let abort = AbortSignal::new();
    let (tx, rx) = mpsc::channel();
    let a = abort.clone();
    let worker = std::thread::spawn(move || {
        let mut req = request(command("echo started; exec sleep 30"));
        req.kill_grace = Duration::from_secs(20);
        LocalExecutor::new().execute(
            &req,
            &mut move |_: Stream, l: String| {
                let _ = tx.send(l);
            },
            &a,
        )
    });
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), "started");
    let t = Instant::now();
    abort.abort(AbortReason::TimedOut);
    let out = worker.join().unwrap().unwrap();
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(out.signal.as_deref(), Some("TERM"));
    assert!(out.message.unwrap().contains("TimedOut"));
}

#[test]
fn a_step_printing_faster_than_its_lines_are_taken_waits_on_its_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let done = dir.path().join("done");
    let step = command(&format!("seq 1 200000; touch {}", done.display()));
    let mut first = true;
    let mut finished_early = false;
    let mut count = 0u64;
    let outcome = LocalExecutor::new()
        .execute(
            &request(step),
            &mut |_: Stream, _: String| {
                count += 1;
                if first {
                    first = false;
                    // A slow sink: while it holds the first line, the step
                    // may fill the bounded queue and its pipe, no more.
                    std::thread::sleep(Duration::from_millis(1000));
                    finished_early = done.exists();
                }
            },
            &AbortSignal::new(),
        )
        .unwrap();
    assert!(outcome.succeeded());
    assert_eq!(count, 200_000);
    assert!(
        !finished_early,
        "the step printed all its output while none was taken: it is queued in memory"
    );
}

/// The directory a detached executor with `key` under `root` gives `req`.
fn step_dir(root: &std::path::Path, key: &StepKey, req: &StepRequest) -> std::path::PathBuf {
    root.join(format!(
        "rdrunner-step-{}",
        key.name(&req.op_id, req.step_index, &req.node.name)
    ))
}

/// Leaves a step's directory as a dead runner would: its output so far and
/// a pid file naming `pid` with start time `start`.
fn leave_step(dir: &std::path::Path, pid: u32, start: u64) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(dir.join("out"), "before\n").unwrap();
    std::fs::write(dir.join("err"), "").unwrap();
    std::fs::write(dir.join("pid"), format!("{pid} {start}\n")).unwrap();
}

#[test]
fn a_recycled_pid_is_not_taken_for_a_local_step() {
    use std::os::unix::process::CommandExt;
    let root = tempfile::tempdir().unwrap();
    let key = StepKey([7; 32]);
    let exec = LocalExecutor::detached(root.path().to_path_buf(), key.clone());
    let mut req = request(command("echo never"));
    req.reattach = true;
    let dir = step_dir(root.path(), &key, &req);
    // A live process leading a group of its own: the pid's next owner.
    let mut stranger = std::process::Command::new("sleep")
        .arg("30")
        .process_group(0)
        .spawn()
        .unwrap();
    let pid = stranger.id();

    // Recorded with another start time: not the step. An abort signals
    // nobody, and the step is over.
    leave_step(&dir, pid, 1);
    let abort = AbortSignal::new();
    abort.abort(AbortReason::Cancelled);
    let mut lines = Vec::new();
    let started = Instant::now();
    let outcome = exec
        .execute(&req, &mut |s: Stream, l: String| lines.push((s, l)), &abort)
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(outcome.message.unwrap_or_default().starts_with("aborted"));
    assert_eq!(lines, vec![(Stream::Stdout, "before".to_owned())]);
    assert!(
        stranger.try_wait().unwrap().is_none(),
        "the process that took the pid was signalled"
    );
    assert!(!dir.exists(), "the step's directory is removed");

    // Without an abort: not waited for; no status, and the error says so.
    leave_step(&dir, pid, 1);
    let mut lines = Vec::new();
    let started = Instant::now();
    let err = exec
        .execute(
            &req,
            &mut |s: Stream, l: String| lines.push((s, l)),
            &AbortSignal::new(),
        )
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(err.message.contains("no exit status"), "{err}");
    assert_eq!(lines, vec![(Stream::Stdout, "before".to_owned())]);
    assert!(stranger.try_wait().unwrap().is_none());

    // Its directory gone: it is not run again, and the error says why.
    let err = exec
        .execute(&req, &mut |_: Stream, _: String| {}, &AbortSignal::new())
        .unwrap_err();
    assert!(err.message.contains("is not there"), "{err}");
    let _ = stranger.kill();
    let _ = stranger.wait();
}

#[test]
fn a_detached_step_runs_in_a_session_of_its_own_outside_the_runners_directory() {
    let root = tempfile::tempdir().unwrap();
    let exec = LocalExecutor::detached(root.path().to_path_buf(), StepKey([9; 32]));
    let mut lines = Vec::new();
    let outcome = exec
        .execute(
            &request(command(
                "echo sid=$(ps -o sid= -p $$ | tr -d ' ') pid=$$; pwd; echo err >&2; exit 4",
            )),
            &mut |s: Stream, l: String| lines.push((s, l)),
            &AbortSignal::new(),
        )
        .unwrap();
    assert_eq!(outcome.exit_code, Some(4), "{lines:?}");
    let first = &lines.iter().find(|(s, _)| *s == Stream::Stdout).unwrap().1;
    let sid: u32 = first
        .split_whitespace()
        .find_map(|w| w.strip_prefix("sid="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{first}"));
    // The step's session is not the test's.
    // SAFETY: getsid(2) takes an integer and touches no memory.
    let own_sid = unsafe { libc::getsid(0) } as u32;
    assert_ne!(sid, own_sid);
    let cwd = &lines
        .iter()
        .filter(|(s, _)| *s == Stream::Stdout)
        .nth(1)
        .unwrap()
        .1;
    assert!(!std::path::Path::new(cwd).starts_with(root.path()), "{cwd}");
    assert!(!std::path::Path::new(cwd).exists(), "{cwd} was not removed");
    assert!(lines.contains(&(Stream::Stderr, "err".to_owned())));
    // Nothing is left under the root.
    assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
}

/// Records, when the executor says the step ended, whether its directory
/// (holding its status) was still there.
struct EndSink {
    dir: std::path::PathBuf,
    ended: Vec<(Option<i32>, bool)>,
}

impl rdrunner_actors::OutputSink for EndSink {
    fn line(&mut self, _: Stream, _: String) {}

    fn ended(&mut self, result: Result<&StepOutcome, &rdrunner_actors::ExecutorError>) {
        let code = result.ok().and_then(|o| o.exit_code);
        self.ended.push((code, self.dir.join("status").exists()));
    }
}

#[test]
fn a_detached_steps_directory_goes_only_after_its_end_is_recorded() {
    let root = tempfile::tempdir().unwrap();
    let key = StepKey([5; 32]);
    let exec = LocalExecutor::detached(root.path().to_path_buf(), key.clone());
    let req = request(command("echo out; exit 7"));
    let mut sink = EndSink {
        dir: step_dir(root.path(), &key, &req),
        ended: Vec::new(),
    };
    let outcome = exec.execute(&req, &mut sink, &AbortSignal::new()).unwrap();
    assert_eq!(outcome.exit_code, Some(7));
    assert_eq!(sink.ended, vec![(Some(7), true)]);
    assert!(!sink.dir.exists());
}
