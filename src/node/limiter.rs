//! The rate limits of a policy (`[[client]]` and `[[key]]` `rate_per_s` /
//! `burst`): token buckets per node, in memory.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::policy::Policy;
use crate::domain::KeyId;

/// Token buckets for the rate limits of a policy (per node, in memory).
#[derive(Debug, Default)]
pub struct Limiter {
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl Limiter {
    /// Takes one token from each applicable bucket (client, then key), or
    /// says how long to wait. Nothing is taken when any bucket is empty.
    pub fn take(
        &self,
        policy: &Policy,
        client: &str,
        key: &KeyId,
    ) -> Result<(), (String, Duration)> {
        let mut limits = Vec::new();
        if let Some(c) = policy
            .client
            .iter()
            .find(|c| c.name == client && c.rate_per_s.is_some())
        {
            let rate = c.rate_per_s.unwrap_or(1.0);
            limits.push((
                format!("client {client}"),
                rate,
                c.burst.unwrap_or(rate.max(1.0)),
            ));
        }
        if let Some(k) = policy.key.iter().find(|k| k.name == key.as_str()) {
            limits.push((
                format!("key {key}"),
                k.rate_per_s,
                k.burst.unwrap_or(k.rate_per_s.max(1.0)),
            ));
        }
        let Ok(mut buckets) = self.buckets.lock() else {
            return Err(("rate limiter".into(), Duration::from_secs(1)));
        };
        let now = Instant::now();
        let mut updated = Vec::with_capacity(limits.len());
        for (name, rate, burst) in limits {
            let (tokens, at) = buckets.get(&name).copied().unwrap_or((burst, now));
            let tokens =
                (tokens + now.saturating_duration_since(at).as_secs_f64() * rate).min(burst);
            if tokens < 1.0 {
                let wait = Duration::try_from_secs_f64((1.0 - tokens) / rate)
                    .unwrap_or(Duration::from_secs(1000));
                return Err((name, wait));
            }
            updated.push((name, tokens - 1.0));
        }
        for (name, tokens) in updated {
            buckets.insert(name, (tokens, now));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(s: &str) -> KeyId {
        KeyId::parse(s).unwrap()
    }

    const TEXT: &str = r#"
[[client]]
name = "v1"
keys = ["k1"]
paths = ["m/0"]
rate_per_s = 1
burst = 2

[[client]]
name = "v2"
keys = ["*"]
paths = ["m"]
"#;

    #[test]
    fn a_client_over_its_rate_waits_and_others_do_not() {
        let pol = Policy::parse(TEXT).unwrap();
        let lim = Limiter::default();
        assert!(lim.take(&pol, "v1", &k("k1")).is_ok());
        assert!(lim.take(&pol, "v1", &k("k1")).is_ok());
        let (which, wait) = lim.take(&pol, "v1", &k("k1")).unwrap_err();
        assert_eq!(which, "client v1");
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        for _ in 0..10 {
            assert!(lim.take(&pol, "v2", &k("k1")).is_ok());
        }
    }
}
