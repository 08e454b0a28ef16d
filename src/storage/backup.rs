//! Backups of a node's store, and the marks a restore leaves (checklist 26).
//!
//! A backup is one file: a magic line, a JSON header (format version, node,
//! when, which keys at which epochs), the store's `store.meta` and a
//! consistent copy of its database (every table copied in one read
//! transaction), then an HMAC-SHA256 over all of it under a key derived from
//! the store's KEK. Shares stay sealed under the KEK as they are in the
//! store, so the file holds no share in the clear and nobody without the
//! passphrase can read, forge or alter it.
//!
//! A restore writes the files into an empty data directory and marks every
//! key it holds as restored: the node does not serve such a key until its
//! committee has confirmed the key's epoch and handed over its slot
//! watermarks (`node/restored.rs`). A backup older than a rotation thus
//! never brings the old epoch back, and a slot signed after the backup is
//! never signed again below its watermark.

use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::Ordering;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::{dberr, StorageError, Store, Watermark, WATERMARKS};
use crate::domain::{KeyId, NodeName};
use crate::secret::SecretBytes;

/// The first line of every backup file.
const MAGIC: &[u8] = b"THRESIG-BACKUP\n";
/// The backup format this build writes and reads.
pub const BACKUP_FORMAT: u32 = 1;
const MAC_LEN: usize = 32;

/// Key id -> the restore that marked it (MACed JSON): not served until its
/// committee confirms it.
pub(super) const RESTORED: TableDefinition<&str, &[u8]> = TableDefinition::new("restored");

/// What a backup holds, from its header.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BackupInfo {
    pub format: u32,
    pub node: String,
    pub created_unix: u64,
    pub store_format: u32,
    pub keys: Vec<BackupKey>,
    meta_len: u64,
    db_len: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BackupKey {
    pub key_id: String,
    pub epoch: u64,
    pub state: String,
}

/// The mark a restore leaves on a key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Restored {
    /// When the backup was taken (Unix seconds).
    pub backup_unix: u64,
    /// The key's epoch in the backup.
    pub epoch: u64,
}

fn corrupt(reason: impl Into<String>) -> StorageError {
    StorageError::Corrupt {
        what: "backup file".into(),
        reason: reason.into(),
    }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> StorageError + '_ {
    move |source| StorageError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Copies every row of `def` from `from` into `to`.
macro_rules! copy_table {
    ($from:expr, $to:expr, $def:expr) => {{
        let src = $from.open_table($def).map_err(dberr)?;
        let mut dst = $to.open_table($def).map_err(dberr)?;
        for item in src.iter().map_err(dberr)? {
            let (k, v) = item.map_err(dberr)?;
            dst.insert(k.value(), v.value()).map_err(dberr)?;
        }
    }};
}

impl Store {
    /// A backup of this store, consistent as of one read transaction; the
    /// node keeps running meanwhile.
    pub fn backup(&self, now_unix: u64) -> Result<Vec<u8>, StorageError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let meta = std::fs::read(dir.join(super::seal::META_FILE))
            .map_err(io(&dir.join(super::seal::META_FILE)))?;
        let tmp = tempfile::tempdir_in(dir).map_err(io(dir))?;
        let copy = tmp.path().join(Self::DB_FILE);
        let keys = {
            let snapshot = self.db.begin_read().map_err(dberr)?;
            let db = Database::create(&copy).map_err(dberr)?;
            let w = db.begin_write().map_err(dberr)?;
            copy_table!(snapshot, w, super::KEYS);
            copy_table!(snapshot, w, super::SHARES);
            copy_table!(snapshot, w, super::LEDGER);
            copy_table!(snapshot, w, super::PENDING);
            copy_table!(snapshot, w, WATERMARKS);
            copy_table!(snapshot, w, super::SLOT_EVIDENCE);
            copy_table!(snapshot, w, super::windows::WINDOWS);
            copy_table!(snapshot, w, super::ADMIN_REQUESTS);
            copy_table!(snapshot, w, super::LIFECYCLE);
            copy_table!(snapshot, w, super::ACTIVATIONS);
            copy_table!(snapshot, w, super::bans::BANS);
            copy_table!(snapshot, w, super::bans::ELIMINATIONS);
            copy_table!(snapshot, w, super::EIDS);
            copy_table!(snapshot, w, super::eids::SIGN_EID_EXPIRY);
            copy_table!(snapshot, w, super::eids::EID_HORIZON);
            copy_table!(snapshot, w, super::audit::AUDIT);
            copy_table!(snapshot, w, super::audit::AUDIT_HEAD);
            copy_table!(snapshot, w, RESTORED);
            w.commit().map_err(dberr)?;
            let t = snapshot.open_table(super::KEYS).map_err(dberr)?;
            let mut keys = Vec::new();
            for item in t.iter().map_err(dberr)? {
                let (k, v) = item.map_err(dberr)?;
                let id = KeyId::parse(k.value()).map_err(|e| corrupt(e.to_string()))?;
                let rec = self.open_record(&id, v.value())?;
                keys.push(BackupKey {
                    key_id: id.to_string(),
                    epoch: rec.epoch,
                    state: rec.state.label().to_owned(),
                });
            }
            keys
        };
        let db = std::fs::read(&copy).map_err(io(&copy))?;
        let info = BackupInfo {
            format: BACKUP_FORMAT,
            node: self.node.to_string(),
            created_unix: now_unix,
            store_format: super::STORE_FORMAT,
            keys,
            meta_len: meta.len() as u64,
            db_len: db.len() as u64,
        };
        let mut out = MAGIC.to_vec();
        serde_json::to_writer(&mut out, &info).map_err(|e| StorageError::Db(e.to_string()))?;
        out.push(b'\n');
        out.extend_from_slice(&meta);
        out.extend_from_slice(&db);
        let mac = self.kek.backup_mac(&out)?;
        out.extend_from_slice(&mac);
        Ok(out)
    }

    /// Marks every key in this store as restored from a backup taken at
    /// `backup_unix` (see the module doc), and audits the restore.
    fn mark_restored(&self, backup_unix: u64, now_unix: u64) -> Result<usize, StorageError> {
        let keys = self.keys()?;
        let tx = self.write()?;
        {
            let mut t = tx.open_table(RESTORED).map_err(dberr)?;
            for rec in &keys {
                let mark = Restored {
                    backup_unix,
                    epoch: rec.epoch,
                };
                let body = self.seal_mac_json(&rec.key_id, &mark)?;
                t.insert(rec.key_id.as_str(), body.as_slice())
                    .map_err(dberr)?;
            }
        }
        let event = super::AuditEvent {
            kind: "store.restore".into(),
            actor: format!("node/{}", self.node),
            decision: "ok".into(),
            detail: format!(
                "restored from a backup taken at Unix {backup_unix}; keys held until their \
                 committee confirms them: {}",
                keys.iter()
                    .map(|r| format!("{} (epoch {})", r.key_id, r.epoch))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            ..super::AuditEvent::default()
        };
        self.append_audit(&tx, event, now_unix)?;
        tx.commit().map_err(dberr)?;
        self.restore_marks
            .store(!keys.is_empty(), Ordering::Release);
        Ok(keys.len())
    }

    /// Whether any key in the store carries a restore mark.
    pub(super) fn any_restore_marks(&self) -> Result<bool, StorageError> {
        let tx = self.db.begin_read().map_err(dberr)?;
        let t = tx.open_table(RESTORED).map_err(dberr)?;
        Ok(!t.is_empty().map_err(dberr)?)
    }

    /// The restore mark of `key`, if it has one.
    pub fn restored(&self, key: &KeyId) -> Result<Option<Restored>, StorageError> {
        if !self.restore_marks.load(Ordering::Acquire) {
            return Ok(None);
        }
        let tx = self.db.begin_read().map_err(dberr)?;
        let t = tx.open_table(RESTORED).map_err(dberr)?;
        match t.get(key.as_str()).map_err(dberr)? {
            Some(v) => self.open_mac_json(key, "restore mark", v.value()).map(Some),
            None => Ok(None),
        }
    }

    /// Takes the committee's slot watermarks for `key` (`marks`: scope and
    /// watermark, any number per scope; the highest counts, and a watermark
    /// here that is higher stays) and lifts its restore mark, in one
    /// transaction.
    pub fn confirm_restored(
        &self,
        key: &KeyId,
        marks: &[(String, Watermark)],
    ) -> Result<(), StorageError> {
        let tx = self.write()?;
        {
            let mut t = tx.open_table(WATERMARKS).map_err(dberr)?;
            for (scope, mark) in marks {
                let slot = format!("{key}\u{0}{scope}");
                let ours: Option<Watermark> = match t.get(slot.as_str()).map_err(dberr)? {
                    Some(v) => Some(self.open_mac_json(key, "slot watermark", v.value())?),
                    None => None,
                };
                let pos = |w: &Watermark| (w.height, w.round, w.step);
                if ours.as_ref().is_none_or(|o| pos(mark) > pos(o)) {
                    let body = self.seal_mac_json(key, mark)?;
                    t.insert(slot.as_str(), body.as_slice()).map_err(dberr)?;
                    // The evidence kept here was for the lower watermark.
                    tx.open_table(super::SLOT_EVIDENCE)
                        .map_err(dberr)?
                        .remove(slot.as_str())
                        .map_err(dberr)?;
                }
            }
            let mut r = tx.open_table(RESTORED).map_err(dberr)?;
            r.remove(key.as_str()).map_err(dberr)?;
        }
        tx.commit().map_err(dberr)?;
        self.restore_marks
            .store(self.any_restore_marks()?, Ordering::Release);
        Ok(())
    }

    /// Every slot watermark of `key` here: (scope, watermark).
    pub fn watermarks(&self, key: &KeyId) -> Result<Vec<(String, Watermark)>, StorageError> {
        let prefix = format!("{key}\u{0}");
        let tx = self.db.begin_read().map_err(dberr)?;
        let t = tx.open_table(WATERMARKS).map_err(dberr)?;
        let mut out = Vec::new();
        for item in t.range(prefix.as_str()..).map_err(dberr)? {
            let (k, v) = item.map_err(dberr)?;
            let Some(scope) = k.value().strip_prefix(prefix.as_str()) else {
                break;
            };
            out.push((
                scope.to_owned(),
                self.open_mac_json(key, "slot watermark", v.value())?,
            ));
        }
        Ok(out)
    }
}

/// The parts of a backup file, its MAC not yet checked.
struct Parts<'a> {
    info: BackupInfo,
    meta: &'a [u8],
    db: &'a [u8],
    signed: &'a [u8],
    mac: &'a [u8],
}

fn split(file: &[u8]) -> Result<Parts<'_>, StorageError> {
    let rest = file
        .strip_prefix(MAGIC)
        .ok_or_else(|| corrupt("not a thresig backup (no THRESIG-BACKUP line)"))?;
    let nl = rest
        .iter()
        .position(|b| *b == b'\n')
        .ok_or_else(|| corrupt("no header line"))?;
    let info: BackupInfo = serde_json::from_slice(&rest[..nl])
        .map_err(|e| corrupt(format!("header does not parse: {e}")))?;
    if info.format != BACKUP_FORMAT {
        return Err(corrupt(format!(
            "backup format {}; this thresig reads format {BACKUP_FORMAT}",
            info.format
        )));
    }
    let body = &rest[nl + 1..];
    let (meta_len, db_len) = (
        usize::try_from(info.meta_len).map_err(|_| corrupt("header lengths"))?,
        usize::try_from(info.db_len).map_err(|_| corrupt("header lengths"))?,
    );
    let want = meta_len
        .checked_add(db_len)
        .and_then(|n| n.checked_add(MAC_LEN))
        .ok_or_else(|| corrupt("header lengths"))?;
    if body.len() != want {
        return Err(corrupt(format!(
            "{} bytes after the header where the header announces {want} (truncated or \
             appended to)",
            body.len()
        )));
    }
    let signed_len = file.len() - MAC_LEN;
    Ok(Parts {
        meta: &body[..meta_len],
        db: &body[meta_len..meta_len + db_len],
        signed: &file[..signed_len],
        mac: &file[signed_len..],
        info,
    })
}

/// The header of a backup file (format and lengths checked, not the MAC).
pub fn backup_header(file: &[u8]) -> Result<BackupInfo, StorageError> {
    split(file).map(|p| p.info)
}

/// Checks `file` (format, lengths, and the MAC under `passphrase`) and
/// opens its store in a scratch directory to read every key record.
/// Returns the header.
pub fn verify_backup(file: &[u8], passphrase: &SecretBytes) -> Result<BackupInfo, StorageError> {
    let scratch = tempfile::tempdir().map_err(io(Path::new("(temp dir)")))?;
    let parts = unpack(file, passphrase, scratch.path())?;
    let node = NodeName::parse(&parts.node).map_err(|e| corrupt(e.to_string()))?;
    let store = Store::open(scratch.path(), &node, passphrase)?;
    let held = store.keys()?;
    if held.len() != parts.keys.len() {
        return Err(corrupt("the header and the database list different keys"));
    }
    Ok(parts)
}

/// Restores `file` into `dir` (which must not hold a store: nothing there is
/// overwritten) and marks every key restored. Returns the header.
pub fn restore_backup(
    file: &[u8],
    passphrase: &SecretBytes,
    dir: &Path,
    now_unix: u64,
) -> Result<BackupInfo, StorageError> {
    for f in [super::seal::META_FILE, Store::DB_FILE] {
        if dir.join(f).exists() {
            return Err(StorageError::Conflict(format!(
                "{} already holds a store ({f}); restore into an empty directory, or move the \
                 old store away first (nothing was written)",
                dir.display()
            )));
        }
    }
    if !dir.exists() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(io(dir))?;
        }
    }
    let scratch = tempfile::tempdir_in(dir).map_err(io(dir))?;
    let info = unpack(file, passphrase, scratch.path())?;
    let node = NodeName::parse(&info.node).map_err(|e| corrupt(e.to_string()))?;
    {
        let store = Store::open(scratch.path(), &node, passphrase)?;
        store.mark_restored(info.created_unix, now_unix)?;
    }
    // The database first: a store.meta without it is refused at open.
    for f in [Store::DB_FILE, super::seal::META_FILE] {
        std::fs::rename(scratch.path().join(f), dir.join(f)).map_err(io(&dir.join(f)))?;
    }
    Ok(info)
}

/// Checks the MAC of `file` and writes its store files into `into`.
fn unpack(file: &[u8], passphrase: &SecretBytes, into: &Path) -> Result<BackupInfo, StorageError> {
    let p = split(file)?;
    let write = |name: &str, body: &[u8]| -> Result<(), StorageError> {
        let path = into.join(name);
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(&path).map_err(io(&path))?;
        f.write_all(body).map_err(io(&path))?;
        f.sync_all().map_err(io(&path))
    };
    write(super::seal::META_FILE, p.meta)?;
    let unlocked = super::seal::unlock_or_init(into, passphrase)?;
    let kek = super::Kek::derive(&unlocked.root, unlocked.meta_format)?;
    if !kek.backup_mac_matches(p.signed, p.mac)? {
        return Err(corrupt(
            "its MAC does not match: the file was altered, or it was made by another store",
        ));
    }
    write(Store::DB_FILE, p.db)?;
    Ok(p.info)
}
