//! `clinic demo`: a guided tour of every feature, printing what it does in plain words.
//!
//! The demo writes only where it cannot destroy anything: its own `clinic-demo.db` (which it
//! marks, and replaces only when the mark is there) or a database given by URL that holds no
//! tables at all. Everything it leaves is sealed with keys the user holds: the key it rotates
//! to exists only in this process, so it rotates back before going on.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use chrono::{NaiveDate, Utc};
use encrypted_columns::blind_index::leakage_report;
use encrypted_columns::envelope::{HEADER_LEN, NONCE_LEN, OVERHEAD};
use encrypted_columns::keyring::{self, generate_key};
use encrypted_columns::{KeyId, Keyring};
use migration::{Migrator, MigratorTrait};
use sea_orm::sea_query::{Expr, Query};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseBackend, DatabaseConnection, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, QueryResult, QuerySelect, QueryTrait, Statement, TransactionTrait,
    Value,
};

use crate::clinic::{Clinic, DATA_KEY_ID_BASE, NewPatient, data_key_id, db_err};
use crate::commands::legacy::{self, Step};
use crate::commands::records::{self, TranscriptFile};
use crate::connect::connect;
use crate::entities::audit_entry;
use crate::entities::consent_record::Method;
use crate::entities::patient::{self, Column};
use crate::entities::transcript::Segment;
use crate::fake;
use crate::keys::{self, KeySource};
use crate::output::{say, shown};

/// SQLite file the demo starts afresh when no database URL is given.
pub const DEFAULT_DEMO_FILE: &str = "clinic-demo.db";

/// Table the demo creates first in every database it sets up: its mark of ownership. Only a
/// file holding it (with a [`MARKER_MAKER`] row) is ever deleted by a later run.
pub const MARKER_TABLE: &str = "clinic_demo_marker";

/// `made_by` of the marker row.
const MARKER_MAKER: &str = "clinic demo";

/// The actor the demo's audit entries carry.
const DEMO_ACTOR: &str = "demo";

/// A clearly fictional person (555-01xx numbers are reserved for fiction).
struct FakePatient {
    first_name: &'static str,
    last_name: &'static str,
    email: &'static str,
    phone: Option<&'static str>,
    address: Option<&'static str>,
    born: (i32, u32, u32),
    history: Option<&'static str>,
}

impl FakePatient {
    fn to_new(&self) -> NewPatient {
        let (y, m, d) = self.born;
        NewPatient {
            first_name: self.first_name.to_owned(),
            last_name: self.last_name.to_owned(),
            email: self.email.to_owned(),
            phone: self.phone.map(str::to_owned),
            address: self.address.map(str::to_owned),
            date_of_birth: NaiveDate::from_ymd_opt(y, m, d).unwrap_or_default(),
            medical_history: self.history.map(str::to_owned),
        }
    }
}

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

/// The patient the tour follows.
const ALBA: FakePatient = FakePatient {
    first_name: "Alba",
    last_name: "Examplewood",
    email: "alba.examplewood@example.org",
    phone: Some("+1 555 0142"),
    address: Some("12 Lantern Lane, Fictionville 10001"),
    born: (1984, 3, 9),
    history: Some("Seasonal allergies; penicillin intolerance noted 2019."),
};

/// Step 4: a ciphertext moved to another column does not open there.
async fn moved_ciphertext(clinic: &Clinic, id: i32) -> Result<(), String> {
    say!("\n4. A ciphertext moved to another column does not open there:");
    let db = &clinic.db;
    let saved: Option<Vec<u8>> = patient::Entity::find_by_id(id)
        .select_only()
        .column(Column::Phone)
        .into_tuple::<Option<Vec<u8>>>()
        .one(db)
        .await
        .map_err(db_err)?
        .flatten();
    patient::Entity::update_many()
        .col_expr(Column::Phone, Expr::col(Column::Email))
        .filter(Column::Id.eq(id))
        .exec(db)
        .await
        .map_err(db_err)?;
    match clinic.load_patient(db, id).await {
        Err(err) => say!(
            "   Copied #{id}'s e-mail envelope into its phone column; reading it fails:\n   {err}"
        ),
        Ok(_) => return Err("a moved ciphertext opened in another column".into()),
    }
    patient::Entity::update_many()
        .col_expr(Column::Phone, Expr::value(Value::Bytes(saved)))
        .filter(Column::Id.eq(id))
        .exec(db)
        .await
        .map_err(db_err)?;
    say!("   (Its phone envelope is put back.)");
    Ok(())
}

/// Step 5: blind-index lookups and the unique e-mail constraint.
async fn search(clinic: &Clinic) -> Result<(), String> {
    say!(
        "\n5. Searching encrypted fields through blind indexes (keyed hashes; nothing is decrypted to search):"
    );
    let db = &clinic.db;
    let typed = format!("  {}  ", ALBA.email.to_uppercase());
    let query = patient::Entity::find_by_email_bidx(typed.as_str()).map_err(|e| e.to_string())?;
    let sql = query.build(db.get_database_backend()).to_string();
    if sql.to_lowercase().contains(&ALBA.email.to_lowercase()) {
        return Err("the lookup's SQL contains the plaintext e-mail".into());
    }
    let condition =
        patient::Entity::email_bidx_condition(typed.as_str()).map_err(|e| e.to_string())?;
    let found = clinic
        .find_patients(condition, |m| m.matches_email_bidx(typed.as_str()))
        .await?
        .rows;
    let found = found.first().ok_or("the e-mail lookup found nobody")?;
    say!(
        "   find by e-mail {typed:?} found #{} ({} {}):\n   the address was normalized \
         (trim, lowercase) and hashed; the query compared {} bytes of email_bidx ({}…), never \
         the address.",
        found.id,
        found.first_name.expose(),
        found.last_name.expose(),
        found.email_bidx.len(),
        hex::encode(&found.email_bidx[..8])
    );
    let last4 = "0142";
    let condition =
        patient::Entity::phone_last4_bidx_condition(last4).map_err(|e| e.to_string())?;
    let candidates = patient::Entity::find()
        .filter(condition.clone())
        .count(db)
        .await
        .map_err(db_err)?;
    let by_phone = clinic
        .find_patients(condition, |m| m.matches_phone_last4_bidx(last4))
        .await?
        .rows;
    say!(
        "   find by phone last 4 \"{last4}\": the {}-bit index matched {candidates} row(s); after \
         decrypting, {} really end in {last4}.\n   (Truncation makes unrelated numbers share \
         index values, so the index alone does not tell who shares a number.)",
        patient::Entity::phone_last4_bidx_index().bit_len(),
        by_phone.len()
    );
    let (y, m, d) = ALBA.born;
    let born = NaiveDate::from_ymd_opt(y, m, d).ok_or("bad demo date")?;
    let last = ALBA.last_name.to_uppercase();
    let condition =
        patient::Entity::name_dob_bidx_condition(last.as_str(), born).map_err(|e| e.to_string())?;
    let by_name = clinic
        .find_patients(condition, |m| m.matches_name_dob_bidx(last.as_str(), born))
        .await?
        .rows;
    say!(
        "   find by last name + date of birth (\"{last}\", {born}): {} patient(s) \
         (a compound index; case does not matter).",
        by_name.len()
    );

    let twin = NewPatient {
        first_name: "Alba".into(),
        last_name: "Doublewood".into(),
        email: "Alba.Examplewood@Example.org ".into(),
        phone: None,
        address: None,
        date_of_birth: NaiveDate::from_ymd_opt(1990, 1, 1).unwrap_or_default(),
        medical_history: None,
    };
    match clinic.add_patient(twin).await {
        Err(err) if err.contains("already has this e-mail") => say!(
            "   Registering \"Alba.Examplewood@Example.org \" again is refused by the database's \
             UNIQUE index on the blind index:\n   {err}"
        ),
        Err(err) => return Err(format!("expected a duplicate e-mail error, got: {err}")),
        Ok(_) => return Err("a duplicate e-mail was accepted".into()),
    }
    Ok(())
}

/// Steps 6–7: clinical records sealed with the patient's key.
async fn records(clinic: &Clinic, alba: i32) -> Result<(), String> {
    say!("\n6. Clinical records, each sealed with the patient's own key:");
    let note = records::add_note(
        clinic,
        alba,
        "dr.placeholder",
        [
            "Sneezing and itchy eyes for two weeks, worse outdoors.".into(),
            "Temp 36.8 C; nasal mucosa pale and swollen; chest clear.".into(),
            "Seasonal allergic rhinitis.".into(),
            "Non-sedating antihistamine daily; review in four weeks.".into(),
        ],
    )
    .await?;
    let consent = records::record_consent(
        clinic,
        alba,
        "recording",
        Method::Electronic,
        true,
        "Signed on tablet: Alba Examplewood".into(),
    )
    .await?;
    let transcript = records::import_transcript(
        clinic,
        alba,
        TranscriptFile {
            text: "How have you been? Sneezing a lot since the trees bloomed.".into(),
            segments: vec![
                Segment {
                    speaker: "clinician".into(),
                    start_ms: 0,
                    end_ms: 1_800,
                    text: "How have you been?".into(),
                },
                Segment {
                    speaker: "patient".into(),
                    start_ms: 1_900,
                    end_ms: 5_200,
                    text: "Sneezing a lot since the trees bloomed.".into(),
                },
            ],
        },
    )
    .await?;
    say!(
        "   SOAP note #{note} (4 sealed sections), consent #{consent} (signature sealed), \
         transcript #{transcript} (text and diarized segments sealed as JSON)."
    );
    say!(
        "\n7. Every read of PHI through the app is audited: `clinic patient show {alba}` adds an entry."
    );
    clinic
        .audit_reads("patient record shown", [(format!("patients#{alba}"), alba)])
        .await?;
    Ok(())
}

/// The id of the key the demo rotates to: one above every loaded key, so it never collides
/// with a key the user holds (active + 1 would, with keys 1 and 2 and 1 active).
fn rotation_key_id(ring: &Keyring) -> Result<KeyId, String> {
    let highest = ring.key_ids().map(|k| k.0).max().unwrap_or(0);
    match highest.checked_add(1) {
        Some(id) if id < DATA_KEY_ID_BASE => Ok(KeyId(id)),
        _ => Err(format!(
            "the demo rotates to a key one above your highest key id ({highest}), and none is \
             free below {DATA_KEY_ID_BASE}: use small key ids (1, 2, 3, …)"
        )),
    }
}

/// Step 9: rotate the clinic key (re-wrap the patient keys, re-seal the legacy table), then
/// rotate back: the new key lives only in this process, and data left sealed with it could
/// never be read again.
async fn rotation(
    clinic: &Clinic,
    new: KeyId,
    alba: i32,
    source: &KeySource,
) -> Result<(), String> {
    say!("\n9. Rotating the clinic key (`clinic keys rotate`):");
    let ring = clinic.master();
    let old = ring.active_key_id();
    let mut there = (**ring).clone();
    there
        .add_key(new, *generate_key())
        .map_err(|e| e.to_string())?;
    // The same keys with the user's key still active: what the demo rotates back with.
    let back = Arc::new(there.clone());
    there.promote(new).map_err(|e| e.to_string())?;
    let there = Arc::new(there);
    keyring::install(Arc::clone(&there));
    say!(
        "   A new key {new} is added and made active (in production: added to \
         ENCRYPTED_COLUMNS_KEYS on every server, then ENCRYPTED_COLUMNS_ACTIVE_KEY={new})."
    );
    let forward = async {
        let forward =
            crate::commands::keys::rotate_all(&clinic.db, there.key_ids().collect(), 500, true)
                .await?;
        let rotating = Clinic::new(clinic.db.clone(), Arc::clone(&there), DEMO_ACTOR.to_owned());
        let (row, _) = rotating.load_patient(&clinic.db, alba).await?;
        say!(
            "   Patient data was not rewritten: only its {} wrapped keys were. #{alba} still \
             reads ({} {}), and key {old} {}.",
            wrapped_keys(&forward),
            row.first_name.expose(),
            row.last_name.expose(),
            if forward.retirable_keys.contains(&old.0) {
                "seals nothing any more (in production it could now be retired)"
            } else {
                "is still in use"
            }
        );
        Ok::<(), String>(())
    }
    .await;

    // Back to the user's key whatever happened above: a failure part-way through the forward
    // rotation leaves some values under the new key too, and they must not die with it.
    if forward.is_ok() {
        let yours = match source {
            KeySource::Environment => "your ENCRYPTED_COLUMNS_KEYS still opens everything",
            KeySource::Ephemeral => "everything stays under this run's throwaway keys",
        };
        say!(
            "   Key {new} existed only in this process, so the demo rotates back to key {old}: \
             {yours}."
        );
    }
    keyring::install(Arc::clone(&back));
    let backward =
        crate::commands::keys::rotate_all(&clinic.db, back.key_ids().collect(), 500, false).await;
    let backward = match (forward, backward) {
        (Err(first), Ok(_)) => return Err(first),
        (Err(first), Err(second)) => {
            return Err(format!(
                "{first}; rotating back to key {old} then failed too ({second}), so some values \
                 stay sealed with key {new}, which existed only in this process: start the demo \
                 afresh"
            ));
        }
        (Ok(()), backward) => backward?,
    };
    if !backward.retirable_keys.contains(&new.0) {
        // Never go on (and exit) with values only the dropped key opens.
        return Err(format!(
            "rotating back to key {old} left values sealed with key {new}, which existed only in \
             this process: start the demo afresh"
        ));
    }
    // From here on only the keys the run started with, as any later `clinic` command has.
    keyring::install(Arc::clone(ring));
    let (row, _) = clinic.load_patient(&clinic.db, alba).await?;
    let legacy: u64 = backward
        .resealed
        .iter()
        .filter(|(column, _)| column.starts_with("legacy_patients."))
        .map(|(_, n)| n)
        .sum();
    say!(
        "   Re-wrapped {} data keys and re-sealed {legacy} legacy value(s) under key {old} again; \
         key {new} seals nothing and is dropped. With only the keys the demo started with, \
         #{alba} reads ({} {}).",
        wrapped_keys(&backward),
        row.first_name.expose(),
        row.last_name.expose()
    );
    Ok(())
}

/// How many patient data keys a rotation re-wrapped.
fn wrapped_keys(summary: &crate::commands::keys::RotationSummary) -> u64 {
    summary
        .resealed
        .get("patient_keys.wrapped_key")
        .copied()
        .unwrap_or(0)
}

/// Step 10: crypto-shredding `victim`, a patient this run registered.
async fn erasure(clinic: &Clinic, victim: i32) -> Result<(), String> {
    say!("\n10. Erasing a patient (`clinic patient erase ID --yes`, GDPR art. 17):");
    let key_row = clinic.key_row_of(&clinic.db, victim).await?;
    records::add_note(
        clinic,
        victim,
        "dr.placeholder",
        [
            "Follow-up.".into(),
            "Well.".into(),
            "Resolved.".into(),
            "None.".into(),
        ],
    )
    .await?;
    let report = clinic.erase_patient(victim).await?;
    say!(
        "   Patient #{victim} (registered in step 1): data key {} destroyed; deleted the patient \
         row, {} note(s), {} consent(s), {} transcript(s).\n   Verified: {} row(s) left, and a \
         copy of its e-mail envelope, as stored before, no longer opens with this database's keys:\n   {}",
        data_key_id(key_row)?,
        report.notes,
        report.consents,
        report.transcripts,
        report.remaining_rows,
        report.backup_copy_error
    );
    say!(
        "   Not reached yet: a backup taken before the erase still holds the wrapped data key, \
         which clinic key {} opens, until the backup expires or the clinic key is rotated and \
         the old one destroyed (README, \"Erasure\").",
        report.wrapped_by_clinic_key
    );
    Ok(())
}

/// Step 11: the audit trail. The tamper attempt names one entry this run wrote, so even if
/// the trigger were missing it could not rewrite anyone else's history.
async fn audit_trail(clinic: &Clinic, alba: i32, erased: i32) -> Result<(), String> {
    say!("\n11. The audit trail (`clinic audit list`), append-only:");
    let db = &clinic.db;
    let about = |id: i32| {
        audit_entry::Entity::find()
            .filter(audit_entry::Column::PatientId.eq(id))
            .filter(audit_entry::Column::Actor.eq(DEMO_ACTOR))
    };
    let about_alba = about(alba).count(db).await.map_err(db_err)?;
    let about_erased = about(erased).count(db).await.map_err(db_err)?;
    say!(
        "   {about_alba} entries about #{alba} (create, records added, reads); the {about_erased} \
         about erased #{erased} stay, their sealed details unreadable."
    );
    let own: i64 = about(alba)
        .select_only()
        .column(audit_entry::Column::Id)
        .order_by_desc(audit_entry::Column::Id)
        .into_tuple()
        .one(db)
        .await
        .map_err(db_err)?
        .ok_or("the demo's own audit entries are missing")?;
    let refused = audit_entry::Entity::update_many()
        .col_expr(audit_entry::Column::Actor, Expr::value("someone else"))
        .filter(audit_entry::Column::Id.eq(own))
        .exec(db)
        .await;
    match refused {
        Err(err) if err.to_string().contains("append-only") => say!(
            "   Rewriting history is refused by a trigger: UPDATE audit_log SET actor = … WHERE \
             id = {own} → \"audit_log is append-only\"."
        ),
        Err(err) => return Err(format!("expected the append-only trigger, got: {err}")),
        Ok(_) => return Err("the audit log accepted an UPDATE".into()),
    }
    Ok(())
}

/// Prints the stored bytes of patient `id` and checks that none of its plaintext is there.
async fn show_raw(db: &DatabaseConnection, id: i32, p: &FakePatient) -> Result<(), String> {
    let fields: [(Column, &str, Option<Vec<u8>>); 4] = [
        (
            Column::FirstName,
            "first_name",
            Some(p.first_name.as_bytes().to_vec()),
        ),
        (
            Column::LastName,
            "last_name",
            Some(p.last_name.as_bytes().to_vec()),
        ),
        (Column::Email, "email", Some(p.email.as_bytes().to_vec())),
        (
            Column::Phone,
            "phone",
            p.phone.map(|v| v.as_bytes().to_vec()),
        ),
    ];
    let query = Query::select()
        .columns(fields.iter().map(|(c, _, _)| *c))
        .column(Column::Address)
        .column(Column::DateOfBirth)
        .column(Column::MedicalHistory)
        .from(patient::Entity)
        .and_where(Column::Id.eq(id))
        .to_owned();
    let row = db
        .query_one(&query)
        .await
        .map_err(db_err)?
        .ok_or_else(|| format!("patient {id} vanished"))?;
    say!("   patient #{id}:");
    let mut everything = Vec::new();
    for (_, name, plaintext) in &fields {
        let raw: Option<Vec<u8>> = row.try_get("", name).map_err(db_err)?;
        match raw {
            None => say!("     {name:<11} NULL (NULL stays NULL; nothing is sealed)"),
            Some(raw) => {
                let len = plaintext.as_ref().map_or(0, Vec::len);
                say!(
                    "     {name:<11} {} bytes = {len} plaintext + {OVERHEAD}: {}",
                    raw.len(),
                    describe(&raw)
                );
                everything.extend_from_slice(&raw);
            }
        }
    }
    for name in ["address", "date_of_birth", "medical_history"] {
        if let Some(raw) = row.try_get::<Option<Vec<u8>>>("", name).map_err(db_err)? {
            everything.extend_from_slice(&raw);
        }
    }
    let leaked = fields
        .iter()
        .filter_map(|(_, _, pt)| pt.as_ref())
        .chain(p.history.map(str::as_bytes).map(<[u8]>::to_vec).as_ref())
        .chain(p.address.map(str::as_bytes).map(<[u8]>::to_vec).as_ref())
        .any(|pt| everything.windows(pt.len()).any(|w| w == pt.as_slice()));
    if leaked {
        return Err(format!(
            "plaintext of patient {id} found in the stored bytes"
        ));
    }
    say!("     none of this patient's plaintext appears in the stored bytes.");
    Ok(())
}

/// `01 | key 00000001 | nonce 3f9a0c… | ciphertext+tag 8c2e…`
fn describe(raw: &[u8]) -> String {
    if raw.len() < OVERHEAD {
        return format!("{} (not an envelope)", hex::encode(raw));
    }
    let nonce_end = HEADER_LEN + NONCE_LEN;
    format!(
        "version {:02x} | key id {} | nonce {}… | ciphertext+tag {}…",
        raw[0],
        hex::encode(&raw[1..HEADER_LEN]),
        hex::encode(&raw[HEADER_LEN..HEADER_LEN + 6]),
        hex::encode(&raw[nonce_end..nonce_end + 6.min(raw.len() - nonce_end)]),
    )
}

/// What is at [`DEFAULT_DEMO_FILE`] before the demo runs.
enum DemoFile {
    /// Nothing: the demo creates it.
    Absent,
    /// A file an earlier demo made (it holds the marker), or an empty file: nothing of the
    /// user's is lost by replacing it.
    Replaceable,
}

/// Decides whether the default file may be replaced, reading it only: any file the demo did
/// not make is refused and left exactly as it is.
async fn inspect_demo_file() -> Result<DemoFile, String> {
    let path = Path::new(DEFAULT_DEMO_FILE);
    let refuse = |why: &str| {
        format!(
            "refusing to run the demo: {DEFAULT_DEMO_FILE} in this directory {why}, and the demo \
             never deletes what it did not make; move it away, or pass --database-url of an \
             empty database"
        )
    };
    // symlink_metadata: a link to some other database is not the demo's to delete.
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(DemoFile::Absent),
        Err(e) => return Err(format!("cannot inspect {DEFAULT_DEMO_FILE}: {e}")),
    };
    if !meta.is_file() {
        return Err(refuse("is not a regular file"));
    }
    let wal_len = std::fs::metadata(format!("{DEFAULT_DEMO_FILE}-wal")).map_or(0, |m| m.len());
    if meta.len() == 0 && wal_len == 0 {
        // What a run interrupted between creating the file and marking it leaves: no data.
        return Ok(DemoFile::Replaceable);
    }
    let mut header = [0u8; 16];
    let is_sqlite = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut header))
        .is_ok()
        && header == *b"SQLite format 3\0";
    if !is_sqlite {
        return Err(refuse("is not an SQLite database"));
    }
    // Read-only and immutable: SQLite takes no lock and creates no journal, WAL or shm file
    // next to a database that may not be ours.
    let db = connect(&format!(
        "sqlite://{DEFAULT_DEMO_FILE}?mode=ro&immutable=true"
    ))
    .await
    .map_err(|e| refuse(&format!("cannot be opened as a database ({e})")))?;
    let found = inventory(&db).await;
    let _ = db.close().await;
    let found = found.map_err(|e| refuse(&format!("cannot be read as a database ({e})")))?;
    if found.demo_made {
        Ok(DemoFile::Replaceable)
    } else {
        Err(refuse(&format!(
            "was not made by `clinic demo` (it holds {})",
            found.tables_listed()
        )))
    }
}

/// Deletes the default demo file and the journal files SQLite may keep beside it (a stale
/// hot journal would be replayed into the new file).
fn remove_demo_file() -> Result<(), String> {
    std::fs::remove_file(DEFAULT_DEMO_FILE)
        .or_else(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Ok(()),
            _ => Err(e),
        })
        .map_err(|e| format!("cannot remove the old {DEFAULT_DEMO_FILE}: {e}"))?;
    for suffix in ["-wal", "-shm", "-journal"] {
        let _ = std::fs::remove_file(format!("{DEFAULT_DEMO_FILE}{suffix}"));
    }
    Ok(())
}

/// What a database holds before the demo writes to it.
struct Inventory {
    /// Where, in words (file, schema or database name; never credentials).
    place: String,
    /// Tables and views, by name.
    tables: Vec<String>,
    /// Whether it holds the demo's marker.
    demo_made: bool,
}

impl Inventory {
    /// "3 table(s): a, b, c" with at most five names.
    fn tables_listed(&self) -> String {
        const SHOWN: usize = 5;
        let mut names: Vec<String> = self
            .tables
            .iter()
            .take(SHOWN)
            .map(|t| shown(t).into_owned())
            .collect();
        if self.tables.len() > SHOWN {
            names.push("…".into());
        }
        format!("{} table(s): {}", self.tables.len(), names.join(", "))
    }
}

/// Lists the tables of the current schema (PostgreSQL), the current database (MySQL,
/// MariaDB) or `main` (SQLite), and looks for the demo's marker.
async fn inventory(db: &DatabaseConnection) -> Result<Inventory, String> {
    let backend = db.get_database_backend();
    let rows = |sql: &'static str| async move {
        db.query_all_raw(Statement::from_string(backend, sql))
            .await
            .map_err(|e| format!("cannot list the database's tables: {e}"))
    };
    let (place, list) = match backend {
        DatabaseBackend::Sqlite => {
            let file = rows("SELECT file AS name FROM pragma_database_list WHERE name = 'main'")
                .await?
                .first()
                .map(text_of)
                .unwrap_or_default();
            let place = if file.is_empty() {
                "the in-memory SQLite database".to_owned()
            } else {
                format!("the SQLite database {}", shown(&file))
            };
            (
                place,
                "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') \
                 AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name",
            )
        }
        DatabaseBackend::Postgres => {
            let found = rows(
                "SELECT current_database()::text AS name, current_schema()::text AS schema_name",
            )
            .await?;
            let row = found
                .first()
                .ok_or("the server named no current database")?;
            let database = text_of(row);
            let schema: Option<String> = row.try_get("", "schema_name").map_err(db_err)?;
            let Some(schema) = schema else {
                return Err(format!(
                    "refusing to run the demo: no schema of database {} is selected (the \
                     search_path names none that exists); create one or fix the search_path",
                    shown(&database)
                ));
            };
            (
                format!(
                    "schema {} of the PostgreSQL database {}",
                    shown(&schema),
                    shown(&database)
                ),
                // pg_class, not information_schema: it lists tables whatever the privileges.
                "SELECT c.relname::text AS name FROM pg_catalog.pg_class c \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'v', 'm', 'f') \
                 ORDER BY 1",
            )
        }
        DatabaseBackend::MySql => {
            let found = rows("SELECT DATABASE() AS name").await?;
            let database = found.first().map(text_of).unwrap_or_default();
            if database.is_empty() {
                return Err(
                    "refusing to run the demo: the URL names no database (end it with /NAME of \
                     an empty database)"
                        .into(),
                );
            }
            (
                format!("the database {}", shown(&database)),
                "SELECT CAST(table_name AS CHAR) AS name FROM information_schema.tables \
                 WHERE table_schema = DATABASE() ORDER BY 1",
            )
        }
        other => return Err(format!("the demo does not support {other:?} databases")),
    };
    let tables: Vec<String> = rows(list).await?.iter().map(text_of).collect();
    let demo_made = tables.iter().any(|t| t == MARKER_TABLE) && {
        // Scoped: the trait's `min`/`max` would shadow `Ord`'s elsewhere in this file.
        use sea_orm::sea_query::ExprTrait;
        let query = Query::select()
            .expr(Expr::cust("COUNT(*)"))
            .from(MARKER_TABLE)
            .and_where(Expr::col("made_by").eq(MARKER_MAKER))
            .to_owned();
        let marks: i64 = db
            .query_one(&query)
            .await
            .map_err(db_err)?
            .map(|r| r.try_get_by_index(0))
            .transpose()
            .map_err(db_err)?
            .unwrap_or(0);
        marks > 0
    };
    Ok(Inventory {
        place,
        tables,
        demo_made,
    })
}

/// Column `name` as text: MariaDB reports catalog strings as binary on some versions.
fn text_of(row: &QueryResult) -> String {
    row.try_get::<String>("", "name")
        .or_else(|_| {
            row.try_get::<Vec<u8>>("", "name")
                .map(|b| String::from_utf8_lossy(&b).into_owned())
        })
        .unwrap_or_default()
}

/// The demo writes only into a database with no tables. One it made earlier is refused too
/// when given by URL: resetting a server database is a decision for its owner.
fn refuse_unless_empty(found: &Inventory, by_url: bool) -> Result<(), String> {
    if found.tables.is_empty() {
        return Ok(());
    }
    let elsewhere = if by_url {
        ", or run `clinic demo` without --database-url or DATABASE_URL to use its own \
         clinic-demo.db"
    } else {
        ""
    };
    if found.demo_made {
        return Err(format!(
            "refusing to run the demo: {} holds a previous demo run ({}); the demo never resets \
             a database it is given: drop it or use an empty database{elsewhere}",
            found.place,
            found.tables_listed()
        ));
    }
    Err(format!(
        "refusing to run the demo: {} is not empty ({}); the demo only writes into a database \
         with no tables: pass --database-url of an empty database{elsewhere}",
        found.place,
        found.tables_listed()
    ))
}

/// Marks a database as the demo's, before anything else is written to it: only a marked
/// `clinic-demo.db` is ever replaced by a later run.
async fn mark(db: &DatabaseConnection) -> Result<(), String> {
    let failed = |e: String| format!("cannot mark the database as the demo's: {e}");
    // A primary key, for servers that require one on every table.
    db.execute_unprepared(&format!(
        "CREATE TABLE {MARKER_TABLE} (id INTEGER NOT NULL PRIMARY KEY, \
         run_started VARCHAR(40) NOT NULL, made_by VARCHAR(40) NOT NULL)"
    ))
    .await
    .map_err(|e| failed(db_err(e)))?;
    let mut insert = Query::insert();
    insert
        .into_table(MARKER_TABLE)
        .columns(["id", "run_started", "made_by"]);
    insert
        .values([
            1.into(),
            Utc::now().to_rfc3339().into(),
            MARKER_MAKER.into(),
        ])
        .map_err(|e| failed(e.to_string()))?;
    db.execute(&insert).await.map_err(|e| failed(db_err(e)))?;
    Ok(())
}
