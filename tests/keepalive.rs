//! Keepalive's user timeout against a real blackhole: a backend in a network
//! namespace of the test's own, whose link is cut in the middle of a
//! transfer, with bytes to it still unacknowledged (when Linux sends no
//! keepalive probes, so keepalive alone never finds it). tcplb must give
//! that connection up within the user timeout, say why in the access log,
//! and keep serving a connection to another backend. Once with the user
//! timeout keepalive implies (`--tcp-keepalive 2s,1s,3`: 5 s), once set by
//! `--tcp-user-timeout`, once by the file's `user_timeout` key.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use common::netns::Netns;
use common::*;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// How much later than the user timeout the close may come: the
/// retransmission timer only fires now and then, and the machine is small
/// and shared. Without the user timeout the kernel keeps retransmitting
/// for about 15 minutes.
const MARGIN: Duration = Duration::from_secs(15);

type Serve = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// A backend that greets each connection with `greeting`, then echoes.
fn greeting_echo(greeting: &'static [u8]) -> impl Fn(TcpListener) -> Serve + Send + Sync {
    move |listener| {
        Box::pin(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    if stream.write_all(greeting).await.is_ok() {
                        let (mut from, mut to) = stream.split();
                        let _ = tokio::io::copy(&mut from, &mut to).await;
                    }
                });
            }
        })
    }
}

/// A backend that greets each connection with `greeting`, then reads
/// everything as fast as it can (so its window stays open and tcplb
/// always has bytes in flight to it), counting into `received`.
fn greeting_sink(
    greeting: &'static [u8],
    received: Arc<AtomicU64>,
) -> impl Fn(TcpListener) -> Serve + Send + Sync {
    move |listener| {
        let received = received.clone();
        Box::pin(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let received = received.clone();
                tokio::spawn(async move {
                    if stream.write_all(greeting).await.is_ok() {
                        let mut buf = vec![0u8; 1 << 20];
                        while let Ok(n @ 1..) = stream.read(&mut buf).await {
                            received.fetch_add(n as u64, Relaxed);
                        }
                    }
                });
            }
        })
    }
}

/// A connection through tcplb and the greeting of the backend it reached.
async fn connect(addr: SocketAddr) -> (BufReader<TcpStream>, String) {
    let stream = tokio::time::timeout(PATIENCE, TcpStream::connect(addr))
        .await
        .expect("connect timed out")
        .expect("connect");
    let mut stream = BufReader::new(stream);
    let mut greeting = String::new();
    tokio::time::timeout(PATIENCE, stream.read_line(&mut greeting))
        .await
        .expect("no greeting in time")
        .expect("read the greeting");
    (stream, greeting.trim().to_string())
}

/// One connection to each backend (round robin alternates; a few tries).
async fn one_each(addr: SocketAddr) -> (TcpStream, TcpStream) {
    let (mut far, mut near) = (None, None);
    for _ in 0..6 {
        let (stream, greeting) = connect(addr).await;
        match greeting.as_str() {
            "far" if far.is_none() => far = Some(stream.into_inner()),
            "near" if near.is_none() => near = Some(stream.into_inner()),
            "far" | "near" => {}
            other => panic!("unexpected greeting {other:?}"),
        }
        if let (Some(_), Some(_)) = (&far, &near) {
            return (far.unwrap(), near.unwrap());
        }
    }
    panic!("round robin did not reach both backends in 6 connections");
}

/// tcplb's established connection to `backend` as `ss` shows it (bytes
/// queued, timers), if there is one.
fn socket_to(backend: SocketAddr) -> Option<String> {
    let out = std::process::Command::new("ss")
        .args([
            "-Htnoi",
            "state",
            "established",
            "dst",
            &backend.to_string(),
        ])
        .output()
        .expect("ss (iproute2) is needed for this test");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (!text.trim().is_empty()).then_some(text)
}

/// Cuts the far backend's link mid-transfer and checks that tcplb closes
/// that connection within `user_timeout` (plus [`MARGIN`]), logging
/// `backend_timeout`, while the connection to the near one keeps working.
async fn a_vanished_backend_is_given_up(
    user_timeout: Duration,
    config: impl FnOnce(&str) -> Vec<String>,
) {
    let netns = Netns::create();
    let received = Arc::new(AtomicU64::new(0));
    let far = TestBackend::on(netns.listen(), greeting_sink(b"far\n", received.clone()));
    let near = TestBackend::on(
        std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
        greeting_echo(b"near\n"),
    );
    let backends = format!("{},{}", far.addr, near.addr);
    let args = config(&backends);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let lb = spawn_tcplb(&args);
    let (far_stream, mut near_stream) = one_each(lb.addr).await;

    // Bulk to the far backend: a writer that keeps tcplb's queue to it
    // full, and a reader that sees the end.
    let (mut far_read, mut far_write) = far_stream.into_split();
    let writer = tokio::spawn(async move {
        let chunk = Pattern::bytes(6, 64 * 1024);
        let deadline = Instant::now() + PATIENCE + MARGIN + user_timeout;
        while Instant::now() < deadline && far_write.write_all(&chunk).await.is_ok() {}
    });
    let reader = tokio::spawn(async move {
        let mut buf = [0u8; 1024];
        loop {
            match far_read.read(&mut buf).await {
                Ok(0) => return "EOF".to_string(),
                Ok(_) => {}
                Err(e) => return e.to_string(),
            }
        }
    });
    let flowing = poll_until(PATIENCE, || received.load(Relaxed) >= 4 << 20).await;
    assert!(flowing, "no bulk through tcplb: {received:?} bytes");

    netns.cut();
    let cut = Instant::now();
    // The case keepalive cannot see: bytes to the backend unacknowledged,
    // the retransmission timer running (`timer:(on,...)`).
    let mut seen = None;
    let retransmitting = poll_until(PATIENCE, || {
        seen = socket_to(far.addr);
        seen.as_deref().is_some_and(|s| s.contains("timer:(on,"))
    })
    .await;
    assert!(
        retransmitting,
        "tcplb is not retransmitting to {}: {seen:?}",
        far.addr
    );

    let ended = tokio::time::timeout(user_timeout + MARGIN, reader).await;
    let elapsed = cut.elapsed();
    writer.abort();
    let how = match ended {
        Ok(how) => how.expect("the reader panicked"),
        Err(_) => panic!(
            "tcplb still holds the connection to the vanished backend {:?} after the cut \
             (user timeout {user_timeout:?}); ss: {:?}",
            elapsed,
            socket_to(far.addr)
        ),
    };
    eprintln!("closed {elapsed:?} after the cut ({how}); tcplb's socket then: {seen:?}");
    // Not before the user timeout could have run out either: it was that.
    assert!(
        elapsed >= user_timeout / 2,
        "closed after {elapsed:?}, before the user timeout of {user_timeout:?} ({how})"
    );

    // The access log says why, naming the backend.
    let line = lb
        .process
        .line_with(&format!("\"backend\":\"{}\"", far.addr))
        .await;
    let record: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(record["cause"], "backend_timeout", "{line}");
    assert!(record["sent"].as_u64().unwrap() >= 4 << 20, "{line}");

    // The connection to the other backend never noticed.
    let data = Pattern::bytes(7, 256 * 1024);
    let back = tokio::time::timeout(PATIENCE, async {
        near_stream.write_all(&data).await?;
        let mut back = vec![0u8; data.len()];
        near_stream.read_exact(&mut back).await.map(|_| back)
    })
    .await
    .expect("the near connection stalled")
    .expect("the near connection failed");
    assert!(back == data, "the near connection's echo is corrupted");
    assert_eq!(finish(&mut near_stream, b"").await, b"");
    drop(netns);
}

/// The command line for `backends` with `keepalive` flags, logging JSON to stderr.
fn flags(backends: &str, keepalive: &[&str]) -> Vec<String> {
    let log = ["--access-log", "stderr", "--access-log-format", "json"];
    let backend = ["--backend", backends];
    let args = backend.iter().chain(keepalive).chain(&log);
    args.map(|a| a.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_implies_a_user_timeout_that_finds_a_backend_vanished_mid_transfer() {
    // idle + interval × count = 5 s.
    a_vanished_backend_is_given_up(Duration::from_secs(5), |backends| {
        flags(backends, &["--tcp-keepalive", "2s,1s,3"])
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_user_timeout_flag_sets_how_long_a_vanished_backend_is_waited_for() {
    // Keepalive alone would take an hour and more to notice.
    a_vanished_backend_is_given_up(Duration::from_secs(3), |backends| {
        let keepalive = ["--tcp-keepalive", "1h", "--tcp-user-timeout", "3s"];
        flags(backends, &keepalive)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_user_timeout_key_sets_it_from_the_file() {
    let dir = TempDir::new("keepalive-file");
    let path = dir.path("tcplb.toml");
    a_vanished_backend_is_given_up(Duration::from_secs(3), |backends| {
        let list: Vec<String> = backends.split(',').map(|b| format!("{b:?}")).collect();
        let text = format!(
            "access_log = \"stderr\"\naccess_log_format = \"json\"\n\
             [[listener]]\nlisten = \"127.0.0.1:0\"\nbackends = [{}]\n\
             tcp_keepalive = {{ idle = \"1h\", user_timeout = \"3s\" }}\n",
            list.join(", ")
        );
        std::fs::write(&path, text).unwrap();
        vec!["--config".into(), path.to_str().unwrap().into()]
    })
    .await;
}
