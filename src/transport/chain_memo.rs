//! Certificate chains a `CertRequestVerifier` has already checked. Every
//! node checks the client's certificate chain behind each request it takes
//! part in (and the gossip's outside nodes do too), and one client sends
//! many requests with one certificate: a chain checked by the same trust
//! material (CA bundle and CRL: a reload brings new material, which checks
//! afresh) counts for `TTL`, and only while the time checked against lies in
//! the leaf's validity. The request's own signature is always checked.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use sha2::{Digest, Sha256};

use super::identity::Identity;

/// How long a checked chain counts. A CA that expires, or a CRL that is
/// replaced without a reload, takes effect within this time.
const TTL: Duration = Duration::from_secs(60);
/// Chains remembered at most (all forgotten when full).
const MAX: usize = 1024;

/// One checked chain: by which material, when, the leaf's validity (unix
/// seconds) and its identity.
struct Checked {
    by: Arc<dyn ClientCertVerifier>,
    at: Instant,
    valid: (u64, u64),
    id: Identity,
}

#[derive(Default)]
pub(super) struct ChainMemo(Mutex<HashMap<[u8; 32], Checked>>);

impl std::fmt::Debug for ChainMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainMemo").finish_non_exhaustive()
    }
}

/// The fingerprint of a chain (leaf first).
pub(super) fn fingerprint(leaf: &CertificateDer<'_>, rest: &[CertificateDer<'_>]) -> [u8; 32] {
    let mut h = Sha256::new();
    for c in std::iter::once(leaf).chain(rest) {
        h.update((c.len() as u64).to_be_bytes());
        h.update(c.as_ref());
    }
    h.finalize().into()
}

impl ChainMemo {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Checked>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The identity of chain `fp` if `by` checked it less than `TTL` ago
    /// and `at` lies in its leaf's validity.
    pub(super) fn get(
        &self,
        fp: &[u8; 32],
        by: &Arc<dyn ClientCertVerifier>,
        at: UnixTime,
    ) -> Option<Identity> {
        let m = self.lock();
        let c = m.get(fp)?;
        let secs = at.as_secs();
        (Arc::ptr_eq(&c.by, by) && c.at.elapsed() < TTL && (c.valid.0..=c.valid.1).contains(&secs))
            .then(|| c.id.clone())
    }

    /// Records that `by` checked chain `fp` (leaf `leaf`, identity `id`)
    /// just now. A leaf whose validity cannot be read is not remembered.
    pub(super) fn put(
        &self,
        fp: [u8; 32],
        by: Arc<dyn ClientCertVerifier>,
        leaf: &CertificateDer<'_>,
        id: Identity,
    ) {
        use x509_parser::prelude::FromDer;
        let Ok((_, x)) = x509_parser::certificate::X509Certificate::from_der(leaf) else {
            return;
        };
        let v = x.validity();
        let (Ok(from), Ok(to)) = (
            u64::try_from(v.not_before.timestamp()),
            u64::try_from(v.not_after.timestamp()),
        ) else {
            return;
        };
        let mut m = self.lock();
        if m.len() >= MAX {
            m.clear();
        }
        m.insert(
            fp,
            Checked {
                by,
                at: Instant::now(),
                valid: (from, to),
                id,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::request::RequestVerifier;
    use crate::pki::Role;
    use crate::transport::request_auth::{CertRequestVerifier, RequestSigner};
    use crate::transport::tls::{self, TlsFiles};

    const DOMAIN: &str = "memo.test";

    fn files() -> (tempfile::TempDir, TlsFiles) {
        let dir = tempfile::tempdir().unwrap();
        let layout = crate::pki::init_for(
            dir.path(),
            DOMAIN,
            None,
            &["a".into()],
            &["app".into()],
            &[],
            |_, _| {},
        )
        .unwrap();
        let files = TlsFiles {
            ca: layout.ca_cert(),
            cert: layout.cert(Role::Client, "app"),
            key: layout.key(Role::Client, "app"),
            crl: None,
            crl_grace: None,
        };
        (dir, files)
    }

    fn leaf(files: &TlsFiles) -> CertificateDer<'static> {
        use rustls::pki_types::pem::PemObject;
        let pem = std::fs::read(&files.cert).unwrap();
        CertificateDer::pem_slice_iter(&pem)
            .next()
            .unwrap()
            .unwrap()
    }

    #[test]
    fn a_chain_counts_only_for_the_material_that_checked_it_and_within_its_validity() {
        let (_dir, files) = files();
        let leaf = leaf(&files);
        let by = tls::client_cert_verifier(&files).unwrap();
        let memo = ChainMemo::default();
        let fp = fingerprint(&leaf, &[]);
        let now = UnixTime::now();
        assert!(memo.get(&fp, &by, now).is_none());
        by.verify_client_cert(&leaf, &[], now).unwrap();
        let id = crate::transport::identity::identity_of(&leaf, DOMAIN).unwrap();
        memo.put(fp, by.clone(), &leaf, id.clone());
        assert_eq!(memo.get(&fp, &by, now), Some(id));
        // Reloaded material (a new CRL or CA bundle) checks afresh.
        let reloaded = tls::client_cert_verifier(&files).unwrap();
        assert!(memo.get(&fp, &reloaded, now).is_none());
        // Outside the leaf's validity: checked afresh (and refused there).
        let later = UnixTime::since_unix_epoch(Duration::from_secs(now.as_secs() + 400 * 86_400));
        assert!(memo.get(&fp, &by, later).is_none());
        assert!(memo
            .get(&fp, &by, UnixTime::since_unix_epoch(Duration::ZERO))
            .is_none());
        // Another chain is not this one.
        assert!(memo.get(&[0; 32], &by, now).is_none());
    }

    #[test]
    fn a_remembered_chain_still_has_every_request_signature_checked() {
        let (_dir, files) = files();
        let verifier = CertRequestVerifier::new(&files, DOMAIN).unwrap();
        let signer = RequestSigner::from_files(&files).unwrap();
        let auth = signer.sign_bytes(b"first request").unwrap();
        assert_eq!(
            verifier.verify(&auth, b"first request").unwrap().as_str(),
            "app"
        );
        // The chain is remembered now; a signature over other bytes is
        // still refused, and so is the same chain past its validity.
        let err = verifier.verify(&auth, b"another request").unwrap_err();
        assert!(err.contains("does not cover this request"), "{err}");
        let later = UnixTime::now().as_secs() + 400 * 86_400;
        let err = verifier
            .verify_at(&auth, b"first request", later)
            .unwrap_err();
        assert!(err.contains("certificate refused"), "{err}");
        let again = signer.sign_bytes(b"second request").unwrap();
        assert_eq!(
            verifier.verify(&again, b"second request").unwrap().as_str(),
            "app"
        );
    }
}
