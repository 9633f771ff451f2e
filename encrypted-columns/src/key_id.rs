//! Key ids: named by envelopes, errors and the keyring alike, so they sit below all three.

use std::fmt;

/// Identifies a root key. Recorded in every envelope (big-endian `u32`) so old values stay
/// readable after rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub u32);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl From<u32> for KeyId {
    fn from(id: u32) -> Self {
        KeyId(id)
    }
}
