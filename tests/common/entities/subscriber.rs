//! `bi_subscribers`: a non-unique e-mail index kept at full width and truncated to 2 bits
//! (so lookups meet false positives), and a 4-bit "last 4 digits" index on an optional phone.
//! `before_save` fills the indexes (`active_model_behavior`).

use encrypted_columns::{DeriveEncrypted, EncryptedString};
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel, DeriveEncrypted)]
#[sea_orm(table_name = "bi_subscribers")]
#[encrypted(active_model_behavior)]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i32,
    #[encrypted(blind_index(name = "email_bidx", normalize = "email"))]
    #[encrypted(blind_index(name = "email_tiny_bidx", normalize = "email", bits = 2))]
    pub email: EncryptedString<ctx::Email>,
    pub email_bidx: Vec<u8>,
    pub email_tiny_bidx: Vec<u8>,
    #[encrypted(blind_index(name = "phone_last4_bidx", transform = "digits, last(4)", bits = 4))]
    pub phone: Option<EncryptedString<ctx::Phone>>,
    pub phone_last4_bidx: Option<Vec<u8>>,
    /// Plaintext, unindexed: updating it must leave the indexes alone.
    pub nickname: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}
