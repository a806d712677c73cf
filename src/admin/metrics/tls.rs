//! The TLS families of `/metrics`: one set per terminating listener or
//! route (`side="client"`, labels `listener` and, for a route, `route`)
//! and per pool that speaks TLS to its backends (`side="backend"`).
//!
//! | name | type | meaning |
//! |---|---|---|
//! | `tcplb_tls_handshakes_total` | counter | handshakes; labels `result` = `ok` (with `version` = `1.2` or `1.3`) or `failed` (`version="unknown"`) |
//! | `tcplb_tls_resumed_total` | counter | completed handshakes that resumed a session |
//! | `tcplb_tls_resumption_ratio` | gauge | resumed / completed handshakes (0 before any) |
//! | `tcplb_tls_handshake_failures_total` | counter | failed handshakes by `reason` (`stats::tls::TlsFailure`) |
//! | `tcplb_tls_handshake_duration_seconds` | histogram | completed handshakes, ClientHello (or connect) to finished |
//! | `tcplb_tls_protocol_errors_total` | counter | connections ended by a TLS error after the handshake |
//! | `tcplb_tls_reload_failures_total` | counter | reloads that kept the old files because a new one was bad |
//! | `tcplb_tls_certificate_expiry_timestamp_seconds` | gauge | each certificate served (or presented to backends), labels `certificate` (its file) and `subject`: not valid after, Unix seconds |

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;

use super::{family, histogram, label};
use crate::admin::Watched;
use crate::stats::tls::{TlsFailure, TlsStats};

/// A family with one value per side: name, type, help, the value.
type Simple = (
    &'static str,
    &'static str,
    &'static str,
    fn(&TlsStats) -> f64,
);

/// Every TLS family, for the listeners and routes in `watched`.
pub fn render(watched: &[Watched]) -> String {
    let mut sides: Vec<(String, &TlsStats)> = Vec::new();
    let mut owned = Vec::new();
    for w in watched {
        let listener = format!("listener=\"{}\"", label(&w.listen.to_string()));
        let config = w.pool.load();
        if config.config.tls.is_some() {
            sides.push((format!("{listener},side=\"client\""), &w.stats.tls));
        }
        if config.config.backend_tls.is_some() {
            owned.push((
                format!("{listener},side=\"backend\""),
                w.pool.stats.backend_tls.clone(),
            ));
        }
        for r in &w.routes {
            let route = format!("{listener},route=\"{}\"", label(&r.name));
            let config = r.pool.load();
            if config.config.tls.is_some() {
                sides.push((format!("{route},side=\"client\""), &r.stats.tls));
            }
            if config.config.backend_tls.is_some() {
                owned.push((
                    format!("{route},side=\"backend\""),
                    r.pool.stats.backend_tls.clone(),
                ));
            }
        }
    }
    for (labels, stats) in &owned {
        sides.push((labels.clone(), stats));
    }
    let mut out = String::new();
    if sides.is_empty() {
        return out;
    }
    let name = "tcplb_tls_handshakes_total";
    family(
        &mut out,
        name,
        "counter",
        "TLS handshakes, by result and version.",
    );
    for (labels, stats) in &sides {
        for (version, count) in TlsStats::VERSIONS.iter().zip(&stats.handshakes) {
            let count = count.load(Relaxed);
            let _ = writeln!(
                out,
                "{name}{{{labels},result=\"ok\",version=\"{version}\"}} {count}"
            );
        }
        let failed: u64 = stats.failures.iter().map(|f| f.load(Relaxed)).sum();
        let _ = writeln!(
            out,
            "{name}{{{labels},result=\"failed\",version=\"unknown\"}} {failed}"
        );
    }
    let simple: [Simple; 4] = [
        (
            "tcplb_tls_resumed_total",
            "counter",
            "Completed TLS handshakes that resumed a session.",
            |s| s.resumed.load(Relaxed) as f64,
        ),
        (
            "tcplb_tls_resumption_ratio",
            "gauge",
            "Resumed over completed TLS handshakes.",
            |s| {
                let completed = s.completed();
                if completed == 0 {
                    0.0
                } else {
                    s.resumed.load(Relaxed) as f64 / completed as f64
                }
            },
        ),
        (
            "tcplb_tls_protocol_errors_total",
            "counter",
            "Connections ended by a TLS error after the handshake.",
            |s| s.protocol_errors.load(Relaxed) as f64,
        ),
        (
            "tcplb_tls_reload_failures_total",
            "counter",
            "Reloads that kept the old TLS files serving because a new one was bad.",
            |s| s.reload_failures.load(Relaxed) as f64,
        ),
    ];
    for (name, kind, help, value) in simple {
        family(&mut out, name, kind, help);
        for (labels, stats) in &sides {
            let _ = writeln!(out, "{name}{{{labels}}} {}", value(stats));
        }
    }
    let name = "tcplb_tls_handshake_failures_total";
    family(
        &mut out,
        name,
        "counter",
        "Failed TLS handshakes, by reason.",
    );
    for (labels, stats) in &sides {
        for failure in TlsFailure::ALL {
            let count = stats.failures_of(failure);
            let _ = writeln!(
                out,
                "{name}{{{labels},reason=\"{}\"}} {count}",
                failure.label()
            );
        }
    }
    let name = "tcplb_tls_handshake_duration_seconds";
    family(
        &mut out,
        name,
        "histogram",
        "Completed TLS handshakes, first byte to finished.",
    );
    for (labels, stats) in &sides {
        histogram(&mut out, name, labels, &stats.duration.snapshot());
    }
    let name = "tcplb_tls_certificate_expiry_timestamp_seconds";
    family(
        &mut out,
        name,
        "gauge",
        "When each TLS certificate served expires, in Unix seconds.",
    );
    for (labels, stats) in &sides {
        for cert in stats.certificates() {
            let _ = writeln!(
                out,
                "{name}{{{labels},certificate=\"{}\",subject=\"{}\"}} {}",
                label(&cert.path),
                label(&cert.subject),
                cert.not_after
            );
        }
    }
    out
}
