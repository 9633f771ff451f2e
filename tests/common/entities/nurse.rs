//! `bi_nurses`: `DeriveEncrypted` on an entity in SeaORM 2's `#[sea_orm::model]` format, which
//! copies the derives (ours included) onto the generated `ModelEx`. Its unique index comes
//! from `unique_key`, so it is created by `create_index_from_entity`, not with the table.

use encrypted_columns::{DeriveEncrypted, EncryptedString};
use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, DeriveEntityModel, DeriveEncrypted)]
#[sea_orm(table_name = "bi_nurses")]
#[encrypted(active_model_behavior)]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i32,
    pub ward_id: i32,
    /// Badge numbers are typed in any case, with stray spaces.
    #[encrypted(blind_index(name = "badge_bidx", transform = "trim, lowercase", unique))]
    pub badge: EncryptedString<ctx::Badge>,
    /// Not `#[sea_orm(unique)]`: in this format SeaORM would generate its own
    /// `find_by_badge_bidx` over raw bytes (DeriveEncrypted refuses it). A named unique key
    /// gives the same constraint; its index name contains the column for `unique_violation`.
    #[sea_orm(unique_key = "badge_bidx_key")]
    pub badge_bidx: Vec<u8>,
    #[sea_orm(belongs_to, from = "ward_id", to = "id")]
    pub ward: BelongsTo<super::ward::Entity>,
}
