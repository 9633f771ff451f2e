//! `patients`: one column of every encrypted type, two of the same type (`email`, `phone`)
//! for the column-swap test, and plaintext columns around them.

use chrono::{DateTime, NaiveDate, Utc};
use encrypted_columns::{
    Encrypted, EncryptedBytes, EncryptedJson, EncryptedString, Json, column_context,
};
use sea_orm::ActiveValue::{NotSet, Set};
use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

column_context!(pub PatientEmail, table = "patients", column = "email");
column_context!(pub PatientPhone, table = "patients", column = "phone");
column_context!(pub PatientNotes, table = "patients", column = "notes");
column_context!(pub PatientScan, table = "patients", column = "scan");
column_context!(pub PatientRecord, table = "patients", column = "record");
column_context!(pub PatientBalance, table = "patients", column = "balance_cents");
column_context!(pub PatientWeight, table = "patients", column = "weight_kg");
column_context!(pub PatientSmoker, table = "patients", column = "smoker");
column_context!(pub PatientBirthDate, table = "patients", column = "birth_date");
column_context!(pub PatientLastVisit, table = "patients", column = "last_visit");

/// The JSON document stored encrypted in `patients.record`: vectors, options and nesting.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MedicalRecord {
    pub allergies: Vec<String>,
    pub blood_type: Option<String>,
    pub vitals: Vitals,
    pub visits: Vec<Visit>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Vitals {
    pub height_cm: u16,
    pub weight_kg: f64,
    pub resting_heart_rate: Option<u8>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Visit {
    pub date: String,
    pub clinician: String,
    pub codes: Vec<String>,
    pub notes: Option<String>,
}

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "patients")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i32,
    pub email: EncryptedString<PatientEmail>,
    pub phone: EncryptedString<PatientPhone>,
    pub notes: Option<EncryptedString<PatientNotes>>,
    pub scan: EncryptedBytes<PatientScan>,
    pub record: EncryptedJson<MedicalRecord, PatientRecord>,
    pub balance_cents: Encrypted<i64, PatientBalance>,
    pub weight_kg: Encrypted<f64, PatientWeight>,
    pub smoker: Encrypted<bool, PatientSmoker>,
    pub birth_date: Encrypted<NaiveDate, PatientBirthDate>,
    pub last_visit: Option<Encrypted<DateTime<Utc>, PatientLastVisit>>,
    /// Plaintext on purpose: filtering on it must keep working.
    pub active: bool,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

/// The plaintexts of one patient row, for building rows and checking what comes back.
#[derive(Clone, Debug, PartialEq)]
pub struct PatientData {
    pub email: String,
    pub phone: String,
    pub notes: Option<String>,
    pub scan: Vec<u8>,
    pub record: MedicalRecord,
    pub balance_cents: i64,
    pub weight_kg: f64,
    pub smoker: bool,
    pub birth_date: NaiveDate,
    pub last_visit: Option<DateTime<Utc>>,
    pub active: bool,
}

impl PatientData {
    /// A deterministic, varied patient: `n` changes every field, odd `n` leaves the nullable
    /// fields NULL.
    pub fn sample(n: u32) -> Self {
        let even = n.is_multiple_of(2);
        PatientData {
            email: format!("patient{n}.zoë@example.org"),
            phone: format!("+44 20 7946 {:04}", n % 10_000),
            notes: even.then(|| format!("Seen {n} times; allergic to penicillin ☤")),
            scan: (0..(64 + n as usize % 200))
                .map(|i| (i as u32 * 31 + n) as u8)
                .collect(),
            record: MedicalRecord {
                allergies: vec!["penicillin".into(), format!("latex-{n}")],
                blood_type: even.then(|| "AB-".to_string()),
                vitals: Vitals {
                    height_cm: 150 + (n % 50) as u16,
                    weight_kg: 60.0 + f64::from(n) / 7.0,
                    resting_heart_rate: (!even).then_some(60 + (n % 30) as u8),
                },
                visits: (0..(n % 3))
                    .map(|v| Visit {
                        date: format!("2024-0{}-1{v}", v + 1),
                        clinician: format!("Dr. Ana Núñez {v}"),
                        codes: vec!["Z00.0".into(), format!("E11.{v}")],
                        notes: (v == 0).then(|| "follow up \"soon\"\n\ttabs".to_string()),
                    })
                    .collect(),
            },
            balance_cents: -1_234_567_890_123 + i64::from(n),
            weight_kg: 72.5 + f64::from(n) * 0.1,
            smoker: !even,
            birth_date: NaiveDate::from_ymd_opt(1950 + (n % 60) as i32, 1 + n % 12, 1 + n % 28)
                .expect("valid date"),
            last_visit: even.then(|| {
                DateTime::from_timestamp(1_700_000_000 + i64::from(n) * 86_400, 123_456_789)
                    .expect("valid timestamp")
            }),
            active: even,
        }
    }

    /// An ActiveModel with every field sealed under the keyring in force; `id` left NotSet.
    pub fn seal(&self) -> Result<ActiveModel, encrypted_columns::Error> {
        Ok(ActiveModel {
            id: NotSet,
            email: Set(Encrypted::new(self.email.clone())?),
            phone: Set(Encrypted::new(self.phone.clone())?),
            notes: Set(self.notes.clone().map(Encrypted::new).transpose()?),
            scan: Set(Encrypted::new(self.scan.clone())?),
            record: Set(Encrypted::new(Json(self.record.clone()))?),
            balance_cents: Set(Encrypted::new(self.balance_cents)?),
            weight_kg: Set(Encrypted::new(self.weight_kg)?),
            smoker: Set(Encrypted::new(self.smoker)?),
            birth_date: Set(Encrypted::new(self.birth_date)?),
            last_visit: Set(self.last_visit.map(Encrypted::new).transpose()?),
            active: Set(self.active),
        })
    }

    /// The plaintexts a model read back from the database holds.
    pub fn of(model: &Model) -> Self {
        PatientData {
            email: model.email.expose().clone(),
            phone: model.phone.expose().clone(),
            notes: model.notes.as_ref().map(|n| n.expose().clone()),
            scan: model.scan.expose().clone(),
            record: model.record.expose().0.clone(),
            balance_cents: *model.balance_cents.expose(),
            weight_kg: *model.weight_kg.expose(),
            smoker: *model.smoker.expose(),
            birth_date: *model.birth_date.expose(),
            last_visit: model.last_visit.as_ref().map(|v| *v.expose()),
            active: model.active,
        }
    }
}
