//! The real `tcplb` executable: start-up errors and their exit codes,
//! `--help`, and the graceful shutdown on SIGTERM.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Runs tcplb to completion (it must exit by itself, e.g. on a bad flag).
fn run_tcplb(args: &[&str]) -> Output {
    let mut command = Command::new(tcplb_bin());
    command.args(args);
    let mut process = spawn_process(command);
    let status = process
        .wait_exit(PATIENCE)
        .unwrap_or_else(|| panic!("tcplb {args:?} did not exit"));
    process.wait_stderr_read();
    Output {
        status,
        stdout: Vec::new(),
        stderr: process.stderr_text().into_bytes(),
    }
}

#[test]
fn malformed_backend_exits_2_naming_the_value() {
    for bad in ["127.0.0.1", "127.0.0.1:99999", "localhost:port", "::1:80"] {
        let out = run_tcplb(&["--listen", "127.0.0.1:0", "--backend", bad]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {stderr}");
        assert!(
            stderr.contains(bad),
            "stderr does not name {bad:?}: {stderr}"
        );
    }
}

/// Every flag that takes a value, with a value it must refuse.
const BAD_VALUES: &[(&str, &str)] = &[
    ("--listen", "127.0.0.1"),
    ("--backend", "127.0.0.1:80=0"),
    ("--strategy", "random"),
    ("--connect-timeout", "0s"),
    ("--retries", "-1"),
    ("--on-failure", "maybe"),
    ("--health-interval", "10 parsecs"),
    ("--health-timeout", "soon"),
    ("--rise", "0"),
    ("--fall", "x"),
    ("--health-send", "PING\\q"),
    ("--health-expect", "\\x4"),
    ("--drain-timeout", "-5s"),
    ("--shutdown-delay", "a while"),
    ("--upgrade-move-connections", "maybe"),
    ("--backlog", "0"),
    ("--max-fails", "many"),
    ("--fail-timeout", "0"),
    ("--max-conns", "0"),
    ("--queue-timeout", "1x"),
    ("--idle-timeout", "0ms"),
    ("--send-proxy", "v3"),
    ("--allow", "10.0.0.0/33"),
    ("--deny", "not-a-network"),
    ("--max-conns-per-ip", "0"),
    ("--rate-per-ip", "fast"),
    ("--admin", "localhost"),
    ("--config", "/nonexistent/tcplb.toml"),
    ("--workers", "0"),
    ("--splice", "sometimes"),
    ("--resolver", "dns.example"),
    ("--resolve-interval", "0s"),
    ("--resolve-ttl-min", "soon"),
    ("--access-log", ""),
    ("--access-log-format", "xml"),
];

#[test]
fn every_flag_with_a_bad_value_exits_2_with_a_one_line_error() {
    for (flag, bad) in BAD_VALUES {
        // `--flag=value`, so that values such as "-1" are not taken for flags.
        let mut args = vec![format!("{flag}={bad}")];
        if *flag != "--listen" {
            args.extend(["--listen".to_string(), "127.0.0.1:0".to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run_tcplb(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} {bad}: {stderr}");
        let first = stderr.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("error:") && first.contains(flag.trim_start_matches('-')),
            "{flag} {bad}: the first line should be the error naming the flag: {stderr}"
        );
    }
}

#[test]
fn unknown_flag_exits_2() {
    let out = run_tcplb(&["--no-such-flag"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--no-such-flag"), "{stderr}");
}

#[test]
fn listen_port_in_use_fails_naming_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = run_tcplb(&["--listen", &addr, "--backend", "127.0.0.1:9"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "tcplb started on a taken port");
    assert!(
        stderr.contains(&addr),
        "stderr does not name {addr}: {stderr}"
    );
    assert!(
        stderr.to_lowercase().contains("in use"),
        "stderr does not say why: {stderr}"
    );
    drop(taken);
}

#[test]
fn help_lists_the_flags() {
    let out = Command::new(tcplb_bin()).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--backend",
        "--strategy",
        "--connect-timeout",
        "--retries",
        "--on-failure",
        "--health-interval",
        "--health-timeout",
        "--rise",
        "--fall",
        "--drain-timeout",
        "--help",
        "--version",
    ] {
        assert!(help.contains(flag), "--help does not list {flag}:\n{help}");
    }
}

/// The `--strategy` line of `--help` names every strategy (it once missed
/// `maglev`): the list is the enum's own, through clap.
#[test]
fn help_names_every_strategy() {
    use clap::ValueEnum;
    for help in ["--help", "-h"] {
        let out = Command::new(tcplb_bin()).arg(help).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with("--strategy"))
            .unwrap_or_else(|| panic!("no --strategy in {help}:\n{text}"));
        for kind in tcplb::config::StrategyKind::value_variants() {
            assert!(
                line.contains(&kind.to_string()),
                "{help}: {kind} missing: {line}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_open_connection_then_exits_0() {
    const HALF: usize = 4 << 20;
    let echo = TestBackend::echo().await;
    let mut lb = spawn_tcplb(&[
        "--backend",
        &echo.addr.to_string(),
        "--drain-timeout",
        "30s",
    ]);
    let data = Pattern::bytes(77, 2 * HALF);

    let stream = TcpStream::connect(lb.addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    // The reader runs throughout; the writer sends half, then the rest after SIGTERM.
    let expected = data.clone();
    let receive = tokio::spawn(async move {
        let mut back = Vec::with_capacity(expected.len());
        reader.read_to_end(&mut back).await.map(|_| back)
    });
    writer.write_all(&data[..HALF]).await.unwrap();

    lb.process.sigterm();
    // Stopped accepting: new connections are refused once the listener closes.
    let addr = lb.addr;
    let mut refused = false;
    for _ in 0..500 {
        match tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr)).await {
            Ok(Err(_)) => {
                refused = true;
                break;
            }
            // Still queued or accepted during the race; try again shortly.
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    assert!(refused, "tcplb kept accepting after SIGTERM");
    assert!(
        lb.process.child.try_wait().unwrap().is_none(),
        "tcplb exited with a connection still open"
    );

    writer.write_all(&data[HALF..]).await.unwrap();
    writer.shutdown().await.unwrap();
    let back = tokio::time::timeout(PATIENCE, receive)
        .await
        .expect("open connection did not finish")
        .unwrap()
        .expect("open connection broke during drain");
    assert_eq!(back.len(), data.len());
    assert!(back == data, "drained connection corrupted");

    let status = tokio::task::block_in_place(|| lb.process.wait_exit(PATIENCE))
        .expect("tcplb did not exit after draining");
    assert_eq!(status.code(), Some(0), "{}", lb.process.stderr_text());
    let log = lb.process.stderr_text();
    assert!(log.contains("SIGTERM"), "{log}");
}

/// What the every-flag run points its flags at: a backend, a refusing
/// backup, and files in its own directory.
struct Fixture {
    echo: std::net::SocketAddr,
    backup: std::net::SocketAddr,
    dir: TempDir,
    /// A CA of the test's own, for the TLS flags.
    ca: common::pki::Ca,
    /// A server certificate and key it signed.
    server: common::pki::Issued,
}

/// Flags that change what goes over the wire (TLS to the clients or the
/// backends): left out of the first line, which serves a plain client
/// through a plain echo backend, and run on a line of their own.
const WIRE_FLAGS: [&str; 4] = ["--tls-cert", "--tls-key", "--backend-tls", "--backend-ca"];

/// A valid value for each flag of `tcplb --help` that takes one, by long
/// name; `None` for a flag this table does not know yet.
fn valid_value(flag: &str, f: &Fixture) -> Option<String> {
    let value = match flag {
        "listen" => "127.0.0.1:0".to_string(),
        "backlog" => "128".into(),
        "name" => "web".into(),
        "backend" => f.echo.to_string(),
        "strategy" => "round-robin".into(),
        "connect-timeout" => "2s".into(),
        "retries" => "1".into(),
        "on-failure" => "close".into(),
        "send-proxy" => "v1".into(),
        "backup" => f.backup.to_string(),
        "slow-start" => "1s".into(),
        "hash-balance-factor" => "1.25".into(),
        "resolve-interval" => "5s".into(),
        "resolve-ttl-min" => "1s".into(),
        "health-interval" => "1s".into(),
        "health-timeout" => "1s".into(),
        "rise" => "1".into(),
        "fall" => "2".into(),
        // The echo backend answers the check with what it was sent.
        "health-send" => "PING\\r\\n".into(),
        "health-expect" => "PING".into(),
        "max-fails" => "3".into(),
        "fail-timeout" => "10s".into(),
        "health-port" => f.echo.port().to_string(),
        "max-conns" => "100".into(),
        "queue-timeout" => "1s".into(),
        "idle-timeout" => "1m".into(),
        "allow" => "127.0.0.0/8".into(),
        "deny" => "10.0.0.0/8".into(),
        "max-conns-per-ip" => "50".into(),
        "rate-per-ip" => "100/s".into(),
        "per-ip-ipv6-prefix" => "56".into(),
        "max-connection-age" => "1h".into(),
        "tcp-keepalive" => "60s,10s,6".into(),
        "tcp-user-timeout" => "90s".into(),
        "admin" => "127.0.0.1:0".into(),
        "admin-token-file" => f.dir.arg("token"),
        "admin-socket" => f.dir.arg("admin.sock"),
        "state-file" => f.dir.arg("state.json"),
        "config" => f.dir.arg("tcplb.toml"),
        "drain-timeout" => "2s".into(),
        "shutdown-delay" => "100ms".into(),
        "upgrade-move-connections" => "false".into(),
        "workers" => "1".into(),
        "splice" => "on".into(),
        "resolver" => "127.0.0.1:53".into(),
        "access-log" => f.dir.arg("access.log"),
        "access-log-format" => "json".into(),
        "pid-file" => f.dir.arg("tcplb.pid"),
        "tls-cert" => f.server.cert.to_str()?.to_string(),
        "tls-key" => f.server.key.to_str()?.to_string(),
        "backend-ca" => f.ca.cert_arg(),
        "health-expect-match" => "contains".into(),
        "health-http" => "OPTIONS /primary".into(),
        "health-http-host" => "db.example".into(),
        "health-expect-status" => "200,3xx".into(),
        "health-expect-body" => "ok".into(),
        "health-exec" => "/bin/true {host} {port}".into(),
        "agent-port" => f.echo.port().to_string(),
        "agent-send" => "web\\n".into(),
        "agent-interval" => "2s".into(),
        "on-down" => "close".into(),
        "on-backup-up" => "close".into(),
        "panic-threshold" => "50".into(),
        "max-ejection-percent" => "10".into(),
        "max-ejection-time" => "5m".into(),
        "protocol" => "udp".into(),
        "health-udp" => "ping".into(),
        "responses" => "1".into(),
        "max-sessions" => "100".into(),
        "max-sessions-per-ip" => "10".into(),
        "datagram-rate-per-ip" => "100/s".into(),
        "max-datagram-size" => "1500".into(),
        _ => return None,
    };
    Some(value)
}

/// The protocol whose listeners alone take `flag` (`--name=value`) as the
/// every-flag run sets it: tcplb refuses the others' after clap has read
/// them, so the lines keep them apart and the UDP ones go on lines with
/// `--protocol=udp`. `--send-proxy=v1` is TCP's (v1 cannot say UDP), the
/// TLS flags too (no DTLS).
fn protocol_of(flag: &str) -> Option<tcplb::config::Protocol> {
    use tcplb::config::Protocol;
    let name = flag.trim_start_matches("--").split('=').next()?;
    match name {
        "protocol" | "health-udp" => Some(Protocol::Udp),
        "send-proxy" | "tls-cert" | "tls-key" | "backend-tls" | "backend-ca" => Some(Protocol::Tcp),
        _ => tcplb::config::udp::only_for(&name.replace('-', "_")),
    }
}

/// Every flag of clap's own definition (so a flag added tomorrow is in),
/// each set to its valid value, as `--flag=value` or a bare `--flag`, in
/// as few command lines as clap accepts: flags that conflict (one kind of
/// health check excludes another) go to lines of their own, each line
/// filled up with every other flag it can take. The first line is the
/// fullest.
fn every_flag(f: &Fixture) -> Vec<Vec<String>> {
    use clap::{ArgAction, CommandFactory, error::ErrorKind};
    let command = tcplb::config::cli::Cli::command();
    let mut flags = Vec::new();
    let mut unknown = Vec::new();
    for arg in command.get_arguments() {
        if matches!(arg.get_action(), ArgAction::Help | ArgAction::Version) {
            continue;
        }
        let long = arg.get_long().expect("every tcplb flag has a long name");
        if !arg.get_action().takes_values() {
            flags.push(format!("--{long}"));
        } else if let Some(value) = valid_value(long, f) {
            flags.push(format!("--{long}={value}"));
        } else {
            unknown.push(format!("--{long}"));
        }
    }
    assert!(
        unknown.is_empty(),
        "add a valid value for {unknown:?} to valid_value() in tests/cli.rs, \
         so that the every-flag test starts tcplb with it"
    );
    let parse = |line: &[String]| {
        let protocols: std::collections::HashSet<_> =
            line.iter().filter_map(|flag| protocol_of(flag)).collect();
        if protocols.len() > 1 {
            return Err(clap::Error::new(ErrorKind::ArgumentConflict));
        }
        let argv = std::iter::once("tcplb".to_string()).chain(line.iter().cloned());
        command.clone().try_get_matches_from(argv).map(|_| ())
    };
    let mut lines: Vec<Vec<String>> = Vec::new();
    let mut uncovered = flags.clone();
    while let Some(first) = uncovered.first().cloned() {
        // The uncovered flags first, then every other: each one the line
        // takes without a conflict (a requirement may come later).
        let mut line = vec![first];
        let wire = |flag: &str| WIRE_FLAGS.iter().any(|w| flag.split('=').next() == Some(w));
        for flag in uncovered.iter().skip(1).chain(&flags) {
            if line.contains(flag) || (lines.is_empty() && wire(flag)) {
                continue;
            }
            let mut longer = line.clone();
            longer.push(flag.clone());
            match parse(&longer) {
                Ok(()) => line = longer,
                Err(e) if e.kind() == ErrorKind::MissingRequiredArgument => line = longer,
                Err(_) => {}
            }
        }
        if let Err(e) = parse(&line) {
            panic!("no valid line holds {:?}: {e}", uncovered[0]);
        }
        uncovered.retain(|flag| !line.contains(flag));
        lines.push(line);
    }
    lines
}

/// `tcplb check ARGS`: exit code and both outputs.
fn check(args: &[String]) -> (Option<i32>, String, String) {
    let out = Command::new(tcplb_bin())
        .arg("check")
        .args(args)
        .output()
        .expect("run tcplb check");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

/// A command line (after the global flags) for every `tcplb ctl` command,
/// in an order the running tcplb accepts; `{ID}` stands for an open
/// connection's id.
fn ctl_lines(echo: &str, added: &str, admin_file: &str) -> Vec<Vec<String>> {
    let lines: [&[&str]; 16] = [
        &["pools"],
        // The file names the same instance again: the read shows it twice.
        &["--admin-file", admin_file, "pools"],
        &["ready", "off"],
        &["ready", "on"],
        &["backends", "web"],
        &["health", "web"],
        &["drain", "web", echo, "--deadline", "5m"],
        &["maintenance", "web", echo],
        &["ready", "web", echo],
        &["weight", "web", echo, "3"],
        &[
            "add",
            "web",
            added,
            "--weight",
            "2",
            "--maxconn",
            "5",
            "--backup",
        ],
        &["remove", "web", added, "--deadline", "1s"],
        &[
            "--json",
            "connections",
            "--listener",
            "web",
            "--backend",
            echo,
            "--limit",
            "10",
            "--after",
            "0",
            "--all",
        ],
        &["close", "{ID}"],
        &["close-connections", "web", echo],
        &["backends"],
    ];
    lines
        .iter()
        .map(|l| l.iter().map(|s| s.to_string()).collect())
        .collect()
}

/// Every `tcplb ctl` command and each of its flags (from clap's
/// definition) appears in `lines` (a global flag also in `globals`).
fn assert_every_ctl_flag_is_used(lines: &[Vec<String>], globals: &[String]) {
    use clap::{ArgAction, CommandFactory};
    let has = |line: &[String], word: &str| line.iter().any(|a| a == word);
    let flags = |command: &clap::Command| -> Vec<String> {
        command
            .get_arguments()
            .filter(|a| !matches!(a.get_action(), ArgAction::Help | ArgAction::Version))
            .filter_map(|a| Some(format!("--{}", a.get_long()?)))
            .collect()
    };
    let ctl = tcplb::ctl::CtlCli::command();
    for flag in flags(&ctl) {
        assert!(
            has(globals, &flag) || lines.iter().any(|l| has(l, &flag)),
            "add `tcplb ctl {flag}` to ctl_lines() in tests/cli.rs"
        );
    }
    for sub in ctl.get_subcommands().filter(|s| s.get_name() != "help") {
        let name = sub.get_name();
        let mine: Vec<&Vec<String>> = lines.iter().filter(|l| has(l, name)).collect();
        assert!(
            !mine.is_empty(),
            "add `tcplb ctl {name}` to ctl_lines() in tests/cli.rs"
        );
        for flag in flags(sub) {
            assert!(
                has(globals, &flag) || mine.iter().any(|l| has(l, &flag)),
                "add `tcplb ctl {name} {flag}` to ctl_lines() in tests/cli.rs"
            );
        }
    }
}

/// tcplb started with every flag of `--help` set (defect: `--health-send`
/// and `--health-expect` crashed it): `tcplb check` accepts the line, and
/// with each possible value of an enumerated flag; the process serves,
/// its admin endpoint and every `tcplb ctl` command with every flag
/// answer, and SIGTERM ends it with exit code 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_flag_with_a_valid_value_starts_and_passes_check() {
    let echo = TestBackend::echo().await;
    let added = refusing_addr();
    let mut ca = common::pki::Ca::new("every-flag-ca");
    let server = ca.server("server", &["web.test"], common::pki::Key::Ecdsa);
    let f = Fixture {
        echo: echo.addr,
        backup: refusing_addr(),
        dir: TempDir::new("every-flag"),
        ca,
        server,
    };
    std::fs::write(f.dir.path("token"), "every-flag-token\n").unwrap();
    std::fs::write(
        f.dir.path("tcplb.toml"),
        "[[listener]]\nlisten = \"127.0.0.1:0\"\nbackends = [\"127.0.0.1:1\"]\n",
    )
    .unwrap();
    let lines = every_flag(&f);
    let args = lines[0].clone();
    // The lines for the flags that exclude some of the first's: each one
    // passes `tcplb check` and starts a tcplb that answers and exits 0.
    for line in &lines[1..] {
        let (code, out, err) = check(line);
        assert_eq!(code, Some(0), "tcplb check {line:?}:\n{out}\n{err}");
        let mut command = Command::new(tcplb_bin());
        command.args(line);
        let mut lb = wait_listening(spawn_process(command));
        let admin = lb.admin_addr().await;
        let status = raw_exchange(admin, "GET /status HTTP/1.1\r\nHost: t\r\n\r\n").await;
        assert!(status.starts_with("HTTP/1.1 200"), "{line:?}: {status}");
        lb.process.sigterm();
        let exit = tokio::task::block_in_place(|| lb.process.wait_exit(PATIENCE))
            .expect("tcplb did not exit after SIGTERM");
        assert_eq!(
            exit.code(),
            Some(0),
            "{line:?}: {}",
            lb.process.stderr_text()
        );
    }

    let (code, out, err) = check(&args);
    assert_eq!(code, Some(0), "tcplb check {args:?}:\n{out}\n{err}");
    assert!(out.contains("is valid"), "{out}");
    // Each value clap lists for a flag is accepted too.
    use clap::CommandFactory;
    let enumerated = tcplb::config::cli::Cli::command();
    let enumerated = enumerated
        .get_arguments()
        .filter(|arg| arg.get_action().takes_values());
    for arg in enumerated {
        let long = arg.get_long().unwrap_or_default();
        // `udp` has its own lines (above): this one is TCP's.
        if long == "protocol" {
            continue;
        }
        for value in arg.get_possible_values() {
            let mut line = args.clone();
            line.retain(|a| !a.starts_with(&format!("--{long}=")));
            line.push(format!("--{long}={}", value.get_name()));
            let (code, out, err) = check(&line);
            assert_eq!(
                code,
                Some(0),
                "--{long}={}:\n{out}\n{err}",
                value.get_name()
            );
        }
    }

    let mut command = Command::new(tcplb_bin());
    command.args(&args);
    let mut lb = wait_listening(spawn_process(command));
    let admin = lb.admin_addr().await;
    let status = raw_exchange(admin, "GET /status HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert!(status.contains("\"web\""), "{status}");

    // Served: the client's PROXY header in (--accept-proxy), tcplb's v1
    // header and the bytes back from the echo backend (--send-proxy v1).
    let mut client = TcpStream::connect(lb.addr).await.unwrap();
    client
        .write_all(b"PROXY TCP4 127.0.0.9 127.0.0.1 5555 80\r\nhello")
        .await
        .unwrap();
    let header = b"PROXY TCP4 127.0.0.9 ";
    let mut back = vec![0u8; header.len()];
    tokio::time::timeout(PATIENCE, client.read_exact(&mut back))
        .await
        .expect("no echo in time")
        .expect("the connection was not served");
    assert_eq!(back, header, "{}", lb.process.stderr_text());

    let globals = vec![
        "--admin".to_string(),
        admin.to_string(),
        "--token-file".to_string(),
        f.dir.arg("token"),
    ];
    std::fs::write(f.dir.path("admins"), format!("{admin}\n")).unwrap();
    let lines = ctl_lines(
        &echo.addr.to_string(),
        &added.to_string(),
        &f.dir.arg("admins"),
    );
    assert_every_ctl_flag_is_used(&lines, &globals);
    for line in lines {
        let mut line = line;
        if line.contains(&"{ID}".to_string()) {
            let id = open_connection_id(&globals).await;
            line = line.into_iter().map(|a| a.replace("{ID}", &id)).collect();
        }
        let out = ctl(globals.iter().cloned().chain(line.clone()).collect()).await;
        assert_eq!(
            out.status.code(),
            Some(0),
            "tcplb ctl {line:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // `close` (or else `close-connections`) ended the client's connection.
    let mut rest = Vec::new();
    let read = tokio::time::timeout(PATIENCE, client.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the closed connection stayed open");

    lb.process.sigterm();
    let status = tokio::task::block_in_place(|| lb.process.wait_exit(PATIENCE))
        .expect("tcplb did not exit after SIGTERM");
    assert_eq!(status.code(), Some(0), "{}", lb.process.stderr_text());
}

/// The id of the one open connection, from `tcplb ctl --json connections`.
async fn open_connection_id(globals: &[String]) -> String {
    let mut args = globals.to_vec();
    args.extend(["--json".to_string(), "connections".to_string()]);
    let out = ctl(args).await;
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    listed["connections"][0]["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("no open connection: {listed}"))
        .to_string()
}
