//! The runtime control API under `/api/v1/`: JSON over the admin endpoint,
//! to list pools and backends and to drain, re-weight, add and remove
//! backends without a reload.
//!
//! It exists so an operator (or `tcplb ctl`) can change the fleet of a
//! running balancer. Routing is by hyper's method and path; bodies are
//! read with a size cap ([`MAX_BODY`], 413 beyond it) and decoded by
//! `serde_json` with unknown fields refused. A request is checked in this
//! order, and the first failure answers it with `{"error":"..."}`: route
//! (404), method (405), write access (403, see [`super::auth`]), body
//! (413, 408 after [`BODY_TIMEOUT`], 400), then the pool and backend (404, 409) by the runtime through
//! [`Control`]. A refused request changes nothing; each refusal and each
//! applied change is counted in [`ControlStats`].
//!
//! | route | method | body |
//! |---|---|---|
//! | `/api/v1/pools` | GET | |
//! | `/api/v1/pools/{pool}/backends` | GET | |
//! | `/api/v1/pools/{pool}/backends` | POST | `{"address":"HOST:PORT","weight":N,"maxconn":N,"backup":bool}` |
//! | `/api/v1/pools/{pool}/backends/{backend}` | DELETE | optional `{"deadline":"5m"}` |
//! | `/api/v1/pools/{pool}/backends/{backend}/drain` | POST | optional `{"deadline":"5m"}` |
//! | `/api/v1/pools/{pool}/backends/{backend}/maintenance` | POST | none or `{}` |
//! | `/api/v1/pools/{pool}/backends/{backend}/ready` | POST | none or `{}` |
//! | `/api/v1/pools/{pool}/backends/{backend}/weight` | PUT | `{"weight":N}`, N from 1 to 10000 |
//! | `/api/v1/pools/{pool}/backends/{backend}/close-connections` | POST | none or `{}` |
//! | `/api/v1/connections?limit=N&after=ID&listener=POOL&backend=NAME` | GET | |
//! | `/api/v1/connections/{id}` | DELETE | none or `{}` |
//! | `/api/v1/ready` | GET, PUT | `{"ready":bool}` (PUT) |
//!
//! `/api/v1/ready` is this instance's readiness as `/ready` reports it:
//! GET shows it (`ready`, the operator's word `operator`, every reason for
//! a 503 in `reasons`); PUT with `{"ready":false}` makes `/ready` answer
//! 503 until `{"ready":true}` (`tcplb ctl ready off|on`). It changes no
//! pool: it asks the layer in front of the fleet to send clients elsewhere.
//!
//! `{pool}` and `{backend}` are names, percent-decoded (`%5B%3A%3A1%5D%3A80`
//! is `[::1]:80`). The connection list is paginated by id: `limit` (1 to
//! [`MAX_PAGE`], default [`DEFAULT_PAGE`]) connections with an id above
//! `after` (default 0), in id order; the answer's `next` is the `after` of
//! the next page, null on the last one. Ids never repeat, so a walk sees
//! every connection that stayed open throughout exactly once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{ALLOW, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use log::debug;
use percent_encoding::percent_decode_str;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::auth::{self, Origin};
use super::control::{Action, Change, ConnectionInfo, ConnectionQuery, Control, MAX_WEIGHT};
use super::view::{HealthDetail, Watched};
use super::{Readiness, WatchList, answer};
use crate::config::{AdminState, ServiceConfig, parse_duration, resolve};
use crate::pool::Pool;
use crate::pool::backend::Backend;
use crate::pool::overlay::{NewBackend, Refused};
use crate::stats::{AccessLogStats, ControlStats, DrainStats, WorkerStats};

/// Largest request body accepted (default 64 KiB; 413 beyond it).
pub const MAX_BODY: usize = 64 * 1024;
/// Time a client has to send its whole body once its head is in (default
/// 5 s; 408 after it), so a trickled body gives its slot back early.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections listed per page when `limit` is not given.
pub const DEFAULT_PAGE: usize = 100;
/// The largest `limit` of the connection list.
pub const MAX_PAGE: usize = 1000;

/// What the API needs besides the request.
pub struct Api {
    /// The pools to report and change.
    pub watched: WatchList,
    /// Applies changes; `None` makes every change 503 (a read-only embedding).
    pub control: Option<Arc<dyn Control>>,
    /// The bearer token that gives TCP requests write access.
    pub token: Option<String>,
    /// Changes and refusals, for /metrics.
    pub stats: Arc<ControlStats>,
    /// The last 15 minutes for the status page, sampled by
    /// [`super::history::sample_every_second`] (which the runtime starts).
    pub history: Arc<super::History>,
    /// The access log's losses, for /metrics.
    pub access_log: Arc<AccessLogStats>,
    /// Open connections per worker thread and hand-overs, for /metrics.
    pub workers: Arc<WorkerStats>,
    /// What `GET /ready` says; the runtime sets it.
    pub readiness: Arc<Readiness>,
    /// How the end of a drain went, for /metrics.
    pub drain: Arc<DrainStats>,
}

/// A pool in `GET /api/v1/pools`.
#[derive(Serialize)]
struct PoolView {
    /// The pool's name.
    name: String,
    /// Where its listener is bound.
    listen: String,
    /// How it picks a backend.
    strategy: String,
    /// Its members.
    backends: Vec<BackendItem>,
}

/// A backend in the API's lists.
#[derive(Serialize)]
struct BackendItem {
    /// `HOST:PORT` as configured or added.
    name: String,
    /// The address it resolved to.
    address: String,
    /// The operator's wish: "ready", "drain" or "maintenance".
    admin_state: String,
    /// The state in force: the operator's, or while the operator says
    /// ready, the agent's.
    state: String,
    /// "up" or "down", from the checks (and the agent).
    health: &'static str,
    /// Its share of connections, as the operator set it.
    weight: u32,
    /// Its share now, less while slow start ramps it up.
    effective_weight: f64,
    /// Connections open to it now.
    active: u64,
    /// Used only while no primary is usable.
    backup: bool,
    /// When an operator's drain closes what is left (RFC 3339, UTC), or null.
    drain_deadline: Option<String>,
    /// The last check, the last change of health, the agent's word.
    #[serde(flatten)]
    detail: HealthDetail,
}

/// An API failure: the status and the one line for `{"error":..}`.
struct Failure {
    /// The 4xx (or 503).
    status: StatusCode,
    /// The `reason` label it is counted under.
    reason: &'static str,
    /// The one line for `{"error":..}`.
    message: String,
}

impl Failure {
    fn new(status: StatusCode, message: impl Into<String>) -> Failure {
        let reason = match status {
            StatusCode::FORBIDDEN => "forbidden",
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
            StatusCode::CONFLICT => "conflict",
            StatusCode::PAYLOAD_TOO_LARGE => "too_large",
            StatusCode::SERVICE_UNAVAILABLE => "unavailable",
            StatusCode::REQUEST_TIMEOUT => "timeout",
            _ => "bad_request",
        };
        Failure {
            status,
            reason,
            message: message.into(),
        }
    }

    fn bad(message: impl Into<String>) -> Failure {
        Failure::new(StatusCode::BAD_REQUEST, message)
    }
}

/// A path under `/api/v1/`, split into names.
enum Route {
    /// `pools`: GET.
    Pools,
    /// `pools/{pool}/backends`: GET, POST (add).
    Backends {
        /// The pool's name.
        pool: String,
    },
    /// `pools/{pool}/backends/{backend}`: DELETE.
    Backend {
        /// The pool's name.
        pool: String,
        /// The backend's name.
        backend: String,
    },
    /// `connections`: GET (one page).
    Connections,
    /// `connections/{id}`: DELETE (close it).
    Connection {
        /// The connection's id.
        id: u64,
    },
    /// `ready`: GET, PUT (the operator's word on this instance's readiness).
    Ready,
    /// `pools/{pool}/backends/{backend}/{verb}`.
    Verb {
        /// The pool's name.
        pool: String,
        /// The backend's name.
        backend: String,
        /// What to do to it.
        verb: Verb,
    },
}

/// The last segment of a backend route.
#[derive(Clone, Copy)]
enum Verb {
    /// POST: drain, with an optional deadline.
    Drain,
    /// POST: maintenance.
    Maintenance,
    /// POST: back to ready.
    Ready,
    /// PUT: a new weight.
    Weight,
    /// POST: close every open connection to it.
    CloseConnections,
}

/// Answers one request under `/api/`.
pub async fn handle(
    request: Request<Incoming>,
    api: &Api,
    origin: &Origin,
) -> Response<Full<Bytes>> {
    match route_and_apply(request, api, origin).await {
        Ok(response) => response,
        Err((failure, allow)) => {
            api.stats.count_rejected(failure.reason);
            debug!(
                "admin {}: refused ({}): {}",
                origin.who(),
                failure.status.as_u16(),
                failure.message
            );
            let mut response = json(
                failure.status,
                &ErrorBody {
                    error: &failure.message,
                },
            );
            if let Some(allow) = allow {
                response
                    .headers_mut()
                    .insert(ALLOW, HeaderValue::from_static(allow));
            }
            response
        }
    }
}

/// `{"error":"..."}`.
#[derive(Serialize)]
struct ErrorBody<'a> {
    /// What was wrong, in one line.
    error: &'a str,
}

type Refusal = (Failure, Option<&'static str>);

async fn route_and_apply(
    request: Request<Incoming>,
    api: &Api,
    origin: &Origin,
) -> Result<Response<Full<Bytes>>, Refusal> {
    let route = parse_route(request.uri().path()).map_err(|f| (f, None))?;
    let method = request.method().clone();
    let allowed: &'static str = match &route {
        Route::Pools | Route::Connections => "GET",
        Route::Ready => "GET, PUT",
        Route::Backends { .. } => "GET, POST",
        Route::Backend { .. } | Route::Connection { .. } => "DELETE",
        Route::Verb {
            verb: Verb::Weight, ..
        } => "PUT",
        Route::Verb { .. } => "POST",
    };
    if !allowed.split(", ").any(|m| m == method.as_str()) {
        let failure = Failure::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed here: use {allowed}"),
        );
        return Err((failure, Some(allowed)));
    }
    if method == Method::GET {
        return read(&route, api, request.uri().query()).map_err(|f| (f, None));
    }
    if !auth::may_write(origin, request.headers(), api.token.as_deref()) {
        let failure = Failure::new(
            StatusCode::FORBIDDEN,
            "changes need write access: the admin socket (--admin-socket), or \
             `Authorization: Bearer TOKEN` with the token of --admin-token-file",
        );
        return Err((failure, None));
    }
    let body = read_body(request.into_body())
        .await
        .map_err(|f| (f, None))?;
    match route {
        Route::Ready => set_ready(&body, api, origin),
        Route::Connection { id } => close_connection(id, &body, api, origin),
        Route::Verb {
            pool,
            backend,
            verb: Verb::CloseConnections,
        } => close_backend_connections(&pool, &backend, &body, api, origin),
        route => match decode_change(route, &body, origin).await {
            Ok(change) => apply(change, api),
            Err(failure) => Err(failure),
        },
    }
    .map_err(|f| (f, None))
}

/// Splits `/api/v1/...` into a route; names are percent-decoded.
fn parse_route(path: &str) -> Result<Route, Failure> {
    let not_found = || Failure::new(StatusCode::NOT_FOUND, format!("no API route {path}"));
    let rest = path.strip_prefix("/api/v1/").ok_or_else(not_found)?;
    let parts: Vec<&str> = rest.split('/').collect();
    let name = |segment: &str| -> Result<String, Failure> {
        let text = percent_decode_str(segment)
            .decode_utf8()
            .map_err(|_| Failure::bad(format!("{segment:?} is not UTF-8 once decoded")))?;
        if text.is_empty() {
            return Err(not_found());
        }
        Ok(text.into_owned())
    };
    Ok(match parts[..] {
        ["pools"] => Route::Pools,
        ["ready"] => Route::Ready,
        ["connections"] => Route::Connections,
        ["connections", id] => Route::Connection {
            id: connection_id(id)?,
        },
        ["pools", pool, "backends"] => Route::Backends { pool: name(pool)? },
        ["pools", pool, "backends", backend] => Route::Backend {
            pool: name(pool)?,
            backend: name(backend)?,
        },
        ["pools", pool, "backends", backend, verb] => {
            let verb = match verb {
                "drain" => Verb::Drain,
                "maintenance" => Verb::Maintenance,
                "ready" => Verb::Ready,
                "weight" => Verb::Weight,
                "close-connections" => Verb::CloseConnections,
                _ => return Err(not_found()),
            };
            Route::Verb {
                pool: name(pool)?,
                backend: name(backend)?,
                verb,
            }
        }
        _ => return Err(not_found()),
    })
}

/// A connection id in a path: a decimal number.
fn connection_id(segment: &str) -> Result<u64, Failure> {
    segment
        .parse::<u64>()
        .ok()
        .filter(|_| segment.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| {
            Failure::bad(format!(
                "bad connection id {segment:?}: expected a number from GET /api/v1/connections"
            ))
        })
}

/// The GET routes.
fn read(route: &Route, api: &Api, query: Option<&str>) -> Result<Response<Full<Bytes>>, Failure> {
    if let Route::Connections = route {
        return list_connections(api, query);
    }
    if let Route::Ready = route {
        return Ok(readiness(api, None));
    }
    let watched = (api.watched)();
    match route {
        Route::Pools => {
            /// `{"pools":[...]}`.
            #[derive(Serialize)]
            struct Pools {
                /// Every pool, in configuration order.
                pools: Vec<PoolView>,
            }
            let pools = every_pool(&watched)
                .map(|(name, listen, pool)| pool_view(name, listen, pool))
                .collect();
            Ok(json(StatusCode::OK, &Pools { pools }))
        }
        Route::Backends { pool } => {
            let (name, listen, found) = every_pool(&watched)
                .find(|(name, _, _)| *name == pool)
                .ok_or_else(|| Failure::new(StatusCode::NOT_FOUND, format!("no pool {pool}")))?;
            /// `{"pool":..,"backends":[...]}`.
            #[derive(Serialize)]
            struct Backends {
                /// The pool's name.
                pool: String,
                /// Its members.
                backends: Vec<BackendItem>,
            }
            let view = pool_view(name, listen, found);
            Ok(json(
                StatusCode::OK,
                &Backends {
                    pool: view.name,
                    backends: view.backends,
                },
            ))
        }
        _ => Err(Failure::new(StatusCode::METHOD_NOT_ALLOWED, "not readable")),
    }
}

/// Every pool with its name and listener: each listener's own, then its
/// TLS routes', in configuration order.
fn every_pool(watched: &[Watched]) -> impl Iterator<Item = (&str, SocketAddr, &Pool)> {
    watched.iter().flat_map(|w| {
        let routes = w
            .routes
            .iter()
            .map(move |r| (r.name.as_str(), w.listen, &*r.pool));
        std::iter::once((w.name.as_str(), w.listen, &*w.pool)).chain(routes)
    })
}

fn pool_view(name: &str, listen: SocketAddr, pool: &Pool) -> PoolView {
    let state = pool.load();
    let mut backends: Vec<BackendItem> = Vec::new();
    for b in &state.backends {
        if !backends.iter().any(|seen| seen.name == b.name()) {
            backends.push(backend_item(b, &state.config));
        }
    }
    PoolView {
        name: name.to_string(),
        listen: listen.to_string(),
        strategy: state.config.strategy.to_string(),
        backends,
    }
}

fn backend_item(b: &Backend, config: &ServiceConfig) -> BackendItem {
    let effective = f64::from(b.weight()) * b.ramp(config.slow_start);
    BackendItem {
        name: b.name().to_string(),
        address: b.addr().to_string(),
        admin_state: b.admin_state().to_string(),
        state: b.state().to_string(),
        health: if b.is_up() { "up" } else { "down" },
        weight: b.configured_weight(),
        effective_weight: if effective.is_finite() {
            effective
        } else {
            0.0
        },
        active: b.active(),
        backup: b.is_backup(),
        drain_deadline: b
            .drain_deadline()
            .map(|d| humantime::format_rfc3339_seconds(d).to_string()),
        detail: HealthDetail::read(
            b,
            config.active_check().kind(),
            config.health.agent.is_some(),
        ),
    }
}

/// The body, up to [`MAX_BODY`] bytes within [`BODY_TIMEOUT`].
async fn read_body(body: Incoming) -> Result<Bytes, Failure> {
    let collect = Limited::new(body, MAX_BODY).collect();
    let Ok(read) = tokio::time::timeout(BODY_TIMEOUT, collect).await else {
        return Err(Failure::new(
            StatusCode::REQUEST_TIMEOUT,
            format!("the body did not arrive within {BODY_TIMEOUT:?}"),
        ));
    };
    match read {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(Failure::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is over {MAX_BODY} bytes"),
        )),
        Err(e) => Err(Failure::bad(format!("cannot read the body: {e}"))),
    }
}

/// `{"deadline":"5m"}`, for drain and remove.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeadlineBody {
    /// When to close what is left, e.g. "5m" (`parse_duration`'s syntax).
    deadline: Option<String>,
}

/// `{"ready":bool}`, for this instance's readiness.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadyBody {
    /// `false`: `/ready` answers 503 until `true`.
    ready: bool,
}

/// `{}`, for maintenance and ready.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EmptyBody {}

/// `{"weight":N}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WeightBody {
    /// The new weight; wider than u32 so an out-of-range one gets its own message.
    weight: u64,
}

/// `{"address":"HOST:PORT","weight":N,"maxconn":N,"backup":bool}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddBody {
    /// `HOST:PORT`: also the backend's name.
    address: String,
    /// Its share; 1 when absent.
    weight: Option<u64>,
    /// Its connection limit; unlimited when absent.
    maxconn: Option<u64>,
    /// A backup; false when absent.
    backup: Option<bool>,
}

/// Decodes a JSON body; an empty one is `T::default()` when `empty` is
/// given, else an error.
fn decode<T: DeserializeOwned>(body: &[u8], empty: Option<T>) -> Result<T, Failure> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return empty.ok_or_else(|| Failure::bad("a JSON body is required"));
    }
    serde_json::from_slice(body).map_err(|e| Failure::bad(format!("bad JSON body: {e}")))
}

fn deadline(body: DeadlineBody) -> Result<Option<Duration>, Failure> {
    body.deadline
        .map(|d| parse_duration(&d).map_err(|e| Failure::bad(format!("bad deadline: {e}"))))
        .transpose()
}

fn weight(n: u64, key: &str) -> Result<u32, Failure> {
    u32::try_from(n)
        .ok()
        .filter(|w| (1..=MAX_WEIGHT).contains(w))
        .ok_or_else(|| Failure::bad(format!("{key} {n} is out of range: 1 to {MAX_WEIGHT}")))
}

/// The change a write request asks for, checked for form.
async fn decode_change(route: Route, body: &[u8], origin: &Origin) -> Result<Change, Failure> {
    let who = origin.who();
    let (pool, backend, action) = match route {
        Route::Verb {
            pool,
            backend,
            verb,
        } => {
            let action = match verb {
                Verb::Drain => Action::Drain {
                    deadline: deadline(decode(body, Some(DeadlineBody::default()))?)?,
                },
                Verb::Maintenance => {
                    decode(body, Some(EmptyBody::default()))?;
                    Action::Maintenance
                }
                Verb::Ready => {
                    decode(body, Some(EmptyBody::default()))?;
                    Action::Ready
                }
                Verb::Weight => {
                    let body: WeightBody = decode(body, None)?;
                    Action::Weight(weight(body.weight, "weight")?)
                }
                // Not a change to the pool; answered before this.
                Verb::CloseConnections => return Err(Failure::bad("nothing to change here")),
            };
            (pool, backend, action)
        }
        Route::Backend { pool, backend } => {
            let body: DeadlineBody = decode(body, Some(DeadlineBody::default()))?;
            (
                pool,
                backend,
                Action::Remove {
                    deadline: deadline(body)?,
                },
            )
        }
        Route::Backends { pool } => {
            let body: AddBody = decode(body, None)?;
            let new = new_backend(body).await?;
            (pool, new.spec.name.clone(), Action::Add(new))
        }
        Route::Pools | Route::Connections | Route::Connection { .. } | Route::Ready => {
            return Err(Failure::bad("nothing to change here"));
        }
    };
    Ok(Change {
        pool,
        backend,
        action,
        who,
    })
}

/// The backend an add asks for, its address resolved (off the runtime's
/// thread: a host name may need DNS).
async fn new_backend(body: AddBody) -> Result<NewBackend, Failure> {
    let address = body.address;
    if address.is_empty() || address.trim() != address || address.contains(['=', ',', '/', ' ']) {
        return Err(Failure::bad(format!(
            "bad address {address:?}: expected HOST:PORT"
        )));
    }
    let text = address.clone();
    let resolved = tokio::task::spawn_blocking(move || resolve(&text))
        .await
        .map_err(|_| Failure::bad("address resolution failed"))?
        .map_err(|e| Failure::bad(format!("bad address {address:?}: {e}")))?;
    if resolved.port() == 0 {
        return Err(Failure::bad(format!(
            "bad address {address:?}: port 0 is not a backend port"
        )));
    }
    let weight_given = body.weight.is_some();
    let spec = crate::config::BackendSpec {
        name: address,
        addr: resolved,
        weight: body
            .weight
            .map(|w| weight(w, "weight"))
            .transpose()?
            .unwrap_or(1),
        max_conns: body
            .maxconn
            .map(|n| {
                u32::try_from(n)
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| Failure::bad(format!("maxconn {n} is out of range: from 1")))
            })
            .transpose()?,
        admin_state: AdminState::Ready,
        backup: body.backup.unwrap_or(false),
        check_addr: None,
        check_port: None,
        source: None,
    };
    Ok(NewBackend { spec, weight_given })
}

/// The runtime, or 503 for a read-only embedding.
fn control(api: &Api) -> Result<&Arc<dyn Control>, Failure> {
    api.control.as_ref().ok_or_else(|| {
        Failure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "this admin endpoint cannot change anything",
        )
    })
}

/// The runtime's refusal as an API failure.
fn refused(refusal: Refused) -> Failure {
    match refusal {
        Refused::NotFound(m) => Failure::new(StatusCode::NOT_FOUND, m),
        Refused::Conflict(m) => Failure::new(StatusCode::CONFLICT, m),
    }
}

/// The query of `GET /api/v1/connections`.
fn connection_query(query: Option<&str>) -> Result<ConnectionQuery, Failure> {
    let mut q = ConnectionQuery {
        limit: DEFAULT_PAGE,
        ..ConnectionQuery::default()
    };
    for pair in query.unwrap_or_default().split('&') {
        if pair.is_empty() {
            continue;
        }
        let (key, raw) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode_str(raw)
            .decode_utf8()
            .map_err(|_| Failure::bad(format!("{raw:?} is not UTF-8 once decoded")))?;
        let name = || -> Result<Option<String>, Failure> {
            match value.is_empty() {
                true => Err(Failure::bad(format!("{key} needs a value"))),
                false => Ok(Some(value.to_string())),
            }
        };
        match key {
            "limit" => {
                q.limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE).contains(n))
                    .ok_or_else(|| {
                        Failure::bad(format!("limit {value:?} is out of range: 1 to {MAX_PAGE}"))
                    })?
            }
            "after" => {
                q.after = value
                    .parse()
                    .map_err(|_| Failure::bad(format!("after {value:?} is not a connection id")))?
            }
            "listener" => q.listener = name()?,
            "backend" => q.backend = name()?,
            other => {
                return Err(Failure::bad(format!(
                    "unknown query parameter {other:?}: use limit, after, listener or backend"
                )));
            }
        }
    }
    Ok(q)
}

/// A connection in `GET /api/v1/connections`.
#[derive(Serialize)]
struct ConnectionItem {
    /// Its id: the cursor, and what DELETE takes.
    id: u64,
    /// The client's `IP:PORT`.
    client: String,
    /// Its listener's pool name.
    listener: String,
    /// Where its listener is bound.
    listen: String,
    /// The TLS route that picked its pool, or null.
    route: Option<String>,
    /// The backend it is connected to, or null while it waits or connects.
    backend: Option<String>,
    /// When it was accepted (RFC 3339, UTC, milliseconds).
    started: String,
    /// How long it has been open, in ms.
    age_ms: u64,
    /// How long nothing has moved either way, in ms.
    idle_ms: u64,
    /// Bytes client to backend so far.
    sent: u64,
    /// Bytes backend to client so far.
    received: u64,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl From<&ConnectionInfo> for ConnectionItem {
    fn from(c: &ConnectionInfo) -> Self {
        ConnectionItem {
            id: c.id,
            client: c.client.to_string(),
            listener: c.listener.clone(),
            listen: c.listen.to_string(),
            route: c.route.clone(),
            backend: c.backend.clone(),
            started: humantime::format_rfc3339_millis(c.started).to_string(),
            age_ms: millis(c.age),
            idle_ms: millis(c.idle),
            sent: c.sent,
            received: c.received,
        }
    }
}

/// `GET /api/v1/connections`: one page.
fn list_connections(api: &Api, query: Option<&str>) -> Result<Response<Full<Bytes>>, Failure> {
    let query = connection_query(query)?;
    let page = control(api)?.connections(&query).map_err(refused)?;
    /// `{"open":N,"connections":[...],"next":ID}`.
    #[derive(Serialize)]
    struct Page {
        /// Open connections in all, whatever the query.
        open: usize,
        /// This page, in id order.
        connections: Vec<ConnectionItem>,
        /// The `after` of the next page; null on the last one.
        next: Option<u64>,
    }
    let next = page.connections.last().map(|c| c.id).filter(|_| page.more);
    Ok(json(
        StatusCode::OK,
        &Page {
            open: page.open,
            connections: page.connections.iter().map(ConnectionItem::from).collect(),
            next,
        },
    ))
}

/// `DELETE /api/v1/connections/{id}`.
fn close_connection(
    id: u64,
    body: &[u8],
    api: &Api,
    origin: &Origin,
) -> Result<Response<Full<Bytes>>, Failure> {
    decode(body, Some(EmptyBody::default()))?;
    let closed = control(api)?
        .close_connection(id, &origin.who())
        .map_err(refused)?;
    api.stats.count_change("close");
    /// The answer to a close.
    #[derive(Serialize)]
    struct Closed<'a> {
        /// The connection as it was.
        connection: ConnectionItem,
        /// "close".
        action: &'a str,
        /// What happened, in one line.
        change: &'a str,
    }
    Ok(json(
        StatusCode::OK,
        &Closed {
            connection: ConnectionItem::from(&closed),
            action: "close",
            change: "closing",
        },
    ))
}

/// `POST .../backends/{backend}/close-connections`.
fn close_backend_connections(
    pool: &str,
    backend: &str,
    body: &[u8],
    api: &Api,
    origin: &Origin,
) -> Result<Response<Full<Bytes>>, Failure> {
    decode(body, Some(EmptyBody::default()))?;
    let closed = control(api)?
        .close_backend_connections(pool, backend, &origin.who())
        .map_err(refused)?;
    api.stats.count_change("close");
    Ok(json(
        StatusCode::OK,
        &Done {
            pool,
            backend,
            action: "close",
            change: &format!("closing {closed} connection(s)"),
        },
    ))
}

/// `GET /api/v1/ready`, and the answer to a PUT (with what changed).
fn readiness(api: &Api, change: Option<&str>) -> Response<Full<Bytes>> {
    /// `{"ready":..,"operator":..,"reasons":[..]}`.
    #[derive(Serialize)]
    struct Readiness<'a> {
        /// Whether `GET /ready` answers 200 now.
        ready: bool,
        /// The operator's word: "on", or "off" after `ready off`.
        operator: &'static str,
        /// Why `/ready` answers 503 (`starting`, `shutting_down`,
        /// `operator`, `no_usable_backend`); empty when it answers 200.
        reasons: Vec<&'static str>,
        /// `/ready`'s body, one line.
        says: String,
        /// What a PUT changed, in one line; left out of a GET.
        #[serde(skip_serializing_if = "Option::is_none")]
        change: Option<&'a str>,
    }
    let reasons = api.readiness.reasons();
    json(
        StatusCode::OK,
        &Readiness {
            ready: reasons.is_empty(),
            operator: if api.readiness.is_operator_off() {
                "off"
            } else {
                "on"
            },
            reasons: reasons.iter().map(|r| r.label()).collect(),
            says: super::ready::body(&reasons).trim_end().to_string(),
            change,
        },
    )
}

/// `PUT /api/v1/ready`: the runtime records the operator's word (logged,
/// kept with the other runtime changes) and `/ready` follows it.
fn set_ready(body: &[u8], api: &Api, origin: &Origin) -> Result<Response<Full<Bytes>>, Failure> {
    let ReadyBody { ready } = decode(body, None)?;
    let change = control(api)?.set_ready(ready, &origin.who());
    api.stats
        .count_change(if ready { "ready_on" } else { "ready_off" });
    Ok(readiness(api, Some(&change)))
}

/// The answer to a change.
#[derive(Serialize)]
struct Done<'a> {
    /// The pool's name.
    pool: &'a str,
    /// The backend's name.
    backend: &'a str,
    /// What was asked ("drain", "weight", ...).
    action: &'a str,
    /// What changed, in one line ("state ready -> drain").
    change: &'a str,
}

/// Hands `change` to the runtime and reports the outcome.
fn apply(change: Change, api: &Api) -> Result<Response<Full<Bytes>>, Failure> {
    let control = control(api)?;
    let action = change.action.name();
    let (pool, backend) = (change.pool.clone(), change.backend.clone());
    let status = match change.action {
        Action::Add(_) => StatusCode::CREATED,
        _ => StatusCode::OK,
    };
    match control.change(change) {
        Ok(summary) => {
            api.stats.count_change(action);
            Ok(json(
                status,
                &Done {
                    pool: &pool,
                    backend: &backend,
                    action,
                    change: &summary,
                },
            ))
        }
        Err(refusal) => Err(refused(refusal)),
    }
}

fn json(status: StatusCode, value: &impl Serialize) -> Response<Full<Bytes>> {
    // Plain structs of strings and numbers always serialise.
    let mut body = serde_json::to_string(value).unwrap_or_else(|_| "{}".into());
    body.push('\n');
    answer(status, "application/json", body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_split_and_decode_names() {
        let Ok(Route::Verb { pool, backend, .. }) =
            parse_route("/api/v1/pools/web/backends/%5B%3A%3A1%5D%3A80/drain")
        else {
            panic!("not a verb route");
        };
        assert_eq!((pool.as_str(), backend.as_str()), ("web", "[::1]:80"));
        assert!(matches!(parse_route("/api/v1/pools"), Ok(Route::Pools)));
        for bad in [
            "/api/v1/pools/",
            "/api/v1/pool",
            "/api/v2/pools",
            "/api/v1/pools//backends",
            "/api/v1/pools/web/backends/x/reboot",
            "/api/v1/pools/web/backends/x/drain/now",
        ] {
            let e = parse_route(bad).err().expect(bad);
            assert_eq!(e.status, StatusCode::NOT_FOUND, "{bad}");
        }
        let e = parse_route("/api/v1/pools/%FF/backends").err().unwrap();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(matches!(
            parse_route("/api/v1/connections/42"),
            Ok(Route::Connection { id: 42 })
        ));
        assert!(matches!(
            parse_route("/api/v1/connections"),
            Ok(Route::Connections)
        ));
        assert!(matches!(
            parse_route("/api/v1/pools/web/backends/b/close-connections"),
            Ok(Route::Verb {
                verb: Verb::CloseConnections,
                ..
            })
        ));
        for bad in ["abc", "-1", "+1", "1.5", "99999999999999999999", "%31"] {
            let e = parse_route(&format!("/api/v1/connections/{bad}"))
                .err()
                .expect(bad);
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{bad}");
        }
        let e = parse_route("/api/v1/connections/1/x").err().unwrap();
        assert_eq!(e.status, StatusCode::NOT_FOUND);
    }

    #[test]
    fn connection_queries_are_strict() {
        let q = connection_query(None).ok().unwrap();
        assert_eq!((q.limit, q.after), (DEFAULT_PAGE, 0));
        let q = connection_query(Some(
            "limit=5&after=17&listener=web&backend=%5B%3A%3A1%5D%3A80",
        ))
        .ok()
        .unwrap();
        assert_eq!((q.limit, q.after), (5, 17));
        assert_eq!(q.listener.as_deref(), Some("web"));
        assert_eq!(q.backend.as_deref(), Some("[::1]:80"));
        for bad in [
            "limit=0",
            "limit=1001",
            "limit=x",
            "after=-1",
            "after=",
            "listener=",
            "sort=id",
            "limit=%FF",
        ] {
            assert!(connection_query(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn bodies_are_strict() {
        assert!(decode::<DeadlineBody>(b"", Some(DeadlineBody::default())).is_ok());
        assert!(decode::<EmptyBody>(b"{}", Some(EmptyBody::default())).is_ok());
        for bad in [&b"{"[..], b"{\"deadline\":5}", b"{\"dead\":\"1s\"}", b"[]"] {
            assert!(
                decode::<DeadlineBody>(bad, Some(DeadlineBody::default())).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(decode::<WeightBody>(b"", None).is_err());
        assert!(decode::<WeightBody>(b"{\"weight\":-1}", None).is_err());
        assert_eq!(weight(10_000, "weight").ok(), Some(10_000));
        assert!(weight(0, "weight").is_err());
        assert!(weight(10_001, "weight").is_err());
        assert!(weight(u64::MAX, "weight").is_err());
        let d = deadline(DeadlineBody {
            deadline: Some("1m 30s".into()),
        });
        assert_eq!(d.ok().flatten(), Some(Duration::from_secs(90)));
        assert!(
            deadline(DeadlineBody {
                deadline: Some("soon".into())
            })
            .is_err()
        );
    }
}
