//! A patient's data key, wrapped: sealed with the clinic's keyring like any other field, so
//! rotating the clinic's key re-wraps these small rows and never touches patient data.

use chrono::{DateTime, Utc};
use encrypted_columns::{DeriveEncrypted, EncryptedBytes};
use sea_orm::entity::prelude::*;

/// A row of `patient_keys`.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel, DeriveEncrypted)]
#[sea_orm(table_name = "patient_keys")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i32,
    /// 32 random bytes; `Debug` prints no key material.
    pub wrapped_key: EncryptedBytes<ctx::WrappedKey>,
    pub created_at: DateTime<Utc>,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
