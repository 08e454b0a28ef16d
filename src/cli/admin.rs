//! `thresig admin`: key changes that need several admins' approvals, done
//! offline the way multisig is: one admin proposes (writes a request file,
//! signed by them), others approve (each adds a signature; no connection
//! needed), anyone with an admin certificate submits it to a node.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use super::conn::Conn;
use super::keys::print_key;
use super::UsageError;
use crate::client::{AdminOp, AdminOutcome, AdminRequest, SignedAdmin};
use crate::domain::{KeyType, NodeName};
use crate::node::admin_file::RequestFile;
use crate::pki::{Layout, Role};
use crate::transport::request_auth::RequestSigner;
use crate::transport::tls::TlsFiles;

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Write a new admin request, approved (signed) by you, to a file.
    ///
    /// Nothing is sent. Pass the file to the other admins for `thresig admin
    /// approve`, then send it with `thresig admin submit`. Each node checks
    /// every approval against its own policy ([[quorum]] rules), so the
    /// request needs as many approvals as the strictest node requires.
    ///
    /// Example: thresig admin propose reshare --key val-1 --committee b,c,d
    ///          --threshold 2 --out reshare.json --certs certs --identity ops-1
    Propose {
        /// create, rotate, repair, reshare, freeze, unfreeze, delete or unban (an import
        /// request is made by `thresig keys import --out FILE`).
        #[arg(value_parser = parse_op)]
        operation: AdminOp,
        /// The key's name.
        #[arg(long)]
        key: String,
        /// create: the curve (secp256k1 or p256). Other operations: optional;
        /// when given, every node checks that it is the key's type.
        #[arg(long = "type", value_parser = parse_key_type)]
        key_type: Option<KeyType>,
        /// create, reshare: the committee, node names in party order, comma
        /// separated (create: empty means every node).
        #[arg(long, value_delimiter = ',')]
        committee: Vec<String>,
        /// create, reshare: nodes needed to sign.
        #[arg(long, default_value_t = 0)]
        threshold: u32,
        /// repair: the node whose share is rebuilt.
        #[arg(long)]
        node: Option<String>,
        /// reshare: current members that take no part (a recovery reshare).
        #[arg(long, value_delimiter = ',')]
        exclude: Vec<String>,
        /// freeze, unfreeze, delete (required): the key's lifecycle sequence
        /// the change applies to, as `thresig keys show <key>` prints it. A
        /// node at another sequence (a later change was applied) refuses,
        /// so an approved change cannot be replayed after the next one.
        #[arg(long)]
        sequence: Option<u64>,
        /// The cluster's SPIFFE trust domain (part of what the admins sign).
        #[arg(long, env = "THRESIG_TRUST_DOMAIN", default_value = "thresig.local")]
        trust_domain: String,
        /// The cluster's CA bundle, whose cluster id the request names
        /// (default: ca.pem in --certs).
        #[arg(long, env = "THRESIG_TLS_CA")]
        ca: Option<PathBuf>,
        /// How long the request (and every approval of it) stays valid: a
        /// number with s, m, h or d, at most 7d.
        #[arg(long, default_value = "24h", value_parser = parse_duration)]
        valid_for: Duration,
        /// Where to write the request. An existing file is not overwritten.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        signer: SignerArgs,
    },
    /// Show a request in plain words, then add your approval to the file.
    ///
    /// Needs only your admin certificate and key: no connection to a node.
    /// Read what is printed before you approve. Refused if the request has
    /// expired or already carries your approval.
    Approve {
        /// The request file.
        file: PathBuf,
        /// Print the request and stop, without approving.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        signer: SignerArgs,
    },
    /// Print a request file in plain words: what it asks, until when, and
    /// who approved it (as the certificates say; nodes check them).
    Show {
        /// The request file.
        file: PathBuf,
    },
    /// Send a request file, with its approvals, to a node, which runs it.
    ///
    /// Every node that takes part checks the approvals itself; one that
    /// finds them short refuses with PERMISSION_DENIED and says what is
    /// missing. A request runs once: its id cannot be used again.
    Submit {
        /// The request file.
        file: PathBuf,
        #[command(flatten)]
        conn: Conn,
    },
}

/// The admin certificate and key that sign (no CA needed: nothing is dialed).
#[derive(Debug, clap::Args)]
pub struct SignerArgs {
    /// Directory written by `thresig certs init`; with --identity it supplies
    /// the certificate and key.
    #[arg(long, env = "THRESIG_CERTS")]
    pub certs: Option<PathBuf>,
    /// Your admin name inside --certs.
    #[arg(long, env = "THRESIG_IDENTITY")]
    pub identity: Option<String>,
    /// Your admin certificate (PEM); overrides --certs/--identity.
    #[arg(long, env = "THRESIG_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// Your admin private key (PEM); overrides --certs/--identity.
    #[arg(long, env = "THRESIG_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
}

impl SignerArgs {
    fn signer(&self) -> anyhow::Result<RequestSigner> {
        let layout = self.certs.as_ref().map(|d| Layout { dir: d.clone() });
        let from = |f: fn(&Layout, Role, &str) -> PathBuf| {
            layout
                .as_ref()
                .zip(self.identity.as_deref())
                .map(|(l, id)| f(l, Role::Admin, id))
        };
        let cert = self.tls_cert.clone().or_else(|| from(Layout::cert));
        let key = self.tls_key.clone().or_else(|| from(Layout::key));
        let (Some(cert), Some(key)) = (cert, key) else {
            return Err(UsageError(
                "no admin credentials: pass --certs <dir> --identity <name>, or --tls-cert and \
                 --tls-key"
                    .into(),
            )
            .into());
        };
        let files = TlsFiles {
            ca: PathBuf::new(),
            cert,
            key,
            crl: None,
            crl_grace: None,
        };
        RequestSigner::from_files(&files).context("loading the admin certificate and key")
    }
}

fn read(path: &Path) -> anyhow::Result<(SignedAdmin, Vec<String>)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the request file {}", path.display()))?;
    let file: RequestFile = serde_json::from_str(&text).map_err(|e| {
        UsageError(format!(
            "{} is not a valid request file: {e}",
            path.display()
        ))
    })?;
    Ok(file.signed().map_err(UsageError)?)
}

/// Writes the file next to itself and renames it into place, so a crash
/// leaves the old file or the new one, never half of one.
pub(super) fn write(
    path: &Path,
    signed: &SignedAdmin,
    names: &[String],
    new: bool,
) -> anyhow::Result<()> {
    let body = serde_json::to_string_pretty(&RequestFile::new(signed, names))?;
    if new {
        crate::pki::write_new(path, body.as_bytes(), 0o644)
            .with_context(|| format!("writing {}", path.display()))?;
        return Ok(());
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, body.as_bytes()).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    Ok(())
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(super) fn print_request(signed: &SignedAdmin, names: &[String]) {
    let r = &signed.request;
    let now = now_unix();
    println!("request      {}", r.request_id);
    println!("asks to      {}", r.describe());
    println!("cluster      {}", r.cluster);
    if r.operation.takes_lifecycle_seq() {
        println!(
            "at sequence  {} (the key's lifecycle sequence it applies to)",
            r.lifecycle_seq
        );
    }
    println!(
        "issued       Unix {} ({} ago)",
        r.issued_unix,
        crate::node::policy::human_age(now.saturating_sub(r.issued_unix))
    );
    if r.expiry_unix >= now {
        let left = r.expiry_unix.saturating_sub(now);
        println!(
            "valid until  Unix {} ({}h {}m from now)",
            r.expiry_unix,
            left / 3600,
            (left % 3600) / 60
        );
    } else {
        println!(
            "valid until  Unix {} (EXPIRED {} s ago)",
            r.expiry_unix,
            now.saturating_sub(r.expiry_unix)
        );
    }
    if names.is_empty() {
        println!("approved by  nobody yet");
    } else {
        println!("approved by  {} (as the file says)", names.join(", "));
    }
}

pub async fn run(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Propose {
            operation,
            key,
            key_type,
            committee,
            threshold,
            node,
            exclude,
            sequence,
            trust_domain,
            ca,
            valid_for,
            out,
            signer,
        } => {
            if operation.spec().params == crate::node::admin_ops::Takes::Required {
                return Err(UsageError(format!(
                    "{} carries what only its own command makes: write it with `thresig keys \
                     import ... --out FILE`, then approve and submit it here",
                    operation.a_request()
                ))
                .into());
            }
            let mut r = AdminRequest::new(operation, &key, valid_for)?;
            let ca = ca
                .or_else(|| {
                    signer
                        .certs
                        .as_ref()
                        .map(|d| Layout { dir: d.clone() }.ca_cert())
                })
                .ok_or_else(|| {
                    UsageError(
                        "no CA bundle: pass --ca <ca.pem> (or --certs <dir>); the request names \
                         the cluster id it carries"
                            .into(),
                    )
                })?;
            let cluster_id = crate::transport::tls::cluster_id(&ca)
                .with_context(|| format!("reading the cluster id of {}", ca.display()))?;
            r.cluster = crate::pki::cluster_name(&trust_domain, &cluster_id);
            match (operation.takes_lifecycle_seq(), sequence) {
                (true, Some(s)) => r.lifecycle_seq = s,
                (true, None) => {
                    return Err(UsageError(format!(
                        "a {operation} request names the key's lifecycle sequence: pass \
                         --sequence N, with N as `thresig keys show {key}` prints it"
                    ))
                    .into())
                }
                (false, Some(_)) => {
                    return Err(UsageError(format!(
                        "--sequence is for freeze, unfreeze and delete, not {operation}"
                    ))
                    .into())
                }
                (false, None) => {}
            }
            r.key_type = key_type;
            r.committee = committee
                .iter()
                .map(|n| NodeName::parse(n))
                .collect::<Result<_, _>>()?;
            r.threshold = threshold;
            r.target = node.as_deref().map(NodeName::parse).transpose()?;
            r.exclude = exclude
                .iter()
                .map(|n| NodeName::parse(n))
                .collect::<Result<_, _>>()?;
            r.check_fields(now_unix()).map_err(UsageError)?;
            let approval = signer.signer()?.approve(&r)?;
            let names = vec![signer.identity.clone().unwrap_or_else(|| "proposer".into())];
            let signed = SignedAdmin {
                request: r,
                approvals: vec![approval],
            };
            write(&out, &signed, &names, true)?;
            print_request(&signed, &names);
            eprintln!(
                "written to {}; next: `thresig admin approve {}` by the other admins, then \
                 `thresig admin submit {}`",
                out.display(),
                out.display(),
                out.display()
            );
        }
        Cmd::Approve {
            file,
            dry_run,
            signer,
        } => {
            let (mut signed, mut names) = read(&file)?;
            print_request(&signed, &names);
            if dry_run {
                return Ok(());
            }
            signed
                .request
                .check_fields(now_unix())
                .map_err(UsageError)?;
            let s = signer.signer()?;
            let approval = s.approve(&signed.request)?;
            if signed
                .approvals
                .iter()
                .any(|a| a.chain.first() == approval.chain.first())
            {
                return Err(UsageError(
                    "this request already carries your approval; nodes count each admin once"
                        .into(),
                )
                .into());
            }
            signed.approvals.push(approval);
            names.push(signer.identity.clone().unwrap_or_else(|| "approver".into()));
            write(&file, &signed, &names, false)?;
            println!(
                "approved: {} now carries {} approvals",
                file.display(),
                signed.approvals.len()
            );
        }
        Cmd::Show { file } => {
            let (signed, names) = read(&file)?;
            print_request(&signed, &names);
        }
        Cmd::Submit { file, conn } => {
            let (signed, names) = read(&file)?;
            print_request(&signed, &names);
            eprintln!(
                "submitting to node {} at {}; every node taking part checks the approvals...",
                conn.server, conn.endpoint
            );
            let mut c = conn.client(Role::Admin)?;
            match c.submit_admin(&signed).await? {
                AdminOutcome::Created(k) => print_key(&k),
                AdminOutcome::Rotated(r) => {
                    println!("epoch        {} -> {}", r.old_epoch, r.new_epoch);
                    println!("public key   unchanged: {}", r.public_key_unchanged);
                }
                AdminOutcome::Repaired(r) => {
                    let rot = r.rotation.unwrap_or_default();
                    println!("helpers      {}", r.helpers.join(", "));
                    println!("epoch        {} -> {}", rot.old_epoch, rot.new_epoch);
                }
                AdminOutcome::StateChanged(r) => super::keys::print_state_change(&r)?,
                AdminOutcome::Reshared(r) => {
                    let k = r.key.unwrap_or_default();
                    println!(
                        "committee    {}-of-{{{}}} -> {}-of-{{{}}}",
                        r.old_threshold,
                        r.old_committee.join(", "),
                        k.threshold,
                        k.committee.join(", ")
                    );
                    println!("epoch        {} -> {}", r.old_epoch, r.new_epoch);
                    println!("public key   unchanged: {}", r.public_key_unchanged);
                    anyhow::ensure!(
                        r.not_retired.is_empty(),
                        "these nodes left the committee but still hold their old share: {}",
                        r.not_retired.join(", ")
                    );
                }
            }
        }
    }
    Ok(())
}

fn parse_op(s: &str) -> Result<AdminOp, String> {
    AdminOp::parse(s)
}

fn parse_key_type(s: &str) -> Result<KeyType, String> {
    KeyType::parse(s).map_err(|e| e.to_string())
}

/// "90s", "10m", "24h", "7d" (or plain seconds), at most 7 days.
pub(super) fn parse_duration(s: &str) -> Result<Duration, String> {
    let secs = crate::node::policy::parse_age(s)?;
    if secs == 0 || secs > crate::node::admin_request::MAX_ADMIN_EXPIRY_AHEAD_SECS {
        return Err(format!("{s:?}: must be more than 0 and at most 7d"));
    }
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_a_week_cap() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_duration("7d").unwrap(), Duration::from_secs(604_800));
        assert!(parse_duration("8d").is_err());
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("h").is_err());
    }
}
