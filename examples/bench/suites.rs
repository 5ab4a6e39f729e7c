//! The benchmarks of single figures (the cost curves are in curves.rs). Each starts its own control plane (with the cadence
//! it needs) and a fresh runner, measures, checks that what it measured
//! really happened (every node step succeeded, every line arrived), and
//! returns table rows.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use rand::Rng;
use rdrunner_actors::model::{CommandStep, Dispatch, Node, ReportBody, Step, Stream};
use rdrunner_harness::{Cadence, ExecutionStatus, RunState, SubmitExecution};

use crate::fixture::{
    free_loopback_addr, release_binary, Nodes, Plane, RunnerKind, RunnerOptions, RunnerProcess,
    Scraper, PROJECT,
};
use crate::measure::{mib, ms, proc_usage, wall_ns, Samples};
use crate::peers;
use crate::report::Row;
use crate::{Args, Size};

/// What every benchmark gets.
pub struct Env {
    pub args: Args,
    pub nodes: Nodes,
    pub kind: RunnerKind,
    pub work: PathBuf,
    /// The cost curves measured so far, for the report and the plots.
    pub curves: std::cell::RefCell<Vec<crate::plot::Curve>>,
}

impl Env {
    pub(crate) fn size(&self) -> Size {
        self.args.size
    }

    /// The control plane's cadence for the idle and load benchmarks: the
    /// default, but a smoke run holds check-ins 1 s so that its few seconds
    /// see several of them.
    pub(crate) fn checkin_cadence(&self) -> Cadence {
        self.size().pick(
            Cadence::default(),
            Cadence::default(),
            Cadence {
                long_poll_ms: 1000,
                ..Cadence::default()
            },
        )
    }

    /// Hands a measured curve to the report.
    pub(crate) fn curve(&self, c: crate::plot::Curve) {
        self.curves.borrow_mut().push(c);
    }

    pub(crate) fn runner_label(&self) -> &'static str {
        match self.kind {
            RunnerKind::Binary(_) => "rdrunner",
            RunnerKind::InProcess => "rdrunner (in-process)",
        }
    }

    /// A control plane with `nodes` and a runner checked in to it.
    pub(crate) async fn start(
        &self,
        name: &str,
        cadence: Cadence,
        nodes: &[Node],
        opts: RunnerOptions,
    ) -> anyhow::Result<(Plane, RunnerProcess)> {
        let plane = Plane::start(cadence, nodes).await?;
        let runner = RunnerProcess::start(
            &self.kind,
            &self.work.join(name),
            &plane,
            &self.nodes,
            &opts,
        )
        .await?;
        Ok((plane, runner))
    }
}

pub async fn run(name: &str, env: &Env) -> anyhow::Result<Vec<Row>> {
    match name {
        "dispatch" => dispatch(env).await,
        "report" => report_latency(env).await,
        "fanout" => crate::curves::fan_out(env).await,
        "steps" => crate::curves::concurrent_steps(env).await,
        "backlog" => crate::curves::backlog(env).await,
        "replicas" => crate::curves::replicas(env).await,
        "report-rate" => crate::curves::report_rate(env).await,
        "throughput" => throughput(env).await,
        "footprint" => footprint(env).await,
        "jitter" => jitter(env).await,
        other => bail!("no benchmark named {other}"),
    }
}

pub(crate) fn command(cmd: &str) -> Vec<Step> {
    vec![Step::Command(CommandStep {
        command: cmd.to_owned(),
    })]
}

pub(crate) fn submission(cmd: &str, filter: &str, threads: u32) -> SubmitExecution {
    SubmitExecution {
        dispatch: Dispatch {
            thread_count: threads,
            keep_going: true,
            ..Dispatch::default()
        },
        ..SubmitExecution::new(command(cmd), filter)
    }
}

/// Polls the harness (in this process, no HTTP) until the execution is
/// terminal; `every` bounds how late the end is seen.
pub(crate) async fn wait_terminal(
    plane: &Plane,
    id: u64,
    every: Duration,
    timeout: Duration,
) -> anyhow::Result<(ExecutionStatus, Instant)> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = plane.harness.execution(id) {
            if s.state.is_terminal() {
                return Ok((s, Instant::now()));
            }
        }
        if Instant::now() > deadline {
            bail!("execution {id} did not end within {timeout:?}");
        }
        actix_rt::time::sleep(every).await;
    }
}

/// Fails unless every node of the execution succeeded, `expected` of them.
pub(crate) fn all_succeeded(status: &ExecutionStatus, expected: usize) -> anyhow::Result<()> {
    let ok = status
        .nodes
        .values()
        .filter(|n| n.state == RunState::Succeeded)
        .count();
    if status.state != RunState::Succeeded || ok != expected {
        let sample = status
            .nodes
            .iter()
            .find(|(_, n)| n.state != RunState::Succeeded)
            .map(|(k, n)| {
                format!(
                    "{k}: {:?} {}",
                    n.state,
                    n.message.clone().unwrap_or_default()
                )
            })
            .unwrap_or_default();
        bail!(
            "execution {} ended {:?} with {ok} of {expected} nodes succeeded ({sample})",
            status.id,
            status.state
        );
    }
    Ok(())
}

pub(crate) fn op_id(status: &ExecutionStatus) -> anyhow::Result<String> {
    status
        .operations
        .first()
        .map(|o| o.id.clone())
        .context("the execution has no operation")
}

/// The stdout lines stored for an operation.
pub(crate) fn stdout_lines(plane: &Plane, op: &str) -> Vec<String> {
    plane
        .harness
        .reports(op)
        .into_iter()
        .filter_map(|r| match r.body {
            ReportBody::Log(l) if l.stream == Stream::Stdout => Some(l.text),
            _ => None,
        })
        .collect()
}

pub(crate) fn ns_to_duration(later: u128, earlier: u128) -> anyhow::Result<Duration> {
    if later < earlier {
        bail!("a node timestamp ({later} ns) precedes its submission ({earlier} ns)");
    }
    Ok(Duration::from_nanos((later - earlier) as u64))
}

pub(crate) fn latency_rows(
    bench: &str,
    contender: &str,
    what: &str,
    s: &Samples,
    p50_target: Option<Duration>,
    p99_target: Option<Duration>,
    with_max: bool,
) -> Vec<Row> {
    let mut rows = Vec::new();
    let n = s.len();
    let mut one = |label: &str, v: Option<Duration>, target: Option<Duration>| {
        let Some(v) = v else {
            rows.push(Row::missing(bench, contender, label, "no samples"));
            return;
        };
        let (t, met) = match target {
            Some(t) => (format!("<= {}", ms(t)), Some(v <= t)),
            None => (String::new(), None),
        };
        rows.push(Row::measured(
            bench,
            contender,
            &format!("{what} {label} (n={n})"),
            ms(v),
            &t,
            met,
        ));
    };
    one("p50", s.percentile(50.0), p50_target);
    one("p99", s.percentile(99.0), p99_target);
    if with_max {
        one("max", s.max(), None);
    }
    rows
}

// ---- 1. dispatch latency -------------------------------------------------

async fn dispatch(env: &Env) -> anyhow::Result<Vec<Row>> {
    let (long_ops, plain_ops) = env.size().pick((200, 200), (40, 15), (3, 2));
    let mut rows = Vec::new();
    let label = env.runner_label();
    match dispatch_samples(env, true, long_ops).await {
        Ok(s) => rows.extend(latency_rows(
            "dispatch",
            &format!("{label}, long polling"),
            "submit → step start",
            &s,
            Some(Duration::from_millis(10)),
            Some(Duration::from_millis(50)),
            true,
        )),
        Err(e) => rows.push(Row::failed("dispatch (long polling)", &format!("{e:#}"))),
    }
    match dispatch_samples(env, false, plain_ops).await {
        Ok(s) => rows.extend(latency_rows(
            "dispatch",
            &format!("{label}, 5 s polling"),
            "submit → step start",
            &s,
            None,
            None,
            true,
        )),
        Err(e) => rows.push(Row::failed("dispatch (5 s polling)", &format!("{e:#}"))),
    }
    Ok(rows)
}

/// Latency from submitting an execution to its step (`date +%s%N` on a
/// local node) starting. With long polling the executions go one at a time,
/// each after a random pause; with plain polling they arrive at random
/// times independent of the runner's polling phase.
async fn dispatch_samples(env: &Env, long: bool, ops: usize) -> anyhow::Result<Samples> {
    let cadence = if long {
        Cadence::default()
    } else {
        Cadence {
            long_poll_ms: 0,
            ..Cadence::default()
        }
    };
    let nodes = Nodes::local_nodes("local", 1, "local");
    let name = if long {
        "dispatch-long"
    } else {
        "dispatch-plain"
    };
    let (plane, _runner) = env
        .start(
            name,
            cadence,
            &nodes,
            RunnerOptions {
                long_polling: long,
                ..RunnerOptions::default()
            },
        )
        .await?;
    let exec = submission("date +%s%N", ".*", 1);
    let mut rng = rand::thread_rng();
    let mut submitted = Vec::with_capacity(ops);
    for _ in 0..ops {
        // A random pause decouples submissions from the runner's phase.
        let pause = if long {
            rng.gen_range(0..300)
        } else {
            rng.gen_range(0..500)
        };
        actix_rt::time::sleep(Duration::from_millis(pause)).await;
        let at = wall_ns();
        let id = plane.admin.submit_execution(PROJECT, &exec).await?;
        submitted.push((id, at));
        if long {
            let (status, _) = wait_terminal(
                &plane,
                id,
                Duration::from_millis(2),
                Duration::from_secs(30),
            )
            .await?;
            all_succeeded(&status, 1)?;
        }
    }
    let mut samples = Vec::with_capacity(ops);
    for (id, at) in submitted {
        let (status, _) = wait_terminal(
            &plane,
            id,
            Duration::from_millis(20),
            Duration::from_secs(60),
        )
        .await?;
        all_succeeded(&status, 1)?;
        let lines = stdout_lines(&plane, &op_id(&status)?);
        let started: u128 = lines
            .first()
            .and_then(|l| l.trim().parse().ok())
            .with_context(|| format!("execution {id} printed no timestamp: {lines:?}"))?;
        samples.push(ns_to_duration(started, at)?);
    }
    Ok(Samples::new(samples))
}

// ---- 2. report latency ---------------------------------------------------

/// Latency from a line being printed on an SSH node (`date +%s%N`) to its
/// report being stored at the control plane, seen by polling the harness's
/// store every millisecond.
/// Report latency with re-attach on (the default: the step runs detached
/// and its files are followed) and off (output read from the connection),
/// in one run, so that the cost of surviving a dropped connection shows.
async fn report_latency(env: &Env) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for reattach in [true, false] {
        rows.extend(report_latency_with(env, reattach).await?);
    }
    Ok(rows)
}

fn reattach_label(env: &Env, reattach: bool) -> String {
    let on_off = if reattach { "on" } else { "off" };
    format!("{}, re-attach {on_off}", env.runner_label())
}

async fn report_latency_with(env: &Env, reattach: bool) -> anyhow::Result<Vec<Row>> {
    let lines = env.size().pick(1000, 200, 20);
    let nodes = env.nodes.ssh_nodes(1);
    let (plane, _runner) = env
        .start(
            if reattach {
                "report"
            } else {
                "report-attached"
            },
            Cadence::default(),
            &nodes,
            RunnerOptions {
                reattach,
                ..RunnerOptions::default()
            },
        )
        .await?;
    let cmd = format!("i=0; while [ $i -lt {lines} ]; do date +%s%N; sleep 0.01; i=$((i+1)); done");
    let id = plane
        .admin
        .submit_execution(PROJECT, &submission(&cmd, ".*", 1))
        .await?;
    let op = op_id(&plane.harness.execution(id).context("execution vanished")?)?;
    let mut seen = 0usize;
    let mut samples = Vec::with_capacity(lines);
    let deadline = Instant::now() + Duration::from_secs(60 + lines as u64 / 20);
    loop {
        let stored = plane.harness.reports(&op);
        let now = wall_ns();
        for r in &stored[seen.min(stored.len())..] {
            if let ReportBody::Log(l) = &r.body {
                if l.stream == Stream::Stdout {
                    let printed: u128 = l
                        .text
                        .trim()
                        .parse()
                        .with_context(|| format!("not a timestamp: {:?}", l.text))?;
                    samples.push(ns_to_duration(now, printed)?);
                }
            }
        }
        seen = stored.len();
        if stored.last().is_some_and(|r| r.is_terminal()) {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the operation did not end in time ({} lines stored)",
                samples.len()
            );
        }
        actix_rt::time::sleep(Duration::from_millis(1)).await;
    }
    let (status, _) = wait_terminal(
        &plane,
        id,
        Duration::from_millis(10),
        Duration::from_secs(10),
    )
    .await?;
    all_succeeded(&status, 1)?;
    if samples.len() != lines {
        bail!("{} of {lines} lines arrived", samples.len());
    }
    Ok(latency_rows(
        "report",
        &format!("{}, SSH node", reattach_label(env, reattach)),
        "printed → stored",
        &Samples::new(samples),
        Some(Duration::from_millis(50)),
        Some(Duration::from_millis(250)),
        true,
    ))
}

// ---- 3. fan-out ----------------------------------------------------------

pub(crate) const ANSIBLE_HINT: &str =
    "not installed (install with apt-get install -y ansible-core)";

/// Runs a peer (a blocking child process) off the actix thread, so the
/// control plane's clients stay served meanwhile.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    actix_rt::task::spawn_blocking(f)
        .await
        .map_err(|e| anyhow::anyhow!("a peer's thread failed: {e}"))?
}

pub(crate) fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

// ---- 4. log throughput ---------------------------------------------------

/// Bytes per output line of the throughput step (999 characters + newline).
const LINE_BYTES: u64 = 1000;

async fn throughput(env: &Env) -> anyhow::Result<Vec<Row>> {
    let size: u64 = env.size().pick(1_000_000_000, 100_000_000, 1_000_000);
    let cmd = format!(
        "yes \"$(printf '%0{}d' 0)\" | head -c {size}",
        LINE_BYTES - 1
    );
    let nodes = env.nodes.ssh_nodes(1);
    let mut rows = Vec::new();
    let bench = format!("log throughput, {} MB", size / 1_000_000);

    let target = env.nodes.target();
    let raw_cmd = cmd.clone();
    let raw = blocking(move || peers::ssh_to_null(&target, &raw_cmd)).await?;
    let raw_rate = size as f64 / 1e6 / raw.as_secs_f64();
    rows.push(Row::measured(
        &bench,
        "ssh node cmd > /dev/null",
        "throughput",
        format!("{raw_rate:.0} MB/s"),
        "",
        None,
    ));

    for reattach in [true, false] {
        rows.extend(throughput_with(env, reattach, &cmd, size, &nodes, raw_rate, &bench).await?);
    }
    Ok(rows)
}

/// The runner's half of the throughput benchmark, with re-attach on or off.
async fn throughput_with(
    env: &Env,
    reattach: bool,
    cmd: &str,
    size: u64,
    nodes: &[Node],
    raw_rate: f64,
    bench: &str,
) -> anyhow::Result<Vec<Row>> {
    let lines = size / LINE_BYTES;
    let label = reattach_label(env, reattach);
    let mut rows = Vec::new();
    let (plane, runner) = match env
        .start(
            if reattach {
                "throughput"
            } else {
                "throughput-attached"
            },
            Cadence::default(),
            nodes,
            RunnerOptions {
                reattach,
                ..RunnerOptions::default()
            },
        )
        .await
    {
        Ok(started) => started,
        Err(e) => {
            rows.push(Row::missing(
                bench,
                &label,
                "throughput",
                &format!("failed: {e:#}"),
            ));
            return Ok(rows);
        }
    };
    let runner_cpu0 = proc_usage(runner.pid()).context("runner gone")?.cpu;
    let own_cpu0 = proc_usage(std::process::id()).context("own /proc")?.cpu;
    let start = Instant::now();
    let id = plane
        .admin
        .submit_execution(PROJECT, &submission(cmd, ".*", 1))
        .await?;
    let mut peak_sampled = 0;
    let deadline = Instant::now() + Duration::from_secs(1800);
    let (status, end) = loop {
        if let Some(u) = proc_usage(runner.pid()) {
            peak_sampled = peak_sampled.max(u.rss_kib);
        }
        if let Some(s) = plane.harness.execution(id) {
            if s.state.is_terminal() {
                break (s, Instant::now());
            }
        }
        if Instant::now() > deadline {
            bail!(
                "the {} MB step did not end within 30 minutes",
                size / 1_000_000
            );
        }
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    };
    let wall = end - start;
    let usage = proc_usage(runner.pid()).context("runner gone")?;
    let own_cpu = proc_usage(std::process::id()).context("own /proc")?.cpu - own_cpu0;
    all_succeeded(&status, 1)?;
    let stored = plane
        .harness
        .observe_runner(&plane.runner_id)
        .context("runner unknown to the harness")?
        .reports_stored;
    // One log report per line, plus the node and operation state reports.
    if stored < lines {
        bail!("only {stored} reports stored for {lines} lines");
    }
    let rate = size as f64 / 1e6 / wall.as_secs_f64();
    rows.push(Row::measured(
        bench,
        &label,
        "throughput (node → stored at control plane)",
        format!("{rate:.0} MB/s ({lines} lines in {})", ms(wall)),
        "",
        None,
    ));
    let share = rate / raw_rate;
    rows.push(Row::measured(
        bench,
        &label,
        "vs raw ssh",
        format!("{:.0}%", share * 100.0),
        ">= 80%",
        Some(share >= 0.8),
    ));
    rows.push(Row::measured(
        bench,
        &label,
        "runner peak RSS (VmHWM)",
        mib(usage.peak_rss_kib.max(peak_sampled)),
        "<= 64 MiB",
        Some(usage.peak_rss_kib.max(peak_sampled) <= 64 * 1024),
    ));
    rows.push(Row::measured(
        bench,
        &label,
        "CPU time: runner / control plane + bench",
        format!(
            "{:.1} s / {:.1} s over {:.1} s",
            (usage.cpu - runner_cpu0).as_secs_f64(),
            own_cpu.as_secs_f64(),
            wall.as_secs_f64()
        ),
        "",
        None,
    ));
    Ok(rows)
}

// ---- 5. footprint --------------------------------------------------------

async fn footprint(env: &Env) -> anyhow::Result<Vec<Row>> {
    let window = Duration::from_secs(env.size().pick(60, 10, 2));
    let label = env.runner_label();
    let bench = format!("footprint, idle {} s", window.as_secs());
    // Two runners idle over the same window, so that what the machine does
    // meanwhile weighs on both alike: one without the metrics endpoint, one
    // with it on and scraped every second.
    let (plane, runner) = env
        .start(
            "footprint",
            env.checkin_cadence(),
            &[],
            RunnerOptions::default(),
        )
        .await?;
    let metrics = free_loopback_addr()?;
    let (plane_m, runner_m) = env
        .start(
            "footprint-metrics",
            env.checkin_cadence(),
            &[],
            RunnerOptions {
                metrics: Some(metrics),
                ..RunnerOptions::default()
            },
        )
        .await?;
    let scraper = Scraper::start(metrics, Duration::from_secs(1));
    // Settle: the first check-ins and allocations are startup, not idle.
    actix_rt::time::sleep(env.size().pick(
        Duration::from_secs(2),
        Duration::from_secs(2),
        Duration::from_millis(500),
    ))
    .await;
    let mut idle = [
        Idle::begin(&runner, &plane)?,
        Idle::begin(&runner_m, &plane_m)?,
    ];
    let end = Instant::now() + window;
    while Instant::now() < end {
        actix_rt::time::sleep(Duration::from_millis(500)).await;
        for i in &mut idle {
            i.sample()?;
        }
    }
    let [off, on] = idle;
    let off = off.end()?;
    let on = on.end()?;
    let tally = scraper.stop();
    tally.check()?;
    let scrapes = tally.answered.len();
    let mut rows = vec![
        Row::measured(
            &bench,
            label,
            "idle RSS (max of samples)",
            mib(off.max_rss),
            "<= 15 MiB",
            Some(off.max_rss <= 15 * 1024),
        ),
        Row::measured(
            &bench,
            label,
            &format!("idle CPU ({} check-ins)", off.checkins),
            format!("{:.3}%", off.cpu_pct),
            "<= 0.2%",
            Some(off.cpu_pct <= 0.2),
        ),
        Row::measured(
            &bench,
            label,
            &format!("idle RSS, metrics endpoint on, {scrapes} scrapes (max of samples)"),
            mib(on.max_rss),
            "<= 15 MiB",
            Some(on.max_rss <= 15 * 1024),
        ),
        Row::measured(
            &bench,
            label,
            &format!(
                "idle CPU, metrics endpoint on, {scrapes} scrapes ({} check-ins)",
                on.checkins
            ),
            format!("{:.3}%", on.cpu_pct),
            "<= 0.2%",
            Some(on.cpu_pct <= 0.2),
        ),
        Row::measured(
            &bench,
            label,
            "metrics endpoint cost (on and scraped, against off)",
            format!(
                "{:+.2} MiB RSS, {:+.3}% CPU",
                (on.max_rss as f64 - off.max_rss as f64) / 1024.0,
                on.cpu_pct - off.cpu_pct
            ),
            "",
            None,
        ),
        Row::measured(
            &bench,
            label,
            "metrics scrapes, every 1 s",
            tally.describe(),
            "",
            None,
        ),
    ];
    match (&env.kind, release_binary()) {
        (RunnerKind::Binary(bin), _) => {
            let size = std::fs::metadata(bin)?.len();
            rows.push(Row::measured(
                "binary size",
                "rdrunner",
                "stripped release binary",
                format!("{:.1} MiB", size as f64 / 1048576.0),
                "<= 15 MiB",
                Some(size <= 15 * 1024 * 1024),
            ));
        }
        (RunnerKind::InProcess, Some(_)) => rows.push(Row::missing(
            "binary size",
            "rdrunner",
            "stripped release binary",
            "target/release/rdrunner does not run the daemon (see the Runner line)",
        )),
        (RunnerKind::InProcess, None) => rows.push(Row::missing(
            "binary size",
            "rdrunner",
            "stripped release binary",
            "no target/release/rdrunner (build it with cargo build --release)",
        )),
    }
    Ok(rows)
}

/// One idle runner's usage over a window.
struct Idle<'a> {
    runner: &'a RunnerProcess,
    plane: &'a Plane,
    u0: crate::measure::ProcUsage,
    c0: usize,
    t0: Instant,
    max_rss: u64,
}

/// What [`Idle`] measured.
struct IdleUsage {
    max_rss: u64,
    cpu_pct: f64,
    checkins: usize,
}

impl<'a> Idle<'a> {
    fn begin(runner: &'a RunnerProcess, plane: &'a Plane) -> anyhow::Result<Self> {
        let u0 = proc_usage(runner.pid()).context("runner gone")?;
        Ok(Idle {
            runner,
            plane,
            max_rss: u0.rss_kib,
            u0,
            c0: plane.checkins().len(),
            t0: Instant::now(),
        })
    }

    fn sample(&mut self) -> anyhow::Result<()> {
        let u = proc_usage(self.runner.pid()).context("runner exited while idle")?;
        self.max_rss = self.max_rss.max(u.rss_kib);
        Ok(())
    }

    fn end(self) -> anyhow::Result<IdleUsage> {
        let u1 = proc_usage(self.runner.pid()).context("runner gone")?;
        let elapsed = self.t0.elapsed();
        let checkins = self.plane.checkins().len() - self.c0;
        if checkins == 0 {
            bail!("the runner did not check in while idle");
        }
        let cpu = match (self.u0.live_threads_cpu, u1.live_threads_cpu) {
            (Some(a), Some(b)) if b >= a => b - a,
            _ => u1.cpu - self.u0.cpu,
        };
        Ok(IdleUsage {
            max_rss: self.max_rss.max(u1.rss_kib),
            cpu_pct: cpu.as_secs_f64() / elapsed.as_secs_f64() * 100.0,
            checkins,
        })
    }
}

// ---- 6. check-in jitter under load -------------------------------------

/// The jitter run twice: the metrics endpoint off, then on and scraped
/// every second (the endpoint must not slow check-ins).
async fn jitter(env: &Env) -> anyhow::Result<Vec<Row>> {
    let mut rows = jitter_once(env, false).await?;
    rows.extend(jitter_once(env, true).await?);
    Ok(rows)
}

async fn jitter_once(env: &Env, metrics: bool) -> anyhow::Result<Vec<Row>> {
    let window = Duration::from_secs(env.size().pick(60, 12, 3));
    let per_kind = env.size().pick(250usize, 100, 5);
    let mut nodes = Nodes::local_nodes("quiet", per_kind, "quiet");
    nodes.extend(Nodes::local_nodes("loud", per_kind, "loud"));
    let cadence = env.checkin_cadence();
    let interval = Duration::from_millis(cadence.long_poll_ms);
    let metrics = if metrics {
        Some(free_loopback_addr()?)
    } else {
        None
    };
    let (plane, _runner) = env
        .start(
            if metrics.is_some() {
                "jitter-metrics"
            } else {
                "jitter"
            },
            cadence,
            &nodes,
            RunnerOptions {
                metrics,
                ..RunnerOptions::default()
            },
        )
        .await?;
    let scraper = metrics.map(|addr| Scraper::start(addr, Duration::from_secs(1)));
    let secs = window.as_secs();
    let quiet = submission(&format!("sleep {secs}"), "tags: quiet", per_kind as u32);
    // Five lines every 250 ms per node: 5,000 lines/s over 250 nodes.
    let loud_cmd = format!(
        "i=0; while [ $i -lt {} ]; do echo \"$i one ${{node.name}}\"; echo \"$i two\"; echo \"$i three\"; echo \"$i four\"; echo \"$i five\"; sleep 0.25; i=$((i+1)); done",
        secs * 4
    );
    let loud = submission(&loud_cmd, "tags: loud", per_kind as u32);
    let t_start = Instant::now();
    let a = plane.admin.submit_execution(PROJECT, &quiet).await?;
    let b = plane.admin.submit_execution(PROJECT, &loud).await?;
    let mut max_running = 0usize;
    let deadline = Instant::now() + window + Duration::from_secs(120);
    let (sa, sb) = loop {
        let sa = plane.harness.execution(a).context("execution vanished")?;
        let sb = plane.harness.execution(b).context("execution vanished")?;
        let running = sa
            .nodes
            .values()
            .chain(sb.nodes.values())
            .filter(|n| n.state == RunState::Running)
            .count();
        max_running = max_running.max(running);
        if sa.state.is_terminal() && sb.state.is_terminal() {
            break (sa, sb);
        }
        if Instant::now() > deadline {
            bail!("the {} node steps did not end in time", 2 * per_kind);
        }
        actix_rt::time::sleep(Duration::from_millis(200)).await;
    };
    let t_end = Instant::now();
    let scrapes = scraper.map(Scraper::stop);
    if let Some(t) = &scrapes {
        t.check()?;
    }
    all_succeeded(&sa, per_kind)?;
    all_succeeded(&sb, per_kind)?;
    let checkins: Vec<Instant> = plane
        .checkins()
        .into_iter()
        .filter(|t| *t >= t_start && *t <= t_end)
        .collect();
    let gaps: Vec<Duration> = checkins.windows(2).map(|w| w[1] - w[0]).collect();
    if gaps.is_empty() {
        bail!("fewer than two check-ins during the load");
    }
    let s = Samples::new(gaps);
    let mut bench = format!("check-in jitter, {} local steps, {secs} s", 2 * per_kind);
    if scrapes.is_some() {
        bench.push_str(", metrics endpoint scraped every 1 s");
    }
    let label = env.runner_label();
    let bound = interval + Duration::from_millis(250);
    let max = s.max().expect("gaps");
    let mut rows = vec![
        Row::measured(
            &bench,
            label,
            "node steps running at once (max seen)",
            max_running.to_string(),
            &(2 * per_kind).to_string(),
            Some(max_running == 2 * per_kind),
        ),
        Row::measured(
            &bench,
            label,
            &format!("check-in gap p99 (n={})", s.len()),
            ms(s.percentile(99.0).expect("gaps")),
            "",
            None,
        ),
        Row::measured(
            &bench,
            label,
            "check-in gap max",
            ms(max),
            &format!("<= {} (long poll {} + 250 ms)", ms(bound), ms(interval)),
            Some(max <= bound),
        ),
    ];
    if let Some(t) = scrapes {
        rows.push(Row::measured(
            &bench,
            label,
            "metrics scrapes, every 1 s",
            t.describe(),
            "",
            None,
        ));
    }
    Ok(rows)
}
