//! Backup files: a round trip, and every way a file or a restore is refused.

use super::*;
use crate::domain::KeyType;

fn record(id: &KeyId, epoch: u64) -> KeyRecord {
    KeyRecord {
        schema: records::SCHEMA,
        key_id: id.clone(),
        public_key: vec![2; 33],
        chain_code: [0; 32],
        committee: vec!["a".into(), "b".into()],
        threshold: 2,
        epoch,
        state: KeyState::Active,
        package_hash: [0; 32],
        package: String::new(),
        rotation: None,
        created_unix: 0,
        key_type: KeyType::Secp256k1,
        lifecycle_seq: 0,
    }
}

fn pass() -> SecretBytes {
    SecretBytes::new(b"backup pass".to_vec())
}

#[test]
fn a_backup_restores_every_key_marked_and_refuses_tampering_and_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeName::parse("a").unwrap();
    let store = Store::open(dir.path(), &node, &pass()).unwrap();
    let id = KeyId::parse("k1").unwrap();
    let share = SecretBytes::new(vec![7; 64]);
    store.insert_key(&record(&id, 0), &share).unwrap();
    store
        .watermark_commit(&id, "chain", (5, 0, 1), [1; 32], "r5", b"")
        .unwrap();
    let file = store.backup(1_800_000_000).unwrap();
    // The share is sealed in the file, never in the clear.
    assert!(!file.windows(64).any(|w| w == [7u8; 64].as_slice()));

    let info = verify_backup(&file, &pass()).unwrap();
    assert_eq!(
        (info.node.as_str(), info.created_unix),
        ("a", 1_800_000_000)
    );
    assert_eq!(
        info.keys,
        vec![BackupKey {
            key_id: "k1".into(),
            epoch: 0,
            state: "active".into()
        }]
    );
    assert_eq!(backup_header(&file).unwrap(), info);

    // A wrong passphrase, a flipped byte anywhere, a cut file: refused.
    let wrong = verify_backup(&file, &SecretBytes::new(b"nope".to_vec())).unwrap_err();
    assert!(matches!(wrong, StorageError::WrongPassphrase(_)), "{wrong}");
    for at in [file.len() / 3, file.len() - 1] {
        let mut bad = file.clone();
        bad[at] ^= 0x40;
        let e = verify_backup(&bad, &pass()).unwrap_err().to_string();
        assert!(e.contains("MAC does not match"), "byte {at}: {e}");
    }
    let e = verify_backup(&file[..file.len() - 10], &pass())
        .unwrap_err()
        .to_string();
    assert!(e.contains("truncated"), "{e}");
    let e = verify_backup(b"hello", &pass()).unwrap_err().to_string();
    assert!(e.contains("not a thresig backup"), "{e}");

    // Restore: never over a store; into an empty directory every key comes
    // back with its share, its watermark and a restore mark.
    let e = restore_backup(&file, &pass(), dir.path(), 1).unwrap_err();
    assert!(matches!(e, StorageError::Conflict(_)), "{e}");
    drop(store);
    let target = tempfile::tempdir().unwrap();
    let into = target.path().join("data");
    restore_backup(&file, &pass(), &into, 1_800_000_100).unwrap();
    let back = Store::open(&into, &node, &pass()).unwrap();
    assert_eq!(back.share(&id, 0).unwrap().expose(), share.expose());
    assert_eq!(
        back.restored(&id).unwrap(),
        Some(Restored {
            backup_unix: 1_800_000_000,
            epoch: 0
        })
    );
    let w = back.watermark(&id, "chain").unwrap().unwrap();
    assert_eq!((w.height, w.round, w.step), (5, 0, 1));
    assert!(back.audit_verify().unwrap().first_bad.is_none());
    assert!(back
        .audit_tail(1)
        .unwrap()
        .iter()
        .any(|e| e.event.kind == "store.restore"));

    // Confirming takes a higher watermark, keeps a lower one out, and lifts the mark.
    let higher = Watermark {
        height: 9,
        round: 0,
        step: 0,
        digest: [9; 32],
        request_id: "r9".into(),
    };
    let lower = Watermark {
        height: 2,
        round: 0,
        step: 0,
        digest: [2; 32],
        request_id: "r2".into(),
    };
    back.confirm_restored(
        &id,
        &[
            ("chain".into(), lower),
            ("chain".into(), higher),
            (
                "other".into(),
                Watermark {
                    height: 1,
                    round: 1,
                    step: 1,
                    digest: [3; 32],
                    request_id: "o".into(),
                },
            ),
        ],
    )
    .unwrap();
    assert_eq!(back.watermark(&id, "chain").unwrap().unwrap().height, 9);
    assert_eq!(back.watermarks(&id).unwrap().len(), 2);
    assert_eq!(back.restored(&id).unwrap(), None);
}
