//! `/status`: the same snapshot as JSON, for people and scripts.
//!
//! The shape is the view structs' `Serialize` derives, written by
//! `serde_json`, so escaping is never done by hand:
//!
//! ```text
//! {"listeners":[{"name":..,"listen":..,"strategy":..,"accepted":..,"rejected":..,
//!   "active":..,"failures":{"502":..,"503":..,"503_by_reason":{"no_backend":..,
//!     "queue_timeout":..,"per_ip_connections":..,"per_ip_rate":..,
//!     "per_ip_table_full":..,"out_of_descriptors":..}},
//!   "backend_changes":{"added":..,"removed":..,"updated":..},
//!   "backends":[{"name":..,"address":..,"source":..(discovered only),"up":..,"weight":..,"active":..,
//!     "total":..,"connect_failures":..,"sent_bytes":..,"received_bytes":..,
//!     "check_latency_seconds":..,"idle_timeouts":..,"max_age_closes":..,
//!     "evicted":..,"backup":..,"effective_weight":..,
//!     "admin_state":"ready"|"drain"|"maintenance","health":"up"|"down",
//!     "ejected":..,"state":"ready"|"drain"|"maintenance","health_closes":..,
//!     "check":{"type":"connect"|"steps"|"http"|"exec","result":"passed"|"failed"|"skipped",
//!       "reason":..,"at":RFC3339,"seconds":..}|null,
//!     "health_since":RFC3339,"health_reason":..,
//!     "agent":{"result":..,"reason":..,"at":..,"state":..,"down":..,
//!       "weight_percent":..,"maxconn":..|null} (with an agent check only),
//!     "connect_p50_seconds":..|null,"connect_p99_seconds":..|null}],
//!   "dns":[{"name":..,"members":..,"resolutions":{"empty":..,"error":..,
//!     "nxdomain":..,"ok":..,"servfail":..,"timeout":..}}],
//!   "panic":{"active":..,"entered":..},"ejections":{"ejected":..,"capped":..}}],
//!  "write_access":true|false}
//! ```
//!
//! Non-finite numbers are written as 0, so the answer is always valid JSON.
//! The connect-time quantiles are estimated from the histogram's buckets
//! (linear within the bucket the quantile falls in, as Prometheus'
//! `histogram_quantile`), so they are as coarse as the buckets; null until
//! a connection was made.

use serde::Serialize;

use super::view::ListenerView;

/// The top-level object.
#[derive(Serialize)]
struct Status<'a> {
    /// Every listener, in configuration order.
    listeners: &'a [ListenerView],
    /// Whether changes can be made the way this request came in: a token
    /// is configured (TCP) or it came over the Unix socket. The status page
    /// shows its buttons by it.
    write_access: bool,
}

/// The whole `/status` body, newline-terminated.
pub fn render_status(listeners: &[ListenerView], write_access: bool) -> String {
    // Serialising plain structs of strings and numbers into a String cannot
    // fail; an empty object is still valid JSON should it ever.
    let status = Status {
        listeners,
        write_access,
    };
    let mut out = serde_json::to_string(&status).unwrap_or_else(|_| "{}".into());
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::view::tests::sample;

    #[test]
    fn status_is_json_with_escaped_strings() {
        let json = render_status(&sample(), false);
        assert!(
            json.starts_with("{\"listeners\":[{") && json.ends_with("],\"write_access\":false}\n")
        );
        assert!(render_status(&sample(), true).ends_with(",\"write_access\":true}\n"));
        assert!(json.contains(r#""name":"we\"ird\\name\n""#), "{json}");
        assert!(
            json.contains(r#""accepted":7,"rejected":2,"active":1"#),
            "{json}"
        );
        let failures = r#""failures":{"502":3,"503":4,"503_by_reason":{"no_backend":1,"queue_timeout":3,"per_ip_connections":0,"per_ip_rate":0,"per_ip_table_full":0,"out_of_descriptors":0}}"#;
        assert!(json.contains(failures), "{json}");
        assert!(json.contains(r#""up":true,"weight":2"#), "{json}");
        assert!(
            json.contains(r#""check_latency_seconds":0.00025,"idle_timeouts":3,"#),
            "{json}"
        );
        let parsed: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
        assert_eq!(
            parsed["listeners"][0]["backends"][0]["name"],
            "we\"ird\\name\n"
        );
    }

    #[test]
    fn admin_state_health_ejection_and_changes_are_reported() {
        let json = render_status(&sample(), false);
        assert!(
            json.contains(r#""admin_state":"ready","health":"up","ejected":false,"#),
            "{json}"
        );
        assert!(
            json.contains(r#""admin_state":"drain","health":"down","ejected":true,"#),
            "{json}"
        );
        assert!(
            json.contains(
                r#"}},"backend_changes":{"added":8,"removed":9,"updated":10},"backends":["#
            ),
            "{json}"
        );
        assert!(!json.contains("proxy_header_errors"), "{json}");
        assert!(
            json.contains(r#"{"name":"web","listen":"127.0.0.1:8080","strategy":"#),
            "{json}"
        );
        assert!(
            json.contains(r#""max_age_closes":9,"evicted":4,"backup":false"#),
            "{json}"
        );
    }

    #[test]
    fn the_last_check_the_last_change_and_the_agent_are_reported() {
        let json = render_status(&sample(), false);
        let parsed: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
        let listener = &parsed["listeners"][0];
        let [ready, draining] = [&listener["backends"][0], &listener["backends"][1]];
        assert_eq!(ready["check"]["type"], "http");
        assert_eq!(ready["check"]["result"], "passed");
        assert_eq!(ready["health_since"], "2026-05-20T09:00:00.000Z");
        // The operator says ready, the agent drain: both are shown.
        assert_eq!(
            (&ready["admin_state"], &ready["state"]),
            (&"ready".into(), &"drain".into())
        );
        assert_eq!(ready["agent"]["weight_percent"], 50);
        assert_eq!(ready["agent"]["reason"], "drain 50%");
        assert_eq!(draining["check"]["reason"], "HTTP 503 (expected 2xx,3xx)");
        assert_eq!(draining["health_reason"], "HTTP 503 (expected 2xx,3xx)");
        assert!(
            draining.get("agent").is_none(),
            "no agent check: no agent field"
        );
        assert_eq!(listener["panic"]["active"], false);
        assert_eq!(listener["ejections"]["ejected"], 1);
    }

    #[test]
    fn connect_time_quantiles_are_numbers_or_null() {
        let json = render_status(&sample(), false);
        let parsed: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
        let backends = &parsed["listeners"][0]["backends"];
        assert_eq!(backends[0]["connect_p50_seconds"], 0.00075);
        assert_eq!(backends[0]["connect_p99_seconds"], 0.0025);
        assert!(backends[1]["connect_p50_seconds"].is_null(), "{json}");
        assert!(backends[1]["connect_p99_seconds"].is_null(), "{json}");
        // The histograms themselves are /metrics' business.
        assert!(
            !json.contains("connect_time") && !json.contains("queue_wait"),
            "{json}"
        );
    }

    #[test]
    fn discovered_backends_show_their_source_and_names_their_lookups() {
        let json = render_status(&sample(), false);
        let parsed: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
        let listener = &parsed["listeners"][0];
        assert!(
            listener["backends"][0].get("source").is_none(),
            "a configured backend has no source: {json}"
        );
        assert_eq!(listener["backends"][1]["source"], "web.example:8082");
        assert_eq!(listener["dns"][0]["name"], "web.example:8082");
        assert_eq!(listener["dns"][0]["members"], 1);
        assert_eq!(listener["dns"][0]["resolutions"]["ok"], 11);
        assert_eq!(listener["dns"][0]["resolutions"]["servfail"], 2);
    }

    #[test]
    fn control_characters_and_non_finite_numbers_stay_valid_json() {
        let mut listeners = sample();
        let backend = &mut listeners[0].backends[0];
        backend.name = "\u{1}".into();
        backend.check_latency_seconds = f64::NAN;
        listeners[0].backends[1].check_latency_seconds = f64::INFINITY;
        let json = render_status(&listeners, false);
        assert!(json.contains(r#""name":"\u0001""#), "{json}");
        assert!(!json.contains("seconds\":null,\"idle"), "{json}");
        let parsed: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
        for backend in 0..2 {
            assert_eq!(
                parsed["listeners"][0]["backends"][backend]["check_latency_seconds"],
                0.0
            );
        }
    }
}
