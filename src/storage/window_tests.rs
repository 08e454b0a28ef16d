//! Rolling windows in the store: a spend is checked and recorded in the
//! same transaction as the admission (a refusal leaves nothing, not even
//! the ledger entry), counted once per entry, and forgotten once it is
//! older than its window.

use super::*;
use crate::domain::ExecutionId;

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeName::parse("a").unwrap();
    let store = Store::open(dir.path(), &node, &SecretBytes::new(b"p".to_vec())).unwrap();
    (dir, store)
}

fn claim<'a>(client: &'a str, entry: &'a str, amount: u128) -> WindowClaim<'a> {
    WindowClaim {
        client,
        scope: "eth:1:value",
        entry,
        amount,
        limit: 10,
        secs: 100,
        knob: "eth.value_per_24h",
        what: "value sent on chain 1 (wei)",
    }
}

#[test]
fn windows_count_each_spend_once_and_refuse_past_the_limit() {
    let (_dir, store) = open();
    let k = KeyId::parse("k").unwrap();
    let total = |client: &str, now| store.window_total(&k, client, "eth:1:value", 100, now);
    store
        .window_commit(&k, &[claim("app", "tx1", 6)], 1_000)
        .unwrap();
    // The same payload again (another request id, another PSBT input):
    // counted once.
    store
        .window_commit(&k, &[claim("app", "tx1", 6)], 1_001)
        .unwrap();
    assert_eq!(total("app", 1_001).unwrap(), 6);
    // 6 + 5 is over 10: refused, and nothing recorded; 4 fits exactly.
    let e = store
        .window_commit(&k, &[claim("app", "tx2", 5)], 1_002)
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(e, StorageError::WindowExceeded(_)) && msg.contains("eth.value_per_24h"),
        "{msg}"
    );
    assert!(msg.contains("over its limit 10"), "{msg}");
    assert!(store
        .window_check(&k, &[claim("app", "tx2", 4)], 1_002)
        .is_ok());
    store
        .window_commit(&k, &[claim("app", "tx2", 4)], 1_002)
        .unwrap();
    assert_eq!(total("app", 1_002).unwrap(), 10);
    assert!(store
        .window_check(&k, &[claim("app", "tx3", 1)], 1_002)
        .is_err());
    // Another client's window is its own.
    store
        .window_commit(&k, &[claim("other", "tx3", 10)], 1_002)
        .unwrap();
    // Once the first spend is older than the window it no longer counts.
    assert_eq!(total("app", 1_100).unwrap(), 10, "still inside at 100 s");
    assert_eq!(total("app", 1_101).unwrap(), 4);
    store
        .window_commit(&k, &[claim("app", "tx3", 6)], 1_101)
        .unwrap();
    assert!(store
        .window_commit(&k, &[claim("app", "tx4", 1)], 1_101)
        .is_err());
}

#[test]
fn a_window_refusal_leaves_no_admission_behind() {
    let (_dir, store) = open();
    let k = KeyId::parse("k").unwrap();
    let entry = |rid: &str| LedgerEntry {
        schema: 1,
        request_id: rid.into(),
        digest: [1; 32],
        path: "m".into(),
        eid: [0; 32],
        unix: 0,
        result: None,
        slot: None,
    };
    let eid = |b: u8| ExecutionId::from_slice(&[b; 32]).unwrap();
    let admit = |e: u8, rid: &str, amount: u128| {
        store.admit_sign(
            (&eid(e), u64::MAX),
            1_000,
            (&k, &entry(rid)),
            None,
            &[claim("app", rid, amount)],
            AuditEvent::default(),
        )
    };
    assert_eq!(admit(1, "r1", 7).unwrap(), Admission::Admitted);
    assert!(matches!(
        admit(2, "r2", 4),
        Err(StorageError::WindowExceeded(_))
    ));
    // Neither the ledger entry nor the eid of the refused request stayed.
    assert_eq!(store.ledger_get(&k, "r2").unwrap(), None);
    assert!(!store.eid_used(&eid(2)).unwrap());
    assert_eq!(
        store
            .window_total(&k, "app", "eth:1:value", 100, 1_000)
            .unwrap(),
        7
    );
    // The same request admitted again (a retry, another signer set): its
    // spend is already counted.
    assert_eq!(admit(3, "r1", 7).unwrap(), Admission::Admitted);
}

#[test]
fn reservations_are_released_by_their_owner_only_and_never_once_admitted() {
    let (_dir, store) = open();
    let k = KeyId::parse("k").unwrap();
    let slot = SlotClaim {
        key: &k,
        scope: "#eth:1:0xabc",
        position: (0, 0, 0),
        digest: [1; 32],
        request_id: "r1",
        evidence: b"",
    };
    let total = || {
        store
            .window_total(&k, "app", "eth:1:value", 100, 1_000)
            .unwrap()
    };
    let tx1 = [claim("app", "tx1", 6)];
    store.gossip_commit(&slot, &tx1, 1_000, "a", None).unwrap();
    assert_eq!(total(), 6);
    // Another node cannot release a's reservation; a can.
    assert_eq!(store.release_windows(&k, &tx1, "b").unwrap(), 0);
    assert_eq!(total(), 6);
    assert_eq!(store.release_windows(&k, &tx1, "a").unwrap(), 1);
    assert_eq!(total(), 0);
    // Reserved, then admitted by a signing session: it stays for good.
    store.gossip_commit(&slot, &tx1, 1_000, "a", None).unwrap();
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
    let eid = ExecutionId::from_slice(&[9; 32]).unwrap();
    let admitted = store
        .admit_sign(
            (&eid, u64::MAX),
            1_000,
            (&k, &entry),
            None,
            &tx1,
            AuditEvent::default(),
        )
        .unwrap();
    assert_eq!(admitted, Admission::Admitted);
    assert_eq!(total(), 6, "the reservation counted once");
    assert_eq!(store.release_windows(&k, &tx1, "a").unwrap(), 0);
    assert_eq!(total(), 6);
    // A refused reservation leaves neither the spend nor the watermark.
    let over = [claim("app", "tx2", 5)];
    let next = SlotClaim {
        scope: "#eth:1:0xdef",
        ..slot
    };
    assert!(matches!(
        store.gossip_commit(&next, &over, 1_000, "a", None),
        Err(StorageError::WindowExceeded(_))
    ));
    assert_eq!(store.watermark(&k, "#eth:1:0xdef").unwrap(), None);
}

#[test]
fn a_spend_held_by_two_attempts_stays_until_both_release() {
    let (_dir, store) = open();
    let k = KeyId::parse("k").unwrap();
    let tx1 = [claim("app", "tx1", 6)];
    let total = || {
        store
            .window_total(&k, "app", "eth:1:value", 100, 1_000)
            .unwrap()
    };
    // The same payload reserved by two coordinators (a client's failover),
    // or by two attempts of one: counted once, held by both.
    store.window_reserve(&k, &tx1, 1_000, "a/01").unwrap();
    store.window_reserve(&k, &tx1, 1_000, "b/02").unwrap();
    assert_eq!(total(), 6);
    // One releasing (a late release of an earlier attempt) leaves it.
    assert_eq!(store.release_windows(&k, &tx1, "a/01").unwrap(), 0);
    assert_eq!(total(), 6);
    assert_eq!(store.release_windows(&k, &tx1, "a/01").unwrap(), 0);
    assert_eq!(store.release_windows(&k, &tx1, "b/02").unwrap(), 1);
    assert_eq!(total(), 0);
    // A reservation touches no slot watermark.
    assert_eq!(store.watermark(&k, "#eth:1:0xabc").unwrap(), None);
}
