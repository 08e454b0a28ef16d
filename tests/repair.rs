//! Share repair (issue 3): a node that lost its data directory gets its
//! share back from t helpers and signs again; a node that still holds a live
//! share cannot be "repaired".
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{admin_request, approved_by, bound_nonce, check_signature, cluster, ADMIN, CLIENT};
use thresig::client::AdminOp;
use thresig::domain::{KeyId, NodeName};
use thresig::node::{NodeError, Operation, Proposal};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_that_lost_its_data_gets_its_share_back_and_signs() {
    let (_dir, mut c) = cluster(&["a", "b", "c"]).await;
    let info = c
        .client(0, ADMIN)
        .unwrap()
        .create_key("k", 2, &[])
        .await
        .unwrap();
    let id = KeyId::parse("k").unwrap();

    // Refused while c still holds a live share: by the coordinator...
    let err = c
        .client(0, ADMIN)
        .unwrap()
        .repair_key("k", "c")
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("still holds a live share"),
        "{err}"
    );
    // ...and by a helper asked directly, which checks with c itself.
    let (na, nb, nc) = (
        NodeName::parse("a").unwrap(),
        NodeName::parse("b").unwrap(),
        NodeName::parse("c").unwrap(),
    );
    let rec = c.nodes[0].as_ref().unwrap().node.key(&id).unwrap();
    let helpers = vec![na.clone(), nb.clone()];
    let members = vec![na.clone(), nb.clone(), nc.clone()];
    let mut req = admin_request(AdminOp::Repair, "k");
    req.target = Some(nc.clone());
    let signed = approved_by(&c, req, &[ADMIN]);
    let nonce = bound_nonce(&signed, 1);
    let eid = thresig::node::ops::repair::eid(&rec, &nc, &members, &nonce);
    let p = Proposal {
        eid,
        nonce,
        admin: Some(Box::new(signed)),
        op: Operation::Repair {
            key_id: id.clone(),
            target: nc.clone(),
            helpers,
            record: Box::new(rec),
        },
    };
    let err = c.nodes[1]
        .as_ref()
        .unwrap()
        .node
        .on_propose(&na, p)
        .await
        .unwrap_err();
    assert!(
        matches!(err.cause(), NodeError::PermissionDenied(m) if m.contains("still reports a live share")),
        "{err}"
    );

    // A node that reorders the committee in the record (to be handed another
    // party's share) is refused by the helpers, which use their own record.
    let mut forged = c.nodes[0].as_ref().unwrap().node.key(&id).unwrap();
    forged.committee = vec!["c".into(), "b".into(), "a".into()];
    let mut req = admin_request(AdminOp::Repair, "k");
    req.target = Some(nc.clone());
    let signed = approved_by(&c, req, &[ADMIN]);
    let nonce = bound_nonce(&signed, 2);
    let members = vec![na.clone(), nb.clone(), nc.clone()];
    let eid = thresig::node::ops::repair::eid(&forged, &nc, &members, &nonce);
    let p = Proposal {
        eid,
        nonce,
        admin: Some(Box::new(signed)),
        op: Operation::Repair {
            key_id: id.clone(),
            target: nc.clone(),
            helpers: vec![na.clone(), nb.clone()],
            record: Box::new(forged),
        },
    };
    let err = c.nodes[1]
        .as_ref()
        .unwrap()
        .node
        .on_propose(&nc, p)
        .await
        .unwrap_err();
    assert!(
        matches!(err.cause(), NodeError::FailedPrecondition(m) if m.contains("differs")),
        "{err}"
    );

    // c loses its disk: stop, delete the data directory, start empty.
    c.stop_node(2).await;
    std::fs::remove_dir_all(&c.configs[2].data_dir).unwrap();
    c.start_node(2).await.unwrap();
    assert!(c.nodes[2].as_ref().unwrap().node.key(&id).is_err());

    let r = c
        .client(1, ADMIN)
        .unwrap()
        .repair_key("k", "c")
        .await
        .unwrap();
    assert_eq!(r.helpers.len(), 2);
    assert!(!r.helpers.contains(&"c".to_string()));
    let rot = r.rotation.unwrap();
    assert_eq!((rot.old_epoch, rot.new_epoch), (0, 1));
    assert_eq!(rot.key.unwrap().public_key, info.public_key);
    assert_eq!(c.nodes[2].as_ref().unwrap().node.key(&id).unwrap().epoch, 1);

    // c signs: as coordinator (so it is a participant), with each partner.
    for _ in 0..2 {
        let d = [0x31; 32];
        let resp = c
            .client(2, CLIENT)
            .unwrap()
            .sign("k", d, "", "")
            .await
            .unwrap();
        assert!(resp.participants.contains(&"c".to_string()));
        check_signature(&resp, &d, &info.public_key);
    }
    c.stop_node(0).await;
    let d = [0x32; 32];
    let resp = c
        .client(1, CLIENT)
        .unwrap()
        .sign("k", d, "", "")
        .await
        .unwrap();
    let mut pair = resp.participants.clone();
    pair.sort();
    assert_eq!(pair, vec!["b", "c"]);
    check_signature(&resp, &d, &info.public_key);
    c.stop().await;
}
