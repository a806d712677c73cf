//! One backend server as a pool knows it: where it is, how large a share it
//! takes, what the operator wants of it, what the health checks say of it,
//! and its counters.
//!
//! Two states are kept apart, as in pingora-load-balancing: the admin state
//! ([`AdminState`], set by an operator) and the health ([`Health`], set by
//! checks and failed connects). The backend's agent, when it has one, adds
//! its own word to both ([`AgentState`]; the operator's word wins). A
//! backend is given new connections only when it is both ready and up,
//! below its `maxconn`, and not ejected by passive health. Everything the
//! data path reads is an atomic: no lock here.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use crate::config::{AdminState, BackendSpec};
use crate::pool::health::agent::AgentState;
use crate::pool::health::{Health, millis_since_epoch};
use crate::stats::BackendStats;

/// Slow start never gives a backend less than this share of its weight
/// (Envoy's `min_weight_percent`), so it is tried at all.
pub const SLOW_START_FLOOR: f64 = 0.1;

pub struct Backend {
    /// The `HOST:PORT` text as configured: how logs and metrics name it.
    name: String,
    addr: SocketAddr,
    /// Relative share of connections as the operator set it (configured,
    /// or through the API); changes in place on reload.
    weight: AtomicU32,
    /// Most connections open at once; 0 is unlimited.
    max_conns: AtomicU32,
    /// The operator's [`AdminState`], as its discriminant.
    admin_state: AtomicU8,
    /// Used only while no primary backend is usable.
    backup: AtomicBool,
    /// Where checks go instead of `addr`: (`check_addr`, `check_port`).
    /// Read once per check round, so a plain lock.
    check: Mutex<(Option<IpAddr>, Option<u16>)>,
    /// When it last became eligible again, in ms since the health epoch;
    /// 0 when it is not ramping up (slow start).
    eligible_since_ms: AtomicU64,
    /// Cancelled when an operator's drain deadline passes, closing the
    /// connections still open; replaced by a fresh one when the backend is
    /// ready again. Each connection loads it once, before piping.
    evict: ArcSwap<CancellationToken>,
    /// When an operator's drain ends by closing what is left, in ms since
    /// the Unix epoch; 0 when no deadline is set.
    drain_deadline_ms: AtomicU64,
    /// The configured name DNS discovery found it under; `None` for a
    /// backend configured by address. Part of its identity: the same
    /// address found another way is another backend.
    source: Option<String>,
    /// What checks and failed connects say; never touched by the operator.
    pub health: Health,
    /// What the backend's agent says (nothing, without an agent check).
    pub agent: AgentState,
    pub stats: BackendStats,
}

impl Backend {
    /// A backend starts UP: it is given the benefit of the doubt until a
    /// probe or a connection says otherwise.
    pub fn new(spec: &BackendSpec) -> Self {
        Backend {
            name: spec.name.clone(),
            addr: spec.addr,
            weight: AtomicU32::new(spec.weight),
            max_conns: AtomicU32::new(spec.max_conns.unwrap_or(0)),
            admin_state: AtomicU8::new(spec.admin_state as u8),
            backup: AtomicBool::new(spec.backup),
            check: Mutex::new((spec.check_addr, spec.check_port)),
            eligible_since_ms: AtomicU64::new(0),
            evict: ArcSwap::from_pointee(CancellationToken::new()),
            drain_deadline_ms: AtomicU64::new(0),
            source: spec.source.clone(),
            health: Health::default(),
            agent: AgentState::default(),
            stats: BackendStats::default(),
        }
    }

    /// Whether `spec` describes this backend (same name, same address, found
    /// the same way); its weight, limit and admin state may differ.
    pub fn is(&self, spec: &BackendSpec) -> bool {
        self.name == spec.name && self.addr == spec.addr && self.source == spec.source
    }

    /// Takes the weight, limit and admin state of `spec` (which [`is`](Self::is)
    /// this backend). Returns what changed, as "weight 1 -> 3" parts.
    pub fn update(&self, spec: &BackendSpec) -> Vec<String> {
        let mut changes = Vec::new();
        let old = self.weight.swap(spec.weight, Relaxed);
        if old != spec.weight {
            changes.push(format!("weight {old} -> {}", spec.weight));
        }
        let max = spec.max_conns.unwrap_or(0);
        let old = self.max_conns.swap(max, Relaxed);
        if old != max {
            let show = |n: u32| {
                if n == 0 {
                    "unlimited".to_string()
                } else {
                    n.to_string()
                }
            };
            changes.push(format!("maxconn {} -> {}", show(old), show(max)));
        }
        let old = self.admin_state();
        self.admin_state.store(spec.admin_state as u8, Relaxed);
        if old != spec.admin_state {
            changes.push(format!("state {old} -> {}", spec.admin_state));
            if spec.admin_state == AdminState::Ready {
                self.became_eligible();
                // Back in rotation: no deadline, and connections from now
                // on are not closed by an earlier one.
                self.evict.store(Arc::new(CancellationToken::new()));
                self.set_drain_deadline(None);
            }
        }
        if self.backup.swap(spec.backup, Relaxed) != spec.backup {
            changes.push(format!("backup {} -> {}", !spec.backup, spec.backup));
        }
        let check = (spec.check_addr, spec.check_port);
        let mut current = self.check.lock().unwrap_or_else(|e| e.into_inner());
        if *current != check {
            *current = check;
            changes.push("check target changed".to_string());
        }
        changes
    }

    /// What closes this backend's connections when an operator's drain
    /// deadline passes: a connection takes it once, before piping.
    pub fn eviction(&self) -> CancellationToken {
        CancellationToken::clone(&self.evict.load())
    }

    /// Closes every connection open to this backend now (that took the
    /// current [`eviction`](Self::eviction) token).
    pub fn evict(&self) {
        self.evict.load().cancel();
    }

    /// Closes every connection open to this backend now, for a change of
    /// health (`on_down`, `on_backup_up`): unlike an operator's drain
    /// deadline, connections made from now on are not closed with them
    /// (a backend back up, or picked under panic, keeps its new ones).
    /// Returns how many were open.
    pub fn close_connections(&self) -> u64 {
        let open = self.active();
        let old = self.evict.swap(Arc::new(CancellationToken::new()));
        old.cancel();
        self.stats.health_closes.fetch_add(open, Relaxed);
        open
    }

    /// When an operator's drain of this backend closes what is left.
    pub fn drain_deadline(&self) -> Option<SystemTime> {
        match self.drain_deadline_ms.load(Relaxed) {
            0 => None,
            ms => Some(UNIX_EPOCH + Duration::from_millis(ms)),
        }
    }

    /// Records (or with `None` clears) the drain deadline, for reporting.
    pub fn set_drain_deadline(&self, deadline: Option<SystemTime>) {
        let ms = deadline
            .and_then(|d| d.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| {
                u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
            });
        self.drain_deadline_ms.store(ms, Relaxed);
    }

    /// Where health checks of this backend go, given the listener-wide
    /// check port (see [`BackendSpec::check_target`]).
    pub fn check_target(&self, listener_port: Option<u16>) -> SocketAddr {
        let (addr, port) = *self.check.lock().unwrap_or_else(|e| e.into_inner());
        SocketAddr::new(
            addr.unwrap_or(self.addr.ip()),
            port.or(listener_port).unwrap_or(self.addr.port()),
        )
    }

    pub fn is_backup(&self) -> bool {
        self.backup.load(Relaxed)
    }

    /// It just became eligible again (recovered, added, back to ready):
    /// slow start ramps its share from here.
    pub fn became_eligible(&self) {
        self.eligible_since_ms
            .store(millis_since_epoch(Instant::now()), Relaxed);
    }

    /// The share of its weight it should take now, under a slow start of
    /// `window`: from [`SLOW_START_FLOOR`] up to 1 linearly (Envoy's formula
    /// with aggression 1). 1 when not ramping; no clock read then.
    pub fn ramp(&self, window: Option<Duration>) -> f64 {
        let since = self.eligible_since_ms.load(Relaxed);
        let Some(window) = window.filter(|_| since != 0) else {
            return 1.0;
        };
        let elapsed_ms = millis_since_epoch(Instant::now()).saturating_sub(since);
        let window_ms = window.as_millis().max(1) as u64;
        if elapsed_ms >= window_ms {
            // Done ramping: later picks skip the clock read.
            self.eligible_since_ms.store(0, Relaxed);
            return 1.0;
        }
        (elapsed_ms as f64 / window_ms as f64).max(SLOW_START_FLOOR)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The configured name DNS discovery found it under, if it did.
    pub fn source(&self) -> Option<&str> {
        self.source.as_deref()
    }

    /// The weight selection uses: the operator's, times the agent's share
    /// (at least 1; a 0 % share takes the backend out instead, see
    /// [`Self::state`]).
    pub fn weight(&self) -> u32 {
        let configured = self.weight.load(Relaxed);
        let percent = self.agent.weight_percent();
        if percent == 100 {
            return configured;
        }
        let scaled = u64::from(configured) * u64::from(percent) / 100;
        u32::try_from(scaled).unwrap_or(u32::MAX).max(1)
    }

    /// The weight the operator set (configured, or through the API).
    pub fn configured_weight(&self) -> u32 {
        self.weight.load(Relaxed)
    }

    /// The connection limit: the operator's, or the agent's `maxconn` when
    /// lower; `None` is unlimited.
    pub fn max_conns(&self) -> Option<u32> {
        let own = Some(self.max_conns.load(Relaxed)).filter(|&n| n > 0);
        match (own, self.agent.max_conns()) {
            (Some(own), Some(agent)) => Some(own.min(agent)),
            (own, agent) => own.or(agent),
        }
    }

    /// The operator's wish (configured, or through the API), apart from
    /// what the agent says.
    pub fn admin_state(&self) -> AdminState {
        AdminState::from_discriminant(self.admin_state.load(Relaxed))
    }

    /// The state in force: the operator's `drain` or `maintenance` wins;
    /// while the operator says ready, the agent's `drain` or `maint` (or a
    /// 0 % weight, as HAProxy's drain) applies.
    pub fn state(&self) -> AdminState {
        match self.admin_state() {
            AdminState::Ready if self.agent.weight_percent() == 0 => match self.agent.state() {
                AdminState::Maintenance => AdminState::Maintenance,
                _ => AdminState::Drain,
            },
            AdminState::Ready => self.agent.state(),
            operator => operator,
        }
    }

    /// The operator, and the agent if any, want it in rotation.
    pub fn is_ready(&self) -> bool {
        self.state() == AdminState::Ready
    }

    /// The checks say it is alive, and its agent does not say it is down.
    pub fn is_up(&self) -> bool {
        self.health.is_up() && !self.agent.says_down()
    }

    pub fn active(&self) -> u64 {
        self.stats.active.load(Relaxed)
    }

    /// Ready, up and not ejected: it could take a connection if it had room.
    pub fn is_usable(&self) -> bool {
        self.is_ready() && self.is_up() && !self.is_failing()
    }

    /// Whether a new connection may be sent here now.
    pub fn is_available(&self) -> bool {
        self.is_usable() && !self.is_full()
    }

    /// At its `maxconn` limit.
    pub fn is_full(&self) -> bool {
        self.max_conns()
            .is_some_and(|max| self.active() >= u64::from(max))
    }

    /// Taken out by passive health (`--max-fails`) for now.
    pub fn is_failing(&self) -> bool {
        self.health.is_ejected()
    }

    /// Counts a connection for as long as the returned guard lives.
    pub fn open_connection(&self) -> ActiveConnection<&Backend> {
        self.stats.total.fetch_add(1, Relaxed);
        self.adopt_connection(Duration::ZERO)
    }

    /// Counts a connection made `age` ago by another process (it moved
    /// here with a binary upgrade) for as long as the returned guard
    /// lives: open against this backend's limit, not a new one in
    /// `total`, its duration the whole connection's.
    pub fn adopt_connection(&self, age: Duration) -> ActiveConnection<&Backend> {
        ActiveConnection::open(self, age)
    }

    /// Counts a UDP session (a connection to the pool: `active`, least-conn
    /// and `maxconn` count sessions) for as long as the returned guard
    /// lives; it holds the backend, as a session outlives any borrow.
    pub fn open_session(self: &Arc<Self>) -> ActiveConnection<Arc<Backend>> {
        self.stats.total.fetch_add(1, Relaxed);
        ActiveConnection::open(self.clone(), Duration::ZERO)
    }
}

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backend")
            .field("name", &self.name)
            .field("state", &self.admin_state())
            .field("up", &self.is_up())
            .field("active", &self.active())
            .finish()
    }
}

/// How logs name a backend: its name, and for a discovered one the name
/// it was found under, e.g. `10.0.0.7:5432 (db.example:5432)`.
impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        match &self.source {
            Some(source) => write!(f, " ({source})"),
            None => Ok(()),
        }
    }
}

/// Keeps `active` right however a connection ends, panics and
/// cancellation included, and records how long it lasted.
pub struct ActiveConnection<B: Deref<Target = Backend>> {
    /// Whose connection it is.
    backend: B,
    /// When it was made: its duration is measured from here.
    opened: Instant,
}

impl<B: Deref<Target = Backend>> ActiveConnection<B> {
    /// Counts `backend`'s connection (made `age` ago) as open.
    fn open(backend: B, age: Duration) -> Self {
        backend.stats.active.fetch_add(1, Relaxed);
        let now = Instant::now();
        ActiveConnection {
            backend,
            opened: now.checked_sub(age).unwrap_or(now),
        }
    }
}

impl ActiveConnection<&Backend> {
    /// The connection moved to another process, which goes on counting
    /// it (and records its duration when it ends): uncounted here only.
    pub fn moved(self) {
        self.backend.stats.active.fetch_sub(1, Relaxed);
        std::mem::forget(self);
    }
}

impl<B: Deref<Target = Backend>> Drop for ActiveConnection<B> {
    fn drop(&mut self) {
        self.backend.stats.active.fetch_sub(1, Relaxed);
        self.backend.stats.duration.record(self.opened.elapsed());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_backend;

    #[test]
    fn max_conns_makes_a_backend_unavailable_while_full() {
        let mut spec = parse_backend("127.0.0.1:9").unwrap();
        spec.max_conns = Some(1);
        let b = Backend::new(&spec);
        let guard = b.open_connection();
        assert!(!b.is_available());
        drop(guard);
        assert!(b.is_available());
        assert_eq!(b.stats.total.load(Relaxed), 1);
    }

    #[test]
    fn admin_state_and_health_are_separate_and_both_must_allow() {
        let mut spec = parse_backend("127.0.0.1:9").unwrap();
        let b = Backend::new(&spec);
        assert!(b.is_ready() && b.is_up() && b.is_available());

        spec.admin_state = AdminState::Drain;
        assert_eq!(b.update(&spec), ["state ready -> drain"]);
        assert!(b.is_up(), "draining says nothing about health");
        assert!(!b.is_available());

        spec.admin_state = AdminState::Ready;
        b.update(&spec);
        assert!(b.health.record_failure(1).is_some());
        assert!(
            b.is_ready(),
            "a failed check says nothing about the operator's wish"
        );
        assert!(!b.is_available());
    }

    #[test]
    fn updates_report_what_changed_and_keep_counters() {
        let mut spec = parse_backend("127.0.0.1:9").unwrap();
        let b = Backend::new(&spec);
        let _open = b.open_connection();
        assert!(b.update(&spec).is_empty());
        spec.weight = 3;
        spec.max_conns = Some(10);
        assert_eq!(
            b.update(&spec),
            ["weight 1 -> 3", "maxconn unlimited -> 10"]
        );
        assert_eq!((b.weight(), b.max_conns(), b.active()), (3, Some(10), 1));
        assert!(b.is(&spec));
        spec.name = "localhost:9".into();
        assert!(!b.is(&spec), "another name is another backend");
    }

    #[test]
    fn slow_start_ramps_from_the_floor_to_full_and_only_when_asked() {
        let mut spec = parse_backend("127.0.0.1:9").unwrap();
        let b = Backend::new(&spec);
        let window = Some(Duration::from_secs(3600));
        assert_eq!(b.ramp(window), 1.0, "a first member does not ramp");
        b.became_eligible();
        let share = b.ramp(window);
        assert!((SLOW_START_FLOOR..0.2).contains(&share), "{share}");
        assert_eq!(b.ramp(None), 1.0, "no slow start configured");
        // Back to ready after maintenance starts a ramp too.
        let c = Backend::new(&spec);
        spec.admin_state = AdminState::Maintenance;
        c.update(&spec);
        assert_eq!(c.ramp(window), 1.0);
        spec.admin_state = AdminState::Ready;
        c.update(&spec);
        assert!(c.ramp(window) < 0.2);
        // A short window is over at once.
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(c.ramp(Some(Duration::from_millis(1))), 1.0);
        assert_eq!(c.ramp(window), 1.0, "finished ramps are forgotten");
    }

    #[test]
    fn eviction_closes_only_until_the_backend_is_ready_again() {
        let mut spec = parse_backend("127.0.0.1:9").unwrap();
        let b = Backend::new(&spec);
        let open = b.eviction();
        spec.admin_state = AdminState::Drain;
        b.update(&spec);
        let deadline = SystemTime::now() + Duration::from_secs(60);
        b.set_drain_deadline(Some(deadline));
        assert!(b.drain_deadline().is_some());
        b.evict();
        assert!(open.is_cancelled(), "open connections are told to close");
        assert!(b.eviction().is_cancelled(), "late ones too, while draining");
        spec.admin_state = AdminState::Ready;
        b.update(&spec);
        assert!(!b.eviction().is_cancelled(), "ready again: a fresh token");
        assert_eq!(b.drain_deadline(), None);
    }

    #[test]
    fn checks_go_where_the_spec_says() {
        let mut spec = parse_backend("127.0.0.1:9").unwrap();
        let b = Backend::new(&spec);
        assert_eq!(b.check_target(None), "127.0.0.1:9".parse().unwrap());
        assert_eq!(
            b.check_target(Some(8080)),
            "127.0.0.1:8080".parse().unwrap()
        );
        spec.check_addr = Some("127.0.0.2".parse().unwrap());
        spec.check_port = Some(81);
        assert_eq!(b.update(&spec), ["check target changed"]);
        assert_eq!(b.check_target(Some(8080)), "127.0.0.2:81".parse().unwrap());
        assert_eq!(spec.check_target(Some(8080)), b.check_target(Some(8080)));
    }
}
