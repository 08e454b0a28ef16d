//! thresig: threshold ECDSA (secp256k1 and NIST P-256) signing service.
//!
//! A table of contents. Dependencies flow one way:
//! `domain`/`secret` <- `protocol`, `storage` <- `node` <- `transport`, `api` <- `cli`.
//! `protocol` does no I/O and is the only module that names the engine
//! crate; `protocol` and `storage` never import each other; only
//! `transport`, `api` and `proto` know gRPC.
//!
//! - `domain`: validated newtypes (`KeyId`, `NodeName`, `ExecutionId`,
//!   `Threshold`, `DerivationPath`, `KeyType`); no I/O.
//! - `secret`: secret bytes and keys over `secrecy` + `zeroize`.
//! - `codec`: the bounded message encoding.
//! - `protocol`: the engine boundary, one round-based state machine per
//!   operation, generic over the curve; `protocol::scheme` picks the curve
//!   from a key type, and shares are opaque (`KeyShare`) above it.
//! - `bip32`: independent public derivation for both curves.
//! - `payload`: typed payloads (Ethereum, Bitcoin PSBT, Cosmos SignDoc)
//!   decoded and hashed with each chain's crates, and the finished output;
//!   no I/O, beside `protocol` in the layering.
//! - `storage`: the node's store (records, sealed shares, ledger,
//!   watermarks, eids, audit), with pure double-sign rules and pinned formats.
//! - `node`: orchestration, one room per operation (`node/ops`), committee
//!   state, authorization, typed errors; talks to peers only via `PeerNet`.
//! - `transport`: the peer plane (mTLS, identities, gRPC service and client,
//!   wire conversions, refusals with reason codes).
//! - `api`: the client and admin planes, the one error-to-status map, the
//!   Rust client, the ops plane.
//! - `server`: wires a node's listeners, services and shutdown.
//! - `config`: the node config file, validated.
//! - `pki`: the development certificate authority.
//! - `cluster`: a local cluster on 127.0.0.1 (demo, bench, tests).
//! - `cli`: one file per command; `main.rs` only dispatches.
//! - `telemetry`, `hardening`: logging and metrics; core dumps off.
//! - `proto`: the generated protobuf code.

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
pub mod payload;
pub mod pki;
pub mod proto;
pub mod protocol;
pub mod secret;
pub mod server;
pub mod storage;
pub mod telemetry;
pub mod transport;
