//! One backend server: its address, its health, and its counters.
//!
//! Everything here is read on every connection, so the hot fields are
//! atomics; the rise/fall bookkeeping sits behind a tiny lock that is only
//! taken when a probe or a connect attempt reports in.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::config::BackendSpec;

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

/// Counters a backend accumulates; exported by the admin endpoint.
#[derive(Debug, Default)]
pub struct BackendStats {
    /// Connections open to this backend now.
    pub active: AtomicU64,
    /// Connections ever established to this backend.
    pub total: AtomicU64,
    pub connect_failures: AtomicU64,
    /// Bytes from clients to this backend.
    pub bytes_in: AtomicU64,
    /// Bytes from this backend to clients.
    pub bytes_out: AtomicU64,
    /// Connections closed because nothing moved for the idle timeout.
    pub idle_timeouts: AtomicU64,
    /// Duration of the last successful health check, in microseconds.
    pub check_latency_us: AtomicU64,
}

/// Failed connects counted toward `--max-fails` within one `--fail-timeout` window.
#[derive(Debug)]
struct FailWindow {
    started: Instant,
    failures: u32,
}

pub struct Backend {
    pub spec: BackendSpec,
    up: AtomicBool,
    streak: Mutex<Streak>,
    /// Passive health: out of rotation until this many ms after [`epoch`]; 0 is never.
    out_until_ms: AtomicU64,
    fail_window: Mutex<Option<FailWindow>>,
    pub stats: BackendStats,
}

/// A process-wide instant that lets deadlines live in an `AtomicU64`.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn millis_since_epoch(at: Instant) -> u64 {
    // +1 so that a deadline is never 0, which means "none".
    at.saturating_duration_since(epoch()).as_millis() as u64 + 1
}

impl Backend {
    /// A backend starts UP: it is given the benefit of the doubt until a
    /// probe or a connection says otherwise.
    pub fn new(spec: BackendSpec) -> Self {
        Backend {
            spec,
            up: AtomicBool::new(true),
            streak: Mutex::new(Streak::default()),
            out_until_ms: AtomicU64::new(0),
            fail_window: Mutex::new(None),
            stats: BackendStats::default(),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.spec.addr
    }

    pub fn weight(&self) -> u32 {
        self.spec.weight
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Relaxed)
    }

    pub fn active(&self) -> u64 {
        self.stats.active.load(Relaxed)
    }

    /// Whether a new connection may be sent here now.
    pub fn is_available(&self) -> bool {
        self.is_up() && !self.is_full() && !self.is_failing()
    }

    /// At its `maxconn` limit.
    pub fn is_full(&self) -> bool {
        self.spec
            .max_conns
            .is_some_and(|max| self.active() >= u64::from(max))
    }

    /// Taken out by passive health (`--max-fails`) for now.
    pub fn is_failing(&self) -> bool {
        let until = self.out_until_ms.load(Relaxed);
        // Most backends are never taken out: skip the clock read for them.
        until != 0 && millis_since_epoch(Instant::now()) < until
    }

    /// Counts a failed connect toward nginx-style `max_fails` within
    /// `fail_timeout`; returns true when this one takes the backend out for
    /// `fail_timeout`. `max_fails` 0 turns passive health off.
    pub fn record_connect_failure(&self, max_fails: u32, fail_timeout: Duration) -> bool {
        if max_fails == 0 {
            return false;
        }
        let now = Instant::now();
        let mut window = self.fail_window.lock().unwrap_or_else(|e| e.into_inner());
        let current = match window.as_mut() {
            Some(w) if now.duration_since(w.started) <= fail_timeout => w,
            _ => window.insert(FailWindow {
                started: now,
                failures: 0,
            }),
        };
        current.failures += 1;
        if current.failures < max_fails || self.is_failing() {
            return false;
        }
        *window = None;
        self.out_until_ms
            .store(millis_since_epoch(now + fail_timeout), Relaxed);
        true
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

    /// Records a successful check; returns `Up` when this one brings the
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

    /// Counts a connection for as long as the returned guard lives.
    pub fn open_connection(&self) -> ActiveConnection<'_> {
        self.stats.active.fetch_add(1, Relaxed);
        self.stats.total.fetch_add(1, Relaxed);
        ActiveConnection { backend: self }
    }
}

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backend")
            .field("name", &self.spec.name)
            .field("up", &self.is_up())
            .field("active", &self.active())
            .finish()
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.spec.name)
    }
}

/// Keeps `active` right however a connection ends, panics and
/// cancellation included.
pub struct ActiveConnection<'a> {
    backend: &'a Backend,
}

impl Drop for ActiveConnection<'_> {
    fn drop(&mut self) {
        self.backend.stats.active.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_backend;

    fn backend() -> Backend {
        Backend::new(parse_backend("127.0.0.1:9").unwrap())
    }

    #[test]
    fn falls_after_consecutive_failures_and_rises_after_successes() {
        let b = backend();
        assert!(b.is_up());
        assert_eq!(b.record_failure(3), None);
        assert_eq!(b.record_failure(3), None);
        assert_eq!(
            b.record_success(2),
            None,
            "a success resets the failure streak"
        );
        assert_eq!(b.record_failure(3), None);
        assert_eq!(b.record_failure(3), None);
        assert_eq!(b.record_failure(3), Some(Transition::Down));
        assert!(!b.is_up());
        assert_eq!(
            b.record_failure(3),
            None,
            "already down: no second transition"
        );
        assert_eq!(b.record_success(2), None);
        assert_eq!(b.record_success(2), Some(Transition::Up));
        assert!(b.is_up());
    }

    #[test]
    fn max_fails_within_the_window_take_a_backend_out_for_the_window() {
        let b = backend();
        let window = Duration::from_secs(3600);
        assert!(!b.record_connect_failure(0, window), "0 is off");
        assert!(!b.record_connect_failure(3, window));
        assert!(!b.record_connect_failure(3, window));
        assert!(b.is_available());
        assert!(b.record_connect_failure(3, window));
        assert!(b.is_failing() && !b.is_available());
        assert!(
            b.is_up(),
            "passive health does not touch the prober's verdict"
        );

        let short = backend();
        assert!(!short.record_connect_failure(2, Duration::ZERO));
        std::thread::sleep(Duration::from_millis(5));
        assert!(
            !short.record_connect_failure(2, Duration::ZERO),
            "failures outside the window do not add up"
        );
    }

    #[test]
    fn max_conns_makes_a_backend_unavailable_while_full() {
        let mut spec = parse_backend("127.0.0.1:9").unwrap();
        spec.max_conns = Some(1);
        let b = Backend::new(spec);
        let guard = b.open_connection();
        assert!(!b.is_available());
        drop(guard);
        assert!(b.is_available());
        assert_eq!(b.stats.total.load(Relaxed), 1);
    }
}
