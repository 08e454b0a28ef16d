//! Ethereum: unsigned EIP-2718 transactions (legacy with an EIP-155 chain
//! id, EIP-2930, EIP-1559), EIP-191 `personal_sign` messages and EIP-712
//! typed data, decoded and hashed with the alloy crates.
//!
//! A transaction is accepted only in its canonical signing encoding (alloy
//! encodes the decoded transaction again and the bytes must be the same),
//! so the policy reads exactly the transaction whose hash is signed.

use alloy_consensus::{SignableTransaction, Transaction, TypedTransaction};
use alloy_dyn_abi::TypedData;
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{Address, Signature, B256, U256};
use alloy_sol_types::SolCall;

use super::{Content, Decoded, Finished, KeyView, Kind, PayloadError, Sig, Target};
use crate::domain::DerivationPath;

alloy_sol_types::sol! {
    /// ERC-20 `transfer`.
    function transfer(address to, uint256 amount) external returns (bool);
    /// ERC-20 `approve`.
    function approve(address spender, uint256 amount) external returns (bool);
}

/// What an Ethereum transaction does, for the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EthTx {
    /// 0 legacy, 1 EIP-2930, 2 EIP-1559.
    pub tx_type: u8,
    pub chain_id: u64,
    pub nonce: u64,
    /// The recipient; `None` creates a contract.
    pub to: Option<Address>,
    /// Wei sent.
    pub value: U256,
    pub gas_limit: u64,
    /// The gas price of legacy and EIP-2930 transactions.
    pub max_fee_per_gas: u128,
    /// EIP-1559 only.
    pub max_priority_fee_per_gas: Option<u128>,
    /// The call's 4-byte function selector, when the data has one.
    pub selector: Option<[u8; 4]>,
    pub data_len: usize,
    /// An ERC-20 `transfer` or `approve` to the contract `to`.
    pub token: Option<TokenCall>,
}

/// A decoded ERC-20 call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenCall {
    Transfer { to: Address, amount: U256 },
    Approve { spender: Address, amount: U256 },
}

/// An EIP-712 domain and the message's primary type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypedDomain {
    pub name: Option<String>,
    pub chain_id: Option<U256>,
    pub verifying_contract: Option<Address>,
    pub primary_type: String,
}

const FIELD_TX: &str = "eth_transaction";

fn decode_unsigned(bytes: &[u8]) -> Result<TypedTransaction, PayloadError> {
    let mut buf = bytes;
    let tx = TypedTransaction::decode_unsigned(&mut buf).map_err(|e| {
        PayloadError::new(
            FIELD_TX,
            format!("not an unsigned EIP-2718 transaction: {e}"),
        )
    })?;
    if !buf.is_empty() {
        return Err(PayloadError::new(
            FIELD_TX,
            format!("{} bytes follow the transaction", buf.len()),
        ));
    }
    match &tx {
        TypedTransaction::Legacy(t) if t.chain_id.is_none() => {
            return Err(PayloadError::new(
                FIELD_TX,
                "a legacy transaction must carry an EIP-155 chain id (no replay across chains)",
            ))
        }
        TypedTransaction::Legacy(_)
        | TypedTransaction::Eip2930(_)
        | TypedTransaction::Eip1559(_) => {}
        other => {
            return Err(PayloadError::new(
                FIELD_TX,
                format!(
                    "transaction type {} is not accepted (legacy, EIP-2930 and EIP-1559 are)",
                    u8::from(other.tx_type())
                ),
            ))
        }
    }
    if tx.encoded_for_signing() != bytes {
        return Err(PayloadError::new(
            FIELD_TX,
            "not in canonical signing encoding (re-encoding the decoded transaction gives other \
             bytes)",
        ));
    }
    Ok(tx)
}

pub(super) fn decode_tx(bytes: &[u8], key: &KeyView<'_>) -> Result<Decoded, PayloadError> {
    let path = key.path;
    let tx = decode_unsigned(bytes)?;
    let chain_id = tx
        .chain_id()
        .ok_or_else(|| PayloadError::new(FIELD_TX, "carries no chain id"))?;
    let input = tx.input();
    let selector = input.get(..4).and_then(|s| <[u8; 4]>::try_from(s).ok());
    let token = match (tx.to(), selector) {
        (Some(_), Some(sel)) if sel == transferCall::SELECTOR => {
            let c = transferCall::abi_decode_validate(input).map_err(|e| {
                PayloadError::new("eth_transaction.data", format!("ERC-20 transfer: {e}"))
            })?;
            Some(TokenCall::Transfer {
                to: c.to,
                amount: c.amount,
            })
        }
        (Some(_), Some(sel)) if sel == approveCall::SELECTOR => {
            let c = approveCall::abi_decode_validate(input).map_err(|e| {
                PayloadError::new("eth_transaction.data", format!("ERC-20 approve: {e}"))
            })?;
            Some(TokenCall::Approve {
                spender: c.spender,
                amount: c.amount,
            })
        }
        _ => None,
    };
    let facts = EthTx {
        tx_type: u8::from(tx.tx_type()),
        chain_id,
        nonce: tx.nonce(),
        to: tx.to(),
        value: tx.value(),
        gas_limit: tx.gas_limit(),
        max_fee_per_gas: tx.max_fee_per_gas(),
        max_priority_fee_per_gas: tx.max_priority_fee_per_gas(),
        selector,
        data_len: input.len(),
        token,
    };
    let digest = tx.signature_hash();
    // The sender is the key at the path: its nonces are the replay scope.
    let (child, _) =
        crate::bip32::derive_public(key.key_type, key.public_key, key.chain_code, path)
            .map_err(|e| PayloadError::new("key", e))?;
    let sender = crate::bip32::eth_address(&child).map_err(|e| PayloadError::new("key", e))?;
    Ok(Decoded {
        kind: Kind::EthTransaction,
        targets: vec![Target {
            digest: digest.0,
            path: path.clone(),
            replay: Some(super::Replay {
                scope: format!(
                    "#eth:{chain_id}:{}",
                    sender.trim_start_matches("0x").to_ascii_lowercase()
                ),
                position: facts.nonce,
            }),
        }],
        summary: facts.summary(),
        content: Content::EthTx(facts),
    })
}

/// Wei in ether, with up to 18 decimals and no trailing zeros.
pub fn ether(wei: U256) -> String {
    let s = alloy_primitives::utils::format_ether(wei);
    let s = s.trim_end_matches('0');
    s.strip_suffix('.').unwrap_or(s).to_owned()
}

fn gwei(wei: u128) -> String {
    alloy_primitives::utils::format_units(wei, "gwei")
        .map(|s| {
            let s = s.trim_end_matches('0');
            s.strip_suffix('.').unwrap_or(s).to_owned()
        })
        .unwrap_or_else(|_| format!("{wei} wei"))
}

impl EthTx {
    /// One line in plain words.
    pub fn summary(&self) -> String {
        let kind = match self.tx_type {
            0 => "legacy",
            1 => "EIP-2930",
            _ => "EIP-1559",
        };
        let what = match (&self.to, &self.token) {
            (None, _) => format!(
                "create a contract ({} bytes of code) with {} ETH",
                self.data_len,
                ether(self.value)
            ),
            (Some(token), Some(TokenCall::Transfer { to, amount })) => format!(
                "ERC-20 transfer of {amount} units of token {token} to {to}{}",
                eth_also(self.value)
            ),
            (Some(token), Some(TokenCall::Approve { spender, amount })) => format!(
                "ERC-20 approve of {amount} units of token {token} for {spender}{}",
                eth_also(self.value)
            ),
            (Some(to), None) if self.data_len == 0 => {
                format!("send {} ETH to {to}", ether(self.value))
            }
            (Some(to), None) => format!(
                "call {to}{} with {} bytes of data and {} ETH",
                self.selector
                    .map(|s| format!(" (selector 0x{})", hex::encode(s)))
                    .unwrap_or_default(),
                self.data_len,
                ether(self.value)
            ),
        };
        let fees = match self.max_priority_fee_per_gas {
            Some(tip) => format!(
                "max fee {} gwei, tip {} gwei",
                gwei(self.max_fee_per_gas),
                gwei(tip)
            ),
            None => format!("gas price {} gwei", gwei(self.max_fee_per_gas)),
        };
        format!(
            "{kind} transaction on chain {}, nonce {}: {what}; gas limit {}, {fees}",
            self.chain_id, self.nonce, self.gas_limit
        )
    }
}

fn eth_also(value: U256) -> String {
    if value.is_zero() {
        String::new()
    } else {
        format!(", also sending {} ETH", ether(value))
    }
}

pub(super) fn decode_message(bytes: &[u8], path: &DerivationPath) -> Decoded {
    let digest = alloy_primitives::eip191_hash_message(bytes);
    let shown = match std::str::from_utf8(bytes) {
        Ok(s) if s.chars().all(|c| !c.is_control() || c == '\n') => {
            let mut s: String = s.chars().take(60).collect();
            if s.len() < bytes.len() {
                s.push('…');
            }
            format!("{s:?}")
        }
        _ => format!("0x{}", hex::encode(&bytes[..bytes.len().min(32)])),
    };
    Decoded {
        kind: Kind::EthMessage,
        targets: vec![Target {
            digest: digest.0,
            path: path.clone(),
            replay: None,
        }],
        summary: format!("EIP-191 personal message of {} bytes: {shown}", bytes.len()),
        content: Content::EthMessage { len: bytes.len() },
    }
}

pub(super) fn decode_typed_data(
    bytes: &[u8],
    path: &DerivationPath,
) -> Result<Decoded, PayloadError> {
    let data: TypedData = serde_json::from_slice(bytes)
        .map_err(|e| PayloadError::new("eth_typed_data", format!("not EIP-712 typed data: {e}")))?;
    let digest: B256 = data
        .eip712_signing_hash()
        .map_err(|e| PayloadError::new("eth_typed_data", format!("cannot hash: {e}")))?;
    let d = &data.domain;
    let domain = TypedDomain {
        name: d.name.as_ref().map(|n| n.to_string()),
        chain_id: d.chain_id,
        verifying_contract: d.verifying_contract,
        primary_type: data.primary_type.clone(),
    };
    Ok(Decoded {
        kind: Kind::EthTypedData,
        targets: vec![Target {
            digest: digest.0,
            path: path.clone(),
            replay: None,
        }],
        summary: domain.summary(),
        content: Content::EthTypedData(domain),
    })
}

impl TypedDomain {
    pub fn summary(&self) -> String {
        format!(
            "EIP-712 {} for domain {:?}{}{}",
            self.primary_type,
            self.name.as_deref().unwrap_or(""),
            self.chain_id
                .map(|c| format!(" on chain {c}"))
                .unwrap_or_default(),
            self.verifying_contract
                .map(|c| format!(" (contract {c})"))
                .unwrap_or_default(),
        )
    }
}

fn alloy_sig(sig: &Sig) -> Signature {
    Signature::new(
        U256::from_be_bytes(sig.r),
        U256::from_be_bytes(sig.s),
        sig.recovery_id & 1 == 1,
    )
}

/// The signed transaction. `sig` was verified against the transaction's
/// signing hash and its public key, recovery id included (see `finish`),
/// so once that key is the key at the path, the sender is its address: it
/// is not recovered again here (an elliptic-curve recovery on every
/// transaction's path).
pub(super) fn finish_tx(
    bytes: &[u8],
    key: &KeyView<'_>,
    sig: &Sig,
) -> Result<Finished, PayloadError> {
    let tx = decode_unsigned(bytes)?;
    let (child, _) =
        crate::bip32::derive_public(key.key_type, key.public_key, key.chain_code, key.path)
            .map_err(|e| PayloadError::new("key", e))?;
    if child != sig.public_key {
        return Err(PayloadError::new(
            "signature",
            "made under another public key than the key at the path",
        ));
    }
    let from = crate::bip32::eth_address(&sig.public_key)
        .map_err(|e| PayloadError::new("signature", e))?;
    let envelope = tx.into_envelope(alloy_sig(sig));
    Ok(Finished {
        signed: envelope.encoded_2718(),
        tx_hash: envelope.tx_hash().0.to_vec(),
        sender: from,
        signature: rsv27(sig),
        psbt: Vec::new(),
    })
}

/// r || s || v with v = 27 + y parity, as `personal_sign` and
/// `eth_signTypedData_v4` return.
fn rsv27(sig: &Sig) -> Vec<u8> {
    let mut out = Vec::with_capacity(65);
    out.extend_from_slice(&sig.r);
    out.extend_from_slice(&sig.s);
    out.push(27 + (sig.recovery_id & 1));
    out
}

pub(super) fn finish_message(sig: &Sig) -> Finished {
    Finished {
        signature: rsv27(sig),
        ..Finished::default()
    }
}

#[cfg(test)]
pub(crate) mod tests;
