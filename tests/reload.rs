//! Certificate, CRL and CA bundle reload without a restart (checklist 32):
//! `node reload` (the admin RPC SIGHUP also runs) rereads them; new
//! handshakes use the new material while the node keeps serving; a bad file
//! keeps the old material and says why; a bundle of the old and a new CA lets
//! certificates move to the new CA.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{check_signature, client_with, cluster, ADMIN, CLIENT};
use thresig::cluster::{LocalCluster, TRUST_DOMAIN};
use thresig::pki::{Ca, Role};
use thresig::transport::tls::TlsFiles;

fn client_files(c: &LocalCluster, name: &str) -> TlsFiles {
    TlsFiles {
        ca: c.layout.ca_cert(),
        cert: c.layout.cert(Role::Client, name),
        key: c.layout.key(Role::Client, name),
        crl: None,
        crl_grace: None,
    }
}

/// The DER of the first certificate in a PEM file.
fn leaf_der(path: &Path) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_file(path)
        .unwrap()
        .to_vec()
}

/// The certificate node `i` presents to a new TLS connection on its client plane.
async fn served_certificate(c: &LocalCluster, i: usize) -> Vec<u8> {
    let cfg = common::raw_tls_client(c, Role::Client, CLIENT, &[&rustls::version::TLS13]);
    let tcp = tokio::net::TcpStream::connect(c.configs[i].listen_client)
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from(c.configs[i].name.to_string()).unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

async fn reload(c: &LocalCluster, i: usize) -> thresig::api::ReloadReport {
    c.client(i, ADMIN).unwrap().reload_node().await.unwrap()
}

async fn signs(c: &LocalCluster, i: usize, d: u8, pk: &[u8]) {
    let digest = [d; 32];
    let resp = c
        .client(i, CLIENT)
        .unwrap()
        .sign("k", digest, "", "")
        .await
        .unwrap_or_else(|e| panic!("signing through node {i}: {e}"));
    check_signature(&resp, &digest, pk);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn certificate_crl_and_ca_bundle_reload_without_a_restart() {
    let (_dir, mut c) = cluster(&["a", "b", "c"]).await;
    let pk = c
        .client(0, ADMIN)
        .unwrap()
        .create_key("k", 2, &[])
        .await
        .unwrap()
        .public_key;
    let ca = {
        let cert = std::fs::read_to_string(c.layout.ca_cert()).unwrap();
        let key = std::fs::read_to_string(c.layout.ca_key()).unwrap();
        Ca::load(TRUST_DOMAIN, &cert, &key).unwrap()
    };
    // Setup: node a is configured with a CRL file that revokes nothing yet.
    let crl = c.layout.dir.join("crl.pem");
    std::fs::write(&crl, ca.crl(&[], 7).unwrap()).unwrap();
    c.configs[0].tls.crl = Some(crl.clone());
    c.stop_node(0).await;
    c.start_node(0).await.unwrap();

    // 1. A CRL revoking a client takes effect at the reload, with no restart.
    ca.issue_to(&c.layout.dir, Role::Client, "leaver", 30)
        .unwrap();
    let leaver = || client_with(&c, 0, client_files(&c, "leaver"));
    let denied_or_ok = |r: Result<_, thresig::client::ClientError>| match r {
        Ok(_) => true,
        Err(e) => e.code() == Some(tonic::Code::PermissionDenied),
    };
    assert!(
        denied_or_ok(leaver().public_key("k", "").await),
        "positive control"
    );
    let leaver_pem = std::fs::read_to_string(c.layout.cert(Role::Client, "leaver")).unwrap();
    std::fs::write(&crl, ca.crl(&[&leaver_pem], 7).unwrap()).unwrap();
    let report = reload(&c, 0).await;
    assert!(report.ok(), "{:?}", report.lines());
    let err = leaver().public_key("k", "").await.unwrap_err();
    assert!(
        err.is_connection_failure(),
        "revoked client after reload: {err}"
    );
    signs(&c, 0, 1, &pk).await;

    // 2. A new certificate and key for node a: new handshakes get it, and
    // the other nodes accept it (b signs through a new connection to a).
    let before = served_certificate(&c, 0).await;
    assert_eq!(before, leaf_der(&c.configs[0].tls.cert));
    let fresh = ca.issue(Role::Node, "a", 30).unwrap();
    std::fs::write(&c.configs[0].tls.cert, fresh.cert_pem.as_bytes()).unwrap();
    std::fs::write(&c.configs[0].tls.key, fresh.key_pem.expose()).unwrap();
    let report = reload(&c, 0).await;
    assert!(report.ok(), "{:?}", report.lines());
    let after = served_certificate(&c, 0).await;
    assert_ne!(after, before, "node a still serves its old certificate");
    assert_eq!(after, leaf_der(&c.configs[0].tls.cert));
    signs(&c, 0, 2, &pk).await;
    signs(&c, 1, 3, &pk).await;

    // 3. A bad file keeps the old material and says why; the node serves on.
    let good_cert = std::fs::read(&c.configs[0].tls.cert).unwrap();
    std::fs::write(&c.configs[0].tls.cert, b"not a certificate").unwrap();
    let report = reload(&c, 0).await;
    let why = report.tls.clone().unwrap_err();
    assert!(why.contains("a.pem"), "the refusal names no file: {why}");
    assert!(report.policy.is_ok(), "{:?}", report.lines());
    assert_eq!(
        served_certificate(&c, 0).await,
        after,
        "the old material did not stay"
    );
    signs(&c, 0, 4, &pk).await;
    // A certificate whose key does not match is refused too.
    let other = ca.issue(Role::Node, "a", 30).unwrap();
    std::fs::write(&c.configs[0].tls.cert, other.cert_pem.as_bytes()).unwrap();
    let report = reload(&c, 0).await;
    assert!(
        report.tls.is_err(),
        "mismatched key accepted: {:?}",
        report.lines()
    );
    std::fs::write(&c.configs[0].tls.cert, &good_cert).unwrap();

    // 4. CA rollover: every node trusts a bundle of the old and the new CA,
    // then a client with a certificate from the new CA signs (every
    // participant checks its request signature against the bundle).
    // The new CA carries the old one's cluster id (`certs init --rollover-of`).
    let new_dir = c.layout.dir.join("ca2");
    let cluster_id = thresig::transport::tls::cluster_id(&c.layout.ca_cert()).unwrap();
    let layout2 = thresig::pki::init_for(
        &new_dir,
        TRUST_DOMAIN,
        Some(&cluster_id),
        &[],
        &["rolled".into()],
        &[],
        |_, _| {},
    )
    .unwrap();
    let old_ca = std::fs::read_to_string(c.layout.ca_cert()).unwrap();
    let new_ca = std::fs::read_to_string(layout2.ca_cert()).unwrap();
    let rolled = TlsFiles {
        ca: c.layout.ca_cert(),
        cert: layout2.cert(Role::Client, "rolled"),
        key: layout2.key(Role::Client, "rolled"),
        crl: None,
        crl_grace: None,
    };
    let err = client_with(&c, 0, rolled.clone())
        .public_key("k", "")
        .await
        .unwrap_err();
    assert!(
        err.is_connection_failure(),
        "new CA trusted before the bundle: {err}"
    );
    std::fs::write(c.layout.ca_cert(), format!("{old_ca}{new_ca}")).unwrap();
    // Node a checks revocation: its CRL file needs the new CA's CRL too (a
    // certificate whose CA has no CRL there is refused, not waved through).
    let ca2 = Ca::load(
        TRUST_DOMAIN,
        &new_ca,
        &std::fs::read_to_string(layout2.ca_key()).unwrap(),
    )
    .unwrap();
    std::fs::write(
        &crl,
        format!(
            "{}{}",
            ca.crl(&[&leaver_pem], 7).unwrap(),
            ca2.crl(&[], 7).unwrap()
        ),
    )
    .unwrap();
    for i in 0..3 {
        let report = reload(&c, i).await;
        assert!(report.ok(), "node {i}: {:?}", report.lines());
    }
    if let Err(e) = client_with(&c, 0, rolled).public_key("k", "").await {
        assert_eq!(
            e.code(),
            Some(tonic::Code::PermissionDenied),
            "a certificate from the new CA is refused after the bundle: {e}"
        );
    }
    signs(&c, 2, 5, &pk).await;
    c.stop().await;
}
