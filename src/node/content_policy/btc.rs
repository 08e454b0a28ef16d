//! The Bitcoin knobs: destinations (change excluded), amount and fee caps.

use super::{refuse, spend, BitcoinRule, Refusal, WindowSpend};

pub(super) fn check(
    rule: Option<&BitcoinRule>,
    tx: &crate::payload::BtcTx,
    paths: &[String],
) -> Result<Vec<WindowSpend>, Refusal> {
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
    let mut out = Vec::new();
    if let (Some(limit), true) = (rule.amount_per_24h_sat, leaving > 0) {
        out.push(spend(
            "bitcoin.amount_per_24h_sat",
            format!("bitcoin:{}", rule.network),
            format!("sat leaving on {} (change excluded)", rule.network),
            u128::from(leaving),
            u128::from(limit),
        )?);
    }
    Ok(out)
}
