//! The admin plane's reads and reloads through a client connection (an
//! admin certificate): policy and node reloads, cluster status, the audit
//! log, and the keys.

use super::{Client, ClientError, KeyInfo};
use crate::proto::admin::{admin_client::AdminClient, GetKeyRequest, ListKeysRequest};

impl Client {
    /// Admin: makes the node reread its policy file; returns its summary.
    pub async fn reload_policy(&mut self) -> Result<String, ClientError> {
        Ok(AdminClient::new(self.channel.clone())
            .reload_policy(crate::proto::admin::ReloadPolicyRequest {})
            .await?
            .into_inner()
            .summary)
    }

    /// Admin: the cluster as the node sees it (`thresig status`).
    pub async fn cluster_status(
        &mut self,
    ) -> Result<crate::proto::admin::ClusterStatusResponse, ClientError> {
        Ok(AdminClient::new(self.channel.clone())
            .cluster_status(crate::proto::admin::ClusterStatusRequest {})
            .await?
            .into_inner())
    }

    /// Admin: makes the node reread its policy and its certificate, key, CA
    /// bundle and CRL; says what each part did.
    pub async fn reload_node(&mut self) -> Result<crate::api::ReloadReport, ClientError> {
        let r = AdminClient::new(self.channel.clone())
            .reload_node(crate::proto::admin::ReloadNodeRequest {})
            .await?
            .into_inner();
        let part = |ok: bool, s: String| if ok { Ok(s) } else { Err(s) };
        Ok(crate::api::ReloadReport {
            policy: part(r.policy_reloaded, r.policy),
            tls: part(r.tls_reloaded, r.tls),
        })
    }

    /// Admin: the newest `count` entries of the node's audit log.
    pub async fn audit_tail(
        &mut self,
        count: u32,
    ) -> Result<Vec<crate::proto::admin::AuditEntry>, ClientError> {
        Ok(AdminClient::new(self.channel.clone())
            .audit_tail(crate::proto::admin::AuditTailRequest { count })
            .await?
            .into_inner()
            .entries)
    }

    /// Admin: checks the node's whole audit chain.
    pub async fn audit_verify(
        &mut self,
    ) -> Result<crate::proto::admin::AuditVerifyResponse, ClientError> {
        Ok(AdminClient::new(self.channel.clone())
            .audit_verify(crate::proto::admin::AuditVerifyRequest {})
            .await?
            .into_inner())
    }

    pub async fn list_keys(&mut self) -> Result<Vec<KeyInfo>, ClientError> {
        Ok(AdminClient::new(self.channel.clone())
            .list_keys(ListKeysRequest {})
            .await?
            .into_inner()
            .keys)
    }

    pub async fn get_key(&mut self, key: &str) -> Result<KeyInfo, ClientError> {
        Ok(AdminClient::new(self.channel.clone())
            .get_key(GetKeyRequest { key_id: key.into() })
            .await?
            .into_inner())
    }
}
