//! The configuration reference cannot drift from the code.
//!
//! `docs/configuration.md` has one entry per setting, each in the same
//! shape (see its "How to read an entry"):
//!
//! ```text
//! ### `connect_timeout`
//!
//! - Flag: `--connect-timeout DUR`
//! - Key: `connect_timeout = DUR`
//! - Example: `connect_timeout = "250ms"`
//! - Default: `3s`
//! - Where: command line, `[defaults]`, `[[listener]]`, `[[listener.route]]`
//! - Reload: yes
//! ```
//!
//! Flags are derived from clap's definition (`Cli::command()`, which
//! `tcplb check` parses too); keys from the file parser's own model, by
//! asking it: a file with an unknown key `__probe` in a table makes serde
//! (`deny_unknown_fields`) list every key that table takes, and probing each
//! of those with a table or an array of tables finds the nested ones. So a
//! flag or key added to the code without an entry fails here, and so does
//! an entry for a flag or key that does not exist. Each entry is then
//! checked against the code:
//!
//! - a flag's syntax starts with its name and clap's value name, and its
//!   default is clap's default value (or the `[default: ...]` its help
//!   states), and every value clap lists for it is named;
//! - a key's example is read by the real file parser in every place the
//!   entry's Where names, rejected in every place it does not, and changes
//!   the configuration (a key that is read and ignored fails);
//! - a key's default, where it is a value (in backticks), is the default:
//!   the example with the key set to it reads the same `Config` as the
//!   example without the key; a key marked `(required)` is: the example
//!   without it is rejected;
//! - an entry's Needs row (`protocol = "udp"`) goes in the listener of
//!   every file built for it: what the key needs its listener to be;
//! - Reload: a running balancer given the example by a reload
//!   (`ReloadHandle::apply`, what SIGHUP calls) says "NOT applied" exactly
//!   for the entries whose Reload says no. The TLS files the examples name
//!   (`site.pem`, `ca.pem`, ...) are made for it (a test PKI) and the
//!   examples point at them, since a reload reads them.
//!
//! `docs/control.md` must show every `tcplb ctl` command's synopsis as the
//! man page sets it, and its global options with their defaults.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use clap::CommandFactory;
use tcplb::config::Config;
use tcplb::config::cli::Cli;
use tcplb::config::file;
use tcplb::runtime::Balancer;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const REFERENCE: &str = "docs/configuration.md";

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

// ---------------------------------------------------------------------------
// The reference, read

/// One `### ` entry of the reference.
#[derive(Debug)]
struct Entry {
    /// The heading's code span: a key's id (`health.interval`,
    /// `backends[].weight`) or, for a flag with no key, the flag.
    id: String,
    /// `- Label: value` rows, by label.
    rows: BTreeMap<String, String>,
    /// The whole entry, heading to the next one.
    text: String,
}

impl Entry {
    fn row(&self, label: &str) -> Option<&str> {
        self.rows.get(label).map(String::as_str)
    }

    /// What the listener needs to be for the key to be read there (the
    /// Needs row's first code span, e.g. `protocol = "udp"`); empty
    /// without.
    fn needs(&self) -> &str {
        self.row("Needs")
            .and_then(|r| code_spans(r).first().copied())
            .unwrap_or_default()
    }

    /// The example's TOML: the Example row's first code span.
    fn example(&self) -> Option<&str> {
        self.row("Example")
            .and_then(|r| code_spans(r).first().copied())
    }
}

/// The code spans of a line of markdown, in order.
fn code_spans(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

fn entries(reference: &str) -> Vec<Entry> {
    let mut entries: Vec<Entry> = Vec::new();
    let mut fenced = false;
    for line in reference.lines() {
        if line.starts_with("```") {
            fenced = !fenced;
        }
        if fenced || line.starts_with("```") {
            continue;
        }
        // An entry's heading is its name in backticks; other `###`
        // headings are prose.
        if let Some(heading) = line.strip_prefix("### ").filter(|h| h.starts_with('`')) {
            let id = code_spans(heading).first().copied().unwrap_or(heading);
            entries.push(Entry {
                id: id.to_string(),
                rows: BTreeMap::new(),
                text: String::new(),
            });
            continue;
        }
        if line.starts_with("### ") || line.starts_with("## ") || line.starts_with("# ") {
            // A new section ends the entry before it.
            entries.push(Entry {
                id: String::new(),
                rows: BTreeMap::new(),
                text: String::new(),
            });
            continue;
        }
        let Some(entry) = entries.last_mut() else {
            continue;
        };
        entry.text.push_str(line);
        entry.text.push('\n');
        if let Some((label, value)) = line.strip_prefix("- ").and_then(|l| l.split_once(": ")) {
            let label = label.to_string();
            if [
                "Flag", "Key", "Example", "Needs", "Default", "Where", "Reload",
            ]
            .contains(&label.as_str())
            {
                entry.rows.entry(label).or_insert_with(|| value.to_string());
            }
        }
    }
    entries.retain(|e| !e.id.is_empty());
    entries
}

/// What an entry's Where names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Place {
    Top,
    Defaults,
    Listener,
    Route,
}

impl Place {
    const ALL: [Place; 4] = [Place::Top, Place::Defaults, Place::Listener, Place::Route];

    fn written(self) -> &'static str {
        match self {
            Place::Top => "top level",
            Place::Defaults => "`[defaults]`",
            Place::Listener => "`[[listener]]`",
            Place::Route => "`[[listener.route]]`",
        }
    }
}

fn places(row: &str) -> BTreeSet<Place> {
    Place::ALL
        .into_iter()
        .filter(|p| row.contains(p.written()))
        .collect()
}

/// A `Default:` row: a value (its first code span, when the row starts
/// with one) or prose (absent keys: "off", "none", "unlimited", ...).
fn default_value(row: &str) -> Option<&str> {
    row.starts_with('`')
        .then(|| code_spans(row).first().copied())
        .flatten()
}

// ---------------------------------------------------------------------------
// The code, asked

/// Every flag of `tcplb` (and `tcplb check`, which parses the same).
struct Flag {
    long: String,
    short: Option<char>,
    value_name: Option<String>,
    default: Option<String>,
    /// What `[default: ...]` in its help says, for a flag clap gives no
    /// default value.
    stated_default: Option<String>,
    possible_values: Vec<String>,
}

fn flags() -> Vec<Flag> {
    let mut command = Cli::command();
    command.build();
    command
        .get_arguments()
        .filter(|a| !matches!(a.get_id().as_str(), "help" | "version"))
        .map(|a| {
            let help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
            let stated_default = help
                .split_once("[default: ")
                .and_then(|(_, rest)| rest.split_once(']'))
                .map(|(d, _)| d.split_whitespace().collect::<Vec<_>>().join(" "));
            let defaults: Vec<String> = a
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            Flag {
                long: a
                    .get_long()
                    .expect("every flag has a long name")
                    .to_string(),
                short: a.get_short(),
                value_name: a
                    .get_action()
                    .takes_values()
                    .then(|| {
                        a.get_value_names()
                            .and_then(|n| n.first())
                            .map(|n| n.to_string())
                    })
                    .flatten(),
                default: (!defaults.is_empty()).then(|| defaults.join(",")),
                stated_default,
                possible_values: a
                    .get_possible_values()
                    .iter()
                    .map(|v| v.get_name().to_string())
                    .collect(),
            }
        })
        .collect()
}

/// A step into the file: a table under a key, or the first table of an
/// array of tables under a key.
#[derive(Clone, Debug)]
enum Step {
    Table(String),
    Array(String),
}

/// `inner` (`k = v` pairs) inside `path`, as one line of inline TOML.
fn wrap(path: &[Step], inner: &str) -> String {
    match path.split_first() {
        None => inner.to_string(),
        Some((Step::Table(key), rest)) => format!("{key} = {{ {} }}", wrap(rest, inner)),
        Some((Step::Array(key), rest)) => format!("{key} = [{{ {} }}]", wrap(rest, inner)),
    }
}

/// The keys the table at `path` takes, from serde's "unknown field"
/// message; `None` when `path` is not a table.
fn keys_of(path: &[Step]) -> Option<Vec<String>> {
    let text = format!("{}\n", wrap(path, "__probe = 1"));
    let Err(unusable) = file::parse_all(&text, Path::new("probe.toml"), &[]) else {
        return None;
    };
    let message = unusable
        .errors
        .iter()
        .map(|e| e.message.as_str())
        .find(|m| m.starts_with("unknown field `__probe`"))?;
    let list = message.split_once(", expected ").map_or("", |(_, l)| l);
    let list = list.strip_prefix("one of ").unwrap_or(list);
    Some(
        list.split(", ")
            .map(|k| k.trim_matches('`').to_string())
            .filter(|k| !k.is_empty() && !k.contains(' '))
            .collect(),
    )
}

/// Every key of the file, by id: the path below the table it sits in (the
/// top level, `[defaults]`, a `[[listener]]` or a `[[listener.route]]`),
/// `.` between tables and `[]` after an array of tables. Values: whether
/// the key is itself a table (or array of tables).
fn file_keys() -> BTreeMap<String, bool> {
    let contexts: [&[Step]; 4] = [
        &[],
        &[Step::Table("defaults".into())],
        &[Step::Array("listener".into())],
        &[Step::Array("listener".into()), Step::Array("route".into())],
    ];
    let mut found = BTreeMap::new();
    for context in contexts {
        let keys = keys_of(context).unwrap_or_else(|| panic!("{context:?} is no table"));
        walk(context, "", keys, &mut found);
    }
    found
}

fn walk(path: &[Step], prefix: &str, keys: Vec<String>, found: &mut BTreeMap<String, bool>) {
    for key in keys {
        let id = format!("{prefix}{key}");
        let mut table = path.to_vec();
        table.push(Step::Table(key.clone()));
        let mut array = path.to_vec();
        array.push(Step::Array(key.clone()));
        // The context tables themselves are walked as contexts.
        let context = matches!(id.as_str(), "defaults" | "listener" | "route");
        let inner = match (keys_of(&table), keys_of(&array)) {
            _ if context => None,
            (Some(keys), _) => Some((table, format!("{id}."), keys)),
            (None, Some(keys)) => Some((array, format!("{id}[]."), keys)),
            (None, None) => None,
        };
        found.insert(id, inner.is_some() || context);
        if let Some((path, prefix, keys)) = inner {
            walk(&path, &prefix, keys, found);
        }
    }
}

// ---------------------------------------------------------------------------
// Files built around an example

/// A valid file with a listener (and a route when `route`, or when
/// `place` is a route), `snippet` (one line of TOML `k = v` pairs) put in
/// `place`; the base's own keys that the snippet sets are left out there.
/// `needs` (an entry's Needs, or empty) goes in the listener whatever the
/// place: what a key needs its listener to be (`protocol = "udp"`).
fn file_with(place: Place, snippet: &str, route: bool, needs: &str) -> String {
    file_replacing(place, snippet, snippet, route, needs)
}

/// [`file_with`], leaving out of `place` the base's keys that `example`
/// sets (`snippet` may be the example less a key).
fn file_replacing(place: Place, example: &str, snippet: &str, route: bool, needs: &str) -> String {
    let set: BTreeSet<String> = example
        .parse::<toml::Table>()
        .map(|t| t.keys().cloned().collect())
        .unwrap_or_default();
    let base = |place_here: Place, pairs: &[(&str, &str)]| -> String {
        let mut lines: Vec<String> = pairs
            .iter()
            .filter(|(k, _)| place_here != place || !set.contains(*k))
            .map(|(k, v)| format!("{k} = {v}"))
            .collect();
        if place_here == place && !snippet.is_empty() {
            lines.push(snippet.to_string());
        }
        lines.join("\n")
    };
    let mut listener = base(
        Place::Listener,
        &[
            ("listen", "\"127.0.0.1:0\""),
            ("backends", "[\"127.0.0.1:1\"]"),
        ],
    );
    if !needs.is_empty() {
        listener.push('\n');
        listener.push_str(needs);
    }
    let mut text = format!(
        "{}\n[defaults]\n{}\n[[listener]]\n{}\n",
        base(Place::Top, &[]),
        base(Place::Defaults, &[]),
        listener,
    );
    if route || place == Place::Route {
        let pairs = [
            ("name", "\"r\""),
            ("server_names", "[\"r.test\"]"),
            ("backends", "[\"127.0.0.1:2\"]"),
        ];
        text.push_str(&format!(
            "[[listener.route]]\n{}\n",
            base(Place::Route, &pairs)
        ));
    }
    text
}

fn parse(text: &str) -> Result<Config, String> {
    file::parse_all(text, Path::new("reference.toml"), &[]).map_err(|unusable| {
        let errors: Vec<String> = unusable.errors.iter().map(ToString::to_string).collect();
        errors.join("; ")
    })
}

/// A TOML value as one line of inline TOML.
fn inline(value: &toml::Value) -> String {
    match value {
        toml::Value::Table(table) => {
            let pairs: Vec<String> = table
                .iter()
                .map(|(k, v)| format!("{k} = {}", inline(v)))
                .collect();
            format!("{{ {} }}", pairs.join(", "))
        }
        toml::Value::Array(items) => {
            let items: Vec<String> = items.iter().map(inline).collect();
            format!("[{}]", items.join(", "))
        }
        scalar => scalar.to_string(),
    }
}

fn inline_pairs(table: &toml::Table) -> String {
    let pairs: Vec<String> = table
        .iter()
        .map(|(k, v)| format!("{k} = {}", inline(v)))
        .collect();
    pairs.join(", ")
}

/// The table that holds the key `id` (`a.b`, `a[].b`) inside `table`, and
/// the key's own name.
fn holder<'t>(table: &'t mut toml::Table, id: &str) -> Option<(&'t mut toml::Table, String)> {
    let mut parts: Vec<&str> = id.split('.').collect();
    let last = parts.pop()?.to_string();
    let mut here = table;
    for part in parts {
        here = match part.strip_suffix("[]") {
            Some(array) => here
                .get_mut(array)?
                .as_array_mut()?
                .first_mut()?
                .as_table_mut()?,
            None => here.get_mut(part)?.as_table_mut()?,
        };
    }
    Some((here, last))
}

/// The example with the key `id` set to `value` (or left out, `None`).
fn with_key(example: &str, id: &str, value: Option<toml::Value>) -> Option<String> {
    let mut table: toml::Table = example.parse().ok()?;
    let (holder, key) = holder(&mut table, id)?;
    match value {
        Some(value) => holder.insert(key, value),
        None => holder.remove(&key),
    };
    Some(inline_pairs(&table))
}

/// A documented default as a TOML value: as written if that is TOML
/// (`1024`, `false`), else as a string (`3s`, `round-robin`).
fn toml_value(text: &str) -> toml::Value {
    format!("v = {text}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(text.to_string()))
}

/// Where an example goes to be read as intended: a listener if it may,
/// else a route, else [defaults], else the top level.
fn home(places: &BTreeSet<Place>) -> Option<Place> {
    [Place::Listener, Place::Route, Place::Defaults, Place::Top]
        .into_iter()
        .find(|p| places.contains(p))
}

/// The files the TLS examples name, made in a directory of the test's
/// own: certificates and keys of a test CA, the CA, a CRL, ticket keys.
/// Kept alive (the directory goes with it) while the examples are used.
struct TlsFiles {
    ca: common::pki::Ca,
}

impl TlsFiles {
    /// The names, each as the examples write it (`"site.pem"`).
    const NAMES: [&str; 13] = [
        "site.pem",
        "site.key",
        "a.pem",
        "a.key",
        "b.pem",
        "b.key",
        "lb.pem",
        "lb.key",
        "ca.pem",
        "clients-ca.pem",
        "internal-ca.pem",
        "clients.crl.pem",
        "tickets.keys",
    ];

    fn new() -> TlsFiles {
        use common::pki::{Ca, Key};
        let mut ca = Ca::new("reference-tls");
        for name in ["site", "a", "b", "lb"] {
            ca.server(name, &["localhost"], Key::Ecdsa);
        }
        for name in ["ca.pem", "clients-ca.pem", "internal-ca.pem"] {
            std::fs::copy(&ca.cert, ca.dir.path(name)).expect("copy the CA");
        }
        ca.crl("clients", &[]);
        std::fs::write(
            ca.dir.path("tickets.keys"),
            format!("{}\n", "ab".repeat(48)),
        )
        .expect("write ticket keys");
        TlsFiles { ca }
    }

    /// `example` with every file it names made absolute, in here.
    fn point(&self, example: &str) -> String {
        let mut text = example.to_string();
        for name in Self::NAMES {
            let path = self.ca.dir.arg(name);
            text = text.replace(&format!("\"{name}\""), &format!("\"{path}\""));
        }
        text
    }
}

// ---------------------------------------------------------------------------
// The checks

/// How a missing entry should look, for the failure message.
fn template(id: &str, flag: Option<&Flag>, is_key: bool) -> String {
    let mut rows = Vec::new();
    if let Some(flag) = flag {
        let short = flag.short.map(|s| format!("-{s}, ")).unwrap_or_default();
        let value = flag
            .value_name
            .as_ref()
            .map(|v| format!(" {v}"))
            .unwrap_or_default();
        rows.push(format!("- Flag: `{short}--{}{value}`", flag.long));
    }
    if is_key {
        rows.push(format!("- Key: `{id} = ...`"));
        rows.push(format!(
            "- Example: `{id} = ...` (a value that is not the default)"
        ));
    }
    let default = flag
        .and_then(|f| {
            f.default
                .clone()
                .map(|d| format!("`{d}`"))
                .or(f.stated_default.clone())
        })
        .unwrap_or_else(|| "... (a value in backticks, or prose such as off)".into());
    rows.push(format!("- Default: {default}"));
    let mut places = Vec::new();
    if flag.is_some() {
        places.push("command line".to_string());
    }
    if is_key {
        places.push(
            "and some of: top level, `[defaults]`, `[[listener]]`, `[[listener.route]]`".into(),
        );
    }
    rows.push(format!("- Where: {}", places.join(", ")));
    rows.push("- Reload: yes | no (what a SIGHUP reload does with it)".into());
    format!(
        "\n\n    ### `{id}`\n\n    {}\n\n    What it does.\n",
        rows.join("\n    ")
    )
}

#[test]
fn every_flag_is_in_the_reference_with_its_syntax_and_default() {
    let reference = read(REFERENCE);
    let entries = entries(&reference);
    let flags = flags();
    let keys = file_keys();
    let mut problems = Vec::new();
    for flag in &flags {
        let name = format!("--{}", flag.long);
        let owners: Vec<&Entry> = entries
            .iter()
            .filter(|e| {
                e.row("Flag")
                    .and_then(|r| code_spans(r).first().copied())
                    .is_some_and(|span| span.split([' ', ',']).any(|w| w == name))
            })
            .collect();
        let [entry] = owners.as_slice() else {
            if owners.is_empty() {
                // Named by its key when the file has one, else by the flag.
                let key = flag.long.replace('-', "_");
                let key = if keys.contains_key(&key) {
                    key
                } else {
                    name.clone()
                };
                problems.push(format!(
                    "{REFERENCE} has no entry for the flag {name}: add `- Flag: ...` to the \
                     entry of the key it sets, or a new entry:{}",
                    template(&key, Some(flag), false)
                ));
            } else {
                let ids: Vec<&str> = owners.iter().map(|e| e.id.as_str()).collect();
                problems.push(format!("{name} has more than one entry: {ids:?}; keep one"));
            }
            continue;
        };
        let id = &entry.id;
        let syntax = code_spans(entry.row("Flag").unwrap_or_default())[0];
        let short = flag.short.map(|s| format!("-{s}, ")).unwrap_or_default();
        let value = flag
            .value_name
            .as_ref()
            .map(|v| format!(" {v}"))
            .unwrap_or_default();
        let expected = format!("{short}{name}{value}");
        let rest = syntax.strip_prefix(&expected);
        let fits = match (&flag.value_name, rest) {
            (_, None) => false,
            // A switch takes nothing after its name.
            (None, Some(rest)) => rest.is_empty(),
            (Some(_), Some(_)) => true,
        };
        if !fits {
            problems.push(format!(
                "{id}: the Flag row `{syntax}` must start with `{expected}` (clap's name and value name)"
            ));
        }
        let default_row = entry.row("Default").unwrap_or_default();
        match (&flag.default, &flag.stated_default, default_value(default_row)) {
            (Some(code), _, Some(doc)) if code == doc => {}
            // A switch: clap's implicit false.
            (Some(code), _, None) if code == "false" && default_row.starts_with("off") => {}
            (Some(code), _, _) => problems.push(format!(
                "{id}: {name} defaults to `{code}` (clap's default_value): write `- Default: `{code}``, \
                 not `{default_row}`"
            )),
            (None, Some(stated), doc)
                if doc == Some(stated.as_str())
                    || default_row.starts_with(stated.as_str())
                    || code_spans(default_row).contains(&stated.as_str()) => {}
            (None, Some(stated), _) => problems.push(format!(
                "{id}: {name}'s help says [default: {stated}]: the Default row must start with \
                 `{stated}`, not `{default_row}`"
            )),
            (None, None, _) => problems.push(format!(
                "{name} has no default_value and its help states none: add `[default: ...]` to its \
                 help in src/config/cli.rs (what happens without it), and the same to the Default row \
                 of {id}"
            )),
        }
        for value in &flag.possible_values {
            if !entry.text.contains(&format!("`{value}`")) {
                problems.push(format!(
                    "{id}: {name} takes `{value}` (clap's possible values): name it, in backticks, \
                     in the entry"
                ));
            }
        }
        if !entry
            .row("Where")
            .unwrap_or_default()
            .contains("command line")
        {
            problems.push(format!(
                "{id}: has a flag, so its Where row names `command line`"
            ));
        }
    }
    // Every flag the reference names exists.
    let known: BTreeSet<String> = flags
        .iter()
        .map(|f| format!("--{}", f.long))
        .chain(["--help".into(), "--version".into()])
        .collect();
    let mut named = BTreeSet::new();
    for word in reference.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-')) {
        if let Some(name) = word.strip_prefix("--")
            && name.starts_with(|c: char| c.is_ascii_lowercase())
        {
            named.insert(format!("--{}", name.trim_end_matches('-')));
        }
    }
    for name in named.difference(&known) {
        problems.push(format!(
            "{REFERENCE} names the flag {name}, which tcplb does not have (src/config/cli.rs): \
             remove it or correct its name"
        ));
    }
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n\n"));
}

#[test]
fn every_key_is_in_the_reference_and_only_keys_that_exist() {
    let entries = entries(&read(REFERENCE));
    let keys = file_keys();
    let flags = flags();
    let mut problems = Vec::new();
    for (id, _) in keys.iter() {
        if !entries.iter().any(|e| &e.id == id) {
            let flag = flags.iter().find(|f| f.long.replace('-', "_") == *id);
            problems.push(format!(
                "{REFERENCE} has no entry for the key `{id}` (a key the configuration file takes, \
                 src/config/file.rs): add one to the section it belongs to:{}",
                template(id, flag, true)
            ));
        }
    }
    let mut seen = BTreeSet::new();
    for entry in &entries {
        let id = &entry.id;
        if !seen.insert(id.clone()) {
            problems.push(format!("`{id}` has two entries in {REFERENCE}: merge them"));
        }
        let is_flag = id.starts_with("--");
        if !is_flag && !keys.contains_key(id) {
            problems.push(format!(
                "{REFERENCE} has an entry for `{id}`, which the configuration file does not take \
                 (src/config/file.rs): remove it or correct its name"
            ));
            continue;
        }
        for label in ["Default", "Where", "Reload"] {
            if entry.row(label).is_none() {
                problems.push(format!("{id}: add its `- {label}: ...` row"));
            }
        }
        if is_flag {
            if entry.row("Key").is_some() {
                problems.push(format!("{id}: an entry with a Key row is named by its key"));
            }
            if !entry.row("Reload").unwrap_or("no").starts_with("no") {
                problems.push(format!(
                    "{id}: a flag with no key cannot change on a reload (the command line is \
                     fixed for the process): its Reload row starts with no"
                ));
            }
            continue;
        }
        let last = id.rsplit(['.', ']']).next().unwrap_or(id);
        let key_row = entry
            .row("Key")
            .and_then(|r| code_spans(r).first().copied());
        let fits = key_row.is_some_and(|k| {
            [id.as_str(), last].iter().any(|name| {
                k.starts_with(&format!("{name} = ")) || k.starts_with(&format!("[{name}]"))
            }) || k.starts_with("[[")
        });
        if !fits {
            problems.push(format!(
                "{id}: add `- Key: `{last} = ...`` (its syntax), found {key_row:?}"
            ));
        }
        let table = keys[id];
        if !table && entry.row("Example").is_none() {
            problems.push(format!(
                "{id}: add `- Example: `...`` (one line of TOML, not its default)"
            ));
        }
    }
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n\n"));
}

#[test]
fn every_example_reads_where_the_reference_says_and_changes_something() {
    let entries = entries(&read(REFERENCE));
    let mut problems = Vec::new();
    for entry in &entries {
        let Some(example) = entry.example() else {
            continue;
        };
        let id = &entry.id;
        let allowed = places(entry.row("Where").unwrap_or_default());
        if allowed.is_empty() {
            problems.push(format!(
                "{id}: its Where row names none of top level, `[defaults]`, `[[listener]]`, \
                 `[[listener.route]]`"
            ));
            continue;
        }
        for place in Place::ALL {
            let read = parse(&file_with(place, example, false, entry.needs()));
            match (allowed.contains(&place), read) {
                (true, Ok(config)) => {
                    let base = parse(&file_with(place, "", false, entry.needs()))
                        .expect("the base file is valid");
                    if Some(place) == home(&allowed) && config == base {
                        problems.push(format!(
                            "{id}: its example `{example}` reads the same configuration as a file \
                             without it: give an example that is not the default (or the key is \
                             read and ignored)"
                        ));
                    }
                }
                (true, Err(e)) => problems.push(format!(
                    "{id}: its Where says {}, but the example `{example}` there is rejected: {e}",
                    place.written()
                )),
                (false, Ok(_)) => problems.push(format!(
                    "{id}: the example `{example}` is also read in {}: add it to the Where row",
                    place.written()
                )),
                (false, Err(_)) => {}
            }
        }
    }
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n\n"));
}

#[test]
fn every_default_is_the_codes_default() {
    let entries = entries(&read(REFERENCE));
    let mut problems = Vec::new();
    for entry in &entries {
        let id = &entry.id;
        let (Some(example), Some(default_row)) = (entry.example(), entry.row("Default")) else {
            continue;
        };
        let where_row = entry.row("Where").unwrap_or_default();
        let Some(place) = home(&places(where_row)) else {
            continue;
        };
        let without = with_key(example, id, None);
        if where_row.contains("(required)") {
            let Some(without) = without else {
                problems.push(format!("{id}: its example `{example}` does not set it"));
                continue;
            };
            if parse(&file_replacing(
                place,
                example,
                &without,
                false,
                entry.needs(),
            ))
            .is_ok()
            {
                problems.push(format!(
                    "{id}: marked (required), but a file without it (`{without}`) is read: \
                     say what happens without it in its Default row and drop (required)"
                ));
            }
            continue;
        }
        // A prose default is the key left out: nothing to set it to.
        let Some(value) = default_value(default_row) else {
            continue;
        };
        let (Some(set), Some(without)) = (with_key(example, id, Some(toml_value(value))), without)
        else {
            problems.push(format!("{id}: its example `{example}` does not set it"));
            continue;
        };
        let needs = entry.needs();
        let set_config = parse(&file_replacing(place, example, &set, false, needs));
        let without_config = parse(&file_replacing(place, example, &without, false, needs));
        match (set_config, without_config) {
            (Ok(a), Ok(b)) if a == b => {}
            (Ok(_), Ok(_)) => problems.push(format!(
                "{id}: the Default row says `{value}`, but `{set}` reads a different configuration \
                 from `{without}`: write the default the code has (src/config/mod.rs, \
                 ServiceConfig::new and the Default impls)"
            )),
            (Err(e), _) => problems.push(format!(
                "{id}: its default `{value}` is not a value the key takes (`{set}`: {e}); write a \
                 prose default (no backticks) if the default is the key left out"
            )),
            (_, Err(e)) => problems.push(format!(
                "{id}: `{without}` (the example without it) is rejected ({e}): mark it (required) \
                 in its Where row"
            )),
        }
    }
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n\n"));
}

#[tokio::test]
async fn reload_does_exactly_what_the_reference_says() {
    let entries = entries(&read(REFERENCE));
    let base = parse(&file_with(Place::Listener, "", true, "")).expect("the base file is valid");
    let balancer = Balancer::bind(base.clone()).expect("bind the base configuration");
    let reload = balancer.reload_handle();
    let shutdown = balancer.shutdown_token();
    tokio::spawn(balancer.run());
    let files = TlsFiles::new();
    let mut problems = Vec::new();
    for entry in &entries {
        let id = &entry.id;
        let (Some(example), Some(reload_row)) = (entry.example(), entry.row("Reload")) else {
            continue;
        };
        // A new listen address is a new listener, bound at once: the
        // example's fixed port is no port for a test to bind.
        if id == "listen" {
            continue;
        }
        let Some(place) = home(&places(entry.row("Where").unwrap_or_default())) else {
            continue;
        };
        let example = &files.point(example);
        let Ok(config) = parse(&file_with(place, example, true, entry.needs())) else {
            continue; // Reported by the examples' test.
        };
        let summary = reload.apply(config);
        let back = reload.apply(base.clone());
        let (Ok(summary), Ok(_)) = (&summary, &back) else {
            problems.push(format!(
                "{id}: reloading `{example}` failed: {summary:?} / {back:?}"
            ));
            continue;
        };
        let applied = !summary.contains("NOT applied");
        let documented = reload_row.starts_with("yes");
        if applied != documented {
            let truth = if applied { "yes" } else { "no" };
            problems.push(format!(
                "{id}: a reload to `{example}` says \"{summary}\": its Reload row must start with \
                 {truth}, not `{reload_row}`"
            ));
        }
    }
    shutdown.cancel();
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n\n"));
}

#[test]
fn the_control_guide_shows_every_ctl_command_and_option() {
    let guide = read("docs/control.md");
    let mut problems = Vec::new();
    for synopsis in tcplb::manual::ctl_synopses() {
        if !guide.contains(&format!("`{synopsis}`")) {
            problems.push(format!(
                "docs/control.md does not show `{synopsis}` (the command's synopsis, from \
                 src/ctl.rs): add it to the commands' table"
            ));
        }
    }
    let mut ctl = tcplb::ctl::CtlCli::command();
    ctl.build();
    for arg in ctl.get_arguments().filter(|a| a.get_long().is_some()) {
        let long = arg.get_long().unwrap_or_default();
        if matches!(long, "help" | "version") {
            continue;
        }
        let value = arg
            .get_action()
            .takes_values()
            .then(|| {
                arg.get_value_names()
                    .and_then(|n| n.first())
                    .map(|n| format!(" {n}"))
            })
            .flatten();
        let syntax = format!("--{long}{}", value.unwrap_or_default());
        let defaults: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .filter(|v| v != "false")
            .collect();
        let row = guide.lines().find(|l| l.contains(&format!("`{syntax}`")));
        match row {
            None => problems.push(format!(
                "docs/control.md does not list tcplb ctl's option `{syntax}`: add a row for it"
            )),
            Some(row) => {
                for default in defaults {
                    if !row.contains(&format!("`{default}`")) {
                        problems.push(format!(
                            "docs/control.md: `{syntax}` defaults to `{default}`: say so on its row"
                        ));
                    }
                }
            }
        }
    }
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n\n"));
}

#[test]
fn the_probe_finds_what_the_parser_takes() {
    // The derivation itself: a few keys known to exist, and nesting.
    let keys = file_keys();
    for (id, table) in [
        ("drain_timeout", false),
        ("listener", true),
        ("health", true),
        ("health.interval", false),
        ("tcp_keepalive.user_timeout", false),
        ("backends", true),
        ("backends[].check_port", false),
        ("server_names", false),
    ] {
        assert_eq!(keys.get(id), Some(&table), "{id}: {keys:?}");
    }
    assert!(!keys.contains_key("__probe"));
}
