//! The runtime control API over real sockets: each endpoint changes what
//! it says (and /status shows it), drains keep open connections byte-exact
//! and close them at a deadline, weights move the share, backends come and
//! go; writes need the token or the Unix socket; bad input changes nothing;
//! operators' changes survive a SIGHUP reload, and a corrupt state file is
//! set aside.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::{PATIENCE, Pattern, TempDir, TestBackend, hello_port, http_get, poll_until, spec};
use serde_json::{Value, json};
use tcplb::config::cli::Startup;
use tcplb::config::{Config, ServiceConfig, StrategyKind};
use tcplb::proxy::Service;
use tcplb::runtime::{Balancer, ReloadHandle, signals};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "s3cret-T0ken";

/// A temporary directory, removed on drop.
/// A balancer with a TCP admin endpoint (token in `dir`) and a Unix one.
struct Lb {
    addr: SocketAddr,
    admin: SocketAddr,
    socket: PathBuf,
    service: Arc<Service>,
    reload: ReloadHandle,
    shutdown: CancellationToken,
}

impl Drop for Lb {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Starts `config` with admin endpoints: TCP on 127.0.0.1:0 and a socket
/// and token file in `dir` (unless the config names its own).
fn start(mut config: Config, dir: &TempDir) -> Lb {
    config.drain_timeout = Duration::from_secs(1);
    config.admin = Some("127.0.0.1:0".parse().unwrap());
    if config.admin_token_file.is_none() {
        let token = dir.path("token");
        std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
        config.admin_token_file = Some(token);
    }
    let socket = config
        .admin_socket
        .get_or_insert_with(|| dir.path("admin.sock"))
        .clone();
    let balancer = Balancer::bind(config).expect("bind balancer");
    let lb = Lb {
        addr: balancer.local_addrs()[0],
        admin: balancer.admin_addr().expect("admin address"),
        socket,
        service: balancer.services()[0].clone(),
        reload: balancer.reload_handle(),
        shutdown: balancer.shutdown_token(),
    };
    tokio::spawn(balancer.run());
    lb
}

fn single(mut service: ServiceConfig, name: &str) -> Config {
    service.listen = "127.0.0.1:0".parse().unwrap();
    service.name = Some(name.to_string());
    // No probe during a test: health stays as traffic leaves it.
    service.health.interval = Duration::from_secs(3600);
    Config::single(service)
}

/// One HTTP/1.1 exchange written by hand: (status code, body).
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    let reply = tokio::time::timeout(PATIENCE, async {
        stream.write_all(request.as_bytes()).await.expect("send");
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).await.expect("read reply");
        reply
    })
    .await
    .expect("admin reply timed out");
    let text = String::from_utf8(reply).expect("UTF-8 reply");
    let (head, body) = text.split_once("\r\n\r\n").expect("a whole response");
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status code");
    (code, body.to_string())
}

impl Lb {
    /// A request over TCP with `headers`.
    async fn tcp(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (u16, Value) {
        let stream = TcpStream::connect(self.admin).await.expect("connect admin");
        let (code, body) = exchange(stream, method, path, headers, body).await;
        (
            code,
            serde_json::from_str(&body).unwrap_or(Value::String(body)),
        )
    }

    /// A request with the bearer token.
    async fn write(&self, method: &str, path: &str, body: &str) -> (u16, Value) {
        let auth = format!("Bearer {TOKEN}");
        self.tcp(method, path, &[("Authorization", &auth)], body)
            .await
    }

    /// A request over the Unix socket.
    async fn unix(&self, method: &str, path: &str, body: &str) -> (u16, Value) {
        let stream = UnixStream::connect(&self.socket)
            .await
            .expect("connect socket");
        let (code, body) = exchange(stream, method, path, &[], body).await;
        (
            code,
            serde_json::from_str(&body).unwrap_or(Value::String(body)),
        )
    }

    /// Whether a backend at `addr` is still a member of the pool.
    fn has_member(&self, addr: SocketAddr) -> bool {
        self.service
            .pool
            .load()
            .backends
            .iter()
            .any(|x| x.addr() == addr)
    }

    async fn get(&self, path: &str) -> Value {
        let (code, body) = self.tcp("GET", path, &[], "").await;
        assert_eq!(code, 200, "GET {path}: {body}");
        body
    }

    /// The pool's backends as the API lists them.
    async fn backends(&self, pool: &str) -> Vec<Value> {
        let body = self.get(&format!("/api/v1/pools/{pool}/backends")).await;
        body["backends"].as_array().unwrap().clone()
    }

    async fn backend(&self, pool: &str, name: &str) -> Value {
        self.backends(pool)
            .await
            .into_iter()
            .find(|b| b["name"] == name)
            .unwrap_or_else(|| panic!("no backend {name} in {pool}"))
    }

    async fn status_backend(&self, name: &str) -> Value {
        let status = self.get("/status").await;
        status["listeners"][0]["backends"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["name"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    }

    async fn metrics(&self) -> String {
        let (code, body) = self.tcp("GET", "/metrics", &[], "").await;
        assert_eq!(code, 200);
        body.as_str().unwrap().to_string()
    }
}

fn has_line(text: &str, line: &str) {
    assert!(
        text.lines().any(|l| l == line),
        "missing {line:?} in\n{text}"
    );
}

/// The backend path segment for `addr`.
fn seg(addr: SocketAddr) -> String {
    addr.to_string().replace(':', "%3A")
}

#[tokio::test]
async fn each_endpoint_changes_what_it_says_and_status_shows_it() {
    let dir = TempDir::new("endpoints");
    let a = TestBackend::http().await;
    let b = TestBackend::http().await;
    let config = single(common::service(&[a.addr, b.addr]), "web");
    let lb = start(config, &dir);
    let (an, bn) = (a.addr.to_string(), b.addr.to_string());

    let pools = lb.get("/api/v1/pools").await;
    assert_eq!(pools["pools"].as_array().unwrap().len(), 1);
    let pool = &pools["pools"][0];
    assert_eq!(pool["name"], "web");
    assert_eq!(pool["listen"], lb.addr.to_string());
    assert_eq!(pool["strategy"], "round-robin");
    // The health details (docs/health-checks.md) have times in them:
    // checked apart, the rest exactly.
    let mut item = pool["backends"][0].clone();
    let fields = item.as_object_mut().unwrap();
    let health: Vec<Value> = ["state", "check", "health_since", "health_reason"]
        .iter()
        .map(|k| {
            fields
                .remove(*k)
                .unwrap_or_else(|| panic!("no {k} in {pool}"))
        })
        .collect();
    assert_eq!(
        item,
        json!({"name": an, "address": an, "admin_state": "ready", "health": "up",
               "weight": 1, "effective_weight": 1.0, "active": 0, "backup": false,
               "drain_deadline": null})
    );
    assert_eq!(health[0], "ready");
    assert!(
        health[1].is_null() || health[1]["type"] == "connect",
        "{}",
        health[1]
    );
    assert!(
        health[2].as_str().is_some_and(|t| t.ends_with('Z')),
        "{}",
        health[2]
    );
    assert_eq!(health[3], "joined the pool");
    let status = lb.get("/status").await;
    assert_eq!(status["listeners"][0]["name"], "web");
    assert_eq!(status["listeners"][0]["listen"], lb.addr.to_string());

    let base = format!("/api/v1/pools/web/backends/{}", seg(a.addr));
    let (code, body) = lb.write("POST", &format!("{base}/drain"), "").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body,
        json!({"pool": "web", "backend": an, "action": "drain", "change": "state ready -> drain"})
    );
    assert_eq!(lb.backend("web", &an).await["admin_state"], "drain");
    assert_eq!(lb.status_backend(&an).await["admin_state"], "drain");
    for _ in 0..4 {
        assert_eq!(hello_port(&http_get(lb.addr).await), b.addr.port());
    }

    let (code, body) = lb.write("POST", &format!("{base}/maintenance"), "{}").await;
    assert_eq!(
        (code, &body["change"]),
        (200, &json!("state drain -> maintenance"))
    );
    assert_eq!(lb.status_backend(&an).await["admin_state"], "maintenance");

    let (code, body) = lb.write("POST", &format!("{base}/ready"), "").await;
    assert_eq!(
        (code, &body["change"]),
        (200, &json!("state maintenance -> ready"))
    );
    let (code, body) = lb.write("POST", &format!("{base}/ready"), "").await;
    assert_eq!((code, &body["change"]), (200, &json!("no change")));

    let (code, body) = lb
        .write("PUT", &format!("{base}/weight"), r#"{"weight": 7}"#)
        .await;
    assert_eq!((code, &body["change"]), (200, &json!("weight 1 -> 7")));
    assert_eq!(lb.backend("web", &an).await["weight"], 7);
    assert_eq!(lb.status_backend(&an).await["weight"], 7);

    let c = TestBackend::http().await;
    let cn = c.addr.to_string();
    let body = json!({"address": cn, "weight": 2, "maxconn": 5, "backup": true}).to_string();
    let (code, answer) = lb.write("POST", "/api/v1/pools/web/backends", &body).await;
    assert_eq!(code, 201, "{answer}");
    assert_eq!(
        answer,
        json!({"pool": "web", "backend": cn, "action": "add", "change": "added (weight 2)"})
    );
    let added = lb.backend("web", &cn).await;
    assert_eq!(
        (&added["weight"], &added["backup"]),
        (&json!(2), &json!(true))
    );
    assert_eq!(lb.status_backend(&cn).await["backup"], true);

    let (code, answer) = lb
        .write(
            "DELETE",
            &format!("/api/v1/pools/web/backends/{}", seg(c.addr)),
            "",
        )
        .await;
    assert_eq!((code, &answer["change"]), (200, &json!("removed")));
    assert!(
        lb.backends("web")
            .await
            .iter()
            .all(|b| b["name"] != cn.as_str())
    );
    assert_eq!(lb.status_backend(&cn).await, Value::Null);

    let metrics = lb.metrics().await;
    for (action, n) in [
        ("drain", 1),
        ("maintenance", 1),
        ("ready", 2),
        ("weight", 1),
        ("add", 1),
        ("remove", 1),
    ] {
        has_line(
            &metrics,
            &format!("tcplb_admin_changes_total{{action=\"{action}\"}} {n}"),
        );
    }
    has_line(
        &metrics,
        &format!(
            "tcplb_pool_backend_changes_total{{listener=\"web\",listen=\"{}\",change=\"added\"}} 1",
            lb.addr
        ),
    );
    assert_eq!(lb.backends("web").await.len(), 2);
    let _ = bn;
}

/// Opens a connection through `lb` and echoes one chunk on it.
async fn open_echo(addr: SocketAddr, seed: u64) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    echo_chunk(&mut stream, seed).await.expect("echo");
    stream
}

/// Sends 16 KiB of a pattern and checks every byte comes back.
async fn echo_chunk(stream: &mut TcpStream, seed: u64) -> std::io::Result<()> {
    let sent = Pattern::bytes(seed, 16 * 1024);
    stream.write_all(&sent).await?;
    let mut back = vec![0u8; sent.len()];
    tokio::time::timeout(PATIENCE, stream.read_exact(&mut back))
        .await
        .map_err(|_| std::io::Error::other("echo timed out"))??;
    assert_eq!(back, sent, "echo corrupted");
    Ok(())
}

#[tokio::test]
async fn a_drain_keeps_open_connections_byte_exact_while_new_ones_go_elsewhere() {
    let dir = TempDir::new("drain");
    let a = TestBackend::echo().await;
    let b = TestBackend::echo().await;
    let lb = start(single(common::service(&[a.addr, b.addr]), "echo"), &dir);
    let mut open = open_echo(lb.addr, 1).await;
    let backends = lb.service.pool.load().backends.clone();
    let held = backends
        .iter()
        .position(|b| b.active() == 1)
        .expect("one is held");
    let (drained, other) = (&backends[held], &backends[1 - held]);

    let path = format!("/api/v1/pools/echo/backends/{}/drain", seg(drained.addr()));
    let (code, body) = lb.unix("POST", &path, "").await;
    assert_eq!(code, 200, "{body}");
    let total = |b: &tcplb::pool::backend::Backend| {
        b.stats.total.load(std::sync::atomic::Ordering::Relaxed)
    };
    let (drained_before, other_before) = (total(drained), total(other));
    for seed in 0..6 {
        let mut stream = open_echo(lb.addr, 100 + seed).await;
        stream.shutdown().await.unwrap();
    }
    assert_eq!(
        total(drained),
        drained_before,
        "no new connection to the drained one"
    );
    assert_eq!(total(other), other_before + 6);
    for seed in 2..20 {
        echo_chunk(&mut open, seed)
            .await
            .expect("the open connection goes on");
    }
    assert_eq!(lb.backend("echo", drained.name()).await["active"], 1);
    let rest = common::finish(&mut open, b"bye").await;
    assert_eq!(rest, b"bye");
}

#[tokio::test]
async fn a_drain_deadline_closes_what_is_left_and_counts_it() {
    let dir = TempDir::new("deadline");
    let a = TestBackend::echo().await;
    let b = TestBackend::echo().await;
    let mut config = common::service(&[a.addr, b.addr]);
    config.strategy = StrategyKind::RoundRobin;
    let lb = start(single(config, "echo"), &dir);
    let mut first = open_echo(lb.addr, 1).await;
    let mut second = open_echo(lb.addr, 2).await;
    let backends = lb.service.pool.load().backends.clone();
    assert!(backends.iter().all(|b| b.active() == 1), "one on each");

    // Drained with a deadline, then ready again: the deadline is off (it
    // would have passed before the check at the end).
    let path =
        |addr: SocketAddr, verb: &str| format!("/api/v1/pools/echo/backends/{}/{verb}", seg(addr));
    let (code, body) = lb
        .unix("POST", &path(b.addr, "drain"), r#"{"deadline":"1s"}"#)
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body["change"],
        "state ready -> drain, closing what is left in 1s"
    );
    let (code, _) = lb.unix("POST", &path(b.addr, "ready"), "").await;
    assert_eq!(code, 200);
    assert_eq!(
        lb.backend("echo", &b.addr.to_string()).await["drain_deadline"],
        Value::Null
    );

    let (code, body) = lb
        .unix("POST", &path(a.addr, "drain"), r#"{"deadline":"1s"}"#)
        .await;
    assert_eq!(code, 200, "{body}");
    let shown = lb.backend("echo", &a.addr.to_string()).await;
    assert!(
        shown["drain_deadline"]
            .as_str()
            .is_some_and(|d| d.ends_with('Z')),
        "{shown}"
    );
    let on_a = if backends[0].addr() == a.addr {
        &mut first
    } else {
        &mut second
    };
    echo_chunk(on_a, 3).await.expect("open until the deadline");
    let mut byte = [0u8; 1];
    let ended = tokio::time::timeout(PATIENCE, on_a.read(&mut byte)).await;
    assert!(
        matches!(ended, Ok(Ok(0)) | Ok(Err(_))),
        "closed at the deadline: {ended:?}"
    );

    tokio::time::sleep(Duration::from_millis(400)).await;
    let on_b = if backends[0].addr() == a.addr {
        &mut second
    } else {
        &mut first
    };
    echo_chunk(on_b, 4)
        .await
        .expect("the ready one was not closed");

    let metrics = lb.metrics().await;
    let series = |backend: SocketAddr| {
        format!(
            "tcplb_backend_evicted_total{{listener=\"echo\",listen=\"{}\",backend=\"{backend}\"}}",
            lb.addr
        )
    };
    has_line(&metrics, &format!("{} 1", series(a.addr)));
    has_line(&metrics, &format!("{} 0", series(b.addr)));
    assert_eq!(lb.status_backend(&a.addr.to_string()).await["evicted"], 1);
}

#[tokio::test]
async fn a_weight_change_moves_the_share() {
    let dir = TempDir::new("weight");
    let a = TestBackend::http().await;
    let b = TestBackend::http().await;
    let lb = start(single(common::service(&[a.addr, b.addr]), "web"), &dir);
    let path = format!("/api/v1/pools/web/backends/{}/weight", seg(a.addr));
    let (code, body) = lb.unix("PUT", &path, r#"{"weight":3}"#).await;
    assert_eq!(code, 200, "{body}");
    let mut on_a = 0;
    for _ in 0..400 {
        if hello_port(&http_get(lb.addr).await) == a.addr.port() {
            on_a += 1;
        }
    }
    // 3:1 is 300 of 400, within 5%.
    assert!(
        (280..=320).contains(&on_a),
        "{on_a} of 400 went to the weight-3 backend"
    );
}

#[tokio::test]
async fn an_added_backend_takes_traffic_and_a_removed_one_drains_out() {
    let dir = TempDir::new("addremove");
    let a = TestBackend::echo().await;
    let lb = start(single(common::service(&[a.addr]), "echo"), &dir);
    let b = TestBackend::echo().await;
    let body = json!({ "address": b.addr.to_string() }).to_string();
    let (code, answer) = lb.unix("POST", "/api/v1/pools/echo/backends", &body).await;
    assert_eq!(code, 201, "{answer}");
    let mut streams = vec![open_echo(lb.addr, 1).await, open_echo(lb.addr, 2).await];
    let on_b = lb.backend("echo", &b.addr.to_string()).await;
    assert_eq!(
        on_b["active"], 1,
        "round robin gave the new one a connection"
    );
    let held = lb.service.pool.load().backends[0].active();
    assert_eq!(held, 1);

    let path = format!("/api/v1/pools/echo/backends/{}", seg(b.addr));
    let (code, answer) = lb.unix("DELETE", &path, "").await;
    assert_eq!(
        (code, &answer["change"]),
        (200, &json!("removing: draining 1 open connection(s)"))
    );
    let listed = lb.backend("echo", &b.addr.to_string()).await;
    assert_eq!(listed["admin_state"], "drain");
    let (code, answer) = lb.unix("DELETE", &path, "").await;
    assert_eq!(
        (code, &answer["error"]),
        (409, &json!(format!("backend {} is being removed", b.addr)))
    );
    for seed in 10..14 {
        let mut s = open_echo(lb.addr, seed).await;
        s.shutdown().await.unwrap();
    }
    assert_eq!(
        lb.backend("echo", &b.addr.to_string()).await["active"],
        1,
        "no new ones"
    );
    for stream in &mut streams {
        echo_chunk(stream, 5).await.expect("both still echo");
    }
    for mut stream in streams {
        common::finish(&mut stream, b"").await;
    }
    let gone = poll_until(PATIENCE, || !lb.has_member(b.addr)).await;
    assert!(
        gone,
        "the removed backend left once its last connection ended"
    );
    assert_eq!(lb.backends("echo").await.len(), 1);
    let (code, _) = lb.unix("DELETE", &path, "").await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn a_remove_deadline_closes_the_last_connections_and_the_backend_leaves() {
    let dir = TempDir::new("removedeadline");
    let a = TestBackend::echo().await;
    let b = TestBackend::echo().await;
    let lb = start(single(common::service(&[a.addr, b.addr]), "echo"), &dir);
    let mut streams = vec![open_echo(lb.addr, 1).await, open_echo(lb.addr, 2).await];
    let path = format!("/api/v1/pools/echo/backends/{}", seg(b.addr));
    let (code, answer) = lb.unix("DELETE", &path, r#"{"deadline":"200ms"}"#).await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(
        answer["change"],
        "removing: draining 1 open connection(s), closing what is left in 200ms"
    );
    let gone = poll_until(PATIENCE, || !lb.has_member(b.addr)).await;
    assert!(gone, "evicted at the deadline, then removed");
    let mut closed = 0;
    for stream in &mut streams {
        if echo_chunk(stream, 9).await.is_err() {
            closed += 1;
            continue;
        }
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_millis(200), stream.read(&mut byte)).await;
        if matches!(read, Ok(Ok(0)) | Ok(Err(_))) {
            closed += 1;
        }
    }
    assert_eq!(
        closed, 1,
        "only the connection to the removed backend was closed"
    );
    let removed = lb
        .service
        .pool
        .stats
        .removed
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(removed, 1);
}

#[tokio::test]
async fn writes_without_write_access_are_forbidden_and_change_nothing() {
    let dir = TempDir::new("forbidden");
    let a = TestBackend::http().await;
    let lb = start(single(common::service(&[a.addr]), "web"), &dir);
    let path = format!("/api/v1/pools/web/backends/{}/weight", seg(a.addr));
    let body = r#"{"weight":9}"#;
    for headers in [
        &[][..],
        &[("Authorization", "Bearer wrong-token!")],
        &[("Authorization", "Bearer s3cret-T0ke")],
        &[("Authorization", "Basic s3cret-T0ken")],
        &[("Authorization", "bearer s3cret-T0ken")],
    ] {
        let (code, answer) = lb.tcp("PUT", &path, headers, body).await;
        assert_eq!(code, 403, "{headers:?}: {answer}");
        assert!(
            answer["error"]
                .as_str()
                .unwrap()
                .starts_with("changes need write access")
        );
    }
    assert_eq!(lb.backend("web", &a.addr.to_string()).await["weight"], 1);
    has_line(
        &lb.metrics().await,
        "tcplb_admin_rejected_total{reason=\"forbidden\"} 5",
    );
    let (code, _) = lb.write("PUT", &path, body).await;
    assert_eq!(code, 200);
    assert_eq!(lb.backend("web", &a.addr.to_string()).await["weight"], 9);

    // No token configured: TCP is read-only whatever the header says.
    let mut config = single(common::service(&[a.addr]), "web");
    config.admin_token_file = None;
    config.admin_socket = Some(dir.path("other.sock"));
    config.drain_timeout = Duration::from_secs(1);
    config.admin = Some("127.0.0.1:0".parse().unwrap());
    let balancer = Balancer::bind(config).unwrap();
    let admin = balancer.admin_addr().unwrap();
    let shutdown = balancer.shutdown_token();
    tokio::spawn(balancer.run());
    let stream = TcpStream::connect(admin).await.unwrap();
    let auth = format!("Bearer {TOKEN}");
    let (code, _) = exchange(stream, "PUT", &path, &[("Authorization", &auth)], body).await;
    assert_eq!(code, 403);
    shutdown.cancel();
}

#[tokio::test]
async fn the_unix_socket_is_private_replaces_a_stale_one_and_may_write() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let dir = TempDir::new("socket");
    let socket = dir.path("admin.sock");
    // A stale socket from an earlier run.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(std::fs::metadata(&socket).unwrap().file_type().is_socket());
    let a = TestBackend::http().await;
    let mut config = single(common::service(&[a.addr]), "web");
    config.admin_socket = Some(socket.clone());
    let lb = start(config, &dir);
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let path = format!("/api/v1/pools/web/backends/{}/maintenance", seg(a.addr));
    let (code, answer) = lb.unix("POST", &path, "").await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(
        lb.backend("web", &a.addr.to_string()).await["admin_state"],
        "maintenance"
    );
    let (code, answer) = lb.unix("GET", "/api/v1/pools", "").await;
    assert_eq!((code, &answer["pools"][0]["name"]), (200, &json!("web")));

    // Something else at the path is not deleted: start-up fails.
    let file = dir.path("not-a-socket");
    std::fs::write(&file, "keep me").unwrap();
    let mut config = single(common::service(&[a.addr]), "web");
    config.admin_socket = Some(file.clone());
    let err = Balancer::bind(config).err().expect("refused");
    assert!(err.to_string().contains("is not a socket"), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
}

#[tokio::test]
async fn bad_input_gets_its_4xx_and_changes_nothing() {
    let dir = TempDir::new("badinput");
    let a = TestBackend::http().await;
    let lb = start(single(common::service(&[a.addr]), "web"), &dir);
    let b = format!("/api/v1/pools/web/backends/{}", seg(a.addr));
    let add = "/api/v1/pools/web/backends";
    let big = format!("{{\"deadline\":\"{}\"}}", "x".repeat(70 * 1024));
    let dup = json!({ "address": a.addr.to_string() }).to_string();
    let before = lb.get("/api/v1/pools").await;
    let cases: Vec<(&str, String, String, u16, &str)> = vec![
        (
            "POST",
            format!("{b}/drain"),
            "{".into(),
            400,
            "bad JSON body",
        ),
        (
            "POST",
            format!("{b}/drain"),
            r#"{"deadline":"1s","now":true}"#.into(),
            400,
            "unknown field `now`",
        ),
        (
            "POST",
            format!("{b}/drain"),
            r#"{"deadline":"soon"}"#.into(),
            400,
            "bad deadline",
        ),
        (
            "POST",
            format!("{b}/ready"),
            r#"{"x":1}"#.into(),
            400,
            "unknown field `x`",
        ),
        (
            "PUT",
            format!("{b}/weight"),
            "".into(),
            400,
            "a JSON body is required",
        ),
        (
            "PUT",
            format!("{b}/weight"),
            r#"{"weight":0}"#.into(),
            400,
            "weight 0 is out of range: 1 to 10000",
        ),
        (
            "PUT",
            format!("{b}/weight"),
            r#"{"weight":10001}"#.into(),
            400,
            "weight 10001 is out of range",
        ),
        (
            "PUT",
            format!("{b}/weight"),
            r#"{"weight":-2}"#.into(),
            400,
            "bad JSON body",
        ),
        (
            "PUT",
            format!("{b}/weight"),
            r#"{"weight":"3"}"#.into(),
            400,
            "bad JSON body",
        ),
        (
            "PUT",
            "/api/v1/pools/nope/backends/x/weight".into(),
            r#"{"weight":2}"#.into(),
            404,
            "no pool nope",
        ),
        (
            "PUT",
            "/api/v1/pools/web/backends/127.0.0.1%3A1/weight".into(),
            r#"{"weight":2}"#.into(),
            404,
            "no backend 127.0.0.1:1 in this pool",
        ),
        (
            "DELETE",
            "/api/v1/pools/web/backends/127.0.0.1%3A1".into(),
            "".into(),
            404,
            "no backend",
        ),
        ("POST", add.into(), dup, 409, "is already in the pool"),
        (
            "POST",
            add.into(),
            r#"{"address":"nope"}"#.into(),
            400,
            "bad address \"nope\"",
        ),
        (
            "POST",
            add.into(),
            r#"{"address":"127.0.0.1:9=3"}"#.into(),
            400,
            "bad address",
        ),
        (
            "POST",
            add.into(),
            r#"{"address":"127.0.0.1:0"}"#.into(),
            400,
            "port 0",
        ),
        (
            "POST",
            add.into(),
            r#"{"address":"127.0.0.1:9","weight":0}"#.into(),
            400,
            "weight 0",
        ),
        (
            "POST",
            add.into(),
            r#"{"address":"127.0.0.1:9","maxconn":0}"#.into(),
            400,
            "maxconn 0",
        ),
        (
            "POST",
            add.into(),
            r#"{"address":"127.0.0.1:9","colour":"red"}"#.into(),
            400,
            "unknown field `colour`",
        ),
        (
            "POST",
            add.into(),
            r#"{"weight":2}"#.into(),
            400,
            "missing field `address`",
        ),
        (
            "POST",
            format!("{b}/drain"),
            big,
            413,
            "the body is over 65536 bytes",
        ),
        (
            "PATCH",
            format!("{b}/weight"),
            r#"{"weight":2}"#.into(),
            405,
            "PATCH is not allowed here: use PUT",
        ),
        ("GET", format!("{b}/drain"), "".into(), 405, "use POST"),
        (
            "POST",
            format!("{b}/reboot"),
            "".into(),
            404,
            "no API route",
        ),
        ("POST", "/api/v1/pools".into(), "".into(), 405, "use GET"),
        (
            "PUT",
            "/api/v1/ready".into(),
            "".into(),
            400,
            "a JSON body is required",
        ),
        (
            "PUT",
            "/api/v1/ready".into(),
            r#"{"ready":"no"}"#.into(),
            400,
            "bad JSON body",
        ),
        (
            "PUT",
            "/api/v1/ready".into(),
            r#"{"ready":false,"why":"x"}"#.into(),
            400,
            "unknown field `why`",
        ),
        (
            "POST",
            "/api/v1/ready".into(),
            r#"{"ready":false}"#.into(),
            405,
            "use GET, PUT",
        ),
    ];
    for (method, path, body, code, says) in &cases {
        let (got, answer) = lb.unix(method, path, body).await;
        assert_eq!(got, *code, "{method} {path} {body:.60}: {answer}");
        let error = answer["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{answer}"));
        assert!(
            error.contains(says),
            "{method} {path}: {error:?} lacks {says:?}"
        );
        assert!(!error.contains('\n'), "one line: {error:?}");
        assert_eq!(
            lb.get("/api/v1/pools").await,
            before,
            "{method} {path} changed something"
        );
        assert_eq!(lb.get("/api/v1/ready").await["operator"], "on");
    }
    let metrics = lb.metrics().await;
    for (reason, n) in [
        ("bad_request", 19),
        ("not_found", 4),
        ("conflict", 1),
        ("too_large", 1),
        ("method_not_allowed", 4),
    ] {
        has_line(
            &metrics,
            &format!("tcplb_admin_rejected_total{{reason=\"{reason}\"}} {n}"),
        );
    }
    has_line(&metrics, "tcplb_admin_changes_total{action=\"add\"} 0");
    has_line(
        &metrics,
        "tcplb_admin_changes_total{action=\"ready_off\"} 0",
    );
}

/// Writes a one-listener config named "web" with `backends` (TOML array items).
fn write_config(path: &Path, dir: &TempDir, backends: &str, extra: &str) {
    let text = format!(
        "admin_socket = {:?}\nstate_file = {:?}\n\
         [[listener]]\nname = \"web\"\nlisten = \"127.0.0.1:0\"\nbackends = [{backends}]\n\
         health = {{ interval = \"1h\" }}\n{extra}",
        dir.path("admin.sock"),
        dir.path("state.json"),
    );
    std::fs::write(path, text).unwrap();
}

#[tokio::test]
async fn operators_changes_survive_a_sighup_reload() {
    let dir = TempDir::new("sighup");
    let [a, b, c] = [
        TestBackend::http().await,
        TestBackend::http().await,
        TestBackend::http().await,
    ];
    let file = dir.path("tcplb.toml");
    let list = format!("\"{}\", \"{}\"", a.addr, b.addr);
    write_config(&file, &dir, &list, "");
    let startup = Startup::try_from_args(["tcplb", "--config", file.to_str().unwrap()]).unwrap();
    let source = startup.source.clone().unwrap();
    let lb = start(startup.config, &dir);
    let seg_of = |addr: SocketAddr| format!("/api/v1/pools/web/backends/{}", seg(addr));
    assert_eq!(
        lb.unix("POST", &format!("{}/drain", seg_of(a.addr)), "")
            .await
            .0,
        200
    );
    assert_eq!(
        lb.unix(
            "PUT",
            &format!("{}/weight", seg_of(b.addr)),
            r#"{"weight":5}"#
        )
        .await
        .0,
        200
    );
    let add = json!({ "address": c.addr.to_string(), "weight": 4 }).to_string();
    assert_eq!(
        lb.unix("POST", "/api/v1/pools/web/backends", &add).await.0,
        201
    );
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path("state.json")).unwrap()).unwrap();
    assert_eq!(
        state["pools"]["web"]["overrides"][a.addr.to_string()]["state"],
        "drain"
    );
    assert_eq!(
        state["pools"]["web"]["overrides"][b.addr.to_string()]["weight"],
        5
    );
    assert_eq!(
        state["pools"]["web"]["added"][0]["name"],
        c.addr.to_string()
    );

    // A reload with other settings keeps every change.
    write_config(&file, &dir, &list, "retries = 1\n");
    signals::reload(&lb.reload, &source).expect("reload");
    assert_eq!(
        lb.service.pool.load().config.retries,
        1,
        "the reload applied"
    );
    let shown = |list: &[Value], addr: SocketAddr| {
        let b = list
            .iter()
            .find(|b| b["name"] == addr.to_string().as_str())
            .cloned();
        b.map(|b| (b["admin_state"].clone(), b["weight"].clone()))
    };
    let list_now = lb.backends("web").await;
    assert_eq!(shown(&list_now, a.addr), Some((json!("drain"), json!(1))));
    assert_eq!(shown(&list_now, b.addr), Some((json!("ready"), json!(5))));
    assert_eq!(shown(&list_now, c.addr), Some((json!("ready"), json!(4))));

    // The config lists the added backend now: its entry takes over.
    let with_c = format!("{list}, \"{}=2\"", c.addr);
    write_config(&file, &dir, &with_c, "");
    signals::reload(&lb.reload, &source).expect("reload");
    let list_now = lb.backends("web").await;
    assert_eq!(shown(&list_now, c.addr), Some((json!("ready"), json!(2))));
    assert_eq!(shown(&list_now, a.addr), Some((json!("drain"), json!(1))));
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path("state.json")).unwrap()).unwrap();
    assert_eq!(state["pools"]["web"]["added"], json!([]), "{state}");

    // Setting the config's own weight clears the override.
    assert_eq!(
        lb.unix(
            "PUT",
            &format!("{}/weight", seg_of(b.addr)),
            r#"{"weight":1}"#
        )
        .await
        .0,
        200
    );
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path("state.json")).unwrap()).unwrap();
    assert_eq!(
        state["pools"]["web"]["overrides"],
        json!({ a.addr.to_string(): { "state": "drain" } })
    );
}

#[tokio::test]
async fn a_corrupt_state_file_is_set_aside_and_the_config_used() {
    let dir = TempDir::new("corrupt");
    let a = TestBackend::http().await;
    let state = dir.path("state.json");
    std::fs::write(&state, "{\"version\":1,\"pools\":{\"web\":").unwrap();
    let mut config = single(common::service(&[a.addr]), "web");
    config.state_file = Some(state.clone());
    let lb = start(config, &dir);
    let bad = dir.path("state.json.bad");
    assert_eq!(
        std::fs::read_to_string(&bad).unwrap(),
        "{\"version\":1,\"pools\":{\"web\":"
    );
    assert!(!state.exists());
    assert_eq!(
        lb.backend("web", &a.addr.to_string()).await["admin_state"],
        "ready"
    );
    // The next change writes a good file again.
    let path = format!("/api/v1/pools/web/backends/{}/drain", seg(a.addr));
    assert_eq!(lb.unix("POST", &path, "").await.0, 200);
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    assert_eq!(
        saved["pools"]["web"]["overrides"][a.addr.to_string()]["state"],
        "drain"
    );
}

#[tokio::test]
async fn a_failed_state_write_is_counted_and_the_change_applies() {
    let dir = TempDir::new("writefail");
    let a = TestBackend::http().await;
    let mut config = single(common::service(&[a.addr]), "web");
    // A directory that does not exist: every write fails.
    config.state_file = Some(dir.path("missing").join("state.json"));
    let lb = start(config, &dir);
    let path = format!("/api/v1/pools/web/backends/{}/drain", seg(a.addr));
    assert_eq!(lb.unix("POST", &path, "").await.0, 200);
    assert_eq!(
        lb.backend("web", &a.addr.to_string()).await["admin_state"],
        "drain"
    );
    has_line(
        &lb.metrics().await,
        "tcplb_state_file_write_failures_total 1",
    );
    let _ = spec(a.addr, 1);
}

/// What a load generator saw.
#[derive(Default)]
struct LoadCounts {
    /// Short connections that echoed their bytes back exactly.
    short_ok: u64,
    /// Long transfers that echoed every byte back exactly.
    long_ok: u64,
    /// Bytes moved (and checked) by the long transfers.
    long_bytes: u64,
    /// Anything refused, reset, cut short or corrupted.
    failed: Vec<String>,
}

/// A short connection: 64 bytes out and back, then both sides close.
async fn short_exchange(addr: SocketAddr, seed: u64) -> Result<(), String> {
    let sent = Pattern::bytes(seed, 64);
    let mut stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    stream.write_all(&sent).await.map_err(|e| e.to_string())?;
    stream.shutdown().await.map_err(|e| e.to_string())?;
    let mut back = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut back))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    if back != sent {
        return Err(format!(
            "short connection {seed}: {} bytes back, corrupted",
            back.len()
        ));
    }
    Ok(())
}

/// A long transfer: 64 chunks of 16 KiB echoed one by one, 2 ms apart.
async fn long_transfer(addr: SocketAddr, seed: u64) -> Result<u64, String> {
    let mut stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let mut moved = 0;
    for chunk in 0..64 {
        echo_chunk(&mut stream, seed * 1000 + chunk)
            .await
            .map_err(|e| format!("transfer {seed}, chunk {chunk}: {e}"))?;
        moved += 16 * 1024;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let rest = common::finish(&mut stream, b"").await;
    if !rest.is_empty() {
        return Err(format!("transfer {seed}: {} stray bytes", rest.len()));
    }
    Ok(moved)
}

/// A rolling deploy under continuous load: drain A, wait for its last
/// connection, stop it, start a replacement C on a new port, add C, remove
/// A. Not one client connection may fail, and every byte must come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_deploy_under_load_breaks_nothing() {
    use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

    let dir = TempDir::new("rolling");
    let mut a = TestBackend::echo().await;
    let b = TestBackend::echo().await;
    let lb = start(single(common::service(&[a.addr, b.addr]), "web"), &dir);
    let addr = lb.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);

    // Short connections from two tasks, long transfers from four; each
    // loop ends when told, at its cap, or at the deadline.
    let mut load = tokio::task::JoinSet::new();
    for worker in 0..2u64 {
        let stop = stop.clone();
        load.spawn(async move {
            let mut counts = LoadCounts::default();
            for i in 0..20_000u64 {
                if stop.load(Relaxed) || std::time::Instant::now() > deadline {
                    break;
                }
                match short_exchange(addr, worker * 1_000_000 + i).await {
                    Ok(()) => counts.short_ok += 1,
                    Err(e) => counts.failed.push(e),
                }
            }
            counts
        });
    }
    for worker in 0..4u64 {
        let stop = stop.clone();
        load.spawn(async move {
            let mut counts = LoadCounts::default();
            for i in 0..1_000u64 {
                if stop.load(Relaxed) || std::time::Instant::now() > deadline {
                    break;
                }
                match long_transfer(addr, worker * 10_000 + i).await {
                    Ok(bytes) => {
                        counts.long_ok += 1;
                        counts.long_bytes += bytes;
                    }
                    Err(e) => counts.failed.push(e),
                }
            }
            counts
        });
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // 1. Drain A: no new connections; its open transfers finish.
    let a_seg = format!("/api/v1/pools/web/backends/{}", seg(a.addr));
    let (code, answer) = lb.write("POST", &format!("{a_seg}/drain"), "").await;
    assert_eq!(code, 200, "{answer}");
    // 2. Wait for its last connection, and make sure it stays at 0.
    let a_backend = lb.service.pool.load().backends[0].clone();
    assert_eq!(a_backend.addr(), a.addr);
    assert!(poll_until(PATIENCE, || a_backend.active() == 0).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        a_backend.active(),
        0,
        "a connection reached A after the drain"
    );
    // 3. Stop A. 4. Start the replacement on a new port. 5. Add it.
    a.kill().await;
    let c = TestBackend::echo().await;
    let body = json!({ "address": c.addr.to_string() }).to_string();
    let (code, answer) = lb.write("POST", "/api/v1/pools/web/backends", &body).await;
    assert_eq!(code, 201, "{answer}");
    // 6. Remove A.
    let (code, answer) = lb.write("DELETE", &a_seg, "").await;
    assert_eq!(code, 200, "{answer}");
    assert!(poll_until(PATIENCE, || !lb.has_member(a.addr)).await);
    // The replacement takes its share while the load goes on.
    let c_total = || {
        lb.service
            .pool
            .load()
            .backends
            .iter()
            .find(|x| x.addr() == c.addr)
            .map_or(0, |x| {
                x.stats.total.load(std::sync::atomic::Ordering::Relaxed)
            })
    };
    assert!(
        poll_until(PATIENCE, || c_total() >= 20).await,
        "C took no traffic"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Relaxed);

    let mut total = LoadCounts::default();
    while let Some(counts) = load.join_next().await {
        let counts = counts.expect("a load task panicked");
        total.short_ok += counts.short_ok;
        total.long_ok += counts.long_ok;
        total.long_bytes += counts.long_bytes;
        total.failed.extend(counts.failed);
    }
    eprintln!(
        "rolling deploy: {} short connections and {} long transfers ({} MiB) byte-exact, {} failed; \
         A served {}, B {}, C {}",
        total.short_ok,
        total.long_ok,
        total.long_bytes >> 20,
        total.failed.len(),
        a_backend
            .stats
            .total
            .load(std::sync::atomic::Ordering::Relaxed),
        lb.service.pool.load().backends[0]
            .stats
            .total
            .load(std::sync::atomic::Ordering::Relaxed),
        c_total(),
    );
    assert!(
        total.failed.is_empty(),
        "{} failed: {:?}",
        total.failed.len(),
        &total.failed[..total.failed.len().min(5)]
    );
    assert!(
        total.short_ok >= 100 && total.long_ok >= 8,
        "too little load to mean anything"
    );
    assert!(
        a_backend
            .stats
            .total
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
}
