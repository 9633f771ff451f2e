//! `clinic transcript import|show`: visit transcripts, text and segments sealed with the
//! patient's data key.

use chrono::{DateTime, Utc};
use encrypted_columns::{EncryptedJson, Json, keyring};
use sea_orm::ActiveValue::Set;
use sea_orm::EntityTrait;
use sea_orm::QuerySelect as _;
use serde::Serialize;

use super::store::{insert_for_patient, patient_ring};
use super::transcript_file::{TranscriptFile, read_transcript};
use crate::cli::TranscriptCommand;
use crate::clinic::{Clinic, db_err, seal};
use crate::commands::{Global, print_json};
use crate::entities::transcript::{self, Segment};
use crate::output::{say, shown};

/// A transcript as shown.
#[derive(Debug, Serialize)]
struct TranscriptView {
    id: i32,
    patient_id: i32,
    text: String,
    segments: Vec<Segment>,
    recorded_at: DateTime<Utc>,
}

/// Runs one transcript command.
pub async fn transcript(global: &Global, command: TranscriptCommand) -> Result<(), String> {
    match command {
        TranscriptCommand::Import { patient, file } => {
            // Checked before keys or the database are touched.
            let parsed = read_transcript(&file)?;
            let clinic = global.open().await?;
            let id = import_transcript(&clinic, patient, parsed).await?;
            if global.json {
                return print_json(&serde_json::json!({ "id": id }));
            }
            say!("Imported transcript #{id} for patient #{patient}.");
            Ok(())
        }
        TranscriptCommand::Show { id } => {
            let clinic = global.open().await?;
            let patient: Option<i32> = transcript::Entity::find_by_id(id)
                .select_only()
                .column(transcript::Column::PatientId)
                .into_tuple()
                .one(&clinic.db)
                .await
                .map_err(db_err)?;
            let patient = patient.ok_or_else(|| format!("no transcript with id {id}"))?;
            let (_, ring) = patient_ring(&clinic, &clinic.db, patient).await?;
            let row = keyring::scope(ring, transcript::Entity::find_by_id(id).one(&clinic.db))
                .await
                .map_err(db_err)?
                .ok_or_else(|| format!("no transcript with id {id}"))?;
            clinic
                .audit_reads("transcript read", [(format!("transcripts#{id}"), patient)])
                .await?;
            let view = TranscriptView {
                id: row.id,
                patient_id: row.patient_id,
                text: row.raw_text.expose().clone(),
                segments: row.segments.expose().0.clone(),
                recorded_at: row.recorded_at,
            };
            if global.json {
                return print_json(&view);
            }
            say!(
                "Transcript #{} of patient #{}, {}",
                view.id,
                view.patient_id,
                view.recorded_at.format("%Y-%m-%d %H:%M")
            );
            for s in &view.segments {
                say!(
                    "  [{:>3}:{:02}] {:<10} {}",
                    s.start_ms / 60_000,
                    (s.start_ms / 1000) % 60,
                    shown(&s.speaker),
                    shown(&s.text)
                );
            }
            if view.segments.is_empty() {
                say!("  {}", shown(&view.text));
            }
            Ok(())
        }
    }
}

/// Stores a transcript for `patient`; returns its id.
pub async fn import_transcript(
    clinic: &Clinic,
    patient: i32,
    file: TranscriptFile,
) -> Result<i32, String> {
    insert_for_patient(
        clinic,
        patient,
        "transcripts",
        "transcript imported",
        |ring| {
            Ok(transcript::ActiveModel {
                patient_id: Set(patient),
                raw_text: Set(seal(ring, file.text)?),
                segments: Set(EncryptedJson::new_with(ring, Json(file.segments))
                    .map_err(|e| e.to_string())?),
                recorded_at: Set(Utc::now()),
                ..Default::default()
            })
        },
        |m| m.id,
    )
    .await
}
