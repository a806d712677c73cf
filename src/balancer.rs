//! The running balancer: every listener with its pool and prober, and the
//! orderly shutdown that drains open connections.
//!
//! Binding is separate from running so start-up errors (a port in use)
//! surface before anything is served, and so tests can learn the port.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use log::{info, warn};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin;
use crate::config::Config;
use crate::listener;
use crate::pool::BackendPool;
use crate::prober::Prober;

struct Service {
    listener: TcpListener,
    local_addr: SocketAddr,
    pool: Arc<BackendPool>,
}

pub struct Balancer {
    services: Vec<Service>,
    /// The admin endpoint's socket, when `--admin` is given.
    admin: Option<TcpListener>,
    drain_timeout: Duration,
    shutdown: CancellationToken,
    connections: TaskTracker,
}

impl Balancer {
    /// Binds every listener. Must be called inside the tokio runtime.
    pub fn bind(config: Config) -> anyhow::Result<Self> {
        let mut services = Vec::new();
        for service in config.services {
            let listener = listener::bind(service.listen, service.backlog)?;
            let local_addr = listener.local_addr()?;
            services.push(Service {
                listener,
                local_addr,
                pool: Arc::new(BackendPool::new(service)),
            });
        }
        let admin = config.admin.map(admin::bind).transpose()?;
        Ok(Balancer {
            services,
            admin,
            drain_timeout: config.drain_timeout,
            shutdown: CancellationToken::new(),
            connections: TaskTracker::new(),
        })
    }

    /// Where each listener ended up (port 0 becomes a real port).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.services.iter().map(|s| s.local_addr).collect()
    }

    /// Where the admin endpoint ended up, when there is one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn pools(&self) -> Vec<Arc<BackendPool>> {
        self.services.iter().map(|s| s.pool.clone()).collect()
    }

    /// Cancel this token to stop accepting and start draining.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serves until the shutdown token is cancelled, then drains open
    /// connections for up to the drain timeout.
    pub async fn run(self) {
        let mut tasks = JoinSet::new();
        if let Some(listener) = self.admin {
            let watched = self
                .services
                .iter()
                .map(|s| admin::Watched {
                    listen: s.local_addr,
                    pool: s.pool.clone(),
                })
                .collect();
            if let Ok(addr) = listener.local_addr() {
                info!("admin endpoint on http://{addr}/metrics and /status");
            }
            tasks.spawn(admin::serve(listener, watched, self.shutdown.clone()));
        }
        for service in self.services {
            let state = service.pool.load();
            let names: Vec<&str> = state
                .backends
                .iter()
                .map(|b| b.spec.name.as_str())
                .collect();
            let c = &state.config;
            info!(
                "listening on {} -> [{}] strategy={} retries={} connect-timeout={:?} \
                 health-interval={:?} health-timeout={:?} rise={} fall={} on-failure={}",
                service.local_addr,
                names.join(", "),
                c.strategy,
                c.retries,
                c.connect_timeout,
                c.health.interval,
                c.health.timeout,
                c.health.rise,
                c.health.fall,
                c.on_failure,
            );
            tasks.spawn(Prober::new(service.pool.clone()).run(self.shutdown.clone()));
            tasks.spawn(listener::accept_loop(
                service.listener,
                service.pool,
                self.shutdown.clone(),
                self.connections.clone(),
            ));
        }

        self.shutdown.cancelled().await;
        // Accept loops and probers return on the token; their listeners close.
        while tasks.join_next().await.is_some() {}
        self.connections.close();
        let open = self.connections.len();
        info!(
            "stopped accepting; draining {open} open connection(s) for up to {:?}",
            self.drain_timeout
        );
        match tokio::time::timeout(self.drain_timeout, self.connections.wait()).await {
            Ok(()) => info!("all connections finished; exiting"),
            Err(_) => warn!(
                "drain timeout: closing {} connection(s) still open",
                self.connections.len()
            ),
        }
    }
}
