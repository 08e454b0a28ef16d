//! Byte-for-byte pins of the stored encodings, taken from the format-v1
//! fixture stores (`tests/fixtures/store-v1`). Each test fails if the bytes
//! this code writes for the same value change, or if it can no longer read
//! the bytes an earlier version wrote. A format change must add a migration
//! and keep these passing: format 2 keeps every encoding and moves each seal
//! and MAC to its own HKDF subkey, so the tests read the fixture's bytes as
//! written (under the format-1 key), then check what the migration made of
//! them (the same bodies under the format-2 keys).

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::*;

const KEY: &str = "fixture-key";

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-v1")
}

/// Node `a`'s fixture store, opened from a copy.
fn open_a() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    for f in ["store.meta", "thresig.redb"] {
        std::fs::copy(fixture().join("a").join(f), dir.path().join(f)).unwrap();
    }
    let store = Store::open(dir.path(), &NodeName::parse("a").unwrap(), &pass_a()).unwrap();
    (dir, store)
}

fn raw(store: &Store, table: TableDefinition<&str, &[u8]>, slot: &str) -> Vec<u8> {
    let tx = store.db.begin_read().unwrap();
    let t = tx.open_table(table).unwrap();
    t.get(slot).unwrap().unwrap().value().to_vec()
}

/// The passphrase of fixture node `a`.
fn pass_a() -> SecretBytes {
    let pass = std::fs::read_to_string(fixture().join("a.passphrase")).unwrap();
    SecretBytes::new(pass.trim_end().as_bytes().to_vec())
}

/// Node `a`'s fixture bytes as written (a copy, never opened as a store),
/// and its format-1 keys.
fn fixture_a_v1() -> (tempfile::TempDir, Database, Kek) {
    let dir = tempfile::tempdir().unwrap();
    for f in ["store.meta", "thresig.redb"] {
        std::fs::copy(fixture().join("a").join(f), dir.path().join(f)).unwrap();
    }
    let unlocked = seal::unlock_or_init(dir.path(), &pass_a()).unwrap();
    assert_eq!(unlocked.meta_format, 1);
    let kek = Kek::derive(&unlocked.root, 1).unwrap();
    let db = Database::open(dir.path().join("thresig.redb")).unwrap();
    (dir, db, kek)
}

fn raw_v1(db: &Database, table: TableDefinition<&str, &[u8]>, slot: &str) -> Vec<u8> {
    let tx = db.begin_read().unwrap();
    let t = tx.open_table(table).unwrap();
    t.get(slot).unwrap().unwrap().value().to_vec()
}

/// The recorded encodings (`encodings.json`): hex of each stored value.
#[derive(serde::Serialize, serde::Deserialize)]
struct Encodings {
    /// Key record as stored (JSON body, then its 32-byte MAC).
    key_record: String,
    /// Ledger entry of `fixture-slot-request` (JSON, with its signature).
    ledger_entry: String,
    /// Watermark of scope `fixture-chain` (JSON body, then its MAC).
    watermark: String,
    /// Sealed share of epoch 0 (nonce, then XChaCha20-Poly1305 ciphertext).
    sealed_share: String,
    /// The AAD the share is sealed under.
    share_aad: String,
    /// SHA-256 of the share's plaintext encoding (bincode of the engine's party).
    share_plaintext_sha256: String,
}

fn recorded() -> Encodings {
    serde_json::from_slice(&std::fs::read(fixture().join("encodings.json")).unwrap()).unwrap()
}

fn split_mac(raw: &[u8]) -> (&[u8], &[u8]) {
    raw.split_at(raw.len() - 32)
}

fn sha256(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

fn key() -> KeyId {
    KeyId::parse(KEY).unwrap()
}

#[test]
fn key_record_encoding_is_pinned() {
    let (_f, v1, kek1) = fixture_a_v1();
    let want = hex::decode(recorded().key_record).unwrap();
    assert_eq!(raw_v1(&v1, KEYS, KEY), want, "the fixture store changed");
    let (body, mac) = split_mac(&want);
    let rec = KeyRecord::decode(body).unwrap();
    assert_eq!(rec.key_id, key());
    assert_eq!(rec.committee, ["a", "b", "c"]);
    assert_eq!(
        (rec.threshold, rec.epoch, rec.state.clone()),
        (2, 0, KeyState::Active)
    );
    assert_eq!(
        rec.encode().unwrap(),
        body,
        "a key record now encodes differently"
    );
    assert_eq!(kek1.record_mac(&key(), body).unwrap(), mac);
    // Migrated: the same body, MACed under the format-2 record key.
    let (_d, store) = open_a();
    let now = raw(&store, KEYS, KEY);
    let (body2, mac2) = split_mac(&now);
    assert_eq!(body2, body, "the migration changed the record's body");
    assert_eq!(store.kek.record_mac(&key(), body).unwrap(), mac2);
    assert_ne!(
        mac2, mac,
        "the record is still MACed under the format-1 key"
    );
    assert_eq!(store.key(&key()).unwrap().unwrap(), rec);
}

#[test]
fn ledger_entry_encoding_is_pinned() {
    let (_f, v1, _) = fixture_a_v1();
    let want = hex::decode(recorded().ledger_entry).unwrap();
    let slot = format!("{KEY}\u{0}fixture-slot-request");
    assert_eq!(
        raw_v1(&v1, LEDGER, &slot),
        want,
        "the fixture store changed"
    );
    // Ledger entries carry no MAC: the migration leaves them as they are.
    let (_d, store) = open_a();
    let want = hex::decode(recorded().ledger_entry).unwrap();
    let slot = format!("{KEY}\u{0}fixture-slot-request");
    assert_eq!(
        raw(&store, LEDGER, &slot),
        want,
        "the fixture store changed"
    );
    let entry = LedgerEntry::decode(&want).unwrap();
    assert_eq!(entry.request_id, "fixture-slot-request");
    assert_eq!(entry.digest, [0x5a; 32]);
    assert_eq!(entry.slot.as_deref(), Some("fixture-chain 100/0/0"));
    assert!(entry.result.is_some(), "the recorded signature was lost");
    assert_eq!(
        entry.encode().unwrap(),
        want,
        "a ledger entry now encodes differently"
    );
}

#[test]
fn watermark_encoding_is_pinned() {
    let (_f, v1, kek1) = fixture_a_v1();
    let want = hex::decode(recorded().watermark).unwrap();
    let slot = format!("{KEY}\u{0}fixture-chain");
    assert_eq!(
        raw_v1(&v1, WATERMARKS, &slot),
        want,
        "the fixture store changed"
    );
    let (body, mac) = split_mac(&want);
    let w: Watermark = serde_json::from_slice(body).unwrap();
    assert_eq!(
        (w.height, w.round, w.step, w.digest),
        (100, 0, 0, [0x5a; 32])
    );
    assert_eq!(
        serde_json::to_vec(&w).unwrap(),
        body,
        "a watermark now encodes differently"
    );
    assert_eq!(kek1.record_mac(&key(), body).unwrap(), mac);
    let (_d, store) = open_a();
    let now = raw(&store, WATERMARKS, &slot);
    let (body2, mac2) = split_mac(&now);
    assert_eq!(body2, body, "the migration changed the watermark's body");
    assert_eq!(store.kek.record_mac(&key(), body).unwrap(), mac2);
    assert_eq!(store.watermark(&key(), "fixture-chain").unwrap(), Some(w));
}

#[test]
fn sealed_share_encoding_is_pinned() {
    let (_f, v1, kek1) = fixture_a_v1();
    let rec = recorded();
    let want = hex::decode(&rec.sealed_share).unwrap();
    assert_eq!(
        raw_v1(&v1, SHARES, &share_slot(&key(), 0)),
        want,
        "the fixture store changed"
    );
    let node = NodeName::parse("a").unwrap();
    assert_eq!(
        hex::encode(seal::share_aad(&key(), 0, &node)),
        rec.share_aad
    );
    let plain = kek1.open_share(&want, &key(), 0, &node).unwrap();
    assert_eq!(
        sha256(plain.expose()),
        rec.share_plaintext_sha256,
        "the sealed plaintext changed"
    );
    // Migrated: sealed again under the format-2 sealing key, same plaintext.
    let (_d, store) = open_a();
    let resealed = raw(&store, SHARES, &share_slot(&key(), 0));
    assert_ne!(resealed, want);
    assert!(
        kek1.open_share(&resealed, &key(), 0, &node).is_err(),
        "the migrated share still opens under the format-1 key"
    );
    let plain2 = store.kek.open_share(&resealed, &key(), 0, &node).unwrap();
    assert_eq!(sha256(plain2.expose()), rec.share_plaintext_sha256);
    // The protocol module still reads it, and writes the same bytes back.
    let share =
        crate::protocol::KeyShare::decode(crate::domain::KeyType::Secp256k1, plain.expose())
            .unwrap();
    assert_eq!(share.party_index(), 1);
    assert_eq!(
        sha256(&share.encode().unwrap()),
        rec.share_plaintext_sha256,
        "a share now encodes differently"
    );
}

/// Writes `encodings.json` for a new fixture generation (never over an
/// existing one): `cargo test --lib write_encodings -- --ignored`.
#[test]
#[ignore = "writes a fixture file; run by hand for a new fixture generation"]
fn write_encodings() {
    // Reads the store through `Store::open`, so it records the encodings of
    // the current format (a format-1 fixture is migrated first).
    let out = fixture().join("encodings.json");
    assert!(
        !out.exists(),
        "{} exists; fixtures are never overwritten",
        out.display()
    );
    let (_d, store) = open_a();
    let sealed = raw(&store, SHARES, &share_slot(&key(), 0));
    let node = NodeName::parse("a").unwrap();
    let share = store.kek.open_share(&sealed, &key(), 0, &node).unwrap();
    let e = Encodings {
        key_record: hex::encode(raw(&store, KEYS, KEY)),
        ledger_entry: hex::encode(raw(
            &store,
            LEDGER,
            &format!("{KEY}\u{0}fixture-slot-request"),
        )),
        watermark: hex::encode(raw(&store, WATERMARKS, &format!("{KEY}\u{0}fixture-chain"))),
        sealed_share: hex::encode(&sealed),
        share_aad: hex::encode(seal::share_aad(&key(), 0, &node)),
        share_plaintext_sha256: sha256(share.expose()),
    };
    std::fs::write(out, serde_json::to_vec_pretty(&e).unwrap()).unwrap();
}

#[test]
fn a_store_of_a_newer_format_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["store.meta", "thresig.redb"] {
        std::fs::copy(fixture().join("a").join(f), dir.path().join(f)).unwrap();
    }
    let meta_path = dir.path().join("store.meta");
    let mut meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&meta_path).unwrap()).unwrap();
    assert!(
        meta.get("format").is_none(),
        "format-1 fixture meta has no format field"
    );
    meta["format"] = serde_json::json!(STORE_FORMAT + 1);
    std::fs::write(&meta_path, serde_json::to_vec(&meta).unwrap()).unwrap();
    let db_before = std::fs::read(dir.path().join("thresig.redb")).unwrap();
    let pass = std::fs::read_to_string(fixture().join("a.passphrase")).unwrap();
    let err = Store::open(
        dir.path(),
        &NodeName::parse("a").unwrap(),
        &SecretBytes::new(pass.trim_end().as_bytes().to_vec()),
    )
    .unwrap_err();
    assert!(
        matches!(err, StorageError::UnsupportedFormat { found, supported, .. }
            if found == STORE_FORMAT + 1 && supported == STORE_FORMAT),
        "{err}"
    );
    assert_eq!(
        std::fs::read(dir.path().join("thresig.redb")).unwrap(),
        db_before
    );
}

#[test]
fn a_new_store_records_its_format() {
    let dir = tempfile::tempdir().unwrap();
    Store::open(
        dir.path(),
        &NodeName::parse("a").unwrap(),
        &SecretBytes::new(b"p".to_vec()),
    )
    .unwrap();
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("store.meta")).unwrap()).unwrap();
    assert_eq!(meta["format"], serde_json::json!(STORE_FORMAT));
}

/// Format 1 used the Argon2id output as the key of every seal and MAC;
/// format 2 derives one subkey per use with HKDF. Opening a format-1 store
/// rewrites it as format 2 once, keeps every value readable, keeps the audit
/// chain verifiable, records the migration, and leaves nothing that the
/// format-1 key still authenticates.
#[test]
fn v1_stores_migrate_to_hkdf_subkeys() {
    let (dir, store) = open_a();
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("store.meta")).unwrap()).unwrap();
    assert_eq!(meta["format"], serde_json::json!(2));
    let report = store.audit_verify().unwrap();
    assert_eq!(report.first_bad, None, "{report:?}");
    let tail = store.audit_tail(1000).unwrap();
    let migrations: Vec<_> = tail
        .iter()
        .filter(|e| e.event.kind == "store.migrate")
        .collect();
    assert_eq!(migrations.len(), 1, "{tail:?}");
    assert!(
        migrations[0].event.detail.contains("1 shares")
            && migrations[0].event.detail.contains("0 left"),
        "{:?}",
        migrations[0]
    );
    let rec = store.key(&key()).unwrap().unwrap();
    let share = store.share(&key(), rec.epoch).unwrap();
    assert!(!share.expose().is_empty());

    // Every subkey differs from the root key and from each other: a MAC of
    // the same bytes under the record and audit keys differs, and neither is
    // the format-1 MAC.
    let (_f, _v1, kek1) = fixture_a_v1();
    let body = b"same bytes";
    let rec2 = store.kek.record_mac(&key(), body).unwrap();
    assert_ne!(rec2, kek1.record_mac(&key(), body).unwrap());
    assert_ne!(
        store.kek.audit_mac(&[0; 32], body).unwrap(),
        kek1.audit_mac(&[0; 32], body).unwrap()
    );
    assert_ne!(
        store.kek.backup_mac(body).unwrap(),
        kek1.backup_mac(body).unwrap()
    );
    drop(store);

    // A second open finds format 2 and migrates nothing.
    let again = Store::open(dir.path(), &NodeName::parse("a").unwrap(), &pass_a()).unwrap();
    let n = again
        .audit_tail(1000)
        .unwrap()
        .iter()
        .filter(|e| e.event.kind == "store.migrate")
        .count();
    assert_eq!(n, 1);
    assert_eq!(again.audit_verify().unwrap().first_bad, None);
    drop(again);

    // A crash after the database was rewritten but before store.meta was:
    // the next open finishes the job (the wrong passphrase is still refused).
    std::fs::copy(
        fixture().join("a").join("store.meta"),
        dir.path().join("store.meta"),
    )
    .unwrap();
    let wrong = Store::open(
        dir.path(),
        &NodeName::parse("a").unwrap(),
        &SecretBytes::new(b"wrong".to_vec()),
    )
    .unwrap_err();
    assert!(matches!(wrong, StorageError::WrongPassphrase(_)), "{wrong}");
    let healed = Store::open(dir.path(), &NodeName::parse("a").unwrap(), &pass_a()).unwrap();
    assert_eq!(healed.key(&key()).unwrap().unwrap(), rec);
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("store.meta")).unwrap()).unwrap();
    assert_eq!(meta["format"], serde_json::json!(2));
    assert_eq!(healed.audit_verify().unwrap().first_bad, None);
}

/// A value that did not authenticate under format 1 is not made valid by the
/// migration: it stays refused, and the rest of the store migrates.
#[test]
fn a_tampered_v1_value_stays_refused_after_migration() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["store.meta", "thresig.redb"] {
        std::fs::copy(fixture().join("a").join(f), dir.path().join(f)).unwrap();
    }
    {
        let db = Database::open(dir.path().join("thresig.redb")).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let mut t = tx.open_table(WATERMARKS).unwrap();
            let slot = format!("{KEY}\u{0}fixture-chain");
            let mut v = t.get(slot.as_str()).unwrap().unwrap().value().to_vec();
            let at = v.iter().position(|b| *b == b'1').unwrap();
            v[at] = b'9'; // height 100 -> 900
            t.insert(slot.as_str(), v.as_slice()).unwrap();
        }
        tx.commit().unwrap();
    }
    let store = Store::open(dir.path(), &NodeName::parse("a").unwrap(), &pass_a()).unwrap();
    let err = store.watermark(&key(), "fixture-chain").unwrap_err();
    assert!(err.to_string().contains("authentication failed"), "{err}");
    assert!(store.key(&key()).unwrap().is_some());
    let tail = store.audit_tail(1000).unwrap();
    let m = tail
        .iter()
        .find(|e| e.event.kind == "store.migrate")
        .unwrap();
    assert!(m.event.detail.contains("1 left"), "{m:?}");
}

/// A format-1 store opened under another node's name: no share opens (each
/// is bound to its node), so nothing is migrated and the open is refused,
/// leaving the files as they were; under the right name it then migrates.
#[test]
fn a_v1_store_opened_under_the_wrong_name_is_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["store.meta", "thresig.redb"] {
        std::fs::copy(fixture().join("a").join(f), dir.path().join(f)).unwrap();
    }
    let meta_before = std::fs::read(dir.path().join("store.meta")).unwrap();
    let err = Store::open(dir.path(), &NodeName::parse("b").unwrap(), &pass_a()).unwrap_err();
    assert!(
        err.to_string()
            .contains("none of its 1 shares opens for node b"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(dir.path().join("store.meta")).unwrap(),
        meta_before
    );
    let store = Store::open(dir.path(), &NodeName::parse("a").unwrap(), &pass_a()).unwrap();
    assert!(store.share(&key(), 0).is_ok());
}
