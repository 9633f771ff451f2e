//! An old application instance (one that predates the migration) writing plaintext only —
//! updates, some to NULL, and inserts of new rows, never an envelope — into the three-column
//! work table during the backfill and the first rounds of verify → repair: once it stops,
//! the loop converges and every envelope and blind index carries exactly the final
//! plaintext.
//!
//! The old instance's random choices come from a seed the test prints; set
//! `MIGRATE_TEST_SEED` to repeat a run.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use encrypted_columns::keyring;
use encrypted_columns::migrate::{self, Phase, RunOptions};
use encrypted_columns_tests::backend_tests;
use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{ConnectionTrait, DatabaseConnection};

use crate::rng::{Rng, seed};
use crate::support::{a, lock_conflict, second_pool};
use crate::work_table::{self, COLUMNS, Row, check_rows, phases, read_rows, seed_value, started};

const LEGACY_ROWS: i32 = 6_000;
const LEGACY_PAUSE: Duration = Duration::from_millis(4);
/// Rounds of verify → repair while the old instance still writes.
const LIVE_ROUNDS: usize = 3;
const MAX_ROUNDS: usize = 10;

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
        let table = "mig_old";
        started(conn, table, LEGACY_ROWS).await?;
        let plan = work_table::plan(table);
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
