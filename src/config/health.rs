//! The health-check model: how a backend is judged alive (the check and
//! its rhythm), what the agent on it may say, and what happens to its
//! connections when its health changes.
//!
//! A room of its own because there are several kinds of check, each with
//! settings of its own, and one parser each for the command line and the
//! file to share: a status list, an HTTP request line, hex bytes, an exec
//! command line, a regular expression.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::config::parse_escaped;

/// How the prober decides a backend is alive. Defaults: every 10 s, 2 s
/// timeout, rise 1, fall 1, a plain connect check, no agent, open
/// connections kept when health changes.
///
/// Rounds of checks are scheduled from their start: a round begins one
/// `interval` after the previous one began (HAProxy's `inter`), or as soon
/// as it ended when it took longer. So a backend that dies is found within
/// `fall × interval + timeout` when `timeout < interval`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthConfig {
    /// Time from the start of one round of checks to the start of the next.
    pub interval: Duration,
    /// A check slower than this fails (an exec check's child is killed).
    pub timeout: Duration,
    /// Consecutive successes that bring a DOWN backend back.
    pub rise: u32,
    /// Consecutive failures that take an UP backend out.
    pub fall: u32,
    /// What one check does.
    pub check: CheckConfig,
    /// Check every backend on this port instead of its traffic port
    /// (`--health-port`); a backend's own `check_port` wins.
    pub port: Option<u16>,
    /// HAProxy's agent check, on its own interval; off when `None`.
    pub agent: Option<AgentConfig>,
    /// What happens to a backend's open connections when checks mark it
    /// down (HAProxy's `on-marked-down shutdown-sessions`).
    pub on_down: OnHealthChange,
    /// What happens to the backups' open connections when a primary is
    /// marked up again (HAProxy's `on-marked-up shutdown-backup-sessions`).
    pub on_backup_up: OnHealthChange,
    /// Envoy's panic threshold, in percent: when fewer than this share of
    /// the ready primaries pass their checks, balance over all ready
    /// primaries regardless of health. `None` (the default) is off: for a
    /// database, sending writes to a node that failed its check is wrong.
    pub panic_threshold: Option<u8>,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(2),
            rise: 1,
            fall: 1,
            check: CheckConfig::Connect,
            port: None,
            agent: None,
            on_down: OnHealthChange::Keep,
            on_backup_up: OnHealthChange::Keep,
            panic_threshold: None,
        }
    }
}

/// What one active check does.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum CheckConfig {
    /// Connect, then close: the backend accepts TCP.
    #[default]
    Connect,
    /// Connect, then send and expect in turn (HAProxy's `tcp-check`).
    Steps(Vec<Step>),
    /// An HTTP/1.1 request; the status (and body) decide.
    Http(HttpCheck),
    /// Run a program: exit status 0 is up (keepalived's `MISC_CHECK`).
    Exec(ExecCheck),
    /// Send a datagram; a reply (that matches) is up, an ICMP port
    /// unreachable down. For UDP listeners.
    Udp(UdpCheck),
}

/// A UDP check: one datagram out, and what must come back. Default: an
/// empty datagram, and up unless an ICMP port unreachable comes back
/// (what a UDP listener's backends get without a check of their own).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UdpCheck {
    /// The datagram sent, e.g. a DNS query; sent again while no reply
    /// came, so one lost datagram does not fail the check.
    pub send: Vec<u8>,
    /// What the reply must hold; `None`: any reply passes, and so does
    /// silence (no ICMP error), since many UDP services never answer
    /// (syslog).
    pub expect: Option<Expect>,
}

impl CheckConfig {
    /// The check's kind, as `/status` and the logs name it.
    pub fn kind(&self) -> &'static str {
        match self {
            CheckConfig::Connect => "connect",
            CheckConfig::Steps(_) => "steps",
            CheckConfig::Http(_) => "http",
            CheckConfig::Exec(_) => "exec",
            CheckConfig::Udp(_) => "udp",
        }
    }

    /// The check whichever kind is given names (the command line and the
    /// file each allow one): HTTP, exec, steps, a UDP datagram (whose
    /// reply the short form's expect judges), else the short form's send
    /// and expect, else a connect check.
    pub fn from_kinds(
        http: Option<HttpCheck>,
        exec: Option<ExecCheck>,
        steps: Option<Vec<Step>>,
        udp: Option<Vec<u8>>,
        (send, expect, how): (Option<Vec<u8>>, Option<Vec<u8>>, Match),
    ) -> Self {
        match (http, exec, steps, udp) {
            (Some(http), ..) => CheckConfig::Http(http),
            (_, Some(exec), ..) => CheckConfig::Exec(exec),
            (_, _, Some(steps), _) => CheckConfig::Steps(steps),
            (_, _, _, Some(send)) => CheckConfig::Udp(UdpCheck {
                send,
                expect: expect.map(|pattern| Expect { pattern, how }),
            }),
            _ => CheckConfig::send_expect(send, expect, how),
        }
    }

    /// `--health-send` / `--health-expect` (and the file's `send` and
    /// `expect`): a send, then an expect of `how`, each when given.
    pub fn send_expect(send: Option<Vec<u8>>, expect: Option<Vec<u8>>, how: Match) -> Self {
        let mut steps = Vec::new();
        if let Some(bytes) = send {
            steps.push(Step::Send(bytes));
        }
        if let Some(pattern) = expect {
            steps.push(Step::Expect(Expect { pattern, how }));
        }
        if steps.is_empty() {
            CheckConfig::Connect
        } else {
            CheckConfig::Steps(steps)
        }
    }
}

/// One step of a send/expect sequence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Write these bytes. What the backend sent before is forgotten: the
    /// next expect looks at the answer to this.
    Send(Vec<u8>),
    /// Read until this is met, the backend closes, the read limit is
    /// reached or the check times out.
    Expect(Expect),
}

/// What an expect step waits for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expect {
    /// The bytes (`Prefix`, `Contains`) or the regular expression's text
    /// (`Regex`, already checked to compile).
    pub pattern: Vec<u8>,
    /// How `pattern` is matched against what arrived since the last send.
    pub how: Match,
}

/// How an expect step matches (default `prefix`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Match {
    /// What arrived starts with the pattern.
    #[default]
    Prefix,
    /// The pattern appears anywhere in what arrived (HAProxy's `expect string`).
    Contains,
    /// The regular expression (Rust's `regex` syntax, on bytes) matches
    /// somewhere in what arrived; anchor it with `^` for a prefix.
    Regex,
}

impl FromStr for Match {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "prefix" => Ok(Match::Prefix),
            "contains" => Ok(Match::Contains),
            "regex" => Ok(Match::Regex),
            other => Err(format!(
                "unknown match {other:?}: use prefix, contains or regex"
            )),
        }
    }
}

impl fmt::Display for Match {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Match::Prefix => "prefix",
            Match::Contains => "contains",
            Match::Regex => "regex",
        })
    }
}

impl Expect {
    /// An expect step, its regular expression checked now (so a typo is a
    /// start-up error, not a check that always fails).
    pub fn new(pattern: Vec<u8>, how: Match) -> Result<Expect, String> {
        if pattern.is_empty() {
            return Err("an empty expect always matches: give what the reply must hold".into());
        }
        if how == Match::Regex {
            let text = std::str::from_utf8(&pattern)
                .map_err(|_| "a regular expression must be UTF-8 text".to_string())?;
            regex::bytes::Regex::new(text)
                .map_err(|e| format!("bad regular expression {text:?}: {e}"))?;
        }
        Ok(Expect { pattern, how })
    }
}

/// An HTTP check. Defaults: `GET /`, the backend's address as `Host`,
/// any 2xx or 3xx status (as HAProxy's `http-check expect`), any body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpCheck {
    /// The request method, e.g. `GET` or Patroni's `OPTIONS`.
    pub method: String,
    /// The request target, e.g. `/primary` or `/replica?lag=10MB`.
    pub path: String,
    /// The `Host` header; `None`: the check target's `IP:PORT`.
    pub host: Option<String>,
    /// The statuses that pass.
    pub expect_status: StatusSet,
    /// Text the body must contain (read up to a limit); `None`: any body.
    pub expect_body: Option<String>,
}

impl Default for HttpCheck {
    fn default() -> Self {
        HttpCheck {
            method: "GET".into(),
            path: "/".into(),
            host: None,
            expect_status: StatusSet::default(),
            expect_body: None,
        }
    }
}

impl HttpCheck {
    /// `--health-http`'s value: `PATH` or `METHOD PATH`, e.g.
    /// `OPTIONS /primary`.
    pub fn parse_request_line(text: &str) -> Result<(String, String), String> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let (method, path) = match words.as_slice() {
            [path] => ("GET", *path),
            [method, path] => (*method, *path),
            _ => {
                return Err(format!(
                    "bad HTTP check {text:?}: expected PATH or METHOD PATH, e.g. \"OPTIONS /primary\""
                ));
            }
        };
        check_method(method)?;
        check_path(path)?;
        Ok((method.to_string(), path.to_string()))
    }
}

/// An HTTP method: a token of letters (RFC 9110), e.g. `GET`.
pub fn check_method(method: &str) -> Result<(), String> {
    if method.is_empty() || method.len() > 20 || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(format!(
            "bad HTTP method {method:?}: expected upper-case letters, e.g. GET or OPTIONS"
        ));
    }
    Ok(())
}

/// A request target: starts with `/`, printable ASCII without spaces.
pub fn check_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') || !path.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "bad HTTP path {path:?}: expected printable ASCII starting with /, e.g. /primary"
        ));
    }
    Ok(())
}

/// A `Host` header value: printable ASCII without spaces.
pub fn check_host(host: &str) -> Result<(), String> {
    if host.is_empty() || !host.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "bad HTTP host {host:?}: expected a host name, e.g. db.example or db.example:8008"
        ));
    }
    Ok(())
}

/// Which HTTP statuses pass: single codes and classes (`2xx`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusSet(Vec<(u16, u16)>);

impl Default for StatusSet {
    /// 2xx and 3xx, as HAProxy's `http-check` by default.
    fn default() -> Self {
        StatusSet(vec![(200, 299), (300, 399)])
    }
}

impl StatusSet {
    pub fn contains(&self, status: u16) -> bool {
        self.0
            .iter()
            .any(|&(low, high)| (low..=high).contains(&status))
    }

    /// One item: `200` or `2xx`.
    fn item(text: &str) -> Result<(u16, u16), String> {
        let bad = || {
            format!(
                "bad HTTP status {text:?}: expected a code from 100 to 599 or a class such as 2xx"
            )
        };
        let text = text.trim();
        if let Some(class) = text.strip_suffix("xx").or_else(|| text.strip_suffix("XX")) {
            let digit: u16 = class.parse().map_err(|_| bad())?;
            if !(1..=5).contains(&digit) {
                return Err(bad());
            }
            return Ok((digit * 100, digit * 100 + 99));
        }
        let code: u16 = text.parse().map_err(|_| bad())?;
        if !(100..=599).contains(&code) {
            return Err(bad());
        }
        Ok((code, code))
    }

    /// From the file's list items, each a code or a class.
    pub fn from_items<'a>(items: impl IntoIterator<Item = &'a str>) -> Result<StatusSet, String> {
        let ranges = items
            .into_iter()
            .map(StatusSet::item)
            .collect::<Result<Vec<_>, _>>()?;
        if ranges.is_empty() {
            return Err("an empty expect_status passes nothing: list codes or classes".into());
        }
        Ok(StatusSet(ranges))
    }
}

impl FromStr for StatusSet {
    type Err = String;
    /// `--health-expect-status`: comma-separated, e.g. `200`, `200,204` or `2xx`.
    fn from_str(text: &str) -> Result<Self, String> {
        StatusSet::from_items(text.split(','))
    }
}

impl fmt::Display for StatusSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let items: Vec<String> = self
            .0
            .iter()
            .map(|&(low, high)| {
                if low == high {
                    low.to_string()
                } else {
                    format!("{}xx", low / 100)
                }
            })
            .collect();
        f.write_str(&items.join(","))
    }
}

/// An exec check: a program and its arguments, run without a shell;
/// `{host}` and `{port}` in any of them become the check target's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecCheck {
    /// The program (a path, or a name looked up on `PATH`), then its arguments.
    pub argv: Vec<String>,
}

impl ExecCheck {
    pub fn new(argv: Vec<String>) -> Result<ExecCheck, String> {
        match argv.first() {
            None => Err("an empty exec check runs nothing: give the program first".into()),
            Some(program) if program.is_empty() => Err("the exec check's program is empty".into()),
            Some(_) if argv.iter().any(|a| a.contains('\0')) => {
                Err("an exec argument holds a NUL byte".into())
            }
            Some(_) => Ok(ExecCheck { argv }),
        }
    }
}

impl FromStr for ExecCheck {
    type Err = String;
    /// `--health-exec`: words split on whitespace, no shell and no quoting
    /// (the file's `exec` list takes arguments with spaces).
    fn from_str(text: &str) -> Result<Self, String> {
        ExecCheck::new(text.split_whitespace().map(str::to_string).collect())
    }
}

/// HAProxy's agent check: a plain TCP connection to the backend's agent,
/// which answers one line of words (`75%`, `drain`, `down #why`...).
/// Defaults: every 2 s (HAProxy's `agent-inter`), nothing sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentConfig {
    /// Where the agent listens, on the backend's check address.
    pub port: u16,
    /// Sent after connecting (HAProxy's `agent-send`), e.g. `web/a\n`.
    pub send: Option<Vec<u8>>,
    /// Time from the start of one round of agent checks to the next.
    pub interval: Duration,
}

/// The agent check's default interval (HAProxy's `agent-inter`).
pub const AGENT_INTERVAL: Duration = Duration::from_secs(2);

/// What a health change does to open connections (`on_down`,
/// `on_backup_up`); default `keep`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnHealthChange {
    /// Leave them open: they end when their client or the backend ends them.
    #[default]
    Keep,
    /// Close them at once, both sides, so their clients reconnect to
    /// where new connections go now.
    Close,
}

impl FromStr for OnHealthChange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "keep" => Ok(OnHealthChange::Keep),
            "close" => Ok(OnHealthChange::Close),
            other => Err(format!("unknown policy {other:?}: use keep or close")),
        }
    }
}

impl fmt::Display for OnHealthChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OnHealthChange::Keep => "keep",
            OnHealthChange::Close => "close",
        })
    }
}

/// A percentage from `min` to 100, e.g. `panic_threshold` (from 1) or
/// `max_ejection_percent` (from 0).
pub fn parse_percent(text: &str, min: u8) -> Result<u8, String> {
    let text = text.trim();
    let digits = text.strip_suffix('%').unwrap_or(text);
    match digits.parse::<u8>() {
        Ok(n) if (min..=100).contains(&n) => Ok(n),
        _ => Err(format!(
            "bad percentage {text:?}: expected a whole number from {min} to 100"
        )),
    }
}

/// Hex bytes such as `0000000804d2162f` (PostgreSQL's SSLRequest); spaces
/// between bytes are allowed.
pub fn parse_hex(text: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    let bad = || format!("bad hex {text:?}: expected pairs of hex digits, e.g. 0000000804d2162f");
    if digits.is_empty() || !digits.len().is_multiple_of(2) {
        return Err(bad());
    }
    digits
        .chunks(2)
        .map(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|p| u8::from_str_radix(p, 16).ok())
                .ok_or_else(bad)
        })
        .collect()
}

/// One step as the file writes it: exactly one of `send`, `send_hex`,
/// `expect`, `expect_hex`, and `match` only with an expect.
pub fn step(
    send: Option<&str>,
    send_hex: Option<&str>,
    expect: Option<&str>,
    expect_hex: Option<&str>,
    how: Option<Match>,
) -> Result<Step, String> {
    let given = [send, send_hex, expect, expect_hex]
        .iter()
        .filter(|v| v.is_some())
        .count();
    if given != 1 {
        return Err(
            "a step has exactly one of `send`, `send_hex`, `expect` or `expect_hex`".into(),
        );
    }
    if how.is_some() && expect.is_none() && expect_hex.is_none() {
        return Err("`match` belongs to an `expect` or `expect_hex` step".into());
    }
    let how = how.unwrap_or_default();
    if let Some(text) = send {
        return parse_escaped(text).map(Step::Send);
    }
    if let Some(hex) = send_hex {
        return parse_hex(hex).map(Step::Send);
    }
    if let Some(text) = expect {
        // A regular expression keeps its own backslashes (`\d`, `\r`).
        let pattern = if how == Match::Regex {
            text.as_bytes().to_vec()
        } else {
            parse_escaped(text)?
        };
        return Expect::new(pattern, how).map(Step::Expect);
    }
    let bytes = parse_hex(expect_hex.unwrap_or_default())?;
    if how == Match::Regex {
        return Err("`expect_hex` matches bytes: use prefix or contains".into());
    }
    Expect::new(bytes, how).map(Step::Expect)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_take_codes_and_classes() {
        let set: StatusSet = "200,3xx".parse().unwrap();
        assert!(set.contains(200) && set.contains(302) && !set.contains(204));
        assert_eq!(set.to_string(), "200,3xx");
        assert!(StatusSet::default().contains(301));
        assert!(!StatusSet::default().contains(503));
        for bad in ["", "20", "600", "6xx", "2x", "ok"] {
            assert!(bad.parse::<StatusSet>().is_err(), "{bad}");
        }
    }

    #[test]
    fn request_lines_methods_and_paths() {
        assert_eq!(
            HttpCheck::parse_request_line("OPTIONS /primary").unwrap(),
            ("OPTIONS".to_string(), "/primary".to_string())
        );
        assert_eq!(
            HttpCheck::parse_request_line("/replica?lag=10MB")
                .unwrap()
                .0,
            "GET"
        );
        for bad in ["", "get /", "GET primary", "GET / extra", "GET /a\u{7f}"] {
            assert!(HttpCheck::parse_request_line(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn steps_take_one_action_and_check_regexes() {
        assert_eq!(
            step(None, Some("00 00 00 08 04 d2 16 2f"), None, None, None).unwrap(),
            Step::Send(vec![0, 0, 0, 8, 4, 0xd2, 0x16, 0x2f])
        );
        assert_eq!(
            step(None, None, Some("role:master"), None, Some(Match::Contains)).unwrap(),
            Step::Expect(Expect {
                pattern: b"role:master".to_vec(),
                how: Match::Contains
            })
        );
        let regex = step(None, None, Some(r"^\+PONG\r"), None, Some(Match::Regex)).unwrap();
        assert_eq!(
            regex,
            Step::Expect(Expect {
                pattern: br"^\+PONG\r".to_vec(),
                how: Match::Regex
            })
        );
        assert!(step(Some("a"), None, Some("b"), None, None).is_err());
        assert!(step(None, None, None, None, None).is_err());
        assert!(step(Some("a"), None, None, None, Some(Match::Prefix)).is_err());
        assert!(step(None, None, Some("(unclosed"), None, Some(Match::Regex)).is_err());
        assert!(step(None, None, None, Some("4"), None).is_err(), "odd hex");
        assert!(step(None, None, None, Some("4e"), Some(Match::Regex)).is_err());
        assert!(step(None, None, Some(""), None, None).is_err());
    }

    #[test]
    fn exec_percent_and_policies_parse() {
        let exec: ExecCheck = "/usr/bin/pg_isready -h {host} -p {port}".parse().unwrap();
        assert_eq!(exec.argv.len(), 5);
        assert!("  ".parse::<ExecCheck>().is_err());
        assert_eq!(parse_percent("50%", 1), Ok(50));
        assert_eq!(parse_percent("0", 0), Ok(0));
        assert!(parse_percent("0", 1).is_err());
        assert!(parse_percent("101", 0).is_err());
        for name in ["keep", "close"] {
            assert_eq!(name.parse::<OnHealthChange>().unwrap().to_string(), name);
        }
        for name in ["prefix", "contains", "regex"] {
            assert_eq!(name.parse::<Match>().unwrap().to_string(), name);
        }
        assert_eq!(
            CheckConfig::send_expect(None, None, Match::Prefix),
            CheckConfig::Connect
        );
    }
}
