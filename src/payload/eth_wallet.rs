//! Transactions as wallets send them over Ethereum JSON-RPC
//! (`eth_signTransaction`, `eth_sendTransaction`): the transaction object's
//! fields read from JSON, and the unsigned EIP-2718 encoding built with
//! alloy once every field is known (what `thresig eth-rpc` signs as an
//! `eth_transaction` payload).

use alloy_consensus::{SignableTransaction, TxEip1559, TxLegacy};
use alloy_primitives::{Address, Bytes, TxKind, U256};
use serde_json::Value;

/// A wallet's transaction object. A field left out is `None`: the caller
/// fills it (nonce, gas, fees, chain id) before `unsigned`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WalletTx {
    pub from: Option<Address>,
    pub to: Option<Address>,
    pub value: U256,
    pub data: Vec<u8>,
    pub nonce: Option<u64>,
    pub gas: Option<u64>,
    /// Legacy (EIP-155) when set and no EIP-1559 fee is.
    pub gas_price: Option<u128>,
    pub max_fee_per_gas: Option<u128>,
    pub max_priority_fee_per_gas: Option<u128>,
    pub chain_id: Option<u64>,
}

/// A JSON-RPC quantity: "0x"-prefixed hex (as the spec says), or a decimal
/// number or string (as some libraries send).
pub fn quantity(v: &Value, field: &str) -> Result<U256, String> {
    let bad = || format!("{field}: {v} is not a quantity (0x-prefixed hex)");
    match v {
        Value::String(s) => match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
            Some("") => Ok(U256::ZERO),
            Some(hex) => U256::from_str_radix(hex, 16).map_err(|_| bad()),
            None => U256::from_str_radix(s, 10).map_err(|_| bad()),
        },
        Value::Number(n) => n.as_u64().map(U256::from).ok_or_else(bad),
        _ => Err(bad()),
    }
}

fn small<T: TryFrom<U256>>(v: &Value, field: &str) -> Result<T, String> {
    T::try_from(quantity(v, field)?).map_err(|_| format!("{field}: {v} is too large"))
}

fn address(v: &Value, field: &str) -> Result<Address, String> {
    v.as_str()
        .and_then(|s| s.parse::<Address>().ok())
        .ok_or_else(|| format!("{field}: {v} is not an address"))
}

/// The "0x"-prefixed hex of a quantity.
pub fn to_quantity(v: u128) -> String {
    format!("{v:#x}")
}

impl WalletTx {
    /// Reads a transaction object; unknown fields are ignored, as nodes do.
    pub fn from_json(v: &Value) -> Result<Self, String> {
        let o = v
            .as_object()
            .ok_or("the transaction must be a JSON object")?;
        let get = |k: &str| o.get(k).filter(|v| !v.is_null());
        if get("accessList")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
        {
            return Err("accessList: access lists are not supported yet".into());
        }
        let data = match get("data").or_else(|| get("input")) {
            None => Vec::new(),
            Some(d) => {
                let s = d.as_str().ok_or("data: expected 0x-prefixed hex")?;
                hex::decode(s.trim_start_matches("0x"))
                    .map_err(|e| format!("data: not hex: {e}"))?
            }
        };
        Ok(Self {
            from: get("from").map(|a| address(a, "from")).transpose()?,
            to: get("to").map(|a| address(a, "to")).transpose()?,
            value: get("value")
                .map(|x| quantity(x, "value"))
                .transpose()?
                .unwrap_or_default(),
            data,
            nonce: get("nonce").map(|x| small(x, "nonce")).transpose()?,
            gas: get("gas")
                .or_else(|| get("gasLimit"))
                .map(|x| small(x, "gas"))
                .transpose()?,
            gas_price: get("gasPrice").map(|x| small(x, "gasPrice")).transpose()?,
            max_fee_per_gas: get("maxFeePerGas")
                .map(|x| small(x, "maxFeePerGas"))
                .transpose()?,
            max_priority_fee_per_gas: get("maxPriorityFeePerGas")
                .map(|x| small(x, "maxPriorityFeePerGas"))
                .transpose()?,
            chain_id: get("chainId").map(|x| small(x, "chainId")).transpose()?,
        })
    }

    /// Whether it is a legacy (gas price) transaction.
    pub fn is_legacy(&self) -> bool {
        self.gas_price.is_some() && self.max_fee_per_gas.is_none()
    }

    /// The call object for `eth_estimateGas`.
    pub fn call_json(&self) -> Value {
        let mut o = serde_json::Map::new();
        if let Some(f) = self.from {
            o.insert("from".into(), f.to_checksum(None).into());
        }
        if let Some(t) = self.to {
            o.insert("to".into(), t.to_checksum(None).into());
        }
        o.insert("value".into(), format!("{:#x}", self.value).into());
        o.insert(
            "data".into(),
            format!("0x{}", hex::encode(&self.data)).into(),
        );
        Value::Object(o)
    }

    /// The unsigned EIP-2718 signing encoding: EIP-1559, or legacy with the
    /// EIP-155 chain id. Every field must be known by now.
    pub fn unsigned(&self) -> Result<Vec<u8>, String> {
        let missing = |f: &str| format!("{f} is not known (give it, or run with --upstream)");
        let chain_id = self.chain_id.ok_or_else(|| missing("chainId"))?;
        let nonce = self.nonce.ok_or_else(|| missing("nonce"))?;
        let gas_limit = self.gas.ok_or_else(|| missing("gas"))?;
        let to = self.to.map_or(TxKind::Create, TxKind::Call);
        let input = Bytes::from(self.data.clone());
        if self.is_legacy() {
            return Ok(TxLegacy {
                chain_id: Some(chain_id),
                nonce,
                gas_price: self.gas_price.unwrap_or_default(),
                gas_limit,
                to,
                value: self.value,
                input,
            }
            .encoded_for_signing());
        }
        Ok(TxEip1559 {
            chain_id,
            nonce,
            gas_limit,
            max_fee_per_gas: self
                .max_fee_per_gas
                .ok_or_else(|| missing("maxFeePerGas"))?,
            max_priority_fee_per_gas: self
                .max_priority_fee_per_gas
                .ok_or_else(|| missing("maxPriorityFeePerGas"))?,
            to,
            value: self.value,
            access_list: Default::default(),
            input,
        }
        .encoded_for_signing())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_wallet_transaction_becomes_the_eip1559_or_legacy_encoding() {
        let v = serde_json::json!({
            "from": "0x9d8A62f656a8d1615C1294fd71e9CFb3E4855A4F",
            "to": "0x3535353535353535353535353535353535353535",
            "value": "0xde0b6b3a7640000",
            "gas": "0x5208",
            "gasPrice": "0x4a817c800",
            "nonce": "0x9",
            "chainId": "0x1",
        });
        let tx = WalletTx::from_json(&v).unwrap();
        assert!(tx.is_legacy());
        // The EIP-155 example: its signing hash is keccak256 of these bytes.
        let hash = alloy_primitives::keccak256(tx.unsigned().unwrap());
        assert_eq!(
            hex::encode(hash),
            "daf5a779ae972f972197303d7b574746c7ef83eadac0f2791ad23db92e4c8e53"
        );
        let mut v = v;
        v["maxFeePerGas"] = "0x10".into();
        v["maxPriorityFeePerGas"] = "0x1".into();
        let tx = WalletTx::from_json(&v).unwrap();
        assert!(!tx.is_legacy());
        assert_eq!(tx.unsigned().unwrap()[0], 2, "an EIP-1559 envelope");
        let mut missing = tx.clone();
        missing.nonce = None;
        assert!(missing.unsigned().unwrap_err().contains("nonce"));
        assert!(WalletTx::from_json(&serde_json::json!({"value": "lots"}))
            .unwrap_err()
            .contains("value"));
        assert!(WalletTx::from_json(&serde_json::json!({"accessList": [{}]})).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_json_never_panics(s in ".{0,200}") {
            if let Ok(v) = serde_json::from_str::<Value>(&s) {
                let _ = WalletTx::from_json(&v).map(|t| t.unsigned());
            }
        }

        #[test]
        fn arbitrary_fields_never_panic(
            nonce in any::<u64>(), gas in any::<u64>(), value in ".{0,70}", data in ".{0,70}", to in ".{0,50}",
        ) {
            let v = serde_json::json!({
                "nonce": nonce, "gas": gas, "value": value, "data": data, "to": to, "chainId": "0x1",
                "maxFeePerGas": "0x1", "maxPriorityFeePerGas": "0x1",
            });
            let _ = WalletTx::from_json(&v).map(|t| t.unsigned());
        }
    }
}
