//! How a [`Record`] is written: `text` (space-separated fields in a fixed
//! order, in the spirit of HAProxy's tcplog) or `json` (one object per
//! line). Both carry the same fields; docs/observability.md documents each.
//!
//! Text, one line per connection, fields never empty (`-` for "none"):
//!
//! ```text
//! 2026-11-25T10:15:02.123Z 42 127.0.0.1:51234 web 127.0.0.1:8080 127.0.0.1:8081 0.012/0.201/5.317 0 64/1024 completed a.test tls h2,http/1.1 1.3/TLS13_AES_128_GCM_SHA256 h2 full 1.204 - -
//! time                     id client          listener listen    backend        queue/connect/duration retries sent/received cause sni route alpn tls tls_alpn resumed handshake client_subject alert
//! ```
//!
//! The TLS fields are set on a terminating listener or route: `tls` is
//! `VERSION/CIPHER` (`1.3/TLS13_AES_128_GCM_SHA256`), `tls_alpn` the
//! protocol negotiated (`alpn` is what the ClientHello offered), `resumed` is
//! `resumed` or `full`, `handshake` the handshake's time in ms,
//! `client_subject` the client certificate's subject, `alert` the alert of
//! a failed handshake (`AccessDenied`), with its reason as `tls` when
//! the handshake failed (`failed:not_allowed`).
//!
//! Times are milliseconds with microsecond precision. Names that come from
//! outside (listener names, backend names, the SNI, ALPN protocols) are
//! written with every byte outside printable ASCII, space, `"` and `\` as
//! `\xNN`, so a field never holds a space or a line break; in the ALPN list
//! (comma-separated in text, an array in JSON) a comma in a name is `\x2c`
//! too. New fields are only ever appended.

use std::fmt::{Display, Write as _};
use std::io::Write;
use std::time::Duration;

use serde::{Serialize, Serializer};

use super::{Record, TlsRecord};
use crate::config::AccessLogFormat;

/// Appends `record` as one line (with its newline) to `out`.
pub fn write_line(record: &Record, format: AccessLogFormat, out: &mut Vec<u8>) {
    match format {
        AccessLogFormat::Text => text(record, out),
        AccessLogFormat::Json => json(record, out),
    }
}

fn text(r: &Record, out: &mut Vec<u8>) {
    let c = &r.connection;
    // Writing to a Vec cannot fail.
    let _ = write!(
        out,
        "{} {} {} ",
        humantime::format_rfc3339_millis(r.end),
        c.id,
        c.client
    );
    token(out, Some(c.service.pool.name()));
    let _ = write!(out, " {} ", c.service.listen);
    token(out, c.backend().map(|b| b.name()));
    out.push(b' ');
    millis(out, r.queue);
    out.push(b'/');
    millis(out, r.connect);
    out.push(b'/');
    millis(out, Some(r.duration));
    let _ = write!(
        out,
        " {} {}/{} {} ",
        r.retries,
        c.live.sent(),
        c.live.received(),
        r.cause
    );
    token(out, r.server_name());
    out.push(b' ');
    token(out, c.route());
    out.push(b' ');
    match r.alpn() {
        [] => out.push(b'-'),
        protocols => {
            for (i, protocol) in protocols.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                let _ = write!(out, "{}", Protocol(protocol));
            }
        }
    }
    let tls = TlsFields::of(r);
    out.push(b' ');
    match (tls.version, tls.cipher) {
        (Some(version), Some(cipher)) => {
            let _ = write!(out, "{version}/{cipher}");
        }
        _ => match tls.failure {
            Some(failure) => {
                let _ = write!(out, "failed:{failure}");
            }
            None => out.push(b'-'),
        },
    }
    out.push(b' ');
    token(out, tls.alpn);
    out.push(b' ');
    token(out, tls.resumed.map(|r| if r { "resumed" } else { "full" }));
    out.push(b' ');
    millis(out, tls.handshake);
    out.push(b' ');
    token(out, tls.client_subject);
    out.push(b' ');
    token(out, tls.alert);
    out.push(b'\n');
}

/// The TLS fields of a record, each `None` when not known.
#[derive(Default)]
struct TlsFields<'a> {
    version: Option<&'static str>,
    cipher: Option<&'static str>,
    alpn: Option<&'a str>,
    resumed: Option<bool>,
    handshake: Option<Duration>,
    client_subject: Option<&'a str>,
    failure: Option<&'static str>,
    alert: Option<&'a str>,
}

impl<'a> TlsFields<'a> {
    fn of(r: &'a Record) -> TlsFields<'a> {
        match r.tls.as_deref() {
            None => TlsFields::default(),
            Some(TlsRecord::Established(s)) => TlsFields {
                version: Some(s.version),
                cipher: Some(s.cipher),
                alpn: s.alpn.as_deref(),
                resumed: Some(s.resumed),
                handshake: Some(s.handshake),
                client_subject: s.client_subject.as_deref(),
                ..TlsFields::default()
            },
            Some(TlsRecord::Refused { failure, alert }) => TlsFields {
                failure: Some(failure.label()),
                alert: alert.as_deref(),
                ..TlsFields::default()
            },
        }
    }
}

/// One ALPN protocol name, escaped like a text field, and its commas too
/// (the text format's list separator).
struct Protocol<'a>(&'a [u8]);

impl Display for Protocol<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for &b in self.0 {
            if plain(b) && b != b',' {
                f.write_char(char::from(b))?;
            } else {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

/// The ALPN list of the JSON format: an array of escaped names.
struct Protocols<'a>(&'a [Vec<u8>]);

impl Serialize for Protocols<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|p| Shown(Protocol(p))))
    }
}

/// `ms.uuu`, or `-`.
fn millis(out: &mut Vec<u8>, d: Option<Duration>) {
    match d {
        Some(d) => {
            let us = d.as_micros();
            let _ = write!(out, "{}.{:03}", us / 1000, us % 1000);
        }
        None => out.push(b'-'),
    }
}

/// One text field: `-` when absent or empty, else escaped.
fn token(out: &mut Vec<u8>, text: Option<&str>) {
    match text {
        None | Some("") => out.push(b'-'),
        Some(text) => {
            for &b in text.as_bytes() {
                if plain(b) {
                    out.push(b);
                } else {
                    let _ = write!(out, "\\x{b:02x}");
                }
            }
        }
    }
}

/// Whether byte `b` of a name from outside is written as it is (else as
/// `\xNN`).
fn plain(b: u8) -> bool {
    b.is_ascii_graphic() && b != b'"' && b != b'\\'
}

/// The JSON line's shape: field names and order are the format.
#[derive(Serialize)]
struct Line<'a> {
    /// End time, RFC 3339 UTC with milliseconds.
    time: Shown<humantime::Rfc3339Timestamp>,
    /// The connection's id (as in `/api/v1/connections`).
    id: u64,
    /// Client `IP:PORT`.
    client: Shown<std::net::SocketAddr>,
    /// The listener's (pool's) name.
    listener: &'a str,
    /// Where the listener is bound.
    listen: Shown<std::net::SocketAddr>,
    /// The backend's name, or null.
    backend: Option<&'a str>,
    /// Queue wait in ms, or null.
    queue_ms: Option<f64>,
    /// Connect time in ms, or null.
    connect_ms: Option<f64>,
    /// Accept to close in ms.
    duration_ms: f64,
    /// Connect attempts after the first.
    retries: u32,
    /// Bytes client to backend.
    sent: u64,
    /// Bytes backend to client.
    received: u64,
    /// Why it ended (a [`super::Cause`] name).
    cause: &'static str,
    /// The TLS server name, or null.
    sni: Option<&'a str>,
    /// The route, or null.
    route: Option<&'a str>,
    /// The ALPN protocols the ClientHello offered, or null.
    alpn: Option<Protocols<'a>>,
    /// Terminated TLS: the version (`1.3`), or null.
    tls_version: Option<&'static str>,
    /// The cipher suite, or null.
    tls_cipher: Option<&'static str>,
    /// The ALPN protocol negotiated, or null.
    tls_alpn: Option<&'a str>,
    /// Whether the session was resumed, or null.
    tls_resumed: Option<bool>,
    /// The handshake's time in ms, or null.
    tls_handshake_ms: Option<f64>,
    /// The client certificate's subject, or null.
    client_subject: Option<&'a str>,
    /// Why the handshake failed (a `reason` label), or null.
    tls_failure: Option<&'static str>,
    /// The alert of a failed handshake, or null.
    tls_alert: Option<&'a str>,
}

/// A value serialised through its `Display`, without a temporary string.
struct Shown<T>(T);

impl<T: Display> Serialize for Shown<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

fn ms(d: Duration) -> f64 {
    // Microseconds as the unit, so 5317 µs prints as 5.317, not 5.3170000001.
    d.as_micros() as f64 / 1000.0
}

fn json(r: &Record, out: &mut Vec<u8>) {
    let c = &r.connection;
    let tls = TlsFields::of(r);
    let line = Line {
        time: Shown(humantime::format_rfc3339_millis(r.end)),
        id: c.id,
        client: Shown(c.client),
        listener: c.service.pool.name(),
        listen: Shown(c.service.listen),
        backend: c.backend().map(|b| b.name()),
        queue_ms: r.queue.map(ms),
        connect_ms: r.connect.map(ms),
        duration_ms: ms(r.duration),
        retries: r.retries,
        sent: c.live.sent(),
        received: c.live.received(),
        cause: r.cause.name(),
        sni: r.server_name(),
        route: c.route(),
        alpn: Some(r.alpn()).filter(|p| !p.is_empty()).map(Protocols),
        tls_version: tls.version,
        tls_cipher: tls.cipher,
        tls_alpn: tls.alpn,
        tls_resumed: tls.resumed,
        tls_handshake_ms: tls.handshake.map(ms),
        client_subject: tls.client_subject,
        tls_failure: tls.failure,
        tls_alert: tls.alert,
    };
    // Plain strings and numbers always serialise; a failure would leave a
    // partial line, so it is cut off.
    let mark = out.len();
    if serde_json::to_writer(&mut *out, &line).is_ok() {
        out.push(b'\n');
    } else {
        out.truncate(mark);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::config::{ServiceConfig, parse_backend};
    use crate::pool::Pool;
    use crate::proxy::Service;
    use crate::proxy::access_log::{Cause, ConnectionLog};
    use crate::proxy::client_hello::ClientHello;

    fn record(name: &str, connected: bool) -> Record {
        let backends = vec![parse_backend("127.0.0.1:8081").unwrap()];
        let config = ServiceConfig::new("127.0.0.1:8080".parse().unwrap(), backends);
        let mut service = Service::new(Arc::new(Pool::new(name, config)));
        service.listen = "127.0.0.1:8080".parse().unwrap();
        let service = Arc::new(service);
        let mut log = ConnectionLog::accept(service.clone(), "127.0.0.1:51234".parse().unwrap());
        if connected {
            log.connection()
                .set_backend(&service.pool.load().backends[0]);
        }
        let connection = log.connection().clone();
        let mut r = std::mem::replace(&mut log.record, Record::new(connection));
        r.end = UNIX_EPOCH + Duration::from_millis(1_764_065_702_123);
        r.duration = Duration::from_micros(5317);
        r
    }

    fn line(r: &Record, format: AccessLogFormat) -> String {
        let mut out = Vec::new();
        write_line(r, format, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn text_lines_have_every_field_in_order() {
        let mut r = record("web", true);
        r.queue = Some(Duration::from_micros(12));
        r.connect = Some(Duration::from_micros(201));
        r.cause = Cause::Completed;
        let id = r.connection.id;
        assert_eq!(
            line(&r, AccessLogFormat::Text),
            format!(
                "2025-11-25T10:15:02.123Z {id} 127.0.0.1:51234 web 127.0.0.1:8080 \
                 127.0.0.1:8081 0.012/0.201/5.317 0 0/0 completed - - - - - - - - -\n"
            )
        );
        let mut r = record("my pool\n\"x\"", false);
        r.cause = Cause::NoBackend;
        r.hello = Some(Box::new(ClientHello {
            server_name: Some("évil host".into()),
            alpn: vec![b"h2".to_vec(), b"a,b c\\".to_vec()],
        }));
        let text = line(&r, AccessLogFormat::Text);
        assert!(
            text.ends_with(
                " -/-/5.317 0 0/0 no_backend \\xc3\\xa9vil\\x20host - h2,a\\x2cb\\x20c\\x5c - - - - - -\n"
            ),
            "{text}"
        );
        assert!(text.contains(" my\\x20pool\\x0a\\x22x\\x22 "), "{text}");
        assert_eq!(text.lines().count(), 1);
        assert_eq!(text.split(' ').count(), 19, "{text}");
    }

    #[test]
    fn json_lines_carry_the_same_fields() {
        let mut r = record("web", true);
        r.queue = Some(Duration::from_micros(12));
        r.connect = Some(Duration::from_micros(201));
        r.retries = 1;
        r.cause = Cause::BackendReset;
        let backends = vec![parse_backend("127.0.0.1:8081").unwrap()];
        let config = ServiceConfig::new("127.0.0.1:8080".parse().unwrap(), backends);
        r.connection.set_pool(&Arc::new(Pool::new("api", config)));
        let id = r.connection.id;
        assert_eq!(
            line(&r, AccessLogFormat::Json),
            format!(
                "{{\"time\":\"2025-11-25T10:15:02.123Z\",\"id\":{id},\"client\":\"127.0.0.1:51234\",\
                 \"listener\":\"web\",\"listen\":\"127.0.0.1:8080\",\"backend\":\"127.0.0.1:8081\",\
                 \"queue_ms\":0.012,\"connect_ms\":0.201,\"duration_ms\":5.317,\"retries\":1,\
                 \"sent\":0,\"received\":0,\"cause\":\"backend_reset\",\"sni\":null,\"route\":\"api\",\
                 \"alpn\":null,\"tls_version\":null,\"tls_cipher\":null,\"tls_alpn\":null,\"tls_resumed\":null,\
                 \"tls_handshake_ms\":null,\"client_subject\":null,\"tls_failure\":null,\"tls_alert\":null}}\n"
            )
        );
        r.hello = Some(Box::new(ClientHello {
            server_name: Some("a.test".into()),
            alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec(), vec![0xff]],
        }));
        let value: serde_json::Value =
            serde_json::from_str(&line(&r, AccessLogFormat::Json)).unwrap();
        assert_eq!(value["sni"], "a.test");
        assert_eq!(
            value["alpn"],
            serde_json::json!(["h2", "http/1.1", "\\xff"])
        );
        let r = record("we\"ird", false);
        let value: serde_json::Value =
            serde_json::from_str(&line(&r, AccessLogFormat::Json)).unwrap();
        assert_eq!(value["listener"], "we\"ird");
        assert_eq!(value["backend"], serde_json::Value::Null);
        assert_eq!(value["cause"], "shutdown");
    }

    #[test]
    fn terminated_connections_carry_their_tls_fields() {
        let mut r = record("web", true);
        r.cause = Cause::Completed;
        r.tls = Some(Box::new(TlsRecord::Established(
            crate::proxy::tls::Session {
                version: "1.3",
                cipher: "TLS13_AES_128_GCM_SHA256",
                alpn: Some("h2".into()),
                resumed: true,
                handshake: Duration::from_micros(1250),
                client_subject: Some("CN=api client".into()),
                client_cn: Some("api client".into()),
            },
        )));
        let text = line(&r, AccessLogFormat::Text);
        assert!(
            text.ends_with(" 1.3/TLS13_AES_128_GCM_SHA256 h2 resumed 1.250 CN=api\\x20client -\n"),
            "{text}"
        );
        let value: serde_json::Value =
            serde_json::from_str(&line(&r, AccessLogFormat::Json)).unwrap();
        assert_eq!(value["tls_resumed"], true);
        assert_eq!(value["tls_handshake_ms"], 1.25);
        assert_eq!(value["tls_alpn"], "h2");
        assert_eq!(value["alpn"], serde_json::Value::Null);
        r.cause = Cause::ClientCertRejected;
        r.tls = Some(Box::new(TlsRecord::Refused {
            failure: crate::stats::tls::TlsFailure::NotAllowed,
            alert: Some("AccessDenied".into()),
        }));
        let text = line(&r, AccessLogFormat::Text);
        assert!(
            text.ends_with(" client_cert_rejected - - - failed:not_allowed - - - - AccessDenied\n"),
            "{text}"
        );
    }

    #[test]
    fn cause_names_are_distinct_and_snake_case() {
        let names: Vec<&str> = Cause::ALL.iter().map(|c| c.name()).collect();
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len());
        for name in names {
            assert!(
                name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{name}"
            );
        }
    }
}
