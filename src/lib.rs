//! thresig: threshold ECDSA (secp256k1) signing service.
//!
//! Module map (dependencies flow one way):
//! `domain`/`secret` <- `protocol`, `storage` <- `node` <- `transport`, `api` <- `cli`.
//! `protocol` does no I/O; only `transport`, `api` and `proto` know gRPC.

pub mod api;
pub mod bip32;
pub mod cli;
pub mod cluster;
pub mod codec;
pub mod config;
pub use api::client;
pub mod domain;
pub mod hardening;
pub mod node;
pub mod pki;
pub mod proto;
pub mod protocol;
pub mod secret;
pub mod server;
pub mod storage;
pub mod telemetry;
pub mod transport;
