//! `clinic consent record|show`: consents and refusals, the signature sealed with the
//! patient's data key.

use chrono::{DateTime, Utc};
use encrypted_columns::keyring;
use sea_orm::ActiveValue::Set;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use serde::Serialize;

use super::store::{insert_for_patient, patient_ring, required};
use crate::cli::{ConsentCommand, ConsentMethod};
use crate::clinic::{Clinic, db_err, seal};
use crate::commands::patient::fit;
use crate::commands::{Global, print_json};
use crate::entities::consent_record::{self, Method};
use crate::output::{say, shown};

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
                "Recorded consent #{id}: patient #{patient} {} {}.",
                if refused { "refused" } else { "granted" },
                shown(&scope)
            );
            Ok(())
        }
        ConsentCommand::Show { patient } => {
            let clinic = global.open().await?;
            let (_, ring) = patient_ring(&clinic, &clinic.db, patient).await?;
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
                    fit(&shown(&c.scope), 12),
                    if c.granted { "yes" } else { "REFUSED" },
                    format!("{:?}", c.method).to_lowercase(),
                    c.recorded_at.format("%Y-%m-%d %H:%M").to_string(),
                    fit(&shown(&c.signature), 40)
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
