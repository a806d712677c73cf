//! The access log with real sockets: every termination cause that can be
//! produced on loopback, each checked field by field in both formats; the
//! client address a PROXY header carries; write failures counted while
//! traffic flows, and a real tmpfs filling up without a torn line; a
//! dropped connection at the end of the drain; and, with
//! the real binary, rotation by rename + SIGUSR1 without a lost line, the
//! stderr destination, and the start-up error for a path that cannot be
//! opened.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use common::*;
use serde_json::Value;
use tcplb::admin::{Action, Change, Control};
use tcplb::config::{
    AccessLogConfig, AccessLogFormat, AccessLogTarget, AdminState, Config, RouteConfig,
    ServiceConfig,
};
use tcplb::proxy::proxy_protocol;
use tcplb::runtime::{Balancer, ReloadHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

const FORMATS: [AccessLogFormat; 2] = [AccessLogFormat::Text, AccessLogFormat::Json];

/// A temporary directory, removed on drop.
/// A balancer logging to a file in its own directory; shut down on drop.
struct Logged {
    addr: SocketAddr,
    admin: Option<SocketAddr>,
    log: PathBuf,
    format: AccessLogFormat,
    reload: ReloadHandle,
    shutdown: CancellationToken,
    _dir: TempDir,
}

impl Drop for Logged {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn start(mut service: ServiceConfig, format: AccessLogFormat, name: &str) -> Logged {
    let dir = TempDir::new(&format!("{name}-{format}"));
    let log = dir.path("access.log");
    service.listen = "127.0.0.1:0".parse().unwrap();
    // No probes: health changes only by what the test does.
    service.health.interval = Duration::from_secs(3600);
    let mut config = Config::single(service);
    config.drain_timeout = Duration::from_secs(1);
    config.access_log = AccessLogConfig {
        target: AccessLogTarget::File(log.clone()),
        format,
    };
    start_config(config, dir, log, format)
}

fn start_config(config: Config, dir: TempDir, log: PathBuf, format: AccessLogFormat) -> Logged {
    let balancer = Balancer::bind(config).expect("bind balancer");
    let logged = Logged {
        addr: balancer.local_addrs()[0],
        admin: balancer.admin_addr(),
        log,
        format,
        reload: balancer.reload_handle(),
        shutdown: balancer.shutdown_token(),
        _dir: dir,
    };
    tokio::spawn(balancer.run());
    logged
}

/// One access log line, parsed from either format into the same fields.
#[derive(Debug, Clone, PartialEq)]
struct Line {
    time: SystemTime,
    id: u64,
    client: String,
    listener: String,
    listen: String,
    backend: Option<String>,
    queue_ms: Option<f64>,
    connect_ms: Option<f64>,
    duration_ms: f64,
    retries: u64,
    sent: u64,
    received: u64,
    cause: String,
    sni: Option<String>,
    route: Option<String>,
    alpn: Option<Vec<String>>,
}

fn dash(text: &str) -> Option<String> {
    (text != "-").then(|| text.to_string())
}

fn ms(text: &str) -> Option<f64> {
    (text != "-").then(|| text.parse().expect("milliseconds"))
}

fn parse(line: &str, format: AccessLogFormat) -> Line {
    match format {
        AccessLogFormat::Text => {
            let f: Vec<&str> = line.split(' ').collect();
            assert_eq!(f.len(), 19, "{line}");
            // No TLS terminated here: its six fields are all "none".
            assert_eq!(f[13..], ["-"; 6], "{line}");
            let times: Vec<&str> = f[6].split('/').collect();
            let bytes: Vec<&str> = f[8].split('/').collect();
            assert_eq!((times.len(), bytes.len()), (3, 2), "{line}");
            Line {
                time: humantime::parse_rfc3339(f[0]).expect("RFC 3339 time"),
                id: f[1].parse().unwrap(),
                client: f[2].into(),
                listener: f[3].into(),
                listen: f[4].into(),
                backend: dash(f[5]),
                queue_ms: ms(times[0]),
                connect_ms: ms(times[1]),
                duration_ms: ms(times[2]).expect("a duration"),
                retries: f[7].parse().unwrap(),
                sent: bytes[0].parse().unwrap(),
                received: bytes[1].parse().unwrap(),
                cause: f[9].into(),
                sni: dash(f[10]),
                route: dash(f[11]),
                alpn: dash(f[12]).map(|l| l.split(',').map(str::to_string).collect()),
            }
        }
        AccessLogFormat::Json => {
            let v: Value = serde_json::from_str(line).expect("a JSON line");
            let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
            assert_eq!(keys.len(), 24, "{line}");
            for key in [
                "tls_version",
                "tls_cipher",
                "tls_alpn",
                "tls_resumed",
                "tls_handshake_ms",
            ] {
                assert_eq!(v[key], Value::Null, "{line}");
            }
            let text = |k: &str| v[k].as_str().map(str::to_string);
            Line {
                time: humantime::parse_rfc3339(v["time"].as_str().unwrap()).unwrap(),
                id: v["id"].as_u64().unwrap(),
                client: text("client").unwrap(),
                listener: text("listener").unwrap(),
                listen: text("listen").unwrap(),
                backend: text("backend"),
                queue_ms: v["queue_ms"].as_f64(),
                connect_ms: v["connect_ms"].as_f64(),
                duration_ms: v["duration_ms"].as_f64().unwrap(),
                retries: v["retries"].as_u64().unwrap(),
                sent: v["sent"].as_u64().unwrap(),
                received: v["received"].as_u64().unwrap(),
                cause: text("cause").unwrap(),
                sni: text("sni"),
                route: text("route"),
                alpn: v["alpn"]
                    .as_array()
                    .map(|a| a.iter().map(|p| p.as_str().unwrap().to_string()).collect()),
            }
        }
    }
}

impl Logged {
    /// A client connected to the balancer, and its address (the line's key).
    async fn client(&self) -> (TcpStream, SocketAddr) {
        let stream = connect(self.addr).await;
        let me = stream.local_addr().unwrap();
        (stream, me)
    }

    /// The line of `client`, [`check`]ed against `expect`.
    async fn checked(&self, client: SocketAddr, expect: Expect<'_>, started: SystemTime) -> Line {
        let line = self.line_of(client).await;
        check(&line, self, client, expect, started);
        line
    }

    /// The line of the connection from `client`.
    async fn line_of(&self, client: SocketAddr) -> Line {
        let client = client.to_string();
        let find = || {
            std::fs::read_to_string(&self.log)
                .unwrap_or_default()
                .lines()
                .map(|l| parse(l, self.format))
                .find(|l| l.client == client)
        };
        poll_until(PATIENCE, || find().is_some()).await;
        find().unwrap_or_else(|| {
            panic!(
                "no line for {client}:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            )
        })
    }
}

/// What a line must say besides the fields every line has.
#[derive(Clone, Copy)]
struct Expect<'a> {
    backend: Option<SocketAddr>,
    cause: &'a str,
    retries: u64,
    sent: u64,
    received: u64,
    /// Whether it waited for a slot (got past access control).
    queued: bool,
    /// Whether a connect was attempted.
    connected: bool,
}

impl<'a> Expect<'a> {
    /// Piped to `backend` until `cause`, `bytes` each way, at the first try.
    fn piped(backend: SocketAddr, cause: &'a str, bytes: u64) -> Self {
        Expect {
            backend: Some(backend),
            cause,
            retries: 0,
            sent: bytes,
            received: bytes,
            queued: true,
            connected: true,
        }
    }

    /// Ended by `cause` with no backend and no byte moved; as written, turned
    /// away before the queue (access control, PROXY header, per-IP limit).
    fn unserved(cause: &'a str) -> Self {
        Expect {
            backend: None,
            cause,
            retries: 0,
            sent: 0,
            received: 0,
            queued: false,
            connected: false,
        }
    }
}

fn check(line: &Line, lb: &Logged, client: SocketAddr, expect: Expect, started: SystemTime) {
    let name = lb.addr.to_string();
    assert_eq!(line.client, client.to_string(), "{line:?}");
    assert_eq!(
        (line.listener.as_str(), line.listen.as_str()),
        (name.as_str(), name.as_str())
    );
    assert_eq!(
        line.backend,
        expect.backend.map(|b| b.to_string()),
        "{line:?}"
    );
    assert_eq!(line.cause, expect.cause, "{line:?}");
    assert_eq!(line.retries, expect.retries, "{line:?}");
    assert_eq!((line.sent, line.received), (expect.sent, expect.received));
    assert_eq!(line.queue_ms.is_some(), expect.queued, "{line:?}");
    assert_eq!(line.connect_ms.is_some(), expect.connected, "{line:?}");
    assert_eq!((line.sni.as_deref(), line.route.as_deref()), (None, None));
    assert_eq!(line.alpn, None, "{line:?}");
    assert!(line.id >= 1);
    // Written when it ended: after the test began, and just now.
    let now = SystemTime::now();
    let from = started - Duration::from_millis(5);
    assert!(line.time >= from && line.time <= now, "{line:?}");
    let lasted = Duration::from_secs_f64(line.duration_ms / 1000.0);
    assert!(lasted <= now.duration_since(from).unwrap(), "{line:?}");
    for part in [line.queue_ms, line.connect_ms].into_iter().flatten() {
        assert!(part >= 0.0 && part <= line.duration_ms, "{line:?}");
    }
}

async fn connect(addr: SocketAddr) -> TcpStream {
    tokio::time::timeout(PATIENCE, TcpStream::connect(addr))
        .await
        .expect("connect timed out")
        .expect("connect")
}

/// Reads until the other side closes; what came (an error counts as EOF).
async fn read_all(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut got))
        .await
        .expect("not closed in time");
    got
}

/// Closes `stream` with SO_LINGER 0, so the peer gets a reset.
fn reset(stream: TcpStream) {
    let std = stream.into_std().unwrap();
    socket2::SockRef::from(&std)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(std);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_connection_logs_every_field() {
    let backend = TestBackend::echo().await;
    for format in FORMATS {
        let started = SystemTime::now();
        let lb = start(service(&[backend.addr]), format, "completed");
        let (mut client, me) = lb.client().await;
        assert_eq!(
            finish(&mut client, b"hello, backend").await,
            b"hello, backend"
        );
        let expect = Expect::piped(backend.addr, "completed", 14);
        let line = lb.checked(me, expect, started).await;
        // A second connection gets a larger id.
        let (mut second, other) = lb.client().await;
        assert_eq!(finish(&mut second, b"x").await, b"x");
        assert!(lb.line_of(other).await.id > line.id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_backend_is_a_503_logged_as_no_backend() {
    let backend = TestBackend::http().await;
    for format in FORMATS {
        let started = SystemTime::now();
        let mut svc = service(&[backend.addr]);
        svc.backends[0].admin_state = AdminState::Maintenance;
        let lb = start(svc, format, "nobackend");
        let (mut client, me) = lb.client().await;
        client.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
        let answer = read_all(&mut client).await;
        assert!(answer.starts_with(b"HTTP/1.1 503 "), "{answer:?}");
        let expect = Expect {
            queued: true,
            ..Expect::unserved("no_backend")
        };
        lb.checked(me, expect, started).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connects_are_a_502_logged_with_their_retries() {
    for format in FORMATS {
        let started = SystemTime::now();
        let mut svc = service(&[refusing_addr(), refusing_addr()]);
        svc.retries = 2;
        // Neither the first check round nor the refusals take them out.
        svc.health.fall = 1_000_000;
        let lb = start(svc, format, "refused");
        let (mut client, me) = lb.client().await;
        client.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
        let answer = read_all(&mut client).await;
        assert!(answer.starts_with(b"HTTP/1.1 502 "), "{answer:?}");
        // Both backends tried: one retry; then no third to try.
        let expect = Expect {
            retries: 1,
            queued: true,
            connected: true,
            ..Expect::unserved("connect_refused")
        };
        lb.checked(me, expect, started).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_timeout_is_logged_with_the_time_spent() {
    let hole = blackhole();
    for format in FORMATS {
        let started = SystemTime::now();
        let mut svc = service(&[hole.addr]);
        svc.retries = 0;
        svc.connect_timeout = Duration::from_millis(300);
        svc.health.fall = 1_000_000;
        let lb = start(svc, format, "timeout");
        let (mut client, me) = lb.client().await;
        let answer = read_all(&mut client).await;
        assert!(answer.starts_with(b"HTTP/1.1 502 "), "{answer:?}");
        let expect = Expect {
            queued: true,
            connected: true,
            ..Expect::unserved("connect_timeout")
        };
        let line = lb.checked(me, expect, started).await;
        assert!(line.connect_ms.unwrap() >= 300.0, "{line:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_client_is_logged_as_denied() {
    let backend = TestBackend::echo().await;
    for format in FORMATS {
        let started = SystemTime::now();
        let mut svc = service(&[backend.addr]);
        svc.access.deny = vec!["127.0.0.0/8".parse().unwrap()];
        let lb = start(svc, format, "denied");
        let (mut client, me) = lb.client().await;
        assert!(read_all(&mut client).await.is_empty());
        let expect = Expect::unserved("denied");
        lb.checked(me, expect, started).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_ip_and_queue_limits_are_logged_as_over_limit() {
    let backend = TestBackend::echo().await;
    for format in FORMATS {
        let started = SystemTime::now();
        // Per-IP: the second connection of one address is refused at once.
        let mut svc = service(&[backend.addr]);
        svc.access.max_conns_per_ip = Some(1);
        let lb = start(svc, format, "perip");
        let mut first = connect(lb.addr).await;
        echo_on(&mut first, b"held").await;
        let (mut second, me) = lb.client().await;
        let answer = read_all(&mut second).await;
        assert!(answer.starts_with(b"HTTP/1.1 503 "), "{answer:?}");
        let expect = Expect::unserved("over_limit");
        lb.checked(me, expect, started).await;
        drop(first);

        // --max-conns: the second waits out the queue timeout, then 503.
        let mut svc = service(&[backend.addr]);
        svc.max_conns = Some(1);
        svc.queue_timeout = Duration::from_millis(300);
        let lb = start(svc, format, "maxconns");
        let mut first = connect(lb.addr).await;
        echo_on(&mut first, b"held").await;
        let (mut second, me) = lb.client().await;
        let answer = read_all(&mut second).await;
        assert!(answer.starts_with(b"HTTP/1.1 503 "), "{answer:?}");
        let expect = Expect {
            queued: true,
            ..expect
        };
        let line = lb.checked(me, expect, started).await;
        assert!(line.queue_ms.unwrap() >= 300.0, "{line:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_and_maximum_age_are_logged() {
    let backend = TestBackend::echo().await;
    for format in FORMATS {
        for (cause, idle, age) in [
            ("idle_timeout", Some(Duration::from_millis(300)), None),
            ("max_age", None, Some(Duration::from_millis(300))),
        ] {
            let started = SystemTime::now();
            let mut svc = service(&[backend.addr]);
            svc.idle_timeout = idle;
            svc.max_connection_age = age;
            let lb = start(svc, format, cause);
            let (mut client, me) = lb.client().await;
            echo_on(&mut client, b"ping").await;
            assert!(read_all(&mut client).await.is_empty());
            let expect = Expect::piped(backend.addr, cause, 4);
            let line = lb.checked(me, expect, started).await;
            assert!(line.duration_ms >= 300.0, "{line:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_are_logged_on_the_side_they_came_from() {
    let echo_backend = TestBackend::echo().await;
    // Reads one byte, then resets its side.
    let resetting = TestBackend::with(|listener| async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let mut byte = [0u8; 1];
            let _ = stream.read_exact(&mut byte).await;
            reset(stream);
        }
    })
    .await;
    for format in FORMATS {
        let started = SystemTime::now();
        let lb = start(service(&[echo_backend.addr]), format, "clientreset");
        let (mut client, me) = lb.client().await;
        echo_on(&mut client, b"x").await;
        reset(client);
        let expect = Expect::piped(echo_backend.addr, "client_reset", 1);
        lb.checked(me, expect, started).await;

        let lb = start(service(&[resetting.addr]), format, "backendreset");
        let (mut client, me) = lb.client().await;
        client.write_all(b"x").await.unwrap();
        let _ = read_all(&mut client).await;
        let expect = Expect {
            received: 0,
            ..Expect::piped(resetting.addr, "backend_reset", 1)
        };
        lb.checked(me, expect, started).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_headers_give_the_client_and_bad_ones_are_logged() {
    let backend = TestBackend::echo().await;
    for format in FORMATS {
        let started = SystemTime::now();
        let mut svc = service(&[backend.addr]);
        svc.accept_proxy = true;
        let lb = start(svc, format, "proxy");
        let carried: SocketAddr = "203.0.113.7:51234".parse().unwrap();
        let mut client = connect(lb.addr).await;
        client
            .write_all(&proxy_protocol::encode_v1(carried, lb.addr))
            .await
            .unwrap();
        assert_eq!(finish(&mut client, b"hi").await, b"hi");
        let expect = Expect::piped(backend.addr, "completed", 2);
        lb.checked(carried, expect, started).await;

        let (mut client, me) = lb.client().await;
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let _ = read_all(&mut client).await;
        let expect = Expect::unserved("bad_proxy_header");
        lb.checked(me, expect, started).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_deadline_is_logged_as_operator_drain() {
    let backend = TestBackend::echo().await;
    for format in FORMATS {
        let started = SystemTime::now();
        let lb = start(service(&[backend.addr]), format, "drain");
        let (mut client, me) = lb.client().await;
        echo_on(&mut client, b"ping").await;
        lb.reload
            .change(Change {
                pool: lb.addr.to_string(),
                backend: backend.addr.to_string(),
                action: Action::Drain {
                    deadline: Some(Duration::from_millis(100)),
                },
                who: "test".into(),
            })
            .expect("drain");
        assert!(read_all(&mut client).await.is_empty());
        let expect = Expect::piped(backend.addr, "operator_drain", 4);
        lb.checked(me, expect, started).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_cut_at_the_end_of_the_drain_is_logged_as_shutdown() {
    let backend = TestBackend::echo().await;
    for format in FORMATS {
        let started = SystemTime::now();
        let lb = start(service(&[backend.addr]), format, "shutdown");
        let (mut client, me) = lb.client().await;
        echo_on(&mut client, b"still here").await;
        lb.shutdown.cancel();
        // The drain timeout is 1 s; its last tenth is the spread, in which
        // the one connection left is the first closed: at 900 ms.
        assert!(read_all(&mut client).await.is_empty());
        let expect = Expect::piped(backend.addr, "shutdown", 10);
        let line = lb.checked(me, expect, started).await;
        assert!(line.duration_ms >= 900.0, "{line:?}");
    }
}

/// A real ClientHello (curl's, server name `b.example.test`).
const HELLO_B: &[u8] = include_bytes!("fixtures/curl_b.example.test.bin");
/// A real ClientHello (openssl's, server name `a.test`).
const HELLO_A: &[u8] = include_bytes!("fixtures/openssl_s_client_a.test.bin");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_routes_log_the_server_name_and_the_route() {
    let backend = TestBackend::echo().await;
    for format in FORMATS {
        let started = SystemTime::now();
        let mut route_pool = service(&[backend.addr]);
        route_pool.name = Some("b-route".into());
        let mut svc = service(&[]);
        svc.backends.clear();
        svc.tls_inspect_timeout = Duration::from_millis(500);
        svc.routes = vec![RouteConfig {
            name: "b-route".into(),
            server_names: vec!["b.example.test".parse().unwrap()],
            alpn: Vec::new(),
            pool: route_pool,
        }];
        let lb = start(svc, format, "tls");
        // Routed: the hello goes to the backend unchanged (and echoes back).
        let (mut client, me) = lb.client().await;
        assert_eq!(finish(&mut client, HELLO_B).await, HELLO_B);
        let line = lb.line_of(me).await;
        assert_eq!(line.sni.as_deref(), Some("b.example.test"), "{line:?}");
        assert_eq!(line.route.as_deref(), Some("b-route"), "{line:?}");
        assert_eq!(line.alpn, Some(vec!["h2".into(), "http/1.1".into()]));
        assert_eq!(line.backend, Some(backend.addr.to_string()));
        assert_eq!(
            (line.cause.as_str(), line.sent),
            ("completed", HELLO_B.len() as u64)
        );
        assert!(line.time >= started - Duration::from_millis(5));

        // No route for a.test and no default backends: an alert, no_route,
        // and the record says what the client asked for.
        let (mut client, me) = lb.client().await;
        client.write_all(HELLO_A).await.unwrap();
        let _ = read_all(&mut client).await;
        let line = lb.line_of(me).await;
        assert_eq!(
            (line.cause.as_str(), line.route.as_deref()),
            ("no_route", None)
        );
        assert_eq!(line.backend, None);
        assert_eq!(line.sni.as_deref(), Some("a.test"), "{line:?}");
        assert_eq!(line.alpn, Some(vec!["h2".into(), "http/1.1".into()]));

        // A hello broken after its server name (an empty ALPN protocol
        // name): closed, and the server name is still recorded.
        let (mut client, me) = lb.client().await;
        client.write_all(&broken_alpn(HELLO_A)).await.unwrap();
        let _ = read_all(&mut client).await;
        let line = lb.line_of(me).await;
        assert_eq!(line.cause, "bad_client_hello", "{line:?}");
        assert_eq!(line.sni.as_deref(), Some("a.test"), "{line:?}");
        assert_eq!((line.alpn, line.route), (None, None));

        // Not TLS at all.
        let (mut client, me) = lb.client().await;
        client.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
        let _ = read_all(&mut client).await;
        assert_eq!(lb.line_of(me).await.cause, "bad_client_hello");
    }
}

/// `hello` with the length of its first ALPN protocol name (`h2`) set to
/// 0: a ClientHello that breaks after its server name.
fn broken_alpn(hello: &[u8]) -> Vec<u8> {
    let at = hello
        .windows(12)
        .position(|w| w == b"\x02h2\x08http/1.1")
        .expect("an ALPN list of h2 and http/1.1");
    let mut broken = hello.to_vec();
    broken[at] = 0;
    broken
}

/// A raw HTTP GET on the admin endpoint; the body.
async fn admin_get(admin: SocketAddr, path: &str) -> String {
    let reply = raw_exchange(admin, &format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n")).await;
    reply.split_once("\r\n\r\n").unwrap().1.to_string()
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_that_cannot_be_written_is_counted_and_traffic_flows() {
    let backend = TestBackend::echo().await;
    let mut svc = service(&[backend.addr]);
    svc.listen = "127.0.0.1:0".parse().unwrap();
    let mut config = Config::single(svc);
    config.drain_timeout = Duration::from_secs(1);
    config.admin = Some("127.0.0.1:0".parse().unwrap());
    // Every write to /dev/full fails with ENOSPC, like a full disk.
    config.access_log.target = AccessLogTarget::File("/dev/full".into());
    let dir = TempDir::new("devfull");
    let lb = start_config(config, dir, "/dev/full".into(), AccessLogFormat::Text);
    let admin = lb.admin.unwrap();
    for i in 0..20u8 {
        let mut client = connect(lb.addr).await;
        assert_eq!(finish(&mut client, &[i; 100]).await, [i; 100]);
    }
    // The writer counts within its flush interval; poll the metric.
    let deadline = std::time::Instant::now() + PATIENCE;
    let text = loop {
        let text = admin_get(admin, "/metrics").await;
        let done = metric(&text, "tcplb_access_log_write_errors_total") == 20;
        if done || std::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        metric(&text, "tcplb_access_log_write_errors_total"),
        20,
        "{text}"
    );
    assert_eq!(metric(&text, "tcplb_access_log_dropped_total"), 0);
}

/// A small tmpfs of the test's own, mounted on a fresh directory and
/// unmounted (then the directory removed) on drop, also when the test fails.
struct Tmpfs {
    dir: TempDir,
}

impl Tmpfs {
    fn mount(name: &str, bytes: usize) -> Tmpfs {
        let dir = TempDir::new(name);
        let target = std::ffi::CString::new(dir.0.to_str().unwrap()).unwrap();
        let options = std::ffi::CString::new(format!("size={bytes},mode=0700")).unwrap();
        // SAFETY: mount(2) with NUL-terminated strings that outlive the call.
        let rc = unsafe {
            libc::mount(
                c"tcplb-test".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                options.as_ptr().cast(),
            )
        };
        assert_eq!(rc, 0, "mount tmpfs: {}", std::io::Error::last_os_error());
        Tmpfs { dir }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let target = std::ffi::CString::new(self.dir.0.to_str().unwrap()).unwrap();
        // SAFETY: umount2(2) of the mount this guard made. MNT_DETACH, so a
        // file still open (a failed test's balancer) cannot keep it there.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
}

/// Writes 4 KiB blocks to `path` until the file system is full.
fn fill(path: &Path) -> std::fs::File {
    use std::io::Write;
    let mut file = std::fs::File::create(path).unwrap();
    let block = [b'x'; 4096];
    loop {
        match file.write(&block) {
            Ok(n) if n == block.len() => {}
            Ok(_) => break,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    file
}

/// Every line of the log, each of which must parse as a JSON record; and
/// the file must end with a newline.
fn whole_records(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "the file ends inside a line:\n{text}"
    );
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("torn line {l:?}: {e}\n{text}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_tears_no_line_and_counts_exactly_the_missing_records() {
    let backend = TestBackend::echo().await;
    let disk = Tmpfs::mount("tmpfs", 256 * 1024);
    let log = disk.dir.path("access.log");
    let mut svc = service(&[backend.addr]);
    svc.listen = "127.0.0.1:0".parse().unwrap();
    let mut config = Config::single(svc);
    config.drain_timeout = Duration::from_secs(1);
    config.admin = Some("127.0.0.1:0".parse().unwrap());
    config.access_log = AccessLogConfig {
        target: AccessLogTarget::File(log.clone()),
        format: AccessLogFormat::Json,
    };
    // The log lives on `disk`, which unmounts after the balancer is gone
    // (declared first, dropped last); the balancer's own directory stays
    // empty.
    let lb = start_config(
        config,
        TempDir::new("tmpfs-balancer"),
        log.clone(),
        AccessLogFormat::Json,
    );
    let admin = lb.admin.unwrap();
    let connections = |range: std::ops::Range<u32>| async move {
        for i in range {
            let mut client = connect(lb.addr).await;
            let data = i.to_be_bytes();
            assert_eq!(finish(&mut client, &data).await, data);
        }
    };
    let counted = |text: &str| metric(text, "tcplb_access_log_write_errors_total");
    // Until lines in the file and records counted missing add up to `total`.
    let settled = |total: u64| {
        let log = log.clone();
        async move {
            let deadline = std::time::Instant::now() + PATIENCE;
            loop {
                let text = admin_get(admin, "/metrics").await;
                let lines = file_lines(&log).len() as u64;
                if lines + counted(&text) == total || std::time::Instant::now() > deadline {
                    return (lines, text);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };

    connections(0..5).await;
    assert_eq!(settled(5).await.0, 5);

    // Full, then one page freed: the next records fill it and the one that
    // does not fit is cut short by the kernel (a short write, then ENOSPC).
    let filler_path = disk.dir.path("filler");
    let filler = fill(&filler_path);
    let size = filler.metadata().unwrap().len();
    filler.set_len(size - 4096).unwrap();
    connections(5..105).await;
    let (lines, text) = settled(105).await;
    let records = whole_records(&log);
    assert_eq!(records.len() as u64, lines);
    assert!(
        lines > 5 && lines < 105,
        "{lines} lines: the disk never filled"
    );
    assert_eq!(counted(&text), 105 - lines, "{text}");
    assert_eq!(metric(&text, "tcplb_access_log_dropped_total"), 0);
    let ids: std::collections::BTreeSet<u64> =
        records.iter().map(|r| r["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len() as u64, lines, "an id twice");

    // Space again: the next records land whole after the last line.
    drop(filler);
    std::fs::remove_file(&filler_path).unwrap();
    connections(105..115).await;
    let (after, text) = settled(115).await;
    assert_eq!(after, lines + 10);
    assert_eq!(counted(&text), 105 - lines, "{text}");
    let records = whole_records(&log);
    assert_eq!(records.len() as u64, lines + 10);
    let newest: Vec<u64> = records[lines as usize..]
        .iter()
        .map(|r| r["id"].as_u64().unwrap())
        .collect();
    assert!(newest.iter().all(|id| !ids.contains(id)), "{newest:?}");
    lb.shutdown.cancel();
}

// ---------------------------------------------------------------------------
// The real binary

/// Lines of `path` (none when it does not exist).
fn file_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn sigusr1(pid: u32) {
    let status = Command::new("kill")
        .args(["-USR1", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rename_and_sigusr1_rotate_the_file_without_losing_a_line() {
    let backend = TestBackend::echo().await;
    let dir = TempDir::new("rotate");
    let log = dir.path("access.log");
    let rotated = dir.path("access.log.1");
    let tcplb = spawn_tcplb(&[
        "--backend",
        &backend.addr.to_string(),
        "--access-log",
        log.to_str().unwrap(),
        "--access-log-format",
        "json",
    ]);
    tcplb.process.line_with("access log to").await;
    let addr = tcplb.addr;
    let one = |i: u8| async move {
        let mut client = connect(addr).await;
        assert_eq!(finish(&mut client, &[i; 3]).await, [i; 3]);
    };
    for i in 0..30 {
        one(i).await;
    }
    assert!(poll_until(PATIENCE, || file_lines(&log).len() == 30).await);
    // logrotate: rename, then signal. Connections in between still land
    // in the renamed file (it is still the one open).
    std::fs::rename(&log, &rotated).unwrap();
    for i in 30..40 {
        one(i).await;
    }
    sigusr1(tcplb.pid());
    tcplb.process.line_with("reopened the access log").await;
    for i in 40..55 {
        one(i).await;
    }
    assert!(
        poll_until(PATIENCE, || file_lines(&log).len()
            + file_lines(&rotated).len()
            == 55)
        .await,
        "{:?}\n{:?}",
        file_lines(&rotated),
        file_lines(&log)
    );
    let old = file_lines(&rotated);
    let new = file_lines(&log);
    assert_eq!(old.len(), 40, "{old:?}");
    assert_eq!(new.len(), 15, "{new:?}");
    let ids: std::collections::BTreeSet<u64> = old
        .iter()
        .chain(&new)
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(ids.len(), 55, "every connection once");
    assert!(new.iter().all(|l| l.contains("\"cause\":\"completed\"")));
    // Mode 0640: access logs name every client.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&log).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode & 0o007, 0, "{mode:o}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stderr_gets_text_lines_and_sigusr1_without_a_file_is_harmless() {
    let backend = TestBackend::echo().await;
    let tcplb = spawn_tcplb(&[
        "--backend",
        &backend.addr.to_string(),
        "--access-log",
        "stderr",
    ]);
    let mut client = connect(tcplb.addr).await;
    let me = client.local_addr().unwrap().to_string();
    assert_eq!(finish(&mut client, b"abc").await, b"abc");
    let line = tcplb.process.line_with(&format!(" {me} ")).await;
    let parsed = parse(&line, AccessLogFormat::Text);
    assert_eq!((parsed.cause.as_str(), parsed.sent), ("completed", 3));
    sigusr1(tcplb.pid());
    tcplb.process.line_with("nothing to reopen").await;
    // Still alive and serving.
    let mut client = connect(tcplb.addr).await;
    assert_eq!(finish(&mut client, b"d").await, b"d");
}

#[test]
fn a_log_file_that_cannot_be_opened_stops_the_start_naming_it() {
    let mut command = Command::new(tcplb_bin());
    command.args([
        "--listen",
        "127.0.0.1:0",
        "--backend",
        "127.0.0.1:9",
        "--access-log",
        "/nonexistent-tcplb-dir/access.log",
    ]);
    let mut process = spawn_process(command);
    let status = process.wait_exit(PATIENCE).expect("tcplb did not exit");
    process.wait_stderr_read();
    let stderr = process.stderr_text();
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("cannot open the access log /nonexistent-tcplb-dir/access.log"),
        "{stderr}"
    );
    assert!(!stderr.contains("listening on"), "{stderr}");
}
