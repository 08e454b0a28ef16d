//! Shared helpers for the integration tests: an in-process cluster on
//! 127.0.0.1 ports chosen by the OS, and independent signature checks.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

pub mod evm;

use k256::ecdsa::signature::hazmat::PrehashVerifier;
use k256::ecdsa::{RecoveryId, Signature, VerifyingKey};
use thresig::client::SignResponse;
use thresig::cluster::LocalCluster;
use thresig::node::Timeouts;

#[allow(unused_imports)]
pub use thresig::cluster::{ADMIN, CLIENT};

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
}

pub async fn cluster(names: &[&str]) -> (tempfile::TempDir, LocalCluster) {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let timeouts = Timeouts {
        round: Duration::from_secs(5),
        ping: Duration::from_secs(1),
    };
    let c = LocalCluster::start(dir.path(), names, timeouts)
        .await
        .unwrap();
    (dir, c)
}

/// Verifies with k256 alone: signature under `pk`, low-S, and the recovery
/// id recovers `pk`; the DER and r||s||v forms agree with r and s.
pub fn check_signature(resp: &SignResponse, digest: &[u8; 32], pk: &[u8]) {
    let vk = VerifyingKey::from_sec1_bytes(pk).unwrap();
    let r: [u8; 32] = resp.r.as_slice().try_into().unwrap();
    let s: [u8; 32] = resp.s.as_slice().try_into().unwrap();
    let sig = Signature::from_scalars(r, s).unwrap();
    assert_eq!(sig.normalize_s(), sig, "signature is not low-S");
    vk.verify_prehash(digest, &sig)
        .expect("signature does not verify");
    let rid = RecoveryId::from_byte(resp.recovery_id as u8).unwrap();
    assert_eq!(
        VerifyingKey::recover_from_prehash(digest, &sig, rid).unwrap(),
        vk,
        "recovery id does not recover the key"
    );
    assert_eq!(Signature::from_der(&resp.der).unwrap(), sig);
    assert_eq!(resp.rsv.len(), 65);
    assert_eq!(&resp.rsv[..32], &r);
    assert_eq!(&resp.rsv[32..64], &s);
    assert_eq!(resp.rsv[64] as u32, resp.recovery_id);
    assert_eq!(resp.public_key, pk);
}

/// The local cluster client's request signer (its certificate key).
pub fn client_signer(
    c: &thresig::cluster::LocalCluster,
) -> thresig::transport::request_auth::RequestSigner {
    use thresig::pki::Role;
    let files = thresig::transport::tls::TlsFiles {
        ca: c.layout.ca_cert(),
        cert: c.layout.cert(Role::Client, CLIENT),
        key: c.layout.key(Role::Client, CLIENT),
        crl: None,
        crl_grace: None,
    };
    thresig::transport::request_auth::RequestSigner::from_files(&files).unwrap()
}

/// A client request signed by the local cluster's client, expiring in a minute.
pub fn client_request(
    key: &str,
    digest: [u8; 32],
    path: &str,
    request_id: &str,
    slot: Option<thresig::client::Slot>,
) -> thresig::client::ClientRequest {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    thresig::client::ClientRequest {
        key_id: thresig::domain::KeyId::parse(key).unwrap(),
        digest: thresig::domain::Digest32(digest),
        path: thresig::domain::DerivationPath::parse(path).unwrap(),
        slot,
        request_id: request_id.into(),
        expiry_unix: now + 60,
        payload: None,
    }
}

/// What a coordinator sends participants for `request` (signed by the
/// cluster's client), with the eid every participant expects.
pub fn sign_proposal(
    c: &thresig::cluster::LocalCluster,
    request: &thresig::client::ClientRequest,
    epoch: u64,
    participants: &[&str],
    nonce: Vec<u8>,
) -> thresig::node::Proposal {
    use thresig::domain::NodeName;
    let participants: Vec<NodeName> = participants
        .iter()
        .map(|p| NodeName::parse(p).unwrap())
        .collect();
    let auth = client_signer(c).sign(request).unwrap();
    let eid = thresig::node::ops::sign::eid(request, epoch, &participants, &nonce);
    thresig::node::Proposal {
        eid,
        nonce,
        admin: None,
        op: thresig::node::Operation::Sign {
            epoch,
            lifecycle_seq: 0,
            request: Box::new(request.clone()),
            auth: Box::new(auth),
            participants,
        },
    }
}

/// A raw gRPC signer client to node `i`'s client plane, as the cluster's
/// client (for requests the `Client` would not build).
pub fn raw_signer(
    c: &thresig::cluster::LocalCluster,
    i: usize,
) -> thresig::proto::signer::signer_client::SignerClient<tonic::transport::Channel> {
    let ch = thresig::transport::dial(
        c.configs[i].listen_client.into(),
        c.configs[i].name.clone(),
        thresig::transport::tls::client_config(&thresig::transport::tls::TlsFiles {
            ca: c.layout.ca_cert(),
            cert: c.layout.cert(thresig::pki::Role::Client, CLIENT),
            key: c.layout.key(thresig::pki::Role::Client, CLIENT),
            crl: None,
            crl_grace: None,
        })
        .unwrap(),
        "thresig.local".into(),
        thresig::transport::Connect {
            timeout: Duration::from_secs(3),
            attempts: 1,
        },
    )
    .unwrap();
    thresig::proto::signer::signer_client::SignerClient::new(ch)
}

/// The local cluster admin's request signer (its certificate key).
pub fn admin_signer(
    c: &thresig::cluster::LocalCluster,
    admin: &str,
) -> thresig::transport::request_auth::RequestSigner {
    use thresig::pki::Role;
    let files = thresig::transport::tls::TlsFiles {
        ca: c.layout.ca_cert(),
        cert: c.layout.cert(Role::Admin, admin),
        key: c.layout.key(Role::Admin, admin),
        crl: None,
        crl_grace: None,
    };
    thresig::transport::request_auth::RequestSigner::from_files(&files).unwrap()
}

/// `request` approved by each of `admins` (certificates in the cluster's layout).
pub fn approved_by(
    c: &thresig::cluster::LocalCluster,
    mut request: thresig::client::AdminRequest,
    admins: &[&str],
) -> thresig::client::SignedAdmin {
    if request.cluster.is_empty() {
        request.cluster = c.cluster();
    }
    let approvals = admins
        .iter()
        .map(|a| admin_signer(c, a).approve(&request).unwrap())
        .collect();
    thresig::client::SignedAdmin { request, approvals }
}

/// A coordinator nonce that binds `signed`: `fill` repeated, then its digest.
pub fn bound_nonce(signed: &thresig::client::SignedAdmin, fill: u8) -> Vec<u8> {
    let mut n = vec![fill; thresig::node::admin_request::NONCE_RANDOM];
    n.extend_from_slice(&signed.digest());
    n
}

/// A new admin request for `op` on `key`, valid for a minute.
pub fn admin_request(op: thresig::client::AdminOp, key: &str) -> thresig::client::AdminRequest {
    thresig::client::AdminRequest::new(op, key, Duration::from_secs(60)).unwrap()
}

/// A new freeze, unfreeze or delete request for `key`, naming the key's
/// lifecycle sequence as the first running node holds it.
pub fn lifecycle_request(
    c: &thresig::cluster::LocalCluster,
    op: thresig::client::AdminOp,
    key: &str,
) -> thresig::client::AdminRequest {
    let id = thresig::domain::KeyId::parse(key).unwrap();
    let node = c.nodes.iter().flatten().next().expect("no node running");
    let mut r = admin_request(op, key);
    r.lifecycle_seq = node.node.key(&id).unwrap().lifecycle_seq;
    r
}

/// A hostile node: it holds node `i`'s real certificate of the roster and
/// sends whatever peer RPCs a test builds to the other nodes, which see it as
/// that node (the sender is the certificate identity).
pub struct Hostile {
    pub name: thresig::domain::NodeName,
    net: thresig::transport::peer::GrpcPeerNet,
}

impl Hostile {
    pub fn as_node(c: &thresig::cluster::LocalCluster, i: usize) -> Self {
        let cfg = &c.configs[i];
        let peers: Vec<_> = cfg
            .peers
            .iter()
            .filter(|p| p.name != cfg.name)
            .map(|p| (p.name.clone(), p.peer_addr.clone()))
            .collect();
        let net = thresig::transport::peer::GrpcPeerNet::new(
            &peers,
            thresig::transport::tls::client_config(&cfg.tls)
                .unwrap()
                .into(),
            &cfg.trust_domain,
            Duration::from_secs(3),
            cfg.timeouts,
        )
        .unwrap();
        Self {
            name: cfg.name.clone(),
            net,
        }
    }

    /// Sends `p` to node `to` as this node; the answer or the refusal.
    pub async fn propose(
        &self,
        to: &str,
        p: thresig::node::Proposal,
    ) -> Result<thresig::node::Outcome, thresig::node::NodeError> {
        use thresig::node::PeerNet;
        self.net
            .propose(&thresig::domain::NodeName::parse(to).unwrap(), p)
            .await
    }

    /// Sends node `to` a protocol message for session `eid` as this node.
    pub async fn deliver(
        &self,
        to: &str,
        eid: thresig::domain::ExecutionId,
        round: u32,
        payload: Vec<u8>,
    ) -> Result<(), thresig::node::NetError> {
        use thresig::node::PeerNet;
        self.net
            .deliver(
                &thresig::domain::NodeName::parse(to).unwrap(),
                eid,
                round,
                payload,
            )
            .await
    }
}

/// Issues more admin certificates from the cluster's CA (for quorum tests).
pub fn issue_admins(c: &thresig::cluster::LocalCluster, names: &[&str]) {
    use thresig::pki::{Ca, Role};
    let ca = Ca::load(
        thresig::cluster::TRUST_DOMAIN,
        &std::fs::read_to_string(c.layout.ca_cert()).unwrap(),
        &std::fs::read_to_string(c.layout.ca_key()).unwrap(),
    )
    .unwrap();
    for n in names {
        ca.issue_to(&c.layout.dir, Role::Admin, n, 30).unwrap();
    }
}

/// Replaces every running node's policy file with `text` and reloads it.
pub fn set_policy(c: &thresig::cluster::LocalCluster, text: &str) {
    for (cfg, n) in c.configs.iter().zip(&c.nodes) {
        std::fs::write(cfg.policy.as_ref().unwrap(), text).unwrap();
        if let Some(n) = n {
            n.node.reload_policy().unwrap();
        }
    }
}

/// What a hostile peer server answers to each proposal.
pub type Answer =
    fn(&thresig::proto::peer::ProposeRequest) -> thresig::proto::peer::ProposeResponse;

struct HostilePeer {
    answer: Answer,
}

#[tonic::async_trait]
impl thresig::proto::peer::peer_server::Peer for HostilePeer {
    async fn ping(
        &self,
        _: tonic::Request<thresig::proto::peer::PingRequest>,
    ) -> Result<tonic::Response<thresig::proto::peer::PingResponse>, tonic::Status> {
        Ok(tonic::Response::new(Default::default()))
    }

    async fn propose(
        &self,
        req: tonic::Request<thresig::proto::peer::ProposeRequest>,
    ) -> Result<tonic::Response<thresig::proto::peer::ProposeResponse>, tonic::Status> {
        Ok(tonic::Response::new((self.answer)(req.get_ref())))
    }

    async fn deliver(
        &self,
        _: tonic::Request<thresig::proto::peer::Envelope>,
    ) -> Result<tonic::Response<thresig::proto::peer::DeliverAck>, tonic::Status> {
        Ok(tonic::Response::new(Default::default()))
    }
}

/// Serves a hostile peer plane as node `i` (stop that node first): its real
/// certificate, its address, and `answer` to every proposal. Stops when the
/// returned task is aborted (connections already open stay with it; see
/// `serve_hostile_until` to close them too).
pub async fn serve_hostile(
    c: &thresig::cluster::LocalCluster,
    i: usize,
    answer: Answer,
) -> tokio::task::JoinHandle<()> {
    serve_hostile_until(c, i, answer, std::future::pending()).await
}

/// `serve_hostile`, shutting down (every connection told to go away, so the
/// nodes reconnect to whatever serves the address next) when `stop` resolves.
pub async fn serve_hostile_until(
    c: &thresig::cluster::LocalCluster,
    i: usize,
    answer: Answer,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    let cfg = &c.configs[i];
    let mut listener = None;
    for _ in 0..100 {
        match tokio::net::TcpListener::bind(cfg.listen_peer).await {
            Ok(l) => {
                listener = Some(l);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let incoming = thresig::transport::incoming(
        listener.expect("the node's peer port stayed busy"),
        thresig::transport::tls::TlsState::load(&cfg.tls).unwrap(),
        cfg.trust_domain.clone(),
        thresig::transport::Plane::Peer,
        cfg.connection_caps,
    );
    let svc = thresig::proto::peer::peer_server::PeerServer::new(HostilePeer { answer });
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming_shutdown(incoming, stop)
            .await;
    })
}

/// Node `i` of `c` (stop its in-process copy first) as a real `thresig node
/// run` process, and the lines it writes to stderr.
pub fn spawn_node_process(
    c: &thresig::cluster::LocalCluster,
    i: usize,
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead;
    let cfg_path = c.configs[i].data_dir.parent().unwrap().join("node.toml");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_thresig"))
        .args(["node", "run", "--config"])
        .arg(&cfg_path)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

/// The lines from `rx` up to and including the first that contains `what`
/// (waiting up to a minute for each), or None if it never came.
pub fn lines_until(rx: &std::sync::mpsc::Receiver<String>, what: &str) -> Option<Vec<String>> {
    let mut seen = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(60)) {
        let hit = line.contains(what);
        seen.push(line);
        if hit {
            return Some(seen);
        }
    }
    None
}

/// A policy: the cluster's client may sign everything, ops may run every
/// admin operation alone, except `operations`, which need both ops-1 and
/// sec-1 (see `issue_admins`).
pub fn two_admin_policy(operations: &[&str]) -> String {
    let ops = operations
        .iter()
        .map(|o| format!("{o:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "[[client]]\nname = \"validator\"\nkeys = [\"*\"]\npaths = [\"m\"]\n\n\
         [[admin]]\nname = \"ops\"\noperations = [\"*\"]\n\n\
         [[quorum]]\noperations = [{ops}]\nadmins = [\"ops-1\", \"sec-1\"]\nrequired = 2\n"
    )
}

/// A client of node `node` that presents the certificate in `tls`.
pub fn client_with(
    c: &LocalCluster,
    node: usize,
    tls: thresig::transport::tls::TlsFiles,
) -> thresig::client::Client {
    let cfg = thresig::client::ClientConfig {
        endpoint: c.configs[node].listen_client,
        server: c.configs[node].name.to_string(),
        trust_domain: thresig::cluster::TRUST_DOMAIN.into(),
        tls,
        connect_timeout: Duration::from_secs(3),
    };
    thresig::client::Client::connect(&cfg).unwrap()
}

/// A plain rustls client configuration (TLS `versions`, the cluster CA, and
/// the certificate of `role`/`name` from the cluster's files), to look at a
/// node's handshake directly.
pub fn raw_tls_client(
    c: &LocalCluster,
    role: thresig::pki::Role,
    name: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> rustls::ClientConfig {
    let l = &c.layout;
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    for cert in CertificateDer::pem_file_iter(l.ca_cert()).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let chain: Vec<_> = CertificateDer::pem_file_iter(l.cert(role, name))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(l.key(role, name)).unwrap();
    rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .unwrap()
}

/// Holds one half-open connection to `target` from 127.0.0.2 (never sends a
/// byte), reopening it whenever the other side closes it, until `stop`.
/// Counts each connection opened in `opened`.
pub async fn hold_half_open(
    target: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    opened: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::Ordering;
    use tokio::io::AsyncReadExt;
    while !stop.load(Ordering::Relaxed) {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let Ok(mut tcp) = socket.connect(target).await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        opened.fetch_add(1, Ordering::Relaxed);
        let mut buf = [0u8; 64];
        // Never sends; waits for the node to drop it (or the test to end).
        loop {
            tokio::select! {
                r = tcp.read(&mut buf) => if matches!(r, Ok(0) | Err(_)) { break },
                _ = tokio::time::sleep(Duration::from_millis(200)) => {
                    if stop.load(Ordering::Relaxed) { return; }
                }
            }
        }
    }
}
