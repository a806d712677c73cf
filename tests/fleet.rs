//! A fleet that changes: backups, slow start, TCP keepalive, the maximum
//! connection age, checks on another port, and consistent hashing that two
//! tcplb processes agree on. Real backends and real tcplbs on loopback.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use common::*;
use tcplb::config::{KeepaliveConfig, StrategyKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn http_backends(n: usize) -> Vec<TestBackend> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(TestBackend::http().await);
    }
    out
}

#[tokio::test]
async fn backups_serve_only_while_every_primary_is_down() {
    let mut primaries = http_backends(2).await;
    let backup = TestBackend::http().await;
    let mut service = service(&[primaries[0].addr, primaries[1].addr]);
    let mut spare = spec(backup.addr, 1);
    spare.backup = true;
    service.backends.push(spare);
    service.health.interval = Duration::from_millis(100);
    let lb = TestBalancer::start(service);

    let primary_ports = [primaries[0].addr.port(), primaries[1].addr.port()];
    for _ in 0..6 {
        assert!(primary_ports.contains(&which_backend(lb.addr).await));
    }
    assert_eq!(lb.total(2), 0, "the backup took a connection");

    primaries[0].kill().await;
    primaries[1].kill().await;
    assert!(poll_until(PATIENCE, || !lb.is_up(0) && !lb.is_up(1)).await);
    for _ in 0..4 {
        assert_eq!(which_backend(lb.addr).await, backup.addr.port());
    }

    primaries[1].revive().await;
    assert!(poll_until(PATIENCE, || lb.is_up(1)).await);
    for _ in 0..4 {
        assert_eq!(which_backend(lb.addr).await, primaries[1].addr.port());
    }
}

#[tokio::test]
async fn a_recovered_backend_ramps_up_under_slow_start() {
    let mut backends = http_backends(2).await;
    let mut service = service(&[backends[0].addr, backends[1].addr]);
    service.health.interval = Duration::from_millis(100);
    service.slow_start = Some(Duration::from_secs(3600));
    let lb = TestBalancer::start(service);

    backends[1].kill().await;
    assert!(poll_until(PATIENCE, || !lb.is_up(1)).await);
    backends[1].revive().await;
    assert!(poll_until(PATIENCE, || lb.is_up(1)).await);

    // An hour-long ramp that just began: about 10% of its half share.
    let mut to_recovered = 0;
    for _ in 0..200 {
        if which_backend(lb.addr).await == backends[1].addr.port() {
            to_recovered += 1;
        }
    }
    assert!(
        to_recovered < 40,
        "{to_recovered} of 200 went to the recovered backend"
    );
    let state = lb.service.pool.load();
    assert!(state.backends[1].ramp(state.config.slow_start) < 0.2);
    assert_eq!(state.backends[0].ramp(state.config.slow_start), 1.0);
}

/// The keepalive timers tcplb armed on its sockets, as `ss` shows them for
/// connections to `port` (established, either direction).
fn keepalive_timers(port: u16) -> Vec<String> {
    let out = Command::new("ss")
        .args(["-Htno", "state", "established"])
        .output()
        .expect("ss (iproute2) is needed for this test");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&format!(":{port} ")) && l.contains("timer:(keepalive"))
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn keepalive_probes_are_armed_on_both_sides() {
    let echo = TestBackend::echo().await;
    let mut service = service(&[echo.addr]);
    service.keepalive = Some(KeepaliveConfig::new(
        Duration::from_secs(77),
        Duration::from_secs(5),
        3,
    ));
    let lb = TestBalancer::start(service);
    let mut client = TcpStream::connect(lb.addr).await.unwrap();
    client.write_all(b"hi").await.unwrap();
    let mut got = [0u8; 2];
    client.read_exact(&mut got).await.unwrap();

    // Neither the test's client nor the echo backend asked for keepalive:
    // the timers on the client's and the backend's connection are tcplb's.
    let to_backend = keepalive_timers(echo.addr.port());
    assert_eq!(to_backend.len(), 1, "{to_backend:?}");
    let from_client = keepalive_timers(lb.addr.port());
    assert_eq!(from_client.len(), 1, "{from_client:?}");
    // Without the setting, no timer.
    let plain = TestBalancer::start(common::service(&[echo.addr]));
    let mut other = TcpStream::connect(plain.addr).await.unwrap();
    other.write_all(b"hi").await.unwrap();
    other.read_exact(&mut got).await.unwrap();
    assert!(keepalive_timers(plain.addr.port()).is_empty());
}

#[tokio::test]
async fn a_connection_is_closed_at_its_maximum_age_while_busy() {
    let echo = TestBackend::echo().await;
    let mut service = service(&[echo.addr]);
    service.max_connection_age = Some(Duration::from_millis(500));
    let lb = TestBalancer::start(service);

    let started = std::time::Instant::now();
    let mut client = TcpStream::connect(lb.addr).await.unwrap();
    let mut i = 0u8;
    let closed = loop {
        if client.write_all(&[i]).await.is_err() {
            break true;
        }
        let mut got = [0u8; 1];
        match tokio::time::timeout(PATIENCE, client.read(&mut got)).await {
            Ok(Ok(1)) => assert_eq!(got, [i]),
            Ok(_) => break true,
            Err(_) => break false,
        }
        i = i.wrapping_add(1);
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(closed);
    assert!(started.elapsed() >= Duration::from_millis(500));
    let backend = lb.service.pool.load().backends[0].clone();
    assert!(
        poll_until(PATIENCE, || backend
            .stats
            .max_age_closes
            .load(std::sync::atomic::Ordering::Relaxed)
            == 1)
        .await
    );
    // A new connection is served as usual.
    assert_eq!(echo_roundtrip(lb.addr, b"again").await, b"again");
}

#[tokio::test]
async fn checks_go_to_the_health_port_not_the_traffic_port() {
    let web = TestBackend::http().await;
    let mut health = TestBackend::http().await;
    let mut service = service(&[web.addr]);
    service.health.interval = Duration::from_millis(100);
    service.health.port = Some(health.addr.port());
    let lb = TestBalancer::start(service);
    assert_eq!(which_backend(lb.addr).await, web.addr.port());

    // The traffic port is fine, but the health endpoint says no.
    health.kill().await;
    assert!(poll_until(PATIENCE, || !lb.is_up(0)).await);
    health.revive().await;
    assert!(poll_until(PATIENCE, || lb.is_up(0)).await);
    assert_eq!(which_backend(lb.addr).await, web.addr.port());
}

/// Two tcplb processes with the same backends (as behind ECMP) send each
/// client to the same backend, for both hashing strategies.
#[tokio::test]
async fn two_instances_send_each_client_to_the_same_backend() {
    let backends = http_backends(5).await;
    let list: Vec<String> = backends.iter().map(|b| b.addr.to_string()).collect();
    let list = list.join(",");
    for strategy in [StrategyKind::Maglev, StrategyKind::Hash] {
        let strategy = strategy.to_string();
        let args = [
            "--backend",
            &list,
            "--strategy",
            &strategy,
            "--workers",
            "1",
        ];
        let (first, second) = (spawn_tcplb(&args), spawn_tcplb(&args));
        let mut seen = std::collections::HashSet::new();
        for n in 1..=40u8 {
            // Clients from 127.0.0.1 to 127.0.0.40 (all loopback).
            let source = IpAddr::from([127, 0, 0, n]);
            let a = which_backend_from(SocketAddr::new(source, 0), first.addr).await;
            let b = which_backend_from(SocketAddr::new(source, 0), second.addr).await;
            assert_eq!(
                a, b,
                "{strategy}: client {source} split between {a} and {b}"
            );
            assert_eq!(
                which_backend_from(SocketAddr::new(source, 0), first.addr).await,
                a,
                "not sticky"
            );
            seen.insert(a);
        }
        assert!(
            seen.len() >= 4,
            "{strategy}: 40 clients reached only {seen:?}"
        );
    }
}

#[tokio::test]
async fn bounded_load_spreads_one_hot_client_group() {
    // Every connection comes from 127.0.0.1, so plain hashing sends them all
    // to one backend; a balance factor of 1.5 caps each at 1.5x the mean.
    let backends = {
        let mut out = Vec::new();
        for _ in 0..3 {
            out.push(TestBackend::echo().await);
        }
        out
    };
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let mut service = service(&addrs);
    service.strategy = StrategyKind::Maglev;
    service.hash_balance_factor = Some(1.5);
    let lb = TestBalancer::start(service);
    let mut open = Vec::new();
    for _ in 0..12 {
        let mut stream = TcpStream::connect(lb.addr).await.unwrap();
        stream.write_all(b"x").await.unwrap();
        let mut got = [0u8; 1];
        stream.read_exact(&mut got).await.unwrap();
        open.push(stream);
    }
    let active: Vec<u64> = (0..3).map(|i| lb.active(i)).collect();
    assert_eq!(active.iter().sum::<u64>(), 12);
    // 12 open over 3: the mean is 4, the cap ceil(1.5 x 4) = 6.
    assert!(active.iter().all(|&n| n <= 6), "{active:?}");
}
