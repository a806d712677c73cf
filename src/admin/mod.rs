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
//! - `GET /metrics`: Prometheus text exposition format 0.0.4 ([`metrics`]).
//! - `GET /status`: the same picture as JSON ([`status`]).
//! - `HEAD` of either: the same headers, no body.
//! - `/api/v1/...`: the control API, JSON ([`api`]).
//! - another path: 404; another method: 405 with `Allow: GET, HEAD`; a
//!   malformed request: 400 and a request head over [`MAX_HEAD`] bytes: 431,
//!   both answered by hyper itself.
//!
//! Slow or many clients cannot pile up: a head not complete within
//! [`HEAD_TIMEOUT`] is closed without an answer, a whole connection is cut
//! after [`CONNECTION_TIMEOUT`], and at most [`MAX_ADMIN_CONNECTIONS`] are
//! served at once (more are closed on accept).
//!
//! Every request reads the counters once ([`view::snapshot`]) and renders
//! that snapshot; nothing here runs on the data path.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ALLOW, CACHE_CONTROL, CONNECTION, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use log::{debug, warn};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::pool::connect::is_local_exhaustion;
use crate::proxy::listener;

pub mod api;
pub mod auth;
pub mod control;
pub mod metrics;
pub mod status;
pub mod view;

pub use api::Api;
pub use auth::Origin;
pub use control::{Action, Change, Control};
pub use view::{WatchList, Watched, WatchedRoute};

/// Largest request head (request line and headers) accepted.
pub const MAX_HEAD: usize = 8 * 1024;
/// Time a client has to send its whole request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a whole connection may take, head, answer and close: a client that
/// reads the answer slowly gives its slot back after this.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// Admin connections served at once; more are closed on accept.
pub const MAX_ADMIN_CONNECTIONS: usize = 16;
const BACKLOG: u32 = 64;

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
    };
    serve_api(listener, Arc::new(api), shutdown).await
}

/// Answers admin requests on the TCP endpoint until `shutdown`, with the
/// control API; write access needs the bearer token.
pub async fn serve_api(listener: TcpListener, api: Arc<Api>, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_ADMIN_CONNECTIONS));
    let http = http();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    debug!("admin {peer}: too many admin connections; closing");
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
    let slots = Arc::new(Semaphore::new(MAX_ADMIN_CONNECTIONS));
    let http = http();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    debug!("admin unix socket: too many admin connections; closing");
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

/// Serves one admin connection on its own task, within [`CONNECTION_TIMEOUT`].
fn serve_connection<S>(
    stream: S,
    origin: Origin,
    api: &Arc<Api>,
    http: &http1::Builder,
    slot: OwnedSemaphorePermit,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let who = origin.who();
    let api = api.clone();
    let service = service_fn(move |request: Request<Incoming>| {
        let api = api.clone();
        let origin = origin.clone();
        async move { Ok::<_, Infallible>(route(request, &api, &origin).await) }
    });
    let connection = http.serve_connection(TokioIo::new(stream), service);
    tokio::spawn(async move {
        match tokio::time::timeout(CONNECTION_TIMEOUT, connection).await {
            Ok(Ok(())) => {}
            // Includes heads that timed out or that hyper
            // answered 400/431 itself.
            Ok(Err(e)) => debug!("admin {who}: {e}"),
            Err(_) => {
                debug!("admin {who}: not done within {CONNECTION_TIMEOUT:?}; closing")
            }
        }
        drop(slot);
    });
}

/// The control API under `/api/`, the reports elsewhere.
async fn route(request: Request<Incoming>, api: &Api, origin: &Origin) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    if path == "/api" || path.starts_with("/api/") {
        return api::handle(request, api, origin).await;
    }
    respond_with(request.method(), path, &*api.watched, Some(&api.stats))
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
    respond_with(method, path, watched, None)
}

/// Like [`respond`]; `/metrics` also shows the control API's counters
/// when `control` is given.
fn respond_with(
    method: &Method,
    path: &str,
    watched: &dyn Fn() -> Vec<Watched>,
    control: Option<&crate::stats::ControlStats>,
) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        let mut response = answer(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET and HEAD are allowed\n".into(),
        );
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match path {
        "/metrics" => {
            let mut text = metrics::render_metrics(&view::snapshot(&watched()));
            if let Some(stats) = control {
                text.push_str(&metrics::render_control(stats));
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
            status::render_status(&view::snapshot(&watched())),
        ),
        _ => answer(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics, /status or /api/v1/pools\n".into(),
        ),
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
        assert_eq!(status(Method::GET, "/"), StatusCode::NOT_FOUND);
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
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            respond(&Method::POST, "/status", &unasked).status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
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
