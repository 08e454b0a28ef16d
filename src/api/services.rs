//! `thresig.signer.v1.Signer` (client identities), and what the admin
//! service (`admin_service.rs`) shares with it. Handlers parse input into
//! domain types and call the node; they hold no logic of their own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::status;
use crate::domain::{DerivationPath, Digest32, KeyId};
use crate::node::request::{ClientAuth, SignRequest, Slot};
use crate::node::Node;
use crate::pki::Role;
use crate::proto::signer as spb;
use crate::telemetry::Metrics;
use crate::transport::{Authenticated, Identity};

pub(super) fn require<T>(req: &Request<T>, role: Role) -> Result<Identity, Status> {
    match req.extensions().get::<Authenticated>().map(|a| &a.identity) {
        Some(id) if id.role == role => Ok(id.clone()),
        Some(id) => Err(Status::permission_denied(format!(
            "{id} may not call this service; it needs {} certificate",
            role.with_article()
        ))),
        None => Err(Status::unauthenticated("no authenticated identity")),
    }
}

/// One request's log line and metrics. Started once the request is parsed;
/// the node's work runs inside its span (`instrument(log.span())`), where a
/// coordinator records the execution id of its session (`node::note_eid`);
/// `finish` writes the line (fields: op, request_id, key, client, eid in
/// the span; outcome and ms in the event; error on failure) and feeds the
/// latency histogram. The README lists the fields ("Logs").
pub(super) struct RequestLog {
    op: &'static str,
    span: tracing::Span,
    started: Instant,
}

impl RequestLog {
    pub(super) fn start(op: &'static str, client: &Identity, key: &str, request_id: &str) -> Self {
        let span = tracing::info_span!(
            "request",
            op,
            request_id,
            key,
            client = %client,
            eid = tracing::field::Empty,
        );
        Self {
            op,
            span,
            started: Instant::now(),
        }
    }

    pub(super) fn span(&self) -> tracing::Span {
        self.span.clone()
    }

    /// Maps a node result to gRPC, logs it and counts it for /metrics.
    pub(super) fn finish<T>(
        self,
        metrics: &Metrics,
        node: &Node,
        r: Result<T, crate::node::NodeError>,
    ) -> Result<T, Status> {
        self.finish_status(metrics, r.map_err(|e| status(node.name(), &e)))
    }

    pub(super) fn finish_status<T>(
        self,
        metrics: &Metrics,
        r: Result<T, Status>,
    ) -> Result<T, Status> {
        let took = self.started.elapsed();
        let ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
        let _in = self.span.enter();
        match &r {
            Ok(_) => {
                metrics.observe(self.op, "ok", took);
                tracing::info!(outcome = "ok", ms, "request");
            }
            Err(st) => {
                let outcome = code_label(st.code());
                metrics.observe(self.op, outcome, took);
                tracing::warn!(outcome, ms, error = %st.message(), "request");
            }
        }
        r
    }
}

fn code_label(c: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match c {
        InvalidArgument => "invalid_argument",
        NotFound => "not_found",
        AlreadyExists => "already_exists",
        PermissionDenied => "permission_denied",
        FailedPrecondition => "failed_precondition",
        Unavailable => "unavailable",
        DeadlineExceeded => "deadline_exceeded",
        Aborted => "aborted",
        ResourceExhausted => "resource_exhausted",
        DataLoss => "data_loss",
        _ => "internal",
    }
}

pub(super) fn arg(field: &str, e: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {e}"))
}

pub struct SignerService {
    node: Arc<Node>,
    metrics: Arc<Metrics>,
}

impl SignerService {
    pub fn new(node: Arc<Node>, metrics: Arc<Metrics>) -> spb::signer_server::SignerServer<Self> {
        spb::signer_server::SignerServer::new(Self { node, metrics })
            .max_decoding_message_size(320 * 1024)
    }
}

#[tonic::async_trait]
impl spb::signer_server::Signer for SignerService {
    async fn sign(
        &self,
        req: Request<spb::SignRequest>,
    ) -> Result<Response<spb::SignResponse>, Status> {
        let who = require(&req, Role::Client)?;
        let chain = req
            .extensions()
            .get::<Authenticated>()
            .map(|a| a.chain.as_ref().clone())
            .unwrap_or_default();
        let deadline = client_deadline(req.metadata());
        let (request, auth) = request_from_pb(req.into_inner(), chain)?;
        let (key, path) = (request.key_id.clone(), request.path.clone());
        let started = Instant::now();
        let log = RequestLog::start("sign", &who, key.as_str(), &request.request_id);
        let late = || {
            Status::deadline_exceeded(format!(
                "no signature within {deadline:?} (the request's deadline); resend the \
                 same request (same request id) to this or another node"
            ))
        };
        // Retries inside (another signer set, the new epoch) stop at the
        // client's deadline; the request id makes a resend safe.
        if request.payload.is_some() {
            let signing = self
                .node
                .sign_payload(request, auth, &who.name)
                .instrument(log.span());
            let out = match tokio::time::timeout(deadline, signing).await {
                Ok(r) => log.finish(&self.metrics, &self.node, r),
                Err(_) => log.finish_status(&self.metrics, Err(late())),
            }?;
            tracing::info!(
                client = %who,
                key = %key,
                kind = out.decoded.kind.as_str(),
                summary = %out.decoded.summary,
                ms = started.elapsed().as_millis() as u64,
                "signed",
            );
            return super::sign_response::payload_response(&out).map(Response::new);
        }
        let signing = self
            .node
            .sign(request, auth, &who.name)
            .instrument(log.span());
        let out = match tokio::time::timeout(deadline, signing).await {
            Ok(r) => log.finish(&self.metrics, &self.node, r),
            Err(_) => log.finish_status(&self.metrics, Err(late())),
        }?;
        tracing::info!(
            client = %who,
            key = %key,
            %path,
            request_id = %out.request_id,
            ms = started.elapsed().as_millis() as u64,
            "signed",
        );
        super::sign_response::sign_response(&out).map(Response::new)
    }

    async fn evaluate(
        &self,
        req: Request<spb::SignRequest>,
    ) -> Result<Response<spb::EvaluateResponse>, Status> {
        let who = require(&req, Role::Client)?;
        let chain = req
            .extensions()
            .get::<Authenticated>()
            .map(|a| a.chain.as_ref().clone())
            .unwrap_or_default();
        let (request, auth) = request_from_pb(req.into_inner(), chain)?;
        let log = RequestLog::start(
            "evaluate",
            &who,
            request.key_id.as_str(),
            &request.request_id,
        );
        let r = self
            .node
            .evaluate(request, auth, &who.name)
            .instrument(log.span())
            .await;
        let (summary, verdicts) = log.finish(&self.metrics, &self.node, r)?;
        Ok(Response::new(spb::EvaluateResponse {
            summary,
            verdicts: verdicts
                .into_iter()
                .map(|v| spb::NodeVerdict {
                    node: v.node.to_string(),
                    allowed: v.allowed,
                    detail: v.detail,
                })
                .collect(),
        }))
    }

    async fn get_public_key(
        &self,
        req: Request<spb::GetPublicKeyRequest>,
    ) -> Result<Response<spb::GetPublicKeyResponse>, Status> {
        let who = require(&req, Role::Client)?;
        let r = req.into_inner();
        let key = KeyId::parse(&r.key_id).map_err(|e| arg("key_id", e))?;
        let path = DerivationPath::parse(&r.path).map_err(|e| arg("path", e))?;
        self.node
            .authorize_key_read(&who.name, &key, &path)
            .map_err(|e| status(self.node.name(), &e))?;
        let rec = self
            .node
            .key(&key)
            .map_err(|e| status(self.node.name(), &e))?;
        let (pk, cc) =
            crate::bip32::derive_public(rec.key_type, &rec.public_key, &rec.chain_code, &path)
                .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(spb::GetPublicKeyResponse {
            public_key: pk.to_vec(),
            eth_address: eth_address(rec.key_type, &pk),
            chain_code: cc.to_vec(),
            key_type: rec.key_type.to_string(),
        }))
    }
}

/// The Ethereum address of a secp256k1 key; empty for other key types.
pub(super) fn eth_address(key_type: crate::domain::KeyType, pk: &[u8]) -> String {
    match key_type {
        crate::domain::KeyType::Secp256k1 => crate::bip32::eth_address(pk).unwrap_or_default(),
        _ => String::new(),
    }
}

/// How long a client lets a request take: its `grpc-timeout` header, or
/// `DEFAULT_DEADLINE` without one (or with one this does not understand).
pub(crate) fn client_deadline(meta: &tonic::metadata::MetadataMap) -> Duration {
    meta.get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
        .unwrap_or(DEFAULT_DEADLINE)
}

/// The deadline of a request that states none.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(10);

/// A `grpc-timeout` value: up to 8 digits and a unit (H, M, S, m, u, n).
fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    match unit {
        "H" => Some(Duration::from_secs(n.checked_mul(3600)?)),
        "M" => Some(Duration::from_secs(n.checked_mul(60)?)),
        "S" => Some(Duration::from_secs(n)),
        "m" => Some(Duration::from_millis(n)),
        "u" => Some(Duration::from_micros(n)),
        "n" => Some(Duration::from_nanos(n)),
        _ => None,
    }
}

/// A client's sign request off the wire: its fields, checked, and its
/// signature with the certificate chain of the connection.
fn request_from_pb(
    r: spb::SignRequest,
    chain: Vec<Vec<u8>>,
) -> Result<(SignRequest, ClientAuth), Status> {
    let payload = r.payload.map(crate::api::client::payload_from_pb);
    if payload.is_some() && r.slot.is_some() {
        return Err(arg(
            "slot",
            "a typed payload takes no slot: every node derives its replay protection from \
                 the payload (an Ethereum nonce, a Cosmos sequence, a Bitcoin outpoint)",
        ));
    }
    let request = SignRequest {
        key_id: KeyId::parse(&r.key_id).map_err(|e| arg("key_id", e))?,
        digest: match &payload {
            Some(_) if !r.digest.is_empty() => {
                return Err(arg(
                    "digest",
                    "must be empty with a payload: every node computes what it signs",
                ))
            }
            Some(_) => Digest32([0; 32]),
            None => Digest32::from_slice(&r.digest).map_err(|e| arg("digest", e))?,
        },
        path: DerivationPath::parse(&r.path).map_err(|e| arg("path", e))?,
        slot: r.slot.map(|x| Slot {
            scope: x.scope,
            height: x.height,
            round: x.round,
            step: x.step,
        }),
        request_id: r.request_id,
        expiry_unix: r.expiry_unix,
        payload: match payload {
            Some((kind, bytes)) => {
                if bytes.len() > crate::payload::MAX_PAYLOAD_BYTES {
                    return Err(Status::resource_exhausted(format!(
                        "{kind}: {} bytes; at most {} are accepted",
                        bytes.len(),
                        crate::payload::MAX_PAYLOAD_BYTES
                    )));
                }
                Some(crate::node::request::Payload {
                    kind,
                    bytes: bytes.into(),
                    item: 0,
                })
            }
            None => None,
        },
    };
    let auth = ClientAuth {
        chain,
        scheme: u16::try_from(r.signature_scheme)
            .map_err(|_| arg("signature_scheme", "out of range"))?,
        signature: r.client_signature,
    };
    Ok((request, auth))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_and_bad_ones_fall_back() {
        for (v, want) in [
            ("10S", Some(Duration::from_secs(10))),
            ("250m", Some(Duration::from_millis(250))),
            ("2H", Some(Duration::from_secs(7200))),
            ("99999999n", Some(Duration::from_nanos(99_999_999))),
            ("123456789S", None),
            ("S", None),
            ("", None),
            ("10s", None),
            ("-1S", None),
        ] {
            assert_eq!(parse_grpc_timeout(v), want, "{v}");
        }
    }
}
