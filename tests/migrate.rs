//! Zero-downtime column migration (`encrypted_columns::migrate`) on every backend:
//!
//! 1. the backfill over 20,000 rows while four tasks keep dual-writing random rows, and key
//!    rotation while four tasks keep writing through the encrypted path — every row ends up
//!    opening to its final value, blind indexes included;
//! 2. crash resume: a child process running the backfill is SIGKILLed at random moments,
//!    with the parent writing meanwhile; the run completes without lost batches or stale
//!    envelopes;
//! 3. refused input: steps out of order, no keyring, unknown tables and columns — clear
//!    errors, state and data unchanged;
//! 4. reads after cut-over fail closed (`Error::FallbackRefused`);
//! 5. the `migrate::schema` helpers through a `SchemaManager`.
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
    self, EncryptColumn, MigrationState, Phase, RotateColumn, RunOptions, schema, state,
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

fn email_index(table: &'static str) -> BlindIndex {
    BlindIndex::new(table, "email_bidx").field(Pipeline::parse("email").expect("email pipeline"))
}

static PATIENT_BIDX: LazyLock<BlindIndex> = LazyLock::new(|| email_index("mig_patients"));
static ROT_BIDX: LazyLock<BlindIndex> = LazyLock::new(|| email_index("mig_rot"));
static CRASH_BIDX: LazyLock<BlindIndex> = LazyLock::new(|| email_index("mig_crash"));
static BAD_BIDX: LazyLock<BlindIndex> = LazyLock::new(|| email_index("mig_bad"));
/// UNIQUE, so the schema helper creates a unique index.
static LEGACY_BIDX: LazyLock<BlindIndex> = LazyLock::new(|| email_index("mig_legacy").unique());

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
    Ok(state::load(conn, table, "email")
        .await?
        .ok_or("no migration state")?
        .phase)
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
            max_batches: None,
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
            max_batches: None,
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

/// Ids of rows with plaintext and no envelope at or below `cursor`.
async fn unsealed_up_to(conn: &impl ConnectionTrait, table: &str, cursor: i64) -> Res<Vec<i32>> {
    let select = Query::select()
        .column(a("id"))
        .from(a(table))
        .and_where(Expr::col(a("id")).lte(cursor))
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

backend_tests!(
    /// The backfill in a child process, SIGKILLed at a random moment, twelve times, while the
    /// parent keeps writing: dual writes (some just ahead of the cursor) and plaintext-only
    /// writes of a not-yet-upgraded writer to rows still without an envelope (some changing
    /// only letter case, which MySQL's collation would call equal). After every kill no
    /// envelope disagrees with its plaintext and every row up to the saved cursor is sealed
    /// (or was rewritten by the plaintext-only writer); then the backfill runs to the end and
    /// verify passes.
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
        let mut legacy_ids: BTreeSet<i32> = BTreeSet::new();
        for trial in 0..CRASH_TRIALS {
            let before = state::load(conn, "mig_crash", "email")
                .await?
                .ok_or("state vanished")?;
            let mut child = child_command(
                db,
                Some(&keys),
                &["--batch-size", "16", "--throttle-ms", "15"],
            )
            .spawn()?;
            let deadline = Instant::now() + Duration::from_millis(rng.range(150, 600) as u64);
            // Write while the child runs.
            let cursor = Ord::max(before.cursor.unwrap_or(0), 0);
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
            ensure!(
                !status.success() || after.phase == Phase::Backfilled,
                "trial {trial}: the child exited 0 in phase {}",
                after.phase
            );
            let progressed = after.cursor != before.cursor || after.rows_done != before.rows_done;
            if after.phase == Phase::Backfilled {
                finished_early += 1;
            } else if progressed {
                mid_run += 1;
            } else {
                before_first_batch += 1;
            }

            // Nothing was sealed from stale data, whatever the kill interrupted...
            let rows = read_rows(conn, "mig_crash", true).await?;
            let sealed: Vec<Row> = rows.into_iter().filter(|r| r.enc.is_some()).collect();
            check_rows::<CrashEmail>(&sealed, &keys.ring, &CRASH_BIDX, |r| r.email.clone())
                .map_err(|e| format!("trial {trial}: {e}"))?;
            // ...and no committed batch was lost: everything up to the saved cursor is sealed,
            // except rows the plaintext-only writer changed under the backfill.
            if let Some(c) = after.cursor.filter(|_| after.phase == Phase::Backfilling) {
                let unsealed = unsealed_up_to(conn, "mig_crash", c).await?;
                let unexplained: Vec<i32> = unsealed
                    .into_iter()
                    .filter(|id| !legacy_ids.contains(id))
                    .collect();
                ensure!(
                    unexplained.is_empty(),
                    "trial {trial}: rows up to cursor {c} without envelope: {:?}",
                    &unexplained[..unexplained.len().min(10)]
                );
            }
        }

        // Finish the job in-process, then check everything.
        let spec =
            EncryptColumn::<String, CrashEmail>::new("mig_crash", "id", "email", "email_enc")
                .with_index("email_bidx", &CRASH_BIDX);
        let (last, verified) = keyring::scope(Arc::clone(&keys.ring), async {
            let last = migrate::backfill(conn, &spec, &RunOptions::default(), |_| {}).await?;
            let verified = migrate::verify(conn, &spec, &RunOptions::default()).await?;
            Res::Ok((last, verified))
        })
        .await?;
        ensure!(last.finished, "{last:?}");
        ensure!(
            verified.passed(),
            "verify failed after the kills: {verified:?}"
        );
        let rows = read_rows(conn, "mig_crash", true).await?;
        assert_eq!(rows.len(), CRASH_ROWS as usize);
        let values = check_rows::<CrashEmail>(&rows, &keys.ring, &CRASH_BIDX, |r| r.email.clone())?;
        let state = state::load(conn, "mig_crash", "email")
            .await?
            .ok_or("state vanished")?;
        eprintln!(
            "{}: {CRASH_TRIALS} kills: {mid_run} mid-run, {before_first_batch} before the first \
             batch, {finished_early} after the child finished; parent wrote {dual_writes} dual, \
             {legacy_writes} plaintext-only; final run sealed {} (skipped {}); {} rows, \
             {values} sealed; backfill sealed {} in all",
            db.backend,
            last.sealed,
            last.skipped,
            rows.len(),
            state.rows_done
        );
        ensure!(
            mid_run * 3 >= CRASH_TRIALS * 2,
            "only {mid_run} of {CRASH_TRIALS} kills landed mid-run"
        );
        Ok(())
    }
);

// ---------------------------------------------------------------------------------------------
// 3. Refused input.

/// Everything a refused step must leave alone: the state row, the log, every data row.
#[derive(Debug, PartialEq)]
struct Snapshot {
    state: Option<MigrationState>,
    log_rows: i64,
    rows: Vec<Row>,
}

async fn snapshot(conn: &impl ConnectionTrait, table: &str) -> Res<Snapshot> {
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
        rows: read_rows(conn, table, true).await?,
    })
}

/// The crate error inside `err`, and its message.
fn crate_error(err: &DbErr) -> Res<(Error, String)> {
    let inner = Error::from_db_err(err).ok_or_else(|| format!("not a crate error: {err}"))?;
    Ok((inner.clone(), inner.to_string()))
}

fn expect_phase_error(err: DbErr, from: &str, to: &str, words: &[&str]) -> Res<String> {
    let (inner, message) = crate_error(&err)?;
    match inner {
        Error::Phase {
            table,
            column,
            from: f,
            to: t,
            ..
        } => {
            ensure!(
                (table.as_str(), column.as_str(), f, t) == ("mig_bad", "email", from, to),
                "wrong phase error: {message}"
            );
        }
        other => return Err(format!("expected a phase error, got {other:?}").into()),
    }
    ensure!(
        message.contains("mig_bad.email"),
        "message does not name the column: {message}"
    );
    for word in words {
        ensure!(message.contains(word), "message lacks {word:?}: {message}");
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

        // Nothing started: backfill, verify and transitions are refused.
        let snap = snapshot(conn, "mig_bad").await?;
        assert_eq!(snap.state, None);
        let err = migrate::backfill(conn, &spec, &opts, |_| {})
            .await
            .unwrap_err();
        expect_phase_error(err, "none", "-", &["migrate::start"])?;
        let err = migrate::verify(conn, &spec, &opts).await.unwrap_err();
        expect_phase_error(err, "none", "-", &["migrate::start"])?;
        let err = state::transition(conn, "mig_bad", "email", Phase::DualWrite, None)
            .await
            .unwrap_err();
        expect_phase_error(err, "none", "-", &["migrate::start"])?;
        assert_eq!(snapshot(conn, "mig_bad").await?, snap);

        // `added`: writers are not dual-writing yet.
        state::start(conn, "mig_bad", "email").await?;
        let snap = snapshot(conn, "mig_bad").await?;
        assert_eq!(snap.state.as_ref().map(|s| s.phase), Some(Phase::Added));
        let err = migrate::backfill(conn, &spec, &opts, |_| {})
            .await
            .unwrap_err();
        expect_phase_error(err, "added", "backfilling", &["dual_write"])?;
        for (to, words) in [
            (Phase::CutOver, "passing verify"),
            (Phase::Verified, "finished backfill"),
            (Phase::Dropped, "after cut-over"),
            (Phase::Backfilled, "running backfill"),
        ] {
            let err = state::transition(conn, "mig_bad", "email", to, None)
                .await
                .unwrap_err();
            expect_phase_error(err, "added", to.as_str(), &[words])?;
        }
        assert_eq!(snapshot(conn, "mig_bad").await?, snap);

        // `dual_write`: verify and cut-over need a finished backfill.
        state::transition(conn, "mig_bad", "email", Phase::DualWrite, None).await?;
        let snap = snapshot(conn, "mig_bad").await?;
        let err = migrate::verify(conn, &spec, &opts).await.unwrap_err();
        expect_phase_error(err, "dual_write", "verified", &["finished backfill"])?;
        let err = state::transition(conn, "mig_bad", "email", Phase::CutOver, None)
            .await
            .unwrap_err();
        expect_phase_error(err, "dual_write", "cut_over", &["passing verify"])?;
        let err = state::transition(conn, "mig_bad", "email", Phase::Added, None)
            .await
            .unwrap_err();
        expect_phase_error(err, "dual_write", "added", &["cannot go back"])?;
        assert_eq!(snapshot(conn, "mig_bad").await?, snap);

        // Unknown table, unknown columns: named in the error, nothing touched, no state row
        // for the misspelt names.
        for (table, plain, enc, bidx, named) in [
            ("mig_nope", "email", "email_enc", "email_bidx", "mig_nope"),
            ("mig_bad", "emial", "email_enc", "email_bidx", "emial"),
            ("mig_bad", "email", "email_encc", "email_bidx", "email_encc"),
            (
                "mig_bad",
                "email",
                "email_enc",
                "email_bidxx",
                "email_bidxx",
            ),
        ] {
            let wrong = EncryptColumn::<String, BadEmail>::new(table, "id", plain, enc)
                .with_index(bidx, &BAD_BIDX);
            for err in [
                migrate::backfill(conn, &wrong, &opts, |_| {})
                    .await
                    .unwrap_err(),
                migrate::verify(conn, &wrong, &opts).await.unwrap_err(),
            ] {
                let (inner, message) = crate_error(&err)?;
                ensure!(
                    matches!(inner, Error::Migration { .. }),
                    "expected a migration error, got {inner:?}"
                );
                ensure!(
                    message.contains(named) && message.contains("check the table and column names"),
                    "message does not name {named:?}: {message}"
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
        assert_eq!(snapshot(conn, "mig_bad").await?, snap);

        // A keyring without a blind-index key cannot fill the index.
        let no_index_key = Arc::new(Keyring::new(KeyId(1), *generate_key()));
        let err = keyring::scope(no_index_key, migrate::backfill(conn, &spec, &opts, |_| {}))
            .await
            .unwrap_err();
        let (inner, message) = crate_error(&err)?;
        ensure!(inner == Error::NoBlindIndexKey, "{inner:?}");
        ensure!(message.contains(ENV_BLIND_INDEX_KEYS), "{message}");
        assert_eq!(snapshot(conn, "mig_bad").await?, snap);

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
        assert_eq!(snapshot(conn, "mig_bad").await?, snap);

        // The real thing still works afterwards, and steps after it are checked too.
        let report = migrate::backfill(conn, &spec, &opts, |_| {}).await?;
        ensure!(report.finished && report.sealed == 297, "{report:?}");
        let snap = snapshot(conn, "mig_bad").await?;
        let err = state::transition(conn, "mig_bad", "email", Phase::CutOver, None)
            .await
            .unwrap_err();
        expect_phase_error(err, "backfilled", "cut_over", &["passing verify"])?;
        assert_eq!(snapshot(conn, "mig_bad").await?, snap);

        // A failing verify stays in `backfilled`, so cut-over is still refused.
        conn.execute_unprepared("UPDATE mig_bad SET email = 'changed@example.org' WHERE id = 5")
            .await?;
        let failed = migrate::verify(conn, &spec, &opts).await?;
        ensure!(
            !failed.passed() && failed.problem_ids == vec![5],
            "{failed:?}"
        );
        assert_eq!(phase_of(conn, "mig_bad").await?, Phase::Backfilled);
        let err = state::transition(conn, "mig_bad", "email", Phase::CutOver, None)
            .await
            .unwrap_err();
        expect_phase_error(err, "backfilled", "cut_over", &["passing verify"])?;
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
    /// Writes after cut-over put NULL in the plaintext column.
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
        state::transition(conn, "mig_cut", "email", Phase::CutOver, None).await?;
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
        // Backfill after cut-over is refused.
        let err = migrate::backfill(conn, &spec, &RunOptions::default(), |_| {})
            .await
            .unwrap_err();
        let (_, message) = crate_error(&err)?;
        ensure!(message.contains("cannot run after cut-over"), "{message}");
        Ok(())
    }
);

// ---------------------------------------------------------------------------------------------
// 5. Schema helpers.

backend_tests!(
    /// `migrate::schema` through a SchemaManager: add the envelope columns (a `mediumblob`
    /// on MySQL for a 100 kB plaintext) and a UNIQUE blind-index column, walk the phases,
    /// refuse dropping the plaintext before cut-over, drop it after (on SQLite only once the
    /// index on it is dropped first), purge, and rename the envelope column onto the
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

        // Dropping before cut-over is refused and drops nothing.
        let err = schema::drop_plaintext_column(
            &manager,
            "mig_legacy",
            "email",
            &["mig_legacy_email_idx"],
        )
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

        // Walk the phases for both columns.
        state::transition(conn, "mig_legacy", "email", Phase::DualWrite, None).await?;
        state::transition(conn, "mig_legacy", "notes", Phase::DualWrite, None).await?;
        let email =
            EncryptColumn::<String, LegacyEmail>::new("mig_legacy", "id", "email", "email_enc")
                .with_index("email_bidx", &LEGACY_BIDX);
        let notes =
            EncryptColumn::<String, LegacyNotes>::new("mig_legacy", "id", "notes", "notes_enc");
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
        state::transition(conn, "mig_legacy", "email", Phase::CutOver, None).await?;

        if db.backend == Backend::Sqlite {
            // SQLite cannot drop an indexed column: without the index list the drop fails
            // and the phase stays `cut_over`.
            let err = schema::drop_plaintext_column(&manager, "mig_legacy", "email", &[])
                .await
                .unwrap_err();
            eprintln!("sqlite: dropping an indexed column without its index: {err}");
            assert_eq!(phase_of(conn, "mig_legacy").await?, Phase::CutOver);
            ensure!(
                manager.has_column("mig_legacy", "email").await?,
                "email dropped"
            );
        }
        schema::drop_plaintext_column(&manager, "mig_legacy", "email", &["mig_legacy_email_idx"])
            .await?;
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
        assert_eq!(phase_of(conn, "mig_legacy").await?, Phase::Dropped);
        // A second drop is refused (already dropped).
        let err = schema::drop_plaintext_column(&manager, "mig_legacy", "email", &[])
            .await
            .unwrap_err();
        ensure!(
            matches!(
                crate_error(&err)?.0,
                Error::Phase {
                    from: "dropped",
                    ..
                }
            ),
            "{err}"
        );

        schema::purge_dropped_data(&manager, "mig_legacy").await?;
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
