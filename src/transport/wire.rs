//! Conversions between the node's proposal types and the peer proto: every
//! field a peer sends is parsed into a validated type here (or refused with
//! the field named). A refusal travels as its reason code (`refusal.rs`).
//! No I/O; `peer.rs` serves and calls.

use tonic::Status;

use super::wire_auth::{
    answer_receipt, certificate_from_pb, certificate_to_pb, receipt_from_pb, receipt_to_pb,
    sign_request_from_pb, sign_request_to_pb,
};
use super::wire_records::{ledger_from_pb, ledger_to_pb, record_from_pb, record_to_pb};
use super::wire_status::{maintenance_from_pb, maintenance_to_pb};
use crate::domain::{ExecutionId, KeyId, KeyType, NodeName, MAX_ROSTER};
use crate::node::{
    Maintenance, Operation, Outcome, Proposal, WindowStep, MIN_WIRE_VERSION, WIRE_VERSION,
};
use crate::proto::peer as pb;
use crate::protocol::sign::Signature;

/// Refuses a message of a wire version other than this node's or the one
/// before it (a rolling upgrade runs N and N-1 side by side), naming both.
pub(super) fn check_version(v: u32) -> Result<(), Status> {
    if v != WIRE_VERSION && v != MIN_WIRE_VERSION {
        return Err(Status::failed_precondition(format!(
            "wire version mismatch: this node speaks {MIN_WIRE_VERSION} and {WIRE_VERSION} \
             (thresig {}), peer sent {v}",
            env!("CARGO_PKG_VERSION")
        )));
    }
    Ok(())
}

pub(super) fn bad(field: &str, e: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {e}"))
}

/// A list of node names, refused past the largest roster before anything
/// is parsed (a peer cannot make a node parse or compare more).
pub(super) fn names(raw: &[String], field: &str) -> Result<Vec<NodeName>, Status> {
    if raw.len() > MAX_ROSTER {
        return Err(bad(
            field,
            format!(
                "{} names; a cluster has at most {MAX_ROSTER} nodes",
                raw.len()
            ),
        ));
    }
    raw.iter()
        .map(|n| NodeName::parse(n).map_err(|e| bad(field, e)))
        .collect()
}

pub(super) fn proposal_from_pb(req: pb::ProposeRequest) -> Result<Proposal, Status> {
    check_version(req.wire_version)?;
    let eid = ExecutionId::from_slice(&req.eid).ok_or_else(|| bad("eid", "must be 32 bytes"))?;
    let op = match req.op.ok_or_else(|| bad("op", "missing"))? {
        pb::propose_request::Op::ShareStatus(s) => Operation::ShareStatus {
            key_id: KeyId::parse(&s.key_id).map_err(|e| bad("key_id", e))?,
            request_id: (!s.request_id.is_empty()).then_some(s.request_id),
            watermarks: s.watermarks,
            evidence: s.evidence,
        },
        pb::propose_request::Op::Repair(r) => {
            let key_id = KeyId::parse(&r.key_id).map_err(|e| bad("key_id", e))?;
            Operation::Repair {
                record: Box::new(record_from_pb(&key_id, r.record)?),
                key_id,
                target: NodeName::parse(&r.target).map_err(|e| bad("target", e))?,
                helpers: names(&r.helpers, "helpers")?,
            }
        }
        pb::propose_request::Op::Reshare(r) => {
            let key_id = KeyId::parse(&r.key_id).map_err(|e| bad("key_id", e))?;
            Operation::Reshare {
                record: Box::new(record_from_pb(&key_id, r.record)?),
                key_id,
                epoch: r.epoch,
                dealers: names(&r.dealers, "dealers")?,
                committee: names(&r.committee, "committee")?,
                threshold: u8::try_from(r.threshold)
                    .map_err(|_| bad("threshold", "out of range"))?,
            }
        }
        pb::propose_request::Op::Lifecycle(l) => super::wire_admin::lifecycle_from_pb(l)?,
        pb::propose_request::Op::AdminStep(a) => super::wire_admin::step_from_pb(a)?,
        pb::propose_request::Op::Retire(r) => Operation::Retire {
            key_id: KeyId::parse(&r.key_id).map_err(|e| bad("key_id", e))?,
            epoch: r.epoch,
            dealers: names(&r.dealers, "dealers")?,
            committee: names(&r.committee, "committee")?,
            threshold: u8::try_from(r.threshold).map_err(|_| bad("threshold", "out of range"))?,
            confirmation: arr(&r.confirmation, "confirmation")
                .map_err(|e| bad("confirmation", e))?,
            certificate: certificate_from_pb(r.certificate, "certificate")?,
        },
        pb::propose_request::Op::Refresh(r) => Operation::Refresh {
            key_id: KeyId::parse(&r.key_id).map_err(|e| bad("key_id", e))?,
            epoch: r.epoch,
            committee: names(&r.committee, "committee")?,
        },
        pb::propose_request::Op::Activate(a) => Operation::Activate {
            key_id: KeyId::parse(&a.key_id).map_err(|e| bad("key_id", e))?,
            epoch: a.epoch,
            confirmation: arr(&a.confirmation, "confirmation")
                .map_err(|e| bad("confirmation", e))?,
            certificate: certificate_from_pb(a.certificate, "certificate")?,
        },
        pb::propose_request::Op::Keygen(k) => Operation::Keygen {
            key_id: KeyId::parse(&k.key_id).map_err(|e| bad("key_id", e))?,
            key_type: KeyType::parse(&k.key_type).map_err(|e| bad("key_type", e))?,
            threshold: k.threshold,
            committee: names(&k.committee, "committee")?,
        },
        pb::propose_request::Op::Sign(s) => {
            let participants = names(&s.participants, "participants")?;
            let (epoch, lifecycle_seq) = (s.epoch, s.lifecycle_seq);
            let (request, auth) = sign_request_from_pb(s)?;
            Operation::Sign {
                epoch,
                lifecycle_seq,
                request: Box::new(request),
                auth: Box::new(auth),
                participants,
            }
        }
        pb::propose_request::Op::Watermark(w) => {
            let window = match w.window() {
                pb::WindowStep::Gossip => WindowStep::Gossip,
                pb::WindowStep::Reserve => WindowStep::Reserve,
                pb::WindowStep::Release => WindowStep::Release,
            };
            let (request, auth) =
                sign_request_from_pb(w.request.ok_or_else(|| bad("request", "missing"))?)?;
            Operation::Watermark {
                request: Box::new(request),
                auth: Box::new(auth),
                window,
            }
        }
        pb::propose_request::Op::Evaluate(w) => {
            let (request, auth) =
                sign_request_from_pb(w.request.ok_or_else(|| bad("request", "missing"))?)?;
            Operation::Evaluate {
                request: Box::new(request),
                auth: Box::new(auth),
            }
        }
    };
    Ok(Proposal {
        eid,
        nonce: req.coordinator_nonce,
        admin: req
            .admin
            .map(super::wire_admin::admin_from_pb)
            .transpose()?
            .map(Box::new),
        op,
    })
}

pub(super) fn proposal_to_pb(p: Proposal) -> pb::ProposeRequest {
    let op = match p.op {
        Operation::ShareStatus {
            key_id,
            request_id,
            watermarks,
            evidence,
        } => pb::propose_request::Op::ShareStatus(pb::ShareStatusProposal {
            evidence,
            key_id: key_id.to_string(),
            request_id: request_id.unwrap_or_default(),
            watermarks,
        }),
        Operation::Repair {
            key_id,
            target,
            helpers,
            record,
        } => pb::propose_request::Op::Repair(pb::RepairProposal {
            key_id: key_id.to_string(),
            target: target.to_string(),
            helpers: helpers.iter().map(ToString::to_string).collect(),
            record: Some(record_to_pb(&record)),
        }),
        Operation::Reshare {
            key_id,
            epoch,
            dealers,
            committee,
            threshold,
            record,
        } => pb::propose_request::Op::Reshare(pb::ReshareProposal {
            key_id: key_id.to_string(),
            epoch,
            dealers: dealers.iter().map(ToString::to_string).collect(),
            committee: committee.iter().map(ToString::to_string).collect(),
            threshold: threshold.into(),
            record: Some(record_to_pb(&record)),
        }),
        Operation::Lifecycle { key_id, action } => {
            super::wire_admin::lifecycle_to_pb(key_id, action)
        }
        Operation::Admin {
            key_id,
            action,
            body,
        } => super::wire_admin::step_to_pb(key_id, action, body),
        Operation::Retire {
            key_id,
            epoch,
            dealers,
            committee,
            threshold,
            confirmation,
            certificate,
        } => pb::propose_request::Op::Retire(pb::RetireProposal {
            key_id: key_id.to_string(),
            epoch,
            dealers: dealers.iter().map(ToString::to_string).collect(),
            committee: committee.iter().map(ToString::to_string).collect(),
            threshold: threshold.into(),
            confirmation: confirmation.to_vec(),
            certificate: certificate_to_pb(certificate),
        }),
        Operation::Refresh {
            key_id,
            epoch,
            committee,
        } => pb::propose_request::Op::Refresh(pb::RefreshProposal {
            key_id: key_id.to_string(),
            epoch,
            committee: committee.iter().map(ToString::to_string).collect(),
        }),
        Operation::Activate {
            key_id,
            epoch,
            confirmation,
            certificate,
        } => pb::propose_request::Op::Activate(pb::ActivateProposal {
            key_id: key_id.to_string(),
            epoch,
            confirmation: confirmation.to_vec(),
            certificate: certificate_to_pb(certificate),
        }),
        Operation::Keygen {
            key_id,
            key_type,
            threshold,
            committee,
        } => pb::propose_request::Op::Keygen(pb::KeygenProposal {
            key_id: key_id.to_string(),
            key_type: key_type.as_str().to_owned(),
            threshold,
            committee: committee.iter().map(ToString::to_string).collect(),
        }),
        Operation::Sign {
            epoch,
            lifecycle_seq,
            request,
            auth,
            participants,
        } => pb::propose_request::Op::Sign(pb::SignProposal {
            epoch,
            lifecycle_seq,
            participants: participants.iter().map(ToString::to_string).collect(),
            ..sign_request_to_pb(*request, *auth)
        }),
        Operation::Watermark {
            request,
            auth,
            window,
        } => pb::propose_request::Op::Watermark(pb::WatermarkProposal {
            request: Some(sign_request_to_pb(*request, *auth)),
            window: match window {
                WindowStep::Gossip => pb::WindowStep::Gossip,
                WindowStep::Reserve => pb::WindowStep::Reserve,
                WindowStep::Release => pb::WindowStep::Release,
            }
            .into(),
        }),
        Operation::Evaluate { request, auth } => {
            pb::propose_request::Op::Evaluate(pb::EvaluateProposal {
                request: Some(sign_request_to_pb(*request, *auth)),
            })
        }
    };
    pb::ProposeRequest {
        wire_version: WIRE_VERSION,
        eid: p.eid.as_bytes().to_vec(),
        coordinator_nonce: p.nonce,
        admin: p.admin.map(|a| super::wire_admin::admin_to_pb(*a)),
        op: Some(op),
    }
}

pub(super) fn outcome_to_pb(o: Outcome) -> pb::ProposeResponse {
    let result = match o {
        Outcome::Refresh {
            confirmation,
            receipt,
        } => pb::propose_response::Result::Refresh(pb::RefreshResult {
            confirmation: confirmation.to_vec(),
            receipt: Some(receipt_to_pb(*receipt)),
        }),
        Outcome::Activated => pb::propose_response::Result::Activate(pb::ActivateResult {}),
        Outcome::ShareStatus {
            epoch,
            signing,
            rotation,
            ledger,
            lifecycle,
            maintenance,
            watermarks,
        } => pb::propose_response::Result::ShareStatus(pb::ShareStatusResult {
            watermarks: watermarks
                .into_iter()
                .map(|(scope, w)| super::wire_status::watermark_to_pb(scope, w))
                .collect(),
            rotation_confirmation: maintenance_to_pb(&maintenance).0,
            staged: maintenance_to_pb(&maintenance).1,
            maintaining: maintenance.running,
            generated_receipt: maintenance.generated.map(|r| receipt_to_pb(*r)),
            certificate: certificate_to_pb(maintenance.certificate),
            lifecycle: lifecycle.map(|p| proposal_to_pb(*p)),
            ledger: ledger.map(|l| ledger_to_pb(&l)),
            has_share: epoch.is_some(),
            epoch: epoch.unwrap_or(0),
            signing,
            rotation: rotation.map(|r| r.to_vec()).unwrap_or_default(),
        }),
        Outcome::Reshared {
            confirmation,
            public_key,
            receipt,
        } => pb::propose_response::Result::Reshare(pb::ReshareResult {
            confirmation: confirmation.to_vec(),
            public_key,
            receipt: Some(receipt_to_pb(*receipt)),
        }),
        Outcome::Dealt => pb::propose_response::Result::Dealt(pb::DealtResult {}),
        Outcome::Retired => pb::propose_response::Result::Retire(pb::RetireResult {}),
        Outcome::Lifecycle { state } => {
            pb::propose_response::Result::Lifecycle(pb::LifecycleResult { state })
        }
        Outcome::Admin { body } => {
            pb::propose_response::Result::AdminStep(pb::AdminStepResult { body })
        }
        Outcome::Watermarked => {
            pb::propose_response::Result::Watermark(pb::WatermarkResult::default())
        }
        Outcome::Evaluated {
            summary,
            allowed_by,
        } => pb::propose_response::Result::Evaluate(pb::EvaluateResult {
            summary,
            allowed_by,
        }),
        Outcome::SlotConflict { reason, evidence } => {
            pb::propose_response::Result::Watermark(pb::WatermarkResult {
                conflict: if reason.is_empty() {
                    "conflicting slot watermark".into()
                } else {
                    reason
                },
                evidence: evidence.map(|e| {
                    let (request, auth) = *e;
                    sign_request_to_pb(request, auth)
                }),
            })
        }
        Outcome::Repaired => pb::propose_response::Result::Repair(pb::RepairResult {}),
        Outcome::Keygen {
            public_key,
            chain_code,
            package_hash,
            receipt,
        } => pb::propose_response::Result::Keygen(pb::KeygenResult {
            public_key,
            chain_code: chain_code.to_vec(),
            package_hash: package_hash.to_vec(),
            receipt: Some(receipt_to_pb(*receipt)),
        }),
        Outcome::Sign(s) => pb::propose_response::Result::Sign(pb::SignResult {
            r: s.r.to_vec(),
            s: s.s.to_vec(),
            recovery_id: s.recovery_id.into(),
            public_key: s.public_key.to_vec(),
            key_type: s.key_type.as_str().to_owned(),
        }),
    };
    pb::ProposeResponse {
        result: Some(result),
    }
}

pub(super) fn arr<const N: usize>(b: &[u8], field: &str) -> Result<[u8; N], String> {
    b.try_into()
        .map_err(|_| format!("{field} must be {N} bytes, got {}", b.len()))
}

pub(super) fn outcome_from_pb(r: pb::ProposeResponse) -> Result<Outcome, String> {
    match r.result.ok_or("empty result")? {
        pb::propose_response::Result::Refusal(_) => {
            Err("a refusal where an outcome was expected".into())
        }
        pb::propose_response::Result::Refresh(x) => Ok(Outcome::Refresh {
            confirmation: arr(&x.confirmation, "confirmation")?,
            receipt: answer_receipt(x.receipt)?,
        }),
        pb::propose_response::Result::Activate(_) => Ok(Outcome::Activated),
        pb::propose_response::Result::ShareStatus(mut s) => Ok(Outcome::ShareStatus {
            maintenance: Maintenance {
                certificate: certificate_from_pb(std::mem::take(&mut s.certificate), "certificate")
                    .map_err(|e| e.message().to_owned())?,
                generated: match s.generated_receipt.take() {
                    Some(r) => Some(Box::new(
                        receipt_from_pb(r, "generated_receipt")
                            .map_err(|e| e.message().to_owned())?,
                    )),
                    None => None,
                },
                ..maintenance_from_pb(&mut s)?
            },
            watermarks: s
                .watermarks
                .iter()
                .map(super::wire_status::watermark_from_pb)
                .collect::<Result<_, _>>()?,
            epoch: s.has_share.then_some(s.epoch),
            signing: s.has_share && s.signing,
            rotation: if s.rotation.is_empty() {
                None
            } else {
                Some(arr(&s.rotation, "rotation")?)
            },
            ledger: s.ledger.map(ledger_from_pb).transpose()?.map(Box::new),
            lifecycle: match s.lifecycle {
                Some(p) => Some(Box::new(
                    proposal_from_pb(p).map_err(|e| format!("lifecycle: {}", e.message()))?,
                )),
                None => None,
            },
        }),
        pb::propose_response::Result::Reshare(r) => Ok(Outcome::Reshared {
            confirmation: arr(&r.confirmation, "confirmation")?,
            public_key: r.public_key,
            receipt: answer_receipt(r.receipt)?,
        }),
        pb::propose_response::Result::Dealt(_) => Ok(Outcome::Dealt),
        pb::propose_response::Result::Retire(_) => Ok(Outcome::Retired),
        pb::propose_response::Result::Lifecycle(l) => Ok(Outcome::Lifecycle { state: l.state }),
        pb::propose_response::Result::AdminStep(a) => super::wire_admin::step_result_from_pb(a),
        pb::propose_response::Result::Watermark(w) if w.conflict.is_empty() => {
            Ok(Outcome::Watermarked)
        }
        pb::propose_response::Result::Evaluate(e) => Ok(Outcome::Evaluated {
            summary: bounded_text(e.summary),
            allowed_by: bounded_text(e.allowed_by),
        }),
        pb::propose_response::Result::Watermark(w) => Ok(Outcome::SlotConflict {
            reason: bounded_text(w.conflict),
            evidence: match w.evidence {
                Some(e) => Some(Box::new(
                    sign_request_from_pb(e).map_err(|s| s.message().to_owned())?,
                )),
                None => None,
            },
        }),
        pb::propose_response::Result::Repair(_) => Ok(Outcome::Repaired),
        pb::propose_response::Result::Keygen(k) => Ok(Outcome::Keygen {
            public_key: k.public_key,
            chain_code: arr(&k.chain_code, "chain_code")?,
            package_hash: arr(&k.package_hash, "package_hash")?,
            receipt: answer_receipt(k.receipt)?,
        }),
        pb::propose_response::Result::Sign(s) => Ok(Outcome::Sign(Signature {
            r: arr(&s.r, "r")?,
            s: arr(&s.s, "s")?,
            recovery_id: u8::try_from(s.recovery_id).map_err(|_| "recovery_id out of range")?,
            public_key: arr(&s.public_key, "public_key")?,
            key_type: KeyType::parse(&s.key_type).map_err(|e| e.to_string())?,
        })),
    }
}

/// A peer's free text, cut to at most 1 KiB (at a character boundary).
fn bounded_text(mut s: String) -> String {
    const MAX: usize = 1024;
    if s.len() > MAX {
        let mut end = MAX;
        while !s.is_char_boundary(end) {
            end = end.saturating_sub(1);
        }
        s.truncate(end);
    }
    s
}
