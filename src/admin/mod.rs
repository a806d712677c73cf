//! The admin endpoint (`--admin ADDR`, off by default): what the balancer
//! is doing, for Prometheus and for people, and the control API that
//! changes the fleet at run time ([`api`]). Read-only unless write access is
//! asked for ([`auth`]): a bearer token (`--admin-token-file`) or the Unix
//! socket (`--admin-socket PATH`), served beside the TCP endpoint.
//!
//! HTTP/1.1 served by hyper, one request per connection, on its own small
//! accept loop. hyper rather than a parser of our own: the control API that
//! comes next needs methods, bodies and auth, and request parsing is where
//! a hand-written server goes wrong.
//!
//! - `GET /ready` and `GET /live`: for the layer in front of a fleet
//!   (keepalived, BGP, Kubernetes probes), unauthenticated ([`ready`]).
//! - `GET /metrics`: Prometheus text exposition format 0.0.4 ([`metrics`]).
//! - `GET /status`: the same picture as JSON ([`status`]).
//! - `GET /status/history`: the last 15 minutes, a point a second ([`history`]).
//! - `GET /`: the live status page, with `/status.js` and `/status.css` ([`page`]).
//! - `HEAD` of any: the same headers, no body.
//! - `/api/v1/...`: the control API, JSON ([`api`]).
//! - another path: 404; another method: 405 with `Allow: GET, HEAD`; a
//!   malformed request: 400 and a request head over [`MAX_HEAD`] bytes: 431,
//!   both answered by hyper itself.
//!
//! The endpoint cannot be blocked by slow or many clients: each connection
//! is served on its own task; a head not complete within [`HEAD_TIMEOUT`]
//! is closed without an answer, a body not complete within
//! [`api::BODY_TIMEOUT`] gets 408, and a whole connection is cut after
//! [`CONNECTION_TIMEOUT`]. At most [`MAX_ADMIN_CONNECTIONS`] are open at
//! once per endpoint; when all are taken, the oldest one that has not sent
//! its request head yet is closed to make room (so silent connections can
//! never lock a scraper out). When every slot is answering a request, the
//! new connection goes to the probe lane: [`PROBE_SLOTS`] more slots, with
//! the same rule, that answer `/ready` and `/live` and give every other
//! path a 503, so that no admin traffic, however slow, keeps a probe from
//! its answer (a probe's answer is a few bytes: it never holds a slot for
//! longer than its request head takes). Only when the probe lane is full
//! of answering connections too is the new one closed at once. Each of
//! these is counted (`tcplb_admin_connections_dropped_total{reason}`,
//! `tcplb_admin_connections_probe_lane_total`).
//!
//! Every request reads the counters once ([`view::snapshot`]) and renders
//! that snapshot; nothing here runs on the data path.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{
    ALLOW, CACHE_CONTROL, CONNECTION, CONTENT_SECURITY_POLICY, CONTENT_TYPE, HeaderValue,
    REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use log::{debug, warn};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;

use crate::pool::connect::is_local_exhaustion;
use crate::proxy::listener;
use crate::stats::{AccessLogStats, ControlStats, DrainStats, WorkerStats};

pub mod api;
pub mod auth;
pub mod control;
pub mod history;
pub mod metrics;
pub mod page;
pub mod ready;
pub mod status;
pub mod view;

pub use api::Api;
pub use auth::Origin;
pub use control::{Action, Change, Control};
pub use history::History;
pub use ready::{NotReady, Readiness};
pub use view::{WatchList, Watched, WatchedRoute};

/// Largest request head (request line and headers) accepted.
pub const MAX_HEAD: usize = 8 * 1024;
/// Time a client has to send its whole request head (default 5 s; hyper's
/// `header_read_timeout`). The clock starts at accept.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a whole connection may take, head, body, answer and close: a
/// client that reads the answer slowly gives its slot back after this
/// (default 10 s).
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// Admin connections open at once on one endpoint (the TCP one and the Unix
/// socket each have this many; default 64). Beyond it the oldest silent
/// connection is closed to make room; a new one is refused only when every
/// slot is answering a request.
pub const MAX_ADMIN_CONNECTIONS: usize = 64;
/// The probe lane's slots on one endpoint (default 16): connections that
/// found every main slot answering, served `/ready` and `/live` only.
pub const PROBE_SLOTS: usize = 16;
/// Deep enough that a burst of connections waits in the kernel for the
/// accept loop rather than in SYN retransmits.
const BACKLOG: u32 = 256;

/// Binds the admin socket; a bad or busy address is a start-up error.
pub fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    listener::bind(addr, BACKLOG).context("admin endpoint")
}

/// Binds the Unix admin socket at `path` with mode 0600. A stale socket
/// left by an earlier run is removed first; any other file there is an
/// error rather than something to delete.
pub fn bind_unix(path: &Path) -> anyhow::Result<UnixListener> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path)
            .with_context(|| format!("admin socket: cannot remove the stale {}", path.display()))?,
        Ok(_) => anyhow::bail!(
            "admin socket: {} exists and is not a socket",
            path.display()
        ),
        Err(_) => {}
    }
    // The umask keeps others out from the moment the socket exists; the
    // explicit chmod makes the mode 0600 whatever the umask was.
    // SAFETY: umask only swaps the process's file-creation mask.
    let old = unsafe { libc::umask(0o177) };
    let bound = UnixListener::bind(path);
    // SAFETY: as above, restoring the mask.
    unsafe { libc::umask(old) };
    let listener =
        bound.with_context(|| format!("admin socket: cannot bind {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("admin socket: cannot set the mode of {}", path.display()))?;
    Ok(listener)
}

/// Answers admin requests until `shutdown`, read-only (no control API
/// changes). Connections already accepted finish on their own, within
/// [`CONNECTION_TIMEOUT`].
pub async fn serve(listener: TcpListener, watched: WatchList, shutdown: CancellationToken) {
    let api = Api {
        watched,
        control: None,
        token: None,
        stats: Arc::default(),
        history: Arc::default(),
        access_log: Arc::default(),
        workers: Arc::default(),
        readiness: Arc::default(),
        drain: Arc::default(),
    };
    serve_api(listener, Arc::new(api), shutdown).await
}

/// Answers admin requests on the TCP endpoint until `shutdown`, with the
/// control API; write access needs the bearer token.
pub async fn serve_api(listener: TcpListener, api: Arc<Api>, shutdown: CancellationToken) {
    let lanes = Lanes::new(api.stats.clone());
    let http = http();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let Some(slot) = lanes.admit() else {
                    debug!("admin {peer}: every admin slot is answering a request; closing");
                    continue;
                };
                serve_connection(stream, Origin::Tcp(peer), &api, &http, slot);
            }
            Err(e) => accept_failed(&e, &shutdown).await,
        }
    }
}

/// Answers admin requests on the Unix socket until `shutdown`, every one
/// with write access; then removes the socket file at `path`, unless
/// another process put its own there meanwhile (a binary upgrade's new
/// process does).
pub async fn serve_unix(
    listener: UnixListener,
    path: PathBuf,
    api: Arc<Api>,
    shutdown: CancellationToken,
) {
    let identity = |path: &Path| {
        std::fs::symlink_metadata(path)
            .map(|m| (m.dev(), m.ino()))
            .ok()
    };
    let ours = identity(&path);
    let lanes = Lanes::new(api.stats.clone());
    let http = http();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                let Some(slot) = lanes.admit() else {
                    debug!("admin unix socket: every admin slot is answering a request; closing");
                    continue;
                };
                serve_connection(stream, Origin::Unix, &api, &http, slot);
            }
            Err(e) => accept_failed(&e, &shutdown).await,
        }
    }
    if identity(&path) != ours {
        debug!(
            "admin socket {}: another process's now; left in place",
            path.display()
        );
        return;
    }
    if let Err(e) = std::fs::remove_file(&path) {
        warn!("cannot remove the admin socket {}: {e}", path.display());
    }
}

/// Out of descriptors: pause rather than spin. Anything else concerns one
/// connection only: go on.
async fn accept_failed(e: &std::io::Error, shutdown: &CancellationToken) {
    debug!("admin accept failed: {e}");
    if is_local_exhaustion(e) {
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

/// Which slots a connection holds, and so what it is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lane {
    /// The main slots: every route.
    Main,
    /// The probe lane: `/ready` and `/live`, 503 for anything else.
    Probes,
}

/// One endpoint's slots: the main ones, and the probe lane a connection
/// gets when every main slot is answering a request.
struct Lanes {
    /// [`MAX_ADMIN_CONNECTIONS`] slots for every route.
    main: Arc<Slots>,
    /// [`PROBE_SLOTS`] slots for `/ready` and `/live`.
    probes: Arc<Slots>,
    /// Where admissions and refusals are counted.
    stats: Arc<ControlStats>,
}

impl Lanes {
    fn new(stats: Arc<ControlStats>) -> Lanes {
        Lanes::with(MAX_ADMIN_CONNECTIONS, PROBE_SLOTS, stats)
    }

    fn with(main: usize, probes: usize, stats: Arc<ControlStats>) -> Lanes {
        Lanes {
            main: Slots::new(main, Lane::Main, stats.clone()),
            probes: Slots::new(probes, Lane::Probes, stats.clone()),
            stats,
        }
    }

    /// A slot for a connection just accepted: a main one if it can have
    /// one (see [`Slots::take`]), else one of the probe lane's, else none.
    fn admit(&self) -> Option<Arc<Slot>> {
        let counts = &self.stats.connections;
        counts.accepted.fetch_add(1, Relaxed);
        if let Some(slot) = self.main.take() {
            return Some(slot);
        }
        if let Some(slot) = self.probes.take() {
            counts.probe_lane.fetch_add(1, Relaxed);
            return Some(slot);
        }
        counts.count_dropped("over_limit");
        None
    }
}

/// One lane's connection slots: who holds them, and the rule that gives a
/// silent connection's slot to a newer one.
struct Slots {
    /// Connections open at once, at most.
    max: usize,
    /// Which lane these slots are.
    lane: Lane,
    /// The holders. A std mutex held for a few instructions at accept, at
    /// a request head and at close; never across an await, never by the
    /// data path.
    held: Mutex<Held>,
    /// Where admissions, refusals and evictions are counted.
    stats: Arc<ControlStats>,
}

/// The holders of an endpoint's slots.
#[derive(Default)]
struct Held {
    /// Connections whose request head has arrived: being answered.
    answering: usize,
    /// Connections still waiting for their head, oldest first (by accept
    /// order), each with the token that closes it.
    silent: BTreeMap<u64, CancellationToken>,
    /// The next connection's number in accept order.
    next: u64,
}

impl Slots {
    fn new(max: usize, lane: Lane, stats: Arc<ControlStats>) -> Arc<Slots> {
        Arc::new(Slots {
            max,
            lane,
            held: Mutex::default(),
            stats,
        })
    }

    /// A free slot, else the oldest silent connection's (which is closed),
    /// else none: every slot is answering a request.
    fn take(self: &Arc<Self>) -> Option<Arc<Slot>> {
        let counts = &self.stats.connections;
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if held.answering + held.silent.len() >= self.max {
            let (_, oldest) = held.silent.pop_first()?;
            oldest.cancel();
            counts.count_dropped("evicted");
        }
        let id = held.next;
        held.next += 1;
        let close = CancellationToken::new();
        held.silent.insert(id, close.clone());
        drop(held);
        counts.active.fetch_add(1, Relaxed);
        Some(Arc::new(Slot {
            slots: self.clone(),
            id,
            close,
            answering: AtomicBool::new(false),
        }))
    }
}

/// One connection's hold on a slot, given back on drop.
struct Slot {
    /// Whose slot it is.
    slots: Arc<Slots>,
    /// The connection's number in accept order.
    id: u64,
    /// Cancelled when a newer connection takes this one's slot.
    close: CancellationToken,
    /// The request head arrived: the slot can no longer be taken away.
    answering: AtomicBool,
}

impl Slot {
    /// The request head has arrived: from now on this connection keeps its
    /// slot until it is done. Unless it was just evicted, which stands.
    fn answering(&self) {
        if self.answering.load(Relaxed) {
            return;
        }
        let mut held = self
            .slots
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if held.silent.remove(&self.id).is_some() {
            held.answering += 1;
            self.answering.store(true, Relaxed);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self
            .slots
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if self.answering.load(Relaxed) {
            held.answering -= 1;
        } else {
            held.silent.remove(&self.id);
        }
        drop(held);
        self.slots.stats.connections.active.fetch_sub(1, Relaxed);
    }
}

/// Serves one admin connection on its own task, within [`CONNECTION_TIMEOUT`],
/// until it is done or a newer connection takes its slot while it is silent.
fn serve_connection<S>(
    stream: S,
    origin: Origin,
    api: &Arc<Api>,
    http: &http1::Builder,
    slot: Arc<Slot>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let who = origin.who();
    let api = api.clone();
    let counts = api.stats.clone();
    let held = slot.clone();
    let lane = slot.slots.lane;
    let service = service_fn(move |request: Request<Incoming>| {
        held.answering();
        let api = api.clone();
        let origin = origin.clone();
        async move { Ok::<_, Infallible>(route(request, &api, &origin, lane).await) }
    });
    let connection = http.serve_connection(TokioIo::new(stream), service);
    tokio::spawn(async move {
        let done = tokio::select! {
            // Counted where the slot was taken.
            _ = slot.close.cancelled() => {
                debug!("admin {who}: still silent, closed to make room for a newer connection");
                return;
            }
            done = tokio::time::timeout(CONNECTION_TIMEOUT, connection) => done,
        };
        let counts = &counts.connections;
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) if e.is_timeout() => {
                counts.count_dropped("head_timeout");
                debug!("admin {who}: no complete request head within {HEAD_TIMEOUT:?}; closing");
            }
            // Includes heads that hyper answered 400/431 itself.
            Ok(Err(e)) => debug!("admin {who}: {e}"),
            Err(_) => {
                counts.count_dropped("timeout");
                debug!("admin {who}: not done within {CONNECTION_TIMEOUT:?}; closing")
            }
        }
    });
}

/// `/ready` and `/live` first, in either lane; then, in the main lane only,
/// the control API under `/api/` and the reports elsewhere.
async fn route(
    request: Request<Incoming>,
    api: &Api,
    origin: &Origin,
    lane: Lane,
) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    if let Some(response) = probe(request.method(), path, api) {
        return response;
    }
    if lane == Lane::Probes {
        api.stats.connections.count_dropped("over_limit");
        return answer(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "the admin endpoint is busy: every connection slot is answering a request; \
             only /ready and /live are answered now\n"
                .into(),
        );
    }
    if path == "/api" || path.starts_with("/api/") {
        return api::handle(request, api, origin).await;
    }
    let reports = Reports {
        control: Some(&api.stats),
        readiness: Some(&api.readiness),
        drain: Some(&api.drain),
        access_log: Some(&api.access_log),
        workers: Some(&api.workers),
        history: Some(&api.history),
        write_access: match origin {
            Origin::Unix => true,
            Origin::Tcp(_) => api.token.is_some(),
        },
    };
    let query = request.uri().query();
    respond_with(request.method(), path, query, &*api.watched, reports)
}

/// The 405 for a method other than GET and HEAD; `None` for those two.
fn only_get_and_head(method: &Method) -> Option<Response<Full<Bytes>>> {
    if method == Method::GET || method == Method::HEAD {
        return None;
    }
    let mut response = answer(
        StatusCode::METHOD_NOT_ALLOWED,
        "text/plain",
        "only GET and HEAD are allowed\n".into(),
    );
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
    Some(response)
}

/// The answer to `/ready` or `/live`; `None` for any other path.
fn probe(method: &Method, path: &str, api: &Api) -> Option<Response<Full<Bytes>>> {
    if path != "/ready" && path != "/live" {
        return None;
    }
    if let Some(refused) = only_get_and_head(method) {
        return Some(refused);
    }
    if path == "/live" {
        return Some(answer(StatusCode::OK, "text/plain", "live\n".into()));
    }
    let reasons = api.readiness.reasons();
    let status = match reasons.is_empty() {
        true => StatusCode::OK,
        false => StatusCode::SERVICE_UNAVAILABLE,
    };
    Some(answer(status, "text/plain", ready::body(&reasons)))
}

/// What the reporting routes show besides the listeners.
#[derive(Clone, Copy, Default)]
struct Reports<'a> {
    /// The control API's and the endpoint's counters, for `/metrics`.
    control: Option<&'a ControlStats>,
    /// What `/ready` would say, for `/metrics`.
    readiness: Option<&'a Readiness>,
    /// The end of a drain, for `/metrics`.
    drain: Option<&'a DrainStats>,
    /// The access log's losses, for `/metrics`.
    access_log: Option<&'a AccessLogStats>,
    /// Connections per worker thread, for `/metrics`.
    workers: Option<&'a WorkerStats>,
    /// The rings behind `/status/history`.
    history: Option<&'a History>,
    /// Whether this request's way in can write (`/status`'s
    /// `write_access`, which shows the page's buttons).
    write_access: bool,
}

/// hyper's HTTP/1 settings for the admin endpoint.
fn http() -> http1::Builder {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_header_size(MAX_HEAD)
        // The read buffer, so also the most of a request body held at once.
        .max_buf_size(MAX_HEAD)
        // One request per connection: nothing to track between requests.
        .keep_alive(false)
        // "Content-Length", not "content-length": as the endpoint always wrote.
        .title_case_headers(true);
    http
}

/// The answer to `method path`; `watched` is asked only by the routes that
/// report.
#[cfg(test)]
fn respond(
    method: &Method,
    path: &str,
    watched: &dyn Fn() -> Vec<Watched>,
) -> Response<Full<Bytes>> {
    respond_with(method, path, None, watched, Reports::default())
}

/// Like [`respond`], with the query and what else the reports show.
fn respond_with(
    method: &Method,
    path: &str,
    query: Option<&str>,
    watched: &dyn Fn() -> Vec<Watched>,
    reports: Reports,
) -> Response<Full<Bytes>> {
    if let Some(refused) = only_get_and_head(method) {
        return refused;
    }
    if let Some((content_type, body)) = page::asset(path) {
        let mut response = answer(StatusCode::OK, content_type, String::new());
        *response.body_mut() = Full::new(Bytes::from_static(body.as_bytes()));
        let headers = response.headers_mut();
        headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(page::CSP));
        headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
        return response;
    }
    match path {
        "/metrics" => {
            let listeners = watched();
            let mut text = metrics::render_metrics(&view::snapshot(&listeners));
            text.push_str(&metrics::tls::render(&listeners));
            if let Some(stats) = reports.control {
                text.push_str(&metrics::render_control(stats));
            }
            if let Some(readiness) = reports.readiness {
                text.push_str(&metrics::render_readiness(&readiness.reasons()));
            }
            if let Some(stats) = reports.drain {
                text.push_str(&metrics::render_drain(stats));
            }
            if let Some(stats) = reports.access_log {
                text.push_str(&metrics::render_access_log(stats));
            }
            if let Some(stats) = reports.workers {
                text.push_str(&metrics::render_workers(stats));
            }
            answer(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                text,
            )
        }
        "/status" => answer(
            StatusCode::OK,
            "application/json",
            status::render_status(&view::snapshot(&watched()), reports.write_access),
        ),
        "/status/history" => {
            let after = match query.map(history_after).unwrap_or(Ok(0)) {
                Ok(after) => after,
                Err(()) => {
                    return answer(
                        StatusCode::BAD_REQUEST,
                        "text/plain",
                        "the query is ?after=N, N a sample number\n".into(),
                    );
                }
            };
            let body = match reports.history {
                Some(history) => history.render(after, &view::snapshot(&watched())),
                None => History::default().render(after, &[]),
            };
            answer(StatusCode::OK, "application/json", body)
        }
        // Browsers ask for it; nothing to show, and no 404 in their console.
        "/favicon.ico" => answer(StatusCode::NO_CONTENT, "text/plain", String::new()),
        _ => answer(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /, /metrics, /status or /api/v1/pools\n".into(),
        ),
    }
}

/// `after=N` in `/status/history`'s query (other keys are ignored).
fn history_after(query: &str) -> Result<u64, ()> {
    match query
        .split('&')
        .find_map(|pair| pair.strip_prefix("after="))
    {
        Some(n) => n.parse().map_err(|_| ()),
        None => Ok(0),
    }
}

/// A response with the headers every answer carries; hyper adds
/// `Content-Length` from the body (and sends no body for HEAD).
fn answer(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_route_by_method_and_path() {
        let status = |method: Method, path: &str| respond(&method, path, &Vec::new).status();
        assert_eq!(status(Method::GET, "/metrics"), StatusCode::OK);
        assert_eq!(status(Method::GET, "/status"), StatusCode::OK);
        assert_eq!(status(Method::HEAD, "/status"), StatusCode::OK);
        assert_eq!(status(Method::GET, "/"), StatusCode::OK);
        assert_eq!(status(Method::GET, "/status/history"), StatusCode::OK);
        assert_eq!(status(Method::GET, "/nope"), StatusCode::NOT_FOUND);
        let refused = respond(&Method::POST, "/metrics", &Vec::new);
        assert_eq!(refused.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(refused.headers()[ALLOW], "GET, HEAD");
        assert_eq!(
            status(Method::DELETE, "/nope"),
            StatusCode::METHOD_NOT_ALLOWED
        );
        // Only the reporting routes read the listeners.
        let unasked =
            || -> Vec<Watched> { panic!("listeners read for a route that does not report") };
        assert_eq!(
            respond(&Method::GET, "/", &unasked).status(),
            StatusCode::OK
        );
        assert_eq!(
            respond(&Method::GET, "/nope", &unasked).status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            respond(&Method::POST, "/status", &unasked).status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }

    #[test]
    fn a_full_endpoint_evicts_its_oldest_silent_connection_then_opens_the_probe_lane() {
        let stats = Arc::new(ControlStats::default());
        let lanes = Lanes::with(3, 1, stats.clone());
        let dropped = |reason: &str| {
            let i = crate::stats::AdminConnectionStats::REASONS
                .iter()
                .position(|r| *r == reason)
                .unwrap();
            stats.connections.dropped[i].load(Relaxed)
        };
        let lane = |slot: &Arc<Slot>| slot.slots.lane;
        let first = lanes.admit().expect("a free slot");
        let second = lanes.admit().expect("a free slot");
        let third = lanes.admit().expect("a free slot");
        second.answering();
        // Full: the oldest silent one (first) makes room, not the answering one.
        let fourth = lanes.admit().expect("the oldest silent connection's slot");
        assert_eq!(lane(&fourth), Lane::Main);
        assert!(first.close.is_cancelled());
        assert!(!second.close.is_cancelled() && !third.close.is_cancelled());
        assert_eq!(dropped("evicted"), 1);
        // An evicted connection that reaches its head stays evicted.
        first.answering();
        assert!(!first.answering.load(Relaxed));
        drop(first);
        third.answering();
        fourth.answering();
        // Every main slot answers: the probe lane takes the next one, and a
        // silent probe gives its place to a newer one.
        let probe = lanes.admit().expect("the probe lane");
        assert_eq!(lane(&probe), Lane::Probes);
        let newer = lanes.admit().expect("the silent probe's place");
        assert!(probe.close.is_cancelled());
        assert_eq!(dropped("evicted"), 2);
        assert_eq!(stats.connections.probe_lane.load(Relaxed), 2);
        newer.answering();
        assert!(
            lanes.admit().is_none(),
            "every slot of both lanes is answering"
        );
        assert_eq!(dropped("over_limit"), 1);
        // The evicted probe counts until its task lets the slot go.
        assert_eq!(stats.connections.active.load(Relaxed), 5);
        drop((probe, newer));
        drop(third);
        let fifth = lanes.admit().expect("a slot given back");
        assert_eq!(lane(&fifth), Lane::Main);
        assert_eq!(stats.connections.accepted.load(Relaxed), 8);
        drop((second, fourth, fifth));
        assert_eq!(stats.connections.active.load(Relaxed), 0);
        for slots in [&lanes.main, &lanes.probes] {
            let held = slots.held.lock().unwrap();
            assert_eq!((held.answering, held.silent.len()), (0, 0));
        }
    }

    #[test]
    fn the_page_comes_with_its_content_security_policy() {
        for (path, content_type) in [
            ("/", "text/html; charset=utf-8"),
            ("/status.js", "text/javascript; charset=utf-8"),
            ("/status.css", "text/css; charset=utf-8"),
        ] {
            let response = respond(&Method::GET, path, &Vec::new);
            let headers = response.headers();
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            assert_eq!(headers[CONTENT_TYPE], content_type);
            assert_eq!(headers[CONTENT_SECURITY_POLICY], page::CSP);
            assert_eq!(headers[X_CONTENT_TYPE_OPTIONS], "nosniff");
        }
        assert_eq!(
            respond(&Method::GET, "/favicon.ico", &Vec::new).status(),
            StatusCode::NO_CONTENT
        );
    }

    #[test]
    fn history_takes_after_n_and_refuses_anything_else() {
        let history = History::default();
        let get = |query: &str| {
            let reports = Reports {
                history: Some(&history),
                ..Reports::default()
            };
            respond_with(
                &Method::GET,
                "/status/history",
                Some(query),
                &Vec::new,
                reports,
            )
            .status()
        };
        assert_eq!(get("after=12"), StatusCode::OK);
        assert_eq!(get("x=1&after=0"), StatusCode::OK);
        assert_eq!(get(""), StatusCode::OK);
        assert_eq!(get("after=-1"), StatusCode::BAD_REQUEST);
        assert_eq!(get("after=x"), StatusCode::BAD_REQUEST);
        assert_eq!(history_after("after=99999999999"), Ok(99_999_999_999));
    }

    #[test]
    fn every_answer_is_uncached_and_closes() {
        for (method, path) in [
            (Method::GET, "/metrics"),
            (Method::GET, "/nope"),
            (Method::PUT, "/status"),
        ] {
            let response = respond(&method, path, &Vec::new);
            let headers = response.headers();
            assert_eq!(headers[CACHE_CONTROL], "no-store");
            assert_eq!(headers[CONNECTION], "close");
        }
        let metrics = respond(&Method::GET, "/metrics", &Vec::new);
        assert_eq!(
            metrics.headers()[CONTENT_TYPE],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        let status = respond(&Method::GET, "/status", &Vec::new);
        assert_eq!(status.headers()[CONTENT_TYPE], "application/json");
    }
}
