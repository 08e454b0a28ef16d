//! Every decoder of a peer's bytes (proposals of every kind, their answers,
//! protocol envelopes) gives an error on arbitrary or damaged input, never a
//! panic (checklist 6).
#![allow(clippy::unwrap_used, clippy::arithmetic_side_effects, reason = "tests")]

use proptest::prelude::*;
use prost::Message;

use super::wire::{outcome_from_pb, outcome_to_pb, proposal_from_pb, proposal_to_pb};
use crate::domain::{DerivationPath, Digest32, ExecutionId, KeyId, KeyType, NodeName};
use crate::node::admin_request::{AdminOp, AdminRequest, SignedAdmin};
use crate::node::request::{ClientAuth, SignRequest, Slot};
use crate::node::{Operation, Proposal};
use crate::proto::peer as pb;

fn name(n: &str) -> NodeName {
    NodeName::parse(n).unwrap()
}

/// Valid proposals of several kinds, encoded: the seeds damaged below.
fn samples() -> Vec<Vec<u8>> {
    let key = KeyId::parse("k").unwrap();
    let auth = ClientAuth {
        chain: vec![vec![0x30; 40]],
        scheme: 0x0403,
        signature: vec![7; 70],
    };
    let request = SignRequest {
        key_id: key.clone(),
        digest: Digest32([3; 32]),
        path: DerivationPath::parse("m/1").unwrap(),
        slot: Some(Slot {
            scope: "chain".into(),
            height: 5,
            round: 0,
            step: 1,
        }),
        request_id: "r".into(),
        expiry_unix: 1_000,
        payload: None,
    };
    let admin = SignedAdmin {
        request: AdminRequest {
            operation: AdminOp::Reshare,
            key_id: key.clone(),
            key_type: Some(KeyType::Secp256k1),
            committee: vec![name("a"), name("b")],
            threshold: 2,
            target: None,
            exclude: vec![name("c")],
            cluster: "thresig.local/00".into(),
            lifecycle_seq: 0,
            request_id: "adm".into(),
            issued_unix: 1,
            expiry_unix: 2,
            params: vec![7; 3],
        },
        approvals: vec![auth.clone()],
    };
    let ops = vec![
        (
            None,
            Operation::Sign {
                epoch: 1,
                lifecycle_seq: 2,
                request: Box::new(request.clone()),
                auth: Box::new(auth.clone()),
                participants: vec![name("a"), name("b")],
            },
        ),
        (
            Some(admin.clone()),
            Operation::Refresh {
                key_id: key.clone(),
                epoch: 1,
                committee: vec![name("a"), name("b"), name("c")],
            },
        ),
        (
            None,
            Operation::Watermark {
                request: Box::new(request),
                auth: Box::new(auth),
                window: crate::node::WindowStep::Release,
            },
        ),
        (
            Some(admin.clone()),
            Operation::Lifecycle {
                key_id: key.clone(),
                action: AdminOp::Freeze,
            },
        ),
        (
            Some(admin),
            Operation::Admin {
                key_id: key,
                action: AdminOp::Reshare,
                body: vec![5; 40],
            },
        ),
    ];
    ops.into_iter()
        .map(|(admin, op)| {
            proposal_to_pb(Proposal {
                eid: ExecutionId::from_slice(&[9; 32]).unwrap(),
                nonce: vec![1; 64],
                admin: admin.map(Box::new),
                op,
            })
            .encode_to_vec()
        })
        .collect()
}

fn decode_all(bytes: &[u8]) {
    if let Ok(r) = pb::ProposeRequest::decode(bytes) {
        let _ = proposal_from_pb(r);
    }
    if let Ok(r) = pb::ProposeResponse::decode(bytes) {
        let _ = outcome_from_pb(r);
    }
    let _ = pb::Envelope::decode(bytes);
}

#[test]
fn the_samples_decode() {
    for s in samples() {
        let r = pb::ProposeRequest::decode(s.as_slice()).unwrap();
        proposal_from_pb(r).unwrap();
    }
}

/// The generic admin step and its answer cross the wire unchanged, and a
/// body past the bound is refused with the field named.
#[test]
fn an_admin_step_round_trips_and_its_body_is_bounded() {
    let sample = samples().pop().unwrap();
    let r = pb::ProposeRequest::decode(sample.as_slice()).unwrap();
    let p = proposal_from_pb(r).unwrap();
    let again = proposal_from_pb(proposal_to_pb(p.clone())).unwrap();
    assert_eq!(again, p);
    let Operation::Admin { body, action, .. } = &p.op else {
        panic!("{:?}", p.op)
    };
    assert_eq!((body.len(), *action), (40, AdminOp::Reshare));
    assert_eq!(p.admin.as_ref().unwrap().request.params, vec![7; 3]);

    let mut big = p.clone();
    if let Operation::Admin { body, .. } = &mut big.op {
        *body = vec![0; super::wire_admin::MAX_STEP_BODY + 1];
    }
    let e = proposal_from_pb(proposal_to_pb(big)).unwrap_err();
    assert!(e.message().contains("admin_step.body"), "{e:?}");

    let answer = crate::node::Outcome::Admin { body: vec![3; 9] };
    let back = outcome_from_pb(outcome_to_pb(answer)).unwrap();
    assert!(matches!(back, crate::node::Outcome::Admin { ref body } if body == &vec![3; 9]));
    let big = crate::node::Outcome::Admin {
        body: vec![0; super::wire_admin::MAX_STEP_BODY + 1],
    };
    assert!(outcome_from_pb(outcome_to_pb(big)).is_err());
}

proptest! {
    #[test]
    fn arbitrary_peer_bytes_give_an_error_not_a_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..4096)
    ) {
        decode_all(&bytes);
    }

    #[test]
    fn damaged_proposals_give_an_error_not_a_panic(
        which in 0usize..5,
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        keep in any::<usize>(),
    ) {
        let mut b = samples().swap_remove(which);
        for (at, x) in flips {
            let n = b.len();
            b[at % n] ^= x;
        }
        b.truncate(keep % (b.len() + 1));
        decode_all(&b);
    }
}
