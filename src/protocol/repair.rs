//! Share repair (dkls23 repair): t helpers each send the target one masked,
//! Lagrange-weighted term; only their sum is the target's share, which is
//! checked against the target's verifying share in the public key package.
//! The result is a hollow share (no multiplication state) that a complete
//! refresh across the committee turns into a working one. Who the target
//! is, and that it really lost its share, is the caller's business.

use dkls23::protocols::repair::{repair_assemble, RepairTerm};
use dkls23::protocols::PartyIndex;

use super::curve::{Curve, Package, Party};
use super::KeyShare;
use super::{
    check_inbox, decode, encode, party_index, Inbox, Outgoing, PartyIdx, Protocol, ProtocolError,
    Step,
};

fn repair_error(e: dkls23::protocols::repair::RepairError) -> ProtocolError {
    ProtocolError::Engine {
        blame: None,
        ban: false,
        reason: e.to_string(),
    }
}

fn indices(v: &[PartyIdx]) -> Result<Vec<PartyIndex>, ProtocolError> {
    v.iter().map(|&i| party_index(i)).collect()
}

/// A helper's side: one message, to the target.
pub struct RepairHelper<C: Curve> {
    share: Box<Party<C>>,
    helpers: Vec<PartyIdx>,
    target: PartyIdx,
    repair_id: Vec<u8>,
}

impl<C: Curve> RepairHelper<C> {
    pub fn new(
        share: KeyShare,
        helpers: &[PartyIdx],
        target: PartyIdx,
        repair_id: &[u8],
    ) -> Result<Self, ProtocolError> {
        let share = C::unwrap(share)?;
        // Every helper derives its mask over the same, ascending, helper list.
        let mut helpers = helpers.to_vec();
        helpers.sort_unstable();
        Ok(Self {
            share,
            helpers,
            target,
            repair_id: repair_id.to_vec(),
        })
    }
}

impl<C: Curve> Protocol for RepairHelper<C> {
    type Output = ();

    fn me(&self) -> PartyIdx {
        self.share.party_index.as_u8()
    }

    fn peers(&self) -> &[PartyIdx] {
        &[]
    }

    fn start(&mut self) -> Result<Vec<Outgoing>, ProtocolError> {
        let term = self
            .share
            .repair_term(
                &indices(&self.helpers)?,
                party_index(self.target)?,
                &self.repair_id,
            )
            .map_err(repair_error)?;
        let payload = encode(&term).map_err(ProtocolError::InvalidArgs)?;
        Ok(vec![Outgoing {
            to: self.target,
            payload,
        }])
    }

    fn advance(&mut self, inbox: Inbox) -> Result<Step<()>, ProtocolError> {
        check_inbox(&inbox, &[], 1)?;
        Ok(Step::Done(()))
    }
}

/// The target's side: collects one term from each helper and assembles.
pub struct RepairTarget<C: Curve> {
    package: Package<C>,
    me: PartyIdx,
    helpers: Vec<PartyIdx>,
}

impl<C: Curve> RepairTarget<C> {
    /// `package` is the key's public key package (bincode).
    pub fn new(package: &[u8], me: PartyIdx, helpers: &[PartyIdx]) -> Result<Self, ProtocolError> {
        let package = decode(package)
            .map_err(|e| ProtocolError::InvalidArgs(format!("public key package: {e}")))?;
        let mut helpers = helpers.to_vec();
        helpers.sort_unstable();
        Ok(Self {
            package,
            me,
            helpers,
        })
    }
}

impl<C: Curve> Protocol for RepairTarget<C> {
    type Output = KeyShare;

    fn me(&self) -> PartyIdx {
        self.me
    }

    fn peers(&self) -> &[PartyIdx] {
        &self.helpers
    }

    fn start(&mut self) -> Result<Vec<Outgoing>, ProtocolError> {
        Ok(Vec::new())
    }

    fn advance(&mut self, inbox: Inbox) -> Result<Step<KeyShare>, ProtocolError> {
        check_inbox(&inbox, &self.helpers, 1)?;
        let mut terms = Vec::with_capacity(inbox.len());
        for (&from, raw) in &inbox {
            let term: RepairTerm<C> =
                decode(raw).map_err(|e| ProtocolError::misbehaved(from, 1, e))?;
            if term.helper.as_u8() != from || term.target.as_u8() != self.me {
                return Err(ProtocolError::misbehaved(
                    from,
                    1,
                    "repair term names another helper or target",
                ));
            }
            terms.push(term);
        }
        let party = repair_assemble(&self.package, party_index(self.me)?, &terms, C::address)
            .map_err(repair_error)?;
        Ok(Step::Done(C::wrap(party)))
    }
}

#[cfg(test)]
#[allow(
    clippy::arithmetic_side_effects,
    reason = "tests index and count small constants"
)]
mod tests {
    use super::*;
    use crate::domain::{DerivationPath, Digest32};
    use crate::protocol::inproc::run;
    use crate::protocol::keygen::Keygen;
    use crate::protocol::refresh::Refresh;
    use crate::protocol::sign::{verify, Sign};

    fn dup(s: &KeyShare) -> KeyShare {
        KeyShare::decode(s.key_type(), &s.encode().unwrap()).unwrap()
    }

    /// Party 3 of a 2-of-3 key on curve `C` loses its share; parties 1 and 2
    /// rebuild it, a complete refresh follows, and the rebuilt party signs.
    fn lost_share_is_rebuilt_and_signs_after_refresh<C: Curve>() {
        let outs: Vec<_> = run(
            (1..=3)
                .map(|i| Keygen::<C>::new(2, 3, i, &[5; 32]).unwrap())
                .collect(),
            None,
        )
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
        let helpers = [1u8, 2];
        let mut target = RepairTarget::<C>::new(&outs[0].package, 3, &helpers).unwrap();
        let mut inbox = Inbox::new();
        for h in helpers {
            let mut helper =
                RepairHelper::<C>::new(dup(&outs[(h - 1) as usize].share), &helpers, 3, b"r1")
                    .unwrap();
            let out = helper.start().unwrap();
            assert_eq!(out.len(), 1);
            assert_eq!(out[0].to, 3);
            inbox.insert(h, zeroize::Zeroizing::new(out[0].payload.clone()));
        }
        let Step::Done(hollow) = target.advance(inbox).unwrap() else {
            panic!("not done")
        };
        assert_eq!(hollow.key_type(), C::KEY_TYPE);
        assert!(
            C::party(&hollow).unwrap().poly_point == C::party(&outs[2].share).unwrap().poly_point,
            "the rebuilt share differs from the lost one"
        );
        // A complete refresh over (1, 2, repaired 3) gives working shares.
        let shares = [dup(&outs[0].share), dup(&outs[1].share), hollow];
        let refreshed: Vec<_> = run(
            shares
                .into_iter()
                .map(|s| Refresh::<C>::new(s, &outs[0].package, b"after-repair").unwrap())
                .collect(),
            None,
        )
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
        let d = Digest32([4; 32]);
        let p = DerivationPath::default();
        let sigs = run(
            vec![
                Sign::<C>::new(&refreshed[0].share, &p, &[1, 3], d, b"s").unwrap(),
                Sign::<C>::new(&refreshed[2].share, &p, &[1, 3], d, b"s").unwrap(),
            ],
            None,
        );
        for s in sigs {
            let sig = s.unwrap();
            assert_eq!(sig.key_type, C::KEY_TYPE);
            assert_eq!(sig.public_key, outs[0].public_key);
            verify(&sig, &d).unwrap();
        }
    }

    #[test]
    fn a_lost_secp256k1_share_is_rebuilt_and_signs_after_refresh() {
        lost_share_is_rebuilt_and_signs_after_refresh::<k256::Secp256k1>();
    }

    #[test]
    fn a_lost_p256_share_is_rebuilt_and_signs_after_refresh() {
        lost_share_is_rebuilt_and_signs_after_refresh::<p256::NistP256>();
    }
}
