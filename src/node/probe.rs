//! Probing a key's committee: which epoch each member holds and whether it
//! can sign, its ledger entry for a request, and the catch-up of whichever
//! side missed an activation (a member one epoch behind is sent the proof;
//! this node, one epoch behind a member, activates its own staged share with
//! the member's proof).

use super::{Node, NodeError, Operation, Outcome, Proposal};
use crate::domain::{ExecutionId, NodeName};
use crate::node::committee::{evidence_query, status_query};
use crate::storage::{KeyRecord, KeyState, LedgerEntry, RotationProof};

impl Node {
    /// Asks `nodes` (other than this one) which epoch of `rec`'s key they
    /// hold. A node one epoch behind is sent the activation of the last
    /// rotation, with its proof (it missed it, e.g. it was down). Returns the
    /// nodes that are not at `rec.epoch` afterwards, with the reason.
    /// With `to_sign`, a node must also be allowed to sign (not awaiting a
    /// post-repair refresh).
    pub(crate) async fn not_ready(
        &self,
        rec: &KeyRecord,
        nodes: &[NodeName],
        to_sign: bool,
    ) -> Vec<(NodeName, String)> {
        self.probe(rec, nodes, to_sign, None).await.0
    }

    /// `probe` of members passed over for failing moments ago (a second
    /// chance when the others are too few to sign); those that answer are
    /// no longer suspected for the key.
    pub(crate) async fn probe_again(
        &self,
        rec: &KeyRecord,
        nodes: &[NodeName],
        request_id: &str,
    ) -> (Vec<(NodeName, String)>, Vec<(NodeName, LedgerEntry)>) {
        let (down, ledgers) = self.probe(rec, nodes, true, Some(request_id)).await;
        self.note_reachability(nodes, &down);
        let back: Vec<NodeName> = nodes
            .iter()
            .filter(|n| !down.iter().any(|(d, _)| d == *n))
            .cloned()
            .collect();
        if !back.is_empty() {
            self.forget_key_suspects_of(&rec.key_id, &back);
            tracing::info!(
                key = %rec.key_id,
                nodes = %super::names(&back),
                "nodes that failed moments ago answer again",
            );
        }
        (down, ledgers)
    }

    /// `not_ready`, and with `request_id` also what each node that answered
    /// recorded in its ledger for that request (in the same round trip).
    pub(crate) async fn probe(
        &self,
        rec: &KeyRecord,
        nodes: &[NodeName],
        to_sign: bool,
        request_id: Option<&str>,
    ) -> (Vec<(NodeName, String)>, Vec<(NodeName, LedgerEntry)>) {
        let probes = nodes
            .iter()
            .filter(|n| **n != self.name)
            .map(|n| self.probe_one(rec, n, to_sign, request_id));
        let mut down = Vec::new();
        let mut ledgers = Vec::new();
        for (d, l) in futures::future::join_all(probes).await {
            down.extend(d);
            ledgers.extend(l);
        }
        (down, ledgers)
    }

    /// One node's answer to `probe`: why it is not ready (if it is not), and
    /// its ledger entry for `request_id`.
    async fn probe_one(
        &self,
        rec: &KeyRecord,
        n: &NodeName,
        to_sign: bool,
        request_id: Option<&str>,
    ) -> (Option<(NodeName, String)>, Option<(NodeName, LedgerEntry)>) {
        let key_id = &rec.key_id;
        let status = status_query(key_id, rec.epoch, request_id.map(str::to_owned));
        let timeout = self.timeouts.ping;
        let down = |why: String| Some((n.clone(), why));
        let (epoch, signing, ledger, lifecycle, maintenance) =
            match tokio::time::timeout(timeout, self.net.propose(n, status)).await {
                Ok(Ok(Outcome::ShareStatus {
                    epoch,
                    signing,
                    ledger,
                    lifecycle,
                    maintenance,
                    ..
                })) => (epoch, signing, ledger, lifecycle, maintenance),
                Ok(Ok(_)) => {
                    let why = "answered the status query with another outcome";
                    return (down(why.to_owned()), None);
                }
                Ok(Err(e)) => {
                    // Unreachable, timed out or shutting down: not worth
                    // asking again for a moment. (A refusal for another
                    // reason comes from a node that is there.)
                    if matches!(
                        e.reason(),
                        crate::node::Reason::Unavailable | crate::node::Reason::Timeout
                    ) {
                        self.mark_unreachable(n);
                    }
                    return (down(e.to_string()), None);
                }
                Err(_) => {
                    self.mark_unreachable(n);
                    return (down(format!("no answer within {timeout:?}")), None);
                }
            };
        let ledger = ledger.map(|l| (n.clone(), *l));
        // A freeze, unfreeze or delete the peer applied and this node
        // missed: checked here as if its coordinator had sent it, taken only
        // at this node's lifecycle sequence or a later one and when t members
        // applied it (`catch_up_lifecycle`). Only from a peer at this node's
        // epoch (one left on an older epoch may hold a freeze a recovery
        // reshare ended), or one that no longer holds a share (a delete).
        let lifecycle = lifecycle.filter(|_| epoch.is_none() || epoch == Some(rec.epoch));
        if let Some(p) = lifecycle {
            if let Some(done) = self.catch_up_lifecycle(n, *p).await {
                return (down(format!("the key changed there: {done}")), ledger);
            }
        }
        // The epoch is the peer's word: compared with checked arithmetic.
        let verdict = match (epoch, rec.rotation) {
            // A generated key the peer has not activated: at epoch 0 the
            // proof is the keygen's, which this node's active record holds.
            (Some(0), Some(proof))
                if rec.epoch == 0 && !signing && rec.state == KeyState::Active =>
            {
                let Some(eid) = ExecutionId::from_slice(&proof.eid) else {
                    return (down("bad keygen proof".to_owned()), ledger);
                };
                let activate = Proposal {
                    eid,
                    nonce: Vec::new(),
                    admin: None,
                    op: Operation::Activate {
                        key_id: key_id.clone(),
                        epoch: 0,
                        confirmation: proof.confirmation,
                        certificate: self.kept_certificate(key_id),
                    },
                };
                match self.net.propose(n, activate).await {
                    // Its share may still be unable to sign (a repaired one
                    // awaits its refresh): it counts from the next request.
                    Ok(_) if to_sign => down(
                        "its share could not sign; sent it the keygen activation it may have missed"
                            .to_owned(),
                    ),
                    Ok(_) => None,
                    Err(err) => down(format!(
                        "its share cannot sign yet and could not catch up: {err}"
                    )),
                }
            }
            (Some(e), _) if e == rec.epoch && to_sign && !signing => down(
                "its share cannot sign yet (repaired or joining; awaits activation)".to_owned(),
            ),
            (Some(e), _) if e == rec.epoch => None,
            (Some(e), Some(proof)) if e.checked_add(1) == Some(rec.epoch) => {
                let Some(eid) = ExecutionId::from_slice(&proof.eid) else {
                    return (down("bad rotation proof".to_owned()), ledger);
                };
                let activate = Proposal {
                    eid,
                    nonce: Vec::new(),
                    admin: None,
                    op: Operation::Activate {
                        key_id: key_id.clone(),
                        epoch: rec.epoch,
                        confirmation: proof.confirmation,
                        certificate: self.kept_certificate(key_id),
                    },
                };
                match self.net.propose(n, activate).await {
                    Ok(_) => {
                        let epoch = rec.epoch;
                        tracing::warn!(
                            node = %n,
                            key = %key_id,
                            epoch,
                            "node had missed an activation; activated it",
                        );
                        None
                    }
                    Err(err) => down(format!("at epoch {e} and could not catch up: {err}")),
                }
            }
            // This node is the one behind: the peer activated the next
            // epoch. This node activates the share it staged itself, if the
            // peer's proof names it (the store checks the pair), and the
            // caller, seeing its own epoch moved, tries again at the new one.
            (Some(e), _) if rec.epoch.checked_add(1) == Some(e) => match maintenance.activated {
                Some(proof) => match self.catch_up_to(rec, n, e, proof).await {
                    Ok(()) => down(format!(
                        "is at epoch {e}, which this node has now activated too"
                    )),
                    Err(err) => down(format!(
                        "holds epoch {e}, which this node could not activate: {err}"
                    )),
                },
                None => down(format!("holds epoch {e}, not {}", rec.epoch)),
            },
            (Some(e), _) => down(format!("holds epoch {e}, not {}", rec.epoch)),
            (None, _) => down("holds no share of this key".to_owned()),
        };
        (verdict, ledger)
    }

    /// Activates epoch `epoch` of `rec`'s key here with the activation
    /// certificate peer `n` keeps for it: only the share this node staged
    /// itself under that very proof, and only with every member's receipt.
    async fn catch_up_to(
        &self,
        rec: &KeyRecord,
        n: &NodeName,
        epoch: u64,
        proof: RotationProof,
    ) -> Result<(), NodeError> {
        let eid = ExecutionId::from_slice(&proof.eid)
            .ok_or_else(|| NodeError::Internal("bad activation proof".into()))?;
        let ask = evidence_query(&rec.key_id, rec.epoch);
        let certificate = match tokio::time::timeout(self.timeouts.ping, self.net.propose(n, ask))
            .await
        {
            Ok(Ok(Outcome::ShareStatus {
                epoch: Some(e),
                maintenance,
                ..
            })) if e == epoch && maintenance.activated == Some(proof) => maintenance.certificate,
            Ok(Ok(_)) => {
                return Err(NodeError::Unavailable(format!(
                    "node {n} no longer reports epoch {epoch} under that activation"
                )))
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(NodeError::Unavailable(format!(
                    "node {n} sent no activation certificate within {:?}",
                    self.timeouts.ping
                )))
            }
        };
        self.participate_activate(&eid, &rec.key_id, epoch, proof.confirmation, &certificate)?;
        tracing::warn!(
            key = %rec.key_id,
            epoch,
            "this node had missed an activation; activated it with the certificate a peer kept",
        );
        Ok(())
    }
}
