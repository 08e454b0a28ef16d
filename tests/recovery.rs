//! Recovery reshare (issue 11): a broken or rogue member is removed by
//! excluding it; t of the other members deal while it is down or refuses
//! everything, also on a frozen key. Its old share is then useless.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{check_signature, cluster, ADMIN, CLIENT};
use thresig::client::AdminOp;
use thresig::domain::KeyId;

fn list(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_recovery_reshare_removes_a_member_that_is_down_or_hostile() {
    let (_dir, mut c) = cluster(&["a", "b", "c", "d", "e"]).await;
    let info = c
        .client(1, ADMIN)
        .unwrap()
        .create_key("k1", 2, &list(&["a", "b", "c"]))
        .await
        .unwrap();

    // X (a) is down. A plain reshare needs every current member...
    c.stop_node(0).await;
    let mut admin = c.client(1, ADMIN).unwrap();
    let e = admin
        .reshare_key("k1", &list(&["b", "c", "d"]), 2)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(tonic::Code::Unavailable), "{e}");
    assert!(e.to_string().contains("exclude them"), "{e}");
    // ...excluding X, b and c deal to {b, c, d}.
    let r = admin
        .reshare_key_excluding("k1", &list(&["b", "c", "d"]), 2, &list(&["a"]))
        .await
        .unwrap();
    assert!(r.public_key_unchanged);
    assert_eq!(r.key.as_ref().unwrap().committee, vec!["b", "c", "d"]);
    assert!(!r.dealers.contains(&"a".to_string()), "{:?}", r.dealers);
    assert_eq!(r.not_retired.len(), 1, "{:?}", r.not_retired);
    assert!(
        r.not_retired[0].starts_with("a (excluded"),
        "{:?}",
        r.not_retired
    );
    let d = [0x91; 32];
    let resp = c
        .client(3, CLIENT)
        .unwrap()
        .sign("k1", d, "", "")
        .await
        .unwrap();
    check_signature(&resp, &d, &info.public_key);
    // X comes back with its old share: no signature can include it.
    c.start_node(0).await.unwrap();
    let e = c
        .client(0, CLIENT)
        .unwrap()
        .sign("k1", [0x92; 32], "", "")
        .await
        .unwrap_err();
    assert!(e.code().is_some(), "{e}");

    // X refuses every proposal (hostile), and the key is frozen: an approved
    // recovery reshare without X moves it anyway, and it signs again.
    let info2 = c
        .client(2, ADMIN)
        .unwrap()
        .create_key("k2", 2, &list(&["a", "b", "c"]))
        .await
        .unwrap();
    c.client(2, ADMIN)
        .unwrap()
        .change_key_state("k2", AdminOp::Freeze)
        .await
        .unwrap();
    thresig::node::faults::kill("a");
    let r = c
        .client(2, ADMIN)
        .unwrap()
        .reshare_key_excluding("k2", &list(&["b", "c", "e"]), 2, &list(&["a"]))
        .await;
    thresig::node::faults::disarm_all();
    let r = r.unwrap();
    assert!(r.public_key_unchanged);
    let rec = c.nodes[4]
        .as_ref()
        .unwrap()
        .node
        .key(&KeyId::parse("k2").unwrap())
        .unwrap();
    assert_eq!(rec.state.label(), "active");
    assert_eq!(rec.committee, vec!["b", "c", "e"]);
    let d = [0x93; 32];
    let resp = c
        .client(4, CLIENT)
        .unwrap()
        .sign("k2", d, "", "")
        .await
        .unwrap();
    check_signature(&resp, &d, &info2.public_key);
    // Excluding the coordinator itself, or a member of the new committee, is refused.
    let e = c
        .client(1, ADMIN)
        .unwrap()
        .reshare_key_excluding("k2", &list(&["b", "c"]), 2, &list(&["c"]))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("is in the new committee"), "{e}");
    c.stop().await;
}
