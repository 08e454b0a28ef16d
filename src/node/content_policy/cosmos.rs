//! The Cosmos knobs: chain ids, message types, MsgSend recipients and
//! amounts, fees.

use super::{parse_limit, refuse, spend, CosmosRule, Refusal, WindowSpend};
use crate::payload::CosmosMsg;

pub(super) fn check(
    rule: Option<&CosmosRule>,
    doc: &crate::payload::CosmosDoc,
) -> Result<Vec<WindowSpend>, Refusal> {
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
        denom_cap(&rule.max_fee, c, "cosmos.max_fee", "a fee in", "fee ")?;
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
                denom_cap(&rule.max_amount, c, "cosmos.max_amount", "denom", "")?;
            }
        }
    }
    // MsgSend amounts per denom, against that denom's window.
    let mut sent: std::collections::BTreeMap<&str, u128> = Default::default();
    for m in &doc.messages {
        if let CosmosMsg::Send { amount, .. } = m {
            for c in amount {
                let total = sent.entry(c.denom.as_str()).or_default();
                *total = total.saturating_add(c.amount);
            }
        }
    }
    let mut out = Vec::new();
    for (denom, amount) in sent {
        if let Some(limit) = rule.amount_per_24h.get(denom) {
            let chain = &doc.chain_id;
            out.push(spend(
                "cosmos.amount_per_24h",
                format!("cosmos:{chain}:{denom}"),
                format!("{denom} sent on {chain}"),
                amount,
                parse_limit("cosmos.amount_per_24h", limit)?,
            )?);
        }
    }
    Ok(out)
}

/// `c` against its denom's cap in `caps` (a denom not named is refused:
/// default deny). `what` and `prefix` word the refusals.
fn denom_cap(
    caps: &std::collections::BTreeMap<String, String>,
    c: &crate::payload::CosmosCoin,
    knob: &'static str,
    what: &str,
    prefix: &str,
) -> Result<(), Refusal> {
    let name = knob.trim_start_matches("cosmos.");
    let Some(max) = caps.get(&c.denom) else {
        return refuse(
            knob,
            format!("{what} {} has no {name} (default deny)", c.denom),
        );
    };
    let max: u128 = max.parse().unwrap_or(0);
    if c.amount > max {
        return refuse(
            knob,
            format!("{prefix}{}{} is over {max}{}", c.amount, c.denom, c.denom),
        );
    }
    Ok(())
}
