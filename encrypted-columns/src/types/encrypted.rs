//! [`Encrypted<T, C>`]: a plaintext `T` of column `C`, sealed on construction, and the SeaORM
//! traits that let it be an entity field.

use std::fmt;
use std::marker::PhantomData;

use sea_orm::sea_query::{ArrayType, ColumnType, Nullable, ValueType, ValueTypeErr};
use sea_orm::{ActiveValue, ColIdx, IntoActiveValue, QueryResult, TryGetError, TryGetable, Value};

use super::plaintext::Plaintext;
use crate::context::{ColumnContext, Context};
use crate::envelope::HEADER_LEN;
use crate::error::{Error, Result};
use crate::keyring::{self, KeyId, Keyring};

/// A value of type `T` stored encrypted in the column named by the marker `C`.
///
/// It holds both the plaintext and its envelope: sealing happens once, in [`Encrypted::new`],
/// so handing the value to SeaORM (`Into<Value>`) cannot fail; reading a row opens the
/// envelope inside `TryGetable`. Equality compares plaintexts (every seal uses a fresh nonce,
/// so envelopes of equal values differ). `Debug` and `Display` print no plaintext, and there
/// is no `Serialize`: use [`expose`](crate::expose) to serialize the plaintext on purpose.
///
/// ```
/// use encrypted_columns::{column_context, EncryptedString, Keyring, keyring};
///
/// column_context!(PatientEmail, table = "patients", column = "email");
/// keyring::install(Keyring::generate());
///
/// let email = EncryptedString::<PatientEmail>::new("ada@example.org".to_string())?;
/// assert_eq!(email.expose(), "ada@example.org");
/// assert_eq!(format!("{email:?}"), "Encrypted<String>(patients.email, key 1, <redacted>)");
/// assert_eq!(email, EncryptedString::new("ada@example.org".to_string())?);
/// # Ok::<(), encrypted_columns::Error>(())
/// ```
pub struct Encrypted<T: Plaintext, C: ColumnContext> {
    plaintext: T,
    envelope: Vec<u8>,
    _context: PhantomData<fn() -> C>,
}

impl<T: Plaintext, C: ColumnContext> Encrypted<T, C> {
    /// Seals `value` with the keyring in force ([`keyring::current`]).
    pub fn new(value: T) -> Result<Self> {
        Self::new_with(&*keyring::current()?, value)
    }

    /// Seals `value` with an explicit keyring.
    pub fn new_with(keyring: &Keyring, value: T) -> Result<Self> {
        let envelope = keyring.seal_with(C::CONTEXT, value.encoded_len(), |out| {
            value.encode(out).map_err(|problem| Error::Encode {
                type_name: T::TYPE_NAME,
                problem,
            })
        })?;
        Ok(Encrypted {
            plaintext: value,
            envelope,
            _context: PhantomData,
        })
    }

    /// Opens stored envelope bytes with the keyring in force.
    pub fn from_envelope(bytes: Vec<u8>) -> Result<Self> {
        Self::from_envelope_with(&*keyring::current()?, bytes)
    }

    /// Opens stored envelope bytes with an explicit keyring.
    pub fn from_envelope_with(keyring: &Keyring, envelope: Vec<u8>) -> Result<Self> {
        let opened = keyring.open(C::CONTEXT, &envelope)?;
        let plaintext = T::decode(opened).map_err(|problem| Error::Decode {
            table: C::TABLE,
            column: C::COLUMN,
            type_name: T::TYPE_NAME,
            problem,
        })?;
        Ok(Encrypted {
            plaintext,
            envelope,
            _context: PhantomData,
        })
    }

    /// The plaintext. Named so every read of sensitive data is visible in code review.
    pub fn expose(&self) -> &T {
        &self.plaintext
    }

    /// The stored bytes (safe to log or compare: they reveal only length and key id).
    pub fn envelope(&self) -> &[u8] {
        &self.envelope
    }

    /// The key id this value is sealed with.
    pub fn key_id(&self) -> KeyId {
        // The envelope was sealed or opened by us, so it has a full header.
        let mut id = [0u8; 4];
        id.copy_from_slice(&self.envelope[1..HEADER_LEN]);
        KeyId(u32::from_be_bytes(id))
    }

    /// Seals the same plaintext again with the active key of the keyring in force: what key
    /// rotation does to each row.
    pub fn reseal(&self) -> Result<Self> {
        Self::new(self.plaintext.clone())
    }

    /// The logical column this type belongs to.
    pub fn context() -> Context {
        C::CONTEXT
    }
}

impl<T: Plaintext, C: ColumnContext> Drop for Encrypted<T, C> {
    fn drop(&mut self) {
        self.plaintext.wipe();
    }
}

impl<T: Plaintext, C: ColumnContext> Clone for Encrypted<T, C> {
    fn clone(&self) -> Self {
        Encrypted {
            plaintext: self.plaintext.clone(),
            envelope: self.envelope.clone(),
            _context: PhantomData,
        }
    }
}

impl<T: Plaintext, C: ColumnContext> PartialEq for Encrypted<T, C> {
    fn eq(&self, other: &Self) -> bool {
        self.plaintext == other.plaintext
    }
}

impl<T: Plaintext + Eq, C: ColumnContext> Eq for Encrypted<T, C> {}

impl<T: Plaintext, C: ColumnContext> fmt::Debug for Encrypted<T, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Encrypted<{}>({}.{}, key {}, <redacted>)",
            T::TYPE_NAME,
            C::TABLE,
            C::COLUMN,
            self.key_id()
        )
    }
}

impl<T: Plaintext, C: ColumnContext> fmt::Display for Encrypted<T, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

// --- SeaORM integration ----------------------------------------------------------------------

impl<T: Plaintext, C: ColumnContext> From<Encrypted<T, C>> for Value {
    fn from(mut value: Encrypted<T, C>) -> Value {
        Value::Bytes(Some(std::mem::take(&mut value.envelope)))
    }
}

impl<T: Plaintext, C: ColumnContext> Nullable for Encrypted<T, C> {
    fn null() -> Value {
        Value::Bytes(None)
    }
}

impl<T: Plaintext, C: ColumnContext> ValueType for Encrypted<T, C> {
    fn try_from(v: Value) -> Result<Self, ValueTypeErr> {
        match v {
            Value::Bytes(Some(bytes)) => Self::from_envelope(bytes).map_err(|error| {
                tracing::debug!(%error, "encrypted value failed to open");
                ValueTypeErr
            }),
            _ => Err(ValueTypeErr),
        }
    }

    fn type_name() -> String {
        format!("Encrypted<{}>", T::TYPE_NAME)
    }

    fn array_type() -> ArrayType {
        ArrayType::Bytes
    }

    /// `bytea` on PostgreSQL, `blob` on SQLite and MySQL/MariaDB. MySQL's `blob` holds 64 KiB:
    /// declare large columns with [`schema::envelope_column_type`](crate::schema::envelope_column_type).
    fn column_type() -> ColumnType {
        ColumnType::Blob
    }
}

impl<T: Plaintext, C: ColumnContext> TryGetable for Encrypted<T, C> {
    fn try_get_by<I: ColIdx>(res: &QueryResult, index: I) -> Result<Self, TryGetError> {
        // NULL comes back as TryGetError::Null, which is what makes Option<Encrypted<..>> work.
        let bytes = <Vec<u8> as TryGetable>::try_get_by(res, index)?;
        Self::from_envelope(bytes).map_err(|e| TryGetError::DbErr(e.into_db_err(T::TYPE_NAME)))
    }
}

impl<T: Plaintext, C: ColumnContext> IntoActiveValue<Encrypted<T, C>> for Encrypted<T, C> {
    fn into_active_value(self) -> ActiveValue<Self> {
        ActiveValue::Set(self)
    }
}
