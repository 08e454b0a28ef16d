//! `thresig keys import`: moves a key that exists whole elsewhere (an
//! Ethereum V3 keystore, a BIP-39 mnemonic with a path, or a raw key file)
//! into shares of a committee. This workstation deals the key with Feldman
//! commitments, seals each member's point to that node's certificate key,
//! signs the import request with the admin's key and sends it (or writes it
//! for more approvals). Every copy of the key and its points here is
//! zeroized as soon as it is sealed.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::conn::Conn;
use super::UsageError;
use crate::client::{AdminOp, AdminOutcome, AdminRequest, SignedAdmin};
use crate::domain::{KeyType, NodeName};
use crate::node::ops::import::params::{certificate_key, seal_point, ImportParams, SealBinding};
use crate::pki::{Layout, Role};
use crate::protocol::scheme;
use crate::transport::request_auth::CertRequestVerifier;
use crate::transport::tls::TlsFiles;

/// What import cannot undo, said before anything is sent.
const WARNING: &str = "\
note: importing cannot make this key threshold-born. It existed whole on this machine and
      wherever it came from (its keystore, mnemonic or backups): anyone holding such a copy can
      still sign alone. Where that matters, move the funds to a key made with `thresig keys
      create` instead (SECURITY.md, \"Imported keys\").";

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["keystore", "mnemonic_file", "raw_key_file"])))]
pub struct ImportArgs {
    /// Name of the key in the cluster: 1-64 of a-z, 0-9, '-', '_', '.'.
    #[arg(long)]
    name: String,
    /// An Ethereum V3 keystore file (geth, eth-account, MetaMask export),
    /// decrypted with the password in --password-file.
    #[arg(long)]
    keystore: Option<PathBuf>,
    /// File holding the keystore's password (one line; never on the command line).
    #[arg(long, requires = "keystore")]
    password_file: Option<PathBuf>,
    /// File holding an English BIP-39 mnemonic (12-24 words); the key is the
    /// secp256k1 key at --path.
    #[arg(long)]
    mnemonic_file: Option<PathBuf>,
    /// BIP-32 derivation path of the key in --mnemonic-file.
    #[arg(long, default_value = "m/44'/60'/0'/0/0")]
    path: String,
    /// File holding the mnemonic's BIP-39 passphrase, if it has one.
    #[arg(long, requires = "mnemonic_file")]
    passphrase_file: Option<PathBuf>,
    /// File holding the private key as 64 hex digits (optional 0x).
    #[arg(long)]
    raw_key_file: Option<PathBuf>,
    /// The curve: secp256k1 or p256 (a mnemonic gives secp256k1 keys).
    #[arg(long = "type", default_value = "secp256k1", value_parser = parse_key_type)]
    key_type: KeyType,
    /// Number of nodes needed to sign (t of n), at least 2.
    #[arg(long)]
    threshold: u32,
    /// Committee node names, comma separated, in party order.
    #[arg(long, value_delimiter = ',', required = true)]
    committee: Vec<String>,
    /// Directory holding each committee node's certificate as <name>.pem
    /// (default: the nodes/ directory of --certs). Each must chain to the
    /// cluster CA and name node/<name>: its point is sealed to that key.
    #[arg(long)]
    node_certs: Option<PathBuf>,
    /// Write the request, approved by you, to this file instead of sending
    /// it: other admins add approvals with `thresig admin approve`, and
    /// `thresig admin submit` sends it.
    #[arg(long)]
    out: Option<PathBuf>,
    /// How long the request stays valid (e.g. 30m, 24h; at most 7d).
    #[arg(long, default_value = "1h", value_parser = super::admin::parse_duration)]
    valid_for: Duration,
    #[command(flatten)]
    conn: Conn,
}

fn parse_key_type(s: &str) -> Result<KeyType, String> {
    KeyType::parse(s).map_err(|e| e.to_string())
}

fn read_secret_file(path: &std::path::Path, what: &str) -> anyhow::Result<Zeroizing<String>> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("reading the {what} file {}", path.display()))?,
    );
    Ok(Zeroizing::new(
        text.trim_end_matches(['\n', '\r']).to_owned(),
    ))
}

impl ImportArgs {
    /// The private key, from whichever source was given.
    fn key(&self) -> anyhow::Result<Zeroizing<[u8; 32]>> {
        use crate::payload::key_files::{keystore_key, mnemonic_key, raw_key};
        if let Some(ks) = &self.keystore {
            let Some(pw) = &self.password_file else {
                return Err(UsageError(
                    "--keystore needs --password-file (a password is never taken on the command \
                     line)"
                        .into(),
                )
                .into());
            };
            let pw = read_secret_file(pw, "password")?;
            return keystore_key(ks, pw.as_bytes()).map_err(|e| UsageError(e).into());
        }
        if let Some(m) = &self.mnemonic_file {
            if self.key_type != KeyType::Secp256k1 {
                return Err(
                    UsageError("a mnemonic gives secp256k1 keys; drop --type".into()).into(),
                );
            }
            let phrase = read_secret_file(m, "mnemonic")?;
            let pass = match &self.passphrase_file {
                Some(p) => Some(read_secret_file(p, "passphrase")?),
                None => None,
            };
            return mnemonic_key(&phrase, &self.path, pass.as_ref().map(|p| p.as_str()))
                .map_err(|e| UsageError(e).into());
        }
        if let Some(r) = &self.raw_key_file {
            let text = read_secret_file(r, "raw key")?;
            return raw_key(&text).map_err(|e| UsageError(e).into());
        }
        Err(UsageError("name the key: --keystore, --mnemonic-file or --raw-key-file".into()).into())
    }

    /// Each member's certificate key, checked against the cluster CA.
    fn member_keys(&self, committee: &[NodeName]) -> anyhow::Result<Vec<Vec<u8>>> {
        let layout = self.conn.certs.as_ref().map(|d| Layout { dir: d.clone() });
        let path_of = |name: &NodeName| -> anyhow::Result<PathBuf> {
            match (&self.node_certs, &layout) {
                (Some(d), _) => Ok(d.join(format!("{name}.pem"))),
                (None, Some(l)) => Ok(l.cert(Role::Node, name.as_str())),
                (None, None) => Err(UsageError(
                    "pass --node-certs <dir> (each committee node's certificate as <name>.pem) \
                     or --certs"
                        .into(),
                )
                .into()),
            }
        };
        let ca = self
            .conn
            .tls_ca
            .clone()
            .or_else(|| layout.as_ref().map(Layout::ca_cert))
            .ok_or_else(|| UsageError("pass --tls-ca or --certs (the cluster CA)".into()))?;
        let verifier = CertRequestVerifier::new(
            &TlsFiles {
                ca,
                cert: PathBuf::new(),
                key: PathBuf::new(),
                crl: None,
                crl_grace: None,
            },
            &self.conn.trust_domain,
        )
        .context("loading the cluster CA")?;
        let mut keys = Vec::with_capacity(committee.len());
        for name in committee {
            let path = path_of(name)?;
            let pem = std::fs::read(&path)
                .with_context(|| format!("reading node {name}'s certificate {}", path.display()))?;
            let chain: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(&pem)
                .map(|c| c.map(|c| c.to_vec()))
                .collect::<Result<_, _>>()
                .map_err(|e| UsageError(format!("{}: {e}", path.display())))?;
            let who = verifier
                .node_certificate(&chain)
                .map_err(|e| UsageError(format!("{}: {e}", path.display())))?;
            if who != *name {
                return Err(UsageError(format!(
                    "{} is node {who}'s certificate, not node {name}'s",
                    path.display()
                ))
                .into());
            }
            let leaf = chain.first().map(Vec::as_slice).unwrap_or_default();
            keys.push(certificate_key(leaf).map_err(UsageError)?);
        }
        Ok(keys)
    }
}

pub async fn run(a: ImportArgs) -> anyhow::Result<()> {
    let committee: Vec<NodeName> = a
        .committee
        .iter()
        .map(|n| NodeName::parse(n).map_err(|e| UsageError(format!("--committee {n}: {e}"))))
        .collect::<Result<_, _>>()?;
    let n = u8::try_from(committee.len())
        .map_err(|_| UsageError("a committee has at most 255 nodes".into()))?;
    let t = u8::try_from(a.threshold).map_err(|_| UsageError("--threshold is too large".into()))?;
    let member_keys = a.member_keys(&committee)?;
    let mut client = a.conn.client(Role::Admin)?;
    let cluster = client.cluster().to_owned();

    let key = a.key()?;
    let dealt = scheme::import_deal(a.key_type, key.as_ref(), t, n)
        .map_err(|e| UsageError(format!("dealing the key: {e}")))?;
    drop(key);
    let public_key = dealt
        .commitments
        .first()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("the dealing has no commitments"))?;
    // Not the wallet's: the cluster derives non-hardened paths from it.
    let chain_code: [u8; 32] = Sha256::new()
        .chain_update(b"thresig/import-chain-code/v1")
        .chain_update(&public_key)
        .finalize()
        .into();
    let mut params = ImportParams {
        public_key: public_key.clone(),
        chain_code,
        commitments: dealt.commitments.clone(),
        sealed: Vec::with_capacity(committee.len()),
    };
    for ((name, point), recipient) in committee.iter().zip(&dealt.points).zip(&member_keys) {
        let sealed = seal_point(
            &params,
            recipient,
            point,
            SealBinding {
                cluster: &cluster,
                key_id: &a.name,
                member: name.as_str(),
            },
        )
        .map_err(|e| anyhow::anyhow!(e))?;
        params.sealed.push(sealed);
    }
    drop(dealt);

    let mut request = AdminRequest::new(AdminOp::Import, &a.name, a.valid_for)?;
    request.key_type = Some(a.key_type);
    request.committee = committee;
    request.threshold = a.threshold;
    request.params = params.encode();
    request.cluster = cluster;
    eprintln!("{WARNING}");
    eprintln!("importing: {}", request.describe());
    let approval = client.approve(&request)?;
    let signed = SignedAdmin {
        request,
        approvals: vec![approval],
    };
    if let Some(out) = &a.out {
        let me = a.conn.identity.clone().unwrap_or_default();
        super::admin::write(out, &signed, std::slice::from_ref(&me), true)?;
        super::admin::print_request(&signed, &[me]);
        println!("written      {} (approve with `thresig admin approve`, send with `thresig admin submit`)", out.display());
        return Ok(());
    }
    eprintln!(
        "sending it to node {}: every member opens and checks its share, then the committee \
         refreshes every share...",
        a.conn.server
    );
    match client.submit_admin(&signed).await? {
        AdminOutcome::Created(k) => {
            super::keys::print_key(&k);
            anyhow::ensure!(
                k.public_key == public_key,
                "the cluster reports another public key than the one imported"
            );
            Ok(())
        }
        other => Err(anyhow::anyhow!(
            "unexpected answer to the import: {other:?}"
        )),
    }
}
