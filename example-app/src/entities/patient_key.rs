//! A patient's data key, wrapped: a row of the library's subject-key table
//! (`encrypted_columns::subject_keys`). Rows of provider `keyring` are sealed with the clinic's
//! keyring like any other field, so rotating the clinic's key re-wraps these small rows and
//! never touches patient data; rows of other providers hold that provider's wrapping, which
//! this entity's `wrapped_key` type cannot open: read them through `SubjectKeys`.

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
    /// The KEK provider that wrapped the key (`keyring`: the clinic keyring, as an envelope of
    /// this column; since migration 12).
    pub provider: String,
    /// Which KEK of the provider (NULL: any; rows from before migration 12).
    pub kek_id: Option<String>,
    /// The key's check value (FORMAT.md §10, purpose `subject`, its envelope key id); NULL on
    /// rows from before migration 12 until first filled.
    pub check_value: Option<Vec<u8>>,
    pub created_at: DateTime<Utc>,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
