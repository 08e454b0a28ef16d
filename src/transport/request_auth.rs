//! Request signatures with a certificate key: the signer a client (or an
//! approving admin) uses (`RequestSigner`) and the check every participant
//! runs (`CertRequestVerifier`: chain to the pinned CA, validity, CRL when
//! configured, `client/<name>` or `admin/<name>` identity, signature over
//! the canonical bytes). A chain checked lately by the same trust material
//! is not checked again (`chain_memo.rs`).

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::SignatureScheme;

use super::chain_memo::{self, ChainMemo};
use super::identity::identity_of;
use super::tls::{self, TlsError, TlsFiles};
use crate::domain::NodeName;
use crate::node::admin_request::AdminRequest;
use crate::node::request::{ClientAuth, RequestVerifier, SignRequest};
use crate::pki::Role;

/// Signs requests with the private key of a client certificate.
pub struct RequestSigner {
    key: Arc<dyn rustls::sign::SigningKey>,
    chain: Vec<Vec<u8>>,
}

impl std::fmt::Debug for RequestSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestSigner")
            .field("chain_len", &self.chain.len())
            .finish_non_exhaustive()
    }
}

/// Schemes a client may sign with, in order of preference.
const SCHEMES: [SignatureScheme; 4] = [
    SignatureScheme::ECDSA_NISTP256_SHA256,
    SignatureScheme::ECDSA_NISTP384_SHA384,
    SignatureScheme::ED25519,
    SignatureScheme::RSA_PSS_SHA256,
];

impl RequestSigner {
    /// Loads the certificate chain and private key of `files`.
    pub fn from_files(files: &TlsFiles) -> Result<Self, TlsError> {
        let key = tls::key(&files.key)?;
        let key = rustls::crypto::ring::sign::any_supported_type(&key)?;
        let chain = tls::certs(&files.cert)?
            .into_iter()
            .map(|c| c.to_vec())
            .collect();
        Ok(Self { key, chain })
    }

    /// Signs `req`'s canonical bytes.
    pub fn sign(&self, req: &SignRequest) -> Result<ClientAuth, TlsError> {
        self.sign_bytes(&req.canonical_bytes())
    }

    /// Approves an admin request: signs its canonical bytes with this
    /// admin's certificate key.
    pub fn approve(&self, req: &AdminRequest) -> Result<ClientAuth, TlsError> {
        self.sign_bytes(&req.canonical_bytes())
    }

    pub(crate) fn sign_bytes(&self, message: &[u8]) -> Result<ClientAuth, TlsError> {
        let signer = self.key.choose_scheme(&SCHEMES).ok_or_else(|| {
            TlsError::Verifier(
                "the client key supports none of ECDSA P-256/P-384, Ed25519, RSA-PSS".into(),
            )
        })?;
        let signature = signer.sign(message)?;
        Ok(ClientAuth {
            chain: self.chain.clone(),
            scheme: u16::from(signer.scheme()),
            signature,
        })
    }
}

/// The participant-side check of a client's request signature.
pub struct CertRequestVerifier {
    chain: Chain,
    trust_domain: String,
    /// Chains checked lately (`chain_memo.rs`).
    checked: ChainMemo,
}

impl std::fmt::Debug for CertRequestVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertRequestVerifier")
            .field("trust_domain", &self.trust_domain)
            .finish_non_exhaustive()
    }
}

impl CertRequestVerifier {
    /// Trusts `files.ca` (and applies `files.crl`), as the client plane does.
    pub fn new(files: &TlsFiles, trust_domain: &str) -> Result<Self, TlsError> {
        Ok(Self {
            chain: Chain::Fixed(
                tls::client_cert_verifier(files)?,
                tls::cluster_id(&files.ca)?,
            ),
            trust_domain: trust_domain.to_owned(),
            checked: ChainMemo::default(),
        })
    }

    /// Follows a node's reloadable material (a reloaded CA bundle or CRL
    /// applies to the next request checked).
    pub fn following(state: Arc<tls::TlsState>, trust_domain: &str) -> Self {
        Self {
            chain: Chain::Node(state),
            trust_domain: trust_domain.to_owned(),
            checked: ChainMemo::default(),
        }
    }
}

/// The chain check a verifier uses: fixed, or a node's current one.
enum Chain {
    /// A chain check and the cluster id of its CA bundle.
    Fixed(Arc<dyn ClientCertVerifier>, String),
    Node(Arc<tls::TlsState>),
}

impl Chain {
    fn get(&self) -> Arc<dyn ClientCertVerifier> {
        match self {
            Self::Fixed(v, _) => v.clone(),
            Self::Node(s) => s.verifier(),
        }
    }

    fn cluster_id(&self) -> String {
        match self {
            Self::Fixed(_, id) => id.clone(),
            Self::Node(s) => s.cluster_id(),
        }
    }
}

fn algorithm(
    scheme: u16,
) -> Option<&'static dyn rustls::pki_types::SignatureVerificationAlgorithm> {
    match SignatureScheme::from(scheme) {
        SignatureScheme::ECDSA_NISTP256_SHA256 => Some(webpki::ring::ECDSA_P256_SHA256),
        SignatureScheme::ECDSA_NISTP384_SHA384 => Some(webpki::ring::ECDSA_P384_SHA384),
        SignatureScheme::ED25519 => Some(webpki::ring::ED25519),
        SignatureScheme::RSA_PSS_SHA256 => Some(webpki::ring::RSA_PSS_2048_8192_SHA256_LEGACY_KEY),
        _ => None,
    }
}

impl RequestVerifier for CertRequestVerifier {
    fn cluster(&self) -> String {
        crate::pki::cluster_name(&self.trust_domain, &self.chain.cluster_id())
    }

    fn verify(&self, auth: &ClientAuth, message: &[u8]) -> Result<NodeName, String> {
        self.verify_as(auth, message, Role::Client, UnixTime::now())
    }

    fn verify_at(
        &self,
        auth: &ClientAuth,
        message: &[u8],
        at_unix: u64,
    ) -> Result<NodeName, String> {
        let at = UnixTime::since_unix_epoch(std::time::Duration::from_secs(at_unix));
        self.verify_as(auth, message, Role::Client, at)
    }

    fn verify_admin(&self, auth: &ClientAuth, message: &[u8]) -> Result<NodeName, String> {
        self.verify_as(auth, message, Role::Admin, UnixTime::now())
    }

    fn verify_node(&self, auth: &ClientAuth, message: &[u8]) -> Result<NodeName, String> {
        self.verify_as(auth, message, Role::Node, UnixTime::now())
    }
}

/// Signs this node's staging receipts with the key of its node certificate,
/// read from its files at each signature (receipts are rare, and a reloaded
/// certificate applies at once).
#[derive(Debug)]
pub struct NodeReceiptSigner {
    files: TlsFiles,
}

impl NodeReceiptSigner {
    pub fn new(files: &TlsFiles) -> Self {
        Self {
            files: files.clone(),
        }
    }
}

impl crate::node::activation::ReceiptSigner for NodeReceiptSigner {
    fn sign(&self, message: &[u8]) -> Result<ClientAuth, String> {
        RequestSigner::from_files(&self.files)
            .and_then(|s| s.sign_bytes(message))
            .map_err(|e| e.to_string())
    }

    /// Reads the node's key file at each import (rare), so a reloaded
    /// certificate applies at once.
    fn open_import_point(
        &self,
        params: &crate::node::ops::import::params::ImportParams,
        sealed: &crate::node::ops::import::params::SealedPoint,
        binding: crate::node::ops::import::params::SealBinding<'_>,
    ) -> Result<zeroize::Zeroizing<[u8; 32]>, String> {
        use crate::node::ops::import::params::{open_point, private_scalar};
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::PrivateKeyDer;
        let key = PrivateKeyDer::from_pem_file(&self.files.key)
            .map_err(|e| format!("the node's key file {}: {e}", self.files.key.display()))?;
        let PrivateKeyDer::Pkcs8(der) = key else {
            return Err(
                "the node's key is not a PKCS#8 P-256 key, which an import's sealed points need"
                    .into(),
            );
        };
        let scalar = private_scalar(der.secret_pkcs8_der())?;
        open_point(params, sealed, scalar.as_ref(), binding)
    }
}

impl CertRequestVerifier {
    /// The node a certificate chain (DER, leaf first) is of: it chains to
    /// the pinned CA (validity now, CRL) and names a `node/<name>` identity.
    /// For sealing to a node's key (`thresig keys import`).
    pub fn node_certificate(&self, chain: &[Vec<u8>]) -> Result<NodeName, String> {
        let (leaf, rest) = chain.split_first().ok_or("no certificate")?;
        let leaf = CertificateDer::from(leaf.as_slice());
        let intermediates: Vec<CertificateDer<'_>> = rest
            .iter()
            .map(|c| CertificateDer::from(c.as_slice()))
            .collect();
        self.chain
            .get()
            .verify_client_cert(&leaf, &intermediates, UnixTime::now())
            .map_err(|e| format!("node certificate refused: {e}"))?;
        let id = identity_of(&leaf, &self.trust_domain).map_err(|e| e.to_string())?;
        if id.role != Role::Node {
            return Err(format!(
                "{id} is not {} identity",
                Role::Node.with_article()
            ));
        }
        Ok(id.name)
    }

    /// Chain to the pinned CA (validity, CRL), a `role` identity, and its
    /// signature over `message`.
    fn verify_as(
        &self,
        auth: &ClientAuth,
        message: &[u8],
        role: Role,
        at: UnixTime,
    ) -> Result<NodeName, String> {
        let who = role.as_str();
        let (leaf, rest) = auth
            .chain
            .split_first()
            .ok_or_else(|| format!("the request carries no {who} certificate"))?;
        let leaf = CertificateDer::from(leaf.as_slice());
        let intermediates: Vec<CertificateDer<'_>> = rest
            .iter()
            .map(|c| CertificateDer::from(c.as_slice()))
            .collect();
        let by = self.chain.get();
        let fp = chain_memo::fingerprint(&leaf, &intermediates);
        let id = match self.checked.get(&fp, &by, at) {
            Some(id) => id,
            None => {
                by.verify_client_cert(&leaf, &intermediates, at)
                    .map_err(|e| format!("{who} certificate refused: {e}"))?;
                let id = identity_of(&leaf, &self.trust_domain).map_err(|e| e.to_string())?;
                self.checked.put(fp, by, &leaf, id.clone());
                id
            }
        };
        if id.role != role {
            return Err(format!("{id} is not {} identity", role.with_article()));
        }
        let alg = algorithm(auth.scheme)
            .ok_or_else(|| format!("signature scheme {:#06x} is not accepted", auth.scheme))?;
        webpki::EndEntityCert::try_from(&leaf)
            .map_err(|e| format!("{who} certificate: {e}"))?
            .verify_signature(alg, message, &auth.signature)
            .map_err(|_| format!("{id}'s signature does not cover this request"))?;
        Ok(id.name)
    }
}
