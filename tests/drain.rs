//! Graceful shutdown (issue 12): a draining node takes no new work, so
//! coordinators sign without it and clients fail over; its work in flight is
//! counted until it finishes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{check_signature, cluster, ADMIN, CLIENT};
use thresig::client::{Client, ClientConfig};
use thresig::cluster::TRUST_DOMAIN;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_draining_node_takes_no_new_work_and_signing_goes_on_without_it() {
    let (_dir, c) = cluster(&["a", "b", "c"]).await;
    let info = c
        .client(0, ADMIN)
        .unwrap()
        .create_key("k", 2, &[])
        .await
        .unwrap();
    let b = c.nodes[1].as_ref().unwrap().node.clone();
    b.drain();
    assert!(b.is_draining());
    // Asked directly, b refuses with UNAVAILABLE (a failing-over client moves on).
    let e = c
        .client(1, CLIENT)
        .unwrap()
        .sign("k", [0xE1; 32], "", "")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(tonic::Code::Unavailable), "{e}");
    assert!(e.to_string().contains("shutting down"), "{e}");
    // Coordinators leave it out: a (which would pick b second) signs with c.
    for i in [0, 2] {
        let d = [0xE2 + i as u8; 32];
        let resp = c
            .client(i, CLIENT)
            .unwrap()
            .sign("k", d, "", "")
            .await
            .unwrap();
        assert!(
            !resp.participants.contains(&"b".to_string()),
            "{:?}",
            resp.participants
        );
        check_signature(&resp, &d, &info.public_key);
    }
    // A client that talks to b first fails over to c.
    let cfg = ClientConfig::from_dir(
        &c.layout.dir,
        TRUST_DOMAIN,
        CLIENT,
        "b",
        c.configs[1].listen_client,
    );
    let mut client = Client::connect(&cfg)
        .unwrap()
        .with_failover(&cfg, "c", c.configs[2].listen_client)
        .unwrap();
    let d = [0xE9; 32];
    check_signature(
        &client.sign("k", d, "", "").await.unwrap(),
        &d,
        &info.public_key,
    );
    // Nothing is left in flight on b, so it may stop at once.
    assert_eq!(b.wait_idle(Duration::from_secs(10)).await, 0);
    drop(b);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_drains_the_node_process_and_it_exits_cleanly() {
    let (_dir, mut c) = cluster(&["a", "b"]).await;
    c.stop_node(1).await;
    let (mut child, rx) = common::spawn_node_process(&c, 1);
    common::lines_until(&rx, "serving").expect("the node never served");
    let pid = rustix::process::Pid::from_raw(i32::try_from(child.id()).unwrap()).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let lines = common::lines_until(&rx, "shutting down").expect("no shutdown line");
    assert!(lines.iter().any(|l| l.contains("draining")), "{lines:#?}");
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    c.stop().await;
}
