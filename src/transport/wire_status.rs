//! The maintenance part of a share status answer on the peer wire (the
//! activation proof of the reported epoch, a staged epoch, a running
//! session). No I/O.

use super::wire::arr;
use crate::node::{Maintenance, StagedEpoch};
use crate::proto::peer as pb;
use crate::storage::RotationProof;

/// The confirmation of the activation proof and the staged epoch, as sent.
pub(super) fn maintenance_to_pb(m: &Maintenance) -> (Vec<u8>, Option<pb::StagedEpoch>) {
    let confirmation = m
        .activated
        .map(|p| p.confirmation.to_vec())
        .unwrap_or_default();
    let staged = m.staged.as_ref().map(|s| pb::StagedEpoch {
        epoch: s.epoch,
        eid: s.proof.eid.to_vec(),
        confirmation: s.proof.confirmation.to_vec(),
        reshare: s.reshare,
        release_open_ms: u64::try_from(s.release_open_for.as_millis()).unwrap_or(u64::MAX),
        receipt: s
            .receipt
            .as_deref()
            .map(|r| super::wire_auth::receipt_to_pb(r.clone())),
    });
    (confirmation, staged)
}

/// The maintenance part of a status answer (all empty from a node of the
/// previous wire version). The certificate and generated receipt are taken
/// by the caller.
pub(super) fn maintenance_from_pb(s: &mut pb::ShareStatusResult) -> Result<Maintenance, String> {
    let activated = match (s.rotation.is_empty(), s.rotation_confirmation.is_empty()) {
        (false, false) => Some(RotationProof {
            eid: arr(&s.rotation, "rotation")?,
            confirmation: arr(&s.rotation_confirmation, "rotation confirmation")?,
        }),
        _ => None,
    };
    let staged = match s.staged.take() {
        Some(x) => Some(StagedEpoch {
            receipt: match x.receipt {
                Some(r) => Some(Box::new(
                    super::wire_auth::receipt_from_pb(r, "staged")
                        .map_err(|e| e.message().to_owned())?,
                )),
                None => None,
            },
            epoch: x.epoch,
            proof: RotationProof {
                eid: arr(&x.eid, "staged eid")?,
                confirmation: arr(&x.confirmation, "staged confirmation")?,
            },
            reshare: x.reshare,
            // Bounded: a peer cannot make a coordinator wait long.
            release_open_for: std::time::Duration::from_millis(x.release_open_ms.min(60_000)),
        }),
        None => None,
    };
    Ok(Maintenance {
        activated,
        staged,
        running: s.maintaining,
        ..Maintenance::default()
    })
}

/// A slot watermark, as sent in a share status answer.
pub(super) fn watermark_to_pb(scope: String, w: crate::storage::Watermark) -> pb::SlotWatermark {
    pb::SlotWatermark {
        scope,
        height: w.height,
        round: w.round,
        step: w.step,
        digest: w.digest.to_vec(),
        request_id: w.request_id,
    }
}

pub(super) fn watermark_from_pb(
    w: &pb::SlotWatermark,
) -> Result<(String, crate::storage::Watermark), String> {
    Ok((
        w.scope.clone(),
        crate::storage::Watermark {
            height: w.height,
            round: w.round,
            step: w.step,
            digest: arr(&w.digest, "watermark digest")?,
            request_id: w.request_id.clone(),
        },
    ))
}
