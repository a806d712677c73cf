//! Connection limits and passive health, through real sockets: the global
//! `max_conns` with its queue, per-backend `maxconn`, and `max_fails`.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{TestBackend, TestBalancer, refusing_addr};
use tcplb::config::ServiceConfig;
use tcplb::proxy::failure::SERVICE_UNAVAILABLE;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A service over `backends` whose prober stays out of the way.
fn service(backends: &[SocketAddr]) -> ServiceConfig {
    let mut svc = common::service(backends);
    svc.health.interval = Duration::from_secs(3600);
    svc
}

/// Opens a connection and proves it reaches an echo backend.
async fn echo_connection(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"ping").await.unwrap();
    let mut reply = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut reply))
        .await
        .expect("echo reply in time")
        .unwrap();
    assert_eq!(&reply, b"ping");
    stream
}

async fn read_all(mut stream: TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out))
        .await
        .expect("connection closed in time")
        .unwrap();
    out
}

#[tokio::test]
async fn over_max_conns_a_client_waits_then_gets_503() {
    let backend = TestBackend::echo().await;
    let mut svc = service(&[backend.addr]);
    svc.max_conns = Some(2);
    svc.queue_timeout = Duration::from_millis(300);
    let lb = TestBalancer::start(svc);

    let first = echo_connection(lb.addr).await;
    let _second = echo_connection(lb.addr).await;
    let third = TcpStream::connect(lb.addr).await.unwrap();
    assert_eq!(read_all(third).await, SERVICE_UNAVAILABLE);

    drop(first);
    // The freed slot serves the next client (bounded retry: the close is asynchronous).
    let mut served = false;
    for _ in 0..50 {
        let mut s = TcpStream::connect(lb.addr).await.unwrap();
        s.write_all(b"ping").await.unwrap();
        let mut reply = [0u8; 4];
        if s.read_exact(&mut reply).await.is_ok() && &reply == b"ping" {
            served = true;
            break;
        }
    }
    assert!(
        served,
        "a slot freed by a closed connection was never reused"
    );
}

#[tokio::test]
async fn a_queued_client_is_served_when_a_slot_frees() {
    let backend = TestBackend::echo().await;
    let mut svc = service(&[backend.addr]);
    svc.max_conns = Some(1);
    svc.queue_timeout = Duration::from_secs(20);
    let lb = TestBalancer::start(svc);

    let first = echo_connection(lb.addr).await;
    let queued = tokio::spawn(echo_connection(lb.addr));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!queued.is_finished(), "the second client should be waiting");
    drop(first);
    let _served = tokio::time::timeout(Duration::from_secs(10), queued)
        .await
        .expect("queued client served once the slot freed")
        .unwrap();
}

#[tokio::test]
async fn a_backend_at_its_maxconn_is_skipped() {
    let limited = TestBackend::echo().await;
    let other = TestBackend::echo().await;
    let mut svc = service(&[limited.addr, other.addr]);
    svc.backends[0].max_conns = Some(1);
    let lb = TestBalancer::start(svc);
    let pool = lb.service.pool.load();

    let _held = echo_connection(lb.addr).await; // round-robin: the limited one
    assert_eq!(pool.backends[0].active(), 1);
    let mut rest = Vec::new();
    for _ in 0..6 {
        rest.push(echo_connection(lb.addr).await);
    }
    assert_eq!(
        pool.backends[0].active(),
        1,
        "limited backend got more than its maxconn"
    );
    assert_eq!(pool.backends[1].active(), 6);
}

#[tokio::test]
async fn a_client_waits_for_a_full_backend_to_free_a_slot() {
    let backend = TestBackend::echo().await;
    let mut svc = service(&[backend.addr]);
    svc.backends[0].max_conns = Some(1);
    svc.queue_timeout = Duration::from_millis(300);
    let lb = TestBalancer::start(svc);

    let first = echo_connection(lb.addr).await;
    let refused = TcpStream::connect(lb.addr).await.unwrap();
    assert_eq!(
        read_all(refused).await,
        SERVICE_UNAVAILABLE,
        "full backend past the queue timeout"
    );

    let queued = tokio::spawn(async move {
        let mut s = TcpStream::connect(lb.addr).await.unwrap();
        s.write_all(b"ping").await.unwrap();
        let mut reply = [0u8; 4];
        s.read_exact(&mut reply).await.map(|_| reply)
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(first);
    let reply = tokio::time::timeout(Duration::from_secs(10), queued).await;
    assert_eq!(&reply.unwrap().unwrap().unwrap(), b"ping");
    drop(lb);
}

#[tokio::test]
async fn max_fails_takes_a_refusing_backend_out_before_the_prober_runs() {
    let good = TestBackend::echo().await;
    let mut svc = service(&[refusing_addr(), good.addr]);
    svc.health.fall = 1000; // keep the active/passive DOWN verdict out of this
    svc.max_fails = 2;
    svc.fail_timeout = Duration::from_secs(3600);
    svc.retries = 1;
    let lb = TestBalancer::start(svc);
    let pool = lb.service.pool.load();

    for _ in 0..20 {
        echo_connection(lb.addr).await;
    }
    let failures = lb.connect_failures(0);
    assert_eq!(
        failures, 2,
        "after max_fails the backend must not be tried again"
    );
    assert!(pool.backends[0].is_failing());
    assert_eq!(lb.total(1), 20);
}

#[tokio::test]
async fn idle_timeout_closes_silent_connections_and_spares_busy_ones() {
    let backend = TestBackend::echo().await;
    let mut svc = service(&[backend.addr]);
    svc.idle_timeout = Some(Duration::from_millis(400));
    let lb = TestBalancer::start(svc);

    let silent = echo_connection(lb.addr).await;
    let mut busy = echo_connection(lb.addr).await;
    // The busy one talks every 100 ms for well past the idle timeout.
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        busy.write_all(b"ping").await.unwrap();
        let mut reply = [0u8; 4];
        busy.read_exact(&mut reply).await.unwrap();
        assert_eq!(&reply, b"ping", "a busy connection was cut");
    }
    // The silent one was closed by tcplb: EOF with no bytes.
    assert_eq!(read_all(silent).await, b"");
    let idle_timeouts = lb.service.pool.load().backends[0]
        .stats
        .idle_timeouts
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(idle_timeouts, 1);
}
