//! `clinic demo`: a guided tour of every feature, printing what it does in plain words.

use std::sync::Arc;
use std::time::Instant;

use chrono::NaiveDate;
use encrypted_columns::blind_index::leakage_report;
use encrypted_columns::envelope::{HEADER_LEN, NONCE_LEN, OVERHEAD};
use encrypted_columns::keyring::{self, generate_key};
use encrypted_columns::{KeyId, Keyring};
use migration::{Migrator, MigratorTrait};
use sea_orm::sea_query::{Expr, Query};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, PaginatorTrait, QueryFilter,
    QuerySelect, QueryTrait, TransactionTrait, Value,
};

use crate::clinic::{Clinic, NewPatient, data_key_id, db_err};
use crate::commands::legacy::{self, Step};
use crate::commands::records::{self, TranscriptFile};
use crate::connect::connect;
use crate::entities::audit_entry;
use crate::entities::consent_record::Method;
use crate::entities::patient::{self, Column};
use crate::entities::transcript::Segment;
use crate::fake;
use crate::keys::{self, KeySource};
use crate::output::say;

/// SQLite file the demo starts afresh when no database URL is given.
pub const DEFAULT_DEMO_FILE: &str = "clinic-demo.db";

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

/// Runs the tour against `database_url`, or a fresh SQLite file, with `population` generated
/// patients.
pub async fn run(database_url: Option<&str>, population: u32) -> Result<(), String> {
    if population == 0 {
        return Err("--patients must be at least 1".into());
    }
    let (ring, source) = keys::load(true)?;
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
    let ring = Arc::new(ring);
    keyring::install(Arc::clone(&ring));

    let url = match database_url {
        Some(url) => url.to_string(),
        None => {
            match std::fs::remove_file(DEFAULT_DEMO_FILE) {
                Ok(()) => {
                    say!("Starting from a fresh {DEFAULT_DEMO_FILE} (the old one was removed).")
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    say!("Creating {DEFAULT_DEMO_FILE} (embedded SQLite, no server needed).")
                }
                Err(e) => return Err(format!("cannot remove the old {DEFAULT_DEMO_FILE}: {e}")),
            }
            for suffix in ["-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{DEFAULT_DEMO_FILE}{suffix}"));
            }
            format!("sqlite://{DEFAULT_DEMO_FILE}?mode=rwc")
        }
    };
    let db = connect(&url).await?;
    Migrator::up(&db, None)
        .await
        .map_err(|e| format!("cannot create the clinic's tables: {e}"))?;
    let clinic = Clinic::new(db.clone(), Arc::clone(&ring), "demo".to_owned());

    say!("\n1. Registering {population} fictional patients (generated; no real data).");
    let started = Instant::now();
    let txn = db.begin().await.map_err(db_err)?;
    let mut rng = fake::Rng::new(DEMO_SEED);
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
        clinic.add_patient_in(&txn, new).await?;
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

    rotation(&clinic, &ring, alba).await?;
    erasure(&clinic, population).await?;
    audit_trail(&clinic, alba).await?;

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
    let (found, _) = clinic
        .find_patients(condition, || {
            patient::Entity::find_all_by_email_bidx(db, typed.as_str())
        })
        .await?;
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
    let (by_phone, _) = clinic
        .find_patients(condition, || {
            patient::Entity::find_all_by_phone_last4_bidx(db, last4)
        })
        .await?;
    say!(
        "   find by phone last 4 \"{last4}\": the 16-bit index matched {candidates} row(s); after \
         decrypting, {} really end in {last4}.\n   (Truncation makes unrelated numbers share \
         index values, so the index alone does not tell who shares a number.)",
        by_phone.len()
    );
    let (y, m, d) = ALBA.born;
    let born = NaiveDate::from_ymd_opt(y, m, d).ok_or("bad demo date")?;
    let last = ALBA.last_name.to_uppercase();
    let condition =
        patient::Entity::name_dob_bidx_condition(last.as_str(), born).map_err(|e| e.to_string())?;
    let (by_name, _) = clinic
        .find_patients(condition, || {
            patient::Entity::find_all_by_name_dob_bidx(db, last.as_str(), born)
        })
        .await?;
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

/// Step 9: rotate the clinic key: re-wrap the patient keys, re-seal the legacy table.
async fn rotation(clinic: &Clinic, ring: &Arc<Keyring>, alba: i32) -> Result<(), String> {
    say!("\n9. Rotating the clinic key (`clinic keys rotate`):");
    let old = ring.active_key_id();
    let new = KeyId(old.0 + 1);
    let mut next = (**ring).clone();
    next.add_key(new, *generate_key())
        .map_err(|e| e.to_string())?;
    next.promote(new).map_err(|e| e.to_string())?;
    let next = Arc::new(next);
    keyring::install(Arc::clone(&next));
    let rotating = Clinic::new(clinic.db.clone(), Arc::clone(&next), "demo".to_owned());
    say!(
        "   A new key {new} is added and made active (in production: added to \
         ENCRYPTED_COLUMNS_KEYS on every server, then ENCRYPTED_COLUMNS_ACTIVE_KEY={new})."
    );
    let summary =
        crate::commands::keys::rotate_all(&clinic.db, next.key_ids().collect(), 500, true).await?;
    let (row, _) = rotating.load_patient(&clinic.db, alba).await?;
    say!(
        "   Patient data was not rewritten: only its {} wrapped keys were. #{alba} still reads \
         ({} {}), and key {old} {}.",
        summary
            .resealed
            .get("patient_keys.wrapped_key")
            .copied()
            .unwrap_or(0),
        row.first_name.expose(),
        row.last_name.expose(),
        if summary.retirable_keys.contains(&old.0) {
            "seals nothing any more: it can be retired"
        } else {
            "is still in use"
        }
    );
    Ok(())
}

/// Step 10: crypto-shredding one patient.
async fn erasure(clinic: &Clinic, population: u32) -> Result<(), String> {
    say!("\n10. Erasing a patient (`clinic patient erase ID --yes`, GDPR art. 17):");
    let ring = keyring::current().map_err(|e| e.to_string())?;
    let clinic = Clinic::new(clinic.db.clone(), ring, "demo".to_owned());
    let victim = i32::try_from(population.min(2)).unwrap_or(1);
    let key_row = clinic.key_row_of(&clinic.db, victim).await?;
    records::add_note(
        &clinic,
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
        "   Patient #{victim}: data key {} destroyed; deleted the patient row, {} note(s), {} \
         consent(s), {} transcript(s).\n   Verified: {} row(s) left, and a copy of its e-mail \
         envelope (what a backup holds) no longer opens:\n   {}",
        data_key_id(key_row)?,
        report.notes,
        report.consents,
        report.transcripts,
        report.remaining_rows,
        report.backup_copy_error
    );
    Ok(())
}

/// Step 11: the audit trail.
async fn audit_trail(clinic: &Clinic, alba: i32) -> Result<(), String> {
    say!("\n11. The audit trail (`clinic audit list`), append-only:");
    let db = &clinic.db;
    let entries = audit_entry::Entity::find()
        .filter(audit_entry::Column::PatientId.is_in([alba, 1, 2]))
        .all(db)
        .await
        .map_err(db_err)?;
    let about_alba = entries
        .iter()
        .filter(|e| e.patient_id == Some(alba))
        .count();
    say!(
        "   {} entries about #{alba} (create, records added, reads); the erased patient's \
         entries stay, their sealed details unreadable.",
        about_alba
    );
    let refused = db
        .execute_unprepared("UPDATE audit_log SET actor = 'someone else'")
        .await;
    match refused {
        Err(err) if err.to_string().contains("append-only") => say!(
            "   Rewriting history is refused by a trigger: UPDATE audit_log … → \"audit_log is \
             append-only\"."
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
