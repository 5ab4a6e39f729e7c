//! End to end: the value of a secure option reaches the step (it runs with
//! it) but appears nowhere else: not in the output the control plane
//! stored, not in the runner's logs (at debug level), not in its spool,
//! not on its stderr, not in a `set -x` trace, not split across a long
//! line's cut. And a step whose tokens cannot be substituted safely fails
//! its node before anything runs there.

use crate::support::{contains, files_under, Runner, World, PROJECT};
use rdrunner_actors::model::{CommandStep, CopyStep, Dispatch, Node, ScriptStep, Step};
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
        .flat_map(|op| world.harness().reports(&op.id))
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

#[actix_rt::test]
async fn traces_long_lines_and_multi_line_secrets_are_masked() {
    let world = World::new(&["s1"]).await;
    let admin = world.admin();
    // The SSH node and the runner's own host.
    let nodes = vec![world.nodes[0].clone(), Node::local("self")];
    admin.set_nodes(PROJECT, &nodes).await.expect("set nodes");
    let runner = Runner::start(world.work());
    let mark = format!("{:016x}", rand::random::<u64>());
    // A quote in it, so that traces print it quoted; `cert_key` is secure
    // by its name alone.
    let secret = format!("it's-{mark}");
    let cert = format!("-----BEGIN {mark}-----\nA{mark}\nB{mark}\n-----END-----");
    let job = SubmitExecution {
        options: [
            ("dbpass".to_owned(), secret.clone()),
            ("cert_key".to_owned(), cert),
        ]
        .into(),
        secure_options: vec!["dbpass".into()],
        ..SubmitExecution::new(
            vec![
                Step::Command(CommandStep {
                    command: "set -x; : \"${option.dbpass}\" ${option.dbpass} '${option.dbpass}'"
                        .into(),
                }),
                Step::Script(ScriptStep {
                    script: "set -x\n: \"$RD_OPTION_DBPASS\"\nv=$(printf 'a\\001%s' \"$RD_OPTION_DBPASS\")\n".into(),
                    args: vec![],
                    interpreter: Some("bash".into()),
                    file_extension: None,
                }),
                // The secret straddles the 16 KiB cut of a long line.
                Step::Command(CommandStep {
                    command: "printf '%16380s%s\\n' x \"$RD_OPTION_DBPASS\"; printf '%s\\n' \"$RD_OPTION_CERT_KEY\"; echo done".into(),
                }),
            ],
            ".*",
        )
    };
    let id = admin.submit_execution(PROJECT, &job).await.expect("submit");
    let status = world.wait_terminal(id).await;
    let exit = runner.stop();
    assert!(exit.success(), "rdrunner exited {exit} after SIGTERM");
    assert_eq!(status.state, RunState::Succeeded, "{status:#?}");

    let output = admin.all_output(id).await.expect("output");
    for e in &output {
        assert!(!e.text.contains(&mark), "a secure value in {e:#?}");
    }
    for node in ["s1", "self"] {
        let texts: Vec<&str> = output
            .iter()
            .filter(|e| e.node == node)
            .map(|e| e.text.as_str())
            .collect();
        let traced = |step: u32| {
            output.iter().any(|e| {
                e.node == node
                    && e.step == step
                    && e.text.starts_with('+')
                    && e.text.contains("[SECURE]")
            })
        };
        assert!(traced(1) && traced(2), "{node}: the traces ran: {texts:#?}");
        let long: Vec<&str> = texts
            .iter()
            .copied()
            .filter(|t| t.len() >= 16_000)
            .collect();
        assert_eq!(long.len(), 1, "{node}: one long piece: {texts:#?}");
        assert!(
            long[0].ends_with("x[SECURE]"),
            "{node}: the cut piece ends masked"
        );
        let after = texts
            .iter()
            .position(|t| t.len() >= 16_000)
            .map(|i| texts[i + 1]);
        assert_eq!(
            after,
            Some("[SECURE]"),
            "{node}: the certificate's first line"
        );
        assert!(texts.contains(&"done"), "{node}: {texts:#?}");
    }
}

#[actix_rt::test]
async fn an_unsafe_token_fails_the_node_before_any_step_runs() {
    let world = World::new(&["s1"]).await;
    let admin = world.admin();
    let nodes = vec![world.nodes[0].clone(), Node::local("self")];
    admin.set_nodes(PROJECT, &nodes).await.expect("set nodes");
    let runner = Runner::start(world.work());
    let scratch = world.scratch();
    let first = scratch.join("first-step-ran");
    let canary = scratch.join("canary");
    let hostile = format!("$(touch {})", canary.display());
    let submit = |steps| SubmitExecution {
        options: [
            ("v".to_owned(), hostile.clone()),
            ("name".to_owned(), "../../canary".to_owned()),
        ]
        .into(),
        dispatch: Dispatch {
            keep_going: true,
            ..Dispatch::default()
        },
        ..SubmitExecution::new(steps, ".*")
    };
    let touch_first = Step::Command(CommandStep {
        command: format!("touch {}-${{node.name}}", first.display()),
    });
    let refused = [
        (
            Step::Command(CommandStep {
                command: "echo `echo ${option.v}`".into(),
            }),
            "the command's ${option.v} at byte offset 11 stands inside backticks",
        ),
        (
            Step::Copy(CopyStep {
                content_base64: "aGVsbG8K".into(),
                destination: format!("{}/sub/${{option.name}}", scratch.display()),
                mode: None,
            }),
            "gets a \"..\" component from a substituted value",
        ),
        (
            Step::Copy(CopyStep {
                content_base64: "aGVsbG8K".into(),
                destination: format!("{}/setuid", scratch.display()),
                mode: Some("4755".into()),
            }),
            "sets the setuid, setgid or sticky bit",
        ),
    ];
    for (step, message) in refused {
        let id = admin
            .submit_execution(PROJECT, &submit(vec![touch_first.clone(), step]))
            .await
            .expect("submit");
        let status = world.wait_terminal(id).await;
        assert_eq!(status.state, RunState::Failed, "{status:#?}");
        for node in ["s1", "self"] {
            let n = &status.nodes[node];
            assert_eq!(n.state, RunState::Failed, "{node}: {status:#?}");
            let text = n.message.as_deref().unwrap_or_default();
            assert!(text.contains(message), "{node}: {text}");
            assert!(text.contains("not run"), "{node}: {text}");
            let marker = format!("{}-{node}", first.display());
            assert!(
                !std::path::Path::new(&marker).exists(),
                "step 1 ran on {node}"
            );
        }
        assert!(!canary.exists(), "the injected command ran");
        assert!(!scratch.join("setuid").exists() && !world.work().join("canary").exists());
    }
    // The same command with the token where it can be quoted runs, and the
    // value stays data.
    let id = admin
        .submit_execution(
            PROJECT,
            &submit(vec![Step::Command(CommandStep {
                command: "echo \"[${option.v}]\"".into(),
            })]),
        )
        .await
        .expect("submit");
    let status = world.wait_terminal(id).await;
    let exit = runner.stop();
    assert!(exit.success(), "rdrunner exited {exit} after SIGTERM");
    assert_eq!(status.state, RunState::Succeeded, "{status:#?}");
    let output = admin.all_output(id).await.expect("output");
    let lines: Vec<&str> = output.iter().map(|e| e.text.as_str()).collect();
    assert_eq!(lines, vec![format!("[{hostile}]"); 2], "{output:#?}");
    assert!(!canary.exists(), "the injected command ran");
}
