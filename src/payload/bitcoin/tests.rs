use super::*;
use crate::domain::KeyType;
use crate::payload::{decode, finish, KeyView};
use bitcoin::bip32::Xpriv;
use bitcoin::psbt::Psbt;
use bitcoin::{absolute, transaction, OutPoint, Sequence, Transaction, TxIn, Txid};

fn view<'a>(pk: &'a [u8], cc: &'a [u8; 32], path: &'a DerivationPath) -> KeyView<'a> {
    KeyView {
        key_type: KeyType::Secp256k1,
        public_key: pk,
        chain_code: cc,
        path,
    }
}

/// BIP-143's native P2WPKH example: the second input's sighash. The key is
/// the example's public key itself (path m), so its derivation names it.
#[test]
fn bip143_native_p2wpkh_sighash() {
    let unsigned = hex::decode(
        "0100000002fff7f7881a8099afa6940d42d1e7f6362bec38171ea3edf433541db4e4ad969f0000000000eeffffffef51e1b804cc89d182d279655c3aa89e815b1b309fe287d9b2b55d57b90ec68a0100000000ffffffff02202cb206000000001976a9148280b37df378db99f66f85c95a783a76ac7a6d5988ac9093510d000000001976a9143bde42dbee7e4dbe6a21b2d50ce2f0167faa815988ac11000000",
    )
    .unwrap();
    let tx: Transaction = bitcoin::consensus::deserialize(&unsigned).unwrap();
    let mut psbt = Psbt::from_unsigned_tx(tx).unwrap();
    let pk_bytes =
        hex::decode("025476c2e83188368da1ff3e292e7acafcdb3566bb0ad253f62fc70f07aeee6357").unwrap();
    let pk = secp256k1::PublicKey::from_slice(&pk_bytes).unwrap();
    let cc = [9u8; 32];
    let path = DerivationPath::parse("m").unwrap();
    let v = view(&pk_bytes, &cc, &path);
    let fp = master(&v).unwrap().fingerprint();
    psbt.inputs[1].witness_utxo = Some(TxOut {
        value: Amount::from_sat(600_000_000),
        script_pubkey: ScriptBuf::from_hex("00141d0f172a0ecb48aee1be1f2687d2963ae33f71a1").unwrap(),
    });
    psbt.inputs[1]
        .bip32_derivation
        .insert(pk, (fp, bitcoin::bip32::DerivationPath::master()));
    let d = decode(Kind::BitcoinPsbt, &psbt.serialize(), &v).unwrap();
    assert_eq!(
        d.targets.len(),
        1,
        "only the input naming the key is signed"
    );
    assert_eq!(
        hex::encode(d.targets[0].digest),
        "c37af31116d1b27caf68aae9e3ac82f1477929014d5b917657d0eb49478cb670"
    );
    let Content::Bitcoin(facts) = d.content else {
        panic!()
    };
    assert!(facts.inputs[1].ours && !facts.inputs[0].ours);
    assert_eq!(facts.fee_sat, None, "input 0's amount is not in the PSBT");
}

/// BIP-174's test vectors: invalid ones are refused as PSBTs, valid ones
/// parse (and then name no input of this key).
#[test]
fn bip174_vectors() {
    let pk =
        hex::decode("025476c2e83188368da1ff3e292e7acafcdb3566bb0ad253f62fc70f07aeee6357").unwrap();
    let cc = [0u8; 32];
    let path = DerivationPath::parse("m").unwrap();
    let v = view(&pk, &cc, &path);
    let invalid = [
        // A network transaction, not a PSBT (no magic).
        "0200000001268171371edff285e937adeea4b37b78000c0566cbb3ad64641713ca42171bf6000000006a473044022070b2245123e6bf474d60c5b50c043d4c691a5d2435f09a34a7662a9dc251790a022001329ca9dacf280bdf30740ec0390422422c81cb45839457aeb76fc12edd95b3012102657d118d3357b8e0f4c2cd46db7b39f6d9c38d9a70abcb9b2de5dc8dbfe4ce31feffffff02d3dff505000000001976a914d0c59903c5bac2868760e90fd521a4665aa7652088ac00e1f5050000000017a9143545e6e33b832c47050f24d3eeb93c9c03948bc787b32e1300",
        // The unsigned transaction has script sigs.
        "70736274ff0100fd0a010200000002ab0949a08c5af7c49b8212f417e2f15ab3f5c33dcf153821a8139f877a5b7be4000000006a47304402204759661797c01b036b25928948686218347d89864b719e1f7fcf57d1e511658702205309eabf56aa4d8891ffd111fdf1336f3a29da866d7f8486d75546ceedaf93190121035cdc61fc7ba971c0b501a646a2a83b102cb43881217ca682dc86e2d73fa88292feffffffab0949a08c5af7c49b8212f417e2f15ab3f5c33dcf153821a8139f877a5b7be40100000000feffffff02603bea0b000000001976a914768a40bbd740cbe81d988e71de2a4d5c71396b1d88ac8e240000000000001976a9146f4620b553fa095e721b9ee0efe9fa039cca459788ac00000000000001012000e1f5050000000017a9143545e6e33b832c47050f24d3eeb93c9c03948bc787010416001485d13537f2e265405a34dbafa9e3dda01fb82308000000",
        // No unsigned transaction in the global map.
        "70736274ff000100fda5010100000000010289a3c71eab4d20e0371bbba4cc698fa295c9463afa2e397f8533ccb62f9567e50100000017160014be18d152a9b012039daf3da7de4f53349eecb985ffffffff86f8aa43a71dff1448893a530a7237ef6b4608bbb2dd2d0171e63aec6a4890b40100000017160014fe3e9ef1a745e974d902c4355943abcb34bd5353ffffffff0200c2eb0b000000001976a91485cff1097fd9e008bb34af709c62197b38978a4888ac72fef84e2c00000017a914339725ba21efd62ac753a9bcd067d6c7a6a39d05870247304402202712be22e0270f394f568311dc7ca9a68970b8025fdd3b240229f07f8a5f3a240220018b38d7dcd314e734c9276bd6fb40f673325bc4baa144c800d2f2f02db2765c012103d2e15674941bad4a996372cb87e1856d3652606d98562fe39c5e9e7e413f210502483045022100d12b852d85dcd961d2f5f4ab660654df6eedcc794c0c33ce5cc309ffb5fce58d022067338a8e0e1725c197fb1a88af59f51e44e4255b20167c8684031c05d1f2592a01210223b72beef0965d10be0778efecd61fcac6f79a4ea169393380734464f84f2ab30000000000",
    ];
    for hex_psbt in invalid {
        let e = decode(Kind::BitcoinPsbt, &hex::decode(hex_psbt).unwrap(), &v).unwrap_err();
        assert!(e.reason.contains("not a BIP-174 PSBT"), "{e}");
    }
    let valid = [
        "70736274ff0100a00200000002ab0949a08c5af7c49b8212f417e2f15ab3f5c33dcf153821a8139f877a5b7be40000000000feffffffab0949a08c5af7c49b8212f417e2f15ab3f5c33dcf153821a8139f877a5b7be40100000000feffffff02603bea0b000000001976a914768a40bbd740cbe81d988e71de2a4d5c71396b1d88ac8e240000000000001976a9146f4620b553fa095e721b9ee0efe9fa039cca459788ac000000000001076a47304402204759661797c01b036b25928948686218347d89864b719e1f7fcf57d1e511658702205309eabf56aa4d8891ffd111fdf1336f3a29da866d7f8486d75546ceedaf93190121035cdc61fc7ba971c0b501a646a2a83b102cb43881217ca682dc86e2d73fa882920001012000e1f5050000000017a9143545e6e33b832c47050f24d3eeb93c9c03948bc787010416001485d13537f2e265405a34dbafa9e3dda01fb82308000000",
        "70736274ff0100550200000001279a2323a5dfb51fc45f220fa58b0fc13e1e3342792a85d7e36cd6333b5cbc390000000000ffffffff01a05aea0b000000001976a914ffe9c0061097cc3b636f2cb0460fa4fc427d2b4588ac0000000000010120955eea0b0000000017a9146345200f68d189e1adc0df1c4d16ea8f14c0dbeb87220203b1341ccba7683b6af4f1238cd6e97e7167d569fac47f1e48d47541844355bd4646304302200424b58effaaa694e1559ea5c93bbfd4a89064224055cdf070b6771469442d07021f5c8eb0fea6516d60b8acb33ad64ede60e8785bfb3aa94b99bdf86151db9a9a010104220020771fd18ad459666dd49f3d564e3dbc42f4c84774e360ada16816a8ed488d5681010547522103b1341ccba7683b6af4f1238cd6e97e7167d569fac47f1e48d47541844355bd462103de55d1e1dac805e3f8a58c1fbf9b94c02f3dbaafe127fefca4995f26f82083bd52ae220603b1341ccba7683b6af4f1238cd6e97e7167d569fac47f1e48d47541844355bd4610b4a6ba67000000800000008004000080220603de55d1e1dac805e3f8a58c1fbf9b94c02f3dbaafe127fefca4995f26f82083bd10b4a6ba670000008000000080050000800000",
    ];
    for hex_psbt in valid {
        let e = decode(Kind::BitcoinPsbt, &hex::decode(hex_psbt).unwrap(), &v).unwrap_err();
        assert!(
            e.reason
                .contains("no input's bip32_derivation names this key"),
            "{e}"
        );
    }
}

/// A wallet's view of the key: its extended private key stands in for the
/// cluster in these tests (the code under test is the PSBT side).
pub(crate) struct Wallet {
    xpriv: Xpriv,
    pk: [u8; 33],
    cc: [u8; 32],
}

pub(crate) fn wallet() -> Wallet {
    let secp = Secp256k1::new();
    let xpriv = Xpriv::new_master(bitcoin::Network::Regtest, &[7u8; 32]).unwrap();
    let xpub = Xpub::from_priv(&secp, &xpriv);
    Wallet {
        xpriv,
        pk: xpub.public_key.serialize(),
        cc: xpub.chain_code.to_bytes(),
    }
}

impl Wallet {
    fn child(
        &self,
        path: &str,
    ) -> (
        secp256k1::SecretKey,
        secp256k1::PublicKey,
        bitcoin::bip32::DerivationPath,
    ) {
        let secp = Secp256k1::new();
        let p = bitcoin::bip32::DerivationPath::from_str(path).unwrap();
        let k = self.xpriv.derive_priv(&secp, &p).unwrap();
        (k.private_key, k.private_key.public_key(&secp), p)
    }

    fn fingerprint(&self) -> Fingerprint {
        self.xpriv.fingerprint(&Secp256k1::new())
    }

    fn sign(&self, target: &Target) -> Sig {
        let secp = Secp256k1::new();
        let (sk, pk, _) = self.child(&target.path.to_string());
        let sig = secp.sign_ecdsa(&secp256k1::Message::from_digest(target.digest), &sk);
        let c = sig.serialize_compact();
        Sig {
            r: c[..32].try_into().unwrap(),
            s: c[32..].try_into().unwrap(),
            recovery_id: 0,
            public_key: pk.serialize(),
        }
    }
}

/// A previous transaction paying `amount` to each script.
fn funding(scripts: &[ScriptBuf], amount: u64) -> Transaction {
    Transaction {
        version: transaction::Version::TWO,
        lock_time: absolute::LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint::new(Txid::from_byte_array([1; 32]), 0),
            ..Default::default()
        }],
        output: scripts
            .iter()
            .map(|s| TxOut {
                value: Amount::from_sat(amount),
                script_pubkey: s.clone(),
            })
            .collect(),
    }
}

/// A PSBT spending one P2WPKH, one P2SH-P2WPKH and one P2PKH output of the
/// key (paths m/0/0, m/0/1, m/0/2), paying 250 000 sat away and the rest
/// minus a 10 000 sat fee to change at m/1/0.
pub(crate) fn three_input_psbt(w: &Wallet) -> (Psbt, Transaction) {
    let keys: Vec<_> = (0..3).map(|i| w.child(&format!("m/0/{i}"))).collect();
    let (a, _, _) = spks(&keys[0].1);
    let (_, b, _) = spks(&keys[1].1);
    let (_, _, c) = spks(&keys[2].1);
    let prev = funding(&[a, b, c], 100_000);
    let (_, change_pk, change_path) = w.child("m/1/0");
    let (change_spk, _, _) = spks(&change_pk);
    let away = ScriptBuf::new_p2wpkh(&bitcoin::WPubkeyHash::from_byte_array([5; 20]));
    let tx = Transaction {
        version: transaction::Version::TWO,
        lock_time: absolute::LockTime::ZERO,
        input: (0..3)
            .map(|i| TxIn {
                previous_output: OutPoint::new(prev.compute_txid(), i),
                sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                ..Default::default()
            })
            .collect(),
        output: vec![
            TxOut {
                value: Amount::from_sat(250_000),
                script_pubkey: away,
            },
            TxOut {
                value: Amount::from_sat(40_000),
                script_pubkey: change_spk,
            },
        ],
    };
    let mut psbt = Psbt::from_unsigned_tx(tx).unwrap();
    for (i, (_, pk, path)) in keys.iter().enumerate() {
        let input = &mut psbt.inputs[i];
        input
            .bip32_derivation
            .insert(*pk, (w.fingerprint(), path.clone()));
        if i == 2 {
            input.non_witness_utxo = Some(prev.clone());
        } else {
            input.witness_utxo = Some(prev.output[i].clone());
        }
        if i == 1 {
            input.redeem_script = Some(spks(pk).0);
        }
    }
    psbt.outputs[1]
        .bip32_derivation
        .insert(change_pk, (w.fingerprint(), change_path));
    (psbt, prev)
}

/// Decoded, signed, finalized, and every input's script run by
/// libbitcoinconsensus (Bitcoin Core's own script interpreter).
#[test]
fn a_three_input_psbt_is_signed_finalized_and_verified_by_bitcoin_consensus() {
    let w = wallet();
    let (psbt, prev) = three_input_psbt(&w);
    let bytes = psbt.serialize();
    let path = DerivationPath::parse("m").unwrap();
    let v = view(&w.pk, &w.cc, &path);
    let d = decode(Kind::BitcoinPsbt, &bytes, &v).unwrap();
    assert_eq!(d.targets.len(), 3);
    assert_eq!(d.targets[2].path.to_string(), "m/0/2");
    let Content::Bitcoin(facts) = &d.content else {
        panic!()
    };
    assert_eq!(facts.fee_sat, Some(10_000));
    assert_eq!(
        facts.leaving_sat(),
        250_000,
        "change is recognized: {facts:?}"
    );
    assert!(facts.outputs[1].change);
    // The derivation agrees with this crate's own BIP-32 code.
    for t in &d.targets {
        let (ours, _) =
            crate::bip32::derive_public(KeyType::Secp256k1, &w.pk, &w.cc, &t.path).unwrap();
        assert_eq!(ours, w.child(&t.path.to_string()).1.serialize());
    }
    let sigs: Vec<Sig> = d.targets.iter().map(|t| w.sign(t)).collect();
    let done = finish(Kind::BitcoinPsbt, &bytes, &v, &sigs).unwrap();
    let with_sigs = Psbt::deserialize(&done.psbt).unwrap();
    assert!(with_sigs.inputs.iter().all(|i| i.partial_sigs.len() == 1));
    let tx: Transaction = bitcoin::consensus::deserialize(&done.signed).unwrap();
    assert_eq!(hex::encode(&done.tx_hash), tx.compute_txid().to_string());
    for (i, out) in prev.output.iter().enumerate() {
        bitcoinconsensus::verify(
            out.script_pubkey.as_bytes(),
            out.value.to_sat(),
            &done.signed,
            None,
            i,
        )
        .unwrap_or_else(|e| panic!("input {i}: {e:?}"));
    }
    // A signature over another digest is refused, not finalized.
    let mut bad = sigs.clone();
    bad[0] = w.sign(&d.targets[1]);
    assert!(finish(Kind::BitcoinPsbt, &bytes, &v, &bad).is_err());
}

#[test]
fn hostile_psbt_fields_are_refused_naming_the_field() {
    let w = wallet();
    let path = DerivationPath::parse("m").unwrap();
    let v = view(&w.pk, &w.cc, &path);
    // SIGHASH_NONE would let the outputs change after signing.
    let (mut psbt, _) = three_input_psbt(&w);
    psbt.inputs[0].sighash_type =
        Some(bitcoin::psbt::PsbtSighashType::from(EcdsaSighashType::None));
    let e = decode(Kind::BitcoinPsbt, &psbt.serialize(), &v).unwrap_err();
    assert_eq!(e.field, "bitcoin_psbt.inputs[0].sighash_type");
    // A derivation naming our fingerprint with another key.
    let (mut psbt, _) = three_input_psbt(&w);
    let (_, other, p) = w.child("m/0/9");
    let input = &mut psbt.inputs[0];
    let (_, origin) = input.bip32_derivation.pop_first().unwrap();
    input.bip32_derivation.insert(other, (origin.0, origin.1));
    let _ = p;
    let e = decode(Kind::BitcoinPsbt, &psbt.serialize(), &v).unwrap_err();
    assert_eq!(e.field, "bitcoin_psbt.inputs[0].bip32_derivation");
    // A hardened path.
    let (mut psbt, _) = three_input_psbt(&w);
    let (_, pk, _) = w.child("m/0/0");
    let hardened = bitcoin::bip32::DerivationPath::from_str("m/0'/0").unwrap();
    psbt.inputs[0]
        .bip32_derivation
        .insert(pk, (w.fingerprint(), hardened));
    let e = decode(Kind::BitcoinPsbt, &psbt.serialize(), &v).unwrap_err();
    assert!(e.reason.contains("hardened"), "{e}");
    // A P2PKH input without its previous transaction.
    let (mut psbt, prev) = three_input_psbt(&w);
    psbt.inputs[2].non_witness_utxo = None;
    psbt.inputs[2].witness_utxo = Some(prev.output[2].clone());
    let e = decode(Kind::BitcoinPsbt, &psbt.serialize(), &v).unwrap_err();
    assert_eq!(e.field, "bitcoin_psbt.inputs[2].non_witness_utxo");
}
