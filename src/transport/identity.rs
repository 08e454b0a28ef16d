//! Who is on the other end of a connection: read from the verified peer
//! certificate's SPIFFE URI SAN, after the handshake. Message fields never
//! override this.

use rustls::pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

use crate::domain::NodeName;
use crate::pki::Role;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    pub role: Role,
    pub name: NodeName,
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.role.as_str(), self.name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("peer presented no certificate")]
    NoCertificate,
    #[error("peer certificate does not parse")]
    Unparsable,
    #[error("peer certificate has no spiffe://{0}/<role>/<name> URI SAN")]
    NoIdentity(String),
    #[error("peer certificate has more than one spiffe identity")]
    Ambiguous,
    #[error("{got} may not use the {plane} plane")]
    WrongPlane { got: String, plane: &'static str },
}

/// Extracts the single identity of `trust_domain` from a certificate.
pub fn identity_of(
    cert: &CertificateDer<'_>,
    trust_domain: &str,
) -> Result<Identity, IdentityError> {
    let (_, x) = x509_parser::certificate::X509Certificate::from_der(cert)
        .map_err(|_| IdentityError::Unparsable)?;
    let san = x
        .subject_alternative_name()
        .map_err(|_| IdentityError::Unparsable)?;
    let prefix = format!("spiffe://{trust_domain}/");
    let mut found = None;
    for gn in san.iter().flat_map(|s| s.value.general_names.iter()) {
        let GeneralName::URI(uri) = gn else { continue };
        let Some(rest) = uri.strip_prefix(&prefix) else {
            continue;
        };
        let mut parts = rest.split('/');
        let (Some(role), Some(name), None) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let (Some(role), Ok(name)) = (Role::parse(role), NodeName::parse(name)) else {
            continue;
        };
        if found.replace(Identity { role, name }).is_some() {
            return Err(IdentityError::Ambiguous);
        }
    }
    found.ok_or_else(|| IdentityError::NoIdentity(trust_domain.to_owned()))
}
