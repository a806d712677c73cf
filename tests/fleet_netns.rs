//! More than one tcplb, behind the real engines that put several balancers
//! in front of clients, each scenario in network namespaces of its own
//! (created and removed by the test, also on failure; no address outside
//! them is used):
//!
//! - keepalived (active/passive): two instances on a LAN, each with a
//!   keepalived whose `track_script` follows its `/ready`. SIGTERM the one
//!   holding the virtual IP: its `/ready` turns red, the VIP moves within
//!   the VRRP timers, and a client connecting all along loses at most the
//!   one connection that was in flight at the instant of the move, none
//!   that started after it.
//! - ECMP (active/active): a router with one multipath route to the VIP
//!   over three instances, learned by BGP from a BIRD on each that
//!   announces the VIP while `/ready` is 200. All three use `maglev` with
//!   the same backends: a client reaches the same backend whichever
//!   instance its flow lands on, and flows keep their backend when an
//!   instance leaves; the one withdrawn drains and exits cleanly.
//!
//! The keepalived and BIRD configurations are the files in contrib/fleet/,
//! as docs/fleet.md shows them and scripts/fleet-demo.sh runs them. Each
//! test prints its figures (`cargo test --test fleet_netns -- --nocapture`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use common::netns::{Namespace, link};
use common::*;

/// Where each instance's admin endpoint listens, inside its namespace.
const ADMIN: &str = "127.0.0.1:9090";
/// Long enough for keepalived (script every 1 s, fall 1) or BIRD (checked
/// every 0.5 s, withdrawn at once) to take an instance out.
const SHUTDOWN_DELAY: &str = "5s";

/// `contrib/fleet/NAME` with every `@KEY@` replaced, except in comment
/// lines (which name the keys); a key left over is a mistake in the test.
fn template(name: &str, values: &[(&str, &str)]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("contrib/fleet")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut filled = String::new();
    for line in text.lines() {
        let mut line = line.to_string();
        if !line.trim_start().starts_with('#') {
            for (key, value) in values {
                line = line.replace(&format!("@{key}@"), value);
            }
            assert!(!line.contains('@'), "{name}: unfilled {line:?}");
        }
        filled.push_str(&line);
        filled.push('\n');
    }
    filled
}

/// Panics with what to install unless `program` is on the PATH (or in
/// /usr/sbin, where Debian puts keepalived and bird).
fn need(program: &str, package: &str) {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/sbin"])
        .any(|dir| Path::new(dir).join(program).exists());
    assert!(
        found,
        "this test runs {program}: apt-get install {package} (scripts/test.sh does)"
    );
}

/// A daemon started for the test: SIGTERM on drop (so keepalived and BIRD
/// tidy up), SIGKILL if it is still there after 3 s.
struct Daemon(Process);

impl Daemon {
    fn start(mut command: Command) -> Daemon {
        Daemon(spawn_process({
            command.stdout(std::process::Stdio::null());
            command
        }))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the PID of a child this test started.
        unsafe { libc::kill(self.0.child.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait_exit(Duration::from_secs(3));
    }
}

/// tcplb in `ns` with `args`, its admin endpoint on [`ADMIN`] there and on
/// the Unix socket `socket`.
fn tcplb_in(ns: &Namespace, socket: &str, args: &[&str]) -> TcplbProcess {
    let mut command = ns.command(tcplb_bin());
    command
        .args(["--admin", ADMIN, "--admin-socket", socket])
        .args(["--health-interval", "1s", "--workers", "1"])
        .args(args);
    wait_listening(spawn_process(command))
}

/// `GET path` on the admin endpoint of the instance in `ns`: status line
/// and body; `None` when it does not answer.
fn admin_get(ns: &Namespace, path: &str) -> Option<(String, String)> {
    let mut stream = ns.connect(None, ADMIN.parse().unwrap(), PATIENCE).ok()?;
    stream.set_read_timeout(Some(PATIENCE)).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).ok()?;
    let (head, body) = reply.split_once("\r\n\r\n")?;
    Some((head.lines().next()?.to_string(), body.to_string()))
}

/// Whether process `pid` is still running (not gone, not a zombie).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    })
}

/// One request to `to` from inside `ns` (from `from`, if given); closed
/// with a reset, so no side keeps the flow in TIME_WAIT.
fn request(
    ns: &Namespace,
    from: Option<SocketAddr>,
    to: SocketAddr,
) -> Result<BackendReply, String> {
    let stream = ns
        .connect(from, to, Duration::from_secs(5))
        .map_err(|e| format!("connect: {e}"))?;
    let mut stream = stream;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: fleet\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("send: {e}"))?;
    let mut reply = String::new();
    let read = stream.read_to_string(&mut reply);
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    read.map_err(|e| format!("read: {e}"))?;
    BackendReply::parse(&reply).ok_or_else(|| format!("not a backend reply: {reply:?}"))
}

/// Polls `condition` every 20 ms until it holds (true) or `within` passes.
fn wait_for(within: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    condition()
}

/// `tcplb ctl ARGS` from the test's namespace (over the Unix sockets):
/// the exit code and stdout.
fn ctl(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(tcplb_bin())
        .arg("ctl")
        .args(args)
        .output()
        .expect("run tcplb ctl");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// One client connection of the keepalived scenario: when it started, and
/// who served it (or why it failed).
struct Attempt {
    /// When it started.
    at: Instant,
    /// The backend and the instance that served it, or why not.
    outcome: Result<BackendReply, String>,
}

#[test]
fn keepalived_moves_the_vip_off_a_stopping_tcplb_without_failing_new_connections() {
    need("keepalived", "keepalived");
    need("curl", "curl");
    let dir = TempDir::new("keepalived");
    let vip: Ipv4Addr = "10.214.0.100".parse().unwrap();
    // The LAN: a bridge, the clients at .1 and the backends at .2.
    let lan = Namespace::new("lan");
    lan.ip(&["link", "add", "br0", "type", "bridge"]);
    lan.ip(&["link", "set", "br0", "up"]);
    lan.ip(&["addr", "add", "10.214.0.1/24", "dev", "br0"]);
    lan.ip(&["addr", "add", "10.214.0.2/24", "dev", "br0"]);
    let backends: Vec<TestBackend> = (0..2)
        .map(|_| TestBackend::naming_peer_on(lan.listen("10.214.0.2:0".parse().unwrap())))
        .collect();
    let list: Vec<String> = backends.iter().map(|b| b.addr.to_string()).collect();
    let list = list.join(",");

    // Two instances on it, A preferred: tcplb and keepalived in each.
    let mut instances = Vec::new();
    for (role, host, peer, priority) in [("a", 11, 12, "150"), ("b", 12, 11, "100")] {
        let ns = Namespace::new(role);
        let (inner, outer) = link(&ns, &lan);
        lan.ip(&["link", "set", &outer, "master", "br0"]);
        ns.ip(&["addr", "add", &format!("10.214.0.{host}/24"), "dev", &inner]);
        let socket = dir.arg(&format!("{role}.sock"));
        let tcplb = tcplb_in(
            &ns,
            &socket,
            &[
                "--listen",
                "0.0.0.0:8080",
                "-b",
                &list,
                "--shutdown-delay",
                SHUTDOWN_DELAY,
                "--drain-timeout",
                "6s",
            ],
        );
        let conf = dir.path(&format!("{role}-keepalived.conf"));
        let (me, other) = (format!("10.214.0.{host}"), format!("10.214.0.{peer}"));
        let text = template(
            "keepalived.conf",
            &[
                ("INTERFACE", inner.as_str()),
                ("PRIORITY", priority),
                ("SELF", &me),
                ("PEER", &other),
                ("VIP", "10.214.0.100/24"),
                ("ADMIN", ADMIN),
            ],
        );
        std::fs::write(&conf, text).unwrap();
        let mut command = ns.command("keepalived");
        command.args(["--dont-fork", "--log-console", "--log-detail", "--vrrp"]);
        command.arg("--use-file").arg(&conf);
        for (flag, file) in [("--pid", "pid"), ("--vrrp_pid", "vrrp.pid")] {
            command.arg(flag).arg(dir.path(&format!("{role}-{file}")));
        }
        command
            .arg("--checkers_pid")
            .arg(dir.path(&format!("{role}-checkers.pid")));
        let keepalived = Daemon::start(command);
        instances.push((ns, tcplb, keepalived, IpAddr::from([10, 214, 0, host])));
    }
    let (first, second) = instances.split_at_mut(1);
    let (a, b) = (&mut first[0], &second[0]);
    assert!(
        wait_for(PATIENCE, || a.0.has_address(vip)),
        "A never took the VIP:\n{}",
        a.2.0.stderr_text()
    );
    let target = SocketAddr::from((vip, 8080));
    let first = request(&lan, None, target).expect("through the VIP");
    assert_eq!(first.via, a.3, "A holds the VIP but did not serve");

    // A client that connects again and again, one connection at a time,
    // while A is stopped; it counts the connections it starts once the
    // VIP has moved.
    const AFTER_MOVE: usize = 50;
    let stop = AtomicBool::new(false);
    let moved_at = OnceLock::new();
    let started_after_move = AtomicUsize::new(0);
    let (attempts, signalled, red) = std::thread::scope(|scope| {
        let client = scope.spawn(|| {
            let mut attempts = Vec::new();
            let started = Instant::now();
            while !stop.load(Relaxed) && attempts.len() < 5000 && started.elapsed() < PATIENCE * 3 {
                let at = Instant::now();
                if moved_at.get().is_some_and(|moved| at >= *moved) {
                    started_after_move.fetch_add(1, Relaxed);
                }
                attempts.push(Attempt {
                    at,
                    outcome: request(&lan, None, target),
                });
                std::thread::sleep(Duration::from_millis(10));
            }
            attempts
        });
        std::thread::sleep(Duration::from_secs(1));
        // SIGTERM the active one: /ready red at once, the VIP moves to B.
        let signalled = Instant::now();
        a.1.process.sigterm();
        let red = wait_for(PATIENCE, || {
            let said = admin_get(&a.0, "/ready").map(|(_, body)| body);
            said.as_deref() == Some("not ready: shutting down\n") || !running(a.1.pid())
        }) && running(a.1.pid());
        let moved = wait_for(PATIENCE, || b.0.has_address(vip) && !a.0.has_address(vip));
        let _ = moved_at.set(Instant::now());
        // Clients go on through B for a while (a connection caught by the
        // move may hold the client up to its 5 s timeout), then stop.
        wait_for(PATIENCE, || started_after_move.load(Relaxed) >= AFTER_MOVE);
        stop.store(true, Relaxed);
        let attempts = client.join().expect("the client thread");
        assert!(moved, "the VIP did not move:\n{}", b.2.0.stderr_text());
        (attempts, signalled, red)
    });
    let moved = *moved_at.get().expect("the move's time");

    // A drains what is left and exits cleanly within its drain.
    let status = a.1.process.wait_exit(PATIENCE).expect("A exits");
    a.1.process.wait_stderr_read();
    assert!(status.success(), "{status}");

    let after_move: Vec<&Attempt> = attempts.iter().filter(|t| t.at >= moved).collect();
    let during_delay = attempts
        .iter()
        .filter(|t| t.at >= signalled && t.at < moved)
        .filter(|t| matches!(&t.outcome, Ok(r) if r.via == a.3))
        .count();
    let failed: Vec<(Duration, &String)> = attempts
        .iter()
        .filter_map(|t| {
            let e = t.outcome.as_ref().err()?;
            Some((t.at.saturating_duration_since(signalled), e))
        })
        .collect();
    eprintln!(
        "keepalived: VIP moved {:?} after SIGTERM; {} connections, {} failed (first: {:?}); \
         {during_delay} served by the stopping instance during its shutdown delay; \
         {} started after the move, all through B",
        moved - signalled,
        attempts.len(),
        failed.len(),
        &failed[..failed.len().min(3)],
        after_move.len(),
    );
    // Nothing started after the move failed, all went to B; at most the
    // one connection in flight at the instant of the move was lost.
    assert!(after_move.len() >= AFTER_MOVE, "{}", after_move.len());
    for attempt in &after_move {
        match &attempt.outcome {
            Ok(reply) => assert_eq!(reply.via, b.3, "served by A after the move"),
            Err(e) => panic!("a connection started after the move failed: {e}"),
        }
    }
    assert!(failed.len() <= 1, "{} failed", failed.len());
    assert!(red, "A's /ready did not answer 503 while it stopped");
    let a_log = a.1.process.stderr_text();
    assert!(a_log.contains("still accepting for 5s"), "{a_log}");
}

/// Where a flow of the ECMP scenario landed: the instance's index and the
/// backend's port.
type Landing = (usize, u16);

/// Every flow (client address and port) once, from the router's
/// namespace, with where it landed.
fn flows(router: &Namespace, clients: &[SocketAddr], target: SocketAddr) -> Vec<Landing> {
    clients
        .iter()
        .map(|&client| {
            let reply = request(router, Some(client), target)
                .unwrap_or_else(|e| panic!("flow {client}: {e}"));
            let instance = match reply.via {
                IpAddr::V4(v4) => usize::from(v4.octets()[2]) - 1,
                other => panic!("not an instance: {other}"),
            };
            (instance, reply.backend)
        })
        .collect()
}

/// The next hops of the router's route to the VIP.
fn next_hops(router: &Namespace, vip: Ipv4Addr) -> Vec<String> {
    let route = router.ip(&["-4", "route", "show", &format!("{vip}/32")]);
    route
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "via")
        .map(|w| w[1].to_string())
        .collect()
}

#[test]
fn ecmp_over_bird_keeps_each_client_on_its_backend_whichever_instance_it_reaches() {
    need("bird", "bird2");
    need("birdc", "bird2");
    need("curl", "curl");
    const INSTANCES: usize = 3;
    let dir = TempDir::new("ecmp");
    let vip: Ipv4Addr = "10.215.0.100".parse().unwrap();
    let target = SocketAddr::from((vip, 8080));
    // The router, with the clients on its loopback: a flow's hash is then
    // its addresses and ports, as on a router that forwards for hosts (a
    // client in a namespace of its own would pass its socket's random
    // hash along the veth, and the router would use that).
    let router = Namespace::new("rtr");
    router.sysctl("net.ipv4.ip_forward", "1");
    router.sysctl("net.ipv4.fib_multipath_hash_policy", "1");
    let mut clients = Vec::new();
    for host in 10..30u8 {
        router.ip(&["addr", "add", &format!("10.215.101.{host}/32"), "dev", "lo"]);
        for port in [40001, 40002, 40003] {
            clients.push(SocketAddr::from(([10, 215, 101, host], port)));
        }
    }
    // The backends, behind the router.
    let servers = Namespace::new("bk");
    let (to_router, from_servers) = link(&servers, &router);
    servers.ip(&["addr", "add", "10.215.200.2/24", "dev", &to_router]);
    servers.ip(&["route", "add", "default", "via", "10.215.200.1"]);
    router.ip(&["addr", "add", "10.215.200.1/24", "dev", &from_servers]);
    let backends: Vec<TestBackend> = (0..5)
        .map(|_| TestBackend::naming_peer_on(servers.listen("10.215.200.2:0".parse().unwrap())))
        .collect();
    let list: Vec<String> = backends.iter().map(|b| b.addr.to_string()).collect();
    let list = list.join(",");

    // Three instances, each with tcplb on the VIP, BIRD, and the loop that
    // has BIRD announce the VIP while /ready is 200.
    let mut neighbors = String::new();
    let mut instances = Vec::new();
    for i in 1..=INSTANCES {
        let ns = Namespace::new(&format!("i{i}"));
        let (inner, outer) = link(&ns, &router);
        let (me, gateway) = (format!("10.215.{i}.2"), format!("10.215.{i}.1"));
        ns.ip(&["addr", "add", &format!("{me}/24"), "dev", &inner]);
        ns.ip(&["addr", "add", &format!("{vip}/32"), "dev", "lo"]);
        ns.ip(&["route", "add", "default", "via", &gateway]);
        router.ip(&["addr", "add", &format!("{gateway}/24"), "dev", &outer]);
        let socket = dir.arg(&format!("i{i}.sock"));
        let tcplb = tcplb_in(
            &ns,
            &socket,
            &[
                "--listen",
                &target.to_string(),
                "--strategy",
                "maglev",
                "-b",
                &list,
                "--shutdown-delay",
                SHUTDOWN_DELAY,
                "--drain-timeout",
                "5s",
            ],
        );
        let local_as = format!("6500{i}");
        let conf = dir.path(&format!("i{i}-bird.conf"));
        let text = template(
            "bird-instance.conf",
            &[
                ("ROUTER_ID", me.as_str()),
                ("LOCAL", &me),
                ("LOCAL_AS", &local_as),
                ("NEIGHBOR", &gateway),
                ("ROUTER_AS", "65000"),
                ("VIP", &format!("{vip}/32")),
            ],
        );
        std::fs::write(&conf, text).unwrap();
        let bird_socket = dir.arg(&format!("i{i}-bird.ctl"));
        let mut command = ns.command("bird");
        command
            .arg("-f")
            .arg("-c")
            .arg(&conf)
            .args(["-s", &bird_socket]);
        command.arg("-P").arg(dir.path(&format!("i{i}-bird.pid")));
        let bird = Daemon::start(command);
        let mut command = ns.command("sh");
        command
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/fleet/ready-to-bird.sh"))
            .args([&format!("http://{ADMIN}/ready"), &bird_socket, "0.2"]);
        let announcer = Daemon::start(command);
        neighbors.push_str(&format!(
            "protocol bgp tcplb{i} from tcplb {{ neighbor {me} as {local_as}; }}\n"
        ));
        instances.push((ns, tcplb, bird, announcer, socket));
    }
    let conf = dir.path("router-bird.conf");
    let text = template(
        "bird-router.conf",
        &[
            ("ROUTER_ID", "10.215.200.1"),
            ("ROUTER_AS", "65000"),
            ("NEIGHBORS", &neighbors),
        ],
    );
    std::fs::write(&conf, text).unwrap();
    let mut command = router.command("bird");
    command.arg("-f").arg("-c").arg(&conf);
    command.args(["-s", &dir.arg("router-bird.ctl")]);
    command.arg("-P").arg(dir.path("router-bird.pid"));
    let router_bird = Daemon::start(command);

    let all = ["10.215.1.2", "10.215.2.2", "10.215.3.2"];
    let birdc = |socket: &str| {
        let out = Command::new("birdc")
            .args(["-s", socket, "show", "protocols", "all"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
        out.unwrap_or_else(|e| e.to_string())
    };
    assert!(
        wait_for(PATIENCE * 2, || next_hops(&router, vip) == all),
        "no multipath route over the three: {:?}\nrouter:\n{}{}\ninstance 1:\n{}\n{}",
        next_hops(&router, vip),
        birdc(&dir.arg("router-bird.ctl")),
        router_bird.0.stderr_text(),
        birdc(&dir.arg("i1-bird.ctl")),
        instances[0].3.0.stderr_text(),
    );

    // Every client's flows reach one backend, whichever instance each
    // flow lands on.
    let before = flows(&router, &clients, target);
    let mut per_client: BTreeMap<IpAddr, (BTreeSet<usize>, BTreeSet<u16>)> = BTreeMap::new();
    for (client, (instance, backend)) in clients.iter().zip(&before) {
        let entry = per_client.entry(client.ip()).or_default();
        entry.0.insert(*instance);
        entry.1.insert(*backend);
    }
    for (client, (instances, backends)) in &per_client {
        assert_eq!(
            backends.len(),
            1,
            "{client}: over {instances:?} to {backends:?}"
        );
    }
    let spread = per_client.values().filter(|(i, _)| i.len() > 1).count();
    let used: BTreeSet<u16> = before.iter().map(|(_, b)| *b).collect();
    let count = |landed: &[Landing], i: usize| landed.iter().filter(|l| l.0 == i).count();
    eprintln!(
        "ecmp: {} flows from {} clients: {}/{}/{} on the three instances; {spread} clients \
         over more than one instance, each on one backend; {} backends used",
        before.len(),
        per_client.len(),
        count(&before, 0),
        count(&before, 1),
        count(&before, 2),
        used.len()
    );
    assert!(spread >= 5, "the flows hardly spread: {spread}");
    assert!((0..INSTANCES).all(|i| count(&before, i) > 0));
    assert!(used.len() >= 3, "{used:?}");

    // An operator takes instance 3 out (the last next hop): its flows move,
    // and with Linux's hash-threshold some of instance 2's move to 1 too;
    // every flow keeps its backend.
    let sockets: Vec<String> = instances.iter().map(|i| format!("unix:{}", i.4)).collect();
    let (code, _) = ctl(&["--admin", &sockets[2], "ready", "off"]);
    assert_eq!(code, Some(0));
    assert!(wait_for(PATIENCE, || next_hops(&router, vip) == all[..2]));
    let without_3 = flows(&router, &clients, target);
    let mut moved_others = 0;
    for ((was, now), client) in before.iter().zip(&without_3).zip(&clients) {
        assert_ne!(now.0, 2, "{client} still reaches the instance taken out");
        assert_eq!(was.1, now.1, "{client} changed backend");
        if was.0 != 2 && was.0 != now.0 {
            moved_others += 1;
        }
    }
    // The fleet read: instance 3 says why it is out.
    let fleet = [
        "--admin",
        &sockets[0],
        "--admin",
        &sockets[1],
        "--admin",
        &sockets[2],
        "ready",
    ];
    let (code, shown) = ctl(&fleet);
    assert_eq!(code, Some(0));
    assert_eq!(
        shown,
        format!(
            "{}: ready\n{}: ready\n{}: not ready: turned off by an operator (tcplb ctl ready on)\n",
            sockets[0], sockets[1], sockets[2]
        )
    );
    let (code, _) = ctl(&["--admin", &sockets[2], "ready", "on"]);
    assert_eq!(code, Some(0));
    assert!(wait_for(PATIENCE, || next_hops(&router, vip) == all));
    assert_eq!(
        flows(&router, &clients, target),
        before,
        "back in: every flow where it was"
    );

    // SIGTERM instance 2 (the middle next hop): /ready turns red, BIRD
    // withdraws, only its flows move, and they keep their backends.
    let (ns2, tcplb2) = {
        let instance = &mut instances[1];
        (&instance.0, &mut instance.1)
    };
    let accepted = |ns: &Namespace| -> u64 {
        let (_, metrics) = admin_get(ns, "/metrics").expect("/metrics");
        metrics
            .lines()
            .find(|l| l.starts_with("tcplb_listener_accepted_total{"))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .expect("tcplb_listener_accepted_total")
    };
    tcplb2.process.sigterm();
    let withdrawn = Instant::now();
    assert!(
        wait_for(PATIENCE, || next_hops(&router, vip)
            == ["10.215.1.2", "10.215.3.2"]),
        "{:?}",
        next_hops(&router, vip)
    );
    eprintln!("ecmp: withdrawn {:?} after SIGTERM", withdrawn.elapsed());
    let accepted_when_withdrawn = accepted(ns2);
    let without_2 = flows(&router, &clients, target);
    let mut moved = 0;
    for ((was, now), client) in before.iter().zip(&without_2).zip(&clients) {
        assert_eq!(was.1, now.1, "{client} changed backend");
        if was.0 == 1 {
            assert_ne!(now.0, 1, "{client} still reaches the instance withdrawn");
            moved += 1;
        } else {
            assert_eq!(was.0, now.0, "{client} moved off an instance that stayed");
        }
    }
    assert_eq!(accepted(ns2), accepted_when_withdrawn, "a flow reached it");
    eprintln!(
        "ecmp: instance 3 out: {} of its flows moved, and {moved_others} of the others' \
         (Linux's hash-threshold); instance 2 out: its {moved} flows moved, no other; \
         every flow kept its backend",
        count(&before, 2)
    );
    // The withdrawn instance drains cleanly: nothing left to cut.
    let status = tcplb2.process.wait_exit(PATIENCE).expect("exits");
    tcplb2.process.wait_stderr_read();
    assert!(status.success(), "{status}");
    let text = tcplb2.process.stderr_text();
    assert!(text.contains("all connections finished"), "{text}");
    assert!(!text.contains("closing the"), "{text}");
}

#[test]
fn the_fleet_page_shows_the_files_these_tests_run() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let page = std::fs::read_to_string(root.join("docs/fleet.md")).unwrap();
    for name in [
        "keepalived.conf",
        "bird-instance.conf",
        "bird-router.conf",
        "ready-to-bird.sh",
    ] {
        let text = std::fs::read_to_string(root.join("contrib/fleet").join(name)).unwrap();
        assert!(
            page.contains(&text),
            "docs/fleet.md does not show contrib/fleet/{name} as it is"
        );
    }
}
