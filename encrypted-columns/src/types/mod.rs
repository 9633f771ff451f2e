//! Encrypted value types for SeaORM entity fields.
//!
//! One generic type, [`Encrypted<T, C>`], does the work; the aliases name the common cases.
//! `Option<…>` of any of them maps to a nullable column, and NULL stays NULL (never sealed).

mod encrypted;
pub mod expose;
mod plaintext;

pub use encrypted::Encrypted;
#[cfg(feature = "json")]
pub use plaintext::Json;
pub use plaintext::Plaintext;

/// An encrypted UTF-8 string.
pub type EncryptedString<C> = Encrypted<String, C>;
/// Encrypted raw bytes.
pub type EncryptedBytes<C> = Encrypted<Vec<u8>, C>;
/// An encrypted serde value, stored as JSON inside the envelope.
#[cfg(feature = "json")]
pub type EncryptedJson<T, C> = Encrypted<Json<T>, C>;

/// Names the plaintext type of an encrypted field type; generated code uses it to type
/// lookup arguments (`find_by_email_bidx(&str)` for an `EncryptedString` field).
pub trait EncryptedField {
    /// The plaintext type.
    type Plain: Plaintext;
    /// The column context marker.
    type Context: crate::ColumnContext;
    /// The plaintext of this value.
    fn plaintext(&self) -> &Self::Plain;
}

impl<T: Plaintext, C: crate::ColumnContext> EncryptedField for Encrypted<T, C> {
    type Plain = T;
    type Context = C;
    fn plaintext(&self) -> &T {
        self.expose()
    }
}
