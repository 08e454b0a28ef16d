//! Content policy: what a client may sign, read from the decoded payload
//! (`crate::payload`) by every node. Default deny: a client rule allows
//! typed payloads only of the kinds it lists, and of those only what its
//! `eth`, `bitcoin` and `cosmos` tables name. A rule that lists payload
//! kinds allows raw 32-byte digests only with `raw_digest = true`; a rule
//! that lists none allows raw digests (as before typed payloads existed).
//!
//! ```toml
//! [[client]]
//! name = "treasury-app"
//! keys = ["treasury"]
//! paths = ["m"]
//! payloads = ["eth_transaction", "eth_message", "eth_typed_data"]
//! raw_digest = false                  # blind signing off for this client
//!
//! [client.eth]
//! chain_ids = [1, 11155111]
//! max_value = "2.5 ether"             # per transaction (wei, gwei or ether)
//! value_per_24h = "10 ether"          # per chain, rolling 24 hours, every node
//! max_fee_per_gas = "200 gwei"
//! max_priority_fee_per_gas = "5 gwei"
//! max_gas = 500000
//! contract_creation = false
//! recipients = [{ address = "0x1111111111111111111111111111111111111111", label = "cold wallet" }]
//! contracts = [{ address = "0x2222222222222222222222222222222222222222", selectors = ["0x12345678"], label = "router" }]
//! tokens = [{ address = "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48", label = "USDC", max_amount = "1000000000", amount_per_24h = "5000000000" }]
//! typed_data_domains = [{ name = "Permit2", chain_id = 1, verifying_contract = "0x000000000022D473030F116dDEE9F6B43aC78BA3" }]
//!
//! [client.bitcoin]
//! network = "bitcoin"                 # bitcoin, testnet, signet or regtest
//! destinations = [{ address = "bc1q...", label = "exchange" }]
//! max_amount_sat = 10000000           # leaving per transaction (change excluded)
//! amount_per_24h_sat = 50000000       # leaving in any 24 hours (change excluded)
//! max_fee_sat = 50000
//! max_fee_rate = 100.0                # sat/vB
//!
//! [client.cosmos]
//! chain_ids = ["cosmoshub-4"]
//! messages = ["/cosmos.bank.v1beta1.MsgSend"]
//! recipients = [{ address = "cosmos1...", label = "exchange" }]
//! max_amount = { uatom = "5000000" }  # per MsgSend and denom
//! amount_per_24h = { uatom = "20000000" } # MsgSend amounts per denom, 24 hours
//! max_fee = { uatom = "20000" }       # per transaction and denom
//! ```

use std::collections::BTreeMap;

pub use crate::payload::eth_values::parse_wei;
use crate::payload::eth_values::{parse_address, parse_selector, parse_u256};
use serde::Deserialize;

use crate::payload::{Content, Decoded, Kind};

/// An allowed counterparty and what to call it in messages.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Labeled {
    pub address: String,
    #[serde(default)]
    pub label: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EthRule {
    #[serde(default)]
    pub chain_ids: Vec<u64>,
    #[serde(default)]
    pub recipients: Vec<Labeled>,
    pub max_value: Option<String>,
    /// The most wei all transactions of the client with the key may send on
    /// one chain in any 24 hours.
    pub value_per_24h: Option<String>,
    pub max_fee_per_gas: Option<String>,
    pub max_priority_fee_per_gas: Option<String>,
    pub max_gas: Option<u64>,
    #[serde(default)]
    pub contract_creation: bool,
    #[serde(default)]
    pub contracts: Vec<EthContract>,
    #[serde(default)]
    pub tokens: Vec<EthToken>,
    #[serde(default)]
    pub typed_data_domains: Vec<DomainRule>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EthContract {
    pub address: String,
    pub selectors: Vec<String>,
    #[serde(default)]
    pub label: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EthToken {
    pub address: String,
    #[serde(default)]
    pub label: String,
    /// The most token units one `transfer` or `approve` may move (a whole
    /// number in the token's smallest unit).
    pub max_amount: Option<String>,
    /// The most token units `transfer` and `approve` calls may move in any
    /// 24 hours.
    pub amount_per_24h: Option<String>,
}

/// An EIP-712 domain: every field given must match.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainRule {
    pub name: Option<String>,
    pub chain_id: Option<u64>,
    pub verifying_contract: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BitcoinRule {
    pub network: String,
    #[serde(default)]
    pub destinations: Vec<Labeled>,
    pub max_amount_sat: Option<u64>,
    /// The most satoshis leaving (change excluded) in any 24 hours.
    pub amount_per_24h_sat: Option<u64>,
    pub max_fee_sat: Option<u64>,
    pub max_fee_rate: Option<f64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CosmosRule {
    #[serde(default)]
    pub chain_ids: Vec<String>,
    #[serde(default)]
    pub messages: Vec<String>,
    #[serde(default)]
    pub recipients: Vec<Labeled>,
    #[serde(default)]
    pub max_amount: BTreeMap<String, String>,
    /// The most each denom's `MsgSend` amounts may total in any 24 hours.
    #[serde(default)]
    pub amount_per_24h: BTreeMap<String, String>,
    /// The most fee per denom; a fee in a denom not named is refused.
    #[serde(default)]
    pub max_fee: BTreeMap<String, String>,
}

/// The content parts of a client rule.
#[derive(Debug, Clone, Copy)]
pub struct ContentRule<'a> {
    /// The rule's path prefixes (a PSBT's change must be under one).
    pub paths: &'a [String],
    pub payloads: Option<&'a [String]>,
    pub raw_digest: Option<bool>,
    pub eth: Option<&'a EthRule>,
    pub bitcoin: Option<&'a BitcoinRule>,
    pub cosmos: Option<&'a CosmosRule>,
}

/// A content refusal: the knob that refused and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub knob: &'static str,
    pub reason: String,
}

/// How far back a `*_per_24h` limit counts.
pub const WINDOW_SECS: u64 = 86_400;

/// What one payload spends against one rolling-window limit. Each node
/// derives it from the payload and its own policy; the window itself is the
/// spends of the same client, key and `scope` that this node admitted or
/// heard of by gossip (`storage::windows`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowSpend {
    pub knob: &'static str,
    /// What is counted: `eth:<chain>:value`, `eth:<chain>:token:<address>`,
    /// `bitcoin:<network>` or `cosmos:<chain>:<denom>`.
    pub scope: String,
    /// The same in words, for messages.
    pub what: String,
    pub amount: u128,
    pub limit: u128,
}

pub(super) fn spend(
    knob: &'static str,
    scope: String,
    what: String,
    amount: u128,
    limit: u128,
) -> Result<WindowSpend, Refusal> {
    if amount > limit {
        return Err(Refusal {
            knob,
            reason: format!("{what}: {amount} alone is over its 24-hour limit {limit}"),
        });
    }
    Ok(WindowSpend {
        knob,
        scope,
        what,
        amount,
        limit,
    })
}

/// A limit that must be a whole number below 2^128.
pub(super) fn parse_limit(knob: &'static str, v: &str) -> Result<u128, Refusal> {
    v.trim().parse::<u128>().map_err(|_| Refusal {
        knob,
        reason: format!("{v:?} is not a whole number below 2^128"),
    })
}

pub(super) fn refuse<T>(knob: &'static str, reason: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal {
        knob,
        reason: reason.into(),
    })
}

impl ContentRule<'_> {
    /// Checks the rule's own values (at policy load).
    pub fn validate(&self) -> Result<(), String> {
        for k in self.payloads.unwrap_or_default() {
            if Kind::parse(k).is_none() {
                return Err(format!(
                    "payloads: unknown kind {k:?}; known: {}",
                    Kind::ALL.map(Kind::as_str).join(", ")
                ));
            }
        }
        if let Some(e) = self.eth {
            for a in &e.recipients {
                parse_address(&a.address).map_err(|x| format!("eth.recipients: {x}"))?;
            }
            for c in &e.contracts {
                parse_address(&c.address).map_err(|x| format!("eth.contracts: {x}"))?;
                for s in &c.selectors {
                    parse_selector(s).map_err(|x| format!("eth.contracts: {x}"))?;
                }
            }
            for t in &e.tokens {
                parse_address(&t.address).map_err(|x| format!("eth.tokens: {x}"))?;
                if let Some(m) = &t.max_amount {
                    parse_u256(m).map_err(|x| format!("eth.tokens.max_amount: {x}"))?;
                }
                if let Some(m) = &t.amount_per_24h {
                    parse_limit("eth.tokens.amount_per_24h", m)
                        .map_err(|r| format!("eth.tokens.amount_per_24h: {}", r.reason))?;
                }
            }
            for (what, v) in [
                ("max_value", &e.max_value),
                ("max_fee_per_gas", &e.max_fee_per_gas),
                ("max_priority_fee_per_gas", &e.max_priority_fee_per_gas),
            ] {
                if let Some(v) = v {
                    parse_wei(v).map_err(|x| format!("eth.{what}: {x}"))?;
                }
            }
            if let Some(v) = &e.value_per_24h {
                eth::value_limit(v).map_err(|r| format!("eth.value_per_24h: {}", r.reason))?;
            }
            for d in &e.typed_data_domains {
                if d.name.is_none() && d.chain_id.is_none() && d.verifying_contract.is_none() {
                    return Err(
                        "eth.typed_data_domains: an entry must name at least one of name, \
                         chain_id, verifying_contract"
                            .into(),
                    );
                }
                if let Some(c) = &d.verifying_contract {
                    parse_address(c).map_err(|x| format!("eth.typed_data_domains: {x}"))?;
                }
            }
        }
        if let Some(b) = self.bitcoin {
            for d in &b.destinations {
                crate::payload::script_of(&d.address, &b.network)
                    .map_err(|x| format!("bitcoin.destinations: {x}"))?;
            }
            if let Some(r) = b.max_fee_rate {
                if !(r.is_finite() && r > 0.0) {
                    return Err("bitcoin.max_fee_rate must be a positive number (sat/vB)".into());
                }
            }
        }
        if let Some(c) = self.cosmos {
            for (knob, map) in [
                ("max_amount", &c.max_amount),
                ("max_fee", &c.max_fee),
                ("amount_per_24h", &c.amount_per_24h),
            ] {
                for (denom, amount) in map {
                    amount.parse::<u128>().map_err(|_| {
                        format!("cosmos.{knob}.{denom}: {amount:?} is not a whole number")
                    })?;
                }
            }
        }
        Ok(())
    }

    /// May this rule sign `decoded` (`None`: a raw digest)? If so, what it
    /// spends against the rule's rolling-window limits (each spend alone
    /// within its limit; the window's total is the store's to check).
    pub fn check(&self, decoded: Option<&Decoded>) -> Result<Vec<WindowSpend>, Refusal> {
        let Some(d) = decoded else {
            return match (self.payloads, self.raw_digest) {
                (None, _) | (Some(_), Some(true)) => Ok(Vec::new()),
                (Some(_), _) => refuse(
                    "raw_digest",
                    "raw digests are not allowed (blind signing is off; set raw_digest = true to \
                     allow it)",
                ),
            };
        };
        let listed = self
            .payloads
            .is_some_and(|p| p.iter().any(|k| k == d.kind.as_str()));
        if !listed {
            return Err(Refusal {
                knob: "payloads",
                reason: format!(
                    "payload kind {} is not among its payloads [{}]",
                    d.kind,
                    self.payloads.unwrap_or_default().join(", ")
                ),
            });
        }
        match &d.content {
            Content::EthTx(tx) => {
                eth::check_tx(self.eth, tx).and_then(|()| eth::windows(self.eth, tx))
            }
            Content::EthMessage { .. } => Ok(Vec::new()),
            Content::EthTypedData(domain) => {
                eth::check_typed(self.eth, domain).map(|()| Vec::new())
            }
            Content::Bitcoin(tx) => btc::check(self.bitcoin, tx, self.paths),
            Content::Cosmos(doc) => cosmos::check(self.cosmos, doc),
        }
    }
}

mod btc;
mod cosmos;
mod eth;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod window_tests;
