//! `thresig bench`: end-to-end signing latency on a local 3-node cluster
//! (real mTLS gRPC on loopback), reported as median and percentiles.

use std::time::{Duration, Instant};

use crate::cluster::{LocalCluster, ADMIN, CLIENT};
use crate::node::Timeouts;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Number of sequential signatures to time.
    #[arg(long, default_value_t = 100)]
    signs: u32,
    /// Threshold t of the benchmark key.
    #[arg(long, default_value_t = 2)]
    threshold: u32,
    /// Number of nodes n.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Also time this many rotations (`keys rotate`) and one repair (`keys repair`
    /// of the last node after deleting its data directory).
    #[arg(long, default_value_t = 0)]
    rotations: u32,
    /// Also time this many reshares (`keys reshare`), each replacing one
    /// committee member with a spare node (same t-of-n); starts one extra node.
    #[arg(long, default_value_t = 0)]
    reshares: u32,
}

pub async fn run(a: Args) -> anyhow::Result<()> {
    let spare = usize::from(a.reshares > 0);
    let names: Vec<String> = (0..a.nodes + spare).map(|i| format!("n{i}")).collect();
    let committee: Vec<String> = names[..a.nodes].to_vec();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let tmp = tempfile::tempdir()?;
    let cluster = LocalCluster::start(
        tmp.path(),
        &refs,
        Timeouts {
            round: Duration::from_secs(10),
            ping: Duration::from_secs(2),
        },
    )
    .await?;
    let t = Instant::now();
    cluster
        .client(0, ADMIN)?
        .create_key("bench", a.threshold, &committee)
        .await?;
    println!(
        "keygen {}-of-{}: {:.1} ms",
        a.threshold,
        a.nodes,
        t.elapsed().as_secs_f64() * 1e3
    );
    let mut client = cluster.client(0, CLIENT)?;
    client.sign("bench", [0; 32], "", "").await?; // warm the connections
    let mut samples = Vec::with_capacity(a.signs as usize);
    for i in 0..a.signs {
        let mut d = [0u8; 32];
        d[..4].copy_from_slice(&i.to_be_bytes());
        let t = Instant::now();
        client.sign("bench", d, "", "").await?;
        samples.push(t.elapsed());
        if (i + 1) % 25 == 0 {
            eprintln!("  {} / {} signatures", i + 1, a.signs);
        }
    }
    samples.sort();
    let pct = |p: f64| {
        samples
            .get(((samples.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or_default()
            .as_secs_f64()
            * 1e3
    };
    println!("sign {}-of-{} end to end over {} requests: median {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms", a.threshold, a.nodes, samples.len(), pct(0.5), pct(0.9), pct(0.99), pct(1.0));
    let mut cluster = cluster;
    if a.rotations > 0 {
        let mut admin = cluster.client(0, ADMIN)?;
        let mut times = Vec::new();
        for i in 0..a.rotations {
            let t = Instant::now();
            admin.rotate_key("bench").await?;
            times.push(t.elapsed());
            eprintln!("  rotation {} / {}", i + 1, a.rotations);
        }
        println!(
            "rotate {}-of-{} over {} rotations: median {:.1} ms",
            a.threshold,
            a.nodes,
            times.len(),
            median_ms(&mut times)
        );
        let last = a.nodes - 1;
        cluster.stop_node(last).await;
        let data = cluster.configs[last].data_dir.clone();
        std::fs::remove_dir_all(&data)?;
        cluster.start_node(last).await?;
        let t = Instant::now();
        admin.repair_key("bench", &names[last]).await?;
        println!(
            "repair {}-of-{} (terms from {} helpers + complete refresh): {:.1} ms",
            a.threshold,
            a.nodes,
            a.threshold,
            t.elapsed().as_secs_f64() * 1e3
        );
    }
    if a.reshares > 0 {
        let mut admin = cluster.client(0, ADMIN)?;
        let mut times = Vec::new();
        let mut members = committee.clone();
        let mut out = names[a.nodes].clone();
        for i in 0..a.reshares {
            // Swap the last member and the spare.
            if let Some(last) = members.last_mut() {
                std::mem::swap(last, &mut out);
            }
            let t = Instant::now();
            admin.reshare_key("bench", &members, a.threshold).await?;
            times.push(t.elapsed());
            eprintln!(
                "  reshare {} / {}: committee {}",
                i + 1,
                a.reshares,
                members.join(",")
            );
        }
        println!(
            "reshare {t}-of-{n} -> {t}-of-{n} (one member replaced) over {} reshares: median {:.1} ms",
            times.len(),
            median_ms(&mut times),
            t = a.threshold,
            n = a.nodes,
        );
    }
    cluster.stop().await;
    Ok(())
}

fn median_ms(times: &mut [Duration]) -> f64 {
    times.sort();
    times
        .get(times.len() / 2)
        .copied()
        .unwrap_or_default()
        .as_secs_f64()
        * 1e3
}
