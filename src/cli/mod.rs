//! Command line: one file per subcommand. Parses arguments, calls the library,
//! prints results. Exit codes: 0 ok, 1 operation failed, 64 usage or config error.

mod admin;
mod audit;
mod backup;
mod bench;
mod certs;
mod conn;
mod demo;
mod dev;
mod eth_rpc;
mod import;
mod keys;
mod node;
mod policy;
mod sign;
mod sign_payload;
mod status;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Threshold ECDSA (secp256k1) signing service.
///
/// A cluster of signer nodes, authenticated to each other with mutual TLS,
/// generates keys with no dealer and signs with any t of its n nodes
/// (DKLs23). No machine, disk or log ever holds a whole key.
///
/// Start with `thresig demo`: it runs a local 3-node cluster, creates a
/// 2-of-3 key, signs and verifies, then shuts down.
#[derive(Debug, Parser)]
#[command(
    name = "thresig",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// Log format for diagnostics on stderr.
    #[arg(long, global = true, value_enum, default_value_t = crate::telemetry::LogFormat::Text, env = "THRESIG_LOG_FORMAT")]
    log_format: crate::telemetry::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a local 3-node 2-of-3 cluster: keygen, sign, verify, shut down.
    Demo(demo::Args),
    /// Run a local cluster for development until Ctrl-C: nodes on 127.0.0.1,
    /// a fresh PKI, a permissive policy, optional keys; prints the endpoints
    /// and the export lines for the CLI and clients. State stays in --dir.
    Dev(dev::Args),
    /// Serve Ethereum JSON-RPC (Web3Signer's eth1 methods) in front of the
    /// cluster: wallet libraries sign through threshold keys unchanged.
    EthRpc(eth_rpc::Args),
    /// Create a development CA and certificates (or issue one more).
    #[command(subcommand)]
    Certs(certs::Cmd),
    /// Run a signer node, check its config, or reload its files.
    #[command(subcommand)]
    Node(node::Cmd),
    /// Every node and every key at a glance: reachable, versions, epochs, readiness (admin certificate).
    Status(status::Args),
    /// Create, list and inspect threshold keys (admin certificate).
    #[command(subcommand)]
    Keys(keys::Cmd),
    /// Key changes approved by several admins: propose, approve offline, submit.
    #[command(subcommand)]
    Admin(admin::Cmd),
    /// Read and verify a node's hash-chained audit log (admin certificate).
    #[command(subcommand)]
    Audit(audit::Cmd),
    /// Back up a node's store, check a backup, restore one (see README, "Backups").
    #[command(subcommand)]
    Backup(backup::Cmd),
    /// Explain policy decisions, or reload a node's policy file.
    #[command(subcommand)]
    Policy(policy::Cmd),
    /// Sign a typed payload (an Ethereum transaction, message or typed data,
    /// a Bitcoin PSBT, a Cosmos SignDoc) or a raw 32-byte digest (client
    /// certificate); --dry-run asks every node's policy without signing.
    Sign(sign::SignArgs),
    /// Print the public key and Ethereum address of a key or a derived child.
    Pubkey(sign::PubkeyArgs),
    /// Load-test signing against a cluster: latency percentiles, throughput, CPU, and the ratios to the engine alone.
    Bench(bench::Args),
}

/// An error that is the caller's fault (bad flags, bad config): exit code 64.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 64 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    // The demo and bench print their own progress; node logs would interleave.
    let quiet = matches!(
        cli.command,
        Command::Demo(_) | Command::Dev(_) | Command::Bench(_)
    );
    crate::telemetry::init(cli.log_format, if quiet { "warn" } else { "info" });
    // A node's environment passphrase leaves the environment before any other
    // thread exists (errors are reported by the command itself).
    if let Command::Node(node::Cmd::Run { config }) = &cli.command {
        if let Ok(cfg) = crate::config::NodeConfig::load(config) {
            let _ = cfg.passphrase.take_from_env();
        }
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = rt.block_on(async move {
        match cli.command {
            Command::Demo(a) => demo::run(a).await,
            Command::Dev(a) => dev::run(a).await,
            Command::EthRpc(a) => eth_rpc::run(a).await,
            Command::Certs(c) => certs::run(c),
            Command::Node(c) => node::run(c).await,
            Command::Keys(c) => keys::run(c).await,
            Command::Status(a) => status::run(a).await,
            Command::Admin(c) => admin::run(c).await,
            Command::Policy(c) => policy::run(c).await,
            Command::Audit(c) => audit::run(c).await,
            Command::Backup(c) => backup::run(c).await,
            Command::Sign(a) => sign::sign(a).await,
            Command::Pubkey(a) => sign::pubkey(a).await,
            Command::Bench(a) => bench::run(a).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let usage = e.downcast_ref::<UsageError>().is_some()
                || e.downcast_ref::<crate::config::ConfigError>().is_some()
                || e.downcast_ref::<crate::domain::DomainError>().is_some();
            eprintln!("error: {}", chain(&e));
            ExitCode::from(if usage { 64 } else { 1 })
        }
    }
}

/// The error and its causes, skipping a cause its parent already quoted.
fn chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let msg = cause.to_string();
        if !out.contains(&msg) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&msg);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    #[test]
    fn command_line_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }

    #[test]
    fn bad_digest_is_a_usage_error() {
        let e = super::Cli::try_parse_from(["thresig", "sign", "--key", "k"]).unwrap_err();
        assert!(e.to_string().contains("--digest"));
    }
}
