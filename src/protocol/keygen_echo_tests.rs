//! The echo check must not let a lying echoer frame an honest sender.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use crate::protocol::inproc::run;

type K = k256::Secp256k1;

#[test]
fn a_lying_echoer_cannot_get_an_honest_sender_blamed_alone() {
    let parties = (1..=3)
        .map(|i| Keygen::<K>::new(2, 3, i, &[5u8; 32]).unwrap())
        .collect();
    // Party 3 is honest in every broadcast but lies in its round-4 echo
    // about party 2's round-3 broadcast, to everyone.
    let mut tamper = |round: u32, from: u8, _to: u8, payload: &mut Vec<u8>| {
        if round == 4 && from == 3 {
            let mut m: R4 = decode(payload).unwrap();
            m.echo.insert(2, [0xAB; 32]);
            *payload = encode(&m).unwrap();
        }
    };
    let results = run(parties, Some(&mut tamper));
    // The honest parties abort (the liar does not hear its own lie).
    for (i, r) in results.iter().take(2).enumerate() {
        let e = r.as_ref().expect_err("an honest party finished");
        assert_ne!(
            e.blamed(),
            Some(2),
            "party {} blames honest party 2 alone: {e}",
            i + 1
        );
    }
    // Party 1 cannot tell who lies: both are suspects, and the liar is one.
    let e1 = results[0].as_ref().unwrap_err();
    assert!(
        matches!(
            e1,
            ProtocolError::EchoMismatch {
                sender: 2,
                echoer: 3,
                round: 3
            }
        ),
        "{e1}"
    );
    assert_eq!(e1.suspects(), vec![2, 3]);
    // Party 2 knows its own broadcast: it blames the liar.
    assert_eq!(results[1].as_ref().unwrap_err().blamed(), Some(3));
}
