//! Resharing (issue 3): a key moves 2-of-3 {a,b,c} -> 3-of-4 {a,b,c,d} ->
//! 2-of-3 {b,c,d} -> 2-of-2 {c,d}. After each step the public key is the
//! same, the new committee signs, and a node that left cannot take part and
//! no longer stores a share.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{check_signature, client_request, cluster, sign_proposal, ADMIN, CLIENT};
use thresig::cluster::LocalCluster;
use thresig::domain::{DerivationPath, KeyId, NodeName};
use thresig::node::NodeError;
use thresig::storage::{KeyState, StorageError};

const NAMES: [&str; 4] = ["a", "b", "c", "d"];

fn node<'a>(c: &'a LocalCluster, name: &str) -> &'a thresig::node::Node {
    let i = NAMES.iter().position(|n| *n == name).unwrap();
    &c.nodes[i].as_ref().unwrap().node
}

fn idx(name: &str) -> usize {
    NAMES.iter().position(|n| *n == name).unwrap()
}

/// One reshare through `via`, then every check the acceptance asks for.
async fn step(
    c: &LocalCluster,
    via: &str,
    committee: &[&str],
    t: u32,
    pk: &[u8],
    chain_code: &[u8; 32],
    epoch: u64,
) {
    let id = KeyId::parse("moving").unwrap();
    let old = node(c, via).key(&id).unwrap();
    let new: Vec<String> = committee.iter().map(|s| (*s).to_owned()).collect();
    let r = c
        .client(idx(via), ADMIN)
        .unwrap()
        .reshare_key("moving", &new, t)
        .await
        .unwrap();
    assert_eq!((r.old_epoch, r.new_epoch), (epoch - 1, epoch));
    assert!(r.public_key_unchanged);
    let info = r.key.unwrap();
    assert_eq!(info.public_key, pk);
    assert_eq!((info.committee.clone(), info.threshold), (new.clone(), t));
    assert!(r.not_retired.is_empty(), "{:?}", r.not_retired);
    let left: Vec<&String> = old.committee.iter().filter(|n| !new.contains(n)).collect();
    assert_eq!(r.retired.iter().collect::<Vec<_>>(), left);

    // Every new member holds the new epoch, with the new committee and
    // threshold, and only that epoch's share.
    for m in committee {
        let rec = node(c, m).key(&id).unwrap();
        assert_eq!(
            (rec.epoch, rec.threshold, rec.state.clone()),
            (epoch, t as u8, KeyState::Active),
            "node {m}"
        );
        assert_eq!(rec.committee, new, "node {m}");
        assert_eq!(rec.public_key, pk, "node {m}");
        let share = node(c, m).store().share(&id, epoch).unwrap();
        let share = thresig::protocol::KeyShare::decode(rec.key_type, share.expose()).unwrap();
        assert_eq!(share.parameters().0, t as u8);
        assert!(
            !node(c, m).store().has_share(&id, epoch - 1).unwrap(),
            "node {m} still stores its epoch {} share",
            epoch - 1
        );
    }
    // Every node that left: record retired, no share of any epoch.
    for gone in &left {
        let n = node(c, gone);
        assert_eq!(n.key(&id).unwrap().state, KeyState::Retired, "node {gone}");
        for e in [epoch - 1, epoch] {
            assert!(
                matches!(n.store().share(&id, e), Err(StorageError::NotFound(_))),
                "node {gone} still stores a share of epoch {e}"
            );
        }
    }

    // The new committee signs, each member coordinating; checked with k256.
    for (k, m) in committee.iter().enumerate() {
        let d = [epoch as u8 * 16 + k as u8; 32];
        let resp = c
            .client(idx(m), CLIENT)
            .unwrap()
            .sign("moving", d, "", "")
            .await
            .unwrap();
        check_signature(&resp, &d, pk);
        assert_eq!(resp.epoch, epoch);
        assert_eq!(resp.participants.len(), t as usize);
    }
    // A derived path too.
    let d = [0xd0 + epoch as u8; 32];
    let resp = c
        .client(idx(committee[0]), CLIENT)
        .unwrap()
        .sign("moving", d, "m/3/4", "")
        .await
        .unwrap();
    let (child, _) = thresig::bip32::derive_public(
        thresig::domain::KeyType::Secp256k1,
        pk,
        chain_code,
        &DerivationPath::parse("m/3/4").unwrap(),
    )
    .unwrap();
    check_signature(&resp, &d, &child);

    // A node that left can take part in nothing: asked to coordinate, it
    // refuses; a signing session that includes it is refused by the new
    // members (it is not in the committee) and by it (its share is gone).
    for gone in &left {
        let err = c
            .client(idx(gone), CLIENT)
            .unwrap()
            .sign("moving", [1; 32], "", "")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("retired"), "{err}");

        let mut participants: Vec<&str> = committee[..t as usize - 1].to_vec();
        participants.push(gone.as_str());
        let proposal = |rid: &str| {
            sign_proposal(
                c,
                &client_request("moving", [2; 32], "", rid, None),
                epoch,
                &participants,
                vec![9u8; 32],
            )
        };
        let gone_name = NodeName::parse(gone).unwrap();
        let member = NodeName::parse(committee[0]).unwrap();
        let err = node(c, committee[0])
            .on_propose(&gone_name, proposal(&format!("with-{gone}-1")))
            .await
            .unwrap_err();
        assert!(
            matches!(err.cause(), NodeError::NotInCommittee(m) if m.contains(gone.as_str())),
            "member accepted a session with {gone}: {err}"
        );
        let err = node(c, gone)
            .on_propose(&member, proposal(&format!("with-{gone}-2")))
            .await
            .unwrap_err();
        assert!(
            matches!(err.cause(), NodeError::NotInCommittee(m) if m.contains("retired")),
            "{gone} took part: {err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reshare_moves_the_key_through_three_committees_and_retires_who_left() {
    let (_dir, c) = cluster(&NAMES).await;
    let committee: Vec<String> = ["a", "b", "c"].iter().map(|s| (*s).to_owned()).collect();
    let info = c
        .client(0, ADMIN)
        .unwrap()
        .create_key("moving", 2, &committee)
        .await
        .unwrap();
    let pk = info.public_key.clone();
    let cc: [u8; 32] = info.chain_code.as_slice().try_into().unwrap();
    let id = KeyId::parse("moving").unwrap();
    assert!(node(&c, "d").key(&id).is_err(), "d holds nothing yet");

    // Refused without side effects: a bad threshold, a node twice, an
    // unknown node, and a no-op.
    let mut admin = c.client(0, ADMIN).unwrap();
    for (committee, t, why) in [
        (vec!["a", "b"], 3, "threshold"),
        (vec!["a", "a", "b"], 2, "twice"),
        (vec!["a", "b", "zz"], 2, "roster"),
        (vec!["a", "b", "c"], 2, "rotate"),
    ] {
        let committee: Vec<String> = committee.iter().map(|s| (*s).to_owned()).collect();
        let err = admin
            .reshare_key("moving", &committee, t)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(tonic::Code::InvalidArgument), "{err}");
        assert!(err.to_string().contains(why), "{err}");
    }
    assert_eq!(node(&c, "a").key(&id).unwrap().epoch, 0);

    step(&c, "a", &["a", "b", "c", "d"], 3, &pk, &cc, 1).await;
    step(&c, "b", &["b", "c", "d"], 2, &pk, &cc, 2).await;
    // Coordinated by b, which is the node that leaves.
    step(&c, "b", &["c", "d"], 2, &pk, &cc, 3).await;

    // A rotation on the final committee still works.
    let r = c
        .client(idx("d"), ADMIN)
        .unwrap()
        .rotate_key("moving")
        .await
        .unwrap();
    assert_eq!((r.new_epoch, r.public_key_unchanged), (4, true));
    let d = [0x44; 32];
    check_signature(
        &c.client(idx("c"), CLIENT)
            .unwrap()
            .sign("moving", d, "", "")
            .await
            .unwrap(),
        &d,
        &pk,
    );
    c.stop().await;
}

/// A node that held the key (here retired by a reshare) joins a later
/// reshare only of the same key: a hostile coordinator with approvals for
/// a reshare back to {a, b, c} cannot make c take a record under another
/// public key (its accomplices' key), whatever epoch and dealers it names.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_former_member_joins_only_the_same_key() {
    use thresig::client::AdminOp;
    use thresig::node::{Operation, Proposal};
    let (_dir, c) = cluster(&NAMES).await;
    let old: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
    c.client(0, ADMIN)
        .unwrap()
        .create_key("k", 2, &old)
        .await
        .unwrap();
    let new: Vec<String> = ["a", "b", "d"].map(String::from).to_vec();
    let r = c
        .client(0, ADMIN)
        .unwrap()
        .reshare_key("k", &new, 2)
        .await
        .unwrap();
    assert!(r.not_retired.is_empty(), "{r:?}");
    let id = KeyId::parse("k").unwrap();
    assert_eq!(node(&c, "c").key(&id).unwrap().state, KeyState::Retired);

    // Hostile a: an approved reshare back to {a, b, c}, with a record of the
    // key at epoch 1 whose public key is another.
    let mut req = common::admin_request(AdminOp::Reshare, "k");
    req.committee = ["a", "b", "c"]
        .map(|n| NodeName::parse(n).unwrap())
        .to_vec();
    req.threshold = 2;
    let signed = common::approved_by(&c, req, &[ADMIN]);
    let nonce = common::bound_nonce(&signed, 3);
    let mut forged = node(&c, "a").key(&id).unwrap();
    forged.public_key[1] ^= 1;
    let dealers = vec![NodeName::parse("a").unwrap(), NodeName::parse("d").unwrap()];
    let committee = signed.request.committee.clone();
    let eid = thresig::node::ops::reshare::eid(&forged, &dealers, &committee, 2, &nonce);
    let p = Proposal {
        eid,
        nonce,
        admin: Some(Box::new(signed)),
        op: Operation::Reshare {
            key_id: id.clone(),
            epoch: forged.epoch,
            dealers,
            committee,
            threshold: 2,
            record: Box::new(forged),
        },
    };
    let refused = common::Hostile::as_node(&c, idx("a")).propose("c", p).await;
    assert!(
        matches!(&refused, Err(e) if e.to_string().contains("names another public key")),
        "{refused:?}"
    );
    assert_eq!(node(&c, "c").key(&id).unwrap().state, KeyState::Retired);
    c.stop().await;
}
