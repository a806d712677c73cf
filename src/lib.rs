//! tcplb: a Layer-4 (raw TCP) connection load balancer.
//!
//! # Layout
//!
//! From the top layer down; a module imports only from the layers below it.
//!
//! - [`ctl`]: `tcplb ctl`, the control API's command-line client; it talks
//!   to a running tcplb over the wire and uses only [`config`] here.
//! - [`manual`]: `tcplb man` and `tcplb completions`, generated from the
//!   clap definitions of [`config::cli`] and [`ctl`].
//! - [`runtime`]: builds everything from a [`config::Config`] and runs it:
//!   worker threads, signals (SIGHUP reload, SIGTERM drain, SIGUSR2 binary
//!   upgrade with the listening sockets handed over), the shutdown delay and
//!   the drain on shutdown, systemd's notifications and socket activation,
//!   and `tcplb check`.
//! - [`proxy`]: the per-connection data path: accept, access control, PROXY
//!   protocol, pick and connect with retries, pipe the bytes, answer 502/503;
//!   the registry of open connections and the access log's records (whose
//!   writer thread the runtime starts).
//! - [`admin`]: the admin endpoint: the live status page at `/`, Prometheus
//!   `/metrics`, JSON `/status`, `/ready` and `/live` for the layer in front
//!   of a fleet, and the control API under `/api/v1/`
//!   (which the runtime implements through the [`admin::Control`] trait,
//!   listing and closing connections included).
//! - [`pool`]: what a service's pool knows: its backends (admin state and
//!   health kept apart), selection, health checks, discovery.
//! - [`certs`]: what both TLS sides read from disk (chains and keys, CAs,
//!   CRLs) and what a certificate says; below [`proxy::tls`] (termination)
//!   and [`pool::connect::tls`] (origination), above [`stats`] and
//!   [`config`].
//! - [`stats`]: the counters the data path writes and the admin endpoint reads.
//! - [`config`]: the plain configuration model, and the command line and TOML
//!   file that produce it. It depends on nothing else in tcplb.
//! - [`demo`]: the demo backends (HTTP and echo), for the demo and the tests.
//!
//! A connection arrives at a [`proxy::listener`] accept loop, which hands it
//! to [`proxy::serve`] on its own worker or, when [`proxy::spread`] finds
//! that worker busier than another, on the other: the service's [`pool::Pool`] picks a backend through
//! its [`pool::selection::Selector`], `serve` connects and [`proxy::pipe`]
//! moves the bytes; if no backend can take it, [`proxy::failure`] answers.
//! [`pool::health`] keeps each backend's health current in the background.

pub mod admin;
pub mod certs;
pub mod config;
pub mod ctl;
pub mod demo;
pub mod manual;
pub mod pool;
pub mod proxy;
pub mod runtime;
pub mod stats;
