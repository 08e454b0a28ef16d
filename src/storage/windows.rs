//! Rolling-window spends: what each client spent with each key per scope
//! (a chain's native value, a token, a Bitcoin network, a Cosmos denom), as
//! this node admitted it or heard of it by the committee's gossip. A spend
//! is counted once per entry (the payload's hash), whichever request id or
//! PSBT input brings it, and is checked against its limit and recorded in the
//! same write transaction as the admission: two spends that would together
//! pass the limit are never both admitted here.
//!
//! A spend is first *reserved* by the coordinator's gossip to every
//! committee node, before any session is proposed, under that node's name
//! and attempt (its *holder*); a coordinator whose reservation was refused
//! somewhere releases its own holding, and a spend is dropped only once no
//! holder is left and no signing session was admitted with it. A signing
//! admission marks the spend *admitted*, and that is never released: it is
//! the node's own record of what it may have signed. The slot gossip holds
//! a spend under a holder no release names.

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use super::{dberr, StorageError, Store};
use crate::domain::KeyId;

/// "key\0client\0scope\0entry" -> the spend (MACed JSON).
pub(super) const WINDOWS: TableDefinition<&str, &[u8]> = TableDefinition::new("windows");

/// A spend to count against a rolling window.
#[derive(Debug, Clone, Copy)]
pub struct WindowClaim<'a> {
    pub client: &'a str,
    /// What is counted (`eth:1:value`, `bitcoin:regtest`, ...).
    pub scope: &'a str,
    /// What identifies the spend: the same entry is counted once.
    pub entry: &'a str,
    pub amount: u128,
    pub limit: u128,
    /// How far back the window counts.
    pub secs: u64,
    /// The policy knob and the words for what is counted, for the refusal.
    pub knob: &'a str,
    pub what: &'a str,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Spent {
    unix: u64,
    /// A decimal u128 (JSON numbers stop at 2^53 in many readers).
    amount: String,
    /// A signing session was admitted with it here.
    #[serde(default)]
    admitted: bool,
    /// Who reserved it ("node/attempt"); each may release only its own.
    #[serde(default)]
    holders: Vec<String>,
}

/// The most holders one spend keeps (coordinators and their attempts);
/// one more makes the spend permanent, as if admitted (it is counted for
/// its window rather than dropped by some holder's release).
const MAX_HOLDERS: usize = 16;

/// How a claim holds its spend.
#[derive(Debug, Clone, Copy)]
pub enum Hold<'a> {
    /// A signing admission: counted for good.
    Admit,
    /// A reservation by a holder ("node/attempt"): released if the request
    /// goes no further.
    Reserve(&'a str),
}

fn prefix(key: &KeyId, client: &str, scope: &str) -> String {
    format!("{key}\u{0}{client}\u{0}{scope}\u{0}")
}

/// What a window holds for claim `c`: the total within its window, whether
/// `c`'s entry is among it already, and the spends that fell out of it.
fn tally(
    store: &Store,
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &KeyId,
    c: &WindowClaim<'_>,
    now_unix: u64,
) -> Result<(u128, bool, Vec<String>), StorageError> {
    let start = prefix(key, c.client, c.scope);
    let end = format!("{key}\u{0}{}\u{0}{}\u{1}", c.client, c.scope);
    let since = now_unix.saturating_sub(c.secs);
    let (mut total, mut recorded, mut stale) = (0u128, false, Vec::new());
    for row in t.range(start.as_str()..end.as_str()).map_err(dberr)? {
        let (k, v) = row.map_err(dberr)?;
        let spent: Spent = store.open_mac_json(key, "window spend", v.value())?;
        if spent.unix < since {
            stale.push(k.value().to_owned());
            continue;
        }
        recorded |= k.value().strip_prefix(start.as_str()) == Some(c.entry);
        let amount = spent.amount.parse::<u128>().unwrap_or(u128::MAX);
        total = total.saturating_add(amount);
    }
    Ok((total, recorded, stale))
}

/// The refusal of `c` over `total` already spent, if it does not fit.
fn verdict(key: &KeyId, c: &WindowClaim<'_>, total: u128) -> Result<(), StorageError> {
    let after = total.saturating_add(c.amount);
    if after <= c.limit {
        return Ok(());
    }
    Err(StorageError::WindowExceeded(format!(
        "{}: {} {} would bring the last {} h to {after}, over its limit {} ({total} spent \
         already by this client with key {key})",
        c.knob,
        c.what,
        c.amount,
        c.secs / 3600,
        c.limit
    )))
}

impl Store {
    /// Checks every claim against its window and records it, inside an
    /// admission's write transaction. A claim whose entry is recorded
    /// already counts nothing more. Spends older than their window are
    /// deleted on the way. Refused: nothing of `tx` may be committed.
    pub(super) fn claim_windows(
        &self,
        tx: &redb::WriteTransaction,
        key: &KeyId,
        claims: &[WindowClaim<'_>],
        now_unix: u64,
        hold: Hold<'_>,
    ) -> Result<(), StorageError> {
        if claims.is_empty() {
            return Ok(());
        }
        let mut t = tx.open_table(WINDOWS).map_err(dberr)?;
        for c in claims {
            let (total, recorded, stale) = tally(self, &t, key, c, now_unix)?;
            for k in stale {
                t.remove(k.as_str()).map_err(dberr)?;
            }
            let slot = format!("{}{}", prefix(key, c.client, c.scope), c.entry);
            let spent = if recorded {
                // Counted already: an admission makes it permanent, another
                // reservation adds its holder (so that one holder's release
                // cannot drop what another still relies on).
                let raw = t
                    .get(slot.as_str())
                    .map_err(dberr)?
                    .map(|v| v.value().to_vec());
                let Some(raw) = raw else { continue };
                let mut spent: Spent = self.open_mac_json(key, "window spend", &raw)?;
                if spent.admitted {
                    continue;
                }
                match hold {
                    Hold::Admit => spent.admitted = true,
                    Hold::Reserve(holder) => {
                        if spent.holders.iter().any(|h| h == holder) {
                            continue;
                        }
                        if spent.holders.len() >= MAX_HOLDERS {
                            // Kept for good rather than forgotten.
                            spent.admitted = true;
                        } else {
                            spent.holders.push(holder.to_owned());
                        }
                    }
                }
                spent
            } else {
                verdict(key, c, total)?;
                Spent {
                    unix: now_unix,
                    amount: c.amount.to_string(),
                    admitted: matches!(hold, Hold::Admit),
                    holders: match hold {
                        Hold::Admit => Vec::new(),
                        Hold::Reserve(holder) => vec![holder.to_owned()],
                    },
                }
            };
            t.insert(slot.as_str(), self.seal_mac_json(key, &spent)?.as_slice())
                .map_err(dberr)?;
        }
        Ok(())
    }

    /// Reserves `claims` for `holder` (checked against their windows) in a
    /// transaction of its own; the slot is not touched.
    pub fn window_reserve(
        &self,
        key: &KeyId,
        claims: &[WindowClaim<'_>],
        now_unix: u64,
        holder: &str,
    ) -> Result<(), StorageError> {
        let tx = self.write()?;
        self.claim_windows(&tx, key, claims, now_unix, Hold::Reserve(holder))?;
        tx.commit().map_err(dberr)
    }

    /// Drops `holder`'s reservation of each of `claims`; a spend goes once
    /// no holder is left and no signing session was admitted with it.
    /// Returns how many spends went.
    pub fn release_windows(
        &self,
        key: &KeyId,
        claims: &[WindowClaim<'_>],
        holder: &str,
    ) -> Result<usize, StorageError> {
        let tx = self.write()?;
        let mut released = 0;
        {
            let mut t = tx.open_table(WINDOWS).map_err(dberr)?;
            for c in claims {
                let slot = format!("{}{}", prefix(key, c.client, c.scope), c.entry);
                let raw = t
                    .get(slot.as_str())
                    .map_err(dberr)?
                    .map(|v| v.value().to_vec());
                let Some(raw) = raw else { continue };
                let mut spent: Spent = self.open_mac_json(key, "window spend", &raw)?;
                if spent.admitted || !spent.holders.iter().any(|h| h == holder) {
                    continue;
                }
                spent.holders.retain(|h| h != holder);
                if spent.holders.is_empty() {
                    t.remove(slot.as_str()).map_err(dberr)?;
                    released += 1;
                } else {
                    t.insert(slot.as_str(), self.seal_mac_json(key, &spent)?.as_slice())
                        .map_err(dberr)?;
                }
            }
        }
        tx.commit().map_err(dberr)?;
        Ok(released)
    }

    /// `claim_windows` in a transaction of its own.
    pub fn window_commit(
        &self,
        key: &KeyId,
        claims: &[WindowClaim<'_>],
        now_unix: u64,
    ) -> Result<(), StorageError> {
        let tx = self.write()?;
        self.claim_windows(&tx, key, claims, now_unix, Hold::Admit)?;
        tx.commit().map_err(dberr)
    }

    /// Would every claim fit its window here? Nothing is recorded (a dry
    /// run, and the coordinator's look before it asks anyone).
    pub fn window_check(
        &self,
        key: &KeyId,
        claims: &[WindowClaim<'_>],
        now_unix: u64,
    ) -> Result<(), StorageError> {
        if claims.is_empty() {
            return Ok(());
        }
        let tx = self.db.begin_read().map_err(dberr)?;
        let t = tx.open_table(WINDOWS).map_err(dberr)?;
        for c in claims {
            let (total, recorded, _) = tally(self, &t, key, c, now_unix)?;
            if !recorded {
                verdict(key, c, total)?;
            }
        }
        Ok(())
    }

    /// What `client` spent with `key` in `scope` within the last `secs`.
    pub fn window_total(
        &self,
        key: &KeyId,
        client: &str,
        scope: &str,
        secs: u64,
        now_unix: u64,
    ) -> Result<u128, StorageError> {
        let tx = self.db.begin_read().map_err(dberr)?;
        let t = tx.open_table(WINDOWS).map_err(dberr)?;
        let probe = WindowClaim {
            client,
            scope,
            entry: "",
            amount: 0,
            limit: 0,
            secs,
            knob: "",
            what: "",
        };
        Ok(tally(self, &t, key, &probe, now_unix)?.0)
    }
}
