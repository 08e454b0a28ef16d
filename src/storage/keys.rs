//! Key records and shares: a key's public record (MACed), this node's
//! sealed share per epoch, and the opened-share cache for signing.

use redb::{ReadableDatabase, ReadableTable};

use super::{dberr, share_slot, KeyRecord, KeyState, StorageError, Store, KEYS, LIFECYCLE, SHARES};
use crate::domain::KeyId;
use crate::secret::SecretBytes;

impl Store {
    /// Stores a new key's record and this node's sealed share atomically.
    /// A record of the same key that a keygen generated but nobody activated
    /// is replaced (with its share); any other record is a conflict.
    pub fn insert_key(&self, rec: &KeyRecord, share: &SecretBytes) -> Result<(), StorageError> {
        let sealed = self
            .kek
            .seal_share(share, &rec.key_id, rec.epoch, &self.node)?;
        let tx = self.write()?;
        {
            let mut keys = tx.open_table(KEYS).map_err(dberr)?;
            let existing = match keys.get(rec.key_id.as_str()).map_err(dberr)? {
                Some(v) => Some(self.open_record(&rec.key_id, v.value())?),
                None => None,
            };
            match existing {
                None => {}
                Some(old) if old.state == KeyState::Generated => {
                    let mut shares = tx.open_table(SHARES).map_err(dberr)?;
                    shares
                        .remove(share_slot(&rec.key_id, old.epoch).as_str())
                        .map_err(dberr)?;
                }
                Some(_) => {
                    return Err(StorageError::Conflict(format!(
                        "key {} already exists",
                        rec.key_id
                    )))
                }
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

    /// Unseals this node's share of `id` at `epoch`: the share's bytes,
    /// which only `protocol::KeyShare::decode` interprets.
    pub fn share(&self, id: &KeyId, epoch: u64) -> Result<SecretBytes, StorageError> {
        let sealed = self.sealed_share(id, epoch)?;
        self.open_sealed(id, epoch, &sealed)
    }

    /// The sealed bytes of this node's share of `id` at `epoch`, as stored
    /// (what a cache of opened shares compares against).
    pub fn sealed_share(&self, id: &KeyId, epoch: u64) -> Result<Vec<u8>, StorageError> {
        let tx = self.db.begin_read().map_err(dberr)?;
        let t = tx.open_table(SHARES).map_err(dberr)?;
        let v = t
            .get(share_slot(id, epoch).as_str())
            .map_err(dberr)?
            .ok_or_else(|| StorageError::NotFound(format!("share of key {id} epoch {epoch}")))?;
        Ok(v.value().to_vec())
    }

    /// Opens `sealed`, the sealed share of `id` at `epoch`.
    pub fn open_sealed(
        &self,
        id: &KeyId,
        epoch: u64,
        sealed: &[u8],
    ) -> Result<SecretBytes, StorageError> {
        self.kek.open_share(sealed, id, epoch, &self.node)
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

    /// Sets `state` and keeps `proof` (what changed it, opaque to the store)
    /// in one transaction.
    pub fn set_state_with_proof(
        &self,
        id: &KeyId,
        state: KeyState,
        lifecycle_seq: u64,
        proof: &[u8],
    ) -> Result<(), StorageError> {
        let tx = self.write()?;
        {
            let mut keys = tx.open_table(KEYS).map_err(dberr)?;
            let mut rec = match keys.get(id.as_str()).map_err(dberr)? {
                Some(v) => self.open_record(id, v.value())?,
                None => return Err(StorageError::NotFound(format!("key {id}"))),
            };
            rec.state = state;
            rec.lifecycle_seq = lifecycle_seq;
            keys.insert(id.as_str(), self.seal_record(&rec)?.as_slice())
                .map_err(dberr)?;
            let mut t = tx.open_table(LIFECYCLE).map_err(dberr)?;
            t.insert(id.as_str(), self.seal_mac(id, proof.to_vec())?.as_slice())
                .map_err(dberr)?;
        }
        tx.commit().map_err(dberr)
    }

    /// What last changed the key's state through `set_state_with_proof`.
    pub fn lifecycle_proof(&self, id: &KeyId) -> Result<Option<Vec<u8>>, StorageError> {
        let tx = self.db.begin_read().map_err(dberr)?;
        let t = tx.open_table(LIFECYCLE).map_err(dberr)?;
        match t.get(id.as_str()).map_err(dberr)? {
            Some(v) => Ok(Some(
                self.open_mac(id, "lifecycle proof", v.value())?.to_vec(),
            )),
            None => Ok(None),
        }
    }

    /// Activates a generated key whose keygen `proof` names (every committee
    /// node confirmed it), keeping its activation `certificate`. Returns
    /// false if it is already active.
    pub fn activate_generated(
        &self,
        id: &KeyId,
        proof: &super::RotationProof,
        certificate: &[u8],
    ) -> Result<bool, StorageError> {
        let tx = self.write()?;
        {
            let mut keys = tx.open_table(KEYS).map_err(dberr)?;
            let mut rec = match keys.get(id.as_str()).map_err(dberr)? {
                Some(v) => self.open_record(id, v.value())?,
                None => return Err(StorageError::NotFound(format!("key {id}"))),
            };
            if rec.rotation.as_ref() != Some(proof) {
                return Err(StorageError::Conflict(format!(
                    "key {id} was generated by another keygen"
                )));
            }
            if rec.state != KeyState::Generated {
                return Ok(false);
            }
            rec.state = KeyState::Active;
            keys.insert(id.as_str(), self.seal_record(&rec)?.as_slice())
                .map_err(dberr)?;
            self.put_activation(&tx, id, certificate)?;
        }
        tx.commit().map_err(dberr)?;
        Ok(true)
    }
}
