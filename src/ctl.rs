//! `tcplb ctl`: the command-line client of the control API, so operators
//! drain, re-weight, add and remove backends, list and close open
//! connections, and turn an instance's readiness off and on, without
//! writing HTTP by hand.
//!
//! It parses its own arguments (a separate clap command, reached when the
//! first argument is `ctl`), sends one request with hyper's HTTP/1 client
//! over TCP or the Unix admin socket, and prints the answer: an aligned
//! table for lists, one line for a change, or the API's JSON with
//! `--json`. Any failure (bad arguments, connection refused, a 4xx with the
//! server's error text) is one line on stderr and a non-zero exit: 2 for
//! bad arguments (as clap), 1 for the rest.
//!
//! A fleet is one command: with several `--admin` (or `--admin-file`) the
//! same request goes to every instance at once, each within its own
//! [`TIMEOUT`], and every instance's outcome is reported, in the order
//! given: a table gets an `INSTANCE` column, a line is prefixed with the
//! instance, a failure is that instance's line on stderr, and `--json` is
//! `{"instances":[{"admin":..,"ok":..,"answer"|"error":..}]}`. The exit
//! code is 0 only when every instance succeeded. Nothing is rolled back
//! where one failed: each instance applies a change whole or not at all,
//! and running the command again is what completes it (a drain, weight or
//! readiness already in place is "no change").
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
    /// An admin endpoint: HOST:PORT, or unix:PATH for the admin socket.
    /// Repeat it to address several instances at once. [default:
    /// 127.0.0.1:9090]
    #[arg(long, global = true, value_name = "ADDR")]
    pub admin: Vec<String>,

    /// Address every instance listed in this file too: one admin endpoint
    /// a line (HOST:PORT or unix:PATH); blank lines and `#` comments are
    /// skipped.
    #[arg(long, global = true, value_name = "PATH")]
    pub admin_file: Option<PathBuf>,

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
    /// `ready POOL BACKEND`: put BACKEND back in rotation. `ready on|off`:
    /// this instance's GET /ready (off: 503 until on, so keepalived, BGP or
    /// a probe sends clients elsewhere). `ready`: show it.
    Ready {
        /// The pool's name; or `on` / `off` alone, for the instance.
        #[arg(value_name = "POOL|on|off")]
        pool: Option<String>,
        /// The backend's name (HOST:PORT as configured).
        backend: Option<String>,
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
    let cli = match CtlCli::from_args(args) {
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
    let report = runtime.block_on(run(&cli));
    print!("{}", report.stdout);
    eprint!("{}", report.stderr);
    if report.ok { 0 } else { 1 }
}

impl CtlCli {
    /// Parses `tcplb ctl`'s arguments (`args` starts with the program
    /// name). Every `--admin` counts, before and after the command: clap
    /// keeps only one side's values of a global flag, so they are taken
    /// from the arguments themselves, in order.
    pub fn from_args(args: Vec<OsString>) -> Result<CtlCli, clap::Error> {
        let mut cli = CtlCli::try_parse_from(&args)?;
        let mut admins = Vec::new();
        let mut words = args.iter().skip(1).map(|a| a.to_string_lossy());
        while let Some(word) = words.next() {
            if word == "--" {
                break;
            }
            if word == "--admin" {
                admins.extend(words.next().map(|a| a.into_owned()));
            } else if let Some(value) = word.strip_prefix("--admin=") {
                admins.push(value.to_string());
            }
        }
        cli.admin = admins;
        cli.checked()
    }

    /// What clap cannot check on its own: the forms of `ready`.
    fn checked(self) -> Result<CtlCli, clap::Error> {
        use clap::CommandFactory;
        if let Command::Ready {
            pool: Some(word),
            backend: None,
        } = &self.command
            && word != "on"
            && word != "off"
        {
            let message = format!(
                "`ready {word}`: give `on` or `off` for this instance, or POOL BACKEND \
                 for a backend"
            );
            return Err(CtlCli::command().error(clap::error::ErrorKind::InvalidValue, message));
        }
        Ok(self)
    }

    /// Every instance addressed: `--admin` in order, then `--admin-file`'s
    /// lines; 127.0.0.1:9090 when neither is given.
    pub fn instances(&self) -> Result<Vec<String>, String> {
        let mut all = self.admin.clone();
        if let Some(path) = &self.admin_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read the admin file {}: {e}", path.display()))?;
            all.extend(
                text.lines()
                    .map(|l| l.split('#').next().unwrap_or_default().trim())
                    .filter(|l| !l.is_empty())
                    .map(str::to_string),
            );
            if all.is_empty() {
                return Err(format!(
                    "the admin file {} lists no admin endpoint",
                    path.display()
                ));
            }
        }
        if all.is_empty() {
            all.push(DEFAULT_ADMIN.to_string());
        }
        Ok(all)
    }
}

/// The admin endpoint addressed when none is given.
pub const DEFAULT_ADMIN: &str = "127.0.0.1:9090";

/// What a run prints, and whether every instance succeeded (exit 0).
pub struct Report {
    /// Tables, lines or JSON.
    pub stdout: String,
    /// One `error:` line per failure.
    pub stderr: String,
    /// Every instance succeeded.
    pub ok: bool,
}

impl Report {
    fn failed(error: String) -> Report {
        Report {
            stdout: String::new(),
            stderr: format!("error: {error}\n"),
            ok: false,
        }
    }
}

/// One instance's answer: decoded, and as JSON text (the server's bytes,
/// fields in its order, for `--json`).
struct Answer {
    /// The decoded answer.
    value: Value,
    /// What `--json` prints of it.
    json: String,
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

/// Runs the command against every instance addressed, at once, and
/// reports each one's outcome in the order given.
pub async fn run(cli: &CtlCli) -> Report {
    let token = match &cli.token_file {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(token) => Some(token.trim_end().to_string()),
            Err(e) => {
                return Report::failed(format!(
                    "cannot read the token file {}: {e}",
                    path.display()
                ));
            }
        },
        None => None,
    };
    let instances = match cli.instances() {
        Ok(instances) => instances,
        Err(e) => return Report::failed(e),
    };
    let asked: Vec<_> = instances
        .iter()
        .map(|admin| {
            let (command, admin, token) = (cli.command.clone(), admin.clone(), token.clone());
            tokio::spawn(async move { ask(&command, &admin, token.as_deref()).await })
        })
        .collect();
    let mut outcomes = Vec::new();
    for (admin, task) in instances.into_iter().zip(asked) {
        let outcome = task
            .await
            .unwrap_or_else(|_| Err("the request task failed".into()));
        outcomes.push((admin, outcome));
    }
    report(cli, &outcomes)
}

/// Asks one instance; the answer or the one-line reason it failed.
async fn ask(command: &Command, admin: &str, token: Option<&str>) -> Result<Answer, String> {
    if let Command::Connections { all: true, .. } = command {
        let merged = every_connection(command, admin, token).await?;
        return Ok(Answer {
            json: merged.to_string(),
            value: merged,
        });
    }
    let (value, body) = request(admin, token, &call_for(command)).await?;
    let json = String::from_utf8_lossy(&body).trim_end().to_string();
    Ok(Answer { value, json })
}

/// What to print: one instance's answer as it always was; several
/// instances' in one table (an `INSTANCE` column), or a line each
/// prefixed with the instance, or one JSON object.
fn report(cli: &CtlCli, outcomes: &[(String, Result<Answer, String>)]) -> Report {
    let ok = outcomes.iter().all(|(_, o)| o.is_ok());
    let fleet = outcomes.len() > 1;
    let mut stderr = String::new();
    for (admin, outcome) in outcomes {
        if let Err(e) = outcome {
            match fleet {
                true => stderr.push_str(&format!("error: {admin}: {e}\n")),
                false => stderr.push_str(&format!("error: {e}\n")),
            }
        }
    }
    if fleet && !ok {
        let failed = outcomes.iter().filter(|(_, o)| o.is_err()).count();
        stderr.push_str(&format!(
            "error: {failed} of {} instances failed\n",
            outcomes.len()
        ));
    }
    let answered = outcomes
        .iter()
        .filter_map(|(admin, o)| o.as_ref().ok().map(|a| (admin.as_str(), a)));
    let stdout = if cli.json && fleet {
        let items: Vec<String> = outcomes
            .iter()
            .map(|(admin, outcome)| match outcome {
                Ok(answer) => format!(
                    "{{\"admin\":{},\"ok\":true,\"answer\":{}}}",
                    json!(admin),
                    answer.json
                ),
                Err(e) => format!(
                    "{{\"admin\":{},\"ok\":false,\"error\":{}}}",
                    json!(admin),
                    json!(e)
                ),
            })
            .collect();
        format!("{{\"instances\":[{}]}}\n", items.join(","))
    } else if cli.json {
        answered.map(|(_, a)| format!("{}\n", a.json)).collect()
    } else if !fleet {
        answered
            .map(|(_, a)| render(&cli.command, &a.value))
            .collect()
    } else if let Some(rows) = rows_of(&cli.command, &Value::Null) {
        // A table: every instance's rows under one header.
        let header = rows[0].clone();
        let mut all = vec![[vec!["INSTANCE".to_string()], header].concat()];
        let mut footers = String::new();
        for (admin, answer) in answered {
            let rows = rows_of(&cli.command, &answer.value).unwrap_or_default();
            for row in rows.into_iter().skip(1) {
                all.push([vec![admin.to_string()], row].concat());
            }
            if let Command::Connections { .. } = cli.command {
                footers.push_str(&format!("{admin}: {}", connections_footer(&answer.value)));
            }
        }
        table(&all) + &footers
    } else {
        answered
            .map(|(admin, a)| {
                let text = render(&cli.command, &a.value);
                text.lines()
                    .map(|l| format!("{admin}: {l}\n"))
                    .collect::<String>()
            })
            .collect()
    };
    Report { stdout, stderr, ok }
}

/// Sends `call` to `admin`; the decoded answer and its bytes, or the
/// server's error.
async fn request(admin: &str, token: Option<&str>, call: &Call) -> Result<(Value, Bytes), String> {
    let (status, body) = tokio::time::timeout(TIMEOUT, send(admin, token, call))
        .await
        .map_err(|_| format!("no answer from {admin} within {TIMEOUT:?}"))??;
    let value: Value = serde_json::from_slice(&body).map_err(|_| {
        format!("{status}: not a control API answer (is {admin} a tcplb admin endpoint?)")
    })?;
    if !status.is_success() {
        let message = value["error"].as_str().unwrap_or("(no error text)");
        return Err(format!("{status}: {message}"));
    }
    Ok((value, body))
}

/// `connections --all`: every page of one instance, as one answer.
async fn every_connection(
    command: &Command,
    admin: &str,
    token: Option<&str>,
) -> Result<Value, String> {
    let mut command = command.clone();
    let mut all: Vec<Value> = Vec::new();
    let open = loop {
        let (value, _) = request(admin, token, &call_for(&command)).await?;
        all.extend(array(&value["connections"]).iter().cloned());
        let (Some(next), Command::Connections { after, .. }) =
            (value["next"].as_u64(), &mut command)
        else {
            break value["open"].clone();
        };
        *after = Some(next);
    };
    Ok(json!({ "open": open, "connections": all, "next": null }))
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
        Command::Ready {
            pool: Some(pool),
            backend: Some(backend),
        } => Call {
            method: Method::POST,
            path: format!("{}/ready", backend_path(pool, backend)),
            body: None,
        },
        Command::Ready {
            pool: Some(word),
            backend: None,
        } => Call {
            method: Method::PUT,
            path: "/api/v1/ready".into(),
            body: Some(json!({ "ready": word == "on" })),
        },
        Command::Ready { pool: None, .. } => Call {
            method: Method::GET,
            path: "/api/v1/ready".into(),
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
    if let Some(rows) = rows_of(command, value) {
        let mut out = table(&rows);
        if let Command::Connections { .. } = command {
            out.push_str(&connections_footer(value));
        }
        return out;
    }
    match command {
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
        Command::Ready { backend: None, .. } => match &value["change"] {
            Value::Null => format!("{}\n", text(&value["says"])),
            change => format!("{}: {}\n", text(change), text(&value["says"])),
        },
        _ => format!(
            "{} {}: {}\n",
            text(&value["pool"]),
            text(&value["backend"]),
            text(&value["change"])
        ),
    }
}

/// The rows (header first) of an answer shown as a table; `None` for the
/// commands answered in a line. With a null `value`, the header alone.
fn rows_of(command: &Command, value: &Value) -> Option<Vec<Vec<String>>> {
    let mut rows = Vec::new();
    match command {
        Command::Pools => {
            rows.push(row(&["NAME", "LISTEN", "STRATEGY", "BACKENDS"]));
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
        }
        Command::Backends { pool } => {
            rows.push(row(&[
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
            ]));
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
        }
        Command::Health { pool } => {
            rows.push(row(&[
                "POOL", "BACKEND", "STATE", "HEALTH", "SINCE", "CHECK", "AGENT", "REASON",
            ]));
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
        }
        Command::Connections { .. } => {
            rows.push(row(&[
                "ID", "CLIENT", "LISTENER", "BACKEND", "AGE", "IDLE", "SENT", "RECEIVED",
            ]));
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
        }
        _ => return None,
    }
    Some(rows)
}

/// "3 shown, 7 open; more with --after 41".
fn connections_footer(value: &Value) -> String {
    let shown = array(&value["connections"]).len();
    let mut out = format!("{shown} shown, {} open", text(&value["open"]));
    if let Some(next) = value["next"].as_u64() {
        out.push_str(&format!("; more with --after {next}"));
    }
    out.push('\n');
    out
}

/// The pools in an answer: the one pool asked for, or every pool.
fn pools_of<'a>(pool: Option<&str>, value: &'a Value) -> Vec<(String, &'a Value)> {
    match pool {
        Some(_) if !value.is_null() => vec![(text(&value["pool"]), value)],
        _ => array(&value["pools"])
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
        let args = std::iter::once("tcplb ctl").chain(args.iter().copied());
        CtlCli::from_args(args.map(OsString::from).collect())
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
        assert_eq!(cli.instances().unwrap(), ["unix:/tmp/x"]);
        assert_eq!(
            call(&["ready", "web", "127.0.0.1:9"]),
            (
                "POST".into(),
                "/api/v1/pools/web/backends/127.0.0.1%3A9/ready".into(),
                None
            )
        );
        assert_eq!(
            call(&["ready", "off"]),
            (
                "PUT".into(),
                "/api/v1/ready".into(),
                Some(r#"{"ready":false}"#.into())
            )
        );
        assert_eq!(call(&["ready", "on"]).2, Some(r#"{"ready":true}"#.into()));
        assert_eq!(
            call(&["ready"]),
            ("GET".into(), "/api/v1/ready".into(), None)
        );
    }

    #[test]
    fn instances_come_from_every_admin_flag_then_the_file() {
        assert_eq!(
            parse(&["pools"]).unwrap().instances().unwrap(),
            [DEFAULT_ADMIN]
        );
        let path = std::env::temp_dir().join(format!("tcplb-ctl-admins-{}", std::process::id()));
        std::fs::write(
            &path,
            "# the fleet\n10.0.0.1:9090\n\n  10.0.0.2:9090  # b\nunix:/run/x\n",
        )
        .unwrap();
        let file = path.to_str().unwrap();
        let cli = parse(&[
            "--admin",
            "a:1",
            "pools",
            "--admin",
            "b:2",
            "--admin-file",
            file,
        ]);
        assert_eq!(
            cli.unwrap().instances().unwrap(),
            [
                "a:1",
                "b:2",
                "10.0.0.1:9090",
                "10.0.0.2:9090",
                "unix:/run/x"
            ]
        );
        std::fs::write(&path, "# nobody\n").unwrap();
        let cli = parse(&["--admin-file", file, "pools"]).unwrap();
        assert!(
            cli.instances()
                .unwrap_err()
                .contains("lists no admin endpoint")
        );
        std::fs::remove_file(&path).unwrap();
        let cli = parse(&["--admin-file", file, "pools"]).unwrap();
        assert!(
            cli.instances()
                .unwrap_err()
                .contains("cannot read the admin file")
        );
    }

    #[test]
    fn a_fleet_reports_each_instance_and_fails_if_one_did() {
        let cli = parse(&["--admin", "a:1", "--admin", "b:2", "drain", "web", "x:1"]).unwrap();
        let done = |change: &str| {
            let value =
                json!({"pool": "web", "backend": "x:1", "action": "drain", "change": change});
            Ok(Answer {
                json: value.to_string(),
                value,
            })
        };
        let outcomes = vec![
            ("a:1".to_string(), done("state ready -> drain")),
            (
                "b:2".to_string(),
                Err("404 Not Found: no pool web".to_string()),
            ),
        ];
        let report = report(&cli, &outcomes);
        assert!(!report.ok);
        assert_eq!(report.stdout, "a:1: web x:1: state ready -> drain\n");
        assert_eq!(
            report.stderr,
            "error: b:2: 404 Not Found: no pool web\nerror: 1 of 2 instances failed\n"
        );
        let both = vec![
            ("a:1".to_string(), done("no change")),
            ("b:2".to_string(), done("state ready -> drain")),
        ];
        assert!(super::report(&cli, &both).ok);

        // A table gets an INSTANCE column; --json one object.
        let cli = parse(&["--admin", "a:1", "--admin", "b:2", "pools"]).unwrap();
        let pools = |name: &str| {
            let value = json!({"pools": [{"name": name, "listen": "1.2.3.4:80",
                "strategy": "maglev", "backends": []}]});
            Ok(Answer {
                json: value.to_string(),
                value,
            })
        };
        let outcomes = vec![
            ("a:1".to_string(), pools("web")),
            ("b:2".to_string(), pools("web")),
        ];
        let report = super::report(&cli, &outcomes);
        assert_eq!(
            report.stdout,
            "INSTANCE  NAME  LISTEN      STRATEGY  BACKENDS\n\
             a:1       web   1.2.3.4:80  maglev    0 (0 ready and up)\n\
             b:2       web   1.2.3.4:80  maglev    0 (0 ready and up)\n"
        );
        let cli = parse(&["--json", "--admin", "a:1", "--admin", "b:2", "pools"]).unwrap();
        let outcomes = vec![
            ("a:1".to_string(), pools("web")),
            ("b:2".to_string(), Err("no answer".to_string())),
        ];
        let out: Value = serde_json::from_str(&super::report(&cli, &outcomes).stdout).unwrap();
        assert_eq!(out["instances"][0]["admin"], "a:1");
        assert_eq!(out["instances"][0]["answer"]["pools"][0]["name"], "web");
        assert_eq!(out["instances"][1]["ok"], false);
        assert_eq!(out["instances"][1]["error"], "no answer");
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
        // `ready WORD` takes on or off only.
        assert!(parse(&["ready", "of"]).is_err());
        assert!(parse(&["ready", "off"]).is_ok());
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
