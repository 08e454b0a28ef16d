//! A TCP proxy on 127.0.0.1 that holds every chunk of bytes for a fixed
//! time before passing it on, in each direction: `thresig bench --rtt-ms`
//! puts one in front of each node's peer plane to emulate nodes in separate
//! datacenters. Bytes are delayed, never reordered or throttled; TLS runs
//! end to end through it, so node identities are unaffected.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// A running proxy; it stops accepting when dropped (connections already
/// open end with the process).
#[derive(Debug)]
pub struct DelayProxy {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl DelayProxy {
    /// Listens on a free loopback port and forwards each connection to
    /// `target`, holding bytes `one_way` in each direction.
    pub async fn start(target: SocketAddr, one_way: Duration) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    // Out of descriptors, say: wait instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    let (ri, wi) = inbound.into_split();
                    let (ro, wo) = outbound.into_split();
                    tokio::join!(pump(ri, wo, one_way), pump(ro, wi, one_way));
                });
            }
        });
        Ok(Self { addr, task })
    }
}

/// Copies `r` to `w`, each chunk written `delay` after it was read.
async fn pump(mut r: OwnedReadHalf, mut w: OwnedWriteHalf, delay: Duration) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx
                        .send((Instant::now() + delay, buf[..n].to_vec()))
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Some((due, bytes)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if w.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = w.shutdown().await;
    };
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bytes_arrive_in_order_and_no_sooner_than_the_delay() {
        let echo = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let target = echo.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = echo.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            loop {
                let n = s.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                s.write_all(&buf[..n]).await.unwrap();
            }
        });
        let proxy = DelayProxy::start(target, Duration::from_millis(20))
            .await
            .unwrap();
        let mut c = TcpStream::connect(proxy.addr).await.unwrap();
        let sent = Instant::now();
        c.write_all(b"first ").await.unwrap();
        c.write_all(b"second").await.unwrap();
        let mut got = vec![0u8; 12];
        c.read_exact(&mut got).await.unwrap();
        // Through the proxy twice (there and back): at least 2 x 20 ms. A
        // lower bound only, which a loaded machine cannot break.
        assert!(sent.elapsed() >= Duration::from_millis(40));
        assert_eq!(&got, b"first second");
    }
}
