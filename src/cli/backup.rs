//! `thresig backup`: take a backup of a node's store (through the running
//! node, or from the data directory of a stopped one), check a backup file,
//! and restore one into an empty data directory. See "Backups" in the README
//! for what a restored node does before it signs again.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::conn::Conn;
use super::UsageError;
use crate::config::NodeConfig;
use crate::pki::Role;
use crate::secret::SecretBytes;
use crate::storage::{BackupInfo, Store};

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Write a backup of a node's store to a new file.
    ///
    /// By default the running node takes it (admin certificate with the backup
    /// operation): a consistent snapshot while it keeps signing. With
    /// --config, the store of a stopped node is read directly (it needs the
    /// store passphrase, from the config's passphrase source). Shares stay
    /// sealed under the passphrase; the file carries a MAC under it too.
    Create {
        /// The file to write; it must not exist.
        #[arg(long)]
        out: PathBuf,
        /// Read the store of a stopped node (its node.toml) instead of asking
        /// a running one.
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Check a backup file: format, completeness and MAC (needs the store
    /// passphrase), and every key record in it. Exit 1 if anything is wrong.
    Verify {
        file: PathBuf,
        #[command(flatten)]
        pass: Passphrase,
    },
    /// Restore a backup into an empty data directory (the node must be
    /// stopped). Every key in it is held back until the committee confirms
    /// its epoch and slot watermarks; a key rotated since the backup needs
    /// `thresig keys repair` before this node signs with it again.
    Restore {
        file: PathBuf,
        /// The data directory to restore into (default: the config's
        /// data_dir). It must not hold a store: nothing is overwritten.
        #[arg(long)]
        into: Option<PathBuf>,
        #[command(flatten)]
        pass: Passphrase,
    },
}

/// Where the store passphrase comes from: the node's config (its
/// passphrase_env or passphrase_file), or a file. Paths only: the passphrase
/// itself is read into `SecretBytes` (redacted `Debug`), never held here.
#[derive(clap::Args)]
pub struct Passphrase {
    /// The node's config: its store passphrase source (and, for restore, its
    /// data_dir).
    #[arg(long)]
    config: Option<PathBuf>,
    /// A file holding the store passphrase (a trailing newline is ignored).
    #[arg(long, conflicts_with = "config")]
    passphrase_file: Option<PathBuf>,
}

/// Written by hand, though it holds only paths: it names where the
/// passphrase comes from, never anything read from there.
impl std::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passphrase")
            .field("config", &self.config)
            .field("passphrase_file", &self.passphrase_file)
            .finish()
    }
}

impl Passphrase {
    fn read(&self) -> anyhow::Result<(SecretBytes, Option<NodeConfig>)> {
        match (&self.config, &self.passphrase_file) {
            (Some(c), _) => {
                let cfg = NodeConfig::load(c)?;
                Ok((cfg.passphrase.read()?, Some(cfg)))
            }
            (None, Some(f)) => {
                let source = crate::config::PassphraseSource::File(f.clone());
                Ok((source.read()?, None))
            }
            (None, None) => Err(UsageError(
                "the store passphrase is needed: give --config NODE.TOML or --passphrase-file FILE"
                    .into(),
            )
            .into()),
        }
    }
}

fn describe(info: &BackupInfo) -> String {
    let when = time::OffsetDateTime::from_unix_timestamp(
        i64::try_from(info.created_unix).unwrap_or(i64::MAX),
    )
    .map(|t| {
        format!(
            "{} {:02}:{:02}:{:02} UTC",
            t.date(),
            t.hour(),
            t.minute(),
            t.second()
        )
    })
    .unwrap_or_else(|_| info.created_unix.to_string());
    let mut out = format!(
        "backup of node {} taken {when} (format {}, store format {}), {} key(s)",
        info.node,
        info.format,
        info.store_format,
        info.keys.len()
    );
    for k in &info.keys {
        out.push_str(&format!("\n  {}  epoch {}  {}", k.key_id, k.epoch, k.state));
    }
    out
}

/// Writes `body` to a new file `path` (mode 0600), durably.
fn write_new(path: &Path, body: &[u8]) -> anyhow::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts
        .open(path)
        .with_context(|| format!("creating {} (it must not exist)", path.display()))?;
    f.write_all(body)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

pub async fn run(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Create { out, config, conn } => {
            if out.exists() {
                return Err(UsageError(format!(
                    "{} exists; choose a new file (a backup never overwrites one)",
                    out.display()
                ))
                .into());
            }
            let file = match config {
                Some(c) => {
                    let cfg = NodeConfig::load(&c)?;
                    let pass = cfg.passphrase.read()?;
                    eprintln!("opening the store in {}", cfg.data_dir.display());
                    let store =
                        Store::open(&cfg.data_dir, &cfg.name, &pass).with_context(|| {
                            format!(
                            "opening the store of node {} (is the node still running? stop it, \
                             or leave out --config to ask the running node)",
                            cfg.name
                        )
                        })?;
                    store.backup(crate::node::now_unix())?
                }
                None => {
                    eprintln!(
                        "asking node {} at {} for a backup",
                        conn.server, conn.endpoint
                    );
                    conn.client(Role::Admin)?.backup_store().await?
                }
            };
            write_new(&out, &file)?;
            let info = crate::storage::backup_header(&file)?;
            println!("wrote {} ({} bytes)", out.display(), file.len());
            println!("{}", describe(&info));
            println!(
                "check it with: thresig backup verify {} --config NODE.TOML",
                out.display()
            );
            Ok(())
        }
        Cmd::Verify { file, pass } => {
            let (pass, _) = pass.read()?;
            let body = read(&file)?;
            let info = crate::storage::verify_backup(&body, &pass)
                .with_context(|| format!("{} does not verify", file.display()))?;
            println!("{}: MAC ok, every record readable", file.display());
            println!("{}", describe(&info));
            Ok(())
        }
        Cmd::Restore { file, into, pass } => {
            let (secret, cfg) = pass.read()?;
            let dir = match (into, &cfg) {
                (Some(d), _) => d,
                (None, Some(c)) => c.data_dir.clone(),
                (None, None) => {
                    return Err(UsageError(
                        "say where to restore: --into DIR, or --config NODE.TOML for its \
                         data_dir"
                            .into(),
                    )
                    .into())
                }
            };
            let body = read(&file)?;
            let info =
                crate::storage::restore_backup(&body, &secret, &dir, crate::node::now_unix())
                    .with_context(|| {
                        format!("restoring {} into {}", file.display(), dir.display())
                    })?;
            if let Some(c) = &cfg {
                if c.name.as_str() != info.node {
                    eprintln!(
                        "warning: the backup is of node {}, but the config is node {}'s",
                        info.node, c.name
                    );
                }
            }
            println!("restored into {}", dir.display());
            println!("{}", describe(&info));
            println!(
                "Start the node: before it signs with a key again, it asks every other committee \
                 node for the key's epoch and slot watermarks. A key rotated since the backup \
                 stays refused here until `thresig keys repair KEY --node {}`.",
                info.node
            );
            Ok(())
        }
    }
}
