//! What the control API asks of the runtime, as a trait the runtime
//! implements.
//!
//! It exists for the layering: the admin endpoint sits below the runtime
//! and must not import it, yet its write routes change what the runtime
//! owns (the pools, the operator overlay, the state file, deadline tasks).
//! The admin side parses and checks a request into a [`Change`]; the
//! runtime applies it whole or not at all. Open connections are listed
//! and closed the same way: the registry belongs to the data path, which
//! the admin endpoint must not import either.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use crate::pool::overlay::{NewBackend, Refused};

/// Applies operators' changes to the running pools, and lists and closes
/// open connections.
pub trait Control: Send + Sync {
    /// Applies `change` whole, or refuses it and changes nothing. On
    /// success returns what changed in one line ("state ready -> drain",
    /// "no change").
    fn change(&self, change: Change) -> Result<String, Refused>;

    /// One page of the open connections `query` asks for, in id order.
    /// An unknown listener is [`Refused::NotFound`].
    fn connections(&self, query: &ConnectionQuery) -> Result<ConnectionPage, Refused>;

    /// Closes open connection `id` (both sockets, at once); returns what
    /// it was. `who` asked, for the log.
    fn close_connection(&self, id: u64, who: &str) -> Result<ConnectionInfo, Refused>;

    /// Closes every open connection of `backend` (by name, or the name DNS
    /// found it under) in `pool`; returns how many.
    fn close_backend_connections(
        &self,
        pool: &str,
        backend: &str,
        who: &str,
    ) -> Result<usize, Refused>;

    /// The operator's word on this instance's readiness (`ready` false:
    /// `/ready` answers 503 until it is true again), kept with the other
    /// runtime changes; `who` asked, for the log. Returns what changed in
    /// one line ("ready on -> off", "no change").
    fn set_ready(&self, ready: bool, who: &str) -> String;
}

/// Which open connections to list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnectionQuery {
    /// Only ids above this (the cursor: the last id of the previous page).
    pub after: u64,
    /// At most this many.
    pub limit: usize,
    /// Only this listener's (its pool name).
    pub listener: Option<String>,
    /// Only those to this backend (by name, or the name DNS found it under).
    pub backend: Option<String>,
}

/// One page of open connections.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConnectionPage {
    /// In id order.
    pub connections: Vec<ConnectionInfo>,
    /// Open connections in all, whatever the query.
    pub open: usize,
    /// Whether more match after the last one.
    pub more: bool,
}

/// One open connection, as listed.
#[derive(Clone, Debug, PartialEq)]
pub struct ConnectionInfo {
    /// Its id: the cursor, and what `DELETE /api/v1/connections/{id}` takes.
    pub id: u64,
    /// The client's address (the one a PROXY header carried, if any).
    pub client: SocketAddr,
    /// Its listener's pool name.
    pub listener: String,
    /// Where its listener is bound.
    pub listen: SocketAddr,
    /// The TLS route that picked its pool; `None` for the listener's own.
    pub route: Option<String>,
    /// The backend it is connected to; `None` while it waits or connects.
    pub backend: Option<String>,
    /// When it was accepted.
    pub started: SystemTime,
    /// How long it has been open.
    pub age: Duration,
    /// How long nothing has moved either way.
    pub idle: Duration,
    /// Bytes client to backend so far.
    pub sent: u64,
    /// Bytes backend to client so far.
    pub received: u64,
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
