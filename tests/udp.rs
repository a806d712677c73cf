//! UDP listeners (issue 25) with real clients and servers: `dig` through
//! tcplb to a real dnsmasq, `logger --udp` to a collector, datagram echo
//! backends; sessions and their affinity, replies from the address the
//! client sent to, `responses`, idle expiry, many sessions byte-exact,
//! backend failure and ICMP port unreachable, drain and reload with live
//! sessions, PROXY v2 on datagrams, and bad input (empty, 65,507 bytes,
//! too large, a flood against the per-IP limits). Through a real tcplb
//! and `tcplb ctl`: an IPv6 (and dual-stack) wildcard listener, drain and
//! weights on a UDP pool, and SRV discovery against a real dnsmasq.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tcplb::config::{
    AccessLogConfig, AccessLogFormat, AccessLogTarget, AdminState, Config, Protocol, ProxyVersion,
    ServiceConfig, StrategyKind,
};
use tcplb::runtime::Balancer;
use tcplb::stats::Dropped;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use common::{PATIENCE, Pattern, TempDir, poll_until, spawn_tcplb};

/// A UDP backend: answers every datagram with `tag` and the datagram
/// (just the datagram without a tag), and remembers what it got.
struct Echo {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Vec<u8>>>>,
    task: JoinHandle<()>,
}

impl Echo {
    async fn start(tag: &str) -> Echo {
        Self::on("127.0.0.1:0", tag).await
    }

    async fn on(addr: &str, tag: &str) -> Echo {
        let socket = UdpSocket::bind(addr).await.unwrap();
        let addr = socket.local_addr().unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let seen = got.clone();
        let tag = tag.as_bytes().to_vec();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 70_000];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                seen.lock().unwrap().push(buf[..n].to_vec());
                let reply = [&tag[..], &buf[..n]].concat();
                let _ = socket.send_to(&reply, from).await;
            }
        });
        Echo { addr, got, task }
    }

    /// Closes its socket: datagrams to it now get an ICMP port unreachable.
    async fn kill(mut self) -> SocketAddr {
        self.task.abort();
        let _ = (&mut self.task).await;
        self.addr
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A UDP service over `backends`, no probes (health moves only by what
/// the test does) unless it says otherwise.
fn udp_service(backends: &[SocketAddr]) -> ServiceConfig {
    let mut service = common::service(backends);
    service.protocol = Protocol::Udp;
    service.health.interval = Duration::from_secs(3600);
    service
}

struct Lb {
    addr: SocketAddr,
    balancer_service: Arc<tcplb::proxy::Service>,
    reload: tcplb::runtime::ReloadHandle,
    shutdown: CancellationToken,
}

impl Drop for Lb {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn start(service: ServiceConfig) -> Lb {
    let mut config = Config::single(service);
    config.drain_timeout = Duration::from_secs(1);
    start_config(config)
}

fn start_config(config: Config) -> Lb {
    let balancer = Balancer::bind(config).expect("bind balancer");
    let lb = Lb {
        addr: balancer.local_addrs()[0],
        balancer_service: balancer.services()[0].clone(),
        reload: balancer.reload_handle(),
        shutdown: balancer.shutdown_token(),
    };
    tokio::spawn(balancer.run());
    lb
}

impl Lb {
    fn active(&self) -> u64 {
        self.balancer_service.stats.active.load(Relaxed)
    }

    fn dropped(&self, why: Dropped) -> u64 {
        self.balancer_service.stats.udp.dropped[why as usize].load(Relaxed)
    }
}

/// A client socket on `from`, connected to `to`: it only hears replies
/// that come from `to` exactly.
async fn client_on(from: &str, to: SocketAddr) -> UdpSocket {
    let socket = UdpSocket::bind(from).await.unwrap();
    socket.connect(to).await.unwrap();
    socket
}

async fn client(to: SocketAddr) -> UdpSocket {
    client_on("127.0.0.1:0", to).await
}

/// Sends `data` and waits (up to [`PATIENCE`]) for one reply.
async fn ask(socket: &UdpSocket, data: &[u8]) -> Vec<u8> {
    socket.send(data).await.unwrap();
    reply(socket, PATIENCE).await.expect("a reply")
}

async fn reply(socket: &UdpSocket, wait: Duration) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 70_000];
    match tokio::time::timeout(wait, socket.recv(&mut buf)).await {
        Ok(Ok(n)) => Some(buf[..n].to_vec()),
        _ => None,
    }
}

/// Sends `data` until a reply comes (a datagram may be lost to an ICMP
/// error, as UDP goes), at most 20 times.
async fn ask_until_answered(socket: &UdpSocket, data: &[u8]) -> Vec<u8> {
    for _ in 0..20 {
        socket.send(data).await.unwrap();
        if let Some(reply) = reply(socket, Duration::from_millis(500)).await {
            return reply;
        }
    }
    panic!("no reply to {} datagrams", 20);
}

#[tokio::test]
async fn a_session_stays_on_its_backend_and_sessions_spread() {
    let (a, b) = (Echo::start("a:").await, Echo::start("b:").await);
    let lb = start(udp_service(&[a.addr, b.addr]));
    let first = client(lb.addr).await;
    let second = client(lb.addr).await;
    let one = ask(&first, b"1").await;
    let two = ask(&second, b"1").await;
    assert_ne!(
        one[..2],
        two[..2],
        "round robin: two sessions, two backends"
    );
    for i in 0..20 {
        let n = format!("{i}");
        assert_eq!(ask(&first, n.as_bytes()).await[..2], one[..2]);
        assert_eq!(ask(&second, n.as_bytes()).await[..2], two[..2]);
    }
    assert_eq!(lb.active(), 2);
    // Every datagram of a session went to one backend (the empty one is
    // the UDP health check's).
    let got = |e: &Echo| {
        e.got
            .lock()
            .unwrap()
            .iter()
            .filter(|d| !d.is_empty())
            .count()
    };
    assert_eq!((got(&a), got(&b)), (21, 21));
}

#[tokio::test]
async fn hash_keeps_every_session_of_a_client_address_on_one_backend() {
    let echoes = [
        Echo::start("a:").await,
        Echo::start("b:").await,
        Echo::start("c:").await,
    ];
    let addrs: Vec<SocketAddr> = echoes.iter().map(|e| e.addr).collect();
    for strategy in [StrategyKind::Hash, StrategyKind::Maglev] {
        let mut service = udp_service(&addrs);
        service.strategy = strategy;
        let lb = start(service);
        let mut tags = Vec::new();
        for _ in 0..8 {
            let c = client(lb.addr).await;
            tags.push(ask(&c, b"x").await[..2].to_vec());
        }
        assert!(
            tags.windows(2).all(|w| w[0] == w[1]),
            "{strategy:?}: {tags:?}"
        );
        // Another address may land elsewhere, but always on one backend.
        let mut other = Vec::new();
        for _ in 0..4 {
            let c = client_on("127.0.0.2:0", lb.addr).await;
            other.push(ask(&c, b"x").await[..2].to_vec());
        }
        assert!(
            other.windows(2).all(|w| w[0] == w[1]),
            "{strategy:?}: {other:?}"
        );
    }
}

#[tokio::test]
async fn per_datagram_spreads_one_clients_datagrams() {
    let (a, b) = (Echo::start("a:").await, Echo::start("b:").await);
    let mut service = udp_service(&[a.addr, b.addr]);
    service.udp.per_datagram = true;
    let lb = start(service);
    let c = client(lb.addr).await;
    let mut tags = std::collections::BTreeSet::new();
    for i in 0..10 {
        let reply = ask(&c, format!("{i}").as_bytes()).await;
        tags.insert(reply[..2].to_vec());
    }
    assert_eq!(tags.len(), 2, "one client port, both backends");
    assert_eq!(lb.active(), 1, "still one session");
}

#[tokio::test]
async fn a_wildcard_listener_replies_from_the_address_the_client_sent_to() {
    let echo = Echo::start("").await;
    let mut service = udp_service(&[echo.addr]);
    service.listen = "0.0.0.0:0".parse().unwrap();
    let lb = start_config({
        let mut c = Config::single(service);
        c.drain_timeout = Duration::from_secs(1);
        c
    });
    let port = lb.addr.port();
    for local in ["127.0.0.1", "127.0.0.2", "127.0.0.3"] {
        let to: SocketAddr = format!("{local}:{port}").parse().unwrap();
        // Connected: a reply from any other address is not heard.
        let c = client(to).await;
        assert_eq!(ask(&c, local.as_bytes()).await, local.as_bytes());
    }
    // Three sessions: one per local address.
    assert_eq!(lb.active(), 3);
}

#[tokio::test]
async fn responses_end_a_session_at_its_reply_and_idle_ones_expire() {
    let echo = Echo::start("").await;
    let mut service = udp_service(&[echo.addr]);
    service.udp.responses = Some(1);
    let lb = start(service);
    let c = client(lb.addr).await;
    for i in 0..3 {
        assert_eq!(ask(&c, &[i]).await, [i]);
        assert!(
            poll_until(PATIENCE, || lb.active() == 0).await,
            "ended at its reply"
        );
    }
    assert_eq!(lb.balancer_service.stats.accepted.load(Relaxed), 3);

    let mut service = udp_service(&[echo.addr]);
    service.idle_timeout = Some(Duration::from_millis(600));
    let lb = start(service);
    let c = client(lb.addr).await;
    assert_eq!(ask(&c, b"x").await, b"x");
    assert_eq!(lb.active(), 1);
    assert!(poll_until(PATIENCE, || lb.active() == 0).await, "idled out");
    let backend = &lb.balancer_service.pool.load().backends[0];
    assert_eq!(backend.stats.idle_timeouts.load(Relaxed), 1);
}

#[tokio::test]
async fn a_thousand_concurrent_sessions_get_their_own_bytes_back() {
    let (a, b) = (Echo::start("").await, Echo::start("").await);
    let lb = start(udp_service(&[a.addr, b.addr]));
    let mut clients = Vec::new();
    for i in 0..1000u64 {
        let socket = client(lb.addr).await;
        clients.push((socket, Pattern::bytes(i, 64 + (i as usize % 1000))));
    }
    for (socket, data) in &clients {
        socket.send(data).await.unwrap();
    }
    let mut tasks = Vec::new();
    for (socket, data) in clients {
        tasks.push(tokio::spawn(async move {
            // Lost datagrams (a full buffer) are sent again, a few times.
            for _ in 0..5 {
                if let Some(got) = reply(&socket, Duration::from_secs(4)).await {
                    return got == data;
                }
                socket.send(&data).await.unwrap();
            }
            false
        }));
    }
    let mut exact = 0;
    for task in tasks {
        exact += usize::from(task.await.unwrap());
    }
    assert_eq!(exact, 1000);
    assert_eq!(lb.active(), 1000);
}

#[tokio::test]
async fn a_backend_that_stops_answering_with_icmp_loses_its_sessions_to_another() {
    let (a, b) = (Echo::start("a:").await, Echo::start("b:").await);
    let mut service = udp_service(&[a.addr, b.addr]);
    service.max_fails = 1;
    let lb = start(service);
    let (first, second) = (client(lb.addr).await, client(lb.addr).await);
    let one = ask(&first, b"1").await;
    let two = ask(&second, b"1").await;
    let (on_a, _) = if one.starts_with(b"a:") {
        (first, second)
    } else {
        assert!(two.starts_with(b"a:"));
        (second, first)
    };
    a.kill().await;
    // The next datagram gets the port unreachable; one after it goes to b.
    let answer = ask_until_answered(&on_a, b"again").await;
    assert_eq!(answer, b"b:again");
    let backend = &lb.balancer_service.pool.load().backends[0];
    assert!(backend.stats.connect_failures.load(Relaxed) >= 1);
    assert!(
        backend.is_failing() || !backend.is_up(),
        "a passive failure"
    );
}

#[tokio::test]
async fn a_udp_health_check_finds_a_closed_port_down() {
    let a = Echo::start("a:").await;
    let closed = Echo::start("").await.kill().await;
    let mut service = udp_service(&[closed, a.addr]);
    service.health.interval = Duration::from_millis(200);
    let lb = start(service);
    let pool = lb.balancer_service.pool.clone();
    assert!(poll_until(PATIENCE, || !pool.load().backends[0].is_up()).await);
    assert!(pool.load().backends[1].is_up());
    for _ in 0..4 {
        let c = client(lb.addr).await;
        assert_eq!(ask(&c, b"x").await, b"a:x");
    }
}

#[tokio::test]
async fn drain_and_reload_keep_live_sessions() {
    let (a, b) = (Echo::start("a:").await, Echo::start("b:").await);
    let service = udp_service(&[a.addr]);
    let lb = start(service.clone());
    let live = client(lb.addr).await;
    assert_eq!(ask(&live, b"1").await, b"a:1");

    // A reload adds b and drains a: the live session stays on a...
    let mut reloaded = service.clone();
    reloaded.backends = vec![common::spec(a.addr, 1), common::spec(b.addr, 1)];
    reloaded.backends[0].admin_state = AdminState::Drain;
    reloaded.listen = lb.addr;
    let mut config = Config::single(reloaded);
    config.drain_timeout = Duration::from_secs(1);
    // The reload matches the listener by its configured address.
    config.services[0].listen = "127.0.0.1:0".parse().unwrap();
    lb.reload.apply(config).expect("reload");
    for i in 0..5 {
        let n = format!("{i}");
        assert_eq!(ask(&live, n.as_bytes()).await, format!("a:{n}").as_bytes());
    }
    // ...and new sessions go to b.
    for _ in 0..3 {
        let c = client(lb.addr).await;
        assert_eq!(ask(&c, b"new").await, b"b:new");
    }
}

#[tokio::test]
async fn send_proxy_v2_prefixes_every_datagram_with_a_dgram_header() {
    let raw = Echo::start("").await;
    let mut service = udp_service(&[raw.addr]);
    service.send_proxy = Some(ProxyVersion::V2);
    let lb = start(service);
    let c = client(lb.addr).await;
    let from = c.local_addr().unwrap();
    for payload in [&b"first"[..], b"", b"third"] {
        c.send(payload).await.unwrap();
        reply(&c, PATIENCE).await.expect("a reply");
    }
    // Without the health check's datagram, which carries no header.
    let got: Vec<Vec<u8>> = raw
        .got
        .lock()
        .unwrap()
        .iter()
        .filter(|d| d.starts_with(b"\r\n"))
        .cloned()
        .collect();
    assert_eq!(got.len(), 3);
    for (datagram, payload) in got.iter().zip([&b"first"[..], b"", b"third"]) {
        assert_eq!(&datagram[..12], b"\r\n\r\n\0\r\nQUIT\n");
        assert_eq!(datagram[12], 0x21, "version 2, PROXY");
        assert_eq!(datagram[13], 0x12, "AF_INET, DGRAM");
        assert_eq!(u16::from_be_bytes([datagram[14], datagram[15]]), 12);
        assert_eq!(datagram[16..20], [127, 0, 0, 1]);
        assert_eq!(datagram[20..24], [127, 0, 0, 1]);
        assert_eq!(
            u16::from_be_bytes([datagram[24], datagram[25]]),
            from.port()
        );
        assert_eq!(
            u16::from_be_bytes([datagram[26], datagram[27]]),
            lb.addr.port()
        );
        assert_eq!(&datagram[28..], payload);
    }
}

#[tokio::test]
async fn empty_and_largest_datagrams_pass_whole_and_larger_ones_are_dropped() {
    let echo = Echo::start("").await;
    let lb = start(udp_service(&[echo.addr]));
    let c = client(lb.addr).await;
    assert_eq!(ask(&c, b"").await, b"");
    let largest = Pattern::bytes(7, 65_507);
    assert_eq!(ask(&c, &largest).await, largest);

    let mut service = udp_service(&[echo.addr]);
    service.udp.max_datagram_size = 1000;
    let lb = start(service);
    let c = client(lb.addr).await;
    let fits = Pattern::bytes(8, 1000);
    assert_eq!(ask(&c, &fits).await, fits);
    c.send(&Pattern::bytes(9, 1001)).await.unwrap();
    assert!(poll_until(PATIENCE, || lb.dropped(Dropped::TooLarge) == 1).await);
    assert_eq!(reply(&c, Duration::from_millis(300)).await, None);
    assert_eq!(ask(&c, b"still served").await, b"still served");
}

#[tokio::test]
async fn a_flood_from_one_address_is_limited_while_others_are_served() {
    let echo = Echo::start("").await;
    let mut service = udp_service(&[echo.addr]);
    service.udp.datagram_rate_per_ip = Some(50.0);
    service.udp.max_sessions_per_ip = Some(4);
    let lb = start(service);
    // More sessions from one address than allowed: two are refused.
    let mut extra = Vec::new();
    for _ in 0..6 {
        let c = client_on("127.0.0.3:0", lb.addr).await;
        c.send(b"more").await.unwrap();
        extra.push(c);
    }
    assert!(poll_until(PATIENCE, || lb.dropped(Dropped::PerIpSessions) == 2).await);
    // 2,000 datagrams as fast as one socket sends them, in a session
    // that was admitted: one that had its echo (which four were is the
    // workers' order, not the clients').
    let mut admitted = None;
    for (i, c) in extra.iter().enumerate() {
        if reply(c, Duration::from_secs(2)).await.as_deref() == Some(b"more") {
            admitted = Some(i);
            break;
        }
    }
    let flooder = extra.remove(admitted.expect("no admitted session answered"));
    let flood = tokio::spawn(async move {
        for i in 0..2000u32 {
            let _ = flooder.send(&i.to_be_bytes()).await;
        }
        flooder
    });
    let _flooder = flood.await.unwrap();
    // Another address keeps being answered.
    let other = client_on("127.0.0.4:0", lb.addr).await;
    for i in 0..10u8 {
        assert_eq!(ask(&other, &[i]).await, [i]);
    }
    assert!(
        lb.dropped(Dropped::PerIpRate) > 1000,
        "{}",
        lb.dropped(Dropped::PerIpRate)
    );
    let forwarded = echo
        .got
        .lock()
        .unwrap()
        .iter()
        .filter(|d| d.len() == 4 && d[..] != b"more"[..])
        .count();
    assert!(
        forwarded <= 200,
        "the flood was limited: {forwarded} forwarded"
    );
}

#[tokio::test]
async fn one_access_log_record_per_session() {
    let echo = Echo::start("").await;
    let dir = TempDir::new("udp-access-log");
    let log = dir.path("access.log");
    let mut service = udp_service(&[echo.addr]);
    service.listen = "127.0.0.1:0".parse().unwrap();
    service.udp.responses = Some(1);
    let mut config = Config::single(service);
    config.drain_timeout = Duration::from_secs(1);
    config.access_log = AccessLogConfig {
        target: AccessLogTarget::File(log.clone()),
        format: AccessLogFormat::Json,
    };
    let lb = start_config(config);
    let c = client(lb.addr).await;
    assert_eq!(ask(&c, b"hello").await, b"hello");
    assert_eq!(ask(&c, b"again!").await, b"again!");
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        poll_until(PATIENCE, || read().lines().count() == 2).await,
        "{}",
        read()
    );
    let lines: Vec<serde_json::Value> = read()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["cause"], "completed");
    assert_eq!(lines[0]["sent"], 5, "{}", lines[0]);
    assert_eq!(lines[1]["received"], 6, "{}", lines[1]);
    assert_eq!(lines[0]["backend"], echo.addr.to_string());
}

/// A real dnsmasq answering `example.test` on a loopback port.
fn dnsmasq() -> (common::Process, SocketAddr) {
    let port = free_dns_port();
    let process = dnsmasq_on(port, &["--address=/example.test/192.0.2.53"]);
    (process, format!("127.0.0.1:{port}").parse().unwrap())
}

/// A loopback port free right now for UDP and TCP both, for a DNS server
/// to bind (`common::free_port` is free for TCP only, and this process
/// holds many UDP ports).
fn free_dns_port() -> u16 {
    for _ in 0..100 {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no loopback port free for both UDP and TCP");
}

/// A real dnsmasq on 127.0.0.1:`port` answering with `records` (its
/// `--address` and `--host-record` options), TTL 0.
fn dnsmasq_on(port: u16, records: &[&str]) -> common::Process {
    let program = common::server_program("dnsmasq", "dnsmasq");
    let port = format!("--port={port}");
    let mut args = vec![
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--bind-interfaces",
        "--listen-address=127.0.0.1",
        &port,
        "--pid-file=",
        "--user=nobody",
        "--log-facility=-",
    ];
    args.extend(records);
    common::spawn_unprivileged(&program, &args)
}

fn dig(server: SocketAddr, name: &str) -> String {
    dig_type(server, name, "A")
}

fn dig_srv(server: SocketAddr, name: &str) -> String {
    dig_type(server, name, "SRV")
}

/// `dig +short` for `name`'s `rtype` records.
fn dig_type(server: SocketAddr, name: &str, rtype: &str) -> String {
    let out = Command::new("dig")
        .args([
            rtype,
            &format!("@{}", server.ip()),
            "-p",
            &server.port().to_string(),
            name,
            "+short",
            "+tries=3",
            "+time=2",
        ])
        .output()
        .expect("run dig (Debian's bind9-dnsutils)");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test]
async fn dig_gets_answers_from_a_real_dnsmasq_through_tcplb() {
    let (_dnsmasq, dns) = dnsmasq();
    let mut ready = false;
    for _ in 0..100 {
        if dig(dns, "example.test") == "192.0.2.53" {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "dnsmasq did not answer");
    let dns_arg = dns.to_string();
    let tcplb = spawn_tcplb(&[
        "--protocol",
        "udp",
        "--responses",
        "1",
        "--backend",
        &dns_arg,
        "--admin",
        "127.0.0.1:0",
    ]);
    for _ in 0..5 {
        assert_eq!(dig(tcplb.addr, "example.test"), "192.0.2.53");
    }
    let admin = tcplb.admin_addr().await;
    let metrics = common::raw_exchange(
        admin,
        "GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n",
    )
    .await;
    let sessions = metrics
        .lines()
        .find(|l| l.starts_with("tcplb_listener_active_connections{"))
        .unwrap_or_default()
        .to_string();
    assert!(
        sessions.ends_with(" 0"),
        "responses = 1 ends each: {sessions}"
    );
    assert!(
        metrics.contains(&format!(
            "tcplb_udp_datagrams_total{{listener=\"udp:{}\",listen=\"{}\",direction=\"to_client\"}} 5",
            tcplb.addr, tcplb.addr
        )),
        "{metrics}"
    );
}

#[tokio::test]
async fn logger_lines_reach_a_udp_collector_through_tcplb() {
    let collector = Echo::start("").await;
    let collector_arg = collector.addr.to_string();
    let tcplb = spawn_tcplb(&[
        "--protocol",
        "udp",
        "--responses",
        "0",
        "--backend",
        &collector_arg,
    ]);
    for i in 0..3 {
        let status = Command::new("logger")
            .args([
                "--udp",
                "-n",
                &tcplb.addr.ip().to_string(),
                "-P",
                &tcplb.addr.port().to_string(),
                "-t",
                "tcplb-test",
                &format!("line {i} through tcplb"),
            ])
            .status()
            .expect("run logger (Debian's bsdutils)");
        assert!(status.success());
    }
    let got = || {
        collector
            .got
            .lock()
            .unwrap()
            .iter()
            .map(|d| String::from_utf8_lossy(d).to_string())
            .collect::<Vec<String>>()
    };
    assert!(
        poll_until(PATIENCE, || got().len() >= 3).await,
        "{:?}",
        got()
    );
    for i in 0..3 {
        let wanted = format!("line {i} through tcplb");
        assert!(
            got()
                .iter()
                .any(|l| l.contains("tcplb-test") && l.ends_with(&wanted)),
            "{:?}",
            got()
        );
    }
}

#[tokio::test]
async fn an_operator_closes_a_session_and_a_drain_deadline_evicts_one() {
    let echo = Echo::start("").await;
    let lb = start(udp_service(&[echo.addr]));
    let c = client(lb.addr).await;
    assert_eq!(ask(&c, b"x").await, b"x");
    // What the control API's close does: the registry lists the session
    // and its stop request ends it.
    let registry = &lb.balancer_service.connections;
    let open = registry.matching(&tcplb::proxy::connections::Filter::default());
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].client, c.local_addr().unwrap());
    open[0].live.stop();
    assert!(poll_until(PATIENCE, || lb.active() == 0).await, "closed");
    assert!(registry.is_empty());
    // The client's next datagram is a new session; an operator's drain
    // deadline (evict) ends it too.
    assert_eq!(ask(&c, b"y").await, b"y");
    assert_eq!(lb.active(), 1);
    let backend = lb.balancer_service.pool.load().backends[0].clone();
    backend.evict();
    assert!(poll_until(PATIENCE, || lb.active() == 0).await, "evicted");
    assert_eq!(backend.stats.evicted.load(Relaxed), 1);
}

/// A real `tcplb --protocol udp` on `listen`, with `args`, its admin
/// socket in `dir` (no token needed there); waits for the socket.
async fn udp_tcplb(dir: &TempDir, listen: &str, args: &[&str]) -> common::TcplbProcess {
    let mut command = Command::new(common::tcplb_bin());
    command
        .args(["--listen", listen, "--protocol", "udp"])
        .args(["--admin-socket", &dir.arg("admin.sock")])
        .args(args);
    let tcplb = common::wait_listening(common::spawn_process(command));
    let socket = dir.path("admin.sock");
    assert!(
        poll_until(PATIENCE, || socket.exists()).await,
        "no admin socket:\n{}",
        tcplb.process.stderr_text()
    );
    tcplb
}

/// Runs `tcplb ctl --admin unix:SOCKET ARGS` and wants it to succeed.
async fn ctl_ok(dir: &TempDir, args: &[&str]) -> String {
    let mut all = vec![
        "--admin".to_string(),
        format!("unix:{}", dir.arg("admin.sock")),
    ];
    all.extend(args.iter().map(|a| a.to_string()));
    let out = common::ctl(all).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ctl {args:?}: {stderr}");
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[tokio::test]
async fn an_ipv6_wildcard_listener_replies_from_loopback_and_to_ipv4_clients() {
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("SKIPPED: this machine has no ::1");
        return;
    }
    let echo = Echo::start("").await;
    let dir = TempDir::new("udp-v6");
    let tcplb = udp_tcplb(&dir, "[::]:0", &["--backend", &echo.addr.to_string()]).await;
    assert!(tcplb.addr.ip().is_unspecified() && tcplb.addr.is_ipv6());
    let port = tcplb.addr.port();
    // Connected to [::1]: a reply from any other source is not heard.
    let six = client_on("[::1]:0", format!("[::1]:{port}").parse().unwrap()).await;
    for i in 0..3 {
        let data = format!("six {i}");
        assert_eq!(ask(&six, data.as_bytes()).await, data.as_bytes());
    }
    // `[::]` is dual-stack where the host's default is (Linux's
    // net.ipv6.bindv6only = 0): IPv4 clients are answered from the IPv4
    // address they sent to, the second loopback address as the first.
    let v6only = std::fs::read_to_string("/proc/sys/net/ipv6/bindv6only").unwrap_or_default();
    if v6only.trim() != "0" {
        eprintln!("SKIPPED the IPv4 half: net.ipv6.bindv6only = {v6only}");
        return;
    }
    for local in ["127.0.0.1", "127.0.0.2"] {
        let four = client(format!("{local}:{port}").parse().unwrap()).await;
        assert_eq!(ask(&four, local.as_bytes()).await, local.as_bytes());
    }
    assert_eq!(
        echo.got
            .lock()
            .unwrap()
            .iter()
            .filter(|d| !d.is_empty())
            .count(),
        5
    );
}

/// Two tagged echo backends behind a real tcplb whose pool is `dns`,
/// idle sessions ending after `idle`.
async fn two_backend_tcplb(
    dir: &TempDir,
    idle: &str,
    extra: &[&str],
) -> (Echo, Echo, common::TcplbProcess) {
    let (a, b) = (Echo::start("a:").await, Echo::start("b:").await);
    let backends = format!("{},{}", a.addr, b.addr);
    let mut args = vec!["--name", "dns", "--backend", &backends];
    args.extend(["--idle-timeout", idle, "--health-interval", "1h"]);
    args.extend(extra);
    let tcplb = udp_tcplb(dir, "127.0.0.1:0", &args).await;
    (a, b, tcplb)
}

/// The backend (its tag, `a` or `b`) a new session from a new client
/// port lands on; the client, to keep its session open.
async fn new_session(lb: SocketAddr) -> (u8, UdpSocket) {
    let c = client(lb).await;
    let answer = ask(&c, b"x").await;
    (answer[0], c)
}

#[tokio::test]
async fn ctl_drain_on_a_udp_pool_keeps_the_live_session_and_sends_new_ones_elsewhere() {
    let dir = TempDir::new("udp-drain");
    let (a, b, tcplb) = two_backend_tcplb(&dir, "3s", &[]).await;
    let live = client(tcplb.addr).await;
    let first = ask(&live, b"0").await;
    let (kept, other, drained) = match first[0] {
        b'a' => (b'a', b'b', a.addr),
        _ => (b'b', b'a', b.addr),
    };
    ctl_ok(&dir, &["drain", "dns", &drained.to_string()]).await;
    for i in 1..6 {
        let n = format!("{i}");
        assert_eq!(
            ask(&live, n.as_bytes()).await[0],
            kept,
            "the live session stays"
        );
    }
    let mut sessions = Vec::new();
    for _ in 0..6 {
        let (tag, c) = new_session(tcplb.addr).await;
        assert_eq!(tag, other, "a new session avoids the draining backend");
        sessions.push(c);
    }
    // The live session ends at its idle timeout: the drained backend has
    // no session left, and the client's next datagram goes elsewhere.
    let active_on_drained = || {
        let dir = dir.arg("admin.sock");
        let drained = drained.to_string();
        async move {
            let out = common::ctl(
                [
                    "--admin",
                    &format!("unix:{dir}"),
                    "--json",
                    "backends",
                    "dns",
                ]
                .map(String::from)
                .to_vec(),
            )
            .await;
            let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let backends = json["backends"].as_array().unwrap().clone();
            let b = backends
                .iter()
                .find(|b| b["name"] == drained.as_str())
                .unwrap();
            assert_eq!(b["admin_state"], "drain");
            b["active"].as_u64().unwrap()
        }
    };
    assert_eq!(active_on_drained().await, 1);
    let mut ended = false;
    for _ in 0..100 {
        if active_on_drained().await == 0 {
            ended = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ended, "the live session ended at its idle timeout");
    assert_eq!(ask(&live, b"after").await[0], other);
}

#[tokio::test]
async fn ctl_weight_on_a_udp_pool_moves_the_share_of_new_sessions() {
    let dir = TempDir::new("udp-weight");
    let (a, _b, tcplb) = two_backend_tcplb(&dir, "60s", &[]).await;
    let count_a = |n: usize| async move {
        let mut on_a = 0;
        let mut open = Vec::new();
        for _ in 0..n {
            let (tag, c) = new_session(tcplb.addr).await;
            on_a += usize::from(tag == b'a');
            open.push(c);
        }
        on_a
    };
    let even = count_a(40).await;
    assert!(
        (17..=23).contains(&even),
        "1:1 gives a about 20 of 40: {even}"
    );
    let changed = ctl_ok(&dir, &["weight", "dns", &a.addr.to_string(), "3"]).await;
    assert!(changed.contains("weight 1 -> 3"), "{changed}");
    let weighted = count_a(40).await;
    assert!(
        (27..=33).contains(&weighted),
        "3:1 gives a about 30 of 40: {weighted}"
    );
}

/// Waits (up to 10 s) until `dns` has `want` SRV records for the test's
/// name.
async fn srv_answers(dns: SocketAddr, want: usize) -> bool {
    for _ in 0..100 {
        if dig_srv(dns, "_echo._udp.pool.test").lines().count() == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn a_udp_pool_follows_an_srv_name_in_a_real_dnsmasq() {
    let a = Echo::on("127.0.0.2:0", "a:").await;
    let b = Echo::on("127.0.0.3:0", "b:").await;
    let srv = |e: &Echo, host: &str| {
        let port = e.addr.port();
        [
            format!("--srv-host=_echo._udp.pool.test,{host}.pool.test,{port},10,1"),
            format!("--host-record={host}.pool.test,{}", e.addr.ip()),
        ]
    };
    let records = [srv(&a, "a"), srv(&b, "b")].concat();
    let records: Vec<&str> = records.iter().map(String::as_str).collect();
    let dns_port = free_dns_port();
    let dnsmasq = dnsmasq_on(dns_port, &records);
    let dns: SocketAddr = format!("127.0.0.1:{dns_port}").parse().unwrap();
    assert!(
        srv_answers(dns, 2).await,
        "dnsmasq did not answer: {}",
        dnsmasq.stderr_text()
    );
    let dir = TempDir::new("udp-discovery");
    let (name, resolver) = ("srv:_echo._udp.pool.test", dns.to_string());
    let args = ["--name", "dns", "--backend", name, "--resolver", &resolver];
    let more = ["--resolve-interval", "1s", "--health-interval", "1h"];
    let tcplb = udp_tcplb(&dir, "127.0.0.1:0", &[&args[..], &more].concat()).await;

    // Both targets are members: sessions go to each.
    let mut seen = Vec::new();
    let mut on_a = None;
    for _ in 0..10 {
        let (tag, c) = new_session(tcplb.addr).await;
        if tag == b'a' && on_a.is_none() {
            on_a = Some(c);
        }
        seen.push(tag);
    }
    assert!(seen.contains(&b'a') && seen.contains(&b'b'), "{seen:?}");
    let live = on_a.unwrap();

    // The name now has one member: a leaves the pool, draining.
    drop(dnsmasq);
    let _dnsmasq = dnsmasq_on(dns_port, &records[2..]);
    assert!(srv_answers(dns, 1).await, "dnsmasq did not restart");
    let gone = a.addr.to_string();
    let mut left = false;
    for _ in 0..100 {
        let listed = ctl_ok(&dir, &["--json", "backends", "dns"]).await;
        let json: serde_json::Value = serde_json::from_str(&listed).unwrap();
        let names: Vec<&str> = json["backends"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|b| b["name"].as_str())
            .collect();
        if !names.contains(&gone.as_str()) {
            left = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        left,
        "{gone} is still a member:\n{}",
        tcplb.process.stderr_text()
    );
    // New sessions go to the member that stays; the live session on the
    // one that left keeps it (it drains) until it ends.
    for _ in 0..6 {
        assert_eq!(new_session(tcplb.addr).await.0, b'b');
    }
    assert_eq!(ask(&live, b"still").await, b"a:still");
}
