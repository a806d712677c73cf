//! Discovery: where a pool's member set comes from, and how a change of it
//! becomes a change of the pool.
//!
//! A source speaks in [`Update`]s, the way linkerd2-proxy's balancer takes
//! them: `Reset` (this is the whole set now), `Add` or `Remove`. The pool
//! diffs each update against what it has ([`diff`]), so a backend that stays
//! keeps its health and counters, one whose weight, limit or admin state
//! changed is updated in place, and one that leaves drains: it stays alive
//! for as long as its open connections hold it. Each change is logged once
//! at info level and counted in the pool's stats.
//!
//! Today the one source is [`Static`]: the list in the configuration,
//! re-read on SIGHUP. A source that changes on its own (DNS, the control
//! API) sends its updates to the same [`Pool::apply`](crate::pool::Pool::apply).

use std::net::SocketAddr;

use crate::config::BackendSpec;

/// A change to a pool's member set.
#[derive(Clone, Debug, PartialEq)]
pub enum Update {
    /// The whole set is now exactly these.
    Reset(Vec<BackendSpec>),
    /// This one joins (or, when already there, takes these settings).
    Add(BackendSpec),
    /// The backend with this name and address leaves.
    Remove { name: String, addr: SocketAddr },
}

/// The backends listed in the configuration file or on the command line.
pub struct Static {
    backends: Vec<BackendSpec>,
}

impl Static {
    pub fn new(backends: Vec<BackendSpec>) -> Self {
        Static { backends }
    }

    /// The whole configured set, as one update.
    pub fn update(self) -> Update {
        Update::Reset(self.backends)
    }
}

/// What applying an update to a member set means, backend by backend.
#[derive(Debug, Default, PartialEq)]
pub struct Diff {
    /// The new member set, in order: for each, the index of the current
    /// member it keeps (`Some`) or the spec to build it from (`None`).
    pub members: Vec<Member>,
    /// Indices of current members that leave.
    pub removed: Vec<usize>,
    /// Specs that named a member already listed, ignored (first one wins).
    pub duplicates: Vec<BackendSpec>,
}

#[derive(Debug, PartialEq)]
pub enum Member {
    /// Current member `index` stays, taking the settings in `spec`.
    Kept { index: usize, spec: BackendSpec },
    /// A new backend.
    Added(BackendSpec),
    /// Current member `index` stays as it is (an `Add` or `Remove` named another).
    Untouched(usize),
}

/// Works out what `update` does to a pool whose members are `current`
/// (name and address of each, in order). Members are identified by name
/// and address together: a backend listed under another name is another
/// backend.
pub fn diff(current: &[(&str, SocketAddr)], update: Update) -> Diff {
    let find = |spec: &BackendSpec| {
        current
            .iter()
            .position(|&(name, addr)| name == spec.name && addr == spec.addr)
    };
    let mut out = Diff::default();
    match update {
        Update::Reset(specs) => {
            let mut claimed = vec![false; current.len()];
            let mut seen: Vec<(String, SocketAddr)> = Vec::new();
            for spec in specs {
                if seen.iter().any(|(n, a)| *n == spec.name && *a == spec.addr) {
                    out.duplicates.push(spec);
                    continue;
                }
                seen.push((spec.name.clone(), spec.addr));
                match find(&spec) {
                    Some(index) => {
                        claimed[index] = true;
                        out.members.push(Member::Kept { index, spec });
                    }
                    None => out.members.push(Member::Added(spec)),
                }
            }
            out.removed = (0..current.len()).filter(|&i| !claimed[i]).collect();
        }
        Update::Add(spec) => {
            let existing = find(&spec);
            out.members = (0..current.len())
                .map(|i| match existing {
                    Some(index) if index == i => Member::Kept {
                        index,
                        spec: spec.clone(),
                    },
                    _ => Member::Untouched(i),
                })
                .collect();
            if existing.is_none() {
                out.members.push(Member::Added(spec));
            }
        }
        Update::Remove { name, addr } => {
            for (i, &(n, a)) in current.iter().enumerate() {
                if n == name && a == addr {
                    out.removed.push(i);
                } else {
                    out.members.push(Member::Untouched(i));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_backend;

    fn spec(text: &str) -> BackendSpec {
        parse_backend(text).unwrap()
    }

    fn members(specs: &[BackendSpec]) -> Vec<(&str, SocketAddr)> {
        specs.iter().map(|s| (s.name.as_str(), s.addr)).collect()
    }

    #[test]
    fn a_reset_keeps_adds_and_removes_by_name_and_address() {
        let current = [
            spec("127.0.0.1:1"),
            spec("127.0.0.1:2"),
            spec("127.0.0.1:3"),
        ];
        let update = Update::Reset(vec![
            spec("127.0.0.1:3=5"),
            spec("127.0.0.1:4"),
            spec("127.0.0.1:1"),
        ]);
        let d = diff(&members(&current), update);
        assert_eq!(
            d.members,
            [
                Member::Kept {
                    index: 2,
                    spec: spec("127.0.0.1:3=5")
                },
                Member::Added(spec("127.0.0.1:4")),
                Member::Kept {
                    index: 0,
                    spec: spec("127.0.0.1:1")
                },
            ]
        );
        assert_eq!(d.removed, [1]);
        assert!(d.duplicates.is_empty());
    }

    #[test]
    fn a_reset_lists_each_backend_once() {
        let update = Update::Reset(vec![spec("127.0.0.1:1"), spec("127.0.0.1:1=3")]);
        let d = diff(&[], update);
        assert_eq!(d.members, [Member::Added(spec("127.0.0.1:1"))]);
        assert_eq!(d.duplicates, [spec("127.0.0.1:1=3")]);
    }

    #[test]
    fn add_and_remove_touch_only_the_backend_they_name() {
        let current = [spec("127.0.0.1:1"), spec("127.0.0.1:2")];
        let d = diff(&members(&current), Update::Add(spec("127.0.0.1:3")));
        assert_eq!(
            d.members,
            [
                Member::Untouched(0),
                Member::Untouched(1),
                Member::Added(spec("127.0.0.1:3"))
            ]
        );
        let d = diff(&members(&current), Update::Add(spec("127.0.0.1:2=4")));
        assert_eq!(
            d.members,
            [
                Member::Untouched(0),
                Member::Kept {
                    index: 1,
                    spec: spec("127.0.0.1:2=4")
                }
            ]
        );
        let gone = Update::Remove {
            name: "127.0.0.1:1".into(),
            addr: current[0].addr,
        };
        let d = diff(&members(&current), gone);
        assert_eq!(
            (d.members, d.removed),
            (vec![Member::Untouched(1)], vec![0])
        );
        let unknown = Update::Remove {
            name: "127.0.0.1:9".into(),
            addr: "127.0.0.1:9".parse().unwrap(),
        };
        let d = diff(&members(&current), unknown);
        assert!(d.removed.is_empty() && d.members.len() == 2);
    }
}
