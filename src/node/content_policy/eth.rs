//! The Ethereum knobs: chain ids, value and fee caps, recipients, contracts
//! and selectors, ERC-20 tokens, EIP-712 domains.

use super::{parse_limit, refuse, spend, DomainRule, EthRule, Refusal, WindowSpend};
use crate::payload::eth_values::{
    parse_address, parse_selector, parse_u256, parse_wei, Address, U256,
};
use crate::payload::{EthTx, TokenCall, TypedDomain};

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

pub(super) fn check_tx(rule: Option<&EthRule>, tx: &EthTx) -> Result<(), Refusal> {
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

/// `value_per_24h` in wei (below 2^128).
pub(super) fn value_limit(v: &str) -> Result<u128, Refusal> {
    let knob = "eth.value_per_24h";
    let wei = parse_wei(v).map_err(|reason| Refusal { knob, reason })?;
    u128::try_from(wei).map_err(|_| Refusal {
        knob,
        reason: format!("{v} is not below 2^128 wei"),
    })
}

/// What an allowed transaction spends against the rule's windows: its
/// value per chain, and a listed token's `transfer` or `approve` amount.
pub(super) fn windows(rule: Option<&EthRule>, tx: &EthTx) -> Result<Vec<WindowSpend>, Refusal> {
    let Some(rule) = rule else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    let chain = tx.chain_id;
    if let (Some(limit), false) = (&rule.value_per_24h, tx.value.is_zero()) {
        // A value of 2^128 wei or more counts as the most a limit can be.
        let amount = u128::try_from(tx.value).unwrap_or(u128::MAX);
        out.push(spend(
            "eth.value_per_24h",
            format!("eth:{chain}:value"),
            format!("value sent on chain {chain} (wei)"),
            amount,
            value_limit(limit)?,
        )?);
    }
    if let (Some(to), Some(call)) = (tx.to, tx.token) {
        let token = rule
            .tokens
            .iter()
            .find(|t| parse_address(&t.address).is_ok_and(|a| a == to));
        if let Some((token, Some(limit))) = token.map(|t| (t, &t.amount_per_24h)) {
            let (TokenCall::Transfer { amount, .. } | TokenCall::Approve { amount, .. }) = call;
            let name = if token.label.is_empty() {
                to.to_string()
            } else {
                token.label.clone()
            };
            out.push(spend(
                "eth.tokens.amount_per_24h",
                format!("eth:{chain}:token:{to}"),
                format!("{name} moved on chain {chain} (token units)"),
                u128::try_from(amount).unwrap_or(u128::MAX),
                parse_limit("eth.tokens.amount_per_24h", limit)?,
            )?);
        }
    }
    Ok(out)
}

pub(super) fn check_typed(rule: Option<&EthRule>, d: &TypedDomain) -> Result<(), Refusal> {
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
