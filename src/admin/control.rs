//! What the control API asks of the runtime, as a trait the runtime
//! implements.
//!
//! It exists for the layering: the admin endpoint sits below the runtime
//! and must not import it, yet its write routes change what the runtime
//! owns (the pools, the operator overlay, the state file, deadline tasks).
//! The admin side parses and checks a request into a [`Change`]; the
//! runtime applies it whole or not at all.

use std::time::Duration;

use crate::pool::overlay::{NewBackend, Refused};

/// Applies operators' changes to the running pools.
pub trait Control: Send + Sync {
    /// Applies `change` whole, or refuses it and changes nothing. On
    /// success returns what changed in one line ("state ready -> drain",
    /// "no change").
    fn change(&self, change: Change) -> Result<String, Refused>;
}

/// One operator's request, checked for form (not yet against the pool).
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    /// The pool's name.
    pub pool: String,
    /// The backend's name (for an add, the new backend's).
    pub backend: String,
    /// What to do.
    pub action: Action,
    /// Who asked: the peer address, or "unix socket"; for the log.
    pub who: String,
}

/// What an operator can do to a backend.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// No new connections; open ones finish, or are closed at `deadline`.
    Drain {
        /// When to close what is still open, from now.
        deadline: Option<Duration>,
    },
    /// Out of rotation and not health-checked.
    Maintenance,
    /// Back in rotation.
    Ready,
    /// A new share of connections (1 to [`MAX_WEIGHT`]).
    Weight(u32),
    /// A backend joins the pool.
    Add(NewBackend),
    /// Drains, then leaves the pool when its last connection ends (or is
    /// closed at `deadline`).
    Remove {
        /// When to close what is still open, from now.
        deadline: Option<Duration>,
    },
}

/// The largest weight the API accepts.
pub const MAX_WEIGHT: u32 = 10_000;

impl Action {
    /// The `action` label of `tcplb_admin_changes_total`.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Drain { .. } => "drain",
            Action::Maintenance => "maintenance",
            Action::Ready => "ready",
            Action::Weight(_) => "weight",
            Action::Add(_) => "add",
            Action::Remove { .. } => "remove",
        }
    }
}
