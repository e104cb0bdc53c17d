//! vakt-proxy: the sidecar and edge proxy of the vakt mesh.
//!
//! A request travels through the modules in this order:
//! [`listener`] accepts a connection and serves HTTP/1.1 or HTTP/2 on it
//! (a transparent listener first asks [`intercept`] where the connection
//! was going and what it speaks);
//! [`server`] takes each request, checks its framing ([`http`]), picks a
//! [`route`] and a backend, and hands it to the [`attempt`] loop, which
//! asks the [`backend`]'s balancer for an endpoint and a pooled connection
//! and forwards the request. Anything the proxy answers itself is built in
//! one place, [`respond`]. On the edge, [`edge`] terminates TLS and
//! checks who is calling and how often. [`state`] holds the running
//! config, swapped atomically on reload or when [`discovery`] brings a
//! snapshot from the control plane; [`admin`] and [`telemetry`] make it
//! observable.

#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod attempt;
pub mod backend;
pub mod cli;
pub mod discovery;
pub mod edge;
pub mod http;
pub mod intercept;
mod io;
pub mod listener;
pub mod reload;
pub mod respond;
pub mod route;
pub mod server;
pub mod sidecar;
pub mod state;
pub mod telemetry;
