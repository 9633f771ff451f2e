// `scope(..)` scopes a UNIQUE constraint; on a non-unique index it would mean nothing, so it
// is refused, with the lookup filter named for what the author probably wanted.
use encrypted_columns::{DeriveEncrypted, EncryptedString};
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel, DeriveEncrypted)]
#[sea_orm(table_name = "accounts")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i32,
    pub tenant_id: i32,
    #[encrypted(blind_index(name = "email_bidx", normalize = "email", scope(tenant_id)))]
    pub email: EncryptedString<ctx::Email>,
    pub email_bidx: Vec<u8>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

fn main() {}
