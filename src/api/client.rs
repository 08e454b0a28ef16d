//! The Rust client for the client and admin planes: what the CLI uses and
//! what a validator embeds. It dials one node over mTLS (TLS 1.3, pinned CA)
//! and checks that the server is the node it meant.
//!
//! ```no_run
//! # async fn demo() -> Result<(), thresig::client::ClientError> {
//! use thresig::client::{Client, ClientConfig};
//! let mut c = Client::connect(&ClientConfig::from_dir("certs", "thresig.local", "validator-1", "a", "127.0.0.1:7401".parse().unwrap()))?;
//! let sig = c.sign("validator", [0x11; 32], "m/0/1", "").await?;
//! println!("r||s||v = {}", hex::encode(&sig.rsv));
//! # Ok(()) }
//! ```

mod admin_reads;
mod payload;
pub use payload::{payload_from_pb, payload_to_pb};

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tonic::transport::Channel;

pub use super::admin_client::AdminOutcome;
pub use super::admin_fields::signed_to_pb as signed_admin_pb;
pub use crate::node::admin_request::{AdminOp, AdminRequest, SignedAdmin};
pub use crate::proto::admin::{RepairKeyResponse, ReshareKeyResponse, RotateKeyResponse};

use crate::domain::{DerivationPath, Digest32, KeyId, NodeName};
pub use crate::node::request::{SignRequest as ClientRequest, Slot};
use crate::pki::{Layout, Role};
pub use crate::proto::admin::KeyInfo;
use crate::proto::signer::{signer_client::SignerClient, GetPublicKeyRequest, SignRequest};
pub use crate::proto::signer::{GetPublicKeyResponse, SignResponse};
use crate::transport::request_auth::RequestSigner;
use crate::transport::tls::{client_config, TlsError, TlsFiles};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot set up the connection: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("{}: {}{}", code_name(.0.code()), .0.message(), causes(.0))]
    Rpc(#[from] tonic::Status),
    #[error("invalid argument: {0}")]
    Invalid(String),
}

impl ClientError {
    /// The gRPC status code, when the node (or the connection) answered with one.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            Self::Rpc(s) => Some(s.code()),
            _ => None,
        }
    }

    /// The node's reason for refusing (its `thresig-reason` metadata, e.g.
    /// `below-watermark`, `rate-limited`), when it gave one.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Self::Rpc(s) => s.metadata().get("thresig-reason")?.to_str().ok(),
            _ => None,
        }
    }

    /// How long the node asked the client to wait before retrying, if it said.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Self::Rpc(s) => s
                .metadata()
                .get("retry-after-ms")?
                .to_str()
                .ok()?
                .parse()
                .ok()
                .map(std::time::Duration::from_millis),
            _ => None,
        }
    }

    /// True when the connection itself failed or was refused (TLS handshake,
    /// certificate not accepted, node down), as opposed to a refused request.
    pub fn is_connection_failure(&self) -> bool {
        match self {
            Self::Rpc(s) => {
                matches!(
                    s.code(),
                    tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
                ) || closing_connection(s)
            }
            _ => false,
        }
    }
}

/// Whether another node may succeed where this answer failed: the node is
/// unavailable (down, paused, draining), the attempt ran out of time, or the
/// connection broke.
fn retryable(s: &tonic::Status) -> bool {
    matches!(
        s.code(),
        tonic::Code::Unavailable
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Cancelled
            | tonic::Code::Unknown
    ) || closing_connection(s)
}

/// True when the call failed because the node closed the connection with
/// a graceful HTTP/2 GOAWAY (NO_ERROR: a node draining for a restart).
/// tonic reports that as INTERNAL ("h2 protocol error: ... not a result of
/// an error"). A stream the GOAWAY cut off was not taken by the node, and
/// one it did take is safe to send again anyway: a repeat under the same
/// request id gets the recorded signature. So another node may take it.
fn closing_connection(s: &tonic::Status) -> bool {
    let mut src = std::error::Error::source(s);
    while let Some(e) = src {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            return h2.is_go_away() && h2.is_remote() && h2.reason() == Some(h2::Reason::NO_ERROR);
        }
        src = e.source();
    }
    false
}

/// The source chain of a status (e.g. the TLS error behind "transport error").
fn causes(s: &tonic::Status) -> String {
    let mut out = String::new();
    let mut src = std::error::Error::source(s);
    while let Some(e) = src {
        out.push_str(&format!(": {e}"));
        src = e.source();
    }
    if s.code() == tonic::Code::Cancelled
        || s.code() == tonic::Code::Unknown
        || closing_connection(s)
    {
        out.push_str(
            " (the node closed the connection: it may be restarting, or may not accept this \
             certificate on this plane)",
        );
    } else if s.code() == tonic::Code::Unavailable && std::error::Error::source(s).is_some() {
        out.push_str(" (the node is unreachable at this address: is it running?)");
    }
    out
}

pub(crate) fn code_name(c: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match c {
        InvalidArgument => "invalid argument",
        NotFound => "not found",
        AlreadyExists => "already exists",
        PermissionDenied => "permission denied",
        Unauthenticated => "unauthenticated",
        FailedPrecondition => "failed precondition",
        Unavailable => "unavailable",
        DeadlineExceeded => "deadline exceeded",
        Aborted => "aborted",
        ResourceExhausted => "resource exhausted",
        DataLoss => "data loss",
        Internal => "internal",
        Unknown => "unknown",
        Cancelled => "cancelled",
        Unimplemented => "unimplemented",
        OutOfRange => "out of range",
        Ok => "ok",
    }
}

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Client-plane address of the node.
    pub endpoint: SocketAddr,
    /// The node's name (its certificate's DNS SAN and SPIFFE identity).
    pub server: String,
    pub trust_domain: String,
    pub tls: TlsFiles,
    pub connect_timeout: Duration,
}

impl ClientConfig {
    /// Certificates from a `thresig certs init` directory: `identity` is looked
    /// up first as a client, then as an admin.
    pub fn from_dir(
        dir: impl AsRef<Path>,
        trust_domain: &str,
        identity: &str,
        server: &str,
        endpoint: SocketAddr,
    ) -> Self {
        let layout = Layout {
            dir: dir.as_ref().to_owned(),
        };
        let role = if layout.cert(Role::Client, identity).exists() {
            Role::Client
        } else {
            Role::Admin
        };
        Self {
            endpoint,
            server: server.to_owned(),
            trust_domain: trust_domain.to_owned(),
            tls: TlsFiles {
                ca: layout.ca_cert(),
                cert: layout.cert(role, identity),
                key: layout.key(role, identity),
                crl: None,
                crl_grace: None,
            },
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// How long a request made by `Client::sign` stays valid.
pub const DEFAULT_EXPIRY: Duration = Duration::from_secs(60);

/// How long one attempt of a signing call may take before the client tries
/// the next node (when it has one).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection to one node's client plane (and, optionally, to other nodes
/// to fail over to), and the key that signs requests.
#[derive(Debug, Clone)]
pub struct Client {
    pub(super) channel: Channel,
    pub(super) signer: Arc<RequestSigner>,
    /// Other nodes, by name, tried in order when the current one is
    /// unavailable (signing and public key reads only).
    failover: Vec<(String, Channel)>,
    /// Index into [primary, failover...] of the node that answered last.
    preferred: usize,
    /// The cluster admin requests made through this client name: the trust
    /// domain and the cluster id of the CA bundle (`pki::cluster_name`).
    pub(super) cluster: String,
}

/// A client tries each connection once: when a node does not answer in
/// time, the next node is worth more than a second wait on the same one.
fn client_connect(cfg: &ClientConfig) -> crate::transport::Connect {
    crate::transport::Connect {
        timeout: cfg.connect_timeout,
        attempts: 1,
    }
}

impl Client {
    /// The cluster admin requests made through this client are for:
    /// "<trust domain>/<cluster id of the CA>".
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// Prepares a lazily connected channel (the first call dials).
    pub fn connect(cfg: &ClientConfig) -> Result<Self, ClientError> {
        let server =
            NodeName::parse(&cfg.server).map_err(|e| ClientError::Invalid(e.to_string()))?;
        let tls = client_config(&cfg.tls)?;
        let channel = crate::transport::dial(
            cfg.endpoint.into(),
            server,
            tls,
            cfg.trust_domain.clone(),
            client_connect(cfg),
        )?;
        let signer = Arc::new(RequestSigner::from_files(&cfg.tls)?);
        let cluster = crate::pki::cluster_name(
            &cfg.trust_domain,
            &crate::transport::tls::cluster_id(&cfg.tls.ca)?,
        );
        Ok(Self {
            channel,
            signer,
            failover: Vec::new(),
            preferred: 0,
            cluster,
        })
    }

    /// Adds node `server` at `endpoint` (same credentials and trust domain as
    /// `cfg`) to fail over to. A signing request that meets UNAVAILABLE, a
    /// deadline or a connection failure at one node is sent, unchanged (same
    /// request id and signature, so the nodes' idempotency makes it safe), to
    /// the next; the node that answered is tried first next time.
    pub fn with_failover(
        mut self,
        cfg: &ClientConfig,
        server: &str,
        endpoint: SocketAddr,
    ) -> Result<Self, ClientError> {
        let name = NodeName::parse(server).map_err(|e| ClientError::Invalid(e.to_string()))?;
        let channel = crate::transport::dial(
            endpoint.into(),
            name,
            client_config(&cfg.tls)?,
            cfg.trust_domain.clone(),
            client_connect(cfg),
        )?;
        self.failover.push((server.to_owned(), channel));
        Ok(self)
    }

    /// Runs `call` at the preferred node, then at the others in order while
    /// the answer says another node may succeed (`retryable`). `call` gets
    /// the per-attempt timeout when there is a node to fail over to.
    async fn each_node<T, F, Fut>(&mut self, call: F) -> Result<T, ClientError>
    where
        F: Fn(Channel, Option<Duration>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let timeout = (!self.failover.is_empty()).then_some(ATTEMPT_TIMEOUT);
        let mut last = None;
        for (i, channel) in self.attempts() {
            match call(channel, timeout).await {
                Ok(r) => {
                    self.preferred = i;
                    return Ok(r.into_inner());
                }
                Err(s) if retryable(&s) => last = Some(s),
                Err(s) => return Err(s.into()),
            }
        }
        Err(last
            .unwrap_or_else(|| tonic::Status::unavailable("no node to send the request to"))
            .into())
    }

    /// The channels in the order to try them: the preferred node first.
    fn attempts(&self) -> Vec<(usize, Channel)> {
        let all = std::iter::once(self.channel.clone())
            .chain(self.failover.iter().map(|(_, c)| c.clone()))
            .enumerate()
            .collect::<Vec<_>>();
        let n = all.len();
        let start = self.preferred.min(n.saturating_sub(1));
        all.into_iter().cycle().skip(start).take(n).collect()
    }

    /// Signs a 32-byte digest with `key` at `path` (`""` or `"m"` for the
    /// master key). An empty `request_id` gets a random one; the request
    /// expires after `DEFAULT_EXPIRY`.
    pub async fn sign(
        &mut self,
        key: &str,
        digest: [u8; 32],
        path: &str,
        request_id: &str,
    ) -> Result<SignResponse, ClientError> {
        let req = self.request(key, digest, path, request_id, None)?;
        self.sign_request(&req).await
    }

    /// Like `sign`, with double-sign protection at `slot`: every node refuses
    /// a slot below the highest it signed for this key and scope, or the same
    /// slot with another digest.
    pub async fn sign_at(
        &mut self,
        key: &str,
        digest: [u8; 32],
        path: &str,
        request_id: &str,
        slot: Slot,
    ) -> Result<SignResponse, ClientError> {
        let req = self.request(key, digest, path, request_id, Some(slot))?;
        self.sign_request(&req).await
    }

    /// Builds a request the way `sign` does (random request id when empty,
    /// expiry `DEFAULT_EXPIRY` from now).
    pub fn request(
        &self,
        key: &str,
        digest: [u8; 32],
        path: &str,
        request_id: &str,
        slot: Option<Slot>,
    ) -> Result<ClientRequest, ClientError> {
        let request_id = if request_id.is_empty() {
            let mut b = [0u8; 16];
            getrandom::fill(&mut b).map_err(|e| ClientError::Invalid(format!("rng: {e}")))?;
            hex::encode(b)
        } else {
            request_id.to_owned()
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Ok(ClientRequest {
            key_id: KeyId::parse(key).map_err(|e| ClientError::Invalid(format!("key: {e}")))?,
            digest: Digest32(digest),
            path: DerivationPath::parse(path)
                .map_err(|e| ClientError::Invalid(format!("path: {e}")))?,
            slot,
            request_id,
            expiry_unix: now + DEFAULT_EXPIRY.as_secs(),
            payload: None,
        })
    }

    /// Signs `request` (every field as given) with this client's certificate
    /// key and sends it.
    pub async fn sign_request(
        &mut self,
        request: &ClientRequest,
    ) -> Result<SignResponse, ClientError> {
        let proto = self.wire_request(request)?;
        self.each_node(|channel, timeout| {
            let mut req = tonic::Request::new(proto.clone());
            if let Some(t) = timeout {
                req.set_timeout(t);
            }
            async move { SignerClient::new(channel).sign(req).await }
        })
        .await
    }

    /// `request` signed with this client's certificate key, as it travels.
    fn wire_request(&self, request: &ClientRequest) -> Result<SignRequest, ClientError> {
        let auth = self.signer.sign(request)?;
        let proto = SignRequest {
            key_id: request.key_id.to_string(),
            digest: if request.payload.is_some() {
                Vec::new()
            } else {
                request.digest.0.to_vec()
            },
            payload: request
                .payload
                .as_ref()
                .map(|p| payload_to_pb(p.kind, p.bytes.to_vec())),
            path: request.path.to_string(),
            request_id: request.request_id.clone(),
            slot: request.slot.as_ref().map(|x| crate::proto::signer::Slot {
                scope: x.scope.clone(),
                height: x.height,
                round: x.round,
                step: x.step,
            }),
            expiry_unix: request.expiry_unix,
            signature_scheme: auth.scheme.into(),
            client_signature: auth.signature,
        };
        Ok(proto)
    }

    pub async fn public_key(
        &mut self,
        key: &str,
        path: &str,
    ) -> Result<GetPublicKeyResponse, ClientError> {
        let proto = GetPublicKeyRequest {
            key_id: key.into(),
            path: path.into(),
        };
        self.each_node(|channel, timeout| {
            let mut req = tonic::Request::new(proto.clone());
            if let Some(t) = timeout {
                req.set_timeout(t);
            }
            async move { SignerClient::new(channel).get_public_key(req).await }
        })
        .await
    }
}
