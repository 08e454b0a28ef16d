//! Import tests: a known key dealt, received and refreshed signs under its
//! own public key on both curves; a point or commitment that does not match
//! is refused by the member, naming the dealer; after the refresh a dealt
//! point no longer combines with the shares that sign.

#![allow(
    clippy::arithmetic_side_effects,
    reason = "test arithmetic: field operations and small party indices"
)]

use k256::elliptic_curve::ff::Field;
use k256::elliptic_curve::group::{Curve as _, Group};

use super::*;
use crate::domain::{DerivationPath, Digest32};
use crate::protocol::inproc::run;
use crate::protocol::refresh::Refresh;
use crate::protocol::sign::{verify, Sign};
use crate::protocol::{encode, KeyShare};

fn member(me: u8, t: u8, n: u8) -> Member {
    Member {
        me,
        new_t: t,
        new_n: n,
        chain_code: [4; 32],
    }
}

/// The key's scalar from Lagrange interpolation at zero of the points of
/// `set` (1-based indices), as the dealt and the refreshed shares are read.
fn combine<C: Curve>(points: &[(u8, C::Scalar)]) -> C::Scalar {
    let mut acc = C::Scalar::ZERO;
    for &(i, y) in points {
        let xi = C::Scalar::from(u64::from(i));
        let mut num = C::Scalar::ONE;
        let mut den = C::Scalar::ONE;
        for &(j, _) in points.iter().filter(|(j, _)| *j != i) {
            let xj = C::Scalar::from(u64::from(j));
            num *= xj;
            den *= xj - xi;
        }
        acc += y * num * den.invert().unwrap();
    }
    acc
}

fn poly_point<C: Curve>(s: &KeyShare) -> C::Scalar {
    C::party(s).unwrap().poly_point
}

fn imports_signs_and_the_dealt_points_die<C: Curve>(secret_bytes: [u8; 32]) {
    let secret = secret_scalar::<C>(&secret_bytes).unwrap();
    let pk = (C::ProjectivePoint::generator() * *secret).to_affine();
    let dealing = deal_key::<C>(&secret, 2, 3).unwrap();
    assert_eq!(dealing.public_key(), Some(pk));
    assert_eq!(dealing.commitments.len(), 2);
    assert!(!format!("{dealing:?}").contains("Scalar"), "{dealing:?}");

    let received: Vec<Reshared<C>> = (1..=3)
        .map(|j| {
            receive::<C>(
                &dealing.commitments,
                dealing.point(j).unwrap(),
                pk,
                member(j, 2, 3),
                b"import-sid",
            )
            .unwrap()
        })
        .collect();
    // Any two dealt points give the key back (they are Shamir shares of it).
    let dealt: Vec<(u8, C::Scalar)> = received
        .iter()
        .enumerate()
        .map(|(i, r)| (i as u8 + 1, poly_point::<C>(&r.share)))
        .collect();
    assert!(combine::<C>(&dealt[..2]) == *secret);
    assert!(combine::<C>(&[dealt[0], dealt[2]]) == *secret);

    let pkg = encode(&received[0].package).unwrap();
    let refreshed: Vec<KeyShare> = run(
        received
            .into_iter()
            .map(|r| Refresh::<C>::new(r.share, &pkg, b"import-refresh").unwrap())
            .collect(),
        None,
    )
    .into_iter()
    .map(|r| r.unwrap().share)
    .collect();
    let fresh: Vec<(u8, C::Scalar)> = refreshed
        .iter()
        .enumerate()
        .map(|(i, s)| (i as u8 + 1, poly_point::<C>(s)))
        .collect();
    // The refreshed shares are still shares of the key...
    assert!(combine::<C>(&fresh[1..]) == *secret);
    // ...but a dealt point kept from before the refresh combines with none
    // of them: the dealt shares are dead.
    for (kept, other) in [(0usize, 1usize), (0, 2), (1, 0), (2, 1)] {
        assert!(
            combine::<C>(&[dealt[kept], fresh[other]]) != *secret,
            "dealt point {} still combines with refreshed share {}",
            kept + 1,
            other + 1
        );
    }

    let d = Digest32([0x3c; 32]);
    let signers = [1u8, 3];
    for s in run(
        signers
            .iter()
            .map(|&i| {
                Sign::<C>::new(
                    &refreshed[usize::from(i - 1)],
                    &DerivationPath::default(),
                    &signers,
                    d,
                    b"import-sign",
                )
                .unwrap()
            })
            .collect(),
        None,
    ) {
        let s = s.unwrap();
        verify(&s, &d).unwrap();
        assert_eq!(s.public_key, C::compress(&pk).unwrap());
    }
}

#[test]
fn an_imported_secp256k1_key_signs_under_its_own_public_key_and_the_dealt_points_die() {
    imports_signs_and_the_dealt_points_die::<k256::Secp256k1>([0x11; 32]);
}

#[test]
fn an_imported_p256_key_signs_under_its_own_public_key_and_the_dealt_points_die() {
    imports_signs_and_the_dealt_points_die::<p256::NistP256>([0x22; 32]);
}

type K = k256::Secp256k1;

#[test]
fn a_point_or_commitment_that_does_not_match_is_refused_naming_the_dealer() {
    let secret = secret_scalar::<K>(&[0x33; 32]).unwrap();
    let pk = (<K as k256::elliptic_curve::CurveArithmetic>::ProjectivePoint::generator() * *secret)
        .to_affine();
    let dealing = deal_key::<K>(&secret, 2, 3).unwrap();
    let blamed = |r: Result<Reshared<K>, ProtocolError>, why: &str| match r {
        Err(ProtocolError::PeerMisbehaved { from, reason, .. }) => {
            assert_eq!(from, IMPORT_DEALER);
            assert!(reason.contains(why), "{reason}");
        }
        other => panic!("expected the dealer blamed for {why:?}, got {other:?}"),
    };
    // Member 2 given member 1's point.
    blamed(
        receive::<K>(
            &dealing.commitments,
            dealing.point(1).unwrap(),
            pk,
            member(2, 2, 3),
            b"s",
        ),
        "inconsistent with its commitments",
    );
    // A consistent dealing of another key than the approved one.
    let other = deal_key::<K>(&secret_scalar::<K>(&[0x34; 32]).unwrap(), 2, 3).unwrap();
    blamed(
        receive::<K>(
            &other.commitments,
            other.point(2).unwrap(),
            pk,
            member(2, 2, 3),
            b"s",
        ),
        "constant term",
    );
    // Too few commitments for the threshold.
    blamed(
        receive::<K>(
            &dealing.commitments[..1],
            dealing.point(2).unwrap(),
            pk,
            member(2, 2, 3),
            b"s",
        ),
        "wrong number of commitments",
    );
    // Not a member, or the identity as the key.
    assert!(receive::<K>(
        &dealing.commitments,
        dealing.point(2).unwrap(),
        pk,
        member(4, 2, 3),
        b"s"
    )
    .is_err());
    let identity =
        <K as k256::elliptic_curve::CurveArithmetic>::ProjectivePoint::identity().to_affine();
    assert!(receive::<K>(
        &dealing.commitments,
        dealing.point(2).unwrap(),
        identity,
        member(2, 2, 3),
        b"s"
    )
    .is_err());
}

#[test]
fn a_secret_must_be_a_key_of_the_curve() {
    assert!(secret_scalar::<K>(&[0; 32]).is_err(), "zero");
    assert!(secret_scalar::<K>(&[0xff; 32]).is_err(), "above the order");
    assert!(secret_scalar::<K>(&[1; 31]).is_err(), "short");
    assert!(secret_scalar::<p256::NistP256>(&[0xff; 32]).is_err());
    assert!(secret_scalar::<K>(&[1; 32]).is_ok());
}
