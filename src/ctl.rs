//! `tcplb ctl`: the command-line client of the control API, so operators
//! drain, re-weight, add and remove backends, and list and close open
//! connections, without writing HTTP by hand.
//!
//! It parses its own arguments (a separate clap command, reached when the
//! first argument is `ctl`), sends one request with hyper's HTTP/1 client
//! over TCP or the Unix admin socket, and prints the answer: an aligned
//! table for lists, one line for a change, or the API's JSON with
//! `--json`. Any failure (bad arguments, connection refused, a 4xx with the
//! server's error text) is one line on stderr and a non-zero exit: 2 for
//! bad arguments (as clap), 1 for the rest.
//!
//! It sits on top, beside `main`: it uses only [`crate::config`] (to check
//! durations as the server will) and talks to the server over the wire.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

use crate::config::parse_duration;

/// How long one command may take, connect to answer.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Talk to a running tcplb's control API.
#[derive(Parser, Debug)]
#[command(
    name = "tcplb ctl",
    bin_name = "tcplb ctl",
    version,
    max_term_width = 100
)]
pub struct CtlCli {
    /// The admin endpoint: HOST:PORT, or unix:PATH for the admin socket.
    #[arg(
        long,
        global = true,
        default_value = "127.0.0.1:9090",
        value_name = "ADDR"
    )]
    pub admin: String,

    /// Send the bearer token in this file (the server's --admin-token-file).
    #[arg(long, global = true, value_name = "PATH")]
    pub token_file: Option<PathBuf>,

    /// Print the API's JSON instead of a table or a line.
    #[arg(long, global = true)]
    pub json: bool,

    /// What to ask.
    #[command(subcommand)]
    pub command: Command,
}

/// What to ask.
#[derive(Subcommand, Debug, Clone, PartialEq)]
pub enum Command {
    /// List the pools.
    Pools,
    /// List the backends of POOL, or of every pool.
    Backends {
        /// The pool's name. [default: every pool]
        pool: Option<String>,
    },
    /// Show the health of the backends of POOL, or of every pool: the state
    /// in force, health and since when, the last check, the agent's word,
    /// and the reason.
    Health {
        /// The pool's name. [default: every pool]
        pool: Option<String>,
    },
    /// Stop new connections to BACKEND; open ones finish (or are closed at --deadline).
    Drain {
        /// The pool's name.
        pool: String,
        /// The backend's name (HOST:PORT as configured).
        backend: String,
        /// Close what is still open after this long, e.g. 5m.
        #[arg(long, value_parser = check_duration, value_name = "DUR")]
        deadline: Option<String>,
    },
    /// Take BACKEND out of rotation and stop checking it.
    Maintenance {
        /// The pool's name.
        pool: String,
        /// The backend's name (HOST:PORT as configured).
        backend: String,
    },
    /// Put BACKEND back in rotation.
    Ready {
        /// The pool's name.
        pool: String,
        /// The backend's name (HOST:PORT as configured).
        backend: String,
    },
    /// Set BACKEND's weight (1 to 10000).
    Weight {
        /// The pool's name.
        pool: String,
        /// The backend's name (HOST:PORT as configured).
        backend: String,
        /// The new weight.
        #[arg(value_parser = clap::value_parser!(u32).range(1..=10_000))]
        weight: u32,
    },
    /// Add a backend at HOST:PORT.
    Add {
        /// The pool's name.
        pool: String,
        /// Where the new backend is; also its name.
        #[arg(value_name = "HOST:PORT")]
        address: String,
        /// Its share of connections. [default: 1]
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000), value_name = "N")]
        weight: Option<u32>,
        /// Most connections open to it at once. [default: unlimited]
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
        maxconn: Option<u32>,
        /// Use it only while no primary backend is usable.
        #[arg(long)]
        backup: bool,
    },
    /// List open connections: id, client, listener, backend, age, idle time, bytes each way.
    Connections {
        /// Only this listener's (its pool name). [default: every listener]
        #[arg(long, value_name = "POOL")]
        listener: Option<String>,
        /// Only those to this backend. [default: any]
        #[arg(long, value_name = "BACKEND")]
        backend: Option<String>,
        /// At most this many (one page).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000), value_name = "N")]
        limit: u32,
        /// Only connections with an id above this (the next page).
        #[arg(long, value_name = "ID")]
        after: Option<u64>,
        /// Every page, not just one.
        #[arg(long)]
        all: bool,
    },
    /// Close open connection ID (both sides, at once).
    Close {
        /// The connection's id, from `tcplb ctl connections`.
        id: u64,
    },
    /// Close every open connection to BACKEND.
    CloseConnections {
        /// The pool's name.
        pool: String,
        /// The backend's name (HOST:PORT as configured).
        backend: String,
    },
    /// Drain BACKEND, then remove it when its last connection ends.
    Remove {
        /// The pool's name.
        pool: String,
        /// The backend's name (HOST:PORT as configured).
        backend: String,
        /// Close what is still open after this long, e.g. 5m.
        #[arg(long, value_parser = check_duration, value_name = "DUR")]
        deadline: Option<String>,
    },
}

fn check_duration(text: &str) -> Result<String, String> {
    parse_duration(text).map(|_| text.to_string())
}

/// Characters escaped in a path segment: all but unreserved ones.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn segment(name: &str) -> String {
    utf8_percent_encode(name, SEGMENT).to_string()
}

/// Runs `tcplb ctl ARGS` (`args` starts with the program name, then
/// `ctl`) and returns the exit code.
pub fn main(args: impl IntoIterator<Item = OsString>) -> i32 {
    let mut args: Vec<OsString> = args.into_iter().collect();
    if args.len() > 1 {
        // "tcplb ctl ..." parses as the command "tcplb ctl".
        args.remove(1);
    }
    let cli = match CtlCli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return 1;
        }
    };
    match runtime.block_on(run(&cli)) {
        Ok(text) => {
            print!("{text}");
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

/// One request: method, path, optional JSON body.
struct Call {
    /// GET, POST, PUT or DELETE.
    method: Method,
    /// Under `/api/v1/`, names percent-encoded.
    path: String,
    /// The JSON body, if any.
    body: Option<Value>,
}

/// Runs the command and returns what to print.
pub async fn run(cli: &CtlCli) -> Result<String, String> {
    let token = match &cli.token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read the token file {}: {e}", path.display()))?
                .trim_end()
                .to_string(),
        ),
        None => None,
    };
    if let Command::Connections { all: true, .. } = &cli.command {
        return every_connection(cli, token.as_deref()).await;
    }
    let call = call_for(&cli.command);
    let (value, body) = request(cli, token.as_deref(), &call).await?;
    if cli.json {
        // The server's bytes, fields in its order.
        let text = String::from_utf8_lossy(&body);
        return Ok(format!("{}\n", text.trim_end()));
    }
    Ok(render(&cli.command, &value))
}

/// Sends `call`; the decoded answer and its bytes, or the server's error.
async fn request(cli: &CtlCli, token: Option<&str>, call: &Call) -> Result<(Value, Bytes), String> {
    let (status, body) = tokio::time::timeout(TIMEOUT, send(&cli.admin, token, call))
        .await
        .map_err(|_| format!("no answer from {} within {TIMEOUT:?}", cli.admin))??;
    let value: Value = serde_json::from_slice(&body).map_err(|_| {
        format!(
            "{status}: not a control API answer (is {} a tcplb admin endpoint?)",
            cli.admin
        )
    })?;
    if !status.is_success() {
        let message = value["error"].as_str().unwrap_or("(no error text)");
        return Err(format!("{status}: {message}"));
    }
    Ok((value, body))
}

/// `connections --all`: every page, one table (or one JSON object).
async fn every_connection(cli: &CtlCli, token: Option<&str>) -> Result<String, String> {
    let mut command = cli.command.clone();
    let mut all: Vec<Value> = Vec::new();
    let open = loop {
        let (value, _) = request(cli, token, &call_for(&command)).await?;
        all.extend(array(&value["connections"]).iter().cloned());
        let (Some(next), Command::Connections { after, .. }) =
            (value["next"].as_u64(), &mut command)
        else {
            break value["open"].clone();
        };
        *after = Some(next);
    };
    let merged = json!({ "open": open, "connections": all, "next": null });
    if cli.json {
        return Ok(format!("{merged}\n"));
    }
    Ok(render(&command, &merged))
}

fn call_for(command: &Command) -> Call {
    let backend_path = |pool: &str, backend: &str| {
        format!(
            "/api/v1/pools/{}/backends/{}",
            segment(pool),
            segment(backend)
        )
    };
    let deadline_body =
        |deadline: &Option<String>| deadline.as_ref().map(|d| json!({ "deadline": d }));
    match command {
        Command::Pools | Command::Backends { pool: None } | Command::Health { pool: None } => {
            Call {
                method: Method::GET,
                path: "/api/v1/pools".into(),
                body: None,
            }
        }
        Command::Backends { pool: Some(pool) } | Command::Health { pool: Some(pool) } => Call {
            method: Method::GET,
            path: format!("/api/v1/pools/{}/backends", segment(pool)),
            body: None,
        },
        Command::Drain {
            pool,
            backend,
            deadline,
        } => Call {
            method: Method::POST,
            path: format!("{}/drain", backend_path(pool, backend)),
            body: deadline_body(deadline),
        },
        Command::Maintenance { pool, backend } => Call {
            method: Method::POST,
            path: format!("{}/maintenance", backend_path(pool, backend)),
            body: None,
        },
        Command::Ready { pool, backend } => Call {
            method: Method::POST,
            path: format!("{}/ready", backend_path(pool, backend)),
            body: None,
        },
        Command::Weight {
            pool,
            backend,
            weight,
        } => Call {
            method: Method::PUT,
            path: format!("{}/weight", backend_path(pool, backend)),
            body: Some(json!({ "weight": weight })),
        },
        Command::Add {
            pool,
            address,
            weight,
            maxconn,
            backup,
        } => {
            let mut body = json!({ "address": address, "backup": backup });
            if let Some(weight) = weight {
                body["weight"] = json!(weight);
            }
            if let Some(maxconn) = maxconn {
                body["maxconn"] = json!(maxconn);
            }
            Call {
                method: Method::POST,
                path: format!("/api/v1/pools/{}/backends", segment(pool)),
                body: Some(body),
            }
        }
        Command::Remove {
            pool,
            backend,
            deadline,
        } => Call {
            method: Method::DELETE,
            path: backend_path(pool, backend),
            body: deadline_body(deadline),
        },
        Command::Connections {
            listener,
            backend,
            limit,
            after,
            all: _,
        } => {
            let mut path = format!("/api/v1/connections?limit={limit}");
            if let Some(after) = after {
                path.push_str(&format!("&after={after}"));
            }
            if let Some(listener) = listener {
                path.push_str(&format!("&listener={}", segment(listener)));
            }
            if let Some(backend) = backend {
                path.push_str(&format!("&backend={}", segment(backend)));
            }
            Call {
                method: Method::GET,
                path,
                body: None,
            }
        }
        Command::Close { id } => Call {
            method: Method::DELETE,
            path: format!("/api/v1/connections/{id}"),
            body: None,
        },
        Command::CloseConnections { pool, backend } => Call {
            method: Method::POST,
            path: format!("{}/close-connections", backend_path(pool, backend)),
            body: None,
        },
    }
}

/// Sends `call` to `admin` (HOST:PORT or unix:PATH); the status and body.
async fn send(
    admin: &str,
    token: Option<&str>,
    call: &Call,
) -> Result<(StatusCode, Bytes), String> {
    match admin.strip_prefix("unix:") {
        Some(path) => {
            let stream = UnixStream::connect(path)
                .await
                .map_err(|e| format!("cannot connect to unix:{path}: {e}"))?;
            exchange(stream, "localhost", token, call).await
        }
        None => {
            let stream = TcpStream::connect(admin)
                .await
                .map_err(|e| format!("cannot connect to {admin}: {e}"))?;
            exchange(stream, admin, token, call).await
        }
    }
}

async fn exchange<S>(
    stream: S,
    host: &str,
    token: Option<&str>,
    call: &Call,
) -> Result<(StatusCode, Bytes), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    // Drives the connection; it ends when the answer is read.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let body = match &call.body {
        Some(value) => Bytes::from(value.to_string()),
        None => Bytes::new(),
    };
    let mut request = Request::builder()
        .method(call.method.clone())
        .uri(&call.path)
        .header(HOST, host);
    if call.body.is_some() {
        request = request.header(CONTENT_TYPE, "application/json");
    }
    if let Some(token) = token {
        request = request.header(AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request
        .body(Full::new(body))
        .map_err(|e| format!("bad request: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("reading the answer failed: {e}"))?
        .to_bytes();
    Ok((status, body))
}

/// The human form of an answer.
fn render(command: &Command, value: &Value) -> String {
    match command {
        Command::Pools => {
            let mut rows = vec![row(&["NAME", "LISTEN", "STRATEGY", "BACKENDS"])];
            for pool in array(&value["pools"]) {
                let backends = array(&pool["backends"]);
                let ready = backends
                    .iter()
                    .filter(|b| b["admin_state"] == "ready" && b["health"] == "up")
                    .count();
                rows.push(vec![
                    text(&pool["name"]),
                    text(&pool["listen"]),
                    text(&pool["strategy"]),
                    format!("{} ({ready} ready and up)", backends.len()),
                ]);
            }
            table(&rows)
        }
        Command::Backends { pool } => {
            let mut rows = vec![row(&[
                "POOL",
                "BACKEND",
                "ADDRESS",
                "STATE",
                "HEALTH",
                "WEIGHT",
                "EFFECTIVE",
                "ACTIVE",
                "BACKUP",
                "DEADLINE",
            ])];
            for (name, pool) in pools_of(pool.as_deref(), value) {
                for b in array(&pool["backends"]) {
                    rows.push(vec![
                        name.clone(),
                        text(&b["name"]),
                        text(&b["address"]),
                        text(&b["admin_state"]),
                        text(&b["health"]),
                        text(&b["weight"]),
                        text(&b["effective_weight"]),
                        text(&b["active"]),
                        if b["backup"] == true { "yes" } else { "no" }.into(),
                        match &b["drain_deadline"] {
                            Value::Null => "-".into(),
                            d => text(d),
                        },
                    ]);
                }
            }
            table(&rows)
        }
        Command::Health { pool } => {
            let mut rows = vec![row(&[
                "POOL", "BACKEND", "STATE", "HEALTH", "SINCE", "CHECK", "AGENT", "REASON",
            ])];
            for (name, pool) in pools_of(pool.as_deref(), value) {
                for b in array(&pool["backends"]) {
                    rows.push(vec![
                        name.clone(),
                        text(&b["name"]),
                        state_shown(b),
                        text(&b["health"]),
                        b["health_since"].as_str().map_or("-".into(), seconds_only),
                        match &b["check"] {
                            Value::Null => "-".into(),
                            c => format!("{}:{}", text(&c["type"]), text(&c["result"])),
                        },
                        agent_shown(&b["agent"]),
                        reason_shown(b),
                    ]);
                }
            }
            table(&rows)
        }
        Command::Connections { .. } => {
            let mut rows = vec![row(&[
                "ID", "CLIENT", "LISTENER", "BACKEND", "AGE", "IDLE", "SENT", "RECEIVED",
            ])];
            for c in array(&value["connections"]) {
                rows.push(vec![
                    text(&c["id"]),
                    text(&c["client"]),
                    text(&c["listener"]),
                    text(&c["backend"]),
                    short_duration(c["age_ms"].as_u64()),
                    short_duration(c["idle_ms"].as_u64()),
                    text(&c["sent"]),
                    text(&c["received"]),
                ]);
            }
            let mut out = table(&rows);
            let shown = array(&value["connections"]).len();
            out.push_str(&format!("{shown} shown, {} open", text(&value["open"])));
            if let Some(next) = value["next"].as_u64() {
                out.push_str(&format!("; more with --after {next}"));
            }
            out.push('\n');
            out
        }
        Command::Close { .. } => {
            let c = &value["connection"];
            format!(
                "connection {} ({} on {} to {}): {}\n",
                text(&c["id"]),
                text(&c["client"]),
                text(&c["listener"]),
                text(&c["backend"]),
                text(&value["change"])
            )
        }
        _ => format!(
            "{} {}: {}\n",
            text(&value["pool"]),
            text(&value["backend"]),
            text(&value["change"])
        ),
    }
}

/// The pools in an answer: the one pool asked for, or every pool.
fn pools_of<'a>(pool: Option<&str>, value: &'a Value) -> Vec<(String, &'a Value)> {
    match pool {
        Some(_) => vec![(text(&value["pool"]), value)],
        None => array(&value["pools"])
            .iter()
            .map(|p| (text(&p["name"]), p))
            .collect(),
    }
}

/// The state in force, with the operator's when the agent's differs:
/// `drain(agent)` while the operator says ready and the agent drain.
fn state_shown(b: &Value) -> String {
    let (operator, in_force) = (text(&b["admin_state"]), text(&b["state"]));
    if in_force == "-" || in_force == operator {
        operator
    } else {
        format!("{in_force}(agent)")
    }
}

/// The agent's word in one word: `drain,50%`, `down`, `ready`; `-`
/// without an agent check.
fn agent_shown(agent: &Value) -> String {
    if agent.is_null() {
        return "-".into();
    }
    if agent["result"] != "passed" && agent["at"] == "" {
        return "unasked".into();
    }
    let mut parts = vec![text(&agent["state"]).replace("maintenance", "maint")];
    if agent["down"] == true {
        parts.push("down".into());
    }
    if agent["weight_percent"].as_u64() != Some(100) {
        parts.push(format!("{}%", text(&agent["weight_percent"])));
    }
    if let Some(n) = agent["maxconn"].as_u64() {
        parts.push(format!("maxconn:{n}"));
    }
    if agent["result"] == "failed" {
        parts.push("unreachable".into());
    }
    parts.join(",")
}

/// The last check's reason (else why the health is what it is), and the
/// agent's answer when there is an agent.
fn reason_shown(b: &Value) -> String {
    let mut reason = match b["check"]["reason"].as_str() {
        Some(r) => r.to_string(),
        None => text(&b["health_reason"]),
    };
    if let Some(said) = b["agent"]["reason"].as_str() {
        reason.push_str(&format!("; agent: {said}"));
    }
    reason
}

/// An RFC 3339 time without its milliseconds: `2026-05-20T10:00:01Z`.
fn seconds_only(at: &str) -> String {
    match at.split_once('.') {
        Some((whole, rest)) if rest.ends_with('Z') => format!("{whole}Z"),
        _ => at.to_string(),
    }
}

/// `850ms`, `12.3s`, `5m02s`, `3h04m`, `2d03h`; `-` when unknown.
fn short_duration(ms: Option<u64>) -> String {
    let Some(ms) = ms else {
        return "-".into();
    };
    let s = ms / 1000;
    match s {
        0 => format!("{ms}ms"),
        1..60 => format!("{}.{}s", s, (ms % 1000) / 100),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86400, (s % 86400) / 3600),
    }
}

fn array(value: &Value) -> &[Value] {
    value.as_array().map_or(&[], Vec::as_slice)
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

/// Left-aligned columns, two spaces apart, no trailing spaces.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            line.push_str(cell);
            if i + 1 < r.len() {
                let pad = widths[i] - cell.chars().count() + 2;
                line.push_str(&" ".repeat(pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<CtlCli, clap::Error> {
        CtlCli::try_parse_from(std::iter::once("tcplb ctl").chain(args.iter().copied()))
    }

    #[test]
    fn commands_become_api_calls() {
        let call = |args: &[&str]| {
            let cli = parse(args).unwrap();
            let c = call_for(&cli.command);
            (c.method.to_string(), c.path, c.body.map(|b| b.to_string()))
        };
        assert_eq!(
            call(&["drain", "web", "[::1]:80", "--deadline", "5m"]),
            (
                "POST".into(),
                "/api/v1/pools/web/backends/%5B%3A%3A1%5D%3A80/drain".into(),
                Some(r#"{"deadline":"5m"}"#.into())
            )
        );
        assert_eq!(
            call(&["weight", "web", "10.0.0.1:80", "3"]),
            (
                "PUT".into(),
                "/api/v1/pools/web/backends/10.0.0.1%3A80/weight".into(),
                Some(r#"{"weight":3}"#.into())
            )
        );
        assert_eq!(
            call(&["add", "web", "127.0.0.1:9", "--weight", "2", "--backup"]),
            (
                "POST".into(),
                "/api/v1/pools/web/backends".into(),
                Some(r#"{"address":"127.0.0.1:9","backup":true,"weight":2}"#.into())
            )
        );
        assert_eq!(
            call(&["remove", "web", "127.0.0.1:9"]),
            (
                "DELETE".into(),
                "/api/v1/pools/web/backends/127.0.0.1%3A9".into(),
                None
            )
        );
        assert_eq!(call(&["backends"]).1, "/api/v1/pools");
        assert_eq!(call(&["health"]).1, "/api/v1/pools");
        assert_eq!(call(&["health", "db"]).1, "/api/v1/pools/db/backends");
        assert_eq!(
            call(&[
                "connections",
                "--listener",
                "web",
                "--backend",
                "[::1]:80",
                "--after",
                "7"
            ]),
            (
                "GET".into(),
                "/api/v1/connections?limit=100&after=7&listener=web&backend=%5B%3A%3A1%5D%3A80"
                    .into(),
                None
            )
        );
        assert_eq!(
            call(&["close", "42"]),
            ("DELETE".into(), "/api/v1/connections/42".into(), None)
        );
        assert_eq!(
            call(&["close-connections", "web", "127.0.0.1:9"]),
            (
                "POST".into(),
                "/api/v1/pools/web/backends/127.0.0.1%3A9/close-connections".into(),
                None
            )
        );
        let cli = parse(&["--json", "pools", "--admin", "unix:/tmp/x"]).unwrap();
        assert!(cli.json);
        assert_eq!(cli.admin, "unix:/tmp/x");
    }

    #[test]
    fn bad_arguments_are_refused() {
        for args in [
            &["weight", "web", "b", "0"][..],
            &["weight", "web", "b", "10001"],
            &["drain", "web", "b", "--deadline", "soon"],
            &["drain", "web"],
            &["reboot"],
            &["close", "x"],
            &["close", "-1"],
            &["connections", "--limit", "0"],
            &["connections", "--limit", "1001"],
            &["close-connections", "web"],
            &[],
        ] {
            assert!(parse(args).is_err(), "{args:?}");
        }
    }

    #[test]
    fn durations_read_short() {
        let cases = [
            (None, "-"),
            (Some(850), "850ms"),
            (Some(12_345), "12.3s"),
            (Some(302_000), "5m02s"),
            (Some(11_040_000), "3h04m"),
            (Some(183_600_000), "2d03h"),
        ];
        for (ms, text) in cases {
            assert_eq!(short_duration(ms), text);
        }
    }

    #[test]
    fn health_shows_state_since_check_agent_and_reason() {
        let answer = json!({"pool": "db", "backends": [
            {"name": "10.0.0.1:5432", "admin_state": "ready", "state": "drain", "health": "up",
             "health_since": "2026-05-20T10:00:01.250Z", "health_reason": "joined the pool",
             "check": {"type": "http", "result": "passed", "reason": "HTTP 200"},
             "agent": {"result": "passed", "reason": "drain 50%", "at": "2026-05-20T10:00:02.000Z",
                       "state": "drain", "down": false, "weight_percent": 50, "maxconn": null}},
            {"name": "10.0.0.2:5432", "admin_state": "ready", "state": "ready", "health": "down",
             "health_since": "2026-05-20T10:01:00.000Z", "health_reason": "HTTP 503 (expected 2xx,3xx)",
             "check": {"type": "http", "result": "failed", "reason": "HTTP 503 (expected 2xx,3xx)"}},
        ]});
        let out = render(
            &Command::Health {
                pool: Some("db".into()),
            },
            &answer,
        );
        let lines: Vec<Vec<&str>> = out
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            lines[0],
            [
                "POOL", "BACKEND", "STATE", "HEALTH", "SINCE", "CHECK", "AGENT", "REASON"
            ]
        );
        assert_eq!(
            lines[1],
            [
                "db",
                "10.0.0.1:5432",
                "drain(agent)",
                "up",
                "2026-05-20T10:00:01Z",
                "http:passed",
                "drain,50%",
                "HTTP",
                "200;",
                "agent:",
                "drain",
                "50%"
            ]
        );
        assert_eq!(
            lines[2][..7],
            [
                "db",
                "10.0.0.2:5432",
                "ready",
                "down",
                "2026-05-20T10:01:00Z",
                "http:failed",
                "-"
            ]
        );
        assert!(
            out.lines()
                .nth(2)
                .unwrap()
                .ends_with("HTTP 503 (expected 2xx,3xx)"),
            "{out}"
        );
    }

    #[test]
    fn tables_align_columns() {
        let rows = vec![row(&["A", "BB", "C"]), row(&["long", "x", ""])];
        assert_eq!(table(&rows), "A     BB  C\nlong  x\n");
    }
}
