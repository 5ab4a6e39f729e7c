//! The scenarios: each builds a world, starts the runner, submits its
//! workload, plays its faults on a timeline, waits for every operation to
//! end, stops the runner and judges the invariants.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdrunner_actors::FailPoints;
use rdrunner_harness::invariants::Window;
use rdrunner_harness::{Fault, FaultPlan, FaultRule, RouteName};

use super::child::ChildFailPoint;
use super::verdict::{check_processes, judge, Bounds, Row};
use super::world::{Expect, Lines, World, LONG_POLL_MS};

/// Every scenario, in the order `all` runs them.
pub const SCENARIOS: &[(&str, &str)] = &[
    (
        "outage",
        "control plane unreachable (proxy cut) in the middle of running operations",
    ),
    (
        "flaky-api",
        "30% of runner API requests failing in mixed ways",
    ),
    ("step-panic", "a panic in 10% of node steps"),
    (
        "ssh-blackhole",
        "node steps hanging on black-holed SSH connections, ended by the step timeout",
    ),
    (
        "ssh-drop",
        "every SSH connection cut and restored several times during long steps, which reattach",
    ),
    (
        "shipper-escalation",
        "LogShipper panics until supervision escalates; runner restarted; spool drained",
    ),
    (
        "kill-9",
        "kill -9 of the runner in the middle of operations, then a restart",
    ),
    ("slow-api", "every control plane answer delayed by 2 s"),
    ("log-flood", "a log flood with the runner's memory bounded"),
    ("cancel-storm", "a storm of cancels while operations start"),
];

/// Deliberate breaks, to show that the checks catch real failures.
pub const BREAKS: &[(&str, &str)] = &[
    (
        "drop-report",
        "the runner loses one log report and numbers on as if it never existed",
    ),
    (
        "duplicate-report",
        "the runner sends one log report twice under two seqs",
    ),
    (
        "stall-poller",
        "the Poller stalls 3 s before some check-ins",
    ),
    (
        "leak-process",
        "aborted steps report aborted but their processes are left running",
    ),
    (
        "drop-terminal",
        "the runner never delivers an operation's terminal report",
    ),
    ("hog-memory", "the runner holds 200 MB it never gives back"),
    (
        "no-reattach",
        "runner.reattach = false: SSH steps run attached and fail with their connection",
    ),
];

#[derive(Debug, Clone)]
pub struct Options {
    pub seed: u64,
    pub quick: bool,
    pub breaks: Vec<String>,
    /// Keep each scenario's directory (runner.log, runner.stderr, spool).
    pub keep: bool,
    /// A cap on how long a scenario waits for its operations to end (the
    /// break checks use it: a broken runner may never end them).
    pub wait_cap: Option<Duration>,
}

impl Options {
    /// `quick` when quick, else `long`.
    fn pick<T>(&self, quick: T, long: T) -> T {
        if self.quick {
            quick
        } else {
            long
        }
    }

    /// A generator for one scenario, from the run's seed.
    fn rng(&self, scenario: &str) -> StdRng {
        let salt = scenario.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
        });
        StdRng::seed_from_u64(self.seed ^ salt)
    }

    fn fail_points(&self) -> Vec<ChildFailPoint> {
        if self.breaks.iter().any(|b| b == "stall-poller") {
            vec![ChildFailPoint {
                name: "poller::checkin".into(),
                action: "delay".into(),
                delay_ms: 3000,
                probability: None,
                seed: self.seed,
            }]
        } else {
            Vec::new()
        }
    }
}

const NORMAL_GAP: Duration = Duration::from_millis(LONG_POLL_MS + 1000);

fn nodes(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("n{i}")).collect()
}

/// Runs one scenario; any setup error becomes a failed row.
pub async fn run(name: &str, opts: &Options) -> Row {
    KEEP.store(opts.keep, std::sync::atomic::Ordering::Relaxed);
    WAIT_CAP.with(|c| c.set(opts.wait_cap));
    let start = Instant::now();
    let mut row = Row {
        scenario: name.to_owned(),
        ..Row::default()
    };
    let result = match name {
        "outage" => outage(opts, &mut row).await,
        "flaky-api" => flaky_api(opts, &mut row).await,
        "step-panic" => step_panic(opts, &mut row).await,
        "ssh-blackhole" => ssh_blackhole(opts, &mut row).await,
        "ssh-drop" => ssh_drop(opts, &mut row).await,
        "shipper-escalation" => shipper_escalation(opts, &mut row).await,
        "kill-9" => kill_9(opts, &mut row).await,
        "slow-api" => slow_api(opts, &mut row).await,
        "log-flood" => log_flood(opts, &mut row).await,
        "cancel-storm" => cancel_storm(opts, &mut row).await,
        other => Err(anyhow::anyhow!("no scenario {other}")),
    };
    if let Err(e) = result {
        row.failures.push(format!("scenario error: {e:#}"));
    }
    row.elapsed = start.elapsed();
    row
}

/// Stops the runner, then judges.
async fn finish(world: &mut World, name: &str, bounds: Bounds, row: &mut Row, within: Duration) {
    let within = within.min(WAIT_CAP.with(|c| c.get()).unwrap_or(within));
    if !world.wait_all_terminal(within).await {
        row.notes.push(format!(
            "not every operation ended within {:.0} s",
            within.as_secs_f64()
        ));
    }
    check_processes(world, row).await;
    world.stop_runner().await;
    judge(world, name, bounds, row).await;
    world.keep = world_keep();
    if world.keep {
        row.notes.push(format!(
            "{name}: directory kept: {}",
            world.dir.path().display()
        ));
    }
}

fn world_keep() -> bool {
    KEEP.load(std::sync::atomic::Ordering::Relaxed)
}

thread_local! {
    /// Set from `Options::wait_cap` by `run`.
    static WAIT_CAP: std::cell::Cell<Option<Duration>> = const { std::cell::Cell::new(None) };
}

/// Set from `Options::keep` by `run`.
static KEEP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

async fn outage(opts: &Options, row: &mut Row) -> anyhow::Result<()> {
    let outage = opts.pick(Duration::from_secs(3), Duration::from_secs(30));
    let mut w = World::new("outage", opts.seed, 2, &opts.breaks).await?;
    w.start_runner(opts.fail_points())?;
    // Steps print 50 lines a second for about twice the outage.
    let n = 50 * (2 * outage.as_secs() + 2);
    for _ in 0..opts.pick(6, 10) {
        let cmd = w.paced_command(n, 10, 0.2);
        w.submit(&nodes(2), cmd, Lines::Numbered(n), Expect::Succeed, None)
            .await?;
    }
    if !w.wait_all_running(Duration::from_secs(20)).await {
        row.notes
            .push("not every operation was running before the cut".into());
    }
    actix_rt::time::sleep(Duration::from_secs(1)).await;
    let from = Instant::now();
    w.proxy.cut();
    actix_rt::time::sleep(outage).await;
    w.proxy.restore();
    w.windows.push(Window {
        from,
        to: Instant::now(),
    });
    row.notes.push(format!(
        "outage: proxy cut for {:.1} s, {} connections reset",
        outage.as_secs_f64(),
        w.proxy.stats().resets
    ));
    let bounds = Bounds {
        gap: NORMAL_GAP,
        rss_mb: None,
    };
    finish(
        &mut w,
        "outage",
        bounds,
        row,
        outage * 2 + Duration::from_secs(60),
    )
    .await;
    Ok(())
}

async fn flaky_api(opts: &Options, row: &mut Row) -> anyhow::Result<()> {
    let window = opts.pick(Duration::from_secs(6), Duration::from_secs(60));
    let mut w = World::new("flaky-api", opts.seed, 2, &opts.breaks).await?;
    w.start_runner(opts.fail_points())?;
    // Five kinds on every route; the sixth is a 300 ms delay on check-ins
    // (a hang or a 429 there would be a pause the server asked for, longer
    // than the 1 s of slack the cadence bound allows), a hang on claims and
    // a 429 with Retry-After on reports.
    let mixed = |route, sixth: Fault| {
        vec![
            FaultRule::new(route, Fault::Drop, 0.05),
            FaultRule::new(route, Fault::Status { status: 500 }, 0.05),
            FaultRule::new(route, Fault::Status { status: 503 }, 0.05),
            FaultRule::new(route, Fault::Truncate, 0.05),
            FaultRule::new(route, Fault::Garbage, 0.05),
            FaultRule::new(route, sixth, 0.05),
        ]
    };
    let mut rules = mixed(RouteName::Checkin, Fault::Delay { ms: 300 });
    rules.extend(mixed(RouteName::Claim, Fault::Hang));
    rules.extend(mixed(RouteName::Reports, Fault::RetryAfter { seconds: 1 }));
    let seed = opts.rng("flaky-api").gen();
    w.admin
        .set_faults(&FaultPlan {
            seed: Some(seed),
            rules,
        })
        .await?;
    let baseline = w.harness.faults().status().requests;
    let start = Instant::now();
    let every = opts.pick(Duration::from_millis(500), Duration::from_secs(2));
    while start.elapsed() < window {
        let cmd = w.paced_command(100, 10, 0.1);
        w.submit(&nodes(2), cmd, Lines::Numbered(100), Expect::Succeed, None)
            .await?;
        actix_rt::time::sleep(every).await;
    }
    let status = w.admin.clear_faults().await?;
    let injected: u64 = status.injected.iter().map(|c| c.count).sum();
    let faulted = [RouteName::Checkin, RouteName::Claim, RouteName::Reports];
    let requests: u64 = faulted
        .iter()
        .map(|r| {
            status.requests.get(r).copied().unwrap_or(0) - baseline.get(r).copied().unwrap_or(0)
        })
        .sum();
    let by_kind: Vec<String> = status
        .injected
        .iter()
        .map(|c| format!("{:?} {} x{}", c.route, c.kind, c.count))
        .collect();
    row.notes.push(format!(
        "flaky-api: {injected} faults injected into {requests} check-in, claim and report requests during the window (fault seed {seed}): {}",
        by_kind.join(", ")
    ));
    let bounds = Bounds {
        gap: NORMAL_GAP,
        rss_mb: None,
    };
    finish(&mut w, "flaky-api", bounds, row, Duration::from_secs(90)).await;
    Ok(())
}

async fn step_panic(opts: &Options, row: &mut Row) -> anyhow::Result<()> {
    let mut w = World::new("step-panic", opts.seed, 3, &opts.breaks).await?;
    let mut fps = opts.fail_points();
    let executions = opts.pick(10, 40);
    // One node step in ten panics, drawn from a seed that makes at least
    // one of them panic: with a seed of the run's drawing alone, one run
    // in 24 of the quick size (0.9^30) would panic none and prove nothing.
    let mut rng = opts.rng("step-panic");
    let arrivals = executions as u32 * 3;
    let seed = loop {
        let s: u64 = rng.gen();
        if FailPoints::fires_within(0.1, s, arrivals) > 0 {
            break s;
        }
    };
    fps.push(ChildFailPoint {
        name: "step_worker::node".into(),
        action: "panic".into(),
        delay_ms: 0,
        probability: Some(0.1),
        seed,
    });
    w.start_runner(fps)?;
    for _ in 0..executions {
        let cmd = w.paced_command(50, 25, 0.05);
        w.submit(
            &nodes(3),
            cmd,
            Lines::Numbered(50),
            Expect::SucceedOrNodePanic,
            None,
        )
        .await?;
    }
    let bounds = Bounds {
        gap: NORMAL_GAP,
        rss_mb: None,
    };
    finish(&mut w, "step-panic", bounds, row, Duration::from_secs(90)).await;
    let panicked = w
        .submitted
        .iter()
        .filter_map(|s| w.harness.execution(s.execution_id))
        .flat_map(|e| e.nodes.into_values())
        .filter(|n| {
            n.message
                .as_deref()
                .is_some_and(|m| m.contains("fail point"))
        })
        .count();
    row.notes.push(format!(
        "step-panic: {panicked} of {} node steps panicked",
        w.submitted.len() * 3
    ));
    if panicked == 0 {
        row.failures
            .push("no node step panicked: the fail point did not fire".into());
    }
    Ok(())
}

async fn ssh_blackhole(opts: &Options, row: &mut Row) -> anyhow::Result<()> {
    let (execs, per_exec) = opts.pick((5usize, 2usize), (10, 5));
    let step_timeout_ms = opts.pick(4000, 8000);
    let mut w = World::new("ssh-blackhole", opts.seed, 0, &opts.breaks).await?;
    // Each blocking SSH call is bounded by this; 50 handshakes at once on
    // a loaded machine need more than 10 do.
    let call_timeout_s = opts.pick(5, 10);
    let nodes = w.add_ssh_nodes(execs * per_exec, call_timeout_s).await?;
    w.start_runner(opts.fail_points())?;
    // Steps would print 50 lines a second for a minute.
    let n = 3000;
    for chunk in nodes.chunks(per_exec) {
        let cmd = w.paced_command(n, 10, 0.2);
        w.submit(
            chunk,
            cmd,
            Lines::Numbered(n),
            Expect::TimeOut,
            Some(step_timeout_ms),
        )
        .await?;
    }
    if !w.wait_all_running(Duration::from_secs(20)).await {
        row.notes
            .push("not every operation was running before the black hole".into());
    }
    // Let every step connect and print, then swallow every byte both ways.
    let printing = Instant::now();
    while printing.elapsed() < Duration::from_secs(30) && !w.every_node_printed() {
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    if !w.every_node_printed() {
        row.notes
            .push("not every node step printed before the black hole".into());
    }
    let (_, proxy) = w.sshd.as_ref().expect("ssh nodes were added");
    proxy.update(|f| f.black_hole = true);
    let holed = Instant::now();
    // The step timeout, then the SSH executor's own bounds: under a black
    // hole each libssh2 call it makes to end the step (the kill's side
    // command, closing the channel and the session) waits out the call
    // timeout, plus the kill grace and some room.
    let bound =
        Duration::from_millis(step_timeout_ms) + Duration::from_secs(4 * call_timeout_s + 1 + 2);
    let ended = w.wait_all_terminal(bound).await;
    let took = holed.elapsed();
    row.notes.push(format!(
        "ssh-blackhole: {} node steps black-holed; operations ended {:.1} s later",
        nodes.len(),
        took.as_secs_f64()
    ));
    if !ended {
        row.failures.push(format!(
            "the black-holed node steps did not end within {:.0} s of the black hole (step timeout {:.0} s)",
            bound.as_secs_f64(),
            step_timeout_ms as f64 / 1000.0
        ));
    }
    // The network comes back: the runner's closed connections reach sshd,
    // and the steps' processes must then be gone from the node.
    let (_, proxy) = w.sshd.as_ref().expect("ssh nodes were added");
    proxy.restore();
    let bounds = Bounds {
        gap: NORMAL_GAP,
        rss_mb: None,
    };
    finish(
        &mut w,
        "ssh-blackhole",
        bounds,
        row,
        Duration::from_secs(30),
    )
    .await;
    Ok(())
}

async fn ssh_drop(opts: &Options, row: &mut Row) -> anyhow::Result<()> {
    let (execs, per_exec) = opts.pick((2usize, 3usize), (4, 5));
    let mut w = World::new("ssh-drop", opts.seed, 0, &opts.breaks).await?;
    let call_timeout_s = 5;
    let nodes = w.add_ssh_nodes(execs * per_exec, call_timeout_s).await?;
    w.start_runner(opts.fail_points())?;
    // Steps print 50 lines a second for about 8 s (quick) or 20 s.
    let n = opts.pick(400, 1000);
    for chunk in nodes.chunks(per_exec) {
        let cmd = w.paced_command(n, 10, 0.2);
        w.submit(chunk, cmd, Lines::Numbered(n), Expect::Succeed, None)
            .await?;
    }
    if !w.wait_all_running(Duration::from_secs(20)).await {
        row.notes
            .push("not every operation was running before the cuts".into());
    }
    let printing = Instant::now();
    while printing.elapsed() < Duration::from_secs(30) && !w.every_node_printed() {
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    if !w.every_node_printed() {
        row.notes
            .push("not every node step printed before the cuts".into());
    }
    // Every connection through the proxy is reset, new ones too, for a
    // moment; then the network is back. Seeded pauses between cuts.
    let mut rng = opts.rng("ssh-drop");
    let cuts = opts.pick(3, 6);
    let (_, proxy) = w.sshd.as_ref().expect("ssh nodes were added");
    let before = proxy.stats();
    for _ in 0..cuts {
        actix_rt::time::sleep(Duration::from_millis(rng.gen_range(600..1200))).await;
        proxy.cut();
        actix_rt::time::sleep(Duration::from_millis(rng.gen_range(200..700))).await;
        proxy.restore();
    }
    let after = proxy.stats();
    row.notes.push(format!(
        "ssh-drop: {} node steps, {cuts} cuts, {} connections reset, {} new connections",
        nodes.len(),
        after.resets - before.resets,
        after.connections - before.connections
    ));
    if after.resets == before.resets {
        row.failures
            .push("no connection was reset: the cuts came after the steps".into());
    }
    let bounds = Bounds {
        gap: NORMAL_GAP,
        rss_mb: None,
    };
    finish(&mut w, "ssh-drop", bounds, row, Duration::from_secs(60)).await;
    Ok(())
}

async fn shipper_escalation(opts: &Options, row: &mut Row) -> anyhow::Result<()> {
    let mut w = World::new("shipper-escalation", opts.seed, 1, &opts.breaks).await?;
    let mut fps = opts.fail_points();
    fps.push(ChildFailPoint {
        name: "log_shipper::acked".into(),
        action: "panic".into(),
        delay_ms: 0,
        probability: None,
        seed: 0,
    });
    w.start_runner(fps)?;
    for _ in 0..opts.pick(6, 20) {
        let cmd = w.paced_command(200, 100, 0.1);
        w.submit(
            &nodes(1),
            cmd,
            Lines::Numbered(200),
            Expect::SucceedOrRestarted,
            None,
        )
        .await?;
    }
    let code = w.wait_runner_exit(Duration::from_secs(60)).await;
    row.notes.push(format!(
        "shipper-escalation: the runner exited with {code:?}; restarted on the same spool"
    ));
    if code != Some(super::child::EXIT_ESCALATED) {
        row.failures.push(format!(
            "the runner did not escalate (exit {code:?}, expected {})",
            super::child::EXIT_ESCALATED
        ));
        w.kill_runner();
    }
    w.start_runner(opts.fail_points())?;
    let bounds = Bounds {
        gap: NORMAL_GAP,
        rss_mb: None,
    };
    finish(
        &mut w,
        "shipper-escalation",
        bounds,
        row,
        Duration::from_secs(60),
    )
    .await;
    if w.escalations == 0 {
        row.failures.push("no escalation counted".into());
    }
    Ok(())
}

async fn kill_9(opts: &Options, row: &mut Row) -> anyhow::Result<()> {
    let run_for = opts.pick(6, 30);
    let mut w = World::new("kill-9", opts.seed, 2, &opts.breaks).await?;
    w.start_runner(opts.fail_points())?;
    let n = 50 * run_for;
    for _ in 0..opts.pick(6, 12) {
        let cmd = w.paced_command(n, 10, 0.2);
        w.submit(
            &nodes(2),
            cmd,
            Lines::Numbered(n),
            Expect::SucceedOrRestarted,
            None,
        )
        .await?;
    }
    if !w.wait_all_running(Duration::from_secs(20)).await {
        row.notes
            .push("not every operation was running before the kill".into());
    }
    let wait_ms = opts.rng("kill-9").gen_range(1000..2000);
    actix_rt::time::sleep(Duration::from_millis(wait_ms)).await;
    let from = Instant::now();
    let pid = w.runner.as_ref().map(|r| r.pid());
    w.kill_runner();
    row.notes.push(format!(
        "kill-9: runner pid {pid:?} killed {:.1} s into its operations",
        wait_ms as f64 / 1000.0
    ));
    actix_rt::time::sleep(Duration::from_millis(500)).await;
    w.start_runner(opts.fail_points())?;
    w.windows.push(Window {
        from,
        to: Instant::now(),
    });
    let bounds = Bounds {
        gap: NORMAL_GAP,
        rss_mb: None,
    };
    finish(
        &mut w,
        "kill-9",
        bounds,
        row,
        Duration::from_secs(60 + run_for),
    )
    .await;
    Ok(())
}

async fn slow_api(opts: &Options, row: &mut Row) -> anyhow::Result<()> {
    let delay = 2000;
    let mut w = World::new("slow-api", opts.seed, 2, &opts.breaks).await?;
    let rules = [
        RouteName::Startup,
        RouteName::Checkin,
        RouteName::Claim,
        RouteName::Reports,
        RouteName::Shutdown,
    ]
    .into_iter()
    .map(|r| FaultRule::new(r, Fault::Delay { ms: delay }, 1.0))
    .collect();
    w.admin
        .set_faults(&FaultPlan {
            seed: Some(opts.seed),
            rules,
        })
        .await?;
    w.start_runner(opts.fail_points())?;
    for _ in 0..opts.pick(6, 20) {
        let cmd = w.paced_command(100, 50, 0.1);
        w.submit(&nodes(2), cmd, Lines::Numbered(100), Expect::Succeed, None)
            .await?;
    }
    // With every answer 2 s late, one check-in cycle is the long poll plus 2 s.
    let bounds = Bounds {
        gap: NORMAL_GAP + Duration::from_millis(delay),
        rss_mb: None,
    };
    finish(&mut w, "slow-api", bounds, row, Duration::from_secs(120)).await;
    Ok(())
}

async fn log_flood(opts: &Options, row: &mut Row) -> anyhow::Result<()> {
    let total: u64 = opts.pick(50 << 20, 1 << 30);
    let ops = 10u64;
    let width = 1000usize;
    let per_op = total / ops / width as u64;
    let mut w = World::new("log-flood", opts.seed, 1, &opts.breaks).await?;
    w.start_runner(opts.fail_points())?;
    for _ in 0..ops {
        let cmd = w.flood_command(per_op, width);
        w.submit(
            &nodes(1),
            cmd,
            Lines::Flood(per_op, width),
            Expect::Succeed,
            None,
        )
        .await?;
    }
    row.notes.push(format!(
        "log-flood: {} MB in {} lines of {width} bytes",
        total >> 20,
        per_op * ops
    ));
    let bounds = Bounds {
        gap: NORMAL_GAP,
        rss_mb: Some(128.0),
    };
    finish(
        &mut w,
        "log-flood",
        bounds,
        row,
        opts.pick(Duration::from_secs(120), Duration::from_secs(1800)),
    )
    .await;
    Ok(())
}

async fn cancel_storm(opts: &Options, row: &mut Row) -> anyhow::Result<()> {
    let run_for = opts.pick(20u64, 60);
    let mut w = World::new("cancel-storm", opts.seed, 2, &opts.breaks).await?;
    w.start_runner(opts.fail_points())?;
    let mut rng = opts.rng("cancel-storm");
    let n = 50 * run_for;
    let count = opts.pick(20, 50);
    let mut aborts = Vec::new();
    for _ in 0..count {
        let cmd = w.paced_command(n, 10, 0.2);
        let id = w
            .submit(&nodes(2), cmd, Lines::Numbered(n), Expect::Abort, None)
            .await?;
        let after = Duration::from_millis(rng.gen_range(0..1500));
        let admin = w.admin.clone();
        aborts.push(async move {
            actix_rt::time::sleep(after).await;
            admin.abort(id).await.map(|_| ())
        });
    }
    for r in futures_util::future::join_all(aborts).await {
        r?;
    }
    let bounds = Bounds {
        gap: NORMAL_GAP,
        rss_mb: None,
    };
    finish(&mut w, "cancel-storm", bounds, row, Duration::from_secs(60)).await;
    Ok(())
}
