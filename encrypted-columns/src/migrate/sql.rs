//! SQL pieces shared by backfill, verify and rotation: portable across SQLite, PostgreSQL and
//! MySQL/MariaDB, built with sea-query (values are always bound, never spliced).

use sea_orm::sea_query::{Alias, Expr, ExprTrait, Func, Order, Query};
use sea_orm::{ConnectionTrait, DbBackend, DbErr, QueryResult};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::Error;

pub(crate) fn a(name: &str) -> Alias {
    Alias::new(name)
}

/// Reads an integer primary key whatever its width (PostgreSQL will not decode INT4 as i64).
pub(crate) fn pk_of(row: &QueryResult, table: &str, column: &str) -> Result<i64, DbErr> {
    if let Ok(v) = row.try_get::<i64>("", column) {
        return Ok(v);
    }
    row.try_get::<i32>("", column).map(i64::from).map_err(|_| {
        Error::Migration {
            table: table.to_owned(),
            column: column.to_owned(),
            problem: "the primary key must be an integer column (keyset pagination orders by it)"
                .into(),
        }
        .into()
    })
}

/// Fails with a clear error naming the table and columns if any does not exist.
pub(crate) async fn check_columns<C: ConnectionTrait>(
    db: &C,
    table: &str,
    columns: &[&str],
) -> Result<(), DbErr> {
    // SQLite reads a double-quoted identifier that names no column as a string literal, so
    // the probe below succeeds for a misspelt column there — and a backfill would then seal
    // the column's *name* into every row. Ask SQLite for the table's columns instead.
    if db.get_database_backend() == DbBackend::Sqlite {
        return check_sqlite_columns(db, table, columns).await;
    }
    let probe = Query::select()
        .columns(columns.iter().map(|c| a(c)))
        .from(a(table))
        .and_where(Expr::val(1).eq(0))
        .to_owned();
    match db.query_all(&probe).await {
        Ok(_) => Ok(()),
        Err(err) => Err(Error::Migration {
            table: table.to_owned(),
            column: columns.join(", "),
            problem: format!(
                "cannot read these columns ({err}); check the table and column names in the \
                 migration spec"
            ),
        }
        .into()),
    }
}

async fn check_sqlite_columns<C: ConnectionTrait>(
    db: &C,
    table: &str,
    columns: &[&str],
) -> Result<(), DbErr> {
    let problem = |problem: String| -> DbErr {
        Error::Migration {
            table: table.to_owned(),
            column: columns.join(", "),
            problem,
        }
        .into()
    };
    let query = Query::select()
        .column(a("name"))
        .from_function(Func::cust(a("pragma_table_info")).arg(table), a("t"))
        .to_owned();
    let existing: Vec<String> = match db.query_all(&query).await {
        Ok(rows) => rows
            .iter()
            .map(|row| row.try_get::<String>("", "name"))
            .collect::<Result<_, _>>()?,
        Err(err) => return Err(problem(format!("cannot list the table's columns ({err})"))),
    };
    if existing.is_empty() {
        return Err(problem(
            "cannot read these columns (no such table); check the table and column names in \
             the migration spec"
                .into(),
        ));
    }
    // SQLite compares identifiers case-insensitively (ASCII).
    let missing: Vec<&str> = columns
        .iter()
        .filter(|c| !existing.iter().any(|e| e.eq_ignore_ascii_case(c)))
        .copied()
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(problem(format!(
            "cannot read these columns (no such column: {}); check the table and column names \
             in the migration spec",
            missing.join(", ")
        )))
    }
}

/// Milliseconds since the Unix epoch, as the state, work and claims tables store times.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Reads every row of `table` in primary-key order, `batch` rows per query (keyset
/// pagination on the integer key `pk`), and hands each row and its key to `each`.
pub(crate) async fn scan<C: ConnectionTrait>(
    db: &C,
    table: &str,
    pk: &str,
    columns: &[&str],
    batch: u64,
    mut each: impl FnMut(i64, &QueryResult) -> Result<(), DbErr>,
) -> Result<(), DbErr> {
    let mut cursor = i64::MIN;
    loop {
        let select = Query::select()
            .column(a(pk))
            .columns(columns.iter().map(|c| a(c)))
            .from(a(table))
            .and_where(Expr::col(a(pk)).gt(cursor))
            .order_by(a(pk), Order::Asc)
            .limit(batch)
            .to_owned();
        let rows = db.query_all(&select).await?;
        if rows.is_empty() {
            return Ok(());
        }
        for row in &rows {
            cursor = pk_of(row, table, pk)?;
            each(cursor, row)?;
        }
    }
}
