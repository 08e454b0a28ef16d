//! A dealer that cheats in a reshare (issue 3, acceptance 3): it sends a new
//! member a point that does not match its Feldman commitments. The member
//! names it, the reshare fails, and no node activates the new epoch.
//! Arms a process-wide fault point, so it runs alone in this test binary.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{check_signature, cluster, ADMIN, CLIENT};
use thresig::domain::KeyId;
use thresig::node::faults;
use thresig::storage::KeyState;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dealer_inconsistent_with_its_commitments_is_named_and_nothing_activates() {
    let (_dir, c) = cluster(&["a", "b", "c", "d"]).await;
    let old: Vec<String> = ["a", "b", "c"].iter().map(|s| (*s).to_owned()).collect();
    let info = c
        .client(0, ADMIN)
        .unwrap()
        .create_key("guarded", 2, &old)
        .await
        .unwrap();
    let id = KeyId::parse("guarded").unwrap();
    let node = |i: usize| &c.nodes[i].as_ref().unwrap().node;

    // a coordinates, so it is one of the two dealers; it cheats.
    faults::arm("a", faults::points::CORRUPT_DEALING);
    let new: Vec<String> = ["a", "b", "c", "d"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    let err = c
        .client(0, ADMIN)
        .unwrap()
        .reshare_key("guarded", &new, 3)
        .await
        .unwrap_err();
    faults::disarm_all();
    let msg = err.to_string();
    assert!(msg.contains("blames node a"), "dealer not named: {msg}");
    assert!(msg.contains("inconsistent with its commitments"), "{msg}");
    assert_eq!(err.code(), Some(tonic::Code::Aborted), "{err}");

    // Let the members still waiting on the failed session give up.
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;
    for i in 0..3 {
        let rec = node(i).key(&id).unwrap();
        assert_eq!(
            (rec.epoch, rec.threshold, rec.committee.clone(), rec.state),
            (0, 2, old.clone(), KeyState::Active),
            "node {i} changed"
        );
        assert!(
            node(i).store().pending(&id).unwrap().is_none(),
            "node {i} kept a staged epoch"
        );
        assert!(node(i).store().has_share(&id, 0).unwrap());
        assert!(!node(i).store().has_share(&id, 1).unwrap());
    }
    assert!(
        node(3).store().key(&id).unwrap().is_none(),
        "d joined anyway"
    );
    assert!(!node(3).store().has_share(&id, 1).unwrap());

    // The old committee still signs, and an honest reshare then goes through.
    let d = [0x3c; 32];
    check_signature(
        &c.client(1, CLIENT)
            .unwrap()
            .sign("guarded", d, "", "")
            .await
            .unwrap(),
        &d,
        &info.public_key,
    );
    let r = c
        .client(0, ADMIN)
        .unwrap()
        .reshare_key("guarded", &new, 3)
        .await
        .unwrap();
    assert_eq!((r.new_epoch, r.public_key_unchanged), (1, true));
    check_signature(
        &c.client(3, CLIENT)
            .unwrap()
            .sign("guarded", d, "", "")
            .await
            .unwrap(),
        &d,
        &info.public_key,
    );
    c.stop().await;
}
