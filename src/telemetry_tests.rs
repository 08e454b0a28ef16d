//! Tests of `telemetry.rs`: the key series stay bounded.

use super::*;
use crate::node::{Health, KeyHealth};

fn key(i: usize, state: &'static str, reachable: usize) -> KeyHealth {
    KeyHealth {
        key_id: crate::domain::KeyId::parse(&format!("k{i}")).unwrap(),
        state,
        threshold: 2,
        reachable,
    }
}

fn series(m: &Metrics, keys: Vec<KeyHealth>) -> (usize, String) {
    m.set_health(&Health {
        nodes: Vec::new(),
        keys,
        sessions_in_flight: 0,
    });
    let text = m.render();
    let n = text.lines().filter(|l| !l.starts_with('#')).count();
    (n, text)
}

#[test]
fn the_series_count_does_not_grow_with_healthy_keys_and_keys_in_trouble_are_listed() {
    let m = Metrics::new("test", 1);
    let healthy = |n: usize| (0..n).map(|i| key(i, "active", 3)).collect::<Vec<_>>();
    let (ten, text) = series(&m, healthy(10));
    assert!(text.contains("thresig_keys{state=\"active\"} 10"), "{text}");
    assert!(
        text.contains("thresig_keys_quorum{quorum=\"healthy\"} 10"),
        "{text}"
    );
    let (two_hundred, text) = series(&m, healthy(200));
    assert_eq!(ten, two_hundred, "{text}");
    assert!(
        text.contains("thresig_keys{state=\"active\"} 200"),
        "{text}"
    );
    assert!(!text.contains("key=\"k7\""), "{text}");
    // One key at risk, one frozen, one without quorum: each listed with
    // its own series (3 of its own each: reachable, threshold and 5
    // states), the healthy ones still not.
    let mut keys = healthy(200);
    keys[7] = key(7, "active", 2);
    keys[8] = key(8, "frozen", 3);
    keys[9] = key(9, "active", 1);
    let (troubled, text) = series(&m, keys);
    assert_eq!(troubled, two_hundred + 3 * 7, "{text}");
    assert!(
        text.contains("thresig_key_reachable_nodes{key=\"k7\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("thresig_key_state{key=\"k8\",state=\"frozen\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("thresig_key_reachable_nodes{key=\"k9\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("thresig_keys_quorum{quorum=\"at_risk\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("thresig_keys_quorum{quorum=\"lost\"} 1"),
        "{text}"
    );
    assert!(text.contains("thresig_keys{state=\"frozen\"} 1"), "{text}");
    assert!(!text.contains("key=\"k6\""), "{text}");
}
