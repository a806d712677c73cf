//! Command-line flags, and their translation into a [`Config`].
//!
//! clap rejects bad values with a message naming the flag and exit code 2,
//! before anything binds.

use std::ffi::OsString;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser};

use crate::config::{
    self, AccessConfig, AccessLogConfig, AccessLogFormat, AccessLogTarget, AgentConfig,
    BackendSpec, BackendTlsConfig, CertificatePaths, CheckConfig, Config, DEFAULT_BACKENDS,
    ExecCheck, HealthConfig, HttpCheck, KeepaliveConfig, Match, Network, OnFailure, OnHealthChange,
    Protocol, ProxyVersion, ResolveConfig, ServiceConfig, SpliceMode, StatusSet, StrategyKind,
    TlsConfig, TrustAnchors, UdpConfig, file as config_file, parse_duration,
};

use crate::config::file::Readable;

/// One `--backend` value: one or more comma-separated backends.
#[derive(Clone, Debug)]
pub struct BackendList(pub Vec<BackendSpec>);

fn backend_list(text: &str) -> Result<BackendList, String> {
    config::parse_backend_list(text).map(BackendList)
}

fn positive_duration(text: &str) -> Result<Duration, String> {
    let d = parse_duration(text)?;
    if d.is_zero() {
        return Err(format!("{text:?} must be longer than zero"));
    }
    Ok(d)
}

fn pool_name(text: &str) -> Result<String, String> {
    config::check_pool_name(text).map(|()| text.to_string())
}

/// An escaped byte string flag (`'PING\r\n'`). A type of its own: clap
/// reads an `Option<Vec<u8>>` field as a list of values, which a parser
/// returning one `Vec<u8>` does not give it (a panic at the first access).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Escaped(pub Vec<u8>);

fn escaped(text: &str) -> Result<Escaped, String> {
    config::parse_escaped(text).map(Escaped)
}

fn http_request(text: &str) -> Result<HttpCheck, String> {
    let (method, path) = HttpCheck::parse_request_line(text)?;
    Ok(HttpCheck {
        method,
        path,
        ..HttpCheck::default()
    })
}

fn http_host(text: &str) -> Result<String, String> {
    config::health::check_host(text).map(|()| text.to_string())
}

fn threshold(text: &str) -> Result<u8, String> {
    config::health::parse_percent(text, 1)
}

fn share_of_pool(text: &str) -> Result<u8, String> {
    config::health::parse_percent(text, 0)
}

/// A `--backup` value: like `--backend`, each one marked as a backup.
fn backup_list(text: &str) -> Result<BackendList, String> {
    let mut list = config::parse_backend_list(text)?;
    for spec in &mut list {
        spec.backup = true;
    }
    Ok(BackendList(list))
}

// The flags are grouped by concern into the structs below, each its own
// `--help` section. Flattening keeps clap's arg ids the field names (e.g.
// `connect_timeout`), which `given_on_command_line` and `override_service`
// rely on. (A `//` comment: a second `///` paragraph would become clap's
// long_about and change `--help`.)

/// A Layer-4 (raw TCP) load balancer: accepts connections and pipes each
/// one to the next healthy backend.
#[derive(Parser, Clone, Debug)]
#[command(
    name = "tcplb",
    version,
    about,
    max_term_width = 100,
    after_help = "Commands: `tcplb check` validates a configuration without starting; `tcplb ctl` \
                  changes a running tcplb's backends (see `tcplb ctl --help`); `tcplb man` prints \
                  the man page; `tcplb completions bash|zsh|fish` the shell completions."
)]
pub struct Cli {
    /// Where clients connect.
    #[command(flatten)]
    pub listener: ListenerFlags,
    /// The backend pool and how connections are spread over it.
    #[command(flatten)]
    pub backends: BackendFlags,
    /// Active and passive health checks.
    #[command(flatten)]
    pub health: HealthFlags,
    /// Connection limits, timeouts and per-client access control.
    #[command(flatten)]
    pub limits: LimitFlags,
    /// What only a UDP listener has.
    #[command(flatten)]
    pub udp: UdpFlags,
    /// TLS termination and origination.
    #[command(flatten)]
    pub tls: TlsFlags,
    /// The admin endpoint.
    #[command(flatten)]
    pub admin: AdminFlags,
    /// Process-wide settings: file, shutdown, threads, data path.
    #[command(flatten)]
    pub runtime: RuntimeFlags,
}

// `#[group(skip)]` on each section keeps clap from adding an ArgGroup per
// struct, whose id would otherwise show up among the matched ids next to
// the flags and reach `override_service`.

/// Listener: where and how clients connect.
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Listener")]
#[group(skip)]
pub struct ListenerFlags {
    /// Address to accept clients on: ADDR:PORT, [IPv6]:PORT, or a bare PORT.
    #[arg(long, default_value = "0.0.0.0:8080", value_parser = config::parse_listen, value_name = "ADDR")]
    pub listen: SocketAddr,

    /// Listen backlog: connections the kernel queues before we accept them.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
    pub backlog: u32,

    /// Require a PROXY protocol header (v1 or v2) from clients (tcplb behind another balancer).
    #[arg(long)]
    pub accept_proxy: bool,

    /// `tcp` (connections) or `udp` (datagrams, in sessions; see the UDP
    /// section).
    #[arg(long, value_enum, default_value_t, value_name = "PROTO")]
    pub protocol: Protocol,

    /// The pool's name in the control API (/api/v1/pools/NAME). [default:
    /// the bound listen address]
    #[arg(long, value_parser = pool_name, value_name = "NAME")]
    pub name: Option<String>,
}

/// Backends: the pool, how one is chosen, and what happens when none can be.
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Backends")]
#[group(skip)]
pub struct BackendFlags {
    /// Backend HOST:PORT[=WEIGHT][,maxconn=N]; repeat the flag or separate
    /// backends with commas. A HOST that is a name is looked up again (A, or
    /// AAAA without A) and every address is a backend; srv:NAME takes ports and
    /// weights from SRV records. [default: 127.0.0.1:8081,127.0.0.1:8082,127.0.0.1:8083]
    #[arg(long = "backend", short = 'b', value_parser = backend_list, value_name = "HOST:PORT")]
    pub backends: Vec<BackendList>,

    /// How to choose a backend.
    #[arg(long, value_enum, default_value_t, value_name = "NAME")]
    pub strategy: StrategyKind,

    /// Give up connecting to a backend after this long.
    #[arg(long, default_value = "3s", value_parser = positive_duration, value_name = "DUR")]
    pub connect_timeout: Duration,

    /// After a failed connect, try up to this many other healthy backends.
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub retries: u32,

    /// What a client gets when no backend can take it: `http` (a minimal
    /// 502/503 response) or `close` (just close, for non-HTTP protocols).
    #[arg(long, value_enum, default_value_t, value_name = "MODE")]
    pub on_failure: OnFailure,

    /// Send a PROXY protocol header (v1 or v2) to backends, so they see the
    /// client's address. [default: off]
    #[arg(long, value_enum, value_name = "VERSION")]
    pub send_proxy: Option<ProxyVersion>,

    /// A backup backend, same syntax as --backend: it gets connections only
    /// while no primary backend is eligible. [default: none]
    #[arg(long = "backup", value_parser = backup_list, value_name = "HOST:PORT")]
    pub backups: Vec<BackendList>,

    /// A backend that becomes eligible again (recovered, added, out of
    /// drain or maintenance) ramps from 10% to its full share over this
    /// long. [default: off]
    #[arg(long, value_parser = positive_duration, value_name = "DUR")]
    pub slow_start: Option<Duration>,

    /// With --strategy hash or maglev: no backend takes more open
    /// connections than this factor times the mean (bounded load, e.g.
    /// 1.25). [default: unbounded]
    #[arg(long, value_parser = config::parse_balance_factor, value_name = "F")]
    pub hash_balance_factor: Option<f64>,

    /// Look backend names up again at least this often; a shorter DNS TTL
    /// brings the next lookup forward. A failed lookup keeps the backends
    /// found last and is retried after this long.
    #[arg(long, default_value = "5s", value_parser = positive_duration, value_name = "DUR")]
    pub resolve_interval: Duration,

    /// Never look a backend name up again sooner than this, however short
    /// its TTL (Consul answers with TTL 0).
    #[arg(long, default_value = "1s", value_parser = positive_duration, value_name = "DUR")]
    pub resolve_ttl_min: Duration,
}

/// TLS: terminating on the listener, originating to the backends. The
/// file has every other key (`[listener.tls]`, `backend_tls`).
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "TLS")]
#[group(skip)]
pub struct TlsFlags {
    /// Terminate TLS with this certificate chain (PEM, leaf first); repeat
    /// with --tls-key pairwise for more certificates (chosen by SNI, the
    /// first is the default). [default: pass TLS through]
    #[arg(long, requires = "tls_key", value_name = "PATH")]
    pub tls_cert: Vec<PathBuf>,

    /// The private key (PEM) of the --tls-cert at the same position.
    /// [default: pass TLS through]
    #[arg(long, requires = "tls_cert", value_name = "PATH")]
    pub tls_key: Vec<PathBuf>,

    /// Speak TLS to the backends, verifying their certificates against the
    /// system's trust store (or --backend-ca) and the backend's host name.
    #[arg(long)]
    pub backend_tls: bool,

    /// Verify backends' certificates against the CAs in this PEM file
    /// instead of the system's; implies --backend-tls. [default: the system's
    /// store]
    #[arg(long, value_name = "PATH")]
    pub backend_ca: Option<PathBuf>,
}

impl TlsFlags {
    /// Termination as the flags ask for it; `None` without --tls-cert.
    fn terminate(&self) -> Option<TlsConfig> {
        if self.tls_cert.is_empty() {
            return None;
        }
        let pairs = self.tls_cert.iter().zip(&self.tls_key);
        let certificates = pairs
            .map(|(cert, key)| CertificatePaths {
                cert: cert.clone(),
                key: key.clone(),
            })
            .collect();
        Some(TlsConfig::new(certificates))
    }

    /// Origination as the flags ask for it.
    fn originate(&self) -> Option<BackendTlsConfig> {
        match &self.backend_ca {
            Some(path) => Some(BackendTlsConfig::new(TrustAnchors::File(path.clone()))),
            None if self.backend_tls => Some(BackendTlsConfig::new(TrustAnchors::System)),
            None => None,
        }
    }
}

/// Health: the active prober and passive failure counting.
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Health checks")]
#[group(skip)]
pub struct HealthFlags {
    /// Time between health checks of each backend.
    #[arg(long, default_value = "10s", value_parser = positive_duration, value_name = "DUR")]
    pub health_interval: Duration,

    /// A health check that takes longer than this fails.
    #[arg(long, default_value = "2s", value_parser = positive_duration, value_name = "DUR")]
    pub health_timeout: Duration,

    /// Consecutive passed checks that bring a DOWN backend back.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
    pub rise: u32,

    /// Consecutive failures (checks or connects) that take a backend out.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
    pub fall: u32,

    /// Bytes a health check sends after connecting; escapes \r \n \t \\ \xNN.
    /// Example: 'PING\r\n'. [default: none: a plain connect check]
    #[arg(long, value_parser = escaped, value_name = "STR")]
    pub health_send: Option<Escaped>,

    /// What the health check reply must hold (see --health-expect-match),
    /// e.g. '+PONG'. [default: none]
    #[arg(long, value_parser = escaped, value_name = "STR")]
    pub health_expect: Option<Escaped>,

    /// How --health-expect matches what arrived: `prefix`, `contains`
    /// (anywhere in it, e.g. role:master) or `regex`.
    #[arg(
        long,
        default_value = "prefix",
        requires = "health_expect",
        value_name = "MODE"
    )]
    pub health_expect_match: Match,

    /// An HTTP/1.1 check instead: `PATH` or `METHOD PATH`, e.g. 'OPTIONS
    /// /primary' (Patroni's API, with --health-port 8008). [default: off]
    #[arg(long, value_parser = http_request, value_name = "[METHOD] PATH",
          conflicts_with_all = ["health_send", "health_expect", "health_exec"])]
    pub health_http: Option<HttpCheck>,

    /// A UDP check (UDP listeners): send this datagram (escapes as
    /// --health-send; may be empty); with --health-expect the reply must
    /// match, else any reply or silence passes and an ICMP port
    /// unreachable fails. [default: an empty datagram, on a UDP listener
    /// without a check of its own]
    #[arg(long, value_parser = escaped, value_name = "STR",
          conflicts_with_all = ["health_send", "health_http", "health_exec"])]
    pub health_udp: Option<Escaped>,

    /// The Host header of --health-http. [default: the check target's IP:PORT]
    #[arg(long, value_parser = http_host, requires = "health_http", value_name = "HOST")]
    pub health_http_host: Option<String>,

    /// The statuses that pass --health-http: codes and classes,
    /// comma-separated, e.g. 200 or 200,3xx. [default: 2xx,3xx]
    #[arg(long, requires = "health_http", value_name = "LIST")]
    pub health_expect_status: Option<StatusSet>,

    /// Text the --health-http response body must contain. [default: any body]
    #[arg(long, requires = "health_http", value_name = "TEXT")]
    pub health_expect_body: Option<String>,

    /// Run a program as the check, e.g. '/usr/bin/pg_isready -h {host} -p
    /// {port}': words split on spaces, no shell; exit 0 is up; killed at
    /// --health-timeout; its first line of output is the reason. [default:
    /// off]
    #[arg(long, value_name = "CMD", conflicts_with_all = ["health_send", "health_expect"])]
    pub health_exec: Option<ExecCheck>,

    /// HAProxy's agent check: read the state and weight the agent on this
    /// port of each backend's check address reports (`75%`, `drain`, `down
    /// #why`). [default: off]
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..), value_name = "PORT")]
    pub agent_port: Option<u16>,

    /// Bytes sent to the agent after connecting, e.g. 'web/a\n'. [default: none]
    #[arg(long, value_parser = escaped, requires = "agent_port", value_name = "STR")]
    pub agent_send: Option<Escaped>,

    /// Time between agent checks of each backend.
    #[arg(long, default_value = "2s", value_parser = positive_duration, requires = "agent_port",
          value_name = "DUR")]
    pub agent_interval: Duration,

    /// What checks marking a backend down do to its open connections:
    /// `keep` them, or `close` them at once (HAProxy's shutdown-sessions).
    #[arg(long, default_value = "keep", value_name = "POLICY")]
    pub on_down: OnHealthChange,

    /// What a primary marked up again does to the backups' open
    /// connections: `keep` or `close`.
    #[arg(long, default_value = "keep", value_name = "POLICY")]
    pub on_backup_up: OnHealthChange,

    /// While fewer than this percent of the ready primaries pass their
    /// checks, balance over all of them regardless (Envoy's panic
    /// threshold). [default: off]
    #[arg(long, value_parser = threshold, value_name = "PCT")]
    pub panic_threshold: Option<u8>,

    /// Passive health: N failed connects within --fail-timeout take a backend
    /// out for --fail-timeout, before the prober notices. 0 is off.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub max_fails: u32,

    /// Window for --max-fails, and the first ejection's length; each
    /// ejection in a row lasts one more --fail-timeout.
    #[arg(long, default_value = "10s", value_parser = positive_duration, value_name = "DUR")]
    pub fail_timeout: Duration,

    /// Passive health ejects at most this percent of the pool at once
    /// (always at least one backend).
    #[arg(long, default_value_t = 10, value_parser = share_of_pool, value_name = "PCT")]
    pub max_ejection_percent: u8,

    /// The longest a repeated ejection lasts.
    #[arg(long, default_value = "5m", value_parser = positive_duration, value_name = "DUR")]
    pub max_ejection_time: Duration,

    /// Check every backend on this port instead of its traffic port, for
    /// health served beside the service. [default: the backend's port]
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..), value_name = "PORT")]
    pub health_port: Option<u16>,
}

/// Limits: how much the listener and one client may take, and which
/// clients may connect at all. Allow/deny sit with the per-IP limits
/// because both are the same per-client check right after accept.
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Limits and access control")]
#[group(skip)]
pub struct LimitFlags {
    /// Most client connections served at once; more wait up to
    /// --queue-timeout for a slot, then get the failure answer. [default: unlimited]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
    pub max_conns: Option<u32>,

    /// How long a client over --max-conns or a backend maxconn waits for a slot.
    #[arg(long, default_value = "5s", value_parser = parse_duration, value_name = "DUR")]
    pub queue_timeout: Duration,

    /// Close connections with no bytes in either direction for this long. [default: off]
    #[arg(long, value_parser = positive_duration, value_name = "DUR")]
    pub idle_timeout: Option<Duration>,

    /// Serve only clients in this network (CIDR, repeatable). [default: everyone]
    #[arg(long, value_name = "CIDR")]
    pub allow: Vec<Network>,

    /// Refuse clients in this network (CIDR, repeatable); checked before
    /// --allow. [default: nobody]
    #[arg(long, value_name = "CIDR")]
    pub deny: Vec<Network>,

    /// Most open connections from one client IP. [default: unlimited]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
    pub max_conns_per_ip: Option<u32>,

    /// New connections per second from one client IP, e.g. 20/s. [default: unlimited]
    #[arg(long, value_parser = config::parse_rate, value_name = "N/s")]
    pub rate_per_ip: Option<f64>,

    /// The per-IP limits count IPv6 clients per network of this prefix
    /// length (one host usually owns a /64); 128 counts each address.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u8).range(1..=128), value_name = "BITS")]
    pub per_ip_ipv6_prefix: u8,

    /// Close connections older than this, so long sessions move to new
    /// backends after a scale-up. [default: no limit]
    #[arg(long, value_parser = positive_duration, value_name = "DUR")]
    pub max_connection_age: Option<Duration>,

    /// TCP keepalive on client and backend sockets: IDLE[,INTERVAL,COUNT],
    /// e.g. 60s or 60s,10s,6 (INTERVAL defaults to IDLE/6, COUNT to 6).
    /// [default: off]
    #[arg(long, value_parser = config::parse_keepalive, value_name = "IDLE")]
    pub tcp_keepalive: Option<KeepaliveConfig>,

    /// With --tcp-keepalive: close a connection whose sent bytes stay
    /// unacknowledged this long (TCP_USER_TIMEOUT; Linux sends no keepalive
    /// probes while bytes are unacknowledged); 0 or off for the kernel's
    /// retransmission limit (about 15 minutes). [default: IDLE + INTERVAL ×
    /// COUNT]
    #[arg(long, value_parser = user_timeout, value_name = "DUR")]
    pub tcp_user_timeout: Option<UserTimeout>,
}

/// UDP: sessions, replies and limits of a `--protocol udp` listener.
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "UDP")]
#[group(skip)]
pub struct UdpFlags {
    /// End a session once the backend sent N replies for every datagram
    /// the client sent (1 for DNS); 0 ends it once the datagram is
    /// forwarded. [default: none: only the idle timeout ends it]
    #[arg(long, value_name = "N")]
    pub responses: Option<u32>,

    /// Pick a backend for every datagram rather than once per session,
    /// for stateless protocols (DNS, syslog).
    #[arg(long)]
    pub per_datagram: bool,

    /// Most sessions held at once; datagrams that would start another are
    /// dropped. [default: unlimited]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
    pub max_sessions: Option<u32>,

    /// Most sessions one client IP holds at once. [default: unlimited]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
    pub max_sessions_per_ip: Option<u32>,

    /// Datagrams per second one client IP may send, e.g. 100/s (burst of
    /// the same size); the rest are dropped. [default: unlimited]
    #[arg(long, value_parser = config::parse_rate, value_name = "N/s")]
    pub datagram_rate_per_ip: Option<f64>,

    /// Drop client datagrams larger than this many bytes (never cut them
    /// short).
    #[arg(long, default_value_t = config::udp::MAX_IPV4_DATAGRAM,
          value_parser = config::udp::parse_datagram_size, value_name = "BYTES")]
    pub max_datagram_size: u32,
}

/// A `--tcp-user-timeout` value; `None` is off. (A newtype: clap reads an
/// `Option<Option<_>>` field as a flag whose value may be left out.)
#[derive(Clone, Copy, Debug)]
pub struct UserTimeout(pub Option<Duration>);

fn user_timeout(text: &str) -> Result<UserTimeout, String> {
    config::parse_user_timeout(text).map(UserTimeout)
}

/// Why `--tcp-user-timeout` cannot apply where keepalive is off.
fn user_timeout_without_keepalive(listener: &str) -> String {
    format!(
        "--tcp-user-timeout amends the keepalive settings, but {listener} has none: \
         give --tcp-keepalive too, or set tcp_keepalive in the file"
    )
}

/// Admin: the metrics and status endpoint.
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Admin")]
#[group(skip)]
pub struct AdminFlags {
    /// Serve Prometheus /metrics and JSON /status on this address (e.g. 127.0.0.1:9090). [default: off]
    #[arg(long, value_parser = config::parse_listen, value_name = "ADDR")]
    pub admin: Option<SocketAddr>,

    /// Give write access to the control API over --admin to requests with
    /// `Authorization: Bearer TOKEN`, TOKEN read from this file at start.
    /// [default: the TCP endpoint is read-only]
    #[arg(long, value_name = "PATH")]
    pub admin_token_file: Option<PathBuf>,

    /// Also serve the admin endpoint on this Unix socket (mode 0600), with
    /// write access for every request. [default: off]
    #[arg(long, value_name = "PATH")]
    pub admin_socket: Option<PathBuf>,

    /// Keep changes made through the control API in this JSON file, so they
    /// survive restarts. [default: in memory only]
    #[arg(long, value_name = "PATH")]
    pub state_file: Option<PathBuf>,

    /// Make GET /ready answer 503 also while no listener has a usable
    /// backend (ready, up and not ejected). [default: off]
    #[arg(long)]
    pub ready_requires_backends: bool,
}

/// Runtime: process-wide settings, none of them per listener.
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Runtime")]
#[group(skip)]
pub struct RuntimeFlags {
    /// Read listeners and backends from this TOML file; flags given on the
    /// command line override it. SIGHUP re-reads it. [default: none: the
    /// flags alone]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// On SIGINT/SIGTERM, let open connections finish for up to this long.
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DUR")]
    pub drain_timeout: Duration,

    /// On SIGINT/SIGTERM, answer 503 on /ready at once but go on accepting
    /// for this long before the drain starts, so that keepalived, a BGP
    /// speaker or a Kubernetes probe takes this instance out first.
    #[arg(long, default_value = "0s", value_parser = parse_duration, value_name = "DUR")]
    pub shutdown_delay: Duration,

    /// On SIGUSR2, once the new process serves, hand it the established
    /// passthrough connections (sockets, held bytes, counters) instead of
    /// draining them here; `false` drains them as on SIGTERM.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub upgrade_move_connections: bool,

    /// Worker threads serving connections, each with its own listening
    /// socket (SO_REUSEPORT); a busier worker hands new connections to a
    /// less loaded one. [default: one per core]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024), value_name = "N")]
    pub workers: Option<u32>,

    /// Move bulk data with splice(2), zero-copy (Linux): `auto` once a
    /// connection shows bulk traffic, `on` always, `off` never.
    #[arg(long, value_enum, default_value = "auto", value_name = "MODE")]
    pub splice: SpliceMode,

    /// Resolve backend names with this DNS server, IP[:PORT] (port 53 by
    /// default). [default: the nameservers in /etc/resolv.conf]
    #[arg(long, value_parser = config::parse_resolver, value_name = "ADDR")]
    pub resolver: Option<SocketAddr>,

    /// Write one line per finished connection to this file (reopened on
    /// SIGUSR1, for logrotate), to `stderr`, or `off`.
    #[arg(long, default_value = "off", value_name = "PATH")]
    pub access_log: AccessLogTarget,

    /// Access log lines as `text` (HAProxy tcplog-like fields) or `json`
    /// (JSON Lines).
    #[arg(long, value_enum, default_value_t, value_name = "FORMAT")]
    pub access_log_format: AccessLogFormat,

    /// Keep the serving process's PID in this file (written atomically,
    /// taken over by the new process of an upgrade, removed at exit), for
    /// `kill -USR2 "$(cat PATH)"`. [default: none]
    #[arg(long, value_name = "PATH")]
    pub pid_file: Option<PathBuf>,
}

/// What the command line asks for: the configuration to start with and,
/// with `--config`, how to read it again on SIGHUP.
#[derive(Debug)]
pub struct Startup {
    pub config: Config,
    pub source: Option<ConfigSource>,
    /// Worker threads (`--workers`); `None` is one per core.
    pub workers: Option<u32>,
    pub splice: SpliceMode,
}

/// Why tcplb cannot start; both kinds exit with code 2.
#[derive(Debug)]
pub enum StartupError {
    /// A bad flag; clap's message names it.
    Flags(clap::Error),
    /// A bad configuration file (or a flag that cannot apply to it).
    File(FileProblems),
}

/// A configuration file that cannot be used as it is (with the flags
/// that override it).
#[derive(Debug)]
pub struct FileProblems {
    /// The file.
    pub path: PathBuf,
    /// Every problem, one line each, file and line first where it has
    /// them, in file order; never empty.
    pub problems: Vec<String>,
    /// What could be read around them, the flags' overrides applied;
    /// `None` when the file cannot be read or is not TOML.
    pub readable: Option<Box<Readable>>,
}

impl fmt::Display for FileProblems {
    /// One problem a line, each after the first prefixed `error: `, as
    /// `StartupError` prefixes the first.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.problems.join("\nerror: "))
    }
}

impl fmt::Display for StartupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartupError::Flags(e) => write!(f, "{e}"),
            StartupError::File(e) => write!(f, "error: {e}"),
        }
    }
}

impl Startup {
    /// Reads the process's arguments (and the file they name); on any
    /// error prints it and exits with code 2, as clap does for bad flags.
    pub fn from_args_or_exit() -> Startup {
        match Startup::try_from_args(std::env::args_os()) {
            Ok(startup) => startup,
            Err(StartupError::Flags(e)) => e.exit(),
            Err(e @ StartupError::File(_)) => {
                eprintln!("{e}");
                std::process::exit(2);
            }
        }
    }

    pub fn try_from_args<I, T>(args: I) -> Result<Startup, StartupError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let matches = Cli::command()
            .try_get_matches_from(args)
            .map_err(StartupError::Flags)?;
        let cli = Cli::from_arg_matches(&matches).map_err(StartupError::Flags)?;
        if cli.tls.tls_cert.len() != cli.tls.tls_key.len() {
            let message = "--tls-cert and --tls-key go in pairs: give one --tls-key per --tls-cert";
            let error = Cli::command().error(clap::error::ErrorKind::WrongNumberOfValues, message);
            return Err(StartupError::Flags(error));
        }
        let (workers, splice) = (cli.runtime.workers, cli.runtime.splice);
        let Some(path) = cli.runtime.config.clone() else {
            let limits = &cli.limits;
            if limits.tcp_user_timeout.is_some() && limits.tcp_keepalive.is_none() {
                let message = user_timeout_without_keepalive("the listener");
                return Err(StartupError::Flags(
                    Cli::command().error(clap::error::ErrorKind::MissingRequiredArgument, message),
                ));
            }
            let explicit = given_on_command_line(&matches);
            let config = cli.into_config();
            let service = &config.services[0];
            let is_set = |key: &str| explicit.iter().any(|id| id == key);
            let mut wrong =
                config::udp::key_problems(service.protocol, &is_set, &config::udp::flag);
            wrong.extend(config::udp::value_problems(service));
            if let Some((_, message)) = wrong.into_iter().next() {
                return Err(StartupError::Flags(
                    Cli::command().error(clap::error::ErrorKind::ArgumentConflict, message),
                ));
            }
            return Ok(Startup {
                config,
                source: None,
                workers,
                splice,
            });
        };
        let source = ConfigSource {
            path,
            explicit: given_on_command_line(&matches),
            flags: cli,
        };
        // Every problem in the file, one per line.
        let config = source.load_all().map_err(StartupError::File)?;
        Ok(Startup {
            config,
            source: Some(source),
            workers,
            splice,
        })
    }
}

/// Ids of the flags the user typed (not those left at their defaults).
fn given_on_command_line(matches: &ArgMatches) -> Vec<String> {
    matches
        .ids()
        .filter(|id| matches.value_source(id.as_str()) == Some(ValueSource::CommandLine))
        .map(|id| id.as_str().to_string())
        .collect()
}

/// The configuration file plus the flags that override it, kept so a
/// reload re-applies the same overrides to the new file.
#[derive(Clone, Debug)]
pub struct ConfigSource {
    path: PathBuf,
    flags: Cli,
    /// Arg ids given on the command line.
    explicit: Vec<String>,
}

impl ConfigSource {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the file and applies the command-line overrides; on failure,
    /// every problem found (file, line and key first), in file order.
    pub fn load(&self) -> Result<Config, Vec<String>> {
        self.load_all().map_err(|file| file.problems)
    }

    /// [`ConfigSource::load`], with what could be read around the
    /// problems on failure (the overrides applied to it too).
    pub fn load_all(&self) -> Result<Config, FileProblems> {
        let backend_flags: Vec<BackendSpec> = if self.explicit.iter().any(|id| id == "backends") {
            self.flags
                .backends
                .backends
                .iter()
                .flat_map(|l| l.0.clone())
                .collect()
        } else {
            Vec::new()
        };
        let (mut problems, mut readable) = match config_file::load_all(&self.path, &backend_flags) {
            Ok(config) => (Vec::new(), Some(Box::new(Readable::whole(config)))),
            Err(unusable) => {
                let errors = unusable.errors.iter().map(ToString::to_string);
                (errors.collect(), unusable.readable)
            }
        };
        if let Some(read) = &mut readable {
            let overrides = apply_overrides(&mut read.config, read.listeners, self);
            problems.extend(overrides.err().into_iter().flatten());
        }
        match readable {
            Some(read) if problems.is_empty() => Ok(read.config),
            readable => Err(FileProblems {
                path: self.path.clone(),
                problems,
                readable,
            }),
        }
    }
}

/// Flags given on the command line win over the file, for every listener
/// (`config` holds what was read of a file with `listeners` of them). The
/// flags that cannot apply (`--listen` and `--name` with several) are
/// refused, every one; the others apply all the same.
fn apply_overrides(
    config: &mut Config,
    listeners: usize,
    source: &ConfigSource,
) -> Result<(), Vec<String>> {
    let explicit = &source.explicit;
    let given = source.flags.clone().into_config();
    let from = &given.services[0];
    let mut refused: Vec<String> = ["listen", "name"]
        .into_iter()
        .filter(|id| listeners > 1 && explicit.iter().any(|given| given == id))
        .map(|id| {
            format!(
                "--{id} cannot override a file with {listeners} listeners: \
                 set each listener's `{id}` in the file"
            )
        })
        .collect();
    // The protocol first: which listeners a flag of one protocol applies
    // to depends on it.
    if explicit.iter().any(|id| id == "protocol") {
        for service in &mut config.services {
            service.protocol = from.protocol;
        }
    }
    for id in explicit {
        // A setting of one protocol applies to the listeners of that
        // protocol; when the file has none, it is an error.
        if let Some(protocol) = config::udp::only_for(id) {
            if !config.services.iter().any(|s| s.protocol == protocol) {
                let is_set = |key: &str| key == id;
                let wrong =
                    config::udp::key_problems(protocol.other(), &is_set, &config::udp::flag);
                refused.extend(wrong.into_iter().map(|(_, message)| {
                    format!("{message}, and the file has no {protocol} listener")
                }));
                continue;
            }
            for service in config
                .services
                .iter_mut()
                .filter(|s| s.protocol == protocol)
            {
                override_service(service, from, id);
            }
            continue;
        }
        match id.as_str() {
            "listen" | "name" if listeners > 1 => {}
            "protocol" => {}
            "drain_timeout" => config.drain_timeout = given.drain_timeout,
            "shutdown_delay" => config.shutdown_delay = given.shutdown_delay,
            "upgrade_move_connections" => {
                config.upgrade_move_connections = given.upgrade_move_connections
            }
            "ready_requires_backends" => {
                config.ready_requires_backends = given.ready_requires_backends
            }
            "admin" => config.admin = given.admin,
            "admin_token_file" => config.admin_token_file = given.admin_token_file.clone(),
            "admin_socket" => config.admin_socket = given.admin_socket.clone(),
            "state_file" => config.state_file = given.state_file.clone(),
            "resolver" => config.resolver = given.resolver,
            "access_log" => config.access_log.target = given.access_log.target.clone(),
            "access_log_format" => config.access_log.format = given.access_log.format,
            // After the loop: it amends whatever keepalive the file and
            // `--tcp-keepalive` leave.
            "tcp_user_timeout" => {}
            "pid_file" => config.pid_file = given.pid_file.clone(),
            _ => {
                for service in &mut config.services {
                    override_service(service, from, id);
                }
            }
        }
    }
    if let Some(UserTimeout(user_timeout)) = source.flags.limits.tcp_user_timeout {
        for service in &mut config.services {
            match &mut service.keepalive {
                Some(keepalive) => keepalive.user_timeout = user_timeout,
                None => refused.push(user_timeout_without_keepalive(&format!(
                    "listener {}",
                    service
                        .name
                        .clone()
                        .unwrap_or_else(|| service.listen.to_string())
                ))),
            }
        }
    }
    for service in &config.services {
        for (_, message) in config::udp::value_problems(service) {
            let name = config::udp::default_pool_name(service.protocol, service.listen);
            let name = service.name.clone().unwrap_or(name);
            refused.push(format!("listener {name}: {message}"));
        }
    }
    if refused.is_empty() {
        Ok(())
    } else {
        Err(refused)
    }
}

/// Copies the setting of flag `id` from `from`; false for ids that are
/// not per-listener settings.
fn override_service(s: &mut ServiceConfig, from: &ServiceConfig, id: &str) -> bool {
    match id {
        "listen" => s.listen = from.listen,
        "name" => s.name = from.name.clone(),
        "backlog" => s.backlog = from.backlog,
        // Primaries and backups override separately: `--backup` alone keeps
        // the file's primaries, `--backend` alone keeps its backups.
        "backends" => replace_backends(&mut s.backends, &from.backends, false),
        "backups" => replace_backends(&mut s.backends, &from.backends, true),
        "strategy" => s.strategy = from.strategy,
        "connect_timeout" => s.connect_timeout = from.connect_timeout,
        "retries" => s.retries = from.retries,
        "on_failure" => s.on_failure = from.on_failure,
        "health_interval" => s.health.interval = from.health.interval,
        "health_timeout" => s.health.timeout = from.health.timeout,
        "rise" => s.health.rise = from.health.rise,
        "fall" => s.health.fall = from.health.fall,
        // A check flag replaces the file's check as a whole.
        "health_send"
        | "health_expect"
        | "health_expect_match"
        | "health_http"
        | "health_http_host"
        | "health_expect_status"
        | "health_expect_body"
        | "health_exec"
        | "health_udp" => s.health.check = from.health.check.clone(),
        "agent_port" | "agent_send" | "agent_interval" => {
            s.health.agent = from.health.agent.clone()
        }
        "on_down" => s.health.on_down = from.health.on_down,
        "on_backup_up" => s.health.on_backup_up = from.health.on_backup_up,
        "panic_threshold" => s.health.panic_threshold = from.health.panic_threshold,
        "max_fails" => s.max_fails = from.max_fails,
        "fail_timeout" => s.fail_timeout = from.fail_timeout,
        "max_ejection_percent" => s.max_ejection_percent = from.max_ejection_percent,
        "max_ejection_time" => s.max_ejection_time = from.max_ejection_time,
        "max_conns" => s.max_conns = from.max_conns,
        "queue_timeout" => s.queue_timeout = from.queue_timeout,
        "idle_timeout" => s.idle_timeout = from.idle_timeout,
        "send_proxy" => s.send_proxy = from.send_proxy,
        "accept_proxy" => s.accept_proxy = from.accept_proxy,
        "allow" => s.access.allow = from.access.allow.clone(),
        "deny" => s.access.deny = from.access.deny.clone(),
        "max_conns_per_ip" => s.access.max_conns_per_ip = from.access.max_conns_per_ip,
        "rate_per_ip" => s.access.rate_per_ip = from.access.rate_per_ip,
        "per_ip_ipv6_prefix" => s.access.per_ip_ipv6_prefix = from.access.per_ip_ipv6_prefix,
        "health_port" => s.health.port = from.health.port,
        "slow_start" => s.slow_start = from.slow_start,
        "hash_balance_factor" => s.hash_balance_factor = from.hash_balance_factor,
        "max_connection_age" => s.max_connection_age = from.max_connection_age,
        "tcp_keepalive" => s.keepalive = from.keepalive,
        "resolve_interval" => s.resolve.interval = from.resolve.interval,
        "resolve_ttl_min" => s.resolve.ttl_min = from.resolve.ttl_min,
        "protocol" => s.protocol = from.protocol,
        "responses" => s.udp.responses = from.udp.responses,
        "per_datagram" => s.udp.per_datagram = from.udp.per_datagram,
        "max_sessions" => s.udp.max_sessions = from.udp.max_sessions,
        "max_sessions_per_ip" => s.udp.max_sessions_per_ip = from.udp.max_sessions_per_ip,
        "datagram_rate_per_ip" => s.udp.datagram_rate_per_ip = from.udp.datagram_rate_per_ip,
        "max_datagram_size" => s.udp.max_datagram_size = from.udp.max_datagram_size,
        "tls_cert" | "tls_key" => s.tls = from.tls.clone(),
        "backend_tls" | "backend_ca" => s.backend_tls = from.backend_tls.clone(),
        _ => return false,
    }
    true
}

/// Replaces the backups (`backup`) or the primaries in `list` with those of `from`.
fn replace_backends(list: &mut Vec<BackendSpec>, from: &[BackendSpec], backup: bool) {
    list.retain(|b| b.backup != backup);
    list.extend(from.iter().filter(|b| b.backup == backup).cloned());
}

impl Cli {
    pub fn into_config(self) -> Config {
        let Cli {
            listener: l,
            backends: b,
            health: h,
            limits,
            udp,
            tls,
            admin,
            runtime,
        } = self;
        let mut backends: Vec<BackendSpec> = b.backends.into_iter().flat_map(|l| l.0).collect();
        if backends.is_empty() {
            backends = DEFAULT_BACKENDS
                .iter()
                .filter_map(|b| config::parse_backend(b).ok())
                .collect();
        }
        backends.extend(b.backups.into_iter().flat_map(|l| l.0));
        let service = ServiceConfig {
            listen: l.listen,
            protocol: l.protocol,
            udp: UdpConfig {
                responses: udp.responses,
                per_datagram: udp.per_datagram,
                max_sessions: udp.max_sessions,
                max_sessions_per_ip: udp.max_sessions_per_ip,
                datagram_rate_per_ip: udp.datagram_rate_per_ip,
                max_datagram_size: udp.max_datagram_size,
            },
            name: l.name,
            backlog: l.backlog,
            backends,
            strategy: b.strategy,
            connect_timeout: b.connect_timeout,
            retries: b.retries,
            on_failure: b.on_failure,
            health: HealthConfig {
                interval: h.health_interval,
                timeout: h.health_timeout,
                rise: h.rise,
                fall: h.fall,
                check: CheckConfig::from_kinds(
                    h.health_http.map(|http| HttpCheck {
                        host: h.health_http_host,
                        expect_status: h.health_expect_status.unwrap_or_default(),
                        expect_body: h.health_expect_body,
                        ..http
                    }),
                    h.health_exec,
                    None,
                    h.health_udp.map(|b| b.0),
                    (
                        h.health_send.map(|b| b.0),
                        h.health_expect.map(|b| b.0),
                        h.health_expect_match,
                    ),
                ),
                port: h.health_port,
                agent: h.agent_port.map(|port| AgentConfig {
                    port,
                    send: h.agent_send.map(|b| b.0),
                    interval: h.agent_interval,
                }),
                on_down: h.on_down,
                on_backup_up: h.on_backup_up,
                panic_threshold: h.panic_threshold,
            },
            max_fails: h.max_fails,
            fail_timeout: h.fail_timeout,
            max_ejection_percent: h.max_ejection_percent,
            max_ejection_time: h.max_ejection_time,
            max_conns: limits.max_conns,
            queue_timeout: limits.queue_timeout,
            idle_timeout: limits.idle_timeout,
            send_proxy: b.send_proxy,
            accept_proxy: l.accept_proxy,
            access: AccessConfig {
                allow: limits.allow,
                deny: limits.deny,
                max_conns_per_ip: limits.max_conns_per_ip,
                rate_per_ip: limits.rate_per_ip,
                per_ip_ipv6_prefix: limits.per_ip_ipv6_prefix,
            },
            slow_start: b.slow_start,
            keepalive: limits.tcp_keepalive.map(|mut keepalive| {
                if let Some(UserTimeout(user_timeout)) = limits.tcp_user_timeout {
                    keepalive.user_timeout = user_timeout;
                }
                keepalive
            }),
            max_connection_age: limits.max_connection_age,
            hash_balance_factor: b.hash_balance_factor,
            resolve: ResolveConfig {
                interval: b.resolve_interval,
                ttl_min: b.resolve_ttl_min,
            },
            // TLS routes are configured in the file only.
            routes: Vec::new(),
            tls_inspect_timeout: config::TLS_INSPECT_TIMEOUT,
            tls: tls.terminate(),
            backend_tls: tls.originate(),
        };
        Config {
            services: vec![service],
            drain_timeout: runtime.drain_timeout,
            shutdown_delay: runtime.shutdown_delay,
            upgrade_move_connections: runtime.upgrade_move_connections,
            ready_requires_backends: admin.ready_requires_backends,
            admin: admin.admin,
            admin_token_file: admin.admin_token_file,
            admin_socket: admin.admin_socket,
            state_file: admin.state_file,
            resolver: runtime.resolver,
            access_log: AccessLogConfig {
                target: runtime.access_log,
                format: runtime.access_log_format,
            },
            pid_file: runtime.pid_file,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splice_and_workers_flags_parse() {
        let cli = Cli::try_parse_from(["tcplb"]).unwrap();
        assert_eq!(
            (cli.runtime.splice, cli.runtime.workers),
            (SpliceMode::Auto, None)
        );
        let cli = Cli::try_parse_from(["tcplb", "--splice", "off", "--workers", "3"]).unwrap();
        assert_eq!(
            (cli.runtime.splice, cli.runtime.workers),
            (SpliceMode::Off, Some(3))
        );
        for bad in [
            &["tcplb", "--splice", "maybe"][..],
            &["tcplb", "--workers", "0"],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn flags_list_every_name_their_value_may_take() {
        let mut command = Cli::command();
        command.build();
        let names = |long: &str| -> Vec<String> {
            let arg = command.get_arguments().find(|a| a.get_long() == Some(long));
            let values = arg.map(|a| a.get_possible_values()).unwrap_or_default();
            values.iter().map(|v| v.get_name().to_string()).collect()
        };
        assert_eq!(
            names("strategy"),
            ["round-robin", "least-conn", "p2c", "hash", "maglev"]
        );
        assert_eq!(names("on-failure"), ["http", "close"]);
        assert_eq!(names("send-proxy"), ["v1", "v2"]);
        assert_eq!(names("splice"), ["off", "on", "auto"]);
        assert_eq!(names("access-log-format"), ["text", "json"]);
        let err = Cli::try_parse_from(["tcplb", "--on-failure", "maybe"]).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("--on-failure") && text.contains("close"),
            "{text}"
        );
        let cli = Cli::try_parse_from(["tcplb", "--send-proxy", "2"]).unwrap();
        assert_eq!(
            cli.backends.send_proxy,
            Some(ProxyVersion::V2),
            "the alias 2"
        );
    }

    #[test]
    fn defaults_match_the_documentation() {
        let config = Cli::try_parse_from(["tcplb"]).unwrap().into_config();
        let s = &config.services[0];
        assert_eq!(s.listen, "0.0.0.0:8080".parse().unwrap());
        let names: Vec<&str> = s.backends.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names, DEFAULT_BACKENDS);
        assert_eq!(s.health, HealthConfig::default());
        assert_eq!((s.retries, s.on_failure), (2, OnFailure::Http));
        assert_eq!(s.connect_timeout, Duration::from_secs(3));
        assert_eq!(config.drain_timeout, Duration::from_secs(30));
    }

    #[test]
    fn access_log_flags_default_parse_and_override_the_file() {
        let config = Cli::try_parse_from(["tcplb"]).unwrap().into_config();
        assert_eq!(config.access_log, AccessLogConfig::default());
        assert_eq!(config.access_log.target, AccessLogTarget::Off);
        let file = TempFile::new(
            "accesslog",
            "access_log = \"/var/log/a.log\"\naccess_log_format = \"json\"\n\
             [[listener]]\nlisten = \"127.0.0.1:8080\"\nbackends = [\"127.0.0.1:8081\"]\n",
        );
        let from_file = Startup::try_from_args(["tcplb", "--config", file.arg()]).unwrap();
        assert_eq!(
            from_file.config.access_log,
            AccessLogConfig {
                target: AccessLogTarget::File("/var/log/a.log".into()),
                format: AccessLogFormat::Json,
            }
        );
        let startup =
            Startup::try_from_args(["tcplb", "--config", file.arg(), "--access-log", "stderr"])
                .unwrap();
        assert_eq!(startup.config.access_log.target, AccessLogTarget::Stderr);
        assert_eq!(startup.config.access_log.format, AccessLogFormat::Json);
        for bad in [
            &["tcplb", "--access-log", ""][..],
            &["tcplb", "--access-log-format", "xml"],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn dns_flags_default_parse_and_override_the_file() {
        let config = Cli::try_parse_from(["tcplb"]).unwrap().into_config();
        assert_eq!(config.services[0].resolve, ResolveConfig::default());
        assert_eq!(config.resolver, None);
        let file = TempFile::new(
            "dns",
            "resolver = \"127.0.0.1:5353\"\n[[listener]]\nlisten = \"127.0.0.1:8080\"\n\
             backends = [\"127.0.0.1:8081\"]\nresolve_interval = \"30s\"\n",
        );
        let from_file = Startup::try_from_args(["tcplb", "--config", file.arg()]).unwrap();
        assert_eq!(
            from_file.config.resolver,
            Some("127.0.0.1:5353".parse().unwrap())
        );
        let s = &from_file.config.services[0];
        assert_eq!(s.resolve.interval, Duration::from_secs(30));
        assert_eq!(s.resolve.ttl_min, Duration::from_secs(1));
        let startup = Startup::try_from_args([
            "tcplb",
            "--config",
            file.arg(),
            "--resolver",
            "::1",
            "--resolve-ttl-min",
            "2s",
        ])
        .unwrap();
        assert_eq!(startup.config.resolver, Some("[::1]:53".parse().unwrap()));
        let s = &startup.config.services[0];
        assert_eq!(
            (s.resolve.interval, s.resolve.ttl_min),
            (Duration::from_secs(30), Duration::from_secs(2))
        );
        for bad in [
            &["tcplb", "--resolver", "dns.example"][..],
            &["tcplb", "--resolve-interval", "0s"],
            &["tcplb", "--resolve-ttl-min", "soon"],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn health_send_and_expect_decode_their_escapes() {
        let args = [
            "tcplb",
            "--health-send",
            "PING\\r\\n",
            "--health-expect",
            "+PONG",
        ];
        let startup = Startup::try_from_args(args).unwrap();
        let health = &startup.config.services[0].health;
        let CheckConfig::Steps(steps) = &health.check else {
            panic!("a send/expect check, not {:?}", health.check);
        };
        use crate::config::health::{Expect, Step};
        assert_eq!(steps[0], Step::Send(b"PING\r\n".to_vec()));
        assert_eq!(
            steps[1],
            Step::Expect(Expect {
                pattern: b"+PONG".to_vec(),
                how: Match::Prefix,
            })
        );
    }

    #[test]
    fn backends_accumulate_across_flags_and_commas() {
        let cli = Cli::try_parse_from([
            "tcplb",
            "--backend",
            "127.0.0.1:1,127.0.0.1:2=2",
            "-b",
            "[::1]:3",
        ])
        .unwrap();
        let backends = &cli.into_config().services[0].backends;
        assert_eq!(backends.len(), 3);
        assert_eq!(backends[1].weight, 2);
    }

    #[test]
    fn bad_values_are_rejected() {
        for args in [
            &["tcplb", "--backend", "nope"][..],
            &["tcplb", "--listen", "1.2.3.4"],
            &["tcplb", "--health-interval", "0s"],
            &["tcplb", "--fall", "0"],
            &["tcplb", "--strategy", "random"],
            &["tcplb", "--on-failure", "maybe"],
            &["tcplb", "--no-such-flag"],
            &["tcplb", "--send-proxy", "v3"],
            &["tcplb", "--allow", "10.0.0.0/40"],
            &["tcplb", "--rate-per-ip", "fast"],
            &["tcplb", "--max-conns", "0"],
            &["tcplb", "--idle-timeout", "0"],
        ] {
            assert!(Cli::try_parse_from(args).is_err(), "{args:?} was accepted");
        }
    }

    /// A configuration file removed when the test ends.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(name: &str, text: &str) -> TempFile {
            let path =
                std::env::temp_dir().join(format!("tcplb-cli-{}-{name}.toml", std::process::id()));
            std::fs::write(&path, text).unwrap();
            TempFile(path)
        }
        fn arg(&self) -> &str {
            self.0.to_str().unwrap()
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    const TWO_LISTENERS: &str = "drain_timeout = \"7s\"\n\
        [[listener]]\nlisten = \"127.0.0.1:8080\"\nbackends = [\"127.0.0.1:8081\"]\nretries = 4\n\
        [[listener]]\nlisten = \"127.0.0.1:6380\"\nbackends = [\"127.0.0.1:6379\"]\n\
        connect_timeout = \"9s\"\n[listener.health]\nrise = 3\n";

    #[test]
    fn flags_given_on_the_command_line_override_every_listener() {
        let file = TempFile::new("override", TWO_LISTENERS);
        let startup = Startup::try_from_args([
            "tcplb",
            "--config",
            file.arg(),
            "--retries",
            "0",
            "--rise",
            "5",
            "-b",
            "127.0.0.1:9999=2",
            "--drain-timeout",
            "1s",
            "--shutdown-delay",
            "3s",
            "--ready-requires-backends",
            "--accept-proxy",
        ])
        .unwrap();
        let c = &startup.config;
        assert_eq!(c.drain_timeout, Duration::from_secs(1));
        assert_eq!(c.shutdown_delay, Duration::from_secs(3));
        assert!(c.ready_requires_backends);
        assert_eq!(c.services.len(), 2);
        for s in &c.services {
            assert_eq!(s.retries, 0);
            assert_eq!(s.health.rise, 5);
            assert!(s.accept_proxy);
            assert_eq!(s.backends.len(), 1);
            assert_eq!(
                (s.backends[0].name.as_str(), s.backends[0].weight),
                ("127.0.0.1:9999", 2)
            );
        }
        // Flags left at their defaults do not override the file.
        assert_eq!(c.services[1].connect_timeout, Duration::from_secs(9));
        assert_eq!(c.services[0].listen, "127.0.0.1:8080".parse().unwrap());
        // A reload re-reads the file and re-applies the same overrides.
        let again = startup.source.as_ref().unwrap().load().unwrap();
        assert_eq!(&again, c);
    }

    #[test]
    fn backend_flags_fill_a_file_without_backends() {
        let file = TempFile::new(
            "nobackends",
            "[[listener]]\nlisten = \"127.0.0.1:8080\"\n[[listener]]\nlisten = \"127.0.0.1:8081\"\n",
        );
        let err = Startup::try_from_args(["tcplb", "--config", file.arg()]).unwrap_err();
        assert!(err.to_string().contains("no backends"), "{err}");
        let startup =
            Startup::try_from_args(["tcplb", "--config", file.arg(), "-b", "127.0.0.1:9"]).unwrap();
        for s in &startup.config.services {
            assert_eq!(s.backends.len(), 1);
            assert_eq!(s.backends[0].name, "127.0.0.1:9");
        }
    }

    #[test]
    fn without_overrides_the_file_is_used_as_written() {
        let file = TempFile::new("plain", TWO_LISTENERS);
        let startup = Startup::try_from_args(["tcplb", "--config", file.arg()]).unwrap();
        let c = startup.config;
        assert_eq!(c.drain_timeout, Duration::from_secs(7));
        assert_eq!((c.services[0].retries, c.services[1].retries), (4, 2));
        assert_eq!(c.services[1].health.rise, 3);
        assert_eq!(c.services[1].backends[0].name, "127.0.0.1:6379");
    }

    #[test]
    fn name_and_the_control_flags_reach_the_config() {
        let startup = Startup::try_from_args([
            "tcplb",
            "--name",
            "web",
            "--admin-token-file",
            "/t",
            "--admin-socket",
            "/s",
            "--state-file",
            "/f",
            "--pid-file",
            "/p",
        ])
        .unwrap();
        let c = &startup.config;
        assert_eq!(c.pid_file.as_deref(), Some(Path::new("/p")));
        assert_eq!(c.services[0].name.as_deref(), Some("web"));
        assert_eq!(c.admin_token_file.as_deref(), Some(Path::new("/t")));
        assert_eq!(c.admin_socket.as_deref(), Some(Path::new("/s")));
        assert_eq!(c.state_file.as_deref(), Some(Path::new("/f")));
        assert!(Cli::try_parse_from(["tcplb", "--name", "a/b"]).is_err());
        assert!(Cli::try_parse_from(["tcplb", "--name", ""]).is_err());

        let file = TempFile::new("name2", TWO_LISTENERS);
        let err =
            Startup::try_from_args(["tcplb", "--config", file.arg(), "--name", "x"]).unwrap_err();
        assert!(err.to_string().contains("--name cannot override"), "{err}");
        let startup =
            Startup::try_from_args(["tcplb", "--config", file.arg(), "--state-file", "/f"])
                .unwrap();
        assert_eq!(startup.config.state_file.as_deref(), Some(Path::new("/f")));
    }

    #[test]
    fn listen_overrides_only_a_single_listener_file() {
        let file = TempFile::new("listen2", TWO_LISTENERS);
        let err = Startup::try_from_args(["tcplb", "--config", file.arg(), "--listen", "9000"])
            .unwrap_err();
        assert!(
            err.to_string().contains("--listen cannot override"),
            "{err}"
        );
        // Every flag that cannot apply is named; the others still apply to
        // what was read (`tcplb check` checks it).
        let args = ["--listen", "9000", "--name", "x", "--state-file", "/f"];
        let argv = ["tcplb", "--config", file.arg()].into_iter().chain(args);
        let Err(StartupError::File(problems)) = Startup::try_from_args(argv) else {
            panic!("accepted");
        };
        assert_eq!(problems.problems.len(), 2, "{problems}");
        assert!(problems.problems[1].contains("--name cannot"), "{problems}");
        let read = problems.readable.expect("readable");
        assert_eq!(read.config.state_file.as_deref(), Some(Path::new("/f")));
        assert_eq!(read.config.services[1].listen.port(), 6380);
        let one = TempFile::new(
            "listen1",
            "[[listener]]\nlisten = \"127.0.0.1:8080\"\nbackends = [\"127.0.0.1:8081\"]\n",
        );
        let startup =
            Startup::try_from_args(["tcplb", "--config", one.arg(), "--listen", "9000"]).unwrap();
        assert_eq!(startup.config.services[0].listen.port(), 9000);
    }

    #[test]
    fn a_user_timeout_flag_amends_the_files_keepalive() {
        let user_timeout = |startup: &Startup| -> Vec<Option<Duration>> {
            let services = &startup.config.services;
            services
                .iter()
                .map(|s| s.keepalive.and_then(|k| k.user_timeout))
                .collect()
        };
        let secs = |s| Some(Duration::from_secs(s));
        // Flags alone: the default follows keepalive; the flag replaces it.
        let keepalive = ["tcplb", "--tcp-keepalive", "2s,1s,3"];
        let startup = Startup::try_from_args(keepalive).unwrap();
        assert_eq!(user_timeout(&startup), [secs(5)]);
        for (flag, expected) in [("9s", secs(9)), ("0", None), ("off", None)] {
            let args = keepalive.into_iter().chain(["--tcp-user-timeout", flag]);
            let startup = Startup::try_from_args(args).unwrap();
            assert_eq!(user_timeout(&startup), [expected], "{flag}");
        }
        let Err(StartupError::Flags(e)) =
            Startup::try_from_args(["tcplb", "--tcp-user-timeout", "9s"])
        else {
            panic!("accepted without keepalive");
        };
        assert!(e.to_string().contains("give --tcp-keepalive"), "{e}");
        assert!(Cli::try_parse_from(["tcplb", "--tcp-user-timeout", "30d"]).is_err());

        // With a file: the flag amends each listener's keepalive, whichever
        // of --tcp-keepalive and the file set it.
        let file = TempFile::new(
            "user-timeout",
            "[[listener]]\nlisten = \"127.0.0.1:8080\"\nbackends = [\"127.0.0.1:8081\"]\n\
             tcp_keepalive = { idle = \"1m\", user_timeout = \"7s\" }\n\
             [[listener]]\nlisten = \"127.0.0.1:8090\"\nbackends = [\"127.0.0.1:8091\"]\n\
             tcp_keepalive = { idle = \"1m\" }\n",
        );
        let startup = Startup::try_from_args(["tcplb", "--config", file.arg()]).unwrap();
        assert_eq!(user_timeout(&startup), [secs(7), secs(120)]);
        let args = ["tcplb", "--config", file.arg(), "--tcp-user-timeout", "3s"];
        let startup = Startup::try_from_args(args).unwrap();
        assert_eq!(user_timeout(&startup), [secs(3), secs(3)]);
        let args = [
            "tcplb",
            "--config",
            file.arg(),
            "--tcp-user-timeout",
            "3s",
            "--tcp-keepalive",
            "10s",
        ];
        let startup = Startup::try_from_args(args).unwrap();
        assert_eq!(user_timeout(&startup), [secs(3), secs(3)]);
        assert_eq!(
            startup.config.services[0].keepalive.unwrap().idle,
            Duration::from_secs(10)
        );
        // A listener without keepalive cannot take it: named, not ignored.
        let plain = TempFile::new("user-timeout-plain", TWO_LISTENERS);
        let args = ["tcplb", "--config", plain.arg(), "--tcp-user-timeout", "3s"];
        let err = Startup::try_from_args(args).unwrap_err().to_string();
        assert!(err.contains("listener 127.0.0.1:6380 has none"), "{err}");
    }

    #[test]
    fn a_bad_file_is_a_startup_error_naming_file_and_line() {
        let file = TempFile::new("bad", "[[listener]]\nlisten = \"127.0.0.1:1\"\nbogus = 1\n");
        let err = Startup::try_from_args(["tcplb", "--config", file.arg()]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&format!("{}:3:1", file.arg())), "{text}");
        assert!(text.contains("bogus"), "{text}");
    }

    #[test]
    fn without_config_startup_matches_the_flags() {
        let args = ["tcplb", "--listen", "127.0.0.1:1", "--retries", "1"];
        let startup = Startup::try_from_args(args).unwrap();
        assert!(startup.source.is_none());
        assert_eq!(
            startup.config,
            Cli::try_parse_from(args).unwrap().into_config()
        );
    }

    #[test]
    fn help_reads_in_sections_with_every_flag_once() {
        let sections: [(&str, &[&str]); 8] = [
            (
                "Listener",
                &[
                    "--listen",
                    "--backlog",
                    "--accept-proxy",
                    "--protocol",
                    "--name",
                ],
            ),
            (
                "Backends",
                &[
                    "--backend",
                    "--strategy",
                    "--connect-timeout",
                    "--retries",
                    "--on-failure",
                    "--send-proxy",
                    "--backup",
                    "--slow-start",
                    "--hash-balance-factor",
                    "--resolve-interval",
                    "--resolve-ttl-min",
                ],
            ),
            (
                "Health checks",
                &[
                    "--health-interval",
                    "--health-timeout",
                    "--rise",
                    "--fall",
                    "--health-send",
                    "--health-expect",
                    "--health-expect-match",
                    "--health-http",
                    "--health-udp",
                    "--health-http-host",
                    "--health-expect-status",
                    "--health-expect-body",
                    "--health-exec",
                    "--agent-port",
                    "--agent-send",
                    "--agent-interval",
                    "--on-down",
                    "--on-backup-up",
                    "--panic-threshold",
                    "--max-fails",
                    "--fail-timeout",
                    "--max-ejection-percent",
                    "--max-ejection-time",
                    "--health-port",
                ],
            ),
            (
                "Limits and access control",
                &[
                    "--max-conns",
                    "--queue-timeout",
                    "--idle-timeout",
                    "--allow",
                    "--deny",
                    "--max-conns-per-ip",
                    "--rate-per-ip",
                    "--per-ip-ipv6-prefix",
                    "--max-connection-age",
                    "--tcp-keepalive",
                    "--tcp-user-timeout",
                ],
            ),
            (
                "UDP",
                &[
                    "--responses",
                    "--per-datagram",
                    "--max-sessions",
                    "--max-sessions-per-ip",
                    "--datagram-rate-per-ip",
                    "--max-datagram-size",
                ],
            ),
            (
                "TLS",
                &["--tls-cert", "--tls-key", "--backend-tls", "--backend-ca"],
            ),
            (
                "Admin",
                &[
                    "--admin",
                    "--admin-token-file",
                    "--admin-socket",
                    "--state-file",
                    "--ready-requires-backends",
                ],
            ),
            (
                "Runtime",
                &[
                    "--config",
                    "--drain-timeout",
                    "--shutdown-delay",
                    "--upgrade-move-connections",
                    "--workers",
                    "--splice",
                    "--resolver",
                    "--access-log",
                    "--access-log-format",
                    "--pid-file",
                ],
            ),
        ];
        let help = Cli::command().render_help().to_string();
        // The sections' doc comments must not replace the command's about.
        assert!(help.starts_with(env!("CARGO_PKG_DESCRIPTION")), "{help}");
        // (section, flag) for every line that declares a flag: help texts
        // also mention flags ("within --fail-timeout"), declarations start
        // the line.
        let mut declared: Vec<(String, String)> = Vec::new();
        let mut section = String::new();
        for line in help.lines() {
            if let Some(heading) = line.strip_suffix(':').filter(|_| !line.starts_with(' ')) {
                section = heading.to_string();
                continue;
            }
            // "  -b, --backend <HOST:PORT>  ...": skip the short form.
            let decl = line.trim_start();
            let decl = match decl.split_once(", ") {
                Some((short, long)) if short.len() == 2 && short.starts_with('-') => long,
                _ => decl,
            };
            if line.starts_with(' ')
                && decl.starts_with("--")
                && let Some(flag) = decl.split_whitespace().next()
            {
                declared.push((section.clone(), flag.to_string()));
            }
        }
        let headings: Vec<&str> = help
            .lines()
            .filter(|l| !l.starts_with(' ') && l.ends_with(':'))
            .map(|l| l.trim_end_matches(':'))
            .collect();
        let mut expected_headings = vec!["Options"];
        expected_headings.extend(sections.iter().map(|(name, _)| *name));
        assert_eq!(headings, expected_headings, "{help}");
        for arg in Cli::command().get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            let flag = format!("--{long}");
            let count = declared.iter().filter(|(_, f)| *f == flag).count();
            assert_eq!(count, 1, "{flag} is declared {count} times:\n{help}");
        }
        for (name, flags) in sections {
            let listed: Vec<&str> = declared
                .iter()
                .filter(|(s, _)| s == name)
                .map(|(_, f)| f.as_str())
                .collect();
            assert_eq!(listed, flags, "section {name}:\n{help}");
        }
    }

    #[test]
    fn health_check_flags_build_each_kind_and_refuse_mixtures() {
        let health = |args: &[&str]| {
            let mut all = vec!["tcplb"];
            all.extend_from_slice(args);
            Cli::try_parse_from(all).map(|cli| cli.into_config().services[0].health.clone())
        };
        let h = health(&[
            "--health-http",
            "OPTIONS /primary",
            "--health-http-host",
            "db",
            "--health-expect-status",
            "200",
            "--health-expect-body",
            "primary",
            "--agent-port",
            "9777",
            "--agent-send",
            "web\\n",
            "--agent-interval",
            "3s",
            "--on-down",
            "close",
            "--on-backup-up",
            "close",
            "--panic-threshold",
            "50%",
        ])
        .unwrap();
        assert_eq!(
            h.check,
            CheckConfig::Http(HttpCheck {
                method: "OPTIONS".into(),
                path: "/primary".into(),
                host: Some("db".into()),
                expect_status: "200".parse().unwrap(),
                expect_body: Some("primary".into()),
            })
        );
        assert_eq!(
            h.agent,
            Some(AgentConfig {
                port: 9777,
                send: Some(b"web\n".to_vec()),
                interval: Duration::from_secs(3)
            })
        );
        assert_eq!(
            (h.on_down, h.on_backup_up),
            (OnHealthChange::Close, OnHealthChange::Close)
        );
        assert_eq!(h.panic_threshold, Some(50));
        let h = health(&[
            "--health-send",
            "PING\\r\\n",
            "--health-expect",
            "role:master",
            "--health-expect-match",
            "contains",
        ])
        .unwrap();
        assert_eq!(
            h.check,
            CheckConfig::send_expect(
                Some(b"PING\r\n".to_vec()),
                Some(b"role:master".to_vec()),
                Match::Contains
            )
        );
        let h = health(&["--health-exec", "/usr/bin/pg_isready -h {host} -p {port}"]).unwrap();
        assert!(matches!(h.check, CheckConfig::Exec(ref e) if e.argv.len() == 5));
        assert_eq!(health(&[]).unwrap(), HealthConfig::default());
        for bad in [
            &["--health-http", "/", "--health-send", "x"][..],
            &["--health-exec", "/bin/true", "--health-expect", "x"],
            &["--health-http-host", "db"],
            &["--health-expect-match", "contains"],
            &["--agent-send", "x"],
            &["--panic-threshold", "0"],
            &["--max-ejection-percent", "101"],
            &["--health-http", "get /"],
            &["--health-expect-status", "2xx"],
        ] {
            assert!(health(bad).is_err(), "{bad:?} was accepted");
        }
        let cli = Cli::try_parse_from([
            "tcplb",
            "--max-ejection-percent",
            "0",
            "--max-ejection-time",
            "30s",
        ])
        .unwrap();
        let s = &cli.into_config().services[0];
        assert_eq!(
            (s.max_ejection_percent, s.max_ejection_time),
            (0, Duration::from_secs(30))
        );
    }

    #[test]
    fn tls_flags_terminate_and_originate() {
        let args = [
            "tcplb",
            "--tls-cert",
            "a.pem",
            "--tls-key",
            "a.key",
            "--tls-cert",
            "b.pem",
            "--tls-key",
            "b.key",
            "--backend-ca",
            "ca.pem",
        ];
        let config = Startup::try_from_args(args).unwrap().config;
        let s = &config.services[0];
        let tls = s.tls.as_ref().unwrap();
        assert_eq!(tls.certificates.len(), 2);
        assert_eq!(tls.certificates[1].cert, PathBuf::from("b.pem"));
        let origin = s.backend_tls.as_ref().unwrap();
        assert_eq!(origin.ca, TrustAnchors::File("ca.pem".into()));
        let config = Startup::try_from_args(["tcplb", "--backend-tls"])
            .unwrap()
            .config;
        let origin = config.services[0].backend_tls.as_ref().unwrap();
        assert_eq!(origin.ca, TrustAnchors::System);
        assert!(config.services[0].tls.is_none());
        let unpaired = [
            "tcplb",
            "--tls-cert",
            "a",
            "--tls-key",
            "a",
            "--tls-cert",
            "b",
        ];
        assert!(Startup::try_from_args(unpaired).is_err());
        assert!(Startup::try_from_args(["tcplb", "--tls-cert", "a"]).is_err());
    }

    #[test]
    fn only_flags_typed_count_as_given() {
        let args = [
            "tcplb",
            "--retries",
            "0",
            "--allow",
            "10.0.0.0/8",
            "--workers",
            "2",
            "-b",
            "127.0.0.1:1",
        ];
        let matches = Cli::command().try_get_matches_from(args).unwrap();
        let mut given = given_on_command_line(&matches);
        given.sort();
        assert_eq!(given, ["allow", "backends", "retries", "workers"]);
    }

    #[test]
    fn every_listener_flag_can_override_the_file() {
        let process_wide = [
            "drain_timeout",
            "shutdown_delay",
            "upgrade_move_connections",
            "ready_requires_backends",
            "admin",
            "admin_token_file",
            "admin_socket",
            "state_file",
            "resolver",
            "access_log",
            "access_log_format",
            "pid_file",
            "config",
            "workers",
            "splice",
            "help",
            "version",
        ];
        // Applied by `apply_overrides` itself, after the keepalive it amends
        // (`a_user_timeout_flag_amends_the_files_keepalive`).
        let amending = ["tcp_user_timeout"];
        let base = ServiceConfig::new("127.0.0.1:1".parse().unwrap(), Vec::new());
        for arg in Cli::command().get_arguments() {
            let id = arg.get_id().as_str();
            if !process_wide.contains(&id) && !amending.contains(&id) {
                let mut s = base.clone();
                assert!(
                    override_service(&mut s, &base, id),
                    "flag id {id:?} is missing from override_service"
                );
            }
        }
    }
}
