//! Key file tests with published vectors: the Web3 Secret Storage PBKDF2
//! test vector, and the BIP-39 phrase every Ethereum development chain
//! (Hardhat, Anvil) derives its first accounts from.

use proptest::prelude::*;

use super::*;

/// The PBKDF2-SHA-256 test vector of the Web3 Secret Storage Definition
/// (password "testpassword").
const PBKDF2_VECTOR: &str = r#"{
    "crypto" : {
        "cipher" : "aes-128-ctr",
        "cipherparams" : { "iv" : "6087dab2f9fdbbfaddc31a909735c1e6" },
        "ciphertext" : "5318b4d5bcd28de64ee5559e671353e16f075ecae9f99c7a79a38af5f869aa46",
        "kdf" : "pbkdf2",
        "kdfparams" : {
            "c" : 262144,
            "dklen" : 32,
            "prf" : "hmac-sha256",
            "salt" : "ae3cd4e7013836a3df6bd7241b12db061dbe2c6785853cce422d148a624ce0bd"
        },
        "mac" : "517ead924a9d0dc3124507e3393d175ce3ff7c1e96529c6c555ce9e51205e9b2"
    },
    "id" : "3198bc9c-6672-5ab3-d995-4942343ae5b6",
    "version" : 3
}"#;
const PBKDF2_KEY: &str = "7a28b5ba57c53603b0b07b56bba752f7784bf506fa95edc395f5cf6c7514fe9d";

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn the_web3_secret_storage_vector_decrypts_and_a_wrong_password_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(&dir, "k.json", PBKDF2_VECTOR);
    let key = keystore_key(&p, b"testpassword").unwrap();
    assert_eq!(hex::encode(*key), PBKDF2_KEY);
    let e = keystore_key(&p, b"wrongpassword").unwrap_err();
    assert!(e.contains("wrong password"), "{e}");
    assert!(!e.contains("wrongpassword"), "{e}");
}

#[test]
fn a_keystore_the_crate_would_choke_on_is_refused_first() {
    let dir = tempfile::tempdir().unwrap();
    for (from, to, why) in [
        ("\"dklen\" : 32", "\"dklen\" : 16", "dklen"),
        ("6087dab2f9fdbbfaddc31a909735c1e6", "6087dab2", "iv"),
        ("\"c\" : 262144", "\"c\" : 100000000000", "pbkdf2 c"),
        ("\"kdf\" : \"pbkdf2\"", "\"kdf\" : \"argon2\"", "kdf"),
        ("\"version\" : 3", "\"version\" : 1", "version 3"),
        ("aes-128-ctr", "aes-256-gcm", "cipher"),
        ("5318b4d5bcd28de6", "5318", "ciphertext"),
    ] {
        assert!(PBKDF2_VECTOR.contains(from), "{from}");
        let p = write(&dir, "bad.json", &PBKDF2_VECTOR.replace(from, to));
        let e = keystore_key(&p, b"testpassword").unwrap_err();
        assert!(e.contains(why), "{why}: {e}");
    }
    let scrypt = r#"{"version":3,"crypto":{"cipher":"aes-128-ctr","cipherparams":{"iv":"00000000000000000000000000000000"},
        "ciphertext":"0000000000000000000000000000000000000000000000000000000000000000","kdf":"scrypt",
        "kdfparams":{"dklen":32,"n":4194304,"r":8,"p":1,"salt":"00"},
        "mac":"0000000000000000000000000000000000000000000000000000000000000000"}}"#;
    let p = write(&dir, "slow.json", scrypt);
    assert!(keystore_key(&p, b"x").unwrap_err().contains("scrypt n"));
    let p = write(&dir, "odd.json", &scrypt.replace("4194304", "1000"));
    assert!(keystore_key(&p, b"x").unwrap_err().contains("power of two"));
    let missing = dir.path().join("none.json");
    assert!(keystore_key(&missing, b"x").is_err());
}

#[test]
fn the_development_chain_phrase_gives_its_well_known_accounts() {
    let phrase = "test test test test test test test test test test test junk";
    let first = mnemonic_key(phrase, "m/44'/60'/0'/0/0", None).unwrap();
    assert_eq!(
        hex::encode(*first),
        "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
    );
    let second = mnemonic_key(&format!("  {phrase}\n"), "m/44'/60'/0'/0/1", None).unwrap();
    assert_eq!(
        hex::encode(*second),
        "59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
    );
    // A passphrase gives another key; a bad checksum or path is refused
    // without echoing the phrase.
    assert_ne!(
        *mnemonic_key(phrase, "m/44'/60'/0'/0/0", Some("extra")).unwrap(),
        *first
    );
    let e = mnemonic_key(&phrase.replace("junk", "test"), "m/44'/60'/0'/0/0", None).unwrap_err();
    assert!(e.contains("not a valid English BIP-39 phrase"), "{e}");
    assert!(!e.contains("test test"), "{e}");
    assert!(mnemonic_key(phrase, "m/44'/x", None).is_err());
}

#[test]
fn a_raw_key_is_64_hex_digits() {
    let k = raw_key(&format!("0x{PBKDF2_KEY}\n")).unwrap();
    assert_eq!(hex::encode(*k), PBKDF2_KEY);
    assert!(raw_key(&PBKDF2_KEY[2..]).is_err());
    assert!(raw_key(&PBKDF2_KEY.replace('7', "g")).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn arbitrary_key_files_give_an_error_not_a_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
        words in proptest::collection::vec("[a-z]{1,8}", 0..30),
    ) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = raw_key(&text);
        let _ = mnemonic_key(&text, "m/44'/60'/0'/0/0", None);
        let _ = mnemonic_key(&words.join(" "), "m/0", None);
        let _ = mnemonic_key("test test test test test test test test test test test junk", &text, None);
        let _ = check_keystore(&text);
    }

    #[test]
    fn damaged_keystores_give_an_error_not_a_panic(
        at in 0usize..PBKDF2_VECTOR.len(),
        with in "[0-9a-z\":,{} ]{0,6}",
    ) {
        let mut t = PBKDF2_VECTOR.to_owned();
        if t.is_char_boundary(at) {
            t.insert_str(at, &with);
        }
        // What passes the checks goes through the crate too (the KDF runs).
        if check_keystore(&t).is_ok() {
            let dir = tempfile::tempdir().unwrap();
            let _ = keystore_key(&write(&dir, "k.json", &t), b"testpassword");
        }
    }
}
