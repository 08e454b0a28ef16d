//! `thresig sign` with a typed payload: reads the payload (a file, or hex),
//! decodes it here first to show what would be signed and to refuse a bad
//! one before any node is asked, then signs it (or, with --dry-run, asks
//! every committee node's policy) and prints what the caller needs next.

use std::time::Instant;

use anyhow::Context;

use crate::client::Client;
use crate::domain::{DerivationPath, KeyType};
use crate::payload::Kind;

#[derive(Debug, clap::Args)]
pub struct PayloadArgs {
    /// An unsigned Ethereum transaction (EIP-2718 signing encoding: legacy
    /// with an EIP-155 chain id, EIP-2930 or EIP-1559): a file, or hex.
    #[arg(long, value_name = "FILE|HEX", group = "kind")]
    eth_tx: Option<String>,
    /// An EIP-191 personal_sign message: a file (its bytes), or hex.
    #[arg(long, value_name = "FILE|HEX", group = "kind")]
    eth_message: Option<String>,
    /// EIP-712 typed data as wallets send it (JSON): a file, or the JSON.
    #[arg(long, value_name = "FILE|JSON", group = "kind")]
    eth_typed_data: Option<String>,
    /// A BIP-174 PSBT: a file (binary or base64), or hex or base64. Every
    /// input whose BIP-32 derivation names this key is signed; leave --path
    /// out (the PSBT names the paths).
    #[arg(long, value_name = "FILE|HEX|BASE64", group = "kind")]
    psbt: Option<String>,
    /// A Cosmos SDK SignDoc (SIGN_MODE_DIRECT, protobuf bytes): a file, or hex.
    #[arg(long, value_name = "FILE|HEX", group = "kind")]
    cosmos_sign_doc: Option<String>,
    /// Ask every committee node to decode the payload and evaluate its
    /// policy, and print each node's verdict; nothing is signed. Exits 1 if
    /// any node would refuse.
    #[arg(long)]
    pub dry_run: bool,
}

/// A file's bytes, or the argument itself as hex.
fn file_or_hex(what: &str, raw: &str) -> anyhow::Result<Vec<u8>> {
    let path = std::path::Path::new(raw);
    if path.is_file() {
        return std::fs::read(path).with_context(|| format!("{what}: reading {}", path.display()));
    }
    let h = raw.trim().trim_start_matches("0x");
    hex::decode(h).map_err(|_| {
        anyhow::anyhow!("{what}: {raw:?} is neither a file nor hex (0x prefix allowed)")
    })
}

impl PayloadArgs {
    /// The payload given, if any.
    pub fn read(&self) -> anyhow::Result<Option<(Kind, Vec<u8>)>> {
        if let Some(v) = &self.eth_tx {
            return Ok(Some((Kind::EthTransaction, file_or_hex("--eth-tx", v)?)));
        }
        if let Some(v) = &self.eth_message {
            return Ok(Some((Kind::EthMessage, file_or_hex("--eth-message", v)?)));
        }
        if let Some(v) = &self.eth_typed_data {
            let bytes = if v.trim_start().starts_with('{') {
                v.as_bytes().to_vec()
            } else {
                std::fs::read(v).with_context(|| format!("--eth-typed-data: reading {v}"))?
            };
            return Ok(Some((Kind::EthTypedData, bytes)));
        }
        if let Some(v) = &self.psbt {
            return Ok(Some((Kind::BitcoinPsbt, read_psbt(v)?)));
        }
        if let Some(v) = &self.cosmos_sign_doc {
            return Ok(Some((
                Kind::CosmosSignDoc,
                file_or_hex("--cosmos-sign-doc", v)?,
            )));
        }
        Ok(None)
    }
}

/// A PSBT from a binary or base64 file, or hex or base64 text.
fn read_psbt(raw: &str) -> anyhow::Result<Vec<u8>> {
    let path = std::path::Path::new(raw);
    let text = if path.is_file() {
        let b = std::fs::read(path).with_context(|| format!("--psbt: reading {raw}"))?;
        if b.starts_with(b"psbt\xff") {
            return Ok(b);
        }
        String::from_utf8(b)
            .map_err(|_| anyhow::anyhow!("--psbt: {raw} is neither a binary nor a text PSBT"))?
    } else {
        raw.to_owned()
    };
    let text = text.trim();
    if let Ok(b) = hex::decode(text.trim_start_matches("0x")) {
        return Ok(b);
    }
    crate::payload::psbt_from_base64(text)
        .map_err(|e| anyhow::anyhow!("--psbt: not hex, base64 or a PSBT file: {e}"))
}

pub struct Job<'a> {
    pub key: &'a str,
    pub path: &'a str,
    pub request_id: &'a str,
    pub kind: Kind,
    pub bytes: &'a [u8],
    pub dry_run: bool,
    pub json: bool,
}

pub async fn run(c: &mut Client, job: Job<'_>) -> anyhow::Result<()> {
    if job.kind.paths_from_payload() && !job.path.is_empty() && job.path != "m" {
        anyhow::bail!("--path: a PSBT names the path of each input itself; leave --path out");
    }
    let path = DerivationPath::parse(job.path)?;
    // Decode here first: a payload no node would take is refused before
    // any node is asked, and the summary says what would be signed.
    let info = c.public_key(job.key, "").await?;
    let chain_code: [u8; 32] = info.chain_code.as_slice().try_into().map_err(|_| {
        anyhow::anyhow!(
            "the node sent a chain code of {} bytes",
            info.chain_code.len()
        )
    })?;
    let view = crate::payload::KeyView {
        key_type: KeyType::parse(&info.key_type)?,
        public_key: &info.public_key,
        chain_code: &chain_code,
        path: &path,
    };
    let decoded = crate::payload::decode(job.kind, job.bytes, &view)?;
    let request = c.payload_request(job.key, job.kind, job.bytes, job.path, job.request_id)?;
    if job.dry_run {
        return dry_run(c, &request, &decoded.summary, job.json).await;
    }
    if !job.json {
        println!("signing      {}", decoded.summary);
    }
    let started = Instant::now();
    let r = c.sign_request(&request).await?;
    let ms = started.elapsed().as_secs_f64() * 1e3;
    let out = r
        .payload
        .ok_or_else(|| anyhow::anyhow!("the node answered without the payload's result"))?;
    let hex0x = |b: &[u8]| {
        if b.is_empty() {
            String::new()
        } else {
            format!("0x{}", hex::encode(b))
        }
    };
    if job.json {
        let inputs: Vec<_> = out
            .inputs
            .iter()
            .map(|i| serde_json::json!({"input": i.input, "path": i.path, "der": hex::encode(&i.der), "public_key": hex::encode(&i.public_key)}))
            .collect();
        let v = serde_json::json!({
            "key": job.key, "kind": out.kind, "summary": out.summary,
            "signed_transaction": hex0x(&out.signed_transaction), "tx_hash": hex0x(&out.tx_hash),
            "sender": out.sender, "signature": hex0x(&out.signature), "psbt": hex::encode(&out.psbt),
            "inputs": inputs, "r": hex::encode(&r.r), "s": hex::encode(&r.s), "recovery_id": r.recovery_id,
            "public_key": hex::encode(&r.public_key), "participants": r.participants,
            "request_id": r.request_id, "epoch": r.epoch, "latency_ms": ms,
        });
        println!("{v}");
        return Ok(());
    }
    let line = |label: &str, v: String| {
        if !v.is_empty() {
            println!("{label:<12} {v}");
        }
    };
    line("signed tx", hex0x(&out.signed_transaction));
    line("tx hash", hex0x(&out.tx_hash));
    line("sender", out.sender.clone());
    line("signature", hex0x(&out.signature));
    line("psbt", hex::encode(&out.psbt));
    for i in &out.inputs {
        println!(
            "input {:<6} {} der {}",
            i.input,
            i.path,
            hex::encode(&i.der)
        );
    }
    if out.inputs.is_empty() {
        line("r||s||v", hex::encode(&r.rsv));
    }
    line("signers", r.participants.join(", "));
    line("request id", r.request_id);
    println!("latency      {ms:.1} ms");
    Ok(())
}

async fn dry_run(
    c: &mut Client,
    request: &crate::client::ClientRequest,
    summary: &str,
    json: bool,
) -> anyhow::Result<()> {
    let r = c.evaluate_request(request).await?;
    let refused = r.verdicts.iter().filter(|v| !v.allowed).count();
    if json {
        let verdicts: Vec<_> = r
            .verdicts
            .iter()
            .map(|v| serde_json::json!({"node": v.node, "allowed": v.allowed, "detail": v.detail}))
            .collect();
        println!(
            "{}",
            serde_json::json!({"summary": summary, "verdicts": verdicts, "refused": refused})
        );
    } else {
        println!("would sign   {summary}");
        for v in &r.verdicts {
            let word = if v.allowed { "allowed" } else { "REFUSED" };
            println!("node {:<8} {word:<8} {}", v.node, v.detail);
        }
        if refused == 0 {
            println!("every node would sign it (nothing was signed)");
        } else {
            println!(
                "{refused} of {} nodes would refuse it (nothing was signed)",
                r.verdicts.len()
            );
        }
    }
    if refused > 0 {
        anyhow::bail!("dry run: {refused} node(s) would refuse");
    }
    Ok(())
}
