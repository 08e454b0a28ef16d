//! Key generation: the coordinator picks the committee and proposes; every
//! committee node checks the proposal itself, runs the dealerless keygen and
//! stores its share as `Generated`. Once every node reported the same public
//! key package, the coordinator activates the key on every node with that
//! proof, as a rotation activates an epoch; a failed keygen is released
//! (each node forgets its generated share). A node that missed the
//! activation gets it from the next node that probes it before signing.
//! Both roles and the keygen execution id live here.

use std::time::Instant;

use sha2::{Digest, Sha256};

use super::OpKind;
use crate::domain::{ExecutionId, KeyId, KeyType, NodeName, Threshold};
use crate::node::activation::{Certificate, Statement};
use crate::node::admin::admin_nonce;
use crate::node::admin_request::{AdminOp, SignedAdmin};
use crate::node::committee::reasons;
use crate::node::faults;
use crate::node::shares::share_bytes;
use crate::node::{names, now_unix, Node, NodeError, Operation, Outcome, Proposal};
use crate::protocol::scheme;
use crate::storage::{KeyRecord, KeyState, RotationProof};

/// The request digest a keygen eid binds: threshold and committee order.
pub fn keygen_binding(threshold: u32, committee: &[NodeName]) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(threshold.to_be_bytes());
    for c in committee {
        h.update((c.as_str().len() as u32).to_be_bytes());
        h.update(c.as_str());
    }
    h.finalize().to_vec()
}

/// The execution id of a keygen of a `key_type` key `key_id` by `committee`
/// with `threshold`.
pub fn eid(
    key_id: &KeyId,
    key_type: KeyType,
    threshold: u32,
    committee: &[NodeName],
    nonce: &[u8],
) -> ExecutionId {
    let mut binding = keygen_binding(threshold, committee);
    binding.extend_from_slice(key_type.as_str().as_bytes());
    OpKind::Keygen.eid(key_id, 0, committee, &binding, nonce)
}

impl Node {
    /// Runs a distributed key generation as the signed admin request asks:
    /// its key id, key type, threshold and committee (default: every node).
    pub async fn create_key(&self, signed: &SignedAdmin) -> Result<KeyRecord, NodeError> {
        self.admit_admin_request(signed, AdminOp::Create)?;
        let r = &signed.request;
        let (key_id, threshold) = (&r.key_id, r.threshold);
        let key_type = r.key_type.unwrap_or_default();
        let committee = if r.committee.is_empty() {
            self.roster.clone()
        } else {
            r.committee.clone()
        };
        Threshold::new(threshold, committee.len())
            .map_err(|e| NodeError::InvalidArgument(e.to_string()))?;
        for (i, m) in committee.iter().enumerate() {
            if !self.roster.contains(m) {
                return Err(NodeError::InvalidArgument(format!(
                    "node {m} is not in the cluster roster"
                )));
            }
            if committee[..i].contains(m) {
                return Err(NodeError::InvalidArgument(format!(
                    "node {m} is listed twice in the committee"
                )));
            }
        }
        self.check_name_free(key_id, &committee)?;
        let down = self.unreachable(&committee).await;
        if !down.is_empty() {
            let list = reasons(&down);
            return Err(NodeError::Unavailable(format!(
                "keygen needs every committee node; unreachable: {list}; retry when they are back"
            )));
        }
        let nonce = admin_nonce(signed)?;
        let eid = eid(key_id, key_type, threshold, &committee, &nonce);
        crate::node::note_eid(&eid);
        let started = Instant::now();
        let proposal = Proposal {
            eid,
            nonce,
            admin: Some(Box::new(signed.clone())),
            op: Operation::Keygen {
                key_id: key_id.clone(),
                key_type,
                threshold,
                committee: committee.clone(),
            },
        };
        let results = self.propose_all(&committee, proposal).await?;
        let mut first: Option<(Vec<u8>, [u8; 32], [u8; 32])> = None;
        let mut receipts = Vec::with_capacity(committee.len());
        for (n, o) in results {
            let Outcome::Keygen {
                public_key,
                chain_code,
                package_hash,
                receipt,
            } = o
            else {
                return Err(NodeError::Internal(format!(
                    "node {n} answered keygen with another outcome"
                )));
            };
            match &first {
                None => first = Some((public_key, chain_code, package_hash)),
                Some(f) if f.2 != package_hash || f.0 != public_key => {
                    return Err(NodeError::Aborted(format!(
                        "node {n} reports a different public key package; the key is activated \
                         nowhere"
                    )));
                }
                Some(_) => {}
            }
            receipts.push(*receipt);
        }
        let (public_key, chain_code, package_hash) =
            first.ok_or_else(|| NodeError::Internal("empty committee".into()))?;
        faults::check(&self.name, faults::points::COORDINATOR_BEFORE_ACTIVATE)?;
        // Every node generated the same key: activate it everywhere with
        // that proof. From here on the key exists; a node that misses the
        // activation gets it at the next signing probe.
        let activate = Proposal {
            eid,
            nonce: Vec::new(),
            admin: None,
            op: Operation::Activate {
                key_id: key_id.clone(),
                epoch: 0,
                confirmation: package_hash,
                certificate: Certificate(receipts),
            },
        };
        let failed = self.call_with_retries(&committee, &activate).await;
        if !failed.is_empty() {
            return Err(NodeError::Unavailable(format!(
                "key {key_id} was generated on every committee node but is not yet active on: \
                 {}; it activates there when a node where it is active next signs with it",
                reasons(&failed)
            )));
        }
        tracing::info!(
            key = %key_id,
            eid = %eid,
            ms = started.elapsed().as_millis() as u64,
            committee = %names(&committee),
            "keygen complete",
        );
        match self.store.key(key_id)? {
            Some(rec) => Ok(rec),
            None => Ok(KeyRecord {
                schema: crate::storage::records_schema(),
                key_id: key_id.clone(),
                public_key,
                chain_code,
                committee: committee.iter().map(|c| c.as_str().to_owned()).collect(),
                threshold: threshold as u8,
                epoch: 0,
                state: KeyState::Active,
                package_hash,
                package: String::new(),
                rotation: None,
                created_unix: crate::node::now_unix(),
                key_type,
                lifecycle_seq: 0,
            }),
        }
    }

    /// Refuses a key id this node holds, or held (a deleted key's tombstone).
    /// A key generated here by a keygen that was never activated may be
    /// generated again by the same committee: the new keygen succeeds only
    /// if every member takes part, so none of them holds it active.
    pub(crate) fn check_name_free(
        &self,
        key_id: &KeyId,
        committee: &[NodeName],
    ) -> Result<(), NodeError> {
        match self.store.key(key_id)? {
            None => Ok(()),
            Some(rec)
                if rec.state == KeyState::Generated
                    && rec
                        .committee
                        .iter()
                        .map(String::as_str)
                        .eq(committee.iter().map(NodeName::as_str)) =>
            {
                Ok(())
            }
            Some(rec) => match rec.state {
                KeyState::Deleted(why) => Err(NodeError::AlreadyExists(format!(
                    "key {key_id} was deleted ({why}); a deleted key's name is not reused"
                ))),
                _ => Err(NodeError::AlreadyExists(format!(
                    "key {key_id} already exists"
                ))),
            },
        }
    }

    /// This node's receipt for its generated, not yet active key `rec`
    /// (none unless it is generated and not active).
    pub(crate) fn generated_receipt(
        &self,
        rec: &KeyRecord,
    ) -> Option<crate::node::request::ClientAuth> {
        let proof = rec.rotation.filter(|_| rec.state == KeyState::Generated)?;
        self.receipt(&generated_statement(rec, &proof.eid)).ok()
    }

    /// For a key generated here and not active: asks the committee for its
    /// activation certificate (a member where it is active keeps one; or
    /// every member holds the generated share and sends its receipt) and
    /// activates it with that. Returns whether the key is active now.
    pub(crate) async fn fetch_keygen_activation(&self, rec: &KeyRecord) -> bool {
        self.keygen_activation(rec).await.is_ok()
    }

    /// `fetch_keygen_activation`, saying what the key still waits for when
    /// it cannot be activated yet (for `keys show`).
    pub(crate) async fn keygen_activation(&self, rec: &KeyRecord) -> Result<(), String> {
        let Some(proof) = rec.rotation.filter(|_| rec.state == KeyState::Generated) else {
            return Err(format!(
                "key {} is {} here, not generated",
                rec.key_id,
                rec.state.label()
            ));
        };
        let Some(eid) = ExecutionId::from_slice(&proof.eid) else {
            return Err("its keygen proof is malformed".into());
        };
        let answers = self.committee_status(rec, true).await;
        let mut receipts = Vec::with_capacity(answers.len());
        let mut kept: Option<Certificate> = None;
        let mut have = vec![self.name.to_string()];
        let mut missing = Vec::new();
        for (n, answer) in answers {
            match answer {
                Ok(Outcome::ShareStatus { maintenance, .. }) => {
                    if maintenance.activated == Some(proof) && !maintenance.certificate.is_empty() {
                        kept = Some(maintenance.certificate);
                        have.push(n.to_string());
                    } else if let Some(r) = maintenance.generated {
                        receipts.push(*r);
                        have.push(n.to_string());
                    } else {
                        missing.push(format!("{n} (holds no share of this keygen)"));
                    }
                }
                Ok(_) => missing.push(format!("{n} (an unexpected answer)")),
                Err(e) => missing.push(format!("{n} ({e})")),
            }
        }
        let certificate = kept.unwrap_or(Certificate(receipts));
        match self.participate_activate(&eid, &rec.key_id, 0, proof.confirmation, &certificate) {
            Ok(_) => {
                tracing::warn!(key = %rec.key_id, "generated key activated with its committee's certificate");
                Ok(())
            }
            Err(e) => {
                tracing::info!(key = %rec.key_id, error = %e, "generated key not activated yet");
                if missing.is_empty() {
                    Err(format!("waiting for its activation certificate: {e}"))
                } else {
                    Err(format!(
                        "waiting for its activation certificate: every member's receipt is needed; \
                         have {}; missing {}",
                        have.join(", "),
                        missing.join(", ")
                    ))
                }
            }
        }
    }

    pub(crate) async fn participate_keygen(
        &self,
        p: &Proposal,
        key_id: &KeyId,
        key_type: KeyType,
        threshold: u32,
        committee: &[NodeName],
    ) -> Result<Outcome, NodeError> {
        let me = self.check_members(committee)?;
        let t = Threshold::new(threshold, committee.len())
            .map_err(|e| NodeError::InvalidArgument(e.to_string()))?;
        self.check_name_free(key_id, committee)?;
        let expected = eid(key_id, key_type, threshold, committee, &p.nonce);
        let out = self
            .claim_session(&p.eid, expected, committee)?
            .run_session(scheme::keygen(key_type, t.t(), t.n(), me, p.eid.as_bytes()))
            .await?;
        let rec = KeyRecord {
            schema: crate::storage::records_schema(),
            key_id: key_id.clone(),
            public_key: out.public_key.to_vec(),
            chain_code: out.chain_code,
            committee: committee.iter().map(|c| c.as_str().to_owned()).collect(),
            threshold: t.t(),
            epoch: 0,
            state: KeyState::Generated,
            package_hash: out.package_hash,
            package: hex::encode(&out.package),
            // The proof its activation must carry.
            rotation: Some(RotationProof {
                eid: *p.eid.as_bytes(),
                confirmation: out.package_hash,
            }),
            created_unix: now_unix(),
            key_type,
            lifecycle_seq: 0,
        };
        faults::check(&self.name, faults::points::KEYGEN_BEFORE_STORE)?;
        self.store.insert_key(&rec, &share_bytes(&out.share)?)?;
        tracing::info!(key = %key_id, eid = %p.eid, "key generated and stored; awaits activation");
        faults::check(&self.name, faults::points::KEYGEN_AFTER_STORE)?;
        let receipt = self.receipt(&generated_statement(&rec, p.eid.as_bytes()))?;
        Ok(Outcome::Keygen {
            public_key: rec.public_key,
            chain_code: out.chain_code,
            package_hash: out.package_hash,
            receipt: Box::new(receipt),
        })
    }
}

/// What a member of a keygen signs once it stored its share of `rec`
/// (generated under `eid`; its confirmation is the public key package hash).
pub(crate) fn generated_statement<'a>(rec: &'a KeyRecord, eid: &'a [u8; 32]) -> Statement<'a> {
    Statement {
        key_id: &rec.key_id,
        key_type: rec.key_type,
        eid,
        epoch: 0,
        confirmation: &rec.package_hash,
        public_key: &rec.public_key,
    }
}
