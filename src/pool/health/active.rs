//! Active health checks: a connect (and optionally a send/expect exchange)
//! to every backend on an interval, feeding each backend's rise/fall state.
//! A pool with `backend_tls` completes a verified TLS handshake first
//! ([`Originator::handshake`], as connections do): a backend whose
//! certificate does not verify is down, the reason in the log.
//!
//! Probes of one round run concurrently and each has its own timeout, so a
//! slow or blackholed backend never delays the verdict on the others.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{AdminState, HealthConfig};
use crate::pool::Pool;
use crate::pool::backend::Backend;
use crate::pool::connect::tls::Originator;
use crate::pool::connect::{describe, is_local_exhaustion};
use crate::pool::health::log_transition;
use tokio_util::either::Either;

/// Probes one pool's backends, on its own task.
pub struct Prober {
    pool: Arc<Pool>,
}

impl Prober {
    pub fn new(pool: Arc<Pool>) -> Self {
        Prober { pool }
    }

    /// Probes every backend now, then every interval, until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        self.run_reporting(shutdown, || {}).await
    }

    /// Like [`Prober::run`], calling `first_round` once the first round is
    /// over: readiness (systemd's READY=1, an upgrade's hand-over) waits
    /// for every backend's first verdict.
    pub async fn run_reporting(self, shutdown: CancellationToken, first_round: impl FnOnce()) {
        let mut first_round = Some(first_round);
        loop {
            self.round().await;
            if let Some(report) = first_round.take() {
                report();
            }
            // Read each time: a reload may change the interval.
            let interval = self.pool.load().config.health.interval;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// One probe of every backend in the pool, concurrently. Backends in
    /// maintenance are skipped: the operator is working on them, and their
    /// failures would only be noise.
    pub async fn round(&self) {
        let state = self.pool.load();
        let mut probes = JoinSet::new();
        for backend in &state.backends {
            if backend.admin_state() == AdminState::Maintenance {
                continue;
            }
            let backend = backend.clone();
            let health = state.config.health.clone();
            let tls = self.pool.backend_tls.load_full();
            probes.spawn(async move {
                let started = Instant::now();
                match check(&backend, &health, tls.as_deref()).await {
                    Ok(()) => {
                        let micros = started.elapsed().as_micros().min(u128::from(u64::MAX)) as u64;
                        backend.stats.check_latency_us.store(micros, Relaxed);
                        if let Some(t) = backend.health.record_success(health.rise) {
                            log_transition(&backend, t, "check passed");
                            backend.became_eligible();
                        }
                    }
                    Err(CheckError::Local(reason)) => {
                        log::debug!("health check of {backend} skipped: {reason}");
                    }
                    Err(CheckError::Failed(reason)) => {
                        log::debug!("health check of {backend} failed: {reason}");
                        if let Some(t) = backend.health.record_failure(health.fall) {
                            log_transition(&backend, t, &reason);
                        }
                    }
                }
            });
        }
        while probes.join_next().await.is_some() {}
    }
}

/// Why a check did not pass.
#[derive(Debug, PartialEq, Eq)]
pub enum CheckError {
    /// The backend failed it; the text goes into the DOWN log line.
    Failed(String),
    /// We could not run it (out of descriptors): no verdict on the backend.
    Local(String),
}

impl From<std::io::Error> for CheckError {
    fn from(e: std::io::Error) -> Self {
        if is_local_exhaustion(&e) {
            CheckError::Local(e.to_string())
        } else {
            CheckError::Failed(describe(&e))
        }
    }
}

/// One health check; with `tls` (the pool's `backend_tls`), a verified
/// handshake first, and any exchange through it.
pub async fn check(
    backend: &Backend,
    health: &HealthConfig,
    tls: Option<&Originator>,
) -> Result<(), CheckError> {
    tokio::time::timeout(health.timeout, exchange(backend, health, tls))
        .await
        .unwrap_or_else(|_| {
            Err(CheckError::Failed(format!(
                "no answer within {:?}",
                health.timeout
            )))
        })
}

async fn exchange(
    backend: &Backend,
    health: &HealthConfig,
    tls: Option<&Originator>,
) -> Result<(), CheckError> {
    let target = backend.check_target(health.port);
    let stream = TcpStream::connect(target).await?;
    let mut stream = match tls {
        None => Either::Left(stream),
        Some(tls) => {
            let deadline = tokio::time::Instant::now() + health.timeout;
            let handshake = tls.handshake(stream, backend.name(), target, deadline);
            Either::Right(
                handshake
                    .await
                    .map_err(|e| CheckError::Failed(e.to_string()))?,
            )
        }
    };
    if let Some(send) = &health.send {
        stream.write_all(send).await?;
    }
    if let Some(expect) = &health.expect {
        let mut reply = vec![0u8; expect.len()];
        let mut got = 0;
        while got < reply.len() {
            match stream.read(&mut reply[got..]).await {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) => return Err(e.into()),
            }
        }
        if reply[..got] != expect[..] {
            return Err(CheckError::Failed(format!(
                "expected {:?}, got {:?}",
                String::from_utf8_lossy(expect),
                String::from_utf8_lossy(&reply[..got])
            )));
        }
    }
    Ok(())
}
