//! What every record command shares: the patient's data key looked up, a new record sealed
//! with it and stored together with its audit entry, and the check of a required argument.

use std::sync::Arc;

use encrypted_columns::{Keyring, keyring};
use sea_orm::{
    ActiveModelBehavior, ActiveModelTrait, EntityTrait, IntoActiveModel, TransactionTrait,
};

use crate::clinic::{Clinic, db_err};

pub(super) fn required(name: &str, value: String) -> Result<String, String> {
    crate::validate::required(name, Some(value))
}

/// Patient `patient`'s `patient_keys` row and a ring that opens its records (a damaged
/// `key_id` is refused by `key_row_of`, even when there is nothing to open).
pub(super) async fn patient_ring<C: sea_orm::ConnectionTrait>(
    clinic: &Clinic,
    db: &C,
    patient: i32,
) -> Result<(i32, Arc<Keyring>), String> {
    let key_row = clinic.key_row_of(db, patient).await?;
    Ok((key_row, clinic.reading_ring(db, [key_row]).await?))
}

/// Inserts one record of `patient`, built by `build` with values sealed by the patient's data
/// key, and audits its creation as `table#id`, in one transaction; returns the id.
pub(super) async fn insert_for_patient<A>(
    clinic: &Clinic,
    patient: i32,
    table: &str,
    summary: &str,
    build: impl FnOnce(&Keyring) -> Result<A, String>,
    id_of: impl FnOnce(&<A::Entity as EntityTrait>::Model) -> i32,
) -> Result<i32, String>
where
    A: ActiveModelTrait + ActiveModelBehavior + Send,
    <A::Entity as EntityTrait>::Model: IntoActiveModel<A>,
{
    let txn = clinic.db.begin().await.map_err(db_err)?;
    let (key_row, ring) = patient_ring(clinic, &txn, patient).await?;
    let ring = Arc::new(Clinic::sealing_ring(&ring, key_row)?);
    let row = build(&ring)?;
    // The insert reads the row back (RETURNING): it must open with the patient's key.
    let saved = keyring::scope(Arc::clone(&ring), row.insert(&txn))
        .await
        .map_err(db_err)?;
    let id = id_of(&saved);
    clinic
        .audit(
            &txn,
            "create",
            format!("{table}#{id}"),
            Some(patient),
            summary,
            None,
        )
        .await?;
    txn.commit().await.map_err(db_err)?;
    Ok(id)
}
