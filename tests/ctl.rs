//! `tcplb ctl` against the real binary: human tables and lines, `--json`,
//! exit codes and one-line errors; runtime changes survive a restart with
//! `--state-file`; a bad token file stops tcplb at start; one command
//! changes and reads a fleet of instances, readiness included.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::{
    PATIENCE, TcplbProcess, TempDir, refusing_addr, spawn_process, tcplb_bin, wait_listening,
};
use serde_json::Value;

/// A temporary directory, removed on drop.
/// Three listening sockets as backends: the pool is only reported and
/// changed, never sent traffic, and a listener passes the connect check
/// from its backlog. They close when the test's guard drops.
fn backends() -> (
    Vec<std::net::TcpListener>,
    SocketAddr,
    SocketAddr,
    SocketAddr,
) {
    let listeners: Vec<std::net::TcpListener> = (0..3)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let addr = |i: usize| listeners[i].local_addr().unwrap();
    let (a, b, c) = (addr(0), addr(1), addr(2));
    (listeners, a, b, c)
}

fn write_config(dir: &TempDir, a: SocketAddr, b: SocketAddr) -> String {
    let path = dir.path("tcplb.toml");
    std::fs::write(
        &path,
        format!(
            "admin = \"127.0.0.1:0\"\nadmin_socket = {:?}\nadmin_token_file = {:?}\n\
             state_file = {:?}\n\
             [[listener]]\nname = \"web\"\nlisten = \"127.0.0.1:0\"\nbackends = [\"{a}\", \"{b}\"]\n\
             health = {{ interval = \"1h\" }}\n",
            dir.path("admin.sock"),
            dir.path("token"),
            dir.path("state.json"),
        ),
    )
    .unwrap();
    std::fs::write(dir.path("token"), "tok-123\n").unwrap();
    path.to_str().unwrap().to_string()
}

fn start(config: &str) -> (TcplbProcess, SocketAddr) {
    let mut command = Command::new(tcplb_bin());
    command.args(["--config", config]);
    let tcplb = wait_listening(spawn_process(command));
    let admin = admin_addr(&tcplb);
    (tcplb, admin)
}

/// The admin address the process logged.
fn admin_addr(tcplb: &TcplbProcess) -> SocketAddr {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let text = tcplb.process.stderr_text();
        let found = text.lines().find_map(|l| {
            let rest = l.split("admin endpoint on http://").nth(1)?;
            rest.split('/').next()?.parse().ok()
        });
        if let Some(addr) = found {
            return addr;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no admin line:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs `tcplb ctl ARGS` (bounded by its own 10 s timeout).
fn ctl(args: &[&str]) -> Output {
    Command::new(tcplb_bin())
        .arg("ctl")
        .args(args)
        .output()
        .expect("run tcplb ctl")
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = ctl(args);
    assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
    assert!(out.stderr.is_empty(), "{}", stderr(&out));
    stdout(&out)
}

fn socket(dir: &TempDir) -> String {
    format!("unix:{}", dir.arg("admin.sock"))
}

#[test]
fn ctl_prints_tables_lines_and_json_and_fails_in_one_line() {
    let dir = TempDir::new("human");
    let (_listening, a, b, _) = backends();
    let config = write_config(&dir, a, b);
    let (tcplb, admin) = start(&config);
    let admin = admin.to_string();
    let listen = tcplb.addr.to_string();

    let pools = ok(&["--admin", &admin, "pools"]);
    let w = listen.len();
    assert_eq!(
        pools,
        format!(
            "NAME  {:<w$}  STRATEGY     BACKENDS\nweb   {listen:<w$}  round-robin  2 (2 ready and up)\n",
            "LISTEN"
        )
    );

    // Over TCP, a change needs the token.
    let (an, bn) = (a.to_string(), b.to_string());
    let out = ctl(&["--admin", &admin, "weight", "web", &an, "3"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(
        stderr(&out).starts_with("error: 403 Forbidden: changes need write access"),
        "{}",
        stderr(&out)
    );
    assert_eq!(stderr(&out).lines().count(), 1);
    let token = dir.arg("token");
    let line = ok(&[
        "--admin",
        &admin,
        "--token-file",
        &token,
        "weight",
        "web",
        &an,
        "3",
    ]);
    assert_eq!(line, format!("web {an}: weight 1 -> 3\n"));
    let line = ok(&[
        "--admin",
        &socket(&dir),
        "drain",
        "web",
        &bn,
        "--deadline",
        "1h",
    ]);
    assert_eq!(
        line,
        format!("web {bn}: state ready -> drain, closing what is left in 1h\n")
    );

    let table = ok(&["--admin", &admin, "backends", "web"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        [
            "POOL",
            "BACKEND",
            "ADDRESS",
            "STATE",
            "HEALTH",
            "WEIGHT",
            "EFFECTIVE",
            "ACTIVE",
            "BACKUP",
            "DEADLINE"
        ]
    );
    let row_a: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        row_a,
        ["web", &an, &an, "ready", "up", "3", "3.0", "0", "no", "-"]
    );
    let row_b: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(
        &row_b[..9],
        ["web", &bn, &bn, "drain", "up", "1", "1.0", "0", "no"]
    );
    assert!(row_b[9].ends_with('Z'), "a deadline: {row_b:?}");
    // Aligned: every column starts where its header does.
    let starts = |line: &str| -> Vec<usize> {
        let mut out = Vec::new();
        let mut prev = ' ';
        for (i, c) in line.char_indices() {
            if c != ' ' && prev == ' ' {
                out.push(i);
            }
            prev = c;
        }
        out
    };
    assert_eq!(starts(lines[0]), starts(lines[1]), "{table}");

    let raw = ok(&["--admin", &admin, "--json", "backends", "web"]);
    // The API's own bytes, in its field order.
    assert!(
        raw.starts_with(&format!(
            "{{\"pool\":\"web\",\"backends\":[{{\"name\":\"{an}\",\"address\":\"{an}\","
        )),
        "{raw}"
    );
    let json: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(json["pool"], "web");
    assert_eq!(json["backends"][0]["weight"], 3);
    assert_eq!(json["backends"][1]["admin_state"], "drain");
    let json: Value = serde_json::from_str(&ok(&[
        "--json",
        "--admin",
        &socket(&dir),
        "ready",
        "web",
        &bn,
    ]))
    .unwrap();
    assert_eq!(json["change"], "state drain -> ready");

    // An unknown backend: the server's words, exit 1.
    let out = ctl(&["--admin", &socket(&dir), "drain", "web", "127.0.0.1:1"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "error: 404 Not Found: no backend 127.0.0.1:1 in this pool\n"
    );
    let out = ctl(&["--admin", &admin, "backends", "nope"]);
    assert_eq!(stderr(&out), "error: 404 Not Found: no pool nope\n");

    // Nothing listening: a clear line, exit 1.
    let refused = refusing_addr().to_string();
    let out = ctl(&["--admin", &refused, "pools"]);
    assert_eq!(out.status.code(), Some(1));
    let text = stderr(&out);
    assert!(
        text.starts_with(&format!(
            "error: cannot connect to {refused}: Connection refused"
        )),
        "{text}"
    );
    assert_eq!(text.lines().count(), 1);

    // Bad arguments: clap's message, exit 2, nothing sent.
    let out = ctl(&["--admin", &admin, "weight", "web", &an, "0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("0 is not in 1..=10000"),
        "{}",
        stderr(&out)
    );
    let out = ctl(&["--admin", &admin, "frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    drop(tcplb);
}

#[test]
fn runtime_changes_survive_a_restart_with_the_state_file() {
    let dir = TempDir::new("restart");
    let (_listening, a, b, c) = backends();
    let config = write_config(&dir, a, b);
    let (an, bn, cn) = (a.to_string(), b.to_string(), c.to_string());
    let sock = socket(&dir);
    let (mut tcplb, _) = start(&config);
    ok(&["--admin", &sock, "maintenance", "web", &an]);
    ok(&["--admin", &sock, "remove", "web", &bn]);
    let added = ok(&[
        "--admin",
        &sock,
        "add",
        "web",
        &cn,
        "--weight",
        "4",
        "--maxconn",
        "9",
    ]);
    assert_eq!(added, format!("web {cn}: added (weight 4)\n"));
    tcplb.process.sigterm();
    let status = tcplb
        .process
        .wait_exit(PATIENCE)
        .expect("tcplb exits on SIGTERM");
    assert!(status.success(), "{status}");
    assert!(
        !Path::new(&dir.path("admin.sock")).exists(),
        "the socket is removed on exit"
    );

    let (tcplb, _) = start(&config);
    let json: Value =
        serde_json::from_str(&ok(&["--admin", &sock, "--json", "backends", "web"])).unwrap();
    let list: Vec<(String, String, u64)> = json["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["name"].as_str().unwrap().to_string(),
                b["admin_state"].as_str().unwrap().to_string(),
                b["weight"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        list,
        [
            (an.clone(), "maintenance".to_string(), 1),
            (cn.clone(), "ready".to_string(), 4)
        ]
    );
    assert!(
        tcplb
            .process
            .stderr_text()
            .contains("runtime changes for 1 pool(s) restored"),
        "{}",
        tcplb.process.stderr_text()
    );
}

/// `GET /ready` on `admin`: the status line and the body.
fn ready(admin: SocketAddr) -> (String, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(admin).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.write_all(b"GET /ready HTTP/1.1\r\n\r\n").unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    let (head, body) = reply.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_string(), body.to_string())
}

/// Waits (up to PATIENCE) for `/ready` on `admin` to answer `status`.
fn wait_ready(admin: SocketAddr, status: &str) -> String {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let (line, body) = ready(admin);
        if line.contains(status) {
            return body;
        }
        assert!(std::time::Instant::now() < deadline, "{line}: {body}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_fleet_is_one_command_and_readiness_is_kept_across_a_restart() {
    let (_listening, a, b, _) = backends();
    let dirs = [TempDir::new("fleet-a"), TempDir::new("fleet-b")];
    let configs: Vec<String> = dirs.iter().map(|d| write_config(d, a, b)).collect();
    let mut fleet: Vec<(TcplbProcess, SocketAddr)> = configs.iter().map(|c| start(c)).collect();
    let socks: Vec<String> = dirs.iter().map(socket).collect();
    for (_, admin) in &fleet {
        assert_eq!(wait_ready(*admin, "200 OK"), "ready\n");
    }
    let both = ["--admin", &socks[0], "--admin", &socks[1]];
    fn with<'a>(both: &[&'a str], rest: &[&'a str]) -> Vec<&'a str> {
        [both, rest].concat()
    }

    // One change, every instance, a line each in the order given.
    let an = a.to_string();
    let lines = ok(&with(&both, &["drain", "web", &an]));
    assert_eq!(
        lines,
        format!(
            "{}: web {an}: state ready -> drain\n{}: web {an}: state ready -> drain\n",
            socks[0], socks[1]
        )
    );
    // Reads show every instance, in one table.
    let table = ok(&with(&both, &["backends", "web"]));
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0][..3], ["INSTANCE", "POOL", "BACKEND"]);
    assert_eq!(rows.len(), 5, "{table}");
    for (row, sock) in rows[1..]
        .iter()
        .zip([&socks[0], &socks[0], &socks[1], &socks[1]])
    {
        assert_eq!(row[0], sock.as_str(), "{table}");
    }
    assert_eq!((rows[1][2], rows[1][4]), (an.as_str(), "drain"));

    // Readiness off for the fleet: /ready turns 503 on each, with the reason.
    let lines = ok(&with(&both, &["ready", "off"]));
    for (line, sock) in lines.lines().zip(&socks) {
        assert_eq!(
            line,
            format!(
                "{sock}: ready on -> off: not ready: turned off by an operator (tcplb ctl ready on)"
            )
        );
    }
    for (_, admin) in &fleet {
        let (status, body) = ready(*admin);
        assert_eq!(status, "HTTP/1.1 503 Service Unavailable");
        assert_eq!(
            body,
            "not ready: turned off by an operator (tcplb ctl ready on)\n"
        );
    }
    // Again: no change, still a success.
    assert!(ok(&with(&both, &["ready", "off"])).contains(": no change: not ready"));
    // Over TCP without the token, a read works and a change is refused.
    let tcp: Vec<String> = fleet.iter().map(|(_, admin)| admin.to_string()).collect();
    let shown = ok(&["--admin", &tcp[0], "ready"]);
    assert_eq!(
        shown,
        "not ready: turned off by an operator (tcplb ctl ready on)\n"
    );
    let out = ctl(&["--admin", &tcp[0], "ready", "on"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("403 Forbidden"), "{}", stderr(&out));

    // One instance unreachable: the others are changed, each outcome is
    // reported, and the exit code says it failed.
    let refused = refusing_addr().to_string();
    let out = ctl(&[
        "--admin", &socks[0], "--admin", &refused, "weight", "web", &an, "5",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stdout(&out),
        format!("{}: web {an}: weight 1 -> 5\n", socks[0])
    );
    let text = stderr(&out);
    assert!(
        text.starts_with(&format!("error: {refused}: cannot connect to {refused}")),
        "{text}"
    );
    assert!(text.ends_with("error: 1 of 2 instances failed\n"), "{text}");
    // Addresses from a file, with --json: one object, every instance.
    let list = dirs[0].path("fleet.txt");
    std::fs::write(&list, format!("# the fleet\n{}\n{}\n", socks[0], socks[1])).unwrap();
    let raw = ok(&["--admin-file", list.to_str().unwrap(), "--json", "ready"]);
    let json: Value = serde_json::from_str(&raw).unwrap();
    let instances = json["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 2);
    for (instance, sock) in instances.iter().zip(&socks) {
        assert_eq!(instance["admin"], sock.as_str());
        assert_eq!(instance["answer"]["ready"], false);
        assert_eq!(instance["answer"]["reasons"][0], "operator");
    }

    // Restarted with its state file, an instance is still off: taken out
    // for maintenance, it does not come back by itself.
    let (first, _) = &mut fleet[0];
    first.process.sigterm();
    assert!(first.process.wait_exit(PATIENCE).expect("exits").success());
    fleet[0] = start(&configs[0]);
    let admin = fleet[0].1;
    let body = wait_ready(admin, "503");
    assert!(body.contains("turned off by an operator"), "{body}");
    ok(&with(&both, &["ready", "on"]));
    for (_, admin) in &fleet {
        assert_eq!(wait_ready(*admin, "200 OK"), "ready\n");
    }
    let metrics = {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(admin).unwrap();
        stream.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        text
    };
    assert!(metrics.contains("\ntcplb_ready 1\n"), "{metrics}");
    assert!(
        metrics.contains("tcplb_admin_changes_total{action=\"ready_on\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tcplb_not_ready{reason=\"operator\"} 0\n"),
        "{metrics}"
    );
}

#[test]
fn a_missing_or_empty_token_file_stops_tcplb_at_start() {
    let dir = TempDir::new("token");
    let empty = dir.path("empty");
    std::fs::write(&empty, "\n").unwrap();
    for (file, says) in [
        (dir.path("missing"), "cannot read the admin token file"),
        (empty, "is empty"),
    ] {
        let mut command = Command::new(tcplb_bin());
        command.args([
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--admin-token-file",
            file.to_str().unwrap(),
        ]);
        let mut process = spawn_process(command);
        let status = process.wait_exit(PATIENCE).expect("tcplb exits");
        assert_eq!(status.code(), Some(1));
        // The reader thread may still be catching up with the pipe.
        let deadline = std::time::Instant::now() + PATIENCE;
        while !process.stderr_text().contains(says) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let text = process.stderr_text();
        assert!(text.starts_with("error: "), "{text}");
        assert!(text.contains(says), "{text}");
        assert!(text.contains(file.to_str().unwrap()), "{text}");
    }
}
