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
        params: Vec::new(),
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

/// One request per operation, as an admin would sign it.
fn one_of_each() -> Vec<AdminRequest> {
    let n = |s: &str| NodeName::parse(s).unwrap();
    AdminOp::ALL
        .into_iter()
        .map(|op| {
            let mut r = req();
            r.operation = op;
            r.committee.clear();
            r.exclude.clear();
            r.threshold = 0;
            r.key_type = None;
            match op {
                AdminOp::Create => {
                    r.key_type = Some(KeyType::P256);
                    r.committee = vec![n("a"), n("b"), n("c")];
                    r.threshold = 2;
                }
                AdminOp::Reshare => {
                    r.committee = vec![n("b"), n("c"), n("d")];
                    r.threshold = 2;
                    r.exclude = vec![n("a")];
                }
                AdminOp::Repair => r.target = Some(n("b")),
                AdminOp::Freeze | AdminOp::Unfreeze | AdminOp::Delete => r.lifecycle_seq = 7,
                AdminOp::Rotate | AdminOp::Unban => r.key_type = Some(KeyType::Secp256k1),
                AdminOp::Import => {
                    r.key_type = Some(KeyType::Secp256k1);
                    r.committee = vec![n("a"), n("b"), n("c")];
                    r.threshold = 2;
                    r.params = vec![0xa5; 3];
                }
            }
            r
        })
        .collect()
}

/// The signed bytes as the README's table spells them out, written
/// independently of `canonical_bytes`: a tool in another language that
/// follows the table gets the same bytes.
fn bytes_per_readme(r: &AdminRequest) -> Vec<u8> {
    fn put(out: &mut Vec<u8>, b: &[u8]) {
        out.extend_from_slice(&(b.len() as u32).to_be_bytes());
        out.extend_from_slice(b);
    }
    let names = |v: &[NodeName]| {
        let mut out = Vec::new();
        for x in v {
            put(&mut out, x.as_str().as_bytes());
        }
        out
    };
    let mut out = Vec::new();
    put(&mut out, b"thresig/admin-request/v2");
    put(&mut out, r.cluster.as_bytes());
    put(&mut out, r.operation.label().as_bytes());
    put(&mut out, r.key_id.as_str().as_bytes());
    put(
        &mut out,
        r.key_type.map(|t| t.as_str()).unwrap_or("").as_bytes(),
    );
    put(&mut out, &names(&r.committee));
    put(&mut out, &r.threshold.to_be_bytes());
    put(
        &mut out,
        r.target
            .as_ref()
            .map(|t| t.as_str())
            .unwrap_or("")
            .as_bytes(),
    );
    put(&mut out, &names(&r.exclude));
    put(&mut out, &r.lifecycle_seq.to_be_bytes());
    put(&mut out, r.request_id.as_bytes());
    put(&mut out, &r.issued_unix.to_be_bytes());
    put(&mut out, &r.expiry_unix.to_be_bytes());
    if !r.params.is_empty() {
        put(&mut out, &r.params);
    }
    out
}

/// The signed bytes of every operation follow the documented table, and
/// are pinned (SHA-256 of the bytes and of the approval binding, taken
/// from this code before the admin request becomes a generic envelope):
/// approvals already signed, request files and the lifecycle proofs nodes
/// keep must stay valid through any refactoring.
#[test]
fn canonical_bytes_are_pinned_for_every_operation() {
    let approval = ClientAuth {
        chain: vec![vec![1; 10], vec![4; 3]],
        scheme: 0x0403,
        signature: vec![2; 70],
    };
    let mut pinned = Vec::new();
    for r in one_of_each() {
        assert_eq!(r.canonical_bytes(), bytes_per_readme(&r), "{}", r.operation);
        r.check_fields(950)
            .unwrap_or_else(|e| panic!("{}: {e}", r.operation));
        let signed = SignedAdmin {
            request: r.clone(),
            approvals: vec![approval.clone()],
        };
        pinned.push(format!(
            "{} {} {}",
            r.operation,
            hex::encode(&Sha256::digest(r.canonical_bytes())[..8]),
            hex::encode(&signed.digest()[..8])
        ));
    }
    assert_eq!(pinned, PINNED);
}

const PINNED: [&str; 9] = [
    "create c9f435f8b21b3ec7 5e31faf0b1f995fe",
    "rotate ff5973d4002cabaf 3762c7847b490111",
    "repair 971f57a6a8d48984 4fd3fdcfdfe559e4",
    "reshare ac2bb922d95bfac8 7dc713ef4d07876a",
    "freeze 32b48dab88b9dd7f 43f216aeb3f417e4",
    "unfreeze 65e27522eeeafcdb 05873a6d7ecf9dcf",
    "delete 5a0d4ea6ccadda02 2926dae4ec015e0c",
    "unban 8ae1bc3627e32230 ab98340ea6559397",
    // Added with import (its parameters are the 14th field).
    "import 935f60de52d3bab6 8d2b6fc8b2623487",
];

/// A request file keeps its JSON form, byte for byte, through a round trip
/// (admins pass these files around, and a refactoring must still read them).
#[test]
fn request_files_keep_their_json() {
    let signed = SignedAdmin {
        request: req(),
        approvals: vec![ClientAuth {
            chain: vec![vec![0x30, 0x82], vec![0x30, 0x01]],
            scheme: 0x0403,
            signature: vec![0xab; 4],
        }],
    };
    let file = crate::node::admin_file::RequestFile::new(&signed, &["ops-1".to_owned()]);
    let json = serde_json::to_string(&file).unwrap();
    assert_eq!(json, REQUEST_FILE);
    let back: crate::node::admin_file::RequestFile = serde_json::from_str(REQUEST_FILE).unwrap();
    let (again, names) = back.signed().unwrap();
    assert_eq!(again.request, signed.request);
    assert_eq!(again.digest(), signed.digest());
    assert_eq!(names, ["ops-1"]);
}

const REQUEST_FILE: &str = r#"{"format":"thresig-admin-request/v2","request":{"operation":"reshare","key_id":"k","key_type":"secp256k1","committee":["b","c"],"threshold":2,"target":"","exclude":["a"],"cluster":"thresig.local/00ff","lifecycle_seq":0,"request_id":"r1","issued_unix":900,"expiry_unix":1000},"approvals":[{"admin":"ops-1","chain":["3082","3001"],"signature_scheme":1027,"signature":"abababab"}]}"#;

/// The operation's typed parameters are the last signed field, present only
/// when given: a request without them keeps the bytes it always had.
#[test]
fn params_are_signed_as_a_last_field_only_when_given() {
    let base = req().canonical_bytes();
    let mut r = req();
    r.params = vec![0xee; 5];
    let mut expected = base.clone();
    expected.extend_from_slice(&5u32.to_be_bytes());
    expected.extend_from_slice(&[0xee; 5]);
    assert_eq!(r.canonical_bytes(), expected);
    let mut other = r.clone();
    other.params[4] = 0xef;
    assert_ne!(other.canonical_bytes(), r.canonical_bytes());
    // An operation that takes none refuses parameters; import needs them.
    for op in AdminOp::ALL {
        let mut r = one_of_each()
            .into_iter()
            .find(|x| x.operation == op)
            .unwrap();
        if op.spec().params == Takes::Required {
            r.params.clear();
            let e = r.check_fields(950).unwrap_err();
            assert!(e.contains("names its parameters"), "{e}");
            continue;
        }
        r.params = vec![1];
        let e = r.check_fields(950).unwrap_err();
        assert!(
            e.contains(&format!("{} takes no parameters", op.a_request())),
            "{e}"
        );
    }
    let mut big = req();
    big.params = vec![0; MAX_PARAMS + 1];
    assert!(big.check_fields(950).unwrap_err().contains("at most"));
    let mut fields = RequestFields::of(&big);
    assert_eq!(fields.clone().parse().unwrap_err().0, "params");
    fields.params.truncate(MAX_PARAMS);
    assert_eq!(fields.parse().unwrap().params.len(), MAX_PARAMS);
}

/// The one text form carries every field, parameters as hex in JSON, and
/// leaves the parameters out of the JSON of a request without them.
#[test]
fn the_text_form_round_trips_every_field() {
    let mut r = req();
    r.params = vec![0x01, 0xab];
    let fields = RequestFields::of(&r);
    let json = serde_json::to_string(&fields).unwrap();
    assert!(json.ends_with(r#","params":"01ab"}"#), "{json}");
    let back: RequestFields = serde_json::from_str(&json).unwrap();
    assert_eq!(back.parse().unwrap(), r);
    let plain = serde_json::to_string(&RequestFields::of(&req())).unwrap();
    assert!(!plain.contains("params"), "{plain}");
    let bad = json.replace("01ab", "0x");
    assert!(serde_json::from_str::<RequestFields>(&bad).is_err());
    // A field that does not parse is named.
    let mut f = RequestFields::of(&req());
    f.target = "not a node!".into();
    assert_eq!(f.parse().unwrap_err().0, "target");
    let mut f = RequestFields::of(&req());
    f.committee = vec!["x".into(); crate::domain::MAX_ROSTER + 1];
    assert_eq!(f.parse().unwrap_err().0, "committee");
}

/// Each field an operation does not take is refused, with the operation
/// and the operations that do take it named from the table.
#[test]
fn each_operation_takes_only_its_fields() {
    let n = |s: &str| NodeName::parse(s).unwrap();
    for base in one_of_each() {
        let op = base.operation;
        let spec = op.spec();
        if spec.target == Takes::No {
            let mut r = base.clone();
            r.target = Some(n("a"));
            let e = r.check_fields(950).unwrap_err();
            assert!(
                e.contains(&format!(
                    "{} names no target node (only repair requests do)",
                    op.a_request()
                )),
                "{e}"
            );
        }
        if spec.exclude == Takes::No {
            let mut r = base.clone();
            r.exclude = vec![n("a")];
            let e = r.check_fields(950).unwrap_err();
            assert!(e.contains("only reshare requests can"), "{e}");
        }
        if spec.lifecycle_seq == Takes::No {
            let mut r = base.clone();
            r.lifecycle_seq = 1;
            let e = r.check_fields(950).unwrap_err();
            assert!(
                e.contains("only freeze, unfreeze and delete requests do"),
                "{e}"
            );
        }
        if spec.committee == Takes::No {
            let mut r = base.clone();
            r.threshold = 2;
            assert!(r.check_fields(950).unwrap_err().contains("no committee"));
        }
        if spec.committee == Takes::Required {
            let mut r = base.clone();
            r.committee.clear();
            assert!(r.check_fields(950).unwrap_err().contains("new committee"));
        }
    }
    assert_eq!(AdminOp::refreshing(), [AdminOp::Rotate, AdminOp::Repair]);
    assert!(AdminOp::parse("export").unwrap_err().contains(
        "known: create, rotate, repair, reshare, freeze, unfreeze, delete, unban and import"
    ));
}

/// The generic proposal's execution ids cannot collide with another
/// operation's: a generic operation has an eid label of its own, and the
/// others have none (their steps are refused before any id is derived).
#[test]
fn generic_operations_have_execution_id_labels_of_their_own() {
    use crate::node::ops::OpKind;
    let fixed = [
        OpKind::Keygen,
        OpKind::Sign,
        OpKind::Refresh,
        OpKind::Repair,
        OpKind::Reshare,
        OpKind::Watermark,
        OpKind::Status,
        OpKind::Lifecycle,
        OpKind::Evaluate,
    ]
    .map(OpKind::label);
    let mut seen = std::collections::HashSet::new();
    for op in AdminOp::ALL {
        let s = op.spec();
        assert_eq!(s.generic, !s.step_label.is_empty(), "{op}");
        assert_eq!(OpKind::Admin(op).label(), s.step_label, "{op}");
        if s.generic {
            assert!(!fixed.contains(&s.step_label), "{op}");
            assert!(seen.insert(s.step_label), "{op}");
        }
    }
}
