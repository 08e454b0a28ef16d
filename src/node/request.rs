//! A client's sign request exactly as the client signed it, its canonical
//! bytes, and the check every participant makes of the client's signature
//! over them (through `RequestVerifier`, implemented in `transport/` with the
//! cluster CA). A coordinator can forward a request but cannot change any
//! field of it: every participant recomputes the bytes from the proposal.
//!
//! Canonical bytes (what the client signs), every field length-prefixed with
//! a u32 big-endian byte count:
//!
//! ```text
//! field("thresig/sign-request/v1")
//! field(key id, UTF-8)
//! field(digest, 32 bytes)
//! field(derivation path, UTF-8, as "m/0/1"; "m" for the master key)
//! field(slot)          empty when there is no slot, else
//!                      u32 len | scope UTF-8 | height u64 | round u64 | step u64 (big-endian)
//! field(request id, UTF-8)
//! field(expiry, u64 big-endian Unix seconds)
//! ```
//!
//! A request with a typed payload (`crate::payload`) is signed as v2: the
//! client signs the payload's kind and bytes instead of a digest, and every
//! participant decodes the payload and computes the digest itself:
//!
//! ```text
//! field("thresig/sign-request/v2")
//! field(key id, UTF-8)
//! field(payload kind, UTF-8, e.g. "eth_transaction")
//! field(payload bytes)
//! field(derivation path, UTF-8; "m" for bitcoin_psbt, whose paths come from the PSBT)
//! field(slot)          always empty: every node derives the payload's slot
//!                      (an Ethereum nonce, a Cosmos sequence, a Bitcoin outpoint)
//! field(request id, UTF-8)
//! field(expiry, u64 big-endian Unix seconds)
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::domain::{DerivationPath, Digest32, KeyId, NodeName};

/// Domain tag of the canonical request bytes.
pub const REQUEST_TAG: &str = "thresig/sign-request/v1";
/// Domain tag of the canonical bytes of a request with a typed payload.
pub const REQUEST_TAG_V2: &str = "thresig/sign-request/v2";
/// How far in the future a request's expiry may lie (bounds replay windows
/// and clock skew).
pub const MAX_EXPIRY_AHEAD_SECS: u64 = 600;

/// A position for double-sign protection: per key and scope, positions are
/// ordered by (height, round, step).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub scope: String,
    pub height: u64,
    pub round: u64,
    pub step: u64,
}

impl Slot {
    /// Checks the scope: 1-64 bytes of `A-Z a-z 0-9 . _ : / -`.
    pub fn validate(&self) -> Result<(), String> {
        let ok = !self.scope.is_empty()
            && self.scope.len() <= 64
            && self
                .scope
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._:/-".contains(&b));
        if ok {
            Ok(())
        } else {
            Err(format!(
                "slot scope {:?} must be 1-64 characters of A-Z a-z 0-9 . _ : / -",
                self.scope
            ))
        }
    }

    pub fn position(&self) -> (u64, u64, u64) {
        (self.height, self.round, self.step)
    }
}

impl std::fmt::Display for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}/{}/{}",
            self.scope, self.height, self.round, self.step
        )
    }
}

/// Every field of a sign request the client signs. With a typed payload,
/// `digest` and `path` are those of one of the payload's targets (its
/// `item`): every participant derives them from the payload again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignRequest {
    pub key_id: KeyId,
    pub digest: Digest32,
    pub path: DerivationPath,
    pub slot: Option<Slot>,
    pub request_id: String,
    pub expiry_unix: u64,
    pub payload: Option<Payload>,
}

/// A typed payload as the client sent it, and which of its targets (a
/// PSBT's inputs to sign, in order; 0 for every other kind) a session signs.
#[derive(Clone, PartialEq, Eq)]
pub struct Payload {
    pub kind: crate::payload::Kind,
    pub bytes: std::sync::Arc<[u8]>,
    pub item: u32,
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Payload")
            .field("kind", &self.kind)
            .field("len", &self.bytes.len())
            .field("item", &self.item)
            .finish()
    }
}

fn field(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

impl SignRequest {
    /// The bytes the client signs (see the module documentation).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        if let Some(p) = &self.payload {
            let mut out = Vec::with_capacity(p.bytes.len().saturating_add(160));
            field(&mut out, REQUEST_TAG_V2.as_bytes());
            field(&mut out, self.key_id.as_str().as_bytes());
            field(&mut out, p.kind.as_str().as_bytes());
            field(&mut out, &p.bytes);
            if p.kind.paths_from_payload() {
                field(&mut out, b"m");
            } else {
                field(&mut out, self.path.to_string().as_bytes());
            }
            field(&mut out, &[]);
            field(&mut out, self.request_id.as_bytes());
            field(&mut out, &self.expiry_unix.to_be_bytes());
            return out;
        }
        let mut out = Vec::with_capacity(160);
        field(&mut out, REQUEST_TAG.as_bytes());
        field(&mut out, self.key_id.as_str().as_bytes());
        field(&mut out, &self.digest.0);
        field(&mut out, self.path.to_string().as_bytes());
        let mut slot = Vec::new();
        if let Some(s) = &self.slot {
            field(&mut slot, s.scope.as_bytes());
            slot.extend_from_slice(&s.height.to_be_bytes());
            slot.extend_from_slice(&s.round.to_be_bytes());
            slot.extend_from_slice(&s.step.to_be_bytes());
        }
        field(&mut out, &slot);
        field(&mut out, self.request_id.as_bytes());
        field(&mut out, &self.expiry_unix.to_be_bytes());
        out
    }

    /// SHA-256 of the canonical bytes: what a signing eid binds. With a
    /// payload, also the item, digest, path and slot the session signs.
    pub fn binding(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.canonical_bytes());
        if let Some(p) = &self.payload {
            h.update(p.item.to_be_bytes());
            h.update(self.digest.0);
            let mut rest = Vec::new();
            field(&mut rest, self.path.to_string().as_bytes());
            field(
                &mut rest,
                self.slot
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default()
                    .as_bytes(),
            );
            h.update(rest);
        }
        h.finalize().into()
    }

    /// The id this session's ledger entry has: the request id, and for a
    /// PSBT's later inputs the request id, a unit separator and the item.
    pub fn ledger_id(&self) -> String {
        match &self.payload {
            Some(p) if p.item > 0 => format!("{}\u{1f}{}", self.request_id, p.item),
            _ => self.request_id.clone(),
        }
    }

    /// What identifies the payload's spend in a rolling window: the hash
    /// of its kind, path and bytes (the same transaction from the same
    /// address under another request id, or a PSBT's every input, counts
    /// once; the same bytes from another address are another spend).
    pub fn spend_id(&self) -> Option<String> {
        let p = self.payload.as_ref()?;
        // A PSBT's items carry their inputs' paths; the client signed "m",
        // and the whole PSBT is one spend.
        let path = if p.kind.paths_from_payload() {
            "m".to_owned()
        } else {
            self.path.to_string()
        };
        let mut h = Sha256::new();
        for f in [p.kind.as_str().as_bytes(), path.as_bytes()] {
            h.update((f.len() as u32).to_be_bytes());
            h.update(f);
        }
        h.update(&p.bytes[..]);
        Some(hex::encode(h.finalize()))
    }

    /// The payload kind, or "raw digest".
    pub fn kind_name(&self) -> &'static str {
        self.payload
            .as_ref()
            .map(|p| p.kind.as_str())
            .unwrap_or("raw digest")
    }

    /// Checks the fields a participant can check alone: request id, slot,
    /// and that the request has not expired and does not expire too far out.
    pub fn check_fields(&self, now_unix: u64) -> Result<(), String> {
        if self.request_id.is_empty() || self.request_id.len() > 128 {
            return Err("request id must be 1-128 bytes".into());
        }
        // (A PSBT's later inputs use the unit separator in their ledger ids.)
        if self.request_id.chars().any(char::is_control) {
            return Err("request id must not contain control characters".into());
        }
        // A payload's slot is derived from the payload by every node
        // (`ops/sign/payload.rs`); a client names slots for raw digests only.
        if self.payload.is_none() {
            if let Some(s) = &self.slot {
                s.validate()?;
            }
        }
        if self.expiry_unix < now_unix {
            return Err(format!(
                "request expired {} s ago",
                now_unix.saturating_sub(self.expiry_unix)
            ));
        }
        if self.expiry_unix > now_unix.saturating_add(MAX_EXPIRY_AHEAD_SECS) {
            return Err(format!(
                "request expiry is more than {MAX_EXPIRY_AHEAD_SECS} s ahead of this node's clock"
            ));
        }
        Ok(())
    }
}

/// The client's signature over a request's canonical bytes and its
/// certificate chain (DER, leaf first). `scheme` is the TLS 1.3
/// SignatureScheme code (0x0403 is ECDSA P-256 with SHA-256).
#[derive(Clone, PartialEq, Eq)]
pub struct ClientAuth {
    pub chain: Vec<Vec<u8>>,
    pub scheme: u16,
    pub signature: Vec<u8>,
}

impl std::fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientAuth")
            .field("chain_len", &self.chain.len())
            .field("scheme", &format_args!("{:#06x}", self.scheme))
            .field("signature_len", &self.signature.len())
            .finish()
    }
}

/// Checks a client's certificate chain against the cluster CA (validity,
/// CRL when configured) and its signature over `message`. Returns the
/// client's name from its `client/<name>` identity.
pub trait RequestVerifier: Send + Sync + 'static {
    fn verify(&self, auth: &ClientAuth, message: &[u8]) -> Result<NodeName, String>;
    /// The same check of an admin's approval of an admin request: the chain
    /// must carry an `admin/<name>` identity. Returns the admin's name.
    fn verify_admin(&self, auth: &ClientAuth, message: &[u8]) -> Result<NodeName, String>;
    /// The same check of a node's staging receipt: the chain must carry a
    /// `node/<name>` identity. Returns the node's name.
    fn verify_node(&self, auth: &ClientAuth, message: &[u8]) -> Result<NodeName, String>;
    /// `verify`, with the certificate's validity taken at `at_unix` rather
    /// than now: for evidence that a client signed a request in the past
    /// (its certificate may have expired since). The CA and CRL are today's.
    fn verify_at(
        &self,
        auth: &ClientAuth,
        message: &[u8],
        at_unix: u64,
    ) -> Result<NodeName, String> {
        let _ = at_unix;
        self.verify(auth, message)
    }
    /// Forgets any verification remembered (the CA bundle or CRL changed).
    fn forget(&self) {}
    /// The cluster this node is in, as admin requests name it: "<trust
    /// domain>/<cluster id of the CA>" (`pki::cluster_name`).
    fn cluster(&self) -> String;
}

/// Remembers, for a short while, which (message, chain, signature) triples
/// verified and for which client, so that one request is verified once per
/// node: a coordinator checks it on arrival and again as a participant, and
/// a slot request is checked by the watermark gossip too. Failures are not
/// remembered; a hit needs every byte to be the same.
pub struct CachedVerifier {
    inner: Arc<dyn RequestVerifier>,
    seen: Mutex<HashMap<[u8; 32], (Instant, NodeName)>>,
}

impl CachedVerifier {
    /// How long a verification counts. Requests expire within 600 s anyway,
    /// and certificates and CRLs change on a scale of days.
    const TTL: Duration = Duration::from_secs(60);
    const MAX: usize = 4096;

    pub fn new(inner: Arc<dyn RequestVerifier>) -> Self {
        Self {
            inner,
            seen: Mutex::default(),
        }
    }

    fn fingerprint(auth: &ClientAuth, message: &[u8]) -> [u8; 32] {
        let mut h = Sha256::new();
        let mut part = |b: &[u8]| {
            h.update((b.len() as u64).to_be_bytes());
            h.update(b);
        };
        part(message);
        part(&auth.scheme.to_be_bytes());
        part(&auth.signature);
        for c in &auth.chain {
            part(c);
        }
        h.finalize().into()
    }
}

impl RequestVerifier for CachedVerifier {
    fn cluster(&self) -> String {
        self.inner.cluster()
    }

    fn verify(&self, auth: &ClientAuth, message: &[u8]) -> Result<NodeName, String> {
        let fp = Self::fingerprint(auth, message);
        let now = Instant::now();
        {
            let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((at, client)) = seen.get(&fp) {
                if now.duration_since(*at) < Self::TTL {
                    return Ok(client.clone());
                }
            }
        }
        let client = self.inner.verify(auth, message)?;
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if seen.len() >= Self::MAX {
            seen.retain(|_, (at, _)| now.duration_since(*at) < Self::TTL);
            if seen.len() >= Self::MAX {
                seen.clear();
            }
        }
        seen.insert(fp, (now, client.clone()));
        Ok(client)
    }

    /// Evidence of past requests is rare and is not cached.
    fn verify_at(
        &self,
        auth: &ClientAuth,
        message: &[u8],
        at_unix: u64,
    ) -> Result<NodeName, String> {
        self.inner.verify_at(auth, message, at_unix)
    }

    /// Admin approvals are rare and are not cached.
    fn verify_admin(&self, auth: &ClientAuth, message: &[u8]) -> Result<NodeName, String> {
        self.inner.verify_admin(auth, message)
    }

    /// Receipts are checked at activations only, and are not cached.
    fn verify_node(&self, auth: &ClientAuth, message: &[u8]) -> Result<NodeName, String> {
        self.inner.verify_node(auth, message)
    }

    fn forget(&self) {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.inner.forget();
    }
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
