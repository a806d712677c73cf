//! The pool of one service: its backends, the selector that picks among
//! them, and the settings its connections are served with.
//!
//! One small idea per module, after pingora-load-balancing:
//!
//! - [`backend`]: one backend, with its admin state and health kept apart;
//! - [`selection`]: the [`Selector`](selection::Selector) trait and the
//!   strategies behind it;
//! - [`health`]: active checks and passive ejection, which report
//!   transitions;
//! - [`discovery`]: where the member set comes from, as diffs;
//! - [`connect`]: opening a backend connection and telling whose fault a
//!   failure was.
//!
//! Connections load a snapshot ([`PoolState`]) when they start and keep it.
//! A snapshot is immutable: a reload or a membership change builds a new one
//! (with a new selector) and publishes it with `arc-swap`, so the data path
//! reads the pool without a lock, and open connections never see a change
//! under their feet.

pub mod backend;
pub mod connect;
pub mod discovery;
pub mod health;
pub mod selection;

use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use log::{info, warn};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::config::ServiceConfig;
use crate::stats::PoolStats;
use backend::Backend;
use discovery::{Member, Static, Update};
use selection::Selector;

/// An immutable view of the pool: open connections keep the one they started with.
pub struct PoolState {
    /// The service's settings when this snapshot was taken.
    pub config: ServiceConfig,
    /// The members, in the order discovery gave them.
    pub backends: Vec<Arc<Backend>>,
    /// Built for exactly `backends` and their weights; shared by the
    /// snapshots that have both.
    selector: Arc<dyn Selector>,
    /// Slots under `max_conns`; `None` when unlimited.
    admission: Option<Arc<Semaphore>>,
}

impl PoolState {
    /// The next backend for `client`, skipping indices in `tried` and
    /// backends that are not ready, not up, ejected or at their limit.
    pub fn pick(&self, client: IpAddr, tried: &[usize]) -> Option<usize> {
        let eligible = |i: usize| !tried.contains(&i) && self.backends[i].is_available();
        self.selector.pick(&self.backends, &eligible, client)
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

pub struct Pool {
    /// How log lines name this pool: the listener it serves.
    name: String,
    /// The snapshot new connections take; replaced whole, never edited.
    current: ArcSwap<PoolState>,
    /// Serialises writers (reloads, discovery) so that two changes never
    /// race to publish; the data path never takes it.
    writer: Mutex<()>,
    /// Woken when a connection to a backend with a `maxconn` ends.
    slot_freed: Notify,
    /// Membership changes applied, by kind.
    pub stats: PoolStats,
}

impl Pool {
    /// A pool for `config`, with the backends it lists.
    pub fn new(name: impl Into<String>, config: ServiceConfig) -> Self {
        let empty = PoolState {
            selector: Arc::from(selection::build(config.strategy, &[])),
            admission: admission(&config, None),
            config,
            backends: Vec::new(),
        };
        let pool = Pool {
            name: name.into(),
            current: ArcSwap::from_pointee(empty),
            writer: Mutex::new(()),
            slot_freed: Notify::new(),
            stats: PoolStats::default(),
        };
        let backends = pool.load().config.backends.clone();
        pool.publish(
            |state| state.config.clone(),
            Static::new(backends).update(),
            false,
        );
        pool
    }

    /// The pool as it is now: one atomic load, no lock.
    pub fn load(&self) -> Arc<PoolState> {
        self.current.load_full()
    }

    /// Takes new settings for new connections, and the backends they list
    /// as the whole member set (see [`discovery`] for what that keeps).
    pub fn reconfigure(&self, config: ServiceConfig) {
        let backends = config.backends.clone();
        self.publish(move |_| config, Static::new(backends).update(), true);
    }

    /// Applies a membership change from a discovery source; the settings stay.
    pub fn apply(&self, update: Update) {
        self.publish(|state| state.config.clone(), update, true);
    }

    /// Builds and publishes the next snapshot: settings from `settings`,
    /// members from applying `update` to the current ones. Each change is
    /// logged and counted when `announce` (not for the pool's first members).
    fn publish(
        &self,
        settings: impl FnOnce(&PoolState) -> ServiceConfig,
        update: Update,
        announce: bool,
    ) {
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.load();
        let config = settings(&old);
        let current: Vec<(&str, std::net::SocketAddr)> =
            old.backends.iter().map(|b| (b.name(), b.addr())).collect();
        let diff = discovery::diff(&current, update);
        let mut reweighted = false;
        let backends: Vec<Arc<Backend>> = diff
            .members
            .into_iter()
            .map(|member| match member {
                Member::Untouched(index) => old.backends[index].clone(),
                Member::Kept { index, spec } => {
                    let backend = old.backends[index].clone();
                    let changes = backend.update(&spec);
                    if !changes.is_empty() {
                        reweighted |= changes.iter().any(|c| c.starts_with("weight"));
                        info!("{}: backend {backend}: {}", self.name, changes.join(", "));
                        self.stats.updated.fetch_add(1, Relaxed);
                    }
                    backend
                }
                Member::Added(spec) => {
                    let backend = Arc::new(Backend::new(&spec));
                    if announce {
                        info!("{}: backend {backend} added", self.name);
                        self.stats.added.fetch_add(1, Relaxed);
                    }
                    backend
                }
            })
            .collect();
        for index in &diff.removed {
            let gone = &old.backends[*index];
            info!(
                "{}: backend {gone} removed ({} open connection(s) drain)",
                self.name,
                gone.active()
            );
            self.stats.removed.fetch_add(1, Relaxed);
        }
        for spec in &diff.duplicates {
            warn!(
                "{}: backend {} is listed twice; the second entry is ignored",
                self.name, spec.name
            );
        }
        // Same members, weights and strategy: keep the selector (and its
        // place in the rotation). Anything else gets one built afresh.
        let same_members = backends.len() == old.backends.len()
            && backends
                .iter()
                .zip(&old.backends)
                .all(|(a, b)| Arc::ptr_eq(a, b));
        let selector = if same_members && !reweighted && config.strategy == old.config.strategy {
            old.selector.clone()
        } else {
            Arc::from(selection::build(config.strategy, &backends))
        };
        let state = PoolState {
            admission: admission(&config, Some(&old)),
            selector,
            config,
            backends,
        };
        self.current.store(Arc::new(state));
    }

    /// Like [`PoolState::pick`], but when every ready, healthy backend left
    /// is only at its `maxconn` limit, waits until `deadline` for one to
    /// free up.
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
            let only_full = state.backends.iter().enumerate().any(|(i, b)| {
                !tried.contains(&i) && b.is_ready() && b.is_up() && !b.is_failing() && b.is_full()
            });
            if !only_full || tokio::time::timeout_at(deadline, freed).await.is_err() {
                return None;
            }
        }
    }

    /// Tells connections waiting in [`Self::pick_or_wait`] that `backend` may have room.
    pub fn connection_closed(&self, backend: &Backend) {
        if backend.max_conns().is_some() {
            self.slot_freed.notify_waiters();
        }
    }
}

/// The `max_conns` slots for `config`: the old snapshot's when the limit is
/// unchanged, so the connections already open keep counting.
fn admission(config: &ServiceConfig, old: Option<&PoolState>) -> Option<Arc<Semaphore>> {
    match old {
        Some(old) if old.config.max_conns == config.max_conns => old.admission.clone(),
        _ => config
            .max_conns
            .map(|n| Arc::new(Semaphore::new(n as usize))),
    }
}
