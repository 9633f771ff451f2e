//! Patient data keys: where their envelope key ids come from, and keyrings that hold them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use encrypted_columns::zeroize::Zeroizing;
use encrypted_columns::{EncryptedBytes, KeyId, Keyring};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect};

use super::{Clinic, Res, db_err, seal_err};
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

/// A reading keyring and the key rows that could not be put in it.
pub struct ReadingKeys {
    /// The clinic keyring plus every data key that opened.
    pub ring: Arc<Keyring>,
    /// `patient_keys` row → why its key is not in `ring` (damaged, wrong clinic key, …).
    pub broken: BTreeMap<i32, String>,
}

/// Opens the wrapped data key of `patient_keys` row `row` with the clinic keyring.
fn unwrap_key(master: &Keyring, row: i32, wrapped: Vec<u8>) -> Res<(KeyId, Zeroizing<[u8; 32]>)> {
    let id = data_key_id(row)?;
    let opened =
        EncryptedBytes::<patient_key::ctx::WrappedKey>::from_envelope_with(master, wrapped)
            .map_err(|e| format!("patient_keys row {row} does not open: {}", seal_err(&e)))?;
    let mut key = Zeroizing::new([0u8; 32]);
    if opened.expose().len() != key.len() {
        return Err(format!(
            "patient_keys row {row} does not hold a 32-byte key; the row is damaged"
        ));
    }
    key.copy_from_slice(opened.expose());
    Ok((id, key))
}

impl Clinic {
    /// A keyring that opens the clinic's values and the data keys of `key_rows` (decrypt-only;
    /// the clinic key stays active). Keys of erased patients are simply absent; a key row
    /// that exists but does not open fails the whole call (see [`Clinic::reading_keys`]).
    pub async fn reading_ring<C: ConnectionTrait>(
        &self,
        db: &C,
        key_rows: impl IntoIterator<Item = i32>,
    ) -> Res<Arc<Keyring>> {
        let keys = self.reading_keys(db, key_rows).await?;
        match keys.broken.into_iter().next() {
            Some((_, reason)) => Err(reason),
            None => Ok(keys.ring),
        }
    }

    /// Like [`Clinic::reading_ring`], but a damaged key row only costs its own patient: it is
    /// left out of the ring and named in [`ReadingKeys::broken`], so listings can still show
    /// everyone else.
    pub async fn reading_keys<C: ConnectionTrait>(
        &self,
        db: &C,
        key_rows: impl IntoIterator<Item = i32>,
    ) -> Res<ReadingKeys> {
        let rows: BTreeSet<i32> = key_rows.into_iter().collect();
        let mut ring = (*self.master).clone();
        let mut broken = BTreeMap::new();
        // Raw bytes, opened one by one below: one bad row must not fail the query.
        let mut stored: Vec<(i32, Vec<u8>)> = Vec::new();
        let rows: Vec<i32> = rows.into_iter().collect();
        // Chunks keep the IN list under every backend's placeholder limit.
        for chunk in rows.chunks(5_000) {
            stored.extend(
                patient_key::Entity::find()
                    .select_only()
                    .columns([patient_key::Column::Id, patient_key::Column::WrappedKey])
                    .filter(patient_key::Column::Id.is_in(chunk.iter().copied()))
                    .into_tuple::<(i32, Vec<u8>)>()
                    .all(db)
                    .await
                    .map_err(db_err)?,
            );
        }
        for (row, wrapped) in stored {
            match unwrap_key(&self.master, row, wrapped) {
                Ok((id, key)) => ring
                    .add_key(id, *key)
                    .map_err(|e| format!("patient_keys row {row}: {e}"))?,
                Err(reason) => {
                    broken.insert(row, reason);
                }
            }
        }
        Ok(ReadingKeys {
            ring: Arc::new(ring),
            broken,
        })
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
    /// A `key_id` no data key can have (outside 1..=i32::MAX) is refused here, even when the
    /// caller has nothing to open: it is a damaged or tampered row, not a patient without data.
    pub async fn key_row_of<C: ConnectionTrait>(&self, db: &C, id: i32) -> Res<i32> {
        let row: Option<i32> = patient::Entity::find_by_id(id)
            .select_only()
            .column(patient::Column::KeyId)
            .into_tuple()
            .one(db)
            .await
            .map_err(db_err)?;
        let row =
            row.ok_or_else(|| format!("no patient with id {id} (see `clinic patient list`)"))?;
        data_key_id(row).map_err(|e| format!("patient {id}: {e}"))?;
        Ok(row)
    }
}
