//! The listening sockets (one per worker, sharing the port) and the accept
//! loop each worker runs on its own.
//!
//! The loop must never die and never spin: per-connection accept errors are
//! skipped. When the process runs out of file descriptors it spends a spare
//! one it keeps for that moment to accept the waiting client and refuse it
//! at once (503 or close), so clients are told rather than left hanging in
//! the backlog; if even that fails it pauses briefly. Either way it warns at
//! a bounded rate.

use std::fs::File;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use log::{debug, warn};
use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::OnFailure;
use crate::pool::connect::is_local_exhaustion;
use crate::proxy::Service;
use crate::proxy::access_log::{Cause, ConnectionLog};
use crate::proxy::failure::Failure;
use crate::proxy::serve::serve;
use crate::proxy::spread::Spread;
use crate::stats::{RateLimit, Unavailable, WorkerConnection};

/// How long accepting pauses after the process runs out of descriptors.
const EXHAUSTED_PAUSE: Duration = Duration::from_millis(100);
/// At most one warning per second about running out of descriptors, for
/// the whole process: every worker's accept loop runs out at once.
static ACCEPT_WARNINGS: Mutex<RateLimit> = Mutex::new(RateLimit::new(Duration::from_secs(1)));

/// Binds a listening socket with SO_REUSEADDR (fast restarts over TIME_WAIT)
/// and an explicit backlog. Must be called inside the tokio runtime.
pub fn bind(addr: SocketAddr, backlog: u32) -> anyhow::Result<TcpListener> {
    listen(addr, backlog, false)
        .and_then(TcpListener::from_std)
        .with_context(|| format!("cannot listen on {addr}"))
}

/// Binds `count` listening sockets on one address, one per worker. More than
/// one share the port with SO_REUSEPORT. That would also let them join
/// another process's SO_REUSEPORT group on the port, so the address is
/// first bound plainly, which fails when anything listens there.
pub fn bind_group(
    addr: SocketAddr,
    backlog: u32,
    count: usize,
) -> anyhow::Result<Vec<std::net::TcpListener>> {
    let group = || -> io::Result<Vec<std::net::TcpListener>> {
        if count <= 1 {
            return Ok(vec![listen(addr, backlog, false)?]);
        }
        let probe = bound(addr, false)?;
        // Port 0 becomes the port the probe was given.
        let port = probe
            .local_addr()?
            .as_socket()
            .map_or(addr.port(), |a| a.port());
        drop(probe);
        let addr = SocketAddr::new(addr.ip(), port);
        (0..count).map(|_| listen(addr, backlog, true)).collect()
    };
    group().with_context(|| format!("cannot listen on {addr}"))
}

fn listen(addr: SocketAddr, backlog: u32, reuse_port: bool) -> io::Result<std::net::TcpListener> {
    let socket = bound(addr, reuse_port)?;
    socket.set_nonblocking(true)?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    Ok(socket.into())
}

/// A TCP socket bound to `addr` with SO_REUSEADDR (fast restarts over
/// TIME_WAIT), and SO_REUSEPORT when asked.
fn bound(addr: SocketAddr, reuse_port: bool) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// Accepts until `shutdown`, handing each connection to its own task, on
/// this worker's runtime (`worker`, the one this runs on) or on a less
/// loaded one's as `spread` picks.
pub async fn accept_loop(
    listener: std::net::TcpListener,
    service: Arc<Service>,
    shutdown: CancellationToken,
    connections: TaskTracker,
    worker: usize,
    spread: Arc<Spread>,
) {
    // Nagle off for every client, set once here: Linux copies TCP_NODELAY
    // from the listening socket to each socket it accepts, which saves a
    // `setsockopt` per connection. Here rather than at bind, so listeners
    // inherited from an old process or from systemd get it too.
    if let Err(e) = SockRef::from(&listener).set_tcp_nodelay(true) {
        warn!("cannot turn Nagle off on a listening socket: {e}");
    }
    // Accepted raw, so that a socket is registered with the reactor of the
    // worker that serves it, not this one's first.
    // SAFETY: a `std::net::TcpListener` owns its descriptor, and nothing
    // closes or replaces it while the `AsyncFd` holds it.
    let registered = unsafe { AsyncFd::register_with_interest(listener, Interest::READABLE) };
    let listener = match registered {
        Ok(listener) => listener,
        Err(e) => {
            warn!("cannot accept on a listening socket: {e}");
            return;
        }
    };
    let mut spare = File::open("/dev/null").ok();
    let mut turn = 0usize;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = accept(&listener) => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                debug!("{peer}: accepted");
                turn = turn.wrapping_add(1);
                let serving = spread.pick(worker, turn);
                let open = spread.stats().opened(serving);
                let connection = serve_std(stream, peer, service.clone(), open);
                let connection = connections.track_future(connection);
                if serving == worker {
                    tokio::spawn(connection);
                } else {
                    spread.hand_over(serving, connection);
                }
            }
            Err(e) if is_local_exhaustion(&e) => {
                let allowed = ACCEPT_WARNINGS.lock().ok().and_then(|mut w| w.allow());
                if let Some(suppressed) = allowed {
                    warn!(
                        "accept failed: {e}; refusing new clients until descriptors free up \
                         ({suppressed} more since the last warning)"
                    );
                }
                // The spare descriptor makes room for exactly one accept.
                if spare.take().is_some() {
                    let waiting =
                        tokio::time::timeout(Duration::from_millis(10), accept(&listener));
                    if let Ok(Ok((stream, peer))) = waiting.await {
                        debug!("{peer}: refused, out of file descriptors");
                        refuse(stream, peer, &service);
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

/// The next client: a non-blocking socket not yet registered with any
/// reactor, and its address.
async fn accept(
    listener: &AsyncFd<std::net::TcpListener>,
) -> io::Result<(std::net::TcpStream, SocketAddr)> {
    loop {
        let mut ready = listener.readable().await?;
        let accepted = ready.try_io(|listener| {
            SockRef::from(listener.get_ref()).accept4(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)
        });
        let Ok(accepted) = accepted else {
            continue; // drained: wait for the next readiness
        };
        let (socket, addr) = accepted?;
        let Some(peer) = addr.as_socket() else {
            continue; // not an IP client: cannot happen on a TCP listener
        };
        return Ok((socket.into(), peer));
    }
}

/// Serves a client accepted by [`accept`] on the runtime this runs on,
/// counted open on that worker (`open`) until it closes.
async fn serve_std(
    stream: std::net::TcpStream,
    peer: SocketAddr,
    service: Arc<Service>,
    open: WorkerConnection,
) {
    let _open = open;
    match TcpStream::from_std(stream) {
        Ok(stream) => serve(stream, peer, service).await,
        Err(e) => debug!("{peer}: closing: cannot register the socket: {e}"),
    }
}

/// Answers a client we cannot serve without waiting on it: one
/// non-blocking write of the 503 (in `http` mode), then close.
fn refuse(stream: std::net::TcpStream, peer: SocketAddr, service: &Arc<Service>) {
    // It never reaches `serve`, so it is counted and logged here.
    service.stats.accepted.fetch_add(1, Relaxed);
    service.stats.count_rejected();
    let failure = Failure::Unavailable(Unavailable::OutOfDescriptors);
    failure.count(&service.stats);
    let mut log = ConnectionLog::accept(service.clone(), peer);
    log.record.cause = Cause::OverLimit;
    if service.pool.load().config.on_failure == OnFailure::Http {
        // Non-blocking: what the socket buffer takes, and no more.
        let _ = (&stream).write(failure.http_response());
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn a_group_shares_one_port_and_each_socket_accepts() {
        let group = bind_group("127.0.0.1:0".parse().unwrap(), 16, 3).unwrap();
        let port = group[0].local_addr().unwrap().port();
        assert!(group.iter().all(|l| l.local_addr().unwrap().port() == port));
        // The kernel spreads connections over the group; every one is
        // accepted by one of its sockets.
        let clients: Vec<_> = (0..12)
            .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap())
            .collect();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut accepted = 0;
        while accepted < clients.len() && Instant::now() < deadline {
            for listener in &group {
                if listener.accept().is_ok() {
                    accepted += 1;
                }
            }
        }
        assert_eq!(accepted, clients.len());
    }

    #[tokio::test]
    async fn accepted_clients_have_nagle_off() {
        // The accept loop sets TCP_NODELAY on the listener only: this is
        // the kernel behaviour that makes that enough.
        let listener = bind("127.0.0.1:0".parse().unwrap(), 16).unwrap();
        let addr = listener.local_addr().unwrap();
        let service = Arc::new(Service::new(Arc::new(crate::pool::Pool::new(
            "t",
            crate::config::ServiceConfig::new(addr, vec![]),
        ))));
        let shutdown = CancellationToken::new();
        let connections = TaskTracker::new();
        let std_listener = listener.into_std().unwrap();
        let probe = std_listener.try_clone().unwrap();
        let looping = tokio::spawn(accept_loop(
            std_listener,
            service,
            shutdown.clone(),
            connections,
            0,
            Arc::new(Spread::here()),
        ));
        // The loop has set the option once it has polled.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket2::SockRef::from(&probe).tcp_nodelay().unwrap() {
            assert!(
                Instant::now() < deadline,
                "the listener never got TCP_NODELAY"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        shutdown.cancel();
        looping.await.unwrap();
        let _client = std::net::TcpStream::connect(addr).unwrap();
        let (accepted, _) = probe.accept().unwrap();
        assert!(accepted.nodelay().unwrap());
    }

    /// Steers every new connection of `listener`'s SO_REUSEPORT group to
    /// its first socket: a classic BPF program that returns 0, the worst
    /// luck the kernel's hash can have.
    fn steer_all_to_the_first(listener: &std::net::TcpListener) {
        use std::os::fd::AsRawFd;
        let mut program = [libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: 0,
        }];
        let fprog = libc::sock_fprog {
            len: 1,
            filter: program.as_mut_ptr(),
        };
        // SAFETY: a valid descriptor, and a program the kernel copies.
        let set = unsafe {
            libc::setsockopt(
                listener.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ATTACH_REUSEPORT_CBPF,
                (&raw const fprog).cast(),
                std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
            )
        };
        assert_eq!(set, 0, "{}", io::Error::last_os_error());
    }

    /// A worker: a current-thread runtime on its own thread until `stop`.
    fn worker(stop: CancellationToken) -> tokio::runtime::Handle {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            tx.send(runtime.handle().clone()).unwrap();
            runtime.block_on(stop.cancelled());
        });
        rx.recv().unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_worker_the_kernel_sends_everything_to_shares_with_the_idle_one() {
        // A backend that holds every connection open.
        let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let backend_addr = backend.local_addr().unwrap();
        let reached = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counting = reached.clone();
        let held = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = backend.accept().await {
                held.push(stream);
                counting.fetch_add(1, Relaxed);
            }
        });
        let group = bind_group("127.0.0.1:0".parse().unwrap(), 64, 2).unwrap();
        let addr = group[0].local_addr().unwrap();
        steer_all_to_the_first(&group[0]);
        let config = crate::config::ServiceConfig::new(
            addr,
            vec![crate::config::parse_backend(&backend_addr.to_string()).unwrap()],
        );
        let service = Arc::new(Service::new(Arc::new(crate::pool::Pool::new("t", config))));
        let stop = CancellationToken::new();
        let _stop_workers = stop.clone().drop_guard();
        let handles = vec![worker(stop.clone()), worker(stop.clone())];
        let stats = Arc::new(crate::stats::WorkerStats::new(2));
        let spread = Arc::new(Spread::new(handles.clone(), stats.clone()));
        for (i, listener) in group.into_iter().enumerate() {
            handles[i].spawn(accept_loop(
                listener,
                service.clone(),
                stop.clone(),
                TaskTracker::new(),
                i,
                spread.clone(),
            ));
        }

        const CLIENTS: u64 = 24;
        let mut clients = Vec::new();
        for _ in 0..CLIENTS {
            clients.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while stats.open(0) + stats.open(1) < CLIENTS {
            assert!(Instant::now() < deadline, "not all clients were accepted");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Every one was accepted by worker 0; about half are served by 1.
        let (first, second) = (stats.open(0), stats.open(1));
        assert!(first.abs_diff(second) <= 2, "{first} against {second}");
        assert_eq!(stats.handoffs.load(Relaxed), second);
        // And every one is served, whichever worker it ended on.
        while reached.load(Relaxed) < CLIENTS {
            assert!(
                Instant::now() < deadline,
                "not all clients reached the backend"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        drop(clients);
        held.abort();
    }

    #[test]
    fn a_group_never_joins_a_port_someone_else_listens_on() {
        // Another SO_REUSEPORT listener (same user, as another tcplb would
        // be) must make the port count as in use, not be shared.
        let other = listen("127.0.0.1:0".parse().unwrap(), 16, true).unwrap();
        let taken = other.local_addr().unwrap();
        let error = bind_group(taken, 16, 2).unwrap_err();
        assert!(format!("{error:#}").contains("in use"), "{error:#}");
        assert!(bind_group(taken, 16, 1).is_err());
    }
}
