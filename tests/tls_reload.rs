//! The real binary terminating TLS from its configuration file: certificates
//! reloaded when their files change and on SIGHUP while clients keep
//! handshaking (none fails), a bad new file keeps the old one serving with
//! one log line, the expiry and handshake series in `/metrics`, the TLS
//! fields of the access log, and `tcplb check` on expiring and mismatched
//! certificates.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::pki::{Ca, Issued, Key};
use common::{PATIENCE, TestBackend, http_get, spawn_tcplb, tcplb_bin};

/// A rustls client config trusting `ca`.
fn client_config(ca: &Ca) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(&ca.cert).unwrap())
        .unwrap();
    Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// One verified handshake and echo to `addr` for `name`; the serial of the
/// certificate served.
async fn handshake(
    addr: SocketAddr,
    name: &str,
    config: Arc<rustls::ClientConfig>,
) -> Result<Vec<u8>, String> {
    let connector = tokio_rustls::TlsConnector::from(config);
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let mut tls = connector
        .connect(name.to_string().try_into().unwrap(), stream)
        .await
        .map_err(|e| e.to_string())?;
    tls.write_all(b"x").await.map_err(|e| e.to_string())?;
    let mut one = [0u8; 1];
    tls.read_exact(&mut one).await.map_err(|e| e.to_string())?;
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    Ok(leaf)
}

/// Replaces `target` with `from`'s content atomically (a new file renamed
/// over it, as deploy tools and certbot do).
fn replace(from: &Issued, cert: &std::path::Path, key: &std::path::Path) {
    for (source, target) in [(&from.cert, cert), (&from.key, key)] {
        let temp = target.with_extension("new");
        std::fs::copy(source, &temp).unwrap();
        std::fs::rename(&temp, target).unwrap();
    }
}

/// The value of the first `/metrics` line starting with `prefix`.
async fn metric(admin: SocketAddr, prefix: &str) -> Option<String> {
    let body = http_get_path(admin, "/metrics").await;
    body.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .map(str::to_string)
}

async fn http_get_path(addr: SocketAddr, path: &str) -> String {
    common::raw_exchange(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_reload_on_change_and_sighup_under_load_and_a_bad_file_keeps_the_old() {
    let mut ca = Ca::new("reload");
    let first = ca.server_expiring("first", &["r.test"], 30);
    let second = ca.server_expiring("second", &["r.test"], 60);
    let third = ca.server_expiring("third", &["r.test"], 90);
    let serving_cert = ca.dir.path("serving.pem");
    let serving_key = ca.dir.path("serving.key");
    replace(&first, &serving_cert, &serving_key);
    let backend = TestBackend::echo().await;
    let log = ca.dir.path("access.log");
    let config = ca.dir.path("tcplb.toml");
    std::fs::write(
        &config,
        format!(
            "access_log = \"{}\"\naccess_log_format = \"json\"\n\n[[listener]]\nlisten = \"127.0.0.1:0\"\n\
             backends = [\"{}\"]\n[listener.tls]\ncertificates = [{{ cert = \"{}\", key = \"{}\" }}]\n",
            log.display(),
            backend.addr,
            serving_cert.display(),
            serving_key.display()
        ),
    )
    .unwrap();
    let tcplb = spawn_tcplb(&[
        "--config",
        config.to_str().unwrap(),
        "--admin",
        "127.0.0.1:0",
    ]);
    let admin = tcplb.admin_addr().await;
    let addr = tcplb.addr;
    let client = client_config(&ca);
    let expiry = |issued: &Issued| {
        tcplb::certs::inspect(&issued.der)
            .unwrap()
            .not_after
            .to_string()
    };
    let expiry_series = "tcplb_tls_certificate_expiry_timestamp_seconds{";
    assert_eq!(metric(admin, expiry_series).await, Some(expiry(&first)));

    // Clients handshake without a pause while the files change.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load = {
        let (stop, ok, failed, client) = (stop.clone(), ok.clone(), failed.clone(), client.clone());
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            let mut errors = Vec::new();
            for _ in 0..20_000 {
                if stop.load(Relaxed) || tokio::time::Instant::now() > deadline {
                    break;
                }
                match handshake(addr, "r.test", client.clone()).await {
                    Ok(_) => ok.fetch_add(1, Relaxed),
                    Err(e) => {
                        errors.push(e);
                        failed.fetch_add(1, Relaxed)
                    }
                };
            }
            errors
        })
    };
    // On change: the poller picks the new file up.
    replace(&second, &serving_cert, &serving_key);
    let mut picked = false;
    for _ in 0..200 {
        if metric(admin, expiry_series).await == Some(expiry(&second)) {
            picked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(picked, "the changed file was not reloaded");
    let leaf = handshake(addr, "r.test", client_config(&ca)).await.unwrap();
    assert_eq!(leaf, second.der);
    // A bad file (garbage as the key): the old certificate keeps serving,
    // one line says why.
    std::fs::write(&serving_key, "not a key\n").unwrap();
    let kept = tcplb
        .process
        .line_with("keeping the TLS files already loaded")
        .await;
    assert!(kept.contains("serving.key"), "{kept}");
    assert_eq!(
        handshake(addr, "r.test", client_config(&ca)).await.unwrap(),
        second.der
    );
    let failures = metric(admin, "tcplb_tls_reload_failures_total{").await;
    assert_eq!(failures.as_deref(), Some("1"));
    // SIGHUP reads the files again at once.
    replace(&third, &serving_cert, &serving_key);
    let pid = tcplb.pid().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    tcplb.process.line_with("reloaded ").await;
    assert_eq!(
        handshake(addr, "r.test", client_config(&ca)).await.unwrap(),
        third.der
    );
    assert_eq!(metric(admin, expiry_series).await, Some(expiry(&third)));

    stop.store(true, Relaxed);
    let errors = load.await.unwrap();
    assert!(ok.load(Relaxed) > 10, "the load loop barely ran");
    assert_eq!(
        failed.load(Relaxed),
        0,
        "failed handshakes during reloads: {errors:?}"
    );

    // The load's client resumed its sessions across the reloads (the
    // ticket keys outlive them).
    let resumed = metric(admin, "tcplb_tls_resumed_total{").await.unwrap();
    assert!(resumed.parse::<u64>().unwrap() > 0, "{resumed}");
    // The handshakes are in /metrics, and each connection in the log.
    let body = http_get_path(admin, "/metrics").await;
    let listener = format!("listener=\"{addr}\",side=\"client\"");
    assert!(
        body.contains(&format!(
            "tcplb_tls_handshakes_total{{{listener},result=\"ok\",version=\"1.3\"}}"
        )),
        "{body}"
    );
    assert!(
        body.contains("tcplb_tls_handshake_duration_seconds_bucket{"),
        "{body}"
    );
    let _ = http_get(admin).await;
    let logged = common::poll_until(PATIENCE, || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("\"tls_version\":\"1.3\""))
    })
    .await;
    assert!(logged, "no TLS fields in the access log");
    // The first connection (the lowest id: records come in the order
    // connections end, and resumed ones may end first) had no ticket yet.
    let text = std::fs::read_to_string(&log).unwrap();
    let value: serde_json::Value = text
        .lines()
        .filter(|l| l.contains("\"tls_version\""))
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .min_by_key(|v| v["id"].as_u64().unwrap())
        .unwrap();
    assert!(
        value["tls_cipher"].as_str().unwrap().starts_with("TLS13_"),
        "{value}"
    );
    assert_eq!(value["tls_resumed"], false, "{value}");
    assert!(value["tls_handshake_ms"].as_f64().unwrap() > 0.0, "{value}");
}

/// `tcplb check ARGS`: exit code and stderr.
fn check(args: &[&str]) -> (i32, String) {
    let out = Command::new(tcplb_bin())
        .arg("check")
        .args(args)
        .output()
        .expect("run tcplb check");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_warns_of_a_certificate_expiring_within_14_days_and_fails_on_a_mismatched_key() {
    let mut ca = Ca::new("check");
    let soon = ca.server_expiring("soon", &["soon.test"], 3);
    let later = ca.server("later", &["later.test"], Key::Ecdsa);
    let other = ca.server("other", &["other.test"], Key::Ecdsa);
    let soon_args = [
        "--listen",
        "127.0.0.1:0",
        "-b",
        "127.0.0.1:1",
        "--tls-cert",
        soon.cert.to_str().unwrap(),
        "--tls-key",
        soon.key.to_str().unwrap(),
    ];
    let (code, err) = check(&soon_args);
    assert_eq!(code, 0, "{err}");
    let warned = ["expires in 2 days", "expires in 3 days"];
    assert!(
        err.contains("warning: ") && warned.iter().any(|w| err.contains(w)),
        "{err}"
    );
    let mismatched = [
        "--listen",
        "127.0.0.1:0",
        "-b",
        "127.0.0.1:1",
        "--tls-cert",
        later.cert.to_str().unwrap(),
        "--tls-key",
        other.key.to_str().unwrap(),
    ];
    let (code, err) = check(&mismatched);
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("does not match"), "{err}");
    // And a start refuses it too, naming the file.
    let out = Command::new(tcplb_bin()).args(mismatched).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("other.key"));
}

/// A config file terminating for `backend` with `cert`, tickets keyed by
/// `ticket_keys` when given.
fn terminating_file(
    ca: &Ca,
    name: &str,
    backend: SocketAddr,
    cert: &Issued,
    ticket_keys: Option<&std::path::Path>,
) -> std::path::PathBuf {
    let keys = ticket_keys.map_or(String::new(), |p| {
        format!("ticket_key_file = \"{}\"\n", p.display())
    });
    let path = ca.dir.path(name);
    std::fs::write(
        &path,
        format!(
            "[[listener]]\nname = \"web\"\nlisten = \"127.0.0.1:0\"\nbackends = [\"{backend}\"]\n\
             [listener.tls]\ncertificates = [{{ cert = \"{}\", key = \"{}\" }}]\n{keys}",
            cert.cert.display(),
            cert.key.display()
        ),
    )
    .unwrap();
    path
}

/// Whether a handshake to `addr` with `config` (and its ticket store)
/// resumed.
async fn resumed(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> bool {
    let connector = tokio_rustls::TlsConnector::from(config);
    let stream = TcpStream::connect(addr).await.unwrap();
    let mut tls = connector
        .connect("t.test".try_into().unwrap(), stream)
        .await
        .unwrap();
    // Read the echo: the tickets come before it, so the store has them.
    tls.write_all(b"x").await.unwrap();
    let mut one = [0u8; 1];
    tls.read_exact(&mut one).await.unwrap();
    tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_ticket_key_file_resumes_sessions_across_instances_and_a_sigusr2_upgrade() {
    let mut ca = Ca::new("tickets");
    let cert = ca.server("t", &["t.test"], Key::Ecdsa);
    let keys = ca.dir.path("tickets.keys");
    let key = |byte: u8| format!("{:02x}", byte).repeat(48);
    std::fs::write(&keys, format!("# test keys\n{}\n{}\n", key(1), key(2))).unwrap();
    let backend = TestBackend::echo().await;
    let shared_a = terminating_file(&ca, "a.toml", backend.addr, &cert, Some(&keys));
    let shared_b = terminating_file(&ca, "b.toml", backend.addr, &cert, Some(&keys));
    let own = terminating_file(&ca, "c.toml", backend.addr, &cert, None);
    let a = spawn_tcplb(&["--config", shared_a.to_str().unwrap()]);
    let b = spawn_tcplb(&["--config", shared_b.to_str().unwrap()]);
    let c = spawn_tcplb(&["--config", own.to_str().unwrap()]);
    let client = client_config(&ca);
    assert!(
        !resumed(a.addr, client.clone()).await,
        "the first handshake is full"
    );
    assert!(
        resumed(a.addr, client.clone()).await,
        "A resumes its own session"
    );
    assert!(
        resumed(b.addr, client.clone()).await,
        "B resumes A's: the same keys"
    );
    // A client of C with A's tickets (its own store: a rejected ticket is
    // replaced by C's, which A would not take).
    let separate = client_config(&ca);
    assert!(!resumed(a.addr, separate.clone()).await);
    assert!(
        !resumed(c.addr, separate).await,
        "keys of its own: no resumption"
    );
    // A binary upgrade: the new process reads the same file.
    let pid = a.pid();
    assert!(
        Command::new("kill")
            .args(["-USR2", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let line = a.process.line_with("upgrade: process ").await;
    let new_pid: u32 = line
        .split("upgrade: process ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    let _successor = KillOnDrop(new_pid);
    let exited = common::poll_until(PATIENCE, || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
            s.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('Z'))
        })
    })
    .await;
    assert!(exited, "the old process did not hand over");
    assert!(
        resumed(a.addr, client.clone()).await,
        "the new process resumes the old one's sessions"
    );
}

/// Kills a process this test started indirectly (an upgrade's successor).
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the PID of a process this test started.
        unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
    }
}
