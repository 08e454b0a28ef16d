//! Public records kept in the store, with a schema version on each.

use serde::{Deserialize, Serialize};

use super::StorageError;
use crate::domain::{KeyId, KeyType};

/// Current schema of `KeyRecord` and `LedgerEntry`.
pub const SCHEMA: u16 = 1;

/// The schema of a key record of any key type but secp256k1. A binary that
/// knows only schema 1 refuses such a record ("unknown schema 2") instead of
/// reading it as a secp256k1 key; secp256k1 records stay schema 1, byte for
/// byte as format 1 wrote them.
pub const SCHEMA_KEY_TYPE: u16 = 2;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyState {
    Active,
    /// Frozen until an admin acts; the reason says why.
    Frozen(String),
    Retired,
    /// Rebuilt by repair; cannot sign until the refresh that follows activates.
    Repairing,
    /// Joining the committee in a reshare: a share is staged but not active
    /// until that reshare's epoch is activated. Holds the old record.
    Joining,
    /// Keygen finished on this node and its share is stored, but the key is
    /// not active until every committee node confirmed the same result and
    /// the coordinator activated it with that proof (`rotation`).
    Generated,
    /// Deleted by an approved admin request (the reason says which): no
    /// share is left; the record stays as a tombstone so the name is not
    /// reused, and the ledger and audit entries stay.
    Deleted(String),
}

impl KeyState {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Frozen(_) => "frozen",
            Self::Retired => "retired",
            Self::Repairing => "repairing",
            Self::Joining => "joining",
            Self::Generated => "generated",
            Self::Deleted(_) => "deleted",
        }
    }
}

/// The public record of a key (no secret material).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub schema: u16,
    #[serde(with = "key_id_serde")]
    pub key_id: KeyId,
    /// Compressed SEC1 public key.
    pub public_key: Vec<u8>,
    pub chain_code: [u8; 32],
    /// Node names in party order (index i+1 is committee[i]).
    pub committee: Vec<String>,
    pub threshold: u8,
    pub epoch: u64,
    pub state: KeyState,
    pub package_hash: [u8; 32],
    /// The public key package (group key and every party's verifying share)
    /// of the active epoch, bincode, hex encoded. Needed to repair a share.
    pub package: String,
    /// The rotation that activated this epoch (none for the keygen epoch).
    #[serde(default)]
    pub rotation: Option<RotationProof>,
    pub created_unix: u64,
    /// The key's curve. Absent in records of secp256k1 keys (format 1 wrote
    /// none), so their encoding is unchanged.
    #[serde(default, skip_serializing_if = "KeyType::is_default")]
    pub key_type: KeyType,
    /// How many freezes, unfreezes and deletes were applied to the key here.
    /// A freeze, unfreeze or delete request names the sequence it applies
    /// to, and a signing session the sequence its coordinator holds: a node
    /// at another sequence refuses both. Absent (0) in records written before
    /// it existed, so their encoding is unchanged.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lifecycle_seq: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// Names one rotation: its execution id and the confirmation every party agreed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationProof {
    pub eid: [u8; 32],
    pub confirmation: [u8; 32],
}

/// What this node signed for one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub schema: u16,
    pub request_id: String,
    pub digest: [u8; 32],
    pub path: String,
    pub eid: [u8; 32],
    pub unix: u64,
    /// The finished signature, once this node has assembled and verified it.
    #[serde(default)]
    pub result: Option<LedgerResult>,
    /// The request's slot ("scope height/round/step"), if it had one.
    #[serde(default)]
    pub slot: Option<String>,
}

/// The highest slot position signed for one (key, scope), and for what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watermark {
    pub height: u64,
    pub round: u64,
    pub step: u64,
    pub digest: [u8; 32],
    pub request_id: String,
}

/// A signature recorded for a request id, returned again for a repeat of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerResult {
    pub r: [u8; 32],
    pub s: [u8; 32],
    pub recovery_id: u8,
    pub public_key: Vec<u8>,
    pub participants: Vec<String>,
    pub epoch: u64,
}

mod key_id_serde {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::domain::KeyId;

    pub fn serialize<S: Serializer>(k: &KeyId, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(k.as_str())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<KeyId, D::Error> {
        let raw = String::deserialize(d)?;
        KeyId::parse(&raw).map_err(serde::de::Error::custom)
    }
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, StorageError> {
    serde_json::to_vec(v).map_err(|e| StorageError::Db(format!("encode record: {e}")))
}

fn decode<T: serde::de::DeserializeOwned>(what: &str, b: &[u8]) -> Result<T, StorageError> {
    serde_json::from_slice(b).map_err(|e| StorageError::Corrupt {
        what: what.into(),
        reason: e.to_string(),
    })
}

impl KeyRecord {
    /// The schema a record of this key type is written with.
    fn schema_for(key_type: KeyType) -> u16 {
        if key_type.is_default() {
            SCHEMA
        } else {
            SCHEMA_KEY_TYPE
        }
    }

    pub fn encode(&self) -> Result<Vec<u8>, StorageError> {
        let schema = Self::schema_for(self.key_type);
        if self.schema == schema {
            return encode(self);
        }
        let mut r = self.clone();
        r.schema = schema;
        encode(&r)
    }

    pub fn decode(b: &[u8]) -> Result<Self, StorageError> {
        let r: Self = decode("key record", b)?;
        if r.schema != Self::schema_for(r.key_type) {
            return Err(StorageError::Corrupt {
                what: "key record".into(),
                reason: format!("unknown schema {} for a {} key", r.schema, r.key_type),
            });
        }
        Ok(r)
    }
}

impl LedgerEntry {
    pub fn encode(&self) -> Result<Vec<u8>, StorageError> {
        encode(self)
    }
    pub fn decode(b: &[u8]) -> Result<Self, StorageError> {
        decode("ledger entry", b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(key_type: KeyType) -> KeyRecord {
        KeyRecord {
            schema: SCHEMA,
            key_id: KeyId::parse("k").unwrap(),
            public_key: vec![2; 33],
            chain_code: [1; 32],
            committee: vec!["a".into(), "b".into()],
            threshold: 2,
            epoch: 0,
            state: KeyState::Active,
            package_hash: [0; 32],
            package: String::new(),
            rotation: None,
            created_unix: 0,
            key_type,
            lifecycle_seq: 0,
        }
    }

    #[test]
    fn a_p256_record_is_schema_2_so_a_schema_1_reader_refuses_it() {
        let bytes = rec(KeyType::P256).encode().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["schema"], 2);
        assert_eq!(v["key_type"], "p256");
        let back = KeyRecord::decode(&bytes).unwrap();
        assert_eq!(back.key_type, KeyType::P256);
        // What a format-1 binary checks: schema 1 only.
        assert_ne!(v["schema"], SCHEMA);
        // A secp256k1 record keeps schema 1 and no key_type field.
        let bytes = rec(KeyType::Secp256k1).encode().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["schema"], 1);
        assert!(v.get("key_type").is_none());
        // A record that claims schema 1 but a P-256 key is refused.
        let mut forged: serde_json::Value =
            serde_json::from_slice(&rec(KeyType::P256).encode().unwrap()).unwrap();
        forged["schema"] = 1.into();
        assert!(KeyRecord::decode(&serde_json::to_vec(&forged).unwrap()).is_err());
    }
}
