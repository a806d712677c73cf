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

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use log::debug;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use crate::config::{KeepaliveConfig, OnFailure, ServiceConfig};
use crate::pool::backend::Backend;
use crate::pool::connect::{connect, describe, is_local_exhaustion};
use crate::pool::{Pool, PoolState};
use crate::proxy::Service;
use crate::proxy::access_log::{Cause, ConnectionLog, Record};
use crate::proxy::client_hello::{self, UNRECOGNIZED_NAME_ALERT};
use crate::proxy::failure::{self, Failure};
use crate::proxy::pipe::{EndReason, Limits, Live, Side};
use crate::proxy::route::Routes;
use crate::proxy::{access, proxy_protocol};
use crate::stats::ListenerStats;

/// Serves `client` for `service` until the connection is over.
pub async fn serve(mut client: TcpStream, peer: SocketAddr, service: Arc<Service>) {
    let _counted = service.stats.open_connection();
    let mut log = ConnectionLog::accept(service.clone(), peer);
    let listener = service.pool.load();
    let config = &listener.config;
    let _ = client.set_nodelay(true);
    if let Some(keepalive) = &config.keepalive {
        set_keepalive(&client, keepalive);
    }
    // PROXY protocol: a client address carried in a header stands in for
    // the peer from here on (access control, hashing, logs); a bad or
    // missing header closes the connection.
    let (peer, received) = match proxy_protocol::receive(&mut client, peer, config).await {
        Ok(received) => received,
        Err(e) => {
            debug!("{peer}: closing: {e}");
            service.stats.proxy_header_errors.fetch_add(1, Relaxed);
            log.record.cause = Cause::BadProxyHeader;
            return;
        }
    };
    log.set_client(peer);
    log.register();
    let _client_slot = match service.clients.admit(peer.ip(), &config.access) {
        Ok(slot) => slot,
        Err(refusal) => {
            log.record.cause = match refusal.is_overload() {
                true => Cause::OverLimit,
                false => Cause::Denied,
            };
            return access::refuse(client, peer, refusal, &service.stats, config.on_failure).await;
        }
    };
    // With TLS routes, the ClientHello picks the pool.
    let routed = if service.routes.load().is_empty() {
        Routed::default()
    } else {
        let routes = service.routes.load_full();
        match route(&mut client, peer, &service.stats, &routes, config).await {
            Ok(routed) => routed,
            Err(cause) => {
                log.record.cause = cause;
                return;
            }
        }
    };
    // A TLS client cannot read an HTTP answer: it gets a close.
    let on_failure = if routed.hello.is_empty() {
        config.on_failure
    } else {
        OnFailure::Close
    };
    let (pool, state) = match &routed.pool {
        Some(pool) => (pool, pool.load()),
        None => (&service.pool, listener),
    };
    let connection = log.connection().clone();
    connection.set_pool(pool);
    let config = &state.config;
    // What the backend hears first: the PROXY header, then every byte of
    // the ClientHello exactly as the client sent it.
    let mut greeting = match proxy_protocol::greeting(
        &client,
        peer,
        &received,
        config.send_proxy,
        routed.server_name.as_deref(),
    ) {
        Ok(greeting) => greeting,
        Err(e) => {
            debug!("{peer}: closing: {e}");
            log.record.cause = Cause::ConnectError;
            return;
        }
    };
    greeting.extend_from_slice(&routed.hello);
    log.record.sni = routed.server_name;

    // Waiting for a slot and connecting; an operator's close ends it there
    // too, at once.
    let reached = tokio::select! {
        () = connection.live.stopped() => None,
        reached = reach_backend(pool, &state, peer, &greeting, &mut log.record) => Some(reached),
    };
    let Some(reached) = reached else {
        debug!("{peer}: closed by an operator before reaching a backend");
        log.record.cause = Cause::OperatorClose;
        return;
    };
    match reached {
        Ok(Connected {
            slot: _slot,
            index,
            upstream,
        }) => {
            let backend = &state.backends[index];
            if let Some(keepalive) = &config.keepalive {
                set_keepalive(&upstream, keepalive);
            }
            connection.set_backend(backend);
            // The ClientHello went with the greeting: client bytes too.
            connection.live.add_sent(routed.hello.len() as u64);
            let limits = Limits {
                idle: config.idle_timeout,
                max_age: config.max_connection_age,
            };
            log.record.cause =
                pipe(client, upstream, peer, backend, limits, &connection.live).await;
            let live = &connection.live;
            service.stats.record_bytes(live.sent(), live.received());
            pool.connection_closed(backend);
        }
        Err(Unserved::QueueTimeout) => {
            debug!("{peer}: no free slot under max-conns within the queue timeout");
            log.record.cause = Cause::OverLimit;
            service.stats.count_rejected();
            failure::answer(client, Failure::Unavailable, on_failure).await;
        }
        Err(Unserved::Failed(failure, cause)) => {
            debug!("{peer}: {failure}");
            log.record.cause = cause;
            failure.count(&service.stats);
            failure::answer(client, failure, on_failure).await;
        }
    }
}

/// A backend connection, ready to pipe.
struct Connected {
    /// The `--max-conns` slot, held until the connection ends.
    slot: Option<OwnedSemaphorePermit>,
    /// The backend's place in the snapshot.
    index: usize,
    /// Connected, with the PROXY header (if any) already sent.
    upstream: TcpStream,
}

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
    let mut tried: Vec<usize> = Vec::new();
    let mut unserved = (Failure::Unavailable, Cause::NoBackend);
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
                unserved.1 = Cause::OverLimit;
            }
            break;
        };
        let backend = &state.backends[index];
        let started = Instant::now();
        let connected = match connect(backend.addr(), config.connect_timeout).await {
            // The greeting goes out before any other client byte.
            Ok(mut upstream) if !greeting.is_empty() => {
                upstream.write_all(greeting).await.map(|()| upstream)
            }
            connected => connected,
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
                    unserved = (Failure::Unavailable, Cause::NoBackend);
                    break;
                }
                backend.stats.connect_failures.fetch_add(1, Relaxed);
                backend
                    .health
                    .record_connect_failure(backend, config, &reason);
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

/// Where a connection goes, and what was read from it on the way.
#[derive(Default)]
struct Routed {
    /// The route's pool it is served from; `None`: the listener's own.
    pool: Option<Arc<Pool>>,
    /// The server name its ClientHello asked for.
    server_name: Option<String>,
    /// Every byte read from the client to route it, for the backend.
    hello: Vec<u8>,
}

/// Reads `client`'s ClientHello and picks its pool from `routes`, falling
/// back to the listener's own backends when it has some. `Err`: the
/// client was closed (no valid hello in time, or no route and no default,
/// which hears a TLS `unrecognized_name` alert first), with the access
/// log's cause.
async fn route(
    client: &mut TcpStream,
    peer: SocketAddr,
    stats: &ListenerStats,
    routes: &Routes,
    listener: &ServiceConfig,
) -> Result<Routed, Cause> {
    let (hello, bytes) = match client_hello::read(client, listener.tls_inspect_timeout).await {
        Ok(read) => read,
        Err(e) => {
            debug!("{peer}: closing: {e}");
            stats.tls_rejected[e.reason_index()].fetch_add(1, Relaxed);
            return Err(Cause::BadClientHello);
        }
    };
    let pool = match routes.table.pick(&hello) {
        Some(index) => {
            let route = &routes.routes[index];
            debug!(
                "{peer}: server name {:?}: route {}",
                hello.server_name, route.name
            );
            route.stats.connections.fetch_add(1, Relaxed);
            Some(route.pool.clone())
        }
        None if !listener.backends.is_empty() => {
            debug!("{peer}: server name {:?}: default route", hello.server_name);
            stats.tls_default_route.fetch_add(1, Relaxed);
            None
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
        server_name: hello.server_name,
        hello: bytes,
    })
}

/// Pipes until the connection ends; returns the access log's cause.
async fn pipe(
    client: TcpStream,
    upstream: TcpStream,
    peer: SocketAddr,
    backend: &Backend,
    limits: Limits,
    live: &Live,
) -> Cause {
    let _active = backend.open_connection();
    debug!("{peer}: connected to {backend}");
    // Taken once: an operator's drain deadline closes this connection.
    let evict = backend.eviction();
    let end = crate::proxy::pipe::pipe_evictable(
        client,
        upstream,
        &backend.stats,
        limits,
        Some(&evict),
        live,
    )
    .await;
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
                "{peer}: closed by an operator ({sent} bytes to {backend}, {received} bytes back)"
            );
            Cause::OperatorClose
        }
        EndReason::Error(side, e) => {
            debug!("{peer}: connection to {backend} ended: {e} (on the {side:?} side)");
            match side {
                Side::Client => Cause::ClientReset,
                Side::Backend => Cause::BackendReset,
            }
        }
    }
}

/// Turns on TCP keepalive probes; a socket that refuses keeps working
/// without them, so a failure is only logged.
pub fn set_keepalive(stream: &TcpStream, keepalive: &KeepaliveConfig) {
    let probes = socket2::TcpKeepalive::new()
        .with_time(keepalive.idle)
        .with_interval(keepalive.interval)
        .with_retries(keepalive.count);
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_keepalive(&probes) {
        debug!("cannot set TCP keepalive: {e}");
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn keepalive_settings_reach_the_socket() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let keepalive = KeepaliveConfig {
            idle: Duration::from_secs(42),
            interval: Duration::from_secs(7),
            count: 5,
        };
        set_keepalive(&stream, &keepalive);
        let socket = socket2::SockRef::from(&stream);
        assert!(socket.keepalive().unwrap());
        assert_eq!(socket.tcp_keepalive_time().unwrap(), keepalive.idle);
        assert_eq!(socket.tcp_keepalive_interval().unwrap(), keepalive.interval);
        assert_eq!(socket.tcp_keepalive_retries().unwrap(), 5);
    }
}
