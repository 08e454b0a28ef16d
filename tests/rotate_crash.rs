//! Crash safety of rotation (checklist 22): node b dies at each step of a
//! rotation (an injected crash point, then a restart from its data
//! directory). Afterwards every node has exactly one active epoch whose share
//! opens, and the key signs and rotates again. Runs alone in this binary
//! because crash points are process-wide.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{check_signature, cluster, ADMIN, CLIENT};
use thresig::domain::KeyId;
use thresig::node::faults::{self, points};

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
