//! `thresig bench --local` end to end: node processes, load, baseline and
//! the JSON report. Asserts that every request succeeded and that the
//! figures are there and parse; never how fast anything was.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

fn number(doc: &serde_json::Value, path: &[&str]) -> f64 {
    let mut v = doc;
    for p in path {
        v = &v[*p];
    }
    v.as_f64()
        .unwrap_or_else(|| panic!("{} is not a number in {doc:#}", path.join(".")))
}

#[test]
fn bench_local_signs_every_request_and_reports_parseable_figures() {
    let out = Command::new(env!("CARGO_BIN_EXE_thresig"))
        .args([
            "bench",
            "--local",
            "--requests",
            "20",
            "--baseline-signs",
            "3",
            "--json",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed: {stderr}");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });

    assert_eq!(doc["requests"], 20);
    assert_eq!(doc["succeeded"], 20, "{doc:#}");
    assert_eq!(doc["failed"], 0, "{doc:#}");
    assert_eq!(doc["errors"], serde_json::json!({}), "{doc:#}");
    for path in [
        &["latency_ms", "p50"][..],
        &["latency_ms", "p95"],
        &["latency_ms", "p99"],
        &["latency_ms", "max"],
        &["throughput_per_s"],
        &["cpu_s_per_signature"],
        &["keygen_ms"],
        &["baseline", "sign_ms"],
        &["baseline", "keygen_ms"],
        &["bound", "throughput_per_s"],
        &["bound", "latency_ms"],
        &["ratios", "p50_vs_inprocess"],
        &["ratios", "throughput_vs_bound"],
    ] {
        let v = number(&doc, path);
        assert!(v.is_finite() && v > 0.0, "{} = {v}", path.join("."));
    }
    // Percentiles are ordered.
    let p = |k: &str| number(&doc, &["latency_ms", k]);
    assert!(p("p50") <= p("p95") && p("p95") <= p("p99") && p("p99") <= p("max"));
    // The progress line went to stderr.
    assert!(
        stderr.contains("answered") || stderr.contains("signing:"),
        "{stderr}"
    );
}
