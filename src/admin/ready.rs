//! `GET /ready` and `GET /live`: what the layer in front of a fleet of
//! tcplbs (keepalived's `track_script`, the check that makes a BGP speaker
//! announce or withdraw, a Kubernetes probe) asks before it sends this
//! instance new clients.
//!
//! `/live` answers 200 while the process answers at all. `/ready` answers
//! 200 while this instance wants new clients, and 503 with a one-line
//! reason while it does not ([`NotReady`]): it is starting (its first round
//! of health checks is not over), it is shutting down (from the first
//! instant of a SIGTERM, as kube-apiserver's `/readyz` does, so that
//! `--shutdown-delay` is time for the outer layer to react while the
//! listeners still accept, as Traefik's `requestAcceptGraceTimeout`), an
//! operator turned it off (`tcplb ctl ready off`, Envoy's
//! `/healthcheck/fail`), or, only with `--ready-requires-backends`, no
//! listener has a usable backend.
//!
//! Both are cheap and unauthenticated: a few atomics (with
//! `--ready-requires-backends`, one look at each pool's members, from a
//! list the runtime publishes whenever its pools change), no lock taken,
//! nothing written, nothing a probe should not know.
//! They never wait for other admin traffic: a connection that finds every
//! connection slot answering a request gets one of the probe lane's slots,
//! which serve these two paths only (see the admin endpoint's lanes).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use arc_swap::ArcSwap;

use crate::pool::Pool;

/// Why `/ready` answers 503; several may hold at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotReady {
    /// The first round of health checks is not over yet (a start that is
    /// not an upgrade: an upgrade's old process serves meanwhile).
    Starting,
    /// SIGINT/SIGTERM arrived: the shutdown delay, then the drain.
    ShuttingDown,
    /// `tcplb ctl ready off` (or `PUT /api/v1/ready {"ready":false}`).
    Operator,
    /// `--ready-requires-backends`, and no listener has a backend that is
    /// ready, up and not ejected.
    NoUsableBackend,
}

impl NotReady {
    /// Every reason, in the order `/ready` and `/metrics` list them.
    pub const ALL: [NotReady; 4] = [
        NotReady::Starting,
        NotReady::ShuttingDown,
        NotReady::Operator,
        NotReady::NoUsableBackend,
    ];

    /// The `reason` label of `tcplb_not_ready`, and the API's name for it.
    pub fn label(self) -> &'static str {
        match self {
            NotReady::Starting => "starting",
            NotReady::ShuttingDown => "shutting_down",
            NotReady::Operator => "operator",
            NotReady::NoUsableBackend => "no_usable_backend",
        }
    }

    /// What `/ready`'s body says about it.
    pub fn says(self) -> &'static str {
        match self {
            NotReady::Starting => "starting (first health checks not over)",
            NotReady::ShuttingDown => "shutting down",
            NotReady::Operator => "turned off by an operator (tcplb ctl ready on)",
            NotReady::NoUsableBackend => "no listener has a usable backend",
        }
    }
}

/// What `/ready` is made of: set by the runtime, read by every probe.
#[derive(Default)]
pub struct Readiness {
    /// Until the first round of health checks is over.
    starting: AtomicBool,
    /// From SIGINT/SIGTERM on; never cleared.
    stopping: AtomicBool,
    /// Between `ready off` and `ready on`.
    operator_off: AtomicBool,
    /// `--ready-requires-backends` (a reload may change it).
    requires_backends: AtomicBool,
    /// Every pool (listeners' and TLS routes'), as the runtime last
    /// published them: what `--ready-requires-backends` looks at, without
    /// the runtime's lock (a reload holds it while it looks names up).
    pools: ArcSwap<Vec<Arc<Pool>>>,
}

impl Readiness {
    /// Marks the start as under way (`true`) or over (`false`).
    pub fn set_starting(&self, starting: bool) {
        self.starting.store(starting, Relaxed);
    }

    /// The shutdown has begun: `/ready` answers 503 from now on.
    pub fn set_stopping(&self) {
        self.stopping.store(true, Relaxed);
    }

    /// Whether the shutdown has begun.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Relaxed)
    }

    /// The operator's word: off (`true`) or on; returns what it was.
    pub fn set_operator_off(&self, off: bool) -> bool {
        self.operator_off.swap(off, Relaxed)
    }

    /// Whether an operator turned readiness off.
    pub fn is_operator_off(&self) -> bool {
        self.operator_off.load(Relaxed)
    }

    /// `--ready-requires-backends`.
    pub fn set_requires_backends(&self, requires: bool) {
        self.requires_backends.store(requires, Relaxed);
    }

    /// The pools serving now (listeners' and TLS routes'), after a start
    /// or a reload.
    pub fn set_pools(&self, pools: Vec<Arc<Pool>>) {
        self.pools.store(Arc::new(pools));
    }

    /// Why `/ready` answers 503 now; empty: it answers 200.
    pub fn reasons(&self) -> Vec<NotReady> {
        let mut reasons = Vec::new();
        if self.starting.load(Relaxed) {
            reasons.push(NotReady::Starting);
        }
        if self.stopping.load(Relaxed) {
            reasons.push(NotReady::ShuttingDown);
        }
        if self.operator_off.load(Relaxed) {
            reasons.push(NotReady::Operator);
        }
        if self.requires_backends.load(Relaxed) && !self.any_usable() {
            reasons.push(NotReady::NoUsableBackend);
        }
        reasons
    }

    /// Whether some pool (so some listener, by its own backends or a TLS
    /// route's) has a backend that could take a connection.
    fn any_usable(&self) -> bool {
        let pools = self.pools.load();
        pools
            .iter()
            .any(|pool| pool.load().backends.iter().any(|b| b.is_usable()))
    }
}

/// `/ready`'s body: `ready`, or `not ready: ` and every reason, one line.
pub fn body(reasons: &[NotReady]) -> String {
    if reasons.is_empty() {
        return "ready\n".into();
    }
    let says: Vec<&str> = reasons.iter().map(|r| r.says()).collect();
    format!("not ready: {}\n", says.join("; "))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::{AdminState, ServiceConfig, parse_backend};
    use crate::pool::Pool;

    fn pools(state: AdminState) -> Vec<Arc<Pool>> {
        let mut backend = parse_backend("127.0.0.1:1").unwrap();
        backend.admin_state = state;
        let config = ServiceConfig::new("127.0.0.1:0".parse().unwrap(), vec![backend]);
        vec![Arc::new(Pool::new("web", config))]
    }

    #[test]
    fn every_reason_shows_and_only_the_asked_for_ones_count() {
        let r = Readiness::default();
        // No pool at all: only --ready-requires-backends would mind.
        assert_eq!(r.reasons(), []);
        assert_eq!(body(&[]), "ready\n");
        r.set_starting(true);
        assert_eq!(r.reasons(), [NotReady::Starting]);
        r.set_starting(false);
        assert!(!r.set_operator_off(true));
        assert!(r.set_operator_off(true), "was off already");
        r.set_stopping();
        let reasons = r.reasons();
        assert_eq!(reasons, [NotReady::ShuttingDown, NotReady::Operator]);
        assert_eq!(
            body(&reasons),
            "not ready: shutting down; turned off by an operator (tcplb ctl ready on)\n"
        );
        assert!(r.set_operator_off(false));
        assert_eq!(r.reasons(), [NotReady::ShuttingDown]);
    }

    #[test]
    fn requiring_backends_asks_whether_any_is_usable() {
        let r = Readiness::default();
        r.set_requires_backends(true);
        assert_eq!(r.reasons(), [NotReady::NoUsableBackend], "no pool");
        r.set_pools(pools(AdminState::Ready));
        assert_eq!(r.reasons(), []);
        let mut both = pools(AdminState::Drain);
        r.set_pools(both.clone());
        assert_eq!(r.reasons(), [NotReady::NoUsableBackend]);
        both.extend(pools(AdminState::Ready));
        r.set_pools(both);
        assert_eq!(r.reasons(), [], "one usable pool is enough");
        r.set_pools(pools(AdminState::Drain));
        r.set_requires_backends(false);
        assert_eq!(r.reasons(), []);
    }
}
