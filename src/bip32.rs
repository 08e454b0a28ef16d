//! BIP32 public (non-hardened) derivation from a public key and chain code,
//! written against k256 directly so that it checks the engine's derivation
//! independently. Also the Ethereum address of a public key.

use hmac::{Hmac, KeyInit, Mac};
use k256::elliptic_curve::ff::PrimeField;
use k256::{AffinePoint, ProjectivePoint, Scalar};
use sha2::Sha512;

use crate::domain::DerivationPath;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Bip32Error {
    #[error("public key is not a valid compressed secp256k1 point")]
    BadKey,
    #[error("derivation produced an invalid key at index {0} (skip this index)")]
    InvalidChild(u32),
}

fn point(pk: &[u8]) -> Result<AffinePoint, Bip32Error> {
    let vk = k256::ecdsa::VerifyingKey::from_sec1_bytes(pk).map_err(|_| Bip32Error::BadKey)?;
    Ok(*vk.as_affine())
}

fn compressed(p: &AffinePoint) -> Result<[u8; 33], Bip32Error> {
    let vk = k256::ecdsa::VerifyingKey::from_affine(*p).map_err(|_| Bip32Error::BadKey)?;
    vk.to_sec1_point(true)
        .as_bytes()
        .try_into()
        .map_err(|_| Bip32Error::BadKey)
}

/// `CKDpub` along `path`. Returns the child's compressed key and chain code.
pub fn derive_public(
    pk: &[u8],
    chain_code: &[u8; 32],
    path: &DerivationPath,
) -> Result<([u8; 33], [u8; 32]), Bip32Error> {
    let mut key = point(pk)?;
    let mut cc = *chain_code;
    for &i in path.indices() {
        let mut mac =
            <Hmac<Sha512> as KeyInit>::new_from_slice(&cc).map_err(|_| Bip32Error::BadKey)?;
        mac.update(&compressed(&key)?);
        mac.update(&i.to_be_bytes());
        let out = mac.finalize().into_bytes();
        let (il, ir) = out.split_at(32);
        let il: [u8; 32] = il.try_into().map_err(|_| Bip32Error::InvalidChild(i))?;
        let tweak: Option<Scalar> = Scalar::from_repr(il.into()).into();
        let tweak = tweak.ok_or(Bip32Error::InvalidChild(i))?;
        let child = (ProjectivePoint::GENERATOR * tweak + ProjectivePoint::from(key)).to_affine();
        if child == AffinePoint::IDENTITY {
            return Err(Bip32Error::InvalidChild(i));
        }
        key = child;
        cc = ir.try_into().map_err(|_| Bip32Error::InvalidChild(i))?;
    }
    Ok((compressed(&key)?, cc))
}

/// The `0x`-prefixed, EIP-55 checksummed Ethereum address of a public key.
pub fn eth_address(pk: &[u8]) -> Result<String, Bip32Error> {
    Ok(dkls23::secp256k1::compute_eth_address(&point(pk)?))
}
