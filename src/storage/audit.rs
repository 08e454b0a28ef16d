//! The audit log: an append-only table of entries, each chained to the one
//! before by a MAC under the store's key. `verify` walks the chain and names
//! the first entry that was edited, removed or moved. Entries hold decisions
//! and identifiers, never secrets.

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::{dberr, StorageError, Store};

/// seq -> JSON body || link (32 bytes).
pub(super) const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
/// "head" -> JSON {seq, link} || MAC: where the chain must end, so removing
/// the newest entries is detected too.
pub(super) const AUDIT_HEAD: TableDefinition<&str, &[u8]> = TableDefinition::new("audit_head");
/// Stands in for a previous link when MACing the head record.
pub(super) const HEAD_DOMAIN: [u8; 32] = [0xff; 32];

#[derive(Serialize, Deserialize)]
pub(super) struct Head {
    pub seq: u64,
    pub link: String,
}

/// What happened, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AuditEvent {
    /// e.g. `sign.accept`, `sign.refuse`, `admin.rotate`.
    pub kind: String,
    /// `client/<name>`, `admin/<name>` or `node/<name>`.
    pub actor: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub request_id: String,
    /// `allowed`, `denied`, `ok` or `failed`.
    pub decision: String,
    /// The policy rule or check that decided.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub rule: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub eid: String,
    /// Free text: digest, path, slot, reason.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// One entry of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub seq: u64,
    pub unix: u64,
    /// Hex of the previous entry's link (zeros for the first).
    pub prev: String,
    #[serde(flatten)]
    pub event: AuditEvent,
    /// Set when, at append time, the log did not end where its head record
    /// said (entries removed or replaced since): recorded in the chain, so
    /// `verify` reports it for good.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gap: Option<String>,
}

/// The result of walking the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditReport {
    /// Entries checked before the first bad one (all of them if none).
    pub good: u64,
    /// The first bad entry (its position in the log) and why.
    pub first_bad: Option<(u64, String)>,
}

impl Store {
    /// Appends `event` durably, chained to the last entry. Returns its seq.
    pub fn audit_append(&self, event: AuditEvent, unix: u64) -> Result<u64, StorageError> {
        let tx = self.write()?;
        let seq = self.append_audit(&tx, event, unix)?;
        tx.commit().map_err(dberr)?;
        Ok(seq)
    }

    /// Appends `event` inside `tx` (with the caller's other writes).
    pub(super) fn append_audit(
        &self,
        tx: &redb::WriteTransaction,
        event: AuditEvent,
        unix: u64,
    ) -> Result<u64, StorageError> {
        let seq = {
            let mut t = tx.open_table(AUDIT).map_err(dberr)?;
            let (seq, prev) = match t.last().map_err(dberr)? {
                Some((k, v)) => {
                    let raw = v.value();
                    let link: [u8; 32] = raw
                        .len()
                        .checked_sub(32)
                        .and_then(|at| raw[at..].try_into().ok())
                        .ok_or_else(|| StorageError::Corrupt {
                            what: format!("audit entry {}", k.value()),
                            reason: "too short".into(),
                        })?;
                    (k.value() + 1, link)
                }
                None => (1, [0u8; 32]),
            };
            let gap = self.head_mismatch(tx, seq - 1, &prev)?;
            if let Some(g) = &gap {
                tracing::error!("audit log: {g}; the new entry records it");
            }
            let entry = AuditEntry {
                seq,
                unix,
                prev: hex::encode(prev),
                event,
                gap,
            };
            let mut body =
                serde_json::to_vec(&entry).map_err(|e| StorageError::Db(e.to_string()))?;
            let link = self.kek.audit_mac(&prev, &body)?;
            body.extend_from_slice(&link);
            t.insert(seq, body.as_slice()).map_err(dberr)?;
            self.write_head(tx, seq, &link)?;
            seq
        };
        Ok(seq)
    }

    /// Writes the head of an empty log (a new store), so that removing every
    /// entry and the head later is noticed too.
    pub(super) fn audit_genesis(&self, tx: &redb::WriteTransaction) -> Result<(), StorageError> {
        let has_head = tx
            .open_table(AUDIT_HEAD)
            .map_err(dberr)?
            .get("head")
            .map_err(dberr)?
            .is_some();
        let empty = tx
            .open_table(AUDIT)
            .map_err(dberr)?
            .last()
            .map_err(dberr)?
            .is_none();
        if !has_head && empty {
            self.write_head(tx, 0, &[0u8; 32])?;
        }
        Ok(())
    }

    fn write_head(
        &self,
        tx: &redb::WriteTransaction,
        seq: u64,
        link: &[u8; 32],
    ) -> Result<(), StorageError> {
        let mut head = serde_json::to_vec(&Head {
            seq,
            link: hex::encode(link),
        })
        .map_err(|e| StorageError::Db(e.to_string()))?;
        let mac = self.kek.audit_mac(&HEAD_DOMAIN, &head)?;
        head.extend_from_slice(&mac);
        tx.open_table(AUDIT_HEAD)
            .map_err(dberr)?
            .insert("head", head.as_slice())
            .map_err(dberr)?;
        Ok(())
    }

    /// Why the log does not end at (`last`, `link`) as its head says, if so.
    fn head_mismatch(
        &self,
        tx: &redb::WriteTransaction,
        last: u64,
        link: &[u8; 32],
    ) -> Result<Option<String>, StorageError> {
        let t = tx.open_table(AUDIT_HEAD).map_err(dberr)?;
        let Some(v) = t.get("head").map_err(dberr)? else {
            return Ok(Some(format!(
                "the head record is missing (log ends at entry {last})"
            )));
        };
        let raw = v.value();
        let (body, mac) = raw.split_at(raw.len().saturating_sub(32));
        if self.kek.audit_mac(&HEAD_DOMAIN, body)?.as_slice() != mac {
            return Ok(Some("the head record does not authenticate".into()));
        }
        match serde_json::from_slice::<Head>(body) {
            Ok(h) if h.seq == last && h.link == hex::encode(link) => Ok(None),
            Ok(h) => Ok(Some(format!(
                "the log ended at entry {last} but its head said {}",
                h.seq
            ))),
            Err(e) => Ok(Some(format!("the head record does not parse: {e}"))),
        }
    }

    /// The last `n` entries, oldest first (bodies as stored, not verified).
    pub fn audit_tail(&self, n: usize) -> Result<Vec<AuditEntry>, StorageError> {
        let tx = self.db.begin_read().map_err(dberr)?;
        let t = tx.open_table(AUDIT).map_err(dberr)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(dberr)?.rev().take(n) {
            let (k, v) = item.map_err(dberr)?;
            let raw = v.value();
            let body = &raw[..raw.len().saturating_sub(32)];
            out.push(
                serde_json::from_slice(body).map_err(|e| StorageError::Corrupt {
                    what: format!("audit entry {}", k.value()),
                    reason: e.to_string(),
                })?,
            );
        }
        out.reverse();
        Ok(out)
    }

    /// Walks the whole chain in order and reports the first entry whose
    /// position, link or body does not check.
    pub fn audit_verify(&self) -> Result<AuditReport, StorageError> {
        let tx = self.db.begin_read().map_err(dberr)?;
        let t = tx.open_table(AUDIT).map_err(dberr)?;
        let mut prev = [0u8; 32];
        let mut expected = 1u64;
        for item in t.iter().map_err(dberr)? {
            let (k, v) = item.map_err(dberr)?;
            let at = k.value();
            let bad = |why: String| {
                Ok(AuditReport {
                    good: expected - 1,
                    first_bad: Some((at, why)),
                })
            };
            if at != expected {
                return bad(format!(
                    "entry {at} follows entry {} (entries removed or renumbered)",
                    expected - 1
                ));
            }
            let raw = v.value();
            let Some(split) = raw.len().checked_sub(32) else {
                return bad("too short".into());
            };
            let (body, link) = raw.split_at(split);
            if self.kek.audit_mac(&prev, body)?.as_slice() != link {
                return bad(
                    "its link does not match its body and the entry before it (edited, \
                     moved or a neighbour removed)"
                        .into(),
                );
            }
            let entry: AuditEntry = match serde_json::from_slice(body) {
                Ok(e) => e,
                Err(e) => return bad(format!("body does not parse: {e}")),
            };
            if entry.seq != at || entry.prev != hex::encode(prev) {
                return bad("its recorded position or predecessor is wrong (moved)".into());
            }
            if let Some(g) = entry.gap {
                return bad(format!("written after the log was cut: {g}"));
            }
            prev = link
                .try_into()
                .map_err(|_| StorageError::Db("link".into()))?;
            expected += 1;
        }
        let last = expected - 1;
        let head = tx.open_table(AUDIT_HEAD).map_err(dberr)?;
        let head = match head.get("head").map_err(dberr)? {
            Some(v) => {
                let raw = v.value();
                let split = raw.len().saturating_sub(32);
                let (body, mac) = raw.split_at(split);
                if self.kek.audit_mac(&HEAD_DOMAIN, body)?.as_slice() != mac {
                    return Ok(AuditReport {
                        good: last,
                        first_bad: Some((
                            last + 1,
                            "the log's head record does not authenticate".into(),
                        )),
                    });
                }
                serde_json::from_slice::<Head>(body).ok()
            }
            None => None,
        };
        let ends_right = match &head {
            Some(h) => h.seq == last && h.link == hex::encode(prev),
            None => last == 0,
        };
        if !ends_right {
            let expected_end = head.map(|h| h.seq).unwrap_or(0);
            return Ok(AuditReport {
                good: last,
                first_bad: Some((
                    last + 1,
                    format!(
                        "the log ends at entry {last} but its head says {expected_end} (newest \
                         entries removed or replaced)"
                    ),
                )),
            });
        }
        Ok(AuditReport {
            good: last,
            first_bad: None,
        })
    }
}
