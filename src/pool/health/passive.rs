//! Passive health: a backend that fails `max_fails` connects within
//! `fail_timeout` is ejected for `fail_timeout` (nginx's `max_fails`), before
//! the next probe would notice. It does not touch the prober's up/down
//! verdict: the two expire independently.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use super::millis_since_epoch;

/// Failed connects counted within one `fail_timeout` window.
#[derive(Debug)]
struct FailWindow {
    started: Instant,
    failures: u32,
}

#[derive(Debug, Default)]
pub struct Ejection {
    /// Ejected until this many ms after [`epoch`]; 0 is never. An atomic so
    /// that every pick can read it without a lock.
    out_until_ms: AtomicU64,
    /// Taken only when a connect fails.
    window: Mutex<Option<FailWindow>>,
}

impl Ejection {
    pub fn is_active(&self) -> bool {
        let until = self.out_until_ms.load(Relaxed);
        // Most backends are never ejected: skip the clock read for them.
        until != 0 && millis_since_epoch(Instant::now()) < until
    }

    /// Counts a failed connect toward `max_fails` within `fail_timeout`;
    /// returns true when this one ejects the backend for `fail_timeout`.
    /// `max_fails` 0 turns passive health off.
    pub fn record_connect_failure(&self, max_fails: u32, fail_timeout: Duration) -> bool {
        if max_fails == 0 {
            return false;
        }
        let now = Instant::now();
        let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let current = match window.as_mut() {
            Some(w) if now.duration_since(w.started) <= fail_timeout => w,
            _ => window.insert(FailWindow {
                started: now,
                failures: 0,
            }),
        };
        current.failures += 1;
        if current.failures < max_fails || self.is_active() {
            return false;
        }
        *window = None;
        self.out_until_ms
            .store(millis_since_epoch(now + fail_timeout), Relaxed);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_fails_within_the_window_eject_for_the_window() {
        let e = Ejection::default();
        let window = Duration::from_secs(3600);
        assert!(!e.record_connect_failure(0, window), "0 is off");
        assert!(!e.record_connect_failure(3, window));
        assert!(!e.record_connect_failure(3, window));
        assert!(!e.is_active());
        assert!(e.record_connect_failure(3, window));
        assert!(e.is_active());
        assert!(
            !e.record_connect_failure(3, window),
            "already ejected: no second report"
        );

        let short = Ejection::default();
        assert!(!short.record_connect_failure(2, Duration::ZERO));
        std::thread::sleep(Duration::from_millis(5));
        assert!(
            !short.record_connect_failure(2, Duration::ZERO),
            "failures outside the window do not add up"
        );
    }
}
