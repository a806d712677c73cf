//! Which sessions' backend sockets have replies: one epoll set of a
//! listener's worker, holding every session socket of that worker, and
//! itself registered with the worker's tokio reactor as one descriptor.
//!
//! Why not one tokio registration (and task) per session: the replies of
//! every ready session are then read in one pass and sent back in one
//! `sendmmsg`, one wake-up for many sessions; and an idle session costs a
//! socket and an entry in the session table, not a task and its waker.
//! The set is level-triggered: a socket not drained in one pass is
//! reported again in the next.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// Events read per pass.
pub const EVENTS: usize = 64;

/// A worker's epoll set of session sockets.
pub struct Readiness {
    /// The epoll descriptor, registered with the worker's reactor.
    epoll: AsyncFd<OwnedFd>,
    /// Where one pass's events land.
    events: Vec<libc::epoll_event>,
}

impl Readiness {
    /// An empty set; must be called on the worker's runtime.
    pub fn new() -> io::Result<Self> {
        // SAFETY: epoll_create1 takes flags only.
        let raw = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: an `OwnedFd` owns its descriptor, and nothing closes or
        // replaces it while the `AsyncFd` holds it.
        let epoll = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(Readiness {
            epoll,
            events: vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS],
        })
    }

    /// Watches `socket` for datagrams (and errors), reported with `token`.
    /// It leaves the set when it is closed.
    pub fn add(&self, socket: &impl AsRawFd, token: u64) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: valid descriptors and an event the kernel copies.
        let added = unsafe {
            libc::epoll_ctl(
                self.epoll.get_ref().as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                socket.as_raw_fd(),
                &mut event,
            )
        };
        if added != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits until some sockets are ready and puts their tokens, at most
    /// [`EVENTS`], into `tokens` (emptied first). Cancel-safe: it returns
    /// as soon as it has read events, without another wait.
    pub async fn next(&mut self, tokens: &mut Vec<u64>) -> io::Result<()> {
        tokens.clear();
        let Readiness { epoll, events } = self;
        loop {
            let mut guard = epoll.readable().await?;
            let read = guard.try_io(|fd| {
                let raw: RawFd = fd.get_ref().as_raw_fd();
                // SAFETY: the buffer holds EVENTS events.
                let n = unsafe { libc::epoll_wait(raw, events.as_mut_ptr(), EVENTS as i32, 0) };
                match n {
                    // Drained: the reactor clears the readiness.
                    0 => Err(io::ErrorKind::WouldBlock.into()),
                    n if n < 0 => Err(io::Error::last_os_error()),
                    n => Ok(n as usize),
                }
            });
            match read {
                Ok(Ok(n)) => {
                    // Copied out: the struct is packed on x86-64.
                    tokens.extend(events[..n].iter().map(|event| event.u64));
                    return Ok(());
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}
