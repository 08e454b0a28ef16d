//! Bitcoin: BIP-174 PSBTs, parsed and hashed with the `bitcoin` crate. The
//! key signs every input whose BIP-32 derivation names this key (the
//! fingerprint of its master public key, and a non-hardened path whose
//! child this node derives itself and finds in the PSBT), for P2WPKH,
//! P2SH-P2WPKH and P2PKH, with SIGHASH_ALL only (any other type lets the
//! transaction change after signing). An output is change when its script
//! is one this node derives from the key at the output's BIP-32 path.

use std::str::FromStr;

use bitcoin::bip32::{ChainCode, ChildNumber, Fingerprint, Xpub};
use bitcoin::psbt::Psbt;
use bitcoin::script::PushBytesBuf;
use bitcoin::secp256k1::{self, Secp256k1};
use bitcoin::sighash::{EcdsaSighashType, SighashCache};
use bitcoin::{Amount, NetworkKind, ScriptBuf, TxOut, Witness};

use super::{Content, Decoded, Finished, KeyView, Kind, PayloadError, Sig, Target};
use crate::domain::DerivationPath;

/// What a PSBT spends and pays, for the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BtcTx {
    pub inputs: Vec<BtcInput>,
    pub outputs: Vec<BtcOutput>,
    /// Inputs minus outputs, when every input's previous output is known.
    pub fee_sat: Option<u64>,
    /// The unsigned transaction's virtual size with every input signed,
    /// estimated from the script types (for a fee rate).
    pub vsize: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BtcInput {
    /// "txid:vout" of the output spent.
    pub outpoint: String,
    pub amount_sat: Option<u64>,
    /// Signed by this key.
    pub ours: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BtcOutput {
    pub script_pubkey: Vec<u8>,
    pub amount_sat: u64,
    /// The script is this key's own at the output's BIP-32 path.
    pub change: bool,
    /// That path, when `change`: a policy counts the output as change only
    /// under the paths its client may use.
    pub change_path: Option<DerivationPath>,
}

const FIELD: &str = "bitcoin_psbt";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Script {
    P2wpkh,
    P2shP2wpkh,
    P2pkh,
}

/// One input this key signs.
struct Planned {
    input: usize,
    pubkey: secp256k1::PublicKey,
    script: Script,
    redeem: Option<ScriptBuf>,
    digest: [u8; 32],
    path: DerivationPath,
}

fn master(key: &KeyView<'_>) -> Result<Xpub, PayloadError> {
    Ok(Xpub {
        network: NetworkKind::Main,
        depth: 0,
        parent_fingerprint: Fingerprint::default(),
        child_number: ChildNumber::Normal { index: 0 },
        public_key: secp256k1::PublicKey::from_slice(key.public_key)
            .map_err(|e| PayloadError::new("key", e))?,
        chain_code: ChainCode::from(*key.chain_code),
    })
}

/// The non-hardened path of a BIP-32 key source, in this crate's terms.
fn our_path(
    path: &bitcoin::bip32::DerivationPath,
    field: &str,
) -> Result<DerivationPath, PayloadError> {
    let mut text = String::from("m");
    for c in path {
        match c {
            ChildNumber::Normal { index } => text.push_str(&format!("/{index}")),
            ChildNumber::Hardened { .. } => {
                return Err(PayloadError::new(
                    field,
                    format!(
                    "path {path} is hardened; a threshold key derives only non-hardened children"
                ),
                ))
            }
        }
    }
    DerivationPath::parse(&text).map_err(|e| PayloadError::new(field, e))
}

/// The child of `xpub` a BIP-32 derivation map names, when it names this
/// key's fingerprint: its key and path, checked against this node's own
/// derivation.
fn named_child(
    secp: &Secp256k1<secp256k1::VerifyOnly>,
    xpub: &Xpub,
    derivations: &std::collections::BTreeMap<secp256k1::PublicKey, bitcoin::bip32::KeySource>,
    field: &str,
) -> Result<Option<(secp256k1::PublicKey, DerivationPath)>, PayloadError> {
    let fp = xpub.fingerprint();
    let Some((pk, (_, path))) = derivations.iter().find(|(_, (f, _))| *f == fp) else {
        return Ok(None);
    };
    let ours = our_path(path, field)?;
    let child = xpub
        .derive_pub(secp, path)
        .map_err(|e| PayloadError::new(field, e))?;
    if child.public_key != *pk {
        return Err(PayloadError::new(
            field,
            format!(
                "names this key's fingerprint {fp} at {path}, but the key there is {}, not {pk}",
                child.public_key
            ),
        ));
    }
    Ok(Some((*pk, ours)))
}

fn spks(pk: &secp256k1::PublicKey) -> (ScriptBuf, ScriptBuf, ScriptBuf) {
    let key = bitcoin::PublicKey::new(*pk);
    let wpkh = bitcoin::CompressedPublicKey(*pk).wpubkey_hash();
    let p2wpkh = ScriptBuf::new_p2wpkh(&wpkh);
    let p2sh = ScriptBuf::new_p2sh(&p2wpkh.script_hash());
    let p2pkh = ScriptBuf::new_p2pkh(&key.pubkey_hash());
    (p2wpkh, p2sh, p2pkh)
}

fn plan(psbt: &Psbt, key: &KeyView<'_>) -> Result<Vec<Planned>, PayloadError> {
    let secp = Secp256k1::verification_only();
    let xpub = master(key)?;
    let mut cache = SighashCache::new(&psbt.unsigned_tx);
    let mut planned = Vec::new();
    for (i, input) in psbt.inputs.iter().enumerate() {
        let field = format!("{FIELD}.inputs[{i}]");
        let Some((pk, path)) = named_child(
            &secp,
            &xpub,
            &input.bip32_derivation,
            &format!("{field}.bip32_derivation"),
        )?
        else {
            continue;
        };
        if let Some(ty) = input.sighash_type {
            if ty.ecdsa_hash_ty() != Ok(EcdsaSighashType::All) {
                return Err(PayloadError::new(
                    format!("{field}.sighash_type"),
                    format!(
                        "{ty} is not accepted; only SIGHASH_ALL commits to the whole transaction"
                    ),
                ));
            }
        }
        let prevout = psbt.unsigned_tx.input[i].previous_output;
        let utxo: TxOut = match (&input.non_witness_utxo, &input.witness_utxo) {
            (Some(prev), _) => {
                if prev.compute_txid() != prevout.txid {
                    return Err(PayloadError::new(
                        format!("{field}.non_witness_utxo"),
                        format!(
                            "is transaction {}, the input spends {}",
                            prev.compute_txid(),
                            prevout.txid
                        ),
                    ));
                }
                let vout = usize::try_from(prevout.vout).unwrap_or(usize::MAX);
                let out = prev.output.get(vout).cloned().ok_or_else(|| {
                    PayloadError::new(
                        format!("{field}.non_witness_utxo"),
                        format!("has no output {}", prevout.vout),
                    )
                })?;
                if let Some(w) = &input.witness_utxo {
                    if *w != out {
                        return Err(PayloadError::new(
                            format!("{field}.witness_utxo"),
                            "differs from the output in non_witness_utxo",
                        ));
                    }
                }
                out
            }
            (None, Some(w)) => w.clone(),
            (None, None) => {
                return Err(PayloadError::new(
                    field,
                    "names this key but carries neither witness_utxo nor non_witness_utxo",
                ))
            }
        };
        let (p2wpkh, p2sh, p2pkh) = spks(&pk);
        let spk = &utxo.script_pubkey;
        let sighash_err =
            |e: &dyn std::fmt::Display| PayloadError::new(field.clone(), e.to_string());
        let (script, redeem, digest) = if *spk == p2wpkh {
            let h = cache
                .p2wpkh_signature_hash(i, spk, utxo.value, EcdsaSighashType::All)
                .map_err(|e| sighash_err(&e))?;
            (Script::P2wpkh, None, h.to_byte_array())
        } else if *spk == p2sh {
            if input.redeem_script.as_ref() != Some(&p2wpkh) {
                return Err(PayloadError::new(
                    format!("{field}.redeem_script"),
                    "must be the P2WPKH script of the key the input's derivation names",
                ));
            }
            let h = cache
                .p2wpkh_signature_hash(i, &p2wpkh, utxo.value, EcdsaSighashType::All)
                .map_err(|e| sighash_err(&e))?;
            (Script::P2shP2wpkh, Some(p2wpkh), h.to_byte_array())
        } else if *spk == p2pkh {
            if input.non_witness_utxo.is_none() {
                return Err(PayloadError::new(
                    format!("{field}.non_witness_utxo"),
                    "is required to sign a P2PKH input (its amount is not signed)",
                ));
            }
            let h = cache
                .legacy_signature_hash(i, spk, EcdsaSighashType::All.to_u32())
                .map_err(|e| sighash_err(&e))?;
            (Script::P2pkh, None, h.to_byte_array())
        } else {
            return Err(PayloadError::new(
                field,
                "spends a script that is not P2WPKH, P2SH-P2WPKH or P2PKH of the named key",
            ));
        };
        planned.push(Planned {
            input: i,
            pubkey: pk,
            script,
            redeem,
            digest,
            path,
        });
    }
    if planned.is_empty() {
        return Err(PayloadError::new(
            FIELD,
            format!(
                "no input's bip32_derivation names this key (fingerprint {})",
                xpub.fingerprint()
            ),
        ));
    }
    Ok(planned)
}

use bitcoin::hashes::Hash as _;

fn parse(bytes: &[u8]) -> Result<Psbt, PayloadError> {
    Psbt::deserialize(bytes)
        .map_err(|e| PayloadError::new(FIELD, format!("not a BIP-174 PSBT: {e}")))
}

/// Virtual bytes of a signed input of each type (72-byte signatures).
fn input_vbytes(script: Option<Script>) -> u64 {
    match script {
        Some(Script::P2wpkh) => 68,
        Some(Script::P2shP2wpkh) => 91,
        Some(Script::P2pkh) | None => 148,
    }
}

pub(super) fn decode_psbt(bytes: &[u8], key: &KeyView<'_>) -> Result<Decoded, PayloadError> {
    let psbt = parse(bytes)?;
    let planned = plan(&psbt, key)?;
    let secp = Secp256k1::verification_only();
    let xpub = master(key)?;
    let tx = &psbt.unsigned_tx;
    let mut inputs = Vec::with_capacity(tx.input.len());
    for (i, txin) in tx.input.iter().enumerate() {
        inputs.push(BtcInput {
            outpoint: txin.previous_output.to_string(),
            amount_sat: psbt.spend_utxo(i).ok().map(|o| o.value.to_sat()),
            ours: planned.iter().any(|p| p.input == i),
        });
    }
    let mut outputs = Vec::with_capacity(tx.output.len());
    for (i, out) in tx.output.iter().enumerate() {
        let field = format!("{FIELD}.outputs[{i}].bip32_derivation");
        let change_path = match psbt.outputs.get(i) {
            Some(o) => match named_child(&secp, &xpub, &o.bip32_derivation, &field)? {
                Some((pk, path)) => {
                    let (a, b, c) = spks(&pk);
                    [a, b, c].contains(&out.script_pubkey).then_some(path)
                }
                None => None,
            },
            None => None,
        };
        outputs.push(BtcOutput {
            script_pubkey: out.script_pubkey.to_bytes(),
            amount_sat: out.value.to_sat(),
            change: change_path.is_some(),
            change_path,
        });
    }
    let fee_sat = psbt.fee().ok().map(Amount::to_sat);
    let base = tx.base_size() as u64;
    let vsize = tx.input.iter().enumerate().fold(base, |acc, (i, _)| {
        let script = planned.iter().find(|p| p.input == i).map(|p| p.script);
        acc.saturating_add(input_vbytes(script)).saturating_sub(41)
    });
    let facts = BtcTx {
        inputs,
        outputs,
        fee_sat,
        vsize,
    };
    Ok(Decoded {
        kind: Kind::BitcoinPsbt,
        targets: planned
            .iter()
            .map(|p| Target {
                digest: p.digest,
                path: p.path.clone(),
                replay: Some(super::Replay {
                    scope: format!("#btc:{}", tx.input[p.input].previous_output),
                    position: 0,
                }),
            })
            .collect(),
        summary: facts.summary(),
        content: Content::Bitcoin(facts),
    })
}

impl BtcTx {
    /// Satoshis paid to outputs that are not change.
    pub fn leaving_sat(&self) -> u64 {
        self.outputs
            .iter()
            .filter(|o| !o.change)
            .fold(0u64, |a, o| a.saturating_add(o.amount_sat))
    }

    pub fn summary(&self) -> String {
        let ours = self.inputs.iter().filter(|i| i.ours).count();
        let change = self.outputs.iter().filter(|o| o.change).count();
        format!(
            "Bitcoin PSBT signing {ours} of {} inputs: {} sat to {} outputs{}, fee {}",
            self.inputs.len(),
            self.leaving_sat(),
            self.outputs.len().saturating_sub(change),
            if change > 0 {
                format!(" (and {change} change)")
            } else {
                String::new()
            },
            self.fee_sat
                .map(|f| format!("{f} sat"))
                .unwrap_or_else(|| "unknown (an input's amount is missing)".into())
        )
    }
}

/// A PSBT's binary form from its base64 text.
pub fn psbt_from_base64(text: &str) -> Result<Vec<u8>, String> {
    text.parse::<Psbt>()
        .map(|p| p.serialize())
        .map_err(|e| e.to_string())
}

/// A script's address on `network` ("bitcoin", "testnet", "signet",
/// "regtest"), for messages; the hex of the script when it has none.
pub fn address_of(script: &[u8], network: &str) -> String {
    let net = bitcoin::Network::from_str(network).unwrap_or(bitcoin::Network::Bitcoin);
    bitcoin::Address::from_script(bitcoin::Script::from_bytes(script), net)
        .map(|a| a.to_string())
        .unwrap_or_else(|_| format!("script {}", hex::encode(script)))
}

/// The output script of an address on `network`.
pub fn script_of(address: &str, network: &str) -> Result<Vec<u8>, String> {
    let net =
        bitcoin::Network::from_str(network).map_err(|e| format!("network {network:?}: {e}"))?;
    bitcoin::Address::from_str(address)
        .map_err(|e| format!("address {address:?}: {e}"))?
        .require_network(net)
        .map(|a| a.script_pubkey().to_bytes())
        .map_err(|e| format!("address {address:?}: {e}"))
}

pub(super) fn finish_psbt(
    bytes: &[u8],
    key: &KeyView<'_>,
    sigs: &[Sig],
) -> Result<Finished, PayloadError> {
    let mut psbt = parse(bytes)?;
    let planned = plan(&psbt, key)?;
    if planned.len() != sigs.len() {
        return Err(PayloadError::new(
            FIELD,
            format!(
                "{} inputs to sign, {} signatures",
                planned.len(),
                sigs.len()
            ),
        ));
    }
    let secp = Secp256k1::verification_only();
    let mut signed = Vec::with_capacity(planned.len());
    for (p, s) in planned.iter().zip(sigs) {
        let mut compact = [0u8; 64];
        compact[..32].copy_from_slice(&s.r);
        compact[32..].copy_from_slice(&s.s);
        let sig = secp256k1::ecdsa::Signature::from_compact(&compact)
            .map_err(|e| PayloadError::new("signature", e))?;
        let msg = secp256k1::Message::from_digest(p.digest);
        secp.verify_ecdsa(&msg, &sig, &p.pubkey).map_err(|e| {
            PayloadError::new(
                format!("{FIELD}.inputs[{}]", p.input),
                format!("signature does not verify: {e}"),
            )
        })?;
        let sig = bitcoin::ecdsa::Signature::sighash_all(sig);
        if let Some(input) = psbt.inputs.get_mut(p.input) {
            input
                .partial_sigs
                .insert(bitcoin::PublicKey::new(p.pubkey), sig);
        }
        signed.push((p, sig));
    }
    let with_sigs = psbt.serialize();
    let mut out = Finished {
        psbt: with_sigs,
        ..Finished::default()
    };
    // Finalize (BIP-174's finalizer role) only when this key signs every input.
    if planned.len() == psbt.inputs.len() {
        for (p, sig) in signed {
            let Some(input) = psbt.inputs.get_mut(p.input) else {
                continue;
            };
            let key = bitcoin::PublicKey::new(p.pubkey);
            match p.script {
                Script::P2wpkh => {
                    input.final_script_witness = Some(Witness::p2wpkh(&sig, &p.pubkey));
                }
                Script::P2shP2wpkh => {
                    input.final_script_witness = Some(Witness::p2wpkh(&sig, &p.pubkey));
                    let redeem = p.redeem.clone().unwrap_or_default();
                    let push = PushBytesBuf::try_from(redeem.into_bytes())
                        .map_err(|e| PayloadError::new(FIELD, e))?;
                    input.final_script_sig = Some(
                        bitcoin::script::Builder::new()
                            .push_slice(push)
                            .into_script(),
                    );
                }
                Script::P2pkh => {
                    let push = PushBytesBuf::try_from(sig.to_vec())
                        .map_err(|e| PayloadError::new(FIELD, e))?;
                    input.final_script_sig = Some(
                        bitcoin::script::Builder::new()
                            .push_slice(push)
                            .push_key(&key)
                            .into_script(),
                    );
                }
            }
            input.partial_sigs.clear();
            input.bip32_derivation.clear();
            input.redeem_script = None;
            input.sighash_type = None;
        }
        let tx = psbt.extract_tx_unchecked_fee_rate();
        out.signed = bitcoin::consensus::encode::serialize(&tx);
        let txid = tx.compute_txid();
        out.tx_hash = hex::decode(txid.to_string()).unwrap_or_default();
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests;
