//! Per-key signing bans: a committee node this node caught misbehaving in a
//! session of a key (an attributable abort its own engine detected) is never
//! signed with again for that key, here, until an admin clears the bans
//! (checklist 11; in DKLs23 a failed OT consistency check may have leaked
//! bits of this node's share to the counterparty, so running with it again
//! is not safe).

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use super::{dberr, StorageError, Store};
use crate::domain::{KeyId, NodeName};

/// "key\0node" -> the ban (MACed JSON).
pub(super) const BANS: TableDefinition<&str, &[u8]> = TableDefinition::new("bans");
/// Key id -> the elimination in progress (MACed JSON): after a final
/// signature failed with nobody blamed, the nodes one of which sent the bad
/// share, as far as this node can tell.
pub(super) const ELIMINATIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("eliminations");

/// The search for the sender of a bad signature share (`node/bans.rs`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Elimination {
    /// The nodes still suspected: the other signers of every failed session
    /// since the search began (one of them sent the bad share).
    pub suspects: Vec<String>,
    /// When the search began (Unix seconds).
    pub since_unix: u64,
    /// The sessions that failed (hex execution ids), oldest first.
    pub sessions: Vec<String>,
}

/// A node this node refuses to sign a key with.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Ban {
    pub node: String,
    /// When it was recorded (Unix seconds).
    pub since_unix: u64,
    /// The session whose failure caused it (hex execution id).
    pub eid: String,
    /// What the engine reported.
    pub reason: String,
}

impl std::fmt::Display for Ban {
    /// "name (since Unix S, session EID: reason)".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (since Unix {}, session {}: {})",
            self.node, self.since_unix, self.eid, self.reason
        )
    }
}

fn slot(key: &KeyId, node: &str) -> String {
    format!("{key}\u{0}{node}")
}

impl Store {
    /// Records a ban of `ban.node` for `key` (the first one stays: it says
    /// when the node was first caught).
    pub fn ban(&self, key: &KeyId, ban: &Ban) -> Result<(), StorageError> {
        NodeName::parse(&ban.node).map_err(|e| StorageError::Conflict(e.to_string()))?;
        let tx = self.write()?;
        {
            let mut t = tx.open_table(BANS).map_err(dberr)?;
            let at = slot(key, &ban.node);
            if t.get(at.as_str()).map_err(dberr)?.is_none() {
                let body = self.seal_mac_json(key, ban)?;
                t.insert(at.as_str(), body.as_slice()).map_err(dberr)?;
            }
        }
        tx.commit().map_err(dberr)
    }

    /// The nodes banned for `key` here.
    pub fn bans(&self, key: &KeyId) -> Result<Vec<Ban>, StorageError> {
        let tx = self.db.begin_read().map_err(dberr)?;
        let t = tx.open_table(BANS).map_err(dberr)?;
        let from = slot(key, "");
        let mut out = Vec::new();
        for item in t.range(from.as_str()..).map_err(dberr)? {
            let (k, v) = item.map_err(dberr)?;
            let Some(node) = k.value().strip_prefix(from.as_str()) else {
                break;
            };
            let ban: Ban = self.open_mac_json(key, "ban", v.value())?;
            if ban.node != node {
                return Err(StorageError::Corrupt {
                    what: format!("ban of node {node} for key {key}"),
                    reason: format!("it names node {}", ban.node),
                });
            }
            out.push(ban);
        }
        Ok(out)
    }

    /// The elimination in progress for `key` here, if any.
    pub fn elimination(&self, key: &KeyId) -> Result<Option<Elimination>, StorageError> {
        let tx = self.db.begin_read().map_err(dberr)?;
        let t = tx.open_table(ELIMINATIONS).map_err(dberr)?;
        let v = t.get(key.as_str()).map_err(dberr)?;
        match v {
            Some(v) => self.open_mac_json(key, "elimination", v.value()).map(Some),
            None => Ok(None),
        }
    }

    /// Records (or, with `None`, ends) the elimination of `key`, durably.
    pub fn set_elimination(
        &self,
        key: &KeyId,
        e: Option<&Elimination>,
    ) -> Result<(), StorageError> {
        let tx = self.write()?;
        {
            let mut t = tx.open_table(ELIMINATIONS).map_err(dberr)?;
            match e {
                Some(e) => {
                    let body = self.seal_mac_json(key, e)?;
                    t.insert(key.as_str(), body.as_slice()).map_err(dberr)?;
                }
                None => {
                    t.remove(key.as_str()).map_err(dberr)?;
                }
            }
        }
        tx.commit().map_err(dberr)
    }

    /// Clears every ban of `key` here, and any elimination in progress;
    /// returns how many bans there were.
    pub fn clear_bans(&self, key: &KeyId) -> Result<usize, StorageError> {
        let from = slot(key, "");
        let tx = self.write()?;
        tx.open_table(ELIMINATIONS)
            .map_err(dberr)?
            .remove(key.as_str())
            .map_err(dberr)?;
        let n = {
            let mut t = tx.open_table(BANS).map_err(dberr)?;
            let mut slots = Vec::new();
            for item in t.range(from.as_str()..).map_err(dberr)? {
                let (k, _) = item.map_err(dberr)?;
                if !k.value().starts_with(from.as_str()) {
                    break;
                }
                slots.push(k.value().to_owned());
            }
            for s in &slots {
                t.remove(s.as_str()).map_err(dberr)?;
            }
            slots.len()
        };
        tx.commit().map_err(dberr)?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::SecretBytes;

    #[test]
    fn a_ban_is_kept_per_key_until_cleared_and_the_first_one_stays() {
        let dir = tempfile::tempdir().unwrap();
        let me = NodeName::parse("a").unwrap();
        let store = Store::open(dir.path(), &me, &SecretBytes::new(b"pw".to_vec())).unwrap();
        let k = KeyId::parse("k").unwrap();
        let k2 = KeyId::parse("k2").unwrap();
        let ban = |node: &str, reason: &str| Ban {
            node: node.into(),
            since_unix: 7,
            eid: "00".into(),
            reason: reason.into(),
        };
        store.ban(&k, &ban("c", "first")).unwrap();
        store.ban(&k, &ban("c", "second")).unwrap();
        store.ban(&k, &ban("b", "x")).unwrap();
        store.ban(&k2, &ban("b", "other key")).unwrap();
        assert!(store.ban(&k, &ban("not a name!", "x")).is_err());
        let bans = store.bans(&k).unwrap();
        assert_eq!(
            bans.iter().map(|b| b.node.as_str()).collect::<Vec<_>>(),
            ["b", "c"]
        );
        assert_eq!(bans[1].reason, "first");
        assert_eq!(store.clear_bans(&k).unwrap(), 2);
        assert!(store.bans(&k).unwrap().is_empty());
        assert_eq!(store.bans(&k2).unwrap().len(), 1, "another key's bans stay");
    }
}
