//! Sealing of shares at rest: XChaCha20-Poly1305 under keys derived from the
//! store passphrase. Argon2id turns the passphrase into a root key; HKDF-SHA256
//! turns the root key into one subkey per use (share sealing, record MACs, the
//! audit chain, backup MACs, the passphrase check), so no key serves two
//! algorithms. AAD binds each share to key id, epoch, node name and schema
//! version, so a record copied elsewhere is refused.

use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::XChaCha20Poly1305;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::StorageError;
use crate::domain::{KeyId, NodeName};
use crate::secret::{SecretBytes, SecretKey32};

pub(super) const META_FILE: &str = "store.meta";
const CHECK_PLAINTEXT: &[u8] = b"thresig/kek-check/v1";
const SHARE_SCHEMA: u16 = 1;
/// Argon2id cost: 64 MiB, 3 passes, 1 lane.
const M_COST_KIB: u32 = 64 * 1024;
const T_COST: u32 = 3;

/// The store format this code writes. Format 1: records, ledger entries and
/// watermarks as JSON (MACed where public, see `mac.rs`), shares as bincode
/// of the engine's party sealed with XChaCha20-Poly1305 (pinned by
/// `tests/fixtures/store-v1`), every seal and MAC under the Argon2id output
/// itself. Format 2: the same encodings, each seal and MAC under its own
/// HKDF subkey. A format-1 store is rewritten as format 2 when it is opened
/// (`migrate.rs`). A change of any encoding raises this and adds a migration
/// from every older format.
pub const STORE_FORMAT: u32 = 2;

fn format_v1() -> u32 {
    1
}

#[derive(Serialize, Deserialize)]
struct Meta {
    schema: u16,
    /// Stores written before the field existed are format 1.
    #[serde(default = "format_v1")]
    format: u32,
    kdf: String,
    m_cost_kib: u32,
    t_cost: u32,
    salt: String,
    /// hex(nonce || AEAD(check key, CHECK_PLAINTEXT)): the root key itself in
    /// format 1, its `meta-check` subkey in format 2.
    check: String,
}

/// The Argon2id output for a store: every subkey derives from it. It lives
/// only while a store is opened (or a backup checked). Redacted `Debug`,
/// zeroized on drop.
pub(super) struct RootKey(SecretKey32);

impl std::fmt::Debug for RootKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RootKey([REDACTED])")
    }
}

/// An unlocked `store.meta`: the root key, and the format the file states.
#[derive(Debug)]
pub(super) struct Unlocked {
    pub root: RootKey,
    pub meta_format: u32,
}

/// The keys a store seals and MACs under, for one store format. Redacted
/// `Debug`, zeroized on drop.
pub struct Kek {
    format: u32,
    seal: SecretKey32,
    record: SecretKey32,
    audit: SecretKey32,
    backup: SecretKey32,
}

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Kek(format {}, [REDACTED])", self.format)
    }
}

/// HKDF salt of the format-2 subkeys (a fixed domain tag: the root key is
/// already uniformly random).
const HKDF_SALT: &[u8] = b"thresig/store/v2";
const LABEL_SEAL: &str = "share-seal";
const LABEL_RECORD: &str = "record-mac";
const LABEL_AUDIT: &str = "audit-mac";
const LABEL_BACKUP: &str = "backup-mac";
const LABEL_CHECK: &str = "meta-check";

fn subkey(root: &RootKey, label: &str) -> Result<SecretKey32, StorageError> {
    let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(HKDF_SALT), root.0.expose());
    let mut out = [0u8; 32];
    hk.expand(format!("thresig/v2/{label}").as_bytes(), &mut out)
        .map_err(|_| StorageError::Db("HKDF output length".into()))?;
    let key = SecretKey32::new(out);
    zeroize::Zeroize::zeroize(&mut out);
    Ok(key)
}

fn copy(root: &RootKey) -> SecretKey32 {
    SecretKey32::new(*root.0.expose())
}

/// The key that seals the passphrase check of a `store.meta` of `format`.
fn check_key(root: &RootKey, format: u32) -> Result<SecretKey32, StorageError> {
    if format == 1 {
        Ok(copy(root))
    } else {
        subkey(root, LABEL_CHECK)
    }
}

fn check_aad(format: u32) -> &'static [u8] {
    if format == 1 {
        b"thresig/meta/v1"
    } else {
        b"thresig/meta/v2"
    }
}

/// Reads `store.meta` in `dir` and checks the passphrase against it, or
/// creates it (at the current format) when the directory holds no store yet.
pub(super) fn unlock_or_init(
    dir: &Path,
    passphrase: &SecretBytes,
) -> Result<Unlocked, StorageError> {
    let meta_path = dir.join(META_FILE);
    let io = |source| StorageError::Io {
        path: meta_path.clone(),
        source,
    };
    if meta_path.exists() {
        let raw = std::fs::read(&meta_path).map_err(io)?;
        let meta: Meta = serde_json::from_slice(&raw).map_err(|e| StorageError::Corrupt {
            what: meta_path.display().to_string(),
            reason: e.to_string(),
        })?;
        let corrupt = |reason: &str| StorageError::Corrupt {
            what: meta_path.display().to_string(),
            reason: reason.into(),
        };
        if meta.format > STORE_FORMAT {
            return Err(StorageError::UnsupportedFormat {
                path: meta_path.clone(),
                found: meta.format,
                supported: STORE_FORMAT,
            });
        }
        if meta.format == 0 {
            return Err(corrupt("format 0 does not exist"));
        }
        let salt = hex::decode(&meta.salt).map_err(|_| corrupt("bad salt"))?;
        let check = hex::decode(&meta.check).map_err(|_| corrupt("bad check value"))?;
        if !(8..=(1 << 20)).contains(&meta.m_cost_kib) || !(1..=16).contains(&meta.t_cost) {
            return Err(corrupt("KDF cost parameters out of range"));
        }
        let root = RootKey(derive(passphrase, &salt, meta.m_cost_kib, meta.t_cost)?);
        open_with(
            &check_key(&root, meta.format)?,
            &check,
            check_aad(meta.format),
        )
        .map_err(|_| StorageError::WrongPassphrase(dir.to_owned()))?;
        return Ok(Unlocked {
            root,
            meta_format: meta.format,
        });
    }
    if dir.join(super::Store::DB_FILE).exists() {
        return Err(StorageError::Corrupt {
            what: dir.display().to_string(),
            reason: format!(
                "{META_FILE} is missing beside an existing store; refusing to create a new one"
            ),
        });
    }
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| StorageError::Db(format!("rng: {e}")))?;
    let root = RootKey(derive(passphrase, &salt, M_COST_KIB, T_COST)?);
    let meta = Meta {
        schema: 1,
        format: STORE_FORMAT,
        kdf: "argon2id-v19".into(),
        m_cost_kib: M_COST_KIB,
        t_cost: T_COST,
        salt: hex::encode(salt),
        check: String::new(),
    };
    // The salt exists only in this file: it is durable before any share is
    // sealed under a key it derives.
    write_meta(dir, meta, &root)?;
    Ok(Unlocked {
        root,
        meta_format: STORE_FORMAT,
    })
}

/// Rewrites `store.meta` in `dir` at the current format (same salt and
/// costs, the check under the current check key), atomically and durably.
pub(super) fn upgrade_meta(dir: &Path, root: &RootKey) -> Result<(), StorageError> {
    let meta_path = dir.join(META_FILE);
    let raw = std::fs::read(&meta_path).map_err(|source| StorageError::Io {
        path: meta_path.clone(),
        source,
    })?;
    let meta: Meta = serde_json::from_slice(&raw).map_err(|e| StorageError::Corrupt {
        what: meta_path.display().to_string(),
        reason: e.to_string(),
    })?;
    write_meta(dir, meta, root)
}

fn write_meta(dir: &Path, mut meta: Meta, root: &RootKey) -> Result<(), StorageError> {
    let meta_path = dir.join(META_FILE);
    let io = |source| StorageError::Io {
        path: meta_path.clone(),
        source,
    };
    meta.format = STORE_FORMAT;
    meta.check = hex::encode(seal_with(
        &check_key(root, STORE_FORMAT)?,
        CHECK_PLAINTEXT,
        check_aad(STORE_FORMAT),
    )?);
    let body = serde_json::to_vec_pretty(&meta).map_err(|e| StorageError::Db(e.to_string()))?;
    let tmp = dir.join(format!("{META_FILE}.tmp"));
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&body).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, &meta_path).map_err(io)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io)?;
    Ok(())
}

fn cipher(key: &SecretKey32) -> XChaCha20Poly1305 {
    XChaCha20Poly1305::new(key.expose().into())
}

fn seal_with(key: &SecretKey32, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, StorageError> {
    let mut nonce = [0u8; 24];
    getrandom::fill(&mut nonce).map_err(|e| StorageError::Db(format!("rng: {e}")))?;
    let ct = cipher(key)
        .encrypt(
            &nonce.into(),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| StorageError::Db("encryption failed".into()))?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&ct);
    Ok(out)
}

fn open_with(key: &SecretKey32, sealed: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, ()> {
    if sealed.len() < 24 + 16 {
        return Err(());
    }
    let (nonce, ct) = sealed.split_at(24);
    let nonce: [u8; 24] = nonce.try_into().map_err(|_| ())?;
    cipher(key)
        .decrypt(&nonce.into(), Payload { msg: ct, aad })
        .map(Zeroizing::new)
        .map_err(|_| ())
}

fn hmac(key: &SecretKey32) -> Result<hmac::Hmac<sha2::Sha256>, StorageError> {
    <hmac::Hmac<sha2::Sha256> as hmac::KeyInit>::new_from_slice(key.expose())
        .map_err(|_| StorageError::Db("HMAC key".into()))
}

impl Kek {
    /// The keys of store format `format` under `root`: format 1 used the
    /// root key for everything; format 2 derives a subkey per use.
    pub(super) fn derive(root: &RootKey, format: u32) -> Result<Self, StorageError> {
        if format == 1 {
            return Ok(Self {
                format,
                seal: copy(root),
                record: copy(root),
                audit: copy(root),
                backup: copy(root),
            });
        }
        Ok(Self {
            format,
            seal: subkey(root, LABEL_SEAL)?,
            record: subkey(root, LABEL_RECORD)?,
            audit: subkey(root, LABEL_AUDIT)?,
            backup: subkey(root, LABEL_BACKUP)?,
        })
    }

    fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, StorageError> {
        seal_with(&self.seal, plaintext, aad)
    }

    fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, ()> {
        open_with(&self.seal, sealed, aad)
    }

    /// MAC over a public record, so that an edited record (another public
    /// key, committee or state) is detected.
    pub(super) fn record_mac(&self, key: &KeyId, body: &[u8]) -> Result<[u8; 32], StorageError> {
        use hmac::Mac;
        let mut mac = hmac(&self.record)?;
        mac.update(b"thresig/record/v1");
        mac.update(&(key.as_str().len() as u32).to_be_bytes());
        mac.update(key.as_str().as_bytes());
        mac.update(body);
        Ok(mac.finalize().into_bytes().into())
    }

    /// Link of the audit chain: MAC over the previous link and an entry's
    /// body, so an edited, removed or reordered entry breaks every link
    /// after it, and nobody without the passphrase can forge a new chain.
    pub(super) fn audit_mac(&self, prev: &[u8; 32], body: &[u8]) -> Result<[u8; 32], StorageError> {
        use hmac::Mac;
        let mut mac = hmac(&self.audit)?;
        mac.update(b"thresig/audit/v1");
        mac.update(prev);
        mac.update(body);
        Ok(mac.finalize().into_bytes().into())
    }

    /// MAC over a whole backup file (`storage/backup.rs`).
    pub(super) fn backup_mac(&self, body: &[u8]) -> Result<[u8; 32], StorageError> {
        use hmac::Mac;
        Ok(self.backup_hmac(body)?.finalize().into_bytes().into())
    }

    /// Whether `mac` is the backup MAC of `body` (compared in constant time).
    pub(super) fn backup_mac_matches(&self, body: &[u8], mac: &[u8]) -> Result<bool, StorageError> {
        use hmac::Mac;
        Ok(self.backup_hmac(body)?.verify_slice(mac).is_ok())
    }

    fn backup_hmac(&self, body: &[u8]) -> Result<hmac::Hmac<sha2::Sha256>, StorageError> {
        use hmac::Mac;
        let mut mac = hmac(&self.backup)?;
        mac.update(b"thresig/backup/v1");
        mac.update(body);
        Ok(mac)
    }

    /// Seals a share's bytes (opaque here: what `protocol::KeyShare::encode` made).
    pub(super) fn seal_share(
        &self,
        share: &SecretBytes,
        key: &KeyId,
        epoch: u64,
        node: &NodeName,
    ) -> Result<Vec<u8>, StorageError> {
        self.seal(share.expose(), &share_aad(key, epoch, node))
    }

    pub(super) fn open_share(
        &self,
        sealed: &[u8],
        key: &KeyId,
        epoch: u64,
        node: &NodeName,
    ) -> Result<SecretBytes, StorageError> {
        let plain = self
            .open(sealed, &share_aad(key, epoch, node))
            .map_err(|_| StorageError::Corrupt {
                what: format!("share of key {key} epoch {epoch}"),
                reason:
                    "authentication failed (tampered, or copied from another key, epoch or node)"
                        .into(),
            })?;
        Ok(SecretBytes::new(plain.to_vec()))
    }
}

pub(super) fn share_aad(key: &KeyId, epoch: u64, node: &NodeName) -> Vec<u8> {
    let mut aad = Vec::new();
    for field in [
        b"thresig/share".as_slice(),
        key.as_str().as_bytes(),
        &epoch.to_be_bytes(),
        node.as_str().as_bytes(),
        &SHARE_SCHEMA.to_be_bytes(),
    ] {
        aad.extend_from_slice(&(field.len() as u32).to_be_bytes());
        aad.extend_from_slice(field);
    }
    aad
}

fn derive(
    passphrase: &SecretBytes,
    salt: &[u8],
    m_cost: u32,
    t_cost: u32,
) -> Result<SecretKey32, StorageError> {
    use argon2::{Algorithm, Argon2, Params, Version};
    let params = Params::new(m_cost, t_cost, 1, Some(32))
        .map_err(|e| StorageError::Db(format!("argon2 params: {e}")))?;
    let mut out = [0u8; 32];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(passphrase.expose(), salt, &mut out)
        .map_err(|e| StorageError::Db(format!("argon2: {e}")))?;
    let key = SecretKey32::new(out);
    zeroize::Zeroize::zeroize(&mut out);
    Ok(key)
}
