//! The send/expect check (HAProxy's `tcp-check`): connect, then run the
//! steps in order. A send writes its bytes and forgets what arrived
//! before; an expect reads until what arrived since the last send
//! matches (prefix, contains or regex), the backend closes, [`READ_LIMIT`]
//! bytes are in, or the caller's timeout ends the check.

use std::net::SocketAddr;
use std::time::Duration;

use regex::bytes::Regex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::check::{BoxFuture, Check, CheckStream, Failure, Transport, shown};
use crate::config::{Expect, Match, Step};

/// The most an expect step reads before it gives up (HAProxy's
/// `tune.chksize` is 16 KiB too): a backend cannot make a check hold an
/// unbounded buffer.
pub const READ_LIMIT: usize = 16 * 1024;

/// How much of a reply a failure's reason quotes.
pub(super) const QUOTED: usize = 80;

/// A step, its pattern ready to match.
enum Compiled {
    Send(Vec<u8>),
    Expect {
        expect: Expect,
        regex: Option<Regex>,
    },
}

/// A sequence of sends and expects.
pub struct StepsCheck {
    steps: Vec<Compiled>,
}

impl StepsCheck {
    /// Compiles `steps`; their regular expressions were checked when the
    /// configuration was read, so one that fails here (it cannot) would
    /// only never match.
    pub fn new(steps: &[Step]) -> Self {
        let steps = steps
            .iter()
            .map(|step| match step {
                Step::Send(bytes) => Compiled::Send(bytes.clone()),
                Step::Expect(expect) => Compiled::Expect {
                    regex: compile(expect),
                    expect: expect.clone(),
                },
            })
            .collect();
        StepsCheck { steps }
    }
}

impl Check for StepsCheck {
    fn run<'a>(
        &'a self,
        target: SocketAddr,
        transport: &'a dyn Transport,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<String, Failure>> {
        Box::pin(async move {
            let deadline = tokio::time::Instant::now() + timeout;
            let mut stream = transport.connect(target).await?;
            let mut received = Vec::new();
            let mut expects = 0;
            for step in &self.steps {
                match step {
                    Compiled::Send(bytes) => {
                        stream.write_all(bytes).await?;
                        received.clear();
                    }
                    Compiled::Expect { expect, regex } => {
                        expects += 1;
                        let step = Expecting {
                            expect,
                            regex: regex.as_ref(),
                            number: expects,
                        };
                        step.read(&mut stream, &mut received, deadline, timeout)
                            .await?;
                    }
                }
            }
            Ok(match expects {
                0 => "sent".to_string(),
                1 => "reply matched".to_string(),
                n => format!("{n} replies matched"),
            })
        })
    }
}

/// One expect step being run.
struct Expecting<'a> {
    expect: &'a Expect,
    regex: Option<&'a Regex>,
    /// Its place among the expects, for the reason: `expect #2`.
    number: usize,
}

impl Expecting<'_> {
    /// Reads into `received` until the expectation matches it; at
    /// `deadline` (`timeout` after the check began) it fails, quoting
    /// what did arrive.
    async fn read(
        &self,
        stream: &mut Box<dyn CheckStream>,
        received: &mut Vec<u8>,
        deadline: tokio::time::Instant,
        timeout: Duration,
    ) -> Result<(), Failure> {
        let (expect, regex, number) = (self.expect, self.regex, self.number);
        let mut chunk = [0u8; 4096];
        loop {
            match verdict(received, expect, regex) {
                Some(true) => return Ok(()),
                Some(false) => return Err(mismatch(number, expect, received, "")),
                None => {}
            }
            if received.len() >= READ_LIMIT {
                return Err(mismatch(
                    number,
                    expect,
                    received,
                    &format!(" (stopped reading at {READ_LIMIT} bytes)"),
                ));
            }
            let room = (READ_LIMIT - received.len()).min(chunk.len());
            let Ok(read) = tokio::time::timeout_at(deadline, stream.read(&mut chunk[..room])).await
            else {
                let why = if received.is_empty() {
                    format!(" (no reply within {timeout:?})")
                } else {
                    format!(" (nothing more within {timeout:?})")
                };
                return Err(mismatch(number, expect, received, &why));
            };
            match read {
                Ok(0) => {
                    let why = if received.is_empty() {
                        " (closed without a reply)"
                    } else {
                        " (then closed)"
                    };
                    return Err(mismatch(number, expect, received, why));
                }
                Ok(n) => received.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// The regular expression of a `regex` expect, compiled; `None` for the
/// other matches (and for one that does not compile, which the
/// configuration already refused).
pub(super) fn compile(expect: &Expect) -> Option<Regex> {
    (expect.how == Match::Regex)
        .then(|| std::str::from_utf8(&expect.pattern).ok())
        .flatten()
        .and_then(|text| Regex::new(text).ok())
}

/// Whether `received` settles `expect`: `Some(true)` matched,
/// `Some(false)` cannot match any more, `None` needs more bytes.
pub(super) fn verdict(received: &[u8], expect: &Expect, regex: Option<&Regex>) -> Option<bool> {
    let pattern = &expect.pattern;
    match expect.how {
        Match::Prefix => {
            let n = received.len().min(pattern.len());
            if received[..n] != pattern[..n] {
                Some(false)
            } else if n == pattern.len() {
                Some(true)
            } else {
                None
            }
        }
        Match::Contains => received
            .windows(pattern.len())
            .any(|w| w == pattern.as_slice())
            .then_some(true),
        Match::Regex => regex.is_some_and(|r| r.is_match(received)).then_some(true),
    }
}

pub(super) fn mismatch(number: usize, expect: &Expect, received: &[u8], why: &str) -> Failure {
    let wanted = match expect.how {
        Match::Prefix => "a reply starting with",
        Match::Contains => "a reply containing",
        Match::Regex => "a reply matching",
    };
    Failure::Failed(format!(
        "expect #{number}: wanted {wanted} \"{}\", got \"{}\"{why}",
        shown(&expect.pattern, QUOTED),
        shown(received, QUOTED)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::health::step;
    use crate::pool::health::check::PlainTcp;

    /// Long enough never to end a check in these tests.
    const TEST_TIMEOUT: Duration = Duration::from_secs(60);
    use tokio::net::TcpListener;

    /// A server answering each connection with `reply` in pieces after
    /// reading `wait_for` bytes, then closing, or with `linger` reading
    /// until the check closes.
    async fn server(wait_for: usize, reply: Vec<Vec<u8>>) -> SocketAddr {
        serve(wait_for, reply, false).await
    }

    async fn serve(wait_for: usize, reply: Vec<Vec<u8>>, linger: bool) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let reply = reply.clone();
                tokio::spawn(async move {
                    let mut got = vec![0u8; wait_for];
                    if s.read_exact(&mut got).await.is_err() {
                        return;
                    }
                    for piece in reply {
                        let _ = s.write_all(&piece).await;
                        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    }
                    let mut rest = [0u8; 64];
                    while linger && matches!(s.read(&mut rest).await, Ok(n) if n > 0) {}
                });
            }
        });
        addr
    }

    fn steps(list: &[(&str, Option<&str>)]) -> StepsCheck {
        let parsed: Vec<Step> = list
            .iter()
            .map(|(text, how)| match text.strip_prefix("> ") {
                Some(send) => step(Some(send), None, None, None, None).unwrap(),
                None => step(
                    None,
                    None,
                    Some(text),
                    None,
                    how.map(|h| h.parse().unwrap()),
                )
                .unwrap(),
            })
            .collect();
        StepsCheck::new(&parsed)
    }

    #[tokio::test]
    async fn prefix_contains_and_regex_match_replies_that_arrive_in_pieces() {
        let addr = server(
            6,
            vec![
                b"+PO".to_vec(),
                b"NG\r\nrole:ma".to_vec(),
                b"ster\r\n".to_vec(),
            ],
        )
        .await;
        for (expect, how) in [
            ("+PONG", None),
            ("role:master", Some("contains")),
            (r"^\+PONG\r\n.*role:(master|primary)", Some("regex")),
        ] {
            let check = steps(&[("> PING\\r\\n", None), (expect, how)]);
            assert_eq!(
                check.run(addr, &PlainTcp, TEST_TIMEOUT).await,
                Ok("reply matched".into()),
                "{expect}"
            );
        }
    }

    #[tokio::test]
    async fn a_wrong_reply_says_what_came_instead() {
        let addr = server(6, vec![b"-ERR no\r\n".to_vec()]).await;
        let check = steps(&[("> PING\\r\\n", None), ("+PONG", None)]);
        assert_eq!(
            check.run(addr, &PlainTcp, TEST_TIMEOUT).await,
            Err(Failure::Failed(
                "expect #1: wanted a reply starting with \"+PONG\", got \"-ERR no\\r\\n\"".into()
            ))
        );
        let check = steps(&[("> PING\\r\\n", None), ("role:master", Some("contains"))]);
        let Err(Failure::Failed(reason)) = check.run(addr, &PlainTcp, TEST_TIMEOUT).await else {
            panic!("passed");
        };
        assert!(reason.ends_with("(then closed)"), "{reason}");
    }

    #[tokio::test]
    async fn an_endless_reply_is_cut_at_the_read_limit() {
        let endless = vec![vec![b'x'; 8192]; 4];
        let addr = serve(1, endless, true).await;
        let check = steps(&[("> ?", None), ("role:master", Some("contains"))]);
        let Err(Failure::Failed(reason)) = check.run(addr, &PlainTcp, TEST_TIMEOUT).await else {
            panic!("passed");
        };
        assert!(
            reason.contains("stopped reading at 16384 bytes"),
            "{reason}"
        );
    }

    #[tokio::test]
    async fn at_the_timeout_the_reason_quotes_what_arrived() {
        let addr = serve(6, vec![b"role:slave\r\n".to_vec()], true).await;
        let check = steps(&[("> INFO\r\n", None), ("role:master", Some("contains"))]);
        let short = Duration::from_millis(200);
        assert_eq!(
            check.run(addr, &PlainTcp, short).await,
            Err(Failure::Failed(
                "expect #1: wanted a reply containing \"role:master\", got \"role:slave\\r\\n\" \
                 (nothing more within 200ms)"
                    .into()
            ))
        );
    }

    #[tokio::test]
    async fn a_send_forgets_what_came_before() {
        // The greeting "+OK" is not the answer to the second question.
        let addr = serve(0, vec![b"+OK\r\n".to_vec()], true).await;
        let check = steps(&[("+OK", None), ("> ask", None), ("+OK", None)]);
        let wait = std::time::Duration::from_millis(300);
        assert!(
            tokio::time::timeout(wait, check.run(addr, &PlainTcp, TEST_TIMEOUT))
                .await
                .is_err(),
            "the second expect waits for an answer (the caller's timeout fails it)"
        );
    }
}
