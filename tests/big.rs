//! Checklist 21 on a real node process: a 100 MB request is refused with
//! RESOURCE_EXHAUSTED before its body is read, and 10,000 concurrent
//! requests beyond the client's rate limit are refused with
//! RESOURCE_EXHAUSTED (with a retry hint); the node's peak memory (VmHWM)
//! stays bounded through both, and it signs normally afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{check_signature, cluster, lines_until, spawn_node_process, ADMIN, CLIENT};

/// The peak resident memory of process `pid`, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("no VmHWM line")
}

const POLICY: &str = r#"[[client]]
name = "validator"
keys = ["*"]
paths = ["m"]
rate_per_s = 20.0
burst = 40.0

[[admin]]
name = "ops"
operations = ["*"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_100_mb_request_and_10_000_concurrent_requests_leave_the_node_healthy() {
    let (_dir, mut c) = cluster(&["a", "b", "c"]).await;
    let info = c
        .client(0, ADMIN)
        .unwrap()
        .create_key("k", 2, &[])
        .await
        .unwrap();
    common::set_policy(&c, POLICY);
    // Every node as a real process (node a's memory is its own, and the
    // test's 10,000 calls do not slow b and c down).
    let mut procs = Vec::new();
    for i in 0..3 {
        c.stop_node(i).await;
    }
    for i in 0..3 {
        let (child, rx) = spawn_node_process(&c, i);
        let child = Killed(child);
        assert!(
            lines_until(&rx, "serving").is_some(),
            "node {i} did not start"
        );
        std::thread::spawn(move || while rx.recv().is_ok() {});
        procs.push(child);
    }
    let pid = procs[0].0.id();
    let d = [0x21; 32];
    let resp = c
        .client(0, CLIENT)
        .unwrap()
        .sign("k", d, "", "")
        .await
        .unwrap();
    check_signature(&resp, &d, &info.public_key);
    let baseline = peak_rss_kib(pid);

    // A 100 MB request (its request id), straight on the wire.
    let mut signer = common::raw_signer(&c, 0);
    let huge = thresig::proto::signer::SignRequest {
        key_id: "k".into(),
        digest: vec![1; 32],
        path: String::new(),
        request_id: "x".repeat(100 * 1000 * 1000),
        slot: None,
        expiry_unix: 0,
        signature_scheme: 0x0403,
        client_signature: vec![0; 64],
        payload: None,
    };
    let err = signer.sign(huge).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("too large"), "{err:?}");
    let after_huge = peak_rss_kib(pid);

    // 10,000 concurrent requests over 8 connections; the client's rate
    // limit (20/s, burst 40) refuses most of them at once.
    let clients: Vec<_> = (0..8).map(|_| c.client(0, CLIENT).unwrap()).collect();
    let calls = (0..10_000u32).map(|i| {
        let mut client = clients[i as usize % clients.len()].clone();
        let mut d = [0u8; 32];
        d[..4].copy_from_slice(&i.to_be_bytes());
        tokio::spawn(async move { client.sign("k", d, "", "").await.map(|_| ()) })
    });
    let results = tokio::time::timeout(
        Duration::from_secs(600),
        futures::future::join_all(calls.collect::<Vec<_>>()),
    )
    .await
    .expect("10,000 requests were not all answered within 600 s");
    let mut signed = 0;
    let mut exhausted = 0;
    let mut other = Vec::new();
    for r in results {
        match r.unwrap() {
            Ok(()) => signed += 1,
            Err(e) if e.code() == Some(tonic::Code::ResourceExhausted) => {
                assert!(e.retry_after().is_some(), "no retry hint: {e}");
                exhausted += 1;
            }
            Err(e) => other.push(e.to_string()),
        }
    }
    let after_flood = peak_rss_kib(pid);
    println!(
        "10,000 concurrent: {signed} signed, {exhausted} RESOURCE_EXHAUSTED, {} other; peak RSS \
         of node a: {baseline} KiB before, {after_huge} KiB after the 100 MB request, \
         {after_flood} KiB after the 10,000",
        other.len()
    );
    assert!(
        other.is_empty(),
        "{} other errors: {:?}",
        other.len(),
        &other[..other.len().min(5)]
    );
    assert!(
        exhausted >= 9_000,
        "only {exhausted} refused for the rate limit"
    );
    assert!(signed >= 1, "nothing signed");
    // The 100 MB never entered the node's memory, and the flood cost it
    // tens of MiB at most.
    assert!(
        after_huge.saturating_sub(baseline) < 32 * 1024,
        "the 100 MB request raised node a's peak RSS from {baseline} to {after_huge} KiB"
    );
    assert!(
        after_flood.saturating_sub(baseline) < 256 * 1024,
        "10,000 requests raised node a's peak RSS from {baseline} to {after_flood} KiB"
    );

    // The refusals cost node a a handful of audit entries (fsyncs), not
    // one each: the first ones one by one, then coalesced counts.
    let audit = c.client(0, ADMIN).unwrap().audit_tail(2000).await.unwrap();
    let one_by_one = audit.iter().filter(|e| e.rule == "rate limit").count();
    let coalesced: Vec<_> = audit
        .iter()
        .filter(|e| e.kind == "refusals.coalesced" && e.actor == "client/validator")
        .collect();
    assert!(one_by_one <= 10, "{one_by_one} refusals audited one by one");
    assert!(
        coalesced
            .iter()
            .any(|e| e.detail.starts_with("1000 sign requests")),
        "{coalesced:?}"
    );

    // Healthy: once the rate limit refills, it signs.
    let d = [0x22; 32];
    let mut tries = 0;
    let resp = loop {
        match c.client(0, CLIENT).unwrap().sign("k", d, "", "").await {
            Ok(r) => break r,
            Err(e) if e.code() == Some(tonic::Code::ResourceExhausted) && tries < 50 => {
                tries += 1;
                tokio::time::sleep(e.retry_after().unwrap_or(Duration::from_millis(100))).await;
            }
            Err(e) => panic!("node a after the flood: {e}"),
        }
    };
    check_signature(&resp, &d, &info.public_key);
    drop(procs);
    c.stop().await;
}

/// A node process, killed when the test ends (also when it fails).
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
