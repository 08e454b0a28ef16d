//! Bounds that keep one peer or one address from stalling a node (issue 19):
//! a maximal proposal is refused at decode, cheaply, while signing goes on;
//! and an honest burst of connections from one address is never cut.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

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
    let (_dir, c) = cluster(&["a", "b", "c"]).await;
    let info = c
        .client(0, ADMIN)
        .unwrap()
        .create_key("k", 2, &[])
        .await
        .unwrap();
    // 200 clients, each with its own connection from 127.0.0.1, all at once.
    let clients: Vec<_> = (0..200).map(|_| c.client(0, CLIENT).unwrap()).collect();
    let signed = futures::future::join_all(clients.into_iter().enumerate().map(
        |(i, mut client)| async move {
            let mut d = [0u8; 32];
            d[..4].copy_from_slice(&(i as u32).to_be_bytes());
            let r = tokio::time::timeout(Duration::from_secs(120), client.sign("k", d, "", ""))
                .await
                .map_err(|_| "no answer within 120 s".to_owned())
                .and_then(|r| r.map_err(|e| e.to_string()));
            (d, r)
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
