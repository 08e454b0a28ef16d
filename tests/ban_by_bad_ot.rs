//! A co-signer whose OT data fails the others' consistency check is banned
//! for the key by the node whose engine caught it (the DKLs23 rule): the
//! request is signed again without it, that node refuses every later session
//! of the key with it (also when the banned node coordinates), `keys show`
//! lists the ban, and an approved `unban` clears it on every node (issue 12,
//! checklist 11). Runs alone in this binary because misbehaviour points are
//! process-wide.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{check_signature, cluster, issue_admins, set_policy, ADMIN, CLIENT};
use thresig::client::AdminOp;
use thresig::node::faults::{self, points};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cosigner_caught_tampering_with_ot_data_is_banned_until_an_admin_clears_it() {
    let (_dir, c) = cluster(&["a", "b", "c"]).await;
    issue_admins(&c, &["ops-1", "sec-1"]);
    set_policy(&c, &common::two_admin_policy(&["unban"]));
    let info = c
        .client(0, ADMIN)
        .unwrap()
        .create_key("k", 2, &[])
        .await
        .unwrap();

    // b, listed second, tampers with its OT data: a (coordinating) signs
    // with it first, a's engine names b, and a signs again with c.
    faults::arm("b", points::TAMPER_SIGN_OT);
    let signers = signed_by(&c, 0, 0x61, &info.public_key).await;
    faults::disarm_all();
    assert_eq!(signers, ["a", "c"]);
    let shown = c.client(0, ADMIN).unwrap().get_key("k").await.unwrap();
    assert_eq!(shown.bans.len(), 1, "{:?}", shown.bans);
    assert!(
        shown.bans[0].starts_with("b (since Unix ") && shown.bans[0].contains("OT"),
        "{:?}",
        shown.bans
    );
    assert_eq!(shown.state, "active", "a ban does not freeze the key");
    for i in [1, 2] {
        let other = c.client(i, ADMIN).unwrap().get_key("k").await.unwrap();
        assert!(other.bans.is_empty(), "node {i}: {:?}", other.bans);
    }

    // b, behaving now, coordinates: a refuses to sign with it, so b signs
    // with c. b's own word never bans anyone.
    assert_eq!(signed_by(&c, 1, 0x62, &info.public_key).await, ["b", "c"]);

    // One admin cannot clear the bans; two of the quorum can, on every node.
    let e = c
        .client(0, "ops-1")
        .unwrap()
        .change_key_state("k", AdminOp::Unban)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("missing approvals"), "{e}");
    let r = common::approved_by(
        &c,
        common::admin_request(AdminOp::Unban, "k"),
        &["ops-1", "sec-1"],
    );
    let done = c.client(2, ADMIN).unwrap().submit_admin(&r).await.unwrap();
    assert!(
        format!("{done:?}").contains(r#"applied: ["a", "b", "c"]"#),
        "{done:?}"
    );
    let shown = c.client(0, ADMIN).unwrap().get_key("k").await.unwrap();
    assert!(shown.bans.is_empty(), "{:?}", shown.bans);
    // a signs with b again.
    assert_eq!(signed_by(&c, 0, 0x63, &info.public_key).await, ["a", "b"]);
    c.stop().await;
}

/// Signs digest [byte; 32] through node `coord`, checks the signature, and
/// returns the signers, sorted.
async fn signed_by(
    c: &thresig::cluster::LocalCluster,
    coord: usize,
    byte: u8,
    pk: &[u8],
) -> Vec<String> {
    let d = [byte; 32];
    let resp = c
        .client(coord, CLIENT)
        .unwrap()
        .sign("k", d, "", "")
        .await
        .unwrap();
    check_signature(&resp, &d, pk);
    let mut signers = resp.participants;
    signers.sort();
    signers
}
