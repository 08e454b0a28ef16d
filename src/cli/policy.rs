//! `thresig policy`: explain a policy decision offline, or make running
//! nodes reread their policy file.

use std::path::PathBuf;

use super::conn::Conn;
use crate::domain::{DerivationPath, KeyId};
use crate::node::policy::Policy;
use crate::pki::Role;

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Explain which rule of a policy file allows or denies a request.
    ///
    /// Reads the file only (no node is contacted). Exits 0 when the request
    /// is allowed and 1 when it is denied.
    ///
    /// Examples:
    ///   thresig policy check --policy policy.toml --client validator-1 --key validator-key --path m/0/1
    ///   thresig policy check --policy policy.toml --admin ops --operation reshare
    Check {
        /// The policy file (TOML).
        #[arg(long)]
        policy: PathBuf,
        /// A client identity (the name in its client/<name> certificate).
        #[arg(long, conflicts_with = "admin", requires = "key")]
        client: Option<String>,
        /// The key the client would sign with.
        #[arg(long)]
        key: Option<String>,
        /// The derivation path (default: the master key).
        #[arg(long, default_value = "m")]
        path: String,
        /// An admin identity (the name in its admin/<name> certificate).
        #[arg(long, requires = "operation")]
        admin: Option<String>,
        /// The admin operation: create, rotate, reshare, repair, freeze, unfreeze, delete, unban, read or reload-policy.
        #[arg(long)]
        operation: Option<String>,
    },
    /// Make the node reread its policy file now (admin certificate).
    /// `thresig node reload` rereads its certificate material too; SIGHUP to
    /// the node process does what `node reload` does.
    Reload {
        #[command(flatten)]
        conn: Conn,
    },
}

pub async fn run(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Check {
            policy,
            client,
            key,
            path,
            admin,
            operation,
        } => {
            let p = Policy::load(&policy).map_err(super::UsageError)?;
            let decision = match (client, key, admin, operation) {
                (Some(client), Some(key), None, _) => {
                    let key = KeyId::parse(&key)?;
                    let path = DerivationPath::parse(&path)?;
                    println!("client {client}, key {key}, path {path}:");
                    p.check_sign(&client, &key, &path)
                }
                (None, _, Some(admin), Some(op)) => {
                    println!("admin {admin}, operation {op}:");
                    p.check_admin(&admin, &op)
                }
                _ => {
                    return Err(super::UsageError(
                        "give --client with --key (and --path), or --admin with --operation".into(),
                    )
                    .into())
                }
            };
            println!(
                "  {}",
                if decision.allowed {
                    "ALLOWED"
                } else {
                    "DENIED"
                }
            );
            println!("  rule    {}", decision.rule);
            println!("  reason  {}", decision.reason);
            anyhow::ensure!(decision.allowed, "denied by {}", decision.rule);
            Ok(())
        }
        Cmd::Reload { conn } => {
            let summary = conn.client(Role::Admin)?.reload_policy().await?;
            println!("{summary}");
            Ok(())
        }
    }
}
