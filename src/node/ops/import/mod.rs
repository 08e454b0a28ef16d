//! `import`: moving a key that exists whole elsewhere into shares (issue 21,
//! item 4). The admin's workstation deals the key (`protocol::import`),
//! seals each member's point to its node's certificate key and signs the
//! request with the dealing as its parameters (`params.rs`). The operation
//! runs through the generic admin proposal (`Operation::Admin`):
//!
//! 1. every committee member checks the signed request (as for every key
//!    change), opens its own sealed point with its certificate key and
//!    checks it against the commitments and the approved public key: a
//!    member whose point fails refuses, naming itself, before it records
//!    the request id, claims a session or stores anything;
//! 2. the members run a complete refresh from their share-only parties,
//!    which builds the pairwise signing state and re-randomizes every share
//!    (the dealt points no longer combine with the shares that sign), and
//!    each stores its refreshed share as `Generated` with a receipt;
//! 3. the coordinator activates the key on every member with the
//!    certificate of every member's receipt, as a keygen does (a member that
//!    missed it gets it at the next probe).

pub mod params;

use sha2::{Digest, Sha256};

use self::params::{ImportParams, SealBinding};
use super::keygen::{generated_statement, keygen_binding};
use super::OpKind;
use crate::domain::{ExecutionId, KeyId, KeyType, NodeName, Threshold};
use crate::node::activation::Certificate;
use crate::node::admin::admin_nonce;
use crate::node::admin_request::{AdminOp, AdminRequest, SignedAdmin};
use crate::node::committee::reasons;
use crate::node::shares::share_bytes;
use crate::node::{now_unix, Node, NodeError, Operation, Outcome, Proposal};
use crate::protocol::reshare::Member;
use crate::protocol::scheme;
use crate::storage::{KeyRecord, KeyState, RotationProof};

/// The one step the coordinator proposes (the body of `Operation::Admin`).
pub const STEP: &[u8] = b"thresig/import/receive-and-refresh/v1";

/// What an import's execution id binds beside the nonce (which binds the
/// signed request, parameters included): threshold, committee, key type and
/// a digest of the parameters.
fn binding(r: &AdminRequest, key_type: KeyType) -> Vec<u8> {
    let mut b = keygen_binding(r.threshold, &r.committee);
    b.extend_from_slice(key_type.as_str().as_bytes());
    b.extend_from_slice(&Sha256::digest(&r.params));
    b
}

/// The execution id of the import `r` asks for, under `nonce`.
pub fn eid(r: &AdminRequest, key_type: KeyType, nonce: &[u8]) -> ExecutionId {
    OpKind::Admin(AdminOp::Import).eid(&r.key_id, 0, &r.committee, &binding(r, key_type), nonce)
}

/// What every node checks of an import request before it takes part, and
/// the coordinator before it proposes: the parameters decode, there is one
/// commitment per unit of threshold and one sealed point per member, the
/// public key is a key of the type, and the committee is valid.
pub(crate) fn check_request(
    r: &AdminRequest,
    roster: &[NodeName],
) -> Result<(ImportParams, KeyType, Threshold), String> {
    let key_type = r.key_type.ok_or("an import request names the key type")?;
    let t = Threshold::new(r.threshold, r.committee.len()).map_err(|e| e.to_string())?;
    for (i, m) in r.committee.iter().enumerate() {
        if !roster.contains(m) {
            return Err(format!("node {m} is not in the cluster roster"));
        }
        if r.committee[..i].contains(m) {
            return Err(format!("node {m} is listed twice in the committee"));
        }
    }
    let p = ImportParams::decode(&r.params).map_err(|e| format!("import parameters: {e}"))?;
    if p.commitments.len() != usize::from(t.t()) {
        return Err(format!(
            "import parameters: {} commitments for threshold {}",
            p.commitments.len(),
            t.t()
        ));
    }
    if p.sealed.len() != r.committee.len() {
        return Err(format!(
            "import parameters: {} sealed points for a committee of {}",
            p.sealed.len(),
            r.committee.len()
        ));
    }
    if scheme::import_public_key_ok(key_type, &p.public_key).is_err() {
        return Err(format!(
            "import parameters: the public key is not a {key_type} key"
        ));
    }
    Ok((p, key_type, t))
}

/// What a member's checks of an import step give (`check_import_step`).
pub(crate) struct Checked {
    params: ImportParams,
    key_type: KeyType,
    t: Threshold,
    hollow: crate::protocol::KeyShare,
    package: Vec<u8>,
    expected: ExecutionId,
}

/// A member's answer: the key it stored and its receipt.
struct Answer {
    public_key: Vec<u8>,
    package_hash: [u8; 32],
    receipt: crate::node::request::ClientAuth,
}

impl Answer {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        params::field(&mut out, &self.public_key);
        params::field(&mut out, &self.package_hash);
        params::field(&mut out, &Certificate(vec![self.receipt.clone()]).encode());
        out
    }

    fn decode(b: &[u8]) -> Result<Self, String> {
        let mut f = params::Fields(b);
        let public_key = f.next("answer: public key")?;
        let hash = f.next("answer: package hash")?;
        let cert = f.next("answer: receipt")?;
        f.end("answer")?;
        let mut receipts = Certificate::decode(cert)?.0;
        let receipt = receipts
            .pop()
            .filter(|_| receipts.is_empty())
            .ok_or("not one receipt")?;
        Ok(Self {
            public_key: public_key.to_vec(),
            package_hash: hash.try_into().map_err(|_| "package hash: not 32 bytes")?,
            receipt,
        })
    }
}

impl Node {
    /// Runs the import a signed admin request asks for, with this node
    /// coordinating; returns the key as this node holds it.
    pub async fn import(&self, signed: &SignedAdmin) -> Result<KeyRecord, NodeError> {
        self.admit_admin_request(signed, AdminOp::Import)?;
        let r = &signed.request;
        let (params, key_type, _) =
            check_request(r, &self.roster).map_err(NodeError::InvalidArgument)?;
        self.check_name_free(&r.key_id, &r.committee)?;
        let committee = r.committee.clone();
        let down = self.unreachable(&committee).await;
        if !down.is_empty() {
            return Err(NodeError::Unavailable(format!(
                "an import needs every committee node; unreachable: {}; retry when they are back",
                reasons(&down)
            )));
        }
        let nonce = admin_nonce(signed)?;
        let eid = eid(r, key_type, &nonce);
        crate::node::note_eid(&eid);
        let proposal = Proposal {
            eid,
            nonce,
            admin: Some(Box::new(signed.clone())),
            op: Operation::Admin {
                key_id: r.key_id.clone(),
                action: AdminOp::Import,
                body: STEP.to_vec(),
            },
        };
        let mut receipts = Vec::with_capacity(committee.len());
        let mut confirmation = None;
        for (n, o) in self.propose_all(&committee, proposal).await? {
            let Outcome::Admin { body } = o else {
                return Err(NodeError::Internal(format!(
                    "node {n} answered the import with another outcome"
                )));
            };
            let a = Answer::decode(&body)
                .map_err(|e| NodeError::Internal(format!("node {n}'s import answer: {e}")))?;
            if a.public_key != params.public_key {
                return Err(NodeError::Aborted(format!(
                    "node {n} stored another public key than the one imported; the key is \
                     activated nowhere"
                )));
            }
            match confirmation {
                None => confirmation = Some(a.package_hash),
                Some(h) if h != a.package_hash => {
                    return Err(NodeError::Aborted(format!(
                        "node {n} reports a different public key package; the key is activated \
                         nowhere"
                    )))
                }
                Some(_) => {}
            }
            receipts.push(a.receipt);
        }
        let confirmation =
            confirmation.ok_or_else(|| NodeError::Internal("empty committee".into()))?;
        let activate = Proposal {
            eid,
            nonce: Vec::new(),
            admin: None,
            op: Operation::Activate {
                key_id: r.key_id.clone(),
                epoch: 0,
                confirmation,
                certificate: Certificate(receipts),
            },
        };
        let failed = self.call_with_retries(&committee, &activate).await;
        if !failed.is_empty() {
            return Err(NodeError::Unavailable(format!(
                "key {} was imported on every committee node but is not yet active on: {}; it \
                 activates there when a node where it is active next signs with it",
                r.key_id,
                reasons(&failed)
            )));
        }
        tracing::info!(key = %r.key_id, eid = %eid, "key imported and refreshed on every member");
        match self.store.key(&r.key_id)? {
            Some(rec) => Ok(rec),
            // A coordinator outside the committee holds no record of it.
            None => Ok(KeyRecord {
                schema: crate::storage::records_schema(),
                key_id: r.key_id.clone(),
                public_key: params.public_key.clone(),
                chain_code: params.chain_code,
                committee: committee.iter().map(|c| c.as_str().to_owned()).collect(),
                threshold: u8::try_from(r.threshold).unwrap_or(u8::MAX),
                epoch: 0,
                state: KeyState::Active,
                package_hash: confirmation,
                package: String::new(),
                rotation: None,
                created_unix: now_unix(),
                key_type,
                lifecycle_seq: 0,
            }),
        }
    }

    /// A member's checks of an import step, all made before anything is
    /// claimed, spent or stored (`check_admin_proposal` runs them before the
    /// request id is recorded; the step runs them again): the request, this
    /// node's place, the name, the execution id, and its own point, opened
    /// with its certificate key and checked against the approved
    /// commitments and public key. Gives this member's share-only party.
    pub(crate) fn check_import_step(
        &self,
        r: &AdminRequest,
        p: &Proposal,
    ) -> Result<Checked, NodeError> {
        let (params, key_type, t) =
            check_request(r, &self.roster).map_err(NodeError::InvalidArgument)?;
        let me = self.check_members(&r.committee)?;
        self.check_name_free(&r.key_id, &r.committee)?;
        let expected = eid(r, key_type, &p.nonce);
        if p.eid != expected {
            return Err(NodeError::PermissionDenied(
                "execution id does not match the proposal".into(),
            ));
        }
        let sealed = params
            .sealed
            .get(usize::from(me).saturating_sub(1))
            .ok_or_else(|| NodeError::InvalidArgument("no sealed point for this node".into()))?;
        let point = self
            .signer
            .open_import_point(
                &params,
                sealed,
                SealBinding {
                    cluster: &r.cluster,
                    key_id: r.key_id.as_str(),
                    member: self.name.as_str(),
                },
            )
            .map_err(NodeError::PermissionDenied)?;
        let (hollow, package) = scheme::import_receive(
            key_type,
            &params.commitments,
            point.as_ref(),
            &params.public_key,
            Member {
                me,
                new_t: t.t(),
                new_n: t.n(),
                chain_code: params.chain_code,
            },
            p.eid.as_bytes(),
        )
        .map_err(|e| {
            NodeError::PermissionDenied(format!(
                "the point dealt to this node does not match the import's commitments and public \
                 key ({e}); nothing was stored"
            ))
        })?;
        Ok(Checked {
            params,
            key_type,
            t,
            hollow,
            package,
            expected,
        })
    }

    /// A member's part of an import (see the module documentation).
    pub(crate) async fn participate_import(
        &self,
        p: &Proposal,
        key_id: &KeyId,
        body: &[u8],
    ) -> Result<Outcome, NodeError> {
        if body != STEP {
            return Err(NodeError::InvalidArgument(
                "an import step this node does not know".into(),
            ));
        }
        let signed = p
            .admin
            .as_deref()
            .ok_or_else(|| NodeError::PermissionDenied("an import without its request".into()))?;
        let r = &signed.request;
        if r.key_id != *key_id {
            return Err(NodeError::PermissionDenied(
                "the step is for another key than its request".into(),
            ));
        }
        let Checked {
            params,
            key_type,
            t,
            hollow,
            package,
            expected,
        } = self.check_import_step(r, p)?;
        let committee = &r.committee;
        let _lock = self.hold_maintenance(key_id, p.eid, self.timeouts.session())?;
        let mut sid = p.eid.as_bytes().to_vec();
        sid.extend_from_slice(b"/refresh");
        let out = self
            .claim_session(&p.eid, expected, committee)?
            .run_session(scheme::refresh(hollow, &package, &sid))
            .await?;
        if scheme::package_key(key_type, &out.package).map(|k| k.to_vec())
            != Some(params.public_key.clone())
        {
            return Err(NodeError::Internal(
                "the refreshed package is of another key".into(),
            ));
        }
        let mut h = Sha256::new();
        h.update(&out.package);
        h.update(params.chain_code);
        let package_hash: [u8; 32] = h.finalize().into();
        let rec = KeyRecord {
            schema: crate::storage::records_schema(),
            key_id: key_id.clone(),
            public_key: params.public_key.clone(),
            chain_code: params.chain_code,
            committee: committee.iter().map(|c| c.as_str().to_owned()).collect(),
            threshold: t.t(),
            epoch: 0,
            state: KeyState::Generated,
            package_hash,
            package: hex::encode(&out.package),
            rotation: Some(RotationProof {
                eid: *p.eid.as_bytes(),
                confirmation: package_hash,
            }),
            created_unix: now_unix(),
            key_type,
            lifecycle_seq: 0,
        };
        self.store.insert_key(&rec, &share_bytes(&out.share)?)?;
        tracing::info!(key = %key_id, eid = %p.eid, "imported key refreshed and stored; awaits activation");
        let receipt = self.receipt(&generated_statement(&rec, p.eid.as_bytes()))?;
        Ok(Outcome::Admin {
            body: Answer {
                public_key: rec.public_key,
                package_hash,
                receipt,
            }
            .encode(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_round_trips_and_damage_is_an_error() {
        let a = Answer {
            public_key: vec![2; 33],
            package_hash: [7; 32],
            receipt: crate::node::request::ClientAuth {
                chain: vec![vec![1, 2]],
                scheme: 0x0403,
                signature: vec![9; 70],
            },
        };
        let b = a.encode();
        let back = Answer::decode(&b).unwrap();
        assert_eq!(
            (back.public_key, back.package_hash),
            (a.public_key, a.package_hash)
        );
        assert_eq!(back.receipt, a.receipt);
        for cut in 0..b.len() {
            assert!(Answer::decode(&b[..cut]).is_err(), "cut at {cut}");
        }
    }
}
