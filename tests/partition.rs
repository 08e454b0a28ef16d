//! Checklist 30: a partition that isolates the coordinator in the middle
//! of a signing session. Every participant has admitted the session (its
//! ledger entry is durable) when node a, the coordinator, is cut off from
//! every other node both ways. The client, connected to a, gets a clear
//! error in bounded time; no session stays open on any node; once the
//! partition heals, the key signs through every node.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::{check_signature, cluster, ADMIN, CLIENT};
use thresig::node::faults::{self, points};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_coordinator_isolated_mid_session_gives_a_clear_error_and_leaves_no_session() {
    let (_dir, c) = cluster(&["a", "b", "c"]).await;
    let info = c
        .client(0, ADMIN)
        .unwrap()
        .create_key("k", 2, &[])
        .await
        .unwrap();
    let d = [0x30; 32];
    let normal = Instant::now();
    let resp = c
        .client(0, CLIENT)
        .unwrap()
        .sign("k", d, "", "")
        .await
        .unwrap();
    let normal = normal.elapsed();
    check_signature(&resp, &d, &info.public_key);

    // Whichever of b and c admits a's next session cuts a off.
    faults::arm("b", points::PARTITION_COORDINATOR);
    faults::arm("c", points::PARTITION_COORDINATOR);
    let started = Instant::now();
    let d = [0x31; 32];
    let answer = tokio::time::timeout(
        Duration::from_secs(120),
        c.client(0, CLIENT).unwrap().sign("k", d, "", ""),
    )
    .await
    .expect("the client had no answer within 120 s");
    let took = started.elapsed();
    println!(
        "isolated coordinator: error after {:.1} s (a normal signature: {:.1} ms)",
        took.as_secs_f64(),
        normal.as_secs_f64() * 1e3
    );
    let e = answer.expect_err("a signature from a node cut off from every signer");
    assert!(
        matches!(
            e.code(),
            Some(tonic::Code::Unavailable | tonic::Code::DeadlineExceeded)
        ),
        "{e}"
    );
    // The error says what failed: neither other member is available to a,
    // each named with why.
    let text = e.to_string();
    assert!(
        text.contains("not available") && text.contains("b (") && text.contains("c ("),
        "{text}"
    );

    // No session stays open on any node (each ends at its round timeout).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let live: Vec<usize> = (0..3)
            .map(|i| c.nodes[i].as_ref().unwrap().node.live_sessions())
            .collect();
        if live == [0, 0, 0] {
            break;
        }
        assert!(Instant::now() < deadline, "sessions still open: {live:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The partition heals: signing works through every node.
    faults::disarm_all();
    for (i, fill) in [(1usize, 0x32u8), (2, 0x33), (0, 0x34)] {
        let d = [fill; 32];
        let resp = c
            .client(i, CLIENT)
            .unwrap()
            .sign("k", d, "", "")
            .await
            .unwrap_or_else(|e| panic!("signing through node {i} after the partition: {e}"));
        check_signature(&resp, &d, &info.public_key);
    }
    c.stop().await;
}
