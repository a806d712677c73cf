//! Passive health: a backend that fails `max_fails` connects within
//! `fail_timeout` is ejected (nginx's `max_fails`), before the next probe
//! would notice. It does not touch the prober's up/down verdict: the two
//! expire independently.
//!
//! As in Envoy's outlier detection, an ejection that repeats lasts longer
//! each time: the n-th in a row lasts n × `fail_timeout`, up to
//! `max_ejection_time` (Envoy's `base_ejection_time` × times ejected, up to
//! `max_ejection_time`). Each `fail_timeout` that passes without a failed
//! connect (and not ejected) takes one off the count, as Envoy's interval
//! sweeps do; a backend kept in by the cap that goes on failing is not
//! forgiven. The
//! pool caps how many of its backends may be ejected at once
//! (`max_ejection_percent`, see `PoolState::connect_failed`); this module
//! is told whether one more may be.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use super::millis_since_epoch;

/// What a failed connect did to passive health.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ejected {
    /// Nothing yet (below `max_fails`, already ejected, or off).
    No,
    /// Ejected now, for this long.
    For(Duration),
    /// `max_fails` was reached, but the pool's cap allows no more
    /// ejections: it stays in rotation.
    Capped,
}

/// Failed connects counted within one `fail_timeout` window, and the
/// ejections so far.
#[derive(Debug, Default)]
struct Record {
    /// When the current window began; `None`: no failure counted.
    window_started: Option<Instant>,
    /// Failures in the current window.
    failures: u32,
    /// Ejections in a row: the next one lasts one more `fail_timeout`.
    ejections: u32,
    /// When the last ejection ended (or will).
    last_ended: Option<Instant>,
    /// When the last failed connect was counted.
    last_failure: Option<Instant>,
}

#[derive(Debug, Default)]
pub struct Ejection {
    /// Ejected until this many ms after the health epoch; 0 is never. An
    /// atomic so that every pick can read it without a lock.
    out_until_ms: AtomicU64,
    /// Taken only when a connect fails.
    record: Mutex<Record>,
}

impl Ejection {
    pub fn is_active(&self) -> bool {
        let until = self.out_until_ms.load(Relaxed);
        // Most backends are never ejected: skip the clock read for them.
        until != 0 && millis_since_epoch(Instant::now()) < until
    }

    fn is_active_at(&self, now: Instant) -> bool {
        let until = self.out_until_ms.load(Relaxed);
        until != 0 && millis_since_epoch(now) < until
    }

    /// Ejections in a row so far (the next lasts one `fail_timeout` more).
    pub fn times(&self) -> u32 {
        self.record
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .ejections
    }

    /// Counts a failed connect toward `max_fails` within `fail_timeout`;
    /// ejects the backend when this one reaches it and `may_eject` (the
    /// pool is under its cap). `max_fails` 0 turns passive health off.
    pub fn record_connect_failure(
        &self,
        max_fails: u32,
        fail_timeout: Duration,
        max_ejection_time: Duration,
        may_eject: bool,
    ) -> Ejected {
        let now = Instant::now();
        self.record_at(now, max_fails, fail_timeout, max_ejection_time, may_eject)
    }

    /// [`Self::record_connect_failure`] at `now`.
    fn record_at(
        &self,
        now: Instant,
        max_fails: u32,
        fail_timeout: Duration,
        max_ejection_time: Duration,
        may_eject: bool,
    ) -> Ejected {
        if max_fails == 0 || self.is_active_at(now) {
            return Ejected::No;
        }
        let mut record = self.record.lock().unwrap_or_else(|e| e.into_inner());
        // Quiet since: the last failure, or the last ejection's end.
        let quiet_since = record.last_ended.max(record.last_failure);
        record.last_failure = Some(now);
        match record.window_started {
            Some(started) if now.duration_since(started) <= fail_timeout => {}
            _ => {
                record.window_started = Some(now);
                record.failures = 0;
            }
        }
        record.failures += 1;
        if record.failures < max_fails {
            return Ejected::No;
        }
        if !may_eject {
            return Ejected::Capped;
        }
        // Each whole window without a failure forgives one ejection.
        if let Some(since) = quiet_since {
            let quiet = now.saturating_duration_since(since);
            let forgiven = (quiet.as_nanos() / fail_timeout.as_nanos().max(1)) as u32;
            record.ejections = record.ejections.saturating_sub(forgiven);
        }
        record.ejections = record.ejections.saturating_add(1);
        let length = fail_timeout
            .saturating_mul(record.ejections)
            .min(max_ejection_time.max(fail_timeout));
        record.window_started = None;
        record.failures = 0;
        record.last_ended = Some(now + length);
        self.out_until_ms
            .store(millis_since_epoch(now + length), Relaxed);
        Ejected::For(length)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn max_fails_within_the_window_eject_for_the_window() {
        let e = Ejection::default();
        assert_eq!(
            e.record_connect_failure(0, HOUR, HOUR, true),
            Ejected::No,
            "0 is off"
        );
        assert_eq!(e.record_connect_failure(3, HOUR, HOUR, true), Ejected::No);
        assert_eq!(e.record_connect_failure(3, HOUR, HOUR, true), Ejected::No);
        assert!(!e.is_active());
        assert_eq!(
            e.record_connect_failure(3, HOUR, HOUR, true),
            Ejected::For(HOUR)
        );
        assert!(e.is_active());
        assert_eq!(
            e.record_connect_failure(3, HOUR, HOUR, true),
            Ejected::No,
            "already ejected: no second report"
        );

        let short = Ejection::default();
        assert_eq!(
            short.record_connect_failure(2, Duration::ZERO, HOUR, true),
            Ejected::No
        );
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(
            short.record_connect_failure(2, Duration::ZERO, HOUR, true),
            Ejected::No,
            "failures outside the window do not add up"
        );
    }

    #[test]
    fn the_cap_keeps_a_failing_backend_in() {
        let e = Ejection::default();
        assert_eq!(
            e.record_connect_failure(1, HOUR, HOUR, false),
            Ejected::Capped
        );
        assert!(!e.is_active());
        assert_eq!(e.times(), 0);
    }

    #[test]
    fn repeated_ejections_grow_up_to_the_cap_and_quiet_time_forgives() {
        let base = Duration::from_secs(30);
        let cap = Duration::from_secs(70);
        let e = Ejection::default();
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        assert_eq!(e.record_at(at(0), 1, base, cap, true), Ejected::For(base));
        assert_eq!(
            e.record_at(at(10), 1, base, cap, true),
            Ejected::No,
            "still out"
        );
        // Failing again as soon as it is back: twice as long, then capped.
        assert_eq!(
            e.record_at(at(31), 1, base, cap, true),
            Ejected::For(base * 2)
        );
        assert_eq!(e.record_at(at(92), 1, base, cap, true), Ejected::For(cap));
        assert_eq!(e.times(), 3);
        // Back at 162; quiet for two whole windows: two forgiven.
        assert_eq!(
            e.record_at(at(162 + 65), 1, base, cap, true),
            Ejected::For(base * 2)
        );
        assert_eq!(e.times(), 2);

        // Kept in by the cap but failing all along: nothing is forgiven.
        let capped = Ejection::default();
        assert_eq!(
            capped.record_at(at(0), 1, base, cap, true),
            Ejected::For(base)
        );
        for t in (31..=151).step_by(20) {
            assert_eq!(
                capped.record_at(at(t), 1, base, cap, false),
                Ejected::Capped
            );
        }
        assert_eq!(
            capped.record_at(at(160), 1, base, cap, true),
            Ejected::For(base * 2)
        );
    }
}
