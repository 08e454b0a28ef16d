//! End-to-end: real tonic servers with mTLS on OS-chosen loopback ports, each
//! node with its own store, certificates and passphrase.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{check_signature, cluster, ADMIN, CLIENT};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_of_three_keygen_then_every_pair_signs_with_every_coordinator() {
    let (_dir, mut c) = cluster(&["a", "b", "c"]).await;
    let key = c
        .client(0, ADMIN)
        .unwrap()
        .create_key("validator-key", 2, &[])
        .await
        .unwrap();
    assert_eq!(key.public_key.len(), 33);
    assert!(key.eth_address.starts_with("0x"));
    assert_eq!(key.committee, vec!["a", "b", "c"]);
    let mut pairs_seen = std::collections::BTreeSet::new();
    for round in 0..2u8 {
        for coord in 0..3 {
            let digest = [coord as u8 + 10 * round; 32];
            let resp = c
                .client(coord, CLIENT)
                .unwrap()
                .sign("validator-key", digest, "", "")
                .await
                .unwrap();
            check_signature(&resp, &digest, &key.public_key);
            assert!(
                resp.participants.contains(&c.names()[coord]),
                "coordinator not among signers"
            );
            let mut pair = resp.participants.clone();
            pair.sort();
            pairs_seen.insert(pair);
        }
    }
    // Coordinators prefer themselves and then committee order, so {b, c}
    // signs when a is down (which is also checklist item 29).
    c.stop_node(0).await;
    for coord in [1, 2] {
        let digest = [0x5a + coord as u8; 32];
        let resp = c
            .client(coord, CLIENT)
            .unwrap()
            .sign("validator-key", digest, "", "")
            .await
            .unwrap();
        check_signature(&resp, &digest, &key.public_key);
        let mut pair = resp.participants.clone();
        pair.sort();
        assert_eq!(pair, vec!["b", "c"]);
        pairs_seen.insert(pair);
    }
    assert_eq!(pairs_seen.len(), 3, "every pair signs: {pairs_seen:?}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn derived_path_signature_verifies_against_independent_bip32_child_key() {
    let (_dir, c) = cluster(&["a", "b", "c"]).await;
    let key = c
        .client(0, ADMIN)
        .unwrap()
        .create_key("hd", 2, &[])
        .await
        .unwrap();
    let cc: [u8; 32] = key.chain_code.as_slice().try_into().unwrap();
    for (coord, path) in [(0, "m/0/1"), (1, "m/7"), (2, "m/44/60/0/0/5")] {
        let (child, _) = thresig::bip32::derive_public(
            thresig::domain::KeyType::Secp256k1,
            &key.public_key,
            &cc,
            &thresig::domain::DerivationPath::parse(path).unwrap(),
        )
        .unwrap();
        assert_ne!(child.as_slice(), key.public_key.as_slice());
        let digest = [0x42; 32];
        let resp = c
            .client(coord, CLIENT)
            .unwrap()
            .sign("hd", digest, path, "")
            .await
            .unwrap();
        check_signature(&resp, &digest, &child);
        let pk = c
            .client(coord, CLIENT)
            .unwrap()
            .public_key("hd", path)
            .await
            .unwrap();
        assert_eq!(pk.public_key, child.to_vec());
    }
    let err = c
        .client(0, CLIENT)
        .unwrap()
        .sign("hd", [1; 32], "m/44'/60'", "")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("hardened"), "{err}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn repeated_request_id_returns_the_same_signature_and_another_digest_is_refused() {
    let (_dir, c) = cluster(&["a", "b", "c"]).await;
    let key = c
        .client(0, ADMIN)
        .unwrap()
        .create_key("idem", 2, &[])
        .await
        .unwrap();
    let d = [0x12; 32];
    let first = c
        .client(0, CLIENT)
        .unwrap()
        .sign("idem", d, "m/3", "block-77")
        .await
        .unwrap();
    let again = c
        .client(0, CLIENT)
        .unwrap()
        .sign("idem", d, "m/3", "block-77")
        .await
        .unwrap();
    assert_eq!(
        (&first.r, &first.s, first.recovery_id),
        (&again.r, &again.s, again.recovery_id)
    );
    assert_eq!(first.participants, again.participants);
    // A fresh request id signs anew (ECDSA nonces differ, so r differs).
    let fresh = c
        .client(0, CLIENT)
        .unwrap()
        .sign("idem", d, "m/3", "block-78")
        .await
        .unwrap();
    assert_ne!(fresh.r, first.r);
    let err = c
        .client(0, CLIENT)
        .unwrap()
        .sign("idem", [0x13; 32], "m/3", "block-77")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::AlreadyExists), "{err}");
    let err = c
        .client(0, CLIENT)
        .unwrap()
        .sign("idem", d, "m/4", "block-77")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::AlreadyExists), "{err}");
    let cc: [u8; 32] = key.chain_code.as_slice().try_into().unwrap();
    let (child, _) = thresig::bip32::derive_public(
        thresig::domain::KeyType::Secp256k1,
        &key.public_key,
        &cc,
        &thresig::domain::DerivationPath::parse("m/3").unwrap(),
    )
    .unwrap();
    check_signature(&again, &d, &child);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_of_five_keygen_and_signing() {
    let (_dir, c) = cluster(&["a", "b", "c", "d", "e"]).await;
    let key = c
        .client(4, ADMIN)
        .unwrap()
        .create_key("big", 3, &[])
        .await
        .unwrap();
    assert_eq!((key.threshold, key.committee.len()), (3, 5));
    for coord in [0, 2, 4] {
        let digest = [coord as u8 + 1; 32];
        let resp = c
            .client(coord, CLIENT)
            .unwrap()
            .sign("big", digest, "", "")
            .await
            .unwrap();
        assert_eq!(resp.participants.len(), 3);
        check_signature(&resp, &digest, &key.public_key);
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_node_down_signing_continues_and_keygen_names_the_missing_node() {
    let (_dir, mut c) = cluster(&["a", "b", "c"]).await;
    let key = c
        .client(0, ADMIN)
        .unwrap()
        .create_key("k", 2, &[])
        .await
        .unwrap();
    c.stop_node(2).await;
    for coord in [0, 1] {
        let digest = [9; 32];
        let resp = c
            .client(coord, CLIENT)
            .unwrap()
            .sign("k", digest, "", "")
            .await
            .unwrap();
        check_signature(&resp, &digest, &key.public_key);
    }
    let started = std::time::Instant::now();
    let err = c
        .client(0, ADMIN)
        .unwrap()
        .create_key("k2", 2, &[])
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    let msg = err.to_string();
    assert!(
        msg.contains("unavailable") && msg.contains("c ("),
        "error does not name node c: {msg}"
    );
    assert!(
        elapsed < std::time::Duration::from_secs(15),
        "keygen failure took {elapsed:?}"
    );
    // A committee without the stopped node still works.
    c.client(1, ADMIN)
        .unwrap()
        .create_key("k3", 2, &["a".into(), "b".into()])
        .await
        .unwrap();
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_node_restarts_from_its_data_dir_and_the_key_still_signs() {
    let (_dir, mut c) = cluster(&["a", "b", "c"]).await;
    let key = c
        .client(0, ADMIN)
        .unwrap()
        .create_key("persist", 2, &[])
        .await
        .unwrap();
    for i in 0..3 {
        c.stop_node(i).await;
    }
    for i in 0..3 {
        c.start_node(i).await.unwrap();
    }
    for coord in 0..3 {
        let digest = [0x77 - coord as u8; 32];
        let resp = c
            .client(coord, CLIENT)
            .unwrap()
            .sign("persist", digest, "", "")
            .await
            .unwrap();
        check_signature(&resp, &digest, &key.public_key);
    }
    let listed = c.client(2, ADMIN).unwrap().list_keys().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].public_key, key.public_key);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ops_plane_serves_health_readiness_and_request_counters() {
    use std::io::{Read, Write};
    let (_dir, mut c) = cluster(&["a", "b"]).await;
    c.configs[0].listen_ops = Some("127.0.0.1:0".parse().unwrap());
    c.stop_node(0).await;
    c.start_node(0).await.unwrap();
    let ops = c.nodes[0]
        .as_ref()
        .unwrap()
        .ops_addr
        .expect("ops plane not started");
    c.client(0, ADMIN)
        .unwrap()
        .create_key("m", 2, &[])
        .await
        .unwrap();
    c.client(0, CLIENT)
        .unwrap()
        .sign("m", [1; 32], "", "")
        .await
        .unwrap();
    c.client(0, CLIENT)
        .unwrap()
        .sign("nope", [1; 32], "", "")
        .await
        .unwrap_err();
    let get = |path: &str| {
        let mut s = std::net::TcpStream::connect(ops).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    assert!(get("/healthz").starts_with("HTTP/1.1 200"));
    // Ready once the node's first probe of its peers is in (it starts at once).
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let ready = loop {
        let r = get("/readyz");
        if r.starts_with("HTTP/1.1 200") {
            break r;
        }
        assert!(std::time::Instant::now() < until, "never ready: {r}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(
        ready.contains("\"ready\":true") && ready.contains("\"keys\":1"),
        "{ready}"
    );
    let metrics = get("/metrics");
    assert!(
        metrics.contains("thresig_requests_total{op=\"sign\",outcome=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("thresig_requests_total{op=\"sign\",outcome=\"not_found\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("thresig_requests_total{op=\"keygen\",outcome=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(get("/nope").starts_with("HTTP/1.1 404"));
    c.stop().await;
}
