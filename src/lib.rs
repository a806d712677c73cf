//! tcplb: a Layer-4 (raw TCP) connection load balancer.
//!
//! A connection arrives at a [`listener`], which hands it to [`forward`]:
//! the [`pool`] asks its [`strategy`] for a backend, `forward` connects and
//! pipes bytes both ways, and if no backend can take it, [`failure`] answers.
//! The [`prober`] keeps each [`backend`]'s health current in the background.
//! [`balancer`] wires these together per listener and drains on shutdown;
//! accept loops and connections run on the [`workers`], one thread each.
//! [`access`] turns unwanted or greedy clients away right after accept, and
//! [`admin`] serves the counters as Prometheus metrics and JSON status.

pub mod access;
pub mod admin;
pub mod backend;
pub mod balancer;
pub mod cli;
pub mod config;
pub mod config_file;
pub mod demo;
pub mod failure;
pub mod forward;
pub mod listener;
pub mod pipe;
pub mod pool;
pub mod prober;
pub mod proxy_protocol;
pub mod signals;
pub mod strategy;
pub mod workers;
