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

use std::collections::BTreeMap;

use dkls23::protocols::derivation::DerivData;
use dkls23::protocols::{Parameters, Party};
use dkls23::secp256k1::PublicKeyPackage;
use dkls23::utilities::zero_shares::ZeroShare;
use k256::{AffinePoint, ProjectivePoint, Scalar};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{party_index, PartyIdx, ProtocolError};
use crate::secret::KeyShare;

/// What one dealer sends one new member: the public commitments and that
/// member's private point.
#[derive(Clone, Serialize, Deserialize)]
pub struct Dealing {
    /// Feldman commitments `a_k · G`, k = 0..t'.
    pub commitments: Vec<AffinePoint>,
    /// `g(j)` for the receiving member j.
    pub share: Scalar,
}

impl std::fmt::Debug for Dealing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dealing")
            .field("commitments", &self.commitments.len())
            .finish_non_exhaustive()
    }
}

/// The Lagrange coefficient of `i` at zero over the (old) index set `set`.
fn lagrange_at_zero(set: &[PartyIdx], i: PartyIdx) -> Result<Scalar, ProtocolError> {
    let xi = Scalar::from(u64::from(i));
    let mut num = Scalar::ONE;
    let mut den = Scalar::ONE;
    for &j in set.iter().filter(|&&j| j != i) {
        let xj = Scalar::from(u64::from(j));
        num *= xj;
        den *= xj - xi;
    }
    let inv: Option<Scalar> = den.invert().into();
    Ok(num * inv.ok_or_else(|| ProtocolError::InvalidArgs("duplicate dealer index".into()))?)
}

fn eval_commitments(commitments: &[AffinePoint], j: PartyIdx) -> ProjectivePoint {
    let x = Scalar::from(u64::from(j));
    let mut acc = ProjectivePoint::IDENTITY;
    let mut pow = Scalar::ONE;
    for c in commitments {
        acc += ProjectivePoint::from(*c) * pow;
        pow *= x;
    }
    acc
}

fn check_dealers(dealers: &[PartyIdx], old_t: u8) -> Result<(), ProtocolError> {
    let mut sorted = dealers.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.len() != dealers.len() || dealers.len() != usize::from(old_t) || dealers.contains(&0)
    {
        return Err(ProtocolError::InvalidArgs(format!(
            "need exactly {old_t} distinct dealers, got {dealers:?}"
        )));
    }
    Ok(())
}

/// A dealer's dealings for every new member 1..=new_n (by new index).
pub fn deal(
    share: &KeyShare,
    dealers: &[PartyIdx],
    new_t: u8,
    new_n: u8,
) -> Result<BTreeMap<PartyIdx, Dealing>, ProtocolError> {
    let party = share.expose();
    check_dealers(dealers, party.parameters.threshold)?;
    Parameters::new(new_t, new_n).map_err(|_| {
        ProtocolError::InvalidArgs(format!("bad new parameters {new_t}-of-{new_n}"))
    })?;
    let me = party.party_index.as_u8();
    if !dealers.contains(&me) {
        return Err(ProtocolError::InvalidArgs(format!(
            "party {me} is not a dealer"
        )));
    }
    let mut coeffs: Zeroizing<Vec<Scalar>> = Zeroizing::new(Vec::with_capacity(new_t.into()));
    coeffs.push(lagrange_at_zero(dealers, me)? * party.poly_point);
    for _ in 1..new_t {
        coeffs.push(random_scalar()?);
    }
    let commitments: Vec<AffinePoint> = coeffs
        .iter()
        .map(|a| (ProjectivePoint::GENERATOR * a).to_affine())
        .collect();
    let mut out = BTreeMap::new();
    for j in 1..=new_n {
        let x = Scalar::from(u64::from(j));
        let mut y = Scalar::ZERO;
        for a in coeffs.iter().rev() {
            y = y * x + a;
        }
        out.insert(
            j,
            Dealing {
                commitments: commitments.clone(),
                share: y,
            },
        );
    }
    Ok(out)
}

/// A uniformly random non-zero scalar from the OS generator (rejection sampling).
fn random_scalar() -> Result<Scalar, ProtocolError> {
    use k256::elliptic_curve::ff::PrimeField;
    loop {
        let mut b = Zeroizing::new([0u8; 32]);
        getrandom::fill(b.as_mut()).map_err(|e| ProtocolError::InvalidArgs(format!("rng: {e}")))?;
        let s: Option<Scalar> = Scalar::from_repr((*b).into()).into();
        if let Some(s) = s.filter(|s| !bool::from(s.is_zero())) {
            return Ok(s);
        }
    }
}

/// What a new member holds after resharing: a share-only party and the new
/// public key package (same group key, new verifying shares).
#[derive(Debug)]
pub struct Reshared {
    pub share: KeyShare,
    pub package: PublicKeyPackage,
}

/// Checks every dealing for new member `me` and assembles its share.
/// `dealings` is keyed by the dealer's old index; `old_package` is the key's
/// current public key package. A dealer whose dealing fails is named.
#[allow(clippy::too_many_arguments)]
pub fn assemble(
    dealings: &BTreeMap<PartyIdx, Dealing>,
    old_package: &PublicKeyPackage,
    me: PartyIdx,
    new_t: u8,
    new_n: u8,
    chain_code: [u8; 32],
    session_id: &[u8],
) -> Result<Reshared, ProtocolError> {
    let dealers: Vec<PartyIdx> = dealings.keys().copied().collect();
    check_dealers(&dealers, old_package.threshold())?;
    let parameters = Parameters::new(new_t, new_n).map_err(|_| {
        ProtocolError::InvalidArgs(format!("bad new parameters {new_t}-of-{new_n}"))
    })?;
    if me == 0 || me > new_n {
        return Err(ProtocolError::InvalidArgs(format!(
            "new index {me} not in 1..={new_n}"
        )));
    }
    let pk = *old_package.verifying_key();
    let mut constant_sum = ProjectivePoint::IDENTITY;
    let mut y = Zeroizing::new(Scalar::ZERO);
    for (&i, d) in dealings {
        let blame = |reason: &str| ProtocolError::PeerMisbehaved {
            from: i,
            round: 1,
            reason: reason.to_owned(),
        };
        if d.commitments.len() != usize::from(new_t) {
            return Err(blame("wrong number of commitments"));
        }
        if ProjectivePoint::GENERATOR * d.share != eval_commitments(&d.commitments, me) {
            return Err(blame("dealt a share inconsistent with its commitments"));
        }
        let old_share = old_package
            .verifying_share(party_index(i)?)
            .ok_or_else(|| blame("not a member of the old committee"))?;
        let expected = ProjectivePoint::from(*old_share) * lagrange_at_zero(&dealers, i)?;
        if ProjectivePoint::from(d.commitments[0]) != expected {
            return Err(blame("constant term is not its weighted old share"));
        }
        constant_sum += ProjectivePoint::from(d.commitments[0]);
        *y += d.share;
    }
    if constant_sum.to_affine() != pk {
        return Err(ProtocolError::InvalidArgs(
            "dealt constant terms do not add up to the public key".into(),
        ));
    }
    let mut verifying_shares = BTreeMap::new();
    for j in 1..=new_n {
        let point = dealings.values().fold(ProjectivePoint::IDENTITY, |acc, d| {
            acc + eval_commitments(&d.commitments, j)
        });
        verifying_shares.insert(party_index(j)?, point.to_affine());
    }
    let package = PublicKeyPackage::new(pk, verifying_shares, parameters.clone());
    let party = Party {
        parameters,
        party_index: party_index(me)?,
        session_id: session_id.to_vec(),
        poly_point: *y,
        pk,
        zero_share: ZeroShare::initialize(Vec::new()),
        mul_senders: BTreeMap::new(),
        mul_receivers: BTreeMap::new(),
        derivation_data: DerivData {
            depth: 0,
            child_number: 0,
            parent_fingerprint: [0; 4],
            poly_point: *y,
            pk,
            chain_code,
        },
        address: dkls23::secp256k1::compute_eth_address(&pk),
    };
    Ok(Reshared {
        share: KeyShare::new(party),
        package,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{DerivationPath, Digest32};
    use crate::protocol::inproc::run;
    use crate::protocol::keygen::Keygen;
    use crate::protocol::refresh::Refresh;
    use crate::protocol::sign::{verify, Sign};
    use crate::protocol::{decode, encode};

    fn reshare(
        outs: &[crate::protocol::keygen::KeygenOutput],
        dealers: &[u8],
        new_t: u8,
        new_n: u8,
        tamper: Option<(u8, u8)>,
    ) -> Vec<Result<Reshared, ProtocolError>> {
        let old_pkg: PublicKeyPackage = decode(&outs[0].package).unwrap();
        let cc = outs[0].chain_code;
        let dealt: BTreeMap<u8, BTreeMap<u8, Dealing>> = dealers
            .iter()
            .map(|&i| {
                (
                    i,
                    deal(&outs[(i - 1) as usize].share, dealers, new_t, new_n).unwrap(),
                )
            })
            .collect();
        (1..=new_n)
            .map(|j| {
                let mut mine: BTreeMap<u8, Dealing> =
                    dealt.iter().map(|(&i, d)| (i, d[&j].clone())).collect();
                if let Some((bad_dealer, victim)) = tamper {
                    if victim == j {
                        mine.get_mut(&bad_dealer).unwrap().share += Scalar::ONE;
                    }
                }
                assemble(&mine, &old_pkg, j, new_t, new_n, cc, b"reshare-sid")
            })
            .collect()
    }

    fn keygen(t: u8, n: u8) -> Vec<crate::protocol::keygen::KeygenOutput> {
        run(
            (1..=n)
                .map(|i| Keygen::new(t, n, i, &[6; 32]).unwrap())
                .collect(),
            None,
        )
        .into_iter()
        .map(|r| r.unwrap())
        .collect()
    }

    #[test]
    fn reshare_two_of_three_to_three_of_four_keeps_the_key_and_signs_after_refresh() {
        let outs = keygen(2, 3);
        let new: Vec<Reshared> = reshare(&outs, &[1, 3], 3, 4, None)
            .into_iter()
            .map(|r| r.unwrap())
            .collect();
        for r in &new {
            assert_eq!(r.share.expose().pk, outs[0].share.expose().pk);
            assert_eq!(
                encode(&r.package).unwrap(),
                encode(&new[0].package).unwrap()
            );
        }
        let pkg = encode(&new[0].package).unwrap();
        let refreshed: Vec<_> = run(
            new.into_iter()
                .map(|r| Refresh::new(r.share, &pkg, b"after").unwrap())
                .collect(),
            None,
        )
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
        let d = Digest32([2; 32]);
        let p = DerivationPath::default();
        let signers = [1u8, 2, 4];
        let sigs = run(
            signers
                .iter()
                .map(|&i| {
                    Sign::new(&refreshed[(i - 1) as usize].share, &p, &signers, d, b"s").unwrap()
                })
                .collect(),
            None,
        );
        for s in sigs {
            let s = s.unwrap();
            verify(&s, &d).unwrap();
            assert_eq!(s.public_key, outs[0].public_key);
        }
    }

    #[test]
    fn a_dealer_inconsistent_with_its_commitments_is_named() {
        let outs = keygen(2, 3);
        let results = reshare(&outs, &[2, 3], 2, 3, Some((3, 1)));
        let err = results[0].as_ref().unwrap_err();
        assert_eq!(err.blamed(), Some(3), "{err}");
        assert!(
            err.to_string()
                .contains("inconsistent with its commitments"),
            "{err}"
        );
        assert!(results[1].is_ok() && results[2].is_ok());
    }

    #[test]
    fn a_dealer_that_deals_something_other_than_its_share_is_named() {
        let outs = keygen(2, 3);
        // Dealer 2 deals a fresh, self-consistent polynomial that is not its share.
        let old_pkg: PublicKeyPackage = decode(&outs[0].package).unwrap();
        let mut forged = outs[1].share.expose().clone();
        forged.poly_point += Scalar::ONE;
        let forged = KeyShare::new(forged);
        let d1 = deal(&outs[0].share, &[1, 2], 2, 2).unwrap();
        let d2 = deal(&forged, &[1, 2], 2, 2).unwrap();
        let mine: BTreeMap<u8, Dealing> = [(1, d1[&1].clone()), (2, d2[&1].clone())].into();
        let err = assemble(&mine, &old_pkg, 1, 2, 2, outs[0].chain_code, b"x").unwrap_err();
        assert_eq!(err.blamed(), Some(2), "{err}");
    }
}
