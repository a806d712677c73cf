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
    // Let the reader thread collect the last lines after the pipe closed.
    std::thread::sleep(Duration::from_millis(50));
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
