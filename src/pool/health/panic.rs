//! Envoy's panic threshold: when fewer than `panic_threshold` percent of a
//! pool's ready primaries pass their checks, the few that do would take
//! the whole load and fall in turn; balancing over every ready primary,
//! healthy or not, spreads it (some connections fail, most succeed).
//!
//! Off by default: in front of a database, a node that fails its check
//! (a replica, a demoted primary) must not take writes, panic or not.
//! While no primary is usable but a backup is, the backups serve as
//! always: panic is for a pool with nowhere better to go. The operator's
//! drain and maintenance are kept under panic: only health is ignored.
//! Entering and leaving panic are each logged once and counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use log::warn;

use crate::pool::backend::Backend;

/// One pool's panic state, shared by its snapshots.
#[derive(Debug, Default)]
pub struct PanicState {
    /// In panic now.
    active: AtomicBool,
    /// Times the pool entered panic.
    entered: AtomicU64,
}

impl PanicState {
    /// Whether `backends` are in panic under `threshold`; logs (naming
    /// `pool`) and counts entering and leaving, once each.
    pub fn evaluate(&self, pool: &str, backends: &[Arc<Backend>], threshold: Option<u8>) -> bool {
        let now = threshold.is_some_and(|t| in_panic(backends, t));
        if self.active.load(Relaxed) != now && self.active.swap(now, Relaxed) != now {
            if now {
                self.entered.fetch_add(1, Relaxed);
                warn!(
                    "{pool}: PANIC: fewer than {}% of the ready primaries pass their checks; \
                     balancing over all of them",
                    threshold.unwrap_or_default()
                );
            } else {
                warn!("{pool}: panic over: balancing over the healthy backends again");
            }
        }
        now
    }

    /// In panic now (as last evaluated).
    pub fn is_active(&self) -> bool {
        self.active.load(Relaxed)
    }

    /// Times the pool entered panic.
    pub fn entered(&self) -> u64 {
        self.entered.load(Relaxed)
    }
}

/// Whether fewer than `threshold` percent of the ready primaries are
/// usable (up, not ejected), with no usable backup to take over when none
/// is.
pub fn in_panic(backends: &[Arc<Backend>], threshold: u8) -> bool {
    let (mut ready, mut usable, mut usable_backups) = (0u64, 0u64, 0u64);
    for b in backends {
        if !b.is_ready() {
            continue;
        }
        let ok = b.is_up() && !b.is_failing();
        if b.is_backup() {
            usable_backups += u64::from(ok);
        } else {
            ready += 1;
            usable += u64::from(ok);
        }
    }
    if ready == 0 || (usable == 0 && usable_backups > 0) {
        return false;
    }
    usable * 100 < u64::from(threshold) * ready
}
