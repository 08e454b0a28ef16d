//! The signer protocol's answers: one signature, and a typed payload's
//! signatures with what the caller needs next.

use tonic::Status;

use crate::proto::signer as spb;

/// The signer protocol's answer for one signature.
pub(super) fn sign_response(
    out: &crate::node::ops::sign::SignOutcome,
) -> Result<spb::SignResponse, Status> {
    let sig = &out.signature;
    let der = sig
        .der()
        .map_err(|_| Status::internal("signature encoding"))?;
    let mut rsv = Vec::with_capacity(65);
    rsv.extend_from_slice(&sig.r);
    rsv.extend_from_slice(&sig.s);
    rsv.push(sig.recovery_id);
    Ok(spb::SignResponse {
        r: sig.r.to_vec(),
        s: sig.s.to_vec(),
        recovery_id: sig.recovery_id.into(),
        der,
        rsv,
        public_key: sig.public_key.to_vec(),
        participants: out.participants.iter().map(ToString::to_string).collect(),
        request_id: out.request_id.clone(),
        epoch: out.epoch,
        key_type: sig.key_type.to_string(),
        payload: None,
    })
}

/// The answer for a typed payload: the first signature in the usual
/// fields, and the finished output.
pub(super) fn payload_response(
    out: &crate::node::ops::sign::PayloadOutcome,
) -> Result<spb::SignResponse, Status> {
    let first = out
        .signatures
        .first()
        .ok_or_else(|| Status::internal("a payload signed with no signature"))?;
    let mut resp = sign_response(first)?;
    let f = &out.finished;
    let inputs = if out.decoded.kind == crate::payload::Kind::BitcoinPsbt {
        let ours: Vec<u32> = match &out.decoded.content {
            crate::payload::Content::Bitcoin(tx) => tx
                .inputs
                .iter()
                .enumerate()
                .filter(|(_, i)| i.ours)
                .map(|(n, _)| u32::try_from(n).unwrap_or(u32::MAX))
                .collect(),
            _ => Vec::new(),
        };
        out.signatures
            .iter()
            .zip(&out.decoded.targets)
            .zip(ours)
            .map(|((o, t), input)| {
                Ok(spb::InputSignature {
                    input,
                    path: t.path.to_string(),
                    der: o
                        .signature
                        .der()
                        .map_err(|_| Status::internal("signature encoding"))?,
                    public_key: o.signature.public_key.to_vec(),
                })
            })
            .collect::<Result<Vec<_>, Status>>()?
    } else {
        Vec::new()
    };
    resp.payload = Some(spb::PayloadResult {
        kind: out.decoded.kind.as_str().to_owned(),
        summary: out.decoded.summary.clone(),
        signed_transaction: f.signed.clone(),
        tx_hash: f.tx_hash.clone(),
        sender: f.sender.clone(),
        signature: f.signature.clone(),
        psbt: f.psbt.clone(),
        inputs,
    });
    Ok(resp)
}
