//! What every kind of active check shares: the [`Check`] trait, the
//! [`Transport`] a check opens its connection with, and the [`Failure`] a
//! check reports.
//!
//! The transport is handed to the check rather than chosen by it, so a
//! pool that speaks TLS to its backends hands its checks a [`Tls`]
//! transport and the connect, steps and HTTP checks go over TLS without
//! knowing it.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::config::CheckConfig;
use crate::pool::backend::Backend;
use crate::pool::connect::tls::Originator;
use crate::pool::connect::{describe, is_local_exhaustion};

/// A boxed future, for the object-safe traits below.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A connection a check talks over: TCP, or TLS over TCP.
pub trait CheckStream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> CheckStream for T {}

/// Opens a check's connection to a backend.
pub trait Transport: Send + Sync {
    fn connect(&self, target: SocketAddr) -> BoxFuture<'_, io::Result<Box<dyn CheckStream>>>;
}

/// Plain TCP, Nagle off: what every check used so far.
pub struct PlainTcp;

impl Transport for PlainTcp {
    fn connect(&self, target: SocketAddr) -> BoxFuture<'_, io::Result<Box<dyn CheckStream>>> {
        Box::pin(async move {
            let stream = TcpStream::connect(target).await?;
            stream.set_nodelay(true)?;
            Ok(Box::new(stream) as Box<dyn CheckStream>)
        })
    }
}

/// One kind of active check. The caller also bounds it, a little after
/// `timeout`: a check that can say more than "no answer" (what arrived so
/// far) ends itself at `timeout`; any other is dropped, and cleans up.
pub trait Check: Send + Sync {
    /// Checks the backend whose checks go to `target`, connecting (when it
    /// connects at all) through `transport`, within `timeout`. `Ok` says
    /// what passed (`HTTP 200`, `connected`), shown in `/status`.
    fn run<'a>(
        &'a self,
        target: SocketAddr,
        transport: &'a dyn Transport,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<String, Failure>>;

    /// A slot this kind of check must hold while it runs, taken before its
    /// timeout starts (an exec check's process slot); `None`: no limit.
    fn admission(&self) -> Option<&'static Semaphore> {
        None
    }
}

/// Why a check did not pass.
#[derive(Debug, PartialEq, Eq)]
pub enum Failure {
    /// The backend failed it; the text goes into the DOWN log line and
    /// `/status`.
    Failed(String),
    /// We could not run it (out of descriptors, no exec slot): no
    /// verdict on the backend.
    Local(String),
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        if is_local_exhaustion(&e) {
            Failure::Local(e.to_string())
        } else {
            Failure::Failed(describe(&e))
        }
    }
}

/// TLS over TCP: the pool's own handshake ([`Originator::handshake`], as
/// connections complete it: verified, the same server name), so a backend
/// whose certificate does not verify fails its check, the reason in the
/// DOWN line and `/status`.
pub struct Tls {
    /// The pool's `backend_tls`, as loaded when the round began.
    originator: Arc<Originator>,
    /// The backend's name: its host names the server (SNI, verification).
    name: String,
    /// The check's timeout: the handshake must end within it.
    timeout: Duration,
}

impl Transport for Tls {
    fn connect(&self, target: SocketAddr) -> BoxFuture<'_, io::Result<Box<dyn CheckStream>>> {
        Box::pin(async move {
            let deadline = tokio::time::Instant::now() + self.timeout;
            let stream = TcpStream::connect(target).await?;
            stream.set_nodelay(true)?;
            let stream = self
                .originator
                .handshake(stream, &self.name, target, deadline)
                .await
                .map_err(|e| io::Error::other(e.to_string()))?;
            Ok(Box::new(stream) as Box<dyn CheckStream>)
        })
    }
}

/// What the checks of `backend` connect with: plain TCP, or with the
/// pool's `backend_tls` (`tls`, loaded once per round: a reload may turn
/// it on or off) a verified TLS handshake after the connect.
pub fn transport_for(
    tls: Option<&Arc<Originator>>,
    backend: &Backend,
    timeout: Duration,
) -> Arc<dyn Transport> {
    match tls {
        None => Arc::new(PlainTcp),
        Some(originator) => Arc::new(Tls {
            originator: originator.clone(),
            name: backend.name().to_string(),
            timeout,
        }),
    }
}

/// The check `config` describes, built once per configuration (a regular
/// expression is compiled here, not per check).
pub fn build(config: &CheckConfig) -> Arc<dyn Check> {
    match config {
        CheckConfig::Connect => Arc::new(super::connect::ConnectCheck),
        CheckConfig::Steps(steps) => Arc::new(super::steps::StepsCheck::new(steps)),
        CheckConfig::Http(http) => Arc::new(super::http::HttpProbe::new(http.clone())),
        CheckConfig::Exec(exec) => Arc::new(super::exec::ExecProbe::new(exec.clone())),
        CheckConfig::Udp(udp) => Arc::new(super::udp::UdpProbe::new(udp)),
    }
}

/// Bytes as a reason shows them: printable ASCII as is, the rest escaped,
/// at most `max` bytes of them (then `...`).
pub fn shown(bytes: &[u8], max: usize) -> String {
    let mut out: String = bytes
        .iter()
        .take(max)
        .flat_map(|&b| std::ascii::escape_default(b))
        .map(char::from)
        .collect();
    if bytes.len() > max {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_show_escaped_and_bounded() {
        assert_eq!(shown(b"+PONG\r\n", 80), "+PONG\\r\\n");
        assert_eq!(shown(&[0, 0xff], 80), "\\x00\\xff");
        assert_eq!(shown(b"abcdef", 3), "abc...");
    }

    #[test]
    fn exhaustion_is_no_verdict() {
        let e = io::Error::from_raw_os_error(libc::EMFILE);
        assert!(matches!(Failure::from(e), Failure::Local(_)));
        let e = io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert_eq!(
            Failure::from(e),
            Failure::Failed("connection refused".into())
        );
    }
}
