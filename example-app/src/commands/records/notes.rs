//! `clinic note add|list`: SOAP notes, each section sealed with the patient's data key.

use chrono::{DateTime, Utc};
use encrypted_columns::keyring;
use sea_orm::ActiveValue::Set;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use serde::Serialize;

use super::store::{insert_for_patient, patient_ring, required};
use crate::cli::NoteCommand;
use crate::clinic::{Clinic, db_err, seal};
use crate::commands::{Global, print_json};
use crate::entities::clinical_note;
use crate::output::{say, shown};

/// A note as shown.
#[derive(Debug, Serialize)]
struct NoteView {
    id: i32,
    patient_id: i32,
    author: String,
    subjective: String,
    objective: String,
    assessment: String,
    plan: String,
    created_at: DateTime<Utc>,
}

/// Runs one note command.
pub async fn note(global: &Global, command: NoteCommand) -> Result<(), String> {
    match command {
        NoteCommand::Add {
            patient,
            author,
            subjective,
            objective,
            assessment,
            plan,
        } => {
            let (author, s, o, a, p) = (
                required("author", author)?,
                required("subjective", subjective)?,
                required("objective", objective)?,
                required("assessment", assessment)?,
                required("plan", plan)?,
            );
            let clinic = global.open().await?;
            let id = add_note(&clinic, patient, &author, [s, o, a, p]).await?;
            if global.json {
                return print_json(&serde_json::json!({ "id": id }));
            }
            say!("Added note #{id} to patient #{patient}.");
            Ok(())
        }
        NoteCommand::List { patient } => {
            let clinic = global.open().await?;
            let (_, ring) = patient_ring(&clinic, &clinic.db, patient).await?;
            let notes = keyring::scope(
                ring,
                clinical_note::Entity::find()
                    .filter(clinical_note::Column::PatientId.eq(patient))
                    .order_by_asc(clinical_note::Column::Id)
                    .all(&clinic.db),
            )
            .await
            .map_err(db_err)?;
            clinic
                .audit_reads(
                    "clinical note read",
                    notes
                        .iter()
                        .map(|n| (format!("clinical_notes#{}", n.id), patient)),
                )
                .await?;
            let views: Vec<NoteView> = notes
                .iter()
                .map(|n| NoteView {
                    id: n.id,
                    patient_id: n.patient_id,
                    author: n.author.clone(),
                    subjective: n.subjective.expose().clone(),
                    objective: n.objective.expose().clone(),
                    assessment: n.assessment.expose().clone(),
                    plan: n.plan.expose().clone(),
                    created_at: n.created_at,
                })
                .collect();
            if global.json {
                return print_json(&views);
            }
            if views.is_empty() {
                say!("Patient #{patient} has no notes.");
            }
            // Stored text is shown escaped: a note cannot drive the terminal.
            for n in &views {
                say!(
                    "Note #{} by {}, {}",
                    n.id,
                    shown(&n.author),
                    n.created_at.format("%Y-%m-%d %H:%M")
                );
                say!("  S  {}", shown(&n.subjective));
                say!("  O  {}", shown(&n.objective));
                say!("  A  {}", shown(&n.assessment));
                say!("  P  {}", shown(&n.plan));
            }
            Ok(())
        }
    }
}

/// Stores a SOAP note for `patient`, sealed with its data key; returns the note id.
pub async fn add_note(
    clinic: &Clinic,
    patient: i32,
    author: &str,
    [s, o, a, p]: [String; 4],
) -> Result<i32, String> {
    insert_for_patient(
        clinic,
        patient,
        "clinical_notes",
        "clinical note added",
        |ring| {
            Ok(clinical_note::ActiveModel {
                patient_id: Set(patient),
                author: Set(author.to_owned()),
                subjective: Set(seal(ring, s)?),
                objective: Set(seal(ring, o)?),
                assessment: Set(seal(ring, a)?),
                plan: Set(seal(ring, p)?),
                created_at: Set(Utc::now()),
                ..Default::default()
            })
        },
        |m| m.id,
    )
    .await
}
