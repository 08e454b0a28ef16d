//! The Cosmos knobs: chain ids, message types, MsgSend recipients and
//! amounts, fees.

use super::{refuse, CosmosRule, Refusal};
use crate::payload::CosmosMsg;

pub(super) fn check(
    rule: Option<&CosmosRule>,
    doc: &crate::payload::CosmosDoc,
) -> Result<(), Refusal> {
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
