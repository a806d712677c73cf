//! TLS routes: which pool a connection goes to, by the server name (SNI)
//! and ALPN protocols of its ClientHello ([`super::client_hello`]).
//!
//! Precedence, first match wins:
//! 1. a route naming the server name exactly;
//! 2. a wildcard route (`*.example.com`), the longest suffix first, so
//!    `*.eu.example.com` beats `*.example.com`;
//! 3. a route with no server names (ALPN only), for any name or none;
//! 4. the listener's own backends, the default route, when it has some.
//!
//! At each step a route that also names ALPN protocols (and shares one
//! with the client) comes before one that does not; between equals the
//! earlier in the file wins. A route naming ALPN protocols never takes a
//! client that offers none of them.
//!
//! ACME's routes come first: for a hello offering `acme-tls/1`, a route
//! whose `alpn` is exactly that protocol wins over every other route,
//! whatever the name (the steps above order the ACME routes among
//! themselves). An ACME CA validating `tls-alpn-01` for `a.example.com`
//! must reach the ACME client, not the route that serves `a.example.com`
//! (RFC 8737; nginx's and HAProxy's recipes for it route on
//! `acme-tls/1` before anything else, as ghostunnel answers it first).
//!
//! Only the hello routes: a PROXY v2 authority TLV from a proxy in front
//! never does (the hello's server name is what the backend's handshake
//! will see, so it also wins as the authority sent on; see
//! [`super::proxy_protocol::greeting`]).
//!
//! The table is built once per configuration and read without locks:
//! exact names and wildcard suffixes are hash lookups, one per label of
//! the name, so a long table costs no more per connection than a short one.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{RouteConfig, ServerName};
use crate::pool::Pool;
use crate::proxy::client_hello::ClientHello;
use crate::proxy::tls::Terminator;
use crate::stats::RouteStats;

/// A listener's routes with their pools: what connections read through
/// an `ArcSwap`, swapped whole on reload. Everything a ClientHello
/// decides is here, the listener's own TLS termination included.
#[derive(Default)]
pub struct Routes {
    /// Finds the route for a ClientHello.
    pub table: RouteTable,
    /// The routes, in configuration order (the table's indices).
    pub routes: Vec<Route>,
    /// When the listener terminates TLS for its own backends (no routes,
    /// or the default route): its terminator.
    pub terminate: Option<Arc<Terminator>>,
}

/// One route as connections use it.
pub struct Route {
    /// Its name, also its pool's name.
    pub name: String,
    /// Where its connections go.
    pub pool: Arc<Pool>,
    /// Its counters; kept across reloads while the route keeps its name.
    pub stats: Arc<RouteStats>,
    /// When the route terminates TLS: its terminator. `None`: TLS passes
    /// through to the pool.
    pub tls: Option<Arc<Terminator>>,
}

impl Routes {
    /// Whether the listener reads ClientHellos: it routes, or terminates.
    pub fn reads_hello(&self) -> bool {
        !self.routes.is_empty() || self.terminate.is_some()
    }
}

/// A route index with the ALPN protocols it needs (empty: any).
#[derive(Clone, Debug, Default)]
struct Candidate {
    alpn: Vec<Vec<u8>>,
    route: usize,
}

impl Candidate {
    fn takes(&self, offered: &[Vec<u8>]) -> bool {
        self.alpn.is_empty() || self.alpn.iter().any(|p| offered.contains(p))
    }
}

/// The ALPN protocol of ACME's `tls-alpn-01` challenge (RFC 8737): a
/// route whose `alpn` is exactly this one comes before every other route.
pub const ACME_TLS_ALPN: &str = "acme-tls/1";

/// The routes of one listener, arranged for lookup by precedence.
#[derive(Clone, Debug, Default)]
pub struct RouteTable {
    /// Routes whose `alpn` is exactly [`ACME_TLS_ALPN`]: tried first.
    acme: Tier,
    /// Every other route.
    rest: Tier,
}

/// Routes ordered by name: exact, wildcards, ALPN only.
#[derive(Clone, Debug, Default)]
struct Tier {
    /// By exact server name.
    exact: HashMap<String, Vec<Candidate>>,
    /// By wildcard suffix, with its leading dot (`.example.com`).
    wildcard: HashMap<String, Vec<Candidate>>,
    /// Routes with no server names.
    any: Vec<Candidate>,
}

impl RouteTable {
    /// The table for `routes`; indices are positions in `routes`.
    pub fn new(routes: &[RouteConfig]) -> Self {
        let mut table = RouteTable::default();
        for (route, config) in routes.iter().enumerate() {
            let tier = match config.alpn.as_slice() {
                [only] if only == ACME_TLS_ALPN => &mut table.acme,
                _ => &mut table.rest,
            };
            tier.add(route, config);
        }
        table.acme.sort();
        table.rest.sort();
        table
    }

    /// The route `hello` goes to, if any (`None`: the default route).
    pub fn pick(&self, hello: &ClientHello) -> Option<usize> {
        let acme = hello.alpn.iter().any(|p| p == ACME_TLS_ALPN.as_bytes());
        acme.then(|| self.acme.pick(hello))
            .flatten()
            .or_else(|| self.rest.pick(hello))
    }
}

impl Tier {
    fn add(&mut self, route: usize, config: &RouteConfig) {
        let candidate = Candidate {
            alpn: config.alpn.iter().map(|p| p.as_bytes().to_vec()).collect(),
            route,
        };
        if config.server_names.is_empty() {
            self.any.push(candidate.clone());
        }
        for name in &config.server_names {
            let (map, key) = match name {
                ServerName::Exact(n) => (&mut self.exact, n),
                ServerName::Wildcard(suffix) => (&mut self.wildcard, suffix),
            };
            map.entry(key.clone()).or_default().push(candidate.clone());
        }
    }

    /// ALPN-qualified first; the sort is stable, so file order otherwise.
    fn sort(&mut self) {
        let lists = self.exact.values_mut().chain(self.wildcard.values_mut());
        for list in lists.chain(std::iter::once(&mut self.any)) {
            list.sort_by_key(|c| c.alpn.is_empty());
        }
    }

    fn pick(&self, hello: &ClientHello) -> Option<usize> {
        let first = |list: Option<&Vec<Candidate>>| {
            list?.iter().find(|c| c.takes(&hello.alpn)).map(|c| c.route)
        };
        if let Some(host) = hello.server_name.as_deref() {
            if let Some(route) = first(self.exact.get(host)) {
                return Some(route);
            }
            // Suffixes from the longest: ".b.example.com", ".example.com", ".com".
            let dots = host.match_indices('.').map(|(i, _)| i);
            for at in dots.filter(|&i| i > 0) {
                if let Some(route) = first(self.wildcard.get(&host[at..])) {
                    return Some(route);
                }
            }
        }
        first(Some(&self.any))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServiceConfig;

    fn route(name: &str, names: &[&str], alpn: &[&str]) -> RouteConfig {
        RouteConfig {
            name: name.into(),
            server_names: names.iter().map(|n| n.parse().unwrap()).collect(),
            alpn: alpn.iter().map(|p| p.to_string()).collect(),
            pool: ServiceConfig::new("127.0.0.1:0".parse().unwrap(), Vec::new()),
        }
    }

    fn hello(name: Option<&str>, alpn: &[&str]) -> ClientHello {
        ClientHello {
            server_name: name.map(str::to_string),
            alpn: alpn.iter().map(|p| p.as_bytes().to_vec()).collect(),
        }
    }

    /// The name of the route `hello` picks, or "default".
    fn picked<'a>(routes: &'a [RouteConfig], name: Option<&str>, alpn: &[&str]) -> &'a str {
        let table = RouteTable::new(routes);
        table
            .pick(&hello(name, alpn))
            .map_or("default", |i| routes[i].name.as_str())
    }

    #[test]
    fn precedence_is_exact_then_longest_wildcard_then_any() {
        let routes = [
            route("any-acme", &[], &["acme-tls/1"]),
            route("wide", &["*.example.com"], &[]),
            route("eu", &["*.eu.example.com"], &[]),
            route("www", &["www.eu.example.com"], &[]),
        ];
        assert_eq!(picked(&routes, Some("www.eu.example.com"), &[]), "www");
        assert_eq!(picked(&routes, Some("db.eu.example.com"), &[]), "eu");
        assert_eq!(picked(&routes, Some("a.b.eu.example.com"), &[]), "eu");
        assert_eq!(picked(&routes, Some("api.example.com"), &[]), "wide");
        // A wildcard never takes its apex.
        assert_eq!(picked(&routes, Some("example.com"), &[]), "default");
        assert_eq!(picked(&routes, Some("eu.example.com"), &[]), "wide");
        // A name only an ALPN route could take.
        assert_eq!(
            picked(&routes, Some("other.test"), &["acme-tls/1"]),
            "any-acme"
        );
        assert_eq!(picked(&routes, None, &["acme-tls/1"]), "any-acme");
        assert_eq!(picked(&routes, None, &["h2"]), "default");
        assert_eq!(picked(&routes, Some("other.test"), &[]), "default");
        // Names that only look alike.
        assert_eq!(picked(&routes, Some("badexample.com"), &[]), "default");
        assert_eq!(
            picked(&routes, Some("www.eu.example.com.evil"), &[]),
            "default"
        );
    }

    #[test]
    fn alpn_qualified_routes_come_first_at_each_step() {
        let routes = [
            route("plain", &["a.test"], &[]),
            route("h2", &["a.test"], &["h2"]),
            route("acme", &["a.test", "*.a.test"], &["acme-tls/1"]),
            route("wild", &["*.a.test"], &[]),
        ];
        assert_eq!(picked(&routes, Some("a.test"), &["h2", "http/1.1"]), "h2");
        assert_eq!(picked(&routes, Some("a.test"), &["http/1.1", "h2"]), "h2");
        assert_eq!(picked(&routes, Some("a.test"), &["http/1.1"]), "plain");
        assert_eq!(picked(&routes, Some("a.test"), &[]), "plain");
        assert_eq!(picked(&routes, Some("a.test"), &["acme-tls/1"]), "acme");
        assert_eq!(picked(&routes, Some("x.a.test"), &["acme-tls/1"]), "acme");
        assert_eq!(picked(&routes, Some("x.a.test"), &["h2"]), "wild");
    }

    #[test]
    fn an_acme_route_wins_for_every_name() {
        let routes = [
            route("www", &["www.test"], &[]),
            route("www-h2", &["www.test"], &["h2"]),
            route("wild", &["*.test"], &[]),
            route("mixed", &["www.test"], &["acme-tls/1", "h2"]),
            route("acme", &[], &["acme-tls/1"]),
            route("acme-api", &["api.test"], &["acme-tls/1"]),
        ];
        // A tls-alpn-01 validation for a name with routes of its own, exact
        // or wildcard, or none: the ACME client.
        assert_eq!(picked(&routes, Some("www.test"), &["acme-tls/1"]), "acme");
        assert_eq!(picked(&routes, Some("x.test"), &["acme-tls/1"]), "acme");
        assert_eq!(picked(&routes, None, &["acme-tls/1"]), "acme");
        // Among ACME routes the usual order: a name before ALPN only.
        assert_eq!(
            picked(&routes, Some("api.test"), &["acme-tls/1"]),
            "acme-api"
        );
        // The same names without acme-tls/1 keep their routes.
        assert_eq!(picked(&routes, Some("www.test"), &["h2"]), "www-h2");
        assert_eq!(picked(&routes, Some("www.test"), &["http/1.1"]), "www");
        assert_eq!(picked(&routes, Some("x.test"), &[]), "wild");
        // A route offering acme-tls/1 among others is not an ACME route.
        let routes = [
            route("mixed", &[], &["acme-tls/1", "h2"]),
            route("www", &["www.test"], &[]),
        ];
        assert_eq!(picked(&routes, Some("www.test"), &["acme-tls/1"]), "www");
        assert_eq!(picked(&routes, Some("y.test"), &["acme-tls/1"]), "mixed");
    }

    #[test]
    fn an_exact_name_whose_alpn_does_not_match_falls_to_the_wildcard() {
        let routes = [
            route("grpc", &["api.test"], &["h2"]),
            route("wild", &["*.test"], &[]),
        ];
        assert_eq!(picked(&routes, Some("api.test"), &["h2"]), "grpc");
        assert_eq!(picked(&routes, Some("api.test"), &["http/1.1"]), "wild");
    }

    #[test]
    fn ties_go_to_the_earlier_route() {
        let routes = [
            route("first", &["*.test"], &["h2"]),
            route("second", &["*.test"], &["h2", "http/1.1"]),
        ];
        assert_eq!(picked(&routes, Some("a.test"), &["h2"]), "first");
        assert_eq!(picked(&routes, Some("a.test"), &["http/1.1"]), "second");
    }

    #[test]
    fn without_routes_everything_is_default() {
        assert_eq!(picked(&[], Some("a.test"), &["h2"]), "default");
        assert_eq!(picked(&[], None, &[]), "default");
    }

    /// The precedence rules written out naively: every (pattern, route)
    /// ranked by ACME first, then (exact, longest wildcard, any), ALPN
    /// first, file order.
    fn reference(routes: &[RouteConfig], hello: &ClientHello) -> Option<usize> {
        /// ACME, name class, suffix length, ALPN-qualified, file order.
        type Rank = (bool, u8, usize, bool, usize);
        let mut best: Option<(Rank, usize)> = None;
        for (index, route) in routes.iter().enumerate() {
            let offered = |p: &String| hello.alpn.contains(&p.as_bytes().to_vec());
            if !route.alpn.is_empty() && !route.alpn.iter().any(offered) {
                continue;
            }
            let host = hello.server_name.as_deref();
            let ranks: Vec<(u8, usize)> = if route.server_names.is_empty() {
                vec![(0, 0)]
            } else {
                route
                    .server_names
                    .iter()
                    .filter(|n| host.is_some_and(|h| n.matches(h)))
                    .map(|n| match n {
                        ServerName::Exact(_) => (2, 0),
                        ServerName::Wildcard(suffix) => (1, suffix.len()),
                    })
                    .collect()
            };
            for (class, length) in ranks {
                // Higher is better; earlier routes win ties. (An ACME route
                // got here only if the hello offers acme-tls/1.)
                let acme = route.alpn == [ACME_TLS_ALPN];
                let key = (
                    acme,
                    class,
                    length,
                    !route.alpn.is_empty(),
                    usize::MAX - index,
                );
                if best.is_none_or(|(k, _)| key > k) {
                    best = Some((key, index));
                }
            }
        }
        best.map(|(_, index)| index)
    }

    proptest::proptest! {
        #[test]
        fn the_table_agrees_with_the_rules(
            specs in proptest::collection::vec(
                (
                    proptest::collection::vec(0usize..8, 0..3),
                    proptest::collection::vec(0usize..3, 0..2),
                ),
                1..6,
            ),
            host in 0usize..6,
            offered in proptest::collection::vec(0usize..3, 0..3),
        ) {
            const PATTERNS: [&str; 8] = [
                "a.x.test", "b.x.test", "*.x.test", "*.test", "*.a.x.test", "x.test",
                "*.y.test", "c.a.x.test",
            ];
            const HOSTS: [&str; 6] = ["a.x.test", "c.a.x.test", "x.test", "z.y.test", "test", "q.x.test"];
            const ALPN: [&str; 3] = ["h2", "http/1.1", "acme-tls/1"];
            let routes: Vec<RouteConfig> = specs
                .iter()
                .enumerate()
                .filter(|(_, (names, alpn))| !names.is_empty() || !alpn.is_empty())
                .map(|(i, (names, alpn))| {
                    let names: Vec<&str> = names.iter().map(|&n| PATTERNS[n]).collect();
                    let alpn: Vec<&str> = alpn.iter().map(|&p| ALPN[p]).collect();
                    route(&format!("r{i}"), &names, &alpn)
                })
                .collect();
            let alpn: Vec<&str> = offered.iter().map(|&p| ALPN[p]).collect();
            for name in [Some(HOSTS[host]), None] {
                let hello = hello(name, &alpn);
                let table = RouteTable::new(&routes);
                proptest::prop_assert_eq!(table.pick(&hello), reference(&routes, &hello), "{:?}", name);
            }
        }
    }
}
