//! The envelope byte layout: encoding and parsing only, no cryptography.
//!
//! ```text
//! offset  size  field
//! 0       1     version        0x01
//! 1       4     key id         u32, big-endian
//! 5       24    nonce          XAES-256-GCM nonce, random
//! 29      n     ciphertext     same length as the plaintext
//! 29+n    16    tag            GCM tag
//! ```
//!
//! The first five bytes (the header) are authenticated as part of the associated data, so a
//! rewritten version or key id fails to open. The key id sits at a fixed offset so SQL can find
//! rows sealed under an old key without decrypting (`substr(col, 2, 4)`). `FORMAT.md` beside
//! this crate is the normative description.

use std::fmt;

use crate::key_id::KeyId;

/// The only envelope version this build writes and reads.
pub const VERSION: u8 = 1;
/// Bytes of header: version + key id.
pub const HEADER_LEN: usize = 1 + 4;
/// Bytes of XAES-256-GCM nonce.
pub const NONCE_LEN: usize = 24;
/// Bytes of GCM tag.
pub const TAG_LEN: usize = 16;
/// Bytes an envelope adds to its plaintext: header + nonce + tag (45).
pub const OVERHEAD: usize = HEADER_LEN + NONCE_LEN + TAG_LEN;

/// Why a byte string is not a well-formed envelope. Holds lengths and versions only, never
/// the bytes themselves (they might be plaintext a migration left behind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// Shorter than the fixed overhead, so it cannot hold header, nonce and tag.
    TooShort {
        /// Length found.
        len: usize,
    },
    /// The first byte is not a version this build reads.
    UnsupportedVersion,
}

impl fmt::Display for EnvelopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnvelopeError::TooShort { len } => write!(
                f,
                "{len} bytes is shorter than the {OVERHEAD}-byte minimum (truncated, or not an envelope)"
            ),
            EnvelopeError::UnsupportedVersion => write!(
                f,
                "unknown format version (this build reads version {VERSION}); the column may hold \
                 plaintext or data written by another tool"
            ),
        }
    }
}

impl std::error::Error for EnvelopeError {}

/// A parsed view into envelope bytes.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    /// Key id the value was sealed with.
    pub key_id: KeyId,
    /// The 24-byte nonce.
    pub nonce: &'a [u8; NONCE_LEN],
    /// Ciphertext, same length as the plaintext.
    pub ciphertext: &'a [u8],
    /// The 16-byte tag.
    pub tag: &'a [u8; TAG_LEN],
}

impl<'a> Envelope<'a> {
    /// Splits `bytes` into its fields, checking only structure (no authentication).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, EnvelopeError> {
        if bytes.len() < OVERHEAD {
            return Err(EnvelopeError::TooShort { len: bytes.len() });
        }
        let (header, rest) = bytes.split_at(HEADER_LEN);
        let (version, key_id) = header.split_at(1);
        if version[0] != VERSION {
            return Err(EnvelopeError::UnsupportedVersion);
        }
        let key_id = KeyId(u32::from_be_bytes(fixed(key_id)));
        let (nonce, rest) = rest.split_at(NONCE_LEN);
        let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
        Ok(Envelope {
            key_id,
            nonce: fixed_ref(nonce),
            ciphertext,
            tag: fixed_ref(tag),
        })
    }
}

/// The 5-byte header for `key_id`; also the start of the associated data.
pub fn header(key_id: KeyId) -> [u8; HEADER_LEN] {
    let id = key_id.0.to_be_bytes();
    [VERSION, id[0], id[1], id[2], id[3]]
}

/// Reads the key id of an envelope without checking anything past the header.
pub fn key_id_of(bytes: &[u8]) -> Result<KeyId, EnvelopeError> {
    Envelope::parse(bytes).map(|e| e.key_id)
}

// The callers split at exact offsets, so these conversions cannot fail; a mismatch would be a
// bug in this file, caught by the envelope tests.
fn fixed<const N: usize>(s: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(s);
    out
}

fn fixed_ref<const N: usize>(s: &[u8]) -> &[u8; N] {
    match s.try_into() {
        Ok(a) => a,
        Err(_) => unreachable!("envelope split at a wrong offset"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_minimal_envelope() {
        let mut bytes = vec![VERSION, 0, 0, 0, 7];
        bytes.extend_from_slice(&[0xAA; NONCE_LEN]);
        bytes.extend_from_slice(&[0xBB; TAG_LEN]);
        let env = Envelope::parse(&bytes).expect("valid");
        assert_eq!(env.key_id, KeyId(7));
        assert!(env.ciphertext.is_empty());
        assert_eq!(env.nonce, &[0xAA; NONCE_LEN]);
        assert_eq!(env.tag, &[0xBB; TAG_LEN]);
    }

    #[test]
    fn rejects_short_and_unknown_version() {
        for len in 0..OVERHEAD {
            let bytes = vec![VERSION; len];
            assert_eq!(
                Envelope::parse(&bytes).unwrap_err(),
                EnvelopeError::TooShort { len }
            );
        }
        let mut bytes = vec![2u8; OVERHEAD + 3];
        assert_eq!(
            Envelope::parse(&bytes).unwrap_err(),
            EnvelopeError::UnsupportedVersion
        );
        bytes[0] = VERSION;
        assert!(Envelope::parse(&bytes).is_ok());
    }
}
