//! Compiles the network API contract (`proto/frostgate/v1/signer.proto`) and the signing
//! service's (`proto/frostgate/v1/service.proto`) with protox (pure Rust, no protoc) into tonic
//! client and server code.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/frostgate/v1/signer.proto", "proto/frostgate/v1/service.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    // Our codec: prost's, with a request that does not decode refused as `malformed_message`.
    tonic_prost_build::configure().codec_path("crate::api::codec::FrostgateCodec").compile_fds(fds)?;
    Ok(())
}
