//! End to end: the value of a secure option reaches the step (it runs with
//! it) but appears nowhere else: not in the output the control plane
//! stored, not in the runner's logs (at debug level), not in its spool,
//! not on its stderr.

use crate::support::{contains, files_under, Runner, World, PROJECT};
use rdrunner_actors::model::{CommandStep, ScriptStep, Step};
use rdrunner_harness::{RunState, SubmitExecution};

#[actix_rt::test]
async fn a_secure_option_value_is_never_written_anywhere() {
    let world = World::new(&["s1", "s2"]).await;
    let runner = Runner::start(world.work());
    let secret = format!("pw-{:016x}", rand::random::<u64>());
    let proof = world.scratch().join("proof");
    let job = SubmitExecution {
        options: [
            ("dbpass".to_owned(), secret.clone()),
            ("user".to_owned(), "app".to_owned()),
        ]
        .into(),
        secure_options: vec!["dbpass".into()],
        ..SubmitExecution::new(
            vec![
                Step::Command(CommandStep {
                    command: format!(
                        "echo login ${{option.user}} ${{option.dbpass}}; \
                         echo env $RD_OPTION_DBPASS >&2; \
                         [ \"$RD_OPTION_DBPASS\" = ${{option.dbpass}} ] && echo same > {}-${{node.name}}",
                        proof.display()
                    ),
                }),
                Step::Script(ScriptStep {
                    script: "#!/bin/sh\necho \"arg $1\"\necho \"body @option.dbpass@\"\n".into(),
                    args: vec!["${option.dbpass}".into()],
                    interpreter: Some("sh".into()),
                    file_extension: None,
                }),
            ],
            ".*",
        )
    };
    let admin = world.admin();
    let id = admin.submit_execution(PROJECT, &job).await.expect("submit");
    let status = world.wait_terminal(id).await;
    let exit = runner.stop();
    assert!(exit.success(), "rdrunner exited {exit} after SIGTERM");
    assert_eq!(status.state, RunState::Succeeded, "{status:#?}");

    // The steps had the real value.
    for node in ["s1", "s2"] {
        let p = format!("{}-{node}", proof.display());
        assert_eq!(
            std::fs::read_to_string(&p).unwrap_or_default(),
            "same\n",
            "{p}"
        );
    }
    // The control plane has the masked lines, and nothing else of it.
    let output = admin.all_output(id).await.expect("output");
    let texts: Vec<&str> = output.iter().map(|e| e.text.as_str()).collect();
    for expected in [
        "login app [SECURE]",
        "env [SECURE]",
        "arg [SECURE]",
        "body [SECURE]",
    ] {
        assert_eq!(
            texts.iter().filter(|t| **t == expected).count(),
            2,
            "{expected}: {texts:#?}"
        );
    }
    let stored: Vec<String> = status
        .operations
        .iter()
        .flat_map(|op| world.harness.reports(&op.id))
        .map(|r| serde_json::to_string(&r).unwrap())
        .collect();
    assert!(!stored.is_empty());
    for r in &stored {
        assert!(!r.contains(&secret), "stored report leaks the secret: {r}");
    }
    // The runner's files.
    let logs = files_under(&world.logs_dir());
    assert!(
        logs.iter().any(|(_, b)| contains(b, "operation")),
        "the logs were written: {:?}",
        logs.iter().map(|(p, _)| p).collect::<Vec<_>>()
    );
    let spool = files_under(&world.spool_dir());
    assert!(
        spool.iter().any(|(_, b)| contains(b, "login app [SECURE]")),
        "the spool holds the reports: {:?}",
        spool.iter().map(|(p, _)| p).collect::<Vec<_>>()
    );
    for (path, bytes) in logs.iter().chain(&spool) {
        assert!(
            !contains(bytes, &secret),
            "{} holds the secret",
            path.display()
        );
    }
    // What the process printed (runner.log goes to stderr too).
    for name in ["runner.stdout", "runner.stderr"] {
        let printed = std::fs::read(world.work().join(name)).unwrap();
        assert!(!contains(&printed, &secret), "{name} holds the secret");
    }
    let stderr = std::fs::read(world.work().join("runner.stderr")).unwrap();
    assert!(
        contains(&stderr, "rdrunner starting"),
        "runner.log lines on stderr"
    );
}
