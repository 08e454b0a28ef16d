//! Per-node authorization policy (default deny): which client identities may
//! sign with which keys and derivation paths, at what rate, and which admin
//! identities may run which admin operations. Read from a TOML file; every
//! decision names the rule that made it.
//!
//! ```toml
//! [[client]]
//! name = "validator-1"          # the client/<name> certificate identity
//! keys = ["validator-key"]      # key ids, or "*" for every key
//! paths = ["m/0", "m/1/7"]      # allowed path prefixes; "m" allows every path
//! rate_per_s = 20               # optional token bucket for this client
//! burst = 40
//!
//! [[key]]
//! name = "validator-key"        # optional per-key rate limit, over all clients
//! rate_per_s = 50
//! burst = 100
//!
//! [[admin]]
//! name = "ops"
//! operations = ["*"]            # or some of: create, rotate, reshare, repair, freeze, unfreeze,
//!                               # delete, unban, read, reload-policy
//!
//! [[quorum]]                    # key changes that need several admins (see quorum.rs)
//! operations = ["reshare"]      # some of: create, rotate, repair, reshare, freeze, unfreeze, delete
//! admins = ["ops-1", "ops-2", "sec-1"]
//! required = 2                  # distinct admins of that list who signed the request
//!
//! [limits]
//! min_threshold = 2             # refuse a keygen or reshare below this threshold
//! ```

use serde::Deserialize;

use super::content_policy::{BitcoinRule, ContentRule, CosmosRule, EthRule};
use crate::domain::{DerivationPath, KeyId};
use crate::payload::Decoded;

/// Admin operations a policy can grant.
pub const ADMIN_OPERATIONS: [&str; 12] = [
    "create",
    "rotate",
    "reshare",
    "repair",
    "freeze",
    "unfreeze",
    "delete",
    "unban",
    "import",
    "read",
    "reload-policy",
    "backup",
];

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default)]
    pub client: Vec<ClientRule>,
    #[serde(default)]
    pub key: Vec<KeyRule>,
    #[serde(default)]
    pub admin: Vec<AdminRule>,
    #[serde(default)]
    pub quorum: Vec<QuorumRule>,
    #[serde(default)]
    pub limits: Limits,
}

/// An operation that needs the approvals of `required` distinct admins of
/// `admins` (checked by every node on the signed admin request).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuorumRule {
    pub operations: Vec<String>,
    pub admins: Vec<String>,
    pub required: u32,
}

/// Bounds on what any approved request may ask.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// A keygen or reshare to a lower threshold is refused.
    pub min_threshold: Option<u32>,
    /// An admin request issued longer ago than this is refused, also when a
    /// node catches up on a change it missed: a number with s, m, h or d,
    /// at most 30d. 7 days unless set.
    pub max_approval_age: Option<String>,
}

/// `limits.max_approval_age` when the policy sets none.
pub const DEFAULT_MAX_APPROVAL_AGE_SECS: u64 = 7 * 86_400;
/// The longest `limits.max_approval_age` a policy may set.
pub const MAX_APPROVAL_AGE_CAP_SECS: u64 = 30 * 86_400;

/// Parses a number of seconds with an optional unit: s, m, h or d ("24h").
pub fn parse_age(s: &str) -> Result<u64, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let bad = || format!("{s:?}: expected a number with s, m, h or d, e.g. 24h");
    let n: u64 = num.parse().map_err(|_| bad())?;
    match unit {
        "" | "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        "d" => n.checked_mul(86_400),
        _ => None,
    }
    .ok_or_else(bad)
}

/// A number of seconds in words: "3d 4h", "15m", "42s".
pub fn human_age(secs: u64) -> String {
    let (d, h, m) = (secs / 86_400, (secs % 86_400) / 3600, (secs % 3600) / 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{secs}s"),
        (0, 0, m) => format!("{m}m"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

impl Policy {
    /// `limits.max_approval_age` in seconds (checked when the policy loads).
    pub fn max_approval_age_secs(&self) -> u64 {
        self.limits
            .max_approval_age
            .as_deref()
            .and_then(|s| parse_age(s).ok())
            .unwrap_or(DEFAULT_MAX_APPROVAL_AGE_SECS)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientRule {
    pub name: String,
    pub keys: Vec<String>,
    pub paths: Vec<String>,
    pub rate_per_s: Option<f64>,
    pub burst: Option<f64>,
    /// Typed payload kinds this client may send (`content_policy.rs`);
    /// unset: raw digests only.
    pub payloads: Option<Vec<String>>,
    /// With `payloads`: whether raw 32-byte digests are still allowed.
    pub raw_digest: Option<bool>,
    pub eth: Option<EthRule>,
    pub bitcoin: Option<BitcoinRule>,
    pub cosmos: Option<CosmosRule>,
}

impl ClientRule {
    pub fn content(&self) -> ContentRule<'_> {
        ContentRule {
            paths: &self.paths,
            payloads: self.payloads.as_deref(),
            raw_digest: self.raw_digest,
            eth: self.eth.as_ref(),
            bitcoin: self.bitcoin.as_ref(),
            cosmos: self.cosmos.as_ref(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRule {
    pub name: String,
    pub rate_per_s: f64,
    pub burst: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminRule {
    pub name: String,
    pub operations: Vec<String>,
}

/// The outcome of a policy check and the rule behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The rule that decided, e.g. `client[0] (validator-1)`, or `default deny`.
    pub rule: String,
    pub reason: String,
    /// What an allowed payload spends against the deciding rule's
    /// rolling-window limits.
    pub windows: Vec<super::content_policy::WindowSpend>,
}

impl Decision {
    pub(super) fn allow(rule: String, reason: String) -> Self {
        Self {
            allowed: true,
            rule,
            reason,
            windows: Vec::new(),
        }
    }
    pub(super) fn deny(rule: String, reason: String) -> Self {
        Self {
            allowed: false,
            rule,
            reason,
            windows: Vec::new(),
        }
    }
}

impl std::fmt::Display for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} by {}: {}",
            if self.allowed { "allowed" } else { "denied" },
            self.rule,
            self.reason
        )
    }
}

/// A rate (per second) must lie in [0.001, 1e6]; a burst in [1, 1e6].
fn in_range(v: Option<f64>, what: &str, min: f64) -> Result<(), String> {
    match v {
        Some(x) if !(x.is_finite() && (min..=1e6).contains(&x)) => {
            Err(format!("{what} must be a number from {min} to 1000000"))
        }
        _ => Ok(()),
    }
}

impl Policy {
    /// Parses and validates a policy file's text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let p: Policy = toml::from_str(text).map_err(|e| e.to_string())?;
        for (i, c) in p.client.iter().enumerate() {
            let at = format!("client[{i}] ({})", c.name);
            if c.keys.is_empty() || c.paths.is_empty() {
                return Err(format!(
                    "{at}: keys and paths must not be empty (list \"*\" or \"m\" to allow all)"
                ));
            }
            for k in c.keys.iter().filter(|k| *k != "*") {
                KeyId::parse(k).map_err(|e| format!("{at}: key {k:?}: {e}"))?;
            }
            for path in &c.paths {
                DerivationPath::parse(path).map_err(|e| format!("{at}: path {path:?}: {e}"))?;
            }
            in_range(c.rate_per_s, &format!("{at}: rate_per_s"), 0.001)?;
            c.content().validate().map_err(|e| format!("{at}: {e}"))?;
            in_range(c.burst, &format!("{at}: burst"), 1.0)?;
        }
        for (i, k) in p.key.iter().enumerate() {
            in_range(
                Some(k.rate_per_s),
                &format!("key[{i}] ({}): rate_per_s", k.name),
                0.001,
            )?;
            in_range(k.burst, &format!("key[{i}] ({}): burst", k.name), 1.0)?;
        }
        for (i, a) in p.admin.iter().enumerate() {
            for op in a.operations.iter().filter(|o| *o != "*") {
                if !ADMIN_OPERATIONS.contains(&op.as_str()) {
                    return Err(format!(
                        "admin[{i}] ({}): unknown operation {op:?}; known: * or {}",
                        a.name,
                        ADMIN_OPERATIONS.join(", ")
                    ));
                }
            }
        }
        p.check_quorums()?;
        Ok(p)
    }

    /// Reads and parses a policy file.
    pub fn load(path: &std::path::Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read policy file {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("policy file {}: {e}", path.display()))
    }

    /// May `client` sign with `key` at `path`? (Its key and path rules
    /// only: reading a public key, and the first check of a request.)
    pub fn check_sign(&self, client: &str, key: &KeyId, path: &DerivationPath) -> Decision {
        self.check_sign_with(client, key, path, |_| Ok(Vec::new()))
    }

    /// May `client` sign `decoded` (`None`: a raw digest) with `key` at
    /// `path`? Every rule for the client that lists the key and path is
    /// tried; a refusal names the first such rule and its knob.
    pub fn check_sign_content(
        &self,
        client: &str,
        key: &KeyId,
        path: &DerivationPath,
        decoded: Option<&Decoded>,
    ) -> Decision {
        self.check_sign_with(client, key, path, |c| c.content().check(decoded))
    }

    fn check_sign_with(
        &self,
        client: &str,
        key: &KeyId,
        path: &DerivationPath,
        content: impl Fn(
            &ClientRule,
        ) -> Result<
            Vec<super::content_policy::WindowSpend>,
            super::content_policy::Refusal,
        >,
    ) -> Decision {
        let mut why_not = Vec::new();
        // A rule that lists the key and path but refuses the content is the
        // reason given, before rules that do not list them.
        let mut refused: Option<(String, String)> = None;
        for (i, c) in self.client.iter().enumerate() {
            if c.name != client {
                continue;
            }
            let rule = format!("client[{i}] ({})", c.name);
            if !c.keys.iter().any(|k| k == "*" || k == key.as_str()) {
                why_not.push((
                    rule,
                    format!("key {key} is not among its keys [{}]", c.keys.join(", ")),
                ));
                continue;
            }
            let prefix = c.paths.iter().find(|p| {
                DerivationPath::parse(p).is_ok_and(|p| path.indices().starts_with(p.indices()))
            });
            match prefix {
                Some(p) => match content(c) {
                    Ok(windows) => {
                        return Decision {
                            windows,
                            ..Decision::allow(
                                rule,
                                format!("key {key} is listed and path {path} is under {p}"),
                            )
                        }
                    }
                    Err(r) => {
                        refused.get_or_insert((format!("{rule} {}", r.knob), r.reason));
                    }
                },
                None => why_not.push((
                    rule,
                    format!(
                        "path {path} is under none of its prefixes [{}]",
                        c.paths.join(", ")
                    ),
                )),
            }
        }
        match refused.or_else(|| why_not.into_iter().next()) {
            Some((rule, reason)) => Decision::deny(rule, reason),
            None => Decision::deny(
                "default deny".into(),
                format!("no [[client]] rule names client {client}"),
            ),
        }
    }

    /// May admin `admin` run `operation` (one of `ADMIN_OPERATIONS`)?
    pub fn check_admin(&self, admin: &str, operation: &str) -> Decision {
        let mut why_not = None;
        for (i, a) in self.admin.iter().enumerate() {
            if a.name != admin {
                continue;
            }
            let rule = format!("admin[{i}] ({})", a.name);
            // "read" covers reading the keys ("read-keys") too.
            if a.operations
                .iter()
                .any(|o| o == "*" || o == operation || (o == "read" && operation == "read-keys"))
            {
                return Decision::allow(rule, format!("operation {operation} is listed"));
            }
            why_not.get_or_insert((
                rule,
                format!(
                    "operation {operation} is not among [{}]",
                    a.operations.join(", ")
                ),
            ));
        }
        // An admin who approves key changes reads the keys it approves for
        // (a freeze, unfreeze or delete names the key's lifecycle sequence);
        // nothing else (not the audit log, not the cluster status).
        if operation == "read-keys" {
            if let Some(i) = self
                .quorum
                .iter()
                .position(|q| q.admins.iter().any(|a| a == admin))
            {
                return Decision::allow(
                    format!("quorum[{i}]"),
                    "an admin of a quorum may read the keys".into(),
                );
            }
        }
        match why_not {
            Some((rule, reason)) => Decision::deny(rule, reason),
            None => Decision::deny(
                "default deny".into(),
                format!("no [[admin]] rule names admin {admin}"),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

[[key]]
name = "k2"
rate_per_s = 100

[[admin]]
name = "ops"
operations = ["read", "rotate"]
"#;

    fn k(s: &str) -> KeyId {
        KeyId::parse(s).unwrap()
    }
    fn p(s: &str) -> DerivationPath {
        DerivationPath::parse(s).unwrap()
    }

    #[test]
    fn decisions_name_their_rule() {
        let pol = Policy::parse(TEXT).unwrap();
        let d = pol.check_sign("v1", &k("k1"), &p("m/0/5"));
        assert!(d.allowed && d.rule == "client[0] (v1)", "{d}");
        let d = pol.check_sign("v1", &k("k1"), &p("m/1"));
        assert!(!d.allowed && d.reason.contains("path m/1"), "{d}");
        let d = pol.check_sign("v1", &k("k1"), &p("m"));
        assert!(!d.allowed, "the master key is not under m/0: {d}");
        let d = pol.check_sign("v1", &k("k2"), &p("m/0"));
        assert!(!d.allowed && d.reason.contains("key k2"), "{d}");
        assert!(pol.check_sign("v2", &k("anything"), &p("m/9/9")).allowed);
        let d = pol.check_sign("stranger", &k("k1"), &p("m/0"));
        assert_eq!(d.rule, "default deny");
        assert!(pol.check_admin("ops", "rotate").allowed);
        assert!(!pol.check_admin("ops", "reshare").allowed);
        assert_eq!(pol.check_admin("eve", "read").rule, "default deny");
        assert!(
            !Policy::default()
                .check_sign("v2", &k("k1"), &p("m"))
                .allowed
        );
    }

    #[test]
    fn bad_files_are_refused_with_the_place() {
        for (text, needle) in [
            (
                "[[client]]\nname='a'\nkeys=[]\npaths=['m']",
                "must not be empty",
            ),
            ("[[client]]\nname='a'\nkeys=['k']\npaths=['m/1h']", "path"),
            (
                "[[admin]]\nname='a'\noperations=['format-disk']",
                "unknown operation",
            ),
            ("[[key]]\nname='k'\nrate_per_s=0", "from 0.001"),
            ("[[key]]\nname='k'\nrate_per_s=1\nburst=0.5", "from 1"),
            (
                "[[client]]\nname='a'\nkeys=['k']\npaths=['m']\nrate_per_s=1e-20",
                "from 0.001",
            ),
            (
                "[[client]]\nname='a'\nkeys=['k']\npaths=['m']\ncolour='red'",
                "unknown field",
            ),
        ] {
            let e = Policy::parse(text).unwrap_err();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }
}
