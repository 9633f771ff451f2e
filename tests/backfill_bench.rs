//! What `migrate::backfill` achieves: rows per second over 100,000 rows with 8 PII columns
//! of 50 bytes each, next to the floor of rewriting those rows on the same server.
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
//! In this order, each from the same starting table (see below):
//! * `floor, 1 statement`: `UPDATE bench_pii SET <8 copy columns> = <8 plaintext columns>`,
//!   one autocommit statement: no data leaves the server. The issue's yardstick ("a plain
//!   server-side UPDATE that rewrites the same rows").
//! * `floor, per batch`: the same UPDATE per id range of `batch` rows
//!   (`WHERE id > a AND id <= b`), one transaction each, the way a careful operator would
//!   run it on a live table.
//! * `floor, envelope-sized`: one autocommit UPDATE that fills the 8 `_enc` columns with
//!   bytes as long as an envelope, computed by the server from the row (the plaintext and its
//!   first bytes again): the server's cost of writing rows as wide as the backfill leaves
//!   them (8 × 95 B of bytes instead of 8 × 50 B of text), still with no data sent.
//! * `client write`: what any client-side encryption has to do at the least: 8
//!   envelope-sized byte strings per row sent from the client into the `_enc` columns, in
//!   the backfill's own statement shape (`UPDATE … FROM (VALUES …)` on PostgreSQL,
//!   `WITH v AS (VALUES …) UPDATE … FROM v` on SQLite; on MariaDB a temporary table typed
//!   like the target columns, one multi-row INSERT into it, then `UPDATE … JOIN` it), split
//!   at the backfill's 30,000-parameter limit, one transaction per batch;
//!   no reading, sealing, guard, read-back or claims. Between it and the floor lies the
//!   cost of sending and binding the data; between it and `encrypted` the library's own.
//! * `encrypted, 1 worker`: one `migrate::backfill` of an `EncryptTable` plan with all 8
//!   columns, from phase `dual_write`: claims, keyset reads, sealing in Rust, one statement
//!   per batch writing every column of every row, the exact-count read-back, the claim's
//!   completion and commit. Rows/s = rows ÷ the time until it returns.
//! * `encrypted, 2 workers`: two concurrent `migrate::backfill` calls on the same plan, each
//!   on its own OS thread, with its own Tokio runtime and its own connection pool (two
//!   application instances, minus the separate address spaces). Rows/s = rows ÷ the wall time
//!   from the common start until both have returned.
//!
//! The ratio `enc/floor` divides the backfill's rows/s by the *faster* of the two floors at
//! the same batch size (target ≥ 0.8); `2w/1w` divides the 2-worker rows/s by the 1-worker
//! rows/s (target ≥ 1.0); `1w/cw` divides the 1-worker rows/s by the client write's. The
//! envelope-sized floor and the client write are not part of the targets: they show where
//! the distance to the floor comes from.
//! Every encrypted run is checked: all 8 × rows values sealed (the workers' `sealed` sum),
//! no NULL envelope left, every column in phase `backfilled`.
//!
//! Every timed run starts from the same table: all envelopes and copy columns NULL, the
//! migration's rows in `encrypted_columns_migrations`, `…_migration_log`, `…_migration_work`
//! and `…_migration_claims` deleted, the 8 columns re-started and moved to `dual_write`, then
//! `VACUUM ANALYZE` (PostgreSQL) / `ANALYZE` (SQLite, MariaDB). That setup is not timed. Each
//! timed run uses pools of its own (the setup connection is idle meanwhile).
//!
//! Next to each time the bench records the CPU it cost: this process's user + system time
//! (client: sealing, SQL building, drivers; on SQLite also the database engine), and the
//! server's: on PostgreSQL the backends of this run's connections (found by
//! `application_name`), on MariaDB the whole `mariadbd` process (so other clients of the
//! shared server count too). What is left of the wall time is waiting (round trips, locks,
//! fsync, other load). The machine's load average (`/proc/loadavg`) is read before and after
//! each backend and the whole run, and after each timed run.
//!
//! # Output
//! A table on stdout and `bench-results/backfill.json` at the workspace root.
//! `BACKFILL_BENCH_ROWS` (default 100000), `BACKFILL_BENCH_BATCHES` (default `500,2000`),
//! `BACKFILL_BENCH_BACKENDS` (e.g. `postgres`) and `BACKFILL_BENCH_RUNS` (default 3: each
//! variant runs that many times, interleaved with the others, and the fastest run counts;
//! all times are in the JSON) make quicker or steadier runs; any non-default setting writes
//! its JSON to the temp directory instead, unless `BACKFILL_BENCH_OUT` names a directory. A
//! failed run is reported in the table and the JSON, and makes the bench exit non-zero.
//! Without `--bench` (e.g. `cargo test --benches`) the binary does nothing.

use std::error::Error;
use std::path::PathBuf;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use encrypted_columns::migrate::{
    self, BackfillReport, CLAIMS_TABLE, EncryptColumn, EncryptTable, Phase, RunOptions, WORK_TABLE,
    state,
};
use encrypted_columns::{Encrypted, column_context};
use encrypted_columns_tests::{Backend, TestDb, init_keyring};
use sea_orm::sea_query::{Alias, ColumnDef, Cond, Expr, ExprTrait, Func, Query, Table};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement,
    TransactionTrait, Value,
};
use serde_json::{Value as Json, json};

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
/// The issue's target: backfill rows/s ÷ the floor's rows/s, at least.
const TARGET_VS_FLOOR: f64 = 0.8;
/// The issue's target: 2 workers' rows/s ÷ 1 worker's, at least.
const TARGET_TWO_VS_ONE: f64 = 1.0;
/// The `application_name` of the timed PostgreSQL connections, to find their backends.
const APP_NAME: &str = "ec_backfill_bench";
/// Linux's `USER_HZ`: the unit of the CPU times in `/proc/<pid>/stat`.
const TICKS_PER_S: f64 = 100.0;

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

/// The plan: all 8 columns, sealed into `<name>_enc`, no blind index.
fn plan() -> EncryptTable {
    fn col<C: encrypted_columns::ColumnContext>(name: &str) -> EncryptColumn<String, C> {
        EncryptColumn::new("bench_pii", "id", name, &format!("{name}_enc"))
    }
    EncryptTable::new("bench_pii", "id")
        .column(col::<FirstName>(COLUMNS[0]))
        .column(col::<LastName>(COLUMNS[1]))
        .column(col::<Email>(COLUMNS[2]))
        .column(col::<Phone>(COLUMNS[3]))
        .column(col::<Street>(COLUMNS[4]))
        .column(col::<City>(COLUMNS[5]))
        .column(col::<NationalId>(COLUMNS[6]))
        .column(col::<InsuranceId>(COLUMNS[7]))
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

/// Sets every envelope and copy column to NULL and forgets the migration (state, log, job
/// and claims rows of `bench_pii`), then lets PostgreSQL reclaim the dead rows, so each
/// timed run starts from the same table.
async fn reset(db: &DatabaseConnection) -> Res<()> {
    let mut update = Query::update();
    update.table(a("bench_pii"));
    for name in COLUMNS {
        update
            .value(a(&format!("{name}_enc")), Value::Bytes(None))
            .value(a(&format!("{name}_copy")), Value::String(None));
    }
    db.execute(&update).await?;
    state::ensure_tables(db).await?;
    for table in [
        state::STATE_TABLE,
        state::LOG_TABLE,
        WORK_TABLE,
        CLAIMS_TABLE,
    ] {
        db.execute(
            &Query::delete()
                .from_table(a(table))
                .and_where(Expr::col(a("table_name")).eq("bench_pii"))
                .to_owned(),
        )
        .await?;
    }
    analyze(db).await
}

/// [`reset`], then every column started and moved to `dual_write`: where a backfill begins.
async fn reset_to_dual_write(db: &DatabaseConnection) -> Res<()> {
    reset(db).await?;
    for name in COLUMNS {
        state::start(db, "bench_pii", name).await?;
    }
    let moved = migrate::dual_write(db, &plan()).await?;
    if moved.len() != COLUMNS.len() {
        return Err(format!("dual_write moved {moved:?}").into());
    }
    Ok(())
}

/// Rows in which any of the columns `<name><suffix>` is NULL.
async fn rows_with_null(db: &DatabaseConnection, suffix: &str) -> Res<i64> {
    let any_null = COLUMNS.iter().fold(Cond::any(), |c, name| {
        c.add(Expr::col(a(&format!("{name}{suffix}"))).is_null())
    });
    let q = Query::select()
        .expr_as(Func::count(Expr::col(a("id"))), a("n"))
        .from(a("bench_pii"))
        .cond_where(any_null)
        .to_owned();
    Ok(db
        .query_one(&q)
        .await?
        .ok_or("no count")?
        .try_get("", "n")?)
}

/// The URL of a timed connection: the test database, tagged on PostgreSQL so that its
/// server processes can be found.
fn timed_url(db: &TestDb) -> String {
    let url = db.url();
    match db.backend {
        Backend::Postgres => {
            let sep = if url.contains('?') { '&' } else { '?' };
            format!("{url}{sep}application_name={APP_NAME}")
        }
        _ => url,
    }
}

async fn connect(url: &str) -> Result<DatabaseConnection, String> {
    let mut options = ConnectOptions::new(url.to_owned());
    options.max_connections(2).sqlx_logging(false);
    let conn = Database::connect(options)
        .await
        .map_err(|e| format!("connecting to {url}: {e}"))?;
    // Open a connection now, so that connecting is not timed.
    conn.execute_unprepared("SELECT 1")
        .await
        .map_err(|e| format!("first query on {url}: {e}"))?;
    Ok(conn)
}

/// CPU seconds (user + system) of one process, from `/proc/<pid>/stat`.
fn proc_cpu(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_S)
}

/// The `mariadbd` (or `mysqld`) process on this machine.
fn mysql_server_pid() -> Option<String> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid = e.file_name().into_string().ok()?;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        matches!(comm.trim(), "mariadbd" | "mysqld").then_some(pid)
    })
}

/// CPU used so far, by this process and by the server's side of the timed connections.
#[derive(Debug, Clone, Default)]
struct CpuSnapshot {
    client: Option<f64>,
    /// Per server process (PostgreSQL backends, or the one `mariadbd`).
    server: Vec<(String, f64)>,
}

async fn cpu_snapshot(db: &TestDb) -> CpuSnapshot {
    let server_pids: Vec<String> = match db.backend {
        Backend::Postgres => {
            let q =
                format!("SELECT pid FROM pg_stat_activity WHERE application_name = '{APP_NAME}'");
            match db
                .conn
                .query_all_raw(Statement::from_string(DbBackend::Postgres, q))
                .await
            {
                Ok(rows) => rows
                    .iter()
                    .filter_map(|r| r.try_get::<i32>("", "pid").ok())
                    .map(|p| p.to_string())
                    .collect(),
                Err(_) => Vec::new(),
            }
        }
        Backend::MySql => mysql_server_pid().into_iter().collect(),
        Backend::Sqlite => Vec::new(),
    };
    CpuSnapshot {
        client: proc_cpu("self"),
        server: server_pids
            .into_iter()
            .filter_map(|pid| proc_cpu(&pid).map(|cpu| (pid, cpu)))
            .collect(),
    }
}

/// CPU seconds between two snapshots: (client, server). A server process first seen in
/// `after` counts from zero.
fn cpu_used(before: &CpuSnapshot, after: &CpuSnapshot) -> (Option<f64>, Option<f64>) {
    let client = before.client.zip(after.client).map(|(b, a)| a - b);
    let server = (!after.server.is_empty()).then(|| {
        after
            .server
            .iter()
            .map(|(pid, cpu)| {
                let start = before
                    .server
                    .iter()
                    .find(|(p, _)| p == pid)
                    .map_or(0.0, |(_, c)| *c);
                cpu - start
            })
            .sum()
    });
    (client, server)
}

/// The 1-, 5- and 15-minute load averages.
fn loadavg() -> Json {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let v: Vec<f64> = text
        .split_whitespace()
        .take(3)
        .filter_map(|x| x.parse().ok())
        .collect();
    json!(v)
}

fn load_1m(load: &Json) -> f64 {
    load.get(0).and_then(Json::as_f64).unwrap_or(f64::NAN)
}

/// One timed run.
#[derive(Debug, Clone)]
struct Sample {
    took: Duration,
    client_cpu: Option<f64>,
    server_cpu: Option<f64>,
    /// Per worker; empty for the floors.
    workers: Vec<WorkerStats>,
}

/// What one backfill worker of a timed run did.
#[derive(Debug, Clone)]
struct WorkerStats {
    /// Chunks it committed.
    batches: u64,
    /// Values it sealed.
    sealed: u64,
    /// Chunks it took over from an expired claim.
    taken_over: u64,
    /// From the common start until it returned.
    returned_after: Duration,
}

impl Sample {
    fn json(&self, rows: i32) -> Json {
        json!({
            "seconds": self.took.as_secs_f64(),
            "rows_per_s": rows_per_s(rows, self.took),
            "client_cpu_s": self.client_cpu,
            "server_cpu_s": self.server_cpu,
            "workers": self.workers.iter().map(|w| json!({
                "batches": w.batches,
                "values_sealed": w.sealed,
                "taken_over": w.taken_over,
                "returned_after_s": w.returned_after.as_secs_f64(),
            })).collect::<Vec<_>>(),
        })
    }
}

/// `n` concurrent `migrate::backfill` workers on threads of their own, each with its own
/// runtime and pool; timed from their common start until the last returns.
async fn backfill_workers(db: &TestDb, rows: i32, n: usize, batch: u64) -> Res<Sample> {
    reset_to_dual_write(&db.conn).await?;
    let url = timed_url(db);
    // Every party passes every barrier, whatever fails, so that nobody waits forever.
    let ready = Arc::new(Barrier::new(n + 1));
    let go = Arc::new(Barrier::new(n + 1));
    let done = Arc::new(Barrier::new(n + 1));
    let close = Arc::new(Barrier::new(n + 1));
    let mut threads = Vec::with_capacity(n);
    for _ in 0..n {
        let (url, ready, go, done, close) = (
            url.clone(),
            Arc::clone(&ready),
            Arc::clone(&go),
            Arc::clone(&done),
            Arc::clone(&close),
        );
        threads.push(std::thread::spawn(
            move || -> Result<(Instant, Instant, BackfillReport), String> {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string());
                let conn = match &runtime {
                    Ok(rt) => rt.block_on(connect(&url)),
                    Err(e) => Err(e.clone()),
                };
                ready.wait();
                go.wait();
                let started = Instant::now();
                let result = match (&runtime, &conn) {
                    (Ok(rt), Ok(conn)) => {
                        let options = RunOptions {
                            batch_size: batch,
                            ..RunOptions::default()
                        };
                        rt.block_on(migrate::backfill(conn, plan(), &options, |_| {}))
                            .map_err(|e| format!("backfill: {e}"))
                    }
                    (Err(e), _) | (_, Err(e)) => Err(e.clone()),
                };
                let ended = Instant::now();
                // A failed worker may leave a rolled-back transaction's connection to be
                // cleaned up by the pool's tasks: let them run (and close the pool) before
                // blocking, or its locks would hold the other worker up forever.
                let conn = match (result.is_err(), conn) {
                    (true, Ok(conn)) => {
                        if let Ok(rt) = &runtime {
                            let _ = rt.block_on(conn.close());
                        }
                        Err("closed".to_owned())
                    }
                    (_, conn) => conn,
                };
                done.wait();
                close.wait();
                if let (Ok(rt), Ok(conn)) = (runtime, conn) {
                    let _ = rt.block_on(conn.close());
                }
                result.map(|report| (started, ended, report))
            },
        ));
    }
    ready.wait();
    let before = cpu_snapshot(db).await;
    go.wait();
    done.wait();
    let after = cpu_snapshot(db).await;
    close.wait();
    let mut outcomes = Vec::with_capacity(n);
    let mut failures = Vec::new();
    for (i, t) in threads.into_iter().enumerate() {
        match t.join() {
            Ok(Ok(outcome)) => outcomes.push(outcome),
            Ok(Err(e)) => failures.push(format!("worker {} of {n}: {e}", i + 1)),
            Err(_) => failures.push(format!("worker {} of {n}: panicked", i + 1)),
        }
    }
    if !failures.is_empty() {
        return Err(failures.join("; ").into());
    }
    let first = outcomes.iter().map(|o| o.0).min().ok_or("no worker")?;
    let last = outcomes.iter().map(|o| o.1).max().ok_or("no worker")?;
    let sealed: u64 = outcomes.iter().map(|o| o.2.sealed).sum();
    let expected = u64::try_from(rows)? * COLUMNS.len() as u64;
    let left = rows_with_null(&db.conn, "_enc").await?;
    if sealed != expected || left != 0 || !outcomes.iter().all(|o| o.2.finished) {
        let reports: Vec<_> = outcomes.iter().map(|o| &o.2).collect();
        return Err(format!(
            "{n} worker(s): sealed {sealed} of {expected}, {left} rows with a NULL envelope: \
             {reports:?}"
        )
        .into());
    }
    for name in COLUMNS {
        let phase = state::load(&db.conn, "bench_pii", name)
            .await?
            .map(|s| s.phase);
        if phase != Some(Phase::Backfilled) {
            return Err(format!("{name}: phase {phase:?} after the backfill").into());
        }
    }
    let (client_cpu, server_cpu) = cpu_used(&before, &after);
    Ok(Sample {
        took: last - first,
        client_cpu,
        server_cpu,
        workers: outcomes
            .iter()
            .map(|o| WorkerStats {
                batches: o.2.batches,
                sealed: o.2.sealed,
                taken_over: o.2.taken_over,
                returned_after: o.1 - first,
            })
            .collect(),
    })
}

/// `UPDATE bench_pii SET <copy> = <plain>, …` (all 8 columns), restricted to `range`.
fn copy_all(range: Option<(i32, i32)>) -> sea_orm::sea_query::UpdateStatement {
    let mut update = Query::update();
    update.table(a("bench_pii"));
    for name in COLUMNS {
        update.value(a(&format!("{name}_copy")), Expr::col(a(name)));
    }
    if let Some((from, to)) = range {
        update
            .and_where(Expr::col(a("id")).gt(from))
            .and_where(Expr::col(a("id")).lte(to));
    }
    update.to_owned()
}

/// `UPDATE bench_pii SET <name>_enc = <the plaintext and its first bytes again, as bytes>`
/// for all 8 columns: what the server writes when each `_enc` column gets a value as long as
/// an envelope (`len` bytes), computed from the row itself.
fn envelope_sized_all(backend: DbBackend, len: usize) -> String {
    let extra = len.saturating_sub(VALUE_LEN);
    let sets: Vec<String> = COLUMNS
        .iter()
        .map(|name| match backend {
            DbBackend::MySql => {
                format!("`{name}_enc` = CAST(CONCAT(`{name}`, LEFT(`{name}`, {extra})) AS BINARY)")
            }
            DbBackend::Postgres => format!(
                "\"{name}_enc\" = convert_to(\"{name}\" || left(\"{name}\", {extra}), 'UTF8')"
            ),
            _ => format!(
                "\"{name}_enc\" = CAST(\"{name}\" || substr(\"{name}\", 1, {extra}) AS BLOB)"
            ),
        })
        .collect();
    let table = match backend {
        DbBackend::MySql => "`bench_pii`",
        _ => "\"bench_pii\"",
    };
    format!("UPDATE {table} SET {}", sets.join(", "))
}

/// The length of an envelope of one of the bench's values.
fn envelope_len() -> Res<usize> {
    Ok(Encrypted::<String, FirstName>::new(value(0, 1))?
        .envelope()
        .len())
}

/// The floor: the server rewrites every row (`batch` = `None`: one autocommit statement;
/// else one transaction per id range of `batch` rows). `envelope_sized`: one statement
/// filling the `_enc` columns with envelope-sized bytes instead of copying the plaintext.
async fn floor(db: &TestDb, rows: i32, batch: Option<u64>, envelope_sized: bool) -> Res<Sample> {
    reset(&db.conn).await?;
    let envelope_sql = envelope_sized_all(db.backend.db_backend(), envelope_len()?);
    let conn = connect(&timed_url(db)).await?;
    let before = cpu_snapshot(db).await;
    let started = Instant::now();
    let result = async {
        match batch {
            None if envelope_sized => {
                conn.execute_unprepared(&envelope_sql).await?;
            }
            None => {
                conn.execute(&copy_all(None)).await?;
            }
            Some(batch) => {
                let step = i32::try_from(batch)?;
                let mut from = 0;
                while from < rows {
                    let txn = conn.begin().await?;
                    txn.execute(&copy_all(Some((from, from + step)))).await?;
                    txn.commit().await?;
                    from += step;
                }
            }
        }
        Res::Ok(())
    }
    .await;
    let took = started.elapsed();
    let after = cpu_snapshot(db).await;
    let _ = conn.close().await;
    result?;
    let suffix = if envelope_sized { "_enc" } else { "_copy" };
    let left = rows_with_null(&db.conn, suffix).await?;
    if left != 0 {
        return Err(format!("floor: {left} rows not written").into());
    }
    let (client_cpu, server_cpu) = cpu_used(&before, &after);
    Ok(Sample {
        took,
        client_cpu,
        server_cpu,
        workers: Vec::new(),
    })
}

/// Bound values per statement of [`client_write`]: the backfill's own limit.
const CLIENT_WRITE_MAX_PARAMS: usize = 30_000;

/// A stand-in for envelope `col` of row `id`: `len` bytes, varied like ciphertext.
fn fake_envelope(col: usize, id: i32, len: usize) -> Vec<u8> {
    let mut x = ((id as u64) ^ ((col as u64) << 40)).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The MySQL staging table of [`client_write`], like the backfill's.
const CLIENT_WRITE_STAGE: &str = "`bench_stage`";

/// Writes envelope-sized bytes into the 8 `_enc` columns of rows `lo..=hi`, the way the
/// backfill writes a batch on each backend, without its guards: one `UPDATE … FROM (VALUES
/// …)` (PostgreSQL) or `WITH v AS (VALUES …) UPDATE … FROM v` (SQLite); on MySQL the rows are
/// staged in a temporary table typed like the target columns (`CREATE TEMPORARY TABLE …
/// SELECT … WHERE 1 = 0`, one multi-row INSERT), then `UPDATE … JOIN` it.
async fn client_write_rows<C: ConnectionTrait>(db: &C, lo: i32, hi: i32, len: usize) -> Res<()> {
    let backend = db.get_database_backend();
    let q = |name: &str| match backend {
        DbBackend::MySql => format!("`{name}`"),
        _ => format!("\"{name}\""),
    };
    let table = q("bench_pii");
    let mut names = vec![q("k")];
    names.extend((0..COLUMNS.len()).map(|c| q(&format!("e{c}"))));
    let mut values: Vec<Value> = Vec::new();
    let mut param = 0;
    let mut tuples = Vec::new();
    for id in lo..=hi {
        values.push(i64::from(id).into());
        values.extend((0..COLUMNS.len()).map(|c| Value::from(fake_envelope(c, id, len))));
        let fields: Vec<String> = names
            .iter()
            .map(|_| {
                param += 1;
                match backend {
                    DbBackend::Postgres => format!("${param}"),
                    _ => "?".to_owned(),
                }
            })
            .collect();
        tuples.push(format!("({})", fields.join(", ")));
    }
    let set = |qualify: bool| -> String {
        COLUMNS
            .iter()
            .enumerate()
            .map(|(c, name)| {
                let target = q(&format!("{name}_enc"));
                let lhs = if qualify {
                    format!("{table}.{target}")
                } else {
                    target
                };
                format!("{lhs} = v.{}", q(&format!("e{c}")))
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let key_eq = format!("{table}.{} = v.{}", q("id"), q("k"));
    let sql = match backend {
        DbBackend::MySql => {
            let typed: Vec<String> = std::iter::once(format!("{} AS {}", q("id"), q("k")))
                .chain(COLUMNS.iter().enumerate().map(|(c, name)| {
                    format!("{} AS {}", q(&format!("{name}_enc")), q(&format!("e{c}")))
                }))
                .collect();
            db.execute_unprepared(&format!(
                "DROP TEMPORARY TABLE IF EXISTS {CLIENT_WRITE_STAGE}"
            ))
            .await?;
            db.execute_unprepared(&format!(
                "CREATE TEMPORARY TABLE {CLIENT_WRITE_STAGE} SELECT {} FROM {table} WHERE 1 = 0",
                typed.join(", ")
            ))
            .await?;
            db.execute_raw(Statement::from_sql_and_values(
                backend,
                format!(
                    "INSERT INTO {CLIENT_WRITE_STAGE} ({}) VALUES {}",
                    names.join(", "),
                    tuples.join(", ")
                ),
                values,
            ))
            .await?;
            db.execute_unprepared(&format!(
                "UPDATE {table} JOIN {CLIENT_WRITE_STAGE} AS v ON {key_eq} SET {}",
                set(true)
            ))
            .await?;
            return Ok(());
        }
        DbBackend::Postgres => format!(
            "UPDATE {table} SET {} FROM (VALUES {}) AS v({}) WHERE {key_eq}",
            set(false),
            tuples.join(", "),
            names.join(", ")
        ),
        _ => format!(
            "WITH v({}) AS (VALUES {}) UPDATE {table} SET {} FROM v WHERE {key_eq}",
            names.join(", "),
            tuples.join(", "),
            set(false)
        ),
    };
    db.execute_raw(Statement::from_sql_and_values(backend, sql, values))
        .await?;
    Ok(())
}

/// What the backfill cannot avoid: the 8 envelope-sized values of every row sent from the
/// client, in the backfill's statement shapes ([`client_write_rows`]), one transaction per
/// batch of `batch` rows (split at the backfill's parameter limit) — no reading, sealing,
/// guard, read-back or claims. The bytes are made in the timed loop (a fraction of the cost
/// of sealing them).
async fn client_write(db: &TestDb, rows: i32, batch: u64) -> Res<Sample> {
    reset(&db.conn).await?;
    let len = envelope_len()?;
    let conn = connect(&timed_url(db)).await?;
    let mysql = conn.get_database_backend() == DbBackend::MySql;
    let step = i32::try_from(batch)?;
    let per_statement = i32::try_from(CLIENT_WRITE_MAX_PARAMS / (1 + COLUMNS.len()))?;
    let before = cpu_snapshot(db).await;
    let started = Instant::now();
    let result = async {
        let mut from = 1;
        while from <= rows {
            let to = Ord::min(from + step - 1, rows);
            let txn = conn.begin().await?;
            let mut lo = from;
            while lo <= to {
                let hi = Ord::min(lo + per_statement - 1, to);
                client_write_rows(&txn, lo, hi, len).await?;
                lo = hi + 1;
            }
            if mysql {
                txn.execute_unprepared(&format!(
                    "DROP TEMPORARY TABLE IF EXISTS {CLIENT_WRITE_STAGE}"
                ))
                .await?;
            }
            txn.commit().await?;
            from = to + 1;
        }
        Res::Ok(())
    }
    .await;
    let took = started.elapsed();
    let after = cpu_snapshot(db).await;
    let _ = conn.close().await;
    result?;
    let left = rows_with_null(&db.conn, "_enc").await?;
    if left != 0 {
        return Err(format!("client write: {left} rows not written").into());
    }
    let (client_cpu, server_cpu) = cpu_used(&before, &after);
    Ok(Sample {
        took,
        client_cpu,
        server_cpu,
        workers: Vec::new(),
    })
}

/// The variants, in the order they run (interleaved within each round).
const VARIANTS: [&str; 6] = [
    "floor_1_statement",
    "floor_per_batch",
    "floor_envelope_sized",
    "client_write",
    "encrypted_1_worker",
    "encrypted_2_workers",
];
const FLOOR_1: usize = 0;
const FLOOR_BATCH: usize = 1;
const FLOOR_ENVELOPE: usize = 2;
const CLIENT_WRITE: usize = 3;
const ENC_1: usize = 4;
const ENC_2: usize = 5;

/// One (backend, batch size) result: every sample of each variant, in [`VARIANTS`] order.
struct Measured {
    backend: Backend,
    batch: u64,
    samples: [Vec<Sample>; 6],
    /// Runs that failed, per variant.
    errors: [Vec<String>; 6],
}

impl Measured {
    /// The fastest sample of variant `v` (none if every run failed).
    fn best(&self, v: usize) -> Option<&Sample> {
        self.samples[v].iter().min_by_key(|s| s.took)
    }

    /// Rows/s of the fastest run of variant `v`; NaN if every run failed.
    fn rps(&self, rows: i32, v: usize) -> f64 {
        self.best(v).map_or(f64::NAN, |s| rows_per_s(rows, s.took))
    }

    /// The faster floor's rows/s.
    fn floor_rps(&self, rows: i32) -> f64 {
        f64::max(self.rps(rows, FLOOR_1), self.rps(rows, FLOOR_BATCH))
    }
}

fn rows_per_s(rows: i32, took: Duration) -> f64 {
    f64::from(rows) / took.as_secs_f64()
}

async fn bench_backend(
    backend: Backend,
    rows: i32,
    batches: &[u64],
    runs: usize,
    out: &mut Vec<Measured>,
    loads: &mut Vec<Json>,
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
        let load_before = loadavg();
        for &batch in batches {
            let mut m = Measured {
                backend,
                batch,
                samples: Default::default(),
                errors: Default::default(),
            };
            for _ in 0..runs {
                for (v, name) in VARIANTS.iter().enumerate() {
                    let sample = match v {
                        FLOOR_1 => floor(&db, rows, None, false).await,
                        FLOOR_BATCH => floor(&db, rows, Some(batch), false).await,
                        FLOOR_ENVELOPE => floor(&db, rows, None, true).await,
                        CLIENT_WRITE => client_write(&db, rows, batch).await,
                        ENC_1 => backfill_workers(&db, rows, 1, batch).await,
                        _ => backfill_workers(&db, rows, 2, batch).await,
                    };
                    // A failed run is reported (table, JSON, exit status), not hidden.
                    let sample = match sample {
                        Ok(sample) => sample,
                        Err(e) => {
                            eprintln!("backfill/{backend}/batch {batch}: {name} FAILED: {e}");
                            m.errors[v].push(e.to_string());
                            continue;
                        }
                    };
                    eprintln!(
                        "backfill/{backend}/batch {batch}: {name} {:.2} s ({:.0} rows/s, client \
                         CPU {:.2} s, server CPU {}; load {})",
                        sample.took.as_secs_f64(),
                        rows_per_s(rows, sample.took),
                        sample.client_cpu.unwrap_or(f64::NAN),
                        sample
                            .server_cpu
                            .map_or("-".to_owned(), |s| format!("{s:.2} s")),
                        load_1m(&loadavg()),
                    );
                    m.samples[v].push(sample);
                }
            }
            out.push(m);
        }
        loads.push(json!({
            "backend": backend.to_string(),
            "before": load_before,
            "after": loadavg(),
        }));
        Res::Ok(())
    }
    .await;
    let dropped = db.drop_database().await;
    outcome?;
    dropped.map_err(|e| e.into())
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

fn main() -> Res<()> {
    if !std::env::args().any(|arg| arg == "--bench") {
        return Ok(());
    }
    let rows: i32 = env_or("BACKFILL_BENCH_ROWS", 100_000);
    let runs: usize = Ord::max(env_or("BACKFILL_BENCH_RUNS", 3), 1);
    let batches_var = std::env::var("BACKFILL_BENCH_BATCHES").unwrap_or_else(|_| "500,2000".into());
    let batches: Vec<u64> = batches_var
        .split(',')
        .map(|b| b.trim().parse())
        .collect::<Result<_, _>>()?;
    let wanted = std::env::var("BACKFILL_BENCH_BACKENDS").ok();
    let default_size = rows == 100_000 && batches == [500, 2000] && wanted.is_none() && runs == 3;
    init_keyring();

    let load_before = loadavg();
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut results = Vec::new();
    let mut loads = Vec::new();
    for backend in [Backend::Sqlite, Backend::Postgres, Backend::MySql] {
        if wanted
            .as_deref()
            .is_some_and(|w| !w.split(',').any(|b| b.trim() == backend.to_string()))
        {
            continue;
        }
        runtime.block_on(bench_backend(
            backend,
            rows,
            &batches,
            runs,
            &mut results,
            &mut loads,
        ))?;
    }
    let load_after = loadavg();

    println!(
        "\nbackfill: {rows} rows x {} PII columns of {VALUE_LEN} B, rows/s (best of {runs} \
         run(s)); enc/floor = encrypted ÷ the faster floor (target ≥ {TARGET_VS_FLOOR}), \
         2w/1w target ≥ {TARGET_TWO_VS_ONE}\n",
        COLUMNS.len(),
    );
    println!(
        "{:<9} {:>5} | {:>10} {:>10} {:>10} | {:>10} | {:>10} {:>10} | {:>6} {:>6} | {:>6} | {:>6}",
        "backend",
        "batch",
        "floor 1 st",
        "floor/bat",
        "floor env",
        "client wr",
        "enc 1 w",
        "enc 2 w",
        "1w/fl",
        "2w/fl",
        "2w/1w",
        "1w/cw"
    );
    let mut json_results = Vec::new();
    for m in &results {
        let floor = m.floor_rps(rows);
        let wire = m.rps(rows, CLIENT_WRITE);
        let (one, two) = (m.rps(rows, ENC_1), m.rps(rows, ENC_2));
        println!(
            "{:<9} {:>5} | {:>10.0} {:>10.0} {:>10.0} | {:>10.0} | {:>10.0} {:>10.0} | {:>5.2}x \
             {:>5.2}x | {:>5.2}x | {:>5.2}x",
            m.backend.to_string(),
            m.batch,
            m.rps(rows, FLOOR_1),
            m.rps(rows, FLOOR_BATCH),
            m.rps(rows, FLOOR_ENVELOPE),
            wire,
            one,
            two,
            one / floor,
            two / floor,
            two / one,
            one / wire,
        );
        let mut variants = serde_json::Map::new();
        for (v, name) in VARIANTS.iter().enumerate() {
            let mut entry = m.best(v).map_or_else(|| json!({}), |s| s.json(rows));
            if !m.errors[v].is_empty() {
                entry["errors"] = json!(m.errors[v]);
            }
            if runs > 1 {
                entry["all_seconds"] = json!(
                    m.samples[v]
                        .iter()
                        .map(|s| s.took.as_secs_f64())
                        .collect::<Vec<_>>()
                );
            }
            variants.insert((*name).to_owned(), entry);
        }
        json_results.push(json!({
            "backend": m.backend.to_string(),
            "batch_size": m.batch,
            "variants": variants,
            "floor_rows_per_s": floor,
            "ratio_1_worker_vs_floor": one / floor,
            "ratio_2_workers_vs_floor": two / floor,
            "ratio_2_workers_vs_1": two / one,
            "ratio_1_worker_vs_client_write": one / wire,
            "ratio_client_write_vs_floor": wire / floor,
            "ratio_1_worker_vs_floor_envelope_sized": one / m.rps(rows, FLOOR_ENVELOPE),
        }));
    }

    // Per backend: the best encrypted configuration against the best floor.
    println!("\ntargets, per backend (best batch size and worker count vs the faster floor):");
    let mut summary = Vec::new();
    for backend in [Backend::Sqlite, Backend::Postgres, Backend::MySql] {
        let ms: Vec<&Measured> = results.iter().filter(|m| m.backend == backend).collect();
        if ms.is_empty() {
            continue;
        }
        let best_floor = ms.iter().map(|m| m.floor_rps(rows)).fold(0.0, f64::max);
        let best_enc = ms
            .iter()
            .map(|m| f64::max(m.rps(rows, ENC_1), m.rps(rows, ENC_2)))
            .fold(0.0, f64::max);
        // A failed run counts as missing the target (NaN compares false).
        let failed = ms.iter().any(|m| m.errors.iter().any(|e| !e.is_empty()));
        let worst_scaling = ms
            .iter()
            .map(|m| m.rps(rows, ENC_2) / m.rps(rows, ENC_1))
            .fold(f64::INFINITY, |w, r| {
                if r.is_nan() || w.is_nan() {
                    f64::NAN
                } else {
                    w.min(r)
                }
            });
        let vs_floor = best_enc / best_floor;
        println!(
            "  {backend:<9} encrypted {best_enc:.0} rows/s vs floor {best_floor:.0}: {vs_floor:.2}x \
             ({}); 2w/1w at worst {worst_scaling:.2}x ({}){}",
            verdict(vs_floor >= TARGET_VS_FLOOR),
            verdict(worst_scaling >= TARGET_TWO_VS_ONE),
            if failed {
                "; some runs FAILED (see above)"
            } else {
                ""
            },
        );
        summary.push(json!({
            "backend": backend.to_string(),
            "best_encrypted_rows_per_s": best_enc,
            "best_floor_rows_per_s": best_floor,
            "ratio_vs_floor": vs_floor,
            "vs_floor_met": vs_floor >= TARGET_VS_FLOOR,
            "worst_ratio_2_workers_vs_1": worst_scaling,
            "two_vs_one_met": worst_scaling >= TARGET_TWO_VS_ONE,
            "runs_failed": failed,
        }));
    }
    println!(
        "\nload average (1/5/15 min): before {load_before}, after {load_after}; {:.0} s in all",
        started.elapsed().as_secs_f64()
    );

    let report = json!({
        "bench": "backfill",
        "command": "cargo bench -p encrypted-columns-tests --bench backfill",
        "rows": rows,
        "pii_columns": COLUMNS.len(),
        "value_bytes": VALUE_LEN,
        "runs_per_variant": runs,
        "rows_per_s_means": "rows / wall seconds until every value of every row is written \
                             (backfill: all pii_columns sealed in one migrate::backfill per \
                             worker; floor: the server copies the 8 plaintext columns)",
        "variants": {
            "floor_1_statement": "UPDATE bench_pii SET <8 copy columns> = <8 plaintext \
                                  columns>, one autocommit statement",
            "floor_per_batch": "the same UPDATE per id range of batch_size rows, one \
                                transaction each",
            "floor_envelope_sized": "one autocommit UPDATE setting the 8 _enc columns to \
                                     envelope-sized bytes computed from the row (plaintext \
                                     and its first bytes again): the server's cost of \
                                     writing rows as wide as the backfill leaves them",
            "client_write": "8 envelope-sized byte strings per row sent from the client in \
                             the backfill's statement shape, one transaction per batch; no \
                             read, seal, guard, read-back or claims",
            "encrypted_1_worker": "one migrate::backfill of the 8-column EncryptTable plan",
            "encrypted_2_workers": "two concurrent migrate::backfill calls, each on its own \
                                    thread, runtime and pool; wall time until both return",
        },
        "cpu_means": "client_cpu_s: this process (user + system); server_cpu_s: PostgreSQL \
                      backends of the timed connections, or the whole mariadbd process \
                      (other clients included); null on SQLite (in process)",
        "targets": {
            "encrypted_vs_floor_at_least": TARGET_VS_FLOOR,
            "two_workers_vs_one_at_least": TARGET_TWO_VS_ONE,
        },
        "profile": "release (cargo bench)",
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "loadavg": {
            "before": load_before,
            "after": load_after,
            "per_backend": loads,
        },
        "seconds_total": started.elapsed().as_secs_f64(),
        "summary": summary,
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
    let failures: usize = results
        .iter()
        .map(|m| m.errors.iter().map(Vec::len).sum::<usize>())
        .sum();
    if failures > 0 {
        return Err(format!("{failures} run(s) failed; see above and {}", path.display()).into());
    }
    Ok(())
}
