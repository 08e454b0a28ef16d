//! Peer plane and connection security: rustls configurations, identity from
//! certificates, the tonic peer service and the client side of node-to-node
//! calls. The only place (with `api/`) that knows gRPC.
// Numbers from peers are never trusted for arithmetic: every operation here is
// checked, saturating, or allowed with its reason.
#![deny(clippy::arithmetic_side_effects)]

mod chain_memo;
pub mod conn;
pub mod expiry;
mod handshakes;
pub mod identity;
pub mod peer;
mod refusal;
pub mod request_auth;
pub mod tls;
mod wire;
mod wire_admin;
mod wire_auth;
#[cfg(test)]
mod wire_fuzz_tests;
mod wire_records;
mod wire_status;

pub use conn::{
    dial, incoming, Authenticated, Connect, ConnectionCaps, Plane, MAX_CONNECTIONS_PER_CLIENT,
    MAX_CONNECTIONS_PER_NODE,
};
pub use identity::{identity_of, Identity};
