//! The pool of one service: its backends, the selector that picks among
//! them, and the settings its connections are served with.
//!
//! One small idea per module, after pingora-load-balancing:
//!
//! - [`backend`]: one backend, with its admin state and health kept apart;
//! - [`selection`]: the [`Selector`](selection::Selector) trait and the
//!   strategies behind it;
//! - [`health`]: active checks and passive ejection, which report
//!   transitions;
//! - [`discovery`]: where the member set comes from, as diffs;
//! - [`connect`]: opening a backend connection and telling whose fault a
//!   failure was.
//!
//! Connections load a snapshot ([`PoolState`]) when they start and keep it.
//! A snapshot is immutable: a reload or a membership change builds a new one
//! (with a new selector) and publishes it with `arc-swap`, so the data path
//! reads the pool without a lock, and open connections never see a change
//! under their feet.

pub mod backend;
pub mod connect;
pub mod discovery;
pub mod health;
pub mod overlay;
pub mod selection;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, ArcSwapOption};
use log::{info, warn};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::config::{BackendTlsConfig, ServiceConfig};
use crate::stats::{PoolStats, ResolutionStats};
use backend::Backend;
use connect::tls::Originator;
use discovery::{Found, Member, Static, Update};
use health::panic::PanicState;
use health::passive::Ejected;
use selection::Selector;

/// An immutable view of the pool: open connections keep the one they started with.
pub struct PoolState {
    /// The service's settings when this snapshot was taken.
    pub config: ServiceConfig,
    /// The members, in the order discovery gave them.
    pub backends: Vec<Arc<Backend>>,
    /// Built for exactly `backends` and their weights; shared by the
    /// snapshots that have both.
    selector: Arc<dyn Selector>,
    /// Slots under `max_conns`; `None` when unlimited.
    admission: Option<Arc<Semaphore>>,
    /// Whether any member is a backup: most pools have none and skip the
    /// check for them.
    has_backups: bool,
    /// The pool's panic state (shared by its snapshots) and its name for
    /// the log lines of entering and leaving panic.
    panic: Arc<PanicState>,
    /// The pool's name, for log lines written from a snapshot.
    name: Arc<str>,
    /// The pool's counters (ejections are counted from a snapshot).
    stats: Arc<PoolStats>,
}

/// Backends a slow-start pick may pass over before taking its first choice.
const RAMP_RETRIES: usize = 4;

impl PoolState {
    /// The next backend for `client`, skipping indices in `tried` and
    /// backends that are not ready, not up, ejected or at their limit.
    /// Backups are chosen from only when no primary is usable. Under slow
    /// start, a ramping backend the selector chose is taken with the
    /// probability of its ramp, else the selector is asked again without it.
    ///
    /// Under panic (see [`health::panic`]) every ready primary below its
    /// limit is eligible, whatever its health.
    pub fn pick(&self, client: IpAddr, tried: &[usize]) -> Option<usize> {
        let panic = self.in_panic();
        let backup = !panic && self.backup_tier(tried);
        let eligible = |i: usize| {
            let b = &self.backends[i];
            if panic {
                return !b.is_backup() && !tried.contains(&i) && b.is_ready() && !b.is_full();
            }
            b.is_backup() == backup && !tried.contains(&i) && b.is_available()
        };
        let first = self.selector.pick(&self.backends, &eligible, client)?;
        let window = self.config.slow_start;
        if window.is_none() || selection::is_sticky(self.config.strategy) {
            return Some(first);
        }
        let mut choice = first;
        let mut passed_over: Vec<usize> = Vec::new();
        loop {
            let share = self.backends[choice].ramp(window);
            if share >= 1.0
                || (selection::random_below(1 << 20) as f64) < share * f64::from(1 << 20)
            {
                return Some(choice);
            }
            passed_over.push(choice);
            if passed_over.len() > RAMP_RETRIES {
                return Some(first);
            }
            let others = |i: usize| eligible(i) && !passed_over.contains(&i);
            match self.selector.pick(&self.backends, &others, client) {
                Some(next) => choice = next,
                // Only ramping backends left: ramping is no reason to refuse.
                None => return Some(first),
            }
        }
    }

    /// Whether the pool is in panic now (evaluated on each pick while a
    /// threshold is set; no work at all without one).
    fn in_panic(&self) -> bool {
        let threshold = self.config.health.panic_threshold;
        threshold.is_some() && self.panic.evaluate(&self.name, &self.backends, threshold)
    }

    /// A client's connect to backend `index` failed for `reason`: it
    /// counts toward `fall` like a failed check (the change settled as a
    /// check's, `on_down` included), and toward passive ejection, within
    /// the pool's `max_ejection_percent` (at least one backend).
    pub fn connect_failed(&self, index: usize, reason: &str) {
        let Some(backend) = self.backends.get(index) else {
            return;
        };
        let config = &self.config;
        let was_up = backend.is_up();
        backend.health.record_failure(config.health.fall);
        health::policy::report_change(&self.backends, backend, was_up, reason, &config.health);
        let ejected = self.backends.iter().filter(|b| b.is_failing()).count();
        let cap = ejection_cap(self.backends.len(), config.max_ejection_percent);
        match backend.health.ejection().record_connect_failure(
            config.max_fails,
            config.fail_timeout,
            config.max_ejection_time,
            ejected < cap,
        ) {
            Ejected::No => {}
            Ejected::For(length) => {
                self.stats.ejections.fetch_add(1, Relaxed);
                info!(
                    "backend {backend} out of rotation for {length:?} after {} failed connects",
                    config.max_fails
                );
            }
            Ejected::Capped => {
                self.stats.ejections_capped.fetch_add(1, Relaxed);
                log::debug!(
                    "backend {backend} failed {} connects but stays in: {ejected} of {} \
                     backends are ejected already (max_ejection_percent {})",
                    config.max_fails,
                    self.backends.len(),
                    config.max_ejection_percent
                );
            }
        }
    }

    /// Whether new connections go to the backups: there are some, and no
    /// primary that has not failed this client yet is usable (full ones
    /// count as usable: their clients wait for a slot, they do not spill).
    fn backup_tier(&self, tried: &[usize]) -> bool {
        self.has_backups
            && !self
                .backends
                .iter()
                .enumerate()
                .any(|(i, b)| !b.is_backup() && !tried.contains(&i) && b.is_usable())
    }

    /// One of the listener's `max_conns` slots for a connection that moved
    /// here with a binary upgrade, if one is free now. A moved connection
    /// is never refused for the limit: it held a slot in the old process,
    /// and both processes' connections together may pass the limit while
    /// they both serve (as during any upgrade).
    pub fn adopt_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.admission.as_ref()?.clone().try_acquire_owned().ok()
    }

    /// Takes one of the listener's `max_conns` slots, waiting up to the
    /// queue timeout; `Err` when none came free. The slot is held for as
    /// long as the returned permit lives.
    pub async fn admit(&self) -> Result<Option<OwnedSemaphorePermit>, QueueTimeout> {
        let Some(slots) = &self.admission else {
            return Ok(None);
        };
        match tokio::time::timeout(self.config.queue_timeout, slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Some(permit)),
            _ => Err(QueueTimeout),
        }
    }
}

/// No slot came free within the queue timeout.
#[derive(Debug)]
pub struct QueueTimeout;

/// How many of `members` backends passive health may eject at once under
/// `percent`: rounded down, but always at least one (Envoy's rule).
pub fn ejection_cap(members: usize, percent: u8) -> usize {
    (members * usize::from(percent) / 100).max(1)
}

pub struct Pool {
    /// How log lines name this pool: the listener it serves.
    name: String,
    /// The snapshot new connections take; replaced whole, never edited.
    current: ArcSwap<PoolState>,
    /// Serialises writers (reloads, discovery) so that two changes never
    /// race to publish; the data path never takes it.
    writer: Mutex<()>,
    /// Woken when a connection to a backend with a `maxconn` ends.
    slot_freed: Notify,
    /// Membership changes and passive ejections, by kind.
    pub stats: Arc<PoolStats>,
    /// Whether the pool is in panic, shared by its snapshots.
    panic: Arc<PanicState>,
    /// Lookups of each backend name discovery keeps current, by result;
    /// read by the admin endpoint only.
    resolutions: Mutex<BTreeMap<String, Arc<ResolutionStats>>>,
    /// With `backend_tls`: the TLS every connection and health check to
    /// the backends completes. Set by [`Self::configure_backend_tls`].
    pub backend_tls: ArcSwapOption<Originator>,
}

impl Pool {
    /// A pool for `config`, with the backends it lists. A backend given by
    /// name starts with the address it resolved to when the configuration
    /// was read (see [`Self::with_found`]).
    pub fn new(name: impl Into<String>, config: ServiceConfig) -> Self {
        Self::with_found(name, config, &Found::new())
    }

    /// A pool for `config`, whose backends given by name start with the
    /// members in `found` (a lookup at start-up); the first members are
    /// not counted as changes.
    pub fn with_found(name: impl Into<String>, config: ServiceConfig, found: &Found) -> Self {
        let name: String = name.into();
        let stats = Arc::new(PoolStats::default());
        let panic = Arc::new(PanicState::default());
        let empty = PoolState {
            selector: Arc::from(selection::build(
                config.strategy,
                &[],
                config.hash_balance_factor,
            )),
            admission: admission(&config, None),
            config,
            backends: Vec::new(),
            has_backups: false,
            panic: panic.clone(),
            name: Arc::from(name.as_str()),
            stats: stats.clone(),
        };
        let pool = Pool {
            name,
            current: ArcSwap::from_pointee(empty),
            writer: Mutex::new(()),
            slot_freed: Notify::new(),
            stats,
            panic,
            resolutions: Mutex::new(BTreeMap::new()),
            backend_tls: ArcSwapOption::empty(),
        };
        let backends = pool.load().config.backends.clone();
        pool.publish(
            |state| state.config.clone(),
            Static::new(backends).update(),
            found,
            false,
            None,
        );
        pool
    }

    /// Speaks TLS to the backends as `config` says (`None`: plain TCP).
    /// A pool already speaking TLS takes the new settings, or keeps its
    /// own when a new file is bad (said in a warning); `Err` only when
    /// there is nothing to keep.
    pub fn configure_backend_tls(&self, config: Option<&BackendTlsConfig>) -> Result<(), String> {
        let Some(config) = config else {
            self.backend_tls.store(None);
            return Ok(());
        };
        match self.backend_tls.load_full() {
            Some(running) => running.update(config, false, &self.name),
            None => {
                let originator = Originator::new(config, self.stats.backend_tls.clone())
                    .map_err(|e| format!("pool {}: backend_tls: {e}", self.name))?;
                self.backend_tls.store(Some(Arc::new(originator)));
            }
        }
        Ok(())
    }

    /// Reads the backend TLS files again: all when `force` (SIGHUP), else
    /// those that changed.
    pub fn reload_backend_tls(&self, force: bool) {
        if let Some(running) = self.backend_tls.load_full() {
            running.update(&running.config(), force, &self.name);
        }
    }

    /// How log lines name this pool: the listener it serves.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The lookup counters of backend name `name`, created on first use.
    pub fn resolution_stats(&self, name: &str) -> Arc<ResolutionStats> {
        let mut all = self.resolutions.lock().unwrap_or_else(|e| e.into_inner());
        all.entry(name.to_string()).or_default().clone()
    }

    /// The lookup counters of every backend name looked up so far.
    pub fn resolutions(&self) -> Vec<(String, Arc<ResolutionStats>)> {
        let all = self.resolutions.lock().unwrap_or_else(|e| e.into_inner());
        all.iter().map(|(n, s)| (n.clone(), s.clone())).collect()
    }

    /// The pool as it is now: one atomic load, no lock.
    pub fn load(&self) -> Arc<PoolState> {
        self.current.load_full()
    }

    /// Takes new settings for new connections, and the backends they list
    /// as the whole member set (see [`discovery`] for what that keeps).
    pub fn reconfigure(&self, config: ServiceConfig) {
        self.reconfigure_with(config, &Found::new());
    }

    /// Like [`Self::reconfigure`], with what a lookup just found for
    /// backends given by name; a name without an entry keeps its members.
    pub fn reconfigure_with(&self, config: ServiceConfig, found: &Found) {
        let backends = config.backends.clone();
        self.publish(
            move |_| config,
            Static::new(backends).update(),
            found,
            true,
            None,
        );
    }

    /// Like [`reconfigure`](Self::reconfigure), for a change an operator
    /// made to a backend configured by name: its members keep their
    /// addresses and take the entry's new settings; each log line ends with
    /// `(cause)`.
    pub fn reconfigure_by(&self, config: ServiceConfig, cause: &str) {
        let backends = config.backends.clone();
        self.publish(
            move |_| config,
            Static::new(backends).update(),
            &Found::new(),
            true,
            Some(cause),
        );
    }

    /// Applies a membership change from a discovery source; the settings
    /// stay. A group reset for a name no longer configured is ignored: it
    /// was looked up before a reload dropped the name.
    pub fn apply(&self, update: Update) {
        self.publish(
            |state| state.config.clone(),
            update,
            &Found::new(),
            true,
            None,
        );
    }

    /// Like [`apply`](Self::apply), for a change an operator asked for:
    /// each log line of it ends with `(cause)`, e.g. who asked.
    pub fn apply_by(&self, update: Update, cause: &str) {
        self.publish(
            |state| state.config.clone(),
            update,
            &Found::new(),
            true,
            Some(cause),
        );
    }

    /// Builds and publishes the next snapshot: settings from `settings`,
    /// members from applying `update` to the current ones (a `Reset` has
    /// its backends given by name expanded, see [`discovery::expand`]).
    /// Each change is logged and counted when `announce` (not for the
    /// pool's first members), with `cause` after it when given.
    fn publish(
        &self,
        settings: impl FnOnce(&PoolState) -> ServiceConfig,
        update: Update,
        found: &Found,
        announce: bool,
        cause: Option<&str>,
    ) {
        let by = cause.map(|c| format!(" ({c})")).unwrap_or_default();
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.load();
        let config = settings(&old);
        let update = match update {
            Update::Reset(specs) => Update::Reset(discovery::expand(specs, &old.backends, found)),
            Update::ResetGroup { group, members } => {
                let Some(entry) = config
                    .backends
                    .iter()
                    .find(|b| b.name == group && discovery::is_group(b))
                else {
                    return;
                };
                let members = members
                    .iter()
                    .map(|m| discovery::retemplate(entry, m))
                    .collect();
                Update::ResetGroup { group, members }
            }
            other => other,
        };
        let current: Vec<discovery::Present<'_>> = old
            .backends
            .iter()
            .map(|b| (b.name(), b.addr(), b.source()))
            .collect();
        let diff = discovery::diff(&current, update);
        let mut reweighted = false;
        let backends: Vec<Arc<Backend>> = diff
            .members
            .into_iter()
            .map(|member| match member {
                Member::Untouched(index) => old.backends[index].clone(),
                Member::Kept { index, spec } => {
                    let backend = old.backends[index].clone();
                    let changes = backend.update(&spec);
                    if !changes.is_empty() {
                        reweighted |= changes.iter().any(|c| c.starts_with("weight"));
                        info!(
                            "{}: backend {backend}: {}{by}",
                            self.name,
                            changes.join(", ")
                        );
                        self.stats.updated.fetch_add(1, Relaxed);
                    }
                    backend
                }
                Member::Added(spec) => {
                    let backend = Arc::new(Backend::new(&spec));
                    if announce {
                        info!("{}: backend {backend} added{by}", self.name);
                        self.stats.added.fetch_add(1, Relaxed);
                        backend.became_eligible();
                    }
                    backend
                }
            })
            .collect();
        for index in &diff.removed {
            let gone = &old.backends[*index];
            info!(
                "{}: backend {gone} removed ({} open connection(s) drain){by}",
                self.name,
                gone.active()
            );
            self.stats.removed.fetch_add(1, Relaxed);
        }
        for spec in &diff.duplicates {
            match &spec.source {
                // Discovery repeats itself every interval: not worth a warning each time.
                Some(source) => log::debug!(
                    "{}: backend {} (from {source}) is already a member; not added twice",
                    self.name,
                    spec.name
                ),
                None => warn!(
                    "{}: backend {} is listed twice; the second entry is ignored",
                    self.name, spec.name
                ),
            }
        }
        // Same members, weights and strategy: keep the selector (and its
        // place in the rotation). Anything else gets one built afresh.
        let same_members = backends.len() == old.backends.len()
            && backends
                .iter()
                .zip(&old.backends)
                .all(|(a, b)| Arc::ptr_eq(a, b));
        let selector = if same_members
            && !reweighted
            && config.strategy == old.config.strategy
            && config.hash_balance_factor == old.config.hash_balance_factor
        {
            old.selector.clone()
        } else {
            Arc::from(selection::build(
                config.strategy,
                &backends,
                config.hash_balance_factor,
            ))
        };
        let state = PoolState {
            admission: admission(&config, Some(&old)),
            selector,
            config,
            has_backups: backends.iter().any(|b| b.is_backup()),
            backends,
            panic: old.panic.clone(),
            name: old.name.clone(),
            stats: old.stats.clone(),
        };
        self.current.store(Arc::new(state));
    }

    /// Builds the selector again for the same members: their weights
    /// changed in place (an agent's share). Logged at debug with `cause`.
    pub fn refresh_selector(&self, cause: &str) {
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.load();
        log::debug!("{}: weights changed ({cause}): selector rebuilt", self.name);
        let state = PoolState {
            selector: Arc::from(selection::build(
                old.config.strategy,
                &old.backends,
                old.config.hash_balance_factor,
            )),
            admission: old.admission.clone(),
            config: old.config.clone(),
            backends: old.backends.clone(),
            has_backups: old.has_backups,
            panic: old.panic.clone(),
            name: old.name.clone(),
            stats: old.stats.clone(),
        };
        self.current.store(Arc::new(state));
    }

    /// Evaluates the panic threshold now, so entering and leaving panic
    /// are logged when health changes, not only at the next pick.
    pub fn evaluate_panic(&self) {
        let state = self.load();
        state.in_panic();
        if state.config.health.panic_threshold.is_none() && self.panic.is_active() {
            // Turned off by a reload: leave panic, once.
            self.panic.evaluate(&self.name, &state.backends, None);
        }
    }

    /// Whether the pool is in panic, and how often it entered it.
    pub fn panic(&self) -> &PanicState {
        &self.panic
    }

    /// Like [`PoolState::pick`], but when every ready, healthy backend left
    /// is only at its `maxconn` limit, waits until `deadline` for one to
    /// free up.
    pub async fn pick_or_wait(
        &self,
        state: &PoolState,
        client: IpAddr,
        tried: &[usize],
        deadline: Instant,
    ) -> Option<usize> {
        loop {
            // Registered before looking, so a slot freed in between is not missed.
            let freed = self.slot_freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(index) = state.pick(client, tried) {
                return Some(index);
            }
            let backup = state.backup_tier(tried);
            let only_full = state.backends.iter().enumerate().any(|(i, b)| {
                b.is_backup() == backup && !tried.contains(&i) && b.is_usable() && b.is_full()
            });
            if !only_full || tokio::time::timeout_at(deadline, freed).await.is_err() {
                return None;
            }
        }
    }

    /// Tells connections waiting in [`Self::pick_or_wait`] that `backend` may have room.
    pub fn connection_closed(&self, backend: &Backend) {
        if backend.max_conns().is_some() {
            self.slot_freed.notify_waiters();
        }
    }
}

/// The `max_conns` slots for `config`: the old snapshot's when the limit is
/// unchanged, so the connections already open keep counting.
fn admission(config: &ServiceConfig, old: Option<&PoolState>) -> Option<Arc<Semaphore>> {
    match old {
        Some(old) if old.config.max_conns == config.max_conns => old.admission.clone(),
        _ => config
            .max_conns
            .map(|n| Arc::new(Semaphore::new(n as usize))),
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::config::{AdminState, BackendSpec, StrategyKind, parse_backend};

    const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn config(backends: &[&str]) -> ServiceConfig {
        let specs: Vec<BackendSpec> = backends.iter().map(|b| parse_backend(b).unwrap()).collect();
        ServiceConfig::new("127.0.0.1:0".parse().unwrap(), specs)
    }

    fn counts(pool: &Pool) -> [u64; 3] {
        let s = &pool.stats;
        [&s.added, &s.removed, &s.updated].map(|c| c.load(Relaxed))
    }

    #[test]
    fn the_first_members_are_not_counted_as_changes() {
        let pool = Pool::new("test", config(&["127.0.0.1:1", "127.0.0.1:2"]));
        assert_eq!(pool.load().backends.len(), 2);
        assert_eq!(counts(&pool), [0, 0, 0]);
    }

    #[test]
    fn a_reconfigure_diffs_members_and_counts_each_change() {
        let pool = Pool::new("test", config(&["127.0.0.1:1", "127.0.0.1:2"]));
        let before = pool.load();
        let open = before.backends[1].open_connection();

        pool.reconfigure(config(&["127.0.0.1:1=3", "127.0.0.1:3"]));
        let after = pool.load();
        assert!(Arc::ptr_eq(&before.backends[0], &after.backends[0]), "kept");
        assert_eq!(after.backends[0].weight(), 3, "updated in place");
        assert_eq!(after.backends[1].addr().port(), 3);
        assert_eq!(counts(&pool), [1, 1, 1]);
        // The removed backend lives on in the old snapshot while its
        // connection is open: it drains, it is not cut.
        assert_eq!(before.backends[1].active(), 1);
        drop(open);
    }

    #[test]
    fn the_selector_is_rebuilt_only_when_members_or_weights_change() {
        let pool = Pool::new("test", config(&["127.0.0.1:1", "127.0.0.1:2"]));
        let first = pool.load();
        let mut same = config(&["127.0.0.1:1", "127.0.0.1:2"]);
        same.retries = 7;
        pool.reconfigure(same);
        let second = pool.load();
        assert_eq!(second.config.retries, 7, "settings are new");
        assert!(
            Arc::ptr_eq(&first.selector, &second.selector),
            "selector kept"
        );

        pool.reconfigure(config(&["127.0.0.1:1=2", "127.0.0.1:2"]));
        assert!(
            !Arc::ptr_eq(&second.selector, &pool.load().selector),
            "weight"
        );
        let third = pool.load();
        pool.apply(Update::Add(parse_backend("127.0.0.1:3").unwrap()));
        assert!(
            !Arc::ptr_eq(&third.selector, &pool.load().selector),
            "member"
        );
        let fourth = pool.load();
        let mut drain = parse_backend("127.0.0.1:3").unwrap();
        drain.admin_state = AdminState::Drain;
        pool.apply(Update::Add(drain));
        assert!(
            Arc::ptr_eq(&fourth.selector, &pool.load().selector),
            "an admin state is read per pick, not built into the selector"
        );
    }

    #[test]
    fn a_weight_change_takes_effect_for_new_picks() {
        let mut c = config(&["127.0.0.1:1", "127.0.0.1:2"]);
        c.strategy = StrategyKind::RoundRobin;
        let pool = Pool::new("test", c.clone());
        let picks = |n: usize| -> Vec<usize> {
            let state = pool.load();
            (0..n).map(|_| state.pick(CLIENT, &[]).unwrap()).collect()
        };
        assert_eq!(picks(4), [0, 1, 0, 1]);
        c.backends[0].weight = 3;
        pool.reconfigure(c);
        assert_eq!(picks(4), [0, 0, 1, 0]);
    }

    #[test]
    fn only_ready_and_up_backends_are_picked() {
        let mut c = config(&["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]);
        c.backends[0].admin_state = AdminState::Drain;
        c.backends[1].admin_state = AdminState::Maintenance;
        let pool = Pool::new("test", c.clone());
        let state = pool.load();
        for _ in 0..5 {
            assert_eq!(state.pick(CLIENT, &[]), Some(2));
        }
        state.backends[2].health.record_failure(1);
        assert_eq!(state.pick(CLIENT, &[]), None, "ready but down");
        c.backends[0].admin_state = AdminState::Ready;
        pool.reconfigure(c);
        assert_eq!(pool.load().pick(CLIENT, &[]), Some(0));
    }

    #[test]
    fn backups_serve_only_while_no_primary_is_usable() {
        let mut c = config(&["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]);
        c.backends[2].backup = true;
        let pool = Pool::new("test", c);
        let state = pool.load();
        for _ in 0..6 {
            assert_ne!(state.pick(CLIENT, &[]), Some(2), "a primary is up");
        }
        state.backends[0].health.record_failure(1);
        assert_eq!(state.pick(CLIENT, &[]), Some(1));
        assert_eq!(
            state.pick(CLIENT, &[1]),
            Some(2),
            "the last primary failed this client"
        );
        state.backends[1].health.record_failure(1);
        assert_eq!(state.pick(CLIENT, &[]), Some(2));
        state.backends[0].health.record_success(1);
        assert_eq!(state.pick(CLIENT, &[]), Some(0), "back to the primary");
    }

    /// Whatever takes A (weight 2) out, B and C split the picks evenly
    /// (issue 20: the one after A in the sequence took A's turns).
    #[test]
    fn whatever_takes_a_backend_out_the_others_keep_their_shares() {
        let cases = [
            "drain",
            "maintenance",
            "down",
            "ejected",
            "full",
            "backup",
            "slow start",
        ];
        for strategy in [StrategyKind::RoundRobin, StrategyKind::LeastConn] {
            for case in cases {
                let mut c = config(&["127.0.0.1:1=2", "127.0.0.1:2", "127.0.0.1:3"]);
                c.strategy = strategy;
                let a = &mut c.backends[0];
                match case {
                    "drain" => a.admin_state = AdminState::Drain,
                    "maintenance" => a.admin_state = AdminState::Maintenance,
                    "full" => a.max_conns = Some(1),
                    "backup" => a.backup = true,
                    "slow start" => c.slow_start = Some(std::time::Duration::from_secs(3600)),
                    _ => {}
                }
                let pool = Pool::new("test", c);
                let state = pool.load();
                let a = &state.backends[0];
                let _open = (case == "full").then(|| a.open_connection());
                match case {
                    "down" => {
                        a.health.record_failure(1);
                    }
                    "ejected" => {
                        let an_hour = std::time::Duration::from_secs(3600);
                        a.health
                            .ejection()
                            .record_connect_failure(1, an_hour, an_hour, true);
                    }
                    "slow start" => a.became_eligible(),
                    _ => {}
                }
                let mut counts = [0usize; 3];
                for _ in 0..400 {
                    counts[state.pick(CLIENT, &[]).unwrap()] += 1;
                }
                let what = format!("{strategy}, A {case}: {counts:?}");
                if case == "slow start" {
                    // A takes a few at 10 % of its share; the rest split evenly.
                    assert!(counts[0] < 60, "{what}");
                    assert!(counts[1].abs_diff(counts[2]) <= 1, "{what}");
                } else {
                    assert_eq!(counts, [0, 200, 200], "{what}");
                }
            }
        }
    }

    #[test]
    fn a_full_primary_keeps_its_clients_waiting_rather_than_spilling() {
        let mut c = config(&["127.0.0.1:1", "127.0.0.1:2"]);
        c.backends[0].max_conns = Some(1);
        c.backends[1].backup = true;
        let pool = Pool::new("test", c);
        let state = pool.load();
        let _open = state.backends[0].open_connection();
        assert_eq!(state.pick(CLIENT, &[]), None, "wait for the primary's slot");
    }

    #[test]
    fn slow_start_gives_a_ramping_backend_a_small_share() {
        let mut c = config(&["127.0.0.1:1", "127.0.0.1:2"]);
        c.slow_start = Some(std::time::Duration::from_secs(3600));
        let pool = Pool::new("test", c);
        let state = pool.load();
        state.backends[1].became_eligible();
        let mut counts = [0usize; 2];
        for _ in 0..4000 {
            counts[state.pick(CLIENT, &[]).unwrap()] += 1;
        }
        // Round robin offers it half the picks; at 10% of its share it takes
        // about 5% of all (200 of 4000).
        assert!((80..400).contains(&counts[1]), "{counts:?}");
        // Ramped up: back to an even split.
        std::thread::sleep(std::time::Duration::from_millis(3));
        state.backends[1].ramp(Some(std::time::Duration::from_millis(1)));
        let mut counts = [0usize; 2];
        for _ in 0..400 {
            counts[state.pick(CLIENT, &[]).unwrap()] += 1;
        }
        assert_eq!(counts, [200, 200]);
    }

    #[test]
    fn remove_and_add_by_update() {
        let pool = Pool::new("test", config(&["127.0.0.1:1", "127.0.0.1:2"]));
        let gone = pool.load().backends[0].clone();
        pool.apply(Update::Remove {
            name: gone.name().to_string(),
            addr: gone.addr(),
        });
        let names: Vec<String> = pool
            .load()
            .backends
            .iter()
            .map(|b| b.name().into())
            .collect();
        assert_eq!(names, ["127.0.0.1:2"]);
        pool.apply(Update::Add(parse_backend("127.0.0.1:1").unwrap()));
        let state = pool.load();
        assert_eq!(state.backends.len(), 2);
        assert!(
            !Arc::ptr_eq(&state.backends[1], &gone),
            "a new backend, fresh state"
        );
        assert_eq!(counts(&pool), [1, 1, 0]);
    }

    #[test]
    fn panic_balances_over_every_ready_primary_and_is_counted_once() {
        let mut c = config(&["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3", "127.0.0.1:4"]);
        c.backends[3].admin_state = AdminState::Drain;
        c.health.panic_threshold = Some(50);
        let pool = Pool::new("test", c);
        let state = pool.load();
        // One of three ready primaries up: 33% < 50%.
        state.backends[0].health.record_failure(1);
        state.backends[1].health.record_failure(1);
        let mut seen = [0usize; 4];
        for _ in 0..30 {
            seen[state.pick(CLIENT, &[]).unwrap()] += 1;
        }
        assert_eq!(seen, [10, 10, 10, 0], "the drained one stays out");
        assert!(pool.panic().is_active());
        assert_eq!(pool.panic().entered(), 1, "entered once, not per pick");
        state.backends[1].health.record_success(1);
        assert_ne!(state.pick(CLIENT, &[]), Some(0), "2 of 3 up: no panic");
        assert!(!pool.panic().is_active());
        assert_eq!(pool.panic().entered(), 1);
    }

    #[test]
    fn without_a_threshold_there_is_no_panic() {
        let pool = Pool::new("test", config(&["127.0.0.1:1", "127.0.0.1:2"]));
        let state = pool.load();
        state.backends[0].health.record_failure(1);
        for _ in 0..4 {
            assert_eq!(state.pick(CLIENT, &[]), Some(1));
        }
        assert!(!pool.panic().is_active());
    }

    #[test]
    fn the_ejection_cap_keeps_at_least_one_and_counts_refusals() {
        assert_eq!(ejection_cap(3, 10), 1);
        assert_eq!(ejection_cap(30, 10), 3);
        assert_eq!(ejection_cap(4, 0), 1, "always one");
        assert_eq!(ejection_cap(4, 100), 4);
        let mut c = config(&["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]);
        c.max_fails = 1;
        c.fail_timeout = std::time::Duration::from_secs(3600);
        let pool = Pool::new("test", c);
        let state = pool.load();
        state.connect_failed(0, "refused");
        state.connect_failed(1, "refused");
        assert!(state.backends[0].is_failing());
        assert!(!state.backends[1].is_failing(), "10% of 3: one at most");
        assert_eq!(pool.stats.ejections.load(Relaxed), 1);
        assert_eq!(pool.stats.ejections_capped.load(Relaxed), 1);
    }

    mod properties {
        use std::collections::BTreeSet;
        use std::time::Duration;

        use proptest::prelude::*;

        use super::*;

        /// One backend of a generated pool.
        #[derive(Clone, Debug)]
        struct Member {
            up: bool,
            ejected: bool,
            state: AdminState,
            backup: bool,
        }

        fn member() -> impl Strategy<Value = Member> {
            (
                any::<bool>(),
                prop::bool::weighted(0.2),
                prop_oneof![
                    4 => Just(AdminState::Ready),
                    1 => Just(AdminState::Drain),
                    1 => Just(AdminState::Maintenance),
                ],
                prop::bool::weighted(0.2),
            )
                .prop_map(|(up, ejected, state, backup)| Member {
                    up,
                    ejected,
                    state,
                    backup,
                })
        }

        fn pool_of(size: usize) -> ServiceConfig {
            let addrs: Vec<String> = (0..size).map(|i| format!("127.0.0.1:{}", i + 1)).collect();
            let refs: Vec<&str> = addrs.iter().map(String::as_str).collect();
            config(&refs)
        }

        fn build(members: &[Member], threshold: Option<u8>) -> Pool {
            let mut c = pool_of(members.len());
            for (spec, m) in c.backends.iter_mut().zip(members) {
                spec.admin_state = m.state;
                spec.backup = m.backup;
            }
            c.health.panic_threshold = threshold;
            let pool = Pool::new("prop", c);
            for (b, m) in pool.load().backends.iter().zip(members) {
                if !m.up {
                    b.health.record_failure(1);
                }
                if m.ejected {
                    let hour = Duration::from_secs(3600);
                    b.health
                        .ejection()
                        .record_connect_failure(1, hour, hour, true);
                }
            }
            pool
        }

        proptest! {
            /// Whatever the pool, a pick is a ready primary under panic
            /// (and every ready primary gets picks), and otherwise a
            /// usable backend of the right tier; panic is exactly when
            /// fewer than the threshold's share of the ready primaries are
            /// usable and no backup could take over.
            #[test]
            fn the_pick_under_panic(
                members in prop::collection::vec(member(), 1..8),
                threshold in prop::option::of(1u8..=100),
            ) {
                let pool = build(&members, threshold);
                let state = pool.load();
                let ready_primaries: Vec<usize> = (0..members.len())
                    .filter(|&i| !members[i].backup && members[i].state == AdminState::Ready)
                    .collect();
                let usable = |i: usize| {
                    members[i].state == AdminState::Ready && members[i].up && !members[i].ejected
                };
                let usable_primaries = ready_primaries.iter().filter(|&&i| usable(i)).count();
                let usable_backups = (0..members.len())
                    .filter(|&i| members[i].backup && usable(i))
                    .count();
                let expect_panic = threshold.is_some_and(|t| {
                    let backups_serve = usable_primaries == 0 && usable_backups > 0;
                    !ready_primaries.is_empty()
                        && !backups_serve
                        && usable_primaries * 100 < usize::from(t) * ready_primaries.len()
                });
                let picks: Vec<Option<usize>> =
                    (0..2 * members.len()).map(|_| state.pick(CLIENT, &[])).collect();
                prop_assert_eq!(pool.panic().is_active(), expect_panic);
                if expect_panic {
                    for pick in &picks {
                        let i = pick.expect("a ready primary is always there under panic");
                        prop_assert!(ready_primaries.contains(&i), "picked {} of {:?}", i, members);
                    }
                    for i in &ready_primaries {
                        prop_assert!(picks.contains(&Some(*i)), "{} never picked: {:?}", i, picks);
                    }
                } else {
                    let tier_backup = usable_primaries == 0;
                    for pick in picks.iter().flatten() {
                        prop_assert!(usable(*pick), "picked unusable {}", pick);
                        prop_assert_eq!(members[*pick].backup, tier_backup);
                    }
                    let any = (0..members.len())
                        .any(|i| usable(i) && members[i].backup == tier_backup);
                    prop_assert_eq!(picks.iter().all(Option::is_some), any);
                }
            }

            /// However connects fail, passive health never has more than
            /// `max_ejection_percent` of the pool out, and ejects up to
            /// that many (at least one).
            #[test]
            fn the_ejection_cap_holds(
                size in 1usize..12,
                percent in 0u8..=100,
                failures in prop::collection::vec(0usize..12, 1..60),
            ) {
                let mut c = pool_of(size);
                c.max_fails = 1;
                c.fail_timeout = Duration::from_secs(3600);
                c.max_ejection_percent = percent;
                let pool = Pool::new("prop", c);
                let state = pool.load();
                let cap = ejection_cap(size, percent);
                let failing: Vec<usize> = failures.iter().map(|f| f % size).collect();
                for &index in &failing {
                    state.connect_failed(index, "refused");
                    let out = state.backends.iter().filter(|b| b.is_failing()).count();
                    prop_assert!(out <= cap, "{} ejected, cap {}", out, cap);
                    prop_assert!(out >= 1, "the first failure always ejects");
                }
                let distinct = failing.iter().collect::<BTreeSet<_>>().len();
                let made = pool.stats.ejections.load(Relaxed) as usize;
                prop_assert_eq!(made, cap.min(distinct));
            }
        }
    }
}
