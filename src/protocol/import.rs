//! Importing a key that exists whole elsewhere (issue 21, item 4), as pure
//! functions. The admin's workstation deals the key with Feldman VSS
//! (`deal_key`): a random polynomial of degree t - 1 whose constant term is
//! the key, commitments to its coefficients, one point per committee member.
//! Each member checks its point against the commitments, and the constant
//! term's commitment against the public key the admins approved, before it
//! keeps anything (`receive`), and assembles a share-only ("hollow") party.
//! A complete refresh among the committee (`refresh.rs`) then builds the
//! pairwise signing state and re-randomizes every share, so the dealt points
//! no longer combine with the shares that sign.
//!
//! No I/O: the node moves the dealing (encrypted to each member) and runs
//! the refresh.

use std::collections::BTreeMap;

use k256::elliptic_curve::ff::{Field, PrimeField};
use k256::elliptic_curve::group::{Curve as _, Group};
use zeroize::Zeroizing;

use super::curve::Curve;
use super::reshare::{assemble_with, deal_secret, Dealing, Member, Reshared};
use super::{PartyIdx, ProtocolError};

/// The dealer's index in an import's dealings (there is one dealer).
pub const IMPORT_DEALER: PartyIdx = 1;

/// A whole key dealt to a committee: the public commitments (the first is
/// the public key) and each member's point, by its 1-based committee index.
pub struct KeyDealing<C: Curve> {
    pub commitments: Vec<C::AffinePoint>,
    points: BTreeMap<PartyIdx, Zeroizing<C::Scalar>>,
}

impl<C: Curve> std::fmt::Debug for KeyDealing<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyDealing")
            .field("commitments", &self.commitments.len())
            .field("points", &"<redacted>")
            .finish()
    }
}

impl<C: Curve> KeyDealing<C> {
    /// The public key the dealing is of.
    pub fn public_key(&self) -> Option<C::AffinePoint> {
        self.commitments.first().copied()
    }

    /// Member `j`'s point (to be encrypted to it and dropped).
    pub fn point(&self, j: PartyIdx) -> Option<&C::Scalar> {
        self.points.get(&j).map(|p| &**p)
    }
}

/// The secret scalar of a key given as 32 big-endian bytes: refused if it
/// is zero or not below the curve's order (not a key of this curve).
pub fn secret_scalar<C: Curve>(bytes: &[u8]) -> Result<Zeroizing<C::Scalar>, ProtocolError> {
    let mut repr = <C::Scalar as PrimeField>::Repr::default();
    let want = AsRef::<[u8]>::as_ref(&repr).len();
    if bytes.len() != want {
        return Err(ProtocolError::InvalidArgs(format!(
            "a {} key is {want} bytes, not {}",
            C::KEY_TYPE,
            bytes.len()
        )));
    }
    AsMut::<[u8]>::as_mut(&mut repr).copy_from_slice(bytes);
    let s: Option<C::Scalar> = C::Scalar::from_repr(repr).into();
    zeroize::Zeroize::zeroize(AsMut::<[u8]>::as_mut(&mut repr));
    match s {
        Some(s) if !bool::from(s.is_zero()) => Ok(Zeroizing::new(s)),
        _ => Err(ProtocolError::InvalidArgs(format!(
            "not a {} private key (zero, or not below the curve order)",
            C::KEY_TYPE
        ))),
    }
}

/// Deals the key `secret` to a committee of `n` with threshold `t`.
pub fn deal_key<C: Curve>(
    secret: &C::Scalar,
    t: u8,
    n: u8,
) -> Result<KeyDealing<C>, ProtocolError> {
    let dealt = deal_secret::<C>(secret, t, n)?;
    let commitments = dealt
        .values()
        .next()
        .map(|d| d.commitments.clone())
        .ok_or_else(|| ProtocolError::InvalidArgs("an empty committee".into()))?;
    let points = dealt
        .into_iter()
        .map(|(j, d)| (j, Zeroizing::new(d.share)))
        .collect();
    Ok(KeyDealing {
        commitments,
        points,
    })
}

/// Member `m.me`'s check of its `point` of an import: it lies on the
/// committed polynomial, and the polynomial's constant term is `pk` (the
/// public key the admins approved). Then its share-only party of `pk` and
/// the key's public key package.
pub fn receive<C: Curve>(
    commitments: &[C::AffinePoint],
    point: &C::Scalar,
    pk: C::AffinePoint,
    m: Member,
    session_id: &[u8],
) -> Result<Reshared<C>, ProtocolError> {
    if bool::from(C::ProjectivePoint::from(pk).is_identity()) {
        return Err(ProtocolError::InvalidArgs(
            "the public key is the identity".into(),
        ));
    }
    let dealings = BTreeMap::from([(
        IMPORT_DEALER,
        Dealing::<C> {
            commitments: commitments.to_vec(),
            share: *point,
        },
    )]);
    let expected = C::ProjectivePoint::from(pk);
    assemble_with(
        &dealings,
        |_| Ok(expected),
        expected.to_affine(),
        m,
        session_id,
    )
}

#[cfg(test)]
#[path = "import_tests.rs"]
mod tests;
