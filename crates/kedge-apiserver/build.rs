//! Compiles Kubernetes' API protobuf definitions (`proto/`) into a descriptor set with protox (a
//! protobuf compiler in Rust: building needs no `protoc`). `src/protobuf.rs` decodes request
//! bodies with it.

const FILES: [&str; 5] = [
    "k8s.io/api/core/v1/generated.proto",
    "k8s.io/api/apps/v1/generated.proto",
    "k8s.io/api/batch/v1/generated.proto",
    "k8s.io/api/autoscaling/v1/generated.proto",
    "k8s.io/api/coordination/v1/generated.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler.include_imports(true);
    compiler.open_files(FILES)?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("k8s.bin");
    std::fs::write(out, compiler.encode_file_descriptor_set())?;
    Ok(())
}
