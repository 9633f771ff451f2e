//! A visit transcript: the raw text and its diarized segments, both sealed.

use chrono::{DateTime, Utc};
use encrypted_columns::{DeriveEncrypted, EncryptedJson, EncryptedString};
use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// One speaker turn.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Segment {
    /// Who spoke, e.g. `clinician`, `patient`.
    pub speaker: String,
    /// Offset of the turn's start, in milliseconds.
    pub start_ms: u64,
    /// Offset of the turn's end, in milliseconds.
    pub end_ms: u64,
    /// What was said.
    pub text: String,
}

/// A row of `transcripts`.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel, DeriveEncrypted)]
#[sea_orm(table_name = "transcripts")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i32,
    pub patient_id: i32,
    pub raw_text: EncryptedString<ctx::RawText>,
    pub segments: EncryptedJson<Vec<Segment>, ctx::Segments>,
    pub recorded_at: DateTime<Utc>,
}

/// No relations declared (the foreign key is in the migration).
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
