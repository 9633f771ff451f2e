//! The clinic's data layer: per-patient data keys, audited reads and writes, erasure.
//!
//! Key hierarchy (envelope encryption):
//!
//! * the **clinic keyring** (from `ENCRYPTED_COLUMNS_KEYS`) seals each patient's data key in
//!   `patient_keys.wrapped_key`, the legacy table and audit entries about no one patient;
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

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;

use chrono::{NaiveDate, Utc};
use encrypted_columns::keyring::{self, generate_key};
use encrypted_columns::{EncryptedBytes, EncryptedString, Error as SealError, KeyId, Keyring};
use migration::{Migrator, MigratorTrait};
use sea_orm::ActiveValue::Set;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait,
    IntoActiveModel, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, TransactionTrait,
};
use tracing::{debug, info};

use crate::entities::{
    audit_entry, clinical_note, consent_record, patient, patient_key, transcript,
};

/// Envelope key ids at and above this are patient data keys; the clinic's own key ids must
/// stay below it (checked when keys are loaded).
pub const DATA_KEY_ID_BASE: u32 = 0x8000_0000;

/// The envelope key id of the data key in `patient_keys` row `row`.
pub fn data_key_id(row: i32) -> KeyId {
    KeyId(DATA_KEY_ID_BASE + row.unsigned_abs())
}

/// A failure with one line a person can act on.
pub type Res<T> = Result<T, String>;

/// A database error as one line: the typed encryption error when there is one.
pub fn db_err(err: DbErr) -> String {
    match SealError::from_db_err(&err) {
        Some(typed) => typed.to_string(),
        None => format!("database error: {err}"),
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

/// What erasing a patient removed, and the proof that its data no longer opens.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ErasureReport {
    pub patient_id: i32,
    pub notes: u64,
    pub consents: u64,
    pub transcripts: u64,
    pub patient_rows: u64,
    pub key_rows: u64,
    /// Rows still referring to the patient after the erase (must be 0).
    pub remaining_rows: u64,
    /// The error a copy of the patient's e-mail envelope (as a backup holds it) now gives.
    pub backup_copy_error: String,
}

/// The clinic: a connection, the clinic keyring, and who is acting (for the audit log).
pub struct Clinic {
    pub db: DatabaseConnection,
    master: Arc<Keyring>,
    actor: String,
}

impl Clinic {
    /// Wraps a connection whose schema is up to date (see [`Clinic::check_schema`]).
    pub fn new(db: DatabaseConnection, master: Arc<Keyring>, actor: String) -> Self {
        Clinic { db, master, actor }
    }

    /// The clinic keyring.
    pub fn master(&self) -> &Arc<Keyring> {
        &self.master
    }

    /// Fails with a pointer to `clinic init` if migrations are pending.
    pub async fn check_schema(db: &DatabaseConnection) -> Res<()> {
        let pending = Migrator::get_pending_migrations(db)
            .await
            .map_err(|e| format!("cannot read the migration table: {e}"))?;
        if !pending.is_empty() {
            return Err(format!(
                "the database is not set up for the clinic ({} migration(s) pending): run \
                 `clinic init` first",
                pending.len()
            ));
        }
        Ok(())
    }

    /// A keyring that opens the clinic's values and the data keys of `key_rows` (decrypt-only;
    /// the clinic key stays active). Keys of erased patients are simply absent.
    pub async fn reading_ring<C: ConnectionTrait>(
        &self,
        db: &C,
        key_rows: impl IntoIterator<Item = i32>,
    ) -> Res<Arc<Keyring>> {
        let rows: BTreeSet<i32> = key_rows.into_iter().collect();
        let mut ring = (*self.master).clone();
        if rows.is_empty() {
            return Ok(Arc::new(ring));
        }
        let keys = keyring::scope(Arc::clone(&self.master), async {
            let mut out = Vec::new();
            // Chunks keep the IN list under every backend's placeholder limit.
            let rows: Vec<i32> = rows.into_iter().collect();
            for chunk in rows.chunks(5_000) {
                out.extend(
                    patient_key::Entity::find()
                        .filter(patient_key::Column::Id.is_in(chunk.iter().copied()))
                        .all(db)
                        .await?,
                );
            }
            Ok::<_, DbErr>(out)
        })
        .await
        .map_err(db_err)?;
        for key in keys {
            let bytes: [u8; 32] = key
                .wrapped_key
                .expose()
                .as_slice()
                .try_into()
                .map_err(|_| {
                    format!(
                        "patient_keys row {} does not hold a 32-byte key; the row is damaged",
                        key.id
                    )
                })?;
            ring.add_key(data_key_id(key.id), bytes)
                .map_err(|e| e.to_string())?;
        }
        Ok(Arc::new(ring))
    }

    /// A keyring that seals with patient key row `key_row` (which `ring` must hold).
    pub fn sealing_ring(ring: &Keyring, key_row: i32) -> Res<Keyring> {
        let mut sealing = ring.clone();
        sealing
            .promote(data_key_id(key_row))
            .map_err(|_| "this patient's data key is gone: the patient was erased".to_string())?;
        Ok(sealing)
    }

    /// The `patient_keys` row of patient `id`, or a clear error if there is no such patient.
    pub async fn key_row_of<C: ConnectionTrait>(&self, db: &C, id: i32) -> Res<i32> {
        let row: Option<i32> = patient::Entity::find_by_id(id)
            .select_only()
            .column(patient::Column::KeyId)
            .into_tuple()
            .one(db)
            .await
            .map_err(db_err)?;
        row.ok_or_else(|| format!("no patient with id {id} (see `clinic patient list`)"))
    }

    /// Loads patient `id` with its data key; the ring can also seal for this patient.
    pub async fn load_patient<C: ConnectionTrait>(
        &self,
        db: &C,
        id: i32,
    ) -> Res<(patient::Model, Keyring)> {
        let key_row = self.key_row_of(db, id).await?;
        let ring = self.reading_ring(db, [key_row]).await?;
        let sealing = Self::sealing_ring(&ring, key_row)?;
        let model = keyring::scope(ring, patient::Entity::find_by_id(id).one(db))
            .await
            .map_err(db_err)?
            .ok_or_else(|| format!("no patient with id {id}"))?;
        Ok((model, sealing))
    }

    /// Appends an audit entry. `summary` is fixed text (never PHI); `details`, if any, is
    /// sealed with `ring`'s active key, which must be the patient's data key, so it becomes
    /// unreadable when the patient is erased.
    #[allow(clippy::too_many_arguments)]
    pub async fn audit<C: ConnectionTrait>(
        &self,
        db: &C,
        action: &str,
        record: String,
        patient_id: Option<i32>,
        summary: &str,
        details: Option<(&Keyring, &str)>,
    ) -> Res<()> {
        let details = match details {
            None => None,
            Some((ring, text)) => Some(
                EncryptedString::<audit_entry::Details>::new_with(ring, text.to_owned())
                    .map_err(|e| e.to_string())?
                    .envelope()
                    .to_vec(),
            ),
        };
        audit_entry::ActiveModel {
            at: Set(Utc::now()),
            actor: Set(self.actor.clone()),
            action: Set(action.to_owned()),
            record: Set(record),
            patient_id: Set(patient_id),
            summary: Set(summary.to_owned()),
            details: Set(details),
            ..Default::default()
        }
        .insert(db)
        .await
        .map_err(db_err)?;
        debug!(action, patient_id, "audit entry appended");
        Ok(())
    }

    /// Records reads of several patients' records: one entry per record.
    pub async fn audit_reads(
        &self,
        summary: &str,
        rows: impl IntoIterator<Item = (String, i32)>,
    ) -> Res<()> {
        let txn = self.db.begin().await.map_err(db_err)?;
        for (record, patient_id) in rows {
            self.audit(&txn, "read", record, Some(patient_id), summary, None)
                .await?;
        }
        txn.commit().await.map_err(db_err)
    }

    /// Stores a new patient with a fresh data key, in one transaction; returns its id.
    pub async fn add_patient(&self, new: NewPatient) -> Res<i32> {
        let txn = self.db.begin().await.map_err(db_err)?;
        let id = self.add_patient_in(&txn, new).await?;
        txn.commit().await.map_err(db_err)?;
        info!(patient_id = id, "patient added");
        Ok(id)
    }

    /// Stores a new patient with a fresh data key through `txn` (which the caller commits).
    pub async fn add_patient_in<C: ConnectionTrait>(&self, txn: &C, new: NewPatient) -> Res<i32> {
        let key = generate_key();
        let wrapped =
            EncryptedBytes::<patient_key::ctx::WrappedKey>::new_with(&self.master, key.to_vec())
                .map_err(|e| e.to_string())?;
        let key_row = patient_key::ActiveModel {
            wrapped_key: Set(wrapped),
            created_at: Set(Utc::now()),
            ..Default::default()
        }
        .insert(txn)
        .await
        .map_err(db_err)?
        .id;
        let ring = self.master.with_data_key(data_key_id(key_row), *key);
        let now = Utc::now();
        let row = patient::ActiveModel {
            key_id: Set(key_row),
            first_name: Set(seal(&ring, new.first_name)?),
            last_name: Set(seal(&ring, new.last_name)?),
            email: Set(seal(&ring, new.email)?),
            phone: Set(new.phone.map(|v| seal(&ring, v)).transpose()?),
            address: Set(new.address.map(|v| seal(&ring, v)).transpose()?),
            date_of_birth: Set(
                encrypted_columns::Encrypted::new_with(&ring, new.date_of_birth)
                    .map_err(|e| e.to_string())?,
            ),
            medical_history: Set(new.medical_history.map(|v| seal(&ring, v)).transpose()?),
            active: Set(true),
            created_at: Set(now),
            updated_at: Set(now),
            ..Default::default()
        };
        // `before_save` fills the blind indexes with the shared blind-index key.
        let saved = keyring::scope(Arc::new(ring), row.insert(txn))
            .await
            .map_err(duplicate_or_db_err)?;
        self.audit(
            txn,
            "create",
            format!("patients#{}", saved.id),
            Some(saved.id),
            "patient registered",
            None,
        )
        .await?;
        Ok(saved.id)
    }

    /// Applies `changes` to patient `id`; blind indexes follow.
    pub async fn update_patient(&self, id: i32, changes: PatientChanges) -> Res<patient::Model> {
        let txn = self.db.begin().await.map_err(db_err)?;
        let (model, ring) = self.load_patient(&txn, id).await?;
        let mut row = model.into_active_model();
        let mut changed = Vec::new();
        if let Some(v) = changes.first_name {
            row.first_name = Set(seal(&ring, v)?);
            changed.push("first name");
        }
        if let Some(v) = changes.last_name {
            row.last_name = Set(seal(&ring, v)?);
            changed.push("last name");
        }
        if let Some(v) = changes.email {
            row.email = Set(seal(&ring, v)?);
            changed.push("e-mail");
        }
        if let Some(v) = changes.phone {
            row.phone = Set(Some(seal(&ring, v)?));
            changed.push("phone");
        }
        if let Some(v) = changes.address {
            row.address = Set(Some(seal(&ring, v)?));
            changed.push("address");
        }
        if let Some(v) = changes.date_of_birth {
            row.date_of_birth =
                Set(encrypted_columns::Encrypted::new_with(&ring, v).map_err(|e| e.to_string())?);
            changed.push("date of birth");
        }
        if let Some(v) = changes.medical_history {
            row.medical_history = Set(Some(seal(&ring, v)?));
            changed.push("medical history");
        }
        if let Some(v) = changes.active {
            row.active = Set(v);
            changed.push("active flag");
        }
        if changed.is_empty() {
            return Err(
                "nothing to change: pass at least one of --first-name, --last-name, \
                        --email, --phone, --address, --dob, --history, --active"
                    .into(),
            );
        }
        row.updated_at = Set(Utc::now());
        let ring = Arc::new(ring);
        let saved = keyring::scope(Arc::clone(&ring), row.update(&txn))
            .await
            .map_err(duplicate_or_db_err)?;
        self.audit(
            &txn,
            "update",
            format!("patients#{id}"),
            Some(id),
            "patient record changed",
            Some((&ring, &format!("changed: {}", changed.join(", ")))),
        )
        .await?;
        txn.commit().await.map_err(db_err)?;
        Ok(saved)
    }

    /// Patients by id order, with the ring that opened them.
    pub async fn list_patients(
        &self,
        limit: u64,
        offset: u64,
    ) -> Res<(Vec<patient::Model>, Arc<Keyring>)> {
        let heads: Vec<(i32, i32)> = patient::Entity::find()
            .select_only()
            .columns([patient::Column::Id, patient::Column::KeyId])
            .order_by_asc(patient::Column::Id)
            .limit(limit)
            .offset(offset)
            .into_tuple()
            .all(&self.db)
            .await
            .map_err(db_err)?;
        let ring = self
            .reading_ring(&self.db, heads.iter().map(|(_, k)| *k))
            .await?;
        let ids: Vec<i32> = heads.iter().map(|(id, _)| *id).collect();
        let rows = keyring::scope(
            Arc::clone(&ring),
            patient::Entity::find()
                .filter(patient::Column::Id.is_in(ids))
                .order_by_asc(patient::Column::Id)
                .all(&self.db),
        )
        .await
        .map_err(db_err)?;
        Ok((rows, ring))
    }

    /// How many patients there are.
    pub async fn count_patients(&self) -> Res<u64> {
        patient::Entity::find()
            .count(&self.db)
            .await
            .map_err(db_err)
    }

    /// Patients matching a blind-index condition, opened and checked with `matches`.
    ///
    /// Two steps: the candidate rows' key ids (no decryption), then the rows themselves
    /// with a keyring holding those patients' keys. `find_all` is one of the lookups
    /// `DeriveEncrypted` generates; it drops blind-index false positives after opening.
    pub async fn find_patients<F, Fut>(
        &self,
        condition: sea_orm::Condition,
        find_all: F,
    ) -> Res<(Vec<patient::Model>, Arc<Keyring>)>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Vec<patient::Model>, DbErr>>,
    {
        let key_rows: Vec<i32> = patient::Entity::find()
            .select_only()
            .column(patient::Column::KeyId)
            .filter(condition)
            .into_tuple()
            .all(&self.db)
            .await
            .map_err(db_err)?;
        let ring = self.reading_ring(&self.db, key_rows).await?;
        let rows = keyring::scope(Arc::clone(&ring), find_all())
            .await
            .map_err(db_err)?;
        Ok((rows, ring))
    }

    /// Erases patient `id`: destroys its data key, deletes its rows, verifies, reports.
    pub async fn erase_patient(&self, id: i32) -> Res<ErasureReport> {
        let txn = self.db.begin().await.map_err(db_err)?;
        let key_row = self.key_row_of(&txn, id).await?;
        // What a backup taken before now would hold: the e-mail envelope, as stored.
        let backup_copy: Option<Vec<u8>> = patient::Entity::find_by_id(id)
            .select_only()
            .column(patient::Column::Email)
            .into_tuple()
            .one(&txn)
            .await
            .map_err(db_err)?;
        let notes = clinical_note::Entity::delete_many()
            .filter(clinical_note::Column::PatientId.eq(id))
            .exec(&txn)
            .await
            .map_err(db_err)?
            .rows_affected;
        let consents = consent_record::Entity::delete_many()
            .filter(consent_record::Column::PatientId.eq(id))
            .exec(&txn)
            .await
            .map_err(db_err)?
            .rows_affected;
        let transcripts = transcript::Entity::delete_many()
            .filter(transcript::Column::PatientId.eq(id))
            .exec(&txn)
            .await
            .map_err(db_err)?
            .rows_affected;
        let patient_rows = patient::Entity::delete_by_id(id)
            .exec(&txn)
            .await
            .map_err(db_err)?
            .rows_affected;
        let key_rows = patient_key::Entity::delete_by_id(key_row)
            .exec(&txn)
            .await
            .map_err(db_err)?
            .rows_affected;
        // Counts only, in the plaintext summary: the record of the erasure must stay readable.
        self.audit(
            &txn,
            "erase",
            format!("patients#{id}"),
            Some(id),
            &format!(
                "data key destroyed; deleted {notes} note(s), {consents} consent(s), \
                 {transcripts} transcript(s)"
            ),
            None,
        )
        .await?;
        txn.commit().await.map_err(db_err)?;

        let remaining_rows = clinical_note::Entity::find()
            .filter(clinical_note::Column::PatientId.eq(id))
            .count(&self.db)
            .await
            .map_err(db_err)?
            + consent_record::Entity::find()
                .filter(consent_record::Column::PatientId.eq(id))
                .count(&self.db)
                .await
                .map_err(db_err)?
            + transcript::Entity::find()
                .filter(transcript::Column::PatientId.eq(id))
                .count(&self.db)
                .await
                .map_err(db_err)?
            + patient::Entity::find_by_id(id)
                .count(&self.db)
                .await
                .map_err(db_err)?
            + patient_key::Entity::find_by_id(key_row)
                .count(&self.db)
                .await
                .map_err(db_err)?;
        // The best keyring this clinic can build now: it holds no key for the copy.
        let ring = self.reading_ring(&self.db, [key_row]).await?;
        let backup_copy_error = match backup_copy {
            None => "no envelope to test".to_owned(),
            Some(bytes) => {
                match EncryptedString::<patient::ctx::Email>::from_envelope_with(&ring, bytes) {
                    Ok(_) => {
                        return Err(format!(
                            "erasure failed: patient {id}'s data still opens after its key \
                             was deleted"
                        ));
                    }
                    Err(SealError::UnknownKeyId { id: gone }) => format!(
                        "UnknownKeyId: data key {gone} no longer exists anywhere the clinic can \
                         reach"
                    ),
                    Err(e) => e.to_string(),
                }
            }
        };
        if patient_rows != 1 || key_rows != 1 || remaining_rows != 0 {
            return Err(format!(
                "erasure of patient {id} incomplete: {patient_rows} patient row(s) and \
                 {key_rows} key row(s) deleted, {remaining_rows} row(s) remain"
            ));
        }
        info!(patient_id = id, "patient erased");
        Ok(ErasureReport {
            patient_id: id,
            notes,
            consents,
            transcripts,
            patient_rows,
            key_rows,
            remaining_rows,
            backup_copy_error,
        })
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
