//! A consent: what the patient agreed to (or refused), how it was given, and the signature.

use chrono::{DateTime, Utc};
use encrypted_columns::{DeriveEncrypted, EncryptedString};
use sea_orm::entity::prelude::*;
use serde::Serialize;

/// How consent was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, EnumIter, DeriveActiveEnum, Serialize)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Signed on paper, scanned.
    #[sea_orm(string_value = "written")]
    Written,
    /// Said aloud, witnessed.
    #[sea_orm(string_value = "verbal")]
    Verbal,
    /// Signed on a tablet or web form.
    #[sea_orm(string_value = "electronic")]
    Electronic,
}

/// A row of `consent_records`.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel, DeriveEncrypted)]
#[sea_orm(table_name = "consent_records")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i32,
    pub patient_id: i32,
    /// What it covers, e.g. `treatment`, `recording`, `research`.
    pub scope: String,
    pub method: Method,
    pub granted: bool,
    /// The signature data (a typed name, a witness statement, or base64 of a drawn one).
    pub signature: EncryptedString<ctx::Signature>,
    pub recorded_at: DateTime<Utc>,
}

/// No relations declared (the foreign key is in the migration).
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
