//! The health-check flags through the real binary: an agent that says
//! drain, 50%, maint, `down #disk full` and malformed lines; an exec check
//! that hangs (killed at the timeout, no zombie) and the exec concurrency
//! bound; HTTP checks with malformed answers; `--on-backup-up close`; the
//! panic threshold; and the passive ejection cap with ejections growing to
//! `--max-ejection-time`. Every new health flag is given here at least
//! once (--health-expect-match and --on-down in health_servers.rs).

mod common;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{
    PATIENCE, TempDir, TestBackend, backend_status, hello_port, http_get, read_head, refusing_addr,
    serve_each, spawn_tcplb, status_json, tcplb_bin, wait_status,
};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Which backend ports `n` requests through `addr` reached.
async fn spread(addr: SocketAddr, n: usize) -> Vec<u16> {
    let mut ports = Vec::new();
    for _ in 0..n {
        ports.push(hello_port(&http_get(addr).await));
    }
    ports
}

// ---------------------------------------------------------------------------
// Agent

/// An agent: answers every connection with the current `line`, after
/// reading what tcplb sends (up to a newline), which it keeps.
async fn agent_on(
    ip: &str,
    line: Arc<Mutex<Vec<u8>>>,
    received: Arc<Mutex<Vec<String>>>,
) -> SocketAddr {
    serve_each(ip, move |stream| {
        let (line, received) = (line.clone(), received.clone());
        async move {
            let mut stream = BufReader::new(stream);
            let mut sent = String::new();
            let wait = Duration::from_millis(300);
            let _ = tokio::time::timeout(wait, stream.read_line(&mut sent)).await;
            received.lock().unwrap().push(sent);
            let answer = line.lock().unwrap().clone();
            let _ = stream.get_mut().write_all(&answer).await;
        }
    })
    .await
}

/// `tcplb ctl` against the admin socket (write access without a token).
fn ctl(socket: &str, args: &[&str]) -> String {
    let out = Command::new(tcplb_bin())
        .args(["ctl", "--admin", &format!("unix:{socket}")])
        .args(args)
        .output()
        .expect("run tcplb ctl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A backend's agent drains it, takes half its weight, puts it in
/// maintenance and says it is down with a reason; the operator's drain
/// wins over the agent's ready; malformed answers change nothing and say
/// why; `tcplb ctl health` shows both words.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_drains_reweights_maintains_and_downs_its_backend_and_the_operator_wins() {
    let a = TestBackend::on(
        std::net::TcpListener::bind("127.0.0.2:0").unwrap(),
        |l| async move {
            let _ = tcplb::demo::serve_http(l).await;
        },
    );
    let b = TestBackend::http().await;
    let line = Arc::new(Mutex::new(b"up\n".to_vec()));
    let received = Arc::new(Mutex::new(Vec::new()));
    let agent = agent_on("127.0.0.2", line.clone(), received.clone()).await;
    let dir = TempDir::new("agent");
    let socket = dir.arg("admin.sock");
    let (an, bn) = (a.addr.to_string(), b.addr.to_string());
    let lb = spawn_tcplb(&[
        "--name",
        "web",
        "--backend",
        &format!("{an}=4"),
        "--backend",
        &format!("{bn}=4"),
        "--agent-port",
        &agent.port().to_string(),
        "--agent-send",
        "web/a\\n",
        "--agent-interval",
        "100ms",
        "--health-interval",
        "200ms",
        "--admin",
        "127.0.0.1:0",
        "--admin-socket",
        &socket,
    ]);
    let admin = lb.admin_addr().await;
    let say = |text: &[u8]| *line.lock().unwrap() = text.to_vec();
    let agent_of = |s: &Value, name: &str| backend_status(s, name)["agent"].clone();

    let (status, asked) =
        wait_status(admin, PATIENCE, |s| agent_of(s, &an)["result"] == "passed").await;
    assert!(asked, "{status}");
    assert_eq!(
        received.lock().unwrap()[0],
        "web/a\n",
        "agent_send reached the agent"
    );
    // B's agent port has no agent: nothing changes for B, and it says so.
    let (status, _) =
        wait_status(admin, PATIENCE, |s| agent_of(s, &bn)["result"] == "failed").await;
    assert_eq!(agent_of(&status, &bn)["reason"], "connection refused");
    assert_eq!(backend_status(&status, &bn)["health"], "up");

    // drain: A keeps its operator's "ready", the state in force is drain.
    say(b"drain\n");
    let (status, drained) = wait_status(admin, PATIENCE, |s| {
        backend_status(s, &an)["state"] == "drain"
    })
    .await;
    assert!(drained, "{status}");
    assert_eq!(backend_status(&status, &an)["admin_state"], "ready");
    assert!(
        spread(lb.addr, 12)
            .await
            .iter()
            .all(|&p| p == b.addr.port()),
        "no new connection to A"
    );

    // ready 50%: back in, at half its weight (2 against B's 4).
    say(b"ready 50%\n");
    let (status, halved) = wait_status(admin, PATIENCE, |s| {
        backend_status(s, &an)["state"] == "ready" && agent_of(s, &an)["weight_percent"] == 50
    })
    .await;
    assert!(halved, "{status}");
    assert_eq!(
        backend_status(&status, &an)["weight"],
        4,
        "the operator's weight is kept"
    );
    assert_eq!(backend_status(&status, &an)["effective_weight"], 2.0);
    let ports = spread(lb.addr, 30).await;
    let to_a = ports.iter().filter(|&&p| p == a.addr.port()).count();
    assert!((8..=12).contains(&to_a), "A took {to_a} of 30 at 2:4");

    // maint: out of rotation, still checked.
    say(b"maint\n");
    let (status, maint) = wait_status(admin, PATIENCE, |s| {
        backend_status(s, &an)["state"] == "maintenance"
    })
    .await;
    assert!(maint, "{status}");
    assert!(spread(lb.addr, 6).await.iter().all(|&p| p == b.addr.port()));

    // The operator drains A; the agent's ready does not undo that.
    ctl(&socket, &["drain", "web", &an]);
    say(b"ready\n");
    let (status, ready) =
        wait_status(admin, PATIENCE, |s| agent_of(s, &an)["state"] == "ready").await;
    assert!(ready, "{status}");
    assert_eq!(
        backend_status(&status, &an)["state"],
        "drain",
        "the operator's word wins"
    );
    let health = ctl(&socket, &["health", "web"]);
    let row = health
        .lines()
        .find(|l| l.contains(&an))
        .unwrap_or_default()
        .to_string();
    assert!(
        row.contains(" drain ") && row.contains("agent: ready"),
        "{health}"
    );
    ctl(&socket, &["ready", "web", &an]);

    // down with a reason: down, whatever the checks say, and why.
    say(b"down #disk full\n");
    let (status, down) = wait_status(admin, PATIENCE, |s| {
        backend_status(s, &an)["health"] == "down"
    })
    .await;
    assert!(down, "{status}");
    let entry = backend_status(&status, &an);
    assert_eq!(entry["health_reason"], "agent: down #disk full");
    assert_eq!(entry["check"]["result"], "passed", "the checks still pass");
    assert!(spread(lb.addr, 6).await.iter().all(|&p| p == b.addr.port()));
    say(b"up\n");
    let (status, up) = wait_status(admin, PATIENCE, |s| {
        backend_status(s, &an)["health"] == "up"
    })
    .await;
    assert!(up, "{status}");

    // Malformed answers: a clear reason, nothing changed, nothing crashed.
    let mut endless = vec![b'x'; 2000];
    endless.push(b'\n');
    for (answer, reason) in [
        (
            &b"sideways\n"[..],
            "malformed answer \"sideways\": unknown word \"sideways\"",
        ),
        (b"\xff\xfe\n", "not text"),
        (b"150% maxconn:many\n", "bad \"maxconn:many\""),
        (
            &endless[..],
            "answer longer than 1024 bytes without a newline",
        ),
        (b"", "empty answer"),
    ] {
        say(answer);
        let (status, said) = wait_status(admin, PATIENCE, |s| {
            agent_of(s, &an)["reason"]
                .as_str()
                .is_some_and(|r| r.contains(reason))
        })
        .await;
        assert!(said, "{answer:?}: {status}");
        let entry = backend_status(&status, &an);
        assert_eq!(
            (&entry["health"], &entry["state"], &entry["agent"]["result"]),
            (&"up".into(), &"ready".into(), &"failed".into()),
            "{answer:?}"
        );
    }
    assert!(
        lb.process
            .stderr_text()
            .lines()
            .all(|l| !l.contains("panicked"))
    );
    assert!(
        spread(lb.addr, 4).await.contains(&a.addr.port()),
        "A still serves"
    );
    drop((lb, a, b));
}

// ---------------------------------------------------------------------------
// Exec

fn script(dir: &TempDir, name: &str, body: &str) -> String {
    let path = dir.path(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.to_str().unwrap().to_string()
}

/// The state letter and parent pid of process `pid`, if it exists.
fn proc_state(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(") ")?.1;
    let mut fields = after.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let parent = fields.next()?.parse().ok()?;
    Some((state, parent))
}

/// Zombie children of `pid`.
fn zombies_of(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| proc_state(p).is_some_and(|(s, parent)| s == 'Z' && parent == pid))
        .collect()
}

/// An exec check that hangs (a shell with a child of its own) is killed at
/// the timeout, whole group, the backend marked down with the reason, and
/// tcplb is left with no zombie.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_exec_check_is_killed_at_the_timeout_and_leaves_no_zombie() {
    let backend = TestBackend::http().await;
    let dir = TempDir::new("exec-hang");
    let pids = dir.path("pids");
    let hang = script(
        &dir,
        "hang.sh",
        &format!(
            "echo $$ >> {p}\nsleep 600 &\necho $! >> {p}\nwait",
            p = pids.display()
        ),
    );
    let name = backend.addr.to_string();
    let lb = spawn_tcplb(&[
        "--backend",
        &name,
        "--health-exec",
        &format!("{hang} {{host}} {{port}}"),
        "--health-timeout",
        "300ms",
        "--health-interval",
        "500ms",
        "--admin",
        "127.0.0.1:0",
    ]);
    let admin = lb.admin_addr().await;
    let (status, down) = wait_status(admin, PATIENCE, |s| {
        backend_status(s, &name)["health"] == "down"
    })
    .await;
    assert!(down, "{status}");
    let check = backend_status(&status, &name)["check"].clone();
    assert_eq!(check["type"], "exec");
    assert_eq!(check["reason"], "no answer within 300ms");
    // Three more rounds, then every child and grandchild must be gone.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let started: Vec<u32> = std::fs::read_to_string(&pids)
        .unwrap()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    assert!(started.len() >= 6, "at least three runs: {started:?}");
    let tcplb_pid = lb.pid();
    let deadline = Instant::now() + PATIENCE;
    loop {
        // A round may have one running right now: only finished ones count.
        let running: Vec<u32> = started[..started.len() - 2]
            .iter()
            .copied()
            .filter(|&p| proc_state(p).is_some_and(|(s, _)| s != 'Z'))
            .collect();
        let zombies = zombies_of(tcplb_pid);
        if running.is_empty() && zombies.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still running: {running:?}; zombies of tcplb: {zombies:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(lb);
}

/// At most 16 exec checks run at once, however many backends the pool has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_checks_run_at_most_sixteen_at_once() {
    let dir = TempDir::new("exec-bound");
    let running = dir.path("running");
    std::fs::create_dir(&running).unwrap();
    let seen = dir.path("seen");
    let check = script(
        &dir,
        "count.sh",
        &format!(
            "touch {r}/$1\nsleep 0.3\nls {r} | wc -l >> {s}\nsleep 0.3\nrm -f {r}/$1",
            r = running.display(),
            s = seen.display()
        ),
    );
    let backends: Vec<String> = (0..20).map(|_| refusing_addr().to_string()).collect();
    let mut args = vec![
        "--health-exec".to_string(),
        format!("{check} {{port}}"),
        "--health-timeout".into(),
        "10s".into(),
        "--health-interval".into(),
        "1h".into(),
        "--admin".into(),
        "127.0.0.1:0".into(),
    ];
    for b in &backends {
        args.extend(["--backend".into(), b.clone()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let lb = spawn_tcplb(&args);
    let admin = lb.admin_addr().await;
    let (status, done) = wait_status(admin, PATIENCE, |s| {
        s["listeners"][0]["backends"]
            .as_array()
            .is_some_and(|all| all.iter().all(|b| b["check"]["result"] == "passed"))
    })
    .await;
    assert!(done, "{status}");
    let counts: Vec<usize> = std::fs::read_to_string(&seen)
        .unwrap()
        .split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect();
    assert_eq!(counts.len(), 20, "{counts:?}");
    let most = counts.iter().copied().max().unwrap_or(0);
    assert!(
        (2..=16).contains(&most),
        "at most 16 at once, and some at once: {counts:?}"
    );
    drop(lb);
}

// ---------------------------------------------------------------------------
// HTTP

/// A server answering every connection with `reply` after reading the
/// request head, which it keeps.
async fn canned(reply: &'static [u8], heads: Arc<Mutex<Vec<String>>>) -> SocketAddr {
    serve_each("127.0.0.1", move |stream| {
        let heads = heads.clone();
        async move {
            let mut stream = BufReader::new(stream);
            let head = read_head(&mut stream).await;
            heads.lock().unwrap().push(head);
            let _ = stream.get_mut().write_all(reply).await;
        }
    })
    .await
}

/// HTTP checks from the flags: the request as configured (method, path,
/// Host), the status and body judged; garbage, a wrong status and a wrong
/// body each fail with a clear reason, and tcplb serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_checks_judge_status_and_body_and_name_malformed_answers() {
    let heads = Arc::new(Mutex::new(Vec::new()));
    let good = canned(
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nrole=ready",
        heads.clone(),
    )
    .await;
    let garbage = canned(b"SSH-2.0-OpenSSH_9.2p1\r\n", Arc::default()).await;
    let wrong_status = canned(
        b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n",
        Arc::default(),
    )
    .await;
    let wrong_body = canned(
        b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nrole=busy",
        Arc::default(),
    )
    .await;
    let truncated = canned(
        b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\nrole=",
        Arc::default(),
    )
    .await;
    let all = [good, garbage, wrong_status, wrong_body, truncated].map(|a| a.to_string());
    let mut args = vec![
        "--health-http",
        "HEAD /health?deep=1",
        "--health-http-host",
        "db.example:8008",
        "--health-expect-status",
        "200,204",
        "--health-interval",
        "200ms",
        "--admin",
        "127.0.0.1:0",
    ];
    for b in &all {
        args.extend(["--backend", b.as_str()]);
    }
    let lb = spawn_tcplb(&args);
    let admin = lb.admin_addr().await;
    let (status, judged) = wait_status(admin, PATIENCE, |s| {
        all.iter()
            .all(|b| backend_status(s, b)["check"].is_object())
            && backend_status(s, &all[0])["health"] == "up"
    })
    .await;
    assert!(judged, "{status}");
    let reason = |b: &str| {
        backend_status(&status, b)["check"]["reason"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    // HEAD: the answer has no body to read, only the status counts.
    let head = heads.lock().unwrap()[0].to_ascii_lowercase();
    assert!(
        head.starts_with("head /health?deep=1 http/1.1\r\n"),
        "{head}"
    );
    assert!(head.contains("host: db.example:8008\r\n"), "{head}");
    assert!(
        reason(&all[1]).starts_with("bad HTTP response: "),
        "{}",
        reason(&all[1])
    );
    assert_eq!(reason(&all[2]), "HTTP 500 (expected 200,204)");
    for (b, health) in all.iter().zip(["up", "down", "down", "up", "up"]) {
        assert_eq!(
            backend_status(&status, b)["health"],
            health,
            "{b}: {status}"
        );
    }
    drop(lb);

    // GET, so the body is read: the wrong body and the cut one fail.
    let mut args = vec![
        "--health-http",
        "/health",
        "--health-expect-body",
        "role=ready",
        "--health-interval",
        "200ms",
        "--admin",
        "127.0.0.1:0",
    ];
    for b in &all {
        args.extend(["--backend", b.as_str()]);
    }
    let lb = spawn_tcplb(&args);
    let admin = lb.admin_addr().await;
    let (status, judged) = wait_status(admin, PATIENCE, |s| {
        all.iter()
            .all(|b| backend_status(s, b)["check"].is_object())
    })
    .await;
    assert!(judged, "{status}");
    let reason = |b: &str| {
        backend_status(&status, b)["check"]["reason"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(reason(&all[0]), "HTTP 200, body matched");
    assert!(
        reason(&all[3]).starts_with("HTTP 200, but the body lacks \"role=ready\""),
        "{}",
        reason(&all[3])
    );
    assert!(
        reason(&all[4]).starts_with("bad HTTP response: "),
        "{}",
        reason(&all[4])
    );
    // tcplb serves on: the good backend answers through it.
    let mut client = TcpStream::connect(lb.addr).await.unwrap();
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut answer = vec![0u8; 15];
    client.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200 OK");
    drop(lb);
}

// ---------------------------------------------------------------------------
// What happens when health changes

/// `--on-backup-up close`: while the primary is down its clients go to
/// the backup; when it is back up, the backup's connections are closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_backup_up_close_sends_the_backups_clients_back_to_the_primary() {
    let mut primary = TestBackend::echo().await;
    let backup = TestBackend::echo().await;
    let (pn, bn) = (primary.addr.to_string(), backup.addr.to_string());
    let lb = spawn_tcplb(&[
        "--backend",
        &pn,
        "--backup",
        &bn,
        "--on-backup-up",
        "close",
        "--health-interval",
        "200ms",
        "--admin",
        "127.0.0.1:0",
    ]);
    let admin = lb.admin_addr().await;
    primary.kill().await;
    let (status, down) = wait_status(admin, PATIENCE, |s| {
        backend_status(s, &pn)["health"] == "down"
    })
    .await;
    assert!(down, "{status}");
    let mut on_backup = TcpStream::connect(lb.addr).await.unwrap();
    on_backup.write_all(b"ping").await.unwrap();
    let mut echo = [0u8; 4];
    on_backup.read_exact(&mut echo).await.unwrap();
    assert_eq!(backend_status(&status_json(admin).await, &bn)["active"], 1);
    primary.revive().await;
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(PATIENCE, on_backup.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "the backup's client is still open after the primary came back"
    );
    let status = status_json(admin).await;
    assert_eq!(backend_status(&status, &pn)["health"], "up");
    assert_eq!(backend_status(&status, &bn)["health_closes"], 1);
    drop((lb, primary, backup));
}

/// `--panic-threshold 50`: with two of three primaries down, connections
/// are balanced over all three (the dead ones fail and are retried), and
/// entering and leaving panic are logged once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn below_the_panic_threshold_every_ready_primary_is_picked() {
    let alive = TestBackend::http().await;
    let mut b = TestBackend::http().await;
    let mut c = TestBackend::http().await;
    let names = [&alive, &b, &c].map(|x| x.addr.to_string());
    let lb = spawn_tcplb(&[
        "--backend",
        &names[0],
        "--backend",
        &names[1],
        "--backend",
        &names[2],
        "--panic-threshold",
        "50",
        "--retries",
        "2",
        "--fall",
        "1",
        "--health-interval",
        "200ms",
        "--admin",
        "127.0.0.1:0",
    ]);
    let admin = lb.admin_addr().await;
    b.kill().await;
    c.kill().await;
    let (status, panicked) = wait_status(admin, PATIENCE, |s| {
        s["listeners"][0]["panic"]["active"] == true
    })
    .await;
    assert!(panicked, "{status}");
    let failures = |s: &Value, i: usize| {
        backend_status(s, &names[i])["connect_failures"]
            .as_u64()
            .unwrap_or(0)
    };
    let before = [failures(&status, 1), failures(&status, 2)];
    let ports = spread(lb.addr, 24).await;
    assert!(
        ports.iter().all(|&p| p == alive.addr.port()),
        "every client served by retries"
    );
    let status = status_json(admin).await;
    assert!(
        failures(&status, 1) > before[0] && failures(&status, 2) > before[1],
        "the down ones were picked: {status}"
    );
    b.revive().await;
    let (status, over) = wait_status(admin, PATIENCE, |s| {
        s["listeners"][0]["panic"]["active"] == false
    })
    .await;
    assert!(over, "{status}");
    assert_eq!(status["listeners"][0]["panic"]["entered"], 1);
    let log = lb.process.stderr_text();
    assert_eq!(log.matches("PANIC").count(), 1, "{log}");
    assert_eq!(log.matches("panic over").count(), 1, "{log}");
    drop((lb, alive, b, c));
}

/// `--max-ejection-percent 25` of four backends: however many fail, one
/// at most is ejected at once (the others are counted as capped), and an
/// ejection that repeats lasts longer, up to `--max-ejection-time`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_ejection_is_capped_and_grows_to_the_maximum() {
    let a = TestBackend::http().await;
    let b = TestBackend::http().await;
    let dead = [refusing_addr(), refusing_addr()].map(|x| x.to_string());
    let (an, bn) = (a.addr.to_string(), b.addr.to_string());
    let lb = spawn_tcplb(&[
        "--backend",
        &an,
        "--backend",
        &bn,
        "--backend",
        &dead[0],
        "--backend",
        &dead[1],
        "--max-fails",
        "1",
        "--fail-timeout",
        "1s",
        "--max-ejection-percent",
        "25",
        "--max-ejection-time",
        "1500ms",
        // Failed connects must not take them down through `fall` here.
        "--fall",
        "1000000",
        "--health-interval",
        "1h",
        "--admin",
        "127.0.0.1:0",
    ]);
    let admin = lb.admin_addr().await;
    let started = Instant::now();
    let mut most_out = 0;
    // Bounded: 300 requests or 6 s.
    for _ in 0..300 {
        if started.elapsed() > Duration::from_secs(6)
            || lb.process.stderr_text().contains("for 1.5s")
        {
            break;
        }
        let _ = http_get(lb.addr).await;
        let status = status_json(admin).await;
        let out = status["listeners"][0]["backends"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x["ejected"] == true)
            .count();
        most_out = most_out.max(out);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(most_out, 1, "25% of 4: one ejected at most at once");
    let status = status_json(admin).await;
    let ejections = &status["listeners"][0]["ejections"];
    assert!(
        ejections["ejected"].as_u64().unwrap_or(0) >= 2,
        "{ejections}"
    );
    assert!(
        ejections["capped"].as_u64().unwrap_or(0) >= 1,
        "{ejections}"
    );
    let log = lb.process.stderr_text();
    assert!(
        log.contains("out of rotation for 1s after 1 failed connects"),
        "{log}"
    );
    assert!(
        log.contains("out of rotation for 1.5s after 1 failed connects"),
        "grew to the cap: {log}"
    );
    drop((lb, a, b));
}
