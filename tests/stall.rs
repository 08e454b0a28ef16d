//! A committee node that answers status probes but stalls every signing
//! round (checklist 9, 11): the first request that meets it waits one
//! signing round, then is signed again without it; later requests avoid it.
//! No request fails. Latencies are printed, not asserted. Runs alone in this
//! binary because misbehaviour points are process-wide.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::{check_signature, cluster, ADMIN, CLIENT};
use thresig::node::faults::{self, points};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_that_stalls_its_rounds_is_excluded_and_the_request_signed_without_it() {
    let (_dir, c) = cluster(&["a", "b", "c"]).await;
    let info = c
        .client(0, ADMIN)
        .unwrap()
        .create_key("stall", 2, &[])
        .await
        .unwrap();
    // b answers probes and admits sessions, then never sends a round message.
    faults::arm("b", points::STALL_SIGN);
    let mut latencies = Vec::new();
    for i in 0..20u8 {
        let d = [i.wrapping_add(1); 32];
        let started = Instant::now();
        // Through a: its preferred signer set is {a, b}.
        let resp = c
            .client(0, CLIENT)
            .unwrap()
            .sign("stall", d, "", "")
            .await
            .unwrap_or_else(|e| panic!("request {i} failed: {e}"));
        latencies.push(started.elapsed());
        check_signature(&resp, &d, &info.public_key);
        assert!(
            !resp.participants.iter().any(|p| p == "b"),
            "request {i} counted b among its signers: {:?}",
            resp.participants
        );
    }
    faults::disarm_all();
    let ms: Vec<u128> = latencies.iter().map(Duration::as_millis).collect();
    let mut sorted = ms.clone();
    sorted.sort_unstable();
    eprintln!(
        "stalled node b: 20 requests through a, all signed; first {} ms, then p50 {} ms, max {} ms",
        ms[0],
        sorted[sorted.len() / 2],
        sorted[sorted.len() - 1]
    );
    c.stop().await;
}
