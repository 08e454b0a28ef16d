//! Connection security (checklist 12, 13, 20): foreign CA, expired and
//! revoked client certificates, identities on the wrong plane, and TLS 1.2
//! clients are all refused; each case has a positive control on the same
//! endpoint.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{client_with, cluster, ADMIN, CLIENT};
use thresig::client::Client;
use thresig::cluster::{LocalCluster, TRUST_DOMAIN};
use thresig::pki::{self, Ca, Role};
use thresig::proto::peer::{peer_client::PeerClient, PingRequest};
use thresig::transport::tls::TlsFiles;

fn files(dir: &Path, role: Role, name: &str) -> TlsFiles {
    let l = pki::Layout {
        dir: dir.to_owned(),
    };
    TlsFiles {
        ca: l.ca_cert(),
        cert: l.cert(role, name),
        key: l.key(role, name),
        crl: None,
        crl_grace: None,
    }
}

fn ca(c: &LocalCluster) -> Ca {
    let cert = std::fs::read_to_string(c.layout.ca_cert()).unwrap();
    let key = std::fs::read_to_string(c.layout.ca_key()).unwrap();
    Ca::load(TRUST_DOMAIN, &cert, &key).unwrap()
}

/// The node accepted the connection: the call succeeded, or the node itself
/// answered (e.g. its policy denies an identity it does not list).
/// A positive control: the client's request is answered (any refusal,
/// PERMISSION_DENIED included, is a failure).
async fn works(client: &mut Client) -> bool {
    client.public_key("k", "").await.is_ok()
}

/// The client's certificate passed the handshake: its request reached the
/// service, which answered it or refused it by policy (PERMISSION_DENIED:
/// the policy does not know this client), not with a connection failure.
async fn connects(client: &mut Client) -> bool {
    match client.public_key("k", "").await {
        Ok(_) => true,
        Err(e) => e.code() == Some(tonic::Code::PermissionDenied),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn foreign_expired_and_revoked_client_certificates_are_refused() {
    let (dir, mut c) = cluster(&["a", "b", "c"]).await;
    c.client(0, ADMIN)
        .unwrap()
        .create_key("k", 2, &[])
        .await
        .unwrap();
    assert!(
        works(&mut c.client(0, CLIENT).unwrap()).await,
        "positive control failed"
    );

    // Another CA, same names and trust domain.
    let other = dir.path().join("other-ca");
    pki::init(&other, TRUST_DOMAIN, &[], &[CLIENT.into()], &[], |_, _| {}).unwrap();
    let mut foreign = files(&other, Role::Client, CLIENT);
    foreign.ca = c.layout.ca_cert(); // trust the real cluster CA for the server side
    let err = client_with(&c, 0, foreign)
        .public_key("k", "")
        .await
        .unwrap_err();
    assert!(err.is_connection_failure(), "foreign CA: {err}");

    // Expired certificate from the right CA.
    let ca = ca(&c);
    ca.issue_to(&c.layout.dir, Role::Client, "expired", -1)
        .unwrap();
    let err = client_with(&c, 0, files(&c.layout.dir, Role::Client, "expired"))
        .public_key("k", "")
        .await
        .unwrap_err();
    assert!(err.is_connection_failure(), "expired: {err}");

    // Revoked certificate: valid until the node loads a CRL naming it.
    ca.issue_to(&c.layout.dir, Role::Client, "revoked", 30)
        .unwrap();
    assert!(
        connects(&mut client_with(
            &c,
            0,
            files(&c.layout.dir, Role::Client, "revoked")
        ))
        .await
    );
    let revoked_pem = std::fs::read_to_string(c.layout.cert(Role::Client, "revoked")).unwrap();
    let crl_path = c.layout.dir.join("crl.pem");
    std::fs::write(&crl_path, ca.crl(&[&revoked_pem], 7).unwrap()).unwrap();
    c.configs[0].tls.crl = Some(crl_path);
    c.stop_node(0).await;
    c.start_node(0).await.unwrap();
    let err = client_with(&c, 0, files(&c.layout.dir, Role::Client, "revoked"))
        .public_key("k", "")
        .await
        .unwrap_err();
    assert!(err.is_connection_failure(), "revoked: {err}");
    assert!(
        works(&mut c.client(0, CLIENT).unwrap()).await,
        "unrevoked client refused after CRL load"
    );
    // The CRL also applies to requests a coordinator forwards: node a, as a
    // participant, refuses a request signed with the revoked certificate.
    let signer = thresig::transport::request_auth::RequestSigner::from_files(&files(
        &c.layout.dir,
        Role::Client,
        "revoked",
    ))
    .unwrap();
    let req = common::client_request("k", [7; 32], "", "from-revoked", None);
    let mut p = common::sign_proposal(&c, &req, 0, &["a", "b"], vec![2; 32]);
    if let thresig::node::Operation::Sign { auth, .. } = &mut p.op {
        **auth = signer.sign(&req).unwrap();
    }
    let err = c.nodes[0]
        .as_ref()
        .unwrap()
        .node
        .on_propose(&thresig::domain::NodeName::parse("b").unwrap(), p)
        .await
        .unwrap_err();
    assert!(
        matches!(err.cause(), thresig::node::NodeError::PermissionDenied(m) if m.contains("certificate refused")),
        "{err}"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn identities_are_refused_on_the_wrong_plane() {
    let (_dir, c) = cluster(&["a", "b", "c"]).await;
    c.client(0, ADMIN)
        .unwrap()
        .create_key("k", 2, &[])
        .await
        .unwrap();

    // A node certificate on the client plane: every call is refused, and
    // the refusal says which certificate the service needs.
    let err = client_with(&c, 0, files(&c.layout.dir, Role::Node, "b"))
        .public_key("k", "")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::PermissionDenied), "{err}");
    assert!(
        err.to_string().contains("node/b may not call this service")
            && err.to_string().contains("needs a client certificate"),
        "node cert on client plane: {err}"
    );
    let err = client_with(&c, 0, files(&c.layout.dir, Role::Node, "b"))
        .list_keys()
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("needs an admin certificate"),
        "node cert on the admin service: {err}"
    );
    // An admin certificate on the signer service (right plane, wrong role).
    let err = c
        .client(0, ADMIN)
        .unwrap()
        .sign("k", [1; 32], "", "")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("permission denied"), "{err}");
    // A client certificate on the admin service.
    let err = c.client(0, CLIENT).unwrap().list_keys().await.unwrap_err();
    assert!(err.to_string().contains("permission denied"), "{err}");

    // Peer plane: a node certificate works, client and admin certificates do not.
    let peer = |tls: TlsFiles| {
        let cfg = thresig::transport::tls::client_config(&tls).unwrap();
        let ch = thresig::transport::dial(
            c.configs[0].listen_peer.into(),
            c.configs[0].name.clone(),
            cfg,
            TRUST_DOMAIN.into(),
            thresig::transport::Connect {
                timeout: Duration::from_secs(3),
                attempts: 1,
            },
        )
        .unwrap();
        PeerClient::new(ch)
    };
    let ping = |wire_version: u32| PingRequest {
        wire_version,
        software_version: "test".into(),
    };
    let pong = peer(files(&c.layout.dir, Role::Node, "b"))
        .ping(ping(thresig::node::WIRE_VERSION))
        .await
        .expect("positive control: node cert on peer plane")
        .into_inner();
    assert_eq!(pong.software_version, env!("CARGO_PKG_VERSION"));
    // The version before is accepted too (a rolling upgrade).
    peer(files(&c.layout.dir, Role::Node, "b"))
        .ping(ping(thresig::node::MIN_WIRE_VERSION))
        .await
        .expect("wire version N-1 is accepted");
    for (role, name) in [(Role::Client, CLIENT), (Role::Admin, ADMIN)] {
        let r = peer(files(&c.layout.dir, role, name))
            .ping(ping(thresig::node::WIRE_VERSION))
            .await;
        let code = r.unwrap_err().code();
        assert!(
            matches!(
                code,
                tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
            ),
            "{} cert on peer plane: {code:?}",
            role.as_str()
        );
    }
    // A peer speaking another wire version is refused with both versions named.
    for unknown in [99, thresig::node::MIN_WIRE_VERSION - 1] {
        let err = peer(files(&c.layout.dir, Role::Node, "b"))
            .ping(ping(unknown))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
        assert!(
            err.message().contains(&format!(
                "this node speaks {} and {} (thresig {}), peer sent {unknown}",
                thresig::node::MIN_WIRE_VERSION,
                thresig::node::WIRE_VERSION,
                env!("CARGO_PKG_VERSION")
            )),
            "{err}"
        );
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls12_only_client_fails_the_handshake() {
    let (_dir, c) = cluster(&["a", "b"]).await;
    let connect = |versions: &'static [&'static rustls::SupportedProtocolVersion]| {
        let cfg = common::raw_tls_client(&c, Role::Client, CLIENT, versions);
        let addr = c.configs[0].listen_client;
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let name = rustls::pki_types::ServerName::try_from("a").unwrap();
            tokio_rustls::TlsConnector::from(Arc::new(cfg))
                .connect(name, tcp)
                .await
                .map(|s| s.get_ref().1.protocol_version())
        }
    };
    static TLS13: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
    static TLS12: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];
    assert_eq!(
        connect(TLS13).await.unwrap(),
        Some(rustls::ProtocolVersion::TLSv1_3),
        "positive control"
    );
    let err = connect(TLS12).await.unwrap_err();
    assert!(
        err.to_string().to_lowercase().contains("protocol") || err.to_string().contains("alert"),
        "{err}"
    );
    c.stop().await;
}
