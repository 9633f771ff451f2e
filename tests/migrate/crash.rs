//! A `migrate_child` process SIGKILLed at random moments, then the step resumed:
//!
//! 1. the backfill, twelve times, while the parent writes meanwhile (dual writes, and
//!    plaintext-only writes of an old instance): no chunk a claim records as done is lost,
//!    no envelope is stale, and backfill → verify → repair → verify ends with every value
//!    sealed;
//! 2. drop or purge of a three-column table, at several moments, each time resumed by a fresh
//!    child: phases end `purged`, the plaintext columns are gone and every envelope opens to
//!    the value its plaintext had.
//!
//! The random choices come from a seed the test prints; set `MIGRATE_TEST_SEED` to repeat a
//! run.

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::process::{Child, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use encrypted_columns::keyring;
use encrypted_columns::migrate::{self, Phase, RunOptions, state};
use encrypted_columns_tests::backend_tests;
use sea_orm::sea_query::{Expr, ExprTrait, Order, Query};
use sea_orm::{ConnectionTrait, DbBackend, Statement};

use crate::child::{Proc, child_command, child_keys, count, counts, describe, work_child};
use crate::email_table::{Row, check_rows, dual_write, read_rows, seed_email, started_table};
use crate::plans::{CRASH_BIDX, CrashEmail, crash_column};
use crate::rng::{Rng, seed};
use crate::support::{Res, a, backfill_claims, batches, phase_of};
use crate::work_table::{self, COLUMNS, backfill_and_verify, phases, started};

const CRASH_ROWS: i32 = 5_000;
const CRASH_TRIALS: usize = 12;

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
    let claims = backfill_claims(conn, table, None).await?;
    let done_chunks = claims
        .iter()
        .filter(|c| c.done)
        .map(|c| (c.lo, c.hi))
        .collect();
    let open_claims = claims.iter().filter(|c| !c.done).count();
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
        started_table::<CrashEmail>(conn, "mig_crash", CRASH_ROWS, &CRASH_BIDX).await?;
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
        let spec = crash_column();
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
// Drop and purge.

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
            started(conn, &table, DROP_ROWS).await?;
            let plan = work_table::plan(&table);
            keyring::scope(Arc::clone(&keys.ring), async {
                backfill_and_verify(conn, &plan).await?;
                migrate::cut_over(conn, &plan, &batches(500)).await?;
                Res::Ok(())
            })
            .await
            .map_err(|e| format!("trial {trial} setup: {e}"))?;
            let before = work_table::read_rows(conn, &table, true).await?;

            let args = ["--step", "finish", "--batch-size", "500"];
            let child = work_child(db, &keys, &table, &args).spawn()?;
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

            let resumed = Proc::spawn(work_child(db, &keys, &table, &args))?
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
            let after = work_table::read_rows(conn, &table, false).await?;
            ensure!(
                after.len() == before.len(),
                "trial {trial}: {} rows before, {} after",
                before.len(),
                after.len()
            );
            let plain: HashMap<i32, [Option<String>; 3]> =
                before.into_iter().map(|r| (r.id, r.plain)).collect();
            work_table::check_rows(&after, &keys.ring, |r, c| {
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
