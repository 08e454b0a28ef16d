//! `ClusterStatus` on the admin wire.

use crate::domain::NodeName;
use crate::node::ClusterStatus;
use crate::proto::admin as apb;
use crate::storage::KeyState;

/// `own_cert_not_after`: when this node's certificate expires (the node
/// layer knows no certificates).
pub(crate) fn cluster_status_to_pb(
    node: &NodeName,
    s: ClusterStatus,
    own_cert_not_after: Option<i64>,
) -> apb::ClusterStatusResponse {
    let nodes = s
        .nodes
        .into_iter()
        .map(|n| {
            let (reachable, error, wire_version, software_version, cert) = match n.answer {
                Ok(v) => (true, String::new(), v.wire, v.software, v.cert_not_after),
                Err(e) => (false, e, 0, String::new(), None),
            };
            let cert = if n.this_node {
                own_cert_not_after
            } else {
                cert
            };
            apb::NodeStatus {
                name: n.name.to_string(),
                this_node: n.this_node,
                reachable,
                error,
                wire_version,
                software_version,
                rtt_us: u64::try_from(n.rtt.as_micros()).unwrap_or(u64::MAX),
                cert_not_after_unix: cert.unwrap_or(0),
            }
        })
        .collect();
    let keys = s
        .keys
        .into_iter()
        .map(|k| {
            let ready = u32::try_from(k.ready()).unwrap_or(u32::MAX);
            let r = k.record;
            let reason = match &r.state {
                KeyState::Frozen(why) => why.clone(),
                _ => String::new(),
            };
            let members = k
                .members
                .into_iter()
                .map(|(n, m)| match m {
                    Ok((epoch, signing)) => apb::MemberStatus {
                        node: n.to_string(),
                        answered: true,
                        error: String::new(),
                        has_share: epoch.is_some(),
                        epoch: epoch.unwrap_or(0),
                        signing,
                    },
                    Err(e) => apb::MemberStatus {
                        node: n.to_string(),
                        answered: false,
                        error: e,
                        has_share: false,
                        epoch: 0,
                        signing: false,
                    },
                })
                .collect();
            apb::KeyStatus {
                key_id: r.key_id.to_string(),
                key_type: r.key_type.to_string(),
                threshold: u32::from(r.threshold),
                committee: r.committee.clone(),
                state: r.state.label().into(),
                reason,
                epoch: r.epoch,
                members,
                ready,
            }
        })
        .collect();
    apb::ClusterStatusResponse {
        node: node.to_string(),
        nodes,
        keys,
    }
}
