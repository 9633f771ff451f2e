//! `clinic note add|list`, `clinic consent record|show`, `clinic transcript import|show`:
//! a patient's clinical records, each sealed with the patient's own data key.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use encrypted_columns::{EncryptedJson, Json, Keyring, keyring};
use sea_orm::ActiveValue::Set;
use sea_orm::{
    ActiveModelBehavior, ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter,
    QueryOrder, TransactionTrait,
};
use serde::{Deserialize, Serialize};

use crate::cli::{ConsentCommand, ConsentMethod, NoteCommand, TranscriptCommand};
use crate::clinic::{Clinic, db_err, seal};
use crate::commands::patient::fit;
use crate::commands::{Global, print_json};
use crate::entities::consent_record::{self, Method};
use crate::entities::transcript::Segment;
use crate::entities::{clinical_note, transcript};
use crate::output::say;

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

/// A consent as shown.
#[derive(Debug, Serialize)]
struct ConsentView {
    id: i32,
    patient_id: i32,
    scope: String,
    method: Method,
    granted: bool,
    signature: String,
    recorded_at: DateTime<Utc>,
}

/// A transcript as shown.
#[derive(Debug, Serialize)]
struct TranscriptView {
    id: i32,
    patient_id: i32,
    text: String,
    segments: Vec<Segment>,
    recorded_at: DateTime<Utc>,
}

/// The file `clinic transcript import` reads.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TranscriptFile {
    /// The whole text.
    pub text: String,
    /// Speaker turns.
    #[serde(default)]
    pub segments: Vec<Segment>,
}

fn required(name: &str, value: String) -> Result<String, String> {
    crate::validate::required(name, Some(value))
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
            let key_row = clinic.key_row_of(&clinic.db, patient).await?;
            let ring = clinic.reading_ring(&clinic.db, [key_row]).await?;
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
            for n in &views {
                say!(
                    "Note #{} by {}, {}",
                    n.id,
                    n.author,
                    n.created_at.format("%Y-%m-%d %H:%M")
                );
                say!("  S  {}", n.subjective);
                say!("  O  {}", n.objective);
                say!("  A  {}", n.assessment);
                say!("  P  {}", n.plan);
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

/// Inserts one record of `patient`, built by `build` with values sealed by the patient's data
/// key, and audits its creation as `table#id`, in one transaction; returns the id.
async fn insert_for_patient<A>(
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
    let key_row = clinic.key_row_of(&txn, patient).await?;
    let ring = clinic.reading_ring(&txn, [key_row]).await?;
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

/// Runs one consent command.
pub async fn consent(global: &Global, command: ConsentCommand) -> Result<(), String> {
    match command {
        ConsentCommand::Record {
            patient,
            scope,
            method,
            signature,
            refused,
        } => {
            let scope = required("scope", scope)?;
            let signature = required("signature", signature)?;
            let method = match method {
                ConsentMethod::Written => Method::Written,
                ConsentMethod::Verbal => Method::Verbal,
                ConsentMethod::Electronic => Method::Electronic,
            };
            let clinic = global.open().await?;
            let id = record_consent(&clinic, patient, &scope, method, !refused, signature).await?;
            if global.json {
                return print_json(&serde_json::json!({ "id": id }));
            }
            say!(
                "Recorded consent #{id}: patient #{patient} {} {scope}.",
                if refused { "refused" } else { "granted" }
            );
            Ok(())
        }
        ConsentCommand::Show { patient } => {
            let clinic = global.open().await?;
            let key_row = clinic.key_row_of(&clinic.db, patient).await?;
            let ring = clinic.reading_ring(&clinic.db, [key_row]).await?;
            let rows = keyring::scope(
                ring,
                consent_record::Entity::find()
                    .filter(consent_record::Column::PatientId.eq(patient))
                    .order_by_asc(consent_record::Column::Id)
                    .all(&clinic.db),
            )
            .await
            .map_err(db_err)?;
            clinic
                .audit_reads(
                    "consent record read",
                    rows.iter()
                        .map(|c| (format!("consent_records#{}", c.id), patient)),
                )
                .await?;
            let views: Vec<ConsentView> = rows
                .iter()
                .map(|c| ConsentView {
                    id: c.id,
                    patient_id: c.patient_id,
                    scope: c.scope.clone(),
                    method: c.method,
                    granted: c.granted,
                    signature: c.signature.expose().clone(),
                    recorded_at: c.recorded_at,
                })
                .collect();
            if global.json {
                return print_json(&views);
            }
            if views.is_empty() {
                say!("Patient #{patient} has no consent records.");
                return Ok(());
            }
            say!(
                "{:>5}  {:<12}  {:<8}  {:<10}  {:<16}  SIGNATURE",
                "ID",
                "SCOPE",
                "GRANTED",
                "METHOD",
                "RECORDED"
            );
            for c in &views {
                say!(
                    "{:>5}  {:<12}  {:<8}  {:<10}  {:<16}  {}",
                    c.id,
                    fit(&c.scope, 12),
                    if c.granted { "yes" } else { "REFUSED" },
                    format!("{:?}", c.method).to_lowercase(),
                    c.recorded_at.format("%Y-%m-%d %H:%M").to_string(),
                    fit(&c.signature, 40)
                );
            }
            Ok(())
        }
    }
}

/// Stores a consent record for `patient`; returns its id.
pub async fn record_consent(
    clinic: &Clinic,
    patient: i32,
    scope: &str,
    method: Method,
    granted: bool,
    signature: String,
) -> Result<i32, String> {
    insert_for_patient(
        clinic,
        patient,
        "consent_records",
        if granted {
            "consent recorded"
        } else {
            "refusal recorded"
        },
        |ring| {
            Ok(consent_record::ActiveModel {
                patient_id: Set(patient),
                scope: Set(scope.to_owned()),
                method: Set(method),
                granted: Set(granted),
                signature: Set(seal(ring, signature)?),
                recorded_at: Set(Utc::now()),
                ..Default::default()
            })
        },
        |m| m.id,
    )
    .await
}

/// Runs one transcript command.
pub async fn transcript(global: &Global, command: TranscriptCommand) -> Result<(), String> {
    match command {
        TranscriptCommand::Import { patient, file } => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            let parsed: TranscriptFile = serde_json::from_str(&text).map_err(|e| {
                format!(
                    "{} is not a transcript file: {e} (expected {{\"text\": \"...\", \
                     \"segments\": [{{\"speaker\", \"start_ms\", \"end_ms\", \"text\"}}]}})",
                    file.display()
                )
            })?;
            if let Some(bad) = parsed.segments.iter().position(|s| s.end_ms < s.start_ms) {
                return Err(format!(
                    "{}: segment {} ends before it starts",
                    file.display(),
                    bad + 1
                ));
            }
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
            let key_row = clinic.key_row_of(&clinic.db, patient).await?;
            let ring = clinic.reading_ring(&clinic.db, [key_row]).await?;
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
                    s.speaker,
                    s.text
                );
            }
            if view.segments.is_empty() {
                say!("  {}", view.text);
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

use sea_orm::QuerySelect as _;
