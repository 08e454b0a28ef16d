//! The node's store: one redb file for records and sealed shares, plus a small
//! `store.meta` file holding the KDF salt and a passphrase check. The
//! passphrase is checked against `store.meta` before the database is opened,
//! so a wrong passphrase never touches the store. No network, no protocol
//! logic here; shares arrive and leave as opaque secret bytes (the protocol
//! module encodes them), and the key's record says their key type.
//!
//! The rooms: `keys.rs` (records and shares), `epochs.rs` (staging,
//! activation, retirement), `ledger.rs` (ledger, watermarks, eids and the
//! admission transaction), `rules.rs` (the double-sign and ledger rules,
//! pure), `audit.rs` (the MAC-chained audit log), `seal.rs` (the KEK and
//! AEAD sealing of shares), `mac.rs` (MACed public values), `records.rs`
//! (the stored encodings), `bans.rs` (nodes this node no longer signs a key
//! with), `backup.rs` (backup files, and the marks a restore leaves).

mod audit;
mod backup;
mod bans;
mod eids;
mod epochs;
mod keys;
mod ledger;
mod mac;
mod migrate;
mod records;
pub mod rules;
mod seal;
mod windows;

use std::path::{Path, PathBuf};

use redb::{Database, Durability, TableDefinition};

pub use audit::{AuditEntry, AuditEvent, AuditReport};
pub use backup::{
    backup_header, restore_backup, verify_backup, BackupInfo, BackupKey, Restored, BACKUP_FORMAT,
};
pub use bans::{Ban, Elimination};
pub use eids::GRACE as EID_GRACE;
pub use epochs::{release_open_for, Membership, Staged};
pub use ledger::{Admission, SlotClaim};
pub use records::{KeyRecord, KeyState, LedgerEntry, LedgerResult, RotationProof, Watermark};
pub use windows::WindowClaim;

/// Schema version written into new records.
pub fn records_schema() -> u16 {
    records::SCHEMA
}
pub use migrate::Migrated;
pub use seal::{Kek, STORE_FORMAT};

use crate::domain::{KeyId, NodeName};
use crate::secret::SecretBytes;

const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("keys");
const SHARES: TableDefinition<&str, &[u8]> = TableDefinition::new("shares");
const EIDS: TableDefinition<&[u8], u64> = TableDefinition::new("eids");
const LEDGER: TableDefinition<&str, &[u8]> = TableDefinition::new("ledger");
/// key id -> the epoch staged by a rotation that has not been activated yet.
const PENDING: TableDefinition<&str, &[u8]> = TableDefinition::new("pending");
/// "key\0scope" -> the slot watermark (MACed JSON).
const WATERMARKS: TableDefinition<&str, &[u8]> = TableDefinition::new("watermarks");
/// "key\0scope" -> the client's signed request that set the slot watermark
/// (opaque bytes from the node; it authenticates itself by the client's
/// signature), shown when this node refuses a conflicting slot.
const SLOT_EVIDENCE: TableDefinition<&str, &[u8]> = TableDefinition::new("slot_evidence");
/// Key id -> the last freeze, unfreeze or delete applied here (opaque JSON
/// from the node, MACed), to hand to a node that missed it.
const LIFECYCLE: TableDefinition<&str, &[u8]> = TableDefinition::new("lifecycle");
/// Admin request id -> the coordinator nonce it was first used under.
const ADMIN_REQUESTS: TableDefinition<&str, &[u8]> = TableDefinition::new("admin_requests");
/// Key id -> the activation certificate of the key's active epoch (opaque
/// bytes from the node, MACed): every member's signed staging receipt, to
/// hand to a member that missed the activation.
const ACTIVATIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("activations");

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
    #[error(
        "{} is store format {found}; this thresig reads formats up to {supported} (upgrade \
         thresig; the store was left untouched)",
        path.display()
    )]
    UnsupportedFormat {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("{0} not found")]
    NotFound(String),
    #[error("conflict: {0}")]
    Conflict(String),
    /// Double-sign protection: the slot was signed for another digest.
    #[error("{0}")]
    SlotOtherDigest(String),
    /// Double-sign protection: the slot is below its watermark.
    #[error("{0}")]
    SlotBelowWatermark(String),
    /// A rolling-window limit would be passed.
    #[error("{0}")]
    WindowExceeded(String),
}

fn dberr<E: std::fmt::Display>(e: E) -> StorageError {
    StorageError::Db(e.to_string())
}

/// An open node store.
pub struct Store {
    db: Database,
    kek: Kek,
    node: NodeName,
    path: PathBuf,
    /// Whether any key carries a restore mark (`backup.rs`): while none
    /// does, which is always but after a restore, the signing path's check
    /// costs no read.
    restore_marks: std::sync::atomic::AtomicBool,
    /// Key records already opened (`mac.rs`).
    opened_records: mac::OpenedRecords,
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
        let unlocked = seal::unlock_or_init(dir, passphrase)?;
        let path = dir.join(Self::DB_FILE);
        let db = Database::create(&path).map_err(|e| open_error(&path, e))?;
        let mut tx = db.begin_write().map_err(dberr)?;
        for t in [
            KEYS,
            SHARES,
            LEDGER,
            PENDING,
            WATERMARKS,
            ADMIN_REQUESTS,
            LIFECYCLE,
            ACTIVATIONS,
            SLOT_EVIDENCE,
        ] {
            tx.open_table(t).map_err(dberr)?;
        }
        tx.open_table(bans::BANS).map_err(dberr)?;
        tx.open_table(bans::ELIMINATIONS).map_err(dberr)?;
        tx.open_table(backup::RESTORED).map_err(dberr)?;
        tx.open_table(EIDS).map_err(dberr)?;
        tx.open_table(eids::SIGN_EID_EXPIRY).map_err(dberr)?;
        tx.open_table(eids::EID_HORIZON).map_err(dberr)?;
        tx.open_table(audit::AUDIT).map_err(dberr)?;
        tx.open_table(audit::AUDIT_HEAD).map_err(dberr)?;
        tx.open_table(windows::WINDOWS).map_err(dberr)?;
        let kek = Kek::derive(&unlocked.root, STORE_FORMAT)?;
        // A database without a format mark is format 1, unless its meta file
        // was just written at the current format (a new store). The mark and
        // the rewritten contents commit together; the meta file follows, so
        // a crash in between leaves a format-2 database beside a format-1
        // meta file, which the next open completes.
        let migrated = match (migrate::db_format(&tx)?, unlocked.meta_format) {
            (None, meta) if meta == STORE_FORMAT => {
                migrate::mark_format(&tx, STORE_FORMAT)?;
                None
            }
            (None | Some(1), _) => {
                let old = Kek::derive(&unlocked.root, 1)?;
                Some(migrate::v1_to_v2(&tx, &old, &kek, node)?)
            }
            (Some(f), _) if f == STORE_FORMAT => None,
            (Some(found), _) => {
                return Err(StorageError::UnsupportedFormat {
                    path,
                    found,
                    supported: STORE_FORMAT,
                })
            }
        };
        tx.set_durability(Durability::Immediate).map_err(dberr)?;
        tx.commit().map_err(dberr)?;
        if unlocked.meta_format != STORE_FORMAT {
            seal::upgrade_meta(dir, &unlocked.root)?;
        }
        drop(unlocked);
        let store = Self {
            db,
            kek,
            node: node.clone(),
            path,
            restore_marks: std::sync::atomic::AtomicBool::new(false),
            opened_records: Default::default(),
        };
        store.restore_marks.store(
            store.any_restore_marks()?,
            std::sync::atomic::Ordering::Release,
        );
        let tx = store.write()?;
        store.audit_genesis(&tx)?;
        tx.commit().map_err(dberr)?;
        if let Some(m) = migrated {
            tracing::info!(
                store = %store.path.display(),
                values = m.values,
                shares = m.shares,
                audit_entries = m.audit_entries,
                left_bad = m.left_bad,
                "store migrated from format 1 to format {STORE_FORMAT} (HKDF subkeys)"
            );
            let unix = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            store.audit_append(
                AuditEvent {
                    kind: "store.migrate".into(),
                    actor: format!("node/{node}"),
                    decision: "ok".into(),
                    detail: format!(
                        "format 1 -> {STORE_FORMAT}: {} values, {} shares and {} audit entries \
                         rewritten under HKDF subkeys; {} left as they were (they did not \
                         authenticate before)",
                        m.values, m.shares, m.audit_entries, m.left_bad
                    ),
                    ..AuditEvent::default()
                },
                unix,
            )?;
        }
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
}

/// Why the database file at `path` did not open, naming it.
fn open_error(path: &Path, e: redb::DatabaseError) -> StorageError {
    match e {
        redb::DatabaseError::Storage(redb::StorageError::Corrupted(why)) => StorageError::Corrupt {
            what: path.display().to_string(),
            reason: format!(
                "{why} (the store cannot be opened; restore it from a backup, or move it away and \
                 have the committee rebuild this node's shares with `thresig keys repair`)"
            ),
        },
        redb::DatabaseError::Storage(redb::StorageError::Io(source)) => StorageError::Io {
            path: path.to_owned(),
            source,
        },
        redb::DatabaseError::DatabaseAlreadyOpen => StorageError::Db(format!(
            "{} is open in another process (is a node already running on this data directory?)",
            path.display()
        )),
        other => StorageError::Db(format!("{}: {other}", path.display())),
    }
}

fn share_slot(id: &KeyId, epoch: u64) -> String {
    format!("{id}\u{0}{epoch:020}")
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod format_tests;

#[cfg(test)]
mod backup_tests;

#[cfg(test)]
mod window_tests;
