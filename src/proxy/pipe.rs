//! Moving bytes between a client and its backend, both ways, until both
//! directions have ended.
//!
//! Why not `tokio::io::copy_bidirectional`: we count bytes into the
//! backend's stats as they flow (a long-lived connection shows up in the
//! metrics before it closes), enforce an idle timeout, keep no buffer of a
//! connection's own while it is idle, and on Linux can move bulk data with
//! `splice(2)` through a kernel pipe, never copying it into user space
//! (HAProxy's trick).
//!
//! An idle connection costs its two sockets and a small task, nothing more
//! (HAProxy holds buffers only while data is in flight; so do we):
//! - a direction reads into its thread's scratch buffer and writes from it
//!   before it next waits; only bytes the other side cannot take yet are
//!   copied into a buffer of the connection's own, freed once delivered;
//! - splice pipes come from a per-thread pool when a direction has data and
//!   go back once it has none;
//! - readiness is awaited through the sockets' own waker slots
//!   (`poll_read_ready`), not a `readable()` future stored in every task;
//! - the timers of [`Limits`] live on the heap, and only when set.
//!
//! Half-close is kept exactly: EOF from one side becomes `shutdown(Write)`
//! on the other, and the other direction keeps flowing until it ends too.

use std::cell::Cell;
use std::future::{Future, poll_fn};
use std::io;
use std::pin::{Pin, pin};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::sync::futures::Notified;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::config::SpliceMode;
use crate::stats::BackendStats;

mod freeze;
pub use freeze::{Frozen, FrozenWay};

/// The per-thread scratch buffer's size: the most one read moves, and the
/// most a direction keeps of its own while the other side cannot take it.
pub const COPY_BUFFER: usize = 64 * 1024;

thread_local! {
    /// This thread's copy buffer, shared by all its connections: a direction
    /// reads into it and writes from it without waiting in between, so it
    /// holds nothing across an await. Allocated on first use.
    static SCRATCH: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// Process-wide: the data path reads it once per connection. `auto` by
/// default: on loopback it cut tcplb's CPU per bulk GB by about 20%.
static SPLICE_MODE: AtomicU8 = AtomicU8::new(DEFAULT_SPLICE as u8);
const DEFAULT_SPLICE: SpliceMode = SpliceMode::Auto;

pub fn set_splice_mode(mode: SpliceMode) {
    SPLICE_MODE.store(mode as u8, Relaxed);
}

pub fn splice_mode() -> SpliceMode {
    match SPLICE_MODE.load(Relaxed) {
        x if x == SpliceMode::On as u8 => SpliceMode::On,
        x if x == SpliceMode::Auto as u8 => SpliceMode::Auto,
        _ => SpliceMode::Off,
    }
}

/// How a pipe ended, and how many bytes went each way.
#[derive(Debug)]
pub struct PipeEnd {
    /// Client to backend.
    pub sent: u64,
    /// Backend to client.
    pub received: u64,
    pub reason: EndReason,
}

#[derive(Debug)]
pub enum EndReason {
    /// Both sides closed their sending half.
    Closed,
    /// No bytes either way for the idle timeout; both sockets were closed.
    IdleTimeout,
    /// Open for the maximum connection age; both sockets were closed.
    MaxAge,
    /// An operator's drain deadline passed (the backend's eviction token
    /// fired); both sockets were closed.
    Evicted,
    /// Someone asked this one connection to stop ([`Live::stop`], an
    /// operator's close); both sockets were closed.
    Stopped,
    /// A socket failed (reset, broken pipe) on the given side; both sockets
    /// were closed.
    Error(Side, io::Error),
}

/// One end of a piped connection: which one failed, for the access log's
/// client reset / backend reset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The client's socket.
    Client,
    /// The backend's socket.
    Backend,
}

/// What a connection shares with the rest of tcplb while it runs: its byte
/// counts and last activity as they move (the open-connections listing
/// reads them), and a request to stop it (an operator's close). The pipe
/// updates the same atomics it always counted into; nothing here takes a
/// lock on the data path.
#[derive(Debug)]
pub struct Live {
    /// When the connection was accepted: what `last_ms` counts from.
    start: Instant,
    /// Bytes from the client delivered to the backend so far.
    sent: AtomicU64,
    /// Bytes from the backend delivered to the client so far.
    received: AtomicU64,
    /// When bytes last moved either way, in ms since `start`.
    last_ms: AtomicU64,
    /// Notified once to stop the connection; its permit waits for a pipe
    /// that has not started yet.
    stop: Notify,
    /// Set with the stop request, for a UDP session, which is not a task
    /// to wake: its worker looks at it on every sweep.
    stop_asked: AtomicBool,
}

impl Default for Live {
    fn default() -> Self {
        Live::new(Instant::now())
    }
}

impl Live {
    /// Counters of a connection accepted at `start`.
    pub fn new(start: Instant) -> Self {
        Live {
            start,
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            last_ms: AtomicU64::new(0),
            stop: Notify::new(),
            stop_asked: AtomicBool::new(false),
        }
    }

    /// Counters of a connection accepted at `start` elsewhere (it moved
    /// here with a binary upgrade): `sent` and `received` bytes so far,
    /// nothing moved for `idle`.
    pub fn resumed(start: Instant, sent: u64, received: u64, idle: Duration) -> Self {
        let live = Live::new(start);
        live.sent.store(sent, Relaxed);
        live.received.store(received, Relaxed);
        let last = start.elapsed().saturating_sub(idle);
        let ms = u64::try_from(last.as_millis()).unwrap_or(u64::MAX);
        live.last_ms.store(ms, Relaxed);
        live
    }

    /// When the connection was accepted.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// Bytes client to backend, so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Relaxed)
    }

    /// Bytes backend to client, so far.
    pub fn received(&self) -> u64 {
        self.received.load(Relaxed)
    }

    /// How long nothing has moved either way (since accept, when nothing
    /// ever did).
    pub fn idle(&self) -> Duration {
        self.last().elapsed()
    }

    /// Counts `n` client bytes delivered before the pipe began (a
    /// ClientHello read for routing, sent on with the greeting).
    pub fn add_sent(&self, n: u64) {
        self.sent.fetch_add(n, Relaxed);
    }

    /// Counts bytes a UDP session moved since it last counted (its
    /// datagrams are counted in batches), the last of them at `at`.
    pub fn add_moved(&self, sent: u64, received: u64, at: Instant) {
        self.sent.fetch_add(sent, Relaxed);
        self.received.fetch_add(received, Relaxed);
        let ms = at.saturating_duration_since(self.start).as_millis();
        self.last_ms
            .store(u64::try_from(ms).unwrap_or(u64::MAX), Relaxed);
    }

    /// Asks the connection to stop: its pipe ends with
    /// [`EndReason::Stopped`] (at once, or as soon as it starts).
    pub fn stop(&self) {
        self.stop_asked.store(true, Relaxed);
        self.stop.notify_one();
    }

    /// Wakes the pipe as [`Live::stop`] does, but not as a stop: a binary
    /// upgrade asks it to offer itself (see `moving`). An operator's stop
    /// that arrives meanwhile still tells apart, and wins.
    pub fn wake_to_move(&self) {
        self.stop.notify_one();
    }

    /// Whether [`Live::stop`] was called.
    pub fn is_stop_asked(&self) -> bool {
        self.stop_asked.load(Relaxed)
    }

    /// Completes once [`Live::stop`] was called. The future itself (not an
    /// `async fn` around it) so that a connection's task holds 64 bytes
    /// for it, not 80.
    pub fn stopped(&self) -> Notified<'_> {
        self.stop.notified()
    }

    /// Counts `n` bytes delivered, client to backend (`to_backend`) or
    /// back, into `stats` and here, and marks the connection active.
    pub fn delivered(&self, stats: &BackendStats, to_backend: bool, n: usize) {
        let (stat, total) = match to_backend {
            true => (&stats.bytes_in, &self.sent),
            false => (&stats.bytes_out, &self.received),
        };
        stat.fetch_add(n as u64, Relaxed);
        total.fetch_add(n as u64, Relaxed);
        self.touch();
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Relaxed))
    }
}

/// When a pipe is ended although both sides are still there. Neither arms
/// a timer when it is off.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// No bytes either way for this long (`--idle-timeout`).
    pub idle: Option<Duration>,
    /// Open for this long, busy or not (`--max-connection-age`).
    pub max_age: Option<Duration>,
}

/// Pipes `client` and `upstream` together until both directions end, an
/// error occurs, or a [`Limits`] is reached. Bytes are counted into
/// `stats.bytes_in` (client to backend) and `stats.bytes_out` as they are
/// delivered; a limit reached counts into `stats.idle_timeouts` or
/// `stats.max_age_closes`. Both sockets are closed when this returns.
pub async fn pipe(
    client: TcpStream,
    upstream: TcpStream,
    stats: &BackendStats,
    limits: Limits,
) -> PipeEnd {
    pipe_evictable(client, upstream, stats, limits, None, &Live::default()).await
}

/// Like [`pipe`], and also ended when `evict` is cancelled (an operator's
/// drain deadline), counted into `stats.evicted`, or when `live` is asked
/// to stop. Bytes and activity are counted into `live` as they move. No
/// timer is armed for either.
pub async fn pipe_evictable(
    client: TcpStream,
    upstream: TcpStream,
    stats: &BackendStats,
    limits: Limits,
    evict: Option<&CancellationToken>,
    live: &Live,
) -> PipeEnd {
    let mut pipe = Pipe::new(client, upstream, limits, evict.cloned(), live);
    let mut stopped = pin!(live.stopped());
    poll_fn(|cx| pipe.poll_pipe(cx, stats, live, stopped.as_mut())).await
}

/// A pipe a connection's task polls until it ends: [`Pipe`], or a
/// terminated connection's `proxy::tls::pipe::TlsPipe`.
pub trait Piping {
    /// Moves what can be moved now; `Ready` with how the pipe ended once
    /// it has. Counts into `stats` and `live` as bytes are delivered.
    /// `stopped` is `live.stopped()`, kept by the caller (it borrows
    /// `live`): when it completes the pipe ends with [`EndReason::Stopped`].
    fn poll_pipe(
        &mut self,
        cx: &mut Context<'_>,
        stats: &BackendStats,
        live: &Live,
        stopped: Pin<&mut impl Future<Output = ()>>,
    ) -> Poll<PipeEnd>;
}

impl Piping for Pipe {
    fn poll_pipe(
        &mut self,
        cx: &mut Context<'_>,
        stats: &BackendStats,
        live: &Live,
        stopped: Pin<&mut impl Future<Output = ()>>,
    ) -> Poll<PipeEnd> {
        Pipe::poll_pipe(self, cx, stats, live, stopped)
    }
}

/// A connection being piped: both sockets and where each direction is.
///
/// A plain state machine rather than an `async fn`: it lives as long as
/// the connection, inside its task, and compiled `async` code stores its
/// arguments twice and every awaited future inline (1.6 KB for the same
/// job). Poll it with [`Pipe::poll_pipe`] until it returns the end; the
/// sockets close when it is dropped. Its byte counts and last activity are
/// the connection's [`Live`], passed to every poll.
pub struct Pipe {
    /// The client's socket.
    client: TcpStream,
    /// The backend's socket.
    upstream: TcpStream,
    /// Client to backend, then backend to client.
    ways: [Way; 2],
    /// `--splice`, read once when the pipe began.
    mode: SpliceMode,
    /// One direction has passed its EOF on (see [`pass_eof`]).
    ended: bool,
    /// What ends the pipe although both sides are still there.
    guards: Guards,
}

/// What ends a pipe although both sides are still there: the [`Limits`],
/// an operator's drain deadline and stop request. Every pipe (plain, and
/// terminated TLS in `proxy::tls`) checks the same ones the same way.
pub struct Guards {
    /// The idle timeout, and its timer (on the heap: most connections have
    /// none). The timer fires at the last activity + the timeout as of when
    /// it was set, and is moved on when bytes moved since.
    idle: Option<(Duration, Pin<Box<Sleep>>)>,
    /// Fires at the maximum age, when one is set.
    age: Option<Pin<Box<Sleep>>>,
    /// Completes when the operator's drain deadline passes (on the heap:
    /// the wait must stay pinned while the pipe moves).
    evicted: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
}

impl Guards {
    /// The guards of a pipe starting now under `limits`; cancelling `evict`
    /// ends it. The idle timeout and the maximum age count from here.
    pub fn new(limits: Limits, evict: Option<CancellationToken>, live: &Live) -> Guards {
        live.touch();
        let start = Instant::now();
        Guards {
            idle: limits
                .idle
                .map(|limit| (limit, Box::pin(tokio::time::sleep_until(start + limit)))),
            age: limits
                .max_age
                .map(|age| Box::pin(tokio::time::sleep_until(start + age))),
            evicted: evict.map(|token| Box::pin(token.cancelled_owned())),
        }
    }

    /// Checked before moving bytes: an operator's stop (`stopped`, which is
    /// `live.stopped()`) or drain deadline (counted into `stats.evicted`).
    pub fn poll_stop(
        &mut self,
        cx: &mut Context<'_>,
        stats: &BackendStats,
        stopped: Pin<&mut impl Future<Output = ()>>,
    ) -> Option<EndReason> {
        if stopped.poll(cx).is_ready() {
            return Some(EndReason::Stopped);
        }
        if let Some(evicted) = &mut self.evicted
            && evicted.as_mut().poll(cx).is_ready()
        {
            stats.evicted.fetch_add(1, Relaxed);
            return Some(EndReason::Evicted);
        }
        None
    }

    /// Checked after moving bytes: the idle timeout and the maximum age,
    /// counted into `stats`.
    pub fn poll_limits(
        &mut self,
        cx: &mut Context<'_>,
        stats: &BackendStats,
        live: &Live,
    ) -> Option<EndReason> {
        if let Some((limit, timer)) = &mut self.idle {
            while timer.as_mut().poll(cx).is_ready() {
                let deadline = live.last() + *limit;
                if Instant::now() >= deadline {
                    stats.idle_timeouts.fetch_add(1, Relaxed);
                    return Some(EndReason::IdleTimeout);
                }
                timer.as_mut().reset(deadline);
            }
        }
        if let Some(age) = &mut self.age
            && age.as_mut().poll(cx).is_ready()
        {
            stats.max_age_closes.fetch_add(1, Relaxed);
            return Some(EndReason::MaxAge);
        }
        None
    }
}

/// Where one direction is.
#[derive(Default)]
enum Way {
    /// Waiting for bytes to read.
    #[default]
    Reading,
    /// Reading into the scratch buffer, with a hint of bulk traffic seen.
    /// Same as `Reading`, except that the next read uses a splice pipe.
    #[cfg(target_os = "linux")]
    Bulk,
    /// Delivering `rest[at..]`: what the other side could not take at once.
    Writing {
        /// The only buffer a connection owns, and only until delivered.
        rest: Box<[u8]>,
        /// How much of it went out already.
        at: usize,
    },
    /// Moving bytes through a kernel pipe; `pending` of them are in it.
    #[cfg(target_os = "linux")]
    Splicing {
        pipe: splice::KernelPipe,
        pending: usize,
    },
    /// Copying only, for good: no splice pipe could be made.
    CopyOnly,
    /// EOF read and passed on.
    Done,
}

/// A failure and the socket it happened on.
type Failed = (Side, io::Error);

/// A direction's outcome: ended (`Ready(Ok)`), must wait, or failed.
type Step = Poll<Result<(), Failed>>;

impl Pipe {
    /// A pipe between `client` and `upstream` under `limits`; cancelling
    /// `evict` ends it. The idle timeout and the maximum age count from
    /// here, not from accept.
    pub fn new(
        client: TcpStream,
        upstream: TcpStream,
        limits: Limits,
        evict: Option<CancellationToken>,
        live: &Live,
    ) -> Self {
        let mode = splice_mode();
        // `on`: every direction splices from its first byte.
        let on = mode == SpliceMode::On;
        Pipe {
            client,
            upstream,
            ways: [Way::bulk_if(on), Way::bulk_if(on)],
            mode,
            ended: false,
            guards: Guards::new(limits, evict, live),
        }
    }

    /// Moves what can be moved now; `Ready` with how the pipe ended once
    /// it has. Counts into `stats` and `live` as bytes are delivered.
    /// `stopped` is `live.stopped()`, kept by the caller (it borrows
    /// `live`): when it completes the pipe ends with [`EndReason::Stopped`].
    pub fn poll_pipe(
        &mut self,
        cx: &mut Context<'_>,
        stats: &BackendStats,
        live: &Live,
        stopped: Pin<&mut impl Future<Output = ()>>,
    ) -> Poll<PipeEnd> {
        if let Some(reason) = self.guards.poll_stop(cx, stats, stopped) {
            return Poll::Ready(end(live, reason));
        }
        for way in 0..2 {
            if let Poll::Ready(Err((side, e))) = self.poll_way(way, cx, stats, live) {
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

    /// Moves direction `way` along until it must wait (`Pending`), has
    /// ended (`Ready(Ok)`) or failed. A failure names the side it happened
    /// on: reading (or waiting on) `from` is `from`'s, writing to `to` is
    /// `to`'s.
    fn poll_way(
        &mut self,
        way: usize,
        cx: &mut Context<'_>,
        stats: &BackendStats,
        live: &Live,
    ) -> Step {
        let ((from, from_side), (to, to_side), stat, total) = if way == 0 {
            (
                (&self.client, Side::Client),
                (&self.upstream, Side::Backend),
                &stats.bytes_in,
                &live.sent,
            )
        } else {
            (
                (&self.upstream, Side::Backend),
                (&self.client, Side::Client),
                &stats.bytes_out,
                &live.received,
            )
        };
        let on_from = |e| (from_side, e);
        let on_to = |e| (to_side, e);
        let state = &mut self.ways[way];
        let count = |n: usize| {
            stat.fetch_add(n as u64, Relaxed);
            total.fetch_add(n as u64, Relaxed);
            live.touch();
        };
        loop {
            match state {
                Way::Done => return Poll::Ready(Ok(())),
                Way::Writing { rest, at } => {
                    let n = ready!(poll_write_rest(to, cx, &rest[*at..])).map_err(on_to)?;
                    if n > 0 {
                        *at += n;
                        count(n);
                    }
                    if *at == rest.len() {
                        *state = Way::Reading;
                    }
                }
                #[cfg(target_os = "linux")]
                Way::Splicing { pipe, pending } if *pending > 0 => {
                    ready!(to.poll_write_ready(cx)).map_err(on_to)?;
                    match pipe.drain_into(to, *pending) {
                        Ok(n) => {
                            *pending -= n;
                            count(n);
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => return Poll::Ready(Err(on_to(e))),
                    }
                }
                #[cfg(target_os = "linux")]
                Way::Splicing { pipe, pending } => {
                    // The pipe is empty, so EAGAIN can only mean "no data on
                    // the socket", which is what try_io needs to clear
                    // readiness.
                    match pipe.fill_from(from) {
                        Ok(0) => {
                            Way::release(state);
                            *state = Way::Done;
                            pass_eof(to, &mut self.ended).map_err(on_to)?;
                        }
                        Ok(n) => *pending = n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            // Nothing to move: the pipe goes back to the pool.
                            Way::release(state);
                            *state = Way::Bulk;
                        }
                        Err(e) => return Poll::Ready(Err(on_from(e))),
                    }
                }
                #[cfg(target_os = "linux")]
                Way::Bulk => {
                    ready!(from.poll_read_ready(cx)).map_err(on_from)?;
                    *state = match splice::take_pipe() {
                        Some(pipe) => Way::Splicing { pipe, pending: 0 },
                        // No pipe can be made (out of descriptors): copy
                        // instead; nothing was read, the socket is untouched.
                        None => Way::CopyOnly,
                    };
                }
                Way::Reading | Way::CopyOnly => {
                    ready!(from.poll_read_ready(cx)).map_err(on_from)?;
                    let copied = copy(from, to).map_err(|e| match e {
                        CopyError::Read(e) => on_from(e),
                        CopyError::Write(e) => on_to(e),
                    })?;
                    match copied {
                        Copied::Eof => {
                            *state = Way::Done;
                            pass_eof(to, &mut self.ended).map_err(on_to)?;
                        }
                        Copied::Nothing => {}
                        Copied::Some {
                            written,
                            rest,
                            full,
                        } => {
                            if written > 0 {
                                count(written);
                            }
                            let bulk = full
                                && self.mode == SpliceMode::Auto
                                && matches!(state, Way::Reading);
                            if !rest.is_empty() {
                                *state = Way::Writing {
                                    rest: rest.into_boxed_slice(),
                                    at: 0,
                                };
                            } else if bulk {
                                *state = Way::bulk();
                            }
                        }
                    }
                }
            }
        }
    }
}

/// How the pipe ended, with the byte counts `live` has.
pub fn end(live: &Live, reason: EndReason) -> PipeEnd {
    PipeEnd {
        sent: live.sent(),
        received: live.received(),
        reason,
    }
}

impl Way {
    /// Where a direction with bulk traffic goes: to splicing on Linux.
    fn bulk() -> Way {
        #[cfg(target_os = "linux")]
        return Way::Bulk;
        #[cfg(not(target_os = "linux"))]
        return Way::Reading;
    }

    fn bulk_if(bulk: bool) -> Way {
        if bulk { Way::bulk() } else { Way::Reading }
    }

    /// Puts an empty splice pipe back in the pool.
    #[cfg(target_os = "linux")]
    fn release(state: &mut Way) {
        if let Way::Splicing { pipe, pending: 0 } = std::mem::take(state) {
            splice::put_pipe(pipe);
        }
    }
}

/// What one read through the scratch buffer did.
enum Copied {
    /// `from` reached EOF.
    Eof,
    /// Nothing to read after all: the readiness was stale.
    Nothing,
    /// Bytes were read: `written` of them delivered, `rest` still to go.
    Some {
        written: usize,
        /// What `to` could not take yet; empty (unallocated) most times.
        rest: Vec<u8>,
        /// The read filled the buffer: a sign of bulk traffic.
        full: bool,
    },
}

/// Which half of a copy failed.
enum CopyError {
    /// Reading `from`.
    Read(io::Error),
    /// Writing `to`.
    Write(io::Error),
}

/// Reads what `from` has into this thread's scratch buffer and writes as
/// much of it to `to` as `to` takes at once. Never waits.
fn copy(from: &TcpStream, to: &TcpStream) -> Result<Copied, CopyError> {
    with_scratch(|buffer| copy_through(from, to, buffer))
}

/// Runs `f` with this thread's scratch buffer, empty, of [`COPY_BUFFER`]
/// capacity; `f` must not wait while it holds it.
pub(crate) fn with_scratch<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    // Taken out and put back, so no borrow is held; a thread whose local
    // is gone (exiting) uses a buffer of its own.
    let mut buffer = SCRATCH.try_with(Cell::take).unwrap_or_default();
    if buffer.capacity() < COPY_BUFFER {
        buffer.reserve_exact(COPY_BUFFER);
    }
    let result = f(&mut buffer);
    buffer.clear();
    let _ = SCRATCH.try_with(|scratch| scratch.set(buffer));
    result
}

fn copy_through(
    from: &TcpStream,
    to: &TcpStream,
    buffer: &mut Vec<u8>,
) -> Result<Copied, CopyError> {
    let n = match read_some(from, buffer) {
        Ok(0) => return Ok(Copied::Eof),
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Copied::Nothing),
        Err(e) => return Err(CopyError::Read(e)),
    };
    let written = write_now(to, &buffer[..n]).map_err(CopyError::Write)?;
    Ok(Copied::Some {
        written,
        rest: buffer[written..n].to_vec(),
        full: n == buffer.capacity(),
    })
}

/// Reads into `buffer`'s spare capacity (it is never zeroed).
/// A short read means the receive queue was just emptied, so readiness is
/// cleared at once instead of by a second recv that only says EAGAIN;
/// tokio keeps any readiness event newer than the one this read used.
pub(crate) fn read_some(from: &TcpStream, buffer: &mut Vec<u8>) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    buffer.clear();
    let capacity = buffer.capacity();
    let mut short = None;
    let result = from.try_io(tokio::io::Interest::READABLE, || {
        loop {
            // SAFETY: recv writes at most `capacity` bytes into the buffer's
            // spare capacity, which is that large and ours.
            let n =
                unsafe { libc::recv(from.as_raw_fd(), buffer.as_mut_ptr().cast(), capacity, 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let n = n as usize;
            if n > 0 && n < capacity {
                short = Some(n);
                return Err(io::ErrorKind::WouldBlock.into());
            }
            return Ok(n);
        }
    });
    let n = match (result, short) {
        (_, Some(n)) => n,
        (result, None) => result?,
    };
    // SAFETY: recv initialised the first n bytes.
    unsafe { buffer.set_len(n) };
    Ok(n)
}

/// Writes some of `data` (not empty) to `to` once it is writable: how
/// many bytes went, possibly 0 on a stale readiness.
pub(crate) fn poll_write_rest(
    to: &TcpStream,
    cx: &mut Context<'_>,
    data: &[u8],
) -> Poll<io::Result<usize>> {
    ready!(to.poll_write_ready(cx))?;
    Poll::Ready(match to.try_write(data) {
        Ok(0) => Err(io::ErrorKind::WriteZero.into()),
        Ok(n) => Ok(n),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
        Err(e) => Err(e),
    })
}

/// Writes as much of `data` as `to` takes without waiting.
pub(crate) fn write_now(to: &TcpStream, data: &[u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < data.len() {
        match to.try_write(&data[done..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Passes EOF on: the peer reads end-of-stream, and may still send to us.
/// The direction that ends second skips the shutdown: both sockets close
/// right after, and the close sends the same FIN (`to` has nothing unread,
/// its own EOF was read). One syscall fewer per connection.
pub(crate) fn pass_eof(to: &TcpStream, ended: &mut bool) -> io::Result<()> {
    if std::mem::replace(ended, true) {
        return Ok(());
    }
    match socket2::SockRef::from(to).shutdown(std::net::Shutdown::Write) {
        // The peer already closed completely: nothing left to tell it.
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
        other => other,
    }
}

/// Zero-copy forwarding: socket → kernel pipe → socket with `splice(2)`.
#[cfg(target_os = "linux")]
mod splice {
    use std::cell::RefCell;
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

    use tokio::io::Interest;
    use tokio::net::TcpStream;

    /// How much one splice call may ask for: a whole large pipe.
    const CHUNK: usize = LARGE_PIPE as usize;

    /// Pipe capacity for bulk directions (`F_SETPIPE_SZ`; 1 MiB is the
    /// unprivileged maximum). On loopback a single bulk connection is bound
    /// by wake-ups, not CPU: each round moves at most a pipe's worth, and
    /// 1 MiB instead of the default 64 KiB measured +10-15% Gbit/s and a
    /// fifth less CPU per GB.
    const LARGE_PIPE: i32 = 1 << 20;
    /// At most this many large pipes at once. Linux charges a pipe's
    /// capacity, not its use, to the user, and past `fs.pipe-user-pages-soft`
    /// (64 MiB by default) every new pipe of that user shrinks to two pages.
    /// 16 MiB leaves that headroom to the default-sized pipes.
    pub(super) const LARGE_PIPES_MAX: usize = 16;
    static LARGE_PIPES: AtomicUsize = AtomicUsize::new(0);

    /// Empty pipes a thread keeps for its next direction with data; more
    /// are closed.
    const SPARE_PIPES_MAX: usize = 16;

    thread_local! {
        /// Empty pipes put back by directions that ran out of data, for the
        /// next direction on this thread that has some (HAProxy's pipe
        /// pool): an idle connection holds no pipe, and a bulk one does not
        /// make a new one each time it waits.
        static SPARE_PIPES: RefCell<Vec<KernelPipe>> = const { RefCell::new(Vec::new()) };
    }

    /// A spare pipe of this thread's, else a new one; `None` when none can
    /// be made (out of descriptors).
    pub(super) fn take_pipe() -> Option<KernelPipe> {
        let spare = SPARE_PIPES.try_with(|spare| spare.try_borrow_mut().ok()?.pop());
        spare.ok().flatten().or_else(KernelPipe::new)
    }

    /// How many spare pipes this thread keeps now.
    #[cfg(test)]
    pub(super) fn spare_pipes() -> usize {
        SPARE_PIPES.with(|spare| spare.borrow().len())
    }

    /// Keeps an empty `pipe` for the next direction with data.
    pub(super) fn put_pipe(pipe: KernelPipe) {
        let _ = SPARE_PIPES.try_with(|spare| {
            if let Ok(mut spare) = spare.try_borrow_mut()
                && spare.len() < SPARE_PIPES_MAX
            {
                spare.push(pipe);
            }
        });
    }

    /// A non-blocking pipe pair, closed on drop.
    pub struct KernelPipe {
        read: OwnedFd,
        write: OwnedFd,
        /// Holds one of the `LARGE_PIPES_MAX` places.
        large: bool,
    }

    impl KernelPipe {
        pub fn new() -> Option<Self> {
            let mut fds = [0; 2];
            // SAFETY: `fds` is a valid two-element array for pipe2 to fill.
            let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
            if rc != 0 {
                return None;
            }
            // SAFETY: pipe2 succeeded, so both descriptors are open and ours.
            let (read, write) =
                unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
            let large = LARGE_PIPES.fetch_add(1, Relaxed) < LARGE_PIPES_MAX
                // SAFETY: fcntl on a descriptor we own; failure (over a
                // limit) leaves the pipe at its default size.
                && unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, LARGE_PIPE) } >= 0;
            if !large {
                LARGE_PIPES.fetch_sub(1, Relaxed);
            }
            Some(KernelPipe { read, write, large })
        }

        /// The pipe's capacity in bytes.
        #[cfg(test)]
        pub fn capacity(&self) -> i32 {
            // SAFETY: fcntl query on a descriptor we own.
            unsafe { libc::fcntl(self.write.as_raw_fd(), libc::F_GETPIPE_SZ) }
        }
    }

    impl Drop for KernelPipe {
        fn drop(&mut self) {
            if self.large {
                LARGE_PIPES.fetch_sub(1, Relaxed);
            }
        }
    }

    fn splice(from: i32, to: i32, len: usize) -> io::Result<usize> {
        let flags = libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK;
        // SAFETY: plain syscall on descriptors we own or borrow for the call;
        // null offsets mean "current position", as sockets and pipes require.
        let n = unsafe {
            libc::splice(
                from,
                std::ptr::null_mut(),
                to,
                std::ptr::null_mut(),
                len,
                flags,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    impl KernelPipe {
        /// Moves what `from` has into the (empty) pipe: 0 is EOF.
        pub fn fill_from(&self, from: &TcpStream) -> io::Result<usize> {
            from.try_io(Interest::READABLE, || {
                splice(from.as_raw_fd(), self.write.as_raw_fd(), CHUNK)
            })
        }

        /// Moves up to `pending` bytes from the pipe to `to`.
        pub fn drain_into(&self, to: &TcpStream, pending: usize) -> io::Result<usize> {
            to.try_io(Interest::WRITABLE, || {
                splice(self.read.as_raw_fd(), to.as_raw_fd(), pending)
            })
        }

        /// Reads the `pending` bytes the pipe holds into `out`, emptying
        /// it (a pipe being frozen: its bytes travel as plain bytes).
        pub fn read_into(&self, pending: usize, out: &mut Vec<u8>) -> io::Result<()> {
            out.reserve_exact(pending);
            while out.len() < pending {
                let want = pending - out.len();
                let spare = out.spare_capacity_mut();
                // SAFETY: read writes at most `want` bytes into the spare
                // capacity, which is that large and ours.
                let n =
                    unsafe { libc::read(self.read.as_raw_fd(), spare.as_mut_ptr().cast(), want) };
                if n < 0 {
                    let e = io::Error::last_os_error();
                    if e.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    return Err(e);
                }
                if n == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                // SAFETY: read initialised n more bytes.
                unsafe { out.set_len(out.len() + n as usize) };
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A connected loopback pair: (the end we drive, the end the pipe gets).
    pub(super) async fn socket_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (ours, theirs) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (ours.unwrap(), theirs.unwrap().0)
    }

    /// A pipe running on its own task over fresh socket pairs: the client
    /// end, the backend end, the backend's stats, and the pipe's task.
    type Harness = (
        TcpStream,
        TcpStream,
        std::sync::Arc<BackendStats>,
        tokio::task::JoinHandle<PipeEnd>,
    );

    async fn harness(idle: Option<Duration>) -> Harness {
        harness_with(Limits {
            idle,
            max_age: None,
        })
        .await
    }

    async fn harness_with(limits: Limits) -> Harness {
        let (client, client_side) = socket_pair().await;
        let (backend, backend_side) = socket_pair().await;
        let stats = std::sync::Arc::new(BackendStats::default());
        let s = stats.clone();
        let task = tokio::spawn(async move { pipe(client_side, backend_side, &s, limits).await });
        (client, backend, stats, task)
    }

    /// Writes `bytes` into `from` and checks they come out of `to`.
    async fn forward(from: &mut TcpStream, to: &mut TcpStream, bytes: &[u8]) {
        from.write_all(bytes).await.unwrap();
        let mut got = vec![0u8; bytes.len()];
        to.read_exact(&mut got).await.unwrap();
        assert_eq!(got, bytes);
    }

    /// Writes `bytes` into `from` and half-closes it; checks `to` reads
    /// exactly those bytes, then EOF.
    async fn send_and_close(from: &mut TcpStream, to: &mut TcpStream, bytes: &[u8]) {
        from.write_all(bytes).await.unwrap();
        from.shutdown().await.unwrap();
        let mut got = Vec::new();
        to.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, bytes);
    }

    /// How the pipe on `task` ended (within 10 s).
    async fn ended(task: tokio::task::JoinHandle<PipeEnd>) -> PipeEnd {
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .unwrap()
            .unwrap()
    }

    /// Checks the pipe closed `stream`: EOF with nothing more, or an error.
    async fn assert_closed(stream: &mut TcpStream, what: &str) {
        let mut rest = Vec::new();
        let read = stream.read_to_end(&mut rest).await;
        assert!(read.is_err() || rest.is_empty(), "the {what} is closed");
    }

    /// Waits (up to 5 s) for `counted`: the pipe counts after delivering.
    async fn until_counted(counted: impl Fn() -> bool) {
        for _ in 0..500 {
            if counted() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// No limits, and an idle timeout that never fires: the pipe's paths
    /// without and with its timer.
    fn with_and_without_timer() -> [Limits; 2] {
        [
            Limits::default(),
            Limits {
                idle: Some(Duration::from_secs(3600)),
                max_age: None,
            },
        ]
    }

    /// The most bytes a [`Pipe`] may take: it sits in every open
    /// connection's task (debug and release builds measure 192).
    const PIPE_MAX: usize = 200;

    #[test]
    fn a_pipe_stays_small() {
        let size = std::mem::size_of::<Pipe>();
        assert!(size <= PIPE_MAX, "a Pipe is {size} bytes, over {PIPE_MAX}");
    }

    /// Polls `pipe` while `traffic` runs; fails if the pipe ends first.
    pub(super) async fn drive(
        pipe: &mut Pipe,
        stats: &BackendStats,
        live: &Live,
        traffic: impl Future<Output = ()>,
    ) {
        let mut stopped = pin!(live.stopped());
        let piped = poll_fn(|cx| pipe.poll_pipe(cx, stats, live, stopped.as_mut()));
        let bounded = tokio::time::timeout(Duration::from_secs(20), traffic);
        tokio::select! {
            end = piped => panic!("the pipe ended: {end:?}"),
            done = bounded => done.expect("traffic timed out"),
        }
    }

    fn spare_pipes() -> usize {
        #[cfg(target_os = "linux")]
        return splice::spare_pipes();
        #[cfg(not(target_os = "linux"))]
        return 0;
    }

    #[tokio::test]
    async fn an_idle_connection_keeps_no_buffer_and_no_splice_pipe() {
        for mode in [SpliceMode::Off, SpliceMode::Auto, SpliceMode::On] {
            let _guard = ModeGuard::set(mode);
            let (mut client, client_side) = socket_pair().await;
            let (mut backend, backend_side) = socket_pair().await;
            let stats = BackendStats::default();
            let live = Live::default();
            let mut pipe = Pipe::new(client_side, backend_side, Limits::default(), None, &live);
            // Small and bulk traffic both ways, then silence.
            let request = pattern(3 * COPY_BUFFER + 5, 1);
            let response = pattern(2 * COPY_BUFFER + 9, 2);
            let exchange = async {
                for (upward, bytes) in [
                    (true, &b"hello"[..]),
                    (false, &b"hi"[..]),
                    (true, &request[..]),
                    (false, &response[..]),
                ] {
                    let (from, to) = if upward {
                        (&mut client, &mut backend)
                    } else {
                        (&mut backend, &mut client)
                    };
                    let mut got = vec![0; bytes.len()];
                    let (written, read) =
                        tokio::join!(from.write_all(bytes), to.read_exact(&mut got));
                    written.unwrap();
                    read.unwrap();
                    assert!(got == bytes, "{mode:?}: bytes changed on the way");
                }
            };
            drive(&mut pipe, &stats, &live, exchange).await;
            assert!(
                pipe.ways
                    .iter()
                    .all(|way| !matches!(way, Way::Writing { .. } | Way::Done)),
                "{mode:?}: a direction holds a buffer"
            );
            #[cfg(target_os = "linux")]
            assert!(
                !pipe
                    .ways
                    .iter()
                    .any(|way| matches!(way, Way::Splicing { .. })),
                "{mode:?}: a direction holds a splice pipe"
            );
            if mode != SpliceMode::Off && cfg!(target_os = "linux") {
                assert!(
                    spare_pipes() > 0,
                    "{mode:?}: the pipe went back to the pool"
                );
            }
            let sent = 5 + request.len() as u64;
            let received = 2 + response.len() as u64;
            assert_eq!((live.sent(), live.received()), (sent, received));
        }
    }

    #[tokio::test]
    async fn a_slow_reader_costs_one_bounded_buffer_until_it_reads() {
        let _guard = ModeGuard::set(SpliceMode::Off);
        let (mut client, client_side) = socket_pair().await;
        let (mut backend, backend_side) = socket_pair().await;
        let stats = BackendStats::default();
        let live = Live::default();
        let mut pipe = Pipe::new(client_side, backend_side, Limits::default(), None, &live);
        let response = pattern(16 << 20, 3);
        let sent = response.clone();
        let writer = tokio::spawn(async move {
            backend.write_all(&sent).await.unwrap();
            backend.shutdown().await.unwrap();
            backend
        });
        // The client reads nothing until the socket buffers are full and
        // the pipe holds bytes of its own.
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut stopped = pin!(live.stopped());
        let held = loop {
            let polled = poll_fn(|cx| {
                let polled = pipe.poll_pipe(cx, &stats, &live, stopped.as_mut());
                Poll::Ready(polled.is_ready())
            })
            .await;
            assert!(!polled, "the pipe ended");
            if let Way::Writing { rest, at } = &pipe.ways[1] {
                break rest.len() - at;
            }
            assert!(Instant::now() < deadline, "the pipe never held bytes back");
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        assert!((1..=COPY_BUFFER).contains(&held), "{held} bytes held");
        let mut got = Vec::new();
        drive(&mut pipe, &stats, &live, async {
            client.read_to_end(&mut got).await.unwrap();
        })
        .await;
        assert!(got == response, "bytes changed on the way");
        assert!(matches!(pipe.ways[1], Way::Done), "the buffer is gone");
        assert_eq!(stats.bytes_out.load(Relaxed), response.len() as u64);
        drop(writer.await.unwrap());
    }

    #[tokio::test]
    async fn eviction_closes_both_sides_and_is_counted() {
        for limits in with_and_without_timer() {
            let (mut client, client_side) = socket_pair().await;
            let (mut backend, backend_side) = socket_pair().await;
            let stats = std::sync::Arc::new(BackendStats::default());
            let evict = CancellationToken::new();
            let (s, e) = (stats.clone(), evict.clone());
            let task = tokio::spawn(async move {
                pipe_evictable(
                    client_side,
                    backend_side,
                    &s,
                    limits,
                    Some(&e),
                    &Live::default(),
                )
                .await
            });
            forward(&mut client, &mut backend, b"ping").await;
            evict.cancel();
            let end = ended(task).await;
            assert!(matches!(end.reason, EndReason::Evicted), "{:?}", end.reason);
            assert_eq!((end.sent, stats.evicted.load(Relaxed)), (4, 1));
            assert_closed(&mut client, "client").await;
        }
    }

    /// A pipe over fresh socket pairs with `live`, as `serve` runs it.
    async fn live_harness(
        live: std::sync::Arc<Live>,
        limits: Limits,
    ) -> (TcpStream, TcpStream, tokio::task::JoinHandle<PipeEnd>) {
        let (client, client_side) = socket_pair().await;
        let (backend, backend_side) = socket_pair().await;
        let task = tokio::spawn(async move {
            let stats = BackendStats::default();
            pipe_evictable(client_side, backend_side, &stats, limits, None, &live).await
        });
        (client, backend, task)
    }

    #[tokio::test]
    async fn a_stop_request_ends_the_pipe_whenever_it_comes() {
        for limits in with_and_without_timer() {
            // While piping: bytes so far are counted, both sides closed.
            let live = std::sync::Arc::new(Live::default());
            let (mut client, mut backend, task) = live_harness(live.clone(), limits).await;
            forward(&mut client, &mut backend, b"ping").await;
            assert_eq!((live.sent(), live.received()), (4, 0));
            live.stop();
            let end = ended(task).await;
            assert!(matches!(end.reason, EndReason::Stopped), "{:?}", end.reason);
            assert_eq!(end.sent, 4);
            assert_closed(&mut backend, "backend").await;

            // Asked before the pipe started: it ends at once.
            let live = std::sync::Arc::new(Live::default());
            live.stop();
            let (_client, _backend, task) = live_harness(live, limits).await;
            let end = ended(task).await;
            assert!(matches!(end.reason, EndReason::Stopped), "{:?}", end.reason);
        }
    }

    /// Closes `stream` with SO_LINGER 0: the peer gets a reset.
    fn reset(stream: TcpStream) {
        let std = stream.into_std().unwrap();
        socket2::SockRef::from(&std)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(std);
    }

    #[tokio::test]
    async fn a_reset_is_reported_on_the_side_it_came_from() {
        for (reset_client, side) in [(true, Side::Client), (false, Side::Backend)] {
            let live = std::sync::Arc::new(Live::default());
            let (mut client, mut backend, task) =
                live_harness(live.clone(), Limits::default()).await;
            forward(&mut client, &mut backend, b"x").await;
            if reset_client {
                reset(client);
            } else {
                reset(backend);
            }
            let end = ended(task).await;
            match end.reason {
                EndReason::Error(s, _) => assert_eq!(s, side),
                other => panic!("{other:?}, expected an error on the {side:?} side"),
            }
        }
    }

    #[tokio::test]
    async fn live_counts_bytes_and_idle_time_as_they_move() {
        let live = std::sync::Arc::new(Live::default());
        let (mut client, mut backend, task) = live_harness(live.clone(), Limits::default()).await;
        forward(&mut client, &mut backend, b"hello").await;
        forward(&mut backend, &mut client, b"hi").await;
        until_counted(|| live.received() == 2).await;
        assert_eq!((live.sent(), live.received()), (5, 2));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            live.idle() >= Duration::from_millis(300),
            "{:?}",
            live.idle()
        );
        drop((client, backend));
        let _ = task.await.unwrap();
    }

    pub(super) fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8 ^ seed).collect()
    }

    async fn half_close_both_ways(mode: SpliceMode) {
        let _guard = ModeGuard::set(mode);
        let (mut client, mut backend, stats, task) = harness(None).await;
        let request = pattern(3 * COPY_BUFFER + 17, 1);
        let response = pattern(2 * COPY_BUFFER + 5, 2);

        // Client sends everything and half-closes; the backend must see
        // exactly the bytes, then EOF, while it can still answer.
        send_and_close(&mut client, &mut backend, &request).await;
        assert_eq!(stats.bytes_in.load(Relaxed), request.len() as u64);

        // The other direction still flows after the first one ended.
        send_and_close(&mut backend, &mut client, &response).await;

        let end = task.await.unwrap();
        assert!(matches!(end.reason, EndReason::Closed), "{:?}", end.reason);
        assert_eq!(end.sent, request.len() as u64);
        assert_eq!(end.received, response.len() as u64);
        assert_eq!(stats.bytes_in.load(Relaxed), request.len() as u64);
        assert_eq!(stats.bytes_out.load(Relaxed), response.len() as u64);
    }

    /// Tests set the process-wide mode; this lock keeps them from mixing.
    static MODE_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

    pub(super) struct ModeGuard(#[allow(dead_code)] std::sync::MutexGuard<'static, ()>);

    impl ModeGuard {
        pub(super) fn set(mode: SpliceMode) -> Self {
            let guard = MODE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            set_splice_mode(mode);
            ModeGuard(guard)
        }
    }

    impl Drop for ModeGuard {
        fn drop(&mut self) {
            set_splice_mode(DEFAULT_SPLICE);
        }
    }

    #[tokio::test]
    async fn half_close_client_first_with_copy() {
        half_close_both_ways(SpliceMode::Off).await;
    }

    #[tokio::test]
    async fn half_close_client_first_with_splice() {
        half_close_both_ways(SpliceMode::On).await;
    }

    #[tokio::test]
    async fn half_close_client_first_with_auto() {
        half_close_both_ways(SpliceMode::Auto).await;
    }

    #[tokio::test]
    async fn backend_closing_first_leaves_the_client_direction_open() {
        let (mut client, mut backend, stats, task) = harness(None).await;
        send_and_close(&mut backend, &mut client, b"banner").await;

        send_and_close(&mut client, &mut backend, b"late request").await;

        let end = task.await.unwrap();
        assert!(matches!(end.reason, EndReason::Closed), "{:?}", end.reason);
        assert_eq!((end.sent, end.received), (12, 6));
        assert_eq!(stats.bytes_in.load(Relaxed), 12);
        assert_eq!(stats.bytes_out.load(Relaxed), 6);
    }

    #[tokio::test]
    async fn bytes_are_counted_while_the_connection_is_open() {
        let (mut client, mut backend, stats, task) = harness(None).await;
        forward(&mut client, &mut backend, b"0123456789").await;
        until_counted(|| stats.bytes_in.load(Relaxed) == 10).await;
        assert_eq!(stats.bytes_in.load(Relaxed), 10);
        assert!(!task.is_finished());
        drop((client, backend));
        let end = task.await.unwrap();
        assert_eq!(end.sent, 10);
    }

    #[tokio::test]
    async fn idle_timeout_closes_both_sides_and_is_counted() {
        let (mut client, mut backend, stats, task) =
            harness(Some(Duration::from_millis(300))).await;
        forward(&mut client, &mut backend, b"ping").await;
        // Now nothing moves: both ends must see the connection close.
        let mut rest = Vec::new();
        let bounded = Duration::from_secs(20);
        tokio::time::timeout(bounded, client.read_to_end(&mut rest))
            .await
            .expect("client side was not closed")
            .unwrap();
        tokio::time::timeout(bounded, backend.read_to_end(&mut rest))
            .await
            .expect("backend side was not closed")
            .unwrap();
        assert!(rest.is_empty());
        let end = task.await.unwrap();
        assert!(
            matches!(end.reason, EndReason::IdleTimeout),
            "{:?}",
            end.reason
        );
        assert_eq!(stats.idle_timeouts.load(Relaxed), 1);
        assert_eq!(end.sent, 4);
    }

    #[tokio::test]
    async fn a_busy_connection_outlives_its_idle_timeout() {
        let (mut client, mut backend, stats, task) = harness(Some(Duration::from_secs(2))).await;
        // A byte every 50 ms for longer than the timeout keeps it open.
        for i in 0..60u8 {
            forward(&mut client, &mut backend, &[i]).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(stats.idle_timeouts.load(Relaxed), 0);
        client.shutdown().await.unwrap();
        backend.shutdown().await.unwrap();
        let end = task.await.unwrap();
        assert!(matches!(end.reason, EndReason::Closed), "{:?}", end.reason);
        assert_eq!(end.sent, 60);
    }

    #[tokio::test]
    async fn a_busy_connection_is_closed_at_its_maximum_age() {
        let (mut client, mut backend, stats, task) = harness_with(Limits {
            idle: Some(Duration::from_secs(60)),
            max_age: Some(Duration::from_millis(400)),
        })
        .await;
        // Busy the whole time (a byte every 20 ms): age, not idleness, ends it.
        let started = Instant::now();
        let mut i = 0u8;
        let closed = loop {
            if client.write_all(&[i]).await.is_err() {
                break true;
            }
            let mut got = [0u8; 1];
            match tokio::time::timeout(Duration::from_secs(20), backend.read(&mut got)).await {
                Ok(Ok(1)) => assert_eq!(got, [i]),
                Ok(_) => break true,
                Err(_) => break false,
            }
            i = i.wrapping_add(1);
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(closed, "the backend side was never closed");
        assert!(started.elapsed() >= Duration::from_millis(400));
        let end = task.await.unwrap();
        assert!(matches!(end.reason, EndReason::MaxAge), "{:?}", end.reason);
        assert_eq!(stats.max_age_closes.load(Relaxed), 1);
        assert_eq!(stats.idle_timeouts.load(Relaxed), 0);
        let mut rest = Vec::new();
        let _ = client.read_to_end(&mut rest).await;
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn large_pipes_are_capped_and_their_places_come_back() {
        use super::splice::{KernelPipe, LARGE_PIPES_MAX};
        let large = 1 << 20;
        // Other tests may hold large pipes meanwhile, never more than the cap.
        let pipes: Vec<KernelPipe> = (0..=LARGE_PIPES_MAX)
            .map(|_| KernelPipe::new().unwrap())
            .collect();
        let enlarged = pipes.iter().filter(|p| p.capacity() == large).count();
        assert!((1..=LARGE_PIPES_MAX).contains(&enlarged), "{enlarged}");
        assert_ne!(pipes[LARGE_PIPES_MAX].capacity(), large);
        drop(pipes);
        assert_eq!(KernelPipe::new().unwrap().capacity(), large);
    }
}
