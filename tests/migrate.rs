//! Zero-downtime column migration (`encrypted_columns::migrate`) on every backend:
//!
//! 1. the backfill over 20,000 rows while four tasks keep dual-writing random rows, and key
//!    rotation while four tasks keep writing through the encrypted path — every row ends up
//!    opening to its final value, blind indexes included;
//! 2. crash resume: a child process running the backfill is SIGKILLed at random moments,
//!    with the parent writing meanwhile (dual writes, and plaintext-only writes of an old
//!    instance); no chunk a claim records as done is lost, no envelope is stale, and
//!    backfill → verify → repair → verify ends with every value sealed;
//! 3. refused input: steps out of order, moves that only a checking step may make, no
//!    keyring, unknown tables and columns — clear errors, state and data unchanged;
//! 4. reads after cut-over fail closed (`Error::FallbackRefused`);
//! 5. the `migrate::schema` helpers through a `SchemaManager`;
//! 6. the data-loss defects of issue 10, each driven through the library API and plain SQL
//!    the way an old application instance writes: a failing re-verify demotes and cut-over
//!    re-checks; drop refuses plaintext no envelope carries; a table's columns move together
//!    (and a step skips columns already past it); drop and purge resume at the phase level;
//!    a restarted backfill leaves finished columns alone; duplicate normalized values under a
//!    UNIQUE blind index are refused before anything is written; SQLite under ~150 outside
//!    writes per second.
//!
//! Random choices come from a seed printed by each test; set `MIGRATE_TEST_SEED` to repeat
//! a run.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use encrypted_columns::blind_index::{BlindIndex, IndexInput, Pipeline, unique_violation};
use encrypted_columns::keyring::{
    self, ENV_BLIND_INDEX_KEYS, ENV_KEYS, generate_key, generate_key_entry,
};
use encrypted_columns::migrate::dual::ReadPolicy;
use encrypted_columns::migrate::{
    self, EncryptColumn, EncryptTable, MigrationState, Phase, RotateColumn, RunOptions, schema,
    state,
};
use encrypted_columns::schema::blind_index_column_type;
use encrypted_columns::{Encrypted, Error, KeyId, Keyring, column_context};
use encrypted_columns_tests::{Backend, TestDb, TestResult, backend_tests, raw};
use sea_orm::sea_query::{
    Alias, ColumnDef, ColumnType, Expr, ExprTrait, Func, Index, Order, Query, Table,
};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbErr, Value};
use sea_orm_migration::SchemaManager;

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
// Tables, contexts and indexes. Every table has an integer `id`, a plaintext `email` (unless
// noted), its envelope `email_enc` and a blind index `email_bidx` over it.

column_context!(PatientEmail, table = "mig_patients", column = "email");
column_context!(RotEmail, table = "mig_rot", column = "email");
// Must match tests/bin/migrate_child.rs.
column_context!(CrashEmail, table = "mig_crash", column = "email");
column_context!(BadEmail, table = "mig_bad", column = "email");
column_context!(CutEmail, table = "mig_cut", column = "email");
column_context!(LegacyEmail, table = "mig_legacy", column = "email");
column_context!(LegacyNotes, table = "mig_legacy", column = "notes");
column_context!(TransEmail, table = "mig_trans", column = "email");
column_context!(DemoteEmail, table = "mig_demote", column = "email");
column_context!(DropEmail, table = "mig_drop", column = "email");
column_context!(MultiName, table = "mig_multi", column = "full_name");
column_context!(MultiEmail, table = "mig_multi", column = "email");
column_context!(MultiPhone, table = "mig_multi", column = "phone");
column_context!(SplitName, table = "mig_split", column = "full_name");
column_context!(SplitEmail, table = "mig_split", column = "email");
column_context!(PurgeEmail, table = "mig_purge", column = "email");
column_context!(PurgePhone, table = "mig_purge", column = "phone");
column_context!(RestartEmail, table = "mig_restart", column = "email");
column_context!(DupEmail, table = "mig_dup", column = "email");
column_context!(BusyEmail, table = "mig_busy", column = "email");

fn email_index(table: &'static str) -> BlindIndex {
    BlindIndex::new(table, "email_bidx").field(Pipeline::parse("email").expect("email pipeline"))
}

static PATIENT_BIDX: LazyLock<BlindIndex> = LazyLock::new(|| email_index("mig_patients"));
static ROT_BIDX: LazyLock<BlindIndex> = LazyLock::new(|| email_index("mig_rot"));
static CRASH_BIDX: LazyLock<BlindIndex> = LazyLock::new(|| email_index("mig_crash"));
static BAD_BIDX: LazyLock<BlindIndex> = LazyLock::new(|| email_index("mig_bad"));
/// UNIQUE, so the schema helper creates a unique index.
static LEGACY_BIDX: LazyLock<BlindIndex> = LazyLock::new(|| email_index("mig_legacy").unique());
static TRANS_BIDX: LazyLock<BlindIndex> = LazyLock::new(|| email_index("mig_trans"));
static DEMOTE_BIDX: LazyLock<BlindIndex> = LazyLock::new(|| email_index("mig_demote"));
static DROP_BIDX: LazyLock<BlindIndex> = LazyLock::new(|| email_index("mig_drop"));
static MULTI_BIDX: LazyLock<BlindIndex> = LazyLock::new(|| email_index("mig_multi"));
static SPLIT_BIDX: LazyLock<BlindIndex> = LazyLock::new(|| email_index("mig_split"));
static PURGE_BIDX: LazyLock<BlindIndex> = LazyLock::new(|| email_index("mig_purge"));
static RESTART_BIDX: LazyLock<BlindIndex> = LazyLock::new(|| email_index("mig_restart"));
/// UNIQUE: the backfill pre-checks it for colliding plaintexts.
static DUP_BIDX: LazyLock<BlindIndex> = LazyLock::new(|| email_index("mig_dup").unique());
static BUSY_BIDX: LazyLock<BlindIndex> = LazyLock::new(|| email_index("mig_busy"));

/// `CREATE TABLE table (id int primary key, [email varchar(320),] email_enc blob,
/// email_bidx binary(33))`.
async fn create_table(conn: &DatabaseConnection, table: &str, plaintext: bool) -> TestResult {
    let mut create = Table::create();
    create
        .table(a(table))
        .col(ColumnDef::new(a("id")).integer().not_null().primary_key());
    if plaintext {
        create.col(ColumnDef::new(a("email")).string_len(320).null());
    }
    create
        .col(ColumnDef::new(a("email_enc")).blob().null())
        .col(
            ColumnDef::new_with_type(a("email_bidx"), blind_index_column_type(&PATIENT_BIDX))
                .null(),
        );
    conn.execute(&create.to_owned()).await?;
    Ok(())
}

/// The seeded plaintext of row `id`: ~20 bytes, NULL for every 97th row.
fn seed_email(id: i32) -> Option<String> {
    (id % 97 != 0).then(|| format!("p{id:06}@example.org"))
}

/// Inserts rows `1..=rows` with [`seed_email`] plaintexts and no envelopes.
async fn seed_plaintext(conn: &DatabaseConnection, table: &str, rows: i32) -> TestResult {
    for chunk in (1..=rows).collect::<Vec<_>>().chunks(500) {
        let mut insert = Query::insert();
        insert.into_table(a(table)).columns([a("id"), a("email")]);
        for &id in chunk {
            insert.values_panic([id.into(), seed_email(id).into()]);
        }
        conn.execute(&insert).await?;
    }
    Ok(())
}

/// One row as stored.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    id: i32,
    email: Option<String>,
    enc: Option<Vec<u8>>,
    bidx: Option<Vec<u8>>,
}

/// Every row of `table`, by id (`email` is `None` where the table has no such column).
async fn read_rows(conn: &impl ConnectionTrait, table: &str, plaintext: bool) -> Res<Vec<Row>> {
    let mut select = Query::select();
    select.column(a("id"));
    if plaintext {
        select.column(a("email"));
    }
    select
        .columns([a("email_enc"), a("email_bidx")])
        .from(a(table))
        .order_by(a("id"), Order::Asc);
    let mut rows = Vec::new();
    for row in conn.query_all(&select).await? {
        rows.push(Row {
            id: row.try_get("", "id")?,
            email: if plaintext {
                row.try_get("", "email")?
            } else {
                None
            },
            enc: row.try_get("", "email_enc")?,
            bidx: row.try_get("", "email_bidx")?,
        });
    }
    Ok(rows)
}

/// The blind-index value of `email` under the keyring's active blind-index key.
fn index_of(index: &BlindIndex, ring: &Keyring, email: &Option<String>) -> Res<Option<Vec<u8>>> {
    Ok(match email {
        Some(e) => index.compute(ring, &[Some(IndexInput::Text(e))])?,
        None => None,
    })
}

/// The independent check: each row's envelope opens (with `ring`) to exactly `expected(row)`
/// and its blind index is the recomputation under `ring`'s active blind-index key; NULL
/// plaintext has NULL envelope and index. Returns how many rows held a value.
fn check_rows<C: encrypted_columns::ColumnContext>(
    rows: &[Row],
    ring: &Keyring,
    index: &BlindIndex,
    expected: impl Fn(&Row) -> Option<String>,
) -> Res<usize> {
    let mut bad: Vec<String> = Vec::new();
    let mut values = 0;
    for row in rows {
        let want = expected(row);
        let problem = match (&want, &row.enc) {
            (None, None) => None,
            (None, Some(_)) => Some("envelope without plaintext"),
            (Some(_), None) => Some("no envelope"),
            (Some(want), Some(enc)) => {
                values += 1;
                match Encrypted::<String, C>::from_envelope_with(ring, enc.clone()) {
                    Ok(opened) if opened.expose() == want => None,
                    Ok(_) => Some("envelope opens to another value"),
                    Err(_) => Some("envelope does not open"),
                }
            }
        };
        let problem = problem.or_else(|| {
            (index_of(index, ring, &want).ok()? != row.bidx).then_some("blind index differs")
        });
        if let Some(problem) = problem {
            bad.push(format!("row {}: {problem}", row.id));
        }
    }
    ensure!(
        bad.is_empty(),
        "{} bad row(s), first: {:?}",
        bad.len(),
        &bad[..bad.len().min(5)]
    );
    Ok(values)
}

/// A dual write as the application does it in phase `dual_write`: plaintext, envelope and
/// blind index together in one UPDATE ([`ReadPolicy::write`] with the keyring in force).
async fn dual_write<C: encrypted_columns::ColumnContext>(
    conn: &impl ConnectionTrait,
    table: &str,
    index: &BlindIndex,
    id: i32,
    value: Option<String>,
) -> Res<()> {
    let ring = keyring::current()?;
    let bidx = index_of(index, &ring, &value)?;
    let write = ReadPolicy::EncryptedFirst.write::<String, C>(value)?;
    let update = Query::update()
        .table(a(table))
        .value(a("email"), write.plaintext)
        .value(
            a("email_enc"),
            Value::Bytes(write.encrypted.map(|e| e.envelope().to_vec())),
        )
        .value(a("email_bidx"), Value::Bytes(bidx))
        .and_where(Expr::col(a("id")).eq(id))
        .to_owned();
    conn.execute(&update).await?;
    Ok(())
}

/// A second pool on the test's database, so writers do not queue behind the migration for
/// the test connection's four slots.
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

    /// True with probability `1 / n`.
    fn one_in(&mut self, n: u64) -> bool {
        self.next().is_multiple_of(n)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % ((hi - lo + 1) as u64)) as i64
    }
}

/// The run's seed: `MIGRATE_TEST_SEED` or the clock, printed so a failure can be repeated.
fn seed(test: &str, backend: Backend) -> u64 {
    let seed = std::env::var("MIGRATE_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!("{test} on {backend}: MIGRATE_TEST_SEED={seed}");
    seed
}

/// A row id for writer `slot` of `writers` (each writer owns the ids with
/// `(id - 1) % writers == slot`, so the last value each wrote to a row is the row's final
/// value): half the time just ahead of the migration's cursor — in the batch being read or
/// the next one — else anywhere.
fn pick_row(rng: &mut Rng, cursor: i64, batch: i64, rows: i32, slot: i32, writers: i32) -> i32 {
    let raw = if rng.one_in(2) {
        rng.range(cursor + 1, cursor + 2 * batch)
    } else {
        rng.range(1, i64::from(rows))
    };
    let raw = raw.clamp(1, i64::from(rows)) as i32;
    let id = raw - (raw - 1) % writers + slot;
    if id > rows { id - writers } else { id }
}

async fn phase_of(conn: &impl ConnectionTrait, table: &str) -> Res<Phase> {
    Ok(phases_of(conn, table, &["email"]).await?[0])
}

/// The phase of each of `columns` of `table`, in order.
async fn phases_of(conn: &impl ConnectionTrait, table: &str, columns: &[&str]) -> Res<Vec<Phase>> {
    let mut out = Vec::with_capacity(columns.len());
    for column in columns {
        let state = state::load(conn, table, column)
            .await?
            .ok_or_else(|| format!("no migration state for {table}.{column}"))?;
        out.push(state.phase);
    }
    Ok(out)
}

/// Rows of `table` where `condition` holds.
async fn count_where(
    conn: &impl ConnectionTrait,
    table: &str,
    condition: sea_orm::sea_query::SimpleExpr,
) -> Res<i64> {
    let select = Query::select()
        .expr_as(Func::count(Expr::col(a("id"))), a("n"))
        .from(a(table))
        .and_where(condition)
        .to_owned();
    Ok(conn
        .query_one(&select)
        .await?
        .ok_or("no count")?
        .try_get("", "n")?)
}

/// What an application instance that predates the migration does: it writes the plaintext
/// column of row `id` and nothing else (no envelope, no blind index), in plain SQL.
async fn old_instance_write(
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

/// Every row of `table`, by id, with the value its envelope column `enc` opens to (under
/// the keyring in force); `None` where the envelope is NULL.
async fn opened_values<C: encrypted_columns::ColumnContext>(
    conn: &impl ConnectionTrait,
    table: &str,
    enc: &str,
) -> Res<BTreeMap<i32, Option<String>>> {
    let ring = keyring::current()?;
    let select = Query::select()
        .columns([a("id"), a(enc)])
        .from(a(table))
        .to_owned();
    let mut out = BTreeMap::new();
    for row in conn.query_all(&select).await? {
        let id: i32 = row.try_get("", "id")?;
        let envelope: Option<Vec<u8>> = row.try_get("", enc)?;
        let value = envelope
            .map(|e| {
                Encrypted::<String, C>::from_envelope_with(&ring, e)
                    .map(|v| v.expose().clone())
                    .map_err(|err| format!("{table}.{enc} of row {id} does not open: {err}"))
            })
            .transpose()?;
        out.insert(id, value);
    }
    Ok(out)
}

/// The independent end-of-migration check: `table` holds exactly the rows of `expected`, and
/// each row's envelope in `enc` opens to exactly `expected[id]` (NULL for `None`). Reports the
/// ids that differ (never the values). Returns how many values were checked.
async fn check_envelopes<C: encrypted_columns::ColumnContext>(
    conn: &impl ConnectionTrait,
    table: &str,
    enc: &str,
    expected: &BTreeMap<i32, Option<String>>,
) -> Res<usize> {
    let opened = opened_values::<C>(conn, table, enc).await?;
    let lost: Vec<i32> = expected
        .iter()
        .filter(|(id, want)| opened.get(id) != Some(want))
        .map(|(id, _)| *id)
        .collect();
    let extra: Vec<i32> = opened
        .keys()
        .filter(|id| !expected.contains_key(id))
        .copied()
        .collect();
    ensure!(
        lost.is_empty() && extra.is_empty(),
        "{table}.{enc}: {} value(s) lost or wrong (ids {:?}), {} unexpected row(s) {:?}",
        lost.len(),
        &lost[..lost.len().min(20)],
        extra.len(),
        &extra[..extra.len().min(20)]
    );
    Ok(expected.values().filter(|v| v.is_some()).count())
}

/// `id → seed_email(id)` for rows `1..=rows`.
fn seeded_emails(rows: i32) -> BTreeMap<i32, Option<String>> {
    (1..=rows).map(|id| (id, seed_email(id))).collect()
}

// ---------------------------------------------------------------------------------------------
// 1. Concurrent writers.

const CONCURRENT_ROWS: i32 = 20_000;
const CONCURRENT_BATCH: u64 = 200;
const WRITERS: i32 = 4;
const WRITER_PAUSE: Duration = Duration::from_millis(2);

/// What one writer task did: how many updates it made (and how many of them while the
/// migration was still running), and the last value it wrote to each row it touched.
struct WriterLog {
    updates: u64,
    during: u64,
    last: HashMap<i32, Option<String>>,
}

backend_tests!(
    /// The backfill over 20,000 rows in batches of 200 while four tasks keep dual-writing
    /// random rows (half of them just ahead of the cursor, some to NULL): the backfill never
    /// overwrites a writer's value, verify passes, and every row's envelope and blind index
    /// match its final plaintext — the writer's last value, or the seed.
    backfill_under_concurrent_dual_writes,
    |db: &TestDb| async move {
        let conn = &db.conn;
        let seed = seed("backfill_under_concurrent_dual_writes", db.backend);
        create_table(conn, "mig_patients", true).await?;
        seed_plaintext(conn, "mig_patients", CONCURRENT_ROWS).await?;
        state::start(conn, "mig_patients", "email").await?;
        state::transition(conn, "mig_patients", "email", Phase::DualWrite, None).await?;
        let spec =
            EncryptColumn::<String, PatientEmail>::new("mig_patients", "id", "email", "email_enc")
                .with_index("email_bidx", &PATIENT_BIDX);

        let writers_db = second_pool(db, WRITERS as u32).await?;
        let running = Arc::new(AtomicBool::new(true));
        let cursor = Arc::new(AtomicI64::new(0));
        let mut tasks = Vec::new();
        for k in 0..WRITERS {
            let (conn, running, cursor) = (writers_db.clone(), running.clone(), cursor.clone());
            let mut rng = Rng(seed ^ ((k as u64 + 1) * 0x1000_0001));
            // Spawned tasks use the process-wide keyring (key 1), as the backfill does.
            tasks.push(tokio::spawn(async move {
                let mut log = WriterLog {
                    updates: 0,
                    during: 0,
                    last: HashMap::new(),
                };
                while running.load(Ordering::Acquire) {
                    let at = cursor.load(Ordering::Acquire);
                    let id = pick_row(
                        &mut rng,
                        at,
                        CONCURRENT_BATCH as i64,
                        CONCURRENT_ROWS,
                        k,
                        WRITERS,
                    );
                    let value =
                        (!rng.one_in(16)).then(|| format!("W{k}-{}@Example.org", log.updates));
                    dual_write::<PatientEmail>(
                        &conn,
                        "mig_patients",
                        &PATIENT_BIDX,
                        id,
                        value.clone(),
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                    log.updates += 1;
                    if running.load(Ordering::Acquire) {
                        log.during += 1;
                    }
                    log.last.insert(id, value);
                    // A short think time between writes, as a real application has: without
                    // it four writers starve the migration of SQLite's single write lock.
                    tokio::time::sleep(WRITER_PAUSE).await;
                }
                Ok::<_, String>(log)
            }));
        }

        let options = RunOptions {
            batch_size: CONCURRENT_BATCH,
            throttle: Some(Duration::from_millis(2)),
            ..RunOptions::default()
        };
        let outcome = migrate::backfill(conn, &spec, &options, |p| {
            cursor.store(p.cursor, Ordering::Release)
        })
        .await;
        running.store(false, Ordering::Release);
        let mut final_values: HashMap<i32, Option<String>> = HashMap::new();
        let (mut updates, mut during) = (0, 0);
        for task in tasks {
            let log = task.await??;
            updates += log.updates;
            during += log.during;
            final_values.extend(log.last);
        }
        let report = outcome?;
        ensure!(report.finished, "backfill did not finish: {report:?}");
        // Dual writers never leave a value unsealed: nothing is left for repair.
        ensure!(report.remaining == 0, "{report:?}");
        assert_eq!(report.by_column, vec![("email".to_owned(), report.sealed)]);
        assert_eq!(phase_of(conn, "mig_patients").await?, Phase::Backfilled);

        let verified = migrate::verify(conn, &spec, &RunOptions::default()).await?;
        ensure!(verified.passed(), "verify failed: {verified:?}");
        assert_eq!(verified.rows, CONCURRENT_ROWS as u64);
        assert_eq!(phase_of(conn, "mig_patients").await?, Phase::Verified);

        let rows = read_rows(conn, "mig_patients", true).await?;
        assert_eq!(rows.len(), CONCURRENT_ROWS as usize);
        let ring = keyring::current()?;
        let expected = |row: &Row| match final_values.get(&row.id) {
            Some(value) => value.clone(),
            None => seed_email(row.id),
        };
        // The plaintext column holds exactly what the writers (or the seed) put there...
        for row in &rows {
            ensure!(
                row.email == expected(row),
                "row {}: plaintext lost an update",
                row.id
            );
        }
        // ...and every envelope and index matches it.
        let values = check_rows::<PatientEmail>(&rows, &ring, &PATIENT_BIDX, expected)?;
        eprintln!(
            "{}: {} rows ({values} with a value), {} batches; backfill sealed {}, skipped {}; \
             writers: {updates} updates ({during} during the backfill) on {} distinct rows",
            db.backend,
            rows.len(),
            report.batches,
            report.sealed,
            report.skipped,
            final_values.len()
        );
        // The writers really raced the batches: at least ~2 updates per batch on average.
        ensure!(
            during >= 2 * report.batches,
            "writers made only {during} updates during {} batches",
            report.batches
        );
        // The report's count is exact enough to bound: every row no writer touched was
        // sealed by the backfill, and the backfill sealed nothing beyond those and the
        // touched rows.
        let untouched = rows
            .iter()
            .filter(|r| !final_values.contains_key(&r.id) && seed_email(r.id).is_some())
            .count() as u64;
        ensure!(
            untouched <= report.sealed && report.sealed <= untouched + final_values.len() as u64,
            "backfill reported {} sealed; {untouched} untouched rows, {} touched",
            report.sealed,
            final_values.len()
        );
        // Rows the writers reached first were not sealed again by the backfill.
        ensure!(
            report.sealed < (CONCURRENT_ROWS - CONCURRENT_ROWS / 97) as u64,
            "the backfill sealed every row: the writers never got ahead of it"
        );
        writers_db.close().await?;
        Ok(())
    }
);

backend_tests!(
    /// Key rotation over 20,000 envelopes (key 1, blind-index key 1) in batches of 200 after
    /// promoting key 2 and blind-index key 2, while four tasks keep writing through the
    /// encrypted path: at the end every row opens, with a keyring that no longer holds key 1,
    /// to its final value; no envelope or index uses key 1; the report says key 1 can retire.
    rotation_under_concurrent_writes,
    |db: &TestDb| async move {
        let conn = &db.conn;
        let seed = seed("rotation_under_concurrent_writes", db.backend);
        create_table(conn, "mig_rot", false).await?;
        let (k1, k2, b1, b2) = (
            generate_key(),
            generate_key(),
            generate_key(),
            generate_key(),
        );
        let mut old = Keyring::new(KeyId(1), *k1);
        old.add_blind_index_key(KeyId(1), *b1)?;
        let mut new = Keyring::new(KeyId(1), *k1);
        new.add_key(KeyId(2), *k2)?;
        new.promote(KeyId(2))?;
        new.add_blind_index_key(KeyId(1), *b1)?;
        new.add_blind_index_key(KeyId(2), *b2)?;
        new.promote_blind_index_key(KeyId(2))?;
        let mut retired = Keyring::new(KeyId(2), *k2);
        retired.add_blind_index_key(KeyId(2), *b2)?;
        let new = Arc::new(new);

        // Seed: every row sealed and indexed under the old keys.
        for chunk in (1..=CONCURRENT_ROWS).collect::<Vec<_>>().chunks(500) {
            let mut insert = Query::insert();
            insert
                .into_table(a("mig_rot"))
                .columns([a("id"), a("email_enc"), a("email_bidx")]);
            for &id in chunk {
                let value = seed_email(id);
                let enc = value
                    .clone()
                    .map(|v| Encrypted::<String, RotEmail>::new_with(&old, v))
                    .transpose()?
                    .map(|e| e.envelope().to_vec());
                let bidx = index_of(&ROT_BIDX, &old, &value)?;
                insert.values_panic([
                    id.into(),
                    Value::Bytes(enc).into(),
                    Value::Bytes(bidx).into(),
                ]);
            }
            conn.execute(&insert).await?;
        }
        let before = migrate::key_usage(conn, "mig_rot", "email_enc").await?;
        assert_eq!(before.keys().copied().collect::<Vec<_>>(), vec![KeyId(1)]);

        let writers_db = second_pool(db, WRITERS as u32).await?;
        let running = Arc::new(AtomicBool::new(true));
        let cursor = Arc::new(AtomicI64::new(0));
        let mut tasks = Vec::new();
        for k in 0..WRITERS {
            let (conn, running, cursor) = (writers_db.clone(), running.clone(), cursor.clone());
            let mut rng = Rng(seed ^ ((k as u64 + 1) * 0x2000_0003));
            // A spawned task does not inherit a scope: give each writer the new keyring.
            tasks.push(tokio::spawn(keyring::scope(Arc::clone(&new), async move {
                let mut log = WriterLog {
                    updates: 0,
                    during: 0,
                    last: HashMap::new(),
                };
                while running.load(Ordering::Acquire) {
                    let at = cursor.load(Ordering::Acquire);
                    let id = pick_row(
                        &mut rng,
                        at,
                        CONCURRENT_BATCH as i64,
                        CONCURRENT_ROWS,
                        k,
                        WRITERS,
                    );
                    let value =
                        (!rng.one_in(16)).then(|| format!("R{k}-{}@Example.org", log.updates));
                    // The encrypted path after cut-over: envelope and index, no plaintext.
                    let ring = keyring::current().map_err(|e| e.to_string())?;
                    let enc = value
                        .clone()
                        .map(Encrypted::<String, RotEmail>::new)
                        .transpose()
                        .map_err(|e| e.to_string())?;
                    let bidx = index_of(&ROT_BIDX, &ring, &value).map_err(|e| e.to_string())?;
                    let update = Query::update()
                        .table(a("mig_rot"))
                        .value(
                            a("email_enc"),
                            Value::Bytes(enc.map(|e| e.envelope().to_vec())),
                        )
                        .value(a("email_bidx"), Value::Bytes(bidx))
                        .and_where(Expr::col(a("id")).eq(id))
                        .to_owned();
                    conn.execute(&update).await.map_err(|e| e.to_string())?;
                    log.updates += 1;
                    if running.load(Ordering::Acquire) {
                        log.during += 1;
                    }
                    log.last.insert(id, value);
                    tokio::time::sleep(WRITER_PAUSE).await;
                }
                Ok::<_, String>(log)
            })));
        }

        let spec = RotateColumn::<String, RotEmail>::new("mig_rot", "id", "email_enc")
            .with_index("email_bidx", &ROT_BIDX);
        let options = RunOptions {
            batch_size: CONCURRENT_BATCH,
            throttle: Some(Duration::from_millis(2)),
            ..RunOptions::default()
        };
        let outcome = keyring::scope(Arc::clone(&new), async {
            migrate::rotate(conn, &spec, &options, |p| {
                cursor.store(p.cursor, Ordering::Release)
            })
            .await
        })
        .await;
        running.store(false, Ordering::Release);
        let mut final_values: HashMap<i32, Option<String>> = HashMap::new();
        let (mut updates, mut during) = (0, 0);
        for task in tasks {
            let log = task.await??;
            updates += log.updates;
            during += log.during;
            final_values.extend(log.last);
        }
        let report = outcome?;
        ensure!(report.finished, "rotation did not finish: {report:?}");
        ensure!(
            report.can_retire_key(KeyId(1)) && report.can_retire_blind_index_key(KeyId(1)),
            "the report keeps key 1: {report:?}"
        );
        ensure!(
            !migrate::key_usage(conn, "mig_rot", "email_enc")
                .await?
                .contains_key(&KeyId(1)),
            "envelopes under key 1 remain"
        );
        ensure!(
            !migrate::index_key_usage(conn, "mig_rot", "email_bidx")
                .await?
                .contains_key(&KeyId(1)),
            "index values of key 1 remain"
        );

        // Independent check with a keyring that holds only the new keys.
        let rows = read_rows(conn, "mig_rot", false).await?;
        assert_eq!(rows.len(), CONCURRENT_ROWS as usize);
        let values = check_rows::<RotEmail>(&rows, &retired, &ROT_BIDX, |row| match final_values
            .get(&row.id)
        {
            Some(value) => value.clone(),
            None => seed_email(row.id),
        })?;
        eprintln!(
            "{}: {} rows ({values} with a value), {} batches; rotation resealed {}, \
             reindexed {}; writers: {updates} updates ({during} during the rotation) on {} \
             distinct rows",
            db.backend,
            rows.len(),
            report.batches,
            report.resealed,
            report.reindexed,
            final_values.len()
        );
        ensure!(
            during >= 2 * report.batches,
            "writers made only {during} updates during {} batches",
            report.batches
        );
        // A second run finds nothing to do.
        let again = keyring::scope(Arc::clone(&new), async {
            migrate::rotate(conn, &spec, &RunOptions::default(), |_| {}).await
        })
        .await?;
        assert_eq!((again.resealed, again.reindexed), (0, 0), "{again:?}");
        writers_db.close().await?;
        Ok(())
    }
);

// ---------------------------------------------------------------------------------------------
// 2. Crash resume.

const CRASH_ROWS: i32 = 5_000;
const CRASH_TRIALS: usize = 12;

/// The keyring of the crash test, with the two `<id>:<base64>` entries that give it to the
/// child process through its environment.
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

/// `migrate_child` on this test's database, with the crash test's keys (or none).
fn child_command(db: &TestDb, keys: Option<&ChildKeys>, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_migrate_child"));
    command
        .arg("--url")
        .arg(db.url())
        .args(args)
        .env_remove(ENV_KEYS)
        .env_remove(ENV_BLIND_INDEX_KEYS)
        .env_remove(keyring::ENV_ACTIVE_KEY)
        .env_remove(keyring::ENV_ACTIVE_BLIND_INDEX_KEY)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(keys) = keys {
        command
            .env(ENV_KEYS, &keys.keys)
            .env(ENV_BLIND_INDEX_KEYS, &keys.blind_index_keys);
    }
    command
}

/// Ids of rows of `table` with plaintext and no envelope in `lo..=hi`.
async fn unsealed_between(
    conn: &impl ConnectionTrait,
    table: &str,
    lo: i64,
    hi: i64,
) -> Res<Vec<i32>> {
    let select = Query::select()
        .column(a("id"))
        .from(a(table))
        .and_where(Expr::col(a("id")).gte(lo))
        .and_where(Expr::col(a("id")).lte(hi))
        .and_where(Expr::col(a("email")).is_not_null())
        .and_where(Expr::col(a("email_enc")).is_null())
        .order_by(a("id"), Order::Asc)
        .to_owned();
    let mut ids = Vec::new();
    for row in conn.query_all(&select).await? {
        ids.push(row.try_get("", "id")?);
    }
    Ok(ids)
}

/// The shared state of `table`'s backfill job: `(pass, highest key handed out, finished)`
/// from the work table, and the key ranges of the chunks its claims record as done.
#[derive(Debug, Clone, PartialEq)]
struct JobState {
    work: Option<(i64, Option<i64>, bool)>,
    done_chunks: Vec<(i64, i64)>,
    open_claims: usize,
}

async fn job_state(conn: &impl ConnectionTrait, table: &str) -> Res<JobState> {
    let work = Query::select()
        .columns([a("pass"), a("cursor_pk"), a("finished")])
        .from(a(migrate::WORK_TABLE))
        .and_where(Expr::col(a("table_name")).eq(table))
        .and_where(Expr::col(a("job")).eq("backfill"))
        .to_owned();
    let work = match conn.query_one(&work).await? {
        Some(row) => Some((
            row.try_get::<i64>("", "pass")?,
            row.try_get::<Option<i64>>("", "cursor_pk")?,
            row.try_get::<i32>("", "finished")? != 0,
        )),
        None => None,
    };
    let claims = Query::select()
        .columns([a("lo"), a("hi"), a("done")])
        .from(a(migrate::CLAIMS_TABLE))
        .and_where(Expr::col(a("table_name")).eq(table))
        .and_where(Expr::col(a("job")).eq("backfill"))
        .order_by(a("lo"), Order::Asc)
        .to_owned();
    let (mut done_chunks, mut open_claims) = (Vec::new(), 0);
    for row in conn.query_all(&claims).await? {
        if row.try_get::<i32>("", "done")? != 0 {
            done_chunks.push((row.try_get("", "lo")?, row.try_get("", "hi")?));
        } else {
            open_claims += 1;
        }
    }
    Ok(JobState {
        work,
        done_chunks,
        open_claims,
    })
}

/// The lease of the crash test's children: a killed child's chunk goes to the next worker
/// 1.5 s after the claim (with the default 30 s the test would mostly wait).
const CRASH_LEASE_MS: &str = "1500";

backend_tests!(
    /// The backfill in a child process, SIGKILLed at a random moment, twelve times, while the
    /// parent keeps writing: dual writes (some just ahead of the chunks being handed out) and
    /// plaintext-only writes of a not-yet-upgraded writer to rows still without an envelope
    /// (some changing only letter case, which MySQL's collation would call equal). After
    /// every kill no envelope disagrees with its plaintext, and no chunk whose claim is
    /// recorded as done holds an unsealed value other than one the plaintext-only writer
    /// wrote (a done claim commits with its chunk's writes, so a lost batch would show here).
    /// The next child takes over a killed child's chunk once its lease runs out. Then the
    /// backfill runs to the end; verify reports only rows of the plaintext-only writer, repair
    /// seals them, and verify passes.
    backfill_resumes_after_sigkill,
    |db: &TestDb| async move {
        let conn = &db.conn;
        let mut rng = Rng(seed("backfill_resumes_after_sigkill", db.backend));
        let keys = child_keys()?;
        create_table(conn, "mig_crash", true).await?;
        seed_plaintext(conn, "mig_crash", CRASH_ROWS).await?;
        state::start(conn, "mig_crash", "email").await?;
        state::transition(conn, "mig_crash", "email", Phase::DualWrite, None).await?;

        let (mut mid_run, mut finished_early, mut before_first_batch) = (0, 0, 0);
        let (mut dual_writes, mut legacy_writes) = (0u64, 0u64);
        let (mut left_claims, mut checked_chunks) = (0usize, 0usize);
        let mut legacy_ids: BTreeSet<i32> = BTreeSet::new();
        for trial in 0..CRASH_TRIALS {
            let before = state::load(conn, "mig_crash", "email")
                .await?
                .ok_or("state vanished")?;
            let job_before = job_state(conn, "mig_crash").await?;
            let mut child = child_command(
                db,
                Some(&keys),
                &[
                    "--batch-size",
                    "16",
                    "--throttle-ms",
                    "15",
                    "--lease-ms",
                    CRASH_LEASE_MS,
                ],
            )
            .spawn()?;
            let deadline = Instant::now() + Duration::from_millis(rng.range(150, 600) as u64);
            // Write while the child runs, half the time just past the last chunk handed out.
            let cursor = Ord::max(job_before.work.and_then(|w| w.1).unwrap_or(0), 0);
            while Instant::now() < deadline {
                let id = if rng.one_in(2) {
                    rng.range(cursor + 1, cursor + 200)
                } else {
                    rng.range(1, i64::from(CRASH_ROWS))
                }
                .clamp(1, i64::from(CRASH_ROWS)) as i32;
                keyring::scope(Arc::clone(&keys.ring), async {
                    if rng.one_in(3) {
                        // An old writer: plaintext only, and only where nothing is sealed
                        // yet (on a sealed row it would be a writer deployed too late).
                        let value = if rng.one_in(2) {
                            seed_email(id).map(|e| e.to_uppercase())
                        } else {
                            Some(format!("legacy{trial}-{id}@example.org"))
                        };
                        let update = Query::update()
                            .table(a("mig_crash"))
                            .value(a("email"), value)
                            .and_where(Expr::col(a("id")).eq(id))
                            .and_where(Expr::col(a("email_enc")).is_null())
                            .to_owned();
                        if conn.execute(&update).await?.rows_affected() == 1 {
                            legacy_writes += 1;
                            legacy_ids.insert(id);
                        }
                    } else {
                        let value =
                            (!rng.one_in(10)).then(|| format!("dual{trial}-{id}@Example.org"));
                        dual_write::<CrashEmail>(conn, "mig_crash", &CRASH_BIDX, id, value).await?;
                        dual_writes += 1;
                    }
                    Res::Ok(())
                })
                .await?;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            // SIGKILL; an error only means the child already exited (reported below).
            let _ = child.kill();
            let out = child.wait_with_output()?;
            let status = out.status;
            if !status.success() {
                use std::os::unix::process::ExitStatusExt;
                ensure!(
                    status.signal() == Some(9),
                    "trial {trial}: the child failed ({status}): {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            let after = state::load(conn, "mig_crash", "email")
                .await?
                .ok_or("state vanished")?;
            let job_after = job_state(conn, "mig_crash").await?;
            ensure!(
                !status.success() || after.phase == Phase::Backfilled,
                "trial {trial}: the child exited 0 in phase {}",
                after.phase
            );
            // Progress is the sealed-value count of the state row, or a chunk handed out or
            // completed in the job (the state row's cursor is not the backfill's any more).
            let progressed = after.rows_done != before.rows_done || job_after != job_before;
            if after.phase == Phase::Backfilled {
                finished_early += 1;
            } else if progressed {
                mid_run += 1;
            } else {
                before_first_batch += 1;
            }
            left_claims += job_after.open_claims;

            // Nothing was sealed from stale data, whatever the kill interrupted...
            let rows = read_rows(conn, "mig_crash", true).await?;
            let sealed: Vec<Row> = rows.into_iter().filter(|r| r.enc.is_some()).collect();
            check_rows::<CrashEmail>(&sealed, &keys.ring, &CRASH_BIDX, |r| r.email.clone())
                .map_err(|e| format!("trial {trial}: {e}"))?;
            // ...and no committed chunk was lost: a claim is marked done in the transaction
            // that writes its chunk, so every done chunk's values are sealed, except where the
            // plaintext-only writer changed them under the backfill (the write guard then
            // leaves them) or wrote them afterwards (it writes only unsealed rows).
            checked_chunks += job_after.done_chunks.len();
            for (lo, hi) in &job_after.done_chunks {
                let unexplained: Vec<i32> = unsealed_between(conn, "mig_crash", *lo, *hi)
                    .await?
                    .into_iter()
                    .filter(|id| !legacy_ids.contains(id))
                    .collect();
                ensure!(
                    unexplained.is_empty(),
                    "trial {trial}: chunk {lo}..={hi} is done but rows {:?} have no envelope",
                    &unexplained[..unexplained.len().min(10)]
                );
            }
        }

        // Finish the job in-process (taking over what the last child held once its lease
        // runs out), then repair what the plaintext-only writer left, then check everything.
        let spec =
            EncryptColumn::<String, CrashEmail>::new("mig_crash", "id", "email", "email_enc")
                .with_index("email_bidx", &CRASH_BIDX);
        let (last, first_verify, repaired, verified) =
            keyring::scope(Arc::clone(&keys.ring), async {
                let last = migrate::backfill(conn, &spec, &RunOptions::default(), |_| {}).await?;
                let first_verify = migrate::verify(conn, &spec, &RunOptions::default()).await?;
                let repaired = migrate::repair(conn, &spec, &RunOptions::default(), |_| {}).await?;
                let verified = migrate::verify(conn, &spec, &RunOptions::default()).await?;
                Res::Ok((last, first_verify, repaired, verified))
            })
            .await?;
        ensure!(last.finished, "{last:?}");
        // What the first verify reports is only what the old writer wrote without envelope.
        let unexplained: Vec<&i64> = first_verify
            .problem_ids
            .iter()
            .filter(|id| !legacy_ids.contains(&(**id as i32)))
            .collect();
        ensure!(
            unexplained.is_empty() && first_verify.mismatched == 0,
            "verify after the kills reports rows no plaintext-only write explains: {:?} \
             ({first_verify:?})",
            &unexplained[..unexplained.len().min(10)]
        );
        assert_eq!(repaired.repaired, first_verify.missing, "{repaired:?}");
        ensure!(
            verified.passed(),
            "verify failed after the kills and a repair: {verified:?}"
        );
        assert_eq!(phase_of(conn, "mig_crash").await?, Phase::Verified);
        let rows = read_rows(conn, "mig_crash", true).await?;
        assert_eq!(rows.len(), CRASH_ROWS as usize);
        let values = check_rows::<CrashEmail>(&rows, &keys.ring, &CRASH_BIDX, |r| r.email.clone())?;
        let state = state::load(conn, "mig_crash", "email")
            .await?
            .ok_or("state vanished")?;
        eprintln!(
            "{}: {CRASH_TRIALS} kills: {mid_run} mid-run, {before_first_batch} before the first \
             batch, {finished_early} after the child finished, {left_claims} claim(s) left \
             open, {checked_chunks} done chunk(s) checked; parent wrote {dual_writes} dual, \
             {legacy_writes} plaintext-only; final run sealed {} (skipped {}, took over {}); \
             repair sealed {}; {} rows, {values} sealed; backfill sealed {} in all",
            db.backend,
            last.sealed,
            last.skipped,
            last.taken_over,
            repaired.repaired,
            rows.len(),
            state.rows_done
        );
        ensure!(
            mid_run * 3 >= CRASH_TRIALS * 2,
            "only {mid_run} of {CRASH_TRIALS} kills landed mid-run"
        );
        // The invariant above was checked against real done chunks.
        ensure!(checked_chunks > 0, "no done chunk was ever checked");
        Ok(())
    }
);

// ---------------------------------------------------------------------------------------------
// 3. Refused input.

/// Everything a refused step must leave alone: the state row, the log, every data row
/// (`email` included while the table has it).
#[derive(Debug, PartialEq)]
struct Snapshot {
    state: Option<MigrationState>,
    log_rows: i64,
    rows: Vec<Row>,
}

async fn snapshot(conn: &impl ConnectionTrait, table: &str, plaintext: bool) -> Res<Snapshot> {
    let count = Query::select()
        .expr_as(Func::count(Expr::col(a("id"))), a("n"))
        .from(a(state::LOG_TABLE))
        .to_owned();
    let log_rows = conn
        .query_one(&count)
        .await?
        .ok_or("no count")?
        .try_get("", "n")?;
    Ok(Snapshot {
        state: state::load(conn, table, "email").await?,
        log_rows,
        rows: read_rows(conn, table, plaintext).await?,
    })
}

/// The crate error inside `err`, and its message.
fn crate_error(err: &DbErr) -> Res<(Error, String)> {
    let inner = Error::from_db_err(err).ok_or_else(|| format!("not a crate error: {err}"))?;
    Ok((inner.clone(), inner.to_string()))
}

/// Checks that `err` is the phase error of `table.column` for `from → to`, naming the column
/// and containing each of `words`.
fn expect_phase_error_of(
    err: &DbErr,
    (table, column): (&str, &str),
    from: &str,
    to: &str,
    words: &[&str],
) -> Res<String> {
    let (inner, message) = crate_error(err)?;
    match inner {
        Error::Phase {
            table: tb,
            column: c,
            from: f,
            to: t,
            ..
        } => {
            ensure!(
                (tb.as_str(), c.as_str(), f, t) == (table, column, from, to),
                "wrong phase error: {message}"
            );
        }
        other => return Err(format!("expected a phase error, got {other:?}").into()),
    }
    ensure!(
        message.contains(&format!("{table}.{column}")),
        "message does not name the column: {message}"
    );
    for word in words {
        ensure!(message.contains(word), "message lacks {word:?}: {message}");
    }
    Ok(message)
}

fn expect_phase_error(err: DbErr, from: &str, to: &str, words: &[&str]) -> Res<String> {
    expect_phase_error_of(&err, ("mig_bad", "email"), from, to, words)
}

/// Checks that `err` is `Error::Refused` of `table`'s step `step`, counting and listing
/// exactly `ids`, and that its message names them. Returns the message.
fn expect_refused(err: &DbErr, table: &str, step: &str, ids: &[i64]) -> Res<String> {
    let (inner, message) = crate_error(err)?;
    match inner {
        Error::Refused {
            table: t,
            step: s,
            count,
            ids: listed,
            ..
        } => ensure!(
            t == table && s == step && count == ids.len() as u64 && listed == ids,
            "expected {step} of {table} refused for ids {ids:?}, got {message}"
        ),
        other => return Err(format!("expected Error::Refused, got {other:?}").into()),
    }
    for id in ids {
        ensure!(
            message.contains(&id.to_string()),
            "message does not name id {id}: {message}"
        );
    }
    Ok(message)
}

backend_tests!(
    /// Steps out of order, a missing keyring or blind-index key, unknown tables and columns:
    /// each is refused with a message naming the column, the phase or the missing piece, and
    /// leaves the state row, the transition log and the data exactly as they were.
    refused_steps_change_nothing,
    |db: &TestDb| async move {
        let conn = &db.conn;
        create_table(conn, "mig_bad", true).await?;
        seed_plaintext(conn, "mig_bad", 300).await?;
        state::ensure_tables(conn).await?;
        let spec = EncryptColumn::<String, BadEmail>::new("mig_bad", "id", "email", "email_enc")
            .with_index("email_bidx", &BAD_BIDX);
        let opts = RunOptions {
            batch_size: 50,
            ..Default::default()
        };

        // Nothing started: every step and every transition is refused.
        let snap = snapshot(conn, "mig_bad", true).await?;
        assert_eq!(snap.state, None);
        let err = migrate::backfill(conn, &spec, &opts, |_| {})
            .await
            .unwrap_err();
        expect_phase_error(err, "none", "-", &["migrate::start"])?;
        let err = migrate::verify(conn, &spec, &opts).await.unwrap_err();
        expect_phase_error(err, "none", "-", &["migrate::start"])?;
        let err = migrate::dual_write(conn, &spec).await.unwrap_err();
        expect_phase_error(err, "none", "-", &["migrate::start"])?;
        let err = migrate::cut_over(conn, &spec, &opts).await.unwrap_err();
        expect_phase_error(err, "none", "-", &["migrate::start"])?;
        let err = state::transition(conn, "mig_bad", "email", Phase::DualWrite, None)
            .await
            .unwrap_err();
        expect_phase_error(err, "none", "-", &["migrate::start"])?;
        assert_eq!(snapshot(conn, "mig_bad", true).await?, snap);

        // `added`: writers are not dual-writing yet.
        state::start(conn, "mig_bad", "email").await?;
        let snap = snapshot(conn, "mig_bad", true).await?;
        assert_eq!(snap.state.as_ref().map(|s| s.phase), Some(Phase::Added));
        let err = migrate::backfill(conn, &spec, &opts, |_| {})
            .await
            .unwrap_err();
        expect_phase_error(err, "added", "backfilling", &["dual_write"])?;
        for to in [
            Phase::CutOver,
            Phase::Verified,
            Phase::Dropped,
            Phase::Backfilled,
        ] {
            let err = state::transition(conn, "mig_bad", "email", to, None)
                .await
                .unwrap_err();
            expect_phase_error(err, "added", to.as_str(), &["dual-write first"])?;
        }
        assert_eq!(snapshot(conn, "mig_bad", true).await?, snap);

        // `dual_write`: verify, repair, cut-over, drop and purge need a finished backfill.
        state::transition(conn, "mig_bad", "email", Phase::DualWrite, None).await?;
        let snap = snapshot(conn, "mig_bad", true).await?;
        let err = migrate::verify(conn, &spec, &opts).await.unwrap_err();
        expect_phase_error(err, "dual_write", "verified", &["backfill has not run"])?;
        let err = migrate::repair(conn, &spec, &opts, |_| {})
            .await
            .unwrap_err();
        expect_phase_error(err, "dual_write", "repaired", &["finished backfills"])?;
        let err = migrate::cut_over(conn, &spec, &opts).await.unwrap_err();
        expect_phase_error(err, "dual_write", "cut_over", &["backfill has not run"])?;
        let err = migrate::drop_plaintext(conn, &spec, &[], &opts)
            .await
            .unwrap_err();
        expect_phase_error(err, "dual_write", "dropped", &["backfill has not run"])?;
        let err = migrate::purge(conn, &spec).await.unwrap_err();
        expect_phase_error(err, "dual_write", "purged", &["backfill has not run"])?;
        let err = state::transition(conn, "mig_bad", "email", Phase::CutOver, None)
            .await
            .unwrap_err();
        expect_phase_error(err, "dual_write", "cut_over", &["backfill has not run"])?;
        let err = state::transition(conn, "mig_bad", "email", Phase::Added, None)
            .await
            .unwrap_err();
        expect_phase_error(err, "dual_write", "added", &["cannot go back"])?;
        // `dual_write` again is refused by `transition` (no move to itself) and a no-op for
        // the table step.
        let err = state::transition(conn, "mig_bad", "email", Phase::DualWrite, None)
            .await
            .unwrap_err();
        expect_phase_error(err, "dual_write", "dual_write", &["already"])?;
        assert_eq!(
            migrate::dual_write(conn, &spec).await?,
            Vec::<String>::new()
        );
        assert_eq!(snapshot(conn, "mig_bad", true).await?, snap);

        // Unknown table, unknown columns: the backfill names them, touches nothing, and
        // creates no state row for the misspelt names. A misspelt table or plaintext column
        // has no migration state (so it is refused as not started, or as unreadable, naming
        // it); a misspelt envelope or index column of a started column cannot be read.
        let misspelt = [
            ("mig_nope", "email", "email_enc", "email_bidx", "mig_nope.email"),
            ("mig_bad", "emial", "email_enc", "email_bidx", "mig_bad.emial"),
            ("mig_bad", "email", "email_encc", "email_bidx", "email_encc"),
            (
                "mig_bad",
                "email",
                "email_enc",
                "email_bidxx",
                "email_bidxx",
            ),
        ];
        for (table, plain, enc, bidx, named) in misspelt {
            let wrong = EncryptColumn::<String, BadEmail>::new(table, "id", plain, enc)
                .with_index(bidx, &BAD_BIDX);
            let mut errors = vec![
                migrate::backfill(conn, &wrong, &opts, |_| {})
                    .await
                    .unwrap_err(),
            ];
            if (table, plain) != ("mig_bad", "email") {
                errors.push(migrate::verify(conn, &wrong, &opts).await.unwrap_err());
                errors.push(migrate::dual_write(conn, &wrong).await.unwrap_err());
            }
            for err in errors {
                let (inner, message) = crate_error(&err)?;
                let explained = match inner {
                    Error::Migration { .. } => message.contains("check the table and column names"),
                    Error::Phase { from: "none", .. } => {
                        message.contains("no migration was started")
                    }
                    _ => false,
                };
                ensure!(
                    explained && message.contains(named),
                    "expected an error naming {named:?} as unknown, got {message}"
                );
            }
            if (table, plain) != ("mig_bad", "email") {
                ensure!(
                    state::load(conn, table, plain).await?.is_none(),
                    "a state row was created for {table}.{plain}"
                );
            }
        }
        let rot = RotateColumn::<String, BadEmail>::new("mig_bad", "id", "email_nope");
        let err = migrate::rotate(conn, &rot, &opts, |_| {})
            .await
            .unwrap_err();
        let (_, message) = crate_error(&err)?;
        ensure!(message.contains("email_nope"), "{message}");
        assert_eq!(snapshot(conn, "mig_bad", true).await?, snap);

        // A keyring without a blind-index key cannot fill the index.
        let no_index_key = Arc::new(Keyring::new(KeyId(1), *generate_key()));
        let err = keyring::scope(no_index_key, migrate::backfill(conn, &spec, &opts, |_| {}))
            .await
            .unwrap_err();
        let (inner, message) = crate_error(&err)?;
        ensure!(inner == Error::NoBlindIndexKey, "{inner:?}");
        ensure!(message.contains(ENV_BLIND_INDEX_KEYS), "{message}");
        assert_eq!(snapshot(conn, "mig_bad", true).await?, snap);

        // No keyring at all (a process that never installed one): the child reports the
        // library's `NoKeyring` and changes nothing.
        let out = child_command(db, None, &["--no-keyring"]).output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.code() == Some(2) && stderr.contains("no keyring is installed"),
            "child without keyring: {} {stderr}",
            out.status
        );
        // Keys given but malformed: refused at start-up, naming the variable.
        let bad_keys = ChildKeys {
            ring: Arc::new(Keyring::generate()),
            keys: "1:c2hvcnQ=".into(),
            blind_index_keys: generate_key_entry(KeyId(1)).to_string(),
        };
        let out = child_command(db, Some(&bad_keys), &[]).output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.code() == Some(2)
                && stderr.contains(ENV_KEYS)
                && !stderr.contains("c2hvcnQ"),
            "child with a short key: {} {stderr}",
            out.status
        );
        assert_eq!(snapshot(conn, "mig_bad", true).await?, snap);

        // The real thing still works afterwards, and steps after it are checked too.
        let report = migrate::backfill(conn, &spec, &opts, |_| {}).await?;
        ensure!(
            report.finished && report.sealed == 297 && report.rows == 297,
            "{report:?}"
        );
        assert_eq!(phase_of(conn, "mig_bad").await?, Phase::Backfilled);
        let snap = snapshot(conn, "mig_bad", true).await?;
        let err = state::transition(conn, "mig_bad", "email", Phase::CutOver, None)
            .await
            .unwrap_err();
        expect_phase_error(err, "backfilled", "cut_over", &["passing verify"])?;
        let err = migrate::cut_over(conn, &spec, &opts).await.unwrap_err();
        expect_phase_error(err, "backfilled", "cut_over", &["passing verify"])?;
        let err = migrate::drop_plaintext(conn, &spec, &[], &opts)
            .await
            .unwrap_err();
        expect_phase_error(err, "backfilled", "dropped", &["after cut-over"])?;
        // Verify and repair with a misspelt envelope or index column: named, nothing changed.
        for (enc, bidx, named) in [
            ("email_encc", "email_bidx", "email_encc"),
            ("email_enc", "email_bidxx", "email_bidxx"),
        ] {
            let wrong = EncryptColumn::<String, BadEmail>::new("mig_bad", "id", "email", enc)
                .with_index(bidx, &BAD_BIDX);
            for err in [
                migrate::verify(conn, &wrong, &opts).await.unwrap_err(),
                migrate::repair(conn, &wrong, &opts, |_| {})
                    .await
                    .unwrap_err(),
            ] {
                let (inner, message) = crate_error(&err)?;
                ensure!(
                    matches!(inner, Error::Migration { .. })
                        && message.contains(named)
                        && message.contains("check the table and column names"),
                    "expected a migration error naming {named:?}: {message}"
                );
            }
        }
        assert_eq!(snapshot(conn, "mig_bad", true).await?, snap);

        // A failing verify stays in `backfilled`, so cut-over is still refused.
        conn.execute_unprepared("UPDATE mig_bad SET email = 'changed@example.org' WHERE id = 5")
            .await?;
        let failed = migrate::verify(conn, &spec, &opts).await?;
        ensure!(
            !failed.passed() && failed.problem_ids == vec![5],
            "{failed:?}"
        );
        assert_eq!(phase_of(conn, "mig_bad").await?, Phase::Backfilled);
        let err = migrate::cut_over(conn, &spec, &opts).await.unwrap_err();
        expect_phase_error(err, "backfilled", "cut_over", &["passing verify"])?;
        assert_eq!(phase_of(conn, "mig_bad").await?, Phase::Backfilled);
        Ok(())
    }
);

backend_tests!(
    /// `state::transition` makes only the move that checks nothing (`added → dual_write`):
    /// every later move, even where it would be legal from the column's phase, is refused
    /// with the name of the step that checks the rows (`migrate::backfill`, `migrate::verify`,
    /// `migrate::cut_over`, `migrate::drop_plaintext`, `migrate::purge`), and changes neither
    /// the state row, the transition log nor the data. The steps themselves then make them.
    transition_refuses_moves_a_step_must_check,
    |db: &TestDb| async move {
        let conn = &db.conn;
        create_table(conn, "mig_trans", true).await?;
        seed_plaintext(conn, "mig_trans", 120).await?;
        let spec =
            EncryptColumn::<String, TransEmail>::new("mig_trans", "id", "email", "email_enc")
                .with_index("email_bidx", &TRANS_BIDX);
        let opts = RunOptions {
            batch_size: 40,
            ..Default::default()
        };
        state::start(conn, "mig_trans", "email").await?;
        let moved = state::transition(conn, "mig_trans", "email", Phase::DualWrite, None).await?;
        assert_eq!(moved.phase, Phase::DualWrite);

        // (phase the column is in, move asked for, the step the refusal must name, and how
        // to get the column to the next phase for the next round)
        let refuse = async |from: Phase, to: Phase, step: &str, plaintext: bool| -> Res<()> {
            assert_eq!(phase_of(conn, "mig_trans").await?, from);
            let snap = snapshot(conn, "mig_trans", plaintext).await?;
            let err = state::transition(conn, "mig_trans", "email", to, None)
                .await
                .unwrap_err();
            let message = expect_phase_error_of(
                &err,
                ("mig_trans", "email"),
                from.as_str(),
                to.as_str(),
                &[step],
            )?;
            ensure!(
                message.contains("moved only by"),
                "{from} → {to}: {message}"
            );
            assert_eq!(snapshot(conn, "mig_trans", plaintext).await?, snap);
            Ok(())
        };
        refuse(Phase::DualWrite, Phase::Backfilling, "migrate::backfill", true).await?;
        ensure!(
            migrate::backfill(conn, &spec, &opts, |_| {})
                .await?
                .finished,
            "backfill"
        );
        refuse(Phase::Backfilled, Phase::Verified, "migrate::verify", true).await?;
        ensure!(migrate::verify(conn, &spec, &opts).await?.passed(), "verify");
        refuse(Phase::Verified, Phase::CutOver, "migrate::cut_over", true).await?;
        assert_eq!(migrate::cut_over(conn, &spec, &opts).await?.moved, ["email"]);
        refuse(Phase::CutOver, Phase::Dropped, "migrate::drop_plaintext", true).await?;
        assert_eq!(
            migrate::drop_plaintext(conn, &spec, &[], &opts)
                .await?
                .dropped,
            ["email"]
        );
        refuse(Phase::Dropped, Phase::Purged, "migrate::purge", false).await?;
        assert_eq!(migrate::purge(conn, &spec).await?, ["email"]);
        assert_eq!(phase_of(conn, "mig_trans").await?, Phase::Purged);
        // The envelopes carry every value through.
        check_envelopes::<TransEmail>(conn, "mig_trans", "email_enc", &seeded_emails(120))
            .await?;
        Ok(())
    }
);

// ---------------------------------------------------------------------------------------------
// 4. Fail closed after cut-over.

/// Reads row `id` of `mig_cut` under `policy`.
async fn read_cut(
    conn: &impl ConnectionTrait,
    policy: ReadPolicy,
    id: i32,
) -> Res<Result<Option<String>, Error>> {
    let rows = read_rows(conn, "mig_cut", true).await?;
    let row = rows.into_iter().find(|r| r.id == id).ok_or("no such row")?;
    let enc = row
        .enc
        .map(Encrypted::<String, CutEmail>::from_envelope)
        .transpose()?;
    Ok(policy.read("mig_cut", "email", row.email, enc.as_ref()))
}

backend_tests!(
    /// After cut-over the policy loaded from the state table is encrypted-only: a row that
    /// has plaintext but no envelope (written by a stale writer, or missed) is an
    /// `Error::FallbackRefused`, never its plaintext; before cut-over the same row falls back.
    /// Writes after cut-over put NULL in the plaintext column. A backfill after cut-over
    /// leaves the column alone; repair seals such a row.
    fallback_refused_after_cut_over,
    |db: &TestDb| async move {
        let conn = &db.conn;
        create_table(conn, "mig_cut", true).await?;
        seed_plaintext(conn, "mig_cut", 100).await?;
        let spec = EncryptColumn::<String, CutEmail>::new("mig_cut", "id", "email", "email_enc");
        assert_eq!(
            ReadPolicy::load(conn, "mig_cut", "email").await?,
            ReadPolicy::PlaintextOnly
        );
        state::start(conn, "mig_cut", "email").await?;
        assert_eq!(
            ReadPolicy::load(conn, "mig_cut", "email").await?,
            ReadPolicy::PlaintextOnly
        );
        state::transition(conn, "mig_cut", "email", Phase::DualWrite, None).await?;
        migrate::backfill(conn, &spec, &RunOptions::default(), |_| {}).await?;
        ensure!(
            migrate::verify(conn, &spec, &RunOptions::default())
                .await?
                .passed(),
            "verify"
        );
        let cut = migrate::cut_over(conn, &spec, &RunOptions::default()).await?;
        assert_eq!(cut.moved, ["email"]);
        let policy = ReadPolicy::load(conn, "mig_cut", "email").await?;
        assert_eq!(policy, ReadPolicy::EncryptedOnly);

        // A sealed row reads; a NULL row reads as NULL.
        assert_eq!(read_cut(conn, policy, 1).await??, seed_email(1));
        assert_eq!(read_cut(conn, policy, 97).await??, None);
        // A row that lost its envelope: refused, naming the column; plaintext not returned.
        conn.execute_unprepared("UPDATE mig_cut SET email_enc = NULL WHERE id = 7")
            .await?;
        match read_cut(conn, policy, 7).await? {
            Err(err @ Error::FallbackRefused { .. }) => {
                assert_eq!(
                    err,
                    Error::FallbackRefused {
                        table: "mig_cut".into(),
                        column: "email".into()
                    }
                );
                let message = err.to_string();
                ensure!(
                    message.contains("mig_cut.email") && message.contains("refusing to fall back"),
                    "{message}"
                );
                // The advice must be the step that seals such a row after cut-over: the
                // backfill leaves cut-over columns alone, verify seals nothing.
                ensure!(message.contains("repair"), "the advice does not name repair: {message}");
                ensure!(
                    !message.contains("p000007"),
                    "the message carries plaintext"
                );
            }
            other => return Err(format!("expected FallbackRefused, got {other:?}").into()),
        }
        // The same row under the dual-write policy falls back to the plaintext.
        assert_eq!(
            read_cut(conn, ReadPolicy::EncryptedFirst, 7).await??,
            seed_email(7)
        );
        // Writes after cut-over: envelope only, NULL plaintext.
        let write = policy.write::<String, CutEmail>(Some("new@example.org".into()))?;
        ensure!(
            write.plaintext.is_none(),
            "plaintext written after cut-over"
        );
        let update = Query::update()
            .table(a("mig_cut"))
            .value(a("email"), write.plaintext)
            .value(
                a("email_enc"),
                Value::Bytes(write.encrypted.map(|e| e.envelope().to_vec())),
            )
            .and_where(Expr::col(a("id")).eq(7))
            .to_owned();
        conn.execute(&update).await?;
        assert_eq!(
            read_cut(conn, policy, 7).await??,
            Some("new@example.org".into())
        );
        // Row 8 loses its envelope too. A backfill after cut-over leaves the column alone
        // (it reports it as already done and seals nothing): the read still fails closed.
        conn.execute_unprepared("UPDATE mig_cut SET email_enc = NULL WHERE id = 8")
            .await?;
        let again = migrate::backfill(conn, &spec, &RunOptions::default(), |_| {}).await?;
        ensure!(
            again.finished && again.sealed == 0 && again.already_done == ["email"],
            "{again:?}"
        );
        assert_eq!(phase_of(conn, "mig_cut").await?, Phase::CutOver);
        ensure!(
            matches!(
                read_cut(conn, policy, 8).await?,
                Err(Error::FallbackRefused { .. })
            ),
            "row 8 read after a backfill that should have left it alone"
        );
        // Repair is the step that seals it from the plaintext; then it reads again.
        let repaired = migrate::repair(conn, &spec, &RunOptions::default(), |_| {}).await?;
        ensure!(repaired.repaired == 1 && repaired.rows == 1, "{repaired:?}");
        assert_eq!(read_cut(conn, policy, 8).await??, seed_email(8));
        assert_eq!(phase_of(conn, "mig_cut").await?, Phase::CutOver);
        Ok(())
    }
);

// ---------------------------------------------------------------------------------------------
// 5. Schema helpers.

backend_tests!(
    /// `migrate::schema` through a SchemaManager: add the envelope columns (a `mediumblob`
    /// on MySQL for a 100 kB plaintext) and a UNIQUE blind-index column, walk the phases
    /// (two one-column plans on one table), refuse dropping the plaintext before cut-over,
    /// drop it after (with the index on it: on SQLite found without being named), leave the
    /// other column alone, treat a second drop as done, purge (the raw rewrite, then
    /// `migrate::purge`, which records it), and rename the envelope column onto the
    /// plaintext's name — its envelopes still open.
    schema_helpers_walk_every_phase,
    |db: &TestDb| async move {
        let conn = &db.conn;
        let manager = SchemaManager::new(conn);
        manager
            .create_table(
                Table::create()
                    .table(a("mig_legacy"))
                    .col(ColumnDef::new(a("id")).integer().not_null().primary_key())
                    .col(ColumnDef::new(a("email")).string_len(320).null())
                    // Room for the 80 kB note on MySQL, whose `text` holds 64 KiB.
                    .col(
                        ColumnDef::new_with_type(
                            a("notes"),
                            if db.backend == Backend::MySql {
                                ColumnType::custom(a("mediumtext"))
                            } else {
                                ColumnType::Text
                            },
                        )
                        .null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("mig_legacy_email_idx")
                    .table(a("mig_legacy"))
                    .col(a("email"))
                    .to_owned(),
            )
            .await?;
        let big_note = "n".repeat(80_000);
        for id in 1..=40 {
            let note = if id == 3 {
                Some(big_note.clone())
            } else {
                Some(format!("note {id}"))
            };
            let insert = Query::insert()
                .into_table(a("mig_legacy"))
                .columns([a("id"), a("email"), a("notes")])
                .values_panic([id.into(), seed_email(id).into(), note.into()])
                .to_owned();
            conn.execute(&insert).await?;
        }

        schema::add_encrypted_column(&manager, "mig_legacy", "email", "email_enc", 320).await?;
        schema::add_blind_index_column(&manager, "mig_legacy", "email_bidx", &LEGACY_BIDX).await?;
        schema::add_encrypted_column(&manager, "mig_legacy", "notes", "notes_enc", 100_000).await?;
        for column in ["email_enc", "email_bidx", "notes_enc"] {
            ensure!(
                manager.has_column("mig_legacy", column).await?,
                "{column} missing"
            );
        }
        let index = schema::index_name("mig_legacy", "email_bidx");
        ensure!(
            manager.has_index("mig_legacy", &index).await?,
            "{index} missing"
        );
        assert_eq!(phase_of(conn, "mig_legacy").await?, Phase::Added);
        // Idempotent start: adding the blind index did not move the phase.
        schema::add_blind_index_column(&manager, "mig_legacy", "email_bidx2", &LEGACY_BIDX).await?;
        assert_eq!(phase_of(conn, "mig_legacy").await?, Phase::Added);

        let email =
            EncryptColumn::<String, LegacyEmail>::new("mig_legacy", "id", "email", "email_enc")
                .with_index("email_bidx", &LEGACY_BIDX);
        let notes =
            EncryptColumn::<String, LegacyNotes>::new("mig_legacy", "id", "notes", "notes_enc");

        // Dropping before cut-over is refused and drops nothing.
        let err = schema::drop_plaintext_column(&manager, &email, &["mig_legacy_email_idx"])
            .await
            .unwrap_err();
        let (inner, message) = crate_error(&err)?;
        ensure!(
            matches!(
                inner,
                Error::Phase {
                    from: "added",
                    to: "dropped",
                    ..
                }
            ),
            "{message}"
        );
        ensure!(
            manager.has_column("mig_legacy", "email").await?,
            "email dropped"
        );
        ensure!(
            manager
                .has_index("mig_legacy", "mig_legacy_email_idx")
                .await?,
            "index dropped"
        );

        // Walk the phases for both columns, each as a plan of its own.
        state::transition(conn, "mig_legacy", "email", Phase::DualWrite, None).await?;
        state::transition(conn, "mig_legacy", "notes", Phase::DualWrite, None).await?;
        let opts = RunOptions {
            batch_size: 7,
            ..Default::default()
        };
        ensure!(
            migrate::backfill(conn, &email, &opts, |_| {})
                .await?
                .finished,
            "email backfill"
        );
        ensure!(
            migrate::backfill(conn, &notes, &opts, |_| {})
                .await?
                .finished,
            "notes backfill"
        );
        ensure!(
            migrate::verify(conn, &email, &opts).await?.passed(),
            "email verify"
        );
        ensure!(
            migrate::verify(conn, &notes, &opts).await?.passed(),
            "notes verify"
        );
        // The 80 kB note round-trips (a MySQL `blob` would have refused its envelope).
        let row = conn
            .query_one(
                &Query::select()
                    .column(a("notes_enc"))
                    .from(a("mig_legacy"))
                    .and_where(Expr::col(a("id")).eq(3))
                    .to_owned(),
            )
            .await?
            .ok_or("row 3")?;
        let enc: Vec<u8> = row.try_get("", "notes_enc")?;
        ensure!(
            Encrypted::<String, LegacyNotes>::from_envelope(enc)?.expose() == &big_note,
            "the long note did not round-trip"
        );
        // The index is UNIQUE and named so that a duplicate is reported as this column's.
        let first = raw::get_envelope(conn, "mig_legacy", "email_bidx", 1).await?;
        let err = raw::set_bytes(conn, "mig_legacy", "email_bidx", 2, Some(first))
            .await
            .err()
            .ok_or("a duplicate blind-index value was accepted")?;
        assert_eq!(
            unique_violation(&err, "mig_legacy", &["email_bidx", "email_bidx2"]),
            Some(Error::Duplicate {
                table: "mig_legacy",
                index: "email_bidx"
            }),
            "{err}"
        );
        assert_eq!(migrate::cut_over(conn, &email, &opts).await?.moved, ["email"]);
        assert_eq!(
            phases_of(conn, "mig_legacy", &["email", "notes"]).await?,
            [Phase::CutOver, Phase::Verified]
        );

        // On SQLite, which cannot drop an indexed column, the index on the plaintext is found
        // and dropped without being named; elsewhere it is named.
        let indexes: &[&str] = if db.backend == Backend::Sqlite {
            &[]
        } else {
            &["mig_legacy_email_idx"]
        };
        let dropped = schema::drop_plaintext_column(&manager, &email, indexes).await?;
        ensure!(
            dropped.dropped == ["email"] && dropped.rows_checked == 40,
            "{dropped:?}"
        );
        ensure!(
            !manager.has_column("mig_legacy", "email").await?,
            "email still there"
        );
        ensure!(
            !manager
                .has_index("mig_legacy", "mig_legacy_email_idx")
                .await?,
            "index still there"
        );
        ensure!(
            manager.has_column("mig_legacy", "notes").await?,
            "notes dropped with email"
        );
        assert_eq!(phase_of(conn, "mig_legacy").await?, Phase::Dropped);
        // A second drop is a no-op that reports the column as already dropped.
        let again = schema::drop_plaintext_column(&manager, &email, &[]).await?;
        ensure!(
            again.already == ["email"] && again.dropped.is_empty() && again.recorded.is_empty(),
            "{again:?}"
        );

        // The raw rewrite records nothing; `migrate::purge` rewrites and records `purged`.
        schema::purge_dropped_data(&manager, "mig_legacy").await?;
        assert_eq!(phase_of(conn, "mig_legacy").await?, Phase::Dropped);
        if db.backend == Backend::Sqlite {
            // VACUUM rewrote the file: the dropped plaintext is gone from it.
            let path = db.url();
            let path = path
                .strip_prefix("sqlite://")
                .and_then(|p| p.split('?').next())
                .ok_or("sqlite path")?;
            let bytes = std::fs::read(path)?;
            ensure!(
                !raw::contains(&bytes, b"p000001@example.org"),
                "dropped plaintext still in the SQLite file"
            );
        }
        assert_eq!(migrate::purge(conn, &email).await?, ["email"]);
        assert_eq!(phase_of(conn, "mig_legacy").await?, Phase::Purged);
        schema::rename_column(&manager, "mig_legacy", "email_enc", "email").await?;
        ensure!(
            manager.has_column("mig_legacy", "email").await?,
            "renamed column missing"
        );
        // Read through a new connection, as the application does after a migration: on
        // SQLite, a pooled connection that lived through the DROP and RENAME was seen to
        // return NULL for the renamed column on its first query (sqlx 0.9, SQLite 3.51).
        let fresh = second_pool(db, 1).await?;
        let mut opened = BTreeMap::new();
        for row in fresh
            .query_all(
                &Query::select()
                    .columns([a("id"), a("email")])
                    .from(a("mig_legacy"))
                    .to_owned(),
            )
            .await?
        {
            let id: i32 = row.try_get("", "id")?;
            let enc: Option<Vec<u8>> = row.try_get("", "email")?;
            let value = enc
                .map(|e| {
                    Encrypted::<String, LegacyEmail>::from_envelope(e).map(|v| v.expose().clone())
                })
                .transpose()?;
            opened.insert(id, value);
        }
        let expected: BTreeMap<i32, Option<String>> =
            (1..=40).map(|id| (id, seed_email(id))).collect();
        let differing: Vec<(i32, bool, bool)> = expected
            .iter()
            .filter(|(id, v)| opened.get(id) != Some(v))
            .map(|(id, v)| {
                (
                    *id,
                    v.is_some(),
                    opened.get(id).is_some_and(|o| o.is_some()),
                )
            })
            .collect();
        ensure!(
            differing.is_empty(),
            "renamed envelopes do not open to the original values: {differing:?}"
        );
        fresh.close().await?;
        Ok(())
    }
);

// ---------------------------------------------------------------------------------------------
// 6. Issue 10: the data-loss defects, driven through the library and plain SQL the way an
// old application instance (one that writes plaintext only) does.

/// Transition-log entries of `table` moving a column from `from` to `to`.
async fn log_moves(conn: &impl ConnectionTrait, table: &str, from: Phase, to: Phase) -> Res<i64> {
    let select = Query::select()
        .expr_as(Func::count(Expr::col(a("id"))), a("n"))
        .from(a(state::LOG_TABLE))
        .and_where(Expr::col(a("table_name")).eq(table))
        .and_where(Expr::col(a("from_phase")).eq(from.as_str()))
        .and_where(Expr::col(a("to_phase")).eq(to.as_str()))
        .to_owned();
    Ok(conn
        .query_one(&select)
        .await?
        .ok_or("no count")?
        .try_get("", "n")?)
}

/// Whether `message` holds any of `values` (plaintexts the test wrote), ignoring case.
fn leaks(message: &str, values: &[&str]) -> bool {
    let message = message.to_lowercase();
    values
        .iter()
        .any(|v| message.contains(&v.trim().to_lowercase()))
}

backend_tests!(
    /// Defect 1: a verify that fails after passing demotes the column to `backfilled`, and
    /// cut-over re-checks every row itself. dual_write → backfill → verify (passes) → an old
    /// instance moves row 10's e-mail in plain SQL → verify reports row 10 and the column is
    /// back in `backfilled` → cut-over is refused (`Error::Phase`) → repair re-seals row 10 →
    /// verify passes. Then the old instance writes row 10 again and cut-over is called with
    /// the column still `verified`: it refuses (`Error::Refused` naming row 10, no plaintext
    /// in the message) and demotes. Repair, verify, cut-over: row 10's envelope and index
    /// hold the last e-mail, and every other row its own.
    failing_reverify_demotes_and_cut_over_rechecks,
    |db: &TestDb| async move {
        let conn = &db.conn;
        create_table(conn, "mig_demote", true).await?;
        seed_plaintext(conn, "mig_demote", 300).await?;
        state::start(conn, "mig_demote", "email").await?;
        let spec =
            EncryptColumn::<String, DemoteEmail>::new("mig_demote", "id", "email", "email_enc")
                .with_index("email_bidx", &DEMOTE_BIDX);
        let opts = RunOptions {
            batch_size: 64,
            ..Default::default()
        };
        assert_eq!(migrate::dual_write(conn, &spec).await?, ["email"]);
        let filled = migrate::backfill(conn, &spec, &opts, |_| {}).await?;
        ensure!(
            filled.finished && filled.sealed == 297 && filled.remaining == 0,
            "{filled:?}"
        );
        assert_eq!(phase_of(conn, "mig_demote").await?, Phase::Backfilled);
        let first = migrate::verify(conn, &spec, &opts).await?;
        ensure!(first.passed() && first.rows == 300, "{first:?}");
        assert_eq!(phase_of(conn, "mig_demote").await?, Phase::Verified);

        // An old instance moves row 10's e-mail: plaintext only.
        conn.execute_unprepared(
            "UPDATE mig_demote SET email = 'moved-10@example.net' WHERE id = 10",
        )
        .await?;
        let failed = migrate::verify(conn, &spec, &opts).await?;
        ensure!(
            !failed.passed()
                && failed.problem_rows == 1
                && failed.problem_ids == [10]
                && failed.mismatched == 1
                && failed.index_mismatched == 1
                && failed.missing == 0,
            "{failed:?}"
        );
        assert_eq!(failed.columns[0].phase, Some(Phase::Verified));
        assert_eq!(phase_of(conn, "mig_demote").await?, Phase::Backfilled);
        assert_eq!(
            ReadPolicy::load(conn, "mig_demote", "email").await?,
            ReadPolicy::EncryptedFirst
        );
        let err = migrate::cut_over(conn, &spec, &opts).await.unwrap_err();
        expect_phase_error_of(
            &err,
            ("mig_demote", "email"),
            "backfilled",
            "cut_over",
            &["passing verify"],
        )?;
        assert_eq!(phase_of(conn, "mig_demote").await?, Phase::Backfilled);

        let repaired = migrate::repair(conn, &spec, &opts, |_| {}).await?;
        ensure!(
            repaired.repaired == 1
                && repaired.rows == 1
                && repaired.skipped == 0
                && repaired.finished
                && repaired.by_column == [("email".to_owned(), 1)],
            "{repaired:?}"
        );
        ensure!(
            migrate::verify(conn, &spec, &opts).await?.passed(),
            "verify after repair"
        );
        assert_eq!(phase_of(conn, "mig_demote").await?, Phase::Verified);

        // Verify passed; the old instance writes row 10 again; cut-over straight away.
        conn.execute_unprepared(
            "UPDATE mig_demote SET email = 'moved-again-10@example.net' WHERE id = 10",
        )
        .await?;
        let err = migrate::cut_over(conn, &spec, &opts).await.unwrap_err();
        let message = expect_refused(&err, "mig_demote", "cut-over", &[10])?;
        ensure!(
            !leaks(&message, &["moved-again-10@example.net", "moved-10@example.net"]),
            "the cut-over refusal carries plaintext"
        );
        ensure!(message.contains("repair"), "no way out named: {message}");
        assert_eq!(phase_of(conn, "mig_demote").await?, Phase::Backfilled);
        assert_eq!(
            ReadPolicy::load(conn, "mig_demote", "email").await?,
            ReadPolicy::EncryptedFirst
        );
        // Both demotions are in the transition log.
        assert_eq!(
            log_moves(conn, "mig_demote", Phase::Verified, Phase::Backfilled).await?,
            2
        );

        // The way out the refusal names: repair, verify, cut-over.
        let repaired = migrate::repair(conn, &spec, &opts, |_| {}).await?;
        ensure!(repaired.repaired == 1, "{repaired:?}");
        ensure!(
            migrate::verify(conn, &spec, &opts).await?.passed(),
            "verify after the second repair"
        );
        let cut = migrate::cut_over(conn, &spec, &opts).await?;
        ensure!(
            cut.moved == ["email"] && cut.already.is_empty() && cut.check.passed(),
            "{cut:?}"
        );
        assert_eq!(cut.check.rows, 300);
        assert_eq!(phase_of(conn, "mig_demote").await?, Phase::CutOver);

        // Nothing lost: row 10 holds the last e-mail, in its envelope and its index.
        let mut expected = seeded_emails(300);
        expected.insert(10, Some("moved-again-10@example.net".into()));
        let rows = read_rows(conn, "mig_demote", true).await?;
        assert_eq!(rows.len(), 300);
        let ring = keyring::current()?;
        check_rows::<DemoteEmail>(&rows, &ring, &DEMOTE_BIDX, |r| {
            expected.get(&r.id).cloned().flatten()
        })?;
        Ok(())
    }
);

backend_tests!(
    /// Defect 2: after cut-over, drop refuses while any row holds plaintext that no envelope
    /// carries. Old instances write in plain SQL: a new row with plaintext only, a NULL e-mail
    /// set without an envelope, and an e-mail changed so that it disagrees with its envelope
    /// (a row the new code wrote encrypted-only is fine). Drop fails with `Error::Refused`
    /// whose count and ids are exactly those three rows, and the plaintext column still holds
    /// them; repair seals them, drop succeeds, and every row's envelope opens to its last
    /// plaintext: no value lost.
    drop_refuses_plaintext_no_envelope_carries,
    |db: &TestDb| async move {
        let conn = &db.conn;
        let manager = SchemaManager::new(conn);
        create_table(conn, "mig_drop", true).await?;
        seed_plaintext(conn, "mig_drop", 200).await?;
        state::start(conn, "mig_drop", "email").await?;
        let spec = EncryptColumn::<String, DropEmail>::new("mig_drop", "id", "email", "email_enc")
            .with_index("email_bidx", &DROP_BIDX);
        let opts = RunOptions {
            batch_size: 50,
            ..Default::default()
        };
        migrate::dual_write(conn, &spec).await?;
        ensure!(
            migrate::backfill(conn, &spec, &opts, |_| {})
                .await?
                .finished,
            "backfill"
        );
        ensure!(migrate::verify(conn, &spec, &opts).await?.passed(), "verify");
        assert_eq!(migrate::cut_over(conn, &spec, &opts).await?.moved, ["email"]);
        let policy = ReadPolicy::load(conn, "mig_drop", "email").await?;
        assert_eq!(policy, ReadPolicy::EncryptedOnly);

        // The new code after cut-over: envelope and index, NULL plaintext.
        let ring = keyring::current()?;
        let value = Some("new-30@example.org".to_owned());
        let write = policy.write::<String, DropEmail>(value.clone())?;
        let update = Query::update()
            .table(a("mig_drop"))
            .value(a("email"), write.plaintext)
            .value(
                a("email_enc"),
                Value::Bytes(write.encrypted.map(|e| e.envelope().to_vec())),
            )
            .value(
                a("email_bidx"),
                Value::Bytes(index_of(&DROP_BIDX, &ring, &value)?),
            )
            .and_where(Expr::col(a("id")).eq(30))
            .to_owned();
        conn.execute(&update).await?;
        // Old instances, plain SQL.
        conn.execute_unprepared(
            "INSERT INTO mig_drop (id, email) VALUES (1001, 'late-1001@example.org')",
        )
        .await?;
        ensure!(seed_email(97).is_none(), "row 97 should start NULL");
        old_instance_write(conn, "mig_drop", "email", 97, Some("late-97@example.org")).await?;
        old_instance_write(conn, "mig_drop", "email", 20, Some("changed-20@example.org")).await?;

        let before = read_rows(conn, "mig_drop", true).await?;
        let err = migrate::drop_plaintext(conn, &spec, &[], &opts)
            .await
            .unwrap_err();
        let message = expect_refused(&err, "mig_drop", "drop", &[20, 97, 1001])?;
        ensure!(
            !leaks(
                &message,
                &["late-1001@", "late-97@", "changed-20@", "p000020@"]
            ),
            "the drop refusal carries plaintext"
        );
        ensure!(
            manager.has_column("mig_drop", "email").await?,
            "a refused drop dropped the column"
        );
        ensure!(
            read_rows(conn, "mig_drop", true).await? == before,
            "a refused drop changed rows"
        );
        assert_eq!(phase_of(conn, "mig_drop").await?, Phase::CutOver);
        // Verify of a cut-over column reports the same rows, and moves nothing.
        let seen = migrate::verify(conn, &spec, &opts).await?;
        ensure!(
            seen.problem_ids == [20, 97, 1001] && seen.encrypted_only == 1 && seen.missing == 2,
            "{seen:?}"
        );
        assert_eq!(phase_of(conn, "mig_drop").await?, Phase::CutOver);

        let repaired = migrate::repair(conn, &spec, &opts, |_| {}).await?;
        ensure!(
            repaired.repaired == 3 && repaired.rows == 3 && repaired.skipped == 0,
            "{repaired:?}"
        );
        let dropped = migrate::drop_plaintext(conn, &spec, &[], &opts).await?;
        ensure!(
            dropped.dropped == ["email"] && dropped.rows_checked == 201,
            "{dropped:?}"
        );
        ensure!(
            !manager.has_column("mig_drop", "email").await?,
            "the column survived the drop"
        );
        assert_eq!(phase_of(conn, "mig_drop").await?, Phase::Dropped);

        // Zero lost values: every row opens to its last plaintext (or the new code's value).
        let mut expected = seeded_emails(200);
        expected.insert(20, Some("changed-20@example.org".into()));
        expected.insert(97, Some("late-97@example.org".into()));
        expected.insert(1001, Some("late-1001@example.org".into()));
        expected.insert(30, value);
        let rows = read_rows(conn, "mig_drop", false).await?;
        assert_eq!(rows.len(), expected.len());
        check_rows::<DropEmail>(&rows, &ring, &DROP_BIDX, |r| {
            expected.get(&r.id).cloned().flatten()
        })?;
        Ok(())
    }
);

/// `CREATE TABLE table (id int primary key, full_name varchar(200), email varchar(320),
/// phone varchar(40), full_name_enc blob, email_enc blob, email_bidx binary(33), phone_enc
/// blob)`: three plaintext columns moved as one plan.
async fn create_people_table(conn: &DatabaseConnection, table: &str) -> TestResult {
    let create = Table::create()
        .table(a(table))
        .col(ColumnDef::new(a("id")).integer().not_null().primary_key())
        .col(ColumnDef::new(a("full_name")).string_len(200).null())
        .col(ColumnDef::new(a("email")).string_len(320).null())
        .col(ColumnDef::new(a("phone")).string_len(40).null())
        .col(ColumnDef::new(a("full_name_enc")).blob().null())
        .col(ColumnDef::new(a("email_enc")).blob().null())
        .col(
            ColumnDef::new_with_type(a("email_bidx"), blind_index_column_type(&PATIENT_BIDX))
                .null(),
        )
        .col(ColumnDef::new(a("phone_enc")).blob().null())
        .to_owned();
    conn.execute(&create).await?;
    Ok(())
}

fn person_name(id: i32) -> Option<String> {
    Some(format!("Patient {id:04}"))
}

/// NULL for every 13th row.
fn person_email(id: i32) -> Option<String> {
    (id % 13 != 0).then(|| format!("person{id:04}@example.org"))
}

/// NULL for every 3rd row.
fn person_phone(id: i32) -> Option<String> {
    (id % 3 != 0).then(|| format!("+1 555 01{id:04}"))
}

/// `id → f(id)` for rows `1..=rows`.
fn people(rows: i32, f: fn(i32) -> Option<String>) -> BTreeMap<i32, Option<String>> {
    (1..=rows).map(|id| (id, f(id))).collect()
}

/// Values (non-NULL entries) of a column.
fn values_in(column: &BTreeMap<i32, Option<String>>) -> u64 {
    column.values().filter(|v| v.is_some()).count() as u64
}

async fn seed_people(conn: &DatabaseConnection, table: &str, rows: i32) -> TestResult {
    let mut insert = Query::insert();
    insert
        .into_table(a(table))
        .columns([a("id"), a("full_name"), a("email"), a("phone")]);
    for id in 1..=rows {
        insert.values_panic([
            id.into(),
            person_name(id).into(),
            person_email(id).into(),
            person_phone(id).into(),
        ]);
    }
    conn.execute(&insert).await?;
    Ok(())
}

const MULTI_ROWS: i32 = 120;
const PEOPLE: [&str; 3] = ["full_name", "email", "phone"];

backend_tests!(
    /// Defect 3: a table's columns (full name; e-mail with a blind index, some NULL; phone,
    /// a third NULL) move as one plan, all or none. The backfill refuses the table while one
    /// column is still `added`, writing nothing. With one bad value in one column (an old
    /// instance's phone write), cut-over is refused and every column is left in the same
    /// phase (`backfilled`, none cut over); after cut-over, a bad e-mail makes drop refuse
    /// and every plaintext column stays. Re-running each step after it succeeded is a no-op
    /// that reports the columns as already done, never an error. Every value survives.
    table_columns_move_together,
    |db: &TestDb| async move {
        let conn = &db.conn;
        let manager = SchemaManager::new(conn);
        create_people_table(conn, "mig_multi").await?;
        seed_people(conn, "mig_multi", MULTI_ROWS).await?;
        for column in PEOPLE {
            state::start(conn, "mig_multi", column).await?;
        }
        let plan = EncryptTable::new("mig_multi", "id")
            .column(EncryptColumn::<String, MultiName>::new(
                "mig_multi",
                "id",
                "full_name",
                "full_name_enc",
            ))
            .column(
                EncryptColumn::<String, MultiEmail>::new("mig_multi", "id", "email", "email_enc")
                    .with_index("email_bidx", &MULTI_BIDX),
            )
            .column(EncryptColumn::<String, MultiPhone>::new(
                "mig_multi",
                "id",
                "phone",
                "phone_enc",
            ));
        let opts = RunOptions {
            batch_size: 25,
            ..Default::default()
        };
        let phases = async || phases_of(conn, "mig_multi", &PEOPLE).await;
        let all = |p: Phase| vec![p; 3];
        let names_done = || PEOPLE.map(str::to_owned).to_vec();
        let sealed_cells = async || -> Res<i64> {
            let mut n = 0;
            for enc in ["full_name_enc", "email_enc", "phone_enc"] {
                n += count_where(conn, "mig_multi", Expr::col(a(enc)).is_not_null()).await?;
            }
            Ok(n)
        };

        // One column dual-writes, two do not yet: the table's backfill is refused, naming the
        // first column still `added`, and nothing is written or moved.
        state::transition(conn, "mig_multi", "full_name", Phase::DualWrite, None).await?;
        let err = migrate::backfill(conn, &plan, &opts, |_| {})
            .await
            .unwrap_err();
        expect_phase_error_of(
            &err,
            ("mig_multi", "email"),
            "added",
            "backfilling",
            &["dual-write first"],
        )?;
        assert_eq!(
            phases().await?,
            [Phase::DualWrite, Phase::Added, Phase::Added]
        );
        assert_eq!(sealed_cells().await?, 0);
        assert_eq!(migrate::dual_write(conn, &plan).await?, ["email", "phone"]);
        assert_eq!(migrate::dual_write(conn, &plan).await?, Vec::<String>::new());
        assert_eq!(phases().await?, all(Phase::DualWrite));

        let (names, mut emails, mut phones) = (
            people(MULTI_ROWS, person_name),
            people(MULTI_ROWS, person_email),
            people(MULTI_ROWS, person_phone),
        );
        let filled = migrate::backfill(conn, &plan, &opts, |_| {}).await?;
        ensure!(
            filled.finished
                && filled.remaining == 0
                && filled.rows == MULTI_ROWS as u64
                && filled.already_done.is_empty(),
            "{filled:?}"
        );
        assert_eq!(
            filled.by_column,
            vec![
                ("full_name".to_owned(), values_in(&names)),
                ("email".to_owned(), values_in(&emails)),
                ("phone".to_owned(), values_in(&phones)),
            ]
        );
        assert_eq!(
            filled.sealed,
            values_in(&names) + values_in(&emails) + values_in(&phones)
        );
        assert_eq!(phases().await?, all(Phase::Backfilled));
        // Re-run: nothing to do, the columns are reported as done.
        let again = migrate::backfill(conn, &plan, &opts, |_| {}).await?;
        ensure!(
            again.finished && again.sealed == 0 && again.already_done == names_done(),
            "{again:?}"
        );

        let verified = migrate::verify(conn, &plan, &opts).await?;
        ensure!(verified.passed() && verified.columns.len() == 3, "{verified:?}");
        let both_null: Vec<u64> = verified.columns.iter().map(|c| c.both_null).collect();
        assert_eq!(both_null, [0, 9, 40]);
        assert_eq!(phases().await?, all(Phase::Verified));
        // Re-run: passes again, moves nothing.
        ensure!(
            migrate::verify(conn, &plan, &opts).await?.passed(),
            "second verify"
        );
        assert_eq!(phases().await?, all(Phase::Verified));

        // Cut-over, all or none: an old instance changes the phone of row 7 only.
        old_instance_write(conn, "mig_multi", "phone", 7, Some("+1 555 0199999")).await?;
        phones.insert(7, Some("+1 555 0199999".into()));
        let err = migrate::cut_over(conn, &plan, &opts).await.unwrap_err();
        expect_refused(&err, "mig_multi", "cut-over", &[7])?;
        assert_eq!(phases().await?, all(Phase::Backfilled));
        let fixed = migrate::repair(conn, &plan, &opts, |_| {}).await?;
        assert_eq!(
            fixed.by_column,
            vec![
                ("full_name".to_owned(), 0),
                ("email".to_owned(), 0),
                ("phone".to_owned(), 1),
            ]
        );
        ensure!(
            migrate::verify(conn, &plan, &opts).await?.passed(),
            "verify after repair"
        );
        let cut = migrate::cut_over(conn, &plan, &opts).await?;
        ensure!(
            cut.moved == names_done() && cut.already.is_empty(),
            "{cut:?}"
        );
        assert_eq!(cut.check.rows, MULTI_ROWS as u64);
        assert_eq!(phases().await?, all(Phase::CutOver));
        let again = migrate::cut_over(conn, &plan, &opts).await?;
        ensure!(
            again.moved.is_empty() && again.already == names_done(),
            "{again:?}"
        );
        assert_eq!(phases().await?, all(Phase::CutOver));

        // Drop, all or none: after cut-over an old instance changes row 9's e-mail.
        old_instance_write(conn, "mig_multi", "email", 9, Some("late-9@example.org")).await?;
        emails.insert(9, Some("late-9@example.org".into()));
        let err = migrate::drop_plaintext(conn, &plan, &[], &opts)
            .await
            .unwrap_err();
        expect_refused(&err, "mig_multi", "drop", &[9])?;
        for column in PEOPLE {
            ensure!(
                manager.has_column("mig_multi", column).await?,
                "a refused drop dropped {column}"
            );
        }
        assert_eq!(phases().await?, all(Phase::CutOver));
        let fixed = migrate::repair(conn, &plan, &opts, |_| {}).await?;
        ensure!(fixed.repaired == 1, "{fixed:?}");
        let dropped = migrate::drop_plaintext(conn, &plan, &[], &opts).await?;
        ensure!(
            dropped.dropped == names_done() && dropped.rows_checked == MULTI_ROWS as u64,
            "{dropped:?}"
        );
        for column in PEOPLE {
            ensure!(
                !manager.has_column("mig_multi", column).await?,
                "{column} survived the drop"
            );
        }
        assert_eq!(phases().await?, all(Phase::Dropped));

        // Every step, re-run after success: a no-op naming the columns as done.
        let again = migrate::drop_plaintext(conn, &plan, &[], &opts).await?;
        ensure!(
            again.already == names_done() && again.dropped.is_empty() && again.recorded.is_empty(),
            "{again:?}"
        );
        assert_eq!(migrate::dual_write(conn, &plan).await?, Vec::<String>::new());
        let backfilled = migrate::backfill(conn, &plan, &opts, |_| {}).await?;
        ensure!(
            backfilled.sealed == 0 && backfilled.already_done == names_done(),
            "{backfilled:?}"
        );
        let verified = migrate::verify(conn, &plan, &opts).await?;
        ensure!(
            verified.skipped == names_done() && verified.rows == 0,
            "{verified:?}"
        );
        let repaired = migrate::repair(conn, &plan, &opts, |_| {}).await?;
        ensure!(
            repaired.repaired == 0 && repaired.skipped_columns == names_done(),
            "{repaired:?}"
        );
        let cut = migrate::cut_over(conn, &plan, &opts).await?;
        ensure!(
            cut.moved.is_empty() && cut.already == names_done(),
            "{cut:?}"
        );
        assert_eq!(phases().await?, all(Phase::Dropped));

        // Every value, including both late writes, is in its envelope.
        check_envelopes::<MultiName>(conn, "mig_multi", "full_name_enc", &names).await?;
        check_envelopes::<MultiEmail>(conn, "mig_multi", "email_enc", &emails).await?;
        check_envelopes::<MultiPhone>(conn, "mig_multi", "phone_enc", &phones).await?;
        let ring = keyring::current()?;
        assert_eq!(
            raw::get_bytes(conn, "mig_multi", "email_bidx", 9).await?,
            index_of(&MULTI_BIDX, &ring, &emails[&9])?,
            "row 9's blind index does not follow its repaired e-mail"
        );
        Ok(())
    }
);

backend_tests!(
    /// Defect 3, the other half: a table step skips a column that an earlier one-column plan
    /// already took further, and moves the others. The name column is backfilled alone, then
    /// the table's backfill seals only the e-mails; the e-mail column is cut over alone, then
    /// the table's cut-over moves only the name (verify in between checks each column as its
    /// phase requires); likewise drop and purge.
    table_step_skips_columns_already_past_it,
    |db: &TestDb| async move {
        let conn = &db.conn;
        let rows = 60;
        create_people_table(conn, "mig_split").await?;
        seed_people(conn, "mig_split", rows).await?;
        let cols = ["full_name", "email"];
        for column in cols {
            state::start(conn, "mig_split", column).await?;
        }
        let name =
            EncryptColumn::<String, SplitName>::new("mig_split", "id", "full_name", "full_name_enc");
        let email = EncryptColumn::<String, SplitEmail>::new("mig_split", "id", "email", "email_enc")
            .with_index("email_bidx", &SPLIT_BIDX);
        let plan = EncryptTable::new("mig_split", "id")
            .column(name.clone())
            .column(email.clone());
        let opts = RunOptions {
            batch_size: 16,
            ..Default::default()
        };
        let phases = async || phases_of(conn, "mig_split", &cols).await;
        let (names, emails) = (people(rows, person_name), people(rows, person_email));
        assert_eq!(migrate::dual_write(conn, &plan).await?, cols);

        let first = migrate::backfill(conn, &name, &opts, |_| {}).await?;
        ensure!(
            first.finished && first.by_column == [("full_name".to_owned(), values_in(&names))],
            "{first:?}"
        );
        assert_eq!(phases().await?, [Phase::Backfilled, Phase::DualWrite]);
        assert_eq!(
            count_where(conn, "mig_split", Expr::col(a("email_enc")).is_not_null()).await?,
            0
        );
        let rest = migrate::backfill(conn, &plan, &opts, |_| {}).await?;
        ensure!(
            rest.finished
                && rest.already_done == ["full_name"]
                && rest.by_column == [("email".to_owned(), values_in(&emails))],
            "{rest:?}"
        );
        assert_eq!(phases().await?, [Phase::Backfilled, Phase::Backfilled]);
        ensure!(
            migrate::verify(conn, &plan, &opts).await?.passed(),
            "verify"
        );
        assert_eq!(phases().await?, [Phase::Verified, Phase::Verified]);

        let cut = migrate::cut_over(conn, &email, &opts).await?;
        ensure!(cut.moved == ["email"], "{cut:?}");
        assert_eq!(phases().await?, [Phase::Verified, Phase::CutOver]);
        let mixed = migrate::verify(conn, &plan, &opts).await?;
        ensure!(mixed.passed(), "{mixed:?}");
        let checked: Vec<Option<Phase>> = mixed.columns.iter().map(|c| c.phase).collect();
        assert_eq!(checked, [Some(Phase::Verified), Some(Phase::CutOver)]);
        assert_eq!(phases().await?, [Phase::Verified, Phase::CutOver]);
        let cut = migrate::cut_over(conn, &plan, &opts).await?;
        ensure!(
            cut.moved == ["full_name"] && cut.already == ["email"],
            "{cut:?}"
        );
        assert_eq!(phases().await?, [Phase::CutOver, Phase::CutOver]);

        let dropped = migrate::drop_plaintext(conn, &email, &[], &opts).await?;
        ensure!(dropped.dropped == ["email"], "{dropped:?}");
        assert_eq!(phases().await?, [Phase::CutOver, Phase::Dropped]);
        let dropped = migrate::drop_plaintext(conn, &plan, &[], &opts).await?;
        ensure!(
            dropped.dropped == ["full_name"] && dropped.already == ["email"],
            "{dropped:?}"
        );
        assert_eq!(phases().await?, [Phase::Dropped, Phase::Dropped]);
        assert_eq!(migrate::purge(conn, &name).await?, ["full_name"]);
        assert_eq!(phases().await?, [Phase::Purged, Phase::Dropped]);
        assert_eq!(migrate::purge(conn, &plan).await?, ["email"]);
        assert_eq!(phases().await?, [Phase::Purged, Phase::Purged]);

        check_envelopes::<SplitName>(conn, "mig_split", "full_name_enc", &names).await?;
        check_envelopes::<SplitEmail>(conn, "mig_split", "email_enc", &emails).await?;
        Ok(())
    }
);

backend_tests!(
    /// Defect 5: drop and purge resume at the phase level. A drop interrupted after one
    /// column's `ALTER TABLE` had committed (as on MySQL, where it commits on its own) leaves
    /// that column gone and its phase `cut_over`: the next drop records it and drops the
    /// other. A purge interrupted after its rewrite but before recording leaves the phases
    /// `dropped`; drop again reports them done; purge moves them to `purged`; purge again is
    /// a no-op, and so is drop.
    drop_and_purge_resume_at_the_phase_level,
    |db: &TestDb| async move {
        let conn = &db.conn;
        let manager = SchemaManager::new(conn);
        let rows = 90;
        create_people_table(conn, "mig_purge").await?;
        seed_people(conn, "mig_purge", rows).await?;
        let cols = ["email", "phone"];
        for column in cols {
            state::start(conn, "mig_purge", column).await?;
        }
        let plan = EncryptTable::new("mig_purge", "id")
            .column(
                EncryptColumn::<String, PurgeEmail>::new("mig_purge", "id", "email", "email_enc")
                    .with_index("email_bidx", &PURGE_BIDX),
            )
            .column(EncryptColumn::<String, PurgePhone>::new(
                "mig_purge",
                "id",
                "phone",
                "phone_enc",
            ));
        let opts = RunOptions {
            batch_size: 30,
            ..Default::default()
        };
        let phases = async || phases_of(conn, "mig_purge", &cols).await;
        migrate::dual_write(conn, &plan).await?;
        ensure!(
            migrate::backfill(conn, &plan, &opts, |_| {})
                .await?
                .finished,
            "backfill"
        );
        ensure!(migrate::verify(conn, &plan, &opts).await?.passed(), "verify");
        assert_eq!(migrate::cut_over(conn, &plan, &opts).await?.moved, cols);

        // The interrupted drop: `phone` is gone, both phases still `cut_over`.
        conn.execute_unprepared("ALTER TABLE mig_purge DROP COLUMN phone")
            .await?;
        assert_eq!(phases().await?, [Phase::CutOver, Phase::CutOver]);
        let dropped = migrate::drop_plaintext(conn, &plan, &[], &opts).await?;
        ensure!(
            dropped.recorded == ["phone"] && dropped.dropped == ["email"] && dropped.already.is_empty(),
            "{dropped:?}"
        );
        ensure!(
            !manager.has_column("mig_purge", "email").await?,
            "email survived the drop"
        );
        assert_eq!(phases().await?, [Phase::Dropped, Phase::Dropped]);

        // The interrupted purge: the table was rewritten, nothing recorded.
        schema::purge_dropped_data(&manager, "mig_purge").await?;
        assert_eq!(phases().await?, [Phase::Dropped, Phase::Dropped]);
        let again = migrate::drop_plaintext(conn, &plan, &[], &opts).await?;
        ensure!(
            again.already == cols && again.dropped.is_empty() && again.recorded.is_empty(),
            "{again:?}"
        );
        assert_eq!(migrate::purge(conn, &plan).await?, cols);
        assert_eq!(phases().await?, [Phase::Purged, Phase::Purged]);
        assert_eq!(migrate::purge(conn, &plan).await?, Vec::<String>::new());
        assert_eq!(phases().await?, [Phase::Purged, Phase::Purged]);
        let again = migrate::drop_plaintext(conn, &plan, &[], &opts).await?;
        ensure!(
            again.already == cols && again.dropped.is_empty(),
            "{again:?}"
        );
        assert_eq!(log_moves(conn, "mig_purge", Phase::Dropped, Phase::Purged).await?, 2);

        check_envelopes::<PurgeEmail>(conn, "mig_purge", "email_enc", &people(rows, person_email))
            .await?;
        check_envelopes::<PurgePhone>(conn, "mig_purge", "phone_enc", &people(rows, person_phone))
            .await?;
        Ok(())
    }
);

backend_tests!(
    /// A restart leaves a finished backfill alone: run again (twice), it reports the column
    /// as already done, seals nothing, and changes neither the state row, the transition
    /// log nor any row. A row an old instance inserts afterwards is not the backfill's to
    /// seal either: verify reports it, repair seals it, and a later backfill still leaves the
    /// (now verified) column where it is.
    backfill_restart_leaves_finished_columns_alone,
    |db: &TestDb| async move {
        let conn = &db.conn;
        create_table(conn, "mig_restart", true).await?;
        seed_plaintext(conn, "mig_restart", 150).await?;
        state::start(conn, "mig_restart", "email").await?;
        let spec = EncryptColumn::<String, RestartEmail>::new(
            "mig_restart",
            "id",
            "email",
            "email_enc",
        )
        .with_index("email_bidx", &RESTART_BIDX);
        let opts = RunOptions {
            batch_size: 40,
            ..Default::default()
        };
        migrate::dual_write(conn, &spec).await?;
        let first = migrate::backfill(conn, &spec, &opts, |_| {}).await?;
        ensure!(first.finished && first.sealed == 149, "{first:?}");
        assert_eq!(phase_of(conn, "mig_restart").await?, Phase::Backfilled);

        let nothing = migrate::BackfillReport {
            finished: true,
            already_done: vec!["email".to_owned()],
            ..Default::default()
        };
        let snap = snapshot(conn, "mig_restart", true).await?;
        for _ in 0..2 {
            let mut calls = 0;
            let again = migrate::backfill(conn, &spec, &opts, |_| calls += 1).await?;
            assert_eq!(again, nothing);
            assert_eq!(calls, 0, "progress reported for a finished backfill");
        }
        assert_eq!(snapshot(conn, "mig_restart", true).await?, snap);
        assert_eq!(
            log_moves(conn, "mig_restart", Phase::Backfilled, Phase::Backfilling).await?,
            0
        );

        conn.execute_unprepared(
            "INSERT INTO mig_restart (id, email) VALUES (151, 'late-151@example.org')",
        )
        .await?;
        assert_eq!(migrate::backfill(conn, &spec, &opts, |_| {}).await?, nothing);
        assert_eq!(raw::get_bytes(conn, "mig_restart", "email_enc", 151).await?, None);
        let failed = migrate::verify(conn, &spec, &opts).await?;
        ensure!(
            failed.problem_ids == [151] && failed.missing == 1,
            "{failed:?}"
        );
        let repaired = migrate::repair(conn, &spec, &opts, |_| {}).await?;
        ensure!(repaired.repaired == 1, "{repaired:?}");
        ensure!(migrate::verify(conn, &spec, &opts).await?.passed(), "verify");
        assert_eq!(migrate::backfill(conn, &spec, &opts, |_| {}).await?, nothing);
        assert_eq!(phase_of(conn, "mig_restart").await?, Phase::Verified);

        let mut expected = seeded_emails(150);
        expected.insert(151, Some("late-151@example.org".into()));
        check_envelopes::<RestartEmail>(conn, "mig_restart", "email_enc", &expected).await?;
        Ok(())
    }
);

backend_tests!(
    /// Legacy data that collides under a UNIQUE blind index (`Ada@Example.org` and
    /// ` ada@example.org `, plus another pair differing in case): the backfill fails before
    /// writing anything with `Error::DuplicateValues` naming the index column and exactly the
    /// four ids, grouped by pair, without any plaintext in the message; no row got an
    /// envelope or an index value and the phase did not move. After one row of each pair is
    /// fixed in plain SQL, the backfill succeeds and verify passes.
    duplicate_normalized_values_refused_before_any_write,
    |db: &TestDb| async move {
        let conn = &db.conn;
        let rows = 60;
        create_table(conn, "mig_dup", true).await?;
        conn.execute(
            &Index::create()
                .name(schema::index_name("mig_dup", "email_bidx"))
                .table(a("mig_dup"))
                .col(a("email_bidx"))
                .unique()
                .to_owned(),
        )
        .await?;
        seed_plaintext(conn, "mig_dup", rows).await?;
        let mut expected = seeded_emails(rows);
        for (id, value) in [
            (12, "Ada@Example.org"),
            (40, " ada@example.org "),
            (5, "Bob.Jones@Example.org"),
            (33, "bob.jones@example.org"),
        ] {
            old_instance_write(conn, "mig_dup", "email", id, Some(value)).await?;
            expected.insert(id, Some(value.to_owned()));
        }
        state::start(conn, "mig_dup", "email").await?;
        let spec = EncryptColumn::<String, DupEmail>::new("mig_dup", "id", "email", "email_enc")
            .with_index("email_bidx", &DUP_BIDX);
        // Small batches: the pre-check pages through the table.
        let opts = RunOptions {
            batch_size: 16,
            ..Default::default()
        };
        migrate::dual_write(conn, &spec).await?;

        let err = migrate::backfill(conn, &spec, &opts, |_| {})
            .await
            .unwrap_err();
        let (inner, message) = crate_error(&err)?;
        match inner {
            Error::DuplicateValues {
                table,
                column,
                index,
                count,
                ids,
            } => {
                ensure!(
                    (table.as_str(), column.as_str(), index.as_str(), count)
                        == ("mig_dup", "email", "email_bidx", 4),
                    "{message}"
                );
                let mut sorted = ids.clone();
                sorted.sort_unstable();
                ensure!(sorted == [5, 12, 33, 40], "ids {ids:?}");
                // Grouped by shared value: each pair is listed together.
                let pair = |i: usize| {
                    let mut p = [ids[i], ids[i + 1]];
                    p.sort_unstable();
                    p
                };
                ensure!(
                    [pair(0), pair(2)] == [[5, 33], [12, 40]]
                        || [pair(0), pair(2)] == [[12, 40], [5, 33]],
                    "ids not grouped by value: {ids:?}"
                );
            }
            other => return Err(format!("expected DuplicateValues, got {other:?}").into()),
        }
        ensure!(message.contains("email_bidx"), "{message}");
        ensure!(
            !leaks(&message, &["ada@example.org", "bob.jones@example.org"]),
            "the duplicate error carries plaintext"
        );
        for column in ["email_enc", "email_bidx"] {
            assert_eq!(
                count_where(conn, "mig_dup", Expr::col(a(column)).is_not_null()).await?,
                0,
                "{column} written before the pre-check refused"
            );
        }
        assert_eq!(phase_of(conn, "mig_dup").await?, Phase::DualWrite);

        // The documented way out: make the values distinct in the plaintext column.
        for (id, value) in [(40, "ada.second@example.org"), (33, "bob.second@example.org")] {
            old_instance_write(conn, "mig_dup", "email", id, Some(value)).await?;
            expected.insert(id, Some(value.to_owned()));
        }
        let filled = migrate::backfill(conn, &spec, &opts, |_| {}).await?;
        ensure!(
            filled.finished && filled.sealed == rows as u64,
            "{filled:?}"
        );
        ensure!(migrate::verify(conn, &spec, &opts).await?.passed(), "verify");
        let all = read_rows(conn, "mig_dup", true).await?;
        let ring = keyring::current()?;
        check_rows::<DupEmail>(&all, &ring, &DUP_BIDX, |r| {
            expected.get(&r.id).cloned().flatten()
        })?;
        Ok(())
    }
);

const BUSY_ROWS: i32 = 20_000;
/// ~150 writes per second.
const BUSY_INTERVAL: Duration = Duration::from_micros(6_667);

/// What the busy writer did.
struct BusyLog {
    writes: u64,
    during: u64,
    errors: Vec<String>,
    last: HashMap<i32, Option<String>>,
    plaintext_only: BTreeSet<i32>,
}

backend_tests!(
    /// SQLite, one writer per database file: an application on a second pool writes ~150
    /// times per second (half plaintext-only as an old instance, half dual writes) while the
    /// backfill seals 20,000 rows. The backfill must not fail with `database is locked`
    /// (the library retries the batch), nor may the application's writes fail; the backfill
    /// finishes, verify reports only rows the old instance wrote, and after repair verify
    /// passes with every row opening to its final value. (PostgreSQL and MariaDB lock rows,
    /// not the database: the concurrent-writer tests above cover them, and this test returns
    /// at once there.)
    sqlite_backfill_survives_busy_writers,
    |db: &TestDb| async move {
        if db.backend != Backend::Sqlite {
            // Database-level write locking is SQLite's alone.
            return Ok(());
        }
        let conn = &db.conn;
        let seed = seed("sqlite_backfill_survives_busy_writers", db.backend);
        create_table(conn, "mig_busy", true).await?;
        seed_plaintext(conn, "mig_busy", BUSY_ROWS).await?;
        state::start(conn, "mig_busy", "email").await?;
        let spec = EncryptColumn::<String, BusyEmail>::new("mig_busy", "id", "email", "email_enc")
            .with_index("email_bidx", &BUSY_BIDX);
        migrate::dual_write(conn, &spec).await?;

        let writer_db = second_pool(db, 1).await?;
        let running = Arc::new(AtomicBool::new(true));
        let writer = {
            let (conn, running) = (writer_db.clone(), running.clone());
            let mut rng = Rng(seed);
            tokio::spawn(async move {
                let mut log = BusyLog {
                    writes: 0,
                    during: 0,
                    errors: Vec::new(),
                    last: HashMap::new(),
                    plaintext_only: BTreeSet::new(),
                };
                let mut tick = tokio::time::interval(BUSY_INTERVAL);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                while running.load(Ordering::Acquire) {
                    tick.tick().await;
                    let id = rng.range(1, i64::from(BUSY_ROWS)) as i32;
                    let value = Some(format!("busy-{}@example.org", log.writes));
                    let old_instance = rng.one_in(2);
                    let outcome = if old_instance {
                        old_instance_write(&conn, "mig_busy", "email", id, value.as_deref()).await
                    } else {
                        dual_write::<BusyEmail>(&conn, "mig_busy", &BUSY_BIDX, id, value.clone())
                            .await
                    };
                    match outcome {
                        Ok(()) => {
                            log.writes += 1;
                            if running.load(Ordering::Acquire) {
                                log.during += 1;
                            }
                            log.last.insert(id, value);
                            if old_instance {
                                log.plaintext_only.insert(id);
                            }
                        }
                        Err(err) => log.errors.push(err.to_string()),
                    }
                }
                log
            })
        };

        let started = Instant::now();
        let outcome = migrate::backfill(
            conn,
            &spec,
            // Short batches with a pause between them, so that the backfill lasts a few
            // seconds and the application gets the write lock in between, as it would.
            &RunOptions {
                batch_size: 250,
                throttle: Some(Duration::from_millis(10)),
                ..Default::default()
            },
            |_| {},
        )
        .await;
        let elapsed = started.elapsed();
        running.store(false, Ordering::Release);
        let log = writer.await?;
        let report = outcome?;
        ensure!(report.finished, "{report:?}");
        ensure!(
            log.errors.is_empty(),
            "{} application write(s) failed during the backfill, first: {}",
            log.errors.len(),
            log.errors[0]
        );
        let rate = log.during as f64 / elapsed.as_secs_f64();
        eprintln!(
            "sqlite: backfill of {BUSY_ROWS} rows in {elapsed:?} ({} batches, sealed {}, \
             skipped {}, remaining {}) under {} outside writes ({rate:.0}/s)",
            report.batches, report.sealed, report.skipped, report.remaining, log.during
        );
        ensure!(
            log.during >= 50 && rate >= 75.0,
            "the outside writer made only {} writes ({rate:.0}/s): no real contention",
            log.during
        );

        let first = migrate::verify(conn, &spec, &RunOptions::default()).await?;
        let unexplained: Vec<&i64> = first
            .problem_ids
            .iter()
            .filter(|id| !log.plaintext_only.contains(&(**id as i32)))
            .collect();
        ensure!(
            unexplained.is_empty(),
            "verify reports rows the old instance never wrote: {:?}",
            &unexplained[..unexplained.len().min(10)]
        );
        if !first.passed() {
            let repaired = migrate::repair(conn, &spec, &RunOptions::default(), |_| {}).await?;
            ensure!(repaired.repaired == first.problem_rows, "{repaired:?} vs {first:?}");
            ensure!(
                migrate::verify(conn, &spec, &RunOptions::default())
                    .await?
                    .passed(),
                "verify after repair"
            );
        }
        assert_eq!(phase_of(conn, "mig_busy").await?, Phase::Verified);
        let rows = read_rows(conn, "mig_busy", true).await?;
        assert_eq!(rows.len(), BUSY_ROWS as usize);
        let ring = keyring::current()?;
        check_rows::<BusyEmail>(&rows, &ring, &BUSY_BIDX, |r| {
            match log.last.get(&r.id) {
                Some(value) => value.clone(),
                None => seed_email(r.id),
            }
        })?;
        writer_db.close().await?;
        Ok(())
    }
);
