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

/// `GET PATH` on the admin endpoint: the body.
async fn admin_get(admin: SocketAddr, path: &str) -> String {
    let text =
        common::raw_exchange(admin, &format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n")).await;
    text.split_once("\r\n\r\n")
        .expect("a whole answer")
        .1
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_503_a_limit_answers_is_counted_as_a_503_with_its_reason() {
    // The binary, one listener per limit: each turns its second client
    // away with the 503, which must move failures_total{code="503"} with
    // the limit as the reason (and rejected_total, as before), and /status.
    let backend = TestBackend::echo().await;
    let b = backend.addr;
    // (listener, its limit, the 503's reason, counted as rejected too)
    let cases = [
        ("max-conns", "max_conns = 1", "queue_timeout", true),
        (
            "maxconn",
            "backends = [{ address = \"B\", maxconn = 1 }]",
            "queue_timeout",
            false,
        ),
        ("per-ip", "max_conns_per_ip = 1", "per_ip_connections", true),
        ("rate", "rate_per_ip = 0.01", "per_ip_rate", true),
    ];
    let mut config = format!(
        "admin = \"127.0.0.1:0\"\n[defaults]\nhealth = {{ interval = \"1h\" }}\n\
         queue_timeout = \"100ms\"\nbackends = [\"{b}\"]\n"
    );
    for (name, limit, _, _) in cases {
        let limit = limit.replace('B', &b.to_string());
        config += &format!("[[listener]]\nname = \"{name}\"\nlisten = \"127.0.0.1:0\"\n{limit}\n");
    }
    let dir = common::TempDir::new("limits-503");
    let path = dir.path("tcplb.toml");
    std::fs::write(&path, config).unwrap();
    let mut command = std::process::Command::new(common::tcplb_bin());
    command.arg("--config").arg(&path);
    let lb = common::wait_listening(common::spawn_process(command));
    let admin = lb.admin_addr().await;
    let status: serde_json::Value =
        serde_json::from_str(&admin_get(admin, "/status").await).unwrap();
    let listeners = status["listeners"].as_array().unwrap().clone();
    let mut held = Vec::new();
    for (name, ..) in cases {
        let listener = listeners.iter().find(|l| l["name"] == name).unwrap();
        let addr: SocketAddr = listener["listen"].as_str().unwrap().parse().unwrap();
        // The first is served (and stays open: the slot, the per-IP count,
        // the rate's one token); the second hears the exact 503.
        held.push(echo_connection(addr).await);
        let second = TcpStream::connect(addr).await.unwrap();
        assert_eq!(read_all(second).await, SERVICE_UNAVAILABLE, "{name}");
    }

    let metrics = admin_get(admin, "/metrics").await;
    let status: serde_json::Value =
        serde_json::from_str(&admin_get(admin, "/status").await).unwrap();
    let reasons = [
        "no_backend",
        "queue_timeout",
        "per_ip_connections",
        "per_ip_rate",
        "per_ip_table_full",
        "out_of_descriptors",
    ];
    for (name, _, reason, rejected) in cases {
        let listener = status["listeners"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["name"] == name)
            .unwrap();
        let labels = format!(
            "listener=\"{name}\",listen=\"{}\"",
            listener["listen"].as_str().unwrap()
        );
        for other in reasons {
            let expected = u64::from(other == reason);
            let line = format!(
                "tcplb_listener_failures_total{{{labels},code=\"503\",reason=\"{other}\"}} {expected}"
            );
            assert!(
                metrics.lines().any(|l| l == line),
                "{line} not in\n{metrics}"
            );
            assert_eq!(
                listener["failures"]["503_by_reason"][other], expected,
                "{listener}"
            );
        }
        assert_eq!(listener["failures"]["503"], 1, "{listener}");
        assert_eq!(listener["failures"]["502"], 0, "{listener}");
        // A --max-conns or per-IP refusal also counts as rejected; a
        // backend's maxconn never did.
        let line = format!(
            "tcplb_listener_rejected_total{{{labels}}} {}",
            u8::from(rejected)
        );
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} not in\n{metrics}"
        );
    }
    drop(held);
}
