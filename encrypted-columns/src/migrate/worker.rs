//! One worker's loop over a table-wide job (backfill or repair): claim a chunk, read it,
//! judge and seal its cells, write them and complete the claim in one transaction; at the
//! end of a pass, start another or finish the job.

use sea_orm::sea_query::{Condition, Expr, ExprTrait, Func, Order, Query};
use sea_orm::{ConnectionTrait, DbErr, SqlErr, TransactionSession, TransactionTrait};
use tracing::debug;

use super::batch::{self, RowCells, Written};
use super::plan::{EncryptTable, Inspect};
use super::precheck::unique_duplicates;
use super::retry::retrying;
use super::sql::{a, pk_of};
use super::work::{Claim, Job, Next, owner_name};
use super::{Progress, RunOptions, state};
use crate::keyring::Keyring;

/// A job as one worker runs it.
pub(crate) struct Worker<'a> {
    pub plan: &'a EncryptTable,
    pub job: Job,
    /// Rows the job visits.
    pub needs: Condition,
    /// How each column's cells are judged, in plan order.
    pub how: Vec<Inspect>,
    /// Passes this worker makes before finishing with work left.
    pub max_passes: u32,
}

/// What one worker did.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    /// Cells written, per column.
    pub cells: Vec<u64>,
    /// Cells the guard refused, per column.
    pub refused: Vec<u64>,
    pub rows: u64,
    pub batches: u64,
    pub taken_over: u64,
    /// The job is finished (by anyone).
    pub finished: bool,
    /// This worker finished it: rows still matching `needs` then.
    pub remaining: Option<u64>,
}

impl<'a> Worker<'a> {
    /// A worker of job `job` (`backfill`, `repair`) over `plan`, visiting the rows that match
    /// `needs` and judging each column's cells as `how` says.
    pub fn new(
        plan: &'a EncryptTable,
        job: &'static str,
        options: &RunOptions,
        needs: Condition,
        how: Vec<Inspect>,
        max_passes: u32,
    ) -> Self {
        Worker {
            plan,
            job: Job {
                table: plan.table.clone(),
                job,
                owner: owner_name(),
                lease: options.lease,
                columns: plan.plaintext_columns().join(","),
            },
            needs,
            how,
            max_passes,
        }
    }

    /// Runs until the job is finished or `max_batches` chunks are done. `finish` runs in
    /// the transaction that marks the job finished, with the rows still matching `needs`.
    pub async fn run<D, F>(
        &self,
        db: &D,
        keyring: &Keyring,
        options: &RunOptions,
        progress: &mut dyn FnMut(&Progress),
        finish: F,
    ) -> Result<Tally, DbErr>
    where
        D: ConnectionTrait + TransactionTrait,
        F: AsyncFn(&D::Transaction, u64) -> Result<(), DbErr>,
    {
        let batch_size = options.checked_batch()?;
        let columns = self.plan.columns.len();
        let mut tally = Tally {
            cells: vec![0; columns],
            refused: vec![0; columns],
            ..Tally::default()
        };
        let total = count(db, self.plan, &self.needs).await?;
        self.job.join(db, true).await?;
        let mut passes = 0u32;
        let mut done = 0u64;
        loop {
            if options.max_batches.is_some_and(|max| tally.batches >= max) {
                return Ok(tally);
            }
            match self
                .job
                .next(db, &self.plan.primary_key, &self.needs, batch_size)
                .await?
            {
                Next::Chunk(claim) => {
                    let written = self.chunk(db, keyring, &claim).await?;
                    tally.batches += 1;
                    tally.taken_over += u64::from(claim.taken_over);
                    tally.rows += written.rows;
                    for (sum, n) in tally.cells.iter_mut().zip(&written.cells) {
                        *sum += n;
                    }
                    for (sum, n) in tally.refused.iter_mut().zip(&written.refused) {
                        *sum += n;
                    }
                    done += written.rows;
                    debug!(
                        batch = tally.batches,
                        rows = written.rows,
                        lo = claim.lo,
                        hi = claim.hi,
                        "chunk committed"
                    );
                    progress(&Progress {
                        done,
                        skipped: tally.refused.iter().sum(),
                        total,
                        cursor: claim.hi,
                    });
                    if let Some(pause) = options.throttle {
                        tokio::time::sleep(pause).await;
                    }
                }
                Next::Wait(pause) => tokio::time::sleep(pause).await,
                Next::PassDone(pass) => {
                    passes += 1;
                    let remaining = count(db, self.plan, &self.needs).await?;
                    if remaining > 0 && passes < self.max_passes {
                        self.job.next_pass(db, pass).await?;
                        continue;
                    }
                    let finished = self
                        .job
                        .finish(db, pass, async |txn| finish(txn, remaining).await)
                        .await?;
                    if finished {
                        tally.remaining = Some(remaining);
                    }
                    tally.finished = true;
                    return Ok(tally);
                }
                Next::Finished => {
                    tally.finished = true;
                    return Ok(tally);
                }
            }
        }
    }

    /// Seals one claimed chunk and completes the claim, in one transaction.
    async fn chunk<D: ConnectionTrait + TransactionTrait>(
        &self,
        db: &D,
        keyring: &Keyring,
        claim: &Claim,
    ) -> Result<Written, DbErr> {
        let plan = self.plan;
        let pk = &plan.primary_key;
        let select = Query::select()
            .columns(plan.physical_columns().into_iter().map(a))
            .from(a(&plan.table))
            .and_where(Expr::col(a(pk)).gte(claim.lo))
            .and_where(Expr::col(a(pk)).lte(claim.hi))
            .cond_where(self.needs.clone())
            .order_by(a(pk), Order::Asc)
            .to_owned();
        let rows = db.query_all(&select).await?;
        let mut cells = Vec::with_capacity(rows.len());
        for row in &rows {
            let id = pk_of(row, &plan.table, pk)?;
            let mut row_cells = Vec::with_capacity(plan.columns.len());
            for (job, how) in plan.columns.iter().zip(&self.how) {
                row_cells.push(job.inspect(keyring, row, *how)?);
            }
            cells.push(RowCells {
                id,
                cells: row_cells,
            });
        }
        let result = retrying("write a chunk", async || {
            let txn = db.begin().await?;
            let written = batch::write(&txn, plan, &cells).await?;
            self.job.complete(&txn, claim).await?;
            let counts: Vec<(&str, u64)> = plan
                .columns
                .iter()
                .map(|c| c.plaintext())
                .zip(written.cells.iter().copied())
                .collect();
            state::add_done(&txn, &plan.table, &counts).await?;
            txn.commit().await?;
            Ok(written)
        })
        .await;
        match result {
            Err(err) if matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
                // A duplicate written since the pre-check: name it if it is one of ours, else
                // pass the database's own word on.
                unique_duplicates(db, keyring, plan, 1000).await?;
                Err(err)
            }
            other => other,
        }
    }
}

impl Tally {
    /// Cells written per column, named, in plan order.
    pub fn by_column(&self, plan: &EncryptTable) -> Vec<(String, u64)> {
        plan.plaintext_columns()
            .into_iter()
            .map(str::to_owned)
            .zip(self.cells.iter().copied())
            .collect()
    }
}

/// Rows of the table matching `needs`.
pub(crate) async fn count<D: ConnectionTrait>(
    db: &D,
    plan: &EncryptTable,
    needs: &Condition,
) -> Result<u64, DbErr> {
    let q = Query::select()
        .expr_as(Func::count(Expr::col(a(&plan.primary_key))), a("n"))
        .from(a(&plan.table))
        .cond_where(needs.clone())
        .to_owned();
    Ok(match db.query_one(&q).await? {
        Some(row) => u64::try_from(row.try_get::<i64>("", "n")?).unwrap_or(0),
        None => 0,
    })
}
