//! The open connections of the process, so an operator can list them and
//! close one (HAProxy's `show sess` / `shutdown session`) or all of one
//! backend's.
//!
//! Why sharded, and not one map under one lock: listing 100,000 open
//! connections must not stall the data path. The registry is
//! [`SHARDS`] maps, each under its own small lock, a connection in the
//! shard of its id. The data path takes one shard's lock twice per
//! connection, for an insert and a remove; a listing takes each shard's
//! lock in turn only to copy out at most one page of `Arc`s (the maps are
//! ordered by id, so a page after a cursor is a range), then reads the
//! figures from the copied entries with no lock held. So a connection
//! opening or closing waits at most for one page's copy out of one shard,
//! never for the whole listing, and a listing never sees a half-updated
//! entry: everything that changes while a connection runs (bytes, last
//! activity, the backend once chosen) is an atomic or set once.
//! Per-worker registries were the other choice; shards by id spread the
//! same way without the registry knowing about workers, and keep the
//! cursor (the id) global.
//!
//! Ids start at 1 and only grow, so they are never reused within a run and
//! pagination by "after this id" is stable while connections come and go.
//! A binary upgrade's processes share one sequence ([`ids`]): a connection
//! moved to the new process keeps its id, and no other connection gets it.

pub mod ids;

use std::collections::{BTreeMap, BinaryHeap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::SystemTime;

use tokio::time::Instant;

use crate::pool::Pool;
use crate::pool::backend::Backend;
use crate::proxy::Service;
use crate::proxy::moving::MoveState;
use crate::proxy::pipe::Live;
use ids::IdSequence;

/// How many independently locked maps the registry has.
pub const SHARDS: usize = 64;

/// One open client connection as the registry knows it.
pub struct Connection {
    /// Unique in this process, from 1 up; the API names the connection by it.
    pub id: u64,
    /// The client's address (the one a PROXY header carried, if any).
    pub client: SocketAddr,
    /// The listener it came in on: its pool's name and bound address.
    pub service: Arc<Service>,
    /// When it was accepted, in wall-clock time, for listings and logs.
    pub started: SystemTime,
    /// The pool it is served from: the listener's, or the one of the TLS
    /// route its ClientHello picked; set once, when known.
    pool: OnceLock<Arc<Pool>>,
    /// The backend it was connected to; set once, when the connect succeeds.
    backend: OnceLock<Arc<Backend>>,
    /// Bytes and activity as they move, and the stop request.
    pub live: Live,
    /// Where it is in a binary upgrade's move of connections.
    pub moving: MoveState,
    /// The stop request came from the end of a drain, not an operator: the
    /// access log says `shutdown`.
    stopped_at_shutdown: AtomicBool,
}

impl Connection {
    /// A connection accepted just now from `client` on `service`.
    pub fn new(id: u64, client: SocketAddr, service: Arc<Service>) -> Self {
        Self::moved(
            id,
            client,
            service,
            SystemTime::now(),
            Live::new(Instant::now()),
        )
    }

    /// A connection accepted at `started` by another process, moved here
    /// with a binary upgrade, with its counters so far in `live`.
    pub fn moved(
        id: u64,
        client: SocketAddr,
        service: Arc<Service>,
        started: SystemTime,
        live: Live,
    ) -> Self {
        Connection {
            id,
            client,
            service,
            started,
            pool: OnceLock::new(),
            backend: OnceLock::new(),
            live,
            moving: MoveState::default(),
            stopped_at_shutdown: AtomicBool::new(false),
        }
    }

    /// Stops it for the end of a drain (see [`Live::stop`]).
    pub fn stop_at_shutdown(&self) {
        self.stopped_at_shutdown.store(true, Relaxed);
        self.live.stop();
    }

    /// Whether a stop request came from the end of a drain.
    pub fn was_stopped_at_shutdown(&self) -> bool {
        self.stopped_at_shutdown.load(Relaxed)
    }

    /// The pool it is served from, once known.
    pub fn pool(&self) -> Option<&Arc<Pool>> {
        self.pool.get()
    }

    /// Records the pool it is served from; only the first call counts.
    pub fn set_pool(&self, pool: &Arc<Pool>) {
        let _ = self.pool.set(pool.clone());
    }

    /// The TLS route that picked its pool (the route's pool is named as
    /// the route); `None` when served by the listener's own backends.
    pub fn route(&self) -> Option<&str> {
        self.pool()
            .filter(|pool| !Arc::ptr_eq(pool, &self.service.pool))
            .map(|pool| pool.name())
    }

    /// The backend it is connected to, once it is.
    pub fn backend(&self) -> Option<&Arc<Backend>> {
        self.backend.get()
    }

    /// Records the backend it connected to; only the first call counts.
    pub fn set_backend(&self, backend: &Arc<Backend>) {
        let _ = self.backend.set(backend.clone());
    }
}

/// One shard, on its own cache line so two workers touching neighbouring
/// shards do not share one.
#[repr(align(64))]
#[derive(Default)]
struct Shard(Mutex<BTreeMap<u64, Arc<Connection>>>);

/// Orders connections by id, for the page heap.
struct ById(Arc<Connection>);

impl PartialEq for ById {
    fn eq(&self, other: &Self) -> bool {
        self.0.id == other.0.id
    }
}

impl Eq for ById {}

impl PartialOrd for ById {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ById {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.id.cmp(&other.0.id)
    }
}

/// The open connections of every listener of one balancer.
pub struct Connections {
    /// Where ids come from (every accept takes one).
    ids: IdSequence,
    /// The connections, each in shard `id % SHARDS`.
    shards: Box<[Shard]>,
}

impl Default for Connections {
    /// A registry whose ids are its own (not shared with an upgrade).
    fn default() -> Self {
        Connections::with_ids(IdSequence::local())
    }
}

/// Which connections a listing or a close is about.
#[derive(Clone, Default)]
pub struct Filter {
    /// Only connections of this listener (by identity: a reload keeps it).
    pub service: Option<Arc<Service>>,
    /// Only connections served from this pool (a listener's or a route's).
    pub pool: Option<Arc<Pool>>,
    /// Only connections to a backend with this name, or found by DNS
    /// under this name.
    pub backend: Option<String>,
}

impl Filter {
    fn matches(&self, c: &Connection) -> bool {
        if let Some(service) = &self.service
            && !Arc::ptr_eq(service, &c.service)
        {
            return false;
        }
        if let Some(pool) = &self.pool
            && !c.pool().is_some_and(|p| Arc::ptr_eq(p, pool))
        {
            return false;
        }
        match &self.backend {
            None => true,
            Some(name) => c
                .backend()
                .is_some_and(|b| b.name() == name || b.source() == Some(name.as_str())),
        }
    }
}

impl Connections {
    /// An empty registry taking ids from `ids`.
    pub fn with_ids(ids: IdSequence) -> Self {
        Connections {
            ids,
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
        }
    }

    /// A fresh id for a connection being accepted.
    pub fn next_id(&self) -> u64 {
        self.ids.next()
    }

    /// The id sequence, to hand to an upgrade's new process.
    pub fn ids(&self) -> &IdSequence {
        &self.ids
    }

    fn shard(&self, id: u64) -> MutexGuard<'_, BTreeMap<u64, Arc<Connection>>> {
        let shard = &self.shards[(id % SHARDS as u64) as usize];
        shard.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lists `connection` until [`Connections::remove`].
    pub fn insert(&self, connection: Arc<Connection>) {
        self.shard(connection.id).insert(connection.id, connection);
    }

    /// Forgets connection `id` (it ended).
    pub fn remove(&self, id: u64) {
        self.shard(id).remove(&id);
    }

    /// Connection `id`, if it is open.
    pub fn get(&self, id: u64) -> Option<Arc<Connection>> {
        self.shard(id).get(&id).cloned()
    }

    /// How many connections are open now.
    pub fn len(&self) -> usize {
        (0..SHARDS as u64).map(|i| self.shard(i).len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Up to `limit` open connections matching `filter` with an id above
    /// `after`, in id order. Each shard's lock is held only while its
    /// entries above `after` are walked in id order, up to `limit` matches
    /// or the first id that could not make the page (the `limit` smallest
    /// ids seen so far are kept in a heap).
    pub fn page(&self, after: u64, limit: usize, filter: &Filter) -> Vec<Arc<Connection>> {
        let mut best: BinaryHeap<ById> = BinaryHeap::with_capacity(limit + 1);
        if limit == 0 {
            return Vec::new();
        }
        for i in 0..SHARDS as u64 {
            let shard = self.shard(i);
            let mut taken = 0;
            for (id, c) in shard.range(after.saturating_add(1)..) {
                let full = best.len() == limit;
                if taken == limit || full && best.peek().is_some_and(|worst| *id > worst.0.id) {
                    break;
                }
                if filter.matches(c) {
                    taken += 1;
                    best.push(ById(c.clone()));
                    if best.len() > limit {
                        best.pop();
                    }
                }
            }
        }
        best.into_sorted_vec().into_iter().map(|c| c.0).collect()
    }

    /// Every open connection matching `filter`, shard by shard (each lock
    /// held for one shard's copy).
    pub fn matching(&self, filter: &Filter) -> Vec<Arc<Connection>> {
        let mut found = Vec::new();
        for i in 0..SHARDS as u64 {
            let shard = self.shard(i);
            found.extend(shard.values().filter(|c| filter.matches(c)).cloned());
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering::Relaxed;
    use std::time::Duration;

    use super::*;
    use crate::config::{ServiceConfig, parse_backend};

    fn service() -> Arc<Service> {
        let backends = vec![parse_backend("127.0.0.1:1").unwrap()];
        let config = ServiceConfig::new("127.0.0.1:0".parse().unwrap(), backends);
        Arc::new(Service::new(Arc::new(Pool::new("web", config))))
    }

    fn open(registry: &Connections, service: &Arc<Service>) -> Arc<Connection> {
        let id = registry.next_id();
        let c = Arc::new(Connection::new(
            id,
            "127.0.0.1:5000".parse().unwrap(),
            service.clone(),
        ));
        registry.insert(c.clone());
        c
    }

    #[test]
    fn pages_follow_the_cursor_in_id_order_and_skip_closed_ones() {
        let registry = Connections::default();
        let s = service();
        let all: Vec<_> = (0..300).map(|_| open(&registry, &s)).collect();
        assert_eq!(registry.len(), 300);
        // Close every third one.
        for c in all.iter().step_by(3) {
            registry.remove(c.id);
        }
        let open_ids: Vec<u64> = all
            .iter()
            .map(|c| c.id)
            .filter(|id| (id - 1) % 3 != 0)
            .collect();
        let mut seen = Vec::new();
        let mut after = 0;
        loop {
            let page = registry.page(after, 7, &Filter::default());
            assert!(page.len() <= 7);
            if page.is_empty() {
                break;
            }
            after = page.last().unwrap().id;
            seen.extend(page.iter().map(|c| c.id));
        }
        assert_eq!(seen, open_ids);
        assert!(registry.get(all[0].id).is_none());
        assert!(registry.get(all[1].id).is_some());
    }

    #[test]
    fn filters_pick_a_listener_and_a_backend() {
        let registry = Connections::default();
        let (web, other) = (service(), service());
        let a = open(&registry, &web);
        let _b = open(&registry, &other);
        let c = open(&registry, &web);
        let backend = web.pool.load().backends[0].clone();
        c.set_pool(&web.pool);
        c.set_backend(&backend);
        assert_eq!(c.route(), None, "the listener's own pool");
        let only_web = Filter {
            service: Some(web.clone()),
            ..Filter::default()
        };
        let ids = |v: Vec<Arc<Connection>>| v.iter().map(|c| c.id).collect::<Vec<_>>();
        assert_eq!(ids(registry.page(0, 10, &only_web)), [a.id, c.id]);
        let to_backend = Filter {
            pool: Some(web.pool.clone()),
            backend: Some("127.0.0.1:1".into()),
            ..Filter::default()
        };
        assert_eq!(ids(registry.matching(&to_backend)), [c.id]);
        let other_pool = Filter {
            pool: Some(other.pool.clone()),
            backend: Some("127.0.0.1:1".into()),
            ..Filter::default()
        };
        assert!(registry.matching(&other_pool).is_empty());
        let elsewhere = Filter {
            backend: Some("127.0.0.1:2".into()),
            ..Filter::default()
        };
        assert!(registry.matching(&elsewhere).is_empty());
        // Served from a route's pool: the route is that pool's name.
        let routed = open(&registry, &web);
        routed.set_pool(&other.pool);
        assert_eq!(routed.route(), Some("web"));
    }

    /// A listing of 100,000 connections taken while a thread opens and
    /// closes connections: the data path's insert/remove never waits for
    /// more than one shard's page copy.
    #[test]
    fn a_listing_of_100k_connections_does_not_stall_inserts() {
        let registry = Arc::new(Connections::default());
        let s = service();
        let held: Vec<_> = (0..100_000).map(|_| open(&registry, &s)).collect();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let churn = {
            let (registry, s, stop) = (registry.clone(), s.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut worst = Duration::ZERO;
                let mut rounds = 0u64;
                while !stop.load(Relaxed) && rounds < 5_000_000 {
                    let started = std::time::Instant::now();
                    let c = open(&registry, &s);
                    registry.remove(c.id);
                    worst = worst.max(started.elapsed());
                    rounds += 1;
                }
                (worst, rounds)
            })
        };
        // Walk the whole listing, page by page, a few times.
        let mut listed = 0;
        for _ in 0..3 {
            let mut after = 0;
            listed = 0;
            loop {
                let page = registry.page(after, 1000, &Filter::default());
                let Some(last) = page.last() else { break };
                after = last.id;
                listed += page.len();
            }
        }
        stop.store(true, Relaxed);
        let (worst, rounds) = churn.join().unwrap();
        assert!(listed >= held.len(), "{listed}");
        assert!(rounds > 0);
        // Generous (a shared 2-core machine can deschedule the thread for
        // a while): a lock held across the walk would hold inserts for
        // the whole of it, three times over.
        assert!(worst < Duration::from_secs(1), "{worst:?}");
        drop(held);
    }
}
