//! vakt-control: the control plane. It stores routes and backends as
//! numbered versions (embedded redb or a shared etcd), streams snapshots to
//! every proxy over gRPC, records their acks and nacks, and spreads what is
//! known of endpoint health across the fleet.
//!
//! Layout: [`config_api`] (operators) → [`store`] → [`state`] →
//! [`discovery`] (one stream per proxy), with [`health`] and [`probe`]
//! feeding the verdict that travels with the endpoints; [`metrics`] shows
//! the replica and its nodes to Prometheus.

#![forbid(unsafe_code)]

pub mod auth;
pub mod cli;
pub mod client;
pub mod config_api;
pub mod discovery;
pub mod health;
pub mod inject;
pub mod metrics;
pub mod nodes;
pub mod probe;
pub mod server;
pub mod stat;
pub mod state;
pub mod store;

pub use server::{Running, ServeOptions, StoreKind, start};
