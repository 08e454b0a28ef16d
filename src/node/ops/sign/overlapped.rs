//! The overlapped signing path: the session is proposed to the first t
//! unsuspected candidates at once, while the committee checks of the
//! checked path (status probe, ledgers, slot gossip) run alongside; this
//! node joins the session once the probe passed, and sends its partial
//! signature only once the gossip did.

use crate::domain::NodeName;
use crate::node::request::{ClientAuth, SignRequest};
use crate::node::{Node, NodeError, Reason};
use crate::storage::KeyRecord;

use super::SignOutcome;

impl Node {
    /// Signs with `participants` while the checks the checked path makes
    /// first run alongside: the status probe of every committee node (each
    /// participant must answer at the key's epoch; any node's ledger may
    /// already hold this request) and, for a slot, the watermark gossip.
    /// This node admits the session (claims the eid, writes its ledger
    /// entry and watermark) and sends its first message only once the probe
    /// passed, and its partial signature only once the gossip did (every
    /// committee node that answered holds the slot durably): no signature
    /// can be assembled without it. The other participants start meanwhile,
    /// so the probe's round trip overlaps theirs instead of preceding the
    /// session, and the gossip's (a durable write at each node outside the
    /// session) overlaps the session's first rounds.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn sign_overlapped(
        &self,
        request: &SignRequest,
        auth: &ClientAuth,
        rec: &KeyRecord,
        committee: &[NodeName],
        candidates: &[NodeName],
        participants: &[NodeName],
        charge: &(dyn Fn() -> Result<(), NodeError> + Sync),
    ) -> Attempt {
        let (gate, admit) = tokio::sync::oneshot::channel();
        let (released, release) = tokio::sync::oneshot::channel();
        let others: Vec<NodeName> = committee
            .iter()
            .filter(|n| !participants.contains(n))
            .cloned()
            .collect();
        let checks = async {
            // Participants are never recently down (they were picked among
            // the unsuspected); other such nodes are not probed again yet.
            let skipped = self.recently_down();
            let candidates: Vec<NodeName> = candidates
                .iter()
                .filter(|c| !skipped.contains(c))
                .cloned()
                .collect();
            let candidates = candidates.as_slice();
            let admission = async {
                let (down, ledgers) = self
                    .probe_for_session(rec, candidates, participants, request)
                    .await;
                self.note_reachability(candidates, &down);
                let verdict = (|| {
                    for (n, entry) in &ledgers {
                        match self.recorded(request, entry, rec, Some(n)) {
                            Ok(Some(done)) => return Err(Attempt::Done(Box::new(done))),
                            Ok(None) => {}
                            Err(e) => return Err(Attempt::Failed(e)),
                        }
                    }
                    if let Some((n, why)) = down.iter().find(|(d, _)| participants.contains(d)) {
                        return Err(Attempt::GaveWay(format!("node {n}: {why}")));
                    }
                    charge().map_err(Attempt::Failed)
                })();
                let _ = gate.send(verdict.is_ok());
                verdict
            };
            let gossip = async {
                let gossiped = if request.slot.is_some() {
                    self.gossip_watermark(request, auth, &others).await
                } else {
                    Ok(())
                };
                let _ = released.send(gossiped.is_ok());
                gossiped
            };
            let (verdict, gossiped) = tokio::join!(admission, gossip);
            match (verdict, gossiped) {
                (done @ Err(Attempt::Done(_)), _) => done,
                // A conflict the gossip found is the answer even when the
                // probe found a participant down (the checked path would
                // meet it).
                (_, Err(e)) => Err(Attempt::Failed(e)),
                (verdict, Ok(())) => verdict,
            }
        };
        let gate = super::checks::Gate { admit, release };
        let (signed, verdict) = tokio::join!(
            self.run_sign(request, auth, rec, participants, Some(gate)),
            checks
        );
        match (verdict, signed) {
            // The checks stopped our session before this node joined it.
            (Err(attempt), _) => attempt,
            (Ok(()), Ok(outcome)) => Attempt::Done(Box::new(outcome)),
            // A participant down or slow; one behind on the key's epoch (the
            // checked path brings it up to date), one that holds this request
            // signed (the checked path returns that signature), or a refusal
            // that the checked path meets again.
            // Or a participant that failed the session (blamed, or refusing
            // to sign with this node): the checked path signs without it.
            (Ok(()), Err(e))
                if e.reason().is_transit()
                    || e.reason().is_precondition()
                    || matches!(e.reason(), Reason::Unavailable | Reason::Paused)
                    || !self.culprits(&e, request).is_empty() =>
            {
                // A participant that stalled or could not be reached is
                // avoided by the checked path and by the next requests.
                self.suspect_for_key(&request.key_id, &self.culprits(&e, request));
                Attempt::GaveWay(e.to_string())
            }
            (Ok(()), Err(e)) => Attempt::Failed(e),
        }
    }

    /// The overlapped path's status probe of `candidates`: the session's
    /// other participants wait for this node to join while it runs, so a
    /// node outside the session that does not answer within a quarter of a
    /// signing round is not waited for (its ledger is not needed to sign:
    /// a participant holding the request refuses the session) and counts as
    /// unreachable for a while, so the next requests skip it.
    async fn probe_for_session(
        &self,
        rec: &KeyRecord,
        candidates: &[NodeName],
        participants: &[NodeName],
        request: &SignRequest,
    ) -> (
        Vec<(NodeName, String)>,
        Vec<(NodeName, crate::storage::LedgerEntry)>,
    ) {
        let ledger_id = request.ledger_id();
        let rid = Some(ledger_id.as_str());
        let bound = self
            .timeouts
            .sign_round()
            .checked_div(4)
            .unwrap_or_default();
        let (inside, outside): (Vec<NodeName>, Vec<NodeName>) = candidates
            .iter()
            .cloned()
            .partition(|c| participants.contains(c));
        let others = outside.iter().map(|n| async move {
            let one = std::slice::from_ref(n);
            match tokio::time::timeout(bound, self.probe(rec, one, true, rid)).await {
                Ok(answer) => answer,
                Err(_) => {
                    self.mark_unreachable(n);
                    let why = format!("no answer within {bound:?}");
                    (vec![(n.clone(), why)], Vec::new())
                }
            }
        });
        let (mut answer, others) = tokio::join!(
            self.probe(rec, &inside, true, rid),
            futures::future::join_all(others)
        );
        for (down, ledgers) in others {
            answer.0.extend(down);
            answer.1.extend(ledgers);
        }
        answer
    }
}

/// How a signing attempt on the overlapped path ended.
pub(super) enum Attempt {
    Done(Box<SignOutcome>),
    Failed(NodeError),
    /// Nothing was signed; the checked path should run.
    GaveWay(String),
}
