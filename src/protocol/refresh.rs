//! Proactive refresh (dkls23 "complete refresh"): every party re-randomizes
//! its share with a zero-constant polynomial and rebuilds the pairwise
//! multiplication state, so the public key stays the same and every share
//! changes. Same round shape as keygen: 1 private fragments; 2 broadcast
//! proof commitment + private zero-share commitments; 3 echo of round 2 +
//! private zero-share seeds and multiplication setup; 4 confirmation of the
//! new session binding.

use std::collections::BTreeMap;

use dkls23::protocols::dkg::{
    KeepInitMulPhase3to4, KeepInitZeroSharePhase2to3, KeepInitZeroSharePhase3to4, ProofCommitment,
    TransmitInitMulPhase3to4, TransmitInitZeroSharePhase2to4, TransmitInitZeroSharePhase3to4,
};
use dkls23::protocols::PartyIndex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use super::curve::{Curve, Package, Party};
use super::echo::EchoCheck;
use super::keygen::sha256;
use super::KeyShare;
use super::{
    check_inbox, decode, distribute_fragments, encode, party_index, Inbox, Outgoing, PartyIdx,
    Protocol, ProtocolError, Step,
};

/// A party's refreshed share and the confirmation every party agreed on.
#[derive(Debug)]
pub struct RefreshOutput {
    pub share: KeyShare,
    /// The refreshed public key package (bincode), public.
    pub package: Vec<u8>,
    /// SHA-256 over the public key and the refreshed session binding; equal on every party.
    pub confirmation: [u8; 32],
}

#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
struct R1<C: Curve> {
    fragment: C::Scalar,
}

#[derive(Serialize, Deserialize)]
struct R2 {
    /// Broadcast: this party's proof commitment.
    bcast: Vec<u8>,
    zero: TransmitInitZeroSharePhase2to4,
}

#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
struct R3<C: Curve> {
    echo: BTreeMap<PartyIdx, [u8; 32]>,
    zero: TransmitInitZeroSharePhase3to4,
    mul: TransmitInitMulPhase3to4<C>,
}

#[derive(Serialize, Deserialize)]
struct R4 {
    confirmation: [u8; 32],
}

enum State<C: Curve> {
    Init,
    AfterR1 {
        own_fragment: Zeroizing<C::Scalar>,
    },
    AfterR2 {
        correction: Zeroizing<C::Scalar>,
        own_proof: ProofCommitment<C>,
        own_bcast: Vec<u8>,
        zero_keep: BTreeMap<PartyIndex, KeepInitZeroSharePhase2to3>,
    },
    AfterR3 {
        correction: Zeroizing<C::Scalar>,
        proofs: Vec<ProofCommitment<C>>,
        zero2: Vec<TransmitInitZeroSharePhase2to4>,
        echo2: BTreeMap<PartyIdx, [u8; 32]>,
        zero_keep: BTreeMap<PartyIndex, KeepInitZeroSharePhase3to4>,
        mul_keep: BTreeMap<PartyIndex, KeepInitMulPhase3to4<C>>,
    },
    AfterR4(RefreshOutput),
    Finished,
}

/// One party's refresh run over its current share.
pub struct Refresh<C: Curve> {
    share: Box<Party<C>>,
    package: Package<C>,
    sid: Vec<u8>,
    me: PartyIdx,
    n: u8,
    peers: Vec<PartyIdx>,
    round: u32,
    state: State<C>,
}

impl<C: Curve> Refresh<C> {
    /// `share` is this node's current share, `package` the key's current
    /// public key package (bincode), `refresh_sid` the execution id.
    pub fn new(share: KeyShare, package: &[u8], refresh_sid: &[u8]) -> Result<Self, ProtocolError> {
        let share = C::unwrap(share)?;
        let package: Package<C> = decode(package)
            .map_err(|e| ProtocolError::InvalidArgs(format!("public key package: {e}")))?;
        if package.verifying_key() != &share.pk {
            return Err(ProtocolError::InvalidArgs(
                "public key package belongs to another key".into(),
            ));
        }
        let me = share.party_index.as_u8();
        let n = share.parameters.share_count;
        Ok(Self {
            share,
            package,
            sid: refresh_sid.to_vec(),
            me,
            n,
            peers: (1..=n).filter(|p| *p != me).collect(),
            round: 0,
            state: State::Init,
        })
    }

    fn decode_from<T: serde::de::DeserializeOwned>(
        &self,
        from: PartyIdx,
        b: &[u8],
    ) -> Result<T, ProtocolError> {
        decode(b).map_err(|e| ProtocolError::misbehaved(from, self.round, e))
    }

    fn take_state(&mut self) -> State<C> {
        std::mem::replace(&mut self.state, State::Finished)
    }

    fn round1(&mut self, inbox: Inbox) -> Result<Vec<Outgoing>, ProtocolError> {
        let State::AfterR1 { own_fragment } = self.take_state() else {
            return Err(ProtocolError::InvalidArgs(
                "refresh round 1 out of order".into(),
            ));
        };
        let mut fragments = Vec::with_capacity(self.n as usize);
        for p in 1..=self.n {
            if p == self.me {
                fragments.push(*own_fragment);
            } else {
                let raw = inbox
                    .get(&p)
                    .ok_or_else(|| ProtocolError::InvalidArgs("inbox".into()))?;
                fragments.push(self.decode_from::<R1<C>>(p, raw)?.fragment);
            }
        }
        let (correction, own_proof, zero_keep, zero) =
            self.share.refresh_complete_phase2(&self.sid, &fragments);
        fragments.zeroize();
        let own_bcast = encode(&own_proof).map_err(ProtocolError::InvalidArgs)?;
        let mut out = Vec::new();
        for z in zero {
            let to = z.parties.receiver.as_u8();
            let payload = encode(&R2 {
                bcast: own_bcast.clone(),
                zero: z,
            })
            .map_err(ProtocolError::InvalidArgs)?;
            out.push(Outgoing { to, payload });
        }
        self.state = State::AfterR2 {
            correction: Zeroizing::new(correction),
            own_proof,
            own_bcast,
            zero_keep,
        };
        Ok(out)
    }

    fn round2(&mut self, inbox: Inbox) -> Result<Vec<Outgoing>, ProtocolError> {
        let State::AfterR2 {
            correction,
            own_proof,
            own_bcast,
            zero_keep,
        } = self.take_state()
        else {
            return Err(ProtocolError::InvalidArgs(
                "refresh round 2 out of order".into(),
            ));
        };
        let me_idx = party_index(self.me)?;
        let mut echo2 = BTreeMap::new();
        echo2.insert(self.me, sha256(&own_bcast));
        let mut proofs = BTreeMap::new();
        proofs.insert(self.me, own_proof);
        let mut zero2 = Vec::new();
        for (&from, raw) in &inbox {
            let m: R2 = self.decode_from(from, raw)?;
            let proof: ProofCommitment<C> = self.decode_from(from, &m.bcast)?;
            if proof.index.as_u8() != from
                || m.zero.parties.sender.as_u8() != from
                || m.zero.parties.receiver != me_idx
            {
                return Err(ProtocolError::misbehaved(
                    from,
                    2,
                    "message names another sender or recipient",
                ));
            }
            echo2.insert(from, sha256(&m.bcast));
            proofs.insert(from, proof);
            zero2.push(m.zero);
        }
        let (zero_keep3, zero3, mul_keep, mul3) =
            self.share.refresh_complete_phase3(&self.sid, &zero_keep);
        let mut zeros: BTreeMap<PartyIdx, _> = zero3
            .into_iter()
            .map(|z| (z.parties.receiver.as_u8(), z))
            .collect();
        let mut muls: BTreeMap<PartyIdx, _> = mul3
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
                echo: echo2.clone(),
                zero,
                mul,
            })
            .map_err(ProtocolError::InvalidArgs)?;
            out.push(Outgoing { to, payload });
        }
        self.state = State::AfterR3 {
            correction,
            proofs: proofs.into_values().collect(),
            zero2,
            echo2,
            zero_keep: zero_keep3,
            mul_keep,
        };
        Ok(out)
    }

    fn round3(&mut self, inbox: Inbox) -> Result<Vec<Outgoing>, ProtocolError> {
        let State::AfterR3 {
            correction,
            proofs,
            zero2,
            echo2,
            zero_keep,
            mul_keep,
        } = self.take_state()
        else {
            return Err(ProtocolError::InvalidArgs(
                "refresh round 3 out of order".into(),
            ));
        };
        let me_idx = party_index(self.me)?;
        let mut zero3 = Vec::new();
        let mut mul3 = Vec::new();
        let mut echoes = EchoCheck::new(&echo2, self.me, 2);
        for (&from, raw) in &inbox {
            let m: R3<C> = self.decode_from(from, raw)?;
            echoes.add(from, &m.echo)?;
            if m.zero.parties.sender.as_u8() != from
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
            zero3.push(m.zero);
            mul3.push(m.mul);
        }
        echoes.finish()?;
        let party = self.share.refresh_complete_phase4(
            &self.sid,
            &correction,
            &proofs,
            &zero_keep,
            &zero2,
            &zero3,
            &mul_keep,
            &mul3,
        )?;
        let package =
            self.package
                .refresh(&self.sid, &proofs)
                .map_err(|reason| ProtocolError::Engine {
                    blame: None,
                    ban: false,
                    reason: reason.to_string(),
                })?;
        let package = encode(&package).map_err(ProtocolError::InvalidArgs)?;
        let mut h = Sha256::new();
        h.update(C::compress(&party.pk)?);
        h.update(&party.session_id);
        h.update(&package);
        let confirmation: [u8; 32] = h.finalize().into();
        if party.pk != self.share.pk {
            return Err(ProtocolError::InvalidArgs(
                "refresh changed the public key".into(),
            ));
        }
        let payload = encode(&R4 { confirmation }).map_err(ProtocolError::InvalidArgs)?;
        let out = self
            .peers
            .iter()
            .map(|&to| Outgoing {
                to,
                payload: payload.clone(),
            })
            .collect();
        self.state = State::AfterR4(RefreshOutput {
            package,
            share: C::wrap(party),
            confirmation,
        });
        Ok(out)
    }

    fn round4(&mut self, inbox: Inbox) -> Result<RefreshOutput, ProtocolError> {
        let State::AfterR4(output) = self.take_state() else {
            return Err(ProtocolError::InvalidArgs(
                "refresh round 4 out of order".into(),
            ));
        };
        for (&from, raw) in &inbox {
            let m: R4 = self.decode_from(from, raw)?;
            if m.confirmation != output.confirmation {
                return Err(ProtocolError::ConfirmationMismatch { from });
            }
        }
        Ok(output)
    }
}

impl<C: Curve> Protocol for Refresh<C> {
    type Output = RefreshOutput;

    fn me(&self) -> PartyIdx {
        self.me
    }

    fn peers(&self) -> &[PartyIdx] {
        &self.peers
    }

    fn start(&mut self) -> Result<Vec<Outgoing>, ProtocolError> {
        if !matches!(self.state, State::Init) {
            return Err(ProtocolError::InvalidArgs("refresh already started".into()));
        }
        let fragments = self.share.refresh_complete_phase1();
        let (out, own_fragment) =
            distribute_fragments(fragments, self.me, |fragment| encode(&R1::<C> { fragment }))?;
        self.state = State::AfterR1 { own_fragment };
        self.round = 1;
        Ok(out)
    }

    fn advance(&mut self, inbox: Inbox) -> Result<Step<RefreshOutput>, ProtocolError> {
        check_inbox(&inbox, &self.peers, self.round)?;
        let messages = match self.round {
            1 => self.round1(inbox)?,
            2 => self.round2(inbox)?,
            3 => self.round3(inbox)?,
            4 => return self.round4(inbox).map(Step::Done),
            r => return Err(ProtocolError::InvalidArgs(format!("no refresh round {r}"))),
        };
        self.round = self.round.saturating_add(1);
        Ok(Step::Send {
            messages,
            partial_signature: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{DerivationPath, Digest32};
    use crate::protocol::inproc::run;
    use crate::protocol::keygen::Keygen;
    use crate::protocol::sign::{verify, Sign};

    type K = k256::Secp256k1;

    fn clone_share(s: &KeyShare) -> KeyShare {
        KeyShare::decode(s.key_type(), &s.encode().unwrap()).unwrap()
    }

    #[test]
    fn refresh_keeps_the_key_changes_every_share_and_old_shares_do_not_mix() {
        let outs: Vec<_> = run(
            (1..=3)
                .map(|i| Keygen::<K>::new(2, 3, i, &[8; 32]).unwrap())
                .collect(),
            None,
        )
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
        let refreshed: Vec<_> = run(
            outs.iter()
                .map(|o| Refresh::<K>::new(clone_share(&o.share), &o.package, b"rot-1").unwrap())
                .collect(),
            None,
        )
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
        for (old, new) in outs.iter().zip(&refreshed) {
            assert_eq!(
                old.share.public_key().unwrap(),
                new.share.public_key().unwrap()
            );
            assert_ne!(*old.share.encode().unwrap(), *new.share.encode().unwrap());
            assert_eq!(new.confirmation, refreshed[0].confirmation);
        }
        let d = Digest32([6; 32]);
        let p = DerivationPath::default();
        let sign = |a: &KeyShare, b: &KeyShare| {
            run(
                vec![
                    Sign::<K>::new(a, &p, &[1, 2], d, b"s").unwrap(),
                    Sign::<K>::new(b, &p, &[1, 2], d, b"s").unwrap(),
                ],
                None,
            )
        };
        for r in sign(&refreshed[0].share, &refreshed[1].share) {
            verify(&r.unwrap(), &d).unwrap();
        }
        let mixed = sign(&outs[0].share, &refreshed[1].share);
        assert!(
            mixed.iter().all(|r| r.is_err()),
            "an old share must not sign with a new one"
        );
    }
}
