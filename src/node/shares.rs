//! This node's shares in memory: opened from the store (which holds them
//! sealed and opaque) and decoded by the protocol module for the key's type.
//! Opening costs as much as a tenth of a signature, so shares opened for
//! signing are kept (zeroized when dropped) and reused while the sealed bytes
//! in the store are the same; any change to them (rotation, repair,
//! retirement, tampering) is seen on the next read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use super::{Node, NodeError};
use crate::domain::KeyId;
use crate::protocol::KeyShare;
use crate::secret::SecretBytes;
use crate::storage::{KeyRecord, StorageError, Store};

/// Opened shares kept for signing; the cache is emptied when it would grow past this.
const MAX_OPENED: usize = 256;

/// Shares opened for signing, by key and epoch, with the sealed bytes each
/// was opened from: a hit needs the stored bytes to be unchanged, so no write
/// path has to remember to invalidate it.
#[derive(Default)]
pub(crate) struct OpenedShares(Mutex<Opened>);

/// (key, epoch) -> the sealed bytes and the share opened from them.
type Opened = HashMap<(KeyId, u64), (Vec<u8>, Arc<KeyShare>)>;

impl OpenedShares {
    fn lock(&self) -> std::sync::MutexGuard<'_, Opened> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The share of `rec`'s key at `epoch` from `store`, opened once and
    /// reused while the sealed bytes stay the same.
    fn get(&self, store: &Store, rec: &KeyRecord, epoch: u64) -> Result<Arc<KeyShare>, NodeError> {
        let id = &rec.key_id;
        let sealed = store.sealed_share(id, epoch)?;
        let slot = (id.clone(), epoch);
        if let Some((bytes, share)) = self.lock().get(&slot) {
            if *bytes == sealed {
                return Ok(share.clone());
            }
        }
        let share = Arc::new(decode(rec, epoch, &store.open_sealed(id, epoch, &sealed)?)?);
        let mut cache = self.lock();
        // Other epochs of this key are not signed with again.
        cache.retain(|(k, _), _| k != id);
        if cache.len() >= MAX_OPENED {
            cache.clear();
        }
        cache.insert(slot.clone(), (sealed.clone(), share.clone()));
        drop(cache);
        // The store may have moved on while this share was being opened
        // (retired, rotated, removed) and its `forget_opened` may have run
        // before the insert above: look again, so no such share stays here.
        if store.sealed_share(id, epoch).ok().as_ref() != Some(&sealed) {
            let mut cache = self.lock();
            if cache.get(&slot).is_some_and(|(b, _)| *b == sealed) {
                cache.remove(&slot);
            }
        }
        Ok(share)
    }
}

/// The bytes a share is sealed as.
pub(crate) fn share_bytes(share: &KeyShare) -> Result<SecretBytes, NodeError> {
    let encoded = share
        .encode()
        .map_err(|e| NodeError::Internal(format!("encode share: {e}")))?;
    Ok(SecretBytes::new(encoded.to_vec()))
}

fn decode(rec: &KeyRecord, epoch: u64, bytes: &SecretBytes) -> Result<KeyShare, NodeError> {
    KeyShare::decode(rec.key_type, bytes.expose()).map_err(|reason| {
        NodeError::from(StorageError::Corrupt {
            what: format!("share of key {} epoch {epoch}", rec.key_id),
            reason,
        })
    })
}

impl Node {
    /// This node's share of `rec`'s key at `epoch`, opened and decoded.
    pub(crate) fn open_share(&self, rec: &KeyRecord, epoch: u64) -> Result<KeyShare, NodeError> {
        decode(rec, epoch, &self.store.share(&rec.key_id, epoch)?)
    }

    /// Like `open_share`, reused across signatures (see the module docs).
    pub(crate) fn signing_share(
        &self,
        rec: &KeyRecord,
        epoch: u64,
    ) -> Result<Arc<KeyShare>, NodeError> {
        self.opened.get(&self.store, rec, epoch).map_err(|e| {
            // The epoch was activated away between the session's checks and
            // the opening of its share: an epoch mismatch (the coordinator
            // signs again at the new epoch), not a missing share.
            let moved = self
                .store
                .key(&rec.key_id)
                .ok()
                .flatten()
                .is_some_and(|now| now.epoch != epoch);
            match e {
                NodeError::Storage(crate::storage::StorageError::NotFound(_)) if moved => {
                    NodeError::EpochMismatch(format!(
                        "key {} moved past epoch {epoch} here while the session started",
                        rec.key_id
                    ))
                }
                other => other,
            }
        })
    }

    /// Drops the opened shares of `key` (after it was retired, removed or
    /// moved to another epoch here).
    pub(crate) fn forget_opened(&self, key: &KeyId) {
        self.opened.lock().retain(|(k, _), _| k != key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{KeyType, NodeName};
    use crate::protocol::{inproc, scheme};
    use crate::storage::KeyState;

    fn record(id: &KeyId, pk: [u8; 33]) -> KeyRecord {
        KeyRecord {
            schema: 1,
            key_id: id.clone(),
            public_key: pk.to_vec(),
            chain_code: [0; 32],
            committee: vec!["a".into(), "b".into()],
            threshold: 2,
            epoch: 0,
            state: KeyState::Active,
            package_hash: [0; 32],
            package: String::new(),
            rotation: None,
            created_unix: 0,
            key_type: KeyType::Secp256k1,
            lifecycle_seq: 0,
        }
    }

    #[test]
    fn a_signing_share_is_reused_only_while_its_sealed_bytes_are_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let node = NodeName::parse("a").unwrap();
        let store = Store::open(dir.path(), &node, &SecretBytes::new(b"p".to_vec())).unwrap();
        let out: Vec<_> = inproc::run(
            (1..=2)
                .map(|i| scheme::keygen(KeyType::Secp256k1, 2, 2, i, &[3; 32]).unwrap())
                .collect(),
            None,
        )
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
        let id = KeyId::parse("k1").unwrap();
        let rec = record(&id, out[0].public_key);
        store
            .insert_key(&rec, &share_bytes(&out[0].share).unwrap())
            .unwrap();
        let cache = OpenedShares::default();
        let first = cache.get(&store, &rec, 0).unwrap();
        assert_eq!(first.party_index(), 1);
        assert!(Arc::ptr_eq(&first, &cache.get(&store, &rec, 0).unwrap()));

        // Another share under the same slot (here: the key removed and created
        // again with party 2's share) is opened afresh, not served from memory.
        store.remove_key(&id).unwrap();
        assert!(cache.get(&store, &rec, 0).is_err());
        store
            .insert_key(&rec, &share_bytes(&out[1].share).unwrap())
            .unwrap();
        let second = cache.get(&store, &rec, 0).unwrap();
        assert_eq!(second.party_index(), 2);
        assert!(!Arc::ptr_eq(&first, &second));

        // Retiring deletes the share: nothing is served from memory after it.
        store.retire(&id).unwrap();
        assert!(cache.get(&store, &rec, 0).is_err());
    }
}
