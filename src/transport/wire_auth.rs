//! Signed material on the peer wire: certificate chains and signatures
//! (client requests, admin approvals, staging receipts) bounded in size at
//! decode, activation certificates, and the client's request as it travels
//! in a proposal. No I/O.

use tonic::Status;

use super::wire::bad;
use crate::domain::{DerivationPath, Digest32, KeyId, MAX_ROSTER};
use crate::node::activation::Certificate;
use crate::node::request::{ClientAuth, Payload, SignRequest, Slot};
use crate::proto::peer as pb;

/// Most certificates in one chain, bytes in one certificate, and bytes in
/// one signature, in a signed request, approval or receipt from a peer.
pub(super) const MAX_CHAIN: usize = 8;
pub(super) const MAX_CERT_BYTES: usize = 16 * 1024;
pub(super) const MAX_SIGNATURE_BYTES: usize = 1024;

/// A certificate chain and signature from a peer, bounded in size.
pub(super) fn signed_by(
    chain: Vec<Vec<u8>>,
    scheme: u32,
    signature: Vec<u8>,
    field: &str,
) -> Result<ClientAuth, Status> {
    if chain.len() > MAX_CHAIN || chain.iter().any(|c| c.len() > MAX_CERT_BYTES) {
        return Err(bad(
            &format!("{field}.chain"),
            format!("at most {MAX_CHAIN} certificates of at most {MAX_CERT_BYTES} bytes"),
        ));
    }
    if signature.len() > MAX_SIGNATURE_BYTES {
        return Err(bad(
            &format!("{field}.signature"),
            format!("at most {MAX_SIGNATURE_BYTES} bytes"),
        ));
    }
    Ok(ClientAuth {
        chain,
        scheme: u16::try_from(scheme)
            .map_err(|_| bad(&format!("{field}.signature_scheme"), "out of range"))?,
        signature,
    })
}

pub(super) fn receipt_from_pb(r: pb::NodeReceipt, field: &str) -> Result<ClientAuth, Status> {
    signed_by(r.chain, r.signature_scheme, r.signature, field)
}

pub(super) fn receipt_to_pb(r: ClientAuth) -> pb::NodeReceipt {
    pb::NodeReceipt {
        chain: r.chain,
        signature_scheme: r.scheme.into(),
        signature: r.signature,
    }
}

/// An activation certificate from a peer: at most one receipt per node.
pub(super) fn certificate_from_pb(
    raw: Vec<pb::NodeReceipt>,
    field: &str,
) -> Result<Certificate, Status> {
    if raw.len() > MAX_ROSTER {
        return Err(bad(
            field,
            format!(
                "{} receipts; a cluster has at most {MAX_ROSTER} nodes",
                raw.len()
            ),
        ));
    }
    raw.into_iter()
        .map(|r| receipt_from_pb(r, field))
        .collect::<Result<Vec<_>, _>>()
        .map(Certificate)
}

pub(super) fn certificate_to_pb(c: Certificate) -> Vec<pb::NodeReceipt> {
    c.0.into_iter().map(receipt_to_pb).collect()
}

/// A node's receipt in an answer (required: an answer without one cannot
/// be part of an activation certificate).
pub(super) fn answer_receipt(r: Option<pb::NodeReceipt>) -> Result<Box<ClientAuth>, String> {
    let r = r.ok_or("the answer carries no staging receipt")?;
    receipt_from_pb(r, "receipt")
        .map(Box::new)
        .map_err(|e| e.message().to_owned())
}

/// The client's request and signature as they travel in a proposal.
pub(super) fn sign_request_from_pb(
    s: pb::SignProposal,
) -> Result<(SignRequest, ClientAuth), Status> {
    let request = SignRequest {
        key_id: KeyId::parse(&s.key_id).map_err(|e| bad("key_id", e))?,
        digest: Digest32::from_slice(&s.digest).map_err(|e| bad("digest", e))?,
        path: DerivationPath::parse(&s.path).map_err(|e| bad("path", e))?,
        slot: s.slot.map(|x| Slot {
            scope: x.scope,
            height: x.height,
            round: x.round,
            step: x.step,
        }),
        request_id: s.request_id,
        expiry_unix: s.expiry_unix,
        payload: payload_from_pb(&s.payload_kind, s.payload, s.payload_item)?,
    };
    let auth = signed_by(
        s.client_chain,
        s.signature_scheme,
        s.client_signature,
        "client",
    )?;
    Ok((request, auth))
}

/// A proposal's payload fields: none with an empty kind.
fn payload_from_pb(kind: &str, bytes: Vec<u8>, item: u32) -> Result<Option<Payload>, Status> {
    if kind.is_empty() {
        if !bytes.is_empty() {
            return Err(bad("payload", "bytes without a payload kind"));
        }
        return Ok(None);
    }
    let kind = crate::payload::Kind::parse(kind)
        .ok_or_else(|| bad("payload_kind", format!("unknown kind {kind:?}")))?;
    if bytes.len() > crate::payload::MAX_PAYLOAD_BYTES {
        return Err(bad(
            "payload",
            format!(
                "{} bytes; at most {} are accepted",
                bytes.len(),
                crate::payload::MAX_PAYLOAD_BYTES
            ),
        ));
    }
    Ok(Some(Payload {
        kind,
        bytes: bytes.into(),
        item,
    }))
}

pub(super) fn sign_request_to_pb(request: SignRequest, auth: ClientAuth) -> pb::SignProposal {
    let (payload_kind, payload, payload_item) = match &request.payload {
        Some(p) => (p.kind.as_str().to_owned(), p.bytes.to_vec(), p.item),
        None => (String::new(), Vec::new(), 0),
    };
    pb::SignProposal {
        payload_kind,
        payload,
        payload_item,
        key_id: request.key_id.to_string(),
        epoch: 0,
        lifecycle_seq: 0,
        digest: request.digest.0.to_vec(),
        path: request.path.to_string(),
        request_id: request.request_id,
        participants: Vec::new(),
        slot: request.slot.map(|x| pb::Slot {
            scope: x.scope,
            height: x.height,
            round: x.round,
            step: x.step,
        }),
        expiry_unix: request.expiry_unix,
        signature_scheme: auth.scheme.into(),
        client_signature: auth.signature,
        client_chain: auth.chain,
    }
}
