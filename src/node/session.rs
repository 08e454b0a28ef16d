//! Drives one protocol run over the network: sends each round, collects one
//! message per peer (peers may be one round ahead), enforces the round
//! deadline, and sends each round without waiting for the previous round's acknowledgements.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};

use super::router::Mailbox;
use super::{NodeError, PeerNet};
use crate::domain::{ExecutionId, NodeName};
use crate::protocol::{Inbox, Outgoing, PartyIdx, Protocol, ProtocolError, Step};

/// How many rounds early a message may arrive and still be kept.
const MAX_AHEAD: u32 = 3;

/// A session's deliveries in flight.
type Sending = FuturesUnordered<tokio::task::JoinHandle<Result<(), NodeError>>>;

/// What a session waits for before its partial signature leaves (the
/// coordinator's slot gossip on the overlapped path).
pub(crate) type Hold = futures::future::BoxFuture<'static, Result<(), NodeError>>;

pub(crate) struct Session<'a> {
    pub eid: ExecutionId,
    /// Party i is `parties[i - 1]`.
    pub parties: &'a [NodeName],
    pub net: Arc<dyn PeerNet>,
    pub round_timeout: Duration,
}

impl Session<'_> {
    fn name_of(&self, idx: PartyIdx) -> Option<&NodeName> {
        self.parties.get((idx as usize).checked_sub(1)?)
    }

    fn index_of(&self, name: &NodeName) -> Option<PartyIdx> {
        self.parties
            .iter()
            .position(|p| p == name)
            .and_then(super::party_at)
    }

    fn two_messages(&self, from: PartyIdx, round: u32) -> NodeError {
        self.protocol_error(ProtocolError::PeerMisbehaved {
            from,
            round,
            reason: "sent two messages for one round".into(),
        })
    }

    pub fn protocol_error(&self, error: ProtocolError) -> NodeError {
        let blamed = error.blamed().and_then(|i| self.name_of(i)).cloned();
        NodeError::Protocol { blamed, error }
    }

    /// Starts delivering one round's messages, each on its own task, and
    /// adds them to `sending`. The session does not wait for the
    /// acknowledgements before it reads the round's messages (a round costs
    /// one network trip, not two); a failed delivery ends the session when
    /// it is seen. Deliveries still in flight when a session ends finish by
    /// themselves (the peers need them), except as described at `Done`.
    fn start_send(
        &self,
        round: u32,
        out: Vec<Outgoing>,
        sending: &mut Sending,
    ) -> Result<(), NodeError> {
        for m in out {
            let to = self.name_of(m.to).ok_or_else(|| {
                NodeError::Internal(format!("engine addressed unknown party {}", m.to))
            })?;
            let call = self.net.deliver(to, self.eid, round, m.payload);
            let limit = self.round_timeout;
            let to = to.clone();
            sending.push(tokio::spawn(async move {
                match tokio::time::timeout(limit, call).await {
                    Ok(r) => r.map_err(NodeError::from),
                    // A delivery that does not finish in a round is a transit
                    // failure of that node (a stalled or overloaded peer), so
                    // the coordinator signs again without it.
                    Err(_) => Err(NodeError::Net(super::NetError {
                        node: to,
                        kind: super::NetErrorKind::Timeout(limit),
                    })),
                }
            }));
        }
        Ok(())
    }

    /// Runs `proto` to the end. With `hold`, the round that carries this
    /// party's partial signature is sent only once `hold` passed (and the
    /// session fails if it did not): the earlier rounds run meanwhile.
    pub async fn run<P>(
        &self,
        mut proto: P,
        mailbox: &mut Mailbox,
        mut hold: Option<Hold>,
    ) -> Result<P::Output, NodeError>
    where
        P: Protocol + Send + 'static,
        P::Output: Send + 'static,
    {
        let (p, started) = off_runtime(proto, |p| p.start()).await?;
        proto = p;
        let mut out = started.map_err(|e| self.protocol_error(e))?;
        let mut round = 1u32;
        // Messages up to MAX_AHEAD rounds early (deliveries of consecutive
        // rounds travel separately and may overtake each other), kept until
        // their round's senders are known; and who sent two for one round.
        let mut ahead: BTreeMap<(u32, PartyIdx), Vec<u8>> = BTreeMap::new();
        let mut ahead_twice: std::collections::BTreeSet<(u32, PartyIdx)> = Default::default();
        let mut sending = Sending::new();
        loop {
            self.start_send(round, out, &mut sending)?;
            // Who sends this round can change between rounds (a reshare's
            // dealers, then its new members).
            let peers: Vec<PartyIdx> = proto.peers().to_vec();
            let mut inbox = Inbox::new();
            let later = ahead.split_off(&(round.saturating_add(1), 0));
            for ((_, idx), payload) in std::mem::replace(&mut ahead, later) {
                if !peers.contains(&idx) {
                    tracing::warn!(
                        eid = %self.eid,
                        party = idx,
                        round,
                        "dropped message from a party that does not send in this round",
                    );
                    if let Some(name) = self.name_of(idx) {
                        mailbox.blame_outsider(name);
                    }
                    continue;
                }
                if ahead_twice.contains(&(round, idx)) {
                    return Err(self.two_messages(idx, round));
                }
                inbox.insert(idx, zeroize::Zeroizing::new(payload));
            }
            let now = tokio::time::Instant::now();
            let deadline = now.checked_add(self.round_timeout).unwrap_or(now);
            while inbox.len() < peers.len() {
                let received = tokio::select! {
                    r = tokio::time::timeout_at(deadline, mailbox.rx.recv()) => r,
                    Some(sent) = sending.next(), if !sending.is_empty() => {
                        let delivered = sent
                            .map_err(|e| NodeError::Internal(format!("delivery task failed: {e}")))?;
                        delivered?;
                        continue;
                    }
                };
                let msg = match received {
                    Ok(Some(m)) => m,
                    Ok(None) => return Err(NodeError::Internal("session mailbox closed".into())),
                    Err(_) => {
                        let missing = peers
                            .iter()
                            .filter(|p| !inbox.contains_key(p))
                            .filter_map(|p| self.name_of(*p).cloned())
                            .collect();
                        return Err(NodeError::Timeout {
                            round,
                            after: self.round_timeout,
                            missing,
                        });
                    }
                };
                let Some(idx) = self.index_of(&msg.from) else {
                    tracing::warn!(
                        eid = %self.eid,
                        from = %msg.from,
                        "dropped message from a node outside this session",
                    );
                    mailbox.blame_outsider(&msg.from);
                    continue;
                };
                if msg.round == round {
                    if !peers.contains(&idx) {
                        tracing::warn!(
                            eid = %self.eid,
                            from = %msg.from,
                            round,
                            "dropped message from a party that does not send in this round",
                        );
                        mailbox.blame_outsider(&msg.from);
                        continue;
                    }
                    if inbox
                        .insert(idx, zeroize::Zeroizing::new(msg.payload))
                        .is_some()
                    {
                        return Err(self.two_messages(idx, round));
                    }
                } else if msg.round > round && msg.round <= round.saturating_add(MAX_AHEAD) {
                    // Checked against that round's senders when it starts.
                    match ahead.entry((msg.round, idx)) {
                        std::collections::btree_map::Entry::Occupied(_) => {
                            ahead_twice.insert((msg.round, idx));
                        }
                        std::collections::btree_map::Entry::Vacant(v) => {
                            v.insert(msg.payload);
                        }
                    }
                } else {
                    tracing::warn!(
                        eid = %self.eid,
                        from = %msg.from,
                        round = msg.round,
                        expected = round,
                        "dropped out-of-round message",
                    );
                }
            }
            let (p, advanced) = off_runtime(proto, move |p| p.advance(inbox)).await?;
            proto = p;
            match advanced.map_err(|e| self.protocol_error(e))? {
                // A partial signature may leave: its ledger entry was made
                // durable when the session was admitted, before it opened.
                Step::Send {
                    messages,
                    partial_signature,
                } => {
                    if partial_signature {
                        if let Some(hold) = hold.take() {
                            hold.await?;
                        }
                    }
                    out = messages;
                    round = round
                        .checked_add(1)
                        .ok_or_else(|| NodeError::Internal("round counter overflow".into()))?;
                }
                Step::Done(output) => {
                    // A party that received nothing in its last round (a
                    // repair helper, a leaving dealer) has only its
                    // deliveries to show: it is done once they arrived, and
                    // fails if one did not. A party that heard from its
                    // peers does not wait (a signer's output stands alone).
                    if peers.is_empty() {
                        while let Some(sent) = sending.next().await {
                            sent.map_err(|e| {
                                NodeError::Internal(format!("delivery task failed: {e}"))
                            })??;
                        }
                    }
                    return Ok(output);
                }
            }
        }
    }
}

/// Runs engine work (milliseconds to a second of CPU) on the blocking pool so
/// that it never stalls the runtime's workers, which also answer pings.
async fn off_runtime<P, T>(
    mut proto: P,
    f: impl FnOnce(&mut P) -> T + Send + 'static,
) -> Result<(P, T), NodeError>
where
    P: Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(move || {
        let r = f(&mut proto);
        (proto, r)
    })
    .await
    .map_err(|e| NodeError::Internal(format!("engine task failed: {e}")))
}

#[cfg(test)]
#[allow(
    clippy::arithmetic_side_effects,
    reason = "tests index and count small constants"
)]
mod tests {
    use std::sync::Mutex;

    use futures::future::BoxFuture;

    use super::*;
    use crate::node::{Inbound, NetError, Outcome, Proposal, Router};

    /// The network to the peer: accepts every delivery and records its
    /// round. The peer's own messages are put into the router directly.
    #[derive(Default)]
    struct Accepting(Mutex<Vec<u32>>);

    impl PeerNet for Accepting {
        fn ping(
            &self,
            _to: &NodeName,
        ) -> BoxFuture<'static, Result<crate::node::PeerVersion, NetError>> {
            Box::pin(async {
                Ok(crate::node::PeerVersion {
                    wire: crate::node::WIRE_VERSION,
                    software: String::new(),
                    cert_not_after: None,
                })
            })
        }
        fn propose(
            &self,
            _to: &NodeName,
            _proposal: Proposal,
        ) -> BoxFuture<'static, Result<Outcome, NodeError>> {
            Box::pin(async { Err(NodeError::Internal("not used here".into())) })
        }
        fn deliver(
            &self,
            _to: &NodeName,
            _eid: ExecutionId,
            round: u32,
            _payload: Vec<u8>,
        ) -> BoxFuture<'static, Result<(), NetError>> {
            self.0.lock().unwrap().push(round);
            Box::pin(async { Ok(()) })
        }
    }

    /// Party 1 of two: three rounds, one byte each way per round; the
    /// output is what party 2 sent, round by round.
    struct Toy {
        round: u8,
        got: Vec<Vec<u8>>,
        peers: Vec<PartyIdx>,
    }

    impl Protocol for Toy {
        type Output = Vec<Vec<u8>>;
        fn me(&self) -> PartyIdx {
            1
        }
        fn peers(&self) -> &[PartyIdx] {
            &self.peers
        }
        fn start(&mut self) -> Result<Vec<Outgoing>, ProtocolError> {
            Ok(vec![Outgoing {
                to: 2,
                payload: vec![1],
            }])
        }
        fn advance(&mut self, mut inbox: Inbox) -> Result<Step<Self::Output>, ProtocolError> {
            self.got
                .push(inbox.remove(&2).map(|p| p.to_vec()).unwrap_or_default());
            self.round += 1;
            if self.round == 3 {
                return Ok(Step::Done(self.got.clone()));
            }
            // Its third round stands for the one with the partial signature.
            Ok(Step::Send {
                messages: vec![Outgoing {
                    to: 2,
                    payload: vec![self.round + 1],
                }],
                partial_signature: self.round == 2,
            })
        }
    }

    fn toy() -> Toy {
        Toy {
            round: 0,
            got: Vec::new(),
            peers: vec![2],
        }
    }

    async fn run_with(arrivals: &[(u32, u8)]) -> (Result<Vec<Vec<u8>>, NodeError>, Vec<u32>) {
        run_holding(arrivals, None).await
    }

    async fn run_holding(
        arrivals: &[(u32, u8)],
        hold: Option<Hold>,
    ) -> (Result<Vec<Vec<u8>>, NodeError>, Vec<u32>) {
        let router = Router::default();
        let eid = ExecutionId::from_slice(&[1; 32]).unwrap();
        let b = NodeName::parse("b").unwrap();
        for &(round, byte) in arrivals {
            router
                .deliver(
                    eid,
                    Inbound {
                        from: b.clone(),
                        round,
                        payload: vec![byte],
                    },
                )
                .unwrap();
        }
        let parties = vec![NodeName::parse("a").unwrap(), b];
        let mut mailbox = router.open(eid, &parties).unwrap();
        let net = Arc::new(Accepting::default());
        let session = Session {
            eid,
            parties: &parties,
            net: net.clone(),
            round_timeout: Duration::from_millis(500),
        };
        let out = session.run(toy(), &mut mailbox, hold).await;
        let sent = net.0.lock().unwrap().clone();
        (out, sent)
    }

    #[tokio::test]
    async fn messages_that_overtake_earlier_rounds_are_kept_for_their_round() {
        // The peer's rounds arrive last first: 3, 2, 1.
        let (out, sent) = run_with(&[(3, 13), (2, 12), (1, 11)]).await;
        assert_eq!(out.unwrap(), vec![vec![11], vec![12], vec![13]]);
        assert_eq!(sent, vec![1, 2, 3]);
    }

    #[tokio::test]
    async fn two_messages_for_a_later_round_are_refused_when_it_starts() {
        let (out, _) = run_with(&[(1, 11), (3, 13), (3, 14), (2, 12)]).await;
        let err = out.unwrap_err();
        assert!(
            err.to_string().contains("sent two messages for one round"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_message_too_far_ahead_is_dropped_and_the_round_times_out() {
        // Round 5 while at round 1 is beyond MAX_AHEAD: dropped, so round 1
        // never completes.
        let (out, _) = run_with(&[(1 + MAX_AHEAD + 1, 15)]).await;
        assert!(
            matches!(out, Err(NodeError::Timeout { round: 1, .. })),
            "{out:?}"
        );
    }

    #[tokio::test]
    async fn the_partial_signature_round_waits_for_the_hold_and_a_failed_hold_ends_the_session() {
        let all = [(1, 11), (2, 12), (3, 13)];
        let passed: Hold = Box::pin(async { Ok(()) });
        let (out, sent) = run_holding(&all, Some(passed)).await;
        assert_eq!(out.unwrap(), vec![vec![11], vec![12], vec![13]]);
        assert_eq!(sent, vec![1, 2, 3]);
        // A hold that fails (the slot gossip met a conflict, or its sender
        // went away): the round with the partial signature never leaves.
        let failed: Hold =
            Box::pin(async { Err(NodeError::FailedPrecondition("gossip refused".into())) });
        let (out, sent) = run_holding(&all, Some(failed)).await;
        assert!(
            matches!(&out, Err(NodeError::FailedPrecondition(m)) if m == "gossip refused"),
            "{out:?}"
        );
        assert_eq!(sent, vec![1, 2]);
    }
}
