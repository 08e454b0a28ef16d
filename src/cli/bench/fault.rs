//! `thresig bench --local --fault ...`: one node of the local cluster fails
//! while the load runs (stopped with SIGSTOP, killed with SIGKILL, or
//! restarted with SIGTERM), and the figures are split into before, during
//! and after the fault. The load's client fails over to every node, as a
//! production client should (README, "Availability").

use std::time::{Duration, Instant};

use anyhow::Context;

use super::procs::ProcessCluster;
use super::Sample;

/// How the node fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Fault {
    /// SIGSTOP for --fault-secs, then SIGCONT (a hung node).
    Stop,
    /// SIGKILL, down for --fault-secs, then started again (a crash).
    Kill,
    /// SIGTERM (the node drains and exits), then started again at once.
    Restart,
}

/// What to break, which node, when and for how long.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub fault: Fault,
    pub node: usize,
    pub after: Duration,
    pub hold: Duration,
}

/// When the fault began and ended, as offsets from the load's start.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub from: Duration,
    pub to: Duration,
}

/// Runs `plan` against `cluster`, timed from `load_started`.
pub async fn inject(
    cluster: &mut ProcessCluster,
    plan: Plan,
    load_started: Instant,
) -> anyhow::Result<Window> {
    tokio::time::sleep(plan.after).await;
    let name = cluster.configs[plan.node].name.clone();
    let from = load_started.elapsed();
    match plan.fault {
        Fault::Stop => {
            eprintln!("fault: SIGSTOP of node {name} for {:?}", plan.hold);
            cluster.signal(plan.node, rustix::process::Signal::STOP)?;
            tokio::time::sleep(plan.hold).await;
            cluster.signal(plan.node, rustix::process::Signal::CONT)?;
            eprintln!("fault: SIGCONT of node {name}");
        }
        Fault::Kill => {
            eprintln!("fault: SIGKILL of node {name}, down for {:?}", plan.hold);
            cluster.stop_node(plan.node).await?;
            tokio::time::sleep(plan.hold).await;
            cluster
                .start_node(plan.node)
                .await
                .with_context(|| format!("restarting node {name}"))?;
            eprintln!("fault: node {name} serves again");
        }
        Fault::Restart => {
            eprintln!("fault: SIGTERM of node {name} (drain), then start");
            cluster.terminate(plan.node).await?;
            cluster
                .start_node(plan.node)
                .await
                .with_context(|| format!("restarting node {name}"))?;
            eprintln!("fault: node {name} serves again");
        }
    }
    Ok(Window {
        from,
        to: load_started.elapsed(),
    })
}

/// One phase of the load around the fault.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Phase {
    pub name: &'static str,
    pub sent: usize,
    pub ok: usize,
    /// Failures by gRPC status (or transport) name.
    pub failed: std::collections::BTreeMap<String, u32>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// The samples split into before, during and after `w` (by when each
/// request was sent).
pub fn phases(samples: &[Sample], w: Window) -> Vec<Phase> {
    let split: [(&'static str, &dyn Fn(Duration) -> bool); 3] = [
        ("before", &|at| at < w.from),
        ("during", &|at| at >= w.from && at < w.to),
        ("after", &|at| at >= w.to),
    ];
    split
        .into_iter()
        .map(|(name, pick)| {
            let picked: Vec<&Sample> = samples.iter().filter(|s| pick(s.at)).collect();
            let mut ok: Vec<Duration> = picked
                .iter()
                .filter(|s| s.error.is_none())
                .map(|s| s.took)
                .collect();
            ok.sort_unstable();
            let mut failed = std::collections::BTreeMap::new();
            for e in picked.iter().filter_map(|s| s.error.as_ref()) {
                *failed.entry(e.clone()).or_default() += 1;
            }
            Phase {
                name,
                sent: picked.len(),
                ok: ok.len(),
                failed,
                p50_ms: super::report::percentile(&ok, 50.0),
                p99_ms: super::report::percentile(&ok, 99.0),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(at_ms: u64, took_ms: u64, error: Option<&str>) -> Sample {
        Sample {
            at: Duration::from_millis(at_ms),
            took: Duration::from_millis(took_ms),
            error: error.map(String::from),
        }
    }

    #[test]
    fn samples_fall_in_the_phase_they_were_sent_in() {
        let samples = [
            s(0, 10, None),
            s(100, 20, None),
            s(150, 900, Some("UNAVAILABLE")),
            s(190, 30, None),
            s(200, 40, None),
        ];
        let w = Window {
            from: Duration::from_millis(100),
            to: Duration::from_millis(200),
        };
        let p = phases(&samples, w);
        assert_eq!(
            p.iter().map(|p| (p.name, p.sent, p.ok)).collect::<Vec<_>>(),
            [("before", 1, 1), ("during", 3, 2), ("after", 1, 1)]
        );
        assert_eq!(p[1].failed.get("UNAVAILABLE"), Some(&1));
        assert_eq!((p[1].p50_ms, p[1].p99_ms), (Some(20.0), Some(30.0)));
        assert_eq!(p[2].p50_ms, Some(40.0));
    }
}
