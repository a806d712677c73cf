//! systemd integration, written against the documented protocols rather
//! than a crate: `sd_notify` is one datagram of `KEY=VALUE` lines to the
//! Unix socket named by `NOTIFY_SOCKET` (a leading `@` is the abstract
//! namespace), and socket activation is `LISTEN_PID`, `LISTEN_FDS` and
//! `LISTEN_FDNAMES` describing descriptors from 3 on. Both are a few lines
//! on std and libc (already dependencies); the `sd-notify` crate would
//! cover only the first half and still leave us the watchdog timer and the
//! MAINPID hand-over of an upgrade.
//!
//! Without `NOTIFY_SOCKET` every notification is a no-op, so nothing
//! changes outside systemd. What is sent:
//! - `READY=1` once every listener accepts and every pool has had its
//!   first round of health checks (with `MAINPID=` from a process that
//!   took over by an upgrade, so systemd follows it);
//! - `RELOADING=1` with `MONOTONIC_USEC=` when a SIGHUP reload starts, and
//!   `READY=1` when it is over (applied or rejected);
//! - `STOPPING=1` when a shutdown starts draining (not when an upgrade
//!   hands over: the service goes on in the new process);
//! - `WATCHDOG=1` every half `WATCHDOG_USEC`, from the main thread's
//!   runtime, so a stuck runtime stops the pings.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use log::{debug, warn};
use tokio_util::sync::CancellationToken;

/// Sends `state` to the service manager, if there is one. Failures are
/// logged (at debug: there is nothing else to do about them).
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = send(&path, state) {
        debug!("sd_notify {state:?} to {path:?} failed: {e}");
    }
}

fn send(path: &std::ffi::OsStr, state: &str) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let socket = UnixDatagram::unbound()?;
    let bytes = path.as_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        socket.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        socket.send_to(state.as_bytes(), path)?;
    }
    Ok(())
}

/// `READY=1`, with `MAINPID=` of this process when it took over from
/// another (an upgrade): systemd then follows the new main process.
pub fn ready(took_over: bool) {
    if took_over {
        notify(&format!("MAINPID={}\nREADY=1", std::process::id()));
    } else {
        notify("READY=1");
    }
}

/// `RELOADING=1` with the monotonic time systemd wants for
/// `Type=notify-reload`; follow it with [`ready`].
pub fn reloading() {
    notify(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
}

pub fn stopping() {
    notify("STOPPING=1");
}

/// CLOCK_MONOTONIC in microseconds, as systemd reads MONOTONIC_USEC.
fn monotonic_usec() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    (now.tv_sec as u64) * 1_000_000 + (now.tv_nsec as u64) / 1_000
}

/// The watchdog period asked for (`WATCHDOG_USEC`), unless
/// `WATCHDOG_PID` names another process.
pub fn watchdog_period() -> Option<Duration> {
    if let Some(pid) = std::env::var_os("WATCHDOG_PID")
        && pid.to_str().and_then(|p| p.parse::<u32>().ok()) != Some(std::process::id())
    {
        return None;
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// Pings the watchdog every half period until `stop`. Call on the main
/// thread's runtime.
pub fn keep_watchdog(stop: CancellationToken) {
    let Some(period) = watchdog_period() else {
        return;
    };
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(period / 2);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticks.tick() => notify("WATCHDOG=1"),
            }
        }
    });
}

/// One listening socket systemd passed, with its `FileDescriptorName=`.
pub struct Passed {
    /// The unit's name for it (`LISTEN_FDNAMES`); systemd's default is
    /// the socket unit's name.
    pub name: Option<String>,
    /// Where it is bound.
    pub local: SocketAddr,
    /// The socket itself (close-on-exec now).
    pub fd: OwnedFd,
}

/// Takes the sockets systemd passed (`LISTEN_FDS` from fd 3, for this
/// process by `LISTEN_PID`) and unsets the variables, so a process this
/// one starts (an upgrade) does not read them too. Sockets that are not
/// TCP are closed with a warning.
///
/// # Safety
/// Must be called before any other thread runs (it changes the
/// environment) and before anything else opens descriptors from 3 on.
pub unsafe fn take_listen_fds() -> Vec<Passed> {
    let pid = std::env::var("LISTEN_PID").ok();
    let count = std::env::var("LISTEN_FDS").ok();
    let names = std::env::var("LISTEN_FDNAMES").ok();
    // SAFETY: the caller runs this before any other thread.
    unsafe {
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_FDNAMES");
    }
    if pid.and_then(|p| p.parse::<u32>().ok()) != Some(std::process::id()) {
        return Vec::new();
    }
    let count: RawFd = count.and_then(|c| c.parse().ok()).unwrap_or(0);
    let names: Vec<String> = names
        .map(|n| n.split(':').map(str::to_string).collect())
        .unwrap_or_default();
    let mut passed = Vec::new();
    for i in 0..count.max(0) {
        let raw = 3 + i;
        // SAFETY: systemd passed descriptors 3..3+LISTEN_FDS to this
        // process (LISTEN_PID); each is taken once, here.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: setting FD_CLOEXEC on a descriptor we own.
        unsafe { libc::fcntl(raw, libc::F_SETFD, libc::FD_CLOEXEC) };
        let name = names.get(i as usize).cloned().filter(|n| !n.is_empty());
        let socket = socket2::Socket::from(fd);
        let local = socket.local_addr().ok().and_then(|a| a.as_socket());
        let listening = socket.is_listener().unwrap_or(false);
        match local {
            Some(local) if listening => passed.push(Passed {
                name,
                local,
                fd: socket.into(),
            }),
            _ => warn!(
                "systemd passed descriptor {raw} ({}) that is not a listening TCP socket; \
                 closing it",
                name.as_deref().unwrap_or("unnamed")
            ),
        }
    }
    passed
}
