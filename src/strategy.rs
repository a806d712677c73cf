//! Selection strategies: which backend gets the next connection.
//!
//! Each algorithm sits behind the small [`Strategy`] trait, so the forwarding
//! code never knows which one is in use. A strategy is built for one list of
//! backends (it may keep per-backend state) and is rebuilt when the list
//! changes; health and connection limits reach it as an `eligible` filter.

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use crate::backend::Backend;

/// Picks a backend for a new connection.
pub trait Strategy: Send + Sync {
    /// Returns the index into `backends` of the chosen one, or `None` when no
    /// index passes `eligible`. `client` is the client's address, for
    /// strategies that keep a client on one backend.
    fn pick(
        &self,
        backends: &[Arc<Backend>],
        eligible: &dyn Fn(usize) -> bool,
        client: IpAddr,
    ) -> Option<usize>;
}

/// The `--strategy` setting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StrategyKind {
    #[default]
    RoundRobin,
    LeastConn,
    PowerOfTwo,
    Hash,
}

impl StrategyKind {
    pub fn build(self, backends: &[Arc<Backend>]) -> Box<dyn Strategy> {
        match self {
            StrategyKind::RoundRobin => Box::new(RoundRobin::new(backends)),
            StrategyKind::LeastConn => Box::new(LeastConn::default()),
            StrategyKind::PowerOfTwo => Box::new(PowerOfTwo),
            StrategyKind::Hash => Box::new(ConsistentHash::new(backends)),
        }
    }
}

impl FromStr for StrategyKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "round-robin" | "roundrobin" | "rr" => Ok(StrategyKind::RoundRobin),
            "least-conn" | "leastconn" => Ok(StrategyKind::LeastConn),
            "p2c" => Ok(StrategyKind::PowerOfTwo),
            "hash" => Ok(StrategyKind::Hash),
            other => Err(format!(
                "unknown strategy {other:?}: use round-robin, least-conn, p2c or hash"
            )),
        }
    }
}

impl fmt::Display for StrategyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StrategyKind::RoundRobin => "round-robin",
            StrategyKind::LeastConn => "least-conn",
            StrategyKind::PowerOfTwo => "p2c",
            StrategyKind::Hash => "hash",
        })
    }
}

/// Round-robin. With equal weights, a lock-free counter over the eligible
/// backends: exact rotation in list order, also right after one leaves.
/// With weights, nginx's smooth weighted round-robin: 3:1 gives A A B A,
/// never bursts.
pub struct RoundRobin {
    next: AtomicUsize,
    /// Smooth-WRR state; `None` when all weights are equal.
    current: Option<Mutex<Vec<i64>>>,
}

impl RoundRobin {
    pub fn new(backends: &[Arc<Backend>]) -> Self {
        let weighted = backends.windows(2).any(|w| w[0].weight() != w[1].weight());
        RoundRobin {
            next: AtomicUsize::new(0),
            current: weighted.then(|| Mutex::new(vec![0; backends.len()])),
        }
    }
}

impl Strategy for RoundRobin {
    fn pick(
        &self,
        backends: &[Arc<Backend>],
        eligible: &dyn Fn(usize) -> bool,
        _client: IpAddr,
    ) -> Option<usize> {
        let Some(current) = &self.current else {
            let count = (0..backends.len()).filter(|&i| eligible(i)).count();
            if count == 0 {
                return None;
            }
            let nth = self.next.fetch_add(1, Relaxed) % count;
            return (0..backends.len()).filter(|&i| eligible(i)).nth(nth);
        };
        let mut current = current.lock().unwrap_or_else(|e| e.into_inner());
        current.resize(backends.len(), 0);
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        for (i, backend) in backends.iter().enumerate() {
            if !eligible(i) {
                continue;
            }
            let weight = i64::from(backend.weight());
            current[i] += weight;
            total += weight;
            if best.is_none_or(|b| current[i] > current[b]) {
                best = Some(i);
            }
        }
        if let Some(b) = best {
            current[b] -= total;
        }
        best
    }
}

/// Fewest active connections per unit of weight; ties go round-robin so
/// an idle pool still spreads new connections.
#[derive(Default)]
pub struct LeastConn {
    next: AtomicUsize,
}

impl Strategy for LeastConn {
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

/// Whether `a` carries less load per weight than `b` (cross-multiplied to
/// stay in integers).
fn less_loaded(a: &Backend, b: &Backend) -> bool {
    u128::from(a.active()) * u128::from(b.weight())
        < u128::from(b.active()) * u128::from(a.weight())
}

/// Power of two random choices: sample two eligible backends, take the less
/// loaded. Near least-conn quality without looking at every backend's load.
pub struct PowerOfTwo;

impl Strategy for PowerOfTwo {
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

/// A fast per-thread xorshift generator: selection needs spread, not secrecy.
fn random_below(n: usize) -> usize {
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

/// Consistent hashing of the client IP on a ring with virtual nodes.
///
/// A ring (rather than Maglev) because it is small, weights map directly to
/// virtual-node counts, and a backend going down moves only its own clients:
/// their lookups walk on to the next eligible point while everyone else's
/// first point is unchanged.
pub struct ConsistentHash {
    /// (point, backend index), sorted by point.
    ring: Vec<(u64, usize)>,
}

/// Virtual nodes per unit of weight; ~160 keeps the spread within a few percent.
const VNODES: u32 = 160;

impl ConsistentHash {
    pub fn new(backends: &[Arc<Backend>]) -> Self {
        let mut ring = Vec::new();
        for (i, backend) in backends.iter().enumerate() {
            for v in 0..VNODES * backend.weight() {
                let key = format!("{}#{v}", backend.spec.name);
                ring.push((stable_hash(key.as_bytes()), i));
            }
        }
        ring.sort_unstable();
        ConsistentHash { ring }
    }
}

impl Strategy for ConsistentHash {
    fn pick(
        &self,
        _backends: &[Arc<Backend>],
        eligible: &dyn Fn(usize) -> bool,
        client: IpAddr,
    ) -> Option<usize> {
        let key = match client {
            IpAddr::V4(ip) => stable_hash(&ip.octets()),
            IpAddr::V6(ip) => stable_hash(&ip.octets()),
        };
        let start = self.ring.partition_point(|(point, _)| *point < key);
        let len = self.ring.len();
        (0..len)
            .map(|k| self.ring[(start + k) % len].1)
            .find(|&i| eligible(i))
    }
}

/// FNV-1a with a splitmix64 finish: stable across builds and releases (so a
/// restart keeps clients where they were) and well spread.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_backend;
    use std::net::Ipv4Addr;

    fn pool(specs: &[&str]) -> Vec<Arc<Backend>> {
        specs
            .iter()
            .map(|s| Arc::new(Backend::new(parse_backend(s).unwrap())))
            .collect()
    }

    const ANY: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn picks(
        s: &dyn Strategy,
        b: &[Arc<Backend>],
        n: usize,
        ok: &dyn Fn(usize) -> bool,
    ) -> Vec<usize> {
        (0..n).map(|_| s.pick(b, ok, ANY).unwrap()).collect()
    }

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
    }

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
    fn hash_moves_only_the_clients_of_a_removed_backend() {
        let b = pool(&["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80", "10.0.0.4:80"]);
        let ring = ConsistentHash::new(&b);
        let clients: Vec<IpAddr> = (0..2000u32)
            .map(|i| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i * 7919)))
            .collect();
        let before: Vec<usize> = clients
            .iter()
            .map(|&c| ring.pick(&b, &|_| true, c).unwrap())
            .collect();
        let after: Vec<usize> = clients
            .iter()
            .map(|&c| ring.pick(&b, &|i| i != 2, c).unwrap())
            .collect();
        let mut counts = [0usize; 4];
        for (x, y) in before.iter().zip(&after) {
            counts[*x] += 1;
            if *x != 2 {
                assert_eq!(x, y, "a client of a remaining backend moved");
            } else {
                assert_ne!(*y, 2);
            }
        }
        for c in counts {
            assert!((350..650).contains(&c), "uneven ring: {counts:?}");
        }
    }
}
