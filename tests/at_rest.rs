//! What the database holds: for generated plaintexts written through SeaORM, the stored
//! column bytes are envelopes of exactly `plaintext + 45` bytes with no trace of the plaintext,
//! and equal plaintexts are stored differently.

use encrypted_columns::envelope::{HEADER_LEN, NONCE_LEN, OVERHEAD};
use encrypted_columns::{EncryptedString, Error};
use encrypted_columns_tests::entities::patient::{
    self, MedicalRecord, PatientData, PatientEmail, Visit,
};
use encrypted_columns_tests::{backend_tests, raw};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, PaginatorTrait, QueryFilter,
};

/// Cases per backend: each one is an insert and a handful of reads.
const CASES: u32 = 24;

/// One generated patient: the fields that vary in length and content.
#[derive(Debug, Clone)]
struct Case {
    email: String,
    notes: String,
    scan: Vec<u8>,
    record: MedicalRecord,
}

fn email() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9._%+-]{1,24}@[a-z0-9-]{1,16}\\.[a-z]{2,8}",
        // Internationalised addresses: any printable Unicode around the @.
        "\\PC{1,16}@\\PC{1,16}\\.\\PC{2,6}",
    ]
}

fn record() -> impl Strategy<Value = MedicalRecord> {
    (
        prop::collection::vec("\\PC{1,40}", 0..6),
        prop::option::of("(A|B|AB|O)[+-]"),
        any::<u16>(),
        // Finite floats only: JSON has no NaN or infinity.
        prop::num::f64::NORMAL | prop::num::f64::SUBNORMAL | prop::num::f64::ZERO,
        prop::option::of(any::<u8>()),
        prop::collection::vec(
            (
                "[0-9]{4}-[0-9]{2}-[0-9]{2}",
                "\\PC{1,30}",
                prop::collection::vec("[A-Z][0-9]{2}\\.[0-9]", 0..4),
                prop::option::of("\\PC{0,80}"),
            ),
            0..4,
        ),
    )
        .prop_map(
            |(allergies, blood_type, height_cm, weight_kg, resting_heart_rate, visits)| {
                MedicalRecord {
                    allergies,
                    blood_type,
                    vitals: patient::Vitals {
                        height_cm,
                        weight_kg,
                        resting_heart_rate,
                    },
                    visits: visits
                        .into_iter()
                        .map(|(date, clinician, codes, notes)| Visit {
                            date,
                            clinician,
                            codes,
                            notes,
                        })
                        .collect(),
                }
            },
        )
}

fn case() -> impl Strategy<Value = Case> {
    (
        email(),
        "\\PC{0,300}",
        prop::collection::vec(any::<u8>(), 0..512),
        record(),
    )
        .prop_map(|(email, notes, scan, record)| Case {
            email,
            notes,
            scan,
            record,
        })
}

/// Fails if `plaintext` shows in `stored`: the whole of it when it is 4 to 7 bytes long,
/// and every 8-byte window of it when longer (so no fragment leaks either). By chance alone
/// a 45+ byte envelope contains a given 4-byte string with probability below 2^-25.
fn assert_not_leaked(stored: &[u8], plaintext: &[u8], what: &str) -> Result<(), String> {
    if plaintext.len() < 4 {
        return Ok(());
    }
    let window = plaintext.len().min(8);
    match plaintext
        .windows(window)
        .find(|fragment| raw::contains(stored, fragment))
    {
        Some(fragment) => Err(format!(
            "{what}: stored bytes contain plaintext fragment {fragment:?}"
        )),
        None => Ok(()),
    }
}

fn assert_envelope(stored: &[u8], plaintext: &[u8], what: &str) -> Result<(), String> {
    if stored.len() != plaintext.len() + OVERHEAD {
        return Err(format!(
            "{what}: {} stored bytes for a {}-byte plaintext (expected +{OVERHEAD})",
            stored.len(),
            plaintext.len()
        ));
    }
    if stored[..HEADER_LEN] != [1, 0, 0, 0, 1] {
        return Err(format!(
            "{what}: header {:?} is not version 1, key 1",
            &stored[..HEADER_LEN]
        ));
    }
    assert_not_leaked(stored, plaintext, what)
}

async fn check_case(conn: &DatabaseConnection, case: &Case) -> Result<(), String> {
    let data = PatientData {
        email: case.email.clone(),
        notes: Some(case.notes.clone()),
        scan: case.scan.clone(),
        record: case.record.clone(),
        ..PatientData::sample(case.email.len() as u32)
    };
    let sealed = data.seal().map_err(|e| e.to_string())?;
    let model = sealed.insert(conn).await.map_err(|e| e.to_string())?;
    let id = model.id;
    let stored = |column: &'static str| async move {
        raw::get_envelope(conn, "patients", column, id)
            .await
            .map_err(|e| format!("{column}: {e}"))
    };

    assert_envelope(&stored("email").await?, case.email.as_bytes(), "email")?;
    assert_envelope(&stored("notes").await?, case.notes.as_bytes(), "notes")?;
    assert_envelope(&stored("scan").await?, &case.scan, "scan")?;
    let record_stored = stored("record").await?;
    let json = serde_json::to_vec(&case.record).map_err(|e| e.to_string())?;
    assert_envelope(&record_stored, &json, "record")?;
    for (i, allergy) in case.record.allergies.iter().enumerate() {
        assert_not_leaked(&record_stored, allergy.as_bytes(), &format!("allergy {i}"))?;
    }
    for (i, visit) in case.record.visits.iter().enumerate() {
        assert_not_leaked(
            &record_stored,
            visit.clinician.as_bytes(),
            &format!("clinician {i}"),
        )?;
    }
    // The email is nowhere in the row, not only not in its own column.
    for column in ["phone", "notes", "scan", "record", "birth_date"] {
        assert_not_leaked(&stored(column).await?, case.email.as_bytes(), column)?;
    }

    let found = patient::Entity::find_by_id(id)
        .one(conn)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("inserted row not found")?;
    if PatientData::of(&found) != data {
        return Err("row read back differs from the row written".into());
    }
    Ok(())
}

backend_tests!(
    /// Property: through SeaORM, on every backend, plaintext never reaches the database.
    generated_plaintexts_are_not_stored,
    |db: &TestDb| async move {
        let conn = db.conn.clone();
        let runtime = tokio::runtime::Handle::current();
        // proptest drives the cases synchronously; each case runs its async checks on this
        // test's runtime from a blocking thread, while the test's own thread keeps driving
        // the runtime's I/O by awaiting the blocking task.
        let outcome = tokio::task::spawn_blocking(move || {
            let mut runner = TestRunner::new(Config {
                cases: CASES,
                failure_persistence: None,
                ..Config::default()
            });
            let result = runner.run(&case(), |case| {
                runtime
                    .block_on(check_case(&conn, &case))
                    .map_err(TestCaseError::fail)
            });
            result.map_err(|e| e.to_string())
        })
        .await?;
        outcome?;
        let rows = patient::Entity::find().count(&db.conn).await?;
        assert!(rows >= u64::from(CASES), "only {rows} rows were written");
        Ok(())
    }
);

backend_tests!(
    /// Equal plaintexts are stored as unrelated envelopes (fresh nonce every time), so the
    /// database cannot tell which rows share a value, and SQL equality on a new seal finds
    /// nothing.
    equal_plaintexts_are_stored_differently,
    |db: &TestDb| async move {
        let conn = &db.conn;
        let data = PatientData::sample(7);
        let first = data.seal()?.insert(conn).await?.id;
        let second = data.seal()?.insert(conn).await?.id;
        for column in [
            "email",
            "phone",
            "scan",
            "record",
            "balance_cents",
            "weight_kg",
            "smoker",
            "birth_date",
        ] {
            let a = raw::get_envelope(conn, "patients", column, first).await?;
            let b = raw::get_envelope(conn, "patients", column, second).await?;
            assert_eq!(a.len(), b.len(), "{column}");
            assert_eq!(a[..HEADER_LEN], b[..HEADER_LEN], "{column} header");
            let nonces = HEADER_LEN..HEADER_LEN + NONCE_LEN;
            assert_ne!(a[nonces.clone()], b[nonces], "{column} nonce reused");
            assert_ne!(
                a[HEADER_LEN + NONCE_LEN..],
                b[HEADER_LEN + NONCE_LEN..],
                "{column} ciphertext"
            );
        }
        let fresh = EncryptedString::<PatientEmail>::new(data.email.clone())?;
        let matches = patient::Entity::find()
            .filter(patient::Column::Email.eq(fresh))
            .count(conn)
            .await?;
        assert_eq!(matches, 0, "SQL equality on an envelope matched another seal");
        Ok(())
    }
);

backend_tests!(
    /// The check above can fail: plaintext written into a column is seen by `raw::contains`,
    /// and the entity refuses it with a typed error instead of returning it.
    plaintext_in_an_encrypted_column_is_detected_and_refused,
    |db: &TestDb| async move {
        let conn = &db.conn;
        let id = PatientData::sample(8).seal()?.insert(conn).await?.id;
        let short = b"left behind by a migration".to_vec();
        let long = b"a plaintext long enough to pass for an envelope, 45+ bytes".to_vec();
        for (plaintext, expected_len) in [(short, Some(26)), (long, None)] {
            raw::set_bytes(conn, "patients", "notes", id, Some(plaintext.clone())).await?;
            let stored = raw::get_envelope(conn, "patients", "notes", id).await?;
            assert!(raw::contains(&stored, &plaintext));
            assert!(assert_not_leaked(&stored, &plaintext, "notes").is_err());

            let err = patient::Entity::find_by_id(id)
                .one(conn)
                .await
                .err()
                .ok_or("plaintext in an encrypted column must not read back")?;
            match Error::from_db_err(&err) {
                Some(Error::Malformed {
                    table: "patients",
                    column: "notes",
                    problem,
                }) => {
                    let text = problem.to_string();
                    match expected_len {
                        Some(len) => assert!(text.starts_with(&format!("{len} bytes")), "{text}"),
                        None => assert!(text.contains("unknown format version"), "{text}"),
                    }
                    // Errors never quote the stored bytes.
                    assert!(!err.to_string().contains("migration"), "{err}");
                    assert!(!err.to_string().contains("plaintext long"), "{err}");
                }
                other => return Err(format!("expected Malformed, got {other:?}: {err}").into()),
            }
        }
        Ok(())
    }
);
