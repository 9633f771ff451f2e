//! Runs one step of `encrypted_columns::migrate` in a process of its own and exits: the
//! worker that the `migrate` test binary (tests/migrate/) starts several of at once, or kills
//! with SIGKILL at random moments.
//!
//! ```text
//! migrate_child --url <database URL> [--batch-size N] [--throttle-ms M] [--no-keyring]
//!               [--table NAME [--columns 1..=3]] [--step backfill|repair|drop|purge|finish]
//!               [--lease-ms L] [--start-at-ms T]
//! ```
//!
//! Without `--table` it backfills `mig_crash.email` → `email_enc` (+ `email_bidx`), for
//! `crash` in tests/migrate/crash.rs. With `--table NAME` the plan is the first `--columns`
//! (default 3) of `email` (+ blind index `email_bidx`), `phone`, `notes` of table `NAME`, each
//! sealed into `<column>_enc` under the column contexts of `mig_work` whatever the physical
//! table is called. Both plans are tests/migrate/plans.rs, which the test binary compiles too.
//!
//! `--step` (default `backfill`): `repair`; `drop` (drop the plaintext columns); `purge`;
//! `finish` (drop, then purge). `--lease-ms` sets the claim lease of backfill and repair.
//! `--start-at-ms` (milliseconds since the Unix epoch): connect first, then wait until then,
//! so that several children start their step together.
//!
//! Keys come from the environment (`ENCRYPTED_COLUMNS_KEYS`,
//! `ENCRYPTED_COLUMNS_BLIND_INDEX_KEYS`, as in production). `--no-keyring` installs none, to
//! check the library's own error. Before each step it prints `start step=<step>` to stdout;
//! on success it prints one line of `key=value` counts (`step=… finished=… sealed=… rows=…
//! skipped=… batches=… taken_over=… remaining=…`, or `repaired=…`, `dropped=…`,
//! `purged=…`) and exits 0; on error it prints the error (never plaintext or keys) to
//! stderr and exits 2.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use encrypted_columns::migrate::{self, EncryptTable, RunOptions};
use encrypted_columns::{Keyring, keyring};
use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbErr};

#[path = "../migrate/plans.rs"]
mod plans;

use plans::{crash_column, work_plan};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Backfill,
    Repair,
    Drop,
    Purge,
    /// Drop, then purge.
    Finish,
}

struct Args {
    url: String,
    batch_size: u64,
    throttle: Option<Duration>,
    keyring: bool,
    table: Option<String>,
    columns: usize,
    step: Step,
    lease: Option<Duration>,
    start_at_ms: Option<u64>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        url: String::new(),
        batch_size: 20,
        throttle: None,
        keyring: true,
        table: None,
        columns: 3,
        step: Step::Backfill,
        lease: None,
        start_at_ms: None,
    };
    let number = |name: &str, text: String| -> Result<u64, String> {
        text.parse().map_err(|e| format!("{name}: {e}"))
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--url" => args.url = value("--url")?,
            "--batch-size" => args.batch_size = number("--batch-size", value("--batch-size")?)?,
            "--throttle-ms" => {
                let ms = number("--throttle-ms", value("--throttle-ms")?)?;
                args.throttle = (ms > 0).then(|| Duration::from_millis(ms));
            }
            "--no-keyring" => args.keyring = false,
            "--table" => args.table = Some(value("--table")?),
            "--columns" => {
                let n = number("--columns", value("--columns")?)?;
                if !(1..=3).contains(&n) {
                    return Err(format!("--columns: {n} is outside 1..=3"));
                }
                args.columns = n as usize;
            }
            "--step" => {
                args.step = match value("--step")?.as_str() {
                    "backfill" => Step::Backfill,
                    "repair" => Step::Repair,
                    "drop" => Step::Drop,
                    "purge" => Step::Purge,
                    "finish" => Step::Finish,
                    other => return Err(format!("--step: unknown step {other:?}")),
                }
            }
            "--lease-ms" => {
                args.lease = Some(Duration::from_millis(number(
                    "--lease-ms",
                    value("--lease-ms")?,
                )?))
            }
            "--start-at-ms" => {
                args.start_at_ms = Some(number("--start-at-ms", value("--start-at-ms")?)?)
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if args.url.is_empty() {
        return Err("--url is required".into());
    }
    if args.table.is_none() && args.step != Step::Backfill {
        return Err("--step needs --table (the default plan only backfills)".into());
    }
    Ok(args)
}

/// Prints the marker a parent waits for before it times a kill, then runs `step`.
async fn announced<T>(
    name: &str,
    step: impl Future<Output = Result<T, DbErr>>,
) -> Result<T, String> {
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "start step={name}");
        let _ = out.flush();
    }
    step.await.map_err(|e| e.to_string())
}

async fn run(args: Args) -> Result<String, String> {
    if args.keyring {
        keyring::install(Keyring::from_env().map_err(|e| e.to_string())?);
    }
    let mut connect = ConnectOptions::new(args.url.clone());
    connect.max_connections(2).sqlx_logging(false);
    let db = Database::connect(connect)
        .await
        .map_err(|e| format!("connecting: {e}"))?;
    let plan = match &args.table {
        None => EncryptTable::from(crash_column()),
        Some(table) => work_plan(table, args.columns),
    };
    let mut options = RunOptions {
        batch_size: args.batch_size,
        throttle: args.throttle,
        ..RunOptions::default()
    };
    if let Some(lease) = args.lease {
        options.lease = lease;
    }
    if let Some(at) = args.start_at_ms {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        tokio::time::sleep(Duration::from_millis(at.saturating_sub(now))).await;
    }
    let line = step(&db, &plan, &options, args.step).await;
    let _ = db.close().await;
    line
}

async fn step(
    db: &DatabaseConnection,
    plan: &EncryptTable,
    options: &RunOptions,
    step: Step,
) -> Result<String, String> {
    match step {
        Step::Backfill => {
            let r = announced("backfill", migrate::backfill(db, plan, options, |_| {})).await?;
            Ok(format!(
                "step=backfill finished={} sealed={} rows={} skipped={} batches={} \
                 taken_over={} remaining={} already_done={}",
                r.finished,
                r.sealed,
                r.rows,
                r.skipped,
                r.batches,
                r.taken_over,
                r.remaining,
                r.already_done.len()
            ))
        }
        Step::Repair => {
            let r = announced("repair", migrate::repair(db, plan, options, |_| {})).await?;
            Ok(format!(
                "step=repair finished={} repaired={} rows={} skipped={} batches={}",
                r.finished, r.repaired, r.rows, r.skipped, r.batches
            ))
        }
        Step::Drop | Step::Purge | Step::Finish => {
            let mut parts = vec![format!(
                "step={}",
                match step {
                    Step::Drop => "drop",
                    Step::Purge => "purge",
                    _ => "finish",
                }
            )];
            if step != Step::Purge {
                let r = announced("drop", migrate::drop_plaintext(db, plan, &[], options)).await?;
                parts.push(format!(
                    "dropped={} recorded={} already={} rows_checked={}",
                    r.dropped.len(),
                    r.recorded.len(),
                    r.already.len(),
                    r.rows_checked
                ));
            }
            if step != Step::Drop {
                let purged = announced("purge", migrate::purge(db, plan)).await?;
                parts.push(format!("purged={}", purged.len()));
            }
            Ok(parts.join(" "))
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let outcome = match parse_args() {
        Ok(args) => run(args).await,
        Err(e) => Err(e),
    };
    match outcome {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("migrate_child: {e}");
            ExitCode::from(2)
        }
    }
}
