//! Opening a connection to a backend, for the data path and the health
//! checks alike, and telling whose fault a failure is; [`tls`] completes a
//! verified TLS handshake on it for pools with `backend_tls`.
//!
//! A failure is the backend's (refused, timed out, reset) unless the process
//! itself ran out of descriptors or memory: then every backend would fail the
//! same way, so it must never count against one.

pub mod tls;

use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

/// Connects to `addr` within `timeout`, with Nagle off (we relay whatever
/// the peer wrote, as soon as it arrives).
///
/// The timer is armed only if the handshake is not over by the next turn
/// of the reactor, which on loopback and fast networks it always is.
/// Arming one is not free: when no other timer is due sooner, tokio wakes
/// its own reactor through an eventfd write (tokio#5207), and on short
/// connections that was 0.44 extra `write` calls and reactor wake-ups per
/// connection. The deadline still counts from here.
pub async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let deadline = Instant::now() + timeout;
    let mut connecting = pin!(TcpStream::connect(addr));
    let quick = tokio::select! {
        biased;
        connected = &mut connecting => Some(connected),
        // Deferred until the reactor has been polled once.
        () = tokio::task::yield_now() => None,
    };
    let stream = match quick {
        Some(connected) => connected?,
        None => tokio::time::timeout_at(deadline, connecting)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??,
    };
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// EMFILE, ENFILE, ENOBUFS, ENOMEM: we, not the peer, ran out of something.
pub fn is_local_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// "connection refused" rather than "Connection refused (os error 111)".
pub fn describe(e: &io::Error) -> String {
    let text = e.kind().to_string();
    if text == "other error" || text == "uncategorized error" {
        e.to_string()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exhaustion_is_ours_and_refusal_is_the_peers() {
        for errno in [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM] {
            assert!(is_local_exhaustion(&io::Error::from_raw_os_error(errno)));
        }
        let refused = io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert!(!is_local_exhaustion(&refused));
        assert_eq!(describe(&refused), "connection refused");
    }

    fn loopback_socket() -> socket2::Socket {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket
            .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .unwrap();
        socket
    }

    fn addr_of(socket: &socket2::Socket) -> SocketAddr {
        socket.local_addr().unwrap().as_socket().unwrap()
    }

    #[tokio::test]
    async fn a_loopback_connect_completes_with_nagle_off() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = connect(listener.local_addr().unwrap(), Duration::from_secs(5))
            .await
            .unwrap();
        assert!(stream.nodelay().unwrap());
        assert_eq!(stream.peer_addr().unwrap(), listener.local_addr().unwrap());
    }

    #[tokio::test]
    async fn a_closed_port_is_refused() {
        // Bound and never listening: the port stays ours, and refuses.
        let closed = loopback_socket();
        let error = connect(addr_of(&closed), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::ConnectionRefused);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_backend_times_out_at_the_deadline() {
        // A full accept queue: the kernel drops further SYNs, as a dead
        // host would.
        let listener = loopback_socket();
        listener.listen(0).unwrap();
        let addr = addr_of(&listener);
        let mut queued = Vec::new();
        while let Ok(stream) =
            std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(300))
        {
            queued.push(stream);
            assert!(queued.len() < 64, "the accept queue never filled");
        }
        let started = Instant::now();
        let error = connect(addr, Duration::from_secs(7)).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        // Paused time moves only to the next timer: exactly the deadline.
        assert_eq!(started.elapsed(), Duration::from_secs(7));
    }
}
