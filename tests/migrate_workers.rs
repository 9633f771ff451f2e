//! Cooperating migration workers (issue 10) on every backend, with `migrate_child` processes
//! as the workers:
//!
//! 1. two and four backfill processes started together over one three-column table: every
//!    process exits 0, their `sealed` counts add up to exactly the values to seal, nothing is
//!    skipped, and the work was shared;
//! 2. one of two backfill processes SIGKILLed while it holds a chunk: the survivor and a
//!    restarted process finish, the dead worker's chunk is taken over after its lease, and the
//!    counts still add up exactly; and two repair processes sharing a pass over a verified
//!    table, with exact counts;
//! 3. an old application instance writing plaintext only (updates and inserts) during the
//!    backfill: verify → repair → verify converges once it stops, and every envelope and blind
//!    index carries exactly the final plaintext;
//! 4. the child SIGKILLed during drop or purge at several moments, then resumed by a fresh
//!    child: phases end `purged`, the plaintext columns are gone and every envelope opens to
//!    the value its plaintext had.
//!
//! The old instance's random choices come from a seed the test prints; set
//! `MIGRATE_TEST_SEED` to repeat a run.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use encrypted_columns::blind_index::{BlindIndex, IndexInput, Pipeline};
use encrypted_columns::keyring::{self, ENV_BLIND_INDEX_KEYS, ENV_KEYS, generate_key_entry};
use encrypted_columns::migrate::{
    self, CLAIMS_TABLE, EncryptColumn, EncryptTable, Phase, RunOptions, WORK_TABLE, state,
};
use encrypted_columns::schema::blind_index_column_type;
use encrypted_columns::{ColumnContext, Encrypted, KeyId, Keyring, column_context};
use encrypted_columns_tests::{Backend, TestDb, TestResult, backend_tests};
use sea_orm::sea_query::{Alias, ColumnDef, Expr, ExprTrait, Order, Query, Table};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr, Statement,
};

/// A test result carrying a value.
type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// Fails the enclosing test body with a message.
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+).into());
        }
    };
}

fn a(name: &str) -> Alias {
    Alias::new(name)
}

// ---------------------------------------------------------------------------------------------
// The work table: `id`, then `email` (blind index `email_bidx`), `phone` and `notes`, each
// with its envelope `<column>_enc`. Contexts and index must match tests/bin/migrate_child.rs
// (the same for every physical table: a context is the logical name of a column).

column_context!(WorkEmail, table = "mig_work", column = "email");
column_context!(WorkPhone, table = "mig_work", column = "phone");
column_context!(WorkNotes, table = "mig_work", column = "notes");

static WORK_BIDX: LazyLock<BlindIndex> = LazyLock::new(|| {
    BlindIndex::new("mig_work", "email_bidx")
        .field(Pipeline::parse("email").expect("email pipeline"))
});

/// The plaintext columns, in plan order.
const COLUMNS: [&str; 3] = ["email", "phone", "notes"];

/// The plan `migrate_child --table <table>` runs (all three columns).
fn work_plan(table: &str) -> EncryptTable {
    EncryptTable::new(table, "id")
        .column(
            EncryptColumn::<String, WorkEmail>::new(table, "id", "email", "email_enc")
                .with_index("email_bidx", &WORK_BIDX),
        )
        .column(EncryptColumn::<String, WorkPhone>::new(
            table,
            "id",
            "phone",
            "phone_enc",
        ))
        .column(EncryptColumn::<String, WorkNotes>::new(
            table,
            "id",
            "notes",
            "notes_enc",
        ))
}

async fn create_table(conn: &DatabaseConnection, table: &str) -> TestResult {
    let create = Table::create()
        .table(a(table))
        .col(ColumnDef::new(a("id")).integer().not_null().primary_key())
        .col(ColumnDef::new(a("email")).string_len(320).null())
        .col(ColumnDef::new(a("email_enc")).blob().null())
        .col(ColumnDef::new_with_type(a("email_bidx"), blind_index_column_type(&WORK_BIDX)).null())
        .col(ColumnDef::new(a("phone")).string_len(64).null())
        .col(ColumnDef::new(a("phone_enc")).blob().null())
        .col(ColumnDef::new(a("notes")).string_len(1000).null())
        .col(ColumnDef::new(a("notes_enc")).blob().null())
        .to_owned();
    conn.execute(&create).await?;
    Ok(())
}

/// The seeded plaintext of column `col` of row `id`; NULL for every 97th e-mail, 13th phone
/// and 7th note (so row 8827 and its multiples have no value at all).
fn seed_value(col: usize, id: i32) -> Option<String> {
    match col {
        0 => (id % 97 != 0).then(|| format!("p{id:06}@Example.org")),
        1 => (id % 13 != 0).then(|| format!("+1-555-{id:07}")),
        _ => (id % 7 != 0).then(|| {
            format!(
                "Notiz {id}: Blutdruck unauffällig, Kontrolle in {} Wochen",
                id % 9
            )
        }),
    }
}

/// Non-NULL seeded values of rows `lo..=hi`.
fn seeded_values(lo: i64, hi: i64) -> u64 {
    let mut n = 0;
    for id in lo..=hi {
        n += (0..COLUMNS.len())
            .filter(|&c| seed_value(c, id as i32).is_some())
            .count() as u64;
    }
    n
}

/// Inserts rows `1..=rows` with seeded plaintexts and no envelopes.
async fn seed_rows(conn: &DatabaseConnection, table: &str, rows: i32) -> TestResult {
    for chunk in (1..=rows).collect::<Vec<_>>().chunks(500) {
        let mut insert = Query::insert();
        insert
            .into_table(a(table))
            .columns([a("id"), a("email"), a("phone"), a("notes")]);
        for &id in chunk {
            insert.values_panic([
                id.into(),
                seed_value(0, id).into(),
                seed_value(1, id).into(),
                seed_value(2, id).into(),
            ]);
        }
        conn.execute(&insert).await?;
    }
    Ok(())
}

/// Records the migration of every column (`added`) and moves them to `dual_write`.
async fn start(conn: &DatabaseConnection, table: &str) -> TestResult {
    for column in COLUMNS {
        state::start(conn, table, column).await?;
    }
    let moved = migrate::dual_write(conn, &work_plan(table)).await?;
    ensure!(moved.len() == COLUMNS.len(), "dual_write moved {moved:?}");
    Ok(())
}

async fn phases(conn: &impl ConnectionTrait, table: &str) -> Res<Vec<Phase>> {
    let mut out = Vec::new();
    for column in COLUMNS {
        let st = state::load(conn, table, column)
            .await?
            .ok_or_else(|| format!("{table}.{column}: no migration state"))?;
        out.push(st.phase);
    }
    Ok(out)
}

/// Sum of `rows_done` over the columns.
async fn rows_done(conn: &impl ConnectionTrait, table: &str) -> Res<i64> {
    let mut sum = 0;
    for column in COLUMNS {
        sum += state::load(conn, table, column)
            .await?
            .ok_or("no migration state")?
            .rows_done;
    }
    Ok(sum)
}

/// One row as stored (`plain` all `None` when the plaintext columns are gone).
#[derive(Debug, Clone)]
struct Row {
    id: i32,
    plain: [Option<String>; 3],
    enc: [Option<Vec<u8>>; 3],
    bidx: Option<Vec<u8>>,
}

async fn read_rows(conn: &impl ConnectionTrait, table: &str, plaintext: bool) -> Res<Vec<Row>> {
    let mut select = Query::select();
    select.column(a("id"));
    if plaintext {
        select.columns(COLUMNS.map(a));
    }
    select
        .columns([
            a("email_enc"),
            a("phone_enc"),
            a("notes_enc"),
            a("email_bidx"),
        ])
        .from(a(table))
        .order_by(a("id"), Order::Asc);
    let mut rows = Vec::new();
    for row in conn.query_all(&select).await? {
        let mut plain = [None, None, None];
        if plaintext {
            for (slot, column) in plain.iter_mut().zip(COLUMNS) {
                *slot = row.try_get("", column)?;
            }
        }
        rows.push(Row {
            id: row.try_get("", "id")?,
            plain,
            enc: [
                row.try_get("", "email_enc")?,
                row.try_get("", "phone_enc")?,
                row.try_get("", "notes_enc")?,
            ],
            bidx: row.try_get("", "email_bidx")?,
        });
    }
    Ok(rows)
}

fn open_as<C: ColumnContext>(ring: &Keyring, envelope: &[u8]) -> Option<String> {
    Encrypted::<String, C>::from_envelope_with(ring, envelope.to_vec())
        .ok()
        .map(|e| e.expose().clone())
}

/// Opens the envelope of column `col` (`None` if it does not open).
fn open(col: usize, ring: &Keyring, envelope: &[u8]) -> Option<String> {
    match col {
        0 => open_as::<WorkEmail>(ring, envelope),
        1 => open_as::<WorkPhone>(ring, envelope),
        _ => open_as::<WorkNotes>(ring, envelope),
    }
}

/// The independent check: every envelope opens with `ring` to exactly `expected(row, col)`,
/// NULL stays NULL, and the e-mail blind index is its recomputation. Returns the number of
/// values (non-NULL cells).
fn check_rows(
    rows: &[Row],
    ring: &Keyring,
    expected: impl Fn(&Row, usize) -> Option<String>,
) -> Res<u64> {
    let mut bad = Vec::new();
    let mut values = 0;
    for row in rows {
        for (col, name) in COLUMNS.iter().enumerate() {
            let want = expected(row, col);
            let problem = match (&want, &row.enc[col]) {
                (None, None) => None,
                (None, Some(_)) => Some("envelope without plaintext"),
                (Some(_), None) => Some("no envelope"),
                (Some(want), Some(enc)) => {
                    values += 1;
                    match open(col, ring, enc) {
                        Some(v) if &v == want => None,
                        Some(_) => Some("envelope opens to another value"),
                        None => Some("envelope does not open"),
                    }
                }
            };
            if let Some(problem) = problem {
                bad.push(format!("row {} {name}: {problem}", row.id));
            }
        }
        let index = match expected(row, 0) {
            Some(e) => WORK_BIDX.compute(ring, &[Some(IndexInput::Text(&e))])?,
            None => None,
        };
        if index != row.bidx {
            bad.push(format!("row {}: blind index differs", row.id));
        }
    }
    ensure!(
        bad.is_empty(),
        "{} bad value(s), first: {:?}",
        bad.len(),
        &bad[..bad.len().min(6)]
    );
    Ok(values)
}

async fn second_pool(db: &TestDb, connections: u32) -> Res<DatabaseConnection> {
    let mut options = ConnectOptions::new(db.url());
    options.max_connections(connections).sqlx_logging(false);
    Ok(Database::connect(options).await?)
}

/// SplitMix64: small, seedable, good enough to pick rows and delays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The run's seed: `MIGRATE_TEST_SEED` or the clock, printed so a failure can be repeated.
fn seed(test: &str, backend: Backend) -> u64 {
    let seed = std::env::var("MIGRATE_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!("{test} on {backend}: MIGRATE_TEST_SEED={seed}");
    seed
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

// ---------------------------------------------------------------------------------------------
// Child processes.

/// A keyring for the children, with the two `<id>:<base64>` entries that give it to them
/// through their environment.
struct ChildKeys {
    ring: Arc<Keyring>,
    keys: String,
    blind_index_keys: String,
}

fn child_keys() -> Res<ChildKeys> {
    let keys = generate_key_entry(KeyId(1)).to_string();
    let blind_index_keys = generate_key_entry(KeyId(1)).to_string();
    let ring = Keyring::from_vars(|name| match name {
        n if n == ENV_KEYS => Some(keys.clone()),
        n if n == ENV_BLIND_INDEX_KEYS => Some(blind_index_keys.clone()),
        _ => None,
    })?;
    Ok(ChildKeys {
        ring: Arc::new(ring),
        keys,
        blind_index_keys,
    })
}

/// `migrate_child --table <table>` on this test's database with `keys`.
fn child_command(db: &TestDb, keys: &ChildKeys, table: &str, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_migrate_child"));
    command
        .arg("--url")
        .arg(db.url())
        .args(["--table", table])
        .args(args)
        .env_remove(keyring::ENV_ACTIVE_KEY)
        .env_remove(keyring::ENV_ACTIVE_BLIND_INDEX_KEY)
        .env(ENV_KEYS, &keys.keys)
        .env(ENV_BLIND_INDEX_KEYS, &keys.blind_index_keys)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// What a child printed as its last `step=…` line, as `key → value`.
fn counts(out: &Output) -> HashMap<String, String> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .rev()
        .find(|l| l.starts_with("step="))
        .map(|line| {
            line.split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

fn count(counts: &HashMap<String, String>, key: &str) -> Res<u64> {
    counts
        .get(key)
        .ok_or_else(|| format!("no {key} in {counts:?}"))?
        .parse()
        .map_err(|e| format!("{key} in {counts:?}: {e}").into())
}

fn describe(out: &Output) -> String {
    format!(
        "{} stdout {:?} stderr {:?}",
        out.status,
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    )
}

/// A child process, killed if the test lets go of it before it exited: a failing test leaves
/// no worker (or a frozen one holding locks) behind.
struct Proc(Option<Child>);

impl Proc {
    fn spawn(mut command: Command) -> Res<Proc> {
        Ok(Proc(Some(command.spawn()?)))
    }

    fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("not waited for yet")
    }

    /// Waits for the exit without blocking the test's runtime (the database pool runs on it).
    async fn wait(mut self) -> Res<Output> {
        let child = self.0.take().expect("not waited for yet");
        Ok(tokio::task::spawn_blocking(move || child.wait_with_output()).await??)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One backfill process's report.
#[derive(Debug)]
struct WorkerReport {
    sealed: u64,
    skipped: u64,
    batches: u64,
    taken_over: u64,
    remaining: u64,
    finished: bool,
}

fn backfill_report(out: &Output) -> Res<WorkerReport> {
    ensure!(
        out.status.success(),
        "a backfill child failed: {}",
        describe(out)
    );
    let c = counts(out);
    Ok(WorkerReport {
        sealed: count(&c, "sealed")?,
        skipped: count(&c, "skipped")?,
        batches: count(&c, "batches")?,
        taken_over: count(&c, "taken_over")?,
        remaining: count(&c, "remaining")?,
        finished: c.get("finished").map(String::as_str) == Some("true"),
    })
}

// ---------------------------------------------------------------------------------------------
// 1. Concurrent backfill processes.

const SHARED_ROWS: i32 = 12_000;
const SHARED_BATCH: &str = "200";
const LEASE_MS: &str = "2000";

/// `workers` backfill processes over [`SHARED_ROWS`] rows × 3 columns, released together.
async fn concurrent_backfills(db: &TestDb, workers: usize) -> TestResult {
    let conn = &db.conn;
    let keys = child_keys()?;
    let table = "mig_work";
    create_table(conn, table).await?;
    seed_rows(conn, table, SHARED_ROWS).await?;
    start(conn, table).await?;
    let expected = seeded_values(1, i64::from(SHARED_ROWS));

    // Every child connects, then waits for the same moment to start.
    let start_at = (now_ms() + 1_500).to_string();
    let began = Instant::now();
    let children = (0..workers)
        .map(|_| {
            Proc::spawn(child_command(
                db,
                &keys,
                table,
                &[
                    "--batch-size",
                    SHARED_BATCH,
                    "--lease-ms",
                    LEASE_MS,
                    "--start-at-ms",
                    &start_at,
                ],
            ))
        })
        .collect::<Res<Vec<_>>>()?;
    let mut outputs = Vec::new();
    for child in children {
        outputs.push(child.wait().await?);
    }
    let elapsed = began.elapsed();
    let summary: Vec<String> = outputs.iter().map(describe).collect();
    let reports = outputs
        .iter()
        .map(backfill_report)
        .collect::<Res<Vec<_>>>()
        .map_err(|e| format!("{e}; all children: {summary:#?}"))?;
    let per_process: Vec<String> = reports
        .iter()
        .map(|r| format!("sealed {} in {} batches", r.sealed, r.batches))
        .collect();
    let sealed: u64 = reports.iter().map(|r| r.sealed).sum();
    let skipped: u64 = reports.iter().map(|r| r.skipped).sum();
    let sharing = reports.iter().filter(|r| r.sealed > 0).count();
    eprintln!(
        "{}: {workers} backfill processes over {SHARED_ROWS} rows ({expected} values) in \
         {elapsed:?}: {per_process:?}",
        db.backend
    );
    ensure!(
        reports.iter().all(|r| r.finished && r.remaining == 0),
        "not every process saw the backfill finished with nothing left: {reports:?}"
    );
    ensure!(
        sealed == expected,
        "the processes sealed {sealed} values in all, expected exactly {expected}: \
         {per_process:?}"
    );
    ensure!(
        skipped == 0,
        "{skipped} values skipped with no writer running: {reports:?}"
    );
    ensure!(
        sharing >= 2,
        "only {sharing} of {workers} processes sealed anything: {per_process:?}"
    );
    ensure!(
        reports.iter().all(|r| r.taken_over == 0),
        "chunks taken over although no worker died: {reports:?}"
    );
    ensure!(
        rows_done(conn, table).await? == expected as i64,
        "rows_done {} ≠ {expected}",
        rows_done(conn, table).await?
    );
    let now = phases(conn, table).await?;
    ensure!(
        now == [Phase::Backfilled; 3],
        "phases after the backfill: {now:?}"
    );

    let verified = keyring::scope(Arc::clone(&keys.ring), async {
        migrate::verify(conn, &work_plan(table), &RunOptions::default()).await
    })
    .await?;
    ensure!(verified.passed(), "verify failed: {verified:?}");
    ensure!(
        verified.matching == expected && verified.rows == SHARED_ROWS as u64,
        "verify counted {} matching values over {} rows",
        verified.matching,
        verified.rows
    );
    ensure!(
        phases(conn, table).await? == [Phase::Verified; 3],
        "not verified"
    );
    let rows = read_rows(conn, table, true).await?;
    let values = check_rows(&rows, &keys.ring, |r, c| seed_value(c, r.id))?;
    ensure!(
        values == expected,
        "{values} values open, expected {expected}"
    );
    Ok(())
}

backend_tests!(
    /// Two backfill processes started together over 12,000 rows × 3 columns: both exit 0,
    /// `sealed` adds up to exactly the values to seal, nothing skipped, both did work.
    two_backfill_processes,
    |db: &TestDb| async move { concurrent_backfills(db, 2).await }
);

backend_tests!(
    /// Four backfill processes started together: the same, with at least two doing work.
    four_backfill_processes,
    |db: &TestDb| async move { concurrent_backfills(db, 4).await }
);

// ---------------------------------------------------------------------------------------------
// 2. A worker killed mid-run.

const KILL_ROWS: i32 = 10_000;

/// One claim as stored.
#[derive(Debug, Clone, Copy)]
struct ClaimRow {
    lo: i64,
    hi: i64,
    done: bool,
}

/// The claims of the backfill of `table` owned by process `pid`.
async fn claims_of(
    conn: &impl ConnectionTrait,
    table: &str,
    pid: u32,
) -> Result<Vec<ClaimRow>, DbErr> {
    let select = Query::select()
        .columns([a("lo"), a("hi"), a("done")])
        .from(a(CLAIMS_TABLE))
        .and_where(Expr::col(a("table_name")).eq(table))
        .and_where(Expr::col(a("job")).eq("backfill"))
        .and_where(Expr::col(a("owner")).like(format!("pid{pid}-%")))
        .order_by(a("lo"), Order::Asc)
        .to_owned();
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

/// Sends `signal` (`STOP`, `CONT`) to process `pid`.
fn signal(pid: u32, signal: &str) -> TestResult {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()?;
    ensure!(status.success(), "kill -{signal} {pid}: {status}");
    Ok(())
}

/// The highest key handed out in the backfill of `table` so far.
async fn work_cursor(conn: &impl ConnectionTrait, table: &str) -> Result<Option<i64>, DbErr> {
    let select = Query::select()
        .column(a("cursor_pk"))
        .from(a(WORK_TABLE))
        .and_where(Expr::col(a("table_name")).eq(table))
        .and_where(Expr::col(a("job")).eq("backfill"))
        .to_owned();
    Ok(match conn.query_one(&select).await? {
        Some(row) => row.try_get("", "cursor_pk")?,
        None => None,
    })
}

backend_tests!(
    /// Two backfill processes; one is SIGKILLed while it holds a chunk (after committing at
    /// least two). The survivor and a restarted process finish: the dead worker's chunk is
    /// taken over once its lease runs out, and the survivors' `sealed` plus what the dead one
    /// committed (its done chunks) is exactly the number of values; verify passes.
    killed_worker_chunk_is_taken_over,
    |db: &TestDb| async move {
        let conn = &db.conn;
        let keys = child_keys()?;
        let table = "mig_work";
        create_table(conn, table).await?;
        seed_rows(conn, table, KILL_ROWS).await?;
        start(conn, table).await?;
        let expected = seeded_values(1, i64::from(KILL_ROWS));
        let args = ["--batch-size", "150", "--lease-ms", LEASE_MS, "--throttle-ms", "5"];
        let start_at = (now_ms() + 1_000).to_string();
        let mut with_start: Vec<&str> = args.to_vec();
        with_start.extend(["--start-at-ms", &start_at]);
        let mut victim = Proc::spawn(child_command(db, &keys, table, &with_start))?;
        let survivor = Proc::spawn(child_command(db, &keys, table, &with_start))?;
        let pid = victim.child().id();
        let began = Instant::now();

        // Kill the victim while it holds a chunk, once it has committed two, with most of the
        // table still to hand out. It is frozen (SIGSTOP) and looked at again first, so the
        // chunk seen held is still held when SIGKILL lands; if it committed meanwhile, it is
        // thawed (SIGCONT) and watched further.
        let ready = |claims: &[ClaimRow], cursor: Option<i64>| {
            claims.iter().filter(|c| c.done).count() >= 2
                && claims.iter().any(|c| !c.done)
                && cursor.unwrap_or(0) < i64::from(KILL_ROWS) / 2
        };
        // The look at a frozen victim gives up quickly on SQLite's lock (and thaws it).
        let look_db = second_pool(db, 1).await?;
        if db.backend == Backend::Sqlite {
            look_db
                .execute_unprepared("PRAGMA busy_timeout = 200")
                .await?;
        }
        let (mut polls, mut thawed) = (0u32, 0u32);
        let killed_at = loop {
            polls += 1;
            ensure!(
                began.elapsed() < Duration::from_secs(60),
                "the victim never held a chunk after committing two ({polls} polls)"
            );
            if victim.child().try_wait()?.is_some() {
                let claims = claims_of(conn, table, pid).await?;
                let out = victim.wait().await?;
                return Err(format!(
                    "the victim exited before it could be killed mid-chunk (claims {claims:?}): \
                     {}",
                    describe(&out)
                )
                .into());
            }
            let claims = claims_of(conn, table, pid).await?;
            if ready(&claims, work_cursor(conn, table).await?) {
                signal(pid, "STOP")?;
                tokio::time::sleep(Duration::from_millis(50)).await;
                // SQLite (rollback journal): frozen in a commit, it holds the lock readers need.
                let look = async {
                    Ok::<_, DbErr>((
                        claims_of(&look_db, table, pid).await?,
                        work_cursor(&look_db, table).await?,
                    ))
                };
                match look.await {
                    Ok((claims, cursor)) if ready(&claims, cursor) => {
                        victim.child().kill()?;
                        break cursor.unwrap_or(0);
                    }
                    Ok(_) => {}
                    Err(e) if lock_conflict(&e) => {}
                    Err(e) => return Err(e.into()),
                }
                signal(pid, "CONT")?;
                thawed += 1;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        look_db.close().await?;
        let victim_out = victim.wait().await?;
        ensure!(
            !victim_out.status.success(),
            "the victim finished before the kill: {}",
            describe(&victim_out)
        );
        // What the dead worker left: every chunk it completed was sealed by it alone (the
        // chunks of a pass do not overlap and nothing else writes), and its held chunk(s).
        let left = claims_of(conn, table, pid).await?;
        let committed: u64 = left
            .iter()
            .filter(|c| c.done)
            .map(|c| seeded_values(c.lo, c.hi))
            .sum();
        let orphans: Vec<ClaimRow> = left.iter().copied().filter(|c| !c.done).collect();
        let done_at_kill = rows_done(conn, table).await?;
        ensure!(
            committed > 0 && done_at_kill >= committed as i64,
            "the victim's done chunks hold {committed} values, rows_done is {done_at_kill}"
        );

        // A restarted worker joins the survivor.
        let restarted = Proc::spawn(child_command(db, &keys, table, &args))?;
        let survivor_out = survivor.wait().await?;
        let restarted_out = restarted.wait().await?;
        let elapsed = began.elapsed();
        let s = backfill_report(&survivor_out)?;
        let r = backfill_report(&restarted_out)?;
        eprintln!(
            "{}: victim killed at cursor {killed_at} after {polls} polls ({thawed} thawed) \
             holding {orphans:?}, having committed {} chunks ({committed} values); survivor \
             {s:?}; restarted {r:?}; {elapsed:?}",
            db.backend,
            left.iter().filter(|c| c.done).count()
        );
        ensure!(
            s.finished && r.finished,
            "not finished: survivor {s:?}, restarted {r:?}"
        );
        ensure!(
            s.skipped + r.skipped == 0,
            "values skipped with no writer: survivor {s:?}, restarted {r:?}"
        );
        ensure!(
            s.sealed + r.sealed + committed == expected,
            "survivor {} + restarted {} + victim {committed} = {} sealed, expected exactly \
             {expected}",
            s.sealed,
            r.sealed,
            s.sealed + r.sealed + committed
        );
        ensure!(
            rows_done(conn, table).await? == expected as i64,
            "rows_done {} ≠ {expected}",
            rows_done(conn, table).await?
        );
        // The chunk the victim held cannot complete but through a takeover.
        ensure!(
            !orphans.is_empty() && s.taken_over + r.taken_over >= orphans.len() as u64,
            "the victim held {orphans:?} but survivor took over {} and restarted {}",
            s.taken_over,
            r.taken_over
        );
        ensure!(
            s.remaining + r.remaining == 0,
            "values left unsealed: {s:?} {r:?}"
        );
        ensure!(phases(conn, table).await? == [Phase::Backfilled; 3], "not backfilled");
        let verified = keyring::scope(Arc::clone(&keys.ring), async {
            migrate::verify(conn, &work_plan(table), &RunOptions::default()).await
        })
        .await?;
        ensure!(verified.passed(), "verify failed: {verified:?}");
        let rows = read_rows(conn, table, true).await?;
        let values = check_rows(&rows, &keys.ring, |r, c| seed_value(c, r.id))?;
        ensure!(values == expected, "{values} values open, expected {expected}");
        Ok(())
    }
);

// ---------------------------------------------------------------------------------------------
// 2b. Concurrent repair processes.

const REPAIR_ROWS: i32 = 6_000;

/// The plaintext-only change of row `id` after verify, if any: every 10th row gets one
/// column changed (to NULL for every 40th), so each `(row, column)` changes at most once.
fn stale_change(id: i32) -> Option<(usize, Option<String>)> {
    (id % 10 == 3).then(|| {
        let col = (id / 10 % 3) as usize;
        let value = (id % 40 != 3).then(|| format!("changed-{id}-{col}@Example.com"));
        (col, value)
    })
}

/// Like [`backfill_report`], for `--step repair`.
fn repair_counts(out: &Output) -> Res<(u64, u64, u64, bool)> {
    ensure!(
        out.status.success(),
        "a repair child failed: {}",
        describe(out)
    );
    let c = counts(out);
    Ok((
        count(&c, "repaired")?,
        count(&c, "skipped")?,
        count(&c, "batches")?,
        c.get("finished").map(String::as_str) == Some("true"),
    ))
}

backend_tests!(
    /// A verified table whose plaintext an old instance changed in 600 rows (some to NULL),
    /// then two repair processes started together: both exit 0, their `repaired` counts add
    /// up to exactly the changed values, nothing is skipped, both did work, the columns are
    /// back in `backfilled`, and verify passes again with every envelope carrying the new
    /// plaintext.
    two_repair_processes,
    |db: &TestDb| async move {
        let conn = &db.conn;
        let keys = child_keys()?;
        let table = "mig_work";
        create_table(conn, table).await?;
        seed_rows(conn, table, REPAIR_ROWS).await?;
        start(conn, table).await?;
        let plan = work_plan(table);
        keyring::scope(Arc::clone(&keys.ring), async {
            let options = RunOptions {
                batch_size: 500,
                ..RunOptions::default()
            };
            let b = migrate::backfill(conn, &plan, &options, |_| {}).await?;
            ensure!(b.finished && b.remaining == 0, "backfill: {b:?}");
            let v = migrate::verify(conn, &plan, &options).await?;
            ensure!(v.passed(), "verify: {v:?}");
            Res::Ok(())
        })
        .await?;
        ensure!(phases(conn, table).await? == [Phase::Verified; 3], "not verified");

        // The old instance: plaintext only.
        let mut changed = 0u64;
        let mut last: HashMap<(i32, usize), Option<String>> = HashMap::new();
        for id in 1..=REPAIR_ROWS {
            let Some((col, value)) = stale_change(id) else {
                continue;
            };
            if value != seed_value(col, id) {
                changed += 1;
            }
            let update = Query::update()
                .table(a(table))
                .value(a(COLUMNS[col]), value.clone())
                .and_where(Expr::col(a("id")).eq(id))
                .to_owned();
            conn.execute(&update).await?;
            last.insert((id, col), value);
        }

        let start_at = (now_ms() + 1_000).to_string();
        let args = [
            "--step",
            "repair",
            "--batch-size",
            "100",
            "--lease-ms",
            LEASE_MS,
            "--start-at-ms",
            &start_at,
        ];
        let began = Instant::now();
        let children = [
            Proc::spawn(child_command(db, &keys, table, &args))?,
            Proc::spawn(child_command(db, &keys, table, &args))?,
        ];
        let mut outputs = Vec::new();
        for child in children {
            outputs.push(child.wait().await?);
        }
        let summary: Vec<String> = outputs.iter().map(describe).collect();
        let reports = outputs
            .iter()
            .map(repair_counts)
            .collect::<Res<Vec<_>>>()
            .map_err(|e| format!("{e}; both children: {summary:#?}"))?;
        eprintln!(
            "{}: 2 repair processes over {REPAIR_ROWS} rows ({changed} changed values) in \
             {:?}: (repaired, skipped, batches, finished) {reports:?}",
            db.backend,
            began.elapsed()
        );
        let repaired: u64 = reports.iter().map(|r| r.0).sum();
        ensure!(
            repaired == changed,
            "repaired {repaired} values in all, expected exactly {changed}: {reports:?}"
        );
        ensure!(
            reports.iter().all(|r| r.1 == 0 && r.3),
            "skipped or unfinished: {reports:?}"
        );
        ensure!(
            reports.iter().all(|r| r.0 > 0),
            "one process repaired nothing: {reports:?}"
        );
        let now = phases(conn, table).await?;
        ensure!(
            now == [Phase::Backfilled; 3],
            "phases after repairing verified columns: {now:?}"
        );
        let verified = keyring::scope(Arc::clone(&keys.ring), async {
            migrate::verify(conn, &plan, &RunOptions::default()).await
        })
        .await?;
        ensure!(verified.passed(), "verify after repair: {verified:?}");
        let rows = read_rows(conn, table, true).await?;
        check_rows(&rows, &keys.ring, |r, c| match last.get(&(r.id, c)) {
            Some(v) => v.clone(),
            None => seed_value(c, r.id),
        })?;
        Ok(())
    }
);

// ---------------------------------------------------------------------------------------------
// 3. An old instance writing plaintext only.

const LEGACY_ROWS: i32 = 6_000;
const LEGACY_PAUSE: Duration = Duration::from_millis(4);
/// Rounds of verify → repair while the old instance still writes.
const LIVE_ROUNDS: usize = 3;
const MAX_ROUNDS: usize = 10;

/// Whether `err` is a lock conflict after which the statement did not happen.
fn lock_conflict(err: &DbErr) -> bool {
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

/// What the old instance wrote: the last value of each `(id, column)` it touched.
#[derive(Default)]
struct LegacyLog {
    updates: u64,
    inserts: u64,
    conflicts: u64,
    last: HashMap<(i32, usize), Option<String>>,
}

/// An old instance: plaintext-only UPDATEs of random rows (sometimes to NULL) and INSERTs of
/// new rows, never touching an envelope, until `running` goes false.
async fn legacy_writer(
    conn: DatabaseConnection,
    table: &'static str,
    running: Arc<AtomicBool>,
    mut rng: Rng,
) -> Result<LegacyLog, String> {
    let mut log = LegacyLog::default();
    let mut next_id = LEGACY_ROWS + 1;
    let mut n = 0u64;
    while running.load(Ordering::Acquire) {
        n += 1;
        if rng.below(5) == 0 {
            let id = next_id;
            let values: Vec<Option<String>> = (0..3)
                .map(|c| (rng.below(6) != 0).then(|| legacy_value(c, id, n)))
                .collect();
            let insert = Query::insert()
                .into_table(a(table))
                .columns([a("id"), a("email"), a("phone"), a("notes")])
                .values_panic([
                    id.into(),
                    values[0].clone().into(),
                    values[1].clone().into(),
                    values[2].clone().into(),
                ])
                .to_owned();
            match conn.execute(&insert).await {
                Ok(_) => {
                    next_id += 1;
                    log.inserts += 1;
                    for (c, v) in values.into_iter().enumerate() {
                        log.last.insert((id, c), v);
                    }
                }
                Err(e) if lock_conflict(&e) => log.conflicts += 1,
                Err(e) => return Err(format!("insert of row {id}: {e}")),
            }
        } else {
            let id = 1 + rng.below((next_id - 1) as u64) as i32;
            let c = rng.below(3) as usize;
            let value = (rng.below(8) != 0).then(|| legacy_value(c, id, n));
            let update = Query::update()
                .table(a(table))
                .value(a(COLUMNS[c]), value.clone())
                .and_where(Expr::col(a("id")).eq(id))
                .to_owned();
            match conn.execute(&update).await {
                Ok(_) => {
                    log.updates += 1;
                    log.last.insert((id, c), value);
                }
                Err(e) if lock_conflict(&e) => log.conflicts += 1,
                Err(e) => return Err(format!("update of row {id}: {e}")),
            }
        }
        tokio::time::sleep(LEGACY_PAUSE).await;
    }
    Ok(log)
}

/// A value the old instance writes (unique per write).
fn legacy_value(col: usize, id: i32, n: u64) -> String {
    match col {
        0 => format!("old{n}.{id}@Example.net"),
        1 => format!("+44-20-{n:05}{id:05}"),
        _ => format!("Altinstanz {n} schrieb Zeile {id} — ohne Umschlag"),
    }
}

backend_tests!(
    /// An old instance keeps writing plaintext only (updates, some to NULL, and inserts of
    /// new rows) during the backfill and the first rounds of verify → repair, then stops:
    /// the loop converges within ten rounds, and every row's envelopes and blind index carry
    /// exactly its final plaintext (the old instance's last write or the seed) — no value
    /// lost. Cut-over then succeeds.
    old_instance_writes_then_repair_converges,
    |db: &TestDb| async move {
        let conn = &db.conn;
        let seed = seed("old_instance_writes_then_repair_converges", db.backend);
        let table = "mig_work";
        create_table(conn, table).await?;
        seed_rows(conn, table, LEGACY_ROWS).await?;
        start(conn, table).await?;
        let plan = work_plan(table);
        let options = RunOptions {
            batch_size: 200,
            throttle: Some(Duration::from_millis(2)),
            lease: Duration::from_secs(2),
            ..RunOptions::default()
        };

        let writer_db = second_pool(db, 2).await?;
        let running = Arc::new(AtomicBool::new(true));
        let writer = tokio::spawn(legacy_writer(
            writer_db.clone(),
            table,
            Arc::clone(&running),
            Rng(seed),
        ));
        let began = Instant::now();
        let backfill = migrate::backfill(conn, &plan, &options, |_| {}).await;
        let backfill = match backfill {
            Ok(r) => r,
            Err(e) => {
                running.store(false, Ordering::Release);
                let _ = writer.await;
                return Err(e.into());
            }
        };
        ensure!(backfill.finished, "backfill did not finish: {backfill:?}");
        let backfill_time = began.elapsed();

        let mut rounds = Vec::new();
        let mut converged = false;
        let mut repaired = 0;
        let mut log = None;
        let mut writer = Some(writer);
        for round in 1..=MAX_ROUNDS {
            if round == LIVE_ROUNDS + 1 {
                running.store(false, Ordering::Release);
                if let Some(w) = writer.take() {
                    log = Some(w.await??);
                }
            }
            let check = migrate::verify(conn, &plan, &options).await;
            let check = match check {
                Ok(c) => c,
                Err(e) => {
                    running.store(false, Ordering::Release);
                    return Err(format!("round {round}: verify: {e}").into());
                }
            };
            if check.passed() && writer.is_none() {
                rounds.push(format!("r{round}: verify passed"));
                converged = true;
                break;
            }
            let fixed = migrate::repair(conn, &plan, &options, |_| {}).await;
            let fixed = match fixed {
                Ok(f) => f,
                Err(e) => {
                    running.store(false, Ordering::Release);
                    return Err(format!("round {round}: repair: {e}").into());
                }
            };
            repaired += fixed.repaired;
            rounds.push(format!(
                "r{round}: {} missing, {} mismatched, {} index → repaired {} (skipped {})",
                check.missing, check.mismatched, check.index_mismatched, fixed.repaired,
                fixed.skipped
            ));
        }
        running.store(false, Ordering::Release);
        if let Some(w) = writer.take() {
            log = Some(w.await??);
        }
        let log = log.ok_or("the old instance's log is missing")?;
        eprintln!(
            "{}: backfill sealed {} (skipped {}, remaining {}) in {backfill_time:?}; old \
             instance: {} updates, {} inserts, {} lock conflicts; rounds: {rounds:?}",
            db.backend,
            backfill.sealed,
            backfill.skipped,
            backfill.remaining,
            log.updates,
            log.inserts,
            log.conflicts
        );
        ensure!(converged, "verify → repair did not converge: {rounds:?}");
        ensure!(
            log.updates > 0 && log.inserts > 0,
            "the old instance wrote nothing: {} updates, {} inserts",
            log.updates,
            log.inserts
        );
        ensure!(repaired > 0, "repair never had anything to do: {rounds:?}");
        ensure!(
            phases(conn, table).await? == [Phase::Verified; 3],
            "phases after convergence: {:?}",
            phases(conn, table).await?
        );

        let rows = read_rows(conn, table, true).await?;
        ensure!(
            rows.len() == LEGACY_ROWS as usize + log.inserts as usize,
            "{} rows, expected {} + {} inserted",
            rows.len(),
            LEGACY_ROWS,
            log.inserts
        );
        let expected = |row: &Row, c: usize| match log.last.get(&(row.id, c)) {
            Some(v) => v.clone(),
            None => seed_value(c, row.id),
        };
        // The plaintext holds exactly the old instance's last writes (or the seed)...
        for row in &rows {
            for (c, name) in COLUMNS.iter().enumerate() {
                ensure!(
                    row.plain[c] == expected(row, c),
                    "row {} {name}: plaintext lost an update",
                    row.id
                );
            }
        }
        // ...and every envelope and the blind index carry exactly it.
        let ring = keyring::current()?;
        check_rows(&rows, &ring, expected)?;
        let cut = migrate::cut_over(conn, &plan, &options).await?;
        ensure!(cut.moved.len() == 3, "cut-over moved {:?}", cut.moved);
        writer_db.close().await?;
        Ok(())
    }
);

// ---------------------------------------------------------------------------------------------
// 4. SIGKILL during drop / purge, then resume.

const DROP_ROWS: i32 = 3_000;

/// Kill points, as fractions of the calibrated duration of the step (drop, then purge).
const KILL_POINTS: [(&str, f64); 8] = [
    ("drop", 0.0),
    ("drop", 0.3),
    ("drop", 0.6),
    ("drop", 0.8),
    ("drop", 0.9),
    ("drop", 1.0),
    ("purge", 0.0),
    ("purge", 0.5),
];

/// What a killed drop / purge left.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Landed {
    /// The child had finished before the kill.
    Finished,
    /// Nothing dropped yet: phases `cut_over`, plaintext columns present.
    BeforeDrop,
    /// MySQL: the `ALTER TABLE` committed, the phase change did not.
    DroppedUnrecorded,
    /// Phases `dropped`, not purged.
    DroppedNotPurged,
    /// Phases `purged`.
    Purged,
    /// Anything else (a failure).
    Other(String),
}

/// Whether `table` still has column `column` (from the catalog: SQLite would read a quoted
/// unknown column as a string literal).
async fn has_column(conn: &impl ConnectionTrait, table: &str, column: &str) -> Res<bool> {
    let backend = conn.get_database_backend();
    let sql = match backend {
        DbBackend::Sqlite => "SELECT name FROM pragma_table_info(?) WHERE name = ?",
        DbBackend::Postgres => {
            "SELECT column_name AS name FROM information_schema.columns WHERE table_name = $1 \
             AND column_name = $2 AND table_schema = current_schema()"
        }
        _ => {
            "SELECT column_name AS name FROM information_schema.columns WHERE table_name = ? \
             AND column_name = ? AND table_schema = DATABASE()"
        }
    };
    let found = conn
        .query_all_raw(Statement::from_sql_and_values(
            backend,
            sql,
            [table.into(), column.into()],
        ))
        .await?;
    Ok(!found.is_empty())
}

async fn landed(conn: &impl ConnectionTrait, table: &str) -> Res<Landed> {
    let now = phases(conn, table).await?;
    let mut present = Vec::new();
    for column in COLUMNS {
        present.push(has_column(conn, table, column).await?);
    }
    Ok(
        match (
            now.as_slice(),
            present.iter().all(|p| *p),
            present.iter().any(|p| *p),
        ) {
            ([Phase::CutOver, Phase::CutOver, Phase::CutOver], true, _) => Landed::BeforeDrop,
            ([Phase::CutOver, Phase::CutOver, Phase::CutOver], _, false) => {
                Landed::DroppedUnrecorded
            }
            ([Phase::Dropped, Phase::Dropped, Phase::Dropped], _, false) => {
                Landed::DroppedNotPurged
            }
            ([Phase::Purged, Phase::Purged, Phase::Purged], _, false) => Landed::Purged,
            _ => Landed::Other(format!("phases {now:?}, columns present {present:?}")),
        },
    )
}

/// A run of the drop-then-purge child.
struct ChildRun {
    out: Output,
    /// The SIGKILL reached a running child.
    killed: bool,
    /// From announcing the drop to announcing the purge.
    drop_time: Option<Duration>,
    /// From announcing the purge to exiting.
    purge_time: Option<Duration>,
}

/// Reads the child's stdout, timing its steps; once it announces step `kill_at.0`, waits
/// `kill_at.1` and SIGKILLs it (`None`: lets it run to the end).
fn run_child(mut child: Child, kill_at: Option<(&str, Duration)>) -> std::io::Result<ChildRun> {
    let stdout = child.stdout.take().expect("piped stdout");
    let mut reader = BufReader::new(stdout);
    let (mut seen, mut line) = (String::new(), String::new());
    let (mut drop_at, mut purge_at, mut exit_at) = (None, None, None);
    let mut killed = false;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            exit_at = Some(Instant::now());
            break;
        }
        seen.push_str(&line);
        match line.trim_end() {
            "start step=drop" => drop_at = Some(Instant::now()),
            "start step=purge" => purge_at = Some(Instant::now()),
            _ => {}
        }
        if let Some((step, delay)) = kill_at
            && line.trim_end() == format!("start step={step}")
        {
            std::thread::sleep(delay);
            killed = child.try_wait()?.is_none();
            let _ = child.kill();
            break;
        }
    }
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut reader, &mut rest);
    seen.push_str(&rest);
    let mut out = child.wait_with_output()?;
    out.stdout = seen.into_bytes();
    let between = |x: Option<Instant>, y: Option<Instant>| Some(y?.duration_since(x?));
    Ok(ChildRun {
        out,
        killed,
        drop_time: between(drop_at, purge_at),
        purge_time: between(purge_at, exit_at),
    })
}

backend_tests!(
    /// The child running drop-then-purge over a cut-over table of 3,000 rows × 3 columns:
    /// once uninterrupted (timing its drop and purge), then SIGKILLed at eight points spread
    /// over those durations, each time on a fresh table; a fresh child resumes: it exits 0,
    /// reports what it found (dropped, recorded as dropped, already dropped; purged), the
    /// phases end `purged`, the plaintext columns are gone, and every envelope opens to the
    /// value its plaintext had.
    killed_drop_and_purge_resume,
    |db: &TestDb| async move {
        let conn = &db.conn;
        let keys = child_keys()?;
        let mut outcomes: Vec<String> = Vec::new();
        let mut interrupted = 0;
        let (mut drop_time, mut purge_time) = (Duration::ZERO, Duration::ZERO);
        // Trial 0 is the uninterrupted calibration run.
        let trials = std::iter::once(None).chain(KILL_POINTS.iter().map(Some));
        for (trial, point) in trials.enumerate() {
            let table = format!("mig_drop_{trial}");
            create_table(conn, &table).await?;
            seed_rows(conn, &table, DROP_ROWS).await?;
            start(conn, &table).await?;
            let plan = work_plan(&table);
            keyring::scope(Arc::clone(&keys.ring), async {
                let options = RunOptions {
                    batch_size: 500,
                    ..RunOptions::default()
                };
                let b = migrate::backfill(conn, &plan, &options, |_| {}).await?;
                ensure!(b.finished && b.remaining == 0, "backfill: {b:?}");
                let v = migrate::verify(conn, &plan, &options).await?;
                ensure!(v.passed(), "verify: {v:?}");
                migrate::cut_over(conn, &plan, &options).await?;
                Res::Ok(())
            })
            .await
            .map_err(|e| format!("trial {trial} setup: {e}"))?;
            let before = read_rows(conn, &table, true).await?;

            let args = ["--step", "finish", "--batch-size", "500"];
            let child = child_command(db, &keys, &table, &args).spawn()?;
            let kill_at = point.map(|&(step, fraction)| {
                let whole = if step == "drop" { drop_time } else { purge_time };
                (step, whole.mul_f64(fraction))
            });
            let label = match kill_at {
                Some((step, delay)) => format!("{step}+{}ms", delay.as_millis()),
                None => "no kill".to_owned(),
            };
            let run = tokio::task::spawn_blocking(move || run_child(child, kill_at)).await??;
            if point.is_none() {
                drop_time = run.drop_time.ok_or("the calibration run did not drop")?;
                purge_time = run.purge_time.ok_or("the calibration run did not purge")?;
            }
            // Let the server finish (or roll back) what the dead client left, then look until
            // two looks 250 ms apart agree.
            tokio::time::sleep(Duration::from_millis(250)).await;
            let mut at_kill = landed(conn, &table).await?;
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let again = landed(conn, &table).await?;
                if again == at_kill {
                    break;
                }
                at_kill = again;
            }
            if !run.killed {
                ensure!(
                    run.out.status.success(),
                    "trial {trial} ({label}): the child failed: {}",
                    describe(&run.out)
                );
                ensure!(at_kill == Landed::Purged, "trial {trial}: finished but {at_kill:?}");
                at_kill = Landed::Finished;
            }
            ensure!(
                !matches!(at_kill, Landed::Other(_)),
                "trial {trial} ({label}): the kill left {at_kill:?}"
            );
            if !matches!(at_kill, Landed::Finished | Landed::Purged) {
                interrupted += 1;
            }

            let resumed = Proc::spawn(child_command(db, &keys, &table, &args))?
                .wait()
                .await?;
            ensure!(
                resumed.status.success(),
                "trial {trial} ({label}, left {at_kill:?}): the resumed child failed: {}",
                describe(&resumed)
            );
            let c = counts(&resumed);
            let said = (
                count(&c, "dropped")?,
                count(&c, "recorded")?,
                count(&c, "already")?,
                count(&c, "purged")?,
            );
            let want = match at_kill {
                Landed::BeforeDrop => (3, 0, 0, 3),
                Landed::DroppedUnrecorded => (0, 3, 0, 3),
                Landed::DroppedNotPurged => (0, 0, 3, 3),
                _ => (0, 0, 3, 0),
            };
            ensure!(
                said == want,
                "trial {trial} ({label}): after {at_kill:?} the resumed child said (dropped, \
                 recorded, already, purged) = {said:?}, expected {want:?}: {}",
                describe(&resumed)
            );
            ensure!(
                phases(conn, &table).await? == [Phase::Purged; 3],
                "trial {trial}: phases {:?}",
                phases(conn, &table).await?
            );
            for column in COLUMNS {
                ensure!(
                    !has_column(conn, &table, column).await?,
                    "trial {trial}: plaintext column {column} is still there"
                );
            }
            let after = read_rows(conn, &table, false).await?;
            ensure!(
                after.len() == before.len(),
                "trial {trial}: {} rows before, {} after",
                before.len(),
                after.len()
            );
            let plain: HashMap<i32, [Option<String>; 3]> =
                before.into_iter().map(|r| (r.id, r.plain)).collect();
            check_rows(&after, &keys.ring, |r, c| {
                plain.get(&r.id).and_then(|p| p[c].clone())
            })
            .map_err(|e| format!("trial {trial} ({label}): {e}"))?;
            outcomes.push(format!("{label}: {at_kill:?}"));
        }
        eprintln!(
            "{}: drop took {drop_time:?}, purge {purge_time:?}; kills landed: {outcomes:?}",
            db.backend
        );
        ensure!(
            interrupted >= 1,
            "no kill interrupted the drop or the purge: {outcomes:?}"
        );
        Ok(())
    }
);
