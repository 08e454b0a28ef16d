//! The ops plane of a real node process (issue 13): `/metrics` counts the
//! signatures it made in the latency histogram, its quorum gauge drops when a
//! committee node stops, and `/readyz` says why the node cannot sign once
//! fewer than t committee nodes answer.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{check_signature, cluster, lines_until, spawn_node_process, ADMIN, CLIENT};

/// `GET path` on the ops plane: (status code, body).
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: ops\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, body.to_owned())
}

/// The value of the series `name` whose labels include every one of `labels`.
fn value(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Scrapes until `pred` holds on the metrics text (a minute at most).
fn scrape_until(addr: SocketAddr, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, text) = get(addr, "/metrics");
        assert_eq!(code, 200, "{text}");
        if pred(&text) {
            return text;
        }
        assert!(Instant::now() < until, "never saw {what}:\n{text}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The alert rules and the Grafana dashboard name only series a node
/// exports (`text` is a scrape after signing, with a key at risk, so every
/// series is present).
fn every_series_the_alerts_and_dashboard_use_is_exported(text: &str) {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut checked = 0;
    for file in [
        "deploy/prometheus/alerts.yml",
        "deploy/grafana/thresig.json",
    ] {
        let body = std::fs::read_to_string(format!("{root}/{file}")).unwrap();
        for (at, _) in body.match_indices("thresig_") {
            let name: String = body[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            // A word that merely starts like a series (none so far) would
            // fail here, which is the point: every name must be exported.
            let exported = text.lines().any(|l| {
                l.strip_prefix(name.as_str())
                    .is_some_and(|rest| rest.starts_with(['{', ' ']))
            });
            assert!(
                exported,
                "{file} uses {name}, which /metrics does not export:\n{text}"
            );
            checked += 1;
        }
    }
    assert!(checked > 10, "only {checked} series names found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_of_a_node_process_count_signatures_and_follow_the_quorum() {
    let (_dir, mut c) = cluster(&["a", "b", "c"]).await;
    let info = c
        .client(0, ADMIN)
        .unwrap()
        .create_key("k", 2, &[])
        .await
        .unwrap();
    // Node a as a real process, with its ops plane on a port of the OS's choosing.
    c.stop_node(0).await;
    let cfg_path = c.configs[0].data_dir.parent().unwrap().join("node.toml");
    let text = std::fs::read_to_string(&cfg_path).unwrap();
    let with_ops = text
        .replacen("[listen]\n", "[listen]\nops = \"127.0.0.1:0\"\n", 1)
        .replacen(
            "connections_per_node = 64\n",
            "connections_per_node = 40\n",
            1,
        );
    assert!(with_ops.contains("ops = ") && with_ops.contains("connections_per_node = 40"));
    std::fs::write(&cfg_path, with_ops).unwrap();
    let (mut child, rx) = spawn_node_process(&c, 0);
    let serving = lines_until(&rx, "serving").expect("the node never served");
    let line = serving.last().unwrap();
    let ops: SocketAddr = line
        .split(", ops plane ")
        .nth(1)
        .and_then(|a| a.trim().parse().ok())
        .unwrap_or_else(|| panic!("no ops address in {line}"));

    // Every committee node answers (3 of t = 2): the key counts as healthy
    // and active, and has no series of its own (a healthy key adds none).
    let text = scrape_until(ops, "the key healthy", |t| {
        value(t, "thresig_keys_quorum", &["quorum=\"healthy\""]) == Some(1.0)
    });
    assert_eq!(
        value(&text, "thresig_keys", &["state=\"active\""]),
        Some(1.0)
    );
    assert_eq!(
        value(&text, "thresig_key_reachable_nodes", &["key=\"k\""]),
        None,
        "{text}"
    );
    assert_eq!(value(&text, "thresig_peer_up", &["peer=\"c\""]), Some(1.0));
    // The budgets in force: the one set in the config, the defaults otherwise.
    assert_eq!(
        value(&text, "thresig_limit", &["limit=\"connections_per_node\""]),
        Some(40.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "thresig_limit", &["limit=\"refusals_per_window\""]),
        Some(50.0)
    );
    assert!(
        value(&text, "thresig_peer_refusals_total", &[]).is_some(),
        "{text}"
    );
    assert!(value(&text, "thresig_peer_rtt_seconds", &["peer=\"b\""]).unwrap() > 0.0);
    assert!(
        value(&text, "thresig_build_info", &["version=\""]) == Some(1.0),
        "{text}"
    );
    let cert_left = value(
        &text,
        "thresig_certificate_expiry_seconds",
        &["certificate=\"node\""],
    );
    assert!(cert_left.unwrap() > 86_400.0, "{text}");
    let (code, body) = get(ops, "/readyz");
    assert_eq!(code, 200, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["ready"], true, "{body}");
    // A healthy key is counted, not listed.
    assert_eq!(ready["key_counts"]["total"], 1, "{body}");
    assert_eq!(ready["key_counts"]["in_trouble"], 0, "{body}");
    assert_eq!(ready["keys"], serde_json::json!([]), "{body}");

    // Three signatures through a: the histogram counts them, and its
    // buckets add up to the count.
    let mut client = c.client(0, CLIENT).unwrap();
    for i in 0..3u8 {
        let d = [0x40 + i; 32];
        check_signature(
            &client.sign("k", d, "", "").await.unwrap(),
            &d,
            &info.public_key,
        );
    }
    let ok = ["op=\"sign\"", "outcome=\"ok\""];
    let text = scrape_until(ops, "three signatures counted", |t| {
        value(t, "thresig_request_duration_seconds_count", &ok) == Some(3.0)
    });
    let inf = [ok[0], ok[1], "le=\"+Inf\""];
    assert_eq!(
        value(&text, "thresig_request_duration_seconds_bucket", &inf),
        Some(3.0)
    );
    assert!(value(&text, "thresig_request_duration_seconds_sum", &ok).unwrap() > 0.0);
    assert_eq!(value(&text, "thresig_requests_total", &ok), Some(3.0));

    // c stops: 2 nodes answer (exactly t), so the key is at risk and has
    // its own series again; c is down.
    c.stop_node(2).await;
    let text = scrape_until(ops, "c down", |t| {
        value(t, "thresig_key_reachable_nodes", &["key=\"k\""]) == Some(2.0)
    });
    assert_eq!(
        value(&text, "thresig_key_threshold", &["key=\"k\""]),
        Some(2.0)
    );
    assert_eq!(
        value(
            &text,
            "thresig_key_state",
            &["key=\"k\"", "state=\"active\""]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&text, "thresig_keys_quorum", &["quorum=\"at_risk\""]),
        Some(1.0)
    );
    every_series_the_alerts_and_dashboard_use_is_exported(&text);
    assert_eq!(value(&text, "thresig_peer_up", &["peer=\"c\""]), Some(0.0));
    assert_eq!(
        value(&text, "thresig_peer_rtt_seconds", &["peer=\"c\""]),
        None
    );

    // b stops too: one node is not t, and /readyz says so.
    c.stop_node(1).await;
    scrape_until(ops, "b down", |t| {
        value(t, "thresig_key_reachable_nodes", &["key=\"k\""]) == Some(1.0)
    });
    let (code, body) = get(ops, "/readyz");
    assert_eq!(code, 503, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["ready"], false);
    let why = ready["why_not"].to_string();
    assert!(
        why.contains("no key has t committee nodes answering"),
        "{body}"
    );
    assert!(why.contains("k: 1 of t=2"), "{body}");
    assert_eq!(ready["keys"][0]["quorum"], false, "{body}");
    assert_eq!(ready["key_counts"]["in_trouble"], 1, "{body}");
    assert_eq!(get(ops, "/healthz").0, 200);
    assert_eq!(get(ops, "/nope").0, 404);

    child.kill().unwrap();
    child.wait().unwrap();
    c.stop().await;
}

/// `thresig node run` reports ready on `/readyz`, and logs that it serves,
/// only once it has compared its keys' state with their committee members
/// (or after 10 s): a rolling restart that waits for either never takes
/// down the next member before this one has heard from it (it would then
/// refuse to sign with the remaining member as coordinator).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_process_is_ready_only_once_it_has_heard_from_its_committee() {
    let (_dir, mut c) = cluster(&["a", "b", "c"]).await;
    c.client(0, ADMIN)
        .unwrap()
        .create_key("k", 2, &[])
        .await
        .unwrap();
    for i in 0..3 {
        c.stop_node(i).await;
    }
    let cfg_path = c.configs[0].data_dir.parent().unwrap().join("node.toml");
    let text = std::fs::read_to_string(&cfg_path).unwrap();
    let with_ops = text.replacen("[listen]\n", "[listen]\nops = \"127.0.0.1:0\"\n", 1);
    assert!(with_ops.contains("ops = "));
    std::fs::write(&cfg_path, with_ops).unwrap();
    // a starts while b and c are down: it listens, and keeps asking them.
    let (mut child, rx) = spawn_node_process(&c, 0);
    let lines = lines_until(&rx, "listening").expect("the node never listened");
    assert!(!lines.iter().any(|l| l.contains("serving")), "{lines:#?}");
    let line = lines.last().unwrap();
    let ops: SocketAddr = line
        .split("ops=Some(")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no ops address in {line}"));
    let (code, body) = get(ops, "/readyz");
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("starting: comparing every key's state with its committee members"),
        "{body}"
    );
    // b and c come back: a hears from both, then says it serves and turns
    // ready.
    c.start_node(1).await.unwrap();
    c.start_node(2).await.unwrap();
    let lines = lines_until(&rx, "serving").expect("the node never served");
    let serving = lines.last().unwrap();
    assert!(serving.contains(&format!("ops plane {ops}")), "{serving}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("compared the state of 1 keys with their committees")),
        "{lines:#?}"
    );
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, body) = get(ops, "/readyz");
        if code == 200 {
            break;
        }
        assert!(!body.contains("starting"), "{body}");
        assert!(Instant::now() < until, "never ready: {body}");
        std::thread::sleep(Duration::from_millis(200));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    c.stop().await;
}
