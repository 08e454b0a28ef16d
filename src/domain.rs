//! Validated domain newtypes: key ids, node names, thresholds, execution ids,
//! derivation paths. Parse, don't validate: raw input becomes one of these at
//! the edge. No I/O here.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// Why a raw value was refused. The message names the offending input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("invalid key id {0:?}: use 1-64 characters from a-z, 0-9, '-', '_' and '.'")]
    KeyId(String),
    #[error("invalid node name {0:?}: use 1-63 characters from a-z, 0-9 and '-', starting with a letter")]
    NodeName(String),
    #[error("invalid threshold: {0}")]
    Threshold(String),
    #[error("invalid derivation path {path:?}: {reason}")]
    Path { path: String, reason: String },
    #[error("digest must be exactly 32 bytes (64 hex characters), got {0} bytes")]
    DigestLength(usize),
    #[error("digest is not valid hex")]
    DigestHex,
    #[error("unknown key type {0:?}: use secp256k1 or p256")]
    KeyType(String),
    #[error(
        "invalid address {0:?}: use HOST:PORT, where HOST is an IP address ([..] around IPv6) \
         or a DNS name"
    )]
    HostPort(String),
}

/// The signature scheme of a key: ECDSA on secp256k1 (the default) or on
/// NIST P-256. Both run DKLs23; the protocol module picks the curve.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum KeyType {
    #[default]
    Secp256k1,
    P256,
}

impl KeyType {
    pub const ALL: [KeyType; 2] = [Self::Secp256k1, Self::P256];

    /// Accepts `secp256k1` and `p256` (also `secp256r1`, `nistp256`); an
    /// empty string is the default, secp256k1.
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        match raw.to_ascii_lowercase().as_str() {
            "" | "secp256k1" => Ok(Self::Secp256k1),
            "p256" | "p-256" | "secp256r1" | "nistp256" => Ok(Self::P256),
            _ => Err(DomainError::KeyType(raw.to_owned())),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Secp256k1 => "secp256k1",
            Self::P256 => "p256",
        }
    }

    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Name of a key, unique in the cluster. Also its id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(String);

impl KeyId {
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let ok = !raw.is_empty()
            && raw.len() <= 64
            && raw
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(DomainError::KeyId(raw.to_owned()))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Name of a signer node; appears in its certificate's SPIFFE URI and as its
/// DNS subject alternative name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeName(String);

impl NodeName {
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let ok = !raw.is_empty()
            && raw.len() <= 63
            && raw.as_bytes()[0].is_ascii_lowercase()
            && raw
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(DomainError::NodeName(raw.to_owned()))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for NodeName {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Where to reach a node: an IP address or a DNS name, and a port. A name is
/// resolved at each connection attempt, so a node that moves (a pod that is
/// rescheduled) is found at its new address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    host: String,
    port: u16,
}

impl HostPort {
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let bad = || DomainError::HostPort(raw.to_owned());
        if let Ok(a) = raw.parse::<std::net::SocketAddr>() {
            return Ok(a.into());
        }
        let (host, port) = raw.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        let name = host.strip_suffix('.').unwrap_or(host);
        if port == 0 || name.len() > 253 || !name.split('.').all(label_ok) {
            return Err(bad());
        }
        Ok(Self {
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    /// The host as a resolver takes it (an IPv6 address without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl From<std::net::SocketAddr> for HostPort {
    fn from(a: std::net::SocketAddr) -> Self {
        Self {
            host: a.ip().to_string(),
            port: a.port(),
        }
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl FromStr for HostPort {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// A t-of-n threshold: signatures need exactly t parties (as in the DKLs23 engine).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Threshold {
    t: u8,
    n: u8,
}

impl Threshold {
    pub fn new(t: u32, n: usize) -> Result<Self, DomainError> {
        if n > 64 {
            return Err(DomainError::Threshold(format!(
                "a committee has at most 64 nodes, got {n}"
            )));
        }
        if t < 2 || t as usize > n {
            return Err(DomainError::Threshold(format!(
                "threshold must be between 2 and the committee size {n}, got {t}"
            )));
        }
        Ok(Self {
            t: t as u8,
            n: n as u8,
        })
    }
    pub fn t(&self) -> u8 {
        self.t
    }
    pub fn n(&self) -> u8 {
        self.n
    }
}

/// The 32-byte id of one protocol run. Also the engine's session id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExecutionId([u8; 32]);

impl ExecutionId {
    /// `SHA-256("thresig/eid/v1" | op | key_id | epoch | sorted participants | request digest | nonce)`,
    /// each field length-prefixed so that no two inputs share an encoding.
    pub fn derive(
        op: &str,
        key: &KeyId,
        epoch: u64,
        participants: &[NodeName],
        request_digest: &[u8],
        nonce: &[u8],
    ) -> Self {
        let mut sorted: Vec<&str> = participants.iter().map(NodeName::as_str).collect();
        sorted.sort_unstable();
        let mut h = Sha256::new();
        let mut field = |b: &[u8]| {
            h.update((b.len() as u64).to_be_bytes());
            h.update(b);
        };
        field(b"thresig/eid/v1");
        field(op.as_bytes());
        field(key.as_str().as_bytes());
        field(&epoch.to_be_bytes());
        for p in sorted {
            field(p.as_bytes());
        }
        field(request_digest);
        field(nonce);
        Self(h.finalize().into())
    }
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        b.try_into().ok().map(Self)
    }
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for ExecutionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "eid:{}", hex::encode(&self.0[..8]))
    }
}

impl fmt::Display for ExecutionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A 32-byte message digest to be signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Digest32(pub [u8; 32]);

impl Digest32 {
    pub fn from_slice(b: &[u8]) -> Result<Self, DomainError> {
        b.try_into()
            .map(Self)
            .map_err(|_| DomainError::DigestLength(b.len()))
    }
    pub fn from_hex(s: &str) -> Result<Self, DomainError> {
        let s = s.strip_prefix("0x").unwrap_or(s);
        let bytes = hex::decode(s).map_err(|_| DomainError::DigestHex)?;
        Self::from_slice(&bytes)
    }
}

/// A non-hardened BIP32 derivation path, e.g. `m/0/1`. The empty path is the
/// master key.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DerivationPath(Vec<u32>);

/// First hardened child index; hardened derivation needs the whole private key.
const HARDENED: u32 = 1 << 31;

/// The most nodes a cluster roster (and so any committee, dealer or
/// exclusion list) may name. Lists from peers are refused past it at decode.
pub const MAX_ROSTER: usize = 64;

impl DerivationPath {
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let err = |reason: &str| DomainError::Path {
            path: raw.to_owned(),
            reason: reason.to_owned(),
        };
        if raw.is_empty() || raw == "m" {
            return Ok(Self::default());
        }
        let rest = raw
            .strip_prefix("m/")
            .ok_or_else(|| err("must start with \"m/\""))?;
        let mut out = Vec::new();
        for part in rest.split('/') {
            if part.ends_with('\'') || part.ends_with('h') || part.ends_with('H') {
                return Err(err(
                    "hardened derivation is not supported: a threshold key has no whole private \
                     key to derive it from",
                ));
            }
            let idx: u32 = part
                .parse()
                .map_err(|_| err("each element must be a decimal child index"))?;
            if idx >= HARDENED {
                return Err(err("child index must be below 2^31 (non-hardened)"));
            }
            out.push(idx);
        }
        if out.len() > 255 {
            return Err(err("at most 255 levels"));
        }
        Ok(Self(out))
    }
    pub fn indices(&self) -> &[u32] {
        &self.0
    }
    pub fn is_master(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for DerivationPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("m")?;
        for i in &self.0 {
            write!(f, "/{i}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_paths_and_refuses_hardened() {
        assert_eq!(
            DerivationPath::parse("m/0/1").unwrap().indices(),
            &[0u32, 1][..]
        );
        assert!(DerivationPath::parse("").unwrap().is_master());
        assert!(DerivationPath::parse("m").unwrap().is_master());
        for bad in ["m/0'", "m/1h", "0/1", "m/x", "m/2147483648", "m//1"] {
            assert!(DerivationPath::parse(bad).is_err(), "{bad} accepted");
        }
        assert!(DerivationPath::parse("m/44'/60'")
            .unwrap_err()
            .to_string()
            .contains("hardened"));
        assert_eq!(DerivationPath::parse("m/7/3").unwrap().to_string(), "m/7/3");
    }

    #[test]
    fn threshold_bounds() {
        assert!(Threshold::new(2, 3).is_ok());
        assert!(Threshold::new(1, 3).is_err());
        assert!(Threshold::new(4, 3).is_err());
    }

    #[test]
    fn eid_depends_on_every_field_and_not_participant_order() {
        let k = KeyId::parse("k").unwrap();
        let a = NodeName::parse("a").unwrap();
        let b = NodeName::parse("b").unwrap();
        let base = ExecutionId::derive("sign", &k, 1, &[a.clone(), b.clone()], b"d", b"n");
        assert_eq!(
            base,
            ExecutionId::derive("sign", &k, 1, &[b.clone(), a.clone()], b"d", b"n")
        );
        assert_ne!(
            base,
            ExecutionId::derive("sign", &k, 2, &[a.clone(), b.clone()], b"d", b"n")
        );
        assert_ne!(
            base,
            ExecutionId::derive("sign", &k, 1, &[a.clone(), b.clone()], b"e", b"n")
        );
        assert_ne!(
            base,
            ExecutionId::derive("sign", &k, 1, &[a, b], b"d", b"m")
        );
    }

    #[test]
    fn names_and_digests_are_validated() {
        assert!(KeyId::parse("validator-1").is_ok());
        assert!(KeyId::parse("Bad Key").is_err());
        assert!(NodeName::parse("a").is_ok());
        assert!(NodeName::parse("1a").is_err());
        assert!(Digest32::from_hex(&"ab".repeat(32)).is_ok());
        assert_eq!(
            Digest32::from_hex(&"ab".repeat(31)).unwrap_err(),
            DomainError::DigestLength(31)
        );
    }

    #[test]
    fn host_port_takes_ips_and_dns_names_and_refuses_the_rest() {
        for (raw, host, port, shown) in [
            ("127.0.0.1:7400", "127.0.0.1", 7400, "127.0.0.1:7400"),
            ("[::1]:7400", "::1", 7400, "[::1]:7400"),
            (
                "a.thresig.svc.cluster.local:7400",
                "a.thresig.svc.cluster.local",
                7400,
                "a.thresig.svc.cluster.local:7400",
            ),
            ("Signer-B:1", "signer-b", 1, "signer-b:1"),
        ] {
            let a = HostPort::parse(raw).unwrap();
            assert_eq!(
                (a.host(), a.port(), a.to_string().as_str()),
                (host, port, shown),
                "{raw}"
            );
        }
        for raw in [
            "a",
            "a:",
            ":7400",
            "a:0",
            "a:70000",
            "a b:1",
            "-a:1",
            "a..b:1",
            "::1:7400",
            "a/b:1",
            "http://a:1",
        ] {
            assert_eq!(
                HostPort::parse(raw),
                Err(DomainError::HostPort(raw.into())),
                "{raw}"
            );
        }
    }
}
