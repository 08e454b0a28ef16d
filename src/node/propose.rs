//! Proposing and fan-out: a coordinator sends a proposal to every party
//! (itself directly) and collects the outcomes; a participant claims the
//! execution id, opens the session's mailbox and runs the engine
//! (`claim_session` / `OpenSession::run_session`, the one way a session runs).

use std::sync::Arc;

use super::router::Mailbox;
use super::session::Session;
use super::{now_unix, Node, NodeError, Outcome, Proposal};
use crate::domain::{ExecutionId, NodeName};
use crate::protocol::{Protocol, ProtocolError};

/// How long a coordinator waits, after a participant failed only because a
/// message could not be delivered, for another participant's own refusal.
const REFUSAL_GRACE: std::time::Duration = std::time::Duration::from_secs(2);
/// The same wait after a round timed out: the others had the whole round to
/// say why, so a refusal still to come is one already on its way.
const TIMEOUT_GRACE: std::time::Duration = std::time::Duration::from_millis(200);

/// The remote participants' answers to one proposal, and their tasks,
/// which are aborted (cancelling the calls) when this is dropped unless
/// `detach` was called.
struct RemoteCalls {
    rx: tokio::sync::mpsc::UnboundedReceiver<(NodeName, Result<Outcome, NodeError>)>,
    pending: usize,
    tasks: Vec<tokio::task::AbortHandle>,
}

impl RemoteCalls {
    fn detach(&mut self) {
        self.tasks.clear();
    }
}

impl Drop for RemoteCalls {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

pub(super) fn nonce() -> Result<Vec<u8>, NodeError> {
    let mut n = vec![0u8; 32];
    getrandom::fill(&mut n).map_err(|e| NodeError::Internal(format!("rng: {e}")))?;
    Ok(n)
}

/// A session this node takes part in, with its mailbox open: messages for
/// it are kept from now on, and dropped when this is dropped.
pub(crate) struct OpenSession<'a> {
    session: Session<'a>,
    mailbox: Mailbox,
    hold: Option<super::session::Hold>,
}

impl OpenSession<'_> {
    /// Runs `proto` (or reports the error building it failed with) to the end.
    pub async fn run_session<P>(
        mut self,
        proto: Result<P, ProtocolError>,
    ) -> Result<P::Output, NodeError>
    where
        P: Protocol + Send + 'static,
        P::Output: Send + 'static,
    {
        let proto = proto.map_err(|e| self.session.protocol_error(e))?;
        self.session.run(proto, &mut self.mailbox, self.hold).await
    }
}

impl OpenSession<'_> {
    /// Rounds of this session wait at most `limit` (signing's shorter bound).
    pub(crate) fn rounds_within(mut self, limit: std::time::Duration) -> Self {
        self.session.round_timeout = limit;
        self
    }

    /// This party's partial signature leaves only once `hold` passed.
    pub(crate) fn hold_partial_signature(mut self, hold: Option<super::session::Hold>) -> Self {
        self.hold = hold;
        self
    }
}

impl Node {
    /// Opens the mailbox of session `eid` among `parties` (party i is
    /// `parties[i - 1]`). The eid must have been claimed (or admitted) first.
    pub(crate) fn open_session<'a>(
        &self,
        eid: ExecutionId,
        parties: &'a [NodeName],
    ) -> Result<OpenSession<'a>, NodeError> {
        let mailbox = self
            .router
            .open(eid, parties)
            .map_err(|e| NodeError::PermissionDenied(e.to_string()))?;
        Ok(OpenSession {
            session: Session {
                eid,
                parties,
                net: Arc::clone(&self.net),
                round_timeout: self.timeouts.round,
            },
            mailbox,
            hold: None,
        })
    }

    /// Checks that the proposed eid is the one this node derived from the
    /// proposal, claims it durably (a duplicate is refused before it can touch
    /// the mailbox of the session already running under it), and opens the session.
    pub(crate) fn claim_session<'a>(
        &self,
        proposed: &ExecutionId,
        expected: ExecutionId,
        parties: &'a [NodeName],
    ) -> Result<OpenSession<'a>, NodeError> {
        self.claim(proposed, expected)?;
        self.open_session(*proposed, parties)
    }

    pub(crate) fn claim(
        &self,
        proposed: &ExecutionId,
        expected: ExecutionId,
    ) -> Result<(), NodeError> {
        if *proposed != expected {
            return Err(NodeError::PermissionDenied(
                "execution id does not match the proposal".into(),
            ));
        }
        if !self.store.claim_eid(proposed, now_unix())? {
            return Err(NodeError::PermissionDenied(format!(
                "execution id {proposed} was used before; refusing to reuse it"
            )));
        }
        Ok(())
    }

    /// Sends `proposal` to every party (ourselves directly) and collects the
    /// outcomes. The first failure ends the wait: the other calls are
    /// cancelled and that failure is returned, so a refusal reaches the
    /// client at once instead of after a round timeout.
    pub(crate) async fn propose_all(
        &self,
        parties: &[NodeName],
        proposal: Proposal,
    ) -> Result<Vec<(NodeName, Outcome)>, NodeError> {
        self.propose_parties(parties, proposal, false).await
    }

    /// `propose_all`; with `own_suffices`, this node's own successful
    /// outcome ends the wait (it is returned alone) and the other
    /// participants' calls are left to finish undisturbed. For signing,
    /// where our own session's signature is complete and verified.
    pub(crate) async fn propose_parties(
        &self,
        parties: &[NodeName],
        proposal: Proposal,
        own_suffices: bool,
    ) -> Result<Vec<(NodeName, Outcome)>, NodeError> {
        let session_limit = self.timeouts.session();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let mut remote = RemoteCalls {
            rx,
            pending: 0,
            tasks: Vec::new(),
        };
        let mut own: Option<futures::future::BoxFuture<'_, Result<Outcome, NodeError>>> = None;
        for n in parties {
            if *n == self.name {
                let p = proposal.clone();
                own = Some(Box::pin(async move {
                    match tokio::time::timeout(session_limit, self.on_propose(&self.name, p)).await
                    {
                        Ok(r) => r,
                        Err(_) => Err(NodeError::Internal(format!(
                            "own session exceeded {session_limit:?}"
                        ))),
                    }
                }));
            } else {
                // Each call runs on its own task, so that leaving early does
                // not cancel it; dropping `remote` aborts the unfinished ones.
                let call = self.net.propose(n, proposal.clone());
                let (n, tx) = (n.clone(), tx.clone());
                let task = tokio::spawn(async move {
                    let r = call.await;
                    if let Err(tokio::sync::mpsc::error::SendError((n, Err(e)))) = tx.send((n, r)) {
                        tracing::warn!(
                            node = %n,
                            error = %e,
                            "participant failed after the coordinator had its result",
                        );
                    }
                });
                remote.tasks.push(task.abort_handle());
                remote.pending = remote.pending.saturating_add(1);
            }
        }
        drop(tx);
        let mut ok = Vec::with_capacity(parties.len());
        while let Some((n, r)) = self.next_answer(&mut own, &mut remote).await {
            match r {
                Ok(o) if own_suffices && n == self.name => {
                    remote.detach();
                    return Ok(vec![(n, o)]);
                }
                Ok(o) => ok.push((n, o)),
                Err(e) => {
                    tracing::warn!(
                        node = %n,
                        error = %e,
                        eid = %proposal.eid,
                        "participant failed; abandoning the session",
                    );
                    if !e.reason().is_transit() {
                        return Err(e);
                    }
                    // A delivery failure or a round timeout is usually the
                    // echo of another participant's refusal (its session
                    // closed). Give the others a moment to report the cause.
                    let grace = match e.cause() {
                        NodeError::Timeout { .. } => TIMEOUT_GRACE,
                        _ => REFUSAL_GRACE,
                    };
                    let grace = tokio::time::sleep(grace);
                    tokio::pin!(grace);
                    loop {
                        tokio::select! {
                            _ = &mut grace => return Err(e),
                            next = self.next_answer(&mut own, &mut remote) => match next {
                                Some((_, Err(cause)))
                                    if !cause.reason().is_transit() =>
                                {
                                    return Err(cause)
                                }
                                // Our own session finished after all: its
                                // verified signature stands.
                                Some((n, Ok(o))) if own_suffices && n == self.name => {
                                    remote.detach();
                                    return Ok(vec![(n, o)]);
                                }
                                Some(_) => {}
                                None => return Err(e),
                            },
                        }
                    }
                }
            }
        }
        Ok(ok)
    }

    /// The next participant answer: our own session's or a remote one's;
    /// `None` once every party has answered.
    async fn next_answer(
        &self,
        own: &mut Option<futures::future::BoxFuture<'_, Result<Outcome, NodeError>>>,
        remote: &mut RemoteCalls,
    ) -> Option<(NodeName, Result<Outcome, NodeError>)> {
        enum Next {
            Own(Result<Outcome, NodeError>),
            Remote(Option<(NodeName, Result<Outcome, NodeError>)>),
        }
        if own.is_none() && remote.pending == 0 {
            return None;
        }
        let has_own = own.is_some();
        let has_remote = remote.pending > 0;
        let next = tokio::select! {
            r = async {
                match own.as_mut() {
                    Some(f) => f.await,
                    None => std::future::pending().await,
                }
            }, if has_own => Next::Own(r),
            r = remote.rx.recv(), if has_remote => Next::Remote(r),
        };
        match next {
            Next::Own(r) => {
                *own = None;
                Some((self.name.clone(), r))
            }
            Next::Remote(Some(answer)) => {
                remote.pending = remote.pending.saturating_sub(1);
                Some(answer)
            }
            Next::Remote(None) => {
                remote.pending = 0;
                Some((
                    self.name.clone(),
                    Err(NodeError::Internal(
                        "a proposal task ended without an answer".into(),
                    )),
                ))
            }
        }
    }
}
