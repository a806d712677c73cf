//! The data path: everything that happens to one client connection, from
//! accept to close.
//!
//! - [`listener`]: the listening sockets (one per worker) and the accept loop;
//! - [`access`]: allow/deny networks and per-client-IP limits, right after accept;
//! - [`proxy_protocol`]: reading and writing HAProxy's PROXY header;
//! - [`client_hello`]: reading a TLS ClientHello's server name and ALPN
//!   without terminating TLS, for routing;
//! - [`route`]: which TLS route (and so which pool) a ClientHello picks;
//! - [`serve`]: one connection: pick a backend, connect (retrying others), pipe;
//! - [`pipe`]: moving the bytes both ways (copy or splice), with the idle timeout;
//! - [`failure`]: the exact 502/503 answer (or close) when no backend can take it.
//!
//! Nothing here keeps state of its own beyond a connection's life except the
//! per-IP table; the counters it writes belong to the listener and the
//! backends ([`crate::stats`]), and the backends to the [`crate::pool`].

pub mod access;
pub mod client_hello;
pub mod failure;
pub mod listener;
pub mod pipe;
pub mod proxy_protocol;
pub mod route;
pub mod serve;

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::pool::Pool;
use crate::stats::ListenerStats;
use access::ClientTable;
use route::Routes;

/// One service as the data path sees it: what every connection accepted on
/// its listener shares. It lives as long as the listener, across reloads.
pub struct Service {
    /// The listener's settings and its own backends (with TLS routes, the
    /// default route).
    pub pool: Arc<Pool>,
    /// TLS routes and their pools; empty unless configured. Swapped whole
    /// on reload; a connection keeps the route it was given.
    pub routes: ArcSwap<Routes>,
    /// The listener's counters; shared with the admin endpoint.
    pub stats: Arc<ListenerStats>,
    /// Per-client-IP limits; kept across reloads so a reload resets no one.
    pub clients: ClientTable,
}

impl Service {
    pub fn new(pool: Arc<Pool>) -> Self {
        Service {
            pool,
            routes: ArcSwap::default(),
            stats: Arc::default(),
            clients: ClientTable::default(),
        }
    }
}
