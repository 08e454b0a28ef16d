//! Replay and double-spend protection derived from the payload (issue 20):
//! per (chain, sender) an Ethereum nonce, per outpoint a Bitcoin spend, on
//! every node, durable, with the committee gossip that slots use. Conflicting
//! requests race through different coordinators; at most one is ever signed,
//! and a restart forgets nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use alloy_consensus::{SignableTransaction, TxEip1559};
use alloy_primitives::{TxKind, U256};
use common::{cluster, ADMIN, CLIENT};
use thresig::cluster::LocalCluster;
use thresig::payload::Kind;

const TO: &str = "0x1111111111111111111111111111111111111111";

fn policy() -> String {
    format!(
        r#"
[[client]]
name = "{CLIENT}"
keys = ["*"]
paths = ["m"]
payloads = ["eth_transaction", "bitcoin_psbt"]

[client.eth]
chain_ids = [1337]
recipients = [{{ address = "{TO}" }}]

[client.bitcoin]
network = "regtest"
max_fee_sat = 20000
destinations = [
  {{ address = "bcrt1qq5zs2pg9q5zs2pg9q5zs2pg9q5zs2pg9ajutfp" }},
  {{ address = "bcrt1qqcrqvpsxqcrqvpsxqcrqvpsxqcrqvpsxvk6wzh" }},
]

[[admin]]
name = "{ADMIN}"
operations = ["*"]
"#
    )
}

fn tx(nonce: u64, value: u64) -> Vec<u8> {
    TxEip1559 {
        chain_id: 1337,
        nonce,
        gas_limit: 21_000,
        max_fee_per_gas: 20_000_000_000,
        max_priority_fee_per_gas: 1_000_000_000,
        to: TxKind::Call(TO.parse().unwrap()),
        value: U256::from(value),
        access_list: Default::default(),
        input: Default::default(),
    }
    .encoded_for_signing()
}

async fn setup() -> (tempfile::TempDir, LocalCluster) {
    let (dir, c) = cluster(&["a", "b", "c"]).await;
    let mut admin = c.client(0, ADMIN).unwrap();
    admin.create_key("k", 2, &[]).await.unwrap();
    common::set_policy(&c, &policy());
    (dir, c)
}

/// Signs `payload` through node `i`; Ok(signed bytes) or the error text.
async fn sign(c: &LocalCluster, i: usize, kind: Kind, payload: &[u8]) -> Result<Vec<u8>, String> {
    let mut client = c.client(i, CLIENT).unwrap();
    client
        .sign_payload("k", kind, payload, "m/0", "")
        .await
        .map(|r| r.payload.unwrap().signed_transaction)
        .map_err(|e| e.to_string())
}

/// Tries both conflicting requests through every coordinator: at most one
/// is ever signed. Returns the one signed, if any. (After a race neither
/// may be: a node that admitted the other one shows its evidence, and
/// that ends the request; see SECURITY.md.)
async fn at_most_one(c: &LocalCluster, kind: Kind, x: &[u8], y: &[u8]) -> Option<Vec<u8>> {
    let mut won = None;
    for mine in [x, y] {
        for i in 0..3 {
            match sign(c, i, kind, mine).await {
                Ok(_) => {
                    assert!(
                        won.is_none() || won.as_deref() == Some(mine),
                        "both conflicting requests were signed"
                    );
                    won = Some(mine.to_vec());
                }
                Err(e) => refused_as_replay(&e),
            }
        }
    }
    won
}

fn refused_as_replay(e: &str) {
    assert!(
        e.contains("double-sign") || e.contains("watermark") || e.contains("already signed"),
        "not a replay refusal: {e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_transactions_at_one_nonce_are_never_both_signed() {
    let (_dir, mut c) = setup().await;
    // In turn: the first transaction at a nonce is signed; another at that
    // nonce is refused through every node; the same one again is signed
    // (one transaction, whoever asks); nothing below the watermark.
    sign(&c, 0, Kind::EthTransaction, &tx(0, 1)).await.unwrap();
    for i in 0..3 {
        refused_as_replay(
            &sign(&c, i, Kind::EthTransaction, &tx(0, 2))
                .await
                .unwrap_err(),
        );
    }
    sign(&c, 2, Kind::EthTransaction, &tx(0, 1)).await.unwrap();
    sign(&c, 1, Kind::EthTransaction, &tx(2, 1)).await.unwrap();
    refused_as_replay(
        &sign(&c, 0, Kind::EthTransaction, &tx(1, 1))
            .await
            .unwrap_err(),
    );
    // At once, through two coordinators: never both, then or later.
    let mut raced = Vec::new();
    for nonce in 3..6u64 {
        let (x, y) = (tx(nonce, 1), tx(nonce, 2));
        let (rx, ry) = tokio::join!(
            sign(&c, (nonce % 3) as usize, Kind::EthTransaction, &x),
            sign(&c, ((nonce + 1) % 3) as usize, Kind::EthTransaction, &y)
        );
        assert!(
            !(rx.is_ok() && ry.is_ok()),
            "nonce {nonce}: both transactions were signed"
        );
        for e in [rx.err(), ry.err()].into_iter().flatten() {
            refused_as_replay(&e);
        }
        let won = at_most_one(&c, Kind::EthTransaction, &x, &y).await;
        raced.push((x, y, won));
    }
    // A restart of every node forgets nothing.
    for i in 0..3 {
        c.stop_node(i).await;
    }
    for i in 0..3 {
        c.start_node(i).await.unwrap();
    }
    for i in 0..3 {
        refused_as_replay(
            &sign(&c, i, Kind::EthTransaction, &tx(0, 2))
                .await
                .unwrap_err(),
        );
    }
    for (x, y, won) in &raced {
        let after = at_most_one(&c, Kind::EthTransaction, x, y).await;
        // Never the other one; the winner itself may have become
        // unsignable (the attempts at the loser raise watermarks too).
        if let (Some(w), Some(a)) = (won, &after) {
            assert_eq!(a, w, "the other transaction was signed after a restart");
        }
    }
    // The next nonce is signed.
    sign(&c, 1, Kind::EthTransaction, &tx(6, 5)).await.unwrap();
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_spends_of_one_outpoint_are_never_both_signed() {
    use bitcoin::bip32::{ChainCode, ChildNumber, DerivationPath, Fingerprint, Xpub};
    use bitcoin::hashes::Hash;
    use bitcoin::psbt::Psbt;
    use bitcoin::secp256k1::{PublicKey, Secp256k1};
    use bitcoin::{
        absolute, transaction, Amount, OutPoint, ScriptBuf, Transaction, TxIn, TxOut, Txid,
    };
    use std::str::FromStr;

    let (_dir, mut c) = setup().await;
    let info = c
        .client(0, CLIENT)
        .unwrap()
        .public_key("k", "")
        .await
        .unwrap();
    let xpub = Xpub {
        network: bitcoin::NetworkKind::Test,
        depth: 0,
        parent_fingerprint: Fingerprint::default(),
        child_number: ChildNumber::Normal { index: 0 },
        public_key: PublicKey::from_slice(&info.public_key).unwrap(),
        chain_code: ChainCode::from(<[u8; 32]>::try_from(info.chain_code.as_slice()).unwrap()),
    };
    let path = DerivationPath::from_str("m/0/0").unwrap();
    let key = xpub
        .derive_pub(&Secp256k1::verification_only(), &path)
        .unwrap()
        .public_key;
    let spk = ScriptBuf::new_p2wpkh(&bitcoin::CompressedPublicKey(key).wpubkey_hash());
    // One output of the key, spent to either of two destinations.
    let spend = |seed: u8, byte: u8| {
        let outpoint = OutPoint::new(Txid::from_byte_array([seed; 32]), 0);
        let tx = Transaction {
            version: transaction::Version::TWO,
            lock_time: absolute::LockTime::ZERO,
            input: vec![TxIn {
                previous_output: outpoint,
                ..Default::default()
            }],
            output: vec![TxOut {
                value: Amount::from_sat(90_000),
                script_pubkey: ScriptBuf::new_p2wpkh(&bitcoin::WPubkeyHash::from_byte_array(
                    [byte; 20],
                )),
            }],
        };
        let mut psbt = Psbt::from_unsigned_tx(tx).unwrap();
        psbt.inputs[0].witness_utxo = Some(TxOut {
            value: Amount::from_sat(100_000),
            script_pubkey: spk.clone(),
        });
        psbt.inputs[0]
            .bip32_derivation
            .insert(key, (xpub.fingerprint(), path.clone()));
        psbt.serialize()
    };
    // In turn: one spend signed, the other refused through every node.
    sign(&c, 0, Kind::BitcoinPsbt, &spend(9, 5)).await.unwrap();
    for i in 0..3 {
        refused_as_replay(
            &sign(&c, i, Kind::BitcoinPsbt, &spend(9, 6))
                .await
                .unwrap_err(),
        );
    }
    // At once, through two coordinators: never both, then or later.
    let mut raced = Vec::new();
    for seed in 1..4u8 {
        let (x, y) = (spend(seed, 5), spend(seed, 6));
        let (rx, ry) = tokio::join!(
            sign(&c, (seed % 3) as usize, Kind::BitcoinPsbt, &x),
            sign(&c, ((seed + 1) % 3) as usize, Kind::BitcoinPsbt, &y)
        );
        assert!(
            !(rx.is_ok() && ry.is_ok()),
            "outpoint {seed}: both spends were signed"
        );
        let won = at_most_one(&c, Kind::BitcoinPsbt, &x, &y).await;
        raced.push((x, y, won));
    }
    for i in 0..3 {
        c.stop_node(i).await;
    }
    for i in 0..3 {
        c.start_node(i).await.unwrap();
    }
    for i in 0..3 {
        refused_as_replay(
            &sign(&c, i, Kind::BitcoinPsbt, &spend(9, 6))
                .await
                .unwrap_err(),
        );
    }
    for (x, y, won) in &raced {
        let after = at_most_one(&c, Kind::BitcoinPsbt, x, y).await;
        if let (Some(w), Some(a)) = (won, &after) {
            assert_eq!(a, w, "the other spend was signed after a restart");
        }
    }
    c.stop().await;
}
