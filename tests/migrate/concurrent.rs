//! The backfill and key rotation while the application keeps writing: four writer tasks over
//! 20,000 rows on PostgreSQL, MariaDB and SQLite, and an outside writer at ~150 writes per
//! second against SQLite's single write lock. Every row ends up opening to its final value,
//! blind indexes included.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use encrypted_columns::keyring;
use encrypted_columns::migrate::{self, Phase, RotateColumn, RunOptions, state};
use encrypted_columns::{Encrypted, KeyId, Keyring};
use encrypted_columns_tests::{Backend, TestDb, backend_tests};
use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{ConnectionTrait, DatabaseConnection, Value};
use tokio::task::JoinHandle;

use crate::email_table::{
    Row, check_rows, check_table, create_table, dual_write, index_of, read_rows, seed_email,
    seed_sealed, seeded_emails, started_table,
};
use crate::keys::Keys;
use crate::rng::{Rng, seed};
use crate::support::{Res, a, old_instance_write, phase_of, second_pool};

email_context!(PatientEmail, PATIENT_BIDX, "mig_patients");
email_context!(RotEmail, ROT_BIDX, "mig_rot");
email_context!(BusyEmail, BUSY_BIDX, "mig_busy");

const CONCURRENT_ROWS: i32 = 20_000;
const CONCURRENT_BATCH: u64 = 200;
const WRITERS: i32 = 4;
const WRITER_PAUSE: Duration = Duration::from_millis(2);

/// The migration's options under the writers: batches of [`CONCURRENT_BATCH`], 2 ms apart.
fn under_writers() -> RunOptions {
    RunOptions {
        batch_size: CONCURRENT_BATCH,
        throttle: Some(Duration::from_millis(2)),
        ..RunOptions::default()
    }
}

/// What one writer task did: how many updates it made (and how many of them while the
/// migration was still running), and the last value it wrote to each row it touched.
struct WriterLog {
    updates: u64,
    during: u64,
    last: HashMap<i32, Option<String>>,
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

/// [`WRITERS`] tasks writing random rows of a [`CONCURRENT_ROWS`]-row table (see
/// [`pick_row`]) until stopped, while the migration reports its cursor to them.
struct Writers {
    pool: DatabaseConnection,
    running: Arc<AtomicBool>,
    cursor: Arc<AtomicI64>,
    tasks: Vec<JoinHandle<Result<WriterLog, String>>>,
}

impl Writers {
    /// Starts the writers of test `test` on a pool of their own, under `ring` where given (a
    /// spawned task does not inherit a scope; without one it uses the process-wide keyring,
    /// as the migration does). Writer `k` draws from `Rng(seed ^ ((k + 1) * salt))` (the
    /// test's [`seed`]) and writes `"{tag}{k}-{n}@Example.org"` (NULL one time in 16) with
    /// `write(conn, id, value)`, pausing [`WRITER_PAUSE`] in between.
    async fn start<F, Fut>(
        (db, test): (&TestDb, &str),
        ring: Option<Arc<Keyring>>,
        (salt, tag): (u64, &'static str),
        write: F,
    ) -> Res<Writers>
    where
        F: Fn(DatabaseConnection, i32, Option<String>) -> Fut + Copy + Send + 'static,
        Fut: Future<Output = Res<()>> + Send,
    {
        let seed = seed(test, db.backend);
        let pool = second_pool(db, WRITERS as u32).await?;
        let running = Arc::new(AtomicBool::new(true));
        let cursor = Arc::new(AtomicI64::new(0));
        let mut tasks = Vec::new();
        for k in 0..WRITERS {
            let (conn, running, cursor) = (pool.clone(), running.clone(), cursor.clone());
            let mut rng = Rng(seed ^ ((k as u64 + 1) * salt));
            let task = async move {
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
                        (!rng.one_in(16)).then(|| format!("{tag}{k}-{}@Example.org", log.updates));
                    write(conn.clone(), id, value.clone())
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
            };
            tasks.push(match &ring {
                Some(ring) => tokio::spawn(keyring::scope(Arc::clone(ring), task)),
                None => tokio::spawn(task),
            });
        }
        Ok(Writers {
            pool,
            running,
            cursor,
            tasks,
        })
    }

    /// The migration's progress callback: tells the writers where its cursor is.
    fn track(&self) -> impl Fn(&migrate::Progress) + use<> {
        let cursor = Arc::clone(&self.cursor);
        move |p| cursor.store(p.cursor, Ordering::Release)
    }

    /// Stops the writers and closes their pool: the last value they wrote to each row they
    /// touched, their updates, and how many of those they made while the migration still
    /// ran.
    async fn stop(self) -> Res<(HashMap<i32, Option<String>>, u64, u64)> {
        self.running.store(false, Ordering::Release);
        let mut final_values: HashMap<i32, Option<String>> = HashMap::new();
        let (mut updates, mut during) = (0, 0);
        for task in self.tasks {
            let log = task.await??;
            updates += log.updates;
            during += log.during;
            final_values.extend(log.last);
        }
        self.pool.close().await?;
        Ok((final_values, updates, during))
    }
}

backend_tests!(
    /// The backfill over 20,000 rows in batches of 200 while four tasks keep dual-writing
    /// random rows (half of them just ahead of the cursor, some to NULL): the backfill never
    /// overwrites a writer's value, verify passes, and every row's envelope and blind index
    /// match its final plaintext — the writer's last value, or the seed.
    backfill_under_concurrent_dual_writes,
    |db: &TestDb| async move {
        let conn = &db.conn;
        let spec =
            started_table::<PatientEmail>(conn, "mig_patients", CONCURRENT_ROWS, &PATIENT_BIDX)
                .await?;
        state::transition(conn, "mig_patients", "email", Phase::DualWrite, None).await?;

        // Spawned tasks use the process-wide keyring (key 1), as the backfill does.
        let writers = Writers::start(
            (db, "backfill_under_concurrent_dual_writes"),
            None,
            (0x1000_0001, "W"),
            |conn, id, value| async move {
                dual_write::<PatientEmail>(&conn, "mig_patients", &PATIENT_BIDX, id, value).await
            },
        )
        .await?;

        let outcome = migrate::backfill(conn, &spec, &under_writers(), writers.track()).await;
        let (final_values, updates, during) = writers.stop().await?;
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
        create_table(conn, "mig_rot", false, &ROT_BIDX).await?;
        let keys = Keys::generate();
        let old = keys.ring(1, 1)?;
        let new = Arc::new(keys.rotating_to(2, 2)?);
        let retired = keys.ring(2, 2)?;

        // Seed: every row sealed and indexed under the old keys.
        seed_sealed::<RotEmail>(
            conn,
            "mig_rot",
            &ROT_BIDX,
            CONCURRENT_ROWS,
            seed_email,
            |_| &old,
            |_| false,
        )
        .await?;
        let before = migrate::key_usage(conn, "mig_rot", "email_enc").await?;
        assert_eq!(before.keys().copied().collect::<Vec<_>>(), vec![KeyId(1)]);

        // A spawned task does not inherit a scope: give each writer the new keyring.
        let writers = Writers::start(
            (db, "rotation_under_concurrent_writes"),
            Some(Arc::clone(&new)),
            (0x2000_0003, "R"),
            |conn, id, value| async move {
                // The encrypted path after cut-over: envelope and index, no plaintext.
                let ring = keyring::current()?;
                let enc = value
                    .clone()
                    .map(Encrypted::<String, RotEmail>::new)
                    .transpose()?;
                let bidx = index_of(&ROT_BIDX, &ring, &value)?;
                let update = Query::update()
                    .table(a("mig_rot"))
                    .value(
                        a("email_enc"),
                        Value::Bytes(enc.map(|e| e.envelope().to_vec())),
                    )
                    .value(a("email_bidx"), Value::Bytes(bidx))
                    .and_where(Expr::col(a("id")).eq(id))
                    .to_owned();
                conn.execute(&update).await?;
                Res::Ok(())
            },
        )
        .await?;

        let spec = RotateColumn::<String, RotEmail>::new("mig_rot", "id", "email_enc")
            .with_index("email_bidx", &ROT_BIDX);
        let outcome = keyring::scope(Arc::clone(&new), async {
            migrate::rotate(conn, &spec, &under_writers(), writers.track()).await
        })
        .await;
        let (final_values, updates, during) = writers.stop().await?;
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
        let mut expected = seeded_emails(CONCURRENT_ROWS);
        expected.extend(final_values.clone());
        assert_eq!(expected.len(), CONCURRENT_ROWS as usize);
        check_table::<RotEmail>(conn, ("mig_rot", &ROT_BIDX), &retired, &expected).await?;
        let values = expected.values().filter(|v| v.is_some()).count();
        eprintln!(
            "{}: {} rows ({values} with a value), {} batches; rotation resealed {}, \
             reindexed {}; writers: {updates} updates ({during} during the rotation) on {} \
             distinct rows",
            db.backend,
            expected.len(),
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
        let spec = started_table::<BusyEmail>(conn, "mig_busy", BUSY_ROWS, &BUSY_BIDX).await?;
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
        let mut expected = seeded_emails(BUSY_ROWS);
        expected.extend(log.last);
        assert_eq!(expected.len(), BUSY_ROWS as usize);
        let ring = keyring::current()?;
        check_table::<BusyEmail>(conn, ("mig_busy", &BUSY_BIDX), &ring, &expected).await?;
        writer_db.close().await?;
        Ok(())
    }
);
