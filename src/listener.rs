//! The listening socket and its accept loop.
//!
//! The loop must never die and never spin: per-connection accept errors are
//! skipped. When the process runs out of file descriptors it spends a spare
//! one it keeps for that moment to accept the waiting client and refuse it
//! at once (503 or close), so clients are told rather than left hanging in
//! the backlog; if even that fails it pauses briefly. Either way it warns at
//! a bounded rate.

use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::Context;
use log::{debug, warn};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::failure::{Failure, OnFailure};
use crate::forward::{self, is_local_exhaustion};
use crate::pool::BackendPool;

/// How long accepting pauses after the process runs out of descriptors.
const EXHAUSTED_PAUSE: Duration = Duration::from_millis(100);
/// At most one warning per this period about accept errors.
const WARN_EVERY: Duration = Duration::from_secs(1);

/// Binds a listening socket with SO_REUSEADDR (fast restarts over TIME_WAIT)
/// and an explicit backlog. Must be called inside the tokio runtime.
pub fn bind(addr: SocketAddr, backlog: u32) -> anyhow::Result<TcpListener> {
    let listen = || -> io::Result<TcpListener> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
        TcpListener::from_std(socket.into())
    };
    listen().with_context(|| format!("cannot listen on {addr}"))
}

/// Accepts until `shutdown`, handing each connection to its own task.
pub async fn accept_loop(
    listener: TcpListener,
    pool: Arc<BackendPool>,
    shutdown: CancellationToken,
    connections: TaskTracker,
) {
    let mut warnings = RateLimit::new(WARN_EVERY);
    let mut spare = File::open("/dev/null").ok();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                debug!("{peer}: accepted");
                connections.spawn(forward::serve(stream, peer, pool.clone()));
            }
            Err(e) if is_local_exhaustion(&e) => {
                if let Some(suppressed) = warnings.allow() {
                    warn!(
                        "accept failed: {e}; refusing new clients until descriptors free up \
                         ({suppressed} more since the last warning)"
                    );
                }
                // The spare descriptor makes room for exactly one accept.
                if spare.take().is_some() {
                    let waiting =
                        tokio::time::timeout(Duration::from_millis(10), listener.accept());
                    if let Ok(Ok((stream, peer))) = waiting.await {
                        debug!("{peer}: refused, out of file descriptors");
                        refuse(stream, &pool);
                    }
                    spare = File::open("/dev/null").ok();
                }
                if spare.is_none() {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(EXHAUSTED_PAUSE) => {}
                    }
                }
            }
            // ECONNABORTED and friends: that one client gave up; go on.
            Err(e) => debug!("accept failed: {e}"),
        }
    }
}

/// Counters of one listener, exported by the admin endpoint. They belong to
/// the listener's [`BackendPool`], not to its reloadable snapshot, so a
/// reload never resets them. Updated lock-free on the data path.
#[derive(Debug, Default)]
pub struct ListenerStats {
    /// Client connections accepted, refused ones included.
    pub accepted: AtomicU64,
    /// Client connections refused by access control or a connection limit.
    pub rejected: AtomicU64,
    /// Client connections open now (from accept until closed).
    pub active: AtomicU64,
    /// Clients answered 502: every backend tried failed to connect.
    pub bad_gateway: AtomicU64,
    /// Clients answered 503: no backend was available to try.
    pub unavailable: AtomicU64,
}

impl ListenerStats {
    /// Counts an accepted client for as long as the returned guard lives.
    pub fn open_connection(&self) -> ClientConnection<'_> {
        self.accepted.fetch_add(1, Relaxed);
        self.active.fetch_add(1, Relaxed);
        ClientConnection { stats: self }
    }

    pub fn count_rejected(&self) {
        self.rejected.fetch_add(1, Relaxed);
    }

    pub fn count_failure(&self, failure: Failure) {
        match failure {
            Failure::BadGateway => &self.bad_gateway,
            Failure::Unavailable => &self.unavailable,
        }
        .fetch_add(1, Relaxed);
    }
}

/// Keeps the listener's `active` right however a client connection ends,
/// panics and cancellation included.
pub struct ClientConnection<'a> {
    stats: &'a ListenerStats,
}

impl Drop for ClientConnection<'_> {
    fn drop(&mut self) {
        self.stats.active.fetch_sub(1, Relaxed);
    }
}

/// Answers a client we cannot serve without waiting on it: one
/// non-blocking write of the 503 (in `http` mode), then close.
fn refuse(stream: TcpStream, pool: &BackendPool) {
    // It never reaches `forward::serve`, so it is counted here.
    pool.stats.accepted.fetch_add(1, Relaxed);
    pool.stats.count_rejected();
    if pool.load().config.on_failure == OnFailure::Http {
        let _ = stream.try_write(Failure::Unavailable.http_response());
    }
}

/// Lets an event through at most once per period and counts the rest.
pub struct RateLimit {
    period: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimit {
    pub fn new(period: Duration) -> Self {
        RateLimit {
            period,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(n)` when the event may be reported, with `n` events held back
    /// since the last report; `None` when it should be held back.
    pub fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < self.period)
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_reports_once_per_period_and_counts_the_rest() {
        let mut limit = RateLimit::new(Duration::from_secs(3600));
        assert_eq!(limit.allow(), Some(0));
        assert_eq!(limit.allow(), None);
        assert_eq!(limit.allow(), None);
        limit.last = Some(Instant::now() - Duration::from_secs(7200));
        assert_eq!(limit.allow(), Some(2));
    }

    #[test]
    fn listener_active_follows_connection_guards() {
        let stats = ListenerStats::default();
        let first = stats.open_connection();
        let second = stats.open_connection();
        assert_eq!(stats.active.load(Relaxed), 2);
        drop(first);
        drop(second);
        assert_eq!(stats.active.load(Relaxed), 0);
        assert_eq!(stats.accepted.load(Relaxed), 2);
        stats.count_failure(Failure::BadGateway);
        assert_eq!(stats.bad_gateway.load(Relaxed), 1);
        assert_eq!(stats.unavailable.load(Relaxed), 0);
    }
}
