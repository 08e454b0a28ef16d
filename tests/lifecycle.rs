//! A key's lifecycle (issue 11): freeze stops signing on every node, unfreeze
//! needs its quorum, delete destroys every share and leaves a tombstone, and
//! a node that was down learns of a delete when it next talks to the others.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{
    approved_by, bound_nonce, check_signature, cluster, issue_admins, lifecycle_request,
    set_policy, Hostile, ADMIN, CLIENT,
};
use thresig::client::{AdminOp, AdminOutcome};
use thresig::domain::KeyId;
use thresig::node::{Operation, Proposal};
use thresig::storage::KeyState;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn freeze_stops_signing_everywhere_and_unfreeze_needs_its_quorum() {
    let (_dir, c) = cluster(&["a", "b", "c"]).await;
    issue_admins(&c, &["ops-1", "sec-1"]);
    set_policy(&c, &common::two_admin_policy(&["unfreeze", "delete"]));
    let info = c
        .client(0, ADMIN)
        .unwrap()
        .create_key("k", 2, &[])
        .await
        .unwrap();
    let id = KeyId::parse("k").unwrap();
    let sign_everywhere = |digest: u8| {
        let c = &c;
        async move {
            let mut out = Vec::new();
            for i in 0..3 {
                out.push(
                    c.client(i, CLIENT)
                        .unwrap()
                        .sign("k", [digest; 32], "", "")
                        .await,
                );
            }
            out
        }
    };

    // ops may freeze alone (no quorum names freeze): every node stops signing.
    let r = c
        .client(1, ADMIN)
        .unwrap()
        .change_key_state("k", AdminOp::Freeze)
        .await
        .unwrap();
    assert_eq!(r.applied.len(), 3, "{r:?}");
    assert!(r.not_applied.is_empty(), "{r:?}");
    for res in sign_everywhere(0x71).await {
        let e = res.unwrap_err();
        assert_eq!(e.code(), Some(tonic::Code::FailedPrecondition), "{e}");
        assert!(e.to_string().contains("frozen"), "{e}");
    }
    // `keys show` says who froze it and when.
    let shown = c.client(2, ADMIN).unwrap().get_key("k").await.unwrap();
    assert!(
        shown
            .state
            .starts_with("frozen: freeze by admin request adm-"),
        "{}",
        shown.state
    );

    // Unfreezing needs two of the quorum: ops alone, or ops-1 alone, is refused.
    let e = c
        .client(0, ADMIN)
        .unwrap()
        .change_key_state("k", AdminOp::Unfreeze)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(tonic::Code::PermissionDenied), "{e}");
    let alone = approved_by(
        &c,
        lifecycle_request(&c, AdminOp::Unfreeze, "k"),
        &["ops-1"],
    );
    let e = c
        .client(0, ADMIN)
        .unwrap()
        .submit_admin(&alone)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("missing approvals"), "{e}");
    for i in 0..3 {
        let rec = c.nodes[i].as_ref().unwrap().node.key(&id).unwrap();
        assert_eq!(rec.state.label(), "frozen", "node {i}");
    }
    let both = approved_by(
        &c,
        lifecycle_request(&c, AdminOp::Unfreeze, "k"),
        &["ops-1", "sec-1"],
    );
    let out = c
        .client(0, ADMIN)
        .unwrap()
        .submit_admin(&both)
        .await
        .unwrap();
    let AdminOutcome::StateChanged(r) = out else {
        panic!("{out:?}")
    };
    assert_eq!(r.applied.len(), 3);
    for res in sign_everywhere(0x72).await {
        check_signature(&res.unwrap(), &[0x72; 32], &info.public_key);
    }

    // A key frozen by an invalid final signature (the state a participant
    // stores when an abort names nobody) is unfrozen the same way.
    for n in c.nodes.iter().flatten() {
        n.node
            .store()
            .set_state(
                &id,
                KeyState::Frozen("final signature of session x failed verification".into()),
            )
            .unwrap();
    }
    assert!(sign_everywhere(0x73).await.iter().all(|r| r.is_err()));
    let both = approved_by(
        &c,
        lifecycle_request(&c, AdminOp::Unfreeze, "k"),
        &["sec-1", "ops-1"],
    );
    c.client(2, ADMIN)
        .unwrap()
        .submit_admin(&both)
        .await
        .unwrap();
    for res in sign_everywhere(0x74).await {
        check_signature(&res.unwrap(), &[0x74; 32], &info.public_key);
    }

    // A node (a's certificate) that saw an approved unfreeze cannot replay it
    // to undo a newer freeze: each node applies a given change once.
    let x = Hostile::as_node(&c, 0);
    c.client(1, ADMIN)
        .unwrap()
        .change_key_state("k", AdminOp::Freeze)
        .await
        .unwrap();
    let unfreeze = approved_by(
        &c,
        lifecycle_request(&c, AdminOp::Unfreeze, "k"),
        &["ops-1", "sec-1"],
    );
    let nonce = bound_nonce(&unfreeze, 7);
    let proposal = Proposal {
        eid: thresig::node::ops::lifecycle::eid(&id, AdminOp::Unfreeze, &nonce),
        nonce,
        admin: Some(Box::new(unfreeze)),
        op: Operation::Lifecycle {
            key_id: id.clone(),
            action: AdminOp::Unfreeze,
        },
    };
    x.propose("b", proposal.clone()).await.unwrap();
    assert_eq!(
        c.nodes[1]
            .as_ref()
            .unwrap()
            .node
            .key(&id)
            .unwrap()
            .state
            .label(),
        "active"
    );
    c.client(1, ADMIN)
        .unwrap()
        .change_key_state("k", AdminOp::Freeze)
        .await
        .unwrap();
    let replayed = x.propose("b", proposal).await.unwrap();
    assert_eq!(
        replayed,
        thresig::node::Outcome::Lifecycle {
            state: "frozen".into()
        }
    );
    let rec = c.nodes[1].as_ref().unwrap().node.key(&id).unwrap();
    assert_eq!(rec.state.label(), "frozen");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deleted_key_is_gone_everywhere_and_a_node_that_was_down_learns_it() {
    let (_dir, mut c) = cluster(&["a", "b", "c"]).await;
    issue_admins(&c, &["ops-1", "sec-1"]);
    set_policy(&c, &common::two_admin_policy(&["unfreeze", "delete"]));
    c.client(0, ADMIN)
        .unwrap()
        .create_key("k", 2, &[])
        .await
        .unwrap();
    let id = KeyId::parse("k").unwrap();
    let signed = c
        .client(2, CLIENT)
        .unwrap()
        .sign("k", [0x81; 32], "", "ledger-entry")
        .await
        .unwrap();
    let partner = if signed.participants.contains(&"a".to_string()) {
        0
    } else {
        1
    };

    // c is down; a and b delete their shares with two approvals.
    c.stop_node(2).await;
    let delete = approved_by(
        &c,
        lifecycle_request(&c, AdminOp::Delete, "k"),
        &["ops-1", "sec-1"],
    );
    let out = c
        .client(0, ADMIN)
        .unwrap()
        .submit_admin(&delete)
        .await
        .unwrap();
    let AdminOutcome::StateChanged(r) = out else {
        panic!("{out:?}")
    };
    assert_eq!(r.applied, vec!["a", "b"]);
    assert_eq!(r.not_applied.len(), 1, "{r:?}");
    assert!(r.not_applied[0].starts_with("c ("), "{r:?}");
    for i in [0, 1] {
        let node = &c.nodes[i].as_ref().unwrap().node;
        let rec = node.key(&id).unwrap();
        assert_eq!(rec.state.label(), "deleted", "node {i}");
        assert!(!node.store().has_share(&id, rec.epoch).unwrap(), "node {i}");
    }
    // The ledger and the audit log stay.
    let node = &c.nodes[partner].as_ref().unwrap().node;
    let entry = node.store().ledger_get(&id, "ledger-entry").unwrap();
    assert!(entry.is_some(), "the signer's ledger entry is gone");
    let audit = c.client(0, ADMIN).unwrap().audit_tail(20).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|e| e.kind == "session.delete" && e.decision == "ok"),
        "{audit:?}"
    );
    // The name is not reused.
    let e = c
        .client(1, ADMIN)
        .unwrap()
        .create_key("k", 2, &[])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(tonic::Code::AlreadyExists), "{e}");
    assert!(e.to_string().contains("not reused"), "{e}");

    // c comes back with its share. Before it serves it compares its keys
    // with the others, learns of the delete (a and b both applied it),
    // checks the approvals itself and deletes its share too.
    c.start_node(2).await.unwrap();
    let c_node = c.nodes[2].as_ref().unwrap().node.clone();
    let rec = c_node.key(&id).unwrap();
    assert_eq!(rec.state.label(), "deleted");
    assert!(!c_node.store().has_share(&id, rec.epoch).unwrap());
    let e = c
        .client(2, CLIENT)
        .unwrap()
        .sign("k", [0x83; 32], "", "")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(tonic::Code::FailedPrecondition), "{e}");
    assert!(e.to_string().contains("deleted"), "{e}");
    drop(c_node);
    c.stop().await;
}

/// A node that was down while the admins froze the key (checklist 34,
/// issue 19): a hostile coordinator that ignores the freeze asks it to sign.
/// The node compares the key's state with another member before it takes
/// part (it has not since it started), learns the freeze from it, applies
/// it and refuses; the honest member refuses too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_that_missed_a_freeze_cannot_be_used_to_sign() {
    let (_dir, mut c) = cluster(&["a", "b", "c"]).await;
    c.client(0, ADMIN)
        .unwrap()
        .create_key("k", 2, &[])
        .await
        .unwrap();
    let id = KeyId::parse("k").unwrap();
    c.stop_node(2).await;
    let r = c
        .client(0, ADMIN)
        .unwrap()
        .change_key_state("k", AdminOp::Freeze)
        .await
        .unwrap();
    assert!(
        r.not_applied.iter().any(|n| n.contains('c')),
        "{:?}",
        r.not_applied
    );
    // c comes back, and its comparison at start finds no member answering
    // (as when the network to a and b is briefly down): it still shows the
    // key active.
    c.start_node_unsynced(2).await.unwrap();
    let state = |i: usize| c.nodes[i].as_ref().unwrap().node.key(&id).unwrap().state;
    assert_eq!(state(2), KeyState::Active, "c missed the freeze");

    // Hostile a: its binary ignores the freeze and proposes a signature.
    let request = common::client_request("k", [0x5A; 32], "", "missed-freeze", None);
    let x = Hostile::as_node(&c, 0);
    for (to, nonce) in [("c", 1u8), ("b", 2)] {
        let p = common::sign_proposal(&c, &request, 0, &["a", to], vec![nonce; 32]);
        let refused = x.propose(to, p).await;
        assert!(
            matches!(&refused, Err(e) if e.to_string().contains("frozen")),
            "{to}: {refused:?}"
        );
        // The proposal carries the coordinator's old lifecycle sequence:
        // both refuse it by the sequence, before anything else about the key.
        assert!(
            matches!(&refused, Err(e) if e.to_string().contains("lifecycle sequence 1")),
            "{to}: {refused:?}"
        );
    }
    assert!(
        matches!(state(2), KeyState::Frozen(_)),
        "c applied the freeze it learned from b: {:?}",
        state(2)
    );
    c.stop().await;
}

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

/// A node that was down while the admins froze the key learns it before it
/// serves (`thresig node run` compares every key with its committee first).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_back_from_downtime_learns_a_missed_freeze_before_it_serves() {
    let (_dir, mut c) = cluster(&["a", "b", "c"]).await;
    c.client(0, ADMIN)
        .unwrap()
        .create_key("k", 2, &[])
        .await
        .unwrap();
    let id = KeyId::parse("k").unwrap();
    c.stop_node(2).await;
    c.client(0, ADMIN)
        .unwrap()
        .change_key_state("k", AdminOp::Freeze)
        .await
        .unwrap();
    c.start_node(2).await.unwrap();
    let state = c.nodes[2].as_ref().unwrap().node.key(&id).unwrap().state;
    assert!(matches!(state, KeyState::Frozen(_)), "{state:?}");
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
