//! Every node enforces the request (issue 4): the client's signature over
//! every field, each node's own policy and rate limits, input validation and
//! double-sign protection by slot. Checklist items 14-17 and 19.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{
    check_signature, client_request, client_signer, cluster, sign_proposal, ADMIN, CLIENT,
};
use thresig::client::Slot;
use thresig::cluster::{LocalCluster, CLIENT2};
use thresig::domain::{DerivationPath, Digest32, KeyId, NodeName};
use thresig::node::{NodeError, Operation, Proposal};

fn node(c: &LocalCluster, i: usize) -> &thresig::node::Node {
    &c.nodes[i].as_ref().unwrap().node
}

/// A proposal for `altered`, carrying the client's signature over `signed`:
/// what a coordinator that changes a request before proposing would send
/// (with the eid every participant computes for the altered request).
fn tampered(
    c: &LocalCluster,
    signed: &thresig::client::ClientRequest,
    altered: thresig::client::ClientRequest,
) -> Proposal {
    let auth = client_signer(c).sign(signed).unwrap();
    let participants = vec![NodeName::parse("a").unwrap(), NodeName::parse("b").unwrap()];
    let nonce = vec![4u8; 32];
    Proposal {
        eid: thresig::node::ops::sign::eid(&altered, 0, &participants, &nonce),
        nonce,
        admin: None,
        op: Operation::Sign {
            lifecycle_seq: 0,
            epoch: 0,
            request: Box::new(altered),
            auth: Box::new(auth),
            participants,
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_coordinator_that_alters_the_request_gets_no_signature() {
    let (_dir, c) = cluster(&["a", "b", "c"]).await;
    let mut admin = c.client(0, ADMIN).unwrap();
    admin.create_key("k1", 2, &[]).await.unwrap();
    admin.create_key("k2", 2, &[]).await.unwrap();
    let na = NodeName::parse("a").unwrap();
    let signed = client_request("k1", [0x11; 32], "m/0", "honest-1", None);

    let mut other_digest = signed.clone();
    other_digest.digest = Digest32([0x66; 32]);
    let mut other_path = signed.clone();
    other_path.path = DerivationPath::parse("m/1").unwrap();
    let mut other_key = signed.clone();
    other_key.key_id = KeyId::parse("k2").unwrap();
    let mut other_slot = signed.clone();
    other_slot.slot = Some(Slot {
        scope: "v".into(),
        height: 1,
        round: 0,
        step: 0,
    });
    let mut later = signed.clone();
    later.expiry_unix += 100;
    for (what, altered) in [
        ("digest", other_digest),
        ("path", other_path),
        ("key", other_key),
        ("slot", other_slot),
        ("expiry", later),
    ] {
        let rid = altered.request_id.clone();
        let key = altered.key_id.clone();
        let err = node(&c, 1)
            .on_propose(&na, tampered(&c, &signed, altered))
            .await
            .unwrap_err();
        assert!(
            matches!(err.cause(), NodeError::PermissionDenied(m) if m.contains("does not cover this request")),
            "altered {what}: {err}"
        );
        assert!(
            node(&c, 1)
                .store()
                .ledger_get(&key, &rid)
                .unwrap()
                .is_none(),
            "altered {what}: b recorded the request"
        );
    }

    // A signature that is not the client's at all, and a request that expired.
    let mut p = sign_proposal(&c, &signed, 0, &["a", "b"], vec![5u8; 32]);
    if let Operation::Sign { auth, .. } = &mut p.op {
        auth.signature[10] ^= 1;
    }
    let err = node(&c, 1).on_propose(&na, p).await.unwrap_err();
    assert!(
        matches!(err.cause(), NodeError::PermissionDenied(_)),
        "{err}"
    );
    let mut stale = signed.clone();
    stale.expiry_unix = 1;
    let err = node(&c, 1)
        .on_propose(
            &na,
            sign_proposal(&c, &stale, 0, &["a", "b"], vec![6u8; 32]),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err.cause(), NodeError::InvalidArgument(m) if m.contains("expired")),
        "{err}"
    );

    // Positive control: the request as signed goes through both participants.
    let p = sign_proposal(&c, &signed, 0, &["a", "b"], vec![7u8; 32]);
    let nb = NodeName::parse("b").unwrap();
    let (ra, rb) = tokio::join!(
        node(&c, 0).on_propose(&nb, p.clone()),
        node(&c, 1).on_propose(&na, p)
    );
    assert_eq!(ra.unwrap(), rb.unwrap());
    c.stop().await;
}

fn set_policy(c: &LocalCluster, text: &str) {
    std::fs::write(c.root.join("policy.toml"), text).unwrap();
    for n in c.nodes.iter().flatten() {
        n.node.reload_policy().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn policy_is_enforced_by_every_node_and_bad_input_is_refused() {
    let (_dir, c) = cluster(&["a", "b", "c"]).await;
    let mut admin = c.client(0, ADMIN).unwrap();
    let info = admin.create_key("k1", 2, &[]).await.unwrap();
    admin.create_key("k2", 2, &[]).await.unwrap();

    // Checklist 14: the validator may use k1 under m/0 only; ops may only read.
    set_policy(
        &c,
        r#"
[[client]]
name = "validator"
keys = ["k1"]
paths = ["m/0"]

[[admin]]
name = "ops"
operations = ["read"]
"#,
    );
    let mut v = c.client(2, CLIENT).unwrap();
    let d = [0x21; 32];
    check_signature(&v.sign("k1", d, "m/0/3", "").await.unwrap(), &d, &{
        let cc: [u8; 32] = info.chain_code.as_slice().try_into().unwrap();
        thresig::bip32::derive_public(
            thresig::domain::KeyType::Secp256k1,
            &info.public_key,
            &cc,
            &DerivationPath::parse("m/0/3").unwrap(),
        )
        .unwrap()
        .0
        .to_vec()
    });
    for (key, path, needle) in [
        ("k2", "m/0", "key k2"),
        ("k1", "m/1", "path m/1"),
        ("k1", "", "path m"),
    ] {
        let err = v.sign(key, d, path, "").await.unwrap_err();
        assert_eq!(err.code(), Some(tonic::Code::PermissionDenied), "{err}");
        assert!(
            err.to_string().contains(needle) && err.to_string().contains("client[0]"),
            "{err}"
        );
    }
    let err = c
        .client(0, CLIENT2)
        .unwrap()
        .sign("k1", d, "m/0", "")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("default deny"), "{err}");
    // Reading a public key follows the same rule as signing there.
    v.public_key("k1", "m/0/9").await.unwrap();
    let err = v.public_key("k2", "m/0").await.unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::PermissionDenied), "{err}");
    let err = admin.rotate_key("k1").await.unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::PermissionDenied), "{err}");
    assert_eq!(admin.get_key("k1").await.unwrap().epoch, 0);

    // Every participant applies its own policy: a coordinator (here the test)
    // that proposes a request node b's policy denies is refused by b.
    std::fs::write(
        c.root.join("policy-b.toml"),
        "[[client]]\nname = \"validator\"\nkeys = [\"k2\"]\npaths = [\"m\"]\n",
    )
    .unwrap();
    std::fs::copy(c.root.join("policy-b.toml"), c.root.join("policy.toml")).unwrap();
    node(&c, 1).reload_policy().unwrap();
    let req = client_request("k1", d, "m/0", "via-test", None);
    let err = node(&c, 1)
        .on_propose(
            &NodeName::parse("a").unwrap(),
            sign_proposal(&c, &req, 0, &["a", "b"], vec![1; 32]),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err.cause(), NodeError::PermissionDenied(m) if m.contains("k1"))
            && err.to_string().starts_with("node b: "),
        "{err}"
    );
    // Through the API: a allows it, b does not, so no signature.
    let err = c
        .client(0, CLIENT)
        .unwrap()
        .sign("k1", d, "m/0", "")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::PermissionDenied), "{err}");
    assert!(err.to_string().contains("node b"), "{err}");

    // Checklist 17: malformed input is refused before anything runs.
    set_policy(&c, thresig::cluster::DEV_POLICY);
    let raw = |digest: Vec<u8>, path: &str, key: &str| thresig::proto::signer::SignRequest {
        key_id: key.into(),
        digest,
        path: path.into(),
        request_id: "raw".into(),
        slot: None,
        expiry_unix: 0,
        signature_scheme: 0x0403,
        client_signature: vec![0; 64],
        payload: None,
    };
    let mut signer = common::raw_signer(&c, 0);
    for (req, code) in [
        (raw(vec![1; 31], "", "k1"), tonic::Code::InvalidArgument),
        (raw(vec![1; 33], "", "k1"), tonic::Code::InvalidArgument),
        (
            raw(vec![1; 32], "m/44'/60'", "k1"),
            tonic::Code::InvalidArgument,
        ),
        (raw(vec![1; 32], "m/x", "k1"), tonic::Code::InvalidArgument),
        (
            raw(vec![1; 32], "", "no such key!"),
            tonic::Code::InvalidArgument,
        ),
    ] {
        let err = signer.sign(req).await.unwrap_err();
        assert_eq!(err.code(), code, "{err:?}");
    }
    let err = v.sign("unknown-key", d, "", "").await.unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::NotFound), "{err}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn validator_slots_are_protected_against_double_signing() {
    let (_dir, c) = cluster(&["a", "b", "c"]).await;
    let info = c
        .client(0, ADMIN)
        .unwrap()
        .create_key("val", 2, &[])
        .await
        .unwrap();
    let slot = |h, r, s| Slot {
        scope: "chain-1:val-7".into(),
        height: h,
        round: r,
        step: s,
    };
    let sign = |coord: usize, d: [u8; 32], at: Slot| {
        let mut client = c.client(coord, CLIENT).unwrap();
        async move { client.sign_at("val", d, "", "", at).await }
    };
    // A validator's sequence through changing coordinators.
    let ok = [
        (0, [1; 32], slot(10, 0, 0)),
        (1, [2; 32], slot(10, 0, 1)),
        (2, [3; 32], slot(10, 1, 0)),
        (0, [4; 32], slot(11, 0, 0)),
    ];
    for (coord, d, at) in ok.clone() {
        check_signature(&sign(coord, d, at).await.unwrap(), &d, &info.public_key);
    }
    // The last one was signed by a and b; c learned the slot by gossip
    // before any signature existed (without it, c would still be at 10/1/0).
    let key = KeyId::parse("val").unwrap();
    for i in 0..3 {
        let w = node(&c, i)
            .store()
            .watermark(&key, "chain-1:val-7")
            .unwrap()
            .unwrap();
        assert_eq!(
            (w.height, w.round, w.step, w.digest),
            (11, 0, 0, [4; 32]),
            "node {i}"
        );
    }
    // An identical re-sign (same slot, same digest, new request id) is allowed.
    let (_, d, at) = ok[3].clone();
    check_signature(&sign(1, d, at).await.unwrap(), &d, &info.public_key);
    // A conflicting digest at the watermark, and a regression below it, are
    // refused whoever coordinates.
    for coord in 0..3 {
        let err = sign(coord, [9; 32], slot(11, 0, 0)).await.unwrap_err();
        assert_eq!(err.code(), Some(tonic::Code::FailedPrecondition), "{err}");
        assert!(err.to_string().contains("another digest"), "{err}");
        let err = sign(coord, [1; 32], slot(10, 5, 5)).await.unwrap_err();
        assert_eq!(err.code(), Some(tonic::Code::FailedPrecondition), "{err}");
        assert!(err.to_string().contains("below its watermark"), "{err}");
        // The refusing node is named once, and the reason travels as a code.
        let msg = err.to_string();
        for n in ["a", "b", "c"] {
            let named = msg.matches(&format!("node {n}: ")).count();
            assert!(named <= 1, "node {n} named {named} times: {msg}");
        }
        assert!(msg.contains("node "), "no node named: {msg}");
        assert_eq!(err.reason(), Some("below-watermark"), "{err}");
    }
    // Another scope is independent; the sequence continues.
    let other = Slot {
        scope: "chain-1:val-8".into(),
        height: 1,
        round: 0,
        step: 0,
    };
    check_signature(
        &sign(2, [5; 32], other).await.unwrap(),
        &[5; 32],
        &info.public_key,
    );
    check_signature(
        &sign(2, [6; 32], slot(12, 0, 0)).await.unwrap(),
        &[6; 32],
        &info.public_key,
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_over_its_rate_limit_is_told_to_retry_and_others_are_not() {
    let (_dir, c) = cluster(&["a", "b", "c"]).await;
    c.client(0, ADMIN)
        .unwrap()
        .create_key("k", 2, &[])
        .await
        .unwrap();
    set_policy(
        &c,
        &format!(
            "{}\n[[client]]\nname = \"validator\"\nkeys = [\"*\"]\npaths = [\"m\"]\nrate_per_s = 0.2\nburst = 2\n",
            thresig::cluster::DEV_POLICY.replace("name = \"validator\"", "name = \"unused\"")
        ),
    );
    let mut v = c.client(0, CLIENT).unwrap();
    let mut s = c.client(0, CLIENT2).unwrap();
    v.sign("k", [1; 32], "", "").await.unwrap();
    v.sign("k", [2; 32], "", "").await.unwrap();
    let err = v.sign("k", [3; 32], "", "").await.unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::ResourceExhausted), "{err}");
    assert!(err.to_string().contains("retry in"), "{err}");
    for i in 0..4u8 {
        s.sign("k", [0x40 + i; 32], "", "").await.unwrap();
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_repeated_request_gets_the_same_signature_from_any_coordinator() {
    let (_dir, c) = cluster(&["a", "b", "c"]).await;
    let info = c
        .client(0, ADMIN)
        .unwrap()
        .create_key("k", 2, &[])
        .await
        .unwrap();
    let id = KeyId::parse("k").unwrap();
    let d = [0x5a; 32];
    let first = c
        .client(0, CLIENT)
        .unwrap()
        .sign("k", d, "m/1", "idem-1")
        .await
        .unwrap();
    assert_eq!(first.participants, vec!["a", "b"]);
    assert!(node(&c, 2)
        .store()
        .ledger_get(&id, "idem-1")
        .unwrap()
        .is_none());

    // c took no part: it learns the result from a and b in its status probe.
    // A new session would give a different (r, s): ECDSA nonces are random.
    for coord in [2, 1, 0] {
        let again = c
            .client(coord, CLIENT)
            .unwrap()
            .sign("k", d, "m/1", "idem-1")
            .await
            .unwrap();
        assert_eq!(
            (&again.r, &again.s, again.recovery_id),
            (&first.r, &first.s, first.recovery_id),
            "via {coord}"
        );
        assert_eq!(again.public_key, first.public_key);
    }
    assert!(
        node(&c, 2)
            .store()
            .ledger_get(&id, "idem-1")
            .unwrap()
            .is_none(),
        "c ran a session for a request that was already signed"
    );
    let cc: [u8; 32] = info.chain_code.as_slice().try_into().unwrap();
    let (child, _) = thresig::bip32::derive_public(
        thresig::domain::KeyType::Secp256k1,
        &info.public_key,
        &cc,
        &DerivationPath::parse("m/1").unwrap(),
    )
    .unwrap();
    check_signature(&first, &d, &child);

    // The same id for another digest, path or slot is refused, through c too.
    for (digest, path, slot) in [
        ([0x5b; 32], "m/1", None),
        (d, "m/2", None),
        (
            d,
            "m/1",
            Some(Slot {
                scope: "s".into(),
                height: 1,
                round: 0,
                step: 0,
            }),
        ),
    ] {
        let mut client = c.client(2, CLIENT).unwrap();
        let err = match slot {
            Some(s) => client.sign_at("k", digest, path, "idem-1", s).await,
            None => client.sign("k", digest, path, "idem-1").await,
        }
        .unwrap_err();
        assert_eq!(err.code(), Some(tonic::Code::AlreadyExists), "{err}");
        assert!(err.to_string().contains("idem-1"), "{err}");
    }
    c.stop().await;
}
