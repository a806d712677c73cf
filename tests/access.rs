//! Client access control over real sockets: denied and not-allowed clients
//! are closed before any backend is chosen; per-IP connection and rate
//! limits answer 503 (or close) while the clients within them keep working.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use common::{PATIENCE, TestBackend, TestBalancer, echo_roundtrip, poll_until, service};
use tcplb::config::OnFailure;
use tcplb::config::{Config, Network, ServiceConfig};
use tcplb::proxy::Service;
use tcplb::proxy::failure::SERVICE_UNAVAILABLE;
use tcplb::runtime::Balancer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

fn cidrs(list: &[&str]) -> Vec<Network> {
    list.iter().map(|c| c.parse().unwrap()).collect()
}

/// An echo backend that also counts every byte it receives, so a test can
/// tell forwarded traffic from the prober's (which sends nothing).
async fn recording_backend() -> (TestBackend, Arc<AtomicU64>) {
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    let backend = TestBackend::with(move |listener| {
        let counter = counter.clone();
        async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = stream.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        counter.fetch_add(n as u64, Relaxed);
                        if stream.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        }
    })
    .await;
    (backend, received)
}

/// Connects, sends a little, and returns every byte the balancer sends
/// back before closing (a reset counts as the end).
async fn what_a_client_hears(addr: SocketAddr) -> Vec<u8> {
    tokio::time::timeout(PATIENCE, async {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let _ = stream.write_all(b"hello\n").await;
        let _ = stream.shutdown().await;
        let mut heard = Vec::new();
        let mut buf = [0u8; 1024];
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                break;
            }
            heard.extend_from_slice(&buf[..n]);
        }
        heard
    })
    .await
    .expect("the balancer closes a refused client")
}

async fn all_finished(service: &Service) {
    assert!(
        poll_until(PATIENCE, || service.stats.active.load(Relaxed) == 0).await,
        "client connections did not finish"
    );
}

/// Checks that one client was refused and nothing reached the backend.
async fn assert_refused_before_backend(addr: SocketAddr, service: &Service, received: &AtomicU64) {
    let heard = what_a_client_hears(addr).await;
    assert!(
        heard.is_empty(),
        "refused client heard {:?}",
        String::from_utf8_lossy(&heard)
    );
    all_finished(service).await;
    assert_eq!(service.stats.accepted.load(Relaxed), 1);
    assert_eq!(service.stats.rejected.load(Relaxed), 1);
    let backend = &service.pool.load().backends[0];
    assert_eq!(
        backend.stats.total.load(Relaxed),
        0,
        "no backend connection"
    );
    assert_eq!(backend.stats.connect_failures.load(Relaxed), 0);
    assert_eq!(received.load(Relaxed), 0, "the backend saw no client byte");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_client_is_closed_and_never_forwarded() {
    let (backend, received) = recording_backend().await;
    let mut svc = service(&[backend.addr]);
    svc.access.deny = cidrs(&["127.0.0.1/32"]);
    // Deny wins even over a matching allow.
    svc.access.allow = cidrs(&["127.0.0.0/8"]);
    let lb = TestBalancer::start(svc);
    assert_refused_before_backend(lb.addr, &lb.service, &received).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_outside_the_allowed_networks_is_closed() {
    let (backend, received) = recording_backend().await;
    let mut svc = service(&[backend.addr]);
    svc.access.allow = cidrs(&["10.0.0.0/8", "::1/128"]);
    let lb = TestBalancer::start(svc);
    assert_refused_before_backend(lb.addr, &lb.service, &received).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_in_an_allowed_network_is_served() {
    let (backend, received) = recording_backend().await;
    let mut svc = service(&[backend.addr]);
    svc.access.allow = cidrs(&["127.0.0.0/8"]);
    svc.access.deny = cidrs(&["127.0.0.2/32"]);
    let lb = TestBalancer::start(svc);
    assert_eq!(echo_roundtrip(lb.addr, b"let me in").await, b"let me in");
    all_finished(&lb.service).await;
    assert_eq!(lb.service.stats.rejected.load(Relaxed), 0);
    assert_eq!(received.load(Relaxed), 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_clients_are_checked_too() {
    let (backend, received) = recording_backend().await;
    let mut svc: ServiceConfig = service(&[backend.addr]);
    svc.listen = "[::1]:0".parse().unwrap();
    svc.access.deny = cidrs(&["::1/128"]);
    let Ok(balancer) = Balancer::bind(Config::single(svc)) else {
        eprintln!("no IPv6 loopback here; skipping");
        return;
    };
    let addr = balancer.local_addrs()[0];
    let service = balancer.services()[0].clone();
    let shutdown = balancer.shutdown_token();
    tokio::spawn(balancer.run());
    assert_refused_before_backend(addr, &service, &received).await;
    shutdown.cancel();
}

/// An open connection through an echo backend, checked with a round trip.
async fn open_and_check(addr: SocketAddr, tag: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    check_alive(&mut stream, tag).await;
    stream
}

async fn check_alive(stream: &mut TcpStream, tag: &str) {
    let message = format!("{tag}\n");
    stream.write_all(message.as_bytes()).await.expect("send");
    let mut back = vec![0u8; message.len()];
    tokio::time::timeout(PATIENCE, stream.read_exact(&mut back))
        .await
        .expect("echo timed out")
        .expect("echo");
    assert_eq!(back, message.as_bytes());
}

async fn per_ip_connection_limit(on_failure: OnFailure, expected: &[u8]) {
    let backend = TestBackend::echo().await;
    let mut svc = service(&[backend.addr]);
    svc.access.max_conns_per_ip = Some(3);
    svc.on_failure = on_failure;
    let lb = TestBalancer::start(svc);

    let mut held = Vec::new();
    for i in 0..3 {
        held.push(open_and_check(lb.addr, &format!("client {i}")).await);
    }
    let heard = what_a_client_hears(lb.addr).await;
    assert_eq!(
        heard,
        expected,
        "the 4th client heard {:?}",
        String::from_utf8_lossy(&heard)
    );
    assert_eq!(lb.service.stats.rejected.load(Relaxed), 1);
    for (i, stream) in held.iter_mut().enumerate() {
        check_alive(stream, &format!("client {i} still served")).await;
    }
    assert_eq!(
        lb.total(0),
        3,
        "the refused client never reached the backend"
    );

    // Closing them frees the address's slots.
    drop(held);
    all_finished(&lb.service).await;
    assert_eq!(echo_roundtrip(lb.addr, b"again").await, b"again");
    assert_eq!(lb.service.stats.rejected.load(Relaxed), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_max_conns_per_ip_the_client_gets_503() {
    per_ip_connection_limit(OnFailure::Http, SERVICE_UNAVAILABLE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_max_conns_per_ip_the_client_is_closed_in_close_mode() {
    per_ip_connection_limit(OnFailure::Close, b"").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_over_the_rate_is_cut_to_about_the_rate() {
    let backend = TestBackend::echo().await;
    let mut svc = service(&[backend.addr]);
    svc.access.rate_per_ip = Some(5.0);
    let lb = TestBalancer::start(svc);

    // 20 clients at once: the bucket holds 5, and refills 5 per second.
    let mut clients = JoinSet::new();
    for _ in 0..20 {
        let addr = lb.addr;
        clients.spawn(async move {
            tokio::time::timeout(PATIENCE, async move {
                let mut stream = TcpStream::connect(addr).await.expect("connect");
                let _ = stream.write_all(b"x").await;
                let _ = stream.shutdown().await;
                let mut heard = Vec::new();
                let _ = stream.read_to_end(&mut heard).await;
                heard
            })
            .await
            .expect("client timed out")
        });
    }
    let (mut served, mut refused) = (0, 0);
    while let Some(heard) = clients.join_next().await {
        let heard = heard.expect("client task");
        if heard == b"x" {
            served += 1;
        } else {
            assert_eq!(
                heard,
                SERVICE_UNAVAILABLE,
                "a refused client hears the 503: {:?}",
                String::from_utf8_lossy(&heard)
            );
            refused += 1;
        }
    }
    assert!(
        (5..=8).contains(&served),
        "{served} served, {refused} refused"
    );
    all_finished(&lb.service).await;
    assert_eq!(lb.service.stats.rejected.load(Relaxed), refused);
    assert_eq!(lb.service.stats.accepted.load(Relaxed), 20);
}
