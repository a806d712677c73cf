//! Health checks that know the service, against the real servers: a Redis
//! master and replica flipped with REPLICAOF, a Patroni-style failover of
//! two HTTP health endpoints under load, PostgreSQL's SSLRequest and
//! `pg_isready` against a real `postgres`, and MySQL's greeting against a
//! real `mariadbd`. Each server is the Debian package's, started by the
//! test in a temporary directory as `nobody`, killed by PID when the test
//! ends; tcplb is the real binary. The recipes are those of
//! docs/health-checks.md.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{
    PATIENCE, Process, TcplbProcess, TempDir, TestBackend, backend_status, free_port, read_head,
    serve_each, server_program, spawn_process, spawn_tcplb, spawn_unprivileged, status_json,
    tcplb_bin, unprivileged_dir, wait_accepting, wait_listening, wait_status,
};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Checks this often in these tests, so a flip is seen within a second.
const INTERVAL: &str = "200ms";

/// Runs the binary with the TOML `config` written to `dir`.
fn tcplb_with_file(dir: &TempDir, config: &str) -> TcplbProcess {
    let file = dir.path("tcplb.toml");
    std::fs::write(&file, config).unwrap();
    let mut command = std::process::Command::new(tcplb_bin());
    command.arg("--config").arg(&file);
    wait_listening(spawn_process(command))
}

/// Backend `name` of listener `listener` in `status`.
fn backend_of(status: &Value, listener: usize, name: &str) -> Value {
    status["listeners"][listener]["backends"]
        .as_array()
        .and_then(|all| all.iter().find(|b| b["name"] == name))
        .cloned()
        .unwrap_or_else(|| panic!("no backend {name} in listener {listener}: {status}"))
}

// ---------------------------------------------------------------------------
// Redis

/// A real redis-server on a port of its own, as nobody, nothing saved.
struct Redis {
    addr: SocketAddr,
    _process: Process,
    _dir: TempDir,
}

async fn redis(name: &str, replica_of: Option<SocketAddr>) -> Redis {
    let program = server_program("redis-server", "redis-server");
    let dir = unprivileged_dir(name);
    let port = free_port();
    let port_text = port.to_string();
    let dir_text = dir.0.to_str().unwrap().to_string();
    let mut args = vec![
        "--port",
        &port_text,
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        &dir_text,
        "--daemonize",
        "no",
    ];
    let master_port;
    if let Some(master) = replica_of {
        master_port = master.port().to_string();
        args.extend(["--replicaof", "127.0.0.1", &master_port]);
    }
    let mut process = spawn_unprivileged(&program, &args);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_accepting(addr, &mut process).await;
    Redis {
        addr,
        _process: process,
        _dir: dir,
    }
}

/// One reply of Redis's protocol: a status, error or integer line, or a
/// bulk string.
async fn reply(stream: &mut BufReader<TcpStream>) -> String {
    let mut line = String::new();
    // A connection closed or reset unanswered reads as an empty reply.
    let _ = tokio::time::timeout(PATIENCE, stream.read_line(&mut line))
        .await
        .expect("a Redis reply in time");
    if let Some(len) = line
        .strip_prefix('$')
        .and_then(|l| l.trim().parse::<usize>().ok())
    {
        let mut bulk = vec![0u8; len + 2];
        stream.read_exact(&mut bulk).await.expect("the bulk string");
        return String::from_utf8_lossy(&bulk).into_owned();
    }
    line
}

/// Sends one inline command on `stream` and returns the reply.
async fn ask(stream: &mut BufReader<TcpStream>, command: &str) -> String {
    let sent = stream
        .get_mut()
        .write_all(format!("{command}\r\n").as_bytes())
        .await;
    if sent.is_err() {
        return String::new();
    }
    reply(stream).await
}

async fn redis_client(addr: SocketAddr) -> BufReader<TcpStream> {
    BufReader::new(TcpStream::connect(addr).await.expect("connect"))
}

/// The port of the redis-server a connection reached (`INFO server`).
async fn served_by(stream: &mut BufReader<TcpStream>) -> u16 {
    try_served_by(stream)
        .await
        .unwrap_or_else(|| panic!("no redis-server answered"))
}

/// [`served_by`], `None` when the connection was closed unanswered (no
/// backend could take it, with `--on-failure close`).
async fn try_served_by(stream: &mut BufReader<TcpStream>) -> Option<u16> {
    let info = ask(stream, "INFO server").await;
    info.lines()
        .find_map(|l| l.strip_prefix("tcp_port:"))
        .and_then(|p| p.trim().parse().ok())
}

/// The role a server reports.
async fn role(addr: SocketAddr) -> String {
    let info = ask(&mut redis_client(addr).await, "INFO replication").await;
    info.lines()
        .find_map(|l| l.strip_prefix("role:"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// A real master and replica behind tcplb with the flag form of the
/// Redis recipe (INFO replication, contains role:master) and `--on-down
/// close`: after REPLICAOF flips them, new connections go to the new
/// master only (within interval × rise, measured), and every connection
/// to the old master is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_flip_moves_new_connections_and_closes_the_old_masters() {
    let a = redis("redis-a", None).await;
    let b = redis("redis-b", Some(a.addr)).await;
    assert_eq!(role(b.addr).await, "slave");
    let (an, bn) = (a.addr.to_string(), b.addr.to_string());
    let lb = spawn_tcplb(&[
        "--backend",
        &an,
        "--backend",
        &bn,
        "--health-send",
        "INFO replication\\r\\nQUIT\\r\\n",
        "--health-expect",
        "role:master",
        "--health-expect-match",
        "contains",
        "--health-interval",
        INTERVAL,
        "--health-timeout",
        "1s",
        "--rise",
        "2",
        "--on-down",
        "close",
        "--on-failure",
        "close",
        "--admin",
        "127.0.0.1:0",
    ]);
    let admin = lb.admin_addr().await;
    let (status, settled) = wait_status(admin, PATIENCE, |s| {
        backend_status(s, &an)["health"] == "up" && backend_status(s, &bn)["health"] == "down"
    })
    .await;
    assert!(settled, "the master up, the replica down: {status}");
    let replica = backend_status(&status, &bn);
    assert_eq!(replica["check"]["type"], "steps");
    assert!(
        replica["check"]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("role:slave"),
        "the reason quotes what the replica said: {replica}"
    );

    // Clients of the master, open across the flip.
    let mut old = Vec::new();
    for _ in 0..5 {
        let mut client = redis_client(lb.addr).await;
        assert_eq!(served_by(&mut client).await, a.addr.port());
        old.push(client);
    }

    // The flip: B becomes the master, A its replica.
    assert!(
        ask(&mut redis_client(b.addr).await, "REPLICAOF NO ONE")
            .await
            .starts_with("+OK")
    );
    let flipped = Instant::now();
    let to_b = format!("REPLICAOF 127.0.0.1 {}", b.addr.port());
    assert!(
        ask(&mut redis_client(a.addr).await, &to_b)
            .await
            .starts_with("+OK")
    );

    // New connections follow B once it passed `rise` checks (until then,
    // once A failed its check, none may be served at all).
    let mut followed = None;
    while flipped.elapsed() < PATIENCE {
        let mut client = redis_client(lb.addr).await;
        if try_served_by(&mut client).await == Some(b.addr.port()) {
            followed = Some(flipped.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let followed = followed.expect("new connections never went to the new master");
    eprintln!(
        "new connections followed the new master {followed:?} after the flip (interval 200ms x rise 2)"
    );
    for _ in 0..10 {
        let mut client = redis_client(lb.addr).await;
        assert_eq!(
            served_by(&mut client).await,
            b.addr.port(),
            "only the new master"
        );
    }

    // Every client of the old master was closed (redis-server itself
    // would keep them open).
    for (i, client) in old.iter_mut().enumerate() {
        let mut rest = Vec::new();
        let ended = tokio::time::timeout(PATIENCE, client.read_to_end(&mut rest)).await;
        assert!(ended.is_ok(), "client {i} of the old master is still open");
    }
    let status = status_json(admin).await;
    let was_master = backend_status(&status, &an);
    assert_eq!(was_master["health"], "down");
    assert!(
        was_master["health_closes"].as_u64().unwrap_or(0) >= 5,
        "{was_master}"
    );
    drop((lb, a, b));
}

/// The full steps recipe from the file (PING, then INFO replication with
/// QUIT behind it, so a replica's answer ends with its connection and its
/// check fails at once) against a real master and replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_steps_recipe_tells_the_master_from_the_replica() {
    let a = redis("redis-recipe-a", None).await;
    let b = redis("redis-recipe-b", Some(a.addr)).await;
    let dir = TempDir::new("redis-recipe");
    let lb = tcplb_with_file(
        &dir,
        &format!(
            r#"admin = "127.0.0.1:0"

[[listener]]
listen = "127.0.0.1:0"
backends = ["{a}", "{b}"]
on_failure = "close"

[listener.health]
interval = "{INTERVAL}"
steps = [
  {{ send = "PING\r\n" }},
  {{ expect = "+PONG" }},
  {{ send = "INFO replication\r\nQUIT\r\n" }},
  {{ expect = "role:master", match = "contains" }},
]
"#,
            a = a.addr,
            b = b.addr
        ),
    );
    let admin = lb.admin_addr().await;
    let (an, bn) = (a.addr.to_string(), b.addr.to_string());
    let (status, settled) = wait_status(admin, PATIENCE, |s| {
        backend_status(s, &an)["check"]["result"] == "passed"
            && backend_status(s, &bn)["check"]["result"] == "failed"
    })
    .await;
    assert!(settled, "{status}");
    assert_eq!(
        backend_status(&status, &an)["check"]["reason"],
        "2 replies matched"
    );
    let reason = backend_status(&status, &bn)["check"]["reason"].clone();
    let reason = reason.as_str().unwrap_or("");
    assert!(
        reason.starts_with("expect #2: wanted a reply containing \"role:master\"")
            && reason.ends_with("(then closed)"),
        "QUIT closes the replica's connection, so its check fails at once: {reason}"
    );
    drop((lb, a, b));
}

// ---------------------------------------------------------------------------
// Patroni-style failover

/// Writes one database received: which client, and when.
type Writes = Arc<Mutex<Vec<(Instant, String)>>>;

/// A stand-in for one database node: records every line written to it
/// with the time it arrived, and answers `ok NAME`.
async fn database(
    name: &'static str,
    writes: Writes,
    accepted: Arc<Mutex<Vec<Instant>>>,
) -> SocketAddr {
    serve_each("127.0.0.1", move |stream| {
        accepted.lock().unwrap().push(Instant::now());
        let writes = writes.clone();
        async move {
            let mut lines = BufReader::new(stream);
            let mut line = String::new();
            while matches!(lines.read_line(&mut line).await, Ok(n) if n > 0) {
                let write = line.trim().to_string();
                writes.lock().unwrap().push((Instant::now(), write));
                line.clear();
                let answer = format!("ok {name}\n");
                if lines.get_mut().write_all(answer.as_bytes()).await.is_err() {
                    break;
                }
            }
        }
    })
    .await
}

/// Patroni's REST API as far as the check goes: `/primary` answers 200
/// while `primary` is set, else 503. Records when it first said 503.
async fn patroni_api(
    primary: Arc<AtomicBool>,
    first_no: Arc<Mutex<Option<Instant>>>,
) -> SocketAddr {
    serve_each("127.0.0.1", move |stream| {
        let (primary, first_no) = (primary.clone(), first_no.clone());
        async move {
            let mut stream = BufReader::new(stream);
            let head = read_head(&mut stream).await;
            let answer: &[u8] = if !head.starts_with("OPTIONS /primary ") {
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            } else if primary.load(Relaxed) {
                b"HTTP/1.1 200 OK\r\nContent-Length: 18\r\nConnection: close\r\n\r\n{\"role\":\"primary\"}"
            } else {
                first_no.lock().unwrap().get_or_insert_with(Instant::now);
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 18\r\nConnection: close\r\n\r\n{\"role\":\"replica\"}"
            };
            let _ = stream.get_mut().write_all(answer).await;
        }
    })
    .await
}

/// Two nodes, each with its REST API on a port of its own (`check_port`),
/// checked with Patroni's recipe (`OPTIONS /primary`, 200) and `on_down =
/// "close"`; clients write continuously, reconnecting when closed. The
/// APIs swap under load: no write lands on the old primary after tcplb saw
/// its check fail, every client of the old primary is closed, and they all
/// carry on on the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patroni_failover_under_load_moves_every_writer_to_the_new_primary() {
    let writes_a: Writes = Arc::default();
    let writes_b: Writes = Arc::default();
    let accepted_a = Arc::new(Mutex::new(Vec::new()));
    let db_a = database("A", writes_a.clone(), accepted_a.clone()).await;
    let db_b = database("B", writes_b.clone(), Arc::default()).await;
    let (a_primary, b_primary) = (
        Arc::new(AtomicBool::new(true)),
        Arc::new(AtomicBool::new(false)),
    );
    let a_said_no = Arc::new(Mutex::new(None));
    let api_a = patroni_api(a_primary.clone(), a_said_no.clone()).await;
    let api_b = patroni_api(b_primary.clone(), Arc::default()).await;
    let dir = TempDir::new("patroni");
    let lb = tcplb_with_file(
        &dir,
        &format!(
            r#"admin = "127.0.0.1:0"

[[listener]]
listen = "127.0.0.1:0"
backends = [
  {{ address = "{db_a}", check_port = {pa} }},
  {{ address = "{db_b}", check_port = {pb} }},
]
on_failure = "close"

[listener.health]
interval = "{INTERVAL}"
timeout = "1s"
on_down = "close"
http = {{ method = "OPTIONS", path = "/primary", expect_status = [200] }}
"#,
            pa = api_a.port(),
            pb = api_b.port()
        ),
    );
    let admin = lb.admin_addr().await;
    let (an, bn) = (db_a.to_string(), db_b.to_string());
    let (status, settled) = wait_status(admin, PATIENCE, |s| {
        backend_status(s, &an)["health"] == "up" && backend_status(s, &bn)["health"] == "down"
    })
    .await;
    assert!(settled, "{status}");
    assert_eq!(
        backend_status(&status, &bn)["check"]["reason"],
        "HTTP 503 (expected 200)"
    );

    // Writers: each writes a line every 10 ms and reconnects when closed.
    let stop = Arc::new(AtomicBool::new(false));
    let closed_on_a = Arc::new(AtomicUsize::new(0));
    let on_a_at_start = Arc::new(AtomicUsize::new(0));
    let mut writers = Vec::new();
    for client in 0..8 {
        let (stop, closed_on_a, on_a_at_start) =
            (stop.clone(), closed_on_a.clone(), on_a_at_start.clone());
        let addr = lb.addr;
        writers.push(tokio::spawn(async move {
            let mut first = true;
            let mut seq = 0u32;
            // Bounded: at most 2000 writes, or until told to stop.
            while seq < 2000 && !stop.load(Relaxed) {
                let Ok(stream) = TcpStream::connect(addr).await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let mut lines = BufReader::new(stream);
                let mut node = String::new();
                loop {
                    seq += 1;
                    let write = format!("client{client}-{seq}\n");
                    let mut answer = String::new();
                    let sent = lines.get_mut().write_all(write.as_bytes()).await.is_ok();
                    let read = sent && matches!(lines.read_line(&mut answer).await, Ok(n) if n > 0);
                    if !read {
                        if node == "ok A" {
                            closed_on_a.fetch_add(1, Relaxed);
                        }
                        break;
                    }
                    let answered = answer.trim().to_string();
                    if first {
                        first = false;
                        if answered == "ok A" {
                            on_a_at_start.fetch_add(1, Relaxed);
                        }
                    }
                    node = answered;
                    if stop.load(Relaxed) || seq >= 2000 {
                        return node;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            String::new()
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        on_a_at_start.load(Relaxed),
        8,
        "every writer starts on the primary"
    );

    // The failover: A's API says 503, B's 200.
    a_primary.store(false, Relaxed);
    b_primary.store(true, Relaxed);
    let flipped = Instant::now();
    let (status, failed) = wait_status(admin, PATIENCE, |s| {
        backend_status(s, &an)["check"]["result"] == "failed"
    })
    .await;
    assert!(failed, "A's check never failed: {status}");
    let seen_failed = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Relaxed);
    let mut last_nodes = Vec::new();
    for writer in writers {
        last_nodes.push(writer.await.unwrap());
    }
    let said_no = a_said_no.lock().unwrap().expect("A's API said 503");
    eprintln!(
        "A's API first said 503 {:?} after the flip; the test saw the failed check {:?} after it",
        said_no - flipped,
        seen_failed - said_no
    );

    // No write reached A once tcplb had seen its check fail, and no new
    // connection went to A after its API said no.
    let late: Vec<String> = writes_a
        .lock()
        .unwrap()
        .iter()
        .filter(|(at, _)| *at > seen_failed)
        .map(|(_, w)| w.clone())
        .collect();
    assert!(
        late.is_empty(),
        "writes landed on the old primary after its check failed: {late:?}"
    );
    let late_connections = accepted_a
        .lock()
        .unwrap()
        .iter()
        .filter(|at| **at > said_no)
        .count();
    assert_eq!(
        late_connections, 0,
        "new connections went to the old primary"
    );
    // Every client of the old primary was closed, and each carried on on B.
    assert_eq!(closed_on_a.load(Relaxed), 8, "every client of A closed");
    assert!(last_nodes.iter().all(|n| n == "ok B"), "{last_nodes:?}");
    assert!(!writes_b.lock().unwrap().is_empty());
    let status = status_json(admin).await;
    assert_eq!(backend_status(&status, &an)["health_closes"], 8);
    drop(lb);
}

// ---------------------------------------------------------------------------
// PostgreSQL

/// A real postgres, initialised in a temporary directory as nobody.
struct Postgres {
    addr: SocketAddr,
    process: Process,
    _dir: TempDir,
}

async fn postgres() -> Postgres {
    let initdb = server_program("initdb", "postgresql");
    let server = server_program("postgres", "postgresql");
    let dir = unprivileged_dir("postgres");
    let data = dir.arg("data");
    let mut init = spawn_unprivileged(
        &initdb,
        &["-D", &data, "-A", "trust", "-U", "postgres", "--no-sync"],
    );
    let status = init.wait_exit(PATIENCE).expect("initdb finished in time");
    assert!(status.success(), "initdb failed:\n{}", init.stderr_text());
    let port = free_port();
    let socket_dir = dir.0.to_str().unwrap().to_string();
    let mut process = spawn_unprivileged(
        &server,
        &[
            "-D",
            &data,
            "-p",
            &port.to_string(),
            "-k",
            &socket_dir,
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
        ],
    );
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_accepting(addr, &mut process).await;
    Postgres {
        addr,
        process,
        _dir: dir,
    }
}

/// PostgreSQL's SSLRequest step (`0000000804d2162f`, expect `S` or `N`)
/// and `pg_isready` as an exec check, against a real postgres: both pass;
/// with postgres gone both fail with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_passes_the_ssl_request_step_and_pg_isready() {
    let mut pg = postgres().await;
    let pg_isready = server_program("pg_isready", "postgresql-client");
    let dir = TempDir::new("postgres-lb");
    let lb = tcplb_with_file(
        &dir,
        &format!(
            r#"admin = "127.0.0.1:0"

[defaults]
on_failure = "close"
backends = ["{pg}"]

[[listener]]
name = "ssl-request"
listen = "127.0.0.1:0"
health = {{ interval = "{INTERVAL}", steps = [{{ send_hex = "0000000804d2162f" }}, {{ expect = "^[SN]", match = "regex" }}] }}

[[listener]]
name = "pg-isready"
listen = "127.0.0.1:0"
health = {{ interval = "{INTERVAL}", exec = ["{isready}", "-h", "{{host}}", "-p", "{{port}}", "-t", "2"] }}
"#,
            pg = pg.addr,
            isready = pg_isready.display()
        ),
    );
    let admin = lb.admin_addr().await;
    let name = pg.addr.to_string();
    let (status, up) = wait_status(admin, PATIENCE, |s| {
        backend_of(s, 0, &name)["check"]["result"] == "passed"
            && backend_of(s, 1, &name)["check"]["result"] == "passed"
    })
    .await;
    assert!(up, "{status}");
    assert_eq!(
        backend_of(&status, 0, &name)["check"]["reason"],
        "reply matched"
    );
    let isready = backend_of(&status, 1, &name)["check"]["reason"].clone();
    assert_eq!(
        isready,
        format!(
            "exit 0: 127.0.0.1:{} - accepting connections",
            pg.addr.port()
        )
    );

    // postgres gone: both fail, saying why.
    let _ = pg.process.child.kill();
    let _ = pg.process.child.wait();
    let (status, down) = wait_status(admin, PATIENCE, |s| {
        backend_of(s, 0, &name)["health"] == "down" && backend_of(s, 1, &name)["health"] == "down"
    })
    .await;
    assert!(down, "{status}");
    assert_eq!(
        backend_of(&status, 0, &name)["check"]["reason"],
        "connection refused"
    );
    let reason = backend_of(&status, 1, &name)["check"]["reason"].clone();
    assert!(
        reason.as_str().unwrap_or("").starts_with("exit 2: "),
        "{reason}"
    );
    drop(lb);
}

// ---------------------------------------------------------------------------
// MySQL (MariaDB)

/// MySQL's greeting recipe (a protocol-10 handshake packet, matched by a
/// regex) against a real mariadbd started as nobody: it passes, and a
/// backend that is not MySQL fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_greets_with_a_protocol_10_handshake() {
    let install = server_program("mariadb-install-db", "mariadb-server");
    let server = server_program("mariadbd", "mariadb-server");
    let dir = unprivileged_dir("mariadb");
    let data = dir.arg("data");
    let mut init = spawn_unprivileged(
        &install,
        &[
            "--no-defaults",
            &format!("--datadir={data}"),
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ],
    );
    let done = init
        .wait_exit(Duration::from_secs(120))
        .expect("mariadb-install-db finished");
    assert!(
        done.success(),
        "mariadb-install-db failed:\n{}",
        init.stderr_text()
    );
    let port = free_port();
    let mut db = spawn_unprivileged(
        &server,
        &[
            "--no-defaults",
            &format!("--datadir={data}"),
            &format!("--socket={}", dir.arg("sock")),
            &format!("--pid-file={}", dir.arg("pid")),
            &format!("--port={port}"),
            "--bind-address=127.0.0.1",
            "--skip-log-bin",
        ],
    );
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_accepting(addr, &mut db).await;
    let not_mysql = TestBackend::echo().await;
    let lb_dir = TempDir::new("mariadb-lb");
    let lb = tcplb_with_file(
        &lb_dir,
        &format!(
            r#"admin = "127.0.0.1:0"

[[listener]]
listen = "127.0.0.1:0"
backends = ["{addr}", "{other}"]
on_failure = "close"

[listener.health]
interval = "{INTERVAL}"
timeout = "500ms"
steps = [{{ expect = '(?s-u)^.{{3}}\x00\x0a[0-9]', match = "regex" }}]
"#,
            other = not_mysql.addr
        ),
    );
    let admin = lb.admin_addr().await;
    let (name, other) = (addr.to_string(), not_mysql.addr.to_string());
    let (status, settled) = wait_status(admin, PATIENCE, |s| {
        backend_status(s, &name)["check"]["result"] == "passed"
            && backend_status(s, &other)["health"] == "down"
    })
    .await;
    assert!(settled, "{status}");
    let reason = backend_status(&status, &other)["check"]["reason"].clone();
    assert!(
        reason
            .as_str()
            .unwrap_or("")
            .ends_with("got \"\" (no reply within 500ms)"),
        "{reason}"
    );
    // Many checks later, the server still greets (a check that closes
    // after the greeting does not get the checker's host blocked).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status = status_json(admin).await;
    assert_eq!(backend_status(&status, &name)["health"], "up", "{status}");
    drop((lb, db, not_mysql));
}
