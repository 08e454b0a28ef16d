//! A hostile peer with a real node certificate answers with extreme numbers
//! (issue 11): the honest nodes give clear errors, never panic, and keep
//! serving.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{check_signature, cluster, serve_hostile, ADMIN, CLIENT};
use thresig::proto::peer as pb;

/// Every status answer: a share at epoch u64::MAX, signing, with a rotation
/// proof; every other proposal: refused as paused for u64::MAX ms, blaming
/// a node that does not exist.
fn extreme(req: &pb::ProposeRequest) -> pb::ProposeResponse {
    use pb::propose_response::Result as R;
    let result = match req.op {
        Some(pb::propose_request::Op::ShareStatus(_)) => R::ShareStatus(pb::ShareStatusResult {
            has_share: true,
            epoch: u64::MAX,
            signing: true,
            rotation: vec![0xEE; 32],
            ledger: None,
            lifecycle: None,
            rotation_confirmation: vec![0xEE; 32],
            staged: Some(pb::StagedEpoch {
                epoch: u64::MAX,
                eid: vec![0xEE; 32],
                confirmation: vec![0xEE; 32],
                reshare: true,
                release_open_ms: u64::MAX,
                receipt: None,
            }),
            maintaining: false,
            certificate: Vec::new(),
            generated_receipt: None,
            watermarks: vec![pb::SlotWatermark {
                scope: "s".repeat(1000),
                height: u64::MAX,
                round: u64::MAX,
                step: u64::MAX,
                digest: vec![0xEE; 32],
                request_id: "r".into(),
            }],
        }),
        _ => R::Refusal(pb::Refusal {
            reason: pb::Reason::Paused.into(),
            message: "x".repeat(10_000),
            retry_after_ms: u64::MAX,
            blamed: "no-such-node-\u{202e}".into(),
        }),
    };
    pb::ProposeResponse {
        result: Some(result),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn extreme_numbers_from_a_peer_give_clear_errors_and_the_node_keeps_serving() {
    let (_dir, mut c) = cluster(&["a", "b", "c"]).await;
    let info = c
        .client(0, ADMIN)
        .unwrap()
        .create_key("k", 2, &[])
        .await
        .unwrap();
    c.stop_node(2).await;
    let hostile = serve_hostile(&c, 2, extreme).await;

    // Signing: c's status answer (epoch u64::MAX) rules it out; a and b sign.
    for i in [0, 1] {
        let d = [0xA1 + i as u8; 32];
        let resp = c
            .client(i, CLIENT)
            .unwrap()
            .sign("k", d, "", "")
            .await
            .unwrap();
        assert!(!resp.participants.contains(&"c".to_string()));
        check_signature(&resp, &d, &info.public_key);
    }
    // Rotation needs c: refused, naming c's impossible epoch.
    let e = c
        .client(0, ADMIN)
        .unwrap()
        .rotate_key("k")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(tonic::Code::Unavailable), "{e}");
    assert!(
        e.to_string().contains("holds epoch 18446744073709551615"),
        "{e}"
    );
    // A keygen that c refuses with an absurd retry hint: a clear refusal whose
    // hint is bounded.
    let e = c
        .client(1, ADMIN)
        .unwrap()
        .create_key("k2", 2, &[])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(tonic::Code::Unavailable), "{e}");
    let retry = e.retry_after().expect("a retry hint");
    assert!(retry <= std::time::Duration::from_secs(60), "{retry:?}");

    // Both honest nodes still serve.
    for i in [0, 1] {
        let d = [0xB1 + i as u8; 32];
        let resp = c
            .client(i, CLIENT)
            .unwrap()
            .sign("k", d, "", "")
            .await
            .unwrap();
        check_signature(&resp, &d, &info.public_key);
    }
    hostile.abort();
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_blackholed_node_is_not_probed_on_every_request() {
    let (_dir, mut c) = cluster(&["a", "b", "c"]).await;
    let info = c
        .client(0, ADMIN)
        .unwrap()
        .create_key("k", 2, &[])
        .await
        .unwrap();
    // c's peer port accepts connections and never answers (a blackhole).
    c.stop_node(2).await;
    let addr = c.configs[2].listen_peer;
    let mut listener = None;
    for _ in 0..100 {
        if let Ok(l) = tokio::net::TcpListener::bind(addr).await {
            listener = Some(l);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let listener = listener.expect("c's peer port stayed busy");
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let hole = {
        let accepted = accepted.clone();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((sock, _)) = listener.accept().await {
                accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                held.push(sock);
            }
        })
    };
    let from = std::time::Instant::now();
    // Node b is listed before c, so a signs with b; c is only probed.
    let mut ms = Vec::new();
    for i in 0..12u8 {
        let d = [0xF0 + i; 32];
        let started = std::time::Instant::now();
        let resp = c
            .client(0, CLIENT)
            .unwrap()
            .sign("k", d, "", "")
            .await
            .unwrap();
        ms.push(started.elapsed().as_secs_f64() * 1e3);
        assert!(!resp.participants.contains(&"c".to_string()));
        check_signature(&resp, &d, &info.public_key);
    }
    // Counted: each probe of c is one connection attempt to the blackhole
    // (two when the first times out), and c is probed again only after the
    // recheck interval (5 s), not on every request.
    let elapsed = from.elapsed();
    let connections = accepted.load(std::sync::atomic::Ordering::SeqCst);
    let windows = 1 + elapsed.as_secs() as usize / 5;
    println!(
        "blackholed c: {connections} connections to it over 12 requests in {:.1} s",
        elapsed.as_secs_f64()
    );
    assert!(
        connections <= 2 * windows && connections < 12,
        "c was probed {connections} times over 12 requests in {elapsed:?}"
    );
    // Latencies, printed: the first request pays the probe timeout (1 s
    // here), the next ones do not.
    let rest = &mut ms[1..].to_vec();
    rest.sort_by(|a, b| a.total_cmp(b));
    println!(
        "blackholed c: first request {:.0} ms, median of the next {} {:.0} ms, max {:.0} ms",
        ms[0],
        rest.len(),
        rest[rest.len() / 2],
        rest[rest.len() - 1]
    );
    hole.abort();
    c.stop().await;
}

/// Node c's certificate floods b with messages for invented sessions while a
/// signs with b (checklist 21): c runs into its own quota, and none of the
/// honest sessions between a and b fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invented_sessions_from_one_node_do_not_break_the_others_sessions() {
    let (_dir, c) = cluster(&["a", "b", "c"]).await;
    let info = c
        .client(0, ADMIN)
        .unwrap()
        .create_key("k", 2, &[])
        .await
        .unwrap();
    let x = common::Hostile::as_node(&c, 2);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let (mut sent, mut refused) = (0u32, 0u32);
            let mut i = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i = i.wrapping_add(1);
                let mut b = [0xEE; 32];
                b[..4].copy_from_slice(&i.to_be_bytes());
                let eid = thresig::domain::ExecutionId::from_slice(&b).unwrap();
                match x.deliver("b", eid, 1, vec![0; 64]).await {
                    Ok(()) => sent += 1,
                    Err(_) => refused += 1,
                }
            }
            (sent, refused)
        })
    };
    for i in 0..20u8 {
        let d = [i + 1; 32];
        let resp = c
            .client(0, CLIENT)
            .unwrap()
            .sign("k", d, "", "")
            .await
            .unwrap_or_else(|e| panic!("signature {i} under the flood: {e}"));
        check_signature(&resp, &d, &info.public_key);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (sent, refused) = flood.await.unwrap();
    eprintln!("invented sessions: c had {sent} messages buffered at b and {refused} refused");
    assert!(refused > 0, "c never reached its quota ({sent} sent)");
    c.stop().await;
}
