//! Named fail points for fault-injection tests: a point in the code that,
//! when armed at run time, panics, fails or stalls on purpose.
//!
//! The `fail_point!` macro compiles to nothing unless the crate is built for
//! its own tests or with the `failpoints` cargo feature, so normal builds pay
//! nothing. The registry is per runtime ([`FailPoints`], reachable through
//! `RuntimeHandle::fail_points`), so runtimes in one process (tests) do not
//! disturb each other.
//!
//! Points in the runtime: `poller::startup`, `poller::checkin`,
//! `poller::claim`, `poller::claimed` (after a claim's answer, before anything
//! is recorded of it), `registry::command`, `step_worker::started`,
//! `step_worker::node`, `log_shipper::send`, `log_shipper::acked`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What an armed fail point does when reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailAction {
    /// Panics with `fail point NAME fired`.
    Panic,
    /// Makes the surrounding call fail the way that call fails (for example a
    /// `POST /reports` that "could not reach the control plane").
    Error,
    /// Blocks the calling thread for this long, then goes on.
    Delay(Duration),
    /// Ends the process at once (`abort`), as `kill -9` would: nothing is
    /// flushed, no destructor runs. For tests of what a restart recovers.
    Abort,
}

#[derive(Debug, Clone)]
struct Armed {
    action: FailAction,
    /// How many more times it fires; `None` = every time.
    remaining: Option<u32>,
    /// Fires only when a draw from this seeded generator falls below the
    /// probability; `None` = every time it is reached.
    chance: Option<(f64, rand::rngs::StdRng)>,
}

/// A registry of armed fail points, shared by every actor of one runtime.
#[derive(Debug, Clone, Default)]
pub struct FailPoints {
    points: Arc<Mutex<HashMap<String, Armed>>>,
}

impl FailPoints {
    pub fn new() -> Self {
        Self::default()
    }

    /// Arms `name` so that it fires every time it is reached.
    pub fn set(&self, name: &str, action: FailAction) {
        self.arm(name, action, None);
    }

    /// Arms `name` so that it fires the next `times` times it is reached.
    pub fn set_times(&self, name: &str, action: FailAction, times: u32) {
        self.arm(name, action, Some(times));
    }

    /// Arms `name` so that each time it is reached it fires with
    /// `probability`, decided by a generator seeded with `seed` (the same
    /// seed and the same order of arrivals fire the same times).
    pub fn set_with_probability(
        &self,
        name: &str,
        action: FailAction,
        probability: f64,
        seed: u64,
    ) {
        use rand::SeedableRng;
        self.lock().insert(
            name.to_owned(),
            Armed {
                action,
                remaining: None,
                chance: Some((probability, rand::rngs::StdRng::seed_from_u64(seed))),
            },
        );
    }

    /// How many of the first `arrivals` arrivals at a point armed by
    /// [`FailPoints::set_with_probability`] with `probability` and `seed`
    /// fire (the same draws, whatever the order of the arrivals): lets a
    /// scenario choose a seed that fires at least once.
    pub fn fires_within(probability: f64, seed: u64, arrivals: u32) -> u32 {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..arrivals)
            .filter(|_| rng.gen::<f64>() < probability)
            .count() as u32
    }

    /// Disarms `name`.
    pub fn remove(&self, name: &str) {
        self.lock().remove(name);
    }

    /// Disarms every point.
    pub fn clear(&self) {
        self.lock().clear();
    }

    fn arm(&self, name: &str, action: FailAction, remaining: Option<u32>) {
        self.lock().insert(
            name.to_owned(),
            Armed {
                action,
                remaining,
                chance: None,
            },
        );
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Armed>> {
        self.points.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs the point `name`: panics or sleeps when so armed; returns `true`
    /// when the caller must fail. Used by `fail_point!`.
    pub fn eval(&self, name: &str) -> bool {
        let action = {
            let mut points = self.lock();
            let Some(armed) = points.get_mut(name) else {
                return false;
            };
            if let Some((p, rng)) = armed.chance.as_mut() {
                use rand::Rng;
                if rng.gen::<f64>() >= *p {
                    return false;
                }
            }
            let action = armed.action.clone();
            if let Some(n) = armed.remaining.as_mut() {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    points.remove(name);
                }
            }
            action
        };
        match action {
            FailAction::Panic => panic!("fail point {name} fired"),
            FailAction::Error => true,
            FailAction::Delay(d) => {
                std::thread::sleep(d);
                false
            }
            FailAction::Abort => std::process::abort(),
        }
    }
}

/// Whether the point `name` is armed to fail (after running a panic or a
/// delay armed there); always `false` when fail points are compiled out.
#[inline]
pub(crate) fn failed(fp: &FailPoints, name: &str) -> bool {
    #[cfg(any(test, feature = "failpoints"))]
    {
        fp.eval(name)
    }
    #[cfg(not(any(test, feature = "failpoints")))]
    {
        let _ = (fp, name);
        false
    }
}

/// `fail_point!(registry, "name")` panics or stalls when armed;
/// `fail_point!(registry, "name", expr)` also `return expr` when armed with
/// [`FailAction::Error`]. Nothing at all is compiled without the
/// `failpoints` feature (outside the crate's own tests).
macro_rules! fail_point {
    ($fp:expr, $name:literal) => {{
        let _ = &$fp;
        #[cfg(any(test, feature = "failpoints"))]
        {
            let _ = $fp.eval($name);
        }
    }};
    ($fp:expr, $name:literal, $err:expr) => {{
        let _ = &$fp;
        #[cfg(any(test, feature = "failpoints"))]
        {
            if $fp.eval($name) {
                return $err;
            }
        }
    }};
}
#[allow(unused_imports)]
pub(crate) use fail_point;

#[cfg(test)]
mod tests {
    use super::*;

    fn guarded(fp: &FailPoints) -> Result<u32, &'static str> {
        fail_point!(fp, "test::point", Err("failed on purpose"));
        Ok(7)
    }

    #[test]
    fn armed_points_fire_the_given_number_of_times() {
        let fp = FailPoints::new();
        assert_eq!(guarded(&fp), Ok(7));
        fp.set_times("test::point", FailAction::Error, 2);
        assert_eq!(guarded(&fp), Err("failed on purpose"));
        assert_eq!(guarded(&fp), Err("failed on purpose"));
        assert_eq!(guarded(&fp), Ok(7));
        fp.set("test::point", FailAction::Panic);
        let caught = std::panic::catch_unwind(|| guarded(&fp)).unwrap_err();
        assert_eq!(
            caught.downcast_ref::<String>().map(String::as_str),
            Some("fail point test::point fired")
        );
        fp.remove("test::point");
        assert_eq!(guarded(&fp), Ok(7));
        fp.set_times(
            "test::point",
            FailAction::Delay(Duration::from_millis(30)),
            1,
        );
        let t = std::time::Instant::now();
        assert_eq!(guarded(&fp), Ok(7));
        assert!(t.elapsed() >= Duration::from_millis(30));
        fp.set("test::point", FailAction::Error);
        fp.clear();
        assert_eq!(guarded(&fp), Ok(7));
    }

    #[test]
    fn a_point_armed_with_a_probability_fires_about_that_often_and_replays_by_seed() {
        let run = |seed| {
            let fp = FailPoints::new();
            fp.set_with_probability("test::point", FailAction::Error, 0.1, seed);
            (0..5000).map(|_| guarded(&fp).is_err()).collect::<Vec<_>>()
        };
        let a = run(11);
        let fired = a.iter().filter(|f| **f).count();
        assert!((350..650).contains(&fired), "{fired}");
        assert_eq!(a, run(11));
        assert_ne!(a, run(12));
    }
    #[test]
    fn fires_within_counts_the_draws_a_seeded_point_makes() {
        for seed in 0..20u64 {
            let fp = FailPoints::new();
            fp.set_with_probability("p", FailAction::Error, 0.3, seed);
            let fired = (0..25).filter(|_| fp.eval("p")).count() as u32;
            assert_eq!(
                FailPoints::fires_within(0.3, seed, 25),
                fired,
                "seed {seed}"
            );
        }
    }
}
