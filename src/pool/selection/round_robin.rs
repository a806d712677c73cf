//! Round robin. With equal weights, a lock-free counter over the eligible
//! backends: exact rotation in list order, also right after one leaves.
//! With weights, nginx's smooth weighted round robin (3:1 gives A A B A,
//! never bursts), precomputed once per member set so that a pick is a
//! counter increment, not a locked walk over every backend.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use super::Selector;
use crate::pool::backend::Backend;

/// Longest precomputed weighted sequence. Weights are divided by their
/// greatest common divisor first; a larger sum is scaled down to this
/// (each backend keeping at least 1), so ratios stay within 1/4096 of the
/// total and a pick that skips ineligible entries walks at most this far.
pub const MAX_PERIOD: usize = 4096;

pub struct RoundRobin {
    next: AtomicUsize,
    /// One period of the smooth weighted order, as indices into the member
    /// set; `None` when all weights are equal.
    sequence: Option<Box<[u32]>>,
}

impl RoundRobin {
    pub fn new(backends: &[Arc<Backend>]) -> Self {
        let weights: Vec<u32> = backends.iter().map(|b| b.weight()).collect();
        let weighted = weights.windows(2).any(|w| w[0] != w[1]);
        RoundRobin {
            next: AtomicUsize::new(0),
            sequence: weighted.then(|| smooth_sequence(&weights).into_boxed_slice()),
        }
    }
}

impl Selector for RoundRobin {
    fn pick(
        &self,
        backends: &[Arc<Backend>],
        eligible: &dyn Fn(usize) -> bool,
        _client: IpAddr,
    ) -> Option<usize> {
        let turn = self.next.fetch_add(1, Relaxed);
        let Some(sequence) = &self.sequence else {
            let count = (0..backends.len()).filter(|&i| eligible(i)).count();
            if count == 0 {
                return None;
            }
            return (0..backends.len())
                .filter(|&i| eligible(i))
                .nth(turn % count);
        };
        // Skipping an ineligible entry leaves the others in their order and
        // in proportion to their weights.
        let len = sequence.len();
        (0..len)
            .map(|k| sequence[(turn + k) % len] as usize)
            .find(|&i| eligible(i))
    }
}

/// One period of nginx's smooth weighted round robin: each step every
/// backend gains its weight, the highest (first on ties) is chosen and
/// loses the total. The order repeats after `sum(weights)` steps.
fn smooth_sequence(weights: &[u32]) -> Vec<u32> {
    let weights = reduce(weights);
    let total: i64 = weights.iter().map(|&w| i64::from(w)).sum();
    let mut current = vec![0i64; weights.len()];
    let mut sequence = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, &w) in weights.iter().enumerate() {
            current[i] += i64::from(w);
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        sequence.push(best as u32);
    }
    sequence
}

/// The smallest weights in the same ratios whose sum fits [`MAX_PERIOD`].
fn reduce(weights: &[u32]) -> Vec<u32> {
    let gcd = weights.iter().fold(0u32, |a, &b| gcd(a, b)).max(1);
    let reduced: Vec<u32> = weights.iter().map(|w| w / gcd).collect();
    let total: u64 = reduced.iter().map(|&w| u64::from(w)).sum();
    if total <= MAX_PERIOD as u64 {
        return reduced;
    }
    let room = MAX_PERIOD as u64;
    reduced
        .iter()
        .map(|&w| ((u64::from(w) * room / total) as u32).max(1))
        .collect()
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::testing::*;
    use super::*;

    #[test]
    fn round_robin_rotates_in_order_and_skips_ineligible() {
        let b = pool(&["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]);
        let rr = RoundRobin::new(&b);
        assert_eq!(picks(&rr, &b, 7, &|_| true), [0, 1, 2, 0, 1, 2, 0]);
        // One leaves mid-rotation: the rest alternate, no burst.
        let rest = picks(&rr, &b, 6, &|i| i != 1);
        assert!(rest.iter().all(|&i| i != 1), "{rest:?}");
        assert!(rest.windows(2).all(|w| w[0] != w[1]), "burst in {rest:?}");
        assert_eq!(rr.pick(&b, &|_| false, ANY), None);
    }

    #[test]
    fn weighted_round_robin_is_smooth() {
        let b = pool(&["127.0.0.1:1=3", "127.0.0.1:2"]);
        let rr = RoundRobin::new(&b);
        // Smooth: the weight-1 backend is interleaved, never after three in a row twice.
        assert_eq!(picks(&rr, &b, 8, &|_| true), [0, 0, 1, 0, 0, 0, 1, 0]);
        // The weight-3 backend leaves: only the other one is left to pick.
        assert_eq!(picks(&rr, &b, 3, &|i| i == 1), [1, 1, 1]);
    }

    #[test]
    fn huge_weights_are_scaled_into_a_bounded_sequence() {
        let b = weighted(&[1_000_000, 3_000_000, 7]);
        let rr = RoundRobin::new(&b);
        let sequence = rr.sequence.as_ref().unwrap();
        assert!(sequence.len() <= MAX_PERIOD, "{}", sequence.len());
        let share = |i: u32| sequence.iter().filter(|&&x| x == i).count();
        assert_eq!(share(2), 1, "a tiny weight keeps one turn");
        let ratio = share(1) as f64 / share(0) as f64;
        assert!((ratio - 3.0).abs() < 0.01, "{ratio}");
    }

    proptest! {
        /// Over whole periods, every backend gets exactly its (reduced)
        /// weight's share, and no backend waits longer than a period.
        #[test]
        fn weighted_shares_are_exact_per_period(weights in prop::collection::vec(1u32..30, 2..8)) {
            let b = weighted(&weights);
            let rr = RoundRobin::new(&b);
            let reduced = reduce(&weights);
            let period: u32 = reduced.iter().sum();
            let seen = picks(&rr, &b, 2 * period as usize, &|_| true);
            for (i, w) in reduced.iter().enumerate() {
                let count = seen.iter().filter(|&&x| x == i).count() as u32;
                prop_assert_eq!(count, 2 * w, "backend {} of {:?}", i, weights);
            }
        }
    }
}
