//! No single node can act alone on a key (issue 11): key changes need a
//! signed admin request, every node checks its approvals against its own
//! policy, and a hostile node with a valid node certificate but no admin
//! credential changes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{
    admin_request, approved_by, bound_nonce, check_signature, cluster, issue_admins, set_policy,
    Hostile, ADMIN, CLIENT,
};
use thresig::client::{AdminOp, SignedAdmin};
use thresig::domain::{KeyId, NodeName};
use thresig::node::{NodeError, Operation, Proposal};

fn n(s: &str) -> NodeName {
    NodeName::parse(s).unwrap()
}

fn names(v: &[&str]) -> Vec<NodeName> {
    v.iter().map(|s| n(s)).collect()
}

/// A reshare proposal of `rec`'s key to `committee` with `threshold`, dealt
/// by `dealers`, under `nonce`, carrying `admin`.
fn reshare_proposal(
    rec: &thresig::storage::KeyRecord,
    dealers: &[&str],
    committee: &[&str],
    threshold: u8,
    nonce: Vec<u8>,
    admin: Option<SignedAdmin>,
) -> Proposal {
    let (dealers, committee) = (names(dealers), names(committee));
    let eid = thresig::node::ops::reshare::eid(rec, &dealers, &committee, threshold, &nonce);
    Proposal {
        eid,
        nonce,
        admin: admin.map(Box::new),
        op: Operation::Reshare {
            key_id: rec.key_id.clone(),
            epoch: rec.epoch,
            dealers,
            committee,
            threshold,
            record: Box::new(rec.clone()),
        },
    }
}

fn denied(r: Result<thresig::node::Outcome, NodeError>, why: &str) {
    let e = r.expect_err("the proposal was accepted");
    assert!(
        matches!(e.cause(), NodeError::PermissionDenied(m) if m.contains(why)),
        "expected PERMISSION_DENIED with {why:?}, got {e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hostile_node_cannot_take_a_key_over_or_pause_it_without_approvals() {
    let (_dir, c) = cluster(&["a", "b", "c", "d"]).await;
    let committee: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
    let info = c
        .client(1, ADMIN)
        .unwrap()
        .create_key("k", 2, &committee)
        .await
        .unwrap();
    let id = KeyId::parse("k").unwrap();
    let rec = c.nodes[1].as_ref().unwrap().node.key(&id).unwrap();
    let x = Hostile::as_node(&c, 0);

    // X reshares {X,b,c} to 2-of-2 {X,d} with no admin request at all...
    let takeover = |nonce: u8, admin: Option<SignedAdmin>| {
        reshare_proposal(&rec, &["a", "b"], &["a", "d"], 2, vec![nonce; 64], admin)
    };
    for to in ["b", "c", "d"] {
        denied(
            x.propose(to, takeover(1, None)).await,
            "carries no signed admin request",
        );
    }
    // ...or with a request it wrote itself and nobody approved.
    let mut req = admin_request(AdminOp::Reshare, "k");
    req.committee = names(&["a", "d"]);
    req.threshold = 2;
    let unapproved = approved_by(&c, req, &[]);
    let p = reshare_proposal(
        &rec,
        &["a", "b"],
        &["a", "d"],
        2,
        bound_nonce(&unapproved, 2),
        Some(unapproved),
    );
    for to in ["b", "c", "d"] {
        denied(x.propose(to, p.clone()).await, "no approvals");
    }
    // Then tells b and c to retire their shares.
    for to in ["b", "c"] {
        let p = Proposal {
            eid: takeover(1, None).eid,
            nonce: vec![1; 64],
            admin: None,
            op: Operation::Retire {
                key_id: id.clone(),
                epoch: 0,
                dealers: names(&["a", "b"]),
                committee: names(&["a", "d"]),
                threshold: 2,
                confirmation: [0; 32],
                certificate: Default::default(),
            },
        };
        denied(x.propose(to, p).await, "carries no signed admin request");
    }
    // A refresh it proposes alone pauses nothing.
    let members = names(&["a", "b", "c"]);
    let nonce = vec![3u8; 64];
    let refresh = Proposal {
        eid: thresig::node::ops::rotate::eid(&rec, &members, &nonce),
        nonce,
        admin: None,
        op: Operation::Refresh {
            key_id: id.clone(),
            epoch: 0,
            committee: members,
        },
    };
    for to in ["b", "c"] {
        denied(
            x.propose(to, refresh.clone()).await,
            "carries no signed admin request",
        );
    }

    // Checklist 34, the rest: a keygen (squatting a key name), a repair of
    // c, a delete and an unfreeze, each without approvals, are refused by
    // every honest node they reach.
    let squat = Proposal {
        eid: thresig::domain::ExecutionId::from_slice(&[0x34; 32]).unwrap(),
        nonce: vec![0x34; 64],
        admin: None,
        op: Operation::Keygen {
            key_id: KeyId::parse("squat").unwrap(),
            key_type: thresig::domain::KeyType::Secp256k1,
            threshold: 2,
            committee: names(&["a", "b", "c"]),
        },
    };
    for to in ["b", "c"] {
        denied(
            x.propose(to, squat.clone()).await,
            "carries no signed admin request",
        );
    }
    let repair = Proposal {
        eid: thresig::domain::ExecutionId::from_slice(&[0x35; 32]).unwrap(),
        nonce: vec![0x35; 64],
        admin: None,
        op: Operation::Repair {
            key_id: id.clone(),
            target: NodeName::parse("c").unwrap(),
            helpers: names(&["a", "b"]),
            record: Box::new(rec.clone()),
        },
    };
    for to in ["b", "c"] {
        denied(
            x.propose(to, repair.clone()).await,
            "carries no signed admin request",
        );
    }
    for (fill, action) in [(0x36, AdminOp::Delete), (0x37, AdminOp::Unfreeze)] {
        let p = Proposal {
            eid: thresig::domain::ExecutionId::from_slice(&[fill; 32]).unwrap(),
            nonce: vec![fill; 64],
            admin: None,
            op: Operation::Lifecycle {
                key_id: id.clone(),
                action,
            },
        };
        for to in ["b", "c"] {
            denied(
                x.propose(to, p.clone()).await,
                "carries no signed admin request",
            );
        }
    }
    for i in [1, 2] {
        assert!(
            c.nodes[i]
                .as_ref()
                .unwrap()
                .node
                .key(&KeyId::parse("squat").unwrap())
                .is_err(),
            "node {i} took part in an unapproved keygen"
        );
    }

    // Nothing changed on any honest node: same record, nothing staged, no
    // share deleted, d holds nothing; and the key signs at once through b
    // and c (no pause), with b and c alone.
    for i in [1, 2] {
        let node = &c.nodes[i].as_ref().unwrap().node;
        let now = node.key(&id).unwrap();
        assert_eq!(
            (now.epoch, &now.committee, now.threshold, now.state.label()),
            (0, &rec.committee, 2, "active"),
            "node {i}"
        );
    }
    assert!(c.nodes[3].as_ref().unwrap().node.key(&id).is_err());
    for (i, digest) in [(1, [0x51; 32]), (2, [0x52; 32])] {
        let resp = c
            .client(i, CLIENT)
            .unwrap()
            .sign("k", digest, "", "")
            .await
            .unwrap();
        check_signature(&resp, &digest, &info.public_key);
    }
    c.stop().await;
}

const QUORUM_POLICY: &str = r#"
[[client]]
name = "validator"
keys = ["*"]
paths = ["m"]

[[admin]]
name = "ops"
operations = ["*"]

[[admin]]
name = "reader"
operations = ["read"]

[[quorum]]
operations = ["reshare"]
admins = ["ops-1", "ops-2", "sec-1"]
required = 2

[limits]
min_threshold = 2
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reshare_needs_its_quorum_and_each_bad_approval_has_its_reason() {
    let (_dir, c) = cluster(&["a", "b", "c", "d"]).await;
    issue_admins(&c, &["ops-1", "ops-2", "sec-1", "reader"]);
    set_policy(&c, QUORUM_POLICY);
    let old: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
    let info = c
        .client(0, ADMIN)
        .unwrap()
        .create_key("k", 2, &old)
        .await
        .unwrap();
    let id = KeyId::parse("k").unwrap();
    let rec = c.nodes[0].as_ref().unwrap().node.key(&id).unwrap();
    let reshare = || {
        let mut r = admin_request(AdminOp::Reshare, "k");
        r.committee = names(&["b", "c", "d"]);
        r.threshold = 2;
        r
    };
    let mut client = c.client(0, ADMIN).unwrap();
    let submit_denied = |signed: SignedAdmin, why: &'static str| {
        let mut client = c.client(0, ADMIN).unwrap();
        async move {
            let e = client.submit_admin(&signed).await.unwrap_err();
            assert_eq!(e.code(), Some(tonic::Code::PermissionDenied), "{e}");
            assert!(e.to_string().contains(why), "expected {why:?}: {e}");
        }
    };

    // The one-step command (one admin) is refused: reshare needs two of the
    // quorum, and ops, who may do everything else, is not in it.
    let committee: Vec<String> = ["b", "c", "d"].iter().map(|s| s.to_string()).collect();
    let e = c
        .client(0, "ops-1")
        .unwrap()
        .reshare_key("k", &committee, 2)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(tonic::Code::PermissionDenied), "{e}");
    assert!(e.to_string().contains("missing approvals"), "{e}");
    let e = client.reshare_key("k", &committee, 2).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("ops approved, but is not in the quorum"),
        "{e}"
    );
    // One of two.
    submit_denied(approved_by(&c, reshare(), &["ops-1"]), "has 1 (ops-1)").await;
    // Two approvals by one admin.
    submit_denied(
        approved_by(&c, reshare(), &["ops-1", "ops-1"]),
        "approved twice",
    )
    .await;
    // An admin outside the quorum.
    submit_denied(
        approved_by(&c, reshare(), &["ops-1", "reader"]),
        "reader approved, but is not in the quorum",
    )
    .await;
    // A client certificate is no admin.
    let mut with_client = approved_by(&c, reshare(), &["ops-1"]);
    with_client.approvals.push(
        common::client_signer(&c)
            .approve(&with_client.request)
            .unwrap(),
    );
    submit_denied(with_client, "is not an admin identity").await;
    // Expired.
    let mut old_req = reshare();
    old_req.expiry_unix -= 120;
    submit_denied(approved_by(&c, old_req, &["ops-1", "sec-1"]), "expired").await;
    // Below the minimum threshold (and so also one quorum could not lower it).
    let mut low = reshare();
    low.threshold = 1;
    submit_denied(
        approved_by(&c, low, &["ops-1", "sec-1"]),
        "below this node's minimum",
    )
    .await;
    // Approvals of another key, operation, committee or threshold: the
    // signatures do not cover the request they are attached to.
    let changes: [fn(&mut thresig::client::AdminRequest); 4] = [
        |r| r.key_id = KeyId::parse("other").unwrap(),
        |r| r.operation = AdminOp::Rotate,
        |r| r.committee = names(&["a", "d"]),
        |r| r.threshold = 3,
    ];
    for change in changes {
        let mut moved = approved_by(&c, reshare(), &["ops-1", "sec-1"]);
        change(&mut moved.request);
        let mut client = c.client(0, ADMIN).unwrap();
        let e = client.submit_admin(&moved).await.unwrap_err();
        assert!(
            e.to_string().contains("does not cover this request")
                || e.code() == Some(tonic::Code::InvalidArgument),
            "{e}"
        );
    }

    // A hostile coordinator (node a's certificate) reusing valid approvals
    // for another committee, threshold or key is refused by every node.
    let good = approved_by(&c, reshare(), &["ops-1", "sec-1"]);
    let x = Hostile::as_node(&c, 0);
    let p = reshare_proposal(
        &rec,
        &["a", "b"],
        &["a", "d"],
        2,
        bound_nonce(&good, 4),
        Some(good.clone()),
    );
    for to in ["b", "c", "d"] {
        denied(
            x.propose(to, p.clone()).await,
            "committee is not the request's",
        );
    }
    let p = reshare_proposal(
        &rec,
        &["a", "b"],
        &["b", "c", "d"],
        3,
        bound_nonce(&good, 5),
        Some(good.clone()),
    );
    denied(x.propose("d", p).await, "threshold is not the request's");
    // The right parameters, but a nonce that does not bind the approvals.
    let p = reshare_proposal(
        &rec,
        &["a", "b"],
        &["b", "c", "d"],
        2,
        vec![6; 64],
        Some(good.clone()),
    );
    denied(x.propose("d", p).await, "nonce does not bind");

    // With two approvals of the quorum it runs.
    let mut client = c.client(0, ADMIN).unwrap();
    let out = client.submit_admin(&good).await.unwrap();
    let thresig::client::AdminOutcome::Reshared(r) = out else {
        panic!("{out:?}")
    };
    assert!(r.public_key_unchanged);
    assert_eq!(r.key.unwrap().committee, vec!["b", "c", "d"]);
    let digest = [0x61; 32];
    let resp = c
        .client(3, CLIENT)
        .unwrap()
        .sign("k", digest, "", "")
        .await
        .unwrap();
    check_signature(&resp, &digest, &info.public_key);

    // The same request again, under a new nonce: its id was used.
    let rec1 = c.nodes[1].as_ref().unwrap().node.key(&id).unwrap();
    let p = reshare_proposal(
        &rec1,
        &["b", "c"],
        &["b", "c", "d"],
        2,
        bound_nonce(&good, 7),
        Some(good),
    );
    denied(x.propose("d", p).await, "already used");
    c.stop().await;
}

/// Runs the thresig binary; its exit code, stdout and stderr.
async fn thresig(args: &[&std::ffi::OsStr]) -> (i32, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_thresig"))
        .args(args)
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_offline_approval_flow_works_from_the_command_line() {
    use std::ffi::OsStr;
    let (dir, c) = cluster(&["a", "b", "c"]).await;
    issue_admins(&c, &["ops-1", "sec-1"]);
    set_policy(&c, QUORUM_POLICY);
    let two: Vec<String> = ["a", "b"].iter().map(|s| s.to_string()).collect();
    c.client(0, ADMIN)
        .unwrap()
        .create_key("k", 2, &two)
        .await
        .unwrap();
    let file = dir.path().join("reshare.json");
    let certs = c.layout.dir.clone();
    let endpoint = c.configs[0].listen_client.to_string();
    let as_admin = |who: &'static str| {
        vec![
            OsStr::new("--certs").to_owned(),
            certs.clone().into_os_string(),
            OsStr::new("--identity").to_owned(),
            OsStr::new(who).to_owned(),
        ]
    };
    let run = |mut args: Vec<std::ffi::OsString>, who: &'static str| {
        args.extend(as_admin(who));
        async move {
            let refs: Vec<&OsStr> = args.iter().map(|a| a.as_os_str()).collect();
            thresig(&refs).await
        }
    };
    let os = |v: &[&str]| -> Vec<std::ffi::OsString> { v.iter().map(|s| s.into()).collect() };
    let mut propose = os(&[
        "admin",
        "propose",
        "reshare",
        "--key",
        "k",
        "--committee",
        "a,b,c",
        "--threshold",
        "2",
        "--out",
    ]);
    propose.push(file.clone().into_os_string());
    let (code, out, err) = run(propose.clone(), "ops-1").await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("move key k to the committee a, b, c with threshold 2"),
        "{out}"
    );
    // An existing file is not overwritten.
    let (code, _, err) = run(propose, "ops-1").await;
    assert_ne!(code, 0);
    assert!(err.contains("exists"), "{err}");

    let mut submit = os(&["admin", "submit"]);
    submit.push(file.clone().into_os_string());
    submit.extend(os(&["--endpoint", &endpoint, "--server", "a"]));
    let (code, _, err) = run(submit.clone(), "ops-1").await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("missing approvals"), "{err}");

    let mut approve = os(&["admin", "approve"]);
    approve.push(file.clone().into_os_string());
    let (code, out, err) = run(approve.clone(), "sec-1").await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("now carries 2 approvals"), "{out}");
    let (code, _, err) = run(approve, "sec-1").await;
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("already carries your approval"), "{err}");

    let (code, out, err) = run(submit, "ops-1").await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("2-of-{a, b} -> 2-of-{a, b, c}"), "{out}");
    let rec = c.nodes[2]
        .as_ref()
        .unwrap()
        .node
        .key(&KeyId::parse("k").unwrap())
        .unwrap();
    assert_eq!(rec.committee, vec!["a", "b", "c"]);
    c.stop().await;
}

/// A cluster (120 s rounds) with key k, where node a's certificate has
/// proposed an approved refresh to b alone: b checked the approvals, took the
/// key's maintenance lock and waits for rounds that never come, so its
/// session is still running for as long as a test needs (it cannot time out
/// meanwhile). Returns the refresh's eid and the task holding b's call.
async fn b_running_an_approved_refresh(
    fill: u8,
) -> (
    tempfile::TempDir,
    thresig::cluster::LocalCluster,
    Vec<u8>,
    thresig::domain::ExecutionId,
    tokio::task::JoinHandle<Result<thresig::node::Outcome, NodeError>>,
) {
    use std::time::{Duration, Instant};
    common::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let timeouts = thresig::node::Timeouts {
        round: Duration::from_secs(120),
        ping: Duration::from_secs(1),
    };
    let c = thresig::cluster::LocalCluster::start(dir.path(), &["a", "b", "c"], timeouts)
        .await
        .unwrap();
    let info = c
        .client(0, ADMIN)
        .unwrap()
        .create_key("k", 2, &[])
        .await
        .unwrap();
    let id = KeyId::parse("k").unwrap();
    let rec = c.nodes[1].as_ref().unwrap().node.key(&id).unwrap();
    let committee = names(&["a", "b", "c"]);
    let signed = approved_by(&c, admin_request(AdminOp::Rotate, "k"), &[ADMIN]);
    let nonce = bound_nonce(&signed, fill);
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
    let running = tokio::spawn(async move { x.propose("b", refresh).await });
    let deadline = Instant::now() + Duration::from_secs(30);
    while !b_reports_a_running_session(&c, &id).await {
        assert!(Instant::now() < deadline, "b never started the session");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (dir, c, info.public_key, eid, running)
}

/// Whether b answers a status query saying a rotation or reshare session of
/// `id` runs there.
async fn b_reports_a_running_session(c: &thresig::cluster::LocalCluster, id: &KeyId) -> bool {
    let status = Proposal {
        eid: thresig::domain::ExecutionId::from_slice(&[0; 32]).unwrap(),
        nonce: Vec::new(),
        admin: None,
        op: Operation::ShareStatus {
            key_id: id.clone(),
            request_id: None,
            watermarks: false,
            evidence: false,
        },
    };
    match Hostile::as_node(c, 0).propose("b", status).await {
        Ok(thresig::node::Outcome::ShareStatus { maintenance, .. }) => maintenance.running,
        other => panic!("status query: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn signing_goes_on_while_a_refresh_runs_and_a_second_rotation_is_refused() {
    let (_dir, c, pk, _eid, running) = b_running_an_approved_refresh(3).await;
    // b signs at the old epoch while its refresh session runs: no pause.
    for d in [[0xC2; 32], [0xC3; 32]] {
        let resp = c
            .client(1, CLIENT)
            .unwrap()
            .sign("k", d, "", "")
            .await
            .unwrap();
        check_signature(&resp, &d, &pk);
        assert_eq!(resp.epoch, 0);
    }
    // A second rotation is refused while the session runs, naming b.
    let err = c
        .client(0, ADMIN)
        .unwrap()
        .rotate_key("k")
        .await
        .unwrap_err();
    assert_eq!(err.reason(), Some("failed-precondition"), "{err}");
    assert!(err.to_string().contains("in progress on node b"), "{err}");
    assert!(
        !running.is_finished(),
        "the refresh ended by itself, so this does not show it held the key"
    );
    running.abort();
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dropped_refresh_call_lets_the_next_rotation_run_at_once() {
    use std::time::{Duration, Instant};
    // Before the maintenance lock ended with the call, b kept the key for
    // 2 x 6 x 120 s.
    let (_dir, c, pk, _eid, running) = b_running_an_approved_refresh(4).await;
    // The coordinator goes away mid-session (as when an admin presses Ctrl-C
    // or the coordinator dies): the call to b is dropped, and so is b's lock.
    running.abort();
    let id = KeyId::parse("k").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while b_reports_a_running_session(&c, &id).await {
        assert!(
            Instant::now() < deadline,
            "b kept the key after the call was dropped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rotated = c.client(1, ADMIN).unwrap().rotate_key("k").await.unwrap();
    assert_eq!(rotated.new_epoch, 1);
    let d = [0xC4; 32];
    let resp = c
        .client(1, CLIENT)
        .unwrap()
        .sign("k", d, "", "")
        .await
        .unwrap();
    check_signature(&resp, &d, &pk);
    assert_eq!(resp.epoch, 1);
    c.stop().await;
}
