//! `thresig demo`: a local 3-node 2-of-3 cluster, end to end, with timings.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use k256::ecdsa::signature::hazmat::PrehashVerifier;
use sha2::Digest;

use crate::cluster::{LocalCluster, ADMIN, CLIENT};
use crate::domain::{DerivationPath, KeyType};
use crate::node::Timeouts;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Keep certificates, configs and stores in this directory (default: a
    /// temporary directory removed at the end).
    #[arg(long)]
    keep: Option<PathBuf>,
}

fn step(n: u32, what: &str) -> Instant {
    println!("[{n}/6] {what}");
    Instant::now()
}

fn done(t: Instant) {
    println!("      done in {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
}

pub async fn run(a: Args) -> anyhow::Result<()> {
    let total = Instant::now();
    let tmp = tempfile::tempdir()?;
    let root = match &a.keep {
        Some(p) => {
            std::fs::create_dir_all(p)?;
            p.clone()
        }
        None => tmp.path().to_owned(),
    };

    let t = step(
        1,
        "creating a cluster CA, node/client/admin certificates and 3 nodes on 127.0.0.1",
    );
    let timeouts = Timeouts {
        round: Duration::from_secs(10),
        ping: Duration::from_secs(2),
    };
    let cluster = LocalCluster::start(&root, &["a", "b", "c"], timeouts)
        .await
        .context("starting the local cluster")?;
    for (cfg, n) in cluster.configs.iter().zip(&cluster.nodes) {
        if let Some(n) = n {
            println!(
                "      node {}: peer plane {}, client plane {}",
                cfg.name, n.peer_addr, n.client_addr
            );
        }
    }
    done(t);

    let t = step(
        2,
        "distributed key generation: 2-of-3 across a, b, c (admin identity 'ops')",
    );
    let key = cluster
        .client(0, ADMIN)?
        .create_key("demo-key", 2, &[])
        .await?;
    println!("      public key   {}", hex::encode(&key.public_key));
    println!("      eth address  {}", key.eth_address);
    done(t);

    let digest: [u8; 32] = sha2::Sha256::digest(b"thresig demo: transfer 1 ETH").into();
    let t = step(
        3,
        "signing sha256(\"thresig demo: transfer 1 ETH\") via node b (client identity 'validator')",
    );
    let sig = cluster
        .client(1, CLIENT)?
        .sign("demo-key", digest, "", "")
        .await?;
    println!("      digest       {}", hex::encode(digest));
    println!("      signers      {}", sig.participants.join(", "));
    println!("      r||s||v      {}", hex::encode(&sig.rsv));
    done(t);

    let t = step(
        4,
        "verifying the signature with k256 against the key's public key",
    );
    verify(&key.public_key, &digest, &sig.r, &sig.s, sig.recovery_id)?;
    println!(
        "      valid, low-S, recovery id {} recovers the public key",
        sig.recovery_id
    );
    done(t);

    let t = step(
        5,
        "signing at derived path m/0/1 via node c and checking it against BIP32 public derivation",
    );
    let path = DerivationPath::parse("m/0/1")?;
    let child = cluster
        .client(2, CLIENT)?
        .sign("demo-key", digest, "m/0/1", "")
        .await?;
    let cc: [u8; 32] = key
        .chain_code
        .as_slice()
        .try_into()
        .context("chain code length")?;
    let (child_pk, _) =
        crate::bip32::derive_public(KeyType::Secp256k1, &key.public_key, &cc, &path)?;
    anyhow::ensure!(
        child.public_key == child_pk,
        "derived public key differs from BIP32 derivation"
    );
    verify(&child_pk, &digest, &child.r, &child.s, child.recovery_id)?;
    println!(
        "      child key    {} ({})",
        hex::encode(child_pk),
        crate::bip32::eth_address(&child_pk)?
    );
    done(t);

    let t = step(6, "shutting down");
    cluster.stop().await;
    done(t);
    println!(
        "demo finished in {:.2} s{}",
        total.elapsed().as_secs_f64(),
        a.keep
            .map(|p| format!("; files kept in {}", p.display()))
            .unwrap_or_default()
    );
    Ok(())
}

/// Independent check: k256 verification, low-S, and key recovery.
pub fn verify(pk: &[u8], digest: &[u8; 32], r: &[u8], s: &[u8], v: u32) -> anyhow::Result<()> {
    use k256::ecdsa::{RecoveryId, Signature, VerifyingKey};
    let vk = VerifyingKey::from_sec1_bytes(pk)?;
    let r: [u8; 32] = r.try_into().context("r length")?;
    let s: [u8; 32] = s.try_into().context("s length")?;
    let sig = Signature::from_scalars(r, s)?;
    anyhow::ensure!(sig.normalize_s() == sig, "signature is not low-S");
    vk.verify_prehash(digest, &sig)
        .context("signature does not verify")?;
    let rid = RecoveryId::from_byte(u8::try_from(v)?).context("bad recovery id")?;
    anyhow::ensure!(
        VerifyingKey::recover_from_prehash(digest, &sig, rid)? == vk,
        "recovery id does not recover the key"
    );
    Ok(())
}
