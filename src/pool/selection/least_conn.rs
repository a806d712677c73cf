//! Least connections: fewest open connections per unit of weight. Ties go
//! by weighted round robin among the tied backends, as nginx's
//! `least_conn` does: an idle pool spreads new connections by weight, and
//! a backend that is out does not hand its turns to the one after it.

use std::cmp::Ordering;
use std::net::IpAddr;
use std::sync::Arc;

use super::round_robin::RoundRobin;
use super::{Load, Selector};
use crate::pool::backend::Backend;

pub struct LeastConn {
    /// Chooses among the least loaded when several tie; built for the same
    /// member set.
    ties: RoundRobin,
}

impl LeastConn {
    pub fn new(backends: &[Arc<Backend>]) -> Self {
        LeastConn {
            ties: RoundRobin::new(backends),
        }
    }
}

impl Selector for LeastConn {
    fn pick(
        &self,
        backends: &[Arc<Backend>],
        eligible: &dyn Fn(usize) -> bool,
        client: IpAddr,
    ) -> Option<usize> {
        // The least load, and how many eligible backends carry it.
        let (mut least, mut tied) = (None::<(usize, Load)>, 0);
        for i in (0..backends.len()).filter(|&i| eligible(i)) {
            let load = Load::of(&backends[i]);
            match least.map(|(_, l)| load.cmp(l)) {
                Some(Ordering::Greater) => {}
                Some(Ordering::Equal) => tied += 1,
                _ => (least, tied) = (Some((i, load)), 1),
            }
        }
        let (first, least) = least?;
        if tied == 1 {
            return Some(first);
        }
        // Loads move under us: one whose load fell below the least counts
        // as tied too; if all the tied took a connection meanwhile, `first`
        // is the answer of a moment ago.
        let in_tie = |i: usize| eligible(i) && Load::of(&backends[i]).cmp(least).is_le();
        self.ties.pick(backends, &in_tie, client).or(Some(first))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::less_loaded;
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
        let lc = LeastConn::new(&b);
        assert_eq!(picks(&lc, &b, 3, &|_| true), [2, 2, 2]);
        let idle = pool(&["127.0.0.1:1", "127.0.0.1:2"]);
        let lc = LeastConn::new(&idle);
        let mut seen = picks(&lc, &idle, 4, &|_| true);
        seen.sort();
        assert_eq!(seen, [0, 0, 1, 1]);
    }

    /// Tied backends share by weight, and one that is out hands its turns
    /// to all the others in proportion, not to the one after it (with B out
    /// of three idle ones, A and C got 1/3 and 2/3 when ties went to the
    /// first eligible after a rotating start).
    #[test]
    fn ties_go_by_weight_and_an_ineligible_ones_turns_are_shared() {
        let count = |lc: &LeastConn, b: &[Arc<Backend>], ok: &dyn Fn(usize) -> bool| {
            let mut counts = vec![0; b.len()];
            for i in picks(lc, b, 40, ok) {
                counts[i] += 1;
            }
            counts
        };
        let b = weighted(&[1, 1, 1]);
        let lc = LeastConn::new(&b);
        assert_eq!(count(&lc, &b, &|i| i != 1), [20, 0, 20]);
        let b = weighted(&[2, 1, 1]);
        let lc = LeastConn::new(&b);
        assert_eq!(count(&lc, &b, &|_| true), [20, 10, 10]);
        assert_eq!(count(&lc, &b, &|i| i != 0), [0, 20, 20]);
        // Loads still come first: the least loaded wins outright.
        let _busy = [b[1].open_connection(), b[1].open_connection()];
        assert_eq!(count(&lc, &b, &|i| i != 0), [0, 0, 40]);
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
            if let Some(p) = LeastConn::new(&b).pick(&b, &eligible, ANY) {
                for i in (0..b.len()).filter(|&i| eligible(i)) {
                    prop_assert!(!less_loaded(&b[i], &b[p]), "{} is less loaded than {}", i, p);
                }
            }
        }
    }
}
