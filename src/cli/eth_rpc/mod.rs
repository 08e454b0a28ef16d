//! `thresig eth-rpc`: an Ethereum JSON-RPC signer in front of the cluster,
//! so that ethers, web3.py, viem or Foundry talk to threshold keys
//! unchanged (as they talk to Web3Signer's eth1 mode). It is a client-side
//! process: it holds the client certificate and signs every request itself,
//! so it adds no trust; every node still decodes the typed payload and
//! applies its policy. Signing methods go to the cluster; every other method
//! is passed to `--upstream`.

mod upstream;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{json, Value};

use super::conn::Conn;
use super::UsageError;
use crate::client::Client;
use crate::payload::eth_wallet::{quantity, WalletTx};
use crate::payload::Kind;
use crate::pki::Role;
use upstream::{RpcError, Upstream};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example (a local node on 8546 upstream, key 'val' at two paths):
  thresig eth-rpc --account val:m/0 --account val:m/1 --upstream http://127.0.0.1:8546 \\
      --certs certs/dev --identity validator
Then point a wallet library at http://127.0.0.1:8545, e.g. in web3.py
  Web3(Web3.HTTPProvider(\"http://127.0.0.1:8545\")).eth.send_transaction({...})

Signed here: eth_accounts, eth_signTransaction, eth_sendTransaction (a missing nonce, gas
limit, fees or chain id are asked of the upstream node), eth_sign, personal_sign,
eth_signTypedData_v4. Everything else is passed to --upstream unchanged. A policy
refusal is a JSON-RPC error (-32000) whose message names the node, rule and knob."
)]
pub struct Args {
    /// Address to serve JSON-RPC on. Beyond loopback it needs --https-cert,
    /// --https-key and --token-file.
    #[arg(long, default_value = "127.0.0.1:8545")]
    listen: SocketAddr,
    /// Serve HTTPS with this certificate chain (PEM)...
    #[arg(long, requires = "https_key")]
    https_cert: Option<std::path::PathBuf>,
    /// ...and its private key (PEM).
    #[arg(long, requires = "https_cert")]
    https_key: Option<std::path::PathBuf>,
    /// Require `Authorization: Bearer <token>` on every request, the token
    /// being this file's content (at least 16 characters; never on the
    /// command line).
    #[arg(long)]
    token_file: Option<std::path::PathBuf>,
    /// An account to serve, as KEY or KEY:PATH (a non-hardened BIP-32 path,
    /// default m); repeat for more. Its address is the key's at that path.
    #[arg(long = "account", required = true, value_name = "KEY[:PATH]")]
    accounts: Vec<String>,
    /// The Ethereum node other methods go to (http:// only).
    #[arg(long)]
    upstream: Option<String>,
    /// The chain id, when there is no upstream to ask.
    #[arg(long)]
    chain_id: Option<u64>,
    #[command(flatten)]
    conn: Conn,
}

/// An address this process signs for.
struct Account {
    address: String,
    key: String,
    path: String,
}

struct State {
    client: Client,
    /// The bearer token every request must carry, if one is required.
    token: Option<String>,
    accounts: Vec<Account>,
    upstream: Option<Upstream>,
    chain_id: Option<u64>,
}

/// The largest request body read.
const MAX_REQUEST: usize = 4 << 20;

pub async fn run(a: Args) -> anyhow::Result<()> {
    if !a.listen.ip().is_loopback() && (a.https_cert.is_none() || a.token_file.is_none()) {
        return Err(UsageError(format!(
            "--listen {}: beyond loopback, eth-rpc needs --https-cert, --https-key and --token-file \
             (anyone who reaches it could otherwise ask for signatures as this client)",
            a.listen
        ))
        .into());
    }
    let tls = match (&a.https_cert, &a.https_key) {
        (Some(c), Some(k)) => Some(tokio_rustls::TlsAcceptor::from(
            crate::transport::tls::https_server_config(c, k).with_context(|| {
                format!("--https-cert {} / --https-key {}", c.display(), k.display())
            })?,
        )),
        _ => None,
    };
    let token = match &a.token_file {
        Some(f) => {
            let t = std::fs::read_to_string(f)
                .with_context(|| format!("--token-file {}", f.display()))?
                .trim()
                .to_owned();
            if t.len() < 16 {
                return Err(UsageError(format!(
                    "--token-file {}: the token must be at least 16 characters",
                    f.display()
                ))
                .into());
            }
            Some(t)
        }
        None => None,
    };
    let upstream = a.upstream.as_deref().map(Upstream::parse).transpose()?;
    let mut client = a.conn.client(Role::Client)?;
    let mut accounts = Vec::new();
    for spec in &a.accounts {
        let (key, path) = spec.split_once(':').unwrap_or((spec.as_str(), "m"));
        let pk = client
            .public_key(key, path)
            .await
            .with_context(|| format!("--account {spec}: reading the key's public key"))?;
        anyhow::ensure!(
            !pk.eth_address.is_empty(),
            "--account {spec}: key {key} is {}, not secp256k1: it has no Ethereum address",
            pk.key_type
        );
        println!("account {} = key {key} at {path}", pk.eth_address);
        accounts.push(Account {
            address: pk.eth_address,
            key: key.to_owned(),
            path: path.to_owned(),
        });
    }
    let listener = tokio::net::TcpListener::bind(a.listen)
        .await
        .with_context(|| format!("listening on {}", a.listen))?;
    let state = Arc::new(State {
        client,
        token,
        accounts,
        upstream,
        chain_id: a.chain_id,
    });
    println!(
        "serving Ethereum JSON-RPC on {}://{}{}",
        if tls.is_some() { "https" } else { "http" },
        listener.local_addr()?,
        if state.token.is_some() {
            " (bearer token required)"
        } else {
            ""
        }
    );
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((sock, _)) = accepted else { continue };
                let state = state.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(state.answer(req).await) }
                    });
                    let mut http = hyper::server::conn::http1::Builder::new();
                    http.timer(TokioTimer::new())
                        .header_read_timeout(Duration::from_secs(10));
                    match tls {
                        Some(tls) => {
                            let handshake =
                                tokio::time::timeout(Duration::from_secs(10), tls.accept(sock));
                            if let Ok(Ok(stream)) = handshake.await {
                                let _ = http.serve_connection(TokioIo::new(stream), service).await;
                            }
                        }
                        None => {
                            let _ = http.serve_connection(TokioIo::new(sock), service).await;
                        }
                    }
                });
            }
            _ = tokio::signal::ctrl_c() => {
                println!("stopped");
                return Ok(());
            }
        }
    }
}

fn reply(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    if let Ok(v) = "application/json".parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

fn error_body(id: &Value, e: &RpcError) -> Value {
    let mut err = json!({"code": e.code, "message": e.message});
    if let Some(d) = &e.data {
        err["data"] = d.clone();
    }
    json!({"jsonrpc": "2.0", "id": id, "error": err})
}

fn invalid(message: impl Into<String>) -> RpcError {
    RpcError::new(-32602, message)
}

impl State {
    async fn answer(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        if let Some(token) = &self.token {
            let given = req
                .headers()
                .get(hyper::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split_once(' '))
                // The scheme name is case-insensitive (RFC 7235).
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map_or("", |(_, t)| t.trim());
            if !same(given.as_bytes(), token.as_bytes()) {
                let e = RpcError::new(-32001, "unauthorized: send Authorization: Bearer <token>");
                return reply(StatusCode::UNAUTHORIZED, &error_body(&Value::Null, &e));
            }
        }
        if req.method() != hyper::Method::POST {
            let e = RpcError::new(-32600, "JSON-RPC requests are POSTed");
            return reply(
                StatusCode::METHOD_NOT_ALLOWED,
                &error_body(&Value::Null, &e),
            );
        }
        let body = match Limited::new(req.into_body(), MAX_REQUEST).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                let e = RpcError::new(-32600, format!("request body: {e}"));
                return reply(StatusCode::PAYLOAD_TOO_LARGE, &error_body(&Value::Null, &e));
            }
        };
        let parsed: Value = match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                let e = RpcError::new(-32700, format!("parse error: {e}"));
                return reply(StatusCode::OK, &error_body(&Value::Null, &e));
            }
        };
        let answer = match parsed {
            Value::Array(calls) if calls.is_empty() => error_body(
                &Value::Null,
                &RpcError::new(-32600, "invalid request: an empty batch"),
            ),
            Value::Array(calls) => {
                let mut out = Vec::with_capacity(calls.len());
                for c in calls {
                    out.push(self.one(c).await);
                }
                Value::Array(out)
            }
            call => self.one(call).await,
        };
        reply(StatusCode::OK, &answer)
    }

    /// One JSON-RPC call and its response object.
    async fn one(&self, call: Value) -> Value {
        let id = call.get("id").cloned().unwrap_or(Value::Null);
        let Some(method) = call.get("method").and_then(Value::as_str) else {
            return error_body(&id, &RpcError::new(-32600, "invalid request: no method"));
        };
        let params = call.get("params").cloned().unwrap_or(json!([]));
        let result = match method {
            "eth_accounts" | "eth_requestAccounts" => Ok(Value::Array(
                self.accounts
                    .iter()
                    .map(|a| Value::from(a.address.clone()))
                    .collect(),
            )),
            "eth_chainId" if self.chain_id.is_some() => {
                Ok(json!(format!("{:#x}", self.chain_id.unwrap_or_default())))
            }
            "eth_signTransaction" => self.sign_transaction(&params).await.map(|(raw, _)| raw),
            "eth_sendTransaction" => match self.sign_transaction(&params).await {
                Ok((raw, _)) => {
                    self.upstream()
                        .and_then_call("eth_sendRawTransaction", json!([raw]))
                        .await
                }
                Err(e) => Err(e),
            },
            "eth_sign" => {
                self.sign_message(param(&params, 0), param(&params, 1))
                    .await
            }
            "personal_sign" => {
                self.sign_message(param(&params, 1), param(&params, 0))
                    .await
            }
            "eth_signTypedData_v4" | "eth_signTypedData" => {
                self.sign_typed(param(&params, 0), param(&params, 1)).await
            }
            _ => {
                return match &self.upstream {
                    Some(u) => u.post(&call).await.unwrap_or_else(|e| error_body(&id, &e)),
                    None => error_body(
                        &id,
                        &RpcError::new(
                            -32601,
                            format!(
                                "method {method} is not signed here and there is no --upstream"
                            ),
                        ),
                    ),
                }
            }
        };
        match result {
            Ok(r) => json!({"jsonrpc": "2.0", "id": id, "result": r}),
            Err(e) => error_body(&id, &e),
        }
    }

    fn upstream(&self) -> MaybeUpstream<'_> {
        MaybeUpstream(self.upstream.as_ref())
    }

    fn account(&self, address: &Value) -> Result<&Account, RpcError> {
        let a = address
            .as_str()
            .ok_or_else(|| invalid(format!("{address} is not an address")))?;
        self.accounts
            .iter()
            .find(|x| x.address.eq_ignore_ascii_case(a))
            .ok_or_else(|| {
                RpcError::new(
                    -32000,
                    format!("no account {a} here (eth_accounts lists them)"),
                )
            })
    }

    /// Signs through the cluster; a refusal names the node, rule and knob.
    async fn sign(
        &self,
        account: &Account,
        kind: Kind,
        bytes: &[u8],
    ) -> Result<crate::proto::signer::PayloadResult, RpcError> {
        let mut client = self.client.clone();
        client
            .sign_payload(&account.key, kind, bytes, &account.path, "")
            .await
            .map_err(|e| RpcError::new(-32000, e.to_string()))?
            .payload
            .ok_or_else(|| RpcError::new(-32603, "the cluster returned no payload result"))
    }

    /// Fills what the transaction leaves out, signs it, and returns the raw
    /// signed transaction and its hash.
    async fn sign_transaction(&self, params: &Value) -> Result<(Value, Value), RpcError> {
        let mut tx = WalletTx::from_json(param(params, 0)).map_err(invalid)?;
        let from = tx
            .from
            .ok_or_else(|| invalid("from: the transaction names no sender"))?;
        let account = self.account(&json!(from.to_checksum(None)))?;
        let up = self.upstream();
        if tx.chain_id.is_none() {
            tx.chain_id = match self.chain_id {
                Some(c) => Some(c),
                None => Some(to_u64(
                    &up.and_then_call("eth_chainId", json!([])).await?,
                    "chainId",
                )?),
            };
        }
        if tx.nonce.is_none() {
            let n = up
                .and_then_call(
                    "eth_getTransactionCount",
                    json!([account.address, "pending"]),
                )
                .await?;
            tx.nonce = Some(to_u64(&n, "nonce")?);
        }
        if tx.gas.is_none() {
            let g = up
                .and_then_call("eth_estimateGas", json!([tx.call_json()]))
                .await?;
            tx.gas = Some(to_u64(&g, "gas")?);
        }
        if !tx.is_legacy()
            && (tx.max_fee_per_gas.is_none() || tx.max_priority_fee_per_gas.is_none())
        {
            let tip = match tx.max_priority_fee_per_gas {
                Some(t) => t,
                None => match up
                    .and_then_call("eth_maxPriorityFeePerGas", json!([]))
                    .await
                {
                    Ok(t) => to_u128(&t, "maxPriorityFeePerGas")?,
                    Err(_) => 1_000_000_000,
                },
            };
            // A tip over a given max fee would be refused by the chain.
            let tip = tx.max_fee_per_gas.map_or(tip, |max| tip.min(max));
            tx.max_priority_fee_per_gas = Some(tip);
            if tx.max_fee_per_gas.is_none() {
                let block = up
                    .and_then_call("eth_getBlockByNumber", json!(["latest", false]))
                    .await?;
                let base = to_u128(&block["baseFeePerGas"], "baseFeePerGas")?;
                tx.max_fee_per_gas = Some(base.saturating_mul(2).saturating_add(tip));
            }
        }
        let unsigned = tx.unsigned().map_err(invalid)?;
        let done = self.sign(account, Kind::EthTransaction, &unsigned).await?;
        Ok((
            json!(format!("0x{}", hex::encode(&done.signed_transaction))),
            json!(format!("0x{}", hex::encode(&done.tx_hash))),
        ))
    }

    /// EIP-191 `personal_sign` of `data` (hex bytes, or text) by `address`.
    async fn sign_message(&self, address: &Value, data: &Value) -> Result<Value, RpcError> {
        let account = self.account(address)?;
        let text = data
            .as_str()
            .ok_or_else(|| invalid("the message must be a string"))?;
        let bytes = match text.strip_prefix("0x") {
            Some(h) => hex::decode(h).map_err(|e| invalid(format!("message: not hex: {e}")))?,
            None => text.as_bytes().to_vec(),
        };
        let done = self.sign(account, Kind::EthMessage, &bytes).await?;
        Ok(json!(format!("0x{}", hex::encode(&done.signature))))
    }

    /// EIP-712 typed data (a JSON string or object) signed by `address`.
    async fn sign_typed(&self, address: &Value, typed: &Value) -> Result<Value, RpcError> {
        let account = self.account(address)?;
        let text = match typed {
            Value::String(s) => s.clone(),
            Value::Object(_) => typed.to_string(),
            _ => return Err(invalid("the typed data must be JSON")),
        };
        let done = self
            .sign(account, Kind::EthTypedData, text.as_bytes())
            .await?;
        Ok(json!(format!("0x{}", hex::encode(&done.signature))))
    }
}

/// The upstream, or an error saying a method needs one.
struct MaybeUpstream<'a>(Option<&'a Upstream>);

impl MaybeUpstream<'_> {
    async fn and_then_call(&self, method: &str, params: Value) -> Result<Value, RpcError> {
        match self.0 {
            Some(u) => u.call(method, params).await,
            None => Err(RpcError::new(
                -32000,
                format!("{method} is needed and there is no --upstream (give the field in the transaction)"),
            )),
        }
    }
}

/// Compares two secrets in time that depends only on their lengths.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn param(params: &Value, i: usize) -> &Value {
    params.get(i).unwrap_or(&Value::Null)
}

fn to_u128(v: &Value, what: &str) -> Result<u128, RpcError> {
    let q = quantity(v, what).map_err(|e| RpcError::new(-32603, format!("upstream {e}")))?;
    u128::try_from(q)
        .map_err(|_| RpcError::new(-32603, format!("upstream {what} {v} is too large")))
}

fn to_u64(v: &Value, what: &str) -> Result<u64, RpcError> {
    u64::try_from(to_u128(v, what)?)
        .map_err(|_| RpcError::new(-32603, format!("upstream {what} {v} is too large")))
}
