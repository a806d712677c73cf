//! Configuration: the plain model of what one tcplb process should do, and
//! the two ways an operator writes it down, the command line ([`cli`]) and
//! the TOML file ([`file`]).
//!
//! It depends on no other part of tcplb: the rest of the program reads this
//! model, never the other way round. Everything is validated here, before
//! anything binds, so a typo is a clear start-up error naming the bad value
//! rather than a surprise at run time.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;

pub mod cli;
pub mod file;
pub mod health;
mod parse;
pub mod tls;
pub mod udp;

pub use health::{
    AGENT_INTERVAL, AgentConfig, CheckConfig, ExecCheck, Expect, HealthConfig, HttpCheck, Match,
    OnHealthChange, StatusSet, Step, UdpCheck,
};
pub use udp::{Protocol, UdpConfig};

pub use parse::{
    SRV_PREFIX, parse_backend, parse_backend_list, parse_balance_factor, parse_duration,
    parse_escaped, parse_keepalive, parse_listen, parse_rate, parse_resolver, parse_user_timeout,
    resolve,
};
pub use tls::{
    BackendTlsConfig, CertificatePaths, ClientAllowList, ClientAuthConfig, ClientAuthMode,
    TlsConfig, TlsVersion, TrustAnchors,
};

/// Checks a listener's `name` (`--name`, the file's `name` key): the
/// control API puts it in a URL path segment, so it is non-empty, at most
/// 128 characters, with no `/` and no control characters.
pub fn check_pool_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.chars().count() > 128 {
        return Err(format!("bad name {name:?}: expected 1 to 128 characters"));
    }
    if name.chars().any(|c| c == '/' || c.is_control()) {
        return Err(format!(
            "bad name {name:?}: no `/` or control characters allowed"
        ));
    }
    Ok(())
}

/// How long a client of a listener with routes may take to send its
/// ClientHello, by default (nginx's `preread_timeout` is 30 s; a real
/// client sends it at once).
pub const TLS_INSPECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The demo backends, used when no `--backend` is given.
pub const DEFAULT_BACKENDS: &[&str] = &["127.0.0.1:8081", "127.0.0.1:8082", "127.0.0.1:8083"];

/// One backend as the operator wrote it, resolved to an address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendSpec {
    /// The `HOST:PORT` text as given, used in logs and metrics.
    pub name: String,
    /// Where to connect: `name` resolved once, at load time.
    pub addr: SocketAddr,
    /// Relative share of connections (round-robin, least-conn, hash).
    pub weight: u32,
    /// Most connections this backend may hold at once; `None` is unlimited.
    pub max_conns: Option<u32>,
    /// What the operator wants of it; `Ready` unless the file says otherwise.
    pub admin_state: AdminState,
    /// A backup is given connections only while no primary is eligible.
    pub backup: bool,
    /// Health checks go to this address instead of the backend's own IP
    /// (HAProxy's `addr`), for checks served beside the traffic port.
    pub check_addr: Option<IpAddr>,
    /// Health checks go to this port instead of the backend's (or the
    /// listener's `health.port`).
    pub check_port: Option<u16>,
    /// For a member found by DNS discovery: the backend as configured
    /// (`db.example:5432`, `srv:_pg._tcp.example`) that it was found under.
    /// `None` for a backend as the operator wrote it.
    pub source: Option<String>,
}

impl BackendSpec {
    /// Where health checks of this backend go: `check_addr` and
    /// `check_port` when set, else the listener-wide `port`, else the
    /// backend's own address.
    pub fn check_target(&self, listener_port: Option<u16>) -> SocketAddr {
        let ip = self.check_addr.unwrap_or(self.addr.ip());
        let port = self
            .check_port
            .or(listener_port)
            .unwrap_or(self.addr.port());
        SocketAddr::new(ip, port)
    }
}

/// What DNS discovery looks up for a backend configured by name rather
/// than by address (see `pool::discovery::dns`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DnsName {
    /// `HOST:PORT`: the A records of `host` (its AAAA records when it has no
    /// A record), each address on `port`.
    Host { host: String, port: u16 },
    /// `srv:NAME`: the SRV records of `NAME`; ports and weights come from
    /// the records, addresses from their targets' A (or AAAA) records.
    Srv(String),
}

impl BackendSpec {
    /// The name DNS discovery keeps current for this backend, when it was
    /// configured by name (`db.example:5432`, `srv:_pg._tcp.example`).
    /// `None` for an IP address, and for members discovery already found.
    pub fn dns_name(&self) -> Option<DnsName> {
        if self.source.is_some() {
            return None;
        }
        if let Some(name) = self.name.strip_prefix(SRV_PREFIX) {
            return Some(DnsName::Srv(name.to_string()));
        }
        let (host, port) = self.name.rsplit_once(':')?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.parse::<IpAddr>().is_ok() {
            return None;
        }
        Some(DnsName::Host {
            host: host.to_string(),
            port: port.parse().ok()?,
        })
    }
}

/// How often DNS discovery looks a backend name up again.
///
/// Defaults: every 5 s (Envoy's `dns_refresh_rate`), sooner when the answer's
/// TTL is shorter, but never sooner than 1 s after the last lookup, since
/// Consul answers with TTL 0 (HAProxy's resolvers also ask every second).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResolveConfig {
    /// The longest time between two lookups of a name; a longer TTL is cut
    /// to this, so a changed record is seen within it. Failed lookups are
    /// retried after this long.
    pub interval: Duration,
    /// The shortest time between two lookups of a name, however short the
    /// TTL (0 included). When longer than `interval`, it wins.
    pub ttl_min: Duration,
}

impl Default for ResolveConfig {
    fn default() -> Self {
        ResolveConfig {
            interval: Duration::from_secs(5),
            ttl_min: Duration::from_secs(1),
        }
    }
}

/// What an operator wants of a backend, apart from what health checks say
/// of it: only a `Ready` backend is given new connections.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AdminState {
    /// In rotation (when its health checks pass).
    #[default]
    Ready,
    /// Out of rotation for new connections; open ones finish. Still checked.
    Drain,
    /// Out of rotation and not checked: the operator is working on it.
    Maintenance,
}

impl AdminState {
    /// The state whose discriminant (`as u8`) is `x`, for states kept in
    /// an atomic; an unknown value is `Ready`.
    pub fn from_discriminant(x: u8) -> AdminState {
        match x {
            x if x == AdminState::Drain as u8 => AdminState::Drain,
            x if x == AdminState::Maintenance as u8 => AdminState::Maintenance,
            _ => AdminState::Ready,
        }
    }
}

impl FromStr for AdminState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ready" => Ok(AdminState::Ready),
            "drain" => Ok(AdminState::Drain),
            "maintenance" => Ok(AdminState::Maintenance),
            other => Err(format!(
                "unknown backend state {other:?}: use ready, drain or maintenance"
            )),
        }
    }
}

impl fmt::Display for AdminState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AdminState::Ready => "ready",
            AdminState::Drain => "drain",
            AdminState::Maintenance => "maintenance",
        })
    }
}

impl fmt::Display for BackendSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// PROXY protocol version (HAProxy's spec): v1 is text, v2 binary.
/// Its names are clap's (`ValueEnum`), as for [`StrategyKind`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProxyVersion {
    #[value(name = "v1", alias = "1")]
    V1,
    #[value(name = "v2", alias = "2")]
    V2,
}

impl FromStr for ProxyVersion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_named(s, "PROXY protocol version")
    }
}

/// An IPv4 or IPv6 network such as `10.0.0.0/8` or `::1/128`; a bare
/// address is a single host (/32 or /128).
///
/// A thin wrapper over [`ipnet::IpNet`], the ecosystem's network type, for
/// the two things tcplb needs on top of it: errors that name the bad value
/// and say what is expected, and matching IPv4-mapped IPv6 clients against
/// IPv4 networks. Host bits are cleared (`10.1.2.3/8` is `10.0.0.0/8`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Network(IpNet);

impl Network {
    /// Whether `ip` is in this network. An IPv4 client on a dual-stack
    /// socket shows up as `::ffff:a.b.c.d` and counts as its IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.0.contains(&ip)
    }

    /// The network as ipnet's type, e.g. for its prefix length.
    pub fn ipnet(&self) -> IpNet {
        self.0
    }
}

impl From<IpNet> for Network {
    fn from(net: IpNet) -> Self {
        Network(net.trunc())
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl FromStr for Network {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let bad_network = || format!("bad network {text:?}: expected e.g. 10.0.0.0/8 or ::1/128");
        let Some((addr, _)) = text.split_once('/') else {
            let host: IpAddr = text.parse().map_err(|_| bad_network())?;
            return Ok(Network(IpNet::from(host)));
        };
        // The address half goes through std's parser first: it is stricter
        // than ipnet's (no leading zeros such as `010.0.0.0`, which some
        // tools read as octal), and it tells which half is wrong, since
        // ipnet's error does not.
        let ip: IpAddr = addr.parse().map_err(|_| bad_network())?;
        text.parse::<IpNet>().map(Network::from).map_err(|_| {
            let max = if ip.is_ipv4() { 32 } else { 128 };
            format!("bad prefix length in {text:?}: expected 0-{max}")
        })
    }
}

/// Who may connect, and how much one client address may take.
/// Defaults: everyone, no per-IP limit, IPv6 clients counted per /64.
#[derive(Clone, Debug, PartialEq)]
pub struct AccessConfig {
    /// When non-empty, only clients in these networks are served.
    pub allow: Vec<Network>,
    /// Clients in these networks are refused (checked before `allow`).
    pub deny: Vec<Network>,
    /// Most open connections from one client IP.
    pub max_conns_per_ip: Option<u32>,
    /// New connections per second from one client IP (token bucket, burst = rate).
    pub rate_per_ip: Option<f64>,
    /// IPv6 clients count as one per network of this prefix length for the
    /// per-IP limits: one host usually owns a whole /64 and could otherwise
    /// evade them by changing its address. 128 counts each address.
    pub per_ip_ipv6_prefix: u8,
}

impl Default for AccessConfig {
    fn default() -> Self {
        AccessConfig {
            allow: Vec::new(),
            deny: Vec::new(),
            max_conns_per_ip: None,
            rate_per_ip: None,
            per_ip_ipv6_prefix: 64,
        }
    }
}

/// Everything one listener and its backend pool need.
#[derive(Clone, Debug, PartialEq)]
///
/// Defaults ([`ServiceConfig::new`]): backlog 1024, round-robin, connect
/// timeout 3 s, 2 retries, HTTP failure answers, health as
/// [`HealthConfig::default`], passive health off (fail timeout 10 s, at most 10% of the pool
/// ejected at once, ejections growing to 300 s), no
/// connection limit (queue timeout 5 s), no idle timeout, no PROXY
/// protocol, everyone allowed, names looked up again as
/// [`ResolveConfig::default`] says, no TLS routes (ClientHello timeout 5 s
/// when there are), TCP ([`UdpConfig::default`] for UDP).
pub struct ServiceConfig {
    /// Where clients connect; with `protocol`, also how a reload
    /// recognises the listener.
    pub listen: SocketAddr,
    /// TCP connections or UDP datagrams (see [`udp`]).
    pub protocol: Protocol,
    /// What only a UDP listener has; unused on a TCP one.
    pub udp: UdpConfig,
    /// What the control API calls this listener's pool; `None`: its bound
    /// address as /status shows it (e.g. `127.0.0.1:8080`).
    pub name: Option<String>,
    /// Connections the kernel queues before tcplb accepts them.
    pub backlog: u32,
    /// The static member set (see `pool::discovery`).
    pub backends: Vec<BackendSpec>,
    /// How a backend is chosen for each new connection.
    pub strategy: StrategyKind,
    /// Each connect to a backend gives up after this long.
    pub connect_timeout: Duration,
    /// Other backends tried after a failed connect.
    pub retries: u32,
    /// What a client hears when no backend can take it.
    pub on_failure: OnFailure,
    /// Active health checks.
    pub health: HealthConfig,
    /// Passive health: this many failed connects within `fail_timeout` take
    /// a backend out for `fail_timeout` (nginx's max_fails). 0 turns it off.
    pub max_fails: u32,
    /// Window for `max_fails`, and the first ejection's length; each
    /// ejection in a row lasts one `fail_timeout` longer (Envoy's
    /// `base_ejection_time` × ejections), up to `max_ejection_time`.
    pub fail_timeout: Duration,
    /// Most of the pool passive health may eject at once, in percent of
    /// its backends, but always at least one (Envoy's
    /// `max_ejection_percent`, default 10).
    pub max_ejection_percent: u8,
    /// The longest an ejection lasts however often it repeats (Envoy's
    /// `max_ejection_time`, default 300 s; never shorter than `fail_timeout`).
    pub max_ejection_time: Duration,
    /// Most client connections this listener serves at once.
    pub max_conns: Option<u32>,
    /// How long a client over a connection limit waits for a slot.
    pub queue_timeout: Duration,
    /// Close a connection with no bytes either way (end a UDP session
    /// without a datagram either way) for this long. `None`: no limit for
    /// TCP, [`udp::UDP_IDLE_TIMEOUT`] for UDP (see
    /// [`ServiceConfig::idle_limit`]).
    pub idle_timeout: Option<Duration>,
    /// Write a PROXY protocol header to backends.
    pub send_proxy: Option<ProxyVersion>,
    /// Require a PROXY protocol header from clients.
    pub accept_proxy: bool,
    /// Who may connect, and how much one client address may take.
    pub access: AccessConfig,
    /// A backend that becomes eligible again (recovered, added, back from
    /// drain or maintenance) ramps from 10% to its full share over this
    /// window, so a cold cache is not flooded. `None`: at once.
    pub slow_start: Option<Duration>,
    /// TCP keepalive on client and backend sockets, so dead peers behind
    /// NAT are found; off when `None`.
    pub keepalive: Option<KeepaliveConfig>,
    /// Close a connection older than this, so long sessions move to new
    /// backends after a scale-up. `None`: no limit.
    pub max_connection_age: Option<Duration>,
    /// For `hash` and `maglev`: no backend takes more than this factor times
    /// the mean of open connections (bounded-load consistent hashing,
    /// HAProxy's `hash-balance-factor`); `None` is unbounded.
    pub hash_balance_factor: Option<f64>,
    /// How often backends configured by name are looked up again.
    pub resolve: ResolveConfig,
    /// TLS routes (`[[listener.route]]`): with any, every connection's
    /// ClientHello is read first and picks the pool; this service's own
    /// backends are then the default route (none: no default). Empty in a
    /// route's own pool settings.
    pub routes: Vec<RouteConfig>,
    /// With routes: how long a client may take to send its whole
    /// ClientHello before it is closed.
    pub tls_inspect_timeout: Duration,
    /// Terminate TLS (`[listener.tls]`, `--tls-cert`): on a listener, for
    /// the connections its own backends serve (all of them without routes,
    /// the default route with routes); in a route's pool, for that route.
    /// Never inherited by routes. `None`: bytes pass through untouched.
    pub tls: Option<TlsConfig>,
    /// Speak TLS to the backends (`backend_tls`, `--backend-tls`); `None`:
    /// plain TCP.
    pub backend_tls: Option<BackendTlsConfig>,
}

/// One route of a listener: TLS connections whose ClientHello matches go
/// to the route's own pool. Which route wins when several match is
/// decided in `proxy::route` (exact name, then the longest wildcard, then
/// any name; ALPN-qualified before plain at each step).
#[derive(Clone, Debug, PartialEq)]
pub struct RouteConfig {
    /// The route's name, which is also its pool's name in the control API,
    /// /status and /metrics: unique among all pools.
    pub name: String,
    /// The server names (SNI) it takes. Empty: any name, or none (the
    /// route then needs `alpn`).
    pub server_names: Vec<ServerName>,
    /// ALPN protocols it takes; it matches a client offering any of them.
    /// Empty: the client's ALPN does not matter.
    pub alpn: Vec<String>,
    /// Its pool: backends and every pool setting (strategy, health,
    /// retries, timeouts, PROXY sending...), the listener's unless the
    /// route sets its own. Listener-wide settings (address, access, PROXY
    /// receiving, routes) are unused here.
    pub pool: ServiceConfig,
}

/// A server name pattern of a route, lower-case without a trailing dot.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ServerName {
    /// `a.example.com`: that name only.
    Exact(String),
    /// `*.example.com`, kept as `.example.com`: any name ending so, at any
    /// depth (`a.example.com`, `a.b.example.com`), but not `example.com`
    /// itself, as in nginx's `map` and HAProxy's `-m end`.
    Wildcard(String),
}

impl ServerName {
    /// Whether `host` (lower-case, as the ClientHello reader gives it) is
    /// one this pattern takes.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            ServerName::Exact(name) => host == name,
            ServerName::Wildcard(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
        }
    }
}

impl FromStr for ServerName {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let lower = text.to_ascii_lowercase();
        let name = lower.strip_suffix('.').unwrap_or(&lower);
        let bad = |why: &str| Err(format!("bad server name {text:?}: {why}"));
        let (wildcard, host) = match name.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, name),
        };
        if host.is_empty() || host.len() > 253 {
            return bad("expected a host name of 1 to 253 characters");
        }
        if host.contains('*') {
            return bad("a wildcard is only allowed as a whole first label, as in `*.example.com`");
        }
        if !host.bytes().all(|b| b.is_ascii_graphic()) {
            return bad("only printable ASCII is allowed (write IDNs in their xn-- form)");
        }
        if host.split('.').any(str::is_empty) {
            return bad("empty label");
        }
        Ok(if wildcard {
            ServerName::Wildcard(format!(".{host}"))
        } else {
            ServerName::Exact(host.to_string())
        })
    }
}

impl fmt::Display for ServerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerName::Exact(name) => f.write_str(name),
            ServerName::Wildcard(suffix) => write!(f, "*{suffix}"),
        }
    }
}

/// TCP keepalive probes (`SO_KEEPALIVE` with `TCP_KEEPIDLE`,
/// `TCP_KEEPINTVL`, `TCP_KEEPCNT`) and `TCP_USER_TIMEOUT`, which together
/// find a peer that vanished whether the connection was idle or busy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeepaliveConfig {
    /// Silence before the first probe.
    pub idle: Duration,
    /// Time between unanswered probes.
    pub interval: Duration,
    /// Unanswered probes before the connection is dropped.
    pub count: u32,
    /// `TCP_USER_TIMEOUT`: how long sent bytes may stay unacknowledged
    /// before the kernel drops the connection. Linux sends no keepalive
    /// probe while data is unacknowledged, so without it a peer that
    /// vanished mid-transfer holds its connection until the retransmissions
    /// run out (`tcp_retries2`, about 15 minutes). With keepalive on it also
    /// replaces `count` as the limit for an idle peer (the kernel drops it
    /// once it has been silent this long and a probe went unanswered).
    /// Default: `idle + interval × count` (at most [`MAX_USER_TIMEOUT`]), so
    /// a busy connection is given up as soon as an idle one would be;
    /// `None`: off.
    pub user_timeout: Option<Duration>,
}

/// The longest `TCP_USER_TIMEOUT` the kernel takes (a signed 32-bit count
/// of milliseconds, about 24.8 days).
pub const MAX_USER_TIMEOUT: Duration = Duration::from_millis(i32::MAX as u64);

impl KeepaliveConfig {
    /// Probes as given, with the user timeout they imply: `idle + interval
    /// × count`, capped at [`MAX_USER_TIMEOUT`].
    pub fn new(idle: Duration, interval: Duration, count: u32) -> Self {
        let user_timeout = idle.saturating_add(interval.saturating_mul(count));
        KeepaliveConfig {
            idle,
            interval,
            count,
            user_timeout: Some(user_timeout.min(MAX_USER_TIMEOUT)),
        }
    }

    /// `idle` alone: probes every `idle / 6` (at least 1 s), 6 of them, so
    /// a dead peer is found about two `idle`s after it went silent.
    pub fn with_idle(idle: Duration) -> Self {
        KeepaliveConfig::new(idle, (idle / 6).max(Duration::from_secs(1)), 6)
    }
}

impl ServiceConfig {
    /// A service with the documented defaults, balancing over `backends`.
    pub fn new(listen: SocketAddr, backends: Vec<BackendSpec>) -> Self {
        ServiceConfig {
            listen,
            protocol: Protocol::Tcp,
            udp: UdpConfig::default(),
            name: None,
            backlog: 1024,
            backends,
            strategy: StrategyKind::RoundRobin,
            connect_timeout: Duration::from_secs(3),
            retries: 2,
            on_failure: OnFailure::Http,
            health: HealthConfig::default(),
            max_fails: 0,
            fail_timeout: Duration::from_secs(10),
            max_ejection_percent: 10,
            max_ejection_time: Duration::from_secs(300),
            max_conns: None,
            queue_timeout: Duration::from_secs(5),
            idle_timeout: None,
            send_proxy: None,
            accept_proxy: false,
            access: AccessConfig::default(),
            slow_start: None,
            keepalive: None,
            max_connection_age: None,
            hash_balance_factor: None,
            resolve: ResolveConfig::default(),
            routes: Vec::new(),
            tls_inspect_timeout: TLS_INSPECT_TIMEOUT,
            tls: None,
            backend_tls: None,
        }
    }
}

/// The whole process: one or more services plus process-wide settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// One per listener, each with its own pool.
    pub services: Vec<ServiceConfig>,
    /// How long open connections may keep going after SIGINT/SIGTERM.
    pub drain_timeout: Duration,
    /// How long the listeners go on accepting after SIGINT/SIGTERM, with
    /// `/ready` already answering 503, before the drain starts: time for
    /// keepalived, a BGP speaker or a Kubernetes probe to take this
    /// instance out of rotation first. Default 0: the drain starts at once.
    pub shutdown_delay: Duration,
    /// Whether `/ready` also answers 503 while no listener has a usable
    /// backend (ready, up and not ejected). Default off.
    pub ready_requires_backends: bool,
    /// Whether a binary upgrade (SIGUSR2) moves established passthrough
    /// connections to the new process instead of draining them here.
    /// Default on.
    pub upgrade_move_connections: bool,
    /// Where the admin endpoint (/metrics, /status) listens; off when `None`.
    pub admin: Option<SocketAddr>,
    /// A file holding the bearer token that gives the TCP admin endpoint
    /// write access to the control API; read once at start.
    pub admin_token_file: Option<PathBuf>,
    /// A Unix socket serving the admin endpoint with write access for
    /// every request (mode 0600); off when `None`.
    pub admin_socket: Option<PathBuf>,
    /// Where runtime changes made through the control API are kept, so
    /// they survive a restart; in memory only when `None`.
    pub state_file: Option<PathBuf>,
    /// The DNS server that backend names are resolved with; `None`: the
    /// nameservers in /etc/resolv.conf.
    pub resolver: Option<SocketAddr>,
    /// One line per finished connection, and where it goes; off by default.
    pub access_log: AccessLogConfig,
    /// Where the serving process keeps its pid (taken over by the new
    /// process of an upgrade); none when `None`.
    pub pid_file: Option<PathBuf>,
}

impl Config {
    pub fn single(service: ServiceConfig) -> Self {
        Config::with_services(vec![service])
    }

    /// `services` with the process-wide defaults: a 30 s drain, no
    /// shutdown delay, the rest off. A usable configuration has at least one service; what
    /// `tcplb check` reads around a file's problems may have none.
    pub fn with_services(services: Vec<ServiceConfig>) -> Self {
        Config {
            services,
            drain_timeout: Duration::from_secs(30),
            shutdown_delay: Duration::ZERO,
            ready_requires_backends: false,
            upgrade_move_connections: true,
            admin: None,
            admin_token_file: None,
            admin_socket: None,
            state_file: None,
            resolver: None,
            access_log: AccessLogConfig::default(),
            pid_file: None,
        }
    }
}

/// The access log (`--access-log`, `--access-log-format`). Default: off,
/// text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccessLogConfig {
    /// Where the lines go.
    pub target: AccessLogTarget,
    /// How each line is written.
    pub format: AccessLogFormat,
}

/// Where the access log goes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum AccessLogTarget {
    /// No access log (the default).
    #[default]
    Off,
    /// The process's standard error, beside the diagnostic log.
    Stderr,
    /// A file, appended to, created if missing, reopened on SIGUSR1.
    File(PathBuf),
}

impl FromStr for AccessLogTarget {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "off" => Ok(AccessLogTarget::Off),
            "stderr" => Ok(AccessLogTarget::Stderr),
            "" => Err("empty access log path: give a file, `stderr` or `off`".into()),
            path if path.ends_with('/') => Err(format!(
                "bad access log path {path:?}: a directory, not a file"
            )),
            path => Ok(AccessLogTarget::File(PathBuf::from(path))),
        }
    }
}

impl fmt::Display for AccessLogTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AccessLogTarget::Off => f.write_str("off"),
            AccessLogTarget::Stderr => f.write_str("stderr"),
            AccessLogTarget::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// How access log lines are written. Its names are clap's (`ValueEnum`),
/// as for [`StrategyKind`] (hence `//` comments on the variants).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum AccessLogFormat {
    // Space-separated fields in a fixed order, in the spirit of HAProxy's
    // `option tcplog` (the default).
    #[default]
    Text,
    // One JSON object per line (JSON Lines).
    Json,
}

impl FromStr for AccessLogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_named(s, "access log format")
    }
}

impl fmt::Display for AccessLogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_name(self, f)
    }
}

/// The `--strategy` setting. Its names and aliases are clap's
/// (`ValueEnum`), so `--help`, the file's error message and `Display` list
/// the same strategies; see [`crate::pool::selection`]. (The variants'
/// comments are `//`: a doc comment would become per-value help and turn
/// all of `--help` into its long layout.)
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum StrategyKind {
    // In turn; nginx's smooth weighted round robin when weights differ.
    #[default]
    #[value(name = "round-robin", alias = "roundrobin", alias = "rr")]
    RoundRobin,
    // Fewest open connections per unit of weight.
    #[value(name = "least-conn", alias = "leastconn")]
    LeastConn,
    // Power of two choices: the less loaded of two random backends.
    #[value(name = "p2c")]
    PowerOfTwo,
    // Consistent hash of the client IP on a ring.
    Hash,
    // Consistent hash of the client IP in a Maglev lookup table: even
    // spread, and the same choice in every tcplb with the same backends.
    Maglev,
}

impl FromStr for StrategyKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_named(s, "strategy")
    }
}

impl fmt::Display for StrategyKind {
    /// The name `--strategy` and the file's `strategy` key take.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_name(self, f)
    }
}

/// Parses one of a [`clap::ValueEnum`]'s names or aliases, as its flag
/// does, so the file and the command line take the same names; else an
/// error naming them all: `unknown WHAT "x": use a, b or c`.
fn parse_named<T: clap::ValueEnum>(s: &str, what: &str) -> Result<T, String> {
    T::from_str(s, false).map_err(|_| {
        let names: Vec<String> = T::value_variants()
            .iter()
            .filter_map(T::to_possible_value)
            .map(|v| v.get_name().to_string())
            .collect();
        let (last, rest) = names
            .split_last()
            .map_or(("", &[][..]), |(l, r)| (l.as_str(), r));
        format!("unknown {what} {s:?}: use {} or {last}", rest.join(", "))
    })
}

/// Writes a [`clap::ValueEnum`]'s name: the one its flag and key take.
fn write_name<T: clap::ValueEnum>(value: &T, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    match value.to_possible_value() {
        Some(name) => f.write_str(name.get_name()),
        None => Ok(()),
    }
}

/// The `--on-failure` setting. Its names are clap's (`ValueEnum`), as for
/// [`StrategyKind`] (hence `//` comments on the variants).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OnFailure {
    // Answer with a minimal HTTP 502/503, then close.
    #[default]
    Http,
    // Close without a byte, for protocols that are not HTTP.
    Close,
}

impl FromStr for OnFailure {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_named(s, "failure mode")
    }
}

impl fmt::Display for OnFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_name(self, f)
    }
}

/// When to move bytes with `splice(2)` instead of copying them through a
/// user-space buffer. Its names are clap's (`ValueEnum`), as for
/// [`StrategyKind`] (hence `//` comments on the variants).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SpliceMode {
    // Never; the portable copy everywhere.
    Off,
    // From a direction's first byte (Linux only; elsewhere like `Off`).
    On,
    // Once a direction shows bulk traffic (a read fills the whole copy
    // buffer); short request/response traffic stays on the cheaper copy.
    Auto,
}

impl std::str::FromStr for SpliceMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_named(s, "splice mode")
    }
}

impl std::fmt::Display for SpliceMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write_name(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_strategy_parses_by_its_name_and_aliases() {
        use clap::ValueEnum;
        for kind in StrategyKind::value_variants() {
            assert_eq!(kind.to_string().parse::<StrategyKind>(), Ok(*kind));
        }
        for (alias, kind) in [
            ("rr", StrategyKind::RoundRobin),
            ("roundrobin", StrategyKind::RoundRobin),
            ("leastconn", StrategyKind::LeastConn),
        ] {
            assert_eq!(alias.parse::<StrategyKind>(), Ok(kind));
        }
        assert_eq!(
            "fastest".parse::<StrategyKind>().unwrap_err(),
            "unknown strategy \"fastest\": use round-robin, least-conn, p2c, hash or maglev"
        );
    }

    #[test]
    fn on_failure_parses() {
        assert_eq!("http".parse::<OnFailure>().unwrap(), OnFailure::Http);
        assert_eq!("close".parse::<OnFailure>().unwrap(), OnFailure::Close);
        assert!("reset".parse::<OnFailure>().is_err());
    }

    #[test]
    fn networks_keep_host_bits_semantics_and_name_bad_values() {
        // Host bits set: the whole /8 matches, and it is the /8 network.
        let net: Network = "10.1.2.3/8".parse().unwrap();
        assert!(net.contains("10.200.0.1".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        assert_eq!(net, "10.0.0.0/8".parse().unwrap());
        assert_eq!(net.to_string(), "10.0.0.0/8");
        let host: Network = "::1".parse().unwrap();
        assert_eq!(host.ipnet().prefix_len(), 128);
        assert!(host.contains("::1".parse().unwrap()));
        assert!(!host.contains("::2".parse().unwrap()));
        // A mapped client never matches an IPv6 network by its v6 form.
        let v6: Network = "::/0".parse().unwrap();
        assert!(!v6.contains("::ffff:10.0.0.1".parse().unwrap()));

        let err = "10.0.0/8".parse::<Network>().unwrap_err();
        assert_eq!(
            err,
            "bad network \"10.0.0/8\": expected e.g. 10.0.0.0/8 or ::1/128"
        );
        let err = "10.0.0.0/33".parse::<Network>().unwrap_err();
        assert_eq!(err, "bad prefix length in \"10.0.0.0/33\": expected 0-32");
        let err = "::/129".parse::<Network>().unwrap_err();
        assert_eq!(err, "bad prefix length in \"::/129\": expected 0-128");
        let err = "010.0.0.0/8".parse::<Network>().unwrap_err();
        assert!(err.starts_with("bad network"), "{err}");
        let err = "nope".parse::<Network>().unwrap_err();
        assert!(err.contains("\"nope\""), "{err}");
    }

    #[test]
    fn strategy_and_splice_names_round_trip() {
        for name in ["round-robin", "least-conn", "p2c", "hash", "maglev"] {
            assert_eq!(name.parse::<StrategyKind>().unwrap().to_string(), name);
        }
        for name in ["ready", "drain", "maintenance"] {
            assert_eq!(name.parse::<AdminState>().unwrap().to_string(), name);
        }
        for name in ["auto", "on", "off"] {
            assert_eq!(name.parse::<SpliceMode>().unwrap().to_string(), name);
        }
        assert!("random".parse::<StrategyKind>().is_err());
        assert!("maybe".parse::<SpliceMode>().is_err());
        assert!("down".parse::<AdminState>().is_err());
    }

    #[test]
    fn access_log_targets_and_formats_parse() {
        assert_eq!("off".parse(), Ok(AccessLogTarget::Off));
        assert_eq!("stderr".parse(), Ok(AccessLogTarget::Stderr));
        assert_eq!(
            "/var/log/tcplb.log".parse(),
            Ok(AccessLogTarget::File("/var/log/tcplb.log".into()))
        );
        assert!("".parse::<AccessLogTarget>().is_err());
        assert!("/var/log/".parse::<AccessLogTarget>().is_err());
        for name in ["text", "json"] {
            assert_eq!(name.parse::<AccessLogFormat>().unwrap().to_string(), name);
        }
        assert!("xml".parse::<AccessLogFormat>().is_err());
    }
}
