//! Patient data keys: the library's subject keys (`encrypted_columns::subject_keys`) over the
//! `patient_keys` table, and keyrings that hold them.
//!
//! By default new keys are wrapped by the clinic keyring as envelopes of
//! `patient_keys.wrapped_key` ([`KeyringKek`]), the format every existing row has; with
//! [`Clinic::with_subject_kek`] a KMS or HSM wraps new keys while those rows stay readable.

use std::collections::BTreeMap;
use std::sync::Arc;

use encrypted_columns::kek::{KekError, KeyEncryptionKey, KeyringKek};
use encrypted_columns::subject_keys::table::LEGACY_PROVIDER;
use encrypted_columns::subject_keys::{
    DEFAULT_ID_BASE, SubjectKeyError, SubjectKeyIds, SubjectKeys,
};
use encrypted_columns::{Context, KeyId, Keyring};
use sea_orm::{ConnectionTrait, EntityTrait, QuerySelect};

use super::{Clinic, Res, db_err, seal_err};
use crate::entities::patient;

/// The table of patient data keys.
pub const KEY_TABLE: &str = "patient_keys";

/// Envelope key ids at and above this are patient data keys; the clinic's own key ids must
/// stay below it (checked when keys are loaded).
pub const DATA_KEY_ID_BASE: u32 = DEFAULT_ID_BASE;

/// The subject keys of `patient_keys`, new keys wrapped by `master` as envelopes of
/// `patient_keys.wrapped_key` (unchanged format).
pub(super) fn subject_keys(master: &Arc<Keyring>) -> SubjectKeys {
    let kek = KeyringKek::for_context(Arc::clone(master), Context::new(KEY_TABLE, "wrapped_key"));
    SubjectKeys::new(KEY_TABLE, Arc::new(kek))
}

/// The envelope key id of the data key in `patient_keys` row `row`: one-to-one for rows
/// 1..=i32::MAX (ids 0x8000_0001..=0xFFFF_FFFF). Any other row number is a damaged or
/// tampered `key_id`, refused rather than mapped onto some other patient's key.
pub fn data_key_id(row: i32) -> Res<KeyId> {
    SubjectKeyIds::default()
        .key_id(i64::from(row))
        .map_err(|_| {
            format!(
                "key row {row} is not a valid patient_keys id (ids start at 1); the row is \
                 damaged"
            )
        })
}

/// The `patient_keys` row a data key id names, if it is one.
pub fn key_row_of_id(id: KeyId) -> Option<i32> {
    SubjectKeyIds::default()
        .row_of(id)
        .and_then(|n| i32::try_from(n).ok())
}

/// A patient key row's failure as one line, in the clinic's words.
pub fn key_err(row: i32, err: &SubjectKeyError) -> String {
    match err {
        SubjectKeyError::Missing { .. } => format!(
            "patient_keys row {row} is not in the database: the patient was erased or the key \
             row is missing"
        ),
        SubjectKeyError::InvalidRow { .. } => {
            data_key_id(row).err().unwrap_or_else(|| err.to_string())
        }
        // The clinic keyring's envelope did not authenticate: the clinic key under that id
        // is not the one that wrapped it (wrong key bytes), or the row was modified.
        SubjectKeyError::Kek {
            source: KekError::Unwrap { provider, .. },
            ..
        } if provider == LEGACY_PROVIDER => format!(
            "patient_keys row {row} does not open: authentication failed with the clinic key \
             its envelope names (another key under that id, or the row was modified)"
        ),
        SubjectKeyError::Kek { source, .. } => {
            format!("patient_keys row {row} does not open: {source}")
        }
        SubjectKeyError::Keyring { source, .. } => {
            format!("patient_keys row {row}: {}", seal_err(source))
        }
        other => format!("patient_keys row {row} does not open: {other}"),
    }
}

/// A reading keyring and the key rows that could not be put in it.
pub struct ReadingKeys {
    /// The clinic keyring plus every data key that opened.
    pub ring: Arc<Keyring>,
    /// `patient_keys` row → why its key is not in `ring` (damaged, wrong clinic key, …).
    pub broken: BTreeMap<i32, String>,
}

impl Clinic {
    /// Wraps new patient keys with `kek` (a KMS or HSM) from now on; rows wrapped by the
    /// clinic keyring (provider `keyring`) stay readable.
    pub fn with_subject_kek(self, kek: Arc<dyn KeyEncryptionKey>) -> Self {
        Clinic {
            subject_keys: self.subject_keys.with_kek(kek),
            ..self
        }
    }

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
    /// everyone else. One query per 500 rows, unwraps in one concurrent batch, each key
    /// checked against its row's check value.
    pub async fn reading_keys<C: ConnectionTrait>(
        &self,
        db: &C,
        key_rows: impl IntoIterator<Item = i32>,
    ) -> Res<ReadingKeys> {
        let opened = self
            .subject_keys
            .keyring(db, &self.master, key_rows.into_iter().map(i64::from))
            .await
            .map_err(|e| format!("cannot read patient keys: {e}"))?;
        let broken = opened
            .broken
            .iter()
            .filter_map(|(row, err)| {
                let row = i32::try_from(*row).ok()?;
                Some((row, key_err(row, err)))
            })
            .collect();
        Ok(ReadingKeys {
            ring: opened.ring,
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

    /// Stores the check value of key row `key_row` if it has none yet (rows written before
    /// migration 12: trusted on first use). Called where the clinic writes for one patient
    /// anyway (updating a patient, erasing one), so old databases gain check values as they
    /// are used, without a separate pass.
    pub async fn fill_check_value<C: ConnectionTrait>(&self, db: &C, key_row: i32) -> Res<bool> {
        self.subject_keys
            .fill_check_value(db, i64::from(key_row))
            .await
            .map_err(|e| key_err(key_row, &e))
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
