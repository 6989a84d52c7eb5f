//! Compiles the network API contract (`proto/frostgate/v1/signer.proto`) with protox (pure Rust,
//! no protoc) into tonic client and server code.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/frostgate/v1/signer.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
