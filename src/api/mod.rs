//! Client and admin planes: thin gRPC handlers over `node::Node`, the one
//! place that maps errors to gRPC status, and the Rust client that the CLI
//! and validators use.

mod admin_client;
pub mod client;
pub mod ops;
mod services;
mod status;

pub use services::{AdminService, SignerService};
pub use status::status;
