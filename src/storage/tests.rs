use super::*;
use crate::domain::ExecutionId;
use crate::domain::KeyType;
use crate::protocol::inproc;
use crate::storage::RotationProof;
use redb::ReadableTable;
use std::time::Duration;

/// A release window long enough for any test.
const WINDOW: Duration = Duration::from_secs(600);

fn rec(id: &KeyId, pk: [u8; 33]) -> KeyRecord {
    KeyRecord {
        schema: records::SCHEMA,
        key_id: id.clone(),
        public_key: pk.to_vec(),
        chain_code: [0; 32],
        committee: vec!["a".into(), "b".into()],
        threshold: 2,
        epoch: 0,
        state: KeyState::Active,
        package_hash: [0; 32],
        package: String::new(),
        rotation: None,
        created_unix: 0,
        key_type: KeyType::Secp256k1,
        lifecycle_seq: 0,
    }
}

/// A 2-of-2 keygen's output, each share as the bytes the store seals.
struct Out {
    public_key: [u8; 33],
    share: SecretBytes,
}

fn shares() -> Vec<Out> {
    let ps = (1..=2)
        .map(|i| crate::protocol::scheme::keygen(KeyType::Secp256k1, 2, 2, i, &[3; 32]).unwrap())
        .collect();
    inproc::run(ps, None)
        .into_iter()
        .map(|r| {
            let o = r.unwrap();
            Out {
                public_key: o.public_key,
                share: SecretBytes::new(o.share.encode().unwrap().to_vec()),
            }
        })
        .collect()
}

/// A store of node `a` in a fresh directory (kept while the `TempDir`
/// lives), holding key `k1` with party 1's share of a 2-of-2 keygen (`out`).
fn store_with_key() -> (tempfile::TempDir, Store, Vec<Out>, KeyId) {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeName::parse("a").unwrap();
    let store = Store::open(dir.path(), &node, &SecretBytes::new(b"p".to_vec())).unwrap();
    let out = shares();
    let id = KeyId::parse("k1").unwrap();
    store
        .insert_key(&rec(&id, out[0].public_key), &out[0].share)
        .unwrap();
    (dir, store, out, id)
}

#[test]
fn share_round_trips_and_is_bound_to_its_slot() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeName::parse("a").unwrap();
    let pass = SecretBytes::new(b"correct horse".to_vec());
    let store = Store::open(dir.path(), &node, &pass).unwrap();
    let out = shares();
    let id = KeyId::parse("k1").unwrap();
    store
        .insert_key(&rec(&id, out[0].public_key), &out[0].share)
        .unwrap();
    let back = store.share(&id, 0).unwrap();
    assert_eq!(back.expose(), out[0].share.expose());
    assert!(matches!(
        store.insert_key(&rec(&id, out[0].public_key), &out[0].share),
        Err(StorageError::Conflict(_))
    ));
    // A sealed record moved to another epoch or node does not open.
    let sealed = store.kek.seal_share(&out[0].share, &id, 0, &node).unwrap();
    assert!(store.kek.open_share(&sealed, &id, 1, &node).is_err());
    assert!(store
        .kek
        .open_share(&sealed, &id, 0, &NodeName::parse("b").unwrap())
        .is_err());
    assert!(store
        .kek
        .open_share(&sealed, &KeyId::parse("k2").unwrap(), 0, &node)
        .is_err());
    let mut flipped = sealed.clone();
    flipped[30] ^= 1;
    assert!(store.kek.open_share(&flipped, &id, 0, &node).is_err());
}

#[test]
fn eids_are_single_use_and_ledger_refuses_a_second_digest() {
    let dir = tempfile::tempdir().unwrap();
    let (node, pass) = (
        NodeName::parse("a").unwrap(),
        SecretBytes::new(b"p".to_vec()),
    );
    let store = Store::open(dir.path(), &node, &pass).unwrap();
    let eid = ExecutionId::from_slice(&[5; 32]).unwrap();
    assert!(store.claim_eid(&eid, 1).unwrap());
    assert!(!store.claim_eid(&eid, 2).unwrap());
    // An admin request id is bound to the first nonce it came under and
    // runs each step once, also after the store is reopened.
    let (e1, e2) = (
        ExecutionId::from_slice(&[11; 32]).unwrap(),
        ExecutionId::from_slice(&[12; 32]).unwrap(),
    );
    assert!(store
        .use_admin_request("adm-1", &[1; 64], "repair", &e1)
        .unwrap());
    assert!(
        store
            .use_admin_request("adm-1", &[1; 64], "retire", &e1)
            .unwrap(),
        "same session"
    );
    assert!(
        store
            .use_admin_request("adm-1", &[1; 64], "refresh", &e2)
            .unwrap(),
        "next step"
    );
    assert!(
        !store
            .use_admin_request("adm-1", &[2; 64], "keygen", &e1)
            .unwrap(),
        "other nonce"
    );
    drop(store);
    let store = Store::open(dir.path(), &node, &pass).unwrap();
    let e3 = ExecutionId::from_slice(&[13; 32]).unwrap();
    assert!(
        !store
            .use_admin_request("adm-1", &[1; 64], "refresh", &e3)
            .unwrap(),
        "a replayed step"
    );
    assert!(store
        .use_admin_request("adm-1", &[1; 64], "refresh", &e2)
        .unwrap());
    assert!(store
        .use_admin_request("adm-2", &[2; 64], "refresh", &e3)
        .unwrap());
    let id = KeyId::parse("k").unwrap();
    let e = LedgerEntry {
        schema: 1,
        request_id: "r1".into(),
        digest: [1; 32],
        path: "m".into(),
        eid: [0; 32],
        unix: 0,
        result: None,
        slot: None,
    };
    store.ledger_commit(&id, &e).unwrap();
    store.ledger_commit(&id, &e).unwrap();
    let other = LedgerEntry {
        digest: [2; 32],
        ..e.clone()
    };
    assert!(matches!(
        store.ledger_commit(&id, &other),
        Err(StorageError::Conflict(_))
    ));
    let other_slot = LedgerEntry {
        slot: Some("s 1/0/0".into()),
        ..e.clone()
    };
    assert!(matches!(
        store.ledger_commit(&id, &other_slot),
        Err(StorageError::Conflict(_))
    ));
    assert_eq!(store.ledger_get(&id, "r1").unwrap(), Some(e));

    // Slot watermarks: up is fine, down is refused, the same position only
    // with the same digest; scopes and keys are independent; reopening keeps them.
    store
        .watermark_commit(&id, "v", (5, 0, 1), [1; 32], "a", b"")
        .unwrap();
    store
        .watermark_commit(&id, "v", (5, 0, 1), [1; 32], "a2", b"")
        .unwrap();
    let e = store
        .watermark_commit(&id, "v", (5, 0, 1), [2; 32], "b", b"")
        .unwrap_err();
    assert!(e.to_string().contains("another digest"), "{e}");
    let e = store
        .watermark_commit(&id, "v", (4, 9, 9), [1; 32], "c", b"")
        .unwrap_err();
    assert!(e.to_string().contains("below its watermark"), "{e}");
    store
        .watermark_commit(&id, "v", (5, 1, 0), [3; 32], "d", b"")
        .unwrap();
    store
        .watermark_commit(&id, "other", (1, 0, 0), [4; 32], "e", b"")
        .unwrap();
    store
        .watermark_commit(
            &KeyId::parse("k2").unwrap(),
            "v",
            (1, 0, 0),
            [5; 32],
            "f",
            b"",
        )
        .unwrap();
    drop(store);
    let store = Store::open(dir.path(), &node, &pass).unwrap();
    let w = store.watermark(&id, "v").unwrap().unwrap();
    assert_eq!((w.height, w.round, w.step, w.digest), (5, 1, 0, [3; 32]));
    assert!(store
        .watermark_commit(&id, "v", (5, 0, 9), [3; 32], "g", b"")
        .is_err());
}

#[test]
fn edited_key_record_is_detected() {
    let (_dir, store, out, id) = store_with_key();
    assert_eq!(
        store.key(&id).unwrap().unwrap().public_key,
        out[0].public_key.to_vec()
    );
    // Swap in another public key with a valid JSON body but the old MAC.
    let tx = store.db.begin_write().unwrap();
    {
        let mut keys = tx.open_table(KEYS).unwrap();
        let raw = keys.get(id.as_str()).unwrap().unwrap().value().to_vec();
        let (body, mac) = raw.split_at(raw.len() - 32);
        let mut edited = KeyRecord::decode(body).unwrap();
        edited.public_key[0] ^= 1; // 02 <-> 03: the other point with this x
        let mut forged = edited.encode().unwrap();
        forged.extend_from_slice(mac);
        keys.insert(id.as_str(), forged.as_slice()).unwrap();
    }
    tx.commit().unwrap();
    assert!(matches!(store.key(&id), Err(StorageError::Corrupt { .. })));
    assert!(matches!(store.keys(), Err(StorageError::Corrupt { .. })));
}

#[test]
fn staged_epoch_activates_atomically_and_retires_the_old_share() {
    let (_dir, store, out, id) = store_with_key();
    let proof = RotationProof {
        eid: [7; 32],
        confirmation: [1; 32],
    };
    assert!(
        store
            .stage_epoch(&id, 2, &out[1].share, proof, b"pkg")
            .is_err(),
        "may only stage the next epoch"
    );
    store
        .stage_epoch(&id, 1, &out[1].share, proof, b"pkg")
        .unwrap();
    // Staged, not active: epoch 0 still serves.
    assert_eq!(store.key(&id).unwrap().unwrap().epoch, 0);
    assert!(store.share(&id, 0).is_ok());
    assert_eq!(store.pending(&id).unwrap(), Some((1, proof)));
    let other = RotationProof {
        eid: [7; 32],
        confirmation: [2; 32],
    };
    assert!(matches!(
        store.activate_epoch(&id, 1, other, b"cert"),
        Err(StorageError::Conflict(_))
    ));
    assert_eq!(store.activation(&id).unwrap(), None);
    assert!(store.activate_epoch(&id, 1, proof, b"cert").unwrap());
    assert_eq!(
        store.activation(&id).unwrap().as_deref(),
        Some(&b"cert"[..]),
        "the certificate is kept with the epoch it activated"
    );
    assert!(
        !store.activate_epoch(&id, 1, proof, b"cert").unwrap(),
        "activation is idempotent"
    );
    assert!(matches!(
        store.activate_epoch(&id, 1, other, b"cert"),
        Err(StorageError::Conflict(_))
    ));
    let rec1 = store.key(&id).unwrap().unwrap();
    assert_eq!((rec1.epoch, rec1.rotation), (1, Some(proof)));
    assert_eq!(rec1.package, hex::encode(b"pkg"));
    assert!(
        matches!(store.share(&id, 0), Err(StorageError::NotFound(_))),
        "old epoch share must be gone"
    );
    assert_eq!(store.share(&id, 1).unwrap().expose(), out[1].share.expose());
    assert_eq!(store.pending(&id).unwrap(), None);

    // An abandoned rotation's staged share is discarded and cannot be activated.
    let abandoned = RotationProof {
        eid: [9; 32],
        confirmation: [3; 32],
    };
    store
        .stage_epoch(&id, 2, &out[0].share, abandoned, b"pkg2")
        .unwrap();
    assert!(
        !store.discard_staged(&id, &[8; 32], WINDOW).unwrap(),
        "another eid must not discard it"
    );
    // Once the release window has closed, the staged rotation is no longer
    // released (another node may be finishing it); within it, it is.
    assert!(matches!(
        store.discard_staged(&id, &[9; 32], Duration::ZERO),
        Err(StorageError::Conflict(_))
    ));
    let staged = store.staged(&id).unwrap().unwrap();
    assert!(staged.staged_ms > 0 && !staged.reshare && staged.proof == abandoned);
    assert!(store.discard_staged(&id, &[9; 32], WINDOW).unwrap());
    assert!(!store.has_share(&id, 2).unwrap());
    assert!(matches!(
        store.activate_epoch(&id, 2, abandoned, b"cert"),
        Err(StorageError::NotFound(_))
    ));
    assert_eq!(store.key(&id).unwrap().unwrap().epoch, 1);
}

#[test]
fn reshare_staging_joins_activates_with_the_new_committee_and_retires() {
    let dir = tempfile::tempdir().unwrap();
    let pass = SecretBytes::new(b"pw".to_vec());
    let a = Store::open(&dir.path().join("a"), &NodeName::parse("a").unwrap(), &pass).unwrap();
    let d = Store::open(&dir.path().join("d"), &NodeName::parse("d").unwrap(), &pass).unwrap();
    let out = shares();
    let id = KeyId::parse("rs").unwrap();
    let record = rec(&id, out[0].public_key);
    a.insert_key(&record, &out[0].share).unwrap();
    let proof = RotationProof {
        eid: [7; 32],
        confirmation: [8; 32],
    };
    let moved = Membership {
        committee: vec!["a".into(), "d".into()],
        threshold: 2,
    };

    // An old member stages beside its active share; activation switches the committee.
    a.stage_reshare(&id, None, 1, &out[1].share, proof, b"pkg", moved.clone())
        .unwrap();
    assert_eq!(a.key(&id).unwrap().unwrap().committee, vec!["a", "b"]);
    assert!(a.activate_epoch(&id, 1, proof, b"cert").unwrap());
    let after = a.key(&id).unwrap().unwrap();
    assert_eq!(
        (after.epoch, after.committee.clone(), after.threshold),
        (1, moved.committee.clone(), 2)
    );
    assert!(!a.has_share(&id, 0).unwrap() && a.has_share(&id, 1).unwrap());
    // A joining record never replaces a live one.
    assert!(matches!(
        a.stage_reshare(
            &id,
            Some(&record),
            1,
            &out[1].share,
            proof,
            b"pkg",
            moved.clone()
        ),
        Err(StorageError::Conflict(_))
    ));

    // A newcomer: the record arrives with the staged share, in the Joining state.
    d.stage_reshare(
        &id,
        Some(&record),
        1,
        &out[1].share,
        proof,
        b"pkg",
        moved.clone(),
    )
    .unwrap();
    assert_eq!(d.key(&id).unwrap().unwrap().state, KeyState::Joining);
    assert_eq!(d.pending(&id).unwrap().map(|p| p.0), Some(1));
    // Abandoned: the share and the record go.
    // A reshare's staging has no release window (nobody finishes one).
    assert!(d.discard_staged(&id, &proof.eid, Duration::ZERO).unwrap());
    assert!(d.key(&id).unwrap().is_none() && !d.has_share(&id, 1).unwrap());
    d.stage_reshare(
        &id,
        Some(&record),
        1,
        &out[1].share,
        proof,
        b"pkg",
        moved.clone(),
    )
    .unwrap();
    assert!(d.activate_epoch(&id, 1, proof, b"cert").unwrap());
    let joined = d.key(&id).unwrap().unwrap();
    assert_eq!(
        (joined.state, joined.epoch, joined.committee),
        (KeyState::Active, 1, moved.committee.clone())
    );

    // Retiring deletes the share and keeps the record; a retired record may be rejoined.
    assert!(d.retire(&id).unwrap());
    assert!(!d.retire(&id).unwrap());
    assert_eq!(d.key(&id).unwrap().unwrap().state, KeyState::Retired);
    assert!(!d.has_share(&id, 1).unwrap());
    assert!(matches!(d.share(&id, 1), Err(StorageError::NotFound(_))));
    let mut at1 = record.clone();
    at1.epoch = 1;
    d.stage_reshare(&id, Some(&at1), 2, &out[1].share, proof, b"pkg", moved)
        .unwrap();
    assert_eq!(d.key(&id).unwrap().unwrap().state, KeyState::Joining);
}

#[test]
fn admission_writes_the_ledger_entry_and_refuses_a_signed_or_conflicting_request() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeName::parse("a").unwrap();
    let store = Store::open(dir.path(), &node, &SecretBytes::new(b"p".to_vec())).unwrap();
    let id = KeyId::parse("k").unwrap();
    let entry = LedgerEntry {
        schema: 1,
        request_id: "r1".into(),
        digest: [1; 32],
        path: "m".into(),
        eid: [0; 32],
        unix: 0,
        result: None,
        slot: None,
    };
    let eid = |b: u8| ExecutionId::from_slice(&[b; 32]).unwrap();
    let admit = |e: u8, entry: &LedgerEntry| {
        store.admit_sign(
            (&eid(e), u64::MAX),
            1,
            (&id, entry),
            None,
            &[],
            AuditEvent::default(),
        )
    };
    assert_eq!(admit(1, &entry).unwrap(), Admission::Admitted);
    // Durable with the admission: no separate ledger write is needed.
    assert_eq!(store.ledger_get(&id, "r1").unwrap(), Some(entry.clone()));
    assert_eq!(admit(1, &entry).unwrap(), Admission::EidUsed);
    // The same request again, unfinished: a new session may run.
    assert_eq!(admit(2, &entry).unwrap(), Admission::Admitted);
    // Another digest under the id: refused, and its eid stays unclaimed.
    let other = LedgerEntry {
        digest: [2; 32],
        ..entry.clone()
    };
    assert!(matches!(
        admit(3, &other).unwrap(),
        Admission::RequestIdUsed(_)
    ));
    assert!(!store.eid_used(&eid(3)).unwrap());
    // Once signed, the request is not admitted again (its signature is
    // returned instead), and nothing is written.
    let result = LedgerResult {
        r: [3; 32],
        s: [4; 32],
        recovery_id: 0,
        public_key: vec![2; 33],
        participants: vec!["a".into(), "b".into()],
        epoch: 0,
    };
    store
        .ledger_complete_lazy(&id, "r1", result.clone())
        .unwrap();
    assert_eq!(admit(4, &entry).unwrap(), Admission::AlreadySigned);
    assert!(!store.eid_used(&eid(4)).unwrap());
    assert_eq!(
        store.ledger_get(&id, "r1").unwrap().and_then(|e| e.result),
        Some(result)
    );
}
