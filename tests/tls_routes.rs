//! TLS passthrough with SNI/ALPN routes, end to end: real rustls clients
//! and real rustls servers (each with its own certificate from a test CA)
//! behind a real tcplb on loopback. tcplb never holds a key: a client that
//! completes a verified handshake for `a.test` has reached backend A.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};
use tcplb::config::{Config, ProxyVersion, RouteConfig, ServiceConfig};
use tcplb::proxy::client_hello::UNRECOGNIZED_NAME_ALERT;
use tcplb::proxy::proxy_protocol;

use common::{PATIENCE, TestBalancer, poll_until, refusing_addr, service};

// ---------------------------------------------------------------------------
// Certificates

/// A test CA and what it signed; built once per test binary.
struct Pki {
    /// The CA certificate clients trust.
    root: CertificateDer<'static>,
    /// The CA, to sign backends' certificates.
    issuer: CertifiedIssuer<'static, KeyPair>,
}

fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Pki {
            root: issuer.der().clone(),
            issuer,
        }
    })
}

/// A certificate for `names` signed by the test CA, with its key.
fn identity(names: &[&str]) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let key = KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let cert = CertificateParams::new(names)
        .unwrap()
        .signed_by(&key, &pki().issuer)
        .unwrap();
    let key = PrivateKeyDer::Pkcs8(key.serialize_der().into());
    (cert.der().clone(), key)
}

// ---------------------------------------------------------------------------
// TLS backends

/// What a backend saw of one connection before TLS began.
#[derive(Clone, Debug, Default)]
struct Seen {
    /// The authority TLV of the PROXY v2 header, when one came.
    authority: Option<String>,
    /// The first TLS record exactly as it arrived (the ClientHello).
    first_record: Vec<u8>,
}

/// A TLS server with its own certificate on its own threads. After the
/// handshake it writes `"<id> <alpn>\n"` and closes.
struct TlsBackend {
    addr: SocketAddr,
    cert: CertificateDer<'static>,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl TlsBackend {
    fn start(id: &str, names: &[&str], expect_proxy: bool) -> TlsBackend {
        let (cert, key) = identity(names);
        let mut config = ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec(), b"acme-tls/1".to_vec()];
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let (id, seen, stop) = (id.to_string(), seen.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let (id, seen, config) = (id.clone(), seen.clone(), config.clone());
                            std::thread::spawn(move || {
                                serve_tls(stream, &id, config, expect_proxy, &seen)
                            });
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        TlsBackend {
            addr,
            cert,
            seen,
            stop,
            accept: Some(accept),
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for TlsBackend {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

fn serve_tls(
    mut stream: TcpStream,
    id: &str,
    config: Arc<ServerConfig>,
    expect_proxy: bool,
    seen: &Mutex<Vec<Seen>>,
) {
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut record = |buf: &mut Vec<u8>, stream: &mut TcpStream| -> Option<Seen> {
        let mut seen = Seen::default();
        let mut start = 0;
        loop {
            if expect_proxy && start == 0 {
                match proxy_protocol::parse(buf) {
                    Ok(parsed) => {
                        seen.authority = parsed.authority(buf).map(str::to_string);
                        start = parsed.consumed;
                    }
                    Err(proxy_protocol::ProxyError::Incomplete) => {}
                    Err(e) => panic!("bad PROXY header: {e}"),
                }
            }
            if (start > 0 || !expect_proxy) && buf.len() >= start + 5 {
                let len = u16::from_be_bytes([buf[start + 3], buf[start + 4]]) as usize;
                if buf.len() >= start + 5 + len {
                    seen.first_record = buf[start..start + 5 + len].to_vec();
                    buf.drain(..start);
                    return Some(seen);
                }
            }
            let n = stream.read(&mut chunk).ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    let Some(first) = record(&mut buf, &mut stream) else {
        return;
    };
    seen.lock().unwrap().push(first);
    let mut conn = ServerConnection::new(config).unwrap();
    let mut early = &buf[..];
    while !early.is_empty() {
        conn.read_tls(&mut early).unwrap();
    }
    if conn.process_new_packets().is_err() {
        let _ = conn.write_tls(&mut stream);
        return;
    }
    let mut tls = rustls::StreamOwned::new(conn, stream);
    while tls.conn.is_handshaking() {
        if tls.conn.complete_io(&mut tls.sock).is_err() {
            return;
        }
    }
    let alpn = tls
        .conn
        .alpn_protocol()
        .map_or("-".to_string(), |p| String::from_utf8_lossy(p).into_owned());
    let _ = tls.write_all(format!("{id} {alpn}\n").as_bytes());
    tls.conn.send_close_notify();
    let _ = tls.flush();
}

// ---------------------------------------------------------------------------
// Clients

fn client_config(alpn: &[&str]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(pki().root.clone()).unwrap();
    let mut config = ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Arc::new(config)
}

/// The ClientHello a rustls client sends for `name`, and the connection
/// that sent it, ready to go on with the handshake.
fn hello(name: &str, alpn: &[&str]) -> (ClientConnection, Vec<u8>) {
    let server = ServerName::try_from(name.to_string()).unwrap();
    let mut conn = ClientConnection::new(client_config(alpn), server).unwrap();
    let mut bytes = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut bytes).unwrap();
    }
    (conn, bytes)
}

/// What a client's TLS session ended with.
#[derive(Debug)]
struct Session {
    /// The certificate the server proved it holds the key of.
    cert: CertificateDer<'static>,
    /// The backend's `"<id> <alpn>"` line.
    line: String,
}

/// Connects to `addr` and completes a verified TLS handshake for `name`,
/// sending the ClientHello in `writes` pieces (re-framed into TLS records
/// of at most `record` bytes when given), then reads the backend's line.
fn tls_session(
    addr: SocketAddr,
    name: &str,
    alpn: &[&str],
    writes: usize,
    record: Option<usize>,
) -> Result<Session, String> {
    tls_session_after(addr, &[], name, alpn, writes, record)
}

/// [`tls_session`], sending `first` (a PROXY header) before the hello.
fn tls_session_after(
    addr: SocketAddr,
    first: &[u8],
    name: &str,
    alpn: &[&str],
    writes: usize,
    record: Option<usize>,
) -> Result<Session, String> {
    let (conn, mut bytes) = hello(name, alpn);
    if let Some(size) = record {
        bytes = reframe(&bytes, size);
    }
    let mut stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    stream.set_nodelay(true).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.write_all(first).map_err(|e| e.to_string())?;
    let piece = bytes.len().div_ceil(writes);
    for part in bytes.chunks(piece) {
        stream.write_all(part).map_err(|e| e.to_string())?;
        if writes > 1 {
            std::thread::sleep(Duration::from_millis(30));
        }
    }
    let mut tls = rustls::StreamOwned::new(conn, stream);
    while tls.conn.is_handshaking() {
        tls.conn
            .complete_io(&mut tls.sock)
            .map_err(|e| format!("handshake: {e}"))?;
    }
    let cert = tls.conn.peer_certificates().unwrap()[0]
        .clone()
        .into_owned();
    let mut line = String::new();
    tls.read_to_string(&mut line)
        .map_err(|e| format!("read: {e}"))?;
    Ok(Session {
        cert,
        line: line.trim_end().to_string(),
    })
}

/// The handshake messages of TLS records `bytes`, carried in records of
/// at most `size` bytes each.
fn reframe(bytes: &[u8], size: usize) -> Vec<u8> {
    assert_eq!(bytes[0], 22);
    let len = u16::from_be_bytes([bytes[3], bytes[4]]) as usize;
    assert_eq!(bytes.len(), 5 + len, "one record in");
    let mut out = Vec::new();
    for part in bytes[5..].chunks(size) {
        out.extend_from_slice(&bytes[..3]);
        out.extend_from_slice(&(part.len() as u16).to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

/// Sends `bytes`, then reads everything until the server closes.
fn send_and_read_all(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.write_all(bytes).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    answer
}

// ---------------------------------------------------------------------------
// Configuration

fn route(name: &str, names: &[&str], alpn: &[&str], backends: &[SocketAddr]) -> RouteConfig {
    let mut pool = service(backends);
    pool.name = Some(name.into());
    RouteConfig {
        name: name.into(),
        server_names: names.iter().map(|n| n.parse().unwrap()).collect(),
        alpn: alpn.iter().map(|p| p.to_string()).collect(),
        pool,
    }
}

/// A listener on 127.0.0.1:0 with `routes` and `default` as its own backends.
fn routed(default: &[SocketAddr], routes: Vec<RouteConfig>) -> ServiceConfig {
    let mut listener = service(default);
    listener.routes = routes;
    listener
}

fn start(listener: ServiceConfig) -> TestBalancer {
    let mut config = Config::single(listener);
    config.drain_timeout = Duration::from_secs(1);
    TestBalancer::start_config(config)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// The three backends most tests use: `a.test`, `*.b.test`, and the
/// default `c.test`.
struct Fleet {
    a: TlsBackend,
    b: TlsBackend,
    c: TlsBackend,
}

fn fleet() -> Fleet {
    Fleet {
        a: TlsBackend::start("A", &["a.test"], false),
        b: TlsBackend::start("B", &["*.b.test", "y.x.b.test"], false),
        c: TlsBackend::start("C", &["c.test", "unknown.test"], false),
    }
}

fn fleet_routes(f: &Fleet) -> Vec<RouteConfig> {
    vec![
        route("a", &["a.test"], &[], &[f.a.addr]),
        route("b", &["*.b.test"], &[], &[f.b.addr]),
    ]
}

fn route_connections(lb: &TestBalancer, name: &str) -> u64 {
    let routes = lb.service.routes.load();
    let route = routes.routes.iter().find(|r| r.name == name).unwrap();
    route.stats.connections.load(Relaxed)
}

// ---------------------------------------------------------------------------
// Tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_name_reaches_the_backend_holding_its_certificate() {
    let f = fleet();
    let lb = start(routed(&[f.c.addr], fleet_routes(&f)));
    let addr = lb.addr;

    let a = blocking(move || tls_session(addr, "a.test", &[], 1, None)).await;
    let a = a.unwrap();
    assert_eq!(a.cert, f.a.cert);
    assert_eq!(a.line, "A -");
    let b = blocking(move || tls_session(addr, "x.b.test", &["h2"], 1, None)).await;
    let b = b.unwrap();
    assert_eq!(b.cert, f.b.cert);
    assert_eq!(b.line, "B h2");
    // Deeper names are the wildcard's too; the apex is not.
    let deep = blocking(move || tls_session(addr, "y.x.b.test", &[], 1, None)).await;
    assert_eq!(deep.unwrap().line, "B -");
    // No route: the default route, the listener's own backends.
    let c = blocking(move || tls_session(addr, "unknown.test", &[], 1, None)).await;
    let c = c.unwrap();
    assert_eq!(c.cert, f.c.cert);
    assert_eq!(c.line, "C -");

    assert_eq!(route_connections(&lb, "a"), 1);
    assert_eq!(route_connections(&lb, "b"), 2);
    assert_eq!(lb.service.stats.tls_default_route.load(Relaxed), 1);
    // Each backend got the ClientHello its client sent: one record.
    assert_eq!(f.a.seen().len(), 1);
    assert_eq!(f.a.seen()[0].first_record[0], 22);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_routes_take_their_protocol_before_plain_routes() {
    let f = fleet();
    let acme = TlsBackend::start("ACME", &["a.test", "any.test"], false);
    let mut routes = fleet_routes(&f);
    routes.push(route("acme", &[], &["acme-tls/1"], &[acme.addr]));
    routes.push(route("a-acme", &["a.test"], &["acme-tls/1"], &[acme.addr]));
    let lb = start(routed(&[f.c.addr], routes));
    let addr = lb.addr;

    let s = blocking(move || tls_session(addr, "a.test", &["acme-tls/1"], 1, None)).await;
    assert_eq!(s.unwrap().line, "ACME acme-tls/1");
    let s = blocking(move || tls_session(addr, "a.test", &["h2"], 1, None)).await;
    assert_eq!(s.unwrap().line, "A h2");
    // ALPN-only route: any name that no name route takes.
    let s = blocking(move || tls_session(addr, "any.test", &["acme-tls/1"], 1, None)).await;
    assert_eq!(s.unwrap().line, "ACME acme-tls/1");
    assert_eq!(route_connections(&lb, "a-acme"), 1);
    assert_eq!(route_connections(&lb, "acme"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acme_route_takes_tls_alpn_01_for_names_with_routes_of_their_own() {
    let f = fleet();
    let acme = TlsBackend::start("ACME", &["a.test", "x.b.test", "c.test"], false);
    let mut routes = fleet_routes(&f);
    routes.push(route("acme", &[], &["acme-tls/1"], &[acme.addr]));
    let lb = start(routed(&[f.c.addr], routes));
    let addr = lb.addr;

    // A CA validating a.test (exact route), x.b.test (wildcard route) and
    // c.test (the default route) reaches the ACME client every time.
    for name in ["a.test", "x.b.test", "c.test"] {
        let s = blocking(move || tls_session(addr, name, &["acme-tls/1"], 1, None)).await;
        let s = s.unwrap();
        assert_eq!(s.line, "ACME acme-tls/1", "{name}");
        assert!(
            s.cert == acme.cert,
            "{name}: not the ACME client's certificate"
        );
    }
    // Everyone else keeps their routes.
    let s = blocking(move || tls_session(addr, "a.test", &["h2"], 1, None)).await;
    assert_eq!(s.unwrap().line, "A h2");
    let s = blocking(move || tls_session(addr, "x.b.test", &[], 1, None)).await;
    assert_eq!(s.unwrap().line, "B -");
    assert_eq!(route_connections(&lb, "acme"), 3);
    assert_eq!(route_connections(&lb, "a"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_name_without_default_gets_the_unrecognized_name_alert() {
    let f = fleet();
    let lb = start(routed(&[], fleet_routes(&f)));
    let addr = lb.addr;

    // On the wire: exactly the alert, then the close.
    let (_, bytes) = hello("nobody.test", &[]);
    let answer = blocking(move || send_and_read_all(addr, &bytes)).await;
    assert_eq!(answer, UNRECOGNIZED_NAME_ALERT);
    // A real client reports it as such.
    let e = blocking(move || tls_session(addr, "nobody.test", &[], 1, None)).await;
    let e = e.unwrap_err();
    assert!(
        e.contains("UnrecognisedName") || e.contains("UnrecognizedName"),
        "{e}"
    );
    assert_eq!(lb.service.stats.tls_unmatched.load(Relaxed), 2);
    // Named routes still work.
    let s = blocking(move || tls_session(addr, "a.test", &[], 1, None)).await;
    assert_eq!(s.unwrap().line, "A -");
    assert!(f.c.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_bytes_are_closed_even_with_a_default_route() {
    let f = fleet();
    let lb = start(routed(&[f.c.addr], fleet_routes(&f)));
    let addr = lb.addr;
    let answer =
        blocking(move || send_and_read_all(addr, b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")).await;
    assert!(answer.is_empty(), "{answer:?}");
    // An SSLv2-style hello, too.
    let answer = blocking(move || send_and_read_all(addr, &[0x80, 0x2e, 0x01, 0x00, 0x02])).await;
    assert!(answer.is_empty(), "{answer:?}");
    // not_tls is the first reason.
    assert_eq!(lb.service.stats.tls_rejected[0].load(Relaxed), 2);
    assert!(f.a.seen().is_empty() && f.b.seen().is_empty() && f.c.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_hello_hits_the_inspect_timeout() {
    let f = fleet();
    let mut listener = routed(&[f.c.addr], fleet_routes(&f));
    listener.tls_inspect_timeout = Duration::from_millis(300);
    let lb = start(listener);
    let addr = lb.addr;
    let (_, bytes) = hello("a.test", &[]);
    let answer = blocking(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        // A third of the hello, then silence.
        stream.write_all(&bytes[..bytes.len() / 3]).unwrap();
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        answer
    })
    .await;
    assert!(answer.is_empty());
    // timeout is the fourth reason.
    assert_eq!(lb.service.stats.tls_rejected[3].load(Relaxed), 1);
    assert!(f.a.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hello_split_over_segments_and_records_arrives_unchanged() {
    let f = fleet();
    let lb = start(routed(&[f.c.addr], fleet_routes(&f)));
    let addr = lb.addr;
    let (_, bytes) = hello("a.test", &[]);
    // rustls offers a post-quantum key share: more than one small segment.
    assert!(bytes.len() > 1200, "{} bytes", bytes.len());

    // Three TCP writes, 30 ms apart.
    let s = blocking(move || tls_session(addr, "a.test", &["h2"], 3, None)).await;
    assert_eq!(s.unwrap().line, "A h2");
    // Records of 100 bytes, in four writes.
    let s = blocking(move || tls_session(addr, "a.test", &[], 4, Some(100))).await;
    assert_eq!(s.unwrap().line, "A -");
    let seen = f.a.seen();
    assert_eq!(seen.len(), 2);
    // The backend got the 100-byte records as they were sent.
    assert_eq!(seen[1].first_record.len(), 5 + 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_v2_carries_the_server_name_and_the_hello_follows_byte_for_byte() {
    let a = TlsBackend::start("A", &["a.test"], true);
    let mut r = route("a", &["a.test"], &[], &[a.addr]);
    r.pool.send_proxy = Some(ProxyVersion::V2);
    let lb = start(routed(&[], vec![r]));
    let addr = lb.addr;

    // The hello as the client sends it, and what the backend received.
    let (conn, bytes) = hello("a.test", &[]);
    let sent = bytes.clone();
    let line = blocking(move || {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, stream);
        tls.sock.write_all(&bytes).unwrap();
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock).unwrap();
        }
        let mut line = String::new();
        tls.read_to_string(&mut line).unwrap();
        line
    })
    .await;
    assert_eq!(line, "A -\n");
    let seen = a.seen();
    assert_eq!(seen[0].authority.as_deref(), Some("a.test"));
    assert_eq!(seen[0].first_record, sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_proxy_the_hellos_server_name_beats_a_received_authority() {
    let a = TlsBackend::start("A", &["a.test"], true);
    let c = TlsBackend::start("C", &["127.0.0.1"], true);
    let mut r = route("a", &["a.test"], &[], &[a.addr]);
    r.pool.send_proxy = Some(ProxyVersion::V2);
    let mut listener = routed(&[c.addr], vec![r]);
    listener.accept_proxy = true;
    listener.send_proxy = Some(ProxyVersion::V2);
    let lb = start(listener);
    let addr = lb.addr;
    // The proxy in front says the client asked for b.test.
    let header = proxy_protocol::encode_v2_with_authority(
        "203.0.113.7:40000".parse().unwrap(),
        addr,
        Some("b.test"),
    );

    // The hello asks for a.test: routed by it, and the backend hears a.test.
    let first = header.clone();
    let s = blocking(move || tls_session_after(addr, &first, "a.test", &[], 1, None)).await;
    assert_eq!(s.unwrap().line, "A -");
    assert_eq!(a.seen()[0].authority.as_deref(), Some("a.test"));
    // A hello without a server name (an IP address): the default route,
    // and the received authority is passed on.
    let s = blocking(move || tls_session_after(addr, &header, "127.0.0.1", &[], 1, None)).await;
    assert_eq!(s.unwrap().line, "C -");
    assert_eq!(c.seen()[0].authority.as_deref(), Some("b.test"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_route_pool_retries_and_checks_its_own_backends() {
    let f = fleet();
    let dead = refusing_addr();
    // Route a: a dead backend first, then A; retried on connect failure.
    let mut a = route("a", &["a.test"], &[], &[dead, f.a.addr]);
    a.pool.retries = 1;
    a.pool.health.interval = Duration::from_millis(100);
    a.pool.health.timeout = Duration::from_millis(100);
    // Route b: only dead backends: the TLS client is closed, never sent HTTP.
    let mut b = route("b", &["*.b.test"], &[], &[dead]);
    b.pool.retries = 0;
    // The listener's own pool is never tried for a routed name.
    let lb = start(routed(&[f.c.addr], vec![a, b]));
    let addr = lb.addr;

    for _ in 0..4 {
        let s = blocking(move || tls_session(addr, "a.test", &[], 1, None)).await;
        assert_eq!(s.unwrap().line, "A -");
    }
    // The route's prober finds its dead backend down.
    let routes = lb.service.routes.load_full();
    let pool = routes.routes[0].pool.clone();
    assert!(poll_until(PATIENCE, || !pool.load().backends[0].is_up()).await);
    let (_, bytes) = hello("x.b.test", &[]);
    let answer = blocking(move || send_and_read_all(addr, &bytes)).await;
    assert!(answer.is_empty(), "{answer:?}");
    // 502 or 503 (the prober may have found it down already), as a close.
    let stats = &lb.service.stats;
    let unavailable: u64 = stats.unavailable.iter().map(|c| c.load(Relaxed)).sum();
    let failed = stats.bad_gateway.load(Relaxed) + unavailable;
    assert_eq!(failed, 1);
    assert!(f.c.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_changes_routes_by_name_and_keeps_what_stays() {
    let f = fleet();
    let d = TlsBackend::start("D", &["a.test", "new.test"], false);
    let mut config = Config::single(routed(&[f.c.addr], fleet_routes(&f)));
    config.drain_timeout = Duration::from_secs(1);
    let balancer = tcplb::runtime::Balancer::bind(config.clone()).unwrap();
    let addr = balancer.local_addrs()[0];
    let service = balancer.services()[0].clone();
    let reload = balancer.reload_handle();
    let shutdown = balancer.shutdown_token();
    tokio::spawn(balancer.run());
    let _stop = scopeguard(shutdown);

    let s = blocking(move || tls_session(addr, "a.test", &[], 1, None)).await;
    assert_eq!(s.unwrap().line, "A -");
    let a_stats = service.routes.load().routes[0].stats.clone();

    // Route a moves to D, route b goes, route new comes.
    let mut next = config.clone();
    next.services[0].routes = vec![
        route("a", &["a.test"], &[], &[d.addr]),
        route("new", &["new.test"], &[], &[d.addr]),
    ];
    let summary = reload.apply(next).unwrap();
    assert!(summary.contains("route a changed"), "{summary}");
    assert!(summary.contains("route new added"), "{summary}");
    assert!(summary.contains("route b removed"), "{summary}");

    let s = blocking(move || tls_session(addr, "a.test", &[], 1, None)).await;
    assert_eq!(s.unwrap().line, "D -");
    let s = blocking(move || tls_session(addr, "new.test", &[], 1, None)).await;
    assert_eq!(s.unwrap().line, "D -");
    // b.test names now take the default route.
    let s = blocking(move || tls_session(addr, "x.b.test", &[], 1, None)).await;
    assert!(s.is_err(), "C holds no certificate for x.b.test");
    assert_eq!(f.c.seen().len(), 1);
    // Route a kept its counters.
    let routes = service.routes.load();
    assert!(Arc::ptr_eq(&routes.routes[0].stats, &a_stats));
    assert_eq!(a_stats.connections.load(Relaxed), 2);
}

/// Cancels the token when dropped, so a failed test stops its balancer.
fn scopeguard(token: tokio_util::sync::CancellationToken) -> impl Drop {
    struct Guard(tokio_util::sync::CancellationToken);
    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.cancel();
        }
    }
    Guard(token)
}

#[test]
fn many_clients_at_once_each_reach_their_route() {
    // A short burst from several threads: routing holds no shared lock that
    // would mix connections up.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let f = fleet();
    let lb = runtime.block_on(async { start(routed(&[f.c.addr], fleet_routes(&f))) });
    let addr = lb.addr;
    let deadline = Instant::now() + PATIENCE;
    let threads: Vec<_> = (0..6)
        .map(|i| {
            std::thread::spawn(move || {
                let (name, id) = [("a.test", "A"), ("q.b.test", "B"), ("c.test", "C")][i % 3];
                for _ in 0..10 {
                    assert!(Instant::now() < deadline);
                    let s = tls_session(addr, name, &[], 1, None).unwrap();
                    assert_eq!(s.line, format!("{id} -"));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(f.a.seen().len(), 20);
    assert_eq!(f.b.seen().len(), 20);
    assert_eq!(f.c.seen().len(), 20);
    runtime.block_on(async { drop(lb) });
}

/// `GET path` on the admin endpoint; the body.
fn admin_get(admin: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(admin).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    reply.split_once("\r\n\r\n").unwrap().1.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_routes_from_its_file_reports_routes_and_reloads_them() {
    let f = fleet();
    let text = |a: SocketAddr| {
        format!(
            r#"
admin = "127.0.0.1:0"

[[listener]]
name = "tls"
listen = "127.0.0.1:0"
tls_inspect_timeout = "2s"

[[listener.route]]
name = "a"
server_names = ["a.test"]
backends = ["{a}"]

[[listener.route]]
name = "b"
server_names = ["*.b.test"]
backends = ["{b}"]
send_proxy = "v2"
"#,
            b = f.b.addr
        )
    };
    let file = common::TempFile::new("routes.toml", &text(f.a.addr));
    let path = &file.0;
    let mut command = std::process::Command::new(common::tcplb_bin());
    command.args(["--config", path.to_str().unwrap()]);
    let tcplb = common::wait_listening(common::spawn_process(command));
    let addr = tcplb.addr;
    let admin_line = tcplb.process.line_with("admin endpoint on").await;
    let admin: SocketAddr = admin_line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap()
        .parse()
        .unwrap();

    let s = blocking(move || tls_session(addr, "a.test", &[], 1, None)).await;
    assert_eq!(s.unwrap().line, "A -");
    let (_, bytes) = hello("nobody.test", &[]);
    let answer = blocking(move || send_and_read_all(addr, &bytes)).await;
    assert_eq!(answer, UNRECOGNIZED_NAME_ALERT);
    let answer = blocking(move || send_and_read_all(addr, b"SSH-2.0-OpenSSH_9.6\r\n")).await;
    assert!(answer.is_empty());

    let metrics = blocking(move || admin_get(admin, "/metrics")).await;
    let listener = format!("listener=\"tls\",listen=\"{addr}\"");
    for line in [
        format!("tcplb_route_connections_total{{{listener},route=\"a\"}} 1"),
        format!("tcplb_route_connections_total{{{listener},route=\"b\"}} 0"),
        format!("tcplb_listener_tls_unmatched_total{{{listener}}} 1"),
        format!("tcplb_listener_tls_rejected_total{{{listener},reason=\"not_tls\"}} 1"),
        format!(
            "tcplb_backend_connections_total{{{listener},route=\"a\",backend=\"{}\"}} 1",
            f.a.addr
        ),
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} not in\n{metrics}"
        );
    }
    let status = blocking(move || admin_get(admin, "/status")).await;
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let routes = &status["listeners"][0]["routes"];
    assert_eq!(routes[0]["name"], "a");
    assert_eq!(routes[0]["server_names"][0], "a.test");
    assert_eq!(routes[0]["connections"], 1);
    assert_eq!(routes[1]["server_names"][0], "*.b.test");
    assert_eq!(status["listeners"][0]["tls"]["unmatched"], 1);
    // The control API finds a route's pool by its name.
    let pool = blocking(move || admin_get(admin, "/api/v1/pools/b/backends")).await;
    assert!(pool.contains(&f.b.addr.to_string()), "{pool}");

    // SIGHUP: route a moves to C.
    std::fs::write(path, text(f.c.addr)).unwrap();
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &tcplb.pid().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let reloaded = tcplb.process.line_with("reloaded ").await;
    assert!(reloaded.contains("route a changed"), "{reloaded}");
    // C has no certificate for a.test: the handshake must fail on the name.
    let s = blocking(move || tls_session(addr, "a.test", &[], 1, None)).await;
    let e = s.unwrap_err();
    assert!(e.contains("not valid for name"), "{e}");
    assert_eq!(f.c.seen().len(), 1);
}
