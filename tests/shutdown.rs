//! How a tcplb stops when it is one of several: on SIGTERM `/ready` turns
//! red and systemd hears STOPPING=1 at once, while the listeners keep
//! accepting for `--shutdown-delay`; then the drain, whose end is spread
//! over its last window instead of cutting every connection in the same
//! instant. The real binary, on loopback.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::notify::Notifications;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `GET path` on the admin endpoint: the status line and the body.
async fn get(admin: SocketAddr, path: &str) -> (String, String) {
    let reply = raw_exchange(admin, &format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n")).await;
    let (head, body) = reply.split_once("\r\n\r\n").expect("a whole answer");
    let status = head.lines().next().unwrap_or_default().to_string();
    (status, body.to_string())
}

/// A client through the balancer that has had one echo back.
async fn echoed(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(b"ping").await.unwrap();
    let mut back = [0u8; 4];
    tokio::time::timeout(PATIENCE, stream.read_exact(&mut back))
        .await
        .expect("echo in time")
        .expect("echo");
    assert_eq!(&back, b"ping");
    stream
}

#[tokio::test]
async fn a_shutdown_delay_turns_ready_red_and_keeps_accepting_then_drains() {
    let backend = TestBackend::echo().await;
    let mut notifications = Notifications::new("delay");
    // The file's keys this time (the flags in the test below).
    let file = TempFile::new(
        "shutdown-delay.toml",
        &format!(
            "shutdown_delay = \"5s\"\ndrain_timeout = \"20s\"\nready_requires_backends = true\n\
             admin = \"127.0.0.1:0\"\n[[listener]]\nlisten = \"127.0.0.1:0\"\n\
             backends = [\"{}\"]\nhealth = {{ interval = \"1h\" }}\n",
            backend.addr
        ),
    );
    let mut command = Command::new(tcplb_bin());
    command
        .args(["--config", file.arg()])
        .env("NOTIFY_SOCKET", &notifications.path);
    let mut tcplb = wait_listening(spawn_process(command));
    notifications.wait_for(|m| m == "READY=1");
    let admin = tcplb.admin_addr().await;
    assert_eq!(get(admin, "/ready").await.1, "ready\n");
    // A client in the middle of something when the signal comes.
    let mut held = echoed(tcplb.addr).await;

    tcplb.process.sigterm();
    notifications.wait_for(|m| m == "STOPPING=1");
    let (status, body) = get(admin, "/ready").await;
    assert_eq!(status, "HTTP/1.1 503 Service Unavailable");
    assert_eq!(body, "not ready: shutting down\n");
    assert_eq!(get(admin, "/live").await.1, "live\n");
    // New clients are still served: the layer in front has not moved
    // them yet.
    for _ in 0..5 {
        drop(echoed(tcplb.addr).await);
    }
    let text = tcplb.process.stderr_text();
    assert!(!text.contains("stopped accepting"), "{text}");
    assert!(
        text.contains("still accepting for 5s (--shutdown-delay)"),
        "{text}"
    );

    // Then the drain: the listeners are closed, the admin endpoint still
    // answers, and the held client goes on.
    tcplb.process.line_with("stopped accepting").await;
    assert!(
        TcpStream::connect(tcplb.addr).await.is_err(),
        "still listening"
    );
    assert_eq!(get(admin, "/ready").await.1, "not ready: shutting down\n");
    held.write_all(b"pong").await.unwrap();
    let mut back = [0u8; 4];
    held.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"pong");
    drop(held);
    let status = tcplb.process.wait_exit(PATIENCE).expect("exits");
    tcplb.process.wait_stderr_read();
    assert!(status.success(), "{status}");
    assert!(
        tcplb
            .process
            .stderr_text()
            .contains("all connections finished")
    );
}

#[tokio::test]
async fn the_end_of_a_drain_is_spread_over_its_last_window_and_counted() {
    const CLIENTS: usize = 20;
    let backend = TestBackend::echo().await;
    let dir = TempDir::new("spread");
    let log = dir.arg("access.log");
    let mut command = Command::new(tcplb_bin());
    command
        .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .args(["-b", &backend.addr.to_string(), "--health-interval", "1h"])
        // A 10 s drain: its last second is the spread.
        .args(["--drain-timeout", "10s", "--access-log", &log])
        .args(["--access-log-format", "json"]);
    let mut tcplb = wait_listening(spawn_process(command));
    let admin = tcplb.admin_addr().await;
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(echoed(tcplb.addr).await);
    }

    let signalled = Instant::now();
    tcplb.process.sigterm();
    // Each client notes when its connection is closed.
    let ends: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            tokio::spawn(async move {
                let mut rest = Vec::new();
                let read = tokio::time::timeout(PATIENCE, client.read_to_end(&mut rest)).await;
                assert!(read.is_ok(), "not closed in time");
                Instant::now()
            })
        })
        .collect();
    // The admin endpoint answers while the drain runs, and counts the
    // closes as they come (it stops with the last one, so the total is in
    // the log).
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (_, metrics) = get(admin, "/metrics").await;
        let closed: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("tcplb_drain_spread_closed_total "))
            .and_then(|n| n.parse().ok())
            .expect("tcplb_drain_spread_closed_total");
        if closed > 0 {
            assert!(closed <= CLIENTS as u64);
            break;
        }
        assert!(Instant::now() < deadline, "none closed in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut at = Vec::new();
    for end in ends {
        at.push(end.await.unwrap());
    }
    let first = *at.iter().min().unwrap();
    let last = *at.iter().max().unwrap();
    // Not cut early, and not all in one instant: spread over the window.
    assert!(
        first - signalled >= Duration::from_secs(4),
        "{:?}",
        first - signalled
    );
    assert!(
        last - first >= Duration::from_millis(250),
        "{:?}",
        last - first
    );
    let status = tcplb.process.wait_exit(PATIENCE).expect("exits");
    assert!(status.success(), "{status}");
    let text = std::fs::read_to_string(&log).unwrap();
    let shutdown = text
        .lines()
        .filter(|l| l.contains("\"cause\":\"shutdown\""))
        .count();
    assert_eq!(shutdown, CLIENTS, "{text}");
}
