//! Node configuration: raw TOML structs (unknown fields rejected) turned into
//! a validated `NodeConfig`. Every error names the field it is about. The
//! store passphrase never comes from the command line or the file itself:
//! only from an environment variable or a passphrase file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::domain::{HostPort, NodeName};
use crate::node::Timeouts;
use crate::secret::SecretBytes;
use crate::transport::tls::TlsFiles;

/// Default environment variable holding the store passphrase.
pub const PASSPHRASE_ENV: &str = "THRESIG_PASSPHRASE";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config field `{field}`: {message}")]
    Field { field: String, message: String },
}

fn field(field: impl Into<String>, message: impl std::fmt::Display) -> ConfigError {
    ConfigError::Field {
        field: field.into(),
        message: message.to_string(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    node: RawNode,
    listen: RawListen,
    tls: RawTls,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    timeouts: RawTimeouts,
    #[serde(default)]
    limits: RawLimits,
    peers: Vec<RawPeer>,
}

/// Per-peer and per-identity budgets (all optional; defaults in
/// `ConnectionCaps` and `RefusalBudget`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    /// Authenticated connections one node identity may hold on the peer plane.
    connections_per_node: Option<u64>,
    /// Authenticated connections one client or admin identity may hold on
    /// the client plane.
    connections_per_client: Option<u64>,
    /// The window refused peer proposals are counted in.
    refusal_window_secs: Option<u64>,
    /// Refusals of one peer audited one by one per window.
    refusals_audited: Option<u64>,
    /// Refused key-change proposals of one peer per window before its key
    /// changes are refused at once.
    refusals_per_window: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    name: String,
    trust_domain: String,
    data_dir: PathBuf,
    /// Authorization policy file; without it every client and admin request is denied.
    policy: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListen {
    peer: String,
    client: String,
    /// Plain HTTP /healthz, /readyz, /metrics; off unless set.
    ops: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    crl: Option<PathBuf>,
    /// How long past its nextUpdate a CRL is still accepted (default 24 h).
    crl_grace_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    passphrase_env: Option<String>,
    passphrase_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTimeouts {
    round_ms: Option<u64>,
    ping_ms: Option<u64>,
    connect_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeer {
    name: String,
    peer_addr: String,
    client_addr: String,
}

/// One node of the cluster roster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub name: NodeName,
    /// Where the other nodes dial this node's peer plane: an IP address or a
    /// DNS name (resolved at each connection attempt), and a port.
    pub peer_addr: HostPort,
    pub client_addr: HostPort,
}

/// Where the store passphrase comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PassphraseSource {
    Env(String),
    File(PathBuf),
}

impl PassphraseSource {
    /// Reads the passphrase. A trailing newline in a file is ignored.
    pub fn read(&self) -> Result<SecretBytes, ConfigError> {
        let mut raw = match self {
            Self::Env(var) => {
                if let Some(taken) = taken_passphrase(var) {
                    return Ok(taken);
                }
                std::env::var(var)
                    .map_err(|_| {
                        field(
                            "store.passphrase_env",
                            format!("environment variable {var} is not set"),
                        )
                    })?
                    .into_bytes()
            }
            Self::File(p) => std::fs::read(p)
                .map_err(|e| field("store.passphrase_file", format!("{}: {e}", p.display())))?,
        };
        while raw.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            raw.pop();
        }
        if raw.is_empty() {
            return Err(field("store", "the store passphrase is empty"));
        }
        Ok(SecretBytes::new(raw))
    }
}

/// An environment passphrase taken out of the environment (`take_from_env`).
static TAKEN: std::sync::Mutex<Option<(String, SecretBytes)>> = std::sync::Mutex::new(None);

fn taken_passphrase(var: &str) -> Option<SecretBytes> {
    let g = TAKEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    g.as_ref()
        .filter(|(v, _)| v == var)
        .map(|(_, p)| SecretBytes::new(p.expose().to_vec()))
}

impl PassphraseSource {
    /// Forgets a passphrase `take_from_env` kept (it is zeroized): call once
    /// the store's key is derived. `read` then fails for an environment
    /// passphrase, as the variable is gone too.
    pub fn forget_taken() {
        *TAKEN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }

    /// For an environment passphrase: reads it now and removes the variable
    /// from the process environment, so no child process inherits it; `read`
    /// returns it from then on. Call this before any other thread exists
    /// (`node run` does, before its runtime starts): changing the environment
    /// while other threads may read it is unsound. `/proc/<pid>/environ` still
    /// shows the environment the process started with; a passphrase file is
    /// the better choice in production. Does nothing for a file.
    pub fn take_from_env(&self) -> Result<(), ConfigError> {
        let Self::Env(var) = self else {
            return Ok(());
        };
        let value = self.read()?;
        std::env::remove_var(var);
        *TAKEN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((var.clone(), value));
        Ok(())
    }
}

/// A validated node configuration.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub name: NodeName,
    pub trust_domain: String,
    pub data_dir: PathBuf,
    pub listen_peer: SocketAddr,
    pub listen_client: SocketAddr,
    /// Ops HTTP plane (`/healthz`, `/readyz`, `/metrics`), if configured.
    pub listen_ops: Option<SocketAddr>,
    pub tls: TlsFiles,
    pub passphrase: PassphraseSource,
    pub timeouts: Timeouts,
    pub connect_timeout: Duration,
    /// Every node of the cluster, this one included.
    pub peers: Vec<Peer>,
    /// Authorization policy file (TOML, see `node::policy`); none denies
    /// every client and admin request.
    pub policy: Option<PathBuf>,
    /// `[limits]`: connections per authenticated identity.
    pub connection_caps: crate::transport::ConnectionCaps,
    /// `[limits]`: refused proposals per peer.
    pub refusal_budget: crate::node::refusals::RefusalBudget,
}

/// The `[limits]` section, each value checked against a sane range.
fn limits(
    raw: &RawLimits,
) -> Result<
    (
        crate::transport::ConnectionCaps,
        crate::node::refusals::RefusalBudget,
    ),
    ConfigError,
> {
    let (caps, budget) = (
        crate::transport::ConnectionCaps::default(),
        crate::node::refusals::RefusalBudget::default(),
    );
    let within = |name: &str, v: Option<u64>, default: u64, max: u64| match v {
        None => Ok(default),
        Some(0) => Err(field(format!("limits.{name}"), "must be above zero")),
        Some(v) if v > max => Err(field(
            format!("limits.{name}"),
            format!("must be at most {max}"),
        )),
        Some(v) => Ok(v),
    };
    let size = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
    let count = |v: usize| u64::try_from(v).unwrap_or(u64::MAX);
    let per_node = within(
        "connections_per_node",
        raw.connections_per_node,
        count(caps.per_node),
        4096,
    )?;
    let per_client = within(
        "connections_per_client",
        raw.connections_per_client,
        count(caps.per_client),
        65_536,
    )?;
    let window = within(
        "refusal_window_secs",
        raw.refusal_window_secs,
        budget.window.as_secs(),
        3600,
    )?;
    let audited = within(
        "refusals_audited",
        raw.refusals_audited,
        budget.audited,
        100_000,
    )?;
    let limit = within(
        "refusals_per_window",
        raw.refusals_per_window,
        budget.limit,
        1_000_000,
    )?;
    Ok((
        crate::transport::ConnectionCaps {
            per_node: size(per_node),
            per_client: size(per_client),
        },
        crate::node::refusals::RefusalBudget {
            window: Duration::from_secs(window),
            audited,
            limit,
        },
    ))
}

fn addr(name: &str, raw: &str) -> Result<SocketAddr, ConfigError> {
    raw.parse()
        .map_err(|_| field(name, format!("{raw:?} is not an IP:port socket address")))
}

fn host_port(name: &str, raw: &str) -> Result<HostPort, ConfigError> {
    HostPort::parse(raw).map_err(|e| field(name, e.to_string()))
}

fn rel(base: &Path, p: PathBuf) -> PathBuf {
    if p.is_absolute() {
        p
    } else {
        base.join(p)
    }
}

impl NodeConfig {
    /// Loads and validates a TOML file. Relative paths are resolved against
    /// the file's directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new(".")).to_owned();
        Self::parse(&text, &base).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            other => other,
        })
    }

    /// Parses TOML text; relative paths are resolved against `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Self, ConfigError> {
        let raw: Raw = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<text>"),
            message: e.to_string(),
        })?;
        let name = NodeName::parse(&raw.node.name).map_err(|e| field("node.name", e))?;
        if raw.node.trust_domain.is_empty() || raw.node.trust_domain.contains('/') {
            return Err(field(
                "node.trust_domain",
                "must be a non-empty name without '/'",
            ));
        }
        let mut peers: Vec<Peer> = Vec::new();
        for (i, p) in raw.peers.into_iter().enumerate() {
            let n = NodeName::parse(&p.name).map_err(|e| field(format!("peers[{i}].name"), e))?;
            if peers.iter().any(|q| q.name == n) {
                return Err(field(
                    format!("peers[{i}].name"),
                    format!("node {n} is listed twice"),
                ));
            }
            peers.push(Peer {
                name: n,
                peer_addr: host_port(&format!("peers[{i}].peer_addr"), &p.peer_addr)?,
                client_addr: host_port(&format!("peers[{i}].client_addr"), &p.client_addr)?,
            });
        }
        if !peers.iter().any(|p| p.name == name) {
            return Err(field(
                "peers",
                format!("this node ({name}) must be listed among the peers"),
            ));
        }
        let passphrase = match (raw.store.passphrase_env, raw.store.passphrase_file) {
            (Some(_), Some(_)) => {
                return Err(field(
                    "store",
                    "set passphrase_env or passphrase_file, not both",
                ))
            }
            (_, Some(f)) => PassphraseSource::File(rel(base, f)),
            (Some(v), None) => PassphraseSource::Env(v),
            (None, None) => PassphraseSource::Env(PASSPHRASE_ENV.to_owned()),
        };
        let ms = |name: &str, v: Option<u64>, default: u64| -> Result<Duration, ConfigError> {
            match v.unwrap_or(default) {
                0 => Err(field(name, "must be above zero")),
                v if v > 600_000 => Err(field(name, "must be at most 600000 (10 minutes)")),
                v => Ok(Duration::from_millis(v)),
            }
        };
        let limits = limits(&raw.limits)?;
        Ok(Self {
            name,
            trust_domain: raw.node.trust_domain,
            data_dir: rel(base, raw.node.data_dir),
            listen_peer: addr("listen.peer", &raw.listen.peer)?,
            listen_client: addr("listen.client", &raw.listen.client)?,
            listen_ops: raw
                .listen
                .ops
                .as_deref()
                .map(|o| addr("listen.ops", o))
                .transpose()?,
            tls: TlsFiles {
                ca: rel(base, raw.tls.ca),
                cert: rel(base, raw.tls.cert),
                key: rel(base, raw.tls.key),
                crl: raw.tls.crl.map(|c| rel(base, c)),
                crl_grace: raw.tls.crl_grace_secs.map(std::time::Duration::from_secs),
            },
            passphrase,
            timeouts: Timeouts {
                round: ms("timeouts.round_ms", raw.timeouts.round_ms, 10_000)?,
                ping: ms("timeouts.ping_ms", raw.timeouts.ping_ms, 2_000)?,
            },
            connect_timeout: ms("timeouts.connect_ms", raw.timeouts.connect_ms, 2_000)?,
            peers,
            policy: raw.node.policy.map(|p| rel(base, p)),
            connection_caps: limits.0,
            refusal_budget: limits.1,
        })
    }

    /// Renders a config file for this node (used by `demo` and tests).
    pub fn to_toml(&self) -> String {
        let mut s = format!(
            "[node]\nname = {:?}\ntrust_domain = {:?}\ndata_dir = {:?}\n{}\n[listen]\npeer = \"{}\"\nclient = \"{}\"\n{}\n[tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\n",
            self.name.as_str(),
            self.trust_domain,
            self.data_dir,
            self.policy
                .as_ref()
                .map(|p| format!("policy = {p:?}\n"))
                .unwrap_or_default(),
            self.listen_peer,
            self.listen_client,
            self.listen_ops.map(|o| format!("ops = \"{o}\"\n")).unwrap_or_default(),
            self.tls.ca,
            self.tls.cert,
            self.tls.key
        );
        if let Some(crl) = &self.tls.crl {
            s += &format!("crl = {crl:?}\n");
        }
        if let Some(g) = self.tls.crl_grace {
            s += &format!("crl_grace_secs = {}\n", g.as_secs());
        }
        s += "\n[store]\n";
        match &self.passphrase {
            PassphraseSource::Env(v) => s += &format!("passphrase_env = {v:?}\n"),
            PassphraseSource::File(f) => s += &format!("passphrase_file = {f:?}\n"),
        }
        s += &format!(
            "\n[timeouts]\nround_ms = {}\nping_ms = {}\nconnect_ms = {}\n",
            self.timeouts.round.as_millis(),
            self.timeouts.ping.as_millis(),
            self.connect_timeout.as_millis()
        );
        s += &format!(
            "\n[limits]\nconnections_per_node = {}\nconnections_per_client = {}\nrefusal_window_secs \
             = {}\nrefusals_audited = {}\nrefusals_per_window = {}\n",
            self.connection_caps.per_node,
            self.connection_caps.per_client,
            self.refusal_budget.window.as_secs(),
            self.refusal_budget.audited,
            self.refusal_budget.limit
        );
        for p in &self.peers {
            s += &format!(
                "\n[[peers]]\nname = {:?}\npeer_addr = \"{}\"\nclient_addr = \"{}\"\n",
                p.name.as_str(),
                p.peer_addr,
                p.client_addr
            );
        }
        s
    }
}

#[cfg(test)]
mod tests;
