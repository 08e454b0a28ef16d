//! Authorization on this node: its policy file (reloadable), the checks of
//! client sign requests and admin operations against it, rate limits, the
//! one verification of a client's signed request (`verify_client_request`),
//! and the audit entries those decisions leave.

use std::sync::Arc;

use super::request::{ClientAuth, SignRequest};
use super::{now_unix, policy, Node, NodeError};
use crate::domain::{DerivationPath, KeyId, NodeName};

/// What this node's policy allowed a sign request: the decoded payload's
/// one-line summary (none for a raw digest) and what it spends against the
/// deciding rule's rolling-window limits.
#[derive(Debug, Clone, Default)]
pub(crate) struct Authorized {
    pub summary: Option<String>,
    pub windows: Vec<super::content_policy::WindowSpend>,
}

/// A client request whose signature, chain and identity checked out: the
/// client it came from.
#[derive(Debug, Clone)]
pub struct VerifiedRequest {
    pub client: NodeName,
}

impl Node {
    /// Checks a client's signed request: its fields (expiry, slot, sizes),
    /// the signature over its canonical bytes, the certificate chain and
    /// identity behind it. `what` names the request in refusals; the caller
    /// says where (`NodeError::at`).
    pub(crate) fn verify_client_request(
        &self,
        request: &SignRequest,
        auth: &ClientAuth,
        what: &str,
    ) -> Result<VerifiedRequest, NodeError> {
        request
            .check_fields(now_unix())
            .map_err(|e| NodeError::InvalidArgument(format!("{what} refused: {e}")))?;
        let client = self
            .verifier
            .verify(auth, &request.canonical_bytes())
            .map_err(|e| NodeError::PermissionDenied(format!("{what} refused: {e}")))?;
        Ok(VerifiedRequest { client })
    }

    /// After this node's CA bundle or CRL was reloaded: client request
    /// signatures are checked again from scratch (none verified under the
    /// old material counts).
    pub fn forget_verified_requests(&self) {
        self.verifier.forget();
    }

    /// Reads the policy file again and switches to it; on error the current
    /// policy stays. Returns a one-line summary.
    pub fn reload_policy(&self) -> Result<String, NodeError> {
        let path = self.policy_file.as_ref().ok_or_else(|| {
            NodeError::FailedPrecondition(
                "this node has no policy file configured (set `policy = \"...\"` in its config)"
                    .into(),
            )
        })?;
        let p = policy::Policy::load(path).map_err(NodeError::InvalidArgument)?;
        let mut g = self
            .policy
            .write()
            .map_err(|_| NodeError::Internal("policy lock poisoned; policy not reloaded".into()))?;
        let summary = format!(
            "policy {} loaded on node {}: {} client rules, {} key limits, {} admin rules",
            path.display(),
            self.name,
            p.client.len(),
            p.key.len(),
            p.admin.len()
        );
        *g = Arc::new(p);
        drop(g);
        tracing::info!("{summary}");
        Ok(summary)
    }

    /// The policy in force on this node.
    pub fn policy(&self) -> Arc<policy::Policy> {
        self.policy
            .read()
            .map(|g| g.clone())
            .unwrap_or_else(|_| Arc::new(policy::Policy::default()))
    }

    /// Policy check of a client's sign request (and, with `charge`, its rate
    /// limits). Every participant runs it; the coordinator charges the rate
    /// once, before it proposes.
    pub(crate) fn authorize_sign(
        &self,
        client: &NodeName,
        req: &SignRequest,
        charge: bool,
    ) -> Result<Authorized, NodeError> {
        let policy = self.policy();
        // A typed payload is decoded here, by this node, and its item must
        // be what the session signs; the policy reads what it says.
        let decoded = match &req.payload {
            Some(_) => self.check_payload(req, &self.key(&req.key_id)?)?,
            None => None,
        };
        let d =
            policy.check_sign_content(client.as_str(), &req.key_id, &req.path, decoded.as_deref());
        if !d.allowed {
            tracing::warn!(
                %client,
                key = %req.key_id,
                path = %req.path,
                kind = req.kind_name(),
                rule = %d.rule,
                "sign request denied by policy",
            );
            let what = decoded
                .as_ref()
                .map(|d| format!(" (signing: {})", d.summary))
                .unwrap_or_default();
            return Err(NodeError::PermissionDenied(format!(
                "client {client}: {d}{what}"
            )));
        }
        if charge {
            self.charge_rate(client, req)?;
        }
        Ok(Authorized {
            summary: decoded.map(|d| d.summary.clone()),
            windows: d.windows,
        })
    }

    /// May `client` read the public key of `key` at `path`? The same rule as
    /// signing there (no rate limit).
    pub fn authorize_key_read(
        &self,
        client: &NodeName,
        key: &KeyId,
        path: &DerivationPath,
    ) -> Result<(), NodeError> {
        let d = self.policy().check_sign(client.as_str(), key, path);
        if d.allowed {
            Ok(())
        } else {
            Err(NodeError::PermissionDenied(format!("client {client}: {d}")))
        }
    }

    /// Takes one token from the client's and the key's rate limits.
    pub(crate) fn charge_rate(
        &self,
        client: &NodeName,
        req: &SignRequest,
    ) -> Result<(), NodeError> {
        if let Err((which, wait)) = self
            .limiter
            .take(&self.policy(), client.as_str(), &req.key_id)
        {
            return Err(NodeError::RateLimited {
                message: format!(
                    "{which} is over its rate limit here; retry in {:.2} s",
                    wait.as_secs_f64()
                ),
                retry_after: wait,
            });
        }
        Ok(())
    }

    /// Appends an event to this node's audit log (durably).
    pub fn audit(&self, event: crate::storage::AuditEvent) -> Result<u64, NodeError> {
        self.store.audit_append(event, now_unix()).map_err(|e| {
            tracing::error!(error = %e, "cannot write the audit log");
            NodeError::from(e)
        })
    }

    /// Audits an admin request's outcome (best effort: the operation has
    /// already happened or failed) and passes it through.
    pub fn audit_admin<T>(
        &self,
        admin: &NodeName,
        operation: &str,
        key: &str,
        r: Result<T, NodeError>,
    ) -> Result<T, NodeError> {
        let (decision, detail) = match &r {
            Ok(_) => ("ok", String::new()),
            Err(e) => ("failed", e.to_string()),
        };
        let _ = self.audit(crate::storage::AuditEvent {
            kind: format!("admin.{operation}"),
            actor: format!("admin/{admin}"),
            key: key.to_owned(),
            decision: decision.into(),
            rule: "policy".into(),
            detail,
            ..Default::default()
        });
        r
    }

    /// Policy check of an admin operation (one of `policy::ADMIN_OPERATIONS`).
    pub fn authorize_admin(&self, admin: &NodeName, operation: &str) -> Result<(), NodeError> {
        let d = self.policy().check_admin(admin.as_str(), operation);
        if d.allowed {
            Ok(())
        } else {
            let _ = self.audit(crate::storage::AuditEvent {
                kind: format!("admin.{operation}"),
                actor: format!("admin/{admin}"),
                decision: "denied".into(),
                rule: d.rule.clone(),
                detail: d.reason.clone(),
                ..Default::default()
            });
            tracing::warn!(%admin, operation, rule = %d.rule, "admin request denied by policy");
            Err(NodeError::PermissionDenied(format!("admin {admin}: {d}")).at(&self.name))
        }
    }
}
