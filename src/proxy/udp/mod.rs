//! The datagram path of a `protocol = "udp"` listener, beside the TCP one:
//! sessions of one client address and port on one local address, each
//! with a socket connected to its backend, replies sent back from the
//! address the client sent to, and datagrams moved in batches.
//!
//! - [`socket`]: the listener's sockets (pktinfo on wildcard addresses)
//!   and the sessions' connected ones;
//! - [`batch`]: `recvmmsg`/`sendmmsg` over fixed slots, with local
//!   addresses;
//! - [`readiness`]: one epoll set per worker for every session socket;
//! - [`session`]: a session, its links to backends, and the table of them;
//! - [`worker`]: one listener socket served on one worker: forwarding,
//!   replies, limits, the sweep that ends idle sessions, the drain.

pub mod batch;
pub mod readiness;
pub mod session;
pub mod socket;
pub mod worker;
