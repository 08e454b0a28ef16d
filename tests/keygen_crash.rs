//! Keygen activates atomically (issue 11): a node killed at any keygen step
//! (crash points, then a restart from its data directory) leaves the key on
//! every committee node once the others catch it up, or on none, in which
//! case the same name can be generated again. Runs alone in this binary
//! because crash points are process-wide.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{check_signature, cluster, ADMIN, CLIENT};
use thresig::domain::KeyId;
use thresig::node::faults::{self, points};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_killed_at_any_keygen_step_leaves_the_key_on_all_nodes_or_none() {
    let (_dir, mut c) = cluster(&["a", "b", "c"]).await;
    let mut outcomes = Vec::new();
    for (p, point) in points::KEYGEN.iter().enumerate() {
        for victim in 0..3usize {
            let name = format!("k{p}-{victim}");
            let id = KeyId::parse(&name).unwrap();
            faults::arm(["a", "b", "c"][victim], point);
            let first = c.client(0, ADMIN).unwrap().create_key(&name, 2, &[]).await;
            // "kill -9" the victim, then restart it from its data directory.
            c.stop_node(victim).await;
            faults::disarm_all();
            c.start_node(victim).await.unwrap();

            let states = |c: &thresig::cluster::LocalCluster| -> Vec<String> {
                (0..3)
                    .map(|i| {
                        let node = &c.nodes[i].as_ref().unwrap().node;
                        node.key(&id)
                            .map(|r| r.state.label().to_owned())
                            .unwrap_or_else(|_| "none".into())
                    })
                    .collect()
            };
            let after_crash = states(&c);
            let active = after_crash.iter().position(|s| s == "active");
            let pk = match active {
                // Active somewhere: a signature through that node catches the
                // others up, and then every node signs.
                Some(i) => {
                    let pk = c.nodes[i]
                        .as_ref()
                        .unwrap()
                        .node
                        .key(&id)
                        .unwrap()
                        .public_key;
                    let d = [0x40 + p as u8; 32];
                    let resp = c.client(i, CLIENT).unwrap().sign(&name, d, "", "").await;
                    check_signature(&resp.unwrap(), &d, &pk);
                    pk
                }
                // Active nowhere: the same name is generated again.
                None => {
                    assert!(
                        after_crash.iter().all(|s| s == "generated" || s == "none"),
                        "{point} on node {victim}: {after_crash:?}"
                    );
                    c.client(0, ADMIN)
                        .unwrap()
                        .create_key(&name, 2, &[])
                        .await
                        .unwrap_or_else(|e| panic!("{point} on node {victim}: regenerate: {e}"))
                        .public_key
                }
            };
            assert_eq!(
                states(&c),
                vec!["active"; 3],
                "{point} on node {victim}: after {after_crash:?} and recovery"
            );
            for i in 0..3 {
                let d = [0x50 + i as u8; 32];
                let resp = c
                    .client(i, CLIENT)
                    .unwrap()
                    .sign(&name, d, "", "")
                    .await
                    .unwrap_or_else(|e| panic!("{point} on node {victim}: sign via {i}: {e}"));
                check_signature(&resp, &d, &pk);
            }
            outcomes.push(format!(
                "{point}@{victim}: first {} -> {after_crash:?}",
                if first.is_ok() { "ok" } else { "failed" }
            ));
        }
    }
    // Every crash point fired somewhere (a point that never fires tests nothing).
    assert!(
        outcomes.iter().filter(|o| o.contains("failed")).count() >= points::KEYGEN.len(),
        "{outcomes:#?}"
    );
    c.stop().await;
}
