//! Benchmarks. `control-fanout` (src/bin) measures how fast a change
//! reaches 1,000 connected proxies and what each costs the control plane.
