//! The reshare participant: a dealer sends each new member its point; a new
//! member assembles, refreshes with the other new members and stages; a
//! member that left deletes its share only once every new member itself
//! reports the new epoch active under this reshare's execution id.

use super::{check_new_membership, reshare_parties};
use crate::domain::{KeyId, NodeName};
use crate::node::activation::{Certificate, Statement};
use crate::node::committee::reasons;
use crate::node::shares::share_bytes;
use crate::node::{committee_of, Node, NodeError, Operation, Outcome, Proposal};
use crate::protocol::reshare::Roles;
use crate::protocol::scheme::{self, ReshareArgs};
use crate::protocol::PartyIdx;
use crate::storage::{KeyRecord, KeyState, Membership, RotationProof};

/// What a member leaving the committee is told of the reshare that moved
/// the key: its fields (to recompute its eid), its confirmation and the new
/// committee's activation certificate.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reshared<'a> {
    pub dealers: &'a [NodeName],
    pub committee: &'a [NodeName],
    pub threshold: u8,
    pub confirmation: &'a [u8; 32],
    pub certificate: &'a Certificate,
}

impl Node {
    /// A reshare, as a dealer (send each new member its point) and/or as a
    /// new member (assemble, refresh with the other new members, stage).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn participate_reshare(
        &self,
        p: &Proposal,
        key_id: &KeyId,
        epoch: u64,
        dealers: &[NodeName],
        committee: &[NodeName],
        threshold: u8,
        proposed: &KeyRecord,
    ) -> Result<Outcome, NodeError> {
        check_new_membership(committee, threshold)?;
        let parties = reshare_parties(committee, dealers);
        let me = self.check_members(&parties)?;
        let is_dealer = dealers.contains(&self.name);
        // A current member works only from its own record; a node new to
        // the key takes the proposed one, which the eid binds, so it can only
        // run with dealers that hold that same record.
        let own = self.store.key(key_id)?;
        // A member that an earlier reshare moved the key away from, and that
        // never got its retirement (the reshare's coordinator gave up before
        // every new member was active), still holds its record as active at
        // an older epoch, in a committee the proposal's record no longer
        // names: it joins like a node new to the key. (Its old share is
        // useless: the members that stayed moved on.)
        let left_behind = |r: &KeyRecord| {
            r.epoch < epoch
                && !is_dealer
                && !proposed.committee.iter().any(|m| m == self.name.as_str())
        };
        // A node that held the key joins only the same key: the proposed
        // record names its public key, chain code and type (a coordinator
        // cannot swap in a key its accomplices made; the dealers' shares
        // must then add up to this key's secret, which t real members alone
        // hold).
        if let Some(r) = &own {
            let rejoining = matches!(r.state, KeyState::Retired | KeyState::Joining)
                || (r.state == KeyState::Active && left_behind(r));
            if rejoining
                && !is_dealer
                && (proposed.public_key != r.public_key
                    || proposed.chain_code != r.chain_code
                    || proposed.key_type != r.key_type)
            {
                return Err(NodeError::PermissionDenied(format!(
                    "the reshare's record of key {key_id} names another public key, chain code \
                     or key type than this node held"
                )));
            }
        }
        let joining = match &own {
            Some(r) if r.state == KeyState::Active && left_behind(r) => true,
            Some(r) if r.state == KeyState::Active => false,
            // A frozen key may be moved only by an approved recovery reshare.
            Some(r)
                if matches!(r.state, KeyState::Frozen(_))
                    && p.admin
                        .as_ref()
                        .is_some_and(|a| !a.request.exclude.is_empty()) =>
            {
                false
            }
            Some(r) if matches!(r.state, KeyState::Retired | KeyState::Joining) && !is_dealer => {
                true
            }
            Some(r) => {
                return Err(NodeError::KeyNotActive(format!(
                    "key {key_id} is {} here",
                    r.state.label()
                )))
            }
            None if is_dealer => {
                return Err(NodeError::NotFound(format!("key {key_id} not found here")))
            }
            None => true,
        };
        let record = match own {
            Some(r) if !joining => r,
            _ => proposed.clone(),
        };
        if record.key_id != *key_id || record.epoch != epoch {
            return Err(NodeError::EpochMismatch(format!(
                "key {key_id} is at epoch {} here, proposal says {epoch}",
                record.epoch
            )));
        }
        let old_committee = committee_of(&record)?;
        if joining && old_committee.contains(&self.name) {
            return Err(NodeError::FailedPrecondition(format!(
                "this node is in the current committee of key {key_id} but holds no live \
                 share; repair it first"
            )));
        }
        let mut old_index = std::collections::BTreeMap::new();
        for (s, d) in parties.iter().enumerate() {
            if !dealers.contains(d) {
                continue;
            }
            let i = old_committee.iter().position(|c| c == d).ok_or_else(|| {
                NodeError::InvalidArgument(format!(
                    "dealer {d} is not in the current committee of key {key_id}"
                ))
            })?;
            let (Some(s), Some(i)) = (crate::node::party_at(s), crate::node::party_at(i)) else {
                return Err(NodeError::InvalidArgument("too many parties".into()));
            };
            old_index.insert(s, i);
        }
        if old_index.len() != dealers.len() || dealers.len() != usize::from(record.threshold) {
            return Err(NodeError::InvalidArgument(format!(
                "a reshare of key {key_id} needs exactly {} distinct dealers",
                record.threshold
            )));
        }
        let expected = super::eid(&record, dealers, committee, threshold, &p.nonce);
        let session = self.claim_session(&p.eid, expected, &parties)?;
        // A second rotation or reshare is refused while this session runs;
        // signing goes on at the old epoch.
        let _lock = if joining {
            None
        } else {
            Some(self.hold_maintenance(key_id, p.eid, self.timeouts.session())?)
        };
        async {
            let package = hex::decode(&record.package).map_err(|_| {
                NodeError::Internal(format!("key {key_id}: public key package is not hex"))
            })?;
            let share = if is_dealer {
                Some(self.open_share(&record, epoch)?)
            } else {
                None
            };
            let roles = Roles {
                dealers: old_index,
                members: (1..=committee.len() as PartyIdx).map(|j| (j, j)).collect(),
            };
            #[cfg(feature = "fault-injection")]
            let corrupt_dealing = crate::node::faults::tampers(
                &self.name,
                crate::node::faults::points::CORRUPT_DEALING,
            );
            #[cfg(not(feature = "fault-injection"))]
            let corrupt_dealing = false;
            let args = ReshareArgs {
                roles,
                share,
                package: &package,
                new_threshold: threshold,
                chain_code: record.chain_code,
                corrupt_dealing,
            };
            let proto = scheme::reshare(record.key_type, me, args, p.eid.as_bytes());
            let Some(out) = session.run_session(proto).await? else {
                tracing::info!(
                    key = %key_id,
                    eid = %p.eid,
                    "reshare: dealt; this node leaves the committee",
                );
                return Ok(Outcome::Dealt);
            };
            let public_key = out
                .share
                .public_key()
                .map_err(|e| NodeError::Internal(e.to_string()))?
                .to_vec();
            if public_key != record.public_key {
                return Err(NodeError::Aborted(format!(
                    "the reshared key {key_id} has another public key; not staged"
                )));
            }
            let proof = RotationProof {
                eid: *p.eid.as_bytes(),
                confirmation: out.confirmation,
            };
            let membership = Membership {
                committee: committee.iter().map(ToString::to_string).collect(),
                threshold,
            };
            let next = crate::node::committee::next_epoch(&record)?;
            crate::node::faults::check(&self.name, crate::node::faults::points::BEFORE_STAGE)?;
            self.store.stage_reshare(
                key_id,
                joining.then_some(&record),
                next,
                &share_bytes(&out.share)?,
                proof,
                &out.package,
                membership,
            )?;
            crate::node::faults::check(&self.name, crate::node::faults::points::AFTER_STAGE)?;
            tracing::info!(
                key = %key_id,
                epoch = next,
                eid = %p.eid,
                joining,
                "reshared share staged",
            );
            let receipt = self.receipt(&Statement {
                key_id,
                key_type: record.key_type,
                eid: p.eid.as_bytes(),
                epoch: next,
                confirmation: &out.confirmation,
                public_key: &public_key,
            })?;
            Ok(Outcome::Reshared {
                confirmation: out.confirmation,
                public_key,
                receipt: Box::new(receipt),
            })
        }
        .await
    }

    /// Deletes this node's share of a key that a reshare moved away from it,
    /// but only once every member of the new committee itself answers that
    /// it holds the new epoch, active, from this very reshare.
    pub(crate) async fn participate_retire(
        &self,
        p: &Proposal,
        key_id: &KeyId,
        epoch: u64,
        reshare: Reshared<'_>,
    ) -> Result<Outcome, NodeError> {
        let Reshared {
            dealers,
            committee,
            threshold,
            confirmation,
            certificate,
        } = reshare;
        let rec = self.key(key_id)?;
        if rec.state == KeyState::Retired {
            return Ok(Outcome::Retired);
        }
        if committee.contains(&self.name) {
            return Err(NodeError::InvalidArgument(format!(
                "this node is in the new committee of key {key_id}; it does not retire"
            )));
        }
        let expected = super::eid(&rec, dealers, committee, threshold, &p.nonce);
        if p.eid != expected || rec.epoch != epoch {
            return Err(NodeError::PermissionDenied(format!(
                "the retirement does not match a reshare of this node's record of key {key_id} \
                 (epoch {})",
                rec.epoch
            )));
        }
        let next = crate::node::committee::next_epoch(&rec)?;
        // Every new member's receipt first: a coordinator's word that they
        // staged counts for nothing.
        let members: Vec<String> = committee.iter().map(ToString::to_string).collect();
        self.check_certificate(
            &members,
            &Statement {
                key_id,
                key_type: rec.key_type,
                eid: p.eid.as_bytes(),
                epoch: next,
                confirmation,
                public_key: &rec.public_key,
            },
            certificate,
        )?;
        let probes = committee.iter().map(|n| {
            let status = Proposal {
                eid: p.eid,
                nonce: Vec::new(),
                admin: None,
                op: Operation::ShareStatus {
                    key_id: key_id.clone(),
                    request_id: None,
                    watermarks: false,
                    evidence: false,
                },
            };
            let call = self.net.propose(n, status);
            let timeout = self.timeouts.round;
            async move {
                let why = match tokio::time::timeout(timeout, call).await {
                    Ok(Ok(Outcome::ShareStatus {
                        epoch: Some(e),
                        signing: true,
                        rotation: Some(r),
                        ..
                    })) if e == next && r == *p.eid.as_bytes() => return None,
                    Ok(Ok(Outcome::ShareStatus { epoch: got, .. })) => {
                        format!("reports epoch {got:?}, not epoch {next} active from this reshare")
                    }
                    Ok(Ok(_)) => "answered with another outcome".to_owned(),
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => format!("no answer within {timeout:?}"),
                };
                Some((n.clone(), why))
            }
        });
        let missing: Vec<(NodeName, String)> = futures::future::join_all(probes)
            .await
            .into_iter()
            .flatten()
            .collect();
        if !missing.is_empty() {
            return Err(NodeError::FailedPrecondition(format!(
                "this node keeps its share of key {key_id}: the new committee has not all \
                 activated epoch {next}: {}",
                reasons(&missing)
            )));
        }
        crate::node::faults::check(&self.name, crate::node::faults::points::BEFORE_RETIRE)?;
        self.store.retire(key_id)?;
        crate::node::faults::check(&self.name, crate::node::faults::points::AFTER_RETIRE)?;
        self.forget_opened(key_id);
        tracing::info!(
            key = %key_id,
            epoch,
            "left the key's committee; share deleted, record kept as retired",
        );
        Ok(Outcome::Retired)
    }
}
