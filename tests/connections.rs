//! Open connections over the control API and `tcplb ctl`, with real
//! clients: listed with their fields and paginated, closed one by id (that
//! client sees its connection end, the others go on) or all of one
//! backend's, each close logged as `operator_close`; unknown and malformed
//! ids, unknown pools and backends, and writes without write access get
//! their 4xx; a listing of many connections taken under load breaks none.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use tcplb::config::{AccessLogConfig, AccessLogFormat, AccessLogTarget, Config};
use tcplb::runtime::Balancer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "c0nn-T0ken";

/// A temporary directory, removed on drop.
/// A balancer named "web" over `backends`, with an admin endpoint (token
/// in `dir`) and a JSON access log in `dir`; shut down on drop.
struct Lb {
    addr: SocketAddr,
    admin: SocketAddr,
    log: PathBuf,
    token_file: PathBuf,
    shutdown: CancellationToken,
}

impl Drop for Lb {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn start(backends: &[SocketAddr], dir: &TempDir) -> Lb {
    let mut svc = service(backends);
    svc.name = Some("web".into());
    svc.health.interval = Duration::from_secs(3600);
    let mut config = Config::single(svc);
    config.drain_timeout = Duration::from_secs(1);
    config.admin = Some("127.0.0.1:0".parse().unwrap());
    let token_file = dir.path("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    config.admin_token_file = Some(token_file.clone());
    let log = dir.path("access.log");
    config.access_log = AccessLogConfig {
        target: AccessLogTarget::File(log.clone()),
        format: AccessLogFormat::Json,
    };
    let balancer = Balancer::bind(config).expect("bind balancer");
    let lb = Lb {
        addr: balancer.local_addrs()[0],
        admin: balancer.admin_addr().unwrap(),
        log,
        token_file,
        shutdown: balancer.shutdown_token(),
    };
    tokio::spawn(balancer.run());
    lb
}

/// One HTTP exchange on the admin endpoint: (status, JSON body).
async fn call(admin: SocketAddr, method: &str, path: &str, token: bool) -> (u16, Value) {
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n");
    if token {
        request.push_str(&format!("Authorization: Bearer {TOKEN}\r\n"));
    }
    request.push_str("\r\n");
    let reply = tokio::time::timeout(PATIENCE, async {
        let mut stream = TcpStream::connect(admin).await.expect("connect admin");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).await.unwrap();
        reply
    })
    .await
    .expect("admin reply timed out");
    let text = String::from_utf8(reply).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a whole response");
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    (code, serde_json::from_str(body).unwrap_or(Value::Null))
}

async fn get(admin: SocketAddr, path: &str) -> Value {
    let (code, body) = call(admin, "GET", path, false).await;
    assert_eq!(code, 200, "GET {path}: {body}");
    body
}

/// An open connection through the balancer, and the echoed bytes so far.
struct Client {
    stream: TcpStream,
    addr: SocketAddr,
}

async fn open(lb: SocketAddr, bytes: usize) -> Client {
    let mut stream = TcpStream::connect(lb).await.unwrap();
    let addr = stream.local_addr().unwrap();
    let data = vec![7u8; bytes];
    stream.write_all(&data).await.unwrap();
    let mut back = vec![0u8; bytes];
    tokio::time::timeout(PATIENCE, stream.read_exact(&mut back))
        .await
        .expect("echo timed out")
        .unwrap();
    Client { stream, addr }
}

/// Whether the connection still echoes.
async fn alive(client: &mut Client) -> bool {
    if client.stream.write_all(b"?").await.is_err() {
        return false;
    }
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(PATIENCE, client.stream.read(&mut byte)).await,
        Ok(Ok(1))
    )
}

/// Whether the balancer ended the connection: EOF or a reset, bounded.
async fn ended(client: &mut Client) -> bool {
    let mut rest = Vec::new();
    match tokio::time::timeout(PATIENCE, client.stream.read_to_end(&mut rest)).await {
        Ok(Ok(_)) => rest.is_empty(),
        Ok(Err(_)) => true,
        Err(_) => false,
    }
}

/// Every connection the API lists, page by page with `limit`.
async fn walk(admin: SocketAddr, limit: usize, filter: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut after = 0;
    for _ in 0..1000 {
        let page = get(
            admin,
            &format!("/api/v1/connections?limit={limit}&after={after}{filter}"),
        )
        .await;
        let items = page["connections"].as_array().unwrap().clone();
        assert!(items.len() <= limit, "{page}");
        all.extend(items);
        match page["next"].as_u64() {
            Some(next) => after = next,
            None => return all,
        }
    }
    panic!("the walk did not end");
}

fn access_lines(lb: &Lb) -> Vec<Value> {
    std::fs::read_to_string(&lb.log)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Waits for the access log line of `client` and returns its cause.
async fn logged_cause(lb: &Lb, client: SocketAddr) -> String {
    let find = || {
        access_lines(lb)
            .into_iter()
            .find(|l| l["client"] == client.to_string())
    };
    poll_until(PATIENCE, || find().is_some()).await;
    let line = find().unwrap_or_else(|| panic!("no line for {client}: {:?}", access_lines(lb)));
    line["cause"].as_str().unwrap().to_string()
}

fn seg(addr: SocketAddr) -> String {
    addr.to_string().replace(':', "%3A")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_listed_paginated_and_closed_one_or_a_backend_at_a_time() {
    let (a, b) = (TestBackend::echo().await, TestBackend::echo().await);
    let dir = TempDir::new("list");
    let lb = start(&[a.addr, b.addr], &dir);
    let mut clients = Vec::new();
    for i in 0..12 {
        clients.push(open(lb.addr, 10 + i).await);
    }

    // The listing: every client once, with its fields. A pipe counts its
    // bytes just after writing them, so the client may see its echo a
    // moment before the counters do: wait for all 24 counts, then check.
    let all_counted = |page: &Value| {
        let total: u64 = (0..12).map(|i| 2 * (10 + i)).sum();
        let counted: u64 = page["connections"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| c["sent"].as_u64().unwrap_or(0) + c["received"].as_u64().unwrap_or(0))
            .sum();
        counted == total
    };
    let deadline = Instant::now() + PATIENCE;
    let mut page = get(lb.admin, "/api/v1/connections").await;
    while !all_counted(&page) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        page = get(lb.admin, "/api/v1/connections").await;
    }
    assert_eq!(page["open"], 12, "{page}");
    assert_eq!(page["next"], Value::Null);
    let listed = page["connections"].as_array().unwrap();
    assert_eq!(listed.len(), 12);
    for (i, client) in clients.iter().enumerate() {
        let c = listed
            .iter()
            .find(|c| c["client"] == client.addr.to_string())
            .unwrap_or_else(|| panic!("{} is not listed: {page}", client.addr));
        assert_eq!(c["listener"], "web");
        assert_eq!(c["listen"], lb.addr.to_string());
        assert!(
            c["backend"] == a.addr.to_string() || c["backend"] == b.addr.to_string(),
            "{c}"
        );
        assert_eq!((c["sent"].as_u64(), c["received"].as_u64()), {
            let n = Some(10 + i as u64);
            (n, n)
        });
        let age = c["age_ms"].as_u64().unwrap();
        let idle = c["idle_ms"].as_u64().unwrap();
        assert!(idle <= age && age < 60_000, "{c}");
        humantime::parse_rfc3339(c["started"].as_str().unwrap()).unwrap();
    }
    let ids: Vec<u64> = listed.iter().map(|c| c["id"].as_u64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "in id order: {ids:?}");

    // Pagination: pages of 5 give 5, 5, 2, the same connections in order.
    let first = get(lb.admin, "/api/v1/connections?limit=5").await;
    assert_eq!(first["connections"].as_array().unwrap().len(), 5);
    assert_eq!(first["next"].as_u64(), Some(ids[4]));
    let walked: Vec<u64> = walk(lb.admin, 5, "")
        .await
        .iter()
        .map(|c| c["id"].as_u64().unwrap())
        .collect();
    assert_eq!(walked, ids);

    // Filters.
    let to_a = walk(lb.admin, 100, &format!("&backend={}", seg(a.addr))).await;
    assert_eq!(to_a.len(), 6, "round-robin over two backends");
    assert!(to_a.iter().all(|c| c["backend"] == a.addr.to_string()));
    assert_eq!(walk(lb.admin, 100, "&listener=web").await.len(), 12);
    let (code, body) = call(lb.admin, "GET", "/api/v1/connections?listener=nope", false).await;
    assert_eq!(code, 404, "{body}");

    // Close one (a connection to B) by id: it ends, the others go on.
    let victim_at = clients
        .iter()
        .position(|c| {
            listed
                .iter()
                .any(|l| l["client"] == c.addr.to_string() && l["backend"] == b.addr.to_string())
        })
        .unwrap();
    let mut victim = clients.remove(victim_at);
    let id = listed
        .iter()
        .find(|l| l["client"] == victim.addr.to_string())
        .unwrap()["id"]
        .as_u64()
        .unwrap();
    let (code, body) = call(
        lb.admin,
        "DELETE",
        &format!("/api/v1/connections/{id}"),
        true,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["connection"]["id"], id);
    assert_eq!(body["connection"]["client"], victim.addr.to_string());
    assert_eq!(body["change"], "closing");
    assert!(ended(&mut victim).await, "the closed client saw no end");
    for client in &mut clients {
        assert!(alive(client).await, "{} was cut too", client.addr);
    }
    assert_eq!(logged_cause(&lb, victim.addr).await, "operator_close");
    assert!(
        poll_until(PATIENCE, || access_lines(&lb).len() == 1).await,
        "only the closed one has ended"
    );
    // Gone from the list; closing it again is 404.
    let page = get(lb.admin, "/api/v1/connections").await;
    assert_eq!(page["open"], 11, "{page}");
    let (code, _) = call(
        lb.admin,
        "DELETE",
        &format!("/api/v1/connections/{id}"),
        true,
    )
    .await;
    assert_eq!(code, 404);

    // Close all of A's: exactly those end.
    let path = format!(
        "/api/v1/pools/web/backends/{}/close-connections",
        seg(a.addr)
    );
    let (code, body) = call(lb.admin, "POST", &path, true).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["change"], "closing 6 connection(s)", "{body}");
    let on_a: BTreeSet<String> = to_a
        .iter()
        .map(|c| c["client"].as_str().unwrap().to_string())
        .collect();
    for client in &mut clients {
        if on_a.contains(&client.addr.to_string()) {
            assert!(ended(client).await, "{} on A was not closed", client.addr);
            assert_eq!(logged_cause(&lb, client.addr).await, "operator_close");
        } else {
            assert!(alive(client).await, "{} on B was cut", client.addr);
        }
    }
    assert!(poll_until(PATIENCE, || access_lines(&lb).len() == 7).await);
    let page = get(lb.admin, "/api/v1/connections").await;
    assert_eq!(page["open"], 5, "{page}");
    let metrics = String::from_utf8(
        {
            let mut s = TcpStream::connect(lb.admin).await.unwrap();
            s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await.unwrap();
            let mut r = Vec::new();
            s.read_to_end(&mut r).await.unwrap();
            r
        }
        .to_vec(),
    )
    .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l == "tcplb_admin_changes_total{action=\"close\"} 2"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_their_4xx_and_close_nothing() {
    let a = TestBackend::echo().await;
    let dir = TempDir::new("bad");
    let lb = start(&[a.addr], &dir);
    let mut client = open(lb.addr, 3).await;
    let id = get(lb.admin, "/api/v1/connections").await["connections"][0]["id"]
        .as_u64()
        .unwrap();
    let backend = format!("/api/v1/pools/web/backends/{}", seg(a.addr));
    for (method, path, token, code) in [
        ("DELETE", format!("/api/v1/connections/{id}"), false, 403),
        ("POST", format!("{backend}/close-connections"), false, 403),
        ("DELETE", "/api/v1/connections/999999".into(), true, 404),
        ("DELETE", "/api/v1/connections/abc".into(), true, 400),
        ("DELETE", "/api/v1/connections/-1".into(), true, 400),
        ("GET", format!("/api/v1/connections/{id}"), false, 405),
        ("POST", "/api/v1/connections".into(), true, 405),
        ("GET", "/api/v1/connections?limit=0".into(), false, 400),
        ("GET", "/api/v1/connections?limit=1001".into(), false, 400),
        ("GET", "/api/v1/connections?after=x".into(), false, 400),
        ("GET", "/api/v1/connections?sort=age".into(), false, 400),
        (
            "POST",
            "/api/v1/pools/web/backends/127.0.0.1%3A1/close-connections".into(),
            true,
            404,
        ),
        (
            "POST",
            format!(
                "/api/v1/pools/nope/backends/{}/close-connections",
                seg(a.addr)
            ),
            true,
            404,
        ),
    ] {
        let (got, body) = call(lb.admin, method, &path, token).await;
        assert_eq!(got, code, "{method} {path}: {body}");
        assert!(body["error"].is_string(), "{method} {path}: {body}");
    }
    assert!(alive(&mut client).await, "a refused request closed it");
    assert_eq!(get(lb.admin, "/api/v1/connections").await["open"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_lists_and_closes_connections() {
    let (a, b) = (TestBackend::echo().await, TestBackend::echo().await);
    let dir = TempDir::new("ctl");
    let lb = start(&[a.addr, b.addr], &dir);
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(open(lb.addr, 5).await);
    }
    let admin = lb.admin.to_string();
    let token = lb.token_file.to_str().unwrap().to_string();
    let args = |rest: &[&str]| -> Vec<String> {
        ["--admin", admin.as_str()]
            .iter()
            .chain(rest)
            .map(|s| s.to_string())
            .collect()
    };

    let out = ctl(args(&["connections"])).await;
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        [
            "ID", "CLIENT", "LISTENER", "BACKEND", "AGE", "IDLE", "SENT", "RECEIVED"
        ],
        "{text}"
    );
    assert_eq!(lines.len(), 6, "{text}");
    assert_eq!(lines[5], "4 shown, 4 open");
    for client in &clients {
        let row = lines
            .iter()
            .find(|l| l.contains(&format!(" {} ", client.addr)))
            .unwrap_or_else(|| panic!("{} missing:\n{text}", client.addr));
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cells.len(), 8, "{row}");
        assert_eq!((cells[2], cells[6], cells[7]), ("web", "5", "5"), "{row}");
    }

    // One page of 3, then the rest with --after; --all gets all 4.
    let out = ctl(args(&["connections", "--limit", "3"])).await;
    let text = String::from_utf8(out.stdout).unwrap();
    let next = text
        .lines()
        .last()
        .and_then(|l| l.split("--after ").nth(1))
        .unwrap_or_else(|| panic!("no next page hint:\n{text}"))
        .to_string();
    let out = ctl(args(&["connections", "--after", &next])).await;
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.ends_with("1 shown, 4 open\n"), "{text}");
    let out = ctl(args(&["--json", "connections", "--all", "--limit", "1"])).await;
    let all: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(all["connections"].as_array().unwrap().len(), 4, "{all}");
    let id = all["connections"][0]["id"].as_u64().unwrap();
    let first_client = all["connections"][0]["client"]
        .as_str()
        .unwrap()
        .to_string();

    // Closing needs the token.
    let out = ctl(args(&["close", &id.to_string()])).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("403"));
    let out = ctl(args(&["--token-file", &token, "close", &id.to_string()])).await;
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with(&format!("connection {id} ({first_client} on web to ")),
        "{text}"
    );
    assert!(text.ends_with("): closing\n"), "{text}");
    let closed = clients
        .iter_mut()
        .find(|c| c.addr.to_string() == first_client)
        .unwrap();
    assert!(ended(closed).await);

    let out = ctl(args(&[
        "--token-file",
        &token,
        "close-connections",
        "web",
        &b.addr.to_string(),
    ]))
    .await;
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with(&format!("web {}: closing ", b.addr)),
        "{text}"
    );
    let out = ctl(args(&["--token-file", &token, "close", "999999"])).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("404 Not Found: no open connection"));
}

/// 1,000 open connections (4,000 descriptors in this one process) listed
/// page by page while short connections keep coming: every listing is
/// whole and no connection fails. (The registry's unit test lists 100,000.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_many_connections_under_load_breaks_nothing() {
    let a = TestBackend::echo().await;
    let dir = TempDir::new("many");
    let lb = start(&[a.addr], &dir);
    let mut held = Vec::new();
    for _ in 0..1000 {
        held.push(open(lb.addr, 1).await);
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (addr, stop) = (lb.addr, stop.clone());
        tokio::spawn(async move {
            let mut done = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && done < 100_000 {
                let back = echo_roundtrip(addr, b"short").await;
                assert_eq!(back, b"short");
                done += 1;
            }
            done
        })
    };
    for _ in 0..3 {
        let listed = walk(lb.admin, 300, "").await;
        let clients: BTreeSet<String> = listed
            .iter()
            .map(|c| c["client"].as_str().unwrap().to_string())
            .collect();
        for client in &held {
            assert!(clients.contains(&client.addr.to_string()));
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let done = load.await.unwrap();
    assert!(done > 0);
    for client in held.iter_mut().step_by(100) {
        assert!(alive(client).await);
    }
}
