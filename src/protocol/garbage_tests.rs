//! Checklist 6: a truncated, emptied, garbage, padded or oversized message
//! makes its receiver abort, blaming the sender, in keygen, signing,
//! refresh, reshare and repair. Party 1 damages what it sends to party 2 in
//! one round per run: each round in which it sends to party 2 is damaged at
//! least once, and each kind of damage at least once per protocol (kinds in
//! turn, not every pair); party 2 must fail naming party 1.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::arithmetic_side_effects,
    reason = "tests"
)]

use super::inproc::run;
use super::keygen::{Keygen, KeygenOutput};
use super::refresh::Refresh;
use super::repair::{RepairHelper, RepairTarget};
use super::reshare::{ReshareSession, Roles};
use super::sign::Sign;
use super::{KeyShare, Protocol, ProtocolError, Step, MAX_MESSAGE_BYTES};
use crate::domain::{DerivationPath, Digest32};

type K = k256::Secp256k1;

/// The ways a message is damaged.
const MANGLES: [&str; 5] = ["truncated", "emptied", "garbage", "padded", "oversized"];

fn mangle(how: &str, payload: &mut Vec<u8>) {
    match how {
        "truncated" => payload.truncate(payload.len() / 2),
        "emptied" => payload.clear(),
        "garbage" => {
            for (i, b) in payload.iter_mut().enumerate() {
                *b = (i as u8).wrapping_mul(31) ^ 0xA5;
            }
        }
        "padded" => payload.extend_from_slice(&[0; 8]),
        _ => payload.resize(MAX_MESSAGE_BYTES + 1, 0x5A),
    }
}

fn keygen() -> Vec<KeygenOutput> {
    run(
        (1..=3)
            .map(|i| Keygen::<K>::new(2, 3, i, &[3; 32]).unwrap())
            .collect(),
        None,
    )
    .into_iter()
    .map(|r| r.unwrap())
    .collect()
}

fn dup(s: &KeyShare) -> KeyShare {
    KeyShare::decode(s.key_type(), &s.encode().unwrap()).unwrap()
}

/// Runs `make()` with party 1's messages to party 2 damaged in one round:
/// every round in which party 1 sends to party 2, and every kind of damage,
/// at least once (kinds in turn, so a debug build stays quick); party 2
/// (result index `victim`) must abort blaming party 1. Returns the kinds of
/// damage that hit a message.
fn each_round<P: Protocol>(
    what: &str,
    make: &dyn Fn() -> Vec<P>,
    victim: usize,
) -> std::collections::BTreeSet<&'static str> {
    let mut sending = std::collections::BTreeSet::new();
    let mut record = |r: u32, from: u8, to: u8, _: &mut Vec<u8>| {
        if from == 1 && to == 2 {
            sending.insert(r);
        }
    };
    let clean = run(make(), Some(&mut record));
    assert!(clean.iter().all(Result::is_ok), "{what}: a clean run fails");
    let sending: Vec<u32> = sending.into_iter().collect();
    assert!(
        !sending.is_empty(),
        "{what}: party 1 never sends to party 2"
    );
    let mut damaged = std::collections::BTreeSet::new();
    for k in 0..sending.len().max(MANGLES.len()) {
        let round = sending[k % sending.len()];
        let how = MANGLES[k % MANGLES.len()];
        let mut hit = false;
        let mut tamper = |r: u32, from: u8, to: u8, payload: &mut Vec<u8>| {
            if r == round && from == 1 && to == 2 {
                mangle(how, payload);
                hit = true;
            }
        };
        let results = run(make(), Some(&mut tamper));
        if !hit {
            continue;
        }
        damaged.insert(how);
        match &results[victim] {
            Err(e) => assert_eq!(
                e.blamed(),
                Some(1),
                "{what}, round {round}, {how} message: {e}"
            ),
            Ok(_) => panic!("{what}, round {round}, {how} message: party 2 finished"),
        }
    }
    damaged
}

#[test]
fn a_damaged_message_of_any_round_of_any_protocol_blames_its_sender() {
    let mut every = Vec::new();
    let damaged = each_round(
        "keygen",
        &|| {
            (1..=3)
                .map(|i| Keygen::<K>::new(2, 3, i, &[4; 32]).unwrap())
                .collect()
        },
        1,
    );
    every.push(("keygen", damaged));
    let outs = keygen();
    let damaged = each_round(
        "sign",
        &|| {
            [1u8, 2]
                .iter()
                .map(|&i| {
                    Sign::<K>::new(
                        &outs[usize::from(i - 1)].share,
                        &DerivationPath::default(),
                        &[1, 2],
                        Digest32([5; 32]),
                        b"sid",
                    )
                    .unwrap()
                })
                .collect()
        },
        1,
    );
    every.push(("sign", damaged));
    let damaged = each_round(
        "refresh",
        &|| {
            outs.iter()
                .map(|o| Refresh::<K>::new(dup(&o.share), &o.package, b"rot").unwrap())
                .collect()
        },
        1,
    );
    every.push(("refresh", damaged));
    // Reshare from dealers {1, 2} to a new committee of three (session
    // indices 1..=3; 1 and 2 are also the dealers).
    let roles = Roles {
        dealers: [(1, 1), (2, 2)].into_iter().collect(),
        members: [(1, 1), (2, 2), (3, 3)].into_iter().collect(),
    };
    let damaged = each_round(
        "reshare",
        &|| {
            (1..=3u8)
                .map(|s| {
                    let share = (s <= 2).then(|| dup(&outs[usize::from(s - 1)].share));
                    ReshareSession::<K>::new(
                        s,
                        roles.clone(),
                        share,
                        &outs[0].package,
                        2,
                        outs[0].chain_code,
                        b"eid",
                    )
                    .unwrap()
                })
                .collect()
        },
        1,
    );
    every.push(("reshare", damaged));
    for (what, damaged) in every {
        assert_eq!(
            damaged.len(),
            MANGLES.len(),
            "{what}: only {damaged:?} damaged a message"
        );
    }
}

/// Repair: the target gets one message from each helper; a damaged one
/// makes it abort, blaming that helper.
#[test]
fn a_damaged_repair_message_blames_its_helper() {
    let outs = keygen();
    for how in MANGLES {
        let mut helpers: Vec<RepairHelper<K>> = [1u8, 2]
            .iter()
            .map(|&i| {
                RepairHelper::new(dup(&outs[usize::from(i - 1)].share), &[1, 2], 3, b"r").unwrap()
            })
            .collect();
        let mut inbox = super::Inbox::new();
        for (h, i) in helpers.iter_mut().zip([1u8, 2]) {
            let out = h.start().unwrap();
            let mut m = out
                .into_iter()
                .find(|m| m.to == 3)
                .expect("a message to the target");
            if i == 1 {
                mangle(how, &mut m.payload);
            }
            inbox.insert(i, zeroize::Zeroizing::new(m.payload));
        }
        let mut target = RepairTarget::<K>::new(&outs[0].package, 3, &[1, 2]).unwrap();
        let first = target.start().unwrap();
        assert!(first.is_empty(), "the target sends nothing");
        let e = match target.advance(inbox) {
            Err(e) => e,
            Ok(Step::Done(_)) | Ok(Step::Send { .. }) => panic!("{how}: the target went on"),
        };
        assert_eq!(e.blamed(), Some(1), "{how}: {e}");
        let _: &ProtocolError = &e;
    }
}
