//! The peer plane over gRPC: the server side hands authenticated messages to
//! the node; the client side (`GrpcPeerNet`) implements `node::PeerNet`.
//! The sender of every message is the connection's certificate identity.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::identity::Identity;
use crate::domain::{DerivationPath, Digest32, ExecutionId, KeyId, NodeName};
use crate::node::request::{ClientAuth, SignRequest, Slot};
use crate::node::{
    NetError, NetErrorKind, Node, NodeError, Operation, Outcome, PeerNet, Proposal, WIRE_VERSION,
};
use crate::pki::Role;
use crate::proto::peer as pb;
use crate::proto::peer::peer_client::PeerClient;
use crate::protocol::sign::Signature;
use crate::protocol::MAX_MESSAGE_BYTES;
use crate::storage::{LedgerEntry, LedgerResult};

/// Largest gRPC message on the peer plane.
pub const MAX_GRPC_BYTES: usize = MAX_MESSAGE_BYTES + 4096;

/// Server side of `thresig.peer.v1.Peer`.
pub struct PeerService {
    node: Arc<Node>,
}

impl PeerService {
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }

    pub fn into_server(self) -> pb::peer_server::PeerServer<Self> {
        pb::peer_server::PeerServer::new(self)
            .max_decoding_message_size(MAX_GRPC_BYTES)
            .max_encoding_message_size(MAX_GRPC_BYTES)
    }
}

fn sender<T>(req: &Request<T>) -> Result<NodeName, Status> {
    match req
        .extensions()
        .get::<super::Authenticated>()
        .map(|a| &a.identity)
    {
        Some(Identity {
            role: Role::Node,
            name,
        }) => Ok(name.clone()),
        Some(other) => Err(Status::permission_denied(format!(
            "{other} may not use the peer plane"
        ))),
        None => Err(Status::unauthenticated("no authenticated peer identity")),
    }
}

fn check_version(v: u32) -> Result<(), Status> {
    if v != WIRE_VERSION {
        return Err(Status::failed_precondition(format!(
            "wire version mismatch: this node speaks {WIRE_VERSION}, peer sent {v}"
        )));
    }
    Ok(())
}

fn bad(field: &str, e: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {e}"))
}

fn names(raw: &[String], field: &str) -> Result<Vec<NodeName>, Status> {
    raw.iter()
        .map(|n| NodeName::parse(n).map_err(|e| bad(field, e)))
        .collect()
}

fn proposal_from_pb(req: pb::ProposeRequest) -> Result<Proposal, Status> {
    check_version(req.wire_version)?;
    let eid = ExecutionId::from_slice(&req.eid).ok_or_else(|| bad("eid", "must be 32 bytes"))?;
    let op = match req.op.ok_or_else(|| bad("op", "missing"))? {
        pb::propose_request::Op::ShareStatus(s) => Operation::ShareStatus {
            key_id: KeyId::parse(&s.key_id).map_err(|e| bad("key_id", e))?,
            request_id: (!s.request_id.is_empty()).then_some(s.request_id),
        },
        pb::propose_request::Op::Repair(r) => {
            let key_id = KeyId::parse(&r.key_id).map_err(|e| bad("key_id", e))?;
            Operation::Repair {
                record: Box::new(record_from_pb(&key_id, r.record)?),
                key_id,
                target: NodeName::parse(&r.target).map_err(|e| bad("target", e))?,
                helpers: names(&r.helpers, "helpers")?,
            }
        }
        pb::propose_request::Op::Reshare(r) => {
            let key_id = KeyId::parse(&r.key_id).map_err(|e| bad("key_id", e))?;
            Operation::Reshare {
                record: Box::new(record_from_pb(&key_id, r.record)?),
                key_id,
                epoch: r.epoch,
                dealers: names(&r.dealers, "dealers")?,
                committee: names(&r.committee, "committee")?,
                threshold: u8::try_from(r.threshold)
                    .map_err(|_| bad("threshold", "out of range"))?,
            }
        }
        pb::propose_request::Op::Retire(r) => Operation::Retire {
            key_id: KeyId::parse(&r.key_id).map_err(|e| bad("key_id", e))?,
            epoch: r.epoch,
            dealers: names(&r.dealers, "dealers")?,
            committee: names(&r.committee, "committee")?,
            threshold: u8::try_from(r.threshold).map_err(|_| bad("threshold", "out of range"))?,
        },
        pb::propose_request::Op::Refresh(r) => Operation::Refresh {
            key_id: KeyId::parse(&r.key_id).map_err(|e| bad("key_id", e))?,
            epoch: r.epoch,
            committee: names(&r.committee, "committee")?,
        },
        pb::propose_request::Op::Activate(a) => Operation::Activate {
            key_id: KeyId::parse(&a.key_id).map_err(|e| bad("key_id", e))?,
            epoch: a.epoch,
            confirmation: arr(&a.confirmation, "confirmation")
                .map_err(|e| bad("confirmation", e))?,
        },
        pb::propose_request::Op::Keygen(k) => Operation::Keygen {
            key_id: KeyId::parse(&k.key_id).map_err(|e| bad("key_id", e))?,
            threshold: k.threshold,
            committee: names(&k.committee, "committee")?,
        },
        pb::propose_request::Op::Sign(s) => {
            let participants = names(&s.participants, "participants")?;
            let epoch = s.epoch;
            let (request, auth) = sign_request_from_pb(s)?;
            Operation::Sign {
                epoch,
                request: Box::new(request),
                auth: Box::new(auth),
                participants,
            }
        }
        pb::propose_request::Op::Watermark(w) => {
            let (request, auth) =
                sign_request_from_pb(w.request.ok_or_else(|| bad("request", "missing"))?)?;
            Operation::Watermark {
                request: Box::new(request),
                auth: Box::new(auth),
            }
        }
    };
    Ok(Proposal {
        eid,
        nonce: req.coordinator_nonce,
        op,
    })
}

fn proposal_to_pb(p: Proposal) -> pb::ProposeRequest {
    let op = match p.op {
        Operation::ShareStatus { key_id, request_id } => {
            pb::propose_request::Op::ShareStatus(pb::ShareStatusProposal {
                key_id: key_id.to_string(),
                request_id: request_id.unwrap_or_default(),
            })
        }
        Operation::Repair {
            key_id,
            target,
            helpers,
            record,
        } => pb::propose_request::Op::Repair(pb::RepairProposal {
            key_id: key_id.to_string(),
            target: target.to_string(),
            helpers: helpers.iter().map(ToString::to_string).collect(),
            record: Some(record_to_pb(&record)),
        }),
        Operation::Reshare {
            key_id,
            epoch,
            dealers,
            committee,
            threshold,
            record,
        } => pb::propose_request::Op::Reshare(pb::ReshareProposal {
            key_id: key_id.to_string(),
            epoch,
            dealers: dealers.iter().map(ToString::to_string).collect(),
            committee: committee.iter().map(ToString::to_string).collect(),
            threshold: threshold.into(),
            record: Some(record_to_pb(&record)),
        }),
        Operation::Retire {
            key_id,
            epoch,
            dealers,
            committee,
            threshold,
        } => pb::propose_request::Op::Retire(pb::RetireProposal {
            key_id: key_id.to_string(),
            epoch,
            dealers: dealers.iter().map(ToString::to_string).collect(),
            committee: committee.iter().map(ToString::to_string).collect(),
            threshold: threshold.into(),
        }),
        Operation::Refresh {
            key_id,
            epoch,
            committee,
        } => pb::propose_request::Op::Refresh(pb::RefreshProposal {
            key_id: key_id.to_string(),
            epoch,
            committee: committee.iter().map(ToString::to_string).collect(),
        }),
        Operation::Activate {
            key_id,
            epoch,
            confirmation,
        } => pb::propose_request::Op::Activate(pb::ActivateProposal {
            key_id: key_id.to_string(),
            epoch,
            confirmation: confirmation.to_vec(),
        }),
        Operation::Keygen {
            key_id,
            threshold,
            committee,
        } => pb::propose_request::Op::Keygen(pb::KeygenProposal {
            key_id: key_id.to_string(),
            threshold,
            committee: committee.iter().map(ToString::to_string).collect(),
        }),
        Operation::Sign {
            epoch,
            request,
            auth,
            participants,
        } => pb::propose_request::Op::Sign(pb::SignProposal {
            epoch,
            participants: participants.iter().map(ToString::to_string).collect(),
            ..sign_request_to_pb(*request, *auth)
        }),
        Operation::Watermark { request, auth } => {
            pb::propose_request::Op::Watermark(pb::WatermarkProposal {
                request: Some(sign_request_to_pb(*request, *auth)),
            })
        }
    };
    pb::ProposeRequest {
        wire_version: WIRE_VERSION,
        eid: p.eid.as_bytes().to_vec(),
        coordinator_nonce: p.nonce,
        op: Some(op),
    }
}

fn outcome_to_pb(o: Outcome) -> pb::ProposeResponse {
    let result = match o {
        Outcome::Refresh { confirmation } => {
            pb::propose_response::Result::Refresh(pb::RefreshResult {
                confirmation: confirmation.to_vec(),
            })
        }
        Outcome::Activated => pb::propose_response::Result::Activate(pb::ActivateResult {}),
        Outcome::ShareStatus {
            epoch,
            signing,
            rotation,
            ledger,
        } => pb::propose_response::Result::ShareStatus(pb::ShareStatusResult {
            ledger: ledger.map(|l| ledger_to_pb(&l)),
            has_share: epoch.is_some(),
            epoch: epoch.unwrap_or(0),
            signing,
            rotation: rotation.map(|r| r.to_vec()).unwrap_or_default(),
        }),
        Outcome::Reshared {
            confirmation,
            public_key,
        } => pb::propose_response::Result::Reshare(pb::ReshareResult {
            confirmation: confirmation.to_vec(),
            public_key,
        }),
        Outcome::Dealt => pb::propose_response::Result::Dealt(pb::DealtResult {}),
        Outcome::Retired => pb::propose_response::Result::Retire(pb::RetireResult {}),
        Outcome::Watermarked => pb::propose_response::Result::Watermark(pb::WatermarkResult {}),
        Outcome::Repaired => pb::propose_response::Result::Repair(pb::RepairResult {}),
        Outcome::Keygen {
            public_key,
            chain_code,
            package_hash,
        } => pb::propose_response::Result::Keygen(pb::KeygenResult {
            public_key,
            chain_code: chain_code.to_vec(),
            package_hash: package_hash.to_vec(),
        }),
        Outcome::Sign(s) => pb::propose_response::Result::Sign(pb::SignResult {
            r: s.r.to_vec(),
            s: s.s.to_vec(),
            recovery_id: s.recovery_id.into(),
            public_key: s.public_key.to_vec(),
        }),
    };
    pb::ProposeResponse {
        result: Some(result),
    }
}

/// A key's public record as it travels with a repair or reshare proposal.
fn record_from_pb(
    key_id: &KeyId,
    r: Option<pb::KeyRecord>,
) -> Result<crate::storage::KeyRecord, Status> {
    let r = r.ok_or_else(|| bad("record", "missing"))?;
    Ok(crate::storage::KeyRecord {
        schema: crate::storage::records_schema(),
        key_id: key_id.clone(),
        public_key: r.public_key,
        chain_code: arr(&r.chain_code, "chain_code").map_err(|e| bad("chain_code", e))?,
        committee: names(&r.committee, "committee")?
            .iter()
            .map(ToString::to_string)
            .collect(),
        threshold: u8::try_from(r.threshold).map_err(|_| bad("threshold", "out of range"))?,
        epoch: r.epoch,
        state: crate::storage::KeyState::Active,
        package_hash: arr(&r.package_hash, "package_hash").map_err(|e| bad("package_hash", e))?,
        package: hex::encode(&r.package),
        rotation: None,
        created_unix: r.created_unix,
    })
}

fn record_to_pb(r: &crate::storage::KeyRecord) -> pb::KeyRecord {
    pb::KeyRecord {
        epoch: r.epoch,
        threshold: r.threshold.into(),
        committee: r.committee.clone(),
        public_key: r.public_key.clone(),
        chain_code: r.chain_code.to_vec(),
        package_hash: r.package_hash.to_vec(),
        package: hex::decode(&r.package).unwrap_or_default(),
        created_unix: r.created_unix,
    }
}

/// The client's request and signature as they travel in a proposal.
fn sign_request_from_pb(s: pb::SignProposal) -> Result<(SignRequest, ClientAuth), Status> {
    let request = SignRequest {
        key_id: KeyId::parse(&s.key_id).map_err(|e| bad("key_id", e))?,
        digest: Digest32::from_slice(&s.digest).map_err(|e| bad("digest", e))?,
        path: DerivationPath::parse(&s.path).map_err(|e| bad("path", e))?,
        slot: s.slot.map(|x| Slot {
            scope: x.scope,
            height: x.height,
            round: x.round,
            step: x.step,
        }),
        request_id: s.request_id,
        expiry_unix: s.expiry_unix,
    };
    let auth = ClientAuth {
        chain: s.client_chain,
        scheme: u16::try_from(s.signature_scheme)
            .map_err(|_| bad("signature_scheme", "out of range"))?,
        signature: s.client_signature,
    };
    Ok((request, auth))
}

fn sign_request_to_pb(request: SignRequest, auth: ClientAuth) -> pb::SignProposal {
    pb::SignProposal {
        key_id: request.key_id.to_string(),
        epoch: 0,
        digest: request.digest.0.to_vec(),
        path: request.path.to_string(),
        request_id: request.request_id,
        participants: Vec::new(),
        slot: request.slot.map(|x| pb::Slot {
            scope: x.scope,
            height: x.height,
            round: x.round,
            step: x.step,
        }),
        expiry_unix: request.expiry_unix,
        signature_scheme: auth.scheme.into(),
        client_signature: auth.signature,
        client_chain: auth.chain,
    }
}

fn ledger_to_pb(l: &LedgerEntry) -> pb::LedgerRecord {
    let done = l.result.as_ref();
    pb::LedgerRecord {
        request_id: l.request_id.clone(),
        digest: l.digest.to_vec(),
        path: l.path.clone(),
        slot: l.slot.clone().unwrap_or_default(),
        eid: l.eid.to_vec(),
        unix: l.unix,
        finished: done.is_some(),
        r: done.map(|d| d.r.to_vec()).unwrap_or_default(),
        s: done.map(|d| d.s.to_vec()).unwrap_or_default(),
        recovery_id: done.map(|d| d.recovery_id.into()).unwrap_or_default(),
        public_key: done.map(|d| d.public_key.clone()).unwrap_or_default(),
        participants: done.map(|d| d.participants.clone()).unwrap_or_default(),
        epoch: done.map(|d| d.epoch).unwrap_or_default(),
    }
}

fn ledger_from_pb(l: pb::LedgerRecord) -> Result<LedgerEntry, String> {
    let result = if l.finished {
        Some(LedgerResult {
            r: arr(&l.r, "r")?,
            s: arr(&l.s, "s")?,
            recovery_id: u8::try_from(l.recovery_id).map_err(|_| "recovery_id out of range")?,
            public_key: l.public_key,
            participants: l.participants,
            epoch: l.epoch,
        })
    } else {
        None
    };
    Ok(LedgerEntry {
        schema: crate::storage::records_schema(),
        request_id: l.request_id,
        digest: arr(&l.digest, "digest")?,
        path: l.path,
        eid: arr(&l.eid, "eid")?,
        unix: l.unix,
        result,
        slot: (!l.slot.is_empty()).then_some(l.slot),
    })
}

fn arr<const N: usize>(b: &[u8], field: &str) -> Result<[u8; N], String> {
    b.try_into()
        .map_err(|_| format!("{field} must be {N} bytes, got {}", b.len()))
}

fn outcome_from_pb(r: pb::ProposeResponse) -> Result<Outcome, String> {
    match r.result.ok_or("empty result")? {
        pb::propose_response::Result::Refresh(x) => Ok(Outcome::Refresh {
            confirmation: arr(&x.confirmation, "confirmation")?,
        }),
        pb::propose_response::Result::Activate(_) => Ok(Outcome::Activated),
        pb::propose_response::Result::ShareStatus(s) => Ok(Outcome::ShareStatus {
            epoch: s.has_share.then_some(s.epoch),
            signing: s.has_share && s.signing,
            rotation: if s.rotation.is_empty() {
                None
            } else {
                Some(arr(&s.rotation, "rotation")?)
            },
            ledger: s.ledger.map(ledger_from_pb).transpose()?.map(Box::new),
        }),
        pb::propose_response::Result::Reshare(r) => Ok(Outcome::Reshared {
            confirmation: arr(&r.confirmation, "confirmation")?,
            public_key: r.public_key,
        }),
        pb::propose_response::Result::Dealt(_) => Ok(Outcome::Dealt),
        pb::propose_response::Result::Retire(_) => Ok(Outcome::Retired),
        pb::propose_response::Result::Watermark(_) => Ok(Outcome::Watermarked),
        pb::propose_response::Result::Repair(_) => Ok(Outcome::Repaired),
        pb::propose_response::Result::Keygen(k) => Ok(Outcome::Keygen {
            public_key: k.public_key,
            chain_code: arr(&k.chain_code, "chain_code")?,
            package_hash: arr(&k.package_hash, "package_hash")?,
        }),
        pb::propose_response::Result::Sign(s) => Ok(Outcome::Sign(Signature {
            r: arr(&s.r, "r")?,
            s: arr(&s.s, "s")?,
            recovery_id: u8::try_from(s.recovery_id).map_err(|_| "recovery_id out of range")?,
            public_key: arr(&s.public_key, "public_key")?,
        })),
    }
}

#[tonic::async_trait]
impl pb::peer_server::Peer for PeerService {
    async fn ping(
        &self,
        req: Request<pb::PingRequest>,
    ) -> Result<Response<pb::PingResponse>, Status> {
        sender(&req)?;
        check_version(req.get_ref().wire_version)?;
        Ok(Response::new(pb::PingResponse {
            wire_version: WIRE_VERSION,
            node: self.node.name().to_string(),
        }))
    }

    async fn propose(
        &self,
        req: Request<pb::ProposeRequest>,
    ) -> Result<Response<pb::ProposeResponse>, Status> {
        let from = sender(&req)?;
        let proposal = proposal_from_pb(req.into_inner())?;
        let outcome = self
            .node
            .on_propose(&from, proposal)
            .await
            .map_err(|e| crate::api::status(&e))?;
        Ok(Response::new(outcome_to_pb(outcome)))
    }

    async fn deliver(
        &self,
        req: Request<pb::Envelope>,
    ) -> Result<Response<pb::DeliverAck>, Status> {
        let from = sender(&req)?;
        let env = req.into_inner();
        check_version(env.wire_version)?;
        let eid =
            ExecutionId::from_slice(&env.eid).ok_or_else(|| bad("eid", "must be 32 bytes"))?;
        if env.payload.len() > MAX_MESSAGE_BYTES {
            return Err(Status::resource_exhausted(
                "payload exceeds the message size limit",
            ));
        }
        self.node
            .deliver(from, eid, env.round, env.payload)
            .map_err(|e| match e {
                crate::node::RouteError::UnknownSender(_) => {
                    Status::permission_denied(e.to_string())
                }
                crate::node::RouteError::Finished(_) | crate::node::RouteError::AlreadyOpen(_) => {
                    Status::failed_precondition(e.to_string())
                }
                crate::node::RouteError::Full(_) => Status::resource_exhausted(e.to_string()),
            })?;
        Ok(Response::new(pb::DeliverAck {}))
    }
}

/// Client side of the peer plane: one lazily connected channel per node.
pub struct GrpcPeerNet {
    channels: HashMap<NodeName, Channel>,
    /// Upper bound on one Propose call (a whole session).
    propose_timeout: Duration,
    /// Upper bound on delivering one message (a round).
    deliver_timeout: Duration,
}

impl GrpcPeerNet {
    /// `peers` maps node names to peer-plane addresses.
    pub fn new(
        peers: &[(NodeName, SocketAddr)],
        tls: Arc<rustls::ClientConfig>,
        trust_domain: &str,
        connect_timeout: Duration,
        timeouts: crate::node::Timeouts,
    ) -> Result<Self, tonic::transport::Error> {
        let mut channels = HashMap::new();
        for (name, addr) in peers {
            let ch = super::conn::dial(
                *addr,
                name.clone(),
                tls.clone(),
                trust_domain.to_owned(),
                connect_timeout,
            )?;
            channels.insert(name.clone(), ch);
        }
        Ok(Self {
            channels,
            propose_timeout: timeouts.session(),
            deliver_timeout: timeouts.round,
        })
    }

    fn client(&self, to: &NodeName) -> Result<PeerClient<Channel>, NetError> {
        let ch = self.channels.get(to).cloned().ok_or_else(|| NetError {
            node: to.clone(),
            kind: NetErrorKind::Unreachable("not in the roster".into()),
        })?;
        Ok(PeerClient::new(ch)
            .max_decoding_message_size(MAX_GRPC_BYTES)
            .max_encoding_message_size(MAX_GRPC_BYTES))
    }
}

/// A participant's refusal, kept in the category it was refused with.
fn remote_error(node: &NodeName, s: Status) -> NodeError {
    let m = format!("node {node}: {}", s.message());
    match s.code() {
        tonic::Code::InvalidArgument => NodeError::InvalidArgument(m),
        tonic::Code::NotFound => NodeError::NotFound(m),
        tonic::Code::AlreadyExists => NodeError::AlreadyExists(m),
        tonic::Code::PermissionDenied => NodeError::PermissionDenied(m),
        tonic::Code::FailedPrecondition => NodeError::FailedPrecondition(m),
        tonic::Code::ResourceExhausted => NodeError::ResourceExhausted(m),
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
            NodeError::Net(net_error(node, s))
        }
        _ => NodeError::Aborted(m),
    }
}

fn net_error(node: &NodeName, s: Status) -> NetError {
    let kind = match s.code() {
        tonic::Code::Unavailable => NetErrorKind::Unreachable(innermost(&s)),
        tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
            NetErrorKind::Unreachable(format!("call ended: {}", innermost(&s)))
        }
        _ => NetErrorKind::Refused(format!("{:?}: {}", s.code(), s.message())),
    };
    NetError {
        node: node.clone(),
        kind,
    }
}

/// The most specific message in a status's cause chain.
fn innermost(s: &Status) -> String {
    use std::error::Error;
    let mut msg = s.message().to_owned();
    let mut src = s.source();
    while let Some(e) = src {
        msg = e.to_string();
        src = e.source();
    }
    msg
}

impl PeerNet for GrpcPeerNet {
    fn ping(&self, to: &NodeName) -> BoxFuture<'static, Result<(), NetError>> {
        let (to, client) = (to.clone(), self.client(to));
        Box::pin(async move {
            let mut c = client?;
            c.ping(pb::PingRequest {
                wire_version: WIRE_VERSION,
            })
            .await
            .map_err(|s| net_error(&to, s))?;
            Ok(())
        })
    }

    fn propose(
        &self,
        to: &NodeName,
        proposal: Proposal,
    ) -> BoxFuture<'static, Result<Outcome, NodeError>> {
        let (to, client, timeout) = (to.clone(), self.client(to), self.propose_timeout);
        Box::pin(async move {
            let mut c = client?;
            let mut req = Request::new(proposal_to_pb(proposal));
            req.set_timeout(timeout);
            let resp = match tokio::time::timeout(timeout, c.propose(req)).await {
                Ok(r) => r.map_err(|s| remote_error(&to, s))?,
                Err(_) => {
                    return Err(NetError {
                        node: to,
                        kind: NetErrorKind::Timeout(timeout),
                    }
                    .into())
                }
            };
            outcome_from_pb(resp.into_inner())
                .map_err(|e| NodeError::Aborted(format!("node {to} sent a malformed answer: {e}")))
        })
    }

    fn deliver(
        &self,
        to: &NodeName,
        eid: ExecutionId,
        round: u32,
        payload: Vec<u8>,
    ) -> BoxFuture<'static, Result<(), NetError>> {
        let (to, client, timeout) = (to.clone(), self.client(to), self.deliver_timeout);
        Box::pin(async move {
            let mut c = client?;
            let env = pb::Envelope {
                wire_version: WIRE_VERSION,
                eid: eid.as_bytes().to_vec(),
                round,
                payload,
            };
            match tokio::time::timeout(timeout, c.deliver(env)).await {
                Ok(r) => r.map(|_| ()).map_err(|s| net_error(&to, s)),
                Err(_) => Err(NetError {
                    node: to,
                    kind: NetErrorKind::Timeout(timeout),
                }),
            }
        })
    }
}

impl From<NetError> for Status {
    fn from(e: NetError) -> Self {
        crate::api::status(&NodeError::Net(e))
    }
}
