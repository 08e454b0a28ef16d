//! One refusal per knob, each naming its rule, and the allowed cases beside
//! them; the decoded payloads are built as `crate::payload` returns them.

use crate::payload::eth_values::{Address, U256};

use crate::domain::{DerivationPath, KeyId};
use crate::node::policy::Policy;
use crate::payload::{
    BtcInput, BtcOutput, BtcTx, Content, CosmosCoin, CosmosDoc, CosmosMsg, Decoded, EthTx, Kind,
    Target, TokenCall, TypedDomain,
};

const POLICY: &str = r#"
[[client]]
name = "app"
keys = ["k"]
paths = ["m"]
payloads = ["eth_transaction", "eth_typed_data", "bitcoin_psbt", "cosmos_sign_doc"]

[client.eth]
chain_ids = [1]
max_value = "1.5 ether"
max_fee_per_gas = "100 gwei"
max_priority_fee_per_gas = "3 gwei"
max_gas = 300000
recipients = [{ address = "0x1111111111111111111111111111111111111111", label = "cold" }]
contracts = [{ address = "0x2222222222222222222222222222222222222222", selectors = ["0x12345678"], label = "router" }]
tokens = [{ address = "0x3333333333333333333333333333333333333333", label = "USDC", max_amount = "1000" }]
typed_data_domains = [{ name = "Permit2", chain_id = 1 }]

[client.bitcoin]
network = "regtest"
destinations = [{ address = "bcrt1qq5zs2pg9q5zs2pg9q5zs2pg9q5zs2pg9ajutfp", label = "exchange" }]
max_amount_sat = 300000
max_fee_sat = 20000
max_fee_rate = 50.0

[client.cosmos]
chain_ids = ["cosmoshub-4"]
messages = ["/cosmos.bank.v1beta1.MsgSend"]
recipients = [{ address = "cosmos1to" }]
max_amount = { uatom = "2000" }
max_fee = { uatom = "700" }

[[client]]
name = "legacy"
keys = ["k"]
paths = ["m"]

[[client]]
name = "both"
keys = ["k"]
paths = ["m"]
payloads = ["eth_message"]
raw_digest = true
"#;

fn policy() -> Policy {
    Policy::parse(POLICY).unwrap()
}

pub(super) fn decoded(kind: Kind, content: Content) -> Decoded {
    Decoded {
        kind,
        targets: vec![Target {
            digest: [0; 32],
            path: DerivationPath::default(),
            replay: None,
        }],
        summary: String::new(),
        content,
    }
}

pub(super) fn addr(b: u8) -> Address {
    Address::repeat_byte(b)
}

pub(super) fn send(to: Address, wei: u128) -> EthTx {
    EthTx {
        tx_type: 2,
        chain_id: 1,
        nonce: 0,
        to: Some(to),
        value: U256::from(wei),
        gas_limit: 21_000,
        max_fee_per_gas: 30_000_000_000,
        max_priority_fee_per_gas: Some(1_000_000_000),
        selector: None,
        data_len: 0,
        token: None,
    }
}

/// The decision for `client` signing `d`: Ok, or the rule and reason.
fn check(client: &str, d: Option<&Decoded>) -> Result<(), (String, String)> {
    let dec = policy().check_sign_content(
        client,
        &KeyId::parse("k").unwrap(),
        &DerivationPath::default(),
        d,
    );
    if dec.allowed {
        Ok(())
    } else {
        Err((dec.rule, dec.reason))
    }
}

fn refused_by(client: &str, d: &Decoded, knob: &str) -> String {
    match check(client, Some(d)) {
        Ok(()) => panic!("{knob}: allowed {d:?}"),
        Err((rule, reason)) => {
            assert!(
                rule.ends_with(knob),
                "expected a refusal by {knob}, got {rule}: {reason}"
            );
            reason
        }
    }
}

pub(super) fn eth(tx: EthTx) -> Decoded {
    decoded(Kind::EthTransaction, Content::EthTx(tx))
}

#[test]
fn raw_digests_and_payload_kinds() {
    // A rule that names no payload kinds allows raw digests, as before.
    assert!(check("legacy", None).is_ok());
    let tx = eth(send(addr(0x11), 1));
    assert!(check("legacy", Some(&tx))
        .unwrap_err()
        .0
        .ends_with("payloads"));
    // Naming payload kinds turns blind signing off unless raw_digest is set.
    let (rule, reason) = check("app", None).unwrap_err();
    assert!(rule.ends_with("raw_digest"), "{rule}: {reason}");
    assert!(check("both", None).is_ok());
    let msg = decoded(Kind::EthMessage, Content::EthMessage { len: 5 });
    assert!(check("both", Some(&msg)).is_ok());
    refused_by("app", &msg, "payloads");
}

#[test]
fn each_ethereum_knob_refuses_by_name() {
    assert!(check("app", Some(&eth(send(addr(0x11), 10u128.pow(18))))).is_ok());
    let mut t = send(addr(0x11), 1);
    t.chain_id = 5;
    refused_by("app", &eth(t), "eth.chain_ids");
    refused_by(
        "app",
        &eth(send(addr(0x11), 2 * 10u128.pow(18))),
        "eth.max_value",
    );
    let mut t = send(addr(0x11), 1);
    t.max_fee_per_gas = 101_000_000_000;
    refused_by("app", &eth(t), "eth.max_fee_per_gas");
    let mut t = send(addr(0x11), 1);
    t.max_priority_fee_per_gas = Some(4_000_000_000);
    refused_by("app", &eth(t), "eth.max_priority_fee_per_gas");
    let mut t = send(addr(0x11), 1);
    t.gas_limit = 300_001;
    refused_by("app", &eth(t), "eth.max_gas");
    let mut t = send(addr(0x11), 0);
    t.to = None;
    t.data_len = 100;
    refused_by("app", &eth(t), "eth.contract_creation");
    let reason = refused_by("app", &eth(send(addr(0x99), 1)), "eth.recipients");
    assert!(reason.contains("0x9999"), "{reason}");
    // Calls: listed contract and selector only.
    let mut call = send(addr(0x22), 0);
    call.data_len = 36;
    call.selector = Some([0x12, 0x34, 0x56, 0x78]);
    assert!(check("app", Some(&eth(call.clone()))).is_ok());
    call.selector = Some([0xde, 0xad, 0xbe, 0xef]);
    let reason = refused_by("app", &eth(call.clone()), "eth.contracts");
    assert!(
        reason.contains("0xdeadbeef") && reason.contains("router"),
        "{reason}"
    );
    call.to = Some(addr(0x44));
    refused_by("app", &eth(call), "eth.contracts");
    // ERC-20: recipients and per-token amounts.
    let mut token = send(addr(0x33), 0);
    token.data_len = 68;
    token.selector = Some([0xa9, 0x05, 0x9c, 0xbb]);
    token.token = Some(TokenCall::Transfer {
        to: addr(0x11),
        amount: U256::from(1000),
    });
    assert!(check("app", Some(&eth(token.clone()))).is_ok());
    token.token = Some(TokenCall::Transfer {
        to: addr(0x11),
        amount: U256::from(1001),
    });
    let reason = refused_by("app", &eth(token.clone()), "eth.tokens.max_amount");
    assert!(reason.contains("USDC"), "{reason}");
    token.token = Some(TokenCall::Approve {
        spender: addr(0x55),
        amount: U256::from(1),
    });
    let reason = refused_by("app", &eth(token), "eth.recipients");
    assert!(reason.contains("token spender"), "{reason}");
}

#[test]
fn typed_data_domains_must_be_listed() {
    let domain = |name: &str, chain: u64| {
        decoded(
            Kind::EthTypedData,
            Content::EthTypedData(TypedDomain {
                name: Some(name.into()),
                chain_id: Some(U256::from(chain)),
                verifying_contract: Some(addr(0x77)),
                primary_type: "PermitSingle".into(),
            }),
        )
    };
    assert!(check("app", Some(&domain("Permit2", 1))).is_ok());
    refused_by("app", &domain("Permit2", 10), "eth.typed_data_domains");
    refused_by("app", &domain("Seaport", 1), "eth.typed_data_domains");
}

pub(super) fn btc(outputs: Vec<(Vec<u8>, u64, bool)>, fee: Option<u64>) -> Decoded {
    decoded(
        Kind::BitcoinPsbt,
        Content::Bitcoin(BtcTx {
            inputs: vec![BtcInput {
                outpoint: "00:0".into(),
                amount_sat: Some(1),
                ours: true,
            }],
            outputs: outputs
                .into_iter()
                .map(|(script_pubkey, amount_sat, change)| BtcOutput {
                    script_pubkey,
                    amount_sat,
                    change,
                    change_path: change.then(|| DerivationPath::parse("m/1/0").unwrap()),
                })
                .collect(),
            fee_sat: fee,
            vsize: 200,
        }),
    )
}

#[test]
fn each_bitcoin_knob_refuses_by_name() {
    let exchange =
        crate::payload::script_of("bcrt1qq5zs2pg9q5zs2pg9q5zs2pg9q5zs2pg9ajutfp", "regtest")
            .unwrap();
    let stranger = vec![
        0x00, 0x14, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9,
    ];
    let change = vec![
        0x00, 0x14, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8,
    ];
    let ok = btc(
        vec![
            (exchange.clone(), 250_000, false),
            (change.clone(), 9_999_999, true),
        ],
        Some(5_000),
    );
    assert!(
        check("app", Some(&ok)).is_ok(),
        "change is not counted as leaving"
    );
    let reason = refused_by(
        "app",
        &btc(vec![(stranger, 1, false)], Some(5_000)),
        "bitcoin.destinations",
    );
    assert!(reason.contains("bcrt1q"), "{reason}");
    refused_by(
        "app",
        &btc(vec![(exchange.clone(), 300_001, false)], Some(5_000)),
        "bitcoin.max_amount_sat",
    );
    refused_by(
        "app",
        &btc(vec![(exchange.clone(), 1, false)], Some(20_001)),
        "bitcoin.max_fee_sat",
    );
    refused_by(
        "app",
        &btc(vec![(exchange.clone(), 1, false)], Some(10_001)),
        "bitcoin.max_fee_rate",
    );
    let reason = refused_by(
        "app",
        &btc(vec![(exchange.clone(), 1, false)], None),
        "bitcoin.max_fee_sat",
    );
    assert!(reason.contains("unknown"), "{reason}");
    // The key's own output under a path this client may not use is no
    // change: it is a destination like any other.
    let narrow = Policy::parse(&POLICY.replace(
        "name = \"app\"\nkeys = [\"k\"]\npaths = [\"m\"]",
        "name = \"app\"\nkeys = [\"k\"]\npaths = [\"m/0\"]",
    ))
    .unwrap();
    let d = narrow.check_sign_content(
        "app",
        &KeyId::parse("k").unwrap(),
        &DerivationPath::parse("m/0").unwrap(),
        Some(&btc(
            vec![(exchange, 1, false), (change, 5, true)],
            Some(10),
        )),
    );
    assert!(
        !d.allowed && d.rule.ends_with("bitcoin.destinations"),
        "change at m/1/0 counted for a client of m/0: {d}"
    );
}

pub(super) fn cosmos(chain: &str, messages: Vec<CosmosMsg>) -> Decoded {
    cosmos_fee(chain, messages, Vec::new())
}

fn cosmos_fee(chain: &str, messages: Vec<CosmosMsg>, fee: Vec<CosmosCoin>) -> Decoded {
    decoded(
        Kind::CosmosSignDoc,
        Content::Cosmos(CosmosDoc {
            chain_id: chain.into(),
            account_number: 1,
            sequence: 1,
            messages,
            fee,
            gas_limit: 1,
            memo: String::new(),
        }),
    )
}

pub(super) fn msg_send(to: &str, denom: &str, amount: u128) -> CosmosMsg {
    CosmosMsg::Send {
        to: to.into(),
        amount: vec![CosmosCoin {
            denom: denom.into(),
            amount,
        }],
    }
}

#[test]
fn each_cosmos_knob_refuses_by_name() {
    assert!(check(
        "app",
        Some(&cosmos(
            "cosmoshub-4",
            vec![msg_send("cosmos1to", "uatom", 2000)]
        ))
    )
    .is_ok());
    refused_by(
        "app",
        &cosmos("osmosis-1", vec![msg_send("cosmos1to", "uatom", 1)]),
        "cosmos.chain_ids",
    );
    refused_by(
        "app",
        &cosmos(
            "cosmoshub-4",
            vec![CosmosMsg::Other {
                type_url: "/cosmos.staking.v1beta1.MsgDelegate".into(),
            }],
        ),
        "cosmos.messages",
    );
    refused_by(
        "app",
        &cosmos("cosmoshub-4", vec![msg_send("cosmos1eve", "uatom", 1)]),
        "cosmos.recipients",
    );
    refused_by(
        "app",
        &cosmos("cosmoshub-4", vec![msg_send("cosmos1to", "uatom", 2001)]),
        "cosmos.max_amount",
    );
    refused_by(
        "app",
        &cosmos("cosmoshub-4", vec![msg_send("cosmos1to", "uosmo", 1)]),
        "cosmos.max_amount",
    );
    let fee = |denom: &str, amount| {
        vec![CosmosCoin {
            denom: denom.into(),
            amount,
        }]
    };
    let ok = vec![msg_send("cosmos1to", "uatom", 1)];
    assert!(check(
        "app",
        Some(&cosmos_fee("cosmoshub-4", ok.clone(), fee("uatom", 700)))
    )
    .is_ok());
    refused_by(
        "app",
        &cosmos_fee("cosmoshub-4", ok.clone(), fee("uatom", 701)),
        "cosmos.max_fee",
    );
    refused_by(
        "app",
        &cosmos_fee("cosmoshub-4", ok, fee("uosmo", 1)),
        "cosmos.max_fee",
    );
}

#[test]
fn bad_content_rules_are_refused_at_load() {
    let base = "[[client]]\nname='a'\nkeys=['k']\npaths=['m']\n";
    for (extra, needle) in [
        ("payloads=['eth_tx']", "unknown kind"),
        ("[client.eth]\nrecipients=[{address='0x12'}]", "eth.recipients"),
        ("[client.eth]\nmax_value='1 bitcoin'", "eth.max_value"),
        (
            "[client.eth]\ncontracts=[{address='0x2222222222222222222222222222222222222222', selectors=['transfer']}]",
            "selector",
        ),
        (
            "[client.bitcoin]\nnetwork='bitcoin'\ndestinations=[{address='bcrt1qq5zs2pg9q5zs2pg9q5zs2pg9q5zs2pg9ajutfp'}]",
            "bitcoin.destinations",
        ),
        ("[client.cosmos]\nmax_amount={uatom='lots'}", "cosmos.max_amount"),
        ("[client.eth]\ncolour='red'", "unknown field"),
    ] {
        let e = Policy::parse(&format!("{base}{extra}")).unwrap_err();
        assert!(e.contains(needle), "{extra}: {e}");
    }
}

#[test]
fn amounts_parse_in_wei_gwei_and_ether() {
    use super::parse_wei;
    assert_eq!(parse_wei("12345").unwrap(), U256::from(12345));
    assert_eq!(parse_wei("30 gwei").unwrap(), U256::from(30_000_000_000u64));
    assert_eq!(
        parse_wei("1.5 ether").unwrap(),
        U256::from(1_500_000_000_000_000_000u128)
    );
    assert!(parse_wei("1 btc").is_err());
    assert!(parse_wei("1 ether extra").is_err());
}
