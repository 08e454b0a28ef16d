//! The ops plane: plain HTTP/1.1 `GET /healthz`, `/readyz` and `/metrics`
//! (Prometheus text), meant for 127.0.0.1 or a private network. Requests are
//! capped in size, time and number; nothing here touches keys.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::node::Node;
use crate::telemetry::Metrics;

const MAX_REQUEST: usize = 4096;
const MAX_CONNECTIONS: usize = 64;

/// Serves until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    node: Arc<Node>,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => return,
        };
        let Ok((mut sock, _)) = accepted else {
            continue;
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            continue;
        };
        let (node, metrics) = (node.clone(), metrics.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tokio::time::timeout(Duration::from_secs(5), async move {
                let mut buf = vec![0u8; MAX_REQUEST];
                let mut len = 0;
                while len < buf.len() && !buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf[len..]).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => len += n,
                    }
                }
                let line = String::from_utf8_lossy(&buf[..len]);
                let path = line.split_whitespace().nth(1).unwrap_or("");
                let (status, body) = match (line.starts_with("GET "), path) {
                    (true, "/healthz") => ("200 OK", "ok\n".to_owned()),
                    (true, "/readyz") if node.is_draining() => (
                        "503 Service Unavailable",
                        "draining: shutting down\n".to_owned(),
                    ),
                    (true, "/readyz") => match node.keys() {
                        Ok(k) => ("200 OK", format!("ready: {} keys\n", k.len())),
                        Err(e) => ("503 Service Unavailable", format!("store: {e}\n")),
                    },
                    (true, "/metrics") => ("200 OK", metrics.render()),
                    (true, _) => ("404 Not Found", "not found\n".to_owned()),
                    _ => ("405 Method Not Allowed", "GET only\n".to_owned()),
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: text/plain; \
                     version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
            })
            .await;
        });
    }
}
