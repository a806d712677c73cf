//! The HTTP check: one HTTP/1.1 request with `Connection: close` over the
//! transport the pool gives it (TLS when the pool speaks TLS to its
//! backends), parsed by hyper's client, never by hand. The status must be
//! one of `expect_status` and, when `expect_body` is set, the body (read
//! up to [`BODY_LIMIT`]) must contain it. Patroni's `/primary`,
//! `/replica`, `/replica?lag=10MB` and `/read-only` are the model: 200 for
//! yes, 503 for no.

use std::net::SocketAddr;
use std::pin::pin;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::header::{CONNECTION, HOST, USER_AGENT};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;

use super::check::{BoxFuture, Check, Failure, Transport, shown};
use crate::config::HttpCheck;

/// The most of a body read for `expect_body` (HAProxy reads up to its
/// check buffer, 16 KiB; a status page may be longer).
pub const BODY_LIMIT: usize = 64 * 1024;

/// An HTTP check as configured.
pub struct HttpProbe {
    check: HttpCheck,
}

impl HttpProbe {
    pub fn new(check: HttpCheck) -> Self {
        HttpProbe { check }
    }

    fn request(&self, target: SocketAddr) -> Result<Request<Empty<Bytes>>, Failure> {
        let host = self
            .check
            .host
            .clone()
            .unwrap_or_else(|| target.to_string());
        let method = Method::from_bytes(self.check.method.as_bytes())
            .map_err(|e| Failure::Failed(format!("bad method: {e}")))?;
        Request::builder()
            .method(method)
            .uri(self.check.path.as_str())
            .header(HOST, host)
            .header(CONNECTION, "close")
            .header(
                USER_AGENT,
                concat!("tcplb-health/", env!("CARGO_PKG_VERSION")),
            )
            .body(Empty::new())
            .map_err(|e| Failure::Failed(format!("bad request: {e}")))
    }
}

impl Check for HttpProbe {
    fn run<'a>(
        &'a self,
        target: SocketAddr,
        transport: &'a dyn Transport,
        _timeout: Duration,
    ) -> BoxFuture<'a, Result<String, Failure>> {
        Box::pin(async move {
            let request = self.request(target)?;
            let stream = transport.connect(target).await?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(bad_response)?;
            // The connection is driven here, beside the exchange, not on a
            // task of its own: dropping the check at its timeout drops both.
            let exchange = async {
                let response = sender.send_request(request).await.map_err(bad_response)?;
                let status = response.status();
                if !self.check.expect_status.contains(status.as_u16()) {
                    return Err(Failure::Failed(format!(
                        "HTTP {} (expected {})",
                        status.as_u16(),
                        self.check.expect_status
                    )));
                }
                let Some(wanted) = &self.check.expect_body else {
                    return Ok(format!("HTTP {}", status.as_u16()));
                };
                let body = read_body(response.into_body()).await?;
                let found = body.windows(wanted.len()).any(|w| w == wanted.as_bytes());
                if found {
                    Ok(format!("HTTP {}, body matched", status.as_u16()))
                } else {
                    Err(Failure::Failed(format!(
                        "HTTP {}, but the body lacks \"{}\": \"{}\"",
                        status.as_u16(),
                        shown(wanted.as_bytes(), 80),
                        shown(&body, 80)
                    )))
                }
            };
            let mut exchange = pin!(exchange);
            let mut connection = pin!(connection);
            let mut connection_done = false;
            loop {
                tokio::select! {
                    result = &mut exchange => return result,
                    ended = &mut connection, if !connection_done => {
                        connection_done = true;
                        ended.map_err(bad_response)?;
                    }
                }
            }
        })
    }
}

/// The body, up to [`BODY_LIMIT`] bytes (the rest is not read).
async fn read_body(mut body: hyper::body::Incoming) -> Result<Vec<u8>, Failure> {
    let mut out = Vec::new();
    while out.len() < BODY_LIMIT {
        match body.frame().await {
            None => break,
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    let room = BODY_LIMIT - out.len();
                    out.extend_from_slice(&data[..data.len().min(room)]);
                }
            }
            Some(Err(e)) => return Err(bad_response(e)),
        }
    }
    Ok(out)
}

/// hyper's error with its causes, e.g. "bad HTTP response: invalid HTTP
/// version parsed".
fn bad_response(e: hyper::Error) -> Failure {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    Failure::Failed(format!("bad HTTP response: {text}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::health::check::PlainTcp;

    /// Long enough never to end a check in these tests.
    const TEST_TIMEOUT: Duration = Duration::from_secs(60);
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A server that reads a request head, keeps it, and answers `reply`.
    async fn server(reply: &'static [u8]) -> (SocketAddr, tokio::sync::mpsc::Receiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (heads, seen) = tokio::sync::mpsc::channel(8);
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let heads = heads.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") && s.read(&mut byte).await.unwrap_or(0) == 1
                    {
                        head.push(byte[0]);
                    }
                    let _ = heads
                        .send(String::from_utf8_lossy(&head).into_owned())
                        .await;
                    let _ = s.write_all(reply).await;
                });
            }
        });
        (addr, seen)
    }

    fn probe(method: &str, path: &str) -> HttpProbe {
        HttpProbe::new(HttpCheck {
            method: method.into(),
            path: path.into(),
            ..HttpCheck::default()
        })
    }

    #[tokio::test]
    async fn the_request_is_http11_with_connection_close_and_the_status_decides() {
        let (addr, mut heads) =
            server(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nprimary").await;
        let check = probe("OPTIONS", "/primary");
        assert_eq!(
            check.run(addr, &PlainTcp, TEST_TIMEOUT).await,
            Ok("HTTP 200".into())
        );
        let head = heads.recv().await.unwrap().to_ascii_lowercase();
        assert!(head.starts_with("options /primary http/1.1\r\n"), "{head}");
        assert!(head.contains("connection: close\r\n"), "{head}");
        assert!(head.contains(&format!("host: {addr}\r\n")), "{head}");

        let (addr, _) =
            server(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n").await;
        assert_eq!(
            probe("GET", "/primary")
                .run(addr, &PlainTcp, TEST_TIMEOUT)
                .await,
            Err(Failure::Failed("HTTP 503 (expected 2xx,3xx)".into()))
        );
    }

    #[tokio::test]
    async fn the_body_must_hold_the_expected_text() {
        let (addr, _) =
            server(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{\"role\": \"replica\"}").await;
        let mut check = HttpCheck {
            expect_body: Some("\"role\": \"primary\"".into()),
            ..HttpCheck::default()
        };
        let Err(Failure::Failed(reason)) = HttpProbe::new(check.clone())
            .run(addr, &PlainTcp, TEST_TIMEOUT)
            .await
        else {
            panic!("passed");
        };
        assert!(
            reason.starts_with("HTTP 200, but the body lacks"),
            "{reason}"
        );
        check.expect_body = Some("replica".into());
        assert_eq!(
            HttpProbe::new(check)
                .run(addr, &PlainTcp, TEST_TIMEOUT)
                .await,
            Ok("HTTP 200, body matched".into())
        );
    }

    #[tokio::test]
    async fn malformed_responses_fail_with_a_reason() {
        for (reply, expected) in [
            (&b"SSH-2.0-OpenSSH_9.2\r\n"[..], "bad HTTP response"),
            (&b"HTTP/1.1 2000 What\r\n\r\n"[..], "bad HTTP response"),
            (&b""[..], "bad HTTP response"),
            (
                &b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\nshort"[..],
                "bad HTTP response",
            ),
        ] {
            let (addr, _) = server(reply).await;
            let check = HttpCheck {
                expect_body: Some("short and more".into()),
                ..HttpCheck::default()
            };
            let result = HttpProbe::new(check)
                .run(addr, &PlainTcp, TEST_TIMEOUT)
                .await;
            let Err(Failure::Failed(reason)) = result else {
                panic!("{reply:?}: {result:?}");
            };
            assert!(reason.starts_with(expected), "{reply:?}: {reason}");
        }
    }
}
