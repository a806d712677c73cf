//! Moving plaintext between a terminated client (a rustls stream) and its
//! backend (plain TCP), both ways, until both directions have ended.
//!
//! The plain [`crate::proxy::pipe`] moves bytes socket to socket and can
//! `splice` them; here every byte crosses rustls, so this pipe copies.
//! Everything else is the same: the [`Guards`] (idle timeout, maximum age,
//! an operator's drain deadline and stop), bytes counted as delivered into
//! the backend's stats and the connection's [`Live`], the per-thread
//! scratch buffer (a direction keeps a buffer of its own only while the
//! other side cannot take its bytes), and half-close: the client's
//! `close_notify` (or FIN) becomes a FIN to the backend, the backend's FIN
//! a `close_notify` and FIN to the client.
//!
//! A TLS error after the handshake (garbage, a bad record) ends the pipe
//! on the client's side; rustls has queued the alert and tokio-rustls
//! sends it before the error comes back.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use crate::proxy::pipe::{
    EndReason, Guards, Limits, Live, PipeEnd, Piping, Side, end, pass_eof, poll_write_rest,
    read_some, with_scratch, write_now,
};
use crate::stats::BackendStats;
use crate::stats::tls::TlsStats;

/// A terminated connection being piped.
pub struct TlsPipe {
    /// The client, decrypted.
    client: TlsStream<TcpStream>,
    /// The backend's socket.
    upstream: TcpStream,
    /// Client to backend, then backend to client.
    ways: [Way; 2],
    /// The backend's sending half was shut (see [`pass_eof`]).
    ended: bool,
    /// What ends the pipe although both sides are still there.
    guards: Guards,
    /// The terminator's counters: a TLS error after the handshake counts.
    tls: Arc<TlsStats>,
}

/// Where one direction is.
#[derive(Default)]
enum Way {
    /// Waiting for bytes to read.
    #[default]
    Reading,
    /// Delivering `rest[at..]`, what the other side could not take at once.
    Writing { rest: Box<[u8]>, at: usize },
    /// Towards the client: plaintext handed to rustls, its records not all
    /// on the wire yet.
    Flushing,
    /// Towards the client: the backend closed; sending `close_notify`.
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
    /// A pipe between a terminated `client` and `upstream` under `limits`;
    /// cancelling `evict` ends it.
    pub fn new(
        client: TlsStream<TcpStream>,
        upstream: TcpStream,
        limits: Limits,
        evict: Option<CancellationToken>,
        live: &Live,
        tls: Arc<TlsStats>,
    ) -> TlsPipe {
        TlsPipe {
            client,
            upstream,
            ways: [Way::Reading, Way::Reading],
            ended: false,
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
        let steps = [
            self.poll_to_backend(cx, stats, live),
            self.poll_to_client(cx, stats, live),
        ];
        for step in steps {
            if let Poll::Ready(Err((side, e))) = step {
                let tls_error = e.get_ref().is_some_and(|e| e.is::<rustls::Error>());
                if side == Side::Client && tls_error {
                    self.tls.protocol_errors.fetch_add(1, Relaxed);
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

impl TlsPipe {
    /// Client to backend: decrypted bytes to the backend's socket.
    fn poll_to_backend(
        &mut self,
        cx: &mut Context<'_>,
        stats: &BackendStats,
        live: &Live,
    ) -> Poll<Result<(), Failed>> {
        let client = |e| (Side::Client, e);
        let backend = |e| (Side::Backend, e);
        loop {
            match &mut self.ways[0] {
                Way::Done => return Poll::Ready(Ok(())),
                Way::Writing { rest, at } => {
                    let n = ready!(poll_write_rest(&self.upstream, cx, &rest[*at..]))
                        .map_err(backend)?;
                    if n > 0 {
                        *at += n;
                        live.delivered(stats, true, n);
                    }
                    if *at == rest.len() {
                        self.ways[0] = Way::Reading;
                    }
                }
                // Never this way's states.
                Way::Flushing | Way::Closing => self.ways[0] = Way::Reading,
                Way::Reading => {
                    let (client_stream, upstream) = (&mut self.client, &self.upstream);
                    let moved = with_scratch(|buffer| {
                        let mut read = ReadBuf::uninit(buffer.spare_capacity_mut());
                        match Pin::new(client_stream).poll_read(cx, &mut read) {
                            Poll::Pending => Ok(Moved::Pending),
                            // Without close_notify: a FIN all the same.
                            Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                                Ok(Moved::Eof)
                            }
                            Poll::Ready(Err(e)) => Err(client(e)),
                            Poll::Ready(Ok(())) if read.filled().is_empty() => Ok(Moved::Eof),
                            Poll::Ready(Ok(())) => {
                                let data = read.filled();
                                let written = write_now(upstream, data).map_err(backend)?;
                                Ok(Moved::Some {
                                    written,
                                    rest: data[written..].to_vec(),
                                })
                            }
                        }
                    })?;
                    match moved {
                        Moved::Pending => return Poll::Pending,
                        Moved::Eof => {
                            self.ways[0] = Way::Done;
                            pass_eof(&self.upstream, &mut self.ended).map_err(backend)?;
                        }
                        Moved::Some { written, rest } => {
                            if written > 0 {
                                live.delivered(stats, true, written);
                            }
                            if !rest.is_empty() {
                                self.ways[0] = Way::Writing {
                                    rest: rest.into_boxed_slice(),
                                    at: 0,
                                };
                            }
                        }
                    }
                }
            }
        }
    }

    /// Backend to client: the backend's bytes encrypted to the client.
    fn poll_to_client(
        &mut self,
        cx: &mut Context<'_>,
        stats: &BackendStats,
        live: &Live,
    ) -> Poll<Result<(), Failed>> {
        let client = |e| (Side::Client, e);
        let backend = |e| (Side::Backend, e);
        loop {
            match &mut self.ways[1] {
                Way::Done => return Poll::Ready(Ok(())),
                Way::Closing => {
                    ready!(Pin::new(&mut self.client).poll_shutdown(cx)).map_err(client)?;
                    self.ways[1] = Way::Done;
                }
                Way::Flushing => {
                    ready!(Pin::new(&mut self.client).poll_flush(cx)).map_err(client)?;
                    self.ways[1] = Way::Reading;
                }
                Way::Writing { rest, at } => {
                    let n = ready!(Pin::new(&mut self.client).poll_write(cx, &rest[*at..]))
                        .map_err(client)?;
                    if n == 0 {
                        return Poll::Ready(Err(client(io::ErrorKind::WriteZero.into())));
                    }
                    *at += n;
                    live.delivered(stats, false, n);
                    if *at == rest.len() {
                        self.ways[1] = Way::Flushing;
                    }
                }
                Way::Reading => {
                    ready!(self.upstream.poll_read_ready(cx)).map_err(backend)?;
                    let (client_stream, upstream) = (&mut self.client, &self.upstream);
                    let moved = with_scratch(|buffer| {
                        let n = match read_some(upstream, buffer) {
                            Ok(0) => return Ok(Moved::Eof),
                            Ok(n) => n,
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                                return Ok(Moved::Some {
                                    written: 0,
                                    rest: Vec::new(),
                                });
                            }
                            Err(e) => return Err(backend(e)),
                        };
                        let mut written = 0;
                        while written < n {
                            match Pin::new(&mut *client_stream).poll_write(cx, &buffer[written..n])
                            {
                                Poll::Ready(Ok(0)) => {
                                    return Err(client(io::ErrorKind::WriteZero.into()));
                                }
                                Poll::Ready(Ok(k)) => written += k,
                                Poll::Ready(Err(e)) => return Err(client(e)),
                                Poll::Pending => break,
                            }
                        }
                        Ok(Moved::Some {
                            written,
                            rest: buffer[written..n].to_vec(),
                        })
                    })?;
                    match moved {
                        Moved::Pending => return Poll::Pending,
                        Moved::Eof => self.ways[1] = Way::Closing,
                        Moved::Some { written: 0, rest } if rest.is_empty() => {}
                        Moved::Some { written, rest } => {
                            if written > 0 {
                                live.delivered(stats, false, written);
                            }
                            self.ways[1] = match rest.is_empty() {
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
}
