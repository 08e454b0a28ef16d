//! Typed payloads at a signing node: every node (coordinator and each
//! participant) decodes the payload the client signed, derives what the
//! session signs (digest and path of the request's item) and refuses a
//! proposal that says anything else; the coordinator signs every target of
//! a payload (a PSBT's inputs, concurrently) and builds the finished output.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::SignOutcome;
use crate::domain::{Digest32, NodeName};
use crate::node::request::{ClientAuth, SignRequest, Slot};
use crate::node::{Node, NodeError};
use crate::payload::{Decoded, Finished, KeyView, Sig};
use crate::storage::KeyRecord;

/// The most inputs of one PSBT a request signs (each is a session).
pub const MAX_TARGETS: usize = 64;

/// Payloads decoded moments ago, by (payload, key, path): a request is
/// decoded once per node although the coordinator and participant paths
/// (and each of a PSBT's inputs) check it.
#[derive(Default)]
pub(crate) struct DecodeCache {
    seen: Mutex<HashMap<[u8; 32], Seen>>,
}

/// When a payload was decoded, and what it said.
type Seen = (Instant, Arc<Decoded>);

impl DecodeCache {
    const TTL: Duration = Duration::from_secs(60);
    const MAX: usize = 256;

    fn get_or(
        &self,
        key: [u8; 32],
        decode: impl FnOnce() -> Result<Decoded, crate::payload::PayloadError>,
    ) -> Result<Arc<Decoded>, crate::payload::PayloadError> {
        let now = Instant::now();
        {
            let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((at, d)) = seen.get(&key) {
                if now.duration_since(*at) < Self::TTL {
                    return Ok(d.clone());
                }
            }
        }
        let d = Arc::new(decode()?);
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if seen.len() >= Self::MAX {
            seen.retain(|_, (at, _)| now.duration_since(*at) < Self::TTL);
            if seen.len() >= Self::MAX {
                seen.clear();
            }
        }
        seen.insert(key, (now, d.clone()));
        Ok(d)
    }
}

/// The path the payload is decoded at: the request's own, except for a
/// PSBT, whose paths come from its derivations (the client signs "m").
fn decode_path(request: &SignRequest) -> crate::domain::DerivationPath {
    match &request.payload {
        Some(p) if p.kind.paths_from_payload() => crate::domain::DerivationPath::default(),
        _ => request.path.clone(),
    }
}

fn show_slot(s: Option<&Slot>) -> String {
    s.map(ToString::to_string).unwrap_or_else(|| "none".into())
}

/// A finished payload request: every target's signature and the output.
#[derive(Debug, Clone)]
pub struct PayloadOutcome {
    pub decoded: Arc<Decoded>,
    pub signatures: Vec<SignOutcome>,
    pub finished: Finished,
}

impl Node {
    /// Decodes `request`'s payload for the key `rec` (INVALID_ARGUMENT
    /// naming the field when it does not decode).
    pub(crate) fn decode_payload(
        &self,
        request: &SignRequest,
        rec: &KeyRecord,
    ) -> Result<Option<Arc<Decoded>>, NodeError> {
        let Some(p) = &request.payload else {
            return Ok(None);
        };
        let path = decode_path(request);
        let mut h = Sha256::new();
        h.update(p.kind.as_str());
        h.update((p.bytes.len() as u64).to_be_bytes());
        h.update(&p.bytes);
        h.update(&rec.public_key);
        h.update(rec.chain_code);
        h.update(path.to_string());
        let view = KeyView {
            key_type: rec.key_type,
            public_key: &rec.public_key,
            chain_code: &rec.chain_code,
            path: &path,
        };
        let decoded = self
            .payload_cache
            .get_or(h.finalize().into(), || {
                crate::payload::decode(p.kind, &p.bytes, &view)
            })
            .map_err(|e| NodeError::InvalidArgument(e.to_string()))?;
        if decoded.targets.len() > MAX_TARGETS {
            return Err(NodeError::InvalidArgument(format!(
                "payload field {}: {} inputs to sign; at most {MAX_TARGETS} per request",
                p.kind,
                decoded.targets.len()
            )));
        }
        Ok(Some(decoded))
    }

    /// Decodes the payload and checks that the session signs exactly its
    /// item's digest at its path: what a coordinator says counts for nothing.
    pub(crate) fn check_payload(
        &self,
        request: &SignRequest,
        rec: &KeyRecord,
    ) -> Result<Option<Arc<Decoded>>, NodeError> {
        let Some(decoded) = self.decode_payload(request, rec)? else {
            return Ok(None);
        };
        let item = request.payload.as_ref().map(|p| p.item).unwrap_or(0);
        let target = usize::try_from(item)
            .ok()
            .and_then(|i| decoded.targets.get(i))
            .ok_or_else(|| {
                NodeError::PermissionDenied(format!(
                    "the {} has {} targets to sign; the proposal names item {item}",
                    decoded.kind,
                    decoded.targets.len()
                ))
            })?;
        let slot = target.replay.as_ref().map(|r| Slot {
            scope: r.scope.clone(),
            height: r.position,
            round: 0,
            step: 0,
        });
        if request.slot != slot {
            return Err(NodeError::PermissionDenied(format!(
                "the {} names replay slot {} for item {item}; the proposal says {}: a \
                 coordinator cannot substitute what is signed",
                decoded.kind,
                show_slot(slot.as_ref()),
                show_slot(request.slot.as_ref()),
            )));
        }
        if target.digest != request.digest.0 || target.path != request.path {
            return Err(NodeError::PermissionDenied(format!(
                "the {} hashes to {} at {} for item {item}; the proposal says {} at {}: a \
                 coordinator cannot substitute what is signed",
                decoded.kind,
                hex::encode(target.digest),
                target.path,
                hex::encode(request.digest.0),
                request.path
            )));
        }
        Ok(Some(decoded))
    }

    /// Signs every target of a typed payload (`request` is item 0 with any
    /// digest: the targets come from decoding it here) and builds what the
    /// caller needs next.
    pub async fn sign_payload(
        &self,
        request: SignRequest,
        auth: ClientAuth,
        client: &NodeName,
    ) -> Result<PayloadOutcome, NodeError> {
        let Some(payload) = request.payload.clone() else {
            return Err(NodeError::InvalidArgument(
                "the request has no payload".into(),
            ));
        };
        if payload.kind.paths_from_payload() && !request.path.is_master() {
            return Err(NodeError::InvalidArgument(format!(
                "path: a {} takes its paths from its BIP-32 derivations; leave path empty",
                payload.kind
            ))
            .at(&self.name));
        }
        // The client's signature first: nothing is decoded for a stranger.
        let signer = self
            .verify_client_request(&request, &auth, "sign request")
            .map_err(|e| e.at(&self.name))?
            .client;
        if signer != *client {
            return Err(NodeError::PermissionDenied(format!(
                "the request is signed by client {signer} but was sent by client {client}"
            ))
            .at(&self.name));
        }
        let rec = self.key(&request.key_id).map_err(|e| e.at(&self.name))?;
        let decoded = self
            .decode_payload(&request, &rec)
            .map_err(|e| e.at(&self.name))?
            .ok_or_else(|| NodeError::Internal("payload vanished".into()))?;
        let items: Vec<SignRequest> = decoded
            .targets
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let mut r = request.clone();
                r.digest = Digest32(t.digest);
                r.path = t.path.clone();
                r.slot = t.replay.as_ref().map(|x| Slot {
                    scope: x.scope.clone(),
                    height: x.position,
                    round: 0,
                    step: 0,
                });
                if let Some(p) = r.payload.as_mut() {
                    p.item = u32::try_from(i).unwrap_or(u32::MAX);
                }
                r
            })
            .collect();
        let results = futures::future::join_all(
            items
                .into_iter()
                .map(|r| self.sign(r, auth.clone(), client)),
        )
        .await;
        let signatures = results.into_iter().collect::<Result<Vec<_>, _>>()?;
        let sigs: Vec<Sig> = signatures
            .iter()
            .map(|o| Sig {
                r: o.signature.r,
                s: o.signature.s,
                recovery_id: o.signature.recovery_id,
                public_key: o.signature.public_key,
            })
            .collect();
        let path = decode_path(&request);
        let view = KeyView {
            key_type: rec.key_type,
            public_key: &rec.public_key,
            chain_code: &rec.chain_code,
            path: &path,
        };
        let finished = crate::payload::finish(payload.kind, &payload.bytes, &view, &sigs)
            .map_err(|e| NodeError::Internal(format!("finishing the signed payload: {e}")))?;
        Ok(PayloadOutcome {
            decoded,
            signatures,
            finished,
        })
    }
}

/// A committee node's verdict in a dry run.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub node: NodeName,
    pub allowed: bool,
    /// The rule that allowed it, or why not.
    pub detail: String,
}

impl Node {
    /// A dry run at a participant: the client's signature, the key and
    /// this node's policy (on the decoded payload), as for signing; nothing
    /// is recorded and no rate is charged.
    pub(crate) fn participate_evaluate(
        &self,
        request: &SignRequest,
        auth: &ClientAuth,
    ) -> Result<crate::node::Outcome, NodeError> {
        let client = self.verify_client_request(request, auth, "dry run")?.client;
        let rec = self.key(&request.key_id)?;
        self.check_can_sign(&rec)?;
        let allowed = self.authorize_sign(&client, request, false)?;
        // The windows as this node counts them now (nothing is recorded).
        self.check_windows(&client, request, &allowed.windows)?;
        let summary = allowed.summary.unwrap_or_default();
        let decoded = self.decode_payload(request, &rec)?;
        let d = self.policy().check_sign_content(
            client.as_str(),
            &request.key_id,
            &request.path,
            decoded.as_deref(),
        );
        Ok(crate::node::Outcome::Evaluated {
            summary,
            allowed_by: format!("{}: {}", d.rule, d.reason),
        })
    }

    /// A dry run of `request`: every committee node (this one included)
    /// decodes it and evaluates its policy; nothing is signed. A payload's
    /// first target stands for it (every target has the same content).
    pub async fn evaluate(
        &self,
        request: SignRequest,
        auth: ClientAuth,
        client: &NodeName,
    ) -> Result<(String, Vec<Verdict>), NodeError> {
        let signer = self
            .verify_client_request(&request, &auth, "dry run")
            .map_err(|e| e.at(&self.name))?
            .client;
        if signer != *client {
            return Err(NodeError::PermissionDenied(format!(
                "the request is signed by client {signer} but was sent by client {client}"
            ))
            .at(&self.name));
        }
        // A dry run costs every committee node a decode: it counts against
        // the client's rate limits here, as a signature would.
        self.charge_rate(client, &request)
            .map_err(|e| e.at(&self.name))?;
        let rec = self.key(&request.key_id).map_err(|e| e.at(&self.name))?;
        let mut request = request;
        let mut summary = String::new();
        if let Some(decoded) = self
            .decode_payload(&request, &rec)
            .map_err(|e| e.at(&self.name))?
        {
            summary = decoded.summary.clone();
            if let Some(t) = decoded.targets.first() {
                request.digest = Digest32(t.digest);
                request.path = t.path.clone();
                request.slot = t.replay.as_ref().map(|x| Slot {
                    scope: x.scope.clone(),
                    height: x.position,
                    round: 0,
                    step: 0,
                });
            }
        }
        let committee = crate::node::committee_of(&rec)?;
        let p = crate::node::Proposal {
            eid: crate::node::ops::OpKind::Evaluate.eid(
                &request.key_id,
                0,
                &[],
                &request.binding(),
                &[],
            ),
            nonce: Vec::new(),
            admin: None,
            op: crate::node::Operation::Evaluate {
                request: Box::new(request.clone()),
                auth: Box::new(auth.clone()),
            },
        };
        let timeout = self.timeouts.ping.saturating_mul(2);
        let asks = committee.iter().map(|n| {
            let p = p.clone();
            let request = &request;
            let auth = &auth;
            async move {
                let r = if *n == self.name {
                    self.participate_evaluate(request, auth)
                } else {
                    match tokio::time::timeout(timeout, self.net.propose(n, p)).await {
                        Ok(r) => r,
                        Err(_) => Err(NodeError::Unavailable(format!(
                            "no answer within {timeout:?}"
                        ))),
                    }
                };
                let (allowed, detail) = match r {
                    Ok(crate::node::Outcome::Evaluated { allowed_by, .. }) => (true, allowed_by),
                    Ok(_) => (false, "answered with another outcome".to_owned()),
                    Err(e) => (false, e.cause().to_string()),
                };
                Verdict {
                    node: n.clone(),
                    allowed,
                    detail,
                }
            }
        });
        Ok((summary, futures::future::join_all(asks).await))
    }
}
