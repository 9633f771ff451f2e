//! Erasing a patient (crypto-shredding): what it removes and how it checks its work.

use encrypted_columns::{EncryptedString, Error as SealError};
use sea_orm::{
    ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QuerySelect, TransactionTrait,
};
use tracing::info;

use super::{Clinic, Res, db_err};
use crate::entities::{clinical_note, consent_record, patient, patient_key, transcript};

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

impl Clinic {
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
