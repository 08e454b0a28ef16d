//! Share rotation (issue 3): same public key, new epoch, every share
//! re-randomized, old shares gone; signing pauses instead of hanging.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{
    approved_by, bound_nonce, check_signature, client_request, cluster, sign_proposal, Hostile,
    ADMIN, CLIENT,
};
use thresig::client::AdminOp;
use thresig::cluster::LocalCluster;
use thresig::domain::{DerivationPath, KeyId, NodeName};
use thresig::node::NodeError;
use thresig::node::{Operation, Outcome, Proposal};
use thresig::storage::StorageError;

fn share_bytes(
    c: &LocalCluster,
    i: usize,
    key: &KeyId,
    epoch: u64,
) -> Result<Vec<u8>, StorageError> {
    use k256::elliptic_curve::ff::PrimeField;
    let s = c.nodes[i]
        .as_ref()
        .unwrap()
        .node
        .store()
        .share(key, epoch)?;
    let party: thresig::protocol::curve::Party<k256::Secp256k1> =
        thresig::codec::decode(s.expose()).unwrap();
    Ok(party.poly_point.to_repr().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotation_keeps_the_key_replaces_every_share_and_repeats() {
    let (_dir, c) = cluster(&["a", "b", "c"]).await;
    let info = c
        .client(0, ADMIN)
        .unwrap()
        .create_key("rot", 2, &[])
        .await
        .unwrap();
    let id = KeyId::parse("rot").unwrap();
    let before: Vec<_> = (0..3)
        .map(|i| share_bytes(&c, i, &id, 0).unwrap())
        .collect();

    let r = c.client(1, ADMIN).unwrap().rotate_key("rot").await.unwrap();
    assert_eq!((r.old_epoch, r.new_epoch), (0, 1));
    assert!(r.public_key_unchanged);
    assert_eq!(r.key.as_ref().unwrap().public_key, info.public_key);
    for (i, old) in before.iter().enumerate() {
        let after = share_bytes(&c, i, &id, 1).unwrap();
        assert_ne!(&after, old, "node {i}'s share did not change");
        assert!(
            matches!(share_bytes(&c, i, &id, 0), Err(StorageError::NotFound(_))),
            "old share still stored on node {i}"
        );
        assert_eq!(c.nodes[i].as_ref().unwrap().node.key(&id).unwrap().epoch, 1);
    }
    for coord in 0..3 {
        let d = [coord as u8 + 0x20; 32];
        check_signature(
            &c.client(coord, CLIENT)
                .unwrap()
                .sign("rot", d, "", "")
                .await
                .unwrap(),
            &d,
            &info.public_key,
        );
    }

    // A signing proposal at the old epoch is refused by every participant.
    let nb = NodeName::parse("b").unwrap();
    let stale = sign_proposal(
        &c,
        &client_request("rot", [1; 32], "", "old", None),
        0,
        &["a", "b"],
        vec![3u8; 32],
    );
    let err = c.nodes[0]
        .as_ref()
        .unwrap()
        .node
        .on_propose(&nb, stale)
        .await
        .unwrap_err();
    assert!(
        matches!(err.cause(), NodeError::EpochMismatch(m) if m.contains("epoch")),
        "{err}"
    );

    // Four more rotations (five in all); it still signs, at epoch 5.
    for expected in 2..=5u64 {
        let r = c
            .client(expected as usize % 3, ADMIN)
            .unwrap()
            .rotate_key("rot")
            .await
            .unwrap();
        assert_eq!(r.new_epoch, expected);
        assert!(r.public_key_unchanged);
    }
    let d = [0x99; 32];
    let resp = c
        .client(2, CLIENT)
        .unwrap()
        .sign("rot", d, "m/1/2", "")
        .await
        .unwrap();
    let cc: [u8; 32] = info.chain_code.as_slice().try_into().unwrap();
    let (child, _) = thresig::bip32::derive_public(
        thresig::domain::KeyType::Secp256k1,
        &info.public_key,
        &cc,
        &DerivationPath::parse("m/1/2").unwrap(),
    )
    .unwrap();
    check_signature(&resp, &d, &child);
    assert_eq!(resp.epoch, 5);
    c.stop().await;
}

/// Signing never pauses for a rotation: every request sent through any node
/// while the rotation runs succeeds, first at the old epoch and, once the
/// rotation is active, at the new one (a session that races the activation
/// is tried again at the new epoch inside the request).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn signing_during_a_rotation_always_succeeds() {
    let (_dir, c) = cluster(&["a", "b", "c"]).await;
    let info = c
        .client(0, ADMIN)
        .unwrap()
        .create_key("busy", 2, &[])
        .await
        .unwrap();
    let mut admin = c.client(0, ADMIN).unwrap();
    let rotation = tokio::spawn(async move { admin.rotate_key("busy").await });
    let mut epochs = Vec::new();
    let started = std::time::Instant::now();
    while !rotation.is_finished() && started.elapsed() < std::time::Duration::from_secs(60) {
        for coord in 0..3 {
            let d = [coord as u8 + 1; 32];
            let resp = c
                .client(coord, CLIENT)
                .unwrap()
                .sign("busy", d, "", "")
                .await
                .unwrap_or_else(|e| panic!("signing through node {coord} during rotation: {e}"));
            check_signature(&resp, &d, &info.public_key);
            epochs.push(resp.epoch);
        }
    }
    let r = rotation.await.unwrap().unwrap();
    assert_eq!(r.new_epoch, 1);
    assert!(
        epochs.windows(2).all(|w| w[0] <= w[1]),
        "epochs went back: {epochs:?}"
    );
    eprintln!(
        "signed {} times during the rotation: epochs {epochs:?}",
        epochs.len()
    );
    for coord in 0..3 {
        let d = [0x55 + coord as u8; 32];
        let resp = c
            .client(coord, CLIENT)
            .unwrap()
            .sign("busy", d, "", "")
            .await
            .unwrap();
        check_signature(&resp, &d, &info.public_key);
        assert_eq!(resp.epoch, 1);
    }
    c.stop().await;
}

/// A rotation whose coordinator went away after every node staged its share
/// and before any activation (killed, or its call cancelled): the next
/// rotation, sent to another node, activates it with its own proof first (no
/// wait for a timeout), then rotates once more. Signing never stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rotation_left_staged_everywhere_is_finished_by_the_next_one() {
    let (_dir, c) = cluster(&["a", "b", "c"]).await;
    let info = c
        .client(0, ADMIN)
        .unwrap()
        .create_key("left", 2, &[])
        .await
        .unwrap();
    let id = KeyId::parse("left").unwrap();
    // The test plays coordinator a: an approved refresh runs on all three
    // nodes (a's own participant in-process, b and c over a's certificate),
    // every node stages, and no activation is ever sent.
    let a = c.nodes[0].as_ref().unwrap().node.clone();
    let rec = a.key(&id).unwrap();
    let committee: Vec<NodeName> = ["a", "b", "c"]
        .iter()
        .map(|n| NodeName::parse(n).unwrap())
        .collect();
    let signed = approved_by(&c, common::admin_request(AdminOp::Rotate, "left"), &[ADMIN]);
    let nonce = bound_nonce(&signed, 7);
    let eid = thresig::node::ops::rotate::eid(&rec, &committee, &nonce);
    let refresh = Proposal {
        eid,
        nonce,
        admin: Some(Box::new(signed)),
        op: Operation::Refresh {
            key_id: id.clone(),
            epoch: 0,
            committee,
        },
    };
    let x = Hostile::as_node(&c, 0);
    let (ra, rb, rc) = tokio::join!(
        a.on_propose(a.name(), refresh.clone()),
        x.propose("b", refresh.clone()),
        x.propose("c", refresh),
    );
    let mut receipts = Vec::new();
    let mut confirmation = [0; 32];
    for (n, r) in [("a", ra), ("b", rb), ("c", rc)] {
        match r {
            Ok(Outcome::Refresh {
                confirmation: c,
                receipt,
            }) => {
                confirmation = c;
                receipts.push((n, *receipt));
            }
            other => panic!("{n}: {other:?}"),
        }
    }
    for i in 0..3 {
        let node = &c.nodes[i].as_ref().unwrap().node;
        assert_eq!(node.key(&id).unwrap().epoch, 0, "node {i}");
        assert_eq!(node.store().pending(&id).unwrap().map(|p| p.0), Some(1));
    }
    // Signing goes on at epoch 0 meanwhile.
    let d = [0x61; 32];
    let resp = c
        .client(2, CLIENT)
        .unwrap()
        .sign("left", d, "", "")
        .await
        .unwrap();
    check_signature(&resp, &d, &info.public_key);
    assert_eq!(resp.epoch, 0);
    // A release (an activation without a certificate) deletes nothing: the
    // share stays staged on b, and an activation that lacks b's own receipt
    // (a's and c's only, as a member that withheld b's last message could
    // send) activates nothing there.
    let activate = |certificate: Vec<thresig::node::request::ClientAuth>| Proposal {
        eid,
        nonce: Vec::new(),
        admin: None,
        op: Operation::Activate {
            key_id: id.clone(),
            epoch: 1,
            confirmation,
            certificate: thresig::node::activation::Certificate(certificate),
        },
    };
    let release = Proposal {
        op: Operation::Activate {
            key_id: id.clone(),
            epoch: 0,
            confirmation: [0; 32],
            certificate: Default::default(),
        },
        ..activate(Vec::new())
    };
    x.propose("b", release).await.unwrap();
    assert_eq!(b_store(&c).pending(&id).unwrap().map(|p| p.0), Some(1));
    let without_b: Vec<_> = receipts
        .iter()
        .filter(|(n, _)| *n != "b")
        .map(|(_, r)| r.clone())
        .collect();
    let refused = x.propose("b", activate(without_b)).await;
    assert!(
        matches!(&refused, Err(e) if e.to_string().contains("no staging receipt from b")),
        "{refused:?}"
    );
    let a_twice: Vec<_> = [&receipts[0].1, &receipts[0].1, &receipts[2].1]
        .into_iter()
        .cloned()
        .collect();
    let refused = x.propose("b", activate(a_twice)).await;
    assert!(
        matches!(&refused, Err(e) if e.to_string().contains("signed twice")),
        "{refused:?}"
    );
    assert_eq!(b_store(&c).pending(&id).unwrap().map(|p| p.0), Some(1));
    assert_eq!(b_store(&c).key(&id).unwrap().unwrap().epoch, 0);
    // The next rotation, through b: the abandoned one is activated first.
    let r = c
        .client(1, ADMIN)
        .unwrap()
        .rotate_key("left")
        .await
        .unwrap();
    assert_eq!((r.old_epoch, r.new_epoch), (1, 2), "{r:?}");
    for i in 0..3 {
        let node = &c.nodes[i].as_ref().unwrap().node;
        assert_eq!(node.key(&id).unwrap().epoch, 2, "node {i}");
        assert_eq!(node.store().pending(&id).unwrap(), None, "node {i}");
    }
    for coord in 0..3 {
        let d = [coord as u8 + 0x70; 32];
        let resp = c
            .client(coord, CLIENT)
            .unwrap()
            .sign("left", d, "", "")
            .await
            .unwrap();
        check_signature(&resp, &d, &info.public_key);
        assert_eq!(resp.epoch, 2);
    }
    c.stop().await;
}

fn b_store(c: &LocalCluster) -> &thresig::storage::Store {
    c.nodes[1].as_ref().unwrap().node.store()
}
