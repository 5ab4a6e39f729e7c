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

fn copy_step(content: &[u8], dest: &std::path::Path, mode: Option<&str>) -> Step {
    Step::Copy(CopyStep {
        content_base64: base64::engine::general_purpose::STANDARD.encode(content),
        destination: dest.display().to_string(),
        mode: mode.map(str::to_owned),
    })
}

#[test]
fn copy_replaces_a_symlink_at_the_destination_and_never_follows_it() {
    let f = Fixture::new();
    let precious = f.dir.path().join("precious");
    std::fs::write(&precious, "keep me").unwrap();
    std::fs::set_permissions(&precious, std::fs::Permissions::from_mode(0o600)).unwrap();
    let dest_dir = f.dir.path().join("dest");
    std::fs::create_dir(&dest_dir).unwrap();
    let dest = dest_dir.join("file");
    std::os::unix::fs::symlink(&precious, &dest).unwrap();
    let run = f.run(
        request(f.node(), copy_step(b"new", &dest, Some("0666"))),
        &AbortSignal::new(),
    );
    assert!(run.outcome().succeeded(), "{:?}", run.outcome());
    // The link's target is untouched ...
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep me");
    let mode = std::fs::metadata(&precious).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o600, "the link's target changed mode");
    // ... and the destination is now a file of its own with the new content.
    let meta = std::fs::symlink_metadata(&dest).unwrap();
    assert!(meta.file_type().is_file(), "{meta:?}");
    assert_eq!(meta.permissions().mode() & 0o7777, 0o666);
    assert_eq!(std::fs::read(&dest).unwrap(), b"new");
    // No temporary file is left beside it.
    let names: Vec<_> = std::fs::read_dir(&dest_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("file")]);
}

#[test]
fn copy_refuses_a_directory_and_special_modes() {
    let f = Fixture::new();
    let dir = f.dir.path().join("a-dir");
    std::fs::create_dir(&dir).unwrap();
    let run = f.run(
        request(f.node(), copy_step(b"x", &dir, None)),
        &AbortSignal::new(),
    );
    let e = run.error();
    assert!(e.message.contains("is a directory"), "{e}");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "left a file");
    let dest = f.dir.path().join("suid");
    let run = f.run(
        request(f.node(), copy_step(b"x", &dest, Some("4755"))),
        &AbortSignal::new(),
    );
    assert_eq!(run.error().kind, ExecutorErrorKind::Config);
    assert!(!dest.exists());
}

#[test]
fn scripts_are_not_uploaded_into_a_directory_others_can_swap() {
    let f = Fixture::new();
    // World-writable without the sticky bit: anyone could rename the
    // script's directory away and put their own in its place.
    let shared = f.dir.path().join("shared-tmp");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut settings = f.settings.clone();
    settings.remote_tmp_dir = shared.display().to_string();
    let exec = rdrunner::ssh::SshExecutor::new(settings, logger());
    let run = run_with(
        &exec,
        &request(f.node(), script("echo ran\n", &[], Some("sh"))),
        &AbortSignal::new(),
    );
    let e = run.error();
    assert_eq!(e.kind, ExecutorErrorKind::Config, "{e}");
    assert!(e.message.contains("sticky"), "{e}");
    assert_eq!(std::fs::read_dir(&shared).unwrap().count(), 0);
    // With the sticky bit (as /tmp has) it runs.
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let run = run_with(
        &exec,
        &request(f.node(), script("echo ran\n", &[], Some("sh"))),
        &AbortSignal::new(),
    );
    assert_eq!(run.outcome(), &StepOutcome::exited(0));
    assert_eq!(run.stdout(), vec!["ran"]);
}
