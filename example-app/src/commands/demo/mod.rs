//! `clinic demo`: a guided tour of every feature, printing what it does in plain words.
//!
//! The demo writes only where it cannot destroy anything: its own `clinic-demo.db` (which it
//! marks, and replaces only when the mark is there) or a database given by URL that holds no
//! tables at all. Everything it leaves is sealed with keys the user holds: the key it rotates
//! to exists only in this process, so it rotates back before going on.

mod clinical_records;
mod erasure;
mod people;
mod rotation;
mod search;
mod stored;
mod target;

use std::sync::Arc;
use std::time::Instant;

use encrypted_columns::blind_index::leakage_report;
use encrypted_columns::keyring;
use migration::{Migrator, MigratorTrait};
use sea_orm::TransactionTrait;

use self::clinical_records::records;
use self::erasure::{audit_trail, erasure};
use self::people::{ALBA, DEMO_ACTOR};
use self::rotation::{rotation, rotation_key_id};
use self::search::search;
use self::stored::{moved_ciphertext, show_raw};
use self::target::{
    DemoFile, inspect_demo_file, inventory, mark, refuse_unless_empty, remove_demo_file,
};
use crate::clinic::{Clinic, NewPatient, db_err};
use crate::commands::legacy::{self, Step};
use crate::connect::connect;
use crate::entities::patient;
use crate::fake;
use crate::keys::{self, KeySource};
use crate::output::say;

pub use self::target::DEFAULT_DEMO_FILE;

/// Runs the tour against `database_url` (which must hold no tables), or its own SQLite file,
/// with `population` generated patients.
pub async fn run(database_url: Option<&str>, population: u32) -> Result<(), String> {
    if population == 0 {
        return Err("--patients must be at least 1".into());
    }
    let (ring, source) = keys::load(true)?;
    // Chosen before anything is written, so a keyring with no free id refuses up front.
    let rotation_key = rotation_key_id(&ring)?;
    // What to do with an existing default file is decided (and any refusal made) before a
    // byte is written or deleted.
    let old_demo_file = match database_url {
        Some(_) => None,
        None => Some(inspect_demo_file().await?),
    };

    let url = match database_url {
        Some(url) => url.to_string(),
        None => {
            if matches!(old_demo_file, Some(DemoFile::Replaceable)) {
                remove_demo_file()?;
            }
            format!("sqlite://{DEFAULT_DEMO_FILE}?mode=rwc")
        }
    };
    let db = connect(&url).await?;
    // Checked on the connection the demo writes through, so the database checked is the one
    // written (and a default file that appeared meanwhile is refused too).
    let found = inventory(&db).await?;
    refuse_unless_empty(&found, database_url.is_some())?;

    match source {
        KeySource::Ephemeral => say!(
            "No ENCRYPTED_COLUMNS_KEYS is set, so this run uses throwaway keys generated just now:\n\
             what it writes cannot be read after it exits. For lasting keys run `clinic keys generate`."
        ),
        KeySource::Environment => say!(
            "Keys loaded from ENCRYPTED_COLUMNS_KEYS; new values are sealed with key {}.",
            ring.active_key_id()
        ),
    }
    match old_demo_file {
        None => {}
        Some(DemoFile::Absent) => {
            say!("Creating {DEFAULT_DEMO_FILE} (embedded SQLite, no server needed).")
        }
        Some(DemoFile::Replaceable) => say!(
            "Starting from a fresh {DEFAULT_DEMO_FILE} (the old one, made by an earlier demo, \
             was removed)."
        ),
    }
    let ring = Arc::new(ring);
    keyring::install(Arc::clone(&ring));
    mark(&db).await?;
    Migrator::up(&db, None)
        .await
        .map_err(|e| format!("cannot create the clinic's tables: {e}"))?;
    // Registers the keys' check values, as every command does: later commands on this
    // database with another key under the same id are refused.
    keys::check_env(&db, &ring).await?;
    let clinic = Clinic::new(db.clone(), Arc::clone(&ring), DEMO_ACTOR.to_owned());

    say!("\n1. Registering {population} fictional patients (generated; no real data).");
    let started = Instant::now();
    let txn = db.begin().await.map_err(db_err)?;
    let mut rng = fake::Rng::new(DEMO_SEED);
    // The ids this run created: later steps (erasure) touch only these.
    let mut generated = Vec::with_capacity(population as usize);
    for n in 0..population {
        let p = fake::person(n, &mut rng);
        let new = NewPatient {
            first_name: p.first_name,
            last_name: p.last_name,
            email: p.email,
            phone: p.phone,
            address: p.address,
            date_of_birth: p.date_of_birth,
            medical_history: p.medical_history,
        };
        generated.push(clinic.add_patient_in(&txn, new).await?);
    }
    txn.commit().await.map_err(db_err)?;
    say!(
        "   Done in {:.1} s, in one transaction. Each patient got its own random data key, stored \
         wrapped (sealed) by the clinic key;\n   every field was sealed with that patient key \
         before any SQL ran, and blind indexes were filled for search.",
        started.elapsed().as_secs_f64()
    );

    say!(
        "\n2. Adding {} {} through the same API `clinic patient add` uses.",
        ALBA.first_name,
        ALBA.last_name
    );
    let alba = clinic.add_patient(ALBA.to_new()).await?;
    say!("   Patient #{alba}. What the database holds for it (plain SQL, no keys):");
    show_raw(&db, alba, &ALBA).await?;

    say!("\n3. What the application reads back (SeaORM opens each value on read):");
    let (row, _) = clinic.load_patient(&db, alba).await?;
    say!(
        "   #{alba}: {} {} <{}>, {}, born {}; history: {}",
        row.first_name.expose(),
        row.last_name.expose(),
        row.email.expose(),
        row.phone
            .as_ref()
            .map_or("no phone", |p| p.expose().as_str()),
        row.date_of_birth.expose(),
        row.medical_history
            .as_ref()
            .map_or("none", |h| h.expose().as_str())
    );
    say!("   Logging a field prints no data: {:?}", row.email);

    moved_ciphertext(&clinic, alba).await?;
    search(&clinic).await?;
    records(&clinic, alba).await?;

    say!("\n8. Encrypting a live plaintext table without downtime (`clinic migrate-legacy`):");
    for step in [
        Step::Seed { rows: 300 },
        Step::DualWrite,
        Step::Backfill {
            batch_size: 100,
            throttle_ms: 0,
            lease_secs: 30,
        },
        Step::Verify,
        Step::Cutover,
        Step::Drop,
        Step::Status,
    ] {
        legacy::run_on(&db, step).await?;
    }

    rotation(&clinic, rotation_key, alba, &source).await?;
    // A patient this run created (never "whoever has id 2"): the second generated one.
    let victim = *generated
        .get(1)
        .or(generated.first())
        .ok_or("the demo registered no patients")?;
    erasure(&clinic, victim).await?;
    audit_trail(&clinic, alba, victim).await?;

    say!("\n12. What the blind indexes reveal (`clinic index report`), in brief:");
    for index in patient::Entity::blind_indexes() {
        let report = leakage_report(&db, "patients", index.name())
            .await
            .map_err(db_err)?;
        say!(
            "   {:<17} {:>3} bits: {} rows, {} distinct values, largest group {}",
            index.name(),
            index.bit_len(),
            report.indexed,
            report.distinct,
            report.largest_group
        );
    }

    if database_url.is_none() {
        say!(
            "\nDone. Look for yourself: sqlite3 {DEFAULT_DEMO_FILE} 'select hex(email) from patients limit 3'"
        );
    } else {
        say!("\nDone.");
    }
    if matches!(source, KeySource::Environment) {
        // Other commands default to clinic.db, not the demo's file: name it explicitly.
        let target = if database_url.is_some() {
            "<the same URL>"
        } else {
            "sqlite://clinic-demo.db"
        };
        say!(
            "Everything it stored is sealed with your keys. With the same environment, read it \
             back: clinic --database-url {target} patient list (or patient show {alba}, keys status)."
        );
    }
    if database_url.is_none() {
        say!("{DEFAULT_DEMO_FILE} is the demo's own: the next `clinic demo` replaces it.");
    }
    Ok(())
}

/// The seed of the generated population: the same people on every run.
pub const DEMO_SEED: u64 = 0x00C1_1A1C;
