//! Stored-format fixtures: three node stores written by an earlier version of
//! thresig (see `tests/fixtures/store-v1/README.md`) must still open, verify
//! their audit chains, answer from their ledgers, keep their slot watermarks,
//! and sign with the key they hold. A change that makes an old store
//! unreadable fails here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{check_signature, init_tracing, ADMIN, CLIENT};
use thresig::client::Slot;
use thresig::cluster::LocalCluster;
use thresig::node::Timeouts;

/// What the generator recorded about the fixture key (`fixture.json`).
#[derive(serde::Serialize, serde::Deserialize)]
struct FixtureKey {
    key_id: String,
    public_key: String,
    chain_code: String,
    committee: Vec<String>,
    threshold: u32,
    epoch: u64,
    /// A request signed at a slot: its id, digest, slot and signature (r||s).
    slot_request_id: String,
    slot_digest: String,
    slot_scope: String,
    slot_height: u64,
    slot_rs: String,
    /// A request signed without a slot.
    plain_request_id: String,
    plain_digest: String,
    plain_rs: String,
}

const NAMES: [&str; 3] = ["a", "b", "c"];
const KEY: &str = "fixture-key";

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-v1")
}

fn timeouts() -> Timeouts {
    Timeouts {
        round: Duration::from_secs(5),
        ping: Duration::from_secs(1),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stores_written_by_format_v1_open_verify_and_sign() {
    init_tracing();
    let seed = fixture_dir();
    let fx: FixtureKey =
        serde_json::from_slice(&std::fs::read(seed.join("fixture.json")).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let c = LocalCluster::start_seeded(dir.path(), &NAMES, timeouts(), Some(&seed))
        .await
        .unwrap();
    let pk = hex::decode(&fx.public_key).unwrap();

    // Every node reads the key record as it was written.
    for (i, name) in NAMES.iter().enumerate() {
        let info = c.client(i, ADMIN).unwrap().get_key(KEY).await.unwrap();
        assert_eq!(info.public_key, pk, "node {i}");
        assert_eq!(hex::encode(&info.chain_code), fx.chain_code, "node {i}");
        assert_eq!(info.committee, fx.committee, "node {i}");
        assert_eq!(info.threshold, fx.threshold, "node {i}");
        assert_eq!(info.epoch, fx.epoch, "node {i}");
        assert_eq!(info.state, "active", "node {i}");
        // The audit chain written then still verifies under the same KEK.
        let v = c.client(i, ADMIN).unwrap().audit_verify().await.unwrap();
        assert!(v.ok, "node {i}: {v:?}");
        assert!(v.good >= 2, "node {i} has only {} audit entries", v.good);
        // Opening rewrote the store as format 2 (HKDF subkeys), once, and
        // said so in the audit log.
        let tail = c.client(i, ADMIN).unwrap().audit_tail(1000).await.unwrap();
        let migrations = tail.iter().filter(|e| e.kind == "store.migrate").count();
        assert_eq!(migrations, 1, "node {i}: {tail:?}");
        let meta: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.path().join("nodes").join(name).join("data/store.meta")).unwrap(),
        )
        .unwrap();
        assert_eq!(meta["format"], serde_json::json!(2), "node {i}");
    }

    // The ledger answers a repeat of a recorded request with its signature.
    let plain_digest: [u8; 32] = hex::decode(&fx.plain_digest).unwrap().try_into().unwrap();
    let again = c
        .client(1, CLIENT)
        .unwrap()
        .sign(KEY, plain_digest, "", &fx.plain_request_id)
        .await
        .unwrap();
    check_signature(&again, &plain_digest, &pk);
    assert_eq!(
        hex::encode([again.r.clone(), again.s.clone()].concat()),
        fx.plain_rs
    );

    // The slot watermark holds: a lower slot and the same slot with another
    // digest are refused; the recorded request is answered from the ledger.
    let slot = |height| Slot {
        scope: fx.slot_scope.clone(),
        height,
        round: 0,
        step: 0,
    };
    let below = c
        .client(0, CLIENT)
        .unwrap()
        .sign_at(KEY, [0x77; 32], "", "", slot(fx.slot_height - 1))
        .await
        .unwrap_err();
    assert!(
        below.to_string().contains("watermark"),
        "a slot below the stored watermark was not refused for it: {below}"
    );
    let conflict = c
        .client(2, CLIENT)
        .unwrap()
        .sign_at(KEY, [0x78; 32], "", "", slot(fx.slot_height))
        .await
        .unwrap_err();
    assert!(
        conflict.to_string().contains("another digest"),
        "the stored slot was re-signed for another digest: {conflict}"
    );
    let slot_digest: [u8; 32] = hex::decode(&fx.slot_digest).unwrap().try_into().unwrap();
    let repeat = c
        .client(0, CLIENT)
        .unwrap()
        .sign_at(
            KEY,
            slot_digest,
            "",
            &fx.slot_request_id,
            slot(fx.slot_height),
        )
        .await
        .unwrap();
    assert_eq!(
        hex::encode([repeat.r.clone(), repeat.s.clone()].concat()),
        fx.slot_rs
    );

    // And the shares still sign, with every pair of nodes.
    for (i, digest) in [(0usize, [0x31; 32]), (1, [0x32; 32]), (2, [0x33; 32])] {
        let resp = c
            .client(i, CLIENT)
            .unwrap()
            .sign_at(
                KEY,
                digest,
                "m/1/2",
                "",
                slot(fx.slot_height + 1 + i as u64),
            )
            .await
            .unwrap();
        let cc: [u8; 32] = hex::decode(&fx.chain_code).unwrap().try_into().unwrap();
        let (child, _) = thresig::bip32::derive_public(
            thresig::domain::KeyType::Secp256k1,
            &pk,
            &cc,
            &thresig::domain::DerivationPath::parse("m/1/2").unwrap(),
        )
        .unwrap();
        check_signature(&resp, &digest, &child);
    }
    c.stop().await;
}

/// Writes the fixture stores. Run only to create a new fixture generation,
/// never to refresh an existing one (that would hide a format change):
/// `THRESIG_WRITE_FIXTURES=tests/fixtures/store-vN cargo test --test fixtures -- --ignored`
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "writes fixture files; run by hand for a new fixture generation"]
async fn write_fixture_stores() {
    init_tracing();
    let out =
        PathBuf::from(std::env::var("THRESIG_WRITE_FIXTURES").expect("set THRESIG_WRITE_FIXTURES"));
    assert!(
        !out.exists(),
        "{} exists; fixtures are never overwritten",
        out.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let c = LocalCluster::start(dir.path(), &NAMES, timeouts())
        .await
        .unwrap();
    let key = c
        .client(0, ADMIN)
        .unwrap()
        .create_key(KEY, 2, &[])
        .await
        .unwrap();
    let scope = "fixture-chain".to_owned();
    let slot_digest = [0x5a; 32];
    let slot_resp = c
        .client(0, CLIENT)
        .unwrap()
        .sign_at(
            KEY,
            slot_digest,
            "",
            "fixture-slot-request",
            Slot {
                scope: scope.clone(),
                height: 100,
                round: 0,
                step: 0,
            },
        )
        .await
        .unwrap();
    let plain_digest = [0xa5; 32];
    let plain_resp = c
        .client(1, CLIENT)
        .unwrap()
        .sign(KEY, plain_digest, "", "fixture-plain-request")
        .await
        .unwrap();
    let fx = FixtureKey {
        key_id: KEY.into(),
        public_key: hex::encode(&key.public_key),
        chain_code: hex::encode(&key.chain_code),
        committee: key.committee.clone(),
        threshold: key.threshold,
        epoch: key.epoch,
        slot_request_id: "fixture-slot-request".into(),
        slot_digest: hex::encode(slot_digest),
        slot_scope: scope,
        slot_height: 100,
        slot_rs: hex::encode([slot_resp.r, slot_resp.s].concat()),
        plain_request_id: "fixture-plain-request".into(),
        plain_digest: hex::encode(plain_digest),
        plain_rs: hex::encode([plain_resp.r, plain_resp.s].concat()),
    };
    let configs = c.configs.clone();
    c.stop().await;
    std::fs::create_dir_all(&out).unwrap();
    for cfg in &configs {
        let to = out.join(cfg.name.as_str());
        std::fs::create_dir_all(&to).unwrap();
        for f in ["store.meta", "thresig.redb"] {
            std::fs::copy(cfg.data_dir.join(f), to.join(f)).unwrap();
        }
        let pass = cfg.passphrase.read().unwrap();
        std::fs::write(out.join(format!("{}.passphrase", cfg.name)), pass.expose()).unwrap();
    }
    std::fs::write(
        out.join("fixture.json"),
        serde_json::to_vec_pretty(&fx).unwrap(),
    )
    .unwrap();
}
