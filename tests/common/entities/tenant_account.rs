//! `ten_accounts`: accounts of several tenants in one table (tests/tenant_blind_index.rs). The
//! e-mail is unique per tenant (`scope(tenant_id)`: a composite UNIQUE over `tenant_id` and
//! `email_bidx`, created by `Entity::scoped_unique_indexes()`); the phone index keeps 2 bits so
//! that lookups meet false positives.

use encrypted_columns::{DeriveEncrypted, EncryptedString};
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel, DeriveEncrypted)]
#[sea_orm(table_name = "ten_accounts")]
#[encrypted(active_model_behavior)]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i32,
    pub tenant_id: i32,
    #[encrypted(blind_index(name = "email_bidx", normalize = "email", unique, scope(tenant_id)))]
    pub email: EncryptedString<ctx::Email>,
    pub email_bidx: Vec<u8>,
    #[encrypted(blind_index(name = "phone_bidx", transform = "digits", bits = 2))]
    pub phone: EncryptedString<ctx::Phone>,
    pub phone_bidx: Vec<u8>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}
