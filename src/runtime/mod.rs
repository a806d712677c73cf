//! The runtime: builds every listener with its pool and prober from a
//! [`Config`], runs them on the [`workers`], applies live reloads, and on
//! shutdown stops accepting and drains open connections ([`drain`]: the
//! shutdown delay first, the drain's end spread). [`signals`] turns
//! SIGHUP, SIGINT and SIGTERM into reloads and shutdown, and SIGUSR2 into
//! a binary [`upgrade`]; a start may take its sockets over from an old
//! process or from [`systemd`] instead of binding. [`check`] is `tcplb
//! check`, whose checks reloads run too.
//!
//! Binding is separate from running so start-up errors (a port in use)
//! surface before anything is served, and so tests can learn the port.
//! A reload binds every new listener before it changes anything, so a
//! failed reload leaves the old configuration untouched. Shutdown arrives
//! as a future ([`Balancer::run_until`]), so tests pass their own; that
//! future (SIGTERM) runs the shutdown delay, the shutdown token alone (an
//! upgrade's hand-over, an embedding) does not.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context;
use log::{error, info, warn};
use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin;
use crate::config::{AccessLogConfig, Config, Protocol, ServiceConfig};
use crate::pool::Pool;
use crate::pool::discovery::dns::{Discovery, Watching};
use crate::pool::health::active::Prober;
use crate::pool::overlay::Overlay;
use crate::proxy::access_log::writer::{Reopen, Writer};
use crate::proxy::access_log::{self, AccessLog};
use crate::proxy::connections::Connections;
use crate::proxy::connections::ids::IdSequence;
use crate::proxy::moving::Mover;
use crate::proxy::spread::Spread;
use crate::proxy::tls::{Terminator, Terminators};
use crate::proxy::{Service, listener, udp};
use crate::stats::{DrainStats, WorkerStats};
use control::Controller;
use pid_file::PidFile;
use routes::{RoutePlan, RunningRoute, published};
use upgrade::{Handoff, Inherited, NotUpgraded, Relaunch};
use workers::Workers;

pub mod check;
mod control;
pub mod drain;
mod handover;
mod pid_file;
mod routes;
pub mod signals;
pub mod state_file;
pub mod systemd;
mod tls;
pub mod upgrade;
pub mod workers;

/// One listener and its pool, as the runtime runs them.
struct Running {
    /// The address as configured (port 0 stays 0): how a reload recognises
    /// the listener it already runs.
    listen: SocketAddr,
    /// The backlog it was bound with: a reload cannot change it in place.
    backlog: u32,
    /// Where it is bound (port 0 resolved): how logs and metrics name it.
    local_addr: SocketAddr,
    /// Its pool's name in the control API (configured, or `local_addr`).
    name: String,
    /// Its configuration as loaded, before the operator overlay: what the
    /// overlay is merged on.
    base: ServiceConfig,
    /// What its connections share: the pool, counters, per-IP table.
    service: Arc<Service>,
    /// Stops this listener's accept loops and prober; a child of shutdown.
    stop: CancellationToken,
    /// One socket per worker, bound but not accepting yet (between `bind`
    /// and `run`); inherited ones may be fewer or more than the workers.
    listeners: Vec<std::net::TcpListener>,
    /// A UDP listener's sockets instead (one per worker, likewise).
    datagram_sockets: Vec<std::net::UdpSocket>,
    /// A duplicate of each listening socket, kept to hand over to a new
    /// process on upgrade (they stay open until this process exits).
    handoff: Vec<OwnedFd>,
    /// The tasks that keep its backend names current (DNS discovery).
    dns: Watching,
    /// Its TLS routes, each with its own pool, in configuration order.
    routes: Vec<RunningRoute>,
    /// When it terminates TLS for its own backends.
    tls: Option<Arc<Terminator>>,
}

/// What can change while running; the lock is never held across `.await`.
struct State {
    /// The listeners, in configuration order.
    services: Vec<Running>,
    /// From the latest configuration: a reload may change it.
    drain_timeout: Duration,
    /// From the latest configuration: a reload may change it.
    shutdown_delay: Duration,
    /// From the latest configuration: whether an upgrade moves the
    /// established connections; a reload may change it.
    upgrade_move_connections: bool,
    /// The address the admin endpoint was bound to; a reload only warns.
    admin: Option<SocketAddr>,
    /// Token file, admin socket, state file and pid file as started with;
    /// a reload that changes them only warns.
    control_paths: [Option<PathBuf>; 4],
    /// Whether `run` has started; services added before it wait for it.
    running: bool,
    /// A duplicate of the admin TCP socket, to hand over on upgrade.
    admin_handoff: Option<OwnedFd>,
}

/// What the balancer, its reload handles and the admin endpoint share.
struct Shared {
    state: Mutex<State>,
    /// Cancelled once, to stop accepting and start draining.
    shutdown: CancellationToken,
    /// What `/ready` says: starting, shutting down, the operator's word,
    /// `--ready-requires-backends`.
    readiness: Arc<admin::Readiness>,
    /// Stops the admin endpoint (TCP, Unix socket, history sampler): at
    /// once on an upgrade's hand-over (the new process serves it), after
    /// the drain otherwise, so that `/ready`, `/metrics` and the control
    /// API answer while connections drain.
    admin_stop: CancellationToken,
    /// The admin endpoint's accept loops and sampler, waited for after
    /// `admin_stop`.
    admin_tasks: TaskTracker,
    /// How the end of the drain went, for `/metrics`.
    drain_stats: Arc<DrainStats>,
    /// Client connections, from every listener past and present.
    connections: TaskTracker,
    /// Accept loops and probers.
    tasks: TaskTracker,
    /// Where accept loops and client connections run.
    workers: Workers,
    /// Which worker serves each accepted connection, and the per-worker
    /// counts `/metrics` shows.
    spread: Arc<Spread>,
    /// The control API's overlay, state file and deadline tasks.
    control: Controller,
    /// Looks backend names up (at start-up, reloads, and in tasks on this
    /// thread's runtime).
    discovery: Discovery,
    /// Sockets from systemd or an old process, taken by listeners as they
    /// bind; emptied once the start is over.
    inherited: Mutex<Inherited>,
    /// Each listener's first round of health checks: readiness waits for
    /// them.
    first_probes: TaskTracker,
    /// Set while an upgrade runs, so a second SIGUSR2 waits its turn.
    upgrading: AtomicBool,
    /// Set once a new process has taken over: the shutdown that follows is
    /// a hand-over, not the service stopping.
    handed_over: AtomicBool,
    /// Every listener's open connections, for the control API.
    registry: Arc<Connections>,
    /// Moves established connections on an upgrade, both ways.
    mover: Arc<Mover>,
    /// Where every listener's finished connections are logged (off by
    /// default); fixed at start.
    access_log: AccessLog,
    /// The access log's writer thread, finished after the last connection.
    access_log_writer: Mutex<Option<Writer>>,
    /// The access log as started, so a reload that changes it only warns.
    access_log_config: AccessLogConfig,
    /// Where this process keeps its PID while it serves (`--pid-file`);
    /// fixed at start.
    pid_file: Option<PidFile>,
    /// Every terminating listener's and route's TLS, kept across reloads.
    terminators: Terminators,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn inherited(&self) -> MutexGuard<'_, Inherited> {
        self.inherited.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts accepting on `service` (an accept loop per worker) and
    /// probing its backends.
    fn start(&self, service: &mut Running) {
        if service.listeners.is_empty() && service.datagram_sockets.is_empty() {
            return;
        }
        log_service(service.local_addr, &service.service.pool);
        let first_round = self.first_probes.token();
        self.tasks.spawn(
            Prober::new(service.service.pool.clone())
                .run_reporting(service.stop.clone(), move || drop(first_round)),
        );
        let pool = &service.service.pool;
        self.discovery
            .watch(pool, &mut service.dns, &service.stop, &self.tasks);
        for route in &mut service.routes {
            self.start_route(route);
        }
        // A UDP socket is served by one worker only: the kernel keeps a
        // client's datagrams on one socket, and so its session on one
        // worker's table. More sockets than workers share workers.
        for (i, socket) in service.datagram_sockets.drain(..).enumerate() {
            let worker = i % self.workers.len();
            let serve = udp::worker::serve(
                socket,
                service.service.clone(),
                service.stop.clone(),
                self.connections.clone(),
            );
            self.workers.spawn(worker, self.tasks.track_future(serve));
        }
        if service.listeners.is_empty() {
            return;
        }
        // Every socket gets an accept loop, and every worker one at least:
        // an inherited socket serves several workers through duplicates
        // (each registers its own with its worker's epoll), and more
        // sockets than workers (an old process had more) share workers.
        let sockets: Vec<std::net::TcpListener> = service.listeners.drain(..).collect();
        let loops = sockets.len().max(self.workers.len());
        for i in 0..loops {
            let socket = &sockets[i % sockets.len()];
            let listener = match socket.try_clone() {
                Ok(listener) => listener,
                Err(e) => {
                    warn!(
                        "{}: cannot share a listening socket: {e}",
                        service.local_addr
                    );
                    continue;
                }
            };
            let worker = i % self.workers.len();
            let accept = listener::accept_loop(
                listener,
                service.service.clone(),
                service.stop.clone(),
                self.connections.clone(),
                worker,
                self.spread.clone(),
            );
            self.workers.spawn(worker, self.tasks.track_future(accept));
        }
    }

    fn bind_service(&self, config: ServiceConfig) -> anyhow::Result<Running> {
        let inherited = self.inherited().take_listener(&config);
        let (listeners, datagram_sockets) = match (config.protocol, inherited) {
            (Protocol::Tcp, Some((local, fds))) => (adopt(local, fds, config.backlog)?, Vec::new()),
            (Protocol::Tcp, None) => (
                listener::bind_group(config.listen, config.backlog, self.workers.len())?,
                Vec::new(),
            ),
            (Protocol::Udp, Some((_, fds))) => (
                Vec::new(),
                fds.into_iter().map(std::net::UdpSocket::from).collect(),
            ),
            (Protocol::Udp, None) => (
                Vec::new(),
                udp::socket::bind_group(config.listen, self.workers.len())?,
            ),
        };
        let handoff = listeners
            .iter()
            .map(|l| l.try_clone().map(OwnedFd::from))
            .chain(
                datagram_sockets
                    .iter()
                    .map(|s| s.try_clone().map(OwnedFd::from)),
            )
            .collect::<std::io::Result<Vec<_>>>()
            .context("cannot keep the listening sockets for an upgrade")?;
        let local_addr = match listeners.first() {
            Some(listener) => listener.local_addr()?,
            None => datagram_sockets
                .first()
                .context("no socket for a UDP listener")?
                .local_addr()?,
        };
        let name = control::pool_name(&config, local_addr);
        let merged = self.control.merged(&name, &config);
        let listen = config.listen;
        let backlog = config.backlog;
        // Names resolve before anything is served: an SRV name that does not is an error.
        let first = self
            .discovery
            .first_answers(&name, &merged, None)
            .map_err(anyhow::Error::msg)?;
        let pool = Arc::new(Pool::with_found(name.clone(), merged, &first.found));
        first.count_into(&pool);
        pool.configure_backend_tls(config.backend_tls.as_ref())
            .map_err(anyhow::Error::msg)?;
        let stop = self.shutdown.child_token();
        let routes = config
            .routes
            .iter()
            .map(|route| self.build_route(route.clone(), &stop))
            .collect::<Result<Vec<_>, _>>()
            .map_err(anyhow::Error::msg)?;
        let service = Service {
            listen: local_addr,
            connections: self.registry.clone(),
            access_log: self.access_log.clone(),
            mover: self.mover.clone(),
            ..Service::new(pool)
        };
        let tls = self
            .listener_terminator(&name, &config, &service.stats.tls)
            .map_err(anyhow::Error::msg)?;
        service
            .routes
            .store(Arc::new(published(&routes, tls.clone())));
        Ok(Running {
            listen,
            backlog,
            local_addr,
            service: Arc::new(service),
            name,
            base: config,
            stop,
            listeners,
            handoff,
            datagram_sockets,
            dns: Watching::default(),
            routes,
            tls,
        })
    }

    /// Duplicates of every listening socket and the admin socket, and the
    /// overlay: what a new process takes over.
    fn handoff(&self) -> std::io::Result<Handoff> {
        let state = self.state();
        let mut listeners = Vec::new();
        for service in &state.services {
            let fds = service
                .handoff
                .iter()
                .map(OwnedFd::try_clone)
                .collect::<std::io::Result<Vec<_>>>()?;
            listeners.push((service.listen, service.local_addr, fds));
        }
        let admin = match (&state.admin, &state.admin_handoff) {
            (Some(listen), Some(fd)) => Some((*listen, fd.try_clone()?)),
            _ => None,
        };
        let ids = match self.registry.ids().handoff() {
            Some(fd) => Some(fd.try_clone_to_owned()?),
            None => None,
        };
        Ok(Handoff {
            listeners,
            admin,
            overlay: self.control.snapshot(),
            ids,
        })
    }
}

/// `/ready`'s state at start: starting until the first health checks are
/// over (not on an upgrade, whose old process serves meanwhile), off if
/// the operator's word handed over or restored says so.
fn readiness(config: &Config, overlay: &Overlay, upgrade: bool) -> admin::Readiness {
    let readiness = admin::Readiness::default();
    readiness.set_starting(!upgrade);
    readiness.set_operator_off(overlay.not_ready);
    readiness.set_requires_backends(config.ready_requires_backends);
    if overlay.not_ready {
        warn!("readiness is off (tcplb ctl ready off, kept): /ready answers 503 until `ready on`");
    }
    readiness
}

/// Takes inherited sockets over: non-blocking for tokio, and the
/// configured backlog set on them (listen(2) again changes it in place).
fn adopt(
    local: SocketAddr,
    fds: Vec<OwnedFd>,
    backlog: u32,
) -> anyhow::Result<Vec<std::net::TcpListener>> {
    let mut listeners = Vec::new();
    for fd in fds {
        let socket = socket2::Socket::from(fd);
        socket
            .set_nonblocking(true)
            .and_then(|()| socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX)))
            .with_context(|| format!("cannot take over the socket on {local}"))?;
        listeners.push(socket.into());
    }
    anyhow::ensure!(!listeners.is_empty(), "no socket handed over for {local}");
    Ok(listeners)
}

pub struct Balancer {
    shared: Arc<Shared>,
    /// The admin endpoint's socket, when `--admin` is given.
    admin: Option<TcpListener>,
    /// The Unix admin socket and its path, when `--admin-socket` is given;
    /// in an upgrade, also the temporary path it is bound at until this
    /// process serves (then renamed over the old process's socket).
    admin_unix: Option<(UnixListener, PathBuf, Option<PathBuf>)>,
    /// The bearer token that gives TCP admin requests write access.
    admin_token: Option<String>,
    /// The channel to the old process, when this start is an upgrade.
    takeover: Option<upgrade::Channel>,
}

/// Added to the longest health timeout to bound the wait for the first
/// round of health checks: a round's checks run at once, each within its
/// pool's timeout, so only a stalled runtime needs more.
const FIRST_ROUND_SLACK: Duration = Duration::from_secs(1);

impl Balancer {
    /// Binds every listener, with one worker per core. Must be called
    /// inside the tokio runtime.
    pub fn bind(config: Config) -> anyhow::Result<Self> {
        Self::bind_with_workers(config, None)
    }

    /// Binds every listener for `workers` workers (`None`: one per core).
    pub fn bind_with_workers(config: Config, workers: Option<usize>) -> anyhow::Result<Self> {
        Self::bind_inheriting(config, workers, Inherited::default())
    }

    /// Like [`Balancer::bind_with_workers`], taking over the sockets in
    /// `inherited` (from systemd or an old process) where a listener
    /// matches one, and binding the rest.
    pub fn bind_inheriting(
        config: Config,
        workers: Option<usize>,
        mut inherited: Inherited,
    ) -> anyhow::Result<Self> {
        let admin_token = config
            .admin_token_file
            .as_deref()
            .map(control::read_token)
            .transpose()?;
        let upgrade = inherited.is_upgrade();
        // Ids go on from the old process's, from one shared counter.
        let ids = match inherited.ids.take().map(IdSequence::adopt) {
            Some(Ok(ids)) => ids,
            Some(Err(e)) => {
                warn!("upgrade: cannot share the old process's connection ids: {e}");
                IdSequence::new()
            }
            None => IdSequence::new(),
        };
        let overlay = match (inherited.overlay.take(), &config.state_file) {
            (Some(handed), _) => handed,
            (None, Some(path)) => state_file::load(path),
            (None, None) => Overlay::default(),
        };
        let (access_log, access_log_writer) =
            match access_log::writer::start(&config.access_log, Arc::default())? {
                Some((log, writer)) => (log, Some(writer)),
                None => (AccessLog::default(), None),
            };
        if access_log_writer.is_some() {
            info!(
                "access log to {} ({})",
                config.access_log.target, config.access_log.format
            );
        }
        let workers = Workers::start(workers).context("cannot start the worker threads")?;
        let drain_stats: Arc<DrainStats> = Arc::default();
        let shared = Shared {
            state: Mutex::new(State {
                services: Vec::new(),
                drain_timeout: config.drain_timeout,
                shutdown_delay: config.shutdown_delay,
                upgrade_move_connections: config.upgrade_move_connections,
                admin: config.admin,
                control_paths: control_paths(&config),
                running: false,
                admin_handoff: None,
            }),
            shutdown: CancellationToken::new(),
            readiness: Arc::new(readiness(&config, &overlay, upgrade)),
            admin_stop: CancellationToken::new(),
            admin_tasks: TaskTracker::new(),
            drain_stats: drain_stats.clone(),
            connections: TaskTracker::new(),
            tasks: TaskTracker::new(),
            spread: Arc::new(Spread::new(
                workers.handles(),
                Arc::new(WorkerStats::new(workers.len())),
            )),
            workers,
            control: Controller::new(overlay, config.state_file.clone()),
            discovery: Discovery::new(config.resolver),
            inherited: Mutex::new(inherited),
            first_probes: TaskTracker::new(),
            upgrading: AtomicBool::new(false),
            handed_over: AtomicBool::new(false),
            registry: Arc::new(Connections::with_ids(ids)),
            mover: Arc::new(Mover::counting_into(drain_stats.moves.clone())),
            access_log,
            access_log_writer: Mutex::new(access_log_writer),
            access_log_config: config.access_log.clone(),
            pid_file: config.pid_file.as_deref().map(PidFile::new),
            terminators: Terminators::default(),
        };
        let mut services = Vec::new();
        for service in config.services {
            services.push(shared.bind_service(service)?);
        }
        shared.control.reconcile(&bases(&services));
        shared.readiness.set_pools(every_pool(&services));
        shared.state().services = services;
        let admin = match config.admin {
            Some(addr) => Some(match shared.inherited().take_admin(addr) {
                Some(socket) => {
                    socket.set_nonblocking(true)?;
                    TcpListener::from_std(socket)?
                }
                None => admin::bind(addr)?,
            }),
            None => None,
        };
        shared.inherited().close_leftovers();
        shared.state().admin_handoff = match &admin {
            Some(listener) => Some(
                std::os::fd::AsFd::as_fd(listener)
                    .try_clone_to_owned()
                    .context("cannot keep the admin socket for an upgrade")?,
            ),
            None => None,
        };
        let admin_unix = match config.admin_socket {
            // The old process's socket stays at `path` until this one
            // serves: a failed upgrade leaves it untouched.
            Some(path) if upgrade => {
                let mut temp = path.clone().into_os_string();
                temp.push(format!(".new.{}", std::process::id()));
                let temp = PathBuf::from(temp);
                Some((admin::bind_unix(&temp)?, path, Some(temp)))
            }
            Some(path) => Some((admin::bind_unix(&path)?, path, None)),
            None => None,
        };
        // Serving from now on; an upgrade's new process claims it when it
        // takes over.
        if let Some(pid_file) = &shared.pid_file
            && !upgrade
        {
            pid_file.claim()?;
        }
        Ok(Balancer {
            shared: Arc::new(shared),
            admin,
            admin_unix,
            admin_token,
            takeover: None,
        })
    }

    /// Makes this start an upgrade's: once serving it tells the old
    /// process, which then stops accepting and drains.
    pub fn take_over_from(&mut self, channel: upgrade::Channel) {
        self.takeover = Some(channel);
    }

    /// Where the admin endpoint ended up, when there is one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Where each listener ended up (port 0 becomes a real port), in
    /// configuration order.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.reload_handle().local_addrs()
    }

    /// Each listener's service (pool, counters), in configuration order.
    pub fn services(&self) -> Vec<Arc<Service>> {
        self.reload_handle().services()
    }

    /// Cancel this token to stop accepting and start draining.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shared.shutdown.clone()
    }

    /// Reopens the access log's file (what SIGUSR1 does, for logrotate);
    /// does nothing when the access log is off or goes to stderr.
    pub fn access_log_reopener(&self) -> Reopen {
        let writer = self
            .shared
            .access_log_writer
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        writer.as_ref().map_or_else(Reopen::none, Writer::reopener)
    }

    /// Applies new configurations to this balancer while it runs.
    pub fn reload_handle(&self) -> ReloadHandle {
        ReloadHandle {
            shared: self.shared.clone(),
        }
    }

    /// Serves until the shutdown token is cancelled, then drains open
    /// connections for up to the drain timeout.
    pub async fn run(self) {
        self.run_until(std::future::pending()).await
    }

    /// Serves until `shutdown` completes (or the shutdown token is
    /// cancelled), then drains open connections for up to the drain timeout.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) {
        let shared = self.shared;
        // Asks for the listeners on every request, so reloads show.
        let handle = ReloadHandle {
            shared: shared.clone(),
        };
        let watched: admin::WatchList = Arc::new(move || handle.watched());
        let api = Arc::new(admin::Api {
            watched,
            control: Some(Arc::new(ReloadHandle {
                shared: shared.clone(),
            })),
            token: self.admin_token,
            stats: shared.control.stats.clone(),
            history: Arc::default(),
            access_log: shared.access_log.stats.clone(),
            workers: shared.spread.stats().clone(),
            readiness: shared.readiness.clone(),
            drain: shared.drain_stats.clone(),
        });
        if self.admin.is_some() || self.admin_unix.is_some() {
            shared
                .admin_tasks
                .spawn(admin::history::sample_every_second(
                    api.watched.clone(),
                    api.history.clone(),
                    shared.admin_stop.clone(),
                ));
        }
        if let Some(listener) = self.admin {
            if let Ok(addr) = listener.local_addr() {
                info!("admin endpoint on http://{addr}/metrics and /status");
            }
            shared.admin_tasks.spawn(admin::serve_api(
                listener,
                api.clone(),
                shared.admin_stop.clone(),
            ));
        }
        {
            let mut state = shared.state();
            state.running = true;
            for service in &mut state.services {
                shared.start(service);
            }
        }
        shared.watch_tls_files();
        shared.first_probes.close();
        shared.tasks.spawn(announce_ready(
            shared.clone(),
            self.admin_unix,
            api,
            self.takeover,
        ));
        systemd::keep_watchdog(shared.shutdown.clone());

        let signalled = tokio::select! {
            _ = shutdown => true,
            _ = shared.shutdown.cancelled() => false,
        };
        if !shared.handed_over.load(Ordering::Relaxed) {
            shared.readiness.set_stopping();
            systemd::stopping();
        }
        if signalled {
            let delay = shared.state().shutdown_delay;
            drain::delay(delay, &shared.shutdown).await;
            shared.shutdown.cancel();
        }
        if shared.handed_over.load(Ordering::Relaxed) {
            // A new process took over (also one whose upgrade was under way
            // when the signal came): it answers on the admin socket now.
            shared.admin_stop.cancel();
        } else {
            // Nobody takes these sockets over: they must close with the
            // accept loops, so new clients are refused rather than left
            // waiting in a backlog nobody reads.
            let mut state = shared.state();
            state.admin_handoff = None;
            for service in &mut state.services {
                service.handoff.clear();
            }
        }
        // Accept loops and probers return on the token; their listeners close.
        shared.tasks.close();
        shared.tasks.wait().await;
        shared.connections.close();
        let drain_timeout = shared.state().drain_timeout;
        drain::drain(
            &shared.connections,
            &shared.registry,
            drain_timeout,
            &shared.drain_stats,
        )
        .await;
        shared.admin_stop.cancel();
        shared.admin_tasks.close();
        shared.admin_tasks.wait().await;
        shared.workers.shut_down().await;
        // Every connection has ended (and handed over its record): write
        // the last lines.
        let writer = shared
            .access_log_writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(writer) = writer {
            let _ = tokio::task::spawn_blocking(move || writer.finish()).await;
        }
        if let Some(pid_file) = &shared.pid_file {
            pid_file.release();
        }
    }
}

/// Once every listener accepts and every pool has had its first round of
/// health checks: serves the Unix admin socket (in an upgrade, renamed
/// over the old process's first), tells systemd READY=1, and tells the
/// old process of an upgrade to stop.
async fn announce_ready(
    shared: Arc<Shared>,
    admin_unix: Option<(UnixListener, PathBuf, Option<PathBuf>)>,
    api: Arc<admin::Api>,
    takeover: Option<upgrade::Channel>,
) {
    // As long as the slowest check may take, and in an upgrade no longer
    // than the old process waits.
    let longest = shared.state().longest_health_timeout() + FIRST_ROUND_SLACK;
    let wait = takeover
        .as_ref()
        .map_or(longest, |channel| longest.min(channel.time_left()));
    tokio::select! {
        _ = shared.shutdown.cancelled() => return,
        round = tokio::time::timeout(wait, shared.first_probes.wait()) => {
            if round.is_err() {
                warn!(
                    "the first round of health checks is not over after {wait:?}; \
                     reporting ready anyway"
                );
            }
        }
    }
    // The new process of an upgrade names itself before anyone hears it
    // serves; if it cannot, the upgrade fails (the old process, named
    // still, kills this one and keeps serving).
    if let (Some(pid_file), Some(_)) = (&shared.pid_file, &takeover)
        && let Err(e) = pid_file.claim()
    {
        error!("upgrade: {e}; not taking over");
        if let Some(channel) = takeover {
            channel.report_failure(&e.to_string());
        }
        return;
    }
    if let Some((listener, path, temp)) = admin_unix {
        if let Some(temp) = temp
            && let Err(e) = std::fs::rename(&temp, &path)
        {
            warn!(
                "admin socket: cannot move {} to {}: {e}",
                temp.display(),
                path.display()
            );
        }
        info!(
            "admin endpoint with write access on unix:{}",
            path.display()
        );
        shared.admin_tasks.spawn(admin::serve_unix(
            listener,
            path,
            api,
            shared.admin_stop.clone(),
        ));
    }
    shared.readiness.set_starting(false);
    // systemd hears of the new main process before the old one may exit:
    // the old one's exit must not read as the service's.
    systemd::ready(takeover.is_some());
    if let Some(channel) = takeover
        && channel.report_ready()
    {
        info!("upgrade: took over from the old process; it stops accepting and drains");
        // Its established connections follow, until it closes the channel.
        let fd = channel.into_fd();
        let spawned = std::thread::Builder::new()
            .name("tcplb-move-in".into())
            .spawn(move || handover::move_in(fd, shared));
        if let Err(e) = spawned {
            warn!("upgrade: cannot take the old process's connections over: {e}");
        }
    }
}

/// A handle for swapping the configuration of a running [`Balancer`].
#[derive(Clone)]
pub struct ReloadHandle {
    shared: Arc<Shared>,
}

impl ReloadHandle {
    /// Makes `config` the running configuration, for new connections; open
    /// connections keep the settings and backends they started with.
    ///
    /// Listeners are matched by their configured address. A kept listener
    /// keeps its socket and swaps its pool (backends it keeps keep their
    /// health and counters); a new one is bound and started; a removed one
    /// stops accepting while its open connections drain. If any new address
    /// cannot be bound, nothing changes and the error is returned.
    /// On success returns a one-line summary of what changed.
    pub fn apply(&self, config: Config) -> Result<String, String> {
        let shared = &self.shared;
        let mut state = shared.state();
        if shared.shutdown.is_cancelled() {
            return Err("shutting down".into());
        }
        let paths = control_paths(&config);

        // Pair each new service with the first unclaimed old one at the same
        // address (port 0 listeners pair up in order).
        let mut claimed = vec![false; state.services.len()];
        let mut kept_index: Vec<Option<usize>> = Vec::new();
        for new in &config.services {
            let found = (0..state.services.len()).find(|&i| {
                let old = &state.services[i];
                !claimed[i] && old.listen == new.listen && old.base.protocol == new.protocol
            });
            if let Some(i) = found {
                claimed[i] = true;
            }
            kept_index.push(found);
        }

        // Bind every new listener and look every backend name up first: a
        // failure must change nothing.
        let mut bound: Vec<Option<Running>> = Vec::new();
        let mut lookups = Vec::new();
        let mut route_plans: Vec<Vec<RoutePlan>> = Vec::new();
        let mut listener_tls = Vec::new();
        for (new, kept) in config.services.iter().zip(&kept_index) {
            listener_tls.push(match kept {
                Some(i) => {
                    let running = &state.services[*i];
                    let name = control::pool_name(new, running.local_addr);
                    let stats = &running.service.stats.tls;
                    shared.listener_terminator(&name, new, stats)?
                }
                None => None,
            });
            lookups.push(match kept {
                Some(i) => {
                    let running = &state.services[*i];
                    let pool = &running.service.pool;
                    let name = running.local_addr.to_string();
                    Some(shared.discovery.first_answers(&name, new, Some(pool))?)
                }
                None => None,
            });
            route_plans.push(match kept {
                Some(i) => {
                    let running = &state.services[*i];
                    shared.plan_routes(&running.routes, &new.routes, &running.stop)?
                }
                None => Vec::new(),
            });
            bound.push(match kept {
                Some(_) => None,
                None => Some(
                    shared
                        .bind_service(new.clone())
                        .map_err(|e| format!("{e:#}"))?,
                ),
            });
        }

        let mut old: Vec<Option<Running>> = state.services.drain(..).map(Some).collect();
        let plan = config
            .services
            .into_iter()
            .zip(kept_index)
            .map(|(new, i)| (new, i.and_then(|i| old[i].take())));
        let mut changes: Vec<String> = Vec::new();
        // Settings a reload cannot apply in place: named in the summary.
        let mut not_applied: Vec<String> = Vec::new();
        let mut services = Vec::new();
        let plan = plan
            .zip(bound)
            .zip(lookups)
            .zip(route_plans)
            .zip(listener_tls);
        for (((((new, kept), fresh), first), route_plan), tls) in plan {
            match (kept, fresh) {
                (Some(mut service), _) => {
                    let pool = &service.service.pool;
                    let before = backend_names(pool);
                    let old_config = pool.load().config.clone();
                    let settings_changed = ServiceConfig {
                        backends: new.backends.clone(),
                        routes: new.routes.clone(),
                        ..old_config
                    } != new;
                    if new.backlog != service.backlog {
                        not_applied.push(format!(
                            "backlog of {} ({} -> {})",
                            service.local_addr, service.backlog, new.backlog
                        ));
                    }
                    let name = control::pool_name(&new, service.local_addr);
                    let first = first.unwrap_or_default();
                    pool.reconfigure_with(shared.control.merged(&name, &new), &first.found);
                    if let Err(e) = pool.configure_backend_tls(new.backend_tls.as_ref()) {
                        warn!("{e}; its backends are reached without the new TLS settings");
                    }
                    first.count_into(pool);
                    if state.running {
                        let pool = &service.service.pool;
                        shared.discovery.watch(
                            pool,
                            &mut service.dns,
                            &service.stop,
                            &shared.tasks,
                        );
                    }
                    let (routes, route_changes) = shared.apply_routes(
                        std::mem::take(&mut service.routes),
                        new.routes.clone(),
                        route_plan,
                        state.running,
                    );
                    service
                        .service
                        .routes
                        .store(Arc::new(published(&routes, tls.clone())));
                    service.routes = routes;
                    service.tls = tls;
                    let pool = &service.service.pool;
                    let mut change = describe_kept(service.local_addr, &before, pool);
                    if settings_changed {
                        change.push_str(", settings changed");
                    }
                    for route_change in route_changes {
                        change.push_str(&format!(", {route_change}"));
                    }
                    changes.push(change);
                    services.push(Running {
                        name,
                        base: new,
                        ..service
                    });
                }
                (None, Some(mut service)) => {
                    changes.push(format!(
                        "{} added, backends [{}]",
                        service.local_addr,
                        backend_names(&service.service.pool).join(", ")
                    ));
                    if state.running {
                        shared.start(&mut service);
                    }
                    services.push(service);
                }
                (None, None) => {}
            }
        }
        for service in old.into_iter().flatten() {
            service.stop.cancel();
            changes.push(format!(
                "{} removed (open connections drain)",
                service.local_addr
            ));
        }
        shared.control.reconcile(&bases(&services));
        shared.readiness.set_pools(every_pool(&services));
        shared.forget_terminators(&services);
        // SIGHUP reads every certificate file again, changed or not.
        shared.terminators.reload_files(true);
        for pool in every_pool(&services) {
            pool.reload_backend_tls(true);
        }
        state.services = services;
        state.drain_timeout = config.drain_timeout;
        state.upgrade_move_connections = config.upgrade_move_connections;
        state.shutdown_delay = config.shutdown_delay;
        shared
            .readiness
            .set_requires_backends(config.ready_requires_backends);
        if config.admin != state.admin {
            let show = |a: Option<SocketAddr>| a.map_or("off".to_string(), |a| a.to_string());
            not_applied.push(format!(
                "admin address ({} -> {})",
                show(state.admin),
                show(config.admin)
            ));
        }
        let keys = ["admin token file", "admin socket", "state file", "pid file"];
        for ((key, old), new) in keys.iter().zip(&state.control_paths).zip(&paths) {
            if old != new {
                let show = |p: &Option<PathBuf>| {
                    p.as_ref()
                        .map_or("off".to_string(), |p| p.display().to_string())
                };
                not_applied.push(format!("{key} ({} -> {})", show(old), show(new)));
            }
        }
        if config.resolver != shared.discovery.server() {
            not_applied.push("resolver".to_string());
        }
        if config.access_log != shared.access_log_config {
            not_applied.push("access log".to_string());
        }
        if !not_applied.is_empty() {
            let pending = format!(
                "NOT applied, needs an upgrade (SIGUSR2) or a restart: {}",
                not_applied.join(", ")
            );
            warn!("reload: {pending}");
            changes.push(pending);
        }
        Ok(changes.join("; "))
    }

    /// Hands every listening socket and the runtime state to a new
    /// process started from `relaunch` (see [`upgrade`]). `Ok(pid)`: it
    /// serves now, and this balancer stops accepting and drains. `Err`:
    /// nothing changed here; it says why nothing was tried, or why the new
    /// process did not take over.
    pub async fn upgrade(&self, relaunch: &Relaunch) -> Result<u32, NotUpgraded> {
        let shared = &self.shared;
        if shared.shutdown.is_cancelled() || shared.readiness.is_stopping() {
            return Err(NotUpgraded::ShuttingDown);
        }
        if shared.upgrading.swap(true, Ordering::AcqRel) {
            return Err(NotUpgraded::Busy);
        }
        let outcome = match shared.handoff() {
            Ok(handoff) => {
                let relaunch = relaunch.clone();
                tokio::task::spawn_blocking(move || upgrade::hand_over(&relaunch, handoff))
                    .await
                    .unwrap_or_else(|_| Err("the upgrade task panicked".into()))
            }
            Err(e) => Err(format!("cannot duplicate the listening sockets: {e}")),
        }
        .map_err(NotUpgraded::Failed);
        let outcome = outcome.map(|(pid, successor)| {
            shared.handed_over.store(true, Ordering::Relaxed);
            shared.shutdown.cancel();
            // Dropping the channel tells the new process nothing follows.
            if shared.state().upgrade_move_connections {
                let moving = handover::Moving {
                    registry: shared.registry.clone(),
                    tracked: shared.connections.clone(),
                    mover: shared.mover.clone(),
                };
                tokio::spawn(handover::move_out(successor, moving));
            }
            pid
        });
        shared.upgrading.store(false, Ordering::Release);
        outcome
    }

    /// Where each listener is bound now, in configuration order.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.shared
            .state()
            .services
            .iter()
            .map(|s| s.local_addr)
            .collect()
    }

    /// Each listener with its pool now, as the admin endpoint shows them.
    pub fn watched(&self) -> Vec<admin::Watched> {
        self.shared
            .state()
            .services
            .iter()
            .map(|s| admin::Watched {
                name: s.name.clone(),
                listen: s.local_addr,
                pool: s.service.pool.clone(),
                stats: s.service.stats.clone(),
                routes: s
                    .routes
                    .iter()
                    .map(|r| admin::WatchedRoute {
                        name: r.name().to_string(),
                        server_names: r
                            .config
                            .server_names
                            .iter()
                            .map(|n| n.to_string())
                            .collect(),
                        alpn: r.config.alpn.clone(),
                        pool: r.pool.clone(),
                        stats: r.stats.clone(),
                    })
                    .collect(),
            })
            .collect()
    }

    /// Each listener's service now, in configuration order.
    pub fn services(&self) -> Vec<Arc<Service>> {
        self.shared
            .state()
            .services
            .iter()
            .map(|s| s.service.clone())
            .collect()
    }
}

/// Every pool, listeners' and routes' (for `/ready`, and TLS reloads).
fn every_pool(services: &[Running]) -> Vec<Arc<Pool>> {
    let mut pools = Vec::new();
    for s in services {
        pools.push(s.service.pool.clone());
        pools.extend(s.routes.iter().map(|r| r.pool.clone()));
    }
    pools
}

/// Every pool's name and configuration (listeners' and routes'), for the
/// overlay.
fn bases(services: &[Running]) -> Vec<(&str, &ServiceConfig)> {
    let mut bases = Vec::new();
    for s in services {
        bases.push((s.name.as_str(), &s.base));
        bases.extend(s.routes.iter().map(|r| (r.name(), r.base())));
    }
    bases
}

impl State {
    /// The longest health check timeout of any pool (listeners' and
    /// routes'): how long a first round of checks can take.
    fn longest_health_timeout(&self) -> Duration {
        let pools = self
            .services
            .iter()
            .flat_map(|s| std::iter::once(&s.service.pool).chain(s.routes.iter().map(|r| &r.pool)));
        pools
            .map(|pool| pool.load().config.health.timeout)
            .max()
            .unwrap_or_default()
    }

    /// The pool named `name` (a listener's or a route's), with its
    /// configuration as loaded.
    fn find_pool(&self, name: &str) -> Option<(Arc<Pool>, ServiceConfig)> {
        self.services.iter().find_map(|s| {
            if s.name == name {
                return Some((s.service.pool.clone(), s.base.clone()));
            }
            let route = s.routes.iter().find(|r| r.name() == name)?;
            Some((route.pool.clone(), route.base().clone()))
        })
    }
}

fn control_paths(config: &Config) -> [Option<PathBuf>; 4] {
    [
        config.admin_token_file.clone(),
        config.admin_socket.clone(),
        config.state_file.clone(),
        config.pid_file.clone(),
    ]
}

fn backend_names(pool: &Pool) -> Vec<String> {
    pool.load()
        .backends
        .iter()
        .map(|b| b.name().to_string())
        .collect()
}

/// "127.0.0.1:8080 backends [a, c] (+c, -b)".
fn describe_kept(addr: SocketAddr, before: &[String], pool: &Pool) -> String {
    let after = backend_names(pool);
    let added: Vec<String> = after
        .iter()
        .filter(|n| !before.contains(n))
        .map(|n| format!("+{n}"))
        .collect();
    let removed: Vec<String> = before
        .iter()
        .filter(|n| !after.contains(n))
        .map(|n| format!("-{n}"))
        .collect();
    let mut line = format!("{addr} backends [{}]", after.join(", "));
    let delta: Vec<String> = added.into_iter().chain(removed).collect();
    if !delta.is_empty() {
        line.push_str(&format!(" ({})", delta.join(", ")));
    }
    line
}

fn log_service(local_addr: SocketAddr, pool: &Pool) {
    let state = pool.load();
    let c = &state.config;
    info!(
        "listening on {} -> [{}] strategy={} retries={} connect-timeout={:?} \
         health-interval={:?} health-timeout={:?} rise={} fall={} on-failure={} \
         health-check={} on-down={}",
        local_addr,
        backend_names(pool).join(", "),
        c.strategy,
        c.retries,
        c.connect_timeout,
        c.health.interval,
        c.health.timeout,
        c.health.rise,
        c.health.fall,
        c.on_failure,
        c.active_check().kind(),
        c.health.on_down,
    );
}
