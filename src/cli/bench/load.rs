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
/// distinct digest, and checks every signature against `public_key`.
pub(super) async fn load(
    client: &Client,
    key: &str,
    public_key: &[u8],
    requests: u32,
    concurrency: u32,
) -> anyhow::Result<Load> {
    eprintln!("signing: {requests} requests, concurrency {concurrency}");
    let next = Arc::new(AtomicU32::new(0));
    let done = Arc::new(AtomicU32::new(0));
    let failed = Arc::new(AtomicU32::new(0));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(requests as usize)));
    let errors: Arc<Mutex<BTreeMap<String, u32>>> = Arc::default();
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let mut salt = [0u8; 4];
    getrandom::fill(&mut salt).map_err(|e| anyhow::anyhow!("rng: {e}"))?;
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency.min(requests))
        .map(|_| {
            let mut client = client.clone();
            let (key, pk) = (key.to_owned(), public_key.to_vec());
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
                    let t = Instant::now();
                    let r = client.sign(&key, d, "", "").await;
                    let took = t.elapsed();
                    let outcome = match r {
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
                        Ok(()) => lock(&latencies).push(took),
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
    Ok(Load {
        requests,
        latencies,
        errors,
        elapsed,
        samples,
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
