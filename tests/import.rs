//! Import (issue 21, item 4): a key that exists whole elsewhere is dealt by
//! the admin, each share sealed to its node's certificate key, and moved
//! into the cluster with an approved admin request. The key signs under its
//! own public key (same Ethereum address); a point that does not match its
//! commitments is refused by its node, named, and nothing is stored
//! anywhere; without the quorum the import is refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{approved_by, check_signature, cluster, issue_admins, set_policy, ADMIN, CLIENT};
use rustls::pki_types::pem::PemObject;
use thresig::client::{AdminOp, AdminOutcome, AdminRequest, SignedAdmin};
use thresig::domain::{KeyId, KeyType, NodeName};
use thresig::node::ops::import::params::{certificate_key, seal_point, ImportParams, SealBinding};
use thresig::pki::Role;
use thresig::protocol::scheme;

/// Hardhat's and Anvil's first development account.
const SECRET: &str = "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
const ADDRESS: &str = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";

fn n(s: &str) -> NodeName {
    NodeName::parse(s).unwrap()
}

/// An import request of `SECRET` as `key` to `committee` (2-of-3), each
/// point sealed to its node's certificate; `tamper` flips a bit of that
/// member's point before it is sealed (a dealer that cheats one member).
fn import_request(
    c: &thresig::cluster::LocalCluster,
    key: &str,
    committee: [&str; 3],
    tamper: Option<usize>,
) -> AdminRequest {
    let dealt =
        scheme::import_deal(KeyType::Secp256k1, &hex::decode(SECRET).unwrap(), 2, 3).unwrap();
    let mut params = ImportParams {
        public_key: dealt.commitments[0].clone(),
        chain_code: [0x42; 32],
        commitments: dealt.commitments.clone(),
        sealed: Vec::new(),
    };
    let cluster = c.cluster();
    for (i, name) in committee.iter().enumerate() {
        let pem = std::fs::read(c.layout.cert(Role::Node, name)).unwrap();
        let der = rustls::pki_types::CertificateDer::pem_slice_iter(&pem)
            .next()
            .unwrap()
            .unwrap();
        let mut point = *dealt.points[i];
        if tamper == Some(i) {
            point[31] ^= 1;
        }
        params.sealed.push(
            seal_point(
                &params,
                &certificate_key(&der).unwrap(),
                &point,
                SealBinding {
                    cluster: &cluster,
                    key_id: key,
                    member: name,
                },
            )
            .unwrap(),
        );
    }
    let mut r =
        AdminRequest::new(AdminOp::Import, key, std::time::Duration::from_secs(60)).unwrap();
    r.key_type = Some(KeyType::Secp256k1);
    r.committee = committee.iter().map(|s| n(s)).collect();
    r.threshold = 2;
    r.params = params.encode();
    r.cluster = cluster;
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_imported_key_signs_with_the_same_address_and_a_bad_point_is_refused_by_its_node() {
    let (_dir, c) = cluster(&["a", "b", "c", "d"]).await;

    // b's point does not match the commitments: b refuses, named, and no
    // node stores anything under that name.
    let bad = approved_by(
        &c,
        import_request(&c, "bad", ["a", "b", "c"], Some(1)),
        &[ADMIN],
    );
    let e = c
        .client(0, ADMIN)
        .unwrap()
        .submit_admin(&bad)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(tonic::Code::PermissionDenied), "{e}");
    assert!(e.to_string().contains("node b"), "{e}");
    assert!(
        e.to_string()
            .contains("does not match the import's commitments"),
        "{e}"
    );
    let id = KeyId::parse("bad").unwrap();
    for i in 0..4 {
        assert!(
            c.nodes[i]
                .as_ref()
                .unwrap()
                .node
                .store()
                .key(&id)
                .unwrap()
                .is_none(),
            "node {i} stored something of the refused import"
        );
    }

    let good: SignedAdmin = approved_by(
        &c,
        import_request(&c, "imported", ["b", "c", "d"], None),
        &[ADMIN],
    );
    let out = c
        .client(0, ADMIN)
        .unwrap()
        .submit_admin(&good)
        .await
        .unwrap();
    let AdminOutcome::Created(info) = out else {
        panic!("{out:?}")
    };
    assert_eq!(info.eth_address, ADDRESS, "{info:?}");
    assert_eq!(info.state, "active");
    // a coordinated from outside the committee: it answers with the key as
    // the committee holds it, and holds nothing of it itself.
    assert_eq!(info.committee, ["b", "c", "d"]);
    let imported = KeyId::parse("imported").unwrap();
    let a = &c.nodes[0].as_ref().unwrap().node;
    assert!(a.store().key(&imported).unwrap().is_none());
    for i in 1..4 {
        let res = c
            .client(i, CLIENT)
            .unwrap()
            .sign("imported", [0x61 + i as u8; 32], "", "")
            .await;
        check_signature(&res.unwrap(), &[0x61 + i as u8; 32], &info.public_key);
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_import_without_its_quorum_is_refused() {
    let (_dir, c) = cluster(&["a", "b", "c"]).await;
    issue_admins(&c, &["ops-1", "sec-1"]);
    set_policy(&c, &common::two_admin_policy(&["import"]));
    let one = approved_by(
        &c,
        import_request(&c, "k", ["a", "b", "c"], None),
        &["ops-1"],
    );
    let e = c
        .client(0, ADMIN)
        .unwrap()
        .submit_admin(&one)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(tonic::Code::PermissionDenied), "{e}");
    assert!(e.to_string().contains("missing approvals"), "{e}");
    let both = approved_by(
        &c,
        import_request(&c, "k", ["a", "b", "c"], None),
        &["ops-1", "sec-1"],
    );
    let out = c
        .client(0, ADMIN)
        .unwrap()
        .submit_admin(&both)
        .await
        .unwrap();
    assert!(
        matches!(out, AdminOutcome::Created(ref k) if k.eth_address == ADDRESS),
        "{out:?}"
    );
    c.stop().await;
}

/// The acceptance case: a V3 keystore made by eth-account (a library this
/// project did not write) imports through `thresig keys import`; the key
/// keeps its address and signs, and a second import of the same name is
/// refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_keystore_key_imports_and_signs_with_the_same_address() {
    let (dir, c) = cluster(&["a", "b", "c"]).await;
    let made = tokio::process::Command::new(tokio::task::block_in_place(common::evm::python))
        .args([
            "-c",
            "import json; from eth_account import Account\n\
             a = Account.create()\n\
             print(json.dumps({'address': a.address, 'keystore': Account.encrypt(a.key, 'pw 1')}))",
        ])
        .output()
        .await
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let made: serde_json::Value = serde_json::from_slice(&made.stdout).unwrap();
    let address = made["address"].as_str().unwrap().to_owned();
    let keystore = dir.path().join("keystore.json");
    std::fs::write(&keystore, made["keystore"].to_string()).unwrap();
    let password = dir.path().join("password.txt");
    std::fs::write(&password, "pw 1\n").unwrap();

    let endpoint = c.configs[0].listen_client.to_string();
    let import = |name: &str| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_thresig"));
        cmd.args(["keys", "import", "--name", name, "--keystore"])
            .arg(&keystore)
            .arg("--password-file")
            .arg(&password)
            .args(["--threshold", "2", "--committee", "a,b,c", "--certs"])
            .arg(&c.layout.dir)
            .args([
                "--identity",
                ADMIN,
                "--endpoint",
                &endpoint,
                "--server",
                "a",
            ]);
        cmd
    };
    let out = import("from-keystore").output().await.unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("eth address  {address}")),
        "{stdout}"
    );
    assert!(stderr.contains("existed whole"), "{stderr}");
    assert!(!stderr.contains("pw 1") && !stdout.contains("pw 1"));

    let info = c
        .client(1, ADMIN)
        .unwrap()
        .get_key("from-keystore")
        .await
        .unwrap();
    assert_eq!(info.eth_address, address);
    let res = c
        .client(2, CLIENT)
        .unwrap()
        .sign("from-keystore", [0x77; 32], "", "")
        .await;
    check_signature(&res.unwrap(), &[0x77; 32], &info.public_key);

    let again = import("from-keystore").output().await.unwrap();
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already exists"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    c.stop().await;
}

/// A BIP-39 mnemonic file with a derivation path imports through the CLI:
/// the development-chain phrase's second account keeps its well-known
/// address.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_mnemonic_key_imports_with_its_path() {
    let (dir, c) = cluster(&["a", "b", "c"]).await;
    let words = dir.path().join("words.txt");
    std::fs::write(
        &words,
        "test test test test test test test test test test test junk\n",
    )
    .unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_thresig"))
        .args(["keys", "import", "--name", "from-words", "--mnemonic-file"])
        .arg(&words)
        .args(["--path", "m/44'/60'/0'/0/1"])
        .args(["--threshold", "2", "--committee", "a,b,c", "--certs"])
        .arg(&c.layout.dir)
        .args(["--identity", ADMIN, "--endpoint"])
        .arg(c.configs[0].listen_client.to_string())
        .args(["--server", "a"])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("eth address  0x70997970C51812dc3A010C7d01b50e0d17dc79C8"),
        "{stdout}"
    );
    assert!(!stderr.contains("junk") && !stdout.contains("junk"));
    c.stop().await;
}
