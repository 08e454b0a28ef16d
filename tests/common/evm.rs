//! The Python interpreter of the end-to-end tests against implementations
//! this project did not write (eth-tester with py-evm, eth-account, web3.py):
//! `THRESIG_EVM_PYTHON` when set, or a virtual environment made once under
//! cargo's target directory with pinned packages from PyPI (`python3 -m
//! venv`, then pip). Without python3 or PyPI a test fails, saying which step
//! did.

use std::path::PathBuf;
use std::process::Command;

const PACKAGES: [&str; 4] = [
    "eth-tester[py-evm]==0.14.0b1",
    "py-evm==0.12.1b1",
    "eth-account==0.14.0",
    "web3==8.0.0",
];

fn run(what: &str, cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The interpreter with eth-tester and py-evm installed.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("THRESIG_EVM_PYTHON") {
        return p.into();
    }
    // Two tests of one binary may both ask first: one makes the environment,
    // the other waits for it (cargo runs test binaries one at a time).
    static MAKING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _making = MAKING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("py-evm-venv");
    let python = venv.join("bin").join("python");
    let ready = venv.join("installed");
    let wanted = PACKAGES.join(" ");
    if std::fs::read_to_string(&ready).ok().as_deref() != Some(wanted.as_str()) {
        eprintln!("setting up {} with {wanted} (once)", venv.display());
        run(
            "python3 -m venv",
            Command::new("python3").args(["-m", "venv"]).arg(&venv),
        );
        run(
            "pip install",
            Command::new(&python)
                .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
                .args(PACKAGES),
        );
        std::fs::write(&ready, &wanted).unwrap();
    }
    python
}
