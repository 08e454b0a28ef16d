//! Generated gRPC code for the versioned protos in `proto/`.
#![allow(
    clippy::all,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs
)]

pub mod peer {
    tonic::include_proto!("thresig.peer.v1");
}
pub mod signer {
    tonic::include_proto!("thresig.signer.v1");
}
pub mod admin {
    tonic::include_proto!("thresig.admin.v1");
}
