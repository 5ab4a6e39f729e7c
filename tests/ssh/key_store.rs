//! The key store's rules, as an attacker who controls the node list would
//! test them: which file may be sent to which node, and which files are not
//! credentials at all. A refusal comes before any connection is made.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};

use crate::fixture::*;
use rdrunner::ssh::{KeyBinding, NodeSet, SshExecutor};
use rdrunner_actors::filter::NodeFilter;
use rdrunner_actors::{AbortSignal, ExecutorErrorKind, StepOutcome};

fn nodes(filter: &str) -> NodeSet {
    NodeSet(NodeFilter::parse(filter).unwrap())
}

fn with_attribute(f: &Fixture, attribute: &str, rel: &str) -> rdrunner_actors::model::Node {
    let mut node = f.node();
    node.attributes.clear();
    node.attributes.insert(attribute.to_owned(), rel.to_owned());
    node
}

/// Runs `true` on `node` redirected to a silent port; returns the error
/// and whether the port was dialled.
fn refused(
    f: &Fixture,
    node: rdrunner_actors::model::Node,
) -> (rdrunner_actors::ExecutorError, bool) {
    let silent = Listener::new();
    let run = f.run(
        request(silent.node(node), command_step("true")),
        &AbortSignal::new(),
    );
    (run.error().clone(), silent.was_dialled())
}

#[test]
fn a_password_file_holding_a_private_key_is_refused_before_connecting() {
    let f = Fixture::new();
    let key = fs::read_to_string(f.settings.key_store.join("id")).unwrap();
    let putty = "PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\n";
    for (name, content) in [("as-pw", key.as_str()), ("putty-pw", putty)] {
        write_secret(&f, name, content);
        let (e, dialled) = refused(&f, with_attribute(&f, "ssh-password-storage-path", name));
        assert_eq!(e.kind, ExecutorErrorKind::Config, "{name}: {e}");
        assert!(e.message.contains("private key"), "{name}: {e}");
        assert!(!dialled, "{name}: connected before refusing");
    }
}

#[test]
fn a_passphrase_file_is_not_a_password() {
    let f = Fixture::new();
    write_secret(&f, "id.passphrase", "open sesame\n");
    let (e, dialled) = refused(
        &f,
        with_attribute(&f, "ssh-password-storage-path", "id.passphrase"),
    );
    assert_eq!(e.kind, ExecutorErrorKind::Config, "{e}");
    assert!(e.message.contains("passphrase"), "{e}");
    assert!(!dialled);
}

#[test]
fn secret_files_open_to_group_or_others_are_refused() {
    let f = Fixture::new();
    let key = f.settings.key_store.join("id");
    let pw = write_secret(&f, "pw", "hunter2\n");
    for (attribute, rel, path) in [
        ("ssh-key-storage-path", "id", &key),
        ("ssh-password-storage-path", "pw", &pw),
    ] {
        for mode in [0o640, 0o604, 0o620] {
            fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
            let (e, dialled) = refused(&f, with_attribute(&f, attribute, rel));
            assert_eq!(e.kind, ExecutorErrorKind::Config, "{rel} {mode:o}: {e}");
            assert!(
                e.message.contains(&format!("chmod 600 {}", path.display())),
                "{rel} {mode:o}: {e}"
            );
            assert!(!dialled, "{rel} {mode:o}: connected");
        }
        fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
    }
    // At 0600 the key works.
    let run = f.run_command("echo ok");
    assert_eq!(run.outcome(), &StepOutcome::exited(0));
}

#[test]
fn symlinks_that_leave_the_key_store_are_refused() {
    let f = Fixture::new();
    let outside = f.dir.path().join("outside_key");
    fs::copy(f.settings.key_store.join("id"), &outside).unwrap();
    symlink(&outside, f.settings.key_store.join("escape")).unwrap();
    fs::create_dir(f.dir.path().join("elsewhere")).unwrap();
    fs::copy(&outside, f.dir.path().join("elsewhere/id")).unwrap();
    symlink(
        f.dir.path().join("elsewhere"),
        f.settings.key_store.join("dir"),
    )
    .unwrap();
    for rel in ["escape", "dir/id"] {
        let (e, dialled) = refused(&f, with_attribute(&f, "ssh-key-storage-path", rel));
        assert_eq!(e.kind, ExecutorErrorKind::Config, "{rel}: {e}");
        assert!(e.message.contains("outside the key store"), "{rel}: {e}");
        assert!(!dialled, "{rel}: connected");
    }
    // A link that stays inside the store is followed.
    symlink("id", f.settings.key_store.join("alias")).unwrap();
    let node = with_attribute(&f, "ssh-key-storage-path", "alias");
    let run = f.run(request(node, command_step("echo ok")), &AbortSignal::new());
    assert_eq!(run.outcome(), &StepOutcome::exited(0));
}

#[test]
fn a_key_store_others_can_write_to_is_refused() {
    let f = Fixture::new();
    let store = &f.settings.key_store;
    for mode in [0o775, 0o757] {
        fs::set_permissions(store, fs::Permissions::from_mode(mode)).unwrap();
        let (e, dialled) = refused(&f, f.node());
        assert_eq!(e.kind, ExecutorErrorKind::Config, "{mode:o}: {e}");
        assert!(
            e.message
                .contains(&format!("chmod go-w {}", store.display())),
            "{mode:o}: {e}"
        );
        assert!(!dialled);
    }
    // Readable by others is fine: each file is private by its own mode.
    fs::set_permissions(store, fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(f.run_command("true").outcome(), &StepOutcome::exited(0));
}

#[test]
fn a_key_is_used_only_for_the_nodes_its_binding_names() {
    let mut f = Fixture::new();
    f.settings.key_bindings = vec![KeyBinding {
        path: "id".to_owned(),
        nodes: nodes("name: db.*"),
    }];
    // node-1 is not bound: refused before any connection.
    let (e, dialled) = refused(&f, f.node());
    assert_eq!(e.kind, ExecutorErrorKind::Config, "{e}");
    assert!(
        e.message.contains("ssh.keyBindings") && e.message.contains("name: db.*"),
        "{e}"
    );
    assert!(!dialled, "connected with an unbound key");
    // Also not through a symlink to the bound file.
    std::os::unix::fs::symlink("id", f.settings.key_store.join("alias")).unwrap();
    let (e, dialled) = refused(&f, with_attribute(&f, "ssh-key-storage-path", "alias"));
    assert!(e.message.contains("'alias'"), "{e}");
    assert!(!dialled);
    // A bound node logs in with it.
    let mut db = f.node();
    db.name = "db1".to_owned();
    let run = f.run(request(db, command_step("echo ok")), &AbortSignal::new());
    assert_eq!(run.outcome(), &StepOutcome::exited(0));
    assert_eq!(run.stdout(), vec!["ok"]);
}

#[test]
fn allowed_nodes_binds_every_key_store_file() {
    let mut f = Fixture::new();
    f.settings.allowed_nodes = Some(nodes("name: web.*"));
    write_secret(&f, "pw", "hunter2\n");
    for (attribute, rel) in [
        ("ssh-key-storage-path", "id"),
        ("ssh-password-storage-path", "pw"),
    ] {
        let (e, dialled) = refused(&f, with_attribute(&f, attribute, rel));
        assert_eq!(e.kind, ExecutorErrorKind::Config, "{rel}: {e}");
        assert!(e.message.contains("runner.allowedNodes"), "{rel}: {e}");
        assert!(!dialled);
    }
    // A binding narrows allowedNodes, it cannot widen it.
    f.settings.key_bindings = vec![KeyBinding {
        path: "id".to_owned(),
        nodes: nodes(".*"),
    }];
    let (e, _) = refused(&f, f.node());
    assert!(e.message.contains("runner.allowedNodes"), "{e}");
    let mut web = f.node();
    web.name = "web1".to_owned();
    let exec = SshExecutor::new(f.settings.clone(), logger());
    let run = run_with(
        &exec,
        &request(web, command_step("true")),
        &AbortSignal::new(),
    );
    assert_eq!(run.outcome(), &StepOutcome::exited(0));
}
