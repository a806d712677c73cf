//! The backend pool of one listener: who the backends are, which strategy
//! picks among them, and the settings connections are served with.
//!
//! Connections take a snapshot ([`PoolState`]) when they start and keep it,
//! so a reload can swap in a new pool without touching open connections.
//! The one lock guards only the swap of that snapshot, never any I/O.

use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use log::info;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

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
    /// Slots under `max_conns`; `None` when unlimited.
    admission: Option<Arc<Semaphore>>,
}

impl PoolState {
    /// The next backend for `client`, skipping indices in `tried`, unhealthy
    /// backends and those at their connection limit.
    pub fn pick(&self, client: IpAddr, tried: &[usize]) -> Option<usize> {
        let eligible = |i: usize| !tried.contains(&i) && self.backends[i].is_available();
        self.strategy.pick(&self.backends, &eligible, client)
    }

    /// Takes one of the listener's `max_conns` slots, waiting up to the
    /// queue timeout; `Err` when none came free. The slot is held for as
    /// long as the returned permit lives.
    pub async fn admit(&self) -> Result<Option<OwnedSemaphorePermit>, QueueTimeout> {
        let Some(slots) = &self.admission else {
            return Ok(None);
        };
        match tokio::time::timeout(self.config.queue_timeout, slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Some(permit)),
            _ => Err(QueueTimeout),
        }
    }
}

/// No slot came free within the queue timeout.
#[derive(Debug)]
pub struct QueueTimeout;

pub struct BackendPool {
    current: RwLock<Arc<PoolState>>,
    /// The listener's counters; here rather than in the snapshot so a
    /// reload keeps them.
    pub stats: ListenerStats,
    /// Per-client-IP limits; kept across reloads for the same reason.
    pub clients: ClientTable,
    /// Woken when a connection to a backend with a `maxconn` ends.
    slot_freed: Notify,
}

impl BackendPool {
    pub fn new(config: ServiceConfig) -> Self {
        let state = build(config, &[]);
        BackendPool {
            current: RwLock::new(Arc::new(state)),
            stats: ListenerStats::default(),
            clients: ClientTable::default(),
            slot_freed: Notify::new(),
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
        let mut state = build(config, &old.backends);
        if old.config.max_conns == state.config.max_conns {
            // Same limit: keep counting the connections already open.
            state.admission = old.admission.clone();
        }
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(state);
    }

    /// Like [`PoolState::pick`], but when every healthy backend left is only
    /// at its `maxconn` limit, waits until `deadline` for one to free up.
    pub async fn pick_or_wait(
        &self,
        state: &PoolState,
        client: IpAddr,
        tried: &[usize],
        deadline: Instant,
    ) -> Option<usize> {
        loop {
            // Registered before looking, so a slot freed in between is not missed.
            let freed = self.slot_freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(index) = state.pick(client, tried) {
                return Some(index);
            }
            let only_full =
                state.backends.iter().enumerate().any(|(i, b)| {
                    !tried.contains(&i) && b.is_up() && !b.is_failing() && b.is_full()
                });
            if !only_full || tokio::time::timeout_at(deadline, freed).await.is_err() {
                return None;
            }
        }
    }

    /// Tells connections waiting in [`Self::pick_or_wait`] that `backend` may have room.
    pub fn connection_closed(&self, backend: &Backend) {
        if backend.spec.max_conns.is_some() {
            self.slot_freed.notify_waiters();
        }
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
    let admission = config
        .max_conns
        .map(|n| Arc::new(Semaphore::new(n as usize)));
    PoolState {
        config,
        backends,
        strategy,
        admission,
    }
}

/// Logs a health transition once, where it happens.
pub fn log_transition(backend: &Backend, transition: Transition, reason: &str) {
    match transition {
        Transition::Down => info!("backend {backend} is DOWN ({reason})"),
        Transition::Up => info!("backend {backend} is UP"),
    }
}
