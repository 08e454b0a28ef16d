//! Every decoder of outside bytes: arbitrary bytes, and valid payloads with
//! bytes changed, give an error or a decoded payload, never a panic.

use proptest::prelude::*;

use super::{decode, KeyView, Kind};
use crate::domain::{DerivationPath, KeyType};

fn key() -> ([u8; 33], [u8; 32]) {
    let pk = k256::ecdsa::SigningKey::from_slice(&[3; 32])
        .unwrap()
        .verifying_key()
        .to_sec1_point(true)
        .as_bytes()
        .try_into()
        .unwrap();
    (pk, [4; 32])
}

fn run(kind: Kind, bytes: &[u8]) {
    let (pk, cc) = key();
    let path = DerivationPath::parse("m/0").unwrap();
    let view = KeyView {
        key_type: KeyType::Secp256k1,
        public_key: &pk,
        chain_code: &cc,
        path: &path,
    };
    let _ = decode(kind, bytes, &view);
}

/// An EIP-1559 ERC-20 transfer in its signing encoding.
fn eth_transfer() -> Vec<u8> {
    use alloy_consensus::SignableTransaction;
    use alloy_primitives::{Address, TxKind, U256};
    let token = Address::repeat_byte(0xa0);
    let mut input = hex::decode("a9059cbb").unwrap();
    input.extend_from_slice(&[0u8; 12]);
    input.extend_from_slice(&[0x11; 20]);
    input.extend_from_slice(&U256::from(5_000_000u64).to_be_bytes::<32>());
    alloy_consensus::TxEip1559 {
        chain_id: 1,
        nonce: 3,
        gas_limit: 60_000,
        max_fee_per_gas: 30_000_000_000,
        max_priority_fee_per_gas: 1_000_000_000,
        to: TxKind::Call(token),
        value: U256::ZERO,
        access_list: Default::default(),
        input: input.into(),
    }
    .encoded_for_signing()
}

/// Valid payloads of each kind, to damage.
fn seeds() -> Vec<(Kind, Vec<u8>)> {
    vec![
        (Kind::EthTransaction, eth_transfer()),
        (
            Kind::EthTypedData,
            super::eth::tests::MAIL.as_bytes().to_vec(),
        ),
        (
            Kind::CosmosSignDoc,
            super::cosmos::tests::doc(&key().0, false),
        ),
        (Kind::BitcoinPsbt, {
            let w = super::bitcoin::tests::wallet();
            super::bitcoin::tests::three_input_psbt(&w).0.serialize()
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        for kind in Kind::ALL {
            run(kind, &bytes);
        }
        // With each kind's magic or type byte in front.
        let mut psbt = b"psbt\xff".to_vec();
        psbt.extend_from_slice(&bytes);
        run(Kind::BitcoinPsbt, &psbt);
        let mut tx = vec![2u8];
        tx.extend_from_slice(&bytes);
        run(Kind::EthTransaction, &tx);
    }

    #[test]
    fn damaged_valid_payloads_never_panic(
        which in 0usize..4,
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        cut in any::<usize>(),
    ) {
        let (kind, mut bytes) = seeds().swap_remove(which);
        for (at, b) in flips {
            let n = bytes.len();
            bytes[at % n] ^= b;
        }
        run(kind, &bytes);
        let n = bytes.len();
        bytes.truncate(cut % (n + 1));
        run(kind, &bytes);
    }
}
