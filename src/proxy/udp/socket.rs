//! The sockets of the UDP path: a listener's (one per worker, sharing the
//! port with SO_REUSEPORT, so the kernel keeps each client's datagrams on
//! one worker and its session), and each session's own socket connected
//! to its backend.
//!
//! A listener bound to a wildcard address (`0.0.0.0`, `::`) asks the
//! kernel for each datagram's local address (`IP_PKTINFO`,
//! `IPV6_RECVPKTINFO`) and sends its replies from it: on a host with
//! several addresses a reply always comes from the address the client
//! sent to, or the client would drop it (traefik#7430).

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use anyhow::Context;
use log::debug;
use socket2::{Domain, Protocol, Socket, Type};

/// The receive buffer a listener asks for: room for bursts of datagrams
/// while a worker is busy (the kernel caps it at `net.core.rmem_max`).
const LISTENER_RECEIVE_BUFFER: usize = 4 << 20;

/// Binds `count` UDP sockets on one address, one per worker; more than
/// one share it with SO_REUSEPORT. As for TCP, the address is first bound
/// plainly, which fails when anything else is bound there, so the group
/// never joins another process's.
pub fn bind_group(addr: SocketAddr, count: usize) -> anyhow::Result<Vec<std::net::UdpSocket>> {
    let group = || -> io::Result<Vec<std::net::UdpSocket>> {
        if count <= 1 {
            return Ok(vec![bound(addr, false)?]);
        }
        let probe = bound(addr, false)?;
        let port = probe.local_addr()?.port();
        drop(probe);
        let addr = SocketAddr::new(addr.ip(), port);
        (0..count).map(|_| bound(addr, true)).collect()
    };
    group().with_context(|| format!("cannot listen on {addr} (udp)"))
}

fn bound(addr: SocketAddr, reuse_port: bool) -> io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&addr.into())?;
    let socket: std::net::UdpSocket = socket.into();
    prepare(&socket)?;
    Ok(socket)
}

/// Readies a listener's socket (bound here, or inherited from an old
/// process): non-blocking, a large receive buffer, and pktinfo on a
/// wildcard address. Returns whether replies need their source address
/// set (the socket is bound to a wildcard address).
pub fn prepare(socket: &std::net::UdpSocket) -> io::Result<bool> {
    socket.set_nonblocking(true)?;
    let sock = socket2::SockRef::from(socket);
    if let Err(e) = sock.set_recv_buffer_size(LISTENER_RECEIVE_BUFFER) {
        debug!("cannot enlarge a UDP listener's receive buffer: {e}");
    }
    let local = socket.local_addr()?;
    if !local.ip().is_unspecified() {
        return Ok(false);
    }
    let (level, name) = match local {
        SocketAddr::V4(_) => (libc::IPPROTO_IP, libc::IP_PKTINFO),
        SocketAddr::V6(_) => (libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO),
    };
    let on: libc::c_int = 1;
    // SAFETY: a valid descriptor and an int option.
    let set = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&raw const on).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if set != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(true)
}

/// Whether replies on `socket` need their source address set: it is bound
/// to a wildcard address.
pub fn is_wildcard(socket: &std::net::UdpSocket) -> bool {
    socket.local_addr().is_ok_and(|a| a.ip().is_unspecified())
}

/// A session's socket: non-blocking, on an ephemeral port, connected to
/// `backend`, so only its datagrams are read on it and an ICMP port
/// unreachable from it comes back as `ECONNREFUSED`.
pub fn connect_to(backend: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let socket = Socket::new(
        Domain::for_address(backend),
        Type::DGRAM.nonblocking().cloexec(),
        Some(Protocol::UDP),
    )?;
    socket.connect(&backend.into())?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_shares_one_port_and_refuses_a_taken_one() {
        let group = bind_group("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        let port = group[0].local_addr().unwrap().port();
        assert!(group.iter().all(|s| s.local_addr().unwrap().port() == port));
        assert!(!is_wildcard(&group[0]));
        let taken = group[0].local_addr().unwrap();
        let error = bind_group(taken, 2).unwrap_err();
        assert!(format!("{error:#}").contains("in use"), "{error:#}");
    }

    #[test]
    fn a_wildcard_listener_asks_for_local_addresses() {
        let group = bind_group("0.0.0.0:0".parse().unwrap(), 1).unwrap();
        assert!(is_wildcard(&group[0]));
        let mut on: libc::c_int = 0;
        let mut len = size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: a valid descriptor and an int option.
        unsafe {
            libc::getsockopt(
                group[0].as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_PKTINFO,
                (&raw mut on).cast(),
                &mut len,
            )
        };
        assert_eq!(on, 1);
    }
}
