//! Binary upgrades without refusing a connection: on SIGUSR2 the running
//! tcplb starts the binary at the path it was started from (now the new
//! version) with the same arguments, and hands it every listening socket
//! (each worker's socket of each listener, and the admin TCP socket) and
//! the operator overlay over a private socketpair with SCM_RIGHTS.
//!
//! Why re-exec on SIGUSR2 (nginx's trigger) with a socketpair (HAProxy's
//! transport since 2.6, Pingora's and Envoy's SCM_RIGHTS) rather than an
//! `--upgrade-socket PATH` the new process connects to:
//! - no socket file anyone who can reach the path could ask for our
//!   listening sockets through: the channel exists only between the two
//!   processes;
//! - the new process is the old one's child, so under systemd it runs in
//!   the same unit (cgroup, limits, sandbox) and takes over as MAINPID;
//!   a process started from a shell for `--upgrade-socket` would not;
//! - the outcome is known to the one that must act on it: the old process
//!   sees the new one's READY, its failure message, its exit, or the
//!   timeout, and keeps serving in all but the first case.
//!
//! The sequence, which never closes a listening socket that has no other
//! owner (closing the last descriptor of a socket drops its backlog):
//! 1. old: socketpair, spawn the new binary with one end
//!    (`TCPLB_UPGRADE_FD`), send a manifest (in a memfd: no size limit)
//!    and the sockets (batches under the kernel's 253 per message);
//! 2. new: reads its configuration (a bad one fails here, with its
//!    problems in the log), binds only what the old process did not have,
//!    takes the rest over (matching listeners by configured address, as a
//!    reload does), starts accepting, runs its first health checks, then
//!    answers READY;
//! 3. old: on READY stops accepting and drains as on SIGTERM (without
//!    systemd's STOPPING=1); both accept from the same queues meanwhile,
//!    so nothing waits. On anything else (a failure message, the channel
//!    closing, [`TAKEOVER_TIMEOUT`]) it kills the new process if still
//!    there and goes on serving.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use log::{error, info, warn};
use serde::{Deserialize, Serialize};

use crate::config::ServiceConfig;
use crate::pool::overlay::Overlay;
use crate::runtime::handover::Successor;
use crate::runtime::systemd::Passed;

/// How long the new process has to take over (read its configuration,
/// resolve names, bind, run its first health checks) before the old one
/// gives up on it and keeps serving.
pub const TAKEOVER_TIMEOUT: Duration = Duration::from_secs(60);
/// How long before [`TAKEOVER_TIMEOUT`] runs out the new process reports
/// ready at the latest, even while its first health checks still run:
/// slow checks must not turn a good upgrade into a failed one.
pub const READY_MARGIN: Duration = Duration::from_secs(5);
/// How long the new process waits for the sockets once started.
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Descriptors per message: the kernel takes at most 253 (SCM_MAX_FD).
const FDS_PER_MESSAGE: usize = 250;
/// The environment variable that tells a new process it is an upgrade,
/// and on which descriptor its channel is.
const CHANNEL_ENV: &str = "TCPLB_UPGRADE_FD";
/// First bytes of the first message, with the protocol version.
const HELLO: &str = "tcplb-upgrade 1";

/// Why [`ReloadHandle::upgrade`](crate::runtime::ReloadHandle::upgrade)
/// did not hand over. Only [`NotUpgraded::Failed`] is a failed upgrade:
/// the others started nothing.
#[derive(Debug, PartialEq, Eq)]
pub enum NotUpgraded {
    /// This process is shutting down already (an upgrade handed over, or
    /// SIGTERM): it only drains, there is nothing to hand over.
    ShuttingDown,
    /// Another upgrade is running.
    Busy,
    /// The new process did not take over, for this reason (it is gone);
    /// this process keeps serving.
    Failed(String),
}

/// What the old process describes; the descriptors follow in this order.
#[derive(Serialize, Deserialize)]
struct Manifest {
    /// Each listener's sockets, in the old configuration's order.
    listeners: Vec<ListenerEntry>,
    /// The admin TCP socket's configured address, when one is handed over
    /// (its descriptor comes after the listeners').
    admin: Option<SocketAddr>,
    /// The operator's runtime changes (drains, weights, added backends).
    overlay: Overlay,
    /// Whether the connection id sequence's memfd comes last, so that
    /// both processes number connections from one counter.
    #[serde(default)]
    ids: bool,
}

#[derive(Serialize, Deserialize)]
struct ListenerEntry {
    /// The address as configured (port 0 stays 0): what a new
    /// configuration's listener is matched by, as a reload does.
    listen: SocketAddr,
    /// Where it is bound.
    local: SocketAddr,
    /// How many sockets (one per worker of the old process).
    sockets: usize,
}

/// Listening sockets a start takes over instead of binding: from the
/// tcplb being upgraded, or from systemd.
#[derive(Default)]
pub struct Inherited {
    /// Listening sockets not yet taken by a listener.
    listeners: Vec<InheritedListener>,
    /// The admin TCP socket and what to match it by.
    admin: Option<(Match, OwnedFd)>,
    /// The overlay handed over by the old process (it wins over the state
    /// file: it is the newest).
    pub overlay: Option<Overlay>,
    /// The connection id sequence shared with the old process.
    pub ids: Option<OwnedFd>,
    /// The channel to the old process, when this start is an upgrade
    /// (until taken by [`Inherited::take_channel`]).
    channel: Option<Channel>,
    /// Whether this start is an upgrade.
    upgrade: bool,
}

/// This process's end of the channel to the old process of an upgrade.
pub struct Channel {
    /// This end of the socketpair.
    fd: OwnedFd,
    /// When the sockets began to arrive: the old process's
    /// [`TAKEOVER_TIMEOUT`] runs from about then.
    since: Instant,
}

impl Channel {
    /// How long this process may still wait (for its first health checks)
    /// before it must report ready: [`READY_MARGIN`] before the old process
    /// gives up on it.
    pub fn time_left(&self) -> Duration {
        (TAKEOVER_TIMEOUT - READY_MARGIN).saturating_sub(self.since.elapsed())
    }

    /// Tells the old process this one serves now: it stops accepting and
    /// drains (and moves its connections here, see [`super::handover`]).
    /// Returns whether that was said.
    pub fn report_ready(&self) -> bool {
        match send_with_fds(&self.fd, b"READY", &[]) {
            Ok(()) => true,
            Err(e) => {
                error!("upgrade: cannot tell the old process to stop: {e}");
                false
            }
        }
    }

    /// The channel itself, for the connections that follow READY.
    pub(super) fn into_fd(self) -> OwnedFd {
        self.fd
    }

    /// Tells the old process this start failed, and why; it keeps serving.
    pub fn report_failure(self, why: &str) {
        let _ = send_with_fds(&self.fd, format!("FAILED {why}").as_bytes(), &[]);
    }
}

/// How an inherited socket finds its listener.
#[derive(Clone, Debug, PartialEq)]
enum Match {
    /// The old process's configured address (port 0 included).
    Configured(SocketAddr),
    /// systemd's: `FileDescriptorName=` or the bound address.
    Passed(Option<String>, SocketAddr),
}

struct InheritedListener {
    /// What a listener must have to take it.
    by: Match,
    /// Where it is bound.
    local: SocketAddr,
    /// The sockets: one per old worker, or systemd's one.
    fds: Vec<OwnedFd>,
}

impl Inherited {
    /// systemd's sockets: a listener takes the one named as it is, or
    /// bound where it listens; `admin` (by name or address) is the admin
    /// endpoint's.
    pub fn from_systemd(passed: Vec<Passed>) -> Self {
        let mut inherited = Inherited::default();
        for p in passed {
            if p.name.as_deref() == Some("admin") && inherited.admin.is_none() {
                inherited.admin = Some((Match::Passed(p.name, p.local), p.fd));
                continue;
            }
            inherited.listeners.push(InheritedListener {
                by: Match::Passed(p.name, p.local),
                local: p.local,
                fds: vec![p.fd],
            });
        }
        inherited
    }

    /// Whether this start takes over from an old process.
    pub fn is_upgrade(&self) -> bool {
        self.upgrade
    }

    /// The channel to the old process, to report the outcome on.
    pub fn take_channel(&mut self) -> Option<Channel> {
        self.channel.take()
    }

    /// The sockets inherited for `config`'s listener, if any (taken: a
    /// second listener cannot have them).
    pub(super) fn take_listener(
        &mut self,
        config: &ServiceConfig,
    ) -> Option<(SocketAddr, Vec<OwnedFd>)> {
        let found = self.listeners.iter().position(|l| {
            let by = match &l.by {
                Match::Configured(listen) => *listen == config.listen,
                Match::Passed(name, local) => {
                    (name.is_some() && *name == config.name) || *local == config.listen
                }
            };
            by && speaks(&l.fds, config.protocol)
        })?;
        let listener = self.listeners.remove(found);
        Some((listener.local, listener.fds))
    }

    /// The admin socket inherited for `addr`, if any.
    pub(super) fn take_admin(&mut self, addr: SocketAddr) -> Option<std::net::TcpListener> {
        let matches = match &self.admin {
            Some((Match::Configured(listen), _)) => *listen == addr,
            Some((Match::Passed(name, local), _)) => {
                name.as_deref() == Some("admin") || *local == addr
            }
            None => false,
        };
        if !matches {
            return None;
        }
        self.admin.take().map(|(_, fd)| fd.into())
    }

    /// Closes what no listener took, saying so: systemd's sockets are
    /// warned about (the unit and the file disagree); an old process's are
    /// listeners the new configuration removed (they close when the old
    /// process exits, as a reload's removed listeners do).
    pub(super) fn close_leftovers(&mut self) {
        for listener in self.listeners.drain(..) {
            match listener.by {
                Match::Passed(name, local) => warn!(
                    "systemd passed a socket on {local} ({}) that no listener matches by \
                     name or address; closing it",
                    name.as_deref().unwrap_or("unnamed")
                ),
                Match::Configured(_) => info!(
                    "upgrade: {} is not in the new configuration; the old process \
                     stops serving it",
                    listener.local
                ),
            }
        }
        if let Some((by, _)) = self.admin.take()
            && let Match::Passed(_, local) = by
        {
            warn!("systemd passed an admin socket on {local} but no admin address is configured");
        }
    }
}

/// The sockets an old process hands over, when this process was started
/// as its upgrade (`TCPLB_UPGRADE_FD`): `None` for an ordinary start.
///
/// # Safety
/// Must be called before any other thread runs (it changes the
/// environment).
pub unsafe fn receive() -> Option<Result<Inherited, String>> {
    let raw = std::env::var(CHANNEL_ENV).ok()?;
    // SAFETY: the caller runs this before any other thread.
    unsafe { std::env::remove_var(CHANNEL_ENV) };
    let Ok(raw) = raw.parse::<RawFd>() else {
        return Some(Err(format!("bad {CHANNEL_ENV} {raw:?}")));
    };
    // SAFETY: the old process passed this descriptor to us alone, for this.
    let channel = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: setting FD_CLOEXEC on a descriptor we own, so it does not
    // leak into a later upgrade's process.
    unsafe { libc::fcntl(raw, libc::F_SETFD, libc::FD_CLOEXEC) };
    Some(
        read_handoff(channel).map_err(|e| format!("cannot receive the old process's sockets: {e}")),
    )
}

fn read_handoff(channel: OwnedFd) -> io::Result<Inherited> {
    let since = Instant::now();
    let mut buf = [0u8; 256];
    let (n, mut fds) = recv_with_fds(&channel, &mut buf, RECEIVE_TIMEOUT)?;
    let hello = std::str::from_utf8(&buf[..n]).unwrap_or("");
    let total: usize = hello
        .strip_prefix(HELLO)
        .and_then(|rest| rest.trim().parse().ok())
        .ok_or_else(|| io::Error::other(format!("unexpected greeting {hello:?}")))?;
    while fds.len() < total {
        let (_, more) = recv_with_fds(&channel, &mut buf, RECEIVE_TIMEOUT)?;
        if more.is_empty() {
            return Err(io::Error::other("the old process stopped sending sockets"));
        }
        fds.extend(more);
    }
    let mut fds = fds.into_iter();
    let mut text = Vec::new();
    let mut file = File::from(fds.next().ok_or_else(|| io::Error::other("no manifest"))?);
    file.rewind()?;
    file.read_to_end(&mut text)?;
    let manifest: Manifest = serde_json::from_slice(&text).map_err(io::Error::other)?;
    let mut listeners = Vec::new();
    for entry in manifest.listeners {
        let sockets: Vec<OwnedFd> = fds.by_ref().take(entry.sockets).collect();
        if sockets.len() != entry.sockets {
            return Err(io::Error::other("fewer sockets than the manifest lists"));
        }
        listeners.push(InheritedListener {
            by: Match::Configured(entry.listen),
            local: entry.local,
            fds: sockets,
        });
    }
    let admin = match manifest.admin {
        Some(listen) => Some((
            Match::Configured(listen),
            fds.next()
                .ok_or_else(|| io::Error::other("the admin socket is missing"))?,
        )),
        None => None,
    };
    let ids = match manifest.ids {
        true => Some(
            fds.next()
                .ok_or_else(|| io::Error::other("the id sequence is missing"))?,
        ),
        false => None,
    };
    Ok(Inherited {
        listeners,
        admin,
        ids,
        overlay: Some(manifest.overlay),
        channel: Some(Channel { fd: channel, since }),
        upgrade: true,
    })
}

/// What the old process hands over: each listener's configured address,
/// bound address and sockets; the admin socket; the overlay.
pub(super) struct Handoff {
    /// Per listener: its configured address, where it is bound, and a
    /// duplicate of each worker's socket.
    pub(super) listeners: Vec<(SocketAddr, SocketAddr, Vec<OwnedFd>)>,
    /// The admin TCP socket and its configured address.
    pub(super) admin: Option<(SocketAddr, OwnedFd)>,
    /// The operators' runtime changes.
    pub(super) overlay: Overlay,
    /// The connection id sequence's memfd, when it is shared.
    pub(super) ids: Option<OwnedFd>,
}

/// How to start the new binary: the path and arguments this process was
/// started with (a package upgrade puts the new binary at that path).
#[derive(Clone, Debug)]
pub struct Relaunch {
    /// The executable's path as it was at start.
    pub exe: PathBuf,
    /// The arguments, without the program name.
    pub args: Vec<OsString>,
}

impl Relaunch {
    /// This process's own executable path and arguments, read at start
    /// (before a package upgrade replaces the file).
    pub fn current() -> io::Result<Relaunch> {
        Ok(Relaunch {
            exe: std::env::current_exe()?,
            args: std::env::args_os().skip(1).collect(),
        })
    }
}

/// Starts the new process, hands it `handoff` and waits (blocking, at most
/// [`TAKEOVER_TIMEOUT`]) for its verdict. `Ok`: it serves now (its pid,
/// and the channel to it for moving connections). `Err`: it did not take
/// over (and is gone); the reason is in the error.
pub(super) fn hand_over(relaunch: &Relaunch, handoff: Handoff) -> Result<(u32, Successor), String> {
    let (ours, theirs) = socketpair().map_err(|e| format!("cannot create the channel: {e}"))?;
    let theirs_raw = theirs.as_raw_fd();
    let mut command = Command::new(&relaunch.exe);
    command
        .args(&relaunch.args)
        .env(CHANNEL_ENV, theirs_raw.to_string())
        // systemd's WATCHDOG_PID names this process: the new one pings
        // once it is the main process.
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::null());
    // SAFETY: between fork and exec only fcntl runs, which is
    // async-signal-safe; it lets the channel's end survive exec.
    unsafe {
        use std::os::unix::process::CommandExt;
        command.pre_exec(move || {
            if libc::fcntl(theirs_raw, libc::F_SETFD, 0) == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", relaunch.exe.display()))?;
    drop(theirs);
    let pid = child.id();
    let outcome = send_handoff(&ours, handoff).and_then(|()| {
        let mut buf = [0u8; 4096];
        let (n, _) = recv_with_fds(&ours, &mut buf, TAKEOVER_TIMEOUT)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    });
    let failure = match outcome {
        Ok(answer) if answer == "READY" => {
            let successor = Successor {
                channel: ours,
                child,
            };
            return Ok((pid, successor));
        }
        Ok(answer) if answer.is_empty() => "it exited before taking over".to_string(),
        Ok(answer) => answer
            .strip_prefix("FAILED ")
            .unwrap_or(&answer)
            .to_string(),
        Err(e) if e.kind() == io::ErrorKind::TimedOut => {
            format!("it did not take over within {TAKEOVER_TIMEOUT:?}")
        }
        Err(e) => format!("the channel to it failed: {e}"),
    };
    // It must not serve alongside: kill it (ours, by its PID) and reap it.
    let _ = child.kill();
    let status = child
        .wait()
        .map_or("unknown".to_string(), |s| s.to_string());
    Err(format!(
        "the new process (pid {pid}, {status}) did not take over: {failure}"
    ))
}

fn send_handoff(channel: &OwnedFd, handoff: Handoff) -> io::Result<()> {
    let manifest = Manifest {
        listeners: handoff
            .listeners
            .iter()
            .map(|(listen, local, fds)| ListenerEntry {
                listen: *listen,
                local: *local,
                sockets: fds.len(),
            })
            .collect(),
        admin: handoff.admin.as_ref().map(|(listen, _)| *listen),
        overlay: handoff.overlay,
        ids: handoff.ids.is_some(),
    };
    let mut file = memfd()?;
    file.write_all(&serde_json::to_vec(&manifest).map_err(io::Error::other)?)?;
    let mut fds: Vec<RawFd> = vec![file.as_raw_fd()];
    for (_, _, sockets) in &handoff.listeners {
        fds.extend(sockets.iter().map(AsRawFd::as_raw_fd));
    }
    if let Some((_, admin)) = &handoff.admin {
        fds.push(admin.as_raw_fd());
    }
    if let Some(ids) = &handoff.ids {
        fds.push(ids.as_raw_fd());
    }
    let hello = format!("{HELLO} {}", fds.len());
    let mut batches = fds.chunks(FDS_PER_MESSAGE);
    send_with_fds(channel, hello.as_bytes(), batches.next().unwrap_or(&[]))?;
    for batch in batches {
        send_with_fds(channel, b"FDS", batch)?;
    }
    Ok(())
}

pub(super) fn memfd() -> io::Result<File> {
    // SAFETY: memfd_create takes a NUL-terminated name and flags.
    let raw = unsafe { libc::memfd_create(c"tcplb-upgrade".as_ptr(), libc::MFD_CLOEXEC) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor we own.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(raw) }))
}

/// A connected pair of SOCK_SEQPACKET Unix sockets (message boundaries
/// kept; both ends close-on-exec).
fn socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: socketpair writes two descriptors into the array.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: two new descriptors we own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Sends one message with `fds` attached (SCM_RIGHTS).
pub(super) fn send_with_fds(channel: &impl AsFd, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let fd_bytes = std::mem::size_of_val(fds);
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(fd_bytes as u32) } as usize;
    // u64 words keep the control buffer aligned for cmsghdr.
    let mut control = vec![0u64; space.div_ceil(8).max(1)];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: a zeroed msghdr is a valid empty one.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: the control buffer holds CMSG_SPACE(fd_bytes) bytes, so
        // the first header and its data fit.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(fd_bytes as u32) as _;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr(),
                libc::CMSG_DATA(cmsg).cast::<RawFd>(),
                fds.len(),
            );
        }
    }
    // SAFETY: msg points at live buffers for the duration of the call.
    let sent = unsafe { libc::sendmsg(channel.as_fd().as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Receives one message and the descriptors attached to it (close-on-exec),
/// waiting at most `timeout`. An empty message is the peer closing.
pub(super) fn recv_with_fds(
    channel: &impl AsFd,
    buf: &mut [u8],
    timeout: Duration,
) -> io::Result<(usize, Vec<OwnedFd>)> {
    let raw = channel.as_fd().as_raw_fd();
    let mut poll = libc::pollfd {
        fd: raw,
        events: libc::POLLIN,
        revents: 0,
    };
    let millis = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    loop {
        // SAFETY: one pollfd, valid for the call.
        let ready = unsafe { libc::poll(&mut poll, 1, millis) };
        if ready == 0 {
            return Err(io::ErrorKind::TimedOut.into());
        }
        if ready > 0 {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE((FDS_PER_MESSAGE * std::mem::size_of::<RawFd>()) as u32) }
        as usize;
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: a zeroed msghdr is a valid empty one.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: msg points at live buffers for the duration of the call.
    let n = unsafe { libc::recvmsg(raw, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut fds = Vec::new();
    // SAFETY: walking the control messages the kernel wrote, within
    // msg_controllen; each SCM_RIGHTS payload is an array of descriptors
    // now ours.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let bytes = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                for i in 0..bytes / std::mem::size_of::<RawFd>() {
                    fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::other("descriptors were cut off in transit"));
    }
    Ok((n as usize, fds))
}

/// Whether the inherited sockets `fds` are of `protocol`'s kind (datagram
/// sockets for UDP), so a TCP and a UDP listener on one address each take
/// their own.
fn speaks(fds: &[OwnedFd], protocol: crate::config::Protocol) -> bool {
    let wanted = match protocol {
        crate::config::Protocol::Tcp => socket2::Type::STREAM,
        crate::config::Protocol::Udp => socket2::Type::DGRAM,
    };
    fds.first().is_some_and(|fd| {
        socket2::SockRef::from(fd)
            .r#type()
            .is_ok_and(|t| t == wanted)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_cross_the_channel_in_batches_with_the_manifest() {
        let (old, new) = socketpair().unwrap();
        let listeners: Vec<std::net::TcpListener> = (0..300)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let local = listeners[0].local_addr().unwrap();
        let handoff = Handoff {
            listeners: vec![(
                "127.0.0.1:0".parse().unwrap(),
                local,
                listeners
                    .iter()
                    .map(|l| l.try_clone().unwrap().into())
                    .collect(),
            )],
            admin: None,
            overlay: Overlay::default(),
            ids: None,
        };
        let sender = std::thread::spawn(move || send_handoff(&old, handoff));
        let mut inherited = read_handoff(new).unwrap();
        sender.join().unwrap().unwrap();
        let config = ServiceConfig::new("127.0.0.1:0".parse().unwrap(), Vec::new());
        let (got_local, fds) = inherited.take_listener(&config).unwrap();
        assert_eq!(got_local, local);
        assert_eq!(fds.len(), 300);
        // The very same sockets: each received one is bound where its
        // original is.
        for (fd, original) in fds.into_iter().zip(&listeners) {
            let received = std::net::TcpListener::from(fd);
            assert_eq!(
                received.local_addr().unwrap(),
                original.local_addr().unwrap()
            );
        }
        assert!(inherited.take_listener(&config).is_none());
    }
}
