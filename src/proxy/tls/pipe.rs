//! Moving plaintext between a client and its backend when either side is
//! TLS that tcplb ends (a terminated client, a backend spoken to over
//! `backend_tls`, or both), both ways, until both directions have ended.
//!
//! The plain [`crate::proxy::pipe`] moves bytes socket to socket and can
//! `splice` them; here every byte crosses rustls, so this pipe copies.
//! Everything else is the same: the [`Guards`] (idle timeout, maximum age,
//! an operator's drain deadline and stop), bytes counted as delivered into
//! the backend's stats and the connection's [`Live`], the per-thread
//! scratch buffer (a direction keeps a buffer of its own only while the
//! other side cannot take its bytes), and half-close: a `close_notify` (or
//! FIN) read from one side becomes a `close_notify` and FIN, or a FIN, to
//! the other.
//!
//! A TLS error after the handshake (garbage, a bad record) ends the pipe
//! on that side and is counted; rustls has queued the alert and
//! tokio-rustls sends it before the error comes back.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;

use crate::proxy::pipe::{
    EndReason, Guards, Limits, Live, PipeEnd, Piping, Side, end, with_scratch,
};
use crate::stats::BackendStats;
use crate::stats::tls::TlsStats;

/// The client's side: its socket, or the TLS stream tcplb terminated.
pub type ClientSide = Either<TcpStream, tokio_rustls::server::TlsStream<TcpStream>>;
/// The backend's side: its socket, or the TLS stream tcplb originated.
pub type BackendSide = Either<TcpStream, tokio_rustls::client::TlsStream<TcpStream>>;

/// A connection with TLS on at least one side, being piped.
pub struct TlsPipe {
    /// The client, decrypted when terminated.
    client: ClientSide,
    /// The backend, encrypted when originated.
    upstream: BackendSide,
    /// Client to backend, then backend to client.
    ways: [Way; 2],
    /// What ends the pipe although both sides are still there.
    guards: Guards,
    /// The TLS counters of each side that is TLS (terminator, then the
    /// pool's backend TLS): a TLS error after the handshake counts there.
    tls: [Option<Arc<TlsStats>>; 2],
}

/// Where one direction is.
#[derive(Default)]
enum Way {
    /// Waiting for bytes to read.
    #[default]
    Reading,
    /// Delivering `rest[at..]`, what the other side could not take at once.
    Writing { rest: Box<[u8]>, at: usize },
    /// Bytes handed to the other side, not all on the wire yet (TLS
    /// records rustls holds).
    Flushing,
    /// EOF read; shutting the other side's sending half (`close_notify`
    /// first over TLS).
    Closing,
    /// EOF read and passed on.
    Done,
}

type Failed = (Side, io::Error);

/// What one read did.
enum Moved {
    /// Nothing to read now (a waker is registered).
    Pending,
    /// The sender closed.
    Eof,
    /// `written` bytes delivered; `rest` still to go.
    Some { written: usize, rest: Vec<u8> },
}

impl TlsPipe {
    /// A pipe between `client` and `upstream` under `limits`; cancelling
    /// `evict` ends it. `tls` are the counters of the client's and the
    /// backend's TLS, when that side is TLS.
    pub fn new(
        client: ClientSide,
        upstream: BackendSide,
        limits: Limits,
        evict: Option<CancellationToken>,
        live: &Live,
        tls: [Option<Arc<TlsStats>>; 2],
    ) -> TlsPipe {
        TlsPipe {
            client,
            upstream,
            ways: [Way::Reading, Way::Reading],
            guards: Guards::new(limits, evict, live),
            tls,
        }
    }
}

impl Piping for TlsPipe {
    fn poll_pipe(
        &mut self,
        cx: &mut Context<'_>,
        stats: &BackendStats,
        live: &Live,
        stopped: Pin<&mut impl Future<Output = ()>>,
    ) -> Poll<PipeEnd> {
        if let Some(reason) = self.guards.poll_stop(cx, stats, stopped) {
            return Poll::Ready(end(live, reason));
        }
        let [to_backend, to_client] = &mut self.ways;
        let sides = (Side::Client, Side::Backend);
        let steps = [
            poll_way(
                &mut self.client,
                &mut self.upstream,
                to_backend,
                sides,
                cx,
                stats,
                live,
            ),
            poll_way(
                &mut self.upstream,
                &mut self.client,
                to_client,
                (sides.1, sides.0),
                cx,
                stats,
                live,
            ),
        ];
        for step in steps {
            if let Poll::Ready(Err((side, e))) = step {
                let tls_error = e.get_ref().is_some_and(|e| e.is::<rustls::Error>());
                let counters = &self.tls[usize::from(side == Side::Backend)];
                if let (true, Some(counters)) = (tls_error, counters) {
                    counters.protocol_errors.fetch_add(1, Relaxed);
                }
                return Poll::Ready(end(live, EndReason::Error(side, e)));
            }
        }
        if self.ways.iter().all(|way| matches!(way, Way::Done)) {
            return Poll::Ready(end(live, EndReason::Closed));
        }
        match self.guards.poll_limits(cx, stats, live) {
            Some(reason) => Poll::Ready(end(live, reason)),
            None => Poll::Pending,
        }
    }
}

/// Moves one direction, `from` (on side `sides.0`) to `to` (`sides.1`),
/// until it must wait, has ended, or failed on a side.
fn poll_way<R, W>(
    from: &mut R,
    to: &mut W,
    way: &mut Way,
    (from_side, to_side): (Side, Side),
    cx: &mut Context<'_>,
    stats: &BackendStats,
    live: &Live,
) -> Poll<Result<(), Failed>>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let on_from = |e| (from_side, e);
    let on_to = |e| (to_side, e);
    let to_backend = from_side == Side::Client;
    loop {
        match way {
            Way::Done => return Poll::Ready(Ok(())),
            Way::Closing => {
                ready!(Pin::new(&mut *to).poll_shutdown(cx)).map_err(on_to)?;
                *way = Way::Done;
            }
            Way::Flushing => {
                ready!(Pin::new(&mut *to).poll_flush(cx)).map_err(on_to)?;
                *way = Way::Reading;
            }
            Way::Writing { rest, at } => {
                let n = ready!(Pin::new(&mut *to).poll_write(cx, &rest[*at..])).map_err(on_to)?;
                if n == 0 {
                    return Poll::Ready(Err(on_to(io::ErrorKind::WriteZero.into())));
                }
                *at += n;
                live.delivered(stats, to_backend, n);
                if *at == rest.len() {
                    *way = Way::Flushing;
                }
            }
            Way::Reading => {
                let moved = with_scratch(|buffer| {
                    let mut read = ReadBuf::uninit(buffer.spare_capacity_mut());
                    match Pin::new(&mut *from).poll_read(cx, &mut read) {
                        Poll::Pending => Ok(Moved::Pending),
                        // TLS without close_notify: a FIN all the same.
                        Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                            Ok(Moved::Eof)
                        }
                        Poll::Ready(Err(e)) => Err(on_from(e)),
                        Poll::Ready(Ok(())) if read.filled().is_empty() => Ok(Moved::Eof),
                        Poll::Ready(Ok(())) => {
                            let data = read.filled();
                            let mut written = 0;
                            while written < data.len() {
                                match Pin::new(&mut *to).poll_write(cx, &data[written..]) {
                                    Poll::Ready(Ok(0)) => {
                                        return Err(on_to(io::ErrorKind::WriteZero.into()));
                                    }
                                    Poll::Ready(Ok(n)) => written += n,
                                    Poll::Ready(Err(e)) => return Err(on_to(e)),
                                    Poll::Pending => break,
                                }
                            }
                            Ok(Moved::Some {
                                written,
                                rest: data[written..].to_vec(),
                            })
                        }
                    }
                })?;
                match moved {
                    Moved::Pending => return Poll::Pending,
                    Moved::Eof => *way = Way::Closing,
                    Moved::Some { written, rest } => {
                        if written > 0 {
                            live.delivered(stats, to_backend, written);
                        }
                        *way = match rest.is_empty() {
                            true => Way::Flushing,
                            false => Way::Writing {
                                rest: rest.into_boxed_slice(),
                                at: 0,
                            },
                        };
                    }
                }
            }
        }
    }
}
