//! Compiles the network API contract (`proto/frostgate/v1/signer.proto`) with protox (pure Rust,
//! no protoc) into tonic client and server code.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/frostgate/v1/signer.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"])?;
    // Our codec: prost's, with a request that does not decode refused as `malformed_message`.
    tonic_prost_build::configure().codec_path("crate::api::codec::FrostgateCodec").compile_fds(fds)?;
    Ok(())
}
