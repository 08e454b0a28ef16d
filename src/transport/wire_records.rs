//! A key's public record and a ledger entry on the peer wire (they travel
//! with repair and reshare proposals and in status answers). No I/O.

use tonic::Status;

use super::wire::{arr, bad, names};
use crate::domain::{KeyId, KeyType};
use crate::proto::peer as pb;
use crate::storage::{LedgerEntry, LedgerResult};

/// A key's public record as it travels with a repair or reshare proposal.
pub(super) fn record_from_pb(
    key_id: &KeyId,
    r: Option<pb::KeyRecord>,
) -> Result<crate::storage::KeyRecord, Status> {
    let r = r.ok_or_else(|| bad("record", "missing"))?;
    Ok(crate::storage::KeyRecord {
        schema: crate::storage::records_schema(),
        key_id: key_id.clone(),
        public_key: r.public_key,
        chain_code: arr(&r.chain_code, "chain_code").map_err(|e| bad("chain_code", e))?,
        committee: names(&r.committee, "committee")?
            .iter()
            .map(ToString::to_string)
            .collect(),
        threshold: u8::try_from(r.threshold).map_err(|_| bad("threshold", "out of range"))?,
        epoch: r.epoch,
        state: crate::storage::KeyState::Active,
        package_hash: arr(&r.package_hash, "package_hash").map_err(|e| bad("package_hash", e))?,
        package: hex::encode(&r.package),
        rotation: None,
        created_unix: r.created_unix,
        key_type: KeyType::parse(&r.key_type).map_err(|e| bad("key_type", e))?,
        lifecycle_seq: r.lifecycle_seq,
    })
}

pub(super) fn record_to_pb(r: &crate::storage::KeyRecord) -> pb::KeyRecord {
    pb::KeyRecord {
        epoch: r.epoch,
        threshold: r.threshold.into(),
        committee: r.committee.clone(),
        public_key: r.public_key.clone(),
        chain_code: r.chain_code.to_vec(),
        package_hash: r.package_hash.to_vec(),
        package: hex::decode(&r.package).unwrap_or_default(),
        created_unix: r.created_unix,
        key_type: r.key_type.as_str().to_owned(),
        lifecycle_seq: r.lifecycle_seq,
    }
}

pub(super) fn ledger_to_pb(l: &LedgerEntry) -> pb::LedgerRecord {
    let done = l.result.as_ref();
    pb::LedgerRecord {
        request_id: l.request_id.clone(),
        digest: l.digest.to_vec(),
        path: l.path.clone(),
        slot: l.slot.clone().unwrap_or_default(),
        eid: l.eid.to_vec(),
        unix: l.unix,
        finished: done.is_some(),
        r: done.map(|d| d.r.to_vec()).unwrap_or_default(),
        s: done.map(|d| d.s.to_vec()).unwrap_or_default(),
        recovery_id: done.map(|d| d.recovery_id.into()).unwrap_or_default(),
        public_key: done.map(|d| d.public_key.clone()).unwrap_or_default(),
        participants: done.map(|d| d.participants.clone()).unwrap_or_default(),
        epoch: done.map(|d| d.epoch).unwrap_or_default(),
    }
}

pub(super) fn ledger_from_pb(l: pb::LedgerRecord) -> Result<LedgerEntry, String> {
    let result = if l.finished {
        Some(LedgerResult {
            r: arr(&l.r, "r")?,
            s: arr(&l.s, "s")?,
            recovery_id: u8::try_from(l.recovery_id).map_err(|_| "recovery_id out of range")?,
            public_key: l.public_key,
            participants: l.participants,
            epoch: l.epoch,
        })
    } else {
        None
    };
    Ok(LedgerEntry {
        schema: crate::storage::records_schema(),
        request_id: l.request_id,
        digest: arr(&l.digest, "digest")?,
        path: l.path,
        eid: arr(&l.eid, "eid")?,
        unix: l.unix,
        result,
        slot: (!l.slot.is_empty()).then_some(l.slot),
    })
}
