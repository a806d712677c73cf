//! A listener's TLS routes as the runtime runs them: each route's pool
//! with its prober and DNS tasks, built at start, reconciled by name on
//! reload (a kept route keeps its pool, backends' health and counters),
//! and published to the data path as one immutable [`Routes`].

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::config::{RouteConfig, ServiceConfig};
use crate::pool::Pool;
use crate::pool::discovery::dns::{FirstLookups, Watching};
use crate::pool::health::active::Prober;
use crate::proxy::route::{Route, RouteTable, Routes};
use crate::proxy::tls::Terminator;
use crate::stats::RouteStats;

/// One route and its pool.
pub(super) struct RunningRoute {
    /// Its configuration as loaded, before the operator overlay: its pool
    /// settings are what the overlay is merged on.
    pub(super) config: RouteConfig,
    /// Its pool, named as the route.
    pub(super) pool: Arc<Pool>,
    /// Its counters; a reload that keeps the route keeps them.
    pub(super) stats: Arc<RouteStats>,
    /// Stops its prober and DNS tasks; a child of the listener's token.
    pub(super) stop: CancellationToken,
    /// The tasks that keep its backend names current.
    pub(super) dns: Watching,
    /// When it terminates TLS.
    pub(super) tls: Option<Arc<Terminator>>,
}

impl RunningRoute {
    pub(super) fn name(&self) -> &str {
        &self.config.name
    }

    /// Its pool settings as configured.
    pub(super) fn base(&self) -> &ServiceConfig {
        &self.config.pool
    }
}

/// What a reload does to one route, decided before anything changes.
pub(super) enum RoutePlan {
    /// The route of this index keeps running, with these fresh lookups
    /// and its TLS termination (when it has one) updated.
    Keep(usize, FirstLookups, Option<Arc<Terminator>>),
    /// A new route, built but not started.
    New(Box<RunningRoute>),
}

impl Shared {
    /// Builds `config`'s pool (names looked up first; an SRV name that
    /// does not resolve is an error). Nothing runs until [`Self::start_route`].
    pub(super) fn build_route(
        &self,
        config: RouteConfig,
        listener_stop: &CancellationToken,
    ) -> Result<RunningRoute, String> {
        let merged = self.control.merged(&config.name, &config.pool);
        let first = self.discovery.first_answers(&config.name, &merged, None)?;
        let pool = Arc::new(Pool::with_found(config.name.clone(), merged, &first.found));
        first.count_into(&pool);
        pool.configure_backend_tls(config.pool.backend_tls.as_ref())?;
        let stats = Arc::<RouteStats>::default();
        let tls = self.route_terminator(&config, &stats.tls)?;
        Ok(RunningRoute {
            config,
            pool,
            stats,
            stop: listener_stop.child_token(),
            dns: Watching::default(),
            tls,
        })
    }

    /// Starts probing `route`'s backends and watching its names.
    pub(super) fn start_route(&self, route: &mut RunningRoute) {
        let first_round = self.first_probes.token();
        self.tasks.spawn(
            Prober::new(route.pool.clone())
                .run_reporting(route.stop.clone(), move || drop(first_round)),
        );
        self.discovery
            .watch(&route.pool, &mut route.dns, &route.stop, &self.tasks);
    }

    /// Plans the routes `new` asks for against those `running`: kept by
    /// name (with fresh lookups) or built anew. Changes nothing; fails
    /// whole, as a reload must.
    pub(super) fn plan_routes(
        &self,
        running: &[RunningRoute],
        new: &[RouteConfig],
        listener_stop: &CancellationToken,
    ) -> Result<Vec<RoutePlan>, String> {
        new.iter()
            .map(
                |config| match running.iter().position(|r| r.name() == config.name) {
                    Some(index) => {
                        let pool = &running[index].pool;
                        let first =
                            self.discovery
                                .first_answers(&config.name, &config.pool, Some(pool))?;
                        let tls = self.route_terminator(config, &running[index].stats.tls)?;
                        Ok(RoutePlan::Keep(index, first, tls))
                    }
                    None => Ok(RoutePlan::New(Box::new(
                        self.build_route(config.clone(), listener_stop)?,
                    ))),
                },
            )
            .collect()
    }

    /// Carries out `plans` (from [`Self::plan_routes`] for `new`): kept
    /// routes take their new settings, new ones start when `running`, and
    /// routes no longer configured stop (their open connections go on).
    /// Returns the routes now, in configuration order, and a summary of
    /// what changed.
    pub(super) fn apply_routes(
        &self,
        old: Vec<RunningRoute>,
        new: Vec<RouteConfig>,
        plans: Vec<RoutePlan>,
        running: bool,
    ) -> (Vec<RunningRoute>, Vec<String>) {
        let mut old: Vec<Option<RunningRoute>> = old.into_iter().map(Some).collect();
        let mut routes = Vec::new();
        let mut changes = Vec::new();
        for (config, plan) in new.into_iter().zip(plans) {
            match plan {
                RoutePlan::Keep(index, first, tls) => {
                    let Some(mut route) = old[index].take() else {
                        continue;
                    };
                    let merged = self.control.merged(&config.name, &config.pool);
                    if config != route.config {
                        changes.push(format!("route {} changed", config.name));
                    }
                    route.pool.reconfigure_with(merged, &first.found);
                    if let Err(e) = route
                        .pool
                        .configure_backend_tls(config.pool.backend_tls.as_ref())
                    {
                        log::warn!("{e}; its backends are reached without the new TLS settings");
                    }
                    first.count_into(&route.pool);
                    route.config = config;
                    route.tls = tls;
                    if running {
                        self.discovery
                            .watch(&route.pool, &mut route.dns, &route.stop, &self.tasks);
                    }
                    routes.push(route);
                }
                RoutePlan::New(mut route) => {
                    changes.push(format!("route {} added", route.name()));
                    if running {
                        self.start_route(&mut route);
                    }
                    routes.push(*route);
                }
            }
        }
        for route in old.into_iter().flatten() {
            route.stop.cancel();
            changes.push(format!("route {} removed", route.name()));
        }
        (routes, changes)
    }
}

/// What the data path reads: the table, each route's pool and TLS, and
/// the listener's own TLS termination (`terminate`).
pub(super) fn published(routes: &[RunningRoute], terminate: Option<Arc<Terminator>>) -> Routes {
    let configs: Vec<RouteConfig> = routes.iter().map(|r| r.config.clone()).collect();
    Routes {
        table: RouteTable::new(&configs),
        routes: routes
            .iter()
            .map(|r| Route {
                name: r.name().to_string(),
                pool: r.pool.clone(),
                stats: r.stats.clone(),
                tls: r.tls.clone(),
            })
            .collect(),
        terminate,
    }
}
