//! The one error type of the crate, and its conversion into SeaORM's [`DbErr`].
//!
//! Every message here is safe to log: none carries plaintext, key bytes or anything derived
//! from them. Messages name what was wrong and, where the caller can act, how to fix it.

use std::sync::Arc;

use sea_orm::DbErr;

use crate::envelope::EnvelopeError;
use crate::key_id::KeyId;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while loading keys, sealing or opening a value.
///
/// When an encrypted column fails to decode inside SeaORM, the [`DbErr`] you receive is a
/// `DbErr::TryIntoErr` whose `source` is this type; [`Error::from_db_err`] digs it out:
///
/// ```
/// # use encrypted_columns::Error;
/// # fn handle(err: sea_orm::DbErr) {
/// match Error::from_db_err(&err) {
///     Some(Error::UnknownKeyId { .. }) => eprintln!("a key is missing from the keyring"),
///     Some(other) => eprintln!("cannot decrypt: {other}"),
///     None => eprintln!("database error: {err}"),
/// }
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No keyring was installed for this process or task.
    #[error(
        "no keyring is installed: call `encrypted_columns::keyring::install(Keyring::from_env()?)` \
         once at start-up (or wrap the task in `keyring::scope`)"
    )]
    NoKeyring,

    /// [`keyring::require_scope`](crate::keyring::require_scope) was called, and a value was
    /// sealed, opened or looked up outside any `keyring::scope`, e.g. in a task started with
    /// `tokio::spawn`, which does not carry its parent's scope. Nothing was sealed or read.
    #[error(
        "no keyring scope here, and `keyring::require_scope()` forbids falling back to the \
         installed keyring: run this inside `encrypted_columns::keyring::scope(keyring, …)` (or \
         `scope_sync`), and start tasks with `keyring::spawn_scoped` (or wrap them in \
         `keyring::in_current_scope`) instead of `tokio::spawn`, which does not carry a scope"
    )]
    ScopeRequired,

    /// An envelope names a key id this keyring does not hold.
    #[error(
        "key id {id} is not in the keyring: the value was sealed with key {id}; add that key \
         (it may stay decrypt-only) to ENCRYPTED_COLUMNS_KEYS"
    )]
    UnknownKeyId {
        /// The key id recorded in the envelope.
        id: KeyId,
    },

    /// Key material or key configuration is unusable. `origin` names where it came from
    /// (an environment variable or an API call); `problem` says what is wrong.
    #[error("{origin}: {problem}")]
    KeyConfig {
        /// Where the bad configuration came from, e.g. `ENCRYPTED_COLUMNS_KEYS`.
        origin: String,
        /// What is wrong and how to fix it. Never contains key material.
        problem: String,
    },

    /// The stored bytes are not a well-formed envelope (truncated, unknown version, …).
    #[error("{table}.{column}: malformed envelope: {problem}")]
    Malformed {
        /// Logical table of the column being opened.
        table: &'static str,
        /// Logical column being opened.
        column: &'static str,
        /// What is wrong with the bytes.
        problem: EnvelopeError,
    },

    /// Authentication failed: the envelope was tampered with, sealed under a different key
    /// with the same id, or copied from another column.
    #[error(
        "{table}.{column}: cannot open value sealed with key {key_id}: authentication failed \
         (tampered bytes, a different key under that id, or a value copied from another column)"
    )]
    Decrypt {
        /// Logical table of the column being opened.
        table: &'static str,
        /// Logical column being opened.
        column: &'static str,
        /// Key id recorded in the envelope.
        key_id: KeyId,
    },

    /// A logical table or column name cannot be bound into an envelope.
    #[error("invalid column context {table:?}.{column:?}: {problem}")]
    InvalidContext {
        /// Logical table name given.
        table: String,
        /// Logical column name given.
        column: String,
        /// What is wrong.
        problem: &'static str,
    },

    /// The plaintext could not be encoded to bytes (e.g. a JSON value serde refuses).
    #[error("cannot encode {type_name} plaintext: {problem}")]
    Encode {
        /// The plaintext type.
        type_name: &'static str,
        /// What went wrong; never contains plaintext.
        problem: String,
    },

    /// The envelope authenticated but its plaintext is not a valid `type_name` (the column's
    /// Rust type was changed without migrating the data).
    #[error("{table}.{column}: decrypted value is not a valid {type_name}: {problem}")]
    Decode {
        /// Logical table of the column being opened.
        table: &'static str,
        /// Logical column being opened.
        column: &'static str,
        /// The plaintext type expected.
        type_name: &'static str,
        /// What went wrong; never contains plaintext.
        problem: String,
    },

    /// A blind index is needed but no blind-index key is loaded.
    #[error(
        "no blind-index key is loaded: set ENCRYPTED_COLUMNS_BLIND_INDEX_KEYS to \
         `<id>:<base64 of 32 random bytes>` (a key separate from ENCRYPTED_COLUMNS_KEYS; \
         `clinic keys generate` prints one)"
    )]
    NoBlindIndexKey,

    /// A blind index was defined or fed wrongly (bad width, wrong number of inputs, a
    /// compound index with some of its fields missing from an `ActiveModel`, …).
    #[error("{table}.{index}: {problem}")]
    BlindIndex {
        /// Logical table of the index.
        table: &'static str,
        /// The index name.
        index: &'static str,
        /// What is wrong and how to fix it; never contains plaintext.
        problem: String,
    },

    /// A filtered blind-index lookup (`find_all_by_<index>_where` and friends) matched a row
    /// sealed under a key that the keyring in force does not hold, so it could neither return
    /// the row nor rule it out. Either the lookup's filter lets through rows of another
    /// tenant, or this tenant's keyring lacks one of its own keys (a removed or not yet
    /// deployed key). Reporting "no match" instead could hide a row of this tenant; naming the
    /// key id, as [`Error::UnknownKeyId`] does, could reveal that another tenant holds the
    /// value. So this error names neither the key nor the row.
    #[error(
        "{table}.{index}: a row matched by this lookup is sealed under a key that the keyring \
         in force does not hold; check that the lookup's filter restricts it to this tenant's \
         rows and that this tenant's keyring holds all of its keys"
    )]
    LookupKeyMissing {
        /// Logical table of the index.
        table: &'static str,
        /// The blind index looked up.
        index: &'static str,
    },

    /// An insert or update was refused by the UNIQUE constraint on a blind index: another
    /// row already holds the same (normalized) value. Nothing was written.
    #[error(
        "{table}.{index}: another row already has this value (unique blind index), so nothing \
         was written"
    )]
    Duplicate {
        /// Logical table of the index.
        table: &'static str,
        /// The unique blind index that refused the row.
        index: &'static str,
    },

    /// A column migration was asked to move to a phase it cannot reach from where it is (or
    /// was never started). Nothing was changed.
    #[error("{table}.{column}: cannot move the migration from `{from}` to `{to}`: {problem}")]
    Phase {
        /// Physical table.
        table: String,
        /// Plaintext column being migrated.
        column: String,
        /// The phase it is in (`none` if not started).
        from: &'static str,
        /// The phase asked for.
        to: &'static str,
        /// Why not, and what to run first.
        problem: &'static str,
    },

    /// After cut-over a row has no encrypted value but still has plaintext: reading the
    /// plaintext would silently bypass encryption, so the read fails instead.
    #[error(
        "{table}.{column}: the row has no encrypted value after cut-over; refusing to fall back \
         to plaintext (an instance that does not write envelopes wrote it: run the migration's \
         repair, which seals it from the plaintext)"
    )]
    FallbackRefused {
        /// Physical table.
        table: String,
        /// Plaintext column.
        column: String,
    },

    /// A migration step that would lose or hide data was refused, because at the moment it
    /// was to act some rows were not safe: plaintext that no envelope carries, or an envelope
    /// that disagrees with its plaintext. Nothing was changed by the step.
    #[error(
        "{table}: {step} refused: {count} row(s) {problem} (ids: {}); {advice}",
        list_ids(.ids, *.count)
    )]
    Refused {
        /// Physical table.
        table: String,
        /// The step refused (`cut-over`, `drop`).
        step: &'static str,
        /// Rows in the way.
        count: u64,
        /// The first of their primary keys (up to 1,000).
        ids: Vec<i64>,
        /// What is wrong with them.
        problem: String,
        /// What to run to clear the way.
        advice: &'static str,
    },

    /// Rows whose plaintexts normalize to the same value under a UNIQUE blind index: the
    /// backfill cannot give both an index value, so it refused before writing anything.
    #[error(
        "{table}.{column}: {count} row(s) share a normalized value under the unique blind \
         index {index} (ids: {}); make the values distinct (or merge the duplicate rows) in the \
         plaintext column, then run the backfill again",
        list_ids(.ids, *.count)
    )]
    DuplicateValues {
        /// Physical table.
        table: String,
        /// The plaintext column.
        column: String,
        /// The unique blind-index column.
        index: String,
        /// Rows involved in a duplicate group.
        count: u64,
        /// Their primary keys, grouped by shared value (up to 1,000).
        ids: Vec<i64>,
    },

    /// A migration or rotation run was configured wrongly (unknown table or column, a
    /// primary key that is not an integer, …).
    #[error("{table}.{column}: {problem}")]
    Migration {
        /// Physical table.
        table: String,
        /// Column concerned.
        column: String,
        /// What is wrong and how to fix it.
        problem: String,
    },
}

/// Lists at most 20 ids, and says how many more there are.
pub(crate) fn list_ids(ids: &[i64], count: u64) -> String {
    let shown: Vec<String> = ids.iter().take(20).map(i64::to_string).collect();
    let more = count.saturating_sub(shown.len() as u64);
    if more > 0 {
        format!("{} and {more} more", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

impl Error {
    /// Finds this crate's error inside a [`DbErr`] returned by SeaORM, if that is what failed.
    pub fn from_db_err(err: &DbErr) -> Option<&Error> {
        match err {
            DbErr::TryIntoErr { source, .. } => source.downcast_ref::<Error>(),
            _ => None,
        }
    }

    /// Wraps this error as the `DbErr` SeaORM expects from a failed column decode.
    pub(crate) fn into_db_err(self, into: &'static str) -> DbErr {
        DbErr::TryIntoErr {
            from: "encrypted envelope",
            into,
            source: Arc::new(self),
        }
    }

    pub(crate) fn key_config(origin: impl Into<String>, problem: impl Into<String>) -> Self {
        Error::KeyConfig {
            origin: origin.into(),
            problem: problem.into(),
        }
    }
}

impl From<Error> for DbErr {
    fn from(err: Error) -> Self {
        err.into_db_err("plaintext")
    }
}
