//! `thresig sign` and `thresig pubkey` (client certificate).

use std::time::Instant;

use super::conn::Conn;
use crate::client::Slot;
use crate::domain::{DerivationPath, Digest32};
use crate::pki::Role;

#[derive(Debug, clap::Args)]
pub struct SignArgs {
    /// Key name.
    #[arg(long)]
    key: String,
    /// The 32-byte message hash to sign, as 64 hex characters (0x prefix
    /// allowed): blind signing, which a policy may turn off. Or give one of
    /// the typed payloads below, which every node decodes and checks itself.
    #[arg(long, required_unless_present_any = ["eth_tx", "eth_message", "eth_typed_data", "psbt", "cosmos_sign_doc"])]
    digest: Option<String>,
    #[command(flatten)]
    payload: super::sign_payload::PayloadArgs,
    /// Non-hardened BIP32 path, e.g. m/0/1 (default: the key itself).
    #[arg(long, default_value = "")]
    path: String,
    /// Request id, the idempotency key recorded in every signer's ledger
    /// (default: a random one). Repeating it through a node that signed it
    /// returns the signature already made, without a new signing session;
    /// reusing it for a different digest, path or slot is refused.
    #[arg(long, default_value = "")]
    request_id: String,
    /// Double-sign protection: SCOPE@HEIGHT/ROUND/STEP, e.g.
    /// eth2-val-9@1200/0/2. Every signer refuses a position below the highest
    /// it signed for this key and scope, and the same position with another
    /// digest; the same digest at the same position is signed again.
    #[arg(long, value_parser = parse_slot)]
    slot: Option<Slot>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Debug, clap::Args)]
pub struct PubkeyArgs {
    #[arg(long)]
    key: String,
    /// Non-hardened BIP32 path, e.g. m/0/1.
    #[arg(long, default_value = "")]
    path: String,
    #[command(flatten)]
    conn: Conn,
}

pub async fn sign(a: SignArgs) -> anyhow::Result<()> {
    if let Some((kind, bytes)) = a.payload.read()? {
        if a.digest.is_some() || a.slot.is_some() {
            anyhow::bail!(
                "--digest and --slot go with raw digests only: a typed payload is hashed by every \
                 node, and its replay protection comes from the payload"
            );
        }
        let mut c = a.conn.client(Role::Client)?;
        return super::sign_payload::run(
            &mut c,
            super::sign_payload::Job {
                key: &a.key,
                path: &a.path,
                request_id: &a.request_id,
                kind,
                bytes: &bytes,
                dry_run: a.payload.dry_run,
                json: a.json,
            },
        )
        .await;
    }
    if a.payload.dry_run {
        anyhow::bail!("--dry-run needs a typed payload (--eth-tx, --eth-message, --eth-typed-data, --psbt or --cosmos-sign-doc)");
    }
    let digest = Digest32::from_hex(a.digest.as_deref().unwrap_or_default())?;
    DerivationPath::parse(&a.path)?;
    let mut c = a.conn.client(Role::Client)?;
    let started = Instant::now();
    let r = match a.slot {
        Some(slot) => {
            c.sign_at(&a.key, digest.0, &a.path, &a.request_id, slot)
                .await?
        }
        None => c.sign(&a.key, digest.0, &a.path, &a.request_id).await?,
    };
    let ms = started.elapsed().as_secs_f64() * 1e3;
    if a.json {
        let v = serde_json::json!({
            "key": a.key, "path": a.path, "digest": hex::encode(digest.0),
            "r": hex::encode(&r.r), "s": hex::encode(&r.s), "recovery_id": r.recovery_id,
            "der": hex::encode(&r.der), "rsv": hex::encode(&r.rsv), "public_key": hex::encode(&r.public_key), "key_type": r.key_type,
            "participants": r.participants, "request_id": r.request_id, "epoch": r.epoch, "latency_ms": ms,
        });
        println!("{v}");
    } else {
        println!("r            {}", hex::encode(&r.r));
        println!("s            {}", hex::encode(&r.s));
        println!("recovery id  {}", r.recovery_id);
        println!("der          {}", hex::encode(&r.der));
        println!("r||s||v      {}", hex::encode(&r.rsv));
        println!("public key   {}", hex::encode(&r.public_key));
        println!("key type     {}", r.key_type);
        println!("signers      {}", r.participants.join(", "));
        println!("request id   {}", r.request_id);
        println!("latency      {ms:.1} ms");
    }
    Ok(())
}

/// SCOPE@HEIGHT/ROUND/STEP.
fn parse_slot(raw: &str) -> Result<Slot, String> {
    let bad = || format!("{raw:?}: expected SCOPE@HEIGHT/ROUND/STEP, e.g. eth2-val-9@1200/0/2");
    let (scope, pos) = raw.rsplit_once('@').ok_or_else(bad)?;
    let n: Vec<u64> = pos
        .split('/')
        .map(|x| x.parse::<u64>().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    let [height, round, step] = n.as_slice() else {
        return Err(bad());
    };
    let slot = Slot {
        scope: scope.to_owned(),
        height: *height,
        round: *round,
        step: *step,
    };
    slot.validate()?;
    Ok(slot)
}

pub async fn pubkey(a: PubkeyArgs) -> anyhow::Result<()> {
    DerivationPath::parse(&a.path)?;
    let r = a
        .conn
        .client(Role::Client)?
        .public_key(&a.key, &a.path)
        .await?;
    println!("type         {}", r.key_type);
    println!("public key   {}", hex::encode(&r.public_key));
    if !r.eth_address.is_empty() {
        println!("eth address  {}", r.eth_address);
    }
    println!("chain code   {}", hex::encode(&r.chain_code));
    Ok(())
}
