//! Storing, changing, loading and finding patients.

use std::sync::Arc;

use chrono::Utc;
use encrypted_columns::keyring;
use encrypted_columns::{Error as SealError, Keyring};
use sea_orm::ActiveValue::Set;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, TransactionTrait,
};
use tracing::info;

use super::rows::{self, Listing, RawPatient, Unreadable};
use super::{Clinic, NewPatient, PatientChanges, Res, db_err, duplicate_or_db_err, seal, seal_err};
use crate::entities::patient;

impl Clinic {
    /// Loads patient `id` with its data key; the ring can also seal for this patient.
    /// Every envelope of the row must carry this patient's own data key id.
    pub async fn load_patient<C: ConnectionTrait>(
        &self,
        db: &C,
        id: i32,
    ) -> Res<(patient::Model, Keyring)> {
        let raw = rows::select_raw()
            .filter(patient::Column::Id.eq(id))
            .into_model::<RawPatient>()
            .one(db)
            .await
            .map_err(db_err)?
            .ok_or_else(|| format!("no patient with id {id} (see `clinic patient list`)"))?;
        let key_row = raw.key_id;
        raw.expected_key()?;
        let ring = self.reading_ring(db, [key_row]).await?;
        let sealing = Self::sealing_ring(&ring, key_row).map_err(|_| {
            format!(
                "patient {id}'s data key (patient_keys row {key_row}) is not in the database: \
                 the key row is missing, so its data cannot be read (an erased patient has no \
                 patient row either)"
            )
        })?;
        let model = raw.open(&ring)?;
        Ok((model, sealing))
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
    /// The key row is created in a savepoint of `txn`, wrapped by the clinic's subject KEK.
    pub async fn add_patient_in<C: ConnectionTrait + TransactionTrait>(
        &self,
        txn: &C,
        new: NewPatient,
    ) -> Res<i32> {
        let key = self
            .subject_keys
            .create(txn)
            .await
            .map_err(|e| format!("cannot create the patient's data key: {e}"))?;
        let key_row = i32::try_from(key.row()).map_err(|_| {
            format!(
                "patient_keys row {} is beyond the clinic's key_id column (i32)",
                key.row()
            )
        })?;
        let ring = key.sealing_ring(&self.master);
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
        // A write for this patient anyway: give a pre-migration-12 key row its check value.
        self.fill_check_value(&txn, model.key_id).await?;
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

    /// Patients by id order. Rows that do not open (damaged, tampered, key missing) are
    /// named in [`Listing::unreadable`]; the others are listed.
    pub async fn list_patients(&self, limit: u64, offset: u64) -> Res<Listing> {
        let raws = rows::select_raw()
            .order_by_asc(patient::Column::Id)
            .limit(limit)
            .offset(offset)
            .into_model::<RawPatient>()
            .all(&self.db)
            .await
            .map_err(db_err)?;
        self.open_rows(raws, |_| Ok(true)).await
    }

    /// Opens rows of several patients, each with its own data key only (see `rows`), keeping
    /// those `keep` accepts.
    async fn open_rows(
        &self,
        raws: Vec<RawPatient>,
        keep: impl Fn(&patient::Model) -> Result<bool, SealError>,
    ) -> Res<Listing> {
        let keys = self
            .reading_keys(&self.db, raws.iter().map(|r| r.key_id))
            .await?;
        let mut listing = Listing::default();
        for raw in raws {
            let id = raw.id;
            let opened = match keys.broken.get(&raw.key_id) {
                Some(reason) => Err(format!("patient {id}: {reason}")),
                None => raw.open(&keys.ring),
            };
            match opened.and_then(|m| match keep(&m) {
                Ok(true) => Ok(Some(m)),
                Ok(false) => Ok(None),
                Err(e) => Err(format!("patient {id}: {}", seal_err(&e))),
            }) {
                Ok(Some(model)) => listing.rows.push(model),
                Ok(None) => {}
                Err(reason) => listing.unreadable.push(Unreadable { id, reason }),
            }
        }
        Ok(listing)
    }

    /// How many patients there are.
    pub async fn count_patients(&self) -> Res<u64> {
        patient::Entity::find()
            .count(&self.db)
            .await
            .map_err(db_err)
    }

    /// Patients matching a blind-index condition. `matches` drops blind-index false
    /// positives after opening (one of the `matches_…` checks `DeriveEncrypted` generates).
    /// A candidate that does not open is named in [`Listing::unreadable`]: it may or may
    /// not be a match.
    pub async fn find_patients(
        &self,
        condition: sea_orm::Condition,
        matches: impl Fn(&patient::Model) -> Result<bool, SealError>,
    ) -> Res<Listing> {
        let raws = rows::select_raw()
            .filter(condition)
            .order_by_asc(patient::Column::Id)
            .into_model::<RawPatient>()
            .all(&self.db)
            .await
            .map_err(db_err)?;
        self.open_rows(raws, matches).await
    }
}
