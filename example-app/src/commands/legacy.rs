//! `clinic migrate-legacy`: encrypt the plaintext `legacy_patients` table while it stays in
//! use, one checked phase at a time (encrypted_columns::migrate).

use std::time::Duration;

use encrypted_columns::migrate::dual::ReadPolicy;
use encrypted_columns::migrate::{self, EncryptColumn, Phase, Progress, RunOptions};
use encrypted_columns::{ColumnContext, Error as SealError, keyring};
use indicatif::{ProgressBar, ProgressStyle};
use sea_orm::sea_query::{Expr, ExprTrait, Func, Query};
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ConnectionTrait, DatabaseConnection};
use sea_orm_migration::SchemaManager;

use crate::clinic::{Clinic, db_err};
use crate::commands::demo::connect;
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
    /// Seal the remaining rows.
    Backfill { batch_size: u64, throttle_ms: u64 },
    /// Check every row.
    Verify,
    /// Switch reads to encrypted-only.
    Cutover,
    /// Drop the plaintext columns.
    Drop,
}

fn full_name_spec() -> EncryptColumn<String, ctx::FullNameEnc> {
    EncryptColumn::new(TABLE, "id", "full_name", "full_name_enc")
}
fn email_spec() -> EncryptColumn<String, ctx::EmailEnc> {
    EncryptColumn::new(TABLE, "id", "email", "email_enc")
        .with_index("email_bidx", legacy_patient::Entity::email_bidx_index())
}
fn phone_spec() -> EncryptColumn<String, ctx::PhoneEnc> {
    EncryptColumn::new(TABLE, "id", "phone", "phone_enc")
}

/// Connects, loads keys and checks the schema is current.
pub async fn open(database_url: Option<&str>) -> Result<DatabaseConnection, String> {
    let (ring, _) = keys::load(false)?;
    keyring::install(ring);
    let url = database_url.unwrap_or(crate::commands::DEFAULT_DATABASE_URL);
    let db = connect(url).await?;
    Clinic::check_schema(&db).await?;
    Ok(db)
}

/// Runs one step.
pub async fn run(database_url: Option<&str>, step: Step) -> Result<(), String> {
    let db = open(database_url).await?;
    run_on(&db, step).await
}

/// Runs one step on an open, migrated database with the keyring installed (the demo).
pub async fn run_on(db: &DatabaseConnection, step: Step) -> Result<(), String> {
    let db = db.clone();
    match step {
        Step::Status => status(&db).await,
        Step::Seed { rows } => seed(&db, rows).await,
        Step::DualWrite => {
            for (plain, _) in COLUMNS {
                migrate::state::transition(&db, TABLE, plain, Phase::DualWrite, None)
                    .await
                    .map_err(db_err)?;
            }
            say!("Writers now fill plaintext and encrypted columns together (phase dual_write).");
            say!("Next: `clinic migrate-legacy backfill`.");
            Ok(())
        }
        Step::Backfill {
            batch_size,
            throttle_ms,
        } => {
            let options = RunOptions {
                batch_size,
                throttle: (throttle_ms > 0).then(|| Duration::from_millis(throttle_ms)),
                max_batches: None,
            };
            backfill_one(&db, &full_name_spec(), &options).await?;
            backfill_one(&db, &email_spec(), &options).await?;
            backfill_one(&db, &phone_spec(), &options).await?;
            say!("Next: `clinic migrate-legacy verify`.");
            Ok(())
        }
        Step::Verify => {
            let ok = verify_one(&db, &full_name_spec()).await?
                & verify_one(&db, &email_spec()).await?
                & verify_one(&db, &phone_spec()).await?;
            if ok {
                say!("Next: `clinic migrate-legacy cutover`.");
                Ok(())
            } else {
                Err("verify found rows that do not match; re-run `clinic migrate-legacy backfill`, then verify".into())
            }
        }
        Step::Cutover => {
            for (plain, _) in COLUMNS {
                migrate::state::transition(&db, TABLE, plain, Phase::CutOver, None)
                    .await
                    .map_err(db_err)?;
            }
            say!(
                "Reads are now encrypted-only and fail closed; writes leave the plaintext columns NULL."
            );
            say!(
                "Next: `clinic migrate-legacy drop` (in your app: a migration calling migrate::schema::drop_plaintext_column)."
            );
            Ok(())
        }
        Step::Drop => {
            let manager = SchemaManager::new(&db);
            for (plain, _) in COLUMNS {
                let indexes: &[&str] = if plain == "email" {
                    &["legacy_patients_email"]
                } else {
                    &[]
                };
                migrate::schema::drop_plaintext_column(&manager, TABLE, plain, indexes)
                    .await
                    .map_err(db_err)?;
                say!("Dropped {TABLE}.{plain}: only its envelope remains.");
            }
            // Dropping a column leaves its bytes in free pages; rewrite so they are gone.
            migrate::schema::purge_dropped_data(&manager, TABLE)
                .await
                .map_err(db_err)?;
            say!(
                "Rewrote {TABLE} so the dropped plaintext is gone from the database files (older backups still hold it)."
            );
            Ok(())
        }
    }
}

async fn backfill_one<C: ColumnContext>(
    db: &DatabaseConnection,
    spec: &EncryptColumn<String, C>,
    options: &RunOptions,
) -> Result<(), String> {
    let bar = ProgressBar::new(0).with_message(spec.plaintext().to_owned());
    if let Ok(style) =
        ProgressStyle::with_template("{msg:>10} [{bar:30}] {pos}/{len} rows  {per_sec}  eta {eta}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    let report = migrate::backfill(db, spec, options, |p: &Progress| {
        bar.set_length(p.total);
        bar.set_position(p.done + p.skipped);
    })
    .await
    .map_err(db_err)?;
    bar.finish_and_clear();
    say!(
        "{TABLE}.{}: sealed {} row(s) in {} batch(es){}; phase backfilled.",
        spec.plaintext(),
        report.sealed,
        report.batches,
        if report.skipped > 0 {
            format!(
                ", {} changed by the application meanwhile and left to its dual write",
                report.skipped
            )
        } else {
            String::new()
        }
    );
    Ok(())
}

async fn verify_one<C: ColumnContext>(
    db: &DatabaseConnection,
    spec: &EncryptColumn<String, C>,
) -> Result<bool, String> {
    let report = migrate::verify(db, spec, &RunOptions::default())
        .await
        .map_err(db_err)?;
    if report.passed() {
        say!(
            "{TABLE}.{}: {} row(s) checked, {} open to exactly their plaintext, {} NULL in both; phase verified.",
            spec.plaintext(),
            report.rows,
            report.matching,
            report.both_null
        );
    } else {
        say!(
            "{TABLE}.{}: {} row(s) checked: {} not backfilled, {} mismatched, {} with a wrong index (ids: {:?}).",
            spec.plaintext(),
            report.rows,
            report.missing,
            report.mismatched,
            report.index_mismatched,
            report.problem_ids.iter().take(20).collect::<Vec<_>>()
        );
    }
    Ok(report.passed())
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
            Some(Phase::Dropped) => "-".to_string(),
            _ => count(db, Some((plain, enc))).await?.to_string(),
        };
        let sealed = state.map_or(0, |s| s.rows_done);
        say!("  {plain:<10} {phase:<12} {sealed:>10} {remaining:>10}");
    }
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
        if state.as_ref().is_some_and(|s| s.phase == Phase::Dropped) {
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
