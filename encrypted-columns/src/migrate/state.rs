//! The persisted state of each column migration: a small table we own,
//! `encrypted_columns_migrations`, plus an append-only log of transitions,
//! `encrypted_columns_migration_log`. Both are created on first use.

use sea_orm::sea_query::{
    Alias, ColumnDef, Expr, ExprTrait, Index, OnConflict, Order, Query, Table,
};
use sea_orm::{ConnectionTrait, DbErr, QueryResult, TransactionSession, TransactionTrait};

use super::phase::Phase;
use super::sql::now_ms;
use crate::error::Error;

/// Name of the state table.
pub const STATE_TABLE: &str = "encrypted_columns_migrations";
/// Name of the transition log table.
pub const LOG_TABLE: &str = "encrypted_columns_migration_log";

/// What a state row tracks: encrypting a plaintext column, or re-keying an encrypted one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Plaintext → encrypted (the phased migration).
    Encrypt,
    /// Re-encryption / re-indexing under the active keys.
    Rotate,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Encrypt => "encrypt",
            Kind::Rotate => "rotate",
        }
    }
}

/// One row of the state table.
#[derive(Debug, Clone, PartialEq)]
pub struct MigrationState {
    /// Physical table.
    pub table: String,
    /// Column being migrated (the plaintext column, or the encrypted one for rotation).
    pub column: String,
    /// Current phase (rotation rows stay in `backfilling` / `backfilled`).
    pub phase: Phase,
    /// Last primary key a committed batch covered; the next batch starts after it.
    pub cursor: Option<i64>,
    /// Rows sealed (or resealed) so far.
    pub rows_done: i64,
    /// For rotation: the key ids the run targets (`encryption:blind`), to restart when they change.
    pub target: Option<String>,
    /// Milliseconds since the Unix epoch of the last change.
    pub updated_at_ms: i64,
}

fn a(name: &str) -> Alias {
    Alias::new(name)
}

/// Creates the state and log tables if they do not exist.
pub async fn ensure_tables<C: ConnectionTrait>(db: &C) -> Result<(), DbErr> {
    let state = Table::create()
        .table(a(STATE_TABLE))
        .if_not_exists()
        .col(ColumnDef::new(a("table_name")).string_len(190).not_null())
        .col(ColumnDef::new(a("column_name")).string_len(190).not_null())
        .col(ColumnDef::new(a("kind")).string_len(16).not_null())
        .col(ColumnDef::new(a("phase")).string_len(32).not_null())
        .col(ColumnDef::new(a("cursor_pk")).big_integer().null())
        .col(
            ColumnDef::new(a("rows_done"))
                .big_integer()
                .not_null()
                .default(0),
        )
        .col(ColumnDef::new(a("target")).string_len(64).null())
        .col(ColumnDef::new(a("updated_at_ms")).big_integer().not_null())
        .primary_key(
            Index::create()
                .col(a("table_name"))
                .col(a("column_name"))
                .col(a("kind")),
        )
        .to_owned();
    db.execute(&state).await?;
    let log = Table::create()
        .table(a(LOG_TABLE))
        .if_not_exists()
        .col(
            ColumnDef::new(a("id"))
                .big_integer()
                .not_null()
                .auto_increment()
                .primary_key(),
        )
        .col(ColumnDef::new(a("table_name")).string_len(190).not_null())
        .col(ColumnDef::new(a("column_name")).string_len(190).not_null())
        .col(ColumnDef::new(a("kind")).string_len(16).not_null())
        .col(ColumnDef::new(a("from_phase")).string_len(32).null())
        .col(ColumnDef::new(a("to_phase")).string_len(32).not_null())
        .col(ColumnDef::new(a("rows_count")).big_integer().null())
        .col(ColumnDef::new(a("note")).string_len(500).null())
        .col(ColumnDef::new(a("at_ms")).big_integer().not_null())
        .to_owned();
    db.execute(&log).await?;
    super::work::ensure_tables(db).await
}

fn parse_row(row: &QueryResult) -> Result<MigrationState, DbErr> {
    let phase: String = row.try_get("", "phase")?;
    Ok(MigrationState {
        table: row.try_get("", "table_name")?,
        column: row.try_get("", "column_name")?,
        phase: phase
            .parse()
            .map_err(|e: String| DbErr::Custom(format!("{STATE_TABLE}: {e}")))?,
        cursor: row.try_get("", "cursor_pk")?,
        rows_done: row.try_get("", "rows_done")?,
        target: row.try_get("", "target")?,
        updated_at_ms: row.try_get("", "updated_at_ms")?,
    })
}

/// The state of `table.column`, if a migration was started.
pub async fn load<C: ConnectionTrait>(
    db: &C,
    table: &str,
    column: &str,
) -> Result<Option<MigrationState>, DbErr> {
    load_kind(db, table, column, Kind::Encrypt).await
}

pub(crate) async fn load_kind<C: ConnectionTrait>(
    db: &C,
    table: &str,
    column: &str,
    kind: Kind,
) -> Result<Option<MigrationState>, DbErr> {
    ensure_tables(db).await?;
    read_kind(db, table, column, kind).await
}

/// [`load_kind`] without creating the tables (inside a MySQL `LOCK TABLES` section, where
/// DDL on other tables is refused).
pub(crate) async fn read_kind<C: ConnectionTrait>(
    db: &C,
    table: &str,
    column: &str,
    kind: Kind,
) -> Result<Option<MigrationState>, DbErr> {
    let q = Query::select()
        .columns([
            a("table_name"),
            a("column_name"),
            a("phase"),
            a("cursor_pk"),
            a("rows_done"),
            a("target"),
            a("updated_at_ms"),
        ])
        .from(a(STATE_TABLE))
        .and_where(Expr::col(a("table_name")).eq(table))
        .and_where(Expr::col(a("column_name")).eq(column))
        .and_where(Expr::col(a("kind")).eq(kind.as_str()))
        .to_owned();
    db.query_one(&q).await?.as_ref().map(parse_row).transpose()
}

/// Every migration's state, for status reports.
pub async fn list<C: ConnectionTrait>(db: &C) -> Result<Vec<MigrationState>, DbErr> {
    ensure_tables(db).await?;
    let q = Query::select()
        .columns([
            a("table_name"),
            a("column_name"),
            a("phase"),
            a("cursor_pk"),
            a("rows_done"),
            a("target"),
            a("updated_at_ms"),
        ])
        .from(a(STATE_TABLE))
        .and_where(Expr::col(a("kind")).eq(Kind::Encrypt.as_str()))
        .order_by(a("table_name"), Order::Asc)
        .order_by(a("column_name"), Order::Asc)
        .to_owned();
    db.query_all(&q).await?.iter().map(parse_row).collect()
}

/// Records that the encrypted companion of `table.column` exists: phase `added`. Idempotent.
pub async fn start<C: ConnectionTrait>(
    db: &C,
    table: &str,
    column: &str,
) -> Result<MigrationState, DbErr> {
    create_kind(db, table, column, Kind::Encrypt, Phase::Added, None).await
}

pub(crate) async fn create_kind<C: ConnectionTrait>(
    db: &C,
    table: &str,
    column: &str,
    kind: Kind,
    phase: Phase,
    target: Option<&str>,
) -> Result<MigrationState, DbErr> {
    ensure_tables(db).await?;
    if let Some(existing) = load_kind(db, table, column, kind).await? {
        return Ok(existing);
    }
    let insert = Query::insert()
        .into_table(a(STATE_TABLE))
        .columns([
            a("table_name"),
            a("column_name"),
            a("kind"),
            a("phase"),
            a("rows_done"),
            a("target"),
            a("updated_at_ms"),
        ])
        .values_panic([
            table.into(),
            column.into(),
            kind.as_str().into(),
            phase.as_str().into(),
            0i64.into(),
            target.map(str::to_owned).into(),
            now_ms().into(),
        ])
        .on_conflict(
            // MySQL has no `DO NOTHING`: `do_nothing_on` renders a no-op
            // `ON DUPLICATE KEY UPDATE table_name = table_name` there.
            OnConflict::columns([a("table_name"), a("column_name"), a("kind")])
                .do_nothing_on([a("table_name")])
                .to_owned(),
        )
        .to_owned();
    // Two processes may start at once; the loser's insert does nothing. Any other failure
    // is reported with the database's own message.
    let inserted = db.execute(&insert).await;
    match load_kind(db, table, column, kind).await? {
        Some(state) => {
            if inserted.as_ref().is_ok_and(|r| r.rows_affected() == 1) {
                log(db, table, column, kind, None, phase, None, Some("started")).await?;
            }
            Ok(state)
        }
        None => Err(match inserted {
            Err(e) => DbErr::Custom(format!(
                "{STATE_TABLE}: could not record {table}.{column}: {e}"
            )),
            Ok(_) => DbErr::Custom(format!(
                "{STATE_TABLE}: could not record {table}.{column}: the row is missing after insert"
            )),
        }),
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn log<C: ConnectionTrait>(
    db: &C,
    table: &str,
    column: &str,
    kind: Kind,
    from: Option<Phase>,
    to: Phase,
    rows: Option<i64>,
    note: Option<&str>,
) -> Result<(), DbErr> {
    let insert = Query::insert()
        .into_table(a(LOG_TABLE))
        .columns([
            a("table_name"),
            a("column_name"),
            a("kind"),
            a("from_phase"),
            a("to_phase"),
            a("rows_count"),
            a("note"),
            a("at_ms"),
        ])
        .values_panic([
            table.into(),
            column.into(),
            kind.as_str().into(),
            from.map(|p| p.as_str().to_owned()).into(),
            to.as_str().into(),
            rows.into(),
            note.map(|n| n.chars().take(500).collect::<String>()).into(),
            now_ms().into(),
        ])
        .to_owned();
    db.execute(&insert).await.map(|_| ())
}

/// Moves `table.column` to phase `to`, if that move is legal from the phase it is in.
/// Refused moves change nothing and return [`Error::Phase`] (inside the `DbErr`).
///
/// Only the moves that check nothing are made here (`added → dual_write`); every later
/// phase is reached through the step that checks the rows ([`backfill`](super::backfill),
/// [`verify`](super::verify), [`cut_over`](super::cut_over),
/// [`drop_plaintext`](super::drop_plaintext), [`purge`](super::purge)), and refused here
/// with the name of that step.
pub async fn transition<C: ConnectionTrait>(
    db: &C,
    table: &str,
    column: &str,
    to: Phase,
    rows: Option<i64>,
) -> Result<MigrationState, DbErr> {
    transition_kind(db, table, column, Kind::Encrypt, to, rows).await
}

pub(crate) async fn transition_kind<C: ConnectionTrait>(
    db: &C,
    table: &str,
    column: &str,
    kind: Kind,
    to: Phase,
    rows: Option<i64>,
) -> Result<MigrationState, DbErr> {
    let current = load_kind(db, table, column, kind)
        .await?
        .ok_or_else(|| not_started(table, column))?;
    // Every later move checks rows first, so it is made only by the step that checks.
    let step = match to {
        Phase::Added | Phase::DualWrite => None,
        Phase::Backfilling | Phase::Backfilled => Some("moved only by `migrate::backfill`"),
        Phase::Verified => Some("moved only by `migrate::verify`, which checks every row"),
        Phase::CutOver => Some("moved only by `migrate::cut_over`, which re-checks every row"),
        Phase::Dropped => {
            Some("moved only by `migrate::drop_plaintext`, which re-checks every row")
        }
        Phase::Purged => Some("moved only by `migrate::purge`"),
    };
    // An illegal move says why; a legal one that only a checking step may make names it.
    let refusal = current
        .phase
        .check_transition(to)
        .or(step.filter(|_| kind == Kind::Encrypt));
    if let Some(problem) = refusal {
        return Err(Error::Phase {
            table: table.to_owned(),
            column: column.to_owned(),
            from: current.phase.as_str(),
            to: to.as_str(),
            problem,
        }
        .into());
    }
    if !set_phase_if(db, table, column, kind, current.phase, to).await? && current.phase != to {
        return Err(DbErr::Custom(format!(
            "{table}.{column}: the migration phase changed while moving it to {to}; retry"
        )));
    }
    log(db, table, column, kind, Some(current.phase), to, rows, None).await?;
    load_kind(db, table, column, kind)
        .await?
        .ok_or_else(|| not_started(table, column))
}

/// Compare-and-set of one state row's phase: moves it to `to` only if it is in `from`.
/// Returns whether it moved (two processes racing cannot both move it).
async fn set_phase_if<C: ConnectionTrait>(
    db: &C,
    table: &str,
    column: &str,
    kind: Kind,
    from: Phase,
    to: Phase,
) -> Result<bool, DbErr> {
    let update = Query::update()
        .table(a(STATE_TABLE))
        .value(a("phase"), to.as_str())
        .value(a("updated_at_ms"), now_ms())
        .and_where(Expr::col(a("table_name")).eq(table))
        .and_where(Expr::col(a("column_name")).eq(column))
        .and_where(Expr::col(a("kind")).eq(kind.as_str()))
        .and_where(Expr::col(a("phase")).eq(from.as_str()))
        .to_owned();
    Ok(db.execute(&update).await?.rows_affected() == 1)
}

/// Saves a batch's progress; call inside the batch's transaction.
pub(crate) async fn save_cursor<C: ConnectionTrait>(
    db: &C,
    table: &str,
    column: &str,
    kind: Kind,
    cursor: Option<i64>,
    add_rows: i64,
    target: Option<&str>,
) -> Result<(), DbErr> {
    let mut update = Query::update();
    update
        .table(a(STATE_TABLE))
        .value(a("cursor_pk"), cursor)
        .value(a("rows_done"), Expr::col(a("rows_done")).add(add_rows))
        .value(a("updated_at_ms"), now_ms())
        .and_where(Expr::col(a("table_name")).eq(table))
        .and_where(Expr::col(a("column_name")).eq(column))
        .and_where(Expr::col(a("kind")).eq(kind.as_str()));
    if let Some(target) = target {
        update.value(a("target"), target);
    }
    db.execute(&update).await.map(|_| ())
}

pub(crate) fn not_started(table: &str, column: &str) -> DbErr {
    Error::Phase {
        table: table.to_owned(),
        column: column.to_owned(),
        from: "none",
        to: "-",
        problem: "no migration was started for this column: add the encrypted column and call \
                  `migrate::start` (phase `added`), then switch writers to dual write",
    }
    .into()
}

/// Moves every `(column, from)` of `table` to `to` with a compare-and-set on `from`, logging
/// each move. Run it inside one transaction so a table's columns move together: if any
/// column is no longer in its `from` phase, the caller's transaction is rolled back with
/// everything else.
pub(crate) async fn move_columns<C: ConnectionTrait>(
    db: &C,
    table: &str,
    moves: &[(String, Phase)],
    to: Phase,
    rows: Option<i64>,
    note: Option<&str>,
) -> Result<(), DbErr> {
    for (column, from) in moves {
        if let Some(problem) = from.check_transition(to) {
            return Err(Error::Phase {
                table: table.to_owned(),
                column: column.clone(),
                from: from.as_str(),
                to: to.as_str(),
                problem,
            }
            .into());
        }
        if !set_phase_if(db, table, column, Kind::Encrypt, *from, to).await? {
            return Err(DbErr::Custom(format!(
                "{table}.{column}: the migration phase changed while moving it from {from} to \
                 {to} (another process?); nothing was changed, run the step again"
            )));
        }
        log(
            db,
            table,
            column,
            Kind::Encrypt,
            Some(*from),
            to,
            rows,
            note,
        )
        .await?;
    }
    Ok(())
}

/// Moves those of `columns` that are still in phase `from` to `to`, each with a
/// compare-and-set, and returns the ones it moved. A column another process already moved
/// is left alone without error: for moves that several workers may all try (two backfills
/// starting, two repairs demoting), where the second finding the work done is normal.
pub(crate) async fn move_still_in<C: ConnectionTrait + TransactionTrait>(
    db: &C,
    table: &str,
    columns: &[&str],
    from: Phase,
    to: Phase,
    note: Option<&str>,
) -> Result<Vec<String>, DbErr> {
    // One transaction (a savepoint inside the caller's): a crash between two columns must not
    // leave a table's columns in different phases.
    let txn = db.begin().await?;
    let mut moved = Vec::new();
    for column in columns {
        if set_phase_if(&txn, table, column, Kind::Encrypt, from, to).await? {
            log(
                &txn,
                table,
                column,
                Kind::Encrypt,
                Some(from),
                to,
                None,
                note,
            )
            .await?;
            moved.push((*column).to_owned());
        }
    }
    txn.commit().await?;
    Ok(moved)
}

/// Adds sealed-value counts to each column's `rows_done`, in one statement (every worker's
/// batch transaction ends with it, so it is kept short).
pub(crate) async fn add_done<C: ConnectionTrait>(
    db: &C,
    table: &str,
    counts: &[(&str, u64)],
) -> Result<(), DbErr> {
    let counts: Vec<&(&str, u64)> = counts.iter().filter(|(_, n)| *n > 0).collect();
    if counts.is_empty() {
        return Ok(());
    }
    let mut add = sea_orm::sea_query::CaseStatement::new();
    for (column, n) in &counts {
        add = add.case(
            Expr::col(a("column_name")).eq(*column),
            i64::try_from(*n).unwrap_or(i64::MAX),
        );
    }
    let update = Query::update()
        .table(a(STATE_TABLE))
        .value(
            a("rows_done"),
            Expr::col(a("rows_done")).add(add.finally(0i64)),
        )
        .value(a("updated_at_ms"), now_ms())
        .and_where(Expr::col(a("table_name")).eq(table))
        .and_where(Expr::col(a("kind")).eq(Kind::Encrypt.as_str()))
        .and_where(Expr::col(a("column_name")).is_in(counts.iter().map(|(c, _)| *c)))
        .to_owned();
    db.execute(&update).await.map(|_| ())
}

/// The phase of each of `columns` (in order), refusing columns never started. Creates no
/// table (it runs inside transactions, where MySQL would commit on DDL): call
/// [`ensure_tables`] first.
pub(crate) async fn phases<C: ConnectionTrait>(
    db: &C,
    table: &str,
    columns: &[&str],
) -> Result<Vec<Phase>, DbErr> {
    let mut out = Vec::with_capacity(columns.len());
    for column in columns {
        let state = read_kind(db, table, column, Kind::Encrypt)
            .await?
            .ok_or_else(|| not_started(table, column))?;
        out.push(state.phase);
    }
    Ok(out)
}
