//! The connect check: the backend accepts a connection (through the
//! pool's transport, so a TLS pool's check completes the handshake).
//! tcplb's default check.

use std::net::SocketAddr;
use std::time::Duration;

use super::check::{BoxFuture, Check, Failure, Transport};

/// Connects, then closes.
pub struct ConnectCheck;

impl Check for ConnectCheck {
    fn run<'a>(
        &'a self,
        target: SocketAddr,
        transport: &'a dyn Transport,
        _timeout: Duration,
    ) -> BoxFuture<'a, Result<String, Failure>> {
        Box::pin(async move {
            transport.connect(target).await?;
            Ok("connected".to_string())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::health::check::PlainTcp;

    /// Long enough never to end a check in these tests.
    const TEST_TIMEOUT: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn a_listening_port_passes_and_a_closed_one_is_refused() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = listener.local_addr().unwrap();
        assert_eq!(
            ConnectCheck.run(open, &PlainTcp, TEST_TIMEOUT).await,
            Ok("connected".into())
        );
        drop(listener);
        assert_eq!(
            ConnectCheck.run(open, &PlainTcp, TEST_TIMEOUT).await,
            Err(Failure::Failed("connection refused".into()))
        );
    }
}
