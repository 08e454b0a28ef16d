//! A malicious co-signer's bad signature share freezes the key on the honest
//! signer (an abort that names nobody), `keys show` says why, and a quorum's
//! unfreeze lets it sign again (issue 11). Runs alone in this binary because
//! misbehaviour points are process-wide.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{
    admin_request, approved_by, check_signature, cluster, issue_admins, set_policy, ADMIN, CLIENT,
};
use thresig::client::AdminOp;
use thresig::node::faults::{self, points};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bad_share_freezes_the_key_and_a_quorum_unfreezes_it() {
    let (_dir, c) = cluster(&["a", "b", "c"]).await;
    issue_admins(&c, &["ops-1", "sec-1"]);
    set_policy(&c, &common::two_admin_policy(&["unfreeze"]));
    let info = c
        .client(0, ADMIN)
        .unwrap()
        .create_key("k", 2, &[])
        .await
        .unwrap();
    // b, listed second, sends a wrong share: a (coordinating) signs with it.
    faults::arm("b", points::CORRUPT_SIGN_SHARE);
    let e = c
        .client(0, CLIENT)
        .unwrap()
        .sign("k", [0x61; 32], "", "")
        .await
        .unwrap_err();
    faults::disarm_all();
    assert!(e.to_string().contains("failed verification"), "{e}");
    let shown = c.client(0, ADMIN).unwrap().get_key("k").await.unwrap();
    assert!(
        shown
            .state
            .starts_with("frozen: final signature of session")
            && shown.state.contains("signers a, b")
            && shown.state.contains("no party was blamed"),
        "{}",
        shown.state
    );
    let e = c
        .client(0, CLIENT)
        .unwrap()
        .sign("k", [0x62; 32], "", "")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(tonic::Code::FailedPrecondition), "{e}");

    // One admin cannot unfreeze it; two of the quorum can.
    let e = c
        .client(0, "ops-1")
        .unwrap()
        .change_key_state("k", AdminOp::Unfreeze)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("missing approvals"), "{e}");
    let both = approved_by(
        &c,
        admin_request(AdminOp::Unfreeze, "k"),
        &["ops-1", "sec-1"],
    );
    c.client(1, ADMIN)
        .unwrap()
        .submit_admin(&both)
        .await
        .unwrap();
    for i in 0..3 {
        let d = [0x70 + i as u8; 32];
        let resp = c
            .client(i, CLIENT)
            .unwrap()
            .sign("k", d, "", "")
            .await
            .unwrap();
        check_signature(&resp, &d, &info.public_key);
    }
    c.stop().await;
}
