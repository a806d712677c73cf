//! Consistent hashing of the client IP on a ring with virtual nodes.
//!
//! A ring (rather than Maglev) because it is small, weights map directly to
//! virtual-node counts, and a backend going down moves only its own clients:
//! their lookups walk on to the next eligible point while everyone else's
//! first point is unchanged. The ring is built once per member set.

use std::net::IpAddr;
use std::sync::Arc;

use super::{Selector, bounded};
use crate::pool::backend::Backend;

/// Virtual nodes per unit of weight; ~160 keeps the spread within a few percent.
const VNODES: u32 = 160;

pub struct ConsistentHash {
    /// (point, backend index), sorted by point.
    ring: Vec<(u64, usize)>,
    /// See [`bounded`](super::bounded); `None` is unbounded.
    balance_factor: Option<f64>,
}

impl ConsistentHash {
    pub fn new(backends: &[Arc<Backend>], balance_factor: Option<f64>) -> Self {
        let mut ring = Vec::new();
        for (i, backend) in backends.iter().enumerate() {
            for v in 0..VNODES * backend.weight() {
                let key = format!("{}#{v}", backend.name());
                ring.push((stable_hash(key.as_bytes()), i));
            }
        }
        ring.sort_unstable();
        ConsistentHash {
            ring,
            balance_factor,
        }
    }
}

impl Selector for ConsistentHash {
    fn pick(
        &self,
        backends: &[Arc<Backend>],
        eligible: &dyn Fn(usize) -> bool,
        client: IpAddr,
    ) -> Option<usize> {
        let key = client_key(client);
        let start = self.ring.partition_point(|(point, _)| *point < key);
        let len = self.ring.len();
        let walk = (0..len).map(|k| self.ring[(start + k) % len].1);
        bounded(backends, eligible, self.balance_factor, walk)
    }
}

/// Where a client lands: a stable hash of its IP address alone (not the
/// port), so its every connection lands on the same backend.
pub fn client_key(client: IpAddr) -> u64 {
    match client.to_canonical() {
        IpAddr::V4(ip) => stable_hash(&ip.octets()),
        IpAddr::V6(ip) => stable_hash(&ip.octets()),
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
    use std::net::Ipv4Addr;

    use proptest::prelude::*;

    use super::super::testing::*;
    use super::*;

    #[test]
    fn hash_moves_only_the_clients_of_a_removed_backend() {
        let b = pool(&["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80", "10.0.0.4:80"]);
        let ring = ConsistentHash::new(&b, None);
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

    proptest! {
        /// The same client always lands on the same backend, on a ring
        /// built twice from the same members (as two processes would).
        #[test]
        fn the_same_members_give_the_same_answer(client in any::<u128>(), n in 1usize..10) {
            let weights = vec![1; n];
            let (a, b) = (weighted(&weights), weighted(&weights));
            let ip = IpAddr::from(client.to_be_bytes());
            let first = ConsistentHash::new(&a, None).pick(&a, &|_| true, ip);
            let second = ConsistentHash::new(&b, None).pick(&b, &|_| true, ip);
            prop_assert_eq!(first, second);
        }
    }
}
