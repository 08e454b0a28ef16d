//! Binary encoding of engine values (protocol messages, sealed shares):
//! bincode over serde with a hard size limit, so oversized or garbage input
//! is a decode error, never an allocation bomb or a panic. Shared by
//! `protocol` and `storage`, which do not import each other.

use serde::{de::DeserializeOwned, Serialize};

/// Largest protocol message accepted (keygen round 3 carries OT setup).
pub const MAX_MESSAGE_BYTES: usize = 4 << 20;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_MESSAGE_BYTES>()
}

pub fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, String> {
    bincode::serde::encode_to_vec(v, config()).map_err(|e| e.to_string())
}

/// Decodes a whole buffer; trailing bytes are an error.
pub fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, String> {
    if b.len() > MAX_MESSAGE_BYTES {
        return Err(format!(
            "{} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit",
            b.len()
        ));
    }
    let (v, used) = bincode::serde::decode_from_slice(b, config()).map_err(|e| e.to_string())?;
    if used != b.len() {
        return Err(format!("{} trailing bytes", b.len() - used));
    }
    Ok(v)
}
