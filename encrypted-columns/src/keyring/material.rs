//! Root key material: 32-byte keys in wiped buffers, the HKDF derivation of subkeys from them,
//! and fresh random keys.

use base64::Engine as _;
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::key_id::KeyId;

/// Length of every root key, in bytes (256 bits).
pub const KEY_LEN: usize = 32;

/// HKDF salt shared by every derivation of format version 1.
pub(crate) const HKDF_SALT: &[u8] = b"encrypted-columns/v1";
pub(super) const LABEL_COLUMN_KEY: &[u8] = b"column-key";
pub(super) const LABEL_BLIND_INDEX_KEY: &[u8] = b"blind-index-key";
pub(super) const LABEL_CHECK_VALUE: &[u8] = b"key-check-value";
pub(super) const LABEL_TENANT_BLIND_INDEX_KEY: &[u8] = b"tenant-blind-index-key";

/// 32 bytes of root key material, wiped on drop, never printed.
#[derive(Clone)]
pub(super) struct RootKey(pub(super) Zeroizing<[u8; KEY_LEN]>);

impl RootKey {
    pub(super) fn from_slice(bytes: &[u8], origin: &str) -> Result<Self> {
        let array: [u8; KEY_LEN] = bytes.try_into().map_err(|_| {
            Error::key_config(
                origin,
                format!(
                    "key is {} bytes; keys must be exactly {KEY_LEN} bytes (256 bits) of random data",
                    bytes.len()
                ),
            )
        })?;
        Ok(RootKey(Zeroizing::new(array)))
    }

    pub(super) fn derive(&self, label: &[u8], names: &[&str]) -> Zeroizing<[u8; KEY_LEN]> {
        let hk = Hkdf::<Sha256>::new(Some(HKDF_SALT), self.0.as_slice());
        let info = derivation_info(label, names);
        let mut okm = Zeroizing::new([0u8; KEY_LEN]);
        match hk.expand(&info, okm.as_mut_slice()) {
            Ok(()) => okm,
            // HKDF-SHA256 can expand up to 8160 bytes; 32 never fails.
            Err(_) => unreachable!("HKDF-SHA256 output of 32 bytes is always valid"),
        }
    }
}

/// `label || 0x00 || for each name: u16-be length || bytes`.
fn derivation_info(label: &[u8], names: &[&str]) -> Vec<u8> {
    let mut info =
        Vec::with_capacity(label.len() + 1 + names.iter().map(|n| n.len() + 2).sum::<usize>());
    info.extend_from_slice(label);
    info.push(0);
    for name in names {
        push_length_prefixed(&mut info, name.as_bytes());
    }
    info
}

pub(crate) fn push_length_prefixed(out: &mut Vec<u8>, bytes: &[u8]) {
    // Context names are validated to fit in u16 before any derivation.
    let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

/// 32 bytes from the operating system's CSPRNG, for a new root key.
pub fn generate_key() -> Zeroizing<[u8; KEY_LEN]> {
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    rand::Rng::fill_bytes(&mut rand::rng(), key.as_mut_slice());
    key
}

/// A fresh key as `<id>:<base64>`, the format of `ENCRYPTED_COLUMNS_KEYS` entries.
pub fn generate_key_entry(id: KeyId) -> Zeroizing<String> {
    let key = generate_key();
    Zeroizing::new(format!(
        "{id}:{}",
        base64::engine::general_purpose::STANDARD.encode(key.as_slice())
    ))
}
