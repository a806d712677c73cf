//! Stopping a pipe at a safe point, and starting it again: in this process
//! (a move that did not happen) or in another one (the connection moved
//! there with a binary upgrade, see [`crate::proxy::moving`]).
//!
//! A pipe is only ever between two polls when it is frozen, so nothing is
//! half-done: every byte it read is either delivered or held in a
//! direction's own buffer ([`Way::Writing`]) or in a splice pipe
//! ([`Way::Splicing`]). Freezing takes both kinds out as plain bytes (a
//! splice pipe is read back into memory and returned to its pool), so what
//! the connection holds is two sockets plus, per direction, the bytes
//! still to deliver and whether its EOF was passed on. Everything else is
//! in the sockets themselves (unread bytes, options, a half-close done).

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Guards, Live, Pipe, Side, Way, splice_mode};
use crate::config::SpliceMode;

/// A pipe's directions while it is stopped.
#[derive(Debug, Default)]
pub struct Frozen {
    /// Client to backend, then backend to client.
    pub ways: [FrozenWay; 2],
    /// The idle timeout the pipe ran with (`--idle-timeout`).
    pub idle: Option<Duration>,
    /// How long until the pipe's maximum age, when it has one.
    pub age_left: Option<Duration>,
}

/// One direction of a stopped pipe.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FrozenWay {
    /// Read from one side and not yet delivered to the other, in order:
    /// delivered first when the pipe starts again.
    pub pending: Vec<u8>,
    /// EOF was read and passed on: the direction is over.
    pub done: bool,
    /// It carried bulk traffic: it splices from the start again.
    pub bulk: bool,
}

impl Frozen {
    /// The bytes held for delivery, both ways together.
    pub fn held(&self) -> usize {
        self.ways.iter().map(|w| w.pending.len()).sum()
    }
}

impl Pipe {
    /// Stops the pipe where it is: each direction's undelivered bytes
    /// (a splice pipe's included) are taken out of it. The sockets stay in
    /// the pipe, untouched, until it is [resumed](Pipe::resume) or
    /// dropped. Only between polls (it is a `&mut` of a pipe not being
    /// polled), so nothing is half-written.
    ///
    /// `Err`: a splice pipe could not be read back (which a pipe holding
    /// bytes never does): the pipe is spoiled and the connection must end
    /// with the error, named after the side that would have received the
    /// bytes.
    pub fn freeze(&mut self) -> Result<Frozen, (Side, io::Error)> {
        let mut frozen = Frozen {
            ways: Default::default(),
            idle: self.guards.idle.as_ref().map(|(limit, _)| *limit),
            age_left: self
                .guards
                .age
                .as_ref()
                .map(|age| age.deadline().saturating_duration_since(Instant::now())),
        };
        for (i, way) in self.ways.iter_mut().enumerate() {
            let to = if i == 0 { Side::Backend } else { Side::Client };
            frozen.ways[i] = freeze_way(way).map_err(|e| (to, e))?;
        }
        Ok(frozen)
    }

    /// Starts a [frozen](Pipe::freeze) pipe again in this process: its
    /// held bytes go back where they were (as a buffer of its own; a
    /// splice pipe is taken again on the next read). Timers and the
    /// eviction wait were never stopped.
    pub fn resume(&mut self, frozen: Frozen) {
        let mode = self.mode;
        for (way, frozen) in self.ways.iter_mut().zip(frozen.ways) {
            *way = thaw_way(frozen, mode);
        }
    }

    /// A pipe over `client` and `upstream` that goes on where `frozen`
    /// stopped, in this process: the connection moved here. The idle
    /// timer counts from `live`'s last activity, the maximum age from
    /// where it was; cancelling `evict` ends it.
    pub fn adopt(
        client: TcpStream,
        upstream: TcpStream,
        frozen: Frozen,
        evict: Option<CancellationToken>,
        live: &Live,
    ) -> Pipe {
        let mode = splice_mode();
        let now = Instant::now();
        let [a, b] = frozen.ways;
        let ways = [thaw_way(a, mode), thaw_way(b, mode)];
        Pipe {
            client,
            upstream,
            // The old process may still hold copies of the sockets (until
            // it has read the acknowledgement), so a close here might not
            // send the FIN: the second EOF is passed on explicitly too.
            ended: false,
            ways,
            mode,
            guards: Guards {
                idle: frozen.idle.map(|limit| {
                    let deadline = live.last() + limit;
                    (limit, Box::pin(tokio::time::sleep_until(deadline)))
                }),
                age: frozen
                    .age_left
                    .map(|left| Box::pin(tokio::time::sleep_until(now + left))),
                evicted: evict.map(|token| Box::pin(token.cancelled_owned())),
            },
        }
    }

    /// The client's and the backend's socket descriptors, for handing
    /// them over: valid as long as the pipe is.
    pub fn fds(&self) -> [RawFd; 2] {
        [self.client.as_raw_fd(), self.upstream.as_raw_fd()]
    }
}

/// Takes `way`'s undelivered bytes out, leaving it reading.
fn freeze_way(way: &mut Way) -> io::Result<FrozenWay> {
    let frozen = match std::mem::take(way) {
        Way::Done => FrozenWay {
            done: true,
            ..FrozenWay::default()
        },
        Way::Writing { rest, at } => FrozenWay {
            pending: rest[at..].to_vec(),
            ..FrozenWay::default()
        },
        #[cfg(target_os = "linux")]
        Way::Splicing { pipe, pending } => {
            let mut bytes = Vec::new();
            pipe.read_into(pending, &mut bytes)?;
            super::splice::put_pipe(pipe);
            FrozenWay {
                pending: bytes,
                bulk: true,
                ..FrozenWay::default()
            }
        }
        #[cfg(target_os = "linux")]
        Way::Bulk => FrozenWay {
            bulk: true,
            ..FrozenWay::default()
        },
        Way::Reading | Way::CopyOnly => FrozenWay::default(),
    };
    Ok(frozen)
}

/// Where a direction goes on from `frozen` under `mode`.
fn thaw_way(frozen: FrozenWay, mode: SpliceMode) -> Way {
    if frozen.done {
        return Way::Done;
    }
    if !frozen.pending.is_empty() {
        return Way::Writing {
            rest: frozen.pending.into_boxed_slice(),
            at: 0,
        };
    }
    let bulk = match mode {
        SpliceMode::On => true,
        SpliceMode::Auto => frozen.bulk,
        SpliceMode::Off => false,
    };
    Way::bulk_if(bulk)
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::pin::pin;
    use std::task::Poll;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::super::tests::{ModeGuard, pattern, socket_pair};
    use super::super::{EndReason, Limits, PipeEnd};
    use super::*;
    use crate::stats::BackendStats;

    /// What the pipe holds of its own: bytes in a buffer or a splice pipe.
    fn holds(pipe: &Pipe) -> bool {
        pipe.ways.iter().any(|way| match way {
            Way::Writing { .. } => true,
            #[cfg(target_os = "linux")]
            Way::Splicing { pending, .. } => *pending > 0,
            _ => false,
        })
    }

    /// Polls `pipe` to its end (within 30 s).
    async fn run(pipe: &mut Pipe, stats: &BackendStats, live: &Live) -> PipeEnd {
        let mut stopped = pin!(live.stopped());
        let piped = poll_fn(|cx| pipe.poll_pipe(cx, stats, live, stopped.as_mut()));
        tokio::time::timeout(Duration::from_secs(30), piped)
            .await
            .expect("the pipe did not end")
    }

    /// A duplicate of `fd` as a socket of its own, as another process
    /// receives it.
    fn duplicate(fd: RawFd) -> TcpStream {
        // SAFETY: dup of a socket the pipe holds open; the copy is ours.
        let copy = unsafe { OwnedFd::from_raw_fd(libc::dup(fd)) };
        TcpStream::from_std(std::net::TcpStream::from(copy)).unwrap()
    }

    /// Both ways under way, the backend's answer held in tcplb (the client
    /// reads nothing yet), then frozen and started again, in place or over
    /// duplicated sockets with the originals closed (a move): every byte
    /// arrives once, in order, and the pipe ends as it would have.
    async fn held_bytes_survive_a_freeze(mode: SpliceMode, elsewhere: bool) {
        let _guard = ModeGuard::set(mode);
        let (client, client_side) = socket_pair().await;
        let (backend, backend_side) = socket_pair().await;
        let stats = BackendStats::default();
        let live = Live::default();
        let hour = Some(Duration::from_secs(3600));
        let limits = Limits {
            idle: hour,
            max_age: hour,
        };
        let mut pipe = Pipe::new(client_side, backend_side, limits, None, &live);
        let request = pattern(3 << 20, 5);
        let response = pattern(8 << 20, 3);
        let (mut client_read, mut client_write) = client.into_split();
        let (mut backend_read, mut backend_write) = backend.into_split();
        let sent = request.clone();
        let client_writer = tokio::spawn(async move {
            client_write.write_all(&sent).await.unwrap();
            client_write.shutdown().await.unwrap();
        });
        let answer = response.clone();
        let backend_task = tokio::spawn(async move {
            let writing = async {
                backend_write.write_all(&answer).await.unwrap();
                backend_write.shutdown().await.unwrap();
            };
            let mut got = Vec::new();
            let reading = backend_read.read_to_end(&mut got);
            let ((), read) = tokio::join!(writing, reading);
            read.unwrap();
            got
        });
        // Until the client's socket is full and the pipe holds bytes.
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut stopped = pin!(live.stopped());
        while !holds(&pipe) {
            let ended = poll_fn(|cx| {
                Poll::Ready(
                    pipe.poll_pipe(cx, &stats, &live, stopped.as_mut())
                        .is_ready(),
                )
            })
            .await;
            assert!(!ended, "{mode:?}: the pipe ended");
            assert!(Instant::now() < deadline, "{mode:?}: the pipe held nothing");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let frozen = pipe.freeze().unwrap();
        assert!(frozen.held() > 0, "{mode:?}: nothing held");
        assert!(!holds(&pipe), "{mode:?}: the pipe still holds bytes");
        assert_eq!(frozen.idle, hour);
        assert!(
            frozen
                .age_left
                .is_some_and(|left| left <= Duration::from_secs(3600))
        );
        let live_after;
        let (mut pipe, live) = if elsewhere {
            let [client_fd, backend_fd] = pipe.fds();
            let (client, upstream) = (duplicate(client_fd), duplicate(backend_fd));
            drop(pipe);
            live_after = Live::resumed(live.start(), live.sent(), live.received(), live.idle());
            let pipe = Pipe::adopt(client, upstream, frozen, None, &live_after);
            (pipe, &live_after)
        } else {
            pipe.resume(frozen);
            (pipe, &live)
        };
        let mut got = Vec::new();
        let stats = &stats;
        // The pipe drops when it ends, as in `serve`: the close is what
        // passes the second EOF on.
        let piping = async move {
            let end = run(&mut pipe, stats, live).await;
            drop(pipe);
            end
        };
        let (end, read) = tokio::join!(piping, client_read.read_to_end(&mut got));
        read.unwrap();
        assert!(matches!(end.reason, EndReason::Closed), "{:?}", end.reason);
        assert!(got == response, "{mode:?}: the answer changed on the way");
        let arrived = backend_task.await.unwrap();
        assert!(
            arrived == request,
            "{mode:?}: the request changed on the way"
        );
        client_writer.await.unwrap();
        let lengths = (request.len() as u64, response.len() as u64);
        assert_eq!((end.sent, end.received), lengths, "{mode:?}");
    }

    #[tokio::test]
    async fn held_bytes_go_on_in_place_after_a_freeze() {
        for mode in [SpliceMode::Off, SpliceMode::Auto, SpliceMode::On] {
            held_bytes_survive_a_freeze(mode, false).await;
        }
    }

    #[tokio::test]
    async fn held_bytes_go_on_over_the_moved_sockets() {
        for mode in [SpliceMode::Off, SpliceMode::Auto, SpliceMode::On] {
            held_bytes_survive_a_freeze(mode, true).await;
        }
    }

    #[tokio::test]
    async fn a_half_closed_direction_stays_closed_after_a_move() {
        let (mut client, client_side) = socket_pair().await;
        let (mut backend, backend_side) = socket_pair().await;
        let stats = BackendStats::default();
        let live = Live::default();
        let mut pipe = Pipe::new(client_side, backend_side, Limits::default(), None, &live);
        client.write_all(b"request").await.unwrap();
        client.shutdown().await.unwrap();
        // The backend reads the request and its EOF through the pipe.
        let mut got = Vec::new();
        let mut stopped = pin!(live.stopped());
        let reading = backend.read_to_end(&mut got);
        let piping = poll_fn(|cx| pipe.poll_pipe(cx, &stats, &live, stopped.as_mut()));
        tokio::select! {
            end = piping => panic!("the pipe ended: {end:?}"),
            read = reading => { read.unwrap(); }
        }
        assert_eq!(got, b"request");
        let frozen = pipe.freeze().unwrap();
        assert!(frozen.ways[0].done && !frozen.ways[1].done);
        let [client_fd, backend_fd] = pipe.fds();
        let (client_copy, backend_copy) = (duplicate(client_fd), duplicate(backend_fd));
        drop(pipe);
        let mut pipe = Pipe::adopt(client_copy, backend_copy, frozen, None, &live);
        backend.write_all(b"answer").await.unwrap();
        backend.shutdown().await.unwrap();
        let mut answer = Vec::new();
        let (end, read) = tokio::join!(
            run(&mut pipe, &stats, &live),
            client.read_to_end(&mut answer)
        );
        read.unwrap();
        assert_eq!(answer, b"answer");
        assert!(matches!(end.reason, EndReason::Closed), "{:?}", end.reason);
        assert_eq!((end.sent, end.received), (7, 6));
    }
}
