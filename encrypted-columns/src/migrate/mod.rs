//! Encrypting live plaintext columns without downtime, and re-keying encrypted ones.
//!
//! The path for each column, recorded in a state table we own ([`state`]) so that every step
//! is checked and resumable. A table's columns are described together by an
//! [`EncryptTable`] plan and move through each step together (all or none); a step leaves
//! alone the columns already past it, so re-running any step after an interruption makes
//! progress.
//!
//! 1. **added**: a migration adds the encrypted companion (and blind-index) columns
//!    ([`schema`] helpers), then [`state::start`].
//! 2. **dual_write**: every writer fills plaintext and encrypted columns together and reads
//!    encrypted-first ([`dual`]); [`dual_write`] once all are deployed.
//! 3. **backfilling → backfilled**: [`backfill`] seals every value that has no envelope, all
//!    of a row's columns in one statement per batch, shared by any number of workers through
//!    leased chunk claims. Every write is guarded (plaintext and envelope still as read): a
//!    value the application changed meanwhile is never overwritten with stale data. UNIQUE
//!    blind indexes are checked for colliding plaintexts before anything is written.
//! 4. **verified**: [`verify`] opens every value and compares it with its plaintext (and
//!    every blind index with its recomputation). A failing verify moves `verified` columns
//!    back to `backfilled`. [`repair`] re-seals exactly what verify reports (rows an old
//!    instance wrote plaintext-only during a rolling deploy); verify again.
//! 5. **cut_over**: [`cut_over`] re-checks every row with writers held off, then reads become
//!    encrypted-only, failing closed ([`dual::ReadPolicy`]).
//! 6. **dropped**: [`drop_plaintext`] re-checks, under an exclusive lock and in the step that
//!    drops, that no row holds plaintext without a matching envelope, then drops the
//!    plaintext columns.
//! 7. **purged**: [`purge`] rewrites the table so the dropped bytes leave the database files.
//!
//! [`rotate`] re-encrypts rows sealed with older keys (and recomputes blind indexes of older
//! versions) with batching, resume and a compare-and-set guard.

mod backfill;
mod batch;
mod cutover;
mod dropping;
pub mod dual;
mod lock;
pub mod phase;
mod plan;
mod precheck;
mod repair;
mod retry;
mod rotate;
#[cfg(feature = "migration")]
pub mod schema;
mod sql;
mod stage;
pub mod state;
mod verify;
mod work;
mod worker;

use std::marker::PhantomData;
use std::time::Duration;

use sea_orm::sea_query::Nullable;
use sea_orm::{ConnectionTrait, DbErr, TransactionTrait, TryGetable, Value};

use crate::blind_index::{BlindIndex, IndexArg};
use crate::context::ColumnContext;
use crate::types::Plaintext;

pub use backfill::{BackfillReport, backfill};
pub use cutover::{CutOverReport, cut_over};
pub use dropping::{DropReport, drop_plaintext, purge};
pub use phase::Phase;
pub use plan::EncryptTable;
pub use repair::{RepairReport, repair};
pub use rotate::{
    RotateColumn, RotationReport, index_key_usage, key_usage, key_usage_where, rotate,
};
pub use state::MigrationState;
pub use verify::{ColumnReport, MAX_LISTED_IDS, VerifyReport, verify};
pub use work::{CLAIMS_TABLE, WORK_TABLE};

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
    T: Plaintext + TryGetable + Into<Value> + IndexArg<T> + Nullable,
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

/// The largest batch a step accepts: more rows per transaction only hold locks longer.
pub const MAX_BATCH_SIZE: u64 = 10_000;

/// How a backfill, repair, verify or rotation run proceeds.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Rows per batch (one transaction each), 1 to [`MAX_BATCH_SIZE`]. Default 500.
    pub batch_size: u64,
    /// Pause between batches, to leave the database room for the application.
    pub throttle: Option<Duration>,
    /// Stop after this many batches (the run resumes from its cursor next time).
    pub max_batches: Option<u64>,
    /// How long a worker's claim on a chunk holds before another worker may take the chunk
    /// over (backfill and repair). Longer than any batch takes; it is also how long a
    /// restarted run waits for the chunk a killed worker held. Each worker reads its own
    /// clock: machines whose clocks disagree by a good part of the lease may take over each
    /// other's live chunks, which only duplicates work (every write is guarded and counted
    /// once). Default 30 s.
    pub lease: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            batch_size: 500,
            throttle: None,
            max_batches: None,
            lease: Duration::from_secs(30),
        }
    }
}

impl RunOptions {
    /// `batch_size`, refused outside 1..=[`MAX_BATCH_SIZE`].
    pub(crate) fn checked_batch(&self) -> Result<u64, DbErr> {
        if (1..=MAX_BATCH_SIZE).contains(&self.batch_size) && !self.lease.is_zero() {
            Ok(self.batch_size)
        } else {
            Err(crate::Error::Migration {
                table: "-".into(),
                column: "-".into(),
                problem: format!(
                    "batch size {} is outside 1..={MAX_BATCH_SIZE}, or the lease is zero",
                    self.batch_size
                ),
            }
            .into())
        }
    }
}

/// Moves every `added` column of the plan to `dual_write`, together: call it once every
/// application instance writes both columns ([`dual::ReadPolicy::write`]). Columns already
/// past it are left alone. Returns the columns it moved.
pub async fn dual_write<P, D>(db: &D, plan: P) -> Result<Vec<String>, DbErr>
where
    P: Into<EncryptTable>,
    D: ConnectionTrait + TransactionTrait,
{
    let plan = plan.into();
    let later = [
        Phase::Backfilling,
        Phase::Backfilled,
        Phase::Verified,
        Phase::CutOver,
        Phase::Dropped,
        Phase::Purged,
    ];
    let st = stage::stage(
        db,
        &plan,
        &[Phase::Added, Phase::DualWrite],
        &later,
        Phase::DualWrite,
    )
    .await?;
    let moves = st.in_phase(Phase::Added);
    let columns: Vec<&str> = moves.iter().map(|(c, _)| c.as_str()).collect();
    state::move_still_in(
        db,
        &plan.table,
        &columns,
        Phase::Added,
        Phase::DualWrite,
        None,
    )
    .await
}

/// Progress of a running backfill, repair or rotation, passed to the caller's callback after
/// each batch this worker committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Rows this worker sealed (or resealed) something in so far.
    pub done: u64,
    /// Values this worker found changed by the application and left alone.
    pub skipped: u64,
    /// Rows that needed work when the run started, for all workers together (an estimate:
    /// the application writes on, and repair visits every row).
    pub total: u64,
    /// The last primary key of the batch just committed.
    pub cursor: i64,
}
