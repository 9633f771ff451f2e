//! A SOAP note: subjective, objective, assessment and plan, each sealed.

use chrono::{DateTime, Utc};
use encrypted_columns::{DeriveEncrypted, EncryptedString};
use sea_orm::entity::prelude::*;

/// A row of `clinical_notes`.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel, DeriveEncrypted)]
#[sea_orm(table_name = "clinical_notes")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i32,
    pub patient_id: i32,
    /// Who wrote it (a staff identifier, not PHI).
    pub author: String,
    pub subjective: EncryptedString<ctx::Subjective>,
    pub objective: EncryptedString<ctx::Objective>,
    pub assessment: EncryptedString<ctx::Assessment>,
    pub plan: EncryptedString<ctx::Plan>,
    pub created_at: DateTime<Utc>,
}

/// No relations declared (the foreign key is in the migration).
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
