//! Typed payloads: what a node signs, decoded by the node itself. Each
//! family (one file each) turns the bytes a client sent into the digests to
//! sign (its `Target`s) and the facts a content policy reads (`Content`),
//! and, once signed, into the finished output a caller needs next. Decoding
//! and hashing use each ecosystem's maintained crates (alloy, bitcoin,
//! cosmos-sdk-proto); nothing here does I/O.
//!
//! Every participant runs `decode` on the payload the client signed, so the
//! digest a session signs is never the coordinator's word.

mod bitcoin;
mod cosmos;
mod eth;
pub mod eth_values;
pub mod eth_wallet;
#[cfg(test)]
mod fuzz_tests;
pub mod key_files;

pub use self::bitcoin::{address_of, psbt_from_base64, script_of, BtcInput, BtcOutput, BtcTx};
pub use cosmos::{CosmosCoin, CosmosDoc, CosmosMsg};
pub use eth::{ether, EthTx, TokenCall, TypedDomain};

use crate::domain::{DerivationPath, KeyType};

/// The most bytes a payload may have (a PSBT with many inputs fits easily).
pub const MAX_PAYLOAD_BYTES: usize = 256 * 1024;

/// The kinds of payload a client can ask a key to sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// An unsigned EIP-2718 transaction: legacy (EIP-155), EIP-2930, EIP-1559.
    EthTransaction,
    /// EIP-191 `personal_sign` message bytes.
    EthMessage,
    /// EIP-712 typed data, JSON as wallets send it.
    EthTypedData,
    /// A BIP-174 PSBT.
    BitcoinPsbt,
    /// A Cosmos SDK `SignDoc` (SIGN_MODE_DIRECT).
    CosmosSignDoc,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Self::EthTransaction,
        Self::EthMessage,
        Self::EthTypedData,
        Self::BitcoinPsbt,
        Self::CosmosSignDoc,
    ];

    /// The name used in the protos, the policy file and the signed bytes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EthTransaction => "eth_transaction",
            Self::EthMessage => "eth_message",
            Self::EthTypedData => "eth_typed_data",
            Self::BitcoinPsbt => "bitcoin_psbt",
            Self::CosmosSignDoc => "cosmos_sign_doc",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Whether the kind signs with key paths the payload names itself (a
    /// PSBT's BIP-32 derivations) rather than the request's path.
    pub fn paths_from_payload(self) -> bool {
        self == Self::BitcoinPsbt
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A payload refused: which field and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("payload field {field}: {reason}")]
pub struct PayloadError {
    pub field: String,
    pub reason: String,
}

impl PayloadError {
    pub(crate) fn new(field: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Self {
            field: field.into(),
            reason: reason.to_string(),
        }
    }
}

/// The key a payload is decoded for: its master public key (compressed)
/// and chain code, and the request's derivation path.
#[derive(Debug, Clone, Copy)]
pub struct KeyView<'a> {
    pub key_type: KeyType,
    pub public_key: &'a [u8],
    pub chain_code: &'a [u8; 32],
    pub path: &'a DerivationPath,
}

/// One digest to sign, the path of the key that signs it, and the replay
/// position the payload itself names (if any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub digest: [u8; 32],
    pub path: DerivationPath,
    pub replay: Option<Replay>,
}

/// Double-sign protection derived from a payload: per scope, positions only
/// go up, and one position is signed for one digest only. Scopes start with
/// `#`, which a client's own slot scope cannot contain, so no client can
/// name (and so burn) a payload's replay position with a raw-digest slot. An Ethereum
/// transaction's scope is its chain and sender and its position the nonce;
/// a Cosmos SignDoc's, its chain and account number and the sequence; a
/// Bitcoin input's, the outpoint it spends (position 0: one spend ever).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replay {
    pub scope: String,
    pub position: u64,
}

/// What a payload says, for the content policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    EthTx(EthTx),
    EthMessage { len: usize },
    EthTypedData(TypedDomain),
    Bitcoin(BtcTx),
    Cosmos(CosmosDoc),
}

/// A decoded payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub kind: Kind,
    /// The digests to sign, in order; at least one.
    pub targets: Vec<Target>,
    /// One line in plain words: what would be signed.
    pub summary: String,
    pub content: Content,
}

/// A signature over one target: r, s (low-S) and the recovery id, and the
/// compressed public key that made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sig {
    pub r: [u8; 32],
    pub s: [u8; 32],
    pub recovery_id: u8,
    pub public_key: [u8; 33],
}

/// What a caller needs next, by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Finished {
    /// Ethereum transaction: the signed EIP-2718 bytes. Cosmos: the `TxRaw`
    /// bytes. Bitcoin: the finalized transaction when every input is signed.
    pub signed: Vec<u8>,
    /// The transaction hash (Ethereum: keccak of the signed bytes; Bitcoin:
    /// the txid in display order; Cosmos: SHA-256 of `TxRaw`).
    pub tx_hash: Vec<u8>,
    /// Ethereum: the sender address, recovered from the signature
    /// (0x-prefixed, checksummed).
    pub sender: String,
    /// Ethereum messages and typed data: r || s || v with v = 27 + y parity.
    /// Cosmos: r || s.
    pub signature: Vec<u8>,
    /// Bitcoin: the PSBT with every partial signature added.
    pub psbt: Vec<u8>,
}

/// Decodes `bytes` as `kind` for `key`: the targets to sign and the content.
pub fn decode(kind: Kind, bytes: &[u8], key: &KeyView<'_>) -> Result<Decoded, PayloadError> {
    if bytes.is_empty() {
        return Err(PayloadError::new(kind.as_str(), "is empty"));
    }
    if bytes.len() > MAX_PAYLOAD_BYTES {
        return Err(PayloadError::new(
            kind.as_str(),
            format!(
                "is {} bytes; at most {MAX_PAYLOAD_BYTES} are accepted",
                bytes.len()
            ),
        ));
    }
    let needs_secp = |what: &str| {
        if key.key_type == KeyType::Secp256k1 {
            Ok(())
        } else {
            Err(PayloadError::new(
                kind.as_str(),
                format!("{what} needs a secp256k1 key; this key is {}", key.key_type),
            ))
        }
    };
    match kind {
        Kind::EthTransaction => {
            needs_secp("an Ethereum transaction")?;
            eth::decode_tx(bytes, key)
        }
        Kind::EthMessage => {
            needs_secp("an Ethereum message")?;
            Ok(eth::decode_message(bytes, key.path))
        }
        Kind::EthTypedData => {
            needs_secp("EIP-712 typed data")?;
            eth::decode_typed_data(bytes, key.path)
        }
        Kind::BitcoinPsbt => {
            needs_secp("a Bitcoin PSBT")?;
            self::bitcoin::decode_psbt(bytes, key)
        }
        Kind::CosmosSignDoc => {
            needs_secp("a Cosmos SignDoc")?;
            cosmos::decode_sign_doc(bytes, key)
        }
    }
}

/// Builds the finished output of `bytes` signed with `sigs` (one per target
/// of `decode`, in order). Each signature must already have been verified
/// against its target's digest and the key at its path, recovery id
/// included: the node's signing path does so for every signature it
/// returns (`protocol::sign::verify`, or its own engine), and this does not
/// repeat it.
pub fn finish(
    kind: Kind,
    bytes: &[u8],
    key: &KeyView<'_>,
    sigs: &[Sig],
) -> Result<Finished, PayloadError> {
    let one = || -> Result<&Sig, PayloadError> {
        match sigs {
            [s] => Ok(s),
            _ => Err(PayloadError::new(
                kind.as_str(),
                format!("expected one signature, got {}", sigs.len()),
            )),
        }
    };
    match kind {
        Kind::EthTransaction => eth::finish_tx(bytes, key, one()?),
        Kind::EthMessage | Kind::EthTypedData => Ok(eth::finish_message(one()?)),
        Kind::BitcoinPsbt => self::bitcoin::finish_psbt(bytes, key, sigs),
        Kind::CosmosSignDoc => cosmos::finish_sign_doc(bytes, key, one()?),
    }
}
