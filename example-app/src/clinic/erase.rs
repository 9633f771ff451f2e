//! Erasing a patient (crypto-shredding): what it removes, what it checks before it acts, and
//! what it cannot reach.
//!
//! The key row to destroy is the one `patients.key_id` names, so erasure first proves that row
//! really is this patient's key: no other patient names it (UNIQUE + foreign key since
//! migration 9, and checked again here), and every envelope of the patient — its row, notes,
//! consents, transcripts and audit details — carries that key's id. A tampered `key_id` would
//! otherwise make erasure destroy another patient's key and keep this one's. All checks and
//! deletions run in one transaction with the patient's row locked, and the transaction
//! re-counts what is left before it commits, so an interrupted erase changes nothing and can
//! simply be run again. The key row itself is destroyed by the library
//! (`SubjectKeys::destroy`, in a savepoint of that transaction): it also refuses, naming the
//! rows, while another `patient_keys` row holds a copy of the key (same wrapped bytes or check
//! value), since deleting one copy would not shred it.

use encrypted_columns::envelope::key_id_of;
use encrypted_columns::subject_keys::SubjectKeyError;
use encrypted_columns::subject_keys::table::LEGACY_PROVIDER;
use encrypted_columns::{EncryptedString, Error as SealError, KeyId};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, TransactionTrait,
};
use tracing::info;

use super::rows::{self, RawPatient, bound_to};
use super::{Clinic, Res, db_err, key_err, seal_err};
use crate::entities::{
    audit_entry, clinical_note, consent_record, patient, patient_key, transcript,
};

/// What erasing a patient removed, and the proof that its data no longer opens here.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ErasureReport {
    pub patient_id: i32,
    /// The destroyed `patient_keys` row, and the envelope key id it held.
    pub key_row: i32,
    pub data_key_id: u32,
    /// The clinic key that wrapped the destroyed data key (rows of provider `keyring`):
    /// backups taken before the erase hold the wrapped key, and open with this clinic key for
    /// as long as it exists. `None` when a KMS or HSM wrapped it (see `wrapped_by`).
    pub wrapped_by_clinic_key: Option<u32>,
    /// What wrapped the destroyed data key, in words.
    pub wrapped_by: String,
    /// The destroyed key's check value (hex), with which the copy check ran; `None` when the
    /// row had none and its key did not unwrap (wrapped bytes were compared alone).
    pub key_check_value: Option<String>,
    pub notes: u64,
    pub consents: u64,
    pub transcripts: u64,
    pub patient_rows: u64,
    pub key_rows: u64,
    /// Rows still referring to the patient after the erase (always 0 in a report).
    pub remaining_rows: u64,
    /// The error a copy of the patient's e-mail envelope (as a backup holds it) now gives
    /// with this database's keys.
    pub backup_copy_error: String,
    /// What this erasure does not reach, in words (see README, "Erasure").
    pub not_reached: Vec<String>,
}

impl Clinic {
    /// Erases patient `id`: checks that its key row is its own, destroys it, deletes its rows,
    /// verifies, reports. Refuses, changing nothing, when the binding does not hold.
    pub async fn erase_patient(&self, id: i32) -> Res<ErasureReport> {
        let txn = self.db.begin().await.map_err(db_err)?;
        // Locked (PostgreSQL, MySQL; SQLite has one writer) so no new record of this patient
        // can be added between the checks and the deletes.
        let raw = rows::select_raw()
            .filter(patient::Column::Id.eq(id))
            .lock_exclusive()
            .into_model::<RawPatient>()
            .one(&txn)
            .await
            .map_err(db_err)?;
        let Some(raw) = raw else {
            return Err(no_patient(&txn, id).await);
        };
        let key_row = raw.key_id;
        let expected = raw.expected_key()?;
        check_key_row_is_own(&txn, id, key_row).await?;
        let strays = stray_envelopes(&txn, &raw, expected).await?;
        if !strays.is_empty() {
            return Err(format!(
                "refusing to erase patient {id}: {} value(s) are not sealed with the data key \
                 its key_id names (patient_keys row {key_row}, key {expected}): {}; deleting \
                 that key row would not shred them. The data was tampered with or damaged; \
                 nothing was deleted",
                strays.len(),
                list(&strays)
            ));
        }
        let stored: Option<(Vec<u8>, String, Option<String>)> =
            patient_key::Entity::find_by_id(key_row)
                .select_only()
                .columns([
                    patient_key::Column::WrappedKey,
                    patient_key::Column::Provider,
                    patient_key::Column::KekId,
                ])
                .into_tuple()
                .one(&txn)
                .await
                .map_err(db_err)?;
        let Some((wrapped, provider, kek_id)) = stored else {
            return Err(format!(
                "refusing to erase patient {id}: its key row (patient_keys row {key_row}) is \
                 missing, so this erase cannot prove what it destroys; nothing was deleted"
            ));
        };
        // Rows the clinic keyring wrapped name the clinic key that opens them in their
        // envelope header; other providers' rows are opaque to the clinic.
        let wrapped_by_clinic_key = if provider == LEGACY_PROVIDER {
            Some(
                key_id_of(&wrapped)
                    .map_err(|e| format!("patient_keys row {key_row} is damaged: {e}"))?
                    .0,
            )
        } else {
            None
        };
        let wrapped_by = match (&wrapped_by_clinic_key, &kek_id) {
            (Some(clinic_key), _) => format!("clinic key {clinic_key}"),
            (None, Some(kek)) => format!("KEK {kek} of provider {provider}"),
            (None, None) => format!("the KEK of provider {provider}"),
        };
        // What a backup taken before now would hold: the e-mail envelope, as stored.
        let backup_copy = raw.email.clone();
        if txn.get_database_backend() == DbBackend::Sqlite {
            // Zero deleted content in the file instead of leaving it in free pages, where a
            // copy of the file taken after the erase would still find the wrapped key.
            txn.execute_unprepared("PRAGMA secure_delete = ON")
                .await
                .map_err(db_err)?;
        }

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
        // The library destroys the key row: locked, deleted, then proven gone with no other
        // row holding a copy of the key (same wrapped bytes or check value), in a savepoint of
        // this transaction, so a refusal rolls the whole erasure back.
        let destroyed = self
            .subject_keys
            .destroy(&txn, i64::from(key_row))
            .await
            .map_err(|e| match e {
                SubjectKeyError::CopiesRemain { copies, .. } => format!(
                    "refusing to erase patient {id}: {} other patient_keys row(s) hold a copy \
                     of its data key (ids {}): destroying row {key_row} would not shred it. \
                     Nothing was deleted",
                    copies.len(),
                    copies
                        .iter()
                        .map(i64::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                other => format!(
                    "erasure of patient {id} stopped and rolled back: {}",
                    key_err(key_row, &other)
                ),
            })?;
        let key_rows = destroyed.deleted;
        // Checked before commit: a shortfall rolls everything back instead of leaving half an
        // erasure behind.
        let remaining_rows = remaining(&txn, id, key_row).await?;
        if patient_rows != 1 || key_rows != 1 || remaining_rows != 0 {
            return Err(format!(
                "erasure of patient {id} stopped and rolled back: {patient_rows} patient row(s) \
                 and {key_rows} key row(s) deleted, {remaining_rows} row(s) would remain"
            ));
        }
        // Counts only, in the plaintext summary: the record of the erasure must stay readable.
        self.audit(
            &txn,
            "erase",
            format!("patients#{id}"),
            Some(id),
            &format!(
                "data key row {key_row} destroyed; deleted {notes} note(s), {consents} \
                 consent(s), {transcripts} transcript(s)"
            ),
            None,
        )
        .await?;
        txn.commit().await.map_err(db_err)?;

        // After commit, from a fresh connection's view: nothing is left, the key row is gone.
        let remaining_rows = remaining(&self.db, id, key_row).await?;
        if remaining_rows != 0 {
            return Err(format!(
                "erasure of patient {id} committed but {remaining_rows} row(s) about it are \
                 back (written concurrently?): run the erase again"
            ));
        }
        // The best keyring this clinic can build now holds no key for the copy.
        let ring = self.reading_ring(&self.db, [key_row]).await?;
        let backup_copy_error =
            match EncryptedString::<patient::ctx::Email>::from_envelope_with(&ring, backup_copy) {
                Ok(_) => {
                    return Err(format!(
                        "erasure failed: patient {id}'s data still opens after its key was \
                         deleted"
                    ));
                }
                Err(SealError::UnknownKeyId { id: gone }) => {
                    format!("UnknownKeyId: data key {gone} is no longer in this database")
                }
                Err(e) => seal_err(&e),
            };
        info!(patient_id = id, "patient erased");
        Ok(ErasureReport {
            patient_id: id,
            key_row,
            data_key_id: expected.0,
            wrapped_by_clinic_key,
            key_check_value: destroyed.check_value.map(|kcv| kcv.to_string()),
            notes,
            consents,
            transcripts,
            patient_rows,
            key_rows,
            remaining_rows,
            backup_copy_error,
            not_reached: not_reached(&wrapped_by, self.db.get_database_backend()),
            wrapped_by,
        })
    }
}

/// The limits of crypto-shredding with a live clinic key, stated for the report.
fn not_reached(wrapped_by: &str, backend: DbBackend) -> Vec<String> {
    let mut limits = vec![
        format!(
            "backups, dumps and replicas taken before now still hold the wrapped data key, and \
             {wrapped_by} opens it: they keep the patient readable until they expire, or until \
             that key is rotated (`clinic keys rotate` to a new clinic key, or `clinic keys \
             rewrap` to a new KEK) and the old one is destroyed everywhere"
        ),
        "those copies also keep the patient's blind-index values: whoever holds the \
         blind-index key can confirm a guessed e-mail, phone last 4 or name and birth date \
         until the blind-index key is rotated (`clinic index rebuild` under a new key) and the \
         old one destroyed"
            .to_owned(),
        "audit entries about the patient stay (their sealed details no longer open here)"
            .to_owned(),
    ];
    if backend != DbBackend::Sqlite {
        // SQLite's secure_delete zeroes the freed pages; the servers keep dead rows for a while.
        limits.push(
            "the deleted rows stay in the server's data files until VACUUM / purge reuses the \
             space, and in its write-ahead or binary log and their archives: treat those like \
             backups"
                .to_owned(),
        );
    }
    limits
}

/// Refuses if another patient names the same key row (possible only if the UNIQUE index of
/// migration 9 was removed): erasing would destroy that patient's key.
async fn check_key_row_is_own(txn: &DatabaseTransaction, id: i32, key_row: i32) -> Res<()> {
    let others: Vec<i32> = patient::Entity::find()
        .select_only()
        .column(patient::Column::Id)
        .filter(patient::Column::KeyId.eq(key_row))
        .filter(patient::Column::Id.ne(id))
        .order_by_asc(patient::Column::Id)
        .into_tuple()
        .all(txn)
        .await
        .map_err(db_err)?;
    if others.is_empty() {
        return Ok(());
    }
    Err(format!(
        "refusing to erase patient {id}: its key row (patient_keys row {key_row}) is also named \
         by {} other patient(s) (ids {}); erasing would destroy their key. Nothing was deleted",
        others.len(),
        others
            .iter()
            .map(i32::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// A note's id and its four sealed sections, as stored.
type NoteEnvelopes = (i32, Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>);

/// Every envelope of patient `raw` (row, notes, consents, transcripts, audit details) whose
/// header names a key other than `expected`, as `table#id.column`.
async fn stray_envelopes(
    txn: &DatabaseTransaction,
    raw: &RawPatient,
    expected: KeyId,
) -> Res<Vec<String>> {
    let id = raw.id;
    let mut strays = Vec::new();
    let mut check = |what: String, bytes: &[u8]| {
        if bound_to(bytes, expected).is_err() {
            strays.push(what);
        }
    };
    for (column, bytes) in raw.envelopes() {
        check(format!("patients#{id}.{column}"), bytes);
    }
    let notes: Vec<NoteEnvelopes> = clinical_note::Entity::find()
        .select_only()
        .columns([
            clinical_note::Column::Id,
            clinical_note::Column::Subjective,
            clinical_note::Column::Objective,
            clinical_note::Column::Assessment,
            clinical_note::Column::Plan,
        ])
        .filter(clinical_note::Column::PatientId.eq(id))
        .into_tuple()
        .all(txn)
        .await
        .map_err(db_err)?;
    for (note, s, o, a, p) in notes {
        for (column, bytes) in [
            ("subjective", s),
            ("objective", o),
            ("assessment", a),
            ("plan", p),
        ] {
            check(format!("clinical_notes#{note}.{column}"), &bytes);
        }
    }
    let consents: Vec<(i32, Vec<u8>)> = consent_record::Entity::find()
        .select_only()
        .columns([
            consent_record::Column::Id,
            consent_record::Column::Signature,
        ])
        .filter(consent_record::Column::PatientId.eq(id))
        .into_tuple()
        .all(txn)
        .await
        .map_err(db_err)?;
    for (consent, bytes) in consents {
        check(format!("consent_records#{consent}.signature"), &bytes);
    }
    let transcripts: Vec<(i32, Vec<u8>, Vec<u8>)> = transcript::Entity::find()
        .select_only()
        .columns([
            transcript::Column::Id,
            transcript::Column::RawText,
            transcript::Column::Segments,
        ])
        .filter(transcript::Column::PatientId.eq(id))
        .into_tuple()
        .all(txn)
        .await
        .map_err(db_err)?;
    for (t, raw_text, segments) in transcripts {
        check(format!("transcripts#{t}.raw_text"), &raw_text);
        check(format!("transcripts#{t}.segments"), &segments);
    }
    let details: Vec<(i64, Option<Vec<u8>>)> = audit_entry::Entity::find()
        .select_only()
        .columns([audit_entry::Column::Id, audit_entry::Column::Details])
        .filter(audit_entry::Column::PatientId.eq(id))
        .into_tuple()
        .all(txn)
        .await
        .map_err(db_err)?;
    for (entry, bytes) in details {
        if let Some(bytes) = bytes {
            check(format!("audit_log#{entry}.details"), &bytes);
        }
    }
    Ok(strays)
}

/// Rows still about patient `id`, plus its key row if it still exists.
async fn remaining<C: ConnectionTrait>(db: &C, id: i32, key_row: i32) -> Res<u64> {
    Ok(clinical_note::Entity::find()
        .filter(clinical_note::Column::PatientId.eq(id))
        .count(db)
        .await
        .map_err(db_err)?
        + consent_record::Entity::find()
            .filter(consent_record::Column::PatientId.eq(id))
            .count(db)
            .await
            .map_err(db_err)?
        + transcript::Entity::find()
            .filter(transcript::Column::PatientId.eq(id))
            .count(db)
            .await
            .map_err(db_err)?
        + patient::Entity::find_by_id(id)
            .count(db)
            .await
            .map_err(db_err)?
        + patient_key::Entity::find_by_id(key_row)
            .count(db)
            .await
            .map_err(db_err)?)
}

/// "No such patient", saying so when it was erased before.
async fn no_patient(txn: &DatabaseTransaction, id: i32) -> String {
    let erased: Option<i64> = audit_entry::Entity::find()
        .select_only()
        .column(audit_entry::Column::Id)
        .filter(audit_entry::Column::PatientId.eq(id))
        .filter(audit_entry::Column::Action.eq("erase"))
        .into_tuple()
        .one(txn)
        .await
        .ok()
        .flatten();
    match erased {
        Some(entry) => format!(
            "no patient with id {id}: it was erased already (audit entry #{entry}); nothing to do"
        ),
        None => format!("no patient with id {id} (see `clinic patient list`)"),
    }
}

/// The first few items, and how many more.
fn list(items: &[String]) -> String {
    const SHOWN: usize = 10;
    let mut out = items
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > SHOWN {
        out.push_str(&format!(" and {} more", items.len() - SHOWN));
    }
    out
}
