//! Tests of the admin request bytes and field checks.

use super::*;

fn req() -> AdminRequest {
    AdminRequest {
        operation: AdminOp::Reshare,
        key_id: KeyId::parse("k").unwrap(),
        key_type: Some(KeyType::Secp256k1),
        committee: vec![NodeName::parse("b").unwrap(), NodeName::parse("c").unwrap()],
        threshold: 2,
        target: None,
        exclude: vec![NodeName::parse("a").unwrap()],
        cluster: "thresig.local/00ff".into(),
        lifecycle_seq: 0,
        request_id: "r1".into(),
        issued_unix: 900,
        expiry_unix: 1_000,
    }
}

#[test]
fn every_field_changes_the_canonical_bytes() {
    let base = req().canonical_bytes();
    let mut variants = Vec::new();
    let mut r = req();
    r.operation = AdminOp::Create;
    variants.push(r);
    let mut r = req();
    r.key_id = KeyId::parse("k2").unwrap();
    variants.push(r);
    let mut r = req();
    r.key_type = Some(KeyType::P256);
    variants.push(r);
    let mut r = req();
    r.key_type = None;
    variants.push(r);
    let mut r = req();
    r.committee.reverse();
    variants.push(r);
    let mut r = req();
    r.threshold = 1;
    variants.push(r);
    let mut r = req();
    r.target = Some(NodeName::parse("a").unwrap());
    variants.push(r);
    let mut r = req();
    r.exclude.clear();
    variants.push(r);
    let mut r = req();
    r.request_id = "r2".into();
    variants.push(r);
    let mut r = req();
    r.expiry_unix += 1;
    variants.push(r);
    let mut r = req();
    r.issued_unix += 1;
    variants.push(r);
    let mut r = req();
    r.cluster = "thresig.local/00fe".into();
    variants.push(r);
    let mut r = req();
    r.lifecycle_seq = 1;
    variants.push(r);
    for v in variants {
        assert_ne!(v.canonical_bytes(), base, "{v:?}");
    }
    // A name moved from the committee to the exclusions changes the bytes.
    let mut a = req();
    a.committee.pop();
    a.exclude.push(NodeName::parse("c").unwrap());
    assert_ne!(a.canonical_bytes(), base);
}

#[test]
fn fields_and_expiry_are_checked() {
    let r = req();
    assert!(r.check_fields(999).is_ok());
    assert!(r.check_fields(1_001).unwrap_err().contains("expired"));
    assert!(r.check_fields(900).is_ok(), "a week ahead is allowed");
    let mut far = req();
    far.expiry_unix = 999 + MAX_ADMIN_EXPIRY_AHEAD_SECS + 1;
    assert!(far.check_fields(999).unwrap_err().contains("7 days"));
    let mut long = req();
    long.issued_unix = 0;
    long.expiry_unix = MAX_ADMIN_EXPIRY_AHEAD_SECS + 1;
    assert!(long.check_fields(999).unwrap_err().contains("issue time"));
    assert!(
        req()
            .check_fields(900 - MAX_ISSUED_AHEAD_SECS - 1)
            .unwrap_err()
            .contains("ahead"),
        "issued in the future"
    );
    let mut r = req();
    r.cluster.clear();
    assert!(r.check_fields(999).unwrap_err().contains("version 1"));
    let mut r = req();
    r.lifecycle_seq = 3;
    assert!(r
        .check_fields(999)
        .unwrap_err()
        .contains("lifecycle sequence"));
    r.operation = AdminOp::Freeze;
    r.committee.clear();
    r.threshold = 0;
    r.exclude.clear();
    assert!(r.check_fields(999).is_ok());
    let mut r = req();
    r.request_id.clear();
    assert!(r.check_fields(999).is_err());
    let mut r = req();
    r.operation = AdminOp::Rotate;
    assert!(r.check_fields(999).unwrap_err().contains("no committee"));
    let mut r = req();
    r.target = Some(NodeName::parse("a").unwrap());
    assert!(r.check_fields(999).unwrap_err().contains("target"));
    let mut r = req();
    r.operation = AdminOp::Create;
    r.key_type = None;
    assert!(r.check_fields(999).unwrap_err().contains("key type"));
}

#[test]
fn the_nonce_binds_the_request_and_every_approval() {
    let approval = ClientAuth {
        chain: vec![vec![1; 10]],
        scheme: 0x0403,
        signature: vec![2; 70],
    };
    let s = SignedAdmin {
        request: req(),
        approvals: vec![approval.clone()],
    };
    let mut nonce = vec![9; NONCE_RANDOM];
    nonce.extend_from_slice(&s.digest());
    assert!(s.binds(&nonce));
    assert!(!s.binds(&nonce[..NONCE_RANDOM]));
    let mut two = s.clone();
    two.approvals.push(approval);
    assert!(!two.binds(&nonce), "an added approval changes the binding");
    let mut other = s.clone();
    other.approvals[0].signature[0] = 3;
    assert!(!other.binds(&nonce));
    let mut other = s;
    other.request.threshold = 3;
    assert!(!other.binds(&nonce));
}
