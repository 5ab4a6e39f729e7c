//! Supervision tests: each one shows a behaviour actix alone does not have.

use super::*;
use std::sync::atomic::{AtomicU32, Ordering};
use tokio::sync::mpsc;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Plain,
    PanicInStarted,
    PanicInTimer,
    IgnoreStop,
}

/// A child that reports its life to the test and counts messages in its
/// own (per instance) state.
struct Probe {
    name: &'static str,
    mode: Mode,
    seen: u32,
    events: mpsc::UnboundedSender<String>,
}

impl Actor for Probe {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let _ = self.events.send(format!("started {}", self.name));
        match self.mode {
            Mode::PanicInStarted => panic!("{} failed to start", self.name),
            Mode::PanicInTimer => {
                ctx.run_later(Duration::from_millis(5), |act, _| {
                    panic!("timer of {} fired", act.name)
                });
            }
            _ => {}
        }
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        let _ = self.events.send(format!("stopped {}", self.name));
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Boom;

impl Handler<Boom> for Probe {
    type Result = ();
    fn handle(&mut self, _: Boom, _: &mut Context<Self>) {
        self.seen += 1;
        let _ = self.events.send(format!("{} saw {}", self.name, self.seen));
        panic!("boom in {}", self.name);
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Quit;

impl Handler<Quit> for Probe {
    type Result = ();
    fn handle(&mut self, _: Quit, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Handler<StopChild> for Probe {
    type Result = ();
    fn handle(&mut self, _: StopChild, ctx: &mut Context<Self>) {
        if self.mode != Mode::IgnoreStop {
            ctx.stop();
        }
    }
}

async fn next(rx: &mut mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("no event within 5 s")
        .expect("channel closed")
}

fn probe_spec(
    name: &'static str,
    restart: RestartType,
    mode: Mode,
    events: mpsc::UnboundedSender<String>,
    arbiter: Option<ArbiterHandle>,
) -> ChildSpec {
    ChildSpec::new(name, restart, Duration::from_millis(200), move || {
        let events = events.clone();
        spawn_actor(arbiter.as_ref(), move || Probe {
            name,
            mode,
            seen: 0,
            events,
        })
    })
}

fn test_log() -> Logger {
    Logger::root(slog::Discard, o!())
}

#[actix_rt::test]
async fn a_panicking_handler_on_another_arbiter_is_restarted_with_fresh_state() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let stats = StatsCell::default();
    let arbiter = actix_rt::Arbiter::new();
    let handle = arbiter.handle();
    // The address of the current instance, so the test can make it panic.
    let (addr_tx, mut addr_rx) = mpsc::unbounded_channel::<Addr<Probe>>();
    let events = tx.clone();
    let spec = ChildSpec::new("probe", RestartType::Permanent, Duration::from_secs(1), {
        let handle = handle.clone();
        move || {
            let events = events.clone();
            let addr_tx = addr_tx.clone();
            let (child, addr) = spawn_actor_with_addr(Some(&handle), move || Probe {
                name: "probe",
                mode: Mode::Plain,
                seen: 0,
                events,
            });
            let _ = addr_tx.send(addr);
            child
        }
    });
    let sup = Supervisor::new("root", RestartIntensity::default(), test_log())
        .stats(stats.clone())
        .start();
    sup.do_send(StartChild(spec));
    assert_eq!(next(&mut rx).await, "started probe");
    let a1 = tokio::time::timeout(Duration::from_secs(5), addr_rx.recv())
        .await
        .unwrap()
        .unwrap();
    a1.do_send(Boom);
    assert_eq!(next(&mut rx).await, "probe saw 1");
    // The dead instance's context is dropped (its stopping hooks run).
    assert_eq!(next(&mut rx).await, "stopped probe");
    // Restarted by the supervisor, on the same arbiter, from its factory.
    assert_eq!(next(&mut rx).await, "started probe");
    let a2 = addr_rx.recv().await.unwrap();
    a2.do_send(Boom);
    // Fresh state: the count starts again at 1.
    assert_eq!(next(&mut rx).await, "probe saw 1");
    assert_eq!(next(&mut rx).await, "stopped probe");
    assert_eq!(next(&mut rx).await, "started probe");
    let s = stats.snapshot();
    assert_eq!(s.restarts.get("probe"), Some(&2));
    assert!(s.exits >= 2);
    sup.send(StopSupervisor).await.unwrap();
    arbiter.stop();
}

#[actix_rt::test]
async fn panics_in_started_and_in_timers_become_typed_exit_reasons() {
    for (mode, expected) in [
        (Mode::PanicInStarted, "probe failed to start"),
        (Mode::PanicInTimer, "timer of probe fired"),
    ] {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (exit_tx, mut exit_rx) = mpsc::unbounded_channel();
        let spec = probe_spec("probe", RestartType::Temporary, mode, tx, None).on_exit(move |r| {
            let _ = exit_tx.send(r.clone());
        });
        let sup = Supervisor::new("root", RestartIntensity::default(), test_log()).start();
        sup.do_send(StartChild(spec));
        assert_eq!(next(&mut rx).await, "started probe");
        let reason = tokio::time::timeout(Duration::from_secs(5), exit_rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            reason,
            ExitReason::Panic {
                message: expected.into()
            }
        );
        // Temporary: not restarted.
        assert!(tokio::time::timeout(Duration::from_millis(100), rx.recv())
            .await
            .map_or(true, |e| e.as_deref() != Some("started probe")));
    }
}

#[actix_rt::test]
async fn children_stop_in_reverse_order_and_a_stubborn_one_is_dropped() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let sup = Supervisor::new("root", RestartIntensity::default(), test_log()).start();
    let (exit_tx, mut exit_rx) = mpsc::unbounded_channel();
    for (name, mode) in [
        ("a", Mode::Plain),
        ("b", Mode::IgnoreStop),
        ("c", Mode::Plain),
    ] {
        let exit_tx = exit_tx.clone();
        sup.do_send(StartChild(
            probe_spec(name, RestartType::Permanent, mode, tx.clone(), None).on_exit(move |r| {
                let _ = exit_tx.send((name, r.clone()));
            }),
        ));
    }
    for name in ["a", "b", "c"] {
        assert_eq!(next(&mut rx).await, format!("started {name}"));
    }
    let t0 = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), sup.send(StopSupervisor))
        .await
        .unwrap()
        .unwrap();
    // c stops, b ignores the request and is dropped after its 200 ms, then a.
    // A dropped instance gets no stopping hooks, so b says nothing.
    assert_eq!(next(&mut rx).await, "stopped c");
    assert_eq!(next(&mut rx).await, "stopped a");
    assert!(t0.elapsed() >= Duration::from_millis(200));
    let mut exits = Vec::new();
    while let Ok(e) = exit_rx.try_recv() {
        exits.push(e);
    }
    assert_eq!(
        exits,
        vec![
            ("c", ExitReason::Shutdown),
            ("b", ExitReason::Killed),
            ("a", ExitReason::Shutdown)
        ]
    );
}

#[actix_rt::test]
async fn exceeding_the_restart_intensity_escalates_to_the_parent() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (esc_tx, mut esc_rx) = mpsc::unbounded_channel();
    let starts = Arc::new(AtomicU32::new(0));
    let intensity = RestartIntensity {
        max_restarts: 3,
        within: Duration::from_secs(10),
    };
    let sup = Supervisor::new("root", intensity, test_log())
        .on_escalate(move |exit| {
            let _ = esc_tx.send(exit);
        })
        .start();
    sup.do_send(StartChild(probe_spec(
        "steady",
        RestartType::Permanent,
        Mode::Plain,
        tx.clone(),
        None,
    )));
    let counted = starts.clone();
    let events = tx.clone();
    sup.do_send(StartChild(ChildSpec::new(
        "crashy",
        RestartType::Permanent,
        Duration::from_millis(200),
        move || {
            counted.fetch_add(1, Ordering::SeqCst);
            let events = events.clone();
            spawn_actor(None, move || Probe {
                name: "crashy",
                mode: Mode::PanicInStarted,
                seen: 0,
                events,
            })
        },
    )));
    let exit = tokio::time::timeout(Duration::from_secs(5), esc_rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(exit.child, "crashy");
    assert_eq!(
        exit.reason,
        ExitReason::Panic {
            message: "crashy failed to start".into()
        }
    );
    // First start + 3 restarts allowed; the 4th restart is refused.
    assert_eq!(starts.load(Ordering::SeqCst), 4);
    // The steady sibling was stopped as part of the escalation.
    loop {
        if next(&mut rx).await == "stopped steady" {
            break;
        }
    }
}

#[test]
fn restart_log_counts_only_restarts_inside_the_window() {
    let mut log = RestartLog::new(RestartIntensity {
        max_restarts: 2,
        within: Duration::from_secs(10),
    });
    let t = Instant::now();
    assert!(log.allow(t));
    assert!(log.allow(t + Duration::from_secs(1)));
    assert!(!log.allow(t + Duration::from_secs(2)));
    // Long after, the old restarts have left the window.
    assert!(log.allow(t + Duration::from_secs(30)));
}

#[actix_rt::test]
async fn a_transient_child_is_restarted_after_a_panic_but_not_after_a_normal_exit() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (addr_tx, mut addr_rx) = mpsc::unbounded_channel::<Addr<Probe>>();
    let (exit_tx, mut exit_rx) = mpsc::unbounded_channel();
    let stats = StatsCell::default();
    let events = tx.clone();
    let spec = ChildSpec::new(
        "t",
        RestartType::Transient,
        Duration::from_secs(1),
        move || {
            let events = events.clone();
            let (child, addr) = spawn_actor_with_addr(None, move || Probe {
                name: "t",
                mode: Mode::Plain,
                seen: 0,
                events,
            });
            let _ = addr_tx.send(addr);
            child
        },
    )
    .on_exit(move |r| {
        let _ = exit_tx.send(r.clone());
    });
    let sup = Supervisor::new("root", RestartIntensity::default(), test_log())
        .stats(stats.clone())
        .start();
    sup.do_send(StartChild(spec));
    assert_eq!(next(&mut rx).await, "started t");
    addr_rx.recv().await.unwrap().do_send(Boom);
    assert_eq!(next(&mut rx).await, "t saw 1");
    assert_eq!(next(&mut rx).await, "stopped t");
    assert_eq!(next(&mut rx).await, "started t");
    addr_rx.recv().await.unwrap().do_send(Quit);
    assert_eq!(next(&mut rx).await, "stopped t");
    let reason = tokio::time::timeout(Duration::from_secs(5), exit_rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reason, ExitReason::Normal);
    assert_eq!(stats.snapshot().restarts.get("t"), Some(&1));
    assert_eq!(stats.snapshot().starts.get("t"), Some(&2));
}
