//! TLS termination end to end: a real tcplb holds the keys in front of a
//! plain echo or HTTP backend; `openssl s_client` and `curl` (OpenSSL) are
//! the clients, a throwaway CA (rcgen) signs everything.

mod common;

use std::net::SocketAddr;
use std::process::Command;

use tcplb::config::{CertificatePaths, ServiceConfig, TlsConfig};

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
