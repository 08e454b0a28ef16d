//! The curves a key can live on, as one trait over the engine's generic
//! DKLs23: what the protocols need beyond the engine's own bounds (message
//! encodings, point compression, the share wrapper) and the independent
//! signature check. secp256k1 checks with `k256`, P-256 with `p256`.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::sign::Signature;
use super::{KeyShare, ProtocolError};
use crate::domain::{Digest32, KeyType};

/// The engine's party (a key share) on curve `C`.
pub type Party<C> = dkls23::protocols::Party<C>;
/// The engine's public key package on curve `C`.
pub type Package<C> = dkls23::protocols::PublicKeyPackage<C>;

/// A curve a key can be generated, signed, refreshed, repaired and reshared on.
pub trait Curve:
    dkls23::curve::DklsCurve<
    AffinePoint: Serialize + DeserializeOwned + Send + Sync,
    Scalar: Serialize + DeserializeOwned + Send + Sync,
>
{
    const KEY_TYPE: KeyType;

    /// Compressed SEC1 encoding of a public key point.
    fn compress(pk: &Self::AffinePoint) -> Result<[u8; 33], ProtocolError>;

    /// The point of a SEC1-encoded public key (compressed or not); the
    /// identity and points off the curve are refused.
    fn decompress(sec1: &[u8]) -> Result<Self::AffinePoint, ProtocolError>;

    /// The address the engine records in a party (informational only).
    fn address(pk: &Self::AffinePoint) -> String;

    /// Wraps a share on this curve.
    fn wrap(party: Party<Self>) -> KeyShare;

    /// The share on this curve, or an error if `share` is on another.
    fn party(share: &KeyShare) -> Result<&Party<Self>, ProtocolError>;

    /// Takes a share on this curve out of its wrapper.
    fn unwrap(share: KeyShare) -> Result<Box<Party<Self>>, ProtocolError>;

    /// Independent check: the signature verifies under its public key, is
    /// low-S, and the recovery id recovers that key.
    fn verify(sig: &Signature, digest: &Digest32) -> Result<(), ProtocolError>;
}

fn wrong_curve(want: KeyType, got: KeyType) -> ProtocolError {
    ProtocolError::InvalidArgs(format!("a {got} share where a {want} share was needed"))
}

/// Implements `Curve` for one RustCrypto curve (their ECDSA APIs have the same shape).
macro_rules! ecdsa_curve {
    ($curve:ty, $krate:ident, $kt:expr, $variant:ident, $address:expr) => {
        impl Curve for $curve {
            const KEY_TYPE: KeyType = $kt;

            fn compress(pk: &Self::AffinePoint) -> Result<[u8; 33], ProtocolError> {
                let vk = $krate::ecdsa::VerifyingKey::from_affine(*pk)
                    .map_err(|_| ProtocolError::InvalidArgs("public key is the identity".into()))?;
                vk.to_sec1_point(true)
                    .as_bytes()
                    .try_into()
                    .map_err(|_| ProtocolError::InvalidArgs("unexpected point encoding".into()))
            }

            fn decompress(sec1: &[u8]) -> Result<Self::AffinePoint, ProtocolError> {
                $krate::ecdsa::VerifyingKey::from_sec1_bytes(sec1)
                    .map(|vk| *vk.as_affine())
                    .map_err(|_| ProtocolError::InvalidArgs(format!("not a {} public key", $kt)))
            }

            fn address(pk: &Self::AffinePoint) -> String {
                $address(pk)
            }

            fn wrap(party: Party<Self>) -> KeyShare {
                KeyShare::$variant(secrecy::SecretBox::new(Box::new(party)))
            }

            fn party(share: &KeyShare) -> Result<&Party<Self>, ProtocolError> {
                match share {
                    KeyShare::$variant(p) => Ok(secrecy::ExposeSecret::expose_secret(p)),
                    other => Err(wrong_curve($kt, other.key_type())),
                }
            }

            fn unwrap(share: KeyShare) -> Result<Box<Party<Self>>, ProtocolError> {
                match share {
                    KeyShare::$variant(p) => {
                        Ok(Box::new(secrecy::ExposeSecret::expose_secret(&p).clone()))
                    }
                    other => Err(wrong_curve($kt, other.key_type())),
                }
            }

            fn verify(sig: &Signature, digest: &Digest32) -> Result<(), ProtocolError> {
                use $krate::ecdsa::signature::hazmat::PrehashVerifier;
                use $krate::ecdsa::{RecoveryId, Signature as ESig, VerifyingKey};
                if sig.key_type != $kt {
                    return Err(ProtocolError::InvalidSignature);
                }
                let vk = VerifyingKey::from_sec1_bytes(&sig.public_key)
                    .map_err(|_| ProtocolError::InvalidSignature)?;
                let esig = ESig::from_scalars(sig.r, sig.s)
                    .map_err(|_| ProtocolError::InvalidSignature)?;
                if esig.normalize_s() != esig {
                    return Err(ProtocolError::InvalidSignature);
                }
                vk.verify_prehash(&digest.0, &esig)
                    .map_err(|_| ProtocolError::InvalidSignature)?;
                let rid = RecoveryId::from_byte(sig.recovery_id)
                    .ok_or(ProtocolError::InvalidSignature)?;
                let recovered = VerifyingKey::recover_from_prehash(&digest.0, &esig, rid)
                    .map_err(|_| ProtocolError::InvalidSignature)?;
                if recovered != vk {
                    return Err(ProtocolError::InvalidSignature);
                }
                Ok(())
            }
        }
    };
}

ecdsa_curve!(
    k256::Secp256k1,
    k256,
    KeyType::Secp256k1,
    Secp256k1,
    dkls23::secp256k1::compute_eth_address
);
ecdsa_curve!(
    p256::NistP256,
    p256,
    KeyType::P256,
    P256,
    dkls23::secp256r1::compute_sui_address
);
