//! The data path: everything that happens to one client connection, from
//! accept to close.
//!
//! - [`listener`]: the listening sockets (one per worker) and the accept loop;
//! - [`spread`]: which worker serves a connection just accepted (a busier
//!   worker hands it to a less loaded one);
//! - [`access`]: allow/deny networks and per-client-IP limits, right after accept;
//! - [`proxy_protocol`]: reading and writing HAProxy's PROXY header;
//! - [`client_hello`]: reading a TLS ClientHello's server name and ALPN
//!   without terminating TLS, for routing;
//! - [`route`]: which TLS route (and so which pool) a ClientHello picks;
//! - [`tls`]: terminating TLS on a listener or route (certificates by SNI,
//!   client certificates, tickets, reloads), and the pipe for connections
//!   with TLS on either side;
//! - [`serve`]: one connection: pick a backend, connect (retrying others), pipe;
//! - [`pipe`]: moving the bytes both ways (copy or splice), with the idle timeout;
//! - [`failure`]: the exact 502/503 answer (or close) when no backend can take it;
//! - [`connections`]: the registry of open connections (listed and closed by
//!   operators);
//! - [`access_log`]: one record per connection, handed to a writer thread;
//! - [`moving`]: a binary upgrade's move of established connections to the
//!   new process (freezing a pipe at a safe point, adopting one).
//!
//! Nothing here keeps state of its own beyond a connection's life except the
//! per-IP table and the open connections' registry; the counters it writes
//! belong to the listener and the backends ([`crate::stats`]), and the
//! backends to the [`crate::pool`].

pub mod access;
pub mod access_log;
pub mod client_hello;
pub mod connections;
pub mod failure;
pub mod listener;
pub mod moving;
pub mod pipe;
pub mod proxy_protocol;
pub mod route;
pub mod serve;
pub mod spread;
pub mod tls;
pub mod udp;

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::pool::Pool;
use crate::stats::ListenerStats;
use access::ClientTable;
use access_log::AccessLog;
use connections::Connections;
use moving::Mover;
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
    /// Shared: a UDP session holds a slot of it in its own table.
    pub clients: Arc<ClientTable>,
    /// Where the listener is bound (port 0 resolved): how the access log
    /// and the connection listing name it beside the pool's name. Default:
    /// the configured listen address.
    pub listen: SocketAddr,
    /// The open connections of the whole balancer, this listener's among
    /// them. Default: a registry of its own.
    pub connections: Arc<Connections>,
    /// Where this listener's finished connections are logged. Default: off.
    pub access_log: AccessLog,
    /// The whole balancer's move of connections on a binary upgrade.
    /// Default: one of its own, which never moves.
    pub mover: Arc<Mover>,
}

impl Service {
    pub fn new(pool: Arc<Pool>) -> Self {
        let listen = pool.load().config.listen;
        Service {
            pool,
            routes: ArcSwap::default(),
            stats: Arc::default(),
            clients: Arc::default(),
            listen,
            connections: Arc::default(),
            access_log: AccessLog::default(),
            mover: Arc::default(),
        }
    }
}
