//! When a node's certificate and the CA that issued it stop being valid: for
//! `/metrics`, `/readyz`, the peers' pings and `thresig status`.

use rustls::pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The end of validity (unix seconds) of a node's certificate and of the CA
/// in its bundle that issued it (the earliest-expiring CA when none of them
/// names the certificate's issuer, e.g. an intermediate in between).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertExpiry {
    pub cert_not_after: i64,
    pub ca_not_after: i64,
}

impl CertExpiry {
    /// Reads the leaf certificate and the CA bundle. `None` if either does
    /// not parse (they were checked by rustls already, so this does not
    /// happen with material a node loaded).
    pub fn of(leaf: &CertificateDer<'_>, cas: &[CertificateDer<'_>]) -> Option<Self> {
        let (_, leaf) = X509Certificate::from_der(leaf).ok()?;
        let cas: Vec<X509Certificate<'_>> = cas
            .iter()
            .filter_map(|c| X509Certificate::from_der(c).ok().map(|(_, c)| c))
            .collect();
        let issuer = cas
            .iter()
            .filter(|ca| ca.subject().as_raw() == leaf.issuer().as_raw())
            .map(|ca| ca.validity().not_after.timestamp())
            .max();
        let earliest = cas
            .iter()
            .map(|ca| ca.validity().not_after.timestamp())
            .min();
        Some(Self {
            cert_not_after: leaf.validity().not_after.timestamp(),
            ca_not_after: issuer.or(earliest)?,
        })
    }

    /// Seconds from `now_unix` until the certificate expires (negative once
    /// it has).
    pub fn cert_left(&self, now_unix: i64) -> i64 {
        self.cert_not_after.saturating_sub(now_unix)
    }

    pub fn ca_left(&self, now_unix: i64) -> i64 {
        self.ca_not_after.saturating_sub(now_unix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{Ca, Role};

    fn der(pem: &str) -> CertificateDer<'static> {
        use rustls::pki_types::pem::PemObject;
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }

    #[test]
    fn names_the_leaf_and_its_issuer() {
        let (ca, _) = Ca::generate("thresig.local").unwrap();
        let (other, _) = Ca::generate("thresig.local").unwrap();
        let leaf = ca.issue(Role::Node, "a", 30).unwrap();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let e = CertExpiry::of(
            &der(&leaf.cert_pem),
            &[der(other.cert_pem()), der(ca.cert_pem())],
        )
        .unwrap();
        let days = |s: i64| s / 86_400;
        // 30 days from issue, to the second (the issue and `now` may share it).
        assert!((29..=30).contains(&days(e.cert_left(now))), "{e:?}");
        assert!(e.ca_left(now) > e.cert_left(now), "{e:?}");
        assert!(CertExpiry::of(&CertificateDer::from(vec![1, 2, 3]), &[]).is_none());
    }
}
