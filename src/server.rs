//! Runs one node: opens the store (refusing a wrong passphrase before
//! anything is written), wires the peer network, and serves the peer plane
//! and the client/admin plane on listeners the caller bound, until shutdown.
//! Tests bind `127.0.0.1:0` and pass the listeners in.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::Server;

use crate::api::{AdminService, Reloader, SignerService};
use crate::config::NodeConfig;
use crate::node::Node;
use crate::secret::SecretBytes;
use crate::storage::{StorageError, Store};
use crate::transport::peer::{GrpcPeerNet, PeerService};
use crate::transport::tls::{ClientTls, TlsError, TlsState};
use crate::transport::{incoming, Plane};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot bind {addr}: the port is still in use after {}s of retries (another process, or \
         an earlier instance of this node, holds it)",
        waited.as_secs()
    )]
    PortInUse {
        addr: SocketAddr,
        waited: std::time::Duration,
    },
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("{0}")]
    Policy(String),
}

/// The two listening sockets of a node.
pub struct Listeners {
    pub peer: TcpListener,
    pub client: TcpListener,
}

/// How long a node retries a port that is still in use (a restart whose
/// previous process, or previous listener, has not let go of it yet).
const BIND_RETRY_FOR: std::time::Duration = std::time::Duration::from_secs(5);

impl Listeners {
    /// Binds both planes. A port still in use is retried for up to
    /// `BIND_RETRY_FOR`, then reported with the address.
    pub async fn bind(peer: SocketAddr, client: SocketAddr) -> Result<Self, ServerError> {
        let b = |addr| async move {
            let give_up = tokio::time::Instant::now() + BIND_RETRY_FOR;
            loop {
                match listen(addr) {
                    Ok(l) => return Ok(l),
                    Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                        if tokio::time::Instant::now() >= give_up {
                            return Err(ServerError::PortInUse {
                                addr,
                                waited: BIND_RETRY_FOR,
                            });
                        }
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                    Err(source) => return Err(ServerError::Bind { addr, source }),
                }
            }
        };
        Ok(Self {
            peer: b(peer).await?,
            client: b(client).await?,
        })
    }
}

/// Connections the kernel queues for a listener before this node accepts
/// them (capped by net.core.somaxconn): deep enough that a flood of
/// connections that never finish their handshake, accepted and cut as fast
/// as they come, does not make a real peer's connection wait for a SYN
/// retransmission.
const LISTEN_BACKLOG: u32 = 4096;

/// A listener on `addr`. SO_REUSEADDR lets a restarted node bind while the
/// previous process's connections on the port linger in TIME_WAIT (it
/// never lets two listeners share the port).
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// A node serving in the background.
pub struct RunningNode {
    pub node: Arc<Node>,
    pub peer_addr: SocketAddr,
    pub client_addr: SocketAddr,
    /// The ops HTTP plane's address, when configured.
    pub ops_addr: Option<SocketAddr>,
    reloader: Reloader,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<Result<(), tonic::transport::Error>>>,
}

impl std::fmt::Debug for RunningNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningNode")
            .field("node", &self.node.name())
            .field("peer", &self.peer_addr)
            .field("client", &self.client_addr)
            .finish()
    }
}

impl RunningNode {
    /// Rereads the policy and the TLS material (SIGHUP does this).
    pub fn reload(&self) -> crate::api::ReloadReport {
        self.reloader.reload()
    }

    /// Stops serving, waits (bounded) for in-flight calls and closes the store.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            match tokio::time::timeout(Duration::from_secs(30), t).await {
                Ok(Ok(Err(e))) => tracing::warn!(error = %e, "server ended with an error"),
                Ok(_) => {}
                Err(_) => tracing::warn!("server did not stop within 30s"),
            }
        }
        drop(self.node);
    }

    /// Resolves when either plane stops on its own (an error) or `stop` is called.
    pub async fn wait(&mut self) {
        if let Some(t) = self.tasks.first_mut() {
            let _ = t.await;
        }
    }
}

/// Concurrent HTTP/2 streams one peer connection may open: each session a
/// peer coordinates or takes part in uses a few at a time (its Propose call
/// and one delivery per round).
pub const MAX_PEER_STREAMS: u32 = 1024;
/// Concurrent HTTP/2 streams one client connection may open (requests in
/// flight beyond this wait in the client).
pub const MAX_CLIENT_STREAMS: u32 = 256;

/// Whether a started node reports ready at once, or only once the caller
/// has compared every key's state with its committee.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Startup {
    /// Ready as soon as it listens (in-process clusters).
    Ready,
    /// `/readyz` reports not ready until the caller ends the start-up
    /// comparison (`Node::set_comparing_at_start(false)`, which
    /// `Node::sync_lifecycles_at_start` does): `thresig node run`.
    ComparingFirst,
}

/// Opens the store and starts serving on `listeners`, ready at once.
pub fn start(
    cfg: &NodeConfig,
    passphrase: &SecretBytes,
    listeners: Listeners,
) -> Result<RunningNode, ServerError> {
    start_with(cfg, passphrase, listeners, Startup::Ready)
}

/// Opens the store and starts serving on `listeners`.
pub fn start_with(
    cfg: &NodeConfig,
    passphrase: &SecretBytes,
    listeners: Listeners,
    startup: Startup,
) -> Result<RunningNode, ServerError> {
    let store = Store::open(&cfg.data_dir, &cfg.name, passphrase)?;
    let tls = TlsState::load(&cfg.tls)?;
    let peers: Vec<_> = cfg
        .peers
        .iter()
        .filter(|p| p.name != cfg.name)
        .map(|p| (p.name.clone(), p.peer_addr.clone()))
        .collect();
    let net = GrpcPeerNet::new(
        &peers,
        ClientTls::Node(tls.clone()),
        &cfg.trust_domain,
        cfg.connect_timeout,
        cfg.timeouts,
    )?;
    let roster = cfg.peers.iter().map(|p| p.name.clone()).collect();
    let verifier = crate::transport::request_auth::CertRequestVerifier::following(
        tls.clone(),
        &cfg.trust_domain,
    );
    let node = Arc::new(
        Node::new(
            cfg.name.clone(),
            roster,
            store,
            Arc::new(net),
            cfg.timeouts,
            Arc::new(verifier),
            Arc::new(crate::transport::request_auth::NodeReceiptSigner::new(
                &cfg.tls,
            )),
            cfg.policy.clone(),
        )
        .map_err(|e| ServerError::Policy(e.to_string()))?
        .with_refusal_budget(cfg.refusal_budget),
    );
    node.set_comparing_at_start(startup == Startup::ComparingFirst);
    let peer_addr = listeners
        .peer
        .local_addr()
        .map_err(|source| ServerError::Bind {
            addr: cfg.listen_peer,
            source,
        })?;
    let client_addr = listeners
        .client
        .local_addr()
        .map_err(|source| ServerError::Bind {
            addr: cfg.listen_client,
            source,
        })?;
    let (stop, stopped) = watch::channel(false);
    let metrics = Arc::new(crate::telemetry::Metrics::new(
        env!("CARGO_PKG_VERSION"),
        crate::node::WIRE_VERSION,
    ));
    metrics.set_limits(cfg.connection_caps, cfg.refusal_budget);
    let mut ops_addr = None;
    if let Some(addr) = cfg.listen_ops {
        let bind = |source| ServerError::Bind { addr, source };
        let std_listener = std::net::TcpListener::bind(addr).map_err(bind)?;
        std_listener.set_nonblocking(true).map_err(bind)?;
        ops_addr = Some(std_listener.local_addr().map_err(bind)?);
        let listener = TcpListener::from_std(std_listener).map_err(bind)?;
        let ops = crate::api::ops::OpsState::new(node.clone(), metrics.clone(), Some(tls.clone()));
        tokio::spawn(crate::api::ops::watch(ops.clone(), stopped.clone()));
        tokio::spawn(crate::api::ops::serve(listener, ops, stopped.clone()));
    }
    let signal = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let (health_reporter, health) = tonic_health::server::health_reporter();
    drop(health_reporter);
    let peer_incoming = incoming(
        listeners.peer,
        tls.clone(),
        cfg.trust_domain.clone(),
        Plane::Peer,
        cfg.connection_caps,
    );
    let client_incoming = incoming(
        listeners.client,
        tls.clone(),
        cfg.trust_domain.clone(),
        Plane::Client,
        cfg.connection_caps,
    );
    let reloader = Reloader {
        node: node.clone(),
        tls,
    };
    let peer_svc = PeerService::new(node.clone())
        .with_tls(reloader.tls.clone())
        .into_server();
    // Every key's state compared with its committee once a minute, so a
    // change this node missed reaches it whoever coordinates; and every 5 s
    // the keys with a member not heard from since start (it started later,
    // or was down), so this node soon knows every member it can fall back on
    // (`node/lifecycle_sync.rs`).
    {
        let node = node.clone();
        let mut stop = stopped.clone();
        tokio::spawn(async move {
            let mut last_full = tokio::time::Instant::now();
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(crate::node::LIFECYCLE_UNHEARD_RECHECK) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                if last_full.elapsed() >= crate::node::LIFECYCLE_RECHECK {
                    node.sync_lifecycles().await;
                    last_full = tokio::time::Instant::now();
                } else {
                    node.sync_unheard_lifecycles().await;
                }
            }
        });
    }
    let peer_task = tokio::spawn(
        Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(20)))
            .max_concurrent_streams(Some(MAX_PEER_STREAMS))
            .layer(crate::api::too_large::TooLargeLayer)
            .add_service(peer_svc)
            .serve_with_incoming_shutdown(peer_incoming, signal(stopped.clone())),
    );
    let client_task = tokio::spawn(
        Server::builder()
            .max_concurrent_streams(Some(MAX_CLIENT_STREAMS))
            .concurrency_limit_per_connection(256)
            .layer(crate::api::too_large::TooLargeLayer)
            .add_service(health)
            .add_service(SignerService::new(node.clone(), metrics.clone()))
            .add_service(AdminService::new(reloader.clone(), metrics.clone()))
            .serve_with_incoming_shutdown(client_incoming, signal(stopped)),
    );
    // "listening", not "serving": `thresig node run` says it serves only
    // once it has compared every key's state with its committee.
    tracing::info!(node = %cfg.name, %peer_addr, %client_addr, ops = ?ops_addr, "listening");
    Ok(RunningNode {
        node,
        peer_addr,
        client_addr,
        ops_addr,
        reloader,
        stop,
        tasks: vec![peer_task, client_task],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_port_still_held_is_retried_until_it_is_free() {
        let held = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = held.local_addr().unwrap();
        let client: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut binding = tokio::spawn(Listeners::bind(peer, client));
        // While `held` lives the bind keeps retrying: it has not finished (a
        // bind that gave up at once would have).
        let early = tokio::time::timeout(std::time::Duration::from_millis(300), &mut binding).await;
        assert!(early.is_err(), "bind finished while the port was held");
        // Once the holder lets go, it succeeds on the same port.
        drop(held);
        let l = binding.await.unwrap().unwrap();
        assert_eq!(l.peer.local_addr().unwrap(), peer);
    }
}
