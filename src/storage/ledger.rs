//! The signing ledger, slot watermarks and execution ids, and the admission
//! of a signing session that writes all three (and its audit entry) in one
//! durable transaction. The rules themselves are pure (`rules.rs`).

use redb::{Durability, ReadableDatabase, ReadableTable};

use super::rules::{ledger_verdict, slot_verdict, LedgerVerdict, SlotVerdict};
use super::{
    dberr, AuditEvent, LedgerEntry, LedgerResult, StorageError, Store, Watermark, ADMIN_REQUESTS,
    EIDS, LEDGER, SLOT_EVIDENCE, WATERMARKS,
};
use crate::domain::{ExecutionId, KeyId};

/// What the admission of a signing session found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    Admitted,
    /// The execution id was claimed before: nothing was written.
    EidUsed,
    /// The request id is in the ledger with another digest, path or slot:
    /// nothing was written.
    RequestIdUsed(String),
    /// The request is in the ledger with its signature: a new session would
    /// only make a second one. Nothing was written.
    AlreadySigned,
    /// The request expired before the eid horizon (see `eids.rs`): refused
    /// without a lookup; nothing was written.
    BelowHorizon,
}

/// A slot a signing session claims: raise (`key`, `scope`) to `position`
/// for `digest`.
#[derive(Debug, Clone, Copy)]
pub struct SlotClaim<'a> {
    pub key: &'a KeyId,
    pub scope: &'a str,
    pub position: (u64, u64, u64),
    pub digest: [u8; 32],
    pub request_id: &'a str,
    /// The client's signed request behind the claim (opaque bytes from the
    /// node), kept beside the watermark it raises so this node can show it
    /// when it refuses a conflicting slot; empty when there is none.
    pub evidence: &'a [u8],
}

/// What `put_ledger` did.
enum LedgerPut {
    Written,
    /// The request was there with the same digest, path and slot; `signed`
    /// if that entry holds its signature.
    Kept {
        signed: bool,
    },
}

/// Writes `entry` into the ledger in `tx`, unless the request id is there
/// already: with the same digest, path and slot the first entry (and any
/// result it holds) stays; with others it is a `Conflict`.
fn put_ledger(
    tx: &redb::WriteTransaction,
    key: &KeyId,
    entry: &LedgerEntry,
) -> Result<LedgerPut, StorageError> {
    let slot = format!("{key}\u{0}{}", entry.request_id);
    let mut t = tx.open_table(LEDGER).map_err(dberr)?;
    let existing = match t.get(slot.as_str()).map_err(dberr)? {
        Some(v) => Some(LedgerEntry::decode(v.value())?),
        None => None,
    };
    match ledger_verdict(existing.as_ref(), entry) {
        LedgerVerdict::Conflict => Err(StorageError::Conflict(format!(
            "request id {} was already used for a different digest, path or slot",
            entry.request_id
        ))),
        LedgerVerdict::Kept { signed } => Ok(LedgerPut::Kept { signed }),
        LedgerVerdict::Write => {
            t.insert(slot.as_str(), entry.encode()?.as_slice())
                .map_err(dberr)?;
            Ok(LedgerPut::Written)
        }
    }
}

impl Store {
    /// Whether an execution id was recorded before (read only).
    pub fn eid_used(&self, eid: &ExecutionId) -> Result<bool, StorageError> {
        let tx = self.db.begin_read().map_err(dberr)?;
        let t = tx.open_table(EIDS).map_err(dberr)?;
        Ok(t.get(eid.as_bytes().as_slice()).map_err(dberr)?.is_some())
    }

    /// Durably records an execution id. Returns false if it was seen before.
    pub fn claim_eid(&self, eid: &ExecutionId, now_unix: u64) -> Result<bool, StorageError> {
        let tx = self.write()?;
        let fresh = {
            let mut t = tx.open_table(EIDS).map_err(dberr)?;
            if t.get(eid.as_bytes().as_slice()).map_err(dberr)?.is_some() {
                false
            } else {
                t.insert(eid.as_bytes().as_slice(), now_unix)
                    .map_err(dberr)?;
                true
            }
        };
        if fresh {
            tx.commit().map_err(dberr)?;
        } else {
            tx.abort().map_err(dberr)?;
        }
        Ok(fresh)
    }

    /// Durably records that this node takes part in step `kind` (keygen,
    /// refresh, repair, reshare, retire) of admin request `request_id`, in
    /// the session `eid`, under the coordinator nonce `nonce` (which binds
    /// the request and its approvals). Returns false for a replay: the same
    /// request id under another nonce, or a second session of a step it
    /// already took part in (a rotation replayed at the next epoch, say).
    /// The same session again (a reshare's retirement) and the next step of
    /// one operation (a repair's closing refresh) are accepted.
    pub fn use_admin_request(
        &self,
        request_id: &str,
        nonce: &[u8],
        kind: &str,
        eid: &ExecutionId,
    ) -> Result<bool, StorageError> {
        let tx = self.write()?;
        let accepted = {
            let mut t = tx.open_table(ADMIN_REQUESTS).map_err(dberr)?;
            let seen = t
                .get(request_id)
                .map_err(dberr)?
                .map(|v| v.value().to_vec());
            let mut rec = match seen {
                None => AdminUse {
                    nonce: hex::encode(nonce),
                    uses: Vec::new(),
                },
                Some(raw) => {
                    serde_json::from_slice::<AdminUse>(&raw).map_err(|e| StorageError::Corrupt {
                        what: format!("admin request record {request_id}"),
                        reason: e.to_string(),
                    })?
                }
            };
            let eid_hex = hex::encode(eid.as_bytes());
            let accepted = if rec.nonce != hex::encode(nonce) {
                false
            } else if rec.uses.iter().any(|(_, e)| *e == eid_hex) {
                true
            } else if rec.uses.iter().any(|(k, _)| k == kind) {
                false
            } else {
                rec.uses.push((kind.to_owned(), eid_hex));
                let body = serde_json::to_vec(&rec).map_err(dberr)?;
                t.insert(request_id, body.as_slice()).map_err(dberr)?;
                true
            };
            accepted
        };
        tx.commit().map_err(dberr)?;
        Ok(accepted)
    }

    /// Durably records that this node is about to release its partial
    /// signature for `entry`. A different digest under the same request id
    /// is refused.
    /// (Signing writes the entry in `admit_sign`; this stands alone for tests.)
    #[cfg(test)]
    pub(crate) fn ledger_commit(
        &self,
        key: &KeyId,
        entry: &LedgerEntry,
    ) -> Result<(), StorageError> {
        let tx = self.write()?;
        if let Err(e) = put_ledger(&tx, key, entry) {
            tx.abort().map_err(dberr)?;
            return Err(e);
        }
        tx.commit().map_err(dberr)
    }

    /// Records the finished signature of a request already in the ledger,
    /// without waiting for the disk: the result becomes durable with the
    /// next durable commit (the next admission). What a
    /// crash in between loses is only the recorded result, a cache of a
    /// public value: the entry itself, which binds the request id to its
    /// digest, was durable before any partial signature left.
    pub fn ledger_complete_lazy(
        &self,
        key: &KeyId,
        request_id: &str,
        result: LedgerResult,
    ) -> Result<(), StorageError> {
        let slot = format!("{key}\u{0}{request_id}");
        let mut tx = self.db.begin_write().map_err(dberr)?;
        tx.set_durability(Durability::None).map_err(dberr)?;
        {
            let mut t = tx.open_table(LEDGER).map_err(dberr)?;
            let mut entry = match t.get(slot.as_str()).map_err(dberr)? {
                Some(v) => LedgerEntry::decode(v.value())?,
                None => {
                    return Err(StorageError::NotFound(format!(
                        "ledger entry {request_id} of key {key}"
                    )))
                }
            };
            entry.result = Some(result);
            t.insert(slot.as_str(), entry.encode()?.as_slice())
                .map_err(dberr)?;
        }
        tx.commit().map_err(dberr)
    }

    /// Double-sign protection: durably raises the watermark of (`key`,
    /// `scope`) to `position` for `digest`. Refuses a position below the
    /// watermark, and the watermark's own position with another digest; the
    /// same position with the same digest (a re-sign) is allowed.
    pub fn watermark_commit(
        &self,
        key: &KeyId,
        scope: &str,
        position: (u64, u64, u64),
        digest: [u8; 32],
        request_id: &str,
        evidence: &[u8],
    ) -> Result<(), StorageError> {
        self.gossip_commit(
            &SlotClaim {
                key,
                scope,
                position,
                digest,
                request_id,
                evidence,
            },
            &[],
            0,
            "",
            None,
        )
    }

    /// What a committee node records of a request it hears of by gossip,
    /// in one transaction: the slot's watermark and the request's
    /// rolling-window spends, held by `holder` (the sender; the slot gossip's
    /// holding is never released).
    /// Either refusal leaves nothing. `allowed`, the audit entry of the
    /// decision, is written in the same transaction (one durable commit
    /// per gossip, not two), as a signer's admission is: a node that cannot
    /// append to its audit log does not take the slot either (the
    /// coordinator logs the gossip as not accepted). A refusal's entry is
    /// the caller's to write.
    pub fn gossip_commit(
        &self,
        slot: &SlotClaim<'_>,
        windows: &[super::WindowClaim<'_>],
        now_unix: u64,
        holder: &str,
        allowed: Option<super::AuditEvent>,
    ) -> Result<(), StorageError> {
        let tx = self.write()?;
        self.raise_watermark(&tx, slot)?;
        let hold = super::windows::Hold::Reserve(holder);
        self.claim_windows(&tx, slot.key, windows, now_unix, hold)?;
        if let Some(event) = allowed {
            self.append_audit(&tx, event, now_unix)?;
        }
        tx.commit().map_err(dberr)
    }

    /// The watermark rule of `watermark_commit`, inside a write transaction.
    fn raise_watermark(
        &self,
        tx: &redb::WriteTransaction,
        c: &SlotClaim<'_>,
    ) -> Result<(), StorageError> {
        let (key, scope, position) = (c.key, c.scope, c.position);
        let slot = format!("{key}\u{0}{scope}");
        let mut t = tx.open_table(WATERMARKS).map_err(dberr)?;
        let current: Option<Watermark> = match t.get(slot.as_str()).map_err(dberr)? {
            Some(v) => Some(self.open_mac_json(key, "slot watermark", v.value())?),
            None => None,
        };
        let (p0, p1, p2) = position;
        match slot_verdict(current.as_ref(), position, &c.digest) {
            SlotVerdict::Raise => {}
            SlotVerdict::Resign => return Ok(()),
            SlotVerdict::Below {
                watermark: (h, r, st),
            } => {
                return Err(StorageError::SlotBelowWatermark(format!(
                    "slot {scope} {p0}/{p1}/{p2} of key {key} is below its watermark {h}/{r}/{st} \
                     (double-sign protection)"
                )))
            }
            SlotVerdict::OtherDigest {
                watermark: (h, r, st),
            } => {
                let by = current
                    .as_ref()
                    .map(|w| w.request_id.as_str())
                    .unwrap_or_default();
                return Err(StorageError::SlotOtherDigest(format!(
                    "slot {scope} {h}/{r}/{st} of key {key} was already signed for another digest \
                     (request {by}); refused (double-sign protection)"
                )));
            }
        }
        let w = Watermark {
            height: position.0,
            round: position.1,
            step: position.2,
            digest: c.digest,
            request_id: c.request_id.to_owned(),
        };
        t.insert(slot.as_str(), self.seal_mac_json(key, &w)?.as_slice())
            .map_err(dberr)?;
        let mut ev = tx.open_table(SLOT_EVIDENCE).map_err(dberr)?;
        if c.evidence.is_empty() {
            ev.remove(slot.as_str()).map_err(dberr)?;
        } else {
            ev.insert(slot.as_str(), c.evidence).map_err(dberr)?;
        }
        Ok(())
    }

    /// The evidence kept with the watermark of (`key`, `scope`): the
    /// client's signed request that set it, as the node stored it.
    pub fn slot_evidence(&self, key: &KeyId, scope: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let tx = self.db.begin_read().map_err(dberr)?;
        let t = tx.open_table(SLOT_EVIDENCE).map_err(dberr)?;
        let slot = format!("{key}\u{0}{scope}");
        let v = t.get(slot.as_str()).map_err(dberr)?;
        Ok(v.map(|v| v.value().to_vec()))
    }

    /// Admits a signing session in one durable transaction: claims `eid`
    /// (`EidUsed` if it was used before), writes the request's ledger entry
    /// (`RequestIdUsed` if the id is there with another digest, path or
    /// slot; `AlreadySigned` if it is there with its signature), raises the
    /// slot watermark if there is one (a conflict is a `Conflict` error), and
    /// appends the audit entry saying so. Any refusal writes nothing. One
    /// disk sync for all of it.
    pub fn admit_sign(
        &self,
        (eid, expiry_unix): (&ExecutionId, u64),
        now_unix: u64,
        ledger: (&KeyId, &LedgerEntry),
        slot: Option<SlotClaim<'_>>,
        windows: &[super::WindowClaim<'_>],
        event: AuditEvent,
    ) -> Result<Admission, StorageError> {
        let tx = self.write()?;
        if !super::eids::admit(&tx, eid, expiry_unix, now_unix)? {
            tx.abort().map_err(dberr)?;
            return Ok(Admission::BelowHorizon);
        }
        {
            let mut t = tx.open_table(EIDS).map_err(dberr)?;
            if t.get(eid.as_bytes().as_slice()).map_err(dberr)?.is_some() {
                drop(t);
                tx.abort().map_err(dberr)?;
                return Ok(Admission::EidUsed);
            }
            t.insert(eid.as_bytes().as_slice(), now_unix)
                .map_err(dberr)?;
        }
        match put_ledger(&tx, ledger.0, ledger.1) {
            Ok(LedgerPut::Written | LedgerPut::Kept { signed: false }) => {}
            Ok(LedgerPut::Kept { signed: true }) => {
                tx.abort().map_err(dberr)?;
                return Ok(Admission::AlreadySigned);
            }
            Err(StorageError::Conflict(m)) => {
                tx.abort().map_err(dberr)?;
                return Ok(Admission::RequestIdUsed(m));
            }
            Err(e) => return Err(e),
        }
        if let Some(c) = &slot {
            self.raise_watermark(&tx, c)?;
        }
        self.claim_windows(
            &tx,
            ledger.0,
            windows,
            now_unix,
            super::windows::Hold::Admit,
        )?;
        self.append_audit(&tx, event, now_unix)?;
        tx.commit().map_err(dberr)?;
        Ok(Admission::Admitted)
    }

    /// The slot watermark of (`key`, `scope`), if any.
    pub fn watermark(&self, key: &KeyId, scope: &str) -> Result<Option<Watermark>, StorageError> {
        let slot = format!("{key}\u{0}{scope}");
        let tx = self.db.begin_read().map_err(dberr)?;
        let t = tx.open_table(WATERMARKS).map_err(dberr)?;
        match t.get(slot.as_str()).map_err(dberr)? {
            Some(v) => self
                .open_mac_json(key, "slot watermark", v.value())
                .map(Some),
            None => Ok(None),
        }
    }

    pub fn ledger_get(
        &self,
        key: &KeyId,
        request_id: &str,
    ) -> Result<Option<LedgerEntry>, StorageError> {
        let slot = format!("{key}\u{0}{request_id}");
        let tx = self.db.begin_read().map_err(dberr)?;
        let t = tx.open_table(LEDGER).map_err(dberr)?;
        match t.get(slot.as_str()).map_err(dberr)? {
            Some(v) => LedgerEntry::decode(v.value()).map(Some),
            None => Ok(None),
        }
    }
}

/// What the store keeps of an admin request: the nonce it was first used
/// under and the steps (kind, eid hex) this node took part in.
#[derive(serde::Serialize, serde::Deserialize)]
struct AdminUse {
    nonce: String,
    uses: Vec<(String, String)>,
}
