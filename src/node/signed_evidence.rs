//! A client's signed request kept as evidence beside a slot watermark, and
//! its bounded encoding (`ops/sign/checks.rs` shows and checks it).

use super::request::{ClientAuth, SignRequest, Slot};
use crate::domain::{DerivationPath, Digest32, KeyId};

/// A client's signed request as a node keeps it beside a slot watermark (the
/// evidence it shows when it refuses a conflicting slot; see
/// `ops/sign/checks.rs`). It authenticates itself: the client's signature
/// covers the canonical bytes rebuilt from these fields.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredSigned {
    key_id: String,
    digest: [u8; 32],
    path: String,
    slot: Option<(String, u64, u64, u64)>,
    request_id: String,
    expiry_unix: u64,
    chain: Vec<Vec<u8>>,
    scheme: u16,
    signature: Vec<u8>,
}

/// The most bytes a kept signed request may take (a request, a client
/// certificate chain and a signature are a few KiB; a typed payload adds at
/// most `payload::MAX_PAYLOAD_BYTES`).
pub const MAX_SIGNED_EVIDENCE: usize = crate::payload::MAX_PAYLOAD_BYTES + (64 << 10);

/// The tag of a kept request with a typed payload (its slot is derived from
/// the payload; the client signed the payload).
const WITH_PAYLOAD: &str = "thresig/evidence/v2";

/// A typed payload as kept: kind, bytes, item.
type StoredPayload = (String, Vec<u8>, u32);

/// `request` and its signature `auth` as evidence bytes.
pub fn encode_signed(request: &SignRequest, auth: &ClientAuth) -> Result<Vec<u8>, String> {
    let s = StoredSigned {
        key_id: request.key_id.to_string(),
        digest: request.digest.0,
        path: request.path.to_string(),
        slot: request
            .slot
            .as_ref()
            .map(|s| (s.scope.clone(), s.height, s.round, s.step)),
        request_id: request.request_id.clone(),
        expiry_unix: request.expiry_unix,
        chain: auth.chain.clone(),
        scheme: auth.scheme,
        signature: auth.signature.clone(),
    };
    let out = match &request.payload {
        None => crate::codec::encode(&s)?,
        Some(p) => {
            let payload: StoredPayload = (p.kind.as_str().to_owned(), p.bytes.to_vec(), p.item);
            crate::codec::encode(&(WITH_PAYLOAD, &s, payload))?
        }
    };
    if out.len() > MAX_SIGNED_EVIDENCE {
        return Err(format!(
            "a signed request of {} bytes exceeds {MAX_SIGNED_EVIDENCE}",
            out.len()
        ));
    }
    Ok(out)
}

/// Evidence bytes back as the request and its signature (bounded; garbage is
/// an error).
pub fn decode_signed(b: &[u8]) -> Result<(SignRequest, ClientAuth), String> {
    if b.len() > MAX_SIGNED_EVIDENCE {
        return Err(format!("{} bytes exceeds {MAX_SIGNED_EVIDENCE}", b.len()));
    }
    let (s, payload) = match crate::codec::decode::<(String, StoredSigned, StoredPayload)>(b) {
        Ok((tag, s, (kind, bytes, item))) if tag == WITH_PAYLOAD => {
            let kind = crate::payload::Kind::parse(&kind)
                .ok_or_else(|| format!("unknown payload kind {kind:?}"))?;
            let payload = super::request::Payload {
                kind,
                bytes: bytes.into(),
                item,
            };
            (s, Some(payload))
        }
        _ => (crate::codec::decode::<StoredSigned>(b)?, None),
    };
    let request = SignRequest {
        key_id: KeyId::parse(&s.key_id).map_err(|e| e.to_string())?,
        digest: Digest32(s.digest),
        path: DerivationPath::parse(&s.path).map_err(|e| e.to_string())?,
        slot: s.slot.map(|(scope, height, round, step)| Slot {
            scope,
            height,
            round,
            step,
        }),
        request_id: s.request_id,
        expiry_unix: s.expiry_unix,
        payload,
    };
    let auth = ClientAuth {
        chain: s.chain,
        scheme: s.scheme,
        signature: s.signature,
    };
    Ok((request, auth))
}

#[cfg(test)]
mod signed_evidence_tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn signed_requests_round_trip() {
        let request = SignRequest {
            key_id: KeyId::parse("k").unwrap(),
            digest: Digest32([7; 32]),
            path: DerivationPath::parse("m/1/2").unwrap(),
            slot: Some(Slot {
                scope: "chain".into(),
                height: 9,
                round: 1,
                step: 2,
            }),
            request_id: "r".into(),
            expiry_unix: 99,
            payload: None,
        };
        let auth = ClientAuth {
            chain: vec![vec![1, 2, 3]],
            scheme: 0x0807,
            signature: vec![4; 64],
        };
        let (r, a) = decode_signed(&encode_signed(&request, &auth).unwrap()).unwrap();
        assert_eq!(r, request);
        assert_eq!(r.canonical_bytes(), request.canonical_bytes());
        assert_eq!(a, auth);
        // With a typed payload (its slot derived from it): the payload too.
        let mut with = request.clone();
        with.payload = Some(crate::node::request::Payload {
            kind: crate::payload::Kind::EthTransaction,
            bytes: vec![2, 0xc0].into(),
            item: 3,
        });
        let (r, _) = decode_signed(&encode_signed(&with, &auth).unwrap()).unwrap();
        assert_eq!(r, with);
        assert_eq!(r.canonical_bytes(), with.canonical_bytes());
    }

    proptest! {
        /// Arbitrary bytes from a store or a peer give an error, never a panic.
        #[test]
        fn arbitrary_evidence_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = decode_signed(&bytes);
        }
    }
}
