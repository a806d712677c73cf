//! The systemd protocols without systemd: the real binary started the way
//! systemd starts it (sockets from fd 3 with LISTEN_FDS, LISTEN_PID and
//! LISTEN_FDNAMES; NOTIFY_SOCKET and WATCHDOG_USEC), the notifications
//! read from a datagram socket the test owns, traffic on the passed socket,
//! also after an upgrade hands it over.

mod common;

use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;

use common::notify::Notifications;
use common::{PATIENCE, TestBackend, spawn_process};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn echo_once(addr: std::net::SocketAddr) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"ping").await.unwrap();
    let mut back = [0u8; 4];
    tokio::time::timeout(PATIENCE, stream.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&back, b"ping");
}

#[tokio::test]
async fn socket_activation_and_every_notification() {
    let backend = TestBackend::echo().await;
    // What systemd would have bound: one socket named for the listener
    // (its configured address differs, so only the name can match it),
    // and one that matches nothing.
    let passed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let stray = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = passed.local_addr().unwrap();
    let config = std::env::temp_dir().join(format!("tcplb-systemd-{}.toml", std::process::id()));
    let text = format!(
        "[[listener]]\nname = \"web\"\nlisten = \"127.0.0.1:0\"\nbackends = [\"{}\"]\n",
        backend.addr
    );
    std::fs::write(&config, &text).unwrap();
    let mut notifications = Notifications::new("activation");

    // `sh` learns its PID for LISTEN_PID, then execs tcplb in its place.
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg("LISTEN_PID=$$ exec \"$@\"")
        .arg("sh")
        .arg(common::tcplb_bin())
        .args(["--config", config.to_str().unwrap(), "--workers", "2"])
        .env("LISTEN_FDS", "2")
        .env("LISTEN_FDNAMES", "web:stray")
        .env("NOTIFY_SOCKET", &notifications.path)
        .env("WATCHDOG_USEC", "200000");
    let (a, b) = (passed.as_raw_fd(), stray.as_raw_fd());
    // SAFETY: only fcntl and dup2 (async-signal-safe) between fork and exec.
    unsafe {
        command.pre_exec(move || {
            // Out of the way first, so placing one cannot clobber the other.
            let high_a = libc::fcntl(a, libc::F_DUPFD, 100);
            let high_b = libc::fcntl(b, libc::F_DUPFD, 100);
            if high_a < 0 || high_b < 0 || libc::dup2(high_a, 3) < 0 || libc::dup2(high_b, 4) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let process = spawn_process(command);
    // The test's copies go: only tcplb holds the sockets now.
    drop(passed);
    drop(stray);

    assert_eq!(notifications.wait_for(|m| m.contains("READY=1")), "READY=1");
    // It serves on the passed socket (it bound nothing of its own).
    let listening = process.line_with("listening on").await;
    assert!(listening.contains(&addr.to_string()), "{listening}");
    for _ in 0..5 {
        echo_once(addr).await;
    }
    let stray_warning = process.line_with("no listener matches").await;
    assert!(stray_warning.contains("stray"), "{stray_warning}");
    notifications.wait_for(|m| m == "WATCHDOG=1");
    notifications.wait_for(|m| m == "WATCHDOG=1");

    // SIGHUP: RELOADING=1 with the monotonic time, then READY=1 again.
    let pid = process.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let reloading = notifications.wait_for(|m| m.starts_with("RELOADING=1"));
    let usec: u64 = reloading
        .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{reloading:?}"));
    assert!(usec > 0);
    notifications.wait_for(|m| m == "READY=1");
    echo_once(addr).await;

    // SIGUSR2: the new process announces itself as the main process; the
    // old one hands over without STOPPING=1, and the passed socket serves on.
    kill("-USR2", &pid);
    let took_over = notifications.wait_for(|m| m.starts_with("MAINPID="));
    let new_pid: u32 = took_over
        .strip_prefix("MAINPID=")
        .and_then(|m| m.strip_suffix("\nREADY=1"))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{took_over:?}"));
    let _successor = Successor(new_pid);
    assert_ne!(new_pid.to_string(), pid);
    process.line_with("upgrade: process").await;
    for _ in 0..5 {
        echo_once(addr).await;
    }
    assert!(
        !notifications.seen.iter().any(|m| m == "STOPPING=1"),
        "{:?}",
        notifications.seen
    );

    // SIGTERM: STOPPING=1 as the drain starts.
    kill("-TERM", &new_pid.to_string());
    notifications.wait_for(|m| m == "STOPPING=1");
    let _ = std::fs::remove_file(&config);
}

fn kill(signal: &str, pid: &str) {
    let status = Command::new("kill").args([signal, pid]).status().unwrap();
    assert!(status.success(), "kill {signal} {pid}");
}

/// The process an upgrade started: killed by PID on drop.
struct Successor(u32);

impl Drop for Successor {
    fn drop(&mut self) {
        // SAFETY: kill(2) on a PID this test's process started.
        unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
    }
}
