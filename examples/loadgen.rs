//! A small TCP load generator for an echo backend, direct or through a
//! proxy: what iperf3 and wrk do not measure.
//!
//! - `conn`: each of N workers opens a new TCP connection, sends a small
//!   request, reads the same number of bytes back and closes, in a loop;
//!   reports connections per second and p50/p99 connection latency.
//! - `bulk`: N connections each stream bytes to the echo backend while
//!   reading them back; reports the echoed (received) rate in Gbit/s.
//! - `hold`: opens N connections, echoes `--size` bytes on each (0: none),
//!   prints `held=N` once all are open, holds them idle for `--seconds`,
//!   then closes them: for measuring memory per idle connection.
//!
//! Every run is bounded: a warm-up, then `--seconds` of measurement, then
//! it stops. Build: `cargo build --release --example loadgen`.
//! Example: `loadgen conn 127.0.0.1:9000 --workers 64 --seconds 5`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Mode {
    Conn,
    Bulk,
    Hold,
}

#[derive(Parser, Debug)]
#[command(about = "TCP load generator for an echo backend")]
struct Args {
    mode: Mode,
    target: SocketAddr,
    /// Concurrent workers (conn) or connections (bulk).
    #[arg(long, default_value_t = 32)]
    workers: usize,
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
}

/// Shared between workers: counting starts after the warm-up and
/// everything stops at the end.
struct Run {
    counting: AtomicBool,
    stop: AtomicBool,
    units: AtomicU64,
    errors: AtomicU64,
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
        errors: AtomicU64::new(0),
    });
    let mut tasks = Vec::new();
    for _ in 0..args.workers {
        let run = run.clone();
        let (target, size) = (args.target, args.size);
        tasks.push(match args.mode {
            Mode::Conn => tokio::spawn(conn_worker(target, size, run)),
            Mode::Bulk => tokio::spawn(bulk_worker(target, run)),
            Mode::Hold => tokio::spawn(hold_worker(target, size, run)),
        });
    }
    if let Mode::Hold = args.mode {
        return hold(args, run, tasks).await;
    }
    tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;
    run.counting.store(true, Relaxed);
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(args.seconds)).await;
    let units = run.units.load(Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    run.stop.store(true, Relaxed);
    let mut latencies = Vec::new();
    for task in tasks {
        // A worker stuck on a dead peer must not hold the report up.
        if let Ok(Ok(mut l)) = tokio::time::timeout(Duration::from_secs(5), task).await {
            latencies.append(&mut l);
        }
    }
    let errors = run.errors.load(Relaxed);
    match args.mode {
        Mode::Conn => {
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
            println!(
                "conn_per_s={:.0} p50_us={} p99_us={} errors={errors}",
                units as f64 / elapsed,
                pct(0.50),
                pct(0.99)
            );
        }
        Mode::Bulk => println!(
            "gbit_per_s={:.3} errors={errors}",
            units as f64 * 8.0 / elapsed / 1e9
        ),
        Mode::Hold => {}
    }
}

/// New connection per request until told to stop; returns the measured
/// latencies in microseconds.
async fn conn_worker(target: SocketAddr, size: usize, run: Arc<Run>) -> Vec<u32> {
    let request = vec![0xa5_u8; size];
    let mut reply = vec![0u8; size];
    let mut latencies = Vec::new();
    while !run.stop.load(Relaxed) {
        let start = Instant::now();
        let ok = async {
            let mut stream = TcpStream::connect(target).await?;
            stream.set_nodelay(true)?;
            stream.write_all(&request).await?;
            stream.read_exact(&mut reply).await?;
            std::io::Result::Ok(())
        };
        let counted = run.counting.load(Relaxed);
        match tokio::time::timeout(Duration::from_secs(5), ok).await {
            Ok(Ok(())) if counted && !run.stop.load(Relaxed) => {
                run.units.fetch_add(1, Relaxed);
                let us = u32::try_from(start.elapsed().as_micros()).unwrap_or(u32::MAX);
                latencies.push(us);
            }
            Ok(Ok(())) => {}
            _ => {
                run.errors.fetch_add(1, Relaxed);
                // Back off a little so a refused target is not hammered.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    latencies
}

async fn hold(args: Args, run: Arc<Run>, tasks: Vec<tokio::task::JoinHandle<Vec<u32>>>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while run.units.load(Relaxed) + run.errors.load(Relaxed) < args.workers as u64
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "held={} errors={}",
        run.units.load(Relaxed),
        run.errors.load(Relaxed)
    );
    tokio::time::sleep(Duration::from_secs_f64(args.seconds)).await;
    run.stop.store(true, Relaxed);
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
}

/// One connection, one echo exchange, then idle until told to stop.
async fn hold_worker(target: SocketAddr, size: usize, run: Arc<Run>) -> Vec<u32> {
    let open = async {
        let mut stream = TcpStream::connect(target).await?;
        if size > 0 {
            let mut reply = vec![0u8; size];
            stream.write_all(&vec![0x5a_u8; size]).await?;
            stream.read_exact(&mut reply).await?;
        }
        std::io::Result::Ok(stream)
    };
    match tokio::time::timeout(Duration::from_secs(30), open).await {
        Ok(Ok(stream)) => {
            run.units.fetch_add(1, Relaxed);
            while !run.stop.load(Relaxed) {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
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

/// One connection streaming to the echo backend and reading it back.
async fn bulk_worker(target: SocketAddr, run: Arc<Run>) -> Vec<u32> {
    let Ok(stream) = TcpStream::connect(target).await else {
        run.errors.fetch_add(1, Relaxed);
        return Vec::new();
    };
    let (mut reader, mut writer) = stream.into_split();
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
            Err(_) => {
                run.errors.fetch_add(1, Relaxed);
                break;
            }
        }
    }
    let _ = sender.await;
    Vec::new()
}
