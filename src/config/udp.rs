//! The UDP listener model: the protocol a listener speaks, the settings
//! only a datagram listener has (sessions, replies, per-datagram
//! balancing, its limits), and which settings of each protocol the other
//! cannot use.
//!
//! A room of its own because a UDP listener shares every pool setting
//! with a TCP one (backends, strategy, health, drain, weights,
//! discovery) but none of the connection settings: a setting that makes
//! no sense for a listener's protocol is a start-up error naming it, so
//! `connect_timeout = "1s"` on a DNS listener is never silently ignored.

use std::borrow::Cow;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use crate::config::{CheckConfig, ProxyVersion, ServiceConfig, UdpCheck};

/// How long a UDP session lives without a datagram either way, by default.
///
/// 60 s, as Envoy's `udp_proxy`: longer than the 25 s keepalives of
/// WireGuard and the 30 s of most NAT gateways' UDP bindings, so sessions
/// of protocols that keep themselves alive are never cut between two
/// keepalives (Traefik's hard-coded 3 s broke DTLS and VoIP, traefik#6859),
/// and short enough that the sockets of clients that went away are
/// given back within a minute. Request/response protocols (DNS) end their
/// sessions earlier with `responses`.
pub const UDP_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The largest UDP payload over IPv4 (65,535 less the IP and UDP
/// headers): the default `max_datagram_size`.
pub const MAX_IPV4_DATAGRAM: u32 = 65_507;

/// The largest UDP payload over IPv6 without jumbograms: the largest
/// `max_datagram_size` allowed.
pub const MAX_DATAGRAM: u32 = 65_527;

/// The transport a listener speaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Protocol {
    // Connections, piped byte for byte.
    #[default]
    Tcp,
    // Datagrams, in sessions of one client address and port each.
    Udp,
}

impl FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            other => Err(format!("unknown protocol {other:?}: use tcp or udp")),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// What only a UDP listener has. Defaults: sessions end only when idle
/// (`idle_timeout`, 60 s), one backend per session, no session or rate
/// limit, datagrams of up to 65,507 bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct UdpConfig {
    /// A session ends once its backend sent this many replies for every
    /// datagram the client sent (nginx's `proxy_responses`; 1 for DNS), so
    /// request/response protocols do not hold a socket each until the idle
    /// timeout; 0 ends it as soon as the datagram is forwarded (syslog).
    /// `None`: only the idle timeout ends it.
    pub responses: Option<u32>,
    /// Every datagram picks its backend anew (Envoy's
    /// `use_per_packet_load_balancing`), for stateless protocols (DNS,
    /// syslog) whose clients send everything from one port, which would
    /// otherwise stay on one backend for good (nginx/kubernetes-ingress#2005).
    pub per_datagram: bool,
    /// Most sessions this listener holds at once; datagrams that would
    /// start another are dropped (and counted). `None`: unlimited.
    pub max_sessions: Option<u32>,
    /// Most sessions one client IP holds at once (IPv6 counted per
    /// `per_ip_ipv6_prefix`). `None`: unlimited.
    pub max_sessions_per_ip: Option<u32>,
    /// Datagrams per second one client IP may send (a token bucket whose
    /// burst is the rate); the rest are dropped. `None`: unlimited.
    pub datagram_rate_per_ip: Option<f64>,
    /// Client datagrams larger than this are dropped (and counted), never
    /// cut short. Default 65,507, the largest over IPv4.
    pub max_datagram_size: u32,
}

impl Default for UdpConfig {
    fn default() -> Self {
        UdpConfig {
            responses: None,
            per_datagram: false,
            max_sessions: None,
            max_sessions_per_ip: None,
            datagram_rate_per_ip: None,
            max_datagram_size: MAX_IPV4_DATAGRAM,
        }
    }
}

/// What the control API, /metrics and the logs call a listener's pool
/// without a `name`: its address, and for a UDP listener `udp:` before it,
/// so a TCP and a UDP listener on one address (DNS on port 53) are two
/// pools.
pub fn default_pool_name(protocol: Protocol, addr: SocketAddr) -> String {
    match protocol {
        Protocol::Tcp => addr.to_string(),
        Protocol::Udp => format!("udp:{addr}"),
    }
}

/// Checks a `max_datagram_size` value: 1 to 65,527 bytes.
pub fn parse_datagram_size(text: &str) -> Result<u32, String> {
    text.trim()
        .parse::<u32>()
        .ok()
        .filter(|n| (1..=MAX_DATAGRAM).contains(n))
        .ok_or_else(|| {
            format!("bad datagram size {text:?}: expected bytes from 1 to {MAX_DATAGRAM}")
        })
}

/// The settings a TCP listener has and a UDP one cannot use, by their
/// file key (the flag is the same words with dashes), each with why.
pub const TCP_ONLY: [(&str, &str); 13] = [
    (
        "backlog",
        "a UDP socket has no queue of connections to accept",
    ),
    (
        "connect_timeout",
        "a UDP socket connects at once, without a handshake",
    ),
    (
        "on_failure",
        "a datagram no backend takes is dropped and counted: there is no answer to send",
    ),
    ("max_conns", "limit sessions with max_sessions"),
    ("queue_timeout", "datagrams never wait for a slot"),
    (
        "accept_proxy",
        "PROXY headers from clients are read on TCP listeners only",
    ),
    (
        "max_conns_per_ip",
        "limit sessions with max_sessions_per_ip",
    ),
    ("rate_per_ip", "limit datagrams with datagram_rate_per_ip"),
    ("tcp_keepalive", "UDP has no keepalive probes"),
    ("tcp_user_timeout", "UDP has no retransmissions to time out"),
    (
        "max_connection_age",
        "a session moves to another backend only when its own goes down",
    ),
    (
        "tls_inspect_timeout",
        "TLS routes read a ClientHello from a TCP stream",
    ),
    (
        "splice",
        "splice(2) moves bytes between TCP sockets; datagrams are batched instead",
    ),
];

/// The settings only a UDP listener has, by file key.
pub const UDP_ONLY: [&str; 6] = [
    "responses",
    "per_datagram",
    "max_sessions",
    "max_sessions_per_ip",
    "datagram_rate_per_ip",
    "max_datagram_size",
];

/// The settings of a listener of `protocol` that the operator set
/// (`is_set(key)`, by file key) but that its protocol cannot use: each as
/// its key and a message saying why, the setting named as `name(key)`
/// gives it (`` `connect_timeout` `` in a file, `--connect-timeout` on the
/// command line). Settings left at their defaults are never problems.
pub fn key_problems(
    protocol: Protocol,
    is_set: &dyn Fn(&str) -> bool,
    name: &dyn Fn(&str) -> String,
) -> Vec<(&'static str, String)> {
    match protocol {
        Protocol::Udp => TCP_ONLY
            .iter()
            .filter(|(key, _)| is_set(key))
            .map(|(key, why)| (*key, format!("{} is for TCP listeners: {why}", name(key))))
            .collect(),
        Protocol::Tcp => UDP_ONLY
            .iter()
            .filter(|key| is_set(key))
            .map(|key| {
                (
                    *key,
                    format!("{} is for UDP listeners (protocol udp)", name(key)),
                )
            })
            .collect(),
    }
}

/// The protocol whose listeners alone have setting `key` (a file key),
/// if only one protocol's do.
pub fn only_for(key: &str) -> Option<Protocol> {
    if TCP_ONLY.iter().any(|(k, _)| *k == key) {
        Some(Protocol::Tcp)
    } else if UDP_ONLY.contains(&key) {
        Some(Protocol::Udp)
    } else {
        None
    }
}

impl Protocol {
    /// The other one.
    pub fn other(self) -> Protocol {
        match self {
            Protocol::Tcp => Protocol::Udp,
            Protocol::Udp => Protocol::Tcp,
        }
    }
}

/// How a file names a key in a problem: `` `key` ``.
pub fn file_key(key: &str) -> String {
    format!("`{key}`")
}

/// How the command line names a setting in a problem: `--the-flag`.
pub fn flag(key: &str) -> String {
    format!("--{}", key.replace('_', "-"))
}

/// The values `config` holds that its protocol cannot use, however they
/// got there (a PROXY v1 header cannot describe a datagram, set in the
/// listener or inherited): each as its key and a message.
pub fn value_problems(config: &ServiceConfig) -> Vec<(&'static str, String)> {
    let mut found = Vec::new();
    let health = &config.health;
    match config.protocol {
        Protocol::Udp => {
            if !config.routes.is_empty() {
                found.push((
                    "route",
                    "`route` is for TCP listeners: TLS routes read a ClientHello from a TCP \
                     stream"
                        .to_string(),
                ));
            }
            if config.tls.is_some() {
                found.push((
                    "tls",
                    "`tls` is for TCP listeners: tcplb terminates TLS, not DTLS".to_string(),
                ));
            }
            if config.backend_tls.is_some() {
                found.push((
                    "backend_tls",
                    "`backend_tls` is for TCP listeners: tcplb speaks TLS to backends, not \
                     DTLS"
                        .to_string(),
                ));
            }
            if config.send_proxy == Some(ProxyVersion::V1) {
                found.push((
                    "send_proxy",
                    "PROXY protocol v1 has no way to say UDP: use send_proxy = \"v2\", which \
                     prefixes every datagram with a v2 header"
                        .to_string(),
                ));
            }
            let tcp_check = match &health.check {
                CheckConfig::Steps(_) => Some("send/expect"),
                CheckConfig::Http(_) => Some("http"),
                _ => None,
            };
            if let Some(kind) = tcp_check
                && health.port.is_none()
            {
                found.push((
                    "health",
                    format!(
                        "a {kind} health check talks TCP, and the backends of a UDP listener \
                         have no TCP port: check them with a datagram (health.udp, \
                         --health-udp), or give the TCP port their checks go to \
                         (health.port, --health-port)"
                    ),
                ));
            }
        }
        Protocol::Tcp => {
            if matches!(health.check, CheckConfig::Udp(_)) {
                found.push((
                    "health",
                    "a udp health check sends a datagram: it is for UDP listeners \
                     (protocol = \"udp\")"
                        .to_string(),
                ));
            }
        }
    }
    found
}

impl ServiceConfig {
    /// How long a session or connection may stay silent: the configured
    /// `idle_timeout`; for a UDP session without one, [`UDP_IDLE_TIMEOUT`]
    /// (a TCP connection without one has no limit).
    pub fn idle_limit(&self) -> Option<Duration> {
        match self.protocol {
            Protocol::Udp => Some(self.idle_timeout.unwrap_or(UDP_IDLE_TIMEOUT)),
            Protocol::Tcp => self.idle_timeout,
        }
    }

    /// The check this pool's backends get: the configured one, except on a
    /// UDP listener left with the default connect check and no TCP health
    /// port, whose backends have nothing to connect to: they get a UDP
    /// check that sends an empty datagram and passes unless an ICMP port
    /// unreachable comes back (NGINX Plus's `health_check udp` does the
    /// same with a string of its own; an empty datagram is one a syslog
    /// or DNS server drops without logging a line).
    pub fn active_check(&self) -> Cow<'_, CheckConfig> {
        let health = &self.health;
        if self.protocol == Protocol::Udp
            && health.check == CheckConfig::Connect
            && health.port.is_none()
        {
            return Cow::Owned(CheckConfig::Udp(UdpCheck::default()));
        }
        Cow::Borrowed(&health.check)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HttpCheck;

    fn udp() -> ServiceConfig {
        let mut c = ServiceConfig::new("127.0.0.1:53".parse().unwrap(), Vec::new());
        c.protocol = Protocol::Udp;
        c
    }

    #[test]
    fn protocols_parse_and_print() {
        for name in ["tcp", "udp"] {
            assert_eq!(name.parse::<Protocol>().unwrap().to_string(), name);
        }
        assert_eq!(
            "sctp".parse::<Protocol>().unwrap_err(),
            "unknown protocol \"sctp\": use tcp or udp"
        );
    }

    #[test]
    fn a_tcp_setting_on_a_udp_listener_is_named_and_defaults_are_not() {
        assert!(key_problems(Protocol::Udp, &|_| false, &file_key).is_empty());
        let set = |key: &str| key == "connect_timeout" || key == "splice";
        let keys: Vec<&str> = key_problems(Protocol::Udp, &set, &file_key)
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        assert_eq!(keys, ["connect_timeout", "splice"]);
        let (_, message) = &key_problems(Protocol::Udp, &|key| key == "max_conns", &flag)[0];
        assert_eq!(
            message,
            "--max-conns is for TCP listeners: limit sessions with max_sessions"
        );
    }

    #[test]
    fn values_a_udp_listener_cannot_use_are_problems_whoever_set_them() {
        let mut c = udp();
        c.send_proxy = Some(ProxyVersion::V1);
        c.health.check = CheckConfig::Http(HttpCheck::default());
        c.routes.push(crate::config::RouteConfig {
            name: "r".into(),
            server_names: vec!["a.test".parse().unwrap()],
            alpn: Vec::new(),
            pool: udp(),
        });
        let keys: Vec<&str> = value_problems(&c).iter().map(|p| p.0).collect();
        assert_eq!(keys, ["route", "send_proxy", "health"]);
        c.routes.clear();
        // An HTTP check on a health port is a TCP check it can have.
        c.send_proxy = Some(ProxyVersion::V2);
        c.health.port = Some(8080);
        assert!(value_problems(&c).is_empty());
    }

    #[test]
    fn udp_settings_on_a_tcp_listener_are_named() {
        let mut c = ServiceConfig::new("127.0.0.1:80".parse().unwrap(), Vec::new());
        assert!(value_problems(&c).is_empty());
        let found = key_problems(Protocol::Tcp, &|key| key == "responses", &file_key);
        assert_eq!(
            found,
            [(
                "responses",
                "`responses` is for UDP listeners (protocol udp)".to_string()
            )]
        );
        c.health.check = CheckConfig::Udp(UdpCheck::default());
        assert_eq!(value_problems(&c)[0].0, "health");
    }

    #[test]
    fn sessions_idle_out_after_a_minute_unless_told_otherwise() {
        let mut c = udp();
        assert_eq!(c.idle_limit(), Some(UDP_IDLE_TIMEOUT));
        c.idle_timeout = Some(Duration::from_secs(5));
        assert_eq!(c.idle_limit(), Some(Duration::from_secs(5)));
        c.protocol = Protocol::Tcp;
        c.idle_timeout = None;
        assert_eq!(c.idle_limit(), None);
    }

    #[test]
    fn a_udp_pool_without_a_check_of_its_own_is_probed_with_a_datagram() {
        let mut c = udp();
        assert_eq!(*c.active_check(), CheckConfig::Udp(UdpCheck::default()));
        // A TCP health port keeps the connect check.
        c.health.port = Some(8053);
        assert_eq!(*c.active_check(), CheckConfig::Connect);
        c.protocol = Protocol::Tcp;
        c.health.port = None;
        assert_eq!(*c.active_check(), CheckConfig::Connect);
    }

    #[test]
    fn datagram_sizes_are_bounded() {
        assert_eq!(parse_datagram_size("1500"), Ok(1500));
        assert_eq!(parse_datagram_size("65527"), Ok(MAX_DATAGRAM));
        assert!(parse_datagram_size("0").is_err());
        assert!(parse_datagram_size("65528").is_err());
    }
}
