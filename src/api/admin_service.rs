//! `thresig.admin.v1.Admin` (admin identities): key changes carry the
//! signed admin request the node checks; reads and audit. Handlers parse
//! input into domain types and call the node; they hold no logic of their own.

use std::sync::Arc;
use tonic::{Request, Response, Status};

use super::admin_fields::{signed_admin, signed_from_pb, Fields};
use super::key_info::key_info_here;
use super::services::{arg, require};
use super::status;
use crate::domain::KeyId;
use crate::node::admin_request::AdminOp;
use crate::node::admin_request::Stamp;
use crate::node::Node;
use crate::pki::Role;
use crate::proto::admin as apb;
use crate::telemetry::Metrics;
use crate::transport::Identity;

use apb::admin_result::Outcome;

pub struct AdminService {
    node: Arc<Node>,
    metrics: Arc<Metrics>,
    reloader: super::Reloader,
}

impl AdminService {
    pub fn new(
        reloader: super::Reloader,
        metrics: Arc<Metrics>,
    ) -> apb::admin_server::AdminServer<Self> {
        apb::admin_server::AdminServer::new(Self {
            node: reloader.node.clone(),
            metrics,
            reloader,
        })
        .max_decoding_message_size(64 * 1024)
    }
}

/// Bytes per message of a streamed backup.
const BACKUP_CHUNK: usize = 1 << 20;

impl AdminService {
    /// The caller's admin identity, if the policy lets it run `operation`.
    fn admin<T>(&self, req: &Request<T>, operation: &str) -> Result<Identity, Status> {
        let who = require(req, Role::Admin)?;
        self.node
            .authorize_admin(&who.name, operation)
            .map_err(|e| status(self.node.name(), &e))?;
        Ok(who)
    }
}

impl AdminService {
    pub(super) fn node(&self) -> &Node {
        &self.node
    }

    pub(super) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Freeze, unfreeze, delete or unban.
    async fn change_state(
        &self,
        req: Request<apb::KeyStateRequest>,
        op: AdminOp,
    ) -> Result<Response<apb::KeyStateResponse>, Status> {
        let who = require(&req, Role::Admin)?;
        let r = req.into_inner();
        let signed = signed_admin(
            op,
            Fields {
                key_id: &r.key_id,
                key_type: &r.key_type,
                ..Fields::default()
            },
            Stamp {
                lifecycle_seq: r.lifecycle_seq,
                ..Stamp::new(r.cluster, r.request_id, r.issued_unix, r.expiry_unix)
            },
            r.approvals,
        )?;
        let resp = self
            .run_for(&who, &signed, |o| match o {
                Outcome::StateChanged(s) => Some(s),
                _ => None,
            })
            .await?;
        Ok(Response::new(resp))
    }
}

fn audit_entry(e: crate::storage::AuditEntry) -> apb::AuditEntry {
    apb::AuditEntry {
        seq: e.seq,
        unix: e.unix,
        kind: e.event.kind,
        actor: e.event.actor,
        key_id: e.event.key,
        request_id: e.event.request_id,
        decision: e.event.decision,
        rule: e.event.rule,
        eid: e.event.eid,
        detail: e.event.detail,
    }
}

#[tonic::async_trait]
impl apb::admin_server::Admin for AdminService {
    async fn submit(
        &self,
        req: Request<apb::SignedAdminRequest>,
    ) -> Result<Response<apb::AdminResult>, Status> {
        let who = require(&req, Role::Admin)?;
        let signed = signed_from_pb(req.into_inner())?;
        Ok(Response::new(self.run(&who, &signed).await?))
    }

    async fn create_key(
        &self,
        req: Request<apb::CreateKeyRequest>,
    ) -> Result<Response<apb::KeyInfo>, Status> {
        let who = require(&req, Role::Admin)?;
        let r = req.into_inner();
        let signed = signed_admin(
            AdminOp::Create,
            Fields {
                key_id: &r.key_id,
                key_type: &r.key_type,
                committee: &r.committee,
                threshold: r.threshold,
                ..Fields::default()
            },
            Stamp::new(r.cluster, r.request_id, r.issued_unix, r.expiry_unix),
            r.approvals,
        )?;
        let key = self
            .run_for(&who, &signed, |o| match o {
                Outcome::Created(k) => Some(k),
                _ => None,
            })
            .await?;
        Ok(Response::new(key))
    }

    async fn rotate_key(
        &self,
        req: Request<apb::RotateKeyRequest>,
    ) -> Result<Response<apb::RotateKeyResponse>, Status> {
        let who = require(&req, Role::Admin)?;
        let r = req.into_inner();
        let signed = signed_admin(
            AdminOp::Rotate,
            Fields {
                key_id: &r.key_id,
                key_type: &r.key_type,
                ..Fields::default()
            },
            Stamp::new(r.cluster, r.request_id, r.issued_unix, r.expiry_unix),
            r.approvals,
        )?;
        let resp = self
            .run_for(&who, &signed, |o| match o {
                Outcome::Rotated(r) => Some(r),
                _ => None,
            })
            .await?;
        Ok(Response::new(resp))
    }

    async fn repair_key(
        &self,
        req: Request<apb::RepairKeyRequest>,
    ) -> Result<Response<apb::RepairKeyResponse>, Status> {
        let who = require(&req, Role::Admin)?;
        let r = req.into_inner();
        let signed = signed_admin(
            AdminOp::Repair,
            Fields {
                key_id: &r.key_id,
                key_type: &r.key_type,
                target: &r.node,
                ..Fields::default()
            },
            Stamp::new(r.cluster, r.request_id, r.issued_unix, r.expiry_unix),
            r.approvals,
        )?;
        let resp = self
            .run_for(&who, &signed, |o| match o {
                Outcome::Repaired(r) => Some(r),
                _ => None,
            })
            .await?;
        Ok(Response::new(resp))
    }

    async fn reshare_key(
        &self,
        req: Request<apb::ReshareKeyRequest>,
    ) -> Result<Response<apb::ReshareKeyResponse>, Status> {
        let who = require(&req, Role::Admin)?;
        let r = req.into_inner();
        let signed = signed_admin(
            AdminOp::Reshare,
            Fields {
                key_id: &r.key_id,
                key_type: &r.key_type,
                committee: &r.committee,
                threshold: r.threshold,
                exclude: &r.exclude,
                ..Fields::default()
            },
            Stamp::new(r.cluster, r.request_id, r.issued_unix, r.expiry_unix),
            r.approvals,
        )?;
        let resp = self
            .run_for(&who, &signed, |o| match o {
                Outcome::Reshared(r) => Some(r),
                _ => None,
            })
            .await?;
        Ok(Response::new(resp))
    }

    async fn freeze_key(
        &self,
        req: Request<apb::KeyStateRequest>,
    ) -> Result<Response<apb::KeyStateResponse>, Status> {
        self.change_state(req, AdminOp::Freeze).await
    }

    async fn unfreeze_key(
        &self,
        req: Request<apb::KeyStateRequest>,
    ) -> Result<Response<apb::KeyStateResponse>, Status> {
        self.change_state(req, AdminOp::Unfreeze).await
    }

    async fn delete_key(
        &self,
        req: Request<apb::KeyStateRequest>,
    ) -> Result<Response<apb::KeyStateResponse>, Status> {
        self.change_state(req, AdminOp::Delete).await
    }

    async fn unban_key(
        &self,
        req: Request<apb::KeyStateRequest>,
    ) -> Result<Response<apb::KeyStateResponse>, Status> {
        self.change_state(req, AdminOp::Unban).await
    }

    async fn reload_policy(
        &self,
        req: Request<apb::ReloadPolicyRequest>,
    ) -> Result<Response<apb::ReloadPolicyResponse>, Status> {
        let who = self.admin(&req, "reload-policy")?;
        let summary = self
            .node
            .audit_admin(&who.name, "reload-policy", "", self.node.reload_policy())
            .map_err(|e| status(self.node.name(), &e))?;
        tracing::info!(admin = %who, "{summary}");
        Ok(Response::new(apb::ReloadPolicyResponse { summary }))
    }

    async fn cluster_status(
        &self,
        req: Request<apb::ClusterStatusRequest>,
    ) -> Result<Response<apb::ClusterStatusResponse>, Status> {
        self.admin(&req, "read")?;
        let status = self.node.cluster_status().await;
        Ok(Response::new(super::status_pb::cluster_status_to_pb(
            self.node.name(),
            status,
            self.reloader.tls.expiry().map(|e| e.cert_not_after),
        )))
    }

    async fn reload_node(
        &self,
        req: Request<apb::ReloadNodeRequest>,
    ) -> Result<Response<apb::ReloadNodeResponse>, Status> {
        let who = self.admin(&req, "reload-policy")?;
        let report = self.reloader.reload();
        let _ = self.node.audit_admin(
            &who.name,
            "reload-node",
            "",
            if report.ok() {
                Ok(report.lines().join("; "))
            } else {
                Err(crate::node::NodeError::InvalidArgument(
                    report.lines().join("; "),
                ))
            },
        );
        let part = |r: Result<String, String>| match r {
            Ok(s) => (true, s),
            Err(e) => (false, e),
        };
        let (policy_reloaded, policy) = part(report.policy);
        let (tls_reloaded, tls) = part(report.tls);
        Ok(Response::new(apb::ReloadNodeResponse {
            policy_reloaded,
            policy,
            tls_reloaded,
            tls,
        }))
    }

    async fn audit_tail(
        &self,
        req: Request<apb::AuditTailRequest>,
    ) -> Result<Response<apb::AuditTailResponse>, Status> {
        self.admin(&req, "read")?;
        let n = req.get_ref().count.clamp(1, 10_000) as usize;
        let entries = self
            .node
            .store()
            .audit_tail(n)
            .map_err(|e| status(self.node.name(), &e.into()))?;
        Ok(Response::new(apb::AuditTailResponse {
            entries: entries.into_iter().map(audit_entry).collect(),
        }))
    }

    type BackupStoreStream = std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<apb::BackupChunk, Status>> + Send + 'static>,
    >;

    async fn backup_store(
        &self,
        req: Request<apb::BackupStoreRequest>,
    ) -> Result<Response<Self::BackupStoreStream>, Status> {
        let who = self.admin(&req, "backup")?;
        let node = self.node.clone();
        let file =
            tokio::task::spawn_blocking(move || node.store().backup(crate::node::now_unix()))
                .await
                .map_err(|e| Status::internal(e.to_string()))?;
        let file = self
            .node
            .audit_admin(&who.name, "backup", "", file.map_err(Into::into))
            .map_err(|e| status(self.node.name(), &e))?;
        tracing::info!(admin = %who, bytes = file.len(), "store backup taken");
        let chunks: Vec<Result<apb::BackupChunk, Status>> = file
            .chunks(BACKUP_CHUNK)
            .map(|c| Ok(apb::BackupChunk { data: c.to_vec() }))
            .collect();
        Ok(Response::new(Box::pin(futures::stream::iter(chunks))))
    }

    async fn audit_verify(
        &self,
        req: Request<apb::AuditVerifyRequest>,
    ) -> Result<Response<apb::AuditVerifyResponse>, Status> {
        self.admin(&req, "read")?;
        let r = self
            .node
            .store()
            .audit_verify()
            .map_err(|e| status(self.node.name(), &e.into()))?;
        Ok(Response::new(apb::AuditVerifyResponse {
            node: self.node.name().to_string(),
            good: r.good,
            ok: r.first_bad.is_none(),
            first_bad: r.first_bad.as_ref().map(|b| b.0).unwrap_or_default(),
            reason: r.first_bad.map(|b| b.1).unwrap_or_default(),
        }))
    }

    async fn list_keys(
        &self,
        req: Request<apb::ListKeysRequest>,
    ) -> Result<Response<apb::ListKeysResponse>, Status> {
        self.admin(&req, "read-keys")?;
        let keys = self.node.keys().map_err(|e| status(self.node.name(), &e))?;
        Ok(Response::new(apb::ListKeysResponse {
            keys: keys.iter().map(|k| key_info_here(&self.node, k)).collect(),
        }))
    }

    async fn get_key(
        &self,
        req: Request<apb::GetKeyRequest>,
    ) -> Result<Response<apb::KeyInfo>, Status> {
        self.admin(&req, "read-keys")?;
        let key = KeyId::parse(&req.get_ref().key_id).map_err(|e| arg("key_id", e))?;
        let mut rec = self
            .node
            .key(&key)
            .map_err(|e| status(self.node.name(), &e))?;
        // A key generated here and not active: its committee may hold the
        // certificate (its keygen's coordinator died after every member
        // stored its share); otherwise say what it waits for.
        let mut waiting = None;
        if rec.state == crate::storage::KeyState::Generated {
            match self.node.keygen_activation(&rec).await {
                Ok(()) => {
                    rec = self
                        .node
                        .key(&key)
                        .map_err(|e| status(self.node.name(), &e))?;
                }
                Err(why) => waiting = Some(why),
            }
        }
        let mut info = key_info_here(&self.node, &rec);
        if let Some(why) = waiting {
            info.state = format!("generated: {why}");
        }
        Ok(Response::new(info))
    }
}
