//! Every encrypted value type through every SeaORM write and read path, on every backend:
//! what goes in comes back exactly, NULL stays NULL, and models never print plaintext.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use encrypted_columns::envelope::OVERHEAD;
use encrypted_columns::{Encrypted, EncryptedString, Json};
use encrypted_columns_tests::entities::patient::{
    self, MedicalRecord, PatientBirthDate, PatientData, PatientEmail, PatientLastVisit,
    PatientNotes, Visit, Vitals,
};
use encrypted_columns_tests::entities::vital;
use encrypted_columns_tests::{backend, backend_tests, raw};
use sea_orm::ActiveValue::{NotSet, Set};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DerivePartialModel, EntityTrait, IntoActiveModel,
    PaginatorTrait, QueryFilter, QueryOrder,
};

/// The encrypted columns of `patients`, in entity order.
const PATIENT_ENCRYPTED_COLUMNS: [&str; 10] = [
    "email",
    "phone",
    "notes",
    "scan",
    "record",
    "balance_cents",
    "weight_kg",
    "smoker",
    "birth_date",
    "last_visit",
];

backend_tests!(active_model_insert_and_find, |db: &TestDb| async move {
    let conn = &db.conn;
    let mut inserted = Vec::new();
    for n in 0..4 {
        let data = PatientData::sample(n);
        let model = data.seal()?.insert(conn).await?;
        assert_eq!(PatientData::of(&model), data, "insert returned model {n}");
        inserted.push((model, data));
    }
    for (model, data) in &inserted {
        let found = patient::Entity::find_by_id(model.id)
            .one(conn)
            .await?
            .ok_or("row not found")?;
        assert_eq!(&PatientData::of(&found), data);
        // PartialEq compares plaintexts, so a model read back equals the one written even
        // though nothing was re-encrypted identically.
        assert_eq!(&found, model);
    }
    let all = patient::Entity::find()
        .order_by_asc(patient::Column::Id)
        .all(conn)
        .await?;
    let expected: Vec<_> = inserted.iter().map(|(m, _)| m.clone()).collect();
    assert_eq!(all, expected);
    // Different rows differ: equality is not trivially true.
    assert_ne!(all[0], all[1]);
    Ok(())
});

backend_tests!(entity_insert_and_insert_many, |db: &TestDb| async move {
    let conn = &db.conn;
    let first = PatientData::sample(10);
    let result = patient::Entity::insert(first.seal()?).exec(conn).await?;
    let found = patient::Entity::find_by_id(result.last_insert_id)
        .one(conn)
        .await?
        .ok_or("row not found")?;
    assert_eq!(PatientData::of(&found), first);

    let many: Vec<PatientData> = (11..18).map(PatientData::sample).collect();
    let models = many
        .iter()
        .map(PatientData::seal)
        .collect::<Result<Vec<_>, _>>()?;
    patient::Entity::insert_many(models).exec(conn).await?;

    let all = patient::Entity::find()
        .order_by_asc(patient::Column::Id)
        .all(conn)
        .await?;
    let got: Vec<PatientData> = all.iter().map(PatientData::of).collect();
    let mut expected = vec![first];
    expected.extend(many.iter().cloned());
    assert_eq!(got, expected);

    // Plaintext columns still filter in SQL.
    let active = patient::Entity::find()
        .filter(patient::Column::Active.eq(true))
        .count(conn)
        .await?;
    assert_eq!(
        active,
        expected.iter().filter(|p| p.active).count() as u64,
        "active patients"
    );
    Ok(())
});

backend_tests!(
    update_changes_only_the_set_field,
    |db: &TestDb| async move {
        let conn = &db.conn;
        let data = PatientData::sample(20);
        let model = data.seal()?.insert(conn).await?;
        let mut before = Vec::new();
        for column in PATIENT_ENCRYPTED_COLUMNS {
            before.push(raw::get_bytes(conn, "patients", column, model.id).await?);
        }

        let mut active = model.clone().into_active_model();
        active.email = Set(EncryptedString::new("new.address@example.net".into())?);
        let updated = active.update(conn).await?;
        assert_eq!(updated.email.expose(), "new.address@example.net");

        let found = patient::Entity::find_by_id(model.id)
            .one(conn)
            .await?
            .ok_or("row not found")?;
        let mut expected = data.clone();
        expected.email = "new.address@example.net".into();
        assert_eq!(PatientData::of(&found), expected);
        assert_eq!(found, updated);

        // Only `email` was written: every other envelope is byte-for-byte what it was.
        for (column, old) in PATIENT_ENCRYPTED_COLUMNS.iter().zip(&before) {
            let now = raw::get_bytes(conn, "patients", column, model.id).await?;
            if *column == "email" {
                assert_ne!(&now, old, "email envelope should be new");
            } else {
                assert_eq!(&now, old, "{column} envelope should be untouched");
            }
        }

        // Updating a nullable field to a value and back to None.
        let mut active = found.into_active_model();
        active.last_visit = Set(None);
        active.notes = Set(Some(Encrypted::new("second opinion".into())?));
        let updated = active.update(conn).await?;
        assert_eq!(updated.last_visit, None);
        assert_eq!(
            updated.notes.as_ref().map(|n| n.expose().as_str()),
            Some("second opinion")
        );
        assert_eq!(
            raw::ids_where_null(conn, "patients", "last_visit").await?,
            vec![model.id]
        );
        assert!(
            raw::ids_where_null(conn, "patients", "notes")
                .await?
                .is_empty()
        );
        Ok(())
    }
);

/// Only some columns, encrypted ones among them.
#[derive(Debug, PartialEq, DerivePartialModel)]
#[sea_orm(entity = "patient::Entity")]
struct ContactCard {
    id: i32,
    email: EncryptedString<PatientEmail>,
    notes: Option<EncryptedString<PatientNotes>>,
    birth_date: Encrypted<NaiveDate, PatientBirthDate>,
    last_visit: Option<Encrypted<DateTime<Utc>, PatientLastVisit>>,
    active: bool,
}

backend_tests!(partial_model_reads_subset, |db: &TestDb| async move {
    let conn = &db.conn;
    let samples: Vec<PatientData> = (30..33).map(PatientData::sample).collect();
    let mut ids = Vec::new();
    for data in &samples {
        ids.push(data.seal()?.insert(conn).await?.id);
    }
    let cards = patient::Entity::find()
        .order_by_asc(patient::Column::Id)
        .into_partial_model::<ContactCard>()
        .all(conn)
        .await?;
    assert_eq!(cards.len(), samples.len());
    for ((card, data), id) in cards.iter().zip(&samples).zip(&ids) {
        assert_eq!(card.id, *id);
        assert_eq!(card.email.expose(), &data.email);
        assert_eq!(card.notes.as_ref().map(|n| n.expose()), data.notes.as_ref());
        assert_eq!(card.birth_date.expose(), &data.birth_date);
        assert_eq!(
            card.last_visit.as_ref().map(|v| *v.expose()),
            data.last_visit
        );
        assert_eq!(card.active, data.active);
    }
    let one = patient::Entity::find_by_id(ids[1])
        .into_partial_model::<ContactCard>()
        .one(conn)
        .await?
        .ok_or("row not found")?;
    assert_eq!(one, cards[1]);
    Ok(())
});

backend_tests!(null_stays_null, |db: &TestDb| async move {
    let conn = &db.conn;
    // Odd samples have no notes and no last visit.
    let data = PatientData::sample(41);
    assert!(data.notes.is_none() && data.last_visit.is_none());
    let with_values = PatientData::sample(42);
    let id = data.seal()?.insert(conn).await?.id;
    let other = with_values.seal()?.insert(conn).await?.id;

    assert_eq!(raw::get_bytes(conn, "patients", "notes", id).await?, None);
    assert_eq!(
        raw::get_bytes(conn, "patients", "last_visit", id).await?,
        None
    );
    assert_eq!(
        raw::ids_where_null(conn, "patients", "notes").await?,
        vec![id]
    );
    assert_eq!(
        raw::ids_where_null(conn, "patients", "last_visit").await?,
        vec![id]
    );
    // Non-null optional values are envelopes like any other.
    let notes = raw::get_envelope(conn, "patients", "notes", other).await?;
    let expected_notes = with_values.notes.as_ref().ok_or("sample has notes")?;
    assert_eq!(notes.len(), expected_notes.len() + OVERHEAD);

    let found = patient::Entity::find_by_id(id)
        .one(conn)
        .await?
        .ok_or("row not found")?;
    assert_eq!(found.notes, None);
    assert_eq!(found.last_visit, None);
    let found_other = patient::Entity::find_by_id(other)
        .one(conn)
        .await?
        .ok_or("row not found")?;
    assert_eq!(PatientData::of(&found_other), with_values);
    Ok(())
});

/// A patient holding the edge values of every type `patients` stores.
fn extreme_patient() -> PatientData {
    PatientData {
        email: String::new(),
        phone: "\u{0}\u{7f}\u{feff}🏥\u{10FFFF}".into(),
        notes: Some("x".repeat(10_000)),
        scan: (0..=255u8).chain((0..=255u8).rev()).collect(),
        record: MedicalRecord {
            allergies: vec![
                String::new(),
                "\"quoted\" \\ back\\slash \u{1} control".into(),
                "日本語テキスト".into(),
            ],
            blood_type: None,
            vitals: Vitals {
                height_cm: u16::MAX,
                weight_kg: 0.1 + 0.2,
                resting_heart_rate: Some(u8::MAX),
            },
            visits: vec![Visit {
                date: "0001-01-01".into(),
                clinician: "\u{202e}rtl".into(),
                codes: vec![],
                notes: Some(format!("{}", f64::MAX)),
            }],
        },
        balance_cents: i64::MIN,
        weight_kg: f64::MIN_POSITIVE / 2.0, // subnormal
        smoker: false,
        birth_date: NaiveDate::MIN,
        last_visit: Some(DateTime::<Utc>::MAX_UTC),
        active: false,
    }
}

backend_tests!(scalar_and_date_edges_round_trip, |db: &TestDb| async move {
    let conn = &db.conn;
    let mut patients = vec![extreme_patient()];
    let mut other = extreme_patient();
    other.email = "e".into();
    other.balance_cents = i64::MAX;
    other.weight_kg = -0.0;
    other.smoker = true;
    other.birth_date = NaiveDate::MAX;
    other.last_visit = Some(DateTime::<Utc>::MIN_UTC);
    other.record.vitals.weight_kg = f64::MAX;
    patients.push(other);
    for (weight, label) in [
        (f64::NAN, "NaN"),
        (f64::INFINITY, "inf"),
        (f64::NEG_INFINITY, "-inf"),
        (f64::EPSILON, "epsilon"),
        (5e-324, "smallest subnormal"),
    ] {
        let mut p = extreme_patient();
        p.weight_kg = weight;
        p.email = label.into();
        patients.push(p);
    }

    for data in &patients {
        let id = data.seal()?.insert(conn).await?.id;
        let found = patient::Entity::find_by_id(id)
            .one(conn)
            .await?
            .ok_or("row not found")?;
        let got = PatientData::of(&found);
        // f64 compared by bits: NaN and -0.0 must survive exactly.
        assert_eq!(
            got.weight_kg.to_bits(),
            data.weight_kg.to_bits(),
            "weight_kg of {:?}",
            data.email
        );
        assert_eq!(
            got.record.vitals.weight_kg.to_bits(),
            data.record.vitals.weight_kg.to_bits()
        );
        // Everything else compared with PartialEq (NaN != NaN, so clear the floats first).
        let (mut got, mut want) = (got, data.clone());
        got.weight_kg = 0.0;
        want.weight_kg = 0.0;
        assert_eq!(got, want);
        // Fixed-width encodings: lengths reveal nothing about the value.
        for (column, width) in [
            ("balance_cents", 8),
            ("weight_kg", 8),
            ("smoker", 1),
            ("birth_date", 4),
            ("last_visit", 12),
        ] {
            let stored = raw::get_envelope(conn, "patients", column, id).await?;
            assert_eq!(stored.len(), width + OVERHEAD, "{column}");
        }
        let record = raw::get_envelope(conn, "patients", "record", id).await?;
        assert_eq!(
            record.len(),
            serde_json::to_vec(&data.record)?.len() + OVERHEAD
        );
    }

    // The other integer, float and date-time widths.
    let edges: [(i32, i16, u32, u64, f32, NaiveDateTime); 4] = [
        (
            i32::MIN,
            i16::MIN,
            0,
            0,
            f32::MIN_POSITIVE,
            NaiveDateTime::MIN,
        ),
        (
            i32::MAX,
            i16::MAX,
            u32::MAX,
            u64::MAX,
            f32::MAX,
            NaiveDateTime::MAX,
        ),
        (
            0,
            -1,
            1,
            1 << 63,
            -0.0,
            DateTime::from_timestamp(-1, 999_999_999)
                .ok_or("timestamp")?
                .naive_utc(),
        ),
        (
            -1,
            0,
            72,
            9_007_199_254_740_993,
            f32::NAN,
            NaiveDate::from_ymd_opt(2016, 12, 31)
                .and_then(|d| d.and_hms_nano_opt(23, 59, 59, 1_999_999_999))
                .ok_or("leap second")?,
        ),
    ];
    for (heart_rate, systolic, steps, serial, temperature, taken_at) in edges {
        let model = vital::ActiveModel {
            id: NotSet,
            heart_rate: Set(Encrypted::new(heart_rate)?),
            systolic: Set(Encrypted::new(systolic)?),
            steps: Set(Encrypted::new(steps)?),
            device_serial: Set(Encrypted::new(serial)?),
            temperature_c: Set(Encrypted::new(temperature)?),
            taken_at: Set(Encrypted::new(taken_at)?),
        }
        .insert(conn)
        .await?;
        let found = vital::Entity::find_by_id(model.id)
            .one(conn)
            .await?
            .ok_or("row not found")?;
        assert_eq!(*found.heart_rate.expose(), heart_rate);
        assert_eq!(*found.systolic.expose(), systolic);
        assert_eq!(*found.steps.expose(), steps);
        assert_eq!(*found.device_serial.expose(), serial);
        assert_eq!(
            found.temperature_c.expose().to_bits(),
            temperature.to_bits()
        );
        // Leap-second nanoseconds are kept exactly, not normalised.
        assert_eq!(*found.taken_at.expose(), taken_at);
        for (column, width) in [
            ("heart_rate", 4),
            ("systolic", 2),
            ("steps", 4),
            ("device_serial", 8),
            ("temperature_c", 4),
            ("taken_at", 12),
        ] {
            let stored = raw::get_envelope(conn, "vitals", column, model.id).await?;
            assert_eq!(stored.len(), width + OVERHEAD, "vitals.{column}");
        }
    }
    Ok(())
});

backend_tests!(
    stored_envelopes_open_outside_seaorm,
    |db: &TestDb| async move {
        let conn = &db.conn;
        let data = PatientData::sample(50);
        let id = data.seal()?.insert(conn).await?.id;
        // The raw column bytes are exactly an envelope the library opens on its own.
        let email = raw::get_envelope(conn, "patients", "email", id).await?;
        let opened = EncryptedString::<PatientEmail>::from_envelope(email.clone())?;
        assert_eq!(opened.expose(), &data.email);
        assert_eq!(opened.envelope(), email.as_slice());
        let record = raw::get_envelope(conn, "patients", "record", id).await?;
        let opened =
            Encrypted::<Json<MedicalRecord>, patient::PatientRecord>::from_envelope(record)?;
        assert_eq!(opened.expose().0, data.record);
        Ok(())
    }
);

backend_tests!(
    debug_and_display_redact_plaintext,
    |db: &TestDb| async move {
        let conn = &db.conn;
        let mut data = PatientData::sample(60);
        data.email = "grace.hopper@navy.example".into();
        data.phone = "+1 555 0100 4242".into();
        data.notes = Some("DIAGNOSIS-CONFIDENTIAL".into());
        data.record.allergies = vec!["SECRET-ALLERGEN".into()];
        data.balance_cents = 987_654_321_987;
        data.birth_date = NaiveDate::from_ymd_opt(1906, 12, 9).ok_or("date")?;
        let model = data.seal()?.insert(conn).await?;
        let found = patient::Entity::find_by_id(model.id)
            .one(conn)
            .await?
            .ok_or("row not found")?;

        for printed in [
            format!("{found:?}"),
            format!("{found:#?}"),
            format!("{:?}", found.clone().into_active_model()),
            format!("{}", found.email),
            format!("{:?}", found.record),
        ] {
            for secret in [
                "grace",
                "hopper",
                "0100",
                "DIAGNOSIS",
                "SECRET-ALLERGEN",
                "987654321987",
                "1906",
            ] {
                assert!(!printed.contains(secret), "{secret:?} printed in {printed}");
            }
            assert!(printed.contains("<redacted>"), "{printed}");
        }
        let debug = format!("{found:?}");
        assert!(debug.contains("patients.email"), "{debug}");
        assert!(
            debug.contains("active: "),
            "plaintext fields still print: {debug}"
        );
        Ok(())
    }
);

backend_tests!(
    /// JSON that would not read back equal (serde_json writes a non-finite float as `null`)
    /// is refused when sealing, so no row is written that fails, or differs, on every read.
    json_non_finite_float_is_refused_before_writing,
    |db: &TestDb| async move {
        let conn = &db.conn;
        let mut data = PatientData::sample(70);
        data.record.vitals.weight_kg = f64::NAN;
        match data.seal() {
            Err(encrypted_columns::Error::Encode { type_name: "Json", problem }) => {
                assert!(problem.contains("NaN"), "{problem}");
            }
            Err(other) => return Err(format!("unexpected seal error: {other}").into()),
            Ok(_) => return Err("a NaN inside JSON must be refused when sealing".into()),
        }
        let rows = patient::Entity::find().all(conn).await?;
        assert!(rows.is_empty(), "{} rows written", rows.len());
        Ok(())
    }
);

#[test]
fn test_database_names_are_unique_and_valid() {
    let a = backend::unique_name("value_types::Round-Trip::sqlite");
    let b = backend::unique_name("value_types::Round-Trip::sqlite");
    assert_ne!(a, b);
    assert!(a.starts_with("ect_value_types_round_trip_sqlite_"), "{a}");
    let long = backend::unique_name(&"x".repeat(200));
    assert!(long.len() <= 63, "{long}");
    assert!(
        long.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
        "{long}"
    );
    assert_eq!(
        backend::with_database("mysql://root@127.0.0.1:3306/test", "x").as_deref(),
        Ok("mysql://root@127.0.0.1:3306/x")
    );
    assert_eq!(
        backend::with_database("mysql://u:p@h/test?ssl-mode=disabled", "x").as_deref(),
        Ok("mysql://u:p@h/x?ssl-mode=disabled")
    );
    assert_eq!(
        backend::with_database("mysql://h:1", "x").as_deref(),
        Ok("mysql://h:1/x")
    );
}
