//! Command-line flags, and their translation into a [`Config`].
//!
//! clap rejects bad values with a message naming the flag and exit code 2,
//! before anything binds.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::config::{
    self, AccessConfig, BackendSpec, Cidr, Config, DEFAULT_BACKENDS, HealthConfig, ProxyVersion,
    ServiceConfig, parse_duration,
};
use crate::failure::OnFailure;
use crate::pipe::SpliceMode;
use crate::strategy::StrategyKind;

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

fn rate(text: &str) -> Result<f64, String> {
    let number = text.strip_suffix("/s").unwrap_or(text);
    number
        .parse::<f64>()
        .ok()
        .filter(|r| r.is_finite() && *r > 0.0)
        .ok_or_else(|| format!("bad rate {text:?}: expected connections per second, e.g. 20/s"))
}

fn bytes(text: &str) -> Result<Vec<u8>, String> {
    config::parse_escaped(text)
}

/// A Layer-4 (raw TCP) load balancer: accepts connections and pipes each
/// one to the next healthy backend.
#[derive(Parser, Debug)]
#[command(name = "tcplb", version, about, max_term_width = 100)]
pub struct Cli {
    /// Address to accept clients on: ADDR:PORT, [IPv6]:PORT, or a bare PORT.
    #[arg(long, default_value = "0.0.0.0:8080", value_parser = config::parse_listen, value_name = "ADDR")]
    pub listen: SocketAddr,

    /// Backend HOST:PORT[=WEIGHT][,maxconn=N]; repeat the flag or separate
    /// backends with commas. [default: 127.0.0.1:8081,127.0.0.1:8082,127.0.0.1:8083]
    #[arg(long = "backend", short = 'b', value_parser = backend_list, value_name = "HOST:PORT")]
    pub backends: Vec<BackendList>,

    /// How to choose a backend: round-robin, least-conn, p2c (power of two
    /// choices) or hash (consistent hash of the client IP).
    #[arg(long, default_value = "round-robin", value_name = "NAME")]
    pub strategy: StrategyKind,

    /// Give up connecting to a backend after this long.
    #[arg(long, default_value = "3s", value_parser = positive_duration, value_name = "DUR")]
    pub connect_timeout: Duration,

    /// After a failed connect, try up to this many other healthy backends.
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub retries: u32,

    /// What a client gets when no backend can take it: `http` (a minimal
    /// 502/503 response) or `close` (just close, for non-HTTP protocols).
    #[arg(long, default_value = "http", value_name = "MODE")]
    pub on_failure: OnFailure,

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
    /// Example: 'PING\r\n'.
    #[arg(long, value_parser = bytes, value_name = "STR")]
    pub health_send: Option<Vec<u8>>,

    /// Prefix the health check reply must start with, e.g. '+PONG'.
    #[arg(long, value_parser = bytes, value_name = "STR")]
    pub health_expect: Option<Vec<u8>>,

    /// On SIGINT/SIGTERM, let open connections finish for up to this long.
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DUR")]
    pub drain_timeout: Duration,

    /// Listen backlog: connections the kernel queues before we accept them.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
    pub backlog: u32,

    /// Passive health: N failed connects within --fail-timeout take a backend
    /// out for --fail-timeout, before the prober notices. 0 is off.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub max_fails: u32,

    /// Window and penalty for --max-fails.
    #[arg(long, default_value = "10s", value_parser = positive_duration, value_name = "DUR")]
    pub fail_timeout: Duration,

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

    /// Send a PROXY protocol header (v1 or v2) to backends, so they see the client's address.
    #[arg(long, value_name = "VERSION")]
    pub send_proxy: Option<ProxyVersion>,

    /// Require a PROXY protocol header (v1 or v2) from clients (tcplb behind another balancer).
    #[arg(long)]
    pub accept_proxy: bool,

    /// Serve only clients in this network (CIDR, repeatable). [default: everyone]
    #[arg(long, value_name = "CIDR")]
    pub allow: Vec<Cidr>,

    /// Refuse clients in this network (CIDR, repeatable); checked before --allow.
    #[arg(long, value_name = "CIDR")]
    pub deny: Vec<Cidr>,

    /// Most open connections from one client IP. [default: unlimited]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
    pub max_conns_per_ip: Option<u32>,

    /// New connections per second from one client IP, e.g. 20/s. [default: unlimited]
    #[arg(long, value_parser = rate, value_name = "N/s")]
    pub rate_per_ip: Option<f64>,

    /// Serve Prometheus /metrics and JSON /status on this address (e.g. 127.0.0.1:9090). [default: off]
    #[arg(long, value_parser = config::parse_listen, value_name = "ADDR")]
    pub admin: Option<SocketAddr>,

    /// Read listeners and backends from this TOML file; flags given on the
    /// command line override it. SIGHUP re-reads it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Runtime worker threads. [default: one per core]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024), value_name = "N")]
    pub workers: Option<u32>,

    /// Move bulk data with splice(2), zero-copy (Linux): `auto` once a
    /// connection shows bulk traffic, `on` always, `off` never.
    #[arg(long, default_value = "auto", value_name = "MODE")]
    pub splice: SpliceMode,
}

impl Cli {
    pub fn into_config(self) -> Config {
        let mut backends: Vec<BackendSpec> = self.backends.into_iter().flat_map(|l| l.0).collect();
        if backends.is_empty() {
            backends = DEFAULT_BACKENDS
                .iter()
                .filter_map(|b| config::parse_backend(b).ok())
                .collect();
        }
        let service = ServiceConfig {
            listen: self.listen,
            backlog: self.backlog,
            backends,
            strategy: self.strategy,
            connect_timeout: self.connect_timeout,
            retries: self.retries,
            on_failure: self.on_failure,
            health: HealthConfig {
                interval: self.health_interval,
                timeout: self.health_timeout,
                rise: self.rise,
                fall: self.fall,
                send: self.health_send,
                expect: self.health_expect,
            },
            max_fails: self.max_fails,
            fail_timeout: self.fail_timeout,
            max_conns: self.max_conns,
            queue_timeout: self.queue_timeout,
            idle_timeout: self.idle_timeout,
            send_proxy: self.send_proxy,
            accept_proxy: self.accept_proxy,
            access: AccessConfig {
                allow: self.allow,
                deny: self.deny,
                max_conns_per_ip: self.max_conns_per_ip,
                rate_per_ip: self.rate_per_ip,
            },
        };
        Config {
            services: vec![service],
            drain_timeout: self.drain_timeout,
            admin: self.admin,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
