//! `thresig bench`: signing load against a live cluster (a local one of
//! node processes, or running nodes), with latency percentiles, throughput,
//! errors by kind and CPU per signature, next to the in-process engine
//! baseline measured in the same run and the bounds derived from it.

mod fault;
mod load;
mod procs;
mod proxy;
mod report;

use std::time::{Duration, Instant};

use anyhow::Context;

use super::conn::Conn;

use crate::cluster::{ADMIN, CLIENT};
use crate::domain::{DerivationPath, Digest32, KeyType};
use crate::node::Timeouts;
use crate::pki::Role;
use crate::protocol::inproc;
use crate::protocol::scheme;
use load::{load_mix, warm_up};
pub use load::{Load, Payload, Sample};
use procs::ProcessCluster;
use report::{Baseline, Report};

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  thresig bench --local                                  2-of-3, 200 requests, one at a time
  thresig bench --local --concurrency 16 --requests 800  throughput under load
  thresig bench --local --threshold 3 --nodes 5          3-of-5 on 5 node processes
  thresig bench --local --rtt-ms 30                      nodes 30 ms apart (delaying proxies)
  thresig bench --local --json > bench.json              the figures as JSON on stdout
  thresig bench --local --payload eth-tx                 every other request an EIP-1559
                                                         transfer: p50 of each kind, and
                                                         their ratio
  thresig bench --local --requests 2000 --concurrency 2 --fault stop
                                                         SIGSTOP one node mid-load; figures
                                                         before, during and after
  thresig bench --key validator-1 --certs certs --identity validator --endpoint 10.0.0.5:7401 --server a

Every ratio compares figures taken in this run on this machine: the in-process
baseline runs all t parties of the engine on one thread with no network, store or
TLS. The compute bound is cores / baseline signing time (the CPU one signature
needs, summed over its t parties); the latency bound is the busiest party's
compute plus (rounds + 1) one-way trips between nodes: the proposal, then one
per protocol round.")]
pub struct Args {
    /// Start a local cluster of node processes (this binary, `thresig node
    /// run`) on 127.0.0.1 with fresh certificates, create the key, and sign
    /// there. Without it, the bench signs through the node given by the
    /// connection flags, with an existing --key.
    #[arg(long)]
    local: bool,
    #[command(flatten)]
    conn: Conn,
    /// Key to sign with (at path m). With --local it is created, default
    /// "bench"; otherwise it must exist and --identity must be allowed to
    /// sign with it (and will be charged against its rate limits).
    #[arg(long)]
    key: Option<String>,
    /// Number of signing requests.
    #[arg(long, default_value_t = 200)]
    requests: u32,
    /// Requests in flight at once (each worker sends its next request when
    /// the previous one is answered).
    #[arg(long, default_value_t = 1)]
    concurrency: u32,
    /// --local: threshold t of the key.
    #[arg(long, default_value_t = 2)]
    threshold: u32,
    /// --local: number of nodes n (the key's committee). Against running
    /// nodes, the n of the in-process keygen baseline (t is learned from the
    /// key's signatures).
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// --local: round-trip time to add between nodes, in ms. Each node's peer
    /// plane is reached through a proxy that holds bytes rtt/2 each way; the
    /// client plane is not delayed.
    #[arg(long, default_value_t = 0.0)]
    rtt_ms: f64,
    /// In-process signatures timed for the baseline (median taken).
    #[arg(long, default_value_t = 20)]
    baseline_signs: u32,
    /// Print the figures as one JSON document on stdout (progress stays on
    /// stderr).
    #[arg(long)]
    json: bool,
    /// --local: also time this many rotations (`keys rotate`) and then one
    /// repair (`keys repair` of the last node after deleting its data).
    #[arg(long, default_value_t = 0)]
    rotations: u32,
    /// --local: also time this many reshares (`keys reshare`), each replacing
    /// one committee member with a spare node (same t-of-n); starts one extra
    /// node.
    #[arg(long, default_value_t = 0)]
    reshares: u32,
    /// --local: break one node while the load runs, then report the load
    /// before, during and after (sent, succeeded, failed by status, p50,
    /// p99). The load's client then fails over to every node.
    #[arg(long, value_enum)]
    fault: Option<fault::Fault>,
    /// What to sign: raw digests, or every other request an EIP-1559
    /// transfer (decoded, checked against the policy and replay-protected by
    /// every node), to compare the two in one run (--local writes a policy
    /// that allows the transfers).
    #[arg(long, value_enum, default_value = "raw")]
    payload: Payload,
    /// --fault: the node to break, by index (0 is the one the client asks
    /// first). Default: the last committee node.
    #[arg(long)]
    fault_node: Option<usize>,
    /// --fault: seconds of load before the fault.
    #[arg(long, default_value_t = 3.0)]
    fault_after: f64,
    /// --fault: seconds a stopped node stays stopped, or a killed one down.
    #[arg(long, default_value_t = 10.0)]
    fault_secs: f64,
}

pub async fn run(a: Args) -> anyhow::Result<()> {
    if a.requests == 0 || a.concurrency == 0 {
        return Err(
            super::UsageError("--requests and --concurrency must be at least 1".into()).into(),
        );
    }
    if !a.local && a.key.is_none() {
        return Err(super::UsageError(
            "pass --local to bench a local cluster, or --key <existing key> (with the connection flags) to bench running nodes".into(),
        )
        .into());
    }
    if !a.local && (a.rtt_ms > 0.0 || a.rotations > 0 || a.reshares > 0 || a.fault.is_some()) {
        return Err(super::UsageError(
            "--rtt-ms, --rotations, --reshares and --fault need --local".into(),
        )
        .into());
    }
    if a.fault_node.is_some_and(|i| i >= a.nodes) {
        return Err(
            super::UsageError(format!("--fault-node must be below --nodes ({})", a.nodes)).into(),
        );
    }
    if !(0.0..=3600.0).contains(&a.fault_after) || !(0.0..=3600.0).contains(&a.fault_secs) {
        return Err(super::UsageError(
            "--fault-after and --fault-secs must be between 0 and 3600".into(),
        )
        .into());
    }
    if !(0.0..=10_000.0).contains(&a.rtt_ms) {
        return Err(super::UsageError("--rtt-ms must be between 0 and 10000".into()).into());
    }
    if a.local {
        local(a).await
    } else {
        remote(a).await
    }
}

async fn local(a: Args) -> anyhow::Result<()> {
    let key = a.key.clone().unwrap_or_else(|| "bench".into());
    let (t, n) = (a.threshold, a.nodes);
    crate::domain::Threshold::new(t, n).map_err(|e| super::UsageError(e.to_string()))?;
    let baseline = baseline(t, n, a.baseline_signs).await?;

    let spare = usize::from(a.reshares > 0);
    let names: Vec<String> = (0..n + spare).map(|i| format!("n{i}")).collect();
    let committee: Vec<String> = names[..n].to_vec();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let tmp = tempfile::tempdir()?;
    let one_way = (a.rtt_ms > 0.0).then(|| Duration::from_secs_f64(a.rtt_ms / 2e3));
    eprintln!(
        "starting {} node processes on 127.0.0.1{}",
        names.len(),
        one_way
            .map(|d| format!(", peer planes behind proxies adding {d:?} each way"))
            .unwrap_or_default()
    );
    let timeouts = Timeouts {
        round: Duration::from_secs(10),
        ping: Duration::from_secs(2),
    };
    let mut cluster = ProcessCluster::start(tmp.path(), &refs, timeouts, one_way).await?;
    if a.payload == Payload::EthTx {
        allow_bench_transfers(&cluster).await?;
    }
    eprintln!("distributed key generation {t}-of-{n} ...");
    let started = Instant::now();
    let info = cluster
        .client(0, ADMIN)?
        .create_key(&key, t, &committee)
        .await
        .context("creating the bench key")?;
    let keygen_ms = ms(started.elapsed());

    let client = if a.fault.is_some() {
        cluster.failover_client(CLIENT)?
    } else {
        cluster.client(0, CLIENT)?
    };
    warm_up(&client, &key).await?;
    let before = cluster.cpu_seconds()?;
    let (load, fault) = match a.fault {
        None => (
            load_mix(
                &client,
                &key,
                &info.public_key,
                a.requests,
                a.concurrency,
                a.payload,
            )
            .await?,
            None,
        ),
        Some(kind) => {
            let plan = fault::Plan {
                fault: kind,
                node: a.fault_node.unwrap_or(n - 1),
                after: Duration::from_secs_f64(a.fault_after),
                hold: Duration::from_secs_f64(a.fault_secs),
            };
            let started = Instant::now();
            let (load, window) = tokio::join!(
                load_mix(
                    &client,
                    &key,
                    &info.public_key,
                    a.requests,
                    a.concurrency,
                    a.payload
                ),
                fault::inject(&mut cluster, plan, started)
            );
            let (load, window) = (load?, window?);
            let what = format!(
                "{kind:?} of node {} ({:.1} s to {:.1} s into the load)",
                names[plan.node],
                window.from.as_secs_f64(),
                window.to.as_secs_f64()
            )
            .to_lowercase();
            let phases = fault::phases(&load.samples, window);
            (load, Some((what, phases)))
        }
    };
    let cpu_per_sig = match (a.fault, cluster.cpu_seconds()) {
        (None, Ok(after)) => {
            let cpu: f64 = after.iter().zip(&before).map(|(a, b)| a - b).sum();
            (!load.latencies.is_empty()).then(|| cpu / load.latencies.len() as f64)
        }
        // A restarted process's CPU time starts again from zero.
        _ => None,
    };

    let mut extra = Vec::new();
    if a.rotations > 0 {
        extra.extend(rotations(&mut cluster, &key, &names, t, n, a.rotations).await?);
    }
    if a.reshares > 0 {
        extra.push(reshares(&cluster, &key, &names, t, n, a.reshares).await?);
    }
    let report = Report {
        mode: "local",
        threshold: t,
        nodes: n,
        concurrency: a.concurrency,
        rtt_ms: a.rtt_ms,
        cores: cores(),
        baseline,
        keygen_ms: Some(keygen_ms),
        cpu_s_per_signature: cpu_per_sig,
        load,
        extra,
        fault,
    };
    report.print(a.json)
}

async fn remote(a: Args) -> anyhow::Result<()> {
    let key = a.key.clone().unwrap_or_default();
    let mut client = a.conn.client(Role::Client)?;
    let pk = client
        .public_key(&key, "")
        .await
        .with_context(|| format!("reading the public key of {key}"))?;
    // The signers of one signature give t; n only sizes the keygen baseline.
    let first = client
        .sign(&key, [0x55; 32], "", "")
        .await
        .context("first signature")?;
    let (t, n) = (
        first.participants.len() as u32,
        a.nodes.max(first.participants.len()),
    );
    eprintln!(
        "key {key}: {t} signers ({}); signing through node {} at {}",
        first.participants.join(", "),
        a.conn.server,
        a.conn.endpoint
    );
    let baseline = baseline(t, n, a.baseline_signs).await?;
    warm_up(&client, &key).await?;
    let load = load_mix(
        &client,
        &key,
        &pk.public_key,
        a.requests,
        a.concurrency,
        a.payload,
    )
    .await?;
    let report = Report {
        mode: "remote",
        threshold: t,
        nodes: n,
        concurrency: a.concurrency,
        rtt_ms: a.rtt_ms,
        cores: cores(),
        baseline,
        keygen_ms: None,
        cpu_s_per_signature: None,
        load,
        extra: Vec::new(),
        fault: None,
    };
    report.print(a.json)
}

/// Lets the bench client sign its transfers (and raw digests, as before)
/// on every node of a local cluster: a second rule for it, then a reload.
async fn allow_bench_transfers(cluster: &ProcessCluster) -> anyhow::Result<()> {
    let policy = format!(
        "{}\n[[client]]\nname = \"{CLIENT}\"\nkeys = [\"*\"]\npaths = [\"m\"]\n\
         payloads = [\"eth_transaction\"]\nraw_digest = true\n\n[client.eth]\n\
         chain_ids = [{}]\nrecipients = [{{ address = \"{}\", label = \"bench\" }}]\n",
        crate::cluster::DEV_POLICY,
        load::BENCH_CHAIN,
        load::BENCH_TO
    );
    for (i, cfg) in cluster.configs.iter().enumerate() {
        if let Some(path) = &cfg.policy {
            std::fs::write(path, &policy).with_context(|| format!("writing {}", path.display()))?;
        }
        cluster
            .client(i, ADMIN)?
            .reload_policy()
            .await
            .context("reloading the bench policy")?;
    }
    Ok(())
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The engine alone, in this process: one keygen and `signs` signatures,
/// every party on one thread, no network, store or TLS.
async fn baseline(t: u32, n: usize, signs: u32) -> anyhow::Result<Baseline> {
    eprintln!("in-process baseline: keygen {t}-of-{n} and {signs} signatures ...");
    let (t, n) = (
        u8::try_from(t).context("threshold")?,
        u8::try_from(n).context("nodes")?,
    );
    tokio::task::spawn_blocking(move || -> anyhow::Result<Baseline> {
        let started = Instant::now();
        let parties = (1..=n)
            .map(|i| scheme::keygen(KeyType::Secp256k1, t, n, i, b"thresig bench baseline"))
            .collect::<Result<Vec<_>, _>>()?;
        let outs = inproc::run(parties, None)
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        let keygen_ms = ms(started.elapsed());
        let signers: Vec<u8> = (1..=t).collect();
        let (mut walls, mut busiest, mut rounds) = (Vec::new(), Vec::new(), 0);
        for i in 0..signs.max(1) {
            let mut d = [7u8; 32];
            d[..4].copy_from_slice(&i.to_be_bytes());
            let parties = signers
                .iter()
                .map(|&p| {
                    scheme::sign(
                        &outs[usize::from(p - 1)].share,
                        &DerivationPath::default(),
                        &signers,
                        Digest32(d),
                        b"thresig bench baseline",
                    )
                })
                .collect::<Result<Vec<_>, _>>()?;
            let started = Instant::now();
            let (results, cost) = inproc::run_timed(parties);
            walls.push(ms(started.elapsed()));
            for r in results {
                r?;
            }
            busiest.push(cost.per_party.iter().copied().map(ms).fold(0.0, f64::max));
            rounds = cost.rounds;
        }
        Ok(Baseline {
            keygen_ms,
            sign_ms: median(&mut walls),
            busiest_party_ms: median(&mut busiest),
            rounds,
        })
    })
    .await
    .context("baseline task")?
}

async fn rotations(
    cluster: &mut ProcessCluster,
    key: &str,
    names: &[String],
    t: u32,
    n: usize,
    count: u32,
) -> anyhow::Result<Vec<(String, f64)>> {
    let mut admin = cluster.client(0, ADMIN)?;
    let mut times = Vec::new();
    for i in 0..count {
        let started = Instant::now();
        admin.rotate_key(key).await.context("rotation")?;
        times.push(ms(started.elapsed()));
        eprintln!("  rotation {} / {count}", i + 1);
    }
    let last = n - 1;
    cluster.stop_node(last).await?;
    let data = cluster.configs[last].data_dir.clone();
    std::fs::remove_dir_all(&data).with_context(|| format!("removing {}", data.display()))?;
    cluster.start_node(last).await?;
    let started = Instant::now();
    admin
        .repair_key(key, &names[last])
        .await
        .context("repair")?;
    let repair = ms(started.elapsed());
    eprintln!("  repair of {} done", names[last]);
    Ok(vec![
        (
            format!("rotate {t}-of-{n} (median of {count})"),
            median(&mut times),
        ),
        (
            format!("repair {t}-of-{n} (terms from {t} helpers + complete refresh)"),
            repair,
        ),
    ])
}

async fn reshares(
    cluster: &ProcessCluster,
    key: &str,
    names: &[String],
    t: u32,
    n: usize,
    count: u32,
) -> anyhow::Result<(String, f64)> {
    let mut admin = cluster.client(0, ADMIN)?;
    let mut times = Vec::new();
    let mut members: Vec<String> = names[..n].to_vec();
    let mut out = names[n].clone();
    for i in 0..count {
        // Swap the last member and the spare.
        if let Some(last) = members.last_mut() {
            std::mem::swap(last, &mut out);
        }
        let started = Instant::now();
        admin
            .reshare_key(key, &members, t)
            .await
            .context("reshare")?;
        times.push(ms(started.elapsed()));
        eprintln!(
            "  reshare {} / {count}: committee {}",
            i + 1,
            members.join(",")
        );
    }
    Ok((
        format!("reshare {t}-of-{n} -> {t}-of-{n}, one member replaced (median of {count})"),
        median(&mut times),
    ))
}
