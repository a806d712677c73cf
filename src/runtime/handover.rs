//! Moving established connections to the new process of a binary upgrade
//! (issue 26): the runtime's half, over the channel [`upgrade`] opened
//! (its SCM_RIGHTS transport, reused). The data path's half (stopping a
//! pipe, offering it, adopting one) is [`crate::proxy::moving`].
//!
//! After READY the old process asks the piping connections, one batch's
//! worth at a time, to stop at a safe point and offer itself, and sends
//! each batch's offers: `CONNS n` with a memfd (the bookkeeping as JSON,
//! then the held bytes) and each connection's two sockets, under the
//! kernel's descriptor limit.
//! The new process matches each to its listener, pool and backend, and
//! answers `ACK` with a verdict per connection (moved, or refused and
//! why) before it touches any socket; the old process then closes its
//! copies of the moved ones and resumes the refused ones. If the answer
//! does not come (the new process died, or says nothing for
//! [`ACK_TIMEOUT`]: then it is killed first, so that it cannot serve a
//! socket the old one goes on with), every connection not acknowledged
//! stays in the old process, and no other is offered: nothing is lost or
//! served twice.
//!
//! Why a batch is asked only when its turn comes, and batches wait for
//! their answer one at a time: a connection is paused from its offer to
//! its answer, and the next batch's connections go on piping until they
//! are asked; one batch in flight keeps every pause one round trip long
//! whatever the number of connections, and the channel's order is the
//! only bookkeeping. (Asking every connection at once, as the first
//! version did, paused the 10,000th for all 81 round trips before it.)

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use log::{error, info, warn};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::task::TaskTracker;

use super::Shared;
use super::upgrade::{memfd, recv_with_fds, send_with_fds};
use crate::config::Protocol;
use crate::pool::Pool;
use crate::pool::backend::Backend;
use crate::proxy::Service;
use crate::proxy::client_hello::ClientHello;
use crate::proxy::connections::{Connections, Filter};
use crate::proxy::moving::{Adopted, Details, Moved, Mover, Offer, Outcome};
use crate::proxy::pipe::{Frozen, FrozenWay};
use crate::stats::{NotMoved, Refusal};

/// Connections per batch: two descriptors each, plus the memfd, under
/// the 253 the kernel takes in one message.
const PER_BATCH: usize = 124;
/// How long the old process waits for a batch's answer before it kills
/// the new process and keeps the batch.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(10);
/// The first round of offers is over once none came for this long (the
/// upgrade's log line is written then).
const QUIET: Duration = Duration::from_millis(200);
/// Test hook: the new process exits (status 70) on receiving this
/// batch (1-based), before answering it: a new process dying mid-move.
const DIE_ENV: &str = "TCPLB_TEST_DIE_AT_MOVE_BATCH";

/// One connection as it travels (its held bytes follow the JSON in the
/// batch's memfd, in order).
#[derive(Serialize, Deserialize)]
struct Entry {
    id: u64,
    /// The listener it came in on, where it is bound.
    listen: SocketAddr,
    /// The client (a PROXY header's address, if one came).
    client: SocketAddr,
    /// The pool it is served from (a listener's or a route's), by name.
    pool: String,
    /// Its backend, by name and address.
    backend: String,
    backend_addr: SocketAddr,
    started: SystemTime,
    /// Since accept (monotonic).
    age: Duration,
    /// Since bytes last moved.
    idle: Duration,
    sent: u64,
    received: u64,
    retries: u32,
    queue: Option<Duration>,
    connect: Option<Duration>,
    /// What its ClientHello asked for (TLS passthrough routes).
    hello: Option<ClientHello>,
    /// Per direction: held bytes, EOF passed on, bulk.
    ways: [(usize, bool, bool); 2],
    idle_limit: Option<Duration>,
    age_left: Option<Duration>,
    stopped_at: Duration,
}

/// The old process's end of the move: the channel and the new process.
pub(super) struct Successor {
    pub(super) channel: OwnedFd,
    pub(super) child: Child,
}

/// What the old process moves its connections with.
pub(super) struct Moving {
    /// The connections it has (TCP ones and UDP sessions).
    pub(super) registry: Arc<Connections>,
    /// Its connections' tasks, registered or not yet.
    pub(super) tracked: TaskTracker,
    /// Where they offer themselves.
    pub(super) mover: Arc<Mover>,
}

/// What the first round of the move came to, for its log line.
#[derive(Default)]
struct Round {
    /// Offers of connections it asked that were answered (moved or
    /// refused): the round is over when every one asked has.
    answered: u64,
    moved: u64,
    /// How many the new process refused, by reason.
    refusals: std::collections::BTreeMap<&'static str, u64>,
    failed: u64,
    tls: u64,
}

impl Round {
    fn refused(&self) -> u64 {
        self.refusals.values().sum()
    }
}

/// The old process's side: asks the piping connections to offer
/// themselves, a batch at a time, sends each batch and answers it with
/// what came of it, until the process exits or the new one fails.
pub(super) async fn move_out(successor: Successor, moving: Moving) {
    let Moving {
        registry,
        mover,
        tracked: _,
    } = &moving;
    let Some(mut inbox) = mover.start() else {
        return;
    };
    let began = Instant::now();
    let mut round = Round::default();
    // Asked only when their batch's turn comes: a connection pauses for
    // one round trip, however many there are.
    let mut waiting = VecDeque::new();
    for connection in registry.matching(&Filter::default()) {
        if connection.moving.stays() {
            round.tls += 1;
            mover.stats.count_not_moved(NotMoved::Tls);
        } else {
            waiting.push_back(connection);
        }
    }
    let mut asked = 0;
    let mut successor = Some(successor);
    let mut logged = false;
    loop {
        let mut wave = 0;
        while wave < PER_BATCH {
            let Some(connection) = waiting.pop_front() else {
                break;
            };
            // False when it is still in setup (it offers itself once it
            // pipes) or ended meanwhile.
            if mover.ask(&connection) {
                wave += 1;
            }
        }
        asked += wave as u64;
        // Every connection asked has answered (one that ended meanwhile
        // never does: then the quiet time below ends the round). Written
        // now, not after the quiet time: with nothing left to move the
        // process may exit sooner.
        if !logged && wave == 0 && round.answered >= asked {
            log_round(&round, &moving, began.elapsed());
            logged = true;
        }
        let batch = if wave > 0 {
            collect(&mut inbox, wave).await
        } else {
            // Late offers of the connections asked, or connections that
            // were in setup, as they start piping.
            let first = if logged {
                inbox.recv().await
            } else {
                match tokio::time::timeout(QUIET, inbox.recv()).await {
                    Ok(first) => first,
                    Err(_) => {
                        log_round(&round, &moving, began.elapsed() - QUIET);
                        logged = true;
                        continue;
                    }
                }
            };
            let Some(first) = first else { return };
            let mut batch = vec![first];
            fill(&mut inbox, &mut batch);
            batch
        };
        if batch.is_empty() {
            continue;
        }
        let Some(mut theirs) = successor.take() else {
            return;
        };
        let sent = tokio::task::spawn_blocking(move || {
            let answer = exchange(&theirs.channel, &batch);
            if answer.is_err() {
                // It must not serve a socket this process goes on with.
                let _ = theirs.child.kill();
                let _ = theirs.child.wait();
            }
            (answer, batch, theirs)
        })
        .await;
        let Ok((answer, batch, theirs)) = sent else {
            // The task panicked; its batch dropped, answering "stays".
            mover.stop();
            return;
        };
        match answer {
            Ok(verdicts) => {
                for (offer, verdict) in batch.into_iter().zip(verdicts) {
                    round.answered += u64::from(offer.asked);
                    match verdict {
                        None => {
                            round.moved += 1;
                            offer.answer(Outcome::Moved);
                        }
                        Some(why) => {
                            let why = Refusal::from_name(&why).unwrap_or(Refusal::Malformed);
                            *round.refusals.entry(why.name()).or_default() += 1;
                            mover.stats.count_refused(why);
                            offer.answer(Outcome::Stays(NotMoved::Refused));
                        }
                    }
                }
                successor = Some(theirs);
            }
            Err(e) => {
                // Every connection asked and not answered (in this batch,
                // waiting to be sent, or on its way), the ones that offered
                // themselves unasked and were not answered either, and the
                // ones not asked yet (those still open): every one stays.
                let not_asked = waiting
                    .iter()
                    .filter(|c| registry.get(c.id).is_some())
                    .count() as u64;
                let unasked = batch.iter().filter(|o| !o.asked).count() as u64;
                warn!(
                    "upgrade: the new process did not take {} connections ({e}); they and \
                     every connection not moved yet stay in this process",
                    batch.len()
                );
                drop(batch);
                let unasked = unasked + give_up(mover, inbox);
                round.failed = asked.saturating_sub(round.answered) + unasked + not_asked;
                if !logged {
                    log_round(&round, &moving, began.elapsed());
                }
                return;
            }
        }
    }
}

/// How long a batch waits for the offers of the connections just asked
/// (a busy worker may take a while to wake them): one that comes later
/// goes with the next batch.
const WAVE_WAIT: Duration = Duration::from_millis(100);

/// The offers of a batch whose `wave` connections were just asked: until
/// that many came (or a batch is full), for at most [`WAVE_WAIT`].
async fn collect(inbox: &mut UnboundedReceiver<Offer>, wave: usize) -> Vec<Offer> {
    let mut batch = Vec::with_capacity(wave);
    let deadline = tokio::time::Instant::now() + WAVE_WAIT;
    while batch.len() < wave {
        match tokio::time::timeout_at(deadline, inbox.recv()).await {
            Ok(Some(offer)) => batch.push(offer),
            Ok(None) | Err(_) => break,
        }
    }
    fill(inbox, &mut batch);
    batch
}

/// Adds the offers already waiting to `batch`, up to a full one.
fn fill(inbox: &mut UnboundedReceiver<Offer>, batch: &mut Vec<Offer>) {
    while batch.len() < PER_BATCH {
        match inbox.try_recv() {
            Ok(offer) => batch.push(offer),
            Err(_) => break,
        }
    }
}

/// The new process failed: no connection offers itself any more, and the
/// ones that did stay (dropped offers answer so).
/// Returns how many of them offered themselves unasked.
fn give_up(mover: &Mover, mut inbox: UnboundedReceiver<Offer>) -> u64 {
    mover.stop();
    inbox.close();
    let mut unasked = 0;
    while let Ok(offer) = inbox.try_recv() {
        unasked += u64::from(!offer.asked);
        drop(offer);
    }
    unasked
}

fn log_round(round: &Round, moving: &Moving, took: Duration) {
    let Moving {
        registry,
        tracked,
        mover,
    } = moving;
    // In setup: TCP connections registered and not piping yet, and the
    // connection tasks not registered yet (waiting for a PROXY header).
    // UDP sessions are in the registry, never tasks: not counted.
    let tcp: Vec<_> = registry
        .matching(&Filter::default())
        .into_iter()
        .filter(|c| c.service.pool.load().config.protocol == Protocol::Tcp)
        .collect();
    let unregistered = tracked.len().saturating_sub(tcp.len());
    let setup = (tcp.iter().filter(|c| c.moving.in_setup()).count() + unregistered) as u64;
    for _ in 0..setup {
        mover.stats.count_not_moved(NotMoved::Setup);
    }
    let refused = round.refused();
    let drain = refused + round.failed + round.tls + setup;
    // Why the new process refused them, e.g. ": unknown_backend 124" (a
    // config that differs from this process's).
    let why: Vec<String> = round
        .refusals
        .iter()
        .map(|(name, n)| format!("{name} {n}"))
        .collect();
    let why = match why.is_empty() {
        true => String::new(),
        false => format!(": {}", why.join(", ")),
    };
    info!(
        "upgrade: moved {} connections to the new process in {took:?}; {drain} drain here \
         ({} tls, {setup} in setup, {refused} refused{why}, {} failed)",
        round.moved, round.tls, round.failed
    );
}

/// Sends one batch and reads its answer: per connection, `None` moved or
/// the refusal's name.
fn exchange(channel: &OwnedFd, batch: &[Offer]) -> io::Result<Vec<Option<String>>> {
    let mut file = memfd()?;
    let entries: Vec<Entry> = batch.iter().map(entry).collect();
    let header = serde_json::to_vec(&entries).map_err(io::Error::other)?;
    file.write_all(&(header.len() as u64).to_le_bytes())?;
    file.write_all(&header)?;
    for offer in batch {
        for way in &offer.frozen.ways {
            file.write_all(&way.pending)?;
        }
    }
    let mut fds: Vec<RawFd> = vec![file.as_raw_fd()];
    for offer in batch {
        fds.extend(offer.fds);
    }
    send_with_fds(channel, format!("CONNS {}", batch.len()).as_bytes(), &fds)?;
    let mut buf = vec![0u8; 64 * 1024];
    let (n, _) = recv_with_fds(channel, &mut buf, ACK_TIMEOUT)?;
    if n == 0 {
        return Err(io::Error::other("it exited"));
    }
    let verdicts: Vec<Option<String>> = buf[..n]
        .strip_prefix(b"ACK ")
        .and_then(|json| serde_json::from_slice(json).ok())
        .ok_or_else(|| io::Error::other("it answered something else"))?;
    if verdicts.len() != batch.len() {
        return Err(io::Error::other("it answered for another number"));
    }
    Ok(verdicts)
}

fn entry(offer: &Offer) -> Entry {
    let c = &offer.connection;
    let live = &c.live;
    let (pool, backend, backend_addr) = match (c.pool(), c.backend()) {
        (Some(pool), Some(backend)) => (
            pool.name().to_string(),
            backend.name().to_string(),
            backend.addr(),
        ),
        // Cannot happen for a piping connection; refused as unknown.
        _ => (String::new(), String::new(), c.client),
    };
    let way = |w: &FrozenWay| (w.pending.len(), w.done, w.bulk);
    Entry {
        id: c.id,
        listen: c.service.listen,
        client: c.client,
        pool,
        backend,
        backend_addr,
        started: c.started,
        age: live.start().elapsed(),
        idle: live.idle(),
        sent: live.sent(),
        received: live.received(),
        retries: offer.details.retries,
        queue: offer.details.queue,
        connect: offer.details.connect,
        hello: offer.details.hello.as_deref().cloned(),
        ways: [way(&offer.frozen.ways[0]), way(&offer.frozen.ways[1])],
        idle_limit: offer.frozen.idle,
        age_left: offer.frozen.age_left,
        stopped_at: offer.stopped_at,
    }
}

/// The new process's side (blocking; on a thread of its own): takes each
/// batch the old process sends, answers it, then serves what it took on
/// the workers. Returns when the old process closes the channel.
pub(super) fn move_in(channel: OwnedFd, shared: Arc<Shared>) {
    let die_at: Option<usize> = std::env::var(DIE_ENV).ok().and_then(|v| v.parse().ok());
    let mut batches = 0;
    let mut turn = 0usize;
    loop {
        let mut buf = [0u8; 64];
        let (n, fds) = match recv_with_fds(&channel, &mut buf, Duration::MAX) {
            Ok(received) => received,
            Err(e) => {
                warn!("upgrade: the channel to the old process failed: {e}");
                return;
            }
        };
        if n == 0 {
            return;
        }
        batches += 1;
        if die_at == Some(batches) {
            error!("{DIE_ENV}: exiting in the middle of a move, as the test asked");
            std::process::exit(70);
        }
        let count = std::str::from_utf8(&buf[..n])
            .ok()
            .and_then(|m| m.strip_prefix("CONNS "))
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(0);
        let taken = take_batch(&shared, count, fds);
        let verdicts: Vec<Option<&str>> = taken
            .iter()
            .map(|t| t.as_ref().err().map(|r| r.name()))
            .collect();
        for refusal in taken.iter().filter_map(|t| t.as_ref().err()) {
            shared.mover.stats.count_refused(*refusal);
        }
        let answer = serde_json::to_vec(&verdicts).unwrap_or_default();
        let mut message = b"ACK ".to_vec();
        message.extend(answer);
        if let Err(e) = send_with_fds(&channel, &message, &[]) {
            // The old process keeps what it did not hear about.
            warn!("upgrade: cannot acknowledge moved connections: {e}");
            return;
        }
        for adopted in taken.into_iter().flatten() {
            turn = turn.wrapping_add(1);
            let worker = turn % shared.workers.len();
            let open = shared.spread.stats().opened(worker);
            shared
                .mover
                .stats
                .moved_in
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let task = shared.connections.track_future(async move {
                match adopted.register() {
                    Ok(registered) => registered.serve(open).await,
                    Err(e) => warn!("upgrade: cannot serve a moved connection: {e}"),
                }
            });
            shared.workers.spawn(worker, task);
        }
    }
}

/// Matches each connection of a batch of `count` to this process's
/// listener, pool and backend, with its sockets (`fds`: the memfd, then
/// two per connection).
fn take_batch(shared: &Shared, count: usize, fds: Vec<OwnedFd>) -> Vec<Result<Adopted, Refusal>> {
    let malformed = || (0..count).map(|_| Err(Refusal::Malformed)).collect();
    if shared.shutdown.is_cancelled() {
        return (0..count).map(|_| Err(Refusal::ShuttingDown)).collect();
    }
    let mut fds = fds.into_iter();
    let Some(memfd) = fds.next() else {
        return malformed();
    };
    let Ok((entries, bytes)) = read_batch(memfd) else {
        return malformed();
    };
    if entries.len() != count || fds.len() != 2 * count {
        return malformed();
    }
    let state = shared.state();
    let mut taken = Vec::with_capacity(count);
    let mut at = 0usize;
    for entry in entries {
        let (Some(client), Some(upstream)) = (fds.next(), fds.next()) else {
            taken.push(Err(Refusal::Malformed));
            continue;
        };
        let mut ways: [FrozenWay; 2] = Default::default();
        for (way, (len, done, bulk)) in ways.iter_mut().zip(entry.ways) {
            let end = at.saturating_add(len).min(bytes.len());
            way.pending = bytes[at..end].to_vec();
            at = end;
            way.done = done;
            way.bulk = bulk;
        }
        let found = state
            .services
            .iter()
            .find(|s| s.service.listen == entry.listen)
            .ok_or(Refusal::UnknownListener)
            .and_then(|s| place(&s.service, &entry));
        taken.push(found.map(|(service, pool, backend)| Adopted {
            moved: Moved {
                id: entry.id,
                client: entry.client,
                started: entry.started,
                age: entry.age,
                sent: entry.sent,
                received: entry.received,
                idle: entry.idle,
                service,
                pool,
                backend,
                details: Details {
                    retries: entry.retries,
                    queue: entry.queue,
                    connect: entry.connect,
                    hello: entry.hello.map(Box::new),
                },
                frozen: Frozen {
                    ways,
                    idle: entry.idle_limit,
                    age_left: entry.age_left,
                },
                stopped_at: entry.stopped_at,
            },
            sockets: [client.into(), upstream.into()],
        }));
    }
    taken
}

/// The listener's pool or route pool named as `entry` says, and its
/// backend of that name and address.
type Place = (Arc<Service>, Arc<Pool>, Arc<Backend>);

fn place(service: &Arc<Service>, entry: &Entry) -> Result<Place, Refusal> {
    let pool = if service.pool.name() == entry.pool {
        service.pool.clone()
    } else {
        let routes = service.routes.load();
        routes
            .routes
            .iter()
            .find(|r| r.pool.name() == entry.pool)
            .map(|r| r.pool.clone())
            .ok_or(Refusal::UnknownRoute)?
    };
    let backend = pool
        .load()
        .backends
        .iter()
        .find(|b| b.name() == entry.backend && b.addr() == entry.backend_addr)
        .cloned()
        .ok_or(Refusal::UnknownBackend)?;
    Ok((service.clone(), pool, backend))
}

/// A batch's memfd: the entries, and every held byte after them.
fn read_batch(memfd: OwnedFd) -> io::Result<(Vec<Entry>, Vec<u8>)> {
    let mut file = File::from(memfd);
    file.rewind()?;
    let mut all = Vec::new();
    file.read_to_end(&mut all)?;
    let short = || io::Error::other("a short batch");
    let (len, rest) = all.split_first_chunk::<8>().ok_or_else(short)?;
    let len = usize::try_from(u64::from_le_bytes(*len)).map_err(io::Error::other)?;
    if rest.len() < len {
        return Err(short());
    }
    let entries = serde_json::from_slice(&rest[..len]).map_err(io::Error::other)?;
    Ok((entries, rest[len..].to_vec()))
}
