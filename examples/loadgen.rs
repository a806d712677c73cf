//! A small TCP load generator for an echo backend, direct or through a
//! proxy: what iperf3 and wrk do not measure.
//!
//! - `conn`: each of N workers opens a new TCP connection, sends a small
//!   request, reads the same number of bytes back and closes, in a loop;
//!   reports connections per second and p50/p99 connection latency.
//! - `close`: the same with HTTP: each connection sends one `GET` with
//!   `Connection: close` and reads the answer until the server closes
//!   (the server closes first, unlike `conn`).
//! - `http`: N keep-alive connections, one HTTP/1.1 `GET` at a time on
//!   each; reports requests per second and p50/p99 request latency.
//! - `bulk`: N connections each stream bytes to the echo backend while
//!   reading them back; reports the echoed (received) rate in Gbit/s.
//! - `hold`: opens N connections (at most `--concurrency` connecting at
//!   once, from the `--sources` addresses in turn), echoes `--size` bytes
//!   on each (0: none), prints `held=N errors=E open_s=T` once all are
//!   open, holds them idle for `--seconds`, then closes them: for
//!   measuring memory per idle connection and holding many connections.
//! - `tls`: each of N workers opens a new TCP connection, does a full TLS
//!   handshake with `--sni` (rustls, no session resumption), reads the
//!   server's reply to the end and closes, in a loop; reports handshakes
//!   per second, p50/p99 latency and this client's CPU per handshake (so a
//!   run shows whether the client was the bottleneck). The server must
//!   present the certificate in `--pin` and send `--expect`: a handshake
//!   that reached the wrong backend counts as an error, not a handshake.
//!   With `--resume` each worker keeps its own session cache (rustls'
//!   in-memory store, tickets), so every handshake after its first resumes
//!   when the server allows; the report adds the share that did
//!   (`resumed_pct`); every run reports the share of TLS 1.3 handshakes
//!   (`tls13_pct`). `--kx x25519` offers only X25519 instead of rustls'
//!   default (X25519MLKEM768 first, X25519 too), for comparing servers
//!   that do not do post-quantum key exchange on equal work.
//! - `tls-bulk`: like `bulk` over TLS (one handshake per connection, then
//!   the echoed plaintext counted), for a TLS-terminating proxy in front of
//!   a plain echo backend; adds this client's CPU per echoed GB.
//! - `hold --tls`: the held connections complete a TLS handshake first
//!   (and echo `--size` bytes over it), for memory per idle terminated
//!   connection.
//! - `udp`: each of N workers is one UDP session (a socket connected to
//!   the target) sending `--size` bytes and waiting for them back, in a
//!   loop (a datagram not back within 200 ms counts as lost and the next
//!   one goes); reports round trips per second (each is two datagrams
//!   through a proxy), p50/p99 latency, the losses and this client's CPU
//!   per round trip.
//! - `udp-hold`: N UDP sessions each send `--size` bytes (at least 1) and
//!   wait for them back, then stay silent; prints `held=N` once all were
//!   answered and holds them for `--seconds`: memory per idle session.
//!
//! Fixed rate (`--rate R`, conn, close and http): open loop, as a
//! production load arrives. `conn`/`close` start a new connection every
//! 1/R s whether or not earlier ones have finished (at most `--workers` in
//! flight: an arrival that finds them all busy is counted as `missed`, not
//! sent); `http` sends R requests per second spread over the `--workers`
//! connections, each on its own schedule. A new connection's latency runs
//! from when it was started (arrivals never wait for answers); a request
//! that is due while its connection still waits for the previous answer is
//! timed from when it was due, so a system that falls behind shows it in
//! p99 (no coordinated omission). A request sent on time is timed from the
//! moment it went out: the timer's 1 ms granularity is the client's, not
//! the server's.
//! Besides the rate, every mode prints `all=N`: the units done in the whole
//! run, warm-up included, to divide a server's CPU time by.
//!
//! Every run is bounded: a warm-up, then `--seconds` of measurement, then
//! it stops (at a fixed rate that is also at most R x (warm-up + seconds)
//! connections or requests). Build: `cargo build --release --example loadgen`.
//! Example: `loadgen conn 127.0.0.1:9000 --workers 64 --seconds 5`,
//! `loadgen tls 127.0.0.1:8443 --sni a.test --pin cert.pem --expect hit`.

use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, HandshakeKind, SignatureScheme,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Mode {
    Conn,
    Close,
    Http,
    Bulk,
    Hold,
    Tls,
    TlsBulk,
    Udp,
    UdpHold,
}

#[derive(Parser, Debug)]
#[command(about = "TCP load generator for an echo backend")]
struct Args {
    mode: Mode,
    target: SocketAddr,
    /// Concurrent workers (conn, close), connections (http, bulk); at a
    /// fixed rate, the most connections in flight (conn, close).
    #[arg(long, default_value_t = 32)]
    workers: usize,
    /// Offered connections (conn, close) or requests (http) per second,
    /// open loop; 0: as fast as the workers go (closed loop).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Warm-up seconds, not counted.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Request size in bytes (conn mode).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Runtime worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Server name the TLS client sends (tls mode).
    #[arg(long, default_value = "a.test")]
    sni: String,
    /// PEM certificate the TLS server must present (tls mode; required).
    #[arg(long)]
    pin: Option<PathBuf>,
    /// Bytes the TLS server must send before closing (tls mode) [any].
    #[arg(long)]
    expect: Option<String>,
    /// Resume sessions (tls mode): a session cache per worker.
    #[arg(long)]
    resume: bool,
    /// Key exchange groups offered (tls modes): `default` (rustls'),
    /// `x25519` (only X25519).
    #[arg(long, default_value = "default")]
    kx: String,
    /// Complete a TLS handshake on each held connection (hold mode); needs
    /// `--pin`.
    #[arg(long)]
    tls: bool,
    /// Local addresses to connect from, in turn (hold mode), e.g.
    /// 127.0.0.2,127.0.0.3: each gives its own ephemeral port range.
    /// [default: the kernel's choice]
    #[arg(long, value_delimiter = ',')]
    sources: Vec<IpAddr>,
    /// Connections being opened at once (hold mode), so a burst does not
    /// overflow the listen backlog.
    #[arg(long, default_value_t = 512)]
    concurrency: usize,
}

/// Shared between workers: counting starts after the warm-up and
/// everything stops at the end.
struct Run {
    counting: AtomicBool,
    stop: AtomicBool,
    units: AtomicU64,
    /// Counted handshakes that resumed a session (tls mode).
    resumed: AtomicU64,
    /// Counted handshakes that were TLS 1.3 (tls mode): a server that
    /// settles on 1.2 does other work.
    tls13: AtomicU64,
    /// Units done in the whole run, warm-up included.
    all: AtomicU64,
    errors: AtomicU64,
    /// Fixed-rate arrivals not sent because `--workers` were in flight.
    missed: AtomicU64,
    /// Latencies (us) of the fixed-rate connections, pushed as each ends.
    latencies: std::sync::Mutex<Vec<u32>>,
    /// The first error, printed at the end: why a run has errors.
    first_error: OnceLock<String>,
    /// Held connections wait on this instead of polling `stop`: 100,000
    /// sleeping tasks waking every few ms would load the machine.
    released: CancellationToken,
    /// Bounds the connections being opened at once (hold mode).
    opening: Semaphore,
}

impl Run {
    fn error(&self, e: impl std::fmt::Display) {
        self.errors.fetch_add(1, Relaxed);
        let _ = self.first_error.set(e.to_string());
    }
}

fn main() {
    let args = Args::parse();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.threads {
        builder.worker_threads(n);
    }
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    runtime.block_on(run(args));
}

async fn run(args: Args) {
    let run = Arc::new(Run {
        counting: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        units: AtomicU64::new(0),
        resumed: AtomicU64::new(0),
        tls13: AtomicU64::new(0),
        all: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        missed: AtomicU64::new(0),
        latencies: std::sync::Mutex::new(Vec::new()),
        first_error: OnceLock::new(),
        released: CancellationToken::new(),
        opening: Semaphore::new(args.concurrency.max(1)),
    });
    let tls = match (args.mode, args.tls) {
        (Mode::Tls | Mode::TlsBulk, _) | (Mode::Hold, true) => match TlsTarget::new(&args) {
            Ok(t) => Some(Arc::new(t)),
            Err(e) => {
                eprintln!("error: {e}");
                std::process::exit(2);
            }
        },
        _ => None,
    };
    let mut tasks = Vec::new();
    let paced_conns = matches!(args.mode, Mode::Conn | Mode::Close) && args.rate > 0.0;
    if paced_conns {
        let exchange = Exchange::of(args.mode, args.size);
        tasks.push(tokio::spawn(paced_conn_arrivals(
            args.target,
            exchange,
            args.rate,
            args.workers,
            run.clone(),
        )));
    }
    for i in 0..args.workers {
        if paced_conns {
            break;
        }
        let run = run.clone();
        let (target, size) = (args.target, args.size);
        let source = (!args.sources.is_empty()).then(|| args.sources[i % args.sources.len()]);
        tasks.push(match args.mode {
            Mode::Conn | Mode::Close => {
                tokio::spawn(conn_worker(target, Exchange::of(args.mode, size), run))
            }
            Mode::Http => {
                // Worker i's requests are due at (i + k x workers) / rate.
                let pace = (args.rate > 0.0).then(|| {
                    let every = Duration::from_secs_f64(args.workers as f64 / args.rate);
                    (every.mul_f64(i as f64 / args.workers as f64), every)
                });
                tokio::spawn(http_worker(target, pace, run))
            }
            Mode::Bulk => tokio::spawn(bulk_worker(target, None, run)),
            Mode::Hold => tokio::spawn(hold_worker(target, source, size, tls.clone(), run)),
            Mode::Tls => {
                let tls = tls.clone().expect("tls mode builds its target above");
                tokio::spawn(tls_worker(target, tls, run))
            }
            Mode::TlsBulk => tokio::spawn(bulk_worker(target, tls.clone(), run)),
            Mode::Udp => tokio::spawn(udp_worker(target, size, run)),
            Mode::UdpHold => tokio::spawn(udp_hold_worker(target, size.max(1), run)),
        });
    }
    if let Mode::Hold | Mode::UdpHold = args.mode {
        return hold(args, run, tasks).await;
    }
    tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;
    run.counting.store(true, Relaxed);
    let start = Instant::now();
    let cpu_start = cpu_time();
    tokio::time::sleep(Duration::from_secs_f64(args.seconds)).await;
    let units = run.units.load(Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = cpu_time().saturating_sub(cpu_start);
    run.stop.store(true, Relaxed);
    let mut latencies = Vec::new();
    for task in tasks {
        // A worker stuck on a dead peer must not hold the report up.
        if let Ok(Ok(mut l)) = tokio::time::timeout(Duration::from_secs(5), task).await {
            latencies.append(&mut l);
        }
    }
    latencies.append(&mut run.latencies.lock().unwrap_or_else(|e| e.into_inner()));
    let errors = run.errors.load(Relaxed);
    let (all, missed) = (run.all.load(Relaxed), run.missed.load(Relaxed));
    if let Some(e) = run.first_error.get() {
        eprintln!("first error: {e}");
    }
    match args.mode {
        Mode::Conn | Mode::Close | Mode::Http | Mode::Tls | Mode::Udp => {
            latencies.sort_unstable();
            let pct = |p: f64| {
                latencies
                    .get(
                        ((latencies.len() as f64 * p) as usize)
                            .min(latencies.len().saturating_sub(1)),
                    )
                    .copied()
                    .unwrap_or(0)
            };
            let rate = units as f64 / elapsed;
            let (p50, p99) = (pct(0.50), pct(0.99));
            let cpu_per = match units {
                0 => "-".to_string(),
                n => format!("{:.2}", cpu.as_secs_f64() * 1e6 / n as f64),
            };
            if let Mode::Conn | Mode::Close | Mode::Http = args.mode {
                let unit = if let Mode::Http = args.mode {
                    "req"
                } else {
                    "conn"
                };
                println!(
                    "{unit}_per_s={rate:.0} p50_us={p50} p99_us={p99} errors={errors} \
                     missed={missed} all={all}"
                );
            } else if let Mode::Udp = args.mode {
                println!(
                    "rtt_per_s={rate:.0} p50_us={p50} p99_us={p99} lost={errors} \
                     client_cpu_us_per_rtt={cpu_per}"
                );
            } else {
                let pct = |counted: &AtomicU64| match units {
                    0 => "-".to_string(),
                    n => format!("{:.0}", counted.load(Relaxed) as f64 * 100.0 / n as f64),
                };
                println!(
                    "hs_per_s={rate:.0} p50_us={p50} p99_us={p99} errors={errors} \
                     client_cpu_us_per_hs={cpu_per} resumed_pct={} tls13_pct={}",
                    pct(&run.resumed),
                    pct(&run.tls13)
                );
            }
        }
        Mode::Bulk | Mode::TlsBulk => {
            let cpu_per_gb = match units {
                0 => "-".to_string(),
                n => format!("{:.0}", cpu.as_secs_f64() * 1e3 / (n as f64 / 1e9)),
            };
            println!(
                "gbit_per_s={:.3} errors={errors} client_cpu_ms_per_gb={cpu_per_gb}",
                units as f64 * 8.0 / elapsed / 1e9
            )
        }
        Mode::Hold | Mode::UdpHold => {}
    }
}

/// What one short connection does between connect and close.
#[derive(Clone)]
enum Exchange {
    /// Sends these bytes, reads as many back, closes first (conn).
    Echo(Arc<[u8]>),
    /// Sends an HTTP request with `Connection: close` and reads the answer
    /// until the server closes (close).
    HttpClose,
}

const HTTP_CLOSE: &[u8] = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n";
const HTTP_KEEP_ALIVE: &[u8] = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n";

impl Exchange {
    fn of(mode: Mode, size: usize) -> Exchange {
        match mode {
            Mode::Close => Exchange::HttpClose,
            _ => Exchange::Echo(vec![0xa5_u8; size].into()),
        }
    }

    /// One connection: connect, exchange, close.
    async fn once(&self, target: SocketAddr, buf: &mut Vec<u8>) -> io::Result<()> {
        let mut stream = TcpStream::connect(target).await?;
        stream.set_nodelay(true)?;
        match self {
            Exchange::Echo(request) => {
                stream.write_all(request).await?;
                buf.resize(request.len(), 0);
                stream.read_exact(buf).await?;
            }
            Exchange::HttpClose => {
                stream.write_all(HTTP_CLOSE).await?;
                buf.clear();
                stream.read_to_end(buf).await?;
                if !buf.starts_with(b"HTTP/1.1 200") {
                    return Err(io::Error::other("not a 200 answer"));
                }
            }
        }
        Ok(())
    }
}

/// Counts a unit that ended well, `started` being when it began (or was
/// due), if it began in the measured window and ended before the stop.
fn done(run: &Run, counted: bool, started: Instant) -> Option<u32> {
    run.all.fetch_add(1, Relaxed);
    (counted && !run.stop.load(Relaxed)).then(|| {
        run.units.fetch_add(1, Relaxed);
        u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX)
    })
}

/// New connection per exchange until told to stop; returns the measured
/// latencies in microseconds.
async fn conn_worker(target: SocketAddr, exchange: Exchange, run: Arc<Run>) -> Vec<u32> {
    let mut buf = Vec::new();
    let mut latencies = Vec::new();
    while !run.stop.load(Relaxed) {
        let start = Instant::now();
        let counted = run.counting.load(Relaxed);
        match tokio::time::timeout(Duration::from_secs(5), exchange.once(target, &mut buf)).await {
            Ok(Ok(())) => latencies.extend(done(&run, counted, start)),
            _ => {
                run.errors.fetch_add(1, Relaxed);
                // Back off a little so a refused target is not hammered.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    latencies
}

/// Fixed-rate connections: one due every 1/rate s, each on its own task,
/// at most `in_flight` at once; an arrival that finds them all busy is
/// missed (counted, not sent), so the offered load stays the same.
async fn paced_conn_arrivals(
    target: SocketAddr,
    exchange: Exchange,
    rate: f64,
    in_flight: usize,
    run: Arc<Run>,
) -> Vec<u32> {
    let slots = Arc::new(Semaphore::new(in_flight.max(1)));
    let start = Instant::now();
    let mut arrivals = Vec::new();
    for i in 0u64.. {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
        }
        if run.stop.load(Relaxed) {
            break;
        }
        let counted = run.counting.load(Relaxed);
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            if counted {
                run.missed.fetch_add(1, Relaxed);
            }
            continue;
        };
        let (run, exchange) = (run.clone(), exchange.clone());
        arrivals.push(tokio::spawn(async move {
            let started = Instant::now();
            let mut buf = Vec::new();
            let once = exchange.once(target, &mut buf);
            match tokio::time::timeout(Duration::from_secs(5), once).await {
                Ok(Ok(())) => {
                    if let Some(us) = done(&run, counted, started) {
                        run.latencies
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(us);
                    }
                }
                Ok(Err(e)) => run.error(e),
                Err(_) => run.error("timed out after 5s"),
            }
            drop(slot);
        }));
        // Finished arrivals need not be kept until the end.
        if arrivals.len() >= 4096 {
            arrivals.retain(|a| !a.is_finished());
        }
    }
    for arrival in arrivals {
        let _ = arrival.await;
    }
    Vec::new()
}

/// Keep-alive HTTP requests on one connection, one at a time, until told
/// to stop; `pace` (first due after, then every) for a fixed rate. Returns
/// the latencies in microseconds (from when each request was due).
async fn http_worker(
    target: SocketAddr,
    pace: Option<(Duration, Duration)>,
    run: Arc<Run>,
) -> Vec<u32> {
    let mut latencies = Vec::new();
    let mut stream = match TcpStream::connect(target).await {
        Ok(s) => s,
        Err(e) => {
            run.error(e);
            return latencies;
        }
    };
    if let Err(e) = stream.set_nodelay(true) {
        run.error(e);
        return latencies;
    }
    let mut buf = Vec::with_capacity(4096);
    let start = Instant::now();
    for k in 0u32.. {
        let mut due = Instant::now();
        if let Some((first, every)) = pace {
            due = start + first + every * k;
            if due > Instant::now() {
                tokio::time::sleep_until(due.into()).await;
                due = Instant::now();
            }
        }
        if run.stop.load(Relaxed) {
            break;
        }
        let counted = run.counting.load(Relaxed);
        let request = http_request(&mut stream, &mut buf);
        match tokio::time::timeout(Duration::from_secs(5), request).await {
            Ok(Ok(())) => latencies.extend(done(&run, counted, due)),
            Ok(Err(e)) => {
                run.error(e);
                break;
            }
            Err(_) => {
                run.error("timed out after 5s");
                break;
            }
        }
    }
    latencies
}

/// One request and its whole answer (head, then `Content-Length` bytes).
async fn http_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<()> {
    stream.write_all(HTTP_KEEP_ALIVE).await?;
    buf.clear();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(head) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let text = String::from_utf8_lossy(&buf[..head]);
            if !text.starts_with("HTTP/1.1 200") {
                return Err(io::Error::other("not a 200 answer"));
            }
            let length = text
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                .ok_or_else(|| io::Error::other("no Content-Length"))?;
            if buf.len() >= head + 4 + length {
                return Ok(());
            }
        }
        if buf.len() > 64 * 1024 {
            return Err(io::Error::other("answer longer than 64 KiB"));
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed mid-answer",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// One UDP session: a datagram out, the same back, until told to stop;
/// returns the measured round trips in microseconds.
async fn udp_worker(target: SocketAddr, size: usize, run: Arc<Run>) -> Vec<u32> {
    let bind: SocketAddr = match target {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::LOCALHOST, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::LOCALHOST, 0).into(),
    };
    let socket = match tokio::net::UdpSocket::bind(bind).await {
        Ok(s) if s.connect(target).await.is_ok() => s,
        _ => {
            run.error("cannot open a UDP socket");
            return Vec::new();
        }
    };
    let request = vec![0xa5_u8; size];
    let mut reply = vec![0u8; 65_536];
    let mut latencies = Vec::new();
    while !run.stop.load(Relaxed) {
        let start = Instant::now();
        let counted = run.counting.load(Relaxed);
        let round = async {
            socket.send(&request).await?;
            socket.recv(&mut reply).await
        };
        match tokio::time::timeout(Duration::from_millis(200), round).await {
            Ok(Ok(n)) if n == size => {
                if counted && !run.stop.load(Relaxed) {
                    run.units.fetch_add(1, Relaxed);
                    let us = u32::try_from(start.elapsed().as_micros()).unwrap_or(u32::MAX);
                    latencies.push(us);
                }
            }
            Ok(Ok(n)) => run.error(format!("a reply of {n} bytes, not {size}")),
            Ok(Err(e)) => {
                run.error(e);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(_) if counted => run.error("a datagram not back within 200 ms"),
            Err(_) => {}
        }
    }
    latencies
}

/// One UDP session that is answered once, then stays silent until the
/// hold is released.
async fn udp_hold_worker(target: SocketAddr, size: usize, run: Arc<Run>) -> Vec<u32> {
    let answered = async {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
        socket.connect(target).await?;
        let mut reply = vec![0u8; 65_536];
        for _ in 0..10 {
            socket.send(&vec![0x5a_u8; size]).await?;
            let wait = tokio::time::timeout(Duration::from_millis(500), socket.recv(&mut reply));
            if let Ok(Ok(_)) = wait.await {
                return Ok(socket);
            }
        }
        Err(io::Error::new(io::ErrorKind::TimedOut, "no reply"))
    };
    match answered.await {
        Ok(socket) => {
            run.units.fetch_add(1, Relaxed);
            run.released.cancelled().await;
            drop(socket);
        }
        Err(e) => run.error(e),
    }
    Vec::new()
}

async fn hold(args: Args, run: Arc<Run>, tasks: Vec<tokio::task::JoinHandle<Vec<u32>>>) {
    let start = Instant::now();
    let deadline = start + Duration::from_secs(120);
    while run.units.load(Relaxed) + run.errors.load(Relaxed) < args.workers as u64
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "held={} errors={} open_s={:.2}",
        run.units.load(Relaxed),
        run.errors.load(Relaxed),
        start.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs_f64(args.seconds)).await;
    run.stop.store(true, Relaxed);
    run.released.cancel();
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
}

/// One connection (from `source` when given), a TLS handshake on it with
/// `tls`, one echo exchange, then idle until released.
async fn hold_worker(
    target: SocketAddr,
    source: Option<IpAddr>,
    size: usize,
    tls: Option<Arc<TlsTarget>>,
    run: Arc<Run>,
) -> Vec<u32> {
    // The permit is taken before the timeout starts: the last of 100,000
    // connections may wait long for its turn.
    let Ok(opening) = run.opening.acquire().await else {
        return Vec::new();
    };
    let open = async {
        let stream = match source {
            Some(ip) => {
                let socket = match ip {
                    IpAddr::V4(_) => TcpSocket::new_v4()?,
                    IpAddr::V6(_) => TcpSocket::new_v6()?,
                };
                socket.bind(SocketAddr::new(ip, 0))?;
                socket.connect(target).await?
            }
            None => TcpStream::connect(target).await?,
        };
        let mut stream = match &tls {
            Some(tls) => Held::Tls(Box::new(tls.connect(stream).await?)),
            None => Held::Plain(stream),
        };
        if size > 0 {
            let mut reply = vec![0u8; size];
            stream.write_all(&vec![0x5a_u8; size]).await?;
            stream.read_exact(&mut reply).await?;
        }
        std::io::Result::Ok(stream)
    };
    let opened = tokio::time::timeout(Duration::from_secs(30), open).await;
    drop(opening);
    match opened {
        Ok(Ok(stream)) => {
            run.units.fetch_add(1, Relaxed);
            run.released.cancelled().await;
            drop(stream);
        }
        Ok(Err(e)) => {
            if run.errors.fetch_add(1, Relaxed) == 0 {
                eprintln!("first error: {e}");
            }
        }
        Err(_) => {
            if run.errors.fetch_add(1, Relaxed) == 0 {
                eprintln!("first error: timed out");
            }
        }
    }
    Vec::new()
}

/// A connection as the bulk and hold modes use it: plain or TLS.
enum Held {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Held {
    async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Held::Plain(s) => s.write_all(buf).await,
            Held::Tls(s) => {
                s.write_all(buf).await?;
                s.flush().await
            }
        }
    }

    async fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        match self {
            Held::Plain(s) => s.read_exact(buf).await.map(drop),
            Held::Tls(s) => s.read_exact(buf).await.map(drop),
        }
    }
}

/// One connection streaming to the echo backend (over TLS with `tls`) and
/// reading it back.
async fn bulk_worker(target: SocketAddr, tls: Option<Arc<TlsTarget>>, run: Arc<Run>) -> Vec<u32> {
    let stream = match TcpStream::connect(target).await {
        Ok(s) => s,
        Err(e) => {
            run.error(e);
            return Vec::new();
        }
    };
    match tls {
        None => echo_stream(stream, run).await,
        Some(tls) => match tls.connect(stream).await {
            Ok(s) => echo_stream(s, run).await,
            Err(e) => run.error(e),
        },
    }
    Vec::new()
}

/// Writes 64 KiB chunks until told to stop while counting what comes back.
async fn echo_stream<S>(stream: S, run: Arc<Run>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let writer_run = run.clone();
    let sender = tokio::spawn(async move {
        let chunk = vec![0x5a_u8; 64 * 1024];
        while !writer_run.stop.load(Relaxed) {
            if writer.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = writer.shutdown().await;
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                if run.counting.load(Relaxed) && !run.stop.load(Relaxed) {
                    run.units.fetch_add(n as u64, Relaxed);
                }
            }
            Err(e) => {
                // The end of the run closes mid-stream: not an error then.
                if !run.stop.load(Relaxed) {
                    run.error(e);
                }
                break;
            }
        }
    }
    let _ = sender.await;
}

/// This process's user + system CPU time so far.
fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid pointer cannot fail.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// What every TLS worker shares: the client configuration (no session
/// resumption unless `--resume`, so every handshake is a full one), the
/// name it sends and the reply it expects.
struct TlsTarget {
    config: Arc<ClientConfig>,
    /// `--resume`: each worker gets a copy of `config` with a cache of its
    /// own, so its sessions are its own and none waits on another's ticket.
    resume: bool,
    sni: ServerName<'static>,
    expect: Option<Vec<u8>>,
}

impl TlsTarget {
    fn new(args: &Args) -> Result<Self, String> {
        let path = args.pin.as_ref().ok_or("tls mode needs --pin CERT.pem")?;
        let pinned = CertificateDer::from_pem_file(path)
            .map_err(|e| format!("cannot read a certificate from {}: {e}", path.display()))?
            .into_owned();
        let mut provider = rustls::crypto::aws_lc_rs::default_provider();
        match args.kx.as_str() {
            "default" => {}
            "x25519" => provider.kx_groups = vec![rustls::crypto::aws_lc_rs::kx_group::X25519],
            other => return Err(format!("--kx {other:?}: expected default or x25519")),
        }
        let provider = Arc::new(provider);
        let verifier = Arc::new(Pinned {
            cert: pinned,
            algorithms: provider.signature_verification_algorithms,
        });
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        config.resumption = rustls::client::Resumption::disabled();
        let sni = ServerName::try_from(args.sni.clone())
            .map_err(|e| format!("--sni {:?}: {e}", args.sni))?;
        Ok(Self {
            config: Arc::new(config),
            resume: args.resume,
            sni,
            expect: args.expect.as_ref().map(|e| e.as_bytes().to_vec()),
        })
    }

    /// The configuration one worker uses for all its connections.
    fn worker_config(&self) -> Arc<ClientConfig> {
        if !self.resume {
            return self.config.clone();
        }
        let mut config = (*self.config).clone();
        config.resumption = rustls::client::Resumption::in_memory_sessions(8);
        Arc::new(config)
    }

    /// A TLS client connection over `stream` (bulk and hold modes).
    async fn connect(
        &self,
        stream: TcpStream,
    ) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        stream.set_nodelay(true)?;
        tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(self.sni.clone(), stream)
            .await
    }
}

/// Accepts exactly one certificate, byte for byte (cheaper than a chain
/// walk, so the client's CPU stays low, and proves which backend answered),
/// and checks the handshake signatures for real: the server must hold the
/// certificate's key, as with any TLS client.
#[derive(Debug)]
struct Pinned {
    /// The certificate the server must present.
    cert: CertificateDer<'static>,
    /// The provider's signature algorithms, for the handshake signatures.
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.cert.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General("not the pinned certificate".into()))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A full TLS handshake per connection until told to stop; returns the
/// measured latencies (connect to the server's close) in microseconds.
async fn tls_worker(target: SocketAddr, tls: Arc<TlsTarget>, run: Arc<Run>) -> Vec<u32> {
    let mut latencies = Vec::new();
    let config = tls.worker_config();
    while !run.stop.load(Relaxed) {
        let start = Instant::now();
        let counted = run.counting.load(Relaxed);
        let once = tls_once(target, &tls, &config);
        match tokio::time::timeout(Duration::from_secs(5), once).await {
            Ok(Ok(done)) if counted && !run.stop.load(Relaxed) => {
                run.units.fetch_add(1, Relaxed);
                run.resumed.fetch_add(u64::from(done.resumed), Relaxed);
                run.tls13.fetch_add(u64::from(done.tls13), Relaxed);
                let us = u32::try_from(start.elapsed().as_micros()).unwrap_or(u32::MAX);
                latencies.push(us);
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                run.error(e);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(_) => run.error("timed out after 5s"),
        }
    }
    latencies
}

/// What one handshake was.
struct Handshake {
    resumed: bool,
    tls13: bool,
}

/// Connects, completes the handshake, reads the server's reply until it
/// closes, and checks the reply.
async fn tls_once(
    target: SocketAddr,
    tls: &TlsTarget,
    config: &Arc<ClientConfig>,
) -> io::Result<Handshake> {
    let mut stream = TcpStream::connect(target).await?;
    stream.set_nodelay(true)?;
    let mut conn =
        ClientConnection::new(config.clone(), tls.sni.clone()).map_err(io::Error::other)?;
    let mut wire = vec![0u8; 16 * 1024];
    let mut out = Vec::new();
    let mut reply = Vec::new();
    let mut plain = [0u8; 256];
    loop {
        while conn.wants_write() {
            out.clear();
            conn.write_tls(&mut out)?;
            stream.write_all(&out).await?;
        }
        if !conn.is_handshaking() {
            // Whatever the server sent after its Finished, up to its close.
            loop {
                let done = Handshake {
                    resumed: conn.handshake_kind() == Some(HandshakeKind::Resumed),
                    tls13: conn.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3),
                };
                match conn.reader().read(&mut plain) {
                    Ok(0) => return check_reply(&reply, tls).map(|()| done),
                    Ok(n) => reply.extend_from_slice(&plain[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    // Closed without close_notify: the reply still counts.
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                        return check_reply(&reply, tls).map(|()| done);
                    }
                    Err(e) => return Err(e),
                }
                if reply.len() > 4096 {
                    return Err(io::Error::other("reply longer than 4 KiB"));
                }
            }
        }
        let n = stream.read(&mut wire).await?;
        if n == 0 && conn.is_handshaking() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed during the handshake",
            ));
        }
        let mut received = &wire[..n];
        loop {
            conn.read_tls(&mut received)?;
            conn.process_new_packets().map_err(io::Error::other)?;
            if received.is_empty() {
                break;
            }
        }
    }
}

fn check_reply(reply: &[u8], tls: &TlsTarget) -> io::Result<()> {
    match &tls.expect {
        Some(expect) if reply != expect.as_slice() => Err(io::Error::other(format!(
            "reply {:?}, expected {:?}",
            String::from_utf8_lossy(reply),
            String::from_utf8_lossy(expect)
        ))),
        _ => Ok(()),
    }
}
