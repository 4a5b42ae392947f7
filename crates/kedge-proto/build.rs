//! Compiles the .proto files with protox (a protobuf compiler in Rust), so building kedge needs
//! no `protoc` on the machine: only cargo.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/runtime/v1/api.proto"];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        // Edged is a CRI client; a runtime is the server.
        .build_server(false)
        .compile_fds(fds)?;
    Ok(())
}
