//! Selection: which backend gets the next connection.
//!
//! Each algorithm sits behind the small [`Selector`] trait, so the data path
//! never knows which one is in use. A selector is built for one member set
//! (it may precompute from it: the weighted round-robin sequence, the hash
//! ring) and is immutable afterwards: the pool builds a new one only when the
//! membership or a weight changes, never per connection. What changes per
//! connection (health, admin state, connection limits, backends already
//! tried) reaches it as an `eligible` filter. Picking takes no lock.
//!
//! | strategy | module | picks |
//! |---|---|---|
//! | `round-robin` | [`round_robin`] | in turn; smooth weighted when weights differ |
//! | `least-conn` | [`least_conn`] | fewest open connections per unit of weight |
//! | `p2c` | [`p2c`] | the less loaded of two random eligible backends |
//! | `hash` | [`consistent_hash`] | by the client IP on a consistent-hash ring |

pub mod consistent_hash;
pub mod least_conn;
pub mod p2c;
pub mod round_robin;

use std::net::IpAddr;
use std::sync::Arc;

use crate::config::StrategyKind;
use crate::pool::backend::Backend;

/// Picks a backend for a new connection.
pub trait Selector: Send + Sync {
    /// Returns the index into `backends` (the member set the selector was
    /// built for) of the chosen one, or `None` when no index passes
    /// `eligible`. `client` is the client's address, for selectors that keep
    /// a client on one backend.
    fn pick(
        &self,
        backends: &[Arc<Backend>],
        eligible: &dyn Fn(usize) -> bool,
        client: IpAddr,
    ) -> Option<usize>;
}

/// Builds the selector for `kind` over `backends`.
pub fn build(kind: StrategyKind, backends: &[Arc<Backend>]) -> Box<dyn Selector> {
    match kind {
        StrategyKind::RoundRobin => Box::new(round_robin::RoundRobin::new(backends)),
        StrategyKind::LeastConn => Box::new(least_conn::LeastConn::default()),
        StrategyKind::PowerOfTwo => Box::new(p2c::PowerOfTwo),
        StrategyKind::Hash => Box::new(consistent_hash::ConsistentHash::new(backends)),
    }
}

/// Whether `a` carries less load per unit of weight than `b`
/// (cross-multiplied to stay in integers).
fn less_loaded(a: &Backend, b: &Backend) -> bool {
    u128::from(a.active()) * u128::from(b.weight())
        < u128::from(b.active()) * u128::from(a.weight())
}

#[cfg(test)]
pub(crate) mod testing {
    //! Pools and pick loops shared by the selectors' tests.

    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::Arc;

    use super::Selector;
    use crate::config::parse_backend;
    use crate::pool::backend::Backend;

    pub const ANY: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    pub fn pool(specs: &[&str]) -> Vec<Arc<Backend>> {
        specs
            .iter()
            .map(|s| Arc::new(Backend::new(&parse_backend(s).unwrap())))
            .collect()
    }

    /// `n` backends on 10.0.0.x with the given weights.
    pub fn weighted(weights: &[u32]) -> Vec<Arc<Backend>> {
        let specs: Vec<String> = weights
            .iter()
            .enumerate()
            .map(|(i, w)| format!("10.0.0.{}:80={w}", i + 1))
            .collect();
        pool(&specs.iter().map(String::as_str).collect::<Vec<_>>())
    }

    pub fn picks(
        s: &dyn Selector,
        b: &[Arc<Backend>],
        n: usize,
        ok: &dyn Fn(usize) -> bool,
    ) -> Vec<usize> {
        (0..n).map(|_| s.pick(b, ok, ANY).unwrap()).collect()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::testing::*;
    use super::*;

    const KINDS: [StrategyKind; 4] = [
        StrategyKind::RoundRobin,
        StrategyKind::LeastConn,
        StrategyKind::PowerOfTwo,
        StrategyKind::Hash,
    ];

    proptest! {
        /// Whatever the weights, loads and filter: a selector returns an
        /// eligible index, and `None` only when no index is eligible.
        #[test]
        fn every_selector_picks_only_eligible_backends(
            weights in prop::collection::vec(1u32..20, 1..12),
            loads in prop::collection::vec(0usize..6, 12),
            mask in any::<u16>(),
            client in any::<u32>(),
        ) {
            let backends = weighted(&weights);
            let _open: Vec<_> = backends
                .iter()
                .zip(&loads)
                .flat_map(|(b, &n)| (0..n).map(|_| b.open_connection()))
                .collect();
            let eligible = |i: usize| mask & (1 << i) != 0;
            let any_eligible = (0..backends.len()).any(eligible);
            for kind in KINDS {
                let selector = build(kind, &backends);
                for _ in 0..4 {
                    let picked = selector.pick(&backends, &eligible, IpAddr::from(client.to_be_bytes()));
                    match picked {
                        Some(i) => prop_assert!(i < backends.len() && eligible(i), "{kind}: {i}"),
                        None => prop_assert!(!any_eligible, "{kind} found nothing"),
                    }
                }
            }
        }
    }
}
