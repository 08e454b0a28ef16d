//! Migration of a format-1 store to format 2 (`seal.rs`): every MACed value
//! and every sealed share is checked under the format-1 key and written again
//! under its format-2 subkey, and the audit chain is linked again, all in one
//! write transaction together with the database's format mark. A value that
//! does not check under the old key is carried over as it is, so it stays
//! refused (it is never made valid by the migration); an audit chain is
//! linked again only up to its first bad entry, so `audit verify` still names
//! that entry afterwards.

use redb::{ReadableTable, TableDefinition};

use super::audit::{AuditEntry, Head, AUDIT, AUDIT_HEAD, HEAD_DOMAIN};
use super::mac::ct_eq;
use super::seal::Kek;
use super::{dberr, StorageError};
use crate::domain::{KeyId, NodeName};
use crate::secret::SecretBytes;

/// "format" -> the store format of the database's contents. Absent in a
/// format-1 database (which predates it).
pub(super) const STORE_INFO: TableDefinition<&str, u32> = TableDefinition::new("store_info");

/// The format the database says its contents are in (1 when unmarked).
pub(super) fn db_format(tx: &redb::WriteTransaction) -> Result<Option<u32>, StorageError> {
    let t = tx.open_table(STORE_INFO).map_err(dberr)?;
    let v = t.get("format").map_err(dberr)?.map(|v| v.value());
    Ok(v)
}

pub(super) fn mark_format(tx: &redb::WriteTransaction, format: u32) -> Result<(), StorageError> {
    tx.open_table(STORE_INFO)
        .map_err(dberr)?
        .insert("format", format)
        .map_err(dberr)?;
    Ok(())
}

/// What a migration rewrote, for the log and the audit entry.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Migrated {
    /// MACed values (records, watermarks, staged epochs, lifecycle proofs,
    /// certificates, bans, restore marks) written under the new key.
    pub values: usize,
    /// Sealed shares (active and staged) sealed again.
    pub shares: usize,
    /// Audit entries linked again.
    pub audit_entries: u64,
    /// Values, shares or audit entries that did not check under the old key
    /// and were carried over unchanged (still refused).
    pub left_bad: usize,
}

/// Tables whose values are a body followed by its record MAC, keyed by the
/// key id or by "key id\0...".
const MACED: [TableDefinition<&str, &[u8]>; 7] = [
    super::KEYS,
    super::PENDING,
    super::WATERMARKS,
    super::LIFECYCLE,
    super::ACTIVATIONS,
    super::bans::BANS,
    super::backup::RESTORED,
];

/// Rewrites the contents of a format-1 database under `new` inside `tx`.
pub(super) fn v1_to_v2(
    tx: &redb::WriteTransaction,
    old: &Kek,
    new: &Kek,
    node: &NodeName,
) -> Result<Migrated, StorageError> {
    let mut done = Migrated::default();
    for def in MACED {
        let mut t = tx.open_table(def).map_err(dberr)?;
        let rows = collect(&t)?;
        for (slot, raw) in rows {
            let Some(id) = key_of(&slot) else {
                done.left_bad += 1;
                continue;
            };
            let Some(split) = raw.len().checked_sub(32) else {
                done.left_bad += 1;
                continue;
            };
            let (body, mac) = raw.split_at(split);
            if !ct_eq(&old.record_mac(&id, body)?, mac) {
                done.left_bad += 1;
                continue;
            }
            let mut out = body.to_vec();
            out.extend_from_slice(&new.record_mac(&id, body)?);
            t.insert(slot.as_str(), out.as_slice()).map_err(dberr)?;
            done.values += 1;
        }
    }
    {
        let mut t = tx.open_table(super::SHARES).map_err(dberr)?;
        let rows = collect(&t)?;
        let total = rows.len();
        let mut unopened = 0usize;
        for (slot, sealed) in rows {
            let parsed = slot
                .split_once('\u{0}')
                .and_then(|(id, epoch)| Some((KeyId::parse(id).ok()?, epoch.parse::<u64>().ok()?)));
            let Some((id, epoch)) = parsed else {
                done.left_bad += 1;
                continue;
            };
            let share: SecretBytes = match old.open_share(&sealed, &id, epoch, node) {
                Ok(s) => s,
                Err(_) => {
                    done.left_bad += 1;
                    unopened += 1;
                    continue;
                }
            };
            let resealed = new.seal_share(&share, &id, epoch, node)?;
            t.insert(slot.as_str(), resealed.as_slice())
                .map_err(dberr)?;
            done.shares += 1;
        }
        // Not one share opens: the store is not this node's as named (a
        // share is bound to the node name), not a tampered share or two.
        // Migrating would leave every share sealed under a key no later
        // open uses; nothing is committed instead.
        if total > 0 && unopened == total {
            return Err(StorageError::Corrupt {
                what: "store".into(),
                reason: format!(
                    "none of its {total} shares opens for node {node} under its format-1 key: is \
                     `node.name` right for this data directory? The store was left as it was"
                ),
            });
        }
    }
    relink_audit(tx, old, new, &mut done)?;
    mark_format(tx, 2)?;
    Ok(done)
}

/// Links the audit chain again under `new`, as far as it checks under `old`;
/// the head record too when the whole chain checked and the head with it.
fn relink_audit(
    tx: &redb::WriteTransaction,
    old: &Kek,
    new: &Kek,
    done: &mut Migrated,
) -> Result<(), StorageError> {
    let mut t = tx.open_table(AUDIT).map_err(dberr)?;
    let rows: Vec<(u64, Vec<u8>)> = {
        let mut out = Vec::new();
        for item in t.iter().map_err(dberr)? {
            let (k, v) = item.map_err(dberr)?;
            out.push((k.value(), v.value().to_vec()));
        }
        out
    };
    let (mut old_prev, mut new_prev) = ([0u8; 32], [0u8; 32]);
    let mut expected = 1u64;
    let mut whole = true;
    for (seq, raw) in &rows {
        let checked = (|| {
            let split = raw.len().checked_sub(32)?;
            let (body, link) = raw.split_at(split);
            let ok_link = old.audit_mac(&old_prev, body).ok()?;
            if *seq != expected || !ct_eq(&ok_link, link) {
                return None;
            }
            let entry: AuditEntry = serde_json::from_slice(body).ok()?;
            (entry.seq == *seq && entry.prev == hex::encode(old_prev)).then_some((entry, ok_link))
        })();
        let Some((mut entry, old_link)) = checked else {
            whole = false;
            done.left_bad += 1;
            break;
        };
        entry.prev = hex::encode(new_prev);
        let mut body = serde_json::to_vec(&entry).map_err(|e| StorageError::Db(e.to_string()))?;
        let link = new.audit_mac(&new_prev, &body)?;
        body.extend_from_slice(&link);
        t.insert(*seq, body.as_slice()).map_err(dberr)?;
        (old_prev, new_prev) = (old_link, link);
        expected += 1;
        done.audit_entries += 1;
    }
    if !whole {
        return Ok(());
    }
    let mut heads = tx.open_table(AUDIT_HEAD).map_err(dberr)?;
    let head = heads
        .get("head")
        .map_err(dberr)?
        .map(|v| v.value().to_vec());
    let Some(raw) = head else {
        return Ok(());
    };
    let Some(split) = raw.len().checked_sub(32) else {
        done.left_bad += 1;
        return Ok(());
    };
    let (body, mac) = raw.split_at(split);
    if !ct_eq(&old.audit_mac(&HEAD_DOMAIN, body)?, mac) {
        done.left_bad += 1;
        return Ok(());
    }
    let Ok(mut h) = serde_json::from_slice::<Head>(body) else {
        done.left_bad += 1;
        return Ok(());
    };
    // The head names the old last link; it names the new one when it
    // agreed with the chain (otherwise the disagreement is kept).
    if h.seq == expected - 1 && h.link == hex::encode(old_prev) {
        h.link = hex::encode(new_prev);
    }
    let mut out = serde_json::to_vec(&h).map_err(|e| StorageError::Db(e.to_string()))?;
    out.extend_from_slice(&new.audit_mac(&HEAD_DOMAIN, &out)?);
    heads.insert("head", out.as_slice()).map_err(dberr)?;
    Ok(())
}

fn collect(t: &redb::Table<&str, &[u8]>) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
    let mut out = Vec::new();
    for item in t.iter().map_err(dberr)? {
        let (k, v) = item.map_err(dberr)?;
        out.push((k.value().to_owned(), v.value().to_vec()));
    }
    Ok(out)
}

/// The key id a MACed value is bound to: its slot up to the first NUL.
fn key_of(slot: &str) -> Option<KeyId> {
    let id = slot.split('\u{0}').next()?;
    KeyId::parse(id).ok()
}
