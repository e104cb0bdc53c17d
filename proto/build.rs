//! Compiles the `.proto` files under `proto/vakt/` with protox (pure Rust)
//! and generates prost messages and tonic stubs, so no `protoc` is needed.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "vakt/config/v1/config.proto",
    "vakt/control/v1/control.proto",
    "vakt/discovery/v1/discovery.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read when the script runs: a build directory shared by two checkouts
    // may run a script compiled in the other one.
    let root =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").ok_or("CARGO_MANIFEST_DIR unset")?);
    for p in PROTOS {
        println!("cargo:rerun-if-changed={}", root.join(p).display());
    }
    let fds = protox::compile(PROTOS, [root])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
