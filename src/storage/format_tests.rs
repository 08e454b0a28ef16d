//! Byte-for-byte pins of the stored encodings, taken from the format-v1
//! fixture stores (`tests/fixtures/store-v1`). Each test fails if the bytes
//! this code writes for the same value change, or if it can no longer read
//! the bytes an earlier version wrote. A format change must add a migration
//! and keep these passing.

use std::path::{Path, PathBuf};

use redb::{ReadableDatabase, TableDefinition};

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
    let pass = std::fs::read_to_string(fixture().join("a.passphrase")).unwrap();
    let store = Store::open(
        dir.path(),
        &NodeName::parse("a").unwrap(),
        &SecretBytes::new(pass.trim_end().as_bytes().to_vec()),
    )
    .unwrap();
    (dir, store)
}

fn raw(store: &Store, table: TableDefinition<&str, &[u8]>, slot: &str) -> Vec<u8> {
    let tx = store.db.begin_read().unwrap();
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
    let (_d, store) = open_a();
    let want = hex::decode(recorded().key_record).unwrap();
    assert_eq!(raw(&store, KEYS, KEY), want, "the fixture store changed");
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
    assert_eq!(store.kek.record_mac(&key(), body).unwrap(), mac);
    assert_eq!(store.key(&key()).unwrap().unwrap(), rec);
}

#[test]
fn ledger_entry_encoding_is_pinned() {
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
    let (_d, store) = open_a();
    let want = hex::decode(recorded().watermark).unwrap();
    let slot = format!("{KEY}\u{0}fixture-chain");
    assert_eq!(
        raw(&store, WATERMARKS, &slot),
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
    assert_eq!(store.kek.record_mac(&key(), body).unwrap(), mac);
    assert_eq!(store.watermark(&key(), "fixture-chain").unwrap(), Some(w));
}

#[test]
fn sealed_share_encoding_is_pinned() {
    let (_d, store) = open_a();
    let rec = recorded();
    let want = hex::decode(&rec.sealed_share).unwrap();
    assert_eq!(
        raw(&store, SHARES, &share_slot(&key(), 0)),
        want,
        "the fixture store changed"
    );
    let node = NodeName::parse("a").unwrap();
    assert_eq!(
        hex::encode(seal::share_aad(&key(), 0, &node)),
        rec.share_aad
    );
    let plain = store.kek.open_share(&want, &key(), 0, &node).unwrap();
    assert_eq!(
        sha256(plain.expose()),
        rec.share_plaintext_sha256,
        "the sealed plaintext changed"
    );
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
