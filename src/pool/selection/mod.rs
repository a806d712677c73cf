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
//! | `least-conn` | [`least_conn`] | fewest open connections per unit of weight; ties by weighted round robin |
//! | `p2c` | [`p2c`] | the less loaded of two random eligible backends |
//! | `hash` | [`consistent_hash`] | by the client IP on a consistent-hash ring |
//! | `maglev` | [`maglev`] | by the client IP in a Maglev lookup table |
//!
//! The two hashing selectors take an optional bounded-load factor
//! ([`bounded`]): a client's preferred backend is skipped while it holds more
//! than its share of the open connections times the factor.

pub mod consistent_hash;
pub mod least_conn;
pub mod maglev;
pub mod p2c;
pub mod round_robin;

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
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

/// Builds the selector for `kind` over `backends`; `balance_factor` bounds
/// the load of the hashing selectors (and is ignored by the others).
pub fn build(
    kind: StrategyKind,
    backends: &[Arc<Backend>],
    balance_factor: Option<f64>,
) -> Box<dyn Selector> {
    match kind {
        StrategyKind::RoundRobin => Box::new(round_robin::RoundRobin::new(backends)),
        StrategyKind::LeastConn => Box::new(least_conn::LeastConn::new(backends)),
        StrategyKind::PowerOfTwo => Box::new(p2c::PowerOfTwo),
        StrategyKind::Hash => Box::new(consistent_hash::ConsistentHash::new(
            backends,
            balance_factor,
        )),
        StrategyKind::Maglev => Box::new(maglev::Maglev::new(backends, balance_factor)),
    }
}

/// Whether `kind` keeps a client on one backend: those are not ramped by
/// slow start, which would move clients for no better reason than warm-up.
pub fn is_sticky(kind: StrategyKind) -> bool {
    matches!(kind, StrategyKind::Hash | StrategyKind::Maglev)
}

/// Consistent hashing with bounded loads (Mirrokni, Thorup and Zadimoghaddam;
/// HAProxy's `hash-balance-factor`, Envoy's `hash_balance_factor`): walks a
/// key's `candidates` in preference order and takes the first eligible
/// backend holding fewer open connections than `factor` times its weighted
/// share of all of them (this one included). Such a backend always exists,
/// since the shares add up to more than the total; if the walk misses it,
/// the first eligible candidate is taken. Without a factor: the first
/// eligible candidate.
fn bounded(
    backends: &[Arc<Backend>],
    eligible: &dyn Fn(usize) -> bool,
    factor: Option<f64>,
    mut candidates: impl Iterator<Item = usize>,
) -> Option<usize> {
    let Some(factor) = factor else {
        return candidates.find(|&i| eligible(i));
    };
    let (mut open, mut weights) = (0u64, 0u64);
    for (i, b) in backends.iter().enumerate() {
        if eligible(i) {
            open += b.active();
            weights += u64::from(b.weight());
        }
    }
    if weights == 0 {
        return None;
    }
    let mut first = None;
    for i in candidates {
        if !eligible(i) {
            continue;
        }
        first.get_or_insert(i);
        let share = u64::from(backends[i].weight()) as f64 / weights as f64;
        let capacity = ((open + 1) as f64 * share * factor).ceil() as u64;
        if backends[i].active() < capacity {
            return Some(i);
        }
    }
    first
}

/// A fast per-thread xorshift generator: selection needs spread, not secrecy.
pub(crate) fn random_below(n: usize) -> usize {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(RandomState::new().hash_one(0u64) | 1);
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        (x % n as u64) as usize
    })
}

/// A backend's open connections per unit of weight, read once, compared
/// as fractions by cross-multiplication (exact, in integers).
#[derive(Clone, Copy)]
struct Load {
    active: u128,
    weight: u128,
}

impl Load {
    fn of(backend: &Backend) -> Load {
        Load {
            active: u128::from(backend.active()),
            weight: u128::from(backend.weight()),
        }
    }

    fn cmp(self, other: Load) -> std::cmp::Ordering {
        (self.active * other.weight).cmp(&(other.active * self.weight))
    }
}

/// Whether `a` carries less load per unit of weight than `b`.
fn less_loaded(a: &Backend, b: &Backend) -> bool {
    Load::of(a).cmp(Load::of(b)).is_lt()
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

    const KINDS: [StrategyKind; 5] = [
        StrategyKind::RoundRobin,
        StrategyKind::LeastConn,
        StrategyKind::PowerOfTwo,
        StrategyKind::Hash,
        StrategyKind::Maglev,
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
                let selector = build(kind, &backends, Some(1.25));
                for _ in 0..4 {
                    let picked = selector.pick(&backends, &eligible, IpAddr::from(client.to_be_bytes()));
                    match picked {
                        Some(i) => prop_assert!(i < backends.len() && eligible(i), "{kind}: {i}"),
                        None => prop_assert!(!any_eligible, "{kind} found nothing"),
                    }
                }
            }
        }

        /// With a factor, however clients hash, no backend ends up holding
        /// more than the factor times the mean of open connections (rounded up).
        #[test]
        fn bounded_load_caps_every_backend_at_the_factor_times_the_mean(
            n in 2usize..8,
            clients in prop::collection::vec(any::<u32>(), 1..300),
            factor in 1.0f64..2.0,
            maglev in any::<bool>(),
        ) {
            let backends = weighted(&vec![1; n]);
            let kind = if maglev { StrategyKind::Maglev } else { StrategyKind::Hash };
            let selector = build(kind, &backends, Some(factor));
            let mut open = Vec::new();
            for c in &clients {
                let i = selector.pick(&backends, &|_| true, IpAddr::from(c.to_be_bytes())).unwrap();
                open.push(backends[i].open_connection());
            }
            let cap = (clients.len() as f64 * factor / n as f64).ceil() as u64;
            for b in &backends {
                prop_assert!(b.active() <= cap, "{} > {} ({} clients, factor {})", b.active(), cap, clients.len(), factor);
            }
        }
    }
}
