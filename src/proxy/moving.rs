//! Moving established connections to the new process of a binary upgrade
//! (issue 26): the data path's half. The runtime's half (the channel, the
//! batches, the acknowledgements) is `runtime::handover`.
//!
//! A passthrough connection is two sockets, the bytes tcplb holds between
//! them, and some bookkeeping; sockets can be passed to another process.
//! So once the new process serves, the old one asks each piping
//! connection to stop at its next safe point (between polls: nothing is
//! half-written, a splice pipe is read back into memory, see
//! [`Pipe::freeze`]), and the connection's task offers itself ([`Offer`]:
//! its sockets, held bytes and bookkeeping) to the runtime, then waits.
//! The runtime answers once the new process has acknowledged it or not:
//! - moved: the new process pipes it from where it stopped (see
//!   [`Adopted`]); this task closes its own copies of the sockets (the
//!   sockets stay open, the new process holds them), counts the
//!   connection gone without a record (the new process writes the one
//!   record, for the whole connection) and ends;
//! - stays: the pipe goes on here exactly where it stopped
//!   ([`Pipe::resume`]) and is never asked again; the old process drains
//!   it as it always did.
//!
//! The runtime asks through [`Mover::ask`]: a flag in the connection and
//! its stop request (`Live::stop`, so asking costs the task no byte), and
//! connections that reach their pipe once the move has begun (they were
//! still connecting) offer themselves. Only the plain pipe moves: a
//! connection in setup moves once it pipes; one whose TLS state lives in
//! this process never does ([`NotMoved::Tls`], counted through
//! [`Mover::stays_here`]).

use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use log::debug;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};
use tokio::time::Instant;

use crate::pool::Pool;
use crate::pool::backend::{ActiveConnection, Backend};
use crate::proxy::Service;
use crate::proxy::access_log::{ConnectionLog, Record};
use crate::proxy::client_hello::ClientHello;
use crate::proxy::connections::Connection;
use crate::proxy::pipe::{EndReason, Frozen, Live, Pipe, PipeEnd, Side};
use crate::stats::{MoveStats, NotMoved, WorkerConnection};

/// The whole balancer's side of a move: whether it is moving its
/// connections, where frozen connections offer themselves, and the
/// counters. One per balancer, shared by every listener's [`Service`].
pub struct Mover {
    /// Set while this process hands its connections to its successor:
    /// a connection that starts piping offers itself at once.
    on: AtomicBool,
    /// Where connections offer themselves.
    offers: mpsc::UnboundedSender<Offer>,
    /// The runtime's end of `offers`, until it takes it.
    inbox: Mutex<Option<mpsc::UnboundedReceiver<Offer>>>,
    /// Moved, not moved by why, taken over, refused, the pauses.
    pub stats: Arc<MoveStats>,
}

impl Default for Mover {
    fn default() -> Self {
        Mover::counting_into(Arc::default())
    }
}

impl Mover {
    /// A mover counting into `stats` (which `/metrics` reads).
    pub fn counting_into(stats: Arc<MoveStats>) -> Self {
        let (offers, inbox) = mpsc::unbounded_channel();
        Mover {
            on: AtomicBool::new(false),
            offers,
            inbox: Mutex::new(Some(inbox)),
            stats,
        }
    }
}

impl Mover {
    /// Starts moving: from now on a connection that starts piping offers
    /// itself; ask the ones piping already with [`Mover::ask`]. Returns
    /// the offers as they come (only the first call gets them).
    pub fn start(&self) -> Option<mpsc::UnboundedReceiver<Offer>> {
        let inbox = self
            .inbox
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()?;
        self.on.store(true, SeqCst);
        Some(inbox)
    }

    /// Stops moving (the new process is gone): connections that start
    /// piping from now on stay, and no one is asked any more.
    pub fn stop(&self) {
        self.on.store(false, SeqCst);
    }

    /// Whether this process is moving its connections.
    pub fn is_moving(&self) -> bool {
        self.on.load(SeqCst)
    }

    /// Asks `connection` to stop at its next safe point and offer itself.
    /// False when it is not piping (still in setup, or it stays here):
    /// then there is nothing to wait for from it now.
    pub fn ask(&self, connection: &Connection) -> bool {
        if connection.moving.ask() {
            connection.live.wake_to_move();
            true
        } else {
            false
        }
    }

    /// Counts a connection that cannot move, for `why` (its TLS state is
    /// in this process): it drains here.
    pub fn stays_here(&self, why: NotMoved) {
        if self.is_moving() {
            self.stats.count_not_moved(why);
        }
    }
}

/// Where one connection is in a move. Changed by compare-and-swap only:
/// the connection's task and the runtime asking never both act on one
/// request.
#[derive(Debug)]
pub struct MoveState(AtomicU8);

impl Default for MoveState {
    fn default() -> Self {
        MoveState(AtomicU8::new(SETUP))
    }
}

/// Not piping yet.
const SETUP: u8 = 0;
/// Piping, and it could move.
const PIPING: u8 = 1;
/// Asked to offer itself; its stop request is on its way.
const ASKED: u8 = 2;
/// Offering itself (stopped), waiting for the answer.
const OFFERED: u8 = 3;
/// It stays in this process for good: never asked again.
const STAYS: u8 = 4;

impl MoveState {
    /// The plain pipe starts, or starts again after an offer. Returns
    /// whether to offer itself at once: the process is moving and no one
    /// asked it yet (it was in setup when the asking went round).
    fn start_piping(&self, mover: &Mover) -> bool {
        if self.0.load(SeqCst) == STAYS {
            return false;
        }
        self.0.store(PIPING, SeqCst);
        mover.is_moving() && self.swap(PIPING, OFFERED)
    }

    /// A request to offer itself: true if it was piping (the caller sends
    /// the stop request that wakes it).
    fn ask(&self) -> bool {
        self.swap(PIPING, ASKED)
    }

    /// The pipe was stopped: true if it was asked to offer itself (else
    /// the stop is an operator's close).
    fn take_request(&self) -> bool {
        self.swap(ASKED, OFFERED)
    }

    /// It stays here.
    fn stay(&self) {
        self.0.store(STAYS, SeqCst);
    }

    /// It can never move (its TLS state lives in this process): never
    /// asked, counted as not moved when a move goes round.
    pub fn never_moves(&self) {
        self.stay();
    }

    /// Whether it has not started piping yet.
    pub fn in_setup(&self) -> bool {
        self.0.load(SeqCst) == SETUP
    }

    /// Whether it stays in this process for good.
    pub fn stays(&self) -> bool {
        self.0.load(SeqCst) == STAYS
    }

    fn swap(&self, from: u8, to: u8) -> bool {
        self.0.compare_exchange(from, to, SeqCst, SeqCst).is_ok()
    }
}

/// What an access log record knew of a connection before it piped, which
/// travels with it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Details {
    /// Connect attempts after the first.
    pub retries: u32,
    /// Time spent waiting for a slot.
    pub queue: Option<Duration>,
    /// Time spent connecting.
    pub connect: Option<Duration>,
    /// What its ClientHello asked for (TLS routes).
    pub hello: Option<Box<ClientHello>>,
}

impl Details {
    /// What `record` knows.
    pub fn of(record: &Record) -> Self {
        Details {
            retries: record.retries,
            queue: record.queue,
            connect: record.connect,
            hello: record.hello.clone(),
        }
    }

    /// Puts what is known into `record`.
    fn fill(self, record: &mut Record) {
        record.retries = self.retries;
        record.queue = self.queue;
        record.connect = self.connect;
        record.hello = self.hello;
    }
}

/// A stopped connection offering itself to the new process: everything
/// that travels, and the way back to its task.
pub struct Offer {
    /// Its registry entry: id, client, listener, pool, backend, counters.
    pub connection: Arc<Connection>,
    /// What its access log record knows so far.
    pub details: Details,
    /// The client's and the backend's sockets (the task keeps them open
    /// until it has the answer).
    pub fds: [RawFd; 2],
    /// Its directions' held bytes and its timers.
    pub frozen: Frozen,
    /// When it stopped, on the system's monotonic clock (which the new
    /// process reads too): the pause it sees runs from here.
    pub stopped_at: Duration,
    /// Whether the runtime asked it (else it offered itself as it started
    /// piping): the runtime's count of answers it waits for.
    pub asked: bool,
    /// Where the answer goes (taken when answered).
    answer: Option<oneshot::Sender<(Outcome, Frozen)>>,
}

/// What came of an offer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The new process acknowledged it: it serves the connection now.
    Moved,
    /// It stays here, for this reason.
    Stays(NotMoved),
}

impl Offer {
    /// Tells the connection's task what came of its offer (the held bytes
    /// go back with it, for a connection that stays).
    pub fn answer(mut self, outcome: Outcome) {
        if let Some(answer) = self.answer.take() {
            let _ = answer.send((outcome, std::mem::take(&mut self.frozen)));
        }
    }
}

impl Drop for Offer {
    /// An offer dropped unanswered (the runtime gave up on the move)
    /// stays: its connection goes on here with its bytes.
    fn drop(&mut self) {
        if let Some(answer) = self.answer.take() {
            let frozen = std::mem::take(&mut self.frozen);
            let _ = answer.send((Outcome::Stays(NotMoved::Failed), frozen));
        }
    }
}

/// Pipes `$pipe` (a `&mut Pipe`) until the connection `$connection` (an
/// `&Arc<Connection>`) ends (`Some`, how) or has moved to the new process
/// of an upgrade (`None`): then its sockets close here only when the pipe
/// drops. Stopping to offer itself and going on after an offer that did
/// not move it happen inside; `$record` is what its access log knows so
/// far (it travels along), `$stats` its backend's counters.
///
/// A macro rather than an `async fn`: expanded into the connection's own
/// future it costs the task only the stop request's wait, which the pipe
/// always had (an `async fn` would store its four arguments twice: 72
/// bytes more in every connection's task).
macro_rules! pipe_or_move {
    ($pipe:expr, $stats:expr, $connection:expr, $record:expr) => {{
        let pipe: &mut $crate::proxy::pipe::Pipe = $pipe;
        let connection: &std::sync::Arc<$crate::proxy::connections::Connection> = $connection;
        let live = &connection.live;
        loop {
            let unasked = $crate::proxy::moving::offers_at_once(connection);
            if !unasked {
                let mut stopped = std::pin::pin!(live.stopped());
                let end =
                    std::future::poll_fn(|cx| pipe.poll_pipe(cx, $stats, live, stopped.as_mut()))
                        .await;
                if !$crate::proxy::moving::was_asked(&end, connection) {
                    break Some(end);
                }
            }
            let offered = $crate::proxy::moving::offer(pipe, connection, $record, !unasked);
            match Box::pin(offered).await {
                Ok($crate::proxy::moving::Outcome::Moved) => break None,
                Ok($crate::proxy::moving::Outcome::Stays(_)) => {}
                Err(end) => break Some(end),
            }
        }
    }};
}
pub(crate) use pipe_or_move;

/// Whether `connection`, starting (or going on) to pipe, offers itself at
/// once: the process is moving its connections and no one asked it yet
/// (it was still in setup when the asking went round).
pub fn offers_at_once(connection: &Connection) -> bool {
    connection.moving.start_piping(&connection.service.mover)
}

/// Whether the pipe that ended with `end` was stopped to offer itself
/// (else the stop is an operator's close or a drain's end, which wins
/// over a move asked at the same moment: both wake the pipe through one
/// notification, but only they mark it stopped; or it ended by itself).
pub fn was_asked(end: &PipeEnd, connection: &Connection) -> bool {
    matches!(end.reason, EndReason::Stopped)
        && !connection.live.is_stop_asked()
        && connection.moving.take_request()
}

/// Stops `pipe`, offers the connection (`asked`: the runtime asked it)
/// and waits for the answer; a connection that stays has its pipe resumed.
/// `Err`: the pipe could not be stopped whole, and the connection ends so.
pub async fn offer(
    pipe: &mut Pipe,
    connection: &Arc<Connection>,
    record: &Record,
    asked: bool,
) -> Result<Outcome, PipeEnd> {
    let mover = &connection.service.mover;
    let live = &connection.live;
    let failed = |side: Side, e: io::Error| PipeEnd {
        sent: live.sent(),
        received: live.received(),
        reason: EndReason::Error(side, e),
    };
    let frozen = pipe.freeze().map_err(|(side, e)| failed(side, e))?;
    let (answer, answered) = oneshot::channel();
    let offer = Offer {
        connection: connection.clone(),
        details: Details::of(record),
        fds: pipe.fds(),
        frozen,
        stopped_at: monotonic_now(),
        asked,
        answer: Some(answer),
    };
    // Refused (nobody takes offers any more), the offer drops and answers
    // that it stays.
    let _ = mover.offers.send(offer);
    let Ok((outcome, frozen)) = answered.await else {
        // An offer always answers (even dropped); this is only in case.
        let lost = io::Error::other("the move lost the connection");
        return Err(failed(Side::Client, lost));
    };
    match outcome {
        Outcome::Moved => {
            mover.stats.moved_out.fetch_add(1, Relaxed);
            debug!("{}: moved to the new process", connection.client);
        }
        Outcome::Stays(why) => {
            connection.moving.stay();
            pipe.resume(frozen);
            mover.stats.count_not_moved(why);
            debug!(
                "{}: stays in this process ({})",
                connection.client,
                why.name()
            );
        }
    }
    Ok(outcome)
}

/// The end of a connection that moved away: its sockets close here (the
/// new process holds them, so they stay open), the backend no longer
/// counts it here (the new process does, and records its duration), and
/// no record is written here (the new process writes it).
pub fn moved_away(
    pipe: Pipe,
    active: ActiveConnection<&'_ Backend>,
    log: ConnectionLog,
    pool: &Pool,
    backend: &Backend,
) {
    drop(pipe);
    active.moved();
    log.moved();
    pool.connection_closed(backend);
}

/// The system's monotonic clock (`CLOCK_MONOTONIC`, the same in every
/// process): a pause measured across two processes.
pub fn monotonic_now() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime fills the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// A connection the old process handed over, matched to this process's
/// listener, pool and backend: everything needed to pipe it on but its
/// sockets.
pub struct Moved {
    /// Its id (the processes share the sequence).
    pub id: u64,
    /// The client's address (the one a PROXY header carried, if any).
    pub client: SocketAddr,
    /// When it was accepted, wall clock.
    pub started: SystemTime,
    /// How long ago it was accepted.
    pub age: Duration,
    /// Bytes client to backend so far.
    pub sent: u64,
    /// Bytes backend to client so far.
    pub received: u64,
    /// How long nothing has moved.
    pub idle: Duration,
    /// The listener it came in on, here.
    pub service: Arc<Service>,
    /// The pool it is served from, here.
    pub pool: Arc<Pool>,
    /// The backend it is connected to: this pool's member of that name
    /// and address, or one of its own when the pool no longer has it
    /// (like a backend a reload removed, its connections go on).
    pub backend: Arc<Backend>,
    /// What its access log record knew.
    pub details: Details,
    /// Its directions' held bytes and timers.
    pub frozen: Frozen,
    /// When the old process stopped it (see [`monotonic_now`]).
    pub stopped_at: Duration,
}

/// A moved connection with its sockets, as received.
pub struct Adopted {
    /// Its bookkeeping.
    pub moved: Moved,
    /// The client's socket, then the backend's.
    pub sockets: [std::net::TcpStream; 2],
}

/// An adopted connection registered with the worker that will serve it,
/// not piping yet: it must not touch its sockets before the old process
/// has its acknowledgement.
pub struct Registered {
    moved: Moved,
    client: TcpStream,
    upstream: TcpStream,
}

impl Adopted {
    /// Registers the sockets with this worker's reactor. Must be called
    /// on the worker that will serve it. `Err`: it cannot be served here
    /// (dropping it closes only this process's copies of its sockets).
    pub fn register(self) -> io::Result<Registered> {
        let [client, upstream] = self.sockets;
        Ok(Registered {
            client: TcpStream::from_std(client)?,
            upstream: TcpStream::from_std(upstream)?,
            moved: self.moved,
        })
    }
}

impl Registered {
    /// Serves the connection from where the old process stopped it until
    /// it ends (or moves on, at the next upgrade), counted as open on
    /// `worker`. The one access log record comes from here, with the
    /// whole connection's bytes and duration.
    pub async fn serve(self, worker: WorkerConnection) {
        let _worker = worker;
        let Registered {
            moved,
            client: client_socket,
            upstream,
        } = self;
        let Moved {
            id,
            client,
            started,
            age,
            sent,
            received,
            idle,
            service,
            pool,
            backend,
            details,
            frozen,
            stopped_at,
        } = moved;
        let _counted = service.stats.adopt_connection();
        let now = Instant::now();
        let start = now.checked_sub(age).unwrap_or(now);
        let live = Live::resumed(start, sent, received, idle);
        let connection = Connection::moved(id, client, service.clone(), started, live);
        connection.set_pool(&pool);
        connection.set_backend(&backend);
        let mut log = ConnectionLog::adopted(Arc::new(connection), |record| details.fill(record));
        let connection = log.connection().clone();
        let state = pool.load();
        let _client_slot = service.clients.adopt(client.ip(), &state.config.access);
        let _slot: Option<OwnedSemaphorePermit> = state.adopt_slot();
        drop(state);
        let backend = &*backend;
        let active = backend.adopt_connection(age);
        let evict = Some(backend.eviction());
        let mut pipe = Pipe::adopt(client_socket, upstream, frozen, evict, &connection.live);
        let paused = monotonic_now().saturating_sub(stopped_at);
        service.mover.stats.pause.record(paused);
        debug!("{client}: taken over from the old process (paused {paused:?})");
        let piped = pipe_or_move!(&mut pipe, &backend.stats, &connection, &log.record);
        let Some(end) = piped else {
            moved_away(pipe, active, log, &pool, backend);
            return;
        };
        crate::proxy::serve::finish(end, pipe, active, &mut log, &service, &pool, backend);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ServiceConfig, parse_backend};

    fn piping() -> Connection {
        let backends = vec![parse_backend("127.0.0.1:1").unwrap()];
        let config = ServiceConfig::new("127.0.0.1:0".parse().unwrap(), backends);
        let service = Arc::new(Service::new(Arc::new(Pool::new("web", config))));
        let connection = Connection::new(1, "127.0.0.1:5000".parse().unwrap(), service);
        assert!(!offers_at_once(&connection), "no move under way");
        connection
    }

    fn stopped() -> PipeEnd {
        PipeEnd {
            sent: 0,
            received: 0,
            reason: EndReason::Stopped,
        }
    }

    #[test]
    fn a_stop_asked_by_a_move_offers_the_connection() {
        let connection = piping();
        assert!(Mover::default().ask(&connection));
        assert!(was_asked(&stopped(), &connection));
    }

    #[test]
    fn an_operators_close_at_the_moment_of_a_move_closes_it() {
        // Asked to move, then closed before its pipe woke: one wake-up for
        // both, and the close wins.
        let connection = piping();
        assert!(Mover::default().ask(&connection));
        connection.live.stop();
        assert!(!was_asked(&stopped(), &connection));
        // Closed, then asked to move: the same.
        let connection = piping();
        connection.live.stop();
        assert!(Mover::default().ask(&connection));
        assert!(!was_asked(&stopped(), &connection));
    }
}
