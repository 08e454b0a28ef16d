//! The typed parameters of an import request (`AdminRequest::params`),
//! which the approving admins sign and every node checks, and the sealing
//! of each member's dealt point to that member's certificate key.
//!
//! Canonical bytes, every field length-prefixed with a u32 big-endian byte
//! count, as in the admin request:
//!
//! ```text
//! field("thresig/import-params/v1")
//! field(public key: SEC1 compressed, 33 bytes)
//! field(chain code: 32 bytes)
//! field(commitments)  field(SEC1 compressed point) for each of the t coefficients;
//!                     the first is the public key
//! field(sealed)       for each committee member, in committee order:
//!                     field(field(HPKE encapsulated key) field(HPKE ciphertext))
//! ```
//!
//! Each point (32 bytes) is sealed with HPKE (RFC 9180, base mode,
//! DHKEM(P-256, HKDF-SHA256), HKDF-SHA256, AES-128-GCM) to the P-256 key of
//! the member's node certificate. The HPKE info binds the cluster, the key
//! id and the member's name; the associated data is SHA-256 of the
//! commitments. A point opened under another binding fails.

use hpke::aead::AesGcm128;
use hpke::kdf::HkdfSha256;
use hpke::kem::DhP256HkdfSha256;
use hpke::{Deserializable, Kem, OpModeR, OpModeS, Serializable};
use rand_chacha::rand_core::SeedableRng;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Domain tag of the canonical import parameters.
pub const PARAMS_TAG: &str = "thresig/import-params/v1";
/// Domain tag of the HPKE info of a sealed point.
pub const SEAL_TAG: &str = "thresig/import-point/v1";
/// Bytes of a compressed point.
const POINT: usize = 33;
/// The most members (and so commitments and sealed points) an import names.
const MAX_MEMBERS: usize = crate::domain::MAX_ROSTER;
/// An encapsulated P-256 key (uncompressed point) and a sealed 32-byte point
/// with its 16-byte tag.
const ENC_LEN: usize = 65;
const SEALED_LEN: usize = 48;

/// One member's point, sealed to its node's certificate key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedPoint {
    pub enc: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

/// What an import request signs beside its committee and threshold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportParams {
    /// SEC1 compressed.
    pub public_key: Vec<u8>,
    pub chain_code: [u8; 32],
    /// SEC1 compressed points, one per coefficient (t); the first is the
    /// public key.
    pub commitments: Vec<Vec<u8>>,
    /// One per committee member, in committee order.
    pub sealed: Vec<SealedPoint>,
}

/// What a sealed point is bound to.
#[derive(Debug, Clone, Copy)]
pub struct SealBinding<'a> {
    pub cluster: &'a str,
    pub key_id: &'a str,
    pub member: &'a str,
}

/// Appends `b` with its u32 big-endian length.
pub(super) fn field(out: &mut Vec<u8>, b: &[u8]) {
    let len = u32::try_from(b.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(b);
}

/// Reads length-prefixed fields off a byte string.
pub(super) struct Fields<'a>(pub(super) &'a [u8]);

impl<'a> Fields<'a> {
    pub(super) fn next(&mut self, what: &str) -> Result<&'a [u8], String> {
        let (len, rest) = self
            .0
            .split_first_chunk::<4>()
            .ok_or_else(|| format!("{what}: truncated"))?;
        let len =
            usize::try_from(u32::from_be_bytes(*len)).map_err(|_| format!("{what}: too long"))?;
        if len > rest.len() {
            return Err(format!(
                "{what}: {len} bytes announced, {} left",
                rest.len()
            ));
        }
        let (body, rest) = rest.split_at(len);
        self.0 = rest;
        Ok(body)
    }

    pub(super) fn end(&self, what: &str) -> Result<(), String> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{what}: {} bytes after the last field",
                self.0.len()
            ))
        }
    }

    /// Each field of a list, at most `max`.
    fn list(body: &'a [u8], what: &str, max: usize) -> Result<Vec<&'a [u8]>, String> {
        let mut f = Fields(body);
        let mut out = Vec::new();
        while !f.0.is_empty() {
            if out.len() == max {
                return Err(format!("{what}: more than {max}"));
            }
            out.push(f.next(what)?);
        }
        Ok(out)
    }
}

impl ImportParams {
    /// The canonical bytes (see the module documentation).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        field(&mut out, PARAMS_TAG.as_bytes());
        field(&mut out, &self.public_key);
        field(&mut out, &self.chain_code);
        let mut list = Vec::new();
        for c in &self.commitments {
            field(&mut list, c);
        }
        field(&mut out, &list);
        let mut list = Vec::new();
        for s in &self.sealed {
            let mut one = Vec::new();
            field(&mut one, &s.enc);
            field(&mut one, &s.ciphertext);
            field(&mut list, &one);
        }
        field(&mut out, &list);
        out
    }

    /// The parameters in `bytes`, every length checked; any other input is
    /// an error naming what is wrong, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let mut f = Fields(bytes);
        if f.next("tag")? != PARAMS_TAG.as_bytes() {
            return Err(format!(
                "not import parameters (the tag is not {PARAMS_TAG:?})"
            ));
        }
        let public_key = f.next("public key")?;
        if public_key.len() != POINT {
            return Err(format!(
                "public key: {} bytes, not {POINT}",
                public_key.len()
            ));
        }
        let chain_code: [u8; 32] = f
            .next("chain code")?
            .try_into()
            .map_err(|_| "chain code: not 32 bytes".to_owned())?;
        let commitments = Fields::list(f.next("commitments")?, "commitments", MAX_MEMBERS)?;
        if let Some(c) = commitments.iter().find(|c| c.len() != POINT) {
            return Err(format!(
                "commitments: a point of {} bytes, not {POINT}",
                c.len()
            ));
        }
        if commitments.first() != Some(&public_key) {
            return Err("commitments: the first is not the public key".into());
        }
        let mut sealed = Vec::new();
        for one in Fields::list(f.next("sealed points")?, "sealed points", MAX_MEMBERS)? {
            let mut g = Fields(one);
            let enc = g.next("sealed point")?;
            let ciphertext = g.next("sealed point")?;
            g.end("sealed point")?;
            if enc.len() != ENC_LEN || ciphertext.len() != SEALED_LEN {
                return Err(format!(
                    "sealed point: {} + {} bytes, not {ENC_LEN} + {SEALED_LEN}",
                    enc.len(),
                    ciphertext.len()
                ));
            }
            sealed.push(SealedPoint {
                enc: enc.to_vec(),
                ciphertext: ciphertext.to_vec(),
            });
        }
        f.end("import parameters")?;
        Ok(Self {
            public_key: public_key.to_vec(),
            chain_code,
            commitments: commitments.into_iter().map(<[u8]>::to_vec).collect(),
            sealed,
        })
    }

    /// The associated data every sealed point of this import carries.
    fn aad(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        for c in &self.commitments {
            h.update(c);
        }
        h.finalize().into()
    }
}

fn info(b: SealBinding<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    for part in [SEAL_TAG, b.cluster, b.key_id, b.member] {
        field(&mut out, part.as_bytes());
    }
    out
}

type KemPublic = <DhP256HkdfSha256 as Kem>::PublicKey;
type KemPrivate = <DhP256HkdfSha256 as Kem>::PrivateKey;

/// Seals `point` for the member whose node certificate has the P-256
/// public key `recipient` (SEC1, uncompressed), bound to `binding` and to
/// `params`' commitments (set them first).
pub fn seal_point(
    params: &ImportParams,
    recipient: &[u8],
    point: &[u8; 32],
    binding: SealBinding<'_>,
) -> Result<SealedPoint, String> {
    let pk = KemPublic::from_bytes(recipient)
        .map_err(|e| format!("member {}: not a P-256 public key: {e}", binding.member))?;
    let mut seed = Zeroizing::new([0u8; 32]);
    getrandom::fill(seed.as_mut()).map_err(|e| format!("rng: {e}"))?;
    let mut rng = rand_chacha::ChaCha20Rng::from_seed(*seed);
    let (enc, ciphertext) = hpke::single_shot_seal::<AesGcm128, HkdfSha256, DhP256HkdfSha256, _>(
        &OpModeS::Base,
        &pk,
        &info(binding),
        point,
        &params.aad(),
        &mut rng,
    )
    .map_err(|e| format!("member {}: sealing: {e}", binding.member))?;
    Ok(SealedPoint {
        enc: enc.to_bytes().to_vec(),
        ciphertext,
    })
}

/// Opens this member's sealed point with its node's P-256 private key
/// (`secret`, the 32-byte scalar of its certificate key).
pub fn open_point(
    params: &ImportParams,
    sealed: &SealedPoint,
    secret: &[u8],
    binding: SealBinding<'_>,
) -> Result<Zeroizing<[u8; 32]>, String> {
    let sk = KemPrivate::from_bytes(secret).map_err(|e| format!("node key: {e}"))?;
    let enc = <DhP256HkdfSha256 as Kem>::EncappedKey::from_bytes(&sealed.enc)
        .map_err(|e| format!("sealed point: {e}"))?;
    let opened = Zeroizing::new(
        hpke::single_shot_open::<AesGcm128, HkdfSha256, DhP256HkdfSha256>(
            &OpModeR::Base,
            &sk,
            &enc,
            &info(binding),
            &sealed.ciphertext,
            &params.aad(),
        )
        .map_err(|_| {
            format!(
                "the point sealed for {} does not open with this node's certificate key under \
                 this import (another node's, another key's or another cluster's, or altered)",
                binding.member
            )
        })?,
    );
    let mut point = Zeroizing::new([0u8; 32]);
    if opened.len() != point.len() {
        return Err(format!(
            "sealed point: {} bytes inside, not 32",
            opened.len()
        ));
    }
    point.copy_from_slice(&opened);
    Ok(point)
}

/// The P-256 public key (SEC1, uncompressed) of a node certificate (DER).
pub fn certificate_key(cert_der: &[u8]) -> Result<Vec<u8>, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let key = cert.public_key().subject_public_key.data.to_vec();
    KemPublic::from_bytes(&key)
        .map_err(|_| "the certificate's key is not a P-256 key".to_owned())?;
    Ok(key)
}

/// The 32-byte scalar of a node's P-256 private key (PKCS#8 DER).
pub fn private_scalar(pkcs8_der: &[u8]) -> Result<Zeroizing<[u8; 32]>, String> {
    use p256::pkcs8::DecodePrivateKey;
    let sk = p256::SecretKey::from_pkcs8_der(pkcs8_der)
        .map_err(|_| "the node's key is not a P-256 key in PKCS#8".to_owned())?;
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(&sk.to_bytes());
    Ok(out)
}

#[cfg(test)]
#[path = "params_tests.rs"]
mod tests;
