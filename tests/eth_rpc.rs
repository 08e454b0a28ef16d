//! `thresig eth-rpc` with a wallet library that does not know it (issue 21,
//! item 1): web3.py, unchanged, lists the accounts, sends a transfer (eth-rpc
//! fills the nonce, gas and fees from the upstream node, the cluster signs
//! the typed payload, the upstream executes it), signs a message and typed
//! data (recovered by eth-account), and gets a policy refusal as a JSON-RPC
//! error naming the knob. The upstream is an eth-tester chain (py-evm) served
//! over HTTP by `tests/evm/web3_through_eth_rpc.py`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use common::{cluster, ADMIN, CLIENT};

const TO: &str = "0x1111111111111111111111111111111111111111";

/// Kills the child when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn json_line(r: &mut impl BufRead, who: &str) -> serde_json::Value {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{who} said {line:?}: {e}"));
    assert!(v.get("error").is_none(), "{who} failed: {v}");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eth_rpc_serves_web3_py_unchanged() {
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/evm/web3_through_eth_rpc.py");
    let mut py = Killed(
        Command::new(tokio::task::block_in_place(common::evm::python))
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let mut py_in = py.0.stdin.take().unwrap();
    let mut py_out = BufReader::new(py.0.stdout.take().unwrap());
    let hello = tokio::task::block_in_place(|| json_line(&mut py_out, "the upstream"));
    let chain_id = hello["chain_id"].as_u64().unwrap();
    let upstream = hello["upstream"].as_str().unwrap().to_owned();

    let (_dir, c) = cluster(&["a", "b", "c"]).await;
    c.client(0, ADMIN)
        .unwrap()
        .create_key("k", 2, &[])
        .await
        .unwrap();
    common::set_policy(
        &c,
        &format!(
            r#"
[[client]]
name = "{CLIENT}"
keys = ["k"]
paths = ["m"]
payloads = ["eth_transaction", "eth_message", "eth_typed_data"]

[client.eth]
chain_ids = [{chain_id}]
recipients = [{{ address = "{TO}" }}]
max_value = "1 ether"
typed_data_domains = [{{ name = "thresig-test", chain_id = {chain_id} }}]

[[admin]]
name = "{ADMIN}"
operations = ["*"]
"#
        ),
    );
    let node_a = c.nodes[0].as_ref().unwrap();
    let mut rpc = Killed(
        Command::new(env!("CARGO_BIN_EXE_thresig"))
            .args(["eth-rpc", "--listen", "127.0.0.1:0", "--account", "k:m/3"])
            .args(["--upstream", &upstream])
            .arg("--certs")
            .arg(&c.layout.dir)
            .args(["--identity", CLIENT, "--server", "a"])
            .args(["--endpoint", &node_a.client_addr.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let mut rpc_out = BufReader::new(rpc.0.stdout.take().unwrap());
    let (address, url) = tokio::task::block_in_place(|| {
        let mut address = String::new();
        loop {
            let mut line = String::new();
            assert!(
                rpc_out.read_line(&mut line).unwrap() > 0,
                "eth-rpc exited before serving"
            );
            print!("eth-rpc| {line}");
            if let Some(rest) = line.strip_prefix("account ") {
                address = rest.split_whitespace().next().unwrap().to_owned();
            }
            if let Some(url) = line.trim().strip_prefix("serving Ethereum JSON-RPC on ") {
                return (address, url.to_owned());
            }
        }
    });
    let got = tokio::task::block_in_place(|| {
        writeln!(py_in, "{}", serde_json::json!({ "eth_rpc": url })).unwrap();
        py_in.flush().unwrap();
        json_line(&mut py_out, "web3.py")
    });
    println!("web3.py: {got}");
    assert_eq!(got["accounts"], serde_json::json!([address]));
    assert_eq!(got["status"], 1, "the transfer failed on chain");
    assert_eq!(got["from"], address.as_str());
    assert_eq!(
        got["nonce"], 0,
        "eth-rpc filled the nonce from the upstream"
    );
    assert_eq!(got["type"], 2, "an EIP-1559 transaction");
    assert_eq!(got["received"].as_u64(), Some(100_000_000_000_000_000));
    assert_eq!(got["message_signer"], address.as_str());
    assert_eq!(got["typed_signer"], address.as_str());
    let refusal = got["refusal"].as_str().expect("a stranger was paid");
    assert!(
        refusal.contains("eth.recipients") && refusal.contains("node "),
        "{refusal}"
    );
    let over = got["over_limit"]
        .as_str()
        .expect("2 ether passed a 1 ether max_value");
    assert!(
        over.contains("eth.max_value") && over.contains("-32000"),
        "{over}"
    );
    drop(rpc);
    c.stop().await;
}

/// Beyond loopback eth-rpc refuses to start without TLS and a bearer token;
/// with them, a request without the token is refused (HTTP 401) and one
/// with it is answered, over HTTPS checked against the served certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eth_rpc_beyond_loopback_needs_tls_and_a_bearer_token() {
    let (dir, c) = cluster(&["a", "b", "c"]).await;
    c.client(0, ADMIN)
        .unwrap()
        .create_key("k", 2, &[])
        .await
        .unwrap();
    let node_a = c.nodes[0].as_ref().unwrap();
    let base = |listen: &str| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_thresig"));
        cmd.args(["eth-rpc", "--listen", listen, "--account", "k"])
            .arg("--certs")
            .arg(&c.layout.dir)
            .args(["--identity", CLIENT, "--server", "a"])
            .args(["--endpoint", &node_a.client_addr.to_string()]);
        cmd
    };
    let out = tokio::task::block_in_place(|| base("0.0.0.0:0").output().unwrap());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(
        err.contains("--https-cert") && err.contains("--token-file"),
        "{err}"
    );

    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert_pem, key_pem, token) = (
        dir.path().join("rpc.pem"),
        dir.path().join("rpc.key"),
        dir.path().join("rpc.token"),
    );
    std::fs::write(&cert_pem, cert.cert.pem()).unwrap();
    std::fs::write(&key_pem, cert.signing_key.serialize_pem()).unwrap();
    std::fs::write(&token, "a-long-enough-test-token\n").unwrap();
    let mut rpc = Killed(
        base("127.0.0.1:0")
            .arg("--https-cert")
            .arg(&cert_pem)
            .arg("--https-key")
            .arg(&key_pem)
            .arg("--token-file")
            .arg(&token)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut rpc_out = BufReader::new(rpc.0.stdout.take().unwrap());
    let url = tokio::task::block_in_place(|| loop {
        let mut line = String::new();
        assert!(rpc_out.read_line(&mut line).unwrap() > 0, "eth-rpc exited");
        if let Some(rest) = line.trim().strip_prefix("serving Ethereum JSON-RPC on ") {
            assert!(rest.ends_with("(bearer token required)"), "{rest}");
            return rest.split_whitespace().next().unwrap().to_owned();
        }
    });
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    // The served certificate names localhost; dial it so.
    let url = url.replace("127.0.0.1", "localhost");
    let ask = |auth: &str| {
        let script = format!(
            r#"
import json, ssl, urllib.request, urllib.error
ctx = ssl.create_default_context(cafile={ca:?})
req = urllib.request.Request({url:?}, data=b'{{"jsonrpc":"2.0","id":1,"method":"eth_accounts","params":[]}}',
                             headers={{"Content-Type": "application/json", "Authorization": {auth:?}}})
try:
    r = urllib.request.urlopen(req, context=ctx)
    print(r.status, r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode())
"#,
            ca = cert_pem.display().to_string(),
        );
        let out = Command::new(common::evm::python())
            .args(["-c", &script])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let refused = tokio::task::block_in_place(|| ask("Bearer wrong-token-of-the-same"));
    assert!(
        refused.starts_with("401 ") && refused.contains("unauthorized"),
        "{refused}"
    );
    let answered = tokio::task::block_in_place(|| ask("Bearer a-long-enough-test-token"));
    assert!(
        answered.starts_with("200 ") && answered.contains("\"result\":[\"0x"),
        "{answered}"
    );
    drop(rpc);
    c.stop().await;
}
