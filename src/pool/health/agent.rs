//! HAProxy's agent check: tcplb connects to the agent on the backend
//! (`agent_port` of its check address), sends `agent_send` if set, and
//! reads one line of words, separated by spaces, tabs or commas, case
//! ignored, an optional `#reason` at the end:
//!
//! | word | means |
//! |---|---|
//! | `75%` | take 75 % of the configured weight (0 to 256; 0 % is out of rotation) |
//! | `maxconn:N` | at most N connections (the operator's `maxconn`, if lower, stays) |
//! | `ready`, `drain`, `maint` | the agent's admin state |
//! | `up` | the agent no longer says down |
//! | `down`, `fail`, `stopped` | down, whatever the checks say |
//!
//! How its word combines with the operator's and the checks' (the
//! operator's word wins, and the agent never makes a failing backend
//! healthy, the bug of HAProxy 2.2's `ready,up`, haproxy#1176):
//!
//! - state: the operator's `drain` or `maintenance` stands whatever the
//!   agent says; while the operator says `ready`, the agent's `drain` or
//!   `maint` applies. The agent's `ready` only takes back its own.
//! - health: up only when the checks pass *and* the agent does not say
//!   down. The agent's `up` takes back its own `down`, nothing more.
//! - weight: the operator's weight (configured or set through the API)
//!   times the agent's share; `maxconn`: the lower of the two.
//!
//! An agent that cannot be reached, times out or answers a malformed line
//! changes nothing (HAProxy: connectivity is the regular check's job); the
//! reason is shown in `/status` and logged at debug.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, Ordering::Relaxed};
use std::time::SystemTime;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::CheckResult;
use super::check::{Failure, PlainTcp, Transport, shown};
use crate::config::AdminState;

/// The longest answer read: one line of words.
pub const LINE_LIMIT: usize = 1024;

/// The highest weight share an agent may ask for, in percent (HAProxy's
/// weights go to 256).
pub const MAX_PERCENT: u32 = 256;

/// What one answer says; each part is `None` when the line does not say it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentWord {
    /// `ready`, `drain` or `maint`.
    pub state: Option<AdminState>,
    /// `up` (true) or `down`/`fail`/`stopped` (false).
    pub up: Option<bool>,
    /// `N%`.
    pub weight_percent: Option<u32>,
    /// `maxconn:N`.
    pub max_conns: Option<u32>,
    /// The text after `#`, trimmed.
    pub reason: Option<String>,
}

/// Parses one answer (the bytes up to the first newline).
pub fn parse_line(bytes: &[u8]) -> Result<AgentWord, String> {
    let line = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = std::str::from_utf8(line)
        .map_err(|_| format!("malformed answer \"{}\": not text", shown(line, 80)))?;
    let (words, reason) = match line.split_once('#') {
        Some((words, reason)) => (words, Some(reason.trim().to_string())),
        None => (line, None),
    };
    let mut word = AgentWord {
        reason: reason.filter(|r| !r.is_empty()),
        ..AgentWord::default()
    };
    let malformed = |what: &str| {
        format!(
            "malformed answer \"{}\": {what}",
            shown(line.as_bytes(), 80)
        )
    };
    let mut any = false;
    for w in words
        .split(|c: char| c.is_ascii_whitespace() || c == ',')
        .filter(|w| !w.is_empty())
    {
        any = true;
        let lower = w.to_ascii_lowercase();
        match lower.as_str() {
            "ready" => word.state = Some(AdminState::Ready),
            "drain" => word.state = Some(AdminState::Drain),
            "maint" => word.state = Some(AdminState::Maintenance),
            "up" => word.up = Some(true),
            "down" | "fail" | "stopped" => word.up = Some(false),
            _ => {
                if let Some(percent) = lower.strip_suffix('%') {
                    match percent.parse::<u32>() {
                        Ok(p) if p <= MAX_PERCENT => word.weight_percent = Some(p),
                        _ => {
                            return Err(malformed(&format!(
                                "bad weight {w:?} (expected 0% to {MAX_PERCENT}%)"
                            )));
                        }
                    }
                } else if let Some(n) = lower.strip_prefix("maxconn:") {
                    match n.parse::<u32>() {
                        Ok(n) => word.max_conns = Some(n),
                        Err(_) => return Err(malformed(&format!("bad {w:?}"))),
                    }
                } else {
                    return Err(malformed(&format!(
                        "unknown word {:?}",
                        shown(w.as_bytes(), 40)
                    )));
                }
            }
        }
    }
    if !any && word.reason.is_none() {
        return Err("empty answer".into());
    }
    Ok(word)
}

/// Asks the agent at `target`, sending `send` first; fails with a reason
/// when it cannot be reached or its answer is malformed.
pub async fn ask(target: SocketAddr, send: Option<&[u8]>) -> Result<AgentWord, String> {
    let failed = |f: Failure| match f {
        Failure::Failed(r) | Failure::Local(r) => r,
    };
    let mut stream = PlainTcp
        .connect(target)
        .await
        .map_err(|e| failed(e.into()))?;
    if let Some(bytes) = send {
        stream
            .write_all(bytes)
            .await
            .map_err(|e| failed(e.into()))?;
    }
    let mut answer = Vec::new();
    let mut chunk = [0u8; 256];
    while !answer.contains(&b'\n') {
        if answer.len() >= LINE_LIMIT {
            return Err(format!(
                "answer longer than {LINE_LIMIT} bytes without a newline"
            ));
        }
        match stream.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(failed(e.into())),
        }
    }
    parse_line(&answer)
}

/// What the agent of one backend says, as the data path reads it: atomics,
/// no lock on the pick path.
#[derive(Debug)]
pub struct AgentState {
    /// Its admin state, as [`AdminState`]'s discriminant (`Ready`: none).
    state: AtomicU8,
    /// It said down (and not up since).
    down: AtomicBool,
    /// Its weight share in percent; 100 until it says otherwise.
    weight_percent: AtomicU32,
    /// Its `maxconn`; 0 when it gave none.
    max_conns: AtomicU32,
    /// Its last answer, for reporting.
    report: Mutex<Option<AgentReport>>,
}

impl Default for AgentState {
    fn default() -> Self {
        AgentState {
            state: AtomicU8::new(AdminState::Ready as u8),
            down: AtomicBool::new(false),
            weight_percent: AtomicU32::new(100),
            max_conns: AtomicU32::new(0),
            report: Mutex::new(None),
        }
    }
}

/// The agent's last answer as `/status` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentReport {
    /// `Passed`: it answered a line we understood; `Failed`: it could not
    /// be reached or its answer was malformed (nothing changed then).
    pub result: CheckResult,
    /// The answer as it came, or why there was none.
    pub reason: String,
    /// When it was asked.
    pub at: SystemTime,
}

/// What an answer changed, for its caller to log and act on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentChanges {
    /// The agent's admin state changed (to this).
    pub state: Option<AdminState>,
    /// It now says down (false) or no longer does (true).
    pub up: Option<bool>,
    /// The weight share changed (to this).
    pub weight_percent: Option<u32>,
    /// The maxconn changed (to this; 0 is none).
    pub max_conns: Option<u32>,
}

impl AgentChanges {
    pub fn is_empty(&self) -> bool {
        *self == AgentChanges::default()
    }
}

impl AgentState {
    /// The agent's admin state (`Ready` when it said none).
    pub fn state(&self) -> AdminState {
        AdminState::from_discriminant(self.state.load(Relaxed))
    }

    /// It says down.
    pub fn says_down(&self) -> bool {
        self.down.load(Relaxed)
    }

    /// Its weight share in percent (100 by default).
    pub fn weight_percent(&self) -> u32 {
        self.weight_percent.load(Relaxed)
    }

    /// Its `maxconn`, if it gave one.
    pub fn max_conns(&self) -> Option<u32> {
        Some(self.max_conns.load(Relaxed)).filter(|&n| n > 0)
    }

    /// Its last answer.
    pub fn report(&self) -> Option<AgentReport> {
        self.report
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Takes what the agent answered (or why it did not); returns what
    /// changed.
    pub fn record(&self, answer: Result<AgentWord, String>, said: String) -> AgentChanges {
        let mut changes = AgentChanges::default();
        let result = match &answer {
            Ok(_) => CheckResult::Passed,
            Err(_) => CheckResult::Failed,
        };
        let reason = match &answer {
            Ok(_) => said,
            Err(why) => why.clone(),
        };
        *self.report.lock().unwrap_or_else(|e| e.into_inner()) = Some(AgentReport {
            result,
            reason,
            at: SystemTime::now(),
        });
        let Ok(word) = answer else {
            return changes;
        };
        if let Some(state) = word.state
            && self.state.swap(state as u8, Relaxed) != state as u8
        {
            changes.state = Some(state);
        }
        if let Some(up) = word.up
            && self.down.swap(!up, Relaxed) == up
        {
            changes.up = Some(up);
        }
        if let Some(percent) = word.weight_percent
            && self.weight_percent.swap(percent, Relaxed) != percent
        {
            changes.weight_percent = Some(percent);
        }
        if let Some(max) = word.max_conns
            && self.max_conns.swap(max, Relaxed) != max
        {
            changes.max_conns = Some(max);
        }
        changes
    }

    /// Forgets everything the agent said (the agent check was turned off).
    pub fn clear(&self) -> AgentChanges {
        let was = AgentWord {
            state: Some(AdminState::Ready),
            up: Some(true),
            weight_percent: Some(100),
            max_conns: Some(0),
            reason: None,
        };
        let changes = self.record(Ok(was), String::new());
        *self.report.lock().unwrap_or_else(|e| e.into_inner()) = None;
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_of_the_protocol_parses() {
        assert_eq!(
            parse_line(b"up 75% maxconn:30\n").unwrap(),
            AgentWord {
                up: Some(true),
                weight_percent: Some(75),
                max_conns: Some(30),
                ..AgentWord::default()
            }
        );
        assert_eq!(
            parse_line(b"DRAIN\r\n").unwrap().state,
            Some(AdminState::Drain)
        );
        assert_eq!(
            parse_line(b"maint").unwrap().state,
            Some(AdminState::Maintenance)
        );
        assert_eq!(
            parse_line(b"ready,up").unwrap().state,
            Some(AdminState::Ready)
        );
        for down in ["down", "fail", "stopped"] {
            assert_eq!(
                parse_line(down.as_bytes()).unwrap().up,
                Some(false),
                "{down}"
            );
        }
        let word = parse_line(b"down #disk full\nignored").unwrap();
        assert_eq!(
            (word.up, word.reason.as_deref()),
            (Some(false), Some("disk full"))
        );
        assert_eq!(parse_line(b"0%").unwrap().weight_percent, Some(0));
    }

    #[test]
    fn malformed_answers_say_why() {
        for (line, why) in [
            (&b"\n"[..], "empty answer"),
            (b"", "empty answer"),
            (b"sideways", "unknown word \"sideways\""),
            (b"300%", "bad weight"),
            (b"-5%", "bad weight"),
            (b"maxconn:lots", "bad \"maxconn:lots\""),
            (b"\xff\xfe", "not text"),
        ] {
            let err = parse_line(line).unwrap_err();
            assert!(err.contains(why), "{line:?}: {err}");
        }
    }

    #[test]
    fn answers_report_their_changes_once_and_failures_change_nothing() {
        let agent = AgentState::default();
        let changes = agent.record(parse_line(b"drain 50%"), "drain 50%".into());
        assert_eq!(
            changes,
            AgentChanges {
                state: Some(AdminState::Drain),
                weight_percent: Some(50),
                ..AgentChanges::default()
            }
        );
        assert!(
            agent
                .record(parse_line(b"drain 50%"), String::new())
                .is_empty()
        );
        let broken = agent.record(Err("connection refused".into()), String::new());
        assert!(broken.is_empty());
        assert_eq!(
            agent.state(),
            AdminState::Drain,
            "kept through a failed ask"
        );
        assert_eq!(agent.report().unwrap().result, CheckResult::Failed);
        let down = agent.record(parse_line(b"down #disk full"), String::new());
        assert_eq!(down.up, Some(false));
        assert!(agent.says_down());
        let cleared = agent.clear();
        assert_eq!(
            (cleared.up, cleared.state),
            (Some(true), Some(AdminState::Ready))
        );
        assert_eq!((agent.weight_percent(), agent.report()), (100, None));
    }
}
