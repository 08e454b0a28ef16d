//! rustls configuration for both planes: TLS 1.3 only, one ring provider,
//! the pinned cluster CA (never system roots), optional CRLs, client
//! certificates required. Identity is checked after the handshake from the
//! peer certificate (`identity.rs`), not here.

use std::path::{Path, PathBuf};
use std::sync::Arc;

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
}

/// PEM material for one identity plus the trust anchor.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub crl: Option<PathBuf>,
}

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
    let out: Vec<_> = rustls_pemfile::certs(&mut raw.as_slice())
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
    rustls_pemfile::private_key(&mut raw.as_slice())
        .map_err(|e| TlsError::Pem {
            path: path.to_owned(),
            reason: e.to_string(),
        })?
        .ok_or_else(|| TlsError::Pem {
            path: path.to_owned(),
            reason: "no PRIVATE KEY block found".into(),
        })
}

fn roots(path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut store = RootCertStore::empty();
    for c in certs(path)? {
        store.add(c).map_err(TlsError::Config)?;
    }
    Ok(Arc::new(store))
}

fn crls(path: Option<&Path>) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let Some(path) = path else {
        return Ok(Vec::new());
    };
    let raw = read(path)?;
    let out: Vec<_> = rustls_pemfile::crls(&mut raw.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    Ok(out)
}

/// Checks client certificates: chained to the CA, valid now, not revoked
/// (when a CRL is configured). The client plane's handshake and the check of
/// a client's request signature use the same one.
pub(crate) fn client_cert_verifier(
    files: &TlsFiles,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    WebPkiClientVerifier::builder_with_provider(roots(&files.ca)?, provider())
        .with_crls(crls(files.crl.as_deref())?)
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

/// Client side (node-to-node, or a client/admin dialing a node). The server's
/// certificate is checked against the CA and, when configured, the CRL.
pub fn client_config(files: &TlsFiles) -> Result<Arc<ClientConfig>, TlsError> {
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(roots(&files.ca)?, provider())
            .with_crls(crls(files.crl.as_deref())?)
            .build()
            .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let mut cfg = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_webpki_verifier(verifier)
        .with_client_auth_cert(certs(&files.cert)?, key(&files.key)?)?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(cfg))
}
