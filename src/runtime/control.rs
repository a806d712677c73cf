//! The runtime's side of the control API: it applies operators' changes
//! (from [`admin::Control`]) to the running pools, keeps the operator
//! overlay they accumulate in, persists it, and runs the drain deadlines.
//!
//! It exists because only the runtime knows the pools by name, the
//! configuration each came from (the overlay is merged on top of it) and
//! the tasks it may spawn. A change is worked out on a copy of the overlay
//! first; only when the copy accepts it is it applied to the pool (through
//! `Pool::apply_by`, so the pool's diff, log line and counters stay the one
//! path), kept, and written to the state file.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use log::{debug, error, info};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{ReloadHandle, Shared, state_file};
use crate::admin::control::{ConnectionInfo, ConnectionPage, ConnectionQuery};
use crate::admin::{self, Action, Change};
use crate::config::{AdminState, BackendSpec, ServiceConfig};
use crate::pool::Pool;
use crate::pool::backend::Backend;
use crate::pool::discovery::{self, Update};
use crate::pool::overlay::{Overlay, Refused};
use crate::proxy::Service;
use crate::proxy::connections::{Connection, Filter};
use crate::stats::ControlStats;

/// How often a backend being removed is checked for its last connection.
const REMOVAL_POLL: Duration = Duration::from_millis(100);
/// Failed state-file writes are logged at most once per this long (each
/// one is counted).
const WRITE_FAILURE_LOG_EVERY: Duration = Duration::from_secs(60);

/// What the runtime keeps for the control API.
pub(super) struct Controller {
    /// The operator overlay; locked after `Shared::state`, never across
    /// `.await`.
    overlay: Mutex<Overlay>,
    /// Where the overlay is persisted; `None`: in memory only.
    state_file: Option<PathBuf>,
    /// Changes, refusals and failed writes, for /metrics.
    pub(super) stats: Arc<ControlStats>,
    /// One watcher task per backend with a drain deadline or a pending
    /// removal, by (pool, backend): cancelled when replaced or when the
    /// backend is ready again.
    /// Each with a number of its own, so a finished watcher removes only
    /// its own entry.
    watchers: Mutex<HashMap<(String, String), (u64, CancellationToken)>>,
    /// When a failed state-file write was last logged.
    last_failure_log: Mutex<Option<Instant>>,
}

impl Controller {
    /// A controller starting from `overlay` (what the state file held).
    pub(super) fn new(overlay: Overlay, state_file: Option<PathBuf>) -> Self {
        Controller {
            overlay: Mutex::new(overlay),
            state_file,
            stats: Arc::default(),
            watchers: Mutex::default(),
            last_failure_log: Mutex::new(None),
        }
    }

    fn overlay(&self) -> MutexGuard<'_, Overlay> {
        self.overlay.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn watchers(&self) -> MutexGuard<'_, HashMap<(String, String), (u64, CancellationToken)>> {
        self.watchers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The overlay as it is now (handed to a new process on upgrade).
    pub(super) fn snapshot(&self) -> Overlay {
        self.overlay().clone()
    }

    /// Pool `name`'s configuration `base` with the operator's changes.
    pub(super) fn merged(&self, name: &str, base: &ServiceConfig) -> ServiceConfig {
        self.overlay().merged(name, base)
    }

    /// Forgets what the configuration made moot (see the overlay's merge
    /// rules) and persists the overlay when that changed it.
    pub(super) fn reconcile(&self, pools: &[(&str, &ServiceConfig)]) {
        let mut overlay = self.overlay();
        if overlay.reconcile(pools) {
            info!("runtime changes the configuration now covers were forgotten");
            self.persist(&overlay);
        }
    }

    /// Writes the overlay to the state file, if there is one. A failure is
    /// counted, logged at a bounded rate, and otherwise ignored: the
    /// change stays applied in memory.
    fn persist(&self, overlay: &Overlay) {
        let Some(path) = &self.state_file else {
            return;
        };
        if let Err(e) = state_file::save(path, overlay) {
            self.stats.state_write_failures.fetch_add(1, Relaxed);
            let mut last = self
                .last_failure_log
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if last.is_none_or(|at| at.elapsed() >= WRITE_FAILURE_LOG_EVERY) {
                *last = Some(Instant::now());
                error!(
                    "cannot write the state file {}: {e}; the change applies in memory \
                     only (failures are counted in tcplb_state_file_write_failures_total)",
                    path.display()
                );
            }
        }
    }

    /// Stops the watcher of (pool, backend), if any.
    fn stop_watcher(&self, pool: &str, backend: &str) {
        if let Some((_, old)) = self
            .watchers()
            .remove(&(pool.to_string(), backend.to_string()))
        {
            old.cancel();
        }
    }
}

/// The pool name of a listener: configured, else its bound address.
pub(super) fn pool_name(config: &ServiceConfig, local_addr: SocketAddr) -> String {
    config
        .name
        .clone()
        .unwrap_or_else(|| crate::config::udp::default_pool_name(config.protocol, local_addr))
}

/// Reads the admin bearer token from `path` (trailing whitespace and
/// newline dropped). Missing, unreadable, empty or unprintable is an error.
pub(super) fn read_token(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the admin token file {}", path.display()))?;
    let token = text.trim_end();
    if token.is_empty() {
        anyhow::bail!("the admin token file {} is empty", path.display());
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        anyhow::bail!(
            "the admin token in {} must be printable ASCII without spaces",
            path.display()
        );
    }
    Ok(token.to_string())
}

impl admin::Control for ReloadHandle {
    fn change(&self, change: Change) -> Result<String, Refused> {
        apply_change(&self.shared, change)
    }

    fn connections(&self, query: &ConnectionQuery) -> Result<ConnectionPage, Refused> {
        let names = listener_names(&self.shared);
        let filter = Filter {
            service: match &query.listener {
                Some(name) => Some(find_listener(&names, name)?),
                None => None,
            },
            backend: query.backend.clone(),
            ..Filter::default()
        };
        let registry = &self.shared.registry;
        let mut page = registry.page(query.after, query.limit.saturating_add(1), &filter);
        let more = page.len() > query.limit;
        page.truncate(query.limit);
        Ok(ConnectionPage {
            connections: page.iter().map(|c| info(c, &names)).collect(),
            open: registry.len(),
            more,
        })
    }

    fn close_connection(&self, id: u64, who: &str) -> Result<ConnectionInfo, Refused> {
        let Some(connection) = self.shared.registry.get(id) else {
            return Err(Refused::NotFound(format!("no open connection {id}")));
        };
        let closed = info(&connection, &listener_names(&self.shared));
        connection.live.stop();
        info!(
            "admin {who}: closing connection {id} ({} on {} to {})",
            closed.client,
            closed.listener,
            closed.backend.as_deref().unwrap_or("no backend yet")
        );
        Ok(closed)
    }

    fn close_backend_connections(
        &self,
        pool: &str,
        backend: &str,
        who: &str,
    ) -> Result<usize, Refused> {
        // A listener's pool or a TLS route's.
        let Some((found, _)) = self.shared.state().find_pool(pool) else {
            return Err(Refused::NotFound(format!("no pool {pool}")));
        };
        let filter = Filter {
            pool: Some(found.clone()),
            backend: Some(backend.to_string()),
            ..Filter::default()
        };
        let open = self.shared.registry.matching(&filter);
        // A backend that left the pool may still have connections draining.
        let known = found
            .load()
            .backends
            .iter()
            .any(|b| b.name() == backend || b.source() == Some(backend));
        if !known && open.is_empty() {
            return Err(Refused::NotFound(format!(
                "no backend {backend} in pool {pool}"
            )));
        }
        for connection in &open {
            connection.live.stop();
        }
        info!(
            "admin {who}: {pool}: closing the {} open connection(s) of backend {backend}",
            open.len()
        );
        Ok(open.len())
    }

    fn set_ready(&self, ready: bool, who: &str) -> String {
        let shared = &self.shared;
        let word = |ready: bool| if ready { "on" } else { "off" };
        // Under the overlay's lock, so that the state file and /ready
        // agree whichever of two operators asks last.
        let mut overlay = shared.control.overlay();
        let was_off = shared.readiness.set_operator_off(!ready);
        // Off before and asked off, or on before and asked on.
        if was_off != ready {
            debug!("admin {who}: ready {} asked, no change", word(ready));
            return "no change".into();
        }
        overlay.not_ready = !ready;
        shared.control.persist(&overlay);
        drop(overlay);
        match ready {
            true => info!(
                "readiness on by admin {who}: /ready answers 200 again (unless it has another reason not to)"
            ),
            false => {
                info!("readiness off by admin {who}: /ready answers 503 until `tcplb ctl ready on`")
            }
        }
        format!("ready {} -> {}", word(!was_off), word(ready))
    }
}

/// Each listener's service and pool name now; the lock is held for the copy.
fn listener_names(shared: &Shared) -> Vec<(Arc<Service>, String)> {
    shared
        .state()
        .services
        .iter()
        .map(|s| (s.service.clone(), s.name.clone()))
        .collect()
}

fn find_listener(names: &[(Arc<Service>, String)], name: &str) -> Result<Arc<Service>, Refused> {
    names
        .iter()
        .find(|(_, n)| n == name)
        .map(|(s, _)| s.clone())
        .ok_or_else(|| Refused::NotFound(format!("no pool {name}")))
}

/// One connection as the API lists it; read from its atomics, no lock.
fn info(c: &Connection, names: &[(Arc<Service>, String)]) -> ConnectionInfo {
    // A listener a reload removed is no longer named: its pool's own name.
    let listener = names
        .iter()
        .find(|(s, _)| Arc::ptr_eq(s, &c.service))
        .map_or_else(|| c.service.pool.name().to_string(), |(_, n)| n.clone());
    ConnectionInfo {
        id: c.id,
        client: c.client,
        listener,
        listen: c.service.listen,
        route: c.route().map(str::to_string),
        backend: c.backend().map(|b| b.name().to_string()),
        started: c.started,
        age: c.live.start().elapsed(),
        idle: c.live.idle(),
        sent: c.live.sent(),
        received: c.live.received(),
    }
}

/// Applies one change whole, or refuses it with nothing changed.
fn apply_change(shared: &Arc<Shared>, change: Change) -> Result<String, Refused> {
    let Change {
        pool: pool_name,
        backend: name,
        action,
        who,
    } = change;
    let state = shared.state();
    let Some((pool, base)) = state.find_pool(&pool_name) else {
        return Err(Refused::NotFound(format!("no pool {pool_name}")));
    };
    let control = &shared.control;
    // A member DNS found is changed through its name's entry: the next
    // lookup would undo a change made to the member alone.
    if !matches!(action, Action::Add(_))
        && let Some(source) = pool
            .load()
            .backends
            .iter()
            .find(|b| b.name() == name)
            .and_then(|b| b.source().map(str::to_string))
    {
        return Err(Refused::Conflict(format!(
            "backend {name} was found by DNS under {source}: change {source} instead"
        )));
    }
    let mut overlay = control.overlay();
    let mut next = overlay.clone();
    let before = next.pool_mut(&pool_name).current(&base, &name);
    // The backends the change lands on: the one named, or every member of
    // a backend configured by name (DNS).
    let targets = |pool: &Pool| -> Vec<Arc<Backend>> {
        pool.load()
            .backends
            .iter()
            .filter(|b| b.name() == name || b.source() == Some(name.as_str()))
            .cloned()
            .collect()
    };
    let open: u64 = targets(&pool).iter().map(|b| b.active()).sum();
    let group = before.as_ref().is_some_and(discovery::is_group)
        || matches!(&action, Action::Add(new) if discovery::is_group(&new.spec));
    let mut draining = false;
    {
        let p = next.pool_mut(&pool_name);
        match &action {
            Action::Drain { .. } => p.set_state(&base, &name, AdminState::Drain)?,
            Action::Maintenance => p.set_state(&base, &name, AdminState::Maintenance)?,
            Action::Ready => p.set_state(&base, &name, AdminState::Ready)?,
            Action::Weight(weight) => p.set_weight(&base, &name, *weight)?,
            Action::Add(new) => p.add(&base, new.clone())?,
            Action::Remove { .. } => {
                // A name's members leave with it at once; their open
                // connections drain as after a reload.
                draining = open > 0 && !group;
                p.remove(&base, &name, draining)?;
            }
        }
    }
    next.pools.retain(|_, p| !p.is_empty());
    let after = next
        .merged(&pool_name, &base)
        .backends
        .into_iter()
        .find(|b| b.name == name);

    let deadline = match &action {
        Action::Drain { deadline } | Action::Remove { deadline } => *deadline,
        _ => None,
    };
    let mut cause = format!("{} by admin {who}", action.name());
    if let Some(d) = deadline.filter(|_| after.is_some()) {
        cause.push_str(&format!(
            ", closing what is left in {}",
            humantime::format_duration(d)
        ));
    }
    match (&after, &before) {
        _ if group => pool.reconfigure_by(next.merged(&pool_name, &base), &cause),
        (Some(spec), _) => pool.apply_by(Update::Add(spec.clone()), &cause),
        (None, Some(gone)) => pool.apply_by(
            Update::Remove {
                name: gone.name.clone(),
                addr: gone.addr,
            },
            &cause,
        ),
        (None, None) => {}
    }
    *overlay = next;
    control.persist(&overlay);
    drop(overlay);
    drop(state);

    let summary = describe(&action, before.as_ref(), after.as_ref(), open, draining);
    let backends = targets(&pool);
    match &action {
        // Ready again, or gone at once: no deadline left to run.
        Action::Ready => control.stop_watcher(&pool_name, &name),
        Action::Remove { .. } if backends.is_empty() => control.stop_watcher(&pool_name, &name),
        Action::Drain { .. } | Action::Remove { .. } => {
            let remove = matches!(action, Action::Remove { .. });
            for backend in backends {
                control.stop_watcher(&pool_name, backend.name());
                backend.set_drain_deadline(deadline.map(|d| SystemTime::now() + d));
                if deadline.is_some() || remove {
                    spawn_watcher(
                        shared,
                        &pool_name,
                        pool.clone(),
                        backend,
                        deadline,
                        remove,
                        &who,
                    );
                }
            }
        }
        _ => {}
    }
    if matches!(action, Action::Ready) {
        for backend in targets(&pool) {
            control.stop_watcher(&pool_name, backend.name());
        }
    }
    if summary == "no change" {
        debug!(
            "admin {who}: {pool_name} {name}: {} asked, no change",
            action.name()
        );
    } else if before == after && deadline.is_some() {
        info!("{pool_name}: backend {name}: {summary} ({cause})");
    }
    Ok(summary)
}

/// What a change did, in one line.
fn describe(
    action: &Action,
    before: Option<&BackendSpec>,
    after: Option<&BackendSpec>,
    open: u64,
    draining: bool,
) -> String {
    let deadline = match action {
        Action::Drain {
            deadline: Some(d), ..
        }
        | Action::Remove {
            deadline: Some(d), ..
        } => format!(
            ", closing what is left in {}",
            humantime::format_duration(*d)
        ),
        _ => String::new(),
    };
    match (action, before, after) {
        (Action::Add(_), None, Some(spec)) => format!("added (weight {})", spec.weight),
        (Action::Remove { .. }, _, _) if draining => {
            format!("removing: draining {open} open connection(s){deadline}")
        }
        (Action::Remove { .. }, _, _) => "removed".to_string(),
        (_, Some(old), Some(new)) => {
            let mut parts = Vec::new();
            if old.admin_state != new.admin_state {
                parts.push(format!("state {} -> {}", old.admin_state, new.admin_state));
            }
            if old.weight != new.weight {
                parts.push(format!("weight {} -> {}", old.weight, new.weight));
            }
            if parts.is_empty() && deadline.is_empty() {
                return "no change".to_string();
            }
            if parts.is_empty() {
                parts.push(format!("state {}", new.admin_state));
            }
            format!("{}{deadline}", parts.join(", "))
        }
        _ => "no change".to_string(),
    }
}

/// Watches one backend an operator drained with a deadline or removed:
/// at the deadline, closes its open connections (unless it is ready
/// again); for a removal, takes it out of the pool once its last
/// connection has ended.
fn spawn_watcher(
    shared: &Arc<Shared>,
    pool_name: &str,
    pool: Arc<Pool>,
    backend: Arc<Backend>,
    deadline: Option<Duration>,
    remove: bool,
    who: &str,
) {
    static NEXT_ID: AtomicU64 = AtomicU64::new(0);
    let id = NEXT_ID.fetch_add(1, Relaxed);
    let stop = CancellationToken::new();
    let key = (pool_name.to_string(), backend.name().to_string());
    let replaced = shared
        .control
        .watchers()
        .insert(key.clone(), (id, stop.clone()));
    if let Some((_, old)) = replaced {
        old.cancel();
    }
    let shared = shared.clone();
    let who = who.to_string();
    let shutdown = shared.shutdown.clone();
    let deadline = deadline.map(|d| Instant::now() + d);
    let tasks = shared.tasks.clone();
    tasks.spawn(async move {
        let mut evicted = false;
        loop {
            if remove && backend.active() == 0 {
                finish_removal(&shared, &key.0, &pool, &backend, &who);
                break;
            }
            let at_deadline = async {
                match deadline.filter(|_| !evicted) {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let poll = async {
                match remove {
                    true => tokio::time::sleep(REMOVAL_POLL).await,
                    false => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                // Replaced by a newer watcher, which owns the entry now.
                _ = stop.cancelled() => return,
                () = at_deadline => {
                    // The operator's own word: an agent's drain is no
                    // reason to close what the operator let stay open.
                    if backend.admin_state() == AdminState::Ready {
                        break;
                    }
                    info!(
                        "{}: backend {backend}: drain deadline passed; closing {} open \
                         connection(s) ({} by admin {who})",
                        key.0,
                        backend.active(),
                        if remove { "remove" } else { "drain" }
                    );
                    backend.evict();
                    evicted = true;
                    if !remove {
                        break;
                    }
                }
                () = poll => {}
            }
        }
        let mut watchers = shared.control.watchers();
        if watchers.get(&key).is_some_and(|(own, _)| *own == id) {
            watchers.remove(&key);
        }
    });
}

/// A removed backend's last connection ended: it leaves the member set.
fn finish_removal(shared: &Shared, pool_name: &str, pool: &Pool, backend: &Backend, who: &str) {
    let _state = shared.state();
    let mut overlay = shared.control.overlay();
    let finished = overlay
        .pools
        .get_mut(pool_name)
        .is_some_and(|p| p.finish_removal(backend.name()));
    if !finished {
        return;
    }
    overlay.pools.retain(|_, p| !p.is_empty());
    pool.apply_by(
        Update::Remove {
            name: backend.name().to_string(),
            addr: backend.addr(),
        },
        &format!("remove by admin {who}, its last connection ended"),
    );
}
