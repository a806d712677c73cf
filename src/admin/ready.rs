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
//! `--ready-requires-backends`, one look at each pool's members), no lock
//! held across anything, nothing written, nothing a probe should not know.
//! They never wait for other admin traffic: a connection that finds every
//! connection slot answering a request gets one of the probe lane's slots,
//! which serve these two paths only (see the admin endpoint's lanes).

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use super::view::Watched;

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
#[derive(Debug, Default)]
pub struct Readiness {
    /// Until the first round of health checks is over.
    starting: AtomicBool,
    /// From SIGINT/SIGTERM on; never cleared.
    stopping: AtomicBool,
    /// Between `ready off` and `ready on`.
    operator_off: AtomicBool,
    /// `--ready-requires-backends` (a reload may change it).
    requires_backends: AtomicBool,
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

    /// Why `/ready` answers 503 now; empty: it answers 200. `watched` is
    /// asked only with `--ready-requires-backends`.
    pub fn reasons(&self, watched: &dyn Fn() -> Vec<Watched>) -> Vec<NotReady> {
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
        if self.requires_backends.load(Relaxed) && !any_usable(&watched()) {
            reasons.push(NotReady::NoUsableBackend);
        }
        reasons
    }
}

/// Whether some listener (its own pool or one of its TLS routes') has a
/// backend that could take a connection.
fn any_usable(watched: &[Watched]) -> bool {
    watched.iter().any(|w| {
        std::iter::once(&w.pool)
            .chain(w.routes.iter().map(|r| &r.pool))
            .any(|pool| pool.load().backends.iter().any(|b| b.is_usable()))
    })
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

    fn watched(state: AdminState) -> Vec<Watched> {
        let mut backend = parse_backend("127.0.0.1:1").unwrap();
        backend.admin_state = state;
        let config = ServiceConfig::new("127.0.0.1:0".parse().unwrap(), vec![backend]);
        vec![Watched {
            name: "web".into(),
            listen: "127.0.0.1:1".parse().unwrap(),
            pool: Arc::new(Pool::new("web", config)),
            stats: Arc::default(),
            routes: Vec::new(),
        }]
    }

    #[test]
    fn every_reason_shows_and_only_the_asked_for_ones_count() {
        let r = Readiness::default();
        let unasked = || -> Vec<Watched> { panic!("pools read without --ready-requires-backends") };
        assert_eq!(r.reasons(&unasked), []);
        assert_eq!(body(&[]), "ready\n");
        r.set_starting(true);
        assert_eq!(r.reasons(&unasked), [NotReady::Starting]);
        r.set_starting(false);
        assert!(!r.set_operator_off(true));
        assert!(r.set_operator_off(true), "was off already");
        r.set_stopping();
        let reasons = r.reasons(&unasked);
        assert_eq!(reasons, [NotReady::ShuttingDown, NotReady::Operator]);
        assert_eq!(
            body(&reasons),
            "not ready: shutting down; turned off by an operator (tcplb ctl ready on)\n"
        );
        assert!(r.set_operator_off(false));
        assert_eq!(r.reasons(&unasked), [NotReady::ShuttingDown]);
    }

    #[test]
    fn requiring_backends_asks_whether_any_is_usable() {
        let r = Readiness::default();
        r.set_requires_backends(true);
        assert_eq!(r.reasons(&|| watched(AdminState::Ready)), []);
        assert_eq!(
            r.reasons(&|| watched(AdminState::Drain)),
            [NotReady::NoUsableBackend]
        );
        assert_eq!(r.reasons(&Vec::new), [NotReady::NoUsableBackend]);
        r.set_requires_backends(false);
        assert_eq!(r.reasons(&|| watched(AdminState::Drain)), []);
    }
}
