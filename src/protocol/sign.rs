//! Threshold signing (dkls23, exactly t parties). Rounds: 1 and 2 private
//! (multiplication), 3 broadcast of this party's signature share. The round-3
//! messages are the partial signature; `Step::Send` flags them so the caller
//! can make its ledger entry durable first. Every party assembles the
//! signature itself and checks it against the (derived) public key.

use std::collections::BTreeMap;

use dkls23::protocols::signing::{
    Broadcast3to4, KeepPhase1to2, KeepPhase2to3, SignData, TransmitPhase1to2, TransmitPhase2to3,
    UniqueKeep1to2, UniqueKeep2to3,
};
use dkls23::protocols::PartyIndex;

use super::curve::{Curve, Party};
use super::KeyShare;
use super::{
    check_inbox, decode, encode, party_index, Inbox, Outgoing, PartyIdx, Protocol, ProtocolError,
    Step,
};
use crate::domain::{DerivationPath, Digest32, KeyType};

/// A finished ECDSA signature, verified, low-S.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub r: [u8; 32],
    pub s: [u8; 32],
    pub recovery_id: u8,
    /// Compressed public key that signed (the derived key for a path).
    pub public_key: [u8; 33],
    /// The curve it was made on.
    pub key_type: KeyType,
}

enum State<C: Curve> {
    Init,
    AfterR1(UniqueKeep1to2<C>, BTreeMap<PartyIndex, KeepPhase1to2<C>>),
    AfterR2(UniqueKeep2to3<C>, BTreeMap<PartyIndex, KeepPhase2to3<C>>),
    AfterR3 {
        x_coord: String,
        own: Broadcast3to4<C>,
    },
    Finished,
}

/// One party's signing run.
pub struct Sign<C: Curve> {
    share: Box<Party<C>>,
    data: SignData,
    me: PartyIdx,
    peers: Vec<PartyIdx>,
    round: u32,
    state: State<C>,
    digest: Digest32,
    /// Test hook: how this party misbehaves, if at all.
    misbehave: Misbehave,
}

/// Test hooks for a misbehaving co-signer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Misbehave {
    #[default]
    No,
    /// Send the others a wrong round-3 signature share: the final signature
    /// then fails verification and nobody can be blamed.
    CorruptShare,
    /// Tamper with the OT extension data of round 1: each receiver's OT
    /// consistency check fails and names this party, to be banned.
    TamperOt,
}

impl<C: Curve> Sign<C> {
    /// `share` is this node's key share; `signers` are the t party indices
    /// (including this one); `sign_id` is the execution id.
    pub fn new(
        share: &KeyShare,
        path: &DerivationPath,
        signers: &[PartyIdx],
        digest: Digest32,
        sign_id: &[u8],
    ) -> Result<Self, ProtocolError> {
        let base = C::party(share)?;
        let me = base.party_index.as_u8();
        let t = base.parameters.threshold as usize;
        let mut sorted = signers.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != signers.len() || sorted.len() != t {
            return Err(ProtocolError::InvalidArgs(format!(
                "need exactly {t} distinct signers, got {signers:?}"
            )));
        }
        if !sorted.contains(&me) {
            return Err(ProtocolError::InvalidArgs(format!(
                "party {me} is not among the signers"
            )));
        }
        if let Some(bad) = sorted
            .iter()
            .find(|&&p| p == 0 || p > base.parameters.share_count)
        {
            return Err(ProtocolError::InvalidArgs(format!(
                "signer index {bad} outside the committee"
            )));
        }
        let derived = base
            .derive_from_path(&path.to_string(), C::address)
            .map_err(|e| ProtocolError::InvalidArgs(format!("derivation failed: {e:?}")))?;
        let peers: Vec<PartyIdx> = sorted.iter().copied().filter(|&p| p != me).collect();
        let counterparties = peers
            .iter()
            .map(|&p| party_index(p))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            share: Box::new(derived),
            data: SignData {
                sign_id: sign_id.to_vec(),
                counterparties,
                message_hash: digest.0,
            },
            me,
            peers,
            round: 0,
            state: State::Init,
            digest,
            misbehave: Misbehave::No,
        })
    }

    /// Makes this party misbehave (tests of a misbehaving co-signer).
    pub fn misbehaving(mut self, how: Misbehave) -> Self {
        self.misbehave = how;
        self
    }

    fn decode_from<T: serde::de::DeserializeOwned>(
        &self,
        from: PartyIdx,
        b: &[u8],
    ) -> Result<T, ProtocolError> {
        decode(b).map_err(|e| ProtocolError::misbehaved(from, self.round, e))
    }

    fn check_parties(
        &self,
        from: PartyIdx,
        sender: PartyIndex,
        receiver: PartyIndex,
    ) -> Result<(), ProtocolError> {
        if sender.as_u8() != from || receiver.as_u8() != self.me {
            return Err(ProtocolError::misbehaved(
                from,
                self.round,
                "message names another sender or recipient",
            ));
        }
        Ok(())
    }

    fn finish(
        &self,
        x_coord: &str,
        own: Broadcast3to4<C>,
        inbox: &Inbox,
    ) -> Result<Signature, ProtocolError> {
        let mut received = vec![own];
        for (&from, raw) in inbox {
            received.push(self.decode_from::<Broadcast3to4<C>>(from, raw)?);
        }
        let party = &self.share;
        let (s_hex, recovery_id) = party.sign_phase4(&self.data, x_coord, &received, true)?;
        let mut r = [0u8; 32];
        let mut s = [0u8; 32];
        hex::decode_to_slice(x_coord, &mut r).map_err(|_| ProtocolError::InvalidSignature)?;
        hex::decode_to_slice(&s_hex, &mut s).map_err(|_| ProtocolError::InvalidSignature)?;
        let public_key = C::compress(&party.pk)?;
        let sig = Signature {
            r,
            s,
            recovery_id,
            public_key,
            key_type: C::KEY_TYPE,
        };
        verify(&sig, &self.digest)?;
        Ok(sig)
    }
}

impl Signature {
    /// The ASN.1 DER encoding of (r, s).
    pub fn der(&self) -> Result<Vec<u8>, ProtocolError> {
        Ok(match self.key_type {
            KeyType::Secp256k1 => k256::ecdsa::Signature::from_scalars(self.r, self.s)
                .map_err(|_| ProtocolError::InvalidSignature)?
                .to_der()
                .as_bytes()
                .to_vec(),
            KeyType::P256 => p256::ecdsa::Signature::from_scalars(self.r, self.s)
                .map_err(|_| ProtocolError::InvalidSignature)?
                .to_der()
                .as_bytes()
                .to_vec(),
        })
    }
}

/// Independent check with the curve's own ECDSA crate (`k256` or `p256`):
/// the signature verifies under its public key, is low-S, and the recovery
/// id recovers that key.
pub fn verify(sig: &Signature, digest: &Digest32) -> Result<(), ProtocolError> {
    match sig.key_type {
        KeyType::Secp256k1 => k256::Secp256k1::verify(sig, digest),
        KeyType::P256 => p256::NistP256::verify(sig, digest),
    }
}

impl<C: Curve> Protocol for Sign<C> {
    type Output = Signature;

    fn me(&self) -> PartyIdx {
        self.me
    }

    fn peers(&self) -> &[PartyIdx] {
        &self.peers
    }

    fn start(&mut self) -> Result<Vec<Outgoing>, ProtocolError> {
        if !matches!(self.state, State::Init) {
            return Err(ProtocolError::InvalidArgs("signing already started".into()));
        }
        let (unique, kept, mut transmit) = self.share.sign_phase1(&self.data)?;
        if self.misbehave == Misbehave::TamperOt {
            for m in &mut transmit {
                if let Some(row) = m.mul_transmit.u.first_mut() {
                    if let Some(b) = row.first_mut() {
                        *b ^= 1;
                    }
                }
            }
        }
        let out = transmit
            .iter()
            .map(|m| {
                Ok(Outgoing {
                    to: m.parties.receiver.as_u8(),
                    payload: encode(m).map_err(ProtocolError::InvalidArgs)?,
                })
            })
            .collect::<Result<Vec<_>, ProtocolError>>()?;
        self.state = State::AfterR1(unique, kept);
        self.round = 1;
        Ok(out)
    }

    fn advance(&mut self, inbox: Inbox) -> Result<Step<Signature>, ProtocolError> {
        check_inbox(&inbox, &self.peers, self.round)?;
        // `self.round` names the round being processed (for blame) until it succeeds.
        let round = self.round;
        let step = self.step(round, inbox)?;
        self.round = self.round.saturating_add(1);
        Ok(step)
    }
}

impl<C: Curve> Sign<C> {
    fn step(&mut self, round: u32, inbox: Inbox) -> Result<Step<Signature>, ProtocolError> {
        match std::mem::replace(&mut self.state, State::Finished) {
            State::AfterR1(unique, kept) if round == 1 => {
                let mut received = Vec::with_capacity(inbox.len());
                for (&from, raw) in &inbox {
                    let m: TransmitPhase1to2 = self.decode_from(from, raw)?;
                    self.check_parties(from, m.parties.sender, m.parties.receiver)?;
                    received.push(m);
                }
                let (unique, kept, transmit) = self
                    .share
                    .sign_phase2(&self.data, unique, kept, &received)?;
                let messages = transmit
                    .iter()
                    .map(|m| {
                        Ok(Outgoing {
                            to: m.parties.receiver.as_u8(),
                            payload: encode(m).map_err(ProtocolError::InvalidArgs)?,
                        })
                    })
                    .collect::<Result<Vec<_>, ProtocolError>>()?;
                self.state = State::AfterR2(unique, kept);
                Ok(Step::Send {
                    messages,
                    partial_signature: false,
                })
            }
            State::AfterR2(unique, kept) if round == 2 => {
                let mut received = Vec::with_capacity(inbox.len());
                for (&from, raw) in &inbox {
                    let m: TransmitPhase2to3<C> = self.decode_from(from, raw)?;
                    self.check_parties(from, m.parties.sender, m.parties.receiver)?;
                    received.push(m);
                }
                let (x_coord, own) = self
                    .share
                    .sign_phase3(&self.data, unique, kept, &received)?;
                let mut sent = own.clone();
                if self.misbehave == Misbehave::CorruptShare {
                    #[allow(
                        clippy::arithmetic_side_effects,
                        reason = "scalar addition is modular; this is the test hook's bad share"
                    )]
                    {
                        sent.w += <C::Scalar as k256::elliptic_curve::ff::Field>::ONE;
                    }
                }
                let payload = encode(&sent).map_err(ProtocolError::InvalidArgs)?;
                let messages = self
                    .peers
                    .iter()
                    .map(|&to| Outgoing {
                        to,
                        payload: payload.clone(),
                    })
                    .collect();
                self.state = State::AfterR3 { x_coord, own };
                Ok(Step::Send {
                    messages,
                    partial_signature: true,
                })
            }
            State::AfterR3 { x_coord, own } if round == 3 => {
                self.finish(&x_coord, own, &inbox).map(Step::Done)
            }
            _ => Err(ProtocolError::InvalidArgs(format!(
                "signing round {round} out of order"
            ))),
        }
    }
}
