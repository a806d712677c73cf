//! Datagrams in batches: `recvmmsg(2)` and `sendmmsg(2)` over a fixed set
//! of slots, with the local address each datagram came to or leaves from
//! (`IP_PKTINFO`, `IPV6_PKTINFO`) when the listener is bound to a
//! wildcard address.
//!
//! One system call moves up to [`BATCH`] datagrams: a whole batch of
//! client datagrams comes off the listener in one call, and the replies
//! of every session go back to their clients in one call. The slots are
//! allocated once per listener and worker and reused; a slot's pages are
//! touched only as far as datagrams fill them.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

/// Datagrams per system call.
pub const BATCH: usize = 32;

/// The largest datagram a reply slot takes: any UDP payload.
pub const REPLY_SLOT: usize = 65_535;

/// Room for one pktinfo control message (`in6_pktinfo`, the larger, is 20
/// bytes; with its header 40), aligned for `cmsghdr`.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct Control([u8; 64]);

/// A set of datagram slots and the system calls' descriptions of them.
pub struct Datagrams {
    /// Bytes per slot.
    slot: usize,
    /// Every slot's bytes, one after the other.
    data: Vec<u8>,
    /// How many slots hold a datagram (from the first).
    filled: usize,
    /// Each slot's datagram: its length, whether it was larger than the
    /// slot (and cut), its peer, its local address.
    meta: Vec<Meta>,
    /// The system calls' scratch, one per slot: addresses, control
    /// messages, buffers, headers. Rebuilt before every call.
    names: Vec<libc::sockaddr_storage>,
    controls: Vec<Control>,
    iovecs: Vec<[libc::iovec; 2]>,
    headers: Vec<libc::mmsghdr>,
}

// SAFETY: the raw pointers in `headers` and `iovecs` point only into the
// set's own buffers, are rewritten before every system call, and are never
// read otherwise: moving the set to another thread moves what they point
// at with it.
unsafe impl Send for Datagrams {}

/// What is known of the datagram in one slot.
#[derive(Clone, Copy, Debug)]
pub struct Meta {
    /// Its length (at most the slot).
    pub len: usize,
    /// It was larger than the slot: the rest was cut off.
    pub truncated: bool,
    /// Received: who sent it. To send: who it goes to.
    pub peer: SocketAddr,
    /// The local address it came to or leaves from; `None` when the socket
    /// is bound to one address (or the kernel did not say).
    pub local: Option<IpAddr>,
}

impl Default for Meta {
    fn default() -> Self {
        Meta {
            len: 0,
            truncated: false,
            peer: SocketAddr::from(([0, 0, 0, 0], 0)),
            local: None,
        }
    }
}

impl Datagrams {
    /// [`BATCH`] slots of `slot` bytes each.
    pub fn new(slot: usize) -> Self {
        Datagrams {
            slot,
            data: vec![0; slot * BATCH],
            filled: 0,
            meta: vec![Meta::default(); BATCH],
            // SAFETY: all-zero is a valid value of these C structs.
            names: vec![unsafe { zeroed() }; BATCH],
            controls: vec![Control([0; 64]); BATCH],
            iovecs: vec![[empty_iovec(), empty_iovec()]; BATCH],
            // SAFETY: as above.
            headers: vec![unsafe { zeroed() }; BATCH],
        }
    }

    /// Bytes per slot.
    pub fn slot_size(&self) -> usize {
        self.slot
    }

    /// How many slots hold a datagram.
    pub fn len(&self) -> usize {
        self.filled
    }

    pub fn is_empty(&self) -> bool {
        self.filled == 0
    }

    /// Whether every slot holds a datagram.
    pub fn is_full(&self) -> bool {
        self.filled == BATCH
    }

    /// Empties every slot.
    pub fn clear(&mut self) {
        self.filled = 0;
    }

    /// Datagram `i`: what is known of it, and its bytes.
    pub fn get(&self, i: usize) -> (Meta, &[u8]) {
        let meta = self.meta[i];
        let start = i * self.slot;
        (meta, &self.data[start..start + meta.len])
    }

    /// Receives up to a whole batch from `fd` (not connected: each
    /// datagram's sender is kept), with its local address when `pktinfo`
    /// is on the socket. Replaces what the slots held. `Ok(0)` never
    /// happens: no datagram is `WouldBlock`.
    pub fn receive_from(&mut self, fd: RawFd, pktinfo: bool) -> io::Result<usize> {
        self.filled = 0;
        for i in 0..BATCH {
            self.prepare(i, true, pktinfo);
        }
        // SAFETY: every header points at this slot's live buffer, name and
        // control storage, sized as the header says.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.headers.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        for i in 0..n {
            let header = &self.headers[i];
            let peer = socket_addr(&self.names[i], header.msg_hdr.msg_namelen);
            let local = if pktinfo {
                local_address(&header.msg_hdr)
            } else {
                None
            };
            self.meta[i] = Meta {
                len: (header.msg_len as usize).min(self.slot),
                truncated: header.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
                peer: peer.unwrap_or(self.meta[i].peer),
                local,
            };
        }
        self.filled = n;
        Ok(n)
    }

    /// Receives up to `max` datagrams from `fd` (a socket connected to one
    /// backend) into the free slots, each to go to `peer` from `local`.
    /// Returns how many came; `WouldBlock` when none. Nothing is received
    /// when the slots are full.
    pub fn receive_connected(
        &mut self,
        fd: RawFd,
        max: usize,
        peer: SocketAddr,
        local: Option<IpAddr>,
    ) -> io::Result<usize> {
        let start = self.filled;
        let count = max.min(BATCH - start);
        if count == 0 {
            return Ok(0);
        }
        for i in start..start + count {
            self.prepare(i, false, false);
        }
        // SAFETY: as in `receive_from`, for the headers from `start` on.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.headers[start..].as_mut_ptr(),
                count as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        for i in start..start + n {
            let header = &self.headers[i];
            self.meta[i] = Meta {
                len: (header.msg_len as usize).min(self.slot),
                truncated: header.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
                peer,
                local,
            };
        }
        self.filled += n;
        Ok(n)
    }

    /// Sends every datagram held to its peer from its local address (with
    /// `pktinfo`), in as few calls as the kernel takes, and empties the
    /// slots. A datagram the kernel refuses is skipped: `refused` hears of
    /// each (its slot and the error); the others still go. Returns how
    /// many went.
    pub fn send_all(
        &mut self,
        fd: RawFd,
        pktinfo: bool,
        mut refused: impl FnMut(usize, io::Error),
    ) -> usize {
        let count = self.filled;
        for i in 0..count {
            self.prepare_send(i, pktinfo);
        }
        let mut at = 0;
        let mut sent = 0;
        while at < count {
            // SAFETY: every header from `at` points at its slot's live
            // buffer, name and control message.
            let n = unsafe {
                libc::sendmmsg(
                    fd,
                    self.headers[at..].as_mut_ptr(),
                    (count - at) as u32,
                    libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // The first one failed: skip it, send the rest.
                refused(at, e);
                at += 1;
            } else {
                sent += n as usize;
                at += n as usize;
            }
        }
        self.filled = 0;
        sent
    }

    /// Points header `i` at slot `i`: its whole buffer, and when asked a
    /// name and a control message to be filled in.
    fn prepare(&mut self, i: usize, name: bool, control: bool) {
        let start = i * self.slot;
        self.iovecs[i][0] = libc::iovec {
            iov_base: self.data[start..].as_mut_ptr().cast(),
            iov_len: self.slot,
        };
        let header = &mut self.headers[i].msg_hdr;
        header.msg_iov = self.iovecs[i].as_mut_ptr();
        header.msg_iovlen = 1;
        header.msg_flags = 0;
        if name {
            header.msg_name = (&raw mut self.names[i]).cast();
            header.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        } else {
            header.msg_name = std::ptr::null_mut();
            header.msg_namelen = 0;
        }
        if control {
            header.msg_control = self.controls[i].0.as_mut_ptr().cast();
            header.msg_controllen = self.controls[i].0.len() as _;
        } else {
            header.msg_control = std::ptr::null_mut();
            header.msg_controllen = 0;
        }
        self.headers[i].msg_len = 0;
    }

    /// Points header `i` at datagram `i` to send: its bytes, its peer, and
    /// with `pktinfo` its local address as the source.
    fn prepare_send(&mut self, i: usize, pktinfo: bool) {
        let meta = self.meta[i];
        let start = i * self.slot;
        self.iovecs[i][0] = libc::iovec {
            iov_base: self.data[start..].as_mut_ptr().cast(),
            iov_len: meta.len,
        };
        let namelen = write_socket_addr(&meta.peer, &mut self.names[i]);
        let header = &mut self.headers[i].msg_hdr;
        header.msg_iov = self.iovecs[i].as_mut_ptr();
        header.msg_iovlen = 1;
        header.msg_flags = 0;
        header.msg_name = (&raw mut self.names[i]).cast();
        header.msg_namelen = namelen;
        header.msg_control = std::ptr::null_mut();
        header.msg_controllen = 0;
        if pktinfo && let Some(local) = meta.local {
            let control = &mut self.controls[i];
            let len = write_pktinfo(local, meta.peer, control);
            let header = &mut self.headers[i].msg_hdr;
            header.msg_control = control.0.as_mut_ptr().cast();
            header.msg_controllen = len as _;
        }
        self.headers[i].msg_len = 0;
    }
}

fn empty_iovec() -> libc::iovec {
    libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }
}

/// Sends `payload` on `fd` (connected), after `header` when there is one
/// (a PROXY header: the two leave as one datagram, without a copy).
pub fn send_connected(fd: RawFd, header: &[u8], payload: &[u8]) -> io::Result<usize> {
    let mut iovecs = [
        libc::iovec {
            iov_base: header.as_ptr() as *mut libc::c_void,
            iov_len: header.len(),
        },
        libc::iovec {
            iov_base: payload.as_ptr() as *mut libc::c_void,
            iov_len: payload.len(),
        },
    ];
    let (iov, count) = if header.is_empty() {
        (&mut iovecs[1..], 1)
    } else {
        (&mut iovecs[..], 2)
    };
    // SAFETY: a zeroed msghdr is a valid empty one.
    let mut message: libc::msghdr = unsafe { zeroed() };
    message.msg_iov = iov.as_mut_ptr();
    message.msg_iovlen = count;
    // SAFETY: the message points at live buffers for the call.
    let n = unsafe { libc::sendmsg(fd, &message, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// The address the kernel wrote into `storage`, when it is an IP one.
fn socket_addr(storage: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match i32::from(storage.ss_family) {
        libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: an AF_INET address of that length is a sockaddr_in.
            let a =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: an AF_INET6 address of that length is a sockaddr_in6.
            let a = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Writes `addr` into `storage` as the kernel reads it; returns its length.
fn write_socket_addr(addr: &SocketAddr, storage: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            let raw = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: a sockaddr_storage holds any address.
            unsafe {
                std::ptr::write(
                    (storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>(),
                    raw,
                )
            };
            size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            let raw = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above.
            unsafe {
                std::ptr::write(
                    (storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>(),
                    raw,
                )
            };
            size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

/// The local address of a received datagram, from its pktinfo control
/// message: for IPv4 the address it was delivered to as a local one
/// (`ipi_spec_dst`), for IPv6 its destination (v4-mapped for an IPv4
/// datagram on a dual-stack socket).
fn local_address(header: &libc::msghdr) -> Option<IpAddr> {
    // SAFETY: walking the control messages the kernel wrote, within
    // msg_controllen; each payload is read as the type its level and type
    // say, unaligned.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(header);
        while !cmsg.is_null() {
            let data = libc::CMSG_DATA(cmsg);
            match ((*cmsg).cmsg_level, (*cmsg).cmsg_type) {
                (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                    let info: libc::in_pktinfo = std::ptr::read_unaligned(data.cast());
                    return Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                        info.ipi_spec_dst.s_addr,
                    ))));
                }
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                    let info: libc::in6_pktinfo = std::ptr::read_unaligned(data.cast());
                    return Some(IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)));
                }
                _ => {}
            }
            cmsg = libc::CMSG_NXTHDR(header, cmsg);
        }
    }
    None
}

/// Writes a pktinfo control message making `local` the source of a
/// datagram to `peer` (IPv4's for an IPv4 peer, else IPv6's, which a
/// dual-stack socket also takes v4-mapped); returns its length.
fn write_pktinfo(local: IpAddr, peer: SocketAddr, control: &mut Control) -> usize {
    control.0.fill(0);
    let buf = control.0.as_mut_ptr();
    // SAFETY: the buffer holds CMSG_SPACE of either payload (64 bytes,
    // aligned for cmsghdr); the header and payload are written within it.
    unsafe {
        match (local, peer) {
            (IpAddr::V4(local), SocketAddr::V4(_)) => {
                let space = libc::CMSG_SPACE(size_of::<libc::in_pktinfo>() as u32) as usize;
                let cmsg = buf.cast::<libc::cmsghdr>();
                (*cmsg).cmsg_level = libc::IPPROTO_IP;
                (*cmsg).cmsg_type = libc::IP_PKTINFO;
                (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<libc::in_pktinfo>() as u32) as _;
                let info = libc::in_pktinfo {
                    ipi_ifindex: 0,
                    ipi_spec_dst: libc::in_addr {
                        s_addr: u32::from(local).to_be(),
                    },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast(), info);
                space
            }
            (local, _) => {
                let local = match local {
                    IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                    IpAddr::V6(v6) => v6,
                };
                let space = libc::CMSG_SPACE(size_of::<libc::in6_pktinfo>() as u32) as usize;
                let cmsg = buf.cast::<libc::cmsghdr>();
                (*cmsg).cmsg_level = libc::IPPROTO_IPV6;
                (*cmsg).cmsg_type = libc::IPV6_PKTINFO;
                (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<libc::in6_pktinfo>() as u32) as _;
                let info = libc::in6_pktinfo {
                    ipi6_addr: libc::in6_addr {
                        s6_addr: local.octets(),
                    },
                    ipi6_ifindex: 0,
                };
                std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast(), info);
                space
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use super::*;

    #[test]
    fn addresses_survive_the_kernels_layout() {
        // SAFETY: all-zero is a valid sockaddr_storage.
        let mut storage: libc::sockaddr_storage = unsafe { zeroed() };
        for addr in ["127.0.0.2:5353", "[::1]:53", "[::ffff:10.0.0.1]:9"] {
            let addr: SocketAddr = addr.parse().unwrap();
            let len = write_socket_addr(&addr, &mut storage);
            assert_eq!(socket_addr(&storage, len), Some(addr));
        }
    }

    #[test]
    fn a_batch_comes_in_with_senders_and_goes_out_to_them() {
        let listener = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let to = listener.local_addr().unwrap();
        let clients: Vec<std::net::UdpSocket> = (0..3)
            .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        for (i, c) in clients.iter().enumerate() {
            c.send_to(format!("hello {i}").as_bytes(), to).unwrap();
        }
        c_wait(&listener);
        let mut batch = Datagrams::new(8);
        let n = batch.receive_from(listener.as_raw_fd(), false).unwrap();
        assert_eq!(n, 3);
        let mut seen = Vec::new();
        for i in 0..n {
            let (meta, bytes) = batch.get(i);
            assert!(bytes.starts_with(b"hello "));
            // 7 bytes in an 8-byte slot: not cut.
            assert!(!meta.truncated);
            seen.push(meta.peer);
        }
        let mut expected: Vec<SocketAddr> =
            clients.iter().map(|c| c.local_addr().unwrap()).collect();
        expected.sort();
        seen.sort();
        assert_eq!(seen, expected);
        // Back to each sender, in one call.
        assert_eq!(
            batch.send_all(listener.as_raw_fd(), false, |_, e| panic!("{e}")),
            3
        );
        for c in &clients {
            let mut buf = [0u8; 16];
            let (n, from) = c.recv_from(&mut buf).unwrap();
            assert_eq!(from, to);
            assert!(buf[..n].starts_with(b"hello "));
        }
        // Too large for the slot: cut, and said so.
        clients[0].send_to(b"0123456789", to).unwrap();
        c_wait(&listener);
        batch.receive_from(listener.as_raw_fd(), false).unwrap();
        let (meta, bytes) = batch.get(0);
        assert!(meta.truncated);
        assert_eq!(bytes, b"01234567");
    }

    /// Waits until `socket` has a datagram to read.
    fn c_wait(socket: &std::net::UdpSocket) {
        let mut poll = libc::pollfd {
            fd: socket.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd, valid for the call.
        unsafe { libc::poll(&mut poll, 1, 10_000) };
    }
}
