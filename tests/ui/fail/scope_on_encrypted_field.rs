// A scope column is compared as stored, so it must be a plain column: scoping by an encrypted
// field (whose every seal differs) is refused.
use encrypted_columns::{DeriveEncrypted, EncryptedString};
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel, DeriveEncrypted)]
#[sea_orm(table_name = "accounts")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i32,
    pub tenant: EncryptedString<ctx::Tenant>,
    #[encrypted(blind_index(name = "email_bidx", normalize = "email", unique, scope(tenant)))]
    pub email: EncryptedString<ctx::Email>,
    pub email_bidx: Vec<u8>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

fn main() {}
