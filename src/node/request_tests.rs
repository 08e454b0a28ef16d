//! The canonical request bytes, field checks and the verification cache.
use super::*;

fn req() -> SignRequest {
    SignRequest {
        key_id: KeyId::parse("k").unwrap(),
        digest: Digest32([7; 32]),
        path: DerivationPath::parse("m/0/1").unwrap(),
        slot: Some(Slot {
            scope: "eth2:val-9".into(),
            height: 10,
            round: 0,
            step: 2,
        }),
        request_id: "r1".into(),
        expiry_unix: 1_000,
        payload: None,
    }
}

#[test]
fn every_field_changes_the_canonical_bytes() {
    let base = req().canonical_bytes();
    assert!(base.starts_with(&[0, 0, 0, 23]));
    let mut variants = Vec::new();
    let mut r = req();
    r.key_id = KeyId::parse("k2").unwrap();
    variants.push(r);
    let mut r = req();
    r.digest = Digest32([8; 32]);
    variants.push(r);
    let mut r = req();
    r.path = DerivationPath::parse("m/0").unwrap();
    variants.push(r);
    let mut r = req();
    r.slot = None;
    variants.push(r);
    for change in 0..4 {
        let mut r = req();
        let s = r.slot.as_mut().unwrap();
        match change {
            0 => s.scope.push('x'),
            1 => s.height += 1,
            2 => s.round += 1,
            _ => s.step += 1,
        }
        variants.push(r);
    }
    let mut r = req();
    r.request_id = "r2".into();
    variants.push(r);
    let mut r = req();
    r.expiry_unix += 1;
    variants.push(r);
    for v in variants {
        assert_ne!(v.canonical_bytes(), base, "{v:?}");
    }
    // Length prefixes keep field boundaries: moving a byte between the
    // scope and the request id changes the bytes.
    let mut a = req();
    a.request_id = "xr1".into();
    let mut b = req();
    b.slot.as_mut().unwrap().scope.push('x');
    assert_ne!(a.canonical_bytes(), b.canonical_bytes());
}

#[test]
fn expiry_and_fields_are_checked() {
    let r = req();
    assert!(r.check_fields(999).is_ok());
    assert!(r.check_fields(1_001).unwrap_err().contains("expired"));
    assert!(r.check_fields(1).unwrap_err().contains("ahead"));
    let mut r = req();
    r.request_id.clear();
    assert!(r.check_fields(999).is_err());
    let mut r = req();
    r.slot.as_mut().unwrap().scope = "bad scope".into();
    assert!(r.check_fields(999).unwrap_err().contains("scope"));
}

/// Counts calls and accepts only signatures that start with 1.
struct Counting(std::sync::atomic::AtomicUsize);

impl RequestVerifier for Counting {
    fn verify(&self, auth: &ClientAuth, _message: &[u8]) -> Result<NodeName, String> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        match auth.signature.first() {
            Some(1) => Ok(NodeName::parse("validator").unwrap()),
            _ => Err("bad signature".into()),
        }
    }

    fn verify_admin(&self, _auth: &ClientAuth, _message: &[u8]) -> Result<NodeName, String> {
        Err("not an admin".into())
    }

    fn verify_node(&self, _auth: &ClientAuth, _message: &[u8]) -> Result<NodeName, String> {
        Err("not a node".into())
    }

    fn cluster(&self) -> String {
        "test".into()
    }
}

#[test]
fn the_verification_cache_remembers_only_exact_successes() {
    let inner = Arc::new(Counting(Default::default()));
    let cached = CachedVerifier::new(inner.clone());
    let calls = || inner.0.load(std::sync::atomic::Ordering::SeqCst);
    let good = ClientAuth {
        chain: vec![vec![9; 40]],
        scheme: 0x0403,
        signature: vec![1, 2, 3],
    };
    let msg = req().canonical_bytes();
    assert_eq!(cached.verify(&good, &msg).unwrap().as_str(), "validator");
    assert_eq!(cached.verify(&good, &msg).unwrap().as_str(), "validator");
    assert_eq!(
        calls(),
        1,
        "a repeat of the same bytes is not verified again"
    );
    // Any other byte anywhere is verified afresh.
    let mut other = req();
    other.digest = Digest32([9; 32]);
    cached.verify(&good, &other.canonical_bytes()).unwrap();
    let mut chain = good.clone();
    chain.chain[0][0] = 8;
    cached.verify(&chain, &msg).unwrap();
    let mut sig = good.clone();
    sig.signature.push(4);
    cached.verify(&sig, &msg).unwrap();
    assert_eq!(calls(), 4);
    // Failures are never remembered.
    let bad = ClientAuth {
        signature: vec![2],
        ..good.clone()
    };
    assert!(cached.verify(&bad, &msg).is_err());
    assert!(cached.verify(&bad, &msg).is_err());
    assert_eq!(calls(), 6);
}

#[test]
fn a_spend_is_one_per_payload_and_path_and_a_psbt_is_one_whatever_its_inputs() {
    let with = |kind: crate::payload::Kind, path: &str, item: u32, bytes: &[u8]| SignRequest {
        path: DerivationPath::parse(path).unwrap(),
        slot: None,
        payload: Some(Payload {
            kind,
            bytes: bytes.to_vec().into(),
            item,
        }),
        ..req()
    };
    use crate::payload::Kind;
    let tx = with(Kind::EthTransaction, "m/0", 0, b"tx");
    assert_eq!(
        tx.spend_id(),
        with(Kind::EthTransaction, "m/0", 0, b"tx").spend_id()
    );
    let retried = SignRequest {
        request_id: "another id".into(),
        ..with(Kind::EthTransaction, "m/0", 0, b"tx")
    };
    assert_eq!(
        tx.spend_id(),
        retried.spend_id(),
        "a retry is the same spend"
    );
    // The same bytes from another address are another spend.
    assert_ne!(
        tx.spend_id(),
        with(Kind::EthTransaction, "m/1", 0, b"tx").spend_id()
    );
    assert_ne!(
        tx.spend_id(),
        with(Kind::EthTransaction, "m/0", 0, b"tx2").spend_id()
    );
    // A PSBT's items carry each input's own path: still one spend.
    let input0 = with(Kind::BitcoinPsbt, "m/0/1", 0, b"psbt");
    let input1 = with(Kind::BitcoinPsbt, "m/0/7", 1, b"psbt");
    assert_eq!(input0.spend_id(), input1.spend_id());
    assert_eq!(req().spend_id(), None, "a raw digest spends nothing");
}
