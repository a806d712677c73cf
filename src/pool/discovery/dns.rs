//! DNS discovery: a backend configured by name is looked up again and again,
//! and each answer becomes the members of its group in the pool.
//!
//! Without it a name is resolved once, when the configuration is read, and
//! a fleet that scales or moves behind the name is never seen. With it:
//!
//! - `HOST:PORT`: the A records of `HOST`, or its AAAA records when it has
//!   no A record; every address is a member on `PORT` (nginx's `resolve`,
//!   Envoy's `STRICT_DNS` with `V4_PREFERRED`). One family, as at start-up:
//!   a dual-stack host is one backend, not two with twice the share.
//! - `srv:NAME`: the SRV records of `NAME` (Consul, Kubernetes headless
//!   services); each record's target is looked up (A, or AAAA, or the
//!   addresses the server put in the additional section), its port and
//!   weight are the member's, and records of a priority above the lowest
//!   are backups (nginx Plus's `service=` does the same).
//!
//! A member is named by its address (`10.0.0.7:5432`), unique for logs,
//! metrics and the pool's identity, and keeps the configured name as its
//! `source`. An answer reaches the pool as one
//! [`Update::ResetGroup`], so only that group's members change, through the
//! one path that logs and counts each change; an address that disappears
//! drains like any removed backend.
//!
//! When to look again: after the answer's TTL, but at most
//! `resolve_interval` later (a longer TTL is cut, so a change is seen
//! within the interval) and at least `resolve_ttl_min` later (Consul
//! answers with TTL 0). Failures never empty a pool: a timeout, SERVFAIL,
//! NXDOMAIN or an answer without records keeps the last good members, is
//! counted, logged at most once per name and interval, and retried after
//! `resolve_interval`. At most [`MAX_RECORDS`] addresses are taken from an
//! answer; a cut is logged.
//!
//! hickory-resolver does the lookups: the maintained Rust stub resolver,
//! on tokio, reading /etc/resolv.conf (and /etc/hosts) like the system's,
//! and able to ask one given server instead (`--resolver`); its own cache is
//! off, since the TTL is what this module schedules by. Each name has one
//! task on the runtime's main thread (not the workers); it ends when the
//! listener stops or a reload drops the name. The lookups at start-up and
//! reload ([`Discovery::first_answers`]) run on a short-lived thread of
//! their own, since those callers are synchronous.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{LookupIpStrategy, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData};
use log::{debug, info, warn};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{BackendSpec, DnsName, ResolveConfig, ServiceConfig};
use crate::pool::Pool;
use crate::pool::discovery::{Found, Update, is_group, member};
use crate::stats::{RateLimit, ResolutionStats};

/// Most addresses taken from one answer (HAProxy's resolvers stop at a
/// similar size); the rest are cut, with a warning. Also the most SRV
/// records whose targets are looked up.
pub const MAX_RECORDS: usize = 1024;
/// How long one query to one server may take before the next attempt.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// Queries per lookup (the first and one retry).
pub const ATTEMPTS: usize = 2;
/// The whole lookup of a name, SRV targets included, ends by then.
pub const LOOKUP_DEADLINE: Duration = Duration::from_secs(5);
/// SRV targets looked up at once.
const TARGETS_AT_ONCE: usize = 16;

/// Where names are resolved: the nameservers and the options tcplb uses
/// with them. Cheap to clone; each task builds its own resolver from it.
#[derive(Clone, Debug)]
pub struct Resolver {
    /// Nameservers and search domains.
    config: ResolverConfig,
    /// Timeouts, attempts, no cache, A or else AAAA.
    opts: ResolverOpts,
}

impl Resolver {
    /// The nameservers in /etc/resolv.conf, or only `server` when given.
    pub fn new(server: Option<SocketAddr>) -> Result<Self, String> {
        let (config, mut opts) = match server {
            Some(server) => {
                let mut ns = NameServerConfig::udp_and_tcp(server.ip());
                for connection in &mut ns.connections {
                    connection.port = server.port();
                }
                let config = ResolverConfig::from_name_servers(vec![ns]);
                (config, ResolverOpts::default())
            }
            None => hickory_resolver::system_conf::read_system_conf().map_err(|e| {
                format!(
                    "cannot read the DNS configuration in /etc/resolv.conf ({e}); \
                     give a server with --resolver"
                )
            })?,
        };
        opts.timeout = QUERY_TIMEOUT;
        opts.attempts = ATTEMPTS;
        // The TTL schedules our lookups; a cache would answer them itself.
        opts.cache_size = 0;
        // A, then AAAA only when there is no A: see the module doc.
        opts.ip_strategy = LookupIpStrategy::Ipv4thenIpv6;
        Ok(Resolver { config, opts })
    }

    /// A resolver for the runtime this is called on.
    fn build(&self) -> Result<TokioResolver, String> {
        TokioResolver::builder_with_config(self.config.clone(), TokioRuntimeProvider::default())
            .with_options(self.opts.clone())
            .build()
            .map_err(|e| format!("cannot start the DNS resolver: {e}"))
    }
}

/// One address an answer gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Address {
    /// Where the member is.
    pub addr: SocketAddr,
    /// From an SRV record: its priority and weight.
    pub srv: Option<(u16, u16)>,
}

/// A usable answer: at least one address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The addresses, at most [`MAX_RECORDS`], lowest priority first, then
    /// by address (so an answer in another order is the same answer).
    pub addresses: Vec<Address>,
    /// The shortest TTL among the records it came from.
    pub ttl: Duration,
    /// Addresses (or SRV records) beyond [`MAX_RECORDS`] left out.
    pub cut: usize,
}

/// Why a lookup gave nothing to use. The label is the `result` of
/// `tcplb_dns_resolutions_total`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The name does not exist.
    NxDomain,
    /// The server failed.
    ServFail,
    /// The name exists but has no usable record.
    Empty,
    /// No answer in time.
    Timeout,
    /// Anything else, as hickory said it.
    Error(String),
}

impl Failure {
    pub fn label(&self) -> &'static str {
        match self {
            Failure::NxDomain => "nxdomain",
            Failure::ServFail => "servfail",
            Failure::Empty => "empty",
            Failure::Timeout => "timeout",
            Failure::Error(_) => "error",
        }
    }

    fn from_hickory(error: &NetError) -> Failure {
        match error {
            NetError::Timeout => Failure::Timeout,
            NetError::Dns(DnsError::NoRecordsFound(none)) => match none.response_code {
                ResponseCode::NXDomain => Failure::NxDomain,
                ResponseCode::ServFail => Failure::ServFail,
                ResponseCode::NoError => Failure::Empty,
                _ => Failure::Error(error.to_string()),
            },
            NetError::Dns(DnsError::ResponseCode(ResponseCode::ServFail)) => Failure::ServFail,
            NetError::Dns(DnsError::ResponseCode(ResponseCode::NXDomain)) => Failure::NxDomain,
            other => Failure::Error(other.to_string()),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::NxDomain => f.write_str("no such name (NXDOMAIN)"),
            Failure::ServFail => f.write_str("the DNS server failed (SERVFAIL)"),
            Failure::Empty => f.write_str("no address records in the answer"),
            Failure::Timeout => f.write_str("no answer in time"),
            Failure::Error(e) => f.write_str(e),
        }
    }
}

fn count(stats: &ResolutionStats, outcome: &Result<Answer, Failure>) {
    let counter = match outcome {
        Ok(_) => &stats.ok,
        Err(Failure::NxDomain) => &stats.nxdomain,
        Err(Failure::ServFail) => &stats.servfail,
        Err(Failure::Empty) => &stats.empty,
        Err(Failure::Timeout) => &stats.timeout,
        Err(Failure::Error(_)) => &stats.error,
    };
    counter.fetch_add(1, Relaxed);
}

/// Looks `name` up once, within [`LOOKUP_DEADLINE`].
pub async fn resolve(resolver: &TokioResolver, name: &DnsName) -> Result<Answer, Failure> {
    match tokio::time::timeout(LOOKUP_DEADLINE, lookup(resolver, name)).await {
        Ok(outcome) => outcome,
        Err(_) => Err(Failure::Timeout),
    }
}

async fn lookup(resolver: &TokioResolver, name: &DnsName) -> Result<Answer, Failure> {
    let now = Instant::now();
    let (addresses, valid_until) = match name {
        DnsName::Host { host, port } => {
            let ips = resolver
                .lookup_ip(host.as_str())
                .await
                .map_err(|e| Failure::from_hickory(&e))?;
            let addresses = ips
                .iter()
                .map(|ip| Address {
                    addr: SocketAddr::new(ip, *port),
                    srv: None,
                })
                .collect();
            (addresses, ips.valid_until())
        }
        DnsName::Srv(srv) => lookup_srv(resolver, srv).await?,
    };
    let ttl = valid_until.saturating_duration_since(now);
    let (addresses, cut) = cap(addresses);
    if addresses.is_empty() {
        return Err(Failure::Empty);
    }
    Ok(Answer {
        addresses,
        ttl,
        cut,
    })
}

/// The SRV records of `name` and the addresses of their targets; targets
/// that do not resolve are left out (logged at debug), so the answer is
/// empty only when none does.
async fn lookup_srv(
    resolver: &TokioResolver,
    name: &str,
) -> Result<(Vec<Address>, Instant), Failure> {
    let lookup = resolver
        .srv_lookup(name)
        .await
        .map_err(|e| Failure::from_hickory(&e))?;
    let mut valid_until = lookup.valid_until();
    let mut records: Vec<(u16, u16, u16, Name)> = lookup
        .answers()
        .iter()
        .filter_map(|r| match &r.data {
            // A target of "." says the service is not offered there.
            RData::SRV(srv) if !srv.target.is_root() => {
                Some((srv.priority, srv.weight, srv.port, srv.target.clone()))
            }
            _ => None,
        })
        .collect();
    records.sort_by(|a, b| (a.0, &a.3, a.2).cmp(&(b.0, &b.3, b.2)));
    records.truncate(MAX_RECORDS);

    // Targets' addresses: from the additional section when the server put
    // them there (Consul does), else looked up, a few at a time.
    let targets: BTreeSet<Name> = records.iter().map(|r| r.3.clone()).collect();
    let mut addresses: HashMap<Name, Vec<IpAddr>> = HashMap::new();
    for record in lookup.additionals() {
        let ip = match &record.data {
            RData::A(a) => IpAddr::V4(a.0),
            RData::AAAA(aaaa) => IpAddr::V6(aaaa.0),
            _ => continue,
        };
        if targets.contains(&record.name) {
            addresses.entry(record.name.clone()).or_default().push(ip);
        }
    }
    let to_look_up: Vec<Name> = targets
        .into_iter()
        .filter(|t| !addresses.contains_key(t))
        .collect();
    let mut pending = to_look_up.into_iter();
    let mut running = JoinSet::new();
    loop {
        while running.len() < TARGETS_AT_ONCE {
            let Some(target) = pending.next() else { break };
            let resolver = resolver.clone();
            running.spawn(async move {
                let found = resolver.lookup_ip(target.clone()).await;
                (target, found)
            });
        }
        let Some(done) = running.join_next().await else {
            break;
        };
        match done {
            Ok((target, Ok(ips))) => {
                valid_until = valid_until.min(ips.valid_until());
                addresses.insert(target, ips.iter().collect());
            }
            Ok((target, Err(e))) => debug!("SRV target {target} of {name}: {e}"),
            Err(e) => debug!("SRV target lookup of {name} ended: {e}"),
        }
    }
    let out = records
        .iter()
        .flat_map(|(priority, weight, port, target)| {
            let ips = addresses.get(target).map(Vec::as_slice).unwrap_or(&[]);
            ips.iter().map(move |ip| Address {
                addr: SocketAddr::new(*ip, *port),
                srv: Some((*priority, *weight)),
            })
        })
        .collect();
    Ok((out, valid_until))
}

/// The addresses of an answer in a stable order (lowest SRV priority
/// first, then by address), each once (at its best priority), at most
/// [`MAX_RECORDS`]; and how many were cut. A stable order makes the same
/// set the same answer however the server rotates it, and the cut the
/// same from one answer to the next.
pub fn cap(mut addresses: Vec<Address>) -> (Vec<Address>, usize) {
    let priority = |a: &Address| a.srv.map_or(0, |(p, _)| p);
    addresses.sort_by_key(|a| (a.addr, priority(a), std::cmp::Reverse(a.srv.map(|s| s.1))));
    addresses.dedup_by_key(|a| a.addr);
    addresses.sort_by_key(|a| (priority(a), a.addr));
    let cut = addresses.len().saturating_sub(MAX_RECORDS);
    addresses.truncate(MAX_RECORDS);
    (addresses, cut)
}

/// The members an answer gives group `template`: each address with the
/// group's settings; from SRV records, the record's weight (0 counts as 1,
/// the least a weight can be) and, for priorities above the lowest, backup.
pub fn members(template: &BackendSpec, answer: &Answer) -> Vec<BackendSpec> {
    let lowest = answer
        .addresses
        .iter()
        .filter_map(|a| a.srv.map(|(p, _)| p))
        .min();
    answer
        .addresses
        .iter()
        .map(|a| {
            let mut m = member(template, a.addr);
            if let Some((priority, weight)) = a.srv {
                m.weight = u32::from(weight).max(1);
                m.backup |= Some(priority) != lowest;
            }
            m
        })
        .collect()
}

/// When to look a name up again after an answer with `ttl`: the TTL, cut
/// to `resolve.interval`, and never sooner than `resolve.ttl_min`.
pub fn next_lookup(ttl: Duration, resolve: &ResolveConfig) -> Duration {
    ttl.min(resolve.interval).max(resolve.ttl_min)
}

/// The runtime's side of DNS discovery: the resolver (set up on first
/// need, so a configuration without names never reads /etc/resolv.conf),
/// the lookups at start-up and reload, and the tasks that keep each name
/// current.
pub struct Discovery {
    /// `--resolver`; `None` for /etc/resolv.conf.
    server: Option<SocketAddr>,
    /// Set up on first need.
    resolver: OnceLock<Result<Resolver, String>>,
}

/// The discovery tasks of one pool, by backend name.
#[derive(Default)]
pub struct Watching {
    /// Cancelling one stops that name's task.
    tasks: HashMap<String, CancellationToken>,
}

/// One name's lookup: the name as configured, and what came of it.
type Outcome = (String, Result<Answer, Failure>);

/// What the lookups at start-up or reload found: fresh members by name,
/// and each outcome, to count.
#[derive(Default)]
pub struct FirstLookups {
    /// Members for each name that resolved.
    pub found: Found,
    /// Each name looked up and its outcome.
    outcomes: Vec<Outcome>,
}

impl FirstLookups {
    /// Counts the lookups in `pool`'s resolution counters.
    pub fn count_into(&self, pool: &Pool) {
        for (name, outcome) in &self.outcomes {
            count(&pool.resolution_stats(name), outcome);
        }
    }
}

impl Discovery {
    /// Resolves with `server`, or the nameservers in /etc/resolv.conf.
    pub fn new(server: Option<SocketAddr>) -> Self {
        Discovery {
            server,
            resolver: OnceLock::new(),
        }
    }

    /// The server given with `--resolver`, if any.
    pub fn server(&self) -> Option<SocketAddr> {
        self.server
    }

    fn resolver(&self) -> Result<&Resolver, String> {
        self.resolver
            .get_or_init(|| Resolver::new(self.server))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Looks up every backend name in `config` once, all at once, and
    /// waits for the answers (at most [`LOOKUP_DEADLINE`]). `known` is the
    /// pool that runs the listener already (a reload), if any.
    ///
    /// An `srv:` name that is new and does not resolve is an error (it has
    /// no other way to get members); a new `HOST:PORT` name that does not
    /// resolve here starts with the address it resolved to when the
    /// configuration was read, and a name the pool has already keeps its
    /// members. Both are logged.
    ///
    /// Blocks the calling thread; the lookups run on a thread of their own.
    pub fn first_answers(
        &self,
        listener: &str,
        config: &ServiceConfig,
        known: Option<&Pool>,
    ) -> Result<FirstLookups, String> {
        let groups: Vec<BackendSpec> = config
            .backends
            .iter()
            .filter(|b| is_group(b))
            .cloned()
            .collect();
        if groups.is_empty() {
            return Ok(FirstLookups::default());
        }
        let resolver = self.resolver()?.clone();
        let names: Vec<(String, DnsName)> = groups
            .iter()
            .filter_map(|g| Some((g.name.clone(), g.dns_name()?)))
            .collect();
        let outcomes = std::thread::spawn(move || lookup_all(&resolver, names))
            .join()
            .map_err(|_| "the DNS lookup thread panicked".to_string())??;
        let mut lookups = FirstLookups::default();
        let known_name = |name: &str| {
            known.is_some_and(|pool| {
                let state = pool.load();
                state
                    .config
                    .backends
                    .iter()
                    .any(|b| b.name == name && is_group(b))
            })
        };
        for (group, outcome) in outcomes {
            let Some(template) = groups.iter().find(|g| g.name == group) else {
                continue;
            };
            match &outcome {
                Ok(answer) => {
                    if answer.cut > 0 {
                        warn!("{listener}: {}", cut_warning(&group, answer));
                    }
                    lookups
                        .found
                        .insert(group.clone(), members(template, answer));
                }
                Err(failure) if known_name(&group) => warn!(
                    "{listener}: cannot resolve {group}: {failure}; its backends stay as they are"
                ),
                Err(failure) if template.addr.port() != 0 => warn!(
                    "{listener}: cannot resolve {group} with the DNS resolver: {failure}; \
                     starting with {}, as the system resolved it",
                    template.addr
                ),
                Err(failure) => {
                    return Err(format!("backend {group}: cannot resolve: {failure}"));
                }
            }
            lookups.outcomes.push((group, outcome));
        }
        Ok(lookups)
    }

    /// Keeps `pool`'s backend names current: starts a task (tracked by
    /// `tasks`, stopped by `stop`) for each name that has none in
    /// `watching`, and stops those whose name the pool no longer has.
    /// Call it on the runtime's main thread: the tasks run where it runs.
    pub fn watch(
        &self,
        pool: &Arc<Pool>,
        watching: &mut Watching,
        stop: &CancellationToken,
        tasks: &TaskTracker,
    ) {
        let state = pool.load();
        let names: Vec<&String> = state
            .config
            .backends
            .iter()
            .filter(|b| is_group(b))
            .map(|b| &b.name)
            .collect();
        watching.tasks.retain(|name, task| {
            let keep = names.contains(&name) && !task.is_cancelled();
            if !keep {
                task.cancel();
            }
            keep
        });
        for name in names {
            if watching.tasks.contains_key(name) {
                continue;
            }
            let resolver = match self.resolver() {
                Ok(resolver) => resolver.clone(),
                Err(e) => {
                    warn!("{}: {name} is not looked up again: {e}", pool.name());
                    continue;
                }
            };
            let task = stop.child_token();
            tasks.spawn(keep_current(
                pool.clone(),
                name.clone(),
                resolver,
                task.clone(),
            ));
            watching.tasks.insert(name.clone(), task);
        }
    }
}

/// Looks every name up at once on a runtime of this thread.
fn lookup_all(resolver: &Resolver, names: Vec<(String, DnsName)>) -> Result<Vec<Outcome>, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the DNS lookups: {e}"))?;
    runtime.block_on(async {
        let resolver = resolver.build()?;
        let mut running = JoinSet::new();
        for (group, name) in names {
            let resolver = resolver.clone();
            running.spawn(async move { (group, resolve(&resolver, &name).await) });
        }
        let mut out = Vec::new();
        while let Some(done) = running.join_next().await {
            if let Ok(outcome) = done {
                out.push(outcome);
            }
        }
        Ok(out)
    })
}

/// The warning for an answer with more addresses than are taken.
pub fn cut_warning(group: &str, answer: &Answer) -> String {
    format!(
        "{group}: the answer has {} addresses; only the first {MAX_RECORDS} are taken",
        answer.addresses.len() + answer.cut
    )
}

/// One name's task: looks it up whenever the last answer says, and hands
/// each answer to the pool, until `stop`.
async fn keep_current(pool: Arc<Pool>, group: String, resolver: Resolver, stop: CancellationToken) {
    let listener = pool.name().to_string();
    let stats = pool.resolution_stats(&group);
    let dns = match resolver.build() {
        Ok(dns) => dns,
        Err(e) => {
            warn!("{listener}: {group} is not looked up again: {e}");
            return;
        }
    };
    // The lookup that gave the first members was just made.
    let mut wait = pool.load().config.resolve.ttl_min;
    let mut warnings = RateLimit::new(pool.load().config.resolve.interval);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        // Read each time: a reload may change the settings, or drop the name.
        let state = pool.load();
        let Some(template) = state
            .config
            .backends
            .iter()
            .find(|b| b.name == group && is_group(b))
            .cloned()
        else {
            return;
        };
        let Some(name) = template.dns_name() else {
            return;
        };
        let settings = state.config.resolve;
        drop(state);
        if warnings.period() != settings.interval {
            warnings = RateLimit::new(settings.interval);
        }
        let outcome = tokio::select! {
            _ = stop.cancelled() => return,
            outcome = resolve(&dns, &name) => outcome,
        };
        count(&stats, &outcome);
        match outcome {
            Ok(answer) => {
                if answer.cut > 0 && warnings.allow().is_some() {
                    warn!("{listener}: {}", cut_warning(&group, &answer));
                }
                if std::mem::take(&mut failing) {
                    info!(
                        "{listener}: {group} resolves again ({} address(es))",
                        answer.addresses.len()
                    );
                }
                pool.apply(Update::ResetGroup {
                    group: group.clone(),
                    members: members(&template, &answer),
                });
                wait = next_lookup(answer.ttl, &settings);
            }
            Err(failure) => {
                failing = true;
                if let Some(held_back) = warnings.allow() {
                    let kept = pool
                        .load()
                        .backends
                        .iter()
                        .filter(|b| b.source() == Some(group.as_str()))
                        .count();
                    warn!(
                        "{listener}: cannot resolve {group}: {failure}; keeping its {kept} \
                         backend(s), trying again every {:?} ({held_back} more failure(s) \
                         since the last warning)",
                        settings.interval
                    );
                }
                wait = settings.interval;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_backend;

    fn v4(last: u8, port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, last], port))
    }

    fn plain(addrs: &[SocketAddr]) -> Vec<Address> {
        addrs
            .iter()
            .map(|&addr| Address { addr, srv: None })
            .collect()
    }

    #[test]
    fn the_next_lookup_follows_the_ttl_within_its_bounds() {
        let resolve = ResolveConfig {
            interval: Duration::from_secs(5),
            ttl_min: Duration::from_secs(1),
        };
        let secs = |s| Duration::from_secs(s);
        assert_eq!(
            next_lookup(secs(3), &resolve),
            secs(3),
            "a shorter TTL is honoured"
        );
        assert_eq!(next_lookup(secs(0), &resolve), secs(1), "TTL 0: the floor");
        assert_eq!(
            next_lookup(secs(86_400), &resolve),
            secs(5),
            "a long TTL is cut"
        );
        let odd = ResolveConfig {
            interval: secs(1),
            ttl_min: secs(3),
        };
        assert_eq!(next_lookup(secs(0), &odd), secs(3), "the floor wins");
    }

    #[test]
    fn answers_are_ordered_deduplicated_and_capped() {
        let rotated = plain(&[v4(3, 80), v4(1, 80), v4(2, 80), v4(1, 80)]);
        let (kept, cut) = cap(rotated);
        assert_eq!(kept, plain(&[v4(1, 80), v4(2, 80), v4(3, 80)]));
        assert_eq!(cut, 0);

        let many: Vec<SocketAddr> = (0..1500u32)
            .map(|i| SocketAddr::from(([10, 1, (i >> 8) as u8, i as u8], 80)))
            .rev()
            .collect();
        let (kept, cut) = cap(plain(&many));
        assert_eq!((kept.len(), cut), (MAX_RECORDS, 1500 - MAX_RECORDS));
        // The same 1,024 whatever order the server sends them in.
        assert_eq!(kept[0].addr, SocketAddr::from(([10, 1, 0, 0], 80)));
        assert_eq!(kept[1023].addr, SocketAddr::from(([10, 1, 3, 255], 80)));
        let answer = Answer {
            addresses: kept,
            ttl: Duration::ZERO,
            cut,
        };
        assert_eq!(
            cut_warning("web.example:80", &answer),
            "web.example:80: the answer has 1500 addresses; only the first 1024 are taken"
        );
    }

    #[test]
    fn srv_answers_give_ports_weights_and_backups() {
        let template = parse_backend("srv:_pg._tcp.db.example").unwrap();
        let srv = |last, port, priority, weight| Address {
            addr: v4(last, port),
            srv: Some((priority, weight)),
        };
        // The same address twice: its best priority counts.
        let (addresses, _) = cap(vec![
            srv(3, 5433, 20, 5),
            srv(1, 5432, 10, 60),
            srv(2, 5432, 10, 0),
            srv(3, 5433, 10, 30),
        ]);
        let answer = Answer {
            addresses,
            ttl: Duration::from_secs(30),
            cut: 0,
        };
        let m = members(&template, &answer);
        let got: Vec<(String, u32, bool)> = m
            .iter()
            .map(|s| (s.name.clone(), s.weight, s.backup))
            .collect();
        assert_eq!(
            got,
            [
                ("10.0.0.1:5432".to_string(), 60, false),
                ("10.0.0.2:5432".to_string(), 1, false),
                ("10.0.0.3:5433".to_string(), 30, false),
            ]
        );
        assert!(
            m.iter()
                .all(|s| s.source.as_deref() == Some("srv:_pg._tcp.db.example"))
        );

        let (addresses, _) = cap(vec![srv(1, 5432, 10, 1), srv(2, 5432, 20, 1)]);
        let m = members(
            &template,
            &Answer {
                addresses,
                ttl: Duration::ZERO,
                cut: 0,
            },
        );
        assert_eq!(
            (m[0].backup, m[1].backup),
            (false, true),
            "a higher priority is a backup"
        );
    }

    #[test]
    fn host_answers_take_the_group_settings() {
        let mut template = parse_backend("localhost:8080=3").unwrap();
        template.max_conns = Some(7);
        let answer = Answer {
            addresses: plain(&[v4(1, 8080), "[::1]:8080".parse().unwrap()]),
            ttl: Duration::from_secs(1),
            cut: 0,
        };
        let m = members(&template, &answer);
        assert_eq!(m.len(), 2);
        assert_eq!(
            (m[0].name.as_str(), m[0].weight, m[0].max_conns),
            ("10.0.0.1:8080", 3, Some(7))
        );
        assert_eq!(m[1].name, "[::1]:8080");
        assert_eq!(m[1].source.as_deref(), Some("localhost:8080"));
    }

    #[test]
    fn failures_have_their_labels() {
        let labels: Vec<&str> = [
            Failure::NxDomain,
            Failure::ServFail,
            Failure::Empty,
            Failure::Timeout,
            Failure::Error("x".into()),
        ]
        .iter()
        .map(Failure::label)
        .collect();
        assert_eq!(
            labels,
            ["nxdomain", "servfail", "empty", "timeout", "error"]
        );
        assert_eq!(Failure::from_hickory(&NetError::Timeout), Failure::Timeout);
    }
}
