//! The configuration file (`--config tcplb.toml`): several listeners, each
//! with its own backend pool, plus a `[defaults]` table they inherit from.
//!
//! The file is read into `Raw*` mirrors of [`Config`] whose every value goes
//! through the same parsers as the flags (config.rs), so a backend, duration
//! or network means the same thing in both places. Unknown keys, wrong types
//! and bad values are errors naming the file, line, column and key; nothing
//! binds until the whole file is valid.
//!
//! Every problem is reported, not just the first ([`load_all`], which
//! `tcplb check` and reloads use): a TOML syntax error stops the reading
//! (nothing after it can be trusted), but a bad value is set aside and the
//! rest read on, and every semantic problem (duplicates, missing keys) is
//! collected. Problems that only follow from a value set aside (a table
//! "missing" the key whose value was bad) are not reported twice. What
//! could be read around the problems is kept too ([`Readable`]), so
//! `tcplb check` checks the paths and addresses it names in the same run.

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use toml::Spanned;

mod tls;
use tls::{RawBackendTls, RawTls};

use crate::config::{
    self, AGENT_INTERVAL, AccessLogFormat, AccessLogTarget, AdminState, AgentConfig, BackendSpec,
    CheckConfig, Config, ExecCheck, Expect, HealthConfig, HttpCheck, KeepaliveConfig, Match,
    Network, OnFailure, OnHealthChange, Protocol, ProxyVersion, RouteConfig, ServerName,
    ServiceConfig, StatusSet, Step, StrategyKind, parse_duration, parse_escaped, udp,
};

/// A configuration file that cannot be used, and where it goes wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileError {
    pub path: PathBuf,
    /// 1-based line and column, when the problem has a place in the file.
    pub position: Option<(usize, usize)>,
    /// The dotted key the problem is under, e.g. `listener.health.interval`.
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some((line, column)) = self.position {
            write!(f, ":{line}:{column}")?;
        }
        f.write_str(": ")?;
        if let Some(key) = &self.key {
            write!(f, "key `{key}`: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for FileError {}

/// A file that cannot be used as it is: every problem in it, and what
/// could be read around them (`tcplb check` checks that part too).
#[derive(Clone, Debug)]
pub struct Unusable {
    /// Every problem, in file order; never empty.
    pub errors: Vec<FileError>,
    /// What could be read despite them; `None` when the file cannot be
    /// read or is not TOML.
    pub readable: Option<Box<Readable>>,
}

/// The part of a file that could be read: its process-wide settings (a
/// value with a problem is left at its default) and the listeners that
/// could be built (possibly none).
#[derive(Clone, Debug)]
pub struct Readable {
    /// The settings read, as a configuration.
    pub config: Config,
    /// The position among the file's `[[listener]]` tables of each of
    /// `config.services`, so a problem found in one names its line.
    pub positions: Vec<usize>,
    /// How many `[[listener]]` tables the file has (a flag may only
    /// override some settings of a file with a single one).
    pub listeners: usize,
}

impl Readable {
    /// A whole, valid configuration.
    pub fn whole(config: Config) -> Readable {
        let listeners = config.services.len();
        Readable {
            config,
            positions: (0..listeners).collect(),
            listeners,
        }
    }
}

/// Reads and validates the file at `path`.
pub fn load(path: &Path) -> Result<Config, FileError> {
    load_with_backends(path, &[])
}

/// Like [`load`], but a listener that names no backends (here or in
/// [defaults]) gets `fallback`: the `--backend` flags, which override the
/// file anyway.
pub fn load_with_backends(path: &Path, fallback: &[BackendSpec]) -> Result<Config, FileError> {
    let text = std::fs::read_to_string(path).map_err(|e| FileError {
        path: path.to_path_buf(),
        position: None,
        key: None,
        message: format!("cannot read the configuration file: {e}"),
    })?;
    parse_with_backends(&text, path, fallback)
}

/// Parses file contents; `path` is only used in error messages.
pub fn parse(text: &str, path: &Path) -> Result<Config, FileError> {
    parse_with_backends(text, path, &[])
}

fn parse_with_backends(
    text: &str,
    path: &Path,
    fallback: &[BackendSpec],
) -> Result<Config, FileError> {
    parse_all(text, path, fallback).map_err(|mut unusable| unusable.errors.remove(0))
}

/// Like [`load_with_backends`], but with every problem in the file, in
/// the order they appear, and what could be read around them.
pub fn load_all(path: &Path, fallback: &[BackendSpec]) -> Result<Config, Unusable> {
    let text = std::fs::read_to_string(path).map_err(|e| Unusable {
        errors: vec![FileError {
            path: path.to_path_buf(),
            position: None,
            key: None,
            message: format!("cannot read the configuration file: {e}"),
        }],
        readable: None,
    })?;
    parse_all(&text, path, fallback)
}

/// Parses file contents, collecting every problem (see the module doc)
/// and what could be read around them.
pub fn parse_all(text: &str, path: &Path, fallback: &[BackendSpec]) -> Result<Config, Unusable> {
    let value_error = |e: toml::de::Error| {
        name_unknown_key(FileError {
            path: path.to_path_buf(),
            position: e.span().map(|span| line_column(text, span.start)),
            key: toml_key(&e),
            message: e.message().trim().to_string(),
        })
    };
    let mut root = toml::de::DeTable::parse(text).map_err(|e| Unusable {
        errors: vec![value_error(e)],
        readable: None,
    })?;
    let mut errors: Vec<(usize, FileError)> = Vec::new();
    // Values set aside so far: a later complaint about the table that held
    // one is its consequence, not a problem of its own.
    let mut removed: Vec<Range<usize>> = Vec::new();
    // A table's span is its header alone: a problem about the whole table
    // (a key "missing") covers the lines up to the next header.
    let extent = |span: &Range<usize>| {
        let header = span.start == 0 || text.as_bytes().get(span.start - 1) == Some(&b'\n');
        if header && text[span.start..].starts_with('[') {
            let body = text[span.end.min(text.len())..]
                .match_indices('\n')
                .map(|(i, _)| span.end + i + 1)
                .find(|&line| text[line..].trim_start().starts_with('['))
                .unwrap_or(text.len());
            span.start..body
        } else {
            span.clone()
        }
    };
    let follows = |span: &Range<usize>, removed: &[Range<usize>]| {
        let outer = extent(span);
        removed
            .iter()
            .any(|r| outer.start <= r.start && r.end <= outer.end && span != r)
    };
    let raw = loop {
        match RawFile::deserialize(toml::de::Deserializer::from(root.clone())) {
            Ok(raw) => break Some(raw),
            Err(e) => {
                let span = e.span();
                if !span.as_ref().is_some_and(|s| follows(s, &removed)) {
                    let at = span.as_ref().map_or(0, |s| s.start);
                    errors.push((at, value_error(e)));
                }
                // Each round takes one entry out, so this ends.
                match span.and_then(|s| set_aside(root.get_mut(), &s)) {
                    Some(gone) => removed.push(gone),
                    None => break None,
                }
            }
        }
    };
    let mut readable = None;
    if let Some(raw) = raw {
        let (read, problems) = raw.into_config(fallback);
        if errors.is_empty() && problems.is_empty() {
            return Ok(read.config);
        }
        for problem in problems {
            if follows(&problem.span, &removed) {
                continue;
            }
            let error = FileError {
                path: path.to_path_buf(),
                position: Some(line_column(text, problem.span.start)),
                key: Some(problem.key.to_string()),
                message: problem.message,
            };
            errors.push((problem.span.start, error));
        }
        readable = Some(Box::new(read));
    }
    errors.sort_by_key(|(at, _)| *at);
    Err(Unusable {
        errors: errors.into_iter().map(|(_, e)| e).collect(),
        readable,
    })
}

/// Where `key` is set in the file `text`: 1-based line and column of its
/// value, in `[[listener]]` number `listener` (or the `[defaults]` it
/// inherits from), or at the top level when `listener` is `None`. For
/// problems found after reading (a token file that cannot be read, an
/// address that cannot be bound), so they too name their line.
pub fn key_position(text: &str, listener: Option<usize>, key: &str) -> Option<(usize, usize)> {
    let root = toml::de::DeTable::parse(text).ok()?.into_inner();
    fn table<'a, 'i>(value: &'a toml::de::DeValue<'i>) -> Option<&'a toml::de::DeTable<'i>> {
        match value {
            toml::de::DeValue::Table(t) => Some(t),
            _ => None,
        }
    }
    let mut tables = Vec::new();
    match listener {
        None => tables.push(&root),
        Some(index) => {
            if let Some(toml::de::DeValue::Array(list)) = root.get("listener").map(|v| v.get_ref())
                && let Some(t) = list.get(index).and_then(|v| table(v.get_ref()))
            {
                tables.push(t);
            }
            if let Some(t) = root.get("defaults").and_then(|v| table(v.get_ref())) {
                tables.push(t);
            }
        }
    }
    let span = tables.iter().find_map(|t| t.get(key).map(|v| v.span()))?;
    Some(line_column(text, span.start))
}

/// Takes out of `table` the innermost entry (key and value, or array
/// item) that `span` points into; returns the span it covered. A table's
/// own span may cover only its header, so every entry is searched.
fn set_aside(table: &mut toml::de::DeTable<'_>, span: &Range<usize>) -> Option<Range<usize>> {
    let inside = |s: Range<usize>| s.start <= span.start && span.start < s.end.max(s.start + 1);
    let mut hit = None;
    for (key, value) in table.iter_mut() {
        let deeper = match value.get_mut() {
            toml::de::DeValue::Table(inner) => set_aside(inner, span),
            toml::de::DeValue::Array(items) => set_aside_item(items, span),
            _ => None,
        };
        if deeper.is_some() {
            return deeper;
        }
        if inside(key.span()) || inside(value.span()) {
            hit = Some(key.get_ref().clone());
            break;
        }
    }
    let value = table.remove(hit?.as_ref())?;
    Some(value.span())
}

/// [`set_aside`] for an array: inside one of its items, or the item
/// `span` points into.
fn set_aside_item(items: &mut toml::de::DeArray<'_>, span: &Range<usize>) -> Option<Range<usize>> {
    for item in items.iter_mut() {
        if let toml::de::DeValue::Table(inner) = item.get_mut()
            && let Some(gone) = set_aside(inner, span)
        {
            return Some(gone);
        }
    }
    let index = items
        .iter()
        .position(|v| v.span().start <= span.start && span.start < v.span().end)?;
    let gone = items[index].span();
    *items = std::mem::replace(items, toml::de::DeArray::new())
        .into_iter()
        .enumerate()
        .filter(|(i, _)| *i != index)
        .map(|(_, v)| v)
        .collect();
    Some(gone)
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// The key path toml recorded for an error. toml keeps it private but
/// prints it as a last line "in `a.b`" when the error has no input attached.
fn toml_key(error: &toml::de::Error) -> Option<String> {
    let mut bare = error.clone();
    bare.set_input(None);
    let text = bare.to_string();
    text.lines().rev().find_map(|l| {
        l.strip_prefix("in `")?
            .strip_suffix('`')
            .map(str::to_string)
    })
}

/// "unknown field `x`" is reported under its parent table; name `x` itself.
fn name_unknown_key(mut error: FileError) -> FileError {
    let unknown = error
        .message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(name, _)| name.to_string());
    if let Some(name) = unknown {
        error.key = Some(match error.key.take() {
            Some(parent) => format!("{parent}.{name}"),
            None => name,
        });
    }
    error
}

/// A semantic problem found after parsing, with the span it is about.
struct Problem {
    span: Range<usize>,
    key: &'static str,
    message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    drain_timeout: Option<Dur>,
    shutdown_delay: Option<Dur>,
    upgrade_move_connections: Option<bool>,
    ready_requires_backends: Option<bool>,
    admin: Option<Listen>,
    admin_token_file: Option<PathBuf>,
    admin_socket: Option<PathBuf>,
    state_file: Option<PathBuf>,
    resolver: Option<Resolver>,
    access_log: Option<Text<AccessLogTarget>>,
    access_log_format: Option<Text<AccessLogFormat>>,
    pid_file: Option<PathBuf>,
    #[serde(default)]
    defaults: Option<Spanned<RawService>>,
    #[serde(default)]
    listener: Vec<Spanned<RawService>>,
}

/// One `[[listener]]` table, or the `[defaults]` it inherits from.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    listen: Option<Spanned<Listen>>,
    protocol: Option<Text<Protocol>>,
    name: Option<Spanned<String>>,
    backlog: Option<AtLeastOne>,
    backends: Option<Spanned<Vec<BackendEntry>>>,
    strategy: Option<Text<StrategyKind>>,
    connect_timeout: Option<PositiveDur>,
    retries: Option<u32>,
    on_failure: Option<Text<OnFailure>>,
    health: Option<RawHealth>,
    max_fails: Option<u32>,
    fail_timeout: Option<PositiveDur>,
    max_ejection_percent: Option<ShareOfPool>,
    max_ejection_time: Option<PositiveDur>,
    max_conns: Option<AtLeastOne>,
    queue_timeout: Option<Dur>,
    idle_timeout: Option<PositiveDur>,
    send_proxy: Option<Text<ProxyVersion>>,
    accept_proxy: Option<bool>,
    allow: Option<Vec<Text<Network>>>,
    deny: Option<Vec<Text<Network>>>,
    max_conns_per_ip: Option<AtLeastOne>,
    rate_per_ip: Option<Rate>,
    per_ip_ipv6_prefix: Option<Ipv6Prefix>,
    slow_start: Option<PositiveDur>,
    tcp_keepalive: Option<Spanned<RawKeepalive>>,
    max_connection_age: Option<PositiveDur>,
    hash_balance_factor: Option<BalanceFactor>,
    resolve_interval: Option<PositiveDur>,
    resolve_ttl_min: Option<PositiveDur>,
    tls_inspect_timeout: Option<PositiveDur>,
    responses: Option<u32>,
    per_datagram: Option<bool>,
    max_sessions: Option<AtLeastOne>,
    max_sessions_per_ip: Option<AtLeastOne>,
    datagram_rate_per_ip: Option<Rate>,
    max_datagram_size: Option<DatagramSize>,
    /// `[[listener.route]]` tables: the same keys as a listener's pool,
    /// plus `server_names` and `alpn`.
    route: Option<Vec<Spanned<RawService>>>,
    /// Only in a route.
    server_names: Option<Vec<Spanned<String>>>,
    /// Only in a route.
    alpn: Option<Spanned<Vec<String>>>,
    /// `[listener.tls]` / `[listener.route.tls]`: terminate TLS.
    tls: Option<Spanned<RawTls>>,
    /// `backend_tls = { ... }`: speak TLS to the backends.
    backend_tls: Option<Spanned<RawBackendTls>>,
}

/// `tcp_keepalive = { idle = "60s", interval = "10s", count = 6,
/// user_timeout = "2m" }`; `interval` and `count` default as for
/// `--tcp-keepalive IDLE`, `user_timeout` as for `--tcp-user-timeout`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeepalive {
    idle: Dur,
    interval: Option<Dur>,
    count: Option<AtLeastOne>,
    user_timeout: Option<UserTimeout>,
}

impl RawKeepalive {
    /// Through the flag's parser, so both check the same ranges.
    fn into_config(self) -> Result<KeepaliveConfig, String> {
        let mut text = format!("{}s", self.idle.0.as_secs_f64());
        if self.interval.is_some() || self.count.is_some() {
            let base = KeepaliveConfig::with_idle(self.idle.0);
            let interval = self.interval.map_or(base.interval, |d| d.0);
            let count = self.count.map_or(base.count, |n| n.0);
            text = format!("{text},{}s,{count}", interval.as_secs_f64());
        }
        let mut keepalive = config::parse_keepalive(&text)?;
        if let Some(UserTimeout(user_timeout)) = self.user_timeout {
            keepalive.user_timeout = user_timeout;
        }
        Ok(keepalive)
    }
}

/// A `TCP_USER_TIMEOUT`: a duration as [`Dur`] reads it, or `"off"`;
/// zero is off too (`None`).
#[derive(Clone, Copy)]
struct UserTimeout(Option<Duration>);

impl<'de> Deserialize<'de> for UserTimeout {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(DurationVisitor {
            parse: |text| config::parse_user_timeout(text).map(UserTimeout),
            expecting: "a duration such as \"30s\", or \"off\"",
        })
    }
}

/// A `health` table as written; its check keys are checked to name one
/// kind of check when it is read (see [`RawHealthTable`]).
#[derive(Clone, Default, Deserialize)]
#[serde(try_from = "RawHealthTable")]
struct RawHealth {
    interval: Option<PositiveDur>,
    timeout: Option<PositiveDur>,
    rise: Option<AtLeastOne>,
    fall: Option<AtLeastOne>,
    /// The short form of a steps check: one send, one expect.
    send: Option<Bytes>,
    expect: Option<Bytes>,
    /// How `expect` matches.
    how: Option<Match>,
    steps: Option<Vec<Step>>,
    http: Option<HttpCheck>,
    exec: Option<ExecCheck>,
    /// The datagram of a UDP check (whose reply `expect` judges).
    udp: Option<Bytes>,
    port: Option<Port>,
    agent_port: Option<Port>,
    agent_send: Option<Bytes>,
    agent_interval: Option<PositiveDur>,
    on_down: Option<OnHealthChange>,
    on_backup_up: Option<OnHealthChange>,
    panic_threshold: Option<u8>,
}

/// The keys of a `health` table, before [`RawHealth`] checks them.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealthTable {
    interval: Option<PositiveDur>,
    timeout: Option<PositiveDur>,
    rise: Option<AtLeastOne>,
    fall: Option<AtLeastOne>,
    send: Option<Bytes>,
    expect: Option<String>,
    #[serde(rename = "match")]
    how: Option<Text<Match>>,
    steps: Option<Vec<StepEntry>>,
    http: Option<RawHttp>,
    exec: Option<Vec<String>>,
    udp: Option<Bytes>,
    port: Option<Port>,
    agent_port: Option<Port>,
    agent_send: Option<Bytes>,
    agent_interval: Option<PositiveDur>,
    on_down: Option<Text<OnHealthChange>>,
    on_backup_up: Option<Text<OnHealthChange>>,
    panic_threshold: Option<Percent>,
}

impl TryFrom<RawHealthTable> for RawHealth {
    type Error = String;

    fn try_from(t: RawHealthTable) -> Result<RawHealth, String> {
        // With `udp`, `expect` judges the datagram's reply.
        let short_form = t.send.is_some() || (t.expect.is_some() && t.udp.is_none());
        let kinds: Vec<&str> = [
            (short_form, "send/expect"),
            (t.steps.is_some(), "steps"),
            (t.http.is_some(), "http"),
            (t.exec.is_some(), "exec"),
            (t.udp.is_some(), "udp"),
        ]
        .into_iter()
        .filter_map(|(set, kind)| set.then_some(kind))
        .collect();
        if kinds.len() > 1 {
            return Err(format!(
                "one health check per pool: {} are set; keep one (steps hold any \
                 number of sends and expects)",
                kinds.join(" and ")
            ));
        }
        let how = t.how.map(|m| m.0);
        if how.is_some() && t.expect.is_none() {
            return Err("`match` says how `expect` matches: set `expect` too".into());
        }
        let expect = match t.expect {
            None => None,
            Some(text) => {
                let pattern = if how == Some(Match::Regex) {
                    text.into_bytes()
                } else {
                    parse_escaped(&text)?
                };
                Some(Bytes(
                    Expect::new(pattern, how.unwrap_or_default())?.pattern,
                ))
            }
        };
        let steps = match t.steps {
            Some(list) if list.is_empty() => {
                return Err(
                    "empty `steps`: give sends and expects, or leave it out for a \
                            connect check"
                        .into(),
                );
            }
            list => list.map(|l| l.into_iter().map(|s| s.0).collect()),
        };
        let exec = t.exec.map(ExecCheck::new).transpose()?;
        Ok(RawHealth {
            interval: t.interval,
            timeout: t.timeout,
            rise: t.rise,
            fall: t.fall,
            send: t.send,
            expect,
            how,
            steps,
            http: t.http.map(|h| h.0),
            exec,
            udp: t.udp,
            port: t.port,
            agent_port: t.agent_port,
            agent_send: t.agent_send,
            agent_interval: t.agent_interval,
            on_down: t.on_down.map(|p| p.0),
            on_backup_up: t.on_backup_up.map(|p| p.0),
            panic_threshold: t.panic_threshold.map(|p| p.0),
        })
    }
}

impl RawHealth {
    /// Whether this table names a check of its own (then none of the
    /// [defaults]' check keys apply).
    fn has_check(&self) -> bool {
        self.send.is_some()
            || self.expect.is_some()
            || self.steps.is_some()
            || self.http.is_some()
            || self.exec.is_some()
            || self.udp.is_some()
    }

    /// The short form (`send`, `expect`), which merges key by key.
    fn is_send_expect(&self) -> bool {
        (self.send.is_some() || self.expect.is_some()) && self.udp.is_none()
    }

    /// `self` (a listener's or route's) over `base` (from [defaults]),
    /// key by key; the check as a whole: one kind of check, not a mix.
    fn inherit(self, base: RawHealth) -> RawHealth {
        let own_check = self.has_check();
        let merge_short = self.is_send_expect() && base.is_send_expect();
        let check = if !own_check {
            base.clone()
        } else if merge_short {
            RawHealth {
                send: self.send.clone().or(base.send.clone()),
                expect: self.expect.clone().or(base.expect.clone()),
                how: self.how.or(base.how),
                ..self.clone()
            }
        } else {
            self.clone()
        };
        RawHealth {
            interval: self.interval.or(base.interval),
            timeout: self.timeout.or(base.timeout),
            rise: self.rise.or(base.rise),
            fall: self.fall.or(base.fall),
            send: check.send,
            expect: check.expect,
            how: check.how,
            steps: check.steps,
            http: check.http,
            exec: check.exec,
            udp: check.udp,
            port: self.port.or(base.port),
            agent_port: self.agent_port.or(base.agent_port),
            agent_send: self.agent_send.or(base.agent_send),
            agent_interval: self.agent_interval.or(base.agent_interval),
            on_down: self.on_down.or(base.on_down),
            on_backup_up: self.on_backup_up.or(base.on_backup_up),
            panic_threshold: self.panic_threshold.or(base.panic_threshold),
        }
    }

    /// Sets what this table says in `h`; other keys keep their defaults.
    fn apply(self, h: &mut HealthConfig) {
        set(&mut h.interval, self.interval.map(|d| d.0));
        set(&mut h.timeout, self.timeout.map(|d| d.0));
        set(&mut h.rise, self.rise.map(|n| n.0));
        set(&mut h.fall, self.fall.map(|n| n.0));
        h.check = CheckConfig::from_kinds(
            self.http,
            self.exec,
            self.steps,
            self.udp.map(|b| b.0),
            (
                self.send.map(|b| b.0),
                self.expect.map(|b| b.0),
                self.how.unwrap_or_default(),
            ),
        );
        h.port = self.port.map(|p| p.0);
        h.agent = self.agent_port.map(|port| AgentConfig {
            port: port.0,
            send: self.agent_send.map(|b| b.0),
            interval: self.agent_interval.map_or(AGENT_INTERVAL, |d| d.0),
        });
        set(&mut h.on_down, self.on_down);
        set(&mut h.on_backup_up, self.on_backup_up);
        h.panic_threshold = self.panic_threshold;
    }
}

/// One item of `steps`: `{ send = "..." }`, `{ send_hex = "..." }`,
/// `{ expect = "...", match = "..." }` or `{ expect_hex = "..." }`.
#[derive(Clone)]
struct StepEntry(Step);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StepTable {
    send: Option<String>,
    send_hex: Option<String>,
    expect: Option<String>,
    expect_hex: Option<String>,
    #[serde(rename = "match")]
    how: Option<Text<Match>>,
}

impl<'de> Deserialize<'de> for StepEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let t = StepTable::deserialize(d)?;
        config::health::step(
            t.send.as_deref(),
            t.send_hex.as_deref(),
            t.expect.as_deref(),
            t.expect_hex.as_deref(),
            t.how.map(|m| m.0),
        )
        .map(StepEntry)
        .map_err(de::Error::custom)
    }
}

/// `http = { method, path, host, expect_status, expect_body }`.
#[derive(Clone)]
struct RawHttp(HttpCheck);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpTable {
    method: Option<String>,
    path: Option<String>,
    host: Option<String>,
    expect_status: Option<StatusItems>,
    expect_body: Option<String>,
}

impl<'de> Deserialize<'de> for RawHttp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let t = HttpTable::deserialize(d)?;
        let mut check = HttpCheck::default();
        if let Some(method) = t.method {
            config::health::check_method(&method).map_err(de::Error::custom)?;
            check.method = method;
        }
        if let Some(path) = t.path {
            config::health::check_path(&path).map_err(de::Error::custom)?;
            check.path = path;
        }
        if let Some(host) = &t.host {
            config::health::check_host(host).map_err(de::Error::custom)?;
        }
        check.host = t.host;
        if let Some(StatusItems(set)) = t.expect_status {
            check.expect_status = set;
        }
        if t.expect_body.as_deref() == Some("") {
            return Err(de::Error::custom(
                "an empty expect_body always matches: leave it out",
            ));
        }
        check.expect_body = t.expect_body;
        Ok(RawHttp(check))
    }
}

/// `expect_status`: `"2xx"`, `200`, or a list of codes and classes.
#[derive(Clone)]
struct StatusItems(StatusSet);

impl<'de> Deserialize<'de> for StatusItems {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct StatusVisitor;
        impl<'de> Visitor<'de> for StatusVisitor {
            type Value = StatusItems;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a status such as 200 or \"2xx\", or a list of them")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StatusItems, E> {
                v.parse().map(StatusItems).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<StatusItems, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<StatusItems, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<toml::Value>()? {
                    match item {
                        toml::Value::Integer(n) => items.push(n.to_string()),
                        toml::Value::String(s) => items.push(s),
                        other => {
                            return Err(de::Error::custom(format!(
                                "bad HTTP status {other}: expected a code or a class such as \"2xx\""
                            )));
                        }
                    }
                }
                StatusSet::from_items(items.iter().map(String::as_str))
                    .map(StatusItems)
                    .map_err(de::Error::custom)
            }
        }
        d.deserialize_any(StatusVisitor)
    }
}

/// A percentage from 1 to 100 (`panic_threshold`).
#[derive(Clone, Copy)]
struct Percent(u8);

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = u64::deserialize(d)?;
        config::health::parse_percent(&n.to_string(), 1)
            .map(Percent)
            .map_err(de::Error::custom)
    }
}

/// A percentage from 0 to 100 (`max_ejection_percent`).
#[derive(Clone, Copy)]
struct ShareOfPool(u8);

impl<'de> Deserialize<'de> for ShareOfPool {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = u64::deserialize(d)?;
        config::health::parse_percent(&n.to_string(), 0)
            .map(ShareOfPool)
            .map_err(de::Error::custom)
    }
}

impl RawFile {
    /// What could be built, and every semantic problem found: the
    /// configuration is usable only without any.
    fn into_config(self, fallback: &[BackendSpec]) -> (Readable, Vec<Problem>) {
        let mut problems = Vec::new();
        let defaults = match self.defaults {
            Some(d) => {
                if let Some(listen) = &d.get_ref().listen {
                    problems.push(Problem {
                        span: listen.span(),
                        key: "defaults.listen",
                        message: "every listener needs its own address: put `listen` in a \
                                  [[listener]] table, not in [defaults]"
                            .into(),
                    });
                }
                if let Some(name) = &d.get_ref().name {
                    problems.push(Problem {
                        span: name.span(),
                        key: "defaults.name",
                        message: "every listener needs its own name: put `name` in a \
                                  [[listener]] table, not in [defaults]"
                            .into(),
                    });
                }
                let span = d.span();
                let d = d.into_inner();
                if let Some(key) = d.route_key() {
                    let key = key.rsplit('.').next().unwrap_or(key);
                    problems.push(Problem {
                        span,
                        key: "defaults",
                        message: format!(
                            "`{key}`: routes belong to a [[listener]]: put them in \
                             [[listener.route]] tables"
                        ),
                    });
                }
                d
            }
            None => RawService::default(),
        };
        let protocol_of = |raw: &RawService| {
            raw.protocol
                .as_ref()
                .or(defaults.protocol.as_ref())
                .map_or(Protocol::Tcp, |p| p.0)
        };
        problems.extend(check_names(&self.listener, &protocol_of));
        problems.extend(check_route_names(&self.listener, &protocol_of));
        if self.listener.is_empty() {
            problems.push(no_listener());
        }
        let listeners = self.listener.len();
        let mut services = Vec::new();
        let mut positions = Vec::new();
        let mut seen: HashSet<(Protocol, SocketAddr)> = HashSet::new();
        for (position, table) in self.listener.into_iter().enumerate() {
            let span = table.span();
            let own = table.into_inner();
            let protocol = protocol_of(&own);
            // Only what the listener sets itself: [defaults] may hold
            // settings for listeners of either protocol.
            for (key, message) in
                udp::key_problems(protocol, &|key| own.is_set(key), &udp::file_key)
            {
                problems.push(Problem {
                    span: span.clone(),
                    key: listener_key(key),
                    message,
                });
            }
            let raw = own.inherit(&defaults.for_protocol(protocol));
            let Some(listen) = raw.listen.clone() else {
                problems.push(Problem {
                    span,
                    key: "listener.listen",
                    message: "this [[listener]] has no `listen` address".into(),
                });
                continue;
            };
            let addr = listen.get_ref().0;
            // Port 0 asks the kernel for a fresh port each time: never a clash.
            if addr.port() != 0 && !seen.insert((protocol, addr)) {
                problems.push(Problem {
                    span: listen.span(),
                    key: "listener.listen",
                    message: format!(
                        "duplicate listen address {addr} ({protocol}): each listener needs its \
                         own"
                    ),
                });
            }
            let matching = RawService {
                route: None,
                ..raw.clone()
            };
            if let Some(key) = matching.route_key() {
                problems.push(Problem {
                    span: span.clone(),
                    key,
                    message: "`server_names` and `alpn` belong in a [[listener.route]] table"
                        .into(),
                });
            }
            match raw.into_service(addr, span, fallback) {
                Ok(service) => {
                    services.push(service);
                    positions.push(position);
                }
                Err(mut found) => problems.append(&mut found),
            }
        }
        if services.is_empty() && problems.is_empty() {
            problems.push(no_listener());
        }
        // Process-wide defaults are Config::single's, as for the flags.
        let mut config = Config::with_services(services);
        if let Some(d) = self.drain_timeout {
            config.drain_timeout = d.0;
        }
        if let Some(d) = self.shutdown_delay {
            config.shutdown_delay = d.0;
        }
        set(
            &mut config.ready_requires_backends,
            self.ready_requires_backends,
        );
        set(
            &mut config.upgrade_move_connections,
            self.upgrade_move_connections,
        );
        config.admin = self.admin.map(|a| a.0);
        config.admin_token_file = self.admin_token_file;
        config.admin_socket = self.admin_socket;
        config.state_file = self.state_file;
        config.pid_file = self.pid_file;
        config.resolver = self.resolver.map(|r| r.0);
        set(&mut config.access_log.target, self.access_log.map(|t| t.0));
        set(
            &mut config.access_log.format,
            self.access_log_format.map(|t| t.0),
        );
        let read = Readable {
            config,
            positions,
            listeners,
        };
        (read, problems)
    }
}

/// Listener names are valid and unique, and none is another listener's
/// default name (its listen address), so the control API finds one pool
/// by each. Returns every problem found.
fn check_names(
    listeners: &[Spanned<RawService>],
    protocol_of: &dyn Fn(&RawService) -> Protocol,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut seen: HashSet<&str> = HashSet::new();
    for table in listeners {
        let Some(name) = &table.get_ref().name else {
            continue;
        };
        let problem = |message: String| Problem {
            span: name.span(),
            key: "listener.name",
            message,
        };
        if let Err(message) = config::check_pool_name(name.get_ref()) {
            problems.push(problem(message));
        } else if !seen.insert(name.get_ref()) {
            problems.push(problem(format!(
                "duplicate listener name {:?}: each listener needs its own",
                name.get_ref()
            )));
        }
    }
    for table in listeners {
        let raw = table.get_ref();
        let Some(listen) = raw.listen.as_ref().filter(|_| raw.name.is_none()) else {
            continue;
        };
        let default_name = udp::default_pool_name(protocol_of(raw), listen.get_ref().0);
        if listen.get_ref().0.port() != 0 && seen.contains(default_name.as_str()) {
            problems.push(Problem {
                span: listen.span(),
                key: "listener.listen",
                message: format!(
                    "another listener is named {default_name:?}, this one's default name: \
                     give this one a `name`"
                ),
            });
        }
    }
    problems
}

/// Route names are pool names too: unique among every listener's and
/// route's pool, so the control API finds one pool by each.
fn check_route_names(
    listeners: &[Spanned<RawService>],
    protocol_of: &dyn Fn(&RawService) -> Protocol,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut seen: HashSet<String> = listeners
        .iter()
        .filter_map(|t| {
            let raw = t.get_ref();
            match (&raw.name, &raw.listen) {
                (Some(name), _) => Some(name.get_ref().clone()),
                (None, Some(listen)) => {
                    Some(udp::default_pool_name(protocol_of(raw), listen.get_ref().0))
                }
                (None, None) => None,
            }
        })
        .collect();
    let routes = listeners
        .iter()
        .flat_map(|t| t.get_ref().route.iter().flatten());
    for name in routes.filter_map(|r| r.get_ref().name.as_ref()) {
        if !seen.insert(name.get_ref().clone()) {
            problems.push(Problem {
                span: name.span(),
                key: "listener.route.name",
                message: format!(
                    "duplicate pool name {:?}: a route's name names its pool, and must \
                     differ from every listener's and every other route's",
                    name.get_ref()
                ),
            });
        }
    }
    problems
}

/// `listener.KEY`, for a problem with one of a listener's keys.
fn listener_key(key: &'static str) -> &'static str {
    const KEYS: [(&str, &str); 22] = [
        ("backlog", "listener.backlog"),
        ("connect_timeout", "listener.connect_timeout"),
        ("on_failure", "listener.on_failure"),
        ("max_conns", "listener.max_conns"),
        ("queue_timeout", "listener.queue_timeout"),
        ("accept_proxy", "listener.accept_proxy"),
        ("max_conns_per_ip", "listener.max_conns_per_ip"),
        ("rate_per_ip", "listener.rate_per_ip"),
        ("tcp_keepalive", "listener.tcp_keepalive"),
        ("max_connection_age", "listener.max_connection_age"),
        ("tls_inspect_timeout", "listener.tls_inspect_timeout"),
        ("route", "listener.route"),
        ("tls", "listener.tls"),
        ("backend_tls", "listener.backend_tls"),
        ("send_proxy", "listener.send_proxy"),
        ("health", "listener.health"),
        ("responses", "listener.responses"),
        ("per_datagram", "listener.per_datagram"),
        ("max_sessions", "listener.max_sessions"),
        ("max_sessions_per_ip", "listener.max_sessions_per_ip"),
        ("datagram_rate_per_ip", "listener.datagram_rate_per_ip"),
        ("max_datagram_size", "listener.max_datagram_size"),
    ];
    KEYS.iter()
        .find(|(k, _)| *k == key)
        .map_or("listener", |(_, dotted)| dotted)
}

fn no_listener() -> Problem {
    Problem {
        span: 0..0,
        key: "listener",
        message: "no [[listener]] table: the file must define at least one listener".into(),
    }
}

impl RawService {
    /// This listener's settings, falling back to `defaults` key by key
    /// (and inside `health`, field by field).
    fn inherit(self, defaults: &RawService) -> RawService {
        let d = defaults.clone();
        let health = match (self.health, d.health) {
            (Some(own), Some(base)) => Some(own.inherit(base)),
            (own, base) => own.or(base),
        };
        RawService {
            listen: self.listen,
            protocol: self.protocol.or(d.protocol),
            // Names are never inherited: each must be unique.
            name: self.name,
            backlog: self.backlog.or(d.backlog),
            backends: self.backends.or(d.backends),
            strategy: self.strategy.or(d.strategy),
            connect_timeout: self.connect_timeout.or(d.connect_timeout),
            retries: self.retries.or(d.retries),
            on_failure: self.on_failure.or(d.on_failure),
            health,
            max_fails: self.max_fails.or(d.max_fails),
            fail_timeout: self.fail_timeout.or(d.fail_timeout),
            max_ejection_percent: self.max_ejection_percent.or(d.max_ejection_percent),
            max_ejection_time: self.max_ejection_time.or(d.max_ejection_time),
            max_conns: self.max_conns.or(d.max_conns),
            queue_timeout: self.queue_timeout.or(d.queue_timeout),
            idle_timeout: self.idle_timeout.or(d.idle_timeout),
            send_proxy: self.send_proxy.or(d.send_proxy),
            accept_proxy: self.accept_proxy.or(d.accept_proxy),
            allow: self.allow.or(d.allow),
            deny: self.deny.or(d.deny),
            max_conns_per_ip: self.max_conns_per_ip.or(d.max_conns_per_ip),
            rate_per_ip: self.rate_per_ip.or(d.rate_per_ip),
            per_ip_ipv6_prefix: self.per_ip_ipv6_prefix.or(d.per_ip_ipv6_prefix),
            slow_start: self.slow_start.or(d.slow_start),
            tcp_keepalive: self.tcp_keepalive.or(d.tcp_keepalive),
            max_connection_age: self.max_connection_age.or(d.max_connection_age),
            hash_balance_factor: self.hash_balance_factor.or(d.hash_balance_factor),
            resolve_interval: self.resolve_interval.or(d.resolve_interval),
            resolve_ttl_min: self.resolve_ttl_min.or(d.resolve_ttl_min),
            tls_inspect_timeout: self.tls_inspect_timeout.or(d.tls_inspect_timeout),
            responses: self.responses.or(d.responses),
            per_datagram: self.per_datagram.or(d.per_datagram),
            max_sessions: self.max_sessions.or(d.max_sessions),
            max_sessions_per_ip: self.max_sessions_per_ip.or(d.max_sessions_per_ip),
            datagram_rate_per_ip: self.datagram_rate_per_ip.or(d.datagram_rate_per_ip),
            max_datagram_size: self.max_datagram_size.or(d.max_datagram_size),
            tls: self.tls.or(d.tls),
            backend_tls: self.backend_tls.or(d.backend_tls),
            // Routes and what they match are never inherited.
            route: self.route,
            server_names: self.server_names,
            alpn: self.alpn,
        }
    }

    /// The first route-only key set here, if any, with its dotted name.
    fn route_key(&self) -> Option<&'static str> {
        if self.route.is_some() {
            Some("listener.route")
        } else if self.server_names.is_some() {
            Some("listener.route.server_names")
        } else if self.alpn.is_some() {
            Some("listener.route.alpn")
        } else {
            None
        }
    }

    /// The listener-wide keys set in a route table: a route shares its
    /// listener's socket, access rules and ClientHello reading.
    fn listener_only_keys(&self) -> Vec<&'static str> {
        [
            (self.listen.is_some(), "listen"),
            (self.protocol.is_some(), "protocol"),
            (self.backlog.is_some(), "backlog"),
            (self.accept_proxy.is_some(), "accept_proxy"),
            (self.allow.is_some(), "allow"),
            (self.deny.is_some(), "deny"),
            (self.max_conns_per_ip.is_some(), "max_conns_per_ip"),
            (self.rate_per_ip.is_some(), "rate_per_ip"),
            (self.per_ip_ipv6_prefix.is_some(), "per_ip_ipv6_prefix"),
            (self.tls_inspect_timeout.is_some(), "tls_inspect_timeout"),
            (self.route.is_some(), "route"),
        ]
        .into_iter()
        .filter_map(|(set, key)| set.then_some(key))
        .collect()
    }

    /// Whether this table sets `key` (a key of [`udp::TCP_ONLY`] or
    /// [`udp::UDP_ONLY`]) itself.
    fn is_set(&self, key: &str) -> bool {
        match key {
            "backlog" => self.backlog.is_some(),
            "connect_timeout" => self.connect_timeout.is_some(),
            "on_failure" => self.on_failure.is_some(),
            "max_conns" => self.max_conns.is_some(),
            "queue_timeout" => self.queue_timeout.is_some(),
            "accept_proxy" => self.accept_proxy.is_some(),
            "max_conns_per_ip" => self.max_conns_per_ip.is_some(),
            "rate_per_ip" => self.rate_per_ip.is_some(),
            "tcp_keepalive" => self.tcp_keepalive.is_some(),
            "max_connection_age" => self.max_connection_age.is_some(),
            "tls_inspect_timeout" => self.tls_inspect_timeout.is_some(),
            "responses" => self.responses.is_some(),
            "per_datagram" => self.per_datagram.is_some(),
            "max_sessions" => self.max_sessions.is_some(),
            "max_sessions_per_ip" => self.max_sessions_per_ip.is_some(),
            "datagram_rate_per_ip" => self.datagram_rate_per_ip.is_some(),
            "max_datagram_size" => self.max_datagram_size.is_some(),
            _ => false,
        }
    }

    /// These [defaults] as a listener of `protocol` inherits them: without
    /// the settings only the other protocol has, so one [defaults] table
    /// serves TCP and UDP listeners alike.
    fn for_protocol(&self, protocol: Protocol) -> RawService {
        let mut d = self.clone();
        match protocol {
            Protocol::Udp => {
                d.backlog = None;
                d.connect_timeout = None;
                d.on_failure = None;
                d.max_conns = None;
                d.queue_timeout = None;
                d.accept_proxy = None;
                d.max_conns_per_ip = None;
                d.rate_per_ip = None;
                d.tcp_keepalive = None;
                d.max_connection_age = None;
                d.tls_inspect_timeout = None;
            }
            Protocol::Tcp => {
                d.responses = None;
                d.per_datagram = None;
                d.max_sessions = None;
                d.max_sessions_per_ip = None;
                d.datagram_rate_per_ip = None;
                d.max_datagram_size = None;
            }
        }
        d
    }

    /// The route this `[[listener.route]]` table describes; pool settings
    /// it leaves unset are `listener`'s (itself already merged with
    /// [defaults]), except the backends, which every route names. On
    /// failure, every problem the route has, its pool's included.
    fn into_route(
        self,
        listener: &RawService,
        listen: SocketAddr,
        span: Range<usize>,
    ) -> Result<RouteConfig, Vec<Problem>> {
        let problem =
            |span: Range<usize>, key: &'static str, message: String| Problem { span, key, message };
        let mut problems = Vec::new();
        for key in self.listener_only_keys() {
            problems.push(problem(
                span.clone(),
                "listener.route",
                format!(
                    "`{key}` is a listener-wide setting: set it in the [[listener]] table, \
                     not in a route"
                ),
            ));
        }
        let name = self.name.clone();
        match &name {
            None => problems.push(problem(
                span.clone(),
                "listener.route.name",
                "this route has no `name` (it names the route's pool)".into(),
            )),
            Some(name) => {
                if let Err(m) = config::check_pool_name(name.get_ref()) {
                    problems.push(problem(name.span(), "listener.route.name", m));
                }
            }
        }
        let called = name.as_ref().map_or("this route".to_string(), |n| {
            format!("route {:?}", n.get_ref())
        });
        let missing_backends = self.backends.is_none();
        if missing_backends {
            problems.push(problem(
                span.clone(),
                "listener.route.backends",
                format!("{called} has no `backends`"),
            ));
        }
        let mut server_names = Vec::new();
        for text in self.server_names.iter().flatten() {
            match text.get_ref().parse::<ServerName>() {
                Ok(parsed) => server_names.push(parsed),
                Err(m) => problems.push(problem(text.span(), "listener.route.server_names", m)),
            }
        }
        let mut alpn = Vec::new();
        if let Some(list) = &self.alpn {
            for protocol in list.get_ref() {
                match config::tls::check_alpn(protocol) {
                    Ok(()) => alpn.push(protocol.clone()),
                    Err(message) => {
                        problems.push(problem(list.span(), "listener.route.alpn", message))
                    }
                }
            }
        }
        // As written, not as parsed: a bad name is its own problem.
        let matches_nothing = self.server_names.as_ref().is_none_or(Vec::is_empty)
            && self
                .alpn
                .as_ref()
                .is_none_or(|list| list.get_ref().is_empty());
        if matches_nothing {
            problems.push(problem(
                span.clone(),
                "listener.route.server_names",
                format!(
                    "{called} matches nothing: give it `server_names`, `alpn` or both \
                     (the listener's own `backends` are the default route)"
                ),
            ));
        }
        // A listener's `tls` terminates its own connections: a route
        // terminates only with a `tls` table of its own.
        let base = RawService {
            backends: None,
            route: None,
            tls: None,
            ..listener.clone()
        };
        // A nested route is a problem said above, not a pool to build.
        let own = RawService {
            route: None,
            ..self
        };
        let pool = match own.inherit(&base).into_service(listen, span.clone(), &[]) {
            Ok(pool) => Some(pool),
            Err(found) => {
                // Without `backends` the pool has none: said above already.
                let found = found
                    .into_iter()
                    .filter(|p| !(missing_backends && p.key == "listener.backends"));
                problems.extend(found);
                None
            }
        };
        match (name, pool) {
            (Some(name), Some(pool)) if problems.is_empty() => Ok(RouteConfig {
                name: name.into_inner(),
                server_names,
                alpn,
                pool,
            }),
            // Never: each way to fail says why above; a route must not
            // fail silently all the same.
            _ if problems.is_empty() => Err(vec![problem(
                span,
                "listener.route",
                "this route cannot be used".into(),
            )]),
            _ => Err(problems),
        }
    }

    /// The service this table describes; unset keys keep the flag defaults.
    fn into_service(
        mut self,
        listen: SocketAddr,
        span: Range<usize>,
        fallback: &[BackendSpec],
    ) -> Result<ServiceConfig, Vec<Problem>> {
        let mut routes = Vec::new();
        let mut problems = Vec::new();
        for table in self.route.clone().into_iter().flatten() {
            let span = table.span();
            let checked = table
                .into_inner()
                .into_route(&self, listen, span.clone())
                .and_then(|route| {
                    check_route_overlap(&routes, &route, span)
                        .map(|()| route)
                        .map_err(|problem| vec![problem])
                });
            match checked {
                Ok(route) => routes.push(route),
                Err(mut found) => problems.append(&mut found),
            }
        }
        let backends: Vec<BackendSpec> = match &self.backends {
            Some(list) => list.get_ref().iter().flat_map(|e| e.0.clone()).collect(),
            // With routes, no backends means no default route.
            None if !routes.is_empty() => Vec::new(),
            None => fallback.to_vec(),
        };
        if backends.is_empty() && (routes.is_empty() || self.backends.is_some()) {
            problems.push(Problem {
                span: self.backends.as_ref().map_or(span.clone(), |b| b.span()),
                key: "listener.backends",
                message: format!(
                    "listener {listen} has no backends: set `backends` in it or in [defaults], \
                     or give --backend"
                ),
            });
        }
        // Checked once merged: the port may come from [defaults].
        if let Some(h) = &self.health
            && h.agent_port.is_none()
            && (h.agent_send.is_some() || h.agent_interval.is_some())
        {
            problems.push(Problem {
                span: span.clone(),
                key: "listener.health.agent_port",
                message: "`agent_send` and `agent_interval` need `agent_port` (here or in \
                          [defaults])"
                    .into(),
            });
        }
        let keepalive = match self.tcp_keepalive.take() {
            None => None,
            Some(keepalive) => {
                let span = keepalive.span();
                match keepalive.into_inner().into_config() {
                    Ok(config) => Some(config),
                    Err(message) => {
                        problems.push(Problem {
                            span,
                            key: "listener.tcp_keepalive",
                            message,
                        });
                        None
                    }
                }
            }
        };
        let tls = read_table(
            self.tls.take(),
            "listener.tls",
            &mut problems,
            RawTls::into_config,
        );
        let backend_tls = read_table(
            self.backend_tls.take(),
            "listener.backend_tls",
            &mut problems,
            RawBackendTls::into_config,
        );
        if !problems.is_empty() {
            return Err(problems);
        }
        let mut s = ServiceConfig::new(listen, backends);
        s.tls = tls;
        s.backend_tls = backend_tls;
        s.name = self.name.map(Spanned::into_inner);
        set(&mut s.backlog, self.backlog.map(|n| n.0));
        set(&mut s.strategy, self.strategy.map(|t| t.0));
        set(&mut s.connect_timeout, self.connect_timeout.map(|d| d.0));
        set(&mut s.retries, self.retries);
        set(&mut s.on_failure, self.on_failure.map(|t| t.0));
        if let Some(h) = self.health {
            h.apply(&mut s.health);
        }
        set(&mut s.max_fails, self.max_fails);
        set(&mut s.fail_timeout, self.fail_timeout.map(|d| d.0));
        set(
            &mut s.max_ejection_percent,
            self.max_ejection_percent.map(|p| p.0),
        );
        set(
            &mut s.max_ejection_time,
            self.max_ejection_time.map(|d| d.0),
        );
        s.max_conns = self.max_conns.map(|n| n.0);
        set(&mut s.queue_timeout, self.queue_timeout.map(|d| d.0));
        s.idle_timeout = self.idle_timeout.map(|d| d.0);
        s.send_proxy = self.send_proxy.map(|t| t.0);
        set(&mut s.accept_proxy, self.accept_proxy);
        s.access.allow = networks(self.allow);
        s.access.deny = networks(self.deny);
        s.access.max_conns_per_ip = self.max_conns_per_ip.map(|n| n.0);
        s.access.rate_per_ip = self.rate_per_ip.map(|r| r.0);
        set(
            &mut s.access.per_ip_ipv6_prefix,
            self.per_ip_ipv6_prefix.map(|p| p.0),
        );
        s.slow_start = self.slow_start.map(|d| d.0);
        s.keepalive = keepalive;
        s.max_connection_age = self.max_connection_age.map(|d| d.0);
        s.hash_balance_factor = self.hash_balance_factor.map(|f| f.0);
        set(&mut s.resolve.interval, self.resolve_interval.map(|d| d.0));
        set(&mut s.resolve.ttl_min, self.resolve_ttl_min.map(|d| d.0));
        set(
            &mut s.tls_inspect_timeout,
            self.tls_inspect_timeout.map(|d| d.0),
        );
        s.routes = routes;
        set(&mut s.protocol, self.protocol.map(|p| p.0));
        s.udp.responses = self.responses;
        set(&mut s.udp.per_datagram, self.per_datagram);
        s.udp.max_sessions = self.max_sessions.map(|n| n.0);
        s.udp.max_sessions_per_ip = self.max_sessions_per_ip.map(|n| n.0);
        s.udp.datagram_rate_per_ip = self.datagram_rate_per_ip.map(|r| r.0);
        set(
            &mut s.udp.max_datagram_size,
            self.max_datagram_size.map(|n| n.0),
        );
        let wrong: Vec<Problem> = udp::value_problems(&s)
            .into_iter()
            .map(|(key, message)| Problem {
                span: span.clone(),
                key: listener_key(key),
                message,
            })
            .collect();
        if !wrong.is_empty() {
            return Err(wrong);
        }
        Ok(s)
    }
}

/// Whether `route` (whose table is at `span`) takes a server name with
/// the same ALPN protocols as an earlier route of its listener: it could
/// never be chosen for it.
fn check_route_overlap(
    earlier: &[RouteConfig],
    route: &RouteConfig,
    span: Range<usize>,
) -> Result<(), Problem> {
    let alpn_set = |r: &RouteConfig| {
        let mut alpn: Vec<String> = r.alpn.clone();
        alpn.sort_unstable();
        alpn
    };
    let names = |r: &RouteConfig| -> Vec<Option<ServerName>> {
        if r.server_names.is_empty() {
            vec![None]
        } else {
            r.server_names.iter().cloned().map(Some).collect()
        }
    };
    let alpn = alpn_set(route);
    for other in earlier.iter().filter(|o| alpn_set(o) == alpn) {
        let others = names(other);
        if let Some(name) = names(route).into_iter().find(|n| others.contains(n)) {
            let what = name.map_or("any server name".to_string(), |n| format!("\"{n}\""));
            return Err(Problem {
                span,
                key: "listener.route.server_names",
                message: format!(
                    "route {:?}: {what} with ALPN {alpn:?} is already taken by route {:?} \
                     of this listener, so this one could never be chosen for it",
                    route.name, other.name
                ),
            });
        }
    }
    Ok(())
}

/// A sub-table read into the model: `None` (its problems pushed under
/// `key`) when it is unusable or absent.
fn read_table<R, T>(
    raw: Option<Spanned<R>>,
    key: &'static str,
    problems: &mut Vec<Problem>,
    into_config: impl FnOnce(R) -> Result<T, Vec<String>>,
) -> Option<T> {
    let raw = raw?;
    let span = raw.span();
    into_config(raw.into_inner())
        .map_err(|found| {
            problems.extend(found.into_iter().map(|message| Problem {
                span: span.clone(),
                key,
                message,
            }))
        })
        .ok()
}

fn set<T>(field: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *field = value;
    }
}

fn networks(list: Option<Vec<Text<Network>>>) -> Vec<Network> {
    list.unwrap_or_default().into_iter().map(|c| c.0).collect()
}

/// A string value read with a `FromStr` parser from config.rs or a sibling.
#[derive(Clone)]
struct Text<T>(T);

impl<'de, T: FromStr<Err = String>> Deserialize<'de> for Text<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map(Text).map_err(de::Error::custom)
    }
}

/// A listen address: `"ADDR:PORT"`, `"[IPv6]:PORT"` or `"PORT"`.
#[derive(Clone)]
struct Listen(SocketAddr);

impl<'de> Deserialize<'de> for Listen {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        config::parse_listen(&text)
            .map(Listen)
            .map_err(de::Error::custom)
    }
}

/// Health-check bytes with escapes (`\r`, `\n`, `\xNN`).
#[derive(Clone)]
struct Bytes(Vec<u8>);

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_escaped(&text).map(Bytes).map_err(de::Error::custom)
    }
}

/// An IPv6 prefix length from 1 to 128.
#[derive(Clone, Copy)]
struct Ipv6Prefix(u8);

impl<'de> Deserialize<'de> for Ipv6Prefix {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match u8::deserialize(d)? {
            n @ 1..=128 => Ok(Ipv6Prefix(n)),
            n => Err(de::Error::custom(format!(
                "expected an IPv6 prefix length from 1 to 128, got {n}"
            ))),
        }
    }
}

/// A DNS server, `"IP"` or `"IP:PORT"`, as [`config::parse_resolver`] reads it.
#[derive(Clone, Copy)]
struct Resolver(SocketAddr);

impl<'de> Deserialize<'de> for Resolver {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        config::parse_resolver(&text)
            .map(Resolver)
            .map_err(de::Error::custom)
    }
}

/// A TCP port from 1 to 65535.
#[derive(Clone, Copy)]
struct Port(u16);

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match u16::deserialize(d)? {
            0 => Err(de::Error::custom("expected a port from 1 to 65535, got 0")),
            n => Ok(Port(n)),
        }
    }
}

/// A bounded-load factor, as [`config::parse_balance_factor`] reads it.
#[derive(Clone, Copy)]
struct BalanceFactor(f64);

impl<'de> Deserialize<'de> for BalanceFactor {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = f64::deserialize(d)?;
        config::parse_balance_factor(&value.to_string())
            .map(BalanceFactor)
            .map_err(de::Error::custom)
    }
}

/// An IP address (no port), for `check_addr`.
#[derive(Clone, Copy)]
struct Ip(IpAddr);

impl<'de> Deserialize<'de> for Ip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map(Ip).map_err(|_| {
            de::Error::custom(format!(
                "bad address {text:?}: expected an IP such as 10.0.0.5 or ::1"
            ))
        })
    }
}

/// A whole number from 1.
#[derive(Clone, Copy)]
struct AtLeastOne(u32);

impl<'de> Deserialize<'de> for AtLeastOne {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match u32::deserialize(d)? {
            0 => Err(de::Error::custom("expected a whole number from 1, got 0")),
            n => Ok(AtLeastOne(n)),
        }
    }
}

/// A `max_datagram_size`: bytes from 1 to 65,527.
#[derive(Clone, Copy)]
struct DatagramSize(u32);

impl<'de> Deserialize<'de> for DatagramSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = u64::deserialize(d)?;
        udp::parse_datagram_size(&n.to_string())
            .map(DatagramSize)
            .map_err(de::Error::custom)
    }
}

/// A duration: a string such as `"10s"`, `"250ms"`, `"2m"`, `"1h 30m"`
/// ([`parse_duration`]'s syntax), or a number of seconds.
///
/// Not `humantime-serde`: it reads only strings (`timeout = 1` would be a
/// type error), skips our bare-number-is-seconds rule and range check, and
/// says only "invalid value: string \"ten\", expected a duration".
#[derive(Clone, Copy)]
struct Dur(Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(DurationVisitor {
            parse: |text| parse_duration(text).map(Dur),
            expecting: "a duration such as \"10s\", \"250ms\" or \"2m\"",
        })
    }
}

/// Reads a string through `parse`, and a number as that many seconds
/// through it too, so numbers get its range checks.
struct DurationVisitor<T> {
    parse: fn(&str) -> Result<T, String>,
    /// What the error for another type says was expected.
    expecting: &'static str,
}

impl<T> Visitor<'_> for DurationVisitor<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.parse)(v).map_err(E::custom)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        if v < 0 {
            return Err(E::custom(format!("duration {v} is negative")));
        }
        self.visit_str(&v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        self.visit_str(&v.to_string())
    }
}

/// A duration longer than zero.
#[derive(Clone, Copy)]
struct PositiveDur(Duration);

impl<'de> Deserialize<'de> for PositiveDur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let Dur(duration) = Dur::deserialize(d)?;
        if duration.is_zero() {
            return Err(de::Error::custom("the duration must be longer than zero"));
        }
        Ok(PositiveDur(duration))
    }
}

/// New connections (or datagrams) per second: a number, or a string such
/// as `"20/s"`.
#[derive(Clone, Copy)]
struct Rate(f64);

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct RateVisitor;
        impl Visitor<'_> for RateVisitor {
            type Value = Rate;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number per second, e.g. 20 or \"20/s\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Rate, E> {
                config::parse_rate(v).map(Rate).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Rate, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Rate, E> {
                self.visit_str(&v.to_string())
            }
        }
        d.deserialize_any(RateVisitor)
    }
}

/// One item of `backends`: a string in `--backend` syntax (which may hold
/// several, comma-separated) or a table `{ address, weight, maxconn }`.
#[derive(Clone)]
struct BackendEntry(Vec<BackendSpec>);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BackendTable {
    address: String,
    weight: Option<AtLeastOne>,
    maxconn: Option<AtLeastOne>,
    state: Option<Text<AdminState>>,
    backup: Option<bool>,
    check_addr: Option<Ip>,
    check_port: Option<Port>,
}

impl<'de> Deserialize<'de> for BackendEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct EntryVisitor;
        impl<'de> Visitor<'de> for EntryVisitor {
            type Value = BackendEntry;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a backend \"HOST:PORT[=WEIGHT]\" or a table { address, weight, maxconn, state }",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<BackendEntry, E> {
                config::parse_backend_list(v)
                    .map(BackendEntry)
                    .map_err(E::custom)
            }
            fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<BackendEntry, M::Error> {
                let table = BackendTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                let mut spec = config::parse_backend(&table.address).map_err(de::Error::custom)?;
                if table.weight.is_some() && spec.name.starts_with(config::SRV_PREFIX) {
                    return Err(de::Error::custom(
                        "an srv: backend takes its weights from the SRV records",
                    ));
                }
                set(&mut spec.weight, table.weight.map(|w| w.0));
                spec.max_conns = table.maxconn.map(|m| m.0);
                set(&mut spec.admin_state, table.state.map(|s| s.0));
                set(&mut spec.backup, table.backup);
                spec.check_addr = table.check_addr.map(|a| a.0);
                spec.check_port = table.check_port.map(|p| p.0);
                Ok(BackendEntry(vec![spec]))
            }
        }
        d.deserialize_any(EntryVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(text: &str) -> Config {
        match parse(text, Path::new("t.toml")) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    fn parse_err(text: &str) -> FileError {
        match parse(text, Path::new("t.toml")) {
            Ok(c) => panic!("accepted: {c:?}"),
            Err(e) => e,
        }
    }

    fn backend(text: &str) -> BackendSpec {
        config::parse_backend(text).unwrap()
    }

    #[test]
    fn a_minimal_listener_gets_the_flag_defaults() {
        let c = parse_ok(
            "[[listener]]\nlisten = \"127.0.0.1:8080\"\nbackends = [\"127.0.0.1:8081\"]\n",
        );
        let expected = ServiceConfig::new(
            "127.0.0.1:8080".parse().unwrap(),
            vec![backend("127.0.0.1:8081")],
        );
        assert_eq!(c.services, vec![expected]);
        assert_eq!(c.drain_timeout, Duration::from_secs(30));
        assert_eq!(c.shutdown_delay, Duration::ZERO);
        assert!(!c.ready_requires_backends);
        assert_eq!(c.admin, None);
    }

    #[test]
    fn every_key_is_read() {
        let c = parse_ok(
            r#"
drain_timeout = "45s"
shutdown_delay = "4s"
ready_requires_backends = true
admin = "127.0.0.1:9090"

[[listener]]
listen = "[::1]:6380"
backlog = 64
backends = [
  "127.0.0.1:6379=3",
  "127.0.0.1:7001=2,maxconn=7,127.0.0.1:7002",
  { address = "127.0.0.1:6390", weight = 4, maxconn = 100 },
  { address = "localhost:6391", state = "drain", backup = true, check_addr = "127.0.0.9", check_port = 9000 },
]
strategy = "least-conn"
connect_timeout = "250ms"
retries = 5
on_failure = "close"
max_fails = 3
fail_timeout = "20s"
max_conns = 500
queue_timeout = "1s"
idle_timeout = "5m"
send_proxy = "v2"
accept_proxy = true
allow = ["10.0.0.0/8", "::1"]
deny = ["10.1.0.0/16"]
max_conns_per_ip = 20
rate_per_ip = "50/s"
per_ip_ipv6_prefix = 56
slow_start = "45s"
tcp_keepalive = { idle = "2m", count = 4, user_timeout = "30s" }
max_connection_age = "1h"
hash_balance_factor = 1.5

[listener.health]
interval = "3s"
timeout = 1
rise = 2
fall = 4
send = "PING\r\n"
expect = "+PONG"
port = 8558
"#,
        );
        assert_eq!(c.drain_timeout, Duration::from_secs(45));
        assert_eq!(c.shutdown_delay, Duration::from_secs(4));
        assert!(c.ready_requires_backends);
        assert_eq!(c.admin, Some("127.0.0.1:9090".parse().unwrap()));
        let s = &c.services[0];
        assert_eq!(s.listen, "[::1]:6380".parse().unwrap());
        assert_eq!(s.backlog, 64);
        let mut b3 = backend("127.0.0.1:6390");
        b3.weight = 4;
        b3.max_conns = Some(100);
        assert_eq!(
            s.backends,
            vec![
                BackendSpec {
                    weight: 3,
                    ..backend("127.0.0.1:6379")
                },
                BackendSpec {
                    weight: 2,
                    max_conns: Some(7),
                    ..backend("127.0.0.1:7001")
                },
                backend("127.0.0.1:7002"),
                b3,
                BackendSpec {
                    admin_state: AdminState::Drain,
                    backup: true,
                    check_addr: Some("127.0.0.9".parse().unwrap()),
                    check_port: Some(9000),
                    ..backend("localhost:6391")
                },
            ]
        );
        assert_eq!(s.slow_start, Some(Duration::from_secs(45)));
        assert_eq!(
            s.keepalive,
            Some(KeepaliveConfig {
                idle: Duration::from_secs(120),
                interval: Duration::from_secs(20),
                count: 4,
                user_timeout: Some(Duration::from_secs(30)),
            })
        );
        assert_eq!(s.max_connection_age, Some(Duration::from_secs(3600)));
        assert_eq!(s.hash_balance_factor, Some(1.5));
        assert_eq!(s.health.port, Some(8558));
        assert_eq!(s.strategy, StrategyKind::LeastConn);
        assert_eq!(s.connect_timeout, Duration::from_millis(250));
        assert_eq!(s.retries, 5);
        assert_eq!(s.on_failure, OnFailure::Close);
        assert_eq!(s.max_fails, 3);
        assert_eq!(s.fail_timeout, Duration::from_secs(20));
        assert_eq!(s.max_conns, Some(500));
        assert_eq!(s.queue_timeout, Duration::from_secs(1));
        assert_eq!(s.idle_timeout, Some(Duration::from_secs(300)));
        assert_eq!(s.send_proxy, Some(ProxyVersion::V2));
        assert!(s.accept_proxy);
        assert_eq!(
            s.access.allow,
            vec!["10.0.0.0/8".parse().unwrap(), "::1".parse().unwrap()]
        );
        assert_eq!(s.access.deny, vec!["10.1.0.0/16".parse().unwrap()]);
        assert_eq!(s.access.max_conns_per_ip, Some(20));
        assert_eq!(s.access.rate_per_ip, Some(50.0));
        assert_eq!(s.access.per_ip_ipv6_prefix, 56);
        assert_eq!(s.health.interval, Duration::from_secs(3));
        assert_eq!(s.health.timeout, Duration::from_secs(1));
        assert_eq!((s.health.rise, s.health.fall), (2, 4));
        assert_eq!(
            s.health.check,
            CheckConfig::send_expect(
                Some(b"PING\r\n".to_vec()),
                Some(b"+PONG".to_vec()),
                Match::Prefix
            )
        );
    }

    #[test]
    fn every_health_key_is_read() {
        let c = parse_ok(
            r#"
max_ejection_percent = 3

[defaults]
max_ejection_percent = 30
max_ejection_time = "1m"
health = { send = "HI", on_down = "close", agent_port = 9777 }

[[listener]]
name = "steps"
listen = "127.0.0.1:1"
backends = ["127.0.0.1:2"]
health = { steps = [{ send_hex = "0000000804d2162f" }, { expect = "^[SN]", match = "regex" }, { expect_hex = "4e", match = "contains" }], agent_send = "a\n", agent_interval = "5s" }

[[listener]]
name = "http"
listen = "127.0.0.1:3"
backends = ["127.0.0.1:4"]
health = { http = { method = "OPTIONS", path = "/primary", host = "db", expect_status = [200, "3xx"], expect_body = "ok" }, on_backup_up = "close", panic_threshold = 40 }

[[listener]]
name = "exec"
listen = "127.0.0.1:5"
backends = ["127.0.0.1:6"]
health = { exec = ["/usr/bin/pg_isready", "-h", "{host}"], on_down = "keep" }

[[listener]]
name = "short"
listen = "127.0.0.1:7"
backends = ["127.0.0.1:8"]
health = { expect = "role:master", match = "contains" }
"#
            .replace("max_ejection_percent = 3\n", "")
            .as_str(),
        );
        let [steps, http, exec, short] = &c.services[..] else {
            panic!("{c:?}");
        };
        assert_eq!(
            (steps.max_ejection_percent, steps.max_ejection_time),
            (30, Duration::from_secs(60))
        );
        assert_eq!(
            steps.health.check,
            CheckConfig::Steps(vec![
                Step::Send(vec![0, 0, 0, 8, 4, 0xd2, 0x16, 0x2f]),
                Step::Expect(Expect {
                    pattern: b"^[SN]".to_vec(),
                    how: Match::Regex
                }),
                Step::Expect(Expect {
                    pattern: b"N".to_vec(),
                    how: Match::Contains
                }),
            ]),
            "a listener's own check replaces the inherited send"
        );
        assert_eq!(
            steps.health.agent,
            Some(AgentConfig {
                port: 9777,
                send: Some(b"a\n".to_vec()),
                interval: Duration::from_secs(5)
            })
        );
        assert_eq!(steps.health.on_down, OnHealthChange::Close, "inherited");
        let CheckConfig::Http(check) = &http.health.check else {
            panic!("{:?}", http.health.check);
        };
        assert_eq!(
            (check.method.as_str(), check.path.as_str()),
            ("OPTIONS", "/primary")
        );
        assert_eq!(check.host.as_deref(), Some("db"));
        assert_eq!(check.expect_status.to_string(), "200,3xx");
        assert_eq!(check.expect_body.as_deref(), Some("ok"));
        assert_eq!(http.health.on_backup_up, OnHealthChange::Close);
        assert_eq!(http.health.panic_threshold, Some(40));
        let CheckConfig::Exec(run) = &exec.health.check else {
            panic!("{:?}", exec.health.check);
        };
        assert_eq!(run.argv, ["/usr/bin/pg_isready", "-h", "{host}"]);
        assert_eq!(
            exec.health.on_down,
            OnHealthChange::Keep,
            "own beats inherited"
        );
        assert_eq!(
            short.health.check,
            CheckConfig::send_expect(
                Some(b"HI".to_vec()),
                Some(b"role:master".to_vec()),
                Match::Contains
            ),
            "the short form merges key by key"
        );
        assert_eq!(exec.max_ejection_percent, 30);
    }

    #[test]
    fn bad_health_tables_say_what_is_wrong() {
        let listener = |health: &str| {
            format!(
                "[[listener]]\nlisten = \"127.0.0.1:1\"\nbackends = [\"127.0.0.1:2\"]\nhealth = {health}\n"
            )
        };
        for (health, says) in [
            (
                r#"{ send = "a", http = { path = "/" } }"#,
                "one health check per pool: send/expect and http",
            ),
            (r#"{ steps = [], }"#, "empty `steps`"),
            (
                r#"{ match = "contains" }"#,
                "`match` says how `expect` matches",
            ),
            (r#"{ agent_send = "x" }"#, "need `agent_port`"),
            (
                r#"{ steps = [{ send = "a", expect = "b" }] }"#,
                "exactly one of",
            ),
            (
                r#"{ steps = [{ expect = "(", match = "regex" }] }"#,
                "bad regular expression",
            ),
            (r#"{ http = { expect_status = [600] } }"#, "bad HTTP status"),
            (r#"{ http = { method = "get" } }"#, "bad HTTP method"),
            (r#"{ http = { path = "primary" } }"#, "bad HTTP path"),
            (r#"{ http = { expect_body = "" } }"#, "empty expect_body"),
            (r#"{ exec = [] }"#, "empty exec check"),
            (r#"{ panic_threshold = 0 }"#, "from 1 to 100"),
            (r#"{ on_down = "drop" }"#, "use keep or close"),
            (r#"{ agent_port = 0 }"#, "from 1 to 65535"),
        ] {
            let e = parse_err(&listener(health));
            assert!(e.to_string().contains(says), "{health}: {e}");
            assert!(e.position.is_some(), "{health}: {e}");
        }
        let e = parse_err(&format!("max_ejection_percent = 101\n{}", listener("{}")));
        assert!(
            e.to_string().contains("unknown field") || e.to_string().contains("from 0 to 100"),
            "{e}"
        );
    }

    #[test]
    fn listeners_inherit_defaults_key_by_key() {
        let c = parse_ok(
            r#"
[defaults]
backends = ["127.0.0.1:8081", "127.0.0.1:8082"]
retries = 7
strategy = "p2c"
rate_per_ip = 2.5
health = { interval = "4s", send = "HI" }

[[listener]]
listen = "127.0.0.1:8080"

[[listener]]
listen = "127.0.0.1:6380"
backends = ["127.0.0.1:6379"]
retries = 0
health = { interval = "1s", expect = "OK" }
"#,
        );
        let [web, redis] = &c.services[..] else {
            panic!("expected two services: {c:?}");
        };
        assert_eq!(web.backends.len(), 2);
        assert_eq!((web.retries, web.strategy), (7, StrategyKind::PowerOfTwo));
        assert_eq!(web.access.rate_per_ip, Some(2.5));
        assert_eq!(web.health.interval, Duration::from_secs(4));
        assert_eq!(
            web.health.check,
            CheckConfig::Steps(vec![Step::Send(b"HI".to_vec())])
        );
        assert_eq!(redis.backends, vec![backend("127.0.0.1:6379")]);
        assert_eq!(
            (redis.retries, redis.strategy),
            (0, StrategyKind::PowerOfTwo)
        );
        // health merges field by field: own interval, inherited send.
        assert_eq!(redis.health.interval, Duration::from_secs(1));
        assert_eq!(
            redis.health.check,
            CheckConfig::send_expect(Some(b"HI".to_vec()), Some(b"OK".to_vec()), Match::Prefix)
        );
        assert_eq!(redis.health.timeout, Duration::from_secs(2));
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line() {
        let e = parse_err(
            "[[listener]]\nlisten = \"127.0.0.1:1\"\nbackends = [\"127.0.0.1:2\"]\nretry = 3\n",
        );
        assert_eq!(e.position, Some((4, 1)), "{e}");
        assert_eq!(e.key.as_deref(), Some("listener.retry"), "{e}");
        assert!(
            e.to_string()
                .starts_with("t.toml:4:1: key `listener.retry`: unknown field")
        );

        let e = parse_err(
            "[[listener]]\nlisten = \"127.0.0.1:1\"\nbackends = [\"127.0.0.1:2\"]\n[listener.health]\nintreval = \"1s\"\n",
        );
        assert_eq!(e.position, Some((5, 1)), "{e}");
        assert_eq!(e.key.as_deref(), Some("listener.health.intreval"), "{e}");

        let e = parse_err("listners = []\n");
        assert_eq!(e.key.as_deref(), Some("listners"), "{e}");
        let e = parse_err(
            "[[listener]]\nlisten = \"127.0.0.1:1\"\nbackends = [{ address = \"127.0.0.1:2\", wieght = 2 }]\n",
        );
        assert_eq!(e.position.map(|p| p.0), Some(3), "{e}");
        assert!(e.message.contains("wieght"), "{e}");
    }

    #[test]
    fn a_wrong_type_names_the_key_and_line() {
        for (text, key, line) in [
            ("retries = \"many\"", "listener.retries", 4),
            ("accept_proxy = \"yes\"", "listener.accept_proxy", 4),
            ("backlog = 0", "listener.backlog", 4),
            ("allow = \"10.0.0.0/8\"", "listener.allow", 4),
            ("connect_timeout = true", "listener.connect_timeout", 4),
            ("idle_timeout = \"0s\"", "listener.idle_timeout", 4),
            ("strategy = \"random\"", "listener.strategy", 4),
            ("on_failure = \"maybe\"", "listener.on_failure", 4),
            ("send_proxy = \"v3\"", "listener.send_proxy", 4),
            ("deny = [\"10.0.0.0/33\"]", "listener.deny", 4),
            ("rate_per_ip = \"fast\"", "listener.rate_per_ip", 4),
            ("max_conns = -1", "listener.max_conns", 4),
            ("slow_start = \"0s\"", "listener.slow_start", 4),
            ("per_ip_ipv6_prefix = 129", "listener.per_ip_ipv6_prefix", 4),
            (
                "max_connection_age = \"soon\"",
                "listener.max_connection_age",
                4,
            ),
            (
                "hash_balance_factor = 0.5",
                "listener.hash_balance_factor",
                4,
            ),
            (
                "tcp_keepalive = { idle = \"0s\" }",
                "listener.tcp_keepalive",
                4,
            ),
            (
                "tcp_keepalive = { idle = \"1m\", count = 0 }",
                "listener.tcp_keepalive.count",
                4,
            ),
            (
                "tcp_keepalive = { interval = \"1m\" }",
                "listener.tcp_keepalive",
                4,
            ),
            (
                "tcp_keepalive = { idle = \"1m\", user_timeout = \"30d\" }",
                "listener.tcp_keepalive.user_timeout",
                4,
            ),
            (
                "\n[listener.health]\nport = 70000",
                "listener.health.port",
                6,
            ),
            ("\n[listener.health]\nfall = 0", "listener.health.fall", 6),
            (
                "\n[listener.health]\nsend = \"\\\\q\"",
                "listener.health.send",
                6,
            ),
        ] {
            let file = format!(
                "[[listener]]\nlisten = \"127.0.0.1:1\"\nbackends = [\"127.0.0.1:2\"]\n{text}\n"
            );
            let e = parse_err(&file);
            assert_eq!(e.key.as_deref(), Some(key), "{text}: {e}");
            assert_eq!(e.position.map(|p| p.0), Some(line), "{text}: {e}");
        }
        for (table, key, says) in [
            (
                "check_port = 0",
                "check_port",
                "expected a port from 1 to 65535, got 0",
            ),
            (
                "check_addr = \"x\"",
                "check_addr",
                "bad address \"x\": expected an IP",
            ),
            ("backup = \"yes\"", "backup", "invalid type"),
        ] {
            let e = parse_err(&format!(
                "[[listener]]\nlisten = \"127.0.0.1:1\"\nbackends = [{{ address = \"127.0.0.1:3\", {table} }}]\n"
            ));
            let key = format!("listener.backends.{key}");
            assert_eq!(e.key.as_deref(), Some(key.as_str()), "{table}: {e}");
            assert_eq!(e.position.map(|p| p.0), Some(3), "{table}: {e}");
            assert!(e.message.contains(says), "{table}: {e}");
        }
        let e = parse_err("drain_timeout = []\n[[listener]]\n");
        assert_eq!(e.key.as_deref(), Some("drain_timeout"), "{e}");
        assert_eq!(e.position, Some((1, 17)), "{e}");
    }

    #[test]
    fn durations_are_strings_or_numbers_through_one_parser() {
        let head = "[[listener]]\nlisten = \"127.0.0.1:1\"\nbackends = [\"127.0.0.1:2\"]\n";
        let c = parse_ok(&format!(
            "drain_timeout = \"1h 30m\"\n{head}connect_timeout = 1.5\nqueue_timeout = 0\n\
             idle_timeout = \"2d\"\n[listener.health]\ninterval = 4\ntimeout = \"1.5\"\n"
        ));
        assert_eq!(c.drain_timeout, Duration::from_secs(5400));
        let s = &c.services[0];
        assert_eq!(s.connect_timeout, Duration::from_millis(1500));
        assert_eq!(s.queue_timeout, Duration::ZERO);
        assert_eq!(s.idle_timeout, Some(Duration::from_secs(172_800)));
        assert_eq!(s.health.interval, Duration::from_secs(4));
        assert_eq!(s.health.timeout, Duration::from_millis(1500));

        for (text, says) in [
            (
                "queue_timeout = \"ten\"",
                "bad duration \"ten\": expected e.g. 10s",
            ),
            (
                "queue_timeout = \"5x\"",
                "bad duration unit \"x\" in \"5x\"",
            ),
            ("queue_timeout = -5", "duration -5 is negative"),
            (
                "queue_timeout = 99999999999",
                "\"99999999999\" is out of range",
            ),
            ("queue_timeout = 1e12", "is out of range"),
            ("connect_timeout = 0", "longer than zero"),
        ] {
            let e = parse_err(&format!("{head}{text}\n"));
            assert_eq!(e.position.map(|p| p.0), Some(4), "{text}: {e}");
            assert!(e.message.contains(says), "{text}: {e}");
        }
    }

    #[test]
    fn a_bad_address_is_named() {
        let e = parse_err(
            "[[listener]]\nlisten = \"127.0.0.1:1\"\nbackends = [\n  \"127.0.0.1:2\",\n  \"10.0.0.1\",\n]\n",
        );
        assert_eq!(e.position, Some((5, 3)), "{e}");
        assert_eq!(e.key.as_deref(), Some("listener.backends"));
        assert!(e.message.contains("\"10.0.0.1\""), "{e}");

        let e = parse_err("[[listener]]\nlisten = \"1.2.3.4\"\nbackends = [\"127.0.0.1:2\"]\n");
        assert_eq!(e.position, Some((2, 10)), "{e}");
        assert_eq!(e.key.as_deref(), Some("listener.listen"));

        let e = parse_err(
            "[[listener]]\nlisten = \"127.0.0.1:1\"\nbackends = [{ address = \"no-such-host.invalid:80\" }]\n",
        );
        assert_eq!(e.position.map(|p| p.0), Some(3), "{e}");
        assert!(e.message.contains("no-such-host.invalid"), "{e}");

        let e = parse_err("admin = \"127.0.0.1\"\n[[listener]]\n");
        assert_eq!(
            (e.key.as_deref(), e.position),
            (Some("admin"), Some((1, 9))),
            "{e}"
        );
    }

    #[test]
    fn structural_mistakes_are_errors() {
        let dup = parse_err(
            "[[listener]]\nlisten = \"127.0.0.1:1\"\nbackends = [\"127.0.0.1:2\"]\n\n[[listener]]\nlisten = \"127.0.0.1:1\"\nbackends = [\"127.0.0.1:3\"]\n",
        );
        assert_eq!(dup.position, Some((6, 10)), "{dup}");
        assert!(
            dup.message.contains("duplicate listen address 127.0.0.1:1"),
            "{dup}"
        );
        // Port 0 is a fresh ephemeral port each time, so it never clashes.
        let c = parse_ok(
            "[defaults]\nbackends = [\"127.0.0.1:2\"]\n[[listener]]\nlisten = \"127.0.0.1:0\"\n[[listener]]\nlisten = \"127.0.0.1:0\"\n",
        );
        assert_eq!(c.services.len(), 2);

        let e = parse_err("[[listener]]\nbackends = [\"127.0.0.1:2\"]\n");
        assert!(e.message.contains("no `listen`"), "{e}");
        let e = parse_err("[[listener]]\nlisten = \"127.0.0.1:1\"\n");
        assert!(e.message.contains("no backends"), "{e}");
        let e = parse_err("[[listener]]\nlisten = \"127.0.0.1:1\"\nbackends = []\n");
        assert!(e.message.contains("no backends"), "{e}");
        let e = parse_err("drain_timeout = \"1s\"\n");
        assert!(e.message.contains("no [[listener]]"), "{e}");
        let e = parse_err("[defaults]\nlisten = \"127.0.0.1:1\"\n[[listener]]\n");
        assert_eq!(e.key.as_deref(), Some("defaults.listen"), "{e}");
        let e = parse_err("[[listener]\n");
        assert_eq!(e.position.map(|p| p.0), Some(1), "{e}");
    }

    #[test]
    fn every_problem_is_listed_with_its_line() {
        let text = "\
drain_timeout = \"soon\"
[defaults]
retries = -1
[[listener]]
listen = \"127.0.0.1:1\"
backends = [\"127.0.0.1:2\"]
health = { interval = \"0s\", rise = 2 }
colour = \"blue\"
[[listener]]
listen = \"127.0.0.1:1\"
name = \"bad/name\"
backends = [\"127.0.0.1:3\", { weight = 2 }]
[[listener]]
listen = \"nowhere\"
backends = [\"127.0.0.1:4\"]
[[listener]]
backends = [\"127.0.0.1:5\"]
";
        let errors = parse_all(text, Path::new("t.toml"), &[])
            .unwrap_err()
            .errors;
        let found: Vec<(usize, Option<&str>)> = errors
            .iter()
            .map(|e| (e.position.unwrap().0, e.key.as_deref()))
            .collect();
        assert_eq!(
            found,
            [
                (1, Some("drain_timeout")),
                (3, Some("defaults.retries")),
                (7, Some("listener.health.interval")),
                (8, Some("listener.colour")),
                (10, Some("listener.listen")),
                (11, Some("listener.name")),
                (12, Some("listener.backends")),
                (14, Some("listener.listen")),
                (16, Some("listener.listen")),
            ],
            "{}",
            errors
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        );
        assert!(errors[4].message.contains("duplicate listen address"));
        assert!(errors[6].message.contains("address"), "{}", errors[6]);
        // The first problem is what `parse` reports.
        assert_eq!(parse_err(text), errors[0]);
        // A syntax error stops the reading: it is the one problem.
        let unusable = parse_all("a = [\nretries = x\n", Path::new("t.toml"), &[]).unwrap_err();
        assert_eq!(unusable.errors.len(), 1, "{unusable:?}");
        assert!(unusable.readable.is_none(), "{unusable:?}");
    }

    #[test]
    fn listener_names_are_read_checked_and_unique() {
        let c = parse_ok(
            "admin_token_file = \"/etc/tcplb/token\"\nadmin_socket = \"/run/tcplb.sock\"\n\
             state_file = \"/var/lib/tcplb/state.json\"\npid_file = \"/run/tcplb/tcplb.pid\"\n\
             [defaults]\nbackends = [\"127.0.0.1:2\"]\n\
             [[listener]]\nlisten = \"127.0.0.1:1\"\nname = \"web\"\n\
             [[listener]]\nlisten = \"127.0.0.1:3\"\n",
        );
        assert_eq!(c.services[0].name.as_deref(), Some("web"));
        assert_eq!(c.services[1].name, None, "the default: its address");
        assert_eq!(
            c.admin_token_file.as_deref(),
            Some(Path::new("/etc/tcplb/token"))
        );
        assert_eq!(
            c.admin_socket.as_deref(),
            Some(Path::new("/run/tcplb.sock"))
        );
        assert_eq!(
            c.state_file.as_deref(),
            Some(Path::new("/var/lib/tcplb/state.json"))
        );
        assert_eq!(
            c.pid_file.as_deref(),
            Some(Path::new("/run/tcplb/tcplb.pid"))
        );

        let head = "[defaults]\nbackends = [\"127.0.0.1:2\"]\n";
        for (tables, key, line, says) in [
            (
                "[[listener]]\nlisten = \"127.0.0.1:1\"\nname = \"web\"\n\
                 [[listener]]\nlisten = \"127.0.0.1:3\"\nname = \"web\"\n",
                "listener.name",
                8,
                "duplicate listener name \"web\"",
            ),
            (
                "[[listener]]\nlisten = \"127.0.0.1:1\"\nname = \"a/b\"\n",
                "listener.name",
                5,
                "no `/`",
            ),
            (
                "[[listener]]\nlisten = \"127.0.0.1:1\"\nname = \"\"\n",
                "listener.name",
                5,
                "expected 1 to 128 characters",
            ),
            (
                "[[listener]]\nlisten = \"127.0.0.1:1\"\nname = \"127.0.0.1:3\"\n\
                 [[listener]]\nlisten = \"127.0.0.1:3\"\n",
                "listener.listen",
                7,
                "another listener is named \"127.0.0.1:3\"",
            ),
        ] {
            let e = parse_err(&format!("{head}{tables}"));
            assert_eq!(e.key.as_deref(), Some(key), "{e}");
            assert_eq!(e.position.map(|p| p.0), Some(line), "{e}");
            assert!(e.message.contains(says), "{e}");
        }
        let e = parse_err("[defaults]\nname = \"web\"\n[[listener]]\n");
        assert_eq!(e.key.as_deref(), Some("defaults.name"), "{e}");
        assert_eq!(e.position.map(|p| p.0), Some(2), "{e}");
    }

    #[test]
    fn a_missing_file_is_an_error_naming_it() {
        let e = load(Path::new("/nonexistent/tcplb.toml")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/nonexistent/tcplb.toml: cannot read"),
            "{e}"
        );
    }

    #[test]
    fn dns_keys_are_read_inherited_and_checked() {
        let c = parse_ok(
            r#"
resolver = "127.0.0.1:5353"
[defaults]
resolve_interval = "20s"
[[listener]]
listen = "127.0.0.1:8080"
backends = ["srv:_web._tcp.example", { address = "srv:_db._tcp.example", maxconn = 9 }]
resolve_ttl_min = 3
"#,
        );
        assert_eq!(c.resolver, Some("127.0.0.1:5353".parse().unwrap()));
        let s = &c.services[0];
        assert_eq!(s.resolve.interval, Duration::from_secs(20));
        assert_eq!(s.resolve.ttl_min, Duration::from_secs(3));
        assert_eq!(s.backends[1].name, "srv:_db._tcp.example");
        assert_eq!(s.backends[1].max_conns, Some(9));

        let head = "[[listener]]\nlisten = \"127.0.0.1:1\"\n";
        for (text, key, says) in [
            (
                "backends = [{ address = \"srv:_db._tcp.example\", weight = 2 }]",
                "listener.backends",
                "weights from the SRV records",
            ),
            (
                "backends = [\"srv:_db._tcp.example=2\"]",
                "listener.backends",
                "weights from the SRV records",
            ),
            (
                "backends = [\"127.0.0.1:2\"]\nresolve_interval = \"0s\"",
                "listener.resolve_interval",
                "longer than zero",
            ),
        ] {
            let e = parse_err(&format!("{head}{text}\n"));
            assert_eq!(e.key.as_deref(), Some(key), "{text}: {e}");
            assert!(e.message.contains(says), "{text}: {e}");
        }
        let e = parse_err(&format!("resolver = \"dns.example\"\n{head}"));
        assert_eq!(e.key.as_deref(), Some("resolver"), "{e}");
        let e = parse_err(&format!("access_log_format = \"xml\"\n{head}"));
        assert_eq!(e.key.as_deref(), Some("access_log_format"), "{e}");
        assert!(e.message.contains("text or json"), "{e}");
        let e = parse_err(&format!("access_log = \"\"\n{head}"));
        assert_eq!(e.key.as_deref(), Some("access_log"), "{e}");
    }

    #[test]
    fn the_example_file_parses_and_sets_every_key() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tcplb.example.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let c = parse_ok(&text);
        assert!(c.services.len() >= 2, "{c:?}");
        assert!(c.services.iter().any(|s| s.routes.len() >= 2), "{c:?}");
        // Every key of a listener and of [health] appears in the example.
        for key in [
            "drain_timeout",
            "shutdown_delay",
            "upgrade_move_connections",
            "ready_requires_backends",
            "admin",
            "[defaults]",
            "[[listener]]",
            "listen",
            "backlog",
            "backends",
            "address",
            "weight",
            "maxconn",
            "strategy",
            "connect_timeout",
            "retries",
            "on_failure",
            "interval",
            "timeout",
            "rise",
            "fall",
            "send",
            "expect",
            "max_fails",
            "fail_timeout",
            "max_conns",
            "queue_timeout",
            "idle_timeout",
            "send_proxy",
            "accept_proxy",
            "allow",
            "deny",
            "max_conns_per_ip",
            "rate_per_ip",
            "state",
            "backup",
            "check_addr",
            "check_port",
            "port",
            "slow_start",
            "tcp_keepalive",
            "user_timeout",
            "max_connection_age",
            "hash_balance_factor",
            "per_ip_ipv6_prefix",
            "name",
            "admin_token_file",
            "admin_socket",
            "state_file",
            "resolver",
            "resolve_interval",
            "resolve_ttl_min",
            "srv:",
            "tls_inspect_timeout",
            "[[listener.route]]",
            "server_names",
            "alpn",
            "access_log",
            "access_log_format",
            "max_ejection_percent",
            "max_ejection_time",
            "match",
            "steps",
            "send_hex",
            "expect_hex",
            "http",
            "method",
            "path",
            "host",
            "expect_status",
            "expect_body",
            "exec",
            "agent_port",
            "agent_send",
            "agent_interval",
            "on_down",
            "on_backup_up",
            "panic_threshold",
            "pid_file",
        ] {
            assert!(text.contains(key), "the example does not show {key}");
        }
    }

    const ROUTED: &str = r#"
[defaults]
connect_timeout = "2s"

[[listener]]
name = "tls"
listen = "127.0.0.1:8443"
tls_inspect_timeout = "3s"
retries = 1
backends = ["127.0.0.1:9000"]

[[listener.route]]
name = "a"
server_names = ["A.test.", "*.b.test"]
backends = ["127.0.0.1:9001"]

[[listener.route]]
name = "acme"
alpn = ["acme-tls/1"]
backends = ["127.0.0.1:9002"]
retries = 0
send_proxy = "v2"
"#;

    #[test]
    fn routes_are_read_and_inherit_the_listener_key_by_key() {
        let c = parse_ok(ROUTED);
        let s = &c.services[0];
        assert_eq!(s.tls_inspect_timeout, Duration::from_secs(3));
        assert_eq!(s.backends, vec![backend("127.0.0.1:9000")]);
        let [a, acme] = &s.routes[..] else {
            panic!("{:?}", s.routes)
        };
        assert_eq!(a.name, "a");
        assert_eq!(
            a.server_names,
            vec![
                ServerName::Exact("a.test".into()),
                ServerName::Wildcard(".b.test".into())
            ]
        );
        assert!(a.alpn.is_empty());
        assert_eq!(a.pool.backends, vec![backend("127.0.0.1:9001")]);
        // From the listener, which took it from [defaults].
        assert_eq!(a.pool.retries, 1);
        assert_eq!(a.pool.connect_timeout, Duration::from_secs(2));
        assert_eq!(a.pool.send_proxy, None);
        assert!(a.pool.routes.is_empty());
        assert_eq!(acme.alpn, vec!["acme-tls/1".to_string()]);
        assert!(acme.server_names.is_empty());
        assert_eq!(acme.pool.retries, 0);
        assert_eq!(acme.pool.send_proxy, Some(ProxyVersion::V2));
        // Without routes the default stands.
        let plain =
            parse_ok("[[listener]]\nlisten = \"127.0.0.1:1\"\nbackends = [\"127.0.0.1:2\"]\n");
        assert_eq!(
            plain.services[0].tls_inspect_timeout,
            Duration::from_secs(5)
        );
    }

    #[test]
    fn a_listener_with_routes_may_have_no_default() {
        let text = ROUTED.replace("backends = [\"127.0.0.1:9000\"]\n", "");
        let c = parse_ok(&text);
        assert!(c.services[0].backends.is_empty());
        assert_eq!(c.services[0].routes.len(), 2);
        // An explicitly empty list is still a mistake.
        let text = ROUTED.replace("backends = [\"127.0.0.1:9000\"]", "backends = []");
        let e = parse_err(&text);
        assert_eq!(e.key.as_deref(), Some("listener.backends"), "{e}");
    }

    #[test]
    fn route_mistakes_are_named_with_their_line() {
        let cases: &[(&str, &str, &str, &str)] = &[
            // (replace, with, key, message fragment)
            ("name = \"acme\"\n", "", "listener.route.name", "no `name`"),
            (
                "name = \"acme\"",
                "name = \"tls\"",
                "listener.route.name",
                "duplicate pool name",
            ),
            (
                "name = \"acme\"",
                "name = \"a\"",
                "listener.route.name",
                "duplicate pool name",
            ),
            (
                "name = \"acme\"",
                "name = \"x/y\"",
                "listener.route.name",
                "no `/`",
            ),
            (
                "backends = [\"127.0.0.1:9002\"]\n",
                "",
                "listener.route.backends",
                "no `backends`",
            ),
            (
                "alpn = [\"acme-tls/1\"]\n",
                "",
                "listener.route.server_names",
                "matches nothing",
            ),
            (
                "alpn = [\"acme-tls/1\"]",
                "alpn = [\"\"]",
                "listener.route.alpn",
                "bad ALPN",
            ),
            (
                "\"*.b.test\"",
                "\"a.*.test\"",
                "listener.route.server_names",
                "whole first label",
            ),
            (
                "\"*.b.test\"",
                "\"*\"",
                "listener.route.server_names",
                "bad server name",
            ),
            (
                "\"*.b.test\"",
                "\"a..test\"",
                "listener.route.server_names",
                "empty label",
            ),
            (
                "\"*.b.test\"",
                "\"é.test\"",
                "listener.route.server_names",
                "printable ASCII",
            ),
            (
                "retries = 0\n",
                "allow = [\"10.0.0.0/8\"]\n",
                "listener.route",
                "`allow` is a listener-wide",
            ),
            (
                "retries = 0\n",
                "tls_inspect_timeout = \"1s\"\n",
                "listener.route",
                "listener-wide",
            ),
            (
                "retries = 0\n",
                "retry = 0\n",
                "listener.route.retry",
                "unknown field",
            ),
            (
                "alpn = [\"acme-tls/1\"]",
                "server_names = [\"a.test\"]",
                "listener.route.server_names",
                "already taken by route \"a\"",
            ),
            (
                "retries = 1\n",
                "retries = 1\nalpn = [\"h2\"]\n",
                "listener.route.alpn",
                "belong in a [[listener.route]]",
            ),
            (
                "connect_timeout = \"2s\"\n",
                "server_names = [\"x.test\"]\n",
                "defaults",
                "belong to a [[listener]]",
            ),
        ];
        for (from, to, key, fragment) in cases {
            assert!(ROUTED.contains(from), "{from}");
            let e = parse_err(&ROUTED.replacen(from, to, 1));
            assert_eq!(e.key.as_deref(), Some(*key), "{from} -> {to}: {e}");
            assert!(e.message.contains(fragment), "{from} -> {to}: {e}");
            assert!(e.position.is_some_and(|(line, _)| line > 1), "{e}");
        }
        // The same name with different ALPN is no overlap.
        let text = ROUTED.replace(
            "alpn = [\"acme-tls/1\"]",
            "server_names = [\"a.test\"]\nalpn = [\"h2\"]",
        );
        assert_eq!(parse_ok(&text).services[0].routes.len(), 2);
        // Every problem of a route is listed, its pool's included.
        let text = ROUTED
            .replacen("name = \"acme\"\n", "allow = [\"10.0.0.0/8\"]\n", 1)
            .replacen("alpn = [\"acme-tls/1\"]", "alpn = [\"\"]", 1)
            .replacen("retries = 0\n", "tcp_keepalive = { idle = \"0s\" }\n", 1);
        let errors = parse_all(&text, Path::new("t.toml"), &[])
            .unwrap_err()
            .errors;
        let keys: Vec<_> = errors.iter().map(|e| e.key.as_deref().unwrap()).collect();
        assert_eq!(
            keys,
            [
                "listener.route",
                "listener.route.name",
                "listener.route.alpn",
                "listener.tcp_keepalive"
            ],
            "{errors:?}"
        );
    }

    #[test]
    fn what_could_be_read_around_problems_is_kept() {
        let text = "\
admin_token_file = \"/t\"
state_file = 5
[[listener]]
listen = \"127.0.0.1:1\"
[[listener]]
listen = \"127.0.0.1:2\"
backends = [\"127.0.0.1:3\"]
retries = -1
";
        let unusable = parse_all(text, Path::new("t.toml"), &[]).unwrap_err();
        let found: Vec<_> = unusable.errors.iter().map(|e| e.key.as_deref()).collect();
        assert_eq!(
            found,
            [
                Some("state_file"),
                Some("listener.backends"),
                Some("listener.retries")
            ],
            "{unusable:?}"
        );
        let read = unusable.readable.expect("readable");
        assert_eq!(
            read.config.admin_token_file.as_deref(),
            Some(Path::new("/t"))
        );
        assert_eq!(read.config.state_file, None);
        // The second listener is built, its bad value left at the default.
        assert_eq!(read.listeners, 2);
        assert_eq!(read.positions, [1]);
        assert_eq!(read.config.services.len(), 1);
        assert_eq!(read.config.services[0].listen.port(), 2);
        assert_eq!(
            read.config.services[0].retries,
            ServiceConfig::new("127.0.0.1:2".parse().unwrap(), Vec::new()).retries
        );
    }
}
