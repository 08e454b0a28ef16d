//! `thresig keys`: admin operations on threshold keys.

use std::time::Instant;

use super::conn::Conn;
use crate::client::{AdminOp, KeyInfo};
use crate::domain::KeyType;
use crate::pki::Role;

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Generate a new key across the committee (distributed, no dealer).
    ///
    /// Every committee node must be up. Signing later needs exactly
    /// --threshold of them.
    ///
    /// Example: thresig keys create --name passkey-1 --threshold 2 --type p256
    Create {
        /// Key name: 1-64 of a-z, 0-9, '-', '_', '.'.
        #[arg(long)]
        name: String,
        /// The curve: secp256k1 (Ethereum, Bitcoin, Cosmos) or p256 (NIST
        /// P-256: WebAuthn/passkeys, NEO, Sui, HSM replacement). Both sign
        /// ECDSA over a 32-byte digest and support non-hardened BIP32-style paths.
        #[arg(long = "type", default_value = "secp256k1", value_parser = parse_key_type)]
        key_type: KeyType,
        /// Number of nodes needed to sign (t of n), at least 2.
        #[arg(long)]
        threshold: u32,
        /// Committee node names, comma separated (default: every node of the cluster).
        #[arg(long, value_delimiter = ',')]
        committee: Vec<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Rotate every share of a key (proactive refresh): same public key and
    /// addresses, next epoch, every share re-randomized.
    ///
    /// Every committee node must be up. Signing with the key answers
    /// UNAVAILABLE (retry) while the rotation runs; the old epoch's shares are
    /// deleted once the new epoch is active on every node.
    Rotate {
        /// The key's name.
        key: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Rebuild the share of a node that lost its data, then rotate the key.
    ///
    /// Start the node with an empty data directory first (same name and
    /// certificate). t other committee nodes send it masked terms over mTLS;
    /// only it can assemble its share. A node that still holds a live share
    /// is refused. A complete refresh across the committee follows, so every
    /// share changes and the key keeps its public key.
    Repair {
        /// The key's name.
        key: String,
        /// The node whose share is rebuilt.
        #[arg(long)]
        node: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Move a key to another committee and/or threshold; the public key and
    /// addresses stay the same.
    ///
    /// t nodes of the current committee deal their shares to the new
    /// committee with Feldman commitments; each new member checks its points
    /// (a dealer that cheats is named and nothing changes), then the new
    /// committee runs a complete refresh and activates the next epoch. Nodes
    /// that leave delete their share once every new member is active. Every
    /// current and new member must be up; send the request to a node of the
    /// current committee. Signing answers UNAVAILABLE (retry) meanwhile.
    ///
    /// A recovery reshare removes a broken or rogue member: --exclude it, and
    /// t of the other current members deal while it is down or hostile; a
    /// frozen key can be moved this way. The excluded member's old share is
    /// useless once the others have moved on.
    ///
    /// Example: thresig keys reshare validator-1 --committee b,c,d --threshold 2
    ///          thresig keys reshare validator-1 --committee b,c,d --threshold 2 --exclude a
    Reshare {
        /// The key's name.
        key: String,
        /// The new committee: node names, comma separated, in party order.
        #[arg(long, value_delimiter = ',', required = true)]
        committee: Vec<String>,
        /// Nodes needed to sign afterwards (2 <= t <= committee size).
        #[arg(long)]
        threshold: u32,
        /// Current members that take no part (down or not trusted), comma separated.
        #[arg(long, value_delimiter = ',')]
        exclude: Vec<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Emergency stop: the key stops signing on every node of its committee.
    ///
    /// Signing then answers FAILED_PRECONDITION (key-not-active) until
    /// `keys unfreeze`. Nodes that cannot be reached are listed; send the
    /// request again when they are back.
    Freeze {
        /// The key's name.
        key: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Let a frozen key sign again (frozen by an admin, or by an invalid
    /// final signature: read `keys show` first).
    Unfreeze {
        /// The key's name.
        key: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Destroy every share of a key on every node of its committee. Cannot
    /// be undone.
    ///
    /// Each node deletes its active and staged shares in one durable commit
    /// and keeps a tombstone, so the name is not reused; ledgers and audit
    /// logs stay. Backups taken earlier still hold shares: destroy them too.
    Delete {
        /// The key's name.
        key: String,
        /// Required: you mean it.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Clear the bans of a key on every node of its committee.
    ///
    /// A node bans another for a key when its own engine catches it in a
    /// fault the protocol says must exclude it for good (an OT consistency
    /// failure, an equivocated broadcast); it then refuses to sign the key
    /// with it. `keys show` lists a node's bans. Find out what happened
    /// first: such a fault may have leaked bits of a share to the banned
    /// node, and a rotation (`keys rotate`) renews every share. It also ends
    /// any elimination a node runs after an invalid final signature (the key
    /// signs with any signer set again).
    Unban {
        /// The key's name.
        key: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// List the keys this node holds a share of.
    List {
        #[command(flatten)]
        conn: Conn,
    },
    /// Move a key that exists whole elsewhere into shares: an Ethereum V3
    /// keystore, a BIP-39 mnemonic with a path, or a raw key file (never the
    /// key on the command line).
    ///
    /// This machine deals the key with Feldman commitments and seals each
    /// member's point to that node's certificate key; each node opens and
    /// checks its own point before it stores anything, then the committee
    /// refreshes every share (the dealt points are dead) and activates the
    /// key. Every copy here is zeroized. Import cannot undo that the key
    /// existed whole: see SECURITY.md, "Imported keys".
    ///
    /// Example: thresig keys import --name hot-1 --keystore key.json
    /// --password-file pw.txt --threshold 2 --committee a,b,c
    Import(Box<super::import::ImportArgs>),
    /// Show one key, with the nodes the node asked refuses to sign it with
    /// (its bans).
    Show {
        /// The key's name.
        key: String,
        #[command(flatten)]
        conn: Conn,
    },
}

pub fn print_key(k: &KeyInfo) {
    println!("key          {}", k.key_id);
    println!("type         {}", k.key_type);
    println!("public key   {}", hex::encode(&k.public_key));
    if !k.eth_address.is_empty() {
        println!("eth address  {}", k.eth_address);
    }
    println!("chain code   {}", hex::encode(&k.chain_code));
    println!("threshold    {}-of-{}", k.threshold, k.committee.len());
    println!("committee    {}", k.committee.join(", "));
    println!("epoch        {}", k.epoch);
    println!("state        {}", k.state);
    println!(
        "lifecycle    sequence {} (what a freeze, unfreeze or delete request names)",
        k.lifecycle_seq
    );
    for b in &k.bans {
        println!("banned       {b}");
    }
}

pub async fn run(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Create {
            name,
            key_type,
            threshold,
            committee,
            conn,
        } => {
            let mut c = conn.client(Role::Admin)?;
            let who = if committee.is_empty() {
                "every node".to_owned()
            } else {
                committee.join(", ")
            };
            eprintln!("running distributed key generation for {name} ({key_type}, {threshold}-of-n, committee: {who}) via node {}...", conn.server);
            let started = Instant::now();
            let k = c
                .create_key_of_type(&name, key_type, threshold, &committee)
                .await?;
            eprintln!("done in {:.2}s", started.elapsed().as_secs_f64());
            print_key(&k);
        }
        Cmd::Rotate { key, conn } => {
            let mut c = conn.client(Role::Admin)?;
            let before = c.get_key(&key).await?;
            eprintln!(
                "rotating {key} (epoch {}) across {} via node {}: refresh, confirmation on every \
                 node, activation...",
                before.epoch,
                before.committee.join(", "),
                conn.server
            );
            let r = c.rotate_key(&key).await?;
            let after = r.key.unwrap_or_default();
            println!("key          {}", after.key_id);
            println!("epoch        {} -> {}", r.old_epoch, r.new_epoch);
            println!(
                "public key   {} ({})",
                hex::encode(&after.public_key),
                if r.public_key_unchanged && after.public_key == before.public_key {
                    "unchanged"
                } else {
                    "CHANGED"
                }
            );
            println!("committee    {}", after.committee.join(", "));
            println!("duration     {:.2} s", r.duration_ms as f64 / 1e3);
            anyhow::ensure!(
                after.public_key == before.public_key,
                "the public key changed during rotation"
            );
        }
        Cmd::Repair { key, node, conn } => {
            let mut c = conn.client(Role::Admin)?;
            let before = c.get_key(&key).await?;
            eprintln!("repairing node {node}'s share of {key} (epoch {}) via node {}: terms from {} helpers, then a complete refresh...", before.epoch, conn.server, before.threshold);
            let r = c.repair_key(&key, &node).await?;
            let rot = r.rotation.unwrap_or_default();
            let after = rot.key.unwrap_or_default();
            println!("key          {}", after.key_id);
            println!("repaired     {node} (helpers: {})", r.helpers.join(", "));
            println!("epoch        {} -> {}", rot.old_epoch, rot.new_epoch);
            println!(
                "public key   {} ({})",
                hex::encode(&after.public_key),
                if after.public_key == before.public_key {
                    "unchanged"
                } else {
                    "CHANGED"
                }
            );
            println!(
                "duration     {:.2} s (refresh part)",
                rot.duration_ms as f64 / 1e3
            );
            anyhow::ensure!(
                after.public_key == before.public_key,
                "the public key changed during repair"
            );
        }
        Cmd::Reshare {
            key,
            committee,
            threshold,
            exclude,
            conn,
        } => {
            let mut c = conn.client(Role::Admin)?;
            let before = c.get_key(&key).await?;
            eprintln!(
                "resharing {key} (epoch {}) from {}-of-{{{}}} to {threshold}-of-{{{}}} via node {}: \
                 dealing by {} current members, checks on every new member, complete refresh, activation, retirement...",
                before.epoch,
                before.threshold,
                before.committee.join(", "),
                committee.join(", "),
                conn.server,
                before.threshold,
            );
            if !exclude.is_empty() {
                eprintln!(
                    "recovery reshare: {} take(s) no part; t of the other members deal",
                    exclude.join(", ")
                );
            }
            let r = c
                .reshare_key_excluding(&key, &committee, threshold, &exclude)
                .await?;
            let after = r.key.unwrap_or_default();
            let unchanged = r.public_key_unchanged && after.public_key == before.public_key;
            println!("key          {}", after.key_id);
            println!("epoch        {} -> {}", r.old_epoch, r.new_epoch);
            println!(
                "committee    {}-of-{{{}}} -> {}-of-{{{}}}",
                r.old_threshold,
                r.old_committee.join(", "),
                after.threshold,
                after.committee.join(", ")
            );
            println!("dealers      {}", r.dealers.join(", "));
            println!(
                "public key   {} ({})",
                hex::encode(&after.public_key),
                if unchanged { "unchanged" } else { "CHANGED" }
            );
            if !r.retired.is_empty() {
                println!("retired      {} (shares deleted)", r.retired.join(", "));
            }
            println!("duration     {:.2} s", r.duration_ms as f64 / 1e3);
            anyhow::ensure!(unchanged, "the public key changed during the reshare");
            let (excluded, stray): (Vec<&String>, Vec<&String>) =
                r.not_retired.iter().partition(|n| n.contains("(excluded"));
            for x in excluded {
                println!("excluded     {x}");
            }
            anyhow::ensure!(
                stray.is_empty(),
                "these nodes left the committee but still hold their old share; delete the key's \
                 data on them by hand: {}",
                stray
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        Cmd::Freeze { key, conn } => state_change(&key, AdminOp::Freeze, &conn).await?,
        Cmd::Unfreeze { key, conn } => state_change(&key, AdminOp::Unfreeze, &conn).await?,
        Cmd::Unban { key, conn } => state_change(&key, AdminOp::Unban, &conn).await?,
        Cmd::Delete { key, yes, conn } => {
            if !yes {
                return Err(super::UsageError(format!(
                    "deleting key {key} destroys every share of it for good; pass --yes to confirm"
                ))
                .into());
            }
            state_change(&key, AdminOp::Delete, &conn).await?
        }
        Cmd::List { conn } => {
            let keys = conn.client(Role::Admin)?.list_keys().await?;
            if keys.is_empty() {
                println!("no keys");
            }
            for k in keys {
                println!(
                    "{}  {}-of-{}  epoch {}  {}  {}",
                    k.key_id,
                    k.threshold,
                    k.committee.len(),
                    k.epoch,
                    k.state,
                    hex::encode(&k.public_key)
                );
            }
        }
        Cmd::Import(a) => super::import::run(*a).await?,
        Cmd::Show { key, conn } => print_key(&conn.client(Role::Admin)?.get_key(&key).await?),
    }
    Ok(())
}

async fn state_change(key: &str, op: AdminOp, conn: &Conn) -> anyhow::Result<()> {
    let mut c = conn.client(Role::Admin)?;
    eprintln!(
        "{op} of key {key} via node {}: every committee node checks the request...",
        conn.server
    );
    let r = c.change_key_state(key, op).await?;
    print_state_change(&r)
}

/// Prints a freeze, unfreeze, delete or unban result; an error if some node did not apply it.
pub fn print_state_change(r: &crate::proto::admin::KeyStateResponse) -> anyhow::Result<()> {
    if let Some(k) = &r.key {
        println!("key          {}", k.key_id);
        println!("state        {}", k.state);
    }
    println!("applied on   {}", r.applied.join(", "));
    anyhow::ensure!(
        r.not_applied.is_empty(),
        "not applied on {}; send a new request when they are back",
        r.not_applied.join(", ")
    );
    Ok(())
}

fn parse_key_type(s: &str) -> Result<KeyType, String> {
    KeyType::parse(s).map_err(|e| e.to_string())
}
