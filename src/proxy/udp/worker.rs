//! One UDP listener socket served on one worker: client datagrams come
//! off it in batches and go to their sessions' backends; replies come off
//! the ready session sockets and go back to their clients in batches,
//! from the address each client sent to; a sweep every [`SWEEP`] ends
//! idle, stopped and evicted sessions and hands the byte counts on.
//!
//! A worker's sessions are its own (the kernel keeps a client's datagrams
//! on one socket of the SO_REUSEPORT group, so on one worker): no lock on
//! the data path. When the listener stops (shutdown, upgrade, a reload
//! that removed it), the worker stops reading client datagrams but keeps
//! its sessions, relaying their replies until they end (idle, responses,
//! or the drain's end), as a TCP connection is drained.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use log::{debug, warn};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::batch::{self, BATCH, Datagrams, REPLY_SLOT};
use super::readiness::Readiness;
use super::session::{self, Key, Link, Session, Sessions};
use super::socket;
use crate::config::udp::{MAX_DATAGRAM, MAX_IPV4_DATAGRAM};
use crate::pool::PoolState;
use crate::proxy::Service;
use crate::proxy::access::Refusal;
use crate::proxy::access_log::{Cause, ConnectionLog};
use crate::proxy::proxy_protocol;
use crate::stats::{Dropped, RateLimit, UdpStats};

/// How often sessions are looked over: idle ones end, stop requests and
/// evictions are acted on, byte counts reach the registry. An idle
/// timeout is kept to within this.
const SWEEP: Duration = Duration::from_millis(250);

/// Serves `socket` (one of `service`'s UDP listener sockets) on the
/// current worker until `stop`, then drains its sessions in a task of
/// `sessions_tracker` (which the runtime's drain waits for).
pub async fn serve(
    socket: std::net::UdpSocket,
    service: Arc<Service>,
    stop: CancellationToken,
    sessions_tracker: TaskTracker,
) {
    let (listener, mut worker) = match Worker::new(socket, service) {
        Ok(made) => made,
        Err(e) => {
            warn!("cannot serve a UDP listening socket: {e}");
            return;
        }
    };
    let mut tokens = Vec::with_capacity(super::readiness::EVENTS);
    let mut sweep = tokio::time::interval(SWEEP);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            ready = listener.readable() => match ready {
                Ok(mut guard) => {
                    if worker.read_clients() {
                        guard.clear_ready();
                    }
                }
                Err(e) => {
                    warn!("{}: UDP listener: {e}", worker.service.listen);
                    break;
                }
            },
            ready = worker.readiness.next(&mut tokens) => {
                if ready.is_ok() {
                    worker.read_replies(&tokens);
                }
            }
            _ = sweep.tick() => worker.sweep(false),
        }
    }
    if worker.sessions.is_empty() {
        return;
    }
    debug!(
        "{}: UDP listener stopped; {} session(s) drain",
        worker.service.listen,
        worker.sessions.len()
    );
    sessions_tracker.spawn(async move {
        // Replies still leave from it.
        let _listener = listener;
        while !worker.sessions.is_empty() {
            tokio::select! {
                ready = worker.readiness.next(&mut tokens) => {
                    if ready.is_ok() {
                        worker.read_replies(&tokens);
                    }
                }
                _ = sweep.tick() => worker.sweep(true),
            }
        }
    });
}

/// What one worker keeps for one listener socket.
struct Worker {
    /// The listener socket (registered with this worker's reactor by
    /// [`serve`], which owns it): replies leave from it.
    fd: RawFd,
    /// Bound to a wildcard address: datagrams carry their local address
    /// and replies are sent from it.
    wildcard: bool,
    service: Arc<Service>,
    sessions: Sessions,
    /// The session sockets with replies to read.
    readiness: Readiness,
    /// Client datagrams, one batch at a time.
    inbound: Datagrams,
    /// Replies on their way to clients, one batch at a time.
    outbound: Datagrams,
    /// Sessions whose last reply due came in this pass (`responses`).
    answered: Vec<u64>,
    /// At most one warning a second about failing sends.
    warnings: RateLimit,
}

/// What one pass moved, counted into [`UdpStats`] once per pass.
#[derive(Default)]
struct Moved {
    datagrams: u64,
    bytes: u64,
}

impl Worker {
    fn new(
        socket: std::net::UdpSocket,
        service: Arc<Service>,
    ) -> io::Result<(AsyncFd<std::net::UdpSocket>, Worker)> {
        let wildcard = socket::prepare(&socket)?;
        // SAFETY: a `std::net::UdpSocket` owns its descriptor, and nothing
        // closes or replaces it while the `AsyncFd` holds it.
        let listener = unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) }
            .map_err(io::Error::from)?;
        let worker = Worker {
            fd: listener.get_ref().as_raw_fd(),
            wildcard,
            service,
            sessions: Sessions::default(),
            readiness: Readiness::new()?,
            // One byte more than any datagram, so `max_datagram_size` can
            // change on reload; the larger ones are dropped, never cut.
            inbound: Datagrams::new(MAX_DATAGRAM as usize + 1),
            outbound: Datagrams::new(REPLY_SLOT),
            answered: Vec::new(),
            warnings: RateLimit::new(Duration::from_secs(1)),
        };
        Ok((listener, worker))
    }

    fn stats(&self) -> &UdpStats {
        &self.service.stats.udp
    }

    /// Reads client datagrams until the socket is empty (at most a few
    /// batches, so replies are not starved); returns whether it is empty.
    fn read_clients(&mut self) -> bool {
        let fd = self.fd;
        for _ in 0..8 {
            match self.inbound.receive_from(fd, self.wildcard) {
                Ok(n) => {
                    let state = self.service.pool.load();
                    let now = Instant::now();
                    let mut moved = Moved::default();
                    for i in 0..n {
                        self.forward(i, &state, now, &mut moved);
                    }
                    let stats = self.stats();
                    stats.datagrams_sent.fetch_add(moved.datagrams, Relaxed);
                    stats.bytes_sent.fetch_add(moved.bytes, Relaxed);
                    self.end_answered();
                    if n < BATCH {
                        return true;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // An ICMP error for an earlier reply, reported on the
                    // listener: nothing to do but read on.
                    debug!("{}: UDP listener: {e}", self.service.listen);
                }
            }
        }
        false
    }

    fn drop_datagram(&self, why: Dropped) {
        let stats = &self.service.stats;
        stats.udp.dropped[why as usize].fetch_add(1, Relaxed);
        if why.is_refusal() {
            stats.rejected.fetch_add(1, Relaxed);
        }
    }

    /// Sends client datagram `i` of the inbound batch on to its session's
    /// backend, starting the session (or a new one, when its backend went
    /// away) as needed.
    fn forward(&mut self, i: usize, state: &Arc<PoolState>, now: Instant, moved: &mut Moved) {
        let (meta, payload) = self.inbound.get(i);
        let config = &state.config.udp;
        if meta.truncated || payload.len() > config.max_datagram_size as usize {
            self.drop_datagram(Dropped::TooLarge);
            return;
        }
        let key = Key {
            client: meta.peer,
            local: meta.local.filter(|_| self.wildcard),
        };
        let len = payload.len();
        let mut tried: Vec<usize> = Vec::new();
        // A datagram refused by its backend (an ICMP error already
        // pending), or whose session's backend went away, tries another:
        // at most once per backend, and once more for a new session.
        for _ in 0..=state.backends.len() {
            let id = match self.sessions.find(&key) {
                Some(id) => id,
                None => match self.start_session(key, state, now, &tried) {
                    Ok(id) => id,
                    Err(why) => {
                        self.drop_datagram(why);
                        return;
                    }
                },
            };
            let Some(session) = self.sessions.get_mut(id) else {
                return;
            };
            if !session.fresh && !session.slot.allow_datagram(now.into_std()) {
                self.drop_datagram(Dropped::PerIpRate);
                return;
            }
            session.fresh = false;
            let link = match pick_link(session, state, &tried, &self.readiness, id) {
                Ok(link) => link,
                Err(Some(_)) => {
                    self.sessions.end(id, Cause::BackendDown);
                    continue;
                }
                Err(None) => {
                    self.drop_datagram(Dropped::NoBackend);
                    return;
                }
            };
            if session.header.len() + len > MAX_IPV4_DATAGRAM as usize {
                self.drop_datagram(Dropped::TooLarge);
                return;
            }
            let (_, payload) = self.inbound.get(i);
            let l = &mut session.links[link];
            match batch::send_connected(l.socket.as_raw_fd(), &session.header, payload) {
                Ok(_) => {
                    l.sent += len as u64;
                    session.sent += len as u64;
                    session.last = now;
                    moved.datagrams += 1;
                    moved.bytes += len as u64;
                    if let Some(responses) = config.responses {
                        session.owed += u64::from(responses);
                        if responses == 0 {
                            self.answered.push(id);
                        }
                    }
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    tried.push(l.index);
                    refused(l);
                    if session.links.iter().all(|l| l.failed) {
                        self.sessions.end(id, Cause::BackendDown);
                    }
                }
                Err(e) => {
                    if let Some(more) = self.warnings.allow() {
                        warn!(
                            "{}: cannot send a datagram to {}: {e} ({more} more since the last \
                             warning)",
                            self.service.listen, l.backend
                        );
                    }
                    self.drop_datagram(Dropped::SendFailed);
                    return;
                }
            }
        }
        self.drop_datagram(Dropped::Unreachable);
    }

    /// A new session for `key`'s first datagram (which takes the first
    /// token of its address's datagram rate).
    fn start_session(
        &mut self,
        key: Key,
        state: &Arc<PoolState>,
        now: Instant,
        tried: &[usize],
    ) -> Result<u64, Dropped> {
        let config = &state.config;
        let stats = &self.service.stats;
        if let Some(max) = config.udp.max_sessions
            && stats.active.load(Relaxed) >= u64::from(max)
        {
            return Err(Dropped::MaxSessions);
        }
        let slot = self
            .service
            .clients
            .admit_session(
                key.client.ip(),
                &config.access,
                config.udp.max_sessions_per_ip,
                config.udp.datagram_rate_per_ip,
                now.into_std(),
            )
            .map_err(|refusal| match refusal {
                Refusal::Denied | Refusal::NotAllowed => Dropped::Denied,
                Refusal::TooManyConnections => Dropped::PerIpSessions,
                Refusal::RateLimited => Dropped::PerIpRate,
                Refusal::TableFull => Dropped::PerIpTable,
            })?;
        let local = SocketAddr::new(
            key.local.unwrap_or_else(|| self.service.listen.ip()),
            self.service.listen.port(),
        );
        let header = match config.send_proxy {
            Some(_) => proxy_protocol::encode_v2_datagram(key.client, local),
            None => Vec::new(),
        };
        let mut log = ConnectionLog::accept(self.service.clone(), key.client);
        log.register();
        log.connection().set_pool(&self.service.pool);
        let mut session = Session {
            key,
            log,
            links: Vec::new(),
            slot,
            header,
            last: now,
            owed: 0,
            replies: 0,
            sent: 0,
            received: 0,
            cause: Cause::Shutdown,
            fresh: true,
        };
        stats.accepted.fetch_add(1, Relaxed);
        stats.active.fetch_add(1, Relaxed);
        if !config.udp.per_datagram {
            // One backend for the session's life, picked now.
            let link = open_link(state, key.client.ip(), tried)
                .inspect_err(|_| session.cause = Cause::NoBackend)?;
            session.log.connection().set_backend(&link.backend);
            session.links.push(link);
        }
        let id = self.sessions.insert(session);
        if let Some(session) = self.sessions.get_mut(id)
            && let Some(link) = session.links.first()
            && let Err(e) = self.readiness.add(&link.socket, session::token(id, 0))
        {
            warn!("cannot watch a UDP session's socket: {e}");
            self.sessions.end(id, Cause::NoBackend);
            return Err(Dropped::OutOfDescriptors);
        }
        Ok(id)
    }

    /// Reads the replies of the ready session sockets `tokens` and sends
    /// them to their clients in batches.
    fn read_replies(&mut self, tokens: &[u64]) {
        let mut moved = Moved::default();
        let now = Instant::now();
        for &token in tokens {
            let (id, place) = session::untoken(token);
            let Some(session) = self.sessions.get_mut(id) else {
                continue;
            };
            let Some(link) = session.links.get_mut(place) else {
                continue;
            };
            // Level-triggered: what is not read now is reported again.
            let room = BATCH - self.outbound.len();
            let peer = session.key.client;
            let local = session.key.local;
            match self
                .outbound
                .receive_connected(link.socket.as_raw_fd(), room, peer, local)
            {
                Ok(n) => {
                    let first = self.outbound.len() - n;
                    let mut bytes = 0;
                    for i in first..self.outbound.len() {
                        bytes += self.outbound.get(i).0.len as u64;
                    }
                    link.received += bytes;
                    session.received += bytes;
                    session.replies += n as u64;
                    session.last = now;
                    moved.datagrams += n as u64;
                    moved.bytes += bytes;
                    if session.owed > 0 {
                        session.owed = session.owed.saturating_sub(n as u64);
                        if session.owed == 0 {
                            self.answered.push(id);
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    refused(link);
                    if session.links.iter().all(|l| l.failed) {
                        self.sessions.end(id, Cause::BackendDown);
                    }
                }
                Err(e) => debug!("UDP session {id}: {e}"),
            }
            if self.outbound.is_full() {
                self.send_replies();
            }
        }
        self.send_replies();
        let stats = self.stats();
        stats.datagrams_received.fetch_add(moved.datagrams, Relaxed);
        stats.bytes_received.fetch_add(moved.bytes, Relaxed);
        self.end_answered();
    }

    fn send_replies(&mut self) {
        if self.outbound.is_empty() {
            return;
        }
        let fd = self.fd;
        let stats = &self.service.stats.udp;
        let warnings = &mut self.warnings;
        let listen = self.service.listen;
        self.outbound.send_all(fd, self.wildcard, |_, e| {
            stats.dropped[Dropped::ReplyFailed as usize].fetch_add(1, Relaxed);
            if let Some(more) = warnings.allow() {
                warn!(
                    "{listen}: cannot send a reply to a client: {e} ({more} more since the last \
                     warning)"
                );
            }
        });
    }

    /// Ends the sessions that got every reply they were owed.
    fn end_answered(&mut self) {
        for id in std::mem::take(&mut self.answered) {
            if self.sessions.get_mut(id).is_some_and(|s| s.owed == 0) {
                self.sessions.end(id, Cause::Completed);
            }
        }
    }

    /// Ends idle, stopped and evicted sessions and counts what the others
    /// moved; `draining`: the listener stopped, and a session whose drain
    /// the end of the shutdown cut is logged as `shutdown`.
    fn sweep(&mut self, draining: bool) {
        let config = self.service.pool.load().config.clone();
        let idle = config
            .idle_limit()
            .unwrap_or(crate::config::udp::UDP_IDLE_TIMEOUT);
        let now = Instant::now();
        let mut ended: Vec<(u64, Cause)> = Vec::new();
        for (id, session) in self.sessions.iter_mut() {
            session.flush();
            let connection = session.log.connection();
            let cause = if connection.live.is_stop_asked() {
                Some(if connection.was_stopped_at_shutdown() || draining {
                    Cause::Shutdown
                } else {
                    Cause::OperatorClose
                })
            } else if now.saturating_duration_since(session.last) >= idle {
                Some(Cause::IdleTimeout)
            } else if session.links.iter().any(|l| l.evict.is_cancelled()) {
                Some(Cause::OperatorDrain)
            } else {
                None
            };
            if let Some(cause) = cause {
                ended.push((*id, cause));
            }
        }
        for (id, cause) in ended {
            self.sessions.end(id, cause);
        }
    }
}

/// A link to a backend `state` picks for `client`, skipping `tried`.
fn open_link(state: &Arc<PoolState>, client: IpAddr, tried: &[usize]) -> Result<Link, Dropped> {
    let mut tried = tried.to_vec();
    loop {
        let Some(index) = state.pick(client, &tried) else {
            return Err(Dropped::NoBackend);
        };
        match Link::open(state, index) {
            Ok(link) => return Ok(link),
            Err(e) if is_local_exhaustion(&e) => return Err(Dropped::OutOfDescriptors),
            Err(e) => {
                let backend = &state.backends[index];
                debug!("cannot open a UDP socket to {backend}: {e}");
                backend.stats.connect_failures.fetch_add(1, Relaxed);
                state.connect_failed(index, &e.to_string());
                tried.push(index);
            }
        }
    }
}

fn is_local_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Which of `session`'s links the datagram goes on: its one backend's, or
/// balancing per datagram, the link to the backend picked for it (opened
/// and watched when new). `Err(Some(()))`: the session's backend cannot
/// take it any more (down, ejected, refused), so a new session should;
/// `Err(None)`: no backend at all.
fn pick_link(
    session: &mut Session,
    state: &Arc<PoolState>,
    tried: &[usize],
    readiness: &Readiness,
    id: u64,
) -> Result<usize, Option<()>> {
    if !state.config.udp.per_datagram {
        return match session.links.first() {
            Some(link) if link.is_usable() && !tried.contains(&link.index) => Ok(0),
            _ => Err(Some(())),
        };
    }
    let client = session.key.client.ip();
    let mut skip = tried.to_vec();
    loop {
        let index = state.pick(client, &skip).ok_or(None)?;
        let backend = &state.backends[index];
        if let Some(place) = session.link_to(backend) {
            if session.links[place].is_usable() {
                return Ok(place);
            }
            skip.push(index);
            continue;
        }
        if session.links.len() >= session::MAX_LINKS {
            return Err(None);
        }
        let link = Link::open(state, index).map_err(|_| None)?;
        readiness
            .add(&link.socket, session::token(id, session.links.len()))
            .map_err(|_| None)?;
        if session.links.is_empty() {
            session.log.connection().set_backend(&link.backend);
        }
        session.links.push(link);
        return Ok(session.links.len() - 1);
    }
}

/// The backend of `link` answered with an ICMP port unreachable: a
/// passive failure, and no more datagrams on it.
fn refused(link: &mut Link) {
    if link.failed {
        return;
    }
    link.failed = true;
    link.backend.stats.connect_failures.fetch_add(1, Relaxed);
    link.state
        .connect_failed(link.index, "port unreachable (ICMP) to a UDP datagram");
}
