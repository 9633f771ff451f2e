// An index unique per tenant whose column is also `#[sea_orm(unique)]` would still be unique
// across the whole table: refused, with the way to create the composite index named.
use encrypted_columns::{DeriveEncrypted, EncryptedString};
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel, DeriveEncrypted)]
#[sea_orm(table_name = "accounts")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i32,
    pub tenant_id: i32,
    #[encrypted(blind_index(name = "email_bidx", normalize = "email", unique, scope(tenant_id)))]
    pub email: EncryptedString<ctx::Email>,
    #[sea_orm(unique)]
    pub email_bidx: Vec<u8>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

fn main() {}
