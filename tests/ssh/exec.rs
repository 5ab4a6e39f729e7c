//! The SSH executor running command steps against a real sshd on loopback:
//! output, exit statuses, signals, environment quoting, streaming and
//! missing exit statuses.

use std::time::{Duration, Instant};

use crate::fixture::*;
use rdrunner_actors::model::Stream;
use rdrunner_actors::{AbortSignal, ExecutorErrorKind, StepOutcome};
use rdrunner_harness::sshd::SshdOptions;

#[test]
fn runs_a_command_with_key_auth() {
    let f = Fixture::new();
    let run = f.run_command("echo hello; echo oops >&2; echo world");
    assert_eq!(run.outcome(), &StepOutcome::exited(0));
    assert_eq!(run.stdout(), vec!["hello", "world"]);
    assert_eq!(run.stderr(), vec!["oops"]);
}

#[test]
fn exit_codes_and_signals() {
    let f = Fixture::new();
    for code in [0, 1, 137] {
        let run = f.run_command(&format!("echo before; exit {code}"));
        assert_eq!(run.outcome().exit_code, Some(code), "exit {code}");
        assert_eq!(run.outcome().signal, None);
        assert_eq!(run.stdout(), vec!["before"]);
    }
    // A process killed by SIGKILL inside the step is exit 137 to its shell.
    let run = f.run_command("sh -c 'kill -KILL $$'");
    assert_eq!(run.outcome().exit_code, Some(137));
    // The attached wrapper itself killed: the server reports an exit signal.
    let mut f = f;
    f.settings.reattach = false;
    let run = f.run_command("kill -TERM $PPID; sleep 5");
    let o = run.outcome();
    assert_eq!(o.signal.as_deref(), Some("TERM"), "{o:?}");
    assert_eq!(o.exit_code, None);
    assert!(!o.succeeded());
}

#[test]
fn output_without_final_newline_and_non_utf8_bytes() {
    let f = Fixture::new();
    let run = f.run_command(r"printf 'a\377b\n\376'; printf 'tail'");
    assert_eq!(run.outcome(), &StepOutcome::exited(0));
    assert_eq!(run.stdout(), vec!["a\u{fffd}b", "\u{fffd}tail"]);
}

#[test]
fn env_values_cannot_change_the_command() {
    let f = Fixture::new();
    let canary = f.dir.path().join("pwned");
    let c = canary.display().to_string();
    let nasty = [
        format!("'; touch {c}; echo '"),
        format!("\"; touch {c}; \""),
        format!("$(touch {c})"),
        format!("`touch {c}`"),
        format!("x\ntouch {c}\n"),
        format!("; touch {c}"),
        "\\'".to_owned(),
    ];
    let mut req = request(
        f.node(),
        command_step(
            r#"for v in "$RD_A" "$RD_B" "$RD_C" "$RD_D" "$RD_E" "$RD_F" "$RD_G"; do printf '%s|' "$v"; echo; done"#,
        ),
    );
    req.env = ["A", "B", "C", "D", "E", "F", "G"]
        .iter()
        .zip(&nasty)
        .map(|(n, v)| (format!("RD_{n}"), v.clone()))
        .collect();
    let run = f.run(req, &AbortSignal::new());
    assert_eq!(run.outcome(), &StepOutcome::exited(0));
    let expected: Vec<String> = nasty
        .iter()
        .flat_map(|v| {
            format!("{v}|")
                .split('\n')
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(run.stdout(), expected);
    assert!(!canary.exists(), "an env value ran a command");
}

#[test]
fn output_is_streamed_while_the_step_runs() {
    let f = Fixture::new();
    let started = Instant::now();
    let run = f.run_command(
        "for i in 1 2 3 4 5 6 7 8 9 10; do echo out $i; echo err $i >&2; sleep 0.1; done",
    );
    let ended = Instant::now();
    assert_eq!(run.outcome(), &StepOutcome::exited(0));
    let out: Vec<String> = (1..=10).map(|i| format!("out {i}")).collect();
    let err: Vec<String> = (1..=10).map(|i| format!("err {i}")).collect();
    assert_eq!(run.stdout(), out);
    assert_eq!(run.stderr(), err);
    // The first lines arrived long before the step ended (it runs ~1 s).
    let first_out = run
        .lines
        .iter()
        .find(|l| l.stream == Stream::Stdout)
        .unwrap();
    let first_err = run
        .lines
        .iter()
        .find(|l| l.stream == Stream::Stderr)
        .unwrap();
    assert!(
        ended - first_out.at > Duration::from_millis(600),
        "stdout not streamed"
    );
    assert!(
        ended - first_err.at > Duration::from_millis(600),
        "stderr not streamed"
    );
    // Lines came one by one, about 100 ms apart, not in one burst.
    let outs: Vec<Instant> = run
        .lines
        .iter()
        .filter(|l| l.stream == Stream::Stdout)
        .map(|l| l.at)
        .collect();
    assert!(outs[5] - outs[0] > Duration::from_millis(250));
    assert!(ended - started < Duration::from_secs(5));
}

#[test]
fn large_output_is_streamed_through() {
    let f = Fixture::new();
    // 50 MB: 500_000 lines of 99 'x' plus newline, counted, not kept.
    let exec = f.executor();
    let req = request(
        f.node(),
        command_step("yes xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx | head -n 500000; echo done >&2"),
    );
    let mut bytes = 0usize;
    let mut lines = 0usize;
    let mut bad = 0usize;
    let mut err = Vec::new();
    let rss_before = rss_bytes();
    let mut rss_max = rss_before;
    let mut sink = |stream: Stream, text: String| match stream {
        Stream::Stdout => {
            lines += 1;
            if lines.is_multiple_of(20_000) {
                rss_max = rss_max.max(rss_bytes());
            }
            bytes += text.len() + 1;
            if text.len() != 99 {
                bad += 1;
            }
        }
        _ => err.push(text),
    };
    let result =
        rdrunner_actors::NodeExecutor::execute(&exec, &req, &mut sink, &AbortSignal::new());
    assert_eq!(result.unwrap(), StepOutcome::exited(0));
    assert_eq!(lines, 500_000);
    assert_eq!(bytes, 50_000_000);
    assert_eq!(bad, 0);
    assert_eq!(err, vec!["done"]);
    // Nothing accumulates: the process grew far less than the 50 MB moved.
    let grown = rss_max.saturating_sub(rss_before);
    assert!(grown < 20 << 20, "resident memory grew by {grown} bytes");
}

/// Resident set size of this process, from /proc.
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[test]
fn a_channel_closed_without_exit_status_is_a_failure() {
    // OpenSSH's ChannelTimeout closes an idle session channel with EOF and
    // CLOSE but no exit-status, and leaves the command running; libssh2
    // reports exit status 0 for such a channel.
    let mut f = Fixture::with_options(SshdOptions {
        extra_config: vec!["ChannelTimeout session:command=1s".to_owned()],
        ..Default::default()
    });
    // The attached wrapper's channel is what the timeout closes.
    f.settings.reattach = false;
    let marker = unique_marker("nes");
    let run = f.run_command(&format!("sleep 30; echo {marker}"));
    let e = run.error();
    assert_eq!(e.kind, ExecutorErrorKind::NoExitStatus, "{e}");
    assert!(
        e.message.contains("no exit status from node 'node-1'"),
        "{e}"
    );
    // The command would have run on: its process group was ended.
    let left = wait_no_processes(&marker, Duration::from_secs(5));
    assert!(left.is_empty(), "processes left: {left:?}");
}

#[test]
fn a_connection_lost_mid_step_is_a_protocol_error() {
    // An attached step: a detached one is followed on (`reattach`).
    let mut f = Fixture::new();
    f.settings.reattach = false;
    // The wrapper's parent is the server's process for this connection:
    // killing it drops the connection under the running step. The pause
    // lets sshd forward "started" first: output still in its buffers when
    // it is killed is lost with the connection, as it would be on a node.
    let run = f.run_command("echo started; sleep 1; kill -KILL $(ps -o ppid= -p $PPID); sleep 5");
    let e = run.error();
    assert_eq!(e.kind, ExecutorErrorKind::Protocol, "{e}");
    assert!(
        e.message.contains("lost the connection to node 'node-1'"),
        "{e}"
    );
    assert_eq!(run.stdout(), vec!["started"]);
}
