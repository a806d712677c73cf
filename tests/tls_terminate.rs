//! TLS termination end to end: a real tcplb holds the keys in front of a
//! plain echo or HTTP backend; `openssl s_client` and `curl` (OpenSSL) are
//! the clients, a throwaway CA (rcgen) signs everything.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tcplb::config::{CertificatePaths, RouteConfig, ServiceConfig, TlsConfig};
use tcplb::stats::tls::TlsFailure;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::pki::{Ca, Issued, Key};
use common::{TestBackend, TestBalancer, hello_port, service};

/// `openssl s_client ARGS` against `addr` with nothing to send: the
/// handshake, `-brief`'s report, and the close. Its stdout and stderr.
async fn s_client(addr: SocketAddr, args: &[&str]) -> String {
    let mut command = Command::new("timeout");
    command
        .args(["20", "openssl", "s_client", "-brief", "-connect"])
        .arg(addr.to_string())
        .args(args)
        .stdin(std::process::Stdio::null());
    let output = tokio::task::spawn_blocking(move || command.output().expect("run openssl"))
        .await
        .unwrap();
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    text
}

/// `curl https://NAME:PORT/` resolved to `addr`, trusting `ca`; the body
/// (or curl's error).
async fn curl(addr: SocketAddr, name: &str, ca: &str, extra: &[&str]) -> String {
    let mut command = Command::new("curl");
    command
        .args(["-sS", "--max-time", "20", "--cacert", ca, "--resolve"])
        .arg(format!("{name}:{}:127.0.0.1", addr.port()))
        .args(extra)
        .arg(format!("https://{name}:{}/", addr.port()));
    let output = tokio::task::spawn_blocking(move || command.output().expect("run curl"))
        .await
        .unwrap();
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    text
}

fn pair(issued: &Issued) -> CertificatePaths {
    CertificatePaths {
        cert: issued.cert.clone(),
        key: issued.key.clone(),
    }
}

/// A listener terminating with `certificates` in front of `backend`.
fn terminating(backend: SocketAddr, certificates: &[&Issued]) -> ServiceConfig {
    let mut config = service(&[backend]);
    config.tls = Some(TlsConfig::new(
        certificates.iter().map(|c| pair(c)).collect(),
    ));
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_the_certificate_exact_wildcard_or_default_and_the_key_type_by_signature_algorithms()
 {
    let mut ca = Ca::new("sni");
    let default = ca.server("default", &["default.test"], Key::Ecdsa);
    let a_ecdsa = ca.server("a-ecdsa", &["a.test"], Key::Ecdsa);
    let a_rsa = ca.server("a-rsa", &["a.test"], Key::Rsa);
    let wild = ca.server("wild", &["*.wild.test"], Key::Ecdsa);
    let backend = TestBackend::http().await;
    let balancer = TestBalancer::start(terminating(
        backend.addr,
        &[&default, &a_ecdsa, &a_rsa, &wild],
    ));
    let ca_file = ca.cert_arg();
    let verified = |name: &str| {
        vec![
            "-servername".to_string(),
            name.to_string(),
            "-CAfile".into(),
            ca_file.clone(),
            "-verify_return_error".into(),
        ]
    };
    let run = |mut args: Vec<String>, extra: &[&str]| {
        args.extend(extra.iter().map(|s| s.to_string()));
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            s_client(balancer.addr, &args).await
        }
    };
    let out = run(verified("a.test"), &["-sigalgs", "ECDSA+SHA256"]).await;
    assert!(out.contains("Peer certificate: CN = a.test"), "{out}");
    assert!(out.contains("Signature type: ECDSA"), "{out}");
    assert!(out.contains("Verification: OK"), "{out}");
    let out = run(verified("a.test"), &["-sigalgs", "RSA-PSS+SHA256"]).await;
    assert!(out.contains("Peer certificate: CN = a.test"), "{out}");
    assert!(out.contains("Signature type: RSA-PSS"), "{out}");
    // TLS 1.2 with an RSA-only cipher suite: the RSA certificate.
    let out = run(
        verified("a.test"),
        &["-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"],
    )
    .await;
    assert!(out.contains("Protocol version: TLSv1.2"), "{out}");
    assert!(out.contains("Peer certificate: CN = a.test"), "{out}");
    let out = run(verified("x.wild.test"), &[]).await;
    assert!(out.contains("Peer certificate: CN = *.wild.test"), "{out}");
    assert!(out.contains("Verification: OK"), "{out}");
    // A wildcard is one label: a deeper name gets the default.
    let out = run(verified("a.b.wild.test"), &[]).await;
    assert!(out.contains("CN = default.test"), "{out}");
    let out = run(verified("nobody.test"), &[]).await;
    assert!(out.contains("CN = default.test"), "{out}");
    let out = s_client(balancer.addr, &["-noservername", "-CAfile", &ca_file]).await;
    assert!(
        out.contains("CN = default.test") && out.contains("Verification: OK"),
        "{out}"
    );
    // And the plaintext reaches the plain backend, through curl (OpenSSL).
    let body = curl(balancer.addr, "a.test", &ca_file, &[]).await;
    assert_eq!(hello_port(&body), backend.addr.port(), "{body}");
    let body = curl(balancer.addr, "x.wild.test", &ca_file, &[]).await;
    assert_eq!(hello_port(&body), backend.addr.port(), "{body}");
    let stats = &balancer.service.stats.tls;
    assert!(stats.completed() >= 8, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_echo_both_ways_through_a_terminated_connection() {
    let mut ca = Ca::new("echo");
    let cert = ca.server("echo", &["echo.test"], Key::Ecdsa);
    let backend = TestBackend::echo().await;
    let balancer = TestBalancer::start(terminating(backend.addr, &[&cert]));
    // openssl s_client as a pipe: 1 MiB up, the echo back, then EOF.
    let data: Vec<u8> = common::Pattern::bytes(7, 1 << 20);
    let input = ca.dir.path("input.bin");
    std::fs::write(&input, &data).unwrap();
    let addr = balancer.addr.to_string();
    let ca_file = ca.cert_arg();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "(cat '{}'; sleep 1) | timeout 20 openssl s_client -brief -nocommands \
                 -connect {addr} -servername echo.test -CAfile '{ca_file}' \
                 -verify_return_error",
                input.display()
            ))
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(
        output.stdout.len(),
        data.len(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.stdout == data, "the echo differs");
    // s_client's close_notify reached the backend as a FIN, its close came
    // back as close_notify: openssl exited by itself, not by `timeout`.
    assert!(output.status.success(), "{:?}", output.status);
}

/// `openssl s_server` serving `cert` on a free port (it answers with its
/// own identity: `-www` writes the session as HTML), killed on drop.
async fn s_server(cert: &Issued, extra: &[&str]) -> (common::Process, SocketAddr) {
    let port = common::free_port();
    let mut command = Command::new("openssl");
    command
        .args(["s_server", "-accept"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("-cert")
        .arg(&cert.cert)
        .arg("-key")
        .arg(&cert.key)
        .args(extra);
    let process = common::spawn_process(command);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let up = common::poll_until(common::PATIENCE, || {
        std::net::TcpStream::connect(addr).is_ok()
    })
    .await;
    assert!(up, "s_server did not listen: {}", process.stderr_text());
    (process, addr)
}

fn route(name: &str, names: &[&str], alpn: &[&str], backend: SocketAddr) -> RouteConfig {
    RouteConfig {
        name: name.into(),
        server_names: names.iter().map(|n| n.parse().unwrap()).collect(),
        alpn: alpn.iter().map(|p| p.to_string()).collect(),
        pool: service(&[backend]),
    }
}

/// The terminator of route `index` of `balancer`'s listener.
fn route_tls(balancer: &TestBalancer, index: usize) -> std::sync::Arc<tcplb::stats::tls::TlsStats> {
    let routes = balancer.service.routes.load();
    routes.routes[index].tls.as_ref().unwrap().stats.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_port_mixes_passthrough_and_terminating_routes_and_alpn_picks_and_is_recorded() {
    let mut ca = Ca::new("mixed");
    let passed = ca.server("passed", &["pass.test"], Key::Ecdsa);
    let terminated = ca.server("term", &["term.test"], Key::Ecdsa);
    let (_server, tls_backend) = s_server(&passed, &["-www"]).await;
    let http = TestBackend::http().await;
    let echo = TestBackend::echo().await;
    let mut config = service(&[]);
    config.backends.clear();
    let mut term = route("term", &["term.test"], &[], http.addr);
    term.pool.tls = Some(TlsConfig::new(vec![pair(&terminated)]));
    // Chosen by the client's ALPN; negotiates the route's own list.
    let mut h2 = route("h2", &["term.test"], &["h2"], echo.addr);
    h2.pool.tls = Some(TlsConfig::new(vec![pair(&terminated)]));
    let mut modern = route("modern", &["modern.test"], &[], http.addr);
    let mut tls13 = TlsConfig::new(vec![pair(&terminated)]);
    tls13.min_version = tcplb::config::TlsVersion::V1_3;
    modern.pool.tls = Some(tls13);
    config.routes = vec![
        route("pass", &["pass.test"], &[], tls_backend),
        term,
        h2,
        modern,
    ];
    let balancer = TestBalancer::start(config);
    let ca_file = ca.cert_arg();
    // Passed through: s_server's own certificate, its -www page.
    let body = curl(balancer.addr, "pass.test", &ca_file, &[]).await;
    assert!(
        body.contains("s_server") || body.contains("Ciphers supported"),
        "{body}"
    );
    // Terminated: tcplb's certificate, the plain backend's answer.
    let body = curl(balancer.addr, "term.test", &ca_file, &["--http1.1"]).await;
    assert_eq!(hello_port(&body), http.addr.port(), "{body}");
    let alpn = |offered: &'static [&'static str]| {
        move |config: &mut rustls::ClientConfig| {
            config.alpn_protocols = offered.iter().map(|p| p.as_bytes().to_vec()).collect();
        }
    };
    let offered = alpn(&["h2", "http/1.1"]);
    let (tls, _) = rustls_client_with(balancer.addr, "term.test", &ca, None, offered)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    eventually(|| route_tls(&balancer, 2).completed() == 1).await;
    let offered = alpn(&["http/1.1"]);
    let (tls, _) = rustls_client_with(balancer.addr, "term.test", &ca, None, offered)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), None);
    eventually(|| route_tls(&balancer, 1).completed() == 2).await;
    // min_version = "1.3": a TLS 1.2 client hears protocol_version.
    let out = s_client(
        balancer.addr,
        &["-servername", "modern.test", "-CAfile", &ca_file, "-tls1_2"],
    )
    .await;
    assert!(out.contains("protocol version"), "{out}");
    let modern_stats = route_tls(&balancer, 3);
    eventually(|| modern_stats.failures_of(TlsFailure::ProtocolVersion) == 1).await;
    let out = s_client(
        balancer.addr,
        &["-servername", "modern.test", "-CAfile", &ca_file],
    )
    .await;
    assert!(out.contains("Protocol version: TLSv1.3"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_the_right_alert_is_counted_and_costs_no_backend() {
    let mut ca = Ca::new("bad");
    let cert = ca.server("bad", &["bad.test"], Key::Ecdsa);
    let backend = TestBackend::echo().await;
    let mut config = terminating(backend.addr, &[&cert]);
    config.tls.as_mut().unwrap().handshake_timeout = Duration::from_millis(500);
    let balancer = TestBalancer::start(config);
    let stats = balancer.service.stats.clone();
    let ca_file = ca.cert_arg();
    // Plaintext on a TLS port: closed at its first bytes, no backend.
    let reply = common::raw_exchange(balancer.addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(reply, "");
    eventually(|| stats.tls_rejected[0].load(Relaxed) == 1).await;
    // No shared cipher: RSA key exchange, which rustls never offers.
    let out = s_client(
        balancer.addr,
        &[
            "-servername",
            "bad.test",
            "-tls1_2",
            "-cipher",
            "AES128-SHA",
        ],
    )
    .await;
    assert!(out.contains("handshake failure"), "{out}");
    eventually(|| failures(&stats.tls) == [("no_shared_cipher", 1)]).await;
    // A ClientHello and then nothing: closed at the handshake timeout.
    let mut stream = TcpStream::connect(balancer.addr).await.unwrap();
    stream.write_all(&client_hello("bad.test")).await.unwrap();
    let mut sink = Vec::new();
    let read = tokio::time::timeout(common::PATIENCE, stream.read_to_end(&mut sink)).await;
    assert!(read.is_ok(), "not closed within the handshake timeout");
    eventually(|| stats.tls.failures_of(TlsFailure::Timeout) == 1).await;
    // Garbage after a good handshake: an alert, then the close.
    let (mut tls, _) = rustls_client(balancer.addr, "bad.test", &ca).await;
    tls.get_mut().0.write_all(&[23, 3, 3, 0, 32]).await.unwrap();
    tls.get_mut().0.write_all(&[0x55; 32]).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(common::PATIENCE, tls.get_mut().0.read_to_end(&mut answer)).await;
    // Encrypted (TLS 1.3): the client's own rustls reads it.
    let connection = tls.get_mut().1;
    let mut rest = &answer[..];
    while !rest.is_empty() && connection.read_tls(&mut rest).unwrap() > 0 {}
    let error = connection.process_new_packets().unwrap_err();
    assert_eq!(
        error,
        rustls::Error::AlertReceived(rustls::AlertDescription::BadRecordMac)
    );
    eventually(|| stats.tls.protocol_errors.load(Relaxed) == 1).await;
    // Nobody else was slowed: a good client still gets through.
    let out = s_client(
        balancer.addr,
        &["-servername", "bad.test", "-CAfile", &ca_file],
    )
    .await;
    assert!(out.contains("Verification: OK"), "{out}");
    // None of the bad ones reached the backend.
    let backend_total = balancer.service.pool.load().backends[0]
        .stats
        .total
        .load(Relaxed);
    assert!(backend_total <= 2, "{backend_total}");
}

/// Waits (boundedly) for `condition`: counters move just after the
/// client saw the handshake end.
async fn eventually(condition: impl FnMut() -> bool) {
    assert!(
        common::poll_until(common::PATIENCE, condition).await,
        "never came true"
    );
}

/// The failure reasons counted so far, with their counts.
fn failures(stats: &tcplb::stats::tls::TlsStats) -> Vec<(&'static str, u64)> {
    TlsFailure::ALL
        .iter()
        .map(|f| (f.label(), stats.failures_of(*f)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// A ClientHello for `name`, as rustls writes it.
fn client_hello(name: &str) -> Vec<u8> {
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let mut client = rustls::ClientConnection::new(
        std::sync::Arc::new(config),
        name.to_string().try_into().unwrap(),
    )
    .unwrap();
    let mut hello = Vec::new();
    client.write_tls(&mut hello).unwrap();
    hello
}

/// A tokio-rustls client trusting `ca`, connected to `addr` for `name`,
/// optionally with a client certificate; `tweak` adjusts its config.
async fn rustls_client_with(
    addr: SocketAddr,
    name: &str,
    ca: &Ca,
    identity: Option<&Issued>,
    tweak: impl FnOnce(&mut rustls::ClientConfig),
) -> std::io::Result<(
    tokio_rustls::client::TlsStream<TcpStream>,
    std::sync::Arc<rustls::ClientConfig>,
)> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_file(&ca.cert).unwrap())
        .unwrap();
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let mut config = match identity {
        Some(id) => builder
            .with_client_auth_cert(
                vec![rustls::pki_types::CertificateDer::from_pem_file(&id.cert).unwrap()],
                rustls::pki_types::PrivateKeyDer::from_pem_file(&id.key).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    tweak(&mut config);
    let config = std::sync::Arc::new(config);
    Ok((connect_with(addr, name, config.clone()).await?, config))
}

/// A TLS connection to `addr` for `name` with `config` (whose session
/// store lets a second connection resume).
async fn connect_with(
    addr: SocketAddr,
    name: &str,
    config: std::sync::Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let connector = tokio_rustls::TlsConnector::from(config);
    let stream = TcpStream::connect(addr).await?;
    connector
        .connect(name.to_string().try_into().unwrap(), stream)
        .await
}

async fn rustls_client(
    addr: SocketAddr,
    name: &str,
    ca: &Ca,
) -> (
    tokio_rustls::client::TlsStream<TcpStream>,
    std::sync::Arc<rustls::ClientConfig>,
) {
    rustls_client_with(addr, name, ca, None, |_| ())
        .await
        .unwrap()
}

/// Whether a client presenting `identity` (or none) completes a request:
/// with TLS 1.3 the server judges the certificate after the client's
/// Finished, so the verdict is the first read (an echo, or the alert).
async fn mtls_echo(addr: SocketAddr, ca: &Ca, identity: Option<&Issued>) -> Result<(), String> {
    let (mut tls, _) = rustls_client_with(addr, "mtls.test", ca, identity, |_| ())
        .await
        .map_err(|e| e.to_string())?;
    tls.write_all(b"ping").await.map_err(|e| e.to_string())?;
    let mut reply = [0u8; 4];
    tokio::time::timeout(common::PATIENCE, tls.read_exact(&mut reply))
        .await
        .map_err(|_| "no answer".to_string())?
        .map_err(|e| e.to_string())?;
    assert_eq!(&reply, b"ping");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_chain_to_the_ca_pass_the_crl_and_an_allow_list_or_are_refused_by_reason()
 {
    use tcplb::config::{ClientAllowList, ClientAuthConfig, ClientAuthMode};
    let mut ca = Ca::new("mtls");
    let mut other = Ca::new("mtls-other");
    let server = ca.server("server", &["mtls.test"], Key::Ecdsa);
    let by_dns = ca.client("by-dns", "dns-client", &["api.client.test"], &[]);
    let by_uri = ca.client(
        "by-uri",
        "uri-client",
        &[],
        &["spiffe://example.org/ns/prod/sa/api"],
    );
    let by_cn = ca.client("by-cn", "cn-client", &[], &[]);
    let by_pin = ca.client("by-pin", "pin-client", &[], &[]);
    let nobody = ca.client("nobody", "nobody", &["other.client.test"], &[]);
    let revoked = ca.client("revoked", "cn-client", &[], &[]);
    let stranger = other.client("stranger", "cn-client", &[], &[]);
    let crl = ca.crl("mtls", &[revoked.serial]);
    let pin = tcplb::certs::inspect(&by_pin.der).unwrap().spki_sha256;
    let backend = TestBackend::echo().await;
    let mut config = terminating(backend.addr, &[&server]);
    let auth = ClientAuthConfig {
        ca: ca.cert.clone(),
        mode: ClientAuthMode::Required,
        crls: vec![crl],
        allow: ClientAllowList {
            san_dns: vec!["api.client.test".into()],
            san_uri: vec!["spiffe://example.org/ns/prod/sa/api".into()],
            subject_cn: vec!["cn-client".into()],
            spki_sha256: vec![pin],
        },
    };
    config.tls.as_mut().unwrap().client_auth = Some(auth.clone());
    let balancer = TestBalancer::start(config);
    let stats = balancer.service.stats.tls.clone();
    for allowed in [&by_dns, &by_uri, &by_cn, &by_pin] {
        let result = mtls_echo(balancer.addr, &ca, Some(allowed)).await;
        assert_eq!(result, Ok(()), "{}", allowed.cert.display());
    }
    assert!(mtls_echo(balancer.addr, &ca, Some(&nobody)).await.is_err());
    eventually(|| failures(&stats) == [("not_allowed", 1)]).await;
    assert!(mtls_echo(balancer.addr, &ca, Some(&revoked)).await.is_err());
    assert!(
        mtls_echo(balancer.addr, &ca, Some(&stranger))
            .await
            .is_err()
    );
    assert!(mtls_echo(balancer.addr, &ca, None).await.is_err());
    eventually(|| {
        failures(&stats)
            == [
                ("no_certificate", 1),
                ("unknown_ca", 1),
                ("revoked", 1),
                ("not_allowed", 1),
            ]
    })
    .await;
    // curl (OpenSSL) with an allowed certificate gets through, in front
    // of a plain HTTP service.
    let http = TestBackend::http().await;
    let mut http_config = terminating(http.addr, &[&server]);
    http_config.tls.as_mut().unwrap().client_auth = Some(auth.clone());
    let http_balancer = TestBalancer::start(http_config);
    let ca_file = ca.cert_arg();
    let identity = [
        "--cert",
        by_cn.cert.to_str().unwrap(),
        "--key",
        by_cn.key.to_str().unwrap(),
    ];
    let body = curl(http_balancer.addr, "mtls.test", &ca_file, &identity).await;
    assert_eq!(hello_port(&body), http.addr.port(), "{body}");
    let body = curl(http_balancer.addr, "mtls.test", &ca_file, &[]).await;
    assert!(body.contains("curl: ("), "{body}");
    // Optional: no certificate is let through, a bad one still is not.
    let backend_2 = TestBackend::echo().await;
    let mut optional = terminating(backend_2.addr, &[&server]);
    let mut auth = auth.clone();
    auth.mode = ClientAuthMode::Optional;
    optional.tls.as_mut().unwrap().client_auth = Some(auth);
    let balancer = TestBalancer::start(optional);
    assert_eq!(mtls_echo(balancer.addr, &ca, None).await, Ok(()));
    assert_eq!(mtls_echo(balancer.addr, &ca, Some(&by_dns)).await, Ok(()));
    assert!(
        mtls_echo(balancer.addr, &ca, Some(&stranger))
            .await
            .is_err()
    );
}

/// The TLVs of a PROXY v2 header: (type, value) in order; SSL's
/// sub-TLVs follow its 5-byte client/verify prefix.
fn tlvs(body: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut found = Vec::new();
    let mut rest = body;
    while rest.len() >= 3 {
        let len = u16::from_be_bytes([rest[1], rest[2]]) as usize;
        found.push((rest[0], rest[3..3 + len].to_vec()));
        rest = &rest[3 + len..];
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_v2_tells_the_backend_the_sni_alpn_version_cipher_and_client_cn() {
    use tcplb::config::{ClientAllowList, ClientAuthConfig, ClientAuthMode, ProxyVersion};
    let mut ca = Ca::new("pp2");
    let server = ca.server("server", &["pp2.test"], Key::Ecdsa);
    let client = ca.client("client", "billing-client", &[], &[]);
    // A raw backend: sends back the PROXY header it read, then nothing.
    let backend = TestBackend::with(|listener| async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut fixed = [0u8; 16];
                stream.read_exact(&mut fixed).await?;
                let mut body = vec![0u8; u16::from_be_bytes([fixed[14], fixed[15]]) as usize];
                stream.read_exact(&mut body).await?;
                stream.write_all(&fixed).await?;
                stream.write_all(&body).await?;
                stream.shutdown().await
            });
        }
    })
    .await;
    let mut config = terminating(backend.addr, &[&server]);
    config.send_proxy = Some(ProxyVersion::V2);
    let tls = config.tls.as_mut().unwrap();
    tls.alpn = vec!["h2".into()];
    tls.client_auth = Some(ClientAuthConfig {
        ca: ca.cert.clone(),
        mode: ClientAuthMode::Required,
        crls: Vec::new(),
        allow: ClientAllowList::default(),
    });
    let balancer = TestBalancer::start(config);
    let (mut stream, _) = rustls_client_with(balancer.addr, "pp2.test", &ca, Some(&client), |c| {
        c.alpn_protocols = vec![b"h2".to_vec()];
    })
    .await
    .unwrap();
    let mut header = Vec::new();
    tokio::time::timeout(common::PATIENCE, stream.read_to_end(&mut header))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&header[..12], b"\r\n\r\n\0\r\nQUIT\n");
    // v2 PROXY over TCP/IPv4: addresses and ports, then the TLVs.
    assert_eq!(header[12..14], [0x21, 0x11]);
    let found = tlvs(&header[16 + 12..]);
    let kinds: Vec<u8> = found.iter().map(|(k, _)| *k).collect();
    assert_eq!(kinds, [0x02, 0x01, 0x20], "authority, ALPN, SSL");
    assert_eq!(found[0].1, b"pp2.test");
    assert_eq!(found[1].1, b"h2");
    let ssl = &found[2].1;
    assert_eq!(ssl[0], 0x07, "client: SSL, cert on connection and session");
    assert_eq!(ssl[1..5], [0, 0, 0, 0], "verified");
    let sub = tlvs(&ssl[5..]);
    assert_eq!(sub[0], (0x21, b"TLSv1.3".to_vec()));
    assert_eq!(sub[1].0, 0x23);
    assert!(
        String::from_utf8_lossy(&sub[1].1).starts_with("TLS13_"),
        "{sub:?}"
    );
    assert_eq!(sub[2], (0x22, b"billing-client".to_vec()));
}
