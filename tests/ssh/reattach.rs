//! Steps that survive a dropped connection: the node is reached through a
//! fault proxy that cuts every connection mid-step; the executor dials
//! again and follows the detached step on, every line once, and abort and
//! the reattach window still hold. With reattaching off, or on a node that
//! cannot host the detached wrapper, steps run attached as before.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::fixture::*;
use rdrunner_actors::model::{Node, Stream};
use rdrunner_actors::{AbortReason, AbortSignal, NodeExecutor, StepOutcome};
use rdrunner_harness::proxy::FaultProxy;

/// The fixture's sshd behind a fault proxy, its host key known for the
/// proxy's address.
fn behind_proxy(f: &Fixture) -> (FaultProxy, Node) {
    let proxy = FaultProxy::start(format!("127.0.0.1:{}", f.sshd.port()).parse().unwrap())
        .expect("start the proxy");
    let public = f.sshd.host_public_key().unwrap();
    let mut parts = public.split_whitespace();
    let (kind, blob) = (parts.next().unwrap(), parts.next().unwrap());
    let known = std::fs::read_to_string(&f.settings.known_hosts_file).unwrap();
    std::fs::write(
        &f.settings.known_hosts_file,
        format!("{known}[127.0.0.1]:{} {kind} {blob}\n", proxy.addr().port()),
    )
    .unwrap();
    let mut node = f.node();
    node.hostname = "127.0.0.1".into();
    node.port = Some(proxy.addr().port());
    (proxy, node)
}

/// Lines as they arrive, shared with the test's own thread.
type Seen = Arc<Mutex<Vec<(Stream, String)>>>;

fn count(seen: &Seen) -> usize {
    seen.lock().unwrap().len()
}

/// Waits (bounded) until `seen` holds at least `n` lines.
fn wait_lines(seen: &Seen, n: usize, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while count(seen) < n {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// Runs `command` on `node` on a thread of its own, lines into `seen`.
fn spawn_step(
    f: &Fixture,
    node: Node,
    command: &str,
    abort: &AbortSignal,
) -> (
    Seen,
    std::thread::JoinHandle<Result<StepOutcome, rdrunner_actors::ExecutorError>>,
) {
    let seen: Seen = Arc::default();
    let exec = f.executor();
    let req = request(node, command_step(command));
    let (s, abort) = (seen.clone(), abort.clone());
    let handle = std::thread::spawn(move || {
        let mut sink = move |stream: Stream, text: String| s.lock().unwrap().push((stream, text));
        exec.execute(&req, &mut sink, &abort)
    });
    (seen, handle)
}

/// A step printing `line 1` .. `line n`, one every 50 ms.
fn paced(marker: &str, n: u32) -> String {
    format!(": {marker}; i=1; while [ $i -le {n} ]; do echo \"line $i\"; sleep 0.05; i=$((i+1)); done; echo done >&2")
}

fn step_dirs(f: &Fixture) -> Vec<String> {
    std::fs::read_dir(f.remote_tmp())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("rdrunner-step-"))
        .collect()
}

/// Cuts every connection through `proxy` once `seen` holds `at` lines,
/// and restores it 300 ms later.
fn cut_at(proxy: &FaultProxy, seen: &Seen, at: usize) {
    assert!(
        wait_lines(seen, at, Duration::from_secs(20)),
        "the step never printed {at} lines"
    );
    proxy.cut();
    std::thread::sleep(Duration::from_millis(300));
    proxy.restore();
}

/// Records, when the executor says the step ended, whether the step's
/// directory was still on the node.
struct EndSink {
    remote_tmp: std::path::PathBuf,
    ended: Vec<(Result<StepOutcome, String>, usize)>,
}

impl rdrunner_actors::OutputSink for EndSink {
    fn line(&mut self, _: Stream, _: String) {}

    fn ended(&mut self, result: Result<&StepOutcome, &rdrunner_actors::ExecutorError>) {
        let dirs = std::fs::read_dir(&self.remote_tmp)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("rdrunner-step-")
            })
            .count();
        self.ended
            .push((result.cloned().map_err(|e| e.message.clone()), dirs));
    }
}

/// The step's end is handed to the sink (which records it durably) while
/// its directory, which holds its status, is still there: a runner dying in
/// between finds one or the other, never neither.
#[test]
fn the_steps_directory_goes_only_after_its_end_is_recorded() {
    let f = Fixture::new();
    let mut sink = EndSink {
        remote_tmp: f.remote_tmp(),
        ended: Vec::new(),
    };
    let req = request(f.node(), command_step("echo out; exit 3"));
    let outcome = f
        .executor()
        .execute(&req, &mut sink, &AbortSignal::new())
        .unwrap();
    assert_eq!(outcome, StepOutcome::exited(3));
    assert_eq!(sink.ended, vec![(Ok(StepOutcome::exited(3)), 1)]);
    assert!(step_dirs(&f).is_empty(), "{:?}", step_dirs(&f));
}

#[test]
fn a_step_survives_two_cuts_with_every_line_once_and_in_order() {
    let f = Fixture::new();
    let (proxy, node) = behind_proxy(&f);
    let marker = unique_marker("cuts");
    let (seen, handle) = spawn_step(&f, node, &paced(&marker, 60), &AbortSignal::new());
    cut_at(&proxy, &seen, 10);
    cut_at(&proxy, &seen, 35);
    let outcome = handle.join().unwrap().expect("the step survives the cuts");
    assert_eq!(outcome, StepOutcome::exited(0));
    let seen = seen.lock().unwrap().clone();
    let stdout: Vec<String> = seen
        .iter()
        .filter(|(s, _)| *s == Stream::Stdout)
        .map(|(_, t)| t.clone())
        .collect();
    let expected: Vec<String> = (1..=60).map(|i| format!("line {i}")).collect();
    assert_eq!(stdout, expected);
    assert!(seen
        .iter()
        .any(|(s, t)| *s == Stream::Stderr && t == "done"));
    assert!(proxy.stats().connections >= 3, "{:?}", proxy.stats());
    assert!(proxy.stats().resets >= 2, "{:?}", proxy.stats());
    assert!(step_dirs(&f).is_empty(), "left behind: {:?}", step_dirs(&f));
}

#[test]
fn with_reattach_off_a_cut_fails_the_step_as_before() {
    let mut f = Fixture::new();
    f.settings.reattach = false;
    let (proxy, node) = behind_proxy(&f);
    let marker = unique_marker("attached");
    let (seen, handle) = spawn_step(&f, node, &paced(&marker, 40), &AbortSignal::new());
    assert!(wait_lines(&seen, 5, Duration::from_secs(20)));
    assert!(step_dirs(&f).is_empty(), "attached steps make no directory");
    proxy.cut();
    let result = handle.join().unwrap();
    proxy.restore();
    let e = result.expect_err("an attached step fails with its connection");
    assert!(e.message.contains("lost the connection"), "{e}");
    wait_no_processes(&marker, Duration::from_secs(10));
}

#[test]
fn abort_after_a_reconnect_ends_the_whole_group() {
    let f = Fixture::new();
    let (proxy, node) = behind_proxy(&f);
    let marker = unique_marker("reabort");
    let cmd = format!(
        "sh -c 'sleep 60; echo {marker}' & i=0; while :; do echo \"tick $i\"; sleep 0.05; i=$((i+1)); done"
    );
    let abort = AbortSignal::new();
    let (seen, handle) = spawn_step(&f, node, &cmd, &abort);
    cut_at(&proxy, &seen, 5);
    let before = count(&seen);
    assert!(
        wait_lines(&seen, before + 5, Duration::from_secs(20)),
        "no output after the reconnect"
    );
    abort.abort(AbortReason::Cancelled);
    let outcome = handle.join().unwrap().expect("aborted, not failed");
    let msg = outcome.message.clone().unwrap_or_default();
    assert!(msg.starts_with("cancelled: process group"), "{msg}");
    assert!(msg.contains("got TERM"), "{msg}");
    let left = wait_no_processes(&marker, Duration::from_secs(5));
    assert!(left.is_empty(), "processes left on the node: {left:?}");
    assert!(step_dirs(&f).is_empty(), "left behind: {:?}", step_dirs(&f));
}

#[test]
fn a_node_out_of_reach_past_the_window_fails_the_step() {
    let mut f = Fixture::new();
    f.settings.reattach_window = Duration::from_millis(1500);
    let (proxy, node) = behind_proxy(&f);
    let marker = unique_marker("window");
    let (seen, handle) = spawn_step(&f, node, &paced(&marker, 40), &AbortSignal::new());
    assert!(wait_lines(&seen, 3, Duration::from_secs(20)));
    proxy.cut();
    let cut = Instant::now();
    let result = handle.join().unwrap();
    let took = cut.elapsed();
    proxy.restore();
    let e = result.expect_err("the node stayed out of reach");
    assert!(e.message.contains("ssh.reattachWindowMs (1500 ms)"), "{e}");
    assert!(e.message.contains("node-1"), "{e}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    // The step runs on detached and ends by itself.
    wait_no_processes(&marker, Duration::from_secs(10));
}

#[test]
fn a_node_that_cannot_host_the_detached_step_runs_it_attached() {
    let mut f = Fixture::new();
    f.settings.remote_tmp_dir = f.remote_tmp().join("missing").display().to_string();
    let (log, logged) = capturing_logger();
    let exec = rdrunner::ssh::SshExecutor::new(f.settings.clone(), log);
    for _ in 0..2 {
        let run = run_with(
            &exec,
            &request(f.node(), command_step("echo one; echo two >&2")),
            &AbortSignal::new(),
        );
        assert_eq!(run.outcome(), &StepOutcome::exited(0));
        assert_eq!(run.stdout(), vec!["one"]);
        assert_eq!(run.stderr(), vec!["two"]);
    }
    let logged = logged.lock().unwrap();
    let said: Vec<_> = logged
        .iter()
        .filter(|l| l.contains("run attached"))
        .collect();
    assert_eq!(said.len(), 1, "said once per node: {logged:?}");
    assert!(said[0].contains("missing"), "{}", said[0]);
}
