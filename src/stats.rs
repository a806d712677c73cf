//! Counters: what the data path writes and the admin endpoint reads.
//!
//! They sit below both so that neither depends on the other, and they belong
//! to the thing they describe: a listener's [`ListenerStats`] live as long as
//! the listener, a backend's [`BackendStats`] as long as the backend, and a
//! pool's [`PoolStats`] as long as the pool, so a reload never resets them.
//! Every field is a relaxed atomic: counting never takes a lock.
//!
//! [`RateLimit`] counts too: the log lines it holds back. It sits here, low,
//! so that the accept loops and DNS discovery can share it.
//!
//! [`histogram`] holds the distributions (connect time, queue wait,
//! connection duration, bytes per connection), recorded as lock-free as the
//! counters.

pub mod histogram;
pub mod tls;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use histogram::{SizeHistogram, TimeHistogram};

/// Counters of one listener.
#[derive(Debug, Default)]
pub struct ListenerStats {
    /// Client connections accepted, refused ones included.
    pub accepted: AtomicU64,
    /// Client connections refused by access control or a connection limit.
    pub rejected: AtomicU64,
    /// Client connections open now (from accept until closed).
    pub active: AtomicU64,
    /// Clients answered 502: every backend tried failed to connect.
    pub bad_gateway: AtomicU64,
    /// Clients answered 503, by why (indexed by [`Unavailable`]): no
    /// backend to try, or a limit turned them away. Every 503 written is
    /// counted here (a close with `--on-failure close` too), whichever
    /// part of the data path wrote it.
    pub unavailable: [AtomicU64; Unavailable::ALL.len()],
    /// Clients closed for a bad or missing PROXY header (`--accept-proxy`).
    pub proxy_header_errors: AtomicU64,
    /// On a listener with TLS routes: clients closed because no valid
    /// ClientHello came, by reason (`proxy::client_hello`'s `REASONS`:
    /// not TLS, malformed, too large, too slow, gone; see
    /// [`Self::TLS_REJECT_REASONS`]).
    pub tls_rejected: [AtomicU64; 5],
    /// On a listener with TLS routes and no default route: clients whose
    /// ClientHello matched no route (answered `unrecognized_name`).
    pub tls_unmatched: AtomicU64,
    /// On a listener with TLS routes: clients that matched no route and
    /// went to the listener's own backends.
    pub tls_default_route: AtomicU64,
    /// When the listener terminates TLS for its own backends: its
    /// handshakes (a route's are the route's).
    pub tls: Arc<tls::TlsStats>,
    /// Bytes from the client to the backend per connection that reached a
    /// backend, recorded when it closes.
    pub sent_bytes: SizeHistogram,
    /// Bytes from the backend to the client per connection, likewise.
    pub received_bytes: SizeHistogram,
    /// On a UDP listener, its datagrams (where `accepted` and `active`
    /// count sessions, and `rejected` datagrams refused by access control
    /// or a limit).
    pub udp: UdpStats,
}

/// What a UDP listener moved and dropped; all zero on a TCP listener.
/// Written once per batch of datagrams, not per datagram.
#[derive(Debug, Default)]
pub struct UdpStats {
    /// Datagrams from clients forwarded to backends.
    pub datagrams_sent: AtomicU64,
    /// Datagrams from backends forwarded to clients.
    pub datagrams_received: AtomicU64,
    /// Bytes of the datagrams forwarded to backends (payload, without a
    /// PROXY header).
    pub bytes_sent: AtomicU64,
    /// Bytes of the datagrams forwarded to clients.
    pub bytes_received: AtomicU64,
    /// Datagrams dropped, by why (indexed by [`Dropped`]).
    pub dropped: [AtomicU64; Dropped::ALL.len()],
}

/// Why a UDP listener dropped a datagram: the `reason` label of
/// `tcplb_udp_dropped_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dropped {
    /// From a client outside `allow` or inside `deny`.
    Denied,
    /// It would start a session over `max_sessions_per_ip`.
    PerIpSessions,
    /// Over the client's `datagram_rate_per_ip`.
    PerIpRate,
    /// From a new address while the per-IP table is full.
    PerIpTable,
    /// It would start a session over the listener's `max_sessions`.
    MaxSessions,
    /// Larger than `max_datagram_size` (or, with its PROXY header, than
    /// a datagram can be).
    TooLarge,
    /// No backend ready and up to send it to.
    NoBackend,
    /// Every backend tried refused it (ICMP port unreachable).
    Unreachable,
    /// The kernel would not send it to the backend now (its socket buffer
    /// full, or another error).
    SendFailed,
    /// A reply the kernel would not send to the client.
    ReplyFailed,
    /// Out of file descriptors for a new session's socket.
    OutOfDescriptors,
}

impl Dropped {
    /// Every reason, in the order they are reported.
    pub const ALL: [Dropped; 11] = [
        Dropped::Denied,
        Dropped::PerIpSessions,
        Dropped::PerIpRate,
        Dropped::PerIpTable,
        Dropped::MaxSessions,
        Dropped::TooLarge,
        Dropped::NoBackend,
        Dropped::Unreachable,
        Dropped::SendFailed,
        Dropped::ReplyFailed,
        Dropped::OutOfDescriptors,
    ];

    /// The `reason` label value.
    pub fn name(self) -> &'static str {
        match self {
            Dropped::Denied => "denied",
            Dropped::PerIpSessions => "per_ip_sessions",
            Dropped::PerIpRate => "per_ip_rate",
            Dropped::PerIpTable => "per_ip_table_full",
            Dropped::MaxSessions => "max_sessions",
            Dropped::TooLarge => "too_large",
            Dropped::NoBackend => "no_backend",
            Dropped::Unreachable => "backend_unreachable",
            Dropped::SendFailed => "send_failed",
            Dropped::ReplyFailed => "reply_failed",
            Dropped::OutOfDescriptors => "out_of_descriptors",
        }
    }

    /// Access control or a limit refused it (it also counts as `rejected`).
    pub fn is_refusal(self) -> bool {
        matches!(
            self,
            Dropped::Denied
                | Dropped::PerIpSessions
                | Dropped::PerIpRate
                | Dropped::PerIpTable
                | Dropped::MaxSessions
        )
    }
}

impl ListenerStats {
    /// The `reason` label values of `tls_rejected`, in its order.
    pub const TLS_REJECT_REASONS: [&'static str; 5] =
        ["not_tls", "malformed", "too_large", "timeout", "closed"];

    /// Counts an accepted client for as long as the returned guard lives.
    pub fn open_connection(&self) -> ClientConnection<'_> {
        self.accepted.fetch_add(1, Relaxed);
        self.active.fetch_add(1, Relaxed);
        ClientConnection { stats: self }
    }

    /// Counts a connection moved here from the old process of an upgrade
    /// (open, not accepted here) for as long as the returned guard lives.
    pub fn adopt_connection(&self) -> ClientConnection<'_> {
        self.active.fetch_add(1, Relaxed);
        ClientConnection { stats: self }
    }

    pub fn count_rejected(&self) {
        self.rejected.fetch_add(1, Relaxed);
    }

    /// Counts a client answered 503 (or closed instead) for `why`.
    pub fn count_unavailable(&self, why: Unavailable) {
        self.unavailable[why as usize].fetch_add(1, Relaxed);
    }

    /// Records what a connection that reached a backend moved, each way.
    pub fn record_bytes(&self, sent: u64, received: u64) {
        self.sent_bytes.record_value(sent);
        self.received_bytes.record_value(received);
    }
}

/// Why a client was answered 503 (or closed, with `--on-failure close`):
/// the `reason` label of `tcplb_listener_failures_total{code="503"}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unavailable {
    /// No backend ready and up to try.
    NoBackend,
    /// No slot within `--queue-timeout`: under `--max-conns`, or with
    /// every backend at its `maxconn`.
    QueueTimeout,
    /// The client's address already holds `--max-conns-per-ip`.
    PerIpConnections,
    /// The client's address is over `--rate-per-ip`.
    PerIpRate,
    /// The per-IP table is full and the client's address is not in it.
    PerIpTable,
    /// tcplb is out of file descriptors (at accept, or to connect).
    OutOfDescriptors,
}

impl Unavailable {
    /// Every reason, in the order they are reported.
    pub const ALL: [Unavailable; 6] = [
        Unavailable::NoBackend,
        Unavailable::QueueTimeout,
        Unavailable::PerIpConnections,
        Unavailable::PerIpRate,
        Unavailable::PerIpTable,
        Unavailable::OutOfDescriptors,
    ];

    /// The `reason` label value.
    pub fn name(self) -> &'static str {
        match self {
            Unavailable::NoBackend => "no_backend",
            Unavailable::QueueTimeout => "queue_timeout",
            Unavailable::PerIpConnections => "per_ip_connections",
            Unavailable::PerIpRate => "per_ip_rate",
            Unavailable::PerIpTable => "per_ip_table_full",
            Unavailable::OutOfDescriptors => "out_of_descriptors",
        }
    }

    /// A limit turned the client away (overload), rather than a lack of
    /// backends.
    pub fn is_overload(self) -> bool {
        self != Unavailable::NoBackend
    }
}

/// Keeps the listener's `active` right however a client connection ends,
/// panics and cancellation included.
pub struct ClientConnection<'a> {
    stats: &'a ListenerStats,
}

impl Drop for ClientConnection<'_> {
    fn drop(&mut self) {
        self.stats.active.fetch_sub(1, Relaxed);
    }
}

/// Counters of one backend.
#[derive(Debug, Default)]
pub struct BackendStats {
    /// Connections open to this backend now.
    pub active: AtomicU64,
    /// Connections ever established to this backend.
    pub total: AtomicU64,
    /// Connect attempts that failed (refused, timed out, unreachable).
    pub connect_failures: AtomicU64,
    /// Bytes from clients to this backend, counted as they are delivered.
    pub bytes_in: AtomicU64,
    /// Bytes from this backend to clients, counted as they are delivered.
    pub bytes_out: AtomicU64,
    /// Connections closed because nothing moved for the idle timeout.
    pub idle_timeouts: AtomicU64,
    /// Connections closed at the maximum connection age.
    pub max_age_closes: AtomicU64,
    /// Connections closed by the backend's eviction: an operator's drain
    /// deadline passed, or a change of health closed them (those are also
    /// in `health_closes`).
    pub evicted: AtomicU64,
    /// Connections open when a change of health closed them (`on_down`,
    /// `on_backup_up`).
    pub health_closes: AtomicU64,
    /// Duration of the last successful health check, in microseconds.
    pub check_latency_us: AtomicU64,
    /// Time to connect, per attempt that succeeded: from the start of the
    /// attempt until the connection can carry client bytes (the PROXY
    /// header written, with `--send-proxy`). Failed attempts are not in it
    /// (a refusal takes microseconds, a timeout the whole connect timeout:
    /// either would blur the backend's real connect time); they are
    /// `connect_failures`.
    pub connect_time: TimeHistogram,
    /// Time a client this backend took had waited for a slot: under
    /// `--max-conns`, then for a backend under its `maxconn`, over every
    /// attempt (connecting excluded). Recorded when the connection is made.
    pub queue_wait: TimeHistogram,
    /// How long connections to this backend lasted, from connected to
    /// closed.
    pub duration: TimeHistogram,
}

/// Counters of one TLS route; they live as long as a route of that name
/// does, across reloads.
#[derive(Debug, Default)]
pub struct RouteStats {
    /// Clients whose ClientHello chose this route.
    pub connections: AtomicU64,
    /// When the route terminates TLS: its handshakes.
    pub tls: Arc<tls::TlsStats>,
}

/// Changes to one pool's member set, by kind: each change that discovery
/// (the configuration today) brings is counted once, where it is applied.
#[derive(Debug, Default)]
pub struct PoolStats {
    /// Backends that joined the pool.
    pub added: AtomicU64,
    /// Backends that left the pool (their open connections drain).
    pub removed: AtomicU64,
    /// Backends whose weight, connection limit or admin state changed in place.
    pub updated: AtomicU64,
    /// Passive ejections made.
    pub ejections: AtomicU64,
    /// Passive ejections refused because `max_ejection_percent` of the
    /// pool was out already.
    pub ejections_capped: AtomicU64,
    /// With `backend_tls`: handshakes to the pool's backends.
    pub backend_tls: Arc<tls::TlsStats>,
}

/// The control API's counters: requests that changed something, by
/// action, and requests refused, by reason; and the admin endpoint's own
/// connections. Written by the admin endpoint and the runtime (state-file
/// writes), read by `/metrics`.
#[derive(Debug, Default)]
pub struct ControlStats {
    /// Changes applied, indexed like [`ControlStats::ACTIONS`].
    pub changes: [AtomicU64; 9],
    /// Requests refused, indexed like [`ControlStats::REASONS`].
    pub rejected: [AtomicU64; 8],
    /// State-file writes that failed (the change still applied in memory).
    pub state_write_failures: AtomicU64,
    /// The admin endpoint's connections, so that floods and slow clients show.
    pub connections: AdminConnectionStats,
}

impl ControlStats {
    /// The `action` label values.
    pub const ACTIONS: [&'static str; 9] = [
        "drain",
        "maintenance",
        "ready",
        "weight",
        "add",
        "remove",
        "close",
        "ready_on",
        "ready_off",
    ];
    /// The `reason` label values.
    pub const REASONS: [&'static str; 8] = [
        "forbidden",
        "bad_request",
        "not_found",
        "method_not_allowed",
        "conflict",
        "too_large",
        "unavailable",
        "timeout",
    ];

    /// Counts one change of `action` (one of [`Self::ACTIONS`]).
    pub fn count_change(&self, action: &str) {
        if let Some(i) = Self::ACTIONS.iter().position(|a| *a == action) {
            self.changes[i].fetch_add(1, Relaxed);
        }
    }

    /// Counts one refusal for `reason` (one of [`Self::REASONS`]).
    pub fn count_rejected(&self, reason: &str) {
        if let Some(i) = Self::REASONS.iter().position(|r| *r == reason) {
            self.rejected[i].fetch_add(1, Relaxed);
        }
    }
}

/// The admin endpoint's connections (TCP and Unix socket together): how
/// many are open, and why some were closed before they were answered.
#[derive(Debug, Default)]
pub struct AdminConnectionStats {
    /// Connections accepted, refused ones included.
    pub accepted: AtomicU64,
    /// Connections open now.
    pub active: AtomicU64,
    /// Connections closed unanswered, indexed like [`Self::REASONS`].
    pub dropped: [AtomicU64; 4],
    /// Connections that found every main slot answering a request and were
    /// given one of the probe lane's (`/ready` and `/live` only).
    pub probe_lane: AtomicU64,
}

impl AdminConnectionStats {
    /// The `reason` label values: refused because every slot was answering
    /// a request (closed at accept when the probe lane is full too, or
    /// answered 503 on the probe lane for a path other than `/ready` and
    /// `/live`); closed while still silent to make room for a newer
    /// connection; no complete request head in time; the whole connection
    /// (body, answer) not done in time.
    pub const REASONS: [&'static str; 4] = ["over_limit", "evicted", "head_timeout", "timeout"];

    /// Counts one connection closed unanswered for `reason` (one of
    /// [`Self::REASONS`]).
    pub fn count_dropped(&self, reason: &str) {
        if let Some(i) = Self::REASONS.iter().position(|r| *r == reason) {
            self.dropped[i].fetch_add(1, Relaxed);
        }
    }
}

/// Connections moved between the processes of a binary upgrade: what this
/// process handed to its successor, what stayed here and why, what it took
/// over from its predecessor and how long each was paused. Written by the
/// data path and the upgrade's channel, read by `/metrics`.
#[derive(Debug, Default)]
pub struct MoveStats {
    /// Connections handed to the new process (it acknowledged them).
    pub moved_out: AtomicU64,
    /// Connections that stayed in this process while it moved its
    /// connections, by why (indexed by [`NotMoved`]).
    pub not_moved: [AtomicU64; NotMoved::ALL.len()],
    /// Connections taken over from the old process.
    pub moved_in: AtomicU64,
    /// Connections the old process offered that this one refused, by why
    /// (indexed by [`Refusal`]).
    pub refused: [AtomicU64; Refusal::ALL.len()],
    /// How long each connection taken over was paused: from when the old
    /// process stopped piping it to when this one started.
    pub pause: TimeHistogram,
}

impl MoveStats {
    pub fn count_not_moved(&self, why: NotMoved) {
        self.not_moved[why as usize].fetch_add(1, Relaxed);
    }

    pub fn count_refused(&self, why: Refusal) {
        self.refused[why as usize].fetch_add(1, Relaxed);
    }
}

/// Why a connection stayed in the old process of an upgrade: the `reason`
/// label of `tcplb_upgrade_connections_not_moved_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotMoved {
    /// Its TLS state lives in this process (terminated or originated
    /// TLS): it drains here.
    Tls,
    /// It was still connecting or in setup when the move went round (it
    /// offers itself once it pipes, and may move then).
    Setup,
    /// The new process refused it (it has no such listener or route, or it
    /// is shutting down); see its `tcplb_upgrade_connections_refused_total`.
    Refused,
    /// The new process did not acknowledge it: it died, or the channel to
    /// it failed.
    Failed,
}

impl NotMoved {
    pub const ALL: [NotMoved; 4] = [
        NotMoved::Tls,
        NotMoved::Setup,
        NotMoved::Refused,
        NotMoved::Failed,
    ];

    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            NotMoved::Tls => "tls",
            NotMoved::Setup => "setup",
            NotMoved::Refused => "refused",
            NotMoved::Failed => "failed",
        }
    }
}

/// Why the new process of an upgrade refused a connection the old one
/// offered (it stays there): the `reason` label of
/// `tcplb_upgrade_connections_refused_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The new configuration has no listener bound where it came in.
    UnknownListener,
    /// The new configuration has no such TLS route on that listener.
    UnknownRoute,
    /// Its pool no longer has its backend (by name and address).
    UnknownBackend,
    /// This process is shutting down (or handing over itself).
    ShuttingDown,
    /// Its description or its sockets did not arrive whole.
    Malformed,
}

impl Refusal {
    pub const ALL: [Refusal; 5] = [
        Refusal::UnknownListener,
        Refusal::UnknownRoute,
        Refusal::UnknownBackend,
        Refusal::ShuttingDown,
        Refusal::Malformed,
    ];

    /// The label value, also what the channel says.
    pub fn name(self) -> &'static str {
        match self {
            Refusal::UnknownListener => "unknown_listener",
            Refusal::UnknownRoute => "unknown_route",
            Refusal::UnknownBackend => "unknown_backend",
            Refusal::ShuttingDown => "shutting_down",
            Refusal::Malformed => "malformed",
        }
    }

    /// The refusal named `name`, as [`Refusal::name`] writes it.
    pub fn from_name(name: &str) -> Option<Refusal> {
        Refusal::ALL.into_iter().find(|r| r.name() == name)
    }
}

/// The access log's losses: `tcplb_access_log_dropped_total` and
/// `tcplb_access_log_write_errors_total`. Written by the data path (a full
/// queue) and the log's writer thread, read by `/metrics`.
#[derive(Debug, Default)]
pub struct AccessLogStats {
    /// Records dropped because the writer's queue was full.
    pub dropped: AtomicU64,
    /// Records missing from the destination because writing them failed
    /// (a line the disk cut short is cut off, so counted here too).
    pub write_errors: AtomicU64,
}

/// The end of a drain at shutdown: `tcplb_drain_spread_closed_total`.
/// Written by the runtime's drain, read by `/metrics` (which answers until
/// the drain is over).
#[derive(Debug, Default)]
pub struct DrainStats {
    /// Connections still open when the drain's last window began, closed
    /// one after another over that window.
    pub spread_closed: AtomicU64,
    /// Connections moved on an upgrade, out and in, and those not moved.
    pub moves: Arc<MoveStats>,
}

/// How connections spread over the worker threads: each worker's open
/// connections (what accepting compares to hand a connection to a less
/// loaded worker), and the connections handed over.
#[derive(Debug)]
pub struct WorkerStats {
    /// Connections open on each worker, from accept (or hand-over) to
    /// close, one cache line each: a worker writes only its own.
    open: Box<[OpenCount]>,
    /// Connections served by another worker than the one that accepted them.
    pub handoffs: AtomicU64,
}

impl Default for WorkerStats {
    /// One worker.
    fn default() -> Self {
        WorkerStats::new(1)
    }
}

/// One worker's open connections, alone on its cache line.
#[derive(Debug, Default)]
#[repr(align(64))]
struct OpenCount(AtomicU64);

impl WorkerStats {
    pub fn new(workers: usize) -> Self {
        WorkerStats {
            open: (0..workers.max(1)).map(|_| OpenCount::default()).collect(),
            handoffs: AtomicU64::new(0),
        }
    }

    /// How many workers there are.
    pub fn workers(&self) -> usize {
        self.open.len()
    }

    /// Connections open on `worker` now.
    pub fn open(&self, worker: usize) -> u64 {
        self.open.get(worker).map_or(0, |c| c.0.load(Relaxed))
    }

    /// Counts a connection open on `worker` until the guard drops.
    pub fn opened(self: &Arc<Self>, worker: usize) -> WorkerConnection {
        let worker = worker.min(self.open.len() - 1);
        self.open[worker].0.fetch_add(1, Relaxed);
        WorkerConnection {
            stats: self.clone(),
            worker,
        }
    }
}

/// A connection counted open on its worker; uncounted on drop.
#[derive(Debug)]
pub struct WorkerConnection {
    /// Where the count is.
    stats: Arc<WorkerStats>,
    /// The worker serving the connection.
    worker: usize,
}

impl Drop for WorkerConnection {
    fn drop(&mut self) {
        self.stats.open[self.worker].0.fetch_sub(1, Relaxed);
    }
}

/// Lets an event through at most once per period and counts the rest.
pub struct RateLimit {
    /// The shortest time between two reports.
    period: Duration,
    /// When the last report was let through.
    last: Option<Instant>,
    /// Events held back since then.
    suppressed: u64,
}

impl RateLimit {
    pub const fn new(period: Duration) -> Self {
        RateLimit {
            period,
            last: None,
            suppressed: 0,
        }
    }

    /// The shortest time between two reports.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// `Some(n)` when the event may be reported, with `n` events held back
    /// since the last report; `None` when it should be held back.
    pub fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < self.period)
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// Lookups of one discovered backend name, by result: the
/// `tcplb_dns_resolutions_total` counter.
#[derive(Debug, Default)]
pub struct ResolutionStats {
    /// An answer with at least one address: the members now.
    pub ok: AtomicU64,
    /// The name does not exist (NXDOMAIN).
    pub nxdomain: AtomicU64,
    /// The server failed (SERVFAIL).
    pub servfail: AtomicU64,
    /// The name exists but has no usable record (no A/AAAA, no SRV, or SRV
    /// targets without addresses).
    pub empty: AtomicU64,
    /// No answer within the lookup's deadline.
    pub timeout: AtomicU64,
    /// Anything else: refused, unreachable server, malformed answer.
    pub error: AtomicU64,
}

impl ResolutionStats {
    /// Each result with its count, in the order the metrics list them.
    pub fn by_result(&self) -> [(&'static str, u64); 6] {
        [
            ("ok", self.ok.load(Relaxed)),
            ("nxdomain", self.nxdomain.load(Relaxed)),
            ("servfail", self.servfail.load(Relaxed)),
            ("empty", self.empty.load(Relaxed)),
            ("timeout", self.timeout.load(Relaxed)),
            ("error", self.error.load(Relaxed)),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_reports_once_per_period_and_counts_the_rest() {
        let mut limit = RateLimit::new(Duration::from_secs(3600));
        assert_eq!(limit.allow(), Some(0));
        assert_eq!(limit.allow(), None);
        assert_eq!(limit.allow(), None);
        limit.last = Some(Instant::now() - Duration::from_secs(7200));
        assert_eq!(limit.allow(), Some(2));
    }

    #[test]
    fn listener_active_follows_connection_guards() {
        let stats = ListenerStats::default();
        let first = stats.open_connection();
        let second = stats.open_connection();
        assert_eq!(stats.active.load(Relaxed), 2);
        drop(first);
        drop(second);
        assert_eq!(stats.active.load(Relaxed), 0);
        assert_eq!(stats.accepted.load(Relaxed), 2);
        stats.count_rejected();
        assert_eq!(stats.rejected.load(Relaxed), 1);
    }

    #[test]
    fn each_503_reason_has_its_own_counter_and_name() {
        let stats = ListenerStats::default();
        for (i, why) in Unavailable::ALL.into_iter().enumerate() {
            assert_eq!(why as usize, i, "ALL is in declaration order");
            for _ in 0..=i {
                stats.count_unavailable(why);
            }
        }
        let counts: Vec<u64> = stats.unavailable.iter().map(|c| c.load(Relaxed)).collect();
        assert_eq!(counts, [1, 2, 3, 4, 5, 6]);
        let names: std::collections::HashSet<_> = Unavailable::ALL.map(Unavailable::name).into();
        assert_eq!(names.len(), Unavailable::ALL.len());
        assert!(!Unavailable::NoBackend.is_overload());
        assert!(Unavailable::QueueTimeout.is_overload());
    }
}
