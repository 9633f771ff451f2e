//! The key store's one error type. Every message is one line naming the scope, purpose and key
//! id concerned, never key bytes, wrapped bytes or a connection URL.

use crate::kek::KekError;
use crate::keyring::KeyPurpose;

/// Why a key-store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyStoreError {
    /// The database failed (the driver's message; SeaORM's errors carry no URL or password).
    #[error("key store: database error: {0}")]
    Database(String),
    /// A KEK operation not tied to one stored key failed (e.g. generating a key).
    #[error("key store: {0}")]
    Kek(#[from] KekError),
    /// The KEK could not unwrap (or rewrap) one stored key.
    #[error("key store: {purpose} key {key_id} of scope '{scope}': {source}")]
    KeyKek {
        /// The scope.
        scope: String,
        /// The purpose.
        purpose: KeyPurpose,
        /// The key id.
        key_id: u32,
        /// What the provider said.
        #[source]
        source: KekError,
    },
    /// A key's check value differs from the stored one: the key is not the key registered
    /// under this id (a wrong environment value, or a tampered row).
    #[error(
        "key store: {purpose} key {key_id} of scope '{scope}' does not match the key registered \
         under this id (check value differs); nothing was written"
    )]
    CheckValueMismatch {
        /// The scope.
        scope: String,
        /// The purpose.
        purpose: KeyPurpose,
        /// The key id.
        key_id: u32,
    },
    /// No key of `purpose` is active in the scope.
    #[error("key store: scope '{scope}' has no active {purpose} key")]
    NoActiveKey {
        /// The scope.
        scope: String,
        /// The purpose.
        purpose: KeyPurpose,
    },
    /// More than one key of `purpose` is active in the scope.
    #[error("key store: scope '{scope}' has {} active {purpose} keys ({}); exactly one may be active", key_ids.len(), join(key_ids))]
    TwoActiveKeys {
        /// The scope.
        scope: String,
        /// The purpose.
        purpose: KeyPurpose,
        /// The active ids.
        key_ids: Vec<u32>,
    },
    /// A new key was to be created active while another key of its purpose is.
    #[error(
        "key store: scope '{scope}' already has active {purpose} key {key_id}; create the new \
         key decrypt-only, deploy it, then promote it"
    )]
    ActiveKeyExists {
        /// The scope.
        scope: String,
        /// The purpose.
        purpose: KeyPurpose,
        /// The active key's id.
        key_id: u32,
    },
    /// No row for this key.
    #[error("key store: scope '{scope}' has no {purpose} key {key_id}")]
    UnknownKey {
        /// The scope.
        scope: String,
        /// The purpose.
        purpose: KeyPurpose,
        /// The key id.
        key_id: u32,
    },
    /// The operation is refused for the active key (retiring it).
    #[error(
        "key store: {purpose} key {key_id} of scope '{scope}' is active; promote another key \
         first"
    )]
    KeyIsActive {
        /// The scope.
        scope: String,
        /// The purpose.
        purpose: KeyPurpose,
        /// The key id.
        key_id: u32,
    },
    /// The operation is refused for a retired key (promoting it).
    #[error("key store: {purpose} key {key_id} of scope '{scope}' is retired")]
    KeyIsRetired {
        /// The scope.
        scope: String,
        /// The purpose.
        purpose: KeyPurpose,
        /// The key id.
        key_id: u32,
    },
    /// Keys of the scope are wrapped by another provider or KEK than the one given (or are
    /// environment keys), so they cannot be loaded with it.
    #[error(
        "key store: scope '{scope}' has keys not wrapped by KEK provider {provider} ({kek_id}): \
         {}", keys.join(", ")
    )]
    OtherKek {
        /// The scope.
        scope: String,
        /// The provider given.
        provider: String,
        /// The KEK id given.
        kek_id: String,
        /// Each foreign key: `"<purpose> key <id> (<provider> <kek id>)"`.
        keys: Vec<String>,
    },
    /// No key id is left for `purpose` (blind-index ids stop at 255).
    #[error("key store: scope '{scope}' has no free {purpose} key id left")]
    NoFreeKeyId {
        /// The scope.
        scope: String,
        /// The purpose.
        purpose: KeyPurpose,
    },
    /// Only encryption and blind-index keys live in the store.
    #[error("key store: {purpose} keys are not kept in the key store")]
    UnsupportedPurpose {
        /// The purpose asked for.
        purpose: KeyPurpose,
    },
    /// A stored row cannot be used: bad purpose or state text, id out of range, check value of
    /// the wrong length, missing wrapped key.
    #[error("key store: damaged row ({purpose} key {key_id} of scope '{scope}'): {problem}")]
    DamagedRow {
        /// The scope.
        scope: String,
        /// The purpose text as stored.
        purpose: String,
        /// The key id as stored.
        key_id: i64,
        /// What is wrong.
        problem: String,
    },
    /// The keyring refused the loaded keys (e.g. one key under two purposes).
    #[error("key store: scope '{scope}': {reason}")]
    Keyring {
        /// The scope.
        scope: String,
        /// The keyring's message (names ids, never bytes).
        reason: String,
    },
}

fn join(ids: &[u32]) -> String {
    ids.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl From<sea_orm::DbErr> for KeyStoreError {
    fn from(err: sea_orm::DbErr) -> Self {
        // One line: drivers sometimes put newlines in server messages.
        KeyStoreError::Database(err.to_string().replace(['\n', '\r'], " "))
    }
}

impl KeyStoreError {
    /// The purpose and key id the error is about, when it names one key.
    pub fn key(&self) -> Option<(KeyPurpose, u32)> {
        match self {
            KeyStoreError::KeyKek {
                purpose, key_id, ..
            }
            | KeyStoreError::CheckValueMismatch {
                purpose, key_id, ..
            }
            | KeyStoreError::ActiveKeyExists {
                purpose, key_id, ..
            }
            | KeyStoreError::UnknownKey {
                purpose, key_id, ..
            }
            | KeyStoreError::KeyIsActive {
                purpose, key_id, ..
            }
            | KeyStoreError::KeyIsRetired {
                purpose, key_id, ..
            } => Some((*purpose, *key_id)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keystore_errors_are_one_line_and_name_the_key() {
        let err = KeyStoreError::CheckValueMismatch {
            scope: "clinic".into(),
            purpose: KeyPurpose::BlindIndex,
            key_id: 3,
        };
        let text = err.to_string();
        assert!(
            text.contains("blind-index key 3") && text.contains("'clinic'"),
            "{text}"
        );
        assert_eq!(err.key(), Some((KeyPurpose::BlindIndex, 3)));
        let err = KeyStoreError::TwoActiveKeys {
            scope: "s".into(),
            purpose: KeyPurpose::Encryption,
            key_ids: vec![1, 2],
        };
        assert!(
            err.to_string().contains("2 active encryption keys (1, 2)"),
            "{err}"
        );
        let err = KeyStoreError::from(sea_orm::DbErr::Custom("line one\nline two".into()));
        assert_eq!(err.to_string().lines().count(), 1);
    }
}
