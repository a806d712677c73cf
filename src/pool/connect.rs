//! Opening a connection to a backend, for the data path and the health
//! checks alike, and telling whose fault a failure is.
//!
//! A failure is the backend's (refused, timed out, reset) unless the process
//! itself ran out of descriptors or memory: then every backend would fail the
//! same way, so it must never count against one.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

/// Connects to `addr` within `timeout`, with Nagle off (we relay whatever
/// the peer wrote, as soon as it arrives).
pub async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
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

    #[tokio::test]
    async fn a_closed_port_is_refused() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let error = connect(addr, Duration::from_secs(5)).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::ConnectionRefused);
    }
}
