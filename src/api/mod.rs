//! Client and admin planes: thin gRPC handlers over `node::Node`, the one
//! place that maps errors to gRPC status, and the Rust client that the CLI
//! and validators use.

mod admin_client;
mod admin_fields;
mod admin_service;
mod admin_submit;
pub mod client;
mod key_info;
pub mod ops;
mod reload;
mod services;
mod sign_response;
mod status;
mod status_pb;
pub mod too_large;

pub use admin_service::AdminService;
pub use reload::{ReloadReport, Reloader};
pub use services::SignerService;
pub use status::status;
