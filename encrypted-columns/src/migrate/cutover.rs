//! Cut-over: reads become encrypted-only. Re-checks every row with writers held off, in the
//! transaction that moves the phase, so no row that disagrees is cut over.

use sea_orm::{ConnectionTrait, DbErr, TransactionTrait};
use tracing::{Instrument, info, info_span};

use super::lock::{Hold, locked};
use super::plan::EncryptTable;
use super::sql::check_columns;
use super::stage::stage;
use super::verify::{VerifyReport, check_rows};
use super::{Phase, RunOptions, state};
use crate::keyring;

/// What cut-over did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CutOverReport {
    /// Columns moved to `cut_over` by this call.
    pub moved: Vec<String>,
    /// Columns that were already cut over (or dropped), left alone.
    pub already: Vec<String>,
    /// The check made under the lock.
    pub check: VerifyReport,
}

/// Moves every `verified` column of the plan to `cut_over`, together, after checking every
/// row again with the table's writers held off (PostgreSQL `LOCK TABLE … IN SHARE ROW EXCLUSIVE MODE`,
/// MySQL `LOCK TABLES … READ`, SQLite's write lock) for the length of one verify pass; readers
/// go on (on all three). If any value disagrees, nothing moves: the columns go back to
/// `backfilled` and the call fails with [`Error::Refused`](crate::Error::Refused) naming the
/// count and the first ids. Columns already cut over are left alone; a column that has not
/// passed verify refuses the step.
pub async fn cut_over<P, D>(db: &D, plan: P, options: &RunOptions) -> Result<CutOverReport, DbErr>
where
    P: Into<EncryptTable>,
    D: ConnectionTrait + TransactionTrait,
{
    let plan = plan.into();
    let span = info_span!("cut_over", table = %plan.table);
    async move {
        let batch = options.checked_batch()?;
        let keyring = keyring::current()?;
        let stage = stage(
            db,
            &plan,
            &[Phase::Verified],
            &[Phase::CutOver, Phase::Dropped, Phase::Purged],
            Phase::CutOver,
        )
        .await?;
        let mut report = CutOverReport {
            already: stage.past.iter().map(|(c, _)| c.clone()).collect(),
            ..CutOverReport::default()
        };
        let acting = &stage.plan;
        if acting.columns.is_empty() {
            return Ok(report);
        }
        check_columns(db, &acting.table, &acting.physical_columns()).await?;
        let moves = stage.in_phase(Phase::Verified);
        let not_cut_over = vec![false; acting.columns.len()];
        let check = locked(db, &acting.table, Hold::Writes, async |txn| {
            // Still verified? A concurrent cut-over may have finished while this one waited.
            let now = state::phases(txn, &acting.table, &acting.plaintext_columns()).await?;
            if now
                .iter()
                .all(|p| matches!(p, Phase::CutOver | Phase::Dropped | Phase::Purged))
            {
                return Ok(None);
            }
            if now.iter().any(|p| *p != Phase::Verified) {
                return Err(DbErr::Custom(format!(
                    "{}: another process moved some of these columns while this cut-over \
                     waited for its lock; run verify and cut-over again",
                    acting.table
                )));
            }
            let check = check_rows(txn, &keyring, acting, &not_cut_over, batch, true).await?;
            if check.passed() {
                let note = format!("re-checked {} row(s) under lock", check.rows);
                state::move_columns(
                    txn,
                    &acting.table,
                    &moves,
                    Phase::CutOver,
                    Some(check.rows as i64),
                    Some(&note),
                )
                .await?;
            }
            Ok(Some(check))
        })
        .await?;
        let Some(check) = check else {
            report
                .already
                .extend(acting.plaintext_columns().into_iter().map(str::to_owned));
            return Ok(report);
        };
        if !check.passed() {
            // The check is a verify that failed: demote, so cut-over waits for a passing one.
            let columns: Vec<&str> = moves.iter().map(|(c, _)| c.as_str()).collect();
            state::move_still_in(
                db,
                &acting.table,
                &columns,
                Phase::Verified,
                Phase::Backfilled,
                Some("cut-over re-check failed"),
            )
            .await?;
            return Err(crate::Error::Refused {
                table: acting.table.clone(),
                step: "cut-over",
                count: check.problem_rows,
                ids: check.problem_ids.clone(),
                problem: format!(
                    "disagree with their plaintext ({} value(s) without envelope, {} mismatched, \
                     {} with a wrong blind index); the columns are back in `backfilled`",
                    check.missing, check.mismatched, check.index_mismatched
                ),
                advice: "run repair, then verify, then cut-over again",
            }
            .into());
        }
        report.moved = moves.into_iter().map(|(c, _)| c).collect();
        info!(moved = ?report.moved, rows = check.rows, "cut over");
        report.check = check;
        Ok(report)
    }
    .instrument(span)
    .await
}
