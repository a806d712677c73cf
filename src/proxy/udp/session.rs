//! A UDP session: one client address and port on one local address, its
//! socket (or, balancing per datagram, sockets) connected to its
//! backend(s), and what it owes the access log, the registry and the
//! counters when it ends.
//!
//! A session is a connection to the rest of tcplb: it is in the registry
//! of open connections (listed, closed by operators), counted open on its
//! backend (least-conn, `maxconn`, drain), and logged once when it ends.
//! Its byte counts are kept here and handed on at every sweep and at its
//! end, not per datagram, so the data path touches no shared counter per
//! datagram.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::socket;
use crate::pool::PoolState;
use crate::pool::backend::{ActiveConnection, Backend};
use crate::proxy::access::SessionSlot;
use crate::proxy::access_log::{Cause, ConnectionLog};

/// What a session is known by: who sent, and to which of our addresses
/// (`None` on a listener bound to one address).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    pub client: SocketAddr,
    pub local: Option<IpAddr>,
}

/// One backend socket of a session.
pub struct Link {
    /// Connected to the backend; in the worker's readiness set.
    pub socket: std::net::UdpSocket,
    /// The backend it is connected to.
    pub backend: Arc<Backend>,
    /// The snapshot it was picked from, and its place there: what a
    /// passive failure is reported to.
    pub state: Arc<PoolState>,
    pub index: usize,
    /// Counts the session open on the backend while the link lives.
    _open: ActiveConnection<Arc<Backend>>,
    /// Cancelled when an operator's drain deadline passes (or a change of
    /// health closes the backend's connections).
    pub evict: CancellationToken,
    /// The backend answered with an ICMP port unreachable.
    pub failed: bool,
    /// Bytes to and from the backend not yet counted into its stats.
    pub sent: u64,
    pub received: u64,
}

impl Link {
    /// A socket connected to backend `index` of `state`.
    pub fn open(state: &Arc<PoolState>, index: usize) -> io::Result<Link> {
        let backend = state.backends[index].clone();
        let socket = socket::connect_to(backend.addr())?;
        Ok(Link {
            socket,
            _open: backend.open_session(),
            evict: backend.eviction(),
            backend,
            state: state.clone(),
            index,
            failed: false,
            sent: 0,
            received: 0,
        })
    }

    /// Whether datagrams may still go to it: its backend did not refuse
    /// them, and is neither down nor ejected. A drained backend keeps its
    /// sessions (until its drain deadline evicts them).
    pub fn is_usable(&self) -> bool {
        !self.failed && self.backend.is_up() && !self.backend.is_failing()
    }

    /// Counts what it moved into its backend's stats.
    fn flush(&mut self) {
        let stats = &self.backend.stats;
        if self.sent > 0 {
            stats
                .bytes_in
                .fetch_add(std::mem::take(&mut self.sent), Relaxed);
        }
        if self.received > 0 {
            stats
                .bytes_out
                .fetch_add(std::mem::take(&mut self.received), Relaxed);
        }
    }
}

/// One client's session.
pub struct Session {
    pub key: Key,
    /// Its registry entry and access log record.
    pub log: ConnectionLog,
    /// Its backend sockets: one, or per datagram one per backend used.
    pub links: Vec<Link>,
    /// Its share of the client address's limits.
    pub slot: SessionSlot,
    /// The PROXY v2 header before each of its datagrams; empty without.
    pub header: Vec<u8>,
    /// When the last datagram moved either way.
    pub last: Instant,
    /// Replies still due (`responses` for each datagram, less the replies).
    pub owed: u64,
    /// Replies seen; the session counts as answered once there is one.
    pub replies: u64,
    /// Bytes each way not yet counted into the registry entry.
    pub sent: u64,
    pub received: u64,
    /// Why it ended, once it has; [`Cause::Shutdown`] until then.
    pub cause: Cause,
    /// No datagram forwarded yet: the first took its token of the
    /// address's datagram rate when the session was admitted.
    pub fresh: bool,
}

impl Session {
    /// The link to backend `backend`, if the session has one.
    pub fn link_to(&self, backend: &Arc<Backend>) -> Option<usize> {
        self.links
            .iter()
            .position(|l| Arc::ptr_eq(&l.backend, backend))
    }

    /// Counts what it moved into its registry entry and backends' stats.
    pub fn flush(&mut self) {
        let live = &self.log.connection().live;
        if self.sent > 0 || self.received > 0 {
            live.add_moved(
                std::mem::take(&mut self.sent),
                std::mem::take(&mut self.received),
                self.last,
            );
        }
        for link in &mut self.links {
            link.flush();
        }
    }
}

impl Drop for Session {
    /// However it ends (its cause set first, or the worker dropping it at
    /// the end of the drain): counted, then its sockets close, its per-IP
    /// slot frees, and its record goes to the access log.
    fn drop(&mut self) {
        self.flush();
        let connection = self.log.connection().clone();
        let stats = &connection.service.stats;
        stats.active.fetch_sub(1, Relaxed);
        stats.record_bytes(connection.live.sent(), connection.live.received());
        for link in &self.links {
            let backend = &link.backend.stats;
            match self.cause {
                Cause::IdleTimeout => backend.idle_timeouts.fetch_add(1, Relaxed),
                Cause::OperatorDrain => backend.evicted.fetch_add(1, Relaxed),
                _ => 0,
            };
        }
        self.log.record.cause = self.cause;
    }
}

/// A worker's sessions of one listener: by key for client datagrams, by
/// id (the registry's, unique in the process) for replies.
#[derive(Default)]
pub struct Sessions {
    by_key: HashMap<Key, u64>,
    by_id: HashMap<u64, Session>,
}

/// Links per session at most: a token is a session's id and its link's
/// place, in 16 bits.
pub const MAX_LINKS: usize = 1 << 16;

/// The readiness token of link `link` of session `id`.
pub fn token(id: u64, link: usize) -> u64 {
    (id << 16) | (link as u64 & 0xffff)
}

/// The session id and link place a token names.
pub fn untoken(token: u64) -> (u64, usize) {
    (token >> 16, (token & 0xffff) as usize)
}

impl Sessions {
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// The id of `key`'s session, if it has one.
    pub fn find(&self, key: &Key) -> Option<u64> {
        self.by_key.get(key).copied()
    }

    pub fn get_mut(&mut self, id: u64) -> Option<&mut Session> {
        self.by_id.get_mut(&id)
    }

    /// Adds `session` under its registry id.
    pub fn insert(&mut self, session: Session) -> u64 {
        let id = session.log.connection().id;
        self.by_key.insert(session.key, id);
        self.by_id.insert(id, session);
        id
    }

    /// Ends session `id` for `cause`, if it is still there.
    pub fn end(&mut self, id: u64, cause: Cause) {
        if let Some(mut session) = self.by_id.remove(&id) {
            if self.by_key.get(&session.key) == Some(&id) {
                self.by_key.remove(&session.key);
            }
            session.cause = cause;
        }
    }

    /// Every session, for a sweep.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&u64, &mut Session)> {
        self.by_id.iter_mut()
    }
}
