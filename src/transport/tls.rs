//! rustls configuration for both planes: TLS 1.3 only, one ring provider,
//! the pinned cluster CA (never system roots), optional CRLs, client
//! certificates required. Identity is checked after the handshake from the
//! peer certificate (`identity.rs`), not here.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Pem { path: PathBuf, reason: String },
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    #[error("certificate verifier: {0}")]
    Verifier(String),
    #[error(
        "CRL {path} is out of date: its nextUpdate (Unix {next_update}) passed {late_secs} s \
         ago, more than the {grace_secs} s grace (tls.crl_grace_secs); fetch a fresh CRL from \
         the CA"
    )]
    CrlExpired {
        path: PathBuf,
        next_update: i64,
        late_secs: i64,
        grace_secs: u64,
    },
}

/// PEM material for one identity plus the trust anchor.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub crl: Option<PathBuf>,
    /// How long past its nextUpdate the CRL is still accepted (none: the
    /// default, `DEFAULT_CRL_GRACE`). A CRL older than that is refused at
    /// load and reload, naming it: revocations it misses would go unseen.
    pub crl_grace: Option<std::time::Duration>,
}

/// How long past its nextUpdate a CRL is accepted unless configured.
pub const DEFAULT_CRL_GRACE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

pub(crate) fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let raw = read(path)?;
    let out: Vec<_> = CertificateDer::pem_slice_iter(&raw)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if out.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_owned(),
            reason: "no CERTIFICATE block found".into(),
        });
    }
    Ok(out)
}

pub(crate) fn key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let raw = zeroize::Zeroizing::new(read(path)?);
    PrivateKeyDer::from_pem_slice(&raw).map_err(|e| TlsError::Pem {
        path: path.to_owned(),
        reason: match e {
            rustls::pki_types::pem::Error::NoItemsFound => "no PRIVATE KEY block found".into(),
            e => e.to_string(),
        },
    })
}

/// The cluster id the CA bundle at `path` carries (`pki::cluster_id_of`).
pub fn cluster_id(path: &Path) -> Result<String, TlsError> {
    crate::pki::cluster_id_of(&certs(path)?).map_err(|reason| TlsError::Pem {
        path: path.to_owned(),
        reason,
    })
}

fn roots(path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut store = RootCertStore::empty();
    for c in certs(path)? {
        store.add(c).map_err(TlsError::Config)?;
    }
    Ok(Arc::new(store))
}

fn crls(files: &TlsFiles) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let Some(path) = files.crl.as_deref() else {
        return Ok(Vec::new());
    };
    let raw = read(path)?;
    let out: Vec<_> = CertificateRevocationListDer::pem_slice_iter(&raw)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    let grace = files.crl_grace.unwrap_or(DEFAULT_CRL_GRACE);
    for crl in &out {
        check_crl_fresh(path, crl, grace, now_unix())?;
    }
    Ok(out)
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Refuses a CRL whose nextUpdate lies more than `grace` before `now`.
fn check_crl_fresh(
    path: &Path,
    crl: &CertificateRevocationListDer<'_>,
    grace: std::time::Duration,
    now: i64,
) -> Result<(), TlsError> {
    use x509_parser::prelude::FromDer;
    let (_, parsed) = x509_parser::revocation_list::CertificateRevocationList::from_der(crl)
        .map_err(|e| TlsError::Pem {
            path: path.to_owned(),
            reason: format!("CRL does not parse: {e}"),
        })?;
    let Some(next) = parsed.next_update() else {
        return Ok(());
    };
    let next = next.timestamp();
    let grace_s = i64::try_from(grace.as_secs()).unwrap_or(i64::MAX);
    if now > next.saturating_add(grace_s) {
        return Err(TlsError::CrlExpired {
            path: path.to_owned(),
            next_update: next,
            late_secs: now.saturating_sub(next),
            grace_secs: grace.as_secs(),
        });
    }
    Ok(())
}

/// Checks client certificates: chained to the CA, valid now, not revoked
/// (when a CRL is configured). The client plane's handshake and the check of
/// a client's request signature use the same one.
pub(crate) fn client_cert_verifier(
    files: &TlsFiles,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    WebPkiClientVerifier::builder_with_provider(roots(&files.ca)?, provider())
        .with_crls(crls(files)?)
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))
}

/// Server side of either plane: client certificates required, chained to the CA.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let verifier = client_cert_verifier(files)?;
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs(&files.cert)?, key(&files.key)?)?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(cfg))
}

/// An HTTPS server that asks for no client certificate (`thresig eth-rpc`,
/// whose callers authenticate with a bearer token): TLS 1.2 or 1.3,
/// HTTP/1.1.
pub fn https_server_config(cert: &Path, key_file: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs(cert)?, key(key_file)?)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Client side (node-to-node, or a client/admin dialing a node). The server's
/// certificate is checked against the CA and, when configured, the CRL.
pub fn client_config(files: &TlsFiles) -> Result<Arc<ClientConfig>, TlsError> {
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(roots(&files.ca)?, provider())
            .with_crls(crls(files)?)
            .build()
            .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let mut cfg = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_webpki_verifier(verifier)
        .with_client_auth_cert(certs(&files.cert)?, key(&files.key)?)?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(cfg))
}

/// A node's TLS material, reloadable while it runs (SIGHUP, `thresig node
/// reload`): new handshakes on either plane, new outgoing peer connections
/// and the check of clients' request signatures use the newest; connections
/// already open finish on what they started with. A reload that fails (a file
/// missing or unparsable, a key that does not match its certificate, a
/// certificate the new CA bundle does not vouch for) keeps the old material.
pub struct TlsState {
    files: TlsFiles,
    current: std::sync::RwLock<Material>,
}

#[derive(Clone)]
struct Material {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    verifier: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    expiry: Option<super::expiry::CertExpiry>,
    /// The cluster id of the CA bundle (`pki::cluster_id_of`).
    cluster_id: String,
}

impl std::fmt::Debug for TlsState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsState")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl TlsState {
    /// Reads `files` (all of them must be good).
    pub fn load(files: &TlsFiles) -> Result<Arc<Self>, TlsError> {
        let (material, _) = Material::read(files)?;
        Ok(Arc::new(Self {
            files: files.clone(),
            current: std::sync::RwLock::new(material),
        }))
    }

    /// Rereads the certificate, key, CA bundle and CRL; on success new
    /// handshakes use them. Returns what was loaded.
    pub fn reload(&self) -> Result<String, TlsError> {
        let (material, summary) = Material::read(&self.files)?;
        let mut g = self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *g = material;
        Ok(summary)
    }

    fn get(&self) -> Material {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The server side of either plane, for the next handshake.
    pub fn server(&self) -> Arc<ServerConfig> {
        self.get().server
    }

    /// The client side, for the next outgoing connection.
    pub fn client(&self) -> Arc<ClientConfig> {
        self.get().client
    }

    /// The chain check of clients' certificates (request signatures).
    pub fn verifier(&self) -> Arc<dyn rustls::server::danger::ClientCertVerifier> {
        self.get().verifier
    }

    /// The cluster id the CA bundle in use carries.
    pub fn cluster_id(&self) -> String {
        self.get().cluster_id
    }

    /// When the certificate in use, and its CA, expire.
    pub fn expiry(&self) -> Option<super::expiry::CertExpiry> {
        self.get().expiry
    }
}

impl Material {
    fn read(files: &TlsFiles) -> Result<(Self, String), TlsError> {
        let verifier = client_cert_verifier(files)?;
        let server = server_config(files)?;
        let client = client_config(files)?;
        // This node's own certificate must chain to the (new) CA bundle and
        // be valid now, or its peers would refuse it.
        let chain = certs(&files.cert)?;
        let (leaf, intermediates) = chain.split_first().ok_or_else(|| TlsError::Pem {
            path: files.cert.clone(),
            reason: "no certificate".into(),
        })?;
        verifier
            .verify_client_cert(leaf, intermediates, rustls::pki_types::UnixTime::now())
            .map_err(|e| TlsError::Pem {
                path: files.cert.clone(),
                reason: format!("not valid under the CA bundle {}: {e}", files.ca.display()),
            })?;
        let ca_bundle = certs(&files.ca)?;
        let cluster_id = crate::pki::cluster_id_of(&ca_bundle).map_err(|reason| TlsError::Pem {
            path: files.ca.clone(),
            reason,
        })?;
        let expiry = super::expiry::CertExpiry::of(leaf, &ca_bundle);
        let cas = ca_bundle.len();
        let revoked = crls(files)?.len();
        let summary = format!(
            "certificate {}, key {}, CA bundle {} ({cas} certificate{}), {}",
            files.cert.display(),
            files.key.display(),
            files.ca.display(),
            if cas == 1 { "" } else { "s" },
            match &files.crl {
                Some(p) => format!(
                    "CRL {} ({revoked} list{})",
                    p.display(),
                    if revoked == 1 { "" } else { "s" }
                ),
                None => "no CRL".to_owned(),
            }
        );
        Ok((
            Self {
                server,
                client,
                verifier,
                expiry,
                cluster_id,
            },
            summary,
        ))
    }
}

/// Where an outgoing connection takes its TLS configuration from: a fixed
/// one (a client), or a node's reloadable material, read at each connection.
#[derive(Clone, Debug)]
pub enum ClientTls {
    Fixed(Arc<ClientConfig>),
    Node(Arc<TlsState>),
}

impl ClientTls {
    pub fn get(&self) -> Arc<ClientConfig> {
        match self {
            Self::Fixed(c) => c.clone(),
            Self::Node(s) => s.client(),
        }
    }
}

impl From<Arc<ClientConfig>> for ClientTls {
    fn from(c: Arc<ClientConfig>) -> Self {
        Self::Fixed(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crl_past_its_next_update_and_grace_is_refused_naming_it() {
        let (ca, _) = crate::pki::Ca::generate("thresig.local").unwrap();
        let pem = ca.crl(&[], 7).unwrap();
        let crl = CertificateRevocationListDer::from_pem_slice(pem.as_bytes()).unwrap();
        let path = Path::new("/etc/thresig/crl.pem");
        let day = 24 * 3600;
        let now = now_unix();
        let grace = std::time::Duration::from_secs(day as u64);
        // Fresh, and a day past nextUpdate within a two-day grace: accepted.
        check_crl_fresh(path, &crl, grace, now).unwrap();
        check_crl_fresh(path, &crl, grace * 2, now + 8 * day).unwrap();
        // Two days past nextUpdate with a one-day grace: refused, named.
        let e = check_crl_fresh(path, &crl, grace, now + 9 * day).unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, TlsError::CrlExpired { .. }), "{text}");
        assert!(
            text.contains("/etc/thresig/crl.pem") && text.contains("out of date"),
            "{text}"
        );
    }
}
