//! Active health checks: every interval, the pool's check (see
//! [`check::build`](super::check::build)) of every backend, feeding each
//! backend's rise/fall state; and, with an agent configured, the agent
//! check of every backend on its own interval. A pool with `backend_tls`
//! checks over a verified TLS handshake ([`check::Tls`]), as its
//! connections do; the agent stays plain TCP, as in HAProxy.
//!
//! Rounds are scheduled from their start, as HAProxy's `inter`: a round
//! begins one interval after the previous began, or at once when that one
//! took longer. So a backend that dies right after a passed check is
//! DOWN after at most `fall` more rounds: within `fall × interval +
//! timeout` (when `timeout < interval`), and within `fall × interval`
//! when it refuses at once. Probes of one round run concurrently, each
//! with its own timeout, so a slow or blackholed backend never delays the
//! verdict on the others.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Instant, SystemTime};

use log::{debug, info};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::check::{self, Check, Failure, Transport};
use super::{CheckReport, CheckResult, agent, policy};
use crate::config::{AdminState, CheckConfig, HealthConfig};
use crate::pool::backend::Backend;
use crate::pool::{Pool, PoolState};

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
        tokio::join!(self.checks(&shutdown, first_round), self.agents(&shutdown));
    }

    async fn checks(&self, shutdown: &CancellationToken, first_round: impl FnOnce()) {
        let mut first_round = Some(first_round);
        // Built again only when a reload changes the check.
        let mut built: Option<(CheckConfig, Arc<dyn Check>)> = None;
        loop {
            let started = tokio::time::Instant::now();
            let state = self.pool.load();
            let wanted = state.config.active_check();
            let check = match &built {
                Some((config, check)) if *config == *wanted => check.clone(),
                _ => {
                    let check = check::build(&wanted);
                    built = Some((wanted.into_owned(), check.clone()));
                    check
                }
            };
            self.round(&state, check).await;
            if let Some(report) = first_round.take() {
                report();
            }
            // Entering or leaving panic is logged even with no traffic.
            self.pool.evaluate_panic();
            // Read each time: a reload may change the interval.
            let next = started + self.pool.load().config.health.interval;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep_until(next) => {}
            }
        }
    }

    /// One check of every backend in `state`, concurrently. Backends in
    /// the operator's maintenance are skipped: the operator is working on
    /// them, and their failures would only be noise.
    async fn round(&self, state: &Arc<PoolState>, check: Arc<dyn Check>) {
        // TLS when the pool speaks TLS to its backends.
        let tls = self.pool.backend_tls.load_full();
        let mut probes = JoinSet::new();
        for backend in &state.backends {
            if backend.admin_state() == AdminState::Maintenance {
                continue;
            }
            let timeout = state.config.health.timeout;
            let transport = check::transport_for(tls.as_ref(), backend, timeout);
            let (backend, state, check) = (backend.clone(), state.clone(), check.clone());
            probes.spawn(async move {
                let health = &state.config.health;
                let outcome = probe(&backend, health, &*check, &*transport).await;
                record(&state, &backend, health, outcome);
            });
        }
        while probes.join_next().await.is_some() {}
    }

    /// The agent checks: every agent interval while the pool has an agent
    /// configured; what an agent said is forgotten when it no longer is.
    async fn agents(&self, shutdown: &CancellationToken) {
        let mut had_agent = false;
        loop {
            let started = tokio::time::Instant::now();
            let state = self.pool.load();
            let interval = match &state.config.health.agent {
                Some(agent) => {
                    had_agent = true;
                    self.agent_round(&state).await;
                    agent.interval
                }
                None => {
                    if had_agent {
                        had_agent = false;
                        self.forget_agents(&state);
                    }
                    // Look again for an agent a reload may add.
                    state.config.health.interval
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep_until(started + interval) => {}
            }
        }
    }

    /// One agent check of every backend, concurrently.
    async fn agent_round(&self, state: &Arc<PoolState>) {
        let Some(config) = state.config.health.agent.clone() else {
            return;
        };
        let mut asks = JoinSet::new();
        for backend in &state.backends {
            let (backend, state, config) = (backend.clone(), state.clone(), config.clone());
            asks.spawn(async move {
                let health = &state.config.health;
                let target =
                    std::net::SocketAddr::new(backend.check_target(health.port).ip(), config.port);
                let asked = tokio::time::timeout(
                    health.timeout,
                    agent::ask(target, config.send.as_deref()),
                )
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {:?}", health.timeout)));
                apply_agent(&state, &backend, asked)
            });
        }
        let mut reweighted = false;
        while let Some(done) = asks.join_next().await {
            reweighted |= done.unwrap_or(false);
        }
        if reweighted {
            self.pool.refresh_selector("agent weight");
        }
    }

    fn forget_agents(&self, state: &Arc<PoolState>) {
        let mut reweighted = false;
        for backend in &state.backends {
            let was_up = backend.is_up();
            let changes = backend.agent.clear();
            reweighted |= changes.weight_percent.is_some();
            policy::report_change(
                &state.backends,
                backend,
                was_up,
                "agent check turned off",
                &state.config.health,
            );
        }
        if reweighted {
            self.pool.refresh_selector("agent check turned off");
        }
    }
}

/// How long after its timeout a check that did not end itself is dropped.
const TIMEOUT_GRACE: std::time::Duration = std::time::Duration::from_millis(50);

/// What one check found, and how long it took.
struct Outcome {
    result: Result<String, Failure>,
    took: std::time::Duration,
}

/// Runs `check` on `backend` within the timeout (after taking the
/// check's slot, if it needs one).
async fn probe(
    backend: &Backend,
    health: &HealthConfig,
    check: &dyn Check,
    transport: &dyn Transport,
) -> Outcome {
    let _slot = match check.admission() {
        Some(slots) => slots.acquire().await.ok(),
        None => None,
    };
    let started = Instant::now();
    let target = backend.check_target(health.port);
    // A check that ends itself at the timeout says more than this one.
    let bound = health.timeout + TIMEOUT_GRACE;
    let result = tokio::time::timeout(bound, check.run(target, transport, health.timeout))
        .await
        .unwrap_or_else(|_| {
            Err(Failure::Failed(format!(
                "no answer within {:?}",
                health.timeout
            )))
        });
    Outcome {
        result,
        took: started.elapsed(),
    }
}

/// Feeds one check's outcome to `backend`'s health and report, and
/// settles what changed.
fn record(state: &PoolState, backend: &Backend, health: &HealthConfig, outcome: Outcome) {
    let was_up = backend.is_up();
    let (result, reason) = match outcome.result {
        Ok(passed) => {
            let micros = outcome.took.as_micros().min(u128::from(u64::MAX)) as u64;
            backend.stats.check_latency_us.store(micros, Relaxed);
            backend.health.record_success(health.rise);
            (CheckResult::Passed, passed)
        }
        Err(Failure::Local(reason)) => {
            debug!("health check of {backend} skipped: {reason}");
            (CheckResult::Skipped, reason)
        }
        Err(Failure::Failed(reason)) => {
            debug!("health check of {backend} failed: {reason}");
            backend.health.record_failure(health.fall);
            (CheckResult::Failed, reason)
        }
    };
    let why = match result {
        CheckResult::Passed => format!(
            "{} check passed: {reason}",
            state.config.active_check().kind()
        ),
        _ => reason.clone(),
    };
    backend.health.record_check(CheckReport {
        result,
        reason,
        at: SystemTime::now(),
        took: outcome.took,
    });
    policy::report_change(&state.backends, backend, was_up, &why, health);
}

/// Takes an agent's answer for `backend`; logs what it changed and
/// settles a change of health. Returns whether the weight changed (the
/// selector must be built again).
fn apply_agent(
    state: &PoolState,
    backend: &Backend,
    asked: Result<agent::AgentWord, String>,
) -> bool {
    if let Err(why) = &asked {
        debug!("agent check of {backend} failed: {why}");
    }
    let said = match &asked {
        Ok(word) => describe_word(word),
        Err(_) => String::new(),
    };
    let was_up = backend.is_up();
    let was_ready = backend.is_ready();
    let changes = backend.agent.record(asked, said.clone());
    if changes.is_empty() {
        return false;
    }
    info!("backend {backend}: agent says {said}");
    if !was_ready && backend.is_ready() {
        backend.became_eligible();
    }
    let why = format!("agent: {said}");
    policy::report_change(&state.backends, backend, was_up, &why, &state.config.health);
    changes.weight_percent.is_some()
}

/// An agent's word as logs and `/status` show it, e.g. `drain 50% #disk`.
fn describe_word(word: &agent::AgentWord) -> String {
    let mut parts = Vec::new();
    if let Some(state) = word.state {
        parts.push(match state {
            AdminState::Ready => "ready".to_string(),
            AdminState::Drain => "drain".to_string(),
            AdminState::Maintenance => "maint".to_string(),
        });
    }
    match word.up {
        Some(true) => parts.push("up".into()),
        Some(false) => parts.push("down".into()),
        None => {}
    }
    if let Some(p) = word.weight_percent {
        parts.push(format!("{p}%"));
    }
    if let Some(n) = word.max_conns {
        parts.push(format!("maxconn:{n}"));
    }
    if let Some(reason) = &word.reason {
        parts.push(format!("#{reason}"));
    }
    parts.join(" ")
}
