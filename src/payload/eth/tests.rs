//! Published vectors (EIP-155, EIP-712 Mail, EIP-191) and refusals.
use super::*;
use crate::domain::KeyType;
use crate::payload::{decode, finish, KeyView};
use alloy_primitives::keccak256;

fn view<'a>(pk: &'a [u8], path: &'a DerivationPath) -> KeyView<'a> {
    KeyView {
        key_type: KeyType::Secp256k1,
        public_key: pk,
        chain_code: &[0; 32],
        path,
    }
}

/// Signs `digest` with a plain k256 key (the test stands in for the
/// cluster; the code under test is the decoding and finishing).
fn sign(sk: &k256::ecdsa::SigningKey, digest: &[u8; 32]) -> Sig {
    let (sig, recid) = sk.sign_prehash_recoverable(digest);
    let sig = sig.normalize_s();
    let recid = {
        // Normalizing s flips the parity of the recovery id.
        let vk = sk.verifying_key();
        (0..2u8)
            .find(|id| {
                k256::ecdsa::VerifyingKey::recover_from_prehash(
                    digest,
                    &sig,
                    k256::ecdsa::RecoveryId::from_byte(*id).unwrap(),
                )
                .is_ok_and(|k| k == *vk)
            })
            .unwrap_or(recid.to_byte())
    };
    let bytes = sig.to_bytes();
    Sig {
        r: bytes[..32].try_into().unwrap(),
        s: bytes[32..].try_into().unwrap(),
        recovery_id: recid,
        public_key: sk
            .verifying_key()
            .to_sec1_point(true)
            .as_bytes()
            .try_into()
            .unwrap(),
    }
}

/// EIP-155's own example: the signing data, its hash, and (with the
/// example's key 0x4646…46) the signed transaction.
#[test]
fn eip155_example_signing_hash_and_signed_transaction() {
    let unsigned = hex::decode(
        "ec098504a817c800825208943535353535353535353535353535353535353535880de0b6b3a764000080018080",
    )
    .unwrap();
    let path = DerivationPath::parse("m").unwrap();
    let sk = k256::ecdsa::SigningKey::from_slice(&[0x46; 32]).unwrap();
    let pk = sign(&sk, &[0; 32]).public_key;
    let d = decode(Kind::EthTransaction, &unsigned, &view(&pk, &path)).unwrap();
    assert_eq!(
        hex::encode(d.targets[0].digest),
        "daf5a779ae972f972197303d7b574746c7ef83eadac0f2791ad23db92e4c8e53"
    );
    let Content::EthTx(tx) = &d.content else {
        panic!("{:?}", d.content)
    };
    assert_eq!((tx.chain_id, tx.nonce, tx.gas_limit), (1, 9, 21000));
    assert_eq!(tx.value, U256::from(10u128.pow(18)));
    assert_eq!(tx.max_fee_per_gas, 20_000_000_000);
    assert!(d.summary.contains("send 1 ETH to 0x3535"), "{}", d.summary);
    let sig = sign(&sk, &d.targets[0].digest);
    let done = finish(Kind::EthTransaction, &unsigned, &view(&pk, &path), &[sig]).unwrap();
    assert_eq!(
        hex::encode(&done.signed),
        "f86c098504a817c800825208943535353535353535353535353535353535353535880de0b6b3a76400008025a028ef61340bd939bc2195fe537567866003e1a15d3c71ff63e1590620aa636276a067cbe9d8997f761aecb703304b3800ccf555c9f3dc64214b297fb1966a3b6d83"
    );
    assert_eq!(done.sender, "0x9d8A62f656a8d1615C1294fd71e9CFb3E4855A4F");
    assert_eq!(done.tx_hash, keccak256(&done.signed).0.to_vec());
}

#[test]
fn non_canonical_unknown_type_and_chainless_transactions_are_refused() {
    let path = DerivationPath::parse("m").unwrap();
    let pk = [2u8; 33];
    let v = view(&pk, &path);
    // Pre-EIP-155 legacy form (six fields, no chain id).
    let chainless = hex::decode(
        "e9098504a817c800825208943535353535353535353535353535353535353535880de0b6b3a764000080",
    )
    .unwrap();
    let e = decode(Kind::EthTransaction, &chainless, &v).unwrap_err();
    assert!(e.reason.contains("EIP-155"), "{e}");
    // The nine-field form with a non-zero r: decodes, but is not canonical.
    let mut odd = hex::decode(
        "ec098504a817c800825208943535353535353535353535353535353535353535880de0b6b3a764000080010180",
    )
    .unwrap();
    let e = decode(Kind::EthTransaction, &odd, &v).unwrap_err();
    assert!(e.reason.contains("canonical"), "{e}");
    odd.push(0);
    assert!(decode(Kind::EthTransaction, &odd, &v).is_err());
    // A blob transaction type byte.
    let e = decode(Kind::EthTransaction, &[3, 0xc0], &v).unwrap_err();
    assert_eq!(e.field, "eth_transaction");
}

#[test]
fn erc20_transfer_is_decoded_for_the_policy() {
    let token: Address = "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48"
        .parse()
        .unwrap();
    let to: Address = "0x1111111111111111111111111111111111111111"
        .parse()
        .unwrap();
    let data = transferCall {
        to,
        amount: U256::from(5_000_000u64),
    }
    .abi_encode();
    let tx = alloy_consensus::TxEip1559 {
        chain_id: 1,
        nonce: 3,
        gas_limit: 60_000,
        max_fee_per_gas: 30_000_000_000,
        max_priority_fee_per_gas: 1_000_000_000,
        to: alloy_primitives::TxKind::Call(token),
        value: U256::ZERO,
        access_list: Default::default(),
        input: data.into(),
    };
    let bytes = tx.encoded_for_signing();
    let path = DerivationPath::parse("m/0").unwrap();
    let pk = [2u8; 33];
    let d = decode(Kind::EthTransaction, &bytes, &view(&pk, &path)).unwrap();
    let Content::EthTx(facts) = d.content else {
        panic!()
    };
    assert_eq!(facts.tx_type, 2);
    assert_eq!(
        facts.token,
        Some(TokenCall::Transfer {
            to,
            amount: U256::from(5_000_000u64)
        })
    );
    assert_eq!(d.targets[0].path, path);
    assert!(
        d.summary.contains("ERC-20 transfer of 5000000"),
        "{}",
        d.summary
    );
}

/// EIP-712's own "Mail" example and its published digest.
pub(crate) const MAIL: &str = r#"{
  "types": {
    "EIP712Domain": [
      {"name": "name", "type": "string"},
      {"name": "version", "type": "string"},
      {"name": "chainId", "type": "uint256"},
      {"name": "verifyingContract", "type": "address"}
    ],
    "Person": [
      {"name": "name", "type": "string"},
      {"name": "wallet", "type": "address"}
    ],
    "Mail": [
      {"name": "from", "type": "Person"},
      {"name": "to", "type": "Person"},
      {"name": "contents", "type": "string"}
    ]
  },
  "primaryType": "Mail",
  "domain": {
    "name": "Ether Mail",
    "version": "1",
    "chainId": 1,
    "verifyingContract": "0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC"
  },
  "message": {
    "from": {"name": "Cow", "wallet": "0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826"},
    "to": {"name": "Bob", "wallet": "0xbBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB"},
    "contents": "Hello, Bob!"
  }
}"#;

#[test]
fn eip712_mail_example_digest() {
    let path = DerivationPath::parse("m").unwrap();
    let pk = [2u8; 33];
    let d = decode(Kind::EthTypedData, MAIL.as_bytes(), &view(&pk, &path)).unwrap();
    assert_eq!(
        hex::encode(d.targets[0].digest),
        "be609aee343fb3c4b28e1df9e632fca64fcfaede20f02e86244efddf30957bd2"
    );
    let Content::EthTypedData(domain) = d.content else {
        panic!()
    };
    assert_eq!(domain.name.as_deref(), Some("Ether Mail"));
    assert_eq!(domain.chain_id, Some(U256::from(1)));
    assert_eq!(domain.primary_type, "Mail");
}

#[test]
fn personal_message_hash_and_rsv() {
    let path = DerivationPath::parse("m").unwrap();
    let sk = k256::ecdsa::SigningKey::from_slice(&[0x11; 32]).unwrap();
    let pk = sign(&sk, &[0; 32]).public_key;
    let d = decode(Kind::EthMessage, b"hello world", &view(&pk, &path)).unwrap();
    // keccak256("\x19Ethereum Signed Message:\n11hello world")
    assert_eq!(
        hex::encode(d.targets[0].digest),
        "d9eba16ed0ecae432b71fe008c98cc872bb4cc214d3220a36f365326cf807d68"
    );
    let sig = sign(&sk, &d.targets[0].digest);
    let done = finish(Kind::EthMessage, b"hello world", &view(&pk, &path), &[sig]).unwrap();
    assert_eq!(done.signature.len(), 65);
    assert!(matches!(done.signature[64], 27 | 28));
    let parsed = Signature::from_raw(&done.signature).unwrap();
    let addr = parsed
        .recover_address_from_msg(b"hello world".as_slice())
        .unwrap();
    assert_eq!(
        addr.to_checksum(None),
        crate::bip32::eth_address(&pk).unwrap()
    );
}
