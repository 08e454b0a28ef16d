//! End-to-end: real tonic servers with mTLS on OS-chosen loopback ports, each
//! node with its own store, certificates and passphrase.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{check_signature, cluster, ADMIN, CLIENT};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_of_three_keygen_then_every_pair_signs_with_every_coordinator() {
    let (_dir, mut c) = cluster(&["a", "b", "c"]).await;
    let key = c.client(0, ADMIN).unwrap().create_key("validator-key", 2, &[]).await.unwrap();
    assert_eq!(key.public_key.len(), 33);
    assert!(key.eth_address.starts_with("0x"));
    assert_eq!(key.committee, vec!["a", "b", "c"]);
    let mut pairs_seen = std::collections::BTreeSet::new();
    for round in 0..2u8 {
        for coord in 0..3 {
            let digest = [coord as u8 + 10 * round; 32];
            let resp = c.client(coord, CLIENT).unwrap().sign("validator-key", digest, "", "").await.unwrap();
            check_signature(&resp, &digest, &key.public_key);
            assert!(resp.participants.contains(&c.names()[coord]), "coordinator not among signers");
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
        let resp = c.client(coord, CLIENT).unwrap().sign("validator-key", digest, "", "").await.unwrap();
        check_signature(&resp, &digest, &key.public_key);
        let mut pair = resp.participants.clone();
        pair.sort();
        assert_eq!(pair, vec!["b", "c"]);
        pairs_seen.insert(pair);
    }
    assert_eq!(pairs_seen.len(), 3, "every pair signs: {pairs_seen:?}");
    c.stop().await;
}
