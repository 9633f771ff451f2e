//! `clinic audit list`: the append-only trail, newest first. Details sealed with a patient's
//! data key are opened when the key still exists; an erased patient's show as unreadable.

use chrono::{DateTime, Utc};
use encrypted_columns::{EncryptedString, Error as SealError};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::Serialize;

use crate::cli::AuditCommand;
use crate::clinic::db_err;
use crate::commands::patient::fit;
use crate::commands::{Global, print_json};
use crate::entities::{audit_entry, patient};
use crate::output::say;

/// An audit entry as shown.
#[derive(Debug, Serialize)]
struct EntryView {
    id: i64,
    at: DateTime<Utc>,
    actor: String,
    action: String,
    record: String,
    patient_id: Option<i32>,
    summary: String,
    /// Opened details; `None` when the entry has none.
    details: Option<String>,
}

/// Runs one audit command.
pub async fn run(global: &Global, command: AuditCommand) -> Result<(), String> {
    let (patient, limit) = match command {
        AuditCommand::List { patient, limit } => (patient, limit),
        AuditCommand::Verify => return Err("`clinic audit verify` is not built yet".into()),
    };
    let clinic = global.open().await?;
    let mut query = audit_entry::Entity::find()
        .order_by_desc(audit_entry::Column::Id)
        .limit(limit);
    if let Some(id) = patient {
        query = query.filter(audit_entry::Column::PatientId.eq(id));
    }
    let entries = query.all(&clinic.db).await.map_err(db_err)?;
    // The data keys of the patients mentioned (erased ones have none left).
    let patient_ids: Vec<i32> = entries.iter().filter_map(|e| e.patient_id).collect();
    let key_rows: Vec<i32> = patient::Entity::find()
        .select_only()
        .column(patient::Column::KeyId)
        .filter(patient::Column::Id.is_in(patient_ids))
        .into_tuple()
        .all(&clinic.db)
        .await
        .map_err(db_err)?;
    let ring = clinic.reading_ring(&clinic.db, key_rows).await?;
    let views: Vec<EntryView> = entries
        .into_iter()
        .map(|e| {
            let details = e.details.map(|bytes| {
                match EncryptedString::<audit_entry::Details>::from_envelope_with(&ring, bytes) {
                    Ok(text) => text.expose().clone(),
                    Err(SealError::UnknownKeyId { .. }) => {
                        "(unreadable: the patient's key was destroyed)".to_owned()
                    }
                    Err(other) => format!("(unreadable: {other})"),
                }
            });
            EntryView {
                id: e.id,
                at: e.at,
                actor: e.actor,
                action: e.action,
                record: e.record,
                patient_id: e.patient_id,
                summary: e.summary,
                details,
            }
        })
        .collect();
    if global.json {
        return print_json(&views);
    }
    if views.is_empty() {
        say!(
            "The audit log has no entries{}.",
            match patient {
                Some(id) => format!(" about patient #{id}"),
                None => String::new(),
            }
        );
        return Ok(());
    }
    say!(
        "{:>6}  {:<19}  {:<14}  {:<7}  {:<20}  WHAT",
        "ID",
        "WHEN (UTC)",
        "WHO",
        "ACTION",
        "RECORD"
    );
    for v in &views {
        let what = match &v.details {
            Some(d) => format!("{}: {d}", v.summary),
            None => v.summary.clone(),
        };
        say!(
            "{:>6}  {:<19}  {:<14}  {:<7}  {:<20}  {}",
            v.id,
            v.at.format("%Y-%m-%d %H:%M:%S"),
            fit(&v.actor, 14),
            v.action,
            fit(&v.record, 20),
            what
        );
    }
    Ok(())
}
