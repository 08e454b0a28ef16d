//! Resharing to a new committee and/or threshold with the same public key.
//! dkls23 has no resharing, so this is built here from Feldman VSS:
//!
//! - t dealers of the old committee each deal their Lagrange-weighted share
//!   `s_i = λ_i · x_i` (so that `Σ s_i` is the key) with a fresh polynomial
//!   of degree t' - 1, publishing Feldman commitments to its coefficients.
//! - Every new member checks its point from each dealer against that dealer's
//!   commitments, checks that each dealer's constant-term commitment equals
//!   `λ_i · X_i` (its old verifying share, from the key's public key package),
//!   and that the constant terms add up to the public key. A dealer that
//!   fails a check is named.
//! - The new share is the sum of the points; the new verifying shares follow
//!   from the commitments. The result is a share-only ("hollow") party: a
//!   complete refresh among the new committee then builds the pairwise
//!   signing state.
//!
//! Pure functions, no I/O; the node moves dealings between nodes.

mod vss;

pub use vss::{assemble, assemble_with, deal, deal_secret, Dealing, Member, Reshared};

use std::collections::BTreeMap;

use k256::elliptic_curve::ff::Field;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::protocol::curve::{Curve, Package};
use crate::protocol::refresh::{Refresh, RefreshOutput};
use crate::protocol::KeyShare;
use crate::protocol::{check_inbox, Inbox, Outgoing, PartyIdx, Protocol, ProtocolError, Step};

use vss::check_dealers;

/// The roles in one reshare session. Session indices are 1-based positions
/// in the session's party list (the new committee in order, then any dealer
/// outside it); the old and new committee indices are the key's party
/// indices before and after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roles {
    /// Session index -> old committee index, for each of the t dealers.
    pub dealers: BTreeMap<PartyIdx, PartyIdx>,
    /// Session index -> new committee index (1..=n'), for each new member.
    pub members: BTreeMap<PartyIdx, PartyIdx>,
}

/// A new member's round-2 message: its digest of each dealer's commitments
/// (echo, so a dealer that showed members different commitments is caught)
/// and its first refresh message.
#[derive(Serialize, Deserialize)]
struct Echoed {
    echo: BTreeMap<PartyIdx, [u8; 32]>,
    inner: Vec<u8>,
}

enum Phase<C: Curve> {
    Init,
    Collect {
        own: Option<Dealing<C>>,
    },
    Refreshing {
        refresh: Box<Refresh<C>>,
        echo: BTreeMap<PartyIdx, [u8; 32]>,
        first: bool,
    },
    Finished,
}

/// One party's run of a whole reshare: round 1 the dealers send each new
/// member its point; every new member checks and assembles its share, then
/// the new members run a complete refresh among themselves (rounds 2-5,
/// the first of which also carries the echo of the commitments). A dealer
/// outside the new committee is done after round 1 (output `None`).
pub struct ReshareSession<C: Curve> {
    me: PartyIdx,
    roles: Roles,
    share: Option<KeyShare>,
    old_package: Package<C>,
    new_t: u8,
    chain_code: [u8; 32],
    sid: Vec<u8>,
    peers: Vec<PartyIdx>,
    round: u32,
    phase: Phase<C>,
    corrupt_dealing: bool,
}

impl<C: Curve> ReshareSession<C> {
    /// `me` is this party's session index; `share` its current share if it is
    /// a dealer; `old_package` the key's current public key package
    /// (bincode); `sid` the execution id.
    pub fn new(
        me: PartyIdx,
        roles: Roles,
        share: Option<KeyShare>,
        old_package: &[u8],
        new_t: u8,
        chain_code: [u8; 32],
        sid: &[u8],
    ) -> Result<Self, ProtocolError> {
        let old_package: Package<C> = super::decode(old_package)
            .map_err(|e| ProtocolError::InvalidArgs(format!("public key package: {e}")))?;
        let new_n = u8::try_from(roles.members.len())
            .map_err(|_| ProtocolError::InvalidArgs("too many new members".into()))?;
        if !roles.members.values().copied().eq(1..=new_n) {
            return Err(ProtocolError::InvalidArgs(
                "new committee indices must be 1..=n' in session order".into(),
            ));
        }
        let old: Vec<PartyIdx> = roles.dealers.values().copied().collect();
        check_dealers(&old, old_package.threshold())?;
        match (roles.dealers.get(&me), &share) {
            (Some(&old_idx), Some(s)) => {
                let p = C::party(s)?;
                if p.party_index.as_u8() != old_idx || p.pk != *old_package.verifying_key() {
                    return Err(ProtocolError::InvalidArgs(format!(
                        "the dealer's share is not old party {old_idx}'s share of this key"
                    )));
                }
            }
            (Some(_), None) => {
                return Err(ProtocolError::InvalidArgs(
                    "a dealer needs its share".into(),
                ))
            }
            (None, _) if !roles.members.contains_key(&me) => {
                return Err(ProtocolError::InvalidArgs(format!(
                    "party {me} is neither a dealer nor a new member"
                )))
            }
            (None, _) => {}
        }
        Ok(Self {
            me,
            roles,
            share,
            old_package,
            new_t,
            chain_code,
            sid: sid.to_vec(),
            peers: Vec::new(),
            round: 0,
            phase: Phase::Init,
            corrupt_dealing: false,
        })
    }

    /// Test hook: this dealer sends the first other new member a point that
    /// does not match its commitments.
    #[cfg(feature = "fault-injection")]
    pub fn corrupt_dealing(&mut self) {
        self.corrupt_dealing = true;
    }

    fn session_index_of_dealer(&self, old: PartyIdx) -> PartyIdx {
        self.roles
            .dealers
            .iter()
            .find(|(_, o)| **o == old)
            .map(|(s, _)| *s)
            .unwrap_or(0)
    }

    fn old_dealers(&self) -> Vec<PartyIdx> {
        self.roles.dealers.values().copied().collect()
    }

    /// Maps an error that names an old committee index (assembly) or a new
    /// one (refresh) back to session indices.
    fn blame_in_session(e: ProtocolError, map: &BTreeMap<PartyIdx, PartyIdx>) -> ProtocolError {
        let back = |i: PartyIdx| {
            map.iter()
                .find(|(_, v)| **v == i)
                .map(|(s, _)| *s)
                .unwrap_or(0)
        };
        match e {
            ProtocolError::PeerMisbehaved {
                from,
                round,
                reason,
            } => ProtocolError::PeerMisbehaved {
                from: back(from),
                round,
                reason,
            },
            ProtocolError::Equivocation { sender, round } => ProtocolError::Equivocation {
                sender: back(sender),
                round,
            },
            ProtocolError::EchoMismatch {
                sender,
                echoer,
                round,
            } => ProtocolError::EchoMismatch {
                sender: back(sender),
                echoer: back(echoer),
                round,
            },
            ProtocolError::ConfirmationMismatch { from } => {
                ProtocolError::ConfirmationMismatch { from: back(from) }
            }
            ProtocolError::Engine { blame, ban, reason } => ProtocolError::Engine {
                blame: blame.map(back),
                ban,
                reason,
            },
            other => other,
        }
    }

    /// Refresh messages (addressed by new index) readdressed by session index.
    fn to_session(&self, out: Vec<Outgoing>) -> Result<Vec<Outgoing>, ProtocolError> {
        out.into_iter()
            .map(|m| {
                let to = self
                    .roles
                    .members
                    .iter()
                    .find(|(_, j)| **j == m.to)
                    .map(|(s, _)| *s)
                    .ok_or_else(|| ProtocolError::InvalidArgs(format!("no new member {}", m.to)))?;
                Ok(Outgoing {
                    to,
                    payload: m.payload,
                })
            })
            .collect()
    }

    fn collect(
        &mut self,
        inbox: Inbox,
        own: Option<Dealing<C>>,
    ) -> Result<Step<Option<RefreshOutput>>, ProtocolError> {
        let Some(&me_new) = self.roles.members.get(&self.me) else {
            // A dealer leaving the committee: its part is done.
            self.phase = Phase::Finished;
            return Ok(Step::Done(None));
        };
        let mut dealings = BTreeMap::new();
        for (from, raw) in inbox {
            let old = self.roles.dealers.get(&from).copied().ok_or_else(|| {
                ProtocolError::misbehaved(from, 1, "not a dealer of this reshare")
            })?;
            let d: Dealing<C> =
                super::decode(&raw).map_err(|e| ProtocolError::misbehaved(from, 1, e))?;
            dealings.insert(old, d);
        }
        if let (Some(d), Some(&old)) = (own, self.roles.dealers.get(&self.me)) {
            dealings.insert(old, d);
        }
        let new_n = self.roles.members.len() as u8;
        let reshared = assemble(
            &dealings,
            &self.old_package,
            me_new,
            self.new_t,
            new_n,
            self.chain_code,
            &self.sid,
        )
        .map_err(|e| Self::blame_in_session(e, &self.roles.dealers))?;
        let mut echo: BTreeMap<PartyIdx, [u8; 32]> = BTreeMap::new();
        for (&old, d) in &dealings {
            let mut h = Sha256::new();
            for c in &d.commitments {
                h.update(C::compress(c).map_err(|_| {
                    let from = self.session_index_of_dealer(old);
                    ProtocolError::misbehaved(from, 1, "a commitment is the identity")
                })?);
            }
            echo.insert(old, h.finalize().into());
        }
        for d in dealings.values_mut() {
            zeroize::Zeroize::zeroize(&mut d.share);
        }
        let package = super::encode(&reshared.package).map_err(ProtocolError::InvalidArgs)?;
        let mut refresh_sid = self.sid.clone();
        refresh_sid.extend_from_slice(b"/refresh");
        let mut refresh = Refresh::<C>::new(reshared.share, &package, &refresh_sid)?;
        let first = refresh.start()?;
        let mut out = Vec::with_capacity(first.len());
        for m in self.to_session(first)? {
            let payload = super::encode(&Echoed {
                echo: echo.clone(),
                inner: m.payload,
            })
            .map_err(ProtocolError::InvalidArgs)?;
            out.push(Outgoing { to: m.to, payload });
        }
        self.peers = self
            .roles
            .members
            .keys()
            .copied()
            .filter(|s| *s != self.me)
            .collect();
        self.phase = Phase::Refreshing {
            refresh: Box::new(refresh),
            echo,
            first: true,
        };
        Ok(Step::Send {
            messages: out,
            partial_signature: false,
        })
    }
}

impl<C: Curve> Protocol for ReshareSession<C> {
    type Output = Option<RefreshOutput>;

    fn me(&self) -> PartyIdx {
        self.me
    }

    fn peers(&self) -> &[PartyIdx] {
        &self.peers
    }

    fn start(&mut self) -> Result<Vec<Outgoing>, ProtocolError> {
        if !matches!(self.phase, Phase::Init) {
            return Err(ProtocolError::InvalidArgs("reshare already started".into()));
        }
        self.round = 1;
        let mut own = None;
        let mut out = Vec::new();
        if let Some(share) = &self.share {
            let new_n = self.roles.members.len() as u8;
            let mut dealt = deal::<C>(share, &self.old_dealers(), self.new_t, new_n)?;
            let mut corrupt = self.corrupt_dealing;
            for (&s, j) in &self.roles.members {
                let Some(mut d) = dealt.remove(j) else {
                    return Err(ProtocolError::InvalidArgs(format!("no dealing for {j}")));
                };
                if s == self.me {
                    own = Some(d);
                    continue;
                }
                if std::mem::take(&mut corrupt) {
                    #[allow(
                        clippy::arithmetic_side_effects,
                        reason = "scalar addition is modular; this is the test hook's bad point"
                    )]
                    {
                        d.share += C::Scalar::ONE;
                    }
                }
                let payload = super::encode(&d).map_err(ProtocolError::InvalidArgs)?;
                zeroize::Zeroize::zeroize(&mut d.share);
                out.push(Outgoing { to: s, payload });
            }
        }
        if self.roles.members.contains_key(&self.me) {
            self.peers = self
                .roles
                .dealers
                .keys()
                .copied()
                .filter(|s| *s != self.me)
                .collect();
        }
        self.phase = Phase::Collect { own };
        Ok(out)
    }

    fn advance(&mut self, inbox: Inbox) -> Result<Step<Self::Output>, ProtocolError> {
        check_inbox(&inbox, &self.peers, self.round)?;
        let phase = std::mem::replace(&mut self.phase, Phase::Finished);
        self.round = self.round.saturating_add(1);
        match phase {
            Phase::Collect { own } => self.collect(inbox, own),
            Phase::Refreshing {
                mut refresh,
                echo,
                first,
            } => {
                let mut inner = Inbox::new();
                let mut echo_faults = Vec::new();
                for (from, raw) in inbox {
                    let j = *self.roles.members.get(&from).ok_or_else(|| {
                        ProtocolError::misbehaved(
                            from,
                            self.round.saturating_sub(1),
                            "not a new member",
                        )
                    })?;
                    let payload = if first {
                        let m: Echoed = super::decode(&raw).map_err(|e| {
                            ProtocolError::misbehaved(from, self.round.saturating_sub(1), e)
                        })?;
                        for (&old, h) in &echo {
                            if m.echo.get(&old) != Some(h) {
                                let dealer = self.session_index_of_dealer(old);
                                echo_faults.push(crate::protocol::echo::echo_fault(
                                    dealer, self.me, from, 1,
                                ));
                            }
                        }
                        zeroize::Zeroizing::new(m.inner)
                    } else {
                        raw
                    };
                    inner.insert(j, payload);
                }
                crate::protocol::echo::most_conclusive(echo_faults)?;
                match refresh
                    .advance(inner)
                    .map_err(|e| Self::blame_in_session(e, &self.roles.members))?
                {
                    Step::Send { messages, .. } => {
                        let messages = self.to_session(messages)?;
                        self.phase = Phase::Refreshing {
                            refresh,
                            echo,
                            first: false,
                        };
                        Ok(Step::Send {
                            messages,
                            partial_signature: false,
                        })
                    }
                    Step::Done(o) => Ok(Step::Done(Some(o))),
                }
            }
            Phase::Init | Phase::Finished => Err(ProtocolError::InvalidArgs(
                "reshare advanced out of order".into(),
            )),
        }
    }
}

#[cfg(test)]
#[allow(
    clippy::arithmetic_side_effects,
    reason = "tests index and count small constants"
)]
mod tests;
