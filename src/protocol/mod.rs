//! I/O-free boundary over the dkls23 engine, for every key type (`curve.rs`;
//! `scheme.rs` is the entry point that picks the curve from a key type, so
//! nothing above this module names an engine or curve type). Each protocol is a round-based
//! state machine: the caller (node/) delivers the messages of one round from
//! every other party and gets the next round's outgoing messages back. This
//! module never touches the network, the store, the clock or tokio.
//!
//! Party indices are 1-based `u8`s taken from the key's committee order. The
//! sender of every inbound message is the authenticated peer, supplied by the
//! caller; any sender field inside an engine message must agree with it.
// Numbers from peers are never trusted for arithmetic: every operation here is
// checked, saturating, or allowed with its reason.
#![deny(clippy::arithmetic_side_effects)]

pub mod curve;
mod echo;
#[cfg(test)]
mod garbage_tests;
pub mod import;
pub mod inproc;
pub mod keygen;
pub mod refresh;
pub mod repair;
pub mod reshare;
pub mod scheme;
mod share;
pub mod sign;

use std::collections::BTreeMap;

pub use crate::codec::{decode, encode, MAX_MESSAGE_BYTES};
pub use curve::Curve;
use dkls23::protocols::{Abort, AbortKind};
pub use share::KeyShare;

/// 1-based party index in a committee.
pub type PartyIdx = u8;

/// One message to one party. The payload may carry secret values (keygen
/// round 1), so `Debug` shows only its length.
#[derive(Clone)]
pub struct Outgoing {
    pub to: PartyIdx,
    pub payload: Vec<u8>,
}

impl std::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outgoing")
            .field("to", &self.to)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

/// What a protocol wants after a round.
pub enum Step<T> {
    /// Send these and wait for the next round. `partial_signature` marks the
    /// round whose messages reveal this node's signature share: the caller
    /// must make its ledger entry durable before sending them.
    Send {
        messages: Vec<Outgoing>,
        partial_signature: bool,
    },
    /// The protocol finished.
    Done(T),
}

/// Messages received in one round, keyed by the authenticated sender.
/// The payloads are zeroized when dropped: keygen, refresh and reshare
/// messages carry secret fragments and dealings.
pub type Inbox = BTreeMap<PartyIdx, zeroize::Zeroizing<Vec<u8>>>;

/// A round-based protocol run by one party.
pub trait Protocol {
    type Output;
    /// This party's index.
    fn me(&self) -> PartyIdx;
    /// The parties that send this party a message in the coming round (for
    /// most protocols every other party, every round; a reshare changes it
    /// after round 1).
    fn peers(&self) -> &[PartyIdx];
    /// First round's messages.
    fn start(&mut self) -> Result<Vec<Outgoing>, ProtocolError>;
    /// Feeds one whole round (one message from each peer) and advances.
    fn advance(&mut self, inbox: Inbox) -> Result<Step<Self::Output>, ProtocolError>;
}

impl<X: Protocol + ?Sized> Protocol for Box<X> {
    type Output = X::Output;
    fn me(&self) -> PartyIdx {
        (**self).me()
    }
    fn peers(&self) -> &[PartyIdx] {
        (**self).peers()
    }
    fn start(&mut self) -> Result<Vec<Outgoing>, ProtocolError> {
        (**self).start()
    }
    fn advance(&mut self, inbox: Inbox) -> Result<Step<Self::Output>, ProtocolError> {
        (**self).advance(inbox)
    }
}

/// Why a protocol run stopped. Variants say whose fault it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A peer sent bytes that do not decode, or a message that claims another
    /// sender or recipient, or is otherwise malformed.
    #[error("party {from} sent a malformed round-{round} message: {reason}")]
    PeerMisbehaved {
        from: PartyIdx,
        round: u32,
        reason: String,
    },
    /// A broadcast was not the same for everybody: `sender` sent different
    /// payloads to different parties (detected by the echo check).
    #[error("party {sender} sent inconsistent broadcasts in round {round} (echo check)")]
    Equivocation { sender: PartyIdx, round: u32 },
    /// Party `echoer` reports another hash of party `sender`'s broadcast than
    /// this party received: `sender` sent different payloads, or `echoer`
    /// lies about what it got. Echoes are not signed, so both are suspects
    /// and neither is blamed alone (a lying echoer cannot frame an honest
    /// sender).
    #[error(
        "party {echoer}'s echo of party {sender}'s round-{round} broadcast differs from what this \
         party received: one of the two misbehaved (both suspects)"
    )]
    EchoMismatch {
        sender: PartyIdx,
        echoer: PartyIdx,
        round: u32,
    },
    /// Parties finished with different public key packages.
    #[error("party {from} confirmed a different public key package")]
    ConfirmationMismatch { from: PartyIdx },
    /// The engine aborted. `blame` names the counterparty when the engine
    /// could attribute the abort; `ban` says it must be excluded from now on.
    #[error("engine aborted: {reason}{}", blames(*blame))]
    Engine {
        blame: Option<PartyIdx>,
        ban: bool,
        reason: String,
    },
    /// The final signature did not verify: someone contributed a wrong share
    /// and nobody can be named. The key must be frozen.
    #[error("final signature failed verification; no party can be blamed")]
    InvalidSignature,
    /// Local misuse (bad arguments); a bug on this side.
    #[error("invalid protocol arguments: {0}")]
    InvalidArgs(String),
}

fn blames(party: Option<PartyIdx>) -> String {
    party
        .map(|b| format!(" (blames party {b})"))
        .unwrap_or_default()
}

impl ProtocolError {
    /// The party this error blames, if any.
    pub fn blamed(&self) -> Option<PartyIdx> {
        match self {
            Self::PeerMisbehaved { from, .. } | Self::ConfirmationMismatch { from } => Some(*from),
            Self::Equivocation { sender, .. } => Some(*sender),
            Self::Engine { blame, .. } => *blame,
            Self::EchoMismatch { .. } | Self::InvalidSignature | Self::InvalidArgs(_) => None,
        }
    }

    /// The party that must never be run with again for this key, if any:
    /// the counterparty of an abort the engine marks as ban-worthy (in
    /// DKLs23 a failed OT consistency check may have leaked bits of this
    /// party's share to it; repeated selective aborts are how that attack
    /// works), or a party caught sending different broadcasts to different
    /// parties. Other blames (a missing or malformed message) are transient
    /// suspicions, not bans.
    pub fn ban_worthy(&self) -> Option<PartyIdx> {
        match self {
            Self::Engine {
                blame, ban: true, ..
            } => *blame,
            Self::Equivocation { sender, .. } => Some(*sender),
            _ => None,
        }
    }

    /// The parties one of which misbehaved: the blamed one, or both sides of
    /// an echo mismatch.
    pub fn suspects(&self) -> Vec<PartyIdx> {
        match self {
            Self::EchoMismatch { sender, echoer, .. } => vec![*sender, *echoer],
            other => other.blamed().into_iter().collect(),
        }
    }

    pub(crate) fn misbehaved(from: PartyIdx, round: u32, reason: impl Into<String>) -> Self {
        Self::PeerMisbehaved {
            from,
            round,
            reason: reason.into(),
        }
    }
}

impl From<Abort> for ProtocolError {
    fn from(a: Abort) -> Self {
        use dkls23::protocols::AbortReason as R;
        if matches!(a.reason, R::SignatureVerificationFailed) {
            return Self::InvalidSignature;
        }
        let (blame, ban) = match a.kind {
            AbortKind::BanCounterparty(p) => (Some(p.as_u8()), true),
            AbortKind::Recoverable => (reason_counterparty(&a.reason), false),
        };
        Self::Engine {
            blame,
            ban,
            reason: a.reason.to_string(),
        }
    }
}

fn reason_counterparty(r: &dkls23::protocols::AbortReason) -> Option<PartyIdx> {
    use dkls23::protocols::AbortReason as R;
    match r {
        R::UnexpectedSender { sender } | R::DuplicateSender { sender } => Some(sender.as_u8()),
        R::MissingMessageFromParty { party }
        | R::MissingCommittedPoint { party }
        | R::ChainCodeCommitmentFailed { party } => Some(party.as_u8()),
        R::SessionBindingMismatch { counterparty }
        | R::ProofVerificationFailed { counterparty }
        | R::CommitmentMismatch { counterparty }
        | R::TrivialInstancePoint { counterparty }
        | R::OtConsistencyCheckFailed { counterparty }
        | R::MultiplicationVerificationFailed { counterparty, .. }
        | R::GammaUInconsistency { counterparty }
        | R::ZeroShareDecommitFailed { counterparty } => Some(counterparty.as_u8()),
        _ => None,
    }
}

/// Checks that `inbox` holds exactly one message from each peer and nothing else.
pub(crate) fn check_inbox(
    inbox: &Inbox,
    peers: &[PartyIdx],
    round: u32,
) -> Result<(), ProtocolError> {
    for p in peers {
        if !inbox.contains_key(p) {
            return Err(ProtocolError::Engine {
                blame: Some(*p),
                ban: false,
                reason: format!("no round-{round} message from party {p}"),
            });
        }
    }
    if let Some(extra) = inbox.keys().find(|k| !peers.contains(k)) {
        return Err(ProtocolError::misbehaved(
            *extra,
            round,
            "not a participant of this session",
        ));
    }
    Ok(())
}

/// Round 1 of keygen and refresh: polynomial fragment j goes to party j;
/// our own stays here. The encoded messages carry secret values.
pub(crate) fn distribute_fragments<S: Copy + zeroize::Zeroize>(
    mut fragments: Vec<S>,
    me: PartyIdx,
    encode_one: impl Fn(S) -> Result<Vec<u8>, String>,
) -> Result<(Vec<Outgoing>, zeroize::Zeroizing<S>), ProtocolError> {
    let mut out = Vec::with_capacity(fragments.len());
    let mut own = None;
    for (i, f) in fragments.iter().enumerate() {
        let to = i
            .checked_add(1)
            .and_then(|p| PartyIdx::try_from(p).ok())
            .ok_or_else(|| ProtocolError::InvalidArgs("more than 255 parties".into()))?;
        if to == me {
            own = Some(zeroize::Zeroizing::new(*f));
        } else {
            out.push(Outgoing {
                to,
                payload: encode_one(*f).map_err(ProtocolError::InvalidArgs)?,
            });
        }
    }
    zeroize::Zeroize::zeroize(&mut fragments);
    let own = own.ok_or_else(|| ProtocolError::InvalidArgs("no own fragment".into()))?;
    Ok((out, own))
}

pub(crate) fn party_index(i: PartyIdx) -> Result<dkls23::protocols::PartyIndex, ProtocolError> {
    dkls23::protocols::PartyIndex::new(i)
        .map_err(|_| ProtocolError::InvalidArgs(format!("party index {i} out of range")))
}
