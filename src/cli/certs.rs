//! `thresig certs`: development PKI.

use std::path::PathBuf;

use anyhow::Context;

use crate::pki::{self, Ca, Role};

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Create a cluster CA and a certificate + key for every identity.
    ///
    /// Layout: <out>/ca.pem, <out>/ca.key, <out>/nodes/<name>.{pem,key},
    /// <out>/clients/<name>.{pem,key}, <out>/admins/<name>.{pem,key}.
    /// Keys are written with mode 0600; existing files are never overwritten.
    /// The CA certificate carries a new cluster id (its OU "thresig-cluster
    /// <id>"), which every admin request names; for a CA rollover pass
    /// --rollover-of <old ca.pem> to carry the old CA's id instead.
    Init {
        /// SPIFFE trust domain, e.g. thresig.local.
        #[arg(long, default_value = "thresig.local")]
        trust_domain: String,
        /// Node names, comma separated (each gets DNS SAN <name> and spiffe://<td>/node/<name>).
        #[arg(long, value_delimiter = ',', required = true)]
        nodes: Vec<String>,
        /// Client names (validators, settlement systems), comma separated.
        #[arg(long, value_delimiter = ',')]
        clients: Vec<String>,
        /// Admin names (security team), comma separated.
        #[arg(long, value_delimiter = ',')]
        admins: Vec<String>,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// A CA rollover: the new CA is for the cluster of this CA bundle
        /// (it carries the same cluster id), so both can sit in one bundle.
        #[arg(long)]
        rollover_of: Option<PathBuf>,
    },
    /// Issue one more certificate from an existing CA directory.
    Issue {
        /// Directory made by `certs init` (holds ca.pem and ca.key).
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value = "thresig.local")]
        trust_domain: String,
        #[arg(long, value_parser = ["node", "client", "admin"])]
        role: String,
        #[arg(long)]
        name: String,
        /// Validity in days.
        #[arg(long, default_value_t = 365)]
        days: i64,
    },
}

pub fn run(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Init {
            trust_domain,
            nodes,
            clients,
            admins,
            out,
            rollover_of,
        } => {
            let cluster_id = match &rollover_of {
                Some(old) => {
                    let id = crate::transport::tls::cluster_id(old)
                        .with_context(|| format!("reading the cluster id of {}", old.display()))?;
                    if id.is_empty() {
                        return Err(super::UsageError(format!(
                            "{} carries no cluster id (it was not made by `thresig certs init`)",
                            old.display()
                        ))
                        .into());
                    }
                    Some(id)
                }
                None => None,
            };
            println!(
                "creating cluster CA for trust domain {trust_domain} in {}{}",
                out.display(),
                cluster_id
                    .as_deref()
                    .map(|id| format!(" (rollover: cluster {id})"))
                    .unwrap_or_default()
            );
            let layout = pki::init_for(
                &out,
                &trust_domain,
                cluster_id.as_deref(),
                &nodes,
                &clients,
                &admins,
                |role, name| {
                    println!(
                        "  issued {}/{name}: spiffe://{trust_domain}/{}/{name}",
                        role.as_str(),
                        role.as_str()
                    );
                },
            )?;
            println!("CA certificate: {}", layout.ca_cert().display());
            println!(
                "CA private key: {} (keep it offline; it can mint identities)",
                layout.ca_key().display()
            );
        }
        Cmd::Issue {
            dir,
            trust_domain,
            role,
            name,
            days,
        } => {
            let layout = pki::Layout { dir: dir.clone() };
            let cert = std::fs::read_to_string(layout.ca_cert())
                .with_context(|| format!("reading {}", layout.ca_cert().display()))?;
            let key = zeroize::Zeroizing::new(
                std::fs::read_to_string(layout.ca_key())
                    .with_context(|| format!("reading {}", layout.ca_key().display()))?,
            );
            let ca = Ca::load(&trust_domain, &cert, &key)?;
            let role = Role::parse(&role)
                .ok_or_else(|| super::UsageError(format!("unknown role {role}")))?;
            let (c, k) = ca.issue_to(&dir, role, &name, days)?;
            println!(
                "issued {}/{name}: {} (key {})",
                role.as_str(),
                c.display(),
                k.display()
            );
        }
    }
    Ok(())
}
