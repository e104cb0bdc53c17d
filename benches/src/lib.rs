//! Benchmarks of vakt live in `benches/` (criterion, `cargo bench -p
//! vakt-benches`) and in the scripts beside this crate: `peers.sh` puts
//! the proxy side by side with NGINX and HAProxy under the same load.
