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
//! max_fee_per_gas = "200 gwei"
//! max_priority_fee_per_gas = "5 gwei"
//! max_gas = 500000
//! contract_creation = false
//! recipients = [{ address = "0x1111111111111111111111111111111111111111", label = "cold wallet" }]
//! contracts = [{ address = "0x2222222222222222222222222222222222222222", selectors = ["0x12345678"], label = "router" }]
//! tokens = [{ address = "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48", label = "USDC", max_amount = "1000000000" }]
//! typed_data_domains = [{ name = "Permit2", chain_id = 1, verifying_contract = "0x000000000022D473030F116dDEE9F6B43aC78BA3" }]
//!
//! [client.bitcoin]
//! network = "bitcoin"                 # bitcoin, testnet, signet or regtest
//! destinations = [{ address = "bc1q...", label = "exchange" }]
//! max_amount_sat = 10000000           # leaving per transaction (change excluded)
//! max_fee_sat = 50000
//! max_fee_rate = 100.0                # sat/vB
//!
//! [client.cosmos]
//! chain_ids = ["cosmoshub-4"]
//! messages = ["/cosmos.bank.v1beta1.MsgSend"]
//! recipients = [{ address = "cosmos1...", label = "exchange" }]
//! max_amount = { uatom = "5000000" }  # per MsgSend and denom
//! max_fee = { uatom = "20000" }       # per transaction and denom
//! ```

use std::collections::BTreeMap;

pub use crate::payload::eth_values::parse_wei;
use crate::payload::eth_values::{parse_address, parse_selector, parse_u256, Address, U256};
use serde::Deserialize;

use crate::payload::{Content, CosmosMsg, Decoded, EthTx, Kind, TokenCall, TypedDomain};

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

fn refuse(knob: &'static str, reason: impl Into<String>) -> Result<(), Refusal> {
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
            for (denom, amount) in c.max_amount.iter().chain(&c.max_fee) {
                amount.parse::<u128>().map_err(|_| {
                    format!("cosmos.max_amount.{denom}: {amount:?} is not a whole number")
                })?;
            }
        }
        Ok(())
    }

    /// May this rule sign `decoded` (`None`: a raw digest)?
    pub fn check(&self, decoded: Option<&Decoded>) -> Result<(), Refusal> {
        let Some(d) = decoded else {
            return match (self.payloads, self.raw_digest) {
                (None, _) | (Some(_), Some(true)) => Ok(()),
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
            return refuse(
                "payloads",
                format!(
                    "payload kind {} is not among its payloads [{}]",
                    d.kind,
                    self.payloads.unwrap_or_default().join(", ")
                ),
            );
        }
        match &d.content {
            Content::EthTx(tx) => check_eth_tx(self.eth, tx),
            Content::EthMessage { .. } => Ok(()),
            Content::EthTypedData(domain) => check_typed(self.eth, domain),
            Content::Bitcoin(tx) => check_bitcoin(self.bitcoin, tx, self.paths),
            Content::Cosmos(doc) => check_cosmos(self.cosmos, doc),
        }
    }
}

fn eth_recipient(rule: &EthRule, to: &Address, what: &str) -> Result<(), Refusal> {
    if rule
        .recipients
        .iter()
        .any(|r| parse_address(&r.address).is_ok_and(|a| a == *to))
    {
        Ok(())
    } else {
        refuse(
            "eth.recipients",
            format!(
                "{what} {to} is not among its {} recipients",
                rule.recipients.len()
            ),
        )
    }
}

fn wei_cap(
    cap: &Option<String>,
    value: U256,
    knob: &'static str,
    what: &str,
) -> Result<(), Refusal> {
    let Some(cap) = cap else { return Ok(()) };
    let max = parse_wei(cap).map_err(|reason| Refusal { knob, reason })?;
    if value > max {
        return refuse(
            knob,
            format!("{what} {value} wei is over {cap} ({max} wei)"),
        );
    }
    Ok(())
}

fn check_eth_tx(rule: Option<&EthRule>, tx: &EthTx) -> Result<(), Refusal> {
    let Some(rule) = rule else {
        return refuse(
            "eth",
            "no [client.eth] table: Ethereum transactions are denied",
        );
    };
    if !rule.chain_ids.contains(&tx.chain_id) {
        return refuse(
            "eth.chain_ids",
            format!("chain id {} is not among {:?}", tx.chain_id, rule.chain_ids),
        );
    }
    wei_cap(&rule.max_value, tx.value, "eth.max_value", "value")?;
    wei_cap(
        &rule.max_fee_per_gas,
        U256::from(tx.max_fee_per_gas),
        "eth.max_fee_per_gas",
        "max fee per gas",
    )?;
    if let Some(tip) = tx.max_priority_fee_per_gas {
        wei_cap(
            &rule.max_priority_fee_per_gas,
            U256::from(tip),
            "eth.max_priority_fee_per_gas",
            "max priority fee per gas",
        )?;
    }
    if let Some(max) = rule.max_gas {
        if tx.gas_limit > max {
            return refuse(
                "eth.max_gas",
                format!("gas limit {} is over {max}", tx.gas_limit),
            );
        }
    }
    let Some(to) = tx.to else {
        return if rule.contract_creation {
            Ok(())
        } else {
            refuse("eth.contract_creation", "contract creation is not allowed")
        };
    };
    if tx.data_len == 0 {
        return eth_recipient(rule, &to, "recipient");
    }
    let token = rule
        .tokens
        .iter()
        .find(|t| parse_address(&t.address).is_ok_and(|a| a == to));
    if let (Some(token), Some(call)) = (token, tx.token) {
        let (who, amount, what) = match call {
            TokenCall::Transfer { to, amount } => (to, amount, "token recipient"),
            TokenCall::Approve { spender, amount } => (spender, amount, "token spender"),
        };
        // A token transfer also sends the transaction's value to the token.
        if !tx.value.is_zero() {
            eth_recipient(rule, &to, "recipient")?;
        }
        eth_recipient(rule, &who, what)?;
        if let Some(max) = &token.max_amount {
            let max = parse_u256(max).map_err(|reason| Refusal {
                knob: "eth.tokens.max_amount",
                reason,
            })?;
            if amount > max {
                let name = if token.label.is_empty() {
                    &token.address
                } else {
                    &token.label
                };
                return refuse(
                    "eth.tokens.max_amount",
                    format!("{amount} units of {name} is over its max_amount {max}"),
                );
            }
        }
        return Ok(());
    }
    let contract = rule
        .contracts
        .iter()
        .find(|c| parse_address(&c.address).is_ok_and(|a| a == to));
    let Some(contract) = contract else {
        return refuse(
            "eth.contracts",
            format!("a call to {to} ({} bytes of data): the contract is not among its contracts or tokens", tx.data_len),
        );
    };
    let selector = tx.selector.unwrap_or_default();
    if contract
        .selectors
        .iter()
        .any(|s| parse_selector(s).is_ok_and(|s| s == selector))
    {
        if !tx.value.is_zero() {
            return wei_cap(&rule.max_value, tx.value, "eth.max_value", "value");
        }
        Ok(())
    } else {
        refuse(
            "eth.contracts",
            format!(
                "selector 0x{} is not among the selectors of {to}{} [{}]",
                hex::encode(selector),
                if contract.label.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", contract.label)
                },
                contract.selectors.join(", ")
            ),
        )
    }
}

fn check_typed(rule: Option<&EthRule>, d: &TypedDomain) -> Result<(), Refusal> {
    let domains = rule
        .map(|r| r.typed_data_domains.as_slice())
        .unwrap_or_default();
    let matches = |r: &DomainRule| {
        r.name.as_ref().is_none_or(|n| d.name.as_ref() == Some(n))
            && r.chain_id.is_none_or(|c| d.chain_id == Some(U256::from(c)))
            && r.verifying_contract
                .as_ref()
                .is_none_or(|c| parse_address(c).is_ok_and(|c| d.verifying_contract == Some(c)))
    };
    if domains.iter().any(matches) {
        Ok(())
    } else {
        refuse(
            "eth.typed_data_domains",
            format!(
                "domain {:?} chain {} contract {} is not among its {} typed-data domains",
                d.name.as_deref().unwrap_or(""),
                d.chain_id
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "none".into()),
                d.verifying_contract
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "none".into()),
                domains.len()
            ),
        )
    }
}

fn check_bitcoin(
    rule: Option<&BitcoinRule>,
    tx: &crate::payload::BtcTx,
    paths: &[String],
) -> Result<(), Refusal> {
    let Some(rule) = rule else {
        return refuse(
            "bitcoin",
            "no [client.bitcoin] table: Bitcoin transactions are denied",
        );
    };
    // Change is the key's own output at a path this client may use; the
    // key's outputs elsewhere (another client's paths) are destinations.
    let is_change = |o: &crate::payload::BtcOutput| {
        o.change_path.as_ref().is_some_and(|p| {
            paths.iter().any(|prefix| {
                crate::domain::DerivationPath::parse(prefix)
                    .is_ok_and(|pre| p.indices().starts_with(pre.indices()))
            })
        })
    };
    let leaving: u64 = tx
        .outputs
        .iter()
        .filter(|o| !is_change(o))
        .fold(0u64, |a, o| a.saturating_add(o.amount_sat));
    for o in tx.outputs.iter().filter(|o| !is_change(o)) {
        let allowed = rule.destinations.iter().any(|d| {
            crate::payload::script_of(&d.address, &rule.network).is_ok_and(|s| s == o.script_pubkey)
        });
        if !allowed {
            return refuse(
                "bitcoin.destinations",
                format!(
                    "output to {} ({} sat) is not among its {} destinations",
                    crate::payload::address_of(&o.script_pubkey, &rule.network),
                    o.amount_sat,
                    rule.destinations.len()
                ),
            );
        }
    }
    if let Some(max) = rule.max_amount_sat {
        if leaving > max {
            return refuse(
                "bitcoin.max_amount_sat",
                format!("{leaving} sat leaving is over {max} sat"),
            );
        }
    }
    // The fee is money leaving too: it must be known and capped.
    {
        let Some(fee) = tx.fee_sat else {
            return refuse(
                "bitcoin.max_fee_sat",
                "the fee is unknown: an input's previous output is missing from the PSBT",
            );
        };
        let Some(max) = rule.max_fee_sat else {
            return refuse(
                "bitcoin.max_fee_sat",
                "is not set: without it the fee is unlimited (default deny)",
            );
        };
        if fee > max {
            return refuse(
                "bitcoin.max_fee_sat",
                format!("fee {fee} sat is over {max} sat"),
            );
        }
        if let Some(max) = rule.max_fee_rate {
            let rate = fee as f64 / tx.vsize.max(1) as f64;
            if rate > max {
                return refuse(
                    "bitcoin.max_fee_rate",
                    format!("fee rate {rate:.1} sat/vB is over {max} sat/vB"),
                );
            }
        }
    }
    Ok(())
}

fn check_cosmos(rule: Option<&CosmosRule>, doc: &crate::payload::CosmosDoc) -> Result<(), Refusal> {
    let Some(rule) = rule else {
        return refuse(
            "cosmos",
            "no [client.cosmos] table: Cosmos transactions are denied",
        );
    };
    if !rule.chain_ids.contains(&doc.chain_id) {
        return refuse(
            "cosmos.chain_ids",
            format!(
                "chain id {:?} is not among {:?}",
                doc.chain_id, rule.chain_ids
            ),
        );
    }
    for c in &doc.fee {
        let Some(max) = rule.max_fee.get(&c.denom) else {
            return refuse(
                "cosmos.max_fee",
                format!("a fee in {} has no max_fee (default deny)", c.denom),
            );
        };
        let max: u128 = max.parse().unwrap_or(0);
        if c.amount > max {
            return refuse(
                "cosmos.max_fee",
                format!("fee {}{} is over {max}{}", c.amount, c.denom, c.denom),
            );
        }
    }
    for m in &doc.messages {
        if !rule.messages.iter().any(|t| t == m.type_url()) {
            return refuse(
                "cosmos.messages",
                format!(
                    "message type {} is not among {:?}",
                    m.type_url(),
                    rule.messages
                ),
            );
        }
        if let CosmosMsg::Send { to, amount } = m {
            if !rule.recipients.iter().any(|r| r.address == *to) {
                return refuse(
                    "cosmos.recipients",
                    format!(
                        "recipient {to} is not among its {} recipients",
                        rule.recipients.len()
                    ),
                );
            }
            for c in amount {
                let Some(max) = rule.max_amount.get(&c.denom) else {
                    return refuse(
                        "cosmos.max_amount",
                        format!("denom {} has no max_amount (default deny)", c.denom),
                    );
                };
                let max: u128 = max.parse().unwrap_or(0);
                if c.amount > max {
                    return refuse(
                        "cosmos.max_amount",
                        format!("{}{} is over {max}{}", c.amount, c.denom, c.denom),
                    );
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "content_policy_tests.rs"]
mod tests;
