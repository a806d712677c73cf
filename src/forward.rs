//! Serving one client connection: choose a backend, connect (retrying the
//! next ones on failure), then pipe bytes both ways until both sides close.
//!
//! Nothing here parses the payload. Every error ends only this connection
//! and is logged at debug level; it never reaches another connection.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use log::debug;
use tokio::net::TcpStream;

use crate::backend::Backend;
use crate::failure::{self, Failure};
use crate::pipe::EndReason;
use crate::pool::{BackendPool, log_transition};
use crate::prober::describe;

/// Serves `client` from `pool` until the connection is over.
pub async fn serve(client: TcpStream, peer: SocketAddr, pool: Arc<BackendPool>) {
    let state = pool.load();
    let config = &state.config;
    let _ = client.set_nodelay(true);

    let mut tried: Vec<usize> = Vec::new();
    let mut failure = Failure::Unavailable;
    for _ in 0..=config.retries {
        let Some(index) = state.pick(peer.ip(), &tried) else {
            break;
        };
        let backend = &state.backends[index];
        match connect(backend.addr(), config.connect_timeout).await {
            Ok(upstream) => {
                pipe(client, upstream, peer, backend, config.idle_timeout).await;
                return;
            }
            Err(e) => {
                backend.stats.connect_failures.fetch_add(1, Relaxed);
                let reason = describe(&e);
                debug!("{peer}: connect to {backend} failed: {reason}");
                // Running out of our own file descriptors says nothing
                // about the backend's health.
                if !is_local_exhaustion(&e)
                    && let Some(t) = backend.record_failure(config.health.fall)
                {
                    log_transition(backend, t, &reason);
                }
                failure = Failure::BadGateway;
                tried.push(index);
            }
        }
    }
    debug!("{peer}: {failure}");
    // Boxed: its 4 KiB read buffer would otherwise be part of every
    // connection's task, idle ones included (measured 9.8 -> 6.8 KB each).
    Box::pin(failure::answer(client, failure, config.on_failure)).await;
}

async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

async fn pipe(
    client: TcpStream,
    upstream: TcpStream,
    peer: SocketAddr,
    backend: &Backend,
    idle_timeout: Option<Duration>,
) {
    let _active = backend.open_connection();
    debug!("{peer}: connected to {backend}");
    let end = crate::pipe::pipe(client, upstream, &backend.stats, idle_timeout).await;
    let (sent, received) = (end.sent, end.received);
    match end.reason {
        EndReason::Closed => {
            debug!("{peer}: closed ({sent} bytes to {backend}, {received} bytes back)")
        }
        EndReason::IdleTimeout => debug!(
            "{peer}: idle timeout, closed ({sent} bytes to {backend}, {received} bytes back)"
        ),
        EndReason::Error(e) => debug!("{peer}: connection to {backend} ended: {e}"),
    }
}

/// EMFILE, ENFILE, ENOBUFS, ENOMEM: we, not the peer, ran out of something.
pub fn is_local_exhaustion(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(23 | 24 | 105 | 12))
}
