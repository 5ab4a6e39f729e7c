//! The contenders rdrunner is measured against, run on the same sshd with the
//! same key, known_hosts and server settings: OpenSSH's own client in
//! parallel (`xargs -P`, the native floor), Ansible's ad hoc `raw` module, and
//! a plain `ssh node cmd > /dev/null` for raw throughput.

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::fixture::{node_host, SshTarget};

/// Whether `program` is on the PATH.
pub fn installed(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `true` on `count` nodes over OpenSSH, `parallel` at a time, with
/// `xargs -P`; returns the wall time. Every connection must succeed.
pub fn openssh_fan_out(
    nodes: &SshTarget,
    count: usize,
    parallel: usize,
) -> anyhow::Result<Duration> {
    // `ssh ARGS HOST true node-001`: each line is one connection, to the
    // node's address; its name rides along as an argument of `true`.
    let mut cmd = Command::new("xargs");
    cmd.arg("-P")
        .arg(parallel.to_string())
        .arg("-n")
        .arg("3")
        .arg("ssh")
        .args(&nodes.login_args);
    let names: String = (1..=count).fold(String::new(), |mut s, i| {
        let _ = writeln!(s, "{} true node-{i:03}", node_host(i));
        s
    });
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running xargs ssh")?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(names.as_bytes())?;
    let out = child.wait_with_output()?;
    let wall = start.elapsed();
    if !out.status.success() {
        bail!(
            "xargs -P {parallel} ssh failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(wall)
}

/// Where Mitogen for Ansible is looked for: `RDRUNNER_BENCH_MITOGEN`, else
/// `target/mitogen` (`pip install --target target/mitogen mitogen`); the
/// directory that holds its strategy plugins, when it is there.
pub fn mitogen_strategies() -> Option<std::path::PathBuf> {
    let base = std::env::var_os("RDRUNNER_BENCH_MITOGEN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/mitogen"));
    let dir = base.join("ansible_mitogen/plugins/strategy");
    dir.join("mitogen_linear.py").is_file().then_some(dir)
}

/// Runs `true` on `count` nodes with `ansible all -f FORKS -m raw -a true`;
/// returns the wall time. Ansible's connection sharing is turned off, as it
/// is for the other contenders, since all nodes are one server here. With
/// `mitogen` (its strategy plugins' directory), Ansible runs under Mitogen's
/// `mitogen_linear` strategy.
pub fn ansible_fan_out(
    nodes: &SshTarget,
    dir: &Path,
    count: usize,
    forks: usize,
    mitogen: Option<&Path>,
) -> anyhow::Result<Duration> {
    fs::create_dir_all(dir)?;
    let mut inventory = String::from("[bench]\n");
    for i in 1..=count {
        let _ = writeln!(
            inventory,
            "node-{i:03} ansible_host={} ansible_port={} ansible_user={}",
            node_host(i),
            nodes.port,
            nodes.user
        );
    }
    let inv = dir.join("inventory.ini");
    fs::write(&inv, inventory)?;
    let cfg = dir.join("ansible.cfg");
    fs::write(&cfg, "[defaults]\n")?;
    let ssh_args = nodes
        .options
        .iter()
        .map(|o| format!("-o {o}"))
        .collect::<Vec<_>>()
        .join(" ");
    let mut cmd = Command::new("ansible");
    if let Some(strategies) = mitogen {
        cmd.env("ANSIBLE_STRATEGY_PLUGINS", strategies)
            .env("ANSIBLE_STRATEGY", "mitogen_linear")
            .env("ANSIBLE_PYTHON_INTERPRETER", "/usr/bin/python3");
    }
    let start = Instant::now();
    let out = cmd
        .arg("all")
        .arg("-i")
        .arg(&inv)
        .arg("-f")
        .arg(forks.to_string())
        .arg("-m")
        .arg("raw")
        .arg("-a")
        .arg("true")
        .arg("--private-key")
        .arg(&nodes.key)
        .arg("-o")
        .env("ANSIBLE_CONFIG", &cfg)
        .env("ANSIBLE_HOME", dir.join("home"))
        .env("ANSIBLE_LOCAL_TEMP", dir.join("tmp"))
        .env("ANSIBLE_SSH_ARGS", &ssh_args)
        .env("ANSIBLE_HOST_KEY_CHECKING", "True")
        .env("ANSIBLE_GATHERING", "explicit")
        .env(
            "ANSIBLE_TIMEOUT",
            crate::fixture::CONNECT_TIMEOUT_S.to_string(),
        )
        .env("ANSIBLE_NOCOLOR", "1")
        .stdin(Stdio::null())
        .output()
        .context("running ansible")?;
    let wall = start.elapsed();
    if !out.status.success() {
        bail!(
            "ansible failed ({}): {}{}",
            out.status,
            tail(&String::from_utf8_lossy(&out.stdout)),
            tail(&String::from_utf8_lossy(&out.stderr))
        );
    }
    let ok = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("CHANGED") || l.contains("SUCCESS"))
        .count();
    if ok != count {
        bail!("ansible succeeded on {ok} of {count} nodes");
    }
    Ok(wall)
}

/// `ssh node 'CMD' > /dev/null`: the wall time of moving the command's
/// output over one plain OpenSSH session.
pub fn ssh_to_null(nodes: &SshTarget, command: &str) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let out = Command::new("ssh")
        .args(&nodes.args)
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .context("running ssh")?;
    let wall = start.elapsed();
    if !out.status.success() {
        bail!(
            "ssh {command:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(wall)
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(5)..].join("\n")
}
