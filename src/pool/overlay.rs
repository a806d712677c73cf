//! The operator's overlay: what the control API changed on top of the
//! configuration, per pool, and how it merges with the configuration.
//!
//! It exists so that a reload (SIGHUP) or a restart does not undo what an
//! operator did at run time, and so that the configuration stays the one
//! place that says which backends exist. Pure data and pure functions: no
//! I/O and no clock, so every merge rule is unit-tested here; the runtime
//! applies the result through `Pool::reconfigure` / `Pool::apply` and keeps
//! the state file (`runtime::state_file`).
//!
//! The merge rules, for one pool (pools are keyed by name):
//!
//! - The configuration says which backends exist. An admin state or weight
//!   the operator set for a configured backend wins over the configuration,
//!   across reloads, until the operator changes it again; setting it back
//!   to the configuration's value (`ready` for a backend configured ready,
//!   the configured weight) clears the override.
//! - A backend added at run time stays across reloads until the
//!   configuration lists the same backend (same name); then the
//!   configuration's entry takes over and the addition is forgotten.
//! - A configured backend removed at run time stays removed until the
//!   configuration no longer lists it, or it is added again (which brings
//!   back the configuration's entry).
//! - A pool that is no longer in the configuration loses its overlay.
//!
//! Beside the pools it keeps one word about the whole instance: whether an
//! operator took it out of rotation (`tcplb ctl ready off`), which
//! `/ready` follows. It lives here so that it travels as the pools'
//! changes do: handed to the new process of an upgrade, and kept in the
//! state file across restarts (a box taken out for maintenance must not
//! come back into a VIP or an ECMP group behind the operator's back when
//! systemd restarts it). A state file without it is an instance that is
//! ready, as before it existed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::config::{AdminState, BackendSpec, ServiceConfig};

/// Every pool's overlay, by pool name: what the state file holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overlay {
    /// The state file's format, so a later one can be told apart.
    #[serde(default = "format_version")]
    pub version: u32,
    /// Pool name to what the operator changed in it.
    #[serde(default)]
    pub pools: BTreeMap<String, PoolOverlay>,
    /// An operator turned this instance's readiness off (`tcplb ctl ready
    /// off`): `/ready` answers 503 until `ready on`. Written only when set.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub not_ready: bool,
}

fn format_version() -> u32 {
    1
}

impl Default for Overlay {
    fn default() -> Self {
        Overlay {
            version: format_version(),
            pools: BTreeMap::new(),
            not_ready: false,
        }
    }
}

/// What the operator changed in one pool.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoolOverlay {
    /// Admin state and weight set for configured backends, by backend name.
    pub overrides: BTreeMap<String, Override>,
    /// Backends added at run time, in the order they were added.
    pub added: Vec<Added>,
    /// Configured backends removed at run time, by name.
    pub removed: BTreeSet<String>,
    /// Backends being removed while their open connections finish: kept in
    /// the member set, draining, as they were when removed. In memory
    /// only: after a restart they have no connections left.
    #[serde(skip)]
    pub removing: BTreeMap<String, BackendSpec>,
}

/// The operator's settings for one configured backend.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Override {
    /// The admin state, when it differs from the configuration's.
    #[serde(with = "state_text", skip_serializing_if = "Option::is_none")]
    pub state: Option<AdminState>,
    /// The weight, when it differs from the configuration's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

impl Override {
    fn is_empty(&self) -> bool {
        self.state.is_none() && self.weight.is_none()
    }
}

/// A backend added at run time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Added {
    /// `HOST:PORT` as the operator gave it: the backend's name.
    pub name: String,
    /// What the name resolved to when it was added.
    pub address: SocketAddr,
    /// Its share of connections.
    pub weight: u32,
    /// Its connection limit; `None` is unlimited.
    #[serde(default)]
    pub maxconn: Option<u32>,
    /// Used only while no primary is usable.
    #[serde(default)]
    pub backup: bool,
    /// What the operator wants of it now.
    #[serde(default, with = "plain_state_text")]
    pub state: AdminState,
}

impl Added {
    fn spec(&self) -> BackendSpec {
        BackendSpec {
            name: self.name.clone(),
            addr: self.address,
            weight: self.weight,
            max_conns: self.maxconn,
            admin_state: self.state,
            backup: self.backup,
            check_addr: None,
            check_port: None,
            source: None,
        }
    }
}

/// Why an operator's change cannot apply; nothing changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refused {
    /// No such backend in the pool.
    NotFound(String),
    /// The change contradicts the pool as it is (a duplicate add, a
    /// backend already being removed).
    Conflict(String),
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::NotFound(m) | Refused::Conflict(m) => f.write_str(m),
        }
    }
}

/// What to add: a new backend, or a configured one removed earlier.
#[derive(Clone, Debug, PartialEq)]
pub struct NewBackend {
    /// The backend, resolved; its weight 1 when none was asked for.
    pub spec: BackendSpec,
    /// Whether the operator gave a weight (else the configuration's applies
    /// to a configured backend added back).
    pub weight_given: bool,
}

impl Overlay {
    /// The pool's overlay, created empty when it has none.
    pub fn pool_mut(&mut self, pool: &str) -> &mut PoolOverlay {
        self.pools.entry(pool.to_string()).or_default()
    }

    /// `base` (the configuration of pool `pool`) with the overlay applied.
    pub fn merged(&self, pool: &str, base: &ServiceConfig) -> ServiceConfig {
        match self.pools.get(pool) {
            Some(overlay) => overlay.merged(base),
            None => base.clone(),
        }
    }

    /// Forgets what the configuration made moot: pools it no longer has,
    /// additions it now lists, removals and overrides of backends it no
    /// longer lists. `pools` is every pool's name and configuration.
    /// Returns whether anything was forgotten.
    pub fn reconcile(&mut self, pools: &[(&str, &ServiceConfig)]) -> bool {
        let before = self.clone();
        self.pools
            .retain(|name, _| pools.iter().any(|(pool, _)| pool == name));
        for (name, base) in pools {
            if let Some(overlay) = self.pools.get_mut(*name) {
                overlay.reconcile(base);
            }
        }
        self.pools.retain(|_, overlay| !overlay.is_empty());
        *self != before
    }
}

impl PoolOverlay {
    /// Nothing overridden, added, removed or being removed.
    pub fn is_empty(&self) -> bool {
        self.overrides.is_empty()
            && self.added.is_empty()
            && self.removed.is_empty()
            && self.removing.is_empty()
    }

    /// `base` with this overlay applied: configured backends (less the
    /// removed, with their overrides), then the added ones the
    /// configuration does not list, then those still being removed.
    pub fn merged(&self, base: &ServiceConfig) -> ServiceConfig {
        let mut config = base.clone();
        let mut backends: Vec<BackendSpec> = Vec::new();
        for spec in &base.backends {
            if let Some(removing) = self.removing.get(&spec.name) {
                backends.push(removing.clone());
                continue;
            }
            if self.removed.contains(&spec.name) {
                continue;
            }
            let mut spec = spec.clone();
            if let Some(o) = self.overrides.get(&spec.name) {
                spec.admin_state = o.state.unwrap_or(spec.admin_state);
                spec.weight = o.weight.unwrap_or(spec.weight);
            }
            backends.push(spec);
        }
        for added in &self.added {
            if !lists(base, &added.name) {
                backends.push(added.spec());
            }
        }
        for (name, spec) in &self.removing {
            if !backends.iter().any(|b| &b.name == name) {
                backends.push(spec.clone());
            }
        }
        config.backends = backends;
        config
    }

    fn reconcile(&mut self, base: &ServiceConfig) {
        self.added.retain(|a| !lists(base, &a.name));
        self.removed.retain(|name| lists(base, name));
        self.overrides.retain(|name, _| lists(base, name));
    }

    /// The backend named `name` as it serves now (`base` with the overlay).
    pub fn current(&self, base: &ServiceConfig, name: &str) -> Option<BackendSpec> {
        self.merged(base)
            .backends
            .into_iter()
            .find(|b| b.name == name)
    }

    /// Sets the admin state of backend `name`.
    pub fn set_state(
        &mut self,
        base: &ServiceConfig,
        name: &str,
        state: AdminState,
    ) -> Result<(), Refused> {
        self.check_changeable(base, name)?;
        match base.backends.iter().find(|b| b.name == name) {
            Some(configured) => {
                let o = self.overrides.entry(name.to_string()).or_default();
                o.state = Some(state).filter(|s| *s != configured.admin_state);
                self.tidy(name);
            }
            None => self.added_mut(name)?.state = state,
        }
        Ok(())
    }

    /// Sets the weight of backend `name`.
    pub fn set_weight(
        &mut self,
        base: &ServiceConfig,
        name: &str,
        weight: u32,
    ) -> Result<(), Refused> {
        self.check_changeable(base, name)?;
        match base.backends.iter().find(|b| b.name == name) {
            Some(configured) => {
                let o = self.overrides.entry(name.to_string()).or_default();
                o.weight = Some(weight).filter(|w| *w != configured.weight);
                self.tidy(name);
            }
            None => self.added_mut(name)?.weight = weight,
        }
        Ok(())
    }

    /// Drops the override of `name` when it no longer overrides anything.
    fn tidy(&mut self, name: &str) {
        if self.overrides.get(name).is_some_and(Override::is_empty) {
            self.overrides.remove(name);
        }
    }

    fn added_mut(&mut self, name: &str) -> Result<&mut Added, Refused> {
        self.added
            .iter_mut()
            .find(|a| a.name == name)
            .ok_or_else(|| not_found(name))
    }

    /// Whether backend `name` is in the pool and not on its way out.
    fn check_changeable(&self, base: &ServiceConfig, name: &str) -> Result<(), Refused> {
        if self.removing.contains_key(name) {
            return Err(Refused::Conflict(format!(
                "backend {name} is being removed"
            )));
        }
        if self.current(base, name).is_none() {
            return Err(not_found(name));
        }
        Ok(())
    }

    /// Adds a backend; a configured one removed earlier comes back with
    /// the configuration's entry (and the weight asked for, if any).
    pub fn add(&mut self, base: &ServiceConfig, new: NewBackend) -> Result<(), Refused> {
        let name = new.spec.name.clone();
        if self.current(base, &name).is_some() {
            return Err(Refused::Conflict(format!(
                "backend {name} is already in the pool"
            )));
        }
        if let Some(configured) = base.backends.iter().find(|b| b.name == name) {
            self.removed.remove(&name);
            if new.weight_given && new.spec.weight != configured.weight {
                self.overrides.insert(
                    name,
                    Override {
                        state: None,
                        weight: Some(new.spec.weight),
                    },
                );
            }
            return Ok(());
        }
        let spec = new.spec;
        self.added.push(Added {
            name: spec.name,
            address: spec.addr,
            weight: spec.weight,
            maxconn: spec.max_conns,
            backup: spec.backup,
            state: spec.admin_state,
        });
        Ok(())
    }

    /// Removes backend `name` and returns it as it was. With `draining`, it
    /// stays in the member set in drain until [`finish_removal`](Self::finish_removal).
    pub fn remove(
        &mut self,
        base: &ServiceConfig,
        name: &str,
        draining: bool,
    ) -> Result<BackendSpec, Refused> {
        self.check_changeable(base, name)?;
        let Some(spec) = self.current(base, name) else {
            return Err(not_found(name));
        };
        if lists(base, name) {
            self.removed.insert(name.to_string());
            self.overrides.remove(name);
        } else {
            self.added.retain(|a| a.name != name);
        }
        if draining {
            let mut drained = spec.clone();
            drained.admin_state = AdminState::Drain;
            self.removing.insert(name.to_string(), drained);
        }
        Ok(spec)
    }

    /// The last connection of a backend being removed ended: it leaves the
    /// member set. False when it was not being removed.
    pub fn finish_removal(&mut self, name: &str) -> bool {
        self.removing.remove(name).is_some()
    }
}

fn lists(base: &ServiceConfig, name: &str) -> bool {
    base.backends.iter().any(|b| b.name == name)
}

fn not_found(name: &str) -> Refused {
    Refused::NotFound(format!("no backend {name} in this pool"))
}

/// `Option<AdminState>` as its text ("drain"); the config types carry no
/// serde impls of their own.
mod state_text {
    use super::*;

    pub fn serialize<S: Serializer>(state: &Option<AdminState>, s: S) -> Result<S::Ok, S::Error> {
        match state {
            Some(state) => s.collect_str(state),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<AdminState>, D::Error> {
        let text = Option::<String>::deserialize(d)?;
        text.map(|t| t.parse().map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// `AdminState` as its text.
mod plain_state_text {
    use super::*;

    pub fn serialize<S: Serializer>(state: &AdminState, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(state)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<AdminState, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_backend;

    fn base(backends: &[&str]) -> ServiceConfig {
        let specs = backends.iter().map(|b| parse_backend(b).unwrap()).collect();
        ServiceConfig::new("127.0.0.1:0".parse().unwrap(), specs)
    }

    /// (name, weight, state) of each merged backend.
    fn members(overlay: &PoolOverlay, base: &ServiceConfig) -> Vec<(String, u32, String)> {
        overlay
            .merged(base)
            .backends
            .iter()
            .map(|b| (b.name.clone(), b.weight, b.admin_state.to_string()))
            .collect()
    }

    fn m(name: &str, weight: u32, state: &str) -> (String, u32, String) {
        (name.to_string(), weight, state.to_string())
    }

    fn new(text: &str, weight: Option<u32>) -> NewBackend {
        let mut spec = parse_backend(text).unwrap();
        spec.weight = weight.unwrap_or(1);
        NewBackend {
            spec,
            weight_given: weight.is_some(),
        }
    }

    #[test]
    fn overrides_win_over_the_config_across_reloads_until_set_back() {
        let c = base(&["127.0.0.1:1", "127.0.0.1:2=2"]);
        let mut o = PoolOverlay::default();
        o.set_state(&c, "127.0.0.1:1", AdminState::Drain).unwrap();
        o.set_weight(&c, "127.0.0.1:2", 5).unwrap();
        assert_eq!(
            members(&o, &c),
            [m("127.0.0.1:1", 1, "drain"), m("127.0.0.1:2", 5, "ready")]
        );
        // A reload that changes the configured weight does not undo the override.
        let reloaded = base(&["127.0.0.1:1", "127.0.0.1:2=3"]);
        let mut all = Overlay::default();
        all.pools.insert("web".into(), o.clone());
        assert!(!all.reconcile(&[("web", &reloaded)]));
        assert_eq!(all.merged("web", &reloaded).backends[1].weight, 5);
        // Back to the configuration's values: the overrides are gone.
        o.set_state(&c, "127.0.0.1:1", AdminState::Ready).unwrap();
        o.set_weight(&c, "127.0.0.1:2", 2).unwrap();
        assert!(o.overrides.is_empty(), "{o:?}");
        assert_eq!(members(&o, &c), members(&PoolOverlay::default(), &c));
    }

    #[test]
    fn ready_clears_an_override_even_when_the_config_says_drain() {
        let mut c = base(&["127.0.0.1:1"]);
        c.backends[0].admin_state = AdminState::Drain;
        let mut o = PoolOverlay::default();
        o.set_state(&c, "127.0.0.1:1", AdminState::Ready).unwrap();
        assert_eq!(members(&o, &c), [m("127.0.0.1:1", 1, "ready")]);
        o.set_state(&c, "127.0.0.1:1", AdminState::Drain).unwrap();
        assert!(
            o.overrides.is_empty(),
            "the config's own state: no override"
        );
    }

    #[test]
    fn an_added_backend_stays_until_the_config_lists_it() {
        let c = base(&["127.0.0.1:1"]);
        let mut all = Overlay::default();
        let o = all.pool_mut("web");
        o.add(&c, new("127.0.0.1:9", Some(4))).unwrap();
        o.set_state(&c, "127.0.0.1:9", AdminState::Maintenance)
            .unwrap();
        assert_eq!(
            members(o, &c),
            [
                m("127.0.0.1:1", 1, "ready"),
                m("127.0.0.1:9", 4, "maintenance")
            ]
        );
        assert_eq!(
            o.add(&c, new("127.0.0.1:9", None)),
            Err(Refused::Conflict(
                "backend 127.0.0.1:9 is already in the pool".into()
            ))
        );
        assert!(!all.reconcile(&[("web", &c)]), "a reload keeps it");
        // The configuration now lists it: its entry takes over.
        let listed = base(&["127.0.0.1:1", "127.0.0.1:9=2"]);
        assert!(all.reconcile(&[("web", &listed)]));
        assert!(all.pools.is_empty(), "{all:?}");
        assert_eq!(
            all.merged("web", &listed).backends,
            listed.backends,
            "the config's entry, the addition forgotten"
        );
    }

    #[test]
    fn a_removed_backend_stays_removed_until_unlisted_or_added_again() {
        let c = base(&["127.0.0.1:1", "127.0.0.1:2=3"]);
        let mut all = Overlay::default();
        let o = all.pool_mut("web");
        o.set_weight(&c, "127.0.0.1:2", 7).unwrap();
        let removed = o.remove(&c, "127.0.0.1:2", false).unwrap();
        assert_eq!(removed.weight, 7, "returned as it served");
        assert_eq!(members(o, &c), [m("127.0.0.1:1", 1, "ready")]);
        assert!(o.overrides.is_empty(), "its override goes with it");
        assert_eq!(
            o.remove(&c, "127.0.0.1:2", false),
            Err(Refused::NotFound(
                "no backend 127.0.0.1:2 in this pool".into()
            ))
        );
        assert!(!all.reconcile(&[("web", &c)]), "a reload keeps it removed");
        assert_eq!(all.merged("web", &c).backends.len(), 1);
        // Added again: the config's entry, with the weight asked for.
        let o = all.pool_mut("web");
        o.add(&c, new("127.0.0.1:2", Some(9))).unwrap();
        assert_eq!(
            members(o, &c),
            [m("127.0.0.1:1", 1, "ready"), m("127.0.0.1:2", 9, "ready")]
        );
        o.remove(&c, "127.0.0.1:2", false).unwrap();
        o.add(&c, new("127.0.0.1:2", None)).unwrap();
        assert_eq!(members(o, &c)[1], m("127.0.0.1:2", 3, "ready"));
        // Removed, then the config drops it: the removal is forgotten.
        o.remove(&c, "127.0.0.1:2", false).unwrap();
        let unlisted = base(&["127.0.0.1:1"]);
        assert!(all.reconcile(&[("web", &unlisted)]));
        assert!(all.pools.is_empty(), "{all:?}");
        // ...so listing it again brings it back.
        assert_eq!(all.merged("web", &c).backends.len(), 2);
    }

    #[test]
    fn a_backend_being_removed_drains_in_the_member_set_until_finished() {
        let c = base(&["127.0.0.1:1", "127.0.0.1:2"]);
        let mut o = PoolOverlay::default();
        o.add(&c, new("127.0.0.1:3", Some(2))).unwrap();
        o.remove(&c, "127.0.0.1:2", true).unwrap();
        o.remove(&c, "127.0.0.1:3", true).unwrap();
        assert_eq!(
            members(&o, &c),
            [
                m("127.0.0.1:1", 1, "ready"),
                m("127.0.0.1:2", 1, "drain"),
                m("127.0.0.1:3", 2, "drain")
            ]
        );
        for name in ["127.0.0.1:2", "127.0.0.1:3"] {
            assert!(matches!(
                o.set_state(&c, name, AdminState::Ready),
                Err(Refused::Conflict(_))
            ));
            assert!(matches!(
                o.add(&c, new(name, None)),
                Err(Refused::Conflict(_))
            ));
        }
        // Not persisted: a restart finds them removed.
        let json = serde_json::to_string(&o).unwrap();
        let restored: PoolOverlay = serde_json::from_str(&json).unwrap();
        assert_eq!(members(&restored, &c), [m("127.0.0.1:1", 1, "ready")]);
        assert!(o.finish_removal("127.0.0.1:2"));
        assert!(!o.finish_removal("127.0.0.1:2"));
        o.finish_removal("127.0.0.1:3");
        assert_eq!(members(&o, &c), [m("127.0.0.1:1", 1, "ready")]);
    }

    #[test]
    fn a_pool_gone_from_the_config_loses_its_overlay() {
        let c = base(&["127.0.0.1:1"]);
        let mut all = Overlay::default();
        all.pool_mut("web")
            .set_weight(&c, "127.0.0.1:1", 3)
            .unwrap();
        all.pool_mut("db").set_weight(&c, "127.0.0.1:1", 4).unwrap();
        assert!(all.reconcile(&[("db", &c)]));
        assert_eq!(all.pools.keys().collect::<Vec<_>>(), ["db"]);
        assert_eq!(all.merged("web", &c).backends[0].weight, 1);
        assert_eq!(all.merged("db", &c).backends[0].weight, 4);
    }

    #[test]
    fn unknown_backends_are_refused_and_nothing_changes() {
        let c = base(&["127.0.0.1:1"]);
        let mut o = PoolOverlay::default();
        let before = o.clone();
        assert!(matches!(
            o.set_state(&c, "127.0.0.1:2", AdminState::Drain),
            Err(Refused::NotFound(_))
        ));
        assert!(matches!(
            o.set_weight(&c, "127.0.0.1:2", 2),
            Err(Refused::NotFound(_))
        ));
        assert!(matches!(
            o.remove(&c, "127.0.0.1:2", true),
            Err(Refused::NotFound(_))
        ));
        assert_eq!(o, before);
    }

    #[test]
    fn the_state_file_form_round_trips_and_rejects_unknown_fields() {
        let c = base(&["127.0.0.1:1", "127.0.0.1:2"]);
        let mut all = Overlay::default();
        let o = all.pool_mut("web");
        o.set_state(&c, "127.0.0.1:1", AdminState::Maintenance)
            .unwrap();
        o.add(&c, new("[::1]:5", Some(3))).unwrap();
        o.remove(&c, "127.0.0.1:2", false).unwrap();
        let json = serde_json::to_string(&all).unwrap();
        assert_eq!(
            json,
            r#"{"version":1,"pools":{"web":{"overrides":{"127.0.0.1:1":{"state":"maintenance"}},"added":[{"name":"[::1]:5","address":"[::1]:5","weight":3,"maxconn":null,"backup":false,"state":"ready"}],"removed":["127.0.0.1:2"]}}}"#
        );
        assert_eq!(serde_json::from_str::<Overlay>(&json).unwrap(), all);
        assert!(serde_json::from_str::<Overlay>(r#"{"pools":{},"x":1}"#).is_err());
        assert!(
            serde_json::from_str::<Overlay>(
                r#"{"pools":{"web":{"overrides":{"a":{"state":"down"}}}}}"#
            )
            .is_err()
        );
    }

    #[test]
    fn readiness_off_is_written_only_when_set_and_survives_a_reconcile() {
        let mut all = Overlay::default();
        assert_eq!(
            serde_json::to_string(&all).unwrap(),
            r#"{"version":1,"pools":{}}"#
        );
        all.not_ready = true;
        let json = serde_json::to_string(&all).unwrap();
        assert_eq!(json, r#"{"version":1,"pools":{},"not_ready":true}"#);
        assert_eq!(serde_json::from_str::<Overlay>(&json).unwrap(), all);
        assert!(!all.reconcile(&[]), "no pool's change to forget");
        assert!(all.not_ready);
    }
}
