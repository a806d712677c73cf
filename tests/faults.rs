//! Fault injection: backends that die, reset, or never answer; clients that
//! stall, reset, or never read; running out of file descriptors; many
//! thousands of connections. In every case only the affected connection
//! may suffer, and the balancer keeps serving everyone else.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use common::*;
use socket2::SockRef;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A long-running checked echo exchange on its own task.
struct Exchanger {
    rounds: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Exchanger {
    async fn start(addr: SocketAddr, seed: u64) -> Exchanger {
        let stream = TcpStream::connect(addr).await.unwrap();
        let rounds = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(exchange_until(stream, seed, rounds.clone(), stop.clone()));
        let exchanger = Exchanger { rounds, stop, task };
        exchanger.wait_rounds(3).await;
        exchanger
    }

    fn rounds(&self) -> usize {
        self.rounds.load(Relaxed)
    }

    /// Waits until `more` further exchanges have completed.
    async fn wait_rounds(&self, more: usize) {
        let target = self.rounds() + more;
        assert!(
            poll_until(PATIENCE, || self.rounds() >= target
                || self.task.is_finished())
            .await,
            "exchange made no progress"
        );
        assert!(
            !self.task.is_finished(),
            "exchange ended early after {} rounds",
            self.rounds()
        );
    }

    /// Stops cleanly; the whole exchange must have been byte-exact.
    async fn finish(self) -> usize {
        self.stop.store(true, Relaxed);
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("exchange did not finish")
            .unwrap()
            .expect("exchange broke");
        self.rounds.load(Relaxed)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_dying_mid_stream_ends_only_its_connections() {
    let mut a = TestBackend::echo().await;
    let b = TestBackend::echo().await;
    let mut svc = service(&[a.addr, b.addr]);
    svc.health.interval = Duration::from_millis(100);
    let lb = TestBalancer::start(svc);

    // Round-robin: the first connection goes to A, the second to B.
    let on_a = Exchanger::start(lb.addr, 1).await;
    let on_b = Exchanger::start(lb.addr, 2).await;
    assert_eq!((lb.active(0), lb.active(1)), (1, 1));

    a.kill().await;
    let ended = tokio::time::timeout(PATIENCE, on_a.task)
        .await
        .expect("client of the dead backend was left hanging")
        .unwrap();
    assert!(
        ended.is_err(),
        "the dead backend's stream cannot end cleanly"
    );

    assert!(
        poll_until(PATIENCE, || !lb.is_up(0)).await,
        "prober did not take the dead backend out"
    );
    on_b.wait_rounds(20).await;

    let before = lb.total(1);
    for i in 0..6u64 {
        let data = Pattern::bytes(100 + i, 10_000);
        assert_eq!(echo_roundtrip(lb.addr, &data).await, data);
    }
    assert_eq!(lb.total(1), before + 6, "new connections went elsewhere");
    on_b.finish().await;
}

/// Accepts, sends `bytes` of pattern, then resets the connection.
async fn resetting_backend(bytes: usize) -> TestBackend {
    TestBackend::with(move |listener: TcpListener| async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                // Health probes say nothing; clients announce themselves.
                let mut hello = [0u8; 5];
                if stream.read_exact(&mut hello).await.is_err() {
                    return;
                }
                let _ = stream.write_all(&Pattern::bytes(5, bytes)).await;
                let _ = SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                drop(stream); // RST, not FIN
            });
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_reset_mid_transfer_ends_only_that_connection() {
    const SENT: usize = 1 << 20;
    let resetting = resetting_backend(SENT).await;
    let echo = TestBackend::echo().await;
    let lb = TestBalancer::start(service(&[resetting.addr, echo.addr]));

    for round in 0..3u64 {
        // Round-robin: this one reaches the resetting backend...
        let mut victim = TcpStream::connect(lb.addr).await.unwrap();
        // (its backend is picked on a task of its own: wait for it, so the
        // next connection cannot overtake it and take its turn)
        let victims = round + 1;
        assert!(poll_until(PATIENCE, || lb.total(0) == victims).await);
        // ...and this one the echo backend, running across the reset.
        let bystander = Exchanger::start(lb.addr, 10 + round).await;
        victim.write_all(b"hello").await.unwrap();
        let mut got = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        let ended = tokio::time::timeout(PATIENCE, async {
            loop {
                match victim.read(&mut chunk).await {
                    Ok(0) => return Ok(()),
                    Ok(n) => got.extend_from_slice(&chunk[..n]),
                    Err(e) => return Err(e),
                }
            }
        })
        .await
        .expect("reset connection was left hanging");
        eprintln!("victim got {} bytes, then {ended:?}", got.len());
        assert!(got.len() <= SENT);
        assert!(got == Pattern::bytes(5, SENT)[..got.len()], "corrupted");
        bystander.wait_rounds(10).await;
        bystander.finish().await;
        assert!(poll_until(PATIENCE, || lb.active(0) == 0 && lb.active(1) == 0).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_reset_ends_only_that_connection() {
    let echo = TestBackend::echo().await;
    let lb = TestBalancer::start(service(&[echo.addr]));
    let bystander = Exchanger::start(lb.addr, 20).await;

    for _ in 0..5 {
        let mut client = TcpStream::connect(lb.addr).await.unwrap();
        client.write_all(&[7u8; 100_000]).await.unwrap();
        let mut some = [0u8; 1000];
        client.read_exact(&mut some).await.unwrap();
        assert!(poll_until(PATIENCE, || lb.active(0) == 2).await);
        SockRef::from(&client)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(client); // unread echo in our buffer: the kernel sends RST
        assert!(
            poll_until(PATIENCE, || lb.active(0) == 1).await,
            "the reset client's upstream connection stayed open"
        );
        bystander.wait_rounds(5).await;
    }
    let data = Pattern::bytes(21, 50_000);
    assert_eq!(echo_roundtrip(lb.addr, &data).await, data);
    bystander.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blackholed_and_refusing_backends_are_retried_within_the_timeouts() {
    let hole = blackhole();
    let live = TestBackend::http().await;
    let connect_timeout = Duration::from_millis(300);
    let mut svc = service(&[hole.addr, refusing_addr(), live.addr]);
    svc.connect_timeout = connect_timeout;
    svc.retries = 2;
    // Keep the bad backends in the pool so every client meets them.
    svc.health.fall = 1_000_000;
    let lb = TestBalancer::start(svc);

    // Worst case per client: a connect timeout, a refusal, then success.
    let allowed = connect_timeout * 3 + Duration::from_secs(5);
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..12 {
        let addr = lb.addr;
        clients.spawn(async move {
            let started = Instant::now();
            let reply = http_get(addr).await;
            (hello_port(&reply), started.elapsed())
        });
    }
    while let Some(result) = clients.join_next().await {
        let (port, waited) = result.unwrap();
        assert_eq!(port, live.addr.port());
        assert!(waited < allowed, "a client waited {waited:?}");
    }
    assert!(lb.connect_failures(0) >= 1, "the blackhole was never tried");
    assert!(
        lb.connect_failures(1) >= 1,
        "the refusing port was never tried"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_and_non_reading_clients_do_not_slow_others() {
    let echo = TestBackend::echo().await;
    // A backend that accepts and then never reads nor answers.
    let silent = TestBackend::with(|listener: TcpListener| async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    })
    .await;
    let lb_echo = TestBalancer::start(service(&[echo.addr]));
    let lb_silent = TestBalancer::start(service(&[silent.addr]));

    // Clients that connect and never say a word.
    let mut stalled = Vec::new();
    for _ in 0..50 {
        stalled.push(TcpStream::connect(lb_echo.addr).await.unwrap());
        stalled.push(TcpStream::connect(lb_silent.addr).await.unwrap());
    }
    // Clients that send until every buffer on the way is full, never reading.
    let mut non_reading = Vec::new();
    for _ in 0..5 {
        let mut client = TcpStream::connect(lb_echo.addr).await.unwrap();
        let chunk = vec![1u8; 64 * 1024];
        let mut sent = 0usize;
        while let Ok(result) =
            tokio::time::timeout(Duration::from_millis(500), client.write_all(&chunk)).await
        {
            result.unwrap();
            sent += chunk.len();
            assert!(sent < 1 << 30, "buffers never filled");
        }
        non_reading.push(client);
    }
    assert!(poll_until(PATIENCE, || lb_echo.active(0) == 55).await);

    // Everyone else is served in full, each well within the patience.
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..100u64 {
        let addr = lb_echo.addr;
        clients.spawn(async move {
            let data = Pattern::bytes(1000 + i, 20_000);
            let back =
                tokio::time::timeout(Duration::from_secs(10), try_echo_roundtrip(addr, &data))
                    .await
                    .expect("a client was slowed down to a halt")
                    .expect("a client failed");
            assert!(back == data);
        });
    }
    while let Some(result) = clients.join_next().await {
        result.unwrap();
    }
    drop((stalled, non_reading));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_file_descriptors_is_survived() {
    let echo = TestBackend::echo().await;
    let backend = echo.addr.to_string();
    let args = ["--backend", &backend, "--admin", "127.0.0.1:0"];
    let mut lb = spawn_tcplb_with_nofile(64, &args);
    let admin = lb.admin_addr().await;
    let pid = lb.pid();
    assert_eq!(nofile_limit(pid), Some(64));
    let started = Instant::now();

    // The kernel completes these handshakes; tcplb runs out while accepting.
    let mut clients = Vec::new();
    for _ in 0..200 {
        clients.push(TcpStream::connect(lb.addr).await.unwrap());
    }
    let accept_warnings = |lb: &TcplbProcess| {
        lb.process
            .stderr
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("accept failed"))
            .count()
    };
    assert!(
        poll_until(PATIENCE, || accept_warnings(&lb) >= 1).await,
        "tcplb never ran out of descriptors:\n{}",
        lb.process.stderr_text()
    );
    // Stay exhausted for a while: accept keeps failing every pause.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        lb.process.child.try_wait().unwrap().is_none(),
        "tcplb died:\n{}",
        lb.process.stderr_text()
    );
    let warnings = accept_warnings(&lb);
    let allowed = started.elapsed().as_secs() as usize + 2;
    assert!(
        warnings <= allowed,
        "{warnings} accept warnings in {:?}: not rate-limited",
        started.elapsed()
    );

    drop(clients);
    let data = Pattern::bytes(64, 10_000);
    let served = poll_until_served(lb.addr, &data).await;
    assert!(
        served,
        "tcplb never served again:\n{}",
        lb.process.stderr_text()
    );
    assert!(lb.process.child.try_wait().unwrap().is_none());
    // Those refused at accept heard the 503, and are counted as 503s.
    let metrics = raw_exchange(admin, "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n").await;
    let refused: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("tcplb_listener_failures_total{"))
        .filter(|l| l.contains("reason=\"out_of_descriptors\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(
        refused >= 1,
        "no 503 counted out_of_descriptors:\n{metrics}"
    );
}

/// Retries an echo round trip until one comes back byte-exact.
async fn poll_until_served(addr: SocketAddr, data: &[u8]) -> bool {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        let attempt = tokio::time::timeout(Duration::from_secs(2), try_echo_roundtrip(addr, data));
        if let Ok(Ok(back)) = attempt.await
            && back == data
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn descriptors_return_to_baseline_after_load() {
    let echo = TestBackend::echo().await;
    let refusing = refusing_addr().to_string();
    let backends = format!("{refusing},{}", echo.addr);
    // The refusing backend stays "up" so half the connections go through a
    // failed connect and a retry.
    let lb = spawn_tcplb(&[
        "--backend",
        &backends,
        "--fall",
        "1000000",
        "--health-interval",
        "60s",
    ]);
    let pid = lb.pid();
    let data = Pattern::bytes(3, 1000);
    assert_eq!(echo_roundtrip(lb.addr, &data).await, data);
    assert_eq!(echo_roundtrip(lb.addr, &data).await, data);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let baseline = fd_count(pid);
    assert!(baseline > 3, "cannot read /proc/{pid}/fd");

    let mut clients = tokio::task::JoinSet::new();
    for i in 0..300u64 {
        let addr = lb.addr;
        clients.spawn(async move {
            let data = Pattern::bytes(i, 32 * 1024);
            if i % 10 == 0 {
                // Some clients reset mid-way instead of closing.
                let mut stream = TcpStream::connect(addr).await?;
                stream.write_all(&data).await?;
                SockRef::from(&stream).set_linger(Some(Duration::ZERO))?;
                return Ok(());
            }
            let back = try_echo_roundtrip(addr, &data).await?;
            assert!(back == data);
            Ok::<_, std::io::Error>(())
        });
        if clients.len() >= 50 {
            clients.join_next().await.unwrap().unwrap().unwrap();
        }
    }
    while let Some(result) = clients.join_next().await {
        result.unwrap().unwrap();
    }
    let loaded = poll_until(PATIENCE, || fd_count(pid) <= baseline).await;
    assert!(
        loaded,
        "tcplb holds {} descriptors after the load, {baseline} before",
        fd_count(pid)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_concurrent_connections() {
    const WANTED: u64 = 10_000;
    // Separate processes, each with room: the balancer needs two
    // descriptors per connection, the echo backend and this test one each.
    let port = free_port().to_string();
    let mut backend_cmd = Command::new("sh");
    backend_cmd
        .arg("-c")
        .arg("ulimit -n 30000 2>/dev/null || ulimit -n \"$(ulimit -Hn)\"; exec \"$@\"")
        .arg("sh")
        .arg(env!("CARGO_BIN_EXE_backend"))
        .args(["--echo", &port]);
    let backend = spawn_process(backend_cmd);
    assert!(
        poll_until(PATIENCE, || backend.stderr_text().contains("listening on")).await,
        "echo backend did not start:\n{}",
        backend.stderr_text()
    );
    let backend_addr = format!("127.0.0.1:{port}");
    let lb = spawn_tcplb_with_nofile(30_000, &["--backend", &backend_addr, "--backlog", "4096"]);

    let own = nofile_limit(std::process::id()).unwrap_or(1024);
    let lb_limit = nofile_limit(lb.pid()).unwrap_or(1024);
    let backend_limit = nofile_limit(backend.child.id()).unwrap_or(1024);
    // A little headroom per process for its listener, runtime and probes.
    let fits = [
        own.saturating_sub(100),
        lb_limit.saturating_sub(64) / 2,
        backend_limit.saturating_sub(64),
    ]
    .into_iter()
    .min()
    .unwrap_or(0);
    let count = WANTED.min(fits) as usize;
    if (count as u64) < WANTED {
        eprintln!(
            "NOTE: descriptor limits (test {own}, tcplb {lb_limit}, backend {backend_limit}) \
             allow only {count} concurrent connections, not {WANTED}"
        );
    }
    if count < 1000 {
        eprintln!("SKIPPED: too few file descriptors for a meaningful run");
        return;
    }

    let started = Instant::now();
    // Every client waits until all are open, then until the count is taken.
    let all_open = Arc::new(tokio::sync::Barrier::new(count + 1));
    let release = Arc::new(tokio::sync::Barrier::new(count + 1));
    // Bound the connects in flight so the listen queue never overflows.
    let connecting = Arc::new(tokio::sync::Semaphore::new(200));
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..count {
        let (all_open, release) = (all_open.clone(), release.clone());
        let (connecting, addr) = (connecting.clone(), lb.addr);
        clients.spawn(async move {
            let permit = connecting.acquire_owned().await.unwrap();
            let mut stream = TcpStream::connect(addr).await?;
            let message = format!("connection {i:>6}");
            stream.write_all(message.as_bytes()).await?;
            let mut back = vec![0u8; message.len()];
            stream.read_exact(&mut back).await?;
            assert_eq!(back, message.as_bytes());
            drop(permit);
            all_open.wait().await;
            release.wait().await;
            stream.shutdown().await?;
            let mut rest = Vec::new();
            stream.read_to_end(&mut rest).await?;
            assert!(rest.is_empty());
            Ok::<_, std::io::Error>(())
        });
    }
    tokio::time::timeout(Duration::from_secs(120), all_open.wait())
        .await
        .expect("not all connections opened in time");
    let open_fds = fd_count(lb.pid());
    eprintln!(
        "{count} connections open at once after {:?}; tcplb holds {open_fds} descriptors",
        started.elapsed()
    );
    release.wait().await;
    assert!(
        open_fds >= 2 * count,
        "tcplb holds only {open_fds} descriptors"
    );
    let mut done = 0;
    tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(result) = clients.join_next().await {
            result.unwrap().expect("client I/O");
            done += 1;
        }
    })
    .await
    .expect("connections did not all close in time");
    assert_eq!(done, count);
    drop(backend);
}

/// A backend that writes to every connection as fast as the socket lets it.
async fn firehose() -> TestBackend {
    TestBackend::with(|listener| async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let chunk = vec![0x5a_u8; 64 * 1024];
                while stream.write_all(&chunk).await.is_ok() {}
            });
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_reading_clients_keep_memory_bounded() {
    const CLIENTS: usize = 200;
    let fast = firehose().await;
    let lb = spawn_tcplb(&["--backend", &fast.addr.to_string()]);
    let pid = lb.pid();
    let idle = rss_kib(pid);
    assert!(idle > 0, "cannot read /proc/{pid}/status");

    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        // Connected and never read: the backend keeps writing.
        clients.push(TcpStream::connect(lb.addr).await.unwrap());
    }
    // Every pipe fills (kernel buffers, then tcplb's) and stalls; sample twice.
    let filled = poll_until(PATIENCE, || fd_count(pid) >= 2 * CLIENTS).await;
    assert!(filled, "only {} descriptors open", fd_count(pid));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let first = rss_kib(pid);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let second = rss_kib(pid);
    eprintln!(
        "RSS idle {idle} KiB; {CLIENTS} stalled clients: {first} KiB, 2 s later {second} KiB"
    );
    // tcplb holds at most one 64 KiB copy buffer per direction per
    // connection: 200 x 128 KiB = 25 MiB in the worst case.
    let bound = idle + (CLIENTS as u64) * 128 + 8 * 1024;
    assert!(
        second <= bound,
        "RSS {second} KiB over the {bound} KiB bound"
    );
    assert!(
        second <= first + 4 * 1024,
        "RSS still growing while clients are stalled: {first} -> {second} KiB"
    );
    drop(clients);
}
