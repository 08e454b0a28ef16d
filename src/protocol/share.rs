//! This node's key share, opaque above `protocol/`: a key type and the
//! engine's party for that curve. It encodes to bytes for sealing (format 1:
//! bincode of the engine's party, the key type kept in the key's record) and
//! decodes from them with the record's key type. The engine's party derives
//! `Debug` and `Clone` and holds the secret share, so it lives only inside a
//! `SecretBox` here: redacted `Debug`, zeroized on drop.

use secrecy::{ExposeSecret, SecretBox};
use zeroize::Zeroizing;

use super::curve::{Curve, Party};
use super::ProtocolError;
use crate::domain::KeyType;

/// One node's share of one key at one epoch.
pub enum KeyShare {
    Secp256k1(SecretBox<Party<k256::Secp256k1>>),
    P256(SecretBox<Party<p256::NistP256>>),
}

/// Runs `$body` with `$p` bound to the engine party of `$share`, whatever its curve.
macro_rules! with_party {
    ($share:expr, $p:ident => $body:expr) => {
        match $share {
            KeyShare::Secp256k1(x) => {
                let $p = x.expose_secret();
                $body
            }
            KeyShare::P256(x) => {
                let $p = x.expose_secret();
                $body
            }
        }
    };
}

impl KeyShare {
    pub fn key_type(&self) -> KeyType {
        match self {
            Self::Secp256k1(_) => KeyType::Secp256k1,
            Self::P256(_) => KeyType::P256,
        }
    }

    /// The compressed public key of the whole key.
    pub fn public_key(&self) -> Result<[u8; 33], ProtocolError> {
        match self {
            Self::Secp256k1(x) => k256::Secp256k1::compress(&x.expose_secret().pk),
            Self::P256(x) => p256::NistP256::compress(&x.expose_secret().pk),
        }
    }

    /// The key's BIP32-style chain code.
    pub fn chain_code(&self) -> [u8; 32] {
        with_party!(self, p => p.derivation_data.chain_code)
    }

    /// (threshold, number of shares) the share was made for.
    pub fn parameters(&self) -> (u8, u8) {
        with_party!(self, p => (p.parameters.threshold, p.parameters.share_count))
    }

    /// This share's 1-based party index.
    pub fn party_index(&self) -> u8 {
        with_party!(self, p => p.party_index.as_u8())
    }

    /// The share's bytes for sealing at rest.
    pub fn encode(&self) -> Result<Zeroizing<Vec<u8>>, String> {
        with_party!(self, p => super::encode(p).map(Zeroizing::new))
    }

    /// A share of a `key_type` key from its sealed-at-rest bytes.
    pub fn decode(key_type: KeyType, bytes: &[u8]) -> Result<Self, String> {
        Ok(match key_type {
            KeyType::Secp256k1 => {
                k256::Secp256k1::wrap(super::decode::<Party<k256::Secp256k1>>(bytes)?)
            }
            KeyType::P256 => p256::NistP256::wrap(super::decode::<Party<p256::NistP256>>(bytes)?),
        })
    }
}

impl std::fmt::Debug for KeyShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyShare")
            .field("key_type", &self.key_type())
            .field("party_index", &self.party_index())
            .field("share", &"[REDACTED]")
            .finish()
    }
}
