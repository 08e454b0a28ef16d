//! Reshare tests: dealing and assembly, whole sessions, and cheating dealers.
use super::*;
use crate::domain::{DerivationPath, Digest32};
use crate::protocol::inproc::run;
use crate::protocol::keygen::Keygen;
use crate::protocol::refresh::Refresh;
use crate::protocol::sign::{verify, Sign};
use crate::protocol::{decode, encode};

type K = k256::Secp256k1;
type PublicKeyPackage = Package<K>;
type Scalar = <K as k256::elliptic_curve::CurveArithmetic>::Scalar;

fn dup(s: &KeyShare) -> KeyShare {
    KeyShare::decode(s.key_type(), &s.encode().unwrap()).unwrap()
}

fn reshare(
    outs: &[crate::protocol::keygen::KeygenOutput],
    dealers: &[u8],
    new_t: u8,
    new_n: u8,
    tamper: Option<(u8, u8)>,
) -> Vec<Result<Reshared<K>, ProtocolError>> {
    let old_pkg: PublicKeyPackage = decode(&outs[0].package).unwrap();
    let cc = outs[0].chain_code;
    let dealt: BTreeMap<u8, BTreeMap<u8, Dealing<K>>> = dealers
        .iter()
        .map(|&i| {
            (
                i,
                deal::<K>(&outs[(i - 1) as usize].share, dealers, new_t, new_n).unwrap(),
            )
        })
        .collect();
    (1..=new_n)
        .map(|j| {
            let mut mine: BTreeMap<u8, Dealing<K>> =
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
            .map(|i| Keygen::<K>::new(t, n, i, &[6; 32]).unwrap())
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
    let new: Vec<Reshared<K>> = reshare(&outs, &[1, 3], 3, 4, None)
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    for r in &new {
        assert_eq!(
            K::party(&r.share).unwrap().pk,
            K::party(&outs[0].share).unwrap().pk
        );
        assert_eq!(
            encode(&r.package).unwrap(),
            encode(&new[0].package).unwrap()
        );
    }
    let pkg = encode(&new[0].package).unwrap();
    let refreshed: Vec<_> = run(
        new.into_iter()
            .map(|r| Refresh::<K>::new(r.share, &pkg, b"after").unwrap())
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
                Sign::<K>::new(&refreshed[(i - 1) as usize].share, &p, &signers, d, b"s").unwrap()
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

/// Runs a whole reshare session: old committee `old` (1-based old
/// indices of `outs`), dealers by old index, the new committee as a list
/// of (old index or None for a newcomer). Session order: new committee,
/// then dealers outside it.
fn session(
    outs: &[crate::protocol::keygen::KeygenOutput],
    dealers: &[u8],
    new: &[Option<u8>],
    new_t: u8,
    tamper: Option<crate::protocol::inproc::Tamper<'_>>,
) -> (Vec<Result<Option<RefreshOutput>, ProtocolError>>, Roles) {
    let mut order: Vec<Option<u8>> = new.to_vec();
    order.extend(
        dealers
            .iter()
            .filter(|d| !new.contains(&Some(**d)))
            .map(|d| Some(*d)),
    );
    let roles = Roles {
        dealers: order
            .iter()
            .enumerate()
            .filter_map(|(s, o)| o.filter(|o| dealers.contains(o)).map(|o| (s as u8 + 1, o)))
            .collect(),
        members: (1..=new.len() as u8).map(|j| (j, j)).collect(),
    };
    let parties = order
        .iter()
        .enumerate()
        .map(|(s, o)| {
            let s = s as u8 + 1;
            let share = o
                .filter(|o| dealers.contains(o))
                .map(|o| dup(&outs[(o - 1) as usize].share));
            ReshareSession::<K>::new(
                s,
                roles.clone(),
                share,
                &outs[0].package,
                new_t,
                outs[0].chain_code,
                b"eid",
            )
            .unwrap()
        })
        .collect();
    (run(parties, tamper), roles)
}

fn sign_with(shares: &[&KeyShare], signers: &[u8], pk: &[u8]) {
    let d = Digest32([4; 32]);
    let p = DerivationPath::default();
    let sigs = run(
        shares
            .iter()
            .map(|s| Sign::<K>::new(s, &p, signers, d, b"s").unwrap())
            .collect(),
        None,
    );
    for s in sigs {
        let s = s.unwrap();
        verify(&s, &d).unwrap();
        assert_eq!(s.public_key.as_slice(), pk);
    }
}

#[test]
fn reshare_session_moves_the_key_to_a_new_committee_and_threshold() {
    let outs = keygen(2, 3);
    // {1,2,3} 2-of-3 -> {2,3,new} 3-of-3 with dealers 1 and 3: dealer 1 leaves.
    let (results, _) = session(&outs, &[1, 3], &[Some(2), Some(3), None], 3, None);
    assert_eq!(results.len(), 4);
    let members: Vec<RefreshOutput> = results[..3]
        .iter()
        .map(|r| {
            r.as_ref()
                .unwrap()
                .as_ref()
                .map(|o| RefreshOutput {
                    share: dup(&o.share),
                    package: o.package.clone(),
                    confirmation: o.confirmation,
                })
                .unwrap()
        })
        .collect();
    assert!(
        matches!(results[3], Ok(None)),
        "the leaving dealer gets no share"
    );
    for m in &members {
        assert_eq!(m.confirmation, members[0].confirmation);
        assert_eq!(K::party(&m.share).unwrap().parameters.threshold, 3);
        assert_eq!(K::party(&m.share).unwrap().parameters.share_count, 3);
    }
    let shares: Vec<&KeyShare> = members.iter().map(|m| &m.share).collect();
    sign_with(&shares, &[1, 2, 3], &outs[0].public_key);
    // Old party 2 is new party 1: its share changed.
    assert_ne!(
        K::party(&members[0].share).unwrap().poly_point,
        K::party(&outs[1].share).unwrap().poly_point
    );
}

#[test]
fn a_dealer_showing_members_different_commitments_is_named_by_the_echo() {
    let outs = keygen(2, 3);
    // Dealer 2 (session index 2) gives member 1 a self-consistent dealing
    // from another polynomial with the same constant term.
    let forged = {
        let d = deal::<K>(&outs[1].share, &[1, 2], 2, 3).unwrap();
        encode(&d[&1]).unwrap()
    };
    let mut tamper = |round: u32, from: u8, to: u8, payload: &mut Vec<u8>| {
        if round == 1 && from == 2 && to == 1 {
            *payload = forged.clone();
        }
    };
    let (results, _) = session(
        &outs,
        &[1, 2],
        &[Some(1), Some(2), Some(3)],
        2,
        Some(&mut tamper),
    );
    let blamed: Vec<_> = results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .map(|e| e.blamed())
        .collect();
    assert!(results.iter().all(|r| r.is_err()), "no member may finish");
    assert!(blamed.contains(&Some(2)), "{blamed:?}");
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
    let mut forged = K::party(&outs[1].share).unwrap().clone();
    forged.poly_point += Scalar::ONE;
    let forged = K::wrap(forged);
    let d1 = deal::<K>(&outs[0].share, &[1, 2], 2, 2).unwrap();
    let d2 = deal::<K>(&forged, &[1, 2], 2, 2).unwrap();
    let mine: BTreeMap<u8, Dealing<K>> = [(1, d1[&1].clone()), (2, d2[&1].clone())].into();
    let err = assemble(&mine, &old_pkg, 1, 2, 2, outs[0].chain_code, b"x").unwrap_err();
    assert_eq!(err.blamed(), Some(2), "{err}");
}
