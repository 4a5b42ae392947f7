//! Compiles the .proto files with protox (a protobuf compiler in Rust), so building kedge needs
//! no `protoc` on the machine: only cargo.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cri = "proto/runtime/v1/api.proto";
    let dmi = "proto/dmi/v1beta1/api.proto";
    for p in [cri, dmi] {
        println!("cargo:rerun-if-changed={p}");
    }
    tonic_prost_build::configure()
        // Edged is a CRI client; a runtime is the server.
        .build_server(false)
        .compile_fds(protox::compile([cri], ["proto"])?)?;
    // The edge serves DeviceManagerService and calls DeviceMapperService (and test mappers do
    // the reverse): both sides of both.
    // Maps as BTreeMaps: the same device always encodes to the same bytes, which the edge
    // hashes to tell whether a mapper must be sent a device again.
    tonic_prost_build::configure()
        .btree_map(".")
        .compile_fds(protox::compile([dmi], ["proto"])?)?;
    Ok(())
}
