//! Secret wrappers over `secrecy` + `zeroize`: redacted `Debug`, zeroized on
//! drop. Exposing the inside is explicit (`expose`) and rare. Nothing here
//! formats secret bytes.

use std::fmt;

use secrecy::{ExposeSecret, SecretBox};
use zeroize::Zeroize;

/// Secret bytes (a serialized share, a passphrase).
pub struct SecretBytes(SecretBox<Vec<u8>>);

impl SecretBytes {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(SecretBox::new(Box::new(bytes)))
    }
    pub fn expose(&self) -> &[u8] {
        self.0.expose_secret()
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes([REDACTED; {}])", self.expose().len())
    }
}

/// A 32-byte symmetric key (the store KEK).
pub struct SecretKey32(SecretBox<[u8; 32]>);

impl SecretKey32 {
    pub fn new(bytes: [u8; 32]) -> Self {
        Self(SecretBox::new(Box::new(bytes)))
    }
    pub fn expose(&self) -> &[u8; 32] {
        self.0.expose_secret()
    }
}

impl fmt::Debug for SecretKey32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey32([REDACTED])")
    }
}

impl Zeroize for SecretBytes {
    fn zeroize(&mut self) {
        self.0.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_is_redacted() {
        let s = SecretBytes::new(vec![0xAB; 4]);
        let out = format!("{s:?}");
        assert!(!out.contains("171") && !out.to_lowercase().contains("ab, "));
        assert!(out.contains("REDACTED"));
        let k = SecretKey32::new([7; 32]);
        assert!(!format!("{k:?}").contains('7'));
    }
}
