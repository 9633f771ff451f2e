//! A row of the append-only `audit_log`. `summary` is fixed text from the application, never
//! PHI, readable forever. `details` stays raw bytes here: an envelope sealed with the
//! patient's data key, opened row by row so that an erased patient's entries still list
//! (their details as "unreadable: patient erased"). Nothing in the log is sealed with the
//! clinic key, so rotating that key never has to rewrite this append-only table.

use chrono::{DateTime, Utc};
use encrypted_columns::column_context;
use sea_orm::entity::prelude::*;

column_context!(pub Details, table = "audit_log", column = "details");

/// A row of `audit_log`.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_log")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    /// `read`, `create`, `update`, `erase`, `rotate`, `search`.
    pub action: String,
    /// Which record, e.g. `patients#12`, `clinical_notes#7`.
    pub record: String,
    pub patient_id: Option<i32>,
    /// What happened, in words fixed by the application.
    pub summary: String,
    /// Envelope of a short description; never plaintext.
    pub details: Option<Vec<u8>>,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
