//! `/metrics`: the snapshot in the Prometheus text exposition format 0.0.4,
//! for scrapers.
//!
//! Written by hand rather than with `prometheus-client`: the counters are
//! atomics in [`crate::stats`] that the data path writes and this module
//! only reads at scrape time. The crate's own `Counter`/`Gauge` would put a
//! second set of atomics on the data path; the alternative, a custom
//! `Collector` that copies our values out per scrape, still needs every
//! name, help text, type and label below, plus a `Registry` built per scrape,
//! so it would not be shorter, and it brings four crates (a derive macro and
//! `parking_lot` among them) for what is `name{labels} value` lines.
//!
//! Every listener series has the labels `listener` (the listener's name,
//! as in `/status`, the access log and the API: its `name`, by default its
//! bound address) and `listen` (the bound address, e.g. `127.0.0.1:8080`);
//! every backend series has them too, and `backend` (the backend as
//! configured, e.g. `127.0.0.1:8081`).
//!
//! | name | type | meaning |
//! |---|---|---|
//! | `tcplb_backend_up` | gauge | 1 when the backend's health checks pass, else 0 |
//! | `tcplb_backend_admin_state` | gauge | the operator's state: label `state` = `ready`, `drain` or `maintenance`; 1 for the current one, 0 for the others |
//! | `tcplb_backend_active_connections` | gauge | connections open to the backend now |
//! | `tcplb_backend_connections_total` | counter | connections established to the backend |
//! | `tcplb_backend_connect_failures_total` | counter | failed connect attempts (refused, timed out) |
//! | `tcplb_backend_sent_bytes_total` | counter | bytes from clients to the backend ("bytes in") |
//! | `tcplb_backend_received_bytes_total` | counter | bytes from the backend to clients ("bytes out") |
//! | `tcplb_backend_check_latency_seconds` | gauge | duration of the last successful health check |
//! | `tcplb_backend_idle_timeouts_total` | counter | connections closed by `--idle-timeout` |
//! | `tcplb_backend_max_age_closes_total` | counter | connections closed by `--max-connection-age` |
//! | `tcplb_backend_evicted_total` | counter | connections closed when an operator's drain (or remove) deadline passed, or a change of health closed them |
//! | `tcplb_backend_effective_weight` | gauge | the weight it takes now: its weight, less while slow start ramps it up |
//! | `tcplb_backend_backup` | gauge | 1 for a backup backend (used only while no primary is usable), else 0 |
//! | `tcplb_backend_state` | gauge | the state in force (the operator's, or the agent's while the operator says ready): label `state`, 1 for the current one |
//! | `tcplb_backend_last_check_passed` | gauge | 0 when the backend's last active check failed, else 1 (also before the first) |
//! | `tcplb_backend_health_closes_total` | counter | connections closed because the backend's health changed (`on_down`, `on_backup_up`) |
//! | `tcplb_backend_agent_weight_percent` | gauge | the share of its weight the backend's agent asks for (100 without an agent) |
//! | `tcplb_backend_connect_seconds` | histogram | time to connect, per attempt that succeeded (failed attempts are `connect_failures_total`) |
//! | `tcplb_backend_queue_wait_seconds` | histogram | time a client the backend took had waited for a slot (`--max-conns`, `maxconn`), connecting excluded |
//! | `tcplb_backend_connection_duration_seconds` | histogram | how long connections to the backend lasted, connected to closed |
//! | `tcplb_listener_connection_sent_bytes` | histogram | bytes each connection sent to its backend (connections that reached one) |
//! | `tcplb_listener_connection_received_bytes` | histogram | bytes each connection received from its backend |
//! | `tcplb_listener_accepted_total` | counter | client connections accepted (refused ones included) |
//! | `tcplb_listener_rejected_total` | counter | clients refused by access control or limits |
//! | `tcplb_listener_active_connections` | gauge | client connections open now |
//! | `tcplb_listener_proxy_header_errors_total` | counter | clients closed for a bad or missing PROXY header |
//! | `tcplb_listener_failures_total` | counter | clients answered 502/503 (or closed); labels `code` = `502` or `503` and `reason`: for 502 `connect_failed`; for 503 `no_backend`, or a limit (overload): `queue_timeout` (`--max-conns` or `maxconn`), `per_ip_connections`, `per_ip_rate`, `per_ip_table_full`, `out_of_descriptors` |
//! | `tcplb_pool_backend_changes_total` | counter | membership changes applied to the listener's pool; label `change` = `added`, `removed` or `updated` |
//! | `tcplb_pool_panic` | gauge | 1 while the pool is in panic (`panic_threshold`): balancing over every ready primary |
//! | `tcplb_pool_panics_total` | counter | times the pool entered panic |
//! | `tcplb_pool_ejections_total` | counter | passive ejections; label `result` = `ejected`, or `capped` (refused: `max_ejection_percent` of the pool was out) |
//! | `tcplb_admin_changes_total` | counter | control API requests that were applied; label `action` = `drain`, `maintenance`, `ready`, `weight`, `add`, `remove`, `close`, `ready_on` or `ready_off` |
//! | `tcplb_admin_rejected_total` | counter | control API requests refused, nothing changed; label `reason` = `forbidden` (403), `bad_request` (400), `not_found` (404), `method_not_allowed` (405), `conflict` (409), `too_large` (413), `unavailable` or `timeout` (408, a body not complete in time) |
//! | `tcplb_state_file_write_failures_total` | counter | state-file writes that failed (`--state-file`); the change still applied in memory |
//! | `tcplb_admin_connections_total` | counter | connections accepted by the admin endpoint (TCP and Unix socket), refused ones included |
//! | `tcplb_admin_connections_active` | gauge | admin endpoint connections open now |
//! | `tcplb_admin_connections_dropped_total` | counter | admin connections closed unanswered; label `reason` = `over_limit` (every slot answering; on the probe lane, a path other than `/ready` and `/live` answered 503), `evicted` (silent, made room for a newer one), `head_timeout`, `timeout` (whole connection) |
//! | `tcplb_admin_connections_probe_lane_total` | counter | admin connections that found every slot answering and were served `/ready` and `/live` only |
//! | `tcplb_ready` | gauge | 1 while `GET /ready` answers 200, 0 while 503 |
//! | `tcplb_not_ready` | gauge | 1 for each reason `/ready` answers 503 now; label `reason` = `starting`, `shutting_down`, `operator` or `no_usable_backend` |
//! | `tcplb_drain_spread_closed_total` | counter | connections still open when the drain's last window began, closed one after another over it |
//! | `tcplb_upgrade_connections_moved_total` | counter | established connections handed to the new process of an upgrade |
//! | `tcplb_upgrade_connections_not_moved_total` | counter | connections that stayed during an upgrade's move; label `reason` = `tls`, `setup`, `refused` or `failed` |
//! | `tcplb_upgrade_connections_taken_over_total` | counter | established connections taken over from the old process |
//! | `tcplb_upgrade_connections_refused_total` | counter | offered connections this process refused; label `reason` = `unknown_listener`, `unknown_route`, `unknown_backend`, `shutting_down` or `malformed` |
//! | `tcplb_upgrade_move_pause_seconds` | histogram | how long each connection taken over was paused while it moved |
//!
//! | `tcplb_dns_resolutions_total` | counter | lookups of a backend name DNS discovery keeps current; labels `name` (as configured) and `result` = `ok`, `nxdomain`, `servfail`, `empty`, `timeout` or `error` |
//! | `tcplb_route_connections_total` | counter | clients whose TLS ClientHello chose the route; labels `listener`, `route` |
//! | `tcplb_listener_tls_rejected_total` | counter | clients of a listener with routes closed without a valid ClientHello; label `reason` = `not_tls`, `malformed`, `too_large`, `timeout` or `closed` |
//! | `tcplb_listener_tls_default_route_total` | counter | ClientHellos no route took, sent to the listener's own backends |
//! | `tcplb_listener_tls_unmatched_total` | counter | ClientHellos no route took, on a listener without default: answered `unrecognized_name` |
//! | `tcplb_udp_datagrams_total` | counter | datagrams a UDP listener forwarded; label `direction` = `to_backend` or `to_client` |
//! | `tcplb_udp_bytes_total` | counter | payload bytes of those datagrams; label `direction` |
//! | `tcplb_udp_dropped_total` | counter | datagrams a UDP listener dropped; label `reason` = `denied`, `per_ip_sessions`, `per_ip_rate`, `per_ip_table_full`, `max_sessions`, `too_large`, `no_backend`, `backend_unreachable`, `send_failed`, `reply_failed` or `out_of_descriptors` |
//! | `tcplb_worker_connections` | gauge | client connections open on each worker thread; label `worker` |
//! | `tcplb_worker_handoffs_total` | counter | clients handed from the worker that accepted them to a less loaded one |
//!
//! The backend (histograms included), pool-change and DNS series of a TLS route's pool carry a
//! `route` label besides `listener`. The admin and state-file families
//! have no `listener` label: they are the process's.
//!
//! Byte counters move as bytes are delivered, not only when a connection
//! closes. Histograms have `_bucket{le}` (cumulative), `_sum` and `_count`
//! series; durations in seconds with buckets from 100 µs to 60 s, sizes in
//! bytes with buckets of powers of 4 from 64 B to 1 GiB (see
//! [`crate::stats::histogram`]).

pub mod tls;

use std::fmt::Write as _;

use std::sync::atomic::Ordering::Relaxed;

use super::ready::NotReady;
use super::view::{
    BackendChanges, BackendView, DnsView, EjectionView, ListenerView, PanicView, TlsView, UdpView,
};
use crate::config::AdminState;
use crate::pool::health::CheckResult;
use crate::stats::histogram::HistogramSnapshot;
use crate::stats::{
    AccessLogStats, AdminConnectionStats, ControlStats, DrainStats, MoveStats, NotMoved, Refusal,
    WorkerStats,
};

/// Every admin state, in the order their series are written.
const ADMIN_STATES: [AdminState; 3] = [
    AdminState::Ready,
    AdminState::Drain,
    AdminState::Maintenance,
];

/// The whole exposition for `listeners`.
pub fn render_metrics(listeners: &[ListenerView]) -> String {
    let mut out = String::new();
    // Every pool's backends, each series named by its pool's labels:
    // `listener`, plus `route` for a TLS route's pool.
    let pools = pool_labels(listeners);
    let backends = || {
        pools.iter().flat_map(|(labels, pool)| {
            pool.backends
                .iter()
                .map(move |b| (labels.as_str(), label(&b.name), b))
        })
    };

    type BackendValue = fn(&BackendView) -> String;
    let backend_families: [(&str, &str, &str, BackendValue); 15] = [
        (
            "tcplb_backend_up",
            "gauge",
            "Whether the backend is healthy (1) or not (0).",
            |b| u8::from(b.up).to_string(),
        ),
        (
            "tcplb_backend_active_connections",
            "gauge",
            "Connections open to the backend now.",
            |b| b.active.to_string(),
        ),
        (
            "tcplb_backend_connections_total",
            "counter",
            "Connections established to the backend.",
            |b| b.total.to_string(),
        ),
        (
            "tcplb_backend_connect_failures_total",
            "counter",
            "Failed connect attempts to the backend.",
            |b| b.connect_failures.to_string(),
        ),
        (
            "tcplb_backend_sent_bytes_total",
            "counter",
            "Bytes from clients to the backend.",
            |b| b.sent_bytes.to_string(),
        ),
        (
            "tcplb_backend_received_bytes_total",
            "counter",
            "Bytes from the backend to clients.",
            |b| b.received_bytes.to_string(),
        ),
        (
            "tcplb_backend_check_latency_seconds",
            "gauge",
            "Duration of the last successful health check.",
            |b| b.check_latency_seconds.to_string(),
        ),
        (
            "tcplb_backend_idle_timeouts_total",
            "counter",
            "Connections closed because no bytes moved for the idle timeout.",
            |b| b.idle_timeouts.to_string(),
        ),
        (
            "tcplb_backend_max_age_closes_total",
            "counter",
            "Connections closed at the maximum connection age.",
            |b| b.max_age_closes.to_string(),
        ),
        (
            "tcplb_backend_evicted_total",
            "counter",
            "Connections closed when an operator's drain deadline passed or a change of health closed them.",
            |b| b.evicted.to_string(),
        ),
        (
            "tcplb_backend_effective_weight",
            "gauge",
            "The weight the backend takes now (less than its weight during slow start).",
            |b| b.effective_weight.to_string(),
        ),
        (
            "tcplb_backend_backup",
            "gauge",
            "Whether the backend is a backup (1), used only while no primary is usable.",
            |b| u8::from(b.backup).to_string(),
        ),
        (
            "tcplb_backend_last_check_passed",
            "gauge",
            "Whether the backend's last active check failed (0) or not (1).",
            |b| {
                let failed = b
                    .detail
                    .check
                    .as_ref()
                    .is_some_and(|c| c.result == CheckResult::Failed);
                u8::from(!failed).to_string()
            },
        ),
        (
            "tcplb_backend_health_closes_total",
            "counter",
            "Connections closed because the backend's health changed (on_down, on_backup_up).",
            |b| b.health_closes.to_string(),
        ),
        (
            "tcplb_backend_agent_weight_percent",
            "gauge",
            "The share of its weight the backend's agent asks for, in percent (100 without one).",
            |b| {
                b.detail
                    .agent
                    .as_ref()
                    .map_or(100, |a| a.weight_percent)
                    .to_string()
            },
        ),
    ];
    for (name, kind, help, value) in backend_families {
        family(&mut out, name, kind, help);
        for (pool, backend, b) in backends() {
            let _ = writeln!(out, "{name}{{{pool},backend=\"{backend}\"}} {}", value(b));
        }
    }

    let name = "tcplb_backend_admin_state";
    family(
        &mut out,
        name,
        "gauge",
        "The operator's state for the backend: 1 for the current state, 0 for the others.",
    );
    for (pool, backend, b) in backends() {
        for state in ADMIN_STATES {
            let _ = writeln!(
                out,
                "{name}{{{pool},backend=\"{backend}\",state=\"{state}\"}} {}",
                u8::from(b.admin_state == state)
            );
        }
    }

    let name = "tcplb_backend_state";
    family(
        &mut out,
        name,
        "gauge",
        "The state in force (the operator's, or the agent's while the operator says ready): 1 for it, 0 for the others.",
    );
    for (pool, backend, b) in backends() {
        for state in ADMIN_STATES {
            let _ = writeln!(
                out,
                "{name}{{{pool},backend=\"{backend}\",state=\"{state}\"}} {}",
                u8::from(b.state == state)
            );
        }
    }

    type BackendHistogram = fn(&BackendView) -> &HistogramSnapshot;
    let backend_histograms: [(&str, &str, BackendHistogram); 3] = [
        (
            "tcplb_backend_connect_seconds",
            "Time to connect to the backend, per attempt that succeeded.",
            |b| &b.connect_time,
        ),
        (
            "tcplb_backend_queue_wait_seconds",
            "Time clients waited for a slot before they were connected to the backend.",
            |b| &b.queue_wait,
        ),
        (
            "tcplb_backend_connection_duration_seconds",
            "How long connections to the backend lasted, from connected to closed.",
            |b| &b.duration,
        ),
    ];
    for (name, help, value) in backend_histograms {
        family(&mut out, name, "histogram", help);
        for (pool, backend, b) in backends() {
            let labels = format!("{pool},backend=\"{backend}\"");
            histogram(&mut out, name, &labels, value(b));
        }
    }

    type ListenerHistogram = fn(&ListenerView) -> &HistogramSnapshot;
    let listener_histograms: [(&str, &str, ListenerHistogram); 2] = [
        (
            "tcplb_listener_connection_sent_bytes",
            "Bytes each connection sent from the client to its backend.",
            |l| &l.sent_bytes,
        ),
        (
            "tcplb_listener_connection_received_bytes",
            "Bytes each connection received from its backend for the client.",
            |l| &l.received_bytes,
        ),
    ];
    for (name, help, value) in listener_histograms {
        family(&mut out, name, "histogram", help);
        for l in listeners {
            histogram(&mut out, name, &listener_labels(l), value(l));
        }
    }

    type ListenerValue = fn(&ListenerView) -> u64;
    let listener_families: [(&str, &str, &str, ListenerValue); 4] = [
        (
            "tcplb_listener_accepted_total",
            "counter",
            "Client connections accepted, refused ones included.",
            |l| l.accepted,
        ),
        (
            "tcplb_listener_rejected_total",
            "counter",
            "Client connections refused by access control or limits.",
            |l| l.rejected,
        ),
        (
            "tcplb_listener_active_connections",
            "gauge",
            "Client connections open now.",
            |l| l.active,
        ),
        (
            "tcplb_listener_proxy_header_errors_total",
            "counter",
            "Clients closed for a bad or missing PROXY protocol header.",
            |l| l.proxy_header_errors,
        ),
    ];
    for (name, kind, help, value) in listener_families {
        family(&mut out, name, kind, help);
        for l in listeners {
            let _ = writeln!(out, "{name}{{{}}} {}", listener_labels(l), value(l));
        }
    }

    let name = "tcplb_listener_failures_total";
    family(
        &mut out,
        name,
        "counter",
        "Clients answered 502 (every connect failed) or 503 (none to try, or over a limit), by reason.",
    );
    for l in listeners {
        let f = &l.failures;
        let labels = listener_labels(l);
        let _ = writeln!(
            out,
            "{name}{{{labels},code=\"502\",reason=\"connect_failed\"}} {}",
            f.bad_gateway
        );
        for (why, count) in f.by_reason() {
            let reason = why.name();
            let _ = writeln!(
                out,
                "{name}{{{labels},code=\"503\",reason=\"{reason}\"}} {count}"
            );
        }
    }

    udp_families(&mut out, listeners);

    let name = "tcplb_pool_backend_changes_total";
    family(
        &mut out,
        name,
        "counter",
        "Backends added to, removed from or updated in the listener's pool.",
    );
    for (pool, figures) in &pools {
        let c = figures.backend_changes;
        for (change, count) in [
            ("added", c.added),
            ("removed", c.removed),
            ("updated", c.updated),
        ] {
            let _ = writeln!(out, "{name}{{{pool},change=\"{change}\"}} {count}");
        }
    }

    let name = "tcplb_pool_panic";
    family(
        &mut out,
        name,
        "gauge",
        "Whether the pool is in panic (1): balancing over every ready primary, healthy or not.",
    );
    for (pool, figures) in &pools {
        let _ = writeln!(out, "{name}{{{pool}}} {}", u8::from(figures.panic.active));
    }
    let name = "tcplb_pool_panics_total";
    family(&mut out, name, "counter", "Times the pool entered panic.");
    for (pool, figures) in &pools {
        let _ = writeln!(out, "{name}{{{pool}}} {}", figures.panic.entered);
    }
    let name = "tcplb_pool_ejections_total";
    family(
        &mut out,
        name,
        "counter",
        "Passive ejections made (ejected) and refused by max_ejection_percent (capped).",
    );
    for (pool, figures) in &pools {
        let e = figures.ejections;
        for (result, count) in [("ejected", e.ejected), ("capped", e.capped)] {
            let _ = writeln!(out, "{name}{{{pool},result=\"{result}\"}} {count}");
        }
    }

    let name = "tcplb_dns_resolutions_total";
    family(
        &mut out,
        name,
        "counter",
        "Lookups of a backend name kept current by DNS discovery, by result.",
    );
    for (pool, figures) in &pools {
        for d in figures.dns {
            for (result, count) in &d.resolutions {
                let _ = writeln!(
                    out,
                    "{name}{{{pool},name=\"{}\",result=\"{result}\"}} {count}",
                    label(&d.name)
                );
            }
        }
    }

    render_routes(&mut out, listeners);
    out
}

/// One pool's series as the renderer needs them.
struct PoolSeries<'a> {
    backends: &'a [BackendView],
    backend_changes: &'a BackendChanges,
    dns: &'a [DnsView],
    panic: &'a PanicView,
    ejections: &'a EjectionView,
}

/// Every pool with the labels that name it: a listener's own pool by
/// `listener`, a TLS route's by `listener` and `route`.
fn pool_labels(listeners: &[ListenerView]) -> Vec<(String, PoolSeries<'_>)> {
    let mut pools = Vec::new();
    for l in listeners {
        let listener = listener_labels(l);
        let own = PoolSeries {
            backends: &l.backends,
            backend_changes: &l.backend_changes,
            dns: &l.dns,
            panic: &l.panic,
            ejections: &l.ejections,
        };
        pools.push((listener.clone(), own));
        for r in &l.routes {
            let labels = format!("{listener},route=\"{}\"", label(&r.name));
            let series = PoolSeries {
                backends: &r.backends,
                backend_changes: &r.backend_changes,
                dns: &r.dns,
                panic: &r.panic,
                ejections: &r.ejections,
            };
            pools.push((labels, series));
        }
    }
    pools
}

/// The families of listeners with TLS routes: connections per route, and
/// what became of ClientHellos no route took.
fn render_routes(out: &mut String, listeners: &[ListenerView]) {
    let routing = || listeners.iter().filter_map(|l| Some((l, l.tls.as_ref()?)));
    let name = "tcplb_route_connections_total";
    family(
        out,
        name,
        "counter",
        "Clients whose TLS ClientHello chose the route.",
    );
    for l in listeners {
        for r in &l.routes {
            let _ = writeln!(
                out,
                "{name}{{{},route=\"{}\"}} {}",
                listener_labels(l),
                label(&r.name),
                r.connections
            );
        }
    }
    let name = "tcplb_listener_tls_rejected_total";
    family(
        out,
        name,
        "counter",
        "Clients of a routing listener closed without a valid ClientHello, by reason.",
    );
    for (l, tls) in routing() {
        for (reason, count) in &tls.rejected {
            let _ = writeln!(
                out,
                "{name}{{{},reason=\"{reason}\"}} {count}",
                listener_labels(l)
            );
        }
    }
    type TlsValue = fn(&TlsView) -> u64;
    let families: [(&str, &str, TlsValue); 2] = [
        (
            "tcplb_listener_tls_default_route_total",
            "Clients whose ClientHello matched no route and went to the listener's backends.",
            |t| t.default_route,
        ),
        (
            "tcplb_listener_tls_unmatched_total",
            "Clients whose ClientHello matched no route, with no default: unrecognized_name.",
            |t| t.unmatched,
        ),
    ];
    for (name, help, value) in families {
        family(out, name, "counter", help);
        for (l, tls) in routing() {
            let _ = writeln!(out, "{name}{{{}}} {}", listener_labels(l), value(tls));
        }
    }
}

/// A UDP listener's datagrams, bytes and drops (no series for TCP ones).
fn udp_families(out: &mut String, listeners: &[ListenerView]) {
    let udp = || {
        listeners
            .iter()
            .filter_map(|l| l.udp.as_ref().map(|u| (l, u)))
    };
    type Each = fn(&UdpView) -> [(&'static str, u64); 2];
    let families: [(&str, &str, Each); 2] = [
        (
            "tcplb_udp_datagrams_total",
            "Datagrams a UDP listener forwarded, by direction.",
            |u| {
                [
                    ("to_backend", u.datagrams_to_backends),
                    ("to_client", u.datagrams_to_clients),
                ]
            },
        ),
        (
            "tcplb_udp_bytes_total",
            "Payload bytes of the datagrams a UDP listener forwarded, by direction.",
            |u| {
                [
                    ("to_backend", u.bytes_to_backends),
                    ("to_client", u.bytes_to_clients),
                ]
            },
        ),
    ];
    for (name, help, each) in families {
        family(out, name, "counter", help);
        for (l, u) in udp() {
            for (direction, n) in each(u) {
                let _ = writeln!(
                    out,
                    "{name}{{{},direction=\"{direction}\"}} {n}",
                    listener_labels(l)
                );
            }
        }
    }
    let name = "tcplb_udp_dropped_total";
    family(
        out,
        name,
        "counter",
        "Datagrams a UDP listener dropped, by reason.",
    );
    for (l, u) in udp() {
        for (reason, n) in &u.dropped {
            let _ = writeln!(
                out,
                "{name}{{{},reason=\"{reason}\"}} {n}",
                listener_labels(l)
            );
        }
    }
}

/// The control API's families: changes by action, refusals by reason,
/// failed state-file writes.
pub fn render_control(stats: &ControlStats) -> String {
    let mut out = String::new();
    let name = "tcplb_admin_changes_total";
    family(
        &mut out,
        name,
        "counter",
        "Control API requests applied, by action.",
    );
    for (action, count) in ControlStats::ACTIONS.iter().zip(&stats.changes) {
        let _ = writeln!(out, "{name}{{action=\"{action}\"}} {}", count.load(Relaxed));
    }
    let name = "tcplb_admin_rejected_total";
    family(
        &mut out,
        name,
        "counter",
        "Control API requests refused (nothing changed), by reason.",
    );
    for (reason, count) in ControlStats::REASONS.iter().zip(&stats.rejected) {
        let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {}", count.load(Relaxed));
    }
    single(
        &mut out,
        "tcplb_state_file_write_failures_total",
        "counter",
        "State-file writes that failed; the change still applied in memory.",
        stats.state_write_failures.load(Relaxed),
    );

    let connections = &stats.connections;
    single(
        &mut out,
        "tcplb_admin_connections_total",
        "counter",
        "Connections accepted by the admin endpoint, refused ones included.",
        connections.accepted.load(Relaxed),
    );
    single(
        &mut out,
        "tcplb_admin_connections_active",
        "gauge",
        "Admin endpoint connections open now.",
        connections.active.load(Relaxed),
    );
    let name = "tcplb_admin_connections_dropped_total";
    family(
        &mut out,
        name,
        "counter",
        "Admin endpoint connections closed without an answer, by reason.",
    );
    for (reason, count) in AdminConnectionStats::REASONS
        .iter()
        .zip(&connections.dropped)
    {
        let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {}", count.load(Relaxed));
    }
    single(
        &mut out,
        "tcplb_admin_connections_probe_lane_total",
        "counter",
        "Admin connections that found every slot answering and were served /ready and /live only.",
        connections.probe_lane.load(Relaxed),
    );
    out
}

/// The end of a drain: connections closed in its spread.
pub fn render_drain(stats: &DrainStats) -> String {
    let mut out = String::new();
    single(
        &mut out,
        "tcplb_drain_spread_closed_total",
        "counter",
        "Connections still open when the drain's last window began, closed one after another over it.",
        stats.spread_closed.load(Relaxed),
    );
    render_moves(&mut out, &stats.moves);
    out
}

/// Connections moved on binary upgrades: handed to the new process, not
/// moved by why, taken over, refused by why, and the pause each saw.
fn render_moves(out: &mut String, moves: &MoveStats) {
    single(
        out,
        "tcplb_upgrade_connections_moved_total",
        "counter",
        "Established connections handed to the new process of an upgrade (it acknowledged them).",
        moves.moved_out.load(Relaxed),
    );
    let name = "tcplb_upgrade_connections_not_moved_total";
    family(
        out,
        name,
        "counter",
        "Connections that stayed in this process during an upgrade's move, by reason.",
    );
    for why in NotMoved::ALL {
        let count = moves.not_moved[why as usize].load(Relaxed);
        let _ = writeln!(out, "{name}{{reason=\"{}\"}} {count}", why.name());
    }
    single(
        out,
        "tcplb_upgrade_connections_taken_over_total",
        "counter",
        "Established connections taken over from the old process of an upgrade.",
        moves.moved_in.load(Relaxed),
    );
    let name = "tcplb_upgrade_connections_refused_total";
    family(
        out,
        name,
        "counter",
        "Connections the old process of an upgrade offered that this one refused, by reason.",
    );
    for why in Refusal::ALL {
        let count = moves.refused[why as usize].load(Relaxed);
        let _ = writeln!(out, "{name}{{reason=\"{}\"}} {count}", why.name());
    }
    let name = "tcplb_upgrade_move_pause_seconds";
    family(
        out,
        name,
        "histogram",
        "How long each connection taken over was paused: from the old process stopping it to this one piping it.",
    );
    let h = moves.pause.snapshot();
    for (bound, count) in h.cumulative() {
        let _ = match bound {
            Some(le) => writeln!(out, "{name}_bucket{{le=\"{le}\"}} {count}"),
            None => writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}"),
        };
    }
    let _ = writeln!(out, "{name}_sum {}", h.sum_in_units());
    let _ = writeln!(out, "{name}_count {}", h.count());
}

/// What `/ready` says now: 1 or 0, and each reason it would give.
pub fn render_readiness(reasons: &[NotReady]) -> String {
    let mut out = String::new();
    single(
        &mut out,
        "tcplb_ready",
        "gauge",
        "1 while GET /ready answers 200, 0 while it answers 503.",
        u8::from(reasons.is_empty()),
    );
    let name = "tcplb_not_ready";
    family(
        &mut out,
        name,
        "gauge",
        "1 for each reason GET /ready answers 503 now, by reason.",
    );
    for reason in NotReady::ALL {
        let holds = u8::from(reasons.contains(&reason));
        let _ = writeln!(out, "{name}{{reason=\"{}\"}} {holds}", reason.label());
    }
    out
}

/// One histogram's `_bucket` (cumulative, `le` in the rendered unit, then
/// `+Inf`), `_sum` and `_count` lines; `labels` are already escaped.
fn histogram(out: &mut String, name: &str, labels: &str, h: &HistogramSnapshot) {
    for (bound, count) in h.cumulative() {
        let _ = match bound {
            Some(le) => writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {count}"),
            None => writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}"),
        };
    }
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum_in_units());
    let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.count());
}

/// The access log's losses (zero when it is off).
pub fn render_access_log(stats: &AccessLogStats) -> String {
    let mut out = String::new();
    for (name, help, count) in [
        (
            "tcplb_access_log_dropped_total",
            "Access log records dropped because the writer's queue was full.",
            &stats.dropped,
        ),
        (
            "tcplb_access_log_write_errors_total",
            "Access log records missing from the log because writing them failed.",
            &stats.write_errors,
        ),
    ] {
        single(&mut out, name, "counter", help, count.load(Relaxed));
    }
    out
}

/// The worker threads' families: open connections per worker, hand-overs.
pub fn render_workers(stats: &WorkerStats) -> String {
    let mut out = String::new();
    let name = "tcplb_worker_connections";
    family(
        &mut out,
        name,
        "gauge",
        "Client connections open on each worker thread.",
    );
    for worker in 0..stats.workers() {
        let _ = writeln!(out, "{name}{{worker=\"{worker}\"}} {}", stats.open(worker));
    }
    single(
        &mut out,
        "tcplb_worker_handoffs_total",
        "counter",
        "Client connections handed from the worker that accepted them to a less loaded one.",
        stats.handoffs.load(Relaxed),
    );
    out
}

/// A family of one series without labels: its `# HELP` and `# TYPE`
/// lines, then its value.
fn single(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    family(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

/// The `# HELP` and `# TYPE` lines that open a family.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A Prometheus label value: backslash, double quote and newline escaped.
/// The labels that name a listener: `listener`, its name (the pool's name
/// in the control API, as in `/status`, the access log and the API), and
/// `listen`, its bound address.
fn listener_labels(l: &ListenerView) -> String {
    format!(
        "listener=\"{}\",listen=\"{}\"",
        label(&l.name),
        label(&l.listen)
    )
}

fn label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::view::tests::sample;

    fn has_line(text: &str, line: &str) {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }

    #[test]
    fn workers_show_their_open_connections_and_the_handoffs() {
        let stats = std::sync::Arc::new(WorkerStats::new(2));
        let _open = [stats.opened(1), stats.opened(1), stats.opened(0)];
        stats.handoffs.fetch_add(4, Relaxed);
        let text = render_workers(&stats);
        has_line(&text, "# TYPE tcplb_worker_connections gauge");
        has_line(&text, "tcplb_worker_connections{worker=\"0\"} 1");
        has_line(&text, "tcplb_worker_connections{worker=\"1\"} 2");
        has_line(&text, "# TYPE tcplb_worker_handoffs_total counter");
        has_line(&text, "tcplb_worker_handoffs_total 4");
    }

    #[test]
    fn a_named_listener_is_its_name_with_the_address_beside_it() {
        // As in /status, the access log and the API: `listener` is the
        // name; the address is `listen`. Every series written here is a
        // listener's, a pool's or a backend's.
        let text = render_metrics(&sample());
        let mut count = 0;
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(
                line.contains(r#"{listener="web",listen="127.0.0.1:8080""#),
                "{line}"
            );
            count += 1;
        }
        assert!(count > 100, "{text}");
    }

    #[test]
    fn metrics_are_prometheus_text_with_escaped_labels() {
        let text = render_metrics(&sample());
        let backend = r#"{listener="web",listen="127.0.0.1:8080",backend="we\"ird\\name\n"}"#;
        for line in [
            format!("tcplb_backend_up{backend} 1"),
            format!("tcplb_backend_connections_total{backend} 5"),
            format!("tcplb_backend_connect_failures_total{backend} 6"),
            format!("tcplb_backend_sent_bytes_total{backend} 100"),
            format!("tcplb_backend_received_bytes_total{backend} 200"),
            format!("tcplb_backend_check_latency_seconds{backend} 0.00025"),
            format!("tcplb_backend_idle_timeouts_total{backend} 3"),
            "tcplb_listener_accepted_total{listener=\"web\",listen=\"127.0.0.1:8080\"} 7".into(),
            "tcplb_listener_rejected_total{listener=\"web\",listen=\"127.0.0.1:8080\"} 2".into(),
            "tcplb_listener_active_connections{listener=\"web\",listen=\"127.0.0.1:8080\"} 1".into(),
            "tcplb_listener_proxy_header_errors_total{listener=\"web\",listen=\"127.0.0.1:8080\"} 5".into(),
            "tcplb_listener_failures_total{listener=\"web\",listen=\"127.0.0.1:8080\",code=\"502\",reason=\"connect_failed\"} 3".into(),
            "tcplb_listener_failures_total{listener=\"web\",listen=\"127.0.0.1:8080\",code=\"503\",reason=\"no_backend\"} 1".into(),
            "tcplb_listener_failures_total{listener=\"web\",listen=\"127.0.0.1:8080\",code=\"503\",reason=\"queue_timeout\"} 3".into(),
            "tcplb_listener_failures_total{listener=\"web\",listen=\"127.0.0.1:8080\",code=\"503\",reason=\"per_ip_table_full\"} 0".into(),
            "# TYPE tcplb_backend_up gauge".into(),
            "# TYPE tcplb_listener_accepted_total counter".into(),
        ] {
            has_line(&text, &line);
        }
        // Every sample belongs to the family declared just before it.
        let mut family = "";
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                family = rest.split(' ').next().unwrap();
            } else if !line.starts_with('#') {
                assert!(line.starts_with(family), "{line} outside {family}");
            }
        }
    }

    #[test]
    fn histograms_have_cumulative_buckets_a_sum_and_a_count() {
        let text = render_metrics(&sample());
        let backend = r#"listener="web",listen="127.0.0.1:8080",backend="we\"ird\\name\n""#;
        has_line(&text, "# TYPE tcplb_backend_connect_seconds histogram");
        // Connect times 300 µs, 700 µs and 2 ms.
        for (le, count) in [
            ("0.0001", 0),
            ("0.00025", 0),
            ("0.0005", 1),
            ("0.001", 2),
            ("0.0025", 3),
            ("60", 3),
            ("+Inf", 3),
        ] {
            has_line(
                &text,
                &format!("tcplb_backend_connect_seconds_bucket{{{backend},le=\"{le}\"}} {count}"),
            );
        }
        has_line(
            &text,
            &format!("tcplb_backend_connect_seconds_sum{{{backend}}} 0.003"),
        );
        has_line(
            &text,
            &format!("tcplb_backend_connect_seconds_count{{{backend}}} 3"),
        );
        has_line(
            &text,
            &format!("tcplb_backend_queue_wait_seconds_count{{{backend}}} 2"),
        );
        has_line(
            &text,
            &format!("tcplb_backend_connection_duration_seconds_bucket{{{backend},le=\"2.5\"}} 1"),
        );
        // The second backend has none yet, and still every series.
        let empty = r#"listener="web",listen="127.0.0.1:8080",backend="127.0.0.1:8082""#;
        has_line(
            &text,
            &format!("tcplb_backend_connect_seconds_count{{{empty}}} 0"),
        );
        has_line(
            &text,
            &format!("tcplb_backend_connect_seconds_bucket{{{empty},le=\"+Inf\"}} 0"),
        );
        let listener = r#"listener="web",listen="127.0.0.1:8080""#;
        has_line(
            &text,
            "# TYPE tcplb_listener_connection_sent_bytes histogram",
        );
        for (le, count) in [("64", 1), ("65536", 1), ("262144", 2), ("1073741824", 2)] {
            has_line(
                &text,
                &format!(
                    "tcplb_listener_connection_sent_bytes_bucket{{{listener},le=\"{le}\"}} {count}"
                ),
            );
        }
        has_line(
            &text,
            &format!("tcplb_listener_connection_sent_bytes_sum{{{listener}}} 100010"),
        );
        has_line(
            &text,
            &format!(
                "tcplb_listener_connection_received_bytes_bucket{{{listener},le=\"1073741824\"}} 0"
            ),
        );
        has_line(
            &text,
            &format!("tcplb_listener_connection_received_bytes_bucket{{{listener},le=\"+Inf\"}} 1"),
        );
        // Each histogram: 19 or 14 buckets, a sum and a count per series.
        let series = |prefix: &str| text.lines().filter(|l| l.starts_with(prefix)).count();
        assert_eq!(series("tcplb_backend_connect_seconds_bucket{"), 2 * 19);
        assert_eq!(series("tcplb_listener_connection_sent_bytes_bucket{"), 14);
    }

    #[test]
    fn control_families_have_every_label_value() {
        let stats = ControlStats::default();
        stats.count_change("weight");
        stats.count_rejected("forbidden");
        stats.count_rejected("forbidden");
        stats.state_write_failures.fetch_add(3, Relaxed);
        let text = render_control(&stats);
        has_line(&text, "# TYPE tcplb_admin_changes_total counter");
        has_line(&text, "tcplb_admin_changes_total{action=\"weight\"} 1");
        has_line(&text, "tcplb_admin_changes_total{action=\"drain\"} 0");
        has_line(&text, "tcplb_admin_rejected_total{reason=\"forbidden\"} 2");
        has_line(&text, "tcplb_admin_rejected_total{reason=\"too_large\"} 0");
        has_line(&text, "tcplb_state_file_write_failures_total 3");
        has_line(&text, "tcplb_admin_rejected_total{reason=\"timeout\"} 0");
        stats.connections.count_dropped("evicted");
        stats.connections.accepted.fetch_add(2, Relaxed);
        let text = render_control(&stats);
        has_line(
            &text,
            "# TYPE tcplb_admin_connections_dropped_total counter",
        );
        has_line(
            &text,
            "tcplb_admin_connections_dropped_total{reason=\"evicted\"} 1",
        );
        has_line(
            &text,
            "tcplb_admin_connections_dropped_total{reason=\"head_timeout\"} 0",
        );
        has_line(&text, "tcplb_admin_connections_total 2");
        has_line(&text, "tcplb_admin_connections_active 0");
        let log = AccessLogStats::default();
        log.dropped.fetch_add(7, Relaxed);
        log.write_errors.fetch_add(2, Relaxed);
        let text = render_access_log(&log);
        has_line(&text, "# TYPE tcplb_access_log_dropped_total counter");
        has_line(&text, "tcplb_access_log_dropped_total 7");
        has_line(&text, "tcplb_access_log_write_errors_total 2");
        let backend = r#"{listener="web",listen="127.0.0.1:8080",backend="we\"ird\\name\n"}"#;
        has_line(
            &render_metrics(&sample()),
            &format!("tcplb_backend_evicted_total{backend} 4"),
        );
    }

    #[test]
    fn dns_resolutions_are_counted_by_name_and_result() {
        let text = render_metrics(&sample());
        has_line(&text, "# TYPE tcplb_dns_resolutions_total counter");
        for (result, value) in [("ok", 11), ("servfail", 2)] {
            has_line(
                &text,
                &format!(
                    "tcplb_dns_resolutions_total{{listener=\"web\",listen=\"127.0.0.1:8080\",\
                     name=\"web.example:8082\",result=\"{result}\"}} {value}"
                ),
            );
        }
    }

    #[test]
    fn health_families_show_the_state_in_force_checks_agent_panic_and_ejections() {
        let text = render_metrics(&sample());
        let pool = "listener=\"web\",listen=\"127.0.0.1:8080\"";
        let second = format!("{pool},backend=\"127.0.0.1:8082\"");
        has_line(
            &text,
            &format!("tcplb_backend_last_check_passed{{{second}}} 0"),
        );
        has_line(
            &text,
            &format!("tcplb_backend_agent_weight_percent{{{second}}} 100"),
        );
        has_line(
            &text,
            &format!("tcplb_backend_state{{{second},state=\"drain\"}} 1"),
        );
        assert!(
            text.contains(&format!(
                "tcplb_backend_agent_weight_percent{{{pool},backend=\"we\\\"ird"
            )) && text.contains("\"} 50\n"),
            "{text}"
        );
        has_line(&text, &format!("tcplb_pool_panic{{{pool}}} 0"));
        has_line(&text, &format!("tcplb_pool_panics_total{{{pool}}} 0"));
        has_line(
            &text,
            &format!("tcplb_pool_ejections_total{{{pool},result=\"ejected\"}} 1"),
        );
        has_line(
            &text,
            &format!("tcplb_pool_ejections_total{{{pool},result=\"capped\"}} 0"),
        );
        has_line(&text, "# TYPE tcplb_backend_health_closes_total counter");
    }

    #[test]
    fn admin_state_is_one_series_per_state_and_changes_are_counted() {
        let text = render_metrics(&sample());
        has_line(&text, "# TYPE tcplb_backend_admin_state gauge");
        has_line(&text, "# TYPE tcplb_pool_backend_changes_total counter");
        // The sample's second backend drains; the first is ready.
        for (backend, state, value) in [
            (r#"we\"ird\\name\n"#, "ready", 1),
            (r#"we\"ird\\name\n"#, "drain", 0),
            (r#"we\"ird\\name\n"#, "maintenance", 0),
            ("127.0.0.1:8082", "ready", 0),
            ("127.0.0.1:8082", "drain", 1),
            ("127.0.0.1:8082", "maintenance", 0),
        ] {
            has_line(
                &text,
                &format!(
                    "tcplb_backend_admin_state{{listener=\"web\",listen=\"127.0.0.1:8080\",\
                     backend=\"{backend}\",state=\"{state}\"}} {value}"
                ),
            );
        }
        for (change, value) in [("added", 8), ("removed", 9), ("updated", 10)] {
            has_line(
                &text,
                &format!(
                    "tcplb_pool_backend_changes_total{{listener=\"web\",listen=\"127.0.0.1:8080\",\
                     change=\"{change}\"}} {value}"
                ),
            );
        }
    }
}
