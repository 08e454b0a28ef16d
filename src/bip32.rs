//! BIP32-style public (non-hardened) derivation from a public key and chain
//! code, for secp256k1 (BIP32 itself) and P-256 (the same construction over
//! that curve, as the engine derives shares), written against the RustCrypto
//! curve crates directly so that it checks the engine's derivation
//! independently. Also the Ethereum address of a secp256k1 key.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha512;

use crate::domain::{DerivationPath, KeyType};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Bip32Error {
    #[error("public key is not a valid compressed point of the key's curve")]
    BadKey,
    #[error("derivation produced an invalid key at index {0} (skip this index)")]
    InvalidChild(u32),
    #[error("{0} keys have no Ethereum address")]
    NoAddress(KeyType),
}

/// `CKDpub` along `path` on the curve of `key_type`. Returns the child's
/// compressed key and chain code.
///
/// Results are remembered (public values only, at most `MEMO_MAX`): every
/// node derives the key at a request's path to check the payload's sender,
/// and one account signs at the same path again and again.
pub fn derive_public(
    key_type: KeyType,
    pk: &[u8],
    chain_code: &[u8; 32],
    path: &DerivationPath,
) -> Result<([u8; 33], [u8; 32]), Bip32Error> {
    let memo_key = (key_type, pk.to_vec(), *chain_code, path.indices().to_vec());
    if let Some(hit) = memo().get(&memo_key) {
        return Ok(*hit);
    }
    let derived = match key_type {
        KeyType::Secp256k1 => derive_k256(pk, chain_code, path),
        KeyType::P256 => derive_p256(pk, chain_code, path),
    }?;
    let mut m = memo();
    if m.len() >= MEMO_MAX {
        m.clear();
    }
    m.insert(memo_key, derived);
    Ok(derived)
}

/// How many derivations `derive_public` remembers.
const MEMO_MAX: usize = 4096;

type MemoKey = (KeyType, Vec<u8>, [u8; 32], Vec<u32>);
type Memo = std::collections::HashMap<MemoKey, ([u8; 33], [u8; 32])>;

fn memo() -> std::sync::MutexGuard<'static, Memo> {
    static MEMO: std::sync::OnceLock<std::sync::Mutex<Memo>> = std::sync::OnceLock::new();
    MEMO.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One `derive` per curve crate (their APIs have the same shape).
macro_rules! ckd_pub {
    ($name:ident, $krate:ident) => {
        fn $name(
            pk: &[u8],
            chain_code: &[u8; 32],
            path: &DerivationPath,
        ) -> Result<([u8; 33], [u8; 32]), Bip32Error> {
            use $krate::elliptic_curve::ff::PrimeField;
            use $krate::{AffinePoint, ProjectivePoint, Scalar};
            let compressed = |p: &AffinePoint| -> Result<[u8; 33], Bip32Error> {
                let vk =
                    $krate::ecdsa::VerifyingKey::from_affine(*p).map_err(|_| Bip32Error::BadKey)?;
                vk.to_sec1_point(true)
                    .as_bytes()
                    .try_into()
                    .map_err(|_| Bip32Error::BadKey)
            };
            let vk =
                $krate::ecdsa::VerifyingKey::from_sec1_bytes(pk).map_err(|_| Bip32Error::BadKey)?;
            let mut key = *vk.as_affine();
            let mut cc = *chain_code;
            for &i in path.indices() {
                let mut mac = <Hmac<Sha512> as KeyInit>::new_from_slice(&cc)
                    .map_err(|_| Bip32Error::BadKey)?;
                mac.update(&compressed(&key)?);
                mac.update(&i.to_be_bytes());
                let out = mac.finalize().into_bytes();
                let (il, ir) = out.split_at(32);
                let il: [u8; 32] = il.try_into().map_err(|_| Bip32Error::InvalidChild(i))?;
                let tweak: Option<Scalar> = Scalar::from_repr(il.into()).into();
                let tweak = tweak.ok_or(Bip32Error::InvalidChild(i))?;
                let child =
                    (ProjectivePoint::GENERATOR * tweak + ProjectivePoint::from(key)).to_affine();
                if child == AffinePoint::IDENTITY {
                    return Err(Bip32Error::InvalidChild(i));
                }
                key = child;
                cc = ir.try_into().map_err(|_| Bip32Error::InvalidChild(i))?;
            }
            Ok((compressed(&key)?, cc))
        }
    };
}

ckd_pub!(derive_k256, k256);
ckd_pub!(derive_p256, p256);

/// The `0x`-prefixed, EIP-55 checksummed Ethereum address of a secp256k1
/// public key.
pub fn eth_address(pk: &[u8]) -> Result<String, Bip32Error> {
    crate::protocol::scheme::eth_address(pk).ok_or(Bip32Error::BadKey)
}
