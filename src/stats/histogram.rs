//! Histograms: how long connecting, waiting and whole connections take, and
//! how many bytes a connection moves, as distributions rather than totals.
//!
//! They exist because a counter cannot say "connecting to this backend
//! usually takes 200 µs but one in a hundred takes 1 s". The data path
//! records into them and `/metrics` renders them in Prometheus' histogram
//! form (`_bucket{le}`, `_sum`, `_count`); `/status` estimates quantiles
//! from them.
//!
//! Recording is two relaxed atomic additions (the value's bucket and the
//! sum): no lock, no allocation. Buckets are stored per bucket, not
//! cumulatively, and the count is their total, so a scrape that races
//! recordings still sees `+Inf` equal to `_count` and cumulative counts
//! that never decrease (only `_sum` may lead or lag by the values in
//! flight).
//!
//! Two scales, fixed (Prometheus wants the same buckets in every scrape):
//! - [`Micros`], for durations: 100 µs, 250 µs, 500 µs, 1 ms, 2.5 ms, 5 ms,
//!   10 ms, 25 ms, 50 ms, 100 ms, 250 ms, 500 ms, 1 s, 2.5 s, 5 s, 10 s,
//!   30 s, 60 s (a loopback connect to a few seconds of connect timeout,
//!   up to a minute of queueing or a short connection's life); recorded in
//!   microseconds, rendered in seconds.
//! - [`Bytes`], for sizes: powers of 4 from 64 B to 1 GiB.

use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// The most finite buckets a scale may have (the time scale's 18).
pub const MAX_BUCKETS: usize = 18;

/// A histogram's bucket bounds and unit.
pub trait Scale: 'static {
    /// The finite buckets' upper bounds (inclusive, Prometheus' `le`),
    /// ascending, in the recorded unit; at most [`MAX_BUCKETS`].
    const BOUNDS: &'static [u64];
    /// Recorded units per rendered unit: 1e6 for microseconds rendered as
    /// seconds, 1 for bytes.
    const PER_UNIT: f64;
}

/// Durations, recorded in microseconds and rendered in seconds.
pub struct Micros;

impl Scale for Micros {
    const BOUNDS: &'static [u64] = &[
        100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
        1_000_000, 2_500_000, 5_000_000, 10_000_000, 30_000_000, 60_000_000,
    ];
    const PER_UNIT: f64 = 1e6;
}

/// Sizes in bytes: powers of 4 from 64 B to 1 GiB.
pub struct Bytes;

impl Scale for Bytes {
    const BOUNDS: &'static [u64] = &[
        1 << 6,
        1 << 8,
        1 << 10,
        1 << 12,
        1 << 14,
        1 << 16,
        1 << 18,
        1 << 20,
        1 << 22,
        1 << 24,
        1 << 26,
        1 << 28,
        1 << 30,
    ];
    const PER_UNIT: f64 = 1.0;
}

/// A histogram of durations (see [`Micros`]).
pub type TimeHistogram = Histogram<Micros>;
/// A histogram of sizes (see [`Bytes`]).
pub type SizeHistogram = Histogram<Bytes>;

/// Counts of values per bucket of the scale `S`, and their sum.
pub struct Histogram<S: Scale> {
    /// Values per bucket, not cumulative: index i counts the values above
    /// bound i-1 and at most bound i; index `S::BOUNDS.len()` those above
    /// every bound. Entries past that stay unused.
    buckets: [AtomicU64; MAX_BUCKETS + 1],
    /// The sum of the values recorded, in the recorded unit.
    sum: AtomicU64,
    /// The scale, a type only.
    scale: PhantomData<fn() -> S>,
}

impl<S: Scale> Default for Histogram<S> {
    fn default() -> Self {
        const { assert!(S::BOUNDS.len() <= MAX_BUCKETS) };
        Histogram {
            buckets: Default::default(),
            sum: AtomicU64::new(0),
            scale: PhantomData,
        }
    }
}

impl<S: Scale> fmt::Debug for Histogram<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let snapshot = self.snapshot();
        f.debug_struct("Histogram")
            .field("count", &snapshot.count())
            .field("sum", &snapshot.sum)
            .finish()
    }
}

impl<S: Scale> Histogram<S> {
    /// Records one value, in the scale's unit.
    pub fn record_value(&self, value: u64) {
        let bucket = S::BOUNDS.partition_point(|&bound| bound < value);
        self.buckets[bucket].fetch_add(1, Relaxed);
        self.sum.fetch_add(value, Relaxed);
    }

    /// The counts now.
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            bounds: S::BOUNDS,
            per_unit: S::PER_UNIT,
            counts: self.buckets[..=S::BOUNDS.len()]
                .iter()
                .map(|b| b.load(Relaxed))
                .collect(),
            sum: self.sum.load(Relaxed),
        }
    }
}

impl Histogram<Micros> {
    /// Records one duration (saturating at about 584,000 years).
    pub fn record(&self, duration: Duration) {
        self.record_value(u64::try_from(duration.as_micros()).unwrap_or(u64::MAX));
    }
}

/// A histogram's counts at one moment, for rendering and quantiles.
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramSnapshot {
    /// The finite buckets' upper bounds, in the recorded unit.
    pub bounds: &'static [u64],
    /// Recorded units per rendered unit (see [`Scale::PER_UNIT`]).
    pub per_unit: f64,
    /// Values per bucket, not cumulative; one more than `bounds`, the last
    /// for values above every bound.
    pub counts: Vec<u64>,
    /// The sum of the values, in the recorded unit.
    pub sum: u64,
}

/// Empty, with no finite bucket: only `+Inf`, at 0.
impl Default for HistogramSnapshot {
    fn default() -> Self {
        HistogramSnapshot {
            bounds: &[],
            per_unit: 1.0,
            counts: vec![0],
            sum: 0,
        }
    }
}

impl HistogramSnapshot {
    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The sum in the rendered unit (seconds for durations).
    pub fn sum_in_units(&self) -> f64 {
        self.sum as f64 / self.per_unit
    }

    /// Each bucket's bound in the rendered unit (`None` for `+Inf`) with
    /// the count of values at most that bound: Prometheus' `_bucket`s.
    pub fn cumulative(&self) -> impl Iterator<Item = (Option<f64>, u64)> + '_ {
        let bounds = self
            .bounds
            .iter()
            .map(|&b| Some(b as f64 / self.per_unit))
            .chain(std::iter::once(None));
        bounds.zip(self.counts.iter().scan(0u64, |total, &n| {
            *total += n;
            Some(*total)
        }))
    }

    /// The `q` quantile (0 to 1) in the rendered unit, estimated as
    /// Prometheus' `histogram_quantile` does: linearly within the bucket
    /// it falls in, the first bucket starting at 0; in the `+Inf` bucket,
    /// the highest finite bound. `None` with no values.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * count as f64;
        let mut below = 0u64;
        for (i, &n) in self.counts.iter().enumerate() {
            let upto = below + n;
            if n > 0 && upto as f64 >= rank {
                let Some(&upper) = self.bounds.get(i) else {
                    break;
                };
                let lower = if i == 0 { 0 } else { self.bounds[i - 1] };
                let within = (rank - below as f64) / n as f64;
                let value = lower as f64 + (upper - lower) as f64 * within;
                return Some(value / self.per_unit);
            }
            below = upto;
        }
        self.bounds.last().map(|&b| b as f64 / self.per_unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_land_in_the_first_bucket_whose_bound_they_do_not_exceed() {
        let h = TimeHistogram::default();
        // On a bound: that bucket (le is inclusive); one above: the next.
        for us in [0, 100, 101, 250, 60_000_000, 60_000_001, u64::MAX / 2] {
            h.record_value(us);
        }
        let s = h.snapshot();
        assert_eq!(s.counts.len(), Micros::BOUNDS.len() + 1);
        assert_eq!(s.counts[0], 2, "0 and 100 µs");
        assert_eq!(s.counts[1], 2, "101 and 250 µs");
        assert_eq!(s.counts[17], 1, "60 s");
        assert_eq!(s.counts[18], 2, "above 60 s");
        assert_eq!(s.count(), 7);
    }

    #[test]
    fn durations_are_recorded_in_microseconds_and_summed_in_seconds() {
        let h = TimeHistogram::default();
        h.record(Duration::from_micros(300));
        h.record(Duration::from_millis(2));
        h.record(Duration::from_nanos(999)); // under a microsecond: 0
        let s = h.snapshot();
        assert_eq!(s.sum, 2_300);
        assert!((s.sum_in_units() - 0.0023).abs() < 1e-12);
        assert_eq!(s.counts[0], 1);
        assert_eq!(s.counts[2], 1, "300 µs: the 500 µs bucket");
        assert_eq!(s.counts[4], 1, "2 ms: the 2.5 ms bucket");
    }

    #[test]
    fn byte_buckets_are_powers_of_four_from_64_bytes_to_a_gibibyte() {
        assert_eq!(Bytes::BOUNDS.first(), Some(&64));
        assert_eq!(Bytes::BOUNDS.last(), Some(&(1 << 30)));
        assert!(Bytes::BOUNDS.windows(2).all(|w| w[1] == w[0] * 4));
        assert!(Micros::BOUNDS.windows(2).all(|w| w[0] < w[1]));
        let h = SizeHistogram::default();
        h.record_value(64);
        h.record_value(65);
        h.record_value(5 << 30);
        let s = h.snapshot();
        assert_eq!(s.counts.len(), 14);
        assert_eq!((s.counts[0], s.counts[1], s.counts[13]), (1, 1, 1));
        assert_eq!(s.sum, 64 + 65 + (5 << 30));
    }

    #[test]
    fn cumulative_counts_never_decrease_and_end_at_the_count() {
        let h = TimeHistogram::default();
        for us in [50, 700, 700, 3_000, 90_000_000] {
            h.record_value(us);
        }
        let s = h.snapshot();
        let buckets: Vec<_> = s.cumulative().collect();
        assert_eq!(buckets.len(), 19);
        assert_eq!(buckets[0], (Some(0.0001), 1));
        assert_eq!(buckets[3], (Some(0.001), 3));
        assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1));
        assert_eq!(buckets[17], (Some(60.0), 4));
        assert_eq!(buckets[18], (None, 5));
        assert_eq!(s.count(), 5);
    }

    #[test]
    fn quantiles_interpolate_within_the_bucket() {
        let h = TimeHistogram::default();
        assert_eq!(h.snapshot().quantile(0.5), None, "nothing recorded");
        // 100 values in the (1 ms, 2.5 ms] bucket.
        for _ in 0..100 {
            h.record_value(2_000);
        }
        let s = h.snapshot();
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(
            close(s.quantile(0.5).unwrap(), 0.00175),
            "halfway in the bucket"
        );
        assert!(close(s.quantile(0.99).unwrap(), 0.001 + 0.0015 * 0.99));
        assert!(close(s.quantile(1.0).unwrap(), 0.0025));
        // The first bucket starts at zero.
        let h = TimeHistogram::default();
        h.record_value(10);
        assert!(close(h.snapshot().quantile(0.5).unwrap(), 0.00005));
        // Above every bound: the highest finite bound.
        let h = TimeHistogram::default();
        h.record_value(100_000_000);
        assert_eq!(h.snapshot().quantile(0.99), Some(60.0));
        // 99 fast, 1 slow: p50 in the fast bucket, p99 at its top.
        let h = TimeHistogram::default();
        for _ in 0..99 {
            h.record_value(80);
        }
        h.record_value(900_000);
        let s = h.snapshot();
        assert!(s.quantile(0.5).unwrap() <= 0.0001);
        assert!(close(s.quantile(0.99).unwrap(), 0.0001));
        assert!(s.quantile(0.999).unwrap() > 0.5);
    }
}
