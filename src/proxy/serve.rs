//! Serving one client connection: choose a backend, connect (retrying the
//! next ones on failure), then pipe bytes both ways until both sides close.
//!
//! Nothing here parses the payload, except on a listener with TLS routes:
//! there the ClientHello is read first (and forwarded unchanged) to pick
//! the route's pool. Every error ends only this connection and is logged
//! at debug level; it never reaches another connection.
//!
//! A [`ConnectionLog`] follows the connection from accept to close: it
//! lists it among the open connections (once its client address is final)
//! and collects the access log's record (queue wait, connect time,
//! retries, pool, backend, server name, cause), handed over when it drops.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use log::debug;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;

use crate::config::{KeepaliveConfig, OnFailure, ServiceConfig};
use crate::pool::backend::{ActiveConnection, Backend};
use crate::pool::connect::tls::HandshakeError;
use crate::pool::connect::{connect, describe, is_local_exhaustion};
use crate::pool::{Pool, PoolState};
use crate::proxy::Service;
use crate::proxy::access::ClientSlot;
use crate::proxy::access_log::{Cause, ConnectionLog, Record, TlsRecord};
use crate::proxy::client_hello::{self, Rejected, UNRECOGNIZED_NAME_ALERT};
use crate::proxy::connections::Connection;
use crate::proxy::failure::{self, Failure};
use crate::proxy::pipe::{EndReason, Limits, Live, Pipe, PipeEnd, Piping, Side};
use crate::proxy::proxy_protocol::{Received, SslTlv};
use crate::proxy::route::Routes;
use crate::proxy::tls::Terminator;
use crate::proxy::tls::pipe::TlsPipe;
use crate::proxy::{access, moving, proxy_protocol};
use crate::stats::tls::TlsStats;
use crate::stats::{ListenerStats, RateLimit, Unavailable};
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;

/// Serves `client` for `service` until the connection is over.
///
/// The task lives as long as the connection and is sized for the largest
/// state of this future, so everything before the pipe (PROXY header,
/// ClientHello, admission, connecting with retries, failure answers) runs
/// in [`open`]'s future on the heap, freed once connected: an idle
/// connection's task holds only its [`ConnectionLog`], the [`Link`] and
/// the wait for a stop request, the [`Pipe`] polled in place.
pub async fn serve(client: TcpStream, peer: SocketAddr, service: Arc<Service>) {
    let _counted = service.stats.open_connection();
    let mut log = ConnectionLog::accept(service.clone(), peer);
    let mut tls = None;
    // The plain pipe in a block of its own, so that nothing of it takes
    // room in this future while a TLS link is piped, and the reverse.
    'plain: {
        let Some(mut link) = Box::pin(open(client, peer, &service, &mut log, &mut tls)).await
        else {
            break 'plain;
        };
        let connection = log.connection().clone();
        let backend = &*link.backend;
        let active = backend.open_connection();
        debug!("{}: connected to {backend}", connection.client);
        // On a binary upgrade it may move to the new process instead of ending.
        let piped = moving::pipe_or_move!(&mut link.pipe, &backend.stats, &connection, &log.record);
        let Link { pipe, pool, .. } = link;
        match piped {
            Some(end) => finish(end, pipe, active, &mut log, &service, &pool, backend),
            None => moving::moved_away(pipe, active, log, &pool, backend),
        }
        return;
    }
    // Its own box, after [`open`]'s future (with the handshake's states) is
    // freed: a plain connection's task stays small.
    if let Some(tls) = tls {
        Box::pin(run_tls(tls, &mut log, &service)).await;
    }
}

/// The end of a piped connection: both sockets close before the backend
/// counts as free again; then the access log's cause and the listener's
/// byte counts.
pub(crate) fn finish<P>(
    end: PipeEnd,
    pipe: P,
    active: ActiveConnection<&'_ Backend>,
    log: &mut ConnectionLog,
    service: &Service,
    pool: &Pool,
    backend: &Backend,
) {
    drop(pipe);
    let connection = log.connection().clone();
    log.record.cause = match log_end(connection.client, backend, end) {
        Cause::OperatorClose => stopped_cause(&connection),
        cause => cause,
    };
    drop(active);
    let live = &connection.live;
    service.stats.record_bytes(live.sent(), live.received());
    pool.connection_closed(backend);
}

/// The end of [`serve`] for a connection with TLS on a side (its TLS state
/// lives in this process: it never moves): on the heap with its link, so
/// that plain connections' tasks stay as small as they were. Not run from
/// [`open`]'s future, which would then live (with the handshake's states,
/// some 2 KB) as long as the connection.
async fn run_tls(link: Box<Link<'_, TlsPipe>>, log: &mut ConnectionLog, service: &Service) {
    let mut link = *link;
    let connection = log.connection().clone();
    connection.moving.never_moves();
    let live = &connection.live;
    let backend = &*link.backend;
    let active = backend.open_connection();
    debug!("{}: connected to {backend}", connection.client);
    let mut stopped = pin!(live.stopped());
    let end = poll_fn(|cx| {
        link.pipe
            .poll_pipe(cx, &backend.stats, live, stopped.as_mut())
    })
    .await;
    let Link { pipe, pool, .. } = link;
    finish(end, pipe, active, log, service, &pool, backend);
}

/// The pipe of a connection with TLS on either side, its streams taken
/// out of their boxes (which kept them out of every connection's setup
/// future). The backend's side is counted in `backend_tls` when it is TLS.
fn tls_pipe(
    client: Client,
    upstream: Upstream,
    limits: Limits,
    evict: Option<CancellationToken>,
    live: &Live,
    backend_tls: Arc<TlsStats>,
) -> TlsPipe {
    let (client, client_tls) = match client {
        Client::Plain(socket) => (Either::Left(socket), None),
        Client::Tls(stream, stats) => (Either::Right(*stream), Some(stats)),
    };
    let (upstream, backend_tls) = match upstream {
        Either::Left(socket) => (Either::Left(socket), None),
        Either::Right(stream) => (Either::Right(*stream), Some(backend_tls)),
    };
    let counters = [client_tls, backend_tls];
    TlsPipe::new(client, upstream, limits, evict, live, counters)
}

/// A client connected to its backend: the pipe, and the slots held until
/// the connection ends.
struct Link<'a, P> {
    /// Both sockets, the backend's greeting already sent.
    pipe: P,
    /// The pool the backend was picked from, told when the connection ends.
    pool: Arc<Pool>,
    /// The backend connected to.
    backend: Arc<Backend>,
    /// The client's per-IP slot.
    _client_slot: ClientSlot<'a>,
    /// The pool's `max-conns` slot, when it has a limit.
    _slot: Option<OwnedSemaphorePermit>,
}

/// The client's side once routed: its socket, or its TLS stream when the
/// route terminates.
enum Client {
    Plain(TcpStream),
    /// With its terminator's counters.
    Tls(Box<TlsStream<TcpStream>>, Arc<TlsStats>),
}

impl Client {
    fn socket(&self) -> &TcpStream {
        match self {
            Client::Plain(socket) => socket,
            Client::Tls(stream, _) => stream.get_ref().0,
        }
    }

    /// What a client no backend can take hears: the failure answer, or,
    /// over TLS, a `close_notify` (written without waiting).
    async fn answer(self, failure: Failure, on_failure: OnFailure) {
        match self {
            Client::Plain(socket) => failure::answer(socket, failure, on_failure).await,
            Client::Tls(mut stream, _) => {
                let (socket, connection) = stream.get_mut();
                connection.send_close_notify();
                let mut bytes = Vec::new();
                let _ = connection.write_tls(&mut bytes);
                let _ = socket.try_write(&bytes);
            }
        }
    }
}

/// Everything before the pipe: `Some` once `client` is connected to a
/// backend with a plain pipe; `None` when the connection was closed or
/// answered instead, with the access log's cause in `log`, or when it has
/// TLS on a side: its link is then in `tls`.
async fn open<'a>(
    mut client: TcpStream,
    peer: SocketAddr,
    service: &'a Service,
    log: &mut ConnectionLog,
    tls: &mut Option<Box<Link<'a, TlsPipe>>>,
) -> Option<Link<'a, Pipe>> {
    let listener = service.pool.load();
    let config = &listener.config;
    // Nagle is already off: accepted sockets inherit TCP_NODELAY from the
    // listening socket (see `listener::accept_loop`).
    if let Some(keepalive) = &config.keepalive {
        set_keepalive(&client, keepalive);
    }
    // PROXY protocol: a client address carried in a header stands in for
    // the peer from here on (access control, hashing, logs); a bad or
    // missing header closes the connection. The cold paths below run in
    // boxes of their own: this future is sized for its largest state, and
    // every connection allocates it.
    let received = if config.accept_proxy {
        Box::pin(proxy_protocol::receive(&mut client, peer, config)).await
    } else {
        Ok((peer, Received::default()))
    };
    let (peer, received) = match received {
        Ok(received) => received,
        Err(e) => {
            debug!("{peer}: closing: {e}");
            service.stats.proxy_header_errors.fetch_add(1, Relaxed);
            log.record.cause = Cause::BadProxyHeader;
            return None;
        }
    };
    log.set_client(peer);
    log.register();
    let client_slot = match service.clients.admit(peer.ip(), &config.access) {
        Ok(slot) => slot,
        Err(refusal) => {
            log.record.cause = match refusal.is_overload() {
                true => Cause::OverLimit,
                false => Cause::Denied,
            };
            Box::pin(access::refuse(
                client,
                peer,
                refusal,
                &service.stats,
                config.on_failure,
            ))
            .await;
            return None;
        }
    };
    // With TLS routes, the ClientHello picks the pool.
    let routed = if !service.routes.load().reads_hello() {
        Routed::default()
    } else {
        let routes = service.routes.load_full();
        let record = &mut log.record;
        match Box::pin(route(
            &mut client,
            peer,
            &service.stats,
            &routes,
            config,
            record,
        ))
        .await
        {
            Ok(routed) => routed,
            Err(cause) => {
                log.record.cause = cause;
                return None;
            }
        }
    };
    // A TLS client cannot read an HTTP answer: it gets a close.
    let on_failure = if routed.hello.is_empty() {
        config.on_failure
    } else {
        OnFailure::Close
    };
    let (pool, state) = match routed.pool {
        Some(pool) => {
            let state = pool.load();
            (pool, state)
        }
        None => (service.pool.clone(), listener),
    };
    let connection = log.connection().clone();
    connection.set_pool(&pool);
    // A terminating route completes the handshake before any backend is
    // tried, as nginx and HAProxy do: a client that fails it costs no
    // backend connection.
    let (client, session) = match routed.terminator {
        None => (Client::Plain(client), None),
        Some(terminator) => {
            // On the heap, the handshake's future (3 KB) and the stream
            // (1 KB): every connection's setup future, terminated or not,
            // is sized for what it may hold.
            let accepting = Box::pin(async {
                let accepted = terminator.accept(client, peer, &routed.hello).await;
                accepted.map(|(stream, session)| (Box::new(stream), session))
            });
            let accepted = tokio::select! {
                () = connection.live.stopped() => None,
                accepted = accepting => Some(accepted),
            };
            match accepted {
                None => {
                    log.record.cause = Cause::OperatorClose;
                    return None;
                }
                Some(Ok((stream, session))) => {
                    let stats = terminator.stats.clone();
                    (Client::Tls(stream, stats), Some(session))
                }
                Some(Err(refused)) => {
                    log.record.cause = match refused.failure.is_certificate() {
                        true => Cause::ClientCertRejected,
                        false => Cause::TlsHandshakeFailed,
                    };
                    log.record.tls = Some(Box::new(TlsRecord::Refused {
                        failure: refused.failure,
                        alert: refused.alert,
                    }));
                    return None;
                }
            }
        }
    };
    let config = &state.config;
    // What the backend hears first: the PROXY header, then (passing TLS
    // through) every byte of the ClientHello exactly as the client sent it.
    let ssl = session.as_ref().map(|s| SslTlv {
        version: s.protocol_name(),
        cipher: s.cipher,
        alpn: s.alpn.as_deref(),
        client_cert: s.client_subject.is_some(),
        client_cn: s.client_cn.as_deref(),
    });
    let mut greeting = match proxy_protocol::greeting(
        client.socket(),
        peer,
        &received,
        config.send_proxy,
        log.record.server_name(),
        ssl.as_ref(),
    ) {
        Ok(greeting) => greeting,
        Err(e) => {
            debug!("{peer}: closing: {e}");
            log.record.cause = Cause::ConnectError;
            return None;
        }
    };
    let passed_through = match &client {
        Client::Plain(_) => routed.hello.len(),
        Client::Tls(..) => 0,
    };
    greeting.extend_from_slice(&routed.hello[..passed_through]);
    if let Some(session) = session {
        log.record.tls = Some(Box::new(TlsRecord::Established(session)));
    }

    // Waiting for a slot and connecting; an operator's close ends it there
    // too, at once.
    let reached = tokio::select! {
        () = connection.live.stopped() => None,
        reached = reach_backend(&pool, &state, peer, &greeting, &mut log.record) => Some(reached),
    };
    let Some(reached) = reached else {
        debug!("{peer}: stopped before reaching a backend");
        log.record.cause = stopped_cause(&connection);
        return None;
    };
    match reached {
        Ok(Connected {
            slot,
            index,
            upstream,
        }) => {
            let backend = &state.backends[index];
            if let Some(keepalive) = &config.keepalive {
                let socket = match &upstream {
                    Either::Left(socket) => socket,
                    Either::Right(tls) => tls.get_ref().0,
                };
                set_keepalive(socket, keepalive);
            }
            connection.set_backend(backend);
            // The ClientHello went with the greeting: client bytes too.
            connection.live.add_sent(passed_through as u64);
            let limits = Limits {
                idle: config.idle_timeout,
                max_age: config.max_connection_age,
            };
            // Taken once: an operator's drain deadline closes this
            // connection.
            let evict = Some(backend.eviction());
            let (pool, backend) = (pool, backend.clone());
            let live = &connection.live;
            // Plain on both sides: the plain pipe (splice and all).
            let pipe = match (client, upstream) {
                (Client::Plain(client), Either::Left(upstream)) => {
                    Either::Left(Pipe::new(client, upstream, limits, evict, live))
                }
                (client, upstream) => {
                    let backend_tls = pool.stats.backend_tls.clone();
                    Either::Right(tls_pipe(client, upstream, limits, evict, live, backend_tls))
                }
            };
            match pipe {
                Either::Left(pipe) => Some(Link {
                    pipe,
                    pool,
                    backend,
                    _client_slot: client_slot,
                    _slot: slot,
                }),
                Either::Right(pipe) => {
                    *tls = Some(Box::new(Link {
                        pipe,
                        pool,
                        backend,
                        _client_slot: client_slot,
                        _slot: slot,
                    }));
                    None
                }
            }
        }
        Err(Unserved::QueueTimeout) => {
            debug!("{peer}: no free slot under max-conns within the queue timeout");
            log.record.cause = Cause::OverLimit;
            service.stats.count_rejected();
            let failure = Failure::Unavailable(Unavailable::QueueTimeout);
            failure.count(&service.stats);
            Box::pin(client.answer(failure, on_failure)).await;
            None
        }
        Err(Unserved::Failed(failure, cause)) => {
            debug!("{peer}: {failure}");
            log.record.cause = cause;
            failure.count(&service.stats);
            Box::pin(client.answer(failure, on_failure)).await;
            None
        }
    }
}

/// A backend connection, ready to pipe.
struct Connected {
    /// The `--max-conns` slot, held until the connection ends.
    slot: Option<OwnedSemaphorePermit>,
    /// The backend's place in the snapshot.
    index: usize,
    /// Connected (and through TLS with `backend_tls`), with the PROXY
    /// header (if any) already sent.
    upstream: Upstream,
}

/// The backend's side as [`reach_backend`] returns it: its TLS stream on
/// the heap, as in [`Client`].
type Upstream = Either<TcpStream, Box<tokio_rustls::client::TlsStream<TcpStream>>>;

/// Why no backend connection came of it.
enum Unserved {
    /// No `--max-conns` slot within the queue timeout.
    QueueTimeout,
    /// What the client hears, and the access log's cause.
    Failed(Failure, Cause),
}

/// Waits for a slot, picks a backend and connects, retrying others after a
/// failed connect. Fills in `record`'s queue wait, connect time and retries.
async fn reach_backend(
    pool: &Pool,
    state: &PoolState,
    peer: SocketAddr,
    greeting: &[u8],
    record: &mut Record,
) -> Result<Connected, Unserved> {
    let config = &state.config;
    let waiting = Instant::now();
    let admission = state.admit().await;
    let admitted = Instant::now();
    let mut queue = admitted - waiting;
    record.queue = Some(queue);
    let Ok(slot) = admission else {
        return Err(Unserved::QueueTimeout);
    };
    let queue_deadline = admitted + config.queue_timeout;
    let origin = pool.backend_tls.load_full();
    let mut tried: Vec<usize> = Vec::new();
    let mut unserved = (
        Failure::Unavailable(Unavailable::NoBackend),
        Cause::NoBackend,
    );
    let mut connecting = Duration::ZERO;
    for attempt in 0..=config.retries {
        let picking = Instant::now();
        let picked = pool
            .pick_or_wait(state, peer.ip(), &tried, queue_deadline)
            .await;
        queue += picking.elapsed();
        record.queue = Some(queue);
        let Some(index) = picked else {
            // Waited out the queue timeout for a backend under its maxconn.
            if tried.is_empty() && Instant::now() >= queue_deadline {
                unserved = (
                    Failure::Unavailable(Unavailable::QueueTimeout),
                    Cause::OverLimit,
                );
            }
            break;
        };
        let backend = &state.backends[index];
        let started = Instant::now();
        let connected = match connect(backend.addr(), config.connect_timeout).await {
            // The greeting goes out before any other client byte (the
            // PROXY header in the clear, before TLS, as HAProxy sends it).
            Ok(mut upstream) if !greeting.is_empty() => {
                upstream.write_all(greeting).await.map(|()| upstream)
            }
            connected => connected,
        };
        let connected = match (connected, &origin) {
            (Err(e), _) => Err(e),
            (Ok(upstream), None) => Ok(Either::Left(upstream)),
            (Ok(upstream), Some(origin)) => {
                let deadline = started + config.connect_timeout;
                let name = backend.name();
                // On the heap, the handshake's future (1.4 KB) and the
                // stream (1 KB): only TLS to the backends needs them.
                let handshake = Box::pin(async {
                    let tls = origin.handshake(upstream, name, backend.addr(), deadline);
                    tls.await.map(Box::new)
                });
                match handshake.await {
                    Ok(tls) => Ok(Either::Right(tls)),
                    Err(e) => {
                        warn_backend_tls(peer, backend, &e);
                        backend.stats.connect_failures.fetch_add(1, Relaxed);
                        state.connect_failed(index, &e.to_string());
                        connecting += started.elapsed();
                        record.connect = Some(connecting);
                        record.retries = attempt;
                        unserved = (Failure::BadGateway, Cause::BackendTlsFailed);
                        tried.push(index);
                        continue;
                    }
                }
            }
        };
        connecting += started.elapsed();
        record.connect = Some(connecting);
        record.retries = attempt;
        match connected {
            Ok(upstream) => {
                backend.stats.connect_time.record(started.elapsed());
                backend.stats.queue_wait.record(queue);
                return Ok(Connected {
                    slot,
                    index,
                    upstream,
                });
            }
            Err(e) => {
                let reason = describe(&e);
                debug!("{peer}: connect to {backend} failed: {reason}");
                // Out of our own descriptors: not the backend's fault, and
                // every other backend would fail the same way.
                if is_local_exhaustion(&e) {
                    unserved = (
                        Failure::Unavailable(Unavailable::OutOfDescriptors),
                        Cause::NoBackend,
                    );
                    break;
                }
                backend.stats.connect_failures.fetch_add(1, Relaxed);
                state.connect_failed(index, &reason);
                let cause = match e.kind() {
                    std::io::ErrorKind::TimedOut => Cause::ConnectTimeout,
                    std::io::ErrorKind::ConnectionRefused => Cause::ConnectRefused,
                    _ => Cause::ConnectError,
                };
                unserved = (Failure::BadGateway, cause);
                tried.push(index);
            }
        }
    }
    Err(Unserved::Failed(unserved.0, unserved.1))
}

/// At most one warning a second about backends whose TLS handshake
/// failed, for the whole process.
static BACKEND_TLS_WARNINGS: std::sync::Mutex<RateLimit> =
    std::sync::Mutex::new(RateLimit::new(Duration::from_secs(1)));

fn warn_backend_tls(peer: SocketAddr, backend: &Backend, e: &HandshakeError) {
    debug!("{peer}: {backend}: {e}");
    let allowed = BACKEND_TLS_WARNINGS.lock().ok().and_then(|mut w| w.allow());
    if let Some(held) = allowed {
        log::warn!("backend {backend}: {e} ({held} more since the last warning)");
    }
}

/// Where a connection goes, and what was read from it on the way.
#[derive(Default)]
struct Routed {
    /// The route's pool it is served from; `None`: the listener's own.
    pool: Option<Arc<Pool>>,
    /// Every byte read from the client to route it, for the backend.
    hello: Vec<u8>,
    /// When the route (or the listener's own backends) terminates TLS.
    terminator: Option<Arc<Terminator>>,
}

/// Reads `client`'s ClientHello and picks its pool from `routes`, falling
/// back to the listener's own backends when it has some. What the hello
/// asked for goes into `record` whatever comes of it. `Err`: the client
/// was closed (no valid hello in time, or no route and no default, which
/// hears a TLS `unrecognized_name` alert first), with the access log's
/// cause.
async fn route(
    client: &mut TcpStream,
    peer: SocketAddr,
    stats: &ListenerStats,
    routes: &Routes,
    listener: &ServiceConfig,
    record: &mut Record,
) -> Result<Routed, Cause> {
    let (hello, bytes) = match client_hello::read(client, listener.tls_inspect_timeout).await {
        Ok(read) => read,
        Err(Rejected { error, seen }) => {
            debug!("{peer}: closing: {error}");
            stats.tls_rejected[error.reason_index()].fetch_add(1, Relaxed);
            record.hello = (!seen.is_empty()).then(|| Box::new(seen));
            return Err(Cause::BadClientHello);
        }
    };
    let picked = routes.table.pick(&hello);
    let hello = &**record.hello.insert(Box::new(hello));
    let (pool, terminator) = match picked {
        Some(index) => {
            let route = &routes.routes[index];
            debug!(
                "{peer}: server name {:?}: route {}",
                hello.server_name, route.name
            );
            route.stats.connections.fetch_add(1, Relaxed);
            (Some(route.pool.clone()), route.tls.clone())
        }
        None if !listener.backends.is_empty() => {
            debug!("{peer}: server name {:?}: default route", hello.server_name);
            if !routes.routes.is_empty() {
                stats.tls_default_route.fetch_add(1, Relaxed);
            }
            (None, routes.terminate.clone())
        }
        None => {
            debug!(
                "{peer}: server name {:?} matches no route: unrecognized_name",
                hello.server_name
            );
            stats.tls_unmatched.fetch_add(1, Relaxed);
            if client.write_all(&UNRECOGNIZED_NAME_ALERT).await.is_ok() {
                let _ = client.shutdown().await;
            }
            return Err(Cause::NoRoute);
        }
    };
    Ok(Routed {
        pool,
        hello: bytes,
        terminator,
    })
}

/// Logs how a piped connection ended, at debug level; returns the access
/// log's cause.
/// Why a stop request ended a connection: an operator's close, unless the
/// end of a drain asked for it.
fn stopped_cause(connection: &Connection) -> Cause {
    match connection.was_stopped_at_shutdown() {
        true => Cause::Shutdown,
        false => Cause::OperatorClose,
    }
}

fn log_end(peer: SocketAddr, backend: &Backend, end: PipeEnd) -> Cause {
    let (sent, received) = (end.sent, end.received);
    match end.reason {
        EndReason::Closed => {
            debug!("{peer}: closed ({sent} bytes to {backend}, {received} bytes back)");
            Cause::Completed
        }
        EndReason::IdleTimeout => {
            debug!(
                "{peer}: idle timeout, closed ({sent} bytes to {backend}, {received} bytes back)"
            );
            Cause::IdleTimeout
        }
        EndReason::MaxAge => {
            debug!(
                "{peer}: maximum connection age, closed ({sent} bytes to {backend}, {received} bytes back)"
            );
            Cause::MaxAge
        }
        EndReason::Evicted => {
            debug!(
                "{peer}: drained by an operator, closed at the deadline ({sent} bytes to {backend}, {received} bytes back)"
            );
            Cause::OperatorDrain
        }
        EndReason::Stopped => {
            debug!(
                "{peer}: stopped by an operator or the end of a drain ({sent} bytes to {backend}, {received} bytes back)"
            );
            Cause::OperatorClose
        }
        EndReason::Error(side, e) => {
            debug!("{peer}: connection to {backend} ended: {e} (on the {side:?} side)");
            // The kernel gave the peer up (user timeout, keepalive,
            // retransmissions); it said nothing. An ICMP unreachable seen
            // meanwhile is reported in place of ETIMEDOUT.
            use std::io::ErrorKind::{HostUnreachable, NetworkUnreachable, TimedOut};
            let timed_out = matches!(e.kind(), TimedOut | HostUnreachable | NetworkUnreachable);
            match (side, timed_out) {
                (Side::Client, false) => Cause::ClientReset,
                (Side::Backend, false) => Cause::BackendReset,
                (Side::Client, true) => Cause::ClientTimeout,
                (Side::Backend, true) => Cause::BackendTimeout,
            }
        }
    }
}

/// Turns on TCP keepalive probes and sets `TCP_USER_TIMEOUT` (which finds
/// a peer that vanished while bytes to it were unacknowledged, when Linux
/// sends no probes); a socket that refuses keeps working without them, so
/// a failure is only logged.
pub fn set_keepalive(stream: &TcpStream, keepalive: &KeepaliveConfig) {
    let probes = socket2::TcpKeepalive::new()
        .with_time(keepalive.idle)
        .with_interval(keepalive.interval)
        .with_retries(keepalive.count);
    let socket = socket2::SockRef::from(stream);
    if let Err(e) = socket.set_tcp_keepalive(&probes) {
        debug!("cannot set TCP keepalive: {e}");
    }
    if let Err(e) = socket.set_tcp_user_timeout(keepalive.user_timeout) {
        debug!("cannot set TCP_USER_TIMEOUT: {e}");
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::parse_backend;

    /// The most bytes `serve`'s future may take: every open connection
    /// holds one in its task (it was 2,504 before the setup moved to the
    /// heap and the pipe became a plain state machine). Release builds
    /// measured 600 (the access log's record, 112, and the wait for an
    /// operator's close, 64, included), which keeps tokio's task at 768
    /// bytes on x86-64 (it is aligned to 128); debug builds 624. Boxing the
    /// record's ClientHello took 16 bytes off (debug: 608, the record 88).
    const SERVE_FUTURE_MAX: usize = 640;

    #[tokio::test]
    async fn a_connections_future_stays_small() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let config = ServiceConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            vec![parse_backend("127.0.0.1:1").unwrap()],
        );
        let service = Arc::new(Service::new(Arc::new(Pool::new("t", config))));
        let connection = serve(stream, "127.0.0.1:1".parse().unwrap(), service);
        let size = std::mem::size_of_val(&connection);
        assert!(
            size <= SERVE_FUTURE_MAX,
            "serve's future is {size} bytes, over {SERVE_FUTURE_MAX}: box what is not needed while piping"
        );
    }

    /// The most bytes [`open`]'s future may take: every connection
    /// allocates one, moved into its box whole. It was 7,688 (release
    /// 7,616) while it held the TLS handshakes' futures and streams inline,
    /// 1,896 (debug) once they went to the heap.
    const OPEN_FUTURE_MAX: usize = 2048;

    /// The size of what `f` returns, without calling it.
    fn output_size<A, B, C, D, E, R>(_: impl FnOnce(A, B, C, D, E) -> R) -> usize {
        std::mem::size_of::<R>()
    }

    #[test]
    fn a_connections_setup_future_stays_small() {
        let size = output_size(open);
        assert!(
            size <= OPEN_FUTURE_MAX,
            "open's future is {size} bytes, over {OPEN_FUTURE_MAX}: box what only some connections need"
        );
    }

    #[tokio::test]
    async fn keepalive_settings_reach_the_socket() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let mut keepalive =
            KeepaliveConfig::new(Duration::from_secs(42), Duration::from_secs(7), 5);
        set_keepalive(&stream, &keepalive);
        let socket = socket2::SockRef::from(&stream);
        assert!(socket.keepalive().unwrap());
        assert_eq!(socket.tcp_keepalive_time().unwrap(), keepalive.idle);
        assert_eq!(socket.tcp_keepalive_interval().unwrap(), keepalive.interval);
        assert_eq!(socket.tcp_keepalive_retries().unwrap(), 5);
        // idle + interval × count.
        let user_timeout = socket.tcp_user_timeout().unwrap();
        assert_eq!(user_timeout, Some(Duration::from_secs(77)));
        // Off clears it.
        keepalive.user_timeout = None;
        set_keepalive(&stream, &keepalive);
        assert_eq!(socket.tcp_user_timeout().unwrap(), None);
    }
}
