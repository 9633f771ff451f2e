//! Dropping the plaintext columns after cut-over, and purging their bytes from the database
//! files. Both are resumable: each records its phase only once its work is done, and a
//! re-run finishes what an interrupted one left.

use sea_orm::sea_query::{Alias, Func, Index, Query, Table};
use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement, TransactionTrait};
use tracing::{Instrument, info, info_span};

use super::lock::{Hold, locked};
use super::plan::EncryptTable;
use super::sql::{a, check_columns};
use super::stage::stage;
use super::verify::check_rows;
use super::{Phase, RunOptions, state};
use crate::keyring;

/// What a drop did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DropReport {
    /// Plaintext columns dropped by this call.
    pub dropped: Vec<String>,
    /// Columns found already gone (an interrupted drop), now recorded as dropped.
    pub recorded: Vec<String>,
    /// Columns already dropped before this call, left alone.
    pub already: Vec<String>,
    /// Rows checked under the lock.
    pub rows_checked: u64,
}

/// Drops the plaintext columns of every `cut_over` column of the plan, together, after
/// checking under an exclusive lock, in the step that drops, that no row holds plaintext
/// without an envelope that opens to exactly it (an old instance may have written one since
/// cut-over). If one does, nothing is dropped and the call fails with
/// [`Error::Refused`](crate::Error::Refused), naming the count and the first ids: run
/// [`repair`](super::repair) (which seals them) and drop again.
///
/// `indexes` are indexes on the plaintext columns to drop first; on SQLite, which refuses
/// to drop an indexed column, the indexes on them are also found and dropped.
/// On PostgreSQL and SQLite the check, the drop and the phase change are one transaction.
/// On MySQL/MariaDB, under `LOCK TABLES`, the `ALTER TABLE` commits on its own; if the
/// process dies right after it, the next call finds the columns gone and records them.
///
/// The bytes of a dropped column stay in the database files until [`purge`] rewrites them.
pub async fn drop_plaintext<P, D>(
    db: &D,
    plan: P,
    indexes: &[&str],
    options: &RunOptions,
) -> Result<DropReport, DbErr>
where
    P: Into<EncryptTable>,
    D: ConnectionTrait + TransactionTrait,
{
    let plan = plan.into();
    let span = info_span!("drop_plaintext", table = %plan.table);
    async move {
        let batch = options.checked_batch()?;
        let keyring = keyring::current()?;
        let stage = stage(
            db,
            &plan,
            &[Phase::CutOver],
            &[Phase::Dropped, Phase::Purged],
            Phase::Dropped,
        )
        .await?;
        let mut report = DropReport {
            already: stage.past.iter().map(|(c, _)| c.clone()).collect(),
            ..DropReport::default()
        };
        if stage.plan.columns.is_empty() {
            return Ok(report);
        }
        // Columns an interrupted drop already removed (MySQL commits the ALTER on its own).
        let existing = table_columns(db, &plan.table).await?;
        let mut present = EncryptTable::new(&plan.table, &plan.primary_key);
        let mut gone = Vec::new();
        for job in &stage.plan.columns {
            if existing
                .iter()
                .any(|c| c.eq_ignore_ascii_case(job.plaintext()))
            {
                present.columns.push(job.clone());
            } else {
                gone.push((job.plaintext().to_owned(), Phase::CutOver));
            }
        }
        if !gone.is_empty() {
            let columns: Vec<&str> = gone.iter().map(|(c, _)| c.as_str()).collect();
            report.recorded = state::move_still_in(
                db,
                &plan.table,
                &columns,
                Phase::CutOver,
                Phase::Dropped,
                Some("found already dropped by an interrupted drop"),
            )
            .await?;
        }
        if present.columns.is_empty() {
            return Ok(report);
        }
        check_columns(db, &present.table, &present.physical_columns()).await?;
        let backend = db.get_database_backend();
        let mut to_drop: Vec<String> = indexes.iter().map(|s| (*s).to_owned()).collect();
        if backend == DbBackend::Sqlite {
            for index in sqlite_indexes_on(db, &present).await? {
                if !to_drop.contains(&index) {
                    to_drop.push(index);
                }
            }
        }
        let moves: Vec<(String, Phase)> = present
            .plaintext_columns()
            .into_iter()
            .map(|c| (c.to_owned(), Phase::CutOver))
            .collect();
        let cut_over = vec![true; present.columns.len()];
        let rows = locked(db, &present.table, Hold::Schema, async |txn| {
            // Still cut over? (Another drop may have finished while this one waited.)
            let now = state::phases(txn, &present.table, &present.plaintext_columns()).await?;
            if now.iter().all(|p| matches!(p, Phase::Dropped | Phase::Purged)) {
                // A concurrent drop finished first, while this one waited for the lock.
                return Ok(None);
            }
            if now.iter().any(|p| *p != Phase::CutOver) {
                return Err(DbErr::Custom(format!(
                    "{}: another process moved some of these columns while this drop waited \
                     for its lock; run the drop again",
                    present.table
                )));
            }
            let check = check_rows(txn, &keyring, &present, &cut_over, batch, false).await?;
            if check.problem_rows > 0 {
                return Err(crate::Error::Refused {
                    table: present.table.clone(),
                    step: "drop",
                    count: check.problem_rows,
                    ids: check.problem_ids.clone(),
                    problem: format!(
                        "hold plaintext that no envelope carries ({} value(s) without envelope, {} whose \
                         envelope disagrees), written since cut-over by an instance that does \
                         not write envelopes",
                        check.missing, check.mismatched
                    ),
                    advice: "nothing was dropped; run repair (it seals them from the \
                             plaintext), then drop again, once every instance runs the \
                             encrypting code",
                }
                .into());
            }
            if backend == DbBackend::MySql {
                // One ALTER TABLE: after an ALTER, MySQL may release the table's lock.
                let q = |n: &str| format!("`{}`", n.replace('`', "``"));
                let mut parts: Vec<String> = to_drop
                    .iter()
                    .map(|i| format!("DROP INDEX {}", q(i)))
                    .collect();
                parts.extend(
                    present
                        .plaintext_columns()
                        .into_iter()
                        .map(|c| format!("DROP COLUMN {}", q(c))),
                );
                txn.execute_unprepared(&format!(
                    "ALTER TABLE {} {}",
                    q(&present.table),
                    parts.join(", ")
                ))
                .await?;
            } else {
                for index in &to_drop {
                    let drop = Index::drop().name(index.as_str()).to_owned();
                    txn.execute(&drop).await?;
                }
                // One change per ALTER TABLE (SQLite's rule), all inside this transaction.
                for column in present.plaintext_columns() {
                    let alter = Table::alter()
                        .table(a(&present.table))
                        .drop_column(a(column))
                        .to_owned();
                    txn.execute(&alter).await?;
                }
            }
            state::move_columns(
                txn,
                &present.table,
                &moves,
                Phase::Dropped,
                Some(check.rows as i64),
                Some("checked under lock and dropped"),
            )
            .await?;
            Ok(Some(check.rows))
        })
        .await?;
        let Some(rows) = rows else {
            report.already.extend(present.plaintext_columns().into_iter().map(str::to_owned));
            return Ok(report);
        };
        report.rows_checked = rows;
        report.dropped = present
            .plaintext_columns()
            .into_iter()
            .map(str::to_owned)
            .collect();
        info!(dropped = ?report.dropped, rows, "plaintext dropped");
        Ok(report)
    }
    .instrument(span)
    .await
}

/// Rewrites the table so the bytes of its dropped plaintext columns leave the live database
/// files, then records phase `purged` for every `dropped` column of the plan. Re-run it
/// after an interruption (a cancelled `VACUUM FULL`, a killed process): the phase moves only
/// once the rewrite finished. Returns the columns it recorded as purged.
///
/// `VACUUM` (SQLite, the whole file), `ALTER TABLE … FORCE` (MySQL/MariaDB, an online
/// rebuild) or `VACUUM FULL` (PostgreSQL: an exclusive lock on the table for the rewrite).
/// Backups, replicas and WAL archives taken earlier still hold plaintext: expire them on
/// your retention schedule.
pub async fn purge<P, D>(db: &D, plan: P) -> Result<Vec<String>, DbErr>
where
    P: Into<EncryptTable>,
    D: ConnectionTrait + TransactionTrait,
{
    let plan = plan.into();
    let stage = stage(
        db,
        &plan,
        &[Phase::Dropped],
        &[Phase::Purged],
        Phase::Purged,
    )
    .await?;
    if stage.plan.columns.is_empty() {
        return Ok(Vec::new());
    }
    rewrite_table(db, &plan.table).await?;
    let moves = stage.in_phase(Phase::Dropped);
    let columns: Vec<&str> = moves.iter().map(|(c, _)| c.as_str()).collect();
    state::move_still_in(
        db,
        &plan.table,
        &columns,
        Phase::Dropped,
        Phase::Purged,
        Some("table rewritten"),
    )
    .await?;
    Ok(moves.into_iter().map(|(c, _)| c).collect())
}

/// The statement that rewrites `table` on this backend (outside any transaction).
pub(crate) async fn rewrite_table<D: ConnectionTrait>(db: &D, table: &str) -> Result<(), DbErr> {
    let quoted = |q: char| format!("{q}{}{q}", table.replace(q, &format!("{q}{q}")));
    let sql = match db.get_database_backend() {
        DbBackend::Sqlite => "VACUUM".to_owned(),
        DbBackend::MySql => format!("ALTER TABLE {} FORCE", quoted('`')),
        _ => format!("VACUUM FULL {}", quoted('"')),
    };
    db.execute_unprepared(&sql).await.map(|_| ())
}

/// The columns `table` has now.
async fn table_columns<D: ConnectionTrait>(db: &D, table: &str) -> Result<Vec<String>, DbErr> {
    let backend = db.get_database_backend();
    let rows = match backend {
        DbBackend::Sqlite => {
            let q = Query::select()
                .column(a("name"))
                .from_function(Func::cust(a("pragma_table_info")).arg(table), a("t"))
                .to_owned();
            db.query_all(&q).await?
        }
        DbBackend::Postgres => {
            db.query_all_raw(Statement::from_sql_and_values(
                backend,
                "SELECT column_name AS name FROM information_schema.columns WHERE table_name = \
                 $1 AND table_schema = current_schema()",
                [table.into()],
            ))
            .await?
        }
        _ => {
            db.query_all_raw(Statement::from_sql_and_values(
                backend,
                "SELECT column_name AS name FROM information_schema.columns WHERE table_name = \
                 ? AND table_schema = DATABASE()",
                [table.into()],
            ))
            .await?
        }
    };
    rows.iter()
        .map(|r| r.try_get::<String>("", "name"))
        .collect()
}

/// SQLite: the indexes (created ones, not constraints) that cover any plaintext column.
async fn sqlite_indexes_on<D: ConnectionTrait>(
    db: &D,
    plan: &EncryptTable,
) -> Result<Vec<String>, DbErr> {
    let list = Query::select()
        .column(a("name"))
        .column(a("origin"))
        .from_function(
            Func::cust(a("pragma_index_list")).arg(plan.table.as_str()),
            Alias::new("l"),
        )
        .to_owned();
    let mut out = Vec::new();
    for index in db.query_all(&list).await? {
        let name: String = index.try_get("", "name")?;
        let origin: String = index.try_get("", "origin")?;
        if origin != "c" {
            continue;
        }
        let info = Query::select()
            .column(a("name"))
            .from_function(
                Func::cust(a("pragma_index_info")).arg(name.as_str()),
                a("i"),
            )
            .to_owned();
        let covers = db.query_all(&info).await?.iter().any(|c| {
            c.try_get::<Option<String>>("", "name")
                .ok()
                .flatten()
                .is_some_and(|col| {
                    plan.columns
                        .iter()
                        .any(|j| j.plaintext().eq_ignore_ascii_case(&col))
                })
        });
        if covers {
            out.push(name);
        }
    }
    Ok(out)
}
