//! Writing one batch: every sealed cell of every row in one UPDATE, each cell guarded.
//!
//! PostgreSQL: `UPDATE t SET … FROM (VALUES …) AS v(…) WHERE t.pk = v.k`; SQLite: the same
//! through a `WITH v(…) AS (VALUES …)`. MySQL/MariaDB has no row constructor it types
//! reliably: a derived table of `SELECT ? … UNION ALL SELECT ? …` takes its column types from
//! the first row's parameters, and MariaDB 10.11 crashes (signal 11, in the temporary table's
//! row copy) when a later row holds a longer value. So on MySQL the batch's rows are staged in
//! a session-private temporary table created with the very column types of the migrated
//! table (`CREATE TEMPORARY TABLE … SELECT … FROM t WHERE 1 = 0`), filled by one multi-row
//! INSERT, and applied by one `UPDATE t JOIN staged v …`. sea-query has none of these
//! statements, so the SQL is built here, with every identifier quoted and every value bound.
//!
//! The guard of a cell is the compare-and-set that makes the write safe under concurrent
//! writers: the plaintext is still the one read (null-safe, byte for byte), and the envelope is
//! still the one read (compared by its nonce) or already the one this statement writes. It
//! names no column the statement assigns except through that last alternative, so it holds
//! whatever order MySQL evaluates a multi-table UPDATE's assignments in.

use sea_orm::sea_query::{Expr, ExprTrait, Func, Query};
use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement, Value};

use super::plan::{Cell, EncryptTable, nonce_of};
use super::sql::{a, pk_of};

/// The session-private table a MySQL batch is staged in.
const MYSQL_STAGE: &str = "`encrypted_columns_batch`";

/// Bound parameters per statement, below every backend's limit (SQLite's is 32,766).
const MAX_PARAMS: usize = 30_000;

/// A row of a batch: its key and one judged cell per plan column.
pub(crate) struct RowCells {
    pub id: i64,
    pub cells: Vec<Cell>,
}

/// What a batch wrote, counted after the write inside its transaction (so exact: the
/// rows stay locked until commit).
#[derive(Debug, Default, Clone)]
pub(crate) struct Written {
    /// Cells written, per plan column.
    pub cells: Vec<u64>,
    /// Cells the guard refused (the application changed them), per plan column.
    pub refused: Vec<u64>,
    /// Rows with at least one cell written.
    pub rows: u64,
}

fn quote(backend: DbBackend, name: &str) -> String {
    match backend {
        DbBackend::MySql => format!("`{}`", name.replace('`', "``")),
        _ => format!("\"{}\"", name.replace('"', "\"\"")),
    }
}

/// Writes the cells of `rows` that have something to write, in as few statements as the
/// parameter limit allows (one for any ordinary batch). Run inside the batch's transaction.
pub(crate) async fn write<D: ConnectionTrait>(
    db: &D,
    plan: &EncryptTable,
    rows: &[RowCells],
) -> Result<Written, DbErr> {
    let columns = plan.columns.len();
    let mut written = Written {
        cells: vec![0; columns],
        refused: vec![0; columns],
        rows: 0,
    };
    // Only columns with a write in this batch take part; only rows with a write are sent.
    let active: Vec<usize> = (0..columns)
        .filter(|&c| rows.iter().any(|r| r.cells[c].write.is_some()))
        .collect();
    let rows: Vec<&RowCells> = rows
        .iter()
        .filter(|r| r.cells.iter().any(|c| c.write.is_some()))
        .collect();
    if active.is_empty() || rows.is_empty() {
        return Ok(written);
    }
    // Compare envelopes by nonce only where one was read (repair); a backfill writes only
    // where there was none, which `IS NULL` checks without a parameter.
    let cas = rows
        .iter()
        .flat_map(|r| &r.cells)
        .any(|c| c.write.is_some() && c.old_nonce.is_some());
    let per_row = 1 + active
        .iter()
        .map(|&c| 3 + usize::from(cas) + plan.columns[c].indexes().len())
        .sum::<usize>();
    let chunk = Ord::max(MAX_PARAMS / per_row, 1);
    let backend = db.get_database_backend();
    for part in rows.chunks(chunk) {
        if backend == DbBackend::MySql {
            stage_mysql(db, plan, &active, cas, part).await?;
        }
        db.execute_raw(statement(backend, plan, &active, cas, part))
            .await?;
    }
    if backend == DbBackend::MySql {
        db.execute_unprepared(&format!("DROP TEMPORARY TABLE IF EXISTS {MYSQL_STAGE}"))
            .await?;
    }
    count(db, plan, &active, &rows, &mut written).await?;
    Ok(written)
}

/// The nonce of the envelope in column `enc`, in SQL (`substr` on all three backends):
/// the fingerprint the write guard compares, as [`nonce_of`] takes it in Rust.
fn nonce_sql(enc: &str) -> String {
    format!(
        "substr({enc}, {}, {})",
        1 + crate::envelope::HEADER_LEN,
        crate::envelope::NONCE_LEN
    )
}

/// The columns of the batch's value rows: key, then per active column its write flag,
/// plaintext read, envelope nonce read, new envelope and new index values.
fn value_names(plan: &EncryptTable, active: &[usize], cas: bool) -> Vec<String> {
    let mut names = vec!["k".to_owned()];
    for &c in active {
        names.extend([format!("w{c}"), format!("p{c}")]);
        if cas {
            names.push(format!("o{c}"));
        }
        names.push(format!("e{c}"));
        for i in 0..plan.columns[c].indexes().len() {
            names.push(format!("x{c}_{i}"));
        }
    }
    names
}

/// The values of `rows`, row by row, in [`value_names`] order. On MySQL a cell that is not
/// written carries its plaintext as read anyway: the staging column copies the plaintext
/// column's type, NOT NULL included.
fn values(
    backend: DbBackend,
    plan: &EncryptTable,
    active: &[usize],
    cas: bool,
    rows: &[&RowCells],
) -> Vec<Value> {
    let mut values: Vec<Value> = Vec::new();
    for row in rows {
        values.push(row.id.into());
        for &c in active {
            let job = &plan.columns[c];
            let cell = &row.cells[c];
            match &cell.write {
                Some(w) => {
                    values.push(1i32.into());
                    values.push(cell.plain.clone());
                    if cas {
                        values.push(cell.old_nonce.clone().into());
                    }
                    values.push(w.envelope.clone().into());
                    for x in &w.indexes {
                        values.push(x.clone().into());
                    }
                }
                None => {
                    values.push(0i32.into());
                    values.push(if backend == DbBackend::MySql {
                        cell.plain.clone()
                    } else {
                        job.null_plain()
                    });
                    if cas {
                        values.push(Option::<Vec<u8>>::None.into());
                    }
                    values.push(Option::<Vec<u8>>::None.into());
                    for _ in job.indexes() {
                        values.push(Option::<Vec<u8>>::None.into());
                    }
                }
            }
        }
    }
    values
}

/// MySQL: (re)creates the staging table with the migrated table's column types and fills it
/// with `rows`.
async fn stage_mysql<D: ConnectionTrait>(
    db: &D,
    plan: &EncryptTable,
    active: &[usize],
    cas: bool,
    rows: &[&RowCells],
) -> Result<(), DbErr> {
    let q = |name: &str| quote(DbBackend::MySql, name);
    let t = q(&plan.table);
    let col = |name: &str| format!("{t}.{}", q(name));
    let mut select = vec![format!("{} AS {}", col(&plan.primary_key), q("k"))];
    for &c in active {
        let job = &plan.columns[c];
        let enc = col(job.encrypted());
        select.push(format!("0 AS {}", q(&format!("w{c}"))));
        select.push(format!(
            "{} AS {}",
            col(job.plaintext()),
            q(&format!("p{c}"))
        ));
        if cas {
            select.push(format!("{} AS {}", nonce_sql(&enc), q(&format!("o{c}"))));
        }
        select.push(format!("{enc} AS {}", q(&format!("e{c}"))));
        for (i, (index, _)) in job.indexes().iter().enumerate() {
            select.push(format!("{} AS {}", col(index), q(&format!("x{c}_{i}"))));
        }
    }
    db.execute_unprepared(&format!("DROP TEMPORARY TABLE IF EXISTS {MYSQL_STAGE}"))
        .await?;
    db.execute_unprepared(&format!(
        "CREATE TEMPORARY TABLE {MYSQL_STAGE} SELECT {} FROM {t} WHERE 1 = 0",
        select.join(", ")
    ))
    .await?;
    let names = value_names(plan, active, cas);
    let row = format!("({})", vec!["?"; names.len()].join(", "));
    let sql = format!(
        "INSERT INTO {MYSQL_STAGE} ({}) VALUES {}",
        names.iter().map(|n| q(n)).collect::<Vec<_>>().join(", "),
        vec![row; rows.len()].join(", ")
    );
    db.execute_raw(Statement::from_sql_and_values(
        DbBackend::MySql,
        sql,
        values(DbBackend::MySql, plan, active, cas, rows),
    ))
    .await
    .map(|_| ())
}

fn statement(
    backend: DbBackend,
    plan: &EncryptTable,
    active: &[usize],
    cas: bool,
    rows: &[&RowCells],
) -> Statement {
    let q = |name: &str| quote(backend, name);
    let t = q(&plan.table);
    let col = |name: &str| format!("{t}.{}", q(name));
    let names = value_names(plan, active, cas);
    let v = |name: &str| format!("v.{}", q(name));

    let values = values(backend, plan, active, cas, rows);

    let null_safe_eq = |x: String, y: String| match backend {
        DbBackend::MySql => format!("{x} <=> {y}"),
        DbBackend::Postgres => format!("{x} IS NOT DISTINCT FROM {y}"),
        _ => format!("{x} IS {y}"),
    };
    // The guard of each active column.
    let guards: Vec<String> = active
        .iter()
        .map(|&c| {
            let job = &plan.columns[c];
            let (plain, enc) = (col(job.plaintext()), col(job.encrypted()));
            let plain_eq = if backend == DbBackend::MySql && job.is_text() {
                null_safe_eq(
                    format!("CAST({plain} AS BINARY)"),
                    format!("CAST({} AS BINARY)", v(&format!("p{c}"))),
                )
            } else {
                null_safe_eq(plain, v(&format!("p{c}")))
            };
            // SQLite would build an automatic index on `v.w = 1` and scan the whole table
            // once per batch; the unary `+` keeps it on the primary key lookup.
            let plus = if backend == DbBackend::Sqlite {
                "+"
            } else {
                ""
            };
            format!(
                "({plus}{w} = 1 AND {plain_eq} AND ({nonce_eq} OR {enc} = {e}))",
                w = v(&format!("w{c}")),
                nonce_eq = if cas {
                    null_safe_eq(nonce_sql(&enc), v(&format!("o{c}")))
                } else {
                    format!("{enc} IS NULL")
                },
                e = v(&format!("e{c}")),
            )
        })
        .collect();
    // Index columns are assigned before the envelope: harmless everywhere, and the order
    // MySQL's single-table rule would want.
    let mut assignments = Vec::new();
    for (&c, guard) in active.iter().zip(&guards) {
        let job = &plan.columns[c];
        let mut targets: Vec<(String, String)> = job
            .indexes()
            .iter()
            .enumerate()
            .map(|(i, (name, _))| (name.clone(), format!("x{c}_{i}")))
            .collect();
        targets.push((job.encrypted().to_owned(), format!("e{c}")));
        for (target, source) in targets {
            let lhs = match backend {
                DbBackend::MySql => col(&target),
                _ => q(&target),
            };
            assignments.push(format!(
                "{lhs} = CASE WHEN {guard} THEN {} ELSE {} END",
                v(&source),
                col(&target)
            ));
        }
    }
    let any_guard = guards.join(" OR ");
    let key_eq = format!("{} = {}", col(&plan.primary_key), v("k"));
    let quoted_names: Vec<String> = names.iter().map(|n| q(n)).collect();

    let mut param = 0usize;
    let mut next = || {
        param += 1;
        match backend {
            DbBackend::Postgres => format!("${param}"),
            _ => "?".to_owned(),
        }
    };
    let sql = match backend {
        DbBackend::MySql => {
            return Statement::from_string(
                backend,
                format!(
                    "UPDATE {t} JOIN {MYSQL_STAGE} AS v ON {key_eq} SET {} WHERE {any_guard}",
                    assignments.join(", ")
                ),
            );
        }
        _ => {
            let tuples: Vec<String> = rows
                .iter()
                .map(|_| {
                    let fields: Vec<String> = names.iter().map(|_| next()).collect();
                    format!("({})", fields.join(", "))
                })
                .collect();
            if backend == DbBackend::Postgres {
                format!(
                    "UPDATE {t} SET {} FROM (VALUES {}) AS v({}) WHERE {key_eq} AND ({any_guard})",
                    assignments.join(", "),
                    tuples.join(", "),
                    quoted_names.join(", ")
                )
            } else {
                format!(
                    "WITH v({}) AS (VALUES {}) UPDATE {t} SET {} FROM v WHERE {key_eq} AND \
                     ({any_guard})",
                    quoted_names.join(", "),
                    tuples.join(", "),
                    assignments.join(", ")
                )
            }
        }
    };
    Statement::from_sql_and_values(backend, sql, values)
}

/// Counts, per column, the cells that now hold what this batch wrote. Inside the batch's
/// transaction the written rows stay locked, so no one else can have written them since.
async fn count<D: ConnectionTrait>(
    db: &D,
    plan: &EncryptTable,
    active: &[usize],
    rows: &[&RowCells],
    written: &mut Written,
) -> Result<(), DbErr> {
    let pk = &plan.primary_key;
    let mut select = Query::select();
    select.column(a(pk));
    for &c in active {
        let enc = plan.columns[c].encrypted();
        select.expr_as(
            Func::cust(a("substr"))
                .arg(Expr::col(a(enc)))
                .arg(1 + crate::envelope::HEADER_LEN as i32)
                .arg(crate::envelope::NONCE_LEN as i32),
            a(&format!("n{c}")),
        );
    }
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let mut found = std::collections::HashMap::with_capacity(ids.len());
    for part in ids.chunks(MAX_PARAMS) {
        let mut s = select.clone();
        s.from(a(&plan.table))
            .and_where(Expr::col(a(pk)).is_in(part.iter().copied()));
        for row in db.query_all(&s).await? {
            let id = pk_of(&row, &plan.table, pk)?;
            let mut now = Vec::with_capacity(active.len());
            for &c in active {
                let nonce: Option<Vec<u8>> = row.try_get("", &format!("n{c}"))?;
                now.push(nonce);
            }
            found.insert(id, now);
        }
    }
    for row in rows {
        let now = found.get(&row.id);
        let mut any = false;
        for (slot, &c) in active.iter().enumerate() {
            let Some(w) = &row.cells[c].write else {
                continue;
            };
            let stored = now.and_then(|n| n[slot].as_deref());
            let ours = match &w.envelope {
                Some(envelope) => stored == Some(nonce_of(envelope).as_slice()),
                None => now.is_some() && stored.is_none(),
            };
            if ours {
                written.cells[c] += 1;
                any = true;
            } else {
                written.refused[c] += 1;
            }
        }
        if any {
            written.rows += 1;
        }
    }
    Ok(())
}
