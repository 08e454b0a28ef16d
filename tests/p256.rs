//! P-256 keys end to end on an in-process cluster: keygen, signing with
//! every coordinator (checked with the `p256` crate and, independently, with
//! `ring`), BIP32-style derivation, rotation and reshare to another committee.
//! The public key never changes. (Repair on P-256 is covered at the engine
//! boundary, `protocol::repair` tests, to keep this suite's time.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{cluster, ADMIN, CLIENT};
use sha2::{Digest, Sha256};
use thresig::client::SignResponse;
use thresig::domain::{DerivationPath, KeyType};

/// Checks with the `p256` crate: verifies under `pk`, low-S, the recovery id
/// recovers `pk`, and the DER and r||s||v forms agree with r and s.
fn check_p256(resp: &SignResponse, digest: &[u8; 32], pk: &[u8]) {
    use p256::ecdsa::signature::hazmat::PrehashVerifier;
    use p256::ecdsa::{RecoveryId, Signature, VerifyingKey};
    assert_eq!(resp.key_type, "p256");
    let vk = VerifyingKey::from_sec1_bytes(pk).unwrap();
    let r: [u8; 32] = resp.r.as_slice().try_into().unwrap();
    let s: [u8; 32] = resp.s.as_slice().try_into().unwrap();
    let sig = Signature::from_scalars(r, s).unwrap();
    assert_eq!(sig.normalize_s(), sig, "signature is not low-S");
    vk.verify_prehash(digest, &sig)
        .expect("p256: signature does not verify");
    let rid = RecoveryId::from_byte(resp.recovery_id as u8).unwrap();
    assert_eq!(
        VerifyingKey::recover_from_prehash(digest, &sig, rid).unwrap(),
        vk,
        "recovery id does not recover the key"
    );
    assert_eq!(Signature::from_der(&resp.der).unwrap(), sig);
    assert_eq!(&resp.rsv[..64], [r, s].concat().as_slice());
    assert_eq!(resp.public_key, pk);
}

/// Checks with `ring` (another implementation): the signature over
/// SHA-256(`msg`) verifies under the uncompressed form of `pk`.
fn check_ring(resp: &SignResponse, msg: &[u8], pk: &[u8]) {
    let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(pk).unwrap();
    let uncompressed = vk.to_sec1_point(false);
    let key = ring::signature::UnparsedPublicKey::new(
        &ring::signature::ECDSA_P256_SHA256_FIXED,
        uncompressed.as_bytes(),
    );
    key.verify(msg, &[resp.r.as_slice(), resp.s.as_slice()].concat())
        .expect("ring: signature does not verify");
    let der = ring::signature::UnparsedPublicKey::new(
        &ring::signature::ECDSA_P256_SHA256_ASN1,
        uncompressed.as_bytes(),
    );
    der.verify(msg, &resp.der)
        .expect("ring: DER signature does not verify");
}

fn digest_of(msg: &[u8]) -> [u8; 32] {
    Sha256::digest(msg).into()
}

/// Creates a 2-of-3 P-256 key on nodes a, b, c and checks what it reports.
async fn create(c: &thresig::cluster::LocalCluster, name: &str) -> Vec<u8> {
    let committee: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
    let key = c
        .client(0, ADMIN)
        .unwrap()
        .create_key_of_type(name, KeyType::P256, 2, &committee)
        .await
        .unwrap();
    assert_eq!(key.key_type, "p256");
    assert!(
        key.eth_address.is_empty(),
        "a P-256 key has no Ethereum address"
    );
    // A valid compressed P-256 point.
    p256::ecdsa::VerifyingKey::from_sec1_bytes(&key.public_key).unwrap();
    key.public_key
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_p256_key_signs_with_every_coordinator_derives_rotates_and_reshares() {
    let (_dir, c) = cluster(&["a", "b", "c", "d"]).await;
    let pk = create(&c, "passkey").await;

    // Every coordinator signs; both verifiers accept.
    for (i, coord) in [0usize, 1, 2].into_iter().enumerate() {
        let msg = format!("webauthn assertion {i}");
        let d = digest_of(msg.as_bytes());
        let resp = c
            .client(coord, CLIENT)
            .unwrap()
            .sign("passkey", d, "", "")
            .await
            .unwrap();
        check_p256(&resp, &d, &pk);
        check_ring(&resp, msg.as_bytes(), &pk);
    }

    // BIP32-style public derivation on P-256 agrees with the engine's.
    let info = c
        .client(0, ADMIN)
        .unwrap()
        .get_key("passkey")
        .await
        .unwrap();
    let cc: [u8; 32] = info.chain_code.as_slice().try_into().unwrap();
    let path = DerivationPath::parse("m/44/7").unwrap();
    let (child, _) = thresig::bip32::derive_public(KeyType::P256, &pk, &cc, &path).unwrap();
    let got = c
        .client(1, CLIENT)
        .unwrap()
        .public_key("passkey", "m/44/7")
        .await
        .unwrap();
    assert_eq!(got.public_key, child.to_vec());
    assert_eq!(got.key_type, "p256");
    let d = digest_of(b"child");
    let resp = c
        .client(2, CLIENT)
        .unwrap()
        .sign("passkey", d, "m/44/7", "")
        .await
        .unwrap();
    check_p256(&resp, &d, &child);
    check_ring(&resp, b"child", &child);

    // Rotation: same public key, next epoch, still signs.
    let rot = c
        .client(0, ADMIN)
        .unwrap()
        .rotate_key("passkey")
        .await
        .unwrap();
    assert!(rot.public_key_unchanged);
    assert_eq!((rot.old_epoch, rot.new_epoch), (0, 1));
    let d = digest_of(b"after rotation");
    let resp = c
        .client(1, CLIENT)
        .unwrap()
        .sign("passkey", d, "", "")
        .await
        .unwrap();
    check_p256(&resp, &d, &pk);

    // Reshare from {a, b, c} to {b, c, d}: same key; d signs, a has left.
    let new: Vec<String> = ["b", "c", "d"].iter().map(|s| s.to_string()).collect();
    let moved = c
        .client(1, ADMIN)
        .unwrap()
        .reshare_key("passkey", &new, 2)
        .await
        .unwrap();
    assert!(moved.public_key_unchanged);
    assert_eq!(moved.key.unwrap().public_key, pk);
    let d = digest_of(b"after reshare");
    let resp = c
        .client(3, CLIENT)
        .unwrap()
        .sign("passkey", d, "", "")
        .await
        .unwrap();
    assert!(resp.participants.contains(&"d".to_string()));
    assert!(!resp.participants.contains(&"a".to_string()));
    check_p256(&resp, &d, &pk);
    check_ring(&resp, b"after reshare", &pk);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_are_secp256k1_unless_asked_and_unknown_types_say_what_exists() {
    let err = thresig::domain::KeyType::parse("ed25519").unwrap_err();
    assert!(err.to_string().contains("secp256k1 or p256"), "{err}");
    let (_dir, c) = cluster(&["a", "b", "c"]).await;
    let mut admin = c.client(0, ADMIN).unwrap();
    let secp = admin.create_key("plain", 2, &[]).await.unwrap();
    assert_eq!(secp.key_type, "secp256k1");
    assert!(!secp.eth_address.is_empty());
    c.stop().await;
}
