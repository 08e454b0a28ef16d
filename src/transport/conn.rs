//! Connections: the accept loop that turns TCP into authenticated TLS streams
//! for tonic (`serve_with_incoming`), and the connector that dials a node and
//! checks that the server is the node we meant. Handshakes are bounded in
//! time and number.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Endpoint};

use super::identity::{identity_of, Identity, IdentityError};
use crate::domain::{HostPort, NodeName};
use crate::pki::Role;

/// How long a connection may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Handshakes in progress at once on one listener, and from one address
/// before that address's stalled ones are cut (see `handshakes.rs`: only a
/// stalled handshake is cut to make room while the bound allows).
const MAX_HANDSHAKES: usize = 1024;
const MAX_HANDSHAKES_PER_SOURCE: usize = 64;
/// Authenticated connections one identity may hold open at once, by
/// default: a node needs one or two to each peer, a client process one per
/// channel.
pub const MAX_CONNECTIONS_PER_NODE: usize = 64;
pub const MAX_CONNECTIONS_PER_CLIENT: usize = 1024;

/// Authenticated connections one identity may hold open at once on each
/// plane (config `[limits]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionCaps {
    /// Per node identity on the peer plane (`connections_per_node`).
    pub per_node: usize,
    /// Per client or admin identity on the client plane
    /// (`connections_per_client`).
    pub per_client: usize,
}

impl Default for ConnectionCaps {
    fn default() -> Self {
        Self {
            per_node: MAX_CONNECTIONS_PER_NODE,
            per_client: MAX_CONNECTIONS_PER_CLIENT,
        }
    }
}

/// Open authenticated connections per identity on one listener.
#[derive(Default)]
struct PerIdentity(std::sync::Mutex<std::collections::HashMap<String, usize>>);

/// One open connection of an identity; dropping it frees its place.
struct IdentitySlot {
    owner: Arc<PerIdentity>,
    who: String,
}

impl PerIdentity {
    /// A place for one more connection of `who`, unless it holds `cap`.
    fn take(self: &Arc<Self>, who: String, cap: usize) -> Result<IdentitySlot, usize> {
        let mut g = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = g.entry(who.clone()).or_insert(0);
        if *n >= cap {
            return Err(*n);
        }
        *n = n.saturating_add(1);
        Ok(IdentitySlot {
            owner: self.clone(),
            who,
        })
    }
}

impl Drop for IdentitySlot {
    fn drop(&mut self) {
        let mut g = self
            .owner
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = g.get_mut(&self.who) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                g.remove(&self.who);
            }
        }
    }
}

/// A TLS stream whose peer identity has been checked for this plane.
pub struct Authed {
    io: TlsStream<super::handshakes::Watched<TcpStream>>,
    peer: Authenticated,
    _slot: IdentitySlot,
}

/// Who is on the other end of a connection, as every request on it sees it
/// (in the request's extensions): the identity and the certificate chain it
/// presented (DER, its own first).
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub identity: Identity,
    pub chain: Arc<Vec<Vec<u8>>>,
}

impl Connected for Authed {
    type ConnectInfo = Authenticated;
    fn connect_info(&self) -> Authenticated {
        self.peer.clone()
    }
}

impl AsyncRead for Authed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Authed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Which identities a plane admits.
#[derive(Debug, Clone, Copy)]
pub enum Plane {
    Peer,
    Client,
}

impl Plane {
    /// Whether a connection with this role stays open. The peer plane keeps
    /// only nodes. The client plane keeps every role of the trust domain:
    /// each of its services checks the role of every call and refuses a
    /// wrong one with PERMISSION_DENIED naming the certificate it needs, so a
    /// client configured with a node's certificate by mistake is told why,
    /// rather than seeing its connection dropped after the handshake.
    fn admits(self, role: Role) -> bool {
        match self {
            Self::Peer => role == Role::Node,
            Self::Client => matches!(role, Role::Client | Role::Admin | Role::Node),
        }
    }
    /// Most authenticated connections one identity may hold on this plane.
    fn cap(self, caps: ConnectionCaps) -> usize {
        match self {
            Self::Peer => caps.per_node,
            Self::Client => caps.per_client,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Self::Peer => "peer",
            Self::Client => "client",
        }
    }
}

/// Accepts TLS connections on `listener`, keeps those whose certificate
/// identity the plane admits, and yields them to tonic. Refused handshakes
/// are logged with the reason and dropped.
pub fn incoming(
    listener: TcpListener,
    tls: Arc<super::tls::TlsState>,
    trust_domain: String,
    plane: Plane,
    caps: ConnectionCaps,
) -> tokio_stream::wrappers::ReceiverStream<Result<Authed, std::io::Error>> {
    let (tx, rx) = mpsc::channel(64);
    let pending = super::handshakes::Handshakes::new(MAX_HANDSHAKES, MAX_HANDSHAKES_PER_SOURCE);
    let open = Arc::new(PerIdentity::default());
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = tx.closed() => break,
            };
            let (tcp, remote) = match accepted {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Protocol rounds are small request/response exchanges: without
            // TCP_NODELAY, Nagle plus delayed ACKs add ~40 ms per round.
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(%remote, error = %e, "cannot set TCP_NODELAY");
            }
            let (slot, cut) = pending.admit(remote.ip());
            if cut > 0 {
                crate::telemetry::note_handshakes_cut(plane.name(), cut);
                tracing::info!(
                    %remote,
                    plane = plane.name(),
                    cut,
                    "handshakes pending at their bound; cut stalled ones to make room",
                );
            }
            // The newest material for each handshake (see `TlsState::reload`).
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.server());
            let (tx, td, open) = (tx.clone(), trust_domain.clone(), open.clone());
            tokio::spawn(async move {
                let mut slot = slot;
                let tcp = slot.watch(tcp);
                let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
                let done = tokio::select! {
                    done = handshake => done,
                    _ = &mut slot.cut => {
                        tracing::info!(%remote, plane = plane.name(), "stalled handshake cut for a newer connection");
                        return;
                    }
                };
                drop(slot);
                match done {
                    Ok(Ok(io)) => match check_client(&io, &td, plane) {
                        Ok(identity) => {
                            let slot = match open.take(identity.to_string(), plane.cap(caps)) {
                                Ok(slot) => slot,
                                Err(held) => {
                                    crate::telemetry::note_connection_refused(plane.name());
                                    tracing::info!(
                                        %remote,
                                        plane = plane.name(),
                                        %identity,
                                        held,
                                        "connection refused: the identity holds its most connections",
                                    );
                                    return;
                                }
                            };
                            let chain = io
                                .get_ref()
                                .1
                                .peer_certificates()
                                .map(|c| c.iter().map(|c| c.to_vec()).collect())
                                .unwrap_or_default();
                            let peer = Authenticated {
                                identity,
                                chain: Arc::new(chain),
                            };
                            let _ = tx
                                .send(Ok(Authed {
                                    io,
                                    peer,
                                    _slot: slot,
                                }))
                                .await;
                        }
                        Err(e) => {
                            tracing::warn!(
                                %remote,
                                plane = plane.name(),
                                error = %e,
                                "refused connection",
                            )
                        }
                    },
                    Ok(Err(e)) => {
                        tracing::info!(
                            %remote,
                            plane = plane.name(),
                            error = %e,
                            "TLS handshake failed",
                        )
                    }
                    Err(_) => {
                        tracing::info!(%remote, plane = plane.name(), "TLS handshake timed out")
                    }
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

fn check_client(
    io: &TlsStream<super::handshakes::Watched<TcpStream>>,
    trust_domain: &str,
    plane: Plane,
) -> Result<Identity, IdentityError> {
    let cert = io
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or(IdentityError::NoCertificate)?;
    let id = identity_of(cert, trust_domain)?;
    if !plane.admits(id.role) {
        return Err(IdentityError::WrongPlane {
            got: id.to_string(),
            plane: plane.name(),
        });
    }
    Ok(id)
}

/// How many times a node's connector tries a connection whose attempt timed
/// out (`Connect::attempts` for peers). Nothing was sent on an attempt that
/// timed out, so trying again is safe for every call; and a SYN or handshake
/// flight lost to a full backlog or a starved peer is often answered at once
/// by a fresh attempt, where waiting longer on the first would wait for the
/// kernel's retransmit.
pub const PEER_CONNECT_ATTEMPTS: u32 = 2;

/// How a channel connects: each attempt may take `timeout`; one that times
/// out is tried again, up to `attempts` in all.
#[derive(Debug, Clone, Copy)]
pub struct Connect {
    pub timeout: Duration,
    pub attempts: u32,
}

/// A lazily connected channel to node `server` at `addr` (a name in it is
/// resolved at each attempt). The server must present a certificate for DNS
/// name `server` and identity `node/<server>`.
pub fn dial(
    addr: HostPort,
    server: NodeName,
    tls: impl Into<super::tls::ClientTls>,
    trust_domain: String,
    connect: Connect,
) -> Result<Channel, tonic::transport::Error> {
    let tls: super::tls::ClientTls = tls.into();
    let Connect {
        timeout: connect_timeout,
        attempts,
    } = connect;
    let attempts = attempts.max(1);
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(
            connect_timeout
                .saturating_mul(attempts)
                .saturating_add(Duration::from_millis(100)),
        )
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10));
    let connector = tower::service_fn(move |_uri: http::Uri| {
        let (tls, server, td, addr) = (
            tls.clone(),
            server.clone(),
            trust_domain.clone(),
            addr.clone(),
        );
        let server_name = server.clone();
        // The handshake runs on its own task. A lazy channel polls its
        // connection attempt only while a request waits on it: if that
        // request is cancelled (a session abandoned mid-round), an inline
        // handshake would stall half-done and fail the channel's next request
        // with a stale connect timeout, seconds later.
        let handshake = tokio::spawn(async move {
            for _ in 0..attempts {
                let attempt = connect_node(&addr, &server, tls.get(), &td);
                if let Ok(done) = tokio::time::timeout(connect_timeout, attempt).await {
                    return Some(done);
                }
            }
            None
        });
        async move {
            match handshake.await {
                Ok(Some(connected)) => connected,
                Ok(None) => Err::<_, BoxError>(
                    format!(
                        "connecting to node {server_name} timed out \
                         ({attempts} attempts of {connect_timeout:?})"
                    )
                    .into(),
                ),
                Err(e) => Err(e.into()),
            }
        }
    });
    Ok(endpoint.connect_with_connector_lazy(connector))
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One connection attempt: TCP, TLS, and a check that the server is node
/// `server`.
async fn connect_node(
    addr: &HostPort,
    server: &NodeName,
    tls: Arc<rustls::ClientConfig>,
    trust_domain: &str,
) -> Result<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>, BoxError> {
    let tcp = TcpStream::connect((addr.host(), addr.port())).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from(server.as_str().to_owned())?;
    let io = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await?;
    let cert = io
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or(IdentityError::NoCertificate)?;
    let id = identity_of(cert, trust_domain)?;
    if id.role != Role::Node || id.name != *server {
        return Err(format!("dialed node {server} at {addr} but it presented {id}").into());
    }
    Ok(TokioIo::new(io))
}
