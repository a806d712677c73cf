//! What tcplb costs on the data path: the same workloads straight to an
//! in-process echo backend and through an in-process balancer.
//!
//! - `bulk`: one connection moves 256 MiB to the echo backend and reads it
//!   all back (so 256 MiB cross the balancer each way).
//! - `connections`: short connections (connect, send 64 bytes, read 64
//!   back, close) from 8 concurrent clients; one element is one connection.
//!
//! After the groups it prints through/direct ratios computed from its own
//! timed runs (criterion does not print ratios), and how many heap
//! allocations tcplb makes per short connection: the global allocator here
//! counts every allocation of the process, so the figure is (allocations
//! through tcplb - allocations direct) / connections, the client's and the
//! echo backend's own allocations being the same both ways. Loopback only;
//! the whole run takes about a minute.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use tcplb::config::{Config, ServiceConfig, parse_backend};
use tcplb::runtime::Balancer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

const BULK_BYTES: u64 = 256 << 20;
const CHUNK: usize = 64 * 1024;
const MESSAGE: usize = 64;
const CLIENTS: u64 = 8;

/// The system allocator, counting allocations (and reallocations, which
/// may move) and the bytes asked for.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static ALLOCATED_BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is passed on to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Relaxed);
        ALLOCATED_BYTES.fetch_add(layout.size() as u64, Relaxed);
        // SAFETY: the caller's contract is System's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is System's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Relaxed);
        ALLOCATED_BYTES.fetch_add(new_size as u64, Relaxed);
        // SAFETY: the caller's contract is System's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations and bytes per connection over `count` short connections
/// from CLIENTS concurrent clients.
fn allocations_per_connection(client: &Runtime, addr: SocketAddr, count: u64) -> (f64, f64) {
    let (calls, bytes) = (ALLOCATIONS.load(Relaxed), ALLOCATED_BYTES.load(Relaxed));
    client.block_on(async {
        let tasks: Vec<_> = (0..CLIENTS)
            .map(|_| tokio::spawn(short_connections(addr, count / CLIENTS)))
            .collect();
        for task in tasks {
            task.await.expect("client");
        }
    });
    let done = (count / CLIENTS * CLIENTS) as f64;
    (
        (ALLOCATIONS.load(Relaxed) - calls) as f64 / done,
        (ALLOCATED_BYTES.load(Relaxed) - bytes) as f64 / done,
    )
}

/// Runs the echo backend and the balancer on their own runtime, so the
/// client load generator does not share their worker threads.
struct Servers {
    direct: SocketAddr,
    through: SocketAddr,
    _runtime: Runtime,
}

fn start_servers() -> Servers {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("server runtime");
    let (direct, through) = runtime.block_on(async {
        let echo = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
        let direct = echo.local_addr().expect("echo addr");
        tokio::spawn(tcplb::demo::serve_echo(echo));
        let backend = parse_backend(&direct.to_string()).expect("backend");
        let listen: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let balancer = Balancer::bind(Config::single(ServiceConfig::new(listen, vec![backend])))
            .expect("bind");
        let through = balancer.local_addrs()[0];
        tokio::spawn(balancer.run());
        (direct, through)
    });
    Servers {
        direct,
        through,
        _runtime: runtime,
    }
}

/// One connection: write BULK_BYTES, read them all back.
async fn bulk(addr: SocketAddr) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let (mut reader, mut writer) = stream.into_split();
    let send = tokio::spawn(async move {
        let chunk = vec![0x5a_u8; CHUNK];
        let mut left = BULK_BYTES;
        while left > 0 {
            let n = left.min(CHUNK as u64) as usize;
            writer.write_all(&chunk[..n]).await.expect("write");
            left -= n as u64;
        }
        writer.shutdown().await.expect("shutdown");
    });
    let mut buf = vec![0u8; CHUNK];
    let mut got = 0u64;
    loop {
        let n = reader.read(&mut buf).await.expect("read");
        if n == 0 {
            break;
        }
        got += n as u64;
    }
    send.await.expect("sender");
    assert_eq!(got, BULK_BYTES, "echo lost bytes");
}

/// `count` short connections one after another.
async fn short_connections(addr: SocketAddr, count: u64) {
    let request = [0xa5_u8; MESSAGE];
    let mut reply = [0u8; MESSAGE];
    for _ in 0..count {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        stream.write_all(&request).await.expect("write");
        stream.read_exact(&mut reply).await.expect("read");
        assert_eq!(reply, request);
    }
}

/// Units done and time spent per benchmark, for the ratios.
static TOTALS: Mutex<Vec<(String, u64, Duration)>> = Mutex::new(Vec::new());

fn record(name: &str, units: u64, elapsed: Duration) {
    let mut totals = TOTALS.lock().unwrap_or_else(|e| e.into_inner());
    match totals.iter_mut().find(|(n, _, _)| n == name) {
        Some(entry) => {
            entry.1 += units;
            entry.2 += elapsed;
        }
        None => totals.push((name.to_string(), units, elapsed)),
    }
}

fn rate(name: &str) -> Option<f64> {
    let totals = TOTALS.lock().unwrap_or_else(|e| e.into_inner());
    totals
        .iter()
        .find(|(n, _, _)| n == name)
        .map(|(_, units, t)| *units as f64 / t.as_secs_f64())
}

fn benches(c: &mut Criterion, servers: &Servers, client: &Runtime) {
    let targets = [("direct", servers.direct), ("tcplb", servers.through)];

    let mut group = c.benchmark_group("bulk");
    group
        .throughput(Throughput::Bytes(BULK_BYTES))
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(6));
    for (name, addr) in targets {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    client.block_on(bulk(addr));
                }
                let elapsed = start.elapsed();
                record(&format!("bulk/{name}"), iters * BULK_BYTES, elapsed);
                elapsed
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("connections");
    group
        .throughput(Throughput::Elements(1))
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for (name, addr) in targets {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                client.block_on(async {
                    let mut tasks = Vec::new();
                    for i in 0..CLIENTS {
                        let count = iters / CLIENTS + u64::from(i < iters % CLIENTS);
                        tasks.push(tokio::spawn(short_connections(addr, count)));
                    }
                    for task in tasks {
                        task.await.expect("client");
                    }
                });
                let elapsed = start.elapsed();
                record(&format!("connections/{name}"), iters, elapsed);
                elapsed
            })
        });
    }
    group.finish();
}

fn main() {
    let servers = start_servers();
    let client = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    let mut criterion = Criterion::default().configure_from_args();
    benches(&mut criterion, &servers, &client);
    criterion.final_summary();

    println!("\nthrough tcplb / direct (from all timed runs, warm-up included):");
    if let (Some(d), Some(t)) = (rate("bulk/direct"), rate("bulk/tcplb")) {
        let gbit = |bytes_per_s: f64| bytes_per_s * 8.0 / 1e9;
        println!(
            "  bulk, 1 connection:   direct {:.2} Gbit/s, tcplb {:.2} Gbit/s, ratio {:.2}",
            gbit(d),
            gbit(t),
            t / d
        );
    }
    if let (Some(d), Some(t)) = (rate("connections/direct"), rate("connections/tcplb")) {
        println!(
            "  short connections:    direct {d:.0}/s, tcplb {t:.0}/s, ratio {:.2}",
            t / d
        );
    }

    // Warmed up by the groups above: thread-local buffers and pools exist.
    let (direct, direct_bytes) = allocations_per_connection(&client, servers.direct, 4000);
    let (through, through_bytes) = allocations_per_connection(&client, servers.through, 4000);
    println!(
        "  heap allocations per short connection in tcplb: {:.1} ({:.0} bytes) \
         (process-wide {through:.1} through, {direct:.1} direct)",
        through - direct,
        through_bytes - direct_bytes
    );
}
