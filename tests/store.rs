//! Store properties seen from outside: a wrong passphrase changes nothing,
//! and the raw store file holds no plaintext share.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{cluster, ADMIN};
use k256::elliptic_curve::ff::PrimeField;
use thresig::domain::KeyId;
use thresig::secret::SecretBytes;
use thresig::server::{self, Listeners};
use thresig::storage::Store;

fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            out.insert(
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            );
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrong_passphrase_refuses_to_start_and_leaves_the_store_byte_for_byte_unchanged() {
    let (_dir, mut c) = cluster(&["a", "b", "c"]).await;
    c.client(0, ADMIN)
        .unwrap()
        .create_key("k", 2, &[])
        .await
        .unwrap();
    c.stop_node(0).await;
    let cfg = c.configs[0].clone();
    let before = snapshot(&cfg.data_dir);
    assert!(before.contains_key(Store::DB_FILE) && before.len() >= 2);
    let listeners = Listeners::bind(
        "127.0.0.1:0".parse().unwrap(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let err = server::start(
        &cfg,
        &SecretBytes::new(b"not the passphrase".to_vec()),
        listeners,
    )
    .unwrap_err();
    assert!(err.to_string().contains("passphrase is wrong"), "{err}");
    assert_eq!(
        snapshot(&cfg.data_dir),
        before,
        "a refused start modified the data directory"
    );

    // The binary says the same and exits non-zero: point its config at a wrong passphrase file.
    let wrong = cfg.data_dir.parent().unwrap().join("wrong-pass");
    std::fs::write(&wrong, "wrong").unwrap();
    let toml = std::fs::read_to_string(cfg.data_dir.parent().unwrap().join("node.toml")).unwrap();
    let toml = toml.replace(
        &format!("{:?}", cfg.data_dir.parent().unwrap().join("passphrase")),
        &format!("{wrong:?}"),
    );
    let cfg_path = cfg.data_dir.parent().unwrap().join("node-wrong.toml");
    std::fs::write(&cfg_path, toml).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_thresig"))
        .args(["node", "run", "--config"])
        .arg(&cfg_path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("passphrase is wrong"), "{stderr}");
    assert_eq!(
        snapshot(&cfg.data_dir),
        before,
        "the binary modified the data directory"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn raw_store_file_contains_no_plaintext_share() {
    let (_dir, mut c) = cluster(&["a", "b", "c"]).await;
    c.client(0, ADMIN)
        .unwrap()
        .create_key("secret-key", 2, &[])
        .await
        .unwrap();
    for i in 0..3 {
        c.stop_node(i).await;
    }
    for cfg in &c.configs {
        let raw = std::fs::read(cfg.data_dir.join(Store::DB_FILE)).unwrap();
        // Positive control: the file is the right one (the key id is stored in clear).
        assert!(
            raw.windows(10).any(|w| w == b"secret-key"),
            "key record not found in {}",
            cfg.name
        );
        let store = Store::open(&cfg.data_dir, &cfg.name, &cfg.passphrase.read().unwrap()).unwrap();
        let share = store
            .share(&KeyId::parse("secret-key").unwrap(), 0)
            .unwrap();
        let party: thresig::protocol::curve::Party<k256::Secp256k1> =
            thresig::codec::decode(share.expose()).unwrap();
        let be: [u8; 32] = party.poly_point.to_repr().into();
        let mut le = be;
        le.reverse();
        for needle in [be, le] {
            assert!(
                !raw.windows(32).any(|w| w == needle),
                "plaintext share scalar found in the store of {}",
                cfg.name
            );
        }
        assert!(
            !raw.windows(16).any(|w| w == &be[..16]),
            "half of the share scalar found in the store of {}",
            cfg.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_process_runs_without_core_dumps() {
    let (_dir, mut c) = cluster(&["a", "b"]).await;
    c.stop_node(0).await;
    // Wait until it says it serves, then read its limits: hardening runs
    // before the listeners open, so a serving process has already dropped
    // them. (A connect to the port is no proof: the stopped in-process node's
    // listener may not be gone yet.)
    let (mut child, rx) = common::spawn_node_process(&c, 0);
    let serving = common::lines_until(&rx, "serving").is_some();
    let limits =
        std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        serving,
        "the node never served on {}",
        c.configs[0].listen_client
    );
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .expect("no core limit line");
    let fields: Vec<&str> = core.split_whitespace().collect();
    assert_eq!(
        &fields[4..6],
        &["0", "0"],
        "core dumps still enabled: {core}"
    );
    c.stop().await;
}
