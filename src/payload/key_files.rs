//! The key files wallets write, read for `thresig keys import` on the
//! admin's workstation, with the maintained crates: an Ethereum V3 keystore
//! (Web3 Secret Storage: scrypt or PBKDF2-HMAC-SHA256, AES-128-CTR, Keccak
//! MAC; `eth-keystore`), a BIP-39 mnemonic with a BIP-32 derivation path
//! (`coins-bip39`, `coins-bip32`; secp256k1 keys), or a raw key in hex.
//!
//! Every key comes back as 32 zeroized bytes. Errors say what is wrong and
//! never carry the secret, the password or the phrase. A keystore's fields
//! are checked before the crate reads it (it would panic on a short
//! derived key or IV), and its KDF cost is bounded.

use std::path::Path;

use zeroize::Zeroizing;

/// The costliest scrypt a keystore may ask for (N; geth's "standard" is
/// 2^18, eth-account's default 2^18).
const MAX_SCRYPT_N: u64 = 1 << 20;
const MAX_SCRYPT_R: u64 = 32;
const MAX_SCRYPT_P: u64 = 16;
/// The most PBKDF2 rounds a keystore may ask for.
const MAX_PBKDF2_C: u64 = 10_000_000;
/// The largest keystore file read.
const MAX_KEYSTORE_BYTES: u64 = 64 * 1024;

fn hex_len(v: &serde_json::Value, what: &str) -> Result<usize, String> {
    let s = v
        .as_str()
        .ok_or_else(|| format!("keystore: {what} is not a hex string"))?;
    let b = hex::decode(s.trim_start_matches("0x"))
        .map_err(|_| format!("keystore: {what} is not hex"))?;
    Ok(b.len())
}

fn number(v: &serde_json::Value, what: &str) -> Result<u64, String> {
    v.as_u64()
        .ok_or_else(|| format!("keystore: {what} is not a whole number"))
}

/// Checks what `eth-keystore` relies on, so that a malformed or hostile file
/// is an error, not a panic or an unbounded computation.
fn check_keystore(text: &str) -> Result<(), String> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("keystore: not JSON: {e}"))?;
    if v.get("version").and_then(serde_json::Value::as_u64) != Some(3) {
        return Err("keystore: not a version 3 keystore".into());
    }
    let c = v
        .get("crypto")
        .or_else(|| v.get("Crypto"))
        .ok_or("keystore: no crypto section")?;
    if c.get("cipher").and_then(serde_json::Value::as_str) != Some("aes-128-ctr") {
        return Err("keystore: the cipher is not aes-128-ctr".into());
    }
    let iv = c
        .get("cipherparams")
        .and_then(|p| p.get("iv"))
        .ok_or("keystore: no cipherparams.iv")?;
    if hex_len(iv, "cipherparams.iv")? != 16 {
        return Err("keystore: cipherparams.iv is not 16 bytes".into());
    }
    let ciphertext = c.get("ciphertext").ok_or("keystore: no ciphertext")?;
    if hex_len(ciphertext, "ciphertext")? != 32 {
        return Err("keystore: the ciphertext is not a 32-byte key".into());
    }
    if hex_len(c.get("mac").ok_or("keystore: no mac")?, "mac")? != 32 {
        return Err("keystore: the mac is not 32 bytes".into());
    }
    let p = c.get("kdfparams").ok_or("keystore: no kdfparams")?;
    let field = |name: &str| p.get(name).ok_or(format!("keystore: no kdfparams.{name}"));
    if number(field("dklen")?, "kdfparams.dklen")? != 32 {
        return Err("keystore: kdfparams.dklen is not 32".into());
    }
    hex_len(field("salt")?, "kdfparams.salt")?;
    match c.get("kdf").and_then(serde_json::Value::as_str) {
        Some("scrypt") => {
            let n = number(field("n")?, "kdfparams.n")?;
            let r = number(field("r")?, "kdfparams.r")?;
            let pp = number(field("p")?, "kdfparams.p")?;
            if n < 2 || !n.is_power_of_two() || n > MAX_SCRYPT_N {
                return Err(format!(
                    "keystore: scrypt n = {n}; this tool takes a power of two up to {MAX_SCRYPT_N}"
                ));
            }
            if r == 0 || r > MAX_SCRYPT_R || pp == 0 || pp > MAX_SCRYPT_P {
                return Err(format!(
                    "keystore: scrypt r = {r}, p = {pp}; this tool takes 1..={MAX_SCRYPT_R} and \
                     1..={MAX_SCRYPT_P}"
                ));
            }
        }
        Some("pbkdf2") => {
            let rounds = number(field("c")?, "kdfparams.c")?;
            if rounds == 0 || rounds > MAX_PBKDF2_C {
                return Err(format!(
                    "keystore: pbkdf2 c = {rounds}; this tool takes 1..={MAX_PBKDF2_C}"
                ));
            }
            if p.get("prf").and_then(serde_json::Value::as_str) != Some("hmac-sha256") {
                return Err("keystore: pbkdf2 prf is not hmac-sha256".into());
            }
        }
        _ => return Err("keystore: the kdf is neither scrypt nor pbkdf2".into()),
    }
    Ok(())
}

fn key32(bytes: &[u8], what: &str) -> Result<Zeroizing<[u8; 32]>, String> {
    let mut out = Zeroizing::new([0u8; 32]);
    if bytes.len() != 32 {
        return Err(format!("{what}: a key of {} bytes, not 32", bytes.len()));
    }
    out.copy_from_slice(bytes);
    Ok(out)
}

/// The private key in the V3 keystore at `path`, decrypted with `password`.
pub fn keystore_key(path: &Path, password: &[u8]) -> Result<Zeroizing<[u8; 32]>, String> {
    let len = std::fs::metadata(path)
        .map_err(|e| format!("keystore {}: {e}", path.display()))?
        .len();
    if len > MAX_KEYSTORE_BYTES {
        return Err(format!(
            "keystore {}: {len} bytes; a keystore is under {MAX_KEYSTORE_BYTES}",
            path.display()
        ));
    }
    let text = Zeroizing::new(
        std::fs::read_to_string(path).map_err(|e| format!("keystore {}: {e}", path.display()))?,
    );
    check_keystore(&text).map_err(|e| format!("{} ({})", e, path.display()))?;
    let key = Zeroizing::new(
        eth_keystore::decrypt_key(path, password).map_err(|e| match e {
            eth_keystore::KeystoreError::MacMismatch => format!(
                "keystore {}: wrong password (the MAC does not match)",
                path.display()
            ),
            other => format!("keystore {}: {other}", path.display()),
        })?,
    );
    key32(&key, "keystore")
}

/// The secp256k1 private key at BIP-32 `path` (e.g. m/44'/60'/0'/0/0) of
/// the English BIP-39 `phrase`, with the optional BIP-39 `passphrase`.
pub fn mnemonic_key(
    phrase: &str,
    path: &str,
    passphrase: Option<&str>,
) -> Result<Zeroizing<[u8; 32]>, String> {
    let words = Zeroizing::new(phrase.split_whitespace().collect::<Vec<_>>().join(" "));
    let mnemonic =
        coins_bip39::Mnemonic::<coins_bip39::English>::new_from_phrase(&words).map_err(|_| {
            "the mnemonic is not a valid English BIP-39 phrase (12-24 words from the list, with \
             its checksum)"
                .to_owned()
        })?;
    let path: coins_bip32::path::DerivationPath = path
        .parse()
        .map_err(|e| format!("derivation path {path:?}: {e}"))?;
    let xpriv = mnemonic
        .derive_key(path, passphrase)
        .map_err(|e| format!("deriving the key: {e}"))?;
    let signing: &coins_bip32::ecdsa::SigningKey = xpriv.as_ref();
    let bytes = Zeroizing::new(signing.to_bytes().to_vec());
    key32(&bytes, "mnemonic")
}

/// A raw private key written as 64 hex digits (an optional 0x, surrounding
/// whitespace ignored).
pub fn raw_key(text: &str) -> Result<Zeroizing<[u8; 32]>, String> {
    let t = text.trim();
    let t = t.strip_prefix("0x").unwrap_or(t);
    if t.len() != 64 {
        return Err(format!(
            "a raw key file holds 64 hex digits (32 bytes); this one holds {} characters",
            t.len()
        ));
    }
    let bytes = Zeroizing::new(hex::decode(t).map_err(|_| "the raw key is not hex".to_owned())?);
    key32(&bytes, "raw key")
}

#[cfg(test)]
#[path = "key_files_tests.rs"]
mod tests;
