//! `thresig.admin.v1.Admin` (admin identities): key changes carry the
//! signed admin request the node checks; reads and audit. Handlers parse
//! input into domain types and call the node; they hold no logic of their own.

use std::sync::Arc;
use std::time::Instant;

use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::admin_fields::{signed_admin, Fields};
use super::key_info::{key_info, key_info_here};
use super::services::{arg, require, RequestLog};
use super::status;
use crate::domain::KeyId;
use crate::node::admin_request::AdminOp;
use crate::node::admin_request::Stamp;
use crate::node::Node;
use crate::pki::Role;
use crate::proto::admin as apb;
use crate::telemetry::Metrics;
use crate::transport::Identity;

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
    /// Freeze, unfreeze or delete.
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
        let key = signed.request.key_id.clone();
        let log = RequestLog::start(op.label(), &who, key.as_str(), &signed.request.request_id);
        let r = self
            .node
            .change_key_state(&signed)
            .instrument(log.span())
            .await;
        let s = log.finish(
            &self.metrics,
            &self.node,
            self.node
                .audit_admin(&who.name, op.label(), key.as_str(), r),
        )?;
        tracing::info!(admin = %who, key = %key, operation = %op, applied = ?s.applied,
            not_applied = ?s.not_applied, "key state changed");
        Ok(Response::new(apb::KeyStateResponse {
            key: Some(key_info(&s.key)),
            applied: s.applied.iter().map(ToString::to_string).collect(),
            not_applied: s
                .not_applied
                .iter()
                .map(|(n, why)| format!("{n} ({why})"))
                .collect(),
        }))
    }
}

fn rotate_response(s: &crate::node::RotateSummary) -> apb::RotateKeyResponse {
    apb::RotateKeyResponse {
        key: Some(key_info(&s.key)),
        old_epoch: s.old_epoch,
        new_epoch: s.new_epoch,
        public_key_unchanged: s.public_key_unchanged,
        duration_ms: s.elapsed.as_millis() as u64,
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
        let key = signed.request.key_id.clone();
        let started = Instant::now();
        let log = RequestLog::start("keygen", &who, key.as_str(), &signed.request.request_id);
        let r = self.node.create_key(&signed).instrument(log.span()).await;
        let rec = log.finish(
            &self.metrics,
            &self.node,
            self.node.audit_admin(&who.name, "create", key.as_str(), r),
        )?;
        tracing::info!(
            admin = %who,
            key = %key,
            ms = started.elapsed().as_millis() as u64,
            "key created",
        );
        Ok(Response::new(key_info(&rec)))
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
        let key = signed.request.key_id.clone();
        let log = RequestLog::start("rotate", &who, key.as_str(), &signed.request.request_id);
        let r = self.node.rotate(&signed).instrument(log.span()).await;
        let s = log.finish(
            &self.metrics,
            &self.node,
            self.node.audit_admin(&who.name, "rotate", key.as_str(), r),
        )?;
        tracing::info!(
            admin = %who,
            key = %key,
            old_epoch = s.old_epoch,
            new_epoch = s.new_epoch,
            ms = s.elapsed.as_millis() as u64,
            "key rotated",
        );
        Ok(Response::new(rotate_response(&s)))
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
        let key = signed.request.key_id.clone();
        let log = RequestLog::start("repair", &who, key.as_str(), &signed.request.request_id);
        let r = self.node.repair(&signed).instrument(log.span()).await;
        let s = log.finish(
            &self.metrics,
            &self.node,
            self.node.audit_admin(&who.name, "repair", key.as_str(), r),
        )?;
        tracing::info!(
            admin = %who,
            key = %key,
            target = %s.target,
            helpers = ?s.helpers,
            "share repaired",
        );
        Ok(Response::new(apb::RepairKeyResponse {
            rotation: Some(rotate_response(&s.rotation)),
            helpers: s.helpers.iter().map(ToString::to_string).collect(),
        }))
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
        let (key, threshold) = (signed.request.key_id.clone(), r.threshold);
        let log = RequestLog::start("reshare", &who, key.as_str(), &signed.request.request_id);
        let r = self.node.reshare(&signed).instrument(log.span()).await;
        let s = log.finish(
            &self.metrics,
            &self.node,
            self.node.audit_admin(&who.name, "reshare", key.as_str(), r),
        )?;
        tracing::info!(admin = %who, key = %key, old_epoch = s.old_epoch, new_epoch = s.new_epoch,
            committee = ?s.key.committee, threshold, retired = ?s.retired, ms = s.elapsed.as_millis() as u64, "key reshared");
        Ok(Response::new(apb::ReshareKeyResponse {
            key: Some(key_info(&s.key)),
            old_epoch: s.old_epoch,
            new_epoch: s.new_epoch,
            old_committee: s.old_committee.iter().map(ToString::to_string).collect(),
            old_threshold: s.old_threshold.into(),
            dealers: s.dealers.iter().map(ToString::to_string).collect(),
            retired: s.retired.iter().map(ToString::to_string).collect(),
            not_retired: s
                .not_retired
                .iter()
                .map(|(n, why)| format!("{n} ({why})"))
                .collect(),
            public_key_unchanged: s.public_key_unchanged,
            duration_ms: s.elapsed.as_millis() as u64,
        }))
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
