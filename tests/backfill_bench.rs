//! What `migrate::backfill` achieves: rows per second over 100,000 rows with 8 PII columns
//! of 50 bytes each, next to copying the same plaintext without encryption.
//!
//! ```sh
//! TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test \
//! TEST_MYSQL_URL=mysql://root@127.0.0.1:3306/test \
//! cargo bench -p encrypted-columns-tests --bench backfill
//! ```
//!
//! SQLite (a temp file) always runs; PostgreSQL and MySQL/MariaDB run when their URL is set.
//! Each backend gets a fresh database (schema on PostgreSQL) through [`TestDb`], dropped at
//! the end.
//!
//! # What is timed, per backend and batch size (default 500 and 2,000 rows)
//! * `encrypted`: `migrate::backfill` of each of the 8 columns in turn (8 runs over the
//!   table; a row is done when all 8 are sealed) — keyset-paginated batches, sealing in
//!   Rust, one guarded `UPDATE … CASE` plus cursor save per batch and transaction.
//! * `keyset copy`: the same loop and SQL without encryption: read a batch of plaintext,
//!   write it back into a plaintext copy column through the same guarded `CASE` UPDATE
//!   (byte-exact on MySQL), count skipped rows, save a cursor, commit. The difference to
//!   `encrypted` is what sealing and envelopes cost.
//! * `server copy`: `UPDATE … SET copy = plain WHERE id > a AND id <= b` per batch, one
//!   transaction each: the floor, no data leaves the database.
//!
//! Rows/s is 100,000 divided by the time for all 8 columns; column values/s is 8× that. The
//! ratios divide `encrypted` time by each baseline's. Setup (state rows, resets, `VACUUM`
//! on PostgreSQL between runs) is not timed.
//!
//! # Output
//! A table on stdout and `bench-results/backfill.json` at the workspace root.
//! `BACKFILL_BENCH_ROWS` (default 100000), `BACKFILL_BENCH_BATCHES` (default `500,2000`) and
//! `BACKFILL_BENCH_BACKENDS` (e.g. `postgres`) make quicker runs; any non-default size writes
//! its JSON to the temp directory instead, unless `BACKFILL_BENCH_OUT` names a directory.
//! Without `--bench` (e.g. `cargo test --benches`) the binary does nothing.

use std::error::Error;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use encrypted_columns::migrate::{self, EncryptColumn, Phase, RunOptions, state};
use encrypted_columns::{ColumnContext, column_context};
use encrypted_columns_tests::{Backend, TestDb, init_keyring};
use sea_orm::sea_query::{
    Alias, CaseStatement, ColumnDef, Expr, ExprTrait, Func, Order, Query, Table,
};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, TransactionTrait, Value};
use serde_json::json;

type Res<T> = Result<T, Box<dyn Error>>;

/// The 8 PII columns (each has `<name>_enc` and `<name>_copy` companions).
const COLUMNS: [&str; 8] = [
    "first_name",
    "last_name",
    "email",
    "phone",
    "street",
    "city",
    "national_id",
    "insurance_id",
];
/// Bytes of every plaintext value.
const VALUE_LEN: usize = 50;
/// Rows per INSERT while seeding (9 bound values each).
const SEED_CHUNK: i32 = 1_000;
/// The issue's target on PostgreSQL.
const TARGET_ROWS_PER_S: f64 = 20_000.0;

column_context!(FirstName, table = "bench_pii", column = "first_name");
column_context!(LastName, table = "bench_pii", column = "last_name");
column_context!(Email, table = "bench_pii", column = "email");
column_context!(Phone, table = "bench_pii", column = "phone");
column_context!(Street, table = "bench_pii", column = "street");
column_context!(City, table = "bench_pii", column = "city");
column_context!(NationalId, table = "bench_pii", column = "national_id");
column_context!(InsuranceId, table = "bench_pii", column = "insurance_id");

fn a(name: &str) -> Alias {
    Alias::new(name)
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Row `id`'s value of column `col`: exactly 50 bytes, distinct per row and column.
fn value(col: usize, id: i32) -> String {
    let mut s = format!("{}-{id:08}-", COLUMNS[col]);
    let mut x = (id as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ col as u64;
    while s.len() < VALUE_LEN {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.push(char::from(b'a' + (x % 26) as u8));
    }
    s
}

async fn create_and_seed(db: &DatabaseConnection, rows: i32) -> Res<()> {
    let mut create = Table::create();
    create
        .table(a("bench_pii"))
        .col(ColumnDef::new(a("id")).integer().not_null().primary_key());
    for name in COLUMNS {
        create
            .col(ColumnDef::new(a(name)).string_len(64).null())
            .col(ColumnDef::new(a(&format!("{name}_enc"))).blob().null())
            .col(
                ColumnDef::new(a(&format!("{name}_copy")))
                    .string_len(64)
                    .null(),
            );
    }
    db.execute(&create.to_owned()).await?;
    let mut next = 1;
    while next <= rows {
        let txn = db.begin().await?;
        let end = Ord::min(next + 10 * SEED_CHUNK - 1, rows);
        while next <= end {
            let chunk_end = Ord::min(next + SEED_CHUNK - 1, end);
            let mut insert = Query::insert();
            insert
                .into_table(a("bench_pii"))
                .columns(std::iter::once(a("id")).chain(COLUMNS.iter().map(|c| a(c))));
            for id in next..=chunk_end {
                let mut values: Vec<Expr> = vec![id.into()];
                values.extend((0..COLUMNS.len()).map(|col| Expr::from(value(col, id))));
                insert.values_panic(values);
            }
            txn.execute(&insert).await?;
            next = chunk_end + 1;
        }
        txn.commit().await?;
    }
    analyze(db).await
}

async fn analyze(db: &DatabaseConnection) -> Res<()> {
    let sql = match db.get_database_backend() {
        DbBackend::MySql => "ANALYZE TABLE bench_pii",
        DbBackend::Postgres => "VACUUM ANALYZE bench_pii",
        _ => "ANALYZE bench_pii",
    };
    db.execute_unprepared(sql).await?;
    Ok(())
}

/// Sets every `<col><suffix>` column to NULL and forgets the migration state, then lets
/// PostgreSQL reclaim the dead rows, so each timed run starts from the same table.
async fn reset(db: &DatabaseConnection, suffix: &str) -> Res<()> {
    let mut update = Query::update();
    update.table(a("bench_pii"));
    for name in COLUMNS {
        let null = if suffix == "_enc" {
            Value::Bytes(None)
        } else {
            Value::String(None)
        };
        update.value(a(&format!("{name}{suffix}")), null);
    }
    db.execute(&update).await?;
    state::ensure_tables(db).await?;
    db.execute(
        &Query::delete()
            .from_table(a(state::STATE_TABLE))
            .and_where(Expr::col(a("table_name")).eq("bench_pii"))
            .to_owned(),
    )
    .await?;
    analyze(db).await
}

/// How many rows of `column` are NULL.
async fn nulls(db: &DatabaseConnection, column: &str) -> Res<i64> {
    let q = Query::select()
        .expr_as(Func::count(Expr::col(a("id"))), a("n"))
        .from(a("bench_pii"))
        .and_where(Expr::col(a(column)).is_null())
        .to_owned();
    Ok(db
        .query_one(&q)
        .await?
        .ok_or("no count")?
        .try_get("", "n")?)
}

/// `migrate::backfill` of one column, from phase `dual_write`.
async fn backfill_one<C: ColumnContext>(
    db: &DatabaseConnection,
    name: &str,
    batch: u64,
) -> Res<Duration> {
    state::start(db, "bench_pii", name).await?;
    state::transition(db, "bench_pii", name, Phase::DualWrite, None).await?;
    let encrypted = format!("{name}_enc");
    let spec = EncryptColumn::<String, C>::new("bench_pii", "id", name, &encrypted);
    let options = RunOptions {
        batch_size: batch,
        ..Default::default()
    };
    let started = Instant::now();
    let report = migrate::backfill(db, &spec, &options, |_| {}).await?;
    let took = started.elapsed();
    if !report.finished || nulls(db, &encrypted).await? != 0 {
        return Err(format!("{name}: backfill incomplete: {report:?}").into());
    }
    Ok(took)
}

async fn encrypted(db: &DatabaseConnection, batch: u64) -> Res<Duration> {
    reset(db, "_enc").await?;
    let mut total = Duration::ZERO;
    for (i, name) in COLUMNS.iter().enumerate() {
        total += match i {
            0 => backfill_one::<FirstName>(db, name, batch).await?,
            1 => backfill_one::<LastName>(db, name, batch).await?,
            2 => backfill_one::<Email>(db, name, batch).await?,
            3 => backfill_one::<Phone>(db, name, batch).await?,
            4 => backfill_one::<Street>(db, name, batch).await?,
            5 => backfill_one::<City>(db, name, batch).await?,
            6 => backfill_one::<NationalId>(db, name, batch).await?,
            _ => backfill_one::<InsuranceId>(db, name, batch).await?,
        };
    }
    Ok(total)
}

/// The backfill's loop and SQL without encryption (see the module docs).
async fn keyset_copy(db: &DatabaseConnection, batch: u64) -> Res<Duration> {
    reset(db, "_copy").await?;
    db.execute_unprepared(
        "CREATE TABLE IF NOT EXISTS bench_cursor (k INTEGER PRIMARY KEY, c BIGINT)",
    )
    .await?;
    db.execute_unprepared("DELETE FROM bench_cursor").await?;
    db.execute_unprepared("INSERT INTO bench_cursor (k, c) VALUES (1, 0)")
        .await?;
    let mysql = db.get_database_backend() == DbBackend::MySql;
    let exact = |col: &str, v: String| -> Expr {
        if mysql {
            Expr::expr(Func::cast_as(Expr::col(a(col)), a("BINARY")))
                .eq(Func::cast_as(Expr::val(v), a("BINARY")))
        } else {
            Expr::col(a(col)).eq(v)
        }
    };
    let started = Instant::now();
    for name in COLUMNS {
        let copy = format!("{name}_copy");
        let mut cursor = i64::MIN;
        loop {
            let select = Query::select()
                .columns([a("id"), a(name)])
                .from(a("bench_pii"))
                .and_where(Expr::col(a("id")).gt(cursor))
                .and_where(Expr::col(a(&copy)).is_null())
                .and_where(Expr::col(a(name)).is_not_null())
                .order_by(a("id"), Order::Asc)
                .limit(batch)
                .to_owned();
            let rows = db.query_all(&select).await?;
            if rows.is_empty() {
                break;
            }
            let mut ids = Vec::with_capacity(rows.len());
            let mut case = CaseStatement::new();
            for row in &rows {
                let id: i32 = row.try_get("", "id")?;
                let v: String = row.try_get("", name)?;
                let guard = Expr::col(a("id")).eq(id).and(exact(name, v.clone()));
                case = case.case(guard, Expr::val(v));
                ids.push(id);
            }
            let last = i64::from(*ids.last().ok_or("empty batch")?);
            let update = Query::update()
                .table(a("bench_pii"))
                .value(a(&copy), case.finally(Expr::col(a(&copy))))
                .and_where(Expr::col(a("id")).is_in(ids.clone()))
                .and_where(Expr::col(a(&copy)).is_null())
                .to_owned();
            let left = Query::select()
                .expr_as(Func::count(Expr::col(a("id"))), a("n"))
                .from(a("bench_pii"))
                .and_where(Expr::col(a("id")).is_in(ids))
                .and_where(Expr::col(a(&copy)).is_null())
                .to_owned();
            let save = Query::update()
                .table(a("bench_cursor"))
                .value(a("c"), last)
                .and_where(Expr::col(a("k")).eq(1))
                .to_owned();
            let txn = db.begin().await?;
            txn.execute(&update).await?;
            txn.query_one(&left).await?;
            txn.execute(&save).await?;
            txn.commit().await?;
            cursor = last;
        }
    }
    let took = started.elapsed();
    for name in COLUMNS {
        if nulls(db, &format!("{name}_copy")).await? != 0 {
            return Err(format!("{name}: keyset copy incomplete").into());
        }
    }
    Ok(took)
}

/// `UPDATE … SET copy = plain` per id range of `batch` rows, one transaction each.
async fn server_copy(db: &DatabaseConnection, rows: i32, batch: u64) -> Res<Duration> {
    reset(db, "_copy").await?;
    let step = i32::try_from(batch)?;
    let started = Instant::now();
    for name in COLUMNS {
        let copy = format!("{name}_copy");
        let mut from = 0;
        while from < rows {
            let update = Query::update()
                .table(a("bench_pii"))
                .value(a(&copy), Expr::col(a(name)))
                .and_where(Expr::col(a("id")).gt(from))
                .and_where(Expr::col(a("id")).lte(from + step))
                .to_owned();
            let txn = db.begin().await?;
            txn.execute(&update).await?;
            txn.commit().await?;
            from += step;
        }
    }
    Ok(started.elapsed())
}

/// One (backend, batch size) result.
struct Measured {
    backend: Backend,
    batch: u64,
    encrypted: Duration,
    keyset_copy: Duration,
    server_copy: Duration,
}

fn rows_per_s(rows: i32, took: Duration) -> f64 {
    f64::from(rows) / took.as_secs_f64()
}

async fn bench_backend(
    backend: Backend,
    rows: i32,
    batches: &[u64],
    out: &mut Vec<Measured>,
) -> Res<()> {
    let db = match TestDb::create(backend, "bench_backfill").await? {
        Some(db) => db,
        None => {
            eprintln!(
                "backfill/{backend}: skipped, {} not set",
                backend.url_var().unwrap_or("?")
            );
            return Ok(());
        }
    };
    let outcome = async {
        let started = Instant::now();
        create_and_seed(&db.conn, rows).await?;
        eprintln!(
            "backfill/{backend}: seeded {rows} rows x {} columns in {:.1} s",
            COLUMNS.len(),
            started.elapsed().as_secs_f64()
        );
        for &batch in batches {
            let encrypted = encrypted(&db.conn, batch).await?;
            let keyset_copy = keyset_copy(&db.conn, batch).await?;
            let server_copy = server_copy(&db.conn, rows, batch).await?;
            let m = Measured {
                backend,
                batch,
                encrypted,
                keyset_copy,
                server_copy,
            };
            eprintln!(
                "backfill/{backend}/batch {batch}: encrypted {:.1} s ({:.0} rows/s), keyset copy \
                 {:.1} s, server copy {:.1} s",
                encrypted.as_secs_f64(),
                rows_per_s(rows, encrypted),
                keyset_copy.as_secs_f64(),
                server_copy.as_secs_f64()
            );
            out.push(m);
        }
        Res::Ok(())
    }
    .await;
    let dropped = db.drop_database().await;
    outcome?;
    dropped.map_err(|e| e.into())
}

fn main() -> Res<()> {
    if !std::env::args().any(|arg| arg == "--bench") {
        return Ok(());
    }
    let rows: i32 = env_or("BACKFILL_BENCH_ROWS", 100_000);
    let batches_var = std::env::var("BACKFILL_BENCH_BATCHES").unwrap_or_else(|_| "500,2000".into());
    let batches: Vec<u64> = batches_var
        .split(',')
        .map(|b| b.trim().parse())
        .collect::<Result<_, _>>()?;
    let wanted = std::env::var("BACKFILL_BENCH_BACKENDS").ok();
    let default_size = rows == 100_000 && batches == [500, 2000] && wanted.is_none();
    init_keyring();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut results = Vec::new();
    for backend in [Backend::Sqlite, Backend::Postgres, Backend::MySql] {
        if wanted
            .as_deref()
            .is_some_and(|w| !w.split(',').any(|b| b.trim() == backend.to_string()))
        {
            continue;
        }
        runtime.block_on(bench_backend(backend, rows, &batches, &mut results))?;
    }

    println!(
        "\nbackfill: {rows} rows x {} PII columns of {VALUE_LEN} B (rows/s = all {} columns \
         sealed)\n",
        COLUMNS.len(),
        COLUMNS.len()
    );
    println!(
        "{:<9} {:>6} | {:>10} {:>13} | {:>10} {:>7} | {:>10} {:>7}",
        "backend",
        "batch",
        "rows/s",
        "col values/s",
        "keyset cp/s",
        "ratio",
        "server cp/s",
        "ratio"
    );
    let mut json_results = Vec::new();
    for m in &results {
        let enc = rows_per_s(rows, m.encrypted);
        let keyset = rows_per_s(rows, m.keyset_copy);
        let server = rows_per_s(rows, m.server_copy);
        let vs_keyset = m.encrypted.as_secs_f64() / m.keyset_copy.as_secs_f64();
        let vs_server = m.encrypted.as_secs_f64() / m.server_copy.as_secs_f64();
        println!(
            "{:<9} {:>6} | {:>10.0} {:>13.0} | {:>10.0} {:>6.2}x | {:>10.0} {:>6.2}x",
            m.backend.to_string(),
            m.batch,
            enc,
            enc * COLUMNS.len() as f64,
            keyset,
            vs_keyset,
            server,
            vs_server
        );
        json_results.push(json!({
            "backend": m.backend.to_string(),
            "batch_size": m.batch,
            "encrypted": {
                "seconds": m.encrypted.as_secs_f64(),
                "rows_per_s": enc,
                "column_values_per_s": enc * COLUMNS.len() as f64,
            },
            "plaintext_keyset_copy": {
                "seconds": m.keyset_copy.as_secs_f64(),
                "rows_per_s": keyset,
            },
            "plaintext_server_copy": {
                "seconds": m.server_copy.as_secs_f64(),
                "rows_per_s": server,
            },
            "time_ratio_vs_keyset_copy": vs_keyset,
            "time_ratio_vs_server_copy": vs_server,
        }));
    }
    let best_pg = results
        .iter()
        .filter(|m| m.backend == Backend::Postgres)
        .map(|m| rows_per_s(rows, m.encrypted))
        .fold(None, |best: Option<f64>, r| {
            Some(best.map_or(r, |b| b.max(r)))
        });
    if let Some(best) = best_pg {
        println!(
            "\npostgres target {TARGET_ROWS_PER_S:.0} rows/s: best {best:.0} rows/s ({:.0} column \
             values/s) — {}",
            best * COLUMNS.len() as f64,
            if best >= TARGET_ROWS_PER_S {
                "met"
            } else {
                "MISSED"
            }
        );
    }

    let report = json!({
        "bench": "backfill",
        "command": "cargo bench -p encrypted-columns-tests --bench backfill",
        "rows": rows,
        "pii_columns": COLUMNS.len(),
        "value_bytes": VALUE_LEN,
        "rows_per_s_means": "rows / seconds to seal all pii_columns of every row \
                             (one migrate::backfill per column)",
        "profile": "release (cargo bench)",
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "postgres_target_rows_per_s": TARGET_ROWS_PER_S,
        "postgres_best_rows_per_s": best_pg,
        "results": json_results,
    });
    let dir = match std::env::var("BACKFILL_BENCH_OUT") {
        Ok(dir) => PathBuf::from(dir),
        Err(_) if default_size => {
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../bench-results"))
        }
        Err(_) => std::env::temp_dir(),
    };
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("backfill.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")?;
    println!("\nwrote {}", path.display());
    Ok(())
}
