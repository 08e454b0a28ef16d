//! Session rules at a participant (checklist 4): an execution id is single
//! use, even across restarts, and must match the proposal it arrives with.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::{client_request, cluster, sign_proposal, ADMIN};
use thresig::cluster::LocalCluster;
use thresig::domain::NodeName;
use thresig::node::{NodeError, Outcome, Proposal};

fn proposal(c: &LocalCluster, request_id: &str) -> Proposal {
    let req = client_request("k", [0x33; 32], "", request_id, None);
    sign_proposal(c, &req, 0, &["a", "b"], vec![7u8; 32])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reused_execution_id_is_refused_before_any_round_even_after_restart() {
    let (_dir, mut c) = cluster(&["a", "b", "c"]).await;
    c.client(0, ADMIN)
        .unwrap()
        .create_key("k", 2, &[])
        .await
        .unwrap();
    let (na, nb) = (NodeName::parse("a").unwrap(), NodeName::parse("b").unwrap());
    let a = c.nodes[0].as_ref().unwrap().node.clone();
    let b = c.nodes[1].as_ref().unwrap().node.clone();
    let p = proposal(&c, "req-1");

    // The test acts as coordinator: both participants accept and sign.
    let (ra, rb) = tokio::join!(a.on_propose(&nb, p.clone()), b.on_propose(&na, p.clone()));
    let (Outcome::Sign(sa), Outcome::Sign(sb)) = (ra.unwrap(), rb.unwrap()) else {
        panic!("not a signature")
    };
    assert_eq!(sa, sb);

    // The same eid again: refused at once, without waiting for any round (round timeout is 5 s).
    let started = Instant::now();
    let err = a.on_propose(&nb, p.clone()).await.unwrap_err();
    assert!(
        matches!(err.cause(), NodeError::PermissionDenied(m) if m.contains("used before")),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refusal waited for a session"
    );

    // An eid that does not match the proposal's fields is refused too.
    let mut forged = proposal(&c, "req-2");
    forged.eid = p.eid;
    let err = b.on_propose(&na, forged).await.unwrap_err();
    assert!(
        matches!(err.cause(), NodeError::PermissionDenied(m) if m.contains("does not match")),
        "{err}"
    );

    // The refusal survives a restart.
    drop(a);
    c.stop_node(0).await;
    c.start_node(0).await.unwrap();
    let a = c.nodes[0].as_ref().unwrap().node.clone();
    let err = a.on_propose(&nb, p).await.unwrap_err();
    assert!(
        matches!(err.cause(), NodeError::PermissionDenied(m) if m.contains("used before")),
        "{err}"
    );
    drop((a, b));
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sender_is_the_certificate_identity_not_anything_in_the_message() {
    use thresig::pki::{Layout, Role};
    use thresig::proto::peer::{peer_client::PeerClient, Envelope};
    use thresig::transport::tls::{client_config, TlsFiles};

    let (_dir, c) = cluster(&["a", "b", "c"]).await;
    c.client(0, ADMIN)
        .unwrap()
        .create_key("k", 2, &[])
        .await
        .unwrap();
    let (na, nc) = (NodeName::parse("a").unwrap(), NodeName::parse("c").unwrap());
    let req = client_request("k", [0x44; 32], "", "r", None);
    let p = sign_proposal(&c, &req, 0, &["a", "c"], vec![9u8; 32]);
    let eid = p.eid;

    // Node b (authenticated by its certificate) injects round-1 and round-2
    // messages into a's session between a and c before it starts. The
    // envelope has no sender field; b's payload claims nothing b can use.
    let l = Layout {
        dir: c.layout.dir.clone(),
    };
    let tls = TlsFiles {
        ca: l.ca_cert(),
        cert: l.cert(Role::Node, "b"),
        key: l.key(Role::Node, "b"),
        crl: None,
        crl_grace: None,
    };
    let ch = thresig::transport::dial(
        c.configs[0].listen_peer.into(),
        na.clone(),
        client_config(&tls).unwrap(),
        "thresig.local".into(),
        thresig::transport::Connect {
            timeout: Duration::from_secs(3),
            attempts: 1,
        },
    )
    .unwrap();
    let mut as_b = PeerClient::new(ch);
    for round in [1, 2] {
        let env = Envelope {
            wire_version: thresig::node::WIRE_VERSION,
            eid: eid.as_bytes().to_vec(),
            round,
            payload: vec![0xEE; 64],
        };
        as_b.deliver(env).await.unwrap();
    }

    // Had a attributed those messages to c, it would abort blaming c; it drops them as b's.
    let a = c.nodes[0].as_ref().unwrap().node.clone();
    let cn = c.nodes[2].as_ref().unwrap().node.clone();
    let (ra, rc) = tokio::join!(a.on_propose(&nc, p.clone()), cn.on_propose(&na, p));
    let (Outcome::Sign(sa), Outcome::Sign(sc)) = (ra.unwrap(), rc.unwrap()) else {
        panic!("not a signature")
    };
    assert_eq!(sa, sc);
    // And a blames b, whose certificate carried them: both dropped messages
    // are counted against b, none against c.
    let nb = NodeName::parse("b").unwrap();
    assert_eq!(
        a.outsider_messages(&nb),
        2,
        "the injected messages were not blamed on b"
    );
    assert_eq!(a.outsider_messages(&nc), 0, "c was blamed for b's messages");
    drop((a, cn));
    c.stop().await;
}
