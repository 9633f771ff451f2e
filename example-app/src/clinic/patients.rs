//! Storing, changing, loading and finding patients.

use std::future::Future;
use std::sync::Arc;

use chrono::Utc;
use encrypted_columns::keyring::{self, generate_key};
use encrypted_columns::{EncryptedBytes, Keyring};
use sea_orm::ActiveValue::Set;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, IntoActiveModel,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, TransactionTrait,
};
use tracing::info;

use super::{
    Clinic, NewPatient, PatientChanges, Res, data_key_id, db_err, duplicate_or_db_err, seal,
};
use crate::entities::{patient, patient_key};

impl Clinic {
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
        let ring = self.master.with_data_key(data_key_id(key_row)?, *key);
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
}
