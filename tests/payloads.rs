//! Typed payloads through a real cluster (issue 20): every node decodes what
//! it signs, the output is finished, checked with implementations this
//! project did not write (alloy's signer recovery, libbitcoinconsensus,
//! k256), a content policy refuses by rule and node, and a coordinator
//! cannot substitute what is signed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use alloy_consensus::transaction::SignerRecoverable;
use alloy_consensus::{SignableTransaction, Transaction, TxEip1559, TxEnvelope};
use alloy_eips::eip2718::Decodable2718;
use alloy_primitives::{keccak256, Address, Signature, TxKind, U256};
use common::{client_signer, cluster, ADMIN, CLIENT};
use thresig::client::ClientRequest;
use thresig::cluster::LocalCluster;
use thresig::domain::{Digest32, NodeName};
use thresig::node::{NodeError, Operation, Proposal};
use thresig::payload::Kind;

const TO: &str = "0x1111111111111111111111111111111111111111";

fn policy(extra: &str) -> String {
    format!(
        r#"
[[client]]
name = "{CLIENT}"
keys = ["*"]
paths = ["m"]
payloads = ["eth_transaction", "eth_message", "eth_typed_data", "bitcoin_psbt", "cosmos_sign_doc"]

[client.eth]
chain_ids = [1337]
max_value = "1 ether"
max_fee_per_gas = "100 gwei"
max_priority_fee_per_gas = "2 gwei"
max_gas = 100000
recipients = [{{ address = "{TO}", label = "cold wallet" }}]
typed_data_domains = [{{ name = "Ether Mail", chain_id = 1 }}]

[client.bitcoin]
network = "regtest"
destinations = [{{ address = "bcrt1qq5zs2pg9q5zs2pg9q5zs2pg9q5zs2pg9ajutfp", label = "exchange" }}]
max_amount_sat = 300000
max_fee_sat = 20000

[client.cosmos]
chain_ids = ["cosmoshub-4"]
messages = ["/cosmos.bank.v1beta1.MsgSend"]
recipients = [{{ address = "cosmos1to" }}]
max_amount = {{ uatom = "2000" }}
max_fee = {{ uatom = "1000" }}
{extra}
[[admin]]
name = "{ADMIN}"
operations = ["*"]
"#
    )
}

fn transfer(value: u128) -> TxEip1559 {
    TxEip1559 {
        chain_id: 1337,
        nonce: 0,
        gas_limit: 21_000,
        max_fee_per_gas: 20_000_000_000,
        max_priority_fee_per_gas: 1_000_000_000,
        to: TxKind::Call(TO.parse().unwrap()),
        value: U256::from(value),
        access_list: Default::default(),
        input: Default::default(),
    }
}

async fn setup() -> (tempfile::TempDir, LocalCluster) {
    let (dir, c) = cluster(&["a", "b", "c"]).await;
    let mut admin = c.client(0, ADMIN).unwrap();
    admin.create_key("k", 2, &[]).await.unwrap();
    common::set_policy(&c, &policy(""));
    (dir, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ethereum_payloads_are_signed_finished_and_refused_by_rule() {
    let (_dir, c) = setup().await;
    let mut client = c.client(1, CLIENT).unwrap();
    let addr: Address = client
        .public_key("k", "m/0")
        .await
        .unwrap()
        .eth_address
        .parse()
        .unwrap();

    // An EIP-1559 transfer: the signed transaction decodes with alloy, its
    // signer is the key's address, and the hash is the keccak of it.
    let tx = transfer(10u128.pow(17));
    let resp = client
        .sign_payload(
            "k",
            Kind::EthTransaction,
            &tx.encoded_for_signing(),
            "m/0",
            "",
        )
        .await
        .unwrap();
    let out = resp.payload.unwrap();
    assert_eq!(out.kind, "eth_transaction");
    assert!(
        out.summary.contains("send 0.1 ETH to 0x1111"),
        "{}",
        out.summary
    );
    let env = TxEnvelope::decode_2718(&mut out.signed_transaction.as_slice()).unwrap();
    assert_eq!(env.recover_signer().unwrap(), addr);
    assert_eq!(env.value(), U256::from(10u128.pow(17)));
    assert_eq!(out.sender, addr.to_checksum(None));
    assert_eq!(out.tx_hash, keccak256(&out.signed_transaction).to_vec());

    // EIP-191 and EIP-712: r || s || v that recovers the key's address.
    let resp = client
        .sign_payload("k", Kind::EthMessage, b"log in to example.org", "m/0", "")
        .await
        .unwrap();
    let sig = Signature::from_raw(&resp.payload.unwrap().signature).unwrap();
    assert_eq!(
        sig.recover_address_from_msg(b"log in to example.org".as_slice())
            .unwrap(),
        addr
    );
    let mail = include_str!("fixtures/eip712_mail.json");
    let resp = client
        .sign_payload("k", Kind::EthTypedData, mail.as_bytes(), "m/0", "")
        .await
        .unwrap();
    let sig = Signature::from_raw(&resp.payload.unwrap().signature).unwrap();
    let digest: [u8; 32] =
        hex::decode("be609aee343fb3c4b28e1df9e632fca64fcfaede20f02e86244efddf30957bd2")
            .unwrap()
            .try_into()
            .unwrap();
    assert_eq!(
        sig.recover_address_from_prehash(&digest.into()).unwrap(),
        addr
    );

    // Refusals name the rule and the node; nothing is signed.
    let cases: Vec<(TxEip1559, &str)> = vec![
        (transfer(2 * 10u128.pow(18)), "eth.max_value"),
        (
            TxEip1559 {
                chain_id: 1,
                ..transfer(1)
            },
            "eth.chain_ids",
        ),
        (
            TxEip1559 {
                to: TxKind::Call(Address::repeat_byte(0x99)),
                ..transfer(1)
            },
            "eth.recipients",
        ),
        (
            TxEip1559 {
                max_fee_per_gas: 200_000_000_000,
                ..transfer(1)
            },
            "eth.max_fee_per_gas",
        ),
        (
            TxEip1559 {
                max_priority_fee_per_gas: 3_000_000_000,
                ..transfer(1)
            },
            "eth.max_priority_fee_per_gas",
        ),
        (
            TxEip1559 {
                gas_limit: 100_001,
                ..transfer(1)
            },
            "eth.max_gas",
        ),
        (
            TxEip1559 {
                to: TxKind::Create,
                input: vec![0x60, 0x00].into(),
                ..transfer(0)
            },
            "eth.contract_creation",
        ),
        (
            TxEip1559 {
                to: TxKind::Call(Address::repeat_byte(0x22)),
                input: vec![0xde, 0xad, 0xbe, 0xef].into(),
                ..transfer(0)
            },
            "eth.contracts",
        ),
    ];
    for (tx, knob) in cases {
        let err = client
            .sign_payload(
                "k",
                Kind::EthTransaction,
                &tx.encoded_for_signing(),
                "m/0",
                "",
            )
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(knob), "{knob}: {msg}");
        assert!(msg.contains("node b"), "{knob}: the node is named: {msg}");
        assert!(
            msg.contains("PermissionDenied") || msg.contains("permission"),
            "{msg}"
        );
    }
    // A typed-data domain that is not listed.
    let other = mail.replace("Ether Mail", "Phishing Mail");
    let err = client
        .sign_payload("k", Kind::EthTypedData, other.as_bytes(), "m/0", "")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("eth.typed_data_domains"), "{err}");
    // Blind signing is off for this client (it lists payload kinds).
    let err = client.sign("k", [7; 32], "m/0", "").await.unwrap_err();
    assert!(err.to_string().contains("raw_digest"), "{err}");
    // A payload that does not decode: INVALID_ARGUMENT naming the field.
    let err = client
        .sign_payload("k", Kind::EthTransaction, &[0x02, 0xc1, 0x80], "m/0", "")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("eth_transaction"), "{err}");
    assert!(
        err.to_string().contains("InvalidArgument") || err.to_string().contains("invalid"),
        "{err}"
    );
    c.stop().await;
}

/// What a coordinator that changes a payload request sends: the client's
/// signature over `signed`, the proposal for `altered` (with the eid every
/// participant computes for it).
fn tampered(c: &LocalCluster, signed: &ClientRequest, altered: ClientRequest) -> Proposal {
    let auth = client_signer(c).sign(signed).unwrap();
    let participants = vec![NodeName::parse("a").unwrap(), NodeName::parse("b").unwrap()];
    let nonce = vec![4u8; 32];
    Proposal {
        eid: thresig::node::ops::sign::eid(&altered, 0, &participants, &nonce),
        nonce,
        admin: None,
        op: Operation::Sign {
            lifecycle_seq: 0,
            epoch: 0,
            request: Box::new(altered),
            auth: Box::new(auth),
            participants,
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_coordinator_cannot_substitute_what_is_signed() {
    let (_dir, c) = setup().await;
    let client = c.client(0, CLIENT).unwrap();
    let honest_tx = transfer(1).encoded_for_signing();
    let mut signed = client
        .payload_request("k", Kind::EthTransaction, &honest_tx, "m/0", "sub-1")
        .unwrap();
    // The digest the payload really hashes to, as the coordinator would set it.
    let pk = client_pk(&c).await;
    let target = thresig::payload::decode(
        Kind::EthTransaction,
        &honest_tx,
        &thresig::payload::KeyView {
            key_type: thresig::domain::KeyType::Secp256k1,
            public_key: &pk.0,
            chain_code: &pk.1,
            path: &signed.path,
        },
    )
    .unwrap()
    .targets
    .remove(0);
    signed.digest = Digest32(target.digest);
    let replay = target.replay.unwrap();
    signed.slot = Some(thresig::client::Slot {
        scope: replay.scope,
        height: replay.position,
        round: 0,
        step: 0,
    });
    // Another slot (a nonce the transaction does not have).
    let mut other_slot = signed.clone();
    other_slot.slot.as_mut().unwrap().height = 7;
    // Another transaction's digest under the honest payload.
    let mut other_digest = signed.clone();
    other_digest.digest = Digest32(*transfer(10u128.pow(18)).signature_hash());
    // Another payload (the client signed the first).
    let mut other_payload = signed.clone();
    other_payload.payload.as_mut().unwrap().bytes = transfer(5).encoded_for_signing().into();
    // An item the payload does not have.
    let mut other_item = signed.clone();
    other_item.payload.as_mut().unwrap().item = 1;
    // Another path than the client's.
    let mut other_path = signed.clone();
    other_path.path = thresig::domain::DerivationPath::parse("m/1").unwrap();
    let na = NodeName::parse("a").unwrap();
    for (what, altered, needle) in [
        ("digest", other_digest, "hashes to"),
        ("slot", other_slot, "names replay slot"),
        ("payload", other_payload, "does not cover this request"),
        ("item", other_item, "names item 1"),
        ("path", other_path, "does not cover this request"),
    ] {
        for honest in [1usize, 2] {
            let err = c.nodes[honest]
                .as_ref()
                .unwrap()
                .node
                .on_propose(&na, tampered(&c, &signed, altered.clone()))
                .await
                .unwrap_err();
            assert!(
                matches!(err.cause(), NodeError::PermissionDenied(m) if m.contains(needle)),
                "altered {what} at node {honest}: {err}"
            );
            assert!(
                c.nodes[honest]
                    .as_ref()
                    .unwrap()
                    .node
                    .store()
                    .ledger_get(&altered.key_id, &altered.ledger_id())
                    .unwrap()
                    .is_none(),
                "altered {what}: node {honest} recorded it"
            );
        }
    }
    // Positive control: the honest proposal is signed by both participants.
    let p = tampered(&c, &signed, signed.clone());
    let nb = NodeName::parse("b").unwrap();
    let (ra, rb) = tokio::join!(
        c.nodes[0].as_ref().unwrap().node.on_propose(&nb, p.clone()),
        c.nodes[1].as_ref().unwrap().node.on_propose(&na, p)
    );
    assert_eq!(ra.unwrap(), rb.unwrap());
    c.stop().await;
}

/// The key's master public key and chain code.
async fn client_pk(c: &LocalCluster) -> ([u8; 33], [u8; 32]) {
    let mut client = c.client(0, CLIENT).unwrap();
    let info = client.public_key("k", "").await.unwrap();
    (
        info.public_key.as_slice().try_into().unwrap(),
        info.chain_code.as_slice().try_into().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_psbt_and_a_cosmos_sign_doc_are_signed_and_verified_outside() {
    use bitcoin::bip32::{ChainCode, ChildNumber, DerivationPath, Fingerprint, Xpub};
    use bitcoin::hashes::Hash;
    use bitcoin::psbt::Psbt;
    use bitcoin::secp256k1::{PublicKey, Secp256k1};
    use bitcoin::{
        absolute, transaction, Amount, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut,
        Txid,
    };
    use std::str::FromStr;

    let (_dir, c) = setup().await;
    let (pk, cc) = client_pk(&c).await;
    let secp = Secp256k1::verification_only();
    let xpub = Xpub {
        network: bitcoin::NetworkKind::Test,
        depth: 0,
        parent_fingerprint: Fingerprint::default(),
        child_number: ChildNumber::Normal { index: 0 },
        public_key: PublicKey::from_slice(&pk).unwrap(),
        chain_code: ChainCode::from(cc),
    };
    let child = |p: &str| {
        let path = DerivationPath::from_str(p).unwrap();
        (xpub.derive_pub(&secp, &path).unwrap().public_key, path)
    };
    // Three inputs at m/0/0..2 (P2WPKH, P2SH-P2WPKH, P2PKH), an output to
    // the listed destination and change at m/1/0.
    let keys: Vec<_> = (0..3).map(|i| child(&format!("m/0/{i}"))).collect();
    let cpk = |k: &PublicKey| bitcoin::CompressedPublicKey(*k);
    let wpkh = |k: &PublicKey| ScriptBuf::new_p2wpkh(&cpk(k).wpubkey_hash());
    let spks = [
        wpkh(&keys[0].0),
        ScriptBuf::new_p2sh(&wpkh(&keys[1].0).script_hash()),
        ScriptBuf::new_p2pkh(&bitcoin::PublicKey::new(keys[2].0).pubkey_hash()),
    ];
    let prev = Transaction {
        version: transaction::Version::TWO,
        lock_time: absolute::LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint::new(Txid::from_byte_array([1; 32]), 0),
            ..Default::default()
        }],
        output: spks
            .iter()
            .map(|s| TxOut {
                value: Amount::from_sat(100_000),
                script_pubkey: s.clone(),
            })
            .collect(),
    };
    let (change_pk, change_path) = child("m/1/0");
    let dest = ScriptBuf::new_p2wpkh(&bitcoin::WPubkeyHash::from_byte_array([5; 20]));
    let unsigned = Transaction {
        version: transaction::Version::TWO,
        lock_time: absolute::LockTime::ZERO,
        input: (0..3)
            .map(|i| TxIn {
                previous_output: OutPoint::new(prev.compute_txid(), i),
                sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                ..Default::default()
            })
            .collect(),
        output: vec![
            TxOut {
                value: Amount::from_sat(250_000),
                script_pubkey: dest,
            },
            TxOut {
                value: Amount::from_sat(40_000),
                script_pubkey: wpkh(&change_pk),
            },
        ],
    };
    let mut psbt = Psbt::from_unsigned_tx(unsigned).unwrap();
    let fp = xpub.fingerprint();
    for (i, (k, path)) in keys.iter().enumerate() {
        let input = &mut psbt.inputs[i];
        input.bip32_derivation.insert(*k, (fp, path.clone()));
        if i == 2 {
            input.non_witness_utxo = Some(prev.clone());
        } else {
            input.witness_utxo = Some(prev.output[i].clone());
        }
        if i == 1 {
            input.redeem_script = Some(wpkh(k));
        }
    }
    psbt.outputs[1]
        .bip32_derivation
        .insert(change_pk, (fp, change_path));
    let mut client = c.client(2, CLIENT).unwrap();
    let resp = client
        .sign_payload("k", Kind::BitcoinPsbt, &psbt.serialize(), "", "psbt-1")
        .await
        .unwrap();
    let out = resp.payload.unwrap();
    assert_eq!(out.inputs.len(), 3);
    assert_eq!(out.inputs[2].path, "m/0/2");
    assert!(out.summary.contains("250000 sat"), "{}", out.summary);
    let with_sigs = Psbt::deserialize(&out.psbt).unwrap();
    assert!(with_sigs.inputs.iter().all(|i| i.partial_sigs.len() == 1));
    for (i, o) in prev.output.iter().enumerate() {
        bitcoinconsensus::verify(
            o.script_pubkey.as_bytes(),
            o.value.to_sat(),
            &out.signed_transaction,
            None,
            i,
        )
        .unwrap_or_else(|e| panic!("input {i}: {e:?}"));
    }
    // The same request again is answered from the ledgers: the same
    // signatures, no new session.
    let again = client
        .sign_payload("k", Kind::BitcoinPsbt, &psbt.serialize(), "", "psbt-1")
        .await
        .unwrap();
    assert_eq!(
        again.payload.unwrap().signed_transaction,
        out.signed_transaction
    );
    // Over the per-transaction amount: refused by rule.
    let mut big = psbt.clone();
    big.unsigned_tx.output[0].value = Amount::from_sat(300_001);
    big.unsigned_tx.output[1].value = Amount::from_sat(1);
    let err = client
        .sign_payload("k", Kind::BitcoinPsbt, &big.serialize(), "", "")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("bitcoin.max_amount_sat"), "{err}");

    // Cosmos: the signature in TxRaw verifies under the key at m/0 over the
    // SHA-256 of the SignDoc bytes (k256, independently).
    let pk0 = client.public_key("k", "m/0").await.unwrap().public_key;
    let doc = sign_doc(&pk0, 1500);
    let resp = client
        .sign_payload("k", Kind::CosmosSignDoc, &doc, "m/0", "")
        .await
        .unwrap();
    let out = resp.payload.unwrap();
    use cosmos_sdk_proto::prost::Message;
    let raw =
        cosmos_sdk_proto::cosmos::tx::v1beta1::TxRaw::decode(out.signed_transaction.as_slice())
            .unwrap();
    use k256::ecdsa::signature::hazmat::PrehashVerifier;
    let vk = k256::ecdsa::VerifyingKey::from_sec1_bytes(&pk0).unwrap();
    let sig = k256::ecdsa::Signature::from_slice(&raw.signatures[0]).unwrap();
    use sha2::Digest;
    vk.verify_prehash(&sha2::Sha256::digest(&doc), &sig)
        .unwrap();
    let err = client
        .sign_payload("k", Kind::CosmosSignDoc, &sign_doc(&pk0, 2001), "m/0", "")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cosmos.max_amount"), "{err}");
    c.stop().await;
}

fn sign_doc(pk: &[u8], amount: u64) -> Vec<u8> {
    use cosmos_sdk_proto::cosmos::bank::v1beta1::MsgSend;
    use cosmos_sdk_proto::cosmos::base::v1beta1::Coin;
    use cosmos_sdk_proto::cosmos::crypto::secp256k1::PubKey;
    use cosmos_sdk_proto::cosmos::tx::v1beta1::{
        AuthInfo, Fee, ModeInfo, SignDoc, SignerInfo, TxBody,
    };
    use cosmos_sdk_proto::prost::Message;
    use cosmos_sdk_proto::Any;
    let send = MsgSend {
        from_address: "cosmos1from".into(),
        to_address: "cosmos1to".into(),
        amount: vec![Coin {
            denom: "uatom".into(),
            amount: amount.to_string(),
        }],
    };
    let body = TxBody {
        messages: vec![Any {
            type_url: "/cosmos.bank.v1beta1.MsgSend".into(),
            value: send.encode_to_vec(),
        }],
        ..Default::default()
    };
    let auth = AuthInfo {
        signer_infos: vec![SignerInfo {
            public_key: Some(Any {
                type_url: "/cosmos.crypto.secp256k1.PubKey".into(),
                value: PubKey { key: pk.to_vec() }.encode_to_vec(),
            }),
            mode_info: Some(ModeInfo::default()),
            sequence: 3,
        }],
        fee: Some(Fee {
            amount: vec![Coin {
                denom: "uatom".into(),
                amount: "500".into(),
            }],
            gas_limit: 200_000,
            ..Default::default()
        }),
        ..Default::default()
    };
    SignDoc {
        body_bytes: body.encode_to_vec(),
        auth_info_bytes: auth.encode_to_vec(),
        chain_id: "cosmoshub-4".into(),
        account_number: 9,
    }
    .encode_to_vec()
}

/// Runs the thresig binary as client `CLIENT` of node a; (success, stdout,
/// stderr).
async fn cli(c: &LocalCluster, args: &[&str]) -> (bool, String, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_thresig"));
    cmd.args(args)
        .arg("--endpoint")
        .arg(c.configs[0].listen_client.to_string())
        .arg("--certs")
        .arg(&c.layout.dir)
        .arg("--identity")
        .arg(CLIENT);
    let out = cmd.output().await.unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cli_shows_what_it_signs_and_dry_runs_a_policy() {
    let (dir, c) = setup().await;
    let file = dir.path().join("tx.bin");
    std::fs::write(&file, transfer(10u128.pow(17)).encoded_for_signing()).unwrap();
    let path = file.to_str().unwrap();
    // A dry run: every node's verdict, nothing signed.
    let (ok, out, err) = cli(
        &c,
        &[
            "sign",
            "--key",
            "k",
            "--path",
            "m/0",
            "--eth-tx",
            path,
            "--dry-run",
            "--request-id",
            "dry-1",
        ],
    )
    .await;
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("would sign   EIP-1559 transaction on chain 1337"),
        "{out}"
    );
    for n in ["a", "b", "c"] {
        assert!(out.contains(&format!("node {n:<8} allowed")), "{out}");
    }
    assert!(out.contains("nothing was signed"), "{out}");
    let key = thresig::domain::KeyId::parse("k").unwrap();
    for n in c.nodes.iter().flatten() {
        assert!(
            n.node.store().ledger_get(&key, "dry-1").unwrap().is_none(),
            "a dry run recorded a signature"
        );
    }
    // One node's stricter policy shows up as that node's refusal (exit 1).
    let strict = policy("").replace("max_value = \"1 ether\"", "max_value = \"0.01 ether\"");
    std::fs::write(c.configs[2].policy.as_ref().unwrap(), strict).unwrap();
    c.nodes[2].as_ref().unwrap().node.reload_policy().unwrap();
    let (ok, out, _) = cli(
        &c,
        &[
            "sign",
            "--key",
            "k",
            "--path",
            "m/0",
            "--eth-tx",
            path,
            "--dry-run",
        ],
    )
    .await;
    assert!(!ok, "{out}");
    assert!(out.contains("node c        REFUSED"), "{out}");
    assert!(out.contains("eth.max_value"), "{out}");
    assert!(out.contains("node a        allowed"), "{out}");
    // Signing prints the summary first, then the signed transaction.
    let (ok, out, err) = cli(
        &c,
        &["sign", "--key", "k", "--path", "m/0", "--eth-tx", path],
    )
    .await;
    assert!(ok, "{out}{err}");
    let summary = out.find("signing      EIP-1559").unwrap();
    let signed = out.find("signed tx    0x02").unwrap();
    assert!(summary < signed, "{out}");
    assert!(out.contains("sender       0x"), "{out}");
    // A payload that does not decode is refused here, naming the field.
    let (ok, _, err) = cli(&c, &["sign", "--key", "k", "--eth-tx", "0x02c180"]).await;
    assert!(!ok);
    assert!(err.contains("eth_transaction"), "{err}");
    c.stop().await;
}
