//! `thresig status`: the cluster at a glance, as one node sees it: every
//! node (reachable, versions, round trip, certificate expiry) and every key
//! (type, t-of-n, state, each committee node's epoch, and whether t of them
//! can sign).

use serde_json::json;

use super::conn::Conn;
use crate::pki::Role;
use crate::proto::admin::{ClusterStatusResponse, KeyStatus, NodeStatus};

/// Show every node and every key of the cluster, as the node you ask sees them.
///
/// Needs an admin certificate with the read operation. Exits 1 when a node
/// is unreachable or a key cannot sign (fewer than t committee nodes ready,
/// or not active), so scripts and probes can use it.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    conn: Conn,
    /// Print JSON (the ClusterStatusResponse fields) instead of tables.
    #[arg(long)]
    json: bool,
}

pub async fn run(a: Args) -> anyhow::Result<()> {
    let s = a.conn.client(Role::Admin)?.cluster_status().await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&to_json(&s))?);
    } else {
        print!("{}", render(&s));
    }
    let down = s.nodes.iter().filter(|n| !n.reachable).count();
    let unable = s.keys.iter().filter(|k| !can_sign(k)).count();
    anyhow::ensure!(
        down == 0 && unable == 0,
        "{down} node(s) unreachable, {unable} key(s) unable to sign"
    );
    Ok(())
}

fn can_sign(k: &KeyStatus) -> bool {
    k.state == "active" && k.ready >= k.threshold
}

/// Certificates that expire within this many days are flagged RENEW (the
/// same bound as the alert in deploy/prometheus/alerts.yml).
const RENEW_WITHIN_DAYS: i64 = 14;

fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// "2027-12-01 (364d)", flagged when it is close or past.
fn expiry(not_after: i64, now: i64) -> String {
    if not_after == 0 {
        return "-".into();
    }
    let date = time::OffsetDateTime::from_unix_timestamp(not_after)
        .map(|t| t.date().to_string())
        .unwrap_or_else(|_| not_after.to_string());
    let days = not_after.saturating_sub(now) / 86_400;
    if not_after <= now {
        format!("EXPIRED {date}")
    } else if days < RENEW_WITHIN_DAYS {
        format!("{date} ({days}d) RENEW")
    } else {
        format!("{date} ({days}d)")
    }
}

fn node_line(n: &NodeStatus, now: i64) -> [String; 6] {
    let name = if n.this_node {
        format!("{} (answering)", n.name)
    } else {
        n.name.clone()
    };
    if !n.reachable {
        return [
            name,
            format!("NO: {}", n.error),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
        ];
    }
    let rtt = if n.this_node {
        "-".into()
    } else {
        format!("{:.1} ms", n.rtt_us as f64 / 1000.0)
    };
    [
        name,
        "yes".into(),
        n.software_version.clone(),
        n.wire_version.to_string(),
        rtt,
        expiry(n.cert_not_after_unix, now),
    ]
}

fn key_line(k: &KeyStatus) -> [String; 6] {
    let epochs = k
        .members
        .iter()
        .map(|m| match (m.answered, m.has_share) {
            (false, _) => format!("{}:?", m.node),
            (true, false) => format!("{}:none", m.node),
            (true, true) if m.signing => format!("{}:{}", m.node, m.epoch),
            (true, true) => format!("{}:{}(cannot sign)", m.node, m.epoch),
        })
        .collect::<Vec<_>>()
        .join(" ");
    let state = if k.reason.is_empty() {
        k.state.clone()
    } else {
        format!("{} ({})", k.state, k.reason)
    };
    let verdict = if !can_sign(k) {
        "CANNOT SIGN"
    } else if k.ready == k.threshold {
        "ok, AT RISK: one more node down stops it"
    } else {
        "ok"
    };
    let ready = format!("{}/{} {verdict}", k.ready, k.threshold);
    [
        k.key_id.clone(),
        k.key_type.clone(),
        format!("{}-of-{}", k.threshold, k.committee.len()),
        state,
        format!("{} [{epochs}]", k.epoch),
        ready,
    ]
}

/// Columns padded to their widest cell.
fn table<const N: usize>(head: [&str; N], rows: &[[String; N]]) -> String {
    let mut width = head.map(str::len);
    for r in rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, (c, w)) in cells.iter().zip(width).enumerate() {
            if i + 1 == N {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  "));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(head.map(str::to_owned).to_vec());
    for r in rows {
        out.push_str(&line(r.to_vec()));
    }
    out
}

/// One line that says whether anything needs attention.
fn headline(s: &ClusterStatusResponse) -> String {
    let down: Vec<&str> = s
        .nodes
        .iter()
        .filter(|n| !n.reachable)
        .map(|n| n.name.as_str())
        .collect();
    let unable: Vec<&str> = s
        .keys
        .iter()
        .filter(|k| !can_sign(k))
        .map(|k| k.key_id.as_str())
        .collect();
    let mut parts = vec![format!(
        "{} of {} nodes reachable{}",
        s.nodes.len() - down.len(),
        s.nodes.len(),
        if down.is_empty() {
            String::new()
        } else {
            format!(" (DOWN: {})", down.join(", "))
        }
    )];
    parts.push(format!(
        "{} of {} keys can sign{}",
        s.keys.len() - unable.len(),
        s.keys.len(),
        if unable.is_empty() {
            String::new()
        } else {
            format!(" (CANNOT: {})", unable.join(", "))
        }
    ));
    let trouble = !down.is_empty() || !unable.is_empty();
    format!(
        "{}: {}\n",
        if trouble { "ATTENTION" } else { "OK" },
        parts.join("; ")
    )
}

fn render(s: &ClusterStatusResponse) -> String {
    render_at(s, now_unix())
}

fn render_at(s: &ClusterStatusResponse, now: i64) -> String {
    let nodes: Vec<_> = s.nodes.iter().map(|n| node_line(n, now)).collect();
    let keys: Vec<_> = s.keys.iter().map(key_line).collect();
    let mut out = format!("cluster as node {} sees it\n{}\n", s.node, headline(s));
    out.push_str(&table(
        [
            "NODE",
            "REACHABLE",
            "VERSION",
            "WIRE",
            "RTT",
            "CERT EXPIRES",
        ],
        &nodes,
    ));
    out.push('\n');
    if keys.is_empty() {
        out.push_str("no keys\n");
    } else {
        out.push_str(&table(
            [
                "KEY",
                "TYPE",
                "T-OF-N",
                "STATE",
                "EPOCH [NODE:EPOCH]",
                "READY",
            ],
            &keys,
        ));
    }
    out
}

fn to_json(s: &ClusterStatusResponse) -> serde_json::Value {
    json!({
        "node": s.node,
        "nodes": s.nodes.iter().map(|n| json!({
            "name": n.name,
            "this_node": n.this_node,
            "reachable": n.reachable,
            "error": n.error,
            "software_version": n.software_version,
            "wire_version": n.wire_version,
            "rtt_us": n.rtt_us,
            "cert_not_after_unix": n.cert_not_after_unix,
        })).collect::<Vec<_>>(),
        "keys": s.keys.iter().map(|k| json!({
            "key_id": k.key_id,
            "key_type": k.key_type,
            "threshold": k.threshold,
            "committee": k.committee,
            "state": k.state,
            "reason": k.reason,
            "epoch": k.epoch,
            "ready": k.ready,
            "can_sign": can_sign(k),
            "members": k.members.iter().map(|m| json!({
                "node": m.node,
                "answered": m.answered,
                "error": m.error,
                "has_share": m.has_share,
                "epoch": m.epoch,
                "signing": m.signing,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::admin::MemberStatus;

    /// 2026-12-01T00:00:00Z.
    const NOW: i64 = 1_796_083_200;

    #[test]
    fn the_text_output_names_the_down_node_and_whether_each_key_can_sign() {
        let node = |name: &str, this: bool, up: bool| NodeStatus {
            name: name.into(),
            this_node: this,
            reachable: up,
            error: if up {
                String::new()
            } else {
                "unreachable (connection refused)".into()
            },
            wire_version: if up { 3 } else { 0 },
            software_version: if up { "0.1.0".into() } else { String::new() },
            rtt_us: if this { 0 } else { 1234 },
            cert_not_after_unix: if up { NOW + 10 * 86_400 } else { 0 },
        };
        let member = |n: &str, up: bool| MemberStatus {
            node: n.into(),
            answered: up,
            error: String::new(),
            has_share: up,
            epoch: 2,
            signing: up,
        };
        let s = ClusterStatusResponse {
            node: "a".into(),
            nodes: vec![
                node("a", true, true),
                node("b", false, true),
                node("c", false, false),
            ],
            keys: vec![KeyStatus {
                key_id: "k".into(),
                key_type: "secp256k1".into(),
                threshold: 2,
                committee: vec!["a".into(), "b".into(), "c".into()],
                state: "active".into(),
                reason: String::new(),
                epoch: 2,
                members: vec![member("a", true), member("b", true), member("c", false)],
                ready: 2,
            }],
        };
        let text = render_at(&s, NOW);
        assert!(
            text.contains("ATTENTION: 2 of 3 nodes reachable (DOWN: c); 1 of 1 keys can sign"),
            "{text}"
        );
        assert!(text.contains("2026-12-11 (10d) RENEW"), "{text}");
        assert!(
            text.lines()
                .any(|l| l.starts_with("c ") && l.contains("NO: unreachable (connection refused)")),
            "{text}"
        );
        assert!(text.contains("1.2 ms"), "{text}");
        assert!(text.contains("2-of-3"), "{text}");
        assert!(text.contains("2 [a:2 b:2 c:?]"), "{text}");
        assert!(text.contains("2/2 ok"), "{text}");
        let mut one_down = s.clone();
        one_down.keys[0].ready = 1;
        assert!(render_at(&one_down, NOW).contains("1/2 CANNOT SIGN"));
        assert!(text.contains("2/2 ok, AT RISK"), "{text}");
        assert_eq!(to_json(&s)["keys"][0]["can_sign"], true);
    }
}
