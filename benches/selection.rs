//! What one pick costs, per strategy, with every backend eligible and with
//! one out (the case where a pick has to skip, or redistribute, its turn).
//!
//! - `all-in/N` and `one-out/N`: pools of equal weights; `weighted` has
//!   weights 2,1,1 (the first one out in `one-out`); `heavy-out` has a
//!   weight-100 backend out beside two of weight 1, the longest skip.
//! - `contended`: the same weighted one-out picks from two threads at once
//!   (one element is one pick on each thread).
//!
//! No I/O: the selectors only, as the data path calls them per connection.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use tcplb::config::{StrategyKind, parse_backend};
use tcplb::pool::backend::Backend;
use tcplb::pool::selection::{self, Selector};

const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn pool(weights: &[u32]) -> Vec<Arc<Backend>> {
    weights
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let spec = parse_backend(&format!("10.0.0.{}:80={w}", i + 1)).unwrap();
            Arc::new(Backend::new(&spec))
        })
        .collect()
}

/// The pools: name, weights, and the index that is out (if any).
fn cases() -> Vec<(&'static str, Vec<u32>, Option<usize>)> {
    vec![
        ("all-in/3", vec![1; 3], None),
        ("one-out/3", vec![1; 3], Some(1)),
        ("all-in/16", vec![1; 16], None),
        ("one-out/16", vec![1; 16], Some(5)),
        ("weighted/all-in", vec![2, 1, 1], None),
        ("weighted/one-out", vec![2, 1, 1], Some(0)),
        ("heavy-out", vec![100, 1, 1], Some(0)),
    ]
}

fn picks(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick");
    group.throughput(Throughput::Elements(1));
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    for kind in [
        StrategyKind::RoundRobin,
        StrategyKind::LeastConn,
        StrategyKind::PowerOfTwo,
    ] {
        for (name, weights, out) in cases() {
            let backends = pool(&weights);
            let selector = selection::build(kind, &backends, None);
            let eligible = |i: usize| Some(i) != out;
            group.bench_function(BenchmarkId::new(kind.to_string(), name), |b| {
                b.iter(|| selector.pick(&backends, &eligible, CLIENT))
            });
        }
    }
    // Two threads picking from one selector: the shared counter's cost.
    let backends = pool(&[2, 1, 1]);
    let selector: Arc<dyn Selector> =
        Arc::from(selection::build(StrategyKind::RoundRobin, &backends, None));
    group.bench_function("round-robin/contended", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            std::thread::scope(|scope| {
                for _ in 0..2 {
                    scope.spawn(|| {
                        for _ in 0..iters {
                            std::hint::black_box(selector.pick(&backends, &|i| i != 0, CLIENT));
                        }
                    });
                }
            });
            start.elapsed()
        })
    });
    group.finish();
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    picks(&mut criterion);
    criterion.final_summary();
}
