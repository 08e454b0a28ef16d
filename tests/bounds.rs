//! Bounds that keep one peer or one address from stalling a node (issue 19):
//! a maximal proposal is refused at decode, cheaply, while signing goes on;
//! and an honest burst of connections from one address is never cut.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

/// The cases here load the machine on purpose: they take turns, so that one
/// case's load never decides another's outcome.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

use common::{check_signature, cluster, Hostile, ADMIN, CLIENT};
use thresig::domain::{ExecutionId, KeyId, NodeName};
use thresig::node::{Operation, Proposal};

/// 200,000 distinct node names (each huge proposal below carries two lists of them: nearly 4 MiB).
fn many_names() -> Vec<NodeName> {
    (0..200_000u32)
        .map(|i| NodeName::parse(&format!("n{i}")).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_huge_proposal_is_refused_cheaply() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let (_dir, c) = cluster(&["a", "b", "c"]).await;
    let info = c
        .client(0, ADMIN)
        .unwrap()
        .create_key("k", 2, &[])
        .await
        .unwrap();
    let id = KeyId::parse("k").unwrap();
    let rec = c.nodes[0].as_ref().unwrap().node.key(&id).unwrap();
    let names = many_names();
    // Two reshares of nearly 4 MiB (the most a peer message may carry): one
    // whose committee names every one of them, one whose admin request
    // excludes every one of them.
    let reshare = |committee: Vec<NodeName>, exclude: Vec<NodeName>| {
        let mut admin = common::admin_request(thresig::client::AdminOp::Reshare, "k");
        admin.committee = committee.clone();
        admin.exclude = exclude;
        admin.threshold = 2;
        Proposal {
            eid: ExecutionId::from_slice(&[7; 32]).unwrap(),
            nonce: vec![1; 64],
            admin: Some(Box::new(thresig::client::SignedAdmin {
                request: admin,
                approvals: Vec::new(),
            })),
            op: Operation::Reshare {
                key_id: id.clone(),
                epoch: 0,
                dealers: committee[..2].to_vec(),
                committee,
                threshold: 2,
                record: Box::new(rec.clone()),
            },
        }
    };
    let small: Vec<NodeName> = names[..3].to_vec();
    let huge = [reshare(names.clone(), Vec::new()), reshare(small, names)];
    // A normal signature first, for comparison.
    let mut client = c.client(0, CLIENT).unwrap();
    let started = Instant::now();
    let d = [0x41; 32];
    check_signature(
        &client.sign("k", d, "", "").await.unwrap(),
        &d,
        &info.public_key,
    );
    let normal = started.elapsed();

    let x = Hostile::as_node(&c, 2);
    let refusals = futures::future::join_all((0..4).map(|i| x.propose("a", huge[i % 2].clone())));
    let sign = async {
        let started = Instant::now();
        let d = [0x42; 32];
        let resp = client.sign("k", d, "", "").await.unwrap();
        check_signature(&resp, &d, &info.public_key);
        started.elapsed()
    };
    let (refusals, during) = tokio::join!(refusals, sign);
    for r in refusals {
        let e = r.expect_err("a proposal naming 200,000 nodes was accepted");
        let text = e.to_string();
        assert!(
            text.contains("a cluster has at most 64 nodes"),
            "refused without the reason: {text}"
        );
    }
    println!(
        "signing latency: {:.1} ms alone, {:.1} ms beside four 200,000-name proposals",
        normal.as_secs_f64() * 1e3,
        during.as_secs_f64() * 1e3
    );
    // The node is not stalled: it goes on signing.
    let d = [0x43; 32];
    check_signature(
        &client.sign("k", d, "", "").await.unwrap(),
        &d,
        &info.public_key,
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_honest_connections_from_one_address_all_succeed() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let (_dir, c) = cluster(&["a", "b", "c"]).await;
    let info = c
        .client(0, ADMIN)
        .unwrap()
        .create_key("k", 2, &[])
        .await
        .unwrap();
    // 200 clients, each with its own connection from 127.0.0.1, all
    // connecting at once: each handshake must complete (a first request on
    // every connection, all at the same moment).
    let clients: Vec<_> = (0..200).map(|_| c.client(0, CLIENT).unwrap()).collect();
    let connected = futures::future::join_all(clients.into_iter().map(|mut client| async move {
        let r = tokio::time::timeout(Duration::from_secs(60), client.public_key("k", ""))
            .await
            .map_err(|_| "no answer within 60 s".to_owned())
            .and_then(|r| r.map(|_| ()).map_err(|e| e.to_string()));
        (client, r)
    }))
    .await;
    let refused: Vec<&String> = connected
        .iter()
        .filter_map(|(_, r)| r.as_ref().err())
        .collect();
    assert!(
        refused.is_empty(),
        "{} of 200 connections failed; first: {:?}",
        refused.len(),
        refused.first()
    );
    // Then each signs once over its connection (eight signatures at a time:
    // the point is the connections, not a signing load on two cores).
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(8));
    let signed = futures::future::join_all(connected.into_iter().enumerate().map(
        |(i, (mut client, _))| {
            let gate = gate.clone();
            async move {
                let _permit = gate.acquire().await.unwrap();
                let mut d = [0u8; 32];
                d[..4].copy_from_slice(&(i as u32).to_be_bytes());
                let r = client.sign("k", d, "", "").await.map_err(|e| e.to_string());
                (d, r)
            }
        },
    ))
    .await;
    let failed: Vec<String> = signed
        .iter()
        .filter_map(|(_, r)| r.as_ref().err().cloned())
        .collect();
    assert!(
        failed.is_empty(),
        "{} of 200 failed; first: {:?}",
        failed.len(),
        failed.first()
    );
    for (d, r) in &signed {
        check_signature(r.as_ref().unwrap(), d, &info.public_key);
    }
    c.stop().await;
}

/// One roster node floods another with refused proposals (checklist 21,
/// issue 19): the refusals are audited one by one only up to a budget, then
/// coalesced, and past a limit its key changes are refused before any check;
/// the flooded node keeps signing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refusal_floods_are_rate_limited_and_coalesced() {
    let _turn = ONE_AT_A_TIME.lock().await;
    use thresig::node::refusals::{AUDITED, LIMIT};
    let (_dir, c) = cluster(&["a", "b", "c"]).await;
    let info = c
        .client(0, ADMIN)
        .unwrap()
        .create_key("k", 2, &[])
        .await
        .unwrap();
    let a = c.nodes[0].as_ref().unwrap().node.clone();
    // Every audit entry a writes during the flood counts (it signs nothing
    // meanwhile).
    let entries = || a.store().audit_tail(100_000).unwrap().len();
    let before = entries();
    // 300 keygens with an admin request and no approvals, from c.
    let x = Hostile::as_node(&c, 2);
    let mut request = common::admin_request(thresig::client::AdminOp::Create, "flood");
    request.key_type = Some(thresig::domain::KeyType::Secp256k1);
    request.threshold = 2;
    let signed = thresig::client::SignedAdmin {
        request,
        approvals: Vec::new(),
    };
    let committee: Vec<NodeName> = ["a", "b", "c"]
        .iter()
        .map(|n| NodeName::parse(n).unwrap())
        .collect();
    let mut refusals = Vec::new();
    for i in 0..300u32 {
        let mut nonce = vec![0u8; 32];
        nonce[..4].copy_from_slice(&i.to_be_bytes());
        nonce.extend_from_slice(&signed.digest());
        let p = Proposal {
            eid: ExecutionId::from_slice(&[i as u8; 32]).unwrap(),
            nonce,
            admin: Some(Box::new(signed.clone())),
            op: Operation::Keygen {
                key_id: KeyId::parse("flood").unwrap(),
                key_type: thresig::domain::KeyType::Secp256k1,
                threshold: 2,
                committee: committee.clone(),
            },
        };
        refusals.push(
            x.propose("a", p)
                .await
                .expect_err("a flood proposal was accepted"),
        );
    }
    let limited = refusals
        .iter()
        .filter(|e| {
            e.to_string()
                .contains("its key changes are refused until the window ends")
        })
        .count();
    let written = entries() - before;
    println!(
        "300 refused proposals from c: {written} audit entries on a, {limited} refused at once by \
         the budget, {} coalesced",
        a.coalesced_refusals()
    );
    // The first ones one by one, then one coalesced entry at 100 (the
    // count may straddle a window boundary on a slow machine: two windows).
    assert!(written >= AUDITED as usize, "{written}");
    assert!(
        written <= 2 * (AUDITED as usize + 1),
        "{written} audit entries for 300 refusals"
    );
    assert!(
        limited >= 300 - 2 * LIMIT as usize - 1,
        "only {limited} refused by the budget"
    );
    assert!(a.coalesced_refusals() >= 300 - 2 * (AUDITED + 1));
    // Every refusal is counted for /metrics, audited or not.
    assert!(
        a.peer_refusals() >= 300,
        "{} refusals counted",
        a.peer_refusals()
    );
    // a still signs.
    let d = [0x44; 32];
    check_signature(
        &c.client(0, CLIENT)
            .unwrap()
            .sign("k", d, "", "")
            .await
            .unwrap(),
        &d,
        &info.public_key,
    );
    drop(a);
    c.stop().await;
}

/// One node identity opening connection after connection to another node's
/// peer plane (issue 19): past the per-identity cap the connection is closed
/// after its handshake, the refusal is counted, and the honest nodes sign.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_per_identity_are_capped() {
    use thresig::transport::MAX_CONNECTIONS_PER_NODE as CAP;
    use tokio::io::AsyncReadExt;
    let _turn = ONE_AT_A_TIME.lock().await;
    let (_dir, c) = cluster(&["a", "b", "c"]).await;
    let info = c
        .client(0, ADMIN)
        .unwrap()
        .create_key("k", 2, &[])
        .await
        .unwrap();
    let mut cfg = common::raw_tls_client(
        &c,
        thresig::pki::Role::Node,
        "c",
        &[&rustls::version::TLS13],
    );
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg));
    let (mut served, mut closed) = (0usize, 0usize);
    let mut held = Vec::new();
    for _ in 0..CAP + 8 {
        let tcp = tokio::net::TcpStream::connect(c.configs[0].listen_peer)
            .await
            .unwrap();
        let name = rustls::pki_types::ServerName::try_from("a".to_owned()).unwrap();
        let mut tls = connector.connect(name, tcp).await.unwrap();
        // A served connection gets the server's HTTP/2 SETTINGS at once; a
        // refused one is closed.
        let mut buf = [0u8; 64];
        match tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => served += 1,
            _ => closed += 1,
        }
        held.push(tls);
    }
    println!(
        "{} connections as node c: {served} served, {closed} closed",
        CAP + 8
    );
    assert!(
        served <= CAP,
        "{served} connections of one node were served"
    );
    assert!(closed >= 8, "only {closed} refused");
    // The honest nodes go on signing (a with b).
    let d = [0x66; 32];
    check_signature(
        &c.client(0, CLIENT)
            .unwrap()
            .sign("k", d, "", "")
            .await
            .unwrap(),
        &d,
        &info.public_key,
    );
    drop(held);
    c.stop().await;
}

/// A key's ledger entries, slot watermarks and lifecycle proofs are answered
/// only to its committee: a roster node outside it learns the epoch, not
/// what was signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_queries_tell_key_detail_only_to_its_committee() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let (_dir, c) = cluster(&["a", "b", "c", "d"]).await;
    let committee: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
    let info = c
        .client(0, ADMIN)
        .unwrap()
        .create_key("k", 2, &committee)
        .await
        .unwrap();
    let slot = thresig::client::Slot {
        scope: "chain".into(),
        height: 7,
        round: 0,
        step: 0,
    };
    let resp = c
        .client(0, CLIENT)
        .unwrap()
        .sign_at("k", [0x44; 32], "", "r-detail", slot)
        .await
        .unwrap();
    check_signature(&resp, &[0x44; 32], &info.public_key);
    let id = KeyId::parse("k").unwrap();
    let ask = || Proposal {
        eid: ExecutionId::from_slice(&[0; 32]).unwrap(),
        nonce: Vec::new(),
        admin: None,
        op: Operation::ShareStatus {
            key_id: id.clone(),
            request_id: Some("r-detail".into()),
            watermarks: true,
            evidence: false,
        },
    };
    // The coordinator a wrote its ledger entry and watermark before it
    // signed; a member of the committee (c) is told both.
    let member = Hostile::as_node(&c, 2).propose("a", ask()).await.unwrap();
    let thresig::node::Outcome::ShareStatus {
        epoch,
        ledger,
        watermarks,
        ..
    } = member
    else {
        panic!("status answer: {member:?}");
    };
    assert_eq!(epoch, Some(0));
    assert!(
        ledger.is_some(),
        "a committee member was not told the ledger entry"
    );
    assert!(
        !watermarks.is_empty(),
        "a committee member was not told the watermarks"
    );
    // d is on the roster, not on the key's committee: the epoch only.
    let outsider = Hostile::as_node(&c, 3).propose("a", ask()).await.unwrap();
    let thresig::node::Outcome::ShareStatus {
        epoch,
        ledger,
        watermarks,
        lifecycle,
        ..
    } = outsider
    else {
        panic!("status answer: {outsider:?}");
    };
    assert_eq!(epoch, Some(0));
    assert!(ledger.is_none(), "an outsider was told a ledger entry");
    assert!(
        watermarks.is_empty(),
        "an outsider was told the watermarks: {watermarks:?}"
    );
    assert!(lifecycle.is_none());
    c.stop().await;
}
