//! Tests of the import parameters and the sealing of dealt points.

#![allow(
    clippy::arithmetic_side_effects,
    reason = "test indices into short byte strings"
)]

use proptest::prelude::*;

use super::*;

/// A node's certificate and key as `certs init` makes them (rcgen, P-256).
fn node_cert() -> (Vec<u8>, Vec<u8>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["a".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    (cert.der().to_vec(), key.serialize_der())
}

fn params(members: usize) -> ImportParams {
    let pk = {
        let mut p = vec![2u8];
        p.extend_from_slice(&[7; 32]);
        p
    };
    ImportParams {
        public_key: pk.clone(),
        chain_code: [9; 32],
        commitments: vec![pk, vec![3; 33]],
        sealed: (0..members)
            .map(|i| SealedPoint {
                enc: vec![4; ENC_LEN],
                ciphertext: vec![i as u8; SEALED_LEN],
            })
            .collect(),
    }
}

fn binding(member: &str) -> SealBinding<'_> {
    SealBinding {
        cluster: "thresig.local/00ff",
        key_id: "imported",
        member,
    }
}

#[test]
fn parameters_round_trip_and_every_length_is_checked() {
    let p = params(3);
    let bytes = p.encode();
    assert_eq!(ImportParams::decode(&bytes).unwrap(), p);
    // Truncated anywhere, or with a byte more: an error.
    for cut in 0..bytes.len() {
        assert!(ImportParams::decode(&bytes[..cut]).is_err(), "cut at {cut}");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(ImportParams::decode(&longer).is_err());
    let mut other = p.clone();
    other.commitments[0][5] ^= 1;
    let e = ImportParams::decode(&other.encode()).unwrap_err();
    assert!(e.contains("the first is not the public key"), "{e}");
    let mut other = p.clone();
    other.sealed[1].ciphertext.pop();
    assert!(ImportParams::decode(&other.encode())
        .unwrap_err()
        .contains("sealed point"));
    let mut other = p;
    other.public_key.pop();
    assert!(ImportParams::decode(&other.encode())
        .unwrap_err()
        .contains("public key"));
}

#[test]
fn a_point_opens_only_for_its_member_under_its_import() {
    let (cert_a, key_a) = node_cert();
    let (cert_b, key_b) = node_cert();
    let p = params(0);
    let point = [0x5a; 32];
    let sealed = seal_point(&p, &certificate_key(&cert_a).unwrap(), &point, binding("a")).unwrap();
    assert_eq!(
        (sealed.enc.len(), sealed.ciphertext.len()),
        (ENC_LEN, SEALED_LEN)
    );
    let secret_a = private_scalar(&key_a).unwrap();
    let opened = open_point(&p, &sealed, secret_a.as_ref(), binding("a")).unwrap();
    assert_eq!(*opened, point);

    // Another node's key, another member's name, key id or cluster, other
    // commitments, or an altered ciphertext: it does not open.
    let secret_b = private_scalar(&key_b).unwrap();
    let e = open_point(&p, &sealed, secret_b.as_ref(), binding("a")).unwrap_err();
    assert!(e.contains("does not open"), "{e}");
    assert!(open_point(&p, &sealed, secret_a.as_ref(), binding("b")).is_err());
    let other_key = SealBinding {
        key_id: "other",
        ..binding("a")
    };
    assert!(open_point(&p, &sealed, secret_a.as_ref(), other_key).is_err());
    let other_cluster = SealBinding {
        cluster: "thresig.local/00fe",
        ..binding("a")
    };
    assert!(open_point(&p, &sealed, secret_a.as_ref(), other_cluster).is_err());
    let mut q = p.clone();
    q.commitments[1][0] ^= 1;
    assert!(open_point(&q, &sealed, secret_a.as_ref(), binding("a")).is_err());
    let mut altered = sealed.clone();
    altered.ciphertext[0] ^= 1;
    assert!(open_point(&p, &altered, secret_a.as_ref(), binding("a")).is_err());
    // b's certificate seals for b alone.
    let for_b = seal_point(&p, &certificate_key(&cert_b).unwrap(), &point, binding("b")).unwrap();
    assert!(open_point(&p, &for_b, secret_a.as_ref(), binding("b")).is_err());
    assert_eq!(
        *open_point(&p, &for_b, secret_b.as_ref(), binding("b")).unwrap(),
        point
    );
}

#[test]
fn keys_that_are_not_p256_are_refused() {
    assert!(certificate_key(b"not a certificate").is_err());
    assert!(private_scalar(b"not a key").is_err());
    let p = params(0);
    assert!(seal_point(&p, &[4; 65], &[1; 32], binding("a")).is_err());
    let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    assert!(private_scalar(&ed.serialize_der()).is_err());
}

proptest! {
    #[test]
    fn arbitrary_bytes_give_an_error_not_a_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..2048)
    ) {
        let _ = ImportParams::decode(&bytes);
    }

    #[test]
    fn damaged_parameters_give_an_error_not_a_panic(
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        members in 0usize..5,
    ) {
        let mut b = params(members).encode();
        let len = b.len();
        for (at, x) in flips {
            b[at % len] ^= x;
        }
        let _ = ImportParams::decode(&b);
    }
}
