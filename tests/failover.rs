//! Clients fail over (issue 12): a signing request that meets a node that is
//! down is sent, unchanged, to the next node, and idempotency returns the
//! same signature for the same request id.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{check_signature, cluster, ADMIN, CLIENT};
use thresig::client::{Client, ClientConfig};
use thresig::cluster::TRUST_DOMAIN;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_fails_over_to_the_next_node_with_the_same_request() {
    let (_dir, mut c) = cluster(&["a", "b", "c"]).await;
    let info = c
        .client(0, ADMIN)
        .unwrap()
        .create_key("k", 2, &[])
        .await
        .unwrap();
    let cfg = ClientConfig::from_dir(
        &c.layout.dir,
        TRUST_DOMAIN,
        CLIENT,
        "a",
        c.configs[0].listen_client,
    );
    let mut client = Client::connect(&cfg)
        .unwrap()
        .with_failover(&cfg, "b", c.configs[1].listen_client)
        .unwrap()
        .with_failover(&cfg, "c", c.configs[2].listen_client)
        .unwrap();
    let d = [0xD1; 32];
    let req = client.request("k", d, "", "failover-1", None).unwrap();
    let first = client.sign_request(&req).await.unwrap();
    check_signature(&first, &d, &info.public_key);

    // a goes down: the same request (same id, same client signature) goes to
    // b, which returns the signature already made for it.
    c.stop_node(0).await;
    let again = client.sign_request(&req).await.unwrap();
    assert_eq!((again.r.clone(), again.s.clone()), (first.r, first.s));
    // New requests keep working through the nodes that are up.
    for i in 0..3u8 {
        let d = [0xD2 + i; 32];
        let resp = client.sign("k", d, "", "").await.unwrap();
        assert!(!resp.participants.contains(&"a".to_string()));
        check_signature(&resp, &d, &info.public_key);
    }
    // Without failover, the same client fails and says the node is unreachable.
    let mut alone = Client::connect(&cfg).unwrap();
    let e = alone.sign("k", [0xD9; 32], "", "").await.unwrap_err();
    assert_eq!(e.code(), Some(tonic::Code::Unavailable), "{e}");
    assert!(e.to_string().contains("unreachable"), "{e}");
    c.stop().await;
}

/// `thresig status` against node a with node c down: c's row says why, the
/// key still has t of its committee ready, and the command exits 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thresig_status_shows_a_down_node_and_the_keys_readiness() {
    let (_dir, mut c) = cluster(&["a", "b", "c"]).await;
    c.client(0, ADMIN)
        .unwrap()
        .create_key("k", 2, &[])
        .await
        .unwrap();
    c.stop_node(2).await;
    let status = |json: bool| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_thresig"));
        cmd.arg("status")
            .arg("--certs")
            .arg(&c.layout.dir)
            .args([
                "--identity",
                ADMIN,
                "--server",
                "a",
                "--trust-domain",
                TRUST_DOMAIN,
            ])
            .arg("--endpoint")
            .arg(c.configs[0].listen_client.to_string());
        if json {
            cmd.arg("--json");
        }
        cmd.output().unwrap()
    };
    let out = status(false);
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}");
    assert_eq!(out.status.code(), Some(1), "{text}");
    let row = text
        .lines()
        .find(|l| l.starts_with("c "))
        .expect("no row for c");
    assert!(row.contains("NO: "), "{row}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("b ") && l.contains("yes")),
        "{text}"
    );
    assert!(text.contains("2/2 ok, AT RISK"), "{text}");
    assert!(
        text.contains("ATTENTION: 2 of 3 nodes reachable (DOWN: c); 1 of 1 keys can sign"),
        "{text}"
    );
    // Certificate expiry: the answering node's own, and b's from its ping.
    for n in ["a (answering) ", "b "] {
        let row = text.lines().find(|l| l.starts_with(n)).unwrap();
        assert!(row.contains("d)") && row.contains("-"), "{row}");
    }
    let out = status(true);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["keys"][0]["ready"], 2);
    assert_eq!(doc["nodes"][2]["reachable"], false);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    for i in [0, 1] {
        let left = doc["nodes"][i]["cert_not_after_unix"].as_i64().unwrap() - now;
        assert!(left > 300 * 86_400, "node {i}: {left} s left");
    }
    assert_eq!(doc["nodes"][2]["cert_not_after_unix"], 0);
    c.stop().await;
}
