//! A malicious co-signer's bad signature share freezes the key on the honest
//! signer (an abort that names nobody), `keys show` says why, and a quorum's
//! unfreeze lets it sign again (issue 11); a repeated bad share is found by
//! elimination (issue 19). The cases take turns because misbehaviour points
//! are process-wide.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{
    approved_by, check_signature, cluster, issue_admins, lifecycle_request, set_policy, ADMIN,
    CLIENT,
};
use thresig::client::AdminOp;
use thresig::node::faults::{self, points};

/// Misbehaviour points are process-wide: one case at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bad_share_freezes_the_key_and_a_quorum_unfreezes_it() {
    let _turn = ONE_AT_A_TIME.lock().await;
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
        lifecycle_request(&c, AdminOp::Unfreeze, "k"),
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

/// Node b keeps sending bad signature shares. The first failure (signers a,
/// b, c) names nobody and freezes the key; after an unfreeze, a leaves out
/// one suspect in turn: without b the key signs, without c (signers a, b,
/// d) it fails again, and the only suspect of both failures, b, is named and
/// banned for the key at a, with no second freeze there. Once d, which saw
/// its first failure then, is unfrozen, the key signs without b.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_repeated_bad_share_is_found_by_elimination() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let (_dir, c) = cluster(&["a", "b", "c", "d"]).await;
    let info = c
        .client(0, ADMIN)
        .unwrap()
        .create_key("k", 3, &[])
        .await
        .unwrap();
    let key = thresig::domain::KeyId::parse("k").unwrap();
    let a = c.nodes[0].as_ref().unwrap().node.clone();
    let unfreeze = || async {
        c.client(0, ADMIN)
            .unwrap()
            .change_key_state("k", AdminOp::Unfreeze)
            .await
            .unwrap();
    };
    faults::arm("b", points::CORRUPT_SIGN_SHARE);
    // 1. Signers a, b, c: nobody named, frozen; a suspects b and c.
    let e = c
        .client(0, CLIENT)
        .unwrap()
        .sign("k", [0x81; 32], "", "")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("failed verification"), "{e}");
    let shown = c.client(0, ADMIN).unwrap().get_key("k").await.unwrap();
    assert!(
        shown.state.starts_with("frozen") && shown.state.contains("suspects here: b, c"),
        "{}",
        shown.state
    );
    assert!(a.store().bans(&key).unwrap().is_empty());
    unfreeze().await;
    // 2. a leaves out b: a, c and d sign.
    let d = [0x82; 32];
    let resp = c
        .client(0, CLIENT)
        .unwrap()
        .sign("k", d, "", "")
        .await
        .unwrap();
    check_signature(&resp, &d, &info.public_key);
    assert!(
        !resp.participants.contains(&"b".to_owned()),
        "{:?}",
        resp.participants
    );
    // 3. a leaves out c: a, b and d, and b's bad share again. b is named.
    let e = c
        .client(0, CLIENT)
        .unwrap()
        .sign("k", [0x83; 32], "", "")
        .await
        .unwrap_err();
    let bans = a.store().bans(&key).unwrap();
    assert_eq!(
        bans.iter().map(|b| b.node.as_str()).collect::<Vec<_>>(),
        ["b"],
        "{e}"
    );
    assert!(
        bans[0].reason.contains("found by elimination"),
        "{}",
        bans[0].reason
    );
    assert_eq!(
        a.key(&key).unwrap().state,
        thresig::storage::KeyState::Active,
        "a froze the key although the failure named b"
    );
    let shown = c.client(0, ADMIN).unwrap().get_key("k").await.unwrap();
    assert!(
        shown.bans.iter().any(|b| b.starts_with("b ")),
        "{:?}",
        shown.bans
    );
    faults::disarm_all();
    // 4. d saw its first failure in step 3 and froze; once unfrozen, the key
    // signs without b.
    unfreeze().await;
    let d = [0x84; 32];
    let resp = c
        .client(0, CLIENT)
        .unwrap()
        .sign("k", d, "", "")
        .await
        .unwrap();
    check_signature(&resp, &d, &info.public_key);
    let mut signers = resp.participants.clone();
    signers.sort();
    assert_eq!(signers, ["a", "c", "d"]);
    drop(a);
    c.stop().await;
}
