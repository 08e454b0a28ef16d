//! The Python client package (issue 21, item 2) against a real local
//! cluster: `clients/python` is installed (its gRPC stubs generated from
//! `proto/` at build time) into the test's Python environment and its pytest
//! suite runs, starting `thresig dev` with this build's binary.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::PathBuf;
use std::process::Command;

#[test]
fn the_python_client_signs_fails_over_and_reports_errors_against_a_real_cluster() {
    let python = common::evm::python();
    let package = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients/python");
    let install = Command::new(&python)
        .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
        .arg(format!("{}[test]", package.display()))
        .output()
        .unwrap();
    assert!(
        install.status.success(),
        "pip install ./clients/python failed:\n{}{}",
        String::from_utf8_lossy(&install.stdout),
        String::from_utf8_lossy(&install.stderr)
    );
    let out = Command::new(&python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(package.join("tests"))
        .env("THRESIG_BIN", env!("CARGO_BIN_EXE_thresig"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "pytest failed:\n{text}");
    assert!(text.contains(" passed"), "pytest ran nothing:\n{text}");
    assert!(!text.contains("skipped"), "pytest skipped tests:\n{text}");
}
