//! Ethereum values as a policy file and tools write them (amounts, addresses,
//! selectors), and the small transactions tools build, so that no module
//! outside `payload` names the alloy crates.

use alloy_consensus::transaction::SignerRecoverable;
use alloy_consensus::SignableTransaction;
use alloy_eips::eip2718::Decodable2718;

pub use alloy_primitives::{Address, U256};

/// Wei from "2.5 ether", "30 gwei" or "12345" (wei).
pub fn parse_wei(s: &str) -> Result<U256, String> {
    let mut parts = s.split_whitespace();
    let (num, unit) = (parts.next().unwrap_or(""), parts.next().unwrap_or("wei"));
    if parts.next().is_some() || !matches!(unit, "wei" | "gwei" | "ether") {
        return Err(format!(
            "{s:?}: expected a number and wei, gwei or ether (\"2.5 ether\")"
        ));
    }
    alloy_primitives::utils::parse_units(num, unit)
        .map(|u| u.get_absolute())
        .map_err(|e| format!("{s:?}: {e}"))
}

/// A whole number (token units).
pub fn parse_u256(s: &str) -> Result<U256, String> {
    s.parse::<U256>()
        .map_err(|e| format!("{s:?}: expected a whole number: {e}"))
}

pub fn parse_address(s: &str) -> Result<Address, String> {
    s.parse::<Address>()
        .map_err(|e| format!("address {s:?}: {e}"))
}

/// A 4-byte function selector, "0xa9059cbb".
pub fn parse_selector(s: &str) -> Result<[u8; 4], String> {
    let h = s.strip_prefix("0x").unwrap_or(s);
    hex::decode(h)
        .ok()
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .ok_or_else(|| format!("selector {s:?}: expected 4 bytes of hex, e.g. 0xa9059cbb"))
}

/// An unsigned EIP-1559 transfer of `wei` to `to`, in its signing encoding
/// (what `thresig bench` signs).
pub fn transfer(chain_id: u64, nonce: u64, to: &str, wei: u64) -> Result<Vec<u8>, String> {
    Ok(alloy_consensus::TxEip1559 {
        chain_id,
        nonce,
        gas_limit: 21_000,
        max_fee_per_gas: 20_000_000_000,
        max_priority_fee_per_gas: 1_000_000_000,
        to: alloy_primitives::TxKind::Call(parse_address(to)?),
        value: U256::from(wei),
        access_list: Default::default(),
        input: Default::default(),
    }
    .encoded_for_signing())
}

/// The checksummed address that signed a signed EIP-2718 transaction.
pub fn signer_of(signed: &[u8]) -> Result<String, String> {
    let env = alloy_consensus::TxEnvelope::decode_2718(&mut &signed[..])
        .map_err(|e| format!("signed transaction does not decode: {e}"))?;
    env.recover_signer()
        .map(|a| a.to_checksum(None))
        .map_err(|e| format!("no signer: {e}"))
}
