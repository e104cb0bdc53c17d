//! Compiles `proto/example.proto` without `protoc`: protox builds the
//! descriptor set and tonic-prost-build generates the client and server.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/example.proto");
    let fds = protox::compile(["example.proto"], ["proto"])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
