//! `thresig dev`: a local cluster for application developers, as `anvil` is
//! for Ethereum developers. One command starts n nodes on 127.0.0.1 with a
//! fresh PKI and a permissive development policy, creates the keys asked
//! for, prints the endpoints and the `export` lines for the CLI and
//! clients, and runs until Ctrl-C. State stays in `--dir`: running it again
//! there starts the same cluster, with its keys, on new ports.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use super::UsageError;
use crate::cluster::{LocalCluster, ADMIN, CLIENT, TRUST_DOMAIN};
use crate::domain::KeyType;
use crate::node::Timeouts;

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  thresig dev                                   3 nodes in ./thresig-dev, no keys yet
  thresig dev --keys val:secp256k1,pk:p256      ... with a secp256k1 key 'val' and a P-256 key 'pk'
  thresig dev --nodes 5 --threshold 3 --keys k  5 nodes, 3-of-5 keys

Then, in another shell, paste the printed export lines and run for instance
  thresig sign --key val --digest 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
  thresig keys list --identity ops

The cluster is for development only: every store passphrase is in a file
beside it and the CA key is on disk.")]
pub struct Args {
    /// Where the cluster keeps its certificates, configs, policy and stores.
    /// A directory an earlier run made is started again, keys and all.
    #[arg(long, default_value = "thresig-dev")]
    dir: PathBuf,
    /// How many nodes (named a, b, c, ...), for a new cluster.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(2..=26))]
    nodes: u8,
    /// How many nodes each new key needs to sign (2..=nodes).
    #[arg(long, default_value_t = 2)]
    threshold: u8,
    /// Keys to create unless they exist, as name:type, comma separated; the
    /// type is secp256k1 (the default when left out) or p256.
    #[arg(long, value_delimiter = ',', value_name = "NAME[:TYPE]")]
    keys: Vec<String>,
}

const NAMES: &str = "abcdefghijklmnopqrstuvwxyz";

/// The keys asked for, checked before anything starts.
fn wanted(keys: &[String]) -> anyhow::Result<Vec<(String, KeyType)>> {
    keys.iter()
        .map(|k| {
            let (name, ty) = k.split_once(':').unwrap_or((k.as_str(), "secp256k1"));
            let ty = KeyType::parse(ty)
                .map_err(|e| UsageError(format!("--keys {k}: {e} (secp256k1 or p256)")))?;
            crate::domain::KeyId::parse(name)
                .map_err(|e| UsageError(format!("--keys {k}: {e}")))?;
            Ok((name.to_owned(), ty))
        })
        .collect()
}

fn absolute(dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    dir.canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))
}

pub async fn run(a: Args) -> anyhow::Result<()> {
    // A cluster already in --dir has its own node count (checked once open).
    let new = !a.dir.join("nodes").is_dir();
    if a.threshold < 2 || (new && a.threshold > a.nodes) {
        return Err(UsageError(format!(
            "--threshold {} must be between 2 and --nodes ({})",
            a.threshold, a.nodes
        ))
        .into());
    }
    let keys = wanted(&a.keys)?;
    let dir = absolute(&a.dir)?;
    let timeouts = Timeouts {
        round: Duration::from_secs(10),
        ping: Duration::from_secs(2),
    };
    let existing = dir.join("nodes").is_dir();
    let cluster = if existing {
        println!(
            "starting the cluster in {} again (its keys are kept)",
            dir.display()
        );
        LocalCluster::reopen(&dir, timeouts)
            .await
            .with_context(|| format!("starting the cluster in {}", dir.display()))?
    } else {
        let names: Vec<&str> = NAMES
            .get(..usize::from(a.nodes))
            .unwrap_or(NAMES)
            .split("")
            .filter(|s| !s.is_empty())
            .collect();
        println!(
            "creating a {}-node cluster in {}: CA, certificates, policy, stores",
            names.len(),
            dir.display()
        );
        LocalCluster::start(&dir, &names, timeouts)
            .await
            .with_context(|| format!("creating a cluster in {}", dir.display()))?
    };
    let n = cluster.configs.len();
    let result = if !keys.is_empty() && usize::from(a.threshold) > n {
        Err(UsageError(format!(
            "--threshold {} is more than this cluster's {n} nodes (--nodes applies to a new \
             cluster only)",
            a.threshold
        ))
        .into())
    } else {
        serve(&cluster, &keys, a.threshold).await
    };
    println!("stopping the nodes");
    cluster.stop().await;
    result?;
    println!("stopped; the cluster and its keys stay in {} (run `thresig dev --dir {}` to start it again)", dir.display(), dir.display());
    Ok(())
}

async fn serve(cluster: &LocalCluster, keys: &[(String, KeyType)], t: u8) -> anyhow::Result<()> {
    let mut admin = cluster.client(0, ADMIN)?;
    let have = admin.list_keys().await.context("listing the keys")?;
    for (name, ty) in keys {
        if have.iter().any(|k| k.key_id == *name) {
            continue;
        }
        println!(
            "creating key {name} ({}), {t}-of-{}",
            ty.as_str(),
            cluster.configs.len()
        );
        admin
            .create_key_of_type(name, *ty, u32::from(t), &[])
            .await
            .with_context(|| format!("creating key {name}"))?;
    }
    println!();
    for (cfg, n) in cluster.configs.iter().zip(&cluster.nodes) {
        if let Some(n) = n {
            println!(
                "node {}  client plane {}  peer plane {}",
                cfg.name, n.client_addr, n.peer_addr
            );
        }
    }
    let listed = admin.list_keys().await.context("listing the keys")?;
    if listed.is_empty() {
        println!("no keys yet (--keys name:secp256k1 creates one, or `thresig keys create`)");
    }
    for k in &listed {
        println!(
            "key {}  {}  {}-of-{}  public key {}{}",
            k.key_id,
            k.key_type,
            k.threshold,
            k.committee.len(),
            hex::encode(&k.public_key),
            if k.eth_address.is_empty() {
                String::new()
            } else {
                format!("  eth {}", k.eth_address)
            }
        );
    }
    let first = cluster
        .nodes
        .iter()
        .zip(&cluster.configs)
        .find_map(|(n, c)| n.as_ref().map(|n| (c, n)))
        .context("no node is running")?;
    let failover: Vec<String> = cluster
        .nodes
        .iter()
        .zip(&cluster.configs)
        .skip(1)
        .filter_map(|(n, c)| n.as_ref().map(|n| format!("{}@{}", c.name, n.client_addr)))
        .collect();
    println!();
    println!("# for the thresig CLI and clients (admin commands: add --identity {ADMIN}):");
    println!("export THRESIG_ENDPOINT={}", first.1.client_addr);
    println!("export THRESIG_SERVER={}", first.0.name);
    println!("export THRESIG_TRUST_DOMAIN={TRUST_DOMAIN}");
    println!("export THRESIG_CERTS={}", cluster.layout.dir.display());
    println!("export THRESIG_IDENTITY={CLIENT}");
    println!("export THRESIG_FAILOVER={}", failover.join(","));
    println!(
        "# policy: {} (edit it, then `thresig policy reload` on each node)",
        cluster.root.join("policy.toml").display()
    );
    if let Some(k) = listed.first() {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(b"hello thresig");
        println!(
            "# try: thresig sign --key {} --digest {}",
            k.key_id,
            hex::encode(digest)
        );
    }
    // The handlers are in place before "ready" is printed: a signal sent as
    // soon as it is read stops the cluster cleanly.
    let stop = ShutdownSignal::install()?;
    println!();
    println!("ready; Ctrl-C stops the cluster");
    stop.wait().await;
    Ok(())
}

/// Ctrl-C, or SIGTERM where there is one, registered when installed.
struct ShutdownSignal {
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl ShutdownSignal {
    fn install() -> anyhow::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Self {
                int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
                term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    async fn wait(mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
        #[cfg(not(unix))]
        {
            let _ = &mut self;
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
