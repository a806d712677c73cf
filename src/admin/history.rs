//! The last 15 minutes, one sample a second, for the status page's charts:
//! counters sampled into fixed-size rings in memory, served as JSON at
//! `/status/history`.
//!
//! It exists because `/status` is one moment and the page wants a trend
//! without a Prometheus server. A sampler task ([`sample_every_second`],
//! started by the runtime with the admin endpoint) reads the same snapshot
//! `/status` does once a second and appends one point to each series; each
//! series keeps its last [`SAMPLES`] points (900: 15 minutes) in a ring, so
//! memory is fixed per series. Series follow the pools: a listener or
//! backend that goes away takes its series with it, a new one starts
//! empty. At most [`MAX_BACKEND_SERIES`] backends (over all listeners and
//! their TLS routes' pools) get series of their own, in configuration
//! order; listeners always do.
//!
//! Per listener, a point holds connections accepted per second, connections
//! open, and clients answered 502/503 per second; per backend, connections
//! made per second, connections open, and failed connects per second.
//! Rates are the counters' differences divided by the time between samples.
//!
//! `GET /status/history?after=N` answers only the points of samples after
//! sample number N (the answer's `samples`), so a page that polls gets a
//! point or two per request instead of 15 minutes again:
//!
//! ```text
//! {"interval_seconds":1,"samples":N,"time":UNIX_SECONDS_OF_SAMPLE_N,
//!  "listeners":[{"name":..,"from":FIRST_SAMPLE_NUMBER,"rate":[..],"active":[..],"errors":[..],
//!    "backends":[{"name":..,"from":..,"rate":[..],"active":[..],"failures":[..]}],
//!    "routes":[{"name":..,"backends":[..]}] (TLS routes' pools; only with routes)}]}
//! ```
//!
//! Every array of a series holds its points oldest first, the first being
//! sample number `from`, the last sample number `samples`.
//!
//! The rings sit behind one std mutex that the sampler holds for a moment
//! each second and a request holds while copying its answer out; the data
//! path never touches it.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::view::{self, BackendView, ListenerView, WatchList};

/// Points kept per series: 15 minutes of one a second.
pub const SAMPLES: usize = 900;
/// Time between samples.
pub const INTERVAL: Duration = Duration::from_secs(1);
/// Backends with series of their own, over all listeners (default 256):
/// bounds the memory (about 15 KB per series) of a pool DNS made large.
pub const MAX_BACKEND_SERIES: usize = 256;

/// The last [`SAMPLES`] values pushed, oldest overwritten first.
#[derive(Debug)]
pub struct Ring<T> {
    /// The values; once full, `next` is the oldest.
    values: Vec<T>,
    /// Where the next value goes once the ring is full.
    next: usize,
}

impl<T: Copy> Ring<T> {
    fn new() -> Self {
        Ring {
            values: Vec::new(),
            next: 0,
        }
    }

    /// Adds the newest value, dropping the oldest when full.
    pub fn push(&mut self, value: T) {
        if self.values.len() < SAMPLES {
            self.values.push(value);
        } else {
            self.values[self.next] = value;
            self.next = (self.next + 1) % SAMPLES;
        }
    }

    /// How many values it holds (at most [`SAMPLES`]).
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether nothing was pushed yet.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The newest `n` values (all when fewer), oldest first.
    pub fn newest(&self, n: usize) -> Vec<T> {
        let (newer, older) = self.values.split_at(self.next);
        let all = older.iter().chain(newer);
        all.skip(self.values.len().saturating_sub(n))
            .copied()
            .collect()
    }
}

/// A listener's point: per second, or now.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct ListenerPoint {
    /// Client connections accepted per second.
    rate: f32,
    /// Client connections open.
    active: u64,
    /// Clients answered 502 or 503 per second.
    errors: f32,
}

/// A backend's point.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct BackendPoint {
    /// Connections made per second.
    rate: f32,
    /// Connections open.
    active: u64,
    /// Failed connects per second.
    failures: f32,
}

/// One listener's series and the counters its rates are taken from.
struct ListenerSeries {
    /// The pool's name, as in `/status`.
    name: String,
    /// Accepted and failed (502 + 503) at the last sample.
    last: (u64, u64),
    /// Its points.
    points: Ring<ListenerPoint>,
    /// Its backends' series, by pool (the listener's own, or a TLS
    /// route's) and backend name.
    backends: HashMap<(String, String), BackendSeries>,
}

/// One backend's series.
struct BackendSeries {
    /// Connections made and failed connects at the last sample.
    last: (u64, u64),
    /// Its points.
    points: Ring<BackendPoint>,
}

/// Every series, and where sampling stands.
#[derive(Default)]
struct Series {
    /// Samples taken so far: the number of the newest.
    taken: u64,
    /// When the newest was taken (for rates), and its wall-clock time.
    at: Option<(Instant, SystemTime)>,
    /// One per listener, in configuration order.
    listeners: Vec<ListenerSeries>,
}

/// The status page's memory: the rings of every series.
#[derive(Default)]
pub struct History {
    /// Written once a second by the sampler, read by requests.
    series: Mutex<Series>,
}

impl History {
    /// Appends one sample of `listeners`, taken `now`.
    pub fn record(&self, listeners: &[ListenerView], now: Instant, wall: SystemTime) {
        let mut series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        let seconds = series
            .at
            .map(|(then, _)| now.duration_since(then).as_secs_f64())
            .filter(|s| *s > 0.0);
        // A counter's change per second, to 1/100 (short JSON); nothing
        // before the second sample.
        let rate = |now: u64, then: u64| -> f32 {
            let per_second = seconds.map_or(0.0, |s| now.saturating_sub(then) as f64 / s);
            ((per_second * 100.0).round() / 100.0) as f32
        };
        let mut old: HashMap<String, ListenerSeries> = std::mem::take(&mut series.listeners)
            .into_iter()
            .map(|l| (l.name.clone(), l))
            .collect();
        let mut budget = MAX_BACKEND_SERIES;
        for l in listeners {
            let failed = l.failures.bad_gateway + l.failures.unavailable;
            let mut s = old.remove(&l.name).unwrap_or_else(|| ListenerSeries {
                name: l.name.clone(),
                last: (l.accepted, failed),
                points: Ring::new(),
                backends: HashMap::new(),
            });
            s.points.push(ListenerPoint {
                rate: rate(l.accepted, s.last.0),
                active: l.active,
                errors: rate(failed, s.last.1),
            });
            s.last = (l.accepted, failed);
            let mut old_backends = std::mem::take(&mut s.backends);
            for (pool, b) in pool_backends(l) {
                if budget == 0 {
                    break;
                }
                budget -= 1;
                let key = (pool.to_string(), b.name.clone());
                let mut bs = old_backends.remove(&key).unwrap_or_else(|| BackendSeries {
                    last: (b.total, b.connect_failures),
                    points: Ring::new(),
                });
                bs.points.push(BackendPoint {
                    rate: rate(b.total, bs.last.0),
                    active: b.active,
                    failures: rate(b.connect_failures, bs.last.1),
                });
                bs.last = (b.total, b.connect_failures);
                s.backends.insert(key, bs);
            }
            series.listeners.push(s);
        }
        series.taken += 1;
        series.at = Some((now, wall));
    }

    /// The `/status/history` body: each series' points of the samples
    /// after number `after` (all it keeps for 0).
    pub fn render(&self, after: u64, listeners: &[ListenerView]) -> String {
        let series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        let taken = series.taken;
        // Points wanted per series: those of samples after `after`.
        let wanted = usize::try_from(taken.saturating_sub(after)).unwrap_or(usize::MAX);
        let from = |len: usize| taken + 1 - (len as u64);
        let mut out = HistoryJson {
            interval_seconds: INTERVAL.as_secs(),
            samples: taken,
            time: series
                .at
                .and_then(|(_, wall)| wall.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs()),
            listeners: Vec::new(),
        };
        // In the listeners' order now, backends in their pool's order.
        for view in listeners {
            let Some(l) = series.listeners.iter().find(|s| s.name == view.name) else {
                continue;
            };
            let points = l.points.newest(wanted);
            let backends = |pool: &str, members: &[BackendView]| -> Vec<BackendJson> {
                let mut out = Vec::new();
                for b in members {
                    let key = (pool.to_string(), b.name.clone());
                    let Some(((_, name), s)) = l.backends.get_key_value(&key) else {
                        continue;
                    };
                    let points = s.points.newest(wanted);
                    out.push(BackendJson {
                        name,
                        from: from(points.len()),
                        rate: points.iter().map(|p| p.rate).collect(),
                        active: points.iter().map(|p| p.active).collect(),
                        failures: points.iter().map(|p| p.failures).collect(),
                    });
                }
                out
            };
            out.listeners.push(ListenerJson {
                name: &l.name,
                from: from(points.len()),
                rate: points.iter().map(|p| p.rate).collect(),
                active: points.iter().map(|p| p.active).collect(),
                errors: points.iter().map(|p| p.errors).collect(),
                backends: backends(&view.name, &view.backends),
                routes: view
                    .routes
                    .iter()
                    .map(|r| RouteJson {
                        name: r.name.clone(),
                        backends: backends(&r.name, &r.backends),
                    })
                    .collect(),
            });
        }
        // Plain structs of strings and numbers always serialise; rates are
        // finite (a difference over a positive time).
        let mut body = serde_json::to_string(&out).unwrap_or_else(|_| "{}".into());
        body.push('\n');
        body
    }
}

/// The `/status/history` answer.
#[derive(Serialize)]
struct HistoryJson<'a> {
    /// Seconds between samples.
    interval_seconds: u64,
    /// The newest sample's number (samples taken so far).
    samples: u64,
    /// The newest sample's time, in seconds since the Unix epoch.
    time: u64,
    /// One per listener.
    listeners: Vec<ListenerJson<'a>>,
}

/// One listener's points.
#[derive(Serialize)]
struct ListenerJson<'a> {
    /// The pool's name, as in `/status`.
    name: &'a str,
    /// The number of the sample of each array's first point.
    from: u64,
    /// Connections accepted per second.
    rate: Vec<f32>,
    /// Connections open.
    active: Vec<u64>,
    /// Clients answered 502 or 503 per second.
    errors: Vec<f32>,
    /// Its own pool's backends' points.
    backends: Vec<BackendJson<'a>>,
    /// Its TLS routes' pools; left out without routes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    routes: Vec<RouteJson<'a>>,
}

/// One TLS route's pool's points.
#[derive(Serialize)]
struct RouteJson<'a> {
    /// The route's (and its pool's) name, as in `/status`.
    name: String,
    /// Its backends' points.
    backends: Vec<BackendJson<'a>>,
}

/// Every backend of a listener with its pool's name: the listener's own
/// pool (named like the listener), then its TLS routes' pools.
fn pool_backends(l: &ListenerView) -> impl Iterator<Item = (&str, &BackendView)> {
    let own = l.backends.iter().map(|b| (l.name.as_str(), b));
    let routes = l
        .routes
        .iter()
        .flat_map(|r| r.backends.iter().map(|b| (r.name.as_str(), b)));
    own.chain(routes)
}

/// One backend's points.
#[derive(Serialize)]
struct BackendJson<'a> {
    /// The backend's name, as in `/status`.
    name: &'a str,
    /// The number of the sample of each array's first point.
    from: u64,
    /// Connections made per second.
    rate: Vec<f32>,
    /// Connections open.
    active: Vec<u64>,
    /// Failed connects per second.
    failures: Vec<f32>,
}

/// Samples `watched` into `history` every [`INTERVAL`] until `shutdown`.
pub async fn sample_every_second(
    watched: WatchList,
    history: std::sync::Arc<History>,
    shutdown: CancellationToken,
) {
    let mut ticks = tokio::time::interval(INTERVAL);
    // A late tick is not made up for: rates divide by the real time.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let listeners = view::snapshot(&watched());
        history.record(&listeners, Instant::now(), SystemTime::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::view::tests::sample;

    #[test]
    fn a_ring_keeps_the_newest_values_oldest_first() {
        let mut ring = Ring::new();
        assert!(ring.is_empty());
        for i in 0..10u32 {
            ring.push(i);
        }
        assert_eq!(ring.newest(3), vec![7, 8, 9]);
        assert_eq!(ring.newest(100).len(), 10);
        for i in 10..(SAMPLES as u32 + 250) {
            ring.push(i);
        }
        assert_eq!(ring.len(), SAMPLES, "fixed size");
        let all = ring.newest(usize::MAX);
        assert_eq!(all.len(), SAMPLES);
        assert_eq!(all[0], 250, "the oldest 250 were overwritten");
        assert_eq!(*all.last().unwrap(), SAMPLES as u32 + 249);
        assert!(all.windows(2).all(|w| w[0] + 1 == w[1]), "in order");
        assert_eq!(
            ring.newest(2),
            vec![SAMPLES as u32 + 248, SAMPLES as u32 + 249]
        );
    }

    #[test]
    fn rates_are_differences_per_second_and_series_follow_the_pools() {
        let history = History::default();
        let t0 = Instant::now();
        let wall = UNIX_EPOCH + Duration::from_secs(1_000);
        let mut views = sample();
        history.record(&views, t0, wall);
        // Two seconds later: 10 more accepted, 4 more 503s, 6 more
        // connections to the first backend.
        views[0].accepted += 10;
        views[0].failures.unavailable += 4;
        views[0].backends[0].total += 6;
        views[0].backends[0].active = 3;
        history.record(
            &views,
            t0 + Duration::from_secs(2),
            wall + Duration::from_secs(2),
        );

        let json: serde_json::Value =
            serde_json::from_str(&history.render(0, &views)).expect("JSON");
        assert_eq!(json["samples"], 2);
        assert_eq!(json["time"], 1_002);
        let listener = &json["listeners"][0];
        assert_eq!(listener["name"], "web");
        assert_eq!(listener["from"], 1);
        assert_eq!(listener["rate"], serde_json::json!([0.0, 5.0]));
        assert_eq!(listener["errors"], serde_json::json!([0.0, 2.0]));
        assert_eq!(listener["active"], serde_json::json!([1, 1]));
        let backend = &listener["backends"][0];
        assert_eq!(backend["name"], "we\"ird\\name\n");
        assert_eq!(backend["rate"], serde_json::json!([0.0, 3.0]));
        assert_eq!(backend["active"], serde_json::json!([1, 3]));

        // Only what is new since sample 1.
        let json: serde_json::Value =
            serde_json::from_str(&history.render(1, &views)).expect("JSON");
        assert_eq!(json["listeners"][0]["from"], 2);
        assert_eq!(json["listeners"][0]["rate"], serde_json::json!([5.0]));
        let json: serde_json::Value =
            serde_json::from_str(&history.render(2, &views)).expect("JSON");
        assert_eq!(json["listeners"][0]["rate"], serde_json::json!([]));

        // A backend that leaves takes its series along; one that comes
        // starts from its first sample.
        let gone = views[0].backends.remove(0);
        let mut newcomer = gone.clone();
        newcomer.name = "127.0.0.1:9999".into();
        views[0].backends.push(newcomer);
        history.record(&views, t0 + Duration::from_secs(3), wall);
        let json: serde_json::Value =
            serde_json::from_str(&history.render(0, &views)).expect("JSON");
        let backends = json["listeners"][0]["backends"].as_array().unwrap();
        assert!(backends.iter().all(|b| b["name"] != gone.name.as_str()));
        let new = backends
            .iter()
            .find(|b| b["name"] == "127.0.0.1:9999")
            .expect("a series for the newcomer");
        assert_eq!(new["from"], 3);
        assert_eq!(new["rate"], serde_json::json!([0.0]));
    }

    #[test]
    fn a_tls_routes_pool_has_series_apart_from_the_listeners_own() {
        let history = History::default();
        let mut views = sample();
        // A route whose pool has a backend named like one of the
        // listener's own: two series all the same.
        let mut twin = views[0].backends[0].clone();
        twin.total = 100;
        views[0].routes.push(crate::admin::view::RouteView {
            name: "api".into(),
            backends: vec![twin],
            ..Default::default()
        });
        let t0 = Instant::now();
        history.record(&views, t0, SystemTime::now());
        views[0].routes[0].backends[0].total += 8;
        history.record(&views, t0 + Duration::from_secs(1), SystemTime::now());
        let json: serde_json::Value =
            serde_json::from_str(&history.render(0, &views)).expect("JSON");
        let listener = &json["listeners"][0];
        assert_eq!(
            listener["backends"][0]["rate"],
            serde_json::json!([0.0, 0.0])
        );
        let route = &listener["routes"][0];
        assert_eq!(route["name"], "api");
        assert_eq!(route["backends"][0]["name"], "we\"ird\\name\n");
        assert_eq!(route["backends"][0]["rate"], serde_json::json!([0.0, 8.0]));
        // Without routes, no "routes" key.
        let json = history.render(0, &sample());
        assert!(!json.contains("\"routes\""), "{json}");
    }

    #[test]
    fn backend_series_are_capped() {
        let history = History::default();
        let mut views = sample();
        let template = views[0].backends[0].clone();
        views[0].backends = (0..MAX_BACKEND_SERIES + 10)
            .map(|i| {
                let mut b = template.clone();
                b.name = format!("10.0.0.1:{i}");
                b
            })
            .collect();
        history.record(&views, Instant::now(), SystemTime::now());
        let json: serde_json::Value =
            serde_json::from_str(&history.render(0, &views)).expect("JSON");
        let backends = json["listeners"][0]["backends"].as_array().unwrap();
        assert_eq!(backends.len(), MAX_BACKEND_SERIES);
    }
}
