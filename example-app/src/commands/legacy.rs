//! `clinic migrate-legacy`: encrypt the plaintext `legacy_patients` table while it stays in
//! use, one checked phase at a time (encrypted_columns::migrate).

use std::time::Duration;

use encrypted_columns::migrate::dual::ReadPolicy;
use encrypted_columns::migrate::{self, EncryptColumn, EncryptTable, Phase, Progress, RunOptions};
use encrypted_columns::{Error as SealError, keyring};
use indicatif::{ProgressBar, ProgressStyle};
use sea_orm::sea_query::{Expr, ExprTrait, Func, Query};
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ConnectionTrait, DatabaseConnection};
use sea_orm_migration::SchemaManager;

use crate::clinic::{Clinic, db_err};
use crate::connect::connect;
use crate::entities::legacy_patient::{self, ctx};
use crate::keys;
use crate::output::say;

/// The table being migrated.
pub const TABLE: &str = "legacy_patients";
/// Plaintext columns, each with its encrypted companion.
pub const COLUMNS: [(&str, &str); 3] = [
    ("full_name", "full_name_enc"),
    ("email", "email_enc"),
    ("phone", "phone_enc"),
];

/// A `migrate-legacy` step.
#[derive(Debug, Clone, Copy)]
pub enum Step {
    /// Show each column's phase and what is left.
    Status,
    /// Insert fake legacy patients, written the way the current phase requires.
    Seed { rows: u32 },
    /// Record that every writer now dual-writes.
    DualWrite,
    /// Seal the remaining values (any number of processes may run it at once).
    Backfill {
        batch_size: u64,
        throttle_ms: u64,
        lease_secs: u64,
    },
    /// Check every row.
    Verify,
    /// Re-seal what verify reports, then verify again.
    Repair { batch_size: u64, lease_secs: u64 },
    /// Switch reads to encrypted-only, after a re-check under lock.
    Cutover,
    /// Drop the plaintext columns (after a re-check under lock) and purge them.
    Drop,
}

/// The three columns, moved through every phase together.
pub fn plan() -> EncryptTable {
    EncryptTable::new(TABLE, "id")
        .column(EncryptColumn::<String, ctx::FullNameEnc>::new(
            TABLE,
            "id",
            "full_name",
            "full_name_enc",
        ))
        .column(
            EncryptColumn::<String, ctx::EmailEnc>::new(TABLE, "id", "email", "email_enc")
                .with_index("email_bidx", legacy_patient::Entity::email_bidx_index()),
        )
        .column(EncryptColumn::<String, ctx::PhoneEnc>::new(
            TABLE,
            "id",
            "phone",
            "phone_enc",
        ))
}

/// Connects, loads keys and checks the schema is current.
pub async fn open(database_url: Option<&str>) -> Result<DatabaseConnection, String> {
    let source = keys::source().await?;
    let url = database_url.unwrap_or(crate::commands::DEFAULT_DATABASE_URL);
    let db = connect(url).await?;
    Clinic::check_schema(&db).await?;
    keyring::install(keys::resolve(source, &db).await?);
    Ok(db)
}

/// Runs one step.
pub async fn run(database_url: Option<&str>, step: Step) -> Result<(), String> {
    let db = open(database_url).await?;
    run_on(&db, step).await
}

fn options(batch_size: u64, throttle_ms: u64, lease_secs: u64) -> RunOptions {
    RunOptions {
        batch_size,
        throttle: (throttle_ms > 0).then(|| Duration::from_millis(throttle_ms)),
        lease: Duration::from_secs(lease_secs),
        ..RunOptions::default()
    }
}

/// A progress bar on stderr (hidden when stderr is not a terminal).
fn bar(what: &str) -> ProgressBar {
    let bar = ProgressBar::new(0).with_message(what.to_owned());
    if let Ok(style) =
        ProgressStyle::with_template("{msg:>10} [{bar:30}] {pos}/{len} rows  {per_sec}  eta {eta}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Runs one step on an open, migrated database with the keyring installed (the demo).
pub async fn run_on(db: &DatabaseConnection, step: Step) -> Result<(), String> {
    let db = db.clone();
    match step {
        Step::Status => status(&db).await,
        Step::Seed { rows } => seed(&db, rows).await,
        Step::DualWrite => {
            let moved = migrate::dual_write(&db, plan()).await.map_err(db_err)?;
            if moved.is_empty() {
                say!("Every column is already past dual_write; nothing to do.");
            } else {
                say!(
                    "Writers now fill plaintext and encrypted columns together (phase dual_write: {}).",
                    moved.join(", ")
                );
            }
            say!("Next: `clinic migrate-legacy backfill`.");
            Ok(())
        }
        Step::Backfill {
            batch_size,
            throttle_ms,
            lease_secs,
        } => backfill(&db, &options(batch_size, throttle_ms, lease_secs)).await,
        Step::Verify => {
            if verify(&db).await? {
                say!("{}", next_step(&db).await?);
                Ok(())
            } else {
                Err(
                    "verify found values that do not match: run `clinic migrate-legacy repair`"
                        .into(),
                )
            }
        }
        Step::Repair {
            batch_size,
            lease_secs,
        } => repair(&db, &options(batch_size, 0, lease_secs)).await,
        Step::Cutover => {
            let report = migrate::cut_over(&db, plan(), &RunOptions::default())
                .await
                .map_err(db_err)?;
            if report.moved.is_empty() {
                say!(
                    "Already cut over: {}; nothing to do.",
                    report.already.join(", ")
                );
            } else {
                say!(
                    "Re-checked {} row(s) with writers held off: every value matches. Cut over: {}.",
                    report.check.rows,
                    report.moved.join(", ")
                );
                say!(
                    "Reads are now encrypted-only and fail closed; writes leave the plaintext columns NULL."
                );
            }
            say!(
                "Next: `clinic migrate-legacy drop` (in your app: a migration calling migrate::schema::drop_plaintext_column)."
            );
            Ok(())
        }
        Step::Drop => drop(&db).await,
    }
}

async fn backfill(db: &DatabaseConnection, options: &RunOptions) -> Result<(), String> {
    let bar = bar("backfill");
    let report = migrate::backfill(db, plan(), options, |p: &Progress| {
        bar.set_length(p.total);
        bar.set_position(p.done + p.skipped);
    })
    .await
    .map_err(db_err)?;
    bar.finish_and_clear();
    if !report.already_done.is_empty() {
        say!(
            "Already past the backfill, left alone: {}.",
            report.already_done.join(", ")
        );
    }
    if report.by_column.is_empty() {
        say!("Next: `clinic migrate-legacy verify`.");
        return Ok(());
    }
    for (column, sealed) in &report.by_column {
        say!("{TABLE}.{column}: sealed {sealed} value(s).");
    }
    say!(
        "This worker sealed {} value(s) in {} row(s) in {} batch(es){}{}.",
        report.sealed,
        report.rows,
        report.batches,
        if report.skipped > 0 {
            format!(
                "; {} changed by the application meanwhile and left to its dual write",
                report.skipped
            )
        } else {
            String::new()
        },
        if report.taken_over > 0 {
            format!(
                "; {} batch(es) taken over from a worker that stopped",
                report.taken_over
            )
        } else {
            String::new()
        }
    );
    if report.finished {
        say!("Phase backfilled.");
        if report.remaining > 0 {
            say!(
                "{} row(s) still hold plaintext without an envelope: written plaintext-only since the backfill passed them (an instance that does not dual-write?). Verify reports them; repair seals them.",
                report.remaining
            );
        }
        say!("Next: `clinic migrate-legacy verify`.");
    } else {
        say!("Stopped before the end; run the backfill again to continue.");
    }
    Ok(())
}

/// What to run after a passing verify, from the phases the columns are in now.
async fn next_step(db: &DatabaseConnection) -> Result<&'static str, String> {
    let mut phases = Vec::new();
    for (plain, _) in COLUMNS {
        let state = migrate::state::load(db, TABLE, plain)
            .await
            .map_err(db_err)?;
        phases.push(state.map(|s| s.phase));
    }
    Ok(
        if phases
            .iter()
            .all(|p| matches!(p, Some(Phase::Dropped | Phase::Purged)))
        {
            "Nothing left to do: the plaintext columns are dropped (`drop` again finishes a purge)."
        } else if phases.contains(&Some(Phase::Verified)) {
            "Next: `clinic migrate-legacy cutover`."
        } else {
            "Next: `clinic migrate-legacy drop`."
        },
    )
}

/// Prints verify's findings; returns whether every value matched.
async fn verify(db: &DatabaseConnection) -> Result<bool, String> {
    let report = migrate::verify(db, plan(), &RunOptions::default())
        .await
        .map_err(db_err)?;
    for column in &report.columns {
        let phase = column.phase.map_or("-", |p| p.as_str());
        if column.passed() {
            say!(
                "{TABLE}.{}: {} row(s) checked, {} open to exactly their plaintext, {} NULL in both{}; phase {}.",
                column.column,
                report.rows,
                column.matching,
                column.both_null,
                if column.encrypted_only > 0 {
                    format!(
                        ", {} encrypted only (written since cut-over)",
                        column.encrypted_only
                    )
                } else {
                    String::new()
                },
                match (report.passed(), phase) {
                    (true, "backfilled") => "verified",
                    (false, "verified") => "backfilled",
                    (_, phase) => phase,
                }
            );
        } else {
            say!(
                "{TABLE}.{}: {} row(s) checked: {} without envelope, {} mismatched, {} with a wrong index.",
                column.column,
                report.rows,
                column.missing,
                column.mismatched,
                column.index_mismatched
            );
        }
    }
    if !report.skipped.is_empty() {
        say!(
            "Already dropped, not checked: {}.",
            report.skipped.join(", ")
        );
    }
    if !report.passed() {
        let demoted = report
            .columns
            .iter()
            .any(|c| c.phase == Some(Phase::Verified));
        say!(
            "{} row(s) do not match (ids: {}){}.",
            report.problem_rows,
            report.listed_ids(),
            if demoted {
                "; columns that were verified are back in `backfilled`, so cut-over waits"
            } else {
                ""
            }
        );
    }
    Ok(report.passed())
}

/// Rounds of repair and verify until verify passes, or until a round fixes no more than
/// the writers broke again meanwhile.
const REPAIR_ROUNDS: usize = 5;

async fn repair(db: &DatabaseConnection, options: &RunOptions) -> Result<(), String> {
    let mut last_problems = u64::MAX;
    for round in 1..=REPAIR_ROUNDS {
        let bar = bar("repair");
        let report = migrate::repair(db, plan(), options, |p: &Progress| {
            bar.set_length(p.total);
            bar.set_position(p.done);
        })
        .await
        .map_err(db_err)?;
        bar.finish_and_clear();
        say!(
            "Repair round {round}: re-sealed {} value(s) in {} row(s){}.",
            report.repaired,
            report.rows,
            if report.skipped > 0 {
                format!(
                    "; {} changed by the application meanwhile, left for the next round",
                    report.skipped
                )
            } else {
                String::new()
            }
        );
        if !report.finished {
            return Err("repair stopped before the end of the table; run it again".into());
        }
        let check = migrate::verify(db, plan(), &RunOptions::default())
            .await
            .map_err(db_err)?;
        if check.passed() {
            say!(
                "Verify: {} row(s) checked, every value matches.",
                check.rows
            );
            say!("{}", next_step(db).await?);
            return Ok(());
        }
        say!(
            "Verify: {} row(s) still do not match (ids: {}).",
            check.problem_rows,
            check.listed_ids()
        );
        if check.problem_rows >= last_problems {
            return Err(format!(
                "repair is not converging: {} row(s) were written again without envelopes while it ran; some instance still writes plaintext only. Finish deploying the dual-writing code everywhere, then repair again",
                check.problem_rows
            ));
        }
        last_problems = check.problem_rows;
    }
    Err(format!(
        "values still do not match after {REPAIR_ROUNDS} rounds of repair: writers keep changing them without envelopes; finish the rolling deploy, then repair again"
    ))
}

async fn drop(db: &DatabaseConnection) -> Result<(), String> {
    let manager = SchemaManager::new(db);
    let report = migrate::schema::drop_plaintext_column(&manager, plan(), &[])
        .await
        .map_err(db_err)?;
    for column in &report.dropped {
        say!("Dropped {TABLE}.{column}: only its envelope remains.");
    }
    if !report.dropped.is_empty() {
        say!(
            "Checked {} row(s) under an exclusive lock first: no plaintext without its envelope.",
            report.rows_checked
        );
    }
    for column in &report.recorded {
        say!("{TABLE}.{column} was already dropped by an interrupted run; recorded.");
    }
    if !report.already.is_empty() {
        say!("Already dropped: {}.", report.already.join(", "));
    }
    // Dropping a column leaves its bytes in free pages; rewrite so they are gone.
    let purged = migrate::purge(db, plan()).await.map_err(db_err)?;
    if purged.is_empty() {
        say!("{TABLE} was already purged; nothing to do.");
    } else {
        say!(
            "Rewrote {TABLE} so the dropped plaintext is gone from the live database files (backups, replicas and WAL archives taken earlier still hold it)."
        );
    }
    Ok(())
}

async fn status(db: &DatabaseConnection) -> Result<(), String> {
    let total = count(db, None).await?;
    say!("{TABLE}: {total} row(s)");
    say!(
        "  {:<10} {:<12} {:>10} {:>10}",
        "column",
        "phase",
        "sealed",
        "remaining"
    );
    for (plain, enc) in COLUMNS {
        let state = migrate::state::load(db, TABLE, plain)
            .await
            .map_err(db_err)?;
        let phase = state.as_ref().map_or("not started", |s| s.phase.as_str());
        let remaining = match state.as_ref().map(|s| s.phase) {
            Some(Phase::Dropped | Phase::Purged) => "-".to_string(),
            _ => count(db, Some((plain, enc))).await?.to_string(),
        };
        let sealed = state.map_or(0, |s| s.rows_done);
        say!("  {plain:<10} {phase:<12} {sealed:>10} {remaining:>10}");
    }
    say!("  (remaining: plaintext without an envelope; `verify` also finds stale envelopes)");
    Ok(())
}

/// Rows in the table, or rows with plaintext but no envelope.
async fn count(db: &DatabaseConnection, pending: Option<(&str, &str)>) -> Result<i64, String> {
    let mut q = Query::select();
    q.expr_as(
        Func::count(Expr::col(sea_orm::sea_query::Asterisk)),
        sea_orm::sea_query::Alias::new("n"),
    )
    .from(sea_orm::sea_query::Alias::new(TABLE));
    if let Some((plain, enc)) = pending {
        q.and_where(Expr::col(sea_orm::sea_query::Alias::new(plain)).is_not_null())
            .and_where(Expr::col(sea_orm::sea_query::Alias::new(enc)).is_null());
    }
    let row = db.query_one(&q).await.map_err(db_err)?;
    match row {
        Some(row) => row.try_get::<i64>("", "n").map_err(db_err),
        None => Ok(0),
    }
}

const FIRST: [&str; 8] = ["Ada", "Bram", "Cleo", "Dov", "Esme", "Fritz", "Gia", "Hal"];
const LAST: [&str; 8] = [
    "Examplewood",
    "Samplesson",
    "Testard",
    "Mockridge",
    "Fakenham",
    "Dummett",
    "Placeholt",
    "Stubbins",
];

/// Inserts fake legacy patients, each column written as its phase requires (plaintext only
/// before dual write, both during, envelope only after cut-over).
async fn seed(db: &DatabaseConnection, rows: u32) -> Result<(), String> {
    let mut policies = Vec::new();
    for (plain, _) in COLUMNS {
        let state = migrate::state::load(db, TABLE, plain)
            .await
            .map_err(db_err)?;
        if state
            .as_ref()
            .is_some_and(|s| matches!(s.phase, Phase::Dropped | Phase::Purged))
        {
            return Err(format!(
                "{TABLE}.{plain} was dropped: the legacy table is fully migrated"
            ));
        }
        policies.push(ReadPolicy::load(db, TABLE, plain).await.map_err(db_err)?);
    }
    let start = count(db, None).await?;
    for i in 0..rows {
        let n = start as u64 + u64::from(i);
        let first = FIRST[(n % 8) as usize];
        let last = LAST[((n / 8) % 8) as usize];
        let name = format!("{first} {last}");
        let email = format!(
            "{}.{}{n}@example.org",
            first.to_lowercase(),
            last.to_lowercase()
        );
        let phone = (!n.is_multiple_of(3)).then(|| format!("+1 555 01{:02}", n % 100));
        let seal = |e: SealError| e.to_string();
        let name_w = policies[0]
            .write::<String, ctx::FullNameEnc>(Some(name))
            .map_err(seal)?;
        let email_w = policies[1]
            .write::<String, ctx::EmailEnc>(Some(email))
            .map_err(seal)?;
        let phone_w = policies[2]
            .write::<String, ctx::PhoneEnc>(phone)
            .map_err(seal)?;
        let mut row = legacy_patient::ActiveModel {
            full_name: Set(name_w.plaintext),
            full_name_enc: Set(name_w.encrypted),
            email: Set(email_w.plaintext),
            email_enc: Set(email_w.encrypted),
            phone: Set(phone_w.plaintext),
            phone_enc: Set(phone_w.encrypted),
            ..Default::default()
        };
        row.fill_blind_indexes().map_err(|e| e.to_string())?;
        row.insert(db).await.map_err(db_err)?;
    }
    say!(
        "Inserted {rows} fake legacy patient(s) ({}).",
        match policies[0] {
            ReadPolicy::PlaintextOnly => "plaintext only, as the legacy app writes",
            ReadPolicy::EncryptedFirst => "dual-written: plaintext and envelope together",
            ReadPolicy::EncryptedOnly => "envelopes only: the table is cut over",
        }
    );
    Ok(())
}
