//! The key-changing admin calls take one path: `Submit` and the
//! fixed-operation methods (CreateKey .. UnbanKey) each parse their message
//! into a signed admin request, and `AdminService::run` has the node run the
//! operation it names (`Node::run_admin`), logs, audits and counts it once,
//! and converts the outcome to its proto message (`result_pb`).

use tonic::Status;
use tracing::Instrument;

use super::admin_service::AdminService;
use super::key_info::key_info;
use super::services::RequestLog;
use crate::node::admin_ops::AdminDone;
use crate::node::admin_request::SignedAdmin;
use crate::node::RotateSummary;
use crate::proto::admin as apb;
use crate::transport::Identity;

use apb::admin_result::Outcome;

impl AdminService {
    /// Runs the key change `signed` asks for, with this node coordinating.
    pub(super) async fn run(
        &self,
        who: &Identity,
        signed: &SignedAdmin,
    ) -> Result<apb::AdminResult, Status> {
        let r = &signed.request;
        let (op, key) = (r.operation, r.key_id.as_str());
        let log = RequestLog::start(op.spec().log_kind, who, key, &r.request_id);
        let done = self.node().run_admin(signed).instrument(log.span()).await;
        let done = log.finish(
            self.metrics(),
            self.node(),
            self.node().audit_admin(&who.name, op.label(), key, done),
        )?;
        let summary = done.summary();
        tracing::info!(
            admin = %who,
            key,
            operation = %op,
            request_id = %r.request_id,
            "{summary}",
        );
        Ok(apb::AdminResult {
            operation: op.label().into(),
            node: self.node().name().to_string(),
            summary,
            outcome: Some(result_pb(done)),
        })
    }

    /// `run` for a fixed-operation method: the outcome that method returns.
    pub(super) async fn run_for<T>(
        &self,
        who: &Identity,
        signed: &SignedAdmin,
        pick: impl FnOnce(Outcome) -> Option<T>,
    ) -> Result<T, Status> {
        let result = self.run(who, signed).await?;
        result.outcome.and_then(pick).ok_or_else(|| {
            Status::internal(format!(
                "node {}: the {} request gave another outcome than its method returns",
                self.node().name(),
                signed.request.operation
            ))
        })
    }
}

pub(super) fn rotate_response(s: &RotateSummary) -> apb::RotateKeyResponse {
    apb::RotateKeyResponse {
        key: Some(key_info(&s.key)),
        old_epoch: s.old_epoch,
        new_epoch: s.new_epoch,
        public_key_unchanged: s.public_key_unchanged,
        duration_ms: s.elapsed.as_millis() as u64,
    }
}

/// The proto message of what a key change did.
fn result_pb(done: AdminDone) -> Outcome {
    let listed = |v: &[(crate::domain::NodeName, String)]| {
        v.iter()
            .map(|(n, why)| format!("{n} ({why})"))
            .collect::<Vec<_>>()
    };
    let names = |v: &[crate::domain::NodeName]| v.iter().map(ToString::to_string).collect();
    match done {
        AdminDone::Created(rec) | AdminDone::Imported(rec) => Outcome::Created(key_info(&rec)),
        AdminDone::Rotated(s) => Outcome::Rotated(rotate_response(&s)),
        AdminDone::Repaired(s) => Outcome::Repaired(apb::RepairKeyResponse {
            rotation: Some(rotate_response(&s.rotation)),
            helpers: names(&s.helpers),
        }),
        AdminDone::Reshared(s) => Outcome::Reshared(apb::ReshareKeyResponse {
            key: Some(key_info(&s.key)),
            old_epoch: s.old_epoch,
            new_epoch: s.new_epoch,
            old_committee: names(&s.old_committee),
            old_threshold: s.old_threshold.into(),
            dealers: names(&s.dealers),
            retired: names(&s.retired),
            not_retired: listed(&s.not_retired),
            public_key_unchanged: s.public_key_unchanged,
            duration_ms: s.elapsed.as_millis() as u64,
        }),
        AdminDone::StateChanged(s) => Outcome::StateChanged(apb::KeyStateResponse {
            key: Some(key_info(&s.key)),
            applied: names(&s.applied),
            not_applied: listed(&s.not_applied),
        }),
    }
}
