//! Which worker serves a connection just accepted.
//!
//! SO_REUSEPORT hashes each new connection to one worker's listening socket
//! by its addresses, blind to how busy the workers are: the four streams of
//! `iperf3 -P 4` all landed on one worker, the other idle, one run in three
//! (measured on this 2-core machine; see docs/benchmarks.md). So each accept
//! compares its own worker's open connections with one other worker's
//! (the next in turn: the power of two choices, one choice being itself)
//! and hands the connection over when it is ahead by more than
//! [`margin`]. HAProxy's listeners do the same with their per-thread accept
//! queues. A connection is registered with the reactor of the worker that
//! serves it, so a hand-over costs one cross-thread wake-up and no system
//! call on the socket.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use tokio::runtime::Handle;

use crate::stats::WorkerStats;

/// The workers a listener's accept loops hand connections to.
pub struct Spread {
    /// Each worker's runtime, indexed like `stats`.
    workers: Vec<Handle>,
    /// Open connections per worker, and the hand-overs.
    stats: Arc<WorkerStats>,
}

impl Spread {
    /// `workers` and `stats` are indexed alike.
    pub fn new(workers: Vec<Handle>, stats: Arc<WorkerStats>) -> Self {
        Spread { workers, stats }
    }

    /// Only the current runtime: every connection stays where it is
    /// accepted.
    #[cfg(test)]
    pub fn here() -> Self {
        let workers = Handle::try_current().into_iter().collect();
        Spread::new(workers, Arc::new(WorkerStats::new(1)))
    }

    pub fn stats(&self) -> &Arc<WorkerStats> {
        &self.stats
    }

    /// The worker to serve a connection that worker `own` accepted, its
    /// `turn`-th: `own` itself unless the other worker it is compared with
    /// this time has at least [`margin`] fewer connections open.
    pub fn pick(&self, own: usize, turn: usize) -> usize {
        let n = self.workers.len().min(self.stats.workers());
        if n < 2 || own >= n {
            return own;
        }
        let other = (own + 1 + turn % (n - 1)) % n;
        let (mine, theirs) = (self.stats.open(own), self.stats.open(other));
        if mine > theirs + margin(theirs) {
            other
        } else {
            own
        }
    }

    /// Runs `connection` on `worker`'s runtime (not the caller's: see
    /// [`Self::pick`]), counting the hand-over; on the caller's when there
    /// is no such worker.
    pub fn hand_over<F>(&self, worker: usize, connection: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        match self.workers.get(worker) {
            Some(handle) => {
                self.stats.handoffs.fetch_add(1, Relaxed);
                handle.spawn(connection);
            }
            None => {
                tokio::spawn(connection);
            }
        }
    }
}

/// How far ahead a worker may be before its new connections go elsewhere:
/// one connection, plus an eighth of the other worker's. Small counts (a
/// few bulk transfers) split evenly; large ones (thousands of short or
/// idle connections) move only on a real imbalance, since each hand-over
/// wakes the other thread.
pub fn margin(theirs: u64) -> u64 {
    1 + theirs / 8
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A spread over `n` runtimes that are never run: `pick` only reads
    /// the counts.
    fn workers(n: usize) -> (Spread, Vec<tokio::runtime::Runtime>) {
        let runtimes: Vec<_> = (0..n)
            .map(|_| {
                tokio::runtime::Builder::new_current_thread()
                    .build()
                    .unwrap()
            })
            .collect();
        let handles = runtimes.iter().map(|r| r.handle().clone()).collect();
        (
            Spread::new(handles, Arc::new(WorkerStats::new(n))),
            runtimes,
        )
    }

    #[test]
    fn connections_stay_until_a_worker_is_ahead_by_the_margin() {
        let (spread, _runtimes) = workers(2);
        let stats = spread.stats().clone();
        assert_eq!(spread.pick(0, 0), 0, "even: stay");
        let _a = stats.opened(0);
        assert_eq!(spread.pick(0, 0), 0, "one ahead: stay");
        let _b = stats.opened(0);
        assert_eq!(spread.pick(0, 0), 1, "two ahead of none: hand over");
        assert_eq!(spread.pick(1, 0), 1, "the emptier one keeps its own");
        let many: Vec<_> = (0..40).map(|_| stats.opened(1)).collect();
        let more: Vec<_> = (0..44).map(|_| stats.opened(0)).collect();
        // 46 against 40: within 1 + 40/8 = 6.
        assert_eq!(spread.pick(0, 0), 0);
        let _c = stats.opened(0);
        assert_eq!(spread.pick(0, 0), 1, "47 against 40: over the margin");
        drop((many, more));
        assert_eq!(stats.open(1), 0);
    }

    #[test]
    fn four_bulk_connections_accepted_on_one_worker_split_two_and_two() {
        // iperf3 -P 4: a control connection, then four data connections,
        // all hashed to worker 0.
        let (spread, _runtimes) = workers(2);
        let stats = spread.stats().clone();
        let mut held = Vec::new();
        let mut served = [0; 2];
        for turn in 0..5 {
            let worker = spread.pick(0, turn);
            served[worker] += 1;
            held.push(stats.opened(worker));
        }
        assert_eq!(served, [3, 2]);
    }

    #[test]
    fn with_more_workers_each_other_worker_is_compared_in_turn() {
        let (spread, _runtimes) = workers(4);
        let stats = spread.stats().clone();
        let _busy: Vec<_> = (0..4).map(|_| stats.opened(0)).collect();
        let _others: Vec<_> = [1, 2].iter().map(|&w| stats.opened(w)).collect();
        // Worker 0 (4 open) against 1 (1), 2 (1), 3 (0) in turn.
        assert_eq!(spread.pick(0, 0), 1);
        assert_eq!(spread.pick(0, 1), 2);
        assert_eq!(spread.pick(0, 2), 3);
        assert_eq!(spread.pick(0, 3), 1);
    }

    #[test]
    fn one_worker_or_an_unknown_one_keeps_its_connections() {
        let (spread, _runtimes) = workers(1);
        let _busy: Vec<_> = (0..10).map(|_| spread.stats().opened(0)).collect();
        assert_eq!(spread.pick(0, 0), 0);
        let (spread, _runtimes) = workers(2);
        assert_eq!(spread.pick(7, 0), 7);
    }
}
