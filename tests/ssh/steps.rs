//! Script and copy steps over SFTP against a real sshd on loopback.

use std::os::unix::fs::PermissionsExt;

use crate::fixture::*;
use base64::Engine;
use rdrunner_actors::model::{CopyStep, ScriptStep, Step};
use rdrunner_actors::{AbortSignal, ExecutorErrorKind, StepOutcome};

fn script(body: &str, args: &[&str], interpreter: Option<&str>) -> Step {
    Step::Script(ScriptStep {
        script: body.to_owned(),
        args: args.iter().map(|s| s.to_string()).collect(),
        interpreter: interpreter.map(str::to_owned),
        file_extension: Some(".sh".to_owned()),
    })
}

#[test]
fn script_runs_with_its_arguments_and_is_removed() {
    let f = Fixture::new();
    let body = "#!/bin/sh\n\
        echo \"argc=$#\"\n\
        for a in \"$@\"; do echo \"[$a]\"; done\n\
        echo \"dir=$(dirname \"$0\")\"\n\
        ls -ld \"$(dirname \"$0\")\" | cut -c1-10\n\
        echo \"env=$RD_OPTION_X\"\n\
        exit 3\n";
    let mut req = request(
        f.node(),
        script(body, &["one", "two words", "it's"], Some("sh")),
    );
    req.env = vec![("RD_OPTION_X".to_owned(), "v a l".to_owned())];
    let run = f.run(req, &AbortSignal::new());
    assert_eq!(run.outcome(), &StepOutcome::exited(3));
    let out = run.stdout();
    assert_eq!(out[0], "argc=3");
    assert_eq!(&out[1..4], &["[one]", "[two words]", "[it's]"]);
    let dir = out[4].strip_prefix("dir=").unwrap();
    assert!(dir.starts_with(&f.settings.remote_tmp_dir), "{dir}");
    assert!(dir.contains("rdrunner-op-test-1-"), "{dir}");
    assert_eq!(out[5], "drwx------", "script directory mode");
    assert_eq!(out[6], "env=v a l");
    // Removed afterwards, although the script failed.
    assert!(!std::path::Path::new(dir).exists(), "{dir} left behind");
    assert_eq!(std::fs::read_dir(f.remote_tmp()).unwrap().count(), 0);
}

#[test]
fn script_without_interpreter_runs_by_its_shebang() {
    let f = Fixture::new();
    let run = f.run(
        request(
            f.node(),
            script("#!/bin/sh\necho \"shebang $1\"\n", &["ok"], None),
        ),
        &AbortSignal::new(),
    );
    assert_eq!(run.outcome(), &StepOutcome::exited(0));
    assert_eq!(run.stdout(), vec!["shebang ok"]);
}

#[test]
fn crafted_arguments_run_nothing() {
    let f = Fixture::new();
    let canary = f.dir.path().join("pwned");
    let c = canary.display();
    let args = [
        format!("'; touch {c}; '"),
        format!("$(touch {c})"),
        format!("`touch {c}`"),
        format!("a\ntouch {c}"),
        format!("; touch {c} #"),
    ];
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = f.run(
        request(
            f.node(),
            script(
                "for a in \"$@\"; do printf '%s|\\n' \"$a\"; done\n",
                &arg_refs,
                Some("sh"),
            ),
        ),
        &AbortSignal::new(),
    );
    assert_eq!(run.outcome(), &StepOutcome::exited(0));
    let expected: Vec<String> = args
        .iter()
        .flat_map(|a| {
            format!("{a}|")
                .split('\n')
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(run.stdout(), expected);
    assert!(!canary.exists(), "an argument ran a command");
}

#[test]
fn copy_writes_content_with_its_mode() {
    let f = Fixture::new();
    let dest = f.dir.path().join("copied.bin");
    let content: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let step = |mode: Option<&str>| {
        Step::Copy(CopyStep {
            content_base64: base64::engine::general_purpose::STANDARD.encode(&content),
            destination: dest.display().to_string(),
            mode: mode.map(str::to_owned),
        })
    };
    let run = f.run(request(f.node(), step(Some("0750"))), &AbortSignal::new());
    assert!(run.outcome().succeeded(), "{:?}", run.outcome());
    assert_eq!(std::fs::read(&dest).unwrap(), content);
    let mode = std::fs::metadata(&dest).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o750);
    // Over an existing file the mode is set too (default 0644).
    let run = f.run(request(f.node(), step(None)), &AbortSignal::new());
    assert!(run.outcome().succeeded());
    let mode = std::fs::metadata(&dest).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o644);
}

#[test]
fn copy_failures_are_clear() {
    let f = Fixture::new();
    let bad_mode = Step::Copy(CopyStep {
        content_base64: "aGk=".to_owned(),
        destination: "/tmp/x".to_owned(),
        mode: Some("rwx".to_owned()),
    });
    let run = f.run(request(f.node(), bad_mode), &AbortSignal::new());
    assert_eq!(run.error().kind, ExecutorErrorKind::Config);
    assert!(run.error().message.contains("not an octal file mode"));

    let missing_dir = Step::Copy(CopyStep {
        content_base64: "aGk=".to_owned(),
        destination: f.dir.path().join("no/such/dir/f").display().to_string(),
        mode: None,
    });
    let run = f.run(request(f.node(), missing_dir), &AbortSignal::new());
    let e = run.error();
    assert_eq!(e.kind, ExecutorErrorKind::Protocol);
    assert!(
        e.message.contains("no/such/dir/f") && e.message.contains("node 'node-1'"),
        "{e}"
    );
}
