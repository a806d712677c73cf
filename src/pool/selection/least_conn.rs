//! Least connections: fewest open connections per unit of weight. Ties go
//! round robin, so an idle pool still spreads new connections.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use super::{Selector, less_loaded};
use crate::pool::backend::Backend;

#[derive(Default)]
pub struct LeastConn {
    /// Where the scan starts: rotates so ties do not all go to the first.
    next: AtomicUsize,
}

impl Selector for LeastConn {
    fn pick(
        &self,
        backends: &[Arc<Backend>],
        eligible: &dyn Fn(usize) -> bool,
        _client: IpAddr,
    ) -> Option<usize> {
        let n = backends.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Relaxed) % n;
        let mut best: Option<usize> = None;
        for i in (0..n).map(|k| (start + k) % n) {
            if eligible(i) && best.is_none_or(|b| less_loaded(&backends[i], &backends[b])) {
                best = Some(i);
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::testing::*;
    use super::*;

    #[test]
    fn least_conn_prefers_the_idle_backend_and_rotates_ties() {
        let b = pool(&["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]);
        let _busy = [
            b[0].open_connection(),
            b[0].open_connection(),
            b[1].open_connection(),
        ];
        let lc = LeastConn::default();
        assert_eq!(picks(&lc, &b, 3, &|_| true), [2, 2, 2]);
        let idle = pool(&["127.0.0.1:1", "127.0.0.1:2"]);
        let mut seen = picks(&lc, &idle, 4, &|_| true);
        seen.sort();
        assert_eq!(seen, [0, 0, 1, 1]);
    }

    proptest! {
        /// No eligible backend carries less load per weight than the pick.
        #[test]
        fn the_pick_is_never_more_loaded_than_another_eligible(
            weights in prop::collection::vec(1u32..10, 1..8),
            loads in prop::collection::vec(0usize..8, 8),
            mask in 1u8..,
        ) {
            let b = weighted(&weights);
            let _open: Vec<_> = b.iter().zip(&loads)
                .flat_map(|(b, &n)| (0..n).map(|_| b.open_connection()))
                .collect();
            let eligible = |i: usize| mask & (1 << i) != 0;
            if let Some(p) = LeastConn::default().pick(&b, &eligible, ANY) {
                for i in (0..b.len()).filter(|&i| eligible(i)) {
                    prop_assert!(!less_loaded(&b[i], &b[p]), "{} is less loaded than {}", i, p);
                }
            }
        }
    }
}
