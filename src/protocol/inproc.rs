//! Runs every party of one protocol in this process, routing messages in
//! memory. For tests and benchmarks of the engine boundary; the node never
//! uses it. `tamper` lets a test alter a message in flight.

use std::collections::BTreeMap;

use super::{Inbox, Outgoing, PartyIdx, Protocol, ProtocolError, Step};

/// A message in flight: (round, from, to, payload).
pub type Tamper<'a> = &'a mut dyn FnMut(u32, PartyIdx, PartyIdx, &mut Vec<u8>);

/// Runs all `parties` to completion. Returns each party's result in order.
pub fn run<P: Protocol>(
    parties: Vec<P>,
    tamper: Option<Tamper<'_>>,
) -> Vec<Result<P::Output, ProtocolError>> {
    run_inner(parties, tamper).0
}

/// What one in-process run cost: per party, the time spent in its own
/// `start`/`advance` calls (its compute; parties run one after another on
/// this thread), and the number of message rounds until every party finished.
#[derive(Debug, Clone)]
pub struct RunCost {
    pub per_party: Vec<std::time::Duration>,
    pub rounds: u32,
}

/// Like `run`, and also reports what the run cost.
pub fn run_timed<P: Protocol>(parties: Vec<P>) -> (Vec<Result<P::Output, ProtocolError>>, RunCost) {
    run_inner(parties, None)
}

fn run_inner<P: Protocol>(
    mut parties: Vec<P>,
    tamper: Option<Tamper<'_>>,
) -> (Vec<Result<P::Output, ProtocolError>>, RunCost) {
    let mut tamper = tamper;
    let n = parties.len();
    let mut busy = vec![std::time::Duration::ZERO; n];
    let mut results: Vec<Option<Result<P::Output, ProtocolError>>> = (0..n).map(|_| None).collect();
    let mut outboxes: Vec<(PartyIdx, Vec<Outgoing>)> = Vec::new();
    for (i, p) in parties.iter_mut().enumerate() {
        let t0 = std::time::Instant::now();
        let started = p.start();
        busy[i] = busy[i].saturating_add(t0.elapsed());
        match started {
            Ok(out) => outboxes.push((p.me(), out)),
            Err(e) => results[i] = Some(Err(e)),
        }
    }
    let mut round = 1u32;
    while results.iter().any(Option::is_none) {
        let mut inboxes: BTreeMap<PartyIdx, Inbox> = BTreeMap::new();
        for (from, out) in outboxes.drain(..) {
            for mut m in out {
                if let Some(t) = tamper.as_mut() {
                    t(round, from, m.to, &mut m.payload);
                }
                inboxes
                    .entry(m.to)
                    .or_default()
                    .insert(from, zeroize::Zeroizing::new(m.payload));
            }
        }
        for (i, p) in parties.iter_mut().enumerate() {
            if results[i].is_some() {
                continue;
            }
            let inbox = inboxes.remove(&p.me()).unwrap_or_default();
            let t0 = std::time::Instant::now();
            let advanced = p.advance(inbox);
            busy[i] = busy[i].saturating_add(t0.elapsed());
            match advanced {
                Ok(Step::Send { messages, .. }) => outboxes.push((p.me(), messages)),
                Ok(Step::Done(o)) => results[i] = Some(Ok(o)),
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        round = round.saturating_add(1);
        if round > 16 {
            break;
        }
    }
    let results = results
        .into_iter()
        .map(|r| r.unwrap_or(Err(ProtocolError::InvalidArgs("did not finish".into()))))
        .collect();
    (
        results,
        RunCost {
            per_party: busy,
            rounds: round.saturating_sub(1),
        },
    )
}

#[cfg(test)]
#[allow(
    clippy::arithmetic_side_effects,
    reason = "tests index and count small constants"
)]
mod tests {
    use super::*;
    use crate::domain::{DerivationPath, Digest32};
    use crate::protocol::keygen::{Keygen, KeygenOutput};
    use crate::protocol::sign::{verify, Sign};

    type K = k256::Secp256k1;

    fn keygen(t: u8, n: u8) -> Vec<KeygenOutput> {
        let parties = (1..=n)
            .map(|i| Keygen::<K>::new(t, n, i, &[7u8; 32]).unwrap())
            .collect();
        run(parties, None).into_iter().map(|r| r.unwrap()).collect()
    }

    #[test]
    fn keygen_agrees_and_any_t_sign() {
        let outs = keygen(2, 3);
        assert!(outs
            .iter()
            .all(|o| o.public_key == outs[0].public_key && o.package_hash == outs[0].package_hash));
        let digest = Digest32([9u8; 32]);
        for pair in [[1u8, 2], [1, 3], [2, 3]] {
            let signers: Vec<Sign<K>> = pair
                .iter()
                .map(|&i| {
                    Sign::<K>::new(
                        &outs[(i - 1) as usize].share,
                        &DerivationPath::default(),
                        &pair,
                        digest,
                        b"sid",
                    )
                    .unwrap()
                })
                .collect();
            let sigs: Vec<_> = run(signers, None).into_iter().map(|r| r.unwrap()).collect();
            assert_eq!(sigs[0], sigs[1]);
            assert_eq!(sigs[0].public_key, outs[0].public_key);
            verify(&sigs[0], &digest).unwrap();
        }
    }

    #[test]
    fn equivocating_broadcast_is_caught_and_named() {
        let parties = (1..=3)
            .map(|i| Keygen::<K>::new(2, 3, i, &[1u8; 32]).unwrap())
            .collect();
        // Party 2 sends a different round-2 broadcast to party 3 only.
        let mut tamper = |round: u32, from: u8, to: u8, payload: &mut Vec<u8>| {
            if round == 2 && from == 2 && to == 3 {
                // The broadcast is a length-prefixed byte vector at the start of the
                // message; flip a byte well inside it.
                payload[40] ^= 1;
            }
        };
        let results = run(parties, Some(&mut tamper));
        assert!(
            results.iter().all(|r| r.is_err()),
            "a tampered keygen must not finish anywhere"
        );
        let blamed: Vec<_> = results
            .iter()
            .filter_map(|r| r.as_ref().err().and_then(|e| e.blamed()))
            .collect();
        assert!(
            blamed.contains(&2),
            "nobody named party 2: {results:?}",
            results = results.iter().map(|r| r.as_ref().err()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn garbage_and_truncated_messages_blame_the_sender() {
        for mangle in [0usize, 1, 2] {
            let parties = (1..=3)
                .map(|i| Keygen::<K>::new(2, 3, i, &[2u8; 32]).unwrap())
                .collect();
            let mut tamper = |round: u32, from: u8, _to: u8, payload: &mut Vec<u8>| {
                if round == 1 && from == 1 {
                    match mangle {
                        0 => payload.truncate(payload.len() / 2),
                        1 => *payload = vec![0xFF; 64],
                        _ => payload.extend_from_slice(&[0; 8]),
                    }
                }
            };
            let results = run(parties, Some(&mut tamper));
            let e = results[1].as_ref().expect_err("party 2 must abort");
            assert_eq!(e.blamed(), Some(1), "{e}");
        }
    }

    #[test]
    fn signer_set_is_validated() {
        let outs = keygen(2, 3);
        let d = Digest32([1; 32]);
        let p = DerivationPath::default();
        assert!(Sign::<K>::new(&outs[0].share, &p, &[1, 1], d, b"x").is_err());
        assert!(Sign::<K>::new(&outs[0].share, &p, &[0, 1], d, b"x").is_err());
        assert!(Sign::<K>::new(&outs[0].share, &p, &[1, 4], d, b"x").is_err());
        assert!(Sign::<K>::new(&outs[0].share, &p, &[2, 3], d, b"x").is_err());
        assert!(Sign::<K>::new(&outs[0].share, &p, &[1, 2, 3], d, b"x").is_err());
    }
}

#[cfg(test)]
#[allow(
    clippy::arithmetic_side_effects,
    reason = "tests index and count small constants"
)]
mod hostile {
    //! Checklist 1 and 3 at the engine boundary.
    use super::*;
    use crate::domain::{DerivationPath, Digest32};
    use crate::protocol::keygen::Keygen;
    use crate::protocol::sign::Sign;
    use crate::protocol::{decode, encode, ProtocolError};
    use dkls23::protocols::signing::TransmitPhase1to2;

    type K = k256::Secp256k1;

    fn shares() -> Vec<crate::protocol::keygen::KeygenOutput> {
        let parties = (1..=3)
            .map(|i| Keygen::<K>::new(2, 3, i, &[4u8; 32]).unwrap())
            .collect();
        run(parties, None).into_iter().map(|r| r.unwrap()).collect()
    }

    fn signers(
        outs: &[crate::protocol::keygen::KeygenOutput],
        set: &[u8],
        sid: &[u8],
    ) -> Vec<Sign<K>> {
        set.iter()
            .map(|&i| {
                Sign::<K>::new(
                    &outs[(i - 1) as usize].share,
                    &DerivationPath::default(),
                    set,
                    Digest32([3; 32]),
                    sid,
                )
                .unwrap()
            })
            .collect()
    }

    #[test]
    fn message_claiming_another_sender_blames_the_real_sender() {
        let outs = shares();
        // Party 3 (authenticated as 3) sends a round-1 message that claims to come from party 1.
        let mut tamper = |round: u32, from: u8, _to: u8, payload: &mut Vec<u8>| {
            if round == 1 && from == 3 {
                let mut m: TransmitPhase1to2 = decode(payload).unwrap();
                m.parties.sender = dkls23::protocols::PartyIndex::new(1).unwrap();
                *payload = encode(&m).unwrap();
            }
        };
        let results = run(signers(&outs, &[1, 3], b"s1"), Some(&mut tamper));
        let err = results[0].as_ref().unwrap_err();
        assert!(
            matches!(
                err,
                ProtocolError::PeerMisbehaved {
                    from: 3,
                    round: 1,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn message_replayed_from_another_session_is_rejected_and_blamed() {
        let outs = shares();
        // Record party 2's round-1 message to party 1 in session A.
        let mut recorded = None;
        let mut record = |round: u32, from: u8, to: u8, payload: &mut Vec<u8>| {
            if round == 1 && from == 2 && to == 1 {
                recorded = Some(payload.clone());
            }
        };
        for r in run(signers(&outs, &[1, 2], b"session-A"), Some(&mut record)) {
            r.unwrap();
        }
        let replay = recorded.unwrap();
        // Inject it into session B (same parties, same key, different execution id).
        let mut inject = |round: u32, from: u8, to: u8, payload: &mut Vec<u8>| {
            if round == 1 && from == 2 && to == 1 {
                *payload = replay.clone();
            }
        };
        let results = run(signers(&outs, &[1, 2], b"session-B"), Some(&mut inject));
        let err = results[0].as_ref().unwrap_err();
        assert_eq!(err.blamed(), Some(2), "{err:?}");
        assert!(
            results.iter().all(|r| r.is_err()),
            "no party may finish session B"
        );
    }
}
