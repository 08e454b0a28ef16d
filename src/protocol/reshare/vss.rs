//! Feldman VSS for resharing: a dealer's dealings (its Lagrange-weighted
//! share under a fresh polynomial, with commitments) and a new member's
//! checks and assembly of its share. Pure functions; `mod.rs` runs them as a
//! session.

#![allow(
    clippy::arithmetic_side_effects,
    reason = "only scalar and point arithmetic here: field and group operations are modular and cannot \
              overflow or panic; party indices are u8 values converted, never added"
)]

use std::collections::BTreeMap;

use dkls23::protocols::derivation::DerivData;
use dkls23::protocols::Parameters;
use dkls23::utilities::zero_shares::ZeroShare;
use k256::elliptic_curve::ff::{Field, PrimeField};
use k256::elliptic_curve::group::{Curve as _, Group};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::protocol::curve::{Curve, Package, Party};
use crate::protocol::KeyShare;
use crate::protocol::{party_index, PartyIdx, ProtocolError};

/// What one dealer sends one new member: the public commitments and that
/// member's private point.
#[derive(Clone, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Dealing<C: Curve> {
    /// Feldman commitments `a_k · G`, k = 0..t'.
    pub commitments: Vec<C::AffinePoint>,
    /// `g(j)` for the receiving member j.
    pub share: C::Scalar,
}

impl<C: Curve> Drop for Dealing<C> {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.share);
    }
}

impl<C: Curve> std::fmt::Debug for Dealing<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dealing")
            .field("commitments", &self.commitments.len())
            .finish_non_exhaustive()
    }
}

/// The Lagrange coefficient of `i` at zero over the (old) index set `set`.
fn lagrange_at_zero<C: Curve>(set: &[PartyIdx], i: PartyIdx) -> Result<C::Scalar, ProtocolError> {
    let xi = C::Scalar::from(u64::from(i));
    let mut num = C::Scalar::ONE;
    let mut den = C::Scalar::ONE;
    for &j in set.iter().filter(|&&j| j != i) {
        let xj = C::Scalar::from(u64::from(j));
        num *= xj;
        den *= xj - xi;
    }
    let inv: Option<C::Scalar> = den.invert().into();
    Ok(num * inv.ok_or_else(|| ProtocolError::InvalidArgs("duplicate dealer index".into()))?)
}

fn eval_commitments<C: Curve>(commitments: &[C::AffinePoint], j: PartyIdx) -> C::ProjectivePoint {
    let x = C::Scalar::from(u64::from(j));
    let mut acc = C::ProjectivePoint::identity();
    let mut pow = C::Scalar::ONE;
    for c in commitments {
        acc += C::ProjectivePoint::from(*c) * pow;
        pow *= x;
    }
    acc
}

pub(super) fn check_dealers(dealers: &[PartyIdx], old_t: u8) -> Result<(), ProtocolError> {
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
pub fn deal<C: Curve>(
    share: &KeyShare,
    dealers: &[PartyIdx],
    new_t: u8,
    new_n: u8,
) -> Result<BTreeMap<PartyIdx, Dealing<C>>, ProtocolError> {
    let party = C::party(share)?;
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
    let weighted = Zeroizing::new(lagrange_at_zero::<C>(dealers, me)? * party.poly_point);
    deal_secret::<C>(&weighted, new_t, new_n)
}

/// Deals `secret` to members 1..=new_n under a fresh random polynomial of
/// degree new_t - 1 whose constant term is `secret`, with Feldman
/// commitments to its coefficients (a reshare dealer's weighted share, or a
/// whole key being imported).
pub fn deal_secret<C: Curve>(
    secret: &C::Scalar,
    new_t: u8,
    new_n: u8,
) -> Result<BTreeMap<PartyIdx, Dealing<C>>, ProtocolError> {
    Parameters::new(new_t, new_n).map_err(|_| {
        ProtocolError::InvalidArgs(format!("bad new parameters {new_t}-of-{new_n}"))
    })?;
    let mut coeffs: Zeroizing<Vec<C::Scalar>> = Zeroizing::new(Vec::with_capacity(new_t.into()));
    coeffs.push(*secret);
    for _ in 1..new_t {
        coeffs.push(random_scalar::<C>()?);
    }
    let commitments: Vec<C::AffinePoint> = coeffs
        .iter()
        .map(|a| (C::ProjectivePoint::generator() * *a).to_affine())
        .collect();
    let mut out = BTreeMap::new();
    for j in 1..=new_n {
        let x = C::Scalar::from(u64::from(j));
        let mut y = C::Scalar::ZERO;
        for a in coeffs.iter().rev() {
            y = y * x + *a;
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
fn random_scalar<C: Curve>() -> Result<C::Scalar, ProtocolError> {
    loop {
        let mut repr = Zeroizing::new(<C::Scalar as PrimeField>::Repr::default());
        getrandom::fill(repr.as_mut())
            .map_err(|e| ProtocolError::InvalidArgs(format!("rng: {e}")))?;
        let s: Option<C::Scalar> = C::Scalar::from_repr(*repr).into();
        if let Some(s) = s.filter(|s| !bool::from(s.is_zero())) {
            return Ok(s);
        }
    }
}

/// What a new member holds after resharing: a share-only party and the new
/// public key package (same group key, new verifying shares).
#[derive(Debug)]
pub struct Reshared<C: Curve> {
    pub share: KeyShare,
    pub package: Package<C>,
}

/// Checks every dealing for new member `me` and assembles its share.
/// `dealings` is keyed by the dealer's old index; `old_package` is the key's
/// current public key package. A dealer whose dealing fails is named.
#[allow(clippy::too_many_arguments)]
pub fn assemble<C: Curve>(
    dealings: &BTreeMap<PartyIdx, Dealing<C>>,
    old_package: &Package<C>,
    me: PartyIdx,
    new_t: u8,
    new_n: u8,
    chain_code: [u8; 32],
    session_id: &[u8],
) -> Result<Reshared<C>, ProtocolError> {
    let dealers: Vec<PartyIdx> = dealings.keys().copied().collect();
    check_dealers(&dealers, old_package.threshold())?;
    let constant = |i: PartyIdx| -> Result<C::ProjectivePoint, String> {
        let old_share = old_package
            .verifying_share(party_index(i).map_err(|e| e.to_string())?)
            .ok_or("not a member of the old committee")?;
        let lambda = lagrange_at_zero::<C>(&dealers, i).map_err(|e| e.to_string())?;
        Ok(C::ProjectivePoint::from(*old_share) * lambda)
    };
    assemble_with(
        dealings,
        constant,
        *old_package.verifying_key(),
        Member {
            me,
            new_t,
            new_n,
            chain_code,
        },
        session_id,
    )
}

/// A new member's place in the committee it joins.
#[derive(Debug, Clone, Copy)]
pub struct Member {
    /// Its index in the new committee, 1..=new_n.
    pub me: PartyIdx,
    pub new_t: u8,
    pub new_n: u8,
    pub chain_code: [u8; 32],
}

/// Checks every dealing for member `m.me` (its point against the dealer's
/// commitments, and the dealer's constant-term commitment against
/// `constant(dealer)`, which may refuse the dealer with a reason), that the
/// constant terms add up to `pk`, and assembles a share-only party of `pk`.
/// A dealer whose dealing fails is named.
pub fn assemble_with<C: Curve>(
    dealings: &BTreeMap<PartyIdx, Dealing<C>>,
    constant: impl Fn(PartyIdx) -> Result<C::ProjectivePoint, String>,
    pk: C::AffinePoint,
    m: Member,
    session_id: &[u8],
) -> Result<Reshared<C>, ProtocolError> {
    let Member {
        me,
        new_t,
        new_n,
        chain_code,
    } = m;
    let parameters = Parameters::new(new_t, new_n).map_err(|_| {
        ProtocolError::InvalidArgs(format!("bad new parameters {new_t}-of-{new_n}"))
    })?;
    if me == 0 || me > new_n {
        return Err(ProtocolError::InvalidArgs(format!(
            "new index {me} not in 1..={new_n}"
        )));
    }
    if dealings.is_empty() {
        return Err(ProtocolError::InvalidArgs("no dealings".into()));
    }
    let mut constant_sum = C::ProjectivePoint::identity();
    let mut y = Zeroizing::new(C::Scalar::ZERO);
    for (&i, d) in dealings {
        let blame = |reason: &str| ProtocolError::PeerMisbehaved {
            from: i,
            round: 1,
            reason: reason.to_owned(),
        };
        if d.commitments.len() != usize::from(new_t) {
            return Err(blame("wrong number of commitments"));
        }
        if C::ProjectivePoint::generator() * d.share != eval_commitments::<C>(&d.commitments, me) {
            return Err(blame("dealt a share inconsistent with its commitments"));
        }
        let expected = constant(i).map_err(|e| blame(&e))?;
        if C::ProjectivePoint::from(d.commitments[0]) != expected {
            return Err(blame(
                "constant term is not what it must deal (its weighted old share; the public key \
                 for an import)",
            ));
        }
        constant_sum += C::ProjectivePoint::from(d.commitments[0]);
        *y += d.share;
    }
    if constant_sum.to_affine() != pk {
        return Err(ProtocolError::InvalidArgs(
            "dealt constant terms do not add up to the public key".into(),
        ));
    }
    let mut verifying_shares = BTreeMap::new();
    for j in 1..=new_n {
        let point = dealings
            .values()
            .fold(C::ProjectivePoint::identity(), |acc, d| {
                acc + eval_commitments::<C>(&d.commitments, j)
            });
        verifying_shares.insert(party_index(j)?, point.to_affine());
    }
    let package = Package::<C>::new(pk, verifying_shares, parameters.clone());
    let party = Party::<C> {
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
        address: C::address(&pk),
    };
    Ok(Reshared {
        share: C::wrap(party),
        package,
    })
}
