//! The figures one admin request reports, read once from the pools and
//! counters so that every number in an answer comes from the same moment,
//! and so that rendering (`metrics`, `status`) is pure and testable without
//! a running balancer.
//!
//! The structs derive `Serialize`: their field names and nesting are the
//! `/status` JSON shape.

use std::fmt::Display;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use serde::{Serialize, Serializer};

use crate::config::AdminState;
use crate::config::Protocol;
use crate::pool::Pool;
use crate::pool::backend::Backend;
use crate::pool::discovery::is_group;
use crate::pool::health::CheckResult;
use crate::stats::histogram::HistogramSnapshot;
use crate::stats::{Dropped, ListenerStats, RouteStats, UdpStats, Unavailable};

/// One listener as the admin endpoint sees it.
#[derive(Clone)]
pub struct Watched {
    /// The pool's name in the control API: configured, or `listen`.
    pub name: String,
    /// Where the listener is bound (port 0 resolved).
    pub listen: SocketAddr,
    /// Its pool; loaded afresh for every request.
    pub pool: Arc<Pool>,
    /// Its client counters.
    pub stats: Arc<ListenerStats>,
    /// Its TLS routes, each with its own pool; empty without routes.
    pub routes: Vec<WatchedRoute>,
}

/// One TLS route of a listener as the admin endpoint sees it.
#[derive(Clone)]
pub struct WatchedRoute {
    /// The route's name, also its pool's name in the control API.
    pub name: String,
    /// The server names it takes, as configured (`*.` for wildcards).
    pub server_names: Vec<String>,
    /// The ALPN protocols it takes; empty: any.
    pub alpn: Vec<String>,
    /// Its pool; loaded afresh for every request.
    pub pool: Arc<Pool>,
    /// Its counters.
    pub stats: Arc<RouteStats>,
}

/// Lists the listeners to report, asked afresh for every request so that
/// listeners added or removed by a reload show up.
pub type WatchList = Arc<dyn Fn() -> Vec<Watched> + Send + Sync>;

/// One listener's figures.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ListenerView {
    /// The pool's name in the control API (by default `listen`): the
    /// `listener` label in /metrics. First, so the fields that were there
    /// keep their order.
    pub name: String,
    /// The bound address, e.g. `127.0.0.1:8080`: the `listen` label.
    pub listen: String,
    /// The balancing strategy, as configured.
    pub strategy: String,
    /// Client connections accepted, refused ones included.
    pub accepted: u64,
    /// Client connections refused by access control or limits.
    pub rejected: u64,
    /// Client connections open now.
    pub active: u64,
    /// Clients no backend could take, by the answer they got.
    pub failures: Failures,
    /// Clients closed for a bad or missing PROXY header. Only in /metrics:
    /// /status keeps the shape it has always had.
    #[serde(skip)]
    pub proxy_header_errors: u64,
    /// Bytes each connection sent to its backend; in /metrics only.
    #[serde(skip)]
    pub sent_bytes: HistogramSnapshot,
    /// Bytes each connection received from its backend; in /metrics only.
    #[serde(skip)]
    pub received_bytes: HistogramSnapshot,
    /// Membership changes the pool has applied since it started.
    pub backend_changes: BackendChanges,
    /// The pool's members, each name once.
    pub backends: Vec<BackendView>,
    /// The backend names DNS discovery keeps current, as configured.
    pub dns: Vec<DnsView>,
    /// Whether the pool is in panic (see `panic_threshold`).
    pub panic: PanicView,
    /// Passive ejections made and refused by the cap.
    pub ejections: EjectionView,
    /// With TLS routes: what became of ClientHellos that chose no route.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsView>,
    /// Its TLS routes, in configuration order; left out without routes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteView>,
    /// On a UDP listener (where `accepted` and `active` count sessions):
    /// its datagrams; left out on a TCP listener.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub udp: Option<UdpView>,
}

/// A UDP listener's datagrams and drops.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct UdpView {
    /// Datagrams from clients forwarded to backends, and their bytes.
    pub datagrams_to_backends: u64,
    pub bytes_to_backends: u64,
    /// Datagrams from backends forwarded to clients, and their bytes.
    pub datagrams_to_clients: u64,
    pub bytes_to_clients: u64,
    /// Datagrams dropped, by reason (every reason, zeros included).
    pub dropped: std::collections::BTreeMap<&'static str, u64>,
}

impl UdpView {
    fn read(stats: &UdpStats) -> UdpView {
        UdpView {
            datagrams_to_backends: stats.datagrams_sent.load(Relaxed),
            bytes_to_backends: stats.bytes_sent.load(Relaxed),
            datagrams_to_clients: stats.datagrams_received.load(Relaxed),
            bytes_to_clients: stats.bytes_received.load(Relaxed),
            dropped: Dropped::ALL
                .iter()
                .zip(&stats.dropped)
                .map(|(why, n)| (why.name(), n.load(Relaxed)))
                .collect(),
        }
    }
}

/// A routing listener's ClientHello outcomes that no route counts.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TlsView {
    /// Clients closed without a valid ClientHello, by reason (`not_tls`,
    /// `malformed`, `too_large`, `timeout`, `closed`).
    pub rejected: std::collections::BTreeMap<&'static str, u64>,
    /// Clients that matched no route and went to the listener's backends.
    pub default_route: u64,
    /// Clients that matched no route with no default: `unrecognized_name`.
    pub unmatched: u64,
}

/// One TLS route's figures; its pool's are shaped as a listener's.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RouteView {
    /// The route's (and its pool's) name: the `route` label.
    pub name: String,
    /// The server names it takes.
    pub server_names: Vec<String>,
    /// The ALPN protocols it takes; empty: any.
    pub alpn: Vec<String>,
    /// Clients whose ClientHello chose it.
    pub connections: u64,
    /// Its pool's balancing strategy.
    pub strategy: String,
    /// Membership changes its pool has applied.
    pub backend_changes: BackendChanges,
    /// Its pool's members.
    pub backends: Vec<BackendView>,
    /// Its backend names kept current by DNS.
    pub dns: Vec<DnsView>,
    /// Whether its pool is in panic.
    pub panic: PanicView,
    /// Its pool's passive ejections.
    pub ejections: EjectionView,
}

/// One backend name that DNS discovery keeps current.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct DnsView {
    /// As configured, e.g. `db.example:5432` or `srv:_pg._tcp.example`:
    /// the `name` label, and the `source` of its members.
    pub name: String,
    /// Backends found under it now.
    pub members: usize,
    /// Its lookups so far, by result: `ok`, `nxdomain`, `servfail`,
    /// `empty`, `timeout`, `error`.
    pub resolutions: std::collections::BTreeMap<&'static str, u64>,
}

/// Clients answered with an error (or closed) because no backend took them.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Failures {
    /// Every backend tried failed to connect.
    #[serde(rename = "502")]
    pub bad_gateway: u64,
    /// Every 503: no backend was available to try, or a limit turned the
    /// client away (the sum of `unavailable_by_reason`).
    #[serde(rename = "503")]
    pub unavailable: u64,
    /// The 503s by reason, indexed by [`Unavailable`]; in /status an
    /// object of every reason's name.
    #[serde(rename = "503_by_reason", serialize_with = "reason_map")]
    pub unavailable_by_reason: [u64; Unavailable::ALL.len()],
}

impl Failures {
    /// The listener's 502 and 503 counters, read once.
    fn read(stats: &ListenerStats) -> Failures {
        let by_reason = stats.unavailable.each_ref().map(|c| c.load(Relaxed));
        Failures {
            bad_gateway: stats.bad_gateway.load(Relaxed),
            unavailable: by_reason.iter().sum(),
            unavailable_by_reason: by_reason,
        }
    }

    /// The 503s with their reasons, in [`Unavailable::ALL`]'s order.
    pub fn by_reason(&self) -> impl Iterator<Item = (Unavailable, u64)> + '_ {
        Unavailable::ALL.into_iter().zip(self.unavailable_by_reason)
    }
}

/// The 503 counts as an object keyed by reason.
fn reason_map<S: Serializer>(
    counts: &[u64; Unavailable::ALL.len()],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let names = Unavailable::ALL.map(Unavailable::name);
    serializer.collect_map(names.into_iter().zip(counts))
}

/// A pool's membership changes, by kind.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct BackendChanges {
    /// Backends that joined after start-up (reloads, discovery).
    pub added: u64,
    /// Backends that left.
    pub removed: u64,
    /// Backends whose weight, limit or admin state changed in place.
    pub updated: u64,
}

/// A pool's panic state.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PanicView {
    /// Balancing over every ready primary, healthy or not, now.
    pub active: bool,
    /// Times the pool entered panic.
    pub entered: u64,
}

/// A pool's passive ejections.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct EjectionView {
    /// Backends ejected after `max_fails` failed connects.
    pub ejected: u64,
    /// Ejections refused: `max_ejection_percent` of the pool was out.
    pub capped: u64,
}

/// The last active check of a backend.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CheckView {
    /// The kind of check: `connect`, `steps`, `http` or `exec`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// `passed`, `failed` or `skipped` (no verdict: out of descriptors).
    pub result: CheckResult,
    /// What it saw: `HTTP 503 (expected 2xx,3xx)`, `connection refused`.
    pub reason: String,
    /// When it ended (RFC 3339, UTC).
    pub at: String,
    /// How long it took.
    #[serde(serialize_with = "finite")]
    pub seconds: f64,
}

/// What a backend's agent said last.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AgentView {
    /// `passed` (an answer understood) or `failed` (none, or malformed:
    /// nothing changed).
    pub result: CheckResult,
    /// Its answer, or why there was none.
    pub reason: String,
    /// When it was asked (RFC 3339, UTC).
    pub at: String,
    /// Its admin state: "ready", "drain" or "maintenance".
    #[serde(serialize_with = "as_text")]
    pub state: AdminState,
    /// It says the backend is down.
    pub down: bool,
    /// Its share of the configured weight, in percent.
    pub weight_percent: u32,
    /// Its `maxconn`, if it gave one.
    pub maxconn: Option<u32>,
}

/// A backend's health as /status, the API and the page show it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct HealthDetail {
    /// The last active check; null before the first.
    pub check: Option<CheckView>,
    /// When its health last changed, or it joined (RFC 3339, UTC).
    pub health_since: String,
    /// Why its health is what it is since then.
    pub health_reason: String,
    /// Its agent's last word; left out without an agent check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentView>,
}

impl HealthDetail {
    /// Reads `b`'s health report and agent, for a pool whose check is of
    /// `kind`.
    pub fn read(b: &Backend, kind: &'static str, with_agent: bool) -> HealthDetail {
        let report = b.health.report();
        HealthDetail {
            check: report.last_check.map(|c| CheckView {
                kind,
                result: c.result,
                reason: c.reason,
                at: rfc3339(c.at),
                seconds: c.took.as_secs_f64(),
            }),
            health_since: rfc3339(report.since),
            health_reason: report.why,
            agent: with_agent.then(|| {
                let said = b.agent.report();
                AgentView {
                    result: said.as_ref().map_or(CheckResult::Skipped, |r| r.result),
                    reason: said
                        .as_ref()
                        .map_or_else(|| "not asked yet".into(), |r| r.reason.clone()),
                    at: said.as_ref().map_or_else(String::new, |r| rfc3339(r.at)),
                    state: b.agent.state(),
                    down: b.agent.says_down(),
                    weight_percent: b.agent.weight_percent(),
                    maxconn: b.agent.max_conns(),
                }
            }),
        }
    }
}

/// A time as RFC 3339 in UTC, to the millisecond.
pub fn rfc3339(at: std::time::SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

/// One backend's figures.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct BackendView {
    /// The `HOST:PORT` text as configured: the `backend` label.
    pub name: String,
    /// The address it resolved to.
    pub address: String,
    /// The name DNS discovery found it under, as configured; left out for
    /// a backend configured by address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Health checks pass; the same fact as `health`, kept for existing
    /// consumers of /status.
    pub up: bool,
    /// Relative share of connections.
    pub weight: u32,
    /// Connections open to it now.
    pub active: u64,
    /// Connections ever established to it.
    pub total: u64,
    /// Connect attempts that failed.
    pub connect_failures: u64,
    /// Bytes from clients to it.
    pub sent_bytes: u64,
    /// Bytes from it to clients.
    pub received_bytes: u64,
    /// Duration of the last successful health check.
    #[serde(serialize_with = "finite")]
    pub check_latency_seconds: f64,
    /// Connections closed by the idle timeout.
    pub idle_timeouts: u64,
    /// Connections closed at the maximum connection age.
    pub max_age_closes: u64,
    /// Connections closed by eviction: an operator's drain deadline, or a
    /// change of health (those also in `health_closes`).
    pub evicted: u64,
    /// A backup: used only while no primary is usable.
    pub backup: bool,
    /// The weight it takes now: `weight`, scaled down while slow start
    /// ramps it up.
    #[serde(serialize_with = "finite")]
    pub effective_weight: f64,
    /// What the operator wants of it: "ready", "drain" or "maintenance".
    #[serde(serialize_with = "as_text")]
    pub admin_state: AdminState,
    /// What the checks say of it (and its agent, if any): "up" or "down".
    pub health: Health,
    /// Taken out for now by passive health (failed connects).
    pub ejected: bool,
    /// The state in force: the operator's, or while the operator says
    /// ready, the agent's.
    #[serde(serialize_with = "as_text")]
    pub state: AdminState,
    /// Connections a change of health closed (`on_down`, `on_backup_up`).
    pub health_closes: u64,
    /// The last check, the last change of health, the agent's word.
    #[serde(flatten)]
    pub detail: HealthDetail,
    /// The median connect time in seconds, estimated from the
    /// connect-time histogram's buckets (linear within a bucket, as
    /// Prometheus' `histogram_quantile`); null before any connection.
    pub connect_p50_seconds: Option<f64>,
    /// The 99th percentile connect time, estimated the same way.
    pub connect_p99_seconds: Option<f64>,
    /// Connect times of successful attempts; in /metrics only.
    #[serde(skip)]
    pub connect_time: HistogramSnapshot,
    /// Time clients waited for a slot before connecting; in /metrics only.
    #[serde(skip)]
    pub queue_wait: HistogramSnapshot,
    /// How long connections lasted; in /metrics only.
    #[serde(skip)]
    pub duration: HistogramSnapshot,
}

/// A backend's health as the checks see it, apart from the admin state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Checks pass (or none has failed yet).
    #[default]
    Up,
    /// Checks fail.
    Down,
}

/// Writes a value by its `Display` text (the config types have no serde
/// impls of their own, and need none).
fn as_text<S: Serializer>(value: &impl Display, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

/// JSON has no NaN or infinity (serde_json would write `null`): 0 instead.
fn finite<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(if value.is_finite() { *value } else { 0.0 })
}

/// Reads every counter now. Lock-free apart from the pools' snapshot reads.
pub fn snapshot(watched: &[Watched]) -> Vec<ListenerView> {
    watched
        .iter()
        .map(|w| {
            let stats = &w.stats;
            let udp =
                (w.pool.load().config.protocol == Protocol::Udp).then(|| UdpView::read(&stats.udp));
            let pool = PoolFigures::read(&w.pool);
            let tls = (!w.routes.is_empty()).then(|| TlsView {
                rejected: ListenerStats::TLS_REJECT_REASONS
                    .iter()
                    .zip(&stats.tls_rejected)
                    .map(|(reason, n)| (*reason, n.load(Relaxed)))
                    .collect(),
                default_route: stats.tls_default_route.load(Relaxed),
                unmatched: stats.tls_unmatched.load(Relaxed),
            });
            let routes = w
                .routes
                .iter()
                .map(|r| {
                    let pool = PoolFigures::read(&r.pool);
                    RouteView {
                        name: r.name.clone(),
                        server_names: r.server_names.clone(),
                        alpn: r.alpn.clone(),
                        connections: r.stats.connections.load(Relaxed),
                        strategy: pool.strategy,
                        backend_changes: pool.backend_changes,
                        panic: pool.panic,
                        ejections: pool.ejections,
                        backends: pool.backends,
                        dns: pool.dns,
                    }
                })
                .collect();
            ListenerView {
                name: w.name.clone(),
                listen: w.listen.to_string(),
                strategy: pool.strategy,
                accepted: stats.accepted.load(Relaxed),
                rejected: stats.rejected.load(Relaxed),
                active: stats.active.load(Relaxed),
                failures: Failures::read(stats),
                proxy_header_errors: stats.proxy_header_errors.load(Relaxed),
                sent_bytes: stats.sent_bytes.snapshot(),
                received_bytes: stats.received_bytes.snapshot(),
                backend_changes: pool.backend_changes,
                panic: pool.panic,
                ejections: pool.ejections,
                backends: pool.backends,
                dns: pool.dns,
                tls,
                routes,
                udp,
            }
        })
        .collect()
}

/// One pool's figures, as listeners and routes show them.
struct PoolFigures {
    strategy: String,
    backend_changes: BackendChanges,
    panic: PanicView,
    ejections: EjectionView,
    backends: Vec<BackendView>,
    dns: Vec<DnsView>,
}

impl PoolFigures {
    fn read(pool: &Pool) -> Self {
        let state = pool.load();
        let changes = &pool.stats;
        let kind = state.config.active_check().kind();
        let with_agent = state.config.health.agent.is_some();
        let mut backends: Vec<BackendView> = Vec::new();
        for b in &state.backends {
            // The same backend listed twice would repeat a series.
            if backends.iter().any(|seen| seen.name == b.name()) {
                continue;
            }
            let up = b.is_up();
            let connect_time = b.stats.connect_time.snapshot();
            backends.push(BackendView {
                name: b.name().to_string(),
                address: b.addr().to_string(),
                source: b.source().map(str::to_string),
                up,
                weight: b.configured_weight(),
                active: b.stats.active.load(Relaxed),
                total: b.stats.total.load(Relaxed),
                connect_failures: b.stats.connect_failures.load(Relaxed),
                sent_bytes: b.stats.bytes_in.load(Relaxed),
                received_bytes: b.stats.bytes_out.load(Relaxed),
                check_latency_seconds: b.stats.check_latency_us.load(Relaxed) as f64 / 1e6,
                idle_timeouts: b.stats.idle_timeouts.load(Relaxed),
                max_age_closes: b.stats.max_age_closes.load(Relaxed),
                evicted: b.stats.evicted.load(Relaxed),
                backup: b.is_backup(),
                effective_weight: f64::from(b.weight()) * b.ramp(state.config.slow_start),
                admin_state: b.admin_state(),
                health: if up { Health::Up } else { Health::Down },
                ejected: b.is_failing(),
                state: b.state(),
                health_closes: b.stats.health_closes.load(Relaxed),
                detail: HealthDetail::read(b, kind, with_agent),
                connect_p50_seconds: connect_time.quantile(0.5),
                connect_p99_seconds: connect_time.quantile(0.99),
                connect_time,
                queue_wait: b.stats.queue_wait.snapshot(),
                duration: b.stats.duration.snapshot(),
            });
        }
        let resolutions = pool.resolutions();
        let dns = state
            .config
            .backends
            .iter()
            .filter(|b| is_group(b))
            .map(|group| DnsView {
                name: group.name.clone(),
                members: state
                    .backends
                    .iter()
                    .filter(|b| b.source() == Some(group.name.as_str()))
                    .count(),
                resolutions: resolutions
                    .iter()
                    .find(|(n, _)| *n == group.name)
                    .map(|(_, r)| r.by_result().into_iter().collect())
                    .unwrap_or_default(),
            })
            .collect();
        PoolFigures {
            strategy: state.config.strategy.to_string(),
            backend_changes: BackendChanges {
                added: changes.added.load(Relaxed),
                removed: changes.removed.load(Relaxed),
                updated: changes.updated.load(Relaxed),
            },
            panic: PanicView {
                active: pool.panic().is_active(),
                entered: pool.panic().entered(),
            },
            ejections: EjectionView {
                ejected: changes.ejections.load(Relaxed),
                capped: changes.ejections_capped.load(Relaxed),
            },
            backends,
            dns,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::{ServiceConfig, parse_backend};

    /// A time histogram's snapshot with these values, in microseconds.
    pub(crate) fn histogram(micros: &[u64]) -> HistogramSnapshot {
        let h = crate::stats::histogram::TimeHistogram::default();
        micros.iter().for_each(|&v| h.record_value(v));
        h.snapshot()
    }

    /// A size histogram's snapshot with these values, in bytes.
    pub(crate) fn sizes(bytes: &[u64]) -> HistogramSnapshot {
        let h = crate::stats::histogram::SizeHistogram::default();
        bytes.iter().for_each(|&v| h.record_value(v));
        h.snapshot()
    }

    /// One listener with a ready, healthy backend (with a name that needs
    /// escaping) and a draining, down, ejected one.
    pub(crate) fn sample() -> Vec<ListenerView> {
        let ready = BackendView {
            name: "we\"ird\\name\n".into(),
            address: "127.0.0.1:8081".into(),
            source: None,
            up: true,
            weight: 2,
            active: 1,
            total: 5,
            connect_failures: 6,
            sent_bytes: 100,
            received_bytes: 200,
            check_latency_seconds: 0.00025,
            idle_timeouts: 3,
            max_age_closes: 9,
            evicted: 4,
            backup: false,
            effective_weight: 0.5,
            admin_state: AdminState::Ready,
            health: Health::Up,
            ejected: false,
            state: AdminState::Drain,
            health_closes: 2,
            detail: HealthDetail {
                check: Some(CheckView {
                    kind: "http",
                    result: CheckResult::Passed,
                    reason: "HTTP 200".into(),
                    at: "2026-05-20T10:00:01.000Z".into(),
                    seconds: 0.00025,
                }),
                health_since: "2026-05-20T09:00:00.000Z".into(),
                health_reason: "joined the pool".into(),
                agent: Some(AgentView {
                    result: CheckResult::Passed,
                    reason: "drain 50%".into(),
                    at: "2026-05-20T10:00:00.500Z".into(),
                    state: AdminState::Drain,
                    down: false,
                    weight_percent: 50,
                    maxconn: None,
                }),
            },
            connect_p50_seconds: Some(0.00075),
            connect_p99_seconds: Some(0.0025),
            connect_time: histogram(&[300, 700, 2_000]),
            queue_wait: histogram(&[0, 0]),
            duration: histogram(&[1_500_000]),
        };
        let draining = BackendView {
            name: "127.0.0.1:8082".into(),
            address: "127.0.0.1:8082".into(),
            source: Some("web.example:8082".into()),
            up: false,
            admin_state: AdminState::Drain,
            health: Health::Down,
            ejected: true,
            backup: true,
            state: AdminState::Drain,
            detail: HealthDetail {
                check: Some(CheckView {
                    kind: "http",
                    result: CheckResult::Failed,
                    reason: "HTTP 503 (expected 2xx,3xx)".into(),
                    at: "2026-05-20T10:00:01.000Z".into(),
                    seconds: 0.001,
                }),
                health_since: "2026-05-20T09:59:00.000Z".into(),
                health_reason: "HTTP 503 (expected 2xx,3xx)".into(),
                agent: None,
            },
            connect_time: histogram(&[]),
            queue_wait: histogram(&[]),
            duration: histogram(&[]),
            ..BackendView::default()
        };
        vec![ListenerView {
            name: "web".into(),
            listen: "127.0.0.1:8080".into(),
            strategy: "round-robin".into(),
            accepted: 7,
            rejected: 2,
            active: 1,
            failures: Failures {
                bad_gateway: 3,
                unavailable: 4,
                unavailable_by_reason: [1, 3, 0, 0, 0, 0],
            },
            proxy_header_errors: 5,
            sent_bytes: sizes(&[10, 100_000]),
            received_bytes: sizes(&[2_000_000_000]),
            backend_changes: BackendChanges {
                added: 8,
                removed: 9,
                updated: 10,
            },
            panic: PanicView::default(),
            ejections: EjectionView {
                ejected: 1,
                capped: 0,
            },
            backends: vec![ready, draining],
            dns: vec![DnsView {
                name: "web.example:8082".into(),
                members: 1,
                resolutions: [("ok", 11), ("servfail", 2)].into_iter().collect(),
            }],
            tls: None,
            routes: Vec::new(),
            udp: None,
        }]
    }

    #[test]
    fn snapshot_reads_admin_state_health_ejection_and_changes() {
        let mut drained = parse_backend("127.0.0.1:9").unwrap();
        drained.admin_state = AdminState::Drain;
        let mut config = ServiceConfig::new("127.0.0.1:0".parse().unwrap(), vec![drained]);
        config.max_fails = 1;
        config.fail_timeout = std::time::Duration::from_secs(3600);
        let pool = Arc::new(Pool::new("test", config.clone()));
        let watched = Watched {
            name: "test".into(),
            listen: "127.0.0.1:8080".parse().unwrap(),
            pool: pool.clone(),
            stats: Arc::new(ListenerStats::default()),
            routes: Vec::new(),
        };

        let view = snapshot(std::slice::from_ref(&watched));
        let b = &view[0].backends[0];
        assert_eq!(b.admin_state, AdminState::Drain);
        assert_eq!((b.up, b.health, b.ejected), (true, Health::Up, false));
        // The first members are not changes.
        assert_eq!(view[0].backend_changes, BackendChanges::default());

        pool.load().connect_failed(0, "test");
        config.backends.push(parse_backend("127.0.0.1:10").unwrap());
        pool.reconfigure(config);
        let view = snapshot(&[watched]);
        let b = &view[0].backends[0];
        assert_eq!((b.up, b.health, b.ejected), (false, Health::Down, true));
        assert_eq!(view[0].backends.len(), 2);
        assert_eq!(view[0].backend_changes.added, 1);
    }
}
