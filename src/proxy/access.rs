//! Client access control: which networks may connect at all (`--allow`,
//! `--deny`) and how much one client address may take (`--max-conns-per-ip`,
//! `--rate-per-ip`; on a UDP listener `--max-sessions-per-ip` and
//! `--datagram-rate-per-ip`, see [`ClientTable::admit_session`]).
//!
//! The check runs right after accept, before any backend is chosen, so a
//! refused client never costs a backend connection. Semantics:
//!
//! - `deny` is checked first; a client in a denied network, or outside every
//!   `allow` network when `allow` is non-empty, is closed without a byte.
//! - Over a per-IP limit (open connections, or the token bucket of
//!   `rate_per_ip` new connections per second with a burst of the same size)
//!   the client hears the 503 or a plain close, as `--on-failure` says.
//! - Refusals count as `rejected` on the listener and are logged at debug;
//!   those answered 503 count as 503s too, with the limit as the reason.
//!
//! The per-IP table is one small lock per listener, held only for the check
//! (never across an await). It is bounded: an entry is dropped once idle (no
//! open connection and a full bucket), idle entries are swept at most once a
//! second, and the table never holds more than [`MAX_TRACKED_CLIENTS`]
//! addresses. When it is full, new addresses are refused (as overload)
//! rather than evicting others: evicting would let a flood of fresh source
//! addresses reset the limits of the clients already tracked.
//! IPv4-mapped IPv6 clients (`::ffff:a.b.c.d`) count as their IPv4 address.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use log::debug;
use tokio::net::TcpStream;

use crate::config::{AccessConfig, OnFailure};
use crate::proxy::failure::{self, Failure};
use crate::stats::{ListenerStats, Unavailable};

/// Most client addresses one listener tracks for the per-IP limits.
pub const MAX_TRACKED_CLIENTS: usize = 65_536;
/// Idle entries are swept at most this often.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Why a client was turned away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// In a `deny` network.
    Denied,
    /// Outside every `allow` network.
    NotAllowed,
    /// Already holds `max_conns_per_ip` connections.
    TooManyConnections,
    /// Out of tokens in its `rate_per_ip` bucket.
    RateLimited,
    /// The per-IP table is full and this address is not in it.
    TableFull,
}

impl Refusal {
    /// The 503's reason: overload is answered (and counted) like any 503;
    /// a network refusal (`None`) is a bare close, since telling an
    /// unwanted client anything helps only the client.
    pub fn unavailable(self) -> Option<Unavailable> {
        match self {
            Refusal::Denied | Refusal::NotAllowed => None,
            Refusal::TooManyConnections => Some(Unavailable::PerIpConnections),
            Refusal::RateLimited => Some(Unavailable::PerIpRate),
            Refusal::TableFull => Some(Unavailable::PerIpTable),
        }
    }

    pub fn is_overload(self) -> bool {
        self.unavailable().is_some()
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::Denied => "refused: address is denied",
            Refusal::NotAllowed => "refused: address is not allowed",
            Refusal::TooManyConnections => "refused: too many connections from this address",
            Refusal::RateLimited => "refused: connection rate from this address over the limit",
            Refusal::TableFull => "refused: too many client addresses tracked",
        })
    }
}

/// The allow/deny verdict for `ip`; no state involved.
pub fn check_network(ip: IpAddr, config: &AccessConfig) -> Result<(), Refusal> {
    if config.deny.iter().any(|net| net.contains(ip)) {
        return Err(Refusal::Denied);
    }
    if !config.allow.is_empty() && !config.allow.iter().any(|net| net.contains(ip)) {
        return Err(Refusal::NotAllowed);
    }
    Ok(())
}

/// The address the per-IP limits count `ip` under: IPv4 (and v4-mapped
/// IPv6) as itself, other IPv6 as its network of `ipv6_prefix` bits.
fn client_key(ip: IpAddr, ipv6_prefix: u8) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u32::from(ipv6_prefix.min(128));
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            IpAddr::V6((u128::from(v6) & mask).into())
        }
        v4 => v4,
    }
}

/// What the table knows about one client address.
#[derive(Debug)]
struct ClientEntry {
    /// Open connections (UDP sessions) from it.
    open: u32,
    /// Token bucket; meaningless when `rate` is 0 (no rate limit).
    tokens: f64,
    rate: f64,
    refilled: Instant,
    /// On a UDP listener with `datagram_rate_per_ip`: the bucket every
    /// datagram from it takes a token from, shared by its sessions.
    datagrams: Option<Arc<DatagramBucket>>,
}

/// The per-IP rate `config` sets; NaN, negative or zero rates never
/// refill, so they are "no rate" (0).
fn rate_of(config: &AccessConfig) -> f64 {
    config
        .rate_per_ip
        .filter(|r| r.is_finite() && *r > 0.0)
        .unwrap_or(0.0)
}

impl ClientEntry {
    /// A client first seen `now`, with a full bucket for `rate`.
    fn new(rate: f64, now: Instant) -> Self {
        ClientEntry {
            open: 0,
            tokens: rate.max(1.0),
            rate,
            refilled: now,
            datagrams: None,
        }
    }

    fn capacity(&self) -> f64 {
        // burst = rate, but at least one connection must be possible.
        self.rate.max(1.0)
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity());
        self.refilled = self.refilled.max(now);
    }

    fn is_idle(&mut self, now: Instant) -> bool {
        if self.open > 0 {
            return false;
        }
        if self.datagrams.as_ref().is_some_and(|b| !b.is_full(now)) {
            return false;
        }
        if self.rate <= 0.0 {
            return true;
        }
        self.refill(now);
        self.tokens >= self.capacity()
    }
}

struct Table {
    clients: HashMap<IpAddr, ClientEntry>,
    last_sweep: Instant,
}

/// Per-IP bookkeeping of one listener; lives as long as the listener.
pub struct ClientTable {
    table: Mutex<Table>,
    cap: usize,
}

impl Default for ClientTable {
    fn default() -> Self {
        ClientTable::with_cap(MAX_TRACKED_CLIENTS)
    }
}

impl ClientTable {
    pub fn with_cap(cap: usize) -> Self {
        ClientTable {
            table: Mutex::new(Table {
                clients: HashMap::new(),
                last_sweep: Instant::now(),
            }),
            cap,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many client addresses are tracked now.
    pub fn len(&self) -> usize {
        self.lock().clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Decides whether `ip` may open a connection now; the returned slot
    /// holds its per-IP connection count until dropped.
    pub fn admit(&self, ip: IpAddr, config: &AccessConfig) -> Result<ClientSlot<'_>, Refusal> {
        self.admit_at(ip, config, Instant::now())
    }

    /// [`admit`](Self::admit) with the clock passed in, for tests.
    pub fn admit_at(
        &self,
        ip: IpAddr,
        config: &AccessConfig,
        now: Instant,
    ) -> Result<ClientSlot<'_>, Refusal> {
        check_network(ip, config)?;
        if config.max_conns_per_ip.is_none() && config.rate_per_ip.is_none() {
            // No per-IP limit: no lock, no entry.
            return Ok(ClientSlot { table: None, ip });
        }
        let ip = client_key(ip, config.per_ip_ipv6_prefix);
        let rate = rate_of(config);
        let mut table = self.lock();
        if now.saturating_duration_since(table.last_sweep) >= SWEEP_EVERY {
            table.clients.retain(|_, entry| !entry.is_idle(now));
            table.last_sweep = now;
        }
        let tracked = table.clients.len();
        let entry = match table.clients.entry(ip) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(_) if tracked >= self.cap => return Err(Refusal::TableFull),
            Entry::Vacant(v) => v.insert(ClientEntry::new(rate, now)),
        };
        if entry.rate != rate {
            // A reload changed the rate: keep the tokens, clamp to the new burst.
            entry.refill(now);
            entry.rate = rate;
            entry.tokens = entry.tokens.min(entry.capacity());
        }
        if config.max_conns_per_ip.is_some_and(|max| entry.open >= max) {
            return Err(Refusal::TooManyConnections);
        }
        if rate > 0.0 {
            entry.refill(now);
            if entry.tokens < 1.0 {
                return Err(Refusal::RateLimited);
            }
            entry.tokens -= 1.0;
        }
        entry.open += 1;
        Ok(ClientSlot {
            table: Some(self),
            ip,
        })
    }

    /// Counts a connection from `ip` that moved here with a binary upgrade
    /// (it was admitted by the old process): it holds a slot against the
    /// per-IP connection limit like any other, but no limit refuses it and
    /// it takes no token from the rate (it is not a new connection).
    pub fn adopt(&self, ip: IpAddr, config: &AccessConfig) -> ClientSlot<'_> {
        if config.max_conns_per_ip.is_none() && config.rate_per_ip.is_none() {
            return ClientSlot { table: None, ip };
        }
        let ip = client_key(ip, config.per_ip_ipv6_prefix);
        let rate = rate_of(config);
        let mut table = self.lock();
        let entry = table
            .clients
            .entry(ip)
            .or_insert_with(|| ClientEntry::new(rate, Instant::now()));
        entry.open += 1;
        ClientSlot {
            table: Some(self),
            ip,
        }
    }

    /// Decides whether `ip` may start a UDP session now, with at most
    /// `max_sessions` of them and `datagram_rate` datagrams a second (the
    /// datagram that starts it takes the first token). The slot holds its
    /// session count until dropped and carries the bucket the session's
    /// later datagrams take their tokens from, without the table's lock.
    pub fn admit_session(
        self: &Arc<Self>,
        ip: IpAddr,
        config: &AccessConfig,
        max_sessions: Option<u32>,
        datagram_rate: Option<f64>,
        now: Instant,
    ) -> Result<SessionSlot, Refusal> {
        check_network(ip, config)?;
        let rate = datagram_rate.filter(|r| r.is_finite() && *r > 0.0);
        if max_sessions.is_none() && rate.is_none() {
            return Ok(SessionSlot {
                table: None,
                key: ip,
                bucket: None,
            });
        }
        let key = client_key(ip, config.per_ip_ipv6_prefix);
        let mut table = self.lock();
        if now.saturating_duration_since(table.last_sweep) >= SWEEP_EVERY {
            table.clients.retain(|_, entry| !entry.is_idle(now));
            table.last_sweep = now;
        }
        let tracked = table.clients.len();
        let entry = match table.clients.entry(key) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(_) if tracked >= self.cap => return Err(Refusal::TableFull),
            Entry::Vacant(v) => v.insert(ClientEntry {
                open: 0,
                tokens: 0.0,
                rate: 0.0,
                refilled: now,
                datagrams: None,
            }),
        };
        // A reload that changes the rate gives new sessions a new bucket.
        let bucket = match (rate, &entry.datagrams) {
            (None, _) => None,
            (Some(rate), Some(b)) if b.rate == rate => Some(b.clone()),
            (Some(rate), _) => Some(Arc::new(DatagramBucket::new(rate, now))),
        };
        entry.datagrams = bucket.clone();
        if max_sessions.is_some_and(|max| entry.open >= max) {
            return Err(Refusal::TooManyConnections);
        }
        if bucket.as_ref().is_some_and(|b| !b.allow(now)) {
            return Err(Refusal::RateLimited);
        }
        entry.open += 1;
        Ok(SessionSlot {
            table: Some(self.clone()),
            key,
            bucket,
        })
    }

    fn release(&self, ip: IpAddr) {
        let mut table = self.lock();
        if let Some(entry) = table.clients.get_mut(&ip) {
            entry.open = entry.open.saturating_sub(1);
            // Without a rate limit nothing else is remembered: forget it now.
            // A bucket still refilling is left to the sweep.
            if entry.open == 0 && entry.rate <= 0.0 && entry.datagrams.is_none() {
                table.clients.remove(&ip);
            }
        }
    }
}

/// A token bucket in one atomic, for datagrams: `rate` a second with a
/// burst of as many (at least one), as the connection rate's. The
/// generic cell rate algorithm: it keeps when the next datagram is due at
/// the rate, and a datagram is let through while that is at most a burst
/// ahead of now. Lock-free, so the sessions of one address on several
/// workers take from it at once.
#[derive(Debug)]
pub struct DatagramBucket {
    /// The configured rate, so a reload that changes it is noticed.
    rate: f64,
    /// When the next datagram is due at the rate, in ns since `epoch`.
    due_ns: AtomicU64,
    /// Nanoseconds one datagram uses up: 1 s / rate.
    interval_ns: u64,
    /// How far ahead of now `due_ns` may run: the burst less one datagram.
    burst_ns: u64,
    /// What `due_ns` counts from.
    epoch: Instant,
}

impl DatagramBucket {
    /// A full bucket for `rate` datagrams a second (finite, above 0).
    pub fn new(rate: f64, now: Instant) -> Self {
        let interval_ns = (1e9 / rate).clamp(1.0, u64::MAX as f64 / 4.0) as u64;
        let burst = rate.max(1.0).floor() as u64;
        DatagramBucket {
            rate,
            due_ns: AtomicU64::new(0),
            interval_ns,
            burst_ns: interval_ns.saturating_mul(burst - 1),
            epoch: now,
        }
    }

    fn nanos(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Takes a token for one datagram arriving at `now`, if there is one.
    pub fn allow(&self, now: Instant) -> bool {
        let now = self.nanos(now);
        let mut due = self.due_ns.load(Relaxed);
        loop {
            let from = due.max(now);
            if from - now > self.burst_ns {
                return false;
            }
            let next = from.saturating_add(self.interval_ns);
            match self
                .due_ns
                .compare_exchange_weak(due, next, Relaxed, Relaxed)
            {
                Ok(_) => return true,
                Err(current) => due = current,
            }
        }
    }

    /// Whether it has refilled to its whole burst by `now`.
    fn is_full(&self, now: Instant) -> bool {
        self.due_ns.load(Relaxed) <= self.nanos(now)
    }
}

/// One UDP session's share of its client address's limits: its session
/// count (released when dropped) and the address's datagram bucket.
/// Owns its table, since a session lives in a table of its own.
pub struct SessionSlot {
    /// Where the count is held; `None` without per-IP limits.
    table: Option<Arc<ClientTable>>,
    /// The address the limits count it under.
    key: IpAddr,
    /// The address's datagram bucket; `None` without a datagram rate.
    bucket: Option<Arc<DatagramBucket>>,
}

impl SessionSlot {
    /// Takes a token for one more datagram of the session at `now`;
    /// `false`: over `datagram_rate_per_ip`, drop it.
    pub fn allow_datagram(&self, now: Instant) -> bool {
        self.bucket.as_ref().is_none_or(|b| b.allow(now))
    }
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        if let Some(table) = &self.table {
            table.release(self.key);
        }
    }
}

/// One admitted client connection; frees its per-IP slot when dropped.
pub struct ClientSlot<'a> {
    table: Option<&'a ClientTable>,
    ip: IpAddr,
}

impl Drop for ClientSlot<'_> {
    fn drop(&mut self) {
        if let Some(table) = self.table {
            table.release(self.ip);
        }
    }
}

/// Turns a refused client away: counted, logged at debug, and answered as
/// the refusal and `--on-failure` say. Never touches a backend.
pub async fn refuse(
    client: TcpStream,
    peer: SocketAddr,
    refusal: Refusal,
    stats: &ListenerStats,
    on_failure: OnFailure,
) {
    stats.count_rejected();
    debug!("{peer}: {refusal}");
    if let Some(why) = refusal.unavailable() {
        let failure = Failure::Unavailable(why);
        failure.count(stats);
        failure::answer(client, failure, on_failure).await;
    }
    // Otherwise dropping `client` closes it.
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Network;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn nets(list: &[&str]) -> Vec<Network> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn rate(per_second: f64) -> AccessConfig {
        AccessConfig {
            rate_per_ip: Some(per_second),
            ..AccessConfig::default()
        }
    }

    #[test]
    fn deny_wins_over_allow_and_allow_restricts() {
        let config = AccessConfig {
            allow: nets(&["10.0.0.0/8", "fd00::/8"]),
            deny: nets(&["10.9.0.0/16"]),
            ..AccessConfig::default()
        };
        assert_eq!(check_network(ip("10.1.2.3"), &config), Ok(()));
        assert_eq!(check_network(ip("::ffff:10.1.2.3"), &config), Ok(()));
        assert_eq!(check_network(ip("fd00::5"), &config), Ok(()));
        assert_eq!(check_network(ip("10.9.1.1"), &config), Err(Refusal::Denied));
        assert_eq!(
            check_network(ip("192.168.1.1"), &config),
            Err(Refusal::NotAllowed)
        );
        assert_eq!(check_network(ip("::1"), &config), Err(Refusal::NotAllowed));
        assert_eq!(
            check_network(ip("8.8.8.8"), &AccessConfig::default()),
            Ok(())
        );
    }

    #[test]
    fn token_bucket_allows_a_burst_then_the_rate() {
        let table = ClientTable::default();
        let config = rate(5.0);
        let start = Instant::now();
        let client = ip("192.0.2.1");
        // The burst: 5 at once, then refused (slots dropped at once, so
        // only the rate limits).
        for _ in 0..5 {
            assert!(table.admit_at(client, &config, start).is_ok());
        }
        assert_eq!(
            table.admit_at(client, &config, start).err(),
            Some(Refusal::RateLimited)
        );
        // 5/s: one token per 200 ms.
        let later = start + Duration::from_millis(199);
        assert_eq!(
            table.admit_at(client, &config, later).err(),
            Some(Refusal::RateLimited)
        );
        let later = start + Duration::from_millis(201);
        assert!(table.admit_at(client, &config, later).is_ok());
        assert!(table.admit_at(client, &config, later).is_err());
        // Another address has its own bucket.
        assert!(table.admit_at(ip("192.0.2.2"), &config, later).is_ok());
        // A long pause refills to the burst, not beyond.
        let much_later = start + Duration::from_secs(3600);
        for _ in 0..5 {
            assert!(table.admit_at(client, &config, much_later).is_ok());
        }
        assert!(table.admit_at(client, &config, much_later).is_err());
    }

    #[test]
    fn fractional_rates_still_allow_one_connection() {
        let table = ClientTable::default();
        let config = rate(0.5);
        let start = Instant::now();
        let client = ip("192.0.2.1");
        assert!(table.admit_at(client, &config, start).is_ok());
        assert!(table.admit_at(client, &config, start).is_err());
        let later = start + Duration::from_millis(2001);
        assert!(table.admit_at(client, &config, later).is_ok());
    }

    #[test]
    fn connection_limit_counts_open_slots_and_frees_them_on_drop() {
        let table = ClientTable::default();
        let config = AccessConfig {
            max_conns_per_ip: Some(2),
            ..AccessConfig::default()
        };
        let now = Instant::now();
        let first = table.admit_at(ip("198.51.100.7"), &config, now).unwrap();
        // The v4-mapped form is the same client.
        let second = table
            .admit_at(ip("::ffff:198.51.100.7"), &config, now)
            .unwrap();
        assert_eq!(
            table.admit_at(ip("198.51.100.7"), &config, now).err(),
            Some(Refusal::TooManyConnections)
        );
        assert!(table.admit_at(ip("2001:db8::7"), &config, now).is_ok());
        drop(first);
        let third = table.admit_at(ip("198.51.100.7"), &config, now).unwrap();
        drop(second);
        drop(third);
        // No rate limit: an address without open connections is forgotten at once.
        assert!(table.is_empty());
    }

    #[test]
    fn ipv6_clients_count_per_prefix() {
        let table = ClientTable::default();
        let mut config = AccessConfig {
            max_conns_per_ip: Some(1),
            ..AccessConfig::default()
        };
        let now = Instant::now();
        let first = table.admit_at(ip("2001:db8:1:2::7"), &config, now).unwrap();
        // Another address of the same /64 is the same client...
        assert_eq!(
            table
                .admit_at(ip("2001:db8:1:2:ffff::1"), &config, now)
                .err(),
            Some(Refusal::TooManyConnections)
        );
        // ...another /64 is not.
        let other = table.admit_at(ip("2001:db8:1:3::7"), &config, now).unwrap();
        drop((first, other));
        // Per /128 when asked.
        config.per_ip_ipv6_prefix = 128;
        let a = table.admit_at(ip("2001:db8:1:2::7"), &config, now).unwrap();
        let b = table.admit_at(ip("2001:db8:1:2::8"), &config, now).unwrap();
        drop((a, b));
        assert_eq!(client_key(ip("10.1.2.3"), 64), ip("10.1.2.3"));
        assert_eq!(client_key(ip("::ffff:10.1.2.3"), 64), ip("10.1.2.3"));
        assert_eq!(client_key(ip("2001:db8::1"), 0), ip("::"));
    }

    #[test]
    fn full_table_refuses_new_addresses_but_serves_known_ones() {
        let table = ClientTable::with_cap(2);
        let config = AccessConfig {
            max_conns_per_ip: Some(10),
            ..AccessConfig::default()
        };
        let now = Instant::now();
        let a = table.admit_at(ip("10.0.0.1"), &config, now).unwrap();
        let b = table.admit_at(ip("10.0.0.2"), &config, now).unwrap();
        assert_eq!(
            table.admit_at(ip("10.0.0.3"), &config, now).err(),
            Some(Refusal::TableFull)
        );
        let a2 = table.admit_at(ip("10.0.0.1"), &config, now).unwrap();
        assert_eq!(table.len(), 2);
        drop(b);
        assert!(table.admit_at(ip("10.0.0.3"), &config, now).is_ok());
        drop((a, a2));
    }

    #[test]
    fn idle_entries_expire_once_their_bucket_is_full() {
        let table = ClientTable::with_cap(3);
        let config = rate(1.0);
        let start = Instant::now();
        for n in 1..=3 {
            let _slot = table
                .admit_at(ip(&format!("10.0.0.{n}")), &config, start)
                .unwrap();
        }
        // Closed, but their buckets are empty: still tracked, and the table is full.
        assert_eq!(table.len(), 3);
        assert_eq!(
            table.admit_at(ip("10.0.0.4"), &config, start).err(),
            Some(Refusal::TableFull)
        );
        // After the bucket refills (1 s) and a sweep is due, they are gone.
        let later = start + Duration::from_secs(2);
        let _slot = table.admit_at(ip("10.0.0.4"), &config, later).unwrap();
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn an_entry_with_open_connections_never_expires() {
        let table = ClientTable::with_cap(1);
        let config = rate(1.0);
        let start = Instant::now();
        let held = table.admit_at(ip("10.0.0.1"), &config, start).unwrap();
        let later = start + Duration::from_secs(3600);
        assert_eq!(
            table.admit_at(ip("10.0.0.2"), &config, later).err(),
            Some(Refusal::TableFull)
        );
        assert_eq!(table.len(), 1);
        drop(held);
    }

    #[test]
    fn a_datagram_bucket_lets_a_burst_through_then_the_rate() {
        let start = Instant::now();
        let bucket = DatagramBucket::new(4.0, start);
        assert_eq!((0..6).filter(|_| bucket.allow(start)).count(), 4);
        // 4/s: one datagram per 250 ms.
        assert!(!bucket.allow(start + Duration::from_millis(249)));
        assert!(bucket.allow(start + Duration::from_millis(251)));
        assert!(!bucket.allow(start + Duration::from_millis(251)));
        let later = start + Duration::from_secs(60);
        assert!(bucket.is_full(later));
        assert_eq!(
            (0..6).filter(|_| bucket.allow(later)).count(),
            4,
            "no more than the burst"
        );
        let slow = DatagramBucket::new(0.5, start);
        assert!(slow.allow(start) && !slow.allow(start));
        assert!(slow.allow(start + Duration::from_millis(2001)));
    }

    #[test]
    fn sessions_of_one_address_share_its_limits_and_free_them_on_drop() {
        let table = Arc::new(ClientTable::default());
        let config = AccessConfig::default();
        let now = Instant::now();
        let client = ip("192.0.2.9");
        let first = table
            .admit_session(client, &config, Some(2), Some(3.0), now)
            .unwrap();
        let second = table
            .admit_session(client, &config, Some(2), Some(3.0), now)
            .unwrap();
        assert_eq!(
            table
                .admit_session(client, &config, Some(2), Some(3.0), now)
                .err(),
            Some(Refusal::TooManyConnections)
        );
        // Two tokens went to the sessions' first datagrams; one is left,
        // shared by both sessions.
        assert!(first.allow_datagram(now));
        assert!(!second.allow_datagram(now));
        drop(first);
        let third = table.admit_session(client, &config, Some(2), Some(3.0), now);
        assert_eq!(
            third.err(),
            Some(Refusal::RateLimited),
            "a slot, but no token"
        );
        drop(second);
        let much_later = now + Duration::from_secs(10);
        let fourth = table.admit_session(client, &config, Some(2), Some(3.0), much_later);
        assert!(fourth.is_ok());
        drop(fourth);
        // Denied before any of it.
        let denied = AccessConfig {
            deny: nets(&["192.0.2.0/24"]),
            ..AccessConfig::default()
        };
        assert_eq!(
            table.admit_session(client, &denied, None, None, now).err(),
            Some(Refusal::Denied)
        );
        // Without limits nothing is tracked.
        let free = Arc::new(ClientTable::default());
        let _slot = free
            .admit_session(client, &config, None, None, now)
            .unwrap();
        assert!(free.is_empty());
    }

    #[test]
    fn no_per_ip_limit_tracks_nothing() {
        let table = ClientTable::default();
        let _slot = table
            .admit_at(ip("10.0.0.1"), &AccessConfig::default(), Instant::now())
            .unwrap();
        assert!(table.is_empty());
    }
}
