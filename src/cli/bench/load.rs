//! The bench's signing load: `requests` requests, `concurrency` at a time,
//! each signature checked, every request's timing kept.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::client::{Client, ClientError};

/// What the load phase measured.
#[derive(Debug)]
pub struct Load {
    pub requests: u32,
    pub latencies: Vec<Duration>,
    pub errors: BTreeMap<String, u32>,
    pub elapsed: Duration,
    /// Every request: when it was sent, how long it took, how it failed.
    pub samples: Vec<Sample>,
    /// With a payload mix: the successful latencies of each kind ("raw",
    /// "eth-tx"), from the same run.
    pub by_kind: BTreeMap<&'static str, Vec<Duration>>,
}

/// What the load signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Payload {
    /// Raw 32-byte digests only.
    Raw,
    /// Every other request an EIP-1559 transfer (a typed payload every node
    /// decodes, checks and derives a nonce slot from), the rest raw digests,
    /// each worker at its own path m/<worker>.
    EthTx,
}

/// The recipient of the bench's transfers (the bench policy lists it).
pub const BENCH_TO: &str = "0x00000000000000000000000000000000000b3c4f";
/// The bench's chain id.
pub const BENCH_CHAIN: u64 = 1337;

/// The unsigned transfer a bench worker signs at `nonce`.
fn bench_tx(nonce: u64) -> Vec<u8> {
    crate::payload::eth_values::transfer(BENCH_CHAIN, nonce, BENCH_TO, 1).unwrap_or_default()
}

/// Checks a signed transfer: it decodes, and its signer is `address`.
fn check_tx(resp: &crate::client::SignResponse, address: &str) -> Result<(), String> {
    let out = resp.payload.as_ref().ok_or("no payload result")?;
    let signer = crate::payload::eth_values::signer_of(&out.signed_transaction)?;
    if signer == address {
        Ok(())
    } else {
        Err(format!("signed by {signer}, not {address}"))
    }
}

/// One request of the load.
#[derive(Debug, Clone)]
pub struct Sample {
    /// When it was sent, from the start of the load.
    pub at: Duration,
    pub took: Duration,
    /// Its failure (status name), if it failed.
    pub error: Option<String>,
}

fn error_kind(e: &ClientError) -> String {
    match e {
        ClientError::Rpc(s) => crate::api::client::code_name(s.code()).to_owned(),
        ClientError::Transport(_) => "transport".into(),
        ClientError::Tls(_) => "tls".into(),
        ClientError::Invalid(_) => "invalid request".into(),
    }
}

/// One signature that is not counted: it opens the connections (client to
/// node, node to node) and the share.
pub(super) async fn warm_up(client: &Client, key: &str) -> anyhow::Result<()> {
    client
        .clone()
        .sign(key, [0xAA; 32], "", "")
        .await
        .context("warm-up signature")?;
    Ok(())
}

/// Sends `requests` signing requests, `concurrency` at a time, each for a
/// distinct digest, and checks every signature against `public_key`; with
/// `Payload::EthTx`, every other request is a typed EIP-1559 transfer.
pub(super) async fn load_mix(
    client: &Client,
    key: &str,
    public_key: &[u8],
    requests: u32,
    concurrency: u32,
    payload: Payload,
) -> anyhow::Result<Load> {
    eprintln!("signing: {requests} requests, concurrency {concurrency}");
    // With a payload mix each worker signs at its own path (its own sender,
    // so its nonces only go up); raw digests at the same path.
    let mut paths = Vec::new();
    for w in 0..concurrency.min(requests) {
        let path = match payload {
            Payload::Raw => String::new(),
            Payload::EthTx => format!("m/{w}"),
        };
        let (pk, address) = if path.is_empty() {
            (public_key.to_vec(), String::new())
        } else {
            let info = client
                .clone()
                .public_key(key, &path)
                .await
                .with_context(|| format!("public key at {path}"))?;
            (info.public_key, info.eth_address)
        };
        paths.push((path, pk, address));
    }
    let by_kind: Arc<Mutex<BTreeMap<&'static str, Vec<Duration>>>> = Arc::default();
    let next = Arc::new(AtomicU32::new(0));
    let done = Arc::new(AtomicU32::new(0));
    let failed = Arc::new(AtomicU32::new(0));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(requests as usize)));
    let errors: Arc<Mutex<BTreeMap<String, u32>>> = Arc::default();
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let mut salt = [0u8; 4];
    getrandom::fill(&mut salt).map_err(|e| anyhow::anyhow!("rng: {e}"))?;
    let started = Instant::now();
    let workers: Vec<_> = paths
        .into_iter()
        .map(|(path, pk, address)| {
            let mut client = client.clone();
            let key = key.to_owned();
            let by_kind = by_kind.clone();
            let mut nonce = 0u64;
            let (next, done, failed) = (next.clone(), done.clone(), failed.clone());
            let (latencies, errors, samples) = (latencies.clone(), errors.clone(), samples.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= requests {
                        break;
                    }
                    let mut d = [0u8; 32];
                    d[..4].copy_from_slice(&salt);
                    d[4..8].copy_from_slice(&i.to_be_bytes());
                    let typed = payload == Payload::EthTx && i % 2 == 1;
                    let t = Instant::now();
                    let r = if typed {
                        nonce += 1;
                        client
                            .sign_payload(
                                &key,
                                crate::payload::Kind::EthTransaction,
                                &bench_tx(nonce),
                                &path,
                                "",
                            )
                            .await
                    } else {
                        client.sign(&key, d, &path, "").await
                    };
                    let took = t.elapsed();
                    let outcome = match r {
                        Ok(sig) if typed => check_tx(&sig, &address),
                        Ok(sig) if sig.public_key == pk => {
                            super::super::demo::verify(&pk, &d, &sig.r, &sig.s, sig.recovery_id)
                                .map_err(|e| format!("bad signature: {e}"))
                        }
                        Ok(_) => Err("signed under another public key".to_owned()),
                        Err(e) => {
                            let kind = error_kind(&e);
                            if !lock(&errors).contains_key(&kind) {
                                // The first of each kind, in full (on stderr).
                                eprintln!("  first {kind} error: {e}");
                            }
                            Err(kind)
                        }
                    };
                    lock(&samples).push(Sample {
                        at: t.duration_since(started),
                        took,
                        error: outcome.as_ref().err().cloned(),
                    });
                    match outcome {
                        Ok(()) => {
                            lock(&latencies).push(took);
                            if payload != Payload::Raw {
                                let kind = if typed { "eth-tx" } else { "raw" };
                                lock(&by_kind).entry(kind).or_default().push(took);
                            }
                        }
                        Err(kind) => {
                            *lock(&errors).entry(kind).or_default() += 1;
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let progress = {
        let (done, failed) = (done.clone(), failed.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                let d = done.load(Ordering::Relaxed);
                eprintln!(
                    "  {d} / {requests} answered, {} failed, {:.1}/s",
                    failed.load(Ordering::Relaxed),
                    f64::from(d) / started.elapsed().as_secs_f64()
                );
            }
        })
    };
    for w in workers {
        w.await.context("load worker")?;
    }
    let elapsed = started.elapsed();
    progress.abort();
    let latencies = std::mem::take(&mut *lock(&latencies));
    let errors = std::mem::take(&mut *lock(&errors));
    let samples = std::mem::take(&mut *lock(&samples));
    let by_kind = std::mem::take(&mut *lock(&by_kind));
    Ok(Load {
        requests,
        latencies,
        errors,
        elapsed,
        samples,
        by_kind,
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
