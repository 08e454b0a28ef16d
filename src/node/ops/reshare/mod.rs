//! Resharing a key to another committee and/or threshold, same public key.
//! The coordinator side is here: check every current member is ready, pick
//! the dealers, run the session, activate on the new committee, retire the
//! members that left. The participant side (deal, or assemble and refresh,
//! then stage; retire only once every new member reports the new epoch
//! active under this reshare's execution id) is in `participant.rs`.

pub(crate) mod participant;

use std::time::Instant;

use sha2::{Digest, Sha256};

use super::OpKind;
use crate::domain::{ExecutionId, KeyId, NodeName, Threshold};
use crate::node::activation::Certificate;
use crate::node::admin::admin_nonce;
use crate::node::admin_request::{AdminOp, SignedAdmin};
use crate::node::committee::reasons;
use crate::node::{committee_of, names, Node, NodeError, Operation, Outcome, Proposal};
use crate::storage::{KeyRecord, KeyState};

/// The parties of a reshare session in session order: the new committee,
/// then the dealers that are not in it.
pub fn reshare_parties(committee: &[NodeName], dealers: &[NodeName]) -> Vec<NodeName> {
    let mut parties = committee.to_vec();
    parties.extend(dealers.iter().filter(|d| !committee.contains(d)).cloned());
    parties
}

/// The request digest a reshare eid binds: the key's current public record
/// (as for a repair), the dealers, the new committee in order and the new
/// threshold.
pub fn reshare_binding(
    rec: &KeyRecord,
    dealers: &[NodeName],
    committee: &[NodeName],
    threshold: u8,
) -> Vec<u8> {
    let mut h = Sha256::new();
    let mut field = |b: &[u8]| {
        h.update((b.len() as u64).to_be_bytes());
        h.update(b);
    };
    field(&crate::node::ops::repair::record_digest(rec));
    field(&(dealers.len() as u64).to_be_bytes());
    for d in dealers {
        field(d.as_str().as_bytes());
    }
    field(&(committee.len() as u64).to_be_bytes());
    for c in committee {
        field(c.as_str().as_bytes());
    }
    field(&[threshold]);
    h.finalize().to_vec()
}

/// The execution id of resharing `rec`'s key from `dealers` to `committee` with `threshold`.
pub fn eid(
    rec: &KeyRecord,
    dealers: &[NodeName],
    committee: &[NodeName],
    threshold: u8,
    nonce: &[u8],
) -> ExecutionId {
    OpKind::Reshare.eid(
        &rec.key_id,
        rec.epoch,
        &reshare_parties(committee, dealers),
        &reshare_binding(rec, dealers, committee, threshold),
        nonce,
    )
}

/// What a finished reshare reports.
#[derive(Debug, Clone)]
pub struct ReshareSummary {
    /// The key as the new committee holds it.
    pub key: KeyRecord,
    pub old_epoch: u64,
    pub new_epoch: u64,
    pub old_committee: Vec<NodeName>,
    pub old_threshold: u8,
    pub dealers: Vec<NodeName>,
    /// Members that left and deleted their share.
    pub retired: Vec<NodeName>,
    /// Members that left but could not be reached to delete their share.
    pub not_retired: Vec<(NodeName, String)>,
    pub public_key_unchanged: bool,
    pub elapsed: std::time::Duration,
}

/// Checks a recovery reshare's exclusions: current members, not dealing
/// (this node coordinates, so it deals), not in the new committee.
fn check_exclusions(
    key_id: &KeyId,
    excluded: &[NodeName],
    old: &[NodeName],
    new: &[NodeName],
    me: &NodeName,
) -> Result<(), NodeError> {
    for x in excluded {
        let why = if !old.contains(x) {
            "is not in the key's current committee"
        } else if new.contains(x) {
            "is in the new committee"
        } else if x == me {
            "is this node, which coordinates; send the request to another member"
        } else {
            continue;
        };
        return Err(NodeError::InvalidArgument(format!(
            "cannot exclude node {x} from the reshare of key {key_id}: it {why}"
        )));
    }
    Ok(())
}

/// Checks a proposed new committee and threshold.
fn check_new_membership(committee: &[NodeName], threshold: u8) -> Result<(), NodeError> {
    Threshold::new(threshold.into(), committee.len())
        .map_err(|e| NodeError::InvalidArgument(e.to_string()))?;
    if let Some(dup) = committee
        .iter()
        .enumerate()
        .find(|(i, n)| committee[..*i].contains(n))
    {
        return Err(NodeError::InvalidArgument(format!(
            "node {} is listed twice in the new committee",
            dup.1
        )));
    }
    Ok(())
}

impl Node {
    /// Moves the key the signed admin request names to its committee with
    /// its threshold, keeping the public key. Every current member must be up
    /// and on the key's epoch, except those the request excludes (a recovery
    /// reshare: t of the others deal, and a frozen key may be moved); the new
    /// members must be up. Signing goes on at the old epoch until activation.
    pub async fn reshare(&self, signed: &SignedAdmin) -> Result<ReshareSummary, NodeError> {
        self.admit_admin_request(signed, AdminOp::Reshare)?;
        let r = &signed.request;
        let (key_id, committee) = (&r.key_id, r.committee.as_slice());
        let threshold = u8::try_from(r.threshold).map_err(|_| {
            NodeError::InvalidArgument(format!("threshold {} is too large", r.threshold))
        })?;
        let started = Instant::now();
        let rec = self.key(key_id)?;
        let excluded = &r.exclude;
        let movable = match rec.state {
            KeyState::Active => true,
            KeyState::Frozen(_) => !excluded.is_empty(),
            _ => false,
        };
        if !movable {
            return Err(NodeError::KeyNotActive(format!(
                "key {key_id} is {} here; send the request to a node of its current committee",
                rec.state.label()
            )));
        }
        check_new_membership(committee, threshold)?;
        if let Some(stranger) = committee.iter().find(|n| !self.roster.contains(n)) {
            return Err(NodeError::InvalidArgument(format!(
                "node {stranger} is not in the cluster roster"
            )));
        }
        let old_committee = committee_of(&rec)?;
        check_exclusions(key_id, excluded, &old_committee, committee, &self.name)?;
        if old_committee == committee && rec.threshold == threshold {
            return Err(NodeError::InvalidArgument(format!(
                "key {key_id} already has this committee and threshold; use rotate to refresh its \
                 shares"
            )));
        }
        // The current members that take part: every one, or in a recovery
        // reshare every one not excluded, of which the staying members and t
        // dealers must be ready (the others are retired if they answer).
        let present: Vec<NodeName> = old_committee
            .iter()
            .filter(|n| !excluded.contains(n))
            .cloned()
            .collect();
        let down = self.not_ready(&rec, &present, false).await;
        if excluded.is_empty() && !down.is_empty() {
            return Err(NodeError::Unavailable(format!(
                "reshare needs every current committee node at epoch {}: not available: {}; \
                 repair or bring them back first, or exclude them (a recovery reshare)",
                rec.epoch,
                reasons(&down)
            )));
        }
        if let Some((n, why)) = down.iter().find(|(n, _)| committee.contains(n)) {
            return Err(NodeError::Unavailable(format!(
                "node {n} stays in the committee but is not available ({why}); bring it back or \
                 exclude it too"
            )));
        }
        let ready: Vec<NodeName> = present
            .iter()
            .filter(|n| !down.iter().any(|(d, _)| d == *n))
            .cloned()
            .collect();
        if ready.len() < usize::from(rec.threshold) {
            return Err(NodeError::Unavailable(format!(
                "a reshare needs {} live members of the current committee to deal; ready: {}; not \
                 available: {}",
                rec.threshold,
                names(&ready),
                reasons(&down)
            )));
        }
        let newcomers: Vec<NodeName> = committee
            .iter()
            .filter(|n| !old_committee.contains(n))
            .cloned()
            .collect();
        let down = self.unreachable(&newcomers).await;
        if !down.is_empty() {
            return Err(NodeError::Unavailable(format!(
                "new committee nodes not reachable: {}",
                reasons(&down)
            )));
        }
        // Dealers: t current members, preferring this node and then those
        // staying in the committee (fewer parties), kept in committee order.
        let mut ranked = ready.clone();
        ranked.sort_by_key(|n| (*n != self.name, !committee.contains(n)));
        ranked.truncate(rec.threshold.into());
        let dealers: Vec<NodeName> = old_committee
            .iter()
            .filter(|n| ranked.contains(n))
            .cloned()
            .collect();
        let parties = reshare_parties(committee, &dealers);
        let old_epoch = rec.epoch;
        let new_epoch = crate::node::committee::next_epoch(&rec)?;
        let nonce = admin_nonce(signed)?;
        let eid = eid(&rec, &dealers, committee, threshold, &nonce);
        crate::node::note_eid(&eid);
        tracing::info!(
            key = %key_id, old_epoch, new_epoch,
            from = %format!("{}-of-{{{}}}", rec.threshold, names(&old_committee)),
            to = %format!("{threshold}-of-{{{}}}", names(committee)),
            dealers = %names(&dealers), eid = %eid,
            "reshare: dealing to the new committee, then refreshing there"
        );
        let proposal = Proposal {
            eid,
            nonce: nonce.clone(),
            admin: Some(Box::new(signed.clone())),
            op: Operation::Reshare {
                key_id: key_id.clone(),
                epoch: old_epoch,
                dealers: dealers.clone(),
                committee: committee.to_vec(),
                threshold,
                record: Box::new(rec.clone()),
            },
        };
        let outcomes = self.propose_all(&parties, proposal).await?;
        // Every new member's confirmation and signed staging receipt: the
        // receipts are the activation certificate. A failure here activates
        // nothing anywhere (the staged shares stay, unable to sign, until
        // the next reshare or rotation replaces them).
        let mut confirmation: Option<[u8; 32]> = None;
        let mut public_key_unchanged = true;
        let mut receipts = Vec::with_capacity(committee.len());
        for (n, o) in outcomes {
            let fail = match o {
                Outcome::Reshared {
                    confirmation: c,
                    public_key,
                    receipt,
                } if committee.contains(&n) => {
                    public_key_unchanged &= public_key == rec.public_key;
                    receipts.push(*receipt);
                    if confirmation.is_some_and(|x| x != c) {
                        Some(format!("node {n} confirmed a different reshare"))
                    } else {
                        confirmation = Some(c);
                        None
                    }
                }
                Outcome::Dealt if !committee.contains(&n) => None,
                _ => Some(format!(
                    "node {n} answered the reshare with an unexpected outcome"
                )),
            };
            if let Some(why) = fail {
                return Err(NodeError::Aborted(format!(
                    "{why}; epoch {new_epoch} is not activated anywhere"
                )));
            }
        }
        let (Some(confirmation), true) = (confirmation, public_key_unchanged) else {
            return Err(NodeError::Aborted(format!(
                "the new committee did not confirm the same public key; epoch {new_epoch} is not \
                 activated anywhere"
            )));
        };
        let certificate = Certificate(receipts);

        crate::node::faults::check(
            &self.name,
            crate::node::faults::points::COORDINATOR_BEFORE_ACTIVATE,
        )?;
        tracing::info!(key = %key_id, new_epoch, "reshare: every new member confirmed; activating");
        let activate = Proposal {
            eid,
            nonce: Vec::new(),
            admin: None,
            op: Operation::Activate {
                key_id: key_id.clone(),
                epoch: new_epoch,
                confirmation,
                certificate: certificate.clone(),
            },
        };
        let failed = self.call_with_retries(committee, &activate).await;
        if !failed.is_empty() {
            return Err(NodeError::Unavailable(format!(
                "epoch {new_epoch} of key {key_id} is confirmed but not yet active on: {}; \
                 the members that left keep their shares until every new member is active",
                reasons(&failed)
            )));
        }

        let leaving: Vec<NodeName> = present
            .iter()
            .filter(|n| !committee.contains(n))
            .cloned()
            .collect();
        let retire = Proposal {
            eid,
            nonce,
            admin: Some(Box::new(signed.clone())),
            op: Operation::Retire {
                key_id: key_id.clone(),
                epoch: old_epoch,
                dealers: dealers.clone(),
                committee: committee.to_vec(),
                threshold,
                confirmation,
                certificate,
            },
        };
        tracing::info!(
            key = %key_id,
            leaving = %names(&leaving),
            "reshare: active on the new committee; retiring the members that left",
        );
        let mut not_retired = self.call_with_retries(&leaving, &retire).await;
        let retired = leaving
            .into_iter()
            .filter(|n| !not_retired.iter().any(|(f, _)| f == n))
            .collect();
        not_retired.extend(excluded.iter().map(|x| {
            let why = format!(
                "excluded: its epoch-{old_epoch} share was not deleted; it cannot sign without {} \
                 other shares of that epoch, which the members that took part no longer hold",
                rec.threshold.saturating_sub(1)
            );
            (x.clone(), why)
        }));
        let key = match self.key(key_id) {
            Ok(k) if k.state == KeyState::Active => k,
            // This node left the committee: report what the new one holds.
            _ => KeyRecord {
                committee: committee.iter().map(ToString::to_string).collect(),
                threshold,
                epoch: new_epoch,
                state: KeyState::Active,
                ..rec.clone()
            },
        };
        Ok(ReshareSummary {
            key,
            old_epoch,
            new_epoch,
            old_committee,
            old_threshold: rec.threshold,
            dealers,
            retired,
            not_retired,
            public_key_unchanged,
            elapsed: started.elapsed(),
        })
    }
}
