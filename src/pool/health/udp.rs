//! The UDP check: one datagram to the backend's check address, and what
//! comes back. A reply is judged as a whole (prefix, contains or regex, as
//! a send/expect check's); an ICMP port unreachable (`ECONNREFUSED` on
//! the connected socket) fails it at once. Without an expectation any
//! reply passes, and so does silence for [`SILENCE`]: many UDP services
//! never answer (syslog), and a closed port says so within a round trip.
//!
//! The datagram is sent again every third of the timeout while nothing
//! came back, so one datagram lost on the way does not fail a check.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use regex::bytes::Regex;
use tokio::net::UdpSocket;
use tokio::time::Instant;

use super::check::{BoxFuture, Check, Failure, Transport, shown};
use super::steps::{QUOTED, compile, mismatch, verdict};
use crate::config::{Expect, UdpCheck};

/// How long a check without an expectation waits for an ICMP error before
/// it passes (at most its timeout): an ICMP port unreachable comes back
/// within a round trip, and 500 ms is longer than any round trip short of
/// a satellite link.
pub const SILENCE: Duration = Duration::from_millis(500);

/// The largest reply read: a whole UDP payload.
const REPLY_LIMIT: usize = 65_536;

/// A UDP check, its pattern ready to match.
pub struct UdpProbe {
    /// The datagram sent.
    send: Vec<u8>,
    /// What the reply must hold, and its compiled regular expression.
    expect: Option<(Expect, Option<Regex>)>,
}

impl UdpProbe {
    pub fn new(check: &UdpCheck) -> Self {
        UdpProbe {
            send: check.send.clone(),
            expect: check.expect.clone().map(|e| {
                let regex = compile(&e);
                (e, regex)
            }),
        }
    }

    async fn probe(&self, target: SocketAddr, timeout: Duration) -> Result<String, Failure> {
        let unspecified: SocketAddr = match target {
            SocketAddr::V4(_) => "0.0.0.0:0".parse().expect("a literal address"),
            SocketAddr::V6(_) => "[::]:0".parse().expect("a literal address"),
        };
        let socket = UdpSocket::bind(unspecified).await?;
        socket.connect(target).await?;
        let started = Instant::now();
        let deadline = started
            + match self.expect {
                Some(_) => timeout,
                None => timeout.min(SILENCE),
            };
        let resend = (timeout / 3).max(Duration::from_millis(10));
        let mut reply = vec![0u8; REPLY_LIMIT];
        let mut next_send = started;
        loop {
            if Instant::now() >= next_send {
                match socket.send(&self.send).await {
                    Ok(_) => {}
                    Err(e) => return Err(refused_or(e)),
                }
                next_send += resend;
            }
            let wait = next_send.min(deadline);
            match tokio::time::timeout_at(wait, socket.recv(&mut reply)).await {
                Ok(Ok(n)) => return self.judge(&reply[..n]),
                Ok(Err(e)) => return Err(refused_or(e)),
                Err(_) if Instant::now() < deadline => continue,
                Err(_) => break,
            }
        }
        match &self.expect {
            None => Ok("no ICMP error".to_string()),
            Some((expect, _)) => Err(mismatch(
                1,
                expect,
                &[],
                &format!(" (no reply within {timeout:?})"),
            )),
        }
    }

    /// The verdict on one reply: a datagram is whole, so an expectation it
    /// does not meet yet never will.
    fn judge(&self, reply: &[u8]) -> Result<String, Failure> {
        let Some((expect, regex)) = &self.expect else {
            return Ok(format!("replied \"{}\"", shown(reply, QUOTED)));
        };
        match verdict(reply, expect, regex.as_ref()) {
            Some(true) => Ok("reply matched".to_string()),
            _ => Err(mismatch(1, expect, reply, "")),
        }
    }
}

/// An error of the check's socket: a refusal is the backend's port
/// unreachable; anything else as any check's error.
fn refused_or(e: io::Error) -> Failure {
    if e.kind() == io::ErrorKind::ConnectionRefused {
        Failure::Failed("port unreachable (ICMP)".to_string())
    } else {
        Failure::from(e)
    }
}

impl Check for UdpProbe {
    fn run<'a>(
        &'a self,
        target: SocketAddr,
        _transport: &'a dyn Transport,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<String, Failure>> {
        Box::pin(self.probe(target, timeout))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Match;
    use crate::pool::health::check::PlainTcp;

    /// Long enough never to end a check in these tests by itself.
    const TEST_TIMEOUT: Duration = Duration::from_secs(20);

    /// A UDP server answering every datagram with `answer(datagram)`
    /// (nothing when it returns `None`), dropping the first `lose`.
    async fn server(
        lose: usize,
        answer: impl Fn(&[u8]) -> Option<Vec<u8>> + Send + 'static,
    ) -> SocketAddr {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let mut seen = 0;
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                seen += 1;
                if seen <= lose {
                    continue;
                }
                if let Some(reply) = answer(&buf[..n]) {
                    let _ = socket.send_to(&reply, from).await;
                }
            }
        });
        addr
    }

    fn probe(send: &str, expect: Option<(&str, Match)>) -> UdpProbe {
        UdpProbe::new(&UdpCheck {
            send: send.as_bytes().to_vec(),
            expect: expect.map(|(p, how)| Expect::new(p.as_bytes().to_vec(), how).unwrap()),
        })
    }

    #[tokio::test]
    async fn a_matching_reply_passes_and_another_says_what_came() {
        let addr = server(0, |d| Some([b"re:", d].concat())).await;
        let check = probe("ping", Some(("re:ping", Match::Prefix)));
        assert_eq!(
            check.run(addr, &PlainTcp, TEST_TIMEOUT).await,
            Ok("reply matched".into())
        );
        let check = probe("ping", Some(("pong", Match::Contains)));
        assert_eq!(
            check.run(addr, &PlainTcp, TEST_TIMEOUT).await,
            Err(Failure::Failed(
                "expect #1: wanted a reply containing \"pong\", got \"re:ping\"".into()
            ))
        );
    }

    #[tokio::test]
    async fn a_lost_datagram_is_sent_again() {
        let addr = server(1, |d| Some(d.to_vec())).await;
        let check = probe("again", Some(("again", Match::Prefix)));
        assert_eq!(
            check.run(addr, &PlainTcp, Duration::from_millis(600)).await,
            Ok("reply matched".into())
        );
    }

    #[tokio::test]
    async fn a_closed_port_fails_and_silence_passes_without_an_expectation() {
        let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let check = probe("", None);
        assert_eq!(
            check.run(addr, &PlainTcp, TEST_TIMEOUT).await,
            Err(Failure::Failed("port unreachable (ICMP)".into()))
        );
        let silent = server(0, |_| None).await;
        let started = std::time::Instant::now();
        assert_eq!(
            check.run(silent, &PlainTcp, TEST_TIMEOUT).await,
            Ok("no ICMP error".into())
        );
        assert!(
            started.elapsed() < TEST_TIMEOUT,
            "waited {SILENCE:?}, not the timeout"
        );
        // With an expectation, silence fails.
        let check = probe("q", Some(("a", Match::Prefix)));
        let Err(Failure::Failed(reason)) = check
            .run(silent, &PlainTcp, Duration::from_millis(300))
            .await
        else {
            panic!("silence passed");
        };
        assert!(reason.ends_with("(no reply within 300ms)"), "{reason}");
    }
}
