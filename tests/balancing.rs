//! Core behaviour of the balancer, end to end over real loopback sockets:
//! which backend each connection reaches, what a client hears when none can
//! take it, and that bytes pass through unchanged in both directions.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use tcplb::config::OnFailure;
use tcplb::config::StrategyKind;
use tcplb::proxy::failure::{BAD_GATEWAY, SERVICE_UNAVAILABLE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Ports of the demo backends in pool order.
fn ports(backends: &[TestBackend]) -> Vec<u16> {
    backends.iter().map(|b| b.addr.port()).collect()
}

async fn http_backends(n: usize) -> Vec<TestBackend> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(TestBackend::http().await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_visits_backends_in_order() {
    let backends = http_backends(3).await;
    let lb = TestBalancer::start(service(
        &backends.iter().map(|b| b.addr).collect::<Vec<_>>(),
    ));
    let mut seen = Vec::new();
    for _ in 0..6 {
        seen.push(which_backend(lb.addr).await);
    }
    let p = ports(&backends);
    assert_eq!(seen, [p[0], p[1], p[2], p[0], p[1], p[2]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_backend_is_skipped_and_returns_when_revived() {
    let mut backends = http_backends(3).await;
    let mut svc = service(&backends.iter().map(|b| b.addr).collect::<Vec<_>>());
    svc.health.interval = Duration::from_millis(100);
    svc.retries = 0;
    let lb = TestBalancer::start(svc);
    let p = ports(&backends);

    backends[1].kill().await;
    assert!(
        poll_until(PATIENCE, || !lb.is_up(1)).await,
        "prober never marked the killed backend down"
    );
    let before = lb.connect_failures(1);
    let mut seen = Vec::new();
    for _ in 0..6 {
        seen.push(which_backend(lb.addr).await);
    }
    assert!(
        seen.iter().all(|&port| port == p[0] || port == p[2]),
        "{seen:?}"
    );
    assert_eq!(seen.iter().filter(|&&port| port == p[0]).count(), 3);
    assert_eq!(
        lb.connect_failures(1),
        before,
        "a down backend was still tried"
    );

    backends[1].revive().await;
    assert!(
        poll_until(PATIENCE, || lb.is_up(1)).await,
        "prober never brought the revived backend back"
    );
    let mut seen = Vec::new();
    for _ in 0..6 {
        seen.push(which_backend(lb.addr).await);
    }
    // Every backend, the revived one included, is in the rotation again.
    for port in &p {
        assert!(seen.contains(port), "{port} missing from {seen:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connect_answers_exact_502() {
    let mut svc = service(&[refusing_addr()]);
    svc.retries = 0;
    // Keep the backend "up" so the answer is 502 (tried, failed), not 503.
    svc.health.fall = 1_000_000;
    let lb = TestBalancer::start(svc);
    for _ in 0..3 {
        assert_eq!(http_get(lb.addr).await.as_bytes(), BAD_GATEWAY);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_reaches_the_live_backend_when_one_refuses() {
    let live = TestBackend::http().await;
    let mut svc = service(&[refusing_addr(), live.addr]);
    svc.retries = 1;
    svc.health.fall = 1_000_000;
    let lb = TestBalancer::start(svc);
    for _ in 0..20 {
        assert_eq!(which_backend(lb.addr).await, live.addr.port());
    }
    // Round-robin sent about half of them to the refusing one first.
    assert!(
        lb.connect_failures(0) >= 5,
        "the retry path was not exercised"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_backends_down_answers_exact_503() {
    let mut svc = service(&[refusing_addr(), refusing_addr()]);
    svc.health.interval = Duration::from_millis(100);
    let lb = TestBalancer::start(svc);
    assert!(poll_until(PATIENCE, || !lb.is_up(0) && !lb.is_up(1)).await);
    for _ in 0..3 {
        assert_eq!(http_get(lb.addr).await.as_bytes(), SERVICE_UNAVAILABLE);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_failure_close_sends_nothing() {
    let mut svc = service(&[refusing_addr()]);
    svc.retries = 0;
    svc.health.fall = 1_000_000;
    svc.on_failure = OnFailure::Close;
    let lb = TestBalancer::start(svc);
    let mut stream = TcpStream::connect(lb.addr).await.unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut got))
        .await
        .expect("connection was not closed");
    // A reset is also a close; what matters is that not one byte came.
    if let Err(e) = read {
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
    }
    assert!(got.is_empty(), "got {got:?}");
    assert!(lb.connect_failures(0) >= 1, "the backend was never tried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_half_close_still_gets_the_whole_echo() {
    let echo = TestBackend::echo().await;
    let lb = TestBalancer::start(service(&[echo.addr]));
    let data = Pattern::bytes(7, 48 * 1024);
    let mut stream = TcpStream::connect(lb.addr).await.unwrap();
    // Small enough to sit in socket buffers, so writing it all first is safe.
    let back = finish(&mut stream, &data).await;
    assert!(back == data, "echo differs ({} bytes back)", back.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_written_after_client_half_close_arrives() {
    // Reads the whole request up to EOF, only then answers with its length
    // and the bytes reversed: no reply byte can be in flight before the FIN.
    let backend = TestBackend::with(|listener: TcpListener| async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = Vec::new();
                if stream.read_to_end(&mut request).await.is_ok() {
                    let mut reply = format!("{}\n", request.len()).into_bytes();
                    reply.extend(request.iter().rev());
                    let _ = stream.write_all(&reply).await;
                    let _ = stream.shutdown().await;
                }
            });
        }
    })
    .await;
    let lb = TestBalancer::start(service(&[backend.addr]));
    let data = Pattern::bytes(8, 100_000);
    let mut stream = TcpStream::connect(lb.addr).await.unwrap();
    let back = finish(&mut stream, &data).await;
    let mut expected = b"100000\n".to_vec();
    expected.extend(data.iter().rev());
    assert!(back == expected, "reply differs ({} bytes)", back.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_half_close_first_while_client_keeps_sending() {
    const REPLY: usize = 200_000;
    const UPLOAD: usize = 300_000;
    let (received_tx, mut received_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    let backend = TestBackend::with(move |listener: TcpListener| {
        let received_tx = received_tx.clone();
        async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let received_tx = received_tx.clone();
                tokio::spawn(async move {
                    // Answer first and close our sending side...
                    let reply = Pattern::bytes(9, REPLY);
                    if stream.write_all(&reply).await.is_err() {
                        return;
                    }
                    let _ = stream.shutdown().await;
                    // ...then keep reading everything the client still sends.
                    let mut upload = Vec::new();
                    let _ = stream.read_to_end(&mut upload).await;
                    let _ = received_tx.send(upload);
                });
            }
        }
    })
    .await;
    let lb = TestBalancer::start(service(&[backend.addr]));
    let mut stream = TcpStream::connect(lb.addr).await.unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut reply))
        .await
        .expect("backend's half-close did not reach the client")
        .unwrap();
    assert!(reply == Pattern::bytes(9, REPLY), "reply differs");
    // The client's direction must still be open after the backend's FIN.
    let upload = Pattern::bytes(10, UPLOAD);
    stream.write_all(&upload).await.unwrap();
    stream.shutdown().await.unwrap();
    // Health probes connect and close without a byte; skip their empty uploads.
    let received = tokio::time::timeout(PATIENCE, async {
        loop {
            let upload = received_rx.recv().await.unwrap();
            if !upload.is_empty() {
                return upload;
            }
        }
    })
    .await
    .expect("backend never saw the client's upload and EOF");
    assert!(
        received == upload,
        "upload differs ({} bytes)",
        received.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_mebibytes_pass_byte_identical_both_ways() {
    const TOTAL: usize = 64 << 20;
    const CHUNK: usize = 64 * 1024;
    let echo = TestBackend::echo().await;
    let lb = TestBalancer::start(service(&[echo.addr]));
    let stream = TcpStream::connect(lb.addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let send = tokio::spawn(async move {
        let mut pattern = Pattern::new(64);
        let mut chunk = vec![0u8; CHUNK];
        for _ in 0..TOTAL / CHUNK {
            pattern.fill(&mut chunk);
            writer.write_all(&chunk).await?;
        }
        writer.shutdown().await
    });
    let receive = tokio::spawn(async move {
        let mut pattern = Pattern::new(64);
        let mut expected = vec![0u8; CHUNK];
        let mut got = vec![0u8; CHUNK];
        let mut total = 0usize;
        let mut mismatch = None;
        let mut filled = 0;
        loop {
            let n = reader.read(&mut got[filled..]).await?;
            if n == 0 {
                break;
            }
            filled += n;
            if filled == CHUNK {
                pattern.fill(&mut expected);
                if got != expected && mismatch.is_none() {
                    mismatch = Some(total);
                }
                total += CHUNK;
                filled = 0;
            }
        }
        Ok::<_, std::io::Error>((total + filled, mismatch))
    });
    let (sent, received) = tokio::time::timeout(Duration::from_secs(120), async {
        (send.await.unwrap(), receive.await.unwrap())
    })
    .await
    .expect("64 MiB transfer timed out");
    sent.unwrap();
    let (total, mismatch) = received.unwrap();
    assert_eq!(total, TOTAL);
    assert_eq!(mismatch, None, "first differing chunk at byte offset");
    let counted = || {
        let state = lb.service.pool.load();
        state.backends[0]
            .stats
            .bytes_in
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    assert!(
        poll_until(PATIENCE, || counted() == TOTAL as u64).await,
        "bytes_in is {}",
        counted()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_concurrent_clients_get_their_own_echo() {
    const CLIENTS: usize = 500;
    let echo = TestBackend::echo().await;
    let lb = TestBalancer::start(service(&[echo.addr]));
    let all_open = std::sync::Arc::new(tokio::sync::Barrier::new(CLIENTS));
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..CLIENTS {
        let all_open = all_open.clone();
        let addr = lb.addr;
        clients.spawn(async move {
            let mut stream = TcpStream::connect(addr).await?;
            let message = format!("client {i} says {}", i * 7919);
            stream.write_all(message.as_bytes()).await?;
            let mut back = vec![0u8; message.len()];
            stream.read_exact(&mut back).await?;
            // Hold the connection until all 500 are open at once.
            all_open.wait().await;
            stream.shutdown().await?;
            let mut rest = Vec::new();
            stream.read_to_end(&mut rest).await?;
            Ok::<_, std::io::Error>((message.into_bytes(), back, rest))
        });
    }
    let mut ok = 0;
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(result) = clients.join_next().await {
            let (sent, back, rest) = result.unwrap().expect("client I/O");
            assert_eq!(back, sent);
            assert!(rest.is_empty());
            ok += 1;
        }
    })
    .await
    .expect("clients timed out");
    assert_eq!(ok, CLIENTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_protocol_passes_unchanged() {
    let echo = TestBackend::echo().await;
    let lb = TestBalancer::start(service(&[echo.addr]));
    let mut data: Vec<u8> = (0..=255u8).collect();
    data.extend_from_slice(&[
        0x00, 0x00, 0xC3, 0x28, 0xFF, 0xFE, 0xED, 0xA0, 0x80, 0xF8, 0x88,
    ]);
    data.extend_from_slice(b"\r\n\r\nGET / HTTP/1.1\r\n\x00");
    let data = data.repeat(50);
    assert!(
        std::str::from_utf8(&data).is_err(),
        "data must be invalid UTF-8"
    );
    let back = echo_roundtrip(lb.addr, &data).await;
    assert_eq!(back, data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_round_robin_follows_the_weights() {
    let backends = http_backends(2).await;
    let mut svc = service(&[]);
    svc.backends = vec![spec(backends[0].addr, 3), spec(backends[1].addr, 1)];
    let lb = TestBalancer::start(svc);
    let mut counts: HashMap<u16, usize> = HashMap::new();
    for _ in 0..400 {
        *counts.entry(which_backend(lb.addr).await).or_default() += 1;
    }
    let heavy = counts.get(&backends[0].addr.port()).copied().unwrap_or(0);
    let light = counts.get(&backends[1].addr.port()).copied().unwrap_or(0);
    assert_eq!(heavy + light, 400, "{counts:?}");
    assert!((280..=320).contains(&heavy), "3:1 expected, got {counts:?}");
}

/// Issue 20, through the real binary: with `--backend A=2,B,C`, 40
/// connections split 20/10/10, and after `tcplb ctl drain web A` they
/// split B 20 / C 20 (B took all of A's turns, 30 / 10, before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_a_weighted_backend_leaves_the_others_their_shares() {
    let backends = http_backends(3).await;
    let (a, b, c) = (backends[0].addr, backends[1].addr, backends[2].addr);
    let dir = TempDir::new("wrr-drain");
    let socket = dir.arg("admin.sock");
    let list = format!("{a}=2,{b},{c}");
    let args = ["--name", "web", "-b", &list, "--admin-socket", &socket];
    let lb = spawn_tcplb(&[&args[..], &["--health-interval", "1h"]].concat());
    lb.process
        .line_with("admin endpoint with write access")
        .await;
    let split = || async {
        let mut counts = [0usize; 3];
        for _ in 0..40 {
            let port = which_backend(lb.addr).await;
            let i = ports(&backends).iter().position(|&p| p == port).unwrap();
            counts[i] += 1;
        }
        counts
    };
    assert_eq!(split().await, [20, 10, 10]);
    let drain = [
        "--admin",
        &format!("unix:{socket}"),
        "drain",
        "web",
        &a.to_string(),
    ]
    .map(String::from);
    let out = ctl(drain.to_vec()).await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(split().await, [0, 20, 20]);
}

/// Opens a keep-alive HTTP connection through `addr`, reads one full
/// response and returns the connection (still open) with the backend port.
async fn long_lived(addr: std::net::SocketAddr) -> (TcpStream, u16) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let n = tokio::time::timeout_at(deadline, stream.read(&mut chunk))
            .await
            .expect("no response")
            .unwrap();
        assert!(n > 0, "closed early");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if text.contains("\r\n\r\n") && text.ends_with('\n') && text.contains("Hello") {
            return (stream, hello_port(&text));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_conn_avoids_the_backend_holding_long_connections() {
    avoids_the_loaded_backend(StrategyKind::LeastConn).await;
}

/// With two backends, power-of-two-choices always compares both, so it must
/// behave like least-conn here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2c_avoids_the_backend_holding_long_connections() {
    avoids_the_loaded_backend(StrategyKind::PowerOfTwo).await;
}

async fn avoids_the_loaded_backend(strategy: StrategyKind) {
    let backends = http_backends(2).await;
    let mut svc = service(&backends.iter().map(|b| b.addr).collect::<Vec<_>>());
    svc.strategy = strategy;
    let lb = TestBalancer::start(svc);
    let (a, b) = (backends[0].addr.port(), backends[1].addr.port());

    // Six long-lived connections spread 3/3...
    let mut held = Vec::new();
    for _ in 0..6 {
        held.push(long_lived(lb.addr).await);
    }
    let on_a = held.iter().filter(|(_, port)| *port == a).count();
    assert_eq!(on_a, 3, "{strategy} should spread 3/3");
    // ...then the ones on B end, leaving A with three.
    held.retain(|(_, port)| *port == a);
    assert!(poll_until(PATIENCE, || lb.active(1) == 0).await);

    for _ in 0..10 {
        assert_eq!(
            which_backend(lb.addr).await,
            b,
            "went to the loaded backend"
        );
    }
    assert_eq!(lb.active(0), 3);
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_keeps_each_client_address_on_one_backend() {
    let backends = http_backends(3).await;
    let mut svc = service(&backends.iter().map(|b| b.addr).collect::<Vec<_>>());
    svc.strategy = StrategyKind::Hash;
    let lb = TestBalancer::start(svc);

    let first = which_backend(lb.addr).await;
    for _ in 0..30 {
        assert_eq!(which_backend(lb.addr).await, first, "127.0.0.1 moved");
    }

    // Other loopback source addresses are sticky too, and not all on one backend.
    let mut chosen = HashMap::new();
    for host in 2..=21u8 {
        let source = std::net::SocketAddr::from(([127, 0, 0, host], 0));
        let mut ports = Vec::new();
        for _ in 0..3 {
            ports.push(which_backend_from(source, lb.addr).await);
        }
        assert!(
            ports.iter().all(|p| *p == ports[0]),
            "127.0.0.{host}: {ports:?}"
        );
        chosen.insert(host, ports[0]);
    }
    let distinct: std::collections::HashSet<_> = chosen.values().collect();
    assert!(distinct.len() >= 2, "20 clients all hashed to one backend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_clients_and_backends_work() {
    let v6_listener = std::net::TcpListener::bind("[::1]:0");
    let Ok(v6_listener) = v6_listener else {
        eprintln!("SKIPPED: no IPv6 loopback here");
        return;
    };
    let v6_addr = v6_listener.local_addr().unwrap();
    v6_listener.set_nonblocking(true).unwrap();
    tokio::spawn(tcplb::demo::serve_echo(
        TcpListener::from_std(v6_listener).unwrap(),
    ));
    let v4_echo = TestBackend::echo().await;

    // An IPv6 listener in front of one IPv6 and one IPv4 backend.
    let mut svc = service(&[v6_addr, v4_echo.addr]);
    svc.listen = "[::1]:0".parse().unwrap();
    let lb = TestBalancer::start_on_own_listen(svc);
    let addr = lb.addr;
    assert!(addr.is_ipv6());
    for i in 0..4u64 {
        let data = Pattern::bytes(600 + i, 5000);
        assert_eq!(echo_roundtrip(addr, &data).await, data);
    }
    assert_eq!((lb.total(0), lb.total(1)), (2, 2));
}

/// The binary's zero-copy path (`splice(2)` through a kernel pipe) must be
/// as byte-exact as the copy path, whether forced on or chosen by `auto`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spliced_transfers_are_byte_identical() {
    let echo = TestBackend::echo().await;
    for mode in ["on", "auto", "off"] {
        let lb = spawn_tcplb(&["--backend", &echo.addr.to_string(), "--splice", mode]);
        // Odd size: ends mid-chunk, so the last partial pipe load is checked too.
        let data = Pattern::bytes(7, 24 * 1024 * 1024 + 4093);
        let back = echo_roundtrip(lb.addr, &data).await;
        assert!(
            back == data,
            "--splice {mode}: {} of {} bytes came back, or they differ",
            back.len(),
            data.len()
        );
    }
}

/// Shutdown arrives as a future the caller owns (as main passes SIGTERM):
/// when it completes, the listener stops accepting, the open connection
/// drains byte-exact, and `run_until` returns.
#[tokio::test]
async fn shutdown_is_a_future_the_caller_passes() {
    use tcplb::config::Config;
    use tcplb::runtime::Balancer;

    let echo = TestBackend::echo().await;
    let mut config = Config::single(service(&[echo.addr]));
    config.drain_timeout = Duration::from_secs(20);
    let balancer = Balancer::bind(config).expect("bind");
    let addr = balancer.local_addrs()[0];
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(balancer.run_until(async {
        let _ = stopped.await;
    }));

    let mut open = TcpStream::connect(addr).await.unwrap();
    open.write_all(b"before").await.unwrap();
    let mut got = [0u8; 6];
    tokio::time::timeout(PATIENCE, open.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&got, b"before");

    stop.send(()).unwrap();
    assert!(
        poll_until(PATIENCE, || std::net::TcpStream::connect(addr).is_err()).await,
        "still accepting after shutdown"
    );
    assert!(!run.is_finished(), "returned with a connection still open");
    assert_eq!(finish(&mut open, b" and after").await, b" and after");
    tokio::time::timeout(PATIENCE, run)
        .await
        .expect("run_until did not return after the drain")
        .unwrap();
}
