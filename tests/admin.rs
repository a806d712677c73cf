//! The admin endpoint over real sockets: after known traffic, /metrics and
//! /status report exactly that traffic; the operator's admin state and the
//! pool's membership changes show; bad requests get 400/404/405/431; a
//! client that never finishes its request is closed; silent connections
//! cannot delay a scrape; clients beyond the connection limit are turned
//! away only while every slot is answering.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use common::{PATIENCE, Pattern, TestBackend, echo_roundtrip, poll_until, service, spec};
use tcplb::admin::MAX_ADMIN_CONNECTIONS;
use tcplb::config::{AdminState, Config};
use tcplb::proxy::Service;
use tcplb::runtime::{Balancer, ReloadHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// A balancer with its admin endpoint, shut down on drop.
struct AdminBalancer {
    addr: SocketAddr,
    admin: SocketAddr,
    service: Arc<Service>,
    reload: ReloadHandle,
    shutdown: CancellationToken,
}

impl Drop for AdminBalancer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn start(service: tcplb::config::ServiceConfig) -> AdminBalancer {
    start_config(Config::single(service))
}

fn start_config(mut config: Config) -> AdminBalancer {
    config.drain_timeout = Duration::from_secs(1);
    config.admin = Some("127.0.0.1:0".parse().unwrap());
    let balancer = Balancer::bind(config).expect("bind balancer");
    let started = AdminBalancer {
        addr: balancer.local_addrs()[0],
        admin: balancer.admin_addr().expect("admin address"),
        service: balancer.services()[0].clone(),
        reload: balancer.reload_handle(),
        shutdown: balancer.shutdown_token(),
    };
    tokio::spawn(balancer.run());
    started
}

/// Sends `request` raw and returns (status line, headers, body), read to EOF.
async fn raw_request(addr: SocketAddr, request: &[u8]) -> (String, String, String) {
    let reply = tokio::time::timeout(PATIENCE, async {
        let mut stream = TcpStream::connect(addr).await.expect("connect admin");
        stream.write_all(request).await.expect("send request");
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).await.expect("read reply");
        reply
    })
    .await
    .expect("admin reply timed out");
    let text = String::from_utf8(reply).expect("reply is UTF-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete response");
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    let length: usize = headers
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .expect("Content-Length")
        .parse()
        .unwrap();
    assert_eq!(length, body.len(), "Content-Length matches the body");
    (status.to_string(), headers.to_string(), body.to_string())
}

async fn get(addr: SocketAddr, path: &str) -> (String, String, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n");
    raw_request(addr, request.as_bytes()).await
}

/// The value of the sample `name{labels}` in a Prometheus text body.
fn sample(text: &str, name: &str, labels: &str) -> String {
    let prefix = if labels.is_empty() {
        format!("{name} ")
    } else {
        format!("{name}{{{labels}}} ")
    };
    let mut found = text.lines().filter_map(|l| l.strip_prefix(&prefix));
    let value = found
        .next()
        .unwrap_or_else(|| panic!("no sample {prefix:?} in\n{text}"));
    assert!(found.next().is_none(), "{prefix:?} appears twice");
    value.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_status_report_known_traffic_exactly() {
    let a = TestBackend::echo().await;
    let b = TestBackend::echo().await;
    // C answers the prober's first check, then stops listening: it is UP
    // when traffic starts and refuses the first connection sent to it.
    let probed = Arc::new(Notify::new());
    let c = {
        let probed = probed.clone();
        TestBackend::with(move |listener| {
            let probed = probed.clone();
            async move {
                let _ = listener.accept().await;
                // Closed before telling, so no later connect can slip in.
                drop(listener);
                probed.notify_one();
            }
        })
        .await
    };
    let mut svc = service(&[c.addr, a.addr, b.addr]);
    svc.health.interval = Duration::from_secs(3600);
    // A late-reported probe success must not bring C back.
    svc.health.rise = 100;
    svc.max_fails = 1;
    svc.fail_timeout = Duration::from_secs(3600);
    let lb = start(svc);
    tokio::time::timeout(PATIENCE, probed.notified())
        .await
        .expect("the prober checks every backend at start");

    // Five connections, one after another, of 1000..5000 bytes. Round-robin
    // over [C, A, B]: the first goes to C, is refused and retried on the
    // next in turn, A; C is then out, so B and A alternate from there: A
    // gets 1, 3, 5 and B gets 2, 4.
    for i in 1..=5u64 {
        let data = Pattern::bytes(i, (i * 1000) as usize);
        assert_eq!(echo_roundtrip(lb.addr, &data).await, data, "connection {i}");
    }
    assert!(
        poll_until(PATIENCE, || lb.service.stats.active.load(Relaxed) == 0).await,
        "every connection finished"
    );

    let (status, headers, text) = get(lb.admin, "/metrics").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(headers.contains("Content-Type: text/plain; version=0.0.4"));
    let listener = format!("listener=\"{0}\",listen=\"{0}\"", lb.addr);
    let at = |backend: SocketAddr| format!("{listener},backend=\"{backend}\"");
    let expect = [
        // (backend, up, total, connect failures, bytes each way)
        (c.addr, "0", "0", "1", "0"),
        (a.addr, "1", "3", "0", "9000"),
        (b.addr, "1", "2", "0", "6000"),
    ];
    for (backend, up, total, failures, bytes) in expect {
        let labels = at(backend);
        assert_eq!(sample(&text, "tcplb_backend_up", &labels), up);
        assert_eq!(
            sample(&text, "tcplb_backend_connections_total", &labels),
            total
        );
        assert_eq!(
            sample(&text, "tcplb_backend_connect_failures_total", &labels),
            failures
        );
        assert_eq!(
            sample(&text, "tcplb_backend_sent_bytes_total", &labels),
            bytes
        );
        assert_eq!(
            sample(&text, "tcplb_backend_received_bytes_total", &labels),
            bytes
        );
        assert_eq!(
            sample(&text, "tcplb_backend_active_connections", &labels),
            "0"
        );
        let latency: f64 = sample(&text, "tcplb_backend_check_latency_seconds", &labels)
            .parse()
            .expect("latency is a number");
        assert!((0.0..60.0).contains(&latency));
    }
    assert_eq!(
        sample(&text, "tcplb_listener_accepted_total", &listener),
        "5"
    );
    assert_eq!(
        sample(&text, "tcplb_listener_rejected_total", &listener),
        "0"
    );
    assert_eq!(
        sample(&text, "tcplb_listener_active_connections", &listener),
        "0"
    );
    for (code, reason) in [
        ("502", "connect_failed"),
        ("503", "no_backend"),
        ("503", "queue_timeout"),
        ("503", "per_ip_connections"),
        ("503", "per_ip_rate"),
        ("503", "per_ip_table_full"),
        ("503", "out_of_descriptors"),
    ] {
        let labels = format!("{listener},code=\"{code}\",reason=\"{reason}\"");
        assert_eq!(sample(&text, "tcplb_listener_failures_total", &labels), "0");
    }
    for family in [
        "tcplb_backend_up gauge",
        "tcplb_backend_connections_total counter",
        "tcplb_listener_accepted_total counter",
    ] {
        assert!(text.contains(&format!("\n# TYPE {family}\n")), "{family}");
    }

    let (status, headers, json) = get(lb.admin, "/status").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(headers.contains("Content-Type: application/json"));
    assert!(json.starts_with("{\"listeners\":[{") && json.ends_with("}\n"));
    assert!(json.contains(&format!(
        "\"listen\":\"{}\",\"strategy\":\"round-robin\",\"accepted\":5,\"rejected\":0,\
         \"active\":0,\"failures\":{{\"502\":0,\"503\":0,\"503_by_reason\":{{\"no_backend\":0,",
        lb.addr
    )));
    for (backend, up, total, failures, bytes) in expect {
        let up = if up == "1" { "true" } else { "false" };
        let entry = format!(
            "{{\"name\":\"{backend}\",\"address\":\"{backend}\",\"up\":{up},\"weight\":1,\
             \"active\":0,\"total\":{total},\"connect_failures\":{failures},\
             \"sent_bytes\":{bytes},\"received_bytes\":{bytes},"
        );
        assert!(json.contains(&entry), "{entry} in {json}");
    }
    drop((a, b, c));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_4xx_answers() {
    let backend = TestBackend::echo().await;
    let lb = start(service(&[backend.addr]));

    let (status, _, _) = get(lb.admin, "/nope").await;
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    let (status, headers, _) = raw_request(
        lb.admin,
        b"POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
    )
    .await;
    assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
    assert!(headers.contains("Allow: GET"));
    let (status, _, _) = raw_request(lb.admin, b"DELETE /status HTTP/1.1\r\n\r\n").await;
    assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
    for bad in [
        &b"garbage\r\n\r\n"[..],
        b"GET /metrics HTTP/9.9\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nNo colon here\r\n\r\n",
    ] {
        let (status, _, _) = raw_request(lb.admin, bad).await;
        assert_eq!(status, "HTTP/1.1 400 Bad Request", "{bad:?}");
    }
    let mut huge = b"GET /metrics HTTP/1.1\r\n".to_vec();
    while huge.len() < 20_000 {
        huge.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    huge.extend_from_slice(b"\r\n");
    let (status, _, _) = raw_request(lb.admin, &huge).await;
    assert_eq!(status, "HTTP/1.1 431 Request Header Fields Too Large");
    let mut long_line = b"GET /metrics HTTP/1.1\r\nX-Long: ".to_vec();
    long_line.resize(9_000, b'a');
    long_line.extend_from_slice(b"\r\n\r\n");
    let (status, _, _) = raw_request(lb.admin, &long_line).await;
    assert_eq!(status, "HTTP/1.1 431 Request Header Fields Too Large");
    // A query string does not change the route.
    let (status, _, _) = get(lb.admin, "/metrics?x=1").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    // Nothing above reached the balanced listener.
    assert_eq!(lb.service.stats.accepted.load(Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_never_finished_is_closed_without_an_answer() {
    let backend = TestBackend::echo().await;
    let lb = start(service(&[backend.addr]));
    let mut stream = TcpStream::connect(lb.admin).await.expect("connect admin");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: slow")
        .await
        .expect("send part of a request");
    let mut reply = Vec::new();
    let read = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut reply))
        .await
        .expect("the admin endpoint closes a stalled request");
    assert!(read.is_err() || reply.is_empty(), "got {reply:?}");
    // The endpoint still answers others.
    let (status, _, _) = get(lb.admin, "/status").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_address_in_use_is_a_start_up_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut config = Config::single(service(&[common::refusing_addr()]));
    config.admin = Some(taken.local_addr().unwrap());
    let error = Balancer::bind(config).err().expect("bind must fail");
    let text = format!("{error:#}");
    assert!(text.contains("admin"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_a_reload_and_keep_their_counts() {
    let backend = TestBackend::echo().await;
    let svc = service(&[backend.addr]);
    let lb = start(svc.clone());
    assert_eq!(echo_roundtrip(lb.addr, b"before").await, b"before");
    assert!(poll_until(PATIENCE, || lb.service.stats.active.load(Relaxed) == 0).await);

    // Keep the listener (same configured address) and add a second one.
    let mut config = Config::single(svc.clone());
    config.services.push(svc);
    config.admin = Some("127.0.0.1:0".parse().unwrap());
    lb.reload.apply(config).expect("reload");
    let addrs = lb.reload.local_addrs();
    assert_eq!(addrs[0], lb.addr);

    let (_, _, text) = get(lb.admin, "/metrics").await;
    let first = format!("listener=\"{0}\",listen=\"{0}\"", addrs[0]);
    let second = format!("listener=\"{0}\",listen=\"{0}\"", addrs[1]);
    assert_eq!(sample(&text, "tcplb_listener_accepted_total", &first), "1");
    assert_eq!(sample(&text, "tcplb_listener_accepted_total", &second), "0");
    let labels = format!("{first},backend=\"{}\"", backend.addr);
    assert_eq!(
        sample(&text, "tcplb_backend_sent_bytes_total", &labels),
        "6"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_heads_get_400() {
    let backend = TestBackend::echo().await;
    let lb = start(service(&[backend.addr]));
    // What the old hand-written parser rejected and hyper rejects too.
    for bad in [
        &b"GET\r\n\r\n"[..],
        b"GET /metrics\r\n\r\n",
        b"GET  /metrics HTTP/1.1\r\n\r\n",
        b"GET /metrics HTTP/1.1 extra\r\n\r\n",
        b"GET /met\x01rics HTTP/1.1\r\n\r\n",
        b"G(T /metrics HTTP/1.1\r\n\r\n",
        b"GET /metrics HTTP/2.0\r\n\r\n",
        b"GET /metrics http/1.1\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\n: empty name\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nBad Name: x\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nHost: a\x00b\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nHost: a\rb\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    ] {
        let (status, headers, body) = raw_request(lb.admin, bad).await;
        assert_eq!(
            status,
            "HTTP/1.1 400 Bad Request",
            "{:?}",
            String::from_utf8_lossy(bad)
        );
        assert!(headers.contains("Connection: close"), "{headers}");
        assert_eq!(body, "");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_gets_the_headers_without_a_body_and_http_1_0_is_answered_in_kind() {
    let backend = TestBackend::echo().await;
    let lb = start(service(&[backend.addr]));
    let reply = tokio::time::timeout(PATIENCE, async {
        let mut stream = TcpStream::connect(lb.admin).await.expect("connect admin");
        stream
            .write_all(b"HEAD /status HTTP/1.1\r\nHost: test\r\n\r\n")
            .await
            .expect("send request");
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).await.expect("read reply");
        String::from_utf8(reply).expect("reply is UTF-8")
    })
    .await
    .expect("admin reply timed out");
    let (head, body) = reply.split_once("\r\n\r\n").expect("a complete response");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("Content-Type: application/json"), "{head}");
    // A body of that length would follow a GET (the figures may move in
    // between, so only its presence is checked).
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .expect("Content-Length")
        .parse()
        .expect("a number");
    assert!(length > "{\"listeners\":[]}".len(), "{head}");
    assert_eq!(body, "");

    let (status, _, body) = raw_request(lb.admin, b"GET /status?pretty=1 HTTP/1.0\r\n\r\n").await;
    assert_eq!(status, "HTTP/1.0 200 OK");
    assert!(body.starts_with("{\"listeners\":[{"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_state_and_membership_changes_are_reported() {
    let backend = TestBackend::echo().await;
    let mut svc = service(&[backend.addr]);
    svc.health.interval = Duration::from_secs(3600);
    svc.backends[0].admin_state = AdminState::Drain;
    let lb = start(svc.clone());
    let listener = format!("listener=\"{0}\",listen=\"{0}\"", lb.addr);

    let (status, _, json) = get(lb.admin, "/status").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    let entry = format!(
        "{{\"name\":\"{0}\",\"address\":\"{0}\",\"up\":true,",
        backend.addr
    );
    assert!(json.contains(&entry), "{entry} in {json}");
    assert!(
        json.contains("\"admin_state\":\"drain\",\"health\":\"up\",\"ejected\":false,"),
        "{json}"
    );
    assert!(
        json.contains("\"backend_changes\":{\"added\":0,\"removed\":0,\"updated\":0}"),
        "{json}"
    );

    let (_, _, text) = get(lb.admin, "/metrics").await;
    for (state, value) in [("ready", "0"), ("drain", "1"), ("maintenance", "0")] {
        let labels = format!("{listener},backend=\"{}\",state=\"{state}\"", backend.addr);
        assert_eq!(sample(&text, "tcplb_backend_admin_state", &labels), value);
    }
    assert_eq!(
        sample(
            &text,
            "tcplb_backend_up",
            &format!("{listener},backend=\"{}\"", backend.addr)
        ),
        "1"
    );
    let change = |change: &str| format!("{listener},change=\"{change}\"");
    assert_eq!(
        sample(&text, "tcplb_pool_backend_changes_total", &change("added")),
        "0"
    );

    // A reload that adds a backend to the same listener.
    let other = TestBackend::echo().await;
    svc.backends.push(spec(other.addr, 1));
    let mut config = Config::single(svc);
    config.admin = Some("127.0.0.1:0".parse().unwrap());
    lb.reload.apply(config).expect("reload");
    assert_eq!(lb.reload.local_addrs()[0], lb.addr);

    let (_, _, text) = get(lb.admin, "/metrics").await;
    assert_eq!(
        sample(&text, "tcplb_pool_backend_changes_total", &change("added")),
        "1"
    );
    for kind in ["removed", "updated"] {
        assert_eq!(
            sample(&text, "tcplb_pool_backend_changes_total", &change(kind)),
            "0"
        );
    }
    let labels = format!("{listener},backend=\"{}\",state=\"ready\"", other.addr);
    assert_eq!(sample(&text, "tcplb_backend_admin_state", &labels), "1");
    let (_, _, json) = get(lb.admin, "/status").await;
    assert!(
        json.contains("\"backend_changes\":{\"added\":1,\"removed\":0,\"updated\":0}"),
        "{json}"
    );
}

/// Reads `stream` to its end within `within`: what it got, or `None` when it
/// was still open then.
async fn read_until_closed(mut stream: TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut reply = Vec::new();
    match tokio::time::timeout(within, stream.read_to_end(&mut reply)).await {
        Ok(_) => Some(reply),
        Err(_) => None,
    }
}

/// The `tcplb_admin_connections_dropped_total` count for `reason`.
fn dropped(metrics: &str, reason: &str) -> u64 {
    sample(
        metrics,
        "tcplb_admin_connections_dropped_total",
        &format!("reason=\"{reason}\""),
    )
    .parse()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_cannot_delay_metrics_and_are_closed() {
    const SILENT: usize = 200;
    let backend = TestBackend::echo().await;
    let lb = start(service(&[backend.addr]));
    let mut silent = Vec::new();
    for _ in 0..SILENT {
        silent.push(TcpStream::connect(lb.admin).await.expect("connect admin"));
    }
    let asked = std::time::Instant::now();
    let (status, _, metrics) = get(lb.admin, "/metrics").await;
    let took = asked.elapsed();
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        took < Duration::from_secs(1),
        "/metrics took {took:?} with {SILENT} silent connections open"
    );
    // The probes too, each in a slot a silent connection gave up.
    assert_eq!(get(lb.admin, "/live").await.0, "HTTP/1.1 200 OK");
    assert!(ready_within(lb.admin, Duration::from_secs(1)).await);
    // More silent connections than slots: the oldest made room at once.
    assert!(dropped(&metrics, "evicted") >= (SILENT - MAX_ADMIN_CONNECTIONS) as u64);

    // Every silent one is closed without a byte, by eviction or by the
    // head timeout, within the head timeout.
    let closing: Vec<_> = silent
        .into_iter()
        .map(|s| {
            tokio::spawn(read_until_closed(
                s,
                tcplb::admin::HEAD_TIMEOUT + Duration::from_secs(3),
            ))
        })
        .collect();
    for (i, closed) in closing.into_iter().enumerate() {
        let reply = closed.await.unwrap();
        assert_eq!(
            reply.as_deref(),
            Some(&b""[..]),
            "silent connection {i} still open or answered"
        );
    }
    let (_, _, metrics) = get(lb.admin, "/metrics").await;
    assert_eq!(
        dropped(&metrics, "evicted") + dropped(&metrics, "head_timeout"),
        SILENT as u64,
        "{metrics}"
    );
    assert_eq!(dropped(&metrics, "over_limit"), 0);
    let probes: usize = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tcplb_admin_connections_total "))
        .and_then(|n| n.parse().ok())
        .expect("tcplb_admin_connections_total");
    // The silent ones, two scrapes, /live, and /ready until it said 200.
    assert!(probes >= SILENT + 4, "{probes}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_slot_answers_probes_are_still_answered_and_the_rest_gets_a_503() {
    const SILENT: usize = 100;
    let backend = TestBackend::echo().await;
    let token = std::env::temp_dir().join(format!("tcplb-admin-token-{}", std::process::id()));
    std::fs::write(&token, "t0k").unwrap();
    let mut config = Config::single(service(&[backend.addr]));
    config.admin_token_file = Some(token.clone());
    let lb = start_config(config);
    let _ = std::fs::remove_file(&token);
    assert!(ready_within(lb.admin, PATIENCE).await, "never ready");
    // Clients whose heads are in and whose bodies never come: each holds
    // a slot while it is being answered, up to the body timeout.
    let mut busy = Vec::new();
    for _ in 0..MAX_ADMIN_CONNECTIONS {
        let mut stream = TcpStream::connect(lb.admin).await.expect("connect admin");
        stream
            .write_all(
                b"POST /api/v1/pools/p/backends/b/drain HTTP/1.1\r\nHost: t\r\n\
                  Authorization: Bearer t0k\r\nContent-Length: 10\r\n\r\n",
            )
            .await
            .expect("send a head");
        busy.push(stream);
    }
    // Once every head is in, a scrape finds no silent connection to evict:
    // it gets the probe lane, which answers it 503 at once. (A scrape that
    // comes earlier takes the slot of a client whose head was still on its
    // way: counted below.)
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut stream = TcpStream::connect(lb.admin).await.expect("connect admin");
        let _ = stream.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").await;
        let reply = read_until_closed(stream, PATIENCE)
            .await
            .unwrap_or_default();
        if reply.starts_with(b"HTTP/1.1 503 Service Unavailable") {
            assert!(String::from_utf8_lossy(&reply).contains("the admin endpoint is busy"));
            break;
        }
        assert!(reply.starts_with(b"HTTP/1.1 200 OK"));
        assert!(tokio::time::Instant::now() < deadline, "never busy");
    }
    // Silent connections on top: they crowd the probe lane, and each gives
    // its place to a newer one.
    let mut silent = Vec::new();
    for _ in 0..SILENT {
        silent.push(TcpStream::connect(lb.admin).await.expect("connect admin"));
    }
    // Probes are answered at once all the same; nothing else is.
    let started = tokio::time::Instant::now();
    let (status, _, body) = get(lb.admin, "/ready").await;
    assert_eq!(
        (status.as_str(), body.as_str()),
        ("HTTP/1.1 200 OK", "ready\n")
    );
    let (status, _, body) = get(lb.admin, "/live").await;
    assert_eq!(
        (status.as_str(), body.as_str()),
        ("HTTP/1.1 200 OK", "live\n")
    );
    let mut head = TcpStream::connect(lb.admin).await.expect("connect admin");
    head.write_all(b"HEAD /ready HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    let reply = read_until_closed(head, PATIENCE).await.unwrap_or_default();
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
    assert!(reply.ends_with("\r\n\r\n"), "HEAD has no body: {reply}");
    let (status, _, _) = get(lb.admin, "/status").await;
    assert_eq!(status, "HTTP/1.1 503 Service Unavailable");
    assert!(started.elapsed() < tcplb::admin::api::BODY_TIMEOUT / 2);

    // The slow bodies get 408 at the body timeout, and their slots come back.
    let mut timed_out = 0;
    for stream in busy {
        let reply = read_until_closed(stream, PATIENCE).await.expect("closed");
        let text = String::from_utf8_lossy(&reply);
        if !text.is_empty() {
            assert!(
                text.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
                "{text}"
            );
            timed_out += 1;
        }
    }
    drop(silent);
    let (status, _, metrics) = get(lb.admin, "/metrics").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(
        dropped(&metrics, "over_limit"),
        2,
        "the last scrape and /status, answered 503 on the probe lane"
    );
    let lane: usize = sample(&metrics, "tcplb_admin_connections_probe_lane_total", "")
        .parse()
        .unwrap();
    assert!(lane >= SILENT + 5, "{lane}");
    assert!(timed_out > 0);
    assert_eq!(
        sample(&metrics, "tcplb_admin_rejected_total", "reason=\"timeout\""),
        timed_out.to_string()
    );
}

/// Polls `/ready` until it answers 200 (true) or `within` passes.
async fn ready_within(admin: SocketAddr, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if get(admin, "/ready").await.0 == "HTTP/1.1 200 OK" {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_listener_is_its_name_everywhere_with_its_address_beside_it() {
    // The binary, with a name: /metrics, /status, the API's open
    // connections and the access log all say `listener` "web", and give
    // the bound address as `listen`.
    let backend = TestBackend::echo().await;
    let tcplb = common::spawn_tcplb(&[
        "--name",
        "web",
        "--backend",
        &backend.addr.to_string(),
        "--admin",
        "127.0.0.1:0",
        "--access-log",
        "stderr",
        "--access-log-format",
        "json",
    ]);
    let admin = tcplb.admin_addr().await;
    let listen = tcplb.addr.to_string();
    let mut open = TcpStream::connect(tcplb.addr).await.expect("connect");
    open.write_all(b"held").await.unwrap();
    let mut back = [0u8; 4];
    tokio::time::timeout(PATIENCE, open.read_exact(&mut back))
        .await
        .expect("no echo in time")
        .unwrap();

    let (_, _, text) = get(admin, "/metrics").await;
    let labelled: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains("listener="))
        .collect();
    assert!(labelled.len() > 50, "{text}");
    let named = format!("{{listener=\"web\",listen=\"{listen}\"");
    for line in &labelled {
        assert!(line.contains(&named), "{line}");
    }
    let labels = format!("listener=\"web\",listen=\"{listen}\"");
    assert_eq!(
        sample(&text, "tcplb_listener_active_connections", &labels),
        "1"
    );

    let (_, _, status) = get(admin, "/status").await;
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let listener = &status["listeners"][0];
    assert_eq!(
        (&listener["name"], &listener["listen"]),
        (&"web".into(), &listen.clone().into())
    );

    let (_, _, open_list) = get(admin, "/api/v1/connections").await;
    let open_list: serde_json::Value = serde_json::from_str(&open_list).unwrap();
    let connection = &open_list["connections"][0];
    assert_eq!(
        (&connection["listener"], &connection["listen"]),
        (&"web".into(), &listen.clone().into()),
        "{open_list}"
    );

    assert_eq!(common::finish(&mut open, b"").await, b"");
    let line = tcplb.process.line_with("\"cause\":\"completed\"").await;
    let record: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        (&record["listener"], &record["listen"]),
        (&"web".into(), &listen.into()),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_can_require_a_usable_backend() {
    let mut backend = TestBackend::echo().await;
    let mut listener = service(&[backend.addr]);
    listener.health.interval = Duration::from_millis(100);
    let mut config = Config::single(listener);
    config.ready_requires_backends = true;
    let lb = start_config(config);
    assert!(ready_within(lb.admin, PATIENCE).await, "never ready");

    // Its only backend down: this instance has nothing to offer.
    backend.kill().await;
    assert!(poll_until(PATIENCE, || !lb.service.pool.load().backends[0].is_up()).await);
    let (status, _, body) = get(lb.admin, "/ready").await;
    assert_eq!(status, "HTTP/1.1 503 Service Unavailable");
    assert_eq!(body, "not ready: no listener has a usable backend\n");
    let (_, _, metrics) = get(lb.admin, "/metrics").await;
    assert_eq!(sample(&metrics, "tcplb_ready", ""), "0");
    assert_eq!(
        sample(&metrics, "tcplb_not_ready", "reason=\"no_usable_backend\""),
        "1"
    );
    // /live does not care.
    assert_eq!(get(lb.admin, "/live").await.0, "HTTP/1.1 200 OK");

    // Back up: ready again.
    backend.revive().await;
    assert!(ready_within(lb.admin, PATIENCE).await, "not ready again");
    // A reload that drops the setting: ready whatever the backends say.
    backend.kill().await;
    assert!(poll_until(PATIENCE, || !lb.service.pool.load().backends[0].is_up()).await);
    let mut without = Config::single(lb.service.pool.load().config.clone());
    without.admin = Some(lb.admin);
    without.drain_timeout = Duration::from_secs(1);
    lb.reload.apply(without).expect("reload");
    assert_eq!(get(lb.admin, "/ready").await.2, "ready\n");
}
