//! `thresig audit`: read and check a node's hash-chained audit log, through
//! the running node (admin certificate) or, with `--config`, straight from
//! the store of a stopped node (needs its passphrase).

use std::path::PathBuf;

use super::conn::Conn;
use crate::config::NodeConfig;
use crate::pki::Role;
use crate::storage::Store;

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Print the newest entries, oldest first.
    Tail {
        /// How many entries.
        #[arg(short = 'n', long, default_value_t = 20)]
        count: u32,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// Read the store of a stopped node instead of asking a running one.
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Walk the whole chain; exit 1 and name the first entry that was edited,
    /// removed or moved.
    Verify {
        /// Check the store of a stopped node instead of asking a running one.
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(flatten)]
        conn: Conn,
    },
}

fn open(config: &std::path::Path) -> anyhow::Result<Store> {
    let cfg = NodeConfig::load(config)?;
    let pass = cfg.passphrase.read()?;
    Ok(Store::open(&cfg.data_dir, &cfg.name, &pass)?)
}

pub async fn run(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Tail {
            count,
            json,
            config,
            conn,
        } => {
            let entries: Vec<crate::proto::admin::AuditEntry> = match config {
                Some(c) => open(&c)?
                    .audit_tail(count as usize)?
                    .into_iter()
                    .map(|e| crate::proto::admin::AuditEntry {
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
                    })
                    .collect(),
                None => conn.client(Role::Admin)?.audit_tail(count).await?,
            };
            if entries.is_empty() {
                eprintln!("the audit log is empty");
            }
            for e in entries {
                if json {
                    println!(
                        "{}",
                        serde_json::json!({
                            "seq": e.seq, "unix": e.unix, "kind": e.kind, "actor": e.actor,
                            "key": e.key_id, "request_id": e.request_id, "decision": e.decision,
                            "rule": e.rule, "eid": e.eid, "detail": e.detail,
                        })
                    );
                } else {
                    println!(
                        "{:>6}  {}  {:<20} {:<24} {:<8} key={} req={} rule={} {}",
                        e.seq,
                        e.unix,
                        e.kind,
                        e.actor,
                        e.decision,
                        e.key_id,
                        e.request_id,
                        e.rule,
                        e.detail
                    );
                }
            }
            Ok(())
        }
        Cmd::Verify { config, conn } => {
            let (node, good, bad) = match config {
                Some(c) => {
                    let store = open(&c)?;
                    let r = store.audit_verify()?;
                    (c.display().to_string(), r.good, r.first_bad)
                }
                None => {
                    let r = conn.client(Role::Admin)?.audit_verify().await?;
                    let bad = (!r.ok).then_some((r.first_bad, r.reason));
                    (format!("node {}", r.node), r.good, bad)
                }
            };
            match bad {
                None => {
                    println!("audit log of {node}: {good} entries, chain intact");
                    Ok(())
                }
                Some((at, why)) => {
                    println!(
                        "audit log of {node}: entries 1-{good} intact; entry {at} is bad: {why}"
                    );
                    anyhow::bail!("audit chain broken at entry {at}")
                }
            }
        }
    }
}
