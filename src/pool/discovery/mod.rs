//! Discovery: where a pool's member set comes from, and how a change of it
//! becomes a change of the pool.
//!
//! A source speaks in [`Update`]s, the way linkerd2-proxy's balancer takes
//! them: `Reset` (this is the whole set now), `Add` or `Remove`, and
//! `ResetGroup` (the members found under one name are now these). The pool
//! diffs each update against what it has ([`diff`]), so a backend that stays
//! keeps its health and counters, one whose weight, limit or admin state
//! changed is updated in place, and one that leaves drains: it stays alive
//! for as long as its open connections hold it. Each change is logged once
//! at info level and counted in the pool's stats.
//!
//! Two sources today. [`Static`]: the list in the configuration, re-read on
//! SIGHUP. [`dns`]: a backend configured by name (`db.example:5432`,
//! `srv:_pg._tcp.example`) is a *group* whose members are the addresses its
//! lookups find, each a backend of its own named by its address, with the
//! configured name as its `source`. A configured list reaches the pool with
//! such names in it; [`expand`] puts each group's members in their place.
//! A source that changes on its own (DNS, the control API) sends its
//! updates to the same [`Pool::apply`](crate::pool::Pool::apply).

pub mod dns;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::config::{BackendSpec, DnsName};
use crate::pool::backend::Backend;

/// A change to a pool's member set.
#[derive(Clone, Debug, PartialEq)]
pub enum Update {
    /// The whole set is now exactly these.
    Reset(Vec<BackendSpec>),
    /// This one joins (or, when already there, takes these settings).
    Add(BackendSpec),
    /// The backend with this name and address leaves.
    Remove { name: String, addr: SocketAddr },
    /// The members found under `group` (a backend name as configured) are
    /// now exactly `members`; every other member stays as it is.
    ResetGroup {
        group: String,
        members: Vec<BackendSpec>,
    },
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

/// Fresh members for names configured for discovery, by the name as
/// configured: what a lookup at start-up or reload found.
pub type Found = HashMap<String, Vec<BackendSpec>>;

/// A current member as [`diff`] sees it: name, address, and the name
/// discovery found it under (`None` for a configured backend).
pub type Present<'a> = (&'a str, SocketAddr, Option<&'a str>);

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
/// (name, address and source of each, in order). A member is kept only by
/// a spec with the same name, address and source; two specs with the same
/// name and address are one backend too many, whatever their sources (the
/// first one listed, or already a member, wins), since logs and metrics
/// know a backend by its name.
pub fn diff(current: &[Present<'_>], update: Update) -> Diff {
    let find = |spec: &BackendSpec| {
        current.iter().position(|&(name, addr, source)| {
            name == spec.name && addr == spec.addr && source == spec.source.as_deref()
        })
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
            for (i, &(n, a, _)) in current.iter().enumerate() {
                if n == name && a == addr {
                    out.removed.push(i);
                } else {
                    out.members.push(Member::Untouched(i));
                }
            }
        }
        Update::ResetGroup { group, members } => {
            let mut kept: Vec<Option<BackendSpec>> = vec![None; current.len()];
            let mut added: Vec<BackendSpec> = Vec::new();
            for mut spec in members {
                spec.source = Some(group.clone());
                let listed = |n: &str, a: SocketAddr| n == spec.name && a == spec.addr;
                let twice = added.iter().any(|s| listed(&s.name, s.addr))
                    || kept.iter().flatten().any(|s| listed(&s.name, s.addr));
                // Already a member found another way (configured, or under
                // another name): that one stays, this one is not added.
                let elsewhere = current
                    .iter()
                    .any(|&(n, a, source)| listed(n, a) && source != Some(group.as_str()));
                if twice || elsewhere {
                    out.duplicates.push(spec);
                    continue;
                }
                match find(&spec) {
                    Some(index) => kept[index] = Some(spec),
                    None => added.push(spec),
                }
            }
            for (index, (&(_, _, source), spec)) in current.iter().zip(kept).enumerate() {
                match spec {
                    Some(spec) => out.members.push(Member::Kept { index, spec }),
                    None if source == Some(group.as_str()) => out.removed.push(index),
                    None => out.members.push(Member::Untouched(index)),
                }
            }
            out.members.extend(added.into_iter().map(Member::Added));
        }
    }
    out
}

/// Whether `spec` is a backend configured by name, whose members discovery
/// finds (`db.example:5432`, `srv:_pg._tcp.example`).
pub fn is_group(spec: &BackendSpec) -> bool {
    spec.dns_name().is_some()
}

/// The member of group `template` (a backend configured by name) at
/// `addr`: named by its address, with the group's settings.
pub fn member(template: &BackendSpec, addr: SocketAddr) -> BackendSpec {
    BackendSpec {
        name: addr.to_string(),
        addr,
        source: Some(template.name.clone()),
        ..template.clone()
    }
}

/// A member found by a lookup, brought up to date with its group's entry
/// as configured now (an operator may have drained it or changed its
/// weight since the lookup began): the entry's settings, except that SRV
/// members keep the weight and backup flag their records gave them.
pub fn retemplate(template: &BackendSpec, found: &BackendSpec) -> BackendSpec {
    let mut m = member(template, found.addr);
    if matches!(template.dns_name(), Some(DnsName::Srv(_))) {
        m.weight = found.weight;
        m.backup = found.backup;
    }
    m
}

/// The configured list with every group replaced by its members, in place:
/// the members in `found` when a lookup just found some; else the members
/// the pool has for it now (`current`), taking the group's settings (a
/// reload that keeps the name keeps them); else, for a `HOST:PORT` name,
/// the address it resolved to when the configuration was read.
///
/// For SRV members, the weight and backup flag kept from `current` came
/// from the records; the next lookup brings them up to date.
pub fn expand(
    configured: Vec<BackendSpec>,
    current: &[Arc<Backend>],
    found: &Found,
) -> Vec<BackendSpec> {
    let mut out = Vec::with_capacity(configured.len());
    for spec in configured {
        let Some(name) = spec.dns_name() else {
            out.push(spec);
            continue;
        };
        if let Some(members) = found.get(&spec.name) {
            out.extend(members.iter().cloned());
            continue;
        }
        let before = out.len();
        for b in current
            .iter()
            .filter(|b| b.source() == Some(spec.name.as_str()))
        {
            let mut m = member(&spec, b.addr());
            if matches!(name, DnsName::Srv(_)) {
                m.weight = b.weight();
                m.backup = b.is_backup();
            }
            out.push(m);
        }
        if out.len() == before && spec.addr.port() != 0 {
            out.push(member(&spec, spec.addr));
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

    fn members(specs: &[BackendSpec]) -> Vec<Present<'_>> {
        specs
            .iter()
            .map(|s| (s.name.as_str(), s.addr, s.source.as_deref()))
            .collect()
    }

    /// A backend configured by name, as parsing it would give (without
    /// asking a resolver): its first address `addr`.
    fn group(name: &str, addr: &str) -> BackendSpec {
        BackendSpec {
            name: name.into(),
            addr: addr.parse().unwrap(),
            ..spec("127.0.0.1:1")
        }
    }

    fn found(group: &BackendSpec, addrs: &[&str]) -> Vec<BackendSpec> {
        addrs
            .iter()
            .map(|a| member(group, a.parse().unwrap()))
            .collect()
    }

    #[test]
    fn a_group_reset_touches_only_its_own_members() {
        let web = group("web.example:80", "10.0.0.1:80");
        let current = vec![
            spec("127.0.0.1:1"),
            member(&web, "10.0.0.1:80".parse().unwrap()),
            member(
                &group("db.example:80", "10.0.0.9:80"),
                "10.0.0.9:80".parse().unwrap(),
            ),
            member(&web, "10.0.0.2:80".parse().unwrap()),
        ];
        // {A, B} -> {B, C}: A leaves, B stays where it is, C joins at the end.
        let update = Update::ResetGroup {
            group: web.name.clone(),
            members: found(&web, &["10.0.0.2:80", "10.0.0.3:80"]),
        };
        let d = diff(&members(&current), update);
        assert_eq!(
            d.members,
            [
                Member::Untouched(0),
                Member::Untouched(2),
                Member::Kept {
                    index: 3,
                    spec: current[3].clone()
                },
                Member::Added(member(&web, "10.0.0.3:80".parse().unwrap())),
            ]
        );
        assert_eq!(d.removed, [1]);
        assert!(d.duplicates.is_empty());
    }

    #[test]
    fn a_group_never_takes_an_address_another_source_has() {
        let web = group("web.example:80", "10.0.0.1:80");
        let configured = spec("127.0.0.1:1");
        let current = [configured.clone()];
        let update = Update::ResetGroup {
            group: web.name.clone(),
            members: found(&web, &["127.0.0.1:1", "10.0.0.2:80", "10.0.0.2:80"]),
        };
        let d = diff(&members(&current), update);
        assert_eq!(
            d.members,
            [
                Member::Untouched(0),
                Member::Added(member(&web, "10.0.0.2:80".parse().unwrap()))
            ]
        );
        assert_eq!(d.duplicates.len(), 2, "{:?}", d.duplicates);
        assert!(d.removed.is_empty());
        // An empty group reset removes the group's members, nothing else:
        // discovery never sends one (a failed lookup keeps the last set),
        // but the diff must not depend on that.
        let current = [configured, member(&web, "10.0.0.2:80".parse().unwrap())];
        let d = diff(
            &members(&current),
            Update::ResetGroup {
                group: web.name.clone(),
                members: Vec::new(),
            },
        );
        assert_eq!(
            (d.members, d.removed),
            (vec![Member::Untouched(0)], vec![1])
        );
    }

    #[test]
    fn the_same_address_from_another_source_is_another_backend() {
        // A reload that turns 10.0.0.1:80 into web.example:80 (which
        // resolves to it) replaces the backend: its lifecycle is now DNS's.
        let web = group("web.example:80", "10.0.0.1:80");
        let current = [spec("10.0.0.1:80")];
        let update = Update::Reset(found(&web, &["10.0.0.1:80"]));
        let d = diff(&members(&current), update);
        assert_eq!(d.removed, [0]);
        assert!(matches!(d.members[..], [Member::Added(_)]));
    }

    #[test]
    fn expand_puts_each_group_in_place_keeping_members_across_reloads() {
        let web = group("web.example:80", "10.0.0.1:80");
        let srv = BackendSpec {
            name: "srv:_db._tcp.example".into(),
            addr: "0.0.0.0:0".parse().unwrap(),
            ..spec("127.0.0.1:1")
        };
        let configured = vec![spec("127.0.0.1:1"), web.clone(), srv.clone()];

        // Nothing found and nothing yet: the address read at start-up; an
        // SRV name has none.
        let specs = expand(configured.clone(), &[], &Found::new());
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["127.0.0.1:1", "10.0.0.1:80"]);
        assert_eq!(specs[1].source.as_deref(), Some("web.example:80"));

        // A lookup's answer wins.
        let mut first = Found::new();
        first.insert(
            web.name.clone(),
            found(&web, &["10.0.0.2:80", "10.0.0.3:80"]),
        );
        let mut from_srv = member(&srv, "10.0.0.7:5432".parse().unwrap());
        from_srv.weight = 30;
        from_srv.backup = true;
        first.insert(srv.name.clone(), vec![from_srv]);
        let specs = expand(configured.clone(), &[], &first);
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            ["127.0.0.1:1", "10.0.0.2:80", "10.0.0.3:80", "10.0.0.7:5432"]
        );

        // A reload with new settings and no answer keeps the members, with
        // the new settings; SRV weights and backup stay the records'.
        let current: Vec<Arc<Backend>> = specs.iter().map(|s| Arc::new(Backend::new(s))).collect();
        let mut reloaded = configured;
        reloaded[1].weight = 4;
        reloaded[2].max_conns = Some(10);
        let specs = expand(reloaded, &current, &Found::new());
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            ["127.0.0.1:1", "10.0.0.2:80", "10.0.0.3:80", "10.0.0.7:5432"]
        );
        assert_eq!((specs[1].weight, specs[2].weight), (4, 4));
        assert_eq!(
            (specs[3].weight, specs[3].backup, specs[3].max_conns),
            (30, true, Some(10))
        );
        // Diffed against the pool, nothing leaves: each one is kept.
        let present: Vec<Present<'_>> = current
            .iter()
            .map(|b| (b.name(), b.addr(), b.source()))
            .collect();
        let d = diff(&present, Update::Reset(specs));
        assert!(d.removed.is_empty(), "{d:?}");
        assert!(d.members.iter().all(|m| matches!(m, Member::Kept { .. })));
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
