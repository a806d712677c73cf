//! What a client hears when tcplb cannot connect it to a backend.
//!
//! Failure is answered, never hung: HTTP clients get a minimal, valid
//! response they can show; other protocols can ask for a plain close.

use std::fmt;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::OnFailure;
use crate::stats::{ListenerStats, Unavailable};

/// Sent when every backend tried refused or timed out.
pub const BAD_GATEWAY: &[u8] = b"HTTP/1.1 502 Bad Gateway\r\n\
Content-Type: text/plain\r\n\
Content-Length: 12\r\n\
Connection: close\r\n\
\r\n\
Bad Gateway\n";

/// Sent when no backend is healthy (or all are at their connection limit).
pub const SERVICE_UNAVAILABLE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
Content-Type: text/plain\r\n\
Content-Length: 20\r\n\
Connection: close\r\n\
\r\n\
Service Unavailable\n";

/// How long, at most, we keep reading a failed client's request after the
/// answer, so that closing does not turn into a reset that eats the answer.
const LINGER: Duration = Duration::from_millis(500);
const LINGER_BYTES: usize = 64 * 1024;

/// Why a client could not be served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Backends were tried and none accepted the connection.
    BadGateway,
    /// There was no backend to try, or a limit turned the client away.
    Unavailable(Unavailable),
}

impl Failure {
    pub fn http_response(self) -> &'static [u8] {
        match self {
            Failure::BadGateway => BAD_GATEWAY,
            Failure::Unavailable(_) => SERVICE_UNAVAILABLE,
        }
    }

    /// Counts this failure on the listener, by code and reason.
    pub fn count(self, stats: &ListenerStats) {
        match self {
            Failure::BadGateway => {
                stats
                    .bad_gateway
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Failure::Unavailable(why) => stats.count_unavailable(why),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::BadGateway => f.write_str("502 bad gateway"),
            Failure::Unavailable(why) => write!(f, "503 service unavailable ({})", why.name()),
        }
    }
}

/// Tells the client about `failure` as `mode` says, then closes the connection.
pub async fn answer(mut client: TcpStream, failure: Failure, mode: OnFailure) {
    if mode == OnFailure::Http {
        if client.write_all(failure.http_response()).await.is_err() {
            return;
        }
        let _ = client.shutdown().await;
        // Closing with unread request bytes makes the kernel send a reset,
        // which can destroy the response in flight. Read a little first.
        // On the heap: every connection's task is sized for this future,
        // and only failing connections should pay for the buffer.
        let mut sink = vec![0u8; 4096];
        let mut read = 0;
        let _ = tokio::time::timeout(LINGER, async {
            while read < LINGER_BYTES {
                match client.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => read += n,
                }
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_declare_their_exact_body_length() {
        for response in [BAD_GATEWAY, SERVICE_UNAVAILABLE] {
            let text = std::str::from_utf8(response).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            let declared: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(declared, body.len());
        }
    }
}
