//! Crash safety of rotation (checklist 22): node b dies at each step of a
//! rotation (an injected crash point, then a restart from its data
//! directory). Afterwards every node has exactly one active epoch whose share
//! opens, and the key signs and rotates again. Runs alone in this binary
//! because crash points are process-wide.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{approved_by, bound_nonce, check_signature, cluster, Hostile, ADMIN, CLIENT};
use thresig::client::AdminOp;
use thresig::domain::{KeyId, NodeName};
use thresig::node::faults::{self, points};
use thresig::node::{Operation, Outcome, Proposal};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_killed_at_any_rotation_step_comes_back_on_one_whole_epoch() {
    let (_dir, mut c) = cluster(&["a", "b", "c"]).await;
    let info = c
        .client(0, ADMIN)
        .unwrap()
        .create_key("crash", 2, &[])
        .await
        .unwrap();
    let id = KeyId::parse("crash").unwrap();
    for point in points::ALL {
        let start_epoch = c.nodes[0].as_ref().unwrap().node.key(&id).unwrap().epoch;
        faults::arm("b", point);
        let err = c
            .client(0, ADMIN)
            .unwrap()
            .rotate_key("crash")
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("node b") || err.to_string().contains("b ("),
            "{point}: error does not name b: {err}"
        );
        // "kill -9" b, then restart it from its data directory.
        c.stop_node(1).await;
        faults::disarm_all();
        c.start_node(1).await.unwrap();

        for i in 0..3 {
            let node = c.nodes[i].as_ref().unwrap().node.clone();
            let rec = node.key(&id).unwrap();
            assert!(
                rec.epoch == start_epoch || rec.epoch == start_epoch + 1,
                "{point}: node {i} at epoch {}",
                rec.epoch
            );
            assert_eq!(
                rec.public_key, info.public_key,
                "{point}: node {i} public key changed"
            );
            let share = node
                .store()
                .share(&id, rec.epoch)
                .unwrap_or_else(|e| panic!("{point}: node {i} cannot open its active share: {e}"));
            let share = thresig::protocol::KeyShare::decode(rec.key_type, share.expose())
                .unwrap_or_else(|e| panic!("{point}: node {i} cannot decode its share: {e}"));
            assert_eq!(share.public_key().unwrap().to_vec(), info.public_key);
        }
        // The key signs through b itself, the node that may have missed the
        // activation: it learns the proof from a node ahead of it, activates
        // the share it staged and signs at the new epoch.
        let d = [point.len() as u8; 32];
        check_signature(
            &c.client(1, CLIENT)
                .unwrap()
                .sign("crash", d, "", "")
                .await
                .unwrap(),
            &d,
            &info.public_key,
        );
        // Then a complete rotation succeeds and every node agrees on the epoch.
        let r = c
            .client(0, ADMIN)
            .unwrap()
            .rotate_key("crash")
            .await
            .unwrap_or_else(|e| panic!("{point}: rotation after recovery failed: {e}"));
        let epochs: Vec<u64> = (0..3)
            .map(|i| c.nodes[i].as_ref().unwrap().node.key(&id).unwrap().epoch)
            .collect();
        assert_eq!(
            epochs,
            vec![r.new_epoch; 3],
            "{point}: nodes disagree on the epoch"
        );
        for coord in 0..3 {
            let d = [coord as u8 + 0x40; 32];
            check_signature(
                &c.client(coord, CLIENT)
                    .unwrap()
                    .sign("crash", d, "", "")
                    .await
                    .unwrap(),
                &d,
                &info.public_key,
            );
        }
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
    for (n, r) in [("a", ra), ("b", rb), ("c", rc)] {
        assert!(matches!(r, Ok(Outcome::Refresh { .. })), "{n}: {r:?}");
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
