//! The histograms in /metrics after real traffic through the real binary:
//! every connection made is counted once in the connect-time, queue-wait
//! and duration histograms of the backend that took it; each histogram's
//! buckets are cumulative, never decrease, and end at `+Inf` equal to
//! `_count`; the bytes-per-connection histograms put each connection in the
//! bucket its known size belongs to; /status shows connect-time p50 ≤ p99.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::{PATIENCE, Pattern, TestBackend, echo_roundtrip, raw_exchange, spawn_tcplb};

/// `GET path` on the admin endpoint: the body of a 200 answer.
async fn admin_get(admin: SocketAddr, path: &str) -> String {
    let text = raw_exchange(admin, &format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n")).await;
    let (head, body) = text.split_once("\r\n\r\n").expect("a whole answer");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    body.to_string()
}

/// One histogram series: its buckets (`le` text, cumulative count) in
/// the order written, its sum and count.
#[derive(Debug, Default)]
struct Series {
    buckets: Vec<(String, u64)>,
    sum: f64,
    count: u64,
}

/// Every series of the histogram `name`, keyed by its labels (without `le`).
fn histogram(metrics: &str, name: &str) -> BTreeMap<String, Series> {
    let mut found: BTreeMap<String, Series> = BTreeMap::new();
    for line in metrics.lines() {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Some((metric, labels)) = series.split_once('{') else {
            continue;
        };
        let labels = labels.trim_end_matches('}');
        if metric == format!("{name}_bucket") {
            let (labels, le) = labels.rsplit_once(",le=").expect("an le label");
            let count = value.parse().expect("a count");
            found
                .entry(labels.to_string())
                .or_default()
                .buckets
                .push((le.trim_matches('"').to_string(), count));
        } else if metric == format!("{name}_sum") {
            found.entry(labels.to_string()).or_default().sum = value.parse().expect("a sum");
        } else if metric == format!("{name}_count") {
            found.entry(labels.to_string()).or_default().count = value.parse().expect("a count");
        }
    }
    found
}

/// The Prometheus rules: buckets in ascending `le` order ending at `+Inf`,
/// counts never decreasing, `+Inf` equal to `_count`.
fn assert_well_formed(name: &str, labels: &str, series: &Series) {
    let (last_le, last) = series.buckets.last().expect("buckets");
    assert_eq!(last_le, "+Inf", "{name}{{{labels}}}");
    assert_eq!(*last, series.count, "{name}{{{labels}}}: +Inf is the count");
    let finite: Vec<f64> = series.buckets[..series.buckets.len() - 1]
        .iter()
        .map(|(le, _)| le.parse().expect("a number"))
        .collect();
    assert!(finite.windows(2).all(|w| w[0] < w[1]), "{name}: le ascends");
    assert!(
        series.buckets.windows(2).all(|w| w[0].1 <= w[1].1),
        "{name}{{{labels}}}: cumulative counts never decrease: {:?}",
        series.buckets
    );
    assert!(series.sum >= 0.0);
}

/// The value of the unlabelled-or-labelled sample `name{labels}`.
fn value(metrics: &str, name: &str, labels: &str) -> u64 {
    let prefix = format!("{name}{{{labels}}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} in\n{metrics}"))
        .parse()
        .expect("an integer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histograms_count_every_connection_in_well_formed_buckets() {
    let a = TestBackend::echo().await;
    let b = TestBackend::echo().await;
    let (a_name, b_name) = (a.addr.to_string(), b.addr.to_string());
    let lb = spawn_tcplb(&[
        "--backend",
        &a_name,
        "--backend",
        &b_name,
        "--admin",
        "127.0.0.1:0",
        "--workers",
        "2",
    ]);
    let admin = lb.admin_addr().await;

    // Payload sizes, each in its own bytes bucket: ≤ 64 B, ≤ 1 KiB,
    // ≤ 256 KiB, ≤ 4 MiB. Echoed, so each direction carries the same.
    const SIZES: [usize; 4] = [50, 1_000, 100_000, 3_000_000];
    const EACH: usize = 6;
    let mut connections = 0u64;
    let mut total_bytes = 0u64;
    for round in 0..EACH {
        for (i, size) in SIZES.into_iter().enumerate() {
            let data = Pattern::bytes((round * 10 + i) as u64, size);
            assert_eq!(echo_roundtrip(lb.addr, &data).await, data, "echoed whole");
            connections += 1;
            total_bytes += size as u64;
        }
    }

    // Durations and bytes are recorded as each connection closes.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let metrics = loop {
        let metrics = admin_get(admin, "/metrics").await;
        let recorded = |name| -> u64 { histogram(&metrics, name).values().map(|s| s.count).sum() };
        if recorded("tcplb_listener_connection_sent_bytes") == connections
            && recorded("tcplb_backend_connection_duration_seconds") == connections
        {
            break metrics;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not every connection recorded:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    for name in [
        "tcplb_backend_connect_seconds",
        "tcplb_backend_queue_wait_seconds",
        "tcplb_backend_connection_duration_seconds",
    ] {
        let series = histogram(&metrics, name);
        assert_eq!(series.len(), 2, "{name}: one series per backend");
        let mut counted = 0;
        for (labels, s) in &series {
            assert_well_formed(name, labels, s);
            assert_eq!(s.buckets.len(), 19, "{name}: 18 bounds and +Inf");
            assert_eq!(s.buckets[0].0, "0.0001");
            assert_eq!(s.buckets[17].0, "60");
            // Each backend's count is the connections it took.
            assert_eq!(
                s.count,
                value(&metrics, "tcplb_backend_connections_total", labels),
                "{name}{{{labels}}}"
            );
            assert!(s.count > 0, "round-robin gave {labels} connections");
            counted += s.count;
        }
        assert_eq!(counted, connections, "{name}: every connection once");
    }
    // Connecting on loopback is fast: every connect in the 1 s bucket.
    for (labels, s) in histogram(&metrics, "tcplb_backend_connect_seconds") {
        let within_a_second = s.buckets.iter().find(|(le, _)| le == "1").unwrap().1;
        assert_eq!(within_a_second, s.count, "{labels}");
        assert!(s.sum > 0.0 && s.sum < s.count as f64, "{labels}: {}", s.sum);
    }

    for name in [
        "tcplb_listener_connection_sent_bytes",
        "tcplb_listener_connection_received_bytes",
    ] {
        let series = histogram(&metrics, name);
        assert_eq!(series.len(), 1, "{name}: one listener");
        let (labels, s) = series.iter().next().unwrap();
        assert_well_formed(name, labels, s);
        assert_eq!(s.count, connections);
        assert_eq!(s.sum, total_bytes as f64, "{name}: exact byte total");
        let at = |le: &str| s.buckets.iter().find(|(b, _)| b == le).unwrap().1;
        let each = EACH as u64;
        assert_eq!(at("64"), each, "{name}: the 50-byte connections");
        assert_eq!(at("256"), each);
        assert_eq!(at("1024"), 2 * each, "{name}: and the 1,000-byte ones");
        assert_eq!(at("65536"), 2 * each);
        assert_eq!(at("262144"), 3 * each, "{name}: and the 100,000-byte ones");
        assert_eq!(at("1048576"), 3 * each);
        assert_eq!(at("4194304"), 4 * each, "{name}: and the 3 MB ones");
        assert_eq!(at("1073741824"), 4 * each);
    }

    // /status: connect-time quantiles estimated from the buckets.
    let status: serde_json::Value =
        serde_json::from_str(&admin_get(admin, "/status").await).expect("JSON");
    for backend in status["listeners"][0]["backends"].as_array().unwrap() {
        let p50 = backend["connect_p50_seconds"].as_f64().expect("a p50");
        let p99 = backend["connect_p99_seconds"].as_f64().expect("a p99");
        assert!(0.0 < p50 && p50 <= p99 && p99 <= 1.0, "{backend}");
    }
}
