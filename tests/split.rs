//! One compromised committee member cannot split a key across epochs
//! (issue 19): a node activates a new epoch only with a signed staging
//! receipt from every member of the committee that holds it, and a release
//! deletes nothing. Node c plays the hostile member: it coordinates (or takes
//! part in) an approved rotation or reshare, then sends whatever activations
//! and releases it likes, with c's real node certificate.
//! The fault points are process-wide, so these cases run one at a time.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::OnceLock;

use common::{check_signature, cluster, serve_hostile_until, Hostile, ADMIN, CLIENT};
use thresig::cluster::LocalCluster;
use thresig::domain::{ExecutionId, KeyId};
use thresig::node::activation::Certificate;
use thresig::node::faults::{self, points};
use thresig::node::request::ClientAuth;
use thresig::node::{Operation, Outcome, Proposal};
use thresig::proto::peer as pb;

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn key() -> KeyId {
    KeyId::parse("k").unwrap()
}

fn epoch_of(c: &LocalCluster, i: usize) -> u64 {
    c.nodes[i].as_ref().unwrap().node.key(&key()).unwrap().epoch
}

fn staged_at(c: &LocalCluster, i: usize) -> Option<u64> {
    let store = c.nodes[i].as_ref().unwrap().node.store();
    store.pending(&key()).unwrap().map(|p| p.0)
}

/// `to`'s answer to an evidence query, asked as node `as_node`: the epoch
/// it staged, the proof it awaits, and its own signed staging receipt.
async fn staged_receipt(
    c: &LocalCluster,
    as_node: usize,
    to: &str,
) -> (u64, [u8; 32], [u8; 32], ClientAuth) {
    let ask = Proposal {
        eid: ExecutionId::from_slice(&[0; 32]).unwrap(),
        nonce: Vec::new(),
        admin: None,
        op: Operation::ShareStatus {
            key_id: key(),
            request_id: None,
            watermarks: false,
            evidence: true,
        },
    };
    match Hostile::as_node(c, as_node).propose(to, ask).await {
        Ok(Outcome::ShareStatus { maintenance, .. }) => {
            let s = maintenance.staged.expect("nothing staged");
            let r = s.receipt.expect("no receipt");
            (s.epoch, s.proof.eid, s.proof.confirmation, *r)
        }
        other => panic!("evidence query to {to}: {other:?}"),
    }
}

fn activation(
    eid: [u8; 32],
    epoch: u64,
    confirmation: [u8; 32],
    cert: Vec<ClientAuth>,
) -> Proposal {
    Proposal {
        eid: ExecutionId::from_slice(&eid).unwrap(),
        nonce: Vec::new(),
        admin: None,
        op: Operation::Activate {
            key_id: key(),
            epoch,
            confirmation,
            certificate: Certificate(cert),
        },
    }
}

/// Signs through node `via` and checks the signature under `pk`; returns
/// the epoch it was made at.
async fn signs(c: &LocalCluster, via: usize, pk: &[u8], fill: u8, without: &str) -> u64 {
    let d = [fill; 32];
    let resp = c
        .client(via, CLIENT)
        .unwrap()
        .sign("k", d, "", "")
        .await
        .unwrap_or_else(|e| panic!("signing through node {via}: {e}"));
    check_signature(&resp, &d, pk);
    assert!(
        !resp.participants.iter().any(|p| p == without),
        "{without} took part: {:?}",
        resp.participants
    );
    resp.epoch
}

/// A keygen whose coordinator died after every member stored its share:
/// the first request through any node fetches the certificate from the
/// committee's receipts and signs; every node is then active.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_keygen_left_generated_everywhere_activates_at_the_first_request() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (_dir, mut c) = cluster(&["a", "b", "c"]).await;
    faults::arm("a", points::COORDINATOR_BEFORE_ACTIVATE);
    let made = c.client(0, ADMIN).unwrap().create_key("k", 2, &[]).await;
    faults::disarm_all();
    assert!(
        made.is_err(),
        "the coordinator was to stop before activating"
    );
    fn state(c: &LocalCluster, i: usize) -> thresig::storage::KeyState {
        c.nodes[i].as_ref().unwrap().node.key(&key()).unwrap().state
    }
    for i in 0..3 {
        assert_eq!(
            state(&c, i),
            thresig::storage::KeyState::Generated,
            "node {i}"
        );
    }
    // keys show says what the key waits for: c's receipt, while c is down.
    c.stop_node(2).await;
    let shown = c.client(1, ADMIN).unwrap().get_key("k").await.unwrap();
    assert!(
        shown
            .state
            .starts_with("generated: waiting for its activation certificate")
            && shown.state.contains("missing c"),
        "{}",
        shown.state
    );
    // With c back, asking is enough: keys show fetches the certificate.
    c.start_node(2).await.unwrap();
    let shown = c.client(1, ADMIN).unwrap().get_key("k").await.unwrap();
    assert_eq!(shown.state, "active");
    assert_eq!(state(&c, 1), thresig::storage::KeyState::Active);
    let state = |i: usize| state(&c, i);
    let pk = c.nodes[0]
        .as_ref()
        .unwrap()
        .node
        .key(&key())
        .unwrap()
        .public_key;
    assert_eq!(signs(&c, 1, &pk, 0x51, "").await, 0);
    assert_eq!(signs(&c, 2, &pk, 0x52, "").await, 0);
    assert_eq!(signs(&c, 0, &pk, 0x53, "").await, 0);
    for i in 0..3 {
        assert_eq!(state(i), thresig::storage::KeyState::Active, "node {i}");
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_member_cannot_split_a_key_across_epochs() {
    let _one = ONE_AT_A_TIME.lock().await;
    activation_to_one_and_release_to_the_other(false).await;
    activation_to_one_and_release_to_the_other(true).await;
    withheld_refresh_message_then_activation().await;
}

/// (1) Hostile c coordinates an approved rotation (or a reshare to {a, b, d})
/// and, after every member staged, sends a the activation (with a true
/// certificate) and b a release. b deletes nothing, catches up from a's
/// certificate, and a and b sign together without c; the next rotation works.
async fn activation_to_one_and_release_to_the_other(reshare: bool) {
    let names: &[&str] = if reshare {
        &["a", "b", "c", "d"]
    } else {
        &["a", "b", "c"]
    };
    let (_dir, mut c) = cluster(names).await;
    let committee = vec!["a".to_owned(), "b".to_owned(), "c".to_owned()];
    let info = c
        .client(0, ADMIN)
        .unwrap()
        .create_key("k", 2, &committee)
        .await
        .unwrap();
    faults::arm("c", points::COORDINATOR_BEFORE_ACTIVATE);
    let mut admin = c.client(2, ADMIN).unwrap();
    let new_members: Vec<&str> = if reshare {
        vec!["a", "b", "d"]
    } else {
        vec!["a", "b", "c"]
    };
    let stopped = if reshare {
        let to: Vec<String> = new_members.iter().map(|s| (*s).to_owned()).collect();
        admin.reshare_key("k", &to, 2).await.map(|_| ())
    } else {
        admin.rotate_key("k").await.map(|_| ())
    };
    faults::disarm_all();
    assert!(
        stopped.is_err(),
        "the coordinator was to stop before activating"
    );
    // Every new member staged epoch 1; the hostile coordinator gathers
    // their receipts (c's own asked as a).
    let mut cert = Vec::new();
    let mut proof = None;
    for m in &new_members {
        let asker = if *m == "c" { 0 } else { 2 };
        let (epoch, eid, confirmation, receipt) = staged_receipt(&c, asker, m).await;
        assert_eq!(epoch, 1, "{m}");
        proof = Some((eid, confirmation));
        cert.push(receipt);
    }
    let (eid, confirmation) = proof.unwrap();
    let x = Hostile::as_node(&c, 2);
    x.propose("a", activation(eid, 1, confirmation, cert))
        .await
        .unwrap();
    x.propose("b", activation(eid, 0, [0; 32], Vec::new()))
        .await
        .unwrap();
    assert_eq!(epoch_of(&c, 0), 1, "a activated");
    assert_eq!(
        (epoch_of(&c, 1), staged_at(&c, 1)),
        (0, Some(1)),
        "the release deleted nothing on b"
    );
    // Without c, a and b sign together (b catches up from a's certificate).
    c.stop_node(2).await;
    assert_eq!(signs(&c, 1, &info.public_key, 0x11, "c").await, 1);
    assert_eq!(signs(&c, 0, &info.public_key, 0x12, "c").await, 1);
    assert_eq!((epoch_of(&c, 0), epoch_of(&c, 1)), (1, 1));
    // The next approved rotation succeeds (c is back for the rotation; after
    // the reshare it is no longer a member).
    c.start_node(2).await.unwrap();
    let r = c.client(0, ADMIN).unwrap().rotate_key("k").await.unwrap();
    assert_eq!((r.old_epoch, r.new_epoch), (1, 2), "{r:?}");
    assert_eq!(signs(&c, 1, &info.public_key, 0x13, "").await, 2);
    c.stop().await;
}

/// The status answer the hostile c serves in case (2): it claims epoch 1
/// activated by the rotation, with a certificate lacking b's receipt.
static CLAIM: OnceLock<pb::ShareStatusResult> = OnceLock::new();

fn claims_epoch_one(req: &pb::ProposeRequest) -> pb::ProposeResponse {
    use pb::propose_response::Result as R;
    let result = match req.op {
        Some(pb::propose_request::Op::ShareStatus(_)) => {
            R::ShareStatus(CLAIM.get().unwrap().clone())
        }
        _ => R::Refusal(pb::Refusal {
            reason: pb::Reason::Unavailable.into(),
            message: "no".into(),
            retry_after_ms: 0,
            blamed: String::new(),
        }),
    };
    pb::ProposeResponse {
        result: Some(result),
    }
}

fn receipt_pb(r: &ClientAuth) -> pb::NodeReceipt {
    pb::NodeReceipt {
        chain: r.chain.clone(),
        signature_scheme: r.scheme.into(),
        signature: r.signature.clone(),
    }
}

/// (2) Hostile c withholds its last refresh message from b, so a stages the
/// rotation and b does not (b is stopped at that very point), then sends a
/// the activation: directly, with a's and c's receipts or c's twice, and
/// through its status answers. a activates nothing; a and b sign together at
/// the old epoch without c, and the next rotation succeeds.
async fn withheld_refresh_message_then_activation() {
    let (_dir, mut c) = cluster(&["a", "b", "c"]).await;
    let info = c
        .client(0, ADMIN)
        .unwrap()
        .create_key("k", 2, &[])
        .await
        .unwrap();
    // b stops at BEFORE_STAGE, and waits there until a and c (the
    // rotation's coordinator, whose own session would be cancelled by b's
    // failure) have staged: as if c had withheld its last message from b.
    faults::arm("b", points::BEFORE_STAGE);
    faults::hold("b", points::BEFORE_STAGE);
    let mut admin = c.client(2, ADMIN).unwrap();
    let rotation = tokio::spawn(async move { admin.rotate_key("k").await });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while (staged_at(&c, 0), staged_at(&c, 2)) != (Some(1), Some(1)) {
        assert!(
            std::time::Instant::now() < deadline,
            "a and c never staged: {:?}",
            (staged_at(&c, 0), staged_at(&c, 2))
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    faults::release_holds();
    let stopped = rotation.await.unwrap();
    faults::disarm_all();
    assert!(stopped.is_err(), "b was to stop before staging");
    assert_eq!(
        (staged_at(&c, 0), staged_at(&c, 1), staged_at(&c, 2)),
        (Some(1), None, Some(1))
    );
    let (_, eid, confirmation, from_a) = staged_receipt(&c, 2, "a").await;
    let (_, _, _, from_c) = staged_receipt(&c, 0, "c").await;
    let x = Hostile::as_node(&c, 2);
    let refused = x
        .propose(
            "a",
            activation(eid, 1, confirmation, vec![from_a.clone(), from_c.clone()]),
        )
        .await;
    assert!(
        matches!(&refused, Err(e) if e.to_string().contains("no staging receipt from b")),
        "{refused:?}"
    );
    let refused = x
        .propose(
            "a",
            activation(
                eid,
                1,
                confirmation,
                vec![from_a.clone(), from_c.clone(), from_c.clone()],
            ),
        )
        .await;
    assert!(
        matches!(&refused, Err(e) if e.to_string().contains("signed twice")),
        "{refused:?}"
    );
    assert_eq!(epoch_of(&c, 0), 0);
    // Through a status answer: c (stopped, its address now served by the
    // hostile) claims epoch 1 active with that certificate.
    CLAIM
        .set(pb::ShareStatusResult {
            has_share: true,
            epoch: 1,
            signing: true,
            rotation: eid.to_vec(),
            rotation_confirmation: confirmation.to_vec(),
            certificate: vec![receipt_pb(&from_a), receipt_pb(&from_c)],
            ..Default::default()
        })
        .unwrap();
    c.stop_node(2).await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let hostile = serve_hostile_until(&c, 2, claims_epoch_one, async {
        let _ = stopped.await;
    })
    .await;
    for (via, fill) in [(0, 0x21), (1, 0x22), (0, 0x23)] {
        assert_eq!(signs(&c, via, &info.public_key, fill, "c").await, 0);
    }
    assert_eq!((epoch_of(&c, 0), epoch_of(&c, 1)), (0, 0), "nobody moved");
    // The hostile goes away (its connections closed), and the real c is back.
    let _ = stop.send(());
    let _ = hostile.await;
    c.start_node(2).await.unwrap();
    let r = c.client(0, ADMIN).unwrap().rotate_key("k").await.unwrap();
    assert_eq!((r.old_epoch, r.new_epoch), (0, 1), "{r:?}");
    for via in 0..3 {
        assert_eq!(
            signs(&c, via, &info.public_key, 0x30 + via as u8, "").await,
            1
        );
    }
    c.stop().await;
}
