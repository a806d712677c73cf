//! Parsers for the values operators type: backend and listen addresses,
//! durations, rates and escaped byte strings. Shared by the command line and
//! the file, so both accept exactly the same spellings with the same errors.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use super::{AdminState, BackendSpec, KeepaliveConfig, MAX_USER_TIMEOUT};

/// How a backend discovered through DNS SRV records is written:
/// `srv:_pg._tcp.db.service.consul`.
pub const SRV_PREFIX: &str = "srv:";

/// Parses `HOST:PORT[=WEIGHT]`, e.g. `127.0.0.1:8081`, `[::1]:6379=3`,
/// `db.internal:5432`, or `srv:NAME` (an SRV name: ports and weights come
/// from its records).
///
/// Hostnames are resolved here, through the system resolver: a name that
/// does not resolve is a start-up error, like nginx's "host not found in
/// upstream"; DNS discovery then keeps it current. An SRV name is only
/// checked for its form here (the system resolver has no SRV lookup); the
/// runtime looks it up before it serves.
pub fn parse_backend(text: &str) -> Result<BackendSpec, String> {
    let text = text.trim();
    if let Some(name) = text.strip_prefix(SRV_PREFIX) {
        return parse_srv(text, name);
    }
    let (hostport, weight) = match text.rsplit_once('=') {
        Some((hp, w)) => {
            let weight: u32 = w.parse().map_err(|_| {
                format!("bad weight {w:?} in backend {text:?}: expected a whole number from 1")
            })?;
            if weight == 0 {
                return Err(format!(
                    "bad weight 0 in backend {text:?}: expected a whole number from 1"
                ));
            }
            (hp, weight)
        }
        None => (text, 1),
    };
    let addr = resolve(hostport).map_err(|why| format!("bad backend address {text:?}: {why}"))?;
    Ok(BackendSpec {
        name: hostport.to_string(),
        addr,
        weight,
        max_conns: None,
        admin_state: AdminState::Ready,
        backup: false,
        check_addr: None,
        check_port: None,
        source: None,
    })
}

/// An `srv:NAME` backend: checked for its form only. Its address is
/// unspecified (port 0) until a lookup finds its members.
fn parse_srv(text: &str, name: &str) -> Result<BackendSpec, String> {
    if name.contains('=') {
        return Err(format!(
            "bad backend {text:?}: an srv: backend takes its weights from the SRV records"
        ));
    }
    let labels_ok = name.trim_end_matches('.').split('.').all(|l| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    if name.is_empty() || name.len() > 253 || !labels_ok {
        return Err(format!(
            "bad SRV name in backend {text:?}: expected e.g. srv:_pg._tcp.db.service.consul"
        ));
    }
    Ok(BackendSpec {
        name: text.to_string(),
        addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        weight: 1,
        max_conns: None,
        admin_state: AdminState::Ready,
        backup: false,
        check_addr: None,
        check_port: None,
        source: None,
    })
}

/// Parses a DNS server address: `IP` or `IP:PORT` (`[IPv6]:PORT`); the
/// port is 53 unless given.
pub fn parse_resolver(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 53));
    }
    text.parse::<SocketAddr>().map_err(|_| {
        format!("bad resolver {text:?}: expected an IP address with an optional port, e.g. 10.0.0.53 or [::1]:5353")
    })
}

/// Parses a `--backend` value: one or more backends separated by commas.
/// A `maxconn=N` item applies to the backend before it:
/// `10.0.0.1:80=3,maxconn=100,10.0.0.2:80`.
pub fn parse_backend_list(text: &str) -> Result<Vec<BackendSpec>, String> {
    let mut out: Vec<BackendSpec> = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if let Some(limit) = item.strip_prefix("maxconn=") {
            let last = out
                .last_mut()
                .ok_or_else(|| format!("{item:?} in {text:?} must follow the backend it limits"))?;
            let limit: u32 = limit.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                format!("bad maxconn {limit:?} in {text:?}: expected a whole number from 1")
            })?;
            last.max_conns = Some(limit);
        } else {
            out.push(parse_backend(item)?);
        }
    }
    if out.is_empty() {
        return Err(format!("no backend address in {text:?}"));
    }
    Ok(out)
}

/// Turns `HOST:PORT` into one socket address.
pub fn resolve(hostport: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = hostport.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let (host, port) = hostport
        .rsplit_once(':')
        .ok_or("expected HOST:PORT (for IPv6, [ADDR]:PORT)")?;
    if host.is_empty() {
        return Err("the host is missing".into());
    }
    if host.contains(':') && !host.starts_with('[') {
        return Err("IPv6 addresses go in brackets: [ADDR]:PORT".into());
    }
    let port: u16 = port
        .parse()
        .map_err(|_| format!("bad port {port:?}: expected 0-65535"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host:?}: {e}"))?
        .collect();
    // Prefer IPv4 so `localhost` reaches servers bound to 127.0.0.1 only.
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("{host:?} resolves to no address"))
}

/// Parses a listen address: `ADDR:PORT`, or a bare `PORT` meaning all IPv4 interfaces.
pub fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = text.parse::<u16>() {
        return Ok(SocketAddr::from(([0, 0, 0, 0], port)));
    }
    resolve(text).map_err(|why| format!("bad listen address {text:?}: {why}"))
}

/// Longest duration accepted, about 31 years: far beyond any sensible
/// timeout, and far enough from `Instant`'s limits that adding it to now
/// cannot overflow.
const MAX_DURATION: Duration = Duration::from_secs(1_000_000_000);

/// Parses durations such as `10s`, `250ms`, `2m`, `1h 30m`, `1.5h`, `2d`; a
/// bare number is seconds and may be fractional (`1.5` is 1500 ms).
///
/// The syntax is humantime's, the ecosystem's standard: units `ns`, `us`,
/// `ms`, `s`, `m`, `h`, `d`, `w`, `M` (30.44 days), `y` and their long
/// spellings (`sec`, `min`, `hours`, `days`, ...), summed when several are
/// given. Surrounding whitespace is ignored.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    // humantime wants a unit on every number; a bare number here is seconds.
    let bare = !text.is_empty() && text.chars().all(|c| c.is_ascii_digit() || c == '.');
    let parsed = if bare {
        humantime::parse_duration(&format!("{text}s"))
    } else {
        humantime::parse_duration(text)
    };
    let out_of_range = || format!("duration {text:?} is out of range");
    match parsed {
        Ok(d) if d > MAX_DURATION => Err(out_of_range()),
        Ok(d) => Ok(d),
        Err(humantime::DurationError::NumberOverflow) => Err(out_of_range()),
        Err(humantime::DurationError::UnknownUnit { unit, value, .. }) if unit.is_empty() => Err(
            format!("bad duration {text:?}: {value} needs a unit, e.g. {value}s or {value}m"),
        ),
        Err(humantime::DurationError::UnknownUnit { unit, .. }) => Err(format!(
            "bad duration unit {unit:?} in {text:?}: use ms, s, m, h or d (e.g. 1h 30m)"
        )),
        Err(_) => Err(format!(
            "bad duration {text:?}: expected e.g. 10s, 250ms, 2m or 1h 30m"
        )),
    }
}

/// Parses a per-client rate: connections (or datagrams) per second, `20`
/// or `20/s`.
pub fn parse_rate(text: &str) -> Result<f64, String> {
    let number = text.strip_suffix("/s").unwrap_or(text);
    number
        .parse::<f64>()
        .ok()
        .filter(|r| r.is_finite() && *r > 0.0)
        .ok_or_else(|| format!("bad rate {text:?}: expected a number per second, e.g. 20/s"))
}

/// Parses a bounded-load factor: a number from 1 (every backend at most
/// the mean, strict) to 100; 1.25 is the usual choice.
pub fn parse_balance_factor(text: &str) -> Result<f64, String> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|f| (1.0..=100.0).contains(f))
        .ok_or_else(|| {
            format!("bad balance factor {text:?}: expected a number from 1 to 100, e.g. 1.25")
        })
}

/// Parses TCP keepalive settings: `IDLE` or `IDLE,INTERVAL,COUNT`, e.g.
/// `60s` or `60s,10s,6`.
pub fn parse_keepalive(text: &str) -> Result<KeepaliveConfig, String> {
    let bad = |why: &str| {
        format!(
            "bad keepalive {text:?}: {why}; expected IDLE or IDLE,INTERVAL,COUNT, e.g. 60s,10s,6"
        )
    };
    let parts: Vec<&str> = text.split(',').map(str::trim).collect();
    let positive = |part: &str| -> Result<Duration, String> {
        let d = parse_duration(part)?;
        if d < Duration::from_secs(1) || d > Duration::from_secs(32_767) {
            return Err(bad(&format!(
                "{part} must be from 1s to 32767s (the kernel's range)"
            )));
        }
        Ok(d)
    };
    match parts[..] {
        [idle] => Ok(KeepaliveConfig::with_idle(positive(idle)?)),
        [idle, interval, count] => {
            let count: u32 = count
                .parse()
                .ok()
                .filter(|n| (1..=127).contains(n))
                .ok_or_else(|| bad("COUNT must be a whole number from 1 to 127"))?;
            Ok(KeepaliveConfig::new(
                positive(idle)?,
                positive(interval)?,
                count,
            ))
        }
        _ => Err(bad("wrong number of parts")),
    }
}

/// Parses a `TCP_USER_TIMEOUT`: a duration from 1 ms to
/// [`MAX_USER_TIMEOUT`], or `0` / `off` (`None`: the option is not set).
pub fn parse_user_timeout(text: &str) -> Result<Option<Duration>, String> {
    if text.trim() == "off" {
        return Ok(None);
    }
    let d = parse_duration(text)?;
    if d.is_zero() {
        return Ok(None);
    }
    if d < Duration::from_millis(1) || d > MAX_USER_TIMEOUT {
        return Err(format!(
            "bad user timeout {text:?}: expected 0 or off, or from 1ms to {}ms (the kernel's range)",
            MAX_USER_TIMEOUT.as_millis()
        ));
    }
    Ok(Some(d))
}

/// Parses an escaped byte string for health checks: `\r`, `\n`, `\t`, `\\`, `\xNN`.
pub fn parse_escaped(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match bytes.next() {
            Some(b'r') => out.push(b'\r'),
            Some(b'n') => out.push(b'\n'),
            Some(b't') => out.push(b'\t'),
            Some(b'0') => out.push(0),
            Some(b'\\') => out.push(b'\\'),
            Some(b'x') => {
                let hex: Vec<u8> = bytes.by_ref().take(2).collect();
                let byte = std::str::from_utf8(&hex)
                    .ok()
                    .filter(|h| h.len() == 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| {
                        format!("bad \\x escape in {text:?}: expected two hex digits")
                    })?;
                out.push(byte);
            }
            other => {
                let shown = other.map(|c| (c as char).to_string()).unwrap_or_default();
                return Err(format!("unknown escape \\{shown} in {text:?}"));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Network;

    #[test]
    fn backends_parse_with_weights_and_limits() {
        let list = parse_backend_list("127.0.0.1:8081=3,maxconn=10, [::1]:8082").unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].addr, "127.0.0.1:8081".parse().unwrap());
        assert_eq!((list[0].weight, list[0].max_conns), (3, Some(10)));
        assert_eq!(list[1].addr, "[::1]:8082".parse().unwrap());
        assert_eq!((list[1].weight, list[1].max_conns), (1, None));
        assert_eq!(parse_backend("localhost:80").unwrap().addr.port(), 80);
    }

    #[test]
    fn srv_backends_and_resolvers_parse() {
        let srv = parse_backend("srv:_pg._tcp.db.service.consul").unwrap();
        assert_eq!(srv.name, "srv:_pg._tcp.db.service.consul");
        assert_eq!(srv.addr.port(), 0, "found by a lookup, later");
        assert_eq!(
            srv.dns_name(),
            Some(crate::config::DnsName::Srv(
                "_pg._tcp.db.service.consul".into()
            ))
        );
        let list = parse_backend_list("srv:_x._tcp.example.,maxconn=5").unwrap();
        assert_eq!(list[0].max_conns, Some(5));
        for bad in [
            "srv:",
            "srv:_pg._tcp.x=3",
            "srv:a..b",
            "srv:has space",
            "srv:x:80",
        ] {
            let err = parse_backend(bad).unwrap_err();
            assert!(err.contains(bad), "{err:?} should name {bad:?}");
        }
        assert_eq!(
            parse_backend("localhost:80").unwrap().dns_name(),
            Some(crate::config::DnsName::Host {
                host: "localhost".into(),
                port: 80
            })
        );
        assert_eq!(parse_backend("127.0.0.1:80").unwrap().dns_name(), None);
        assert_eq!(parse_backend("[::1]:80").unwrap().dns_name(), None);

        assert_eq!(
            parse_resolver("10.0.0.53").unwrap(),
            "10.0.0.53:53".parse().unwrap()
        );
        assert_eq!(
            parse_resolver("[::1]:5353").unwrap(),
            "[::1]:5353".parse().unwrap()
        );
        assert_eq!(parse_resolver("::1").unwrap(), "[::1]:53".parse().unwrap());
        for bad in ["dns.example", "10.0.0.53:x", ""] {
            assert!(parse_resolver(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn malformed_backends_are_rejected_with_the_value() {
        for bad in [
            "127.0.0.1",
            "127.0.0.1:",
            "127.0.0.1:99999",
            ":80",
            "::1:80",
            "127.0.0.1:80=0",
            "127.0.0.1:80=x",
            "no-such-host.invalid:80",
        ] {
            let err = parse_backend(bad).unwrap_err();
            assert!(err.contains(bad), "{err:?} should name {bad:?}");
        }
        assert!(parse_backend_list("maxconn=3").is_err());
        assert!(parse_backend_list("127.0.0.1:1,maxconn=0").is_err());
        assert!(parse_backend_list(" , ").is_err());
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("ten").is_err());
        // Units past hours come with humantime; unknown ones are still refused.
        assert!(parse_duration("5x").is_err());
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn durations_take_humantime_syntax_and_errors_name_the_value() {
        assert_eq!(parse_duration(" 10 ").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("0.25").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1.5h").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172_800));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        for (bad, says) in [
            ("ten", "expected e.g. 10s, 250ms, 2m"),
            ("-5s", "expected e.g. 10s, 250ms, 2m"),
            ("5x", "bad duration unit \"x\""),
            ("1h 30", "30 needs a unit"),
            ("40y", "out of range"),
            ("99999999999", "out of range"),
            ("99999999999999999999999s", "out of range"),
        ] {
            let err = parse_duration(bad).unwrap_err();
            assert!(
                err.contains(&format!("{bad:?}")),
                "{err:?} should name {bad:?}"
            );
            assert!(err.contains(says), "{bad:?}: {err:?} should say {says:?}");
        }
    }

    #[test]
    fn listen_accepts_bare_ports_and_ipv6() {
        assert_eq!(
            parse_listen("8080").unwrap(),
            "0.0.0.0:8080".parse().unwrap()
        );
        assert_eq!(parse_listen("[::]:80").unwrap(), "[::]:80".parse().unwrap());
        assert!(parse_listen("nonsense").is_err());
    }

    #[test]
    fn cidrs_match_their_networks() {
        let net: Network = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains("10.1.200.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.0.9".parse().unwrap()));
        let v6: Network = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(!v6.contains("10.1.0.1".parse().unwrap()));
        let all: Network = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        let host: Network = "127.0.0.1".parse().unwrap();
        assert_eq!(host.ipnet().prefix_len(), 32);
        for bad in ["10.0.0.0/33", "::/129", "10.0.0/8", "x/1", "10.0.0.0/"] {
            assert!(bad.parse::<Network>().is_err(), "{bad}");
        }
    }

    #[test]
    fn keepalive_and_balance_factor_parse() {
        let k = parse_keepalive("60s").unwrap();
        assert_eq!(
            (k.idle, k.interval, k.count),
            (Duration::from_secs(60), Duration::from_secs(10), 6)
        );
        let k = parse_keepalive("30s, 5s, 3").unwrap();
        assert_eq!(
            (k.idle, k.interval, k.count),
            (Duration::from_secs(30), Duration::from_secs(5), 3)
        );
        for bad in [
            "",
            "0s",
            "60s,10s",
            "60s,10s,0",
            "60s,10s,200",
            "10h",
            "60s,x,3",
        ] {
            let err = parse_keepalive(bad).unwrap_err();
            assert!(
                err.contains("keepalive") || err.contains("duration"),
                "{bad}: {err}"
            );
        }
        assert_eq!(parse_balance_factor("1.25").unwrap(), 1.25);
        for bad in ["0.9", "x", "NaN", "1000"] {
            assert!(parse_balance_factor(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_user_timeout_follows_keepalive_unless_given() {
        let secs = |s| Some(Duration::from_secs(s));
        assert_eq!(parse_keepalive("2s,1s,3").unwrap().user_timeout, secs(5));
        assert_eq!(parse_keepalive("60s").unwrap().user_timeout, secs(120));
        // The longest keepalive is more than the kernel takes.
        let longest = parse_keepalive("32767s,32767s,127").unwrap();
        assert_eq!(longest.user_timeout, Some(MAX_USER_TIMEOUT));
        assert_eq!(parse_user_timeout("3s").unwrap(), secs(3));
        assert_eq!(
            parse_user_timeout("250ms").unwrap(),
            Some(Duration::from_millis(250))
        );
        for off in ["0", "0s", "off"] {
            assert_eq!(parse_user_timeout(off).unwrap(), None, "{off}");
        }
        for bad in ["25d", "10us", "-1s", "soon"] {
            assert!(parse_user_timeout(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn escapes_decode() {
        assert_eq!(parse_escaped("PING\\r\\n").unwrap(), b"PING\r\n");
        assert_eq!(parse_escaped("\\x00\\xff").unwrap(), vec![0, 255]);
        assert!(parse_escaped("\\q").is_err());
        assert!(parse_escaped("\\x4").is_err());
    }
}
