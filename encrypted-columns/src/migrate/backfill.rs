//! The batched, resumable, guarded backfill of a plaintext column into its encrypted column.

use sea_orm::sea_query::{CaseStatement, Expr, ExprTrait, Func, Order, Query};
use sea_orm::{ConnectionTrait, DbErr, TransactionSession, TransactionTrait, TryGetable, Value};
use tracing::{Instrument, debug, info, info_span};

use super::sql::{a, check_columns, exact_eq, pk_of};
use super::state::{self, Kind};
use super::{EncryptColumn, Phase, Progress, RunOptions};
use crate::blind_index::IndexArg;
use crate::context::ColumnContext;
use crate::keyring;
use crate::types::{Encrypted, Plaintext};

/// What a backfill run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackfillReport {
    /// Rows sealed by this run.
    pub sealed: u64,
    /// Rows skipped because the application changed them between read and write (they got
    /// the application's own dual write instead).
    pub skipped: u64,
    /// Batches committed.
    pub batches: u64,
    /// Whether the table is done (phase `backfilled`); `false` when `max_batches` stopped it.
    pub finished: bool,
}

/// Seals every row of `spec.table` whose encrypted column is NULL and plaintext is not.
///
/// Needs phase `dual_write` (or a previous backfill's phases); moves to `backfilling`, and to
/// `backfilled` when a full pass finds nothing left. Each batch is one transaction holding
/// the UPDATE and the new cursor, so a crash (even `kill -9`) loses at most the batch in
/// flight, and the next run resumes after the last committed one. `progress` runs after each
/// batch.
pub async fn backfill<T, C, D>(
    db: &D,
    spec: &EncryptColumn<T, C>,
    options: &RunOptions,
    mut progress: impl FnMut(&Progress),
) -> Result<BackfillReport, DbErr>
where
    T: Plaintext + TryGetable + Into<Value> + IndexArg<T>,
    C: ColumnContext,
    D: ConnectionTrait + TransactionTrait,
{
    let span = info_span!("backfill", table = %spec.table, column = %spec.plaintext);
    run(db, spec, options, &mut progress).instrument(span).await
}

async fn run<T, C, D>(
    db: &D,
    spec: &EncryptColumn<T, C>,
    options: &RunOptions,
    progress: &mut dyn FnMut(&Progress),
) -> Result<BackfillReport, DbErr>
where
    T: Plaintext + TryGetable + Into<Value> + IndexArg<T>,
    C: ColumnContext,
    D: ConnectionTrait + TransactionTrait,
{
    let (table, pk, plain, enc) = (
        &spec.table,
        &spec.primary_key,
        &spec.plaintext,
        &spec.encrypted,
    );
    let keyring = keyring::current()?;
    if !spec.indexes.is_empty() && keyring.active_blind_index_key_id().is_none() {
        return Err(crate::Error::NoBlindIndexKey.into());
    }
    let mut columns = vec![pk.as_str(), plain.as_str(), enc.as_str()];
    columns.extend(spec.indexes.iter().map(|(c, _)| c.as_str()));
    check_columns(db, table, &columns).await?;

    let current = state::load(db, table, plain)
        .await?
        .ok_or_else(|| state::not_started(table, plain))?;
    if current.phase != Phase::Backfilling {
        state::transition(db, table, plain, Phase::Backfilling, None).await?;
    }
    let total = remaining(db, spec).await?;
    info!(remaining = total, "backfill starting");

    let batch_size = Ord::max(options.batch_size, 1);
    let text = T::TYPE_NAME == "String";
    let backend = db.get_database_backend();
    let mut cursor = current.cursor.unwrap_or(i64::MIN);
    let mut report = BackfillReport::default();
    let mut restarted = false;
    loop {
        if options.max_batches.is_some_and(|max| report.batches >= max) {
            return Ok(report);
        }
        let select = Query::select()
            .column(a(pk))
            .column(a(plain))
            .from(a(table))
            .and_where(Expr::col(a(pk)).gt(cursor))
            .and_where(Expr::col(a(enc)).is_null())
            .and_where(Expr::col(a(plain)).is_not_null())
            .order_by(a(pk), Order::Asc)
            .limit(batch_size)
            .to_owned();
        let rows = db.query_all(&select).await?;
        if rows.is_empty() {
            // Rows skipped by the guard, or written plaintext-only by a writer that was not
            // yet dual-writing, sit behind the cursor: one more pass from the start.
            if !restarted && cursor != i64::MIN && remaining(db, spec).await? > 0 {
                restarted = true;
                cursor = i64::MIN;
                continue;
            }
            break;
        }

        let mut ids = Vec::with_capacity(rows.len());
        let mut enc_case = CaseStatement::new();
        let mut index_cases: Vec<CaseStatement> =
            spec.indexes.iter().map(|_| CaseStatement::new()).collect();
        for row in &rows {
            let id = pk_of(row, table, pk)?;
            let value: T = row.try_get("", plain)?;
            let sealed = Encrypted::<T, C>::new_with(&keyring, value.clone())?;
            let guard = || {
                Expr::col(a(pk))
                    .eq(id)
                    .and(exact_eq(backend, text, plain, value.clone().into()))
            };
            enc_case = enc_case.case(guard(), Expr::val(sealed.envelope().to_vec()));
            for ((_, index), case) in spec.indexes.iter().zip(index_cases.iter_mut()) {
                let input = value.index_input()?;
                let computed = index.compute(&keyring, &[Some(input)])?;
                *case = std::mem::take(case).case(guard(), Expr::val(computed));
            }
            ids.push(id);
        }
        let last = *ids.last().unwrap_or(&cursor);
        let mut update = Query::update();
        update
            .table(a(table))
            .value(a(enc), enc_case.finally(Expr::col(a(enc))))
            .and_where(Expr::col(a(pk)).is_in(ids.clone()))
            .and_where(Expr::col(a(enc)).is_null());
        for ((column, _), case) in spec.indexes.iter().zip(index_cases) {
            update.value(a(column), case.finally(Expr::col(a(column))));
        }

        let txn = db.begin().await?;
        // Rows matched: still without envelope when the UPDATE ran (all three drivers count
        // matched rows; sqlx sets CLIENT_FOUND_ROWS on MySQL). A row the application
        // dual-wrote between our read and this UPDATE is not matched.
        let matched = txn.execute(&update).await?.rows_affected();
        // Of those, the ones still NULL failed the guard: the application changed their
        // plaintext meanwhile.
        let left = Query::select()
            .expr_as(Func::count(Expr::col(a(pk))), a("n"))
            .from(a(table))
            .and_where(Expr::col(a(pk)).is_in(ids.clone()))
            .and_where(Expr::col(a(enc)).is_null())
            .to_owned();
        let still_null = match txn.query_one(&left).await? {
            Some(row) => u64::try_from(row.try_get::<i64>("", "n")?).unwrap_or(0),
            None => 0,
        };
        // Skipped = every row of the batch we did not seal ourselves, whether the
        // application dual-wrote it (not matched) or changed its plaintext (guard failed),
        // as `BackfillReport::skipped` documents. (Counting only rows left NULL missed the
        // dual-written ones and reported them as sealed.)
        let sealed = Ord::min(matched.saturating_sub(still_null), ids.len() as u64);
        let skipped = ids.len() as u64 - sealed;
        state::save_cursor(
            &txn,
            table,
            plain,
            Kind::Encrypt,
            Some(last),
            sealed as i64,
            None,
        )
        .await?;
        txn.commit().await?;

        cursor = last;
        report.batches += 1;
        report.sealed += sealed;
        report.skipped += skipped;
        debug!(
            batch = report.batches,
            sealed, skipped, cursor, "batch committed"
        );
        progress(&Progress {
            done: report.sealed,
            skipped: report.skipped,
            total,
            cursor,
        });
        if let Some(pause) = options.throttle {
            tokio::time::sleep(pause).await;
        }
    }
    state::transition(
        db,
        table,
        plain,
        Phase::Backfilled,
        Some(report.sealed as i64),
    )
    .await?;
    info!(
        sealed = report.sealed,
        skipped = report.skipped,
        "backfill finished"
    );
    report.finished = true;
    Ok(report)
}

/// Rows with plaintext but no envelope.
async fn remaining<T, C, D: ConnectionTrait>(
    db: &D,
    spec: &EncryptColumn<T, C>,
) -> Result<u64, DbErr> {
    let q = Query::select()
        .expr_as(Func::count(Expr::col(a(&spec.primary_key))), a("n"))
        .from(a(&spec.table))
        .and_where(Expr::col(a(&spec.encrypted)).is_null())
        .and_where(Expr::col(a(&spec.plaintext)).is_not_null())
        .to_owned();
    Ok(match db.query_one(&q).await? {
        Some(row) => u64::try_from(row.try_get::<i64>("", "n")?).unwrap_or(0),
        None => 0,
    })
}
