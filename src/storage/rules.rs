//! The double-sign and ledger rules as pure functions: what a slot watermark
//! and a ledger entry already recorded say about a new request. No store, no
//! I/O; `ledger.rs` applies them inside its transactions. Table tests below
//! pin every case (the way tmkms tests its double-sign rule).

use super::records::{LedgerEntry, Watermark};

/// A slot position: (height, round, step), ordered lexicographically.
pub type Position = (u64, u64, u64);

/// What the watermark of a (key, scope) says about signing `position` for a digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotVerdict {
    /// Above the watermark (or no watermark yet): raise it to `position`.
    Raise,
    /// The watermark's own position with the same digest: a re-sign, allowed,
    /// nothing to write.
    Resign,
    /// Below the watermark: refused.
    Below { watermark: Position },
    /// The watermark's own position with another digest: refused.
    OtherDigest { watermark: Position },
}

/// The double-sign rule: a position below the watermark is refused, and so is
/// the watermark's own position with another digest.
pub fn slot_verdict(
    current: Option<&Watermark>,
    position: Position,
    digest: &[u8; 32],
) -> SlotVerdict {
    let Some(w) = current else {
        return SlotVerdict::Raise;
    };
    let at = (w.height, w.round, w.step);
    match position.cmp(&at) {
        std::cmp::Ordering::Greater => SlotVerdict::Raise,
        std::cmp::Ordering::Less => SlotVerdict::Below { watermark: at },
        std::cmp::Ordering::Equal if w.digest == *digest => SlotVerdict::Resign,
        std::cmp::Ordering::Equal => SlotVerdict::OtherDigest { watermark: at },
    }
}

/// What the ledger entry already recorded under a request id says about a
/// new entry for the same id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedgerVerdict {
    /// Nothing recorded: write the new entry.
    Write,
    /// The same request (digest, path and slot): the first entry stays;
    /// `signed` if it holds its finished signature.
    Kept { signed: bool },
    /// The id was used for another digest, path or slot: refused.
    Conflict,
}

/// The idempotency rule: a request id names one digest, path and slot forever.
pub fn ledger_verdict(existing: Option<&LedgerEntry>, new: &LedgerEntry) -> LedgerVerdict {
    match existing {
        None => LedgerVerdict::Write,
        Some(old) if old.digest != new.digest || old.path != new.path || old.slot != new.slot => {
            LedgerVerdict::Conflict
        }
        Some(old) => LedgerVerdict::Kept {
            signed: old.result.is_some(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::LedgerResult;

    fn mark(h: u64, r: u64, s: u64, digest: u8) -> Watermark {
        Watermark {
            height: h,
            round: r,
            step: s,
            digest: [digest; 32],
            request_id: "earlier".into(),
        }
    }

    #[test]
    fn slot_rule_table() {
        use SlotVerdict::*;
        // (watermark, position, digest, verdict)
        let rows: &[(Option<Watermark>, Position, u8, SlotVerdict)] = &[
            (None, (0, 0, 0), 1, Raise),
            (None, (u64::MAX, u64::MAX, u64::MAX), 1, Raise),
            (Some(mark(10, 0, 0, 1)), (11, 0, 0), 2, Raise),
            (Some(mark(10, 0, 0, 1)), (10, 0, 1), 2, Raise),
            (Some(mark(10, 0, 0, 1)), (10, 1, 0), 2, Raise),
            (Some(mark(10, 5, 2, 1)), (11, 0, 0), 2, Raise),
            (Some(mark(10, 5, 2, 1)), (10, 5, 2), 1, Resign),
            (
                Some(mark(10, 5, 2, 1)),
                (10, 5, 2),
                2,
                OtherDigest {
                    watermark: (10, 5, 2),
                },
            ),
            (
                Some(mark(10, 5, 2, 1)),
                (10, 5, 1),
                1,
                Below {
                    watermark: (10, 5, 2),
                },
            ),
            (
                Some(mark(10, 5, 2, 1)),
                (10, 4, 9),
                1,
                Below {
                    watermark: (10, 5, 2),
                },
            ),
            (
                Some(mark(10, 5, 2, 1)),
                (9, u64::MAX, u64::MAX),
                1,
                Below {
                    watermark: (10, 5, 2),
                },
            ),
            (
                Some(mark(0, 0, 1, 1)),
                (0, 0, 0),
                1,
                Below {
                    watermark: (0, 0, 1),
                },
            ),
        ];
        for (i, (w, pos, d, want)) in rows.iter().enumerate() {
            assert_eq!(
                slot_verdict(w.as_ref(), *pos, &[*d; 32]),
                *want,
                "row {i}: watermark {w:?}, position {pos:?}, digest {d}"
            );
        }
    }

    fn entry(digest: u8, path: &str, slot: Option<&str>, signed: bool) -> LedgerEntry {
        LedgerEntry {
            schema: 1,
            request_id: "r1".into(),
            digest: [digest; 32],
            path: path.into(),
            eid: [0; 32],
            unix: 0,
            result: signed.then(|| LedgerResult {
                r: [1; 32],
                s: [2; 32],
                recovery_id: 0,
                public_key: vec![2; 33],
                participants: vec!["a".into(), "b".into()],
                epoch: 0,
            }),
            slot: slot.map(str::to_owned),
        }
    }

    #[test]
    fn ledger_rule_table() {
        use LedgerVerdict::*;
        let new = entry(1, "m/0", Some("chain 5/0/0"), false);
        // (recorded entry, verdict for `new`)
        let rows: &[(Option<LedgerEntry>, LedgerVerdict)] = &[
            (None, Write),
            (
                Some(entry(1, "m/0", Some("chain 5/0/0"), false)),
                Kept { signed: false },
            ),
            (
                Some(entry(1, "m/0", Some("chain 5/0/0"), true)),
                Kept { signed: true },
            ),
            (Some(entry(2, "m/0", Some("chain 5/0/0"), false)), Conflict),
            (Some(entry(2, "m/0", Some("chain 5/0/0"), true)), Conflict),
            (Some(entry(1, "m/1", Some("chain 5/0/0"), false)), Conflict),
            (Some(entry(1, "m", Some("chain 5/0/0"), false)), Conflict),
            (Some(entry(1, "m/0", Some("chain 6/0/0"), false)), Conflict),
            (Some(entry(1, "m/0", None, true)), Conflict),
        ];
        for (i, (old, want)) in rows.iter().enumerate() {
            assert_eq!(
                ledger_verdict(old.as_ref(), &new),
                *want,
                "row {i}: {old:?}"
            );
        }
        let unslotted = entry(1, "m/0", None, false);
        assert_eq!(
            ledger_verdict(
                Some(&entry(1, "m/0", Some("chain 5/0/0"), true)),
                &unslotted
            ),
            Conflict
        );
    }
}
