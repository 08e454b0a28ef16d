//! Compiles the versioned protos with protox (no protoc binary needed).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/thresig/peer/v1/peer.proto",
        "proto/thresig/signer/v1/signer.proto",
        "proto/thresig/admin/v1/admin.proto",
    ];
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    Ok(())
}
