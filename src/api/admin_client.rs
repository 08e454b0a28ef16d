//! The client's key-changing admin calls. Each sends a signed admin request
//! (`node::admin_request`): the one-step calls build the request, approve it
//! with this client's admin certificate key and send it, which is enough
//! where the nodes' policies need one admin; `submit_admin` sends a request
//! whose approvals were collected offline (`thresig admin approve`).

use std::time::Duration;

use super::admin_fields::signed_to_pb;
use super::client::{Client, ClientError};
use crate::domain::{KeyId, KeyType, NodeName};
use crate::node::admin_request::{AdminOp, AdminRequest, SignedAdmin};
use crate::node::request::ClientAuth;
use crate::proto::admin::admin_result::Outcome;
use crate::proto::admin::{
    admin_client::AdminClient, AdminApproval, CreateKeyRequest, KeyInfo, KeyStateRequest,
    KeyStateResponse, RepairKeyRequest, RepairKeyResponse, ReshareKeyRequest, ReshareKeyResponse,
    RotateKeyRequest, RotateKeyResponse,
};

/// How long a request built by a one-step call stays valid.
pub const DEFAULT_ADMIN_EXPIRY: Duration = Duration::from_secs(600);

/// What a node answered to an admin request.
#[derive(Debug, Clone)]
pub enum AdminOutcome {
    Created(KeyInfo),
    Rotated(RotateKeyResponse),
    Repaired(RepairKeyResponse),
    Reshared(ReshareKeyResponse),
    /// A freeze, unfreeze or delete.
    StateChanged(KeyStateResponse),
}

fn invalid(e: impl std::fmt::Display) -> ClientError {
    ClientError::Invalid(e.to_string())
}

fn names(raw: &[String]) -> Result<Vec<NodeName>, ClientError> {
    raw.iter()
        .map(|n| NodeName::parse(n).map_err(|e| invalid(format!("node {n:?}: {e}"))))
        .collect()
}

fn approvals(v: &[ClientAuth]) -> Vec<AdminApproval> {
    v.iter()
        .map(|a| AdminApproval {
            chain: a.chain.clone(),
            signature_scheme: a.scheme.into(),
            signature: a.signature.clone(),
        })
        .collect()
}

impl AdminRequest {
    /// A new request for `operation` on `key` with a random request id,
    /// issued now and valid for `valid_for` (at most 7 days). Set the fields
    /// the operation takes (committee, threshold, target, key type, the
    /// lifecycle sequence of a freeze, unfreeze or delete) and the cluster
    /// (`Client::cluster`) on the result.
    pub fn new(operation: AdminOp, key: &str, valid_for: Duration) -> Result<Self, ClientError> {
        let mut id = [0u8; 16];
        getrandom::fill(&mut id).map_err(|e| invalid(format!("rng: {e}")))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Ok(Self {
            operation,
            key_id: KeyId::parse(key).map_err(|e| invalid(format!("key: {e}")))?,
            key_type: None,
            committee: Vec::new(),
            threshold: 0,
            target: None,
            exclude: Vec::new(),
            cluster: String::new(),
            lifecycle_seq: 0,
            request_id: format!("adm-{}", hex::encode(id)),
            issued_unix: now,
            expiry_unix: now.saturating_add(valid_for.as_secs()),
            params: Vec::new(),
        })
    }
}

impl Client {
    /// This client's approval of `request`: its certificate key's signature
    /// over the canonical bytes, with its certificate chain.
    pub fn approve(&self, request: &AdminRequest) -> Result<ClientAuth, ClientError> {
        Ok(self.signer.approve(request)?)
    }

    /// Sends a signed admin request (with every approval it carries) to the
    /// node, which coordinates the operation (`Submit`; a node of an older
    /// version gets the operation's own method). Every node taking part
    /// checks the approvals against its own policy.
    pub async fn submit_admin(
        &mut self,
        signed: &SignedAdmin,
    ) -> Result<AdminOutcome, ClientError> {
        let mut admin = AdminClient::new(self.channel.clone());
        let result = match admin.submit(signed_to_pb(signed)).await {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == tonic::Code::Unimplemented => {
                return self.submit_admin_by_method(signed).await
            }
            Err(s) => return Err(s.into()),
        };
        Ok(match result.outcome {
            Some(Outcome::Created(k)) => AdminOutcome::Created(k),
            Some(Outcome::Rotated(r)) => AdminOutcome::Rotated(r),
            Some(Outcome::Repaired(r)) => AdminOutcome::Repaired(r),
            Some(Outcome::Reshared(r)) => AdminOutcome::Reshared(r),
            Some(Outcome::StateChanged(r)) => AdminOutcome::StateChanged(r),
            None => {
                return Err(invalid(format!(
                    "node {} answered the {} request without its outcome ({})",
                    result.node, result.operation, result.summary
                )))
            }
        })
    }

    /// `submit_admin` through the fixed-operation methods, for a node of a
    /// version before `Submit`.
    async fn submit_admin_by_method(
        &mut self,
        signed: &SignedAdmin,
    ) -> Result<AdminOutcome, ClientError> {
        let r = &signed.request;
        let mut admin = AdminClient::new(self.channel.clone());
        let key_id = r.key_id.to_string();
        let key_type = r.key_type.map(|t| t.to_string()).unwrap_or_default();
        let committee: Vec<String> = r.committee.iter().map(ToString::to_string).collect();
        let (request_id, expiry_unix) = (r.request_id.clone(), r.expiry_unix);
        let (issued_unix, cluster) = (r.issued_unix, r.cluster.clone());
        let approvals = approvals(&signed.approvals);
        let exclude: Vec<String> = r.exclude.iter().map(ToString::to_string).collect();
        if !r.params.is_empty() || r.operation.spec().generic {
            return Err(invalid(format!(
                "the node predates `Submit`, so it cannot take {} requests: upgrade it",
                r.operation.a_request()
            )));
        }
        Ok(match r.operation {
            AdminOp::Create => AdminOutcome::Created(
                admin
                    .create_key(CreateKeyRequest {
                        key_id,
                        threshold: r.threshold,
                        committee,
                        key_type,
                        request_id,
                        expiry_unix,
                        approvals,
                        issued_unix,
                        cluster,
                    })
                    .await?
                    .into_inner(),
            ),
            AdminOp::Rotate => AdminOutcome::Rotated(
                admin
                    .rotate_key(RotateKeyRequest {
                        key_id,
                        key_type,
                        request_id,
                        expiry_unix,
                        approvals,
                        issued_unix,
                        cluster,
                    })
                    .await?
                    .into_inner(),
            ),
            AdminOp::Repair => AdminOutcome::Repaired(
                admin
                    .repair_key(RepairKeyRequest {
                        key_id,
                        node: r
                            .target
                            .as_ref()
                            .map(ToString::to_string)
                            .unwrap_or_default(),
                        key_type,
                        request_id,
                        expiry_unix,
                        approvals,
                        issued_unix,
                        cluster,
                    })
                    .await?
                    .into_inner(),
            ),
            AdminOp::Freeze | AdminOp::Unfreeze | AdminOp::Delete | AdminOp::Unban => {
                let req = KeyStateRequest {
                    key_id,
                    key_type,
                    request_id,
                    expiry_unix,
                    approvals,
                    issued_unix,
                    cluster,
                    lifecycle_seq: r.lifecycle_seq,
                };
                let resp = match r.operation {
                    AdminOp::Freeze => admin.freeze_key(req).await?,
                    AdminOp::Unfreeze => admin.unfreeze_key(req).await?,
                    AdminOp::Unban => admin.unban_key(req).await?,
                    _ => admin.delete_key(req).await?,
                };
                AdminOutcome::StateChanged(resp.into_inner())
            }
            AdminOp::Reshare => AdminOutcome::Reshared(
                admin
                    .reshare_key(ReshareKeyRequest {
                        key_id,
                        committee,
                        threshold: r.threshold,
                        key_type,
                        exclude,
                        request_id,
                        expiry_unix,
                        approvals,
                        issued_unix,
                        cluster,
                    })
                    .await?
                    .into_inner(),
            ),
            // Operations that run through the generic proposal (refused above).
            other => {
                return Err(invalid(format!(
                    "the node predates `Submit`, so it cannot take {} requests: upgrade it",
                    other.a_request()
                )))
            }
        })
    }

    /// The admin API's generated client on this client's connection, for
    /// calls it has no method of its own for (the fixed-operation methods
    /// such as `FreezeKey`, which `submit_admin` reaches through `Submit`).
    pub fn admin_api(&self) -> AdminClient<tonic::transport::Channel> {
        AdminClient::new(self.channel.clone())
    }

    /// Approves `request` alone and sends it.
    async fn approve_and_submit(
        &mut self,
        mut request: AdminRequest,
    ) -> Result<AdminOutcome, ClientError> {
        if request.cluster.is_empty() {
            request.cluster = self.cluster.clone();
        }
        let approval = self.approve(&request)?;
        self.submit_admin(&SignedAdmin {
            request,
            approvals: vec![approval],
        })
        .await
    }

    /// Admin: runs a keygen of a secp256k1 key. An empty committee means every node.
    pub async fn create_key(
        &mut self,
        key: &str,
        threshold: u32,
        committee: &[String],
    ) -> Result<KeyInfo, ClientError> {
        self.create_key_of_type(key, KeyType::Secp256k1, threshold, committee)
            .await
    }

    /// Admin: runs a keygen of a `key_type` key. An empty committee means every node.
    pub async fn create_key_of_type(
        &mut self,
        key: &str,
        key_type: KeyType,
        threshold: u32,
        committee: &[String],
    ) -> Result<KeyInfo, ClientError> {
        let mut r = AdminRequest::new(AdminOp::Create, key, DEFAULT_ADMIN_EXPIRY)?;
        r.key_type = Some(key_type);
        r.threshold = threshold;
        r.committee = names(committee)?;
        match self.approve_and_submit(r).await? {
            AdminOutcome::Created(k) => Ok(k),
            other => Err(invalid(format!("unexpected answer {other:?}"))),
        }
    }

    /// Admin: proactive refresh of every share of `key` (same public key, next epoch).
    pub async fn rotate_key(&mut self, key: &str) -> Result<RotateKeyResponse, ClientError> {
        let r = AdminRequest::new(AdminOp::Rotate, key, DEFAULT_ADMIN_EXPIRY)?;
        match self.approve_and_submit(r).await? {
            AdminOutcome::Rotated(k) => Ok(k),
            other => Err(invalid(format!("unexpected answer {other:?}"))),
        }
    }

    /// Admin: rebuilds `node`'s share of `key` from t helpers, then rotates the key.
    pub async fn repair_key(
        &mut self,
        key: &str,
        node: &str,
    ) -> Result<RepairKeyResponse, ClientError> {
        let mut r = AdminRequest::new(AdminOp::Repair, key, DEFAULT_ADMIN_EXPIRY)?;
        r.target = Some(NodeName::parse(node).map_err(|e| invalid(format!("node: {e}")))?);
        match self.approve_and_submit(r).await? {
            AdminOutcome::Repaired(k) => Ok(k),
            other => Err(invalid(format!("unexpected answer {other:?}"))),
        }
    }

    /// Admin: moves `key` to `committee` (node names in party order) with
    /// `threshold`; same public key, next epoch.
    pub async fn reshare_key(
        &mut self,
        key: &str,
        committee: &[String],
        threshold: u32,
    ) -> Result<ReshareKeyResponse, ClientError> {
        self.reshare_key_excluding(key, committee, threshold, &[])
            .await
    }

    /// Admin: a recovery reshare: as `reshare_key`, with the current members
    /// `exclude` taking no part (down or not trusted).
    pub async fn reshare_key_excluding(
        &mut self,
        key: &str,
        committee: &[String],
        threshold: u32,
        exclude: &[String],
    ) -> Result<ReshareKeyResponse, ClientError> {
        let mut r = AdminRequest::new(AdminOp::Reshare, key, DEFAULT_ADMIN_EXPIRY)?;
        r.committee = names(committee)?;
        r.threshold = threshold;
        r.exclude = names(exclude)?;
        match self.approve_and_submit(r).await? {
            AdminOutcome::Reshared(k) => Ok(k),
            other => Err(invalid(format!("unexpected answer {other:?}"))),
        }
    }

    /// Admin: freezes, unfreezes or deletes `key` (`op` is one of those) on
    /// every node of its committee. The request names the key's lifecycle
    /// sequence as the connected node reports it.
    pub async fn change_key_state(
        &mut self,
        key: &str,
        op: AdminOp,
    ) -> Result<KeyStateResponse, ClientError> {
        let mut r = AdminRequest::new(op, key, DEFAULT_ADMIN_EXPIRY)?;
        if op.takes_lifecycle_seq() {
            r.lifecycle_seq = self.get_key(key).await?.lifecycle_seq;
        }
        match self.approve_and_submit(r).await? {
            AdminOutcome::StateChanged(k) => Ok(k),
            other => Err(invalid(format!("unexpected answer {other:?}"))),
        }
    }
}

impl Client {
    /// Admin: a backup of the node's store (the backup operation): the bytes
    /// of a backup file, as `thresig backup create` writes it.
    pub async fn backup_store(&mut self) -> Result<Vec<u8>, ClientError> {
        let mut stream = AdminClient::new(self.channel.clone())
            .max_decoding_message_size(2 << 20)
            .backup_store(crate::proto::admin::BackupStoreRequest {})
            .await?
            .into_inner();
        let mut out = Vec::new();
        while let Some(chunk) = stream.message().await? {
            out.extend_from_slice(&chunk.data);
        }
        Ok(out)
    }
}
