//! The crate layering stated in docs/ARCHITECTURE.md, checked on the
//! resolved dependency graph: the actors crate knows nothing of HTTP, SSH
//! or TOML, and the reference control plane does not link the actor
//! runtime (actix) at all.

use std::process::Command;

/// The packages `package` links (normal dependencies, its default
/// features), as `name` strings.
fn linked(package: &str) -> Vec<String> {
    let out = Command::new(env!("CARGO"))
        .args(["tree", "--offline", "-e", "normal", "--prefix", "none"])
        .args(["--format", "{p}", "-p", package])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree -p {package} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

#[test]
fn the_actors_crate_has_no_http_ssh_or_toml_dependency() {
    let deps = linked("rdrunner-actors");
    assert!(
        deps.iter().any(|d| d == "actix"),
        "the runtime is the default: {deps:?}"
    );
    for banned in [
        "awc",
        "actix-web",
        "hyper",
        "reqwest",
        "ssh2",
        "libssh2-sys",
        "config",
        "toml",
    ] {
        assert!(
            !deps.iter().any(|d| d == banned),
            "rdrunner-actors links {banned}; it must know nothing of HTTP, SSH or TOML"
        );
    }
}

#[test]
fn the_control_plane_does_not_link_the_actor_runtime() {
    let deps = linked("rdrunner-harness");
    assert!(deps.iter().any(|d| d == "rdrunner-actors"));
    for banned in ["actix", "slog", "backoff"] {
        assert!(
            !deps.iter().any(|d| d == banned),
            "rdrunner-harness links {banned}: it must take only the model part of rdrunner-actors"
        );
    }
}
