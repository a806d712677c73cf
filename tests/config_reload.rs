//! The configuration file end to end: several listeners from one file, live
//! reloads (in-process and by SIGHUP to the real binary), and a bad file.
//!
//! Backends are the in-process demo servers on 127.0.0.1 port 0; each HTTP
//! backend answers "Hello from backend :PORT", so a reply says who served it.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tcplb::config::cli::{ConfigSource, Startup};
use tcplb::demo;
use tcplb::runtime::signals;
use tcplb::runtime::{Balancer, ReloadHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use common::{PATIENCE, finish, spawn_process, tcplb_bin, wait_listening};

/// A configuration file in the temp directory, removed on drop.
struct ConfigFile(PathBuf);

impl ConfigFile {
    fn new(name: &str, text: &str) -> ConfigFile {
        let path = common::unique_temp_path("tcplb-reload", &format!("{name}.toml"));
        let file = ConfigFile(path);
        file.write(text);
        file
    }

    /// Writes via a rename, so a reload never reads a half-written file.
    fn write(&self, text: &str) {
        let tmp = self.0.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.0).unwrap();
    }

    fn arg(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// One `[[listener]]` table.
fn listener(listen: &str, backends: &[SocketAddr]) -> String {
    let list: Vec<String> = backends.iter().map(|b| format!("\"{b}\"")).collect();
    format!(
        "[[listener]]\nlisten = \"{listen}\"\nbackends = [{}]\n",
        list.join(", ")
    )
}

async fn http_backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(demo::serve_http(l));
    addr
}

async fn echo_backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(demo::serve_echo(l));
    addr
}

/// One short HTTP exchange; returns the port of the backend that answered.
async fn served_by(addr: SocketAddr) -> u16 {
    let exchange = async {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .await?;
        let mut reply = Vec::new();
        s.read_to_end(&mut reply).await?;
        std::io::Result::Ok(reply)
    };
    let reply = tokio::time::timeout(PATIENCE, exchange)
        .await
        .expect("exchange timed out")
        .expect("exchange failed");
    let text = String::from_utf8(reply).unwrap();
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text:?}");
    let port = text
        .rsplit_once("Hello from backend :")
        .unwrap_or_else(|| panic!("not a demo answer: {text:?}"))
        .1;
    port.trim().parse().unwrap()
}

/// The ports of the backends that served `n` exchanges through `addr`,
/// in ascending order (which one starts a round robin is not the point).
async fn served_sorted(addr: SocketAddr, n: usize) -> Vec<u16> {
    let mut ports = Vec::new();
    for _ in 0..n {
        ports.push(served_by(addr).await);
    }
    sorted(ports)
}

fn sorted(mut ports: Vec<u16>) -> Vec<u16> {
    ports.sort();
    ports
}

/// A connection through `addr` to an echo backend that has sent `first`
/// and had it back byte-exact; left open for the rest of the exchange.
async fn half_echoed(addr: SocketAddr, first: &[u8]) -> TcpStream {
    let mut client = TcpStream::connect(addr).await.unwrap();
    client.write_all(first).await.unwrap();
    let mut back = vec![0u8; first.len()];
    tokio::time::timeout(PATIENCE, client.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back, first);
    client
}

/// A balancer started from `--config file`, as main.rs does it.
struct Running {
    handle: ReloadHandle,
    source: ConfigSource,
    shutdown: CancellationToken,
}

impl Running {
    fn start(file: &ConfigFile) -> Running {
        let startup = Startup::try_from_args(["tcplb", "--config", file.arg()]).unwrap();
        let balancer = Balancer::bind(startup.config).unwrap();
        let running = Running {
            handle: balancer.reload_handle(),
            source: startup.source.unwrap(),
            shutdown: balancer.shutdown_token(),
        };
        tokio::spawn(balancer.run());
        running
    }

    fn reload(&self) -> Result<(), String> {
        signals::reload(&self.handle, &self.source)
    }

    fn addrs(&self) -> Vec<SocketAddr> {
        self.handle.local_addrs()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

#[tokio::test]
async fn one_file_two_listeners_each_with_its_own_pool() {
    let (web1, web2, redis) = (
        http_backend().await,
        http_backend().await,
        http_backend().await,
    );
    let file = ConfigFile::new(
        "two",
        &format!(
            "{}{}",
            listener("127.0.0.1:0", &[web1, web2]),
            listener("127.0.0.1:0", &[redis])
        ),
    );
    let lb = Running::start(&file);
    let [web, cache] = lb.addrs()[..] else {
        panic!("expected two listeners");
    };
    assert_ne!(web, cache);
    assert_eq!(
        served_sorted(web, 4).await,
        sorted(vec![web1.port(), web1.port(), web2.port(), web2.port()])
    );
    for _ in 0..3 {
        assert_eq!(served_by(cache).await, redis.port());
    }
}

#[tokio::test]
async fn an_open_connection_survives_a_reload_byte_exact() {
    let (echo, h1, h2) = (
        echo_backend().await,
        http_backend().await,
        http_backend().await,
    );
    let file = ConfigFile::new("survive", &listener("127.0.0.1:0", &[echo]));
    let lb = Running::start(&file);
    let addr = lb.addrs()[0];
    let old_echo = lb.handle.services()[0].pool.load().backends[0].clone();

    let pattern: Vec<u8> = (0..512 * 1024u32).map(|i| (i * 7 % 251) as u8).collect();
    let (first, second) = pattern.split_at(pattern.len() / 2);
    let mut client = half_echoed(addr, first).await;
    assert_eq!(old_echo.active(), 1);

    file.write(&listener("127.0.0.1:0", &[h1]));
    lb.reload().unwrap();
    assert_eq!(lb.addrs(), [addr], "the listener is kept");
    // New connections follow the new pool...
    for _ in 0..3 {
        assert_eq!(served_by(addr).await, h1.port());
    }
    // ...while the open one still reaches the removed echo backend.
    assert_eq!(finish(&mut client, second).await, second);
    drop(client);
    let drained = async {
        while old_echo.active() != 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(PATIENCE, drained).await.unwrap();

    // A backend kept across a reload keeps its state and counters.
    let kept = lb.handle.services()[0].pool.load().backends[0].clone();
    let served_before = kept.stats.total.load(Ordering::Relaxed);
    assert_eq!(served_before, 3);
    file.write(&listener("127.0.0.1:0", &[h1, h2]));
    lb.reload().unwrap();
    let state = lb.handle.services()[0].pool.load();
    assert!(Arc::ptr_eq(&state.backends[0], &kept));
    assert_eq!(state.backends[1].addr(), h2);
    assert_eq!(
        served_sorted(addr, 2).await,
        sorted(vec![h1.port(), h2.port()])
    );
}

#[tokio::test]
async fn an_invalid_reload_keeps_the_old_configuration() {
    let (h1, h2) = (http_backend().await, http_backend().await);
    let file = ConfigFile::new("invalid", &listener("127.0.0.1:0", &[h1]));
    let lb = Running::start(&file);
    let addr = lb.addrs()[0];
    assert_eq!(served_by(addr).await, h1.port());

    // A bad backend address: rejected with file and line, nothing changes.
    file.write(&format!(
        "{}backends = [\"127.0.0.1:1\"]\n",
        listener("127.0.0.1:0", &[h2])
    ));
    let err = lb.reload().unwrap_err();
    assert!(err.contains(&format!("{}:4:1", file.arg())), "{err}");
    file.write("[[listener]]\nlisten = \"127.0.0.1:0\"\nbackends = [\"nope\"]\n");
    let err = lb.reload().unwrap_err();
    assert!(err.contains(&format!("{}:3:13", file.arg())), "{err}");
    assert!(err.contains("\"nope\""), "{err}");

    // A new listener whose address is taken: also nothing changes, not
    // even the kept listener's pool.
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = squatter.local_addr().unwrap();
    file.write(&format!(
        "{}{}",
        listener("127.0.0.1:0", &[h2]),
        listener(&taken.to_string(), &[h2])
    ));
    let err = lb.reload().unwrap_err();
    assert!(err.contains(&taken.to_string()), "{err}");

    assert_eq!(lb.addrs(), [addr]);
    for _ in 0..3 {
        assert_eq!(served_by(addr).await, h1.port());
    }
    // And a valid file afterwards still applies.
    file.write(&listener("127.0.0.1:0", &[h2]));
    lb.reload().unwrap();
    assert_eq!(served_by(addr).await, h2.port());
}

#[tokio::test]
async fn reload_adds_and_removes_listeners() {
    let (echo, h2) = (echo_backend().await, http_backend().await);
    // Distinct loopback addresses give the two listeners distinct identities.
    let a = listener("127.0.0.1:0", &[echo]);
    let b = listener("127.0.0.2:0", &[h2]);
    let file = ConfigFile::new("addremove", &a);
    let lb = Running::start(&file);
    let a_addr = lb.addrs()[0];

    file.write(&format!("{a}{b}"));
    lb.reload().unwrap();
    let addrs = lb.addrs();
    assert_eq!(addrs.len(), 2);
    assert_eq!(addrs[0], a_addr);
    let b_addr = addrs[1];
    assert_eq!(served_by(b_addr).await, h2.port());

    // An open connection on A outlives A's removal.
    let mut client = TcpStream::connect(a_addr).await.unwrap();
    client.write_all(b"before").await.unwrap();
    let mut buf = [0u8; 6];
    client.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"before");

    file.write(&b);
    lb.reload().unwrap();
    assert_eq!(lb.addrs(), [b_addr]);
    let refused = async {
        while TcpStream::connect(a_addr).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(PATIENCE, refused)
        .await
        .expect("the removed listener still accepts");
    assert_eq!(finish(&mut client, b"after").await, b"after");
    assert_eq!(served_by(b_addr).await, h2.port());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_reloads_under_load_lose_no_connection() {
    const CLIENTS: usize = 4;
    /// Upper bound per client; the load normally stops well before it.
    const MAX_PER_CLIENT: usize = 2000;
    const RELOADS: usize = 10;
    /// Connections that complete between two reloads (and after the last).
    const GAP: usize = 40;
    let hs = [
        http_backend().await,
        http_backend().await,
        http_backend().await,
    ];
    let pools = [
        listener("127.0.0.1:0", &[hs[0], hs[1]]),
        listener("127.0.0.1:0", &[hs[1], hs[2]]),
    ];
    let file = ConfigFile::new("load", &pools[0]);
    let lb = Running::start(&file);
    let addr = lb.addrs()[0];

    let done = Arc::new(AtomicUsize::new(0));
    let stop = CancellationToken::new();
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let (done, stop) = (done.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let mut ports = Vec::new();
            while !stop.is_cancelled() && ports.len() < MAX_PER_CLIENT {
                ports.push(served_by(addr).await);
                done.fetch_add(1, Ordering::Relaxed);
            }
            ports
        }));
    }
    let wait_for_gap = |k: usize| {
        let done = done.clone();
        async move {
            let target = done.load(Ordering::Relaxed) + GAP;
            while done.load(Ordering::Relaxed) < target {
                assert!(
                    done.load(Ordering::Relaxed) < CLIENTS * MAX_PER_CLIENT,
                    "the load ended before reload {k}"
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    };
    let reloads = async {
        for k in 1..=RELOADS {
            wait_for_gap(k).await;
            file.write(&pools[k % 2]);
            lb.reload().unwrap();
        }
        wait_for_gap(RELOADS + 1).await;
        stop.cancel();
    };
    tokio::time::timeout(Duration::from_secs(120), reloads)
        .await
        .expect("reloads did not finish");
    let mut seen = Vec::new();
    for client in clients {
        let ports = tokio::time::timeout(Duration::from_secs(120), client)
            .await
            .expect("load did not finish")
            .expect("a client connection failed");
        seen.extend(ports);
    }
    assert_eq!(seen.len(), done.load(Ordering::Relaxed));
    assert!(seen.len() >= (RELOADS + 1) * GAP);
    for h in hs {
        assert!(seen.contains(&h.port()), "backend {h} never served");
    }
}

/// The real `tcplb` with `args`, killed when the test ends however it ends.
fn spawn(args: &[&str]) -> common::Process {
    let mut command = Command::new(tcplb_bin());
    command.args(args);
    spawn_process(command)
}

#[tokio::test]
async fn the_binary_refuses_a_bad_file_with_exit_code_2() {
    let file = ConfigFile::new(
        "badbin",
        "[[listener]]\nlisten = \"127.0.0.1:0\"\nbackends = [\"127.0.0.1:1\"]\nretries = \"x\"\n",
    );
    let mut tcplb = spawn(&["--config", file.arg()]);
    let status = tcplb.wait_exit(PATIENCE);
    assert_eq!(status.expect("tcplb kept running").code(), Some(2));
    let line = tcplb.line_with("error").await;
    assert!(
        line.contains(&format!("{}:4:11", file.arg())) && line.contains("listener.retries"),
        "{line}"
    );
}

#[tokio::test]
async fn sighup_makes_the_binary_reload_its_file() {
    let (h1, h2) = (http_backend().await, http_backend().await);
    let file = ConfigFile::new("sighup", &listener("127.0.0.1:0", &[h1]));
    let mut tcplb = wait_listening(spawn(&["--config", file.arg()]));
    let addr = tcplb.addr;
    assert_eq!(served_by(addr).await, h1.port());

    file.write(&listener("127.0.0.1:0", &[h2]));
    let pid = tcplb.pid().to_string();
    let kill = Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    assert!(kill.success());
    let reloaded = tcplb.process.line_with("reloaded ").await;
    assert!(reloaded.contains(&format!("backends [{h2}]")), "{reloaded}");
    for _ in 0..3 {
        assert_eq!(served_by(addr).await, h2.port());
    }

    // A bad file on SIGHUP is logged and the process keeps serving.
    file.write("[[listener]]\nlisten = \"127.0.0.1:0\"\nbakends = []\n");
    let kill = Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    assert!(kill.success());
    let rejected = tcplb.process.line_with("reload rejected").await;
    assert!(rejected.contains(":3:1"), "{rejected}");
    assert_eq!(tcplb.process.child.try_wait().unwrap(), None);
    assert_eq!(served_by(addr).await, h2.port());
}

#[tokio::test]
async fn the_reload_summary_says_what_changed() {
    let (h1, h2) = (http_backend().await, http_backend().await);
    let file = ConfigFile::new("summary", &listener("127.0.0.1:0", &[h1]));
    let lb = Running::start(&file);
    let addr = lb.addrs()[0];

    file.write(&listener("127.0.0.1:0", &[h2]));
    let summary = lb.handle.apply(lb.source.load().unwrap()).unwrap();
    assert_eq!(summary, format!("{addr} backends [{h2}] (+{h2}, -{h1})"));

    file.write(&format!(
        "{}retries = 0\n{}",
        listener("127.0.0.1:0", &[h2]),
        listener("127.0.0.2:0", &[h1])
    ));
    let summary = lb.handle.apply(lb.source.load().unwrap()).unwrap();
    let added = lb.addrs()[1];
    assert_eq!(
        summary,
        format!("{addr} backends [{h2}], settings changed; {added} added, backends [{h1}]")
    );
    file.write(&listener("127.0.0.2:0", &[h1]));
    let summary = lb.handle.apply(lb.source.load().unwrap()).unwrap();
    assert_eq!(
        summary,
        format!(
            "{} backends [{h1}]; {addr} removed (open connections drain)",
            lb.addrs()[0]
        )
    );
}

/// One `[[listener]]` whose first backend is a table with an admin `state`.
fn listener_with_state(first: SocketAddr, state: &str, rest: &[SocketAddr], extra: &str) -> String {
    let rest: Vec<String> = rest.iter().map(|b| format!(", \"{b}\"")).collect();
    format!(
        "[[listener]]\nlisten = \"127.0.0.1:0\"\n{extra}\
         backends = [{{ address = \"{first}\", state = \"{state}\" }}{}]\n",
        rest.concat()
    )
}

#[tokio::test]
async fn draining_a_backend_by_reload_spares_its_open_connection() {
    let (echo, h1) = (echo_backend().await, http_backend().await);
    let file = ConfigFile::new("drain", &listener_with_state(echo, "ready", &[h1], ""));
    let lb = Running::start(&file);
    let addr = lb.addrs()[0];
    let pool = lb.handle.services()[0].pool.clone();
    let echo_backend = pool.load().backends[0].clone();

    // Round robin starts at the first backend: this client is on echo.
    let pattern: Vec<u8> = (0..256 * 1024u32).map(|i| (i * 13 % 251) as u8).collect();
    let (first, second) = pattern.split_at(pattern.len() / 2);
    let mut client = half_echoed(addr, first).await;
    assert_eq!(echo_backend.active(), 1);

    file.write(&listener_with_state(echo, "drain", &[h1], ""));
    lb.reload().unwrap();
    let state = pool.load();
    assert!(
        Arc::ptr_eq(&state.backends[0], &echo_backend),
        "same backend"
    );
    assert_eq!(echo_backend.admin_state().to_string(), "drain");
    assert!(echo_backend.is_up(), "draining is not a health verdict");
    assert_eq!(pool.stats.updated.load(Ordering::Relaxed), 1);
    // New connections avoid it; the open one carries on, byte-exact.
    for _ in 0..4 {
        assert_eq!(served_by(addr).await, h1.port());
    }
    assert_eq!(finish(&mut client, second).await, second);
    drop(client);
    assert!(common::poll_until(PATIENCE, || echo_backend.active() == 0).await);
    assert_eq!(echo_backend.stats.total.load(Ordering::Relaxed), 1);

    // Ready again: back in rotation, with its counters.
    file.write(&listener_with_state(echo, "ready", &[h1], ""));
    lb.reload().unwrap();
    // Two in a row under round robin: one of them reaches echo.
    let mut echoed = 0;
    for _ in 0..2 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        if finish(&mut stream, b"ping").await == b"ping" {
            echoed += 1;
        }
    }
    assert_eq!(echoed, 1);
    assert_eq!(echo_backend.stats.total.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn a_backend_in_maintenance_is_not_checked() {
    let h1 = http_backend().await;
    // Nothing listens on `dead`, and its port stays taken (a released one
    // could go to a parallel test's listener): every check of it fails.
    let dead = common::refusing_addr();
    let checks = "[listener.health]\ninterval = \"50ms\"\ntimeout = \"1s\"\n";
    let text = |state: &str| {
        // `[listener.health]` must follow the listener's own keys.
        let table = listener_with_state(dead, state, &[h1], "");
        format!("{table}{checks}")
    };
    let file = ConfigFile::new("maintenance", &text("maintenance"));
    let lb = Running::start(&file);
    let backend = lb.handle.services()[0].pool.load().backends[0].clone();
    // Twenty check intervals: a checked backend would be DOWN by now.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(backend.is_up(), "not checked, so no verdict changed");
    assert!(!backend.is_available(), "but out of rotation");
    for _ in 0..3 {
        assert_eq!(served_by(lb.addrs()[0]).await, h1.port());
    }

    file.write(&text("ready"));
    lb.reload().unwrap();
    assert!(
        common::poll_until(PATIENCE, || !backend.is_up()).await,
        "out of maintenance, it is checked again and found down"
    );
    assert_eq!(backend.admin_state().to_string(), "ready");
}

#[tokio::test]
async fn a_reload_lists_every_problem_and_checks_what_a_start_checks() {
    let h1 = http_backend().await;
    let file = ConfigFile::new("every-problem", &listener("127.0.0.1:0", &[h1]));
    let lb = Running::start(&file);
    let addr = lb.addrs()[0];

    // Two bad values and a duplicate: all three named, each with its line.
    file.write(&format!(
        "drain_timeout = \"soon\"\n{}retries = -1\n{}{}",
        listener("127.0.0.1:0", &[h1]),
        listener("127.0.0.1:9", &[h1]),
        listener("127.0.0.1:9", &[h1]),
    ));
    let err = lb.reload().unwrap_err();
    assert!(err.contains("3 problem(s)"), "{err}");
    for line in [":1:17:", ":5:11:", ":10:10:"] {
        assert!(
            err.contains(&format!("{}{line}", file.arg())),
            "{line}: {err}"
        );
    }

    // A token file that cannot be read fails a start, so it fails a reload.
    file.write(&format!(
        "admin_token_file = \"/nonexistent/token\"\n{}",
        listener("127.0.0.1:0", &[h1])
    ));
    let err = lb.reload().unwrap_err();
    assert!(err.contains(&format!("{}:1:20:", file.arg())), "{err}");
    assert!(err.contains("admin token file"), "{err}");
    assert_eq!(served_by(addr).await, h1.port());
}

#[tokio::test]
async fn a_reload_names_the_settings_it_cannot_apply_in_place() {
    let (h1, h2) = (http_backend().await, http_backend().await);
    let file = ConfigFile::new("not-applied", &listener("127.0.0.1:0", &[h1]));
    let lb = Running::start(&file);
    let addr = lb.addrs()[0];

    file.write(&format!(
        "admin = \"127.0.0.1:0\"\n{}backlog = 64\n",
        listener("127.0.0.1:0", &[h2])
    ));
    let summary = lb.handle.apply(lb.source.load().unwrap()).unwrap();
    assert!(
        summary.contains(&format!(
            "NOT applied, needs an upgrade (SIGUSR2) or a restart: backlog of {addr} (1024 -> 64), \
             admin address (off -> 127.0.0.1:0)"
        )),
        "{summary}"
    );
    // The rest is applied.
    assert!(
        summary.starts_with(&format!("{addr} backends [{h2}]")),
        "{summary}"
    );
    assert_eq!(served_by(addr).await, h2.port());
}
