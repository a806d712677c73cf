//! Power of two random choices: sample two eligible backends, take the less
//! loaded. Near least-connections quality without reading every backend's
//! load, and no herd: concurrent picks rarely agree on one backend.

use std::net::IpAddr;
use std::sync::Arc;

use super::{Selector, less_loaded, random_below};
use crate::pool::backend::Backend;

pub struct PowerOfTwo;

impl Selector for PowerOfTwo {
    fn pick(
        &self,
        backends: &[Arc<Backend>],
        eligible: &dyn Fn(usize) -> bool,
        _client: IpAddr,
    ) -> Option<usize> {
        let candidates = (0..backends.len()).filter(|&i| eligible(i)).count();
        let nth = |k: usize| (0..backends.len()).filter(|&i| eligible(i)).nth(k);
        match candidates {
            0 => None,
            1 => nth(0),
            n => {
                let first = random_below(n);
                let second = (first + 1 + random_below(n - 1)) % n;
                let (a, b) = (nth(first)?, nth(second)?);
                Some(if less_loaded(&backends[b], &backends[a]) {
                    b
                } else {
                    a
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::testing::*;
    use super::*;

    #[test]
    fn p2c_never_picks_the_most_loaded_of_two() {
        let b = pool(&["127.0.0.1:1", "127.0.0.1:2"]);
        let _busy = b[0].open_connection();
        assert!(
            picks(&PowerOfTwo, &b, 50, &|_| true)
                .iter()
                .all(|&i| i == 1)
        );
        assert_eq!(PowerOfTwo.pick(&b, &|i| i == 0, ANY), Some(0));
    }

    #[test]
    fn p2c_reaches_every_backend_of_an_idle_pool() {
        let b = pool(&["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3", "127.0.0.1:4"]);
        let mut counts = [0usize; 4];
        for i in picks(&PowerOfTwo, &b, 4000, &|_| true) {
            counts[i] += 1;
        }
        // Uniform in expectation (1000 each); 800 is over 6 standard deviations away.
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
    }

    /// With one out, the others share the picks evenly: both samples are
    /// drawn from the eligible backends, so none takes the place of the
    /// one that is out.
    #[test]
    fn p2c_spreads_evenly_over_the_eligible_with_one_out() {
        let b = pool(&["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3", "127.0.0.1:4"]);
        let mut counts = [0usize; 4];
        for i in picks(&PowerOfTwo, &b, 3000, &|i| i != 1) {
            counts[i] += 1;
        }
        // 1000 each in expectation; 200 off is over 7 standard deviations.
        assert_eq!(counts[1], 0);
        for i in [0, 2, 3] {
            assert!((800..1200).contains(&counts[i]), "{counts:?}");
        }
    }

    proptest! {
        /// With two or more eligible backends, the single most loaded one
        /// (per weight) is never chosen: it always loses its comparison.
        #[test]
        fn the_unique_most_loaded_backend_is_never_picked(
            loads in prop::collection::vec(0usize..6, 2..8),
        ) {
            let b = weighted(&vec![1; loads.len()]);
            let _open: Vec<_> = b.iter().zip(&loads)
                .flat_map(|(b, &n)| (0..n).map(|_| b.open_connection()))
                .collect();
            let max = *loads.iter().max().unwrap();
            let most: Vec<usize> = (0..loads.len()).filter(|&i| loads[i] == max).collect();
            if most.len() == 1 {
                for i in picks(&PowerOfTwo, &b, 64, &|_| true) {
                    prop_assert_ne!(i, most[0]);
                }
            }
        }
    }
}
