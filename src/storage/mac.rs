//! MACed public values: a key record, a watermark or a staged-epoch entry is
//! stored as its body followed by an HMAC under the KEK bound to the key id,
//! so an edited record, or one copied from another key, is refused.

use super::{KeyId, KeyRecord, StorageError, Store};

impl Store {
    /// `body` followed by its MAC, bound to key `id`.
    pub(super) fn seal_mac(&self, id: &KeyId, mut body: Vec<u8>) -> Result<Vec<u8>, StorageError> {
        let mac = self.kek.record_mac(id, &body)?;
        body.extend_from_slice(&mac);
        Ok(body)
    }

    /// The body of a MACed value of key `id`, once its MAC checks; `what`
    /// names it in the error.
    pub(super) fn open_mac<'a>(
        &self,
        id: &KeyId,
        what: &str,
        raw: &'a [u8],
    ) -> Result<&'a [u8], StorageError> {
        let corrupt = |reason: &str| StorageError::Corrupt {
            what: format!("{what} of key {id}"),
            reason: reason.into(),
        };
        let split = raw
            .len()
            .checked_sub(32)
            .ok_or_else(|| corrupt("too short"))?;
        let (body, mac) = raw.split_at(split);
        if !ct_eq(&self.kek.record_mac(id, body)?, mac) {
            return Err(corrupt(
                "authentication failed (edited, or copied from another key)",
            ));
        }
        Ok(body)
    }

    /// A key record as stored.
    pub(super) fn seal_record(&self, rec: &KeyRecord) -> Result<Vec<u8>, StorageError> {
        self.seal_mac(&rec.key_id, rec.encode()?)
    }

    /// The key record `raw` (as stored under `id`) holds, once its MAC
    /// checks. Records read often (every signing session reads its key's
    /// several times at each node) are remembered by their stored bytes: a
    /// record byte for byte equal to one already opened under the same id is
    /// the same record, so it is not checked and decoded again; any change
    /// to the stored bytes is opened afresh.
    pub(super) fn open_record(&self, id: &KeyId, raw: &[u8]) -> Result<KeyRecord, StorageError> {
        if let Some(rec) = self.opened_records.get(id, raw) {
            return Ok(rec);
        }
        let rec = KeyRecord::decode(self.open_mac(id, "record", raw)?)?;
        if rec.key_id != *id {
            return Err(StorageError::Corrupt {
                what: format!("record of key {id}"),
                reason: "record names another key".into(),
            });
        }
        self.opened_records.put(id, raw, &rec);
        Ok(rec)
    }

    /// A small value as stored: JSON, then its MAC.
    pub(super) fn seal_mac_json<T: serde::Serialize>(
        &self,
        id: &KeyId,
        v: &T,
    ) -> Result<Vec<u8>, StorageError> {
        let body = serde_json::to_vec(v).map_err(|e| StorageError::Db(e.to_string()))?;
        self.seal_mac(id, body)
    }

    pub(super) fn open_mac_json<T: serde::de::DeserializeOwned>(
        &self,
        id: &KeyId,
        what: &str,
        raw: &[u8],
    ) -> Result<T, StorageError> {
        serde_json::from_slice(self.open_mac(id, what, raw)?).map_err(|e| StorageError::Corrupt {
            what: format!("{what} of key {id}"),
            reason: e.to_string(),
        })
    }
}

/// Constant-time comparison of a computed MAC with a stored one.
pub(super) fn ct_eq(a: &[u8; 32], b: &[u8]) -> bool {
    b.len() == 32 && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Key records already opened, by key id, with the stored bytes they were
/// opened from (see `Store::open_record`); at most `OpenedRecords::MAX`.
#[derive(Debug, Default)]
pub(super) struct OpenedRecords(
    std::sync::Mutex<std::collections::HashMap<KeyId, (Vec<u8>, KeyRecord)>>,
);

impl OpenedRecords {
    const MAX: usize = 4096;

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<KeyId, (Vec<u8>, KeyRecord)>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn get(&self, id: &KeyId, raw: &[u8]) -> Option<KeyRecord> {
        self.lock()
            .get(id)
            .filter(|(stored, _)| stored.as_slice() == raw)
            .map(|(_, rec)| rec.clone())
    }

    fn put(&self, id: &KeyId, raw: &[u8], rec: &KeyRecord) {
        let mut m = self.lock();
        if m.len() >= Self::MAX && !m.contains_key(id) {
            m.clear();
        }
        m.insert(id.clone(), (raw.to_vec(), rec.clone()));
    }
}
