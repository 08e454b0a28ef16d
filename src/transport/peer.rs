//! The peer plane over gRPC: the server side hands authenticated messages to
//! the node; the client side (`GrpcPeerNet`) implements `node::PeerNet`.
//! The sender of every message is the connection's certificate identity.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::identity::Identity;
use super::refusal::{answer_from_pb, refusal_to_pb};
use super::wire::{bad, check_version, outcome_to_pb, proposal_from_pb, proposal_to_pb};
use crate::domain::{ExecutionId, HostPort, NodeName};
use crate::node::{
    NetError, NetErrorKind, Node, NodeError, Outcome, PeerNet, Proposal, WIRE_VERSION,
};
use crate::pki::Role;
use crate::proto::peer as pb;
use crate::proto::peer::peer_client::PeerClient;
use crate::protocol::MAX_MESSAGE_BYTES;

/// Largest gRPC message on the peer plane.
pub const MAX_GRPC_BYTES: usize = MAX_MESSAGE_BYTES + 4096;

/// Server side of `thresig.peer.v1.Peer`.
pub struct PeerService {
    node: Arc<Node>,
    /// This node's TLS material, for the certificate expiry a ping reports.
    tls: Option<Arc<super::tls::TlsState>>,
}

impl PeerService {
    pub fn new(node: Arc<Node>) -> Self {
        Self { node, tls: None }
    }

    /// Pings report when this node's certificate in `tls` expires.
    pub fn with_tls(mut self, tls: Arc<super::tls::TlsState>) -> Self {
        self.tls = Some(tls);
        self
    }

    pub fn into_server(self) -> pb::peer_server::PeerServer<Self> {
        pb::peer_server::PeerServer::new(self)
            .max_decoding_message_size(MAX_GRPC_BYTES)
            .max_encoding_message_size(MAX_GRPC_BYTES)
    }
}

/// A call across a partition injected by a test (`faults::isolate`): it
/// waits while the partition lasts, then fails; at once Ok otherwise.
async fn lost(from: &NodeName, me: &NodeName) -> Result<(), Status> {
    if crate::node::faults::passes(from, me).await {
        Ok(())
    } else {
        Err(Status::unavailable(
            "lost in a network partition (injected)",
        ))
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

#[tonic::async_trait]
impl pb::peer_server::Peer for PeerService {
    async fn ping(
        &self,
        req: Request<pb::PingRequest>,
    ) -> Result<Response<pb::PingResponse>, Status> {
        let from = sender(&req)?;
        check_version(req.get_ref().wire_version)?;
        lost(&from, self.node.name()).await?;
        Ok(Response::new(pb::PingResponse {
            wire_version: WIRE_VERSION,
            node: self.node.name().to_string(),
            software_version: env!("CARGO_PKG_VERSION").into(),
            cert_not_after_unix: self
                .tls
                .as_ref()
                .and_then(|t| t.expiry())
                .map_or(0, |e| e.cert_not_after),
        }))
    }

    async fn propose(
        &self,
        req: Request<pb::ProposeRequest>,
    ) -> Result<Response<pb::ProposeResponse>, Status> {
        let from = sender(&req)?;
        lost(&from, self.node.name()).await?;
        let proposal = proposal_from_pb(req.into_inner())?;
        // A refusal is an answer, with its reason code: only failures of the
        // call itself (identity, version, a malformed proposal) are statuses.
        Ok(Response::new(
            match self.node.on_propose(&from, proposal).await {
                Ok(outcome) => outcome_to_pb(outcome),
                Err(e) => refusal_to_pb(self.node.name(), &e),
            },
        ))
    }

    async fn deliver(
        &self,
        req: Request<pb::Envelope>,
    ) -> Result<Response<pb::DeliverAck>, Status> {
        let from = sender(&req)?;
        lost(&from, self.node.name()).await?;
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
                crate::node::RouteError::Full(_) | crate::node::RouteError::PeerQuota(_) => {
                    Status::resource_exhausted(e.to_string())
                }
                crate::node::RouteError::NotAParty { .. } => {
                    Status::permission_denied(e.to_string())
                }
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
        peers: &[(NodeName, HostPort)],
        tls: super::tls::ClientTls,
        trust_domain: &str,
        connect_timeout: Duration,
        timeouts: crate::node::Timeouts,
    ) -> Result<Self, tonic::transport::Error> {
        let mut channels = HashMap::new();
        for (name, addr) in peers {
            let connect = super::conn::Connect {
                timeout: connect_timeout,
                attempts: super::conn::PEER_CONNECT_ATTEMPTS,
            };
            let ch = super::conn::dial(
                addr.clone(),
                name.clone(),
                tls.clone(),
                trust_domain.to_owned(),
                connect,
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

/// A failed call: the node refused the call itself (its identity or wire
/// version, or a proposal it could not parse), or it did not get through.
fn remote_error(node: &NodeName, s: Status) -> NodeError {
    let m = s.message().to_owned();
    let refused = match s.code() {
        tonic::Code::InvalidArgument => NodeError::InvalidArgument(m),
        tonic::Code::PermissionDenied | tonic::Code::Unauthenticated => {
            NodeError::PermissionDenied(m)
        }
        tonic::Code::FailedPrecondition => NodeError::FailedPrecondition(m),
        tonic::Code::ResourceExhausted => NodeError::Unavailable(m),
        _ => return NodeError::Net(net_error(node, s)),
    };
    refused.at(node)
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
    fn ping(
        &self,
        to: &NodeName,
    ) -> BoxFuture<'static, Result<crate::node::PeerVersion, NetError>> {
        let (to, client) = (to.clone(), self.client(to));
        Box::pin(async move {
            let mut c = client?;
            let r = c
                .ping(pb::PingRequest {
                    wire_version: WIRE_VERSION,
                    software_version: env!("CARGO_PKG_VERSION").into(),
                })
                .await
                .map_err(|s| net_error(&to, s))?
                .into_inner();
            Ok(crate::node::PeerVersion {
                wire: r.wire_version,
                software: r.software_version,
                cert_not_after: (r.cert_not_after_unix != 0).then_some(r.cert_not_after_unix),
            })
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
            answer_from_pb(&to, resp.into_inner())
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
