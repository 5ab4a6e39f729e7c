//! Liveness and readiness as plain decisions over a [`RuntimeStats`]
//! snapshot: what the daemon's `/health` and `/ready` answer, and what an
//! embedding host may publish its own way (`RuntimeHandle::liveness`,
//! `RuntimeHandle::readiness`).

use std::time::Duration;

use crate::stats::RuntimeStats;

/// Check-in intervals a runner may go without a successful check-in and
/// still be ready.
pub const READY_WITHIN_INTERVALS: u32 = 3;

/// Whether the runtime is alive, and why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Liveness {
    pub alive: bool,
    /// What was decided on, as an operator reads it.
    pub reason: String,
}

/// Whether the runner takes work, and why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    pub ready: bool,
    /// What was decided on, as an operator reads it.
    pub reason: String,
}

/// Alive while the supervision has not escalated and the Poller runs.
pub fn liveness(s: &RuntimeStats) -> Liveness {
    if s.escalations > 0 {
        let why = s
            .last_error
            .as_deref()
            .unwrap_or("restart intensity exceeded");
        return Liveness {
            alive: false,
            reason: format!("supervision gave up: {why}"),
        };
    }
    if s.children_running.get("poller").copied().unwrap_or(0) == 0 {
        return Liveness {
            alive: false,
            reason: "the Poller is not running".into(),
        };
    }
    Liveness {
        alive: true,
        reason: "supervision running, Poller alive".into(),
    }
}

/// Ready when the last check-in succeeded within
/// [`READY_WITHIN_INTERVALS`] check-in intervals.
pub fn readiness(s: &RuntimeStats) -> Readiness {
    let window = s.checkin_interval * READY_WITHIN_INTERVALS;
    let why = |fallback: &str| {
        s.checkin_error
            .clone()
            .unwrap_or_else(|| fallback.to_owned())
    };
    match s.last_checkin_success_age {
        None => Readiness {
            ready: false,
            reason: format!(
                "no successful check-in since the start {} s ago: {}",
                s.uptime.as_secs(),
                why("registering with the control plane")
            ),
        },
        Some(age) if age > window => Readiness {
            ready: false,
            reason: format!(
                "last successful check-in {} s ago: {}",
                age.as_secs(),
                why("no answer since")
            ),
        },
        Some(age) => Readiness {
            ready: true,
            reason: format!(
                "last successful check-in {} s ago (ready within {} s)",
                secs(age),
                secs(window)
            ),
        },
    }
}

/// Seconds with one decimal, for short intervals.
fn secs(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats() -> RuntimeStats {
        let mut s = RuntimeStats::default();
        s.children_running.insert("poller".into(), 1);
        s.checkin_interval = Duration::from_secs(5);
        s.uptime = Duration::from_secs(100);
        s
    }

    #[test]
    fn ready_within_three_intervals_of_the_last_success() {
        let mut s = stats();
        s.last_checkin_success_age = Some(Duration::from_secs(15));
        assert!(readiness(&s).ready, "{:?}", readiness(&s));
        s.last_checkin_success_age = Some(Duration::from_millis(15_001));
        s.checkin_error = Some("checkin: connection refused".into());
        let r = readiness(&s);
        assert!(!r.ready);
        assert_eq!(
            r.reason,
            "last successful check-in 15 s ago: checkin: connection refused"
        );
    }

    #[test]
    fn not_ready_before_the_first_success_says_why() {
        let mut s = stats();
        let r = readiness(&s);
        assert!(!r.ready);
        assert!(r.reason.contains("registering"), "{}", r.reason);
        s.checkin_error = Some("startup: could not reach the control plane".into());
        let r = readiness(&s);
        assert_eq!(
            r.reason,
            "no successful check-in since the start 100 s ago: startup: could not reach the control plane"
        );
    }

    #[test]
    fn a_late_success_without_an_error_says_no_answer() {
        let mut s = stats();
        s.last_checkin_success_age = Some(Duration::from_secs(41));
        assert_eq!(
            readiness(&s).reason,
            "last successful check-in 41 s ago: no answer since"
        );
    }

    #[test]
    fn alive_needs_the_poller_and_no_escalation() {
        let mut s = stats();
        assert!(liveness(&s).alive);
        s.children_running.insert("poller".into(), 0);
        assert_eq!(liveness(&s).reason, "the Poller is not running");
        let mut s = stats();
        s.escalations = 1;
        s.last_error = Some("supervisor root gave up: poller panicked".into());
        let l = liveness(&s);
        assert!(!l.alive);
        assert!(l.reason.contains("poller panicked"), "{}", l.reason);
    }
}
