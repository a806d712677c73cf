//! PROXY protocol end to end on loopback: `--send-proxy v1|v2` writes the
//! exact header before any client byte, `--accept-proxy` strips a valid
//! header (and lets its client address drive `hash`), and a bad or missing
//! header closes the connection without a byte reaching any backend.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use common::{PATIENCE, TestBackend, TestBalancer, echo_roundtrip, service};
use tcplb::config::StrategyKind;
use tcplb::config::{ProxyVersion, ServiceConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

const V2_SIGNATURE: [u8; 12] = [
    0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
];

/// Reads the PROXY header the balancer sent, by the spec's framing alone
/// (not tcplb's parser): a v1 line up to CRLF, or v2's 16 bytes plus length.
async fn read_header_bytes(stream: &mut TcpStream) -> Vec<u8> {
    let mut header = vec![0u8; 16];
    stream
        .read_exact(&mut header[..1])
        .await
        .expect("first byte");
    if header[0] == b'P' {
        header.truncate(1);
        while !header.ends_with(b"\r\n") {
            assert!(header.len() < 108, "no CRLF in {header:?}");
            let mut byte = [0u8];
            stream.read_exact(&mut byte).await.expect("v1 byte");
            header.push(byte[0]);
        }
    } else {
        stream
            .read_exact(&mut header[1..])
            .await
            .expect("v2 fixed part");
        let len = usize::from(u16::from_be_bytes([header[14], header[15]]));
        header.resize(16 + len, 0);
        stream.read_exact(&mut header[16..]).await.expect("v2 body");
    }
    header
}

/// A backend that reports each connection's PROXY header, then echoes.
async fn header_then_echo(listener: TcpListener, headers: UnboundedSender<Vec<u8>>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let headers = headers.clone();
        tokio::spawn(async move {
            let header = read_header_bytes(&mut stream).await;
            let _ = headers.send(header);
            let (mut reader, mut writer) = stream.split();
            let _ = tokio::io::copy(&mut reader, &mut writer).await;
            let _ = writer.shutdown().await;
        });
    }
}

/// A backend that reports (its id, every byte of a connection) at EOF.
/// Connections that send nothing are the prober's and are not reported;
/// `TestBalancer::total` counts the balancer's own connections.
async fn recorder(listener: TcpListener, id: usize, records: UnboundedSender<(usize, Vec<u8>)>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let records = records.clone();
        tokio::spawn(async move {
            let mut received = Vec::new();
            let _ = stream.read_to_end(&mut received).await;
            if !received.is_empty() {
                let _ = records.send((id, received));
            }
            let _ = stream.shutdown().await;
        });
    }
}

async fn recording_backend(id: usize, records: &UnboundedSender<(usize, Vec<u8>)>) -> TestBackend {
    let records = records.clone();
    TestBackend::with(move |l| recorder(l, id, records.clone())).await
}

async fn next<T>(rx: &mut UnboundedReceiver<T>) -> T {
    tokio::time::timeout(PATIENCE, rx.recv())
        .await
        .expect("backend reported nothing in time")
        .expect("backend channel closed")
}

/// Sends `chunks` (header and payload, in as many writes), half-closes and
/// reads everything the balancer sends back.
async fn send_through(addr: SocketAddr, chunks: &[&[u8]]) -> Vec<u8> {
    tokio::time::timeout(PATIENCE, async {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        for chunk in chunks {
            stream.write_all(chunk).await.expect("send");
            // Let each chunk arrive on its own, so the reader sees a header
            // cut in pieces.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stream.shutdown().await.expect("shutdown write");
        let mut back = Vec::new();
        stream.read_to_end(&mut back).await.expect("read back");
        back
    })
    .await
    .expect("send_through timed out")
}

fn v2_tcp4(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let (SocketAddr::V4(src), SocketAddr::V4(dst)) = (src, dst) else {
        panic!("not IPv4");
    };
    let mut out = V2_SIGNATURE.to_vec();
    out.extend_from_slice(&[0x21, 0x11, 0x00, 0x0c]);
    out.extend_from_slice(&src.ip().octets());
    out.extend_from_slice(&dst.ip().octets());
    out.extend_from_slice(&src.port().to_be_bytes());
    out.extend_from_slice(&dst.port().to_be_bytes());
    out
}

/// [`v2_tcp4`] with TLVs appended (type, value) and, last, a CRC32C TLV
/// holding the header's checksum (spec 2.2.2), corrupted when `corrupt`.
fn v2_tcp4_checked(
    src: SocketAddr,
    dst: SocketAddr,
    tlvs: &[(u8, &[u8])],
    corrupt: bool,
) -> Vec<u8> {
    let mut header = v2_tcp4(src, dst);
    for (kind, value) in tlvs {
        header.push(*kind);
        header.extend_from_slice(&(value.len() as u16).to_be_bytes());
        header.extend_from_slice(value);
    }
    header.extend_from_slice(&[0x03, 0x00, 0x04, 0, 0, 0, 0]);
    let len = (header.len() - 16) as u16;
    header[14..16].copy_from_slice(&len.to_be_bytes());
    let mut sum = crc32c::crc32c(&header);
    if corrupt {
        sum ^= 1;
    }
    let at = header.len() - 4;
    header[at..].copy_from_slice(&sum.to_be_bytes());
    header
}

async fn send_proxy_case(version: ProxyVersion) {
    let (tx, mut headers) = unbounded_channel();
    let backend = TestBackend::with(move |l| header_then_echo(l, tx.clone())).await;
    let mut svc = service(&[backend.addr]);
    svc.send_proxy = Some(version);
    let lb = TestBalancer::start(svc);

    let mut client = TcpStream::connect(lb.addr).await.unwrap();
    let client_addr = client.local_addr().unwrap();
    let payload = b"first client bytes\r\n\r\n\x00\xff";
    let back = tokio::time::timeout(PATIENCE, async {
        client.write_all(payload).await.unwrap();
        client.shutdown().await.unwrap();
        let mut back = Vec::new();
        client.read_to_end(&mut back).await.unwrap();
        back
    })
    .await
    .expect("echo through send-proxy timed out");
    assert_eq!(back, payload, "the backend echoes exactly the client bytes");

    let expected = match version {
        ProxyVersion::V1 => format!(
            "PROXY TCP4 127.0.0.1 127.0.0.1 {} {}\r\n",
            client_addr.port(),
            lb.addr.port()
        )
        .into_bytes(),
        ProxyVersion::V2 => v2_tcp4(client_addr, lb.addr),
    };
    assert_eq!(next(&mut headers).await, expected);
}

#[tokio::test]
async fn send_proxy_v1_writes_the_exact_line_before_client_bytes() {
    send_proxy_case(ProxyVersion::V1).await;
}

#[tokio::test]
async fn send_proxy_v2_writes_the_exact_header_before_client_bytes() {
    send_proxy_case(ProxyVersion::V2).await;
}

fn accepting(backends: &[SocketAddr]) -> ServiceConfig {
    let mut svc = service(backends);
    svc.accept_proxy = true;
    svc
}

#[tokio::test]
async fn accept_proxy_v1_passes_only_the_payload() {
    let (tx, mut records) = unbounded_channel();
    let backend = recording_backend(0, &tx).await;
    let lb = TestBalancer::start(accepting(&[backend.addr]));

    // Header and payload in one segment: not one payload byte may be lost.
    let sent = b"PROXY TCP4 203.0.113.7 192.0.2.1 5555 80\r\nGET / HTTP/1.1\r\n\r\n";
    assert_eq!(send_through(lb.addr, &[sent]).await, b"");
    assert_eq!(
        next(&mut records).await,
        (0, b"GET / HTTP/1.1\r\n\r\n".to_vec())
    );
    // UNKNOWN is accepted and keeps the real peer.
    send_through(lb.addr, &[b"PROXY UNKNOWN\r\n", b"after unknown"]).await;
    assert_eq!(next(&mut records).await, (0, b"after unknown".to_vec()));
}

#[tokio::test]
async fn accept_proxy_v2_passes_only_the_payload_even_when_split() {
    let (tx, mut records) = unbounded_channel();
    let backend = recording_backend(0, &tx).await;
    let lb = TestBalancer::start(accepting(&[backend.addr]));

    let mut header = v2_tcp4("198.51.100.9:40000".parse().unwrap(), lb.addr);
    // A NOOP TLV the reader must skip.
    header[15] += 5;
    header.extend_from_slice(&[0x04, 0x00, 0x02, 0xaa, 0xbb]);
    let mut sent = header.clone();
    sent.extend_from_slice(b"\r\n\r\npayload");
    send_through(lb.addr, &[&sent]).await;
    assert_eq!(next(&mut records).await, (0, b"\r\n\r\npayload".to_vec()));

    // The header in three pieces, the last one carrying the payload too.
    let (a, rest) = header.split_at(5);
    let (b, c) = rest.split_at(12);
    let mut c = c.to_vec();
    c.extend_from_slice(b"split payload");
    send_through(lb.addr, &[a, b, &c]).await;
    assert_eq!(next(&mut records).await, (0, b"split payload".to_vec()));

    // LOCAL (a health check from the proxy in front) is accepted.
    let mut local = V2_SIGNATURE.to_vec();
    local.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
    local.extend_from_slice(b"local payload");
    send_through(lb.addr, &[&local]).await;
    assert_eq!(next(&mut records).await, (0, b"local payload".to_vec()));
}

#[tokio::test]
async fn accept_then_send_relays_the_carried_addresses() {
    let (tx, mut headers) = unbounded_channel();
    let backend = TestBackend::with(move |l| header_then_echo(l, tx.clone())).await;
    let mut svc = accepting(&[backend.addr]);
    svc.send_proxy = Some(ProxyVersion::V1);
    let lb = TestBalancer::start(svc);

    let mut sent = b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 443\r\n".to_vec();
    sent.extend_from_slice(b"echo me");
    assert_eq!(echo_roundtrip(lb.addr, &sent).await, b"echo me");
    assert_eq!(
        next(&mut headers).await,
        b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 443\r\n"
    );
}

/// A v2 header with a good CRC32C and an authority TLV is accepted, and
/// with `--send-proxy v2` the authority travels on to the backend.
#[tokio::test]
async fn a_checked_v2_header_is_accepted_and_its_authority_relayed() {
    let (tx, mut headers) = unbounded_channel();
    let backend = TestBackend::with(move |l| header_then_echo(l, tx.clone())).await;
    let mut svc = accepting(&[backend.addr]);
    svc.send_proxy = Some(ProxyVersion::V2);
    let lb = TestBalancer::start(svc);

    let client: SocketAddr = "198.51.100.9:40000".parse().unwrap();
    let mut sent = v2_tcp4_checked(client, lb.addr, &[(0x02, b"db.example.com")], false);
    sent.extend_from_slice(b"echo me");
    assert_eq!(echo_roundtrip(lb.addr, &sent).await, b"echo me");
    let relayed = next(&mut headers).await;
    let mut expected = v2_tcp4(client, lb.addr);
    expected.extend_from_slice(&[0x02, 0x00, 14]);
    expected.extend_from_slice(b"db.example.com");
    expected[15] += 3 + 14;
    assert_eq!(relayed, expected);
    assert_eq!(lb.service.stats.proxy_header_errors.load(Relaxed), 0);
}

#[tokio::test]
async fn carried_client_address_drives_the_hash_strategy() {
    let (tx, mut records) = unbounded_channel();
    let a = recording_backend(0, &tx).await;
    let b = recording_backend(1, &tx).await;
    let mut svc = accepting(&[a.addr, b.addr]);
    svc.strategy = StrategyKind::Hash;
    let lb = TestBalancer::start(svc);

    let state = lb.service.pool.load();
    let real_peer_choice = state.pick("127.0.0.1".parse().unwrap(), &[]);
    let mut chosen = Vec::new();
    for round in 0..2 {
        for i in 1..=16u8 {
            let ip = IpAddr::from([10, 0, 0, i]);
            let expected = state.pick(ip, &[]).expect("a backend is up");
            let header = format!("PROXY TCP4 {ip} 127.0.0.1 1234 80\r\n");
            let payload = format!("from {ip} round {round}");
            send_through(lb.addr, &[format!("{header}{payload}").as_bytes()]).await;
            assert_eq!(
                next(&mut records).await,
                (expected, payload.into_bytes()),
                "{ip} must land where hash({ip}) says"
            );
            chosen.push(expected);
        }
    }
    // Some carried address hashes elsewhere than the real peer (127.0.0.1)
    // would: the header, not the socket, decided.
    assert!(
        chosen.iter().any(|c| Some(*c) != real_peer_choice),
        "all 16 addresses hash like 127.0.0.1: {chosen:?}"
    );
    assert!(chosen.contains(&0) && chosen.contains(&1), "{chosen:?}");
}

/// Reads until the balancer closes; any byte back is a failure.
async fn expect_closed(stream: &mut TcpStream, case: &str) {
    let mut back = Vec::new();
    let read = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut back))
        .await
        .unwrap_or_else(|_| panic!("{case}: the balancer kept the connection open"));
    // Closing with unread bytes buffered sends a reset; both mean closed.
    if let Err(e) = read {
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{case}: {e}");
    }
    assert!(back.is_empty(), "{case}: got {back:?}");
}

#[tokio::test]
async fn bad_or_missing_headers_close_without_reaching_a_backend() {
    let (tx, mut records) = unbounded_channel();
    let backend = recording_backend(0, &tx).await;
    let mut svc = accepting(&[backend.addr]);
    // Also the header timeout, kept short for the silent client below.
    svc.connect_timeout = Duration::from_millis(500);
    let lb = TestBalancer::start(svc);

    let mut bad_version = v2_tcp4("192.0.2.1:1".parse().unwrap(), lb.addr);
    bad_version[12] = 0x11;
    let mut v1_too_long = b"PROXY UNKNOWN ".to_vec();
    v1_too_long.resize(200, b'x');
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("no header", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        (
            "double space",
            b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\nhello".to_vec(),
        ),
        ("LF only", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\nhello".to_vec()),
        (
            "port out of range",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\nhello".to_vec(),
        ),
        (
            "family mismatch",
            b"PROXY TCP4 ::1 ::1 1 2\r\nhello".to_vec(),
        ),
        ("v1 over 107 bytes", v1_too_long),
        ("v2 version 1", bad_version),
        ("v2 CRC32C mismatch", {
            let mut bytes = v2_tcp4_checked("192.0.2.1:1".parse().unwrap(), lb.addr, &[], true);
            bytes.extend_from_slice(b"hello");
            bytes
        }),
    ];
    for (case, bytes) in &cases {
        let mut stream = TcpStream::connect(lb.addr).await.unwrap();
        stream.write_all(bytes).await.unwrap();
        expect_closed(&mut stream, case).await;
    }

    // Truncated headers, then the client half-closes: rejected at EOF.
    let v2 = v2_tcp4("192.0.2.1:1".parse().unwrap(), lb.addr);
    for (case, bytes) in [
        ("empty", &b""[..]),
        ("truncated v1", b"PROXY TCP4 1.2.3.4 5.6"),
        ("truncated v2", &v2[..20]),
    ] {
        let mut stream = TcpStream::connect(lb.addr).await.unwrap();
        stream.write_all(bytes).await.unwrap();
        stream.shutdown().await.unwrap();
        expect_closed(&mut stream, case).await;
    }

    // A client that says nothing is closed after the header timeout.
    let mut silent = TcpStream::connect(lb.addr).await.unwrap();
    expect_closed(&mut silent, "silent client").await;

    // The backend never saw any of those: the first thing it records is
    // this valid connection, and it is the only one it ever accepted.
    send_through(lb.addr, &[b"PROXY TCP4 192.0.2.1 127.0.0.1 1 2\r\nvalid"]).await;
    assert_eq!(next(&mut records).await, (0, b"valid".to_vec()));
    assert_eq!(lb.total(0), 1);
    assert!(records.try_recv().is_err());
    // Every bad case above was counted; the valid one was not.
    let errors = lb.service.stats.proxy_header_errors.load(Relaxed) as usize;
    assert_eq!(errors, cases.len() + 3 + 1);
}

#[tokio::test]
async fn access_control_applies_to_the_carried_client_address() {
    let backend = TestBackend::echo().await;
    let mut svc = accepting(&[backend.addr]);
    // The proxy in front (127.0.0.1) is trusted; the clients it carries are judged.
    svc.access.deny = vec!["198.51.100.0/24".parse().unwrap()];
    let lb = TestBalancer::start(svc);

    let denied = send_through(
        lb.addr,
        &[b"PROXY TCP4 198.51.100.9 192.0.2.1 5555 80\r\n", b"hello"],
    )
    .await;
    assert_eq!(denied, b"", "a denied carried client got bytes back");
    assert_eq!(
        lb.total(0),
        0,
        "a denied carried client reached the backend"
    );

    let allowed = send_through(
        lb.addr,
        &[b"PROXY TCP4 203.0.113.7 192.0.2.1 5555 80\r\n", b"hello"],
    )
    .await;
    assert_eq!(allowed, b"hello");
    assert_eq!(lb.total(0), 1);
}
