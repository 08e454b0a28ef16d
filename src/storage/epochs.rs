//! Epochs of a key: a rotation or reshare stages the next epoch's share
//! beside the active one; activation switches atomically (old or new, never
//! a mix); an abandoned rotation is discarded; a member that left retires.

use redb::{ReadableDatabase, ReadableTable};

use super::{
    dberr, share_slot, KeyRecord, KeyState, RotationProof, StorageError, Store, ACTIVATIONS, KEYS,
    LIFECYCLE, PENDING, SHARES,
};
use crate::domain::KeyId;
use crate::secret::SecretBytes;

#[derive(serde::Serialize, serde::Deserialize)]
struct Pending {
    epoch: u64,
    proof: RotationProof,
    package: String,
    /// The committee and threshold a reshare moves the key to (none for a rotation).
    #[serde(default)]
    membership: Option<Membership>,
    /// When it was staged (Unix milliseconds; 0 in records written before
    /// this was kept, which count as staged long ago).
    #[serde(default)]
    staged_ms: u64,
}

/// An epoch staged here and not yet active.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staged {
    pub epoch: u64,
    /// The proof its activation must carry.
    pub proof: RotationProof,
    /// Staged by a reshare (a new committee and threshold), not a rotation.
    pub reshare: bool,
    /// When it was staged, in Unix milliseconds (0: long ago).
    pub staged_ms: u64,
    /// The committee that activates it: a reshare's new committee (none
    /// for a rotation, whose committee is the key's).
    pub committee: Option<Vec<String>>,
}

/// A key's committee (node names in party order) and threshold.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Membership {
    pub committee: Vec<String>,
    pub threshold: u8,
}

impl Store {
    /// Writes a rotated share as epoch `epoch` beside the active one, without
    /// activating it, remembering the rotation's execution id and
    /// confirmation. Replaces an earlier staged epoch that was never activated.
    pub fn stage_epoch(
        &self,
        id: &KeyId,
        epoch: u64,
        share: &SecretBytes,
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
        share: &SecretBytes,
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
        share: &SecretBytes,
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
                // An active record at an older epoch: a member left behind by
                // a reshare it missed the retirement of (the caller checked).
                (Some(old), Some(new))
                    if !(matches!(old.state, KeyState::Retired | KeyState::Joining)
                        || (old.state == KeyState::Active && old.epoch < new.epoch)) =>
                {
                    return Err(StorageError::Conflict(format!(
                        "key {id} is {} here; a joining record cannot replace it",
                        old.state.label()
                    )))
                }
                (old, Some(new)) => {
                    if new.key_id != *id {
                        return Err(StorageError::Conflict(
                            "joining record names another key".into(),
                        ));
                    }
                    // A member left behind at an older epoch: its old share
                    // (and anything it staged) goes with its old record.
                    if let Some(old) = old.filter(|o| o.state == KeyState::Active) {
                        drop(keys);
                        self.drop_shares(&tx, id, old.epoch)?;
                        keys = tx.open_table(KEYS).map_err(dberr)?;
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
                    staged_ms: now_ms(),
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
        Ok(self.staged(id)?.map(|s| (s.epoch, s.proof)))
    }

    /// The staged epoch of a key, with what staged it and when.
    pub fn staged(&self, id: &KeyId) -> Result<Option<Staged>, StorageError> {
        let tx = self.db.begin_read().map_err(dberr)?;
        let t = tx.open_table(PENDING).map_err(dberr)?;
        match t.get(id.as_str()).map_err(dberr)? {
            Some(v) => self.open_pending(id, v.value()).map(|p| {
                Some(Staged {
                    epoch: p.epoch,
                    proof: p.proof,
                    reshare: p.membership.is_some(),
                    staged_ms: p.staged_ms,
                    committee: p.membership.map(|m| m.committee),
                })
            }),
            None => Ok(None),
        }
    }

    /// Makes the staged `epoch` the active one and deletes the old epoch's
    /// share, in one durable transaction: after a crash either the old or the
    /// new epoch is active, never a mix. `proof` must name the rotation that
    /// staged it; `certificate` (opaque here, checked by the node) is kept
    /// with the new epoch. Returns false if that same rotation was already
    /// activated.
    pub fn activate_epoch(
        &self,
        id: &KeyId,
        epoch: u64,
        proof: RotationProof,
        certificate: &[u8],
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
            let reshared = staged.membership.is_some();
            if let Some(m) = staged.membership {
                rec.committee = m.committee;
                rec.threshold = m.threshold;
            }
            // A new epoch, fully refreshed under an approved request, ends a
            // freeze too (a recovery reshare of a frozen key).
            if let (KeyState::Frozen(_), true) = (&rec.state, reshared) {
                // A recovery reshare ended the freeze: it is not handed to
                // other nodes again.
                tx.open_table(LIFECYCLE)
                    .map_err(dberr)?
                    .remove(id.as_str())
                    .map_err(dberr)?;
                rec.state = KeyState::Active;
            }
            if matches!(rec.state, KeyState::Repairing | KeyState::Joining) {
                rec.state = KeyState::Active;
            }
            keys.insert(id.as_str(), self.seal_record(&rec)?.as_slice())
                .map_err(dberr)?;
            pending.remove(id.as_str()).map_err(dberr)?;
            let mut shares = tx.open_table(SHARES).map_err(dberr)?;
            shares.remove(share_slot(id, old).as_str()).map_err(dberr)?;
            self.put_activation(&tx, id, certificate)?;
        }
        tx.commit().map_err(dberr)?;
        Ok(true)
    }

    /// Inside `tx`: keeps `certificate` as the activation certificate of
    /// `id`'s active epoch.
    pub(super) fn put_activation(
        &self,
        tx: &redb::WriteTransaction,
        id: &KeyId,
        certificate: &[u8],
    ) -> Result<(), StorageError> {
        let mut t = tx.open_table(ACTIVATIONS).map_err(dberr)?;
        t.insert(
            id.as_str(),
            self.seal_mac(id, certificate.to_vec())?.as_slice(),
        )
        .map_err(dberr)?;
        Ok(())
    }

    /// The activation certificate kept with the key's active epoch, if any
    /// (none for epochs activated before certificates were kept).
    pub fn activation(&self, id: &KeyId) -> Result<Option<Vec<u8>>, StorageError> {
        let tx = self.db.begin_read().map_err(dberr)?;
        let t = tx.open_table(ACTIVATIONS).map_err(dberr)?;
        match t.get(id.as_str()).map_err(dberr)? {
            Some(v) => Ok(Some(
                self.open_mac(id, "activation certificate", v.value())?
                    .to_vec(),
            )),
            None => Ok(None),
        }
    }

    /// Forgets the epoch staged by rotation `eid` (an abandoned rotation), so
    /// it can never be activated. Returns whether anything was staged by it.
    ///
    /// A rotation's staged share is released only within `window` of its
    /// staging: later, another node may already be activating it (a rotation
    /// that every node staged and nobody activated is finished by the next
    /// one once every node's window has closed), and a release that raced
    /// that would split the key across epochs. Refused with `Conflict` then.
    pub fn discard_staged(
        &self,
        id: &KeyId,
        eid: &[u8; 32],
        window: std::time::Duration,
    ) -> Result<bool, StorageError> {
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
                Some(p)
                    if p.proof.eid == *eid
                        && p.epoch != rec.epoch
                        && p.membership.is_none()
                        && release_closed(p.staged_ms, window) =>
                {
                    return Err(StorageError::Conflict(format!(
                        "epoch {} of key {id} was staged more than {} ms ago; it is no longer \
                         released (the next rotation finishes or replaces it)",
                        p.epoch,
                        window.as_millis()
                    )));
                }
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
        for epoch in std::iter::once(active).chain(staged) {
            shares
                .remove(share_slot(id, epoch).as_str())
                .map_err(dberr)?;
        }
        pending.remove(id.as_str()).map_err(dberr)?;
        Ok(())
    }

    /// Retires this node's share of a key that a reshare moved to another
    /// committee: the active and any staged share are deleted and the record
    /// kept as `Retired`, in one transaction. Returns false if already retired.
    pub fn retire(&self, id: &KeyId) -> Result<bool, StorageError> {
        self.end_key(id, KeyState::Retired, None)
    }

    /// Deletes this node's shares of a key (active and staged) and keeps its
    /// record as a `Deleted` tombstone, in one durable transaction. The
    /// ledger and audit entries stay, and so does `proof` (what deleted it,
    /// opaque to the store). Returns false if already deleted.
    pub fn delete_key(
        &self,
        id: &KeyId,
        why: String,
        lifecycle_seq: u64,
        proof: &[u8],
    ) -> Result<bool, StorageError> {
        self.end_key(id, KeyState::Deleted(why), Some((lifecycle_seq, proof)))
    }

    /// Drops every share of `id` and sets its record to `end` (Retired or
    /// Deleted), unless the record already has that state; keeps `proof`.
    fn end_key(
        &self,
        id: &KeyId,
        end: KeyState,
        proof: Option<(u64, &[u8])>,
    ) -> Result<bool, StorageError> {
        let tx = self.write()?;
        {
            let mut keys = tx.open_table(KEYS).map_err(dberr)?;
            let mut rec = match keys.get(id.as_str()).map_err(dberr)? {
                Some(v) => self.open_record(id, v.value())?,
                None => return Err(StorageError::NotFound(format!("key {id}"))),
            };
            if rec.state.label() == end.label() {
                return Ok(false);
            }
            self.drop_shares(&tx, id, rec.epoch)?;
            rec.state = end;
            if let Some((seq, proof)) = proof {
                rec.lifecycle_seq = seq;
                let mut t = tx.open_table(LIFECYCLE).map_err(dberr)?;
                t.insert(id.as_str(), self.seal_mac(id, proof.to_vec())?.as_slice())
                    .map_err(dberr)?;
            }
            keys.insert(id.as_str(), self.seal_record(&rec)?.as_slice())
                .map_err(dberr)?;
        }
        tx.commit().map_err(dberr)?;
        Ok(true)
    }

    fn seal_pending(&self, id: &KeyId, p: &Pending) -> Result<Vec<u8>, StorageError> {
        self.seal_mac_json(id, p)
    }

    fn open_pending(&self, id: &KeyId, raw: &[u8]) -> Result<Pending, StorageError> {
        self.open_mac_json(id, "staged epoch", raw)
    }
}

/// The time now in Unix milliseconds (0 if the clock is before 1970).
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// How long the release of a share staged at `staged_ms` stays open, from
/// now (zero once closed).
pub fn release_open_for(staged_ms: u64, window: std::time::Duration) -> std::time::Duration {
    let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
    let closes = staged_ms.saturating_add(window_ms);
    std::time::Duration::from_millis(closes.saturating_sub(now_ms()))
}

fn release_closed(staged_ms: u64, window: std::time::Duration) -> bool {
    release_open_for(staged_ms, window).is_zero()
}
