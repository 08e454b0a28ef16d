//! Activation certificates: a key moves to a new epoch (keygen, rotation,
//! reshare, a repair's closing refresh) on a node only with a signed staging
//! receipt from every member of the committee that holds the new epoch. Each
//! receipt is a member's signature, with the key of its node certificate,
//! over what it staged (`Statement`). Whoever delivers the certificate
//! (coordinator, probe answer, catch-up) is irrelevant, and without every
//! receipt nothing is activated and nothing deleted: a member that did not
//! stage (it missed a message, or a hostile member withheld one) signs no
//! receipt, so no single member can move part of the committee to an epoch
//! the rest cannot reach.
//!
//! Canonical statement bytes, every field length-prefixed with a u32
//! big-endian byte count:
//!
//! ```text
//! field("thresig/staged/v1") field(key id) field(key type)
//! field(eid, 32 bytes) field(epoch, u64 big-endian)
//! field(confirmation, 32 bytes) field(public key, compressed SEC1)
//! ```

use serde::{Deserialize, Serialize};

use super::request::ClientAuth;
use super::{Node, NodeError};
use crate::domain::{KeyId, KeyType, NodeName};

/// Domain tag of a staging receipt.
pub const RECEIPT_TAG: &str = "thresig/staged/v1";

/// What a member signs once its share of `epoch` is stored durably.
#[derive(Debug, Clone, Copy)]
pub struct Statement<'a> {
    pub key_id: &'a KeyId,
    pub key_type: KeyType,
    pub eid: &'a [u8; 32],
    pub epoch: u64,
    pub confirmation: &'a [u8; 32],
    pub public_key: &'a [u8],
}

fn field(out: &mut Vec<u8>, b: &[u8]) {
    let len = u32::try_from(b.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(b);
}

impl Statement<'_> {
    /// The bytes a member signs (see the module documentation).
    pub fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(192);
        field(&mut out, RECEIPT_TAG.as_bytes());
        field(&mut out, self.key_id.as_str().as_bytes());
        field(&mut out, self.key_type.as_str().as_bytes());
        field(&mut out, self.eid);
        field(&mut out, &self.epoch.to_be_bytes());
        field(&mut out, self.confirmation);
        field(&mut out, self.public_key);
        out
    }
}

/// One receipt from each member of a committee (any order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Certificate(pub Vec<ClientAuth>);

#[derive(Serialize, Deserialize)]
struct StoredReceipt {
    chain: Vec<String>,
    scheme: u16,
    signature: String,
}

impl Certificate {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The bytes the store keeps (JSON; the store MACs them).
    pub fn encode(&self) -> Vec<u8> {
        let receipts: Vec<StoredReceipt> = self
            .0
            .iter()
            .map(|r| StoredReceipt {
                chain: r.chain.iter().map(hex::encode).collect(),
                scheme: r.scheme,
                signature: hex::encode(&r.signature),
            })
            .collect();
        serde_json::to_vec(&receipts).unwrap_or_default()
    }

    /// The certificate the store kept (`encode`'s bytes).
    pub fn decode(raw: &[u8]) -> Result<Self, String> {
        let receipts: Vec<StoredReceipt> =
            serde_json::from_slice(raw).map_err(|e| format!("activation certificate: {e}"))?;
        receipts
            .into_iter()
            .map(|r| {
                Ok(ClientAuth {
                    chain: r
                        .chain
                        .iter()
                        .map(hex::decode)
                        .collect::<Result<_, _>>()
                        .map_err(|e| format!("activation certificate: {e}"))?,
                    scheme: r.scheme,
                    signature: hex::decode(r.signature)
                        .map_err(|e| format!("activation certificate: {e}"))?,
                })
            })
            .collect::<Result<Vec<_>, String>>()
            .map(Self)
    }
}

/// Signs statements with the key of this node's certificate.
pub trait ReceiptSigner: Send + Sync + 'static {
    fn sign(&self, message: &[u8]) -> Result<ClientAuth, String>;

    /// Opens a point of an import sealed to this node's certificate key
    /// (`ops::import::params`).
    fn open_import_point(
        &self,
        params: &crate::node::ops::import::params::ImportParams,
        sealed: &crate::node::ops::import::params::SealedPoint,
        binding: crate::node::ops::import::params::SealBinding<'_>,
    ) -> Result<zeroize::Zeroizing<[u8; 32]>, String>;
}

impl Node {
    /// This node's receipt for `st` (it stored what `st` names durably).
    pub(crate) fn receipt(&self, st: &Statement<'_>) -> Result<ClientAuth, NodeError> {
        self.signer
            .sign(&st.bytes())
            .map_err(|e| NodeError::Internal(format!("signing a staging receipt: {e}")))
    }

    /// Checks that `cert` holds a valid receipt for `st` from every member
    /// of `committee` and from nobody else: each chains to this node's CA
    /// (validity, CRL), carries a `node/<name>` identity, and signs `st`.
    pub(crate) fn check_certificate(
        &self,
        committee: &[String],
        st: &Statement<'_>,
        cert: &Certificate,
    ) -> Result<(), NodeError> {
        let refuse = |why: String| {
            NodeError::PermissionDenied(format!(
                "activation of epoch {} of key {} refused: {why}",
                st.epoch, st.key_id
            ))
        };
        if cert.is_empty() {
            return Err(refuse(
                "no activation certificate (a receipt from every committee member)".into(),
            ));
        }
        if cert.0.len() > committee.len() {
            return Err(refuse(format!(
                "{} receipts for a committee of {}",
                cert.0.len(),
                committee.len()
            )));
        }
        let message = st.bytes();
        let mut signed: Vec<NodeName> = Vec::with_capacity(committee.len());
        for r in &cert.0 {
            let who = self
                .verifier
                .verify_node(r, &message)
                .map_err(|e| refuse(format!("a receipt does not check out: {e}")))?;
            if !committee.iter().any(|m| m == who.as_str()) {
                return Err(refuse(format!("node {who} is not in the committee")));
            }
            if signed.contains(&who) {
                return Err(refuse(format!("node {who} signed twice")));
            }
            signed.push(who);
        }
        let missing: Vec<&str> = committee
            .iter()
            .filter(|m| !signed.iter().any(|s| s.as_str() == m.as_str()))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Err(refuse(format!(
                "no staging receipt from {}",
                missing.join(", ")
            )));
        }
        Ok(())
    }

    /// The activation certificate this node keeps for `key_id`'s active
    /// epoch (empty if none was kept).
    pub(crate) fn kept_certificate(&self, key_id: &KeyId) -> Certificate {
        match self.store.activation(key_id) {
            Ok(Some(raw)) => Certificate::decode(&raw).unwrap_or_else(|e| {
                tracing::warn!(key = %key_id, error = %e, "kept activation certificate unreadable");
                Certificate::default()
            }),
            _ => Certificate::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_differ_in_every_field() {
        let k = KeyId::parse("k").unwrap();
        let k2 = KeyId::parse("k2").unwrap();
        let base = Statement {
            key_id: &k,
            key_type: KeyType::Secp256k1,
            eid: &[1; 32],
            epoch: 3,
            confirmation: &[2; 32],
            public_key: &[3; 33],
        };
        let variants = [
            Statement {
                key_id: &k2,
                ..base
            },
            Statement {
                key_type: KeyType::P256,
                ..base
            },
            Statement {
                eid: &[9; 32],
                ..base
            },
            Statement { epoch: 4, ..base },
            Statement {
                confirmation: &[9; 32],
                ..base
            },
            Statement {
                public_key: &[9; 33],
                ..base
            },
        ];
        for v in variants {
            assert_ne!(v.bytes(), base.bytes());
        }
    }

    #[test]
    fn certificates_round_trip_and_garbage_is_an_error() {
        let c = Certificate(vec![ClientAuth {
            chain: vec![vec![1, 2, 3], vec![4]],
            scheme: 0x0403,
            signature: vec![5; 70],
        }]);
        assert_eq!(Certificate::decode(&c.encode()).unwrap(), c);
        for junk in [
            &b""[..],
            b"[",
            b"[{\"chain\":[\"zz\"],\"scheme\":1,\"signature\":\"\"}]",
            &[0xff; 40],
        ] {
            assert!(Certificate::decode(junk).is_err());
        }
    }
}
