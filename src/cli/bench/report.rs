//! The bench's figures: percentiles, bounds and ratios, printed for people
//! or as one JSON document for tools.

use std::time::Duration;

use serde_json::json;

use super::Load;

/// The in-process engine, measured in the same run.
#[derive(Debug, Clone)]
pub struct Baseline {
    /// One keygen, every party on one thread.
    pub keygen_ms: f64,
    /// Median full signing, all t parties on one thread: the CPU one
    /// signature needs, summed over its parties.
    pub sign_ms: f64,
    /// Median compute of the busiest single party in a signing.
    pub busiest_party_ms: f64,
    /// Message rounds of the signing protocol.
    pub rounds: u32,
}

#[derive(Debug)]
pub struct Report {
    pub mode: &'static str,
    pub threshold: u32,
    pub nodes: usize,
    pub concurrency: u32,
    pub rtt_ms: f64,
    pub cores: usize,
    pub baseline: Baseline,
    /// End-to-end keygen (local clusters only).
    pub keygen_ms: Option<f64>,
    /// CPU seconds summed over every node process, per signature (local only).
    pub cpu_s_per_signature: Option<f64>,
    pub load: Load,
    /// Other timed operations (rotate, repair, reshare): label, ms.
    pub extra: Vec<(String, f64)>,
    /// With --fault: what failed, and the load before, during and after it.
    pub fault: Option<(String, Vec<super::fault::Phase>)>,
}

/// Nearest-rank percentile of sorted samples, in ms.
pub(super) fn percentile(sorted: &[Duration], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    let i = rank.clamp(1, sorted.len()) - 1;
    Some(sorted[i].as_secs_f64() * 1e3)
}

fn ratio(a: Option<f64>, b: f64) -> Option<f64> {
    a.filter(|_| b > 0.0).map(|a| a / b)
}

fn fmt(v: Option<f64>, unit: &str) -> String {
    v.map(|v| format!("{v:.2}{unit}"))
        .unwrap_or_else(|| "n/a".into())
}

impl Report {
    pub fn print(mut self, as_json: bool) -> anyhow::Result<()> {
        self.load.latencies.sort();
        let lat = &self.load.latencies;
        let (p50, p95, p99, max) = (
            percentile(lat, 50.0),
            percentile(lat, 95.0),
            percentile(lat, 99.0),
            percentile(lat, 100.0),
        );
        let ok = lat.len() as u32;
        let failed = self.load.requests - ok;
        let throughput = f64::from(ok) / self.load.elapsed.as_secs_f64();
        let b = &self.baseline;
        let bound_throughput = self.cores as f64 * 1e3 / b.sign_ms;
        // The proposal reaches the other signers (one trip), then each
        // protocol round is one message one way: (rounds + 1) x RTT/2.
        let trips = f64::from(b.rounds + 1);
        let bound_latency = b.busiest_party_ms + trips * self.rtt_ms / 2.0;
        let rounds_x_rtt = f64::from(b.rounds) * self.rtt_ms;
        let cpu_ms = self.cpu_s_per_signature.map(|c| c * 1e3);
        // A payload mix: each kind's p50 from the same run.
        let kind_p50 = |k: &str| {
            self.load.by_kind.get(k).and_then(|v| {
                let mut v = v.clone();
                v.sort();
                percentile(&v, 50.0)
            })
        };
        let (raw_p50, payload_p50) = (kind_p50("raw"), kind_p50("eth-tx"));
        let payload_ratio = payload_p50.zip(raw_p50).map(|(a, b)| a / b);
        let ratios = json!({
            "payload_p50_vs_raw_p50": payload_ratio,
            "p50_vs_inprocess": ratio(p50, b.sign_ms),
            "throughput_vs_bound": throughput / bound_throughput,
            "p50_vs_latency_bound": ratio(p50, bound_latency),
            "p50_vs_rounds_x_rtt": ratio(p50, rounds_x_rtt),
            "p99_vs_p50": p99.zip(p50).map(|(a, b)| a / b),
            "keygen_vs_inprocess": ratio(self.keygen_ms, b.keygen_ms),
            "cpu_vs_inprocess": ratio(cpu_ms, b.sign_ms),
        });
        if as_json {
            let doc = json!({
                "mode": self.mode,
                "threshold": self.threshold,
                "nodes": self.nodes,
                "requests": self.load.requests,
                "concurrency": self.concurrency,
                "rtt_ms": self.rtt_ms,
                "cores": self.cores,
                "succeeded": ok,
                "failed": failed,
                "errors": self.load.errors,
                "elapsed_s": self.load.elapsed.as_secs_f64(),
                "latency_ms": { "p50": p50, "p95": p95, "p99": p99, "max": max },
                "throughput_per_s": throughput,
                "cpu_s_per_signature": self.cpu_s_per_signature,
                "keygen_ms": self.keygen_ms,
                "baseline": {
                    "sign_ms": b.sign_ms,
                    "keygen_ms": b.keygen_ms,
                    "busiest_party_ms": b.busiest_party_ms,
                    "rounds": b.rounds,
                },
                "bound": { "throughput_per_s": bound_throughput, "latency_ms": bound_latency },
                "ratios": ratios,
                "other_ms": self.extra.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
                "fault": self.fault.as_ref().map(|(what, phases)| json!({ "what": what, "phases": phases })),
                "payload": payload_p50.map(|p| json!({
                    "kind": "eth-tx",
                    "p50_ms": p,
                    "raw_p50_ms": raw_p50,
                    "samples": self.load.by_kind.get("eth-tx").map_or(0, Vec::len),
                    "raw_samples": self.load.by_kind.get("raw").map_or(0, Vec::len),
                })),
            });
            println!("{}", serde_json::to_string_pretty(&doc)?);
            return Ok(());
        }
        let r = |k: &str| ratios.get(k).and_then(serde_json::Value::as_f64);
        let (t, n) = (self.threshold, self.nodes);
        println!(
            "thresig bench: {t}-of-{n} ({}), {} requests at concurrency {}, peer RTT {} ms, {} \
             cores",
            if self.mode == "local" {
                "local node processes"
            } else {
                "running nodes"
            },
            self.load.requests,
            self.concurrency,
            self.rtt_ms,
            self.cores
        );
        println!(
            "in-process baseline:   keygen {:.1} ms; sign {:.2} ms (all {t} parties on one \
             thread), busiest party {:.2} ms, {} rounds",
            b.keygen_ms, b.sign_ms, b.busiest_party_ms, b.rounds
        );
        if let Some(k) = self.keygen_ms {
            println!(
                "keygen end to end:     {k:.1} ms = {} x in-process",
                fmt(r("keygen_vs_inprocess"), "")
            );
        }
        println!(
            "signing:               {ok} succeeded, {failed} failed in {:.2} s",
            self.load.elapsed.as_secs_f64()
        );
        println!(
            "latency:               p50 {}  p95 {}  p99 {}  max {}",
            fmt(p50, " ms"),
            fmt(p95, " ms"),
            fmt(p99, " ms"),
            fmt(max, " ms")
        );
        if payload_p50.is_some() {
            println!(
                "typed payload:         EIP-1559 transfer p50 {} vs raw digest p50 {} = {} x \
                 (decode, policy and nonce slot on every node)",
                fmt(payload_p50, " ms"),
                fmt(raw_p50, " ms"),
                fmt(payload_ratio, "")
            );
        }
        println!("throughput:            {throughput:.1} signatures/s");
        match cpu_ms {
            Some(c) => println!(
                "CPU per signature:     {c:.2} ms summed over the nodes = {} x in-process",
                fmt(r("cpu_vs_inprocess"), "")
            ),
            None => println!("CPU per signature:     n/a (measured for --local clusters only)"),
        }
        println!(
            "bounds:                throughput {bound_throughput:.1}/s ({} cores / {:.2} ms); \
             latency {bound_latency:.2} ms (busiest party + {} one-way trips of {} ms)",
            self.cores,
            b.sign_ms,
            b.rounds + 1,
            self.rtt_ms / 2.0
        );
        println!(
            "ratios:                p50 / in-process sign {}; p50 / latency bound {}; throughput / \
             compute bound {}; p99 / p50 {}",
            fmt(r("p50_vs_inprocess"), ""),
            fmt(r("p50_vs_latency_bound"), ""),
            fmt(r("throughput_vs_bound"), ""),
            fmt(r("p99_vs_p50"), "")
        );
        if self.rtt_ms > 0.0 {
            println!(
                "                       p50 / ({} rounds x {} ms RTT) {}",
                b.rounds,
                self.rtt_ms,
                fmt(r("p50_vs_rounds_x_rtt"), "")
            );
        }
        if self.load.errors.is_empty() {
            println!("errors by kind:        none");
        } else {
            let list: Vec<String> = self
                .load
                .errors
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            println!("errors by kind:        {}", list.join(", "));
        }
        for (label, v) in &self.extra {
            println!("{label}: {v:.1} ms");
        }
        if let Some((what, phases)) = &self.fault {
            println!("fault:                 {what}");
            for p in phases {
                let failed: Vec<String> =
                    p.failed.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                println!(
                    "  {:<7}              sent {}, ok {}, failed {}{}; p50 {}  p99 {}",
                    p.name,
                    p.sent,
                    p.ok,
                    p.sent - p.ok,
                    if failed.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", failed.join(", "))
                    },
                    fmt(p.p50_ms, " ms"),
                    fmt(p.p99_ms, " ms")
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert_eq!(percentile(&v[..1], 95.0), Some(1.0));
        assert_eq!(percentile(&[], 50.0), None);
    }
}
