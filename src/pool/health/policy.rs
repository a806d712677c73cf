//! What a change of a backend's health does beyond the pick: logged once
//! with its reason, noted in the backend's report (the time of the last
//! transition in `/status`), and the pool's policies applied:
//!
//! - `on_down = "close"`: the backend's open connections are closed at
//!   once (HAProxy's `on-marked-down shutdown-sessions`), so the clients
//!   of a demoted primary reconnect to the new one instead of writing to
//!   a node that no longer takes writes;
//! - `on_backup_up = "close"`: when a primary comes back up, the backups'
//!   open connections are closed (HAProxy's `on-marked-up
//!   shutdown-backup-sessions`), so every client returns to the primaries.
//!
//! A change is the backend's health as the pick sees it (checks, failed
//! connects and the agent together) differing from what it was before the
//! report that changed it.

use std::sync::Arc;

use log::info;

use super::{Transition, log_transition};
use crate::config::{HealthConfig, OnHealthChange};
use crate::pool::backend::Backend;

/// Settles a report on `backend` (a member of `backends`) that may have
/// changed its health from `was_up`: logs and notes the transition with
/// `why`, applies `health`'s policies, and returns the transition.
pub fn report_change(
    backends: &[Arc<Backend>],
    backend: &Backend,
    was_up: bool,
    why: &str,
    health: &HealthConfig,
) -> Option<Transition> {
    let transition = match (was_up, backend.is_up()) {
        (true, false) => Transition::Down,
        (false, true) => Transition::Up,
        _ => return None,
    };
    log_transition(backend, transition, why);
    backend.health.record_change(why);
    match transition {
        Transition::Down if health.on_down == OnHealthChange::Close => {
            let open = backend.close_connections();
            if open > 0 {
                info!(
                    "backend {backend} is down: closed {open} open connection(s) (on_down = close)"
                );
            }
        }
        Transition::Up => {
            backend.became_eligible();
            if health.on_backup_up == OnHealthChange::Close && !backend.is_backup() {
                for backup in backends.iter().filter(|b| b.is_backup()) {
                    let open = backup.close_connections();
                    if open > 0 {
                        info!(
                            "backup {backup}: closed {open} open connection(s): primary {backend} \
                             is up (on_backup_up = close)"
                        );
                    }
                }
            }
        }
        Transition::Down => {}
    }
    Some(transition)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_backend;

    fn pool(specs: &[(&str, bool)]) -> Vec<Arc<Backend>> {
        specs
            .iter()
            .map(|(addr, backup)| {
                let mut spec = parse_backend(addr).unwrap();
                spec.backup = *backup;
                Arc::new(Backend::new(&spec))
            })
            .collect()
    }

    #[test]
    fn on_down_close_cancels_the_open_connections_and_not_later_ones() {
        let backends = pool(&[("127.0.0.1:1", false)]);
        let b = &backends[0];
        let open = b.eviction();
        let mut health = HealthConfig::default();
        b.health.record_failure(1);
        assert_eq!(
            report_change(&backends, b, true, "refused", &health),
            Some(Transition::Down)
        );
        assert!(!open.is_cancelled(), "keep is the default");
        assert_eq!(report_change(&backends, b, false, "refused", &health), None);

        health.on_down = OnHealthChange::Close;
        b.health.record_success(1);
        report_change(&backends, b, false, "passed", &health);
        b.health.record_failure(1);
        report_change(&backends, b, true, "refused", &health);
        assert!(open.is_cancelled());
        assert!(
            !b.eviction().is_cancelled(),
            "new connections are not doomed"
        );
        assert_eq!(b.health.report().why, "refused");
    }

    #[test]
    fn on_backup_up_close_cancels_the_backups_when_a_primary_returns() {
        let backends = pool(&[("127.0.0.1:1", false), ("127.0.0.1:2", true)]);
        let on_backup = backends[1].eviction();
        let health = HealthConfig {
            on_backup_up: OnHealthChange::Close,
            ..HealthConfig::default()
        };
        backends[0].health.record_failure(1);
        report_change(&backends, &backends[0], true, "refused", &health);
        assert!(!on_backup.is_cancelled(), "a primary going down keeps them");
        backends[0].health.record_success(1);
        report_change(&backends, &backends[0], false, "passed", &health);
        assert!(on_backup.is_cancelled());
    }
}
