//! Checklist 27: everything a node logs during a whole keygen, signatures
//! and a rotation (every level, every target), and the `Debug` output of
//! what the nodes hold, is searched for the bytes of every share, old and
//! new, and for the store passphrases. None may appear.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::{check_signature, cluster, ADMIN, CLIENT};
use thresig::domain::KeyId;

/// Everything written to the log, at every level.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every 16-byte window of `secret` with at least 10 distinct byte values
/// (so a run of zeros or a length prefix is not mistaken for a leak).
fn windows(secret: &[u8]) -> Vec<[u8; 16]> {
    secret
        .windows(16)
        .filter(|w| w.iter().collect::<std::collections::BTreeSet<_>>().len() >= 10)
        .map(|w| w.try_into().unwrap())
        .collect()
}

/// The byte strings written in `text` as hex (runs of at least 32 hex
/// digits, read at both alignments) or as the `Debug` form of a byte slice
/// (runs of at least 16 numbers below 256 separated by ", ").
fn written_bytes(text: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let start = i;
        while i < b.len() && b[i].is_ascii_hexdigit() {
            i += 1;
        }
        if i - start >= 32 {
            for shift in [0, 1] {
                let run = &text[start + shift..i];
                let even = &run[..run.len() / 2 * 2];
                out.push(hex::decode(even).unwrap());
            }
        }
        i += 1;
    }
    for piece in text.split(|ch: char| !(ch.is_ascii_digit() || ch == ',' || ch == ' ')) {
        let nums: Vec<u8> = piece
            .split(", ")
            .map_while(|n| n.trim().parse::<u8>().ok())
            .collect();
        if nums.len() >= 16 {
            out.push(nums);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_share_or_passphrase_appears_in_logs_or_debug_output() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_env_filter("trace")
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish(),
    )
    .unwrap();
    let (dir, c) = cluster(&["a", "b", "c"]).await;
    let info = c
        .client(0, ADMIN)
        .unwrap()
        .create_key("k", 2, &[])
        .await
        .unwrap();
    let key = KeyId::parse("k").unwrap();
    let mut secrets: Vec<(String, Vec<u8>)> = Vec::new();
    let mut debug = String::new();
    for (i, n) in c.nodes.iter().enumerate() {
        let node = &n.as_ref().unwrap().node;
        secrets.push((
            format!("share of node {i}, epoch 0"),
            node.store().share(&key, 0).unwrap().expose().to_vec(),
        ));
    }
    for i in 0..3u8 {
        let d = [0x27 + i; 32];
        let resp = c
            .client(usize::from(i), CLIENT)
            .unwrap()
            .sign("k", d, "m/0/1", "")
            .await
            .unwrap();
        check_signature(&resp, &d, &resp.public_key);
    }
    let rotated = c.client(1, ADMIN).unwrap().rotate_key("k").await.unwrap();
    assert_eq!(rotated.new_epoch, 1);
    let d = [0x2A; 32];
    let resp = c
        .client(2, CLIENT)
        .unwrap()
        .sign("k", d, "", "")
        .await
        .unwrap();
    check_signature(&resp, &d, &info.public_key);
    for (i, n) in c.nodes.iter().enumerate() {
        let node = &n.as_ref().unwrap().node;
        let share = node.store().share(&key, 1).unwrap();
        debug += &format!("{share:?}\n{:?}\n{:?}\n", node.store(), c.configs[i]);
        secrets.push((
            format!("share of node {i}, epoch 1"),
            share.expose().to_vec(),
        ));
        let pass = std::fs::read(
            dir.path()
                .join("nodes")
                .join(["a", "b", "c"][i])
                .join("passphrase"),
        )
        .unwrap();
        secrets.push((format!("store passphrase of node {i}"), pass));
    }
    c.stop().await;
    let log = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    assert!(
        log.len() > 100_000 && log.contains("TRACE") && log.contains("refreshed share staged"),
        "the capture missed the run ({} bytes)",
        log.len()
    );
    let text = format!("{log}\n{debug}");
    let mut secret_windows: std::collections::HashMap<[u8; 16], &str> = Default::default();
    for (what, secret) in &secrets {
        if what.starts_with("store passphrase") {
            let pass = String::from_utf8_lossy(secret).trim().to_owned();
            assert!(pass.len() >= 16, "{what}: too short to look for");
            assert!(
                !text.contains(pass.as_str()),
                "{what} appears in the logs or Debug output"
            );
            continue;
        }
        let w = windows(secret);
        assert!(!w.is_empty(), "{what}: nothing to look for");
        for w in w {
            secret_windows.insert(w, what.as_str());
        }
    }
    let written = written_bytes(&text);
    let mut checked = 0usize;
    for bytes in &written {
        for w in bytes.windows(16) {
            checked += 1;
            if let Some(what) = secret_windows.get(w) {
                panic!("{what} appears in the logs or Debug output");
            }
        }
    }
    // The search can find what it looks for: a share written as hex and as
    // a byte slice is found.
    let (_, probe) = &secrets[0];
    let planted = format!("x {} y {:?}", hex::encode(probe), &probe[..64]);
    let found = written_bytes(&planted)
        .iter()
        .flat_map(|b| {
            b.windows(16)
                .map(|w| secret_windows.contains_key(w))
                .collect::<Vec<_>>()
        })
        .filter(|hit| *hit)
        .count();
    assert!(found > 0, "the search cannot find a share it was shown");
    let prints = secret_windows.len();
    eprintln!(
        "searched {} bytes of logs and Debug output ({} byte strings written as hex or byte \
         lists, {checked} windows) for {prints} windows of {} secrets: none found",
        text.len(),
        written.len(),
        secrets.len()
    );
}
