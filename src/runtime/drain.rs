//! How a balancer stops, once it is told to: what the layer in front of a
//! fleet sees, and what the clients still connected see.
//!
//! 1. `/ready` answers 503 and systemd hears `STOPPING=1` at once (not on
//!    an upgrade's hand-over: the service goes on in the new process).
//! 2. On SIGINT/SIGTERM, the listeners go on accepting for the shutdown
//!    delay (`--shutdown-delay`, default 0): the time keepalived's
//!    `track_script`, a BGP speaker or a Kubernetes readiness probe needs to
//!    see `/ready` and send new clients elsewhere, so that a client still
//!    routed here meanwhile is served rather than refused (Traefik's
//!    `requestAcceptGraceTimeout`, kube-apiserver's
//!    `--shutdown-delay-duration`). A shutdown by the token alone (an
//!    upgrade's hand-over, an embedding) has no delay.
//! 3. The listeners close and open connections drain, for up to the drain
//!    timeout; the admin endpoint keeps answering meanwhile.
//! 4. The end of the drain is spread ([`spread_window`]): connections still
//!    open when its last window begins are closed one after another over
//!    that window, in the order they were accepted, not all in the same
//!    instant when the timeout runs out. Their clients then reconnect (to
//!    another instance) spread over the window rather than in one storm
//!    (envoyproxy/envoy#44419). Each is counted
//!    (`tcplb_drain_spread_closed_total`) and logged with the cause
//!    `shutdown`, as a connection cut by the timeout always was. What is
//!    left at the timeout (connections not registered yet, or slow to
//!    notice) is dropped with the worker threads, as before.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use log::{info, warn};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::proxy::connections::{Connection, Connections, Filter};
use crate::stats::DrainStats;

/// The spread takes the last this-many-th of the drain timeout: a tenth.
const SPREAD_SHARE: u32 = 10;
/// The spread is never longer than this (default 10 s): long enough that a
/// few thousand reconnects arrive at a few hundred a second, short enough
/// that a long drain timeout is not cut short by minutes.
pub const SPREAD_MAX: Duration = Duration::from_secs(10);
/// How often, within the window, the connections due so far are closed.
const SPREAD_TICK: Duration = Duration::from_millis(20);

/// The window at the end of a drain of `drain_timeout` over which what is
/// still open is closed: the last tenth, at most [`SPREAD_MAX`] (3 s of
/// the default 30 s drain).
pub fn spread_window(drain_timeout: Duration) -> Duration {
    (drain_timeout / SPREAD_SHARE).min(SPREAD_MAX)
}

/// The shutdown delay: returns after `delay`, or as soon as `stop` is
/// cancelled (the balancer was stopped outright meanwhile).
pub(super) async fn delay(delay: Duration, stop: &CancellationToken) {
    if delay.is_zero() {
        return;
    }
    info!(
        "/ready answers 503 now; still accepting for {} (--shutdown-delay) before draining",
        humantime::format_duration(delay)
    );
    tokio::select! {
        _ = tokio::time::sleep(delay) => {}
        _ = stop.cancelled() => {}
    }
}

/// Waits up to `timeout` for every connection `tracked` to end; those
/// still open in the registry when the last [`spread_window`] begins are
/// closed over it. Returns when all have ended or the timeout is over.
pub(super) async fn drain(
    tracked: &TaskTracker,
    registry: &Connections,
    timeout: Duration,
    stats: &DrainStats,
) {
    let window = spread_window(timeout);
    let deadline = Instant::now() + timeout;
    info!(
        "stopped accepting; draining {} open connection(s) for up to {} \
         (what is left is closed over the last {})",
        tracked.len(),
        humantime::format_duration(timeout),
        humantime::format_duration(window)
    );
    if tokio::time::timeout_at(deadline - window, tracked.wait())
        .await
        .is_ok()
    {
        info!("all connections finished; exiting");
        return;
    }
    let mut open = registry.matching(&Filter::default());
    open.sort_by_key(|c| c.id);
    info!(
        "drain: closing the {} connection(s) still open over {}",
        open.len(),
        humantime::format_duration(window)
    );
    let spread = tokio::select! {
        () = close_spread(&open, registry, window, stats) => true,
        () = tracked.wait() => false,
    };
    // What the spread stopped winds down at once; the last one stopped
    // gets a tick past the timeout, then the worker threads drop the rest.
    if spread {
        let _ = tokio::time::timeout_at(deadline + SPREAD_TICK, tracked.wait()).await;
    }
    info!(
        "drain: {} connection(s) closed over the window",
        stats.spread_closed.load(Relaxed)
    );
    match tracked.len() {
        0 => info!("all connections finished; exiting"),
        n => warn!("drain timeout: closing {n} connection(s) still open"),
    }
}

/// Stops `open` one after another over `window`, as many as are due at
/// each tick; those that ended meanwhile are skipped (each one stopped is
/// counted in `stats`).
async fn close_spread(
    open: &[Arc<Connection>],
    registry: &Connections,
    window: Duration,
    stats: &DrainStats,
) {
    let started = Instant::now();
    let mut ticks = tokio::time::interval(SPREAD_TICK);
    let mut next = 0;
    while next < open.len() {
        ticks.tick().await;
        let due = due_by(open.len(), started.elapsed(), window);
        for connection in &open[next..due] {
            if registry.get(connection.id).is_some() {
                connection.stop_at_shutdown();
                stats.spread_closed.fetch_add(1, Relaxed);
            }
        }
        next = due;
    }
}

/// How many of `n` connections are due to be closed `elapsed` into a
/// spread over `window`: the first at once, the rest evenly after it.
fn due_by(n: usize, elapsed: Duration, window: Duration) -> usize {
    if window.is_zero() || elapsed >= window {
        return n;
    }
    let share = elapsed.as_secs_f64() / window.as_secs_f64();
    ((share * n as f64).floor() as usize + 1).min(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_is_the_last_tenth_of_the_drain_at_most_ten_seconds() {
        assert_eq!(
            spread_window(Duration::from_secs(30)),
            Duration::from_secs(3)
        );
        assert_eq!(
            spread_window(Duration::from_secs(1)),
            Duration::from_millis(100)
        );
        assert_eq!(spread_window(Duration::from_secs(600)), SPREAD_MAX);
        assert_eq!(spread_window(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn closes_are_due_evenly_over_the_window() {
        let window = Duration::from_secs(10);
        let at = |ms| due_by(100, Duration::from_millis(ms), window);
        assert_eq!(at(0), 1, "the first at once");
        assert_eq!(at(1_000), 11);
        assert_eq!(at(5_000), 51);
        assert_eq!(at(9_999), 100);
        assert_eq!(at(10_000), 100);
        assert_eq!(due_by(3, Duration::ZERO, Duration::ZERO), 3);
        assert_eq!(due_by(0, Duration::from_secs(1), window), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_spread_takes_the_whole_window_and_skips_what_ended() {
        use crate::config::{ServiceConfig, parse_backend};
        use crate::pool::Pool;
        use crate::proxy::Service;
        let config = ServiceConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            vec![parse_backend("127.0.0.1:1").unwrap()],
        );
        let service = Arc::new(Service::new(Arc::new(Pool::new("web", config))));
        let registry = Connections::default();
        let open: Vec<Arc<Connection>> = (0..50)
            .map(|_| {
                let id = registry.next_id();
                let c = Arc::new(Connection::new(
                    id,
                    "127.0.0.1:5".parse().unwrap(),
                    service.clone(),
                ));
                registry.insert(c.clone());
                c
            })
            .collect();
        // Ten of them end on their own before their turn.
        for c in &open[40..] {
            registry.remove(c.id);
        }
        let stats = DrainStats::default();
        let window = Duration::from_secs(2);
        let started = Instant::now();
        close_spread(&open, &registry, window, &stats).await;
        let took = started.elapsed();
        assert_eq!(stats.spread_closed.load(Relaxed), 40);
        assert!(open[..40].iter().all(|c| c.was_stopped_at_shutdown()));
        assert!(!open[40].was_stopped_at_shutdown());
        // The last one is due at 49/50 of the window, not at its start.
        assert!(took >= window * 49 / 50, "{took:?}");
        assert!(took <= window + SPREAD_TICK, "{took:?}");
    }
}
