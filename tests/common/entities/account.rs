//! `bi_accounts`: a UNIQUE e-mail index (one account per address, whatever its case or
//! surrounding spaces) and a deliberately low-cardinality blood-type index for the leakage
//! report. `before_save` fills the indexes.

use encrypted_columns::{DeriveEncrypted, EncryptedString};
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel, DeriveEncrypted)]
#[sea_orm(table_name = "bi_accounts")]
#[encrypted(active_model_behavior)]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i32,
    #[encrypted(blind_index(name = "email_bidx", normalize = "email", unique))]
    pub email: EncryptedString<ctx::Email>,
    #[sea_orm(unique)]
    pub email_bidx: Vec<u8>,
    #[encrypted(blind_index(name = "blood_type_bidx", transform = "trim, lowercase"))]
    pub blood_type: EncryptedString<ctx::BloodType>,
    pub blood_type_bidx: Vec<u8>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}
