//! What every module uses: the result type, sea-query names, run options, a second pool, the
//! phase, count, transition-log and claim readers, an old application instance's write,
//! lock conflicts, and the checks of a problem list and of a drop.

use std::time::{SystemTime, UNIX_EPOCH};

use encrypted_columns::migrate::{self, DropReport, Phase, RunOptions, state};
use encrypted_columns_tests::TestDb;
use sea_orm::sea_query::{Alias, Expr, ExprTrait, Func, Order, Query, SimpleExpr};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbErr};
use sea_orm_migration::SchemaManager;

/// A test result carrying a value.
pub type Res<T> = Result<T, Box<dyn std::error::Error>>;

pub fn a(name: &str) -> Alias {
    Alias::new(name)
}

/// The default run options with batches of `batch_size` rows.
pub fn batches(batch_size: u64) -> RunOptions {
    RunOptions {
        batch_size,
        ..RunOptions::default()
    }
}

/// A second pool on the test's database, so writers do not queue behind the migration for
/// the test connection's four slots.
pub async fn second_pool(db: &TestDb, connections: u32) -> Res<DatabaseConnection> {
    let mut options = ConnectOptions::new(db.url());
    options.max_connections(connections).sqlx_logging(false);
    Ok(Database::connect(options).await?)
}

/// Milliseconds since the Unix epoch (what `migrate_child --start-at-ms` takes).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The phase of `table.email`.
pub async fn phase_of(conn: &impl ConnectionTrait, table: &str) -> Res<Phase> {
    Ok(phases_of(conn, table, &["email"]).await?[0])
}

/// The phase of each of `columns` of `table`, in order.
pub async fn phases_of(
    conn: &impl ConnectionTrait,
    table: &str,
    columns: &[&str],
) -> Res<Vec<Phase>> {
    let mut out = Vec::with_capacity(columns.len());
    for column in columns {
        let state = state::load(conn, table, column)
            .await?
            .ok_or_else(|| format!("no migration state for {table}.{column}"))?;
        out.push(state.phase);
    }
    Ok(out)
}

/// Rows of `table` where every one of `conditions` holds.
pub async fn count_where(
    conn: &impl ConnectionTrait,
    table: &str,
    conditions: impl IntoIterator<Item = SimpleExpr>,
) -> Res<i64> {
    let mut select = Query::select();
    select
        .expr_as(Func::count(Expr::col(a("id"))), a("n"))
        .from(a(table));
    for condition in conditions {
        select.and_where(condition);
    }
    Ok(conn
        .query_one(&select)
        .await?
        .ok_or("no count")?
        .try_get("", "n")?)
}

/// Transition-log entries of `table` moving a column from `from` to `to`.
pub async fn log_moves(
    conn: &impl ConnectionTrait,
    table: &str,
    from: Phase,
    to: Phase,
) -> Res<i64> {
    let conditions = [
        Expr::col(a("table_name")).eq(table),
        Expr::col(a("from_phase")).eq(from.as_str()),
        Expr::col(a("to_phase")).eq(to.as_str()),
    ];
    count_where(conn, state::LOG_TABLE, conditions).await
}

/// What an application instance that predates the migration does: it writes the plaintext
/// column of row `id` and nothing else (no envelope, no blind index), in plain SQL.
pub async fn old_instance_write(
    conn: &impl ConnectionTrait,
    table: &str,
    column: &str,
    id: i32,
    value: Option<&str>,
) -> Res<()> {
    let update = Query::update()
        .table(a(table))
        .value(a(column), value.map(str::to_owned))
        .and_where(Expr::col(a("id")).eq(id))
        .to_owned();
    let done = conn.execute(&update).await?.rows_affected();
    ensure!(
        done == 1,
        "the old-instance write to row {id} changed {done} rows"
    );
    Ok(())
}

/// Whether `err` is a lock conflict after which the statement did not happen.
pub fn lock_conflict(err: &DbErr) -> bool {
    let text = err.to_string();
    [
        "database is locked",
        "deadlock detected",
        "Deadlock found",
        "Lock wait timeout",
    ]
    .iter()
    .any(|n| text.contains(n))
}

/// Fails if there are `problems`, with their count and the first `shown` of them, each a
/// `"row …: what"` line about a `what` (never a value).
pub fn no_problems(problems: &[String], what: &str, shown: usize) -> Res<()> {
    ensure!(
        problems.is_empty(),
        "{} bad {what}(s), first: {:?}",
        problems.len(),
        &problems[..problems.len().min(shown)]
    );
    Ok(())
}

/// `dropped` reports exactly `columns` of `table` dropped after checking `rows` rows, and
/// none of them is left in the table.
pub async fn dropped_exactly(
    manager: &SchemaManager<'_>,
    (table, columns): (&str, &[&str]),
    dropped: &DropReport,
    rows: u64,
) -> Res<()> {
    ensure!(
        dropped.dropped == columns && dropped.rows_checked == rows,
        "{dropped:?}"
    );
    for column in columns {
        ensure!(
            !manager.has_column(table, column).await?,
            "{table}.{column} survived the drop"
        );
    }
    Ok(())
}

/// One claim of a chunk of a job, as stored.
#[derive(Debug, Clone, Copy)]
pub struct ClaimRow {
    pub lo: i64,
    pub hi: i64,
    pub done: bool,
}

/// The claims of the backfill of `table`, by key range (only those of process `pid` where
/// given).
pub async fn backfill_claims(
    conn: &impl ConnectionTrait,
    table: &str,
    pid: Option<u32>,
) -> Result<Vec<ClaimRow>, DbErr> {
    let mut select = Query::select();
    select
        .columns([a("lo"), a("hi"), a("done")])
        .from(a(migrate::CLAIMS_TABLE))
        .and_where(Expr::col(a("table_name")).eq(table))
        .and_where(Expr::col(a("job")).eq("backfill"))
        .order_by(a("lo"), Order::Asc);
    if let Some(pid) = pid {
        select.and_where(Expr::col(a("owner")).like(format!("pid{pid}-%")));
    }
    let mut out = Vec::new();
    for row in conn.query_all(&select).await? {
        out.push(ClaimRow {
            lo: row.try_get("", "lo")?,
            hi: row.try_get("", "hi")?,
            done: row.try_get::<i32>("", "done")? != 0,
        });
    }
    Ok(out)
}
