//! The upstream Ethereum node `thresig eth-rpc` passes other methods to and
//! asks for nonces, gas and fees: JSON-RPC over plain HTTP/1.1 (a node on
//! this machine or a private network; https is not supported yet).

use std::time::Duration;

use anyhow::Context;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

/// How long one upstream call may take.
const TIMEOUT: Duration = Duration::from_secs(30);
/// The largest upstream answer read (a block with its transactions fits).
const MAX_ANSWER: usize = 16 << 20;

#[derive(Debug, Clone)]
pub struct Upstream {
    /// host:port to connect to.
    authority: String,
    path: String,
}

/// A JSON-RPC error: code and message (and the upstream's data, if any).
#[derive(Debug, Clone)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    pub data: Option<Value>,
}

impl RpcError {
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            data: None,
        }
    }
}

impl Upstream {
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let rest = url.strip_prefix("http://").with_context(|| {
            format!("--upstream {url}: only http:// URLs are supported (https is not yet)")
        })?;
        let (authority, path) = match rest.split_once('/') {
            Some((a, p)) => (a, format!("/{p}")),
            None => (rest, "/".to_owned()),
        };
        anyhow::ensure!(!authority.is_empty(), "--upstream {url}: no host");
        let authority = if authority.contains(':') {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        Ok(Self { authority, path })
    }

    /// Posts `body` (a JSON-RPC request or batch) and returns the answer.
    pub async fn post(&self, body: &Value) -> Result<Value, RpcError> {
        let down = |e: String| RpcError::new(-32603, format!("upstream {}: {e}", self.authority));
        let call = async {
            let stream = tokio::net::TcpStream::connect(&self.authority)
                .await
                .map_err(|e| down(e.to_string()))?;
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| down(e.to_string()))?;
            tokio::spawn(conn);
            let req = hyper::Request::post(self.path.as_str())
                .header(hyper::header::HOST, self.authority.as_str())
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(body.to_string())))
                .map_err(|e| down(e.to_string()))?;
            let res = send
                .send_request(req)
                .await
                .map_err(|e| down(e.to_string()))?;
            let status = res.status();
            let bytes = Limited::new(res.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| down(e.to_string()))?
                .to_bytes();
            serde_json::from_slice::<Value>(&bytes).map_err(|e| {
                down(format!(
                    "HTTP {status}, not JSON ({e}): {}",
                    String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
                ))
            })
        };
        tokio::time::timeout(TIMEOUT, call)
            .await
            .map_err(|_| down(format!("no answer within {TIMEOUT:?}")))?
    }

    /// Calls `method` and returns its result, or the upstream's error.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, RpcError> {
        let answer = self
            .post(&json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
            .await?;
        if let Some(e) = answer.get("error") {
            return Err(RpcError {
                code: e.get("code").and_then(Value::as_i64).unwrap_or(-32603),
                message: format!(
                    "upstream {method}: {}",
                    e.get("message").and_then(Value::as_str).unwrap_or("error")
                ),
                data: e.get("data").cloned(),
            });
        }
        answer
            .get("result")
            .cloned()
            .ok_or_else(|| RpcError::new(-32603, format!("upstream {method}: no result")))
    }
}
