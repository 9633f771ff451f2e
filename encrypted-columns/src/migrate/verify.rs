//! Verify: every row's envelopes open to exactly its plaintexts, and its blind indexes match.
//! The same check, run with writers blocked, is what cut-over and drop re-check at the moment
//! they act.

use sea_orm::{ConnectionTrait, DbErr, TransactionTrait};
use tracing::{Instrument, info, info_span};

use super::plan::{CellStatus, EncryptTable, Inspect};
use super::sql::{check_columns, scan};
use super::stage::stage;
use super::{Phase, RunOptions, state};
use crate::keyring::{self, Keyring};

/// At most this many ids are listed (counts are always complete).
pub const MAX_LISTED_IDS: usize = 1000;

/// What verify found in one column.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ColumnReport {
    /// The plaintext column.
    pub column: String,
    /// The column's phase when it was checked.
    pub phase: Option<Phase>,
    /// Rows whose envelope opened to exactly their plaintext.
    pub matching: u64,
    /// Rows with neither plaintext nor envelope (NULL stays NULL).
    pub both_null: u64,
    /// Rows with plaintext but no envelope.
    pub missing: u64,
    /// Rows whose envelope does not open, opens to something else, or (before cut-over)
    /// exists without plaintext.
    pub mismatched: u64,
    /// Rows whose blind-index value differs from its recomputation.
    pub index_mismatched: u64,
    /// After cut-over: rows with an envelope and no plaintext, as the application now
    /// writes them (their envelopes are not compared with anything).
    pub encrypted_only: u64,
}

impl ColumnReport {
    /// Whether this column checked out.
    pub fn passed(&self) -> bool {
        self.missing == 0 && self.mismatched == 0 && self.index_mismatched == 0
    }
}

/// What verify found: totals over the checked columns, and each column on its own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Rows checked.
    pub rows: u64,
    /// Values (row × column) whose envelope opened to exactly their plaintext.
    pub matching: u64,
    /// Values NULL in both columns.
    pub both_null: u64,
    /// Values with plaintext but no envelope (not backfilled, or written by an instance that
    /// does not dual-write).
    pub missing: u64,
    /// Values whose envelope does not open, or opens to something else, or exists without
    /// plaintext before cut-over.
    pub mismatched: u64,
    /// Values whose blind-index value differs from its recomputation.
    pub index_mismatched: u64,
    /// After cut-over: values held only as envelopes.
    pub encrypted_only: u64,
    /// Rows with at least one problem.
    pub problem_rows: u64,
    /// Ids of problem rows, ascending, up to [`MAX_LISTED_IDS`].
    pub problem_ids: Vec<i64>,
    /// Each checked column.
    pub columns: Vec<ColumnReport>,
    /// Columns not checked because their plaintext is already dropped.
    pub skipped: Vec<String>,
}

impl VerifyReport {
    /// Whether every checked value checked out.
    pub fn passed(&self) -> bool {
        self.missing == 0 && self.mismatched == 0 && self.index_mismatched == 0
    }

    /// The first 20 problem ids and how many more there are, as the crate's errors list
    /// them.
    ///
    /// ```
    /// # use encrypted_columns::migrate::VerifyReport;
    /// let report = VerifyReport { problem_rows: 25, problem_ids: (1..=25).collect(), ..Default::default() };
    /// assert!(report.listed_ids().ends_with("20 and 5 more"));
    /// ```
    pub fn listed_ids(&self) -> String {
        crate::error::list_ids(&self.problem_ids, self.problem_rows)
    }
}

/// Checks every row of the plan's table, all columns in one pass.
///
/// Columns in `backfilled` or `verified` are checked strictly; columns already cut over are
/// checked for what the drop needs (every plaintext still present has an envelope that opens
/// to it); dropped columns are skipped. When every value passes, `backfilled` columns move to
/// `verified`. When any fails, `verified` columns move back to `backfilled`, so cut-over is
/// refused until a verify passes again (run [`repair`](super::repair) for the reported rows).
/// Other phases refuse the step with nothing changed.
pub async fn verify<P, D>(db: &D, plan: P, options: &RunOptions) -> Result<VerifyReport, DbErr>
where
    P: Into<EncryptTable>,
    D: ConnectionTrait + TransactionTrait,
{
    let plan = plan.into();
    let span = info_span!("verify", table = %plan.table);
    async move {
        let keyring = keyring::current()?;
        let stage = stage(
            db,
            &plan,
            &[Phase::Backfilled, Phase::Verified, Phase::CutOver],
            &[Phase::Dropped, Phase::Purged],
            Phase::Verified,
        )
        .await?;
        let mut skipped: Vec<String> = stage.past.iter().map(|(c, _)| c.clone()).collect();
        if stage.plan.columns.is_empty() {
            return Ok(VerifyReport {
                skipped,
                ..VerifyReport::default()
            });
        }
        check_columns(db, &plan.table, &stage.plan.physical_columns()).await?;
        let cut_over: Vec<bool> = stage.phases.iter().map(|p| *p == Phase::CutOver).collect();
        let mut report = check_rows(
            db,
            &keyring,
            &stage.plan,
            &cut_over,
            options.checked_batch()?,
            true,
        )
        .await?;
        for (column, phase) in report.columns.iter_mut().zip(&stage.phases) {
            column.phase = Some(*phase);
        }
        report.skipped.append(&mut skipped);
        let moves = if report.passed() {
            (stage.in_phase(Phase::Backfilled), Phase::Verified)
        } else {
            (stage.in_phase(Phase::Verified), Phase::Backfilled)
        };
        if !moves.0.is_empty() {
            let note = if report.passed() {
                "verify passed".to_owned()
            } else {
                format!(
                    "verify failed: {} missing, {} mismatched, {} index mismatched",
                    report.missing, report.mismatched, report.index_mismatched
                )
            };
            let columns: Vec<&str> = moves.0.iter().map(|(c, _)| c.as_str()).collect();
            let from = if report.passed() {
                Phase::Backfilled
            } else {
                Phase::Verified
            };
            state::move_still_in(db, &plan.table, &columns, from, moves.1, Some(&note)).await?;
        }
        info!(
            rows = report.rows,
            passed = report.passed(),
            "verify finished"
        );
        Ok(report)
    }
    .instrument(span)
    .await
}

/// Opens and compares every value of every column of `plan` (keyset-paginated by the
/// primary key). `cut_over[i]` says column `i` is cut over (only values that still hold
/// plaintext are compared). `indexes_count`: whether a wrong blind index makes a row a
/// problem row (not for the drop, which only guards the plaintext). Runs on whatever connection it is given, so cut-over and drop
/// run it inside their locked transaction.
pub(crate) async fn check_rows<C: ConnectionTrait>(
    db: &C,
    keyring: &Keyring,
    plan: &EncryptTable,
    cut_over: &[bool],
    batch: u64,
    indexes_count: bool,
) -> Result<VerifyReport, DbErr> {
    let (table, pk) = (&plan.table, &plan.primary_key);
    let columns = plan.physical_columns();
    let mut report = VerifyReport {
        columns: plan
            .columns
            .iter()
            .map(|c| ColumnReport {
                column: c.plaintext().to_owned(),
                ..ColumnReport::default()
            })
            .collect(),
        ..VerifyReport::default()
    };
    // `physical_columns` starts with the key, which the scan reads itself.
    scan(db, table, pk, &columns[1..], batch, |id, row| {
        report.rows += 1;
        let mut problem = false;
        for ((job, out), cut) in plan.columns.iter().zip(&mut report.columns).zip(cut_over) {
            let how = Inspect::Check {
                cut_over: *cut,
                repair: false,
            };
            let cell = job.inspect(keyring, row, how)?;
            match cell.status {
                CellStatus::BothNull => out.both_null += 1,
                CellStatus::Missing => out.missing += 1,
                CellStatus::Matching => out.matching += 1,
                CellStatus::Mismatched | CellStatus::Orphan => out.mismatched += 1,
                CellStatus::EncryptedOnly => out.encrypted_only += 1,
                CellStatus::Unchecked => {}
            }
            if !cell.index_ok {
                out.index_mismatched += 1;
            }
            problem |= cell.status.is_problem() || (indexes_count && !cell.index_ok);
        }
        if problem {
            report.problem_rows += 1;
            if report.problem_ids.len() < MAX_LISTED_IDS {
                report.problem_ids.push(id);
            }
        }
        Ok(())
    })
    .await?;
    for c in &report.columns {
        report.matching += c.matching;
        report.both_null += c.both_null;
        report.missing += c.missing;
        report.mismatched += c.mismatched;
        report.index_mismatched += c.index_mismatched;
        report.encrypted_only += c.encrypted_only;
    }
    Ok(report)
}
