//! Patient data keys: where their envelope key ids come from, and keyrings that hold them.

use std::collections::BTreeSet;
use std::sync::Arc;

use encrypted_columns::keyring;
use encrypted_columns::{KeyId, Keyring};
use sea_orm::{ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QuerySelect};

use super::{Clinic, Res, db_err};
use crate::entities::{patient, patient_key};

/// Envelope key ids at and above this are patient data keys; the clinic's own key ids must
/// stay below it (checked when keys are loaded).
pub const DATA_KEY_ID_BASE: u32 = 0x8000_0000;

/// The envelope key id of the data key in `patient_keys` row `row`: one-to-one for rows
/// 1..=i32::MAX (ids 0x8000_0001..=0xFFFF_FFFF). Any other row number is a damaged or
/// tampered `key_id`, refused rather than mapped onto some other patient's key.
pub fn data_key_id(row: i32) -> Res<KeyId> {
    match u32::try_from(row) {
        Ok(n) if n > 0 => Ok(KeyId(DATA_KEY_ID_BASE + n)),
        _ => Err(format!(
            "key row {row} is not a valid patient_keys id (ids start at 1); the row is damaged"
        )),
    }
}

/// The `patient_keys` row a data key id names, if it is one.
pub fn key_row_of_id(id: KeyId) -> Option<i32> {
    id.0.checked_sub(DATA_KEY_ID_BASE)
        .and_then(|n| i32::try_from(n).ok())
        .filter(|n| *n > 0)
}

impl Clinic {
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
            ring.add_key(data_key_id(key.id)?, bytes)
                .map_err(|e| e.to_string())?;
        }
        Ok(Arc::new(ring))
    }

    /// A keyring that seals with patient key row `key_row` (which `ring` must hold).
    pub fn sealing_ring(ring: &Keyring, key_row: i32) -> Res<Keyring> {
        let mut sealing = ring.clone();
        sealing
            .promote(data_key_id(key_row)?)
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
}
