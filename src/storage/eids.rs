//! The horizon of signing execution ids. A signing eid is claimed durably
//! (a replayed proposal is refused), but only while its client request can
//! still be valid: a request expires at most 600 s ahead of a node's clock,
//! and an expired one is refused before any eid lookup. So each signing
//! eid is indexed by its request's expiry, and every admission prunes a
//! bounded batch of eids whose requests expired more than `GRACE` ago. The
//! horizon (just above the latest expiry pruned) is kept durably and only
//! moves forward: a request that expires below it is refused without a
//! lookup, even if the clock steps back after its eid was pruned. The table stays the size of
//! the last ~12 minutes of signing, not of the node's whole life.

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use super::{dberr, StorageError, Store, EIDS};
use crate::domain::ExecutionId;

/// (request expiry, big-endian) || eid -> nothing: the signing eids in expiry order.
pub(super) const SIGN_EID_EXPIRY: TableDefinition<&[u8], ()> =
    TableDefinition::new("sign_eid_expiry");
/// "sign" -> the durable horizon (Unix seconds).
pub(super) const EID_HORIZON: TableDefinition<&str, u64> = TableDefinition::new("eid_horizon");

/// How long after its request expired a signing eid is kept (clock skew
/// between nodes, with margin).
pub const GRACE: u64 = 120;
/// Eids pruned at most per admission (keeps each admission's cost bounded).
const PRUNE_BATCH: usize = 64;

/// The horizon in a write transaction.
fn horizon(tx: &WriteTransaction) -> Result<u64, StorageError> {
    let t = tx.open_table(EID_HORIZON).map_err(dberr)?;
    let h = t.get("sign").map_err(dberr)?.map(|v| v.value());
    Ok(h.unwrap_or(0))
}

/// Whether a signing request expiring at `expiry_unix` is below the
/// horizon (then it is refused without an eid lookup); otherwise moves the
/// horizon up to `now_unix - GRACE`, prunes a batch of eids below it, and
/// indexes `eid` under `expiry_unix`.
pub(super) fn admit(
    tx: &WriteTransaction,
    eid: &ExecutionId,
    expiry_unix: u64,
    now_unix: u64,
) -> Result<bool, StorageError> {
    let old = horizon(tx)?;
    if expiry_unix < old {
        return Ok(false);
    }
    let mut index = tx.open_table(SIGN_EID_EXPIRY).map_err(dberr)?;
    let below = now_unix.saturating_sub(GRACE).to_be_bytes();
    let expired: Vec<Vec<u8>> = index
        .range::<&[u8]>(..below.as_slice())
        .map_err(dberr)?
        .take(PRUNE_BATCH)
        .map(|r| r.map(|(k, _)| k.value().to_vec()))
        .collect::<Result<_, _>>()
        .map_err(dberr)?;
    let mut eids = tx.open_table(EIDS).map_err(dberr)?;
    let mut new = old;
    for k in &expired {
        index.remove(k.as_slice()).map_err(dberr)?;
        if let (Some(e), Some(at)) = (k.get(8..), k.get(..8)) {
            eids.remove(e).map_err(dberr)?;
            let at: [u8; 8] = at.try_into().unwrap_or([0xFF; 8]);
            new = new.max(u64::from_be_bytes(at).saturating_add(1));
        }
    }
    // The horizon rises only as far as what was pruned: a clock that jumps
    // ahead and back refuses at most requests expiring within the pruned
    // window, never every request until the clock catches up.
    if new > old {
        tx.open_table(EID_HORIZON)
            .map_err(dberr)?
            .insert("sign", new)
            .map_err(dberr)?;
    }
    let mut key = expiry_unix.to_be_bytes().to_vec();
    key.extend_from_slice(eid.as_bytes());
    index.insert(key.as_slice(), ()).map_err(dberr)?;
    Ok(true)
}

impl Store {
    /// Signing requests that expire before this (Unix seconds) are refused
    /// without an eid lookup.
    pub fn sign_eid_horizon(&self) -> Result<u64, StorageError> {
        use redb::ReadableDatabase;
        let tx = self.db.begin_read().map_err(dberr)?;
        let t = tx.open_table(EID_HORIZON).map_err(dberr)?;
        let h = t.get("sign").map_err(dberr)?.map(|v| v.value());
        Ok(h.unwrap_or(0))
    }

    /// How many execution ids the store holds (all kinds).
    pub fn eid_count(&self) -> Result<u64, StorageError> {
        use redb::{ReadableDatabase, ReadableTableMetadata};
        let tx = self.db.begin_read().map_err(dberr)?;
        let t = tx.open_table(EIDS).map_err(dberr)?;
        t.len().map_err(dberr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{KeyId, NodeName};
    use crate::secret::SecretBytes;
    use crate::storage::{Admission, AuditEvent, LedgerEntry};

    #[test]
    fn signing_eids_are_pruned_below_a_horizon_that_refuses_without_lookup() {
        let dir = tempfile::tempdir().unwrap();
        let node = NodeName::parse("a").unwrap();
        let store = Store::open(dir.path(), &node, &SecretBytes::new(b"p".to_vec())).unwrap();
        let id = KeyId::parse("k").unwrap();
        let eid = |i: u32| {
            let mut b = [7u8; 32];
            b[..4].copy_from_slice(&i.to_be_bytes());
            ExecutionId::from_slice(&b).unwrap()
        };
        // One request per second for an hour, each valid for 600 s.
        let admit = |i: u32, now: u64, expiry: u64| {
            let entry = LedgerEntry {
                schema: 1,
                request_id: format!("r{i}"),
                digest: [1; 32],
                path: "m".into(),
                eid: *eid(i).as_bytes(),
                unix: now,
                result: None,
                slot: None,
            };
            store
                .admit_sign(
                    (&eid(i), expiry),
                    now,
                    (&id, &entry),
                    None,
                    &[],
                    AuditEvent::default(),
                )
                .unwrap()
        };
        let start = 1_000_000u64;
        for i in 0..3600u32 {
            let now = start + u64::from(i);
            assert_eq!(admit(i, now, now + 600), Admission::Admitted, "request {i}");
        }
        let end = start + 3599;
        // What is kept: the eids whose requests expired less than GRACE
        // ago or not yet (about 720), not the whole hour's 3,600.
        let kept = store.eid_count().unwrap();
        assert!(kept <= 600 + GRACE + 2, "{kept} eids kept");
        let horizon = store.sign_eid_horizon().unwrap();
        assert!(
            horizon > start + 600 && horizon <= end - GRACE,
            "horizon {horizon}"
        );
        // A live request's eid is still refused as used...
        assert!(store.eid_used(&eid(3599)).unwrap());
        assert_eq!(admit(3599, end, end + 600), Admission::EidUsed);
        // ...a pruned one is gone, and its request (expired below the
        // horizon) is refused without a lookup, even with the clock set back.
        assert!(!store.eid_used(&eid(0)).unwrap());
        assert_eq!(admit(0, start, start + 600), Admission::BelowHorizon);
    }
}
