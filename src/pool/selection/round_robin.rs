//! Round robin: nginx's smooth weighted round robin (3:1 gives A A B A,
//! never bursts; equal weights give the list order), precomputed once per
//! member set, and walked by one lock-free cursor.
//!
//! A pick takes the next entry of the sequence whose backend is eligible
//! and moves the cursor past it, consuming the ineligible entries it
//! skipped. So an unavailable backend's turns are not handed to whoever
//! follows it in the sequence (which would give that one its share on top
//! of its own): the picks are the sequence with the ineligible entries
//! left out, and every stretch of picks as long as the eligible part of a
//! period gives each eligible backend exactly its weight's share of the
//! eligible weights, whatever is out (drained, down, ejected, full,
//! backups while primaries serve, a slow start passing one over). That is
//! the share nginx's algorithm run over the eligible set alone would give,
//! with as smooth an order, without rebuilding anything when the eligible
//! set changes (it can change per pick: limits, backends already tried).

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use super::Selector;
use crate::pool::backend::Backend;

/// Longest precomputed weighted sequence. Weights are divided by their
/// greatest common divisor first; a larger sum is scaled down to this
/// (each backend keeping at least 1), so ratios stay within 1/4096 of the
/// total.
pub const MAX_PERIOD: usize = 4096;

/// Entries a pick reads one by one before it looks the next eligible one
/// up by backend instead (at least this many, or one per member): a few
/// suffice unless a heavy backend is out.
const WALK: usize = 8;

pub struct RoundRobin {
    /// Where in the sequence the next pick starts looking; always below
    /// its length. Moved with compare-and-swap past the entry a pick takes.
    next: AtomicUsize,
    /// The order picks follow, fixed for the member set and its weights.
    sequence: Sequence,
}

/// One period of the smooth weighted order, and where each backend is in it.
struct Sequence {
    /// Indices into the member set (`0, 1, .., n-1` when all weights are equal).
    order: Box<[u32]>,
    /// Each member's positions in `order`, ascending, member after member:
    /// member i's are `positions[starts[i]..starts[i + 1]]`. They find the
    /// next eligible entry past a long run of ineligible ones (a heavy
    /// backend out) in a few steps per member rather than one per entry.
    positions: Box<[u32]>,
    /// Where each member's positions start, and one past the last member's.
    starts: Box<[u32]>,
}

impl RoundRobin {
    pub fn new(backends: &[Arc<Backend>]) -> Self {
        let weights: Vec<u32> = backends.iter().map(|b| b.weight()).collect();
        RoundRobin {
            next: AtomicUsize::new(0),
            sequence: Sequence::new(smooth_sequence(&weights), backends.len()),
        }
    }
}

impl Selector for RoundRobin {
    fn pick(
        &self,
        _backends: &[Arc<Backend>],
        eligible: &dyn Fn(usize) -> bool,
        _client: IpAddr,
    ) -> Option<usize> {
        let len = self.sequence.order.len();
        let mut at = self.next.load(Relaxed);
        loop {
            let taken = self.sequence.next_eligible(at, eligible)?;
            // Another pick may have moved the cursor meanwhile: then look
            // again from where it left it, so every entry is consumed once.
            match self
                .next
                .compare_exchange_weak(at, (taken + 1) % len, Relaxed, Relaxed)
            {
                Ok(_) => return Some(self.sequence.order[taken] as usize),
                Err(now) => at = now,
            }
        }
    }
}

impl Sequence {
    /// Indexes `order`, a sequence over `members` members.
    fn new(order: Vec<u32>, members: usize) -> Sequence {
        let mut starts = vec![0u32; members + 1];
        for &m in &order {
            starts[m as usize + 1] += 1;
        }
        for i in 0..members {
            starts[i + 1] += starts[i];
        }
        let mut filled = starts.clone();
        let mut positions = vec![0u32; order.len()];
        for (position, &m) in order.iter().enumerate() {
            positions[filled[m as usize] as usize] = position as u32;
            filled[m as usize] += 1;
        }
        Sequence {
            order: order.into_boxed_slice(),
            positions: positions.into_boxed_slice(),
            starts: starts.into_boxed_slice(),
        }
    }

    /// The position of the first entry at or after `at` (cyclically) whose
    /// member is eligible; `None` when no member is.
    fn next_eligible(&self, at: usize, eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
        let len = self.order.len();
        let members = self.starts.len() - 1;
        let near = len.min(WALK.max(members));
        if let Some(k) = (0..near).find(|&k| eligible(self.order[(at + k) % len] as usize)) {
            return Some((at + k) % len);
        }
        // Far off, or none: the nearest position of each eligible member.
        (0..members)
            .filter(|&m| eligible(m))
            .filter_map(|m| {
                let own = &self.positions[self.starts[m] as usize..self.starts[m + 1] as usize];
                let after = own.partition_point(|&p| (p as usize) < at);
                let p = *own.get(after).or(own.first())? as usize;
                Some(((p + len - at) % len, p))
            })
            .min()
            .map(|(_, p)| p)
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
        let sequence = &rr.sequence.order;
        assert!(sequence.len() <= MAX_PERIOD, "{}", sequence.len());
        let share = |i: u32| sequence.iter().filter(|&&x| x == i).count();
        assert_eq!(share(2), 1, "a tiny weight keeps one turn");
        let ratio = share(1) as f64 / share(0) as f64;
        assert!((ratio - 3.0).abs() < 0.01, "{ratio}");
    }

    /// How many of `picks` went to each of `n` backends.
    fn counts(picks: &[usize], n: usize) -> Vec<usize> {
        (0..n)
            .map(|i| picks.iter().filter(|&&p| p == i).count())
            .collect()
    }

    /// The pools: with A=2,B,C and A out, B and C split evenly
    /// (not B 30 / C 10); with A1 (out), B4, C1, D2, C gets one pick in
    /// seven, not two.
    #[test]
    fn an_ineligible_backends_turns_are_not_handed_to_its_neighbour() {
        let b = weighted(&[2, 1, 1]);
        let rr = RoundRobin::new(&b);
        assert_eq!(counts(&picks(&rr, &b, 40, &|_| true), 3), [20, 10, 10]);
        assert_eq!(counts(&picks(&rr, &b, 40, &|i| i != 0), 3), [0, 20, 20]);
        let b = weighted(&[1, 4, 1, 2]);
        let rr = RoundRobin::new(&b);
        let seen = picks(&rr, &b, 70, &|i| i != 0);
        assert_eq!(counts(&seen, 4), [0, 40, 10, 20]);
        // Still smooth: never more than two of B's in a row.
        assert!(seen.windows(3).all(|w| w != [1, 1, 1]), "{seen:?}");
    }

    /// Picks from several threads at once take each entry once: over whole
    /// periods the totals are exact.
    #[test]
    fn concurrent_picks_keep_the_shares_exact() {
        let b = weighted(&[3, 1, 2, 2]);
        let rr = RoundRobin::new(&b);
        let eligible = |i: usize| i != 2;
        // The eligible part of a period: 3 + 1 + 2 = 6 picks.
        let per_thread = 6 * 500;
        let seen: Vec<usize> = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..3)
                .map(|_| scope.spawn(|| picks(&rr, &b, per_thread, &eligible)))
                .collect();
            threads
                .into_iter()
                .flat_map(|t| t.join().unwrap())
                .collect()
        });
        assert_eq!(counts(&seen, 4), [4500, 1500, 0, 3000]);
    }

    proptest! {
        /// For any weights and any eligible subset, whatever came before:
        /// every stretch of picks as long as the eligible part of one
        /// period gives each eligible backend its weight's share of the
        /// eligible weights, within one pick.
        #[test]
        fn eligible_backends_keep_their_weights_proportions_whatever_is_out(
            weights in prop::collection::vec(1u32..30, 1..10),
            mask in any::<u16>(),
            before_mask in any::<u16>(),
            before in 0usize..100,
        ) {
            let n = weights.len();
            let eligible = |i: usize| mask & (1 << i) != 0;
            prop_assume!((0..n).any(eligible));
            let b = weighted(&weights);
            let rr = RoundRobin::new(&b);
            // Some picks with another subset out, to start anywhere.
            for _ in 0..before {
                rr.pick(&b, &|i| before_mask & (1 << i) != 0, ANY);
            }
            let gcd = weights.iter().fold(0, |a, &w| gcd(a, w));
            let eligible_weight: u32 = (0..n).filter(|&i| eligible(i)).map(|i| weights[i]).sum();
            let period = (eligible_weight / gcd) as usize;
            let seen = picks(&rr, &b, 3 * period, &eligible);
            for window in seen.windows(period) {
                for (i, count) in counts(window, n).into_iter().enumerate() {
                    let share = if eligible(i) {
                        period as f64 * f64::from(weights[i]) / f64::from(eligible_weight)
                    } else {
                        0.0
                    };
                    prop_assert!(
                        (count as f64 - share).abs() <= 1.0,
                        "backend {} got {} of {}, its share is {:.2} ({:?}, mask {:b})",
                        i, count, period, share, weights, mask
                    );
                }
            }
        }

        /// The lookup by member finds the entry a walk one by one would.
        #[test]
        fn the_next_eligible_entry_is_the_first_one_a_walk_meets(
            weights in prop::collection::vec(1u32..200, 1..12),
            mask in any::<u16>(),
            at in any::<usize>(),
        ) {
            let sequence = Sequence::new(smooth_sequence(&weights), weights.len());
            let order = &sequence.order;
            let at = at % order.len();
            let eligible = |i: usize| mask & (1 << i) != 0;
            let walked = (0..order.len())
                .map(|k| (at + k) % order.len())
                .find(|&p| eligible(order[p] as usize));
            prop_assert_eq!(sequence.next_eligible(at, &eligible), walked);
        }

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
