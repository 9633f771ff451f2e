//! Reading and writing a column during its migration: encrypted-first with plaintext
//! fallback while the backfill runs, encrypted-only after cut-over.

use sea_orm::ConnectionTrait;

use super::Phase;
use super::state;
use crate::context::ColumnContext;
use crate::error::{Error, Result};
use crate::types::{Encrypted, Plaintext};

/// How the application reads a column in the current phase ([`ReadPolicy::of`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadPolicy {
    /// Before dual writing: the plaintext column is the truth.
    PlaintextOnly,
    /// Dual writing, backfill, verify: encrypted if present, else plaintext.
    EncryptedFirst,
    /// After cut-over: encrypted only; a plaintext-only row is an error, not a fallback.
    EncryptedOnly,
}

impl ReadPolicy {
    /// How the application reads a column in `phase`.
    pub const fn of(phase: Phase) -> Self {
        match phase {
            Phase::Added => ReadPolicy::PlaintextOnly,
            Phase::DualWrite | Phase::Backfilling | Phase::Backfilled | Phase::Verified => {
                ReadPolicy::EncryptedFirst
            }
            Phase::CutOver | Phase::Dropped | Phase::Purged => ReadPolicy::EncryptedOnly,
        }
    }

    /// The policy for `table.column` from the state table (`PlaintextOnly` if no migration
    /// was started). Load it at start-up and when operators move the phase.
    pub async fn load<D: ConnectionTrait>(
        db: &D,
        table: &str,
        column: &str,
    ) -> std::result::Result<Self, sea_orm::DbErr> {
        Ok(state::load(db, table, column)
            .await?
            .map_or(ReadPolicy::PlaintextOnly, |s| ReadPolicy::of(s.phase)))
    }

    /// The value of a row, given both columns as read.
    ///
    /// ```
    /// use encrypted_columns::{column_context, Encrypted, Error, Keyring, keyring};
    /// use encrypted_columns::migrate::dual::ReadPolicy;
    ///
    /// column_context!(Email, table = "legacy_patients", column = "email_enc");
    /// keyring::install(Keyring::generate());
    /// let plain = Some("ada@example.org".to_string());
    /// let none: Option<Encrypted<String, Email>> = None;
    /// // Not backfilled yet: falls back to plaintext while dual writing...
    /// assert_eq!(ReadPolicy::EncryptedFirst.read("legacy_patients", "email", plain.clone(), none.as_ref())?, plain);
    /// // ...but never after cut-over.
    /// assert!(matches!(
    ///     ReadPolicy::EncryptedOnly.read("legacy_patients", "email", plain, none.as_ref()),
    ///     Err(Error::FallbackRefused { .. })
    /// ));
    /// # Ok::<(), Error>(())
    /// ```
    pub fn read<T: Plaintext, C: ColumnContext>(
        self,
        table: &str,
        column: &str,
        plaintext: Option<T>,
        encrypted: Option<&Encrypted<T, C>>,
    ) -> Result<Option<T>> {
        match (self, encrypted) {
            (ReadPolicy::PlaintextOnly, _) => Ok(plaintext),
            (_, Some(enc)) => Ok(Some(enc.expose().clone())),
            (ReadPolicy::EncryptedFirst, None) => Ok(plaintext),
            (ReadPolicy::EncryptedOnly, None) if plaintext.is_some() => {
                Err(Error::FallbackRefused {
                    table: table.to_owned(),
                    column: column.to_owned(),
                })
            }
            (ReadPolicy::EncryptedOnly, None) => Ok(None),
        }
    }

    /// What to write into the two columns for `value` (set both in the same UPDATE or
    /// INSERT, so they never disagree).
    pub fn write<T: Plaintext, C: ColumnContext>(
        self,
        value: Option<T>,
    ) -> Result<DualWrite<T, C>> {
        let sealed = |v: &Option<T>| v.clone().map(Encrypted::new).transpose();
        Ok(match self {
            ReadPolicy::PlaintextOnly => DualWrite {
                plaintext: value,
                encrypted: None,
            },
            ReadPolicy::EncryptedFirst => DualWrite {
                encrypted: sealed(&value)?,
                plaintext: value,
            },
            // After cut-over the plaintext column only receives NULL: no new plaintext lands
            // in a column that is about to be dropped.
            ReadPolicy::EncryptedOnly => DualWrite {
                encrypted: sealed(&value)?,
                plaintext: None,
            },
        })
    }
}

/// The two column values of a dual write (no `Debug`: it holds plaintext).
pub struct DualWrite<T: Plaintext, C: ColumnContext> {
    /// For the plaintext column.
    pub plaintext: Option<T>,
    /// For the encrypted column.
    pub encrypted: Option<Encrypted<T, C>>,
}
