//! The cost curves: how a cost grows with the work. Fan-out wall time by
//! node count (against OpenSSH, Ansible and Ansible under Mitogen, with the
//! one sshd's CPU per login), the runner's memory, threads and CPU by
//! concurrent SSH node steps, queue hand-off latency by operations queued
//! behind `maxRunning`, the control plane's load by long-polling replicas,
//! and report latency by aggregate output rate. Each measures every point
//! of its curve in one run, bounded in count and time, and hands the curve
//! to the report (table and SVG plot) besides its table rows.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use rdrunner_actors::model::{ReportBody, Stream};
use rdrunner_harness::{Cadence, CreateRunner, RunState};

use crate::fixture::{Nodes, RunnerOptions, RunnerProcess, PROJECT};
use crate::measure::{cpu_with_children, listen_overflows, proc_usage, threads, wall_ns, Samples};
use crate::peers;
use crate::plot::Curve;
use crate::report::Row;
use crate::suites::{
    all_succeeded, blocking, median, submission, wait_terminal, Env, ANSIBLE_HINT,
};

fn ms_f(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn cores() -> f64 {
    std::thread::available_parallelism().map_or(1, |n| n.get()) as f64
}

// ---- fan-out by node count, and what one sshd costs per login -------------

/// One contender's run on N nodes: its wall time and the CPU the nodes'
/// sshd spent meanwhile (every session that ended, its command included).
struct FanRun {
    wall: Duration,
    sshd_cpu: Option<Duration>,
    /// rdrunner's own CPU across the run (its runs only).
    runner_cpu: Option<Duration>,
}

/// The sshd's CPU so far (its own and its reaped sessions').
fn sshd_cpu(env: &Env) -> Option<Duration> {
    cpu_with_children(env.nodes.sshd_pid()?)
}

/// Runs `f` and measures the sshd's CPU across it. The sessions of the
/// run are reaped a moment after they end: wait for that before reading.
async fn with_sshd_cpu<F, Fut>(env: &Env, f: F) -> anyhow::Result<FanRun>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Duration>>,
{
    let before = sshd_cpu(env);
    let wall = f().await?;
    actix_rt::time::sleep(Duration::from_millis(300)).await;
    let after = sshd_cpu(env);
    Ok(FanRun {
        wall,
        sshd_cpu: before.zip(after).map(|(a, b)| b.saturating_sub(a)),
        runner_cpu: None,
    })
}

/// `true` on N nodes at full width (threadCount N, `xargs -P N`,
/// `ansible -f N`), N along the curve: rdrunner, OpenSSH's client under
/// `xargs -P` (the native floor), Ansible's `raw` module, and the same
/// under Mitogen's strategy when it is installed; and the sshd's CPU per
/// login, which bounds every contender, since all of them log in to the one
/// sshd on the same cores.
pub async fn fan_out(env: &Env) -> anyhow::Result<Vec<Row>> {
    let points: Vec<usize> = env
        .size()
        .pick(vec![10, 50, 200, 500], vec![10, 50], vec![3]);
    let reps_at = |n: usize| env.size().pick(if n <= 50 { 3 } else { 1 }, 1, 1);
    let largest = *points.last().expect("points");
    let mut nodes = env.nodes.ssh_nodes(largest);
    for (i, node) in nodes.iter_mut().enumerate() {
        for &n in &points {
            if i < n {
                node.tags.push(format!("first-{n}"));
            }
        }
    }
    let started = env
        .start(
            "fanout",
            Cadence::default(),
            &nodes,
            RunnerOptions::default(),
        )
        .await
        .map_err(|e| format!("{e:#}"));
    let have_ansible = peers::installed("ansible");
    let mitogen = peers::mitogen_strategies();
    let label = env.runner_label();

    let xs: Vec<f64> = points.iter().map(|&n| n as f64).collect();
    let mut curve = Curve::new(
        "fanout",
        "Fan-out wall time by node count (true on every node, all at once)",
        "nodes",
        &xs,
    );
    let c_ours = curve.column(label, "s", 2);
    let c_xargs = curve.column("xargs -P ssh", "s", 2);
    let c_ansible = curve.column("Ansible -m raw", "s", 2);
    let c_mitogen = curve.column("Ansible + Mitogen", "s", 2);
    let s_ours = curve.column(&format!("sshd CPU per login, {label}"), "ms", 1);
    let s_xargs = curve.column("sshd CPU per login, xargs", "ms", 1);
    let r_ours = curve.column(&format!("{label} CPU per login"), "ms", 1);
    let floor = curve.column("sshd-bound floor (sshd CPU / cores)", "s", 2);
    curve.panel(
        "wall time (s)",
        &[c_ours, c_xargs, c_ansible, c_mitogen, floor],
        true,
    );
    curve.panel("CPU per login (ms)", &[s_ours, s_xargs, r_ours], false);
    if !have_ansible {
        curve.note(format!("Ansible: {ANSIBLE_HINT}."));
    }
    if mitogen.is_none() {
        curve.note(
            "Ansible + Mitogen: not installed (`pip install --target target/mitogen mitogen`, \
             or point RDRUNNER_BENCH_MITOGEN at an installation).",
        );
    }
    if let Err(e) = &started {
        curve.note(format!("{label}: failed: {e}"));
    }

    let mut rows = Vec::new();
    for (i, &n) in points.iter().enumerate() {
        let bench = format!("fan-out, {n} nodes, {n} at a time");
        let mut ours = Vec::new();
        let mut xargs = Vec::new();
        let mut ansible = Vec::new();
        let mut mito = Vec::new();
        let mut failure = Vec::new();
        for _ in 0..reps_at(n) {
            if let Ok((plane, runner)) = &started {
                let filter = format!("tags: first-{n}");
                let cpu0 = proc_usage(runner.pid()).map(|u| u.cpu);
                let run = with_sshd_cpu(env, || async {
                    let exec = submission("true", &filter, n as u32);
                    let start = Instant::now();
                    let id = plane.admin.submit_execution(PROJECT, &exec).await?;
                    let (status, end) = wait_terminal(
                        plane,
                        id,
                        Duration::from_millis(1),
                        Duration::from_secs(300),
                    )
                    .await?;
                    all_succeeded(&status, n)?;
                    Ok(end - start)
                })
                .await;
                match run {
                    Ok(mut run) => {
                        let cpu1 = proc_usage(runner.pid()).map(|u| u.cpu);
                        run.runner_cpu = cpu0.zip(cpu1).map(|(a, b)| b.saturating_sub(a));
                        ours.push(run);
                    }
                    Err(e) => failure.push(format!("{label}: {e:#}")),
                }
            }
            let target = env.nodes.target();
            match with_sshd_cpu(env, || {
                blocking(move || peers::openssh_fan_out(&target, n, n))
            })
            .await
            {
                Ok(r) => xargs.push(r),
                Err(e) => failure.push(format!("xargs: {e:#}")),
            }
            if have_ansible {
                let target = env.nodes.target();
                let dir = env.work.join("ansible");
                match with_sshd_cpu(env, || {
                    blocking(move || peers::ansible_fan_out(&target, &dir, n, n, None))
                })
                .await
                {
                    Ok(r) => ansible.push(r),
                    Err(e) => failure.push(format!("Ansible: {e:#}")),
                }
            }
            if let (true, Some(strategies)) = (have_ansible, &mitogen) {
                let target = env.nodes.target();
                let dir = env.work.join("ansible-mitogen");
                let strategies = strategies.clone();
                match with_sshd_cpu(env, || {
                    blocking(move || peers::ansible_fan_out(&target, &dir, n, n, Some(&strategies)))
                })
                .await
                {
                    Ok(r) => mito.push(r),
                    Err(e) => failure.push(format!("Ansible + Mitogen: {e:#}")),
                }
            }
        }
        for f in &failure {
            curve.note(format!("{n} nodes: failed: {f}"));
            rows.push(Row::missing(&bench, "-", "-", &format!("failed: {f}")));
        }
        let med = |runs: &[FanRun]| -> Option<Duration> {
            (!runs.is_empty()).then(|| median(runs.iter().map(|r| r.wall).collect()))
        };
        let per_login = |runs: &[FanRun]| -> Option<Duration> {
            let cpu: Vec<Duration> = runs.iter().filter_map(|r| r.sshd_cpu).collect();
            (!cpu.is_empty()).then(|| median(cpu) / n as u32)
        };
        let (w_ours, w_xargs, w_ansible, w_mito) =
            (med(&ours), med(&xargs), med(&ansible), med(&mito));
        for (col, w) in [
            (c_ours, w_ours),
            (c_xargs, w_xargs),
            (c_ansible, w_ansible),
            (c_mitogen, w_mito),
        ] {
            if let Some(w) = w {
                curve.set(col, i, w.as_secs_f64());
            }
        }
        let login_ours = per_login(&ours);
        let login_xargs = per_login(&xargs);
        let runner_login = {
            let cpu: Vec<Duration> = ours.iter().filter_map(|r| r.runner_cpu).collect();
            (!cpu.is_empty()).then(|| median(cpu) / n as u32)
        };
        if let Some(c) = runner_login {
            curve.set(r_ours, i, ms_f(c));
            rows.push(Row::measured(
                &bench,
                label,
                "runner CPU per login (the client's half)",
                format!("{:.1} ms", ms_f(c)),
                "",
                None,
            ));
        }
        if let Some(c) = login_ours {
            curve.set(s_ours, i, ms_f(c));
        }
        if let Some(c) = login_xargs {
            curve.set(s_xargs, i, ms_f(c));
        }
        // What the sshd alone needs for n logins on these cores: no
        // contender can finish sooner while one sshd serves them all.
        let floor_d = login_ours.map(|c| c.mul_f64(n as f64 / cores()));
        if let Some(f) = floor_d {
            curve.set(floor, i, f.as_secs_f64());
        }
        if let (Some(o), Some(x)) = (w_ours, w_xargs) {
            let ratio = o.as_secs_f64() / x.as_secs_f64();
            rows.push(Row::measured(
                &bench,
                label,
                "wall time vs xargs -P ssh",
                format!(
                    "{:.2} s vs {:.2} s ({ratio:.2}x)",
                    o.as_secs_f64(),
                    x.as_secs_f64()
                ),
                "<= 1.2x",
                Some(ratio <= 1.2),
            ));
        }
        for (who, w) in [("Ansible -m raw", w_ansible), ("Ansible + Mitogen", w_mito)] {
            if let (Some(o), Some(a)) = (w_ours, w) {
                let speedup = a.as_secs_f64() / o.as_secs_f64();
                rows.push(Row::measured(
                    &bench,
                    label,
                    &format!("speed-up over {who}"),
                    format!(
                        "{speedup:.1}x ({:.2} s vs {:.2} s)",
                        a.as_secs_f64(),
                        o.as_secs_f64()
                    ),
                    if who == "Ansible -m raw" {
                        ">= 10x"
                    } else {
                        ""
                    },
                    (who == "Ansible -m raw").then_some(speedup >= 10.0),
                ));
            }
        }
        if let (Some(c), Some(f), Some(o)) = (login_ours, floor_d, w_ours) {
            rows.push(Row::measured(
                &bench,
                "sshd (the nodes' side)",
                "sshd CPU per login / sshd-bound floor / rdrunner wall per login",
                format!(
                    "{:.1} ms / {:.2} s ({n} × CPU per login ÷ {} cores) / {:.1} ms",
                    ms_f(c),
                    f.as_secs_f64(),
                    cores(),
                    ms_f(o) / n as f64
                ),
                "",
                None,
            ));
            if let Some(a) = w_ansible {
                rows.push(Row::measured(
                    &bench,
                    "sshd (the nodes' side)",
                    "largest speed-up over Ansible one sshd allows (Ansible wall ÷ floor)",
                    format!("{:.1}x", a.as_secs_f64() / f.as_secs_f64()),
                    "",
                    None,
                ));
            }
        }
    }
    env.curve(curve);
    Ok(rows)
}

// ---- runner resources by concurrent SSH node steps -------------------------

/// A FIFO the node steps read until the benchmark lets them go: a blocked
/// `cat` costs nothing while the runner's usage is sampled, and the hold
/// ends when the benchmark says, not after a guessed sleep.
struct Gate {
    path: std::path::PathBuf,
}

impl Gate {
    fn new(dir: &Path, name: &str) -> anyhow::Result<Gate> {
        let path = dir.join(name);
        let _ = fs::remove_file(&path);
        let st = Command::new("mkfifo")
            .arg("-m")
            .arg("666")
            .arg(&path)
            .status()
            .context("running mkfifo")?;
        if !st.success() {
            bail!("mkfifo {} failed", path.display());
        }
        Ok(Gate { path })
    }

    /// What a step runs to wait at the gate: it says `up` first, so that
    /// its session is known to run.
    fn wait_command(&self) -> String {
        format!("echo up; cat {} > /dev/null", self.path.display())
    }

    /// Opens the FIFO for writing and closes it: every reader waiting now
    /// reads end of file. Without a reader, nothing happens.
    fn open_once(&self) {
        use std::os::unix::fs::OpenOptionsExt;
        let _ = fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&self.path);
    }
}

/// The runner's usage at one moment.
#[derive(Debug, Clone, Copy)]
struct Snapshot {
    rss_kib: u64,
    threads: u64,
    cpu: Duration,
}

fn snapshot(runner: &RunnerProcess) -> anyhow::Result<Snapshot> {
    let u = proc_usage(runner.pid()).context("the runner exited")?;
    Ok(Snapshot {
        rss_kib: u.rss_kib,
        threads: threads(runner.pid()).unwrap_or(0),
        cpu: u.cpu,
    })
}

/// N SSH node steps held open at once (each one session to the sshd):
/// the runner's RSS, thread count and CPU, N along the curve.
pub async fn concurrent_steps(env: &Env) -> anyhow::Result<Vec<Row>> {
    let points: Vec<usize> = env
        .size()
        .pick(vec![10, 100, 500, 1000], vec![10, 100], vec![2, 5]);
    let hold = env.size().pick(
        Duration::from_secs(5),
        Duration::from_secs(2),
        Duration::from_millis(500),
    );
    let label = env.runner_label();
    let xs: Vec<f64> = points.iter().map(|&n| n as f64).collect();
    let mut curve = Curve::new(
        "steps",
        "Runner resources by concurrent SSH node steps (each holds one session)",
        "concurrent SSH node steps",
        &xs,
    );
    let c_rss = curve.column("runner RSS", "MiB", 1);
    let c_threads = curve.column("runner threads", "count", 0);
    let c_start = curve.column("runner CPU to start them", "ms per step", 2);
    let c_hold = curve.column("runner CPU while held", "% of a core", 2);
    let c_ramp = curve.column("time until all run", "s", 2);
    curve.panel("RSS (MiB)", &[c_rss], true);
    curve.panel("threads", &[c_threads], true);
    curve.panel("CPU", &[c_start, c_hold], true);
    curve.note(format!(
        "Every step runs `cat FIFO` on its node (one SSH session each, threadCount = N, \
         re-attach on as by default); the figures are taken after all N run and held for {} s.",
        hold.as_secs_f64()
    ));
    let mut rows = Vec::new();
    let mut idle: Option<Snapshot> = None;
    let mut last_full: Option<(usize, Snapshot)> = None;
    for (i, &n) in points.iter().enumerate() {
        let bench = format!("concurrent SSH steps, {n}");
        let nodes = env.nodes.ssh_nodes(n);
        let (plane, runner) = env
            .start(
                &format!("steps-{n}"),
                Cadence::default(),
                &nodes,
                RunnerOptions::default(),
            )
            .await?;
        actix_rt::time::sleep(Duration::from_millis(500)).await;
        let s0 = snapshot(&runner)?;
        if idle.is_none() {
            idle = Some(s0);
        }
        let gate = Gate::new(&env.nodes.remote_tmp, &format!("gate-{n}"))?;
        let overflows0 = listen_overflows();
        let t0 = Instant::now();
        let id = plane
            .admin
            .submit_execution(PROJECT, &submission(&gate.wait_command(), ".*", n as u32))
            .await?;
        let op = crate::suites::op_id(&plane.harness.execution(id).context("execution vanished")?)?;
        let deadline = t0 + Duration::from_secs(env.size().pick(180, 120, 30));
        let mut most = 0usize;
        let all_running = loop {
            let up = crate::suites::stdout_lines(&plane, &op)
                .iter()
                .filter(|l| l.trim() == "up")
                .count();
            most = most.max(up);
            if up == n {
                break Some(t0.elapsed());
            }
            let st = plane.harness.execution(id).context("execution vanished")?;
            let failed = st.nodes.iter().find(|(_, s)| s.state.is_terminal());
            if failed.is_some() || Instant::now() > deadline {
                let why = failed
                    .map(|(k, s)| {
                        format!(
                            "{k}: {:?} {}",
                            s.state,
                            s.message.clone().unwrap_or_default()
                        )
                    })
                    .unwrap_or_else(|| "no node step ended".into());
                let overflows = overflows0
                    .zip(listen_overflows())
                    .map(|(a, b)| b.saturating_sub(a));
                curve.note(format!(
                    "{n} steps: at most {most} sessions ran at once within {:.0} s; the first to \
                     end: {why}; connections dropped meanwhile at a full accept queue (this \
                     machine's TcpExt ListenOverflows): {}.",
                    t0.elapsed().as_secs_f64(),
                    overflows.map_or("unknown".into(), |o| o.to_string())
                ));
                break None;
            }
            actix_rt::time::sleep(Duration::from_millis(100)).await;
        };
        let s1 = snapshot(&runner)?;
        actix_rt::time::sleep(hold).await;
        let s2 = snapshot(&runner)?;
        let peak = proc_usage(runner.pid()).map_or(s2.rss_kib, |u| u.peak_rss_kib);
        // Let them go, and wait for the end (a step that opened the FIFO
        // after one opening is let go by the next).
        let end_by = Instant::now() + Duration::from_secs(60);
        let status = loop {
            gate.open_once();
            let st = plane.harness.execution(id).context("execution vanished")?;
            if st.state.is_terminal() || Instant::now() > end_by {
                break st;
            }
            actix_rt::time::sleep(Duration::from_millis(100)).await;
        };
        drop(runner);
        drop(plane);
        if let Some(ramp) = all_running {
            all_succeeded(&status, n)?;
            curve.set(c_ramp, i, ramp.as_secs_f64());
            curve.set(c_rss, i, s2.rss_kib.max(s1.rss_kib) as f64 / 1024.0);
            curve.set(c_threads, i, s2.threads.max(s1.threads) as f64);
            curve.set(c_start, i, ms_f(s1.cpu.saturating_sub(s0.cpu)) / n as f64);
            curve.set(
                c_hold,
                i,
                s2.cpu.saturating_sub(s1.cpu).as_secs_f64() / hold.as_secs_f64() * 100.0,
            );
            rows.push(Row::measured(
                &bench,
                label,
                "RSS / peak RSS / threads, all running",
                format!(
                    "{:.1} MiB / {:.1} MiB / {}",
                    s2.rss_kib as f64 / 1024.0,
                    peak as f64 / 1024.0,
                    s2.threads
                ),
                "",
                None,
            ));
            last_full = Some((n, s2));
        } else {
            rows.push(Row::missing(
                &bench,
                label,
                "all steps running at once",
                &format!("at most {most} of {n} sessions ran at once (see the curve's note)"),
            ));
            // A larger size would fail the same way, only later.
            for &bigger in &points[i + 1..] {
                curve.note(format!(
                    "{bigger} steps: not tried, since {n} did not all run."
                ));
            }
            break;
        }
    }
    if let (Some(idle), Some((n, full))) = (idle, last_full) {
        let per_rss = (full.rss_kib as f64 - idle.rss_kib as f64) / n as f64;
        let per_thread = (full.threads as f64 - idle.threads as f64) / n as f64;
        rows.push(Row::measured(
            &format!("concurrent SSH steps, {n}"),
            label,
            "cost per step: RSS, threads (against the idle runner)",
            format!("{per_rss:.0} KiB, {per_thread:.2} threads"),
            "",
            None,
        ));
    }
    env.curve(curve);
    Ok(rows)
}

// ---- queue hand-off latency by operations queued behind maxRunning ---------

/// The runner with `maxRunning = 1` and one operation holding the slot;
/// K + Q one-step operations (`date +%s%N` on a local node) queued behind
/// it at the control plane. Once the slot is let go, the runner takes the
/// queued operations one at a time: the time from one step's start to the
/// next one's is the dispatch cost of a queued operation (its end reported,
/// a check-in, an offer, a claim, a start). K hand-offs are measured, Q
/// along the curve; the runner's RSS is taken with the queue behind it.
pub async fn backlog(env: &Env) -> anyhow::Result<Vec<Row>> {
    let points: Vec<usize> = env
        .size()
        .pick(vec![0, 1000, 10000], vec![0, 1000, 10000], vec![10]);
    let k = env.size().pick(100usize, 30, 5);
    let label = env.runner_label();
    let xs: Vec<f64> = points.iter().map(|&q| q as f64 + 1.0).collect();
    let mut curve = Curve::new(
        "backlog",
        "Queue hand-off latency by operations queued behind maxRunning (1)",
        "operations queued (+1, for the log axis)",
        &xs,
    );
    let c_p50 = curve.column("hand-off p50", "ms", 1);
    let c_p99 = curve.column("hand-off p99", "ms", 1);
    let c_rss = curve.column("runner RSS", "MiB", 1);
    let c_cp = curve.column("control plane + benchmark CPU per hand-off", "ms", 2);
    curve.panel("latency (ms)", &[c_p50, c_p99], true);
    curve.panel("runner RSS (MiB)", &[c_rss], false);
    curve.note(format!(
        "x = Q + 1, where Q operations wait behind the {k} measured; a hand-off is one step's \
         start to the next queued operation's step start (`maxRunning = 1`, one local node)."
    ));
    let mut rows = Vec::new();
    for (i, &q) in points.iter().enumerate() {
        let bench = format!("queue hand-off, {q} queued behind");
        let nodes = Nodes::local_nodes("local", 1, "local");
        let (plane, mut runner) = env
            .start(
                &format!("backlog-{q}"),
                Cadence::default(),
                &nodes,
                RunnerOptions {
                    max_running: 1,
                    ..RunnerOptions::default()
                },
            )
            .await?;
        let go = env.work.join(format!("backlog-go-{q}"));
        let holder = plane
            .admin
            .submit_execution(
                PROJECT,
                &submission(
                    &format!("while [ ! -e {} ]; do sleep 0.05; done", go.display()),
                    ".*",
                    1,
                ),
            )
            .await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while plane.harness.execution(holder).map(|s| s.state) != Some(RunState::Running) {
            if Instant::now() > deadline {
                bail!("the holding operation did not start within 30 s");
            }
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        }
        // The queue, submitted 32 at a time over the admin API.
        let total = k + 1 + q;
        let exec = submission("date +%s%N", ".*", 1);
        let t_submit = Instant::now();
        let mut ids = Vec::with_capacity(total);
        let mut left = total;
        while left > 0 {
            let batch = left.min(32);
            let subs = (0..batch).map(|_| plane.admin.submit_execution(PROJECT, &exec));
            for r in futures_util::future::join_all(subs).await {
                ids.push(r?);
            }
            left -= batch;
            if t_submit.elapsed() > Duration::from_secs(300) {
                bail!("submitting {total} operations took over 300 s");
            }
        }
        actix_rt::time::sleep(Duration::from_millis(500)).await;
        let queued_rss = proc_usage(runner.pid())
            .context("the runner exited")?
            .rss_kib;
        let cp_cpu0 = proc_usage(std::process::id()).context("own /proc")?.cpu;
        fs::write(&go, b"")?;
        // Until K + 1 of the queued operations have run.
        let deadline = Instant::now() + Duration::from_secs(120);
        let done = loop {
            let obs = plane
                .harness
                .observe_runner(&plane.runner_id)
                .context("runner unknown to the harness")?;
            let done: Vec<(String, u64)> = obs
                .operations
                .iter()
                .filter(|o| o.execution_id != holder && o.state == RunState::Succeeded)
                .map(|o| (o.op_id.clone(), o.execution_id))
                .collect();
            if done.len() > k {
                break done;
            }
            if Instant::now() > deadline {
                bail!(
                    "only {} of {} queued operations ran within 120 s",
                    done.len(),
                    k + 1
                );
            }
            actix_rt::time::sleep(Duration::from_millis(100)).await;
        };
        let cp_cpu = proc_usage(std::process::id()).context("own /proc")?.cpu - cp_cpu0;
        let rss = proc_usage(runner.pid()).context("the runner exited")?;
        // The queue is left behind: no drain to wait for.
        let _ = runner.child.kill();
        let _ = runner.child.wait();
        let mut starts: Vec<u128> = Vec::new();
        for (op, _) in &done {
            let line = plane
                .harness
                .reports(op)
                .into_iter()
                .find_map(|r| match r.body {
                    ReportBody::Log(l) if l.stream == Stream::Stdout => Some(l.text),
                    _ => None,
                });
            let ts: u128 = line
                .as_deref()
                .and_then(|l| l.trim().parse().ok())
                .with_context(|| format!("operation {op} printed no timestamp"))?;
            starts.push(ts);
        }
        starts.sort();
        let gaps: Vec<Duration> = starts
            .windows(2)
            .take(k)
            .map(|w| Duration::from_nanos((w[1] - w[0]) as u64))
            .collect();
        let s = Samples::new(gaps);
        let (p50, p99) = (
            s.percentile(50.0).context("no hand-offs")?,
            s.percentile(99.0).context("no hand-offs")?,
        );
        curve.set(c_p50, i, ms_f(p50));
        curve.set(c_p99, i, ms_f(p99));
        curve.set(c_rss, i, rss.peak_rss_kib.max(queued_rss) as f64 / 1024.0);
        curve.set(c_cp, i, ms_f(cp_cpu) / done.len() as f64);
        rows.push(Row::measured(
            &bench,
            label,
            &format!("hand-off p50 / p99 (n={}), runner RSS", s.len()),
            format!(
                "{:.1} ms / {:.1} ms, {:.1} MiB",
                ms_f(p50),
                ms_f(p99),
                queued_rss as f64 / 1024.0
            ),
            "",
            None,
        ));
    }
    env.curve(curve);
    Ok(rows)
}

// ---- control plane load by long-polling replicas ---------------------------

/// Hidden flag: run as the check-in load generator (see [`load_child`]).
pub const LOAD_FLAG: &str = "--checkin-load";

/// R replicas long-polling the reference control plane, each a runner of
/// its own, from a light load generator (this program re-executed, speaking
/// the runner protocol: `/startup`, then `/checkin?waitMs=` in a loop), and
/// one more replica checking in without a hold every 50 ms as the probe.
/// The control plane runs in a process of its own (this program re-executed
/// around the reference control plane), so that its CPU and RSS are its own.
pub async fn replicas(env: &Env) -> anyhow::Result<Vec<Row>> {
    let points: Vec<usize> = env
        .size()
        .pick(vec![10, 100, 1000], vec![10, 100, 1000], vec![3]);
    let window = env.size().pick(
        Duration::from_secs(20),
        Duration::from_secs(5),
        Duration::from_secs(2),
    );
    let cadence = env.checkin_cadence();
    let hold = Duration::from_millis(cadence.long_poll_ms);
    let xs: Vec<f64> = points.iter().map(|&r| r as f64).collect();
    let mut curve = Curve::new(
        "replicas",
        "Control plane load by long-polling replicas",
        "replicas long-polling",
        &xs,
    );
    let c_probe50 = curve.column("probe check-in p50", "ms", 2);
    let c_probe99 = curve.column("probe check-in p99", "ms", 2);
    let c_late99 = curve.column("held check-in answered late, p99", "ms", 2);
    let c_cpu = curve.column("control plane CPU", "% of a core", 2);
    let c_rss = curve.column("control plane RSS", "MiB", 1);
    curve.panel(
        "check-in latency (ms)",
        &[c_probe50, c_probe99, c_late99],
        true,
    );
    curve.panel("control plane CPU (% of a core)", &[c_cpu], true);
    curve.panel("control plane RSS (MiB)", &[c_rss], false);
    curve.note(format!(
        "Each replica is a runner of its own holding check-ins of {} s (the default cadence); \
         the probe checks in without a hold every 50 ms; a window of {} s. The control plane and \
         the load generator run in processes of their own.",
        hold.as_secs_f64(),
        window.as_secs()
    ));
    let mut rows = Vec::new();
    for (i, &r) in points.iter().enumerate() {
        let bench = format!("control plane, {r} replicas long-polling");
        let mut cp = ControlPlaneChild::start(&cadence)?;
        let admin = rdrunner_harness::AdminClient::new(cp.base_url.clone(), cp.admin_token.clone());
        let mut creds = String::new();
        for k in 0..=r {
            let c = admin
                .create_runner(&CreateRunner {
                    name: format!("load-{k}"),
                    description: "check-in load".into(),
                    tags: vec![],
                    projects: Default::default(),
                })
                .await?;
            let token = c
                .credentials
                .lines()
                .find_map(|l| l.strip_prefix("RUNDECK_RUNNER_TOKEN="))
                .context("no token in the credentials")?;
            creds.push_str(&format!("{} {}\n", c.runner_id, token.trim()));
        }
        let file = env.work.join(format!("load-{r}.txt"));
        fs::write(&file, creds)?;
        let cp_pid = cp.child.id();
        let rss0 = proc_usage(cp_pid)
            .context("the control plane exited")?
            .rss_kib;
        let mut child = Command::new(std::env::current_exe()?)
            .arg(LOAD_FLAG)
            .arg(&cp.addr)
            .arg(&file)
            .arg(window.as_millis().to_string())
            .arg(hold.as_millis().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting the load generator")?;
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let next_line = |timeout: Duration| async move {
            let deadline = Instant::now() + timeout;
            loop {
                match rx.try_recv() {
                    Ok(l) => return Ok((l, rx)),
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                        bail!("the load generator ended early")
                    }
                    Err(_) if Instant::now() > deadline => bail!("the load generator is silent"),
                    Err(_) => actix_rt::time::sleep(Duration::from_millis(10)).await,
                }
            }
        };
        let (ready, rx) = next_line(Duration::from_secs(60)).await?;
        if ready != "ready" {
            bail!("the load generator said {ready:?}");
        }
        let cpu0 = proc_usage(cp_pid).context("the control plane exited")?.cpu;
        let t0 = Instant::now();
        let mut rss_max = 0;
        let result = {
            let deadline = Instant::now() + window + hold + Duration::from_secs(30);
            loop {
                rss_max = rss_max.max(proc_usage(cp_pid).map_or(0, |u| u.rss_kib));
                match rx.try_recv() {
                    Ok(l) => break l,
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                        let out = child.wait_with_output()?;
                        bail!(
                            "the load generator failed ({}): {}",
                            out.status,
                            String::from_utf8_lossy(&out.stderr).trim()
                        );
                    }
                    Err(_) if Instant::now() > deadline => {
                        let _ = child.kill();
                        bail!("the load generator did not finish in time");
                    }
                    Err(_) => actix_rt::time::sleep(Duration::from_millis(50)).await,
                }
            }
        };
        let cpu = proc_usage(cp_pid).context("the control plane exited")?.cpu - cpu0;
        let took = t0.elapsed();
        let _ = child.wait();
        cp.stop();
        let load = LoadResult::parse(&result)?;
        if load.errors > 0 {
            bail!("{} check-ins failed: {}", load.errors, load.first_error);
        }
        let cpu_pct = cpu.as_secs_f64() / took.as_secs_f64() * 100.0;
        curve.set(c_probe50, i, load.probe_p50_ms);
        curve.set(c_probe99, i, load.probe_p99_ms);
        curve.set(c_late99, i, load.late_p99_ms);
        curve.set(c_cpu, i, cpu_pct);
        curve.set(c_rss, i, rss_max as f64 / 1024.0);
        rows.push(Row::measured(
            &bench,
            "rdrunner-harness",
            &format!(
                "probe check-in p99 (n={}) / held answered late p99 (n={}) / CPU / RSS (+ over idle)",
                load.probe_n, load.held_n
            ),
            format!(
                "{:.2} ms / {:.2} ms / {cpu_pct:.1}% / {:.1} MiB (+{:.1})",
                load.probe_p99_ms,
                load.late_p99_ms,
                rss_max as f64 / 1024.0,
                (rss_max as f64 - rss0 as f64) / 1024.0
            ),
            "",
            None,
        ));
    }
    env.curve(curve);
    Ok(rows)
}

/// Hidden flag: run as the reference control plane alone (see
/// [`control_plane_child`]).
pub const CONTROL_PLANE_FLAG: &str = "--control-plane";

/// The reference control plane in a process of its own.
struct ControlPlaneChild {
    child: std::process::Child,
    addr: String,
    base_url: String,
    admin_token: String,
}

impl ControlPlaneChild {
    fn start(cadence: &Cadence) -> anyhow::Result<ControlPlaneChild> {
        use std::io::BufRead;
        let mut child = Command::new(std::env::current_exe()?)
            .arg(CONTROL_PLANE_FLAG)
            .arg(cadence.long_poll_ms.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the control plane")?;
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("piped"))
            .read_line(&mut line)
            .context("reading the control plane's address")?;
        let mut f = line.split_whitespace();
        let (Some(addr), Some(token)) = (f.next(), f.next()) else {
            let _ = child.kill();
            bail!("the control plane said {line:?}");
        };
        Ok(ControlPlaneChild {
            base_url: format!("http://{addr}"),
            addr: addr.to_owned(),
            admin_token: token.to_owned(),
            child,
        })
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ControlPlaneChild {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `bench --control-plane LONG_POLL_MS`: the reference control plane with
/// that hold; prints `ADDR ADMIN_TOKEN`, serves until its stdin closes.
pub fn control_plane_child(args: &[String]) -> anyhow::Result<()> {
    let [long_poll] = args else {
        bail!("usage: {CONTROL_PLANE_FLAG} LONG_POLL_MS");
    };
    let harness = rdrunner_harness::Harness::start(rdrunner_harness::HarnessConfig {
        cadence: Cadence {
            long_poll_ms: long_poll.parse().context("LONG_POLL_MS")?,
            ..Cadence::default()
        },
        ..Default::default()
    })?;
    println!("{} {}", harness.addr(), harness.admin_token());
    let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
    harness.stop();
    Ok(())
}

/// The load generator's one-line result: `probe N P50 P99 held N P99
/// errors N FIRST...`.
#[derive(Debug)]
struct LoadResult {
    probe_n: usize,
    probe_p50_ms: f64,
    probe_p99_ms: f64,
    held_n: usize,
    late_p99_ms: f64,
    errors: u64,
    first_error: String,
}

impl LoadResult {
    fn parse(line: &str) -> anyhow::Result<LoadResult> {
        let f: Vec<&str> = line.splitn(10, ' ').collect();
        let bad = || format!("the load generator said {line:?}");
        if f.len() < 9 || f[0] != "probe" || f[4] != "held" || f[7] != "errors" {
            bail!(bad());
        }
        let num = |i: usize| f[i].parse::<f64>().with_context(bad);
        Ok(LoadResult {
            probe_n: num(1)? as usize,
            probe_p50_ms: num(2)?,
            probe_p99_ms: num(3)?,
            held_n: num(5)? as usize,
            late_p99_ms: num(6)?,
            errors: num(8)? as u64,
            first_error: f.get(9).unwrap_or(&"").to_string(),
        })
    }
}

/// The load generator: `bench --checkin-load ADDR FILE WINDOW_MS HOLD_MS`.
/// FILE holds `RUNNER_ID TOKEN` lines: the first is the probe, every other
/// a replica that long-polls. Prints `ready` once every replica has
/// started, then one result line after the window.
pub fn load_child(args: &[String]) -> anyhow::Result<()> {
    let [addr, file, window, hold] = args else {
        bail!("usage: {LOAD_FLAG} ADDR FILE WINDOW_MS HOLD_MS");
    };
    let addr: std::net::SocketAddr = addr.parse().context("ADDR")?;
    let window = Duration::from_millis(window.parse().context("WINDOW_MS")?);
    let hold = Duration::from_millis(hold.parse().context("HOLD_MS")?);
    let creds: Vec<(String, String)> = fs::read_to_string(file)?
        .lines()
        .filter_map(|l| {
            let (a, b) = l.split_once(' ')?;
            Some((a.to_owned(), b.to_owned()))
        })
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(load::run(addr, creds, window, hold))
}

/// The load generator's protocol client: HTTP/1.1 over one kept-alive
/// connection per replica, nothing more than the runner protocol needs.
mod load {
    use std::cell::RefCell;
    use std::net::SocketAddr;
    use std::rc::Rc;
    use std::time::{Duration, Instant};

    use anyhow::{bail, Context as _};
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpStream;

    use crate::measure::Samples;

    struct Conn {
        stream: BufReader<TcpStream>,
        runner: String,
        token: String,
    }

    impl Conn {
        async fn open(addr: SocketAddr, runner: &str, token: &str) -> anyhow::Result<Conn> {
            let s = TcpStream::connect(addr).await.context("connecting")?;
            s.set_nodelay(true)?;
            Ok(Conn {
                stream: BufReader::new(s),
                runner: runner.into(),
                token: token.into(),
            })
        }

        /// One POST; the status and body.
        async fn post(&mut self, path: &str, body: &str) -> anyhow::Result<(u16, String)> {
            let req = format!(
                "POST /api/runner/v1{path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {}\r\nX-Runner-Id: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                self.token,
                self.runner,
                body.len()
            );
            self.stream.get_mut().write_all(req.as_bytes()).await?;
            let mut line = String::new();
            self.stream.read_line(&mut line).await?;
            let status: u16 = line
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .with_context(|| format!("a bad status line {line:?}"))?;
            let mut len = None;
            loop {
                line.clear();
                if self.stream.read_line(&mut line).await? == 0 {
                    bail!("the connection closed");
                }
                let l = line.trim_end();
                if l.is_empty() {
                    break;
                }
                if let Some((k, v)) = l.split_once(':') {
                    if k.eq_ignore_ascii_case("content-length") {
                        len = v.trim().parse::<usize>().ok();
                    }
                }
            }
            let len = len.context("an answer without Content-Length")?;
            let mut buf = vec![0; len];
            self.stream.read_exact(&mut buf).await?;
            Ok((status, String::from_utf8_lossy(&buf).into_owned()))
        }

        async fn startup(&mut self, n: usize) -> anyhow::Result<String> {
            let body = format!(
                r#"{{"hostname":"load-{n}","version":"0.1.0","pid":{},"maxRunning":1,"tags":[]}}"#,
                std::process::id()
            );
            let (status, answer) = self.post("/startup", &body).await?;
            if status != 200 {
                bail!("startup answered {status}: {answer}");
            }
            let v: serde_json::Value = serde_json::from_str(&answer)?;
            Ok(v["replicaId"].as_str().context("no replicaId")?.to_owned())
        }

        async fn checkin(&mut self, replica: &str, wait: Duration) -> anyhow::Result<()> {
            let body = format!(
                r#"{{"replicaId":"{replica}","running":[],"queued":0,"maxRunning":1,"uptimeS":1,"version":"0.1.0"}}"#
            );
            let (status, answer) = self
                .post(&format!("/checkin?waitMs={}", wait.as_millis()), &body)
                .await?;
            if status != 200 {
                bail!("check-in answered {status}: {answer}");
            }
            Ok(())
        }
    }

    #[derive(Default)]
    struct Tally {
        probe: Vec<Duration>,
        late: Vec<Duration>,
        errors: u64,
        first_error: Option<String>,
    }

    impl Tally {
        fn error(&mut self, e: anyhow::Error) {
            self.errors += 1;
            self.first_error.get_or_insert_with(|| format!("{e:#}"));
        }
    }

    pub async fn run(
        addr: SocketAddr,
        creds: Vec<(String, String)>,
        window: Duration,
        hold: Duration,
    ) -> anyhow::Result<()> {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async move {
                let (probe_creds, replica_creds) = creds.split_first().context("no credentials")?;
                // Start every replica, 50 at a time.
                let mut conns = Vec::new();
                for (k, chunk) in replica_creds.chunks(50).enumerate() {
                    let mut starts = Vec::new();
                    for (j, (runner, token)) in chunk.iter().enumerate() {
                        starts.push(async move {
                            let mut c = Conn::open(addr, runner, token).await?;
                            let id = c.startup(k * 50 + j).await?;
                            anyhow::Ok((c, id))
                        });
                    }
                    for r in futures_util::future::join_all(starts).await {
                        conns.push(r?);
                    }
                }
                let mut probe = Conn::open(addr, &probe_creds.0, &probe_creds.1).await?;
                let probe_id = probe.startup(usize::MAX).await?;
                println!("ready");
                let tally = Rc::new(RefCell::new(Tally::default()));
                let end = Instant::now() + window;
                let mut tasks = Vec::new();
                for (mut c, id) in conns {
                    let tally = tally.clone();
                    tasks.push(tokio::task::spawn_local(async move {
                        while Instant::now() < end {
                            let t = Instant::now();
                            match c.checkin(&id, hold).await {
                                Ok(()) => tally
                                    .borrow_mut()
                                    .late
                                    .push(t.elapsed().saturating_sub(hold)),
                                Err(e) => {
                                    tally.borrow_mut().error(e);
                                    return;
                                }
                            }
                        }
                    }));
                }
                let probe_tally = tally.clone();
                tasks.push(tokio::task::spawn_local(async move {
                    while Instant::now() < end {
                        let t = Instant::now();
                        match probe.checkin(&probe_id, Duration::ZERO).await {
                            Ok(()) => probe_tally.borrow_mut().probe.push(t.elapsed()),
                            Err(e) => {
                                probe_tally.borrow_mut().error(e);
                                return;
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }));
                for t in tasks {
                    t.await?;
                }
                let t = tally.borrow();
                let p = Samples::new(t.probe.clone());
                let l = Samples::new(t.late.clone());
                let ms = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0);
                println!(
                    "probe {} {:.3} {:.3} held {} {:.3} errors {} {}",
                    p.len(),
                    ms(p.percentile(50.0)),
                    ms(p.percentile(99.0)),
                    l.len(),
                    ms(l.percentile(99.0)),
                    t.errors,
                    t.first_error.clone().unwrap_or_default().replace('\n', " ")
                );
                anyhow::Ok(())
            })
            .await
    }
}

// ---- report latency by aggregate output rate --------------------------------

/// Bytes per line of the rate benchmark's output (999 characters + newline).
const RATE_LINE: u64 = 1000;

/// Ten SSH nodes, each its own execution, printing 1000-byte lines at an
/// even pace (a small Python program on the node) for a window, R MB/s in
/// all, R along the curve. The first line is the node's start time; line i
/// is due i / rate later. The benchmark counts the reports stored for each
/// operation every millisecond (their number, not their text), so a line's
/// latency is the moment its report was seen stored minus its due time.
pub async fn report_rate(env: &Env) -> anyhow::Result<Vec<Row>> {
    let rates: Vec<u64> = env.size().pick(vec![1, 10, 100], vec![1, 10, 100], vec![1]);
    let node_count = env.size().pick(10usize, 10, 2);
    let window_for = |rate: u64| {
        env.size()
            .pick(if rate >= 100 { 5.0 } else { 10.0 }, 2.0, 1.0)
    };
    let label = env.runner_label();
    let xs: Vec<f64> = rates.iter().map(|&r| r as f64).collect();
    let mut curve = Curve::new(
        "report-rate",
        &format!("Report latency by aggregate output rate ({node_count} SSH nodes)"),
        "aggregate output, MB/s",
        &xs,
    );
    let c_p50 = curve.column("printed → stored p50", "ms", 1);
    let c_p99 = curve.column("printed → stored p99", "ms", 1);
    let c_got = curve.column("rate stored (first line to last stored)", "MB/s", 1);
    curve.panel("latency (ms)", &[c_p50, c_p99], true);
    curve.panel("MB/s stored", &[c_got], true);
    curve.note(
        "A line's latency includes up to 1 ms of the node's pacing; a rate the runner cannot \
         keep up with shows as latency growing over the window.",
    );
    let mut rows = Vec::new();
    let nodes = env.nodes.ssh_nodes(node_count);
    for (i, &rate) in rates.iter().enumerate() {
        let window = window_for(rate);
        let per_node = rate as f64 * 1e6 / RATE_LINE as f64 / node_count as f64;
        let lines = (per_node * window).round() as u64;
        let bench = format!("report latency, {rate} MB/s over {node_count} nodes");
        let (plane, _runner) = env
            .start(
                &format!("report-rate-{rate}"),
                Cadence::default(),
                &nodes,
                RunnerOptions::default(),
            )
            .await?;
        // Line i is written once i / rate has passed since the first line.
        let program = [
            "import sys,time".to_owned(),
            format!(
                "o=sys.stdout.buffer;r={per_node};n={lines};l=b'x'*{}+b'\\n'",
                RATE_LINE - 1
            ),
            "t=time.time_ns();o.write(b'%d\\n'%t);o.flush();i=0".to_owned(),
            "while i<n:".to_owned(),
            " d=min(n,int((time.time_ns()-t)*r/1e9)+1)".to_owned(),
            " if d>i:".to_owned(),
            "  o.write(l*(d-i));o.flush();i=d".to_owned(),
            " else:".to_owned(),
            "  time.sleep(0.0005)".to_owned(),
        ]
        .join("\n");
        let cmd = format!("python3 -c '{}'", program.replace('\'', "'\\''"));
        let mut ops = Vec::new();
        for node in &nodes {
            let id = plane
                .admin
                .submit_execution(
                    PROJECT,
                    &submission(&cmd, &format!("name: {}", node.name), 1),
                )
                .await?;
            let st = plane.harness.execution(id).context("execution vanished")?;
            ops.push((id, crate::suites::op_id(&st)?));
        }
        // Per operation: the index of its first line's report, and its start.
        let mut first: Vec<Option<(u64, u128)>> = vec![None; ops.len()];
        let mut seen = vec![0u64; ops.len()];
        let mut samples = Vec::new();
        let t0 = Instant::now();
        let deadline = t0 + Duration::from_secs_f64(window * 6.0 + 60.0);
        loop {
            let obs = plane
                .harness
                .observe_runner(&plane.runner_id)
                .context("runner unknown to the harness")?;
            let now = wall_ns();
            for (k, (_, op)) in ops.iter().enumerate() {
                let Some(o) = obs.operations.iter().find(|o| &o.op_id == op) else {
                    continue;
                };
                if first[k].is_none() && o.reports_stored > 0 {
                    let reports = plane.harness.reports(op);
                    first[k] = reports.iter().enumerate().find_map(|(j, r)| match &r.body {
                        ReportBody::Log(l) if l.stream == Stream::Stdout => l
                            .text
                            .trim()
                            .parse::<u128>()
                            .ok()
                            .map(|t| (j as u64 + 1, t)),
                        _ => None,
                    });
                }
                let Some((base, start)) = first[k] else {
                    continue;
                };
                let stored = o.reports_stored.saturating_sub(base).min(lines);
                for line in seen[k]..stored {
                    let due = start + (line as f64 / per_node * 1e9) as u128;
                    samples.push(Duration::from_nanos(now.saturating_sub(due) as u64));
                }
                seen[k] = seen[k].max(stored);
            }
            if seen.iter().all(|&s| s >= lines) {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "at {rate} MB/s, {} of {} lines stored in time",
                    seen.iter().sum::<u64>(),
                    lines * ops.len() as u64
                );
            }
            actix_rt::time::sleep(Duration::from_millis(1)).await;
        }
        let all_stored = wall_ns();
        for (id, _) in &ops {
            let (status, _) = wait_terminal(
                &plane,
                *id,
                Duration::from_millis(20),
                Duration::from_secs(60),
            )
            .await?;
            all_succeeded(&status, 1)?;
        }
        let s = Samples::new(samples);
        let (p50, p99) = (
            s.percentile(50.0).context("no lines")?,
            s.percentile(99.0).context("no lines")?,
        );
        // From the first node's first line to the last line stored.
        let began = first.iter().flatten().map(|(_, t)| *t).min().unwrap_or(0);
        let span = Duration::from_nanos(all_stored.saturating_sub(began) as u64);
        let got = (lines * ops.len() as u64 * RATE_LINE) as f64 / 1e6 / span.as_secs_f64();
        curve.set(c_p50, i, ms_f(p50));
        curve.set(c_p99, i, ms_f(p99));
        curve.set(c_got, i, got);
        rows.push(Row::measured(
            &bench,
            &format!("{label}, SSH nodes"),
            &format!("printed → stored p50 / p99 (n={})", s.len()),
            format!("{:.1} ms / {:.1} ms", ms_f(p50), ms_f(p99)),
            "",
            None,
        ));
    }
    env.curve(curve);
    Ok(rows)
}
