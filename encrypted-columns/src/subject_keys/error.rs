//! Why a subject-key operation failed. Every variant names rows, key ids, providers and
//! tables; none holds key bytes (wrapped or not) or plaintext.

use sea_orm::DbErr;

use crate::kek::KekError;
use crate::keyring::KeyId;

/// A subject-key failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubjectKeyError {
    /// The key-id base leaves no room for any row.
    #[error("subject key id base {base} leaves no key id for any row")]
    InvalidBase {
        /// The refused base.
        base: u32,
    },
    /// A row number no subject key can have (zero, negative, or past the id range): a
    /// damaged or tampered reference, refused rather than mapped onto another subject's key.
    #[error(
        "subject key row {row} is out of range (rows are 1 to {max}); the reference is damaged"
    )]
    InvalidRow {
        /// The refused row.
        row: i64,
        /// The largest valid row.
        max: i64,
    },
    /// The subject-key table could not be read or written.
    #[error("subject key table {table}: {source}")]
    Database {
        /// The table.
        table: String,
        /// The database error.
        #[source]
        source: DbErr,
    },
    /// The row names a provider (and KEK) this `SubjectKeys` was not given.
    #[error(
        "subject key row {row} is wrapped by provider {provider} ({kek_id}), which is not \
         configured here"
    )]
    NoKek {
        /// The row.
        row: i64,
        /// The provider stored in the row.
        provider: String,
        /// The KEK id stored in the row (`any` when NULL).
        kek_id: String,
    },
    /// The provider failed: unreachable, refused, or the wrapped key did not unwrap (damaged,
    /// tampered, another KEK, bound to another row).
    #[error("subject key row {row}: {source}")]
    Kek {
        /// The row.
        row: i64,
        /// The provider's error, which names the provider and KEK.
        #[source]
        source: KekError,
    },
    /// The key unwrapped but its check value is not the stored one: the row's wrapped key was
    /// swapped with another row's, or the check value was altered.
    #[error(
        "subject key row {row}: the unwrapped key does not match the row's check value (the \
         wrapped key belongs to another row, or the row was tampered with)"
    )]
    CheckValueMismatch {
        /// The row.
        row: i64,
    },
    /// A stored field has an impossible shape.
    #[error("subject key row {row} is damaged: {problem}")]
    Damaged {
        /// The row.
        row: i64,
        /// What is wrong (no key material).
        problem: String,
    },
    /// The row does not exist (the subject was erased, or never had a key).
    #[error("subject key row {row} does not exist: the subject was erased or never had a key")]
    Missing {
        /// The row.
        row: i64,
    },
    /// An envelope is not bound to the subject it is read for.
    #[error(
        "subject key row {row}: the value is {found}, not sealed with this subject's key \
         {expected}: it belongs to another record or was tampered with"
    )]
    Unbound {
        /// The row whose key the envelope should carry.
        row: i64,
        /// That row's key id.
        expected: KeyId,
        /// What the envelope carries, in words.
        found: String,
    },
    /// Destroying a row found other rows holding the same key (same wrapped bytes or check
    /// value): deleting one row would not shred the key. Nothing was deleted.
    #[error(
        "refusing to destroy subject key row {row}: {} other row(s) hold a copy of its key \
         (ids {}); nothing was deleted",
        copies.len(),
        copies.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")
    )]
    CopiesRemain {
        /// The row asked for.
        row: i64,
        /// Rows holding a copy.
        copies: Vec<i64>,
    },
    /// After the delete, the row still exists: the destroy was rolled back.
    #[error(
        "destroying subject key row {row} deleted {deleted} row(s) and {remaining} remain; rolled back"
    )]
    NotDestroyed {
        /// The row.
        row: i64,
        /// Rows the delete reported.
        deleted: u64,
        /// Rows with this id still present.
        remaining: u64,
    },
    /// A subject key could not be added to the reading keyring (its id is already in the base
    /// keyring: the application's key ids must stay at or below the id base).
    #[error("subject key row {row}: {source}")]
    Keyring {
        /// The row.
        row: i64,
        /// The keyring's error.
        #[source]
        source: crate::Error,
    },
}

impl SubjectKeyError {
    /// The subject-key row the error is about, if it is about one.
    pub fn row(&self) -> Option<i64> {
        match self {
            SubjectKeyError::InvalidRow { row, .. }
            | SubjectKeyError::NoKek { row, .. }
            | SubjectKeyError::Kek { row, .. }
            | SubjectKeyError::CheckValueMismatch { row }
            | SubjectKeyError::Damaged { row, .. }
            | SubjectKeyError::Missing { row }
            | SubjectKeyError::Unbound { row, .. }
            | SubjectKeyError::CopiesRemain { row, .. }
            | SubjectKeyError::NotDestroyed { row, .. }
            | SubjectKeyError::Keyring { row, .. } => Some(*row),
            SubjectKeyError::InvalidBase { .. } | SubjectKeyError::Database { .. } => None,
        }
    }

    pub(super) fn db(table: &str) -> impl FnOnce(DbErr) -> SubjectKeyError + '_ {
        move |source| SubjectKeyError::Database {
            table: table.to_owned(),
            source,
        }
    }
}
