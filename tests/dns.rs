//! DNS discovery against a real DNS server on loopback: a small UDP
//! responder (hickory-proto's message types, via hickory-resolver's
//! re-export) whose records the test changes while tcplb runs, and which
//! can answer SERVFAIL, NXDOMAIN or nothing, or stop. Backends are echo and
//! HTTP servers on 127.0.0.x; everything stays on loopback and every wait
//! is bounded.

mod common;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use hickory_resolver::proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, SRV};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use tcplb::config::{BackendSpec, Config, ResolveConfig, ServiceConfig};
use tcplb::pool::backend::Backend;
use tcplb::runtime::{Balancer, ReloadHandle};
use tcplb::stats::ResolutionStats;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

// ---------------------------------------------------------------------------
// The DNS server

/// How the server answers every query.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    /// From its records (NXDOMAIN for an unknown name).
    Records,
    ServFail,
    NxDomain,
    /// NOERROR without records.
    Empty,
    /// No answer at all.
    Silent,
}

/// What the server knows.
struct Zone {
    records: HashMap<(String, RecordType), Vec<RData>>,
    mode: Mode,
    /// TTL of every record.
    ttl: u32,
    /// Queries received, by lower-case name.
    queries: HashMap<String, usize>,
}

/// A UDP DNS server on 127.0.0.1, on a thread of its own; stopped on drop.
struct DnsServer {
    addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl DnsServer {
    fn start() -> DnsServer {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind DNS server");
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let addr = socket.local_addr().unwrap();
        let zone = Arc::new(Mutex::new(Zone {
            records: HashMap::new(),
            mode: Mode::Records,
            ttl: 0,
            queries: HashMap::new(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (zone, stop) = (zone.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while !stop.load(Relaxed) {
                    let Ok((n, peer)) = socket.recv_from(&mut buf) else {
                        continue;
                    };
                    let Ok(query) = Message::from_vec(&buf[..n]) else {
                        continue;
                    };
                    if let Some(reply) = answer(&zone, &query) {
                        let _ = socket.send_to(&reply, peer);
                    }
                }
            })
        };
        DnsServer {
            addr,
            zone,
            stop,
            thread: Some(thread),
        }
    }

    fn set(&self, name: &str, rtype: RecordType, data: Vec<RData>) {
        let mut zone = self.zone.lock().unwrap();
        zone.records.insert((key(name), rtype), data);
    }

    fn set_a(&self, name: &str, ips: &[Ipv4Addr]) {
        self.set(
            name,
            RecordType::A,
            ips.iter().map(|ip| RData::A(A(*ip))).collect(),
        );
    }

    /// (priority, weight, port, target) records.
    fn set_srv(&self, name: &str, records: &[(u16, u16, u16, &str)]) {
        let data = records
            .iter()
            .map(|&(p, w, port, target)| {
                RData::SRV(SRV::new(p, w, port, Name::from_ascii(target).unwrap()))
            })
            .collect();
        self.set(name, RecordType::SRV, data);
    }

    fn set_mode(&self, mode: Mode) {
        self.zone.lock().unwrap().mode = mode;
    }

    fn queries(&self, name: &str) -> usize {
        let zone = self.zone.lock().unwrap();
        zone.queries.get(&key(name)).copied().unwrap_or(0)
    }

    /// Stops answering and closes the socket.
    fn stop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
    }
}

/// The reply to `query`, as the zone says; `None` to stay silent.
fn answer(zone: &Mutex<Zone>, query: &Message) -> Option<Vec<u8>> {
    let mut zone = zone.lock().unwrap();
    let question = query.queries.first()?.clone();
    let name = key(&question.name().to_ascii());
    *zone.queries.entry(name.clone()).or_default() += 1;
    let mut reply = Message::response(query.metadata.id, OpCode::Query);
    reply.metadata.message_type = MessageType::Response;
    reply.metadata.authoritative = true;
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.add_query(question.clone());
    match zone.mode {
        Mode::Silent => return None,
        Mode::ServFail => reply.metadata.response_code = ResponseCode::ServFail,
        Mode::NxDomain => reply.metadata.response_code = ResponseCode::NXDomain,
        Mode::Empty => {}
        Mode::Records => {
            let known = zone.records.keys().any(|(n, _)| *n == name);
            match zone.records.get(&(name, question.query_type())) {
                Some(data) => {
                    for rdata in data {
                        let record =
                            Record::from_rdata(question.name().clone(), zone.ttl, rdata.clone());
                        reply.add_answer(record);
                    }
                }
                None if known => {}
                None => reply.metadata.response_code = ResponseCode::NXDomain,
            }
        }
    }
    reply.to_vec().ok()
}

// ---------------------------------------------------------------------------
// Helpers

/// A balancer with its reload handle, shut down on drop.
struct DnsBalancer {
    addr: SocketAddr,
    service: Arc<tcplb::proxy::Service>,
    reload: ReloadHandle,
    shutdown: CancellationToken,
}

impl Drop for DnsBalancer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Looked up again quickly: the server's TTL is 0, so every 100 ms, and
/// failures every 300 ms.
const FAST: ResolveConfig = ResolveConfig {
    interval: Duration::from_millis(300),
    ttl_min: Duration::from_millis(100),
};

fn dns_config(dns: &DnsServer, backends: Vec<BackendSpec>) -> Config {
    let mut service = ServiceConfig::new("127.0.0.1:0".parse().unwrap(), backends);
    service.resolve = FAST;
    // Probes must not race the members under test.
    service.health.interval = Duration::from_secs(3600);
    let mut config = Config::single(service);
    config.drain_timeout = Duration::from_secs(2);
    config.resolver = Some(dns.addr);
    config
}

fn start(config: Config) -> DnsBalancer {
    let balancer = Balancer::bind(config).expect("bind balancer");
    let started = DnsBalancer {
        addr: balancer.local_addrs()[0],
        service: balancer.services()[0].clone(),
        reload: balancer.reload_handle(),
        shutdown: balancer.shutdown_token(),
    };
    tokio::spawn(balancer.run());
    started
}

/// A backend configured by name, as parsing `NAME:PORT` gives it, without
/// the address the system resolver would have found (it knows none of
/// these names): only discovery gives it members.
fn by_name(text: &str) -> BackendSpec {
    BackendSpec {
        name: text.to_string(),
        addr: "0.0.0.0:0".parse().unwrap(),
        ..spec("127.0.0.1:1".parse().unwrap(), 1)
    }
}

/// Echo backends on 127.0.0.2, .3, ... all on one port (a name gives
/// every address the same port).
fn echo_backends(count: u8) -> (u16, Vec<TestBackend>) {
    for _ in 0..20 {
        let first = std::net::TcpListener::bind("127.0.0.2:0").expect("bind 127.0.0.2");
        let port = first.local_addr().unwrap().port();
        let mut listeners = vec![first];
        for i in 1..count {
            match std::net::TcpListener::bind((Ipv4Addr::new(127, 0, 0, 2 + i), port)) {
                Ok(l) => listeners.push(l),
                Err(_) => break,
            }
        }
        if listeners.len() == usize::from(count) {
            return (
                port,
                listeners.into_iter().map(TestBackend::echo_on).collect(),
            );
        }
    }
    panic!("no port free on 127.0.0.2..{}", 1 + count);
}

/// `count` [`echo_backends`] and a balancer whose one backend is the name
/// `web.test` on their port, which `dns` answers with `answer` from the
/// start: (the port, the backends, the group `web.test:PORT`, the balancer).
fn balance_web_test(
    dns: &DnsServer,
    count: u8,
    answer: &[Ipv4Addr],
) -> (u16, Vec<TestBackend>, String, DnsBalancer) {
    let (port, backends) = echo_backends(count);
    dns.set_a("web.test", answer);
    let group = format!("web.test:{port}");
    let lb = start(dns_config(dns, vec![by_name(&group)]));
    (port, backends, group, lb)
}

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, last)
}

/// `what` of each member, sorted.
fn each_member<T: Ord>(lb: &DnsBalancer, what: impl Fn(&Backend) -> T) -> Vec<T> {
    let mut out: Vec<T> = lb
        .service
        .pool
        .load()
        .backends
        .iter()
        .map(|b| what(b))
        .collect();
    out.sort();
    out
}

/// (name, source) of each member, sorted.
fn members(lb: &DnsBalancer) -> Vec<(String, Option<String>)> {
    each_member(lb, |b| {
        (b.name().to_string(), b.source().map(str::to_string))
    })
}

fn names(lb: &DnsBalancer) -> Vec<String> {
    members(lb).into_iter().map(|(n, _)| n).collect()
}

fn addrs(port: u16, lasts: &[u8]) -> Vec<String> {
    lasts
        .iter()
        .map(|l| format!("127.0.0.{l}:{port}"))
        .collect()
}

fn resolutions(lb: &DnsBalancer, name: &str) -> Arc<ResolutionStats> {
    lb.service.pool.resolution_stats(name)
}

/// Connections ever made to the member named `name` (0 if not a member).
fn total(lb: &DnsBalancer, name: &str) -> u64 {
    let state = lb.service.pool.load();
    let b = state.backends.iter().find(|b| b.name() == name);
    b.map_or(0, |b| b.stats.total.load(Relaxed))
}

fn active(lb: &DnsBalancer, name: &str) -> u64 {
    let state = lb.service.pool.load();
    let b = state.backends.iter().find(|b| b.name() == name);
    b.map_or(0, |b| b.active())
}

async fn echo_ok(addr: SocketAddr, seed: u64) {
    let data = Pattern::bytes(seed, 4096);
    assert_eq!(echo_roundtrip(addr, &data).await, data, "echo corrupted");
}

// ---------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn a_name_with_two_addresses_balances_over_both() {
    let dns = DnsServer::start();
    let (port, _backends, group, lb) = balance_web_test(&dns, 2, &[ip(3), ip(2)]);

    // Found before the listener served: members from the start, each named
    // by its address, the name kept as their source.
    let expected: Vec<(String, Option<String>)> = addrs(port, &[2, 3])
        .into_iter()
        .map(|n| (n, Some(group.clone())))
        .collect();
    assert_eq!(members(&lb), expected);
    assert_eq!(lb.service.pool.stats.added.load(Relaxed), 0, "not changes");
    for seed in 0..20 {
        echo_ok(lb.addr, seed).await;
    }
    for name in addrs(port, &[2, 3]) {
        assert_eq!(total(&lb, &name), 10, "{name}");
    }
    assert!(resolutions(&lb, &group).ok.load(Relaxed) >= 1);
}

#[tokio::test]
async fn the_answer_changes_under_load_and_every_byte_arrives() {
    let dns = DnsServer::start();
    let (port, _backends, _, lb) = balance_web_test(&dns, 3, &[ip(2), ip(3)]);
    let [a, b, c] = [2, 3, 4].map(|l| format!("127.0.0.{l}:{port}"));

    // Long connections, byte-checked, until told to stop; round-robin puts
    // the first on A.
    let stop = Arc::new(AtomicBool::new(false));
    let mut long = Vec::new();
    let mut rounds = Vec::new();
    for seed in 0..2 {
        let stream = TcpStream::connect(lb.addr).await.unwrap();
        let done = Arc::new(AtomicUsize::new(0));
        rounds.push(done.clone());
        long.push(tokio::spawn(exchange_until(
            stream,
            100 + seed,
            done,
            stop.clone(),
        )));
    }
    assert!(
        poll_until(PATIENCE, || active(&lb, &a) == 1).await,
        "none on A"
    );

    // A steady load of short connections and 1 MiB transfers.
    let load_stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (addr, load_stop) = (lb.addr, load_stop.clone());
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut done = 0u64;
            while !load_stop.load(Relaxed) && Instant::now() < deadline && done < 2000 {
                let size = if done % 10 == 9 { 1 << 20 } else { 4096 };
                let data = Pattern::bytes(done, size);
                let back = echo_roundtrip(addr, &data).await;
                assert!(back == data, "transfer {done} ({size} bytes) corrupted");
                done += 1;
            }
            done
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    dns.set_a("web.test", &[ip(4), ip(3)]);
    assert!(
        poll_until(PATIENCE, || names(&lb) == [b.clone(), c.clone()]).await,
        "members: {:?}",
        names(&lb)
    );
    // C takes its share while the load goes on.
    assert!(
        poll_until(PATIENCE, || total(&lb, &c) >= 5).await,
        "C got nothing"
    );

    // A left the member set, but its open connection goes on, then ends
    // cleanly.
    let before = rounds[0].load(Relaxed);
    assert!(
        poll_until(PATIENCE, || rounds[0].load(Relaxed) >= before + 10).await,
        "the connection to A stalled"
    );
    load_stop.store(true, Relaxed);
    let transfers = load.await.expect("load task");
    stop.store(true, Relaxed);
    for task in long {
        task.await.unwrap().expect("a long connection broke");
    }
    assert!(transfers >= 10, "only {transfers} transfers");
    let changes = &lb.service.pool.stats;
    assert_eq!(changes.added.load(Relaxed), 1);
    assert_eq!(changes.removed.load(Relaxed), 1);
}

#[tokio::test]
async fn failures_keep_the_members_and_are_counted() {
    let mut dns = DnsServer::start();
    let (port, _backends, group, lb) = balance_web_test(&dns, 2, &[ip(2), ip(3)]);
    let stats = resolutions(&lb, &group);
    let expected = addrs(port, &[2, 3]);
    assert_eq!(names(&lb), expected);

    type Counter = fn(&ResolutionStats) -> &std::sync::atomic::AtomicU64;
    let cases: [(Mode, Counter); 4] = [
        (Mode::ServFail, |s| &s.servfail),
        (Mode::NxDomain, |s| &s.nxdomain),
        (Mode::Empty, |s| &s.empty),
        (Mode::Silent, |s| &s.timeout),
    ];
    for (seed, (mode, counter)) in cases.into_iter().enumerate() {
        dns.set_mode(mode);
        let seen = counter(&stats).load(Relaxed);
        assert!(
            poll_until(PATIENCE, || counter(&stats).load(Relaxed) > seen).await,
            "{mode:?} was not counted"
        );
        assert_eq!(names(&lb), expected, "after {mode:?}");
        echo_ok(lb.addr, seed as u64).await;
    }

    // Records again: answers are taken again.
    dns.set_mode(Mode::Records);
    dns.set_a("web.test", &[ip(2)]);
    assert!(poll_until(PATIENCE, || names(&lb) == addrs(port, &[2])).await);

    // The server goes away: its last answer stays.
    dns.stop();
    let failed = || stats.error.load(Relaxed) + stats.timeout.load(Relaxed);
    let seen = failed();
    assert!(
        poll_until(PATIENCE, || failed() > seen).await,
        "not counted"
    );
    assert_eq!(names(&lb), addrs(port, &[2]));
    for seed in 0..4 {
        echo_ok(lb.addr, seed).await;
    }
}

#[tokio::test]
async fn a_reload_keeps_the_members_of_a_name_it_keeps() {
    let dns = DnsServer::start();
    let (port, _backends) = echo_backends(3);
    dns.set_a("web.test", &[ip(2), ip(3)]);
    dns.set_a("db.test", &[ip(4)]);
    let web = format!("web.test:{port}");
    let db = format!("db.test:{port}");
    let config = dns_config(&dns, vec![by_name(&web)]);
    let lb = start(config.clone());
    let first = lb.service.pool.load().backends[0].clone();

    // Same name, a new one beside it: the kept members are the same
    // backends (health, counters), the new name's are there at once.
    let mut both = config.clone();
    both.services[0].backends.push(by_name(&db));
    lb.reload.apply(both).expect("reload");
    let state = lb.service.pool.load();
    assert!(
        Arc::ptr_eq(&state.backends[0], &first),
        "a kept member was replaced"
    );
    assert_eq!(names(&lb), addrs(port, &[2, 3, 4]));
    drop(state);

    // Dropping the name removes its members and stops its lookups.
    lb.reload
        .apply(dns_config(&dns, vec![by_name(&db)]))
        .expect("reload");
    assert_eq!(
        members(&lb),
        [(addrs(port, &[4])[0].clone(), Some(db.clone()))]
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let asked = dns.queries("web.test");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        dns.queries("web.test"),
        asked,
        "a dropped name is still looked up"
    );
    assert!(dns.queries("db.test") > 1, "the kept name is looked up");
    echo_ok(lb.addr, 1).await;
}

#[tokio::test]
async fn an_srv_name_that_does_not_resolve_is_a_start_up_error() {
    let dns = DnsServer::start();
    let missing = tcplb::config::parse_backend("srv:_none._tcp.test").unwrap();
    let Err(error) = Balancer::bind(dns_config(&dns, vec![missing])) else {
        panic!("started without members");
    };
    let text = format!("{error:#}");
    assert!(text.contains("srv:_none._tcp.test"), "{text}");
    assert!(text.contains("NXDOMAIN"), "{text}");
}

/// The `tcplb` binary with an `srv:` backend: ports and weights come from
/// the records, /status and /metrics show them, the share follows them,
/// and a failing server is logged at a bounded rate.
#[tokio::test]
async fn srv_records_give_ports_and_weights_through_the_binary() {
    let dns = DnsServer::start();
    let heavy = TestBackend::http().await;
    let light = TestBackend::http().await;
    dns.set_srv(
        "_web._tcp.test",
        &[
            (10, 3, heavy.addr.port(), "heavy.test."),
            (10, 1, light.addr.port(), "light.test."),
        ],
    );
    dns.set_a("heavy.test", &[ip(1)]);
    dns.set_a("light.test", &[ip(1)]);
    let resolver = dns.addr.to_string();
    let lb = spawn_tcplb(&[
        "--backend",
        "srv:_web._tcp.test",
        "--resolver",
        &resolver,
        "--resolve-interval",
        "1s",
        "--admin",
        "127.0.0.1:0",
        "--workers",
        "1",
    ]);
    let admin = lb.admin_addr().await;

    let mut counts: HashMap<u16, usize> = HashMap::new();
    for _ in 0..200 {
        *counts.entry(which_backend(lb.addr).await).or_default() += 1;
    }
    assert_eq!(counts[&heavy.addr.port()], 150, "{counts:?}");
    assert_eq!(counts[&light.addr.port()], 50, "{counts:?}");

    let status = admin_get(admin, "/status").await;
    let json: serde_json::Value = serde_json::from_str(&status).expect("JSON");
    let listener = &json["listeners"][0];
    let backends = listener["backends"].as_array().unwrap();
    let weight_of = |port: u16| {
        let b = backends
            .iter()
            .find(|b| b["name"] == format!("127.0.0.1:{port}"))
            .unwrap_or_else(|| panic!("no 127.0.0.1:{port} in {status}"));
        assert_eq!(b["source"], "srv:_web._tcp.test", "{status}");
        b["weight"].as_u64()
    };
    assert_eq!(weight_of(heavy.addr.port()), Some(3));
    assert_eq!(weight_of(light.addr.port()), Some(1));
    assert_eq!(listener["dns"][0]["name"], "srv:_web._tcp.test", "{status}");
    assert_eq!(listener["dns"][0]["members"], 2, "{status}");

    // SERVFAIL for a while: counted, logged at most once per interval.
    dns.set_mode(Mode::ServFail);
    let failing_since = Instant::now();
    lb.process
        .line_with("cannot resolve srv:_web._tcp.test")
        .await;
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let warnings = lb
        .process
        .stderr_text()
        .lines()
        .filter(|l| l.contains("cannot resolve srv:_web._tcp.test"))
        .count();
    let allowed = failing_since.elapsed().as_secs() as usize + 1;
    assert!(
        (1..=allowed).contains(&warnings),
        "{warnings} warnings in {:?}",
        failing_since.elapsed()
    );
    assert!(lb.process.stderr_text().contains("SERVFAIL"));
    assert_eq!(
        which_backend(lb.addr).await,
        heavy.addr.port(),
        "still served"
    );
    let metrics = admin_get(admin, "/metrics").await;
    let servfails = metrics
        .lines()
        .find(|l| {
            l.starts_with("tcplb_dns_resolutions_total{")
                && l.contains("name=\"srv:_web._tcp.test\",result=\"servfail\"")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no servfail series in\n{metrics}"));
    assert!(servfails >= 1, "{servfails}");

    // Records again: the weights change with them.
    dns.set_mode(Mode::Records);
    dns.set_srv(
        "_web._tcp.test",
        &[
            (10, 1, heavy.addr.port(), "heavy.test."),
            (10, 1, light.addr.port(), "light.test."),
        ],
    );
    lb.process.line_with("resolves again").await;
    lb.process.line_with("weight 3 -> 1").await;
}

/// One admin GET, body only.
async fn admin_get(addr: SocketAddr, path: &str) -> String {
    let text = raw_exchange(addr, &format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n")).await;
    text.split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default()
}

/// An operator's drain of a name reaches every member it has and every
/// member later lookups bring, and survives the lookups; a member alone
/// cannot be changed (the next lookup would undo it).
#[tokio::test]
async fn draining_a_name_drains_its_members_across_lookups() {
    use tcplb::admin::{Action, Change, Control};

    let dns = DnsServer::start();
    let (port, _backends) = echo_backends(3);
    dns.set_a("pg.test", &[ip(2), ip(3)]);
    let group = format!("pg.test:{port}");
    let mut config = dns_config(&dns, vec![by_name(&group)]);
    config.services[0].name = Some("pg".into());
    let lb = start(config);
    let change = |backend: &str, action: Action| Change {
        pool: "pg".into(),
        backend: backend.into(),
        action,
        who: "test".into(),
    };
    let states = |lb: &DnsBalancer| -> Vec<(String, String)> {
        each_member(lb, |b| (b.name().to_string(), b.admin_state().to_string()))
    };

    let member = format!("127.0.0.2:{port}");
    let refused = lb
        .reload
        .change(change(&member, Action::Maintenance))
        .unwrap_err();
    assert!(refused.to_string().contains("found by DNS"), "{refused}");
    assert!(states(&lb).iter().all(|(_, s)| s == "ready"));

    let done = lb
        .reload
        .change(change(&group, Action::Drain { deadline: None }))
        .unwrap();
    assert_eq!(done, "state ready -> drain");
    let drained = |lasts: &[u8]| -> Vec<(String, String)> {
        addrs(port, lasts)
            .into_iter()
            .map(|n| (n, "drain".to_string()))
            .collect()
    };
    assert_eq!(states(&lb), drained(&[2, 3]));
    // Lookups go on (every 100 ms) and a new address joins drained.
    dns.set_a("pg.test", &[ip(2), ip(3), ip(4)]);
    assert!(poll_until(PATIENCE, || names(&lb).len() == 3).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(states(&lb), drained(&[2, 3, 4]));
    // Nothing is picked while every member drains.
    assert!(
        lb.service
            .pool
            .load()
            .pick("127.0.0.1".parse().unwrap(), &[])
            .is_none()
    );

    lb.reload.change(change(&group, Action::Ready)).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        states(&lb).iter().all(|(_, s)| s == "ready"),
        "{:?}",
        states(&lb)
    );
    echo_ok(lb.addr, 7).await;
}
