//! Encrypting live plaintext columns without downtime, and re-keying encrypted ones.
//!
//! The path for each column, recorded in a state table we own ([`state`]) so that every step
//! is checked and resumable:
//!
//! 1. **added** — a migration adds the encrypted companion (and blind-index) columns
//!    ([`schema`] helpers), then [`state::start`].
//! 2. **dual_write** — every writer fills plaintext and encrypted columns together and reads
//!    encrypted-first ([`dual`]); [`state::transition`] to `DualWrite` once all are deployed.
//! 3. **backfilling → backfilled** — [`backfill`] seals the remaining rows in keyset-paginated
//!    batches, one transaction each, with the batch's cursor saved in the same transaction, so
//!    a crash resumes where it stopped. Every UPDATE is guarded (`encrypted IS NULL AND
//!    plaintext = the value read`): a row the application changed meanwhile is left to the
//!    application's own dual write, never overwritten with stale data.
//! 4. **verified** — [`verify`] opens every row and compares it with the plaintext (and every
//!    blind index with its recomputation), reporting the ids of mismatches.
//! 5. **cut_over** — reads become encrypted-only, failing closed ([`dual::ReadPolicy`]).
//! 6. **dropped** — a migration drops the plaintext column ([`schema`]).
//!
//! [`rotate`] re-encrypts rows sealed with older keys (and recomputes blind indexes of older
//! versions) with the same batching, resume and compare-and-set guard.

mod backfill;
pub mod dual;
pub mod phase;
mod rotate;
#[cfg(feature = "migration")]
pub mod schema;
mod sql;
pub mod state;
mod verify;

use std::marker::PhantomData;
use std::time::Duration;

use sea_orm::{TryGetable, Value};

use crate::blind_index::{BlindIndex, IndexArg};
use crate::context::ColumnContext;
use crate::types::Plaintext;

pub use backfill::{BackfillReport, backfill};
pub use phase::Phase;
pub use rotate::{RotateColumn, RotationReport, index_key_usage, key_usage, rotate};
pub use state::MigrationState;
pub use verify::{VerifyReport, verify};

/// One plaintext column to encrypt: where it is, where its envelope goes, and which blind
/// indexes to fill from it. `T` is the plaintext type (as read from the plaintext column and
/// sealed), `C` the column-context marker of the encrypted field (e.g. the entity's
/// `ctx::Email`).
///
/// ```
/// use encrypted_columns::{column_context, migrate::EncryptColumn};
///
/// column_context!(pub LegacyEmail, table = "legacy_patients", column = "email");
/// let spec = EncryptColumn::<String, LegacyEmail>::new("legacy_patients", "id", "email", "email_enc");
/// assert_eq!(spec.plaintext(), "email");
/// ```
pub struct EncryptColumn<T, C> {
    table: String,
    primary_key: String,
    plaintext: String,
    encrypted: String,
    indexes: Vec<(String, &'static BlindIndex)>,
    _types: PhantomData<fn() -> (T, C)>,
}

impl<T, C> Clone for EncryptColumn<T, C> {
    fn clone(&self) -> Self {
        EncryptColumn {
            table: self.table.clone(),
            primary_key: self.primary_key.clone(),
            plaintext: self.plaintext.clone(),
            encrypted: self.encrypted.clone(),
            indexes: self.indexes.clone(),
            _types: PhantomData,
        }
    }
}

impl<T, C> EncryptColumn<T, C>
where
    T: Plaintext + TryGetable + Into<Value> + IndexArg<T>,
    C: ColumnContext,
{
    /// `table.plaintext` (integer primary key `primary_key`) is sealed into `table.encrypted`.
    pub fn new(table: &str, primary_key: &str, plaintext: &str, encrypted: &str) -> Self {
        EncryptColumn {
            table: table.to_owned(),
            primary_key: primary_key.to_owned(),
            plaintext: plaintext.to_owned(),
            encrypted: encrypted.to_owned(),
            indexes: Vec::new(),
            _types: PhantomData,
        }
    }

    /// Also fills blind-index column `column` from this field (a single-field index, e.g. the
    /// entity's `Entity::email_bidx_index()`).
    pub fn with_index(mut self, column: &str, index: &'static BlindIndex) -> Self {
        self.indexes.push((column.to_owned(), index));
        self
    }

    /// The physical table.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The plaintext column.
    pub fn plaintext(&self) -> &str {
        &self.plaintext
    }

    /// The encrypted column.
    pub fn encrypted(&self) -> &str {
        &self.encrypted
    }
}

/// How a backfill, verify or rotation run proceeds.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Rows per batch (one transaction each). Default 500.
    pub batch_size: u64,
    /// Pause between batches, to leave the database room for the application.
    pub throttle: Option<Duration>,
    /// Stop after this many batches (the run resumes from its cursor next time).
    pub max_batches: Option<u64>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            batch_size: 500,
            throttle: None,
            max_batches: None,
        }
    }
}

/// Progress of a running backfill or rotation, passed to the caller's callback after each
/// committed batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Rows sealed (or resealed) by this run so far.
    pub done: u64,
    /// Rows the run found changed by the application and left alone.
    pub skipped: u64,
    /// Rows that needed work when the run started (an estimate: the application writes on).
    pub total: u64,
    /// The last primary key covered.
    pub cursor: i64,
}
