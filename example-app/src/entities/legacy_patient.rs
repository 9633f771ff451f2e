//! `legacy_patients` while it is being encrypted: plaintext columns and their encrypted
//! companions side by side. After `clinic migrate-legacy drop` an application would ship an
//! entity without the plaintext fields (and may rename `*_enc` back).

use encrypted_columns::{DeriveEncrypted, EncryptedString};
use sea_orm::entity::prelude::*;

/// A row of `legacy_patients` during the migration.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel, DeriveEncrypted)]
#[sea_orm(table_name = "legacy_patients")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i32,
    pub full_name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    /// Logical column `full_name`: the envelope survives renaming `full_name_enc`.
    #[encrypted(column = "full_name")]
    pub full_name_enc: Option<EncryptedString<ctx::FullNameEnc>>,
    #[encrypted(
        column = "email",
        blind_index(name = "email_bidx", normalize = "email", unique)
    )]
    pub email_enc: Option<EncryptedString<ctx::EmailEnc>>,
    pub email_bidx: Option<Vec<u8>>,
    #[encrypted(column = "phone")]
    pub phone_enc: Option<EncryptedString<ctx::PhoneEnc>>,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
