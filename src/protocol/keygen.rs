//! Distributed key generation (dkls23 DKG, no dealer) with an echo check on
//! both broadcast rounds and a final confirmation round.
//!
//! Rounds: 1 private polynomial fragments; 2 broadcast (proof commitment,
//! chain-code commitment) + private zero-share commitments; 3 broadcast
//! (chain-code opening, echo of round 2) + private zero-share seeds and
//! multiplication setup; 4 confirmation (echo of round 3 and the hash of the
//! resulting public key package). A party finishes only when every peer
//! echoed the same broadcasts and confirmed the same package.

use std::collections::BTreeMap;

use dkls23::protocols::dkg::{
    BroadcastDerivationPhase2to4, BroadcastDerivationPhase3to4, ProofCommitment,
    TransmitInitMulPhase3to4, TransmitInitZeroSharePhase2to4, TransmitInitZeroSharePhase3to4,
};
use dkls23::protocols::{Parameters, PartyIndex};
use dkls23::DkgSession;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use super::curve::Curve;
use super::echo::EchoCheck;
use super::KeyShare;
use super::{
    check_inbox, decode, distribute_fragments, encode, party_index, Inbox, Outgoing, PartyIdx,
    Protocol, ProtocolError, Step,
};

/// What every party holds after a successful keygen.
#[derive(Debug)]
pub struct KeygenOutput {
    pub share: KeyShare,
    /// Compressed SEC1 public key.
    pub public_key: [u8; 33],
    pub chain_code: [u8; 32],
    /// SHA-256 over the public key package and chain code; equal on every party.
    pub package_hash: [u8; 32],
    /// The serialized public key package (verifying shares), public.
    pub package: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
struct R1<C: Curve> {
    fragment: C::Scalar,
}

#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
struct Bcast2<C: Curve> {
    proof: ProofCommitment<C>,
    cc: BroadcastDerivationPhase2to4,
}

#[derive(Serialize, Deserialize)]
struct R2 {
    bcast: Vec<u8>,
    zero: TransmitInitZeroSharePhase2to4,
}

#[derive(Serialize, Deserialize)]
struct Bcast3 {
    cc: BroadcastDerivationPhase3to4,
    /// Hash of every round-2 broadcast as received, by sender.
    echo: BTreeMap<PartyIdx, [u8; 32]>,
}

#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
struct R3<C: Curve> {
    bcast: Vec<u8>,
    zero: TransmitInitZeroSharePhase3to4,
    mul: TransmitInitMulPhase3to4<C>,
}

#[derive(Serialize, Deserialize)]
struct R4 {
    echo: BTreeMap<PartyIdx, [u8; 32]>,
    package_hash: [u8; 32],
}

enum State<C: Curve> {
    Init,
    AfterR1 {
        own_fragment: Zeroizing<C::Scalar>,
    },
    AfterR2 {
        proofs: BTreeMap<PartyIdx, ProofCommitment<C>>,
        own_bcast: Vec<u8>,
        own_zero: Vec<TransmitInitZeroSharePhase2to4>,
    },
    AfterR3 {
        proofs: Vec<ProofCommitment<C>>,
        zero2: Vec<TransmitInitZeroSharePhase2to4>,
        cc2: BTreeMap<PartyIndex, BroadcastDerivationPhase2to4>,
        own_bcast: Vec<u8>,
        echo2: BTreeMap<PartyIdx, [u8; 32]>,
    },
    AfterR4 {
        output: KeygenOutput,
        echo3: BTreeMap<PartyIdx, [u8; 32]>,
    },
    Finished,
}

/// One party's keygen run.
pub struct Keygen<C: Curve> {
    session: Option<DkgSession<C>>,
    me: PartyIdx,
    n: u8,
    peers: Vec<PartyIdx>,
    round: u32,
    state: State<C>,
}

impl<C: Curve> Keygen<C> {
    /// `session_id` is the execution id; `me` is 1-based among `n` parties.
    pub fn new(
        threshold: u8,
        n: u8,
        me: PartyIdx,
        session_id: &[u8],
    ) -> Result<Self, ProtocolError> {
        let params = Parameters::new(threshold, n).map_err(|_| {
            ProtocolError::InvalidArgs(format!("bad parameters {threshold}-of-{n}"))
        })?;
        if me == 0 || me > n {
            return Err(ProtocolError::InvalidArgs(format!(
                "party {me} not in 1..={n}"
            )));
        }
        Ok(Self {
            session: Some(DkgSession::new(
                params,
                party_index(me)?,
                session_id.to_vec(),
            )),
            me,
            n,
            peers: (1..=n).filter(|p| *p != me).collect(),
            round: 0,
            state: State::Init,
        })
    }

    fn session(&mut self) -> Result<&mut DkgSession<C>, ProtocolError> {
        self.session
            .as_mut()
            .ok_or_else(|| ProtocolError::InvalidArgs("keygen session already consumed".into()))
    }

    fn decode_from<T: serde::de::DeserializeOwned>(
        &self,
        from: PartyIdx,
        b: &[u8],
    ) -> Result<T, ProtocolError> {
        decode(b).map_err(|e| ProtocolError::misbehaved(from, self.round, e))
    }

    fn round1(&mut self, inbox: Inbox) -> Result<Vec<Outgoing>, ProtocolError> {
        let State::AfterR1 { own_fragment } = std::mem::replace(&mut self.state, State::Finished)
        else {
            return Err(ProtocolError::InvalidArgs("round 1 out of order".into()));
        };
        let mut fragments = Vec::with_capacity(self.n as usize);
        for p in 1..=self.n {
            if p == self.me {
                fragments.push(*own_fragment);
            } else {
                let raw = inbox
                    .get(&p)
                    .ok_or_else(|| ProtocolError::InvalidArgs("inbox".into()))?;
                let m: R1<C> = self.decode_from(p, raw)?;
                fragments.push(m.fragment);
            }
        }
        let result = self.session()?.phase2(&fragments);
        fragments.zeroize();
        let (proof, zero, cc) = result?;
        let own_bcast = encode(&Bcast2::<C> {
            proof: proof.clone(),
            cc,
        })
        .map_err(ProtocolError::InvalidArgs)?;
        let mut out = Vec::new();
        let mut own_zero = Vec::new();
        for z in zero {
            let to = z.parties.receiver.as_u8();
            if to == self.me {
                own_zero.push(z);
                continue;
            }
            let payload = encode(&R2 {
                bcast: own_bcast.clone(),
                zero: z,
            })
            .map_err(ProtocolError::InvalidArgs)?;
            out.push(Outgoing { to, payload });
        }
        let mut proofs = BTreeMap::new();
        proofs.insert(self.me, proof);
        self.state = State::AfterR2 {
            proofs,
            own_bcast,
            own_zero,
        };
        Ok(out)
    }

    fn round2(&mut self, inbox: Inbox) -> Result<Vec<Outgoing>, ProtocolError> {
        let State::AfterR2 {
            mut proofs,
            own_bcast,
            own_zero,
        } = std::mem::replace(&mut self.state, State::Finished)
        else {
            return Err(ProtocolError::InvalidArgs("round 2 out of order".into()));
        };
        let me_idx = party_index(self.me)?;
        let mut echo2 = BTreeMap::new();
        echo2.insert(self.me, sha256(&own_bcast));
        let mut cc2 = BTreeMap::new();
        let mut zero2 = own_zero;
        // Our own round-2 broadcast is needed again at phase 4.
        let own: Bcast2<C> = decode(&own_bcast).map_err(ProtocolError::InvalidArgs)?;
        cc2.insert(me_idx, own.cc);
        for (&from, raw) in &inbox {
            let m: R2 = self.decode_from(from, raw)?;
            let b: Bcast2<C> = self.decode_from(from, &m.bcast)?;
            if b.proof.index.as_u8() != from || b.cc.sender_index.as_u8() != from {
                return Err(ProtocolError::misbehaved(
                    from,
                    2,
                    "broadcast names another sender",
                ));
            }
            if m.zero.parties.sender.as_u8() != from || m.zero.parties.receiver != me_idx {
                return Err(ProtocolError::misbehaved(
                    from,
                    2,
                    "misaddressed zero-share message",
                ));
            }
            echo2.insert(from, sha256(&m.bcast));
            proofs.insert(from, b.proof);
            cc2.insert(party_index(from)?, b.cc);
            zero2.push(m.zero);
        }
        let (zero3, mul3, cc3) = self.session()?.phase3()?;
        let own_bcast3 = encode(&Bcast3 {
            cc: cc3,
            echo: echo2.clone(),
        })
        .map_err(ProtocolError::InvalidArgs)?;
        let mut zeros: BTreeMap<PartyIdx, TransmitInitZeroSharePhase3to4> = zero3
            .into_iter()
            .map(|z| (z.parties.receiver.as_u8(), z))
            .collect();
        let mut muls: BTreeMap<PartyIdx, TransmitInitMulPhase3to4<C>> = mul3
            .into_iter()
            .map(|m| (m.parties.receiver.as_u8(), m))
            .collect();
        let mut out = Vec::new();
        for &to in &self.peers {
            let (Some(zero), Some(mul)) = (zeros.remove(&to), muls.remove(&to)) else {
                return Err(ProtocolError::InvalidArgs(format!(
                    "engine produced no round-3 message for {to}"
                )));
            };
            let payload = encode(&R3::<C> {
                bcast: own_bcast3.clone(),
                zero,
                mul,
            })
            .map_err(ProtocolError::InvalidArgs)?;
            out.push(Outgoing { to, payload });
        }
        self.state = State::AfterR3 {
            proofs: proofs.into_values().collect(),
            zero2,
            cc2,
            own_bcast: own_bcast3,
            echo2,
        };
        Ok(out)
    }

    fn round3(&mut self, inbox: Inbox) -> Result<Vec<Outgoing>, ProtocolError> {
        let State::AfterR3 {
            proofs,
            zero2,
            cc2,
            own_bcast,
            echo2,
        } = std::mem::replace(&mut self.state, State::Finished)
        else {
            return Err(ProtocolError::InvalidArgs("round 3 out of order".into()));
        };
        let me_idx = party_index(self.me)?;
        let mut echo3 = BTreeMap::new();
        echo3.insert(self.me, sha256(&own_bcast));
        let own: Bcast3 = decode(&own_bcast).map_err(ProtocolError::InvalidArgs)?;
        let mut cc3 = BTreeMap::new();
        cc3.insert(me_idx, own.cc);
        let mut zero3 = Vec::new();
        let mut mul3 = Vec::new();
        let mut echoes = EchoCheck::new(&echo2, self.me, 2);
        for (&from, raw) in &inbox {
            let m: R3<C> = self.decode_from(from, raw)?;
            let b: Bcast3 = self.decode_from(from, &m.bcast)?;
            echoes.add(from, &b.echo)?;
            if b.cc.sender_index.as_u8() != from
                || m.zero.parties.sender.as_u8() != from
                || m.mul.parties.sender.as_u8() != from
                || m.zero.parties.receiver != me_idx
                || m.mul.parties.receiver != me_idx
            {
                return Err(ProtocolError::misbehaved(
                    from,
                    3,
                    "message names another sender or recipient",
                ));
            }
            echo3.insert(from, sha256(&m.bcast));
            cc3.insert(party_index(from)?, b.cc);
            zero3.push(m.zero);
            mul3.push(m.mul);
        }
        echoes.finish()?;
        let session = self
            .session
            .take()
            .ok_or_else(|| ProtocolError::InvalidArgs("keygen session already consumed".into()))?;
        let (party, package) =
            session.phase4(&proofs, &zero2, &zero3, &mul3, &cc2, &cc3, C::address)?;
        let public_key = C::compress(&party.pk)?;
        let chain_code = party.derivation_data.chain_code;
        let package = encode(&package).map_err(ProtocolError::InvalidArgs)?;
        let mut h = Sha256::new();
        h.update(&package);
        h.update(chain_code);
        let package_hash: [u8; 32] = h.finalize().into();
        let payload = encode(&R4 {
            echo: echo3.clone(),
            package_hash,
        })
        .map_err(ProtocolError::InvalidArgs)?;
        let out = self
            .peers
            .iter()
            .map(|&to| Outgoing {
                to,
                payload: payload.clone(),
            })
            .collect();
        self.state = State::AfterR4 {
            output: KeygenOutput {
                share: C::wrap(party),
                public_key,
                chain_code,
                package_hash,
                package,
            },
            echo3,
        };
        Ok(out)
    }

    fn round4(&mut self, inbox: Inbox) -> Result<KeygenOutput, ProtocolError> {
        let State::AfterR4 { output, echo3 } = std::mem::replace(&mut self.state, State::Finished)
        else {
            return Err(ProtocolError::InvalidArgs("round 4 out of order".into()));
        };
        let mut echoes = EchoCheck::new(&echo3, self.me, 3);
        for (&from, raw) in &inbox {
            let m: R4 = self.decode_from(from, raw)?;
            echoes.add(from, &m.echo)?;
            if m.package_hash != output.package_hash {
                return Err(ProtocolError::ConfirmationMismatch { from });
            }
        }
        echoes.finish()?;
        Ok(output)
    }
}

pub(crate) fn sha256(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

impl<C: Curve> Protocol for Keygen<C> {
    type Output = KeygenOutput;

    fn me(&self) -> PartyIdx {
        self.me
    }

    fn peers(&self) -> &[PartyIdx] {
        &self.peers
    }

    fn start(&mut self) -> Result<Vec<Outgoing>, ProtocolError> {
        if !matches!(self.state, State::Init) {
            return Err(ProtocolError::InvalidArgs("keygen already started".into()));
        }
        let fragments = self.session()?.phase1();
        let (out, own_fragment) =
            distribute_fragments(fragments, self.me, |fragment| encode(&R1::<C> { fragment }))?;
        self.state = State::AfterR1 { own_fragment };
        self.round = 1;
        Ok(out)
    }

    fn advance(&mut self, inbox: Inbox) -> Result<Step<KeygenOutput>, ProtocolError> {
        check_inbox(&inbox, &self.peers, self.round)?;
        // `self.round` names the round being processed (for blame) until it succeeds.
        let messages = match self.round {
            1 => self.round1(inbox)?,
            2 => self.round2(inbox)?,
            3 => self.round3(inbox)?,
            4 => return self.round4(inbox).map(Step::Done),
            r => return Err(ProtocolError::InvalidArgs(format!("no keygen round {r}"))),
        };
        self.round = self.round.saturating_add(1);
        Ok(Step::Send {
            messages,
            partial_signature: false,
        })
    }
}

#[cfg(test)]
#[path = "keygen_echo_tests.rs"]
mod echo_tests;
