//! Crash safety of rotation and reshare (checklist 22): a node dies at each
//! step (an injected crash point, then a restart from its data directory).
//! Rotation: afterwards every node has exactly one active epoch whose share
//! opens, and the key signs and rotates again. Reshare: see
//! `a_node_killed_at_any_reshare_step_leaves_the_key_whole_on_one_committee`.
//! Crash points are process-wide: the cases run one at a time.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{check_signature, cluster, ADMIN, CLIENT};
use thresig::cluster::LocalCluster;
use thresig::domain::KeyId;
use thresig::node::faults::{self, points};
use thresig::storage::KeyState;

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_killed_at_any_rotation_step_comes_back_on_one_whole_epoch() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (_dir, mut c) = cluster(&["a", "b", "c"]).await;
    let info = c
        .client(0, ADMIN)
        .unwrap()
        .create_key("crash", 2, &[])
        .await
        .unwrap();
    let id = KeyId::parse("crash").unwrap();
    for point in points::ALL {
        let start_epoch = c.nodes[0].as_ref().unwrap().node.key(&id).unwrap().epoch;
        faults::arm("b", point);
        let err = c
            .client(0, ADMIN)
            .unwrap()
            .rotate_key("crash")
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("node b") || err.to_string().contains("b ("),
            "{point}: error does not name b: {err}"
        );
        // "kill -9" b, then restart it from its data directory.
        c.stop_node(1).await;
        faults::disarm_all();
        c.start_node(1).await.unwrap();

        for i in 0..3 {
            let node = c.nodes[i].as_ref().unwrap().node.clone();
            let rec = node.key(&id).unwrap();
            assert!(
                rec.epoch == start_epoch || rec.epoch == start_epoch + 1,
                "{point}: node {i} at epoch {}",
                rec.epoch
            );
            assert_eq!(
                rec.public_key, info.public_key,
                "{point}: node {i} public key changed"
            );
            let share = node
                .store()
                .share(&id, rec.epoch)
                .unwrap_or_else(|e| panic!("{point}: node {i} cannot open its active share: {e}"));
            let share = thresig::protocol::KeyShare::decode(rec.key_type, share.expose())
                .unwrap_or_else(|e| panic!("{point}: node {i} cannot decode its share: {e}"));
            assert_eq!(share.public_key().unwrap().to_vec(), info.public_key);
        }
        // The key signs through b itself, the node that may have missed the
        // activation: it learns the proof from a node ahead of it, activates
        // the share it staged and signs at the new epoch.
        let d = [point.len() as u8; 32];
        check_signature(
            &c.client(1, CLIENT)
                .unwrap()
                .sign("crash", d, "", "")
                .await
                .unwrap(),
            &d,
            &info.public_key,
        );
        // Then a complete rotation succeeds and every node agrees on the epoch.
        let r = c
            .client(0, ADMIN)
            .unwrap()
            .rotate_key("crash")
            .await
            .unwrap_or_else(|e| panic!("{point}: rotation after recovery failed: {e}"));
        let epochs: Vec<u64> = (0..3)
            .map(|i| c.nodes[i].as_ref().unwrap().node.key(&id).unwrap().epoch)
            .collect();
        assert_eq!(
            epochs,
            vec![r.new_epoch; 3],
            "{point}: nodes disagree on the epoch"
        );
        for coord in 0..3 {
            let d = [coord as u8 + 0x40; 32];
            check_signature(
                &c.client(coord, CLIENT)
                    .unwrap()
                    .sign("crash", d, "", "")
                    .await
                    .unwrap(),
                &d,
                &info.public_key,
            );
        }
    }
    c.stop().await;
}

const NAMES: [&str; 4] = ["a", "b", "c", "d"];

fn index(name: &str) -> usize {
    NAMES.iter().position(|n| *n == name).unwrap()
}

fn record(c: &LocalCluster, i: usize) -> thresig::storage::KeyRecord {
    let id = KeyId::parse("k").unwrap();
    c.nodes[i].as_ref().unwrap().node.key(&id).unwrap()
}

/// Who dies: the member that stays, the one that joins, the one that leaves.
#[derive(Debug, Clone, Copy)]
enum Victim {
    Staying,
    Joining,
    Leaving,
}

/// Reshares the key to the other committee; returns the committee it was
/// on and the one it was sent to.
async fn reshare_away(c: &LocalCluster) -> Result<Vec<String>, String> {
    let now = record(c, 0).committee;
    let to: Vec<String> = if now.contains(&"c".to_owned()) {
        vec!["a".into(), "b".into(), "d".into()]
    } else {
        vec!["a".into(), "b".into(), "c".into()]
    };
    match c.client(0, ADMIN).unwrap().reshare_key("k", &to, 2).await {
        Ok(r) if r.not_retired.is_empty() => Ok(to),
        Ok(r) => Err(format!("not retired: {:?}", r.not_retired)),
        Err(e) => Err(e.to_string()),
    }
}

/// Reshare between the committees {a, b, c} and {a, b, d}: a member that
/// stays (b), one that joins and one that leaves die at each step. The key
/// ends whole on one committee: every member holds the same epoch and a
/// share that opens under the key's public key, the key signs through each
/// member, the node outside holds no share of that epoch, and the next
/// reshare succeeds (also with a member left behind by a reshare whose
/// retirement it missed).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_killed_at_any_reshare_step_leaves_the_key_whole_on_one_committee() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (_dir, mut c) = cluster(&NAMES).await;
    let committee: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
    let info = c
        .client(0, ADMIN)
        .unwrap()
        .create_key("k", 2, &committee)
        .await
        .unwrap();
    let cases = [
        (Victim::Staying, points::BEFORE_STAGE),
        (Victim::Joining, points::AFTER_STAGE),
        (Victim::Staying, points::BEFORE_ACTIVATE),
        (Victim::Joining, points::AFTER_ACTIVATE),
        (Victim::Joining, points::BEFORE_STAGE),
        (Victim::Staying, points::AFTER_STAGE),
        (Victim::Joining, points::BEFORE_ACTIVATE),
        (Victim::Staying, points::AFTER_ACTIVATE),
        (Victim::Leaving, points::BEFORE_RETIRE),
        (Victim::Leaving, points::AFTER_RETIRE),
    ];
    for (n, (victim, point)) in cases.into_iter().enumerate() {
        let from = record(&c, 0).committee;
        let (joining, leaving) = if from.contains(&"c".to_owned()) {
            ("d", "c")
        } else {
            ("c", "d")
        };
        let who = match victim {
            Victim::Staying => "b",
            Victim::Joining => joining,
            Victim::Leaving => leaving,
        };
        let case = format!("{who} ({victim:?}) at {point}");
        faults::arm(who, point);
        let outcome = reshare_away(&c).await;
        // "kill -9" the victim, then restart it from its data directory.
        let v = index(who);
        c.stop_node(v).await;
        faults::disarm_all();
        c.start_node(v).await.unwrap();
        println!("{case}: reshare {outcome:?}");

        // The committee the key is on, as the coordinator a holds it; a
        // request through each member brings a member that missed the
        // activation up to date first.
        for round in 0..2 {
            let on = record(&c, 0);
            for m in &on.committee {
                let d = [(n * 16 + round * 4 + index(m)) as u8; 32];
                let resp = c
                    .client(index(m), CLIENT)
                    .unwrap()
                    .sign("k", d, "", "")
                    .await
                    .unwrap_or_else(|e| panic!("{case}: signing through {m}: {e}"));
                check_signature(&resp, &d, &info.public_key);
            }
        }
        let on = record(&c, 0);
        for m in &on.committee {
            let rec = record(&c, index(m));
            assert_eq!(
                (rec.epoch, &rec.committee, &rec.state),
                (on.epoch, &on.committee, &KeyState::Active),
                "{case}: member {m}"
            );
            let node = c.nodes[index(m)].as_ref().unwrap().node.clone();
            let share = node
                .store()
                .share(&KeyId::parse("k").unwrap(), rec.epoch)
                .unwrap_or_else(|e| panic!("{case}: {m} cannot open its share: {e}"));
            let share = thresig::protocol::KeyShare::decode(rec.key_type, share.expose()).unwrap();
            assert_eq!(
                share.public_key().unwrap().to_vec(),
                info.public_key,
                "{case}: {m}"
            );
        }
        // The node outside the committee holds no share of its epoch.
        let outside = NAMES
            .iter()
            .find(|x| !on.committee.contains(&(**x).to_owned()))
            .unwrap();
        let out = c.nodes[index(outside)].as_ref().unwrap().node.clone();
        assert!(
            !out.store()
                .has_share(&KeyId::parse("k").unwrap(), on.epoch)
                .unwrap(),
            "{case}: {outside} holds a share of epoch {}",
            on.epoch
        );
        // The next reshare (back or on) succeeds.
        reshare_away(&c)
            .await
            .unwrap_or_else(|e| panic!("{case}: the next reshare failed: {e}"));
    }
    c.stop().await;
}
