//! `thresig node run`: serve one signer node until SIGINT/SIGTERM.

use std::path::PathBuf;

use anyhow::Context;

use crate::config::NodeConfig;
use crate::server::{self, Listeners};

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Serve the peer plane and the client/admin plane of one node.
    ///
    /// SIGHUP rereads the policy file (node.policy) and the certificate, key,
    /// CA bundle and CRL (tls.*), as `thresig node reload` does; a bad file is
    /// reported and what was in force stays. The store passphrase is read from the environment variable named by
    /// store.passphrase_env (default THRESIG_PASSPHRASE) or from
    /// store.passphrase_file, never from the command line. A wrong passphrase
    /// stops the node before anything in its data directory is written.
    Run {
        /// Node configuration (TOML; unknown fields are rejected).
        #[arg(long, env = "THRESIG_CONFIG")]
        config: PathBuf,
    },
    /// Make a running node reread its policy file and its certificate, key,
    /// CA bundle and CRL, without a restart (admin certificate with the
    /// reload-policy operation).
    ///
    /// New handshakes use the new certificate material; connections already
    /// open finish on theirs. A part that fails to load (a missing or
    /// unparsable file, a key that does not match its certificate, a
    /// certificate the new CA bundle does not vouch for) keeps what was in
    /// force, and this command says why and exits 1. For a CA rollover, put
    /// the old and the new CA in one bundle first, reload every node, then
    /// move the certificates to the new CA. Sending the node process SIGHUP
    /// does the same.
    Reload {
        #[command(flatten)]
        conn: super::conn::Conn,
    },
    /// Check a configuration file and print what it resolves to.
    Check {
        #[arg(long, env = "THRESIG_CONFIG")]
        config: PathBuf,
    },
}

/// How long a node that was asked to stop lets its work in flight finish.
const DRAIN_BOUND: std::time::Duration = std::time::Duration::from_secs(15);
/// How long `node run` keeps asking committee members it has not heard from
/// before it says it serves (members that are down cost this once).
const STARTUP_COMPARE_FOR: std::time::Duration = std::time::Duration::from_secs(10);

pub async fn run(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Reload { conn } => {
            let report = conn.client(crate::pki::Role::Admin)?.reload_node().await?;
            for line in report.lines() {
                println!("{line}");
            }
            anyhow::ensure!(
                report.ok(),
                "the node kept some of its old files; see above"
            );
            Ok(())
        }
        Cmd::Check { config } => {
            let cfg = NodeConfig::load(&config)?;
            println!("node {} in trust domain {}", cfg.name, cfg.trust_domain);
            println!("  data dir    {}", cfg.data_dir.display());
            println!("  peer plane  {}", cfg.listen_peer);
            println!("  client plane {}", cfg.listen_client);
            println!(
                "  policy      {}",
                cfg.policy
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "none: every client and admin request is denied".into())
            );
            if let Some(p) = &cfg.policy {
                crate::node::policy::Policy::load(p).map_err(super::UsageError)?;
            }
            println!(
                "  roster      {}",
                cfg.peers
                    .iter()
                    .map(|p| p.name.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            Ok(())
        }
        Cmd::Run { config } => {
            let cfg = NodeConfig::load(&config)?;
            crate::hardening::disable_core_dumps().context("disabling core dumps")?;
            // Handlers first: a SIGTERM from now on drains the node instead
            // of killing it.
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
            let mut int =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
            let pass = cfg.passphrase.read()?;
            let listeners = Listeners::bind(cfg.listen_peer, cfg.listen_client).await?;
            let mut running =
                server::start_with(&cfg, &pass, listeners, server::Startup::ComparingFirst)
                    .with_context(|| format!("starting node {}", cfg.name))?;
            // The store's key is derived: the passphrase is not kept.
            drop(pass);
            crate::config::PassphraseSource::forget_taken();
            // Every key's state compared with its committee before this node
            // says it serves: a freeze or delete it missed while down is
            // applied now, and it can take part in signing at once.
            let (keys, silent) = running
                .node
                .sync_lifecycles_at_start(STARTUP_COMPARE_FOR)
                .await;
            if keys > 0 {
                eprintln!(
                    "node {}: compared the state of {keys} keys with their committees{}",
                    cfg.name,
                    if silent > 0 {
                        format!(" ({silent} with no member answering; compared again when asked to sign)")
                    } else {
                        String::new()
                    }
                );
            }
            eprintln!(
                "node {} serving: peer plane {}, client plane {}{}",
                cfg.name,
                running.peer_addr,
                running.client_addr,
                running
                    .ops_addr
                    .map(|a| format!(", ops plane {a}"))
                    .unwrap_or_default()
            );
            loop {
                tokio::select! {
                    _ = int.recv() => break,
                    _ = term.recv() => break,
                    _ = hup.recv() => {
                        for line in running.reload().lines() {
                            eprintln!("node {}: {line}", cfg.name);
                        }
                    }
                    _ = running.wait() => anyhow::bail!("node {} stopped serving unexpectedly", cfg.name),
                }
            }
            eprintln!(
                "node {}: draining (no new sessions; waiting up to {} s for {} in flight)",
                cfg.name,
                DRAIN_BOUND.as_secs(),
                running.node.in_flight()
            );
            running.node.drain();
            let left = running.node.wait_idle(DRAIN_BOUND).await;
            if left > 0 {
                eprintln!(
                    "node {}: {left} still in flight after the bound; stopping anyway",
                    cfg.name
                );
            }
            eprintln!("node {}: shutting down", cfg.name);
            running.stop().await;
            Ok(())
        }
    }
}
