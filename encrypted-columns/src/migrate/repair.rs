//! Repair: re-seal exactly the values verify reports, under the same guard as the backfill.
//!
//! During a rolling deploy an old application instance writes plaintext only: the
//! envelopes of the rows it touches go stale (or, for new rows, are missing), and verify
//! fails on them forever, since the backfill only seals values that have no envelope. Repair
//! opens every envelope, and for each value whose envelope is missing, does not open, opens
//! to something else, or whose blind index is wrong, writes a fresh envelope (and indexes)
//! from the plaintext — the plaintext is the truth until the column is dropped. Before
//! cut-over, an envelope whose plaintext was cleared is cleared too. Each write is guarded
//! (plaintext and envelope still as read), so a value changed meanwhile is left for the next
//! round: backfill → verify → repair → verify converges while old instances keep writing,
//! as long as they write fewer rows per pass than repair fixes.

use sea_orm::sea_query::Condition;
use sea_orm::{ConnectionTrait, DbErr, TransactionTrait};
use tracing::{Instrument, info, info_span};

use super::plan::{EncryptTable, Inspect};
use super::sql::check_columns;
use super::stage::stage;
use super::worker::Worker;
use super::{Phase, Progress, RunOptions, state};
use crate::keyring;

/// What one repair worker did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairReport {
    /// Values re-sealed (or cleared) by this worker.
    pub repaired: u64,
    /// Rows in which this worker repaired at least one value.
    pub rows: u64,
    /// Values in need of repair that the application changed between the read and the
    /// write: left alone (the next verify reports them if they are still wrong).
    pub skipped: u64,
    /// Chunks this worker committed.
    pub batches: u64,
    /// Whether the pass over the table is finished (by this worker or another).
    pub finished: bool,
    /// Values repaired by this worker, per column, in plan order.
    pub by_column: Vec<(String, u64)>,
    /// Columns not repaired because their plaintext is already dropped.
    pub skipped_columns: Vec<String>,
}

/// Re-seals, from the plaintext, every value of the plan's columns whose envelope or blind
/// index disagrees with it. Works on columns in `backfilled`, `verified` or `cut_over` (after
/// cut-over only values that still hold plaintext are looked at: those an old instance wrote);
/// earlier phases refuse the step. A `verified` column in which anything was repaired moves
/// back to `backfilled`: run verify again before cut-over.
///
/// Like the backfill, any number of workers can share a repair pass.
pub async fn repair<P, D>(
    db: &D,
    plan: P,
    options: &RunOptions,
    mut progress: impl FnMut(&Progress),
) -> Result<RepairReport, DbErr>
where
    P: Into<EncryptTable>,
    D: ConnectionTrait + TransactionTrait,
{
    let plan = plan.into();
    let span = info_span!("repair", table = %plan.table);
    async move {
        let keyring = keyring::current()?;
        plan.check()?;
        plan.check_keys(&keyring)?;
        let stage = stage(
            db,
            &plan,
            &[Phase::Backfilled, Phase::Verified, Phase::CutOver],
            &[Phase::Dropped, Phase::Purged],
            Phase::Backfilled,
        )
        .await
        .map_err(|err| match crate::Error::from_db_err(&err) {
            Some(crate::Error::Phase {
                table,
                column,
                from,
                ..
            }) if !matches!(*from, "none") => crate::Error::Phase {
                table: table.clone(),
                column: column.clone(),
                from,
                to: "repaired",
                problem: "repair works on finished backfills: run the backfill to the end first",
            }
            .into(),
            _ => err,
        })?;
        let mut report = RepairReport {
            skipped_columns: stage.past.iter().map(|(c, _)| c.clone()).collect(),
            ..RepairReport::default()
        };
        let acting = &stage.plan;
        if acting.columns.is_empty() {
            report.finished = true;
            return Ok(report);
        }
        check_columns(db, &acting.table, &acting.physical_columns()).await?;
        let how = stage
            .phases
            .iter()
            .map(|p| Inspect::Check {
                cut_over: *p == Phase::CutOver,
                repair: true,
            })
            .collect();
        let worker = Worker::new(acting, "repair", options, Condition::all(), how, 1);
        let tally = worker
            .run(db, &keyring, options, &mut progress, async |_, _| Ok(()))
            .await?;
        report.repaired = tally.cells.iter().sum();
        report.skipped = tally.refused.iter().sum();
        report.rows = tally.rows;
        report.batches = tally.batches;
        report.finished = tally.finished;
        report.by_column = tally.by_column(acting);
        // A verified column that needed repair was not verified: cut-over waits for verify.
        let demote: Vec<(String, Phase)> = stage
            .in_phase(Phase::Verified)
            .into_iter()
            .filter(|(c, _)| report.by_column.iter().any(|(n, k)| n == c && *k > 0))
            .collect();
        if !demote.is_empty() {
            let columns: Vec<&str> = demote.iter().map(|(c, _)| c.as_str()).collect();
            state::move_still_in(
                db,
                &acting.table,
                &columns,
                Phase::Verified,
                Phase::Backfilled,
                Some("repair re-sealed values"),
            )
            .await?;
        }
        info!(
            repaired = report.repaired,
            skipped = report.skipped,
            "repair worker done"
        );
        Ok(report)
    }
    .instrument(span)
    .await
}
