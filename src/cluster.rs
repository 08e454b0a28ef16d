//! A local cluster on 127.0.0.1 with fresh certificates and stores under one
//! directory: what `thresig demo` and `thresig bench` run, and what the
//! integration tests start. Ports are chosen by the OS.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::client::{Client, ClientConfig};
use crate::config::{NodeConfig, PassphraseSource, Peer};
use crate::domain::NodeName;
use crate::node::Timeouts;
use crate::pki::{self, Layout, Role};
use crate::server::{self, Listeners, RunningNode, ServerError};
use crate::transport::tls::TlsFiles;

pub const TRUST_DOMAIN: &str = "thresig.local";
pub const CLIENT: &str = "validator";
/// A second client identity, so tests can show one client's limits do not touch another.
pub const CLIENT2: &str = "settlement";
pub const ADMIN: &str = "ops";

/// The local cluster's policy: its client may sign with every key at every
/// path, its admin may run every admin operation.
pub const DEV_POLICY: &str = r#"# Written by the local cluster (demo, bench, tests). Default deny: only the
# identities below may do anything.
[[client]]
name = "validator"
keys = ["*"]
paths = ["m"]

[[client]]
name = "settlement"
keys = ["*"]
paths = ["m"]

[[admin]]
name = "ops"
operations = ["*"]
"#;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("{0}")]
    Other(String),
}

/// A cluster of nodes in one process.
#[derive(Debug)]
pub struct LocalCluster {
    pub root: PathBuf,
    pub layout: Layout,
    pub configs: Vec<NodeConfig>,
    pub nodes: Vec<Option<RunningNode>>,
}

fn io(path: &Path, e: std::io::Error) -> ClusterError {
    ClusterError::Other(format!("{}: {e}", path.display()))
}

impl LocalCluster {
    /// The cluster admin requests for this cluster name (its trust domain
    /// and the cluster id of its CA).
    pub fn cluster(&self) -> String {
        crate::pki::cluster_name(
            TRUST_DOMAIN,
            &crate::transport::tls::cluster_id(&self.layout.ca_cert()).unwrap_or_default(),
        )
    }

    /// Creates certificates, passphrase files and configs under `root`, then
    /// starts every node.
    pub async fn start(
        root: &Path,
        names: &[&str],
        timeouts: Timeouts,
    ) -> Result<Self, ClusterError> {
        Self::start_seeded(root, names, timeouts, None).await
    }

    /// Like `start`, but each node's store is first copied from
    /// `seed/<name>/` (its `store.meta` and database), unlocked with the
    /// passphrase in `seed/<name>.passphrase`: how the stored-format fixtures
    /// are brought up with fresh certificates and ports.
    pub async fn start_seeded(
        root: &Path,
        names: &[&str],
        timeouts: Timeouts,
        seed: Option<&Path>,
    ) -> Result<Self, ClusterError> {
        let mut listeners = Vec::new();
        let mut addrs = Vec::new();
        for _ in names {
            let l = Listeners::bind(loopback()?, loopback()?).await?;
            addrs.push(NodeAddrs {
                peer: local(&l.peer)?,
                client: local(&l.client)?,
                dial: local(&l.peer)?,
            });
            listeners.push(l);
        }
        let (layout, mut configs) = Self::write_files(root, names, &addrs, timeouts)?;
        if let Some(seed) = seed {
            for cfg in &mut configs {
                seed_store(seed, cfg)?;
            }
        }
        let mut running = Vec::new();
        for (cfg, l) in configs.iter().zip(listeners) {
            running.push(Some(server::start(cfg, &cfg.passphrase.read()?, l)?));
        }
        // As `thresig node run` does, once every node is up.
        for n in running.iter().flatten() {
            n.node.sync_lifecycles().await;
        }
        Ok(Self {
            root: root.to_owned(),
            layout,
            configs,
            nodes: running,
        })
    }

    /// Starts the cluster written under `root` by an earlier `start` again,
    /// with its certificates, passphrases and stores (so its keys), on new
    /// loopback ports chosen by the OS: every `node.toml` is rewritten with
    /// them. The nodes are `root/nodes/*`, in name order.
    pub async fn reopen(root: &Path, timeouts: Timeouts) -> Result<Self, ClusterError> {
        let nodes_dir = root.join("nodes");
        let mut names: Vec<String> = std::fs::read_dir(&nodes_dir)
            .map_err(|e| io(&nodes_dir, e))?
            .filter_map(Result::ok)
            .filter(|e| e.path().join("node.toml").is_file())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        if names.is_empty() {
            return Err(ClusterError::Other(format!(
                "{} holds no node.toml: not a local cluster's directory",
                nodes_dir.display()
            )));
        }
        let mut configs = Vec::new();
        let mut listeners = Vec::new();
        for n in &names {
            let mut cfg = NodeConfig::load(&nodes_dir.join(n).join("node.toml"))?;
            let l = Listeners::bind(loopback()?, loopback()?).await?;
            cfg.listen_peer = local(&l.peer)?;
            cfg.listen_client = local(&l.client)?;
            cfg.timeouts = timeouts;
            cfg.connect_timeout = timeouts.ping;
            listeners.push(l);
            configs.push(cfg);
        }
        let peers: Vec<Peer> = configs
            .iter()
            .map(|c| Peer {
                name: c.name.clone(),
                peer_addr: c.listen_peer.into(),
                client_addr: c.listen_client.into(),
            })
            .collect();
        let mut running = Vec::new();
        for (cfg, l) in configs.iter_mut().zip(listeners) {
            cfg.peers = peers.clone();
            let path = nodes_dir.join(cfg.name.as_str()).join("node.toml");
            std::fs::write(&path, cfg.to_toml()).map_err(|e| io(&path, e))?;
            running.push(Some(server::start(cfg, &cfg.passphrase.read()?, l)?));
        }
        for n in running.iter().flatten() {
            n.node.sync_lifecycles().await;
        }
        Ok(Self {
            root: root.to_owned(),
            layout: Layout {
                dir: root.join("certs"),
            },
            configs,
            nodes: running,
        })
    }

    /// Writes the cluster's certificates (one CA; nodes `names`, clients
    /// `CLIENT` and `CLIENT2`, admin `ADMIN`), `DEV_POLICY`, and per node a
    /// passphrase file and `nodes/<name>/node.toml`, without starting
    /// anything. Node i listens on `addrs[i]`; the others reach its peer
    /// plane at `addrs[i].dial` (a delaying proxy, for instance).
    pub fn write_files(
        root: &Path,
        names: &[&str],
        addrs: &[NodeAddrs],
        timeouts: Timeouts,
    ) -> Result<(Layout, Vec<NodeConfig>), ClusterError> {
        let nodes: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
        let layout = pki::init(
            &root.join("certs"),
            TRUST_DOMAIN,
            &nodes,
            &[CLIENT.into(), CLIENT2.into()],
            &[ADMIN.into()],
            |_, _| {},
        )?;
        let mut peers = Vec::new();
        for (n, a) in names.iter().zip(addrs) {
            let name = NodeName::parse(n).map_err(|e| ClusterError::Other(e.to_string()))?;
            peers.push(Peer {
                name,
                peer_addr: a.dial.into(),
                client_addr: a.client.into(),
            });
        }
        let policy = root.join("policy.toml");
        pki::write_new(&policy, DEV_POLICY.as_bytes(), 0o644)?;
        let mut configs = Vec::new();
        for (p, a) in peers.iter().zip(addrs) {
            let dir = root.join("nodes").join(p.name.as_str());
            std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
            let pass_file = dir.join("passphrase");
            let mut pass = [0u8; 24];
            getrandom::fill(&mut pass).map_err(|e| ClusterError::Other(e.to_string()))?;
            pki::write_new(&pass_file, hex::encode(pass).as_bytes(), 0o600)?;
            let cfg = NodeConfig {
                name: p.name.clone(),
                trust_domain: TRUST_DOMAIN.into(),
                data_dir: dir.join("data"),
                listen_peer: a.peer,
                listen_client: a.client,
                listen_ops: None,
                tls: TlsFiles {
                    ca: layout.ca_cert(),
                    cert: layout.cert(Role::Node, p.name.as_str()),
                    key: layout.key(Role::Node, p.name.as_str()),
                    crl: None,
                    crl_grace: None,
                },
                passphrase: PassphraseSource::File(pass_file),
                timeouts,
                connect_timeout: timeouts.ping,
                peers: peers.clone(),
                policy: Some(policy.clone()),
                connection_caps: Default::default(),
                refusal_budget: Default::default(),
            };
            let path = dir.join("node.toml");
            std::fs::write(&path, cfg.to_toml()).map_err(|e| io(&path, e))?;
            configs.push(cfg);
        }
        Ok((layout, configs))
    }

    pub fn names(&self) -> Vec<String> {
        self.configs.iter().map(|c| c.name.to_string()).collect()
    }

    /// A client of node `i` with the given identity (`CLIENT` or `ADMIN`).
    pub fn client(&self, i: usize, identity: &str) -> Result<Client, ClusterError> {
        let cfg = self
            .configs
            .get(i)
            .ok_or_else(|| ClusterError::Other(format!("no node {i}")))?;
        client_of(&self.layout, cfg, identity)
    }

    /// Stops node `i` (its ports then refuse connections).
    pub async fn stop_node(&mut self, i: usize) {
        if let Some(n) = self.nodes.get_mut(i).and_then(Option::take) {
            n.stop().await;
        }
    }

    /// Starts node `i` again from its config and data directory, on its old
    /// ports, and (as `thresig node run` does before it says it serves)
    /// compares its keys' state with their committees.
    pub async fn start_node(&mut self, i: usize) -> Result<(), ClusterError> {
        self.start_node_unsynced(i).await?;
        if let Some(n) = self.nodes.get(i).and_then(Option::as_ref) {
            n.node.sync_lifecycles().await;
        }
        Ok(())
    }

    /// `start_node` without the comparison: a node whose comparison at start
    /// found no committee member answering.
    pub async fn start_node_unsynced(&mut self, i: usize) -> Result<(), ClusterError> {
        let cfg = self
            .configs
            .get(i)
            .ok_or_else(|| ClusterError::Other(format!("no node {i}")))?
            .clone();
        let l = Listeners::bind(cfg.listen_peer, cfg.listen_client).await?;
        let n = server::start(&cfg, &cfg.passphrase.read()?, l)?;
        self.nodes[i] = Some(n);
        Ok(())
    }

    /// Stops every node.
    pub async fn stop(mut self) {
        for i in 0..self.nodes.len() {
            self.stop_node(i).await;
        }
    }
}

/// A client of the node configured by `cfg`, with `identity`'s certificate
/// from the cluster's `layout`.
pub fn client_of(
    layout: &Layout,
    cfg: &NodeConfig,
    identity: &str,
) -> Result<Client, ClusterError> {
    let cc = ClientConfig::from_dir(
        &layout.dir,
        TRUST_DOMAIN,
        identity,
        cfg.name.as_str(),
        cfg.listen_client,
    );
    Client::connect(&cc).map_err(|e| ClusterError::Other(e.to_string()))
}

/// Copies `seed/<name>/`'s files into the node's data directory and points
/// its passphrase at `seed/<name>.passphrase`.
fn seed_store(seed: &Path, cfg: &mut NodeConfig) -> Result<(), ClusterError> {
    let from = seed.join(cfg.name.as_str());
    std::fs::create_dir_all(&cfg.data_dir).map_err(|e| io(&cfg.data_dir, e))?;
    let entries = std::fs::read_dir(&from).map_err(|e| io(&from, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io(&from, e))?;
        let to = cfg.data_dir.join(entry.file_name());
        std::fs::copy(entry.path(), &to).map_err(|e| io(&to, e))?;
    }
    let pass = seed.join(format!("{}.passphrase", cfg.name));
    if !pass.is_file() {
        return Err(ClusterError::Other(format!(
            "{} is missing",
            pass.display()
        )));
    }
    cfg.passphrase = PassphraseSource::File(pass);
    Ok(())
}

/// Where one node of a local cluster listens, and where the others dial its peer plane.
#[derive(Debug, Clone, Copy)]
pub struct NodeAddrs {
    pub peer: SocketAddr,
    pub client: SocketAddr,
    pub dial: SocketAddr,
}

fn loopback() -> Result<SocketAddr, ClusterError> {
    "127.0.0.1:0"
        .parse()
        .map_err(|_| ClusterError::Other("addr".into()))
}

fn local(l: &tokio::net::TcpListener) -> Result<SocketAddr, ClusterError> {
    l.local_addr()
        .map_err(|e| ClusterError::Other(e.to_string()))
}
