//! Appending to the audit log.

use chrono::Utc;
use encrypted_columns::{EncryptedString, Keyring};
use sea_orm::ActiveValue::Set;
use sea_orm::{ActiveModelTrait, ConnectionTrait, TransactionTrait};
use tracing::debug;

use super::{Clinic, Res, db_err};
use crate::entities::audit_entry;

impl Clinic {
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
}
