//! What each kind of payload spends against the rolling-window knobs: the
//! scope and amount every node derives, and one refusal per knob for a
//! single payload already over its limit (the window's total is the store's
//! to check: `storage::tests::windows_*`).

use super::tests::{addr, btc, cosmos, eth, msg_send, send};
use super::WindowSpend;
use crate::domain::{DerivationPath, KeyId};
use crate::node::policy::Policy;
use crate::payload::eth_values::U256;
use crate::payload::{Decoded, TokenCall};

const EXCHANGE: &str = "bcrt1qq5zs2pg9q5zs2pg9q5zs2pg9q5zs2pg9ajutfp";
const ETHER: u128 = 1_000_000_000_000_000_000;

fn policy() -> Policy {
    Policy::parse(&format!(
        r#"
[[client]]
name = "app"
keys = ["k"]
paths = ["m"]
payloads = ["eth_transaction", "bitcoin_psbt", "cosmos_sign_doc"]

[client.eth]
chain_ids = [1]
value_per_24h = "2 ether"
recipients = [{{ address = "0x1111111111111111111111111111111111111111" }}]
tokens = [{{ address = "0x3333333333333333333333333333333333333333", label = "USDC", amount_per_24h = "5000" }}]

[client.bitcoin]
network = "regtest"
destinations = [{{ address = "{EXCHANGE}" }}]
max_fee_sat = 20000
amount_per_24h_sat = 500000

[client.cosmos]
chain_ids = ["cosmoshub-4"]
messages = ["/cosmos.bank.v1beta1.MsgSend"]
recipients = [{{ address = "cosmos1to" }}]
max_amount = {{ uatom = "9000" }}
amount_per_24h = {{ uatom = "4000" }}
"#
    ))
    .unwrap()
}

/// The spends of an allowed payload, or the knob and reason of a refusal.
fn spends(d: &Decoded) -> Result<Vec<WindowSpend>, (String, String)> {
    let dec = policy().check_sign_content(
        "app",
        &KeyId::parse("k").unwrap(),
        &DerivationPath::default(),
        Some(d),
    );
    if dec.allowed {
        Ok(dec.windows)
    } else {
        Err((dec.rule, dec.reason))
    }
}

fn one(d: &Decoded) -> (String, u128, u128) {
    let s = spends(d).unwrap();
    assert_eq!(s.len(), 1, "{s:?}");
    (s[0].scope.clone(), s[0].amount, s[0].limit)
}

fn refused(d: &Decoded, knob: &str) {
    let (rule, reason) = spends(d).unwrap_err();
    assert!(
        rule.ends_with(knob),
        "expected {knob}, got {rule}: {reason}"
    );
    assert!(reason.contains("over its 24-hour limit"), "{reason}");
}

#[test]
fn ethereum_value_and_token_amounts_are_spent_per_chain_and_token() {
    let tx = eth(send(addr(0x11), ETHER));
    assert_eq!(one(&tx), ("eth:1:value".into(), ETHER, 2 * ETHER));
    // Nothing sent, nothing spent.
    assert_eq!(spends(&eth(send(addr(0x11), 0))).unwrap(), vec![]);
    refused(&eth(send(addr(0x11), 2 * ETHER + 1)), "eth.value_per_24h");

    let mut token = send(addr(0x33), 0);
    token.data_len = 68;
    token.selector = Some([0xa9, 0x05, 0x9c, 0xbb]);
    token.token = Some(TokenCall::Transfer {
        to: addr(0x11),
        amount: U256::from(4000),
    });
    let (scope, amount, limit) = one(&eth(token.clone()));
    assert_eq!(
        scope,
        format!("eth:1:token:{}", addr(0x33)),
        "one window per token"
    );
    assert_eq!((amount, limit), (4000, 5000));
    // An approval lets the spender move the amount: it counts too.
    token.token = Some(TokenCall::Approve {
        spender: addr(0x11),
        amount: U256::from(5001),
    });
    refused(&eth(token.clone()), "eth.tokens.amount_per_24h");
    // An unlimited approval counts as the most there is.
    token.token = Some(TokenCall::Approve {
        spender: addr(0x11),
        amount: U256::MAX,
    });
    refused(&eth(token), "eth.tokens.amount_per_24h");
}

#[test]
fn bitcoin_spends_what_leaves_change_excluded() {
    let exchange = crate::payload::script_of(EXCHANGE, "regtest").unwrap();
    let change = vec![
        0x00, 0x14, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8,
    ];
    let tx = btc(
        vec![
            (exchange.clone(), 300_000, false),
            (change, 9_000_000, true),
        ],
        Some(1_000),
    );
    assert_eq!(one(&tx), ("bitcoin:regtest".into(), 300_000, 500_000));
    refused(
        &btc(vec![(exchange, 500_001, false)], Some(1_000)),
        "bitcoin.amount_per_24h_sat",
    );
}

#[test]
fn cosmos_sends_are_spent_per_denom() {
    let doc = cosmos(
        "cosmoshub-4",
        vec![
            msg_send("cosmos1to", "uatom", 1500),
            msg_send("cosmos1to", "uatom", 2000),
        ],
    );
    assert_eq!(one(&doc), ("cosmos:cosmoshub-4:uatom".into(), 3500, 4000));
    refused(
        &cosmos(
            "cosmoshub-4",
            vec![
                msg_send("cosmos1to", "uatom", 2500),
                msg_send("cosmos1to", "uatom", 2000),
            ],
        ),
        "cosmos.amount_per_24h",
    );
}

#[test]
fn bad_window_limits_are_refused_at_load() {
    for (table, line, knob) in [
        ("eth", "value_per_24h = \"lots\"", "eth.value_per_24h"),
        (
            "cosmos",
            "amount_per_24h = { uatom = \"-1\" }",
            "cosmos.amount_per_24h",
        ),
    ] {
        let text = format!(
            "[[client]]\nname = \"app\"\nkeys = [\"k\"]\npaths = [\"m\"]\n\
             payloads = [\"eth_transaction\"]\n[client.{table}]\n{line}\n"
        );
        let e = Policy::parse(&text).unwrap_err();
        assert!(e.contains(knob), "{line}: {e}");
    }
}
