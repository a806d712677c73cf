//! Counters: what the data path writes and the admin endpoint reads.
//!
//! They sit below both so that neither depends on the other, and they belong
//! to the thing they describe: a listener's [`ListenerStats`] live as long as
//! the listener, a backend's [`BackendStats`] as long as the backend, and a
//! pool's [`PoolStats`] as long as the pool, so a reload never resets them.
//! Every field is a relaxed atomic: counting never takes a lock.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Counters of one listener.
#[derive(Debug, Default)]
pub struct ListenerStats {
    /// Client connections accepted, refused ones included.
    pub accepted: AtomicU64,
    /// Client connections refused by access control or a connection limit.
    pub rejected: AtomicU64,
    /// Client connections open now (from accept until closed).
    pub active: AtomicU64,
    /// Clients answered 502: every backend tried failed to connect.
    pub bad_gateway: AtomicU64,
    /// Clients answered 503: no backend was available to try.
    pub unavailable: AtomicU64,
    /// Clients closed for a bad or missing PROXY header (`--accept-proxy`).
    pub proxy_header_errors: AtomicU64,
}

impl ListenerStats {
    /// Counts an accepted client for as long as the returned guard lives.
    pub fn open_connection(&self) -> ClientConnection<'_> {
        self.accepted.fetch_add(1, Relaxed);
        self.active.fetch_add(1, Relaxed);
        ClientConnection { stats: self }
    }

    pub fn count_rejected(&self) {
        self.rejected.fetch_add(1, Relaxed);
    }
}

/// Keeps the listener's `active` right however a client connection ends,
/// panics and cancellation included.
pub struct ClientConnection<'a> {
    stats: &'a ListenerStats,
}

impl Drop for ClientConnection<'_> {
    fn drop(&mut self) {
        self.stats.active.fetch_sub(1, Relaxed);
    }
}

/// Counters of one backend.
#[derive(Debug, Default)]
pub struct BackendStats {
    /// Connections open to this backend now.
    pub active: AtomicU64,
    /// Connections ever established to this backend.
    pub total: AtomicU64,
    /// Connect attempts that failed (refused, timed out, unreachable).
    pub connect_failures: AtomicU64,
    /// Bytes from clients to this backend, counted as they are delivered.
    pub bytes_in: AtomicU64,
    /// Bytes from this backend to clients, counted as they are delivered.
    pub bytes_out: AtomicU64,
    /// Connections closed because nothing moved for the idle timeout.
    pub idle_timeouts: AtomicU64,
    /// Connections closed at the maximum connection age.
    pub max_age_closes: AtomicU64,
    /// Connections closed because an operator's drain deadline passed.
    pub evicted: AtomicU64,
    /// Duration of the last successful health check, in microseconds.
    pub check_latency_us: AtomicU64,
}

/// Changes to one pool's member set, by kind: each change that discovery
/// (the configuration today) brings is counted once, where it is applied.
#[derive(Debug, Default)]
pub struct PoolStats {
    /// Backends that joined the pool.
    pub added: AtomicU64,
    /// Backends that left the pool (their open connections drain).
    pub removed: AtomicU64,
    /// Backends whose weight, connection limit or admin state changed in place.
    pub updated: AtomicU64,
}

/// The control API's counters: requests that changed something, by
/// action, and requests refused, by reason. Written by the admin endpoint
/// and the runtime (state-file writes), read by `/metrics`.
#[derive(Debug, Default)]
pub struct ControlStats {
    /// Changes applied, indexed like [`ControlStats::ACTIONS`].
    pub changes: [AtomicU64; 6],
    /// Requests refused, indexed like [`ControlStats::REASONS`].
    pub rejected: [AtomicU64; 7],
    /// State-file writes that failed (the change still applied in memory).
    pub state_write_failures: AtomicU64,
}

impl ControlStats {
    /// The `action` label values.
    pub const ACTIONS: [&'static str; 6] =
        ["drain", "maintenance", "ready", "weight", "add", "remove"];
    /// The `reason` label values.
    pub const REASONS: [&'static str; 7] = [
        "forbidden",
        "bad_request",
        "not_found",
        "method_not_allowed",
        "conflict",
        "too_large",
        "unavailable",
    ];

    /// Counts one change of `action` (one of [`Self::ACTIONS`]).
    pub fn count_change(&self, action: &str) {
        if let Some(i) = Self::ACTIONS.iter().position(|a| *a == action) {
            self.changes[i].fetch_add(1, Relaxed);
        }
    }

    /// Counts one refusal for `reason` (one of [`Self::REASONS`]).
    pub fn count_rejected(&self, reason: &str) {
        if let Some(i) = Self::REASONS.iter().position(|r| *r == reason) {
            self.rejected[i].fetch_add(1, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listener_active_follows_connection_guards() {
        let stats = ListenerStats::default();
        let first = stats.open_connection();
        let second = stats.open_connection();
        assert_eq!(stats.active.load(Relaxed), 2);
        drop(first);
        drop(second);
        assert_eq!(stats.active.load(Relaxed), 0);
        assert_eq!(stats.accepted.load(Relaxed), 2);
        stats.count_rejected();
        assert_eq!(stats.rejected.load(Relaxed), 1);
    }
}
