//! TLS in the running balancer: each terminating listener's and route's
//! [`Terminator`], kept by owner across reloads (so ticket keys, session
//! caches and counters survive them), and the poller that reads changed
//! certificate, key, CA, CRL and ticket-key files again.
//!
//! Files are polled (their modification time, size and inode) every
//! [`FILE_POLL`], with no new dependency and no inotify watch to lose when
//! a deploy tool replaces a directory; SIGHUP reads them all again at once.

use std::sync::Arc;
use std::time::Duration;

use super::{Running, Shared};
use crate::config::{RouteConfig, ServiceConfig};
use crate::proxy::tls::Terminator;
use crate::stats::tls::TlsStats;

/// How often certificate files are checked for changes: 2 s, so that a
/// renewed certificate serves within seconds, for a `stat` per file.
pub(super) const FILE_POLL: Duration = Duration::from_secs(2);

/// The owner name of a listener's terminator (its pool's name).
fn listener_owner(name: &str) -> String {
    format!("listener {name}")
}

/// The owner name of a route's terminator.
fn route_owner(route: &str) -> String {
    format!("route {route}")
}

impl Shared {
    /// The terminator of the listener whose pool is `name`, when `config`
    /// terminates.
    pub(super) fn listener_terminator(
        &self,
        name: &str,
        config: &ServiceConfig,
        stats: &Arc<TlsStats>,
    ) -> Result<Option<Arc<Terminator>>, String> {
        let Some(tls) = &config.tls else {
            return Ok(None);
        };
        self.terminators
            .get(&listener_owner(name), tls, &[], stats)
            .map(Some)
    }

    /// The terminator of `route`, when it terminates.
    pub(super) fn route_terminator(
        &self,
        route: &RouteConfig,
        stats: &Arc<TlsStats>,
    ) -> Result<Option<Arc<Terminator>>, String> {
        let Some(tls) = &route.pool.tls else {
            return Ok(None);
        };
        self.terminators
            .get(&route_owner(&route.name), tls, &route.alpn, stats)
            .map(Some)
    }

    /// Forgets the terminators of listeners and routes no longer running.
    pub(super) fn forget_terminators(&self, services: &[Running]) {
        let mut kept = Vec::new();
        for service in services {
            kept.push(listener_owner(&service.name));
            kept.extend(service.routes.iter().map(|r| route_owner(r.name())));
        }
        self.terminators.retain(&kept);
    }

    /// Checks every terminator's files every [`FILE_POLL`] until shutdown.
    pub(super) fn watch_tls_files(self: &Arc<Self>) {
        let shared = Arc::downgrade(self);
        let shutdown = self.shutdown.clone();
        self.tasks.spawn(async move {
            let mut ticks = tokio::time::interval(FILE_POLL);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = ticks.tick() => {}
                }
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                // Reading files blocks: off the reactor thread.
                let _ = tokio::task::spawn_blocking(move || shared.terminators.reload_files(false))
                    .await;
            }
        });
    }
}
