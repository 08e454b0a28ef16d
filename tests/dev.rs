//! `thresig dev` as a developer runs it (issue 21, item 3): the binary
//! starts a cluster with the keys asked for and prints export lines; the CLI
//! signs with nothing but those lines; Ctrl-C stops it cleanly; started
//! again on the same directory it has the same keys, on new ports.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;

const DIGEST: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

/// `thresig dev` with `args`, and the lines it prints.
fn dev(args: &[&str]) -> (Child, Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_thresig"))
        .arg("dev")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            println!("dev| {line}");
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

/// The `export NAME=value` lines up to "ready".
fn exports(rx: &Receiver<String>) -> (Vec<String>, Vec<(String, String)>) {
    let lines = common::lines_until(rx, "ready; Ctrl-C stops the cluster")
        .expect("thresig dev never said it was ready");
    let env = lines
        .iter()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    (lines, env)
}

/// `thresig sign --key <key>` with only the printed environment.
fn sign(env: &[(String, String)], key: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_thresig"))
        .args(["sign", "--key", key, "--digest", DIGEST])
        .env_clear()
        .envs(env.iter().cloned())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "sign failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

fn public_key(signed: &str) -> String {
    signed
        .lines()
        .find_map(|l| l.strip_prefix("public key"))
        .map(|v| v.trim().to_owned())
        .expect("no public key line")
}

/// Ctrl-C, and the process exits 0 saying where its state stays.
fn interrupt(mut child: Child, rx: &Receiver<String>) {
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    assert!(common::lines_until(rx, "stopped; the cluster and its keys stay in").is_some());
    assert!(child.wait().unwrap().success());
}

#[test]
fn thresig_dev_runs_a_cluster_the_cli_uses_and_keeps_its_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cluster");
    let path = path.to_str().unwrap();
    let started = std::time::Instant::now();
    let (child, rx) = dev(&["--dir", path, "--keys", "val:secp256k1,pk:p256"]);
    let (lines, env) = exports(&rx);
    // Reported, not asserted (timings belong in benchmarks).
    println!(
        "thresig dev: ready with two new keys in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    for want in [
        "THRESIG_ENDPOINT",
        "THRESIG_SERVER",
        "THRESIG_CERTS",
        "THRESIG_IDENTITY",
        "THRESIG_FAILOVER",
    ] {
        assert!(
            env.iter().any(|(k, _)| k == want),
            "no export of {want}: {lines:?}"
        );
    }
    assert!(lines.iter().any(|l| l.starts_with("key pk  p256  2-of-3")));
    // The command it suggests works as printed, with only the exports.
    let suggested = lines
        .iter()
        .find_map(|l| l.strip_prefix("# try: thresig "))
        .expect("no suggested command");
    let out = Command::new(env!("CARGO_BIN_EXE_thresig"))
        .args(suggested.split_whitespace())
        .env_clear()
        .envs(env.iter().cloned())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "`thresig {suggested}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = public_key(&sign(&env, "val"));
    assert!(lines.iter().any(|l| l.contains(&first)), "{lines:?}");
    public_key(&sign(&env, "pk"));
    interrupt(child, &rx);

    // Again on the same directory, with no --keys: the same keys, new ports.
    let (child, rx) = dev(&["--dir", path]);
    let (_, again) = exports(&rx);
    assert_eq!(public_key(&sign(&again, "val")), first);
    interrupt(child, &rx);
}

#[test]
fn thresig_dev_refuses_bad_arguments_before_starting_anything() {
    let dir = tempfile::tempdir().unwrap();
    for (args, says) in [
        (vec!["--threshold", "4"], "--threshold 4"),
        (vec!["--keys", "k:ed448"], "--keys k:ed448"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_thresig"))
            .arg("dev")
            .arg("--dir")
            .arg(dir.path().join("x"))
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!dir.path().join("x").exists(), "{args:?} wrote a cluster");
    }
}
