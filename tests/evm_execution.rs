//! End to end with implementations this project did not write (issue 20): an
//! EIP-1559 transfer signed by a three-node cluster is decoded and its sender
//! recovered by eth-account, then executed by py-evm on an in-process chain
//! (eth-tester), with the balance changes the transaction says.
//!
//! The Python side is `tests/evm/py_evm_chain.py`, run by the interpreter
//! `common::evm::python` sets up.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use alloy_consensus::{SignableTransaction, TxEip1559};
use alloy_primitives::{TxKind, U256};
use common::{cluster, ADMIN, CLIENT};
use thresig::payload::Kind;

const TO: &str = "0x1111111111111111111111111111111111111111";
/// The chain process; killed when dropped.
struct Chain {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
}

impl Chain {
    fn start() -> Self {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/evm/py_evm_chain.py");
        let mut child = Command::new(common::evm::python())
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the py-evm chain");
        let input = child.stdin.take().unwrap();
        let output = BufReader::new(child.stdout.take().unwrap());
        Self {
            child,
            input,
            output,
        }
    }

    fn read(&mut self) -> serde_json::Value {
        let mut line = String::new();
        self.output.read_line(&mut line).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("the chain said {line:?}: {e}"));
        assert!(v.get("error").is_none(), "the chain failed: {v}");
        v
    }

    fn ask(&mut self, msg: serde_json::Value) -> serde_json::Value {
        writeln!(self.input, "{msg}").unwrap();
        self.input.flush().unwrap();
        self.read()
    }
}

impl Drop for Chain {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn int(v: &serde_json::Value, field: &str) -> i128 {
    v[field]
        .as_i64()
        .map(i128::from)
        .or_else(|| v[field].as_u64().map(i128::from))
        .or_else(|| v[field].as_str().and_then(|s| s.parse().ok()))
        .or_else(|| v[field].to_string().parse().ok())
        .unwrap_or_else(|| panic!("{field} is not a whole number in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_eip1559_transfer_signed_by_the_cluster_executes_on_py_evm() {
    let mut chain = tokio::task::block_in_place(Chain::start);
    let hello = tokio::task::block_in_place(|| chain.read());
    let chain_id = hello["chain_id"].as_u64().unwrap();
    let base_fee = hello["base_fee"].as_u64().unwrap();

    // The policy the test signs under: this chain, this recipient, caps.
    let (_dir, c) = cluster(&["a", "b", "c"]).await;
    let mut admin = c.client(0, ADMIN).unwrap();
    admin.create_key("k", 2, &[]).await.unwrap();
    let policy = format!(
        r#"
[[client]]
name = "{CLIENT}"
keys = ["k"]
paths = ["m"]
payloads = ["eth_transaction"]

[client.eth]
chain_ids = [{chain_id}]
recipients = [{{ address = "{TO}", label = "test recipient" }}]
max_value = "1 ether"
value_per_24h = "2 ether"
max_fee_per_gas = "100 gwei"
max_priority_fee_per_gas = "5 gwei"
max_gas = 21000

[[admin]]
name = "{ADMIN}"
operations = ["*"]
"#
    );
    println!("policy used:\n{policy}");
    common::set_policy(&c, &policy);

    let value: u128 = 250_000_000_000_000_000; // 0.25 ether
    let tx = TxEip1559 {
        chain_id,
        nonce: 0,
        gas_limit: 21_000,
        max_fee_per_gas: u128::from(base_fee) * 20,
        max_priority_fee_per_gas: 1_000_000_000,
        to: TxKind::Call(TO.parse().unwrap()),
        value: U256::from(value),
        access_list: Default::default(),
        input: Default::default(),
    };
    let mut client = c.client(1, CLIENT).unwrap();
    let signed = client
        .sign_payload(
            "k",
            Kind::EthTransaction,
            &tx.encoded_for_signing(),
            "m/7",
            "evm-e2e-1",
        )
        .await
        .unwrap()
        .payload
        .unwrap();

    let done = tokio::task::block_in_place(|| {
        let funded = chain.ask(serde_json::json!({
            "fund": signed.sender,
            "value": 1_000_000_000_000_000_000u64,
        }));
        assert_eq!(int(&funded, "balance"), 1_000_000_000_000_000_000);
        chain.ask(serde_json::json!({
            "raw": format!("0x{}", hex::encode(&signed.signed_transaction)),
        }))
    });
    println!("executed: {done}");
    assert_eq!(int(&done, "status"), 1, "the transaction failed: {done}");
    assert_eq!(
        done["sender"].as_str().unwrap(),
        signed.sender,
        "eth-account recovered another sender"
    );
    assert_eq!(done["to"].as_str().unwrap().to_lowercase(), TO);
    assert_eq!(int(&done, "value") as u128, value);
    assert_eq!(int(&done, "to_delta") as u128, value);
    let fee = int(&done, "gas_used") * int(&done, "effective_gas_price");
    assert_eq!(int(&done, "gas_used"), 21_000);
    assert_eq!(int(&done, "sender_delta"), -(value as i128) - fee);
    assert_eq!(
        done["hash"].as_str().unwrap().trim_start_matches("0x"),
        hex::encode(&signed.tx_hash),
        "py-evm hashed the transaction differently"
    );
    c.stop().await;
}
