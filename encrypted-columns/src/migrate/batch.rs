//! Writing one batch: every sealed cell of every row in one statement, each cell guarded.
//!
//! PostgreSQL: `UPDATE t SET … FROM (VALUES …) AS v(…) WHERE t.pk = v.k`; SQLite: the same
//! through a `WITH v(…) AS (VALUES …)`; MySQL/MariaDB: `UPDATE t JOIN (SELECT … UNION ALL
//! SELECT …) v ON … SET …`. sea-query has no such statement, so the SQL is built here, with
//! every identifier quoted and every value bound.
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
    let per_row = 1 + active
        .iter()
        .map(|&c| 4 + plan.columns[c].indexes().len())
        .sum::<usize>();
    let chunk = Ord::max(MAX_PARAMS / per_row, 1);
    for part in rows.chunks(chunk) {
        let statement = statement(db.get_database_backend(), plan, &active, part);
        db.execute_raw(statement).await?;
    }
    count(db, plan, &active, &rows, &mut written).await?;
    Ok(written)
}

fn statement(
    backend: DbBackend,
    plan: &EncryptTable,
    active: &[usize],
    rows: &[&RowCells],
) -> Statement {
    let q = |name: &str| quote(backend, name);
    let t = q(&plan.table);
    let col = |name: &str| format!("{t}.{}", q(name));
    let mut names = vec!["k".to_owned()];
    for &c in active {
        names.extend([
            format!("w{c}"),
            format!("p{c}"),
            format!("o{c}"),
            format!("e{c}"),
        ]);
        for i in 0..plan.columns[c].indexes().len() {
            names.push(format!("x{c}_{i}"));
        }
    }
    let v = |name: &str| format!("v.{}", q(name));

    // Values, row by row, in `names` order.
    let mut values: Vec<Value> = Vec::with_capacity(rows.len() * names.len());
    for row in rows {
        values.push(row.id.into());
        for &c in active {
            let job = &plan.columns[c];
            let cell = &row.cells[c];
            match &cell.write {
                Some(w) => {
                    values.push(1i32.into());
                    values.push(cell.plain.clone());
                    values.push(cell.old_nonce.clone().into());
                    values.push(w.envelope.clone().into());
                    for x in &w.indexes {
                        values.push(x.clone().into());
                    }
                }
                None => {
                    values.push(0i32.into());
                    values.push(job.null_plain());
                    values.push(Option::<Vec<u8>>::None.into());
                    values.push(Option::<Vec<u8>>::None.into());
                    for _ in job.indexes() {
                        values.push(Option::<Vec<u8>>::None.into());
                    }
                }
            }
        }
    }

    let null_safe_eq = |x: String, y: String| match backend {
        DbBackend::MySql => format!("{x} <=> {y}"),
        DbBackend::Postgres => format!("{x} IS NOT DISTINCT FROM {y}"),
        _ => format!("{x} IS {y}"),
    };
    let substr = match backend {
        DbBackend::MySql => "SUBSTRING",
        _ => "substr",
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
            format!(
                "({w} = 1 AND {plain_eq} AND ({nonce_eq} OR {enc} = {e}))",
                w = v(&format!("w{c}")),
                nonce_eq = null_safe_eq(
                    format!(
                        "{substr}({enc}, {}, {})",
                        1 + crate::envelope::HEADER_LEN,
                        crate::envelope::NONCE_LEN
                    ),
                    v(&format!("o{c}"))
                ),
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
            let selects: Vec<String> = rows
                .iter()
                .enumerate()
                .map(|(i, _)| {
                    let fields: Vec<String> = quoted_names
                        .iter()
                        .map(|n| {
                            if i == 0 {
                                format!("{} AS {n}", next())
                            } else {
                                next()
                            }
                        })
                        .collect();
                    format!("SELECT {}", fields.join(", "))
                })
                .collect();
            format!(
                "UPDATE {t} JOIN ({}) AS v ON {key_eq} SET {} WHERE {any_guard}",
                selects.join(" UNION ALL "),
                assignments.join(", ")
            )
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
