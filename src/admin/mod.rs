//! The admin endpoint (`--admin ADDR`, off by default): what the balancer
//! is doing, for Prometheus and for people. Read-only: no request changes
//! any state.
//!
//! Plain HTTP/1.1, one request per connection, on its own small accept loop:
//!
//! - `GET /metrics`: Prometheus text exposition format 0.0.4.
//! - `GET /status`: the same picture as JSON.
//! - another path: 404; another method: 405; a malformed request: 400; a
//!   request head over [`MAX_HEAD`] bytes: 431. A head not complete within
//!   [`HEAD_TIMEOUT`] is closed without an answer, and at most
//!   [`MAX_ADMIN_CONNECTIONS`] are served at once, so slow or many clients
//!   cannot pile up.
//!
//! Metrics. Every backend series has the labels `listener` (the listening
//! address, e.g. `127.0.0.1:8080`) and `backend` (the backend as configured,
//! e.g. `127.0.0.1:8081`); every listener series has `listener`.
//!
//! | name | type | meaning |
//! |---|---|---|
//! | `tcplb_backend_up` | gauge | 1 when the backend is healthy, else 0 |
//! | `tcplb_backend_active_connections` | gauge | connections open to the backend now |
//! | `tcplb_backend_connections_total` | counter | connections established to the backend |
//! | `tcplb_backend_connect_failures_total` | counter | failed connect attempts (refused, timed out) |
//! | `tcplb_backend_sent_bytes_total` | counter | bytes from clients to the backend ("bytes in") |
//! | `tcplb_backend_received_bytes_total` | counter | bytes from the backend to clients ("bytes out") |
//! | `tcplb_backend_check_latency_seconds` | gauge | duration of the last successful health check |
//! | `tcplb_backend_idle_timeouts_total` | counter | connections closed by `--idle-timeout` |
//! | `tcplb_listener_accepted_total` | counter | client connections accepted (refused ones included) |
//! | `tcplb_listener_rejected_total` | counter | clients refused by access control or limits |
//! | `tcplb_listener_active_connections` | gauge | client connections open now |
//! | `tcplb_listener_proxy_header_errors_total` | counter | clients closed for a bad or missing PROXY header |
//! | `tcplb_listener_failures_total` | counter | clients answered 502/503 (or closed); label `code` = `502` or `503` |
//!
//! Byte counters are added when a connection closes.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use anyhow::Context;
use log::debug;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::pool::Pool;
use crate::pool::connect::is_local_exhaustion;
use crate::proxy::listener;
use crate::stats::ListenerStats;

/// Largest request head (request line and headers) accepted.
pub const MAX_HEAD: usize = 8 * 1024;
/// Time a client has to send its whole request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a client has to take the whole response.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Admin connections served at once; more are closed on accept.
pub const MAX_ADMIN_CONNECTIONS: usize = 16;
const BACKLOG: u32 = 64;

/// One listener as the admin endpoint sees it.
#[derive(Clone)]
pub struct Watched {
    pub listen: SocketAddr,
    pub pool: Arc<Pool>,
    pub stats: Arc<ListenerStats>,
}

/// Lists the listeners to report, asked afresh for every request so that
/// listeners added or removed by a reload show up.
pub type WatchList = Arc<dyn Fn() -> Vec<Watched> + Send + Sync>;

/// Binds the admin socket; a bad or busy address is a start-up error.
pub fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    listener::bind(addr, BACKLOG).context("admin endpoint")
}

/// Answers admin requests until `shutdown`.
pub async fn serve(listener: TcpListener, watched: WatchList, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_ADMIN_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    debug!("admin {peer}: too many admin connections; closing");
                    continue;
                };
                let watched = watched.clone();
                tokio::spawn(async move {
                    handle(stream, peer, &watched).await;
                    drop(slot);
                });
            }
            Err(e) => {
                debug!("admin accept failed: {e}");
                if is_local_exhaustion(&e) {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                }
            }
        }
    }
}

async fn handle(mut stream: TcpStream, peer: SocketAddr, watched: &WatchList) {
    let parsed = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut stream)).await {
        Ok(Some(parsed)) => parsed,
        Ok(None) => return,
        Err(_) => {
            debug!("admin {peer}: no complete request within {HEAD_TIMEOUT:?}; closing");
            return;
        }
    };
    let response = respond(parsed, &watched());
    let _ = tokio::time::timeout(WRITE_TIMEOUT, async {
        if stream.write_all(&response).await.is_err() {
            return;
        }
        let _ = stream.shutdown().await;
        // Read what the client still sends (a body we ignored) so closing
        // does not reset the connection under the response.
        let mut sink = [0u8; 1024];
        let mut left: usize = 64 * 1024;
        while left > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}

/// Reads until the head parses or fails; `None` when the client left.
async fn read_head(stream: &mut TcpStream) -> Option<Result<Request, Error>> {
    let mut buf = vec![0u8; MAX_HEAD + 1];
    let mut len = 0;
    loop {
        let n = match stream.read(&mut buf[len..]).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => n,
        };
        len += n;
        match parse_request(&buf[..len]) {
            Err(Error::Incomplete) if len < buf.len() => continue,
            Err(Error::Incomplete) => return Some(Err(Error::TooLarge)),
            done => return Some(done),
        }
    }
}

/// A request the admin endpoint understood.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The path without any query string.
    pub path: String,
}

/// Why a request head could not be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// The blank line ending the head has not arrived yet.
    Incomplete,
    /// The head is longer than [`MAX_HEAD`].
    TooLarge,
    /// Not valid HTTP/1.x; the text says what is wrong.
    Malformed(&'static str),
}

/// Parses an HTTP/1.x request head from the start of `buf`. Pure, so it can
/// be tested and fuzzed without sockets. Bytes after the head are ignored.
pub fn parse_request(buf: &[u8]) -> Result<Request, Error> {
    let end = match buf.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(end) if end + 4 <= MAX_HEAD => end,
        Some(_) => return Err(Error::TooLarge),
        None if buf.len() >= MAX_HEAD => return Err(Error::TooLarge),
        None => return Err(Error::Incomplete),
    };
    let head = &buf[..end];
    let mut lines = Vec::new();
    let mut pieces = head.split(|&b| b == b'\n').peekable();
    while let Some(piece) = pieces.next() {
        // Every line but the last ends in CR here (its LF was the split);
        // the last one's CRLF was cut off with the blank line.
        let line = if pieces.peek().is_some() {
            piece
                .strip_suffix(b"\r")
                .ok_or(Error::Malformed("line ends in a bare LF"))?
        } else {
            piece
        };
        lines.push(line);
    }
    let mut lines = lines.into_iter();
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Error::Malformed(
            "request line is not METHOD SP TARGET SP VERSION",
        ));
    };
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err(Error::Malformed("bad method"));
    }
    if target.first() != Some(&b'/') || !target.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return Err(Error::Malformed("bad request target"));
    }
    if version != b"HTTP/1.1" && version != b"HTTP/1.0" {
        return Err(Error::Malformed("unsupported HTTP version"));
    }
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err(Error::Malformed("header line without a colon"));
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            // Also catches obsolete line folding (a line starting with whitespace).
            return Err(Error::Malformed("bad header name"));
        }
        if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err(Error::Malformed("control character in a header value"));
        }
    }
    // Both parts are ASCII, checked above.
    let target = String::from_utf8_lossy(target);
    let path = target.split(['?', '#']).next().unwrap_or_default();
    Ok(Request {
        method: String::from_utf8_lossy(method).into_owned(),
        path: path.to_string(),
    })
}

/// RFC 9110 token characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The full response to one parsed request head.
fn respond(parsed: Result<Request, Error>, watched: &[Watched]) -> Vec<u8> {
    let request = match parsed {
        Ok(request) => request,
        Err(Error::TooLarge) => {
            return response(
                "431 Request Header Fields Too Large",
                "text/plain",
                "",
                "request head too large\n",
            );
        }
        Err(Error::Malformed(why)) => {
            return response(
                "400 Bad Request",
                "text/plain",
                "",
                &format!("bad request: {why}\n"),
            );
        }
        Err(Error::Incomplete) => {
            return response(
                "400 Bad Request",
                "text/plain",
                "",
                "bad request: incomplete\n",
            );
        }
    };
    if request.method != "GET" {
        return response(
            "405 Method Not Allowed",
            "text/plain",
            "Allow: GET\r\n",
            "only GET is allowed\n",
        );
    }
    match request.path.as_str() {
        "/metrics" => response(
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            "",
            &render_metrics(&snapshot(watched)),
        ),
        "/status" => response(
            "200 OK",
            "application/json",
            "",
            &render_status(&snapshot(watched)),
        ),
        _ => response(
            "404 Not Found",
            "text/plain",
            "",
            "not found: try /metrics or /status\n",
        ),
    }
}

fn response(status: &str, content_type: &str, extra_headers: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n{extra_headers}\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// One listener's figures, read once so /metrics and /status agree.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ListenerView {
    pub listen: String,
    pub strategy: String,
    pub accepted: u64,
    pub rejected: u64,
    pub active: u64,
    pub bad_gateway: u64,
    pub unavailable: u64,
    pub proxy_header_errors: u64,
    pub backends: Vec<BackendView>,
}

/// One backend's figures.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BackendView {
    pub name: String,
    pub address: String,
    pub up: bool,
    pub weight: u32,
    pub active: u64,
    pub total: u64,
    pub connect_failures: u64,
    pub sent_bytes: u64,
    pub received_bytes: u64,
    pub check_latency_seconds: f64,
    pub idle_timeouts: u64,
}

/// Reads every counter now. Lock-free apart from the pool's snapshot read.
pub fn snapshot(watched: &[Watched]) -> Vec<ListenerView> {
    watched
        .iter()
        .map(|w| {
            let state = w.pool.load();
            let stats = &w.stats;
            let mut backends: Vec<BackendView> = Vec::new();
            for b in &state.backends {
                // The same backend listed twice would repeat a series.
                if backends.iter().any(|seen| seen.name == b.name()) {
                    continue;
                }
                backends.push(BackendView {
                    name: b.name().to_string(),
                    address: b.addr().to_string(),
                    up: b.is_up(),
                    weight: b.weight(),
                    active: b.stats.active.load(Relaxed),
                    total: b.stats.total.load(Relaxed),
                    connect_failures: b.stats.connect_failures.load(Relaxed),
                    sent_bytes: b.stats.bytes_in.load(Relaxed),
                    received_bytes: b.stats.bytes_out.load(Relaxed),
                    check_latency_seconds: b.stats.check_latency_us.load(Relaxed) as f64 / 1e6,
                    idle_timeouts: b.stats.idle_timeouts.load(Relaxed),
                });
            }
            ListenerView {
                listen: w.listen.to_string(),
                strategy: state.config.strategy.to_string(),
                accepted: stats.accepted.load(Relaxed),
                rejected: stats.rejected.load(Relaxed),
                active: stats.active.load(Relaxed),
                bad_gateway: stats.bad_gateway.load(Relaxed),
                unavailable: stats.unavailable.load(Relaxed),
                proxy_header_errors: stats.proxy_header_errors.load(Relaxed),
                backends,
            }
        })
        .collect()
}

/// Prometheus text format 0.0.4, written by hand: a dozen `name{labels}
/// value` lines need no crate, and a metrics library would weigh more than
/// this function (and bring its own registry and locking).
pub fn render_metrics(listeners: &[ListenerView]) -> String {
    type BackendValue = fn(&BackendView) -> String;
    let backend_families: [(&str, &str, &str, BackendValue); 8] = [
        (
            "tcplb_backend_up",
            "gauge",
            "Whether the backend is healthy (1) or not (0).",
            |b| u8::from(b.up).to_string(),
        ),
        (
            "tcplb_backend_active_connections",
            "gauge",
            "Connections open to the backend now.",
            |b| b.active.to_string(),
        ),
        (
            "tcplb_backend_connections_total",
            "counter",
            "Connections established to the backend.",
            |b| b.total.to_string(),
        ),
        (
            "tcplb_backend_connect_failures_total",
            "counter",
            "Failed connect attempts to the backend.",
            |b| b.connect_failures.to_string(),
        ),
        (
            "tcplb_backend_sent_bytes_total",
            "counter",
            "Bytes from clients to the backend.",
            |b| b.sent_bytes.to_string(),
        ),
        (
            "tcplb_backend_received_bytes_total",
            "counter",
            "Bytes from the backend to clients.",
            |b| b.received_bytes.to_string(),
        ),
        (
            "tcplb_backend_check_latency_seconds",
            "gauge",
            "Duration of the last successful health check.",
            |b| b.check_latency_seconds.to_string(),
        ),
        (
            "tcplb_backend_idle_timeouts_total",
            "counter",
            "Connections closed because no bytes moved for the idle timeout.",
            |b| b.idle_timeouts.to_string(),
        ),
    ];
    let mut out = String::new();
    for (name, kind, help, value) in backend_families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for listener in listeners {
            for backend in &listener.backends {
                let _ = writeln!(
                    out,
                    "{name}{{listener=\"{}\",backend=\"{}\"}} {}",
                    label(&listener.listen),
                    label(&backend.name),
                    value(backend)
                );
            }
        }
    }
    type ListenerValue = fn(&ListenerView) -> u64;
    let listener_families: [(&str, &str, &str, ListenerValue); 4] = [
        (
            "tcplb_listener_accepted_total",
            "counter",
            "Client connections accepted, refused ones included.",
            |l| l.accepted,
        ),
        (
            "tcplb_listener_rejected_total",
            "counter",
            "Client connections refused by access control or limits.",
            |l| l.rejected,
        ),
        (
            "tcplb_listener_active_connections",
            "gauge",
            "Client connections open now.",
            |l| l.active,
        ),
        (
            "tcplb_listener_proxy_header_errors_total",
            "counter",
            "Clients closed for a bad or missing PROXY protocol header.",
            |l| l.proxy_header_errors,
        ),
    ];
    for (name, kind, help, value) in listener_families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for listener in listeners {
            let _ = writeln!(
                out,
                "{name}{{listener=\"{}\"}} {}",
                label(&listener.listen),
                value(listener)
            );
        }
    }
    let name = "tcplb_listener_failures_total";
    let _ = writeln!(
        out,
        "# HELP {name} Clients no backend could take: 502 (every connect failed) or 503 (none to try).\n\
         # TYPE {name} counter"
    );
    for listener in listeners {
        for (code, count) in [("502", listener.bad_gateway), ("503", listener.unavailable)] {
            let _ = writeln!(
                out,
                "{name}{{listener=\"{}\",code=\"{code}\"}} {count}",
                label(&listener.listen)
            );
        }
    }
    out
}

/// A Prometheus label value: backslash, double quote and newline escaped.
fn label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// The same picture as JSON:
/// `{"listeners":[{"listen":..,"strategy":..,"accepted":..,"rejected":..,
/// "active":..,"failures":{"502":..,"503":..},"backends":[{"name":..,
/// "address":..,"up":..,"weight":..,"active":..,"total":..,
/// "connect_failures":..,"sent_bytes":..,"received_bytes":..,
/// "check_latency_seconds":..,"idle_timeouts":..}]}]}`
pub fn render_status(listeners: &[ListenerView]) -> String {
    let mut out = String::from("{\"listeners\":[");
    for (i, l) in listeners.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(
            out,
            "{{\"listen\":{},\"strategy\":{},\"accepted\":{},\"rejected\":{},\"active\":{},\
             \"failures\":{{\"502\":{},\"503\":{}}},\"backends\":[",
            json_string(&l.listen),
            json_string(&l.strategy),
            l.accepted,
            l.rejected,
            l.active,
            l.bad_gateway,
            l.unavailable
        );
        for (j, b) in l.backends.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            let _ = write!(
                out,
                "{{\"name\":{},\"address\":{},\"up\":{},\"weight\":{},\"active\":{},\
                 \"total\":{},\"connect_failures\":{},\"sent_bytes\":{},\"received_bytes\":{},\
                 \"check_latency_seconds\":{},\"idle_timeouts\":{}}}",
                json_string(&b.name),
                json_string(&b.address),
                b.up,
                b.weight,
                b.active,
                b.total,
                b.connect_failures,
                b.sent_bytes,
                b.received_bytes,
                json_number(b.check_latency_seconds),
                b.idle_timeouts
            );
        }
        out.push_str("]}");
    }
    out.push_str("]}\n");
    out
}

/// A JSON string literal: quotes, backslashes and control characters escaped.
fn json_string(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// JSON has no NaN or infinity.
fn json_number(value: f64) -> String {
    if value.is_finite() {
        value.to_string()
    } else {
        "0".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn malformed(head: &[u8]) -> bool {
        matches!(parse_request(head), Err(Error::Malformed(_)))
    }

    #[test]
    fn well_formed_requests_parse() {
        let r = parse_request(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n").unwrap();
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/metrics");
        let r = parse_request(b"GET /status?pretty=1 HTTP/1.0\r\n\r\nbody ignored").unwrap();
        assert_eq!(r.path, "/status");
        let r = parse_request(b"DELETE / HTTP/1.1\r\nX-Empty:\r\n\r\n").unwrap();
        assert_eq!((r.method.as_str(), r.path.as_str()), ("DELETE", "/"));
    }

    #[test]
    fn partial_heads_are_incomplete() {
        for partial in [
            &b""[..],
            b"GET",
            b"GET /metrics HTTP/1.1\r\n",
            b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r",
        ] {
            assert_eq!(
                parse_request(partial),
                Err(Error::Incomplete),
                "{partial:?}"
            );
        }
    }

    #[test]
    fn malformed_heads_are_rejected() {
        for bad in [
            &b"\r\n\r\n"[..],
            b"GET\r\n\r\n",
            b"GET /metrics\r\n\r\n",
            b"GET  /metrics HTTP/1.1\r\n\r\n",
            b"GET /metrics HTTP/1.1 extra\r\n\r\n",
            b"GET metrics HTTP/1.1\r\n\r\n",
            b"GET http://x/metrics HTTP/1.1\r\n\r\n",
            b"GET /met\x01rics HTTP/1.1\r\n\r\n",
            b"GET /m\xc3\xa9trics HTTP/1.1\r\n\r\n",
            b"G(T /metrics HTTP/1.1\r\n\r\n",
            b"GET /metrics HTTP/2.0\r\n\r\n",
            b"GET /metrics http/1.1\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\nNoColon\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\n: empty name\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\nBad Name: x\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\nHost: a\x00b\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\nHost: a\rb\r\n\r\n",
            b"GET /metrics HTTP/1.1\nHost: x\r\n\r\n",
        ] {
            assert!(malformed(bad), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn heads_over_the_limit_are_too_large() {
        let mut big = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        big.resize(MAX_HEAD, b'a');
        assert_eq!(parse_request(&big), Err(Error::TooLarge));
        big.extend_from_slice(b"\r\n\r\n");
        assert_eq!(parse_request(&big), Err(Error::TooLarge));
        // Just under the limit is fine.
        let mut fits = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        fits.resize(MAX_HEAD - 4, b'a');
        fits.extend_from_slice(b"\r\n\r\n");
        assert!(parse_request(&fits).is_ok());
    }

    #[test]
    fn every_prefix_of_a_request_is_incomplete_and_noise_never_panics() {
        let request = b"GET /metrics?a=b HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n";
        for end in 0..request.len() {
            assert_eq!(parse_request(&request[..end]), Err(Error::Incomplete));
        }
        assert!(parse_request(request).is_ok());
        // Deterministic noise built from HTTP-ish pieces: only the verdict
        // may vary, never a panic. (A real fuzzer can take over from here.)
        let pieces: [&[u8]; 12] = [
            b"GET",
            b" ",
            b"/",
            b"metrics",
            b"\r\n",
            b"\n",
            b"\r",
            b":",
            b"HTTP/1.1",
            b"\x00",
            b"\xff",
            b"?",
        ];
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            let mut input = Vec::new();
            for _ in 0..(seed % 24) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                input.extend_from_slice(pieces[(seed % 12) as usize]);
            }
            input.extend_from_slice(b"\r\n\r\n");
            if let Ok(r) = parse_request(&input) {
                assert!(r.path.starts_with('/'));
                assert!(!r.method.is_empty());
            }
        }
    }

    fn view() -> Vec<ListenerView> {
        vec![ListenerView {
            listen: "127.0.0.1:8080".into(),
            strategy: "round-robin".into(),
            accepted: 7,
            rejected: 2,
            active: 1,
            bad_gateway: 3,
            unavailable: 4,
            proxy_header_errors: 5,
            backends: vec![BackendView {
                name: "we\"ird\\name\n".into(),
                address: "127.0.0.1:8081".into(),
                up: true,
                weight: 2,
                active: 1,
                total: 5,
                connect_failures: 6,
                sent_bytes: 100,
                received_bytes: 200,
                check_latency_seconds: 0.00025,
                idle_timeouts: 3,
            }],
        }]
    }

    #[test]
    fn metrics_are_prometheus_text_with_escaped_labels() {
        let text = render_metrics(&view());
        let backend = r#"{listener="127.0.0.1:8080",backend="we\"ird\\name\n"}"#;
        for line in [
            format!("tcplb_backend_up{backend} 1"),
            format!("tcplb_backend_connections_total{backend} 5"),
            format!("tcplb_backend_connect_failures_total{backend} 6"),
            format!("tcplb_backend_sent_bytes_total{backend} 100"),
            format!("tcplb_backend_received_bytes_total{backend} 200"),
            format!("tcplb_backend_check_latency_seconds{backend} 0.00025"),
            format!("tcplb_backend_idle_timeouts_total{backend} 3"),
            "tcplb_listener_accepted_total{listener=\"127.0.0.1:8080\"} 7".into(),
            "tcplb_listener_rejected_total{listener=\"127.0.0.1:8080\"} 2".into(),
            "tcplb_listener_active_connections{listener=\"127.0.0.1:8080\"} 1".into(),
            "tcplb_listener_proxy_header_errors_total{listener=\"127.0.0.1:8080\"} 5".into(),
            "tcplb_listener_failures_total{listener=\"127.0.0.1:8080\",code=\"502\"} 3".into(),
            "tcplb_listener_failures_total{listener=\"127.0.0.1:8080\",code=\"503\"} 4".into(),
            "# TYPE tcplb_backend_up gauge".into(),
            "# TYPE tcplb_listener_accepted_total counter".into(),
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        // Every sample belongs to the family declared just before it.
        let mut family = "";
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                family = rest.split(' ').next().unwrap();
            } else if !line.starts_with('#') {
                assert!(line.starts_with(family), "{line} outside {family}");
            }
        }
    }

    #[test]
    fn status_is_json_with_escaped_strings() {
        let json = render_status(&view());
        assert!(json.contains(r#""name":"we\"ird\\name\n""#), "{json}");
        assert!(
            json.contains(r#""accepted":7,"rejected":2,"active":1"#),
            "{json}"
        );
        assert!(json.contains(r#""failures":{"502":3,"503":4}"#), "{json}");
        assert!(json.contains(r#""up":true,"weight":2"#), "{json}");
        assert!(
            json.contains(r#""check_latency_seconds":0.00025,"idle_timeouts":3}"#),
            "{json}"
        );
        assert_eq!(json_string("\u{1}"), r#""\u0001""#);
        assert_eq!(json_number(f64::NAN), "0");
        // Brackets and braces balance outside strings.
        let mut depth = 0i32;
        let mut in_string = false;
        let mut escaped = false;
        for c in json.chars() {
            match (in_string, escaped, c) {
                (true, true, _) => escaped = false,
                (true, false, '\\') => escaped = true,
                (true, false, '"') => in_string = false,
                (false, _, '"') => in_string = true,
                (false, _, '{' | '[') => depth += 1,
                (false, _, '}' | ']') => depth -= 1,
                _ => {}
            }
            assert!(depth >= 0);
        }
        assert_eq!((depth, in_string), (0, false));
    }

    #[test]
    fn responses_route_by_method_and_path() {
        let status = |parsed| {
            let bytes = respond(parsed, &[]);
            let text = String::from_utf8(bytes).unwrap();
            text.lines().next().unwrap().to_string()
        };
        let get = |path: &str| {
            Ok(Request {
                method: "GET".into(),
                path: path.into(),
            })
        };
        assert_eq!(status(get("/metrics")), "HTTP/1.1 200 OK");
        assert_eq!(status(get("/status")), "HTTP/1.1 200 OK");
        assert_eq!(status(get("/")), "HTTP/1.1 404 Not Found");
        let post = Ok(Request {
            method: "POST".into(),
            path: "/metrics".into(),
        });
        assert_eq!(status(post), "HTTP/1.1 405 Method Not Allowed");
        assert_eq!(
            status(Err(Error::Malformed("x"))),
            "HTTP/1.1 400 Bad Request"
        );
        assert_eq!(
            status(Err(Error::TooLarge)),
            "HTTP/1.1 431 Request Header Fields Too Large"
        );
    }
}
