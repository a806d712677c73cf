//! Health: whether a backend is alive, as checks, its agent and connects
//! find it.
//!
//! Each source and each kind of check has a module of its own:
//!
//! - [`active`] schedules the checks of a pool's backends (rise/fall) and
//!   its agent checks, each on its own interval;
//! - [`check`] is the small trait every kind of check implements, and the
//!   transport a check connects with; one module per kind: [`connect`],
//!   [`steps`] (send/expect sequences), [`http`] (hyper's client),
//!   [`exec`] (a program, no shell) and [`udp`] (a datagram, for UDP
//!   listeners);
//! - [`agent`] is HAProxy's agent protocol: the backend's own word on its
//!   weight, state and health, kept apart from the operator's;
//! - [`passive`] ejects a backend after too many failed connects in a
//!   window (nginx's `max_fails`), capped and growing as Envoy's outlier
//!   detection;
//! - [`policy`] is what a change of health does to open connections
//!   (`on_down`, `on_backup_up`), and [`panic`] the panic threshold.
//!
//! Checks only *report*: they move a backend's [`Health`] and their caller
//! logs the [`Transition`] and applies the policies; they never reach into
//! the data path. The operator's wishes (drain, maintenance) are not
//! health: see [`AdminState`](crate::config::AdminState).

pub mod active;
pub mod agent;
pub mod check;
pub mod connect;
pub mod exec;
pub mod http;
pub mod panic;
pub mod passive;
pub mod policy;
pub mod steps;
pub mod udp;

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use log::info;
use serde::Serialize;

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

/// What the last check of a backend found, for `/status`, the API and
/// the page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckReport {
    /// Passed, failed, or not run to a verdict.
    pub result: CheckResult,
    /// What it saw: `HTTP 200`, `connection refused`, `exit 1: no
    /// response`, `expected "+PONG", got "-ERR"`.
    pub reason: String,
    /// When it ended.
    pub at: SystemTime,
    /// How long it took.
    pub took: Duration,
}

/// A check's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckResult {
    Passed,
    Failed,
    /// We could not run it (out of descriptors): no verdict on the backend.
    Skipped,
}

/// What a backend's health is and has been: the last check and the last
/// change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthReport {
    /// The last active check; `None` before the first one ends.
    pub last_check: Option<CheckReport>,
    /// When the backend's health (checks and agent together) last changed,
    /// or it joined the pool.
    pub since: SystemTime,
    /// Why it is as it is since then: the failure that took it down, or
    /// what brought it up (`joined the pool`, `check passed`).
    pub why: String,
}

/// One backend's health from checks and connects. `up` is read on every
/// pick; the locks are taken only when a check or a failed connect
/// reports in, or the admin endpoint reads the report.
#[derive(Debug)]
pub struct Health {
    up: AtomicBool,
    streak: Mutex<Streak>,
    /// Passive health: out for a while after too many failed connects.
    ejection: Ejection,
    /// The last check and the last change, for reporting.
    report: Mutex<HealthReport>,
}

impl Default for Health {
    /// UP: a new backend gets the benefit of the doubt until a check or a
    /// connection says otherwise.
    fn default() -> Self {
        Health {
            up: AtomicBool::new(true),
            streak: Mutex::new(Streak::default()),
            ejection: Ejection::default(),
            report: Mutex::new(HealthReport {
                last_check: None,
                since: SystemTime::now(),
                why: "joined the pool".into(),
            }),
        }
    }
}

impl Health {
    /// The checks' (and failed connects') verdict; the agent's word is
    /// added by [`Backend::is_up`](crate::pool::backend::Backend::is_up).
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

    /// The passive side: see [`passive::Ejection`].
    pub fn ejection(&self) -> &Ejection {
        &self.ejection
    }

    /// Keeps `check` as the last check's report.
    pub fn record_check(&self, check: CheckReport) {
        let mut report = self.report.lock().unwrap_or_else(|e| e.into_inner());
        report.last_check = Some(check);
    }

    /// Notes that the backend's health changed now, and why.
    pub fn record_change(&self, why: &str) {
        let mut report = self.report.lock().unwrap_or_else(|e| e.into_inner());
        report.since = SystemTime::now();
        report.why = why.to_string();
    }

    /// The last check and the last change.
    pub fn report(&self) -> HealthReport {
        self.report
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
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
        Transition::Up => info!("backend {backend} is UP ({reason})"),
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
    fn the_report_keeps_the_last_check_and_the_last_change() {
        let h = Health::default();
        let joined = h.report();
        assert_eq!(
            (joined.last_check, joined.why.as_str()),
            (None, "joined the pool")
        );
        let check = CheckReport {
            result: CheckResult::Failed,
            reason: "connection refused".into(),
            at: SystemTime::now(),
            took: Duration::from_millis(1),
        };
        h.record_check(check.clone());
        std::thread::sleep(Duration::from_millis(2));
        h.record_change("connection refused");
        let report = h.report();
        assert_eq!(report.last_check, Some(check));
        assert_eq!(report.why, "connection refused");
        assert!(report.since > joined.since);
    }

    #[test]
    fn ejection_leaves_the_prober_verdict_alone() {
        let health = Health::default();
        let window = Duration::from_secs(3600);
        for _ in 0..2 {
            health
                .ejection()
                .record_connect_failure(2, window, window, true);
        }
        assert!(health.is_ejected());
        assert!(
            health.is_up(),
            "passive health does not touch the prober's verdict"
        );
    }
}
