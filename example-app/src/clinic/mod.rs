//! The clinic's data layer: per-patient data keys, audited reads and writes, erasure.
//!
//! Key hierarchy (envelope encryption):
//!
//! * the **clinic keyring** (from `ENCRYPTED_COLUMNS_KEYS`) seals the legacy table and audit
//!   entries about no one patient, and by default wraps each patient's data key in
//!   `patient_keys.wrapped_key` (provider `keyring`; [`Clinic::with_subject_kek`] hands new
//!   keys to a KMS or HSM instead). `patient_keys` is the library's subject-key table
//!   (`encrypted_columns::subject_keys`, columns added by migration 12): each row also names
//!   its provider and KEK and holds its key's check value;
//! * each **patient data key** (32 random bytes) seals that patient's own fields, notes,
//!   consents, transcripts and audit details. Its key id in the envelopes is
//!   [`DATA_KEY_ID_BASE`] + the `patient_keys` row id, so rows of many patients can be read in
//!   one query with a keyring holding all their keys;
//! * the **blind-index key** is the clinic's, shared by all patients, so lookups by e-mail,
//!   phone or name work across patients.
//!
//! Erasing a patient deletes its data-key row: every envelope sealed with it — in this
//! database, replicas, dumps and backups — is then unreadable (crypto-shredding), and the
//! patient's rows are deleted too.

mod audit;
mod erase;
mod keys;
mod patients;
mod rows;

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::NaiveDate;
use encrypted_columns::subject_keys::SubjectKeys;
use encrypted_columns::{EncryptedString, Error as SealError, Keyring};
use migration::{Migrator, MigratorTrait};
use sea_orm::sea_query::{Alias, Query};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr};

use crate::entities::patient;

pub use keys::{DATA_KEY_ID_BASE, KEY_TABLE, data_key_id, key_err, key_row_of_id};
pub use rows::{Listing, Unbound, bound_to};

/// A failure with one line a person can act on.
pub type Res<T> = Result<T, String>;

/// A database error as one line: the typed encryption error when there is one. A missing
/// patient data key gets the clinic's own words: such keys live in `patient_keys`, never in
/// `ENCRYPTED_COLUMNS_KEYS`, so the library's generic hint would mislead.
pub fn db_err(err: DbErr) -> String {
    match SealError::from_db_err(&err) {
        Some(typed) => seal_err(typed),
        None => format!("database error: {err}"),
    }
}

/// An encryption error as one line, in the clinic's words for patient data keys.
pub fn seal_err(err: &SealError) -> String {
    match err {
        SealError::UnknownKeyId { id } => match key_row_of_id(*id) {
            Some(row) => format!(
                "a value is sealed with patient data key {id} (patient_keys row {row}), which \
                 is not in the database: the patient was erased or the key row is missing"
            ),
            None => err.to_string(),
        },
        other => other.to_string(),
    }
}

/// What the CLI needs to store a new patient.
#[derive(Debug, Clone)]
pub struct NewPatient {
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    pub phone: Option<String>,
    pub address: Option<String>,
    pub date_of_birth: NaiveDate,
    pub medical_history: Option<String>,
}

/// Changes to a patient; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct PatientChanges {
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub address: Option<String>,
    pub date_of_birth: Option<NaiveDate>,
    pub medical_history: Option<String>,
    pub active: Option<bool>,
}

/// The clinic: a connection, the clinic keyring, the patient data keys, and who is acting
/// (for the audit log).
pub struct Clinic {
    pub db: DatabaseConnection,
    master: Arc<Keyring>,
    subject_keys: SubjectKeys,
    actor: String,
}

impl Clinic {
    /// Wraps a connection whose schema is up to date (see [`Clinic::check_schema`]). Patient
    /// keys are wrapped by `master` until [`Clinic::with_subject_kek`] names a KMS or HSM.
    pub fn new(db: DatabaseConnection, master: Arc<Keyring>, actor: String) -> Self {
        let subject_keys = keys::subject_keys(&master);
        Clinic {
            db,
            master,
            subject_keys,
            actor,
        }
    }

    /// The clinic keyring.
    pub fn master(&self) -> &Arc<Keyring> {
        &self.master
    }

    /// Fails with a pointer to `clinic init` if migrations are pending.
    ///
    /// Only reads `seaql_migrations`: sea-orm-migration's own status check first runs
    /// `CREATE TABLE IF NOT EXISTS`, which an application role without DDL rights (README,
    /// "The audit log") may not do.
    pub async fn check_schema(db: &DatabaseConnection) -> Res<()> {
        let query = Query::select()
            .column(Alias::new("version"))
            .from(Alias::new("seaql_migrations"))
            .to_owned();
        let applied: BTreeSet<String> = match db.query_all(&query).await {
            Ok(rows) => rows
                .iter()
                .map(|row| row.try_get::<String>("", "version"))
                .collect::<Result<_, _>>()
                .map_err(|e| format!("cannot read the migration table: {e}"))?,
            // No table (or no right to read it): nothing counts as applied.
            Err(_) => BTreeSet::new(),
        };
        let pending = Migrator::migrations()
            .iter()
            .filter(|m| !applied.contains(m.name()))
            .count();
        if pending > 0 {
            return Err(format!(
                "the database is not set up for the clinic ({pending} migration(s) pending): \
                 run `clinic init` first"
            ));
        }
        Ok(())
    }
}

/// Seals a string with `ring`.
pub fn seal<C: encrypted_columns::ColumnContext>(
    ring: &Keyring,
    value: String,
) -> Res<EncryptedString<C>> {
    EncryptedString::new_with(ring, value).map_err(|e| e.to_string())
}

/// A duplicate e-mail as its typed message; anything else as [`db_err`].
pub fn duplicate_or_db_err(err: DbErr) -> String {
    match patient::Entity::unique_violation(&err) {
        Some(typed) => format!("{typed} (another patient already has this e-mail)"),
        None => db_err(err),
    }
}
