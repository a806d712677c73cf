//! TLS towards backends (`backend_tls`): plain clients through tcplb to
//! `openssl s_server` and `redis-server --tls-port` backends, verified
//! against a test CA; wrong-name and self-signed backends fail with
//! `backend_tls_failed` and go down in the health checks; sessions to
//! backends resume; the flags `--backend-tls --backend-ca` on the binary.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::Ordering::Relaxed;

use tcplb::config::{BackendTlsConfig, OnFailure, ServiceConfig, TrustAnchors};
use tcplb::stats::tls::TlsFailure;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::pki::{Ca, Issued, Key};
use common::{PATIENCE, Process, TestBalancer, poll_until, service, spawn_process};

/// `openssl s_server -rev` (each line sent back reversed) with `cert`.
async fn s_server(cert: &Issued) -> (Process, SocketAddr) {
    let port = common::free_port();
    let mut command = Command::new("openssl");
    command
        .args(["s_server", "-rev", "-accept"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("-cert")
        .arg(&cert.cert)
        .arg("-key")
        .arg(&cert.key);
    let process = spawn_process(command);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let up = poll_until(PATIENCE, || std::net::TcpStream::connect(addr).is_ok()).await;
    assert!(up, "s_server did not listen: {}", process.stderr_text());
    (process, addr)
}

/// A listener in front of `backend` speaking TLS to it, verified by `ca`
/// for `server_name`.
fn originating(backend: SocketAddr, ca: &Ca, server_name: &str) -> ServiceConfig {
    let mut config = service(&[backend]);
    let mut tls = BackendTlsConfig::new(TrustAnchors::File(ca.cert.clone()));
    tls.server_name = Some(server_name.into());
    config.backend_tls = Some(tls);
    config.on_failure = OnFailure::Close;
    config.retries = 0;
    config
}

/// Sends `line` and reads one line back; `None` when closed first.
async fn line_through(addr: SocketAddr, line: &str) -> Option<String> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    stream.write_all(line.as_bytes()).await.ok()?;
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(PATIENCE, async {
        while stream.read(&mut byte).await.ok()? == 1 {
            reply.push(byte[0]);
            if byte[0] == b'\n' {
                return Some(());
            }
        }
        None
    })
    .await;
    read.ok().flatten()?;
    Some(String::from_utf8_lossy(&reply).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_clients_reach_a_verified_tls_backend_and_sessions_resume() {
    let mut ca = Ca::new("origin");
    let cert = ca.server("backend", &["backend.test"], Key::Ecdsa);
    let (_server, backend) = s_server(&cert).await;
    let balancer = TestBalancer::start(originating(backend, &ca, "backend.test"));
    assert_eq!(
        line_through(balancer.addr, "hello\n").await.as_deref(),
        Some("olleh\n")
    );
    assert_eq!(
        line_through(balancer.addr, "again\n").await.as_deref(),
        Some("niaga\n")
    );
    let stats = balancer.service.pool.stats.backend_tls.clone();
    // The second connection resumed the first one's session (and the
    // health checks', which complete the same handshake).
    assert!(stats.completed() >= 2, "{stats:?}");
    assert!(stats.resumed.load(Relaxed) >= 1, "{stats:?}");
    assert!(balancer.is_up(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_name_and_self_signed_backends_fail_with_backend_tls_failed_and_go_down() {
    let mut ca = Ca::new("origin-bad");
    let cert = ca.server("backend", &["backend.test"], Key::Ecdsa);
    let (_server, backend) = s_server(&cert).await;
    // Verified for another name.
    let balancer = TestBalancer::start(originating(backend, &ca, "other.test"));
    assert_eq!(line_through(balancer.addr, "hello\n").await, None);
    let stats = balancer.service.pool.stats.backend_tls.clone();
    let down = poll_until(PATIENCE, || stats.failures_of(TlsFailure::WrongName) >= 1).await;
    assert!(down, "{stats:?}");
    let went_down = poll_until(PATIENCE, || !balancer.is_up(0)).await;
    assert!(went_down, "a backend failing verification stays up");
    // A backend whose certificate is from no trusted CA.
    let mut stranger = Ca::new("origin-stranger");
    let own = stranger.server("self", &["backend.test"], Key::Ecdsa);
    let (_other, backend) = s_server(&own).await;
    let balancer = TestBalancer::start(originating(backend, &ca, "backend.test"));
    assert_eq!(line_through(balancer.addr, "hello\n").await, None);
    let stats = balancer.service.pool.stats.backend_tls.clone();
    let counted = poll_until(PATIENCE, || stats.failures_of(TlsFailure::UnknownCa) >= 1).await;
    assert!(counted, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_behind_tls_answers_a_plain_client() {
    let mut ca = Ca::new("redis");
    let cert = ca.server("redis", &["redis.test"], Key::Ecdsa);
    let port = common::free_port();
    let mut command = Command::new("redis-server");
    command.args([
        "--port",
        "0",
        "--tls-port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--tls-cert-file",
        cert.cert.to_str().unwrap(),
        "--tls-key-file",
        cert.key.to_str().unwrap(),
        "--tls-ca-cert-file",
        ca.cert.to_str().unwrap(),
        "--tls-auth-clients",
        "no",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        ca.dir.0.to_str().unwrap(),
    ]);
    let _redis = spawn_process(command);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert!(poll_until(PATIENCE, || std::net::TcpStream::connect(addr).is_ok()).await);
    let balancer = TestBalancer::start(originating(addr, &ca, "redis.test"));
    let reply = line_through(balancer.addr, "PING\r\n").await;
    assert_eq!(reply.as_deref(), Some("+PONG\r\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_tls_and_backend_ca_flags_verify_against_the_given_ca() {
    let mut ca = Ca::new("origin-flags");
    // The backend's host name is what is verified: 127.0.0.1 here.
    let cert = ca.server("backend", &["127.0.0.1"], Key::Ecdsa);
    let (_server, backend) = s_server(&cert).await;
    let backend = backend.to_string();
    let tcplb = common::spawn_tcplb(&["-b", &backend, "--backend-ca", &ca.cert_arg()]);
    assert_eq!(
        line_through(tcplb.addr, "flags\n").await.as_deref(),
        Some("sgalf\n")
    );
    // --backend-tls alone trusts only the system's store: the test CA is
    // not in it.
    let tcplb = common::spawn_tcplb(&["-b", &backend, "--backend-tls", "--on-failure", "close"]);
    assert_eq!(line_through(tcplb.addr, "flags\n").await, None);
}
