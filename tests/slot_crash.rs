//! Double-sign protection survives a crash (issue 4, acceptance 3): node b
//! is killed right after it commits the slot watermark and before any
//! message of the signing session leaves it. After a restart from its data
//! directory, a conflicting request for that slot is still refused, by b
//! itself and through the API. Runs alone in this binary because crash
//! points are process-wide.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{check_signature, client_request, cluster, sign_proposal, ADMIN, CLIENT};
use thresig::client::Slot;
use thresig::domain::{KeyId, NodeName};
use thresig::node::faults::{self, points};
use thresig::node::NodeError;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watermark_committed_before_a_crash_still_refuses_a_conflicting_request() {
    let (_dir, mut c) = cluster(&["a", "b", "c"]).await;
    let info = c
        .client(0, ADMIN)
        .unwrap()
        .create_key("val", 2, &[])
        .await
        .unwrap();
    let slot = Slot {
        scope: "chain:val-1".into(),
        height: 77,
        round: 0,
        step: 1,
    };

    // b coordinates and takes part; it dies right after its watermark commit.
    faults::arm("b", points::AFTER_WATERMARK);
    let err = c
        .client(1, CLIENT)
        .unwrap()
        .sign_at("val", [0xaa; 32], "", "first", slot.clone())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("injected crash"), "{err}");
    c.stop_node(1).await;
    faults::disarm_all();
    c.start_node(1).await.unwrap();

    let w = c.nodes[1]
        .as_ref()
        .unwrap()
        .node
        .store()
        .watermark(&KeyId::parse("val").unwrap(), &slot.scope)
        .unwrap()
        .expect("b's watermark did not survive the restart");
    assert_eq!(
        (w.height, w.round, w.step, w.digest),
        (77, 0, 1, [0xaa; 32])
    );

    // A conflicting digest for that slot, proposed to b with c (whose own
    // watermark is empty): b refuses.
    let conflicting = client_request("val", [0xbb; 32], "", "second", Some(slot.clone()));
    let err = c.nodes[1]
        .as_ref()
        .unwrap()
        .node
        .on_propose(
            &NodeName::parse("c").unwrap(),
            sign_proposal(&c, &conflicting, 0, &["b", "c"], vec![3; 32]),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err.cause(), NodeError::SlotConflict(m) if m.contains("another digest")),
        "{err}"
    );
    // Through the API, with b coordinating again.
    let err = c
        .client(1, CLIENT)
        .unwrap()
        .sign_at("val", [0xbb; 32], "", "third", slot.clone())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::FailedPrecondition), "{err}");

    // The original digest can still be signed at that slot (a re-sign).
    let resp = c
        .client(1, CLIENT)
        .unwrap()
        .sign_at("val", [0xaa; 32], "", "fourth", slot)
        .await
        .unwrap();
    check_signature(&resp, &[0xaa; 32], &info.public_key);
    c.stop().await;
}
