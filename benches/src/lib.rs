//! Benchmarks of vakt:
//!
//! - `cargo bench -p vakt-benches` runs the micro-benchmarks in
//!   `benches/` (criterion), such as route lookup;
//! - `cargo run --release -p vakt-benches --bin control-fanout` measures
//!   how fast a change reaches 1,000 connected proxies and what each one
//!   costs the control plane;
//! - `benches/run.sh` (the [`mesh`] harness, binary `mesh-bench`) puts
//!   the proxy side by side with NGINX and HAProxy under the same load.

#![forbid(unsafe_code)]

pub mod mesh;
