//! Key check values: a short public fingerprint of a root key, stored beside the key's id so a
//! wrong key under the right id is refused at load time instead of silently writing values the
//! real key cannot open (or blind-index values that never match). FORMAT.md §10.

use std::fmt;

use super::material::{KEY_LEN, LABEL_CHECK_VALUE, RootKey};
use super::ring::Keyring;
use crate::key_id::KeyId;

/// Length of a key check value, in bytes.
pub const CHECK_VALUE_LEN: usize = 16;

/// What a root key is for; part of its check value and of its wrap context, so one key's check
/// value cannot vouch for it under another purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyPurpose {
    /// Seals column values (`ENCRYPTED_COLUMNS_KEYS`).
    Encryption,
    /// Computes blind-index values (`ENCRYPTED_COLUMNS_BLIND_INDEX_KEYS`).
    BlindIndex,
    /// A per-subject data key (a patient's, a tenant's, a customer's).
    Subject,
}

impl KeyPurpose {
    /// The purpose as written in check values, wrap contexts and key-store rows.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyPurpose::Encryption => "encryption",
            KeyPurpose::BlindIndex => "blind-index",
            KeyPurpose::Subject => "subject",
        }
    }

    /// Parses [`as_str`](Self::as_str)'s output.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "encryption" => Some(KeyPurpose::Encryption),
            "blind-index" => Some(KeyPurpose::BlindIndex),
            "subject" => Some(KeyPurpose::Subject),
            _ => None,
        }
    }
}

impl fmt::Display for KeyPurpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A key check value: the first 16 bytes of HKDF-SHA256 of the root key with label
/// `"key-check-value"` and names (purpose, decimal key id) — FORMAT.md §10.
///
/// Public by design: it lets anyone holding a candidate key confirm it is the stored one, and
/// nothing more (a PRF output under a label no other derivation uses). It is compared with
/// `==`: check values are not secret, so a timing difference reveals nothing.
///
/// ```
/// use encrypted_columns::KeyId;
/// use encrypted_columns::keyring::{KeyPurpose, check_value};
///
/// let kcv = check_value(KeyPurpose::Encryption, KeyId(1), &[7u8; 32]);
/// assert_eq!(kcv, check_value(KeyPurpose::Encryption, KeyId(1), &[7u8; 32]));
/// assert_ne!(kcv, check_value(KeyPurpose::Encryption, KeyId(2), &[7u8; 32]));
/// assert_ne!(kcv, check_value(KeyPurpose::BlindIndex, KeyId(1), &[7u8; 32]));
/// assert_eq!(kcv.to_string().len(), 32); // hex
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CheckValue([u8; CHECK_VALUE_LEN]);

impl CheckValue {
    /// A stored check value, if `bytes` is exactly [`CHECK_VALUE_LEN`] long.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(CheckValue)
    }

    /// The 16 bytes.
    pub fn as_bytes(&self) -> &[u8; CHECK_VALUE_LEN] {
        &self.0
    }
}

impl fmt::Display for CheckValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for CheckValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CheckValue({self})")
    }
}

/// The check value of `key` used as root key `id` for `purpose` (FORMAT.md §10).
pub fn check_value(purpose: KeyPurpose, id: KeyId, key: &[u8; KEY_LEN]) -> CheckValue {
    RootKey(zeroize::Zeroizing::new(*key)).check_value(purpose, id)
}

impl RootKey {
    pub(super) fn check_value(&self, purpose: KeyPurpose, id: KeyId) -> CheckValue {
        let okm = self.derive(LABEL_CHECK_VALUE, &[purpose.as_str(), &id.0.to_string()]);
        let mut out = [0u8; CHECK_VALUE_LEN];
        out.copy_from_slice(&okm[..CHECK_VALUE_LEN]);
        CheckValue(out)
    }
}

impl Keyring {
    /// The check value of encryption key `id` (purpose [`KeyPurpose::Encryption`]) or
    /// blind-index key `id` ([`KeyPurpose::BlindIndex`]), if the keyring holds it. `None` for
    /// [`KeyPurpose::Subject`]: subject keys are not keyring root keys.
    pub fn check_value(&self, purpose: KeyPurpose, id: KeyId) -> Option<CheckValue> {
        let key = match purpose {
            KeyPurpose::Encryption => self.keys.get(&id),
            KeyPurpose::BlindIndex => self.blind_index_keys.get(&id),
            KeyPurpose::Subject => None,
        };
        key.map(|k| k.check_value(purpose, id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyring_check_values_match_the_free_function_and_separate_purposes() {
        let mut ring = Keyring::new(KeyId(1), [1u8; 32]);
        ring.add_blind_index_key(KeyId(1), [2u8; 32]).unwrap();
        assert_eq!(
            ring.check_value(KeyPurpose::Encryption, KeyId(1)),
            Some(check_value(KeyPurpose::Encryption, KeyId(1), &[1u8; 32]))
        );
        assert_eq!(
            ring.check_value(KeyPurpose::BlindIndex, KeyId(1)),
            Some(check_value(KeyPurpose::BlindIndex, KeyId(1), &[2u8; 32]))
        );
        assert_eq!(ring.check_value(KeyPurpose::Encryption, KeyId(2)), None);
        assert_eq!(ring.check_value(KeyPurpose::Subject, KeyId(1)), None);
        let kcv = check_value(KeyPurpose::Subject, KeyId(1), &[1u8; 32]);
        assert_eq!(CheckValue::from_bytes(kcv.as_bytes()), Some(kcv));
        assert_eq!(CheckValue::from_bytes(&[0u8; 15]), None);
        for p in [
            KeyPurpose::Encryption,
            KeyPurpose::BlindIndex,
            KeyPurpose::Subject,
        ] {
            assert_eq!(KeyPurpose::parse(p.as_str()), Some(p));
        }
    }
}
