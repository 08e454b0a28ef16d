//! Development PKI: a cluster CA and node, client and admin certificates with
//! SPIFFE-style URI SANs (`spiffe://<trust-domain>/<role>/<name>`). Node
//! certificates also carry the node name as a DNS SAN, which is the TLS server
//! name peers and clients dial. Production may bring its own PKI with the same
//! SANs. This module writes files only where told and never logs key bytes.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::domain::NodeName;
use crate::secret::SecretBytes;

/// What an identity may do; the second path segment of its SPIFFE URI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Node,
    Client,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Node => "node",
            Self::Client => "client",
            Self::Admin => "admin",
        }
    }
    /// "a node", "a client", "an admin": for messages.
    pub fn with_article(self) -> &'static str {
        match self {
            Self::Node => "a node",
            Self::Client => "a client",
            Self::Admin => "an admin",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "node" => Some(Self::Node),
            "client" => Some(Self::Client),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
    fn dir(self) -> &'static str {
        match self {
            Self::Node => "nodes",
            Self::Client => "clients",
            Self::Admin => "admins",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "invalid name {0:?}: use 1-63 characters from a-z, 0-9 and '-', starting with a letter"
    )]
    Name(String),
    #[error("{path} already exists; refusing to overwrite (use a fresh --out directory)")]
    Exists { path: PathBuf },
    #[error("{0}")]
    Other(String),
}

/// A certificate and its private key, PEM encoded. The key is redacted in `Debug`.
#[derive(Debug)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: SecretBytes,
}

/// The cluster certificate authority.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    trust_domain: String,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("trust_domain", &self.trust_domain)
            .finish_non_exhaustive()
    }
}

/// The organizational unit of a CA certificate made by `certs init` starts
/// with this, then the cluster's id (16 random bytes in hex). Admin requests
/// name the trust domain and that id (`node/admin_request.rs`), so that
/// approvals for one cluster are refused by another.
pub const CLUSTER_OU_PREFIX: &str = "thresig-cluster ";

/// The cluster id the CA certificates of a bundle carry: empty when none
/// does (a CA made elsewhere); an error when two carry different ids (a CA
/// rollover's new CA must carry the old one's id).
pub fn cluster_id_of(bundle: &[rustls::pki_types::CertificateDer<'_>]) -> Result<String, String> {
    use x509_parser::prelude::FromDer;
    let mut found: Option<String> = None;
    for (i, der) in bundle.iter().enumerate() {
        let (_, x) = x509_parser::certificate::X509Certificate::from_der(der)
            .map_err(|e| format!("CA certificate {}: {e}", i.saturating_add(1)))?;
        for ou in x.subject().iter_organizational_unit() {
            let Some(id) = ou
                .as_str()
                .ok()
                .and_then(|s| s.strip_prefix(CLUSTER_OU_PREFIX))
            else {
                continue;
            };
            match &found {
                Some(other) if other != id => {
                    return Err(format!(
                        "the CA bundle names two clusters ({other} and {id}); a new CA must \
                         carry the cluster id of the one it replaces"
                    ))
                }
                _ => found = Some(id.to_owned()),
            }
        }
    }
    Ok(found.unwrap_or_default())
}

/// The cluster an admin request is for: "<trust domain>/<cluster id>", or
/// the trust domain alone when the CA carries no cluster id.
pub fn cluster_name(trust_domain: &str, cluster_id: &str) -> String {
    if cluster_id.is_empty() {
        trust_domain.to_owned()
    } else {
        format!("{trust_domain}/{cluster_id}")
    }
}

/// The SPIFFE URI of an identity.
pub fn spiffe_uri(trust_domain: &str, role: Role, name: &str) -> String {
    format!("spiffe://{trust_domain}/{}/{name}", role.as_str())
}

impl Ca {
    /// Creates a new CA valid for ten years, for a new cluster.
    pub fn generate(trust_domain: &str) -> Result<(Self, Issued), PkiError> {
        Self::generate_for(trust_domain, None)
    }

    /// Creates a new CA valid for ten years; with `cluster_id`, for that
    /// existing cluster (a CA rollover), else for a new one.
    pub fn generate_for(
        trust_domain: &str,
        cluster_id: Option<&str>,
    ) -> Result<(Self, Issued), PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        // A name of its own (creation date and a random tag): during a CA
        // rollover the old and the new CA sit in one bundle, and certificate
        // paths and CRLs are matched to their CA by name.
        let mut tag = [0u8; 4];
        getrandom::fill(&mut tag).map_err(|e| PkiError::Other(e.to_string()))?;
        let today = time::OffsetDateTime::now_utc().date();
        params.distinguished_name.push(
            DnType::CommonName,
            format!(
                "thresig cluster CA ({trust_domain}) {today} {}",
                hex::encode(tag)
            ),
        );
        let cluster = match cluster_id {
            Some(id) => id.to_owned(),
            None => {
                let mut fresh = [0u8; 16];
                getrandom::fill(&mut fresh).map_err(|e| PkiError::Other(e.to_string()))?;
                hex::encode(fresh)
            }
        };
        params.distinguished_name.push(
            DnType::OrganizationalUnitName,
            format!("{CLUSTER_OU_PREFIX}{cluster}"),
        );
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(3650);
        let cert = params.self_signed(&key)?;
        let cert_pem = cert.pem();
        let key_pem = SecretBytes::new(key.serialize_pem().into_bytes());
        let issued = Issued {
            cert_pem: cert_pem.clone(),
            key_pem,
        };
        Ok((
            Self {
                issuer: Issuer::new(params, key),
                cert_pem,
                trust_domain: trust_domain.to_owned(),
            },
            issued,
        ))
    }

    /// Loads an existing CA from its PEM certificate and key.
    pub fn load(trust_domain: &str, cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let key = KeyPair::from_pem(key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)?;
        Ok(Self {
            issuer,
            cert_pem: cert_pem.to_owned(),
            trust_domain: trust_domain.to_owned(),
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Issues a certificate for `role`/`name`, valid for `days` days.
    pub fn issue(&self, role: Role, name: &str, days: i64) -> Result<Issued, PkiError> {
        NodeName::parse(name).map_err(|_| PkiError::Name(name.to_owned()))?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{}/{name}", role.as_str()));
        let uri = spiffe_uri(&self.trust_domain, role, name);
        params.subject_alt_names.push(SanType::URI(uri.try_into()?));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        if role == Role::Node {
            params
                .subject_alt_names
                .push(SanType::DnsName(name.try_into()?));
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(days);
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: SecretBytes::new(key.serialize_pem().into_bytes()),
        })
    }

    /// A CRL (PEM) revoking the given certificates, valid for `days` days.
    pub fn crl(&self, revoked_cert_pems: &[&str], days: i64) -> Result<String, PkiError> {
        use rcgen::{
            CertificateRevocationListParams, KeyIdMethod, RevocationReason, RevokedCertParams,
            SerialNumber,
        };
        use x509_parser::prelude::FromDer;
        let now = time::OffsetDateTime::now_utc();
        let mut revoked_certs = Vec::new();
        for pem in revoked_cert_pems {
            let der = {
                use rustls::pki_types::pem::PemObject;
                rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
                    .map_err(|_| rcgen::Error::CouldNotParseCertificate)?
            };
            let (_, x) = x509_parser::certificate::X509Certificate::from_der(&der)
                .map_err(|_| rcgen::Error::CouldNotParseCertificate)?;
            revoked_certs.push(RevokedCertParams {
                serial_number: SerialNumber::from_slice(x.raw_serial()),
                revocation_time: now,
                reason_code: Some(RevocationReason::KeyCompromise),
                invalidity_date: None,
            });
        }
        let params = CertificateRevocationListParams {
            this_update: now - time::Duration::minutes(5),
            next_update: now + time::Duration::days(days),
            crl_number: SerialNumber::from(now.unix_timestamp() as u64),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer)?.pem()?)
    }

    /// Issues a certificate and writes it under `out/<role>s/<name>.{pem,key}`.
    pub fn issue_to(
        &self,
        out: &Path,
        role: Role,
        name: &str,
        days: i64,
    ) -> Result<(PathBuf, PathBuf), PkiError> {
        let issued = self.issue(role, name, days)?;
        let dir = out.join(role.dir());
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}.key"));
        write_new(&cert, issued.cert_pem.as_bytes(), 0o644)?;
        write_new(&key, issued.key_pem.expose(), 0o600)?;
        Ok((cert, key))
    }
}

/// The file layout `certs init` writes.
#[derive(Debug, Clone)]
pub struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
    pub fn cert(&self, role: Role, name: &str) -> PathBuf {
        self.dir.join(role.dir()).join(format!("{name}.pem"))
    }
    pub fn key(&self, role: Role, name: &str) -> PathBuf {
        self.dir.join(role.dir()).join(format!("{name}.key"))
    }
}

/// Creates a CA and one certificate per identity in `out`. Refuses to
/// overwrite existing files. `progress` is called once per file pair written.
pub fn init(
    out: &Path,
    trust_domain: &str,
    nodes: &[String],
    clients: &[String],
    admins: &[String],
    progress: impl FnMut(Role, &str),
) -> Result<Layout, PkiError> {
    init_for(out, trust_domain, None, nodes, clients, admins, progress)
}

/// `init`; with `cluster_id`, the CA is for that existing cluster (a CA
/// rollover: the new CA carries the cluster id of the one it replaces, so
/// admin requests stay valid while both sit in one bundle).
pub fn init_for(
    out: &Path,
    trust_domain: &str,
    cluster_id: Option<&str>,
    nodes: &[String],
    clients: &[String],
    admins: &[String],
    mut progress: impl FnMut(Role, &str),
) -> Result<Layout, PkiError> {
    let layout = Layout {
        dir: out.to_owned(),
    };
    for (role, names) in [
        (Role::Node, nodes),
        (Role::Client, clients),
        (Role::Admin, admins),
    ] {
        for n in names {
            NodeName::parse(n).map_err(|_| PkiError::Name(n.clone()))?;
            for p in [layout.cert(role, n), layout.key(role, n)] {
                if p.exists() {
                    return Err(PkiError::Exists { path: p });
                }
            }
        }
    }
    let (ca, issued) = Ca::generate_for(trust_domain, cluster_id)?;
    write_new(&layout.ca_cert(), issued.cert_pem.as_bytes(), 0o644)?;
    write_new(&layout.ca_key(), issued.key_pem.expose(), 0o600)?;
    for (role, names) in [
        (Role::Node, nodes),
        (Role::Client, clients),
        (Role::Admin, admins),
    ] {
        for n in names {
            ca.issue_to(out, role, n, 365)?;
            progress(role, n);
        }
    }
    Ok(layout)
}

/// Writes a new file with `mode`; refuses to replace an existing one.
pub fn write_new(path: &Path, body: &[u8], mode: u32) -> Result<(), PkiError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| PkiError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                PkiError::Exists {
                    path: path.to_owned(),
                }
            } else {
                io(e)
            }
        })?;
    f.write_all(body).map_err(io)?;
    f.sync_all().map_err(io)
}
