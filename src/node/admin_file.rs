//! The JSON form of a signed admin request: the file `thresig admin
//! propose/approve/submit` pass between admins, and what a node keeps of the
//! last freeze, unfreeze or delete of a key (to pass it on to a node that
//! missed it). Nodes never trust the names in it; they check the certificates.

use serde::{Deserialize, Serialize};

pub use super::admin_request::RequestFields;
use super::admin_request::SignedAdmin;
use super::request::ClientAuth;

/// What a request file says it is.
pub const FILE_FORMAT: &str = "thresig-admin-request/v2";

/// A request file: the request's fields and the approvals collected so far.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestFile {
    pub format: String,
    pub request: RequestFields,
    #[serde(default)]
    pub approvals: Vec<ApprovalFile>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalFile {
    /// Informational only: the name the approving admin gave. Nodes read the
    /// identity from the certificate.
    pub admin: String,
    /// Certificate chain, DER in hex, leaf first.
    pub chain: Vec<String>,
    pub signature_scheme: u16,
    /// Hex.
    pub signature: String,
}

impl RequestFile {
    /// The file for `signed`, its approvers named `names` (informational).
    pub fn new(signed: &SignedAdmin, names: &[String]) -> Self {
        Self {
            format: FILE_FORMAT.into(),
            request: RequestFields::of(&signed.request),
            approvals: signed
                .approvals
                .iter()
                .enumerate()
                .map(|(i, a)| ApprovalFile {
                    admin: names.get(i).cloned().unwrap_or_default(),
                    chain: a.chain.iter().map(hex::encode).collect(),
                    signature_scheme: a.scheme,
                    signature: hex::encode(&a.signature),
                })
                .collect(),
        }
    }

    /// The signed request the file holds, and the names it gives its approvers.
    pub fn signed(&self) -> Result<(SignedAdmin, Vec<String>), String> {
        if self.format != FILE_FORMAT {
            return Err(format!(
                "not a thresig admin request file of this version (format {:?}, expected \
                 {FILE_FORMAT:?}; a version 1 file names no cluster or issue time: propose \
                 it again)",
                self.format
            ));
        }
        let request = self
            .request
            .clone()
            .parse()
            .map_err(|(field, e)| format!("request.{field}: {e}"))?;
        let mut approvals = Vec::new();
        for (i, a) in self.approvals.iter().enumerate() {
            let bad =
                |what: &str, e: hex::FromHexError| format!("approvals[{i}].{what}: not hex: {e}");
            approvals.push(ClientAuth {
                chain: a
                    .chain
                    .iter()
                    .map(|c| hex::decode(c).map_err(|e| bad("chain", e)))
                    .collect::<Result<_, _>>()?,
                scheme: a.signature_scheme,
                signature: hex::decode(&a.signature).map_err(|e| bad("signature", e))?,
            });
        }
        let names = self.approvals.iter().map(|a| a.admin.clone()).collect();
        Ok((SignedAdmin { request, approvals }, names))
    }
}

/// What a node keeps of the last freeze, unfreeze or delete it applied to a
/// key: the whole proposal, so that a node that missed it can be handed it
/// and check it itself, exactly as if its coordinator had sent it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LifecycleProof {
    /// Hex.
    pub eid: String,
    /// Hex.
    pub nonce: String,
    pub request: RequestFile,
}

impl LifecycleProof {
    /// The proof of a lifecycle proposal (none for another one).
    pub fn of(p: &super::Proposal) -> Option<Self> {
        let super::Operation::Lifecycle { .. } = p.op else {
            return None;
        };
        let signed = p.admin.as_deref()?;
        Some(Self {
            eid: hex::encode(p.eid.as_bytes()),
            nonce: hex::encode(&p.nonce),
            request: RequestFile::new(signed, &[]),
        })
    }

    /// The proposal again.
    pub fn proposal(&self) -> Result<super::Proposal, String> {
        let (signed, _) = self.request.signed()?;
        let eid = hex::decode(&self.eid)
            .ok()
            .and_then(|b| crate::domain::ExecutionId::from_slice(&b))
            .ok_or("lifecycle proof: bad eid")?;
        let nonce = hex::decode(&self.nonce).map_err(|e| format!("lifecycle proof: nonce: {e}"))?;
        Ok(super::Proposal {
            eid,
            nonce,
            op: super::Operation::Lifecycle {
                key_id: signed.request.key_id.clone(),
                action: signed.request.operation,
            },
            admin: Some(Box::new(signed)),
        })
    }
}
