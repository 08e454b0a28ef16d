//! Connection flags shared by the client and admin commands.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use super::UsageError;
use crate::client::{Client, ClientConfig};
use crate::pki::{Layout, Role};
use crate::transport::tls::TlsFiles;

#[derive(Debug, clap::Args)]
pub struct Conn {
    /// Client-plane address of the node to talk to.
    #[arg(long, env = "THRESIG_ENDPOINT", default_value = "127.0.0.1:7401")]
    pub endpoint: SocketAddr,
    /// Name of that node (its certificate's DNS name and SPIFFE identity).
    #[arg(long, env = "THRESIG_SERVER", default_value = "a")]
    pub server: String,
    /// Trust domain of the cluster's SPIFFE identities.
    #[arg(long, env = "THRESIG_TRUST_DOMAIN", default_value = "thresig.local")]
    pub trust_domain: String,
    /// Directory written by `thresig certs init`; with --identity it supplies the CA, certificate and key.
    #[arg(long, env = "THRESIG_CERTS")]
    pub certs: Option<PathBuf>,
    /// Client or admin name inside --certs.
    #[arg(long, env = "THRESIG_IDENTITY")]
    pub identity: Option<String>,
    /// Cluster CA certificate (PEM); overrides --certs.
    #[arg(long, env = "THRESIG_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// This client's certificate (PEM); overrides --certs/--identity.
    #[arg(long, env = "THRESIG_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// This client's private key (PEM); overrides --certs/--identity.
    #[arg(long, env = "THRESIG_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Other nodes to fail over to, as name@host:port, comma separated
    /// (e.g. b@10.0.0.2:7401,c@10.0.0.3:7401). A signature request that meets
    /// an unavailable node, a timeout or a broken connection is sent,
    /// unchanged, to the next one (sign and pubkey only).
    #[arg(long, env = "THRESIG_FAILOVER", value_delimiter = ',')]
    pub failover: Vec<String>,
}

impl Conn {
    /// Connects as a `role` identity.
    pub fn client(&self, role: Role) -> anyhow::Result<Client> {
        let layout = self.certs.as_ref().map(|d| Layout { dir: d.clone() });
        let from_layout = |f: fn(&Layout, Role, &str) -> PathBuf| {
            layout
                .as_ref()
                .zip(self.identity.as_deref())
                .map(|(l, id)| f(l, role, id))
        };
        let ca = self
            .tls_ca
            .clone()
            .or_else(|| layout.as_ref().map(Layout::ca_cert));
        let cert = self.tls_cert.clone().or_else(|| from_layout(Layout::cert));
        let key = self.tls_key.clone().or_else(|| from_layout(Layout::key));
        let (Some(ca), Some(cert), Some(key)) = (ca, cert, key) else {
            return Err(UsageError(format!(
                "no {} credentials: pass --certs <dir> --identity <name>, or --tls-ca, --tls-cert \
                 and --tls-key",
                role.as_str()
            ))
            .into());
        };
        let cfg = ClientConfig {
            endpoint: self.endpoint,
            server: self.server.clone(),
            trust_domain: self.trust_domain.clone(),
            tls: TlsFiles {
                ca,
                cert,
                key,
                crl: None,
                crl_grace: None,
            },
            connect_timeout: Duration::from_secs(5),
        };
        let mut client = Client::connect(&cfg)
            .with_context(|| format!("connecting to node {} at {}", self.server, self.endpoint))?;
        for f in &self.failover {
            let (name, addr) = f
                .split_once('@')
                .and_then(|(n, a)| Some((n, a.parse::<SocketAddr>().ok()?)))
                .ok_or_else(|| {
                    UsageError(format!(
                        "--failover {f:?}: expected name@host:port, e.g. b@10.0.0.2:7401"
                    ))
                })?;
            client = client
                .with_failover(&cfg, name, addr)
                .with_context(|| format!("preparing failover node {name} at {addr}"))?;
        }
        Ok(client)
    }
}
