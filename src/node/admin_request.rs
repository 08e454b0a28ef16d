//! An admin's signed request to change a key, and the approvals behind it.
//! Every node that takes part in the change (participants, dealers, new
//! members, a member told to retire) checks the approvals itself, against its
//! own policy, before it stages, pauses, deals or deletes anything
//! (`Node::check_admin_proposal`). A coordinator forwards the request but
//! cannot change a field of it: every node recomputes the bytes.
//!
//! Canonical bytes (what each approving admin signs with the key of its
//! `admin/<name>` certificate), every field length-prefixed with a u32
//! big-endian byte count:
//!
//! ```text
//! field("thresig/admin-request/v2")
//! field(cluster, UTF-8: "<trust domain>/<cluster id>", the cluster id from the
//!       OU "thresig-cluster <id>" of the CA certificate `certs init` made;
//!       "<trust domain>" alone for a CA without one)
//! field(operation, UTF-8: create | rotate | repair | reshare | freeze | unfreeze | delete | unban;
//!       what each takes: `admin_ops.rs`)
//! field(key id, UTF-8)
//! field(key type, UTF-8: secp256k1 | p256; empty when not given)
//! field(committee)     field(name) for each node, in party order (create, reshare)
//! field(threshold, u32 big-endian; 0 when the operation takes none)
//! field(target node, UTF-8; empty unless repair)
//! field(excluded nodes) field(name) for each (empty: none)
//! field(lifecycle sequence, u64 big-endian: freeze, unfreeze, delete: the
//!       key's lifecycle sequence the change applies to (`keys show`); 0 otherwise)
//! field(request id, UTF-8, 1-128 bytes, single use on every node)
//! field(issued at, u64 big-endian Unix seconds)
//! field(expiry, u64 big-endian Unix seconds, at most 7 days after issued at)
//! field(params: the operation's typed parameters, in the encoding its file
//!       under `ops/` defines; this field is absent, not empty, when the
//!       request has none, as for every operation that takes none)
//! ```
//!
//! A node refuses a request for another cluster, one issued more than 5
//! minutes ahead of its clock, and one issued longer ago than its policy's
//! `limits.max_approval_age` (7 days unless set): also when it catches up on
//! a change it missed. Version 1 requests (no cluster, sequence or issue
//! time) are refused.
//!
//! The execution id of the operation binds the request and its approvals:
//! the coordinator's nonce is 32 random bytes followed by
//! `SignedAdmin::digest`, and every node checks that suffix.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use super::admin_ops::{AdminOp, OpSpec, Takes};
use super::request::ClientAuth;
use crate::domain::{KeyId, KeyType, NodeName, MAX_ROSTER};

/// Domain tag of the canonical admin request bytes.
pub const ADMIN_REQUEST_TAG: &str = "thresig/admin-request/v2";
/// The longest cluster name a request may carry (a trust domain, '/', and a
/// 32-digit id).
pub const MAX_CLUSTER_LEN: usize = 300;
/// How far ahead of a node's clock a request may say it was issued.
pub const MAX_ISSUED_AHEAD_SECS: u64 = 300;
/// How far in the future an admin request's expiry may lie: approvals are
/// collected offline, but not for longer than a week.
pub const MAX_ADMIN_EXPIRY_AHEAD_SECS: u64 = 7 * 24 * 3600;
/// The largest typed parameters an operation's request may carry.
pub const MAX_PARAMS: usize = 32 * 1024;
/// At most this many approvals travel with one request.
pub const MAX_APPROVALS: usize = 16;
/// Length of the random part of a coordinator nonce for an admin operation.
pub const NONCE_RANDOM: usize = 32;

/// The fields of an admin request that say which cluster, key state and
/// time it is for, and its id (as they travel beside the operation's own).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stamp {
    pub cluster: String,
    pub lifecycle_seq: u64,
    pub request_id: String,
    pub issued_unix: u64,
    pub expiry_unix: u64,
}

impl Stamp {
    /// The stamp of a request that names no lifecycle sequence.
    pub fn new(cluster: String, request_id: String, issued_unix: u64, expiry_unix: u64) -> Self {
        Self {
            cluster,
            lifecycle_seq: 0,
            request_id,
            issued_unix,
            expiry_unix,
        }
    }
}

/// Every field of an admin request the approving admins sign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminRequest {
    pub operation: AdminOp,
    pub key_id: KeyId,
    /// The key's type: required for create; for other operations, when
    /// given, it must be the key's type.
    pub key_type: Option<KeyType>,
    /// create: the committee (empty: every node of the roster, in roster
    /// order); reshare: the new committee. Empty otherwise.
    pub committee: Vec<NodeName>,
    /// create, reshare: nodes needed to sign. 0 otherwise.
    pub threshold: u32,
    /// repair: the node whose share is rebuilt.
    pub target: Option<NodeName>,
    /// Nodes that must not take part (empty: none).
    pub exclude: Vec<NodeName>,
    /// The cluster the request is for: "<trust domain>/<cluster id>".
    pub cluster: String,
    /// freeze, unfreeze, delete: the key's lifecycle sequence the change
    /// applies to. 0 otherwise.
    pub lifecycle_seq: u64,
    pub request_id: String,
    pub issued_unix: u64,
    pub expiry_unix: u64,
    /// The operation's own typed parameters, in the encoding its file under
    /// `ops/` defines (at most `MAX_PARAMS` bytes); empty for an operation
    /// that takes none (every one before `import`).
    pub params: Vec<u8>,
}

fn field(out: &mut Vec<u8>, b: &[u8]) {
    let len = u32::try_from(b.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(b);
}

fn name_list(names: &[NodeName]) -> Vec<u8> {
    let mut out = Vec::new();
    for n in names {
        field(&mut out, n.as_str().as_bytes());
    }
    out
}

impl AdminRequest {
    /// The bytes every approving admin signs (see the module documentation).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        field(&mut out, ADMIN_REQUEST_TAG.as_bytes());
        field(&mut out, self.cluster.as_bytes());
        field(&mut out, self.operation.label().as_bytes());
        field(&mut out, self.key_id.as_str().as_bytes());
        field(
            &mut out,
            self.key_type.map(|t| t.as_str()).unwrap_or("").as_bytes(),
        );
        field(&mut out, &name_list(&self.committee));
        field(&mut out, &self.threshold.to_be_bytes());
        field(
            &mut out,
            self.target
                .as_ref()
                .map(|t| t.as_str())
                .unwrap_or("")
                .as_bytes(),
        );
        field(&mut out, &name_list(&self.exclude));
        field(&mut out, &self.lifecycle_seq.to_be_bytes());
        field(&mut out, self.request_id.as_bytes());
        field(&mut out, &self.issued_unix.to_be_bytes());
        field(&mut out, &self.expiry_unix.to_be_bytes());
        if !self.params.is_empty() {
            field(&mut out, &self.params);
        }
        out
    }

    /// Checks what a node can check alone: the request id, the fields the
    /// operation takes, and that the request has not expired and does not
    /// expire more than a week out.
    pub fn check_fields(&self, now_unix: u64) -> Result<(), String> {
        if self.request_id.is_empty() || self.request_id.len() > 128 {
            return Err("the admin request id must be 1-128 bytes".into());
        }
        if self.params.len() > MAX_PARAMS {
            return Err(format!(
                "the request's parameters are {} bytes; at most {MAX_PARAMS}",
                self.params.len()
            ));
        }
        super::admin_ops::check_takes(self)?;
        if self.cluster.is_empty() {
            return Err(
                "the admin request names no cluster (version 1 requests are no longer taken: \
                 propose it again with this version's `thresig admin propose`)"
                    .into(),
            );
        }
        if self.issued_unix > now_unix.saturating_add(MAX_ISSUED_AHEAD_SECS) {
            return Err(format!(
                "the admin request {} says it was issued at Unix {}, {} s ahead of this node's \
                 clock; check the clocks",
                self.request_id,
                self.issued_unix,
                self.issued_unix.saturating_sub(now_unix)
            ));
        }
        if self.expiry_unix < now_unix {
            return Err(format!(
                "the admin request {} expired {} s ago (at Unix time {}); every approval of it \
                 has expired with it: collect new approvals",
                self.request_id,
                now_unix.saturating_sub(self.expiry_unix),
                self.expiry_unix
            ));
        }
        if self.expiry_unix < self.issued_unix {
            return Err("the admin request expires before it was issued".into());
        }
        if self.expiry_unix > now_unix.saturating_add(MAX_ADMIN_EXPIRY_AHEAD_SECS)
            || self.expiry_unix.saturating_sub(self.issued_unix) > MAX_ADMIN_EXPIRY_AHEAD_SECS
        {
            return Err(
                "the admin request expires more than 7 days ahead of this node's clock or of its \
                 issue time"
                    .into(),
            );
        }
        Ok(())
    }

    /// The request in plain words, for the approving admin and for logs.
    pub fn describe(&self) -> String {
        super::admin_ops::describe(self)
    }
}

/// The text form of an admin request: the one codec behind the admin API's
/// messages, the peer wire's `AdminAuthorization` and the JSON request file
/// (each moves its fields here; only `parse` reads them). In JSON, `params`
/// is hex and left out when empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestFields {
    pub operation: String,
    pub key_id: String,
    #[serde(default)]
    pub key_type: String,
    #[serde(default)]
    pub committee: Vec<String>,
    #[serde(default)]
    pub threshold: u32,
    #[serde(default)]
    pub target: String,
    #[serde(default)]
    pub exclude: Vec<String>,
    /// The cluster the request is for: "<trust domain>/<cluster id>".
    pub cluster: String,
    /// freeze, unfreeze, delete: the key's lifecycle sequence it applies to.
    #[serde(default)]
    pub lifecycle_seq: u64,
    pub request_id: String,
    pub issued_unix: u64,
    pub expiry_unix: u64,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "hex_out",
        deserialize_with = "hex_in"
    )]
    pub params: Vec<u8>,
}

fn hex_out<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(b))
}

fn hex_in<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let text = String::deserialize(d)?;
    hex::decode(text).map_err(serde::de::Error::custom)
}

impl RequestFields {
    /// The text form of `r`.
    pub fn of(r: &AdminRequest) -> Self {
        let list = |v: &[NodeName]| v.iter().map(ToString::to_string).collect();
        Self {
            operation: r.operation.label().into(),
            key_id: r.key_id.to_string(),
            key_type: r.key_type.map(|t| t.to_string()).unwrap_or_default(),
            committee: list(&r.committee),
            threshold: r.threshold,
            target: r
                .target
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            exclude: list(&r.exclude),
            cluster: r.cluster.clone(),
            lifecycle_seq: r.lifecycle_seq,
            request_id: r.request_id.clone(),
            issued_unix: r.issued_unix,
            expiry_unix: r.expiry_unix,
            params: r.params.clone(),
        }
    }

    /// The request, every field parsed into the node's types (bounded
    /// before anything is parsed); an error names the field. Whether the
    /// operation takes each field is `AdminRequest::check_fields`'s call.
    pub fn parse(self) -> Result<AdminRequest, (&'static str, String)> {
        for (f, list) in [("committee", &self.committee), ("exclude", &self.exclude)] {
            if list.len() > MAX_ROSTER {
                return Err((
                    f,
                    format!(
                        "{} names; a cluster has at most {MAX_ROSTER} nodes",
                        list.len()
                    ),
                ));
            }
        }
        if self.cluster.len() > MAX_CLUSTER_LEN {
            return Err((
                "cluster",
                format!("{} bytes; at most {MAX_CLUSTER_LEN}", self.cluster.len()),
            ));
        }
        if self.request_id.len() > 128 {
            return Err(("request_id", "at most 128 bytes".into()));
        }
        if self.params.len() > MAX_PARAMS {
            return Err((
                "params",
                format!("{} bytes; at most {MAX_PARAMS}", self.params.len()),
            ));
        }
        let names = |raw: &[String], f: &'static str| {
            raw.iter()
                .map(|n| NodeName::parse(n).map_err(|e| (f, e.to_string())))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(AdminRequest {
            operation: AdminOp::parse(&self.operation).map_err(|e| ("operation", e))?,
            key_id: KeyId::parse(&self.key_id).map_err(|e| ("key_id", e.to_string()))?,
            key_type: if self.key_type.is_empty() {
                None
            } else {
                Some(KeyType::parse(&self.key_type).map_err(|e| ("key_type", e.to_string()))?)
            },
            committee: names(&self.committee, "committee")?,
            threshold: self.threshold,
            target: if self.target.is_empty() {
                None
            } else {
                Some(NodeName::parse(&self.target).map_err(|e| ("target", e.to_string()))?)
            },
            exclude: names(&self.exclude, "exclude")?,
            cluster: self.cluster,
            lifecycle_seq: self.lifecycle_seq,
            request_id: self.request_id,
            issued_unix: self.issued_unix,
            expiry_unix: self.expiry_unix,
            params: self.params,
        })
    }
}

/// An admin request with the approvals (signatures over its canonical bytes,
/// each with the approving admin's certificate chain) that travel with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedAdmin {
    pub request: AdminRequest,
    pub approvals: Vec<ClientAuth>,
}

impl SignedAdmin {
    /// SHA-256 over the canonical bytes and every approval, in order: what
    /// the execution id of the operation binds (through the nonce).
    pub fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        let mut part = |b: &[u8]| {
            h.update((b.len() as u64).to_be_bytes());
            h.update(b);
        };
        part(&self.request.canonical_bytes());
        for a in &self.approvals {
            part(&a.scheme.to_be_bytes());
            part(&a.signature);
            part(&(a.chain.len() as u64).to_be_bytes());
            for c in &a.chain {
                part(c);
            }
        }
        h.finalize().into()
    }

    /// Does `nonce` (a coordinator's) bind this request and its approvals?
    pub fn binds(&self, nonce: &[u8]) -> bool {
        nonce.len() == NONCE_RANDOM.saturating_add(32)
            && nonce.get(NONCE_RANDOM..) == Some(self.digest().as_slice())
    }
}

#[cfg(test)]
#[path = "admin_request_tests.rs"]
mod tests;
