//! Ordered lifecycle (issue 19): a freeze, unfreeze or delete names the
//! key's lifecycle sequence, its cluster and its issue time; a change that
//! was approved and never carried out cannot be replayed, whether a hostile
//! node serves it as "the change you missed" or sends it straight to a
//! member.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{
    approved_by, bound_nonce, check_signature, cluster, lifecycle_request, Hostile, ADMIN, CLIENT,
};
use thresig::client::AdminOp;
use thresig::domain::KeyId;
use thresig::node::{Operation, Proposal};
use thresig::storage::KeyState;

/// What the hostile c answers to status queries in
/// `a_never_applied_delete_cannot_be_replayed`: no share, and an approved
/// delete of the key that was never sent to anyone else.
static REPLAYED: std::sync::OnceLock<thresig::proto::peer::ShareStatusResult> =
    std::sync::OnceLock::new();

fn replays_a_delete(
    req: &thresig::proto::peer::ProposeRequest,
) -> thresig::proto::peer::ProposeResponse {
    use thresig::proto::peer as pb;
    let result = match req.op {
        Some(pb::propose_request::Op::ShareStatus(_)) => {
            pb::propose_response::Result::ShareStatus(REPLAYED.get().unwrap().clone())
        }
        _ => pb::propose_response::Result::Refusal(pb::Refusal {
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

/// A delete the admins approved and nobody carried out, kept by a
/// compromised node and served later as "the change you missed" (issue 19):
/// a node destroys its share only when t committee nodes report that very
/// delete applied, so the honest nodes keep the key and sign with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_never_applied_delete_cannot_be_replayed() {
    use thresig::proto::peer as pb;
    let (_dir, mut c) = cluster(&["a", "b", "c"]).await;
    let info = c
        .client(0, ADMIN)
        .unwrap()
        .create_key("k", 2, &[])
        .await
        .unwrap();
    let id = KeyId::parse("k").unwrap();
    let signed = approved_by(&c, lifecycle_request(&c, AdminOp::Delete, "k"), &[ADMIN]);
    let nonce = bound_nonce(&signed, 9);
    let eid = thresig::node::ops::lifecycle::eid(&id, AdminOp::Delete, &nonce);
    let r = &signed.request;
    let delete = pb::ProposeRequest {
        wire_version: thresig::node::WIRE_VERSION,
        eid: eid.as_bytes().to_vec(),
        coordinator_nonce: nonce.clone(),
        admin: Some(pb::AdminAuthorization {
            operation: "delete".into(),
            key_id: "k".into(),
            request_id: r.request_id.clone(),
            expiry_unix: r.expiry_unix,
            issued_unix: r.issued_unix,
            cluster: r.cluster.clone(),
            lifecycle_seq: r.lifecycle_seq,
            approvals: signed
                .approvals
                .iter()
                .map(|a| pb::AdminApproval {
                    chain: a.chain.clone(),
                    signature_scheme: a.scheme.into(),
                    signature: a.signature.clone(),
                })
                .collect(),
            ..Default::default()
        }),
        op: Some(pb::propose_request::Op::Lifecycle(pb::LifecycleProposal {
            key_id: "k".into(),
            action: "delete".into(),
        })),
    };
    REPLAYED
        .set(pb::ShareStatusResult {
            has_share: false,
            lifecycle: Some(delete),
            ..Default::default()
        })
        .unwrap();
    c.stop_node(2).await;
    let hostile = common::serve_hostile(&c, 2, replays_a_delete).await;
    // Both honest nodes meet c's story (their probes ask it) and keep the key.
    for (via, fill) in [(0, 0x61), (1, 0x62), (0, 0x63)] {
        let d = [fill; 32];
        let resp = c
            .client(via, CLIENT)
            .unwrap()
            .sign("k", d, "", "")
            .await
            .unwrap();
        check_signature(&resp, &d, &info.public_key);
    }
    for i in [0, 1] {
        let node = &c.nodes[i].as_ref().unwrap().node;
        assert_eq!(node.key(&id).unwrap().state, KeyState::Active, "node {i}");
        assert!(
            node.store().has_share(&id, 0).unwrap(),
            "node {i} lost its share"
        );
    }
    hostile.abort();
    c.stop().await;
}

/// Each freeze, unfreeze or delete names the key's lifecycle sequence it
/// applies to, and the cluster and time it was issued for (issue 19): an
/// approved change is refused after a later one was applied (through the
/// coordinator, and sent by a hostile node straight to a member), as is a
/// request for another cluster or one older than the policy's
/// max_approval_age. A node that missed a freeze and the unfreeze after it
/// ends where the others are (sequence 2, active): it takes the unfreeze,
/// which t members applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_approved_change_is_refused_after_a_later_one_or_elsewhere_or_when_old() {
    let (_dir, mut c) = cluster(&["a", "b", "c"]).await;
    let info = c
        .client(0, ADMIN)
        .unwrap()
        .create_key("k", 2, &[])
        .await
        .unwrap();
    let id = KeyId::parse("k").unwrap();
    let seq = |c: &thresig::cluster::LocalCluster, i: usize| {
        let rec = c.nodes[i].as_ref().unwrap().node.key(&id).unwrap();
        (rec.lifecycle_seq, rec.state.label().to_owned())
    };
    // A delete approved at sequence 0, kept back; then c goes down and the
    // key is frozen and unfrozen (sequence 2 on a and b).
    let stale = approved_by(&c, lifecycle_request(&c, AdminOp::Delete, "k"), &[ADMIN]);
    assert_eq!(stale.request.lifecycle_seq, 0);
    c.stop_node(2).await;
    for op in [AdminOp::Freeze, AdminOp::Unfreeze] {
        let r = c
            .client(0, ADMIN)
            .unwrap()
            .change_key_state("k", op)
            .await
            .unwrap();
        assert_eq!(r.applied.len(), 2, "{op}: {r:?}");
    }
    assert_eq!(seq(&c, 0), (2, "active".to_owned()));
    assert_eq!(seq(&c, 1), (2, "active".to_owned()));
    // c comes back: it learns both changes from a and b (t members applied
    // the unfreeze) and is at sequence 2, active, and signs.
    c.start_node(2).await.unwrap();
    assert_eq!(seq(&c, 2), (2, "active".to_owned()), "c caught up");
    let d = [0x91; 32];
    let resp = c
        .client(2, CLIENT)
        .unwrap()
        .sign("k", d, "", "")
        .await
        .unwrap();
    check_signature(&resp, &d, &info.public_key);

    // The stale delete, through a coordinator: refused with the sequences.
    let e = c
        .client(1, ADMIN)
        .unwrap()
        .submit_admin(&stale)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(tonic::Code::FailedPrecondition), "{e}");
    assert!(
        e.to_string().contains("applies to lifecycle sequence 0")
            && e.to_string().contains("which is at 2"),
        "{e}"
    );
    // Sent by hostile a straight to b and c: each refuses it by its own
    // sequence, and keeps its share.
    let nonce = bound_nonce(&stale, 7);
    let p = Proposal {
        eid: thresig::node::ops::lifecycle::eid(&id, AdminOp::Delete, &nonce),
        nonce,
        admin: Some(Box::new(stale.clone())),
        op: Operation::Lifecycle {
            key_id: id.clone(),
            action: AdminOp::Delete,
        },
    };
    let x = Hostile::as_node(&c, 0);
    for to in ["b", "c"] {
        let refused = x.propose(to, p.clone()).await;
        assert!(
            matches!(&refused, Err(e) if e.to_string().contains("a later change was applied since")),
            "{to}: {refused:?}"
        );
    }
    for i in 0..3 {
        assert_eq!(seq(&c, i), (2, "active".to_owned()), "node {i}");
        let node = &c.nodes[i].as_ref().unwrap().node;
        assert!(node.store().has_share(&id, 0).unwrap(), "node {i}");
    }

    // A request for another cluster (same trust domain, another CA's id).
    let mut elsewhere = lifecycle_request(&c, AdminOp::Freeze, "k");
    elsewhere.cluster = "thresig.local/00000000000000000000000000000000".into();
    let e = c
        .client(0, ADMIN)
        .unwrap()
        .submit_admin(&approved_by(&c, elsewhere, &[ADMIN]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(tonic::Code::PermissionDenied), "{e}");
    assert!(e.to_string().contains("is for cluster"), "{e}");

    // A request issued two hours ago, under a policy that takes approvals up
    // to one hour old; the same request issued now is taken.
    let policy = std::fs::read_to_string(c.configs[0].policy.as_ref().unwrap()).unwrap();
    common::set_policy(
        &c,
        &format!("{policy}\n[limits]\nmax_approval_age = \"1h\"\n"),
    );
    let mut old = lifecycle_request(&c, AdminOp::Freeze, "k");
    old.issued_unix -= 7200;
    let e = c
        .client(0, ADMIN)
        .unwrap()
        .submit_admin(&approved_by(&c, old, &[ADMIN]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(tonic::Code::PermissionDenied), "{e}");
    assert!(
        e.to_string().contains("issued 2h 0m ago") && e.to_string().contains("up to 1h 0m old"),
        "{e}"
    );
    let fresh = approved_by(&c, lifecycle_request(&c, AdminOp::Freeze, "k"), &[ADMIN]);
    c.client(0, ADMIN)
        .unwrap()
        .submit_admin(&fresh)
        .await
        .unwrap();
    for i in 0..3 {
        assert_eq!(seq(&c, i), (3, "frozen".to_owned()), "node {i}");
    }
    c.stop().await;
}
