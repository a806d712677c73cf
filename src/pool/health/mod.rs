//! Health: whether a backend is alive, as checks and connects find it.
//!
//! Two sources feed it, each in its own module: [`active`] probes every
//! backend on an interval (rise/fall), and [`passive`] ejects a backend after
//! too many failed connects in a window (nginx's `max_fails`). Both only
//! *report*: they move a backend's [`Health`] and return the [`Transition`]
//! for their caller to log; they never reach into the data path. The
//! operator's wishes (drain, maintenance) are not health: see
//! [`AdminState`](crate::config::AdminState).

pub mod active;
pub mod passive;

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use log::info;

use crate::config::ServiceConfig;
use passive::Ejection;

/// A change of health worth logging.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    Down,
    Up,
}

/// Consecutive results since the last transition.
#[derive(Debug, Default)]
struct Streak {
    failures: u32,
    successes: u32,
}

/// One backend's health. `up` is read on every pick; the streak lock is
/// taken only when a check or a failed connect reports in.
#[derive(Debug)]
pub struct Health {
    up: AtomicBool,
    streak: Mutex<Streak>,
    /// Passive health: out for a while after too many failed connects.
    ejection: Ejection,
}

impl Default for Health {
    /// UP: a new backend gets the benefit of the doubt until a check or a
    /// connection says otherwise.
    fn default() -> Self {
        Health {
            up: AtomicBool::new(true),
            streak: Mutex::new(Streak::default()),
            ejection: Ejection::default(),
        }
    }
}

impl Health {
    pub fn is_up(&self) -> bool {
        self.up.load(Relaxed)
    }

    /// Ejected by passive health for now.
    pub fn is_ejected(&self) -> bool {
        self.ejection.is_active()
    }

    /// Records a failed check or connect; returns `Down` when this one
    /// takes the backend out (after `fall` in a row).
    pub fn record_failure(&self, fall: u32) -> Option<Transition> {
        let mut streak = self.streak.lock().unwrap_or_else(|e| e.into_inner());
        streak.successes = 0;
        streak.failures = streak.failures.saturating_add(1);
        if self.is_up() && streak.failures >= fall.max(1) {
            self.up.store(false, Relaxed);
            streak.failures = 0;
            return Some(Transition::Down);
        }
        None
    }

    /// Records a passed check; returns `Up` when this one brings the
    /// backend back (after `rise` in a row).
    pub fn record_success(&self, rise: u32) -> Option<Transition> {
        let mut streak = self.streak.lock().unwrap_or_else(|e| e.into_inner());
        streak.failures = 0;
        if self.is_up() {
            return None;
        }
        streak.successes = streak.successes.saturating_add(1);
        if streak.successes >= rise.max(1) {
            self.up.store(true, Relaxed);
            streak.successes = 0;
            return Some(Transition::Up);
        }
        None
    }

    /// The passive side: see [`passive::Ejection::record_connect_failure`].
    pub fn ejection(&self) -> &Ejection {
        &self.ejection
    }

    /// A client's connect to `backend` failed: it counts toward `fall` like
    /// a failed check, and toward passive ejection. Each resulting change
    /// is logged once, here.
    pub fn record_connect_failure(
        &self,
        backend: &impl fmt::Display,
        config: &ServiceConfig,
        reason: &str,
    ) {
        if let Some(t) = self.record_failure(config.health.fall) {
            log_transition(backend, t, reason);
        }
        if self
            .ejection
            .record_connect_failure(config.max_fails, config.fail_timeout)
        {
            info!(
                "backend {backend} out of rotation for {:?} after {} failed connects",
                config.fail_timeout, config.max_fails
            );
        }
    }
}

/// A process-wide instant that lets instants live in an `AtomicU64`.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// `at` as milliseconds since [`epoch`], plus one, so that a stored
/// instant is never 0, which means "none".
pub fn millis_since_epoch(at: Instant) -> u64 {
    at.saturating_duration_since(epoch()).as_millis() as u64 + 1
}

/// Logs a health transition once, where it happens.
pub fn log_transition(backend: &impl fmt::Display, transition: Transition, reason: &str) {
    match transition {
        Transition::Down => info!("backend {backend} is DOWN ({reason})"),
        Transition::Up => info!("backend {backend} is UP"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn falls_after_consecutive_failures_and_rises_after_successes() {
        let h = Health::default();
        assert!(h.is_up());
        assert_eq!(h.record_failure(3), None);
        assert_eq!(h.record_failure(3), None);
        assert_eq!(
            h.record_success(2),
            None,
            "a success resets the failure streak"
        );
        assert_eq!(h.record_failure(3), None);
        assert_eq!(h.record_failure(3), None);
        assert_eq!(h.record_failure(3), Some(Transition::Down));
        assert!(!h.is_up());
        assert_eq!(
            h.record_failure(3),
            None,
            "already down: no second transition"
        );
        assert_eq!(h.record_success(2), None);
        assert_eq!(h.record_success(2), Some(Transition::Up));
        assert!(h.is_up());
    }

    #[test]
    fn ejection_leaves_the_prober_verdict_alone() {
        let health = Health::default();
        for _ in 0..2 {
            health
                .ejection()
                .record_connect_failure(2, Duration::from_secs(3600));
        }
        assert!(health.is_ejected());
        assert!(
            health.is_up(),
            "passive health does not touch the prober's verdict"
        );
    }
}
