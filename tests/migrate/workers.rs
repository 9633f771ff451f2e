//! Cooperating migration workers (issue 10), with `migrate_child` processes as the workers,
//! over one three-column table:
//!
//! 1. two and four backfill processes started together: every process exits 0, their
//!    `sealed` counts add up to exactly the values to seal, nothing is skipped, and the work
//!    was shared;
//! 2. one of two backfill processes SIGKILLed while it holds a chunk: the survivor and a
//!    restarted process finish, the dead worker's chunk is taken over after its lease, and the
//!    counts still add up exactly;
//! 3. two repair processes sharing a pass over a verified table, with exact counts.

use std::collections::HashMap;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use encrypted_columns::keyring;
use encrypted_columns::migrate::{Phase, WORK_TABLE};
use encrypted_columns_tests::{Backend, TestDb, TestResult, backend_tests};
use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr};

use crate::child::{ChildKeys, Proc, child_keys, count, counts, describe, work_child};
use crate::support::{
    ClaimRow, Res, a, backfill_claims, lock_conflict, now_ms, old_instance_write, second_pool,
};
use crate::work_table::{
    COLUMNS, backfill_and_verify, phases, plan, rows_done, seed_value, seeded_values, started,
    verify_and_check,
};

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

/// Runs `n` children `--table table args` that connect, then start together `delay_ms`
/// from now (`--start-at-ms`), and reads each one's output with `report` (naming every
/// child's output if one fails). Also returns the time from spawning them to the last exit.
async fn run_together<T>(
    db: &TestDb,
    keys: &ChildKeys,
    (table, args): (&str, &[&str]),
    n: usize,
    delay_ms: u64,
    report: fn(&Output) -> Res<T>,
) -> Res<(Vec<T>, Duration)> {
    let start_at = (now_ms() + delay_ms).to_string();
    let mut args = args.to_vec();
    args.extend(["--start-at-ms", &start_at]);
    let began = Instant::now();
    let children = (0..n)
        .map(|_| Proc::spawn(work_child(db, keys, table, &args)))
        .collect::<Res<Vec<_>>>()?;
    let mut outputs = Vec::new();
    for child in children {
        outputs.push(child.wait().await?);
    }
    let elapsed = began.elapsed();
    let summary: Vec<String> = outputs.iter().map(describe).collect();
    let reports = outputs
        .iter()
        .map(report)
        .collect::<Res<Vec<_>>>()
        .map_err(|e| format!("{e}; all children: {summary:#?}"))?;
    Ok((reports, elapsed))
}

/// The work table `mig_work` of `rows` seeded rows, every column in `dual_write`; and the
/// children's keys.
async fn started_with_keys(conn: &DatabaseConnection, rows: i32) -> Res<(&'static str, ChildKeys)> {
    let keys = child_keys()?;
    started(conn, "mig_work", rows).await?;
    Ok(("mig_work", keys))
}

/// After the backfill: the columns' `rows_done` add up to exactly `expected`, and every
/// column is `backfilled`.
async fn backfilled_exactly(conn: &impl ConnectionTrait, table: &str, expected: u64) -> TestResult {
    let done = rows_done(conn, table).await?;
    ensure!(done == expected as i64, "rows_done {done} ≠ {expected}");
    let now = phases(conn, table).await?;
    ensure!(
        now == [Phase::Backfilled; 3],
        "phases after the backfill: {now:?}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Concurrent backfill processes.

const SHARED_ROWS: i32 = 12_000;
const SHARED_BATCH: &str = "200";
const LEASE_MS: &str = "2000";

/// `workers` backfill processes over [`SHARED_ROWS`] rows × 3 columns, released together.
async fn concurrent_backfills(db: &TestDb, workers: usize) -> TestResult {
    let conn = &db.conn;
    let (table, keys) = started_with_keys(conn, SHARED_ROWS).await?;
    let expected = seeded_values(1, i64::from(SHARED_ROWS));

    let args = ["--batch-size", SHARED_BATCH, "--lease-ms", LEASE_MS];
    let (reports, elapsed) =
        run_together(db, &keys, (table, &args), workers, 1_500, backfill_report).await?;
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
    backfilled_exactly(conn, table, expected).await?;

    let (verified, values) =
        verify_and_check(conn, table, &keys.ring, |r, c| seed_value(c, r.id)).await?;
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
// A worker killed mid-run.

const KILL_ROWS: i32 = 10_000;

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
        let (table, keys) = started_with_keys(conn, KILL_ROWS).await?;
        let expected = seeded_values(1, i64::from(KILL_ROWS));
        let args = ["--batch-size", "150", "--lease-ms", LEASE_MS, "--throttle-ms", "5"];
        let start_at = (now_ms() + 1_000).to_string();
        let mut with_start: Vec<&str> = args.to_vec();
        with_start.extend(["--start-at-ms", &start_at]);
        let mut victim = Proc::spawn(work_child(db, &keys, table, &with_start))?;
        let survivor = Proc::spawn(work_child(db, &keys, table, &with_start))?;
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
                let claims = backfill_claims(conn, table, Some(pid)).await?;
                let out = victim.wait().await?;
                return Err(format!(
                    "the victim exited before it could be killed mid-chunk (claims {claims:?}): \
                     {}",
                    describe(&out)
                )
                .into());
            }
            let claims = backfill_claims(conn, table, Some(pid)).await?;
            if ready(&claims, work_cursor(conn, table).await?) {
                signal(pid, "STOP")?;
                tokio::time::sleep(Duration::from_millis(50)).await;
                // SQLite (rollback journal): frozen in a commit, it holds the lock readers need.
                let look = async {
                    Ok::<_, DbErr>((
                        backfill_claims(&look_db, table, Some(pid)).await?,
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
        let left = backfill_claims(conn, table, Some(pid)).await?;
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
        let restarted = Proc::spawn(work_child(db, &keys, table, &args))?;
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
        backfilled_exactly(conn, table, expected).await?;
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
        let (_, values) =
            verify_and_check(conn, table, &keys.ring, |r, c| seed_value(c, r.id)).await?;
        ensure!(values == expected, "{values} values open, expected {expected}");
        Ok(())
    }
);

// ---------------------------------------------------------------------------------------------
// Concurrent repair processes.

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
        let (table, keys) = started_with_keys(conn, REPAIR_ROWS).await?;
        keyring::scope(Arc::clone(&keys.ring), backfill_and_verify(conn, &plan(table))).await?;
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
            old_instance_write(conn, table, COLUMNS[col], id, value.as_deref()).await?;
            last.insert((id, col), value);
        }

        let args = ["--step", "repair", "--batch-size", "100", "--lease-ms", LEASE_MS];
        let (reports, elapsed) =
            run_together(db, &keys, (table, &args), 2, 1_000, repair_counts).await?;
        eprintln!(
            "{}: 2 repair processes over {REPAIR_ROWS} rows ({changed} changed values) in \
             {elapsed:?}: (repaired, skipped, batches, finished) {reports:?}",
            db.backend
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
        // Verify passes again, and every envelope carries the new plaintext.
        verify_and_check(conn, table, &keys.ring, |r, c| match last.get(&(r.id, c)) {
            Some(v) => v.clone(),
            None => seed_value(c, r.id),
        })
        .await?;
        Ok(())
    }
);
