//! The backend pool of one listener: who the backends are, which strategy
//! picks among them, and the settings connections are served with.
//!
//! Connections take a snapshot ([`PoolState`]) when they start and keep it,
//! so a reload can swap in a new pool without touching open connections.
//! The one lock guards only the swap of that snapshot, never any I/O.

use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use log::info;

use crate::access::ClientTable;
use crate::backend::{Backend, Transition};
use crate::config::ServiceConfig;
use crate::listener::ListenerStats;
use crate::strategy::Strategy;

/// An immutable view of the pool: open connections keep the one they started with.
pub struct PoolState {
    pub config: ServiceConfig,
    pub backends: Vec<Arc<Backend>>,
    strategy: Box<dyn Strategy>,
}

impl PoolState {
    /// The next backend for `client`, skipping indices in `tried`, unhealthy
    /// backends and those at their connection limit.
    pub fn pick(&self, client: IpAddr, tried: &[usize]) -> Option<usize> {
        let eligible = |i: usize| !tried.contains(&i) && self.backends[i].is_available();
        self.strategy.pick(&self.backends, &eligible, client)
    }

    pub fn any_up(&self) -> bool {
        self.backends.iter().any(|b| b.is_up())
    }
}

pub struct BackendPool {
    current: RwLock<Arc<PoolState>>,
    /// The listener's counters; here rather than in the snapshot so a
    /// reload keeps them.
    pub stats: ListenerStats,
    /// Per-client-IP limits; kept across reloads for the same reason.
    pub clients: ClientTable,
}

impl BackendPool {
    pub fn new(config: ServiceConfig) -> Self {
        let state = build(config, &[]);
        BackendPool {
            current: RwLock::new(Arc::new(state)),
            stats: ListenerStats::default(),
            clients: ClientTable::default(),
        }
    }

    /// The pool as it is now.
    pub fn load(&self) -> Arc<PoolState> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Swaps in a new configuration for new connections. Backends whose
    /// spec is unchanged keep their health and counters; removed ones drain
    /// as their open connections finish.
    pub fn replace(&self, config: ServiceConfig) {
        let old = self.load();
        let state = Arc::new(build(config, &old.backends));
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = state;
    }
}

fn build(config: ServiceConfig, previous: &[Arc<Backend>]) -> PoolState {
    let backends: Vec<Arc<Backend>> = config
        .backends
        .iter()
        .map(|spec| {
            previous
                .iter()
                .find(|b| b.spec == *spec)
                .cloned()
                .unwrap_or_else(|| Arc::new(Backend::new(spec.clone())))
        })
        .collect();
    let strategy = config.strategy.build(&backends);
    PoolState {
        config,
        backends,
        strategy,
    }
}

/// Logs a health transition once, where it happens.
pub fn log_transition(backend: &Backend, transition: Transition, reason: &str) {
    match transition {
        Transition::Down => info!("backend {backend} is DOWN ({reason})"),
        Transition::Up => info!("backend {backend} is UP"),
    }
}
