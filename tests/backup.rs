//! Backup drill (issue 13, checklist 26): back up a running node, sign at
//! slots, rotate, restore the backup onto the node. The restored node then
//! refuses to sign with the old epoch (as coordinator and as participant),
//! takes the committee's slot watermark and refuses a slot below it, and is
//! back to normal after `keys repair`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{check_signature, cluster, ADMIN, CLIENT};
use thresig::client::Slot;
use thresig::domain::KeyId;

fn slot(height: u64) -> Slot {
    Slot {
        scope: "chain:val-1".into(),
        height,
        round: 0,
        step: 0,
    }
}

async fn sign_at(
    c: &thresig::cluster::LocalCluster,
    i: usize,
    height: u64,
    fill: u8,
    id: &str,
) -> Result<thresig::proto::signer::SignResponse, thresig::client::ClientError> {
    c.client(i, CLIENT)
        .unwrap()
        .sign_at("val", [fill; 32], "", id, slot(height))
        .await
}

fn cli(args: &[&std::ffi::OsStr]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_thresig"))
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restored_node_never_signs_with_an_old_epoch_or_below_the_clusters_watermark() {
    let (dir, mut c) = cluster(&["a", "b", "c"]).await;
    let key = KeyId::parse("val").unwrap();
    let info = c
        .client(0, ADMIN)
        .unwrap()
        .create_key("val", 2, &[])
        .await
        .unwrap();
    let r = sign_at(&c, 0, 10, 0x10, "h10").await.unwrap();
    check_signature(&r, &[0x10; 32], &info.public_key);

    // The running node takes the backup; the file checks out, offline and
    // with the CLI, and a flipped byte does not.
    let backup = c.client(0, ADMIN).unwrap().backup_store().await.unwrap();
    let pass = c.configs[0].passphrase.read().unwrap();
    let header = thresig::storage::verify_backup(&backup, &pass).unwrap();
    assert_eq!(header.node, "a");
    assert_eq!(header.keys.len(), 1);
    let epoch_at_backup = header.keys[0].epoch;
    let file = dir.path().join("a.backup");
    std::fs::write(&file, &backup).unwrap();
    let config = c.configs[0].data_dir.parent().unwrap().join("node.toml");
    let ok = cli(&[
        "backup".as_ref(),
        "verify".as_ref(),
        file.as_os_str(),
        "--config".as_ref(),
        config.as_os_str(),
    ]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("MAC ok"));
    let mut bad = backup.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 1;
    let tampered = dir.path().join("a.tampered");
    std::fs::write(&tampered, &bad).unwrap();
    let refused = cli(&[
        "backup".as_ref(),
        "verify".as_ref(),
        tampered.as_os_str(),
        "--config".as_ref(),
        config.as_os_str(),
    ]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("MAC does not match"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    // After the backup: a higher slot is signed (b and c record it too), and
    // the key is rotated.
    let r = sign_at(&c, 1, 20, 0x20, "h20").await.unwrap();
    check_signature(&r, &[0x20; 32], &info.public_key);
    let rotated = c.client(1, ADMIN).unwrap().rotate_key("val").await.unwrap();
    assert!(rotated.new_epoch > epoch_at_backup);

    // a is restored from the backup: not over its old store (refused,
    // nothing written), but into an empty data directory.
    c.stop_node(0).await;
    let data = c.configs[0].data_dir.clone();
    let e = thresig::storage::restore_backup(&backup, &pass, &data, 1).unwrap_err();
    assert!(e.to_string().contains("already holds a store"), "{e}");
    std::fs::rename(&data, data.with_extension("before-restore")).unwrap();
    let restored = thresig::storage::restore_backup(&backup, &pass, &data, 1).unwrap();
    assert_eq!(restored.keys[0].epoch, epoch_at_backup);
    c.start_node(0).await.unwrap();

    // The old epoch never signs: a refuses as coordinator, and names the cure.
    let e = sign_at(&c, 0, 30, 0x30, "h30-early").await.unwrap_err();
    assert_eq!(e.code(), Some(tonic::Code::FailedPrecondition), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("restored from a backup"), "{msg}");
    assert!(msg.contains(&format!("epoch {epoch_at_backup}")), "{msg}");
    assert!(msg.contains("thresig keys repair val --node a"), "{msg}");
    // ... and as a participant: b signs without it.
    let r = sign_at(&c, 1, 31, 0x31, "h31").await.unwrap();
    check_signature(&r, &[0x31; 32], &info.public_key);
    assert!(
        !r.participants.contains(&"a".to_string()),
        "{:?}",
        r.participants
    );

    // keys repair gives a a share of the current epoch.
    c.client(1, ADMIN)
        .unwrap()
        .repair_key("val", "a")
        .await
        .unwrap();

    // Its first request has the committee confirm the key: a takes the
    // cluster's watermark (31, signed after the backup, which knew only 10)
    // and refuses a slot below it itself.
    let e = sign_at(&c, 0, 25, 0x25, "h25").await.unwrap_err();
    assert!(e.to_string().contains("below its watermark"), "{e}");
    let store = c.nodes[0].as_ref().unwrap().node.store();
    let w = store.watermark(&key, "chain:val-1").unwrap().unwrap();
    assert_eq!((w.height, w.digest), (31, [0x31; 32]));
    assert!(
        store.restored(&key).unwrap().is_none(),
        "the restore mark is lifted"
    );

    // Back to normal: a coordinates a new slot and signs.
    let r = sign_at(&c, 0, 40, 0x40, "h40").await.unwrap();
    check_signature(&r, &[0x40; 32], &info.public_key);
    assert!(
        r.participants.contains(&"a".to_string()),
        "{:?}",
        r.participants
    );
    c.stop().await;
}

/// A backup taken before a reshare moved the key to another committee:
/// every other member of the restored record's committee left it and holds
/// no share, and "no share" confirms nothing, so the restored share stays
/// refused (issue 19, finding "restore treats holds no share as agreement").
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restored_node_is_not_confirmed_by_nodes_without_a_share() {
    let (_dir, mut c) = cluster(&["a", "b", "c", "d", "e"]).await;
    let key = KeyId::parse("val").unwrap();
    let old: Vec<String> = ["a", "b", "c"].iter().map(|s| (*s).to_owned()).collect();
    let info = c
        .client(0, ADMIN)
        .unwrap()
        .create_key("val", 2, &old)
        .await
        .unwrap();
    let backup = c.client(0, ADMIN).unwrap().backup_store().await.unwrap();
    let pass = c.configs[0].passphrase.read().unwrap();
    let new: Vec<String> = ["d", "e"].iter().map(|s| (*s).to_owned()).collect();
    let r = c
        .client(0, ADMIN)
        .unwrap()
        .reshare_key("val", &new, 2)
        .await
        .unwrap();
    assert!(r.not_retired.is_empty(), "{:?}", r.not_retired);

    c.stop_node(0).await;
    let data = c.configs[0].data_dir.clone();
    std::fs::rename(&data, data.with_extension("before-restore")).unwrap();
    thresig::storage::restore_backup(&backup, &pass, &data, 1).unwrap();
    c.start_node(0).await.unwrap();

    let e = sign_at(&c, 0, 50, 0x50, "h50").await.unwrap_err();
    assert_eq!(e.code(), Some(tonic::Code::FailedPrecondition), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("only once 2 other committee nodes hold its epoch 0"),
        "{msg}"
    );
    assert!(
        msg.contains("b (holds no share)") && msg.contains("c (holds no share)"),
        "{msg}"
    );
    let store = c.nodes[0].as_ref().unwrap().node.store();
    assert!(
        store.restored(&key).unwrap().is_some(),
        "the restore mark stays"
    );
    // The key lives on in its new committee.
    let r = sign_at(&c, 3, 51, 0x51, "h51").await.unwrap();
    check_signature(&r, &[0x51; 32], &info.public_key);
    c.stop().await;
}
