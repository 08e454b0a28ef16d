//! A signature at a slot exists only once the committee nodes outside the
//! session hold the slot (or were passed over after the gossip's timeout):
//! the coordinator's partial signature waits for the slot gossip, which
//! runs alongside the session's first rounds. Runs alone in this binary
//! because fault points are process-wide.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::{check_signature, ADMIN, CLIENT};
use thresig::client::Slot;
use thresig::cluster::LocalCluster;
use thresig::domain::KeyId;
use thresig::node::faults::{self, points};
use thresig::node::Timeouts;

/// How long the gossip waits for a node (the ping timeout) before it
/// passes it over, and how long a signing round waits: both far longer
/// than the hold below.
const PING: Duration = Duration::from_secs(20);
/// How long the held node stays held once the session is running.
const HELD_FOR: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partial_signature_waits_for_the_slot_gossip() {
    common::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let timeouts = Timeouts {
        round: Duration::from_secs(40),
        ping: PING,
    };
    let c = LocalCluster::start(dir.path(), &["a", "b", "c"], timeouts)
        .await
        .unwrap();
    let info = c
        .client(0, ADMIN)
        .unwrap()
        .create_key("val", 2, &[])
        .await
        .unwrap();
    let slot = |height| Slot {
        scope: "chain:val-1".into(),
        height,
        round: 0,
        step: 0,
    };
    let mut client = c.client(0, CLIENT).unwrap();
    // Which node a takes with it, and which it leaves out of its sessions
    // (that one gets the slot by gossip).
    let first = client
        .sign_at("val", [0x01; 32], "", "", slot(1))
        .await
        .unwrap();
    check_signature(&first, &[0x01; 32], &info.public_key);
    let index = |n: &str| c.configs.iter().position(|cfg| cfg.name.as_str() == n);
    let signer = first
        .participants
        .iter()
        .filter_map(|p| index(p))
        .find(|i| *i != 0)
        .unwrap();
    let outside = (0..3)
        .find(|i| !first.participants.iter().any(|p| index(p) == Some(*i)))
        .unwrap();
    let name = c.configs[outside].name.to_string();
    let key = KeyId::parse("val").unwrap();
    let node = |i: usize| &c.nodes[i].as_ref().unwrap().node;
    let watermark = |i: usize| {
        node(i)
            .store()
            .watermark(&key, "chain:val-1")
            .unwrap()
            .map(|w| w.height)
    };
    // Unhindered, the node outside holds the slot by the time the
    // signature is back.
    assert_eq!(watermark(outside), Some(1), "node {name}");

    // Held before it takes the gossip of the next slot: the other signer
    // admits the session (its ledger entry is written) but gets no
    // signature while the gossip waits, because the coordinator's partial
    // signature does not leave.
    faults::hold(&name, points::BEFORE_GOSSIP);
    let sign = tokio::spawn(async move {
        client
            .sign_at("val", [0x02; 32], "", "second", slot(2))
            .await
    });
    let entry = |i: usize| node(i).store().ledger_get(&key, "second").unwrap();
    // Both signers admit the session while the gossip waits: the other
    // signer at once, the coordinator after its status probe (the gossip
    // runs alongside the session, not before it).
    for (i, who) in [(signer, "the other signer"), (0, "the coordinator")] {
        let until = Instant::now() + Duration::from_secs(30);
        while entry(i).is_none() {
            assert!(
                Instant::now() < until,
                "{who} did not admit the session while the gossip waited"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    // The session is open; three message rounds take milliseconds here.
    // For as long as the node outside is held, there is no signature. (A
    // check that cannot fail falsely: with the wait in place no signature
    // can exist, however slow this machine is.)
    let held_since = Instant::now();
    while held_since.elapsed() < HELD_FOR {
        assert!(
            entry(signer).unwrap().result.is_none(),
            "node {} assembled the signature while the slot gossip to {name} was still waiting",
            c.configs[signer].name
        );
        assert_eq!(watermark(outside), Some(1), "node {name}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    faults::release_holds();
    let second = sign.await.unwrap().unwrap();
    check_signature(&second, &[0x02; 32], &info.public_key);
    // Released, the node outside took the slot before any signature
    // was assembled.
    assert_eq!(watermark(outside), Some(2), "node {name}");
}
