//! The node's store: one redb file for records and sealed shares, plus a small
//! `store.meta` file holding the KDF salt and a passphrase check. The
//! passphrase is checked against `store.meta` before the database is opened,
//! so a wrong passphrase never touches the store. No network, no protocol
//! logic here; shares arrive and leave as `KeyShare`.

mod audit;
mod records;
mod seal;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

pub use audit::{AuditEntry, AuditEvent, AuditReport};
pub use records::{KeyRecord, KeyState, LedgerEntry, LedgerResult, RotationProof, Watermark};

/// Schema version written into new records.
pub fn records_schema() -> u16 {
    records::SCHEMA
}
pub use seal::Kek;

use crate::domain::{ExecutionId, KeyId, NodeName};
use crate::secret::{KeyShare, SecretBytes};

const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("keys");
const SHARES: TableDefinition<&str, &[u8]> = TableDefinition::new("shares");
const EIDS: TableDefinition<&[u8], u64> = TableDefinition::new("eids");
const LEDGER: TableDefinition<&str, &[u8]> = TableDefinition::new("ledger");
/// key id -> the epoch staged by a rotation that has not been activated yet.
const PENDING: TableDefinition<&str, &[u8]> = TableDefinition::new("pending");
/// "key\0scope" -> the slot watermark (MACed JSON).
const WATERMARKS: TableDefinition<&str, &[u8]> = TableDefinition::new("watermarks");

/// Store failures. Each says what was being read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    #[error("cannot access {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("store passphrase is wrong for {0} (store left untouched)")]
    WrongPassphrase(PathBuf),
    #[error("store database error: {0}")]
    Db(String),
    #[error("{what} is corrupt or was tampered with: {reason}")]
    Corrupt { what: String, reason: String },
    #[error("{0} not found")]
    NotFound(String),
    #[error("conflict: {0}")]
    Conflict(String),
}

fn dberr<E: std::fmt::Display>(e: E) -> StorageError {
    StorageError::Db(e.to_string())
}

/// What `put_ledger` did.
enum LedgerPut {
    Written,
    /// The request was there with the same digest, path and slot; `signed`
    /// if that entry holds its signature.
    Kept {
        signed: bool,
    },
}

/// Writes `entry` into the ledger in `tx`, unless the request id is there
/// already: with the same digest, path and slot the first entry (and any
/// result it holds) stays; with others it is a `Conflict`.
fn put_ledger(
    tx: &redb::WriteTransaction,
    key: &KeyId,
    entry: &LedgerEntry,
) -> Result<LedgerPut, StorageError> {
    let slot = format!("{key}\u{0}{}", entry.request_id);
    let mut t = tx.open_table(LEDGER).map_err(dberr)?;
    let existing = match t.get(slot.as_str()).map_err(dberr)? {
        Some(v) => Some(LedgerEntry::decode(v.value())?),
        None => None,
    };
    match existing {
        Some(old)
            if old.digest != entry.digest || old.path != entry.path || old.slot != entry.slot =>
        {
            Err(StorageError::Conflict(format!(
                "request id {} was already used for a different digest, path or slot",
                entry.request_id
            )))
        }
        Some(old) => Ok(LedgerPut::Kept {
            signed: old.result.is_some(),
        }),
        None => {
            t.insert(slot.as_str(), entry.encode()?.as_slice())
                .map_err(dberr)?;
            Ok(LedgerPut::Written)
        }
    }
}

/// An open node store.
pub struct Store {
    db: Database,
    kek: Kek,
    node: NodeName,
    path: PathBuf,
    /// Opened shares for signing, by slot, with the sealed bytes each was
    /// opened from: a hit needs the stored bytes to be unchanged, so no
    /// write path has to remember to invalidate it.
    signing_shares: std::sync::Mutex<HashMap<String, OpenedShare>>,
}

/// A share opened for signing, and the sealed bytes it was opened from.
type OpenedShare = (Vec<u8>, Arc<KeyShare>);

/// Opened shares kept for signing; the cache is emptied when it would grow past this.
const SIGNING_SHARES_MAX: usize = 256;

/// What the admission of a signing session found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    Admitted,
    /// The execution id was claimed before: nothing was written.
    EidUsed,
    /// The request id is in the ledger with another digest, path or slot:
    /// nothing was written.
    RequestIdUsed(String),
    /// The request is in the ledger with its signature: a new session would
    /// only make a second one. Nothing was written.
    AlreadySigned,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// File name of the redb database inside the data directory.
    pub const DB_FILE: &'static str = "thresig.redb";

    /// Opens (or creates) the store in `dir`. The passphrase is verified first;
    /// on a wrong passphrase nothing in `dir` is written.
    pub fn open(
        dir: &Path,
        node: &NodeName,
        passphrase: &SecretBytes,
    ) -> Result<Self, StorageError> {
        std::fs::create_dir_all(dir).map_err(|source| StorageError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let kek = Kek::unlock_or_init(dir, passphrase)?;
        let path = dir.join(Self::DB_FILE);
        let db = Database::create(&path).map_err(dberr)?;
        let tx = db.begin_write().map_err(dberr)?;
        for t in [KEYS, SHARES, LEDGER, PENDING, WATERMARKS] {
            tx.open_table(t).map_err(dberr)?;
        }
        tx.open_table(EIDS).map_err(dberr)?;
        tx.open_table(audit::AUDIT).map_err(dberr)?;
        tx.open_table(audit::AUDIT_HEAD).map_err(dberr)?;
        tx.commit().map_err(dberr)?;
        let store = Self {
            db,
            kek,
            node: node.clone(),
            path,
            signing_shares: Default::default(),
        };
        let tx = store.write()?;
        store.audit_genesis(&tx)?;
        tx.commit().map_err(dberr)?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write(&self) -> Result<redb::WriteTransaction, StorageError> {
        let mut tx = self.db.begin_write().map_err(dberr)?;
        tx.set_durability(Durability::Immediate).map_err(dberr)?;
        Ok(tx)
    }

    /// Stores a new key's record and this node's sealed share atomically.
    pub fn insert_key(&self, rec: &KeyRecord, share: &KeyShare) -> Result<(), StorageError> {
        let sealed = self
            .kek
            .seal_share(share, &rec.key_id, rec.epoch, &self.node)?;
        let tx = self.write()?;
        {
            let mut keys = tx.open_table(KEYS).map_err(dberr)?;
            if keys.get(rec.key_id.as_str()).map_err(dberr)?.is_some() {
                return Err(StorageError::Conflict(format!(
                    "key {} already exists",
                    rec.key_id
                )));
            }
            keys.insert(rec.key_id.as_str(), self.seal_record(rec)?.as_slice())
                .map_err(dberr)?;
            let mut shares = tx.open_table(SHARES).map_err(dberr)?;
            shares
                .insert(
                    share_slot(&rec.key_id, rec.epoch).as_str(),
                    sealed.as_slice(),
                )
                .map_err(dberr)?;
        }
        tx.commit().map_err(dberr)
    }

    pub fn key(&self, id: &KeyId) -> Result<Option<KeyRecord>, StorageError> {
        let tx = self.db.begin_read().map_err(dberr)?;
        let t = tx.open_table(KEYS).map_err(dberr)?;
        let Some(v) = t.get(id.as_str()).map_err(dberr)? else {
            return Ok(None);
        };
        self.open_record(id, v.value()).map(Some)
    }

    pub fn keys(&self) -> Result<Vec<KeyRecord>, StorageError> {
        let tx = self.db.begin_read().map_err(dberr)?;
        let t = tx.open_table(KEYS).map_err(dberr)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(dberr)? {
            let (k, v) = item.map_err(dberr)?;
            let id = KeyId::parse(k.value()).map_err(|e| StorageError::Corrupt {
                what: "key table".into(),
                reason: e.to_string(),
            })?;
            out.push(self.open_record(&id, v.value())?);
        }
        Ok(out)
    }

    /// Unseals this node's share of `id` at `epoch`.
    pub fn share(&self, id: &KeyId, epoch: u64) -> Result<KeyShare, StorageError> {
        let sealed = self.sealed_share(id, epoch)?;
        self.kek.open_share(&sealed, id, epoch, &self.node)
    }

    fn sealed_share(&self, id: &KeyId, epoch: u64) -> Result<Vec<u8>, StorageError> {
        let tx = self.db.begin_read().map_err(dberr)?;
        let t = tx.open_table(SHARES).map_err(dberr)?;
        let v = t
            .get(share_slot(id, epoch).as_str())
            .map_err(dberr)?
            .ok_or_else(|| StorageError::NotFound(format!("share of key {id} epoch {epoch}")))?;
        Ok(v.value().to_vec())
    }

    /// The share of `id` at `epoch`, for signing. Opening a share (AEAD and
    /// decoding) costs as much as a tenth of a signature, so the opened
    /// share is kept in memory (zeroized when dropped) and reused while the
    /// sealed bytes in the store are the same; any change to them (rotation,
    /// repair, retirement, tampering) is seen on the next read.
    pub fn signing_share(&self, id: &KeyId, epoch: u64) -> Result<Arc<KeyShare>, StorageError> {
        let slot = share_slot(id, epoch);
        let sealed = self.sealed_share(id, epoch)?;
        let mut cache = self
            .signing_shares
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((bytes, share)) = cache.get(&slot) {
            if *bytes == sealed {
                return Ok(share.clone());
            }
        }
        let share = Arc::new(self.kek.open_share(&sealed, id, epoch, &self.node)?);
        // Other epochs of this key are not signed with again.
        let key_prefix = format!("{id}\u{0}");
        cache.retain(|slot, _| !slot.starts_with(&key_prefix));
        if cache.len() >= SIGNING_SHARES_MAX {
            cache.clear();
        }
        cache.insert(slot, (sealed, share.clone()));
        Ok(share)
    }

    /// Writes a rotated share as epoch `epoch` beside the active one, without
    /// activating it, remembering the rotation's execution id and
    /// confirmation. Replaces an earlier staged epoch that was never activated.
    pub fn stage_epoch(
        &self,
        id: &KeyId,
        epoch: u64,
        share: &KeyShare,
        proof: RotationProof,
        package: &[u8],
    ) -> Result<(), StorageError> {
        self.stage(id, None, epoch, share, proof, package, None)
    }

    /// Writes the share a reshare gave this node as epoch `epoch`, with the
    /// committee and threshold that take effect when it is activated. A node
    /// new to the key passes the key's current record as `joining`: it is
    /// stored in the `Joining` state in the same transaction (replacing a
    /// retired or joining record of the key, never a live one).
    #[allow(clippy::too_many_arguments)]
    pub fn stage_reshare(
        &self,
        id: &KeyId,
        joining: Option<&KeyRecord>,
        epoch: u64,
        share: &KeyShare,
        proof: RotationProof,
        package: &[u8],
        membership: Membership,
    ) -> Result<(), StorageError> {
        self.stage(id, joining, epoch, share, proof, package, Some(membership))
    }

    #[allow(clippy::too_many_arguments)]
    fn stage(
        &self,
        id: &KeyId,
        joining: Option<&KeyRecord>,
        epoch: u64,
        share: &KeyShare,
        proof: RotationProof,
        package: &[u8],
        membership: Option<Membership>,
    ) -> Result<(), StorageError> {
        let sealed = self.kek.seal_share(share, id, epoch, &self.node)?;
        let tx = self.write()?;
        {
            let mut keys = tx.open_table(KEYS).map_err(dberr)?;
            let existing = match keys.get(id.as_str()).map_err(dberr)? {
                Some(v) => Some(self.open_record(id, v.value())?),
                None => None,
            };
            let rec = match (existing, joining) {
                (Some(rec), None) => rec,
                (None, None) => return Err(StorageError::NotFound(format!("key {id}"))),
                (Some(old), Some(_))
                    if !matches!(old.state, KeyState::Retired | KeyState::Joining) =>
                {
                    return Err(StorageError::Conflict(format!(
                        "key {id} is {} here; a joining record cannot replace it",
                        old.state.label()
                    )))
                }
                (_, Some(new)) => {
                    if new.key_id != *id {
                        return Err(StorageError::Conflict(
                            "joining record names another key".into(),
                        ));
                    }
                    let mut new = new.clone();
                    new.state = KeyState::Joining;
                    keys.insert(id.as_str(), self.seal_record(&new)?.as_slice())
                        .map_err(dberr)?;
                    new
                }
            };
            if rec.epoch.checked_add(1) != Some(epoch) {
                return Err(StorageError::Conflict(format!(
                    "key {id} is at epoch {}; cannot stage epoch {epoch}",
                    rec.epoch
                )));
            }
            let mut shares = tx.open_table(SHARES).map_err(dberr)?;
            shares
                .insert(share_slot(id, epoch).as_str(), sealed.as_slice())
                .map_err(dberr)?;
            let mut pending = tx.open_table(PENDING).map_err(dberr)?;
            let body = self.seal_pending(
                id,
                &Pending {
                    epoch,
                    proof,
                    package: hex::encode(package),
                    membership,
                },
            )?;
            pending
                .insert(id.as_str(), body.as_slice())
                .map_err(dberr)?;
        }
        tx.commit().map_err(dberr)
    }

    /// The staged (not yet active) epoch of a key and the rotation that staged it.
    pub fn pending(&self, id: &KeyId) -> Result<Option<(u64, RotationProof)>, StorageError> {
        let tx = self.db.begin_read().map_err(dberr)?;
        let t = tx.open_table(PENDING).map_err(dberr)?;
        match t.get(id.as_str()).map_err(dberr)? {
            Some(v) => self
                .open_pending(id, v.value())
                .map(|p| Some((p.epoch, p.proof))),
            None => Ok(None),
        }
    }

    /// Makes the staged `epoch` the active one and deletes the old epoch's
    /// share, in one durable transaction: after a crash either the old or the
    /// new epoch is active, never a mix. `proof` must name the rotation that
    /// staged it. Returns false if that same rotation was already activated.
    pub fn activate_epoch(
        &self,
        id: &KeyId,
        epoch: u64,
        proof: RotationProof,
    ) -> Result<bool, StorageError> {
        let tx = self.write()?;
        {
            let mut keys = tx.open_table(KEYS).map_err(dberr)?;
            let mut rec = match keys.get(id.as_str()).map_err(dberr)? {
                Some(v) => self.open_record(id, v.value())?,
                None => return Err(StorageError::NotFound(format!("key {id}"))),
            };
            if rec.epoch == epoch {
                return if rec.rotation == Some(proof) {
                    Ok(false)
                } else {
                    Err(StorageError::Conflict(format!(
                        "epoch {epoch} of key {id} is active from another rotation"
                    )))
                };
            }
            let mut pending = tx.open_table(PENDING).map_err(dberr)?;
            let staged = match pending.get(id.as_str()).map_err(dberr)? {
                Some(v) => Some(self.open_pending(id, v.value())?),
                None => None,
            };
            let Some(staged) = staged.filter(|p| p.epoch == epoch) else {
                return Err(StorageError::NotFound(format!(
                    "staged epoch {epoch} of key {id}"
                )));
            };
            if staged.proof != proof {
                return Err(StorageError::Conflict(format!(
                    "epoch {epoch} of key {id} was staged by another rotation"
                )));
            }
            let old = rec.epoch;
            rec.epoch = epoch;
            rec.package = staged.package;
            rec.rotation = Some(proof);
            if let Some(m) = staged.membership {
                rec.committee = m.committee;
                rec.threshold = m.threshold;
            }
            if matches!(rec.state, KeyState::Repairing | KeyState::Joining) {
                rec.state = KeyState::Active;
            }
            keys.insert(id.as_str(), self.seal_record(&rec)?.as_slice())
                .map_err(dberr)?;
            pending.remove(id.as_str()).map_err(dberr)?;
            let mut shares = tx.open_table(SHARES).map_err(dberr)?;
            shares.remove(share_slot(id, old).as_str()).map_err(dberr)?;
        }
        tx.commit().map_err(dberr)?;
        Ok(true)
    }

    /// Forgets the epoch staged by rotation `eid` (an abandoned rotation), so
    /// it can never be activated. Returns whether anything was staged by it.
    pub fn discard_staged(&self, id: &KeyId, eid: &[u8; 32]) -> Result<bool, StorageError> {
        let tx = self.write()?;
        let found = {
            let mut keys = tx.open_table(KEYS).map_err(dberr)?;
            let rec = match keys.get(id.as_str()).map_err(dberr)? {
                Some(v) => self.open_record(id, v.value())?,
                None => return Err(StorageError::NotFound(format!("key {id}"))),
            };
            let mut pending = tx.open_table(PENDING).map_err(dberr)?;
            let staged = match pending.get(id.as_str()).map_err(dberr)? {
                Some(v) => Some(self.open_pending(id, v.value())?),
                None => None,
            };
            match staged {
                Some(p) if p.proof.eid == *eid && p.epoch != rec.epoch => {
                    pending.remove(id.as_str()).map_err(dberr)?;
                    let mut shares = tx.open_table(SHARES).map_err(dberr)?;
                    shares
                        .remove(share_slot(id, p.epoch).as_str())
                        .map_err(dberr)?;
                    if rec.state == KeyState::Joining {
                        // It only ever held the abandoned reshare's share.
                        keys.remove(id.as_str()).map_err(dberr)?;
                    }
                    true
                }
                _ => false,
            }
        };
        tx.commit().map_err(dberr)?;
        Ok(found)
    }

    /// Deletes a key's record, its active share and anything staged (used only
    /// to retry a repair that did not complete).
    pub fn remove_key(&self, id: &KeyId) -> Result<(), StorageError> {
        let tx = self.write()?;
        {
            let mut keys = tx.open_table(KEYS).map_err(dberr)?;
            let rec = match keys.get(id.as_str()).map_err(dberr)? {
                Some(v) => self.open_record(id, v.value())?,
                None => return Ok(()),
            };
            self.drop_shares(&tx, id, rec.epoch)?;
            keys.remove(id.as_str()).map_err(dberr)?;
        }
        tx.commit().map_err(dberr)
    }

    /// Inside `tx`: deletes the share of `active` and any staged epoch of
    /// `id`, and the staged-epoch entry.
    fn drop_shares(
        &self,
        tx: &redb::WriteTransaction,
        id: &KeyId,
        active: u64,
    ) -> Result<(), StorageError> {
        let mut pending = tx.open_table(PENDING).map_err(dberr)?;
        let staged = match pending.get(id.as_str()).map_err(dberr)? {
            Some(v) => self.open_pending(id, v.value()).ok().map(|p| p.epoch),
            None => None,
        };
        let mut shares = tx.open_table(SHARES).map_err(dberr)?;
        let mut opened = self
            .signing_shares
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for epoch in std::iter::once(active).chain(staged) {
            let slot = share_slot(id, epoch);
            shares.remove(slot.as_str()).map_err(dberr)?;
            opened.remove(&slot);
        }
        pending.remove(id.as_str()).map_err(dberr)?;
        Ok(())
    }

    /// Retires this node's share of a key that a reshare moved to another
    /// committee: the active and any staged share are deleted and the record
    /// kept as `Retired`, in one transaction. Returns false if already retired.
    pub fn retire(&self, id: &KeyId) -> Result<bool, StorageError> {
        let tx = self.write()?;
        {
            let mut keys = tx.open_table(KEYS).map_err(dberr)?;
            let mut rec = match keys.get(id.as_str()).map_err(dberr)? {
                Some(v) => self.open_record(id, v.value())?,
                None => return Err(StorageError::NotFound(format!("key {id}"))),
            };
            if rec.state == KeyState::Retired {
                return Ok(false);
            }
            self.drop_shares(&tx, id, rec.epoch)?;
            rec.state = KeyState::Retired;
            keys.insert(id.as_str(), self.seal_record(&rec)?.as_slice())
                .map_err(dberr)?;
        }
        tx.commit().map_err(dberr)?;
        Ok(true)
    }

    /// Whether a sealed share of `epoch` is stored (without opening it).
    pub fn has_share(&self, id: &KeyId, epoch: u64) -> Result<bool, StorageError> {
        let tx = self.db.begin_read().map_err(dberr)?;
        let t = tx.open_table(SHARES).map_err(dberr)?;
        Ok(t.get(share_slot(id, epoch).as_str())
            .map_err(dberr)?
            .is_some())
    }

    /// Changes a key's state (freeze on an unattributable abort).
    pub fn set_state(&self, id: &KeyId, state: KeyState) -> Result<(), StorageError> {
        let tx = self.write()?;
        {
            let mut keys = tx.open_table(KEYS).map_err(dberr)?;
            let mut rec = match keys.get(id.as_str()).map_err(dberr)? {
                Some(v) => self.open_record(id, v.value())?,
                None => return Err(StorageError::NotFound(format!("key {id}"))),
            };
            rec.state = state;
            keys.insert(id.as_str(), self.seal_record(&rec)?.as_slice())
                .map_err(dberr)?;
        }
        tx.commit().map_err(dberr)
    }

    /// Whether an execution id was recorded before (read only).
    pub fn eid_used(&self, eid: &ExecutionId) -> Result<bool, StorageError> {
        let tx = self.db.begin_read().map_err(dberr)?;
        let t = tx.open_table(EIDS).map_err(dberr)?;
        Ok(t.get(eid.as_bytes().as_slice()).map_err(dberr)?.is_some())
    }

    /// Durably records an execution id. Returns false if it was seen before.
    pub fn claim_eid(&self, eid: &ExecutionId, now_unix: u64) -> Result<bool, StorageError> {
        let tx = self.write()?;
        let fresh = {
            let mut t = tx.open_table(EIDS).map_err(dberr)?;
            if t.get(eid.as_bytes().as_slice()).map_err(dberr)?.is_some() {
                false
            } else {
                t.insert(eid.as_bytes().as_slice(), now_unix)
                    .map_err(dberr)?;
                true
            }
        };
        if fresh {
            tx.commit().map_err(dberr)?;
        } else {
            tx.abort().map_err(dberr)?;
        }
        Ok(fresh)
    }

    /// Durably records that this node is about to release its partial
    /// signature for `entry`. A different digest under the same request id
    /// is refused.
    /// (Signing writes the entry in `admit_sign`; this stands alone for tests.)
    #[cfg(test)]
    pub(crate) fn ledger_commit(
        &self,
        key: &KeyId,
        entry: &LedgerEntry,
    ) -> Result<(), StorageError> {
        let tx = self.write()?;
        if let Err(e) = put_ledger(&tx, key, entry) {
            tx.abort().map_err(dberr)?;
            return Err(e);
        }
        tx.commit().map_err(dberr)
    }

    /// Records the finished signature of a request already in the ledger,
    /// without waiting for the disk: the result becomes durable with the
    /// next durable commit (the next admission). What a
    /// crash in between loses is only the recorded result, a cache of a
    /// public value: the entry itself, which binds the request id to its
    /// digest, was durable before any partial signature left.
    pub fn ledger_complete_lazy(
        &self,
        key: &KeyId,
        request_id: &str,
        result: LedgerResult,
    ) -> Result<(), StorageError> {
        let slot = format!("{key}\u{0}{request_id}");
        let mut tx = self.db.begin_write().map_err(dberr)?;
        tx.set_durability(Durability::None).map_err(dberr)?;
        {
            let mut t = tx.open_table(LEDGER).map_err(dberr)?;
            let mut entry = match t.get(slot.as_str()).map_err(dberr)? {
                Some(v) => LedgerEntry::decode(v.value())?,
                None => {
                    return Err(StorageError::NotFound(format!(
                        "ledger entry {request_id} of key {key}"
                    )))
                }
            };
            entry.result = Some(result);
            t.insert(slot.as_str(), entry.encode()?.as_slice())
                .map_err(dberr)?;
        }
        tx.commit().map_err(dberr)
    }

    /// Double-sign protection: durably raises the watermark of (`key`,
    /// `scope`) to `position` for `digest`. Refuses a position below the
    /// watermark, and the watermark's own position with another digest; the
    /// same position with the same digest (a re-sign) is allowed.
    pub fn watermark_commit(
        &self,
        key: &KeyId,
        scope: &str,
        position: (u64, u64, u64),
        digest: [u8; 32],
        request_id: &str,
    ) -> Result<(), StorageError> {
        let tx = self.write()?;
        self.raise_watermark(
            &tx,
            &SlotClaim {
                key,
                scope,
                position,
                digest,
                request_id,
            },
        )?;
        tx.commit().map_err(dberr)
    }

    /// The watermark rule of `watermark_commit`, inside a write transaction.
    fn raise_watermark(
        &self,
        tx: &redb::WriteTransaction,
        c: &SlotClaim<'_>,
    ) -> Result<(), StorageError> {
        let (key, scope, position) = (c.key, c.scope, c.position);
        let slot = format!("{key}\u{0}{scope}");
        let mut t = tx.open_table(WATERMARKS).map_err(dberr)?;
        let current: Option<Watermark> = match t.get(slot.as_str()).map_err(dberr)? {
            Some(v) => Some(self.open_mac_json(key, "slot watermark", v.value())?),
            None => None,
        };
        if let Some(w) = &current {
            let at = (w.height, w.round, w.step);
            let (h, r, st) = at;
            if position < at {
                return Err(StorageError::Conflict(format!(
                    "slot {scope} {}/{}/{} of key {key} is below its watermark {h}/{r}/{st} (double-sign protection)",
                    position.0, position.1, position.2
                )));
            }
            if position == at && w.digest != c.digest {
                return Err(StorageError::Conflict(format!(
                    "slot {scope} {h}/{r}/{st} of key {key} was already signed for another digest (request {}); refused (double-sign protection)",
                    w.request_id
                )));
            }
            if position == at {
                return Ok(());
            }
        }
        let w = Watermark {
            height: position.0,
            round: position.1,
            step: position.2,
            digest: c.digest,
            request_id: c.request_id.to_owned(),
        };
        t.insert(slot.as_str(), self.seal_mac_json(key, &w)?.as_slice())
            .map_err(dberr)?;
        Ok(())
    }

    /// Admits a signing session in one durable transaction: claims `eid`
    /// (`EidUsed` if it was used before), writes the request's ledger entry
    /// (`RequestIdUsed` if the id is there with another digest, path or
    /// slot; `AlreadySigned` if it is there with its signature), raises the
    /// slot watermark if there is one (a conflict is a `Conflict` error), and
    /// appends the audit entry saying so. Any refusal writes nothing. One
    /// disk sync for all of it.
    pub fn admit_sign(
        &self,
        eid: &ExecutionId,
        now_unix: u64,
        ledger: (&KeyId, &LedgerEntry),
        slot: Option<SlotClaim<'_>>,
        event: AuditEvent,
    ) -> Result<Admission, StorageError> {
        let tx = self.write()?;
        {
            let mut t = tx.open_table(EIDS).map_err(dberr)?;
            if t.get(eid.as_bytes().as_slice()).map_err(dberr)?.is_some() {
                drop(t);
                tx.abort().map_err(dberr)?;
                return Ok(Admission::EidUsed);
            }
            t.insert(eid.as_bytes().as_slice(), now_unix)
                .map_err(dberr)?;
        }
        match put_ledger(&tx, ledger.0, ledger.1) {
            Ok(LedgerPut::Written | LedgerPut::Kept { signed: false }) => {}
            Ok(LedgerPut::Kept { signed: true }) => {
                tx.abort().map_err(dberr)?;
                return Ok(Admission::AlreadySigned);
            }
            Err(StorageError::Conflict(m)) => {
                tx.abort().map_err(dberr)?;
                return Ok(Admission::RequestIdUsed(m));
            }
            Err(e) => return Err(e),
        }
        if let Some(c) = &slot {
            self.raise_watermark(&tx, c)?;
        }
        self.append_audit(&tx, event, now_unix)?;
        tx.commit().map_err(dberr)?;
        Ok(Admission::Admitted)
    }

    /// The slot watermark of (`key`, `scope`), if any.
    pub fn watermark(&self, key: &KeyId, scope: &str) -> Result<Option<Watermark>, StorageError> {
        let slot = format!("{key}\u{0}{scope}");
        let tx = self.db.begin_read().map_err(dberr)?;
        let t = tx.open_table(WATERMARKS).map_err(dberr)?;
        match t.get(slot.as_str()).map_err(dberr)? {
            Some(v) => self
                .open_mac_json(key, "slot watermark", v.value())
                .map(Some),
            None => Ok(None),
        }
    }

    pub fn ledger_get(
        &self,
        key: &KeyId,
        request_id: &str,
    ) -> Result<Option<LedgerEntry>, StorageError> {
        let slot = format!("{key}\u{0}{request_id}");
        let tx = self.db.begin_read().map_err(dberr)?;
        let t = tx.open_table(LEDGER).map_err(dberr)?;
        match t.get(slot.as_str()).map_err(dberr)? {
            Some(v) => LedgerEntry::decode(v.value()).map(Some),
            None => Ok(None),
        }
    }
}

impl Store {
    /// A key record as stored: JSON followed by a MAC under the KEK.
    fn seal_record(&self, rec: &KeyRecord) -> Result<Vec<u8>, StorageError> {
        let mut body = rec.encode()?;
        let mac = self.kek.record_mac(&rec.key_id, &body)?;
        body.extend_from_slice(&mac);
        Ok(body)
    }

    fn open_record(&self, id: &KeyId, raw: &[u8]) -> Result<KeyRecord, StorageError> {
        let corrupt = |reason: &str| StorageError::Corrupt {
            what: format!("record of key {id}"),
            reason: reason.into(),
        };
        let split = raw
            .len()
            .checked_sub(32)
            .ok_or_else(|| corrupt("too short"))?;
        let (body, mac) = raw.split_at(split);
        let expected = self.kek.record_mac(id, body)?;
        if !subtle_eq(&expected, mac) {
            return Err(corrupt(
                "authentication failed (edited, or copied from another key)",
            ));
        }
        let rec = KeyRecord::decode(body)?;
        if rec.key_id != *id {
            return Err(corrupt("record names another key"));
        }
        Ok(rec)
    }
}

/// Constant-time comparison of a computed MAC with a stored one.
fn subtle_eq(a: &[u8; 32], b: &[u8]) -> bool {
    b.len() == 32 && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A slot a signing session claims: raise (`key`, `scope`) to `position`
/// for `digest`.
#[derive(Debug, Clone, Copy)]
pub struct SlotClaim<'a> {
    pub key: &'a KeyId,
    pub scope: &'a str,
    pub position: (u64, u64, u64),
    pub digest: [u8; 32],
    pub request_id: &'a str,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Pending {
    epoch: u64,
    proof: RotationProof,
    package: String,
    /// The committee and threshold a reshare moves the key to (none for a rotation).
    #[serde(default)]
    membership: Option<Membership>,
}

/// A key's committee (node names in party order) and threshold.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Membership {
    pub committee: Vec<String>,
    pub threshold: u8,
}

impl Store {
    /// A small record as stored: JSON followed by a MAC under the KEK, bound
    /// to the key id.
    fn seal_mac_json<T: serde::Serialize>(
        &self,
        id: &KeyId,
        v: &T,
    ) -> Result<Vec<u8>, StorageError> {
        let mut body = serde_json::to_vec(v).map_err(|e| StorageError::Db(e.to_string()))?;
        let mac = self.kek.record_mac(id, &body)?;
        body.extend_from_slice(&mac);
        Ok(body)
    }

    fn open_mac_json<T: serde::de::DeserializeOwned>(
        &self,
        id: &KeyId,
        what: &str,
        raw: &[u8],
    ) -> Result<T, StorageError> {
        let corrupt = |reason: String| StorageError::Corrupt {
            what: format!("{what} of key {id}"),
            reason,
        };
        let split = raw
            .len()
            .checked_sub(32)
            .ok_or_else(|| corrupt("too short".into()))?;
        let (body, mac) = raw.split_at(split);
        if !subtle_eq(&self.kek.record_mac(id, body)?, mac) {
            return Err(corrupt("authentication failed".into()));
        }
        serde_json::from_slice(body).map_err(|e| corrupt(e.to_string()))
    }

    fn seal_pending(&self, id: &KeyId, p: &Pending) -> Result<Vec<u8>, StorageError> {
        self.seal_mac_json(id, p)
    }

    fn open_pending(&self, id: &KeyId, raw: &[u8]) -> Result<Pending, StorageError> {
        self.open_mac_json(id, "staged epoch", raw)
    }
}

fn share_slot(id: &KeyId, epoch: u64) -> String {
    format!("{id}\u{0}{epoch:020}")
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod format_tests;
