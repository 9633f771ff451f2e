//! The backfill: seal every value that has plaintext and no envelope, all of a row's columns
//! in one pass, by any number of cooperating workers.

use sea_orm::sea_query::{Condition, Expr, ExprTrait};
use sea_orm::{ConnectionTrait, DbErr, TransactionTrait};
use tracing::{Instrument, info, info_span};

use super::plan::{EncryptTable, Inspect};
use super::precheck::unique_duplicates;
use super::retry::retrying;
use super::sql::{a, check_columns};
use super::stage::stage;
use super::worker::Worker;
use super::{Phase, Progress, RunOptions, state};
use crate::keyring;

/// Passes over the table one worker makes before it finishes with values still missing
/// (written plaintext-only behind the backfill by an instance that does not dual-write;
/// verify reports them and [`repair`](super::repair) seals them).
const MAX_PASSES: u32 = 3;

/// What one backfill worker did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackfillReport {
    /// Values (row × column) this worker sealed.
    pub sealed: u64,
    /// Rows in which this worker sealed at least one value.
    pub rows: u64,
    /// Values this worker found unsealed but left alone because the application changed
    /// them between the read and the write (they got the application's own dual write).
    pub skipped: u64,
    /// Chunks (batches) this worker committed.
    pub batches: u64,
    /// Of those, chunks taken over from a worker whose lease had expired.
    pub taken_over: u64,
    /// Whether the backfill is finished (by this worker or another): the columns are in
    /// phase `backfilled`. `false` when `max_batches` stopped this worker first.
    pub finished: bool,
    /// When finished by this worker: rows that still had a value without an envelope after
    /// its last pass (written plaintext-only behind the backfill; verify reports them and
    /// repair seals them).
    pub remaining: u64,
    /// Values sealed by this worker, per column, in plan order.
    pub by_column: Vec<(String, u64)>,
    /// Columns left alone because they were already past the backfill.
    pub already_done: Vec<String>,
}

/// Seals every value of the plan's columns that has plaintext and no envelope.
///
/// Columns in `dual_write` or `backfilling` take part (moving to `backfilling` together);
/// columns already past the backfill are left alone (reported in `already_done`); a column
/// still in `added` refuses the step. Before anything is written, every UNIQUE blind index is
/// checked for plaintexts that would collide ([`Error::DuplicateValues`](crate::Error)).
///
/// Any number of workers may run this at once, on any machine: they share the table in
/// chunks of `batch_size` rows, claimed with a lease ([`RunOptions::lease`]); a worker that
/// dies leaves its chunk to the others once the lease runs out. Each chunk is one transaction
/// holding its writes and the claim's completion, so a crash (even `kill -9`) loses at most
/// the chunk in flight. Every value is written under a guard (plaintext and envelope still as
/// read), so a value the application changes meanwhile is never overwritten with stale data.
/// The worker that completes the last pass moves the columns to `backfilled`. `progress`
/// runs after each chunk this worker commits.
pub async fn backfill<P, D>(
    db: &D,
    plan: P,
    options: &RunOptions,
    mut progress: impl FnMut(&Progress),
) -> Result<BackfillReport, DbErr>
where
    P: Into<EncryptTable>,
    D: ConnectionTrait + TransactionTrait,
{
    let plan = plan.into();
    let span = info_span!("backfill", table = %plan.table);
    run(db, &plan, options, &mut progress)
        .instrument(span)
        .await
}

/// `(enc IS NULL AND plain IS NOT NULL)` for any column of the plan.
fn unsealed(plan: &EncryptTable) -> Condition {
    plan.columns.iter().fold(Condition::any(), |cond, c| {
        cond.add(
            Condition::all()
                .add(Expr::col(a(c.encrypted())).is_null())
                .add(Expr::col(a(c.plaintext())).is_not_null()),
        )
    })
}

async fn run<D>(
    db: &D,
    plan: &EncryptTable,
    options: &RunOptions,
    progress: &mut dyn FnMut(&Progress),
) -> Result<BackfillReport, DbErr>
where
    D: ConnectionTrait + TransactionTrait,
{
    let batch_size = options.checked_batch()?;
    let keyring = keyring::current()?;
    plan.check()?;
    plan.check_keys(&keyring)?;
    let stage = stage(
        db,
        plan,
        &[Phase::DualWrite, Phase::Backfilling],
        &[
            Phase::Backfilled,
            Phase::Verified,
            Phase::CutOver,
            Phase::Dropped,
            Phase::Purged,
        ],
        Phase::Backfilling,
    )
    .await?;
    let mut report = BackfillReport {
        already_done: stage.past.iter().map(|(c, _)| c.clone()).collect(),
        ..BackfillReport::default()
    };
    let plan = &stage.plan;
    if plan.columns.is_empty() {
        info!("every column is already past the backfill");
        report.finished = true;
        return Ok(report);
    }
    check_columns(db, &plan.table, &plan.physical_columns()).await?;
    // Before any write: values that would collide under a UNIQUE blind index.
    unique_duplicates(db, &keyring, plan, batch_size).await?;
    start(db, plan).await?;

    let worker = Worker::new(
        plan,
        "backfill",
        options,
        unsealed(plan),
        vec![Inspect::Backfill; plan.columns.len()],
        MAX_PASSES,
    );
    let table = plan.table.clone();
    let tally = worker
        .run(db, &keyring, options, progress, async |txn, remaining| {
            // Read inside the job's lock: the columns this run moved to `backfilling` (or
            // another worker's run did) finish together.
            let columns = plan.plaintext_columns();
            let note = format!("backfill finished; {remaining} row(s) still with unsealed values");
            state::move_still_in(
                txn,
                &table,
                &columns,
                Phase::Backfilling,
                Phase::Backfilled,
                Some(&note),
            )
            .await
            .map(|_| ())
        })
        .await?;
    report.sealed = tally.cells.iter().sum();
    report.skipped = tally.refused.iter().sum();
    report.rows = tally.rows;
    report.batches = tally.batches;
    report.taken_over = tally.taken_over;
    report.finished = tally.finished;
    report.remaining = tally.remaining.unwrap_or(0);
    report.by_column = tally.by_column(plan);
    info!(
        sealed = report.sealed,
        skipped = report.skipped,
        finished = report.finished,
        "backfill worker done"
    );
    Ok(report)
}

/// Moves the plan's `dual_write` columns to `backfilling`, together; columns another worker
/// moved first are fine.
async fn start<D: ConnectionTrait + TransactionTrait>(
    db: &D,
    plan: &EncryptTable,
) -> Result<(), DbErr> {
    let columns = plan.plaintext_columns();
    retrying("start the backfill", async || {
        state::move_still_in(
            db,
            &plan.table,
            &columns,
            Phase::DualWrite,
            Phase::Backfilling,
            None,
        )
        .await
        .map(|_| ())
    })
    .await
}
