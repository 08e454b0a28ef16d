//! A running `thresig node run` process rereads its policy on SIGHUP; a bad
//! file is reported and the previous policy stays in force.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{cluster, ADMIN};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sighup_reloads_the_policy_and_a_bad_file_keeps_the_old_one() {
    let (_dir, mut c) = cluster(&["a", "b"]).await;
    c.stop_node(0).await;
    let policy = c.root.join("policy.toml");
    std::fs::write(
        &policy,
        "[[admin]]\nname = \"ops\"\noperations = [\"create\"]\n",
    )
    .unwrap();
    let cfg_path = c.configs[0].data_dir.parent().unwrap().join("node.toml");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_thresig"))
        .args(["node", "run", "--config"])
        .arg(&cfg_path)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    let hup = || {
        assert!(std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success());
    };
    let mut admin = c.client(0, ADMIN).unwrap();
    // Wait until it serves; reading keys is not allowed yet.
    let mut denied = None;
    for _ in 0..100 {
        match admin.list_keys().await {
            Err(e) if e.code() == Some(tonic::Code::PermissionDenied) => {
                denied = Some(e);
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let denied = denied.expect("the node never answered with its policy");
    assert!(denied.to_string().contains("admin[0]"), "{denied}");

    std::fs::write(
        &policy,
        "[[admin]]\nname = \"ops\"\noperations = [\"read\"]\n",
    )
    .unwrap();
    hup();
    let mut allowed = false;
    for _ in 0..50 {
        if admin.list_keys().await.is_ok() {
            allowed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(allowed, "SIGHUP did not reload the policy");

    std::fs::write(
        &policy,
        "[[admin]]\nname = \"ops\"\noperations = [\"format-disk\"]\n",
    )
    .unwrap();
    hup();
    tokio::time::sleep(Duration::from_millis(500)).await;
    admin
        .list_keys()
        .await
        .expect("a bad policy file replaced the good one");

    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("policy not reloaded"), "{stderr}");
    // Its stderr is a pipe, not a terminal: no colour codes in the log.
    assert!(
        !stderr.contains('\u{1b}'),
        "ANSI codes in a piped log: {stderr}"
    );
    assert!(stderr.contains("unknown operation"), "{stderr}");
    c.stop().await;
}
