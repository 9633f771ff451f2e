//! Opt-in serde for encrypted fields: `#[serde(with = "encrypted_columns::expose")]`.
//!
//! [`Encrypted`] has no `Serialize` of its own so a model serialized into an API response or
//! a log cannot leak plaintext by accident. Where plaintext output is intended, say so on the
//! field; deserializing seals the value with the keyring in force.
//!
//! ```
//! use encrypted_columns::{column_context, EncryptedString, Keyring, keyring};
//!
//! column_context!(PatientName, table = "patients", column = "name");
//! keyring::install(Keyring::generate());
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct PatientView {
//!     #[serde(with = "encrypted_columns::expose")]
//!     name: EncryptedString<PatientName>,
//! }
//! let view = PatientView { name: EncryptedString::new("Ada".into())? };
//! let json = serde_json::to_string(&view).unwrap();
//! assert_eq!(json, r#"{"name":"Ada"}"#);
//! let back: PatientView = serde_json::from_str(&json).unwrap();
//! assert_eq!(back.name.expose(), "Ada");
//! # Ok::<(), encrypted_columns::Error>(())
//! ```

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{Encrypted, Plaintext};
use crate::context::ColumnContext;

/// Serializes the plaintext.
pub fn serialize<T, C, S>(value: &Encrypted<T, C>, serializer: S) -> Result<S::Ok, S::Error>
where
    T: Plaintext + Serialize,
    C: ColumnContext,
    S: Serializer,
{
    value.expose().serialize(serializer)
}

/// Deserializes a plaintext and seals it with the keyring in force.
pub fn deserialize<'de, T, C, D>(deserializer: D) -> Result<Encrypted<T, C>, D::Error>
where
    T: Plaintext + Deserialize<'de>,
    C: ColumnContext,
    D: Deserializer<'de>,
{
    let plaintext = T::deserialize(deserializer)?;
    Encrypted::new(plaintext).map_err(serde::de::Error::custom)
}
