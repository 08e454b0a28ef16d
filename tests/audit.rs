//! The audit log (issue 4, acceptance 5): every sign decision and admin
//! action is recorded in a MAC-chained log; `audit verify` passes on an
//! untouched log and names the first bad entry after an entry is edited,
//! removed or swapped, or the newest entry is cut off.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{cluster, ADMIN, CLIENT};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use thresig::storage::Store;

const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");

type AuditTable<'a> = redb::Table<'a, u64, &'static [u8]>;
type Tamper<'a> = &'a dyn Fn(&mut AuditTable<'_>, &[(u64, Vec<u8>)]);

/// Applies `tamper` to node 0's audit table, checks the store's verdict,
/// then puts the table back as it was.
fn tampered(
    db_path: &std::path::Path,
    open: &dyn Fn() -> Store,
    tamper: Tamper<'_>,
) -> Option<(u64, String)> {
    let original: Vec<(u64, Vec<u8>)> = {
        let db = redb::Database::open(db_path).unwrap();
        let tx = db.begin_read().unwrap();
        let t = tx.open_table(AUDIT).unwrap();
        t.iter()
            .unwrap()
            .map(|r| {
                let (k, v) = r.unwrap();
                (k.value(), v.value().to_vec())
            })
            .collect()
    };
    let write = |f: &dyn Fn(&mut AuditTable<'_>)| {
        let db = redb::Database::open(db_path).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let mut t = tx.open_table(AUDIT).unwrap();
            f(&mut t);
        }
        tx.commit().unwrap();
    };
    write(&|t| tamper(t, &original));
    let verdict = open().audit_verify().unwrap().first_bad;
    write(&|t| {
        for (k, _) in &original {
            t.remove(*k).unwrap();
        }
        for (k, v) in &original {
            t.insert(*k, v.as_slice()).unwrap();
        }
    });
    assert_eq!(
        open().audit_verify().unwrap().first_bad,
        None,
        "restoring failed"
    );
    verdict
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_audit_chain_records_decisions_and_names_the_first_tampered_entry() {
    let (dir, mut c) = cluster(&["a", "b", "c"]).await;
    let mut admin = c.client(0, ADMIN).unwrap();
    admin.create_key("k", 2, &[]).await.unwrap();
    let mut v = c.client(0, CLIENT).unwrap();
    v.sign("k", [1; 32], "m/0", "audit-1").await.unwrap();
    v.sign("k", [2; 32], "", "audit-2").await.unwrap();
    admin.rotate_key("k").await.unwrap();
    // A request b's policy denies: b records the refusal and the rule.
    std::fs::write(
        c.root.join("policy.toml"),
        "[[client]]\nname = \"validator\"\nkeys = [\"other\"]\npaths = [\"m\"]\n[[admin]]\nname = \"ops\"\noperations = [\"read\"]\n",
    )
    .unwrap();
    c.nodes[1].as_ref().unwrap().node.reload_policy().unwrap();
    let err = c
        .client(0, CLIENT)
        .unwrap()
        .sign("k", [3; 32], "", "audit-3")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::PermissionDenied), "{err}");

    let entries = admin.audit_tail(100).await.unwrap();
    let kinds: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| (e.kind.as_str(), e.decision.as_str()))
        .collect();
    assert!(kinds.contains(&("admin.create", "ok")), "{kinds:?}");
    assert!(kinds.contains(&("admin.rotate", "ok")), "{kinds:?}");
    let signed: Vec<_> = entries
        .iter()
        .filter(|e| e.kind == "sign" && e.decision == "allowed")
        .collect();
    // audit-1 and audit-2 were admitted here; whether this node also admitted
    // audit-3 before b's refusal reached it is a race, so it is not counted.
    for rid in ["audit-1", "audit-2"] {
        assert!(
            signed.iter().any(|e| e.request_id == rid),
            "no allowed entry for {rid}: {kinds:?}"
        );
    }
    assert!(signed
        .iter()
        .all(|e| e.actor == "client/validator" && !e.eid.is_empty()));
    assert!(signed
        .iter()
        .any(|e| e.request_id == "audit-1" && e.detail.contains("path m/0")));
    let b_entries = c.client(1, ADMIN).unwrap().audit_tail(100).await.unwrap();
    let refusal = b_entries
        .iter()
        .find(|e| e.request_id == "audit-3")
        .expect("b did not record the refusal");
    assert_eq!(refusal.decision, "denied");
    assert!(refusal.rule.contains("client[0]"), "{}", refusal.rule);
    let seqs: Vec<u64> = entries.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=entries.len() as u64).collect::<Vec<_>>());

    for i in 0..3 {
        let r = c.client(i, ADMIN).unwrap().audit_verify().await.unwrap();
        assert!(r.ok && r.good > 0, "node {i}: {r:?}");
        // Every node recorded the keygen and the rotation it took part in.
        let kinds: Vec<String> = c
            .client(i, ADMIN)
            .unwrap()
            .audit_tail(100)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect();
        assert!(
            kinds.iter().any(|k| k == "session.keygen")
                && kinds.iter().any(|k| k == "session.refresh"),
            "node {i}: {kinds:?}"
        );
    }

    // Stop a and tamper with its log directly in the database file.
    let cfg = c.configs[0].clone();
    let pass = cfg.passphrase.read().unwrap();
    c.stop_node(0).await;
    let db_path = cfg.data_dir.join(Store::DB_FILE);
    let open = || Store::open(&cfg.data_dir, &cfg.name, &pass).unwrap();
    let total = open().audit_verify().unwrap().good;
    assert!(total >= 4, "{total}");

    // Edited: one byte of entry 2's body.
    let bad = tampered(&db_path, &open, &|t, orig| {
        let mut v = orig[1].1.clone();
        let at = v.iter().position(|b| *b == b'"').unwrap() + 1;
        v[at] ^= 0x01;
        t.insert(2, v.as_slice()).unwrap();
    });
    assert_eq!(bad.as_ref().map(|b| b.0), Some(2), "{bad:?}");
    // Edited and re-linked without the key: still entry 2.
    let bad = tampered(&db_path, &open, &|t, orig| {
        let mut v = orig[1].1.clone();
        let n = v.len();
        v[n - 1] ^= 0x80;
        t.insert(2, v.as_slice()).unwrap();
    });
    assert_eq!(bad.as_ref().map(|b| b.0), Some(2), "{bad:?}");
    // Removed: entry 2 gone, so entry 3 is the first that does not fit.
    let bad = tampered(&db_path, &open, &|t, _| {
        t.remove(2).unwrap();
    });
    assert_eq!(bad.as_ref().map(|b| b.0), Some(3), "{bad:?}");
    assert!(bad.unwrap().1.contains("follows entry 1"));
    // Swapped: entries 2 and 3 exchange places.
    let bad = tampered(&db_path, &open, &|t, orig| {
        t.insert(2, orig[2].1.as_slice()).unwrap();
        t.insert(3, orig[1].1.as_slice()).unwrap();
    });
    assert_eq!(bad.as_ref().map(|b| b.0), Some(2), "{bad:?}");
    // Cut off: the newest entry removed.
    let bad = tampered(&db_path, &open, &|t, orig| {
        t.remove(orig.len() as u64).unwrap();
    });
    assert_eq!(bad.as_ref().map(|b| b.0), Some(total), "{bad:?}");

    // The CLI, offline on the stopped node's store: intact, then swapped.
    let conf = dir.path().join("a.toml");
    std::fs::write(&conf, cfg.to_toml()).unwrap();
    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_thresig"))
            .args(["audit", "verify", "--config"])
            .arg(&conf)
            .output()
            .unwrap()
    };
    let out = run();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("chain intact"));
    {
        let db = redb::Database::open(&db_path).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let mut t = tx.open_table(AUDIT).unwrap();
            let (e2, e3) = (
                t.get(2).unwrap().unwrap().value().to_vec(),
                t.get(3).unwrap().unwrap().value().to_vec(),
            );
            t.insert(2, e3.as_slice()).unwrap();
            t.insert(3, e2.as_slice()).unwrap();
        }
        tx.commit().unwrap();
    }
    let out = run();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("entry 2 is bad"), "{stdout}");

    // Cut off, then written to: the next entry notices the head mismatch and
    // records it in the chain, so verify keeps failing after later writes.
    let swap_back = |t: &mut AuditTable<'_>| {
        let (e2, e3) = (
            t.get(2).unwrap().unwrap().value().to_vec(),
            t.get(3).unwrap().unwrap().value().to_vec(),
        );
        t.insert(2, e3.as_slice()).unwrap();
        t.insert(3, e2.as_slice()).unwrap();
        t.remove(total).unwrap();
    };
    {
        let db = redb::Database::open(&db_path).unwrap();
        let tx = db.begin_write().unwrap();
        swap_back(&mut tx.open_table(AUDIT).unwrap());
        tx.commit().unwrap();
    }
    let store = open();
    store
        .audit_append(
            thresig::storage::AuditEvent {
                kind: "test".into(),
                ..Default::default()
            },
            1,
        )
        .unwrap();
    store
        .audit_append(
            thresig::storage::AuditEvent {
                kind: "test".into(),
                ..Default::default()
            },
            2,
        )
        .unwrap();
    let r = store.audit_verify().unwrap();
    let (at, why) = r.first_bad.expect("a cut-off log passed after new writes");
    assert_eq!(at, total, "{why}");
    assert!(why.contains("cut"), "{why}");
    c.stop().await;
}
